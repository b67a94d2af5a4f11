"""The pubsub storage contract (vinespy/storage/pubsub/), run against every
PubSubStore: memory, fs (tmp_path), Redis (a real, throw-away
redis-server; those cases are marked ``redis``; once more on a primary with
a replica, every write waiting for it) and sql on SQLite and on a
real PostgreSQL (tests/pgproc.py; the SqlStorage it is built on, as the
storage suite builds it).

Then what only the fs store promises: data survives a new instance on the
same directory (a restart), names cannot leave the directory or collide,
corrupt files and I/O errors raise StorageError. What only RedisPubSub
promises (key layout, Lua escaping, corrupt Redis values, Redis down) is in
test_pubsub_redis.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

import pytest

from tests.redisproc import primary_and_replica, redis_server, url_of
from tests.storage.conftest import SQL_KINDS, sql_storage
from tests.support import TIMEOUT
from vinespy.storage import StorageError
from vinespy.storage.pubsub import Item, PubSubNode, PubSubStore, open_pubsub
from vinespy.storage.pubsub.fs import FsPubSub
from vinespy.storage.pubsub.memory import MemoryPubSub
from vinespy.storage.pubsub.sql import PUBSUB_SCHEMA
from vinespy.storage.sql import SqlStorage

SVC = "pubsub.wonderland.lit"
ALICE = "alice@wonderland.lit"
BOB = "bob@wonderland.lit"
CAROL = "carol@wonderland.lit"
CONFIG = {"pubsub#max_items": "10", "pubsub#access_model": "open"}


class Kit:
    """A store under test and how to look behind it."""

    def __init__(self, kind: str, store: PubSubStore, rc: Any = None,
                 dir: Path | None = None, db: Any = None) -> None:
        self.kind, self.store, self.rc, self.dir, self.db = kind, store, rc, dir, db

    async def now(self) -> int:
        """ms on the store's clock (Redis TIME for Redis)."""
        if self.rc is not None:
            seconds, micros = await self.rc.time()
            return int(seconds * 1000 + micros // 1000)
        return int(time.time() * 1000)

    async def leftovers(self) -> set[str]:
        """Whatever the store keeps: Redis keys, files, or the memory's nodes."""
        if self.rc is not None:
            return {k.decode() async for k in self.rc.scan_iter(match="*", count=1000)}
        if self.db is not None:
            return await sql_rows(self.db)
        if self.dir is not None:
            # .lock: the flock file every change takes (not data)
            return {str(p.relative_to(self.dir)) for p in self.dir.rglob("*")
                    if p.is_file() and p.name != ".lock"}
        assert isinstance(self.store, MemoryPubSub)
        return {f"{s}/{n}" for s, nodes in self.store._services.items() for n in nodes}


async def sql_rows(db: SqlStorage) -> set[str]:
    """Every row of the pubsub tables, as text."""
    async with db.transaction() as conn:
        return {f"{t.name}: {tuple(row)}" for t in PUBSUB_SCHEMA.sorted_tables
                for row in await conn.execute(t.select())}


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One redis-server for this module (no persistence), started only if a
    Redis case runs; stopped at the end."""
    with redis_server(tmp_path_factory.mktemp("pubsub-contract-redis")) as client:
        yield url_of(client)


@pytest.fixture(scope="module")
def replicated_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A primary with a synced replica, for the store that waits for it
    (WAIT) on every write; started only if such a case runs."""
    with primary_and_replica(tmp_path_factory.mktemp("pubsub-contract-wait")) as (primary, _):
        yield primary.url


@pytest.fixture(params=["memory", "fs", pytest.param("redis", marks=pytest.mark.redis),
                        pytest.param("redis-wait", marks=pytest.mark.redis),
                        *(f"sql-{kind}" for kind in SQL_KINDS)])
async def kit(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Kit]:
    if request.param.startswith("sql-"):
        db = sql_storage(request.param.removeprefix("sql-"), request, tmp_path)
        assert isinstance(db, SqlStorage)
        try:
            yield Kit(request.param, open_pubsub("sql", storage=db), db=db)
        finally:
            await db.close()
    elif request.param == "memory":
        yield Kit("memory", open_pubsub("memory"))
    elif request.param == "fs":
        yield Kit("fs", open_pubsub("fs", dir=tmp_path / "pubsub"), dir=tmp_path / "pubsub")
    else:
        from vinespy.cluster.connection import connect
        from vinespy.config import ClusterConfig
        # redis-wait: every write confirmed by the replica (WAIT 1).
        wait = request.param == "redis-wait"
        url = request.getfixturevalue("replicated_url" if wait else "redis_url")
        rc = connect(ClusterConfig(url=url, node="test"), socket_timeout=2 * TIMEOUT)
        await rc.flushall()
        store = open_pubsub("redis", redis=rc, wait_replicas=int(wait), wait_timeout=TIMEOUT)
        try:
            yield Kit(request.param, store, rc=rc)
        finally:
            await store.close()
            await rc.aclose()


@pytest.fixture
def ps(kit: Kit) -> PubSubStore:
    return kit.store


def ids(items: list[Item]) -> list[str]:
    return [i.id for i in items]


# ---------------------------------------------------------------------------
# nodes


async def doomed_and_kept(ps: PubSubStore) -> None:
    """Nodes "doomed" (configured, an affiliation, three subscribers, three
    items) and "kept" (a subscriber, an item) of SVC, for deletion tests."""
    await ps.create(SVC, "doomed", ALICE, CONFIG)
    await ps.create(SVC, "kept", ALICE, {})
    await ps.set_affiliation(SVC, "doomed", BOB, "publisher")
    for jid in (BOB, f"{CAROL}/phone", "odd:{jid}%@wonderland.lit/r:1"):
        assert await ps.subscribe(SVC, "doomed", jid, f"sub-{jid}")
    await ps.subscribe(SVC, "kept", BOB, "kept-bob")
    for n in range(3):
        await ps.publish(SVC, "doomed", f"i{n}", b"<x/>", ALICE, 10)
    await ps.publish(SVC, "kept", "k", b"<k/>", ALICE, 10)


def every_call(ps: PubSubStore) -> list[Callable[[], Awaitable[Any]]]:
    """One call of each PubSubStore method on node "n" of SVC."""
    return [
        lambda: ps.create(SVC, "n", ALICE, {}), lambda: ps.delete(SVC, "n"),
        lambda: ps.nodes(SVC), lambda: ps.get(SVC, "n"), lambda: ps.configure(SVC, "n", {}),
        lambda: ps.affiliations(SVC, "n"), lambda: ps.set_affiliation(SVC, "n", BOB, "member"),
        lambda: ps.subscriptions(SVC, "n"), lambda: ps.subscribe(SVC, "n", BOB, "s"),
        lambda: ps.unsubscribe(SVC, "n", BOB), lambda: ps.subscriptions_of(SVC, BOB),
        lambda: ps.publish(SVC, "n", "i", b"<x/>", ALICE, 1), lambda: ps.retract(SVC, "n", "i"),
        lambda: ps.items(SVC, "n"), lambda: ps.items(SVC, "n", ids=["i"]),
        lambda: ps.purge(SVC, "n"),
    ]


async def test_create_get_and_list_nodes(ps: PubSubStore, kit: Kit) -> None:
    """create stores owner, config and the time; the owner is affiliated
    "owner"; nodes() lists the service's names sorted, and no other service's."""
    before = await kit.now()
    assert await ps.create(SVC, "princely_musings", ALICE, CONFIG) is True
    assert await ps.create(SVC, "blog", BOB, {}) is True
    assert await ps.create("pubsub.example.org", "elsewhere", ALICE, {}) is True
    after = await kit.now()

    node = await ps.get(SVC, "princely_musings")
    assert node is not None
    assert (node.service, node.name, node.owner, node.config) == (
        SVC, "princely_musings", ALICE, CONFIG)
    assert before <= node.created <= after
    assert abs(node.created - time.time() * 1000) < 60_000     # ms, not s or µs
    blog = await ps.get(SVC, "blog")
    assert blog == PubSubNode(SVC, "blog", BOB, {}, blog.created if blog else 0)
    assert await ps.nodes(SVC) == ["blog", "princely_musings"]
    assert await ps.nodes("pubsub.example.org") == ["elsewhere"]
    assert await ps.nodes("nobody.example") == []
    assert await ps.affiliations(SVC, "princely_musings") == {ALICE: "owner"}
    assert await ps.get(SVC, "missing") is None


async def test_create_twice_is_false_and_changes_nothing(ps: PubSubStore) -> None:
    assert await ps.create(SVC, "n", ALICE, CONFIG) is True
    first = await ps.get(SVC, "n")
    assert await ps.create(SVC, "n", BOB, {"pubsub#title": "other"}) is False
    assert await ps.get(SVC, "n") == first
    assert await ps.affiliations(SVC, "n") == {ALICE: "owner"}
    assert await ps.nodes(SVC) == ["n"]


async def test_configure_replaces_the_config(ps: PubSubStore) -> None:
    await ps.create(SVC, "n", ALICE, CONFIG)
    assert await ps.configure(SVC, "n", {"pubsub#title": "Musings"}) is True
    node = await ps.get(SVC, "n")
    assert node is not None and node.config == {"pubsub#title": "Musings"}
    assert await ps.configure(SVC, "n", {}) is True
    node = await ps.get(SVC, "n")
    assert node is not None and node.config == {} and node.owner == ALICE
    assert await ps.configure(SVC, "missing", CONFIG) is False


async def test_answers_are_copies(ps: PubSubStore) -> None:
    """Changing what a store returned changes nothing stored."""
    await ps.create(SVC, "n", ALICE, CONFIG)
    await ps.subscribe(SVC, "n", BOB, "s")
    await ps.publish(SVC, "n", "i", b"<x/>", ALICE, 10)
    node = await ps.get(SVC, "n")
    assert node is not None
    node.config["pubsub#title"] = "changed"
    (await ps.affiliations(SVC, "n"))[BOB] = "owner"
    (await ps.subscriptions(SVC, "n"))[CAROL] = "s2"
    (await ps.subscriptions_of(SVC, BOB))["other"] = "s3"
    (await ps.items(SVC, "n"))[0].payload = b"<changed/>"
    node = await ps.get(SVC, "n")
    assert node is not None and node.config == CONFIG
    assert await ps.affiliations(SVC, "n") == {ALICE: "owner"}
    assert await ps.subscriptions(SVC, "n") == {BOB: "s"}
    assert await ps.subscriptions_of(SVC, BOB) == {"n": "s"}
    assert [i.payload for i in await ps.items(SVC, "n")] == [b"<x/>"]


async def test_delete_removes_the_node_and_all_of_it(ps: PubSubStore) -> None:
    """Config, affiliations, subscriptions (as subscriptions_of sees them) and
    items go; another node of the service and its subscriptions stay."""
    await doomed_and_kept(ps)

    assert await ps.delete(SVC, "doomed") is True

    assert await ps.get(SVC, "doomed") is None
    assert await ps.nodes(SVC) == ["kept"]
    assert await ps.subscriptions_of(SVC, BOB) == {"kept": "kept-bob"}
    assert await ps.subscriptions_of(SVC, f"{CAROL}/phone") == {}
    assert await ps.subscriptions_of(SVC, "odd:{jid}%@wonderland.lit/r:1") == {}
    assert await ps.items(SVC, "doomed") == []
    assert await ps.affiliations(SVC, "doomed") == {}
    assert await ps.subscriptions(SVC, "doomed") == {}
    assert ids(await ps.items(SVC, "kept")) == ["k"]
    assert await ps.delete(SVC, "doomed") is False

    # a node created again under the name starts empty
    assert await ps.create(SVC, "doomed", CAROL, {}) is True
    assert await ps.items(SVC, "doomed") == []
    assert await ps.subscriptions(SVC, "doomed") == {}
    assert await ps.affiliations(SVC, "doomed") == {CAROL: "owner"}
    node = await ps.get(SVC, "doomed")
    assert node is not None and node.config == {} and node.owner == CAROL


async def test_delete_of_the_last_node_leaves_nothing(ps: PubSubStore, kit: Kit) -> None:
    await ps.create(SVC, "only", ALICE, CONFIG)
    await ps.subscribe(SVC, "only", BOB, "s1")
    await ps.publish(SVC, "only", "i", b"<x/>", ALICE, 1)
    assert await kit.leftovers()
    assert await ps.delete(SVC, "only") is True
    assert await kit.leftovers() == set()


# ---------------------------------------------------------------------------
# affiliations and subscriptions


async def test_affiliations_set_change_and_remove(ps: PubSubStore) -> None:
    await ps.create(SVC, "n", ALICE, {})
    assert await ps.set_affiliation(SVC, "n", BOB, "publisher") is True
    assert await ps.set_affiliation(SVC, "n", CAROL, "outcast") is True
    assert await ps.set_affiliation(SVC, "n", "dave@wonderland.lit", "member") is True
    assert await ps.set_affiliation(SVC, "n", "eve@wonderland.lit", "publish-only") is True
    assert await ps.affiliations(SVC, "n") == {
        ALICE: "owner", BOB: "publisher", CAROL: "outcast", "dave@wonderland.lit": "member",
        "eve@wonderland.lit": "publish-only"}
    assert await ps.set_affiliation(SVC, "n", BOB, "owner") is True
    assert await ps.set_affiliation(SVC, "n", CAROL, None) is True
    assert await ps.set_affiliation(SVC, "n", "dave@wonderland.lit", "none") is True
    assert await ps.set_affiliation(SVC, "n", "eve@wonderland.lit", None) is True
    assert await ps.set_affiliation(SVC, "n", "nobody@wonderland.lit", None) is True
    assert await ps.affiliations(SVC, "n") == {ALICE: "owner", BOB: "owner"}
    with pytest.raises(ValueError):
        await ps.set_affiliation(SVC, "n", BOB, "king")
    with pytest.raises(ValueError):
        await ps.set_affiliation(SVC, "missing", BOB, "")
    assert await ps.affiliations(SVC, "n") == {ALICE: "owner", BOB: "owner"}


async def test_subscribe_unsubscribe_bare_and_full_jids(ps: PubSubStore) -> None:
    await ps.create(SVC, "n", ALICE, {})
    assert await ps.subscribe(SVC, "n", BOB, "s-bob") is True
    assert await ps.subscribe(SVC, "n", f"{CAROL}/balcony", "s-carol") is True
    assert await ps.subscriptions(SVC, "n") == {BOB: "s-bob", f"{CAROL}/balcony": "s-carol"}
    assert await ps.subscribe(SVC, "n", BOB, "s-bob-2") is True      # replaces the subid
    assert await ps.subscriptions(SVC, "n") == {BOB: "s-bob-2", f"{CAROL}/balcony": "s-carol"}
    assert await ps.subscriptions_of(SVC, BOB) == {"n": "s-bob-2"}
    assert await ps.subscriptions_of(SVC, CAROL) == {}       # only the full JID subscribed
    assert await ps.unsubscribe(SVC, "n", BOB) is True
    assert await ps.unsubscribe(SVC, "n", BOB) is False
    assert await ps.unsubscribe(SVC, "n", CAROL) is False
    assert await ps.subscriptions(SVC, "n") == {f"{CAROL}/balcony": "s-carol"}
    assert await ps.subscriptions_of(SVC, BOB) == {}


async def test_subscriptions_of_across_nodes_and_services(ps: PubSubStore) -> None:
    for node in ("a", "b", "c", "d"):
        await ps.create(SVC, node, ALICE, {})
    await ps.create("other.wonderland.lit", "a", ALICE, {})
    for node in ("a", "b", "c"):
        await ps.subscribe(SVC, node, BOB, f"sub-{node}")
    await ps.subscribe(SVC, "d", CAROL, "sub-d")
    await ps.subscribe("other.wonderland.lit", "a", BOB, "sub-other")
    assert await ps.subscriptions_of(SVC, BOB) == {"a": "sub-a", "b": "sub-b", "c": "sub-c"}
    assert await ps.subscriptions_of("other.wonderland.lit", BOB) == {"a": "sub-other"}
    assert await ps.subscriptions_of("nobody.example", BOB) == {}
    await ps.unsubscribe(SVC, "b", BOB)
    await ps.delete(SVC, "c")
    assert await ps.subscriptions_of(SVC, BOB) == {"a": "sub-a"}
    assert await ps.subscriptions_of(SVC, CAROL) == {"d": "sub-d"}


# ---------------------------------------------------------------------------
# items


async def test_publish_trims_to_max_items_and_returns_the_evicted(ps: PubSubStore) -> None:
    await ps.create(SVC, "n", ALICE, {})
    evicted = [await ps.publish(SVC, "n", f"i{n}", f"<e n='{n}'/>".encode(), ALICE, 3)
               for n in range(1, 6)]
    assert evicted == [[], [], [], ["i1"], ["i2"]]
    assert ids(await ps.items(SVC, "n")) == ["i5", "i4", "i3"]
    # a smaller limit evicts several at once, oldest first
    assert await ps.publish(SVC, "n", "i6", b"<e/>", ALICE, 2) == ["i3", "i4"]
    assert ids(await ps.items(SVC, "n")) == ["i6", "i5"]
    # no limit
    for n in range(7, 12):
        assert await ps.publish(SVC, "n", f"i{n}", b"<e/>", ALICE, None) == []
    assert len(await ps.items(SVC, "n")) == 7


async def test_publish_of_5_items_with_max_3_evicts_the_2_oldest(ps: PubSubStore) -> None:
    await ps.create(SVC, "n", ALICE, {})
    gone: list[str] = []
    for n in range(5):
        out = await ps.publish(SVC, "n", f"item-{n}", b"<p/>", ALICE, 3)
        assert out is not None
        gone += out
    assert gone == ["item-0", "item-1"]
    assert ids(await ps.items(SVC, "n")) == ["item-4", "item-3", "item-2"]


async def test_republishing_an_id_replaces_it_and_makes_it_newest(ps: PubSubStore,
                                                                  kit: Kit) -> None:
    await ps.create(SVC, "n", ALICE, {})
    for n in range(3):
        await ps.publish(SVC, "n", f"i{n}", f"<v{n}/>".encode(), ALICE, 3)
    before = await kit.now()
    assert await ps.publish(SVC, "n", "i0", b"<new/>", f"{BOB}/desk", 3) == []
    after = await kit.now()
    items = await ps.items(SVC, "n")
    assert ids(items) == ["i0", "i2", "i1"]
    assert items[0].payload == b"<new/>" and items[0].publisher == f"{BOB}/desk"
    assert before <= items[0].published <= after
    # the next publication evicts i1, the oldest now, not the republished i0
    assert await ps.publish(SVC, "n", "i3", b"<v3/>", ALICE, 3) == ["i1"]
    assert ids(await ps.items(SVC, "n")) == ["i3", "i0", "i2"]


async def test_items_max_items_newest_first(ps: PubSubStore) -> None:
    await ps.create(SVC, "n", ALICE, {})
    for n in range(5):
        await ps.publish(SVC, "n", f"i{n}", f"<v n='{n}'/>".encode(), ALICE, 10)
    two = await ps.items(SVC, "n", max_items=2)
    assert ids(two) == ["i4", "i3"]
    assert two[0].payload == b"<v n='4'/>"
    assert two[0].published >= two[1].published
    assert ids(await ps.items(SVC, "n", max_items=100)) == ["i4", "i3", "i2", "i1", "i0"]
    assert await ps.items(SVC, "n", max_items=0) == []
    with pytest.raises(ValueError):
        await ps.items(SVC, "n", max_items=-1)
    with pytest.raises(ValueError):
        await ps.items(SVC, "n", max_items=True)


async def test_items_by_ids_in_the_order_asked(ps: PubSubStore) -> None:
    await ps.create(SVC, "n", ALICE, {})
    for n in range(5):
        await ps.publish(SVC, "n", f"i{n}", f"<v{n}/>".encode(), ALICE, 10)
    got = await ps.items(SVC, "n", ids=["i1", "nope", "i4", "i0", "i1"])
    assert ids(got) == ["i1", "i4", "i0"]
    assert [i.payload for i in got] == [b"<v1/>", b"<v4/>", b"<v0/>"]
    assert ids(await ps.items(SVC, "n", ids=["i3", "i2", "i1"], max_items=2)) == ["i3", "i2"]
    assert await ps.items(SVC, "n", ids=["i3"], max_items=0) == []
    assert await ps.items(SVC, "n", ids=[]) == []
    assert await ps.items(SVC, "n", ids=["nope"]) == []


@pytest.mark.parametrize("payload", [
    "<entry xmlns='http://www.w3.org/2005/Atom'>1:2:3 ünï\x00</entry>".encode(),
    b"\xff\xfe<not-utf8 \xc3\x28/>\x00",
    b"",
], ids=["utf8", "binary", "empty"])
async def test_item_payload_and_publisher_round_trip_byte_for_byte(
        ps: PubSubStore, kit: Kit, payload: bytes) -> None:
    """Payloads are opaque bytes (':', NUL, invalid UTF-8 included);
    publishers may hold ':' and non-ASCII text; the time is in ms."""
    await ps.create(SVC, "n", ALICE, {})
    publisher = "jüliet@capulet.lit/balcony:2 {x}"
    before = await kit.now()
    await ps.publish(SVC, "n", "id:with:colons {}", payload, publisher, 5)
    after = await kit.now()
    [item] = await ps.items(SVC, "n")
    assert item.id == "id:with:colons {}"
    assert item.payload == payload and item.publisher == publisher
    assert isinstance(item.payload, bytes)
    assert before <= item.published <= after
    assert abs(item.published - time.time() * 1000) < 60_000     # ms, not s or µs
    assert await ps.items(SVC, "n", ids=["id:with:colons {}"]) == [item]


async def test_retract(ps: PubSubStore) -> None:
    await ps.create(SVC, "n", ALICE, {})
    await ps.publish(SVC, "n", "a", b"<a/>", ALICE, 10)
    await ps.publish(SVC, "n", "b", b"<b/>", ALICE, 10)
    assert await ps.retract(SVC, "n", "a") is True
    assert await ps.retract(SVC, "n", "a") is False
    assert await ps.retract(SVC, "n", "never") is False
    assert ids(await ps.items(SVC, "n")) == ["b"]


async def test_purge(ps: PubSubStore) -> None:
    await ps.create(SVC, "n", ALICE, CONFIG)
    await ps.subscribe(SVC, "n", BOB, "s")
    for n in range(4):
        await ps.publish(SVC, "n", f"i{n}", b"<x/>", ALICE, 10)
    assert await ps.purge(SVC, "n") == 4
    assert await ps.items(SVC, "n") == []
    assert await ps.purge(SVC, "n") == 0
    node = await ps.get(SVC, "n")                       # the node stays
    assert node is not None and node.config == CONFIG
    assert await ps.subscriptions(SVC, "n") == {BOB: "s"}
    # publishing after a purge still orders by time
    await ps.publish(SVC, "n", "x", b"<x/>", ALICE, 10)
    await ps.publish(SVC, "n", "y", b"<y/>", ALICE, 10)
    assert ids(await ps.items(SVC, "n")) == ["y", "x"]


async def test_concurrent_publishes_leave_exactly_max_items(ps: PubSubStore) -> None:
    """50 publishes at once, max_items 10: exactly 10 stay, the other 40 are
    each returned as evicted exactly once."""
    await ps.create(SVC, "n", ALICE, {})
    results = await asyncio.gather(*(ps.publish(SVC, "n", f"i{n}", b"<x/>", ALICE, 10)
                                     for n in range(50)))
    evicted = [i for r in results if r is not None for i in r]
    kept = ids(await ps.items(SVC, "n"))
    assert len(kept) == 10
    assert len(evicted) == 40 == len(set(evicted))
    assert set(kept) | set(evicted) == {f"i{n}" for n in range(50)}


async def test_concurrent_changes_of_one_node_are_all_kept(ps: PubSubStore) -> None:
    """Subscriptions, affiliations and publications made at once on one node
    are all there afterwards (no lost update)."""
    await ps.create(SVC, "n", ALICE, {})
    await asyncio.gather(
        *(ps.subscribe(SVC, "n", f"u{n}@wonderland.lit", f"s{n}") for n in range(20)),
        *(ps.set_affiliation(SVC, "n", f"m{n}@wonderland.lit", "member") for n in range(20)),
        *(ps.publish(SVC, "n", f"i{n}", b"<x/>", ALICE, None) for n in range(20)))
    assert len(await ps.subscriptions(SVC, "n")) == 20
    assert len(await ps.affiliations(SVC, "n")) == 21
    assert len(await ps.items(SVC, "n")) == 20


async def test_concurrent_creates_of_one_node_one_wins(ps: PubSubStore) -> None:
    results = await asyncio.gather(*(ps.create(SVC, "n", f"u{n}@wonderland.lit", {})
                                     for n in range(20)))
    assert sorted(results) == [False] * 19 + [True]
    winner = f"u{results.index(True)}@wonderland.lit"
    node = await ps.get(SVC, "n")
    assert node is not None and node.owner == winner
    assert await ps.affiliations(SVC, "n") == {winner: "owner"}


# ---------------------------------------------------------------------------
# names


NAMES = ["x", "x:items", "x%3Aitems", "{x}:", ":", "x:config", "", "../x", "..", ".",
         "a/b", "a%2Fb", "/etc/passwd", "X", "x.json", "_x", "~x", "ünï", "a\\b",
         "x" * 300, "x" * 299 + "y"]


async def test_names_do_not_collide(ps: PubSubStore) -> None:
    """Nodes whose names look like key or path syntax, the empty one, case
    variants and long ones, in a service whose name has ':' '{' '}' '%' '/':
    each keeps its own config, items, affiliations and subscriptions."""
    svc = "pub:sub{1}%/../.lit"
    for n, name in enumerate(NAMES):
        assert await ps.create(svc, name, ALICE, {"pubsub#title": name}) is True
        await ps.publish(svc, name, "same-id", f"<n{n}/>".encode(), ALICE, 5)
        await ps.subscribe(svc, name, BOB, f"sub{n}")
        await ps.set_affiliation(svc, name, f"p{n}@wonderland.lit", "publisher")
    assert await ps.nodes(svc) == sorted(NAMES)
    for n, name in enumerate(NAMES):
        node = await ps.get(svc, name)
        assert node is not None and node.config == {"pubsub#title": name}
        [item] = await ps.items(svc, name)
        assert item.payload == f"<n{n}/>".encode()
        assert await ps.subscriptions(svc, name) == {BOB: f"sub{n}"}
        assert await ps.affiliations(svc, name) == {
            ALICE: "owner", f"p{n}@wonderland.lit": "publisher"}
    assert await ps.subscriptions_of(svc, BOB) == {name: f"sub{n}"
                                                   for n, name in enumerate(NAMES)}

    # deleting "x" leaves "x:items" whole, and the reverse
    assert await ps.delete(svc, "x") is True
    assert ids(await ps.items(svc, "x:items")) == ["same-id"]
    assert await ps.get(svc, "x:items") is not None
    assert await ps.delete(svc, "x:items") is True
    assert ids(await ps.items(svc, "x%3Aitems")) == ["same-id"]
    assert await ps.delete(svc, "x" * 300) is True
    assert await ps.get(svc, "x" * 299 + "y") is not None
    assert await ps.subscriptions_of(svc, BOB) == {name: f"sub{n}"
                                                   for n, name in enumerate(NAMES)
                                                   if name not in ("x", "x:items", "x" * 300)}


@pytest.mark.parametrize("a, b", [("s", "s:node:x"), ("s", "S"), ("", "."), ("..", "../s"),
                                  ("a/b", "a%2Fb"), ("s" * 300, "s" * 299 + "t")])
async def test_services_do_not_collide(ps: PubSubStore, a: str, b: str) -> None:
    await ps.create(a, "x", ALICE, {"k": "a"})
    await ps.create(b, "y", ALICE, {"k": "b"})
    await ps.create(b, "x", BOB, {"k": "b"})
    await ps.publish(b, "x", "i", b"<t/>", ALICE, 5)
    await ps.subscribe(b, "x", CAROL, "sb")
    assert await ps.nodes(a) == ["x"] and await ps.nodes(b) == ["x", "y"]
    assert await ps.items(a, "x") == []
    node = await ps.get(a, "x")
    assert node is not None and node.config == {"k": "a"} and node.owner == ALICE
    assert await ps.subscriptions_of(a, CAROL) == {}
    assert await ps.subscriptions_of(b, CAROL) == {"x": "sb"}
    assert await ps.delete(a, "x") is True
    assert await ps.get(b, "x") is not None


async def test_last_items_of_many_services_at_once(ps: PubSubStore) -> None:
    """last_items: for each named node of each service (in the order asked,
    then by node name): its config, the JID's affiliation and the newest
    item (after a republish and a retract, too); services without those
    nodes, nodes not named, and names with key or path syntax are left out
    or kept apart."""
    svcs = [f"u{i}@wonderland.lit" for i in range(30)] + ["pub:sub{1}%/../.lit"]
    for n, svc in enumerate(svcs):
        if n % 3 == 0:
            continue                        # a third have no nodes at all
        await ps.create(svc, "mood", svc, {"pubsub#title": f"mood {n}"})
        await ps.create(svc, "x:items", svc, {"k": "v"})
        await ps.create(svc, "other", svc, {})
        await ps.publish(svc, "other", "o", b"<o/>", svc, 5)
        for i in range(3):
            await ps.publish(svc, "mood", f"m{i}", f"<m{n}-{i}/>".encode(), svc, 5)
        if n % 3 == 1:
            await ps.publish(svc, "mood", "m0", f"<again{n}/>".encode(), svc, 5)
    await ps.set_affiliation(svcs[1], "mood", BOB, "member")
    await ps.set_affiliation(svcs[2], "mood", BOB, "outcast")
    await ps.retract(svcs[2], "mood", "m2")
    asked = list(reversed(svcs)) + ["nobody@wonderland.lit", svcs[1]]
    found = await ps.last_items(asked, {"mood", "x:items", "ghost"}, BOB)
    expected = [(s, name) for s in reversed(svcs) if svcs.index(s) % 3
                for name in ("mood", "x:items")]
    assert [(f.service, f.node) for f in found] == expected
    by = {(f.service, f.node): f for f in found}
    for n, svc in enumerate(svcs):
        if n % 3 == 0:
            continue
        mood, other = by[(svc, "mood")], by[(svc, "x:items")]
        assert mood.config == {"pubsub#title": f"mood {n}"} and other.config == {"k": "v"}
        assert other.item is None and other.affiliation == "none"
        assert mood.item is not None and mood.item.publisher == svc
        if n % 3 == 1:
            assert (mood.item.id, mood.item.payload) == ("m0", f"<again{n}/>".encode())
        elif n == 2:
            assert (mood.item.id, mood.item.payload) == ("m1", b"<m2-1/>")
        else:
            assert (mood.item.id, mood.item.payload) == ("m2", f"<m{n}-2/>".encode())
    assert by[(svcs[1], "mood")].affiliation == "member"
    assert by[(svcs[2], "mood")].affiliation == "outcast"
    assert by[(svcs[4], "mood")].affiliation == "none"
    found = await ps.last_items(svcs, {"mood"}, svcs[1])
    assert by[(svcs[1], "mood")].item is not None
    assert [f.affiliation for f in found if f.service == svcs[1]] == ["owner"]
    assert await ps.last_items([], {"mood"}, BOB) == []
    assert await ps.last_items(svcs, set(), BOB) == []


# ---------------------------------------------------------------------------
# missing nodes, bad arguments


async def test_operations_on_a_missing_node_answer_no_and_store_nothing(
        ps: PubSubStore, kit: Kit) -> None:
    assert await ps.get(SVC, "ghost") is None
    assert await ps.configure(SVC, "ghost", CONFIG) is False
    assert await ps.delete(SVC, "ghost") is False
    assert await ps.nodes(SVC) == []
    assert await ps.affiliations(SVC, "ghost") == {}
    assert await ps.set_affiliation(SVC, "ghost", BOB, "publisher") is False
    assert await ps.set_affiliation(SVC, "ghost", BOB, None) is False
    assert await ps.subscriptions(SVC, "ghost") == {}
    assert await ps.subscribe(SVC, "ghost", BOB, "s") is False
    assert await ps.unsubscribe(SVC, "ghost", BOB) is False
    assert await ps.subscriptions_of(SVC, BOB) == {}
    assert await ps.publish(SVC, "ghost", "i", b"<x/>", ALICE, 10) is None
    assert await ps.retract(SVC, "ghost", "i") is False
    assert await ps.items(SVC, "ghost") == []
    assert await ps.items(SVC, "ghost", ids=["i"]) == []
    assert await ps.purge(SVC, "ghost") is None
    assert await kit.leftovers() == set()
    # nor after the node is deleted
    await ps.create(SVC, "gone", ALICE, {})
    await ps.delete(SVC, "gone")
    assert await ps.publish(SVC, "gone", "i", b"<x/>", ALICE, 10) is None
    assert await ps.subscribe(SVC, "gone", BOB, "s") is False
    assert await ps.set_affiliation(SVC, "gone", BOB, "member") is False
    assert await ps.configure(SVC, "gone", {}) is False
    assert await ps.purge(SVC, "gone") is None
    assert await ps.get(SVC, "gone") is None
    assert await kit.leftovers() == set()


async def test_bad_arguments_raise_and_change_nothing(ps: PubSubStore) -> None:
    await ps.create(SVC, "n", ALICE, {})
    with pytest.raises(ValueError):
        await ps.publish(SVC, "n", "i", b"<x/>", ALICE, 0)
    with pytest.raises(ValueError):
        await ps.publish(SVC, "n", "i", b"<x/>", ALICE, -3)
    with pytest.raises(ValueError):
        await ps.publish(SVC, "n", "i", b"<x/>", ALICE, True)
    with pytest.raises(TypeError):
        await ps.publish(SVC, "n", "i", "<x/>", ALICE, 1)        # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await ps.configure(SVC, "n", {"pubsub#max_items": 10})   # type: ignore[dict-item]
    with pytest.raises(TypeError):
        await ps.create(SVC, "m", ALICE, {"a": None})            # type: ignore[dict-item]
    with pytest.raises(TypeError):
        await ps.get(SVC, 7)                                     # type: ignore[arg-type]
    assert await ps.items(SVC, "n") == []
    assert await ps.nodes(SVC) == ["n"]
    node = await ps.get(SVC, "n")
    assert node is not None and node.config == {}


# ---------------------------------------------------------------------------
# the factory


def test_open_pubsub_kinds(tmp_path: Path) -> None:
    assert type(open_pubsub("memory")) is MemoryPubSub
    fs = open_pubsub("fs", dir=tmp_path / "p")
    assert type(fs) is FsPubSub and isinstance(fs, PubSubStore)
    assert fs.dir == tmp_path / "p"                              # type: ignore[attr-defined]
    assert not (tmp_path / "p").exists()                         # nothing written yet
    with pytest.raises(StorageError, match="unknown pubsub storage 'nosuch'"):
        open_pubsub("nosuch")
    with pytest.raises(TypeError):
        open_pubsub("fs")


def test_redis_store_is_a_pubsub_store_and_old_imports_work() -> None:
    from vinespy.storage.pubsub import redis as cluster_pubsub
    assert issubclass(cluster_pubsub.RedisPubSub, PubSubStore)
    assert cluster_pubsub.Item is Item and cluster_pubsub.PubSubNode is PubSubNode
    assert "publish-only" in cluster_pubsub.AFFILIATIONS


def test_standalone_stores_do_not_import_redis(tmp_path: Path) -> None:
    """memory, fs and sql (a standalone sql host) work without redis-py."""
    code = ("import asyncio, sys\n"
            "from vinespy.storage.pubsub import open_pubsub\n"
            "from vinespy.storage.sql import SqlStorage\n"
            "async def main():\n"
            f"    db = SqlStorage('sqlite:///{tmp_path / 'v.db'}')\n"
            f"    for ps in (open_pubsub('memory'), open_pubsub('fs', dir={str(tmp_path)!r}),\n"
            "               open_pubsub('sql', storage=db, owned=True)):\n"
            "        await ps.create('s', 'n', 'a@b', {})\n"
            "        await ps.publish('s', 'n', 'i', b'<x/>', 'a@b', 1)\n"
            "        await ps.close()\n"
            "asyncio.run(main())\n"
            "assert not [m for m in sys.modules if m.split('.')[0] == 'redis'], 'redis'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60,
                   cwd=Path(__file__).resolve().parents[2])


# ---------------------------------------------------------------------------
# fs only


async def test_fs_data_survives_a_restart(tmp_path: Path) -> None:
    """A new FsPubSub on the same directory (a restarted server) reads back
    every node, its owner, time, config, affiliations, subscriptions and
    items with their order, payloads and times, and goes on from there."""
    first = FsPubSub(tmp_path)
    await first.create(SVC, "n", ALICE, CONFIG)
    await first.create(SVC, "", BOB, {})
    await first.create("other", "n", CAROL, {})
    await first.set_affiliation(SVC, "n", BOB, "publisher")
    await first.subscribe(SVC, "n", f"{CAROL}/r", "s1")
    await first.subscribe(SVC, "", f"{CAROL}/r", "s2")
    for n in range(4):
        await first.publish(SVC, "n", f"i{n}", bytes([n, 0xff]) + b"<x/>", ALICE, 3)
    await first.publish(SVC, "n", "i1", b"<again/>", BOB, 3)
    node, items = await first.get(SVC, "n"), await first.items(SVC, "n")
    await first.close()

    again = FsPubSub(tmp_path)
    assert await again.nodes(SVC) == ["", "n"]
    assert await again.nodes("other") == ["n"]
    assert await again.get(SVC, "n") == node
    assert await again.affiliations(SVC, "n") == {ALICE: "owner", BOB: "publisher"}
    assert await again.subscriptions(SVC, "n") == {f"{CAROL}/r": "s1"}
    assert await again.subscriptions_of(SVC, f"{CAROL}/r") == {"n": "s1", "": "s2"}
    assert await again.items(SVC, "n") == items
    assert ids(items) == ["i1", "i3", "i2"]
    # the order goes on: i2 is the oldest, then i3
    assert await again.publish(SVC, "n", "i9", b"<9/>", ALICE, 2) == ["i2", "i3"]
    assert await again.create(SVC, "n", BOB, {}) is False


async def test_fs_layout_modes_and_format(tmp_path: Path) -> None:
    root = tmp_path / "pubsub"
    ps = FsPubSub(root)
    await ps.create(SVC, "Blog/Ünï", ALICE, CONFIG)
    await ps.subscribe(SVC, "Blog/Ünï", BOB, "s")
    await ps.publish(SVC, "Blog/Ünï", "t", "<ü/>".encode(), ALICE, 5)
    await ps.publish(SVC, "Blog/Ünï", "b", b"\xff<x/>", ALICE, 5)
    svc_dir = root / "_pubsub%2Ewonderland%2Elit"
    path = svc_dir / "_%42log%2F%C3%9Cn%C3%AF.json"
    assert sorted(p.name for p in root.iterdir()) == [".lock", svc_dir.name]
    assert stat.S_IMODE((root / ".lock").stat().st_mode) == 0o600
    assert sorted(p.name for p in svc_dir.iterdir()) == [path.name]   # no temp file left
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE(svc_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = json.loads(path.read_bytes())
    assert doc["format"] == 1 and doc["service"] == SVC and doc["node"] == "Blog/Ünï"
    assert doc["owner"] == ALICE and doc["config"] == CONFIG
    assert doc["affiliations"] == {ALICE: "owner"} and doc["subscriptions"] == {BOB: "s"}
    assert [(i["id"], i.get("text"), i.get("base64")) for i in doc["items"]] == [
        ("t", "<ü/>", None), ("b", None, base64.b64encode(b"\xff<x/>").decode())]


async def test_fs_names_stay_inside_the_directory(tmp_path: Path) -> None:
    """Services and nodes named like paths make one directory per service
    right under the root and one file per node in it, nothing elsewhere."""
    root = tmp_path / "root"
    ps = FsPubSub(root)
    names = ["../x", "..", ".", "", "a/b", "/abs", "x/../../y", ".hidden", "a\x00b"]
    for svc in names:
        for node in names:
            assert await ps.create(svc, node, ALICE, {}) is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]
    dirs = [p for p in root.iterdir() if p.name != ".lock"]
    assert len(dirs) == len(names) and all(d.is_dir() for d in dirs)
    for d in dirs:
        files = list(d.iterdir())
        assert len(files) == len(names)
        for f in files:
            assert f.is_file() and f.parent == d and f.name.startswith("_")
            assert f.name.endswith(".json") and "/" not in f.name
    for svc in names:
        assert await ps.nodes(svc) == sorted(names)


async def test_fs_runs_file_io_outside_the_event_loop(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = asyncio.to_thread

    async def spy(fn: Callable[..., Any], *args: Any) -> Any:
        calls.append(getattr(fn, "__name__", "?"))
        return await real(fn, *args)

    monkeypatch.setattr(asyncio, "to_thread", spy)
    ps = FsPubSub(tmp_path)
    await ps.create(SVC, "n", ALICE, {})
    await ps.publish(SVC, "n", "i", b"<x/>", ALICE, 1)
    await ps.items(SVC, "n")
    await ps.subscriptions_of(SVC, BOB)
    assert len(calls) == 4


def node_file(root: Path, service: str = SVC, node: str = "n") -> Path:
    [path] = [p for p in root.rglob("*.json")
              if json.loads(p.read_bytes()).get("node") == node
              and json.loads(p.read_bytes()).get("service") == service]
    return path


def edit(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    def corrupt(path: Path) -> None:
        doc = json.loads(path.read_bytes())
        change(doc)
        path.write_text(json.dumps(doc))
    return corrupt


def write(data: bytes) -> Callable[[Path], None]:
    def corrupt(path: Path) -> None:
        path.write_bytes(data)
    return corrupt


CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "empty": write(b""),
    "not_json": write(b"{\"format\": 1, "),
    "not_utf8": write(b"\xff\xfe{}"),
    "a_list": write(b"[]"),
    "format_2": edit(lambda d: d.update(format=2)),
    "no_format": edit(lambda d: d.pop("format")),
    "no_owner": edit(lambda d: d.pop("owner")),
    "created_text": edit(lambda d: d.update(created="yesterday")),
    "created_bool": edit(lambda d: d.update(created=True)),
    "created_negative": edit(lambda d: d.update(created=-1)),
    "config_int": edit(lambda d: d["config"].update({"pubsub#max_items": 10})),
    "config_list": edit(lambda d: d.update(config=[])),
    "unknown_affiliation": edit(lambda d: d["affiliations"].update({BOB: "emperor"})),
    "subscriptions_null": edit(lambda d: d.update(subscriptions=None)),
    "items_object": edit(lambda d: d.update(items={})),
    "item_not_object": edit(lambda d: d["items"].append("i2")),
    "item_without_id": edit(lambda d: d["items"][0].pop("id")),
    "item_twice": edit(lambda d: d["items"].append(dict(d["items"][0]))),
    "item_bad_base64": edit(lambda d: d["items"][0].update(base64="**notb64**")),
    "item_text_and_base64": edit(lambda d: d["items"][0].update(text="<x/>")),
    "item_no_payload": edit(lambda d: d["items"][0].pop("base64")),
    "item_time_text": edit(lambda d: d["items"][0].update(published="now")),
    "item_publisher_null": edit(lambda d: d["items"][0].update(publisher=None)),
    "other_node": edit(lambda d: d.update(node="m")),
    "other_service": edit(lambda d: d.update(service="elsewhere")),
}

READS: dict[str, Callable[[FsPubSub], Awaitable[Any]]] = {
    "get": lambda ps: ps.get(SVC, "n"),
    "items": lambda ps: ps.items(SVC, "n"),
    "affiliations": lambda ps: ps.affiliations(SVC, "n"),
    "subscriptions_of": lambda ps: ps.subscriptions_of(SVC, CAROL),
    "publish": lambda ps: ps.publish(SVC, "n", "j", b"<y/>", ALICE, 10),
    "subscribe": lambda ps: ps.subscribe(SVC, "n", BOB, "s"),
    "create": lambda ps: ps.create(SVC, "n", BOB, {}),
}


@pytest.mark.parametrize("read", sorted(READS))
@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
async def test_fs_corrupt_file_raises_storage_error(tmp_path: Path, corruption: str,
                                                    read: str) -> None:
    """A node file this module did not write raises StorageError (never a
    bare exception) and is left as it is."""
    ps = FsPubSub(tmp_path)
    await ps.create(SVC, "n", ALICE, CONFIG)
    await ps.subscribe(SVC, "n", CAROL, "s")
    await ps.publish(SVC, "n", "i", b"\xff<x/>", ALICE, 10)      # stored as base64
    path = node_file(tmp_path)
    CORRUPTIONS[corruption](path)
    before = path.read_bytes()
    with pytest.raises(StorageError) as info:
        await READS[read](ps)
    msg = str(info.value)
    assert msg.startswith("corrupt pubsub "), msg
    assert "\n" not in msg
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]


async def test_fs_corrupt_hashed_name_breaks_the_listing(tmp_path: Path) -> None:
    """A long (hashed) node name is read from its file by nodes(): a corrupt
    file or one holding another node raises StorageError."""
    ps = FsPubSub(tmp_path)
    long, other = "n" * 300, "m" * 300
    await ps.create(SVC, long, ALICE, {})
    await ps.create(SVC, other, ALICE, {})
    assert await ps.nodes(SVC) == [other, long]
    path, other_path = node_file(tmp_path, node=long), node_file(tmp_path, node=other)
    assert "~" in path.name and "~" in other_path.name
    path.write_bytes(b"garbage")
    with pytest.raises(StorageError, match="^corrupt pubsub"):
        await ps.nodes(SVC)
    path.write_bytes(other_path.read_bytes())
    with pytest.raises(StorageError, match="^corrupt pubsub"):
        await ps.nodes(SVC)
    with pytest.raises(StorageError, match="^corrupt pubsub"):
        await ps.get(SVC, long)


async def test_fs_os_errors_raise_storage_error(tmp_path: Path) -> None:
    """The directory is a file: every call raises StorageError with the
    OSError as its cause."""
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    ps = FsPubSub(blocker)
    calls = every_call(ps)
    for call in calls:
        with pytest.raises(StorageError) as info:
            await call()
        assert isinstance(info.value.__cause__, OSError)
        assert str(info.value).startswith("pubsub ")
    assert blocker.read_text() == "not a directory"


async def test_fs_a_node_file_that_is_a_directory_raises_storage_error(tmp_path: Path) -> None:
    ps = FsPubSub(tmp_path)
    await ps.create(SVC, "n", ALICE, {})
    path = node_file(tmp_path)
    path.unlink()
    path.mkdir()
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: ps.get(SVC, "n"), lambda: ps.publish(SVC, "n", "i", b"<x/>", ALICE, 1),
        lambda: ps.create(SVC, "n", ALICE, {}), lambda: ps.delete(SVC, "n"),
        lambda: ps.subscriptions_of(SVC, BOB)]
    for call in calls:
        with pytest.raises(StorageError) as info:
            await call()
        assert isinstance(info.value.__cause__, OSError)
    assert path.is_dir()


def test_fs_changes_from_two_processes_are_all_kept(tmp_path: Path) -> None:
    """The server and an operator's `vinespy pubsub` command share the
    directory: two processes publishing 40 items each to one node at the
    same time lose none (each read-modify-write holds the directory's flock)."""
    root = tmp_path / "root"
    asyncio.run(FsPubSub(root).create(SVC, "n", ALICE, {}))
    code = (
        "import asyncio, sys\n"
        "from vinespy.storage.pubsub.fs import FsPubSub\n"
        "async def main():\n"
        "    ps = FsPubSub(sys.argv[1])\n"
        "    for i in range(40):\n"
        f"        await ps.publish({SVC!r}, 'n', sys.argv[2] + str(i), b'<x/>', {ALICE!r}, 1000)\n"
        "asyncio.run(main())\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(root), tag]) for tag in "ab"]
    for p in procs:
        assert p.wait(timeout=60) == 0
    items = asyncio.run(FsPubSub(root).items(SVC, "n"))
    assert sorted(i.id for i in items) == sorted(f"{t}{i}" for t in "ab" for i in range(40))
