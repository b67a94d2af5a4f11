"""Redis connections: the redis-py clients a node and the operator commands use."""

from __future__ import annotations

import asyncio
import functools
import time
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

if TYPE_CHECKING:
    from ..config import ClusterConfig


def connect(cfg: ClusterConfig, *, socket_timeout: float | None = 5.0,
            single: bool = False, **kw: Any) -> aioredis.Redis:
    """A redis-py asyncio client for ``cfg`` (password, db and the CA for
    rediss:// from the config override the URL's). ``single`` gives a client
    of one connection (for XREAD BLOCK, whose order and cursor are its own)."""
    opts: dict[str, Any] = {
        "socket_connect_timeout": 3.0,
        "socket_timeout": socket_timeout,
        "retry_on_timeout": False,
        "health_check_interval": 0,
        **kw,
    }
    if cfg.url.startswith("rediss://") and cfg.tls_ca is not None:
        opts["ssl_ca_certs"] = str(cfg.tls_ca)
    pool = (_sentinel_pool(cfg, opts) if cfg.sentinels
            else aioredis.ConnectionPool.from_url(cfg.url, **opts))
    # from_url lets the URL's password and db win over keywords; the
    # config's keys are documented to override the URL.
    if cfg.password is not None:
        pool.connection_kwargs["password"] = cfg.password
    if cfg.db is not None:
        pool.connection_kwargs["db"] = cfg.db
    client = aioredis.Redis(connection_pool=pool, single_connection_client=single)
    client.auto_close_connection_pool = True     # as from_url does: aclose() frees the pool
    return client


def _sentinels(cfg: ClusterConfig) -> Any:
    """redis-py's Sentinel manager: the Sentinels of ``cfg``, to ask."""
    from redis.asyncio.sentinel import Sentinel
    addresses = []
    for item in cfg.sentinels:
        host, _, port = item.rpartition(":")
        addresses.append((host.strip("[]"), int(port)))
    sentinel_kwargs: dict[str, Any] = {"socket_connect_timeout": 3.0, "socket_timeout": 3.0}
    if cfg.sentinel_password is not None:
        sentinel_kwargs["password"] = cfg.sentinel_password
    return Sentinel(addresses, sentinel_kwargs=sentinel_kwargs)


def _sentinel_pool(cfg: ClusterConfig, opts: dict[str, Any]) -> Any:
    """A pool whose connections go to the primary the Sentinels name for
    ``cfg.service``, asked again whenever a connection fails (so after a
    failover the next one reaches the promoted replica, never the old
    primary). The URL gives the db, password and TLS only."""
    from redis.asyncio.connection import SSLConnection, parse_url
    from redis.asyncio.sentinel import SentinelConnectionPool
    url = parse_url(cfg.url)
    ssl = url.pop("connection_class", None) is SSLConnection
    url.pop("host", None), url.pop("port", None), url.pop("path", None)
    return SentinelConnectionPool(cfg.service, _sentinels(cfg),
                                  connection_class=_following(ssl), **url, **opts)


@functools.cache
def _following(ssl: bool) -> type:
    """redis-py's Sentinel-managed connection class, made to ask the
    Sentinels for the primary on every reconnect (made once per kind), and
    to ride out a moment when none names one (:func:`_primary_of`).
    redis-py 8 reconnects a dropped connection through
    ``connect_check_health`` with the address it had, not through the
    Sentinel-aware ``connect``: after a failover its connections went on
    knocking at the dead primary (tests/cluster/test_sentinel.py caught it).
    ``connect`` (the pool's reconnect of a connection it found closed)
    comes here too, so the Sentinels are asked once per connect, not twice."""
    from redis.asyncio.sentinel import SentinelManagedConnection, SentinelManagedSSLConnection
    base = SentinelManagedSSLConnection if ssl else SentinelManagedConnection

    async def connect_check_health(self: Any, check_health: bool = True,
                                   retry_socket_connect: bool = True) -> None:
        if self.is_connected:
            return
        if self.connection_pool.is_master:
            self.host, self.port = await _primary_of(self.connection_pool,
                                                     self.socket_connect_timeout)
        await base.connect_check_health(self, check_health, retry_socket_connect)

    async def connect(self: Any) -> None:
        await self.connect_check_health(check_health=self.connection_pool.check_connection,
                                        retry_socket_connect=False)

    return type(f"Following{base.__name__}", (base,),
                {"connect_check_health": connect_check_health, "connect": connect})


async def _primary_of(pool: Any, patience: float | None) -> tuple[str, int]:
    """The address of the primary the Sentinels of ``pool`` name, asked
    again for up to ``patience`` seconds (the connect timeout: what a
    connection may take to come up) while none names one in good standing.

    Around a promotion every Sentinel may, for a moment, flag the primary
    it knows as down (``s_down``/``o_down``): from their agreeing that the
    old one is down until the promotion, and with a
    ``down-after-milliseconds`` under about a second also just after it,
    when each Sentinel's new link to the promoted replica waits for its
    once-a-second reconnect and the replica is flagged down until the link
    is up (seen 0.5 s after
    ``+switch-master``, for 0.3-0.6 s, in tests/sentinelproc.py's set;
    Sentinels that cannot be reached answer the same). redis-py then raises
    MasterNotFoundError. Nothing has been sent to Redis yet, so asking again
    is always safe, and the command that needed the connection goes through
    instead of failing (a pubsub publish answered <internal-server-error/>
    right after a failover). Past ``patience`` the error propagates: an
    outage is reported as one."""
    from redis.asyncio.sentinel import MasterNotFoundError
    deadline = time.monotonic() + (patience or 0.0)
    pause = 0.05
    while True:
        try:
            host, port = await pool.get_master_address()
            return host, port
        except MasterNotFoundError:
            if time.monotonic() + pause > deadline:
                raise
        await asyncio.sleep(pause)
        pause = min(2 * pause, 0.5)


def where(cfg: ClusterConfig) -> str:
    """The Redis a node uses, fit to print (no password): the URL, or the
    Sentinel service and the Sentinels asked for its primary."""
    from ..config import safe_url
    if cfg.sentinels:
        return f"Sentinel service {cfg.service} ({', '.join(cfg.sentinels)})"
    return safe_url(cfg.url)


async def primary(cfg: ClusterConfig) -> str | None:
    """``host:port`` of the primary the Sentinels name now; None without
    Sentinels. Raises what redis-py raises when none answers."""
    if not cfg.sentinels:
        return None
    manager = _sentinels(cfg)
    try:
        host, port = await manager.discover_master(cfg.service)
    finally:
        for sentinel in manager.sentinels:
            await sentinel.aclose()
    return f"{host}:{port}"


class Link:
    """A connection of its own to the Redis of ``client`` (same address,
    credentials, TLS and Sentinel-following class as its pool's), for one
    task's hot loop: the publisher's flushes and the subscriber's XREAD.

    Commands are packed and their replies read straight on the connection,
    without redis-py's client, pipeline and per-command timeouts (a task per
    write when the connection has a socket timeout): measured (issue 17,
    bench/results/2026-12-07-cluster-realistic.md) a flush of one inbox
    entry cost a node about 145 µs of CPU through a pipeline against about
    75 µs this way, and the round trips are most of what a cross-node
    message costs beyond a same-node one. One ``asyncio.timeout`` bounds
    the whole round trip instead. Replies are as Redis sends them (no
    response callbacks); an error reply is returned in its command's place,
    as a pipeline's ``raise_on_error=False`` does. Any other failure (the
    connection lost, the timeout, a cancellation) closes the connection, so
    that no stale reply is ever read, and propagates; the next call
    reconnects (through the Sentinels when they are configured).
    """

    def __init__(self, client: aioredis.Redis, timeout: float) -> None:
        pool = client.connection_pool
        self.conn = pool.connection_class(**{**pool.connection_kwargs, "socket_timeout": None})
        self.timeout = timeout

    async def execute(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` in one write; their replies, in order."""
        conn = self.conn
        out: list[Any] = []
        try:
            async with asyncio.timeout(self.timeout):
                await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
                for _ in commands:
                    try:
                        out.append(await conn.read_response())
                    except ResponseError as exc:    # the reply was read whole: go on
                        out.append(exc)
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        return out

    async def disconnect(self) -> None:
        await self.conn.disconnect()
