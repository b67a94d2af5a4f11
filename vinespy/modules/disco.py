"""XEP-0030: Service Discovery for the server (features of every module).

Account-level disco and items for hosted services grow with their issues.
"""

from __future__ import annotations

from .. import ns
from ..errors import StanzaError
from ..events import StanzaEvent
from ..xml import Element, child, element
from . import Module, iq


class Disco(Module):
    name = "disco"
    xep = "XEP-0030"
    features = (ns.DISCO_INFO, ns.DISCO_ITEMS)

    @iq("get", ns.DISCO_INFO, "query", to=("host",))
    async def info(self, ev: StanzaEvent) -> Element:
        node = ev.stanza[0].get("node")
        if node:
            raise StanzaError("item-not-found", f"no node {node!r} here")
        q = element(ns.DISCO_INFO, "query")
        child(q, ns.DISCO_INFO, "identity", category="server", type="im", name="vinespy")
        for feature in sorted(self.host.features()):
            child(q, ns.DISCO_INFO, "feature", var=feature)
        return q

    @iq("get", ns.DISCO_ITEMS, "query", to=("host",))
    async def items(self, ev: StanzaEvent) -> Element:
        node = ev.stanza[0].get("node")
        if node:
            raise StanzaError("item-not-found", f"no node {node!r} here")
        return element(ns.DISCO_ITEMS, "query")
