"""What only the sql backend promises: its schema version, errors that name
the database without its password, and changes from two nodes at once
(the contract itself runs in test_contract.py and test_roster_storage.py)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from tests.pgproc import PASSWORD, PostgresProcess
from tests.storage.test_contract import ALICE, make_user
from vinespy.jid import JID
from vinespy.storage import Contact, StorageError, open_storage
from vinespy.storage.sql import SqlStorage
from vinespy.storage.sqlschema import SCHEMA_VERSION


async def test_open_storage_and_schema_version(tmp_path: Path) -> None:
    """An empty database gets the tables and schema_version; a database of
    another version is refused with one line saying which."""
    db = tmp_path / "new" / "vinespy.db"
    storage = open_storage("sql", {"url": f"sqlite:///{db}", "pool_size": 2})
    assert isinstance(storage, SqlStorage)
    await storage.save_user(make_user())
    await storage.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [
            (SCHEMA_VERSION,)]
    reopened = SqlStorage(f"sqlite:///{db}")
    assert await reopened.find_user(ALICE) == make_user()
    await reopened.close()
    for version, advice in ((SCHEMA_VERSION + 1, ("newer", "run the vinespy that wrote it")),
                            (SCHEMA_VERSION - 1, ("older", "run 'vinespy db upgrade'"))):
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE schema_version SET version = ?", (version,))
        storage = SqlStorage(f"sqlite:///{db}")
        with pytest.raises(StorageError) as info:
            await storage.find_user(ALICE)
        assert str(info.value).startswith(
            f"sqlite:///{db}: database schema version {version} is {advice[0]} than this "
            f"vinespy's ({SCHEMA_VERSION}): {advice[1]}"), str(info.value)
        await storage.close()


async def test_foreign_tables_are_refused(tmp_path: Path) -> None:
    """A database with a table of ours but no schema_version is not touched."""
    db = tmp_path / "vinespy.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
    storage = SqlStorage(f"sqlite:///{db}")
    with pytest.raises(StorageError, match="not a vinespy database"):
        await storage.find_user(ALICE)
    await storage.close()


def test_bad_url_fails_at_open() -> None:
    with pytest.raises(StorageError, match="expected sqlite:/// or postgresql://"):
        SqlStorage("mysql://u:hunter2@h/db")


async def test_errors_hide_the_password(postgres: PostgresProcess, tmp_path: Path) -> None:
    """A wrong password or a closed port: StorageError, one line naming the
    database, never the password (the option's, the URL's or the file's)."""
    db = postgres.createdb()
    url = postgres.url(db).replace("vinespy@", "vinespy:hunter2@")
    (tmp_path / "pw").write_text("wrong-file-pass\n")
    closed = f"postgresql://vinespy:hunter2@127.0.0.1:{postgres.port + 1}/x"
    for storage in (SqlStorage(url), SqlStorage(postgres.url(db), password="wrong-pass"),
                    SqlStorage(postgres.url(db), password_file=tmp_path / "pw"),
                    SqlStorage(closed)):
        with pytest.raises(StorageError) as info:
            await storage.find_user(ALICE)
        text = str(info.value)
        assert "\n" not in text and "127.0.0.1" in text
        assert not any(p in text for p in ("hunter2", "wrong-pass", "wrong-file-pass"))
        await storage.close()
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    storage = SqlStorage(postgres.url(db), password_file=tmp_path / "pw")
    await storage.save_user(make_user())
    await storage.close()


async def test_two_nodes_change_one_roster_at_once(postgres: PostgresProcess) -> None:
    """Two backends on one PostgreSQL (two nodes) adding 40 contacts to one
    user concurrently: every one is kept."""
    url = postgres.url(postgres.createdb())
    one, two = SqlStorage(url, password=PASSWORD), SqlStorage(url, password=PASSWORD)
    await one.save_user(make_user())
    contacts = [JID.parse(f"c{i}@example.org") for i in range(40)]
    await asyncio.gather(*(
        (one if i % 2 else two).update_roster(ALICE, {c: Contact(c, name=str(i))}, 10 + i)
        for i, c in enumerate(contacts)))
    user = await two.find_user(ALICE)
    assert user is not None and set(contacts) <= set(user.roster)
    assert len(user.roster) == 43 and user.roster_version >= 10
    await one.close()
    await two.close()
