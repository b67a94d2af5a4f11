"""XEP-0199: XMPP Ping, answered by the server for itself and its accounts."""

from __future__ import annotations

from .. import ns
from ..events import StanzaEvent
from . import Module, iq


class Ping(Module):
    name = "ping"
    xep = "XEP-0199"
    features = (ns.PING,)

    @iq("get", ns.PING, "ping", to=("host", "self"))
    async def ping(self, ev: StanzaEvent) -> None:
        return None
