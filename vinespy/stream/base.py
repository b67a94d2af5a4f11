"""One XML stream over one connection: the only code that touches a socket.

Each stream handles its elements strictly in order, one at a time (RFC
6120 §10.1): in the protocol's ``data_received`` while their handlers need
not wait, in the stream's task when one does (:class:`XMLStream`).
Output is batched: everything written during one turn of the event loop
goes out in one ``transport.write``. A client that sends faster than
its rate limit is slowed down by not reading (TCP pushes back), never
disconnected for an ordinary burst: the pause comes before the next read,
so what was read is handled at once and nothing read in one TLS state is
handled in another. A client that does not read what it is sent is
disconnected once more than ``MAX_UNSENT`` bytes wait for it, or once
nothing it was sent has left for ``send_timeout`` seconds; a closed
connection whose peer does not take its last bytes is dropped after a
grace period, so neither holds memory or a bound resource for long.
"""

from __future__ import annotations

import asyncio
import contextvars
import fcntl
import logging
import ssl
import struct
import termios
from typing import Any, Coroutine, Generator

from asyncio.tasks import _enter_task, _leave_task

from ..errors import StreamError
from .parser import StreamClosed, StreamParser

log = logging.getLogger("vinespy.stream")

_WS = b" \t\r\n"
_OUTQ: int | None = getattr(termios, "TIOCOUTQ", None)

MAX_UNSENT = 1024 * 1024   # bytes buffered (beyond the kernel's) for a peer that does not read
CLOSE_GRACE = 5.0          # s a closed stream's last bytes may take before the drop


def _kernel_unsent(transport: asyncio.BaseTransport) -> int:
    """Bytes the kernel has not yet had acknowledged on the transport's
    socket (Linux TIOCOUTQ/SIOCOUTQ); 0 where that cannot be read."""
    sock = transport.get_extra_info("socket")
    if sock is None or _OUTQ is None:
        return 0
    try:
        return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), _OUTQ, b"\0" * 4))[0])
    except (OSError, ValueError):
        return 0


class RateLimiter:
    """Token bucket over bytes: ``delay(n)`` says how long to stop reading."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: int, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = now

    def delay(self, n: int, now: float) -> float:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate) - n
        self.stamp = now
        return -self.tokens / self.rate if self.tokens < 0 else 0.0


class Framing:
    """What a client stream's logic (:class:`~vinespy.stream.client.C2S`) asks
    of whatever carries its XML: TCP (:class:`XMLStream`), a WebSocket or a
    series of BOSH requests (:mod:`vinespy.http`).

    :meth:`write` takes whole top-level elements (or a stream header), one
    or more per call, already serialized: a framing that must put each in
    a message of its own, or qualify its namespace, does so itself.
    """

    def __init__(self, peer: Any, secure: bool) -> None:
        self.loop = asyncio.get_running_loop()
        self.peer = peer                 # the peer's address
        self.secure = secure             # encrypted, or counted so (a TLS proxy in front)
        self.header_sent = False         # this side's stream header (or <open/>) went out
        self.closing = False
        self.peer_closed = False         # the peer closed its stream
        self.error: StreamError | None = None    # the stream error this side sent

    async def run(self) -> None:
        """Read and handle until the stream ends; then clean up (a framing
        that reads in a task of its own; BOSH has none)."""
        try:
            await self._read_loop()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("stream from %s failed", self.peer)
            self.close(StreamError("internal-server-error"))
        finally:
            self.closing = True
            try:
                await self.ended()
            finally:
                await self._release()

    async def _read_loop(self) -> None:
        raise NotImplementedError

    async def _release(self) -> None:
        """After :meth:`ended`: what is written goes out, the connection closes."""

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def header(self) -> bytes:
        """The opening tag this side sends (RFC 6120 §4.7)."""
        raise NotImplementedError

    def close(self, error: StreamError | None = None, *, wait_for_peer: bool = False) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        """Drop the connection without ceremony (shutdown gave up waiting)."""
        raise NotImplementedError

    def restart(self) -> None:
        """A new stream begins (RFC 6120 §4.3.3): a new header is expected."""

    def unread_input(self) -> bool:
        """Whether anything arrived after the element being handled."""
        return False

    async def start_tls(self, ctx: ssl.SSLContext, timeout: float) -> None:
        raise NotImplementedError("no STARTTLS over this framing")

    async def ended(self) -> None:
        """The stream is over (either side closed it, or the link died)."""


class _Resume:
    """Awaitable that carries on a coroutine already started by hand and
    suspended on ``waiting`` (what it yielded): a task awaiting it runs the
    rest, as if the coroutine had been the task's from the start (results,
    exceptions and cancellation pass through). Python 3.12's eager tasks do
    this in C; 3.11 has no such thing."""

    __slots__ = ("coro", "waiting")

    def __init__(self, coro: Coroutine[Any, Any, Any], waiting: Any) -> None:
        self.coro = coro
        self.waiting = waiting

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, waiting = self.coro, self.waiting
        while True:
            try:
                value = yield waiting
            except BaseException as exc:
                try:
                    waiting = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    waiting = coro.send(value)
                except StopIteration as stop:
                    return stop.value


class XMLStream(Framing, asyncio.Protocol):
    """Reading, writing and closing over TCP; subclasses implement :meth:`handle`.

    The stream is the connection's :class:`asyncio.Protocol`: what arrives
    is parsed in ``data_received`` and each element's handler run there, by
    hand, as far as it goes without waiting, as a step of the stream's task
    (which is the current task meanwhile, so ``asyncio.timeout`` and
    cancellation work as in any task). Most handlers never wait (a chat
    message is routed and written at once), so an element costs no task
    wake-up and no loop turn of its own; with a StreamReader and a reader
    task every read was a future resolved, a step scheduled and five
    coroutine frames resumed. A handler that does wait (storage, SASL,
    STARTTLS) is carried on by the stream's task; reading pauses and what
    arrives meanwhile waits until it is done, so elements are still handled
    strictly in order, one at a time (bench/results/2026-12-07-realistic.md
    has the figures).
    """

    transport: asyncio.Transport

    def __init__(self, *, max_stanza_size: int, rate_limit: int = 0, rate_burst: int = 65536,
                 send_timeout: float = 60.0) -> None:
        super().__init__(None, False)
        self.parser = StreamParser(max_stanza_size=max_stanza_size)
        self._out: list[bytes] = []
        self._sealed = False             # </stream:stream> is written: nothing may follow
        self._limiter = (RateLimiter(rate_limit, rate_burst, self.loop.time())
                         if rate_limit else None)
        self._tail = b""                 # the end of the last read (not all of it: memory)
        self._events: list[Any] = []     # of the last read not yet handled, last first
        self._inbox: list[bytes] = []    # read while a handler waited: not yet parsed
        self._task: asyncio.Task[Any] | None = None   # the stream's, once it runs
        self._ctx = contextvars.copy_context()        # its context
        self._waiting: tuple[Coroutine[Any, Any, bool], Any] | None = None
        self._busy = True                # the task handles (it has not started yet)
        self._wake: asyncio.Future[None] | None = None
        self._throttled: asyncio.TimerHandle | None = None
        self._eof = False                # no more input will be handled
        self._lost: asyncio.Future[None] = self.loop.create_future()
        self._drained: asyncio.Future[None] | None = None
        self.send_timeout = send_timeout
        self._queued = 0                 # bytes ever handed to the transport
        self._sent_at_check = 0          # of which had left at the last stall check
        self._stall: asyncio.TimerHandle | None = None
        self._tls_starting = False       # in start_tls: self.transport is the old one

    def run_task(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Start the stream's task, running ``work`` (which runs :meth:`run`)
        in the stream's context."""
        return self.loop.create_task(work, context=self._ctx)

    # -- the protocol ----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport       # type: ignore[assignment]
        self.peer = transport.get_extra_info("peername")
        self.secure = transport.get_extra_info("ssl_object") is not None

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            log.debug("connection from %s lost: %s", self.peer, exc)
        if not self._lost.done():
            self._lost.set_result(None)
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._end_input()

    def eof_received(self) -> bool | None:
        self._end_input()
        return None                      # the transport closes itself

    def pause_writing(self) -> None:
        if self._drained is None or self._drained.done():
            self._drained = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._eof:
            return
        if self._busy or self._inbox:
            self._inbox.append(data)     # after what waits, in order
            self._hold()
            return
        self._ctx.run(self._eagerly, data)

    def _eagerly(self, data: bytes) -> None:
        """Handle ``data`` now, as a step of the stream's task (in its context)."""
        task = self._task
        assert task is not None
        _enter_task(self.loop, task)
        try:
            self._take(data)
        finally:
            _leave_task(self.loop, task)
        if (self._busy or self._eof) and self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    # -- reading ---------------------------------------------------------
    def _take(self, data: bytes) -> None:
        """Parse one read and handle what it completed."""
        if self.closing:
            # This side closed its stream (waiting for the peer's end): what
            # the peer sends now ends it, as its </stream:stream> would.
            self._end_input()
            return
        if self._limiter is not None:
            pause = self._limiter.delay(len(data), self.loop.time())
            if pause:
                # Throttle the next read, never between a read and its
                # handling: bytes that arrive meanwhile wait unread, so they
                # cannot be handled after a STARTTLS that they followed.
                self._throttled = self.loop.call_later(pause, self._unthrottle)
                self._hold()
        try:
            events = self.parser.feed(data)
        except StreamError as exc:
            self.close(exc)
            return
        self._tail = data[-64:]
        events.reverse()                 # handled by pop(): no index to keep
        self._events = events
        self._handle_events()

    def _handle_events(self) -> None:
        """Handle the parsed events in order, then what was read meanwhile,
        until a handler waits (:attr:`_waiting`: the task carries it on)."""
        events = self._events
        while events and not self.closing:
            event = events.pop()
            if isinstance(event, StreamClosed):
                self.peer_closed = True
                self.close()
                break
            coro = self.handle(event)
            try:
                waiting = coro.send(None)
            except StopIteration as stop:
                if stop.value:
                    # After a parser reset whatever followed in this read
                    # belongs to no stream: drop it.
                    break
                continue
            except StreamError as exc:
                self.close(exc)
                break
            except Exception:
                log.exception("stream from %s failed", self.peer)
                self.close(StreamError("internal-server-error"))
                break
            self._waiting = (coro, waiting)
            self._busy = True
            self._hold()
            return
        events.clear()
        if self.closing:
            self._end_input()
            return
        if self._inbox and not self._eof:
            self._take(self._inbox.pop(0))

    async def _read_loop(self) -> None:
        self._task = asyncio.current_task()
        try:
            while True:
                if self._waiting is None:
                    # What arrived before the task ran.
                    self._handle_events()
                while self._waiting is not None:
                    coro, waiting = self._waiting
                    self._waiting = None
                    try:
                        reset = await _Resume(coro, waiting)
                    except StreamError as exc:
                        self.close(exc)
                        reset = True
                    except Exception:
                        log.exception("stream from %s failed", self.peer)
                        self.close(StreamError("internal-server-error"))
                        reset = True
                    if reset:
                        self._events.clear()
                    self._handle_events()
                if self._eof:
                    return
                self._busy = False
                self._release_hold()
                self._wake = self.loop.create_future()
                await self._wake
                self._wake = None
        except asyncio.CancelledError:
            if self._waiting is not None:
                self._waiting[0].close()
                self._waiting = None
            raise

    def _hold(self) -> None:
        if self._tls_starting:
            # What arrives during start_tls comes from the new TLS transport,
            # the peer's first bytes after its handshake (they may share a
            # TCP segment with its Finished), while self.transport is still
            # the raw one, now the TLS layer's own: pausing that would stall
            # the TLS layer for good. Such bytes wait in the inbox (in order)
            # and the new transport is paused, if need be, once it is ours.
            return
        if self.transport.is_reading():
            self.transport.pause_reading()

    def _release_hold(self) -> None:
        if (not self._busy and self._throttled is None and not self.transport.is_reading()
                and not self._inbox and not self._eof and not self.transport.is_closing()):
            self.transport.resume_reading()

    def _unthrottle(self) -> None:
        self._throttled = None
        self._release_hold()

    def _end_input(self) -> None:
        """No more input is handled (end of file, lost, or closed here); the
        stream ends once a handler that waits is done."""
        if self._eof:
            return
        self._eof = True
        self._inbox.clear()
        if self._throttled is not None:
            self._throttled.cancel()
            self._throttled = None
        if not self._busy and self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def _release(self) -> None:
        self.flush()
        self._stop_stall_timer()
        self._close_transport()
        await self._closed_or_dropped()

    async def _closed_or_dropped(self) -> None:
        """Give a peer that does not read its last bytes a grace period, then
        drop the connection: an unread buffer never outlives the stream."""
        try:
            # Shielded: a timeout must not cancel the future others may be
            # waiting on too.
            await asyncio.wait_for(asyncio.shield(self._lost), min(CLOSE_GRACE, self.send_timeout))
        except asyncio.TimeoutError:
            log.info("%s did not take its last bytes; dropping the connection", self.peer)
            self.abort()

    async def wait_closed(self) -> None:
        """Return once the connection is closed."""
        await asyncio.shield(self._lost)

    def unread_input(self) -> bool:
        """Whether anything arrived after the element being handled: more of
        the same read, an element still open, or bytes read from the socket
        but not yet parsed (RFC 6120 §5.4.3.3: nothing sent before the TLS
        handshake may be taken as sent after it)."""
        return (bool(self._events) or not self._tail.rstrip(_WS).endswith(b">")
                or not self.parser.idle or bool(self._inbox))

    async def handle(self, event: Any) -> bool:
        """Handle one parser event; return True after resetting the parser."""
        raise NotImplementedError

    # -- writing -------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self._sealed or self.transport.is_closing():
            return
        if not self._out:
            self.loop.call_soon(self.flush)    # one flush a loop turn
        self._out.append(data)

    def flush(self) -> None:
        if not self._out:
            return
        data = b"".join(self._out)
        self._out.clear()
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(data)
        self._queued += len(data)
        if transport.get_write_buffer_size() > MAX_UNSENT and not self.closing:
            log.warning("%s does not read what it is sent; closing", self.peer)
            self.close(StreamError("policy-violation", "too much unread data"))
        elif self._stall is None:
            self._sent_at_check = self._sent()
            self._stall = self.loop.call_later(self.send_timeout, self._check_stall)

    def _sent(self) -> int:
        """Bytes the peer has taken: all those queued but what still waits
        here or in the kernel (on Linux, unacknowledged bytes: SIOCOUTQ), so
        that a peer that stops reading is seen even when the kernel holds
        all it was sent. With TLS, an estimate that grows only if it reads."""
        transport = self.transport
        return self._queued - transport.get_write_buffer_size() - _kernel_unsent(transport)

    def _check_stall(self) -> None:
        """Every ``send_timeout`` s while output waits: close the stream if
        none of it left since the last check (the peer stopped reading)."""
        self._stall = None
        if self.transport.is_closing():
            return
        sent = self._sent()
        if sent == self._queued:
            return                      # all taken: no timer until the next write
        if sent <= self._sent_at_check:
            log.warning("%s took nothing it was sent for %g s; closing",
                        self.peer, self.send_timeout)
            self.close(StreamError("connection-timeout", "not reading what it is sent"))
            return
        self._sent_at_check = sent
        self._stall = self.loop.call_later(self.send_timeout, self._check_stall)

    def _stop_stall_timer(self) -> None:
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None

    async def drain(self) -> None:
        """Flush now and wait while the transport holds more than its high-water
        mark (before STARTTLS)."""
        self.flush()
        if self._drained is not None and not self._drained.done():
            await self._drained

    # -- what the negotiation asks of the transport ----------------------
    def restart(self) -> None:
        """A new stream begins on this connection (RFC 6120 §4.3.3): the
        parser starts over, a new stream header is expected."""
        self.parser.reset()

    async def start_tls(self, ctx: ssl.SSLContext, timeout: float, *, server_side: bool = True,
                        server_hostname: str | None = None) -> None:
        """Encrypt the connection once what was written left (RFC 6120 §5),
        then :meth:`restart` (the initiating side of a server-to-server
        stream is the TLS client: ``server_side`` False). A failed handshake
        (OSError, TimeoutError) drops the connection and is raised."""
        await self.drain()
        self._tls_starting = True
        try:
            transport = await self.loop.start_tls(self.transport, self, ctx,
                                                  server_side=server_side,
                                                  server_hostname=server_hostname,
                                                  ssl_handshake_timeout=timeout)
        except (OSError, asyncio.TimeoutError):
            self.closing = True
            self.transport.abort()
            raise
        finally:
            self._tls_starting = False
        if transport is None:            # the connection went meanwhile
            self.closing = True
            raise ConnectionResetError("closed during the TLS handshake")
        self.transport = transport       # reading: the new one does not start paused
        if self._inbox or self._busy:
            self._hold()                 # what it already delivered waits (see _hold)
        self.secure = True
        self.restart()

    # -- closing -------------------------------------------------------
    def close(self, error: StreamError | None = None, *, wait_for_peer: bool = False) -> None:
        """Send ``error`` (if any) and ``</stream:stream>``, then close.

        With ``wait_for_peer`` the TCP connection stays open until the peer
        closes its stream too (RFC 6120 §4.4) or the owner gives up.
        """
        if self.closing:
            return
        self.closing = True
        if not self.header_sent:
            # RFC 6120 §4.9.1.1: an error needs a stream to be sent in.
            self.write(self.header())
            self.header_sent = True
        if error is not None:
            self.error = error
            log.info("closing stream from %s: %s", self.peer, error)
            self.write(error.to_bytes())
        self.write(b"</stream:stream>")
        self._sealed = True
        self.flush()
        if not wait_for_peer:
            self._close_transport()
            # The stream ends now (once a handler that waits is done), even
            # if the peer neither reads nor writes: it unbinds the session and
            # drops the connection after a grace period (run()).
            self._end_input()

    def _close_transport(self) -> None:
        # Once only: closing an asyncio TLS transport twice forgets its
        # protocol, and a later abort() then does nothing (CPython 3.11).
        if not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection without ceremony (shutdown gave up waiting)."""
        self.transport.abort()
