"""Redis connections: the redis-py clients a node and the operator commands use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis

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
    pool = aioredis.ConnectionPool.from_url(cfg.url, **opts)
    # from_url lets the URL's password and db win over keywords; the
    # config's keys are documented to override the URL.
    if cfg.password is not None:
        pool.connection_kwargs["password"] = cfg.password
    if cfg.db is not None:
        pool.connection_kwargs["db"] = cfg.db
    client = aioredis.Redis(connection_pool=pool, single_connection_client=single)
    client.auto_close_connection_pool = True     # as from_url does: aclose() frees the pool
    return client
