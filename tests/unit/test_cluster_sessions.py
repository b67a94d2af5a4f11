"""ClusterSessions against a real redis-server, no node process: what the
offline module relies on to close the race of issue 10 item 15, and the
directed-presence sets of item 8.

* ``published()`` returns once the routing changes queued before it are in
  Redis, so another node reading afterwards sees them;
* ``exclusive(name)`` is held by one task of the whole cluster at a time;
* a session's directed-presence JIDs live in their own set, written by
  deltas, removed with the session.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, Iterator

import pytest

from tests.harness import FakeSession
from tests.redisproc import redis_server, url_of
from vinespy.cluster import keys
from vinespy.cluster.connection import connect
from vinespy.cluster.publisher import Publisher
from vinespy.cluster.sessions import ClusterSessions
from vinespy.config import ClusterConfig
from vinespy.jid import JID

pytestmark = pytest.mark.redis

TIMEOUT = 10.0
ALICE = "alice@wonderland.lit"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("sessions-redis")) as client:
        yield url_of(client)


class NodeView:
    """One node's ClusterSessions with a running Publisher."""

    def __init__(self, url: str, node: str) -> None:
        self.redis = connect(ClusterConfig(url=url, node=node))
        self.sessions = ClusterSessions(node, ttl=10.0)
        self.publisher = Publisher(self.redis, node, f"inc-{node}", 1000,
                                   lambda items: None, lambda part, exc: None)
        self.sessions.redis = self.redis
        self.sessions.publisher = self.publisher
        self.task = asyncio.create_task(self.publisher.run())

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.redis.aclose()


@pytest.fixture
async def nodes(redis_url: str) -> AsyncIterator[tuple[NodeView, NodeView]]:
    a, b = NodeView(redis_url, "node-a"), NodeView(redis_url, "node-b")
    await a.redis.flushall()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


def session(full: str, sid: str) -> Any:
    s = FakeSession(full, available=False)
    s.id = sid
    return s


async def test_published_returns_once_the_routing_entry_is_in_redis(
        nodes: tuple[NodeView, NodeView]) -> None:
    """A resource becomes available on node A; once ``published()`` returns,
    node B's fresh read of the user's routes sees it available. This is the
    order the offline module needs: availability written, then the store read."""
    a, b = nodes
    s = session(f"{ALICE}/r1", "sid-1")
    a.sessions.bind(s)
    await a.sessions.published()
    s.available = True
    a.sessions.changed(s)
    await a.sessions.published()
    await b.sessions.load([JID.parse(ALICE)], fresh=True)
    (seen,) = b.sessions.available(JID.parse(ALICE))
    assert seen.jid == s.jid


async def test_exclusive_admits_one_holder_across_nodes(
        nodes: tuple[NodeView, NodeView]) -> None:
    """While node A holds ``exclusive("offline:bob")``, node B's attempt
    waits; it enters as soon as A leaves. Another name is not held up."""
    a, b = nodes
    b_in = asyncio.Event()
    leave_b = asyncio.Event()

    async def b_holds() -> None:
        async with b.sessions.exclusive("offline:bob"):
            b_in.set()
            await leave_b.wait()

    async with a.sessions.exclusive("offline:bob"):
        task = asyncio.create_task(b_holds())
        async with b.sessions.exclusive("offline:carol"):
            pass                                    # another name: not held up
        with pytest.raises(asyncio.TimeoutError):   # the one bounded wait for nothing
            await asyncio.wait_for(asyncio.shield(b_in.wait()), 0.3)
    await asyncio.wait_for(b_in.wait(), TIMEOUT)
    assert await a.redis.exists(keys.lock("offline:bob")) == 1
    leave_b.set()
    await asyncio.wait_for(task, TIMEOUT)
    assert await a.redis.exists(keys.lock("offline:bob")) == 0


async def test_directed_jids_are_written_as_deltas_and_leave_with_the_session(
        nodes: tuple[NodeView, NodeView]) -> None:
    """Each change of ``session.directed`` is one SADD or SREM of its own set
    (the routing entry does not carry them); emptying it deletes the set, and
    so does unbinding the session."""
    a, _ = nodes
    s = session(f"{ALICE}/r1", "sid-9")
    s.available = True
    a.sessions.bind(s)
    key = keys.directed("sid-9")
    for i in range(3):
        jid = JID.parse(f"n{i}@wonderland.lit/x")
        s.directed.add(jid)
        a.sessions.directed_changed(s, jid)
    await a.sessions.published()
    assert await a.redis.smembers(key) == {f"n{i}@wonderland.lit/x".encode() for i in range(3)}
    entry = json.loads(await a.redis.hget(keys.sessions(ALICE), "r1"))
    assert "directed" not in entry

    gone = JID.parse("n1@wonderland.lit/x")
    s.directed.discard(gone)
    a.sessions.directed_changed(s, gone)
    await a.sessions.published()
    assert await a.redis.scard(key) == 2

    s.directed.clear()
    a.sessions.directed_changed(s, None)
    await a.sessions.published()
    assert await a.redis.exists(key) == 0

    again = JID.parse("n7@wonderland.lit")
    s.directed.add(again)
    a.sessions.directed_changed(s, again)
    await a.sessions.published()
    assert await a.redis.scard(key) == 1
    a.sessions.unbind(s)
    await a.sessions.published()
    assert await a.redis.exists(key) == 0
    assert await a.redis.hget(keys.sessions(ALICE), "r1") is None
