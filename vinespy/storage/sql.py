"""``backend = "sql"``: accounts and everything else in SQLite or PostgreSQL.

``url = "sqlite:///data/vinespy.db"`` (config.py makes a relative path
absolute against the site directory) or
``url = "postgresql://USER:PASSWORD@HOST:PORT/DB"``; ``password`` or
``password_file`` (its first line) overrides the URL's; ``pool_size``
connections at most (default 5). SQLAlchemy 2's asyncio API drives aiosqlite
or asyncpg, so no call blocks the event loop; on PostgreSQL the reads every
login and presence makes take an asyncpg pool of their own, as many
connections again (:mod:`vinespy.storage.pgreads`: a third of the CPU).
A URL is only ever shown with its password as ``***``
(:func:`vinespy.config.safe_url`).

Tables (:mod:`vinespy.storage.sqlschema`, its version in ``schema_version``)::

    users        id, jid (bare, unique), roster_version
    credentials  user_id + mechanism -> salt, stored_key, server_key, iterations
    roster       user_id + contact -> name, subscription, ask, groups (JSON),
                 approved, pending_in, hidden
    vcards       jid -> data (XML)
    fragments    jid + namespace + name -> data (XML)
    keyval       jid + store -> value (JSON)

and the tables of the pubsub store (:data:`vinespy.storage.pubsub.sql.PUBSUB_SCHEMA`)
and of the message archive (:data:`vinespy.storage.archive.sql.ARCHIVE_SCHEMA`).
The first use of an empty database creates them; a database of an older
schema version is refused with StorageError naming ``vinespy db upgrade``,
which :meth:`SqlStorage.upgrade` serves.

Each call that reads before it writes (:meth:`SqlStorage.update_roster`,
:meth:`~SqlStorage.save_user`, :meth:`~SqlStorage.delete_user`) is one
transaction: on PostgreSQL the first statement updates the user's row, so
concurrent changes of one user (from several nodes) wait for each other;
on SQLite every writing transaction is ``BEGIN IMMEDIATE``. Every driver
or I/O error becomes StorageError.
"""

from __future__ import annotations

import asyncio
import json
import os
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncContextManager, AsyncIterator, Callable, Mapping

from lxml import etree
from sqlalchemy import Table, bindparam, delete, event, func, select, union, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ..config import safe_url
from ..jid import JID, JIDError
from . import sqlschema
from .sqlschema import CREDENTIALS, FRAGMENTS, KEYVAL, ROSTER, USERS, VCARDS
from . import (Contact, ContactLookup, RosterConflict, ScramKeys, Storage, StorageError, User,
               check_store, json_value, register, value_from_json, xml_bytes, xml_element)


if TYPE_CHECKING:
    from .pgreads import Reads

# The reads of every login and presence, built once: a statement made per
# call costs about a fifth of the call's CPU in SQLAlchemy's expression
# building and cache-key generation; these only take their parameters.
_ACCOUNT = (select(USERS.c.roster_version, CREDENTIALS)
            .select_from(USERS.outerjoin(CREDENTIALS, CREDENTIALS.c.user_id == USERS.c.id))
            .where(USERS.c.jid == bindparam("jid")))
_ROSTER = (select(ROSTER).where(ROSTER.c.user_id == select(USERS.c.id).where(
    USERS.c.jid == bindparam("jid")).scalar_subquery()).order_by(ROSTER.c.contact))
_ONE = ROSTER.alias("one")


def _counted(hidden: bool) -> Any:
    return (select(func.count()).where(ROSTER.c.user_id == USERS.c.id,
                                       ROSTER.c.hidden == hidden).scalar_subquery())


_UPSERT = postgresql.insert(KEYVAL).values(
    jid=bindparam("jid"), store=bindparam("store"), value=bindparam("value"))
_PG_KEYVAL_UPSERT = _UPSERT.on_conflict_do_update(
    index_elements=["jid", "store"], set_={"value": _UPSERT.excluded.value})

# One statement for a roster check (a presence probe, a subscription): the
# version, the counts of shown and hidden items and the one contact's row.
_CONTACT = (select(USERS.c.roster_version.label("version"), _counted(False).label("shown"),
                   _counted(True).label("hidden_items"), *_ONE.c)
            .select_from(USERS.outerjoin(_ONE, (_ONE.c.user_id == USERS.c.id)
                                         & (_ONE.c.contact == bindparam("contact"))))
            .where(USERS.c.jid == bindparam("jid")))
_KEYVAL = select(KEYVAL.c.value).where(KEYVAL.c.jid == bindparam("jid"),
                                       KEYVAL.c.store == bindparam("store"))

DEFAULT_TIMEOUT = 10.0      # s: connect, pool wait, one statement

# url scheme -> the asyncio driver SQLAlchemy uses for it
DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}
_IMMEDIATE = "vinespy_immediate"       # execution option: SQLite BEGIN IMMEDIATE
LIST_PAGE = 1000                        # JIDs per query of SqlStorage.owners


def _owner(jid: JID) -> str:
    """The bare JID data is filed under, as text; ValueError without a localpart."""
    if not jid.local:
        raise ValueError(f"{jid} is not a user JID")
    return str(jid.bare)


def _contact_row(user_id: int, c: Contact) -> dict[str, Any]:
    return {"user_id": user_id, "contact": str(c.jid), "name": c.name,
            "subscription": c.subscription, "ask": c.ask, "groups": json.dumps(c.groups),
            "approved": c.approved, "pending_in": c.pending_in, "hidden": c.hidden}


def _contact(row: Any) -> Contact:
    try:
        groups = json.loads(row.groups)
        return Contact(JID.parse(row.contact), row.name, row.subscription, row.ask,
                       [str(g) for g in groups], bool(row.approved), bool(row.pending_in),
                       bool(row.hidden))
    except (ValueError, TypeError, JIDError) as exc:
        raise StorageError(f"corrupt roster record {row.contact!r}: {exc}") from exc


def _shown(url: str) -> str:
    """``url`` fit to print: a SQLite path as it is, any password ``***``."""
    return url if url.startswith("sqlite:") else safe_url(url)


def _engine_url(url: str, password: str | None) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StorageError(f"bad sql url {_shown(url)}: {exc}") from None
    driver = DRIVERS.get(parsed.drivername)
    if driver is None:
        raise StorageError(f"sql url {_shown(url)}: expected sqlite:/// or postgresql://")
    parsed = parsed.set(drivername=driver)
    return parsed.set(password=password) if password is not None else parsed


def _on_sqlite_connect(dbapi_connection: Any, record: Any) -> None:
    # Transactions begin where _on_sqlite_begin says, not in the driver.
    dbapi_connection.isolation_level = None


def _on_sqlite_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get(_IMMEDIATE)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@register("sql")
class SqlStorage(Storage):
    """Users, rosters, vCards, private XML and keyval stores in SQL tables."""

    def __init__(self, url: str, password: str | None = None,
                 password_file: str | Path | None = None, pool_size: int = 5,
                 timeout: float = DEFAULT_TIMEOUT, create: bool = True) -> None:
        self.url = url
        self.shown = _shown(url)           # for messages: never the password
        self._password = password
        self._password_file = Path(password_file) if password_file is not None else None
        self._pool_size = pool_size
        self._timeout = timeout
        self._create = create                    # False: refuse an empty database
        self._url: URL | None = None             # with the password, once read
        _engine_url(url, None)              # a bad url fails now, at start
        self._engine: AsyncEngine | None = None
        self._reads: Reads | None = None         # PostgreSQL: the login reads' pool
        self._opening = asyncio.Lock()

    def _error(self, exc: BaseException) -> StorageError:
        """``exc`` as one line naming the database, without its password."""
        text = (str(getattr(exc, "orig", None) or exc) or type(exc).__name__).splitlines()[0]
        for secret in (self._password, make_url(self.url).password,
                       self._url.password if self._url is not None else None):
            if secret:
                text = text.replace(secret, "***")
        return StorageError(f"{self.shown}: {text}")

    # --- opening: engine and schema -------------------------------------------

    async def _ready(self) -> AsyncEngine:
        if self._engine is not None:
            return self._engine
        async with self._opening:
            if self._engine is None:
                try:
                    self._engine = await self._open()
                except (SQLAlchemyError, OSError, asyncio.TimeoutError, TypeError) as exc:
                    # TypeError: a URL query parameter the driver does not
                    # take (asyncpg wants ?ssl=require, not ?sslmode=)
                    raise self._error(exc) from exc
        return self._engine

    async def _open(self) -> AsyncEngine:
        """The engine, once the schema is there (created in an empty
        database) and of this vinespy's version."""
        engine = await self._new_engine()
        try:
            async with self._schema_tx(engine) as conn:
                await sqlschema.ensure(conn, self.shown, create=self._create)
        except BaseException:
            await engine.dispose()
            raise
        if engine.dialect.name == "postgresql":
            from .pgreads import ERRORS, Reads   # asyncpg: only for a PostgreSQL url
            # The engine's own connect arguments (TLS from ?ssl=, the
            # timeouts), so both pools reach the database the same way; one
            # read now, so a pool that cannot connect stops the start too.
            _, connect = engine.dialect.create_connect_args(engine.url)
            reads = Reads(connect, self._pool_size, self._timeout)
            try:
                await reads.fetch((select(1), {}))
            except ERRORS as exc:
                await reads.close()
                await engine.dispose()
                raise StorageError(str(self._error(exc))) from exc
            except BaseException:
                await reads.close()
                await engine.dispose()
                raise
            self._reads = reads
        return engine

    async def _new_engine(self) -> AsyncEngine:
        password = self._password
        if self._password_file is not None:
            text = await asyncio.to_thread(self._password_file.read_text, "utf-8")
            password = (text.splitlines() or [""])[0]
        url = self._url = _engine_url(self.url, password)
        sqlite_db = url.get_backend_name() == "sqlite"
        if sqlite_db and url.database:
            await asyncio.to_thread(os.makedirs, Path(url.database).parent, 0o700, True)
        # PostgreSQL: a connection is pinged as the pool hands it out, so the
        # first write after a database restart gets a new one instead of
        # failing on a dead one (the reads of pgreads.py, which found out
        # first, no longer invalidate this pool for it).
        # A database that stops answering fails a statement after `timeout`
        # s (-> temporary-auth-failure, internal-server-error) rather than
        # holding logins and stanzas forever.
        engine = create_async_engine(
            url, pool_size=self._pool_size, max_overflow=0, pool_pre_ping=not sqlite_db,
            pool_timeout=self._timeout,
            connect_args={"timeout": self._timeout} if sqlite_db else
            {"timeout": self._timeout, "command_timeout": self._timeout})
        if sqlite_db:
            event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
            event.listen(engine.sync_engine, "begin", _on_sqlite_begin)
        return engine

    @staticmethod
    @asynccontextmanager
    async def _schema_tx(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
        async with engine.connect() as conn:
            conn = await conn.execution_options(**{_IMMEDIATE: True})
            async with conn.begin():
                yield conn

    @asynccontextmanager
    async def _tx(self, write: bool = False) -> AsyncIterator[AsyncConnection]:
        """One transaction; every driver error becomes StorageError.

        A read on PostgreSQL runs its statements without BEGIN and COMMIT
        (autocommit): under READ COMMITTED each statement of a transaction
        sees its own snapshot anyway, so the two extra round trips bought no
        consistency (a read of one row: 1 round trip, not 3). SQLite reads
        keep their transaction, which does give them one snapshot."""
        engine = await self._ready()
        try:
            async with engine.connect() as conn:
                if write:
                    conn = await conn.execution_options(**{_IMMEDIATE: True})
                elif engine.dialect.name == "postgresql":
                    conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                    yield conn
                    return
                async with conn.begin():
                    yield conn
        except (SQLAlchemyError, OSError, asyncio.TimeoutError) as exc:
            raise self._error(exc) from exc

    def transaction(self, write: bool = False) -> AsyncContextManager[AsyncConnection]:
        """One transaction on this database, as this class's own methods use
        (``write``: BEGIN IMMEDIATE on SQLite); for the stores on it (pubsub,
        the archive): see :meth:`labelled`."""
        return self._tx(write)

    @asynccontextmanager
    async def labelled(self, what: str, write: bool = False) -> AsyncIterator[AsyncConnection]:
        """:meth:`transaction`, its StorageError saying ``WHAT: ...`` (one
        that reports corrupt data is passed on as it is)."""
        try:
            async with self.transaction(write) as conn:
                yield conn
        except StorageError as exc:
            if str(exc).startswith("corrupt "):
                raise
            raise StorageError(f"{what}: {exc}") from exc

    def _upsert(self, conn: AsyncConnection, table: Table, keys: tuple[str, ...],
                **values: Any) -> Any:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(table).values(**values)
        return stmt.on_conflict_do_update(
            index_elements=list(keys),
            set_={k: stmt.excluded[k] for k in values if k not in keys})

    async def open(self) -> None:
        """Connect, and create or check the schema, now: an unreachable
        database or another schema version stops the start with one line."""
        await self._ready()

    async def upgrade(self) -> tuple[int | None, int]:
        """``vinespy db upgrade``: create the schema in an empty database or
        bring an older one to :data:`~vinespy.storage.sqlschema.SCHEMA_VERSION`,
        in one transaction. Returns the version found (None: the database was
        empty) and the version now."""
        try:
            engine = await self._new_engine()
            try:
                async with self._schema_tx(engine) as conn:
                    return await sqlschema.upgrade(conn, self.shown)
            finally:
                await engine.dispose()
        except (SQLAlchemyError, OSError, asyncio.TimeoutError) as exc:
            raise self._error(exc) from exc

    async def close(self) -> None:
        reads, self._reads = self._reads, None
        if reads is not None:
            await reads.close()
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await engine.dispose()

    async def _read(self, *queries: tuple[Any, Mapping[str, Any]]) -> list[list[Any]]:
        """Each query's rows (read by attribute), together: on PostgreSQL
        through the asyncpg pool (:mod:`.pgreads`; also a single-statement
        write, atomic alone), else in one transaction."""
        await self._ready()
        if self._reads is not None:
            from .pgreads import ERRORS
            try:
                return await self._reads.fetch(*queries)
            except ERRORS + (OSError, asyncio.TimeoutError) as exc:
                raise self._error(exc) from exc
        async with self._tx() as conn:
            return [list((await conn.execute(stmt, params)).all()) for stmt, params in queries]

    # --- enumeration (vinespy migrate) ---------------------------------------------

    async def owners(self) -> AsyncIterator[JID]:
        """Pages of :data:`LIST_PAGE` JIDs in the database's order, each page
        one short transaction: nothing stays open while the caller works."""
        tables = (USERS, VCARDS, FRAGMENTS, KEYVAL)
        every = union(*(select(t.c.jid.label("jid")) for t in tables)).subquery()
        last: str | None = None
        while True:
            page = select(every.c.jid).order_by(every.c.jid).limit(LIST_PAGE)
            if last is not None:
                page = page.where(every.c.jid > last)
            async with self._tx() as conn:
                jids = list((await conn.execute(page)).scalars())
            for text in jids:
                try:
                    yield JID.parse(text)
                except JIDError as exc:
                    raise StorageError(f"{self.shown}: corrupt JID {text!r}: {exc}") from exc
            if len(jids) < LIST_PAGE:
                return
            last = jids[-1]

    async def fragments(self, jid: JID) -> list[tuple[str, str]]:
        async with self._tx() as conn:
            rows = await conn.execute(select(FRAGMENTS.c.namespace, FRAGMENTS.c.name).where(
                FRAGMENTS.c.jid == str(jid.bare)))
            return sorted((r.namespace, r.name) for r in rows)

    async def stores(self, jid: JID) -> list[str]:
        async with self._tx() as conn:
            rows = await conn.execute(select(KEYVAL.c.store).where(
                KEYVAL.c.jid == str(jid.bare)))
            return sorted(rows.scalars())

    # --- users and rosters -------------------------------------------------------

    async def find_user(self, jid: JID) -> User | None:
        key = {"jid": str(jid.bare)}
        account, roster = await self._read((_ACCOUNT, key), (_ROSTER, key))
        user = self._account(jid, account)
        if user is not None:
            user.roster = {c.jid: c for c in map(_contact, roster)}
        return user

    async def find_account(self, jid: JID) -> User | None:
        """The account and its credentials in one statement; no roster."""
        rows, = await self._read((_ACCOUNT, {"jid": str(jid.bare)}))
        return self._account(jid, rows)

    @staticmethod
    def _account(jid: JID, rows: list[Any]) -> User | None:
        if not rows:
            return None
        user = User(jid.bare, roster_version=rows[0].roster_version)
        user.credentials = {
            c.mechanism: ScramKeys(bytes(c.salt), bytes(c.stored_key), bytes(c.server_key),
                                   c.iterations) for c in rows if c.mechanism is not None}
        return user

    async def save_user(self, user: User) -> None:
        owner = _owner(user.jid)
        async with self._tx(write=True) as conn:
            uid = (await conn.execute(update(USERS).where(USERS.c.jid == owner)
                                      .values(roster_version=user.roster_version)
                                      .returning(USERS.c.id))).scalar()
            if uid is None:
                uid = (await conn.execute(USERS.insert().values(
                    jid=owner, roster_version=user.roster_version)
                    .returning(USERS.c.id))).scalar_one()
            else:
                await conn.execute(delete(CREDENTIALS).where(CREDENTIALS.c.user_id == uid))
                await conn.execute(delete(ROSTER).where(ROSTER.c.user_id == uid))
            await self._user_rows(conn, uid, user)

    async def add_user(self, user: User) -> bool:
        """One INSERT ... ON CONFLICT DO NOTHING decides: a concurrent
        creation of the same account (another node) stores nothing."""
        owner = _owner(user.jid)
        async with self._tx(write=True) as conn:
            dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
            uid = (await conn.execute(
                dialect.insert(USERS).values(jid=owner, roster_version=user.roster_version)
                .on_conflict_do_nothing(index_elements=["jid"])
                .returning(USERS.c.id))).scalar()
            if uid is None:
                return False
            await self._user_rows(conn, uid, user)
        return True

    async def set_credentials(self, jid: JID, credentials: Mapping[str, ScramKeys]) -> bool:
        """One transaction, the user's row locked first; the roster untouched."""
        async with self._tx(write=True) as conn:
            uid = (await conn.execute(update(USERS).where(USERS.c.jid == str(jid.bare))
                                      .values(roster_version=USERS.c.roster_version)
                                      .returning(USERS.c.id))).scalar()
            if uid is None:
                return False
            await conn.execute(delete(CREDENTIALS).where(CREDENTIALS.c.user_id == uid))
            await self._credential_rows(conn, uid, credentials)
        return True

    async def _user_rows(self, conn: AsyncConnection, uid: int, user: User) -> None:
        await self._credential_rows(conn, uid, user.credentials)
        if user.roster:
            await conn.execute(ROSTER.insert(),
                               [_contact_row(uid, c) for c in user.roster.values()])

    @staticmethod
    async def _credential_rows(conn: AsyncConnection, uid: int,
                               credentials: Mapping[str, ScramKeys]) -> None:
        if credentials:
            await conn.execute(CREDENTIALS.insert(), [
                {"user_id": uid, "mechanism": mech, "salt": k.salt,
                 "stored_key": k.stored_key, "server_key": k.server_key,
                 "iterations": k.iterations} for mech, k in credentials.items()])

    async def find_contact(self, jid: JID, contact: JID) -> ContactLookup | None:
        rows, = await self._read((_CONTACT, {"jid": str(jid.bare), "contact": str(contact)}))
        if not rows:
            return None
        row = rows[0]
        return ContactLookup(_contact(row) if row.subscription is not None else None,
                             row.version, row.shown, row.hidden_items)

    async def update_roster(self, jid: JID, changes: Mapping[JID, Contact | None],
                            version: int, *, expected: int | None = None) -> bool:
        async with self._tx(write=True) as conn:
            # Updating the user's row first locks it: one roster change at a
            # time; with ``expected``, only if no other changed it meanwhile.
            where = USERS.c.jid == str(jid.bare)
            if expected is not None:
                where = where & (USERS.c.roster_version == expected)
            uid = (await conn.execute(update(USERS).where(where)
                                      .values(roster_version=version)
                                      .returning(USERS.c.id))).scalar()
            if uid is None:
                if expected is None:
                    return False
                stored = (await conn.execute(select(USERS.c.roster_version).where(
                    USERS.c.jid == str(jid.bare)))).scalar()
                if stored is None:
                    return False
                raise RosterConflict(f"{jid.bare}: roster version {stored}, not {expected}")
            if changes:
                await conn.execute(delete(ROSTER).where(
                    ROSTER.c.user_id == uid, ROSTER.c.contact.in_([str(j) for j in changes])))
            rows = [_contact_row(uid, c) for c in changes.values() if c is not None]
            if rows:
                await conn.execute(ROSTER.insert(), rows)
        return True

    async def delete_user(self, jid: JID) -> bool:
        owner = str(jid.bare)
        async with self._tx(write=True) as conn:
            uid = (await conn.execute(delete(USERS).where(USERS.c.jid == owner)
                                      .returning(USERS.c.id))).scalar()
            if uid is not None:
                await conn.execute(delete(CREDENTIALS).where(CREDENTIALS.c.user_id == uid))
                await conn.execute(delete(ROSTER).where(ROSTER.c.user_id == uid))
            for table in (VCARDS, FRAGMENTS, KEYVAL):
                await conn.execute(delete(table).where(table.c.jid == owner))
        return uid is not None

    # --- vCards, private XML, keyval ------------------------------------------------

    async def _one(self, stmt: Any) -> bytes | None:
        async with self._tx() as conn:
            data = (await conn.execute(stmt)).scalar()
        return bytes(data) if data is not None else None

    async def find_vcard(self, jid: JID) -> etree._Element | None:
        data = await self._one(select(VCARDS.c.data).where(VCARDS.c.jid == str(jid.bare)))
        return xml_element(data, "vCard") if data is not None else None

    async def save_vcard(self, jid: JID, card: etree._Element) -> None:
        owner, data = _owner(jid), xml_bytes(card)
        async with self._tx(write=True) as conn:
            await conn.execute(self._upsert(conn, VCARDS, ("jid",), jid=owner, data=data))

    async def find_fragment(self, jid: JID, namespace: str, name: str) -> etree._Element | None:
        data = await self._one(select(FRAGMENTS.c.data).where(
            FRAGMENTS.c.jid == str(jid.bare), FRAGMENTS.c.namespace == namespace,
            FRAGMENTS.c.name == name))
        return xml_element(data, "private fragment") if data is not None else None

    async def save_fragment(self, jid: JID, fragment: etree._Element) -> None:
        qname = etree.QName(fragment)
        owner, data = _owner(jid), xml_bytes(fragment)
        async with self._tx(write=True) as conn:
            await conn.execute(self._upsert(
                conn, FRAGMENTS, ("jid", "namespace", "name"), jid=owner,
                namespace=qname.namespace or "", name=qname.localname, data=data))

    async def get(self, jid: JID, store: str) -> Any | None:
        check_store(store)
        rows, = await self._read((_KEYVAL, {"jid": str(jid.bare), "store": store}))
        data = rows[0].value if rows else None
        return value_from_json(bytes(data), f"keyval {store}") if data is not None else None

    async def put(self, jid: JID, store: str, value: Any | None) -> None:
        check_store(store)
        owner = _owner(jid)
        await self._ready()
        if self._reads is not None and value is not None:
            # One statement, atomic alone: no BEGIN and COMMIT round trips
            # (last activity is written at every logout).
            await self._read((_PG_KEYVAL_UPSERT,
                              {"jid": owner, "store": store, "value": json_value(value)}))
            return
        async with self._tx(write=True) as conn:
            await self._put(conn, owner, store, value)

    async def _put(self, conn: AsyncConnection, owner: str, store: str,
                   value: Any | None) -> None:
        if value is None:
            await conn.execute(delete(KEYVAL).where(KEYVAL.c.jid == owner,
                                                    KEYVAL.c.store == store))
        else:
            await conn.execute(self._upsert(conn, KEYVAL, ("jid", "store"), jid=owner,
                                            store=store, value=json_value(value)))

    async def modify(self, jid: JID, store: str,
                     change: Callable[[Any | None], Any | None]) -> Any | None:
        """One transaction: on PostgreSQL a transaction-scoped advisory lock
        on (jid, store) makes concurrent changes of one store (also one not
        stored yet, which no row lock could cover) take turns; SQLite's
        ``BEGIN IMMEDIATE`` already does."""
        check_store(store)
        owner = _owner(jid)
        async with self._tx(write=True) as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(select(func.pg_advisory_xact_lock(
                    func.hashtextextended(f"keyval {owner} {store}", 0))))
            data = (await conn.execute(select(KEYVAL.c.value).where(
                KEYVAL.c.jid == owner, KEYVAL.c.store == store))).scalar()
            new = change(value_from_json(bytes(data), f"keyval {store}")
                         if data is not None else None)
            await self._put(conn, owner, store, new)
        return new
