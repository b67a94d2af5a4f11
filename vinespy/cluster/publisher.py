"""Everything a node writes to Redis while serving, in order, coalesced.

Stanzas for other nodes, session-table writes (routing entries, and the
changes of each session's shared set fields, written as deltas) and
invalidations are queued synchronously (never blocking the caller) and
written by one task, one pipelined round trip per flush: while a flush is
in flight the next one accumulates, so under load many stanzas share a
round trip and all the stanzas for one node in a flush become one Redis
Stream entry. A flush that fails (Redis unreachable) is retried with
backoff. Entries for other nodes' inboxes are kept until their receiver
confirms them (:mod:`.confirm`): a retry, Redis trouble, a gap the
receiver reports or a long silence sends every unconfirmed entry again, in
order; sequence numbers let receivers skip an entry they already have, so
nothing is lost (a failover that loses acknowledged writes included) or
duplicated, and order per sender is kept.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import time
from typing import TYPE_CHECKING, Any, Callable

from redis.exceptions import RedisError

from ..fields import SessionField
from ..jid import JID
from ..xml import Element, serialize
from . import keys
from . import wire
from .connection import Link
from .confirm import Gate, Outbox, Sent, parse_confirmation

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from ..sessions import Session

log = logging.getLogger(__name__)

# How many times a stanza has already crossed between nodes (a stanza that
# finds its resource gone is re-routed from there; this bounds the hops).
HOPS: contextvars.ContextVar[int] = contextvars.ContextVar("vinespy_cluster_hops", default=0)

MAX_PENDING = 100_000        # stanzas queued or unconfirmed (while Redis is unreachable...)
MAX_PER_NODE = MAX_PENDING // 4      # of those, for one receiving node (one stuck...)
MAX_ITEMS = 1000             # items per stream entry
ACK_EVERY = 0.1              # s: how often a busy receiver writes its confirmations
FLUSH_TIMEOUT = 5.0          # s for one flush's round trip (then: Redis trouble, retried)

# XADD to a node's inbox only while that node is registered; otherwise the
# items come back to the sender, which handles them as for an absent
# resource (offline storage, error replies) instead of writing them where
# nobody will read them; it gets what the node confirmed of its entries
# (KEYS[3], field ARGV[3]), so that it does not re-route what the node
# delivered before it left.
SEND = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return {redis.call('HGET', KEYS[3], ARGV[3]) or ''}
end
local args = {'XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*'}
for i = 4, #ARGV do args[#args + 1] = ARGV[i] end
redis.call(unpack(args))
return 1
"""

# Unbind: remove the routing entry only if it is still this stream's (a
# newer session of the same full JID, on any node, keeps its own). The
# stream's set of shared set field members (KEYS[3], named by its sid) goes
# in any case.
UNBIND = """
redis.call('SREM', KEYS[2], ARGV[3])
redis.call('DEL', KEYS[3])
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v and cjson.decode(v).sid == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
"""

REDIS_ERRORS = (RedisError, OSError, asyncio.TimeoutError)


def check_cancelled() -> None:
    """COMPAT: redis-py (8.1) can return from a command although the task
    was cancelled meanwhile, swallowing the CancelledError; a loop around
    Redis calls checks after each one, or it would never stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class Backoff:
    """Exponential backoff with full jitter, 0.05 s up to ``cap``."""

    def __init__(self, cap: float = 1.0) -> None:
        self.cap = cap
        self.attempt = 0

    def next(self) -> float:
        self.attempt += 1
        return random.uniform(0, min(self.cap, 0.05 * 2 ** self.attempt))

    def reset(self) -> None:
        self.attempt = 0


class _SetChanges:
    """What changed in one session's shared set fields since the last flush."""

    __slots__ = ("session", "reset", "changes")

    def __init__(self, session: Session) -> None:
        self.session = session
        self.reset = False                      # delete the set first
        self.changes: dict[str, bool] = {}      # "<key> <member>" -> now in the set


class Publisher:
    def __init__(self, redis: aioredis.Redis, node: str, incarnation: str, maxlen: int,
                 undeliverable: Callable[[list[bytes]], None],
                 trouble: Callable[[str, BaseException | None], None]) -> None:
        self.redis = redis
        # The writes go through a connection of the publisher's own (see
        # Link); a flush that takes longer than FLUSH_TIMEOUT fails (retried).
        self.link = Link(redis, FLUSH_TIMEOUT)
        self.node = node
        self.incarnation = incarnation
        self.maxlen = maxlen
        self._undeliverable = undeliverable
        self._trouble = trouble
        self._puts: dict[int, Session] = {}              # id(session) -> session
        self._unbinds: list[tuple[JID, str]] = []
        self._sets: dict[int, _SetChanges] = {}          # id(session) -> its changes
        self._changed: dict[str, None] = {}              # bare JIDs, ordered
        self._events: list[bytes] = []
        self._kept: list[tuple[str, Any]] = []           # keep()/unkeep() commands, in order
        self._inboxes: dict[str, list[bytes]] = {}
        self._seq: dict[str, int] = {}
        self._pending = 0                                # stanzas in _inboxes
        self.outbox = Outbox()                           # written, not yet confirmed
        self._resend: set[str] = set()                   # nodes to send every entry again
        self._resend_all = False
        self._retry = False                              # the batch in flight failed
        self._full_since: dict[str, float] = {}           # node -> refusing since
        self._stale_at: dict[str, float] = {}            # node -> last stale resend
        self._acks: Callable[[], dict[str, str]] | None = None   # ours to write, when due
        self._handled = False                            # the reader handled entries since
        self._acks_written = 0.0
        self._read_at = 0.0                              # when we last read theirs
        self._me = Gate.key(node, incarnation)           # our field in their acks
        self._gap_at: dict[str, tuple[int, float]] = {}  # node -> (seq, when) resent for a gap
        self._batch: list[tuple[str, Any]] | None = None
        self._waiters: list[asyncio.Future[None]] = []         # for the next batch
        self._batch_waiters: list[asyncio.Future[None]] = []   # for the batch in flight
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._holds = 0
        self._unheld = asyncio.Event()
        self._unheld.set()
        self.stanzas_sent = 0
        self.flushes = 0

    # -- queueing (synchronous, never blocks) ----------------------------
    def hold(self) -> None:
        """Write nothing until :meth:`release`: what is queued meanwhile (a
        notification to 1,000 subscribers) goes out together, one stream
        entry per node, however often the caller awaits in between."""
        self._holds += 1
        self._unheld.clear()

    def release(self) -> None:
        self._holds -= 1
        if self._holds <= 0:
            self._holds = 0
            self._unheld.set()

    def _kick(self) -> None:
        self._idle.clear()
        self._wake.set()

    def stanza(self, node: str, target: JID, el: Element) -> bool:
        """Queue ``el`` for ``target`` at ``node``. Past MAX_PENDING stanzas
        waiting to be written or confirmed it is not queued (memory stays
        bounded): it goes back to the router as undeliverable there (offline
        storage, an error reply), with one log line per episode."""
        item = wire.stanza_item(str(target), HOPS.get(), serialize(el))
        queue = self._inboxes.setdefault(node, [])
        waiting = self._pending + self.outbox.stanzas
        if waiting >= MAX_PER_NODE or self._full_since:      # else far below both limits
            mine = len(queue) + self.outbox.stanzas_for(node)
            if waiting >= MAX_PENDING or mine >= MAX_PER_NODE:
                if node not in self._full_since:
                    self._full_since[node] = time.monotonic()
                    log.error("cluster: %d cross-node stanzas (%d for node %s) wait for "
                              "Redis or for their receiver's confirmation; new ones for %s "
                              "are handled as undeliverable (offline storage, errors) until "
                              "they drain", waiting, mine, node, node)
                self._undeliverable([item])
                return False
            if node in self._full_since and mine < MAX_PER_NODE // 2:
                log.warning("cluster: cross-node stanzas for node %s flow again (%.1f s "
                            "refused)", node, time.monotonic() - self._full_since.pop(node))
        queue.append(item)
        self._pending += 1
        self._kick()
        return True

    def confirm_received(self, confirmations: Callable[[], dict[str, str]]) -> None:
        """Write what this node handled of others' entries (at most every
        ACK_EVERY s; the heartbeat writes them too): the smaller the gap
        since the last confirmation, the fewer stanzas a sender re-routes
        if this node dies, that it had already delivered."""
        self._acks = confirmations              # made when written: the latest then
        self._handled = True
        if self._acks_due():
            self._kick()

    def _acks_due(self) -> bool:
        return self._handled and time.monotonic() - self._acks_written >= ACK_EVERY

    @property
    def waiting(self) -> int:
        """Stanzas for other nodes not yet written, or written and unconfirmed."""
        return self._pending + self.outbox.stanzas

    def resend(self, node: str | None = None) -> None:
        """Send every unconfirmed entry for ``node`` (None: every node) again,
        in order, with the next flush."""
        if node is None:
            self._resend_all = True
        else:
            self._resend.add(node)
        self._kick()

    def confirmed(self, node: str, seq: int, gap: bool, gone: bool) -> None:
        """What the heartbeat learnt of ``node``: it handled our entries up to
        ``seq``; ``gap``: it dropped one after a gap (send again); ``gone``:
        it is not registered, so what it did not confirm is handled here as
        undeliverable (it never will)."""
        self.outbox.confirm(node, seq)
        if gone:
            self._give_up(node)
        elif gap:
            # Once per report (it stays in their acks until they write again),
            # or again a second later (the resend itself was lost).
            now = time.monotonic()
            last = self._gap_at.get(node)
            if last is None or last[0] != seq or now - last[1] > 10 * ACK_EVERY:
                self._gap_at[node] = (seq, now)
                self.resend(node)

    def resend_stale(self, age: float) -> None:
        """A safety net: entries unconfirmed for ``age`` s are sent again,
        then again each ``age`` s at most (a receiver that lags must not get
        its whole backlog again with every heartbeat)."""
        now = time.monotonic()
        for node in self.outbox.nodes():
            oldest = max(self.outbox.oldest(node) or now, self._stale_at.get(node, 0.0))
            if now - oldest > age:
                self._stale_at[node] = now
                self.resend(node)

    def _give_up(self, node: str, upto: int | None = None) -> None:
        items = [it for sent in self.outbox.take(node, upto) for it in sent.items]
        if items:
            self._undeliverable(items)

    def close(self, node: str, full: JID, sid: str, condition: str) -> None:
        self._inboxes.setdefault(node, []).append(wire.close_item(str(full), sid, condition))
        self._kick()

    def message(self, node: str, domain: str, name: str, payload: bytes) -> None:
        """A module's message to ``node`` (see :data:`wire.MESSAGE`), in order
        with the stanzas sent there."""
        self._inboxes.setdefault(node, []).append(wire.message_item(domain, name, payload))
        self._kick()

    def keep(self, name: str, items: list[bytes], ttl: float, *, reset: bool = False) -> None:
        """Append ``items`` to the list :func:`keys.kept` ``(name)`` (emptied
        first when ``reset``), which expires ``ttl`` s after the last append."""
        if reset:
            self._kept.append(("del", keys.kept(name)))
        if items:
            self._kept.append(("rpush", (keys.kept(name), items, int(ttl * 1000))))
        self._kick()

    def unkeep(self, name: str) -> None:
        self._kept.append(("del", keys.kept(name)))
        self._kick()

    def put(self, session: Session) -> None:
        """Write ``session``'s routing entry (its state at flush time)."""
        self._puts[id(session)] = session
        self._kick()

    def set_changed(self, session: Session, field: SessionField[Any], member: Any) -> None:
        """``member`` entered or left ``session``'s set ``field`` (None: every
        member it holds now is leaving)."""
        d = self._set_changes(session)
        if member is None:
            for m in field.get(session):
                d.changes[f"{field.key} {m}"] = False
        else:
            d.changes[f"{field.key} {member}"] = member in field.get(session)
        self._kick()

    def rewrite_sets(self, session: Session) -> None:
        """Write ``session``'s shared set fields again, whole (a resync)."""
        d = self._set_changes(session)
        d.reset = True
        d.changes = {f"{key} {m}": True for key, values in session.fields.items()
                     if (f := SessionField.shared_fields.get(key)) is not None and f.is_set
                     for m in values}
        self._kick()

    def _set_changes(self, session: Session) -> _SetChanges:
        d = self._sets.get(id(session))
        if d is None:
            d = self._sets[id(session)] = _SetChanges(session)
        return d

    def unbind(self, session: Session) -> None:
        """Remove ``session``'s routing entry if it is still its own (and its
        set of shared set field members)."""
        self._puts.pop(id(session), None)
        self._sets.pop(id(session), None)
        self._unbinds.append((session.jid, getattr(session, "id", "")))
        self._kick()

    def invalidate(self, bare: JID) -> None:
        self._changed[str(bare)] = None
        self._kick()

    async def user_changed(self, bare: JID, timeout: float = 1.0) -> None:
        """Announce that ``bare``'s stored data changed; return once that is
        in Redis (or after ``timeout`` while Redis is unreachable), so the
        answer to the change does not overtake the news of it."""
        self._events.append(wire.user_item(str(bare)))
        if self._holds:
            self._kick()
            return          # written with the held batch; waiting would stall it
        await self.written(timeout)

    async def written(self, timeout: float) -> bool:
        """Wait until what is queued now is in Redis (True), or ``timeout``
        (False). While held (see :meth:`hold`) it returns False at once:
        the held batch is not written before the holder releases it."""
        if self._holds:
            return False
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._kick()
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def flush(self, timeout: float) -> bool:
        """Wait until everything queued so far is written (or ``timeout``)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    # -- the writer task ---------------------------------------------------
    def _build(self) -> list[tuple[str, Any]]:
        """Turn what is queued into one batch of commands (in write order)."""
        cmds: list[tuple[str, Any]] = []
        for full, sid in self._unbinds:
            cmds.append(("unbind", (full, sid)))
            self._changed[str(full.bare)] = None
        for session in self._puts.values():
            jid = session.jid
            presence = session.presence
            cmds.append(("put", (jid, wire.record(
                self.node, getattr(session, "id", ""), session.available, session.priority,
                serialize(presence) if presence is not None else None, _scalars(session)))))
            self._changed[str(jid.bare)] = None
        for d in self._sets.values():
            cmds += _set_cmds(d)
        cmds += self._kept
        self._kept = []
        now = time.monotonic()
        if self._acks_due() and self._acks is not None:
            acks = self._acks()
            if acks:
                cmds.append(("acks", acks))
            self._handled = False
            self._acks_written = now
        if now - self._read_at >= ACK_EVERY and len(self.outbox):
            # Busy: read what the receivers confirmed now and then, so that
            # what is kept is a fraction of a second of traffic, not a
            # heartbeat's (the heartbeat reads them too, and sees nodes go).
            self._read_at = now
            cmds.append(("confirms", self.outbox.nodes()))
        events = [wire.invalidate_item(b) for b in self._changed] + self._events
        for chunk in _chunks(events):
            cmds.append(("events", self._entry("*", chunk)))
        fresh: list[tuple[str, Sent]] = []
        for node, items in self._inboxes.items():
            for chunk in _chunks(items):
                seq = self._seq.get(node, 0) + 1
                self._seq[node] = seq
                sent = Sent(seq, chunk, sum(1 for it in chunk if it[:1] == wire.STANZA), now)
                self.outbox.add(node, sent)
                fresh.append((node, sent))
        again = set(self.outbox.nodes()) if self._resend_all else self._resend
        if again:
            cmds += self._sends([(n, s) for n, s in self.outbox if n in again]
                                + [(n, s) for n, s in fresh if n not in again])
        else:
            # Nothing to send again: the fresh entries only, without a walk
            # over every unconfirmed one (tens to hundreds per flush under load).
            cmds += self._sends(fresh)
        self._resend, self._resend_all = set(), False
        self._puts, self._unbinds, self._changed, self._events = {}, [], {}, []
        self._sets = {}
        self._inboxes = {}
        self._pending = 0
        self._batch_waiters, self._waiters = self._waiters, []
        return cmds

    def _entry(self, dest: str, items: list[bytes]) -> dict[str, bytes]:
        seq = self._seq.get(dest, 0) + 1
        self._seq[dest] = seq
        return wire.entry(self.node, self.incarnation, seq, items)

    def _sends(self, entries: list[tuple[str, Sent]]) -> list[tuple[str, Any]]:
        """The inbox writes of ``entries`` (each with the receiver's current
        base: a re-sent entry must not ask for entries confirmed since)."""
        return [("send", (node, sent, wire.entry(
                    self.node, self.incarnation, sent.seq, sent.items,
                    self.outbox.base(node, sent.seq))))
                for node, sent in entries]

    async def _execute(self, batch: list[tuple[str, Any]]) -> list[Any]:
        cmds: list[tuple[Any, ...]] = []
        add = cmds.append
        for kind, arg in batch:
            if kind == "send":          # first: the hot path (a flush of stanzas)
                node, _, fields = arg
                flat: list[Any] = []
                for k, v in fields.items():
                    flat += (k, v)
                add(("EVAL", SEND, 3, keys.NODES, keys.inbox(node), keys.acks(node), node,
                     self.maxlen, self._me, *flat))
            elif kind == "put":
                jid, rec = arg
                add(("HSET", keys.sessions(str(jid.bare)), jid.resource, rec))
                add(("SADD", keys.node_jids(self.node), str(jid)))
            elif kind == "unbind":
                full, sid = arg
                add(("EVAL", UNBIND, 3, keys.sessions(str(full.bare)),
                     keys.node_jids(self.node), keys.sets(sid), full.resource, sid, str(full)))
            elif kind == "del":
                add(("DEL", arg))
            elif kind == "rpush":
                key, items, ttl = arg
                add(("RPUSH", key, *items))
                add(("PEXPIRE", key, ttl))
            elif kind == "sadd":
                add(("SADD", arg[0], *arg[1]))
            elif kind == "srem":
                add(("SREM", arg[0], *arg[1]))
            elif kind == "acks":
                add(("HSET", keys.acks(self.node), *[x for kv in arg.items() for x in kv]))
            elif kind == "confirms":
                for node in arg:
                    add(("HGET", keys.acks(node), self._me))
            elif kind == "events":
                add(("XADD", keys.EVENTS, "MAXLEN", "~", self.maxlen, "*",
                     *[x for kv in arg.items() for x in kv]))
            else:
                raise ValueError(f"unknown publisher command {kind!r}")
        return await self.link.execute(cmds)

    async def run(self) -> None:
        backoff = Backoff()
        while True:
            if self._batch is None:
                if not (self._puts or self._unbinds or self._changed or self._events
                        or self._inboxes or self._sets or self._kept or self._waiters
                        or self._resend or self._resend_all or self._acks_due()):
                    self._idle.set()
                    self._wake.clear()
                    await self._wake.wait()
                await self._unheld.wait()
                self._batch = self._build()
            elif self._retry:
                # What the failed attempt may have written can be lost (a
                # failover): every unconfirmed entry goes again, in order.
                self._batch = ([c for c in self._batch if c[0] != "send"]
                               + self._sends(list(self.outbox)))
                self._retry = False
            try:
                results = await self._execute(self._batch)
            except REDIS_ERRORS as exc:
                check_cancelled()
                self._trouble("publisher", exc)
                self._retry = True
                await asyncio.sleep(backoff.next())
                continue
            check_cancelled()
            backoff.reset()
            self._trouble("publisher", None)
            batch, self._batch = self._batch, None
            self.flushes += 1
            self._done(batch, results)
            for fut in self._batch_waiters:
                if not fut.done():
                    fut.set_result(None)
            self._batch_waiters = []

    def _done(self, batch: list[tuple[str, Any]], results: list[Any]) -> None:
        i = 0
        for kind, arg in batch:
            n = 2 if kind in ("put", "rpush") else len(arg) if kind == "confirms" else 1
            res = results[i:i + n]
            i += n
            if any(isinstance(r, Exception) for r in res):
                log.error("Redis refused a %s write: %s", kind,
                          next(r for r in res if isinstance(r, Exception)))
            elif kind == "confirms":
                for node, raw in zip(arg, res):
                    self.confirmed(node, *parse_confirmation(raw), gone=False)
            if kind != "send":
                continue
            node, sent, _ = arg
            if res and isinstance(res[0], list):
                # The node is gone: these (and what it did not confirm before)
                # are for resources that no longer exist.
                self.outbox.confirm(node, parse_confirmation(res[0][0])[0])
                self._give_up(node, sent.seq)
            elif res and not isinstance(res[0], Exception):
                self.stanzas_sent += sent.stanzas


def _scalars(session: Session) -> dict[str, Any]:
    """``session``'s shared scalar fields, for its routing entry."""
    shared = SessionField.shared_fields
    return {key: value for key, value in session.fields.items()
            if (f := shared.get(key)) is not None and not f.is_set}


def _set_cmds(d: _SetChanges) -> list[tuple[str, Any]]:
    """The commands that bring a session's set of shared set field members up to date."""
    key = keys.sets(getattr(d.session, "id", ""))
    cmds: list[tuple[str, Any]] = [("del", key)] if d.reset else []
    added = [j for j, now in d.changes.items() if now]
    removed = [j for j, now in d.changes.items() if not now]
    if added:
        cmds.append(("sadd", (key, added)))
    if removed and not d.reset:
        cmds.append(("srem", (key, removed)))
    return cmds


def _chunks(items: list[bytes]) -> list[list[bytes]]:
    return [items[i:i + MAX_ITEMS] for i in range(0, len(items), MAX_ITEMS)]
