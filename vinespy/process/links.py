"""What a running server is linked to, for ``vinespy status``: its streams
to and from other servers (s2s) and its connected components (XEP-0114).

Each server process keeps a small JSON file of its own beside the pid file
(``pid/links-PID.json``), rewritten (atomically) at most once a second
while links come and go, and removed when it stops; ``vinespy status``
reads those of live processes. A file, not a control socket: nothing to
listen on or authenticate, and a worker of ``--workers N`` writes its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

from ..config import base_dir
from ..fileio import atomic_write
from . import process_alive

log = logging.getLogger(__name__)

EVERY = 1.0          # s: at most one rewrite per this


def path_for(config_path: Path, pid: int) -> Path:
    """Beside the pid file (process/pidfile.py ``RunPaths``)."""
    return base_dir(config_path) / "pid" / f"links-{pid}.json"


class LinksFile:
    """The file of this process; ``collect()`` says what is in it."""

    def __init__(self, config_path: Path, collect: Callable[[], dict[str, Any]]) -> None:
        self.path = path_for(config_path, os.getpid())
        self.collect = collect
        self._timer: asyncio.TimerHandle | None = None
        self._written = False

    def changed(self) -> None:
        """A link came or went: rewrite the file soon (once for a burst)."""
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(EVERY, self._write)

    def _write(self) -> None:
        self._timer = None
        data = {"pid": os.getpid(), **self.collect()}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, json.dumps(data).encode(), mode=0o644)
            self._written = True
        except OSError as exc:
            log.warning("cannot write %s: %s", self.path, exc.strerror or exc)

    def remove(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._written:
            try:
                self.path.unlink()
            except OSError:
                pass


def read_all(config_path: Path) -> list[dict[str, Any]]:
    """The files of the live server processes of this config (stale ones,
    a crashed process's, are skipped)."""
    out = []
    for path in sorted(path_for(config_path, 0).parent.glob("links-*.json")):
        try:
            data = json.loads(path.read_text())
            pid = int(data["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if process_alive(pid):
            out.append(data)
    return out


def lines(files: list[dict[str, Any]]) -> list[str]:
    """``vinespy status``'s lines for the links in ``files``."""
    out = []
    for data in files:
        pid = data["pid"]
        for s in data.get("s2s", []):
            arrow = "->" if s["direction"] == "out" else "<-"
            out.append(f"s2s {s['direction']:<3} {s['local']} {arrow} {s['remote']}  "
                       f"auth {s['auth']}  peer {s['peer']}  stanzas in {s['stanzas_in']} "
                       f"out {s['stanzas_out']}  pid {pid}")
        for c in data.get("components", []):
            out.append(f"component {c['domain']}  peer {c['peer']}  pid {pid}")
    return out
