"""The test suite's PostgreSQL launcher: ``initdb`` into a temporary directory
and one ``postgres`` on a free loopback port (its socket in that directory,
no system service), stopped by whoever started it, and only that process.

PostgreSQL refuses to run as root: when the tests do, the directory belongs
to the ``postgres`` account (the Debian package creates it) and initdb and
postgres run as that account. The binaries are Debian's
(``/usr/lib/postgresql/VERSION/bin``, the newest), or ``$VINESPY_TEST_PG_BIN``;
missing ones are a failure, like a missing redis-server (tests/run installs
``postgresql``).

The superuser ``vinespy`` has a password (SCRAM over TCP), so the tests go
through the ``password`` option of the sql backend; :meth:`createdb` gives
each test a database of its own.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.support import TIMEOUT, free_port, wait_ready

USER = "vinespy"
PASSWORD = "pg-s3cret"


def pg_bin() -> Path:
    """Where initdb and postgres are; fails the test if nowhere."""
    if "VINESPY_TEST_PG_BIN" in os.environ:
        return Path(os.environ["VINESPY_TEST_PG_BIN"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(Path(p).parent.parent.name.split(".")[0]))
    if not found:
        pytest.fail("no /usr/lib/postgresql/*/bin/postgres: apt-get install postgresql "
                    "(tests/run does)")
    return Path(found[-1]).parent


class PostgresProcess:
    """One postgres server this object started (and only that one)."""

    def __init__(self) -> None:
        self.bin = pg_bin()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="vinespy-pg-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self._names = itertools.count(1)
        # As root, initdb and postgres run as the postgres account.
        self._as: dict[str, Any] = {}
        if os.getuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self.dir, account.pw_uid, account.pw_gid)
            self._as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}

    def url(self, db: str) -> str:
        """The URL of database ``db``, without the password (the backend's option)."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{db}"

    def _run(self, *argv: str) -> None:
        done = subprocess.run(argv, capture_output=True, timeout=TIMEOUT, cwd=self.dir,
                              env={**os.environ, "PGPASSWORD": PASSWORD}, **self._as)
        if done.returncode:
            raise AssertionError(f"{argv[0]} exited {done.returncode}: "
                                 f"{(done.stdout + done.stderr).decode(errors='replace')}")

    def start(self) -> None:
        data, pwfile = self.dir / "data", self.dir / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if self._as:
            os.chown(pwfile, self._as["user"], self._as["group"])
        self._run(str(self.bin / "initdb"), "-D", str(data), "-U", USER, "--pwfile", str(pwfile),
                  "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                  "--locale=C.UTF-8")
        self.resume()

    def resume(self) -> None:
        """Start postgres on the data directory and port it had: after
        :meth:`halt`, the same databases come back."""
        data = self.dir / "data"
        log = open(self.dir / "postgres.log", "ab")
        with log:
            self.proc = subprocess.Popen(
                [str(self.bin / "postgres"), "-D", str(data), "-k", str(self.dir),
                 "-p", str(self.port), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.dir, **self._as)
        wait_ready("postgres", self._ready, self.stop, every=0.05)

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"postgres exited {self.proc.returncode}: "
                                 f"{(self.dir / 'postgres.log').read_text(errors='replace')}")
        done = subprocess.run([str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1",
                               "-p", str(self.port)], timeout=TIMEOUT)
        return done.returncode == 0

    def createdb(self) -> str:
        """A new empty database; its name."""
        name = f"test{next(self._names)}"
        self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                  "-U", USER, name)
        return name

    def _processes(self) -> list[int]:
        """The postmaster and every backend it forked (its children)."""
        assert self.proc is not None
        pids = [self.proc.pid]
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        pids += [int(p) for p in children.read_text().split()]
        return pids

    def freeze(self) -> None:
        """SIGSTOP postgres and its backends: a database that hangs (a frozen
        machine, a partition) rather than one that says it is going away."""
        for pid in self._processes():
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self._processes():
            os.kill(pid, signal.SIGCONT)

    def halt(self) -> None:
        """Stop postgres as an outage does, keeping its data for :meth:`resume`."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=TIMEOUT)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)     # "fast" shutdown; SIGKILL after TIMEOUT
            try:
                proc.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresProcess]:
    """A PostgreSQL started for the block and removed after it."""
    server = PostgresProcess()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresProcess]:
    """One PostgreSQL server for the session, started the first time a test needs it."""
    with running_postgres() as server:
        yield server
