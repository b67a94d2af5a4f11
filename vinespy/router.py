"""The router: the one place that decides where a stanza goes.

See docs/routing.md for the destination types, the events fired and the
defaults applied when no module claims a stanza (RFC 6120 §10, RFC 6121 §8).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable

from .errors import StanzaError
from .events import StanzaEvent
from .jid import JID, JIDError
from .sessions import Session, Sessions
from .xml import Element, error_reply, local_name

if TYPE_CHECKING:
    from .host import Host

log = logging.getLogger(__name__)

_CHAT_NORMAL = (None, "normal", "chat")


class Router:
    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions
        self.hosts: dict[str, Host] = {}
        # Service domains (e.g. pubsub "games.wonderland.lit") -> the host
        # whose modules serve them.
        self.services: dict[str, Host] = {}
        # Where stanzas for other servers' domains go ([server] enabled:
        # Federation.send); None: they are answered remote-server-not-found.
        self.remote: Callable[[Element, JID], None] | None = None
        # XEP-0114 component domains -> the full JID the connected component
        # is bound to in the session table (vinespy/stream/component.py).
        self.components: dict[str, JID] = {}

    def add_host(self, host: Host) -> None:
        self.hosts[host.domain] = host

    def add_service(self, domain: str, host: Host) -> None:
        """Route stanzas to ``domain`` (and its JIDs) to ``host``'s modules as
        ``<kind>/service`` events."""
        self.services[domain] = host

    def add_component(self, domain: str, route: JID) -> None:
        """Route stanzas to ``domain`` (and its JIDs) to the session bound to
        ``route`` (a connected XEP-0114 component, on any cluster node)."""
        self.components[domain] = route

    async def route(self, stanza: Element, origin: Session | None = None) -> None:
        """Deliver ``stanza``: to a module, a local resource, or back as an error.

        ``origin`` is the local session that sent it, None for stanzas the
        server itself (a module, the cluster) emits. ``from`` must already be
        set and trusted.
        """
        kind = local_name(stanza)
        to_attr = stanza.get("to")
        if to_attr is None:
            if origin is None:
                log.warning("dropping a server-originated %s without 'to'", kind)
                return
            to, to_type = origin.jid.bare, "self"
        else:
            try:
                to = JID.parse(to_attr)
            except JIDError as exc:
                self.bounce(stanza, StanzaError("jid-malformed", f"'to': {exc}"), valid_to=False)
                return
            # Where ``to`` is, as docs/routing.md names it (inline: every
            # stanza passes here).
            if to.domain not in self.hosts:
                to_type = "service" if to.domain in self.services else "remote"
            elif not to.local:
                to_type = "host"
            elif to.resource:
                to_type = "full"
            elif kind == "iq" and origin is not None and origin.jid.bare == to:
                to_type = "self"
            else:
                to_type = "bare"
        if origin is not None and origin.pre_events:
            # pre-<kind> on the sender's host, if hooked: the session knows
            # (nothing to look up for a host whose modules hook none).
            pre = origin.pre_events.get(stanza.tag)
            sender = self.hosts.get(origin.jid.domain)
            if (pre is not None and sender is not None and await self._fire(
                    sender, pre, StanzaEvent(stanza, origin, origin.jid, to, to_type, sender))):
                return
        if to_type in ("service", "remote"):
            service = self.services.get(to.domain)
            if service is not None:
                await self.to_service(stanza, kind, origin, to, service)
                return
            component = self.components.get(to.domain)      # XEP-0114
            if component is not None:
                await self.to_component(stanza, component)
                return
            if self.remote is not None:
                self.remote(stanza, to)         # federation (vinespy/s2s)
                return
            self.bounce(stanza, StanzaError(
                "remote-server-not-found", f"{to.domain} is not served here"))
            return
        if (origin is not None and to.local and to.domain != origin.jid.domain
                and not self.cross_domain(origin.jid.domain, to.domain)):
            self.bounce(stanza, StanzaError(
                "not-allowed", f"users of {origin.jid.domain} cannot reach users of "
                f"{to.domain} on this server (cross_domain_messages is off)"))
            return
        host = self.hosts[to.domain]
        sessions = self.sessions
        if sessions.clustered:
            # Resources on other nodes: known from the route cache, else
            # read in one round trip, before anything looks them up.
            need = [to.bare] if to.local else []
            if origin is not None:
                need.append(origin.jid.bare)
            if sessions.missing(need):
                await sessions.load(need)
        event = f"{kind}/{to_type}"
        if host.bus.has(event):
            frm = JID.parse(stanza.get("from", host.domain))
            try:                    # _fire inline: one coroutine less per stanza
                claimed = await host.bus.fire(
                    event, StanzaEvent(stanza, origin, frm, to, to_type, host))
            except Exception:
                # A module's bug must not take the sender's stream down.
                log.exception("%s handler failed on a stanza from %s", event, frm)
                self.bounce(stanza, StanzaError("internal-server-error"))
                return
            if claimed:
                return
        await self.default(stanza, kind, to, to_type)

    async def _fire(self, host: Host, event: str, ev: StanzaEvent) -> bool:
        """Fire a stanza event; a handler's failure answers the stanza with
        internal-server-error (and counts as claiming it)."""
        try:
            return bool(await host.bus.fire(event, ev))
        except Exception:
            # A module's bug must not take the sender's stream down.
            log.exception("%s handler failed on a stanza from %s to %s", event, ev.frm, ev.to)
            self.bounce(ev.stanza, StanzaError("internal-server-error"))
            return True

    async def to_service(self, stanza: Element, kind: str, origin: Session | None, to: JID,
                         host: Host) -> None:
        """A stanza for a service domain: ``<kind>/service`` on its host's bus;
        unclaimed, an IQ get/set is ``<service-unavailable/>``, the rest dropped."""
        event = f"{kind}/service"
        if host.bus.has(event):
            frm = JID.parse(stanza.get("from", host.domain))
            ev = StanzaEvent(stanza, origin, frm, to, "service", host)
            if await self._fire(host, event, ev):
                return
        if kind == "iq" and stanza.get("type") in ("get", "set"):
            self.bounce(stanza, StanzaError("service-unavailable"))

    async def to_component(self, stanza: Element, route: JID) -> None:
        """A stanza for a component's domain (XEP-0114): to the component,
        bound to ``route`` on this node or another (one Redis read in a
        cluster when not cached); not connected: :meth:`component_unavailable`."""
        sessions = self.sessions
        if sessions.clustered and sessions.missing((route.bare,)):
            await sessions.load((route.bare,))
        session = sessions.get(route)
        if session is not None:
            session.send(stanza)
        else:
            self.component_unavailable(stanza)

    def component_unavailable(self, stanza: Element) -> None:
        """The component a stanza is for is not connected: messages and IQ
        get/set are answered ``<service-unavailable/>``, the rest dropped."""
        kind = local_name(stanza)
        if kind == "message" or (kind == "iq" and stanza.get("type") in ("get", "set")):
            self.bounce(stanza, StanzaError("service-unavailable",
                                            "the component is not connected"))

    async def route_many(self, stanzas: list[Element], origin: Session | None = None) -> None:
        """Route several stanzas, reading the routes of all their recipients in
        one round trip first (a presence broadcast to a 500-contact roster
        costs one Redis read, not 500) and sending what goes to other nodes
        together (one stream entry per node, not one per recipient)."""
        sessions = self.sessions
        if sessions.clustered and len(stanzas) > 1:
            bares = []
            for st in stanzas:
                try:
                    to = JID.parse(st.get("to", ""))
                except JIDError:
                    continue
                if to.local and to.domain in self.hosts:
                    bares.append(to.bare)
            await sessions.load(bares)
        with sessions.hold():
            for st in stanzas:
                await self.route(st, origin)

    def cross_domain(self, a: str, b: str) -> bool:
        """Vines' rule: users of two virtual hosts of this server reach each
        other only when both hosts set ``cross_domain_messages``."""
        return (self.hosts[a].config.cross_domain_messages
                and self.hosts[b].config.cross_domain_messages)

    async def default(self, stanza: Element, kind: str, to: JID, to_type: str) -> None:
        """RFC 6120/6121 behaviour when no module claimed the stanza."""
        stype = stanza.get("type")
        if to_type == "full":
            session = self.sessions.get(to)
            if session is not None:
                session.send(stanza)
                return
            if kind != "message" or stype not in _CHAT_NORMAL:
                # RFC 6121 §8.5.3.2: no such resource.
                if (kind == "iq" and stype in ("get", "set")) or stype == "groupchat":
                    self.bounce(stanza, StanzaError("service-unavailable"))
                return
            # RFC 6121 §8.5.3.2.1: chat/normal to an absent resource -> as bare.
        elif to_type == "host" or kind == "iq":
            # Nobody handles it: RFC 6120 §8.4 (iq), drop messages/presence to
            # the server itself.
            if kind == "iq" and stype in ("get", "set"):
                self.bounce(stanza, StanzaError("service-unavailable"))
            return
        await self.deliver_bare(stanza, kind, stype, to.bare)

    async def deliver_bare(self, stanza: Element, kind: str, stype: str | None,
                           bare: JID) -> None:
        """RFC 6121 §8.5.2 for a message or presence to a local bare JID."""
        if stype == "error":
            return
        if kind != "message":
            for session in self.sessions.available(bare):
                session.send(stanza)
            return
        if stype == "groupchat":
            self.bounce(stanza, StanzaError("service-unavailable"))
            return
        targets = self.bare_targets(bare, stype)
        for session in targets:
            session.send(stanza)
        if targets or stype not in _CHAT_NORMAL:
            return
        await self.offline(stanza, bare)

    def bare_targets(self, bare: JID, stype: str | None, *,
                     staying: bool = False) -> list[Session]:
        """The resources a message of ``stype`` (not error, not groupchat) to
        ``bare`` is delivered to (RFC 6121 §8.5.2.1.1): never one of negative
        priority; chat and normal to the highest priority (all on a tie),
        headline to every non-negative one. Empty: nobody can take it now.
        ``staying``: none that is :attr:`~Session.ending` (for what is handed
        out of offline storage; routing still writes to such a resource, to
        keep each sender's messages in order with what it stores)."""
        targets = [s for s in self.sessions.available(bare)
                   if s.priority >= 0 and not (staying and s.ending)]
        if targets and stype != "headline":
            top = max(s.priority for s in targets)
            targets = [s for s in targets if s.priority == top]
        return targets

    def message_targets(self, to: JID, stype: str | None) -> list[Session]:
        """The resources :meth:`default` writes a message of ``stype`` to a
        local user's ``to`` (bare or full JID) to: the bound resource it
        names, else (chat/normal to an absent resource, or a bare JID)
        :meth:`bare_targets`. Empty for what it drops, bounces or stores."""
        if to.resource:
            session = self.sessions.get(to)
            if session is not None:
                return [session]
            if stype not in _CHAT_NORMAL:
                return []
        if stype in ("error", "groupchat"):
            return []
        return self.bare_targets(to.bare, stype)

    async def absent(self, stanza: Element, target: JID, *, final: bool = False) -> None:
        """A stanza another cluster node sent for ``target``, a resource that is
        not (or no longer) bound here: handled as RFC 6121 §8.5.3.2 says for
        a resource that does not exist, from a fresh view of where the user's
        resources are. ``final`` (after several hops): no further routing, a
        message goes to offline storage."""
        kind = local_name(stanza)
        if not final:
            need = [target.bare]
            try:
                frm = JID.parse(stanza.get("from", ""))     # for an error reply
                need.append(self.components.get(frm.domain, frm).bare)
            except JIDError:
                pass
            await self.sessions.load(need, fresh=True)
            if target.domain in self.components:        # XEP-0114: where it is now
                await self.to_component(stanza, self.components[target.domain])
                return
            await self.default(stanza, kind, target, "full")
            return
        if target.domain in self.components:
            self.component_unavailable(stanza)
            return
        stype = stanza.get("type")
        if kind == "message" and stype in _CHAT_NORMAL:
            await self.offline(stanza, target.bare)
        elif (kind == "iq" and stype in ("get", "set")) or stype == "groupchat":
            self.bounce(stanza, StanzaError("service-unavailable"))

    async def offline(self, stanza: Element, bare: JID) -> None:
        """§8.5.2.2: nobody can take the message now. An offline-storage module
        may claim it; else the sender learns it was not delivered."""
        host = self.hosts[bare.domain]
        if host.bus.has("message/offline"):
            frm = JID.parse(stanza.get("from", host.domain))
            ev = StanzaEvent(stanza, None, frm, bare, "bare", host)
            try:
                if await host.bus.fire("message/offline", ev):
                    # Taken (stored, or dropped on purpose): what waited for
                    # the outcome (the archive, XEP-0313) may act on it now.
                    if host.bus.has("message/offline-taken"):
                        await host.bus.notify("message/offline-taken", ev)
                    return
            except Exception:
                # Storage failed (disk full, I/O error): the sender learns
                # the message was not kept; his stream is not at fault.
                log.exception("storing a message for %s offline failed", bare)
                self.bounce(stanza, StanzaError("internal-server-error",
                                                "the message could not be stored"))
                return
        self.bounce(stanza, StanzaError("service-unavailable", "the recipient is offline"))

    def bounce(self, stanza: Element, error: StanzaError, *, valid_to: bool = True) -> None:
        """Answer ``stanza`` with ``error`` unless it is itself an error or a
        result (RFC 6120 §8.3.1: never answer an error with an error)."""
        stype = stanza.get("type")
        if stype in ("error", "result") or stanza.get("from") is None:
            return
        reply = error_reply(stanza, error)
        if not valid_to and "from" in reply.attrib:
            del reply.attrib["from"]
        try:
            frm = JID.parse(stanza.get("from", ""))
        except JIDError:
            return
        if frm.domain not in self.hosts:
            component = self.components.get(frm.domain)     # XEP-0114: to the component
            if component is not None:
                session = self.sessions.get(component)
                if session is not None:
                    session.send(reply)
            elif self.remote is not None and frm.domain not in self.services:
                self.remote(reply, frm)         # to a user of another server
            return
        # Errors go to a full JID that is local, or are dropped: they are
        # never stored or re-bounced.
        session = self.sessions.get(frm)
        if session is not None:
            session.send(reply)
