"""External components (XEP-0114, Jabber Component Protocol) over TCP.

A component (a gateway, a bot, an upload service) connects to the
``[component]`` listener and opens a stream in ``jabber:component:accept``
``to`` its domain (``components = { tea = "secr3t" }`` in a ``[[host]]``
serving ``wonderland.lit`` is ``tea.wonderland.lit``). The server answers
with its own header and a fresh stream id; the component proves it knows
the secret with ``<handshake>`` holding the hex SHA-1 of the stream id
followed by the secret (XEP-0114 §3), compared in constant time, and gets an
empty ``<handshake/>``. A wrong one is ``<not-authorized/>``, a domain that is
no component here ``<host-unknown/>``, another default namespace
``<invalid-namespace/>`` (RFC 6120 §4.9.3).

Once accepted, the component is bound in the session table under
:func:`route_jid` of its domain, like a client's resource: every stanza to
its domain (or any JID in it) goes there (:meth:`vinespy.router.Router.to_component`).
In a cluster that route is in Redis like any other, so every node reaches
the component over the cluster's own machinery (StreamProxy, the inbound
queue) with nothing of its own. A second connection for a component
already connected, on any node, is refused with ``<conflict/>`` (as Prosody
does): the one connected keeps working, and a component that lost its
connection can come back as soon as its route is gone.

What the component sends: ``message``, ``presence`` and ``iq`` only (else
``<unsupported-stanza-type/>``); ``from`` must be a JID of its own domain
(else ``<invalid-from/>``, RFC 6120 §4.9.3.9); a stanza without ``to`` or
``from`` ends the stream with ``<improper-addressing/>``, as between servers
(RFC 6120 §4.9.3.7; Prosody answers ``<bad-request/>``). Stanzas
are turned into the server's own shape (``jabber:client``) and routed as
the server's (no origin session: no ``pre-<kind>`` events, no
cross-domain rule). What is routed to the component is written as it is:
the serializer leaves the default namespace out, so on this stream its
unprefixed elements are in ``jabber:component:accept``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
from typing import TYPE_CHECKING, Any

from .. import ns
from ..errors import StanzaError, StreamError
from ..fields import SessionField
from ..jid import JID, JIDError
from ..xml import (Element, error_reply, escape_attr, local_name, namespace, serialize,
                   to_client)
from .base import XMLStream
from .parser import StreamOpened
from .session import iq_problem

if TYPE_CHECKING:
    from ..server import Server

log = logging.getLogger("vinespy.component")

#: The resource of a component's route (:func:`route_jid`). Any JID of the
#: component's domain is routed to the component, this one included, so a
#: user addressing it reaches the component too: it names the route, it
#: hides nothing.
ROUTE_RESOURCE = "xep-0114"

HANDSHAKE = f"{{{ns.COMPONENT}}}handshake"
_KINDS = frozenset(("message", "presence", "iq"))


def route_jid(domain: str) -> JID:
    """The full JID a component of ``domain`` is bound to while connected."""
    return JID("", domain, ROUTE_RESOURCE)


def handshake_digest(stream_id: str, secret: str) -> str:
    """XEP-0114 §3: the lower-case hex SHA-1 of the stream id and the secret
    (both UTF-8)."""
    return hashlib.sha1((stream_id + secret).encode()).hexdigest()


def handshake_ok(text: str | None, stream_id: str, secret: str) -> bool:
    """Whether ``text`` (a ``<handshake/>``'s) proves the secret; compared in
    constant time (hmac.compare_digest), so the time taken does not tell how
    much of a guess was right."""
    given = (text or "").strip().lower().encode()
    return hmac.compare_digest(handshake_digest(stream_id, secret).encode(), given)


class ComponentSession:
    """A connected component as the session table sees it (a
    :class:`~vinespy.sessions.Session`): what is routed to it is written to
    its stream. It is nobody's resource: never available, no presence."""

    __slots__ = ("jid", "id", "fields", "stream")

    available = False
    priority = 0
    presence: Element | None = None
    pre_events: dict[str, str] = {}     # never a sender: its stanzas are the server's
    ending = False

    def __init__(self, jid: JID, sid: str, stream: ComponentStream) -> None:
        self.jid = jid
        self.id = sid                   # the cluster's name for it: its stream's id
        self.fields: dict[str, Any] = {}
        self.stream = stream

    def __repr__(self) -> str:
        return f"<ComponentSession {self.jid.domain} {self.id}>"

    def send(self, stanza: Element) -> None:
        if self.stream.transport.is_closing():
            # Gone, not yet out of the table (that takes a loop turn):
            # answered as for a component that is not connected.
            self.stream.server.router.component_unavailable(stanza)
            return
        self.stream.write(serialize(stanza))

    def send_serialized(self, stanza: Element, data: bytes) -> None:
        if self.stream.transport.is_closing():
            self.stream.server.router.component_unavailable(stanza)
            return
        self.stream.write(data)

    def close(self, error: StreamError | None = None) -> None:
        self.stream.close(error)

    def field_changed(self, field: SessionField[Any], member: Any) -> None:
        """No module keeps state on a component."""


class ComponentStream(XMLStream):
    """One component's TCP connection: header, handshake, then stanzas.
    The ``[component]`` listener's protocol factory makes one per connection."""

    def __init__(self, server: Server) -> None:
        cfg = server.config.component
        super().__init__(max_stanza_size=cfg.max_stanza_size, send_timeout=cfg.send_timeout)
        self.server = server
        self.cfg = cfg
        self.id = secrets.token_hex(8)
        self.state = "header"           # -> "handshake" -> "ready"
        self.domain = ""                # the component's, once the header named one
        self.session: ComponentSession | None = None
        self._timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"<ComponentStream {self.id} {self.domain or self.peer}>"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._timer = self.loop.call_later(self.cfg.handshake_timeout, self._timeout)
        self.run_task(self.server.carry(self))

    def header(self) -> bytes:
        frm = f" from='{escape_attr(self.domain)}'" if self.domain else ""
        return (f"<?xml version='1.0'?><stream:stream xmlns='{ns.COMPONENT}' "
                f"xmlns:stream='{ns.STREAM}' id='{self.id}'{frm}>").encode()

    # -- dispatch ------------------------------------------------------
    async def handle(self, event: Any) -> bool:
        if isinstance(event, StreamOpened):
            if self.state != "header":
                raise StreamError("bad-format", "a second stream header")
            self._open(event)
        elif self.state == "ready":
            await self._receive(event)
        elif self.state == "handshake":
            await self._handshake(event)
        else:
            raise StreamError("bad-format", "expected a stream header")
        return False

    def _open(self, ev: StreamOpened) -> None:
        """XEP-0114 §3: the component's header names its domain."""
        if ev.stream_ns != ns.STREAM or ev.local_name != "stream":
            raise StreamError("invalid-namespace",
                              f"the root must be {{{ns.STREAM}}}stream (RFC 6120 §4.8.1)")
        if ev.namespace != ns.COMPONENT:
            raise StreamError("invalid-namespace", f"the default namespace must be "
                              f"{ns.COMPONENT} (XEP-0114 §3)")
        to = ev.attrs.get("to", "")
        try:
            jid = JID.parse(to)
        except JIDError:
            jid = None
        if jid is None or not jid.is_domain or jid.domain not in self.server.component_secrets:
            raise StreamError("host-unknown", f"{to or 'no to'}: no such component here")
        self.domain = jid.domain
        self.write(self.header())
        self.header_sent = True
        self.state = "handshake"

    async def _handshake(self, el: Element) -> None:
        if el.tag != HANDSHAKE:
            raise StreamError("not-authorized", "send <handshake/> first (XEP-0114 §3)")
        if not handshake_ok(el.text, self.id, self.server.component_secrets[self.domain]):
            log.warning("component %s from %s: wrong handshake", self.domain, self.peer)
            raise StreamError("not-authorized", "wrong handshake (XEP-0114 §3)")
        route = route_jid(self.domain)
        sessions = self.server.sessions
        # As a client's bind: one at a time per route in the whole cluster,
        # deciding on the routes as the previous one left them.
        async with sessions.binding(route.bare):
            await sessions.load((route.bare,), fresh=True)
            if sessions.get(route) is not None:
                log.warning("component %s from %s refused: it is connected already",
                            self.domain, self.peer)
                raise StreamError("conflict", f"{self.domain} is connected already")
            if self.closing:
                return                  # gone meanwhile: nothing to bind
            self.session = ComponentSession(route, self.id, self)
            sessions.bind(self.session)
        self._stop_timer()
        self.state = "ready"
        self.write(b"<handshake/>")
        log.info("component %s connected from %s", self.domain, self.peer)
        self.server.links.changed()

    # -- what the component sends ---------------------------------------
    async def _receive(self, el: Element) -> None:
        """A stanza from the component: checked, in jabber:client, routed."""
        kind = local_name(el)
        space = namespace(el)
        if kind not in _KINDS or space not in (ns.COMPONENT, ns.CLIENT):
            raise StreamError("unsupported-stanza-type",
                              f"{el.tag} is not a stanza (XEP-0114, RFC 6120 §8)")
        if space == ns.COMPONENT:
            el = to_client(el, ns.COMPONENT)
        # COMPAT: slixmpp's use_jc_ns (and other libraries) send stanzas in
        # jabber:client on this stream, as Prosody accepts: taken as they are.
        frm = el.get("from")
        if not frm or not el.get("to"):
            # As between servers (RFC 6120 §4.9.3.7): RFC 6120 has no stanza
            # error for it, and a component that leaves them out is broken.
            raise StreamError("improper-addressing", "a component's stanza needs 'from' and "
                              "'to' (RFC 6120 §4.9.3.7)")
        try:
            sender = JID.parse(frm)
        except JIDError:
            sender = None
        if sender is None or sender.domain != self.domain:
            raise StreamError("invalid-from", f"{frm} is not a JID of {self.domain} "
                              "(RFC 6120 §4.9.3.9)")
        el.set("from", str(sender))
        problem = iq_problem(el) if kind == "iq" else None
        if problem is not None:
            self._reject(el, problem)
            return
        await self.server.router.route(el, None)

    def _reject(self, el: Element, text: str) -> None:
        """Answer a stanza the component got wrong, on its stream."""
        if el.get("type") != "error" and self.session is not None:
            self.session.send(error_reply(el, StanzaError("bad-request", text)))

    # -- the end -------------------------------------------------------
    def _timeout(self) -> None:
        self._timer = None
        if self.session is None:
            self.close(StreamError("connection-timeout", "no handshake in time (XEP-0114)"))

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def ended(self) -> None:
        """Out of the routing table: what is routed to it now bounces."""
        self._stop_timer()
        session, self.session = self.session, None
        if session is not None and self.server.sessions.unbind(session):
            log.info("component %s disconnected", self.domain)
            self.server.links.changed()
