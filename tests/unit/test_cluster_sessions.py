"""ClusterSessions against a real redis-server, no node process: what the
offline module relies on to close the race of issue 10 item 15, and the
directed-presence sets of item 8 (now any module's shared set field).

* ``published()`` returns once the routing changes queued before it are in
  Redis, so another node reading afterwards sees them;
* ``exclusive(name)`` is held by one task of the whole cluster at a time;
* a session's shared set fields (presence's directed-presence JIDs) live
  in a set of their own, written by deltas, removed with the session; its
  shared scalar fields travel in its routing entry.
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
from vinespy.cluster import wire
from vinespy.cluster.proxy import StreamProxy
from vinespy.jid import JID
from vinespy.modules.presence import Presence
from vinespy.modules.roster import Roster

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


def session(full: str, sid: str, sessions: Any = None) -> Any:
    s = FakeSession(full, available=False, sessions=sessions)
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
    """Each change of presence's directed set is one SADD or SREM of the
    session's own set (the routing entry does not carry them); emptying it
    deletes the set, and so does unbinding the session. Another node's proxy
    of the session, made from the entry and the set, has them all."""
    a, _ = nodes
    s = session(f"{ALICE}/r1", "sid-9", a.sessions)
    s.available = True
    a.sessions.bind(s)
    key = keys.sets("sid-9")
    for i in range(3):
        Presence.directed.add(s, JID.parse(f"n{i}@wonderland.lit/x"))
    await a.sessions.published()
    members = await a.redis.smembers(key)
    assert members == {f"presence.directed n{i}@wonderland.lit/x".encode() for i in range(3)}
    entry = json.loads(await a.redis.hget(keys.sessions(ALICE), "r1"))
    assert "directed" not in entry and "fields" not in entry
    proxy = StreamProxy(s.jid, wire.parse_record(json.dumps(entry), members), a.publisher)
    assert Presence.directed.get(proxy) == Presence.directed.get(s)

    Presence.directed.discard(s, JID.parse("n1@wonderland.lit/x"))
    await a.sessions.published()
    assert await a.redis.scard(key) == 2

    Presence.directed.clear(s)
    await a.sessions.published()
    assert await a.redis.exists(key) == 0

    Presence.directed.add(s, JID.parse("n7@wonderland.lit"))
    await a.sessions.published()
    assert await a.redis.scard(key) == 1
    a.sessions.unbind(s)
    await a.sessions.published()
    assert await a.redis.exists(key) == 0
    assert await a.redis.hget(keys.sessions(ALICE), "r1") is None


async def test_shared_scalar_fields_travel_in_the_routing_entry(
        nodes: tuple[NodeView, NodeView]) -> None:
    """roster's ``interested`` set on node A's session is in its routing
    entry, so node B's fresh read of the routes sees it on the proxy; a field
    back at its default leaves the entry."""
    a, b = nodes
    s = session(f"{ALICE}/r2", "sid-10", a.sessions)
    a.sessions.bind(s)
    Roster.interested.set(s, True)
    await a.sessions.published()
    entry = json.loads(await a.redis.hget(keys.sessions(ALICE), "r2"))
    assert entry["fields"] == {"roster.interested": True}
    await b.sessions.load([s.jid.bare], fresh=True)
    proxy = b.sessions.get(s.jid)
    assert proxy is not None and Roster.interested.get(proxy) is True
    Roster.interested.set(s, False)
    await a.sessions.published()
    entry = json.loads(await a.redis.hget(keys.sessions(ALICE), "r2"))
    assert "fields" not in entry
    a.sessions.unbind(s)
    await a.sessions.published()
