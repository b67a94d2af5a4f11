"""What only the cluster's pubsub storage (vinespy/storage/pubsub/redis.py)
promises, against a real redis-server: its key layout, the escaping of
names in keys (Python and Lua alike), corrupt Redis values, Redis down,
two clients sharing one state, and writes confirmed by a replica (WAIT,
against a primary with a real replica, SIGSTOPped to hang).

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
import contextlib
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

import pytest
from redis.exceptions import RedisError

from tests.redisproc import RedisProcess, primary_and_replica, redis_server, url_of
from tests.conftest import free_port
from tests.storage.test_pubsub_contract import doomed_and_kept, every_call
from vinespy.cluster.connection import connect
from vinespy.config import ClusterConfig
from vinespy.storage import NotReplicated, StorageError
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


# ---------------------------------------------------------------------------
# writes confirmed by replicas (WAIT)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisProcess, RedisProcess]]:
    """A primary and its synced replica, for this module's WAIT cases."""
    with primary_and_replica(tmp_path_factory.mktemp("pubsub-wait")) as both:
        yield both


@contextlib.asynccontextmanager
async def waiting(pair: tuple[RedisProcess, RedisProcess], replicas: int,
                  timeout: float) -> AsyncIterator[tuple[RedisPubSub, RedisPubSub]]:
    """A store on the primary whose writes wait for ``replicas`` replicas
    (``timeout`` s), and one reading the replica; the primary flushed."""
    primary, replica = pair
    rc = connect(ClusterConfig(url=primary.url, node="p"), socket_timeout=timeout + TIMEOUT)
    on_replica = connect(ClusterConfig(url=replica.url, node="r"))
    await rc.flushall()
    try:
        yield (RedisPubSub(rc, wait_replicas=replicas, wait_timeout=timeout),
               RedisPubSub(on_replica))
    finally:
        await rc.aclose()
        await on_replica.aclose()


async def waits(store: RedisPubSub) -> int:
    """How many WAIT commands the store's Redis has run (INFO commandstats)."""
    stats = await store.redis.info("commandstats")
    return int(stats.get("cmdstat_wait", {}).get("calls", 0))


def writes(ps: RedisPubSub) -> list[tuple[str, Callable[[], Awaitable[Any]]]]:
    """Every kind of write, on node "n" of SVC, in an order that changes something each time."""
    return [
        ("create", lambda: ps.create(SVC, "n", ALICE, CONFIG)),
        ("configure", lambda: ps.configure(SVC, "n", {"pubsub#title": "t"})),
        ("affiliation", lambda: ps.set_affiliation(SVC, "n", BOB, "publisher")),
        ("subscribe", lambda: ps.subscribe(SVC, "n", CAROL, "s")),
        ("publish", lambda: ps.publish(SVC, "n", "i", b"<x/>", ALICE, 10)),
        ("retract", lambda: ps.retract(SVC, "n", "i")),
        ("purge", lambda: ps.purge(SVC, "n")),
        ("unsubscribe", lambda: ps.unsubscribe(SVC, "n", CAROL)),
        ("delete", lambda: ps.delete(SVC, "n")),
    ]


async def test_a_confirmed_write_is_on_the_replica_when_it_returns(
        pair: tuple[RedisProcess, RedisProcess]) -> None:
    """wait_replicas = 1: each write returns once the replica has it, so the
    replica shows it right away (no polling); one WAIT per write once the
    scripts are loaded (the first use of each on a server runs its WAIT
    twice), none per read."""
    async with waiting(pair, 1, TIMEOUT) as (ps, replica):
        for _ in range(2):
            before = await waits(ps)
            await ps.create(SVC, "n", ALICE, CONFIG)
            assert (await replica.get(SVC, "n")) is not None
            await ps.subscribe(SVC, "n", CAROL, "s")
            assert await replica.subscriptions_of(SVC, CAROL) == {"n": "s"}
            assert await ps.publish(SVC, "n", "i", b"<x/>", ALICE, 10) == []
            assert ids(await replica.items(SVC, "n")) == ["i"]
            await ps.items(SVC, "n")
            await ps.get(SVC, "n")
            assert await ps.delete(SVC, "n") is True
            assert await replica.get(SVC, "n") is None
        assert await waits(ps) - before == 4


async def test_no_wait_when_off(pair: tuple[RedisProcess, RedisProcess]) -> None:
    """wait_replicas = 0 (the default without Sentinels): no WAIT at all."""
    async with waiting(pair, 0, 1.0) as (ps, _):
        before = await waits(ps)
        for _, write in writes(ps):
            await write()
        assert await waits(ps) == before


async def test_a_write_no_replica_confirms_raises_not_replicated(
        pair: tuple[RedisProcess, RedisProcess]) -> None:
    """The replica hangs (SIGSTOP): every kind of write raises NotReplicated
    (a StorageError, one line) after the timeout, with the change made on
    the primary; reads answer at once. Once the replica runs again, writes
    are confirmed again."""
    primary, replica = pair
    timeout = 0.3
    async with waiting(pair, 1, timeout) as (ps, _):
        with replica.paused():
            for name, write in writes(ps):
                t0 = time.monotonic()
                with pytest.raises(NotReplicated) as info:
                    await write()
                took = time.monotonic() - t0
                assert timeout * 0.9 <= took < TIMEOUT, (name, took)
                assert isinstance(info.value, StorageError)
                assert (info.value.wanted, info.value.acked) == (1, 0)
                message = str(info.value)
                assert message.startswith("pubsub ") and "\n" not in message, message
                assert ("not confirmed by a Redis replica within 0.3 s (0 did): the Redis "
                        "primary has it, but it may be lost if Redis fails over now") in message
                if name == "publish":       # made on the primary all the same
                    assert ids(await ps.items(SVC, "n")) == ["i"]
            assert await ps.get(SVC, "n") is None           # the delete, too
            t0 = time.monotonic()
            await ps.items(SVC, "n")
            await ps.subscriptions_of(SVC, CAROL)
            assert time.monotonic() - t0 < timeout          # reads do not wait
        assert await ps.create(SVC, "n", ALICE, CONFIG) is True
        assert await ps.publish(SVC, "n", "i", b"<x/>", ALICE, 10) == []


async def test_more_replicas_than_there_are(pair: tuple[RedisProcess, RedisProcess],
                                            caplog: pytest.LogCaptureFixture) -> None:
    """wait_replicas = 2 with one replica attached: the write waits for that
    one (it has it when the write is answered) and the shortfall is logged."""
    async with waiting(pair, 2, TIMEOUT) as (ps, replica):
        before = await waits(ps)
        await ps.create(SVC, "n", ALICE, CONFIG)
        assert await waits(ps) == before + 1
        assert await replica.get(SVC, "n") is not None
    assert "has 1 replica(s) attached, 2 asked" in caplog.text


async def test_no_replica_attached_goes_through_with_a_warning(
        tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A primary with no replica (its only one is down, or it was just
    promoted): nothing could confirm a write, so none waits (WAIT would
    block for its whole timeout); each goes through, and the log says the
    changes are unprotected."""
    with redis_server(tmp_path) as alone:
        rc = connect(ClusterConfig(url=url_of(alone), node="p"))
        try:
            ps = RedisPubSub(rc, wait_replicas=1, wait_timeout=TIMEOUT)
            t0 = time.monotonic()
            assert await ps.create(SVC, "n", ALICE, CONFIG)
            assert await ps.publish(SVC, "n", "i", b"<x/>", ALICE, 10) == []
            assert time.monotonic() - t0 < TIMEOUT / 2
            assert await waits(ps) == 0
        finally:
            await rc.aclose()
    assert "has 0 replica(s) attached, 1 asked" in caplog.text


async def test_a_primary_without_the_script_loads_it(
        pair: tuple[RedisProcess, RedisProcess]) -> None:
    """A promoted replica has not seen the scripts (SCRIPT FLUSH stands in
    for it): the write loads its script and runs once, confirmed."""
    async with waiting(pair, 1, TIMEOUT) as (ps, replica):
        await ps.create(SVC, "n", ALICE, CONFIG)
        await ps.redis.script_flush()
        assert await ps.publish(SVC, "n", "i", b"<x/>", ALICE, 10) == []
        assert [(i.id, i.payload) for i in await replica.items(SVC, "n")] == [("i", b"<x/>")]
        assert (await ps.redis.hgetall(pubsub.node_key(SVC, "n")))[b"seq"] == b"1"


@pytest.mark.parametrize(("replicas", "timeout"), [(-1, 1.0), (True, 1.0), (1.5, 1.0),
                                                   (1, 0), (1, -1.0), (1, "1"), (1, True)])
def test_bad_wait_arguments(replicas: Any, timeout: Any) -> None:
    """A negative count or a timeout that is not above 0 (WAIT 0 blocks for
    ever) is refused when the store is built."""
    client = connect(ClusterConfig(url="redis://127.0.0.1:1/0", node="t"))
    with pytest.raises(ValueError):
        RedisPubSub(client, wait_replicas=replicas, wait_timeout=timeout)
