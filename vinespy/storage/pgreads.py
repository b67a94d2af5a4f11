"""The reads of every login on PostgreSQL, straight through an asyncpg pool.

A read of one row through SQLAlchemy's asyncio engine cost about 490 µs of
the server's CPU on the 2-core bench machine, of which asyncpg's own
``fetch`` is under 100 µs: the rest is the engine's connection checkout and
return (about 210 µs) and its execution and result layers, paid on each of
the half-dozen reads a login makes (bench/storage.py; the issue's goal is a
login on PostgreSQL within 20% of fs's CPU). :class:`Reads` runs those
statements — built once with SQLAlchemy and compiled here to asyncpg's
``$n`` form — on a pool of its own, whose connections need no reset on
release: they only ever run single statements in autocommit (the SELECTs,
and the keyval upsert written at every logout, atomic alone). Writes of
more than one statement, and every other read, stay with the engine and
its transactions.
"""

from __future__ import annotations

from typing import Any, Mapping

import asyncpg
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect

_DIALECT = asyncpg_dialect()

Query = tuple[Any, Mapping[str, Any]]     # (a SQLAlchemy statement, its parameters)


class Row:
    """An asyncpg record read by attribute, as SQLAlchemy's rows are."""

    __slots__ = ("_record",)

    def __init__(self, record: asyncpg.Record) -> None:
        self._record = record

    def __getattr__(self, name: str) -> Any:
        try:
            return self._record[name]
        except KeyError:
            raise AttributeError(name) from None


async def _keep(connection: asyncpg.Connection) -> None:
    """Release without asyncpg's reset query (one more round trip): nothing
    these connections run leaves a state behind."""


class Reads:
    """At most ``size`` connections, opened as they are needed."""

    def __init__(self, connect: Mapping[str, Any], size: int, timeout: float) -> None:
        self._connect = dict(connect)         # asyncpg.connect's arguments
        self._size = size
        self._timeout = timeout
        self._pool: asyncpg.Pool | None = None
        self._compiled: dict[int, tuple[str, tuple[str, ...]]] = {}

    def _sql(self, stmt: Any) -> tuple[str, tuple[str, ...]]:
        found = self._compiled.get(id(stmt))
        if found is None:
            compiled = stmt.compile(dialect=_DIALECT)
            found = self._compiled[id(stmt)] = (str(compiled), tuple(compiled.positiontup or ()))
        return found

    async def fetch(self, *queries: Query) -> list[list[Row]]:
        """Each query's rows, all on one connection."""
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                min_size=0, max_size=self._size, reset=_keep,
                **{"timeout": self._timeout, **self._connect,
                   "command_timeout": self._timeout})
        out: list[list[Row]] = []
        async with self._pool.acquire(timeout=self._timeout) as conn:
            for stmt, params in queries:
                sql, names = self._sql(stmt)
                out.append([Row(r) for r in await conn.fetch(sql, *(params[n] for n in names))])
        return out

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()


# What asyncpg raises when the database fails or is away.
ERRORS: tuple[type[BaseException], ...] = (asyncpg.PostgresError, asyncpg.InterfaceError)
