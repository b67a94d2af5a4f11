"""Clustering over Redis (issue 5), end to end: real redis-server, real
``vinespy start`` processes sharing one site, real slixmpp clients.

Nodes run with ``heartbeat = 0.2`` and ``dead_after = 1.0`` unless a test says
otherwise (the SIGKILL test uses 1.0/5.0, the issue's defaults' order of size).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

import pytest

from tests.cluster.conftest import (
    DELAY, Client, Clients, Cluster, ClusterFactory, Inbox, RedisServer, body, eventually,
    presence_from,
)
from tests.conftest import DOMAIN, TIMEOUT
from tests.integration.test_roster import ROSTER, get_roster, items_of, raw_iq
from tests.integration.test_subscription import subscribe
from vinespy.jid import JID

pytestmark = [pytest.mark.integration, pytest.mark.redis]

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
CAROL = f"carol@{DOMAIN}"


async def friends(a: Client, b: Client) -> None:
    """``a`` and ``b`` (both logged in with ``roster=True``) subscribe to each
    other through the protocol and each has seen the other's presence."""
    await subscribe(a.xmpp, b.xmpp)
    await a.presences.get(presence_from(b.jid, "available"))
    await subscribe(b.xmpp, a.xmpp)
    await b.presences.get(presence_from(a.jid, "available"))


async def delivered(sender: Client, to: str, receiver: Client, tag: str,
                    timeout: float = 20.0, every: float = 1.0) -> Any:
    """Send ``tag-N`` messages from ``sender`` to ``to`` until ``receiver`` gets
    one (each try waits ``every`` s for it); the first received."""
    return await retried(sender, to, tag, receiver.messages,
                         lambda m: str(m["body"]).startswith(f"{tag}-"), timeout, every,
                         f"{tag}: {sender} -> {to} not delivered to {receiver}")


async def retried(sender: Client, to: str, tag: str, inbox: Inbox,
                  match: Callable[[Any], bool], timeout: float, every: float,
                  what: str) -> Any:
    """Send ``tag-N`` from ``sender`` to ``to`` until ``inbox`` gets an item
    ``match`` accepts (a node may route with its cached view for a moment
    after a change: the invalidation is on its way); that item."""
    deadline = time.monotonic() + timeout
    n = 0
    while True:
        n += 1
        sender.say(to, f"{tag}-{n}")
        try:
            return await inbox.get(match, every)
        except AssertionError:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} within {timeout:g} s ({n} tries)") from None


# --- membership and routes ----------------------------------------------------------


async def test_nodes_register_heartbeat_and_publish_routes(cluster: ClusterFactory,
                                                           xmpp: Clients,
                                                           redis: RedisServer) -> None:
    """Each node is in cluster:nodes with a heartbeat that advances; a bound,
    available session is in sessions:{bare} (its node, available, priority) and
    in its node's jids set; a clean logout removes both."""
    c = await cluster(3)
    first = await eventually(lambda: _all_nodes(redis, c), what="3 nodes in cluster:nodes")
    later = await eventually(
        lambda: _advanced(redis, first), what="every node's heartbeat to advance")
    assert set(later) >= {"node-a", "node-b", "node-c"}

    alice = await xmpp.login(c["node-b"], "alice/r1", priority=3)
    entry = (await c.routes(ALICE))["r1"]
    assert entry["node"] == "node-b"
    assert entry["available"] is True and entry["priority"] == 3
    assert "sid" in entry
    assert alice.jid in await redis.execute("SMEMBERS", "cluster:node:node-b:jids")

    await alice.disconnect()
    await c.wait_no_route(alice.jid)
    await eventually(lambda: _not_member(redis, "cluster:node:node-b:jids", alice.jid),
                     what="alice/r1 out of node-b's jids")


async def _all_nodes(redis: RedisServer, c: Cluster) -> dict[str, str] | None:
    nodes = await redis.nodes()
    return nodes if all(n.name in nodes for n in c.nodes) else None


async def _advanced(redis: RedisServer, before: dict[str, str]) -> dict[str, str] | None:
    now = await redis.nodes()
    return now if all(int(now.get(k, 0)) > int(v) for k, v in before.items()) else None


async def _not_member(redis: RedisServer, key: str, member: str) -> bool:
    return member not in await redis.execute("SMEMBERS", key)


# --- 1. chat ------------------------------------------------------------------------


async def test_chat_across_nodes_both_ways(cluster: ClusterFactory, xmpp: Clients) -> None:
    """alice on A and bob on B chat both ways, to full and bare JIDs: every
    message arrives, in order, with 'from' the sender's full JID; an IQ to a
    full JID on the other node is answered."""
    c = await cluster(2)
    alice = await xmpp.login(c["node-a"], "alice/r1")
    bob = await xmpp.login(c["node-b"], "bob/r1")
    for sender, receiver in ((alice, bob), (bob, alice)):
        sent = [f"{sender.bare}-{i}" for i in range(10)]
        for i, text in enumerate(sent):
            sender.say(receiver.jid if i % 2 else receiver.bare, text)
        got = [await receiver.messages.get() for _ in sent]
        assert [str(m["body"]) for m in got] == sent
        assert {str(m["from"]) for m in got} == {sender.jid}
        assert {m["type"] for m in got} == {"chat"}
    await alice.ping(bob.jid)           # iq get -> B -> bob's client -> result -> A
    await bob.ping(alice.jid)
    assert alice.errors.items == [] and bob.errors.items == []


# --- 2. priorities (RFC 6121 §8.5.2.1.1) ---------------------------------------------


async def test_bare_jid_delivery_by_priority_across_nodes(cluster: ClusterFactory,
                                                          xmpp: Clients) -> None:
    """alice/r1 on A (priority 5) and alice/r2 on B (priority 1): bob's message
    to alice's bare JID reaches r1 only; with r1 at 0 it reaches r2 only; at
    equal priorities both; with r1 unavailable r2 only."""
    c = await cluster(2)
    r1 = await xmpp.login(c["node-a"], "alice/r1", priority=5)
    r2 = await xmpp.login(c["node-b"], "alice/r2", priority=1)
    bob = await xmpp.login(c["node-b"], "bob/desk")
    step = 0

    async def change(r: Client, priority: int | None) -> None:
        """r's presence changes; once Redis shows it, r sends bob a message
        through the same path as any invalidation r's node sends bob's node,
        and bob's receiving it means bob's node has seen the change."""
        nonlocal step
        step += 1
        if priority is None:
            r.presence(ptype="unavailable")
        else:
            r.presence(ppriority=priority)
        await r.ping()
        await c.wait_route(r.jid, match=lambda e: (not e.get("available")) if priority is None
                           else bool(e.get("available")) and e.get("priority") == priority)
        r.say(bob.jid, f"changed-{step}")
        await bob.messages.get(body(f"changed-{step}"))

    async def to_alice(text: str, expect: list[Client], others: list[Client]) -> None:
        bob.say(ALICE, text)
        for r in expect:
            m = await r.messages.get(body(text))
            assert str(m["from"]) == bob.jid
        # bob -> other's full JID takes the same path as a misrouted copy would,
        # so once it arrives, a copy of `text` would have arrived before it.
        for r in others:
            bob.say(r.jid, f"sync-{text}")
            await r.messages.get(body(f"sync-{text}"))
            assert r.messages.matching(body(text)) == [], f"{r} got {text!r}"

    await to_alice("5 vs 1", [r1], [r2])
    await change(r1, 0)
    await to_alice("0 vs 1", [r2], [r1])
    await change(r1, 1)
    await to_alice("1 vs 1", [r1, r2], [])
    await change(r1, None)
    await to_alice("gone vs 1", [r2], [r1])
    await change(r2, -1)
    # No available resource of non-negative priority: stored offline (not lost,
    # not delivered to the negative one), then delivered to the next login.
    bob.say(ALICE, "nobody")
    await bob.ping()
    bob.say(r2.jid, "sync-nobody")
    await r2.messages.get(body("sync-nobody"))
    assert r1.messages.matching(body("nobody")) == r2.messages.matching(body("nobody")) == []
    r3 = await xmpp.login(c["node-a"], "alice/r3")
    m = await r3.messages.get(body("nobody"))
    assert m.xml.find(DELAY) is not None


# --- 3. subscriptions and presence broadcast ----------------------------------------


async def test_subscription_and_presence_across_nodes(cluster: ClusterFactory, xmpp: Clients,
                                                      site: Any) -> None:
    """alice on A subscribes to bob on B and bob approves (and the reverse):
    both rosters are pushed, stored as 'both', each sees the other's presence;
    bob's status change on B reaches alice on A; alice's new resource on A
    gets bob's presence by probe, and bob sees it come online."""
    c = await cluster(2)
    alice = await xmpp.login(c["node-a"], "alice/r1", roster=True)
    bob = await xmpp.login(c["node-b"], "bob/r1", roster=True)
    await friends(alice, bob)
    assert (await site.stored_user(ALICE)).roster[JID.parse(BOB)].subscription == "both"
    assert (await site.stored_user(BOB)).roster[JID.parse(ALICE)].subscription == "both"

    bob.presence(pshow="away", pstatus="lunch")
    p = await alice.presences.get(lambda p: presence_from(bob.jid)(p) and p["status"] == "lunch")
    assert p["show"] == "away"

    r2 = await xmpp.login(c["node-a"], "alice/r2")
    p = await r2.presences.get(presence_from(bob.jid, "available"))
    assert p["status"] == "lunch"
    await bob.presences.get(presence_from(r2.jid, "available"))

    await r2.disconnect()
    await bob.presences.get(presence_from(r2.jid, "unavailable"))


async def test_roster_removal_withdraws_presence_across_nodes(
        cluster: ClusterFactory, xmpp: Clients) -> None:
    """alice/r1 on A and alice/r2 on B share presence with bob on B; r1 removes
    bob (RFC 6121 §2.5.2): bob gets unavailable from r1 and r2, then
    unsubscribed (§3.2.2), and unsubscribe; both of alice's resources get
    bob's unavailable (§3.3.3)."""
    c = await cluster(2)
    r1 = await xmpp.login(c["node-a"], "alice/r1", roster=True)
    bob = await xmpp.login(c["node-b"], "bob/r1", roster=True)
    await friends(r1, bob)
    r2 = await xmpp.login(c["node-b"], "alice/r2")
    await bob.presences.get(presence_from(r2.jid, "available"))
    await r2.presences.get(presence_from(bob.jid, "available"))
    start = len(bob.presences.items)
    await raw_iq(r1.xmpp, "set", f"<query xmlns='{ROSTER}'>"
                                 f"<item jid='{BOB}' subscription='remove'/></query>")
    gone = [await bob.presences.get(presence_from(r.jid, "unavailable")) for r in (r1, r2)]
    cancelled = await bob.presences.get(presence_from(ALICE, "unsubscribed"))
    await bob.presences.get(presence_from(ALICE, "unsubscribe"))
    seen = bob.presences.items[start:]
    assert max(map(seen.index, gone)) < seen.index(cancelled)       # §3.2.2: first
    for r in (r1, r2):
        await r.presences.get(presence_from(bob.jid, "unavailable"))


# --- 4. roster pushes ---------------------------------------------------------------


async def test_roster_push_to_resource_on_other_node(cluster: ClusterFactory,
                                                     xmpp: Clients) -> None:
    """alice/r1 on A and alice/r2 on B both fetched the roster: r1's roster set
    is pushed to r2, r2's removal is pushed to r1, and a roster get on either
    node returns the other node's change."""
    c = await cluster(2)
    r2 = await xmpp.login(c["node-b"], "alice/r2", roster=True)
    r1 = await xmpp.login(c["node-a"], "alice/r1", roster=True)

    def interested(entry: dict[str, Any]) -> bool:
        return bool(entry.get("fields", {}).get("roster.interested"))
    for r in (r1, r2):
        await c.wait_route(r.jid, match=interested)
    await raw_iq(r1.xmpp, "set", f"<query xmlns='{ROSTER}'><item jid='{CAROL}' name='Carol'>"
                                 f"<group>Friends</group></item></query>")
    push = await r2.pushes.get(lambda iq: CAROL in items_of(iq))
    assert items_of(push)[CAROL]["name"] == "Carol"
    await r1.pushes.get(lambda iq: CAROL in items_of(iq))
    assert (await get_roster(r2.xmpp))[CAROL]["name"] == "Carol"

    await raw_iq(r2.xmpp, "set", f"<query xmlns='{ROSTER}'>"
                                 f"<item jid='{CAROL}' subscription='remove'/></query>")
    removed = await r1.pushes.get(
        lambda iq: items_of(iq).get(CAROL, {}).get("subscription") == "remove")
    assert removed["type"] == "set"
    assert CAROL not in await get_roster(r1.xmpp)


# --- 5. offline storage when the recipient's node is gone ----------------------------


async def test_message_to_user_of_dead_node_is_stored_offline(cluster: ClusterFactory,
                                                              xmpp: Clients,
                                                              redis: RedisServer) -> None:
    """bob's node B is SIGKILLed. Messages alice sends him right away (bare and
    full JID, before B is known dead) and after B's cleanup are not lost: bob
    logs in on A and gets all three as offline messages."""
    c = await cluster(2)
    a, b = c["node-a"], c["node-b"]
    alice = await xmpp.login(a, "alice/r1")
    bob = await xmpp.login(b, "bob/r1")
    b.sigkill()
    await b.wait_exit()
    alice.say(BOB, "before-bare")
    alice.say(bob.jid, "before-full")
    await alice.ping()
    await c.wait_no_route(bob.jid)
    await eventually(lambda: _inbox_drained(redis, "node-b"), what="node-b's inbox drained")
    alice.say(BOB, "after")
    await alice.ping()
    assert alice.errors.items == []

    again = await xmpp.login(a, "bob/r2")
    for text in ("before-bare", "before-full", "after"):
        m = await again.messages.get(body(text))
        assert str(m["from"]) == alice.jid
        assert m.xml.find(DELAY) is not None, f"{text!r} was not delivered as offline"


async def _inbox_drained(redis: RedisServer, node: str) -> bool:
    return int(await redis.execute("XLEN", f"cluster:inbox:{node}")) == 0


# --- 6, 7, 8. a node dies, stops, freezes -------------------------------------------


@pytest.mark.timeout(90)
async def test_sigkill_node_unavailable_exactly_once(cluster: ClusterFactory, xmpp: Clients,
                                                     redis: RedisServer) -> None:
    """3 nodes, heartbeat 1 s, dead_after 5 s. bob on B is a mutual contact of
    alice on A and carol on C. SIGKILL B: A and C both see B die, yet alice and
    carol each get exactly one unavailable from bob/r1, within 6 s of the kill;
    bob's routes and node-b's jids set are gone."""
    c = await cluster(3, heartbeat=1.0, dead_after=5.0)
    alice = await xmpp.login(c["node-a"], "alice/r1", roster=True)
    bob = await xmpp.login(c["node-b"], "bob/r1", roster=True)
    carol = await xmpp.login(c["node-c"], "carol/r1", roster=True)
    await friends(alice, bob)
    await friends(carol, bob)
    gone = presence_from(bob.jid, "unavailable")
    assert alice.presences.matching(gone) == carol.presences.matching(gone) == []

    killed = time.monotonic()
    c["node-b"].sigkill()
    await asyncio.gather(alice.presences.get(gone, timeout=6.0),
                         carol.presences.get(gone, timeout=6.0))
    took = time.monotonic() - killed
    assert took <= 6.0, took
    await asyncio.gather(alice.presences.none(gone, within=1.5),
                         carol.presences.none(gone, within=1.5))
    assert "r1" not in await c.routes(BOB)
    assert await redis.execute("SMEMBERS", "cluster:node:node-b:jids") in ([], set())
    # the survivors still talk
    alice.say(carol.jid, "still here")
    await carol.messages.get(body("still here"))


async def test_sigterm_node_sends_unavailable_promptly(cluster: ClusterFactory,
                                                       xmpp: Clients) -> None:
    """SIGTERM B (dead_after 30 s): alice on A gets bob's unavailable within
    3 s, far sooner than dead_after; bob's stream is closed, B exits 0 and its
    routes are gone."""
    c = await cluster(2, heartbeat=1.0, dead_after=30.0)
    alice = await xmpp.login(c["node-a"], "alice/r1", roster=True)
    bob = await xmpp.login(c["node-b"], "bob/r1", roster=True)
    await friends(alice, bob)
    c["node-b"].sigterm()
    await alice.presences.get(presence_from(bob.jid, "unavailable"), timeout=3.0)
    await asyncio.wait_for(asyncio.shield(bob.disconnected), TIMEOUT)
    assert await c["node-b"].wait_exit() == 0
    await c.wait_no_route(bob.jid, timeout=3.0)


async def test_sigstop_past_dead_after_then_sigcont_recovers(cluster: ClusterFactory,
                                                             xmpp: Clients) -> None:
    """SIGSTOP B past dead_after: alice on A sees bob go unavailable and his
    route go; what she sends him meanwhile is stored offline. SIGCONT: B
    re-registers, alice sees bob available again, bob gets the message sent
    while he was thought gone, and their messages reach each other."""
    c = await cluster(2)
    b = c["node-b"]
    alice = await xmpp.login(c["node-a"], "alice/r1", roster=True)
    bob = await xmpp.login(b, "bob/r1", roster=True)
    await friends(alice, bob)
    b.sigstop()
    try:
        await alice.presences.get(presence_from(bob.jid, "unavailable"))
        await c.wait_no_route(bob.jid)
        alice.say(BOB, "while you were gone")
        await alice.ping()
    finally:
        b.sigcont()
    await alice.presences.get(presence_from(bob.jid, "available"))
    missed = await bob.messages.get(body("while you were gone"))
    assert str(missed["from"]) == alice.jid
    await c.wait_route(bob.jid, match=lambda e: bool(e.get("available")))
    alice.say(bob.jid, "full after")
    alice.say(BOB, "bare after")
    for text in ("full after", "bare after"):
        assert str((await bob.messages.get(body(text)))["from"]) == alice.jid
    bob.say(alice.jid, "i'm back")
    await alice.messages.get(body("i'm back"))


async def test_node_restarted_after_sigkill_rejoins(cluster: ClusterFactory,
                                                    xmpp: Clients) -> None:
    """B is SIGKILLed and started again at once with the same node id: it comes
    up (once its old incarnation is stale), bob's old route is removed and
    alice on A gets his unavailable; bob logs in to the new B, alice sees
    him available and they chat both ways."""
    c = await cluster(2)
    b = c["node-b"]
    alice = await xmpp.login(c["node-a"], "alice/r1", roster=True)
    bob = await xmpp.login(b, "bob/r1", roster=True)
    await friends(alice, bob)
    b.sigkill()
    await b.wait_exit()
    await b.start()
    await alice.presences.get(presence_from(bob.jid, "unavailable"))
    await c.wait_no_route(bob.jid)
    bob = await xmpp.login(b, "bob/r1", roster=True)
    assert (await c.routes(BOB))["r1"]["node"] == "node-b"
    await alice.presences.get(presence_from(bob.jid, "available"))
    alice.say(bob.jid, "welcome back")
    await bob.messages.get(body("welcome back"))
    bob.say(ALICE, "thanks")
    await alice.messages.get(body("thanks"))
    gone = presence_from(bob.jid, "unavailable")
    assert len(alice.presences.matching(gone)) == 1


async def test_duplicate_node_id_is_refused(cluster: ClusterFactory, xmpp: Clients) -> None:
    """A second process configured with a live node's id exits non-zero with
    one line saying the id is in use; the live node is unharmed."""
    c = await cluster(2)
    alice = await xmpp.login(c["node-a"], "alice/r1")
    bob = await xmpp.login(c["node-b"], "bob/r1")
    dup = c.add("node-b")
    await dup.start(wait=False)
    assert await dup.wait_exit(TIMEOUT) != 0
    assert any("in use" in line for line in dup.stderr_lines), dup.stderr_lines[-5:]
    assert not any("listening on" in line for line in dup.stderr_lines)
    assert (await c.routes(BOB))["r1"]["node"] == "node-b"
    alice.say(bob.jid, "still you?")
    await bob.messages.get(body("still you?"))


# --- 9, 10. Redis trouble --------------------------------------------------------------


@pytest.mark.timeout(90)
async def test_client_kill_mid_conversation_loses_nothing(cluster: ClusterFactory,
                                                          xmpp: Clients,
                                                          redis: RedisServer) -> None:
    """alice on A sends bob on B 200 numbered messages while B's, then A's,
    then every Redis connection is killed: bob gets all 200, in order, once."""
    c = await cluster(2)
    a, b = c["node-a"], c["node-b"]
    alice = await xmpp.login(a, "alice/r1")
    bob = await xmpp.login(b, "bob/r1")
    assert b.redis_addrs(), "node-b has no connection to Redis"
    kills = [
        lambda: redis.kill_clients(addrs=b.redis_addrs()),
        lambda: redis.kill_clients(addrs=a.redis_addrs()),
        lambda: _kill_all(redis),
    ]
    n = 0
    for batch in range(4):
        for _ in range(50):
            alice.say(bob.jid, str(n))
            n += 1
        # kill while this batch is under way: after bob has half of it
        await bob.messages.get(body(str(n - 25)), timeout=20)
        if batch < len(kills):
            assert await kills[batch]() >= 1
    alice.say(bob.jid, "end")
    await bob.messages.get(body("end"), timeout=30)
    bodies = [str(m["body"]) for m in bob.messages.items]
    assert bodies == [str(i) for i in range(200)] + ["end"]
    assert alice.errors.items == []


async def _kill_all(redis: RedisServer) -> int:
    return await redis.kill_clients(type="normal") + await redis.kill_clients(type="pubsub")


@pytest.mark.timeout(90)
async def test_redis_restart_nodes_heal(cluster: ClusterFactory, xmpp: Clients,
                                        redis: RedisServer) -> None:
    """redis-server restarts with no data: the nodes register again, alice on
    A and bob on B chat again, and sessions:{bare} shows both again."""
    c = await cluster(2)
    alice = await xmpp.login(c["node-a"], "alice/r1")
    bob = await xmpp.login(c["node-b"], "bob/r1")
    alice.say(bob.jid, "before")
    await bob.messages.get(body("before"))
    await redis.restart()
    await delivered(alice, bob.jid, bob, "a2b")
    await delivered(bob, alice.jid, alice, "b2a")
    await delivered(alice, BOB, bob, "a2bare")
    await c.wait_route(alice.jid, match=lambda e: bool(e.get("available")))
    await c.wait_route(bob.jid, match=lambda e: bool(e.get("available")))
    await eventually(lambda: _all_nodes(redis, c), what="both nodes in cluster:nodes")


# --- 11. --workers ---------------------------------------------------------------------


@pytest.mark.timeout(90)
async def test_workers_share_one_port_and_chat(cluster: ClusterFactory, xmpp: Clients,
                                               redis: RedisServer) -> None:
    """``vinespy start --workers 2``: two cluster nodes (ids ending -w0, -w1)
    on one port. Clients spread over both; a client on -w0 and one on -w1
    chat both ways."""
    c = await cluster(1, workers=2, client={"reuse_port": True})
    node = c[0]

    async def workers() -> list[str] | None:
        ids = sorted(await redis.nodes())
        return ids if any(i.endswith("-w0") for i in ids) and any(
            i.endswith("-w1") for i in ids) else None
    await eventually(workers, 20, "workers -w0 and -w1 in cluster:nodes")

    users = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")
    on: dict[str, list[Client]] = {"-w0": [], "-w1": []}
    for i in range(24):
        who = await xmpp.login(node, f"{users[i % len(users)]}/w{i}")
        worker = (await c.routes(who.bare))[who.xmpp.boundjid.resource]["node"]
        on[worker[-3:]].append(who)
        pairs = [(x, y) for x in on["-w0"] for y in on["-w1"] if x.bare != y.bare]
        if pairs:
            break
    else:
        raise AssertionError(f"24 logins never reached both workers: "
                             f"{ {k: len(v) for k, v in on.items()} }")
    x, y = pairs[0]
    x.say(y.jid, "w0 to w1")
    assert str((await y.messages.get(body("w0 to w1")))["from"]) == x.jid
    y.say(x.bare, "w1 to w0")
    assert str((await x.messages.get(body("w1 to w0")))["from"]) == y.jid
