"""The cluster's pubsub storage (vinespy/cluster/pubsub.py) against a real
redis-server.

One throw-away ``redis-server`` (no persistence) serves the module; every
test starts from an empty database (FLUSHALL) and checks what the storage
answers and, where it matters, the keys it left in Redis (SCAN, DBSIZE).
No mocks: corrupt data is written into Redis by hand.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

import pytest
from redis.exceptions import RedisError

from tests.redisproc import redis_server, url_of
from tests.conftest import free_port
from vinespy.cluster import pubsub
from vinespy.cluster.connection import connect
from vinespy.cluster.pubsub import Item, PubSubNode, RedisPubSub
from vinespy.config import ClusterConfig
from vinespy.storage import StorageError

pytestmark = pytest.mark.redis

TIMEOUT = 10.0
SVC = "pubsub.wonderland.lit"
ALICE = "alice@wonderland.lit"
BOB = "bob@wonderland.lit"
CAROL = "carol@wonderland.lit"
CONFIG = {"pubsub#max_items": "10", "pubsub#access_model": "open"}


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One redis-server for this module (no persistence); stopped at the end."""
    with redis_server(tmp_path_factory.mktemp("pubsub-redis")) as client:
        yield url_of(client)


@pytest.fixture
async def rc(redis_url: str) -> AsyncIterator[Any]:
    """A client of that server (binary replies, as the cluster's), database flushed."""
    c = connect(ClusterConfig(url=redis_url, node="test"))
    await c.flushall()
    try:
        yield c
    finally:
        await c.aclose()


@pytest.fixture
def ps(rc: Any) -> RedisPubSub:
    return RedisPubSub(rc)


async def all_keys(rc: Any, pattern: str = "*") -> set[bytes]:
    return {k async for k in rc.scan_iter(match=pattern, count=1000)}


async def redis_ms(rc: Any) -> int:
    seconds, micros = await rc.time()
    return int(seconds * 1000 + micros // 1000)


def ids(items: list[Item]) -> list[str]:
    return [i.id for i in items]


# ---------------------------------------------------------------------------
# nodes


async def test_create_get_and_list_nodes(ps: RedisPubSub, rc: Any) -> None:
    """create stores owner, config and Redis TIME; the owner is affiliated
    "owner"; nodes() lists the service's names sorted, and no other service's."""
    before = await redis_ms(rc)
    assert await ps.create(SVC, "princely_musings", ALICE, CONFIG) is True
    assert await ps.create(SVC, "blog", BOB, {}) is True
    assert await ps.create("pubsub.example.org", "elsewhere", ALICE, {}) is True
    after = await redis_ms(rc)

    node = await ps.get(SVC, "princely_musings")
    assert node is not None
    assert (node.service, node.name, node.owner, node.config) == (
        SVC, "princely_musings", ALICE, CONFIG)
    assert before <= node.created <= after
    blog = await ps.get(SVC, "blog")
    assert blog == PubSubNode(SVC, "blog", BOB, {}, blog.created if blog else 0)
    assert await ps.nodes(SVC) == ["blog", "princely_musings"]
    assert await ps.nodes("pubsub.example.org") == ["elsewhere"]
    assert await ps.nodes("nobody.example") == []
    assert await ps.affiliations(SVC, "princely_musings") == {ALICE: "owner"}
    assert await ps.get(SVC, "missing") is None


async def test_create_twice_is_false_and_changes_nothing(ps: RedisPubSub) -> None:
    assert await ps.create(SVC, "n", ALICE, CONFIG) is True
    first = await ps.get(SVC, "n")
    assert await ps.create(SVC, "n", BOB, {"pubsub#title": "other"}) is False
    assert await ps.get(SVC, "n") == first
    assert await ps.affiliations(SVC, "n") == {ALICE: "owner"}
    assert await ps.nodes(SVC) == ["n"]


async def test_configure_replaces_the_config(ps: RedisPubSub) -> None:
    await ps.create(SVC, "n", ALICE, CONFIG)
    assert await ps.configure(SVC, "n", {"pubsub#title": "Musings"}) is True
    node = await ps.get(SVC, "n")
    assert node is not None and node.config == {"pubsub#title": "Musings"}
    assert await ps.configure(SVC, "n", {}) is True
    node = await ps.get(SVC, "n")
    assert node is not None and node.config == {} and node.owner == ALICE
    assert await ps.configure(SVC, "missing", CONFIG) is False


async def test_delete_removes_every_key_of_the_node(ps: RedisPubSub, rc: Any) -> None:
    """Config, affiliations, subscriptions (and their index entries) and items
    go; another node of the service and its subscribers' entries stay."""
    await ps.create(SVC, "doomed", ALICE, CONFIG)
    await ps.create(SVC, "kept", ALICE, {})
    await ps.set_affiliation(SVC, "doomed", BOB, "publisher")
    for jid in (BOB, f"{CAROL}/phone", "odd:{jid}%@wonderland.lit/r:1"):
        assert await ps.subscribe(SVC, "doomed", jid, f"sub-{jid}")
    await ps.subscribe(SVC, "kept", BOB, "kept-bob")
    for n in range(3):
        await ps.publish(SVC, "doomed", f"i{n}", b"<x/>", ALICE, 10)
    await ps.publish(SVC, "kept", "k", b"<k/>", ALICE, 10)
    kept_keys = {k for k in await all_keys(rc) if b"doomed" not in k}

    assert await ps.delete(SVC, "doomed") is True

    assert await all_keys(rc) == kept_keys - {pubsub.subscriber_key(SVC, f"{CAROL}/phone"),
                                              pubsub.subscriber_key(SVC, "odd:{jid}%@wonderland"
                                                                    ".lit/r:1")}
    assert not [k for k in await all_keys(rc, "pubsub:*") if b"doomed" in k]
    assert await ps.get(SVC, "doomed") is None
    assert await ps.nodes(SVC) == ["kept"]
    assert await ps.subscriptions_of(SVC, BOB) == {"kept": "kept-bob"}
    assert await ps.subscriptions_of(SVC, f"{CAROL}/phone") == {}
    assert await ps.subscriptions_of(SVC, "odd:{jid}%@wonderland.lit/r:1") == {}
    assert await ps.items(SVC, "doomed") == []
    assert ids(await ps.items(SVC, "kept")) == ["k"]
    assert await ps.delete(SVC, "doomed") is False

    # a node created again under the name starts empty
    assert await ps.create(SVC, "doomed", CAROL, {}) is True
    assert await ps.items(SVC, "doomed") == []
    assert await ps.subscriptions(SVC, "doomed") == {}
    assert await ps.affiliations(SVC, "doomed") == {CAROL: "owner"}


async def test_delete_of_the_last_node_leaves_no_key(ps: RedisPubSub, rc: Any) -> None:
    await ps.create(SVC, "only", ALICE, CONFIG)
    await ps.subscribe(SVC, "only", BOB, "s1")
    await ps.publish(SVC, "only", "i", b"<x/>", ALICE, 1)
    assert await ps.delete(SVC, "only") is True
    assert await all_keys(rc) == set()


# ---------------------------------------------------------------------------
# affiliations and subscriptions


async def test_affiliations_set_change_and_remove(ps: RedisPubSub) -> None:
    await ps.create(SVC, "n", ALICE, {})
    assert await ps.set_affiliation(SVC, "n", BOB, "publisher") is True
    assert await ps.set_affiliation(SVC, "n", CAROL, "outcast") is True
    assert await ps.set_affiliation(SVC, "n", "dave@wonderland.lit", "member") is True
    assert await ps.affiliations(SVC, "n") == {
        ALICE: "owner", BOB: "publisher", CAROL: "outcast", "dave@wonderland.lit": "member"}
    assert await ps.set_affiliation(SVC, "n", BOB, "owner") is True
    assert await ps.set_affiliation(SVC, "n", CAROL, None) is True
    assert await ps.set_affiliation(SVC, "n", "dave@wonderland.lit", "none") is True
    assert await ps.set_affiliation(SVC, "n", "nobody@wonderland.lit", None) is True
    assert await ps.affiliations(SVC, "n") == {ALICE: "owner", BOB: "owner"}
    with pytest.raises(ValueError):
        await ps.set_affiliation(SVC, "n", BOB, "king")
    assert await ps.affiliations(SVC, "n") == {ALICE: "owner", BOB: "owner"}


async def test_subscribe_unsubscribe_bare_and_full_jids(ps: RedisPubSub) -> None:
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


async def test_subscriptions_of_across_three_nodes(ps: RedisPubSub, rc: Any) -> None:
    for node in ("a", "b", "c", "d"):
        await ps.create(SVC, node, ALICE, {})
    await ps.create("other.wonderland.lit", "a", ALICE, {})
    for node in ("a", "b", "c"):
        await ps.subscribe(SVC, node, BOB, f"sub-{node}")
    await ps.subscribe(SVC, "d", CAROL, "sub-d")
    await ps.subscribe("other.wonderland.lit", "a", BOB, "sub-other")
    assert await ps.subscriptions_of(SVC, BOB) == {"a": "sub-a", "b": "sub-b", "c": "sub-c"}
    assert await ps.subscriptions_of("other.wonderland.lit", BOB) == {"a": "sub-other"}
    # an index, not a scan: one HASH per subscriber
    assert await rc.hgetall(pubsub.subscriber_key(SVC, BOB)) == {
        b"a": b"sub-a", b"b": b"sub-b", b"c": b"sub-c"}
    await ps.unsubscribe(SVC, "b", BOB)
    await ps.delete(SVC, "c")
    assert await ps.subscriptions_of(SVC, BOB) == {"a": "sub-a"}


# ---------------------------------------------------------------------------
# items


async def test_publish_trims_to_max_items_and_returns_the_evicted(ps: RedisPubSub,
                                                                  rc: Any) -> None:
    await ps.create(SVC, "n", ALICE, {})
    evicted = [await ps.publish(SVC, "n", f"i{n}", f"<e n='{n}'/>".encode(), ALICE, 3)
               for n in range(1, 6)]
    assert evicted == [[], [], [], ["i1"], ["i2"]]
    assert ids(await ps.items(SVC, "n")) == ["i5", "i4", "i3"]
    assert await rc.zcard(pubsub.node_key(SVC, "n", "order")) == 3
    assert await rc.hlen(pubsub.node_key(SVC, "n", "items")) == 3
    # a smaller limit evicts several at once, oldest first
    assert await ps.publish(SVC, "n", "i6", b"<e/>", ALICE, 2) == ["i3", "i4"]
    assert ids(await ps.items(SVC, "n")) == ["i6", "i5"]
    # no limit
    for n in range(7, 12):
        assert await ps.publish(SVC, "n", f"i{n}", b"<e/>", ALICE, None) == []
    assert len(await ps.items(SVC, "n")) == 7


async def test_publish_of_5_items_with_max_3_evicts_the_2_oldest(ps: RedisPubSub) -> None:
    await ps.create(SVC, "n", ALICE, {})
    gone: list[str] = []
    for n in range(5):
        out = await ps.publish(SVC, "n", f"item-{n}", b"<p/>", ALICE, 3)
        assert out is not None
        gone += out
    assert gone == ["item-0", "item-1"]
    assert ids(await ps.items(SVC, "n")) == ["item-4", "item-3", "item-2"]


async def test_republishing_an_id_replaces_it_and_makes_it_newest(ps: RedisPubSub,
                                                                  rc: Any) -> None:
    await ps.create(SVC, "n", ALICE, {})
    for n in range(3):
        await ps.publish(SVC, "n", f"i{n}", f"<v{n}/>".encode(), ALICE, 3)
    before = await redis_ms(rc)
    assert await ps.publish(SVC, "n", "i0", b"<new/>", f"{BOB}/desk", 3) == []
    after = await redis_ms(rc)
    items = await ps.items(SVC, "n")
    assert ids(items) == ["i0", "i2", "i1"]
    assert items[0].payload == b"<new/>" and items[0].publisher == f"{BOB}/desk"
    assert before <= items[0].published <= after
    # the next publication evicts i1, the oldest now, not the republished i0
    assert await ps.publish(SVC, "n", "i3", b"<v3/>", ALICE, 3) == ["i1"]
    assert ids(await ps.items(SVC, "n")) == ["i3", "i0", "i2"]


async def test_items_max_items_newest_first(ps: RedisPubSub) -> None:
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


async def test_items_by_ids_in_the_order_asked(ps: RedisPubSub) -> None:
    await ps.create(SVC, "n", ALICE, {})
    for n in range(5):
        await ps.publish(SVC, "n", f"i{n}", f"<v{n}/>".encode(), ALICE, 10)
    got = await ps.items(SVC, "n", ids=["i1", "nope", "i4", "i0", "i1"])
    assert ids(got) == ["i1", "i4", "i0"]
    assert [i.payload for i in got] == [b"<v1/>", b"<v4/>", b"<v0/>"]
    assert ids(await ps.items(SVC, "n", ids=["i3", "i2", "i1"], max_items=2)) == ["i3", "i2"]
    assert await ps.items(SVC, "n", ids=[]) == []
    assert await ps.items(SVC, "n", ids=["nope"]) == []


async def test_item_payload_and_publisher_round_trip_byte_for_byte(ps: RedisPubSub,
                                                                   rc: Any) -> None:
    """Payloads are opaque bytes (':' and NUL included); publishers may hold
    ':' and non-ASCII text; the timestamp is Redis TIME."""
    await ps.create(SVC, "n", ALICE, {})
    payload = "<entry xmlns='http://www.w3.org/2005/Atom'>1:2:3 ünï\x00</entry>".encode()
    publisher = "jüliet@capulet.lit/balcony:2 {x}"
    before = await redis_ms(rc)
    await ps.publish(SVC, "n", "id:with:colons {}", payload, publisher, 5)
    after = await redis_ms(rc)
    [item] = await ps.items(SVC, "n")
    assert item.id == "id:with:colons {}"
    assert item.payload == payload and item.publisher == publisher
    assert before <= item.published <= after
    assert abs(item.published - time.time() * 1000) < 60_000     # ms, not s or µs


async def test_retract(ps: RedisPubSub) -> None:
    await ps.create(SVC, "n", ALICE, {})
    await ps.publish(SVC, "n", "a", b"<a/>", ALICE, 10)
    await ps.publish(SVC, "n", "b", b"<b/>", ALICE, 10)
    assert await ps.retract(SVC, "n", "a") is True
    assert await ps.retract(SVC, "n", "a") is False
    assert await ps.retract(SVC, "n", "never") is False
    assert ids(await ps.items(SVC, "n")) == ["b"]


async def test_purge(ps: RedisPubSub, rc: Any) -> None:
    await ps.create(SVC, "n", ALICE, CONFIG)
    for n in range(4):
        await ps.publish(SVC, "n", f"i{n}", b"<x/>", ALICE, 10)
    assert await ps.purge(SVC, "n") == 4
    assert await ps.items(SVC, "n") == []
    assert await ps.purge(SVC, "n") == 0
    assert await ps.get(SVC, "n") is not None          # the node stays
    assert not await rc.exists(pubsub.node_key(SVC, "n", "order"),
                               pubsub.node_key(SVC, "n", "items"))
    # publishing after a purge still orders by time
    await ps.publish(SVC, "n", "x", b"<x/>", ALICE, 10)
    await ps.publish(SVC, "n", "y", b"<y/>", ALICE, 10)
    assert ids(await ps.items(SVC, "n")) == ["y", "x"]


async def test_concurrent_publishes_leave_exactly_max_items(ps: RedisPubSub, rc: Any) -> None:
    """50 publishes at once (many connections), max_items 10: exactly 10 stay,
    the other 40 are each returned as evicted exactly once."""
    await ps.create(SVC, "n", ALICE, {})
    results = await asyncio.gather(*(ps.publish(SVC, "n", f"i{n}", b"<x/>", ALICE, 10)
                                     for n in range(50)))
    evicted = [i for r in results if r is not None for i in r]
    kept = ids(await ps.items(SVC, "n"))
    assert len(kept) == 10
    assert len(evicted) == 40 == len(set(evicted))
    assert set(kept) | set(evicted) == {f"i{n}" for n in range(50)}
    assert await rc.zcard(pubsub.node_key(SVC, "n", "order")) == 10
    assert await rc.hlen(pubsub.node_key(SVC, "n", "items")) == 10


async def test_concurrent_creates_of_one_node_one_wins(ps: RedisPubSub) -> None:
    results = await asyncio.gather(*(ps.create(SVC, "n", f"u{n}@wonderland.lit", {})
                                     for n in range(20)))
    assert sorted(results) == [False] * 19 + [True]
    winner = f"u{results.index(True)}@wonderland.lit"
    node = await ps.get(SVC, "n")
    assert node is not None and node.owner == winner
    assert await ps.affiliations(SVC, "n") == {winner: "owner"}


# ---------------------------------------------------------------------------
# names that look like key syntax


async def test_names_with_separators_do_not_collide(ps: RedisPubSub, rc: Any) -> None:
    """Nodes "x", "x:items", "x%3Aitems" (the escaped form itself), "{x}:" and
    ":" in a service whose name has ':' '{' '}' '%': each keeps its own config,
    items and subscriptions; likewise services "s" and "s:node:x"."""
    svc = "pub:sub{1}%.lit"
    names = ["x", "x:items", "x%3Aitems", "{x}:", ":", "x:config", ""]
    for n, name in enumerate(names):
        assert await ps.create(svc, name, ALICE, {"pubsub#title": name}) is True
        await ps.publish(svc, name, "same-id", f"<n{n}/>".encode(), ALICE, 5)
        await ps.subscribe(svc, name, BOB, f"sub{n}")
        await ps.set_affiliation(svc, name, f"p{n}@wonderland.lit", "publisher")
    assert await ps.nodes(svc) == sorted(names)
    for n, name in enumerate(names):
        node = await ps.get(svc, name)
        assert node is not None and node.config == {"pubsub#title": name}
        [item] = await ps.items(svc, name)
        assert item.payload == f"<n{n}/>".encode()
        assert await ps.subscriptions(svc, name) == {BOB: f"sub{n}"}
        assert await ps.affiliations(svc, name) == {
            ALICE: "owner", f"p{n}@wonderland.lit": "publisher"}
    assert await ps.subscriptions_of(svc, BOB) == {name: f"sub{n}"
                                                   for n, name in enumerate(names)}
    # no key has a hash tag or an unescaped separator in a name
    for key in await all_keys(rc):
        assert b"{" not in key and b"}" not in key
        assert key.startswith(b"pubsub:pub%3Asub%7B1%7D%25.lit:")

    # deleting "x" leaves "x:items" whole, and the reverse
    assert await ps.delete(svc, "x") is True
    assert ids(await ps.items(svc, "x:items")) == ["same-id"]
    assert await ps.get(svc, "x:items") is not None
    assert await ps.delete(svc, "x:items") is True
    assert ids(await ps.items(svc, "x%3Aitems")) == ["same-id"]
    assert await ps.subscriptions_of(svc, BOB) == {name: f"sub{n}"
                                                   for n, name in enumerate(names)
                                                   if name not in ("x", "x:items")}

    # services whose names contain the key structure
    await ps.create("s", "x", ALICE, {"k": "plain"})
    await ps.create("s:node:x", "y", ALICE, {"k": "tricky"})
    await ps.publish("s:node:x", "y", "i", b"<t/>", ALICE, 5)
    assert await ps.nodes("s") == ["x"] and await ps.nodes("s:node:x") == ["y"]
    assert await ps.items("s", "x") == []
    node = await ps.get("s", "x")
    assert node is not None and node.config == {"k": "plain"}


async def test_key_escaping_matches_between_python_and_the_delete_script(ps: RedisPubSub,
                                                                         rc: Any) -> None:
    """The delete script finds subscriber index keys by escaping JIDs in Lua
    as Python does: a JID full of escaped characters leaves no index entry."""
    jid = "a%3A:{b}%%@x.lit/%7B:}{"
    await ps.create(SVC, "n", ALICE, {})
    await ps.subscribe(SVC, "n", jid, "s")
    key = pubsub.subscriber_key(SVC, jid)
    assert key == (b"pubsub:pubsub.wonderland.lit:subscriber:"
                   b"a%253A%3A%7Bb%7D%25%25@x.lit/%257B%3A%7D%7B")
    assert await rc.exists(key) == 1
    await ps.delete(SVC, "n")
    assert await all_keys(rc) == set()


# ---------------------------------------------------------------------------
# missing nodes, corrupt data, Redis down


async def test_operations_on_a_missing_node_answer_no_and_create_no_keys(
        ps: RedisPubSub, rc: Any) -> None:
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
    assert await rc.dbsize() == 0
    # nor after the node is deleted
    await ps.create(SVC, "gone", ALICE, {})
    await ps.delete(SVC, "gone")
    assert await ps.publish(SVC, "gone", "i", b"<x/>", ALICE, 10) is None
    assert await ps.subscribe(SVC, "gone", BOB, "s") is False
    assert await rc.dbsize() == 0


async def test_bad_arguments(ps: RedisPubSub, rc: Any) -> None:
    await ps.create(SVC, "n", ALICE, {})
    with pytest.raises(ValueError):
        await ps.publish(SVC, "n", "i", b"<x/>", ALICE, 0)
    with pytest.raises(ValueError):
        await ps.publish(SVC, "n", "i", b"<x/>", ALICE, True)
    with pytest.raises(TypeError):
        await ps.publish(SVC, "n", "i", "<x/>", ALICE, 1)        # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await ps.configure(SVC, "n", {"pubsub#max_items": 10})   # type: ignore[dict-item]
    with pytest.raises(TypeError):
        await ps.create(SVC, "m", ALICE, {"a": None})            # type: ignore[dict-item]
    assert await ps.items(SVC, "n") == []
    assert await ps.nodes(SVC) == ["n"]


async def corrupt_created(rc: Any) -> None:
    await rc.hset(pubsub.node_key(SVC, "n"), "created", "yesterday")


async def corrupt_owner(rc: Any) -> None:
    await rc.hdel(pubsub.node_key(SVC, "n"), "owner")


async def corrupt_item_header(rc: Any) -> None:
    await rc.hset(pubsub.node_key(SVC, "n", "items"), "i", b"1:soon:3:abc<x/>")


async def corrupt_item_length(rc: Any) -> None:
    await rc.hset(pubsub.node_key(SVC, "n", "items"), "i", b"1:1700000000000:999:a@b<x/>")


async def corrupt_item_version(rc: Any) -> None:
    await rc.hset(pubsub.node_key(SVC, "n", "items"), "i", b"7:1700000000000:3:a@b<x/>")


async def corrupt_item_truncated(rc: Any) -> None:
    await rc.hset(pubsub.node_key(SVC, "n", "items"), "i", b"<x/>")


async def corrupt_item_publisher_encoding(rc: Any) -> None:
    await rc.hset(pubsub.node_key(SVC, "n", "items"), "i", b"1:1700000000000:3:\xff\xfe\xfd<x/>")


async def corrupt_item_missing_value(rc: Any) -> None:
    await rc.hdel(pubsub.node_key(SVC, "n", "items"), "i")


async def corrupt_affiliation(rc: Any) -> None:
    await rc.hset(pubsub.node_key(SVC, "n", "affiliations"), BOB, "emperor")


async def corrupt_config_encoding(rc: Any) -> None:
    await rc.hset(pubsub.node_key(SVC, "n", "config"), "pubsub#title", b"\xc3\x28")


async def corrupt_subscription_encoding(rc: Any) -> None:
    await rc.hset(pubsub.node_key(SVC, "n", "subscriptions"), b"\xff@x", "s")


async def corrupt_node_name(rc: Any) -> None:
    await rc.sadd(pubsub.nodes_key(SVC), b"\xff\xff")


async def corrupt_items_key_type(rc: Any) -> None:
    await rc.delete(pubsub.node_key(SVC, "n", "items"))
    await rc.set(pubsub.node_key(SVC, "n", "items"), "not a hash")


async def corrupt_seq(rc: Any) -> None:
    await rc.hset(pubsub.node_key(SVC, "n"), "seq", "many")


async def read_node(ps: RedisPubSub) -> Any:
    return await ps.get(SVC, "n")


async def read_items(ps: RedisPubSub) -> Any:
    return await ps.items(SVC, "n")


async def read_items_by_id(ps: RedisPubSub) -> Any:
    return await ps.items(SVC, "n", ids=["i"])


async def read_affiliations(ps: RedisPubSub) -> Any:
    return await ps.affiliations(SVC, "n")


async def read_subscriptions(ps: RedisPubSub) -> Any:
    return await ps.subscriptions(SVC, "n")


async def read_nodes(ps: RedisPubSub) -> Any:
    return await ps.nodes(SVC)


async def publish_more(ps: RedisPubSub) -> Any:
    return await ps.publish(SVC, "n", "j", b"<y/>", ALICE, 10)


@pytest.mark.parametrize("corrupt, read", [
    (corrupt_created, read_node),
    (corrupt_owner, read_node),
    (corrupt_config_encoding, read_node),
    (corrupt_item_header, read_items),
    (corrupt_item_length, read_items),
    (corrupt_item_version, read_items),
    (corrupt_item_truncated, read_items),
    (corrupt_item_truncated, read_items_by_id),
    (corrupt_item_publisher_encoding, read_items),
    (corrupt_item_missing_value, read_items),
    (corrupt_affiliation, read_affiliations),
    (corrupt_subscription_encoding, read_subscriptions),
    (corrupt_node_name, read_nodes),
    (corrupt_items_key_type, read_items),
    (corrupt_items_key_type, publish_more),
    (corrupt_seq, publish_more),
], ids=lambda f: f.__name__)
async def test_corrupt_data_raises_storage_error(ps: RedisPubSub, rc: Any, corrupt: Any,
                                                 read: Any) -> None:
    await ps.create(SVC, "n", ALICE, CONFIG)
    await ps.set_affiliation(SVC, "n", CAROL, "member")
    await ps.subscribe(SVC, "n", CAROL, "s")
    await ps.publish(SVC, "n", "i", b"<x/>", ALICE, 10)
    await corrupt(rc)
    with pytest.raises(StorageError) as info:
        await read(ps)
    msg = str(info.value)
    assert msg.startswith(("corrupt ", "pubsub ")), msg
    assert "\n" not in msg


async def test_redis_unreachable_raises_storage_error() -> None:
    client = connect(ClusterConfig(url=f"redis://127.0.0.1:{free_port()}/0", node="t"))
    ps = RedisPubSub(client)
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: ps.create(SVC, "n", ALICE, {}), lambda: ps.delete(SVC, "n"),
        lambda: ps.nodes(SVC), lambda: ps.get(SVC, "n"), lambda: ps.configure(SVC, "n", {}),
        lambda: ps.affiliations(SVC, "n"), lambda: ps.set_affiliation(SVC, "n", BOB, "member"),
        lambda: ps.subscriptions(SVC, "n"), lambda: ps.subscribe(SVC, "n", BOB, "s"),
        lambda: ps.unsubscribe(SVC, "n", BOB), lambda: ps.subscriptions_of(SVC, BOB),
        lambda: ps.publish(SVC, "n", "i", b"<x/>", ALICE, 1), lambda: ps.retract(SVC, "n", "i"),
        lambda: ps.items(SVC, "n"), lambda: ps.items(SVC, "n", ids=["i"]),
        lambda: ps.purge(SVC, "n"),
    ]
    try:
        for call in calls:
            with pytest.raises(StorageError) as info:
                await call()
            assert isinstance(info.value.__cause__, (RedisError, OSError))
            assert "Redis failed" in str(info.value)
    finally:
        await client.aclose()


async def test_a_second_client_sees_the_same_state_at_once(ps: RedisPubSub,
                                                           redis_url: str) -> None:
    """Two nodes of a cluster: what one writes the other reads, no cache."""
    other_client = connect(ClusterConfig(url=redis_url, node="other"))
    other = RedisPubSub(other_client)
    try:
        await ps.create(SVC, "n", ALICE, CONFIG)
        assert await other.create(SVC, "n", BOB, {}) is False
        await other.publish(SVC, "n", "i", b"<x/>", BOB, 10)
        await other.subscribe(SVC, "n", CAROL, "s")
        assert ids(await ps.items(SVC, "n")) == ["i"]
        assert await ps.subscriptions_of(SVC, CAROL) == {"n": "s"}
        await ps.delete(SVC, "n")
        assert await other.get(SVC, "n") is None
    finally:
        await other_client.aclose()
