"""Clustering: many vinespy nodes serving the same domains through one Redis.

:class:`Cluster` is what the server sees of it: ``start`` (connect and
register, before the listeners open), ``spawn`` (the publisher, subscriber
and heartbeat tasks, in the server's TaskGroup) and ``stop`` (leave, and end
every task of the cluster's). Its parts: :class:`~.membership.Membership`
(registration, heartbeats, fencing, dead-node cleanup),
:class:`~.inbound.Inbound` (what other nodes send, stanzas for absent
resources), the :class:`~.publisher.Publisher` and :class:`~.subscriber.Subscriber`.
The routing table is :class:`~vinespy.cluster.sessions.ClusterSessions`; the
router never knows more than that some sessions are
:class:`~vinespy.cluster.proxy.StreamProxy` objects. docs/cluster.md
describes the data model and the guarantees.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from typing import TYPE_CHECKING, Any, Coroutine

from ..config import ConfigError
from . import switches
from .connection import Link, connect, primary, where
from .inbound import Inbound
from .membership import Membership
from .publisher import Publisher
from .sessions import ClusterSessions
from .status import hide_passwords
from .subscriber import BLOCK_MS, Subscriber

if TYPE_CHECKING:
    from ..config import ClusterConfig
    from ..server import Server

log = logging.getLogger("vinespy.cluster")


class Cluster:
    def __init__(self, cfg: ClusterConfig, server: Server) -> None:
        self.cfg = cfg
        self.node = cfg.node
        self.incarnation = secrets.token_hex(8)
        self.sessions = ClusterSessions(cfg.node, cfg.route_cache_ttl)
        self.sessions.wait_for_redis = cfg.dead_after
        self.redis: Any = None
        self.publisher: Publisher | None = None
        self.subscriber: Subscriber | None = None
        self.inbound = Inbound(server, self.sessions, self._job)
        self.membership = Membership(cfg, server, self.sessions, self.incarnation,
                                     self.inbound, self._job)
        self._tasks: list[asyncio.Task[Any]] = []
        self._jobs: set[asyncio.Task[Any]] = set()
        self._stopped = False

    async def start(self) -> None:
        """Connect and register (before the listeners open). Redis down is
        not fatal: the node serves its own users and registers later. Raises
        ConfigError if another live process uses this node id."""
        cfg = self.cfg
        self.redis = connect(cfg)
        reader = connect(cfg, single=True, socket_timeout=BLOCK_MS / 1000 + 5)
        self.publisher = Publisher(self.redis, self.node, self.incarnation, cfg.inbox_maxlen,
                                   self.inbound.undeliverable, self.membership.trouble)
        self.subscriber = Subscriber(reader, self.node, self.incarnation, self.inbound.item,
                                     self.membership.trouble)
        self.subscriber.confirm = self.publisher.confirm_received
        self.sessions.redis = self.redis
        self.sessions.publisher = self.publisher
        await self.membership.start(self.redis, self.publisher, self.subscriber)

    async def check(self) -> None:
        """Before the server starts: with Sentinels, one must name a primary.
        None answering is a configuration to fix (wrong addresses, a wrong
        service name), not an outage to ride out: one line, and the node
        does not start. Once running, it rides them out. (A plain Redis that
        is down at start is an outage: the node starts and retries.)"""
        from redis.exceptions import RedisError
        cfg = self.cfg
        if not cfg.sentinels:
            return
        try:
            now = await asyncio.wait_for(primary(cfg), 10)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            reason = re.sub(r"^.*? - network:", "", str(exc).splitlines()[0]) if str(exc) \
                else type(exc).__name__
            raise ConfigError(f"cluster: no primary for {where(cfg)}: "
                              f"{hide_passwords(reason.strip(), cfg)}") from None
        log.info("cluster: Sentinels name %s as the primary of %s", now, cfg.service)

    def spawn(self, tg: asyncio.TaskGroup) -> None:
        assert self.publisher is not None and self.subscriber is not None
        self._tasks = [
            tg.create_task(self.publisher.run(), name="cluster-publisher"),
            tg.create_task(self.subscriber.run(self.membership.wait_registered),
                           name="cluster-subscriber"),
            tg.create_task(self.membership.heartbeat(), name="cluster-heartbeat"),
        ]
        if self.cfg.sentinels:
            self._tasks.append(tg.create_task(switches.watch(self.cfg, self._switched),
                                              name="cluster-sentinel-watch"))

    async def _switched(self, new: str) -> None:
        """The Sentinels promoted ``new``: drop every connection (those in use
        too: one waiting on a hung primary would wait for its timeout), so
        the next command asks the Sentinels and reaches the new primary."""
        assert self.subscriber is not None
        log.warning("cluster: the Sentinels switched %s to %s: reconnecting",
                    self.cfg.service, new)
        for client in (self.redis, self.subscriber.redis):
            await client.connection_pool.disconnect(inuse_connections=True)
        assert self.publisher is not None
        for link in (self.publisher.link, self.subscriber.link):
            await link.disconnect()

    async def stop(self) -> None:
        """After the streams closed (their unbinds and unavailable presence
        queued): write it all, hand on what is left in the inbox, leave, and
        end every task, the jobs included."""
        assert self.publisher is not None and self.subscriber is not None
        self.sessions.end_forwards()
        try:
            await self.publisher.flush(2.0)
            # No more heartbeats (a stopping node must not re-register itself)
            # and no more reading; then leave.
            await _cancel(self._tasks[1:], self.subscriber.redis, self.subscriber.link)
            await self.membership.leave()
        finally:
            self._stopped = True        # from here no job starts: none outlives the cluster
            await _cancel(self._tasks[:1] + list(self._jobs), self.redis, self.publisher.link)
            for link in (self.publisher.link, self.subscriber.link):
                try:
                    await link.disconnect()
                except Exception:       # closing a broken connection: nothing to do
                    pass
            for client in (self.redis, self.subscriber.redis):
                try:
                    await client.aclose()
                except Exception:       # closing a broken connection: nothing to do
                    pass

    def _job(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` in a task of the cluster's own, which stop() cancels
        and awaits (a failed job is logged; it must not end the server's
        TaskGroup)."""
        if self._stopped:
            log.warning("cluster: stopped, dropping %r", coro)
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(coro)
        self._jobs.add(task)
        task.add_done_callback(self._job_done)

    def _job_done(self, task: asyncio.Task[Any]) -> None:
        self._jobs.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("cluster job failed", exc_info=task.exception())


async def _cancel(tasks: list[asyncio.Task[Any]], redis: Any, link: Link) -> None:
    """Cancel ``tasks`` and wait for them; a task stuck in a Redis call that
    swallowed the cancellation (redis-py can) is freed by closing the
    client's connections and ``link``."""
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
            await link.disconnect()
        except Exception:       # it is being torn down either way
            pass
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=2.0)
        for t in pending:
            log.error("cluster task %s does not stop", t.get_name())
