"""``fs``: the pubsub store as one JSON file per node, for a standalone server."""

from __future__ import annotations

import asyncio
import base64
import binascii
import fcntl
import json
import os
import weakref
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Mapping, Sequence, TypeVar

from ...fileio import atomic_write, fsync_dir
from .. import StorageError
from ..fs.names import decode_name, encode_name
from . import AFFILIATIONS, Item, LastItem, PubSubNode, PubSubStore, register
from .state import (NodeState, check_affiliation, check_config, check_items, check_publish,
                    check_str, now_ms, restored)

T = TypeVar("T")

FORMAT = 1          # "format" of a node file


def _file_part(name: str) -> str:
    """``_`` and :func:`~vinespy.storage.fs.names.encode_name`: injective, never
    empty, never ``.``, ``..``, a separator or a leading dot."""
    return "_" + encode_name(check_str(name, "name"))


def _node_to_json(service: str, name: str, node: NodeState) -> bytes:
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


def _node_from_json(data: bytes) -> tuple[str, str, NodeState]:
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
    node = NodeState(owner=_typed(doc.get("owner"), str, "owner"), created=created,
                     config=_str_map(doc.get("config"), "config"), affiliations=affiliations,
                     subscriptions=_str_map(doc.get("subscriptions"), "subscriptions"),
                     items=items)
    return (_typed(doc.get("service"), str, "service"), _typed(doc.get("node"), str, "node"),
            node)


@register("fs")
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

    def _load(self, service: str, node: str, path: Path | None = None) -> NodeState | None:
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

    def _save(self, service: str, node: str, state: NodeState) -> None:
        path = self._path(service, node)
        data = _node_to_json(service, node, state)
        if not path.parent.is_dir():
            if not self.dir.is_dir():
                self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                fsync_dir(self.dir.parent)
            path.parent.mkdir(mode=0o700, exist_ok=True)
            fsync_dir(self.dir)
        atomic_write(path, data)

    def _change(self, service: str, node: str, fn: Callable[[NodeState], T]) -> T | None:
        """``fn(state)`` and the state saved; None (nothing written) if the
        node does not exist."""
        state = self._load(service, node)
        if state is None:
            return None
        out = fn(state)
        self._save(service, node, state)
        return out

    async def _locked(self, what: str, service: str, node: str,
                      fn: Callable[[NodeState], T]) -> T | None:
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
        conf = check_config(config)
        check_str(owner, "owner")
        path = self._path(service, node)

        def create() -> bool:
            if self._load(service, node, path) is not None:
                return False
            self._save(service, node, NodeState(owner=owner, created=now_ms(), config=conf,
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
        conf = check_config(config)

        def configure(state: NodeState) -> bool:
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
        affiliation = check_affiliation(affiliation)
        check_str(jid, "jid")

        def affiliate(state: NodeState) -> bool:
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
        check_str(jid, "jid")
        check_str(subid, "subid")

        def subscribe(state: NodeState) -> bool:
            state.subscriptions[jid] = subid
            return True

        return bool(await self._locked(f"subscribe to {node!r} of {service!r}",
                                       service, node, subscribe))

    async def unsubscribe(self, service: str, node: str, jid: str) -> bool:
        check_str(jid, "jid")
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
        check_str(jid, "jid")

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
        check_publish(item_id, payload, publisher, max_items)
        return await self._locked(
            f"publish to {node!r} of {service!r}", service, node,
            lambda state: state.publish(item_id, payload, publisher, max_items))

    async def retract(self, service: str, node: str, item_id: str) -> bool:
        check_str(item_id, "item id")
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
        wanted = check_items(max_items, ids)
        if max_items == 0 or wanted == []:
            return []
        state = await self._run(f"items of {node!r} of {service!r}",
                                self._load, service, node)
        return [] if state is None else state.select(max_items, wanted)

    async def last_items(self, services: Sequence[str], nodes: Collection[str],
                         jid: str) -> list[LastItem]:
        """One thread reads the files of the nodes named (no directory listing)."""
        wanted = sorted(set(nodes))

        def read() -> list[LastItem]:
            out = []
            for service in dict.fromkeys(services):
                for name in wanted:
                    state = self._load(service, name)
                    if state is not None:
                        newest = state.select(1, None)
                        out.append(LastItem(service, name, state.config,
                                            state.affiliations.get(jid, "none"),
                                            newest[0] if newest else None))
            return out

        return await self._run(f"last items of {len(services)} services", read)

    async def purge(self, service: str, node: str) -> int | None:
        def purge(state: NodeState) -> int:
            n = len(state.items)
            state.items.clear()
            return n

        return await self._locked(f"purge {node!r} of {service!r}", service, node, purge)

    # -- copying ---------------------------------------------------------

    async def restore(self, node: PubSubNode, affiliations: Mapping[str, str],
                      subscriptions: Mapping[str, str], items: list[Item]) -> None:
        """The node's file written whole, times kept."""
        state = restored(node, affiliations, subscriptions, items)
        path = self._path(node.service, node.name)
        async with self._lock(path):
            await self._run(f"restore {node.name!r} of {node.service!r}", self._exclusive,
                            self._save, node.service, node.name, state)
