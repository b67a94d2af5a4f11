"""Redis connections and the cluster's key schema (docs/cluster.md).

Every key vinespy keeps in Redis is named here, so that the server, the
operator commands and the tests agree on them.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis

if TYPE_CHECKING:
    from ..config import ClusterConfig

# node id -> its last heartbeat, Redis server time in ms (TIME, never a local clock)
NODES = "cluster:nodes"


# STREAM every node reads: routing-table invalidations and user changes
EVENTS = "cluster:events"


def node_info(node: str) -> str:
    """HASH of a node: pid, host, started (ms), incarnation, sessions (count)."""
    return f"cluster:node:{node}"


def node_jids(node: str) -> str:
    """SET of the full JIDs bound at ``node`` (for its cleanup)."""
    return f"cluster:node:{node}:jids"


def inbox(node: str) -> str:
    """STREAM of what other nodes send ``node`` (stanzas, invalidations...)."""
    return f"cluster:inbox:{node}"


def sessions(bare: str) -> str:
    """HASH resource -> JSON {node, sid, available, interested, priority, presence}."""
    return f"sessions:{bare}"


def directed(sid: str) -> str:
    """SET of the JIDs the session ``sid`` sent directed presence to (RFC 6121
    §4.6), for whoever cleans up after its node; gone with the session."""
    return f"cluster:directed:{sid}"


def lock(name: str) -> str:
    """STRING holding the token of the task that holds ``exclusive(name)``."""
    return f"cluster:lock:{name}"


def default_node_id(port: int) -> str:
    """A node id that is stable across restarts of the same server, so that
    a node starting up finds (and removes) its previous incarnation's leftovers."""
    return f"{socket.gethostname()}-{port}"


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
