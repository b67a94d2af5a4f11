"""The copy behind ``vinespy migrate`` (vinespy.storage.migrate), through the
storage API: identical data, idempotent, the source never written; and
PubSubStore.restore on memory, fs, sql (SQLite and a real PostgreSQL) and
the default restore (the Redis store's), times kept where the store can."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from tests.storage.conftest import SQL_KINDS, backend, sql_storage
from tests.storage.migrate_data import (SERVICE, STRANGER, populate, populate_pubsub,
                                        snapshot, user)
from vinespy.storage import Storage, User
from vinespy.storage import migrate as m
from vinespy.storage.fs import FsStorage
from vinespy.storage.memory import MemoryStorage
from vinespy.storage.pubsub import Item, PubSubNode, PubSubStore, keeps_times, open_pubsub
from vinespy.storage.pubsub.fs import FsPubSub


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


class WriteNothing:
    """A storage proxy that fails the test on any write."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        assert name not in {"save_user", "update_roster", "delete_user", "save_vcard",
                            "save_fragment", "put", "open"}, f"{name} called on the source"
        return getattr(self.inner, name)


@pytest.fixture(params=["memory", "sqlite"])
async def target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    store = backend(request.param, request, tmp_path)
    yield store
    await store.close()


async def test_copy_is_identical_idempotent_and_reads_only(tmp_path: Path,
                                                           target: Storage) -> None:
    """fs -> target gives the same data, twice the same counts; the source
    files are byte-identical and no write method of it was called."""
    source = FsStorage(tmp_path / "src")
    await populate(source, iterations=4096)
    before = tree(tmp_path / "src")
    first = await m.copy_storage(WriteNothing(source), target)     # type: ignore[arg-type]
    second = await m.copy_storage(WriteNothing(source), target)    # type: ignore[arg-type]
    assert first == second
    assert m.count_lines(first) == [
        "users: 3", "roster items: 9", "vcards: 4", "private: 3", "keyval blocklist: 3",
        "keyval last: 4", "keyval offline: 3", "keyval private_names: 3",
        "pubsub nodes: 0", "pubsub items: 0"]
    verified, problems = await m.verify_storage(source, target)
    assert problems == [] and verified == first
    assert await snapshot(target) == await snapshot(source)
    assert tree(tmp_path / "src") == before


async def test_a_second_copy_follows_the_source(tmp_path: Path) -> None:
    """After the source changed, copying again removes a keyval store and an
    account the source no longer has, never duplicating anything."""
    source, target = MemoryStorage(), MemoryStorage()
    await populate(source, users=2)
    await m.copy_storage(source, target)
    await source.put(user(0), "offline", None)
    await source.delete_user(user(1))
    await source.put(user(1), "last", {"time": 5})
    await m.copy_storage(source, target)
    assert await snapshot(target) == await snapshot(source)
    assert await target.stores(user(0)) == ["blocklist", "last", "private_names"]
    assert await target.find_user(user(1)) is None


async def test_differences_name_what_differs() -> None:
    """The comparison says which JID and which record differ."""
    a = m.Owned(STRANGER, User(STRANGER), b"<v/>", {("urn:a", "x"): b"<x/>"}, {"last": 1})
    b = replace(a, user=None, vcard=None, fragments={}, stores={"last": 2, "offline": []})
    assert m.differences(a, a) == []
    assert m.differences(a, b) == [
        f"{STRANGER}: account differs", f"{STRANGER}: vCard differs",
        f"{STRANGER}: private {{urn:a}}x differs", f"{STRANGER}: keyval last differs",
        f"{STRANGER}: keyval offline differs"]


# --- pubsub --------------------------------------------------------------------


class DefaultRestore(FsPubSub):
    """The fs store with PubSubStore's own restore (through the other methods)."""

    restore = PubSubStore.restore


@pytest.fixture(params=["memory", "fs", "default", *(f"sql-{kind}" for kind in SQL_KINDS)])
async def pubsub(request: pytest.FixtureRequest,
                 tmp_path: Path) -> AsyncIterator[PubSubStore]:
    if request.param == "memory":
        yield open_pubsub("memory")
    elif request.param == "fs":
        yield open_pubsub("fs", dir=tmp_path / "target")
    elif request.param == "default":
        yield DefaultRestore(tmp_path / "target")
    else:
        db = sql_storage(request.param.removeprefix("sql-"), request, tmp_path)
        try:
            yield open_pubsub("sql", storage=db)
        finally:
            await db.close()


def test_which_stores_keep_times(pubsub: PubSubStore) -> None:
    """Every store with its own restore keeps the times; the default does not."""
    assert keeps_times(pubsub) is not isinstance(pubsub, DefaultRestore)


async def test_pubsub_copy_gives_the_same_nodes_twice(tmp_path: Path,
                                                      pubsub: PubSubStore) -> None:
    """fs -> memory/fs/sql/(the default restore): config, affiliations,
    subscriptions and items in order, the same after a second copy; times
    kept (and verified) unless the store has only the default restore."""
    source = open_pubsub("fs", dir=tmp_path / "source")
    await populate_pubsub(source)
    before = tree(tmp_path / "source")
    for _ in range(2):
        counts = await m.copy_pubsub(source, pubsub, [SERVICE])
        assert counts == {m.NODES: 2, m.ITEMS: 5}
        verified, problems = await m.verify_pubsub(source, pubsub, [SERVICE])
        assert problems == [] and verified == counts
    src, dst = await snapshot(MemoryStorage(), source), await snapshot(MemoryStorage(), pubsub)
    order = ["item0", "item2", "item3", "item4", "item1"]
    assert [i.id for i in dst["nodes"]["news"].items] == order
    if keeps_times(pubsub):
        assert dst == src
    else:
        assert dst["nodes"]["news"].node.created >= src["nodes"]["news"].node.created
    assert tree(tmp_path / "source") == before


async def test_restore_replaces_a_node_that_exists(pubsub: PubSubStore) -> None:
    """restore() of a node that exists leaves exactly the given state: other
    affiliations, subscriptions and items are gone; the owner, creation and
    publication times are the given ones where the store keeps times."""
    await pubsub.create(SERVICE, "n", "a@x", {"k": "v"})
    await pubsub.set_affiliation(SERVICE, "n", "m@x", "member")
    await pubsub.subscribe(SERVICE, "n", "old@x", "s0")
    await pubsub.publish(SERVICE, "n", "old", b"<old/>", "a@x", None)
    await pubsub.publish(SERVICE, "n", "new", b"<stale/>", "a@x", None)
    owner = "b@x" if keeps_times(pubsub) else "a@x"     # the default keeps the owner
    node = PubSubNode(SERVICE, "n", owner, {"k": "w"}, 1000)
    items = [Item("new", b"<new/>", "b@x", 2000), Item("x", b"<x/>", "c@x/r", 2000),
             Item("y", b"<y/>", "b@x", 1500)]
    for _ in range(2):
        await pubsub.restore(node, {"b@x": "publisher"}, {"c@x": "s1", "c@x/r": "s2"}, items)
        got = await pubsub.get(SERVICE, "n")
        assert got is not None and (got.owner, got.config) == (owner, {"k": "w"})
        assert await pubsub.affiliations(SERVICE, "n") == {"b@x": "publisher"}
        assert await pubsub.subscriptions(SERVICE, "n") == {"c@x": "s1", "c@x/r": "s2"}
        assert await pubsub.subscriptions_of(SERVICE, "old@x") == {}
        held = await pubsub.items(SERVICE, "n")
        assert [(i.id, i.payload, i.publisher) for i in held] == [
            ("y", b"<y/>", "b@x"), ("x", b"<x/>", "c@x/r"), ("new", b"<new/>", "b@x")]
        if keeps_times(pubsub):
            assert got.created == 1000
            assert [i.published for i in held] == [1500, 2000, 2000]


async def test_restore_creates_a_node_and_it_works_on(pubsub: PubSubStore) -> None:
    """restore() of a new node creates it with the given times (big ones
    too); publishing afterwards makes the newest item and trims the oldest;
    the node deletes whole."""
    big = 2 ** 63 - 1
    node = PubSubNode(SERVICE, "fresh", "a@x", {}, big)
    await pubsub.restore(node, {"a@x": "owner"}, {},
                         [Item(f"i{n}", b"<i/>", "a@x", 10 + n) for n in range(3)])
    assert await pubsub.nodes(SERVICE) == ["fresh"]
    got = await pubsub.get(SERVICE, "fresh")
    assert got is not None and got.created == (big if keeps_times(pubsub) else got.created)
    assert await pubsub.publish(SERVICE, "fresh", "i3", b"<i/>", "a@x", 3) == ["i0"]
    held = await pubsub.items(SERVICE, "fresh")
    assert [i.id for i in held] == ["i3", "i2", "i1"]
    if keeps_times(pubsub):
        assert [i.published for i in held[1:]] == [12, 11]
    assert await pubsub.delete(SERVICE, "fresh")
    assert await pubsub.get(SERVICE, "fresh") is None and await pubsub.nodes(SERVICE) == []


@pytest.mark.parametrize("change, error", [
    ({"created": -1}, ValueError), ({"created": 2 ** 63}, ValueError),
    ({"created": "1"}, ValueError), ({"owner": 1}, TypeError),
    ({"published": 2 ** 63}, ValueError), ({"published": None}, ValueError),
    ({"payload": "<x/>"}, TypeError), ({"affiliation": "none"}, ValueError),
    ({"affiliation": "boss"}, ValueError)])
async def test_restore_with_bad_arguments_changes_nothing(
        pubsub: PubSubStore, change: dict[str, Any], error: type[Exception]) -> None:
    """A bad time, name, payload or affiliation raises before anything changes
    (the stores with a restore of their own: the default goes call by call)."""
    if not keeps_times(pubsub):
        pytest.skip("the default restore is not atomic")
    await pubsub.create(SERVICE, "n", "a@x", {"k": "v"})
    await pubsub.publish(SERVICE, "n", "old", b"<old/>", "a@x", None)
    before = await pubsub.items(SERVICE, "n")
    node = PubSubNode(SERVICE, "n", change.get("owner", "a@x"), {},
                      change.get("created", 1000))
    item = Item("new", change.get("payload", b"<new/>"), "b@x", change.get("published", 1))
    with pytest.raises(error):
        await pubsub.restore(node, {"b@x": change.get("affiliation", "member")}, {}, [item])
    got = await pubsub.get(SERVICE, "n")
    assert got is not None and got.config == {"k": "v"}
    assert await pubsub.affiliations(SERVICE, "n") == {"a@x": "owner"}
    assert await pubsub.items(SERVICE, "n") == before


async def test_node_differences_compare_times_unless_told_not_to() -> None:
    """A creation or publication time that differs is a difference, except
    for a target with the default restore (times=False)."""
    node = PubSubNode(SERVICE, "n", "a@x", {}, 1000)
    a = m.NodeData(node, {"a@x": "owner"}, {}, [Item("i", b"<i/>", "a@x", 2000)])
    b = replace(a, node=replace(node, created=1001),
                items=[Item("i", b"<i/>", "a@x", 2001)])
    where = f"pubsub node 'n' of {SERVICE}"
    assert m.node_differences(a, a) == []
    assert m.node_differences(a, b) == [f"{where}: creation time differs",
                                        f"{where}: publication times differ"]
    assert m.node_differences(a, b, times=False) == []


async def test_verify_pubsub_finds_a_time_that_differs(tmp_path: Path) -> None:
    """After a copy to a store that keeps times, one item's publication time
    changed there: the verification names the node."""
    source, target = open_pubsub("fs", dir=tmp_path / "source"), open_pubsub("memory")
    await populate_pubsub(source)
    await m.copy_pubsub(source, target, [SERVICE])
    data = await m.read_node(target, SERVICE, "news")
    assert data is not None
    data.items[0].published += 1
    await target.restore(data.node, data.affiliations, data.subscriptions, data.items)
    _, problems = await m.verify_pubsub(source, target, [SERVICE])
    assert problems == [f"pubsub node 'news' of {SERVICE}: publication times differ"]


async def test_count_lines_show_every_kind() -> None:
    """Zero kinds are shown, keyval stores by name between them."""
    assert m.count_lines(m.Owned(STRANGER, stores={"z": 1, "a": 2}).counts()) == [
        "users: 0", "roster items: 0", "vcards: 0", "private: 0", "keyval a: 1",
        "keyval z: 1", "pubsub nodes: 0", "pubsub items: 0"]
