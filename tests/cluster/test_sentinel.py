"""Redis Sentinel (issue 13): the nodes find the primary through the
Sentinels and follow it through a failover.

A real primary, replica and three Sentinels (tests/sentinelproc.py), two
real nodes, real slixmpp clients. No stanza lost, duplicated or reordered
across a failover under traffic (a lagging replica, a returning old
primary): test_failover.py; pubsub changes confirmed by the replica:
test_sentinel_pubsub.py.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.cluster.conftest import (
    Clients, ClusterFactory, body, presence_from, sentinel_options,
)
from tests.cluster.test_cluster import friends
from tests.integration.test_operator import vinespy
from tests.sentinelproc import (
    SERVICE, SentinelProcess, SentinelSet, start_sentinels, stop_sentinels,
)
from tests.support import TIMEOUT, free_port
from vinespy.cluster.connection import connect
from vinespy.config import ClusterConfig

pytestmark = pytest.mark.integration


async def test_nodes_follow_the_primary_through_a_failover(
        cluster: ClusterFactory, xmpp: Clients, sentinels: SentinelSet) -> None:
    """Both nodes reach Redis through the Sentinels; the primary is killed
    (SIGKILL); once the replica is promoted both nodes are on it again and
    cross-node chat goes on. Prints the promotion time and the pause."""
    c = await cluster(2, options=sentinel_options(sentinels))
    a, b = c["node-a"], c["node-b"]
    for node in (a, b):
        await node.wait_line(rf"Sentinels name 127\.0\.0\.1:{sentinels.primary.port} as the "
                             rf"primary of {SERVICE}")
    alice = await xmpp.login(a, "alice/r1", wait_route=False)
    bob = await xmpp.login(b, "bob/r1", wait_route=False)
    alice.say(bob.bare, "before")
    await bob.messages.get(body("before"))

    since = {n.name: len(n.stderr_lines) for n in (a, b)}
    t0 = time.monotonic()
    await asyncio.to_thread(sentinels.kill_primary)
    promoted = await asyncio.to_thread(sentinels.wait_promoted)
    for node in (a, b):
        await node.wait_line(r"cluster: Redis at Sentinel service .* is reachable again",
                             timeout=3 * TIMEOUT, since=since[node.name])
    alice.say(bob.bare, "after")
    await bob.messages.get(body("after"))
    bob.say(alice.bare, "and back")
    await alice.messages.get(body("and back"))
    # vinespy status names the primary the cluster uses now (once the
    # Sentinels have settled: it asks them, as any client does).
    await asyncio.to_thread(sentinels.wait_settled)
    rc, out, err = await vinespy("status", "-c", str(a.config), cwd=a.config.parent)
    assert f"primary 127.0.0.1:{sentinels.replica.port}: 2 nodes, 2 alive" in out, (out, err)
    print(f"[failover] replica promoted {promoted:.1f} s after the SIGKILL; cross-node "
          f"chat again {time.monotonic() - t0:.1f} s after it")


async def test_no_sentinel_at_start_is_one_line(tmp_path: Path) -> None:
    """Sentinels that do not answer (wrong addresses): `vinespy start` stops
    with one line naming them, exit non-zero, before it listens."""
    rc, _, err = await vinespy("init", "wonderland.lit", cwd=tmp_path)
    assert rc == 0, err
    site = tmp_path / "wonderland.lit"
    config = site / "conf" / "config.toml"
    nowhere = f"127.0.0.1:{free_port()}"
    config.write_text(config.read_text().replace(
        'address = "0.0.0.0"\nport = 5222', f'address = "127.0.0.1"\nport = {free_port()}')
        + f'\n[cluster]\nurl = "redis:///0"\nsentinels = ["{nowhere}"]\n'
          f'service = "{SERVICE}"\nsentinel_password = "s3cret"\n')
    rc, _, err = await vinespy("start", cwd=site)
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc != 0 and len(lines) == 1, (rc, err)
    assert f"no primary for Sentinel service {SERVICE} ({nowhere})" in lines[0], lines[0]
    assert "listening" not in err and "s3cret" not in err


async def test_all_sentinels_down_while_running(
        cluster: ClusterFactory, xmpp: Clients, sentinels: SentinelSet) -> None:
    """Every Sentinel stops and the nodes' Redis connections drop: they
    cannot learn where the primary is, so each logs one line and serves its
    own users; once the Sentinels are back, they reconnect and cross-node
    chat goes on."""
    c = await cluster(2, options=sentinel_options(sentinels))
    a, b = c["node-a"], c["node-b"]
    alice = await xmpp.login(a, "alice/r1", wait_route=False)
    carol = await xmpp.login(a, "carol/r1", wait_route=False)
    bob = await xmpp.login(b, "bob/r1", wait_route=False)
    alice.say(bob.bare, "before")
    await bob.messages.get(body("before"))

    since = {n.name: len(n.stderr_lines) for n in (a, b)}
    await asyncio.to_thread(stop_sentinels, sentinels)
    await asyncio.to_thread(sentinels.drop_clients)
    for node in (a, b):
        await node.wait_line(r"cluster: lost Redis at Sentinel service", since=since[node.name])
    alice.say(carol.bare, "local")                 # same node: no Redis needed
    await carol.messages.get(body("local"))

    await asyncio.to_thread(start_sentinels, sentinels)
    for node in (a, b):
        await node.wait_line(r"cluster: Redis at Sentinel service .* is reachable again",
                             timeout=3 * TIMEOUT, since=since[node.name])
    alice.say(bob.bare, "after")
    await bob.messages.get(body("after"))


async def test_node_sigkill_during_a_failover(
        cluster: ClusterFactory, xmpp: Clients, sentinels: SentinelSet) -> None:
    """The primary and node B die together (SIGKILL both): once the replica
    is promoted, A declares B dead and alice gets bob's unavailable presence
    exactly once; alice and carol, both on A, chat on throughout."""
    c = await cluster(2, heartbeat=0.5, dead_after=2.0, options=sentinel_options(sentinels))
    a, b = c["node-a"], c["node-b"]
    alice = await xmpp.login(a, "alice/r1", roster=True, wait_route=False)
    carol = await xmpp.login(a, "carol/r1", wait_route=False)
    bob = await xmpp.login(b, "bob/r1", roster=True, wait_route=False)
    await friends(alice, bob)
    gone = presence_from(bob.jid, "unavailable")
    # Replicated before the kill: what bob's node registered must survive it.
    await asyncio.to_thread(sentinels.wait_replicated)

    b.sigkill()
    await asyncio.to_thread(sentinels.kill_primary)
    alice.say(carol.bare, "local")
    await carol.messages.get(body("local"))
    await asyncio.to_thread(sentinels.wait_promoted)
    await alice.presences.get(gone, timeout=3 * TIMEOUT)
    await alice.presences.none(gone, within=2.0)


async def test_a_reconnect_waits_out_a_moment_without_a_named_primary(
        sentinels: SentinelSet) -> None:
    """A connection to reconnect while no Sentinel names a primary in good
    standing (as around and, with a short down-after-milliseconds, just
    after a promotion: the test below in test_sentinel_pubsub.py met it)
    asks them again rather than failing its command at once: the command
    was not sent, so nothing can run twice. Here the Sentinels forget the
    service (SENTINEL REMOVE) and the client's connection is closed; once
    the client has asked them, they monitor it again and the PING that
    waited is answered. Left unnamed, a PING fails after the connect
    timeout (3 s), with redis-py's MasterNotFoundError: an outage is one."""
    from redis.asyncio.sentinel import MasterNotFoundError

    cfg = ClusterConfig(url="redis:///0", sentinels=tuple(sentinels.addresses),
                        service=SERVICE, node="test")
    client = connect(cfg)
    try:
        assert await client.ping()
        await asyncio.to_thread(_unnamed, sentinels)
        await asyncio.to_thread(sentinels.drop_clients)
        waiting = asyncio.create_task(client.ping())
        # Once the client has asked (and been told of no primary), name it again.
        await asyncio.to_thread(sentinels.wait, lambda: _asked(sentinels),
                                "the client to ask the Sentinels")
        assert not waiting.done()
        await asyncio.to_thread(_named, sentinels)
        assert await asyncio.wait_for(waiting, TIMEOUT)

        await asyncio.to_thread(_unnamed, sentinels)
        await asyncio.to_thread(sentinels.drop_clients)
        t0 = time.monotonic()
        with pytest.raises(MasterNotFoundError):
            await asyncio.wait_for(client.ping(), TIMEOUT)
        assert 2.5 < time.monotonic() - t0 < TIMEOUT
    finally:
        await client.aclose()


def _askers(s: SentinelSet) -> list[tuple[SentinelProcess, str]]:
    """The connections whose last command to a Sentinel was SENTINEL
    MASTERS (redis-py's discovery; the Sentinels ask each other other
    things), with the Sentinel each is on."""
    return [(sentinel, c["id"]) for sentinel in s.sentinels for c in s.clients(sentinel)
            if c["cmd"] == "sentinel|masters"]


def _asked(s: SentinelSet) -> bool:
    return bool(_askers(s))


def _unnamed(s: SentinelSet) -> None:
    """Every Sentinel forgets the service, and the connections that asked
    them before are closed (so that one there is a new question)."""
    for sentinel in s.sentinels:
        s.execute(sentinel, "SENTINEL", "REMOVE", SERVICE)
    for sentinel, id in _askers(s):
        s.execute(sentinel, "CLIENT", "KILL", "ID", id)


def _named(s: SentinelSet) -> None:
    for sentinel in s.sentinels:
        s.execute(sentinel, "SENTINEL", "MONITOR", SERVICE, "127.0.0.1", s.primary.port, 2)
