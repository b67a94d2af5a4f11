"""The SQL backend's schema and its versions (``vinespy db upgrade``).

A vinespy database holds :data:`SCHEMA` (accounts, rosters, vCards, private
XML, keyval stores), the pubsub store's
:data:`~vinespy.storage.pubsub.sql.PUBSUB_SCHEMA` and the message archive's
:data:`~vinespy.storage.archive.sql.ARCHIVE_SCHEMA`, and one row in
``schema_version``. Each version after the first is one step in
:data:`STEPS`, run in order in one transaction by :func:`upgrade`: a small
versioned migration table rather than Alembic, because the steps are few,
additive and need no autogeneration, and the server must check the version
at every start without Alembic's environment (its ini file, script
directory and own version table) shipped beside it.

Versions:

1. users, credentials, roster, vcards, fragments, keyval;
2. the pubsub store's nodes, affiliations, subscriptions and items;
3. the message archive (XEP-0313).

On PostgreSQL both :func:`ensure` and :func:`upgrade` first take a
transaction-scoped advisory lock, so two nodes starting on one empty
database at once create the schema once (the other then finds it); on
SQLite the transaction is ``BEGIN IMMEDIATE`` (the caller's), which already
serializes them.
"""

from __future__ import annotations

from typing import Awaitable, Callable

from sqlalchemy import (BigInteger, Boolean, Column, Integer, LargeBinary, MetaData,
                        PrimaryKeyConstraint, Table, Text, delete, func, inspect, select)
from sqlalchemy.ext.asyncio import AsyncConnection

from . import StorageError
from .archive.sql import ARCHIVE_SCHEMA
from .pubsub.sql import PUBSUB_SCHEMA

SCHEMA = MetaData()
VERSION = Table("schema_version", SCHEMA, Column("version", Integer, nullable=False))
USERS = Table(
    "users", SCHEMA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("jid", Text, nullable=False, unique=True),
    Column("roster_version", BigInteger, nullable=False))
CREDENTIALS = Table(
    "credentials", SCHEMA,
    Column("user_id", Integer, nullable=False), Column("mechanism", Text, nullable=False),
    Column("salt", LargeBinary, nullable=False), Column("stored_key", LargeBinary, nullable=False),
    Column("server_key", LargeBinary, nullable=False),
    Column("iterations", Integer, nullable=False),
    PrimaryKeyConstraint("user_id", "mechanism"))
ROSTER = Table(
    "roster", SCHEMA,
    Column("user_id", Integer, nullable=False), Column("contact", Text, nullable=False),
    Column("name", Text), Column("subscription", Text, nullable=False), Column("ask", Text),
    Column("groups", Text, nullable=False), Column("approved", Boolean, nullable=False),
    Column("pending_in", Boolean, nullable=False), Column("hidden", Boolean, nullable=False),
    PrimaryKeyConstraint("user_id", "contact"))
VCARDS = Table("vcards", SCHEMA, Column("jid", Text, primary_key=True),
               Column("data", LargeBinary, nullable=False))
FRAGMENTS = Table(
    "fragments", SCHEMA,
    Column("jid", Text, nullable=False), Column("namespace", Text, nullable=False),
    Column("name", Text, nullable=False), Column("data", LargeBinary, nullable=False),
    PrimaryKeyConstraint("jid", "namespace", "name"))
KEYVAL = Table(
    "keyval", SCHEMA,
    Column("jid", Text, nullable=False), Column("store", Text, nullable=False),
    Column("value", LargeBinary, nullable=False), PrimaryKeyConstraint("jid", "store"))


SCHEMA_VERSION = 3
# Every table of a vinespy database at SCHEMA_VERSION.
SCHEMAS = (SCHEMA, PUBSUB_SCHEMA, ARCHIVE_SCHEMA)
UPGRADE = "run 'vinespy db upgrade' (stop every node first)"
_LOCK = 0x76696E6573707931      # "vinespy1": the advisory lock of schema changes


async def _v2(conn: AsyncConnection) -> None:
    await conn.run_sync(PUBSUB_SCHEMA.create_all)


async def _v3(conn: AsyncConnection) -> None:
    await conn.run_sync(ARCHIVE_SCHEMA.create_all)


# version -> the step that makes it from the version before
STEPS: dict[int, Callable[[AsyncConnection], Awaitable[None]]] = {2: _v2, 3: _v3}


async def _found(conn: AsyncConnection, shown: str) -> int | None:
    """The database's version; None for an empty database; StorageError for
    a database with tables of ours but no version (not a vinespy database)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(select(func.pg_advisory_xact_lock(_LOCK)))
    names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    if VERSION.name not in names:
        ours = sorted(names & {t for s in SCHEMAS for t in s.tables})
        if ours:
            raise StorageError(f"{shown}: tables {', '.join(ours)} exist "
                               f"but no schema_version: not a vinespy database")
        return None
    found = (await conn.execute(select(func.max(VERSION.c.version)))).scalar()
    if found is None:
        raise StorageError(f"{shown}: schema_version is empty: not a vinespy database")
    if found > SCHEMA_VERSION:
        raise StorageError(f"{shown}: database schema version {found} is newer than this "
                           f"vinespy's ({SCHEMA_VERSION}): run the vinespy that wrote it")
    return int(found)


async def _create(conn: AsyncConnection) -> None:
    for schema in SCHEMAS:
        await conn.run_sync(schema.create_all)
    await conn.execute(VERSION.insert().values(version=SCHEMA_VERSION))


async def ensure(conn: AsyncConnection, shown: str, create: bool = True) -> None:
    """At every start: create the schema in an empty database (unless not
    ``create``: a database only read, such as a migration's source); refuse
    one of another version with a line that says what to do."""
    found = await _found(conn, shown)
    if found is None:
        if not create:
            raise StorageError(f"{shown}: no vinespy schema (an empty database)")
        await _create(conn)
    elif found < SCHEMA_VERSION:
        raise StorageError(f"{shown}: database schema version {found} is older than this "
                           f"vinespy's ({SCHEMA_VERSION}): {UPGRADE}")


async def upgrade(conn: AsyncConnection, shown: str) -> tuple[int | None, int]:
    """Create the schema, or run every step from the database's version to
    :data:`SCHEMA_VERSION`; (the version found, or None; SCHEMA_VERSION).
    All in the caller's transaction: a step that fails leaves the database
    as it was (PostgreSQL and SQLite both roll DDL back)."""
    found = await _found(conn, shown)
    if found is None:
        await _create(conn)
        return None, SCHEMA_VERSION
    for version in range(found + 1, SCHEMA_VERSION + 1):
        await STEPS[version](conn)
    if found != SCHEMA_VERSION:
        await conn.execute(delete(VERSION))
        await conn.execute(VERSION.insert().values(version=SCHEMA_VERSION))
    return found, SCHEMA_VERSION
