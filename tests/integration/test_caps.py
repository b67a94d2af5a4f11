"""XEP-0115 on the server (vinespy/modules/caps.py) with real clients:
slixmpp's xep_0115 (which sends hashed caps and answers disco#info for
``node#ver``) and raw clients that lie, answer with an error or say
nothing. The server runs in the test's process, so its caps module is
asked directly; ``caps-known`` is watched by a small module of the test's.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import pytest
import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import StanzaPath

from tests.conftest import DOMAIN, PASSWORD, TIMEOUT, Running
from tests.rawclient import Raw
from vinespy import ns
from vinespy.jid import JID
from vinespy.modules import Module, builtin, hook
from vinespy.modules.caps import Caps
from vinespy.modules.iqdispatch import RequestError
from vinespy.rules.caps import CAPS
from vinespy.sessions import Session
from vinespy.xml import child, stanza

pytestmark = pytest.mark.integration

DISCO = "http://jabber.org/protocol/disco#info"
NOTIFY = "urn:xmpp:avatar:metadata+notify"
# XEP-0115 §5.2's client: its disco#info and the 'ver' it hashes to.
EXODUS = "http://code.google.com/p/exodus"
EXODUS_VER = "QgayPKawpkPSDYmwT/WM94uAlu0="
EXODUS_FEATURES = ("http://jabber.org/protocol/caps", "http://jabber.org/protocol/disco#info",
                   "http://jabber.org/protocol/disco#items", "http://jabber.org/protocol/muc")


class CapsWatch(Module):
    """Records each ``caps-known`` with the features ``features()`` gives then."""

    name = "capswatch"

    def __init__(self, host: Any) -> None:
        super().__init__(host)
        self.seen: dict[str, asyncio.Queue[frozenset[str] | None]] = {}

    def queue(self, jid: str) -> asyncio.Queue[frozenset[str] | None]:
        return self.seen.setdefault(jid, asyncio.Queue())

    @hook("caps-known")
    async def known(self, session: Session) -> None:
        features = await self.host.module("caps").client_features(session)
        self.queue(str(session.jid)).put_nowait(features)

    async def wait(self, jid: str) -> frozenset[str] | None:
        return await asyncio.wait_for(self.queue(jid).get(), TIMEOUT)


HOST = {"modules": [*builtin(), "capswatch"]}


def modules(srv: Running) -> tuple[Caps, CapsWatch]:
    host = srv.server.hosts[DOMAIN]
    return host.module("caps"), host.module("capswatch")


async def caps_client(srv: Running, jid: str, feature: str | None = NOTIFY
                      ) -> tuple[slixmpp.ClientXMPP, list[Any]]:
    """A slixmpp client with XEP-0115 (and ``feature`` added to its disco#info),
    logged in with initial presence; the disco#info requests it receives."""
    c = srv.client(jid, plugins=("xep_0115",))
    queries: list[Any] = []
    c.register_handler(Callback("caps queries", StanzaPath("iq@type=get/disco_info"),
                                queries.append))
    started = asyncio.get_running_loop().create_future()
    c.add_event_handler("session_start", lambda _: started.done() or started.set_result(1))
    c.connect("127.0.0.1", srv.port)
    await asyncio.wait_for(started, TIMEOUT)
    if feature is not None:
        await c.plugin["xep_0030"].add_feature(feature)
    await c.plugin["xep_0115"].update_caps(broadcast=False)
    c.send_presence()
    return c, queries


def session_of(srv: Running, full: str) -> Session:
    session = srv.server.sessions.get(JID.parse(full))
    assert session is not None, full
    return session


async def test_a_client_is_asked_once_and_the_same_caps_never_again(make_server: Any) -> None:
    """alice's client sends caps; the server asks it for node#ver once,
    verifies, and knows its features (with the +notify PEP filters on). bob's
    client with the same caps is not asked: the verified answer is kept."""
    async with make_server(host=HOST) as srv:
        caps, watch = modules(srv)
        alice = await srv.user("alice")
        bob = await srv.user("bob")
        a, a_queries = await caps_client(srv, f"{alice}/phone")
        features = await watch.wait(f"{alice}/phone")
        assert features is not None and NOTIFY in features
        assert "http://jabber.org/protocol/caps" in features
        ver = await a.plugin["xep_0115"].get_verstring()
        assert [q["disco_info"]["node"] for q in a_queries] == [
            f"{a.plugin['xep_0115'].caps_node}#{ver}"]
        assert a_queries[0]["from"] == DOMAIN
        session = session_of(srv, f"{alice}/phone")
        assert caps.client_features_cached(session) == features
        assert await caps.client_features(session) == features
        assert caps.caps_of(session).ver == ver          # type: ignore[union-attr]

        b, b_queries = await caps_client(srv, f"{bob}/desk")
        assert await watch.wait(f"{bob}/desk") == features
        assert b_queries == [] and len(a_queries) == 1


async def test_new_caps_are_asked_for_and_announced_again(make_server: Any) -> None:
    """A presence repeating the caps is not news; new caps (a feature added)
    are asked for and announced; a presence without caps makes them unknown."""
    async with make_server(host=HOST) as srv:
        caps, watch = modules(srv)
        alice = await srv.user("alice")
        full = f"{alice}/phone"
        a, queries = await caps_client(srv, full, feature=None)
        before = await watch.wait(full)
        assert before is not None and NOTIFY not in before
        a.send_presence(pstatus="away")                 # the same caps again
        await a.plugin["xep_0030"].add_feature(NOTIFY)
        await a.plugin["xep_0115"].update_caps(broadcast=False)
        a.send_presence()
        after = await watch.wait(full)
        assert after == before | {NOTIFY}
        assert len(queries) == 2 and watch.queue(full).empty()


async def test_a_presence_without_caps_makes_them_unknown(make_server: Any) -> None:
    async with make_server(host=HOST) as srv:
        caps, watch = modules(srv)
        alice = await srv.user("alice")
        raw, rid = await raw_with_caps(srv, alice, "r")
        raw.send(answer(rid))
        assert await watch.wait(f"{alice}/r") == frozenset(EXODUS_FEATURES)
        session = session_of(srv, f"{alice}/r")
        raw.send("<presence><show>away</show></presence>")
        await ping(raw)
        assert caps.client_features_cached(session) is None
        assert await caps.client_features(session) is None


def ctx_of(srv: Running) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    srv.ca.configure_trust(ctx)
    return ctx


async def ping(raw: Raw, pid: str = "p") -> None:
    """A round trip: what ``raw`` sent before is processed."""
    raw.send(f"<iq type='get' id='{pid}' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
    await raw.expect(rf"<iq[^>]*id=\"{pid}\"".encode())


async def raw_with_caps(srv: Running, user: str, resource: str,
                        ver: str = EXODUS_VER) -> tuple[Raw, str]:
    """A raw client sending XEP-0115 §5.2's caps; the id of the query it gets."""
    raw = await Raw.connect(srv.port)
    await raw.login(DOMAIN, ctx_of(srv), user, PASSWORD, resource)
    raw.send(f"<presence><c xmlns='{CAPS}' hash='sha-1' node='{EXODUS}' ver='{ver}'/>"
             "</presence>")
    m = await raw.expect(rb"<iq [^>]*>\s*<query [^>]*/?>")
    head = m.group(0).decode()
    assert "type=\"get\"" in head and DISCO in head and f'node="{EXODUS}#{ver}"' in head, head
    rid = head.split(' id="', 1)[1].split('"', 1)[0]
    return raw, rid


def answer(rid: str, features: tuple[str, ...] = EXODUS_FEATURES) -> str:
    feats = "".join(f"<feature var='{f}'/>" for f in features)
    return (f"<iq type='result' id='{rid}' to='{DOMAIN}'><query xmlns='{DISCO}' "
            f"node='{EXODUS}#{EXODUS_VER}'><identity category='client' type='pc' "
            f"name='Exodus 0.9.1'/>{feats}</query></iq>")


async def learnt(caps: Caps, session: Session) -> None:
    """Wait until the server is done with ``session``'s caps (its task ended)."""
    task = Caps.task.get(session)
    if task is not None:
        await asyncio.wait_for(asyncio.shield(task), TIMEOUT)


async def test_a_client_that_lies_is_neither_trusted_nor_cached(make_server: Any) -> None:
    """A client answers for §5.2's 'ver' with one feature more (a +notify it
    would get notifications for): it does not hash to 'ver', so it is not
    kept and its caps stay unknown. The next client with those caps is asked
    in turn, answers truly, and is trusted; the liar's caps then stand for
    that true answer, never for its lie."""
    async with make_server(host=HOST) as srv:
        caps, watch = modules(srv)
        mallory = await srv.user("mallory")
        liar, rid = await raw_with_caps(srv, mallory, "liar")
        session = session_of(srv, f"{mallory}/liar")
        liar.send(answer(rid, EXODUS_FEATURES + (NOTIFY,)))
        await learnt(caps, session)
        assert await caps.client_features(session) is None
        assert caps.node.get(("sha-1", EXODUS_VER)) is None
        assert watch.queue(f"{mallory}/liar").empty()
        # Its next presence with the same caps: not asked again.
        liar.send(f"<presence><show>away</show><c xmlns='{CAPS}' hash='sha-1' "
                  f"node='{EXODUS}' ver='{EXODUS_VER}'/></presence>")
        await ping(liar)
        assert b"disco#info" not in liar.buf

        honest, rid2 = await raw_with_caps(srv, mallory, "honest")
        honest.send(answer(rid2))
        assert await watch.wait(f"{mallory}/honest") == frozenset(EXODUS_FEATURES)
        # The liar's caps name that content now: what it claimed is not believed.
        assert await caps.client_features(session) == frozenset(EXODUS_FEATURES)


async def test_an_error_answer_leaves_caps_unknown(make_server: Any) -> None:
    async with make_server(host=HOST) as srv:
        caps, _ = modules(srv)
        alice = await srv.user("alice")
        raw, rid = await raw_with_caps(srv, alice, "r")
        raw.send(f"<iq type='error' id='{rid}' to='{DOMAIN}'><query xmlns='{DISCO}'/>"
                 "<error type='cancel'><item-not-found "
                 "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")
        session = session_of(srv, f"{alice}/r")
        await learnt(caps, session)
        assert await caps.client_features(session) is None
        assert not srv.server.hosts[DOMAIN].module("iq")._pending


async def test_a_spoofed_answer_does_not_count(make_server: Any) -> None:
    """bob sends a (lying) result with the id of the query sent to alice: it
    is not hers, so it completes nothing; alice's own true answer does."""
    async with make_server(host=HOST) as srv:
        caps, watch = modules(srv)
        alice = await srv.user("alice")
        bob = await srv.user("bob")
        raw, rid = await raw_with_caps(srv, alice, "r")
        spoofer = await Raw.connect(srv.port)
        await spoofer.login(DOMAIN, ctx_of(srv), bob, PASSWORD, "s")
        spoofer.send(answer(rid, EXODUS_FEATURES + (NOTIFY,)))
        await ping(spoofer)
        assert watch.queue(f"{alice}/r").empty()
        raw.send(answer(rid))
        assert await watch.wait(f"{alice}/r") == frozenset(EXODUS_FEATURES)


async def test_a_client_that_does_not_answer_times_out_harmlessly(make_server: Any) -> None:
    """No answer within the timeout: the caps stay unknown, nothing waits
    any more, and the client's stream goes on."""
    extra = "[host.options.caps]\ntimeout = 1\n"
    async with make_server(host=HOST, extra=extra) as srv:
        caps, _ = modules(srv)
        alice = await srv.user("alice")
        raw, _ = await raw_with_caps(srv, alice, "r")
        session = session_of(srv, f"{alice}/r")
        await learnt(caps, session)
        assert await caps.client_features(session) is None
        assert Caps.failed.get(session) is not None
        assert not srv.server.hosts[DOMAIN].module("iq")._pending
        await ping(raw)


async def test_legacy_caps_are_unknown_and_not_asked_for(make_server: Any) -> None:
    async with make_server(host=HOST) as srv:
        caps, _ = modules(srv)
        alice = await srv.user("alice")
        raw = await Raw.connect(srv.port)
        await raw.login(DOMAIN, ctx_of(srv), alice, PASSWORD, "old")
        raw.send(f"<presence><c xmlns='{CAPS}' node='{EXODUS}' ver='0.9' ext='x'/></presence>")
        await ping(raw)
        session = session_of(srv, f"{alice}/old")
        assert Caps.task.get(session) is None and b"disco#info" not in raw.buf
        assert await caps.client_features(session) is None


async def test_the_server_does_not_claim_caps_optimization(server: Running) -> None:
    """XEP-0115, "Caps Optimization": a server advertising the caps feature promises to
    strip and re-add <c/>; this one forwards presence as sent."""
    alice = await server.user("alice")
    c = await server.login(alice)
    info = await c.plugin["xep_0030"].get_info(jid=DOMAIN, timeout=TIMEOUT)
    assert CAPS not in info["disco_info"]["features"]


async def test_server_requests_are_bounded_and_end_with_their_recipient(make_server: Any) -> None:
    """The iq module's requests (what caps asks with): at most max_pending
    wait per recipient, a result completes its own, and the recipient
    going away ends the rest (recipient-unavailable); nothing is left."""
    async with make_server(extra="[host.options.iq]\nmax_pending = 2\n") as srv:
        iq = srv.server.hosts[DOMAIN].module("iq")
        alice = await srv.user("alice")
        raw = await Raw.connect(srv.port)
        await raw.login(DOMAIN, ctx_of(srv), alice, PASSWORD, "r")

        def ping_request() -> Any:
            st = stanza("iq", to=f"{alice}/r", type="get")
            child(st, ns.PING, "ping")
            return st
        first, second = (asyncio.create_task(iq.request(ping_request(), TIMEOUT))
                         for _ in range(2))
        ids = [(await raw.expect(rb'<iq [^>]*id="([0-9a-f]+)"[^>]*>\s*<ping')).group(1)
               for _ in range(2)]
        with pytest.raises(RequestError) as refused:
            await iq.request(ping_request(), TIMEOUT)
        assert refused.value.condition == "resource-constraint"
        # The two requests are routed concurrently: either may be on the
        # wire first. The answer to the first seen completes its own only.
        raw.send(f"<iq type='result' id='{ids[0].decode()}' to='{DOMAIN}'/>")
        done, _ = await asyncio.wait({first, second}, timeout=TIMEOUT,
                                     return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1, "one answer completes one request"
        answered = done.pop()
        answer = answered.result()
        assert answer.get("type") == "result" and answer.get("from") == f"{alice}/r"
        assert answer.get("id") == ids[0].decode()
        other = second if answered is first else first
        assert not other.done()
        raw.close()
        with pytest.raises(RequestError) as gone:
            await asyncio.wait_for(other, TIMEOUT)
        assert gone.value.condition == "recipient-unavailable"
        assert not iq._pending and not iq._per_target


async def test_new_caps_per_session_are_limited(make_server: Any) -> None:
    """A client minting a new 'ver' at every presence: with max_new 3 the
    server takes up three (asks for them) and leaves the fourth and fifth
    unknown (not asked, no task); caps it knows already are still known."""
    import base64
    import hashlib
    extra = "[host.options.caps]\nmax_new = 3\nnew_window = 3600\n"
    async with make_server(host=HOST, extra=extra) as srv:
        _, watch = modules(srv)
        alice = await srv.user("alice")
        asked: asyncio.Queue[Any] = asyncio.Queue()
        c, queries = await caps_client(srv, f"{alice}/phone")
        c.register_handler(Callback("count", StanzaPath("iq@type=get/disco_info"),
                                    asked.put_nowait))
        real = await watch.wait(f"{alice}/phone")                # query 1, verified
        assert real is not None and len(queries) == 1
        while not asked.empty():
            asked.get_nowait()
        ver = await c.plugin["xep_0115"].get_verstring()
        node = c.plugin["xep_0115"].caps_node
        session = session_of(srv, f"{alice}/phone")

        def presence(v: str) -> None:
            c.send_raw(f"<presence><c xmlns='{CAPS}' hash='sha-1' node='{node}' "
                       f"ver='{v}'/></presence>")

        made_up = [base64.b64encode(hashlib.sha1(str(i).encode()).digest()).decode()
                   for i in range(4)]
        for v in made_up[:2]:                                   # queries 2 and 3
            presence(v)
            q = await asyncio.wait_for(asked.get(), TIMEOUT)
            assert q["disco_info"]["node"] == f"{node}#{v}"
        for v in made_up[2:]:                                   # not asked
            presence(v)
            await c.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)
            assert Caps.noted.get(session).ver == v            # type: ignore[union-attr]
            assert Caps.task.get(session) is None
        presence(ver)                                           # known: not counted
        assert await watch.wait(f"{alice}/phone") == real
        await c.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)
        assert asked.empty() and len(queries) == 3
