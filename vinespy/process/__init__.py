"""Running the server as processes: pid files, the daemon, the worker supervisor.

:mod:`~vinespy.process.pidfile` records who runs (``pid/vinespy.pid``, and
``pid/vinespy.workers`` for ``--workers N``); :mod:`~vinespy.process.daemon`
detaches a server from the terminal and stops one; :mod:`~vinespy.process.workers`
supervises N forked servers sharing the ports. A started process reports
``ok`` or one error line back through a pipe (:mod:`~vinespy.process.report`).

No argument parsing and no printing for the operator: :mod:`vinespy.cli`
does that. Expected failures raise :class:`ProcessError` with a one-line
message.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..accounts import AccountError
from ..config import ConfigError
from ..jid import JIDError
from ..storage import StorageError


class ProcessError(Exception):
    """A server cannot be started or stopped; ``str()`` is one line for the operator."""


# Errors whose message is meant for the operator: one line, no traceback.
OPERATOR_ERRORS: tuple[type[Exception], ...] = (
    ProcessError, ConfigError, AccountError, StorageError, JIDError,
)


def process_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as gone; 0 and
    negative numbers, which kill() takes for process groups, are none)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True                     # exists, but belongs to someone else
    return _proc_state(pid) != "Z"


def _proc_state(pid: int) -> str | None:
    """The state letter of /proc/PID/stat (Linux); None where there is no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0]
