"""BOSH (XEP-0124 + XEP-0206): placeholder until the BOSH sessions land."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import HttpConfig
    from ..server import Server
    from .app import Client


class Bosh:
    def __init__(self, server: Server, cfg: HttpConfig) -> None:
        self.server = server
        self.cfg = cfg

    async def request(self, body: bytes, client: Client) -> tuple[int, bytes]:
        return 501, b""

    def stop(self) -> None:
        pass
