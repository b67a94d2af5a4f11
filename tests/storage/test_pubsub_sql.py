"""What only the sql pubsub store promises (the contract is in
test_pubsub_contract.py): several cluster nodes, each with its own engine,
sharing one real PostgreSQL (tests/pgproc.py) lose and duplicate nothing;
its tables come with the main ones under one schema version; store_for
puts a sql host's services there; restore (vinespy migrate) is one
transaction that waits for a subscribe in progress."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable

import pytest
from sqlalchemy import delete

from tests.pgproc import PASSWORD, PostgresProcess
from tests.storage.conftest import SQL_KINDS, sql_storage
from tests.storage.test_pubsub_contract import sql_rows
from vinespy.config import ClusterConfig, Config
from vinespy.config.hosts import HostConfig, StorageConfig
from vinespy.storage import StorageError, open_storage
from vinespy.storage.pubsub import Item, PubSubNode, open_pubsub, store_for
from vinespy.storage.pubsub.sql import ITEMS, PUBSUB_SCHEMA, SUBSCRIBED, SqlPubSub
from vinespy.storage.sql import SqlStorage
from vinespy.storage.sqlschema import SCHEMA_VERSION

SVC = "pubsub.wonderland.lit"
ALICE = "alice@wonderland.lit"


@pytest.fixture
async def two_nodes(postgres: PostgresProcess) -> AsyncIterator[tuple[SqlPubSub, SqlPubSub]]:
    """Two stores as two cluster nodes: each on a SqlStorage (engine, pool) of
    its own, on one new PostgreSQL database."""
    url = postgres.url(postgres.createdb())
    dbs = [SqlStorage(url, password=PASSWORD, pool_size=5) for _ in range(2)]
    try:
        yield SqlPubSub(dbs[0]), SqlPubSub(dbs[1])
    finally:
        for db in dbs:
            await db.close()


async def test_two_nodes_publishing_200_items_keep_exactly_max_items(
        two_nodes: tuple[SqlPubSub, SqlPubSub]) -> None:
    """200 publishes at once, alternately through two nodes, max_items 10:
    no error, exactly 10 kept, the other 190 each evicted exactly once."""
    a, b = two_nodes
    assert await a.create(SVC, "n", ALICE, {})
    calls = [(a, b)[n % 2].publish(SVC, "n", f"i{n}", b"<x/>", ALICE, 10) for n in range(200)]
    results = await asyncio.gather(*calls)
    evicted = [i for r in results if r is not None for i in r]
    kept = [i.id for i in await b.items(SVC, "n")]
    assert len(kept) == 10 == len(await a.items(SVC, "n", max_items=100))
    assert len(evicted) == 190 == len(set(evicted))
    assert set(kept) | set(evicted) == {f"i{n}" for n in range(200)}


async def test_two_nodes_republishing_and_retracting_lose_nothing(
        two_nodes: tuple[SqlPubSub, SqlPubSub]) -> None:
    """Both nodes republish the same 20 ids while one retracts them: no
    error, at most 5 items, each id reported gone at most once per removal."""
    a, b = two_nodes
    assert await a.create(SVC, "n", ALICE, {})
    calls = [s.publish(SVC, "n", f"i{n % 20}", b"<x/>", ALICE, 5)
             for n in range(100) for s in (a, b)]
    retracts = [b.retract(SVC, "n", f"i{n}") for n in range(20)]
    await asyncio.gather(*calls, *retracts)
    items = await a.items(SVC, "n")
    assert len(items) <= 5 and len({i.id for i in items}) == len(items)


async def test_a_delete_racing_subscriptions_leaves_no_orphans(
        two_nodes: tuple[SqlPubSub, SqlPubSub]) -> None:
    """One node deletes while the other subscribes 30 JIDs and publishes: the
    node is gone afterwards and none of its rows is left behind."""
    a, b = two_nodes
    assert await a.create(SVC, "n", ALICE, {})
    calls: list[Awaitable[Any]] = []
    for n in range(30):
        calls += (b.subscribe(SVC, "n", f"u{n}@wonderland.lit", f"s{n}"),
                  b.set_affiliation(SVC, "n", f"m{n}@wonderland.lit", "member"),
                  b.publish(SVC, "n", f"i{n}", b"<x/>", ALICE, None))
    calls.insert(40, a.delete(SVC, "n"))       # in the midst of them
    await asyncio.gather(*calls)
    assert await a.get(SVC, "n") is None
    assert await sql_rows(a.storage) == set()


async def test_changes_wait_for_a_delete_in_progress(
        two_nodes: tuple[SqlPubSub, SqlPubSub]) -> None:
    """While one node's delete is not committed, the other node's subscribe,
    affiliation, publish and purge wait for it (the node row's lock), then
    find no node: nothing is written to a node being deleted."""
    a, b = two_nodes
    assert await a.create(SVC, "n", ALICE, {})
    async with a.storage.transaction(write=True) as conn:
        for table in PUBSUB_SCHEMA.sorted_tables:       # as delete() does
            await conn.execute(delete(table))
        tasks = [asyncio.ensure_future(c) for c in (
            b.subscribe(SVC, "n", ALICE, "s"), b.set_affiliation(SVC, "n", ALICE, "member"),
            b.publish(SVC, "n", "i", b"<x/>", ALICE, 1), b.purge(SVC, "n"))]
        done, _ = await asyncio.wait(tasks, timeout=0.5)
        assert not done
    assert [await t for t in tasks] == [False, False, None, None]
    assert await sql_rows(a.storage) == set()


async def test_tables_come_with_the_schema(tmp_path: Path) -> None:
    """A new database has the pubsub tables beside the main ones, one
    schema_version row; the pubsub store alone creates them too."""
    db = SqlStorage(f"sqlite:///{tmp_path / 'v.db'}")
    ps = open_pubsub("sql", storage=db)
    assert await ps.create(SVC, "n", ALICE, {})          # the first use opens the database
    await ps.close()
    assert db._engine is not None                         # not owned: left open
    await db.close()
    with sqlite3.connect(tmp_path / "v.db") as conn:
        names = {n for n, in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert set(PUBSUB_SCHEMA.tables) | {"users", "keyval", "schema_version"} <= names
        assert conn.execute("SELECT version FROM schema_version").fetchall() == \
            [(SCHEMA_VERSION,)]


def test_store_for_a_sql_host(tmp_path: Path) -> None:
    """A sql host's services are in its database, with or without [cluster];
    the server's SqlStorage is used as it is, else the store owns one."""
    host = HostConfig(domains=("wonderland.lit",), storage=StorageConfig(
        backend="sql", options={"url": f"sqlite:///{tmp_path / 'v.db'}"}))
    for cluster in (None, ClusterConfig(url="redis://127.0.0.1:1/0", node="n1")):
        config = Config(path=tmp_path / "config.toml", hosts=(host,), cluster=cluster)
        own = store_for(config, host)
        assert isinstance(own, SqlPubSub) and own._owned
        assert isinstance(own.storage, SqlStorage)
        db = open_storage("sql", host.storage.options)
        shared = store_for(config, host, db)
        assert isinstance(shared, SqlPubSub) and shared.storage is db and not shared._owned


def test_only_a_sql_storage_will_do(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="needs a SqlStorage"):
        open_pubsub("sql", storage=open_storage("memory", {}))


async def test_database_errors_are_storage_errors_without_the_password() -> None:
    db = SqlStorage("postgresql://vinespy:t0p-s3cret@127.0.0.1:1/vinespy")
    with pytest.raises(StorageError, match=r"^pubsub publish to 'n' of .*127\.0\.0\.1:1") as e:
        await SqlPubSub(db).publish(SVC, "n", "i", b"<x/>", ALICE, 1)
    assert "t0p-s3cret" not in str(e.value)
    await db.close()


# --- restore (vinespy migrate) ---------------------------------------------------


@pytest.fixture(params=SQL_KINDS)
async def sql_ps(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlPubSub]:
    db = sql_storage(request.param, request, tmp_path)
    try:
        yield SqlPubSub(db)         # type: ignore[arg-type]
    finally:
        await db.close()


async def test_restore_is_one_transaction_undone_whole_on_failure(
        sql_ps: SqlPubSub, monkeypatch: pytest.MonkeyPatch) -> None:
    """restore() runs in one transaction of the storage's; when its last
    statement (the items) fails, the node is as it was, row for row."""
    await sql_ps.create(SVC, "n", ALICE, {"k": "v"})
    await sql_ps.subscribe(SVC, "n", ALICE, "s0")
    await sql_ps.publish(SVC, "n", "old", b"<old/>", ALICE, None)
    before = await sql_rows(sql_ps.storage)
    real = sql_ps.storage.transaction
    opened: list[bool] = []

    @asynccontextmanager
    async def spy(write: bool = False) -> AsyncIterator[Any]:
        opened.append(write)
        async with real(write) as conn:
            yield Failing(conn)
    monkeypatch.setattr(sql_ps.storage, "transaction", spy)
    node = PubSubNode(SVC, "n", "bob@x", {}, 5)
    args = ({"bob@x": "owner"}, {"bob@x": "s1"}, [Item("boom", b"<x/>", "bob@x", 7)])
    with pytest.raises(StorageError, match="pubsub restore 'n' of .*: items refused"):
        await sql_ps.restore(node, *args)
    assert opened == [True]
    monkeypatch.undo()
    assert await sql_rows(sql_ps.storage) == before
    await sql_ps.restore(node, *args)
    assert await sql_ps.items(SVC, "n") == [Item("boom", b"<x/>", "bob@x", 7)]


class Failing:
    """A connection whose insert of items fails (after the node's row and
    the other rows were written)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)

    async def execute(self, stmt: Any, *args: Any) -> Any:
        if getattr(stmt, "table", None) is ITEMS and stmt.is_insert:
            raise StorageError("items refused")
        return await self.conn.execute(stmt, *args)


async def test_a_restore_waits_for_a_subscribe_in_progress(
        two_nodes: tuple[SqlPubSub, SqlPubSub]) -> None:
    """While another node's subscription (FOR KEY SHARE on the node's row,
    as subscribe() takes it) is not committed, a restore of the node waits;
    then it replaces that subscription too: only the restored state is left."""
    a, b = two_nodes
    assert await a.create(SVC, "n", ALICE, {})
    node = PubSubNode(SVC, "n", ALICE, {"k": "v"}, 1)
    async with a.storage.transaction(write=True) as conn:
        nid = await a._lock(conn, SVC, "n", shared=True)
        await conn.execute(SUBSCRIBED.insert().values(node_id=nid, jid="late@x", subid="s"))
        task = asyncio.ensure_future(b.restore(node, {ALICE: "owner"}, {"c@x": "s1"}, []))
        done, _ = await asyncio.wait([task], timeout=0.5)
        assert not done
    await task
    assert await a.subscriptions(SVC, "n") == {"c@x": "s1"}
    got = await a.get(SVC, "n")
    assert got is not None and (got.config, got.created) == ({"k": "v"}, 1)
