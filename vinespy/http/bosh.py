"""XMPP over BOSH (XEP-0124 + XEP-0206): a client stream whose transport
is a series of HTTP requests.

A session (:class:`BoshStream`) is the same :class:`~vinespy.stream.client.C2S`
logic as a TCP or WebSocket stream: the session-creation ``<body/>`` stands
for the stream header, ``xmpp:restart`` for the header after SASL, a
``type='terminate'`` body for ``</stream:stream>``; the payloads of the
bodies are its elements, handled strictly in ``rid`` order (a request that
arrives early waits for the ones before it, within the window of
``requests``). What the session is sent queues until a request is held to
carry it; the oldest held request is answered as soon as something is
queued, or empty after ``wait`` s. At most ``hold`` requests are held.

The rules of XEP-0124 kept here: a repeated ``rid`` gets the response it got
before (the last ``requests`` responses are kept, §14.1); a ``rid`` outside
the window, an unknown ``sid`` → ``item-not-found``; more simultaneous
requests than ``requests``, or polling faster than ``polling`` →
``policy-violation`` (§11); no request for ``inactivity`` s ends the session
(§7.1). A session the server closes with no request held ends at once,
its client gets the ``terminate`` body with its next request. The node's
sessions, their creation and the relay of requests between cluster nodes
are :mod:`vinespy.http.boshnode`'s.

XEP-0198 is not offered over BOSH: BOSH has its own acknowledgements.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict, deque
from typing import TYPE_CHECKING

from .. import ns
from ..errors import StreamError
from ..stream.base import MAX_UNSENT, Framing, RateLimiter
from ..stream.client import C2S
from ..stream.negotiation import Auth, Bind
from ..stream.parser import StreamClosed, StreamOpened, StreamParser
from ..xml import Element
from .frames import qualify

if TYPE_CHECKING:
    from .peer import Client
    from .boshnode import Bosh

log = logging.getLogger("vinespy.bosh")

VERSION = "1.11"                 # XEP-0124's
POLLING = 2                      # s: the shortest polling interval allowed (hold = 0)
MAX_HOLD = 1                     # requests held at once (the client's hold, capped)
MAX_RID = 2 ** 53 - 1            # XEP-0124 §14: rids stay below this
_XBOSH_VERSION = f"{{{ns.XBOSH}}}version"
_XBOSH_RESTART = f"{{{ns.XBOSH}}}restart"
_SID = re.compile(rb"""\ssid\s*=\s*["']([A-Za-z0-9_.~-]{1,200})["']""")
_OPEN_BODY = (f"<body xmlns='{ns.HTTPBIND}' xmlns:xmpp='{ns.XBOSH}' "
              f"xmlns:stream='{ns.STREAM}'")
_EMPTY = f"<body xmlns='{ns.HTTPBIND}'/>".encode()
_B, _C = f"{{{ns.HTTPBIND}}}", f"{{{ns.CLIENT}}}"
_UNQUALIFIED = frozenset(_B + name for name in ("message", "presence", "iq"))


class BadRequest(Exception):
    """The body is not a BOSH body (→ ``bad-request``)."""


def terminate(condition: str = "", payload: bytes = b"") -> bytes:
    """A ``type='terminate'`` body (XEP-0124 §17), with ``condition`` if any."""
    cond = f" condition='{condition}'" if condition else ""
    if payload:
        return f"{_OPEN_BODY} type='terminate'{cond}>".encode() + payload + b"</body>"
    return f"<body xmlns='{ns.HTTPBIND}' type='terminate'{cond}/>".encode()


def parse_body(data: bytes, max_stanza_size: int, parser: StreamParser | None = None
               ) -> tuple[dict[str, str], list[Element]]:
    """The attributes and the payload of one ``<body/>``, parsed with the
    stream parser's limits (RFC 6120 §11.1, §13.12); BadRequest if it is not
    one. ``parser``: one to reuse (:meth:`StreamParser.again`).

    A stanza a client left in the body's namespace (``<message/>`` without
    ``xmlns='jabber:client'``, which XEP-0206 §5 asks for) is taken as
    jabber:client, as Prosody does."""
    if parser is None:
        parser = StreamParser(max_stanza_size=max_stanza_size)
    else:
        parser.again()
    try:
        events = parser.feed(data)
    except StreamError as exc:
        raise BadRequest(exc.text or exc.condition) from None
    if not events or not isinstance(events[0], StreamOpened) \
            or not isinstance(events[-1], StreamClosed):
        raise BadRequest("not one complete <body/>")
    head = events[0]
    if head.stream_ns != ns.HTTPBIND or head.local_name != "body":
        raise BadRequest(f"the root must be {{{ns.HTTPBIND}}}body")
    elements = [el for el in events[1:-1] if not isinstance(el, (StreamOpened, StreamClosed))]
    for el in elements:
        if el.tag in _UNQUALIFIED:
            for sub in el.iter():
                if isinstance(sub.tag, str) and sub.tag.startswith(_B):
                    sub.tag = _C + sub.tag[len(_B):]
    return head.attrs, elements


def _int(attrs: dict[str, str], name: str, default: int | None = None) -> int:
    value = attrs.get(name)
    if value is None:
        if default is None:
            raise BadRequest(f"'{name}' is missing")
        return default
    if not (value.isascii() and value.isdigit()) or len(value) > 16:
        raise BadRequest(f"'{name}' must be a non-negative integer")
    return int(value)


def _is_poll(attrs: dict[str, str], payload: list[Element]) -> bool:
    """An empty request (XEP-0124 §12): no payload, and not a restart,
    pause or terminate body either."""
    return not payload and "type" not in attrs and "pause" not in attrs \
        and _XBOSH_RESTART not in attrs


class _Request:
    """One HTTP request of a session, until it is answered."""

    __slots__ = ("rid", "attrs", "payload", "future", "timer", "arrived")

    def __init__(self, rid: int, attrs: dict[str, str], payload: list[Element],
                 arrived: float) -> None:
        self.rid = rid
        self.attrs = attrs
        self.payload = payload
        self.arrived = arrived
        self.future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.timer: asyncio.TimerHandle | None = None


class _Framing(Framing):
    """The HTTP side of :class:`BoshStream`: requests in, responses out."""

    def __init__(self, bosh: Bosh, sid: str, client: Client, rid: int, wait: float,
                 hold: int) -> None:
        cfg = bosh.server.config.client
        self.bosh = bosh
        self.sid = sid
        super().__init__(client.peer, client.secure)
        self.wait = wait
        self.hold = hold
        self.requests = hold + 1
        self.inactivity = bosh.cfg.bosh_inactivity
        self.next_rid = rid              # the next rid to handle
        self._early: dict[int, _Request] = {}      # arrived before their turn
        self._held: deque[_Request] = deque()
        self._current: _Request | None = None       # being handled
        self._answers: OrderedDict[int, bytes] = OrderedDict()   # rid -> response sent
        self._pending: list[bytes] = []              # what waits for a request
        self._pending_size = 0
        self._terminal: bytes | None = None          # the terminate body, once closed
        self._told = False                           # ... and a response carried it
        self._flush_scheduled = False
        self._lock = asyncio.Lock()
        # When the last empty request that got an empty answer arrived
        # (XEP-0124 §12: the next empty one must not come sooner than
        # ``polling`` s after it); None after a request or answer with content.
        self._fruitless_poll: float | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._ended = False
        self._limiter = (RateLimiter(cfg.rate_limit, cfg.rate_burst, self.loop.time())
                         if cfg.rate_limit else None)

    # -- writing -------------------------------------------------------
    def write(self, data: bytes) -> None:
        if not data or self._terminal is not None:
            return
        self._pending.append(qualify(data, stream_prefix=False))
        self._pending_size += len(data)
        if self._pending_size > MAX_UNSENT and not self.closing:
            # As a TCP client that does not read (stream/base.py).
            log.warning("BOSH session %s from %s does not fetch what it is sent; closing",
                        self.sid, self.peer)
            self.close(StreamError("policy-violation", "too much unread data"))
            return
        self._schedule()

    def _schedule(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Answer the oldest held request with what is queued (or the end)."""
        self._flush_scheduled = False
        if (self._pending or self._terminal is not None) and self._held:
            self._answer(self._held.popleft())

    def _body(self, req: _Request) -> bytes:
        if self._terminal is not None:
            return self._terminal
        ack = ""
        if req.rid < self.next_rid - 1 and "ack" in self._creation_attrs():
            ack = f" ack='{self.next_rid - 1}'"      # §9.1: later requests were handled
        if not self._pending:
            return _EMPTY if not ack else f"<body xmlns='{ns.HTTPBIND}'{ack}/>".encode()
        return b"".join((f"{_OPEN_BODY}{ack}>".encode(), *self._take(), b"</body>"))

    def _take(self) -> list[bytes]:
        """What is queued, taken out of the queue."""
        taken, self._pending, self._pending_size = self._pending, [], 0
        return taken

    def _creation_attrs(self) -> dict[str, str]:
        return {}

    def _answer(self, req: _Request, body: bytes | None = None) -> None:
        if req.timer is not None:
            req.timer.cancel()
            req.timer = None
        if req.future.done():
            return
        if body is None:
            fruitless = not self._pending and self._terminal is None
            body = self._body(req)
        else:
            fruitless = body == _EMPTY
        if _is_poll(req.attrs, req.payload):
            self._fruitless_poll = req.arrived if fruitless else None
        self._answers[req.rid] = body
        while len(self._answers) > self.requests:
            self._answers.popitem(last=False)
        req.future.set_result(body)
        if body is self._terminal:
            self._told = True           # the client has the terminate body
        if self._terminal is not None:
            self._finish()
        elif not self._held:
            self._idle_timer()

    def _expire(self, req: _Request) -> None:
        """``wait`` s passed: answer the held request, empty."""
        req.timer = None
        if req in self._held:
            self._held.remove(req)
            self._answer(req)

    # -- the session's life ----------------------------------------------
    def _idle_timer(self) -> None:
        if self._idle is None and not self._ended:
            self._idle = self.loop.call_later(self.inactivity, self._inactive)

    def _busy(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _inactive(self) -> None:
        self._idle = None
        # Requests waiting for a rid that never came do not keep it alive.
        if self._held or self._ended:
            return
        log.info("BOSH session %s from %s: no request for %g s; ending it",
                 self.sid, self.peer, self.inactivity)
        self.closing = True
        self._terminal = terminate("item-not-found")
        self._finish()

    def _finish(self) -> None:
        """No more requests will be answered: the stream ends (once)."""
        if self._ended:
            return
        self._ended = True
        self._busy()
        for req in list(self._held) + list(self._early.values()):
            if req.timer is not None:
                req.timer.cancel()
                req.timer = None
            if not req.future.done():
                req.future.set_result(self._terminal or terminate())
        self._held.clear()
        self._early.clear()
        self.bosh.server.later(self._end())

    async def _end(self) -> None:
        raise NotImplementedError

    # -- closing -------------------------------------------------------
    def close(self, error: StreamError | None = None, *, wait_for_peer: bool = False) -> None:
        """End the session with a terminate body: XEP-0206 §7 carries a
        stream error in it (``remote-stream-error``)."""
        if self.closing:
            return
        self.closing = True
        payload = b"".join(self._take())
        if error is None:
            self._terminal = terminate("", payload)
        else:
            self.error = error
            log.info("closing BOSH session %s from %s: %s", self.sid, self.peer, error)
            condition = "system-shutdown" if error.condition == "system-shutdown" \
                else "remote-stream-error"
            self._terminal = terminate(condition, payload + error.to_bytes())
        if self._held:
            self.flush()
        else:
            # Ends now (unbound, as a TCP stream closed): its client gets
            # the terminate body with its next request (Bosh.ended).
            self._finish()

    def abort(self) -> None:
        self._terminal = self._terminal or terminate("system-shutdown")
        self._finish()


class BoshStream(C2S, _Framing):
    """One BOSH session: a client stream over HTTP requests."""

    kind = "bosh"
    features = (Auth, Bind)         # no STARTTLS: TLS is HTTP's

    def __init__(self, bosh: Bosh, sid: str, client: Client, rid: int, wait: float,
                 hold: int, attrs: dict[str, str]) -> None:
        _Framing.__init__(self, bosh, sid, client, rid, wait, hold)
        self._attrs = attrs
        self._authenticated = False     # counted in Bosh.unauthenticated until then
        self.setup(bosh.server)

    def _creation_attrs(self) -> dict[str, str]:
        return self._attrs

    def header(self) -> bytes:
        return b""                      # the session-creation response stands for it

    def creation_response(self, rid: int) -> bytes:
        """XEP-0124 §7.1 + XEP-0206 §5: the session's parameters and the
        stream features (the stream logic queued them)."""
        assert self.host is not None
        ack = f" ack='{rid}'" if "ack" in self._attrs else ""
        head = (f"{_OPEN_BODY} sid='{self.sid}' wait='{self.wait:g}' "
                f"requests='{self.requests}' hold='{self.hold}' "
                f"inactivity='{self.inactivity:g}' polling='{POLLING}' ver='{self._version()}' "
                f"from='{self.host.domain}' authid='{self.id}' secure='true' "
                f"xmpp:version='1.0' xmpp:restartlogic='true'{ack}>")
        body = head.encode() + b"".join(self._take()) + b"</body>"
        self._answers[rid] = body
        return body

    def _version(self) -> str:
        """§7.2: the lower of the client's version and ours."""
        major, _, minor = self._attrs.get("ver", VERSION).partition(".")
        if major.isascii() and major.isdigit() and minor.isascii() and minor.isdigit():
            if (int(major), int(minor)) < (1, 11):
                return f"{int(major)}.{int(minor)}"
        return VERSION

    async def _end(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._authenticated:
            self._authenticated = True
            self.bosh.authenticated(self)
        self.bosh.finished(self, None if self._told else self._terminal or terminate())
        self.bosh.server.streams.discard(self)
        self.closing = True
        await self.ended()

    # -- requests --------------------------------------------------------
    async def request(self, rid: int, attrs: dict[str, str], payload: list[Element],
                      size: int) -> bytes:
        """One request of this session (its ``sid`` matched): its response."""
        if rid < self.next_rid:
            unanswered = self._unanswered(rid)
            if unanswered is not None:
                return await self._again(unanswered)
            return self._repeat(rid)
        if rid >= self.next_rid + self.requests or self._ended:
            return self._fail("item-not-found")
        early = self._early.get(rid)
        if early is not None:
            return await self._again(early)
        now = self.loop.time()
        outstanding = len(self._held) + len(self._early) + 1
        # §11: one more is allowed to pause or terminate the session.
        if outstanding > self.requests + (attrs.get("type") == "terminate"):
            return self._fail("policy-violation", "more simultaneous requests than 'requests'")
        if not _is_poll(attrs, payload):
            self._fruitless_poll = None
        elif (self.hold == 0 and self._fruitless_poll is not None
                and now - self._fruitless_poll < POLLING):
            return self._fail("policy-violation", f"polled faster than every {POLLING} s")
        self._busy()
        req = _Request(rid, attrs, payload, now)
        self._early[rid] = req
        if self._limiter is not None:
            pause = self._limiter.delay(size, now)
            if pause:
                await asyncio.sleep(pause)
        await self._run()
        if rid in self._early:
            self._idle_timer()          # a gap: the missing request may never come
        return await req.future

    def _unanswered(self, rid: int) -> _Request | None:
        """The request ``rid`` if it was taken but not answered yet (being
        handled, or held)."""
        if self._current is not None and self._current.rid == rid:
            return self._current
        return next((held for held in self._held if held.rid == rid), None)

    async def _again(self, req: _Request) -> bytes:
        """§14.3: ``req`` sent again before it was answered (the client gave
        up on that connection): the new connection waits for its answer in
        its place, the old one is let go."""
        old, req.future = req.future, self.loop.create_future()
        old.set_result(_EMPTY)
        return await req.future

    def _repeat(self, rid: int) -> bytes:
        """§14.3: a rid answered before gets its response again."""
        answer = self._answers.get(rid)
        return answer if answer is not None else self._fail("item-not-found")

    def _fail(self, condition: str, why: str = "") -> bytes:
        log.info("BOSH session %s from %s: %s%s", self.sid, self.peer, condition,
                 f" ({why})" if why else "")
        self.closing = True
        self._terminal = terminate(condition)
        self._told = True               # the caller answers with it
        self._finish()
        return self._terminal

    async def _run(self) -> None:
        """Handle the requests whose turn it is, in rid order (whichever
        request's coroutine gets here handles the others that are due)."""
        async with self._lock:
            while not self._ended and self.next_rid in self._early:
                req = self._early.pop(self.next_rid)
                self.next_rid += 1
                self._current = req
                try:
                    await self._handle(req)
                except StreamError as exc:
                    self.close(exc)
                    self._answer(req)
                except Exception:
                    log.exception("BOSH session %s from %s failed", self.sid, self.peer)
                    self.close(StreamError("internal-server-error"))
                    self._answer(req)
                finally:
                    self._current = None

    async def _handle(self, req: _Request) -> None:
        if self._terminal is not None:
            self._answer(req)
            return
        ack = req.attrs.get("ack", "")
        if ack.isascii() and ack.isdigit() and len(ack) <= 16:
            for rid in [r for r in self._answers if r <= int(ack) and r < req.rid - 1]:
                del self._answers[rid]          # §9.2: the client has them
        if req.attrs.get(_XBOSH_RESTART) == "true":
            if self.state != "header":
                raise StreamError("bad-format", "a restart before SASL succeeded")
            await self.handle(self._opened(req.attrs, restart=True))
        for el in req.payload:
            if self.closing:
                break
            await self.handle(el)
        if self.user is not None and not self._authenticated:
            self._authenticated = True
            self.bosh.authenticated(self)
        if req.attrs.get("type") == "terminate" and not self.closing:
            self.peer_closed = True
            self.close()
        if self._terminal is not None:
            self._answer(req)
            return
        self._held.append(req)
        if len(self._held) > self.hold:
            self._answer(self._held.popleft())
        if req in self._held:
            req.timer = self.loop.call_later(self.wait, self._expire, req)
        if self._pending:
            self._schedule()

    def _opened(self, attrs: dict[str, str], restart: bool = False) -> StreamOpened:
        """The stream header a creation or restart body stands for (a
        restart's ``to`` is optional: XEP-0206 §5 "SHOULD")."""
        header = {k: v for k, v in attrs.items() if k in ("to", "from", "xml:lang")}
        if restart and "to" not in header and self.host is not None:
            header["to"] = self.host.domain
        header["version"] = attrs.get(_XBOSH_VERSION, "1.0")
        return StreamOpened(attrs=header, namespace=ns.CLIENT, stream_ns=ns.STREAM,
                            local_name="stream")

    async def start(self, attrs: dict[str, str], rid: int) -> bytes:
        """The session-creation request: the stream opens, features queue."""
        try:
            if not self.secure and self.cfg.tls == "required":
                raise StreamError("policy-violation", "encryption is required: use https")
            await self.handle(self._opened(attrs))
        except StreamError as exc:
            self.close(exc)
        if self._terminal is not None:
            terminal = self._terminal
            self._finish()
            return terminal
        self.next_rid = rid + 1
        self._idle_timer()
        return self.creation_response(rid)
