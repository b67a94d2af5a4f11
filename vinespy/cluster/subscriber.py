"""The node's reader: its inbox and the shared events stream.

One connection runs ``XREAD BLOCK`` over ``cluster:inbox:{node}`` and
``cluster:events`` from the last entry ids it has seen, so when the
connection drops (a Redis restart, a ``CLIENT KILL``, a network blip) it
resumes exactly where it stopped: nothing written meanwhile is missed,
unlike PUBLISH/SUBSCRIBE. Entries already seen (a sender re-sent a batch
whose reply it lost) are skipped by their sequence numbers; inbox entries
are admitted strictly in each sender's order (:class:`~.confirm.Gate`), and
what was handled is confirmed to the senders in the heartbeats. An entry that
is not what vinespy writes is logged and skipped; nothing stops the reader.
Each item of an entry is decoded and handled on its own: whatever one item
raises is logged and costs only that item, never the rest of its entry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from ..jid import JIDError
from . import keys
from . import wire
from .confirm import ADMIT, Gate
from .connection import Link
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
        self.link = Link(redis, BLOCK_MS / 1000 + 5)     # XREAD BLOCK, on its own connection
        self.node = node
        self.incarnation = incarnation
        self.inbox = keys.inbox(node).encode()
        self._handle = handle
        self._trouble = trouble
        self.last_inbox: bytes = b"0-0"
        self.last_events: bytes = b"$"
        self._seen: dict[tuple[str, str], int] = {}     # cluster:events, per sender
        self.gate = Gate()                               # the inbox, per sender
        self.entries = 0
        self._rewind = False
        # Where to hand what was handled, to confirm it (the publisher).
        self.confirm: Callable[[Callable[[], dict[str, str]]], None] | None = None

    async def run(self, ready: Callable[[], Awaitable[None]]) -> None:
        backoff = Backoff()
        failed = False
        while True:
            await ready()
            try:
                if self._rewind:
                    await self._clamp()
                resp = await self._read()
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
            for stream, entries in resp:
                await self.process(stream == self.inbox, entries)
            if resp and self.confirm is not None:
                self.confirm(self._confirmations)

    async def _read(self) -> list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]:
        """One ``XREAD BLOCK`` of both streams on the reader's own connection
        (:class:`~.connection.Link`: about 20 µs of CPU less per read than
        through redis-py's client), as [(stream, [(id, fields)...])...]."""
        (reply,) = await self.link.execute([(
            "XREAD", "COUNT", COUNT, "BLOCK", BLOCK_MS, "STREAMS", self.inbox, keys.EVENTS,
            self.last_inbox, self.last_events)])
        if isinstance(reply, Exception):
            raise reply
        if not reply:
            return []
        pairs = reply.items() if isinstance(reply, dict) else reply     # RESP3: a map
        return [(stream, [(entry_id, dict(zip(flat[::2], flat[1::2])) if flat else {})
                          for entry_id, flat in entries])
                for stream, entries in pairs]

    def _confirmations(self) -> dict[str, str]:
        return self.gate.confirmations(time.monotonic())

    def rewind(self) -> None:
        """Redis is another server now (a failover, a restart): our cursors
        may point past its streams' last entries (those it never got), so
        the next read first brings them back to its last entries."""
        self._rewind = True

    async def _clamp(self) -> None:
        for stream in (self.inbox, keys.EVENTS):
            last: Any = await self.redis.xrevrange(stream, count=1)
            end: bytes = last[0][0] if last else b"0-0"
            if stream == self.inbox and _id(end) < _id(self.last_inbox):
                self.last_inbox = end
            elif stream != self.inbox and _id(end) < _id(self.last_events):
                self.last_events = end
        self._rewind = False

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
        if inbox:
            sender = Gate.key(header.node, header.incarnation)
            if self.gate.admit(sender, header.seq, header.base, time.monotonic()) != ADMIT:
                return                      # had it already, or one before it is missing
            await self._items(header, items)
            self.gate.handled(sender, header.seq)
            return
        key = (header.node, header.incarnation)
        if header.seq <= self._seen.get(key, 0):
            return                          # a re-sent batch we already have
        self._seen[key] = header.seq
        await self._items(header, items)

    async def _items(self, header: wire.Header, items: list[bytes]) -> None:
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


def _id(entry_id: bytes) -> tuple[int, int]:
    """A stream entry id as a comparable pair (``$`` and garbage: the end)."""
    ms, _, seq = entry_id.partition(b"-")
    if not ms.isdigit():
        return (2 ** 64, 0)
    return (int(ms), int(seq or 0))


def parse_xrange(raw: list[Any]) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Entries as a Lua script returns XRANGE: [[id, [f, v, f, v...]], ...]."""
    out = []
    for pair in raw or ():
        entry_id, flat = pair[0], pair[1]
        out.append((entry_id, dict(zip(flat[::2], flat[1::2]))))
    return out
