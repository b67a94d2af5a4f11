"""The server in the background: start a daemon, wait for its report, stop it.

``start -d`` double-forks a daemon that detaches from the terminal, logs to
``log/vinespy.log``, takes the pid file and serves; the command that started
it returns once the daemon reports that it listens (or why it could not).
"""

from __future__ import annotations

import logging
import os
import select
import signal
import sys
import time
import traceback
from pathlib import Path

from ..config import Config
from . import OPERATOR_ERRORS, ProcessError
from .pidfile import (RunPaths, acquire_pid_file, forget_workers, process_alive, read_pid,
                      record_workers, release_pid_file, running_pid)
from .report import Reporter
from .workers import serve

# The logger's name is what operators' log filters know: it was the CLI's.
log = logging.getLogger("vinespy.cli")

START_TIMEOUT = 30.0        # s the parent of a daemon waits for "listening"
STOP_TIMEOUT = 15.0         # s `stop` waits for the process to exit


def start_daemon(config: Config, paths: RunPaths, workers: int = 1) -> int | None:
    """Double fork; return in the caller once the daemon listens (its pid,
    as the pid file names it), or raise :class:`ProcessError` if it failed.

    No event loop exists yet (forking one is undefined). The daemon reports
    through a pipe: ``ok`` once its listeners are bound, else one error line.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    rfd, wfd = os.pipe()
    child = os.fork()
    if child:
        os.close(wfd)
        os.waitpid(child, 0)            # the middle process exits at once
        return _await_daemon(rfd, paths)
    # Middle process: leave the terminal's session, then fork the daemon, so
    # that it is not a session leader and can never acquire a terminal.
    status = 1
    try:
        os.close(rfd)
        os.setsid()
        if os.fork() == 0:
            status = _daemon_main(config, paths, wfd, workers)
        else:
            status = 0
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(status)             # never return into the caller's stack


def _await_daemon(rfd: int, paths: RunPaths) -> int | None:
    """Wait for the daemon's report on ``rfd``; its pid once it listens."""
    data = b""
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([rfd], [], [], left)[0]:
                raise ProcessError(
                    f"not listening after {START_TIMEOUT:g} s; see {paths.log_file}")
            chunk = os.read(rfd, 512)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(rfd)
    report = data.decode("utf-8", "replace").strip()
    if report == "ok":
        return read_pid(paths.pid_file)
    if report.startswith("error "):
        raise ProcessError(report[len("error "):])
    raise ProcessError(f"the server exited while starting; see {paths.log_file}")


def _daemon_main(config: Config, paths: RunPaths, wfd: int, workers: int = 1) -> int:
    """The daemon itself: detach stdio, take the pid file, serve."""
    report = Reporter(wfd)
    try:
        _detach_stdio(paths.log_file)
        setup_logging(config.log, paths.log_file)
        acquire_pid_file(paths.pid_file)
    except ProcessError as exc:
        report.error(str(exc))
        return 1
    except OSError as exc:
        report.error(f"cannot start: {exc}")
        return 1
    status = 1
    try:
        record_workers(paths, workers)
        status = serve(config, report.ok, workers)
    except OPERATOR_ERRORS as exc:
        log.error("%s", exc)
        report.error(str(exc))
    except OSError as exc:                  # most often: the port is taken
        log.error("cannot start: %s", exc)
        report.error(str(exc))
    except BaseException as exc:
        log.exception("the server failed")
        report.error(f"the server failed: {exc!r}; see {paths.log_file}")
    finally:
        forget_workers(paths.workers_file)
        release_pid_file(paths.pid_file)
        report.error(f"the server exited with status {status} before listening; "
                     f"see {paths.log_file}")   # a no-op once "ok" was sent
        logging.shutdown()
    return status


def _detach_stdio(log_file: Path) -> None:
    """stdin and stdout to /dev/null, stderr appended to the log (tracebacks land there)."""
    null = os.open(os.devnull, os.O_RDWR)
    err = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(err, 2)
    os.close(null)
    os.close(err)


def setup_logging(level: str, log_file: Path | None) -> None:
    """Root logging at ``level`` to stderr, or appended to ``log_file``."""
    handler: logging.Handler
    if log_file is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))


def stop_server(paths: RunPaths) -> int | None:
    """SIGTERM the server ``paths.pid_file`` names and wait for it to exit;
    its pid, or None if none runs."""
    pid = running_pid(paths.pid_file, clean=True)
    if pid is None:
        return None
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    except PermissionError:
        raise ProcessError(f"not allowed to signal pid {pid}") from None
    deadline = time.monotonic() + STOP_TIMEOUT
    while process_alive(pid):
        if time.monotonic() > deadline:
            raise ProcessError(f"pid {pid} did not exit within {STOP_TIMEOUT:g} s")
        time.sleep(0.05)
    release_pid_file(paths.pid_file, pid)   # it removes its own; this is for a crash
    forget_workers(paths.workers_file, pid)
    return pid
