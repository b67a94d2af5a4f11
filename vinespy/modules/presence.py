"""Presence of a user's own resources (RFC 6121 §4.2, §4.5).

This is the part of presence the single-node core needs: a resource becomes
available with its initial presence (and so receives bare-JID messages),
its priority is tracked, and its presence and its unavailability reach the
user's other available resources. Subscriptions, probes and broadcast to
contacts belong to the RFC 6121 modules.
"""

from __future__ import annotations

from typing import Any

from .. import ns
from ..events import StanzaEvent
from ..xml import Element, stanza
from . import Module, hook

_PRIORITY = f"{{{ns.CLIENT}}}priority"


def priority_of(presence: Element) -> int:
    """RFC 6121 §4.7.2.3: an integer from -128 to +127; 0 if absent or bad."""
    el = presence.find(_PRIORITY)
    if el is None:
        return 0
    try:
        return max(-128, min(127, int((el.text or "0").strip())))
    except ValueError:
        return 0


class Presence(Module):
    name = "presence"

    @hook("presence/self")
    async def own(self, ev: StanzaEvent) -> bool:
        session = ev.origin
        st = ev.stanza
        stype = st.get("type")
        if stype is None:
            initial = not session.available
            session.available = True
            session.priority = priority_of(st)
            session.presence = st
            if initial:
                # RFC 6121 §4.2: modules act on it (offline messages, probes...).
                await self.host.bus.fire("initial-presence", session)
        elif stype == "unavailable":
            session.available = False
            session.presence = None
        else:
            # subscribe/probe/error without 'to' mean nothing (RFC 6121 §3, §4.3).
            return True
        self._to_siblings(session, st)
        return True

    @hook("resource-unbound")
    async def gone(self, session: Any) -> None:
        """A resource went away, even abruptly: its siblings learn it
        (RFC 6121 §4.5.2)."""
        if session.available:
            session.available = False
            self._to_siblings(session, stanza("presence", frm=session.jid, type="unavailable"))

    def _to_siblings(self, session: Any, st: Element) -> None:
        for other in self.host.sessions.available(session.jid.bare):
            if other is not session:
                other.send(st)
