"""XEP-0198 resumption on another node: a session moves, with what its
client did not acknowledge, to the node the client reconnects to (raw
clients: the tests cut connections without the server seeing it).

"Cut" means the client stops using a connection without closing it: the
node holding it keeps writing into it and learns only from the handover
that those stanzas may be lost.
"""

from __future__ import annotations

from typing import Any

import re
import ssl

import pytest

from tests.cluster.conftest import Cluster, ClusterFactory, Node, Site, eventually
from tests.conftest import DOMAIN, PASSWORD
from tests.integration.test_sm import SM, bind, bodies, received, say
from tests.rawclient import Raw

pytestmark = [pytest.mark.integration, pytest.mark.redis]

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
CAROL = f"carol@{DOMAIN}"


def ctx(site: Site) -> ssl.SSLContext:
    c = ssl.create_default_context()
    site.ca.configure_trust(c)
    return c


async def connect(site: Site, node: Node, user: str) -> Raw:
    """Authenticated on ``node``, not bound."""
    raw = await Raw.connect(node.port, host=node.address)
    await raw.secure(DOMAIN, ctx(site))
    assert (await raw.plain(user, PASSWORD)).startswith(b"<success")
    raw.open_stream(DOMAIN)
    await raw.features()
    return raw


async def login(site: Site, node: Node, user: str, resource: str = "r", *,
                sm: bool = False) -> tuple[Raw, str]:
    """Bound on ``node`` with initial presence (and stream management with
    resumption when ``sm``): (client, token or "")."""
    raw = await connect(site, node, user)
    await bind(raw, resource, presence=False)
    token = ""
    if sm:
        raw.send(f"<enable xmlns='{SM}' resume='true'/>")
        token = (await raw.expect(rb"<enabled [^>]*id=['\"]([^'\"]+)['\"]")).group(1).decode()
    raw.send("<presence/>")
    await ping(raw)
    return raw, token


async def ping(raw: Raw, id: str = "p0") -> None:
    raw.send(f"<iq type='get' id='{id}' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
    await raw.expect(rb"id=\"" + id.encode() + rb"\"")


async def resume(site: Site, node: Node, token: str, h: int) -> tuple[Raw, int]:
    """``<resume/>`` on ``node``: (the new connection, the h it answered)."""
    raw = await connect(site, node, "bob")
    raw.send(f"<resume xmlns='{SM}' previd='{token}' h='{h}'/>")
    m = await raw.expect(rb"<(resumed|failed)[^>]*>")
    assert m.group(1) == b"resumed", m.group(0) + raw.buf
    h = re.search(rb"h=['\"](\d+)['\"]", m.group(0))
    assert h is not None, m.group(0)
    return raw, int(h.group(1))


async def on_node(c: Cluster, full: str, node: Node) -> None:
    await c.wait_route(full, match=lambda e: e["node"] == node.name)


async def test_a_session_resumes_on_the_other_node_with_nothing_lost_or_twice(
        cluster: ClusterFactory, site: Site) -> None:
    """bob (SM) on node 0 acknowledges 2 of 3 messages from alice (node 1);
    his connection dies unseen and 3 more are sent into it. He resumes on
    node 1: the 4 unacknowledged come once each, in order, and then what
    alice and carol (node 0, whose cached route still says node 0) send;
    the old connection is closed with <conflict/>. Then back to node 0."""
    c = await cluster(2)
    alice, _ = await login(site, c[1], "alice")
    carol, _ = await login(site, c[0], "carol")
    bob, token = await login(site, c[0], "bob", sm=True)
    carol.send(f"<message to='{BOB}/r' type='chat'><body>warm</body></message>")
    assert await received(bob, "warm") == ["warm"]     # carol's node knows bob's route
    for i in (1, 2, 3):
        say(alice, f"{BOB}/r", f"m{i}")
    assert await received(bob, "m3") == ["m1", "m2", "m3"]
    # Sent to bob since <enable/>: his presence, the ping result, warm, m1, m2, m3.
    bob.send(f"<a xmlns='{SM}' h='5'/>")             # up to m2
    await ping(bob, "p1")
    for i in (4, 5, 6):
        say(alice, f"{BOB}/r", f"m{i}")
    assert await received(bob, "m6") == ["m4", "m5", "m6"]     # into the dead connection

    again, h = await resume(site, c[1], token, 5)
    assert h == 3                                   # bob's presence and two pings
    assert await received(again, "m6") == ["m3", "m4", "m5", "m6"]
    assert b"conflict" in await bob.until_closed()
    await on_node(c, f"{BOB}/r", c[1])
    carol.send(f"<message to='{BOB}/r' type='chat'><body>c1</body></message>")
    assert await received(again, "c1") == ["c1"]
    say(alice, f"{BOB}/r", "a1")
    assert await received(again, "a1") == ["a1"]
    # The counters went on: it is the same session.
    again.send(f"<r xmlns='{SM}'/>")
    assert (await again.expect(rb"<a [^>]*h=['\"](\d+)['\"]")).group(1) == b"3"

    # Once more, back to node 0, this time after the TCP connection dropped.
    again.send(f"<a xmlns='{SM}' h='11'/>")          # everything so far
    await ping(again, "p2")                          # h: 12 with its result
    again.writer.transport.abort()
    say(alice, f"{BOB}/r", "back1")
    third, h = await resume(site, c[0], token, 12)
    assert h == 4
    assert await received(third, "back1") == ["back1"]
    await on_node(c, f"{BOB}/r", c[0])
    say(alice, f"{BOB}/r", "back2")
    assert await received(third, "back2") == ["back2"]
    assert not re.search(rb"<body>(m\d|a1|c1)</body>", third.buf)


async def test_contacts_see_no_change_when_a_session_moves(
        cluster: ClusterFactory, site: Site) -> None:
    """A session handed over keeps its presence: its contacts get neither
    unavailable nor a new available, and a probe still finds it."""
    c = await cluster(2)
    await site.befriend(ALICE, BOB)
    alice, _ = await login(site, c[1], "alice")
    bob, token = await login(site, c[0], "bob", sm=True)
    await alice.expect(rb"<presence [^>]*from=['\"]bob@")
    bob.writer.transport.abort()
    again, _ = await resume(site, c[1], token, 2)
    await on_node(c, f"{BOB}/r", c[1])
    await ping(alice, "q1")
    assert b"presence" not in alice.buf
    fresh = await connect(site, c[0], "alice")
    await bind(fresh, "two")                        # its presence probes bob: node 1 answers
    await fresh.expect(rb"<presence [^>]*from=['\"]bob@wonderland.lit/r['\"]")


async def test_resuming_an_unknown_or_expired_session_elsewhere_fails(
        cluster: ClusterFactory, site: Site) -> None:
    """resume_timeout passes on node 0: bob's unacknowledged message is in
    offline storage, the resumption on node 1 fails, a new session gets it."""
    c = await cluster(2, client={"resume_timeout": 1})
    alice, _ = await login(site, c[1], "alice")
    bob, token = await login(site, c[0], "bob", sm=True)
    say(alice, f"{BOB}/r", "kept")
    await bob.expect(rb"kept")
    bob.writer.transport.abort()
    await c.wait_no_route(f"{BOB}/r")
    raw = await connect(site, c[1], "bob")
    raw.send(f"<resume xmlns='{SM}' previd='{token}' h='0'/>")
    await raw.expect(rb"<failed [^>]*><item-not-found")
    await bind(raw, "r")
    assert await received(raw, "kept") == ["kept"]
    assert bodies(raw.buf) == []


async def test_what_a_waiting_session_kept_survives_its_node(
        cluster: ClusterFactory, site: Site) -> None:
    """bob's connection to node 0 drops; alice's messages to him wait there
    (and in Redis). Node 0 is killed: node 1 cleans up after it, bob's
    contacts get his unavailable presence, and the messages he never
    acknowledged are in offline storage for his next login, on node 1."""
    c = await cluster(2)
    await site.befriend(ALICE, BOB)
    alice, _ = await login(site, c[1], "alice")
    bob, token = await login(site, c[0], "bob", sm=True)
    await alice.expect(rb"<presence [^>]*from=['\"]bob@")
    say(alice, f"{BOB}/r", "seen")
    await bob.expect(rb"seen")                     # received, never acknowledged
    bob.writer.transport.abort()
    say(alice, f"{BOB}/r", "w1")
    say(alice, BOB, "w2")

    async def kept() -> bool:
        last = await c.redis.execute("LRANGE", f"cluster:kept:{token}", -1, -1)
        return bool(last) and "<body>w2</body>" in last[0]
    await eventually(kept, what="what bob's waiting session keeps, in Redis")

    async def confirmed() -> bool:
        """Node 0 confirmed every entry node 1 sent it. Until then node 1
        would re-route them at the cleanup as well (at least once, not at
        most: docs/cluster.md), and bob would get them twice."""
        def pairs(flat: Any) -> dict[str, str]:
            return dict(flat) if isinstance(flat, dict) else dict(zip(flat[::2], flat[1::2]))
        sent = [pairs(f) for _, f in await c.redis.execute(
            "XREVRANGE", f"cluster:inbox:{c[0].name}", "+", "-", "COUNT", "100")]
        last = max((int(f["q"]) for f in sent if f.get("n") == c[1].name), default=0)
        acks = pairs(await c.redis.execute("HGETALL", f"cluster:acks:{c[0].name}"))
        done = [int(v.rstrip("!")) for k, v in acks.items() if k.startswith(f"{c[1].name}/")]
        return last > 0 and bool(done) and max(done) >= last
    await eventually(confirmed, what="node 0 to confirm what node 1 sent it")
    c[0].sigkill()
    await alice.expect(rb"<presence (?=[^>]*from=['\"]bob@)[^>]*type=['\"]unavailable")
    again = await connect(site, c[1], "bob")
    await bind(again, "new")
    assert await received(again, "w2") == ["seen", "w1", "w2"]
    assert int(await c.redis.execute("EXISTS", f"cluster:kept:{token}")) == 0


RACERS = 40         # messages per sender that race the session's end


async def test_messages_racing_the_end_of_a_waiting_session_stay_in_order(
        cluster: ClusterFactory, site: Site) -> None:
    """bob's session waits on node 0 (max_unacked 10); alice (node 1, to
    bob/r) sends 50 messages, carol (node 0, to bob's bare JID) 40, in one
    write each: past the tenth kept the session ends, while the rest keep
    coming, each archived (XEP-0313) on its way. The session stays in the
    routing table until what it holds is stored, so node 1 keeps sending
    alice's there and node 0 keeps queuing them: bob's next session (on node
    1) gets every message once, in each sender's order (RFC 6120 §10.1).
    Before, node 0 took the session out of the table first, and node 1
    stored alice's later messages among those node 0 was storing."""
    c = await cluster(2, client={"max_unacked": 10})
    alice, _ = await login(site, c[1], "alice")
    carol, _ = await login(site, c[0], "carol")
    bob, token = await login(site, c[0], "bob", sm=True)
    await on_node(c, f"{BOB}/r", c[0])
    say(alice, f"{BOB}/r", "warm")                  # node 1 knows bob's route
    await bob.expect(rb"<body>warm</body>")
    bob.writer.transport.abort()

    async def waiting() -> bool:
        return bool(int(await c.redis.execute("EXISTS", f"cluster:kept:{token}")))
    await eventually(waiting, what="bob's session to wait (what it keeps, in Redis)")
    sent = {"a": 10 + RACERS, "c": RACERS}
    for raw, to, p in ((alice, f"{BOB}/r", "a"), (carol, BOB, "c")):
        raw.send("".join(f"<message to='{to}' type='chat' id='{p}{i}'><body>{p}{i}</body>"
                         "</message>" for i in range(sent[p])))
        raw.send(f"<iq type='get' id='q' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
    for raw in (alice, carol):
        assert b"<error" not in (await raw.expect(rb"^.*?id=\"q\"")).group(0)
    # Maybe while node 0 still stores: it refuses once the session is gone.
    again = await connect(site, c[1], "bob")
    again.send(f"<resume xmlns='{SM}' previd='{token}' h='0'/>")
    await again.expect(rb"<failed [^>]*><item-not-found")
    await bind(again, "r")
    got: list[str] = []
    while not {f"a{sent['a'] - 1}", f"c{sent['c'] - 1}"} <= set(got):
        got.append((await again.expect(rb"<body>([^<]*)</body>")).group(1).decode())
    assert got[0] == "warm"                         # received, never acknowledged
    for p, n in sent.items():
        assert [b for b in got if b[0] == p] == [f"{p}{i}" for i in range(n)]
    again.send(f"<iq type='get' id='p1' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert bodies((await again.expect(rb"^.*?id=\"p1\"")).group(0)) == []     # none twice
