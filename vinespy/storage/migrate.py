"""Copy everything one storage holds into another, and check the copy: what
``vinespy migrate --to URL`` does (issue 12 item 4).

What is copied, JID by JID (:meth:`vinespy.storage.Storage.owners`): the
account (SCRAM credentials, roster with its version and pending
subscriptions), the vCard, private XML fragments and keyval stores (offline
messages, blocklist, last activity, ...); then, for each pubsub service,
node by node: owner, config, affiliations, subscriptions and items, oldest
first (:meth:`vinespy.storage.pubsub.PubSubStore.restore`).

The copy is idempotent: every record of the target is replaced with the
source's, a keyval store the source no longer holds for a JID is removed,
an account the source no longer has is deleted, so running it again (after
an interruption, or after the source changed) gives the same target and the
same counts. The source is only read: its type here (:class:`Source`,
:class:`PubSubSource`) has no method that writes.

:func:`verify_storage` and :func:`verify_pubsub` read both sides again and
compare them (content and counts). Pubsub times (a node's creation, its
items' publication) are compared too when the target's ``restore`` keeps
them (memory, fs, sql: :func:`vinespy.storage.pubsub.keeps_times`); the
default ``restore`` (the Redis store's) stamps them anew, so there they are
not.
Comparing and counting are the pure functions :func:`differences`,
:func:`node_differences`, :meth:`Owned.counts`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Protocol

from lxml import etree

from ..jid import JID
from . import Storage, User, xml_bytes, xml_element
from .pubsub import Item, PubSubNode, PubSubStore, keeps_times

USERS = "users"
ROSTER = "roster items"
VCARDS = "vcards"
PRIVATE = "private"
NODES = "pubsub nodes"
ITEMS = "pubsub items"
KEYVAL = "keyval "                  # + the store's name: "keyval offline"
# Kinds always shown, in this order; keyval stores go between them, by name.
FIRST = (USERS, ROSTER, VCARDS, PRIVATE)
LAST = (NODES, ITEMS)

PROGRESS_EVERY = 100                # JIDs between two progress reports


class Source(Protocol):
    """What a copy reads of the source storage: nothing that writes."""

    def owners(self) -> AsyncIterator[JID]: ...

    async def fragments(self, jid: JID) -> list[tuple[str, str]]: ...

    async def stores(self, jid: JID) -> list[str]: ...

    async def find_user(self, jid: JID) -> User | None: ...

    async def find_vcard(self, jid: JID) -> etree._Element | None: ...

    async def find_fragment(self, jid: JID, namespace: str,
                            name: str) -> etree._Element | None: ...

    async def get(self, jid: JID, store: str) -> Any | None: ...


class PubSubSource(Protocol):
    """What a copy reads of the source pubsub store."""

    async def nodes(self, service: str) -> list[str]: ...

    async def get(self, service: str, node: str) -> PubSubNode | None: ...

    async def affiliations(self, service: str, node: str) -> dict[str, str]: ...

    async def subscriptions(self, service: str, node: str) -> dict[str, str]: ...

    async def items(self, service: str, node: str, max_items: int | None = None,
                    ids: list[str] | None = None) -> list[Item]: ...


# --- one JID's data ------------------------------------------------------------


@dataclass
class Owned:
    """Everything a storage holds for one bare JID."""

    jid: JID
    user: User | None = None
    vcard: bytes | None = None
    fragments: dict[tuple[str, str], bytes] = field(default_factory=dict)
    stores: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> Counter[str]:
        c: Counter[str] = Counter()
        if self.user is not None:
            c[USERS] += 1
            c[ROSTER] += len(self.user.roster)
        c[VCARDS] += self.vcard is not None
        c[PRIVATE] += len(self.fragments)
        for store in self.stores:
            c[KEYVAL + store] += 1
        return c


async def read_owned(storage: Source, jid: JID) -> Owned:
    vcard = await storage.find_vcard(jid)
    owned = Owned(jid, await storage.find_user(jid),
                  xml_bytes(vcard) if vcard is not None else None)
    for ns, name in await storage.fragments(jid):
        element = await storage.find_fragment(jid, ns, name)
        if element is not None:
            owned.fragments[(ns, name)] = xml_bytes(element)
    for store in await storage.stores(jid):
        value = await storage.get(jid, store)
        if value is not None:
            owned.stores[store] = value
    return owned


async def write_owned(target: Storage, owned: Owned) -> None:
    """Make ``target`` hold ``owned`` for its JID (what it cannot delete, a
    vCard or a fragment the source lacks, stays; verification reports it)."""
    jid = owned.jid
    if owned.user is not None:
        await target.save_user(owned.user)
    elif await target.find_user(jid) is not None:
        await target.delete_user(jid)           # and all of it: written again below
    if owned.vcard is not None:
        await target.save_vcard(jid, xml_element(owned.vcard, "vCard"))
    for data in owned.fragments.values():
        await target.save_fragment(jid, xml_element(data, "private fragment"))
    for store in await target.stores(jid):
        if store not in owned.stores:
            await target.put(jid, store, None)
    for store, value in owned.stores.items():
        await target.put(jid, store, value)


def differences(source: Owned, target: Owned) -> list[str]:
    """What the target holds otherwise than the source for one JID, a line each."""
    jid, out = source.jid, []
    if source.user != target.user:
        what = "account" if source.user is None or target.user is None else "account or roster"
        out.append(f"{jid}: {what} differs")
    if source.vcard != target.vcard:
        out.append(f"{jid}: vCard differs")
    for key in sorted(source.fragments.keys() | target.fragments.keys()):
        if source.fragments.get(key) != target.fragments.get(key):
            out.append(f"{jid}: private {{{key[0]}}}{key[1]} differs")
    for store in sorted(source.stores.keys() | target.stores.keys()):
        if source.stores.get(store) != target.stores.get(store):
            out.append(f"{jid}: keyval {store} differs")
    return out


async def copy_storage(source: Source, target: Storage,
                       progress: Callable[[int], None] | None = None) -> Counter[str]:
    """Copy every JID's data; the counts of what was copied.
    ``progress(n)`` after every :data:`PROGRESS_EVERY` JIDs."""
    counts: Counter[str] = Counter()
    n = 0
    async for jid in source.owners():
        owned = await read_owned(source, jid)
        await write_owned(target, owned)
        counts += owned.counts()
        n += 1
        if progress is not None and n % PROGRESS_EVERY == 0:
            progress(n)
    return counts


async def verify_storage(source: Source, target: Storage) -> tuple[Counter[str], list[str]]:
    """Read every source JID back from both: the counts the target holds for
    them, and the differences found."""
    counts: Counter[str] = Counter()
    problems: list[str] = []
    async for jid in source.owners():
        held = await read_owned(target, jid)
        problems += differences(await read_owned(source, jid), held)
        counts += held.counts()
    return counts, problems


async def count_owners(storage: Source) -> int:
    return sum([1 async for _ in storage.owners()])


# --- pubsub -----------------------------------------------------------------------


@dataclass
class NodeData:
    """One pubsub node, whole; ``items`` oldest first."""

    node: PubSubNode
    affiliations: dict[str, str]
    subscriptions: dict[str, str]
    items: list[Item]

    def counts(self) -> Counter[str]:
        return Counter({NODES: 1, ITEMS: len(self.items)})


async def read_node(store: PubSubSource, service: str, name: str) -> NodeData | None:
    node = await store.get(service, name)
    if node is None:
        return None
    return NodeData(node, await store.affiliations(service, name),
                    await store.subscriptions(service, name),
                    list(reversed(await store.items(service, name))))


def node_differences(source: NodeData, target: NodeData | None,
                     times: bool = True) -> list[str]:
    """What differs; the creation and publication times only if ``times``
    (see the module's docstring)."""
    where = f"pubsub node {source.node.name!r} of {source.node.service}"
    if target is None:
        return [f"{where}: missing"]
    out = []
    for what, a, b in (("owner", source.node.owner, target.node.owner),
                       ("config", source.node.config, target.node.config),
                       ("affiliations", source.affiliations, target.affiliations),
                       ("subscriptions", source.subscriptions, target.subscriptions),
                       ("items", [(i.id, i.payload, i.publisher) for i in source.items],
                        [(i.id, i.payload, i.publisher) for i in target.items])):
        if a != b:
            out.append(f"{where}: {what} differ")
    if times and source.node.created != target.node.created:
        out.append(f"{where}: creation time differs")
    if times and ([i.published for i in source.items]
                  != [i.published for i in target.items]):
        out.append(f"{where}: publication times differ")
    return out


async def copy_pubsub(source: PubSubSource, target: PubSubStore,
                      services: list[str]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for service in services:
        for name in await source.nodes(service):
            data = await read_node(source, service, name)
            if data is not None:                # deleted meanwhile
                await target.restore(data.node, data.affiliations, data.subscriptions,
                                     data.items)
                counts += data.counts()
    return counts


async def verify_pubsub(source: PubSubSource, target: PubSubStore,
                        services: list[str]) -> tuple[Counter[str], list[str]]:
    counts: Counter[str] = Counter()
    problems: list[str] = []
    for service in services:
        for name in await source.nodes(service):
            data = await read_node(source, service, name)
            if data is None:
                continue
            held = await read_node(target, service, name)
            problems += node_differences(data, held, keeps_times(target))
            if held is not None:
                counts += held.counts()
    return counts, problems


# --- the report -------------------------------------------------------------------


def count_lines(counts: Counter[str]) -> list[str]:
    """``kind: n`` a line: users, roster items, vcards, private, each keyval
    store by name, pubsub nodes and items (zeros too, but for keyval)."""
    stores = sorted(k for k in counts if k.startswith(KEYVAL))
    return [f"{kind}: {counts[kind]}" for kind in (*FIRST, *stores, *LAST)]
