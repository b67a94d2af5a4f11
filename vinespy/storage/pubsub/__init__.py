"""Publish-subscribe (XEP-0060) storage: the interface and its registry.

:class:`PubSubStore` is what the XEP-0060 module reads and writes: the nodes
of pubsub services with their owner, config, affiliations, subscriptions and
items. The module decides what is allowed; a store only keeps the state.
Four implementations keep the same contract (tests/storage/
test_pubsub_contract.py runs one suite against all of them), each
registered by name with :func:`register` like the user storage backends:

* ``memory``, :class:`~vinespy.storage.pubsub.memory.MemoryPubSub`: dicts in
  the process, lost at exit (tests).
* ``fs``, :class:`~vinespy.storage.pubsub.fs.FsPubSub`: one JSON file per
  node under a directory, for a standalone server.
* ``redis``, :class:`~vinespy.storage.pubsub.redis.RedisPubSub`: one Redis
  shared by every node of a cluster.
* ``sql``, :class:`~vinespy.storage.pubsub.sql.SqlPubSub`: tables in the
  database of a host's ``backend = "sql"`` storage (SQLite or PostgreSQL),
  standalone or shared by a cluster.

:func:`open_pubsub` builds one by name, importing only its module: only
``"redis"`` imports redis-py. :func:`store_for` picks the one of a host.

Failures follow :mod:`vinespy.storage`: a miss answers False, None or empty
(each method says which), I/O failures and corrupt data raise
:class:`~vinespy.storage.StorageError` (the cause chained, the message
starting ``pubsub `` or ``corrupt ``), bad arguments raise ValueError or
TypeError before anything is changed. A write the Redis store made but its
replicas did not confirm in time raises
:class:`~vinespy.storage.NotReplicated`, a StorageError: stored, yet not to
be answered as done (the XEP-0060 module answers ``<resource-constraint/>``).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Collection, Mapping, Sequence

from .. import Registry, Storage, open_storage

if TYPE_CHECKING:
    from ...config import Config, HostConfig

# Affiliations a JID can be given (XEP-0060 §4.1); "none" is no entry.
AFFILIATIONS = frozenset({"owner", "publisher", "publish-only", "member", "outcast"})


@dataclass
class PubSubNode:
    """A node of a pubsub service (XEP-0060 §4.1)."""

    service: str
    name: str
    owner: str                    # bare JID of the creator
    config: dict[str, str]        # option -> value, as the module keeps them
    created: int                  # ms since the epoch (Redis TIME for RedisPubSub)


@dataclass
class Item:
    """A published item (XEP-0060 §4.1)."""

    id: str
    payload: bytes                # the item's payload, serialized XML
    publisher: str                # JID
    published: int                # ms since the epoch, of its last publication
    #                               (Redis TIME for RedisPubSub)


@dataclass
class LastItem:
    """What :meth:`PubSubStore.last_items` reads of one node."""

    service: str
    node: str
    config: dict[str, str]
    affiliation: str              # of the JID asked about; "none" if it has none
    item: Item | None             # the newest item; None if the node has none


class PubSubStore(abc.ABC):
    """The pubsub services' nodes, affiliations, subscriptions and items.

    Names (service, node, JID, item id, subid) are any ``str``, the empty
    one included, compared exactly (no JID normalization: the module passes
    bare JIDs where a method says so). Config values are ``str -> str``.
    Every method that changes a node first checks that the node exists, so
    writing to a missing node stores nothing. Each call is atomic: another
    call never sees half of it (concurrent publishes to one node keep the
    item limit exactly).
    """

    name: ClassVar[str]           # as registered

    # -- nodes ---------------------------------------------------------------

    @abc.abstractmethod
    async def create(self, service: str, node: str, owner: str,
                     config: Mapping[str, str]) -> bool:
        """Create ``node`` with ``config``; ``owner`` (a bare JID) gets the
        affiliation "owner" and its creation time is now. False if the node
        exists (nothing changes). TypeError unless ``config`` maps str to str."""

    @abc.abstractmethod
    async def delete(self, service: str, node: str) -> bool:
        """Remove ``node`` and all of it (config, affiliations, subscriptions,
        items); a node created again under the name starts empty. False if
        there was no such node. Whoever must be told reads
        :meth:`subscriptions` first."""

    @abc.abstractmethod
    async def nodes(self, service: str) -> list[str]:
        """The names of the service's nodes, sorted; empty for an unknown service."""

    @abc.abstractmethod
    async def get(self, service: str, node: str) -> PubSubNode | None:
        """The node with its owner, config and creation time, or None."""

    @abc.abstractmethod
    async def configure(self, service: str, node: str, config: Mapping[str, str]) -> bool:
        """Replace the node's config with ``config``; False if no such node.
        TypeError unless ``config`` maps str to str."""

    # -- affiliations --------------------------------------------------------

    @abc.abstractmethod
    async def affiliations(self, service: str, node: str) -> dict[str, str]:
        """Bare JID -> affiliation (owner, publisher, publish-only, member,
        outcast); empty for a node that does not exist."""

    @abc.abstractmethod
    async def set_affiliation(self, service: str, node: str, jid: str,
                              affiliation: str | None) -> bool:
        """Give the bare ``jid`` ``affiliation``; None (or "none") removes its
        entry (True even if it had none). False if there is no such node.
        ValueError for an unknown affiliation."""

    # -- subscriptions -------------------------------------------------------

    @abc.abstractmethod
    async def subscriptions(self, service: str, node: str) -> dict[str, str]:
        """JID (bare or full) -> subid of the node's subscriptions; empty for
        a node that does not exist."""

    @abc.abstractmethod
    async def subscribe(self, service: str, node: str, jid: str, subid: str) -> bool:
        """Subscribe ``jid`` with ``subid`` (replacing its subid if it was
        subscribed); False if there is no such node."""

    @abc.abstractmethod
    async def unsubscribe(self, service: str, node: str, jid: str) -> bool:
        """Remove ``jid``'s subscription; False if it had none (or no node)."""

    @abc.abstractmethod
    async def subscriptions_of(self, service: str, jid: str) -> dict[str, str]:
        """Node -> subid of every subscription of ``jid`` (exactly this bare
        or full JID) in the service; empty if it has none."""

    # -- items ---------------------------------------------------------------

    @abc.abstractmethod
    async def publish(self, service: str, node: str, item_id: str, payload: bytes,
                      publisher: str, max_items: int | None) -> list[str] | None:
        """Store ``payload`` as item ``item_id`` published now by
        ``publisher`` (replacing one of that id, which becomes the newest),
        then keep only the newest ``max_items`` (None: no limit). The ids
        evicted, oldest first; None if there is no such node (nothing is
        stored). TypeError unless ``payload`` is bytes; ValueError unless
        ``max_items`` is None or an int >= 1."""

    @abc.abstractmethod
    async def retract(self, service: str, node: str, item_id: str) -> bool:
        """Remove the item; False if there was none (or no node)."""

    @abc.abstractmethod
    async def items(self, service: str, node: str, max_items: int | None = None,
                    ids: list[str] | None = None) -> list[Item]:
        """The node's items, newest first (at most ``max_items``); with
        ``ids``, those of them that exist, in the order asked (each once,
        then at most ``max_items``). Empty for a node that does not exist.
        ValueError unless ``max_items`` is None or an int >= 0."""

    @abc.abstractmethod
    async def purge(self, service: str, node: str) -> int | None:
        """Remove every item of the node (the node stays); how many there
        were, or None if there is no such node."""

    # -- many services at once -------------------------------------------------

    async def last_items(self, services: Sequence[str], nodes: Collection[str],
                         jid: str) -> list[LastItem]:
        """For each node named in ``nodes`` that exists in one of
        ``services``: its config, the affiliation of ``jid`` (a bare JID)
        and its newest item, ordered by ``services`` then node name. What
        XEP-0163's last-item pass reads for a resource coming online, for a
        whole roster at once: the Redis store answers in two round trips,
        the SQL store in one query per 500 services, fs in one thread
        reading only the files of the nodes named. Not atomic across nodes.

        This default, through the other methods, is for other stores."""
        out = []
        for service in dict.fromkeys(services):
            for name in sorted(set(nodes) & set(await self.nodes(service))):
                node = await self.get(service, name)
                if node is None:
                    continue
                aff = (await self.affiliations(service, name)).get(jid, "none")
                newest = await self.items(service, name, max_items=1)
                out.append(LastItem(service, name, node.config, aff,
                                    newest[0] if newest else None))
        return out

    # -- copying (vinespy migrate) ---------------------------------------------

    async def restore(self, node: PubSubNode, affiliations: Mapping[str, str],
                      subscriptions: Mapping[str, str], items: list[Item]) -> None:
        """Make ``node.name`` of ``node.service`` hold exactly this state,
        ``items`` oldest first, whether it exists or not: what a copy from
        another store writes, the same however often it runs.

        The memory, fs and sql stores override it: the node is written
        whole at once (one transaction for sql), the creation and publication
        times kept as given; TypeError or ValueError (a time must be an int
        in 0..2**63-1) before anything changes. This default goes through
        the other methods (the Redis store has only it), one call after the
        other (a failure leaves part of it done), so the creation time and
        the items' publication times become now, and a node that exists
        keeps its owner; :func:`keeps_times` tells them apart.
        """
        service, name = node.service, node.name
        if not await self.create(service, name, node.owner, node.config):
            await self.configure(service, name, node.config)
        for jid in set(await self.affiliations(service, name)) - set(affiliations):
            await self.set_affiliation(service, name, jid, None)
        for jid, affiliation in affiliations.items():
            await self.set_affiliation(service, name, jid, affiliation)
        for jid in set(await self.subscriptions(service, name)) - set(subscriptions):
            await self.unsubscribe(service, name, jid)
        for jid, subid in subscriptions.items():
            await self.subscribe(service, name, jid, subid)
        await self.purge(service, name)
        for item in items:
            await self.publish(service, name, item.id, item.payload, item.publisher, None)

    async def close(self) -> None:
        """Release resources; the default has none."""


async def delete_service(store: PubSubStore, service: str) -> int:
    """Delete every node of ``service`` (an account's XEP-0163 PEP nodes when
    the account goes); how many there were."""
    names = await store.nodes(service)
    for name in names:
        await store.delete(service, name)
    return len(names)


def keeps_times(store: PubSubStore) -> bool:
    """Whether ``store.restore`` keeps the times it is given (it is not the
    default :meth:`PubSubStore.restore`)."""
    return type(store).restore is not PubSubStore.restore


_STORES: Registry[PubSubStore] = Registry("pubsub storage", {
    name: f"{__name__}.{name}" for name in ("fs", "memory", "redis", "sql")})
register = _STORES.register


def open_pubsub(kind: str, **options: Any) -> PubSubStore:
    """The pubsub store ``kind`` built from ``options``:

    * ``"memory"``: :class:`~vinespy.storage.pubsub.memory.MemoryPubSub` (no options);
    * ``"fs"``: :class:`~vinespy.storage.pubsub.fs.FsPubSub` (``dir``: its directory);
    * ``"redis"``: :class:`~vinespy.storage.pubsub.redis.RedisPubSub` (``redis``:
      a redis-py asyncio client with binary replies; imported only here;
      ``owned``: close it too; ``wait_replicas``, ``wait_timeout``: the
      replicas each write waits for, and how long);
    * ``"sql"``: :class:`~vinespy.storage.pubsub.sql.SqlPubSub` (``storage``:
      the host's :class:`~vinespy.storage.sql.SqlStorage`; ``owned``: close it too).

    StorageError for an unknown kind; TypeError for wrong options.
    """
    return _STORES.open(kind, options)


def fs_dir(host: HostConfig) -> Path:
    """Where a standalone server keeps ``host``'s pubsub services:
    ``pubsub`` in its storage directory (``[host.storage] dir``)."""
    return Path(host.storage.options["dir"]) / "pubsub"


def store_for(config: Config, host: HostConfig, storage: Storage | None = None) -> PubSubStore:
    """The store of ``host``'s pubsub services, the same for the server and
    the operator's commands:

    * a host whose storage is ``backend = "sql"``: its database, standalone
      and in a cluster alike, through ``storage`` (the server's, not closed
      with the store) or else a SqlStorage of its own (a command's, closed
      with the store). In a cluster SQL gives what the Redis store gives:
      every node reads and writes one shared state, each call atomic
      (node-row locks keep ``max_items`` exact), times from one clock
      (PostgreSQL's); the XEP-0060 module caches nothing, so no node has a
      copy to invalidate (nothing like NotifyingStorage's user-changed events
      is needed), and notifications go through the cluster's router whatever
      the store. Everything the server keeps is then in the one database
      (issue 12), and a cluster's Redis holds only routing;
    * else in a cluster: Redis (the store owns its client), each write
      confirmed by ``[cluster] wait_replicas`` replicas;
    * else the host's data directory (fs), or memory for a storage that is
      not on disk.
    """
    if host.storage.backend == "sql":
        if storage is None:
            return open_pubsub("sql", storage=open_storage("sql", host.storage.options),
                               owned=True)
        return open_pubsub("sql", storage=storage)
    if config.cluster is not None:
        from ...cluster.connection import connect
        cfg = config.cluster
        # A write's reply comes after its WAIT: the socket timeout (5 s for
        # every other command) must outlast it.
        client = connect(cfg, socket_timeout=5.0 + cfg.wait_timeout)
        return open_pubsub("redis", redis=client, owned=True,
                           wait_replicas=cfg.replicas_to_wait(), wait_timeout=cfg.wait_timeout)
    if host.storage.backend == "fs" and "dir" in host.storage.options:
        return open_pubsub("fs", dir=fs_dir(host))
    return open_pubsub("memory")
