"""Storage.update_roster, the incremental roster write: the contract on every
backend that keeps data, then what the fs backend promises about its journal
(one appended line and one fsync per change, whatever the roster's size;
folded into user.json now and then; crash leftovers handled)."""

from __future__ import annotations

import asyncio
import json
import os
import random
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from tests.storage.conftest import SQL_KINDS, backend
from tests.storage.test_contract import ALICE, BOB, USER_JSON, make_user
from vinespy.cluster.notifying_storage import NotifyingStorage
from vinespy.jid import JID
from vinespy.storage import Contact, ContactLookup, Storage, StorageError, User
from vinespy.storage import fs as fs_module
from vinespy.storage.fs import FsStorage
from vinespy.storage.memory import MemoryStorage
from vinespy.storage.null import NullStorage

CAROL = JID.parse("carol@example.org")
DAVE = JID.parse("dave@example.org")
JOURNAL = USER_JSON.parent / "roster.log"


class Plain(Storage):
    """A backend with only the abstract methods: update_roster is the default."""

    def __init__(self) -> None:
        self.inner = MemoryStorage()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def find_user(self, jid: JID) -> User | None:
        return await self.inner.find_user(jid)

    async def save_user(self, user: User) -> None:
        await self.inner.save_user(user)

    async def delete_user(self, jid: JID) -> bool:
        return await self.inner.delete_user(jid)

    find_vcard = save_vcard = find_fragment = save_fragment = get = put = None  # type: ignore


@pytest.fixture(params=["memory", "fs", "default", "notifying", *SQL_KINDS])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    store: Storage
    if request.param == "default":
        store = Plain()
    elif request.param == "notifying":
        async def changed(jid: JID) -> None:
            pass
        store = NotifyingStorage(FsStorage(tmp_path / "data"), changed)
    else:
        store = backend(request.param, request, tmp_path)
    yield store
    await store.close()


# --- the contract ------------------------------------------------------------------


async def test_update_roster_adds_replaces_deletes(storage: Storage) -> None:
    """Each change replaces or deletes one record and sets the version; the rest of
    the user (credentials, other records) is kept."""
    await storage.save_user(make_user())
    dave = Contact(DAVE, name="Dave", subscription="to", groups=["A", "B"])
    bob = Contact(BOB, subscription="none", ask="subscribe", pending_in=True, hidden=True)
    assert await storage.update_roster(ALICE, {DAVE: dave}, 4) is True
    assert await storage.update_roster(ALICE, {BOB: bob, CAROL: None}, 5) is True
    want = make_user(version=5)
    want.roster[DAVE] = dave
    want.roster[BOB] = bob
    del want.roster[CAROL]
    assert await storage.find_user(ALICE) == want
    assert await storage.update_roster(ALICE, {CAROL: None}, 6) is True    # absent: a no-op
    assert (await storage.find_user(ALICE)).roster_version == 6           # type: ignore


async def test_update_roster_of_missing_user(storage: Storage) -> None:
    """No account: False, and nothing is created."""
    assert await storage.update_roster(ALICE, {BOB: Contact(BOB)}, 1) is False
    assert await storage.find_user(ALICE) is None


async def test_update_roster_copies(storage: Storage) -> None:
    """The stored record does not follow later changes to the Contact passed in."""
    await storage.save_user(make_user())
    dave = Contact(DAVE, groups=["A"])
    await storage.update_roster(ALICE, {DAVE: dave}, 4)
    dave.groups.append("Mutated")
    found = await storage.find_user(ALICE)
    assert found is not None and found.roster[DAVE].groups == ["A"]


async def test_update_roster_then_save_user(storage: Storage) -> None:
    """save_user replaces the whole record, updates included; updates go on after it."""
    await storage.save_user(make_user())
    await storage.update_roster(ALICE, {DAVE: Contact(DAVE)}, 4)
    user = await storage.find_user(ALICE)
    assert user is not None and DAVE in user.roster
    del user.roster[DAVE]
    del user.roster[BOB]
    user.credentials = {}
    await storage.save_user(user)
    assert await storage.find_user(ALICE) == user
    await storage.update_roster(ALICE, {BOB: Contact(BOB, name="again")}, 5)
    user.roster[BOB] = Contact(BOB, name="again")
    user.roster_version = 5
    assert await storage.find_user(ALICE) == user


async def test_update_roster_random_walk(storage: Storage, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    """Hundreds of updates, with whole saves in between, read back as a model says
    (for fs with a small fold-in size, so the journal is folded in many times)."""
    monkeypatch.setattr(fs_module, "_JOURNAL_MIN", 600)
    rng = random.Random(6121)
    jids = [JID.parse(f"c{i}@example.org") for i in range(40)]
    model = make_user(version=0)
    await storage.save_user(model)
    for step in range(300):
        jid = rng.choice(jids)
        contact = None if rng.random() < 0.3 else Contact(
            jid, name=f"n{step}", subscription=rng.choice(["none", "to", "from", "both"]),
            groups=[f"g{step % 3}"], hidden=rng.random() < 0.2)
        model.roster_version += 1
        if contact is None:
            model.roster.pop(jid, None)
        else:
            model.roster[jid] = contact
        assert await storage.update_roster(ALICE, {jid: contact}, model.roster_version)
        if step % 50 == 49:
            await storage.save_user(model)
        if step % 7 == 0:
            assert await storage.find_user(ALICE) == model
    assert await storage.find_user(ALICE) == model


async def test_find_contact(storage: Storage) -> None:
    """One record (a copy) with the roster's version and counts; None without a user,
    a None record for a JID the roster does not hold."""
    assert await storage.find_contact(ALICE, BOB) is None
    await storage.save_user(make_user())
    await storage.update_roster(ALICE, {DAVE: Contact(DAVE, pending_in=True, hidden=True)}, 4)
    found = await storage.find_contact(ALICE.with_resource("phone"), BOB)
    assert found == ContactLookup(make_user().roster[BOB], 4, 3, 1)
    assert found is not None and found.contact is not None
    found.contact.groups.append("Mutated")
    again = await storage.find_contact(ALICE, BOB)
    assert again is not None and again.contact == make_user().roster[BOB]
    await storage.update_roster(ALICE, {DAVE: Contact(DAVE), BOB: None}, 5)
    assert await storage.find_contact(ALICE, BOB) == ContactLookup(None, 5, 3, 0)


async def test_null_update_roster() -> None:
    """The null backend keeps nothing: there is never a user to update."""
    assert await NullStorage().update_roster(ALICE, {BOB: Contact(BOB)}, 1) is False


async def test_notifying_storage_announces_updates() -> None:
    """In a cluster, a roster update is announced like any other write of the user."""
    seen: list[JID] = []

    async def changed(jid: JID) -> None:
        seen.append(jid)
    storage = NotifyingStorage(MemoryStorage(), changed)
    await storage.save_user(make_user())
    await storage.update_roster(ALICE.with_resource("phone"), {BOB: None}, 4)
    assert seen == [ALICE, ALICE]
    assert await storage.find_contact(ALICE, CAROL) is not None
    assert seen == [ALICE, ALICE]


# --- fs: the journal -----------------------------------------------------------------


def big_user(n: int) -> User:
    user = make_user()
    for i in range(n):
        jid = JID.parse(f"contact{i}@example.org")
        user.roster[jid] = Contact(jid, name=f"Contact {i}", groups=["Bench"])
    return user


async def test_fs_update_appends_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    """With 2,000 items, an update leaves user.json untouched (same file, same bytes)
    and appends one short line with one fsync: its cost does not grow with the
    roster. Before, every change rewrote and fsync'ed the whole user.json."""
    storage = FsStorage(tmp_path)
    await storage.save_user(big_user(2000))
    before = (tmp_path / USER_JSON).stat()
    await storage.update_roster(ALICE, {DAVE: Contact(DAVE, name="Dave")}, 4)
    fsyncs: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        fsyncs.append(fd)
        real(fd)
    monkeypatch.setattr(os, "fsync", counting)
    size = (tmp_path / JOURNAL).stat().st_size
    await storage.update_roster(ALICE, {BOB: None}, 5)
    assert len(fsyncs) == 1
    assert 0 < (tmp_path / JOURNAL).stat().st_size - size < 200
    after = (tmp_path / USER_JSON).stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (
        before.st_ino, before.st_mtime_ns, before.st_size)
    found = await storage.find_user(ALICE)
    assert found is not None and found.roster_version == 5 and len(found.roster) == 2003


async def test_fs_journal_is_folded_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past max(_JOURNAL_MIN, size of user.json) the journal is folded into
    user.json and removed: it never holds much more than user.json."""
    monkeypatch.setattr(fs_module, "_JOURNAL_MIN", 1000)
    storage = FsStorage(tmp_path)
    await storage.save_user(make_user())
    largest = 0
    for i in range(200):
        jid = JID.parse(f"c{i}@example.org")
        await storage.update_roster(ALICE, {jid: Contact(jid)}, 4 + i)
        journal = tmp_path / JOURNAL
        if journal.exists():
            largest = max(largest, journal.stat().st_size - (tmp_path / USER_JSON).stat().st_size)
    assert largest < 1000 + 200
    doc = json.loads((tmp_path / USER_JSON).read_bytes())
    assert doc["journal"] > 0 and len(doc["roster"]) > 100
    found = await storage.find_user(ALICE)
    assert found is not None and len(found.roster) == 203 and found.roster_version == 203


async def test_fs_save_user_folds_journal(tmp_path: Path) -> None:
    """save_user writes everything to user.json and removes the journal; the
    layout is then as before journals existed."""
    storage = FsStorage(tmp_path)
    await storage.save_user(make_user())
    await storage.update_roster(ALICE, {DAVE: Contact(DAVE)}, 4)
    assert (tmp_path / JOURNAL).exists()
    user = await storage.find_user(ALICE)
    assert user is not None
    await storage.save_user(user)
    assert not (tmp_path / JOURNAL).exists()
    assert await storage.find_user(ALICE) == user


async def test_fs_torn_last_line_is_ignored_then_cut(tmp_path: Path) -> None:
    """An append a crash cut short (no newline) is ignored, and the next update
    cuts it off before appending."""
    storage = FsStorage(tmp_path)
    await storage.save_user(make_user())
    await storage.update_roster(ALICE, {DAVE: Contact(DAVE)}, 4)
    with open(tmp_path / JOURNAL, "ab") as f:
        f.write(b'{"seq":2,"version":5,"set":[{"jid":"eve@exa')
    found = await storage.find_user(ALICE)
    assert found is not None and DAVE in found.roster and found.roster_version == 4
    await storage.update_roster(ALICE, {BOB: None}, 5)
    lines = (tmp_path / JOURNAL).read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 3
    found = await storage.find_user(ALICE)
    assert found is not None and BOB not in found.roster and found.roster_version == 5


@pytest.mark.parametrize("line", [b"{", b"[]", b'{"seq":2}', b'{"seq":"2","version":5,'
                                  b'"set":[],"del":[]}', b'{"seq":2,"version":5,"set":[],'
                                  b'"del":["@@"]}'])
async def test_fs_corrupt_journal(tmp_path: Path, line: bytes) -> None:
    """A complete journal line that is not an entry is StorageError, left as it is."""
    storage = FsStorage(tmp_path)
    await storage.save_user(make_user())
    await storage.update_roster(ALICE, {DAVE: Contact(DAVE)}, 4)
    with open(tmp_path / JOURNAL, "ab") as f:
        f.write(line + b"\n")
    content = (tmp_path / JOURNAL).read_bytes()
    with pytest.raises(StorageError):
        await storage.find_user(ALICE)
    with pytest.raises(StorageError):
        await storage.update_roster(ALICE, {BOB: None}, 5)
    assert (tmp_path / JOURNAL).read_bytes() == content


async def test_fs_stale_journal_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    """A crash between rewriting user.json and removing the journal leaves lines
    user.json already includes: they are skipped by number, so a save that
    dropped a record is not undone; later lines are applied."""
    storage = FsStorage(tmp_path)
    await storage.save_user(make_user())
    await storage.update_roster(ALICE, {DAVE: Contact(DAVE, name="old")}, 4)
    user = await storage.find_user(ALICE)
    assert user is not None
    del user.roster[DAVE]
    real = os.unlink

    def fail(path: Any, *args: Any, **kwargs: Any) -> None:
        if str(path).endswith("roster.log"):
            raise OSError(5, "Input/output error")
        real(path, *args, **kwargs)
    monkeypatch.setattr(os, "unlink", fail)
    await storage.save_user(user)
    monkeypatch.undo()
    assert (tmp_path / JOURNAL).exists()
    assert await storage.find_user(ALICE) == user
    await storage.update_roster(ALICE, {CAROL: None}, 5)
    del user.roster[CAROL]
    user.roster_version = 5
    assert await storage.find_user(ALICE) == user


async def test_fs_user_json_without_journal_key(tmp_path: Path) -> None:
    """A user.json written before journals existed reads back, and is numbered from 0."""
    storage = FsStorage(tmp_path)
    await storage.save_user(make_user())
    doc = json.loads((tmp_path / USER_JSON).read_bytes())
    del doc["journal"]
    (tmp_path / USER_JSON).write_text(json.dumps(doc, indent=1), "utf-8")
    assert await storage.find_user(ALICE) == make_user()
    await storage.update_roster(ALICE, {DAVE: Contact(DAVE)}, 4)
    found = await storage.find_user(ALICE)
    assert found is not None and DAVE in found.roster


async def test_fs_update_runs_in_a_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          thread_calls: list[str]) -> None:
    """update_roster and save_user (encoding included) each take one worker thread call."""
    storage = FsStorage(tmp_path)
    await storage.save_user(make_user())
    del thread_calls[:]
    calls = thread_calls
    encoded: list[bool] = []
    real_encode = fs_module.user_to_json

    def encode(*args: Any, **kwargs: Any) -> bytes:
        encoded.append(_in_loop_thread())
        return real_encode(*args, **kwargs)
    monkeypatch.setattr(fs_module, "user_to_json", encode)
    await storage.update_roster(ALICE, {DAVE: Contact(DAVE)}, 4)
    await storage.save_user(make_user())
    assert calls == ["_update_roster", "_save_user"]
    assert encoded == [False]


def _in_loop_thread() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def test_fs_sees_other_processes_writes(tmp_path: Path) -> None:
    """Two FsStorage on one directory (two cluster nodes): each sees the other's
    appends, folds and saves, although it keeps users parsed in memory."""
    one, two = FsStorage(tmp_path), FsStorage(tmp_path)
    await one.save_user(make_user())
    assert await two.find_user(ALICE) == make_user()
    await one.update_roster(ALICE, {DAVE: Contact(DAVE, name="one")}, 4)
    found = await two.find_contact(ALICE, DAVE)
    assert found is not None and found.contact == Contact(DAVE, name="one")
    await two.update_roster(ALICE, {DAVE: Contact(DAVE, name="two")}, 5)
    assert (await one.find_user(ALICE)).roster[DAVE].name == "two"    # type: ignore
    user = make_user(version=9)
    user.credentials = {}
    await two.save_user(user)
    assert await one.find_user(ALICE) == user
    assert await one.find_contact(ALICE, DAVE) == ContactLookup(None, 9, 3, 0)
    await two.delete_user(ALICE)
    assert await one.find_user(ALICE) is None and await one.find_contact(ALICE, BOB) is None


async def test_fs_reads_only_what_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    """Once parsed, a user is not parsed again for lookups and roster updates:
    only the journal's new lines are read (until the journal is folded in)."""
    storage = FsStorage(tmp_path)
    await storage.save_user(big_user(500))
    parses: list[int] = []
    real = fs_module.user_from_json

    def counting(*args: Any) -> Any:
        parses.append(1)
        return real(*args)
    monkeypatch.setattr(fs_module, "user_from_json", counting)
    for i in range(50):
        await storage.find_contact(ALICE, BOB)
        await storage.update_roster(ALICE, {DAVE: Contact(DAVE, name=str(i))}, 4 + i)
    found = await storage.find_user(ALICE)
    assert found is not None and found.roster[DAVE].name == "49" and len(parses) == 1
