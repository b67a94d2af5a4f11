"""What the suite's fixtures and the process helpers (tests/pgproc.py,
ldapproc.py, redisproc.py) share, apart from conftest.py so that those
helpers can be imported on their own (bench/ uses them) without a circle."""

from __future__ import annotations

import socket
import time
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
