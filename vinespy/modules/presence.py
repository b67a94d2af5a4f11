"""Presence (RFC 6121 §4): own resources, broadcast to contacts, probes,
directed presence.

* A resource becomes available with its initial presence (§4.2; it then
  receives bare-JID messages), its priority is tracked, and its presence
  and its unavailability reach all of the user's available resources,
  "including the resource that generated the presence notification in the
  first place" (§4.2.2, §4.4.2, §4.5.2). An entity is implicitly
  subscribed to its own presence (§4.2.2), so a newly available resource
  also gets the presence of the user's other available resources.
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

Limits, in ``[host.options.presence]``: a resource remembers directed
presence to at most ``max_directed`` JIDs (default 1000: every MUC room a
busy client joins is one); available presence to one JID more is refused
with ``<policy-violation/>`` and not delivered, since delivering what could
never be withdrawn would leave the recipient seeing the user online for
good. Available presence whose ``<status/>`` text is longer than
``max_status`` characters (default 1024; RFC 6121 §4.7.2.2 sets no length,
but the server keeps each resource's presence, for probes and, in a
cluster, in Redis) is refused the same way. Unavailable presence is never
refused: it is not kept, and a client must always be able to leave.

One presence to many recipients is one element re-addressed for each: the
router keeps no stanza after routing it and sessions serialize in
``send()``, so N recipients cost no N copies.
"""

from __future__ import annotations

import copy
from typing import Any

from .. import ns
from ..errors import StanzaError
from ..events import StanzaEvent
from ..fields import SessionField
from ..jid import JID
from ..storage import User
from ..xml import Element, stanza
from . import Module, Option, hook

_PRIORITY = f"{{{ns.CLIENT}}}priority"
_STATUS = f"{{{ns.CLIENT}}}status"


def priority_of(presence: Element) -> int:
    """RFC 6121 §4.7.2.3: an integer from -128 to +127; 0 if absent or bad."""
    el = presence.find(_PRIORITY)
    if el is None:
        return 0
    try:
        return max(-128, min(127, int((el.text or "0").strip())))
    except ValueError:
        return 0


def status_length(presence: Element) -> int:
    """Characters of ``<status/>`` text, all languages together (§4.7.2.2)."""
    return sum(len(el.text or "") for el in presence.iterfind(_STATUS))


class Presence(Module):
    name = "presence"
    # §4.6: the JIDs a resource sent directed available presence to, told of
    # its unavailability. Shared: the node that cleans up after a dead node
    # tells them too (a Redis set per session, written as deltas).
    directed = SessionField(set, shared=True, member=JID.parse)
    options = {
        "max_directed": Option(int, default=1000, min=1, max=100_000),
        "max_status": Option(int, default=1024, min=0, max=65_536),
    }

    def __init__(self, host: Any) -> None:
        super().__init__(host)
        self.max_directed: int = self.option("max_directed")
        self.max_status: int = self.option("max_status")

    @hook("presence/self")
    async def own(self, ev: StanzaEvent) -> bool:
        session = ev.origin
        assert session is not None, "presence/self comes from a session"
        st = ev.stanza
        stype = st.get("type")
        initial = False
        if stype is None:
            if self._refused(st):
                return True
            initial = not session.available
            session.available = True
            session.priority = priority_of(st)
            session.presence = st
            # No await before the user's own resources are told: two of them
            # becoming available at once each learn of the other once.
            self._to_own(session, st)
            if initial:
                self._siblings_to(session)
                # RFC 6121 §4.2: modules act on it (offline messages, pending
                # requests...), with the account read once for all of them.
                user = await self.host.storage.find_user(session.jid.bare)
                await self.host.bus.fire("initial-presence", session, user)
        elif stype == "unavailable":
            was = session.available
            if was:
                session.available = False
                session.presence = None
            self._to_own(session, st)
            if not was:
                return True     # §4.5.2 ... only an available resource has anything to withdraw
        else:
            # subscribe/probe/error without 'to' mean nothing (RFC 6121 §3, §4.3).
            return True
        if not initial:
            user = await self.host.storage.find_user(session.jid.bare)
        await self._broadcast(session, st, user, probe=initial)
        return True

    @hook("presence/bare", priority=1)
    @hook("presence/full", priority=1)
    async def routed(self, ev: StanzaEvent) -> bool | None:
        """Directed presence (§4.6) is noted; probes (§4.3) are answered."""
        stype = ev.stanza.get("type")
        if stype == "probe":
            await self._answer_probe(ev)
            return True
        return self._directed(ev, stype)

    @hook("pre-presence")
    def to_other_server(self, ev: StanzaEvent) -> bool | None:
        """Directed presence to a JID of another server (§4.6), which no
        ``presence/bare`` event here sees: noted as for a local JID, so that
        it gets unavailable when the resource goes."""
        stype = ev.stanza.get("type")
        if ev.to_type != "remote" or stype not in (None, "unavailable"):
            return None
        return self._directed(ev, stype)

    def _directed(self, ev: StanzaEvent, stype: str | None) -> bool | None:
        session = ev.origin
        if session is None or ev.to.bare == session.jid.bare:
            return None
        if stype is None:
            if self._refused(ev.stanza):
                return True
            directed = Presence.directed.get(session)
            if session.available and ev.to not in directed:
                if len(directed) >= self.max_directed:
                    self.host.router.bounce(ev.stanza, StanzaError(
                        "policy-violation", f"directed presence to at most {self.max_directed} "
                        "JIDs at once (presence max_directed); send unavailable to some first"))
                    return True
                Presence.directed.add(session, ev.to)
        elif stype == "unavailable":
            Presence.directed.discard(session, ev.to)
        return None

    @hook("resource-unbound")
    async def gone(self, session: Any) -> None:
        """A resource went away, even abruptly: its siblings, its contacts and
        those it sent directed presence to learn it (RFC 6121 §4.5.2)."""
        if session.available:
            session.available = False
            session.presence = None
            st = stanza("presence", frm=session.jid, type="unavailable")
            self._to_own(session, st, reflect=False)
            user = await self.host.storage.find_user(session.jid.bare)
            await self._broadcast(session, st, user, probe=False)
        Presence.directed.clear(session)

    def _refused(self, st: Element) -> bool:
        """Available presence with too long a status: answered with an error."""
        if status_length(st) <= self.max_status:
            return False
        self.host.router.bounce(st, StanzaError(
            "policy-violation", f"status text longer than {self.max_status} characters "
            "(presence max_status)"))
        return True

    def _to_own(self, session: Any, st: Element, *, reflect: bool = True) -> None:
        """§4.2.2, §4.4.2, §4.5.2: to every available resource of the user and
        (``reflect``) back to the one that sent it."""
        for other in self.host.sessions.available(session.jid.bare):
            if other is not session:
                other.send(st)
        if reflect:
            session.send(st)

    def _siblings_to(self, session: Any) -> None:
        """§4.2.2: the user is subscribed to his own presence, so a resource
        that becomes available learns its siblings' as a probe would."""
        for other in self.host.sessions.available(session.jid.bare):
            if other is not session and other.presence is not None:
                out = copy.deepcopy(other.presence)
                out.set("from", str(other.jid))
                out.set("to", str(session.jid))
                session.send(out)

    async def _broadcast(self, session: Any, st: Element, user: User | None, *,
                         probe: bool) -> None:
        """§4.2.2, §4.4.2, §4.5.2: ``st`` to the from/both contacts of
        ``user`` (the session's account, as read now) and, when unavailable,
        to the directed-presence JIDs; probes when ``probe``."""
        bare = session.jid.bare
        contacts = [c for c in (user.roster.values() if user is not None else ())
                    if not c.hidden]
        targets: list[JID] = [c.jid.bare for c in contacts if c.subscription in ("from", "both")]
        if st.get("type") == "unavailable":
            covered = set(targets)
            targets += sorted((j for j in Presence.directed.get(session)
                               if j.bare not in covered), key=str)
            Presence.directed.clear(session)
        probes = [stanza("presence", frm=bare, to=c.jid.bare, type="probe") for c in contacts
                  if probe and c.subscription in ("to", "both")]
        # One copy, re-addressed per recipient: ``st`` itself is the session's presence.
        one = copy.deepcopy(st)
        one.set("from", str(session.jid))
        await self._to_each(one, targets, probes)

    async def _to_each(self, st: Element, targets: list[JID], then: list[Element]) -> None:
        """Route ``st`` to each of ``targets``, then the stanzas ``then``, as
        :meth:`Router.route_many` would (the routes of all recipients read in
        one round trip, what goes to other nodes written together), changing
        only ``st``'s 'to' in between."""
        router = self.host.router
        sessions = self.host.sessions
        if sessions.clustered:
            tos = targets + [JID.parse(x.get("to", "")) for x in then]
            await sessions.load([j.bare for j in tos if j.local and j.domain in router.hosts])
        with sessions.hold():
            for to in targets:
                st.set("to", str(to))
                await router.route(st, None)
            for other in then:
                await router.route(other, None)

    async def _answer_probe(self, ev: StanzaEvent) -> None:
        owner = ev.to.bare
        prober = ev.frm
        # One roster row, not the whole roster: a login probes every contact.
        found = await self.host.storage.find_contact(owner, prober.bare)
        contact = found.contact if found is not None else None
        if contact is None or contact.hidden or contact.subscription not in ("from", "both"):
            # §4.3.2 rules 1 and 2: reveal nothing, and say "unsubscribed",
            # which sets the prober's roster right (A.3: its "to" ends); a
            # contact whose account went, or a remote roster out of step,
            # is not probed in vain forever.
            await self.send(stanza("presence", frm=owner, to=prober.bare, type="unsubscribed"))
            return
        sessions = [s for s in self.host.sessions.available(owner) if s.presence is not None]
        if not sessions:
            await self.send(stanza("presence", frm=owner, to=prober, type="unavailable"))
            return
        for s in sessions:
            out = copy.deepcopy(s.presence)
            assert out is not None
            out.set("from", str(s.jid))
            out.set("to", str(prober))
            await self.send(out)
