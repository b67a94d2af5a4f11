"""The test suite's one redis-server launcher: a throw-away server on a free
loopback port, no persistence, stopped by whoever started it (and only that
process). Tests never mock Redis, and a missing redis-server is a failure.

* :class:`RedisProcess`: the process itself, ``with`` it in sync code or
  ``await start()/stop()/restart()`` in async code; a subclass changes the
  listening arguments (TLS) or how clients reach it (``connection_kwargs``).
  The cluster fixtures (``tests/cluster/conftest.py``) extend it;
  ``paused()`` SIGSTOPs it for a block.
* :func:`redis_server`: a context manager yielding a redis-py client (db 0)
  of a fresh one, for unit, storage and in-process cluster tests;
  :func:`primary_and_replica`: a server and its synced replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import pytest
import redis

from tests.support import TIMEOUT, free_port

REDIS_SERVER = os.environ.get("VINESPY_TEST_REDIS", "/usr/bin/redis-server")


class RedisProcess:
    """One redis-server process this object started (and only that one)."""

    def __init__(self, dir: Path, *, password: str | None = None,
                 args: Sequence[str] = ()) -> None:
        self.dir = dir
        self.port = free_port()
        self.password = password
        self.args = tuple(args)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = dir / "redis.log"

    def listen_args(self) -> list[str]:
        """Where it listens (a TLS subclass moves the port to ``--tls-port``)."""
        return ["--port", str(self.port)]

    def argv(self) -> list[str]:
        auth = ["--requirepass", self.password] if self.password is not None else []
        return [REDIS_SERVER, *self.listen_args(), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.dir), *auth, *self.args]

    def connection_kwargs(self) -> dict[str, Any]:
        """What a redis-py client (sync or asyncio) needs to reach db 0."""
        return {"host": "127.0.0.1", "port": self.port, "password": self.password}

    def __enter__(self) -> RedisProcess:
        self._start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()

    async def start(self) -> None:
        await asyncio.to_thread(self._start)

    async def stop(self) -> None:
        await asyncio.to_thread(self._stop)

    async def restart(self) -> None:
        """Stop and start again on the same port: every key is gone."""
        await self.stop()
        await self.start()

    def _start(self) -> None:
        if not os.access(REDIS_SERVER, os.X_OK):
            pytest.fail(f"{REDIS_SERVER} is missing: apt-get install redis-server "
                        "(tests/run does)")
        with open(self._log, "ab") as log:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + TIMEOUT
            while not self._answers():      # poll PING: no event tells when it listens
                if time.monotonic() > deadline:
                    raise AssertionError(f"redis-server did not answer PING within "
                                         f"{TIMEOUT:g} s")
                time.sleep(0.01)
        except BaseException:
            self._stop()
            raise

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"redis-server exited {self.proc.returncode}: "
                                 f"{self._log.read_text(errors='replace')[-2000:]}")
        c = redis.Redis(**self.connection_kwargs(), socket_connect_timeout=1, socket_timeout=5)
        try:
            return bool(c.ping())
        except (redis.ConnectionError, OSError):
            return False
        finally:
            c.close()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """SIGSTOP the process (a machine that hangs) for the block; SIGCONT
        after it, whatever happens in it."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.proc.send_signal(signal.SIGCONT)

    def replication(self) -> dict[str, Any]:
        """Its INFO replication (role, link status, offsets)."""
        c = redis.Redis(**self.connection_kwargs(), socket_timeout=5, decode_responses=True)
        try:
            return dict(c.info("replication"))
        finally:
            c.close()

    def _stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def redis_server(tmp_path: Path, *args: str, password: str | None = None
                 ) -> Iterator[redis.Redis]:
    """A throw-away redis-server (extra command-line ``args``); a client of it (db 0)."""
    with RedisProcess(tmp_path, password=password, args=args) as r:
        client = redis.Redis(**r.connection_kwargs(), socket_connect_timeout=1,
                             socket_timeout=5)
        try:
            yield client
        finally:
            client.close()


@contextlib.contextmanager
def primary_and_replica(tmp_path: Path) -> Iterator[tuple[RedisProcess, RedisProcess]]:
    """Two throw-away servers, the second a replica of the first, once the
    replica has synced (so that WAIT on the primary can count it)."""
    (tmp_path / "primary").mkdir()
    (tmp_path / "replica").mkdir()
    with RedisProcess(tmp_path / "primary") as primary:
        with RedisProcess(tmp_path / "replica",
                          args=("--replicaof", "127.0.0.1", str(primary.port))) as replica:
            deadline = time.monotonic() + TIMEOUT
            # Polled: the link coming up has no event to wait on.
            while replica.replication().get("master_link_status") != "up":
                if time.monotonic() > deadline:
                    raise AssertionError(f"the replica did not sync within {TIMEOUT:g} s")
                time.sleep(0.01)
            yield primary, replica


def url_of(client: redis.Redis) -> str:
    """The redis:// URL of ``redis_server``'s client (db 0)."""
    return f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/0"
