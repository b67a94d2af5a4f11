"""One XML stream over one connection: the only code that touches a socket.

One reader task per stream handles elements strictly in order (RFC 6120
§10.1). Output is batched: everything written during one turn of the event
loop goes out in one ``transport.write``. A client that sends faster than
its rate limit is slowed down by not reading (TCP pushes back), never
disconnected for an ordinary burst; a client that does not read what it is
sent is disconnected once too much is buffered for it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from ..errors import StreamError
from .parser import StreamClosed, StreamParser

log = logging.getLogger("vinespy.stream")

READ_SIZE = 65536
MAX_UNSENT = 4 * 1024 * 1024   # bytes buffered for a peer that does not read


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


class XMLStream:
    """Reading, writing and closing; subclasses implement :meth:`handle`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                 max_stanza_size: int, rate_limit: int = 0, rate_burst: int = 65536) -> None:
        self.reader = reader
        self.writer = writer
        self.loop = asyncio.get_running_loop()
        self.parser = StreamParser(max_stanza_size=max_stanza_size)
        self.peer = writer.get_extra_info("peername")
        self.secure = writer.get_extra_info("ssl_object") is not None
        self.header_sent = False
        self.closing = False
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._limiter = (RateLimiter(rate_limit, rate_burst, self.loop.time())
                         if rate_limit else None)

    # -- reading -------------------------------------------------------
    async def run(self) -> None:
        """Read, parse and handle until the stream ends; then clean up."""
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
                self.flush()
                self.writer.close()

    async def _read_loop(self) -> None:
        while not self.closing:
            try:
                data = await self.reader.read(READ_SIZE)
            except (ConnectionError, ssl.SSLError, OSError) as exc:
                log.debug("read from %s failed: %s", self.peer, exc)
                return
            if not data:
                return
            if self._limiter is not None:
                pause = self._limiter.delay(len(data), self.loop.time())
                if pause:
                    await asyncio.sleep(pause)
            try:
                for event in self.parser.feed(data):
                    if isinstance(event, StreamClosed):
                        self.close()
                        return
                    # After a parser reset (or a close) whatever followed in
                    # this chunk belongs to no stream: drop it.
                    if await self.handle(event) or self.closing:
                        break
            except StreamError as exc:
                self.close(exc)
                return

    async def handle(self, event: Any) -> bool:
        """Handle one parser event; return True after resetting the parser."""
        raise NotImplementedError

    async def ended(self) -> None:
        """The stream is over (either side closed it, or the TCP link died)."""

    # -- writing -------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.writer.transport.is_closing():
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
        if transport.get_write_buffer_size() > MAX_UNSENT and not self.closing:
            log.warning("%s does not read what it is sent; closing", self.peer)
            self.close(StreamError("policy-violation", "too much unread data"))

    async def drain(self) -> None:
        """Flush now and wait until the kernel took it (before STARTTLS)."""
        self.flush()
        await self.writer.drain()

    # -- closing -------------------------------------------------------
    def header(self) -> bytes:
        """The opening tag this side sends (RFC 6120 §4.7)."""
        raise NotImplementedError

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
            log.info("closing stream from %s: %s", self.peer, error)
            self.write(error.to_bytes())
        self.write(b"</stream:stream>")
        self.flush()
        if not wait_for_peer:
            self.writer.close()

    def abort(self) -> None:
        """Drop the connection without ceremony (shutdown gave up waiting)."""
        self.writer.transport.abort()
