"""XEP-0198 stream management on one server, from the outside: raw clients
(the cases no library would send) over real sockets.

"Cut" below means the client stops using a connection without closing it:
the server sees nothing, keeps writing into it, and learns only from the
client's ``<resume/>`` on a new connection that those stanzas may be lost.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from tests.conftest import DOMAIN, PASSWORD, TIMEOUT, Running, wait_event
from tests.integration.test_module_api import ctx_of
from tests.integration.test_subscription import friends
from tests.rawclient import Raw
from vinespy.jid import JID
from vinespy.modules import builtin

pytestmark = pytest.mark.integration

SM = "urn:xmpp:sm:3"
BOB = f"bob@{DOMAIN}"


async def connect(srv: Running, user: str) -> Raw:
    """Authenticated, not bound (where ``<resume/>`` goes)."""
    raw = await Raw.connect(srv.port)
    await raw.secure(DOMAIN, ctx_of(srv))
    assert (await raw.plain(user, PASSWORD)).startswith(b"<success")
    raw.open_stream(DOMAIN)
    features = await raw.features()
    assert f"<sm xmlns='{SM}'/>".encode() in features or b"urn:xmpp:sm:3" in features
    return raw


async def bind(raw: Raw, resource: str, *, presence: bool = True) -> None:
    """Bind ``resource`` on ``raw`` (authenticated), then initial presence."""
    raw.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
             f"<resource>{resource}</resource></bind></iq>")
    await raw.expect(rb"<jid>")
    if presence:
        raw.send("<presence/>")


async def sm_login(srv: Running, user: str, resource: str = "r", *,
                   presence: bool = True) -> tuple[Raw, str]:
    """Bound, stream management enabled with resumption: (client, token)."""
    raw = await connect(srv, user)
    await bind(raw, resource, presence=False)
    raw.send(f"<enable xmlns='{SM}' resume='true'/>")
    m = await raw.expect(rb"<enabled [^>]*id=['\"]([^'\"]+)['\"][^>]*/>")
    if presence:
        raw.send("<presence/>")
    raw.send(f"<iq type='get' id='p0' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
    await raw.expect(rb"id=\"p0\"")
    return raw, m.group(1).decode()


async def plain_login(srv: Running, user: str, resource: str = "r") -> Raw:
    raw = Raw(*(await _open(srv)))
    await raw.login(DOMAIN, ctx_of(srv), user, PASSWORD, resource)
    return raw


async def _open(srv: Running) -> tuple[Any, Any]:
    r = await Raw.connect(srv.port)
    return r.reader, r.writer


def say(raw: Raw, to: str, body: str) -> None:
    raw.send(f"<message to='{to}' type='chat' id='{body}'><body>{body}</body></message>")


def bodies(data: bytes) -> list[str]:
    return [b.decode() for b in re.findall(rb"<body>([^<]*)</body>", data)]


async def received(raw: Raw, last: str) -> list[str]:
    """The bodies ``raw`` reads up to and including ``last``."""
    m = await raw.expect(rb"^(.*?<body>" + last.encode() + rb"</body>)")
    return bodies(m.group(1))


async def test_messages_to_a_silently_dead_connection_come_again_after_resume(
        server: Running) -> None:
    """bob handles 2 of 3 messages and acknowledges them; his connection
    dies unseen; 3 more are sent into it. On a new connection <resume h=2/>
    brings the 4 he did not acknowledge, each once, in order; the old
    connection is closed with <conflict/>."""
    await server.user("alice")
    await server.user("bob")
    alice = await plain_login(server, "alice")
    bob, token = await sm_login(server, "bob")
    for i in (1, 2, 3):
        say(alice, f"{BOB}/r", f"m{i}")
    assert await received(bob, "m3") == ["m1", "m2", "m3"]
    # What bob was sent since <enable/>: his own presence, the ping result,
    # then m1-m3.
    bob.send(f"<a xmlns='{SM}' h='4'/>")          # up to m2
    for i in (4, 5, 6):
        say(alice, f"{BOB}/r", f"m{i}")
    alice.send(f"<iq type='get' id='q' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
    await alice.expect(rb"id=\"q\"")
    assert b"<error" not in alice.buf

    again = await connect(server, "bob")
    again.send(f"<resume xmlns='{SM}' previd='{token}' h='4'/>")
    m = await again.expect(rb"<resumed [^>]*h=['\"](\d+)['\"][^>]*/>")
    assert m.group(1) == b"2"                       # bob's <presence/> and ping
    assert await received(again, "m6") == ["m3", "m4", "m5", "m6"]
    say(alice, f"{BOB}/r", "m7")
    assert await received(again, "m7") == ["m7"]     # nothing twice in between
    assert b"conflict" in await bob.until_closed()
    # Still the same session: its counters go on (2 stanzas + the ping below).
    again.send(f"<iq type='get' id='p1' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
    await again.expect(rb"id=\"p1\"")
    again.send(f"<r xmlns='{SM}'/>")
    assert (await again.expect(rb"<a [^>]*h=['\"](\d+)['\"]")).group(1) == b"3"


async def test_resume_after_the_server_saw_the_connection_drop(server: Running) -> None:
    """The TCP connection is reset: the session waits (still available to
    its contacts: no unavailable presence); messages sent meanwhile come on
    resumption."""
    await friends(server)
    alice = await plain_login(server, "alice")
    alice.send("<presence/>")
    bob, token = await sm_login(server, "bob")
    await alice.expect(rb"<presence [^>]*from=['\"]bob@")
    bob.writer.transport.abort()
    session = server.server.sessions.get(JID.parse(f"{BOB}/r"))
    assert session is not None
    say(alice, f"{BOB}/r", "away1")
    say(alice, BOB, "away2")
    again = await connect(server, "bob")
    again.send(f"<resume xmlns='{SM}' previd='{token}' h='1'/>")
    await again.expect(rb"<resumed ")
    assert await received(again, "away2") == ["away1", "away2"]
    alice.send(f"<iq type='get' id='q' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
    await alice.expect(rb"id=\"q\"")
    assert b"unavailable" not in alice.buf
    assert server.server.sessions.get(JID.parse(f"{BOB}/r")) is session


async def test_resume_with_a_wrong_id_or_of_another_users_session_fails(
        server: Running) -> None:
    await server.user("alice")
    await server.user("bob")
    bob, token = await sm_login(server, "bob")
    # Not a token; naming no resource; guessed for bob's resource "r" ("cg").
    for previd in ("nonsense", token[:-2] + "xx", "A" * 24 + ".cg"):
        c = await connect(server, "bob")
        c.send(f"<resume xmlns='{SM}' previd='{previd}' h='0'/>")
        await c.expect(rb"<failed xmlns=['\"]urn:xmpp:sm:3['\"][^>]*><item-not-found")
    thief = await connect(server, "alice")
    thief.send(f"<resume xmlns='{SM}' previd='{token}' h='0'/>")
    await thief.expect(rb"<failed [^>]*><item-not-found")
    # bob's session is untouched: it still answers.
    bob.send(f"<iq type='get' id='p9' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
    await bob.expect(rb"id=\"p9\"")


async def test_an_expired_session_cannot_be_resumed_and_its_messages_go_offline(
        make_server: Any) -> None:
    """resume_timeout passes: bob's contacts get his unavailable presence
    once, the messages he never acknowledged are in offline storage and come
    at his next login; the token then fails."""
    async with make_server(client={"resume_timeout": 1}) as srv:
        await friends(srv)
        alice = await plain_login(srv, "alice")
        alice.send("<presence/>")
        bob, token = await sm_login(srv, "bob")
        await alice.expect(rb"<presence [^>]*from=['\"]bob@")
        say(alice, f"{BOB}/r", "lost1")
        await bob.expect(rb"lost1")
        bob.writer.transport.abort()
        say(alice, f"{BOB}/r", "lost2")
        await alice.expect(rb"<presence [^>]*from=['\"]bob@[^>]*type=['\"]unavailable")
        c = await connect(srv, "bob")
        c.send(f"<resume xmlns='{SM}' previd='{token}' h='1'/>")
        await c.expect(rb"<failed [^>]*><item-not-found")
        await bind(c, "r")
        assert await received(c, "lost2") == ["lost1", "lost2"]
        alice.send(f"<iq type='get' id='q' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
        await alice.expect(rb"id=\"q\"")
        assert alice.buf.count(b"unavailable") == 0    # the one unavailable, consumed above


async def test_acknowledging_more_than_was_sent_ends_the_stream(server: Running) -> None:
    await server.user("bob")
    bob, _ = await sm_login(server, "bob")
    bob.send(f"<a xmlns='{SM}' h='5'/>")
    closed = await bob.until_closed()
    assert b"<undefined-condition" in closed
    assert re.search(rb"<handled-count-too-high xmlns=['\"]urn:xmpp:sm:3['\"] h=['\"]5['\"] "
                     rb"send-count=['\"]2['\"]", closed), closed    # own presence, ping result


async def test_enable_before_bind_or_twice_fails(server: Running) -> None:
    await server.user("bob")
    c = await connect(server, "bob")
    c.send(f"<enable xmlns='{SM}'/>")
    await c.expect(rb"<failed [^>]*><unexpected-request")
    bob, _ = await sm_login(server, "bob", "two")
    bob.send(f"<enable xmlns='{SM}'/>")
    await bob.expect(rb"<failed [^>]*><unexpected-request")


async def test_a_clean_close_ends_the_session(server: Running) -> None:
    """</stream:stream> from the client: no resumption (XEP-0198 §5)."""
    await server.user("bob")
    bob, token = await sm_login(server, "bob")
    bob.send("</stream:stream>")
    # The server's last word: how many of bob's stanzas it handled (his
    # presence and the ping), then the end of its stream.
    assert re.search(rb"<a xmlns=['\"]urn:xmpp:sm:3['\"] h=['\"]2['\"]/></stream:stream>",
                     await bob.until_closed())
    c = await connect(server, "bob")
    c.send(f"<resume xmlns='{SM}' previd='{token}' h='0'/>")
    await c.expect(rb"<failed [^>]*><item-not-found")


async def test_slixmpp_enables_acks_and_resumes(server: Running) -> None:
    """A real client library (slixmpp's xep_0198): it enables with
    resumption, acknowledges as it goes, and after its connection drops
    resumes and gets what was sent meanwhile, each message once."""
    await server.user("alice")
    await server.user("bob")
    alice = await plain_login(server, "alice")
    bob = server.client(BOB, plugins=("xep_0198",))
    bob.plugin["xep_0198"].window = bob.plugin["xep_0198"].window_counter = 2   # <r/> every 2
    got: list[str] = []
    bob.add_event_handler("message", lambda m: got.append(str(m["body"])))
    enabled = asyncio.ensure_future(wait_event(bob, "sm_enabled"))
    bob.connect("127.0.0.1", server.port)
    await enabled
    bob.send_presence()
    say(alice, BOB, "first")
    await wait_event(bob, "message", match=lambda m: m["body"] == "first")
    acked = asyncio.ensure_future(wait_event(bob, "stanza_acked"))
    bob.send_presence(pstatus="here")            # its second stanza: it asks, we answer
    await acked
    gone = asyncio.ensure_future(wait_event(bob, "disconnected"))
    bob.abort()
    await gone
    say(alice, BOB, "while-away-1")
    say(alice, f"{BOB}/{bob.boundjid.resource}", "while-away-2")
    alice.send(f"<iq type='get' id='q' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
    await alice.expect(rb"id=\"q\"")
    assert b"<error" not in alice.buf
    resumed = asyncio.ensure_future(wait_event(bob, "session_resumed"))
    last = asyncio.ensure_future(wait_event(bob, "message",
                                            match=lambda m: m["body"] == "while-away-2"))
    bob.connect("127.0.0.1", server.port)
    await resumed
    await last
    say(alice, BOB, "after")
    await wait_event(bob, "message", match=lambda m: m["body"] == "after")
    assert got == ["first", "while-away-1", "while-away-2", "after"]


async def test_a_burst_beyond_max_unacked_is_asked_for_not_fatal(make_server: Any) -> None:
    """More stanzas than max_unacked in one go: the server asks at once
    (<r/>) instead of waiting, and the session survives the answer."""
    async with make_server(client={"max_unacked": 10}) as srv:
        await srv.user("alice")
        await srv.user("bob")
        alice = await plain_login(srv, "alice")
        bob, _ = await sm_login(srv, "bob")
        for i in range(15):
            say(alice, f"{BOB}/r", f"b{i}")
        got = await bob.expect(rb"^(.*?<body>b14</body>)")
        assert bodies(got.group(1)) == [f"b{i}" for i in range(15)]
        # Asked for once past the limit: among the messages when their
        # delivery is spread out (each is archived first, XEP-0313), or after.
        ask = rb"<r xmlns=['\"]urn:xmpp:sm:3['\"]/>"
        if not re.search(ask, got.group(1)):
            await bob.expect(ask)
        bob.send(f"<a xmlns='{SM}' h='17'/>")      # own presence, ping result, b0-b14
        bob.send(f"<iq type='get' id='p1' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
        await bob.expect(rb"id=\"p1\"")


async def test_a_waiting_session_past_max_unacked_ends_into_offline_storage(
        make_server: Any) -> None:
    async with make_server(client={"max_unacked": 10}) as srv:
        await srv.user("alice")
        await srv.user("bob")
        alice = await plain_login(srv, "alice")
        bob, token = await sm_login(srv, "bob")
        bob.send(f"<a xmlns='{SM}' h='2'/>")
        bob.writer.transport.abort()
        full = JID.parse(f"{BOB}/r")
        for i in range(12):
            say(alice, f"{BOB}/r", f"o{i}")
        alice.send(f"<iq type='get' id='q' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
        await alice.expect(rb"id=\"q\"")
        c = await connect(srv, "bob")
        c.send(f"<resume xmlns='{SM}' previd='{token}' h='2'/>")
        await c.expect(rb"<failed [^>]*><item-not-found")
        assert srv.server.sessions.get(full) is None
        await bind(c, "r")
        assert await received(c, "o11") == [f"o{i}" for i in range(12)]


async def bodies_until(raw: Raw, lasts: set[str]) -> list[str]:
    """The bodies ``raw`` reads until it has read each of ``lasts``."""
    got: list[str] = []
    while not lasts <= set(got):
        got.append((await raw.expect(rb"<body>([^<]*)</body>")).group(1).decode())
    return got


RACERS = 30         # messages per sender that race the session's end


async def test_messages_racing_the_end_of_a_waiting_session_stay_in_order(
        make_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """bob's session waits for him (max_unacked 10); alice's messages to
    bob/r past that end it. Made deterministic: the storing of its queue
    (``give_up``) is held while alice (to bob/r) and carol (to bob's bare
    JID: bob/r is his one available resource) send 30 more each, each
    archived (XEP-0313) first. The session stays bound until its queue is
    stored, so these join its queue: bob's next session gets every message
    once, in each sender's order (RFC 6120 §10.1). Before, the session left
    the routing table first, and these were stored ahead of its queue."""
    async with make_server(client={"max_unacked": 10}) as srv:
        for user in ("alice", "bob", "carol"):
            await srv.user(user)
        alice = await plain_login(srv, "alice")
        carol = await plain_login(srv, "carol")
        bob, token = await sm_login(srv, "bob")
        full = JID.parse(f"{BOB}/r")
        host = srv.server.hosts[DOMAIN]
        sm_mod = host.module("sm")
        waits, entered, release = asyncio.Event(), asyncio.Event(), asyncio.Event()
        real_wait, real_give_up = sm_mod.wait, sm_mod.give_up

        def wait(session: Any, st: Any) -> None:
            real_wait(session, st)
            waits.set()

        async def held_give_up(*args: Any, **kw: Any) -> None:
            if not entered.is_set():
                entered.set()                       # the session ends: held at once
                await release.wait()
            await real_give_up(*args, **kw)
        monkeypatch.setattr(sm_mod, "wait", wait)
        monkeypatch.setattr(sm_mod, "give_up", held_give_up)
        bob.writer.transport.abort()
        await asyncio.wait_for(waits.wait(), TIMEOUT)       # no connection, waiting
        for i in range(11):                                 # at most 10 kept
            say(alice, f"{BOB}/r", f"a{i}")
        await asyncio.wait_for(entered.wait(), TIMEOUT)     # ended: its queue to be stored
        for raw, to, p, first in ((alice, f"{BOB}/r", "a", 11), (carol, BOB, "c", 0)):
            raw.send("".join(f"<message to='{to}' type='chat' id='{p}{i}'>"
                             f"<body>{p}{i}</body></message>"
                             for i in range(first, first + RACERS)))
            raw.send(f"<iq type='get' id='q' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
        for raw in (alice, carol):
            assert b"<error" not in (await raw.expect(rb"^.*?id=\"q\"")).group(0)
        release.set()
        c = await connect(srv, "bob")
        c.send(f"<resume xmlns='{SM}' previd='{token}' h='0'/>")
        await c.expect(rb"<failed [^>]*><item-not-found")
        assert srv.server.sessions.get(full) is None
        await bind(c, "r")
        got = await bodies_until(c, {f"a{10 + RACERS}", f"c{RACERS - 1}"})
        assert [b for b in got if b[0] == "a"] == [f"a{i}" for i in range(11 + RACERS)]
        assert [b for b in got if b[0] == "c"] == [f"c{i}" for i in range(RACERS)]
        c.send(f"<iq type='get' id='p' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
        assert bodies((await c.expect(rb"^.*?id=\"p\"")).group(0)) == []      # none twice


async def test_with_resumption_off_resume_is_not_implemented(make_server: Any) -> None:
    async with make_server(client={"resume_timeout": 0}) as srv:
        await srv.user("bob")
        raw = await connect(srv, "bob")
        await bind(raw, "r", presence=False)
        raw.send(f"<enable xmlns='{SM}' resume='true'/>")
        enabled = (await raw.expect(rb"<enabled[^>]*/>")).group(0)
        assert b"resume" not in enabled and b"id=" not in enabled
        c = await connect(srv, "bob")
        c.send(f"<resume xmlns='{SM}' previd='x.cg' h='0'/>")
        await c.expect(rb"<failed [^>]*><feature-not-implemented")


async def test_an_expired_sessions_messages_are_not_repeated_to_a_resource_with_carbons(
        make_server: Any) -> None:
    """bob/laptop (carbons on) got a copy of each message to bob/phone; when
    bob/phone's session expires unacknowledged, the laptop does not get them
    again; bob/tablet (no carbons) gets them from offline storage."""
    async with make_server(client={"resume_timeout": 1}) as srv:
        await srv.user("alice")
        await srv.user("bob")
        alice = await plain_login(srv, "alice")
        laptop, _ = await sm_login(srv, "bob", "laptop")
        laptop.send("<iq type='set' id='c'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
        await laptop.expect(rb"id=\"c\"")
        phone, _ = await sm_login(srv, "bob", "phone")
        say(alice, f"{BOB}/phone", "once")
        # After it in the phone's queue: an IQ request, which the expiry
        # answers with an error (so the test sees the queue handled).
        alice.send(f"<iq type='get' id='v' to='{BOB}/phone'><query xmlns='jabber:iq:version'/>"
                   "</iq>")
        await phone.expect(rb"id=\"v\"")
        await laptop.expect(rb"<received xmlns=['\"]urn:xmpp:carbons:2['\"]>.*?<body>once</body>")
        phone.writer.transport.abort()
        await alice.expect(rb"<iq (?=[^>]*id=\"v\")[^>]*type=\"error\".*?<service-unavailable")
        say(alice, f"{BOB}/laptop", "probe")
        assert await received(laptop, "probe") == ["probe"]        # not "once" again
        assert await srv.storage.get(JID.parse(BOB), "offline") in (None, [])


async def test_a_host_without_the_module_offers_no_stream_management(make_server: Any) -> None:
    """Left out of a host's modules: no <sm/> feature, and <enable/> ends the
    stream as any unknown nonza does (RFC 6120 §4.9.3.22)."""
    mods = [m for m in builtin() if m != "sm"]
    async with make_server(host={"modules": mods}) as srv:
        await srv.user("bob")
        raw = await Raw.connect(srv.port)
        await raw.secure(DOMAIN, ctx_of(srv))
        assert (await raw.plain("bob", PASSWORD)).startswith(b"<success")
        raw.open_stream(DOMAIN)
        assert SM.encode() not in await raw.features()
        raw.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
        await raw.expect(rb"<jid>")
        raw.send(f"<enable xmlns='{SM}' resume='true'/>")
        assert b"<unsupported-stanza-type" in await raw.until_closed()
