"""The cluster-wide routing table: local sessions plus cached remote ones.

Local sessions are the truth of this node and live in memory (the base
:class:`~vinespy.sessions.Sessions`); each change is queued for Redis
(``sessions:{bare}``, ``cluster:node:{id}:jids``). Other nodes' resources of
a bare JID are read from Redis once, kept as :class:`StreamProxy` objects,
and forgotten when an invalidation for that bare JID arrives (or after
``route_cache_ttl`` as a safety net), so routing to a known user costs no
Redis round trip. The router calls :meth:`load` (one pipelined round trip
for any number of bare JIDs not cached) before it looks anything up; the
lookups themselves stay synchronous.

Two more things modules may need of the cluster: :meth:`published` (the
changes this node noted are in Redis, so any node reading now sees them)
and :meth:`exclusive` (a section one task of the whole cluster runs at a
time, a Redis lock with a token and a TTL).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterable, Iterator

from ..fields import SessionField
from ..jid import JID, JIDError
from ..sessions import Session, Sessions
from ..xml import serialize
from . import keys
from . import wire
from .proxy import StreamProxy
from .publisher import REDIS_ERRORS, check_cancelled

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from .publisher import Publisher

log = logging.getLogger(__name__)

CACHE_MAX = 100_000             # bare JIDs whose remote resources are cached
LOAD_TIMEOUT = 2.0              # s; then route with what is known (local + stale)
FORWARD_FOR = 10.0               # s a handed-over session's stanzas are forwarded
LOCK_TTL_MS = 10_000            # an exclusive() holder that died frees it after this

# Release a lock only if it is still ours (it may have expired and been taken).
UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_Remote = dict[str, StreamProxy]


class ClusterSessions(Sessions):
    clustered = True

    def __init__(self, node: str, ttl: float) -> None:
        super().__init__()
        self.node = node
        self.ttl = ttl
        self.redis: aioredis.Redis | None = None
        self.publisher: Publisher | None = None
        self._remote: dict[JID, tuple[float, _Remote]] = {}
        self._loading: dict[JID, asyncio.Future[None]] = {}
        self._dirty: set[JID] = set()       # invalidated while a load was in flight
        # Sessions handed over to another node: full JID -> (proxy there, end).
        self._forwards: dict[JID, tuple[StreamProxy, asyncio.TimerHandle]] = {}
        self.loads = 0                      # round trips made by load()
        self.down_since: float | None = None   # monotonic time Redis was lost (set by Cluster)
        self.wait_for_redis = 2.0           # s a lookup waits for an unreachable Redis

    # -- lookups (synchronous; remote entries as last loaded) ---------------
    def _remote_of(self, bare: JID) -> _Remote:
        hit = self._remote.get(bare)
        return hit[1] if hit is not None else {}

    def get(self, full: JID) -> Session | None:
        s = self._full.get(full)
        if s is not None:
            return s
        s = self._remote_of(full.bare).get(full.resource)
        if s is None and self._forwards:
            return self.forwarding(full)
        return s

    def resources(self, bare: JID) -> list[Session]:
        out: list[Session] = list(self._bare.get(bare, {}).values())
        remote = self._remote_of(bare)
        if remote:
            local = self._bare.get(bare, {})
            out += [p for r, p in remote.items() if r not in local]
        if self._forwards:
            # Handed over, not yet in the routes read: where it went.
            have = {s.jid for s in out}
            out += [p for full, (p, _) in self._forwards.items()
                    if full.bare == bare and full not in have]
        return out

    def available(self, bare: JID) -> list[Session]:
        return [s for s in self.resources(bare) if s.available]

    def count(self, bare: JID) -> int:
        return len(self.resources(bare))

    # -- the cache ------------------------------------------------------------
    def missing(self, bares: Iterable[JID]) -> list[JID]:
        """Those of ``bares`` whose remote resources are not freshly cached."""
        now = time.monotonic()
        remote = self._remote
        out = []
        for b in bares:
            hit = remote.get(b)
            if hit is None or hit[0] < now:
                out.append(b)
        return out

    async def load(self, bares: Iterable[JID], *, fresh: bool = False) -> None:
        """Make sure the remote resources of ``bares`` are known: one
        pipelined round trip for all that are not cached (all when
        ``fresh``). On a Redis failure, what was cached stays in use."""
        want = list(dict.fromkeys(bares)) if fresh else self.missing(dict.fromkeys(bares))
        if not want or self.redis is None:
            return
        waits = [self._loading[b] for b in want if b in self._loading and not fresh]
        todo = [b for b in want if b not in self._loading or fresh]
        if todo:
            fut = asyncio.get_running_loop().create_future()
            for b in todo:
                self._loading[b] = fut
                self._dirty.discard(b)
            try:
                await self._fetch(todo)
            finally:
                for b in todo:
                    if self._loading.get(b) is fut:
                        del self._loading[b]
                fut.set_result(None)
        for w in waits:
            await w

    async def _fetch(self, bares: list[JID]) -> None:
        """Read the routing entries of ``bares``. While Redis is unreachable
        this retries (up to ``wait_for_redis`` s: only the stanza's own
        stream waits, never the event loop), since "no route known" would
        send a message for a remote user to offline storage; after that,
        what is cached (even expired) is used. Once Redis has been lost for
        longer than that, lookups no longer wait at all."""
        assert self.redis is not None and self.publisher is not None
        deadline = (self.down_since or time.monotonic()) + self.wait_for_redis
        pause = 0.02
        while True:
            pipe = self.redis.pipeline(transaction=False)
            for b in bares:
                pipe.hgetall(keys.sessions(str(b)))
            try:
                results = await asyncio.wait_for(
                    pipe.execute(), max(0.05, min(LOAD_TIMEOUT, deadline - time.monotonic())))
                break
            except REDIS_ERRORS as exc:
                if time.monotonic() >= deadline:
                    log.debug("route lookup failed (%s); routing with what is cached", exc)
                    return
                await asyncio.sleep(pause)
                pause = min(0.5, pause * 2)
        self.loads += 1
        expires = time.monotonic() + self.ttl
        for bare, fields in zip(bares, results):
            remote: _Remote = {}
            for res, raw in fields.items():
                try:
                    rec = wire.parse_record(raw)
                    resource = res.decode()
                    if rec.node == self.node:
                        continue            # ours: the local table is the truth
                    remote[resource] = StreamProxy(bare.with_resource(resource), rec,
                                                   self.publisher)
                except (wire.WireError, UnicodeDecodeError, JIDError) as exc:
                    log.warning("skipping a bad routing entry of %s: %s", bare, exc)
            if bare in self._dirty:
                # Changed while we read it: read it again before the next use.
                self._dirty.discard(bare)
                self._remote.pop(bare, None)
                self._remote[bare] = (0.0, remote)
                continue
            if self.ttl > 0:
                self._remote.pop(bare, None)
                self._remote[bare] = (expires, remote)
            else:
                # No caching: keep it only until the next lookup asks again.
                self._remote[bare] = (0.0, remote)
        while len(self._remote) > CACHE_MAX:
            del self._remote[next(iter(self._remote))]

    def invalidate(self, bare: JID) -> None:
        """``bare``'s routes changed: read them again before the next use
        (what was known stays the fallback while Redis cannot be read)."""
        hit = self._remote.get(bare)
        if hit is not None:
            self._remote[bare] = (0.0, hit[1])
        if bare in self._loading:
            self._dirty.add(bare)

    def forget(self, node: str | None = None) -> None:
        """Expire every cached route (read again before the next use, still
        used if Redis cannot be read), or drop those of a dead ``node``."""
        if node is None:
            self._remote = {b: (0.0, r) for b, (_, r) in self._remote.items()}
            self._dirty.update(self._loading)
            return
        for bare, (_, remote) in list(self._remote.items()):
            if any(p.node == node for p in remote.values()):
                del self._remote[bare]

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        publisher = self.publisher
        if publisher is None:
            yield
            return
        publisher.hold()
        try:
            yield
        finally:
            publisher.release()

    # -- local changes, queued for Redis ---------------------------------------
    def bind(self, session: Session) -> Session | None:
        old = super().bind(session)
        if self.publisher is not None:
            self.publisher.put(session)
        return old

    def adopt(self, session: Session) -> None:
        self.bind(session)
        if self.publisher is not None:
            self.publisher.rewrite_sets(session)

    def hand_over(self, session: Session, node: str, sid: str) -> None:
        """Out of the local table at once; what still comes here for it is
        forwarded to ``node`` (in order, after the handover) until every node
        routes there: for :data:`FORWARD_FOR` s, after which its routing
        entry goes (if still its own: by then ``node`` wrote its own)."""
        if not Sessions.unbind(self, session) or self.publisher is None:
            return
        presence = session.presence
        rec = wire.Record(node, sid, session.available, session.priority,
                          serialize(presence) if presence is not None else None)
        proxy = StreamProxy(session.jid, rec, self.publisher)
        proxy.fields = {k: v for k, v in session.fields.items()
                        if k in SessionField.shared_fields}
        old = self._forwards.pop(session.jid, None)
        if old is not None:
            old[1].cancel()
        loop = asyncio.get_running_loop()
        self._forwards[session.jid] = (proxy, loop.call_later(
            FORWARD_FOR, self._forwarded, session))

    def _forwarded(self, session: Session) -> None:
        self._forwards.pop(session.jid, None)
        if self.publisher is not None:
            self.publisher.unbind(session)

    def forwarding(self, full: JID) -> Session | None:
        hit = self._forwards.get(full)
        return hit[0] if hit is not None else None

    def end_forwards(self) -> None:
        """Leaving the cluster (whose cleanup removes this node's entries
        that are still its own): the forwards end."""
        for _, timer in self._forwards.values():
            timer.cancel()
        self._forwards = {}

    def keep(self, name: str, items: list[bytes], ttl: float, *, reset: bool = False) -> None:
        if self.publisher is not None:
            self.publisher.keep(name, items, ttl, reset=reset)

    def unkeep(self, name: str) -> None:
        if self.publisher is not None:
            self.publisher.unkeep(name)

    async def take_kept(self, name: str) -> list[bytes]:
        if self.redis is None:
            return []
        await self.published()          # what this node kept, written first
        pipe = self.redis.pipeline(transaction=True)
        pipe.lrange(keys.kept(name), 0, -1)
        pipe.delete(keys.kept(name))
        try:
            items, _ = await pipe.execute()
        except REDIS_ERRORS as exc:
            log.warning("could not read what %s kept (%s): it expires", name, exc)
            return []
        return list(items)

    def tell(self, node: str, domain: str, name: str, payload: bytes) -> None:
        if self.publisher is not None:
            self.publisher.message(node, domain, name, payload)

    def unbind(self, session: Session) -> bool:
        if not super().unbind(session):
            return False
        if self.publisher is not None:
            self.publisher.unbind(session)
        return True

    def changed(self, session: Session) -> None:
        if self.publisher is not None and self._full.get(session.jid) is session:
            self.publisher.put(session)

    def field_changed(self, session: Session, field: SessionField[Any], member: Any) -> None:
        """A shared scalar rewrites the session's routing entry; a shared set
        costs one SADD/SREM of the session's own set, not a rewrite of the
        entry (which every node reads) nor an invalidation."""
        if (self.publisher is None or not field.shared
                or self._full.get(session.jid) is not session):
            return
        if field.is_set:
            self.publisher.set_changed(session, field, member)
        else:
            self.publisher.put(session)

    # -- for modules: ordering and mutual exclusion across nodes -----------------
    def _redis_budget(self) -> float:
        """Seconds left to wait for Redis: ``wait_for_redis`` from when it was lost."""
        return (self.down_since or time.monotonic()) + self.wait_for_redis - time.monotonic()

    async def published(self) -> None:
        """Return once what this node queued for Redis so far is written (or,
        Redis unreachable, after what is left of ``wait_for_redis``)."""
        if self.publisher is not None:
            await self.publisher.written(max(0.05, self._redis_budget()))

    @contextlib.asynccontextmanager
    async def binding(self, bare: JID) -> AsyncIterator[None]:
        """The binds of one account, one at a time in the whole cluster: the
        next bind (on any node) starts only once this one's routing entry is
        in Redis, so its fresh read of the account's resources sees it
        (conflicts, max_resources_per_account)."""
        async with super().binding(bare), self.exclusive(f"bind:{bare}"):
            yield
            await self.published()

    @contextlib.asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[None]:
        """One holder of ``name`` in the whole cluster (``SET NX PX`` with a
        token of ours). A holder that dies frees it after LOCK_TTL_MS. While
        Redis is unreachable it is entered without the lock after
        ``wait_for_redis`` (each node then serializes only its own tasks)."""
        token = secrets.token_hex(8)
        key = keys.lock(name)
        held = await self._lock(key, token)
        try:
            yield
        finally:
            if held:
                assert self.redis is not None
                try:
                    await self.redis.eval(UNLOCK, 1, key, token)
                except REDIS_ERRORS as exc:
                    log.debug("could not release %s (%s): it expires", key, exc)

    async def _lock(self, key: str, token: str) -> bool:
        if self.redis is None:
            return False
        pause = 0.002
        while True:
            try:
                if await self.redis.set(key, token, nx=True, px=LOCK_TTL_MS):
                    return True
                check_cancelled()
            except REDIS_ERRORS as exc:
                check_cancelled()
                if self._redis_budget() <= 0:
                    log.debug("%s entered without the lock: Redis unreachable (%s)", key, exc)
                    return False
            await asyncio.sleep(pause)      # held elsewhere (or Redis blipped): again
            pause = min(0.05, pause * 2)
