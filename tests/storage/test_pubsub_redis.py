"""What only the cluster's pubsub storage (vinespy/storage/pubsub/redis.py)
promises, against a real redis-server: its key layout, the escaping of
names in keys (Python and Lua alike), corrupt Redis values, Redis down, and
two clients sharing one state.

The behaviour every PubSubStore shares (memory, fs and Redis alike) is
checked by tests/storage/test_pubsub_contract.py, which runs its Redis cases
against a redis-server of its own.

One throw-away ``redis-server`` (no persistence) serves the module; every
test starts from an empty database (FLUSHALL) and checks the keys the
storage left in Redis (SCAN, DBSIZE). No mocks: corrupt data is written into
Redis by hand.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Iterator

import pytest
from redis.exceptions import RedisError

from tests.redisproc import redis_server, url_of
from tests.conftest import free_port
from tests.storage.test_pubsub_contract import doomed_and_kept, every_call
from vinespy.cluster.connection import connect
from vinespy.config import ClusterConfig
from vinespy.storage import StorageError
from vinespy.storage.pubsub import redis as pubsub
from vinespy.storage.pubsub.redis import Item, RedisPubSub

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
# key layout


async def test_delete_removes_every_key_of_the_node(ps: RedisPubSub, rc: Any) -> None:
    """Config, affiliations, subscriptions, their subscriber index entries
    and items go; another node's keys and its subscribers' entries stay."""
    await doomed_and_kept(ps)
    kept_keys = {k for k in await all_keys(rc) if b"doomed" not in k}

    assert await ps.delete(SVC, "doomed") is True

    assert await all_keys(rc) == kept_keys - {pubsub.subscriber_key(SVC, f"{CAROL}/phone"),
                                              pubsub.subscriber_key(SVC, "odd:{jid}%@wonderland"
                                                                    ".lit/r:1")}
    assert not [k for k in await all_keys(rc, "pubsub:*") if b"doomed" in k]
    assert await rc.hgetall(pubsub.subscriber_key(SVC, BOB)) == {b"kept": b"kept-bob"}


async def test_subscriptions_of_is_one_index_hash_per_subscriber(
        ps: RedisPubSub, rc: Any) -> None:
    for node in ("a", "b", "c"):
        await ps.create(SVC, node, ALICE, {})
        await ps.subscribe(SVC, node, BOB, f"sub-{node}")
    # an index, not a scan: one HASH per subscriber
    assert await rc.hgetall(pubsub.subscriber_key(SVC, BOB)) == {
        b"a": b"sub-a", b"b": b"sub-b", b"c": b"sub-c"}
    await ps.unsubscribe(SVC, "b", BOB)
    await ps.delete(SVC, "c")
    assert await rc.hgetall(pubsub.subscriber_key(SVC, BOB)) == {b"a": b"sub-a"}
    await ps.unsubscribe(SVC, "a", BOB)
    assert await rc.exists(pubsub.subscriber_key(SVC, BOB)) == 0


async def test_order_and_items_keys_stay_in_step(ps: RedisPubSub, rc: Any) -> None:
    """Trimming (one at a time, several at once, under concurrency) removes
    an id from the ZSET and its value from the HASH together."""
    order, items = pubsub.node_key(SVC, "n", "order"), pubsub.node_key(SVC, "n", "items")
    await ps.create(SVC, "n", ALICE, {})
    for n in range(1, 6):
        await ps.publish(SVC, "n", f"i{n}", f"<e n='{n}'/>".encode(), ALICE, 3)
    assert await rc.zcard(order) == 3 and await rc.hlen(items) == 3
    await ps.publish(SVC, "n", "i6", b"<e/>", ALICE, 2)
    assert await rc.zcard(order) == 2 and await rc.hlen(items) == 2
    await asyncio.gather(*(ps.publish(SVC, "n", f"c{n}", b"<x/>", ALICE, 10)
                           for n in range(50)))
    assert await rc.zcard(order) == 10 and await rc.hlen(items) == 10
    assert set(await rc.zrange(order, 0, -1)) == set(await rc.hkeys(items))


async def test_purge_removes_the_item_keys(ps: RedisPubSub, rc: Any) -> None:
    await ps.create(SVC, "n", ALICE, CONFIG)
    for n in range(4):
        await ps.publish(SVC, "n", f"i{n}", b"<x/>", ALICE, 10)
    assert await ps.purge(SVC, "n") == 4
    assert not await rc.exists(pubsub.node_key(SVC, "n", "order"),
                               pubsub.node_key(SVC, "n", "items"))
    assert await rc.exists(pubsub.node_key(SVC, "n")) == 1


async def test_operations_on_a_missing_node_create_no_keys(ps: RedisPubSub, rc: Any) -> None:
    await ps.configure(SVC, "ghost", CONFIG)
    await ps.set_affiliation(SVC, "ghost", BOB, "publisher")
    await ps.subscribe(SVC, "ghost", BOB, "s")
    await ps.unsubscribe(SVC, "ghost", BOB)
    await ps.publish(SVC, "ghost", "i", b"<x/>", ALICE, 10)
    await ps.retract(SVC, "ghost", "i")
    await ps.purge(SVC, "ghost")
    assert await rc.dbsize() == 0


async def test_keys_hold_no_hash_tag_or_unescaped_separator(ps: RedisPubSub, rc: Any) -> None:
    """Names with ':' '{' '}' '%' stay inside their escaped key segment."""
    svc = "pub:sub{1}%.lit"
    for name in ["x", "x:items", "x%3Aitems", "{x}:", ":", "x:config", ""]:
        await ps.create(svc, name, ALICE, {"pubsub#title": name})
        await ps.publish(svc, name, "same-id", b"<n/>", ALICE, 5)
        await ps.subscribe(svc, name, "b:{o}b@x.lit", "s")
    for key in await all_keys(rc):
        assert b"{" not in key and b"}" not in key
        assert key.startswith(b"pubsub:pub%3Asub%7B1%7D%25.lit:")
    assert await rc.exists(pubsub.node_key(svc, "x:items")) == 1
    assert pubsub.node_key(svc, "x:items") == b"pubsub:pub%3Asub%7B1%7D%25.lit:node:x%3Aitems"
    assert pubsub.node_key(svc, "x", "items") == b"pubsub:pub%3Asub%7B1%7D%25.lit:node:x:items"


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
# corrupt data, Redis down, two clients


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
    calls = every_call(ps)
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
