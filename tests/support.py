"""What the suite's fixtures and the process helpers (tests/pgproc.py,
ldapproc.py, redisproc.py) share, apart from conftest.py so that those
helpers can be imported on their own (bench/ uses them) without a circle."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from pathlib import Path
from typing import Callable

TIMEOUT = 10.0      # s: the bound of every wait in the suite


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(what: str, ready: Callable[[], bool], stop: Callable[[], None],
               every: float = 0.02) -> None:
    """Poll ``ready()`` until a server process we started accepts connections
    (no event tells when), for at most TIMEOUT; ``stop()`` it on failure."""
    try:
        deadline = time.monotonic() + TIMEOUT
        while not ready():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} did not accept connections within {TIMEOUT:g} s")
            time.sleep(every)
    except BaseException:
        stop()
        raise


async def vinespy_status(config: Path) -> str:
    """What `vinespy status` prints (run as the operator would, while the
    servers go on in this loop)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vinespy", "status", "-c", str(config),
        stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    return out.decode()
