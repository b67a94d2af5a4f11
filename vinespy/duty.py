"""Duties: periodic jobs that one process of the whole deployment runs at a
time (expiring old archive entries, say).

A module asks its server for one and gets a handle the server starts with
its tasks and stops at shutdown::

    self.host.server.duty(f"mam-expire:{self.host.domain}", 3600, self._expire)

    async def _expire(self, still_held: Callable[[], bool]) -> None:
        ...     # work in batches; stop when still_held() turns False

The job is called every ``interval`` seconds on the process that holds the
duty, with a callable telling whether it still does. A standalone server
holds every duty (:class:`LocalDuty`); a cluster node holds it only while
it holds its Redis lease (:class:`vinespy.cluster.duty.ClusterDuty`, whose
docstring makes the safety argument). Either way a run is cancelled as soon
as the duty is no longer held, and one process never runs the same duty
twice at once. A job that raises is logged; the duty goes on.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any, Awaitable, Callable

log = logging.getLogger("vinespy.duty")

# The job: called with ``still_held``; what it returns is logged (debug).
Job = Callable[[Callable[[], bool]], Awaitable[Any]]

STOP_TIMEOUT = 5.0      # s stop() waits for the job to end (it must not outlive its lease)


class Duty:
    """What every duty does: the task that runs the job while :meth:`_active`
    says it may, cancelling a run the moment :meth:`_left` reaches zero.
    Subclasses keep the right to run it (:meth:`_tend`, :meth:`_release`)."""

    def __init__(self, name: str, interval: float, job: Job) -> None:
        if not interval > 0:
            raise ValueError(f"duty {name}: the interval must be positive, not {interval!r}")
        self.name = name
        self.interval = interval
        self.job = job
        self.runs = 0               # runs started by this process
        self._task: asyncio.Task[None] | None = None
        self._run: asyncio.Task[None] | None = None
        self._next_run = -math.inf  # monotonic; the first run as soon as it is held
        self._wakeup = asyncio.Event()
        self._stopping = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} every {self.interval:g} s>"

    # -- what subclasses decide ---------------------------------------------------
    async def _tend(self) -> None:
        """Keep the right to run (renew a lease, ask for it) when it is due."""

    def _left(self, now: float) -> float:
        """Seconds from ``now`` the job may surely go on running (0: stop it)."""
        return 0.0 if self._stopping else math.inf

    def _next_contact(self, now: float) -> float:
        """When :meth:`_tend` has something to do next (monotonic)."""
        return math.inf

    async def _release(self, stopped: bool) -> None:
        """At stop: give the right up (``stopped``: no run is going on)."""

    # -- the interface ----------------------------------------------------------------
    @property
    def holding(self) -> bool:
        """This process may run the job now."""
        return self._left(time.monotonic()) > 0

    def still_held(self) -> bool:
        """What the job is given: False once it must stop (between batches)."""
        return self.holding

    @property
    def running(self) -> bool:
        """A run of the job is going on in this process."""
        return self._run is not None

    def start(self) -> None:
        """Start the duty's task (the server does, with its own tasks)."""
        if self._task is None and not self._stopping:
            self._task = asyncio.get_running_loop().create_task(self._loop(),
                                                                name=f"duty-{self.name}")

    async def stop(self) -> None:
        """Cancel the run and the task, wait for them, then give the duty up
        so that another process takes it over at once."""
        self._stopping = True
        tasks = [t for t in (self._task, self._run) if t is not None]
        for t in tasks:
            t.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
            for t in pending:
                log.error("duty %s: task %s does not stop", self.name, t.get_name())
        await self._release(stopped=self._run is None or self._run.done())

    # -- the task ---------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            try:
                await self._tend()
            except Exception:   # a bug here must not end the duty, nor the server
                log.exception("duty %s failed to keep its lease", self.name)
                self._drop()
            _check_cancelled()
            now = time.monotonic()
            if self._left(now) <= 0:
                self._cancel_run()
            elif self._run is None and now >= self._next_run:
                self._begin(now)
            at = self._next_contact(now)
            if self._run is None and self._left(now) > 0:
                at = min(at, self._next_run)
            self._wakeup.clear()
            if at > now:
                try:
                    await asyncio.wait_for(self._wakeup.wait(), min(at - now, 3600.0))
                except asyncio.TimeoutError:
                    pass

    def _drop(self) -> None:
        """No longer held: stop the run now."""
        self._cancel_run()

    def _begin(self, now: float) -> None:
        self._next_run = now + self.interval
        self.runs += 1
        self._run = asyncio.get_running_loop().create_task(self._shift(),
                                                           name=f"duty-{self.name}-run")
        self._run.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if self._run is task:
            self._run = None
        self._wakeup.set()

    def _cancel_run(self) -> None:
        if self._run is not None and not self._run.done():
            log.warning("duty %s: no longer held: cancelling its run", self.name)
            self._run.cancel()

    async def _shift(self) -> None:
        """One run, cancelled when the duty stops being held; returns only
        once the job has ended."""
        started = time.monotonic()
        run = asyncio.ensure_future(self.job(self.still_held))
        try:
            while not run.done():
                left = self._left(time.monotonic())
                if left <= 0:
                    log.warning("duty %s: the run outlived the lease: cancelling it", self.name)
                    break
                await asyncio.wait({run}, timeout=left)
        finally:
            if not run.done():
                run.cancel()
                await asyncio.wait({run})
        took = time.monotonic() - started
        if run.cancelled():
            log.info("duty %s: run cancelled after %.3f s", self.name, took)
        elif run.exception() is not None:
            log.error("duty %s: the job failed after %.3f s", self.name, took,
                      exc_info=run.exception())
        else:
            log.debug("duty %s: done in %.3f s: %r", self.name, took, run.result())


class LocalDuty(Duty):
    """A standalone server's duty: the one process always holds it."""


def _check_cancelled() -> None:
    """COMPAT: redis-py can swallow a cancellation (see
    vinespy.cluster.publisher.check_cancelled); a loop around its calls
    checks after each one, or it would never stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
