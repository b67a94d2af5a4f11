"""One XML stream over one connection: the only code that touches a socket.

One reader task per stream handles elements strictly in order (RFC 6120
§10.1). Output is batched: everything written during one turn of the event
loop goes out in one ``transport.write``. A client that sends faster than
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
import fcntl
import logging
import ssl
import struct
import termios
from typing import Any

from ..errors import StreamError
from .parser import StreamClosed, StreamParser

log = logging.getLogger("vinespy.stream")

_WS = b" \t\r\n"
_OUTQ: int | None = getattr(termios, "TIOCOUTQ", None)

READ_SIZE = 65536
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


class XMLStream(Framing):
    """Reading, writing and closing over TCP; subclasses implement :meth:`handle`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                 max_stanza_size: int, rate_limit: int = 0, rate_burst: int = 65536,
                 send_timeout: float = 60.0) -> None:
        super().__init__(writer.get_extra_info("peername"),
                         writer.get_extra_info("ssl_object") is not None)
        self.reader = reader
        self.writer = writer
        self.parser = StreamParser(max_stanza_size=max_stanza_size)
        self._out: list[bytes] = []
        self._sealed = False             # </stream:stream> is written: nothing may follow
        self._flush_scheduled = False
        self._limiter = (RateLimiter(rate_limit, rate_burst, self.loop.time())
                         if rate_limit else None)
        self._tail = b""                 # the end of the last read (not all of it: memory)
        self._after = 0                  # events of it after the one being handled
        self.send_timeout = send_timeout
        self._queued = 0                 # bytes ever handed to the transport
        self._sent_at_check = 0          # of which had left at the last stall check
        self._stall: asyncio.TimerHandle | None = None

    # -- reading -------------------------------------------------------
    async def _release(self) -> None:
        self.flush()
        self._stop_stall_timer()
        self._close_transport()
        await self._closed_or_dropped()

    async def _closed_or_dropped(self) -> None:
        """Give a peer that does not read its last bytes a grace period, then
        drop the connection: an unread buffer never outlives the stream."""
        try:
            # Shielded: a timeout must not cancel the protocol's own close
            # future, which others may be waiting on too.
            await asyncio.wait_for(asyncio.shield(self.writer.wait_closed()),
                                   min(CLOSE_GRACE, self.send_timeout))
        except asyncio.TimeoutError:
            log.info("%s did not take its last bytes; dropping the connection", self.peer)
            self.abort()
        except (ConnectionError, ssl.SSLError, OSError):
            pass

    async def _read_loop(self) -> None:
        pause = 0.0
        while not self.closing:
            if pause:
                # Throttle before reading, never between a read and its
                # parsing: bytes that arrive meanwhile wait unread, so they
                # cannot be handled after a STARTTLS that they followed.
                await asyncio.sleep(pause)
                if self.closing:
                    return
            try:
                data = await self.reader.read(READ_SIZE)
            except (ConnectionError, ssl.SSLError, OSError) as exc:
                log.debug("read from %s failed: %s", self.peer, exc)
                return
            if not data:
                return
            if self._limiter is not None:
                pause = self._limiter.delay(len(data), self.loop.time())
            try:
                events = self.parser.feed(data)
                self._tail = data[-64:]
                self._after = len(events)
                for event in events:
                    self._after -= 1
                    if isinstance(event, StreamClosed):
                        self.peer_closed = True
                        self.close()
                        return
                    # After a parser reset (or a close) whatever followed in
                    # this chunk belongs to no stream: drop it.
                    if await self.handle(event) or self.closing:
                        break
            except StreamError as exc:
                self.close(exc)
                return

    def unread_input(self) -> bool:
        """Whether anything arrived after the element being handled: more of
        the same read, an element still open, or bytes read from the socket
        but not yet parsed (RFC 6120 §5.4.3.3: nothing sent before the TLS
        handshake may be taken as sent after it)."""
        buffered = getattr(self.reader, "_buffer", b"")
        return (self._after > 0 or not self._tail.rstrip(_WS).endswith(b">")
                or not self.parser.idle or bool(buffered))

    async def handle(self, event: Any) -> bool:
        """Handle one parser event; return True after resetting the parser."""
        raise NotImplementedError

    # -- writing -------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self._sealed or self.writer.transport.is_closing():
            return
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        if not self._out:
            return
        data = b"".join(self._out)
        self._out.clear()
        transport = self.writer.transport
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
        transport = self.writer.transport
        return self._queued - transport.get_write_buffer_size() - _kernel_unsent(transport)

    def _check_stall(self) -> None:
        """Every ``send_timeout`` s while output waits: close the stream if
        none of it left since the last check (the peer stopped reading)."""
        self._stall = None
        if self.writer.transport.is_closing():
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
        """Flush now and wait until the kernel took it (before STARTTLS)."""
        self.flush()
        await self.writer.drain()

    # -- what the negotiation asks of the transport ----------------------
    def restart(self) -> None:
        """A new stream begins on this connection (RFC 6120 §4.3.3): the
        parser starts over, a new stream header is expected."""
        self.parser.reset()

    async def start_tls(self, ctx: ssl.SSLContext, timeout: float) -> None:
        """Encrypt the connection once what was written left (RFC 6120 §5),
        then :meth:`restart`. A failed handshake (OSError, TimeoutError)
        drops the connection and is raised."""
        await self.drain()
        try:
            await self.writer.start_tls(ctx, ssl_handshake_timeout=timeout)
        except (OSError, asyncio.TimeoutError):
            self.closing = True
            self.writer.transport.abort()
            raise
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
            # The reader task ends now, even if the peer neither reads nor
            # writes: it unbinds the session and drops the connection after
            # a grace period (run()).
            self.reader.feed_eof()

    def _close_transport(self) -> None:
        # Once only: closing an asyncio TLS transport twice forgets its
        # protocol, and a later abort() then does nothing (CPython 3.11).
        if not self.writer.transport.is_closing():
            self.writer.close()

    def abort(self) -> None:
        """Drop the connection without ceremony (shutdown gave up waiting)."""
        self.writer.transport.abort()
