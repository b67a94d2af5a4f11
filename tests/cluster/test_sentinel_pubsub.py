"""Pubsub state across a Redis Sentinel failover (issue 13, part 4): a
pubsub change is answered with success only once a replica has it
(``[cluster] wait_replicas``, 1 by default with Sentinels: Redis WAIT), so
a failover cannot take back what a client was told is stored.

A real primary, replica and three Sentinels (tests/sentinelproc.py), two
real nodes serving the pubsub service ``pubsub.wonderland.lit``, real
slixmpp clients (xep_0060). The replica is made to hang with SIGSTOP, the
primary to die with SIGKILL.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from slixmpp.exceptions import IqError

from tests.cluster.conftest import Client, Clients, ClusterFactory, Node, sentinel_options
from tests.cluster.test_pubsub_cluster import (
    PUBSUB, SERVICE, event_kind, event_payload, events_of, items, node_names, payload, ps,
    shape, with_pubsub,
)
from tests.integration.test_operator import vinespy
from tests.sentinelproc import SentinelSet
from tests.support import TIMEOUT
from vinespy.modules import UNCONFIRMED

pytestmark = [pytest.mark.integration, pytest.mark.redis]


async def login(xmpp: Clients, node: Node, who: str) -> Client:
    """A pubsub client; no wait for its route (the cluster's Redis is the
    Sentinels' primary, not the ``redis`` fixture's server)."""
    c = await xmpp.login(node, who, wait_route=False)
    with_pubsub(c)
    return c


async def up(cluster: ClusterFactory, s: SentinelSet) -> tuple[Node, Node]:
    """Two nodes on the Sentinels' primary, wait_replicas and wait_timeout
    at their defaults (1 replica, 1 s), once the replica is in sync (a
    replica still syncing confirms nothing)."""
    c = await cluster(2, host=PUBSUB, options=sentinel_options(s))
    await asyncio.to_thread(s.wait_replicated)
    return c["node-a"], c["node-b"]


async def refused_as_unconfirmed(publish: Any) -> float:
    """Await ``publish``; assert the answer is <resource-constraint/> type
    wait with the text that says why; the seconds it took."""
    t0 = time.monotonic()
    with pytest.raises(IqError) as refused:
        await publish
    took = time.monotonic() - t0
    iq = refused.value.iq
    assert (iq["error"]["condition"], iq["error"]["type"]) == ("resource-constraint", "wait")
    assert iq["error"]["text"] == UNCONFIRMED
    return took


async def test_an_unconfirmed_publish_is_refused_and_notifies_nobody(
        cluster: ClusterFactory, xmpp: Clients, sentinels: SentinelSet) -> None:
    """The replica hangs (SIGSTOP): alice's publish is answered
    <resource-constraint/> type wait once wait_timeout (1 s) is over, her
    node logs why, and bob, subscribed on the other node, gets no
    notification; `vinespy pubsub create` says so in one line and exits 1.
    Once the replica runs again (SIGCONT), the same publish (same item id)
    succeeds and bob gets its notification, once, with the new payload."""
    a, b = await up(cluster, sentinels)
    alice = await login(xmpp, a, "alice/r1")
    bob = await login(xmpp, b, "bob/r1")
    await ps(alice).create_node(SERVICE, "news", timeout=TIMEOUT)
    await ps(bob).subscribe(SERVICE, "news", timeout=TIMEOUT)
    await ps(alice).publish(SERVICE, "news", id="i1", payload=payload("one"), timeout=TIMEOUT)
    await events_of(bob).get(event_kind("news", "items", "i1"))

    with sentinels.replica.paused():
        took = await refused_as_unconfirmed(ps(alice).publish(
            SERVICE, "news", id="i2", payload=payload("lost?"), timeout=TIMEOUT))
        assert 0.9 <= took < TIMEOUT, took
        await a.wait_line(r"WARNING .*pubsub publish to 'news' of 'pubsub\.wonderland\.lit': "
                          r"not confirmed by a Redis replica within 1 s \(0 did\)")
        await events_of(bob).none(event_kind("news", "items", "i2"), within=1.0)
        rc, out, err = await vinespy("pubsub", "create", SERVICE, "by-cli", "-c", str(a.config),
                                     cwd=a.config.parent)
        lines = err.splitlines()
        assert rc == 1 and len(lines) == 1, (rc, out, err)
        assert "not confirmed by a Redis replica within 1 s (0 did)" in lines[0], lines[0]

    await asyncio.to_thread(sentinels.wait_replicated)     # caught up after SIGCONT
    again = payload("again")
    await ps(alice).publish(SERVICE, "news", id="i2", payload=again, timeout=TIMEOUT)
    note = await events_of(bob).get(event_kind("news", "items", "i2"))
    assert shape(event_payload(note)) == shape(again)
    await events_of(bob).none(event_kind("news", "items", "i2"), within=1.0)
    assert [i for i, _ in await items(bob, "news")] == ["i1", "i2"]


async def test_what_was_confirmed_survives_the_primarys_death(
        cluster: ClusterFactory, xmpp: Clients, sentinels: SentinelSet) -> None:
    """alice (node A) creates a node and publishes to it, and does so again
    with a second node; right after the last success the primary is
    SIGKILLed. Once the replica is promoted and both nodes are on it, bob
    (node B, whose pubsub store had a connection to the old primary) lists
    both nodes and reads both items, payloads intact. The promoted replica
    has no replica of its own: a publish now goes through unconfirmed (none
    could confirm it), and the node says so in its log."""
    a, b = await up(cluster, sentinels)
    alice = await login(xmpp, a, "alice/r1")
    bob = await login(xmpp, b, "bob/r1")
    assert await node_names(bob) == set()
    first, last = payload("first"), payload("last")
    await ps(alice).create_node(SERVICE, "news", timeout=TIMEOUT)
    await ps(alice).publish(SERVICE, "news", id="i1", payload=first, timeout=TIMEOUT)
    await ps(alice).create_node(SERVICE, "late", timeout=TIMEOUT)
    await ps(alice).publish(SERVICE, "late", id="l1", payload=last, timeout=TIMEOUT)

    since = {n.name: len(n.stderr_lines) for n in (a, b)}
    await asyncio.to_thread(sentinels.kill_primary)
    await asyncio.to_thread(sentinels.wait_promoted)
    for node in (a, b):
        await node.wait_line(r"cluster: Redis at Sentinel service .* is reachable again",
                             timeout=3 * TIMEOUT, since=since[node.name])
    assert await node_names(bob) == {"news", "late"}
    assert await items(bob, "news") == [("i1", shape(first))]
    assert await items(bob, "late") == [("l1", shape(last))]

    await ps(alice).publish(SERVICE, "news", id="i2", payload=payload("alone"),
                            timeout=TIMEOUT)
    await a.wait_line(r"WARNING .*the Redis primary has 0 replica\(s\) attached, 1 asked")
    assert [i for i, _ in await items(bob, "news")] == ["i1", "i2"]
