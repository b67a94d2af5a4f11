"""The throw-away PostgreSQL of ``bench/storage.py``: ``tests/pgproc.py``'s
:class:`PostgresProcess` (initdb in a temporary directory, ``fsync=off``,
SCRAM password over TCP) with ``pg_stat_statements`` loaded, its CPU read
from ``/proc``, pinned with the server under test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# tests.conftest first: it imports tests.pgproc at its end (the fixture), and
# tests.pgproc imports it back.
import tests.conftest  # noqa: E402,F401
from tests.pgproc import PASSWORD, USER, PostgresProcess  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


class BenchPostgres(PostgresProcess):
    password = PASSWORD

    def __init__(self) -> None:
        super().__init__()
        self.conn: Any = None

    def start_with_statements(self) -> None:
        """Start; load pg_stat_statements (a restart: shared_preload_libraries)."""
        self.start()
        self.psql("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        self.halt()
        self.resume()
        self.psql("CREATE EXTENSION pg_stat_statements")

    def psql(self, sql: str) -> str:
        done = subprocess.run(
            [str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER,
             "-d", "postgres", "-At", "-c", sql], capture_output=True, text=True, timeout=60,
            env={**os.environ, "PGPASSWORD": PASSWORD})
        if done.returncode:
            raise RuntimeError(f"psql {sql!r}: {done.stderr.strip()}")
        return done.stdout.strip()

    def version(self) -> str:
        out = subprocess.run([str(self.bin / "postgres"), "--version"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        return f"{out.replace('postgres (PostgreSQL)', 'PostgreSQL')} (fsync=off)"

    def pids(self) -> list[int]:
        """The postmaster and its children (backends, background workers)."""
        assert self.proc is not None
        main = self.proc.pid
        out = [main]
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if int(_stat(int(entry))[1]) == main:
                        out.append(int(entry))
                except (OSError, IndexError):
                    pass
        return out

    def cpu(self) -> float:
        """CPU seconds of every postgres process: the live ones, and the
        exited ones the postmaster reaped (its cutime + cstime)."""
        total = 0.0
        for pid in self.pids():
            try:
                f = _stat(pid)
            except OSError:
                continue
            total += int(f[11]) + int(f[12])
            if self.proc is not None and pid == self.proc.pid:
                total += int(f[13]) + int(f[14])
        return total / _TICK

    def pin(self, cpu: int) -> None:
        """Every postgres process, and so every backend forked later, on ``cpu``."""
        for pid in self.pids():
            try:
                os.sched_setaffinity(pid, {cpu})
            except OSError:
                pass

    async def connect(self) -> None:
        """The bench's own connection, for the counters (to ``postgres``)."""
        import asyncpg
        self.conn = await asyncpg.connect(host="127.0.0.1", port=self.port, user=USER,
                                          password=PASSWORD, database="postgres")

    async def disconnect(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            await conn.close()

    async def statements(self, db: str) -> int:
        """Statements run so far in database ``db`` (calls in pg_stat_statements)."""
        return int(await self.conn.fetchval(
            "SELECT coalesce(sum(s.calls), 0) FROM pg_stat_statements s "
            "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = $1", db))

    async def by_statement(self, db: str) -> dict[str, int]:
        """Calls so far per normalized statement text, in database ``db``."""
        rows = await self.conn.fetch(
            "SELECT s.query, sum(s.calls) AS calls FROM pg_stat_statements s "
            "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = $1 GROUP BY s.query", db)
        return {" ".join(r["query"].split()): int(r["calls"]) for r in rows}
