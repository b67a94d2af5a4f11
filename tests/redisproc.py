"""A throw-away redis-server for tests that need a real one (no mocks)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest
import redis

from tests.conftest import free_port

REDIS_SERVER = os.environ.get("VINESPY_TEST_REDIS", "/usr/bin/redis-server")


@contextlib.contextmanager
def redis_server(tmp_path: Path, *args: str, password: str | None = None
                 ) -> Iterator[redis.Redis]:
    """A throw-away redis-server on a free loopback port; a client of it (db 0)."""
    if not os.access(REDIS_SERVER, os.X_OK):
        pytest.fail(f"{REDIS_SERVER} is missing: apt-get install redis-server (tests/run does)")
    port = free_port()
    extra = ["--requirepass", password] if password else []
    proc = subprocess.Popen([REDIS_SERVER, "--port", str(port), "--save", "",
                             "--appendonly", "no", "--bind", "127.0.0.1", "--dir", str(tmp_path),
                             *extra, *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port, password=password,
                         socket_connect_timeout=1, socket_timeout=5)
    try:
        deadline = time.monotonic() + 10
        while True:                         # poll PING until it answers
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None:
                    pytest.fail(f"redis-server exited with status {proc.returncode}")
                if time.monotonic() > deadline:
                    pytest.fail("redis-server did not answer PING within 10 s")
                time.sleep(0.01)
        yield client
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def url_of(client: redis.Redis) -> str:
    """The redis:// URL of ``redis_server``'s client (db 0)."""
    return f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/0"
