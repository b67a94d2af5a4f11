"""Publish-subscribe (XEP-0060) storage: the interface and its standalone backends.

:class:`PubSubStore` is what the XEP-0060 module reads and writes: the nodes
of pubsub services with their owner, config, affiliations, subscriptions and
items. The module decides what is allowed; a store only keeps the state.
Three implementations keep the same contract (tests/storage/
test_pubsub_contract.py runs one suite against all of them):

* :class:`MemoryPubSub`: dicts in the process, lost at exit (tests).
* :class:`FsPubSub`: one JSON file per node under a directory, for a
  standalone server.
* :class:`~vinespy.cluster.pubsub.RedisPubSub`: one Redis shared by every
  node of a cluster.

:func:`open_pubsub` builds one by name; only ``"redis"`` imports redis-py.

Failures follow :mod:`vinespy.storage`: a miss answers False, None or empty
(each method says which), I/O failures and corrupt data raise
:class:`~vinespy.storage.StorageError` (the cause chained, the message
starting ``pubsub `` or ``corrupt ``), bad arguments raise ValueError or
TypeError before anything is changed.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import binascii
import fcntl
import json
import os
import time
import weakref
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, TypeVar

from ..fileio import atomic_write, fsync_dir
from . import StorageError
from .fs.names import decode_name, encode_name

if TYPE_CHECKING:
    from ..config import Config, HostConfig

T = TypeVar("T")

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

    async def close(self) -> None:
        """Release resources; the default has none."""


def open_pubsub(kind: str, **options: Any) -> PubSubStore:
    """The pubsub store ``kind`` built from ``options``:

    * ``"memory"``: :class:`MemoryPubSub` (no options);
    * ``"fs"``: :class:`FsPubSub` (``dir``: its directory);
    * ``"redis"``: :class:`~vinespy.cluster.pubsub.RedisPubSub` (``redis``:
      a redis-py asyncio client with binary replies; imported only here).

    StorageError for an unknown kind; TypeError for wrong options.
    """
    if kind == "memory":
        return MemoryPubSub(**options)
    if kind == "fs":
        return FsPubSub(**options)
    if kind == "redis":
        from ..cluster.pubsub import RedisPubSub
        return RedisPubSub(**options)
    raise StorageError(f"unknown pubsub storage {kind!r}; known: fs, memory, redis")


def fs_dir(host: HostConfig) -> Path:
    """Where a standalone server keeps ``host``'s pubsub services:
    ``pubsub`` in its storage directory (``[host.storage] dir``)."""
    return Path(host.storage.options["dir"]) / "pubsub"


def store_for(config: Config, host: HostConfig) -> PubSubStore:
    """The store of ``host``'s pubsub services, the same for the server and
    the operator's commands: Redis in a cluster (every node sees the same
    state at once; the store owns its client), else the host's data
    directory, or memory for a storage that is not on disk."""
    if config.cluster is not None:
        from ..cluster.connection import connect
        return open_pubsub("redis", redis=connect(config.cluster), owned=True)
    if host.storage.backend == "fs" and "dir" in host.storage.options:
        return open_pubsub("fs", dir=fs_dir(host))
    return open_pubsub("memory")


# ---------------------------------------------------------------------------
# argument checks and the node state shared by the memory and fs stores


def _now_ms() -> int:
    return int(time.time() * 1000)


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    return value


def _config(config: Mapping[str, str], what: str = "config") -> dict[str, str]:
    """A copy of ``config``; TypeError unless it maps str to str."""
    out: dict[str, str] = {}
    for k, v in config.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"{what} must map str to str, not {k!r}: {v!r}")
        out[k] = v
    return out


def _affiliation(affiliation: str | None) -> str | None:
    if affiliation == "none":
        return None
    if affiliation is not None and affiliation not in AFFILIATIONS:
        raise ValueError(f"unknown pubsub affiliation {affiliation!r}")
    return affiliation


def _publish_args(item_id: str, payload: bytes, publisher: str, max_items: int | None) -> None:
    _str(item_id, "item id")
    if not isinstance(payload, bytes):
        raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
    _str(publisher, "publisher")
    if max_items is not None and (not isinstance(max_items, int)
                                  or isinstance(max_items, bool) or max_items < 1):
        raise ValueError(f"max_items must be a positive int or None, not {max_items!r}")


def _items_args(max_items: int | None, ids: list[str] | None) -> list[str] | None:
    """The ids asked for, each once (None: the newest items)."""
    if max_items is not None and (not isinstance(max_items, int)
                                  or isinstance(max_items, bool) or max_items < 0):
        raise ValueError(f"max_items must be an int >= 0 or None, not {max_items!r}")
    if ids is None:
        return None
    return list(dict.fromkeys(_str(i, "item id") for i in ids))


@dataclass
class _Node:
    """One node's whole state; ``items`` in publication order, oldest first."""

    owner: str
    created: int
    config: dict[str, str]
    affiliations: dict[str, str]
    subscriptions: dict[str, str] = field(default_factory=dict)
    items: dict[str, Item] = field(default_factory=dict)

    def info(self, service: str, name: str) -> PubSubNode:
        return PubSubNode(service=service, name=name, owner=self.owner,
                          config=dict(self.config), created=self.created)

    def publish(self, item_id: str, payload: bytes, publisher: str,
                max_items: int | None) -> list[str]:
        self.items.pop(item_id, None)
        self.items[item_id] = Item(id=item_id, payload=payload, publisher=publisher,
                                   published=_now_ms())
        evicted: list[str] = []
        if max_items is not None:
            extra = len(self.items) - max_items
            if extra > 0:
                evicted = list(self.items)[:extra]
                for i in evicted:
                    del self.items[i]
        return evicted

    def select(self, max_items: int | None, wanted: list[str] | None) -> list[Item]:
        if max_items == 0:
            return []
        if wanted is None:
            found = list(reversed(self.items.values()))
        else:
            found = [self.items[i] for i in wanted if i in self.items]
        if max_items is not None:
            found = found[:max_items]
        return [replace(i) for i in found]


# ---------------------------------------------------------------------------
# memory


class MemoryPubSub(PubSubStore):
    """Everything in dicts of this process (for tests); nothing survives it.

    Every method runs without awaiting, so each is atomic in its event loop.
    ``subscriptions_of`` scans the service's nodes. What is returned is a
    copy: changing it changes nothing stored.
    """

    def __init__(self) -> None:
        self._services: dict[str, dict[str, _Node]] = {}

    def _node(self, service: str, node: str) -> _Node | None:
        return self._services.get(_str(service, "service"), {}).get(_str(node, "node"))

    async def create(self, service: str, node: str, owner: str,
                     config: Mapping[str, str]) -> bool:
        conf = _config(config)
        _str(owner, "owner")
        if self._node(service, node) is not None:
            return False
        self._services.setdefault(service, {})[node] = _Node(
            owner=owner, created=_now_ms(), config=conf, affiliations={owner: "owner"})
        return True

    async def delete(self, service: str, node: str) -> bool:
        if self._node(service, node) is None:
            return False
        nodes = self._services[service]
        del nodes[node]
        if not nodes:
            del self._services[service]
        return True

    async def nodes(self, service: str) -> list[str]:
        return sorted(self._services.get(_str(service, "service"), {}))

    async def get(self, service: str, node: str) -> PubSubNode | None:
        state = self._node(service, node)
        return None if state is None else state.info(service, node)

    async def configure(self, service: str, node: str, config: Mapping[str, str]) -> bool:
        conf = _config(config)
        state = self._node(service, node)
        if state is None:
            return False
        state.config = conf
        return True

    async def affiliations(self, service: str, node: str) -> dict[str, str]:
        state = self._node(service, node)
        return {} if state is None else dict(state.affiliations)

    async def set_affiliation(self, service: str, node: str, jid: str,
                              affiliation: str | None) -> bool:
        affiliation = _affiliation(affiliation)
        _str(jid, "jid")
        state = self._node(service, node)
        if state is None:
            return False
        if affiliation is None:
            state.affiliations.pop(jid, None)
        else:
            state.affiliations[jid] = affiliation
        return True

    async def subscriptions(self, service: str, node: str) -> dict[str, str]:
        state = self._node(service, node)
        return {} if state is None else dict(state.subscriptions)

    async def subscribe(self, service: str, node: str, jid: str, subid: str) -> bool:
        _str(jid, "jid")
        _str(subid, "subid")
        state = self._node(service, node)
        if state is None:
            return False
        state.subscriptions[jid] = subid
        return True

    async def unsubscribe(self, service: str, node: str, jid: str) -> bool:
        state = self._node(service, node)
        return state is not None and state.subscriptions.pop(_str(jid, "jid"), None) is not None

    async def subscriptions_of(self, service: str, jid: str) -> dict[str, str]:
        _str(jid, "jid")
        return {name: state.subscriptions[jid]
                for name, state in self._services.get(_str(service, "service"), {}).items()
                if jid in state.subscriptions}

    async def publish(self, service: str, node: str, item_id: str, payload: bytes,
                      publisher: str, max_items: int | None) -> list[str] | None:
        _publish_args(item_id, payload, publisher, max_items)
        state = self._node(service, node)
        if state is None:
            return None
        return state.publish(item_id, payload, publisher, max_items)

    async def retract(self, service: str, node: str, item_id: str) -> bool:
        state = self._node(service, node)
        return state is not None and state.items.pop(_str(item_id, "item id"), None) is not None

    async def items(self, service: str, node: str, max_items: int | None = None,
                    ids: list[str] | None = None) -> list[Item]:
        wanted = _items_args(max_items, ids)
        state = self._node(service, node)
        return [] if state is None else state.select(max_items, wanted)

    async def purge(self, service: str, node: str) -> int | None:
        state = self._node(service, node)
        if state is None:
            return None
        n = len(state.items)
        state.items.clear()
        return n


# ---------------------------------------------------------------------------
# fs

FORMAT = 1          # "format" of a node file


def _file_part(name: str) -> str:
    """``_`` and :func:`~vinespy.storage.fs.names.encode_name`: injective, never
    empty, never ``.``, ``..``, a separator or a leading dot."""
    return "_" + encode_name(_str(name, "name"))


def _node_to_json(service: str, name: str, node: _Node) -> bytes:
    items = []
    for item in node.items.values():
        entry: dict[str, Any] = {"id": item.id, "publisher": item.publisher,
                                 "published": item.published}
        try:
            entry["text"] = item.payload.decode("utf-8")
        except UnicodeDecodeError:
            entry["base64"] = base64.b64encode(item.payload).decode("ascii")
        items.append(entry)
    doc = {"format": FORMAT, "service": service, "node": name, "owner": node.owner,
           "created": node.created, "config": node.config,
           "affiliations": node.affiliations, "subscriptions": node.subscriptions,
           "items": items}
    return json.dumps(doc, ensure_ascii=False, allow_nan=False,
                      separators=(",", ":")).encode("utf-8")


def _typed(value: Any, kind: type[T], what: str) -> T:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{what}: expected {kind.__name__}, found {type(value).__name__}")
    return value


def _str_map(value: Any, what: str) -> dict[str, str]:
    for k, v in _typed(value, dict, what).items():
        _typed(v, str, f"{what} {k!r}")
    return dict(value)


def _node_from_json(data: bytes) -> tuple[str, str, _Node]:
    """(service, node, state) of a node file; ValueError (or a subclass)
    for anything a node file cannot hold."""
    doc = _typed(json.loads(data.decode("utf-8")), dict, "document")
    if doc.get("format") != FORMAT:
        raise ValueError(f"format {doc.get('format')!r}, expected {FORMAT}")
    affiliations = _str_map(doc.get("affiliations"), "affiliations")
    for jid, affiliation in affiliations.items():
        if affiliation not in AFFILIATIONS:
            raise ValueError(f"affiliation {jid!r}: {affiliation!r}")
    items: dict[str, Item] = {}
    for entry in _typed(doc.get("items"), list, "items"):
        entry = _typed(entry, dict, "item")
        item_id = _typed(entry.get("id"), str, "item id")
        if item_id in items:
            raise ValueError(f"item {item_id!r} twice")
        if ("text" in entry) == ("base64" in entry):
            raise ValueError(f"item {item_id!r}: needs one of text and base64")
        if "text" in entry:
            payload = _typed(entry["text"], str, f"text of item {item_id!r}").encode("utf-8")
        else:
            payload = base64.b64decode(_typed(entry["base64"], str, "base64"), validate=True)
        published = _typed(entry.get("published"), int, f"time of item {item_id!r}")
        if published < 0:
            raise ValueError(f"time of item {item_id!r}: {published}")
        items[item_id] = Item(id=item_id, payload=payload,
                              publisher=_typed(entry.get("publisher"), str, "publisher"),
                              published=published)
    created = _typed(doc.get("created"), int, "created")
    if created < 0:
        raise ValueError(f"created: {created}")
    node = _Node(owner=_typed(doc.get("owner"), str, "owner"), created=created,
                 config=_str_map(doc.get("config"), "config"), affiliations=affiliations,
                 subscriptions=_str_map(doc.get("subscriptions"), "subscriptions"),
                 items=items)
    return (_typed(doc.get("service"), str, "service"), _typed(doc.get("node"), str, "node"),
            node)


class FsPubSub(PubSubStore):
    """The services' nodes as files under ``dir`` (e.g. the host's data
    directory + ``/pubsub``), for a standalone server (one process)::

        <dir>/_<service>/_<node>.json     everything of one node

    ``<service>`` and ``<node>`` are the names encoded as the fs storage
    encodes its file names (:func:`~vinespy.storage.fs.names.encode_name`: ``%XX``
    for every byte outside ``[a-z0-9_-]``, a SHA-256 for long ones) after a
    ``_``: no name, the empty one, ``..`` or ``a/b`` included, can leave its
    directory, be hidden or meet another's file; a hashed name is checked
    against the ``service`` and ``node`` the file records.

    A node file is UTF-8 JSON: ``format`` (1), ``service``, ``node``,
    ``owner``, ``created`` (ms), ``config``, ``affiliations``,
    ``subscriptions`` (objects of strings), and ``items``, oldest first,
    each ``{"id", "publisher", "published" (ms), "text" | "base64"}``: the
    payload as text when it is UTF-8, else base64. Timestamps are this
    host's clock (``time.time()``).

    Every change reads the node's file, changes it and replaces it with
    :func:`~vinespy.fileio.atomic_write` (fsynced; a crash leaves the old
    file or the new one) while holding the node's asyncio.Lock and an
    exclusive flock on ``<dir>/.lock``, so changes are serialized per node
    within the server and against other processes (the operator's
    ``vinespy pubsub`` commands); readers need no lock (a rename is atomic).
    ``subscriptions_of``
    and ``nodes`` scan the service's directory (no index file): fine for
    the hundreds of nodes of a standalone server. Blocking I/O runs in a
    worker thread. A corrupt or unreadable file raises StorageError and is
    left as it is; every OSError becomes StorageError. Directories are
    created 0700, files 0600.
    """

    def __init__(self, dir: str | os.PathLike[str]) -> None:
        self.dir = Path(dir)
        self._locks: weakref.WeakValueDictionary[Path, asyncio.Lock] = \
            weakref.WeakValueDictionary()

    # -- files -----------------------------------------------------------

    def _service_dir(self, service: str) -> Path:
        return self.dir / _file_part(service)

    def _path(self, service: str, node: str) -> Path:
        return self._service_dir(service) / (_file_part(node) + ".json")

    def _lock(self, path: Path) -> asyncio.Lock:
        lock = self._locks.get(path)
        if lock is None:
            lock = self._locks[path] = asyncio.Lock()
        return lock

    async def _run(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.to_thread(fn, *args)
        except OSError as exc:
            raise StorageError(f"pubsub {what}: {exc}") from exc

    def _load(self, service: str, node: str, path: Path | None = None) -> _Node | None:
        """The node's state from its file, or None if it has none."""
        path = path or self._path(service, node)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        try:
            s, n, state = _node_from_json(data)
        except (ValueError, binascii.Error) as exc:
            raise StorageError(f"corrupt pubsub node {node!r} of {service!r} "
                               f"({path}): {exc}") from exc
        if (s, n) != (service, node):
            raise StorageError(f"corrupt pubsub node {node!r} of {service!r} ({path}): "
                               f"the file is node {n!r} of {s!r}")
        return state

    def _save(self, service: str, node: str, state: _Node) -> None:
        path = self._path(service, node)
        data = _node_to_json(service, node, state)
        if not path.parent.is_dir():
            if not self.dir.is_dir():
                self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                fsync_dir(self.dir.parent)
            path.parent.mkdir(mode=0o700, exist_ok=True)
            fsync_dir(self.dir)
        atomic_write(path, data)

    def _change(self, service: str, node: str, fn: Callable[[_Node], T]) -> T | None:
        """``fn(state)`` and the state saved; None (nothing written) if the
        node does not exist."""
        state = self._load(service, node)
        if state is None:
            return None
        out = fn(state)
        self._save(service, node, state)
        return out

    async def _locked(self, what: str, service: str, node: str,
                      fn: Callable[[_Node], T]) -> T | None:
        path = self._path(service, node)
        async with self._lock(path):
            return await self._run(what, self._exclusive, self._change, service, node, fn)

    def _exclusive(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` holding an exclusive flock on ``<dir>/.lock``: the
        operator's ``vinespy pubsub`` commands change the same files as the
        running server, and a read-modify-write must not interleave."""
        if not self.dir.is_dir():
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            fsync_dir(self.dir.parent)
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return fn(*args)
        finally:
            os.close(fd)            # releases the lock

    def _node_files(self, service: str) -> Iterable[tuple[str, Path]]:
        """(node name, path) of the service's node files."""
        try:
            names = os.listdir(self._service_dir(service))
        except FileNotFoundError:
            return []
        out = []
        for file in names:
            if not file.startswith("_") or not file.endswith(".json"):
                continue            # atomic_write's temporary files
            path = self._service_dir(service) / file
            part = file[1:-len(".json")]
            name = decode_name(part)
            if name is None:        # a hashed long name: the file says
                name = self._recorded_name(path, service)
                if name is None:
                    continue        # deleted meanwhile
                if _file_part(name) != file[:-len(".json")]:
                    raise StorageError(f"corrupt pubsub service {service!r}: {path} "
                                       f"holds node {name!r}")
            out.append((name, path))
        return out

    @staticmethod
    def _recorded_name(path: Path, service: str) -> str | None:
        try:
            with open(path, "rb") as f:
                return _node_from_json(f.read())[1]
        except FileNotFoundError:
            return None
        except (ValueError, binascii.Error) as exc:
            raise StorageError(f"corrupt pubsub node file of {service!r} "
                               f"({path}): {exc}") from exc

    # -- nodes -----------------------------------------------------------

    async def create(self, service: str, node: str, owner: str,
                     config: Mapping[str, str]) -> bool:
        conf = _config(config)
        _str(owner, "owner")
        path = self._path(service, node)

        def create() -> bool:
            if self._load(service, node, path) is not None:
                return False
            self._save(service, node, _Node(owner=owner, created=_now_ms(), config=conf,
                                            affiliations={owner: "owner"}))
            return True

        async with self._lock(path):
            return await self._run(f"create {node!r} of {service!r}", self._exclusive, create)

    async def delete(self, service: str, node: str) -> bool:
        path = self._path(service, node)

        def delete() -> bool:
            try:
                os.unlink(path)
            except FileNotFoundError:
                return False
            fsync_dir(path.parent)
            return True

        async with self._lock(path):
            return await self._run(f"delete {node!r} of {service!r}", self._exclusive, delete)

    async def nodes(self, service: str) -> list[str]:
        files = await self._run(f"nodes of {service!r}", self._node_files, service)
        return sorted(name for name, _ in files)

    async def get(self, service: str, node: str) -> PubSubNode | None:
        state = await self._run(f"get {node!r} of {service!r}", self._load, service, node)
        return None if state is None else state.info(service, node)

    async def configure(self, service: str, node: str, config: Mapping[str, str]) -> bool:
        conf = _config(config)

        def configure(state: _Node) -> bool:
            state.config = conf
            return True

        return bool(await self._locked(f"configure {node!r} of {service!r}",
                                       service, node, configure))

    # -- affiliations ----------------------------------------------------

    async def affiliations(self, service: str, node: str) -> dict[str, str]:
        state = await self._run(f"affiliations of {node!r} of {service!r}",
                                self._load, service, node)
        return {} if state is None else state.affiliations

    async def set_affiliation(self, service: str, node: str, jid: str,
                              affiliation: str | None) -> bool:
        affiliation = _affiliation(affiliation)
        _str(jid, "jid")

        def affiliate(state: _Node) -> bool:
            if affiliation is None:
                state.affiliations.pop(jid, None)
            else:
                state.affiliations[jid] = affiliation
            return True

        return bool(await self._locked(f"set affiliation on {node!r} of {service!r}",
                                       service, node, affiliate))

    # -- subscriptions ---------------------------------------------------

    async def subscriptions(self, service: str, node: str) -> dict[str, str]:
        state = await self._run(f"subscriptions of {node!r} of {service!r}",
                                self._load, service, node)
        return {} if state is None else state.subscriptions

    async def subscribe(self, service: str, node: str, jid: str, subid: str) -> bool:
        _str(jid, "jid")
        _str(subid, "subid")

        def subscribe(state: _Node) -> bool:
            state.subscriptions[jid] = subid
            return True

        return bool(await self._locked(f"subscribe to {node!r} of {service!r}",
                                       service, node, subscribe))

    async def unsubscribe(self, service: str, node: str, jid: str) -> bool:
        _str(jid, "jid")
        path = self._path(service, node)

        def unsubscribe() -> bool:
            state = self._load(service, node, path)
            if state is None or state.subscriptions.pop(jid, None) is None:
                return False        # nothing to write
            self._save(service, node, state)
            return True

        async with self._lock(path):
            return await self._run(f"unsubscribe from {node!r} of {service!r}", unsubscribe)

    async def subscriptions_of(self, service: str, jid: str) -> dict[str, str]:
        """A scan of every node file of the service (no index)."""
        _str(jid, "jid")

        def scan() -> dict[str, str]:
            out = {}
            for name, path in self._node_files(service):
                state = self._load(service, name, path)
                if state is not None and jid in state.subscriptions:
                    out[name] = state.subscriptions[jid]
            return out

        return await self._run(f"subscriptions of {jid!r} in {service!r}", scan)

    # -- items -----------------------------------------------------------

    async def publish(self, service: str, node: str, item_id: str, payload: bytes,
                      publisher: str, max_items: int | None) -> list[str] | None:
        _publish_args(item_id, payload, publisher, max_items)
        return await self._locked(
            f"publish to {node!r} of {service!r}", service, node,
            lambda state: state.publish(item_id, payload, publisher, max_items))

    async def retract(self, service: str, node: str, item_id: str) -> bool:
        _str(item_id, "item id")
        path = self._path(service, node)

        def retract() -> bool:
            state = self._load(service, node, path)
            if state is None or state.items.pop(item_id, None) is None:
                return False
            self._save(service, node, state)
            return True

        async with self._lock(path):
            return await self._run(f"retract from {node!r} of {service!r}", retract)

    async def items(self, service: str, node: str, max_items: int | None = None,
                    ids: list[str] | None = None) -> list[Item]:
        wanted = _items_args(max_items, ids)
        if max_items == 0 or wanted == []:
            return []
        state = await self._run(f"items of {node!r} of {service!r}",
                                self._load, service, node)
        return [] if state is None else state.select(max_items, wanted)

    async def purge(self, service: str, node: str) -> int | None:
        def purge(state: _Node) -> int:
            n = len(state.items)
            state.items.clear()
            return n

        return await self._locked(f"purge {node!r} of {service!r}", service, node, purge)


__all__ = ["AFFILIATIONS", "FsPubSub", "Item", "MemoryPubSub", "PubSubNode",
           "PubSubStore", "open_pubsub"]
