"""``sql``: the archives in one table of a host's SQL storage.

A host whose ``[host.storage]`` is ``backend = "sql"`` keeps its archives in
the same database (SQLite or PostgreSQL), through the engine of its
:class:`~vinespy.storage.sql.SqlStorage`, like the pubsub store.

Table (:data:`ARCHIVE_SCHEMA`; created with the main tables under the same
``schema_version``, added by version 3 of :mod:`vinespy.storage.sqlschema`)::

    archive     owner + id (primary key) -> stamp (µs since the epoch),
                peer, peer_bare, stanza
                indexes: (owner, peer_bare, id) for ``with``; (id) for retention

Ids sort by time (:func:`~vinespy.storage.archive.new_id`), so a query is
one ``WHERE owner = ? AND id > ? AND id < ? [AND peer_bare = ?] ORDER BY id
LIMIT max + 1`` on an index, in either direction; ``id`` is compared
bytewise (``COLLATE "C"`` on PostgreSQL, SQLite's default) as the other
stores compare it. ``count`` is given when it is cheap or asked for: the
page's own length when it is the whole result, one ``count(*)`` on the same
index for ``max = 0`` (XEP-0059 §2.6, a client asking only for the count);
else None (``<count/>`` is optional, XEP-0059 §2.5, and a ``count(*)`` per
page of a long archive costs a scan of the whole result).

``append_many`` (the MAM module's batches) is one transaction of one
multi-row INSERT (executemany): all of the batch or none.

``remove_before`` deletes at most ``limit`` rows exactly, oldest first,
across owners (``DELETE ... WHERE (owner, id) IN (SELECT ... ORDER BY id
LIMIT n)``); two nodes running it at once never count a row twice (the
second waits for the first's row locks, then finds those rows gone).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, AsyncContextManager, Collection, Sequence

from sqlalchemy import (BigInteger, Column, Index, LargeBinary, MetaData, PrimaryKeyConstraint,
                        Table, Text, delete, false, func, or_, select, tuple_)
from sqlalchemy.ext.asyncio import AsyncConnection

from ...jid import JID
from . import (ArchivedMessage, ArchivePage, ArchiveQuery, ArchiveStore, Plan, UnknownId,
               check_count, check_message, check_owner, from_micros, make_page, micros, plan,
               register)

if TYPE_CHECKING:
    from ..sql import SqlStorage

_ID = Text().with_variant(Text(collation="C"), "postgresql")
ARCHIVE_SCHEMA = MetaData()
ARCHIVE = Table(
    "archive", ARCHIVE_SCHEMA,
    Column("owner", Text, nullable=False), Column("id", _ID, nullable=False),
    Column("stamp", BigInteger, nullable=False), Column("peer", Text, nullable=False),
    Column("peer_bare", Text, nullable=False), Column("stanza", LargeBinary, nullable=False),
    PrimaryKeyConstraint("owner", "id"),
    Index("archive_by_peer", "owner", "peer_bare", "id"),
    Index("archive_by_id", "id"))
A = ARCHIVE.c


def _where(owner: str, p: Plan, lo: str | None, hi: str | None) -> list[Any]:
    cond = [A.owner == owner]
    if lo is not None:
        cond.append(A.id > lo)
    if hi is not None:
        cond.append(A.id < hi)
    if p.peer_bare is not None:
        cond.append(A.peer_bare == p.peer_bare)
    if p.peer is not None:
        cond.append(A.peer == p.peer)
    if p.ids is not None:
        cond.append(A.id.in_(sorted(p.ids)))
    return cond


def _message(row: Any) -> ArchivedMessage:
    return ArchivedMessage(row.id, from_micros(row.stamp), row.peer, row.peer_bare,
                           bytes(row.stanza))


def _row(owner: str, msg: ArchivedMessage) -> dict[str, Any]:
    return dict(owner=owner, id=msg.id, stamp=micros(msg.stamp), peer=msg.peer,
                peer_bare=msg.peer_bare, stanza=msg.stanza)


@register("sql")
class SqlArchive(ArchiveStore):
    """Archives in the database of ``storage`` (see the module docstring).
    ``close()`` closes ``storage`` only if ``owned``."""

    def __init__(self, storage: SqlStorage, owned: bool = False) -> None:
        if getattr(storage, "name", None) != "sql":
            raise TypeError(f"the sql archive store needs a SqlStorage, not "
                            f"{type(storage).__name__}")
        self.storage = storage
        self._owned = owned

    async def open(self) -> None:
        await self.storage.open()

    async def close(self) -> None:
        if self._owned:
            await self.storage.close()

    def _tx(self, what: str, write: bool = False) -> AsyncContextManager[AsyncConnection]:
        """One transaction of the storage's; its StorageError says ``archive WHAT``."""
        return self.storage.labelled(f"archive {what}", write)

    async def append(self, owner: JID, msg: ArchivedMessage) -> None:
        key = check_owner(owner)
        check_message(msg)
        async with self._tx(f"append to {key}", write=True) as conn:
            await conn.execute(ARCHIVE.insert().values(**_row(key, msg)))

    async def append_many(self, entries: Sequence[tuple[JID, ArchivedMessage]]) -> None:
        """One transaction, one multi-row INSERT (executemany): all or none."""
        rows = [_row(check_owner(owner), check_message(msg)) for owner, msg in entries]
        if not rows:
            return
        async with self._tx(f"append of {len(rows)} messages", write=True) as conn:
            await conn.execute(ARCHIVE.insert(), rows)

    async def query(self, owner: JID, q: ArchiveQuery) -> ArchivePage:
        p = plan(q)
        key = check_owner(owner)
        rsm = {id for id in (q.after, q.before or None) if id is not None}
        order = A.id.asc() if p.forward else A.id.desc()
        stmt = select(ARCHIVE).where(*_where(key, p, p.lo, p.hi)).order_by(order).limit(p.limit)
        async with self._tx(f"query of {key}") as conn:
            if rsm:
                found = set((await conn.execute(select(A.id).where(
                    A.owner == key, A.id.in_(sorted(rsm))))).scalars())
                for id in sorted(rsm - found):
                    raise UnknownId(id)
            page = make_page((_message(r) for r in await conn.execute(stmt)), p, None)
            count: int | None = None
            if page.complete and not p.rsm:
                count = len(page.items)
            elif q.max == 0:
                count = (await conn.execute(select(func.count()).select_from(ARCHIVE).where(
                    *_where(key, p, p.filter_lo, p.filter_hi)))).scalar_one()
        return ArchivePage(page.items, page.complete, count, page.first, page.last)

    async def remove_before(self, cutoff: datetime, limit: int,
                            domains: Collection[str] | None = None) -> int:
        bound = f"{micros(cutoff):016x}"
        where = [A.id < bound]
        if domains is not None:
            where.append(or_(false(), *(A.owner.endswith(f"@{d}", autoescape=True)
                                        for d in domains)))
        oldest = (select(A.owner, A.id).where(*where).order_by(A.id)
                  .limit(check_count(limit, "limit")))
        if limit == 0:
            return 0
        async with self._tx("retention", write=True) as conn:
            gone = await conn.execute(delete(ARCHIVE).where(
                tuple_(A.owner, A.id).in_(oldest)))
            return int(gone.rowcount)

    async def trim(self, owner: JID, keep: int) -> int:
        key = check_owner(owner)
        newest_gone = (select(A.id).where(A.owner == key).order_by(A.id.desc())
                       .offset(check_count(keep, "keep")).limit(1).scalar_subquery())
        async with self._tx(f"trim of {key}", write=True) as conn:
            gone = await conn.execute(delete(ARCHIVE).where(A.owner == key,
                                                            A.id <= newest_gone))
            return int(gone.rowcount)

    async def delete_owner(self, owner: JID) -> None:
        key = check_owner(owner)
        async with self._tx(f"delete of {key}", write=True) as conn:
            await conn.execute(delete(ARCHIVE).where(A.owner == key))
