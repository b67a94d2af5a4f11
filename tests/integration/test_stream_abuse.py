"""Abuse of the stream itself, byte by byte: data injected around STARTTLS,
peers that stop reading what they are sent (issue 10, items 1 and 9)."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import pytest

from tests.conftest import DOMAIN, PASSWORD, TIMEOUT, Running
from tests.rawclient import Raw
from vinespy import ns
from vinespy.jid import JID

pytestmark = pytest.mark.integration

HEADER = (f"<?xml version='1.0'?><stream:stream xmlns='{ns.CLIENT}' "
          f"xmlns:stream='{ns.STREAM}' to='{DOMAIN}' version='1.0'>")
STARTTLS = f"<starttls xmlns='{ns.TLS}'/>"


def tls_ctx(srv: Running) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    srv.ca.configure_trust(ctx)
    return ctx


async def test_cleartext_after_starttls_is_refused(server: Running) -> None:
    """A stream header sent in clear right behind <starttls/> is never taken
    as sent inside TLS: the upgrade is refused with <failure/> and a stream
    error (RFC 6120 §5.4.3.3; the CVE-2011-0411 class)."""
    raw = await Raw.connect(server.port)
    raw.open_stream(DOMAIN)
    await raw.features()
    raw.send(STARTTLS + HEADER.split("?>", 1)[1])
    out = await raw.until_closed()
    assert f"<failure xmlns='{ns.TLS}'/>".encode() in out, out
    assert b"<policy-violation" in out and b"<proceed" not in out, out


async def test_cleartext_during_throttling_is_not_read_after_tls(make_server: Any) -> None:
    """A client past its rate burst sends <starttls/>, then a stream header in
    clear while the server throttles it: nothing of it is read after the TLS
    handshake (the server answers nothing until a header arrives inside TLS)."""
    async with make_server(client={"rate_limit": 1024, "rate_burst": 1024}) as srv:
        raw = await Raw.connect(srv.port)
        raw.open_stream(DOMAIN)
        await raw.features()
        raw.send(" " * 3000 + STARTTLS)      # about 2 s of throttling at 1 KB/s
        await raw.writer.drain()
        # The attacker's timing (not a wait for an outcome): the injected
        # header lands while the server would be throttling the first write.
        await asyncio.sleep(0.3)
        raw.send(HEADER)
        try:
            await raw.expect(rb"<proceed[^>]*/>")
            await asyncio.wait_for(raw.writer.start_tls(
                tls_ctx(srv), server_hostname=DOMAIN), TIMEOUT)
        except (ssl.SSLError, ConnectionError, EOFError, OSError):
            return                           # refused or no handshake: nothing injected
        raw.buf = b""
        raw.open_stream(DOMAIN)
        await raw.features()
        # Exactly one stream header answered ours: none answered the injected one.
        assert raw.buf.count(b"<stream:stream") == 0, raw.buf
        raw.send(f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>AGFsaWNlAHdyb25n</auth>")
        failure = await raw.expect(rb"<failure[^>]*>.*?</failure>")
        assert b"not-authorized" in failure.group(0)
        raw.close()


async def login_slow_reader(srv: Running, card_size: int) -> tuple[Raw, Any, asyncio.Task[Any]]:
    """Alice with a vCard of ``card_size`` bytes, bound on a connection whose
    receive buffer is tiny; returns it, the server's stream for it and the
    server task serving it."""
    jid = await srv.user("alice")
    raw = await Raw.connect(srv.port, rcvbuf=4096)
    await raw.login(DOMAIN, tls_ctx(srv), "alice", PASSWORD)
    raw.send(f"<iq type='set' id='v'><vCard xmlns='vcard-temp'><DESC>{'x' * card_size}"
             "</DESC></vCard></iq>")
    await raw.expect(rb"<iq[^>]*id=\"v\"[^>]*/>")
    assert srv.server.sessions.get(JID.parse(jid + "/raw")) is not None
    (task,) = srv.server._conn_tasks
    (stream,) = srv.server.streams
    return raw, stream, task


def requests(n: int) -> str:
    return "".join(f"<iq type='get' id='g{i}' to='alice@{DOMAIN}'>"
                   "<vCard xmlns='vcard-temp'/></iq>" for i in range(n))


async def test_peer_that_overflows_its_buffer_is_dropped_and_unbound(
        make_server: Any) -> None:
    """Bob sends 1.5 MB to a client that reads nothing: once 1 MB waits for
    it, its stream is closed, its resource unbound, and its connection dropped
    after a grace period although it never takes the closing bytes."""
    async with make_server(client={"send_timeout": 2, "rate_limit": 0}) as srv:
        raw, stream, task = await login_slow_reader(srv, 100)
        bob = await srv.login(await srv.user("bob"))
        for _ in range(25):
            bob.send_message(mto=f"alice@{DOMAIN}/raw", mbody="b" * 60000)
        done, _ = await asyncio.wait({task}, timeout=TIMEOUT)
        assert done, "the server still holds the stream of a peer that does not read"
        assert srv.server.sessions.get(JID.parse(f"alice@{DOMAIN}/raw")) is None
        await asyncio.wait_for(stream.wait_closed(), TIMEOUT)
        raw.writer.transport.abort()


async def test_peer_that_stops_reading_is_dropped_after_send_timeout(
        make_server: Any) -> None:
    """Below the buffer bound, output nobody takes for send_timeout seconds
    closes the stream: a client cannot park megabytes on the server."""
    async with make_server(client={"send_timeout": 1}) as srv:
        raw, stream, task = await login_slow_reader(srv, 60000)
        raw.send(requests(12))              # about 700 KB: under the 1 MB bound
        done, _ = await asyncio.wait({task}, timeout=TIMEOUT)
        assert done, "the server still holds the connection of a peer that does not read"
        assert srv.server.sessions.get(JID.parse(f"alice@{DOMAIN}/raw")) is None
        await asyncio.wait_for(stream.wait_closed(), TIMEOUT)
        raw.writer.transport.abort()


async def test_slow_but_reading_peer_is_kept(make_server: Any) -> None:
    """A peer that reads, however slowly, is not taken for a dead one."""
    async with make_server(client={"send_timeout": 1}) as srv:
        raw, _, task = await login_slow_reader(srv, 60000)
        raw.send(requests(12) + "<iq type='get' id='last' to='wonderland.lit'>"
                 f"<ping xmlns='{ns.PING}'/></iq>")
        got = 0
        while True:
            data = await asyncio.wait_for(raw.reader.read(16384), TIMEOUT)
            assert data, "closed while reading"
            raw.buf += data
            got += len(data)
            if b"id=\"last\"" in raw.buf:
                break
            if got > 200_000:                # half a second per 200 KB at most...
                got = 0
                await asyncio.sleep(0.5)     # ...but a slow reader, on purpose
        assert not task.done()
        assert srv.server.sessions.get(JID.parse(f"alice@{DOMAIN}/raw")) is not None
        raw.close()
