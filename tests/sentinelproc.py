"""A Redis primary, its replica and three Sentinels watching them, each a
real process on a free loopback port (no persistence), for the cluster's
failover tests. Sentinel mode is redis-server's own (``--sentinel``), so
nothing beyond redis-server is needed."""

from __future__ import annotations

import contextlib
import signal
import time
from pathlib import Path
from typing import Any

import redis

from tests.redisproc import REDIS_SERVER, RedisProcess
from tests.support import TIMEOUT

SERVICE = "vinespy"


class SentinelProcess(RedisProcess):
    """``redis-server sentinel.conf --sentinel`` watching ``SERVICE``.

    ``down-after-milliseconds 500`` makes failovers quick, and is below the
    1 s a Sentinel waits between reconnects of a link: after
    ``+switch-master`` its link to the promoted replica may come up too late,
    and in about half the failovers every Sentinel flags the new primary
    ``s_down`` about 0.5 s after the switch, for 0.3-0.6 s (even starting a
    second failover, which aborts: no replica to promote). No Sentinel names
    a primary meanwhile. Kept on purpose: clients must ride that out
    (vinespy/cluster/connection.py, ``_primary_of``)."""

    def __init__(self, dir: Path, primary_port: int) -> None:
        super().__init__(dir)
        self.primary_port = primary_port

    def argv(self) -> list[str]:
        conf = self.dir / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} 500\n"
            f"sentinel failover-timeout {SERVICE} 3000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n")
        return [REDIS_SERVER, str(conf), "--sentinel"]


class SentinelSet:
    """Primary, replica, three Sentinels; ``failover()`` kills the primary."""

    def __init__(self, root: Path) -> None:
        for name in ("primary", "replica", "s1", "s2", "s3"):
            (root / name).mkdir(parents=True)
        self.primary = RedisProcess(root / "primary")
        self.replica = RedisProcess(
            root / "replica", args=("--replicaof", "127.0.0.1", str(self.primary.port)))
        self.sentinels = [SentinelProcess(root / f"s{i}", self.primary.port)
                          for i in (1, 2, 3)]

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{s.port}" for s in self.sentinels]

    def start(self) -> None:
        self.primary._start()
        self.replica._start()
        for s in self.sentinels:
            s._start()
        # A failover needs the Sentinels to know the replica and each other.
        self.wait(lambda: all(self._known(s) for s in self.sentinels),
                  "the Sentinels to find the replica and each other")

    def stop(self) -> None:
        for p in (*self.sentinels, self.replica, self.primary):
            if p.proc is not None:              # a frozen one would not heed SIGTERM
                self.thaw(p)
            p._stop()

    def _known(self, sentinel: SentinelProcess) -> bool:
        master = self.execute(sentinel, "SENTINEL", "MASTER", SERVICE)
        info = dict(zip(master[::2], master[1::2])) if isinstance(master, list) else master
        return int(info["num-slaves"]) >= 1 and int(info["num-other-sentinels"]) >= 2

    def master_port(self) -> int:
        """The primary's port as the first Sentinel that answers names it."""
        for s in self.sentinels:
            if s.proc is not None:
                return int(self.execute(s, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)[1])
        raise AssertionError("no Sentinel runs")

    def wait_settled(self) -> None:
        """Until every Sentinel that runs names the replica as a primary in
        good standing (flags just ``master``: no ``s_down``, ``o_down`` or
        failover in progress): what a client's discovery (redis-py's
        ``check_master_state``, ``vinespy status``) asks of one. Right after
        a promotion they may flag the new primary down for a moment (see
        SentinelProcess)."""
        def settled(s: SentinelProcess) -> bool:
            master = self.execute(s, "SENTINEL", "MASTER", SERVICE)
            info = dict(zip(master[::2], master[1::2])) if isinstance(master, list) else master
            return int(info["port"]) == self.replica.port and info["flags"] == "master"
        self.wait(lambda: all(settled(s) for s in self.sentinels if s.proc is not None),
                  "the Sentinels to settle on the promoted replica")

    def master_port_of_redis(self) -> int:
        """The port of the Redis that says it is the primary (ROLE)."""
        for r in (self.primary, self.replica):
            if r.proc is None:
                continue
            c = redis.Redis(host="127.0.0.1", port=r.port, socket_timeout=2)
            try:
                if c.execute_command("ROLE")[0] in (b"master", "master"):
                    return r.port
            finally:
                c.close()
        raise AssertionError("no Redis is primary")

    def execute(self, r: RedisProcess, *command: Any) -> Any:
        """One command to ``r`` (str replies) on a connection of its own."""
        c = redis.Redis(host="127.0.0.1", port=r.port, socket_timeout=2,
                        decode_responses=True)
        try:
            return c.execute_command(*command)
        finally:
            c.close()

    def clients(self, r: RedisProcess) -> list[dict[str, str]]:
        """CLIENT LIST of ``r`` without the connection that asks."""
        c = redis.Redis(host="127.0.0.1", port=r.port, socket_timeout=2,
                        decode_responses=True, single_connection_client=True)
        try:
            me = c.client_id()
            return [cl for cl in c.client_list() if int(cl["id"]) != me]
        finally:
            c.close()

    @staticmethod
    def freeze(r: RedisProcess) -> None:
        """SIGSTOP ``r``: alive but deaf (connections are accepted, nothing
        answers), a machine that hangs or a partition, not a crash."""
        assert r.proc is not None
        r.proc.send_signal(signal.SIGSTOP)

    @staticmethod
    def thaw(r: RedisProcess) -> None:
        assert r.proc is not None
        with contextlib.suppress(ProcessLookupError):
            r.proc.send_signal(signal.SIGCONT)

    def cut_replica(self) -> None:
        """Freeze the replica, then close its link on the primary: what the
        primary acknowledges from now on is on the primary only (nothing
        waits in a socket buffer for the replica to read once thawed), and
        the frozen replica cannot reconnect to catch up."""
        self.freeze(self.replica)
        killed = self.execute(self.primary, "CLIENT", "KILL", "TYPE", "replica")
        assert int(killed) == 1, killed

    def drop_clients(self) -> None:
        """CLIENT KILL every normal client of the primary: the nodes must
        reconnect (and so ask the Sentinels where to)."""
        c = redis.Redis(host="127.0.0.1", port=self.master_port_of_redis(), socket_timeout=2)
        try:
            c.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        finally:
            c.close()

    def wait_replicated(self) -> None:
        """Until the replica has every write the primary has (offsets equal)."""
        def offsets() -> tuple[int, int]:
            out = []
            for r in (self.primary, self.replica):
                c = redis.Redis(host="127.0.0.1", port=r.port, socket_timeout=2,
                                decode_responses=True)
                try:
                    info = c.info("replication")
                finally:
                    c.close()
                out.append(int(info.get("master_repl_offset", 0)))
            return out[0], out[1]
        self.wait(lambda: (lambda p, r: p == r)(*offsets()), "the replica to catch up")

    def kill_primary(self) -> None:
        """SIGKILL the primary: the machine is gone."""
        assert self.primary.proc is not None
        self.primary.proc.kill()
        self.primary.proc.wait()
        self.primary.proc = None

    def wait_promoted(self) -> float:
        """Until the Sentinels name the replica; the seconds it took."""
        start = time.monotonic()
        self.wait(lambda: self.master_port() == self.replica.port, "the replica's promotion")
        return time.monotonic() - start

    @staticmethod
    def wait(check: Any, what: str, timeout: float = 3 * TIMEOUT) -> None:
        """Poll ``check`` (Sentinel state has no event to wait on)."""
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
            time.sleep(0.05)


def stop_sentinels(s: SentinelSet) -> None:
    for sentinel in s.sentinels:
        sentinel._stop()


def start_sentinels(s: SentinelSet) -> None:
    """Start them again, each on its port, watching whichever is primary now."""
    for sentinel in s.sentinels:
        sentinel.primary_port = s.master_port_of_redis()
        sentinel._start()
    s.wait(lambda: all(s._known(x) for x in s.sentinels),
           "the Sentinels to find the replica and each other again")
