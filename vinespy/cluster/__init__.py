"""Clustering: many vinespy nodes serving the same domains through one Redis.

:class:`Cluster` owns a node's part: registration and heartbeats (Redis
server time), failure detection and the atomic cleanup of dead nodes,
self-fencing, the publisher and the subscriber tasks. The routing table is
:class:`~vinespy.cluster.sessions.ClusterSessions`; the router never knows
more than that some sessions are :class:`~vinespy.cluster.proxy.StreamProxy`
objects. docs/cluster.md describes the data model and the guarantees.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import secrets
import socket
import time
from typing import TYPE_CHECKING, Any

from ..config import ConfigError
from ..errors import StreamError
from ..jid import JID, JIDError
from . import connection as keys
from . import wire
from .proxy import StreamProxy
from .publisher import HOPS, REDIS_ERRORS, Backoff, Publisher, check_cancelled
from .sessions import ClusterSessions
from .status import hide_passwords, safe_url
from .subscriber import BLOCK_MS, Subscriber, parse_xrange

if TYPE_CHECKING:
    from ..config import ClusterConfig
    from ..server import Server

log = logging.getLogger("vinespy.cluster")

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: nodes, node info. ARGV: node, incarnation, sessions, acked inbox id, dead ms.
# Renews this node's heartbeat unless the node was removed (declared dead,
# or Redis lost its data): then 'gone'. Returns the nodes now silent too long.
HEARTBEAT = _NOW + """
if redis.call('HGET', KEYS[2], 'incarnation') ~= ARGV[2]
    or redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return {'gone'}
end
redis.call('HSET', KEYS[1], ARGV[1], now)
redis.call('HSET', KEYS[2], 'sessions', ARGV[3], 'acked', ARGV[4])
local out = {'ok'}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if now - tonumber(all[i + 1]) > tonumber(ARGV[5]) then out[#out + 1] = all[i] end
end
return out
"""

# KEYS: nodes, node info. ARGV: node, incarnation, pid, host, sessions.
REGISTER = _NOW + """
redis.call('HSET', KEYS[1], ARGV[1], now)
redis.call('HSET', KEYS[2], 'incarnation', ARGV[2], 'pid', ARGV[3], 'host', ARGV[4],
           'sessions', ARGV[5], 'started', now)
return now
"""

# KEYS: nodes, node info, node jids, node inbox. ARGV: node, dead ms, mode, incarnation.
# Removes a node and its routing entries (with each one's directed-presence
# set) at once and returns them, as {full, record, {directed JIDs}}, with the
# inbox entries it had not read: mode 'dead' only if it is still silent
# (so of several nodes cleaning up concurrently exactly one gets them),
# mode 'self' for a node's own previous incarnation (refused with 'busy'
# while another incarnation of the same node id is alive), 'force' for one
# known to be dead (its process is gone).
CLEANUP = _NOW + """
local hb = redis.call('HGET', KEYS[1], ARGV[1])
local inc = redis.call('HGET', KEYS[2], 'incarnation')
if ARGV[3] == 'dead' then
  if not hb or now - tonumber(hb) <= tonumber(ARGV[2]) then return false end
elseif ARGV[3] == 'self' and hb and inc and inc ~= ARGV[4]
    and now - tonumber(hb) <= tonumber(ARGV[2]) then
  return {'busy', tostring(now - tonumber(hb)), redis.call('HGET', KEYS[2], 'pid') or '',
          redis.call('HGET', KEYS[2], 'host') or ''}
end
local acked = redis.call('HGET', KEYS[2], 'acked') or '0-0'
redis.call('HDEL', KEYS[1], ARGV[1])
local removed = {}
for _, full in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local slash = string.find(full, '/', 1, true)
  if slash then
    local key = 'sessions:' .. string.sub(full, 1, slash - 1)
    local res = string.sub(full, slash + 1)
    local v = redis.call('HGET', key, res)
    if v then
      local ok, rec = pcall(cjson.decode, v)
      if ok and type(rec) == 'table' and rec.node == ARGV[1] then
        redis.call('HDEL', key, res)
        local dkey = 'cluster:directed:' .. tostring(rec.sid)
        removed[#removed + 1] = {full, v, redis.call('SMEMBERS', dkey)}
        redis.call('DEL', dkey)
      end
    end
  end
end
local rest = redis.call('XRANGE', KEYS[4], '(' .. acked, '+')
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
return {'done', removed, rest}
"""

# KEYS: sessions:{bare}, node jids. ARGV: resource, node, full.
# A routing entry this node no longer has a session for (resync).
FORGET = """
redis.call('SREM', KEYS[2], ARGV[3])
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then
  local ok, rec = pcall(cjson.decode, v)
  if ok and type(rec) == 'table' and rec.node == ARGV[2] then
    redis.call('HDEL', KEYS[1], ARGV[1])
    redis.call('DEL', 'cluster:directed:' .. tostring(rec.sid))
  end
end
return 0
"""

MAX_HOPS = 3


class Cluster:
    def __init__(self, cfg: ClusterConfig, server: Server) -> None:
        self.cfg = cfg
        self.server = server
        self.node = cfg.node
        self.incarnation = secrets.token_hex(8)
        self.sessions = ClusterSessions(cfg.node, cfg.route_cache_ttl)
        self.sessions.wait_for_redis = cfg.dead_after
        self.redis: Any = None
        self.publisher: Publisher | None = None
        self.subscriber: Subscriber | None = None
        self.registered = False
        self._ever_registered = False
        self._registered: asyncio.Event | None = None
        self.last_ok = 0.0
        self._reap_after = 0.0
        self._troubles: set[str] = set()
        self._tasks: list[asyncio.Task[Any]] = []
        self._jobs: set[asyncio.Task[Any]] = set()
        self._url = safe_url(cfg.url)

    # -- lifecycle ----------------------------------------------------------
    async def start(self) -> None:
        """Connect and register (before the listeners open). Redis down is
        not fatal: the node serves its own users and registers later. Raises
        StartupError if another live process uses this node id."""
        cfg = self.cfg
        self._registered = asyncio.Event()
        self.redis = keys.connect(cfg)
        reader = keys.connect(cfg, single=True, socket_timeout=BLOCK_MS / 1000 + 5)
        self.publisher = Publisher(self.redis, self.node, self.incarnation, cfg.inbox_maxlen,
                                   self._undeliverable, self._trouble)
        self.subscriber = Subscriber(reader, self.node, self.incarnation, self._item,
                                     self._trouble)
        self.sessions.redis = self.redis
        self.sessions.publisher = self.publisher
        try:
            await asyncio.wait_for(self._register(), cfg.dead_after + 10 * cfg.heartbeat + 5)
        except REDIS_ERRORS as exc:
            self._trouble("heartbeat", exc)

    def spawn(self, tg: asyncio.TaskGroup) -> None:
        assert self.publisher is not None and self.subscriber is not None
        self._tasks = [
            tg.create_task(self.publisher.run(), name="cluster-publisher"),
            tg.create_task(self.subscriber.run(self._wait_registered), name="cluster-subscriber"),
            tg.create_task(self._heartbeat(), name="cluster-heartbeat"),
        ]

    async def stop(self) -> None:
        """After the streams closed (their unbinds and unavailable presence
        queued): write it all, hand on what is left in the inbox, leave."""
        assert self.publisher is not None and self.subscriber is not None
        await self.publisher.flush(2.0)
        # No more heartbeats (a stopping node must not re-register itself)
        # and no more reading; then leave.
        await _cancel(self._tasks[1:], self.subscriber.redis)
        if self.registered:
            try:
                await self.redis.hset(keys.node_info(self.node), "acked",
                                      self.subscriber.last_inbox)
                res = await self._cleanup(self.node, "self")
                if res is not None:
                    await self._gone(self.node, res)
                await self.publisher.flush(2.0)
            except REDIS_ERRORS as exc:
                log.warning("cluster: could not deregister from %s: %s", self._url, exc)
        await _cancel(self._tasks[:1] + list(self._jobs), self.redis)
        for client in (self.redis, self.subscriber.redis):
            try:
                await client.aclose()
            except Exception:       # closing a broken connection: nothing to do
                pass

    async def _wait_registered(self) -> None:
        assert self._registered is not None
        await self._registered.wait()

    # -- registration, heartbeats, fencing ------------------------------------
    async def _register(self) -> None:
        cfg = self.cfg
        if not self._ever_registered:
            deadline = time.monotonic() + cfg.dead_after + 2 * cfg.heartbeat
            while True:
                res = await self._cleanup(self.node, "self")
                if res is None or res[0] != b"busy":
                    break
                if res[3].decode() == socket.gethostname() and not _pid_alive(int(res[2] or 0)):
                    # Our previous incarnation on this machine, killed: its
                    # heartbeat is fresh but nobody will renew it.
                    res = await self._cleanup(self.node, "force")
                    break
                if time.monotonic() > deadline:
                    raise ConfigError(
                        f"cluster node id {self.node!r} is in use by a running node (pid "
                        f"{res[2].decode() or '?'} on {res[3].decode() or '?'}, last heartbeat "
                        f"{res[1].decode()} ms ago): give each node its own [cluster] node")
                await asyncio.sleep(cfg.heartbeat)
            last = await self.redis.xrevrange(keys.EVENTS, count=1)
            assert self.subscriber is not None
            self.subscriber.last_events = last[0][0] if last else b"0-0"
            self.subscriber.last_inbox = b"0-0"
            if res is not None:
                await self._gone(self.node, res)
        await self.redis.eval(REGISTER, 2, keys.NODES, keys.node_info(self.node), self.node,
                              self.incarnation, os.getpid(), socket.gethostname(),
                              len(self.sessions))
        await self._resync()
        recovered = self._ever_registered
        self.registered = self._ever_registered = True
        assert self._registered is not None
        self._registered.set()
        self.last_ok = time.monotonic()
        self._reap_after = self.last_ok + cfg.dead_after
        log.info("cluster: node %s %s at %s", self.node,
                 "re-registered" if recovered else "registered", self._url)
        if recovered:
            self._job(self._rebroadcast())

    async def _resync(self) -> None:
        """Make Redis hold exactly this node's live sessions."""
        assert self.publisher is not None
        local = {str(s.jid): s for s in self.sessions}
        stored = await self.redis.smembers(keys.node_jids(self.node))
        pipe = self.redis.pipeline(transaction=False)
        for raw in stored:
            full = raw.decode()
            if full not in local:
                bare, _, res = full.partition("/")
                pipe.eval(FORGET, 2, keys.sessions(bare), keys.node_jids(self.node), res,
                          self.node, full)
        await pipe.execute()
        for s in local.values():
            self.publisher.put(s)
            self.publisher.rewrite_directed(s)
        self.sessions.forget()

    async def _rebroadcast(self) -> None:
        """Back after being declared dead: our users' contacts were told they
        left, and messages for them may have gone to offline storage. Each
        available resource's presence is routed again as initial presence
        (RFC 6121 §4.2): broadcast to its contacts, probes for theirs, and
        offline messages delivered."""
        for s in list(self.sessions):
            presence = s.presence
            if s.available and presence is not None:
                st = copy.deepcopy(presence)
                for attr in ("to", "id"):
                    if attr in st.attrib:
                        del st.attrib[attr]
                s.available = False         # so the presence module treats it as initial
                await self.server.router.route(st, s)

    async def _heartbeat(self) -> None:
        cfg = self.cfg
        backoff = Backoff(cap=cfg.heartbeat)
        while True:
            delay = cfg.heartbeat
            try:
                if self.registered:
                    await self._beat()
                else:
                    await self._register()
                self._trouble("heartbeat", None)
                backoff.reset()
            except REDIS_ERRORS as exc:
                self._trouble("heartbeat", exc)
                delay = backoff.next()
            except ConfigError as exc:
                log.error("cluster: %s", exc)
            check_cancelled()
            if self.registered and time.monotonic() - self.last_ok > cfg.dead_after:
                self._fence(f"no heartbeat written for {time.monotonic() - self.last_ok:.1f} s")
            await asyncio.sleep(delay)

    async def _beat(self) -> None:
        cfg = self.cfg
        assert self.subscriber is not None
        if time.monotonic() - self.last_ok > cfg.dead_after:
            # Paused or cut off longer than the timeout: others may have
            # removed us; do not trust our routes until Redis says.
            self._fence(f"no heartbeat written for {time.monotonic() - self.last_ok:.1f} s")
            await self._register()
            return
        res = await self.redis.eval(HEARTBEAT, 2, keys.NODES, keys.node_info(self.node),
                                    self.node, self.incarnation, len(self.sessions),
                                    self.subscriber.last_inbox, int(cfg.dead_after * 1000))
        if res[0] == b"gone":
            self._fence("this node was declared dead or Redis lost its entry")
            await self._register()
            return
        self.last_ok = time.monotonic()
        if self.last_ok < self._reap_after:
            return      # just (re)connected: give the others time to beat first
        for raw in res[1:]:
            node = raw.decode()
            if node == self.node:
                continue
            done = await self._cleanup(node, "dead")
            if done is not None:
                await self._gone(node, done)

    def _fence(self, why: str) -> None:
        if not self.registered:
            return
        log.warning("cluster: node %s fenced (%s): re-registering its sessions", self.node, why)
        self.registered = False
        assert self._registered is not None
        self._registered.clear()
        self.sessions.forget()

    def _trouble(self, part: str, exc: BaseException | None) -> None:
        """One line when Redis is lost, one when it is back."""
        if exc is not None:
            if not self._troubles:
                log.error("cluster: lost Redis at %s (%s: %s); serving local users, "
                          "reconnecting with backoff", self._url, type(exc).__name__,
                          hide_passwords(str(exc), self.cfg))
                self.sessions.down_since = time.monotonic()
            self._troubles.add(part)
        elif part in self._troubles:
            self._troubles.discard(part)
            if not self._troubles:
                log.warning("cluster: Redis at %s is reachable again", self._url)
                self.sessions.down_since = None
                self.sessions.forget()
                self._reap_after = time.monotonic() + self.cfg.dead_after
                if self.registered:
                    self._job(self._resync_quietly())

    async def _resync_quietly(self) -> None:
        try:
            await self._resync()
        except REDIS_ERRORS as exc:
            self._trouble("heartbeat", exc)

    def _job(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._jobs.add(task)
        task.add_done_callback(self._job_done)

    def _job_done(self, task: asyncio.Task[Any]) -> None:
        self._jobs.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("cluster job failed", exc_info=task.exception())

    # -- dead nodes -------------------------------------------------------------
    async def _cleanup(self, node: str, mode: str) -> Any:
        res = await self.redis.eval(CLEANUP, 4, keys.NODES, keys.node_info(node),
                                    keys.node_jids(node), keys.inbox(node), node,
                                    int(self.cfg.dead_after * 1000), mode, self.incarnation)
        return res or None

    async def _gone(self, node: str, res: Any) -> None:
        """We won the cleanup of ``node``: its users leave (unavailable
        presence, exactly once cluster-wide), its unread stanzas are handled
        as for absent resources (offline storage, error replies)."""
        assert self.publisher is not None
        if res[0] != b"done":
            return
        removed, rest = res[1], res[2]
        self.sessions.forget(node)
        gone: list[StreamProxy] = []
        for full, raw, directed in removed:
            try:
                jid = JID.parse(full.decode())
                proxy = StreamProxy(jid, wire.parse_record(raw, directed), self.publisher)
            except (JIDError, wire.WireError, UnicodeDecodeError) as exc:
                log.warning("cluster: skipping a bad session of node %s: %s", node, exc)
                continue
            live = self.sessions.local(jid)
            if live is not None and getattr(live, "id", None) == proxy.sid:
                continue    # ours, bound while Redis was unreachable: _resync rewrites it
            gone.append(proxy)
            self.sessions.invalidate(jid.bare)
            self.publisher.invalidate(jid.bare)
        entries = parse_xrange(rest)
        if node != self.node or gone or entries:
            log.info("cluster: node %s is gone: %d sessions removed, %d unread entries",
                     node, len(gone), len(entries))
        router = self.server.router
        # The users' other resources (to tell them), all read in one round trip.
        await self.sessions.load({p.jid.bare for p in gone}, fresh=True)
        for proxy in gone:
            host = router.hosts.get(proxy.jid.domain)
            if host is None:
                continue
            try:
                await host.bus.fire("resource-unbound", proxy)
            except Exception:
                log.exception("resource-unbound failed for %s", proxy.jid)
        for _, fields in entries:
            try:
                _, items = wire.parse_entry(fields)
            except wire.WireError:
                continue
            await self._absent_items(items)

    def _undeliverable(self, items: list[bytes]) -> None:
        self._job(self._absent_items(items))

    async def _absent_items(self, items: list[bytes]) -> None:
        """Each item on its own: one that fails costs only itself."""
        for item in items:
            try:
                kind, args, data = wire.parse_item(item)
                if kind == wire.STANZA:
                    await self._absent(JID.parse(args[0]), int(args[1]), data)
            except (wire.WireError, JIDError) as exc:
                log.warning("cluster: skipping an undeliverable item: %s", exc)
            except Exception:
                log.exception("cluster: an undeliverable item failed")

    # -- what other nodes send ----------------------------------------------------
    async def _item(self, kind: bytes, args: list[str], data: bytes) -> None:
        if kind == wire.STANZA:
            target = JID.parse(args[0])
            session = self.sessions.local(target)
            if session is not None:
                # Parsed to check it (a broken entry must not break the
                # client's stream), written as it came (no re-serializing).
                el = wire.parse_stanza(data)
                write = getattr(session, "write", None)
                if write is not None:
                    write(data)
                else:
                    session.send(el)
                return
            await self._absent(target, int(args[1]), data)
        elif kind == wire.INVALIDATE:
            self.sessions.invalidate(JID.parse(args[0]))
        elif kind == wire.USER:
            bare = JID.parse(args[0])
            host = self.server.router.hosts.get(bare.domain)
            if host is not None:
                await host.bus.fire("user-changed", bare)
        elif kind == wire.CLOSE:
            session = self.sessions.local(JID.parse(args[0]))
            if session is not None and getattr(session, "id", None) == args[1]:
                condition = args[2] or "conflict"
                session.close(StreamError(condition, "replaced by a new session")
                              if condition == "conflict" else StreamError(condition))

    async def _absent(self, target: JID, hops: int, data: bytes) -> None:
        """A stanza for ``target``, which is not (or no longer) bound here."""
        el = wire.parse_stanza(data)
        token = HOPS.set(hops + 1)
        try:
            await self.server.router.absent(el, target, final=hops + 1 >= MAX_HOPS)
        finally:
            HOPS.reset(token)


async def _cancel(tasks: list[asyncio.Task[Any]], redis: Any) -> None:
    """Cancel ``tasks`` and wait for them; a task stuck in a Redis call that
    swallowed the cancellation (redis-py can) is freed by closing the
    client's connections."""
    for t in tasks:
        t.cancel()
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=1.0)
    if pending:
        try:
            await redis.connection_pool.disconnect()
            conn = getattr(redis, "connection", None)
            if conn is not None:
                await conn.disconnect()
        except Exception:       # it is being torn down either way
            pass
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=2.0)
        for t in pending:
            log.error("cluster task %s does not stop", t.get_name())


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
