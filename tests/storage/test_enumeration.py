"""The Storage enumeration (owners, fragments, stores) that ``vinespy
migrate`` copies with, run against every backend that keeps data (memory,
fs, sql on SQLite and on PostgreSQL); then what only the fs walk promises."""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator

import pytest
from lxml import etree

from tests.storage.conftest import SQL_KINDS, backend
from tests.storage.test_contract import KEYS, make_user
from vinespy.jid import JID
from vinespy.storage import Storage, StorageError, User
from vinespy.storage import fs as fs_module
from vinespy.storage import sql as sql_module
from vinespy.storage.fs import FsStorage
from vinespy.storage.null import NullStorage
from vinespy.storage.pubsub import open_pubsub

ALICE = JID.parse("alice@example.com")
BOB = JID.parse("bob@example.net")
CAROL = JID.parse("carol@example.com")
DAVE = JID.parse("dave@example.org")


@pytest.fixture(params=["memory", "fs", *SQL_KINDS])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    store = backend(request.param, request, tmp_path)
    yield store
    await store.close()


async def owners(storage: Storage) -> list[JID]:
    return [jid async for jid in storage.owners()]


def fragment(namespace: str, name: str, text: str = "x") -> etree._Element:
    el = etree.Element(f"{{{namespace}}}{name}")
    el.text = text
    return el


async def test_an_empty_storage_lists_nothing(storage: Storage) -> None:
    """No owners, and no fragments or stores for a JID never stored."""
    assert await owners(storage) == []
    assert await storage.fragments(ALICE) == []
    assert await storage.stores(ALICE) == []


async def test_owners_are_every_jid_with_data_each_once(storage: Storage) -> None:
    """Accounts and JIDs that only have a keyval store, a vCard or private XML
    are listed, each once, as bare JIDs."""
    await storage.save_user(make_user(ALICE))
    await storage.put(ALICE, "offline", [{"body": "hi"}])
    await storage.save_vcard(ALICE, etree.Element("{vcard-temp}vCard"))
    await storage.put(BOB.with_resource("phone"), "last", {"time": 1})
    await storage.save_vcard(CAROL, etree.Element("{vcard-temp}vCard"))
    await storage.save_fragment(DAVE, fragment("storage:bookmarks", "storage"))
    found = await owners(storage)
    assert sorted(found, key=str) == [ALICE, BOB, CAROL, DAVE]
    assert all(j.is_bare for j in found)


async def test_fragments_and_stores_of_a_jid_sorted(storage: Storage) -> None:
    """fragments() gives (namespace, name), stores() the names holding a value;
    a store put to None is gone, others' data is not listed."""
    for ns, name in (("urn:b", "z"), ("urn:a", "y"), ("", "plain"), ("urn:a", "x")):
        await storage.save_fragment(ALICE, fragment(ns, name))
    await storage.save_fragment(BOB, fragment("urn:bob", "only"))
    for store in ("offline", "blocklist", "last"):
        await storage.put(ALICE, store, [1])
    await storage.put(ALICE, "last", None)
    await storage.put(BOB, "private_names", ["h"])
    assert await storage.fragments(ALICE) == [("", "plain"), ("urn:a", "x"), ("urn:a", "y"),
                                              ("urn:b", "z")]
    assert await storage.stores(ALICE) == ["blocklist", "offline"]
    assert await storage.stores(BOB.with_resource("r")) == ["private_names"]


async def test_a_deleted_user_is_no_owner(storage: Storage) -> None:
    """delete_user removes everything, so the JID is listed no more."""
    await storage.save_user(User(ALICE, dict(KEYS)))
    await storage.put(ALICE, "offline", [1])
    await storage.save_fragment(ALICE, fragment("urn:a", "x"))
    await storage.save_user(User(BOB))
    await storage.delete_user(ALICE)
    assert await owners(storage) == [BOB]
    assert await storage.fragments(ALICE) == [] and await storage.stores(ALICE) == []


async def test_long_names_are_listed(storage: Storage) -> None:
    """An account with a localpart too long for a plain file name, and a
    fragment with a long namespace, are listed under their own names."""
    long_user = JID.parse(f"{'l' * 300}@example.com")
    long_ns = "urn:" + "n" * 400
    await storage.save_user(User(long_user, dict(KEYS)))
    await storage.save_fragment(long_user, fragment(long_ns, "e"))
    await storage.save_fragment(long_user, fragment("urn:a", "e" * 300))
    assert await owners(storage) == [long_user]
    assert await storage.fragments(long_user) == [("urn:a", "e" * 300), (long_ns, "e")]


async def test_owners_streams_many(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    """Owners come in pages (sql) and batches (fs): every one once, however many."""
    monkeypatch.setattr(sql_module, "LIST_PAGE", 3)
    monkeypatch.setattr(fs_module, "_LIST_BATCH", 2)
    jids = [JID.parse(f"u{i}@d{i % 2}.example") for i in range(10)]
    for i, jid in enumerate(jids):
        if i % 3:
            await storage.save_user(User(jid))
        else:
            await storage.put(jid, "last", {"time": i})
    assert sorted(await owners(storage), key=str) == sorted(jids, key=str)


async def test_null_lists_nothing() -> None:
    """The null backend holds nothing, so it lists nothing."""
    store = NullStorage()
    await store.save_user(make_user(ALICE))
    assert await owners(store) == [] and await store.stores(ALICE) == []
    assert await store.fragments(ALICE) == []


# --- fs only --------------------------------------------------------------------


async def test_fs_skips_pubsub_temporary_files_and_empty_dirs(tmp_path: Path) -> None:
    """The pubsub store's directory, dot-files (temporary files, tombstones) and
    a user directory holding nothing are not owners."""
    store = FsStorage(tmp_path)
    pubsub = open_pubsub("fs", dir=tmp_path / "pubsub")
    await pubsub.create("games.example.com", "news", "alice@example.com", {})
    await store.save_user(User(ALICE))
    (store.user_dir(ALICE) / ".user.json.abc.tmp").write_text("{")
    (store.user_dir(ALICE) / ".offline.json.abc.tmp").write_text("[")
    (store.user_dir(ALICE).parent / ".deleted-0123").mkdir()
    (store.user_dir(BOB) / "private").mkdir(parents=True)
    assert await owners(store) == [ALICE]
    assert await store.stores(ALICE) == [] and await store.fragments(ALICE) == []


async def test_fs_a_user_file_of_another_jid_is_corrupt(tmp_path: Path) -> None:
    """A directory whose name is not its content's JID is refused, not listed as another."""
    store = FsStorage(tmp_path)
    long_user = JID.parse(f"{'l' * 300}@example.com")
    await store.save_user(User(long_user))
    other = store.user_dir(long_user).with_name("m" * 130 + "~" + "0" * 64)
    store.user_dir(long_user).rename(other)
    with pytest.raises(StorageError, match="holds the data of"):
        await owners(store)


async def test_fs_hashed_dir_without_account_is_skipped(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """Keyval data under a hashed name without user.json cannot be named: a
    warning, not a guess."""
    store = FsStorage(tmp_path)
    await store.put(JID.parse(f"{'l' * 300}@example.com"), "last", {"time": 1})
    assert await owners(store) == []
    assert "cannot tell whose data" in caplog.text
