"""No cross-node stanza lost, duplicated or reordered across a Redis
Sentinel failover (issue 13), end to end.

Two real nodes on a real primary, replica and three Sentinels
(tests/sentinelproc.py), real slixmpp clients: alice on A sends numbered
messages (m0001, m0002...) to bob on B at a steady pace from a task while
Redis fails under them; bob must receive every one exactly once, in order.
Then presence, roster pushes and pubsub must work across the nodes again.
Run with -s to see the pause each failover caused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections import Counter
from typing import Any

import pytest

from tests.cluster.conftest import (
    Client, Clients, Cluster, ClusterFactory, body, eventually, presence_from, sentinel_options,
)
from tests.cluster.test_cluster import friends
from tests.cluster.test_pubsub_cluster import (
    PUBSUB, SERVICE as PUBSUB_SERVICE, event_kind, events_of, payload, ps, with_pubsub,
)
from tests.conftest import DOMAIN, TIMEOUT
from tests.integration.test_roster import ROSTER, items_of, raw_iq
from tests.sentinelproc import SentinelSet
from vinespy.cluster import keys

# A run is ~30 s; a lost last message is waited for DELIVERY s before the diff.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

N = 2000                    # numbered messages in a run
PACE = 0.005                # s between two of them
FAILURE_AT = 600            # how many are sent when Redis fails
LAG = 200                   # sent while the replica lags (~1 s)
DELIVERY = 60.0             # s for the last one to reach bob
NUMBERED = re.compile(r"m(\d+)")
CAROL = f"carol@{DOMAIN}"


def label(i: int) -> str:
    return f"m{i:04d}"


def ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 7] -> "1-3, 7" (at most 12 runs shown)."""
    runs: list[list[int]] = []
    for n in sorted(numbers):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    shown = ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in runs[:12])
    return (shown + (f" ... ({len(runs)} runs)" if len(runs) > 12 else "")) or "none"


def none_lost(received: list[int], total: int, live: set[int]) -> str:
    """What is wrong with ``received`` when its node died: each of 1..total
    at least once; a second copy only of one in ``live`` (delivered before
    the death; its node had not confirmed it yet, so its sender re-routed
    it); order is not checked (re-routed ones and newer ones interleave
    in offline storage)."""
    counts = Counter(received)
    missing = [i for i in range(1, total + 1) if i not in counts]
    twice = [i for i, k in counts.items() if k > 1 and i not in live]
    if not missing and not twice:
        return ""
    return (f"bob received {len(received)} messages for {total} sent: "
            f"{len(missing)} missing ({ranges(missing)}); "
            f"{len(twice)} duplicated that had not been delivered before ({ranges(twice)})")


def exactly_once_in_order(received: list[int], total: int) -> str:
    """What is wrong with ``received`` against 1..total ("" when nothing)."""
    if received == list(range(1, total + 1)):
        return ""
    counts = Counter(received)
    missing = [i for i in range(1, total + 1) if i not in counts]
    twice = [i for i, k in counts.items() if k > 1]
    backwards = [(a, b) for a, b in zip(received, received[1:]) if b <= a and counts[b] == 1]
    return (f"bob received {len(received)} messages for {total} sent: "
            f"{len(missing)} missing ({ranges(missing)}); "
            f"{len(twice)} duplicated ({ranges(twice)}); "
            f"{len(backwards)} out of order (first: {backwards[:5]})")


class Numbered:
    """``sender`` sends m0001, m0002... to ``receiver`` (its bare JID), one
    stanza every ``pace`` s from a task: ``n`` of them, or (``n`` None) until
    :meth:`check`. When each was sent and when each arrived is kept."""

    def __init__(self, sender: Client, receiver: Client, n: int | None = None,
                 pace: float = PACE) -> None:
        self.sender, self.receiver, self.n, self.pace = sender, receiver, n, pace
        self.sent_at: list[float] = []
        self.arrivals: list[tuple[float, int]] = []
        self._marks: dict[int, asyncio.Future[None]] = {}
        self._stopping = False
        self.follow(receiver)
        self.task = asyncio.create_task(self._send())

    def follow(self, receiver: Client) -> None:
        """Count what ``receiver`` (the recipient logged in again) gets too,
        from its first message on; it is the one :meth:`check` waits on."""
        self.receiver = receiver
        for msg in receiver.messages.items:
            self._arrived(msg)
        receiver.xmpp.add_event_handler("message", self._arrived)

    def _arrived(self, msg: Any) -> None:
        m = NUMBERED.fullmatch(str(msg["body"]).strip())
        if m:
            self.arrivals.append((time.monotonic(), int(m.group(1))))

    async def _send(self) -> None:
        start = time.monotonic()
        while not self._stopping and (self.n is None or len(self.sent_at) < self.n):
            i = len(self.sent_at) + 1
            self.sender.say(self.receiver.bare, label(i))
            self.sent_at.append(time.monotonic())
            for k, mark in self._marks.items():
                if k <= i and not mark.done():
                    mark.set_result(None)
            await asyncio.sleep(max(0.0, start + i * self.pace - time.monotonic()))

    async def sent(self, k: int) -> None:
        """Until ``k`` messages are sent."""
        if len(self.sent_at) >= k:
            return
        mark = self._marks.setdefault(k, asyncio.get_running_loop().create_future())
        await asyncio.wait_for(asyncio.shield(mark), k * self.pace + TIMEOUT)

    async def received(self, k: int, timeout: float = 3 * TIMEOUT) -> None:
        """Until the receiver has message ``k`` (sent by then or later)."""
        await self.sent(k)
        await self.receiver.messages.get(body(label(k)), timeout)

    async def check(self, what: str, failed_at: float, promoted: float | None = None,
                    node_died: bool = False) -> None:
        """Stop sending (when endless), wait until the receiver has the last
        one, print the pause, assert each arrived once and in order (when
        the receiving node died: at least once, see :func:`none_lost`)."""
        self._stopping = self.n is None
        await asyncio.wait_for(self.task, (self.n or 0) * self.pace + TIMEOUT)
        total = len(self.sent_at)
        late = ""
        try:
            await self.receiver.messages.get(body(label(total)), DELIVERY)
        except AssertionError:
            late = f"{label(total)} not delivered within {DELIVERY:g} s; "
        # A round trip after the last: a late copy of any of them is in by then.
        self.sender.say(self.receiver.bare, "end")
        try:
            await self.receiver.messages.get(body("end"), TIMEOUT)
        except AssertionError:
            late += "'end' not delivered; "
        self.report(what, failed_at, promoted)
        errors = self.sender.errors.matching()
        received = [i for _, i in self.arrivals]
        problem = late + (
            none_lost(received, total, {i for t, i in self.arrivals if t < failed_at})
            if node_died else exactly_once_in_order(received, total))
        assert not problem and not errors, f"{what}: {problem}; {len(errors)} message errors"

    def report(self, what: str, failed_at: float, promoted: float | None) -> None:
        first = next((t for t, i in self.arrivals
                      if i <= len(self.sent_at) and self.sent_at[i - 1] > failed_at), None)
        gap, before = max(((b[0] - a[0], a[1]) for a, b in zip(self.arrivals, self.arrivals[1:])
                           if b[0] > failed_at), default=(0.0, 0))
        print(f"\n[{what}] {len(self.sent_at)} sent; "
              + (f"replica promoted {promoted:.2f} s after the failure; "
                 if promoted is not None else "")
              + "the first message sent after the failure delivered "
              + (f"{first - failed_at:.2f} s after it" if first else "never")
              + f"; longest pause between deliveries {gap:.2f} s (after {label(before)})")


async def pair(cluster: ClusterFactory, xmpp: Clients,
               sentinels: SentinelSet) -> tuple[Cluster, Client, Client, Client]:
    """Nodes A and B on the Sentinels (no rate limit: the pace is ~30 KB/s;
    dead_after 10 s: a node frozen ~1 s then waiting for the promotion is
    not dead); alice/r1 on A and bob/r1 on B, friends; alice/r2 on B; a
    pubsub node of alice's that bob subscribes to; all of it in Redis and
    replicated."""
    c = await cluster(2, heartbeat=0.5, dead_after=10.0, host=PUBSUB,
                      client={"rate_limit": 0}, options=sentinel_options(sentinels))
    a, b = c["node-a"], c["node-b"]
    alice = await xmpp.login(a, "alice/r1", roster=True, wait_route=False)
    bob = await xmpp.login(b, "bob/r1", roster=True, wait_route=False)
    await friends(alice, bob)
    alice2 = await xmpp.login(b, "alice/r2", roster=True, wait_route=False)
    for client in (alice, bob):
        with_pubsub(client)
    await ps(alice).create_node(PUBSUB_SERVICE, "failover", timeout=TIMEOUT)
    await ps(bob).subscribe(PUBSUB_SERVICE, "failover", timeout=TIMEOUT)

    async def routed() -> bool:
        for client in (alice, alice2, bob):
            raw = await asyncio.to_thread(sentinels.execute, sentinels.primary, "HGET",
                                          keys.sessions(client.bare), client.jid.split("/")[1])
            entry = json.loads(raw) if raw else {}
            if not (entry.get("available")
                    and entry.get("fields", {}).get("roster.interested")):
                return False
        return True
    await eventually(routed, TIMEOUT, "the three sessions' routes on the primary")
    await asyncio.to_thread(sentinels.wait_replicated)
    return c, alice, alice2, bob


async def still_works(alice: Client, alice2: Client, bob: Client, tag: str) -> None:
    """Across the nodes again: bob's presence (B) reaches alice (A), alice's
    roster set (A) is pushed to her other resource (B), her publication
    (A) notifies bob (B)."""
    bob.presence(pstatus=tag)
    await alice.presences.get(lambda p: presence_from(bob.jid, "available")(p)
                              and p["status"] == tag, 3 * TIMEOUT)
    await raw_iq(alice.xmpp, "set", f"<query xmlns='{ROSTER}'><item jid='{CAROL}' "
                                    f"name='{tag}'/></query>")
    push = await alice2.pushes.get(lambda iq: CAROL in items_of(iq), 3 * TIMEOUT)
    assert items_of(push)[CAROL]["name"] == tag
    await ps(alice).publish(PUBSUB_SERVICE, "failover", id=tag, payload=payload(tag),
                            timeout=TIMEOUT)
    await events_of(bob).get(event_kind("failover", "items", tag), 3 * TIMEOUT)


def last_id(sentinels: SentinelSet, r: Any, stream: str) -> str:
    """The id of the last entry of ``stream`` on ``r`` ("0-0" when none)."""
    last = sentinels.execute(r, "XREVRANGE", stream, "+", "-", "COUNT", 1)
    return str(last[0][0]) if last else "0-0"


async def test_no_message_lost_across_a_failover(
        cluster: ClusterFactory, xmpp: Clients, sentinels: SentinelSet) -> None:
    """The primary is SIGKILLed after 600 of 2,000 messages, the sending goes
    on: bob gets 1..2000, each once, in order; then presence, roster
    pushes and pubsub work across the nodes."""
    _, alice, alice2, bob = await pair(cluster, xmpp, sentinels)
    stream = Numbered(alice, bob, N)
    await stream.sent(FAILURE_AT)
    killed = time.monotonic()
    await asyncio.to_thread(sentinels.kill_primary)
    promoted = await asyncio.to_thread(sentinels.wait_promoted)
    await stream.check("failover", killed, promoted)
    await still_works(alice, alice2, bob, "after-the-failover")


async def test_no_message_lost_when_the_replica_lags(
        cluster: ClusterFactory, xmpp: Clients, sentinels: SentinelSet) -> None:
    """After 600 messages the replica freezes and loses its link, and node B
    freezes too (it reads nothing meanwhile): for ~1 s the primary
    acknowledges what A writes for B, on the primary only. The primary is
    SIGKILLed, the replica and B thawed; the replica is promoted without
    those writes (proved: a marker key and B's inbox entries are not on
    it). bob still gets 1..2000, each once, in order."""
    c, alice, alice2, bob = await pair(cluster, xmpp, sentinels)
    b = c["node-b"]
    inbox = keys.inbox(b.name)
    stream = Numbered(alice, bob, N)
    await stream.sent(FAILURE_AT)
    await asyncio.to_thread(sentinels.cut_replica)
    b.sigstop()
    replicated = await asyncio.to_thread(last_id, sentinels, sentinels.primary, inbox)
    await stream.sent(FAILURE_AT + LAG)
    await asyncio.to_thread(sentinels.execute, sentinels.primary, "SET", "lost:marker", "1")
    acknowledged = await asyncio.to_thread(last_id, sentinels, sentinels.primary, inbox)
    only_there = await asyncio.to_thread(sentinels.execute, sentinels.primary, "XRANGE", inbox,
                                         f"({replicated}", acknowledged)
    killed = time.monotonic()
    await asyncio.to_thread(sentinels.kill_primary)
    sentinels.thaw(sentinels.replica)
    b.sigcont()
    promoted = await asyncio.to_thread(sentinels.wait_promoted)
    # The writes the primary acknowledged after the cut are really gone.
    assert only_there, "nothing was written for B while it was frozen"
    print(f"\n[lagging replica] {len(only_there)} entries for B lost with the primary")
    assert not await asyncio.to_thread(sentinels.execute, sentinels.replica, "EXISTS",
                                       "lost:marker")
    assert not await asyncio.to_thread(sentinels.execute, sentinels.replica, "XRANGE", inbox,
                                       f"({replicated}", acknowledged), "the replica has them"
    await stream.check("lagging replica", killed, promoted)
    await still_works(alice, alice2, bob, "after-the-lag")


async def test_old_primary_returning_gets_no_writes(
        cluster: ClusterFactory, xmpp: Clients, sentinels: SentinelSet) -> None:
    """The primary freezes (SIGSTOP: not dead) while messages flow; the
    replica is promoted, the nodes hear of it from the Sentinels
    (+switch-master), leave the frozen one at once (not after their socket
    timeout) and chat across nodes again. Thawed, the old primary is made a replica
    of the new one; while messages go on flowing no node has a connection
    to it and nothing but its Sentinels and its primary link is on it; its
    data converges; every message arrives once, in order."""
    c, alice, alice2, bob = await pair(cluster, xmpp, sentinels)
    old, new = sentinels.primary, sentinels.replica

    def strangers() -> list[str]:
        """Clients of the old primary but its Sentinels and its replication links."""
        return [f"{cl['addr']} {cl['name']} {cl['cmd']}" for cl in sentinels.clients(old)
                if not cl["name"].startswith("sentinel-") and not set(cl["flags"]) & {"M", "S"}]
    # Both probes see the nodes while it is their primary.
    assert all(node.redis_addrs(old.port) for node in c.nodes)
    assert await asyncio.to_thread(strangers)

    stream = Numbered(alice, bob)
    await stream.sent(FAILURE_AT // 2)
    since = {n.name: len(n.stderr_lines) for n in c.nodes}
    frozen = time.monotonic()
    sentinels.freeze(old)
    promoted = await asyncio.to_thread(sentinels.wait_promoted)
    for node in c.nodes:
        await node.wait_line(rf"the Sentinels switched vinespy to 127\.0\.0\.1:{new.port}",
                             since=since[node.name])
    await stream.received(len(stream.sent_at) + 1)      # sent after the promotion
    print(f"\n[split brain] cross-node chat again {time.monotonic() - frozen:.2f} s "
          "after the freeze")

    sentinels.thaw(old)

    def demoted() -> bool:
        role = sentinels.execute(old, "ROLE")
        return role[0] == "slave" and int(role[2]) == new.port and role[3] == "connected"
    await asyncio.to_thread(sentinels.wait, demoted, "the old primary to replicate the new")
    more = asyncio.ensure_future(stream.received(len(stream.sent_at) + 400))
    while not more.done():          # sampled while ~2 s of messages flow
        for node in c.nodes:
            assert not node.redis_addrs(old.port), f"{node.name} is on the old primary"
        assert not await asyncio.to_thread(strangers), "clients on the old primary"
        await asyncio.wait([more], timeout=0.1)
    await more
    assert (await asyncio.to_thread(sentinels.execute, old, "ROLE"))[0] == "slave"
    await stream.check("split brain", frozen, promoted)
    await asyncio.to_thread(sentinels.wait_replicated)
    inbox = keys.inbox("node-b")
    assert (await asyncio.to_thread(last_id, sentinels, old, inbox)
            == await asyncio.to_thread(last_id, sentinels, new, inbox))
    await still_works(alice, alice2, bob, "after-the-split")


async def test_no_message_lost_when_the_receiving_node_dies(
        cluster: ClusterFactory, xmpp: Clients) -> None:
    """Not Redis but bob's node B is SIGKILLed after 150 of 500 messages
    (plain Redis, no Sentinels; one every 10 ms, so that sending goes on
    after A declares B dead). Once A has stored the rest offline, bob logs
    in again on A: every message reached him, live before the kill or from
    offline storage after it, and none that he had not received live
    before the kill came twice. (What B delivered in its last moments,
    before confirming it, A re-routes: at least once, not exactly once,
    until clients acknowledge stanzas themselves, XEP-0198.)"""
    n = N // 4
    c = await cluster(2, heartbeat=0.5, dead_after=2.0, client={"rate_limit": 0},
                      host={"options": {"offline": {"max_messages": n}}})
    a, b = c["node-a"], c["node-b"]
    alice = await xmpp.login(a, "alice/r1")
    bob = await xmpp.login(b, "bob/r1")
    stream = Numbered(alice, bob, n, pace=2 * PACE)
    await stream.sent(150)
    killed = time.monotonic()
    b.sigkill()
    await a.wait_line(r"cluster: node node-b is gone", 3 * TIMEOUT)
    await asyncio.wait_for(stream.task, n * stream.pace + TIMEOUT)

    async def stored() -> bool:
        """Each message either reached bob/r1 or is in his offline store."""
        kept = await c.site.stored(bob.bare, "offline") or []
        bodies = re.findall(r"<(?:\w+:)?body>m(\d+)</", "".join(r["xml"] for r in kept))
        return {i for _, i in stream.arrivals} | set(map(int, bodies)) >= set(range(1, n + 1))
    with contextlib.suppress(AssertionError):       # check() tells what is missing
        await eventually(stored, TIMEOUT, "the rest in bob's offline storage")
    stream.follow(await xmpp.login(a, "bob/r2"))
    await stream.check("node death", killed, node_died=True)
