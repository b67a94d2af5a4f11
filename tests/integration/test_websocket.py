"""XMPP over WebSocket (RFC 7395) end to end: a real server's [http]
listener, raw WebSocket clients on aiohttp (tests/wsclient.py) and slixmpp
users over TCP. Every message the server sends is parsed on its own, as a
browser's client parses it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest
import trustme
from lxml import etree

from tests.conftest import DOMAIN, PASSWORD, TIMEOUT, Running, running, wait_event
from tests.support import free_port
from tests.wsclient import FRAMING, SM, WS, Closed, Ping, tag
from vinespy import ns
from vinespy.jid import JID

pytestmark = pytest.mark.integration

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"


def http_table(**keys: Any) -> str:
    """An ``[http]`` table on a free port, with ``keys`` (JSON strings,
    numbers and arrays are TOML too)."""
    keys = {"address": "127.0.0.1", "port": free_port(), **keys}
    return "[http]\n" + "".join(
        f"{k} = {str(v).lower() if isinstance(v, bool) else json.dumps(v)}\n"
        for k, v in keys.items())


@contextlib.asynccontextmanager
async def ws_server(tmp_path: Path, ca: trustme.CA, client: dict[str, Any] | None = None,
                    **http: Any) -> AsyncIterator[Running]:
    async with running(tmp_path, ca, client=client, extra=http_table(**http)) as srv:
        yield srv


def url(srv: Running, path: str = "/xmpp-websocket", scheme: str = "ws") -> str:
    port = srv.server.ports["https" if scheme in ("wss", "https") else "http"]
    return f"{scheme}://127.0.0.1:{port}{path}"


async def connect(srv: Running, **kw: Any) -> WS:
    return await WS.connect(url(srv), **kw)


async def ws_login(srv: Running, user: str, resource: str = "ws", **kw: Any) -> tuple[WS, str]:
    """A new WebSocket for ``user`` (created if needed), logged in and bound."""
    if await srv.storage.find_user(JID.parse(f"{user}@{DOMAIN}")) is None:
        await srv.user(user)
    ws = await connect(srv)
    return ws, await ws.login(DOMAIN, user, PASSWORD, resource, **kw)


def stream_error(el: etree._Element) -> str:
    """The condition of a ``<stream:error/>``."""
    assert el.tag == tag("error", ns.STREAM), etree.tostring(el)
    (cond,) = [c for c in el if c.tag != f"{{{ns.STREAMS}}}text"]
    assert cond.tag.startswith(f"{{{ns.STREAMS}}}")
    return str(etree.QName(cond).localname)


async def closed_with(ws: WS, condition: str) -> None:
    """The server sends ``<stream:error><condition/>``, ``<close/>``, and
    closes the WebSocket."""
    rest = await ws.until_closed()
    assert [el.tag for el in rest][-2:] == [tag("error", ns.STREAM), tag("close", FRAMING)], \
        ws.texts[-3:]
    assert stream_error(rest[-2]) == condition
    assert ws.ws.closed
    await ws.close()


def ws_streams(srv: Running) -> list[Any]:
    return [s for s in srv.server.streams if s.kind == "websocket"]


def session_of(srv: Running, full: str) -> Any:
    return srv.server.sessions.get(JID.parse(full))


async def until(check: Any, what: str) -> None:
    """``check()`` becomes true: looked at after each turn of the loop (the
    server runs in this loop), for at most TIMEOUT."""
    async def loop() -> None:
        while not check():
            await asyncio.sleep(0.01)
    try:
        await asyncio.wait_for(loop(), TIMEOUT)
    except asyncio.TimeoutError:
        raise AssertionError(f"not within {TIMEOUT:g} s: {what}") from None


# -- logging in, chatting --------------------------------------------------------
@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-1"])
async def test_login_and_chat_with_a_tcp_user(tmp_path: Path, ca: trustme.CA,
                                              mechanism: str) -> None:
    """A WebSocket client logs in (SASL, bind) and exchanges messages with a
    slixmpp user over TCP. Every server message parses on its own: the
    stanzas carry xmlns='jabber:client', the stream elements xmlns:stream."""
    async with ws_server(tmp_path, ca) as srv:
        bob = await srv.login(await srv.user("bob"))
        await srv.user("alice")
        ws = await connect(srv)
        opened = await ws.open(DOMAIN)
        assert opened.get("from") == DOMAIN and opened.get("version") == "1.0"
        assert opened.get("id")
        features = await ws.features()
        assert "xmlns:stream" in ws.texts[-1]
        mechs = features.findall(f"{{{ns.SASL}}}mechanisms/{{{ns.SASL}}}mechanism")
        assert mechanism in [m.text for m in mechs]
        assert features.find(f"{{{ns.TLS}}}starttls") is None     # no STARTTLS here
        result = await (ws.plain("alice", PASSWORD) if mechanism == "PLAIN"
                        else ws.scram("alice", PASSWORD, mechanism))
        assert result.tag == tag("success", ns.SASL)
        await ws.open(DOMAIN)
        assert (await ws.features()).find(f"{{{ns.BIND}}}bind") is not None
        full = await ws.bind("web")
        assert full == f"{ALICE}/web"
        (stream,) = ws_streams(srv)
        assert stream.mechanism == mechanism and stream.secure
        assert session_of(srv, full) is not None
        assert ws.texts[-1].startswith(f"<iq xmlns='{ns.CLIENT}'")

        await ws.send(f"<presence xmlns='{ns.CLIENT}'/>")
        got = asyncio.create_task(wait_event(bob, "message", match=lambda m: m["body"] == "hi"))
        await asyncio.sleep(0)
        await ws.send(f"<message xmlns='{ns.CLIENT}' to='{BOB}' type='chat'>"
                      "<body>hi</body></message>")
        msg = await got
        assert str(msg["from"]) == full
        bob.send_message(mto=full, mbody="hello back", mtype="chat")
        el = await ws.expect(tag("message"))
        assert el.findtext(tag("body")) == "hello back"
        assert el.get("from", "").startswith(BOB + "/")
        assert ws.texts[-1].startswith(f"<message xmlns='{ns.CLIENT}'")
        await ws.close()


async def test_wrong_password_is_a_sasl_failure(tmp_path: Path, ca: trustme.CA) -> None:
    async with ws_server(tmp_path, ca) as srv:
        await srv.user("alice")
        ws = await connect(srv)
        await ws.open(DOMAIN)
        await ws.features()
        failure = await ws.plain("alice", "wrong")
        assert failure.tag == tag("failure", ns.SASL)
        assert failure.find(f"{{{ns.SASL}}}not-authorized") is not None
        await ws.close()


async def test_scram_sha_256_and_the_server_signature(tmp_path: Path, ca: trustme.CA) -> None:
    """SCRAM-SHA-256 too; scramp checks the server's final message."""
    async with ws_server(tmp_path, ca) as srv:
        ws, full = await ws_login(srv, "alice", mechanism="SCRAM-SHA-256")
        assert full == f"{ALICE}/ws"
        await ws.close()


# -- the handshake -----------------------------------------------------------------
async def test_without_the_xmpp_subprotocol_there_is_no_upgrade(
        tmp_path: Path, ca: trustme.CA) -> None:
    """RFC 7395 §3.3.1: no ``xmpp`` subprotocol, no WebSocket (400); a
    plain GET on the path is 400 too."""
    async with ws_server(tmp_path, ca) as srv:
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await asyncio.wait_for(http.ws_connect(url(srv)), TIMEOUT)
            assert info.value.status == 400
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await asyncio.wait_for(http.ws_connect(url(srv), protocols=("chat",)), TIMEOUT)
            assert info.value.status == 400
            async with http.get(url(srv, scheme="http")) as resp:
                assert resp.status == 400
                assert "WebSocket" in await resp.text()
        assert not srv.server.streams


# -- stream errors -----------------------------------------------------------------
async def test_open_to_an_unknown_host(tmp_path: Path, ca: trustme.CA) -> None:
    async with ws_server(tmp_path, ca) as srv:
        ws = await connect(srv)
        await ws.send(f"<open xmlns='{FRAMING}' to='elsewhere.example' version='1.0'/>")
        opened = await ws.next()
        assert opened.tag == tag("open", FRAMING)
        await closed_with(ws, "host-unknown")


@pytest.mark.parametrize("message", [
    f"<open xmlns='{FRAMING}' to='{DOMAIN}' version='1.0'/><iq type='get' id='x'/>",
    f"<open xmlns='{FRAMING}' to='{DOMAIN}' version='1.0'",
    "hello",
    f"<open xmlns='{FRAMING}' to='{DOMAIN}' version='1.0'/>trailing text",
    f"<open xmlns='{FRAMING}' to='{DOMAIN}' version='1.0'/>text>",
    f"<open xmlns='{FRAMING}' to='{DOMAIN}' version='1.0'/><![CDATA[<x/>]]>",
    "</stream:stream>",
], ids=["two-elements", "half-an-element", "text", "element-and-text",
        "element-and-text-with-gt", "element-and-cdata", "stream-end"])
async def test_a_message_that_is_not_one_element_is_bad_format(
        tmp_path: Path, ca: trustme.CA, message: str) -> None:
    """RFC 7395 §3.3.3: each message is one complete element. Anything else
    ends only that session: a user on another WebSocket goes on."""
    async with ws_server(tmp_path, ca) as srv:
        other, full = await ws_login(srv, "bob")
        ws = await connect(srv)
        await ws.send(message)
        rest = await ws.until_closed()
        assert stream_error(rest[-2]) in ("bad-format", "not-well-formed")
        assert rest[-1].tag == tag("close", FRAMING)
        await ws.close()
        await other.send(f"<iq xmlns='{ns.CLIENT}' type='get' id='p' to='{DOMAIN}'>"
                         f"<ping xmlns='urn:xmpp:ping'/></iq>")
        pong = await other.expect(tag("iq"))
        assert pong.get("type") == "result" and session_of(srv, full) is not None
        await other.close()


async def test_whitespace_messages_and_quoted_gt_are_fine(
        tmp_path: Path, ca: trustme.CA) -> None:
    """A message of whitespace is a keepalive, ignored; whitespace after the
    element and ">" inside attribute values are no trailing text."""
    async with ws_server(tmp_path, ca) as srv:
        ws, full = await ws_login(srv, "alice")
        await ws.send(" \r\n")
        await ws.send(f"<iq xmlns='{ns.CLIENT}' type='get' id='a>b' to='{DOMAIN}'>"
                      "<ping xmlns='urn:xmpp:ping'/></iq>\n ")
        pong = await ws.expect(tag("iq"))
        assert pong.get("type") == "result" and pong.get("id") == "a>b"
        await ws.close()


async def test_invalid_utf8_in_a_text_frame(tmp_path: Path, ca: trustme.CA) -> None:
    """A text message that is not UTF-8 ends that stream with
    not-well-formed (RFC 6120 §11.6); it never reaches a handler."""
    async with ws_server(tmp_path, ca) as srv:
        ws = await connect(srv)
        await ws.open(DOMAIN)
        await ws.features()
        await ws.ws.send_frame(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
                               b"mechanism='PLAIN'>\xff\xfe</auth>", aiohttp.WSMsgType.TEXT)
        await closed_with(ws, "not-well-formed")   # decode_text=False: the parser sees it
        await until(lambda: not srv.server.streams, "the stream is gone")


async def test_a_second_open_before_sasl_is_bad_format(tmp_path: Path, ca: trustme.CA) -> None:
    async with ws_server(tmp_path, ca) as srv:
        ws = await connect(srv)
        await ws.open(DOMAIN)
        await ws.features()
        await ws.send(f"<open xmlns='{FRAMING}' to='{DOMAIN}' version='1.0'/>")
        await closed_with(ws, "bad-format")


async def test_open_without_version_is_unsupported(tmp_path: Path, ca: trustme.CA) -> None:
    async with ws_server(tmp_path, ca) as srv:
        ws = await connect(srv)
        await ws.send(f"<open xmlns='{FRAMING}' to='{DOMAIN}' version='2.0'/>")
        await ws.next()
        await closed_with(ws, "unsupported-version")


async def test_binary_frame_is_bad_format(tmp_path: Path, ca: trustme.CA) -> None:
    async with ws_server(tmp_path, ca) as srv:
        ws = await connect(srv)
        await ws.open(DOMAIN)
        await ws.features()
        await ws.ws.send_bytes(b"<presence/>")
        await closed_with(ws, "bad-format")


async def test_stanza_over_max_stanza_size_is_a_policy_violation(
        tmp_path: Path, ca: trustme.CA) -> None:
    async with ws_server(tmp_path, ca, client={"max_stanza_size": 10000}) as srv:
        ws, full = await ws_login(srv, "alice")
        await ws.send(f"<message xmlns='{ns.CLIENT}' to='{BOB}'><body>{'x' * 12000}"
                      "</body></message>")
        await closed_with(ws, "policy-violation")
        await until(lambda: session_of(srv, full) is None, "alice's session is unbound")


async def test_a_huge_frame_closes_that_websocket_only(tmp_path: Path, ca: trustme.CA) -> None:
    """Past 2 × max_stanza_size + 4096 aiohttp itself refuses the frame
    (1009, message too big); the session ends and is unbound, and another
    user's session is untouched."""
    async with ws_server(tmp_path, ca, client={"max_stanza_size": 10000}) as srv:
        other, other_full = await ws_login(srv, "bob")
        ws, full = await ws_login(srv, "alice")
        assert session_of(srv, full) is not None
        await ws.send(f"<message xmlns='{ns.CLIENT}' to='{BOB}'><body>{'x' * 30000}"
                      "</body></message>")
        await ws.until_closed()
        assert ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
        await ws.close()
        await until(lambda: session_of(srv, full) is None, "alice's session is unbound")
        await until(lambda: len(srv.server.streams) == 1, "alice's stream is gone")
        assert session_of(srv, other_full) is not None
        await other.send(f"<iq xmlns='{ns.CLIENT}' type='get' id='p' to='{DOMAIN}'>"
                         f"<ping xmlns='urn:xmpp:ping'/></iq>")
        assert (await other.expect(tag("iq"))).get("type") == "result"
        await other.close()


async def test_auth_timeout(tmp_path: Path, ca: trustme.CA) -> None:
    async with ws_server(tmp_path, ca, client={"auth_timeout": 1}) as srv:
        ws = await connect(srv)
        await ws.open(DOMAIN)
        await ws.features()
        await closed_with(ws, "connection-timeout")
        await until(lambda: not srv.server.streams, "the stream is gone")


async def test_auth_timeout_without_open(tmp_path: Path, ca: trustme.CA) -> None:
    """A client that never sends ``<open/>`` gets one from the server before
    the error (RFC 6120 §4.9.1.1)."""
    async with ws_server(tmp_path, ca, client={"auth_timeout": 1}) as srv:
        ws = await connect(srv)
        rest = await ws.until_closed()
        assert [el.tag for el in rest] == [tag("open", FRAMING), tag("error", ns.STREAM),
                                           tag("close", FRAMING)]
        assert stream_error(rest[1]) == "connection-timeout"
        await ws.close()
        await until(lambda: not srv.server.streams, "the stream is gone")


async def test_stanza_before_auth_is_not_authorized(tmp_path: Path, ca: trustme.CA) -> None:
    async with ws_server(tmp_path, ca) as srv:
        ws = await connect(srv)
        await ws.open(DOMAIN)
        await ws.features()
        await ws.send(f"<message xmlns='{ns.CLIENT}' to='{BOB}'><body>x</body></message>")
        await closed_with(ws, "not-authorized")


async def test_keepalive_pings_and_a_silent_client(tmp_path: Path, ca: trustme.CA) -> None:
    """websocket_ping: the server pings; answered pings keep the WebSocket
    open, an unanswered one closes it and the session is unbound."""
    async with ws_server(tmp_path, ca, websocket_ping=1.0) as srv:
        await srv.user("alice")
        ws = await WS.connect(url(srv), autoping=False)
        full = await ws.login(DOMAIN, "alice", PASSWORD)
        for _ in range(2):
            with pytest.raises(Ping) as ping:
                await ws.next()
            await ws.ws.pong(ping.value.args[0])
        assert session_of(srv, full) is not None
        with pytest.raises(Ping):
            await ws.next()
        with pytest.raises(Closed):             # not answered
            await ws.next()
        await ws.close()
        await until(lambda: session_of(srv, full) is None, "alice's session is unbound")
        await until(lambda: not srv.server.streams, "the stream is gone")


async def test_rate_limit_slows_a_websocket_down(tmp_path: Path, ca: trustme.CA) -> None:
    """client.rate_limit holds over WebSocket too: past the burst, the
    stream stops reading for a while instead of handling at once; the
    client is slowed, not disconnected."""
    async with ws_server(tmp_path, ca, client={"rate_limit": 4000, "rate_burst": 4000}) as srv:
        ws, full = await ws_login(srv, "alice")
        loop = asyncio.get_running_loop()
        pad = "x" * 1800
        start = loop.time()
        for i in range(4):                  # ~8 kB: ~1 s past the burst at 4 kB/s
            await ws.send(f"<iq xmlns='{ns.CLIENT}' type='get' id='p{i}' to='{DOMAIN}'>"
                          f"<ping xmlns='urn:xmpp:ping'/><x xmlns='urn:pad'>{pad}</x></iq>")
        ids = []
        for _ in range(4):
            ids.append((await ws.expect(tag("iq"))).get("id"))
        elapsed = loop.time() - start
        assert ids == ["p0", "p1", "p2", "p3"]
        assert elapsed >= 0.5, elapsed
        assert session_of(srv, full) is not None
        await ws.close()


# -- closing -----------------------------------------------------------------------
async def test_client_close_is_answered_and_the_contact_sees_unavailable(
        tmp_path: Path, ca: trustme.CA) -> None:
    """RFC 7395 §3.6: the client's ``<close/>`` is answered with ``<close/>``
    and the WebSocket closes (1000); the session is unbound and a contact
    (over TCP) gets its unavailable presence."""
    from tests.integration.test_subscription import available_from, friends
    async with ws_server(tmp_path, ca) as srv:
        await friends(srv)
        bob = await srv.login(BOB)
        seen = asyncio.create_task(wait_event(bob, "presence_available",
                                              match=available_from(ALICE)))
        await asyncio.sleep(0)
        ws, full = await ws_login(srv, "alice")
        await ws.send(f"<presence xmlns='{ns.CLIENT}'/>")
        await seen
        gone = asyncio.create_task(wait_event(
            bob, "presence_unavailable", match=lambda p: str(p["from"]) == full))
        await asyncio.sleep(0)
        await ws.send(f"<close xmlns='{FRAMING}'/>")
        rest = await ws.until_closed()
        assert [el.tag for el in rest][-1:] == [tag("close", FRAMING)]
        assert all(el.tag != tag("error", ns.STREAM) for el in rest)
        assert ws.close_code == aiohttp.WSCloseCode.OK
        await ws.close()
        await gone
        assert session_of(srv, full) is None
        await until(lambda: not ws_streams(srv), "the stream is gone")


async def test_dropped_websocket_unbinds_the_session(tmp_path: Path, ca: trustme.CA) -> None:
    """A WebSocket that closes without ``<close/>`` (a tab closed) ends its
    session like a dropped TCP connection."""
    async with ws_server(tmp_path, ca) as srv:
        ws, full = await ws_login(srv, "alice")
        await ws.close()
        await until(lambda: session_of(srv, full) is None, "alice's session is unbound")
        await until(lambda: not srv.server.streams, "the stream is gone")


async def test_a_connection_cut_without_a_close_frame(tmp_path: Path, ca: trustme.CA) -> None:
    """The TCP connection under a bound WebSocket goes away with no close
    frame at all: the session is unbound all the same."""
    async with ws_server(tmp_path, ca) as srv:
        ws, full = await ws_login(srv, "alice")
        transport = ws.ws._response.connection.transport  # noqa: SLF001 (no public way)
        transport.abort()
        await until(lambda: session_of(srv, full) is None, "alice's session is unbound")
        await until(lambda: not srv.server.streams, "the stream is gone")
        await ws.http.close()


async def test_server_shutdown_closes_with_system_shutdown(tmp_path: Path, ca: trustme.CA) -> None:
    """Shutdown: each WebSocket stream gets <system-shutdown/> and
    <close/>; a client that answers <close/> sees its WebSocket closed, with
    nothing after the server's <close/>."""
    from tests.integration.test_subscription import friends
    seen: dict[str, list[etree._Element]] = {}

    async def answer(ws: WS, name: str) -> None:
        els: list[etree._Element] = []
        seen[name] = els
        while True:
            try:
                el = await ws.next()
            except Closed:
                return
            els.append(el)
            if el.tag == tag("close", FRAMING):
                await ws.send(f"<close xmlns='{FRAMING}'/>")

    async with ws_server(tmp_path, ca) as srv:
        await friends(srv)
        a, _ = await ws_login(srv, "alice")
        b, _ = await ws_login(srv, "bob")
        for ws in (a, b):
            await ws.send(f"<presence xmlns='{ns.CLIENT}'/>")
        for ws, other in ((a, BOB), (b, ALICE)):
            while True:
                el = await ws.expect(tag("presence"))
                if el.get("from", "").startswith(other):
                    break
        readers = [asyncio.create_task(answer(a, "alice")), asyncio.create_task(answer(b, "bob"))]
        await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(*readers), TIMEOUT)
    for name, els in seen.items():
        tags = [el.tag for el in els]
        assert tags[-2:] == [tag("error", ns.STREAM), tag("close", FRAMING)], (name, tags)
        assert stream_error(els[-2]) == "system-shutdown"
    for ws in (a, b):
        assert ws.ws.closed
        await ws.close()


# -- encryption, proxies ---------------------------------------------------------
async def test_tls_required_from_a_non_loopback_client(tmp_path: Path, ca: trustme.CA) -> None:
    """tls = "required": a client behind a trusted proxy (X-Forwarded-For
    names a public address) over plain HTTP is refused at <open/> with
    policy-violation; the same with X-Forwarded-Proto: https is secure, and
    its address is the one the proxy names."""
    async with ws_server(tmp_path, ca, trusted_proxies=["127.0.0.1"]) as srv:
        ws = await connect(srv, headers={"X-Forwarded-For": "203.0.113.5"})
        await ws.send(f"<open xmlns='{FRAMING}' to='{DOMAIN}' version='1.0'/>")
        await closed_with(ws, "policy-violation")

        await srv.user("alice")
        ws = await connect(srv, headers={"X-Forwarded-For": "198.51.100.7, 203.0.113.5",
                                         "X-Forwarded-Proto": "https"})
        await ws.login(DOMAIN, "alice", PASSWORD)
        (stream,) = srv.server.streams
        assert stream.secure and stream.peer == ("203.0.113.5", 0)
        await ws.close()


async def test_consider_secure(tmp_path: Path, ca: trustme.CA) -> None:
    """consider_secure = true: plain HTTP counts as encrypted whoever asks."""
    async with ws_server(tmp_path, ca, trusted_proxies=["127.0.0.0/8"],
                         consider_secure=True) as srv:
        await srv.user("alice")
        ws = await connect(srv, headers={"X-Forwarded-For": "203.0.113.5"})
        await ws.login(DOMAIN, "alice", PASSWORD)
        (stream,) = srv.server.streams
        assert stream.secure and stream.peer[0] == "203.0.113.5"
        await ws.close()


async def test_an_untrusted_peer_cannot_forward(tmp_path: Path, ca: trustme.CA) -> None:
    """X-Forwarded-For / -Proto from a peer that is not a trusted proxy are
    ignored: the client is the loopback peer (secure), and host-meta's
    scheme is not switched to wss by its say-so."""
    async with ws_server(tmp_path, ca, trusted_proxies=["10.0.0.0/8"]) as srv:
        await srv.user("alice")
        ws = await connect(srv, headers={"X-Forwarded-For": "203.0.113.5",
                                         "X-Forwarded-Proto": "https"})
        await ws.login(DOMAIN, "alice", PASSWORD)
        (stream,) = srv.server.streams
        assert stream.peer[0] == "127.0.0.1" and stream.secure
        await ws.close()
        async with aiohttp.ClientSession() as http:
            async with http.get(url(srv, "/.well-known/host-meta.json", "http"),
                                headers={"X-Forwarded-Proto": "https"}) as resp:
                links = (await resp.json())["links"]
        assert all(not link["href"].startswith(("wss:", "https:")) for link in links)


async def test_forwarded_proto_from_a_trusted_proxy_switches_host_meta(
        tmp_path: Path, ca: trustme.CA) -> None:
    async with ws_server(tmp_path, ca, trusted_proxies=["127.0.0.1"]) as srv:
        async with aiohttp.ClientSession() as http:
            async with http.get(url(srv, "/.well-known/host-meta.json", "http"),
                                headers={"X-Forwarded-Proto": "https",
                                         "Host": "chat.example.com"}) as resp:
                links = {link["rel"]: link["href"] for link in (await resp.json())["links"]}
        assert links["urn:xmpp:alt-connections:websocket"] == \
            "wss://chat.example.com/xmpp-websocket"
        assert links["urn:xmpp:alt-connections:xbosh"] == "https://chat.example.com/http-bind"


@pytest.mark.parametrize("headers", [
    {},                                                     # the proxy named no client
    {"X-Forwarded-For": "unknown"},
    {"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "http"},   # its own address
], ids=["no-xff", "unknown", "proxy-itself"])
async def test_behind_a_loopback_proxy_only_a_named_client_counts_as_local(
        tmp_path: Path, ca: trustme.CA, headers: dict[str, str]) -> None:
    """A trusted proxy on loopback: the client is who X-Forwarded-For names,
    never the proxy itself, so a plain-HTTP client it does not name does not
    count as local (encrypted)."""
    async with ws_server(tmp_path, ca, trusted_proxies=["127.0.0.1"]) as srv:
        ws = await connect(srv, headers=headers)
        await ws.send(f"<open xmlns='{FRAMING}' to='{DOMAIN}' version='1.0'/>")
        await closed_with(ws, "policy-violation")


async def test_forwarded_addresses_with_ports_and_the_nearest_proto(
        tmp_path: Path, ca: trustme.CA) -> None:
    """X-Forwarded-For hops with a port are addresses too; of several
    X-Forwarded-Proto values the nearest proxy's (the last) counts."""
    async with ws_server(tmp_path, ca, trusted_proxies=["127.0.0.1"]) as srv:
        ws = await connect(srv, headers={"X-Forwarded-For": "[2001:db8::1]:4711",
                                         "X-Forwarded-Proto": "https, http"})
        await ws.send(f"<open xmlns='{FRAMING}' to='{DOMAIN}' version='1.0'/>")
        await closed_with(ws, "policy-violation")
        await srv.user("alice")
        ws = await connect(srv, headers={"X-Forwarded-For": "203.0.113.5:4711",
                                         "X-Forwarded-Proto": "http, https"})
        await ws.login(DOMAIN, "alice", PASSWORD)
        (stream,) = srv.server.streams
        assert stream.secure and stream.peer == ("203.0.113.5", 0)
        await ws.close()


async def test_a_client_that_must_encrypt_is_sent_to_the_tls_port(
        tmp_path: Path, ca: trustme.CA) -> None:
    """tls = "required" and a tls_port: a plain-HTTP client that does not
    count as encrypted gets <open/> then <close see-other-uri='wss://...'/>
    (RFC 7395 §3.6.1), and host-meta shows it the TLS endpoints."""
    tls_port = free_port()
    async with ws_server(tmp_path, ca, tls_port=tls_port,
                         trusted_proxies=["127.0.0.1"]) as srv:
        public = {"X-Forwarded-For": "203.0.113.5", "Host": "chat.example.com:8080"}
        ws = await connect(srv, headers=public)
        await ws.send(f"<open xmlns='{FRAMING}' to='{DOMAIN}' version='1.0'/>")
        rest = await ws.until_closed()
        assert [el.tag for el in rest] == [tag("open", FRAMING), tag("close", FRAMING)]
        assert rest[-1].get("see-other-uri") == \
            f"wss://chat.example.com:{tls_port}/xmpp-websocket"
        await ws.close()
        async with aiohttp.ClientSession() as http:
            async with http.get(url(srv, "/.well-known/host-meta.json", "http"),
                                headers=public) as resp:
                links = {link["rel"]: link["href"] for link in (await resp.json())["links"]}
        assert links == {
            "urn:xmpp:alt-connections:websocket":
                f"wss://chat.example.com:{tls_port}/xmpp-websocket",
            "urn:xmpp:alt-connections:xbosh": f"https://chat.example.com:{tls_port}/http-bind"}


def client_ctx(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


async def test_wss_on_the_tls_port(tmp_path: Path, ca: trustme.CA) -> None:
    """tls_port: HTTPS with the host's certificate; wss:// logs in, and
    host-meta over HTTPS names wss:// and https:// endpoints."""
    async with ws_server(tmp_path, ca, tls_port=free_port(),
                         trusted_proxies=["127.0.0.1"]) as srv:
        await srv.user("alice")
        # A public client (through a proxy passing TLS through): secure
        # because of the TLS, not because of loopback.
        ws = await WS.connect(url(srv, scheme="wss"), ssl_ctx=client_ctx(ca),
                              server_hostname=DOMAIN,
                              headers={"X-Forwarded-For": "203.0.113.5"})
        assert await ws.login(DOMAIN, "alice", PASSWORD) == f"{ALICE}/ws"
        (stream,) = srv.server.streams
        assert stream.secure and stream.peer[0] == "203.0.113.5"
        await ws.close()
        host = f"{DOMAIN}:{srv.server.ports['https']}"
        async with aiohttp.ClientSession() as http:
            async with http.get(url(srv, "/.well-known/host-meta", "https"),
                                ssl=client_ctx(ca), server_hostname=DOMAIN,
                                headers={"Host": host}) as resp:
                assert resp.status == 200
                xrd = etree.fromstring(await resp.read())
        links = {link.get("rel"): link.get("href") for link in xrd}
        assert links["urn:xmpp:alt-connections:websocket"] == f"wss://{host}/xmpp-websocket"
        assert links["urn:xmpp:alt-connections:xbosh"] == f"https://{host}/http-bind"


# -- XEP-0198 ------------------------------------------------------------------------
def ping(i: str) -> str:
    return (f"<iq xmlns='{ns.CLIENT}' type='get' id='{i}' to='{DOMAIN}'>"
            f"<ping xmlns='urn:xmpp:ping'/></iq>")


async def test_stream_management_resumes_on_a_new_websocket(
        tmp_path: Path, ca: trustme.CA) -> None:
    """alice enables XEP-0198 over a WebSocket, acknowledges one of two
    messages from bob (TCP), and her WebSocket drops. On a new WebSocket
    <resume/> gets the session back with the unacknowledged message and the
    ones sent meanwhile; the session stayed bound throughout."""
    async with ws_server(tmp_path, ca) as srv:
        bob = await srv.login(await srv.user("bob"))
        await srv.user("alice")
        ws = await connect(srv)
        features = await ws.authenticated(DOMAIN, "alice", PASSWORD)
        assert features.find(f"{{{SM}}}sm") is not None
        full = await ws.bind("phone")
        await ws.send(f"<enable xmlns='{SM}' resume='true'/>")
        enabled = await ws.expect(tag("enabled", SM))
        token = enabled.get("id")
        assert token and enabled.get("resume") in ("true", "1")
        for body in ("m1", "m2"):
            bob.send_message(mto=full, mbody=body, mtype="chat")
        assert (await ws.expect(tag("message"))).findtext(tag("body")) == "m1"
        assert (await ws.expect(tag("message"))).findtext(tag("body")) == "m2"
        await ws.send(f"<a xmlns='{SM}' h='1'/>")       # m1 only
        await ws.send(ping("p1"))
        await ws.expect(tag("iq"))
        session = session_of(srv, full)
        await ws.ws.close()                 # no <close/>: the tab lost its network
        await ws.close()
        await until(lambda: not ws_streams(srv), "the WebSocket stream is gone")
        assert session_of(srv, full) is session       # kept for resumption
        bob.send_message(mto=full, mbody="m3", mtype="chat")
        await bob.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)   # m3 was routed

        again = await connect(srv)
        await again.authenticated(DOMAIN, "alice", PASSWORD)
        await again.send(f"<resume xmlns='{SM}' previd='{token}' h='1'/>")
        resumed = await again.expect(tag("resumed", SM))
        assert resumed.get("previd") == token
        assert resumed.get("h") == "1"          # the ping of the first WebSocket
        bodies = [(await again.expect(tag("message"))).findtext(tag("body")) for _ in range(2)]
        assert bodies == ["m2", "m3"]
        assert session_of(srv, full) is session
        bob.send_message(mto=full, mbody="m4", mtype="chat")
        assert (await again.expect(tag("message"))).findtext(tag("body")) == "m4"
        await again.send(f"<message xmlns='{ns.CLIENT}' to='{BOB}' type='chat'>"
                         "<body>back</body></message>")
        got = await wait_event(bob, "message", match=lambda m: m["body"] == "back")
        assert str(got["from"]) == full
        await again.send(f"<close xmlns='{FRAMING}'/>")
        await again.until_closed()
        await again.close()
        await until(lambda: session_of(srv, full) is None, "alice's session ends with <close/>")


async def test_nothing_follows_the_servers_close(tmp_path: Path, ca: trustme.CA) -> None:
    """RFC 7395 §3.6 (as RFC 6120 §4.4): after its <close/> the server sends
    nothing on that stream. At shutdown bob is sent <close/> and waits; alice
    answers hers first, and her unavailable presence must not reach bob's
    closed stream."""
    from tests.integration.test_subscription import friends
    async with ws_server(tmp_path, ca) as srv:
        await friends(srv)
        a, alice = await ws_login(srv, "alice")
        b, _ = await ws_login(srv, "bob")
        for ws in (a, b):
            await ws.send(f"<presence xmlns='{ns.CLIENT}'/>")
        while (await b.expect(tag("presence"))).get("from") != alice:
            pass

        async def alice_answers() -> None:
            await a.expect(tag("close", FRAMING))
            await a.send(f"<close xmlns='{FRAMING}'/>")
            await a.until_closed()

        async def bob_answers_late() -> list[etree._Element]:
            await b.expect(tag("close", FRAMING))
            await until(lambda: session_of(srv, alice) is None, "alice is unbound")
            await b.send(f"<close xmlns='{FRAMING}'/>")
            return await b.until_closed()       # what came after the server's <close/>

        tasks = [asyncio.create_task(alice_answers()), asyncio.create_task(bob_answers_late())]
        await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
    assert tasks[1].result() == [], b.texts[-3:]
    for ws in (a, b):
        await ws.close()
