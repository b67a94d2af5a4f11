"""``start --workers N``: a supervisor forking N servers that share the ports.

Each worker is a cluster node (``NODE-w0`` ...) listening on the same ports
with SO_REUSEPORT; the supervisor holds the pid file, forwards SIGTERM/SIGINT
and replaces a worker that dies (:class:`Workers`).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import select
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Callable

from ..config import Config
from . import OPERATOR_ERRORS, ProcessError
from .report import Reporter, one_line

# The logger's name is what operators' log filters know: it was the CLI's.
log = logging.getLogger("vinespy.cli")

MAX_WORKERS = 64
RESTART_DELAY = 1.0         # s before a worker that died is replaced
RESTARTS = 5                # at most this many replacements of one worker...
RESTART_WINDOW = 60.0       # ...within this many seconds; then it stays dead
KILL_AFTER = 10.0           # s after a stop before the remaining workers get SIGKILL


def serve(config: Config, ready: Callable[[], None] | None, workers: int = 1) -> int:
    """Serve ``config`` until SIGTERM/SIGINT, here or in ``workers`` processes;
    ``ready`` is called once it listens. Returns the exit status."""
    if workers > 1:
        return Workers(config, workers, ready).run()
    from .. import server            # the whole server: only `start` needs it
    return server.run(config, ready=ready)


@dataclass
class _Worker:
    """One worker slot: the process filling it now, and its history."""

    index: int
    config: Config
    pid: int = 0                        # 0: no process (not started yet, or dead)
    report: int | None = None           # read end of its startup pipe
    data: bytes = b""
    state: str = "starting"             # starting | listening | failed
    error: str = ""                     # why it failed to start
    how: str = ""                       # how its last process ended
    restarts: collections.deque[float] = dataclasses.field(default_factory=collections.deque)
    restart_at: float | None = None     # time.monotonic() of its next start


class Workers:
    """``start --workers N``: N forked server processes, each a cluster node
    (``NODE-w0`` ...) listening on the same ports with SO_REUSEPORT.

    This process runs no event loop (forking one is undefined): it forks the
    workers, forwards SIGTERM/SIGINT to them, waits on them with ``select``
    (signals arrive through :func:`signal.set_wakeup_fd`), and replaces a
    worker that dies unexpectedly, after :data:`RESTART_DELAY`, at most
    :data:`RESTARTS` times per :data:`RESTART_WINDOW` each.

    Each worker reports through a pipe, as the daemon does: ``ok`` once it
    listens, else one error line (which it also prints on stderr). ``ready``
    is called once every first worker has reported and one of them listens;
    if none does, :meth:`run` raises :class:`~vinespy.process.ProcessError`
    with the first reason.
    After a requested stop it returns 0 once every worker has exited; it
    returns 1 if every worker died and none may be restarted.
    """

    def __init__(self, config: Config, count: int, ready: Callable[[], None] | None) -> None:
        assert config.cluster is not None and count > 1
        self.ready = ready
        self.workers = [
            _Worker(i, dataclasses.replace(
                config,
                client=dataclasses.replace(config.client, reuse_port=True),
                cluster=dataclasses.replace(config.cluster, node=f"{config.cluster.node}-w{i}")))
            for i in range(count)]
        self.started = False            # every first worker has reported, one listens
        self.stop_signal: int | None = None     # a SIGTERM/SIGINT to forward
        self.stopping = False
        self.kill_at: float | None = None
        self.failure: str | None = None         # no worker started: why
        self._wake_r = self._wake_w = -1

    # -- the supervising process

    def run(self) -> int:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        old_wakeup = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        old_handlers = {sig: signal.signal(sig, self._on_signal)
                        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)}
        try:
            for w in self.workers:
                self._spawn(w)
            return self._loop()
        finally:
            if any(w.pid for w in self.workers):    # only after a bug: leave no orphans
                self._terminate(signal.SIGTERM)
                self._wait_all(time.monotonic() + KILL_AFTER)
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(old_wakeup)
            for fd in (self._wake_r, self._wake_w, *(w.report for w in self.workers)):
                if fd is not None and fd >= 0:
                    os.close(fd)
            for w in self.workers:
                w.report = None

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum != signal.SIGCHLD:
            self.stop_signal = signum   # the loop forwards it; SIGCHLD only wakes it

    def _loop(self) -> int:
        while True:
            now = time.monotonic()
            if self.stop_signal is not None:
                sig, self.stop_signal = self.stop_signal, None
                if not self.stopping:
                    log.info("stopping %d workers (%s)", self._alive(), signal.Signals(sig).name)
                    self._begin_stop(now)
                self._terminate(sig)
            self._reap(now)
            if self.stopping:
                if not self._alive():
                    if self.failure is not None:
                        raise ProcessError(self.failure)
                    log.info("every worker has exited")
                    return 0
                if self.kill_at is not None and now >= self.kill_at:
                    log.warning("%d workers still running %g s after the stop: SIGKILL",
                                self._alive(), KILL_AFTER)
                    self._terminate(signal.SIGKILL)
                    self.kill_at = None
            else:
                if not self.started:
                    self._check_started(now)
                for w in self.workers:
                    if w.restart_at is not None and now >= w.restart_at and not self.stopping:
                        w.restart_at = None
                        w.restarts.append(now)
                        self._spawn(w)
                if self.started and not self._alive() and \
                        all(w.restart_at is None for w in self.workers):
                    log.error("every worker has died and none may be restarted; exiting")
                    return 1
            self._wait(now)

    def _wait(self, now: float) -> None:
        """Sleep until a report, a signal or the next deadline."""
        deadlines = [w.restart_at for w in self.workers if w.restart_at is not None]
        if self.kill_at is not None:
            deadlines.append(self.kill_at)
        timeout = max(0.0, min(deadlines) - now) if deadlines else None
        fds = [self._wake_r, *(w.report for w in self.workers if w.report is not None)]
        for fd in select.select(fds, [], [], timeout)[0]:
            if fd == self._wake_r:
                try:
                    while os.read(fd, 512):
                        pass
                except BlockingIOError:
                    pass
            else:
                self._read_report(next(w for w in self.workers if w.report == fd))

    def _begin_stop(self, now: float) -> None:
        self.stopping = True
        self.kill_at = now + KILL_AFTER
        for w in self.workers:
            w.restart_at = None

    def _alive(self) -> int:
        return sum(1 for w in self.workers if w.pid)

    def _terminate(self, sig: int) -> None:
        for w in self.workers:
            if w.pid:
                try:
                    os.kill(w.pid, sig)
                except ProcessLookupError:
                    pass                # exited; _reap will see it

    def _wait_all(self, deadline: float) -> None:
        """Reap every worker, with SIGKILL after ``deadline`` (the cleanup path)."""
        while self._alive():
            self._reap(time.monotonic())
            if time.monotonic() > deadline:
                self._terminate(signal.SIGKILL)
            time.sleep(0.05)

    def _spawn(self, w: _Worker) -> None:
        rfd, wfd = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                os.close(rfd)
                self._in_child()
                status = _worker_main(w.index, w.config, wfd)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(status)    # never return into the supervisor's stack
        os.close(wfd)
        os.set_blocking(rfd, False)
        w.pid, w.report, w.data, w.state, w.error = pid, rfd, b"", "starting", ""
        assert w.config.cluster is not None
        log.info("worker %d started (pid %d, node %s)", w.index, pid, w.config.cluster.node)

    def _in_child(self) -> None:
        """Undo the supervisor's signal setup and close its descriptors."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in (self._wake_r, self._wake_w, *(w.report for w in self.workers)):
            if fd is not None and fd >= 0:
                os.close(fd)

    def _read_report(self, w: _Worker) -> None:
        """Take what ``w`` wrote on its pipe: ``ok`` or ``error REASON``."""
        assert w.report is not None
        try:
            while chunk := os.read(w.report, 512):
                w.data += chunk
        except BlockingIOError:
            return                      # more to come
        os.close(w.report)              # end of file: the report is complete
        w.report = None
        line = w.data.decode("utf-8", "replace").strip()
        if line == "ok":
            w.state = "listening"
            if self.started:
                log.info("worker %d (pid %d) is listening again", w.index, w.pid)
        elif line:
            w.state, w.error = "failed", line.removeprefix("error ")
        # else: it died without a word; _reap() says how

    def _reap(self, now: float) -> None:
        for w in self.workers:
            if not w.pid:
                continue
            try:
                pid, status = os.waitpid(w.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = w.pid, 1
            if pid == 0:
                continue
            if w.report is not None:
                self._read_report(w)    # its writer is gone: reads to the end
            w.pid = 0
            w.how = _describe_exit(status)
            if w.state == "starting":
                w.state, w.error = "failed", f"{w.how} before listening"
            if self.stopping:
                log.info("worker %d %s", w.index, w.how)
            elif self.started:
                self._died(w, w.how, now)
            # else: _check_started() deals with it

    def _died(self, w: _Worker, how: str, now: float) -> None:
        """A worker died unexpectedly: replace it unless it died too often."""
        while w.restarts and now - w.restarts[0] > RESTART_WINDOW:
            w.restarts.popleft()
        if len(w.restarts) >= RESTARTS:
            log.error("worker %d %s; it was restarted %d times within %g s: giving up on it",
                      w.index, how, len(w.restarts), RESTART_WINDOW)
            return
        log.warning("worker %d %s; restarting it in %g s", w.index, how, RESTART_DELAY)
        w.restart_at = now + RESTART_DELAY

    def _check_started(self, now: float) -> None:
        """Once every first worker has reported: go on if one listens, else fail."""
        if any(w.state == "starting" for w in self.workers):
            return
        listening = [w for w in self.workers if w.state == "listening"]
        if not listening:
            # Raised once every worker has exited; the caller logs it.
            self.failure = f"no worker started: worker 0: {self.workers[0].error}"
            self._begin_stop(now)
            self._terminate(signal.SIGTERM)
            return
        self.started = True
        log.info("%d of %d workers listening", len(listening), len(self.workers))
        for w in self.workers:
            if not w.pid:
                self._died(w, w.how if w.state == "listening"
                           else f"failed to start ({w.error})", now)
        if self.ready is not None:
            self.ready()


def _worker_main(index: int, config: Config, wfd: int) -> int:
    """A worker process: serve ``config``; report to the supervisor through ``wfd``.

    A startup error is one line on stderr (the log, for a daemon) and on the pipe.
    """
    report = Reporter(wfd)
    status = 1
    try:
        status = serve(config, report.ok)
    except OPERATOR_ERRORS + (OSError,) as exc:
        reason = one_line(str(exc)) or type(exc).__name__
        if isinstance(exc, OSError):        # most often: the port is taken
            reason = f"cannot start: {reason}"
        # One write: the supervisor logs to the same stderr, and print() would write the
        # newline apart, letting a log line land inside this one.
        sys.stderr.write(f"vinespy: worker {index}: {reason}\n")
        report.error(reason)
    except KeyboardInterrupt:
        status = 130
    finally:
        report.error(f"exited with status {status} before listening")   # no-op after "ok"
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    return status


def _describe_exit(status: int) -> str:
    """A ``waitpid`` status in words: "exited with status 1", "was killed by SIGKILL"."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"was killed by {name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"
