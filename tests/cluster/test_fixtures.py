"""The cluster suite's own fixtures, checked with parts that need no clustering:
the redis fixture, and node processes sharing one site without ``[cluster]``."""

from __future__ import annotations

import asyncio

import pytest

from tests.cluster.conftest import ClusterFactory, Clients, RedisServer, body
from tests.conftest import DOMAIN, TIMEOUT

pytestmark = [pytest.mark.integration, pytest.mark.redis]


async def test_redis_restart_loses_data_and_kill_clients(redis: RedisServer) -> None:
    """restart() comes back on the same port with no data; kill_clients() kills
    the other connections, not the one that asks."""
    c = redis.client()
    await c.set("k", "v")
    assert await c.get("k") == "v"
    other = redis.client()
    await other.client_setname("victim")
    assert await other.ping()
    assert await redis.kill_clients(name="victim") == 1
    assert await redis.kill_clients(type="normal") >= 1        # c's connection
    await redis.restart()
    assert await redis.execute("GET", "k") is None
    assert await redis.execute("DBSIZE") == 0


async def test_standalone_nodes_share_the_site(cluster: ClusterFactory, xmpp: Clients) -> None:
    """Two nodes without [cluster] serve the same users from the same data;
    signals and restart() work on them."""
    c = await cluster(2, clustered=False)
    a, b = c.nodes
    assert a.port != b.port and a.pid != b.pid
    alice = await xmpp.login(a, "alice/r1")
    carol = await xmpp.login(a, "carol/r1")
    bob = await xmpp.login(b, "bob/r1")
    alice.say(carol.jid, "hello carol")
    m = await carol.messages.get(body("hello carol"))
    assert str(m["from"]) == alice.jid
    await bob.ping()
    b.sigstop()
    b.sigcont()
    await bob.ping()
    await b.restart()
    await asyncio.wait_for(bob.disconnected, TIMEOUT)       # the restart closed its stream
    bob2 = await xmpp.login(b, "bob/r2")
    await bob2.ping(DOMAIN)
    a.sigkill()
    assert await a.wait_exit() == -9
