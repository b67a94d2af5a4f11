"""``max_messages``: per-user archive caps, amortized and off the delivery path.

A node counts its appends per user; every ``trim_every = max(1, max_messages
// 10)`` of them queue a trim of that archive (:meth:`ArchiveStore.trim`) for
one background task, a user queued once; at most :data:`TRIMS_MAX` wait,
more are dropped (the next comes within ``trim_every`` appends). A failing
trim is logged and touches no message. The counters are bounded
(:data:`COUNTERS_MAX` users); a new or forgotten counter starts at a random
point, so that many users still cost a trim once per ``trim_every`` appends
on average, not at every append.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

from ...jid import JID
from .. import StorageError
from . import ArchiveStore

COUNTERS_MAX = 10_000       # users whose appends are counted
TRIMS_MAX = 1000            # users whose archive waits for a trim


class Trims:
    """The cap of one archive store: :meth:`count` each append, the trims
    run by a task :meth:`start` makes and :meth:`stop` ends."""

    def __init__(self, store: ArchiveStore, max_messages: int, log: logging.Logger) -> None:
        self.store = store
        self.max_messages = max_messages
        self.trim_every = max(1, max_messages // 10)
        self.log = log
        self.trims = 0                                  # trims run (tests, stats)
        self._appends: dict[JID, int] = {}              # appends left before a trim
        self._due: dict[JID, None] = {}                 # users due for a trim, in order
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def start(self, name: str) -> None:
        self._task = asyncio.create_task(self._run(), name=name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def count(self, owner: JID) -> None:
        """One append for ``owner``: a trim is due every ``trim_every``."""
        left = self._appends.pop(owner, None)
        if left is None:
            left = random.randint(1, self.trim_every)
        left -= 1
        if left <= 0:
            self._soon(owner)
            left = self.trim_every
        self._appends[owner] = left
        while len(self._appends) > COUNTERS_MAX:
            del self._appends[next(iter(self._appends))]

    def _soon(self, owner: JID) -> None:
        if owner in self._due or len(self._due) >= TRIMS_MAX:
            return
        self._due[owner] = None
        self._idle.clear()
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._due:
                owner = next(iter(self._due))
                del self._due[owner]        # due again while trimmed: trimmed again
                try:
                    await self.store.trim(owner, self.max_messages)
                except StorageError as exc:
                    self.log.warning("trimming the archive of %s failed: %s", owner, exc)
                except Exception:       # a bug: logged, the task goes on
                    self.log.exception("trimming the archive of %s failed", owner)
                self.trims += 1
            self._idle.set()

    async def done(self) -> None:
        """Wait until no trim is due or running (tests, a clean stop)."""
        await self._idle.wait()
