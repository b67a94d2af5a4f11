"""A node's membership of the cluster: registration, heartbeats, fencing,
and the cleanup of dead nodes.

A node registers under its node id and an incarnation (a fresh token per
start), renews its heartbeat (Redis server time) every ``heartbeat`` s and
fences itself (stops trusting its routes, re-registers its sessions) when it
could not for ``dead_after`` s or Redis says it was declared dead. Each
heartbeat returns the nodes silent too long; the atomic CLEANUP script lets
exactly one live node take each one over: its users leave (unavailable
presence, once cluster-wide), its unread stanzas go to
:class:`~vinespy.cluster.inbound.Inbound` as for absent resources.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any, Callable, Coroutine

from ..config import ConfigError
from ..jid import JID, JIDError
from ..process import process_alive
from . import keys, wire
from .confirm import Gate, parse_confirmation
from .proxy import StreamProxy
from .publisher import REDIS_ERRORS, Backoff, Publisher, check_cancelled
from .scripts import CLEANUP, FORGET, HEARTBEAT, REGISTER
from .connection import where
from .status import hide_passwords
from .subscriber import Subscriber, parse_xrange

if TYPE_CHECKING:
    from ..config import ClusterConfig
    from ..server import Server
    from .inbound import Inbound
    from .sessions import ClusterSessions

log = logging.getLogger("vinespy.cluster")


class Membership:
    def __init__(self, cfg: ClusterConfig, server: Server, sessions: ClusterSessions,
                 incarnation: str, inbound: Inbound,
                 job: Callable[[Coroutine[Any, Any, None]], None]) -> None:
        self.cfg = cfg
        self.server = server
        self.node = cfg.node
        self.incarnation = incarnation
        self.sessions = sessions
        self.inbound = inbound
        self._job = job
        self.redis: Any = None
        self.publisher: Publisher | None = None
        self.subscriber: Subscriber | None = None
        self.registered = False
        self._ever_registered = False
        self._registered: asyncio.Event | None = None
        self.last_ok = 0.0
        self._reap_after = 0.0
        self._troubles: set[str] = set()
        self._url = where(cfg)
        self._replid: str | None = None     # the Redis server we write to (INFO replication)

    async def start(self, redis: Any, publisher: Publisher, subscriber: Subscriber) -> None:
        """Register (Redis down is not fatal: the heartbeat registers later).
        Raises ConfigError if another live process uses this node id."""
        cfg = self.cfg
        self.redis, self.publisher, self.subscriber = redis, publisher, subscriber
        self._registered = asyncio.Event()
        try:
            await asyncio.wait_for(self._register(), cfg.dead_after + 10 * cfg.heartbeat + 5)
        except REDIS_ERRORS as exc:
            self.trouble("heartbeat", exc)

    async def wait_registered(self) -> None:
        assert self._registered is not None
        await self._registered.wait()

    async def leave(self) -> None:
        """Deregister: what is left in the inbox is handled as for a dead node."""
        assert self.publisher is not None and self.subscriber is not None
        if not self.registered:
            return
        try:
            await self.redis.hset(keys.node_info(self.node), "acked", self.subscriber.last_inbox)
            # The last confirmations, so senders do not re-route what we handled.
            confirmations = self.subscriber.gate.confirmations(time.monotonic())
            if confirmations:
                await self.redis.hset(keys.acks(self.node), mapping=confirmations)
            res = await self._cleanup(self.node, "self")
            if res is not None:
                await self._gone(self.node, res)
            await self.inbound.settle()
            await self.publisher.flush(2.0)
        except REDIS_ERRORS as exc:
            log.warning("cluster: could not deregister from %s: %s", self._url, exc)

    # -- registration, heartbeats, fencing ------------------------------------
    async def _register(self) -> None:
        cfg = self.cfg
        if not self._ever_registered:
            deadline = time.monotonic() + cfg.dead_after + 2 * cfg.heartbeat
            while True:
                res = await self._cleanup(self.node, "self")
                if res is None or res[0] != b"busy":
                    break
                if res[3].decode() == socket.gethostname() and not process_alive(int(res[2] or 0)):
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
            # What our previous incarnation confirmed, so that what its
            # senders had not read yet is not handled twice (skipped here).
            self.subscriber.gate.seed(await self.redis.hgetall(keys.acks(self.node)),
                                      time.monotonic())
            if res is not None:
                await self._gone(self.node, res)
        await self.redis.eval(REGISTER, 2, keys.NODES, keys.node_info(self.node), self.node,
                              self.incarnation, os.getpid(), socket.gethostname(),
                              len(self.sessions))
        info = await self.redis.info("replication")
        await self._resync()
        recovered = self._ever_registered
        self.registered = self._ever_registered = True
        self._check_server(str(info.get("master_replid", "")))
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
            self.publisher.rewrite_sets(s)
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

    async def heartbeat(self) -> None:
        """The heartbeat task: beat, or register again after a fence."""
        cfg = self.cfg
        backoff = Backoff(cap=cfg.heartbeat)
        while True:
            delay = cfg.heartbeat
            try:
                if self.registered:
                    await self._beat()
                else:
                    await self._register()
                self.trouble("heartbeat", None)
                backoff.reset()
            except REDIS_ERRORS as exc:
                self.trouble("heartbeat", exc)
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
        assert self.publisher is not None
        awaited = self.publisher.outbox.nodes()
        confirmations = self.subscriber.gate.confirmations(time.monotonic())
        pipe = self.redis.pipeline(transaction=False)
        pipe.eval(HEARTBEAT, 3 + len(awaited), keys.NODES, keys.node_info(self.node),
                  keys.acks(self.node), *map(keys.acks, awaited),
                  self.node, self.incarnation, len(self.sessions),
                  self.subscriber.last_inbox, int(cfg.dead_after * 1000),
                  Gate.key(self.node, self.incarnation), len(confirmations),
                  *(x for pair in confirmations.items() for x in pair), *awaited)
        pipe.info("replication")
        res, info = await pipe.execute()
        self._check_server(str(info.get("master_replid", "")))
        if res[0] == b"gone":
            self._fence("this node was declared dead or Redis lost its entry")
            await self._register()
            return
        self.last_ok = time.monotonic()
        for node, raw in zip(awaited, res[2]):
            text = raw.decode()
            seq, gap = parse_confirmation(text.lstrip("-"))
            self.publisher.confirmed(node, seq, gap, gone=text.startswith("-"))
        self.publisher.resend_stale(cfg.dead_after)
        if self.last_ok < self._reap_after:
            return      # just (re)connected: give the others time to beat first
        for raw in res[1]:
            node = raw.decode()
            if node == self.node:
                continue
            done = await self._cleanup(node, "dead")
            if done is not None:
                # In a job: re-routing its stanzas (to offline storage, say)
                # can take longer than a heartbeat interval.
                self._job(self._gone(node, done))

    def _check_server(self, replid: str) -> None:
        """A new replication id: the primary is another server (a failover)
        or restarted; either may lack our last writes (replication is
        asynchronous). Write our sessions again, drop the route cache, send
        unconfirmed cross-node stanzas again, bring the reader's cursors
        back to what this server has, and have the modules drop what they
        cache of users (the news of changes may be lost)."""
        before, self._replid = self._replid, replid
        if before is None or before == replid or not self.registered:
            return
        log.warning("cluster: Redis at %s is another server now (a failover or a restart): "
                    "writing this node's sessions again and re-sending unconfirmed "
                    "cross-node stanzas", self._url)
        assert self.publisher is not None and self.subscriber is not None
        self.sessions.forget()
        self.publisher.resend()
        self.subscriber.rewind()
        self._reap_after = time.monotonic() + self.cfg.dead_after
        self._job(self._resync_quietly())
        for host in self.server.router.hosts.values():
            self._job(host.bus.fire("users-changed"))

    def _fence(self, why: str) -> None:
        if not self.registered:
            return
        log.warning("cluster: node %s fenced (%s): re-registering its sessions", self.node, why)
        self.registered = False
        assert self._registered is not None
        self._registered.clear()
        self.sessions.forget()

    def trouble(self, part: str, exc: BaseException | None) -> None:
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
                assert self.publisher is not None
                self.publisher.resend()     # what went just before may be lost
                self._reap_after = time.monotonic() + self.cfg.dead_after
                if self.registered:
                    self._job(self._resync_quietly())

    async def _resync_quietly(self) -> None:
        try:
            await self._resync()
        except REDIS_ERRORS as exc:
            self.trouble("heartbeat", exc)

    # -- dead nodes -------------------------------------------------------------
    async def _cleanup(self, node: str, mode: str) -> Any:
        res = await self.redis.eval(CLEANUP, 5, keys.NODES, keys.node_info(node),
                                    keys.node_jids(node), keys.inbox(node), keys.acks(node), node,
                                    int(self.cfg.dead_after * 1000), mode, self.incarnation,
                                    Gate.key(self.node, self.incarnation),
                                    int((2 * self.cfg.heartbeat + 0.5) * 1000))
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
            await host.bus.notify("resource-unbound", proxy)
        # What we sent it and it did not confirm, then what others who will
        # not send it again (dead themselves) left in its inbox.
        if node != self.node:
            seq, _ = parse_confirmation(res[3])
            self.publisher.confirmed(node, seq, gap=False, gone=True)
        for _, fields in entries:
            try:
                _, items = wire.parse_entry(fields)
            except wire.WireError:
                continue
            self.inbound.undeliverable(items)
        if node != self.node:
            for handler in self.server.node_gone:
                try:
                    await handler(node)
                except Exception:
                    log.exception("cluster: taking over what node %s left failed", node)
