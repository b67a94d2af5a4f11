"""Archive writes in batches: what a loop iteration archives, in one
:meth:`~vinespy.storage.archive.ArchiveStore.append_many`, and the store's
:meth:`~vinespy.storage.archive.ArchiveStore.sync` every ``sync_interval``.

The MAM module archives every message before delivering it, twice (the
sender's and the recipient's archive). One store call per entry cost a
worker-thread hop, a file open and an fsync each on fs, a transaction each
on sql. A :class:`Batcher` per store gathers the entries instead:

* :meth:`Batcher.append` queues an entry and returns once the batch holding
  it is written (so the id a client sees is archived): StorageError if that
  batch failed, all of it (a store's ``append_many`` is atomic per entry,
  not per batch: some of a failed batch may be stored).
* The first entry queued wakes the writer task, which runs in a later loop
  iteration: every entry queued in the meantime (a burst of messages read
  in one iteration) goes in the same batch. One batch is written at a time
  per store; the next one fills while it is.
* The queue holds at most ``max_queue`` entries; beyond, :meth:`append`
  waits for the writer to take them (back-pressure, bounded memory).
* Every ``sync_interval`` seconds, if a batch was written since the last
  time, the store's ``sync()`` runs (the fs store's group commit: an OS
  crash loses at most about that much archive); concurrently with writes.
* :meth:`Batcher.stop` writes what is queued, stops both tasks and syncs.

* :meth:`Batcher.append_now` writes an entry at once, without a batch,
  when nothing is queued or being written and the store can write it
  without waiting (:meth:`~vinespy.storage.archive.ArchiveStore.append_now`:
  fs, memory). At a steady rate most messages are read one per loop
  iteration, so a batch held one entry anyway; the future, the writer's
  wake-up and the sender's resumption cost more than the write (the MAM
  module's two entries per message: ~1/3 of its instructions).

The store checks the entries (:func:`~vinespy.storage.archive.check_message`)
before it writes any: a bad one (the MAM module makes none) fails its batch.
A waiter cancelled while its batch is written does not take its entry out.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Sequence

from ...jid import JID
from .. import StorageError
from . import ArchivedMessage, ArchiveStore

log = logging.getLogger(__name__)

SYNC_INTERVAL = 1.0         # seconds between the store's syncs
MAX_QUEUE = 10_000          # entries queued at most; beyond, appends wait


class Batcher:
    """Batched appends to ``store`` (see the module docstring); started
    with :meth:`start` in a running loop, ended with :meth:`stop`."""

    def __init__(self, store: ArchiveStore, sync_interval: float = SYNC_INTERVAL,
                 max_queue: int = MAX_QUEUE) -> None:
        if max_queue < 1 or sync_interval <= 0:
            raise ValueError("max_queue must be >= 1 and sync_interval > 0")
        self.store = store
        self.sync_interval = sync_interval
        self.max_queue = max_queue
        self.batches = 0                # append_many calls made (tests, benchmarks)
        self.batched = 0                # entries they held
        self.written_now = 0            # entries append_now wrote (tests, benchmarks)
        self._busy = False              # a batch is being written
        self._queue: list[tuple[JID, ArchivedMessage]] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._wake = asyncio.Event()    # the queue is not empty, or stop()
        self._room = asyncio.Event()    # the queue is below max_queue
        self._room.set()
        self._unsynced = False
        self._stopping = False
        self._writer: asyncio.Task[None] | None = None
        self._syncer: asyncio.Task[None] | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._writer = loop.create_task(self._write_batches(), name="archive-writer")
        # A store without a sync of its own (memory, sql) needs no timer.
        if type(self.store).sync is not ArchiveStore.sync:
            self._syncer = loop.create_task(self._sync_every(), name="archive-sync")

    def append_now(self, owner: JID, msg: ArchivedMessage) -> bool:
        """Archive ``msg`` for ``owner`` at once if the batcher is idle
        (nothing queued, no batch being written: an entry written now
        overtakes none) and the store can write it without waiting: True
        once written; False, nothing written, for :meth:`append` to do it.
        StorageError if the store failed."""
        if self._queue or self._busy or self._stopping or self._writer is None:
            return False
        if not self.store.append_now(owner, msg):
            return False
        self._unsynced = True           # the next sync covers it
        self.written_now += 1
        return True

    async def append(self, owner: JID, msg: ArchivedMessage) -> None:
        """Archive ``msg`` for ``owner`` with the next batch; StorageError
        if that batch failed or the batcher is stopped."""
        await self.append_all(((owner, msg),))

    async def append_all(self, entries: Sequence[tuple[JID, ArchivedMessage]]) -> None:
        """:meth:`append` of several entries, all in one batch (one waiter)."""
        while len(self._queue) >= self.max_queue and not self._stopping:
            self._room.clear()
            await self._room.wait()
        if self._stopping or self._writer is None:
            raise StorageError("the archive is not open (the server is stopping)")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.extend(entries)
        self._waiters.append(done)
        self._wake.set()
        await done

    async def _write_batches(self) -> None:
        while True:
            if not self._queue:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch, waiters = self._queue, self._waiters
            self._queue, self._waiters = [], []
            self._room.set()
            self.batches += 1
            self.batched += len(batch)
            failed: Exception | None = None
            self._busy = True
            try:
                await self.store.append_many(batch)
            except Exception as exc:        # StorageError, or a bug: every waiter hears it
                failed = exc
            except BaseException:           # cancelled mid-write
                for w in waiters:
                    w.cancel()
                raise
            finally:
                self._busy = False
                self._unsynced = True       # after the write: the next sync covers it
            for w in waiters:
                if not w.done():
                    if failed is None:
                        w.set_result(None)
                    else:
                        w.set_exception(failed)

    async def _sync_every(self) -> None:
        while True:
            await asyncio.sleep(self.sync_interval)
            await self._sync()

    async def _sync(self) -> None:
        if not self._unsynced:
            return
        self._unsynced = False
        try:
            await self.store.sync()
        except StorageError as exc:
            log.warning("syncing the message archive failed: %s", exc)

    async def stop(self) -> None:
        """Write what is queued, stop the tasks, sync. Appends made from
        now on raise StorageError."""
        self._stopping = True
        self._wake.set()
        self._room.set()
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        if self._syncer is not None:
            self._syncer.cancel()
            await asyncio.gather(self._syncer, return_exceptions=True)
        self._unsynced = True
        await self._sync()
