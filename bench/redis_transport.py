"""One-way latency of the two candidate inter-node transports: a Redis Stream and PUBLISH.

Not part of the test suite. Issue 5 (clustering over Redis) needs a way for
one vinespy node to hand a stanza to another. The two candidates, both through
redis-py's asyncio client against a real ``redis-server``:

* **stream**: the producer runs ``XADD key MAXLEN ~ 100000 * m <payload>``;
  the consumer, on its own connection, loops on
  ``XREAD BLOCK 1000 COUNT 1000 STREAMS key <last id>`` and resumes from the
  last id it has seen;
* **pubsub**: the producer runs ``PUBLISH channel <payload>``; the consumer has
  ``SUBSCRIBE``\\ d the channel and reads with ``PubSub.get_message``.

What it measures, per transport:

* **fixed**: open loop at ``--rate`` msg/s (2,000 by default) for 0.5 s of
  warm-up (left out of the latencies) + ``--seconds`` (5), one command per
  message (awaited one after the other, as a node forwards stanzas as they
  come), sent from a 1 ms timer: p50/p99/max
  one-way latency (producer's clock just before the command -> consumer's
  clock once the reply holding it is parsed);
* **burst**: ``--burst`` messages (50,000) as fast as possible, in pipelines
  of ``--batch`` (100) commands, each pipeline awaited before the next:
  producer rate (commands acknowledged per second), delivered rate
  (messages received / time from the first send to the last receive) and the
  latency, which here is mostly queueing;
* **kill**: the fixed-rate run again, and half way through the parent kills
  the consumer's connection (``CLIENT KILL TYPE pubsub`` for pubsub,
  ``CLIENT KILL ID <consumer's id>`` for the stream). The consumer reconnects
  at once (pubsub: SUBSCRIBE again; stream: XREAD again from its last id) and
  the run counts what never arrived. PUBLISH is fire-and-forget, so whatever
  was published while nobody was subscribed is lost; the stream keeps the
  entries, so the consumer gets every one of them, in order.

How: the script starts its own ``redis-server`` on a free loopback port
(``--save '' --appendonly no``, nothing on disk) and, for each run, one
consumer and one producer as **separate processes** (this script with
``--role``), which is how two nodes would talk. Both read ``CLOCK_MONOTONIC``
(``time.monotonic_ns``), which is shared by every process on the machine, so
the one-way latency needs no clock sync. Every payload is about 300 bytes:
``"<seq> <monotonic_ns> "`` padded with ``x``; the consumer checks every
sequence number (lost = sent - distinct received, dup = received twice,
ooo = a sequence number lower than one already seen). The producer and the
consumer use uvloop when it is installed (as vinespy does).

Every row is run ``--runs`` times (3) on fresh processes and a fresh key:
latencies and rates are the medians (with the p99's min-max), counts are sums.

Pinning (2 cores): redis-server and the producer on CPU 0, the consumer alone
on CPU 1 (``--cpus REDIS,PRODUCER,CONSUMER``; ``--no-pin`` to leave it to the
scheduler). The consumer, a Python loop, is what saturates first.

Run (the results go to ``bench/results/<today>-redis-transport.md`` unless
``--out`` says otherwise)::

    nice -n 10 python3 bench/redis_transport.py
    nice -n 10 python3 bench/redis_transport.py --quick    # 1 run, 2 s, 10,000 burst
    python3 bench/redis_transport.py --rate 5000 --seconds 10 --burst 100000

Needs ``redis-server`` on PATH (or ``--redis-server``) and redis-py >= 5.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAYLOAD_SIZE = 300
WARMUP = 0.5                  # s at the start of a fixed run left out of the latencies
MAXLEN = 100_000
READY_TIMEOUT = 15.0          # s for redis-server / a consumer to be ready
RUN_TIMEOUT = 300.0           # s for one producer run
DRAIN_TIMEOUT = 10.0          # s the consumer keeps reading after the producer is done


# ------------------------------------------------------------------ redis-server ----

def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A throw-away ``redis-server`` on a free loopback port: no RDB, no AOF.

    Also used by ``bench/cluster.py``. :meth:`stop` is idempotent.
    """

    def __init__(self, binary: str = "redis-server", cpu: int | None = None) -> None:
        self.binary = shutil.which(binary) or binary
        self.cpu = cpu
        self.port = 0
        self.dir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if not Path(self.binary).exists():
            raise RuntimeError(f"redis-server not found ({self.binary}); apt-get install "
                               "redis-server or pass --redis-server")
        self.dir = Path(tempfile.mkdtemp(prefix="vinespy-bench-redis-"))
        self.port = free_port()
        cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
               "--save", "", "--appendonly", "no", "--dir", str(self.dir),
               "--daemonize", "no", "--loglevel", "warning",
               "--logfile", str(self.dir / "redis.log")]
        if self.cpu is not None and shutil.which("taskset"):
            cmd = ["taskset", "-c", str(self.cpu), *cmd]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: "
                                   f"{self.log_tail()}")
            with contextlib.suppress(OSError):
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server not up within {READY_TIMEOUT:.0f} s")

    def log_tail(self) -> str:
        if self.dir is None:
            return ""
        with contextlib.suppress(OSError):
            return (self.dir / "redis.log").read_text(errors="replace")[-2000:]
        return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid         # taskset execs redis-server: same pid

    def version(self) -> str:
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True).stdout
        for part in out.split():
            if part.startswith("v="):
                return part[2:]
        return out.strip()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


# ------------------------------------------------------------- other load ----

def system_busy() -> float:
    """CPU seconds the whole machine has been busy (every core; /proc/stat, no idle/iowait)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def pid_cpu(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """CPU used by processes other than ours over an interval, in % of one core.

    Ours = this process, its waited-for children (``RUSAGE_CHILDREN``) and the
    live ``pids`` given. Tests running beside the bench show up here.
    """

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.start()

    def _ours(self) -> float:
        import resource
        me = resource.getrusage(resource.RUSAGE_SELF)
        ch = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (me.ru_utime + me.ru_stime + ch.ru_utime + ch.ru_stime
                + sum(pid_cpu(p) for p in self.pids))

    def start(self) -> None:
        self.t0, self.b0, self.o0 = time.perf_counter(), system_busy(), self._ours()

    def percent(self) -> float:
        dt = time.perf_counter() - self.t0
        other = (system_busy() - self.b0) - (self._ours() - self.o0)
        return max(0.0, 100.0 * other / dt) if dt > 0 else 0.0


def wait_quiet(pids: list[int], limit: float = 10.0, window: float = 1.0,
               timeout: float = 60.0) -> float:
    """Wait until other processes use less than ``limit`` % of a core over ``window`` s.

    Returns the last measured other load (gives up after ``timeout`` s).
    """
    deadline = time.monotonic() + timeout
    while True:
        m = OtherLoad(pids)
        time.sleep(window)
        pct = m.percent()
        if pct < limit or time.monotonic() >= deadline:
            return pct


# ------------------------------------------------------------ child processes ----

def add_quiet_options(p: argparse.ArgumentParser, busy_retries: int) -> None:
    """The options of wait_quiet() and of discarding busy runs, and --redis-server."""
    p.add_argument("--quiet", type=float, default=5.0,
                   help="before each run, wait until other processes use less than this "
                   "%% of a core (5)")
    p.add_argument("--quiet-wait", type=float, default=60.0,
                   help="... for at most this many seconds (60; 0 = do not wait)")
    p.add_argument("--busy", type=float, default=10.0,
                   help="discard and repeat a run during which other processes used more "
                   "than this %% of a core (10)")
    p.add_argument("--busy-retries", type=int, default=busy_retries,
                   help=f"... at most this often ({busy_retries})")
    p.add_argument("--redis-server", default="redis-server")


def _use_uvloop() -> bool:
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def _client(port: int, **kw: Any) -> Any:
    """A redis-py asyncio client without hidden retries (a lost connection must show)."""
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    return aioredis.Redis(host="127.0.0.1", port=port, socket_timeout=None,
                          socket_connect_timeout=3.0, retry=Retry(NoBackoff(), 0), **kw)


def _payload(seq: int, now: int) -> bytes:
    head = b"%d %d " % (seq, now)
    return head + b"x" * (PAYLOAD_SIZE - len(head))


class Tally:
    """What the consumer saw: latencies (ns), sequence checks, reconnects."""

    def __init__(self, skip: int = 0) -> None:
        self.skip = skip                      # warm-up: no latency for seq <= skip
        self.lat: list[int] = []
        self.seen: set[int] = set()
        self.last = 0
        self.dup = 0
        self.ooo = 0
        self.first_ns = 0
        self.last_ns = 0
        self.errors = 0                       # connections lost
        self.gaps: list[float] = []           # ms from the error to reading again
        self._err_t: float | None = None

    def lost_connection(self) -> None:
        self.errors += 1
        self._err_t = time.perf_counter()

    def reconnected(self) -> None:
        if self._err_t is not None:
            self.gaps.append((time.perf_counter() - self._err_t) * 1000.0)
            self._err_t = None

    def add(self, payload: bytes, now: int) -> None:
        seq_b, ts_b, _ = payload.split(b" ", 2)
        seq = int(seq_b)
        if seq in self.seen:
            self.dup += 1
            return
        self.seen.add(seq)
        if seq < self.last:
            self.ooo += 1
        else:
            self.last = seq
        if seq > self.skip:
            self.lat.append(now - int(ts_b))
        if not self.first_ns:
            self.first_ns = now
        self.last_ns = now


async def consumer(args: argparse.Namespace) -> None:
    """Read until the parent writes ``stop N`` on stdin and N messages are in (or a timeout)."""
    import redis.exceptions as rexc
    loop = asyncio.get_running_loop()
    tally = Tally(args.skip)
    stop_at: list[int | None] = [None]
    stopped = asyncio.Event()

    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def control() -> None:
        line = await reader.readline()
        parts = line.split()
        stop_at[0] = int(parts[1]) if len(parts) == 2 else len(tally.seen)
        stopped.set()

    def done() -> bool:
        return stop_at[0] is not None and len(tally.seen) >= stop_at[0]

    async def stream() -> None:
        last_id = b"0-0"
        first = True
        while not done():
            r = _client(args.port, single_connection_client=True)
            try:
                cid = await r.client_id()
                if first:
                    print(f"ready {cid}", flush=True)
                    first = False
                tally.reconnected()
                while not done():
                    reply = await r.xread({args.key: last_id}, count=1000, block=1000)
                    if not reply:
                        continue
                    now = time.monotonic_ns()
                    entries = reply[0][1]
                    for _, fields in entries:
                        tally.add(fields[b"m"], now)
                    last_id = entries[-1][0]      # resume from here after a reconnect
            except (rexc.ConnectionError, OSError):
                tally.lost_connection()
            finally:
                with contextlib.suppress(Exception):
                    await r.aclose()

    async def pubsub() -> None:
        first = True
        while not done():
            r = _client(args.port)
            ps = r.pubsub()
            try:
                await ps.subscribe(args.key)
                # The subscribe confirmation: from here on PUBLISH reaches us.
                while (await ps.get_message(timeout=READY_TIMEOUT)) is None:
                    pass
                if first:
                    print("ready pubsub", flush=True)
                    first = False
                tally.reconnected()
                while not done():
                    msg = await ps.get_message(ignore_subscribe_messages=True, timeout=0.5)
                    if msg is not None and msg["type"] == "message":
                        tally.add(msg["data"], time.monotonic_ns())
            except (rexc.ConnectionError, OSError):
                tally.lost_connection()
            finally:
                with contextlib.suppress(Exception):
                    await ps.aclose()
                with contextlib.suppress(Exception):
                    await r.aclose()

    ctl = asyncio.create_task(control())
    work = asyncio.create_task(stream() if args.transport == "stream" else pubsub())
    await stopped.wait()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(work), DRAIN_TIMEOUT)
    work.cancel()
    ctl.cancel()
    await asyncio.gather(work, ctl, return_exceptions=True)
    lat = sorted(tally.lat)
    print(json.dumps({
        "received": len(tally.seen), "dup": tally.dup, "ooo": tally.ooo,
        "first_ns": tally.first_ns, "last_ns": tally.last_ns,
        "p50_ms": _q(lat, 0.50), "p99_ms": _q(lat, 0.99),
        "max_ms": lat[-1] / 1e6 if lat else float("nan"),
        "reconnects": tally.errors, "gaps_ms": tally.gaps,
    }), flush=True)


def _q(sorted_ns: list[int], q: float) -> float:
    if not sorted_ns:
        return float("nan")
    return sorted_ns[min(len(sorted_ns) - 1, int(round(q * (len(sorted_ns) - 1))))] / 1e6


async def producer(args: argparse.Namespace) -> None:
    """Send at a fixed rate or as a pipelined burst; print {sent, t0, t1} as JSON."""
    r = _client(args.port, single_connection_client=True)
    key = args.key
    stream = args.transport == "stream"

    def cmd(target: Any, seq: int) -> Any:
        data = _payload(seq, time.monotonic_ns())
        if stream:
            return target.xadd(key, {b"m": data}, maxlen=MAXLEN, approximate=True)
        return target.publish(key, data)

    await r.ping()
    sent = 0
    errors = 0
    t0 = time.monotonic_ns()
    if args.mode == "burst":
        while sent < args.count:
            n = min(args.batch, args.count - sent)
            pipe = r.pipeline(transaction=False)
            for i in range(n):
                cmd(pipe, sent + i + 1)
            await pipe.execute()
            sent += n
    else:
        rate, seconds = args.rate, args.seconds + WARMUP
        start = time.perf_counter()
        while True:
            now = time.perf_counter()
            if now - start >= seconds:
                break
            due = int((now - start) * rate) - sent
            for _ in range(max(0, due)):
                sent += 1
                try:
                    await cmd(r, sent)
                except Exception:
                    errors += 1
            await asyncio.sleep(0.001)
    t1 = time.monotonic_ns()
    await r.aclose()
    print(json.dumps({"sent": sent, "t0": t0, "t1": t1, "errors": errors}), flush=True)


# ------------------------------------------------------------------ the parent ----

def _child_cmd(args: argparse.Namespace, role: str, transport: str, key: str,
               cpu: int | None, extra: list[str]) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--role", role,
           "--transport", transport, "--key", key, "--port", str(args.port), *extra]
    if cpu is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(cpu), *cmd]
    return cmd


def _readline(proc: subprocess.Popen[str], timeout: float, what: str) -> str:
    """One stdout line of a child, or RuntimeError (with its stderr) on timeout/exit."""
    import selectors
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            raise RuntimeError(f"{what}: no answer within {timeout:.0f} s")
    finally:
        sel.close()
    line = proc.stdout.readline()
    if not line:
        proc.wait(5)
        err = proc.stderr.read() if proc.stderr else ""
        raise RuntimeError(f"{what}: exited with {proc.returncode}: {err[-1500:]}")
    return line


async def _kill_later(port: int, transport: str, client_id: str, delay: float) -> str:
    import redis.asyncio as aioredis
    await asyncio.sleep(delay)
    r = aioredis.Redis(host="127.0.0.1", port=port)
    try:
        if transport == "pubsub":
            n = await r.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            return f"CLIENT KILL TYPE pubsub ({n} killed)"
        n = await r.execute_command("CLIENT", "KILL", "ID", client_id)
        return f"CLIENT KILL ID {client_id} ({n} killed)"
    finally:
        await r.aclose()


def run_one(args: argparse.Namespace, transport: str, scenario: str) -> dict[str, Any]:
    """One consumer + one producer process for (transport, scenario); the figures."""
    key = f"bench:{transport}:{scenario}:{time.monotonic_ns()}"
    skip = 0
    if scenario == "burst":
        extra = ["--mode", "burst", "--count", str(args.burst), "--batch", str(args.batch)]
    else:
        extra = ["--mode", "fixed", "--rate", str(args.rate), "--seconds", str(args.seconds)]
        skip = int(args.rate * WARMUP)
    quiet = wait_quiet([args.redis_pid], args.quiet, timeout=args.quiet_wait) \
        if args.quiet_wait > 0 else float("nan")
    other = OtherLoad([args.redis_pid])
    cons = subprocess.Popen(_child_cmd(args, "consume", transport, key, args.cpu_cons,
                                       ["--skip", str(skip)]),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    prod: subprocess.Popen[str] | None = None
    try:
        ready = _readline(cons, READY_TIMEOUT, f"{transport} consumer").split()
        if ready[:1] != ["ready"]:
            raise RuntimeError(f"{transport} consumer: unexpected {ready!r}")
        prod = subprocess.Popen(_child_cmd(args, "produce", transport, key, args.cpu_prod,
                                           extra),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        killed = ""
        if scenario == "kill":
            killed = asyncio.run(_kill_later(args.port, transport, ready[1],
                                             WARMUP + args.seconds / 2))
        p = json.loads(_readline(prod, RUN_TIMEOUT, f"{transport} producer"))
        prod.wait(10)
        assert cons.stdin is not None
        cons.stdin.write(f"stop {p['sent']}\n")
        cons.stdin.flush()
        c = json.loads(_readline(cons, DRAIN_TIMEOUT + 15, f"{transport} consumer"))
        cons.wait(10)
        other_pct = other.percent()
    finally:
        for proc in (prod, cons):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(5)
    sent, received = p["sent"], c["received"]
    out: dict[str, Any] = {
        "transport": transport, "scenario": scenario, "sent": sent, "received": received,
        "lost": sent - received, "dup": c["dup"], "ooo": c["ooo"],
        "p50_ms": c["p50_ms"], "p99_ms": c["p99_ms"], "max_ms": c["max_ms"],
        "prod_rate": sent / max(1e-9, (p["t1"] - p["t0"]) / 1e9),
        "delivered_rate": (received / max(1e-9, (c["last_ns"] - p["t0"]) / 1e9)
                           if received else 0.0),
        "reconnects": c["reconnects"], "gaps_ms": c["gaps_ms"], "killed": killed,
        "send_errors": p["errors"], "other_cpu": other_pct, "quiet": quiet,
    }
    return out


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from several runs: medians of the figures, sums of the counts."""
    if len(runs) == 1:
        r = dict(runs[0])
        if "error" not in r:
            r["p99_lo"] = r["p99_hi"] = r["p99_ms"]
            r["lost_each"] = [r["lost"]]
        return r
    out = dict(runs[0])
    for k in ("p50_ms", "p99_ms", "max_ms", "prod_rate", "delivered_rate"):
        out[k] = statistics.median(r[k] for r in runs)
    out["other_cpu"] = max(r["other_cpu"] for r in runs)
    for k in ("sent", "received", "lost", "dup", "ooo", "reconnects", "send_errors"):
        out[k] = sum(r[k] for r in runs)
    out["gaps_ms"] = [g for r in runs for g in r["gaps_ms"]]
    out["p99_lo"] = min(r["p99_ms"] for r in runs)
    out["p99_hi"] = max(r["p99_ms"] for r in runs)
    out["lost_each"] = [r["lost"] for r in runs]
    return out


def python_cmd() -> str:
    """How this interpreter is called, relative to the checkout when inside it."""
    exe = Path(sys.executable)
    with contextlib.suppress(ValueError):
        return str(exe.relative_to(ROOT))
    return exe.name


def git_rev() -> str:
    """The checkout's commit, ``+ changes`` when the work tree differs from it."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                             capture_output=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, text=True, capture_output=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return f"{rev or '?'}{' + uncommitted changes' if dirty else ''}"


def machine() -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}"


SCEN_LABEL = {"fixed": "fixed {rate:,.0f} msg/s", "burst": "burst {burst:,} (pipelines of {batch})",
              "kill": "fixed + CLIENT KILL mid-run"}


def table(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = ["| transport | scenario | sent | lost | dup | ooo | p50 ms | p99 ms (min–max) "
             "| max ms | producer msg/s | delivered msg/s | other CPU % |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['transport']} | {r['scenario']} | error: {r['error']} "
                         "| | | | | | | | | |")
            continue
        label = SCEN_LABEL[r["scenario"]].format(rate=args.rate, burst=args.burst,
                                                 batch=args.batch, half=args.seconds / 2)
        lines.append(
            f"| {r['transport']} | {label} | {r['sent']:,} | {r['lost']:,} | {r['dup']} "
            f"| {r['ooo']} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} "
            f"({r['p99_lo']:.3f}–{r['p99_hi']:.3f}) | {r['max_ms']:.2f} "
            f"| {r['prod_rate']:,.0f} | {r['delivered_rate']:,.0f} | {r['other_cpu']:.0f} |")
    return "\n".join(lines)


def report(results: list[dict[str, Any]], args: argparse.Namespace, redis_version: str,
           loop: str, discarded: int) -> str:
    import redis
    kills = []
    for r in results:
        if r.get("scenario") == "kill" and "error" not in r:
            gaps = ", ".join(f"{g:.1f}" for g in r["gaps_ms"])
            each = " + ".join(f"{n:,}" for n in r["lost_each"])
            how = ("CLIENT KILL TYPE pubsub" if r["transport"] == "pubsub"
                   else "CLIENT KILL ID <the consumer's CLIENT ID>")
            kills.append(f"- **{r['transport']}** ({args.runs} run(s), {how} in each): "
                         f"the consumer reconnected {r['reconnects']} time(s)"
                         + (f", reading again {gaps} ms after the error" if gaps else "")
                         + f"; **{r['lost']:,} of {r['sent']:,} messages lost** ({each}), "
                         f"{r['dup']} duplicated, {r['ooo']} out of order.")
    pin = ("not pinned" if args.cpu_redis is None else
           f"redis-server on CPU {args.cpu_redis}, producer on CPU {args.cpu_prod}, "
           f"consumer on CPU {args.cpu_cons}")
    return f"""# Redis transports for the cluster: Stream vs PUBLISH (one-way latency)

`{' '.join([python_cmd(), 'bench/redis_transport.py', *sys.argv[1:]])}` on
{datetime.date.today().isoformat()}: {machine()}; Python {platform.python_version()},
redis-py {redis.__version__} (no hiredis: {'installed' if _has('hiredis') else 'not installed'}),
{loop}; redis-server {redis_version} (`--save '' --appendonly no`, loopback TCP); {pin}.

{table(results, args)}

Loss when the consumer's connection is killed half way through the kill run:

{chr(10).join(kills) if kills else '- (not run)'}

## How it was measured

- One consumer process and one producer process per run (this script with
  `--role`), as two nodes would be; a fresh stream key / channel per run.
  {args.runs} run(s) per row: latencies and rates are medians over the runs
  (the p99's spread in brackets), sent/lost/dup/ooo are sums.
- Payload ≈ {PAYLOAD_SIZE} bytes: `"<seq> <monotonic_ns> "` padded. Latency = the
  consumer's `time.monotonic_ns()` once the reply holding the message is parsed
  − the producer's just before the command (one CLOCK_MONOTONIC for every
  process on the machine).
- **stream**: `XADD key MAXLEN ~ {MAXLEN} * m <payload>`; the consumer on its own
  connection: `XREAD BLOCK 1000 COUNT 1000 STREAMS key <last id>`, resuming
  from the last id it has seen (after a reconnect too).
- **pubsub**: `PUBLISH channel <payload>`; the consumer: `SUBSCRIBE channel`,
  then `PubSub.get_message()` in a loop; after a lost connection, SUBSCRIBE again.
- **fixed**: one command per message, awaited in turn, from a 1 ms timer at
  {args.rate:,.0f} msg/s for {WARMUP:g} s of warm-up (not in the latencies) +
  {args.seconds:g} s. **burst**: {args.burst:,} messages in pipelines of {args.batch}
  (`transaction=False`), each awaited before the next;
  *producer msg/s* = commands acknowledged per second, *delivered msg/s* =
  messages received / (last receive − first send).
- **kill**: the fixed run; at {WARMUP + args.seconds / 2:g} s the parent runs
  `CLIENT KILL TYPE pubsub` or `CLIENT KILL ID <consumer's CLIENT ID>`.
- lost = sent − distinct sequence numbers received (after a drain of up to
  {DRAIN_TIMEOUT:g} s); dup = received twice; ooo = lower than one already seen.
- *other CPU %*: CPU used by every process but the bench's own (redis-server,
  producer, consumer, parent) during the run, from `/proc/stat`, in % of one
  core, the highest of the runs. Before each run the bench waits (up to
  {args.quiet_wait:g} s) until that is below {args.quiet:g}%; tests running beside
  it show up here. A run during which they used more than {args.busy:g}% is
  discarded and run again (up to {args.busy_retries} times; {discarded} run(s)
  discarded this time); a high figure left in the table means the latencies of
  that row are partly someone else's.
- redis-py clients with retries off (`Retry(NoBackoff(), 0)`), so a killed
  connection surfaces as an error and the consumer's own reconnect is what is
  measured.
"""


def _has(mod: str) -> bool:
    try:
        __import__(mod)
    except ImportError:
        return False
    return True


def parent(args: argparse.Namespace) -> int:
    if args.no_pin:
        args.cpu_redis = args.cpu_prod = args.cpu_cons = None
    else:
        args.cpu_redis, args.cpu_prod, args.cpu_cons = (int(c) for c in args.cpus.split(","))
    import redis.asyncio  # noqa: F401 - now, not in the middle of a kill run
    if args.quick:
        args.seconds = min(args.seconds, 2.0)
        args.burst = min(args.burst, 10_000)
        args.runs = 1
    server = RedisServer(args.redis_server, args.cpu_redis)
    results: list[dict[str, Any]] = []
    discarded = [0]
    loop = "uvloop" if _has("uvloop") else "asyncio loop"
    try:
        server.start()
        args.port, args.redis_pid = server.port, server.pid
        print(f"redis-server {server.version()} pid {server.pid} on port {server.port}",
              flush=True)
        for transport in args.transports.split(","):
            for scenario in args.scenarios.split(","):
                runs: list[dict[str, Any]] = []
                for i in range(args.runs):
                    print(f"-- {transport} / {scenario} run {i + 1}/{args.runs} ...", flush=True)
                    try:
                        r = run_one(args, transport, scenario)
                        for _ in range(args.busy_retries):
                            if r["other_cpu"] <= args.busy:
                                break
                            print(f"   other processes used {r['other_cpu']:.0f}% of a core: "
                                  "run discarded, again", flush=True)
                            discarded[0] += 1
                            r = run_one(args, transport, scenario)
                    except Exception as exc:             # noqa: BLE001 - report and go on
                        r = {"transport": transport, "scenario": scenario,
                             "error": str(exc).splitlines()[0][:200]}
                        print(f"   error: {exc}", file=sys.stderr, flush=True)
                        runs = [r]
                        break
                    print(f"   sent {r['sent']} lost {r['lost']} dup {r['dup']} ooo {r['ooo']} "
                          f"p50 {r['p50_ms']:.3f} p99 {r['p99_ms']:.3f} max {r['max_ms']:.2f} ms "
                          f"prod {r['prod_rate']:,.0f}/s delivered {r['delivered_rate']:,.0f}/s "
                          f"other CPU {r['other_cpu']:.0f}%"
                          + (f" [{r['killed']}]" if r["killed"] else ""), flush=True)
                    runs.append(r)
                results.append(combine(runs))
        version = server.version()
    finally:
        server.stop()
    text = report(results, args, version, loop, discarded[0])
    print()
    print(table(results, args))
    if args.out != "-":
        out = Path(args.out or ROOT / "bench" / "results"
                   / f"{datetime.date.today().isoformat()}-redis-transport.md")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"\nwritten to {out}")
    return 1 if any("error" in r for r in results) else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=2000.0, help="fixed-rate msg/s (2000)")
    p.add_argument("--seconds", type=float, default=5.0, help="fixed-rate duration (5)")
    p.add_argument("--burst", type=int, default=50_000, help="burst messages (50000)")
    p.add_argument("--batch", type=int, default=100, help="burst pipeline size (100)")
    p.add_argument("--runs", type=int, default=3, help="runs per row; medians (3)")
    p.add_argument("--quick", action="store_true",
                   help="1 run, 2 s fixed runs, 10,000-message burst")
    p.add_argument("--transports", default="stream,pubsub")
    p.add_argument("--scenarios", default="fixed,burst,kill")
    p.add_argument("--cpus", default="0,0,1", help="CPUs of redis,producer,consumer (0,0,1)")
    p.add_argument("--no-pin", action="store_true", help="no taskset")
    add_quiet_options(p, busy_retries=4)
    p.add_argument("--out", default=None, help="markdown file (default "
                   "bench/results/<today>-redis-transport.md), - = none")
    # internal: the child processes
    p.add_argument("--role", choices=("parent", "consume", "produce"), default="parent",
                   help=argparse.SUPPRESS)
    p.add_argument("--transport", help=argparse.SUPPRESS)
    p.add_argument("--key", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, help=argparse.SUPPRESS)
    p.add_argument("--skip", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.role == "parent":
        return parent(args)
    _use_uvloop()
    asyncio.run(consumer(args) if args.role == "consume" else producer(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
