"""C2S end to end: real server, real slixmpp clients, real TLS, fs storage."""

from __future__ import annotations

import asyncio
import ssl
from xml.etree import ElementTree
from typing import Any

import pytest
from slixmpp.exceptions import IqError

from tests.conftest import DOMAIN, PASSWORD, TIMEOUT, Running, wait_event
from tests.rawclient import Raw
from vinespy import ns
from vinespy.jid import JID

pytestmark = pytest.mark.integration


async def assert_serves(srv: Running) -> None:
    """The server still serves a fresh client end to end (after bad input)."""
    jid = f"fresh{len(srv.clients)}@{DOMAIN}"
    if await srv.storage.find_user(__import__("vinespy.jid").jid.JID.parse(jid)) is None:
        await srv.user(jid.split("@")[0])
    c = await srv.login(jid)
    rtt = await c.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)
    assert rtt is not None
    c.disconnect()


def tls_ctx(srv: Running) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    srv.ca.configure_trust(ctx)
    return ctx


async def logged_in_raw(srv: Running) -> Raw:
    """A new user alice, logged in and bound on a raw connection."""
    await srv.user("alice")
    raw = await Raw.connect(srv.port)
    await raw.login(DOMAIN, tls_ctx(srv), "alice", PASSWORD)
    return raw


async def chat(sender: Any, receiver: Any, to: str, body: str) -> Any:
    got = asyncio.create_task(wait_event(receiver, "message", match=lambda m: m["body"] == body))
    await asyncio.sleep(0)
    sender.send_message(mto=to, mbody=body, mtype="chat")
    return await got


@pytest.mark.parametrize("mech", ["PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256"])
async def test_login_over_starttls(server: Running, mech: str) -> None:
    """Each SASL mechanism logs in over STARTTLS, and the server used that one."""
    jid = await server.user("alice")
    c = await server.login(jid, mechanism=mech)
    (stream,) = server.server.streams
    assert stream.secure and stream.mechanism == mech
    assert str(c.boundjid.bare) == jid


@pytest.mark.parametrize("mech", ["PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256"])
async def test_login_over_direct_tls(make_server: Any, mech: str) -> None:
    """XEP-0368: each mechanism logs in on the direct TLS port (SNI picks the cert)."""
    from tests.conftest import free_port
    async with make_server(client={"direct_tls_port": free_port()}) as srv:
        jid = await srv.user("alice")
        c = await srv.login(jid, mechanism=mech, direct_tls=True)
        (stream,) = srv.server.streams
        assert stream.secure and stream.mechanism == mech
        assert str(c.boundjid.bare) == jid


async def test_idle_streams_release_their_parser_and_go_on(server: Running) -> None:
    """Streams sent nothing for a while release their parser's state (the
    server's IdleRelease); what the clients send next is parsed as before."""
    a = await server.login(await server.user("alice"))
    b = await server.login(await server.user("bob"))
    streams = list(server.server.streams)
    for _ in range(100):                    # the clients' own traffic settles
        server.server.idle_parsers.tick()
        if all(s.parser.released for s in streams):
            break
        await asyncio.sleep(0.05)
    assert all(s.parser.released for s in streams)
    m = await chat(a, b, str(b.boundjid), "after a pause")
    assert m["from"] == a.boundjid
    m = await chat(b, a, str(a.boundjid), "and back")
    assert m["from"] == b.boundjid


async def test_two_users_chat_both_ways(server: Running) -> None:
    """Messages to full JIDs flow both ways with the sender's full JID stamped."""
    a = await server.login(await server.user("alice"))
    b = await server.login(await server.user("bob"))
    m = await chat(a, b, str(b.boundjid), "hello bob")
    assert m["from"] == a.boundjid and m["type"] == "chat"
    m = await chat(b, a, str(a.boundjid), "hello alice")
    assert m["from"] == b.boundjid


async def test_bare_jid_reaches_every_available_resource(server: Running) -> None:
    """A chat message to a bare JID reaches all of the user's available resources."""
    a = await server.login(await server.user("alice"))
    bob = await server.user("bob")
    b1 = await server.login(bob)
    b2 = await server.login(bob)
    assert b1.boundjid != b2.boundjid
    got1 = asyncio.create_task(wait_event(b1, "message", match=lambda m: m["body"] == "hi"))
    got2 = asyncio.create_task(wait_event(b2, "message", match=lambda m: m["body"] == "hi"))
    await asyncio.sleep(0)
    a.send_message(mto=bob, mbody="hi", mtype="chat")
    m1, m2 = await asyncio.gather(got1, got2)
    assert m1["from"] == a.boundjid == m2["from"]


async def test_message_to_unknown_user_errors(server: Running) -> None:
    """service-unavailable for a user who does not exist (RFC 6121 §8.5.1); an
    existing offline user's messages are stored instead (tests/integration/test_offline.py)."""
    a = await server.login(await server.user("alice"))
    err = asyncio.create_task(wait_event(a, "message_error"))
    await asyncio.sleep(0)
    a.send_message(mto=f"nobody@{DOMAIN}", mbody="anyone?", mtype="chat")
    e = await err
    assert e["error"]["condition"] == "service-unavailable"
    assert e["from"] == f"nobody@{DOMAIN}"


async def test_remote_domain_gets_remote_server_not_found(server: Running) -> None:
    """Another domain is not reachable until s2s exists: remote-server-not-found."""
    a = await server.login(await server.user("alice"))
    with pytest.raises(IqError) as exc:
        await a.plugin["xep_0030"].get_info(jid="example.org", timeout=TIMEOUT)
    assert exc.value.iq["error"]["condition"] == "remote-server-not-found"


async def test_ping_version_disco_and_unknown_iq(server: Running) -> None:
    """XEP-0199, XEP-0092 and XEP-0030 answer; an unknown payload gets service-unavailable."""
    a = await server.login(await server.user("alice"))
    assert await a.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT) is not None
    v = await a.plugin["xep_0092"].get_version(DOMAIN, timeout=TIMEOUT)
    assert v["software_version"]["name"] == "vinespy"
    info = await a.plugin["xep_0030"].get_info(jid=DOMAIN, timeout=TIMEOUT)
    features = info["disco_info"]["features"]
    assert {ns.PING, ns.VERSION, ns.DISCO_INFO} <= set(features)
    iq = a.make_iq_get(ito=DOMAIN)
    iq.xml.append(ElementTree.Element("{urn:example:nothing}query"))
    with pytest.raises(IqError) as exc:
        await iq.send(timeout=TIMEOUT)
    assert exc.value.iq["error"]["condition"] == "service-unavailable"


async def test_spoofed_from_is_replaced(server: Running) -> None:
    """A client cannot spoof 'from': the server stamps the session's full JID."""
    a = await server.login(await server.user("alice"))
    b = await server.login(await server.user("bob"))
    got = asyncio.create_task(wait_event(b, "message", match=lambda m: m["body"] == "spoof"))
    await asyncio.sleep(0)
    msg = a.make_message(mto=b.boundjid, mbody="spoof", mtype="chat")
    msg["from"] = f"admin@{DOMAIN}/console"
    msg.send()
    m = await got
    assert m["from"] == a.boundjid


async def test_resource_conflict_new_session_wins(server: Running) -> None:
    """Binding a bound resource again: the old stream gets <conflict/>, the new one works."""
    jid = await server.user("alice")
    old = await server.login(jid + "/phone")
    err = asyncio.create_task(wait_event(old, "stream_error"))
    gone = asyncio.create_task(wait_event(old, "disconnected"))
    new = await server.login(jid + "/phone")
    assert (await err)["condition"] == "conflict"
    await gone
    assert str(new.boundjid) == jid + "/phone"
    assert await new.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT) is not None


async def test_resource_conflict_refused_when_configured(make_server: Any) -> None:
    """resource_conflict = "refuse": the second bind gets a <conflict/> stanza error."""
    async with make_server(client={"resource_conflict": "refuse"}) as srv:
        jid = await srv.user("alice")
        first = await srv.login(jid + "/phone")
        raw = await bind_raw(srv, "phone")
        m = await raw.expect(rb"<iq[^>]*type=\"error\".*?</iq>")
        assert b"<conflict" in m.group(0)
        raw.close()
        assert await first.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT) is not None


async def bind_raw(srv: Running, resource: str) -> Raw:
    """A raw client as alice through SASL, with a bind request for ``resource`` sent."""
    raw = await Raw.connect(srv.port)
    await raw.secure(DOMAIN, tls_ctx(srv))
    assert (await raw.plain("alice", PASSWORD)).startswith(b"<success")
    raw.open_stream(DOMAIN)
    await raw.features()
    raw.send(f"<iq type='set' id='b'><bind xmlns='{ns.BIND}'><resource>{resource}</resource>"
             "</bind></iq>")
    return raw


async def test_max_resources_per_account(make_server: Any) -> None:
    """One resource more than max_resources_per_account gets resource-constraint."""
    async with make_server(client={"max_resources_per_account": 2}) as srv:
        jid = await srv.user("alice")
        await srv.login(jid + "/1")
        await srv.login(jid + "/2")
        raw = await bind_raw(srv, "3")
        m = await raw.expect(rb"<iq[^>]*type=\"error\".*?</iq>")
        assert b"resource-constraint" in m.group(0) and b'type="wait"' in m.group(0)
        raw.close()


async def test_wrong_password_then_closed(server: Running) -> None:
    """Wrong passwords get <not-authorized/>; after max_auth_failures the stream closes."""
    await server.user("alice")
    raw = await Raw.connect(server.port)
    await raw.secure(DOMAIN, tls_ctx(server))
    for _ in range(2):
        assert b"<not-authorized/>" in await raw.plain("alice", "wrong")
    assert b"<not-authorized/>" in await raw.plain("alice", "wrong")
    rest = await raw.until_closed()
    assert b"<policy-violation" in rest and rest.endswith(b"</stream:stream>")
    await assert_serves(server)


async def test_slixmpp_wrong_password_fails(server: Running) -> None:
    """A real client with a wrong password is refused (failed_auth fires)."""
    jid = await server.user("alice")
    c = server.client(jid, "not-the-password", mechanism="SCRAM-SHA-256")
    failed = asyncio.create_task(wait_event(c, "failed_auth"))
    await asyncio.sleep(0)
    c.connect("127.0.0.1", server.port)
    await failed
    await assert_serves(server)


async def test_starttls_required(server: Running) -> None:
    """With tls = required, features offer only STARTTLS and auth before it is refused."""
    raw = await Raw.connect(server.port)
    raw.open_stream(DOMAIN)
    feats = await raw.features()
    assert b"<required/>" in feats and b"mechanisms" not in feats
    raw.send(f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>AGFsaWNlAHg=</auth>")
    rest = await raw.until_closed()
    assert b"<policy-violation" in rest
    await assert_serves(server)


async def test_tls_optional_never_offers_plain_in_clear(make_server: Any) -> None:
    """With tls = optional, SCRAM is offered in the clear but PLAIN only after STARTTLS."""
    async with make_server(client={"tls": "optional"}) as srv:
        raw = await Raw.connect(srv.port)
        raw.open_stream(DOMAIN)
        feats = await raw.features()
        assert b"SCRAM-SHA-256" in feats and b"PLAIN" not in feats
        assert b"<required/>" not in feats
        await raw.starttls(tls_ctx(srv), DOMAIN)
        raw.open_stream(DOMAIN)
        assert b"<mechanism>PLAIN</mechanism>" in await raw.features()
        raw.close()


async def test_stanza_before_auth_is_not_authorized(server: Running) -> None:
    """A stanza before SASL closes the stream with <not-authorized/>."""
    raw = await Raw.connect(server.port)
    await raw.secure(DOMAIN, tls_ctx(server))
    raw.send("<message to='bob@wonderland.lit'><body>x</body></message>")
    assert b"<not-authorized" in await raw.until_closed()
    await assert_serves(server)


async def test_unknown_host_and_bad_namespace(server: Running) -> None:
    """Stream header errors: host-unknown, invalid-namespace, unsupported-version."""
    cases = {
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
        " to='example.org' version='1.0'>": b"<host-unknown",
        "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'"
        f" to='{DOMAIN}' version='1.0'>": b"<invalid-namespace",
        "<stream:stream xmlns='jabber:client' xmlns:stream='urn:wrong'"
        f" to='{DOMAIN}' version='1.0'>": b"<invalid-namespace",
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
        f" to='{DOMAIN}' version='2.0'>": b"<unsupported-version",
    }
    for header, condition in cases.items():
        raw = await Raw.connect(server.port)
        raw.send(header)
        out = await raw.until_closed()
        assert out.startswith(b"<?xml") and condition in out, out
        assert out.endswith(b"</stream:stream>")
    await assert_serves(server)


async def test_malformed_xml(server: Running) -> None:
    """Malformed XML after login: <not-well-formed/> and the stream is closed."""
    raw = await logged_in_raw(server)
    raw.send("<message><body>oops</bdy></message>")
    out = await raw.until_closed()
    assert b"<not-well-formed" in out and out.endswith(b"</stream:stream>")
    await assert_serves(server)


async def test_oversized_stanza(server: Running) -> None:
    """A stanza beyond max_stanza_size gets <policy-violation/> before it is buffered."""
    raw = await logged_in_raw(server)
    raw.send("<message to='alice@wonderland.lit'><body>")
    answer = asyncio.create_task(raw.until_closed())
    chunk = "x" * 8192
    sent = 0
    try:
        # Up to 10 MB of a never-ending stanza, stopping once the server answers:
        # writing into a reset connection would discard its reply.
        while not answer.done() and sent < 10 * 1024 * 1024:
            raw.send(chunk)
            sent += len(chunk)
            await raw.writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    out = await answer
    assert b"<policy-violation" in out
    await assert_serves(server)


@pytest.mark.parametrize("attack", [
    "<!DOCTYPE foo [<!ENTITY a 'aaaaaaaaaa'>]><message><body>&a;</body></message>",
    "<message><body>&xxe;</body></message>",
    "<?evil instruction?>",
    "<!-- a comment -->",
])
async def test_restricted_xml(server: Running, attack: str) -> None:
    """DOCTYPE, entities, PIs and comments get <restricted-xml/> (RFC 6120 §11.1)."""
    raw = await logged_in_raw(server)
    raw.send(attack)
    out = await raw.until_closed()
    assert b"<restricted-xml" in out, out
    await assert_serves(server)


async def test_doctype_in_stream_header(server: Running) -> None:
    """A DOCTYPE before the stream header (billion laughs) gets <restricted-xml/>."""
    raw = await Raw.connect(server.port)
    raw.send("<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
             "<!ENTITY lol2 '&lol;&lol;&lol;&lol;'>]>"
             f"<stream:stream xmlns='jabber:client' xmlns:stream='{ns.STREAM}' "
             f"to='{DOMAIN}' version='1.0'>")
    out = await raw.until_closed()
    assert b"<restricted-xml" in out
    await assert_serves(server)


async def test_bad_iq_gets_bad_request(server: Running) -> None:
    """An iq without id/type or with two children gets <bad-request/> (RFC 6120 §8.2.3)."""
    raw = await logged_in_raw(server)
    raw.send(f"<iq type='get' id='two'><ping xmlns='{ns.PING}'/><ping xmlns='{ns.PING}'/></iq>")
    assert b"bad-request" in (await raw.expect(rb"<iq[^>]*id=\"two\".*?</iq>")).group(0)
    raw.send(f"<iq type='bogus' id='t'><ping xmlns='{ns.PING}'/></iq>")
    assert b"bad-request" in (await raw.expect(rb"<iq[^>]*id=\"t\".*?</iq>")).group(0)
    raw.send(f"<iq type='get' id='p' to='{DOMAIN}'><ping xmlns='{ns.PING}'/></iq>")
    m = await raw.expect(rb"<iq[^>]*id=\"p\"[^>]*/>")
    assert b'type="result"' in m.group(0)
    raw.send("<foo xmlns='jabber:client'/>")
    assert b"<unsupported-stanza-type" in await raw.until_closed()


async def test_legacy_session_iq_answered(server: Running) -> None:
    """Old clients' RFC 3921 session establishment gets an empty result."""
    raw = await logged_in_raw(server)
    raw.send(f"<iq type='set' id='s1'><session xmlns='{ns.SESSION}'/></iq>")
    m = await raw.expect(rb"<iq[^>]*id=\"s1\"[^>]*/>")
    assert b'type="result"' in m.group(0)
    raw.close()


async def test_unauthenticated_stream_times_out(make_server: Any) -> None:
    """A connection that never authenticates is closed with <connection-timeout/>."""
    async with make_server(client={"auth_timeout": 1}) as srv:
        raw = await Raw.connect(srv.port)
        raw.open_stream(DOMAIN)
        out = await raw.until_closed(timeout=TIMEOUT)
        assert b"<connection-timeout" in out
        await assert_serves(srv)


async def test_flood_is_slowed_not_killed(make_server: Any) -> None:
    """A flooding client is throttled (reading paused) while others chat normally."""
    rate = 200_000
    async with make_server(client={"rate_limit": rate, "rate_burst": 65536}) as srv:
        flooder = await srv.login(await srv.user("mallory"))
        a = await srv.login(await srv.user("alice"))
        b = await srv.login(await srv.user("bob"))
        body = "f" * 900
        n = 1000                         # ~1 MB: ~5 s at the limit
        last = asyncio.create_task(wait_event(
            flooder, "message", timeout=60, match=lambda m: m["body"] == "last"))
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for _ in range(n):
            flooder.send_message(mto=flooder.boundjid, mbody=body)
        flooder.send_message(mto=flooder.boundjid, mbody="last")
        # Meanwhile an ordinary pair chats with no visible delay.
        for i in range(20):
            m = await asyncio.wait_for(chat(a, b, str(b.boundjid), f"m{i}"), 2.0)
            assert m["from"] == a.boundjid
        await last
        elapsed = loop.time() - t0
        assert elapsed >= (n * len(body) - 65536) / rate * 0.8, elapsed
        assert any(s.session is not None and str(s.session.jid) == str(flooder.boundjid)
                   for s in srv.server.streams)


async def test_graceful_shutdown_closes_streams(make_server: Any) -> None:
    """Shutdown sends <system-shutdown/> and </stream:stream> to every client."""
    async with make_server() as srv:
        raw = await logged_in_raw(srv)
        c = await srv.login(await srv.user("bob"))
        err = asyncio.create_task(wait_event(c, "stream_error"))
        closing = asyncio.create_task(raw.until_closed())
        await asyncio.sleep(0)
        srv.clients.clear()
        # leaving the context stops the server
    out = await closing
    assert b"<system-shutdown" in out and out.endswith(b"</stream:stream>")
    assert (await err)["condition"] == "system-shutdown"


async def test_whitespace_keepalives(server: Running) -> None:
    """Whitespace between stanzas (RFC 6120 §4.6.1) keeps the stream alive."""
    raw = await logged_in_raw(server)
    for _ in range(100):
        raw.send(" \n\t ")
    raw.send(f"<iq type='get' id='ka' to='{DOMAIN}'><ping xmlns='{ns.PING}'/></iq> ")
    m = await raw.expect(rb"<iq[^>]*id=\"ka\"[^>]*/>")
    assert b'type="result"' in m.group(0)
    raw.close()


async def test_nothing_follows_the_servers_end_of_stream(tmp_path: Any, ca: Any) -> None:
    """RFC 6120 §4.4: once the server sent </stream:stream> it sends nothing
    more on that stream, even while it waits for the client's. At shutdown
    bob is sent his and waits; alice answers hers first, and her unavailable
    presence must not reach bob's closed stream."""
    from tests.conftest import running
    from tests.integration.test_module_api import ctx_of
    from tests.integration.test_subscription import friends
    async with running(tmp_path, ca) as srv:
        await friends(srv)
        a, b = await Raw.connect(srv.port), await Raw.connect(srv.port)
        alice = await a.login(DOMAIN, ctx_of(srv), "alice", PASSWORD)
        await b.login(DOMAIN, ctx_of(srv), "bob", PASSWORD)
        for raw in (a, b):
            raw.send("<presence/>")
        await b.expect(f"<presence [^>]*from=\"{alice}\"".encode())
        b.buf = b""

        async def alice_answers() -> None:
            await a.expect(rb"</stream:stream>")
            a.send("</stream:stream>")
            await a.until_closed()

        async def bob_answers_late() -> bytes:
            await b.expect(rb"</stream:stream>")
            while srv.server.sessions.get(JID.parse(alice)) is not None:
                await asyncio.sleep(0.01)       # the server runs in this loop
            b.send("</stream:stream>")
            return await b.until_closed()       # what came after the server's end

        tasks = [asyncio.create_task(alice_answers()), asyncio.create_task(bob_answers_late())]
        await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
    assert tasks[1].result() == b""
