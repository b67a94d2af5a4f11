"""The copy behind ``vinespy migrate`` (vinespy.storage.migrate), through the
storage API: identical data, idempotent, the source never written; and
PubSubStore.restore on every store that keeps nodes in this process."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from tests.storage.conftest import backend
from tests.storage.migrate_data import (SERVICE, STRANGER, populate, populate_pubsub,
                                        snapshot, user)
from vinespy.storage import Storage, User
from vinespy.storage import migrate as m
from vinespy.storage.fs import FsStorage
from vinespy.storage.memory import MemoryStorage
from vinespy.storage.pubsub import Item, PubSubNode, PubSubStore, open_pubsub
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


@pytest.fixture(params=["memory", "fs", "default"])
def pubsub(request: pytest.FixtureRequest, tmp_path: Path) -> PubSubStore:
    if request.param == "memory":
        return open_pubsub("memory")
    if request.param == "fs":
        return open_pubsub("fs", dir=tmp_path / "target")
    return DefaultRestore(tmp_path / "target")


async def test_pubsub_copy_gives_the_same_nodes_twice(tmp_path: Path,
                                                      pubsub: PubSubStore) -> None:
    """fs -> memory/fs/(the default restore): config, affiliations, subscriptions
    and items in order, the same after a second copy; times kept unless the
    store has only the default restore."""
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
    if not isinstance(pubsub, DefaultRestore):
        assert dst == src
    assert tree(tmp_path / "source") == before


async def test_restore_replaces_a_node_that_exists(pubsub: PubSubStore) -> None:
    """restore() of a node that exists leaves exactly the given state: other
    affiliations, subscriptions and items are gone."""
    await pubsub.create(SERVICE, "n", "a@x", {"k": "v"})
    await pubsub.subscribe(SERVICE, "n", "old@x", "s0")
    await pubsub.publish(SERVICE, "n", "old", b"<old/>", "a@x", None)
    node = PubSubNode(SERVICE, "n", "a@x", {"k": "w"}, 1000)
    item = Item("new", b"<new/>", "b@x", 2000)
    await pubsub.restore(node, {"b@x": "publisher"}, {"c@x": "s1"}, [item])
    got = await pubsub.get(SERVICE, "n")
    assert got is not None and got.config == {"k": "w"}
    assert await pubsub.affiliations(SERVICE, "n") == {"b@x": "publisher"}
    assert await pubsub.subscriptions(SERVICE, "n") == {"c@x": "s1"}
    assert [(i.id, i.payload) for i in await pubsub.items(SERVICE, "n")] == [("new", b"<new/>")]


async def test_count_lines_show_every_kind() -> None:
    """Zero kinds are shown, keyval stores by name between them."""
    assert m.count_lines(m.Owned(STRANGER, stores={"z": 1, "a": 2}).counts()) == [
        "users: 0", "roster items: 0", "vcards: 0", "private: 0", "keyval a: 1",
        "keyval z: 1", "pubsub nodes: 0", "pubsub items: 0"]
