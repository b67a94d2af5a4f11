"""Pid files: who runs the server of a directory, written so readers never guess.

``pid/vinespy.pid`` holds the bare pid of the server (or of the supervisor
of its workers), as init systems read it. ``pid/vinespy.workers`` holds
"PID N" while the supervisor PID runs N > 1 workers, so that ``restart``
starts as many again. Both live where the config's relative paths start
(:func:`vinespy.config.base_dir`), beside ``log/vinespy.log``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..config import base_dir
from . import ProcessError, process_alive
from .workers import MAX_WORKERS


@dataclass(frozen=True)
class RunPaths:
    """Where a server's pid file and log live, derived from the config path."""

    base: Path

    @classmethod
    def for_config(cls, config_path: str | Path) -> RunPaths:
        """Beside ``conf/``: the directory the config's relative paths start at."""
        return cls(base_dir(config_path))

    @property
    def pid_file(self) -> Path:
        return self.base / "pid" / "vinespy.pid"

    @property
    def log_file(self) -> Path:
        return self.base / "log" / "vinespy.log"

    @property
    def workers_file(self) -> Path:
        return self.pid_file.with_name("vinespy.workers")


def read_pid(pid_file: Path) -> int | None:
    """The pid ``pid_file`` names, or None (missing, unreadable, garbage)."""
    try:
        text = pid_file.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def _is_vinespy(pid: int) -> bool:
    """False only if /proc shows ``pid`` is some other program (a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True                     # no /proc: trust the pid file
    return b"vinespy" in cmdline


def running_pid(pid_file: Path, *, clean: bool = False) -> int | None:
    """The pid of the server ``pid_file`` names if it runs; ``clean`` removes a stale file.

    After a crash and a reboot the recorded pid may belong to another program:
    on Linux such a pid (its command line never mentions vinespy) is stale,
    so that ``stop`` never signals a stranger.
    """
    pid = read_pid(pid_file)
    if pid is not None and process_alive(pid) and _is_vinespy(pid):
        return pid
    if clean:
        _remove_if_names(pid_file, pid)
    return None


def acquire_pid_file(pid_file: Path) -> None:
    """Record this process in ``pid_file``, atomically and exclusively.

    The pid is written to a private temporary file and hard-linked into
    place: a reader never sees a partial file, and of two servers starting
    at once only one link succeeds.
    """
    pid = os.getpid()
    tmp = pid_file.with_name(f".{pid_file.name}.{pid}")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(f"{pid}\n")
        for _ in range(2):
            try:
                os.link(tmp, pid_file)
                return
            except FileExistsError:
                other = running_pid(pid_file, clean=True)
                if other is not None:
                    raise ProcessError(f"already running (pid {other})") from None
        raise ProcessError(f"{pid_file} keeps reappearing; is another vinespy starting?")
    finally:
        tmp.unlink(missing_ok=True)


def release_pid_file(pid_file: Path, pid: int | None = None) -> None:
    """Remove ``pid_file`` if it names ``pid`` (default: this process), else leave it."""
    _remove_if_names(pid_file, os.getpid() if pid is None else pid)


def _remove_if_names(pid_file: Path, pid: int | None) -> None:
    """Remove ``pid_file`` if it still reads as ``pid`` (None: unreadable content)."""
    if pid_file.exists() and read_pid(pid_file) == pid:
        pid_file.unlink(missing_ok=True)


# ---- the workers file

def record_workers(paths: RunPaths, workers: int) -> None:
    """Note that this process supervises ``workers`` (nothing for one)."""
    if workers > 1:
        paths.workers_file.write_text(f"{os.getpid()} {workers}\n", encoding="ascii")


def forget_workers(workers_file: Path, pid: int | None = None) -> None:
    """Remove ``workers_file`` if it is ``pid``'s (default: this process's)."""
    if _read_workers(workers_file)[0] == (os.getpid() if pid is None else pid):
        workers_file.unlink(missing_ok=True)


def _read_workers(workers_file: Path) -> tuple[int | None, int]:
    """(supervisor pid, worker count) from ``workers_file``; (None, 1) if unusable."""
    try:
        pid, n = workers_file.read_text(encoding="ascii").split()
        return int(pid), (int(n) if 1 <= int(n) <= MAX_WORKERS else 1)
    except (OSError, UnicodeDecodeError, ValueError):
        return None, 1


def running_workers(paths: RunPaths) -> int:
    """How many workers the running server has (1 when none runs)."""
    pid = running_pid(paths.pid_file)
    recorded, n = _read_workers(paths.workers_file)
    return n if pid is not None and recorded == pid else 1
