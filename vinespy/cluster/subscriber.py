"""The node's reader: its inbox and the shared events stream.

One connection runs ``XREAD BLOCK`` over ``cluster:inbox:{node}`` and
``cluster:events`` from the last entry ids it has seen, so when the
connection drops (a Redis restart, a ``CLIENT KILL``, a network blip) it
resumes exactly where it stopped: nothing written meanwhile is missed,
unlike PUBLISH/SUBSCRIBE. Entries already seen (a sender re-sent a batch
whose reply it lost) are skipped by their sequence numbers. An entry that
is not what vinespy writes is logged and skipped; nothing stops the reader.
Each item of an entry is decoded and handled on its own: whatever one item
raises is logged and costs only that item, never the rest of its entry.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from ..jid import JIDError
from . import keys
from . import wire
from .publisher import REDIS_ERRORS, Backoff, check_cancelled

if TYPE_CHECKING:
    import redis.asyncio as aioredis

log = logging.getLogger(__name__)

BLOCK_MS = 1000
COUNT = 1000


class Subscriber:
    def __init__(self, redis: aioredis.Redis, node: str, incarnation: str,
                 handle: Callable[[bytes, list[str], bytes], Awaitable[None]],
                 trouble: Callable[[str, BaseException | None], None]) -> None:
        self.redis = redis
        self.node = node
        self.incarnation = incarnation
        self.inbox = keys.inbox(node).encode()
        self._handle = handle
        self._trouble = trouble
        self.last_inbox: bytes = b"0-0"
        self.last_events: bytes = b"$"
        self._seen: dict[tuple[bool, str, str], int] = {}
        self.entries = 0

    async def run(self, ready: Callable[[], Awaitable[None]]) -> None:
        backoff = Backoff()
        failed = False
        while True:
            await ready()
            streams: dict[Any, Any] = {self.inbox: self.last_inbox,
                                       keys.EVENTS: self.last_events}
            try:
                resp = await self.redis.xread(streams, count=COUNT, block=BLOCK_MS)
            except REDIS_ERRORS as exc:
                check_cancelled()
                self._trouble("subscriber", exc)
                failed = True
                await asyncio.sleep(backoff.next())
                continue
            check_cancelled()
            if failed:
                failed = False
                backoff.reset()
                self._trouble("subscriber", None)
            reply: Any = resp or ()
            for stream, entries in reply:
                await self.process(stream == self.inbox, entries)

    async def process(self, inbox: bool, entries: list[tuple[bytes, Any]]) -> None:
        for entry_id, fields in entries:
            if inbox:
                self.last_inbox = entry_id
            else:
                self.last_events = entry_id
            try:
                await self.entry(inbox, fields)
            except Exception:
                log.exception("skipping cluster entry %s of %s", entry_id,
                              "the inbox" if inbox else keys.EVENTS)

    async def entry(self, inbox: bool, fields: dict[bytes, bytes]) -> None:
        self.entries += 1
        try:
            header, items = wire.parse_entry(fields)
        except wire.WireError as exc:
            log.warning("skipping a malformed cluster entry: %s", exc)
            return
        if header.node == self.node and header.incarnation == self.incarnation:
            return                          # our own broadcast
        key = (inbox, header.node, header.incarnation)
        if header.seq <= self._seen.get(key, 0):
            return                          # a re-sent batch we already have
        self._seen[key] = header.seq
        for item in items:
            try:
                kind, args, data = wire.parse_item(item)
            except wire.WireError as exc:
                log.warning("skipping a cluster item from %s: %s", header.node, exc)
                continue
            try:
                await self._handle(kind, args, data)
            except (JIDError, wire.WireError) as exc:
                log.warning("skipping a cluster item from %s: %s", header.node, exc)
            except Exception:
                log.exception("a cluster item from %s failed", header.node)


def parse_xrange(raw: list[Any]) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Entries as a Lua script returns XRANGE: [[id, [f, v, f, v...]], ...]."""
    out = []
    for pair in raw or ():
        entry_id, flat = pair[0], pair[1]
        out.append((entry_id, dict(zip(flat[::2], flat[1::2]))))
    return out
