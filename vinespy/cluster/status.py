"""The cluster's nodes as Redis sees them, for ``vinespy status``.

Reads the node registry the nodes keep (:mod:`vinespy.cluster.keys`):
``cluster:nodes`` (node id -> last heartbeat, ms of Redis time) and each
node's ``cluster:node:{id}`` hash. Ages are measured against Redis ``TIME``,
the clock the heartbeats were stamped with, never the local one: the
operator's machine may be another than the nodes', with another clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from ..config import safe_url  # noqa: F401  (used from here by cli and membership)
from .connection import connect, primary, where  # noqa: F401  (used by cli)
from .keys import NODES, node_info

if TYPE_CHECKING:
    from ..config import ClusterConfig


@dataclass(frozen=True)
class NodeStatus:
    """One registered node; ``age_s`` is inf when its heartbeat is unreadable."""

    node: str
    alive: bool
    age_s: float
    sessions: int
    pid: int | None
    host: str | None

    def line(self) -> str:
        """``node host-5222-w0  alive  sessions 12  pid 4242  host myhost  heartbeat 0.4 s ago``"""
        beat = f"{self.age_s:.1f} s ago" if math.isfinite(self.age_s) else "unknown"
        return (f"node {self.node}  {'alive' if self.alive else 'dead'}  "
                f"sessions {self.sessions}  pid {self.pid if self.pid is not None else '-'}  "
                f"host {self.host or '-'}  heartbeat {beat}")


async def nodes(cfg: ClusterConfig) -> list[NodeStatus]:
    """Every node in the registry, sorted by id; alive = a heartbeat within
    ``cfg.dead_after`` seconds. Raises what redis-py raises (RedisError,
    OSError) when Redis cannot be reached."""
    redis = connect(cfg)
    try:
        beats: dict[Any, Any] = await redis.hgetall(NODES)
        seconds, micros = await redis.time()
        now_ms = seconds * 1000 + micros / 1000
        ids = sorted(_text(k) for k in beats)
        async with redis.pipeline(transaction=False) as pipe:
            for node in ids:
                pipe.hgetall(node_info(node))
            infos: list[dict[Any, Any]] = await pipe.execute()
    finally:
        await redis.aclose()
    by_id = {_text(k): v for k, v in beats.items()}
    out = []
    for node, info in zip(ids, infos):
        beat = _number(by_id[node])
        age = max(0.0, (now_ms - beat) / 1000) if beat is not None else math.inf
        fields = {_text(k): _text(v) for k, v in info.items()}
        out.append(NodeStatus(
            node=node,
            alive=age <= cfg.dead_after,
            age_s=age,
            sessions=_int(fields.get("sessions")) or 0,
            pid=_int(fields.get("pid")),
            host=fields.get("host") or None,
        ))
    return out


def hide_passwords(text: str, cfg: ClusterConfig) -> str:
    """``text`` (an error message, say) with every password of ``cfg`` (its
    own, its URL's) made ``***``."""
    hidden = [cfg.password, cfg.sentinel_password]
    try:
        parts = urlsplit(cfg.url)
        hidden += [parts.password, *parse_qs(parts.query).get("password", [])]
    except ValueError:
        pass
    for secret in hidden:
        if secret:
            text = text.replace(secret, "***")
    return text


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _number(value: Any) -> float | None:
    try:
        number = float(_text(value))
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
