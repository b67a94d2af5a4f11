"""A bound resource (RFC 6120 §7): what the router and the session table
deliver to, apart from the connection that carries it.

A session is not a socket (DESIGN.md): the bound JID, the presence state,
the modules' fields and the delivery point live here; the bytes go through
a :class:`Transport` (today a TCP :class:`~vinespy.stream.client.ClientStream`;
WebSocket and BOSH next). :meth:`ClientSession.attach` hands the session to
another transport, as XEP-0198 resumption will.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Callable, Protocol

from .. import ns
from ..errors import StanzaError, StreamError
from ..fields import SessionField
from ..host import DELIVER, PRE
from ..jid import JID
from ..xml import Element, error_reply, local_name, namespace, reply, serialize

if TYPE_CHECKING:
    from ..host import Host
    from ..server import Server

log = logging.getLogger("vinespy.c2s")

STANZAS = frozenset(f"{{{ns.CLIENT}}}{n}" for n in ("message", "presence", "iq"))
_IQ_TYPES = frozenset(("get", "set", "result", "error"))
_SESSION = f"{{{ns.SESSION}}}session"


class Transport(Protocol):
    """What a session needs of the connection carrying it."""

    peer: Any                   # the peer's address (what the socket says)
    secure: bool                # encrypted (TLS)

    def write(self, data: bytes) -> None:
        """Queue ``data`` (never blocks; nothing once the transport closes)."""

    def close(self, error: StreamError | None = None) -> None:
        """Send ``error`` (if any), end the stream and close the connection."""


def iq_problem(el: Element) -> str | None:
    """What is wrong with an iq (RFC 6120 §8.2.3), for a ``<bad-request/>``;
    None if nothing is."""
    stype = el.get("type")
    if stype not in _IQ_TYPES or el.get("id") is None:
        return "an iq needs an id and a type of get, set, result or error (RFC 6120 §8.2.3)"
    if stype in ("get", "set") and len(el) != 1:
        return "an iq get or set carries exactly one child (RFC 6120 §8.2.3)"
    return None


async def nonza(host: Host, carrier: Any, el: Element) -> bool:
    """A top-level element that is no stanza (XEP-0198's <enable/>, <r/>,
    <a/>...): ``nonza/<namespace>:<name>`` on the host's bus, with the
    session (the stream before bind) and the element. True if a handler took it."""
    event = f"nonza/{namespace(el)}:{local_name(el)}"
    if not host.bus.has(event):
        return False
    return await host.bus.fire(event, carrier, el) is not None


class Held:
    """The transport of a session whose connection went away while a module
    keeps the session for a client that may come back (XEP-0198 resumption,
    ``transport-lost``). What the session is sent meanwhile is kept, up to
    ``max_bytes``, and written to the transport it is attached to next. Past
    that everything is dropped and ``overflowed`` says so: the module must
    not resume such a session (it answers ``<failed/>``) but end it."""

    peer = None
    secure = True

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.queue: list[bytes] = []
        self.size = 0
        self.overflowed = False

    def write(self, data: bytes) -> None:
        if self.overflowed:
            return
        self.size += len(data)
        if self.size > self.max_bytes:
            self.overflowed = True
            self.queue.clear()
            return
        self.queue.append(data)

    def close(self, error: StreamError | None = None) -> None:
        self.overflowed = True          # nothing more to keep: the session ends
        self.queue.clear()


HELD_MAX = 1 << 20              # bytes a held session keeps (as a stream's unsent data)


class ClientSession:
    """One bound resource: a :class:`~vinespy.sessions.Session`."""

    __slots__ = ("server", "host", "jid", "user", "id", "bound", "fields", "transport",
                 "pre_events", "handled", "_unbinding", "_write", "_tap", "_deliver", "_watched",
                 "_available", "_priority", "_presence")

    def __init__(self, server: Server, host: Host, jid: JID, sid: str,
                 transport: Transport) -> None:
        self.server = server
        self.host = host
        self.jid = jid                         # the full JID bound
        self.user = jid.bare
        self.id = sid                          # the cluster's name for it (the first stream's id)
        self.bound = False                     # in the session table
        self._unbinding: asyncio.Event | None = None    # unbind() began; set once done
        self.fields: dict[str, Any] = {}       # the modules' SessionFields
        self.handled = 0                       # stanzas received from the client (XEP-0198)
        self._available = False
        self._priority = 0
        self._presence: Element | None = None
        self._deliver = host.hooked(DELIVER)     # tag -> deliver-<kind> event
        self._watched: frozenset[str] = frozenset()   # tags watch() turned on
        self.pre_events = host.hooked(PRE)       # tag -> pre-<kind> event (the router's)
        self.transport = transport
        self._tap: Callable[[bytes], None] | None = None
        # The hot path: no lookup through transport.
        self._write: Callable[[bytes], None] = transport.write

    def __repr__(self) -> str:
        return f"<ClientSession {self.id} {self.jid}>"

    def attach(self, transport: Transport) -> Transport:
        """Carry on over ``transport`` (XEP-0198 resumption); return the old one,
        which no longer writes for this session. What a :class:`Held` kept
        goes out first, in order."""
        old, self.transport = self.transport, transport
        self._write = transport.write if self._tap is None else self._tap
        if isinstance(old, Held):
            for data in old.queue:
                transport.write(data)
            old.queue = []
        return old

    def tap(self, write: Callable[[bytes], None] | None) -> None:
        """Every stanza written to the client from now on goes to ``write``
        (serialized) instead of the transport; ``write`` passes it on to
        :attr:`transport` (XEP-0198 keeps a copy until the client acknowledges
        it). None: straight to the transport again."""
        self._tap = write
        self._write = self.transport.write if write is None else write

    def detach(self, max_bytes: int = HELD_MAX) -> Held:
        """Go on without a connection (its transport is gone, a module keeps
        the session): stay bound, keep what is sent (see :class:`Held`)."""
        held = Held(max_bytes)
        self.attach(held)
        return held

    # -- what other nodes of a cluster see: a change is queued for the
    # routing table (a no-op when standalone) --------------------------------
    @property
    def available(self) -> bool:
        return self._available

    @available.setter
    def available(self, value: bool) -> None:
        if value != self._available:
            self._available = value
            self.server.sessions.changed(self)

    @property
    def priority(self) -> int:
        return self._priority

    @priority.setter
    def priority(self, value: int) -> None:
        if value != self._priority:
            self._priority = value
            self.server.sessions.changed(self)

    @property
    def presence(self) -> Element | None:
        return self._presence

    @presence.setter
    def presence(self, value: Element | None) -> None:
        self._presence = value
        self.server.sessions.changed(self)

    def field_changed(self, field: SessionField[Any], member: Any) -> None:
        self.server.sessions.field_changed(self, field, member)

    # -- delivery ----------------------------------------------------------------
    def send(self, stanza: Element) -> None:
        """The one way a stanza reaches this client: ``deliver-<kind>``
        handlers see it first and may take it (return non-None)."""
        if self._deliver and self._delivered(stanza):
            return
        self._write(serialize(stanza))

    def send_serialized(self, stanza: Element, data: bytes) -> None:
        """:meth:`send` for a stanza that arrives serialized (from another
        node): ``data`` is written as it came unless a handler wants it."""
        if self._deliver and stanza.tag in self._deliver:
            self.send(stanza)               # handlers may change it: serialized again
        else:
            self._write(data)

    def watch(self, tag: str, on: bool) -> None:
        """While on, ``deliver-<kind>/watched`` handlers see the stanzas of
        ``tag`` written to this session (before ``deliver-<kind>``): a module
        that needs them only for some sessions (CSI, while inactive) costs
        nothing on the others, whose stanzas from other nodes are written as
        they came, never parsed and serialized again."""
        self._watched = self._watched | {tag} if on else self._watched - {tag}
        self._deliver = self.host.hooked(DELIVER)
        for t in self._watched:
            self._deliver.setdefault(t, DELIVER[t])

    def _delivered(self, stanza: Element) -> bool:
        event = self._deliver.get(stanza.tag)
        if event is None:
            return False
        bus = self.host.bus
        try:
            if (stanza.tag in self._watched
                    and bus.fire_sync(f"{event}/watched", self, stanza) is not None):
                return True
            return bus.fire_sync(event, self, stanza) is not None
        except Exception:
            # A module's bug must not lose the stanza: it goes out unchanged.
            log.exception("%s handler failed on a stanza to %s", event, self.jid)
            return False

    def close(self, error: StreamError | None = None) -> None:
        """Close the transport's stream, sending ``error`` first if given. A
        held session has no stream whose end would unbind it: it ends here."""
        self.transport.close(error)
        if isinstance(self.transport, Held):
            self.server.later(self.unbind())

    # -- what the client sends (RFC 6120 §8) -------------------------------------
    async def receive(self, el: Element) -> None:
        """A top-level element from the client: a stanza is stamped, checked
        and routed; another is a nonza, else the stream's end."""
        if el.tag not in STANZAS:
            if await nonza(self.host, self, el):
                return
            raise StreamError("unsupported-stanza-type",
                              f"{el.tag} is not a stanza (RFC 6120 §8)")
        self.handled += 1
        # RFC 6120 §8.1.2.1: the server stamps 'from'; a client cannot spoof it.
        el.set("from", str(self.jid))
        kind = local_name(el)
        if kind == "iq":
            stype = el.get("type")
            problem = iq_problem(el)
            if problem is not None:
                self._reject(el, problem)
                return
            if stype == "set" and el[0].tag == _SESSION and el.get("to") in (
                    None, self.jid.domain):
                self.send(reply(el))
                return
        await self.server.router.route(el, self)

    def _reject(self, el: Element, text: str) -> None:
        if el.get("type") != "error":
            self.send(error_reply(el, StanzaError("bad-request", text)))

    # -- the end -----------------------------------------------------------------
    @property
    def ending(self) -> bool:
        """Its unbinding began: still bound (what is routed to it reaches it)
        until ``resource-unbinding``'s handlers are done, but on its way out:
        nothing should be handed to it on purpose (offline storage)."""
        return self._unbinding is not None

    async def unbind(self) -> None:
        """Leave the routing table once; tell the modules (presence...).

        ``resource-unbinding`` first, the session still bound: every node
        still routes to it, and what it is sent meanwhile joins what it
        holds (XEP-0198 stores its unacknowledged messages until none is
        left, so that a sender's later messages cannot reach offline storage
        before them: RFC 6120 §10.1). Then, with no await in between, it
        leaves the table, and ``resource-unbound``. A second call returns
        once the first is done."""
        if self._unbinding is not None:
            await self._unbinding.wait()
            return
        if not self.bound:
            return
        self._unbinding = done = asyncio.Event()
        try:
            try:
                if self.host.bus.has("resource-unbinding"):
                    await self.host.bus.notify("resource-unbinding", self)
            finally:
                # Even cancelled (the server stopping): out of the table.
                self.bound = False
                sessions = self.server.sessions
                sessions.unbind(self)
            if sessions.missing((self.user,)):
                await sessions.load((self.user,))     # the siblings to tell
            await self.host.bus.notify("resource-unbound", self)
            self.available = False
        finally:
            done.set()
