"""The startup report: a started process tells its parent ``ok`` or why not.

A daemon and each worker get the write end of a pipe; they write one line,
``ok`` once their listeners are bound or ``error REASON``, then close it.
"""

from __future__ import annotations

import os


def one_line(text: str) -> str:
    """``text`` with every run of whitespace, newlines included, made one space."""
    return " ".join(text.split())


class Reporter:
    """The started process's end of the pipe: one report, then closed."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd

    def ok(self) -> None:
        self._send("ok")

    def error(self, reason: str) -> None:
        self._send(f"error {one_line(reason)}")

    def _send(self, line: str) -> None:
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            os.write(fd, f"{line}\n".encode())
        except OSError:
            pass                        # the operator's command is gone: nobody to tell
        finally:
            os.close(fd)

    @property
    def sent(self) -> bool:
        return self.fd is None
