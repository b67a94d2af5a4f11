"""Client-to-server streams (RFC 6120): negotiation, then stanzas to the session.

States, in order: ``header`` (waiting for the client's stream header),
``features`` (the negotiation features offered take their elements:
STARTTLS §5, SASL §6, bind §7; see :mod:`vinespy.stream.negotiation`),
``ready`` (bound: every element goes to the session this stream carries).
After STARTTLS and after SASL success a new stream header is expected.

:class:`C2S` is that logic over any framing (:class:`~vinespy.stream.base.Framing`):
:class:`ClientStream` over TCP (:class:`~vinespy.stream.base.XMLStream`), and
in :mod:`vinespy.http` over WebSocket (RFC 7395) and BOSH (XEP-0206), whose
framings turn their ``<open/>`` or session-creation ``<body/>`` into the
:class:`StreamOpened` this logic checks.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import TYPE_CHECKING, Any, Awaitable, Callable, ClassVar, Sequence

from .. import ns
from ..errors import StreamError
from ..jid import JID, JIDError
from ..xml import Element, escape_attr
from .base import Framing, XMLStream
from .negotiation import Auth, Bind, Feature, StartTLS
from .parser import StreamOpened, check_version
from .session import STANZAS, ClientSession, nonza

if TYPE_CHECKING:
    from ..host import Host
    from ..server import Server


class C2S(Framing):
    """One client's stream, whatever carries it: negotiation, then the
    elements read go to the :class:`~vinespy.stream.session.ClientSession`
    it carries (its transport). The framing calls :meth:`setup` once its
    own state is ready, :meth:`handle` per element, :meth:`ended` at the end."""

    # The negotiation steps, in the order they are offered and asked.
    features: ClassVar[tuple[Callable[[], Feature], ...]] = (StartTLS, Auth, Bind)
    #: What carries the stream (logs, ``vinespy status``, module choices).
    kind: ClassVar[str] = "tcp"

    # Slots: with its framing's, a stream had over 30 attributes, past which
    # CPython 3.11 gives an instance a dict of its own (keys not shared with
    # the other streams'): 1.9 KiB per stream (bench/idle_memory.py). The
    # framings (base.py, http/) keep a __dict__ for their own attributes.
    __slots__ = ("server", "cfg", "id", "state", "host", "user", "session", "_receive",
                 "_peer_from", "mechanism", "negotiation", "_timer")

    def setup(self, server: Server) -> None:
        cfg = server.config.client
        self.server = server
        self.cfg = cfg
        self.id = secrets.token_hex(8)
        self.state = "header"
        self.host: Host | None = None
        self.user: JID | None = None           # bare JID once authenticated
        self.session: ClientSession | None = None   # what this stream carries, once bound
        self._receive: Callable[[Element], Awaitable[None]]   # its receive(), once ready
        self._peer_from: str | None = None
        self.mechanism: str | None = None      # the SASL mechanism that succeeded
        self.negotiation: Sequence[Feature] = [feature() for feature in self.features]
        self._timer: asyncio.TimerHandle | None = self.loop.call_later(
            cfg.auth_timeout, self._timeout)

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.id} "
                f"{self.session.jid if self.session else self.peer}>")

    # -- header --------------------------------------------------------
    def header_attrs(self) -> str:
        """The attributes of this side's stream header (RFC 6120 §4.7), which
        a WebSocket puts on its ``<open/>`` (RFC 7395 §3.4)."""
        domain = self.host.domain if self.host else self.server.config.domains[0]
        to = f" to='{escape_attr(self._peer_from)}'" if self._peer_from else ""
        return f"id='{self.id}' from='{domain}'{to} version='1.0' xml:lang='en'"

    def header(self) -> bytes:
        return (f"<?xml version='1.0'?><stream:stream xmlns='{ns.CLIENT}' "
                f"xmlns:stream='{ns.STREAM}' {self.header_attrs()}>").encode()

    def _open(self, ev: StreamOpened) -> None:
        """RFC 6120 §4.7-4.8: check the client's header, answer with ours."""
        self._peer_from = None
        self.header_sent = False
        frm = ev.attrs.get("from")
        if frm:
            try:
                JID.parse(frm)
                self._peer_from = frm
            except JIDError:
                pass
        if ev.stream_ns != ns.STREAM or ev.local_name != "stream":
            raise StreamError("invalid-namespace", "the root must be "
                              f"{{{ns.STREAM}}}stream (RFC 6120 §4.8.1)")
        if ev.namespace != ns.CLIENT:
            raise StreamError("invalid-namespace",
                              f"the default namespace must be {ns.CLIENT} (RFC 6120 §4.8.2)")
        to = ev.attrs.get("to", "")
        try:
            domain = JID.parse(to).domain if to else ""
        except JIDError:
            domain = ""
        host = self.server.hosts.get(domain)
        if host is None or (self.host is not None and host is not self.host):
            raise StreamError("host-unknown", f"{to or 'no to'}: not served here")
        self.host = host
        check_version(ev.attrs.get("version", "0.9"))
        self.write(self.header())
        self.header_sent = True
        self.write(self._features())
        self.state = "features"

    def _features(self) -> bytes:
        parts = "".join(feature.offer(self) for feature in self.negotiation)
        return f"<stream:features>{parts}</stream:features>".encode()

    # -- dispatch ------------------------------------------------------
    async def handle(self, event: Any) -> bool:
        if isinstance(event, StreamOpened):
            if self.state != "header":
                raise StreamError("bad-format", "a second stream header")
            self._open(event)
            return False
        if self.state == "ready":
            await self._receive(event)
            return False
        if self.state == "header":
            raise StreamError("bad-format", "expected a stream header")
        for feature in self.negotiation:
            done = await feature.handle(self, event)
            if done is not None:
                return done
        if self.user is None:
            raise StreamError("not-authorized", "authenticate first (RFC 6120 §6)")
        assert self.host is not None
        if event.tag not in STANZAS and await nonza(self.host, self, event):
            return False
        raise StreamError("not-authorized", "bind a resource first (RFC 6120 §7)")

    def restart(self) -> None:
        super().restart()
        self.state = "header"

    def carry(self, session: ClientSession) -> None:
        """From now on, what the client sends is ``session``'s (bound here,
        or later resumed on this stream)."""
        self.session = session
        self._receive = session.receive
        self.state = "ready"
        self.negotiation = ()           # done: no stream header follows a bind
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- the end -------------------------------------------------------
    def close(self, error: StreamError | None = None, *, wait_for_peer: bool = False) -> None:
        session = self.session
        if (not self.closing and session is not None and session.transport is self
                and self.host is not None and self.host.bus.has("stream-closing")):
            # Last words before </stream:stream> (XEP-0198: a final <a/>).
            self.host.bus.fire_sync("stream-closing", session)
        super().close(error, wait_for_peer=wait_for_peer)

    def _timeout(self) -> None:
        self._timer = None
        if self.session is None:
            self.close(StreamError("connection-timeout", "not authenticated in time"))

    async def ended(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        session = self.session
        if session is None or session.transport is not self:
            return                      # not bound, or moved to another transport
        # A module may keep the session for a client that comes back
        # (XEP-0198): it stays bound, detached (the module attaches it to
        # what stands in for the connection), and the module ends it later.
        if session.bound and await session.host.bus.fire("transport-lost", session) is not None:
            return
        await session.unbind()


class ClientStream(C2S, XMLStream):
    """A client's TCP connection (STARTTLS or XEP-0368 direct TLS): the
    listener's protocol factory makes one per connection."""

    def __init__(self, server: Server) -> None:
        cfg = server.config.client
        XMLStream.__init__(self, max_stanza_size=cfg.max_stanza_size,
                           rate_limit=cfg.rate_limit, rate_burst=cfg.rate_burst,
                           send_timeout=cfg.send_timeout)
        self.server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # With direct TLS, once the handshake is done: only then is it a
        # stream (its auth timer starts now) that the server carries.
        XMLStream.connection_made(self, transport)
        self.setup(self.server)
        self.server.idle_parsers.watch(self.parser)
        self.run_task(self.server.carry(self))
