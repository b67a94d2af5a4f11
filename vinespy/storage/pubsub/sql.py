"""``sql``: the pubsub store in the tables of a host's SQL storage.

A host whose ``[host.storage]`` is ``backend = "sql"`` keeps its pubsub
services in the same database (SQLite or PostgreSQL), through the same
engine and pool as its :class:`~vinespy.storage.sql.SqlStorage`: this store
is built on that object and never opens a connection of its own.

Tables (:data:`PUBSUB_SCHEMA`; created with the main tables, under the same
``schema_version``, by :mod:`vinespy.storage.sql`)::

    pubsub_nodes          id, service + name (unique), owner, created (ms),
                          config (JSON str -> str), seq (publications so far)
    pubsub_affiliations   node_id + jid -> affiliation
    pubsub_subscriptions  node_id + jid -> subid (indexed by jid: subscriptions_of)
    pubsub_items          node_id + item_id -> seq, publisher, published (ms), payload

An item's ``seq`` is the node's ``seq`` at its last publication: the
highest is the newest, as in the Redis store's ``order`` ZSET, so items are
listed and trimmed with ORDER BY seq and LIMIT, never by loading the node.
A node's rows are found by its ``id``; deleting a node deletes its rows in
the same transaction, so a node created again under the name starts empty.

Each call is one transaction. Every change of a node first locks the node's
row, so writes of one node from several cluster nodes sharing one
PostgreSQL are serialized where they must be: ``publish`` starts with
``UPDATE ... SET seq = seq + 1`` (the row lock is held until commit, so two
publishers trim one after the other and ``max_items`` is exact), ``purge``
and ``configure`` take the same lock, ``delete`` deletes the row, and
subscribe/affiliate take ``FOR KEY SHARE`` (they may run side by side, but
never beside a delete, so nothing is written to a node being deleted), and
``restore`` (``vinespy migrate``) takes ``FOR UPDATE`` as a delete does
before it replaces the node's rows. On SQLite every writing transaction is
``BEGIN IMMEDIATE``: one at a time. Times are PostgreSQL's
``clock_timestamp()`` (one clock for every node of a cluster, like Redis
``TIME`` for the Redis store), this process's clock on SQLite (one
machine); ``restore`` writes the times it is given.

Failures follow :mod:`vinespy.storage.pubsub`: a database error raises
StorageError ``pubsub WHAT: DATABASE: REASON`` (the password never shown),
a value this module did not write raises StorageError ``corrupt ...``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, AsyncContextManager, Collection, Mapping, Sequence

from sqlalchemy import (BigInteger, Column, ColumnElement, Index, Integer, LargeBinary,
                        MetaData, PrimaryKeyConstraint, Select, Table, Text, UniqueConstraint,
                        cast, delete, func, literal, select, update)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from .. import StorageError
from . import AFFILIATIONS, Item, LastItem, PubSubNode, PubSubStore, register
from .state import (check_affiliation, check_config, check_items, check_publish, check_str,
                    now_ms, restored)

if TYPE_CHECKING:
    from ..sql import SqlStorage

PUBSUB_SCHEMA = MetaData()
NODES = Table(
    "pubsub_nodes", PUBSUB_SCHEMA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("service", Text, nullable=False), Column("name", Text, nullable=False),
    Column("owner", Text, nullable=False), Column("created", BigInteger, nullable=False),
    Column("config", Text, nullable=False), Column("seq", BigInteger, nullable=False),
    UniqueConstraint("service", "name"))
AFFILIATED = Table(
    "pubsub_affiliations", PUBSUB_SCHEMA,
    Column("node_id", Integer, nullable=False), Column("jid", Text, nullable=False),
    Column("affiliation", Text, nullable=False), PrimaryKeyConstraint("node_id", "jid"))
SUBSCRIBED = Table(
    "pubsub_subscriptions", PUBSUB_SCHEMA,
    Column("node_id", Integer, nullable=False), Column("jid", Text, nullable=False),
    Column("subid", Text, nullable=False), PrimaryKeyConstraint("node_id", "jid"),
    Index("pubsub_subscriptions_by_jid", "jid"))
ITEMS = Table(
    "pubsub_items", PUBSUB_SCHEMA,
    Column("node_id", Integer, nullable=False), Column("item_id", Text, nullable=False),
    Column("seq", BigInteger, nullable=False), Column("publisher", Text, nullable=False),
    Column("published", BigInteger, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    PrimaryKeyConstraint("node_id", "item_id"), Index("pubsub_items_by_seq", "node_id", "seq"))
CHILDREN = (AFFILIATED, SUBSCRIBED, ITEMS)       # a node's rows, by node_id

_CHUNK = 500            # ids per IN (...): far below every driver's limit of parameters


def _where(service: str, node: str) -> ColumnElement[bool]:
    return ((NODES.c.service == check_str(service, "service"))
            & (NODES.c.name == check_str(node, "node")))


def _node_id(service: str, node: str) -> Any:
    """The node's id as a scalar subquery (NULL if there is no such node)."""
    return select(NODES.c.id).where(_where(service, node)).scalar_subquery()


def _now(conn: AsyncConnection) -> ColumnElement[Any]:
    """Now in ms: the database's clock on PostgreSQL, else this process's."""
    if conn.dialect.name == "postgresql":
        return cast(func.floor(func.extract("epoch", func.clock_timestamp()) * 1000),
                    BigInteger)
    return literal(now_ms(), BigInteger)


def _insert(conn: AsyncConnection, table: Table) -> Any:
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)


def _config(raw: str, what: str) -> dict[str, str]:
    try:
        config = json.loads(raw)
        if not isinstance(config, dict):
            raise ValueError(f"{raw[:40]!r} is not a JSON object")
        return check_config(config)
    except (ValueError, TypeError) as exc:
        raise StorageError(f"corrupt config of {what}: {exc}") from exc


@register("sql")
class SqlPubSub(PubSubStore):
    """Pubsub services in the database of ``storage`` (see the module
    docstring), through its engine and transactions. ``close()`` closes
    ``storage`` only if ``owned`` (the store was built for a command)."""

    def __init__(self, storage: SqlStorage, owned: bool = False) -> None:
        if getattr(storage, "name", None) != "sql":
            raise TypeError(f"the sql pubsub store needs a SqlStorage, not "
                            f"{type(storage).__name__}")
        self.storage = storage
        self._owned = owned

    async def close(self) -> None:
        if self._owned:
            await self.storage.close()

    def _tx(self, what: str, write: bool = False) -> AsyncContextManager[AsyncConnection]:
        """One transaction of the storage's; its StorageError says ``pubsub WHAT``."""
        return self.storage.labelled(f"pubsub {what}", write)

    async def _lock(self, conn: AsyncConnection, service: str, node: str,
                    shared: bool) -> int | None:
        """The node's id, its row locked until the end of the transaction:
        FOR KEY SHARE (no delete meanwhile) or FOR NO KEY UPDATE (no other
        change of the node either); SQLite's BEGIN IMMEDIATE locks it all."""
        stmt = select(NODES.c.id).where(_where(service, node)).with_for_update(
            read=shared, key_share=True)
        return (await conn.execute(stmt)).scalar()

    # -- nodes ---------------------------------------------------------------

    async def create(self, service: str, node: str, owner: str,
                     config: Mapping[str, str]) -> bool:
        conf = json.dumps(check_config(config), ensure_ascii=False)
        _where(service, node)                   # checks the names
        check_str(owner, "owner")
        async with self._tx(f"create {node!r} of {service!r}", write=True) as conn:
            # ON CONFLICT DO NOTHING: of concurrent creates one wins, the
            # others wait for it and find the name taken.
            stmt = _insert(conn, NODES).values(
                service=service, name=node, owner=owner, created=_now(conn), config=conf,
                seq=0).on_conflict_do_nothing(index_elements=["service", "name"])
            nid = (await conn.execute(stmt.returning(NODES.c.id))).scalar()
            if nid is None:
                return False
            await conn.execute(AFFILIATED.insert().values(node_id=nid, jid=owner,
                                                          affiliation="owner"))
        return True

    async def delete(self, service: str, node: str) -> bool:
        where = _where(service, node)
        async with self._tx(f"delete {node!r} of {service!r}", write=True) as conn:
            nid = (await conn.execute(delete(NODES).where(where).returning(NODES.c.id))).scalar()
            if nid is None:
                return False
            for table in CHILDREN:
                await conn.execute(delete(table).where(table.c.node_id == nid))
        return True

    async def nodes(self, service: str) -> list[str]:
        stmt = select(NODES.c.name).where(NODES.c.service == check_str(service, "service"))
        async with self._tx(f"nodes of {service!r}") as conn:
            names = (await conn.execute(stmt)).scalars().all()
        return sorted(names)        # by code point, whatever the database's collation

    async def get(self, service: str, node: str) -> PubSubNode | None:
        stmt = select(NODES.c.owner, NODES.c.created, NODES.c.config).where(
            _where(service, node))
        async with self._tx(f"get {node!r} of {service!r}") as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            return None
        config = _config(row.config, f"pubsub node {node!r} of {service!r}")
        return PubSubNode(service=service, name=node, owner=row.owner, config=config,
                          created=row.created)

    async def configure(self, service: str, node: str, config: Mapping[str, str]) -> bool:
        conf = json.dumps(check_config(config), ensure_ascii=False)
        stmt = update(NODES).where(_where(service, node)).values(config=conf)
        async with self._tx(f"configure {node!r} of {service!r}", write=True) as conn:
            done = (await conn.execute(stmt.returning(NODES.c.id))).scalar()
        return done is not None

    # -- affiliations and subscriptions ------------------------------------

    async def _of_node(self, table: Table, value: Column[Any], service: str, node: str,
                       what: str) -> dict[str, str]:
        stmt = (select(table.c.jid, value).join(NODES, NODES.c.id == table.c.node_id)
                .where(_where(service, node)))
        async with self._tx(f"{what} of {node!r} of {service!r}") as conn:
            return {jid: v for jid, v in await conn.execute(stmt)}

    async def affiliations(self, service: str, node: str) -> dict[str, str]:
        found = await self._of_node(AFFILIATED, AFFILIATED.c.affiliation, service, node,
                                    "affiliations")
        for jid, affiliation in found.items():
            if affiliation not in AFFILIATIONS:
                raise StorageError(f"corrupt affiliations of pubsub node {node!r} of "
                                   f"{service!r}: {jid!r} has {affiliation!r}")
        return found

    async def _set(self, table: Table, service: str, node: str, jid: str,
                   values: Mapping[str, str] | None, what: str) -> bool:
        """Upsert (or delete, ``values`` None) the row of ``jid`` in ``table``."""
        _where(service, node)
        check_str(jid, "jid")
        async with self._tx(f"{what} {node!r} of {service!r}", write=True) as conn:
            nid = await self._lock(conn, service, node, shared=True)
            if nid is None:
                return False
            if values is None:
                await conn.execute(delete(table).where(table.c.node_id == nid,
                                                       table.c.jid == jid))
            else:
                stmt = _insert(conn, table).values(node_id=nid, jid=jid, **values)
                await conn.execute(stmt.on_conflict_do_update(
                    index_elements=["node_id", "jid"],
                    set_={k: stmt.excluded[k] for k in values}))
        return True

    async def set_affiliation(self, service: str, node: str, jid: str,
                              affiliation: str | None) -> bool:
        affiliation = check_affiliation(affiliation)
        return await self._set(AFFILIATED, service, node, jid,
                               None if affiliation is None else {"affiliation": affiliation},
                               "set affiliation on")

    async def subscriptions(self, service: str, node: str) -> dict[str, str]:
        return await self._of_node(SUBSCRIBED, SUBSCRIBED.c.subid, service, node,
                                   "subscriptions")

    async def subscribe(self, service: str, node: str, jid: str, subid: str) -> bool:
        check_str(subid, "subid")
        return await self._set(SUBSCRIBED, service, node, jid, {"subid": subid},
                               "subscribe to")

    async def unsubscribe(self, service: str, node: str, jid: str) -> bool:
        stmt = delete(SUBSCRIBED).where(SUBSCRIBED.c.node_id == _node_id(service, node),
                                        SUBSCRIBED.c.jid == check_str(jid, "jid"))
        async with self._tx(f"unsubscribe from {node!r} of {service!r}", write=True) as conn:
            gone = (await conn.execute(stmt.returning(SUBSCRIBED.c.jid))).first()
        return gone is not None

    async def subscriptions_of(self, service: str, jid: str) -> dict[str, str]:
        stmt = (select(NODES.c.name, SUBSCRIBED.c.subid)
                .join(NODES, NODES.c.id == SUBSCRIBED.c.node_id)
                .where(NODES.c.service == check_str(service, "service"),
                       SUBSCRIBED.c.jid == check_str(jid, "jid")))
        async with self._tx(f"subscriptions of {jid!r} in {service!r}") as conn:
            return {name: subid for name, subid in await conn.execute(stmt)}

    # -- items ---------------------------------------------------------------

    async def publish(self, service: str, node: str, item_id: str, payload: bytes,
                      publisher: str, max_items: int | None) -> list[str] | None:
        check_publish(item_id, payload, publisher, max_items)
        bump = (update(NODES).where(_where(service, node)).values(seq=NODES.c.seq + 1)
                .returning(NODES.c.id, NODES.c.seq))
        async with self._tx(f"publish to {node!r} of {service!r}", write=True) as conn:
            # First: the node's row, locked until commit (one publisher at a time).
            row = (await conn.execute(bump)).first()
            if row is None:
                return None
            nid, seq = row
            stmt = _insert(conn, ITEMS).values(node_id=nid, item_id=item_id, seq=seq,
                                               publisher=publisher, published=_now(conn),
                                               payload=payload)
            await conn.execute(stmt.on_conflict_do_update(
                index_elements=["node_id", "item_id"],
                set_={k: stmt.excluded[k]
                      for k in ("seq", "publisher", "published", "payload")}))
            if max_items is None:
                return []
            return await self._trim(conn, nid, max_items)

    async def _trim(self, conn: AsyncConnection, nid: int, max_items: int) -> list[str]:
        """Delete all but the newest ``max_items``; their ids, oldest first."""
        oldest_kept = (await conn.execute(
            select(ITEMS.c.seq).where(ITEMS.c.node_id == nid).order_by(ITEMS.c.seq.desc())
            .offset(max_items - 1).limit(1))).scalar()
        if oldest_kept is None:
            return []
        gone = await conn.execute(delete(ITEMS).where(ITEMS.c.node_id == nid,
                                                      ITEMS.c.seq < oldest_kept)
                                  .returning(ITEMS.c.item_id, ITEMS.c.seq))
        return [i for i, _ in sorted(gone, key=lambda r: r[1])]

    async def retract(self, service: str, node: str, item_id: str) -> bool:
        # One statement: a publisher evicting the same item waits for its
        # row, and only one of them reports it removed.
        stmt = delete(ITEMS).where(ITEMS.c.node_id == _node_id(service, node),
                                   ITEMS.c.item_id == check_str(item_id, "item id"))
        async with self._tx(f"retract from {node!r} of {service!r}", write=True) as conn:
            gone = (await conn.execute(stmt.returning(ITEMS.c.item_id))).first()
        return gone is not None

    async def items(self, service: str, node: str, max_items: int | None = None,
                    ids: list[str] | None = None) -> list[Item]:
        wanted = check_items(max_items, ids)
        base = (select(ITEMS.c.item_id, ITEMS.c.payload, ITEMS.c.publisher,
                       ITEMS.c.published)
                .join(NODES, NODES.c.id == ITEMS.c.node_id).where(_where(service, node)))
        if max_items == 0 or wanted == []:
            return []
        async with self._tx(f"items of {node!r} of {service!r}") as conn:
            if wanted is None:
                rows = list(await conn.execute(
                    base.order_by(ITEMS.c.seq.desc()).limit(max_items)))
            else:
                rows = await self._by_ids(conn, base, wanted)
        found = [Item(id=r.item_id, payload=bytes(r.payload), publisher=r.publisher,
                      published=r.published) for r in rows]
        return found if max_items is None else found[:max_items]

    async def last_items(self, services: Sequence[str], nodes: Collection[str],
                         jid: str) -> list[LastItem]:
        """One query per 500 services: the nodes, outer-joined with ``jid``'s
        affiliation row and the item of the highest seq."""
        services = [check_str(s, "service") for s in dict.fromkeys(services)]
        wanted = sorted(check_str(n, "node") for n in set(nodes))
        check_str(jid, "jid")
        if not services or not wanted:
            return []
        newest = (select(func.max(ITEMS.c.seq)).where(ITEMS.c.node_id == NODES.c.id)
                  .correlate(NODES).scalar_subquery())
        joined = NODES.outerjoin(
            AFFILIATED, (AFFILIATED.c.node_id == NODES.c.id) & (AFFILIATED.c.jid == jid)
        ).outerjoin(ITEMS, (ITEMS.c.node_id == NODES.c.id) & (ITEMS.c.seq == newest))
        base = select(NODES.c.service, NODES.c.name, NODES.c.config, AFFILIATED.c.affiliation,
                      ITEMS.c.item_id, ITEMS.c.payload, ITEMS.c.publisher,
                      ITEMS.c.published).select_from(joined)
        rows: list[Any] = []
        async with self._tx(f"last items of {len(services)} services") as conn:
            for i in range(0, len(services), _CHUNK):
                rows += await conn.execute(base.where(
                    NODES.c.service.in_(services[i:i + _CHUNK]), NODES.c.name.in_(wanted)))
        order = {s: i for i, s in enumerate(services)}
        out = []
        for r in sorted(rows, key=lambda r: (order[r.service], r.name)):
            where = f"pubsub node {r.name!r} of {r.service!r}"
            aff = r.affiliation or "none"
            if aff != "none" and aff not in AFFILIATIONS:
                raise StorageError(f"corrupt affiliations of {where}: {jid!r} has {aff!r}")
            item = None if r.item_id is None else Item(
                id=r.item_id, payload=bytes(r.payload), publisher=r.publisher,
                published=r.published)
            out.append(LastItem(r.service, r.name, _config(r.config, where), aff, item))
        return out

    async def _by_ids(self, conn: AsyncConnection, base: Select[Any],
                      wanted: list[str]) -> list[Any]:
        by_id: dict[str, Any] = {}
        for i in range(0, len(wanted), _CHUNK):
            chunk = wanted[i:i + _CHUNK]
            by_id.update((r.item_id, r) for r in await conn.execute(
                base.where(ITEMS.c.item_id.in_(chunk))))
        return [by_id[i] for i in wanted if i in by_id]

    async def purge(self, service: str, node: str) -> int | None:
        _where(service, node)
        async with self._tx(f"purge {node!r} of {service!r}", write=True) as conn:
            nid = await self._lock(conn, service, node, shared=False)
            if nid is None:
                return None
            gone = await conn.execute(delete(ITEMS).where(ITEMS.c.node_id == nid))
            return gone.rowcount

    # -- copying ---------------------------------------------------------

    async def restore(self, node: PubSubNode, affiliations: Mapping[str, str],
                      subscriptions: Mapping[str, str], items: list[Item]) -> None:
        """The node's rows written whole in one transaction, times kept:
        the node's row inserted or updated in place (its id stays), then
        locked FOR UPDATE (a subscribe or affiliate holding FOR KEY SHARE
        finishes first, so nothing of it survives the replacement), its
        other rows deleted and written again, the items' ``seq`` 1..n oldest
        first and the node's ``seq`` n."""
        state = restored(node, affiliations, subscriptions, items)   # checks and copies
        service, name = node.service, node.name
        where = _where(service, name)                                  # checks the names
        conf = json.dumps(state.config, ensure_ascii=False)
        kept = list(state.items.values())
        async with self._tx(f"restore {name!r} of {service!r}", write=True) as conn:
            upsert = _insert(conn, NODES).values(
                service=service, name=name, owner=state.owner, created=state.created,
                config=conf, seq=len(kept))
            await conn.execute(upsert.on_conflict_do_update(
                index_elements=["service", "name"],
                set_={k: upsert.excluded[k] for k in ("owner", "created", "config", "seq")}))
            # ON CONFLICT DO UPDATE locks FOR NO KEY UPDATE only: take the
            # lock a delete takes, which waits for FOR KEY SHARE holders.
            nid = (await conn.execute(select(NODES.c.id).where(where).with_for_update())
                   ).scalar_one()
            for table in CHILDREN:
                await conn.execute(delete(table).where(table.c.node_id == nid))
            rows: list[tuple[Table, list[dict[str, Any]]]] = [
                (AFFILIATED, [{"node_id": nid, "jid": j, "affiliation": a}
                              for j, a in state.affiliations.items()]),
                (SUBSCRIBED, [{"node_id": nid, "jid": j, "subid": s}
                              for j, s in state.subscriptions.items()]),
                (ITEMS, [{"node_id": nid, "item_id": i.id, "seq": seq, "publisher": i.publisher,
                          "published": i.published, "payload": i.payload}
                         for seq, i in enumerate(kept, 1)])]
            for table, values in rows:
                for start in range(0, len(values), _CHUNK):
                    await conn.execute(table.insert(), values[start:start + _CHUNK])
