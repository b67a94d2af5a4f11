"""Presence (RFC 6121 §4): own resources, broadcast to contacts, probes,
directed presence.

* A resource becomes available with its initial presence (§4.2; it then
  receives bare-JID messages), its priority is tracked, and its presence
  and its unavailability reach the user's other available resources.
* Broadcast (§4.2.2, §4.4.2, §4.5.2): the initial presence and every later
  available presence without 'to' go, from the resource's full JID, to the
  bare JID of every contact with a subscription from the user
  (``from``/``both``); an explicit unavailable too.
* Probes (§4.2.2, §4.3): on initial presence the server sends
  ``<presence type='probe'/>`` from the user's bare JID to every contact
  the user is subscribed to (``to``/``both``). A probe to a local user from
  a contact with ``from``/``both`` is answered with the last presence of
  each available resource (§4.3.2 rule 3), or with unavailable from the
  bare JID if none is available (§4.3.2 rule 2); from anyone else it is
  ignored (§4.3.2 rule 1: the server MUST NOT reveal presence). Probes are
  for servers and are never delivered to a client.
* Directed presence (§4.6): available presence a resource sends to a JID
  is remembered (per session) until it sends unavailable there; when the
  resource becomes unavailable, by an explicit unavailable (§4.6.3) or by
  going away without one, even abruptly (§4.5.2: the server "MUST ...
  broadcast unavailable presence"), those JIDs get unavailable as well,
  except those already covered by the broadcast to the contacts.
"""

from __future__ import annotations

import copy
from typing import Any

from .. import ns
from ..events import StanzaEvent
from ..jid import JID
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
        initial = False
        if stype is None:
            initial = not session.available
            session.available = True
            session.priority = priority_of(st)
            session.presence = st
            if initial:
                # RFC 6121 §4.2: modules act on it (offline messages, probes...).
                await self.host.bus.fire("initial-presence", session)
        elif stype == "unavailable":
            if not session.available:
                # §4.5.2 ... only an available resource has anything to withdraw.
                self._to_siblings(session, st)
                return True
            session.available = False
            session.presence = None
        else:
            # subscribe/probe/error without 'to' mean nothing (RFC 6121 §3, §4.3).
            return True
        self._to_siblings(session, st)
        await self._broadcast(session, st, probe=initial)
        return True

    @hook("presence/bare", priority=1)
    @hook("presence/full", priority=1)
    async def routed(self, ev: StanzaEvent) -> bool | None:
        """Directed presence (§4.6) is noted; probes (§4.3) are answered."""
        stype = ev.stanza.get("type")
        if stype == "probe":
            await self._answer_probe(ev)
            return True
        session = ev.origin
        if session is not None and ev.to.bare != session.jid.bare:
            # The JIDs a session sent directed presence to live on the
            # session (and, in a cluster, in its routing entry, so that the
            # node that cleans up after a dead node tells them too).
            if stype is None and session.available:
                if ev.to not in session.directed:
                    session.directed.add(ev.to)
                    self.host.sessions.changed(session)
            elif stype == "unavailable" and ev.to in session.directed:
                session.directed.discard(ev.to)
                self.host.sessions.changed(session)
        return None

    @hook("resource-unbound")
    async def gone(self, session: Any) -> None:
        """A resource went away, even abruptly: its siblings, its contacts and
        those it sent directed presence to learn it (RFC 6121 §4.5.2)."""
        if session.available:
            session.available = False
            session.presence = None
            st = stanza("presence", frm=session.jid, type="unavailable")
            self._to_siblings(session, st)
            await self._broadcast(session, st, probe=False)
        session.directed.clear()

    def _to_siblings(self, session: Any, st: Element) -> None:
        for other in self.host.sessions.available(session.jid.bare):
            if other is not session:
                other.send(st)

    async def _broadcast(self, session: Any, st: Element, *, probe: bool) -> None:
        """§4.2.2, §4.4.2, §4.5.2: ``st`` to the from/both contacts (and, when
        unavailable, to the directed-presence JIDs); probes when ``probe``."""
        bare = session.jid.bare
        user = await self.host.storage.find_user(bare)
        contacts = list(user.roster.values()) if user is not None else []
        targets: list[JID] = [c.jid.bare for c in contacts
                              if not c.hidden and c.subscription in ("from", "both")]
        if st.get("type") == "unavailable":
            covered = set(targets)
            directed = set(session.directed)
            session.directed.clear()
            targets += sorted((j for j in directed if j.bare not in covered), key=str)
        out: list[Element] = []
        for to in targets:
            st2 = copy.deepcopy(st)
            st2.set("from", str(session.jid))
            st2.set("to", str(to))
            out.append(st2)
        if probe:
            out += [stanza("presence", frm=bare, to=c.jid.bare, type="probe") for c in contacts
                    if not c.hidden and c.subscription in ("to", "both")]
        await self.send_many(out)

    async def _answer_probe(self, ev: StanzaEvent) -> None:
        owner = ev.to.bare
        prober = ev.frm
        user = await self.host.storage.find_user(owner)
        contact = user.roster.get(prober.bare) if user is not None else None
        if contact is None or contact.hidden or contact.subscription not in ("from", "both"):
            return                                  # §4.3.2 rule 1: reveal nothing
        sessions = [s for s in self.host.sessions.available(owner) if s.presence is not None]
        if not sessions:
            await self.send(stanza("presence", frm=owner, to=prober, type="unavailable"))
            return
        for s in sessions:
            out = copy.deepcopy(s.presence)
            out.set("from", str(s.jid))
            out.set("to", str(prober))
            await self.send(out)
