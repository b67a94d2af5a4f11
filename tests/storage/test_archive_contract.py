"""The message archive storage contract (vinespy/storage/archive/), run
against every ArchiveStore: memory, fs (tmp_path) and sql on SQLite and on
a real PostgreSQL (tests/pgproc.py). Then what only the fs store promises
(a torn last line, reading only the day files a page needs, a restart), and
how a host gets its store.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import AsyncIterator

import pytest
from sqlalchemy import event

from tests.storage.conftest import SQL_KINDS, sql_storage
from vinespy.config import Config
from vinespy.config.hosts import HostConfig, StorageConfig
from vinespy.jid import JID
from vinespy.storage import StorageError, open_storage
from vinespy.storage.archive import (ArchivedMessage, ArchivePage, ArchiveQuery, ArchiveStore,
                                     UnknownId, archive_for, new_id, open_archive)
from vinespy.storage.archive.batch import Batcher
from vinespy.storage.archive.days import day_file, record_line
from vinespy.storage.archive.fs import FsArchive
from vinespy.storage.archive.memory import MemoryArchive
from vinespy.storage.archive.sql import SqlArchive
from vinespy.storage.sql import SqlStorage

ALICE = JID.parse("alice@wonderland.lit")
BOB = JID.parse("bob@wonderland.lit")
T0 = datetime(2026, 3, 1, 22, 0, tzinfo=timezone.utc)
STEP = timedelta(minutes=10)        # 1,000 messages span 7 days: many day files
PEERS = ("hatter@wonderland.lit/tea", "hatter@wonderland.lit/party", "queen@hearts.lit")


def message(i: int, peer: str | None = None, stamp: datetime | None = None) -> ArchivedMessage:
    """Message ``i``: at T0 + i * STEP, peers taken in turn."""
    stamp = stamp or T0 + i * STEP
    peer = peer or PEERS[i % len(PEERS)]
    body = f"<message xmlns='jabber:client'><body>{i} ü</body></message>".encode()
    return ArchivedMessage(new_id(stamp), stamp, peer, peer.split("/")[0], body)


async def fill(store: ArchiveStore, n: int, owner: JID = ALICE) -> list[ArchivedMessage]:
    msgs = [message(i) for i in range(n)]
    for m in msgs:
        await store.append(owner, m)
    return msgs


def ids(page: ArchivePage) -> list[str]:
    return [m.id for m in page.items]


@pytest.fixture(params=["memory", "fs", "fs-thread", *(f"sql-{kind}" for kind in SQL_KINDS)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ArchiveStore]:
    if request.param == "memory":
        yield open_archive("memory")
    elif request.param == "fs":
        yield open_archive("fs", dir=tmp_path / "archive")
    elif request.param == "fs-thread":       # every write in a worker thread
        yield FsArchive(tmp_path / "archive", inline=False)
    else:
        db = sql_storage(request.param.removeprefix("sql-"), request, tmp_path)
        archive = open_archive("sql", storage=db, owned=True)
        await archive.open()
        try:
            yield archive
        finally:
            await archive.close()


async def page_all(store: ArchiveStore, q: ArchiveQuery, forward: bool) -> list[ArchivePage]:
    """Every page of ``q`` from one end to the other."""
    first = q if forward else ArchiveQuery(**{**q.__dict__, "before": ""})
    pages = [await store.query(ALICE, first)]
    while not pages[-1].complete:
        cursor = pages[-1].last if forward else pages[-1].first
        bound = {"after": cursor} if forward else {"before": cursor}
        pages.append(await store.query(ALICE, ArchiveQuery(**{**q.__dict__, **bound})))
        assert len(pages) < 100, "paging does not end"
    return pages


async def test_1000_messages_paged_forward_and_backward(store: ArchiveStore) -> None:
    """Pages of 50 cover every message once, in order, both ways; only the
    last page (in the direction of paging) is complete."""
    msgs = await fill(store, 1000)
    want = sorted(m.id for m in msgs)
    assert want == [m.id for m in msgs], "ids sort by time"
    forward = await page_all(store, ArchiveQuery(max=50), True)
    backward = await page_all(store, ArchiveQuery(max=50), False)
    for pages in (forward, backward):
        # The 20th page knows it is the last: one item more was asked for.
        assert [len(p.items) for p in pages] == [50] * 20
        assert [p.complete for p in pages] == [False] * 19 + [True]
        for p in pages:
            assert ids(p) == sorted(ids(p)) and (p.first, p.last) == (ids(p)[0], ids(p)[-1])
            assert p.count in (1000, None)
    assert [i for p in forward for i in ids(p)] == want
    assert [i for p in reversed(backward) for i in ids(p)] == want
    assert forward[0].items == tuple(msgs[:50]), "messages come back as stored"
    # memory always counts; sql when asked only for the count (max=0)
    assert forward[0].count == 1000 or not isinstance(store, MemoryArchive)
    counted = await store.query(ALICE, ArchiveQuery(max=0))
    assert counted.count == 1000 or isinstance(store, FsArchive)


async def test_a_short_result_is_one_complete_page(store: ArchiveStore) -> None:
    msgs = await fill(store, 5)
    for q in (ArchiveQuery(max=5), ArchiveQuery(max=10, before="")):
        page = await store.query(ALICE, q)
        assert ids(page) == [m.id for m in msgs] and page.complete and page.count == 5
    empty = await store.query(BOB, ArchiveQuery())
    assert empty == ArchivePage((), True, 0, None, None)


async def test_the_last_page_and_max_zero(store: ArchiveStore) -> None:
    msgs = await fill(store, 20)
    last = await store.query(ALICE, ArchiveQuery(max=7, before=""))
    assert ids(last) == [m.id for m in msgs[13:]] and not last.complete
    assert last.count in (20, None)
    before = await store.query(ALICE, ArchiveQuery(max=7, before=msgs[13].id))
    assert ids(before) == [m.id for m in msgs[6:13]] and not before.complete
    first = await store.query(ALICE, ArchiveQuery(max=7, before=msgs[6].id))
    assert ids(first) == [m.id for m in msgs[:6]] and first.complete
    nothing = await store.query(ALICE, ArchiveQuery(max=0))
    assert nothing.items == () and not nothing.complete and nothing.count in (20, None)


async def test_max_bytes_cuts_the_page_as_it_is_built(store: ArchiveStore) -> None:
    """A page stops before the message that would take it past max_bytes
    (keeping at least one), in the direction of paging, and is then not
    complete; its cursor pages on to the rest."""
    msgs = [message(i) for i in range(10, 30)]      # two digits each: one size
    for m in msgs:
        await store.append(ALICE, m)
    size = len(msgs[0].stanza)
    assert all(len(m.stanza) == size for m in msgs)
    page = await store.query(ALICE, ArchiveQuery(max=50, max_bytes=3 * size + 1))
    assert ids(page) == [m.id for m in msgs[:3]] and not page.complete
    back = await store.query(ALICE, ArchiveQuery(max=50, before="", max_bytes=3 * size))
    assert ids(back) == [m.id for m in msgs[17:]] and not back.complete
    one = await store.query(ALICE, ArchiveQuery(max=50, max_bytes=1))
    assert ids(one) == [msgs[0].id] and not one.complete
    rest = await page_all(store, ArchiveQuery(max=50, max_bytes=7 * size), True)
    assert [len(p.items) for p in rest] == [7, 7, 6]
    assert [i for p in rest for i in ids(p)] == [m.id for m in msgs]
    whole = await store.query(ALICE, ArchiveQuery(max=50, max_bytes=20 * size + 999))
    assert len(whole.items) == 20 and whole.complete
    with pytest.raises(ValueError):
        await store.query(ALICE, ArchiveQuery(max_bytes=0))


async def test_sql_counts_only_when_cheap_or_asked(request: pytest.FixtureRequest,
                                                   tmp_path: Path) -> None:
    """XEP-0059 <count/> is optional: a page of a long result runs no
    count(*) (a scan of the whole result); max=0 (a client asking for the
    count alone) runs one; the whole result in one page is counted free."""
    db = sql_storage("sqlite", request, tmp_path)
    store = SqlArchive(db, owned=True)
    await store.open()
    statements: list[str] = []

    def seen(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)
    try:
        await fill(store, 120)
        event.listen((await db._ready()).sync_engine, "before_cursor_execute", seen)

        async def counts(q: ArchiveQuery) -> tuple[int | None, int]:
            statements.clear()
            page = await store.query(ALICE, q)
            return page.count, sum("count(" in s.lower() for s in statements)

        assert await counts(ArchiveQuery(max=50)) == (None, 0)
        assert await counts(ArchiveQuery(max=50, before="")) == (None, 0)
        assert await counts(ArchiveQuery(max=1)) == (None, 0)          # what metadata asks
        assert await counts(ArchiveQuery(max=0)) == (120, 1)
        assert await counts(ArchiveQuery(max=50, with_jid=PEERS[2], after=None,
                                         start=T0 + 100 * STEP)) == (7, 0)
    finally:
        await store.close()


async def test_with_a_bare_or_a_full_jid(store: ArchiveStore) -> None:
    msgs = await fill(store, 30)
    hatter = await store.query(ALICE, ArchiveQuery(with_jid="hatter@wonderland.lit", max=100))
    assert ids(hatter) == [m.id for m in msgs if m.peer_bare == "hatter@wonderland.lit"]
    assert len(hatter.items) == 20 and hatter.count == 20
    tea = await store.query(ALICE, ArchiveQuery(with_jid="hatter@wonderland.lit/tea", max=4))
    assert ids(tea) == [m.id for m in msgs if m.peer == PEERS[0]][:4]
    assert tea.count in (10, None) and not tea.complete
    back = await store.query(ALICE, ArchiveQuery(with_jid="Queen@Hearts.lit", max=4, before=""))
    assert ids(back) == [m.id for m in msgs if m.peer == PEERS[2]][-4:], "with is a JID, prepared"
    none = await store.query(ALICE, ArchiveQuery(with_jid="queen@hearts.lit/x"))
    assert none.items == () and none.complete


async def test_start_and_end_are_inclusive(store: ArchiveStore) -> None:
    msgs = await fill(store, 300)       # two days
    q = ArchiveQuery(start=msgs[100].stamp, end=msgs[199].stamp, max=1000)
    page = await store.query(ALICE, q)
    assert ids(page) == [m.id for m in msgs[100:200]] and page.count == 100
    paged = await page_all(store, ArchiveQuery(start=msgs[100].stamp, end=msgs[199].stamp,
                                               max=30), False)
    assert [i for p in reversed(paged) for i in ids(p)] == ids(page)
    paris = timezone(timedelta(hours=1))
    local = await store.query(ALICE, ArchiveQuery(start=msgs[290].stamp.astimezone(paris)))
    assert ids(local) == [m.id for m in msgs[290:]], "any time zone"
    later = await store.query(ALICE, ArchiveQuery(start=msgs[299].stamp + timedelta(seconds=1)))
    assert later.items == () and later.complete


async def test_after_id_and_before_id_are_exclusive(store: ArchiveStore) -> None:
    msgs = await fill(store, 200)
    q = ArchiveQuery(after_id=msgs[10].id, before_id=msgs[150].id, max=1000)
    assert ids(await store.query(ALICE, q)) == [m.id for m in msgs[11:150]]
    # A filter id need not exist, nor be an id at all: ids are compared as text.
    gone = msgs[10].id[:16] + "zz"
    assert ids(await store.query(ALICE, ArchiveQuery(after_id=gone, max=3))) == \
        [m.id for m in msgs[11:14]]
    assert ids(await store.query(ALICE, ArchiveQuery(before_id="0", max=3))) == []
    both = ArchiveQuery(after_id=msgs[10].id, before_id=msgs[150].id, max=10,
                        after=msgs[100].id)
    page = await store.query(ALICE, both)
    assert ids(page) == [m.id for m in msgs[101:111]] and page.count in (139, None)


async def test_ids(store: ArchiveStore) -> None:
    msgs = await fill(store, 300)
    wanted = (msgs[250].id, msgs[3].id, "nonsense", new_id(T0), msgs[150].id, "f" * 24)
    page = await store.query(ALICE, ArchiveQuery(ids=wanted))
    assert ids(page) == [msgs[3].id, msgs[150].id, msgs[250].id] and page.complete
    two = await store.query(ALICE, ArchiveQuery(ids=wanted, max=2, before=""))
    assert ids(two) == [msgs[150].id, msgs[250].id] and not two.complete
    assert (await store.query(ALICE, ArchiveQuery(ids=()))).items == ()


async def test_an_rsm_id_not_in_the_archive_is_unknown(store: ArchiveStore) -> None:
    msgs = await fill(store, 3)
    bobs = message(1, stamp=msgs[1].stamp)
    await store.append(BOB, bobs)
    for bad in (new_id(T0), bobs.id, "nonsense", "", "f" * 24, msgs[0].id.upper()):
        with pytest.raises(UnknownId):
            await store.query(ALICE, ArchiveQuery(after=bad))
        if bad:
            with pytest.raises(UnknownId):
                await store.query(ALICE, ArchiveQuery(before=bad))
    page = await store.query(ALICE, ArchiveQuery(after=msgs[2].id))
    assert page.items == () and page.complete


async def test_owners_are_isolated(store: ArchiveStore) -> None:
    alices = await fill(store, 10)
    bobs = [message(i) for i in range(10, 15)]
    for m in bobs:
        await store.append(BOB, m)
    assert ids(await store.query(ALICE, ArchiveQuery())) == [m.id for m in alices]
    assert ids(await store.query(BOB, ArchiveQuery())) == [m.id for m in bobs]
    resource = JID.parse("bob@wonderland.lit/phone")
    assert ids(await store.query(resource, ArchiveQuery())) == [m.id for m in bobs]
    await store.delete_owner(BOB)
    assert (await store.query(BOB, ArchiveQuery())).items == ()
    assert ids(await store.query(ALICE, ArchiveQuery())) == [m.id for m in alices]
    await store.delete_owner(BOB)       # twice: nothing to do


async def test_remove_before_removes_each_message_once(store: ArchiveStore) -> None:
    alices = await fill(store, 400)          # ~2.8 days
    bobs = [message(i) for i in range(0, 400, 4)]
    for m in bobs:
        await store.append(BOB, m)
    cutoff = alices[250].stamp
    old = sum(1 for m in alices + bobs if m.stamp < cutoff)
    removed = []
    while n := await store.remove_before(cutoff, 100):
        removed.append(n)
        assert len(removed) < 50
    assert sum(removed) == old
    if not isinstance(store, FsArchive):
        assert removed[0] == 100, "at most limit (fs: a day file more)"
    assert await store.remove_before(cutoff, 100) == 0
    assert ids(await store.query(ALICE, ArchiveQuery(max=1000))) == [m.id for m in alices[250:]]
    assert ids(await store.query(BOB, ArchiveQuery(max=1000))) == \
        [m.id for m in bobs if m.stamp >= cutoff]
    assert await store.remove_before(cutoff, 0) == 0


async def test_remove_before_keeps_to_the_domains_named(store: ArchiveStore) -> None:
    """Two hosts with their own retention may share one store (one SQL
    database): each removes only its own domains' old messages."""
    other = JID.parse("carol@looking-glass.lit")
    old = [message(i) for i in range(0, 40, 2)]
    for m in old:
        await store.append(ALICE, m)
        await store.append(other, m)
    cutoff = old[-1].stamp + timedelta(seconds=1)
    removed = 0
    while n := await store.remove_before(cutoff, 7, domains=["looking-glass.lit"]):
        removed += n
    assert removed == len(old)
    assert ids(await store.query(other, ArchiveQuery(max=100))) == []
    assert ids(await store.query(ALICE, ArchiveQuery(max=100))) == [m.id for m in old]
    while await store.remove_before(cutoff, 7, domains=[ALICE.domain, "unserved.lit"]):
        pass
    assert ids(await store.query(ALICE, ArchiveQuery(max=100))) == []


@pytest.mark.parametrize("kind", ["fs", *(f"sql-{kind}" for kind in SQL_KINDS)])
async def test_two_nodes_retention_counts_each_message_once(
        kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Two stores on one archive (two nodes, or a node and a command)
    running retention at once remove each old message once between them."""
    if kind == "fs":
        stores = [FsArchive(tmp_path / "archive"), FsArchive(tmp_path / "archive")]
    else:
        first = sql_storage(kind.removeprefix("sql-"), request, tmp_path)
        second = SqlStorage(first.url, password=getattr(first, "_password", None))
        stores = [open_archive("sql", storage=db, owned=True) for db in (first, second)]
        await stores[0].open()
    try:
        owners = [JID.parse(f"user{n}@wonderland.lit") for n in range(4)]
        for owner in owners:
            await fill(stores[0], 150, owner)
        cutoff = T0 + 100 * STEP

        async def retention(store: ArchiveStore) -> int:
            total = 0
            while n := await store.remove_before(cutoff, 20):
                total += n
            return total
        assert sum(await asyncio.gather(*(retention(s) for s in stores))) == 4 * 100
        for owner in owners:
            assert len((await stores[1].query(owner, ArchiveQuery(max=100))).items) == 50
    finally:
        for store in stores:
            await store.close()


async def test_trim_keeps_the_newest(store: ArchiveStore) -> None:
    msgs = await fill(store, 300)
    await fill(store, 10, BOB)
    assert await store.trim(ALICE, 400) == 0
    assert await store.trim(ALICE, 123) == 177
    assert ids(await store.query(ALICE, ArchiveQuery(max=1000))) == [m.id for m in msgs[177:]]
    assert await store.trim(ALICE, 123) == 0
    assert await store.trim(ALICE, 0) == 123
    assert (await store.query(ALICE, ArchiveQuery())).items == ()
    assert len((await store.query(BOB, ArchiveQuery())).items) == 10
    assert await store.trim(JID.parse("nobody@wonderland.lit"), 5) == 0


async def test_bad_arguments(store: ArchiveStore) -> None:
    m = message(1)
    naive = m.stamp.replace(tzinfo=None)
    for bad in (ArchivedMessage("x" * 24, m.stamp, m.peer, m.peer_bare, m.stanza),
                ArchivedMessage(m.id.upper(), m.stamp, m.peer, m.peer_bare, m.stanza),
                ArchivedMessage(m.id, m.stamp + timedelta(microseconds=1), m.peer,
                                m.peer_bare, m.stanza),
                ArchivedMessage(m.id, naive, m.peer, m.peer_bare, m.stanza)):
        with pytest.raises(ValueError):
            await store.append(ALICE, bad)
    with pytest.raises(TypeError):
        await store.append(ALICE, ArchivedMessage(m.id, m.stamp, m.peer, m.peer_bare,
                                                  "<message/>"))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await store.append(JID.parse("wonderland.lit"), m)
    for q in (ArchiveQuery(max=-1), ArchiveQuery(start=naive), ArchiveQuery(with_jid="@")):
        with pytest.raises(ValueError):
            await store.query(ALICE, q)
    with pytest.raises(ValueError):
        await store.trim(ALICE, -1)
    with pytest.raises(ValueError):
        await store.remove_before(naive, 10)
    assert (await store.query(ALICE, ArchiveQuery())).items == ()


async def test_concurrent_appends_are_all_kept(store: ArchiveStore) -> None:
    msgs = [message(i) for i in range(200)]
    await asyncio.gather(*(store.append(ALICE, m) for m in msgs))
    page = await store.query(ALICE, ArchiveQuery(max=500))
    assert ids(page) == [m.id for m in msgs] and page.items == tuple(msgs)


async def test_append_many_keeps_every_entry(store: ArchiveStore) -> None:
    """One append_many of two owners' messages over several days keeps each
    as append would; a batch with a bad entry is refused before any entry
    is written; an empty batch is nothing; sync() after it changes nothing."""
    await store.append_many([])
    mine = [message(i) for i in range(300)]
    theirs = [message(i, peer=PEERS[2]) for i in range(0, 300, 7)]
    entries = [(ALICE, m) for m in mine] + [(BOB, m) for m in theirs]
    entries.sort(key=lambda e: e[1].stamp)
    await store.append_many(entries)
    m = message(1000)
    for bad in [(ALICE, ArchivedMessage("x" * 24, m.stamp, m.peer, m.peer_bare, m.stanza)),
                (JID.parse("wonderland.lit"), m)]:
        with pytest.raises(ValueError):
            await store.append_many([(ALICE, m), bad])
    await store.sync()
    assert (await store.query(ALICE, ArchiveQuery(max=500))).items == tuple(mine)
    assert (await store.query(BOB, ArchiveQuery(max=500))).items == tuple(theirs)


async def test_append_many_after_the_owner_was_deleted(store: ArchiveStore) -> None:
    """An owner deleted between two appends (account deletion) gets a new
    archive holding only the later message."""
    first, later = message(0), message(1)
    await store.append_many([(ALICE, first)])
    await store.delete_owner(ALICE)
    await store.append_many([(ALICE, later), (BOB, first)])
    assert (await store.query(ALICE, ArchiveQuery())).items == (later,)
    assert (await store.query(BOB, ArchiveQuery())).items == (first,)


async def test_append_now_writes_at_once_or_nothing(
        request: pytest.FixtureRequest, store: ArchiveStore) -> None:
    """append_now: memory and fs (inline) store an entry on the spot, as
    append would (fs: once the owner's directory is known to exist);
    a store whose writes wait (fs-thread, sql) writes nothing and says so.
    A bad entry it would write raises as append does."""
    first, now, later = message(0), message(1), message(2)
    await store.append(ALICE, first)
    inline = request.node.callspec.params["store"] in ("memory", "fs")
    written = store.append_now(ALICE, now)
    assert written == inline
    if not written:
        await store.append(ALICE, now)
    assert store.append_now(BOB, later) == isinstance(store, MemoryArchive)  # fs: dir unknown
    m = message(3)
    if inline:
        with pytest.raises(ValueError):
            store.append_now(ALICE, ArchivedMessage("x" * 24, m.stamp, m.peer, m.peer_bare,
                                                    m.stanza))
    assert (await store.query(ALICE, ArchiveQuery())).items == (first, now)
    assert (await store.query(BOB, ArchiveQuery())).items == ((later,) if isinstance(
        store, MemoryArchive) else ())


async def test_batcher_writes_at_once_only_when_idle(tmp_path: Path) -> None:
    """Batcher.append_now writes an entry at once when nothing is queued or
    being written (it then overtakes nothing), else leaves it to append;
    what it wrote is synced like a batch; a failed write is a StorageError."""
    store = FsArchive(tmp_path)
    synced: list[int] = []
    real_sync = store.sync

    async def sync() -> None:
        synced.append(1)
        await real_sync()
    store.sync = sync                               # type: ignore[method-assign]
    batcher = Batcher(store, sync_interval=0.05)
    msgs = [message(i) for i in range(4)]
    assert not batcher.append_now(ALICE, msgs[0])           # not started
    batcher.start()
    try:
        await batcher.append(ALICE, msgs[0])                # ALICE's dir made (thread)
        assert batcher.append_now(ALICE, msgs[1]) and batcher.written_now == 1
        queued = asyncio.ensure_future(batcher.append(ALICE, msgs[2]))
        await asyncio.sleep(0)                              # queued, not yet written
        assert not batcher.append_now(ALICE, msgs[3])       # would overtake it
        await queued
        assert batcher.append_now(ALICE, msgs[3]) and batcher.written_now == 2
        for _ in range(100):
            if synced:
                break
            await asyncio.sleep(0.05)
        assert synced, "what append_now wrote is synced"
        # A day file that cannot be opened for appending (here a directory
        # in its place: root cannot write there either).
        bad = message(40, stamp=T0 + timedelta(days=9))
        in_the_way = store.owner_dir(ALICE) / day_file(bad.id)
        in_the_way.mkdir()
        with pytest.raises(StorageError):
            batcher.append_now(ALICE, bad)
        in_the_way.rmdir()
    finally:
        await batcher.stop()
    assert not batcher.append_now(ALICE, message(5))        # stopped
    assert (await store.query(ALICE, ArchiveQuery())).items == tuple(msgs)


# ---------------------------------------------------------------------------
# fs


async def test_fs_another_process_deleted_the_owner(tmp_path: Path) -> None:
    """The directory an fs store knew to exist removed by another one (the
    operator's `vinespy unregister`): the next append makes it again."""
    store, other = FsArchive(tmp_path), FsArchive(tmp_path)
    await store.append(ALICE, message(0))
    await other.delete_owner(ALICE)
    later = message(1)
    await store.append(ALICE, later)
    assert (await other.query(ALICE, ArchiveQuery())).items == (later,)


async def test_fs_an_append_to_a_locked_day_waits_off_the_loop(tmp_path: Path) -> None:
    """A day file whose flock another writer holds (retention, another
    node): the append waits for it in a worker thread while the loop runs
    on, then lands whole."""
    store = FsArchive(tmp_path)
    first, second = message(0), message(1)
    await store.append(ALICE, first)
    fd = os.open(store.owner_dir(ALICE) / day_file(first.id), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        task = asyncio.create_task(store.append(ALICE, second))
        for _ in range(20):                  # the loop goes on meanwhile
            await asyncio.sleep(0)
        assert not task.done()
        fcntl.flock(fd, fcntl.LOCK_UN)
        await asyncio.wait_for(task, 10)
    finally:
        os.close(fd)
    assert (await store.query(ALICE, ArchiveQuery())).items == (first, second)


async def test_fs_appends_are_fsynced_by_sync_and_close(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Group commit: appends fsync nothing; sync() fsyncs each day file
    written since the last sync once, and each directory where a day file
    was created; close() syncs too."""
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    store = FsArchive(tmp_path)
    await store.append_many([(ALICE, message(i)) for i in range(3)] + [(BOB, message(0))])
    alice, bob = store.owner_dir(ALICE), store.owner_dir(BOB)
    made = [p for p in synced if not p.startswith((str(alice), str(bob)))]
    synced.clear()
    await store.append_many([(ALICE, message(i)) for i in range(3, 200)])
    assert synced == [], "an append fsyncs nothing"
    await store.sync()
    days = sorted({str(alice / day_file(message(i).id)) for i in range(200)})
    assert len(days) == 3 and sorted(synced) == sorted(
        days + [str(bob / day_file(message(0).id)), str(alice), str(bob)])
    synced.clear()
    await store.sync()
    assert synced == []
    await store.append(BOB, message(5))
    await store.close()
    assert synced == [str(bob / day_file(message(5).id))]
    assert made, "making the owners' directories was durable at once"
    # Many files: one syncfs(2) of the file system instead (Linux).
    synced.clear()
    store = FsArchive(tmp_path)
    await store.append_many([(JID.parse(f"u{i}@wonderland.lit"), message(i)) for i in range(20)])
    synced.clear()
    await store.sync()
    assert synced == [] and not store._dirty and not store._dirty_dirs


async def test_fs_no_append_is_lost_to_retention_of_its_day(tmp_path: Path) -> None:
    """remove_before rewrites the cutoff's day file while appends to it run
    in other threads: every newer message is kept."""
    store = FsArchive(tmp_path)
    day = datetime(2026, 3, 1, tzinfo=timezone.utc)
    old = [message(i, stamp=day + i * timedelta(seconds=1)) for i in range(300)]
    for m in old:
        await store.append(ALICE, m)
    cutoff = day + timedelta(hours=1)
    new = [message(i, stamp=cutoff + i * timedelta(seconds=1)) for i in range(300)]

    async def retention() -> int:
        total = 0
        for _ in range(30):
            total += await store.remove_before(cutoff, 10)
        return total
    done = await asyncio.gather(retention(), *(store.append(ALICE, m) for m in new))
    assert done[0] + await store.remove_before(cutoff, 1000) == 300
    assert ids(await store.query(ALICE, ArchiveQuery(max=1000))) == [m.id for m in new]


async def test_fs_a_torn_last_line_is_skipped_then_cut_off(tmp_path: Path) -> None:
    store = FsArchive(tmp_path)
    msgs = [message(i) for i in range(3)]
    for m in msgs[:2]:
        await store.append(ALICE, m)
    path = store.owner_dir(ALICE) / day_file(msgs[0].id)
    with open(path, "ab") as f:
        f.write(record_line(msgs[2])[:-10])             # a crash mid-append
    assert ids(await store.query(ALICE, ArchiveQuery())) == [m.id for m in msgs[:2]]
    late = message(4)
    await store.append(ALICE, late)
    assert ids(await store.query(ALICE, ArchiveQuery())) == [msgs[0].id, msgs[1].id, late.id]
    assert path.read_bytes() == b"".join(record_line(m) for m in (*msgs[:2], late))


async def test_fs_a_corrupt_record_is_a_storage_error(tmp_path: Path) -> None:
    store = FsArchive(tmp_path)
    await store.append(ALICE, message(0))
    path = store.owner_dir(ALICE) / day_file(message(0).id)
    with open(path, "ab") as f:
        f.write(b'{"id": 1}\n')
    with pytest.raises(StorageError, match=r"corrupt .*line 2"):
        await store.query(ALICE, ArchiveQuery())


async def test_fs_reads_records_out_of_order_or_not_written_by_it(tmp_path: Path) -> None:
    """A day file is sorted by id as read (appends of one day may come out
    of order); a record with its keys in another order is parsed whole; a
    record whose id is not where its line says is corrupt."""
    store = FsArchive(tmp_path)
    msgs = [message(i) for i in range(4)]
    for m in (msgs[2], msgs[0], msgs[3]):
        await store.append(ALICE, m)
    path = store.owner_dir(ALICE) / day_file(msgs[0].id)
    doc = json.loads(record_line(msgs[1]))
    with open(path, "ab") as f:
        f.write(json.dumps(dict(reversed(doc.items()))).encode() + b"\n")
    page = await store.query(ALICE, ArchiveQuery())
    assert page.items == tuple(msgs)
    liar = record_line(msgs[0]).replace(msgs[0].id.encode(), new_id(T0).encode(), 1)
    liar = liar.replace(b'"bare"', f'"id":"{msgs[0].id}","bare"'.encode())
    path.write_bytes(liar)
    with pytest.raises(StorageError, match=r"corrupt .*line 1: id"):
        await store.query(ALICE, ArchiveQuery())


async def test_fs_a_page_reads_only_the_day_files_it_needs(tmp_path: Path) -> None:
    """100,000 messages over 100 days: a page of 50 reads one or two files."""
    store = FsArchive(tmp_path)
    odir = store.owner_dir(ALICE)
    odir.mkdir(parents=True)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    days: dict[str, list[bytes]] = {}
    msgs = []
    for i in range(100_000):
        m = message(i, stamp=start + i * timedelta(seconds=86.4))
        msgs.append(m)
        days.setdefault(day_file(m.id), []).append(record_line(m))
    for name, lines in days.items():
        (odir / name).write_bytes(b"".join(lines))
    assert len(os.listdir(odir)) == 100

    async def reads(q: ArchiveQuery) -> tuple[list[str], int]:
        store.files_read = 0
        page = await store.query(ALICE, q)
        return ids(page), store.files_read

    assert await reads(ArchiveQuery(max=50)) == ([m.id for m in msgs[:50]], 1)
    assert await reads(ArchiveQuery(max=50, before="")) == ([m.id for m in msgs[-50:]], 1)
    # The RSM id's day is read once (kept for the page), the next one too.
    assert await reads(ArchiveQuery(max=50, after=msgs[50_990].id)) == \
        ([m.id for m in msgs[50_991:51_041]], 2)
    assert await reads(ArchiveQuery(max=50, start=msgs[70_000].stamp)) == \
        ([m.id for m in msgs[70_000:70_050]], 1)
    assert await reads(ArchiveQuery(max=50, end=msgs[30_010].stamp, before="")) == \
        ([m.id for m in msgs[29_961:30_011]], 2)
    assert await reads(ArchiveQuery(ids=(msgs[5].id, msgs[99_999].id))) == \
        ([msgs[5].id, msgs[99_999].id], 2)
    page = await store.query(ALICE, ArchiveQuery(max=50, with_jid=PEERS[2], after=msgs[-100].id))
    assert page.complete and page.count is None, "fs does not count beyond the page"


async def test_fs_survives_a_restart_and_keeps_a_layout_of_days(tmp_path: Path) -> None:
    msgs = await fill(FsArchive(tmp_path), 300)
    store = FsArchive(tmp_path)
    assert ids(await store.query(ALICE, ArchiveQuery(max=300))) == [m.id for m in msgs]
    odir = tmp_path / "wonderland%2Elit" / "alice"
    assert sorted(os.listdir(odir)) == ["2026-03-01.jsonl", "2026-03-02.jsonl", "2026-03-03.jsonl"]
    first = json.loads((odir / "2026-03-01.jsonl").read_bytes().split(b"\n")[0])
    assert first == {"id": msgs[0].id, "peer": PEERS[0], "bare": "hatter@wonderland.lit",
                     "text": msgs[0].stanza.decode()}
    binary = ArchivedMessage(new_id(T0), T0, "a@b", "a@b", b"\xff\x00")
    await store.append(BOB, binary)
    assert (await store.query(BOB, ArchiveQuery())).items == (binary,)


# ---------------------------------------------------------------------------
# how a host gets its store


def test_archive_for_a_host(tmp_path: Path) -> None:
    def host(backend: str, **options: str) -> HostConfig:
        return HostConfig(domains=("wonderland.lit",),
                          storage=StorageConfig(backend=backend, options=options))
    config = Config(path=tmp_path / "config.toml", hosts=())
    sql = host("sql", url=f"sqlite:///{tmp_path / 'v.db'}")
    own = archive_for(config, sql)
    assert isinstance(own, SqlArchive) and own._owned and isinstance(own.storage, SqlStorage)
    db = open_storage("sql", sql.storage.options)
    shared = archive_for(config, sql, db)
    assert isinstance(shared, SqlArchive) and shared.storage is db and not shared._owned
    fs = archive_for(config, host("fs", dir=str(tmp_path / "data")))
    assert isinstance(fs, FsArchive) and fs.dir == tmp_path / "data" / "archive"
    assert isinstance(archive_for(config, host("memory")), MemoryArchive)
    with pytest.raises(TypeError, match="needs a SqlStorage"):
        open_archive("sql", storage=open_storage("memory", {}))
