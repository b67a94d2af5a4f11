"""``backend = "null"``: accepts every write and finds nothing.

For servers without accounts of their own (e.g. only components) and for
benchmarks that must not measure storage.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

from lxml import etree

from ..jid import JID
from . import Storage, User, check_store, json_value, register


@register("null")
class NullStorage(Storage):
    """Writes vanish; every lookup is a miss."""

    async def find_user(self, jid: JID) -> User | None:
        return None

    async def save_user(self, user: User) -> None:
        return None

    async def delete_user(self, jid: JID) -> bool:
        return False

    async def find_vcard(self, jid: JID) -> etree._Element | None:
        return None

    async def save_vcard(self, jid: JID, card: etree._Element) -> None:
        return None

    async def find_fragment(self, jid: JID, namespace: str, name: str) -> etree._Element | None:
        return None

    async def save_fragment(self, jid: JID, fragment: etree._Element) -> None:
        return None

    async def get(self, jid: JID, store: str) -> Any | None:
        check_store(store)
        return None

    async def put(self, jid: JID, store: str, value: Any | None) -> None:
        check_store(store)
        if value is not None:
            json_value(value)           # the same TypeError/ValueError as the others
        return None

    async def owners(self) -> AsyncIterator[JID]:
        return
        yield                           # an async generator that yields nothing

    async def fragments(self, jid: JID) -> list[tuple[str, str]]:
        return []

    async def stores(self, jid: JID) -> list[str]:
        return []
