"""XEP-0092: Software Version of the server.

The operating system is not disclosed (the XEP makes ``<os/>`` optional): it
helps an attacker more than a user.
"""

from __future__ import annotations

from .. import __version__, ns
from ..events import StanzaEvent
from ..xml import Element, child, element
from . import Module, iq


class Version(Module):
    name = "version"
    xep = "XEP-0092"
    features = (ns.VERSION,)

    @iq("get", ns.VERSION, "query", to=("host",))
    async def version(self, ev: StanzaEvent) -> Element:
        q = element(ns.VERSION, "query")
        child(q, ns.VERSION, "name", "vinespy")
        child(q, ns.VERSION, "version", __version__)
        return q
