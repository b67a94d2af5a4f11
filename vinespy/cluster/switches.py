"""Hearing of a failover from the Sentinels as it happens.

A node finds the new primary on its own when its connections to the old
one fail. A primary that died closes them at once; one that hangs (frozen,
its machine cut off) leaves them waiting for their socket timeout, and a
reconnect before the promotion may even reach the hung one again. The
Sentinels announce every promotion on their ``+switch-master`` channel
(``<service> <old ip> <old port> <new ip> <new port>``): a node subscribed
there drops its connections the moment the service it uses switches, so the
next command reaches the new primary, and writes stop going where they
would be lost.

One subscription at a time, to the first Sentinel that answers; when it
goes, the next one (with backoff). Nothing here is needed for correctness:
without it the socket timeouts do the same, later.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import redis.asyncio as aioredis

from .publisher import REDIS_ERRORS, Backoff, check_cancelled

if TYPE_CHECKING:
    from ..config import ClusterConfig

log = logging.getLogger("vinespy.cluster")

CHANNEL = "+switch-master"


def parse_switch(data: bytes | str, service: str) -> str | None:
    """``host:port`` of the new primary if ``data`` (a ``+switch-master``
    message) is about ``service``, else None."""
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    parts = text.split()
    if len(parts) != 5 or parts[0] != service:
        return None
    host, port = parts[3], parts[4]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def watch(cfg: ClusterConfig, switched: Callable[[str], Awaitable[None]]) -> None:
    """Call ``switched(new primary)`` at each promotion the Sentinels
    announce for ``cfg.service``; runs until cancelled."""
    backoff = Backoff(cap=cfg.heartbeat)
    i = 0
    while True:
        item = cfg.sentinels[i % len(cfg.sentinels)]
        i += 1
        host, _, port = item.rpartition(":")
        client = aioredis.Redis(host=host.strip("[]"), port=int(port),
                                password=cfg.sentinel_password, socket_connect_timeout=3.0,
                                socket_keepalive=True)
        try:
            async with client.pubsub() as sub:
                await sub.subscribe(CHANNEL)
                backoff.reset()
                await _listen(sub, cfg, switched)
        except REDIS_ERRORS as exc:
            check_cancelled()
            log.debug("cluster: Sentinel %s: %s", item, exc)
            await asyncio.sleep(backoff.next())
        finally:
            await client.aclose()


async def _listen(sub: Any, cfg: ClusterConfig,
                  switched: Callable[[str], Awaitable[None]]) -> None:
    """Until the Sentinel goes silent: a PING every heartbeat while nothing
    comes, and no answer for three of them is a Sentinel that hangs (on
    the primary's frozen machine, say): TimeoutError, and on to the next."""
    heard = time.monotonic()
    while True:
        message = await sub.get_message(timeout=cfg.heartbeat)
        now = time.monotonic()
        if message is None:
            if now - heard > 3 * cfg.heartbeat + 1:
                raise asyncio.TimeoutError("the Sentinel does not answer")
            await sub.ping()
            continue
        heard = now
        if message.get("type") == "message":
            new = parse_switch(message.get("data", b""), cfg.service)
            if new is not None:
                await switched(new)
