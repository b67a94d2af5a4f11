"""``redis``: the publish-subscribe (XEP-0060) state of a cluster, kept in Redis.

Every node of a cluster reads and writes the same pubsub services through
:class:`RedisPubSub`, so a node created, an item published or a
subscription made on one node is seen by all the others at once. The
XEP-0060 module decides what is allowed; this is only its storage. It is a
:class:`~vinespy.storage.pubsub.PubSubStore`: the contract and the
dataclasses (re-exported here) are in :mod:`vinespy.storage.pubsub`, the
standalone stores beside this one.

Data model (all keys of a service under ``pubsub:{s}:``):

| key | type | what |
|---|---|---|
| `pubsub:{s}:nodes` | SET | the names of the service's nodes |
| `pubsub:{s}:node:{n}` | HASH | `owner` (bare JID), `created` (ms, Redis `TIME`), `seq` |
| `pubsub:{s}:node:{n}:config` | HASH | option -> value |
| `pubsub:{s}:node:{n}:affiliations` | HASH | bare JID -> affiliation (`AFFILIATIONS`) |
| `pubsub:{s}:node:{n}:subscriptions` | HASH | JID (bare or full) -> subid |
| `pubsub:{s}:node:{n}:order` | ZSET | item id, scored by the `seq` of its last publication |
| `pubsub:{s}:node:{n}:items` | HASH | item id -> `1:{ms}:{len}:{publisher}{payload}` |
| `pubsub:{s}:subscriber:{j}` | HASH | node -> subid of JID `j` (for `subscriptions_of`) |

``seq`` counts the node's publications: the highest score in ``order`` is
the newest item, and republishing an id gives it a new score. An item's
value is its format version (``1``), its publication time (ms, Redis
``TIME``), the byte length of the publisher's JID, then that JID and the
payload, unescaped.

``{s}``, ``{n}`` and ``{j}`` are the service, node and JID with ``%``,
``:``, ``{`` and ``}`` percent-escaped (``%25``, ``%3A``, ``%7B``, ``%7D``):
an escaped name has no ``:``, so no name can reach into another's keys (the
items of node ``x`` are ``...:node:x:items``, node ``x:items`` is
``...:node:x%3Aitems``), and no ``{...}`` hash tag. Set members, hash
fields and values hold names, JIDs and item ids as they are (binary-safe).
The node's HASH is its existence: every write checks it in the same script,
so writing to a node that does not exist creates nothing.

Every change of several keys is one Lua script (atomic: no other command
runs in between; Redis does not roll a script back, but the scripts only
fail mid-way on keys of the wrong type, i.e. corrupt data); reads of
several keys are one script or MULTI/EXEC. Timestamps are Redis ``TIME``
taken inside the script, never a local clock. Like the
cluster's other scripts, ``delete`` touches keys it computes (the
subscribers' index entries): one Redis, not Redis Cluster.

Replication (``[cluster] wait_replicas``, ``wait_timeout``): Redis copies
writes to its replicas asynchronously, so a write the primary made just
before it died can be missing on the replica Sentinel promotes. With
``wait_replicas`` above 0 every write is its script then ``WAIT`` on the
same connection (:mod:`vinespy.storage.replicated`), and returns only once
that many replicas have it; else it raises
:class:`~vinespy.storage.NotReplicated` after the write (the primary keeps
it: a retry of the same change applies it again, harmlessly for a publish,
a subscribe or a configure). Reads do not wait.

Failures follow :mod:`vinespy.storage`: a Redis error or an unreachable
server raises :class:`~vinespy.storage.StorageError` (the cause chained),
and so does a value in Redis that this module did not write (corrupt).
Bad arguments raise ValueError or TypeError.
"""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING, Any, Collection, Iterator, Mapping, Sequence

from redis.exceptions import RedisError

from .. import StorageError
from ..replicated import Replicated
from . import AFFILIATIONS, Item, LastItem, PubSubNode, PubSubStore, register

__all__ = ["AFFILIATIONS", "Item", "PubSubNode", "RedisPubSub", "node_key", "nodes_key",
           "service_prefix", "subscriber_key"]

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from redis.commands.core import AsyncScript

ITEM_FORMAT = b"1"           # version tag of an item's stored value

_ESCAPE = re.compile(rb"[%:{}]")

# The time inside a script: ms of Redis TIME, as a decimal string.
_NOW = """
local t = redis.call('TIME')
local now = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
"""

# KEYS: nodes, node, config, affiliations; ARGV: node, owner, option, value...
_CREATE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
""" + _NOW + """
redis.call('DEL', KEYS[3], KEYS[4])
redis.call('HSET', KEYS[2], 'owner', ARGV[2], 'created', now, 'seq', 0)
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[4], ARGV[2], 'owner')
redis.call('SADD', KEYS[1], ARGV[1])
return 1
"""

# KEYS: nodes, node, config, affiliations, subscriptions, order, items;
# ARGV: node, prefix of the subscriber index keys. The index entries are
# named as _key_part() names them in Python.
_DELETE = """
local function enc(s)
  return (string.gsub(s, '[%%:{}]', function(c) return string.format('%%%02X', string.byte(c)) end))
end
local existed = redis.call('SREM', KEYS[1], ARGV[1]) + redis.call('EXISTS', KEYS[2])
for _, jid in ipairs(redis.call('HKEYS', KEYS[5])) do
  redis.call('HDEL', ARGV[2] .. enc(jid), ARGV[1])
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7])
if existed > 0 then return 1 end
return 0
"""

# KEYS: node, config; ARGV: option, value...
_CONFIGURE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('DEL', KEYS[2])
for i = 1, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
return 1
"""

# KEYS: node, affiliations; ARGV: jid, affiliation ('' removes)
_AFFILIATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
end
return 1
"""

# KEYS: node, subscriptions, subscriber index; ARGV: node, jid, subid
_SUBSCRIBE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
return 1
"""

# KEYS: subscriptions, subscriber index; ARGV: node, jid
_UNSUBSCRIBE = """
redis.call('HDEL', KEYS[2], ARGV[1])
return redis.call('HDEL', KEYS[1], ARGV[2])
"""

# KEYS: node, order, items; ARGV: item id, publisher, payload, max items (0: no limit).
# A nil reply: no such node. Else the ids evicted, oldest first. Commands
# take at most 1000 arguments from a table here and in _ITEMS (unpack()
# has a limit of a few thousand).
_PUBLISH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
""" + _NOW + """
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('ZADD', KEYS[2], seq, ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], '1:' .. now .. ':' .. #ARGV[2] .. ':' .. ARGV[2] .. ARGV[3])
local evicted = {}
local max = tonumber(ARGV[4])
if max > 0 then
  local extra = redis.call('ZCARD', KEYS[2]) - max
  if extra > 0 then
    evicted = redis.call('ZRANGE', KEYS[2], 0, extra - 1)
    redis.call('ZREMRANGEBYRANK', KEYS[2], 0, extra - 1)
    for i = 1, #evicted, 1000 do
      redis.call('HDEL', KEYS[3], unpack(evicted, i, math.min(i + 999, #evicted)))
    end
  end
end
return evicted
"""

# KEYS: order, items; ARGV: item id
_RETRACT = """
local n = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return n
"""

# KEYS: node, order, items. A nil reply: no such node; else the count purged.
_PURGE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local n = redis.call('ZCARD', KEYS[2])
redis.call('DEL', KEYS[2], KEYS[3])
return n
"""

# KEYS: order, items; ARGV: 'newest', count (0: all) | 'ids', id...
# Reply: id, value (nil if absent), id, value...
_ITEMS = """
local ids
if ARGV[1] == 'newest' then
  ids = redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
else
  ids = {}
  for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
end
local out = {}
for i = 1, #ids, 1000 do
  local last = math.min(i + 999, #ids)
  local values = redis.call('HMGET', KEYS[2], unpack(ids, i, last))
  for j = i, last do
    out[#out + 1] = ids[j]
    out[#out + 1] = values[j - i + 1]
  end
end
return out
"""


def _key_part(name: str) -> bytes:
    """``name`` as one segment of a key: UTF-8 with ``%``, ``:``, ``{`` and
    ``}`` percent-escaped (as ``enc`` in the delete script does)."""
    if not isinstance(name, str):
        raise TypeError(f"expected a str, not {type(name).__name__}")
    return _ESCAPE.sub(lambda m: b"%%%02X" % m.group()[0], name.encode("utf-8"))


def service_prefix(service: str) -> bytes:
    """``pubsub:{s}:``: every key of the service starts so."""
    return b"pubsub:" + _key_part(service) + b":"


def nodes_key(service: str) -> bytes:
    """SET of the service's node names."""
    return service_prefix(service) + b"nodes"


def node_key(service: str, node: str, part: str = "") -> bytes:
    """The node's HASH (``part`` empty) or one of its other keys: ``config``,
    ``affiliations``, ``subscriptions``, ``order``, ``items``."""
    key = service_prefix(service) + b"node:" + _key_part(node)
    return key + b":" + part.encode() if part else key


def subscriber_key(service: str, jid: str) -> bytes:
    """HASH node -> subid of ``jid``'s subscriptions in the service."""
    return service_prefix(service) + b"subscriber:" + _key_part(jid)


@contextlib.contextmanager
def _failures(what: str) -> Iterator[None]:
    """Redis errors (and a server that cannot be reached) as StorageError."""
    try:
        yield
    except (RedisError, OSError) as exc:
        raise StorageError(f"pubsub {what}: Redis failed: {exc}") from exc


def _text(value: Any, what: str) -> str:
    """A reply's bytes as text; StorageError if it is not UTF-8."""
    if isinstance(value, str):              # a client with decode_responses
        return value
    if not isinstance(value, bytes):
        raise StorageError(f"corrupt {what}: expected a string, got {value!r}")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StorageError(f"corrupt {what}: {exc}") from exc


def _raw(value: Any) -> bytes:
    if isinstance(value, str):              # a client with decode_responses
        return value.encode("utf-8")
    if not isinstance(value, bytes):
        raise StorageError(f"corrupt pubsub data: expected a string, got {value!r}")
    return value


def _texts(mapping: Mapping[Any, Any], what: str) -> dict[str, str]:
    return {_text(k, what): _text(v, what) for k, v in mapping.items()}


def _ms(value: Any, what: str) -> int:
    raw = _raw(value)
    if not raw.isdigit():
        raise StorageError(f"corrupt {what}: {raw[:40]!r} is not a time in ms")
    return int(raw)


def _strings(mapping: Mapping[str, str], what: str) -> list[str]:
    """``mapping`` as a flat list of pairs; TypeError unless str -> str."""
    flat: list[str] = []
    for k, v in mapping.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"{what} must map str to str, not {k!r}: {v!r}")
        flat += (k, v)
    return flat


def _item(item_id: str, value: bytes, where: str) -> Item:
    """Parse a stored ``1:{published}:{publisher length}:{publisher}{payload}``."""
    what = f"pubsub item {item_id!r} of {where}"
    fields = value.split(b":", 3)
    if len(fields) != 4 or fields[0] != ITEM_FORMAT:
        raise StorageError(f"corrupt {what}: {value[:60]!r} is not "
                           f"'{ITEM_FORMAT.decode()}:time:length:publisher+payload'")
    _, published, size, rest = fields
    if not published.isdigit() or not size.isdigit():
        raise StorageError(f"corrupt {what}: bad time or length in {value[:60]!r}")
    n = int(size)
    if n > len(rest):
        raise StorageError(f"corrupt {what}: publisher of {n} bytes in {len(rest)}")
    try:
        publisher = rest[:n].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StorageError(f"corrupt {what}: publisher {exc}") from exc
    return Item(id=item_id, payload=rest[n:], publisher=publisher, published=int(published))


@register("redis")
class RedisPubSub(PubSubStore):
    """Pubsub services' nodes, affiliations, subscriptions and items in one
    Redis, shared by every node of a cluster (see the module docstring).

    ``redis`` is a redis-py asyncio client (``connection.connect()``) with
    binary replies (no ``decode_responses``: payloads are bytes); this does
    not close it unless ``owned``. With ``wait_replicas`` above 0 every write
    returns only once that many replicas have it, else raises NotReplicated
    after ``wait_timeout`` seconds (the module docstring).
    """

    def __init__(self, redis: aioredis.Redis, owned: bool = False, wait_replicas: int = 0,
                 wait_timeout: float = 1.0) -> None:
        self.redis = redis
        self._owned = owned         # close() closes the client too
        self._writes = Replicated(redis, wait_replicas, wait_timeout)
        self._create = redis.register_script(_CREATE)
        self._delete = redis.register_script(_DELETE)
        self._configure = redis.register_script(_CONFIGURE)
        self._affiliate = redis.register_script(_AFFILIATE)
        self._subscribe = redis.register_script(_SUBSCRIBE)
        self._unsubscribe = redis.register_script(_UNSUBSCRIBE)
        self._publish = redis.register_script(_PUBLISH)
        self._retract = redis.register_script(_RETRACT)
        self._purge = redis.register_script(_PURGE)
        self._items = redis.register_script(_ITEMS)

    async def _write(self, script: AsyncScript, what: str, keys: list[Any],
                     args: Sequence[Any] = ()) -> Any:
        """The reply of a write script, confirmed by the replicas asked for;
        Redis errors as StorageError, too few replicas as NotReplicated."""
        with _failures(what):
            return await self._writes.run(script, keys, args, f"pubsub {what}")

    # -- nodes ---------------------------------------------------------------

    async def close(self) -> None:
        if self._owned:
            await self.redis.aclose()

    async def create(self, service: str, node: str, owner: str,
                     config: Mapping[str, str]) -> bool:
        """Create ``node`` with ``config``; ``owner`` (a bare JID) gets the
        affiliation "owner". False if the node exists (nothing changes)."""
        args = [node, owner, *_strings(config, "config")]
        done = await self._write(
            self._create, f"create {node!r} of {service!r}",
            keys=[nodes_key(service), node_key(service, node),
                  node_key(service, node, "config"),
                  node_key(service, node, "affiliations")],
            args=args)
        return bool(done)

    async def delete(self, service: str, node: str) -> bool:
        """Remove ``node`` and all of it (config, affiliations, subscriptions
        and their index entries, items). False if there was no such node.
        Whoever must be told reads :meth:`subscriptions` first."""
        done = await self._write(
            self._delete, f"delete {node!r} of {service!r}",
            keys=[nodes_key(service), node_key(service, node),
                  *(node_key(service, node, part) for part in
                    ("config", "affiliations", "subscriptions", "order", "items"))],
            args=[node, service_prefix(service) + b"subscriber:"])
        return bool(done)

    async def nodes(self, service: str) -> list[str]:
        """The names of the service's nodes, sorted."""
        with _failures(f"nodes of {service!r}"):
            names = await self.redis.smembers(nodes_key(service))
        return sorted(_text(n, f"node name of pubsub service {service!r}") for n in names)

    async def get(self, service: str, node: str) -> PubSubNode | None:
        """The node with its owner, config and creation time, or None."""
        with _failures(f"get {node!r} of {service!r}"):
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(node_key(service, node))
                pipe.hgetall(node_key(service, node, "config"))
                meta, config = await pipe.execute()
        if not meta:
            return None
        what = f"pubsub node {node!r} of {service!r}"
        fields = {_raw(k): v for k, v in meta.items()}
        if b"owner" not in fields or b"created" not in fields:
            raise StorageError(f"corrupt {what}: no owner or creation time")
        return PubSubNode(service=service, name=node,
                          owner=_text(fields[b"owner"], what),
                          config=_texts(config, f"config of {what}"),
                          created=_ms(fields[b"created"], f"creation time of {what}"))

    async def configure(self, service: str, node: str, config: Mapping[str, str]) -> bool:
        """Replace the node's config with ``config``; False if no such node."""
        args = _strings(config, "config")
        done = await self._write(
            self._configure, f"configure {node!r} of {service!r}",
            keys=[node_key(service, node), node_key(service, node, "config")], args=args)
        return bool(done)

    # -- affiliations --------------------------------------------------------

    async def affiliations(self, service: str, node: str) -> dict[str, str]:
        """Bare JID -> affiliation (owner, publisher, publish-only, member,
        outcast); empty for a node that does not exist."""
        with _failures(f"affiliations of {node!r} of {service!r}"):
            raw = await self.redis.hgetall(node_key(service, node, "affiliations"))
        what = f"affiliations of pubsub node {node!r} of {service!r}"
        out = _texts(raw, what)
        for jid, affiliation in out.items():
            if affiliation not in AFFILIATIONS:
                raise StorageError(f"corrupt {what}: {jid!r} has {affiliation!r}")
        return out

    async def set_affiliation(self, service: str, node: str, jid: str,
                              affiliation: str | None) -> bool:
        """Give the bare ``jid`` ``affiliation``; None (or "none") removes its
        entry. False if there is no such node. ValueError for an unknown
        affiliation."""
        if affiliation == "none":
            affiliation = None
        if affiliation is not None and affiliation not in AFFILIATIONS:
            raise ValueError(f"unknown pubsub affiliation {affiliation!r}")
        done = await self._write(
            self._affiliate, f"set affiliation on {node!r} of {service!r}",
            keys=[node_key(service, node), node_key(service, node, "affiliations")],
            args=[jid, affiliation or ""])
        return bool(done)

    # -- subscriptions -------------------------------------------------------

    async def subscriptions(self, service: str, node: str) -> dict[str, str]:
        """JID (bare or full) -> subid of the node's subscriptions."""
        with _failures(f"subscriptions of {node!r} of {service!r}"):
            raw = await self.redis.hgetall(node_key(service, node, "subscriptions"))
        return _texts(raw, f"subscriptions of pubsub node {node!r} of {service!r}")

    async def subscribe(self, service: str, node: str, jid: str, subid: str) -> bool:
        """Subscribe ``jid`` with ``subid`` (replacing its subid if it was
        subscribed); False if there is no such node."""
        done = await self._write(
            self._subscribe, f"subscribe to {node!r} of {service!r}",
            keys=[node_key(service, node), node_key(service, node, "subscriptions"),
                  subscriber_key(service, jid)],
            args=[node, jid, subid])
        return bool(done)

    async def unsubscribe(self, service: str, node: str, jid: str) -> bool:
        """Remove ``jid``'s subscription; False if it had none (or no node)."""
        done = await self._write(
            self._unsubscribe, f"unsubscribe from {node!r} of {service!r}",
            keys=[node_key(service, node, "subscriptions"), subscriber_key(service, jid)],
            args=[node, jid])
        return bool(done)

    async def subscriptions_of(self, service: str, jid: str) -> dict[str, str]:
        """Node -> subid of every subscription of ``jid`` (exactly this bare
        or full JID) in the service."""
        with _failures(f"subscriptions of {jid!r} in {service!r}"):
            raw = await self.redis.hgetall(subscriber_key(service, jid))
        return _texts(raw, f"subscriptions of {jid!r} in pubsub service {service!r}")

    # -- items ---------------------------------------------------------------

    async def publish(self, service: str, node: str, item_id: str, payload: bytes,
                      publisher: str, max_items: int | None) -> list[str] | None:
        """Store ``payload`` as item ``item_id`` (replacing one of that id,
        which becomes the newest), then keep only the newest ``max_items``
        (None: no limit). The ids evicted, oldest first; None if there is no
        such node (nothing is stored)."""
        if not isinstance(payload, bytes):
            raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
        if max_items is not None and (not isinstance(max_items, int)
                                      or isinstance(max_items, bool) or max_items < 1):
            raise ValueError(f"max_items must be a positive int or None, not {max_items!r}")
        evicted = await self._write(
            self._publish, f"publish to {node!r} of {service!r}",
            keys=[node_key(service, node), node_key(service, node, "order"),
                  node_key(service, node, "items")],
            args=[item_id, publisher.encode("utf-8"), payload, max_items or 0])
        if evicted is None:
            return None
        return [_text(i, f"item id of pubsub node {node!r}") for i in evicted]

    async def retract(self, service: str, node: str, item_id: str) -> bool:
        """Remove the item; False if there was none (or no node)."""
        done = await self._write(
            self._retract, f"retract from {node!r} of {service!r}",
            keys=[node_key(service, node, "order"), node_key(service, node, "items")],
            args=[item_id])
        return bool(done)

    async def items(self, service: str, node: str, max_items: int | None = None,
                    ids: list[str] | None = None) -> list[Item]:
        """The node's items, newest first (at most ``max_items``); with
        ``ids``, those of them that exist, in the order asked (each once,
        then at most ``max_items``). Empty for a node that does not exist."""
        if max_items is not None and (not isinstance(max_items, int)
                                      or isinstance(max_items, bool) or max_items < 0):
            raise ValueError(f"max_items must be an int >= 0 or None, not {max_items!r}")
        if max_items == 0:
            return []
        args: list[str | int]
        if ids is not None:
            wanted = list(dict.fromkeys(ids))
            if not wanted:
                return []
            args = ["ids", *wanted]
        else:
            args = ["newest", max_items or 0]
        with _failures(f"items of {node!r} of {service!r}"):
            flat = await self._items(
                keys=[node_key(service, node, "order"), node_key(service, node, "items")],
                args=args)
        where = f"pubsub node {node!r} of {service!r}"
        out: list[Item] = []
        for i in range(0, len(flat), 2):
            item_id = _text(flat[i], f"item id of {where}")
            value = flat[i + 1]
            if value is None:
                if ids is not None:
                    continue
                raise StorageError(f"corrupt {where}: item {item_id!r} is listed "
                                   f"but has no value")
            out.append(_item(item_id, _raw(value), where))
        return out[:max_items] if max_items is not None else out

    async def last_items(self, services: Sequence[str], nodes: Collection[str],
                         jid: str) -> list[LastItem]:
        """Two round trips whatever the number of services: one pipeline
        of SMEMBERS (which of ``nodes`` each service has), then one
        MULTI/EXEC reading, per node found, its config, ``jid``'s
        affiliation and its newest item."""
        services = list(dict.fromkeys(services))
        wanted = set(nodes)
        if not services or not wanted:
            return []
        with _failures(f"last items of {len(services)} services"):
            async with self.redis.pipeline(transaction=False) as pipe:
                for service in services:
                    pipe.smembers(nodes_key(service))
                listed = await pipe.execute()
            pairs = [(service, name) for service, names in zip(services, listed)
                     for name in sorted(_text(n, f"node name of pubsub service {service!r}")
                                        for n in names) if name in wanted]
            if not pairs:
                return []
            async with self.redis.pipeline(transaction=True) as pipe:
                for service, name in pairs:
                    pipe.hgetall(node_key(service, name, "config"))
                    pipe.hget(node_key(service, name, "affiliations"), jid)
                    await self._items(keys=[node_key(service, name, "order"),
                                            node_key(service, name, "items")],
                                      args=["newest", 1], client=pipe)
                replies = await pipe.execute()
        out = []
        for i, (service, name) in enumerate(pairs):
            config, aff, newest = replies[3 * i:3 * i + 3]
            if not config:
                continue                    # deleted between the two reads
            where = f"pubsub node {name!r} of {service!r}"
            affiliation = "none" if aff is None else _text(aff, f"affiliation in {where}")
            if affiliation != "none" and affiliation not in AFFILIATIONS:
                raise StorageError(f"corrupt affiliations of {where}: {jid!r} has "
                                   f"{affiliation!r}")
            item = None
            if newest and newest[1] is not None:
                item = _item(_text(newest[0], f"item id of {where}"), _raw(newest[1]), where)
            out.append(LastItem(service, name, _texts(config, f"config of {where}"),
                                affiliation, item))
        return out

    async def purge(self, service: str, node: str) -> int | None:
        """Remove every item of the node; how many there were, or None if
        there is no such node."""
        n = await self._write(
            self._purge, f"purge {node!r} of {service!r}",
            keys=[node_key(service, node), node_key(service, node, "order"),
                  node_key(service, node, "items")])
        return None if n is None else int(n)
