"""Fixtures shared by the storage tests."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.ldapproc import slapd  # noqa: F401  (a fixture)
from tests.pgproc import PASSWORD, PostgresProcess, postgres  # noqa: F401  (a fixture)
from vinespy.storage import Storage
from vinespy.storage.fs import FsStorage
from vinespy.storage.memory import MemoryStorage
from vinespy.storage.sql import SqlStorage

# The sql backend on each database the suite runs it on (the storage fixtures'
# params): SQLite in a file, and a real PostgreSQL (tests/pgproc.py).
SQL_KINDS = ("sqlite", "postgresql")


def sql_storage(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """A SqlStorage on a new, empty database of ``kind``; the caller closes it."""
    if kind == "sqlite":
        return SqlStorage(f"sqlite:///{tmp_path / 'db' / 'vinespy.db'}")
    server: PostgresProcess = request.getfixturevalue("postgres")
    return SqlStorage(server.url(server.createdb()), password=PASSWORD)


def backend(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """A new, empty storage of ``kind`` (memory, fs or one of SQL_KINDS);
    the caller closes it."""
    if kind == "memory":
        return MemoryStorage()
    if kind == "fs":
        return FsStorage(tmp_path / "data")
    return sql_storage(kind, request, tmp_path)


@pytest.fixture
def thread_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the functions handed to ``asyncio.to_thread`` from now on."""
    calls: list[str] = []
    real = asyncio.to_thread

    async def spy(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        calls.append(fn.__name__)
        return await real(fn, *args, **kwargs)
    monkeypatch.setattr(asyncio, "to_thread", spy)
    return calls
