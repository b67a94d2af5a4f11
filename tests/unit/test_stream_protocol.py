"""XMLStream as the connection's protocol: elements are handled in
``data_received`` as far as their handlers go without waiting, and a handler
that waits is carried on by the stream's task while the elements after it
wait. Over real loopback TCP connections, with a stream whose handler waits
for some elements and not others."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from vinespy.errors import StreamError
from vinespy.stream.base import XMLStream
from vinespy.stream.parser import StreamOpened

TIMEOUT = 10.0
HEADER = (b"<stream:stream xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams'>")


class Recorder(XMLStream):
    """Handles ``<m n='N' wait='1'/>``: records start and end of each handler
    (waiting a loop turn or a timer when asked), and whether it ran as a
    step of the stream's task."""

    def __init__(self, log: list[Any], done: asyncio.Event, last: str) -> None:
        super().__init__(max_stanza_size=65536)
        self.log = log
        self.done = done
        self.last = last
        self.running = 0

    async def handle(self, event: Any) -> bool:
        if isinstance(event, StreamOpened):
            return False
        n = event.get("n")
        self.running += 1
        self.log.append(("start", n, self.running,
                         asyncio.current_task() is not None and
                         asyncio.current_task() is self._task))
        try:
            kind = event.get("kind")
            if kind == "wait":
                await asyncio.sleep(0.01)
            elif kind == "timeout":
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.01):     # needs a current task
                        await asyncio.sleep(5)
            elif kind == "error":
                raise StreamError("bad-format", "asked to fail")
        finally:
            self.running -= 1
            self.log.append(("end", n))
        if n == self.last:
            self.done.set()
        return False

    def header(self) -> bytes:
        return HEADER

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # As a server's stream does: run the stream in its task.
        super().connection_made(transport)
        self.tasks.add(self.run_task(self.run()))

    tasks: set[asyncio.Task[None]] = set()


async def serve(last: str) -> tuple[list[Any], asyncio.Event, list[Recorder], Any]:
    """A listener whose connections are :class:`Recorder` streams."""
    loop = asyncio.get_running_loop()
    log: list[Any] = []
    done = asyncio.Event()
    streams: list[Recorder] = []

    def made() -> Recorder:
        stream = Recorder(log, done, last)
        streams.append(stream)
        return stream

    server = await loop.create_server(made, "127.0.0.1", 0)
    return log, done, streams, server


async def connect(server: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    port = server.sockets[0].getsockname()[1]
    return await asyncio.open_connection("127.0.0.1", port)


def elements(spec: str) -> list[bytes]:
    """``"w.e."``-like spec: one element per character, w = waits, t = a
    timeout inside, anything else handled at once; numbered from 0."""
    kinds = {"w": "wait", "t": "timeout"}
    return [f"<m n='{i}' kind='{kinds.get(c, 'now')}'/>".encode() for i, c in enumerate(spec)]


@pytest.mark.parametrize("chunking", ["one-write", "per-element", "split-bytes"])
async def test_elements_are_handled_in_order_one_at_a_time(chunking: str) -> None:
    spec = "..w..ww.t..w" * 5
    els = elements(spec)
    log, done, streams, server = await serve(str(len(els) - 1))
    try:
        _, writer = await connect(server)
        data = HEADER + b"".join(els)
        if chunking == "one-write":
            writer.write(data)
        elif chunking == "per-element":
            writer.write(HEADER)
            for el in els:
                writer.write(el)
                await writer.drain()
                await asyncio.sleep(0)
        else:
            for i in range(0, len(data), 7):
                writer.write(data[i:i + 7])
                await writer.drain()
        await asyncio.wait_for(done.wait(), TIMEOUT)
        starts = [e for e in log if e[0] == "start"]
        assert [e[1] for e in starts] == [str(i) for i in range(len(els))]
        assert all(e[2] == 1 for e in starts), "two handlers ran at once"
        # strictly nested: every start is followed by its own end
        assert [e[1] for e in log[0::2]] == [e[1] for e in log[1::2]]
        # every handler ran as a step of the stream's task (current_task())
        assert all(e[3] for e in starts)
        writer.close()
    finally:
        server.close()


async def test_a_handler_error_closes_the_stream_with_it_and_nothing_after_is_handled() -> None:
    log, done, streams, server = await serve("never")
    try:
        reader, writer = await connect(server)
        writer.write(HEADER + b"<m n='0' kind='now'/><m n='1' kind='error'/><m n='2'/>")
        data = b""
        while b"</stream:stream>" not in data:
            chunk = await asyncio.wait_for(reader.read(4096), TIMEOUT)
            assert chunk, f"closed without the stream's end: {data!r}"
            data += chunk
        assert b"<bad-format" in data
        assert [e[1] for e in log if e[0] == "start"] == ["0", "1"]
        await asyncio.wait_for(streams[0].wait_closed(), TIMEOUT)
        writer.close()
    finally:
        server.close()


async def test_the_peer_closing_ends_the_stream_after_a_waiting_handler() -> None:
    """EOF while a handler waits: the handler finishes, then the stream ends."""
    log, done, streams, server = await serve("0")
    try:
        _, writer = await connect(server)
        writer.write(HEADER + b"<m n='0' kind='wait'/>")
        await writer.drain()
        writer.write_eof()
        await asyncio.wait_for(done.wait(), TIMEOUT)
        await asyncio.wait_for(streams[0]._lost, TIMEOUT)
        assert log == [("start", "0", 1, True), ("end", "0")]
        writer.close()
    finally:
        server.close()


class TLSRecorder(Recorder):
    """A Recorder that answers ``<starttls/>`` with ``<proceed/>`` and the
    TLS handshake (server side), as a STARTTLS stream does."""

    ctx: Any = None
    first: asyncio.Event

    async def handle(self, event: Any) -> bool:
        if not isinstance(event, StreamOpened) and event.tag.endswith("}starttls"):
            self.write(b"<proceed/>")
            await self.start_tls(self.ctx, TIMEOUT)
            return True
        reset = await super().handle(event)
        if not isinstance(event, StreamOpened) and event.get("n") == "0":
            self.first.set()
        return reset


async def test_what_the_peer_sends_right_after_its_tls_handshake_is_handled() -> None:
    """The peer's first bytes after the handshake may arrive with its
    Finished, before start_tls() returns: they must be handled, and reading
    must go on (it once paused the raw transport under the TLS layer for
    good: a dialback answer that never came, in the s2s cluster test). The
    client writes right after its handshake, many times over, so that the
    race is run."""
    import ssl
    import trustme
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("stream.test").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    loop = asyncio.get_running_loop()
    for attempt in range(20):
        log: list[Any] = []
        done = asyncio.Event()

        def made() -> TLSRecorder:
            stream = TLSRecorder(log, done, "2")
            stream.ctx, stream.first = server_ctx, first
            return stream
        first = asyncio.Event()
        server = await loop.create_server(made, "127.0.0.1", 0)
        try:
            reader, writer = await connect(server)
            writer.write(HEADER + b"<starttls/>")
            got = b""
            while b"<proceed/>" not in got:
                chunk = await asyncio.wait_for(reader.read(4096), TIMEOUT)
                assert chunk, got
                got += chunk
            # The handshake by hand, so that the client's Finished and its
            # first stream bytes leave in one write (one TCP segment).
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = client_ctx.wrap_bio(incoming, outgoing, server_hostname="stream.test")
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    writer.write(outgoing.read())
                    chunk = await asyncio.wait_for(reader.read(65536), TIMEOUT)
                    assert chunk, "closed during the handshake"
                    incoming.write(chunk)
            tls.write(HEADER + b"<m n='0'/>")
            writer.write(outgoing.read())
            await asyncio.wait_for(first.wait(), TIMEOUT)
            # ...and what it sends once the server went on (a dialback key
            # after the features, say) is read too.
            tls.write(b"<m n='1' kind='wait'/><m n='2'/>")
            writer.write(outgoing.read())
            await asyncio.wait_for(done.wait(), TIMEOUT)
            assert [e[1] for e in log if e[0] == "start"] == ["0", "1", "2"], attempt
            writer.close()
        finally:
            server.close()
