"""Two vinespy nodes clustered through one Redis: same-node vs cross-node messaging.

Not part of the test suite. Issue 5 routes a stanza whose recipient is bound
at another node through Redis. This measures what that costs, against the
same traffic kept inside one node, with the raw-XMPP generator of
``bench/load.py`` (imported, not modified):

* **standalone** (baseline, ``--layouts`` may leave it out): one node
  without a ``[cluster]`` table, both users of every pair on it;
* **same-node**: two clustered nodes A and B up, both users of every pair on A
  (B idle, connected to Redis);
* **cross-node**: the even user of every pair on A, the odd one on B, so
  every message crosses Redis (half A->B, half B->A: in the closed loop every
  receiver is also a sender).

For each layout, ``--runs`` times (3; 1 with ``--quick``), on fresh
connections:

* **fixed**: open loop at ``--rate`` msg/s in total (2,000) to the partner's
  bare JID, as ``load.scenario_fixed``: p50/p99 latency (send -> receive, one
  clock, the generator's), lost/misrouted/out-of-order;
* **saturation**: closed loop, ``--window`` (20) messages in flight per pair,
  as ``load.scenario_saturation``: delivered msg/s, CPU per message of node A,
  node B and redis-server (``/proc/PID/stat``), the generator's CPU; each
  node's RSS (``VmRSS``) and Redis's ``used_memory`` at the end of the
  measured interval, load still on (the fixed-rate runs measure CPU per
  message too);
* **Redis commands per message**: ``CONFIG RESETSTAT`` at the start of the
  measured saturation interval, ``INFO commandstats`` at its end, each
  command's calls divided by the messages delivered in the interval (the
  bench's own CONFIG/INFO are left out; heartbeats and the like are in).

How: a throw-away site from ``bench/targets.py`` (``Vinespy.prepare``: its
certificate, fs storage with ``u0``..``u{N-1}`` whose SCRAM keys are computed
once, the same config as the single-node bench: rate limit off, logging at
warning, the chat modules only), a ``redis-server`` of its own on a free port
(``--save '' --appendonly no``), and one config file per node,
``node-a/config.toml`` and ``node-b/config.toml``, which differ only in the
client port and ``[cluster] node``; both point at the site's ``data/`` and
certificate with absolute paths (a config outside ``conf/`` has its own base
directory, so each node gets its own pid file and log)::

    [cluster]
    url = "redis://127.0.0.1:PORT/0"
    node = "bench-a"                  # bench-b

Each node runs ``python -m vinespy start -c node-X/config.toml`` (cwd = the
site), stdout+stderr in ``node-X/log/stdout.log``; it is ready once its port
accepts a real STARTTLS + PLAIN login (``targets.check_login``). Before the
cluster layouts a probe logs ``u0`` in on A and ``u1`` on B and sends one
message each way to the other's bare JID; if that does not arrive within
``--probe-timeout`` s, the cross-node layout is reported as an error (with
what was received) and the others still run.

Pinning (2 cores; ``--cpus A,B,REDIS,GEN``, default ``0,0,0,1``): everything
the cluster needs -- both nodes and redis-server -- shares CPU 0 and the
generator has CPU 1 to itself, as in ``bench/run.py`` (server on 0, generator
on 1). The same-node and cross-node figures then spend the same one core, so
their ratio is the price of crossing Redis (node A's and B's work and
Redis's), not of having more cores; a real cluster would give each node its
own machine. ``--cpus 0,1,0,1`` puts B on the generator's core instead.

Run it (after ``tests/run`` or ``pip install -e .``; it needs ``redis-server``
on PATH and redis-py), as root or not, with ``nice`` when tests run beside it::

    nice -n 10 python3 bench/cluster.py --quick      # ~1.5 min: 50 pairs, 3 s runs, 1 run
    nice -n 10 python3 bench/cluster.py              # ~6 min: 100 pairs, 10 s runs, 3 runs
    python3 bench/cluster.py --layouts cross --runs 1 --keep   # keep the site for its logs

Results: a table on stdout and the same as Markdown in
``bench/results/<today>-cluster.md`` (``--out``). Exit status 0 when every
layout ran with 0 lost / misrouted / out-of-order, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(HERE), str(ROOT)):
    if p not in sys.path:
        sys.path.insert(0, p)

import load  # noqa: E402
import targets  # noqa: E402
from redis_transport import (  # noqa: E402
    OtherLoad, RedisServer, add_quiet_options, git_rev, machine, python_cmd, wait_quiet)

PASSWORD = "bench-password"
DOMAIN = load.DOMAIN
START_TIMEOUT = 60.0          # s for a node to accept a real login
STOP_TIMEOUT = 20.0           # s for a node to exit after SIGTERM
PHASE_TIMEOUT = 300.0         # s for one scenario run, all included
GEN_LIMIT = 85.0              # % of the generator's core above which a figure is flagged
BENCH_COMMANDS = {"config", "config|resetstat", "info", "client", "client|setinfo",
                  "hello", "ping"}


# ------------------------------------------------------------------- nodes -----

class Node:
    """One ``vinespy start`` process with its own config file, pinned to a CPU."""

    def __init__(self, name: str, site: Path, port: int, cpu: int | None,
                 cluster_url: str | None, node_id: str | None, tree: Path = ROOT,
                 dirname: str | None = None) -> None:
        self.name = name
        self.site = site
        self.dir = site / (dirname or f"node-{name}")
        self.tree = tree             # the directory holding the ``vinespy`` package it runs
        self.port = port
        self.cpu = cpu
        self.cluster_url = cluster_url
        self.node_id = node_id
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.dir / "config.toml"

    @property
    def log(self) -> Path:
        return self.dir / "log" / "stdout.log"

    def write_config(self) -> None:
        from vinespy import modules
        (self.dir / "log").mkdir(parents=True, exist_ok=True)
        wanted = ", ".join(f'"{m}"' for m in modules.available() if m in targets.CHAT_MODULES)
        text = (
            'log = "warning"\n'
            f'certs = "{self.site / "conf" / "certs"}"\n'
            "[[host]]\n"
            f'domains = ["{DOMAIN}"]\n'
            f"modules = [{wanted}]\n"
            "[host.storage]\n"
            'backend = "fs"\n'
            f'dir = "{self.site / "data"}"\n'
            "[client]\n"
            'address = "127.0.0.1"\n'
            f"port = {self.port}\n"
            'tls = "required"\n'
            "rate_limit = 0\n"
            f"max_resources_per_account = {targets.MAX_RESOURCES}\n"
            "auth_timeout = 600\n"
            "[server]\nenabled = false\n"
            "[http]\nenabled = false\n"
            "[component]\nenabled = false\n")
        if self.cluster_url is not None:
            text += f'[cluster]\nurl = "{self.cluster_url}"\nnode = "{self.node_id}"\n'
        self.config.write_text(text)

    def start(self) -> None:
        """Start; return once a real STARTTLS + PLAIN login works (or raise, stopped)."""
        self.write_config()
        cmd = [sys.executable, "-m", "vinespy", "start", "-c", str(self.config)]
        if self.cpu is not None and shutil.which("taskset"):
            cmd = ["taskset", "-c", str(self.cpu), *cmd]
        pp = os.environ.get("PYTHONPATH")
        src = str(self.tree)
        env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{pp}" if pp else src}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, cwd=self.site, env=env, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT,
                                         preexec_fn=targets._raise_nofile,
                                         start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        last = "port never opened"
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"node {self.name} exited with {self.proc.returncode}:\n"
                                   f"{self.tail()}")
            if targets.port_open(self.port):
                try:
                    targets.check_login(self.port, "u0", PASSWORD)
                    return
                except (OSError, targets.XMPPError) as exc:
                    last = f"login failed: {exc}"
            time.sleep(0.25)
        raise RuntimeError(f"node {self.name} not up within {START_TIMEOUT:.0f} s ({last}):\n"
                           f"{self.tail()}")

    def tail(self, lines: int = 25) -> str:
        return "\n".join(f"    {line}" for line in targets._tail(self.log, lines).splitlines())

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid         # taskset execs python: the Popen pid is the server

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM, wait, then SIGKILL the whole session; idempotent."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                print(f"node {self.name}: no exit {STOP_TIMEOUT:.0f} s after SIGTERM; SIGKILL",
                      file=sys.stderr)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


def cpu_of(nodes: list[Node], redis: RedisServer | None) -> dict[str, float]:
    out = {n.name: load.proc_cpu(n.pid) for n in nodes if n.alive()}
    if redis is not None and redis.proc is not None:
        out["redis"] = load.proc_cpu(redis.pid)
    return out


# -------------------------------------------------------------- generator -----

@dataclass
class Layout:
    """Which node each user of a pair logs in to."""

    name: str
    even: Node              # u0, u2, ...
    odd: Node               # u1, u3, ...
    nodes: list[Node]       # every node whose CPU counts
    redis: RedisServer | None
    stats: Any = None       # a redis.asyncio client for CONFIG RESETSTAT / INFO, or None

    def pids(self) -> list[int]:
        """Our processes besides the generator: the nodes and redis-server."""
        return [n.pid for n in self.nodes if n.alive()] + (
            [self.redis.pid] if self.redis is not None and self.redis.proc else [])

    def node_of(self, i: int) -> Node:
        return self.even if i % 2 == 0 else self.odd


async def quiesce(layout: Layout) -> None:
    await asyncio.gather(*(load.quiesce(n.pid) for n in layout.nodes))


async def pairs_up(layout: Layout, pairs: int, parallel: int = 50) -> list[load.Pair]:
    """Log in u0..u{2*pairs-1} (resource r0) on their layout's nodes; load.Pair each."""
    by_node: dict[str, list[str]] = {}
    for i in range(2 * pairs):
        by_node.setdefault(layout.node_of(i).name, []).append(f"u{i}")
    node = {n.name: n for n in (layout.even, layout.odd)}
    conns: list[load.Conn] = []
    try:
        for name, users in by_node.items():
            env = load.Env(node[name].port, node[name].pid, PASSWORD)
            await load.learn_salts(env, users)
            conns += await load.login_many(env.port, env.ctx, [(u, "r0") for u in users],
                                           PASSWORD, parallel, retries=2)
    except BaseException:
        load.close_all(conns)
        raise
    by_user = {c.jid.split("@", 1)[0]: c for c in conns}
    out = [load.Pair(i, by_user[f"u{i}"], i ^ 1, by_user[f"u{i ^ 1}"].jid)
           for i in range(2 * pairs)]
    await asyncio.sleep(1.0)        # presence echoes and the like, before the handlers go on
    await quiesce(layout)
    for p in out:
        p.conn.on_data = p.data
    return out


async def commandstats(stats: Any) -> dict[str, tuple[int, float]]:
    """INFO commandstats: command -> (calls, usec)."""
    info = await stats.info("commandstats")
    out: dict[str, tuple[int, float]] = {}
    for key, v in info.items():
        name = key.removeprefix("cmdstat_")
        if name in BENCH_COMMANDS:
            continue
        out[name] = (int(v["calls"]), float(v["usec"]))
    return out


async def saturation(layout: Layout, pairs: int, window: int, warmup: float,
                     seconds: float, drain: float = 5.0) -> dict[str, Any]:
    """load.closed_loop over the layout; CPU per node and Redis commands too."""
    async def probe() -> load.Finish:
        if layout.stats is not None:
            await layout.stats.config_resetstat()
        other = OtherLoad(layout.pids())
        c0, t0 = cpu_of(layout.nodes, layout.redis), time.perf_counter()

        async def finish(delivered: int) -> dict[str, Any]:
            c1, t1 = cpu_of(layout.nodes, layout.redis), time.perf_counter()
            busy = 100 * sum(c1[k] - c0[k] for k in c0) / (t1 - t0)  # nodes + redis
            o = other.percent()
            cmds = await commandstats(layout.stats) if layout.stats is not None else {}
            out: dict[str, Any] = {"other_cpu": o, "cluster_cpu_pct": busy}
            for k in c0:
                out[f"cpu_us_{k}"] = ((c1[k] - c0[k]) / delivered * 1e6 if delivered
                                      else float("nan"))
            out["cpu_us_nodes"] = sum(out[f"cpu_us_{n.name}"] for n in layout.nodes)
            for n in layout.nodes:                  # load still on: what is held in flight
                with contextlib.suppress(OSError, RuntimeError):
                    out[f"rss_kb_{n.name}"] = load.proc_rss_kb(n.pid)
            if layout.stats is not None:
                mem = await layout.stats.info("memory")
                out["redis_mem_kb"] = int(mem["used_memory"]) / 1024
            out["cmds"] = {k: (1000.0 * calls / delivered if delivered else float("nan"), usec)
                           for k, (calls, usec) in cmds.items()}
            out["cmds_total"] = (1000.0 * sum(c for c, _ in cmds.values()) / delivered
                                 if delivered else float("nan"))
            return out
        return finish

    return await load.closed_loop(await pairs_up(layout, pairs), window, warmup, seconds,
                                  drain, probe)


async def fixed(layout: Layout, pairs: int, rate: float, warmup: float, seconds: float,
                tick: float = 0.001, drain: float = 5.0) -> dict[str, Any]:
    """load.open_loop over the layout: latency; CPU and Redis commands per message too."""
    async def probe() -> load.Finish:
        other = OtherLoad(layout.pids())
        if layout.stats is not None:
            await layout.stats.config_resetstat()
        c0, t0 = cpu_of(layout.nodes, layout.redis), time.perf_counter()

        async def finish(sent: int) -> dict[str, Any]:
            c1, t1 = cpu_of(layout.nodes, layout.redis), time.perf_counter()
            busy = 100 * sum(c1[k] - c0[k] for k in c0) / (t1 - t0)  # nodes + redis
            o = other.percent()
            cmds = await commandstats(layout.stats) if layout.stats is not None else {}
            out: dict[str, Any] = {"other_cpu": o, "cluster_cpu_pct": busy}
            for k in c0:                        # per message sent in the measured interval
                out[f"cpu_us_{k}"] = (c1[k] - c0[k]) / sent * 1e6 if sent else float("nan")
            out["cpu_us_nodes"] = sum(out[f"cpu_us_{n.name}"] for n in layout.nodes)
            out["cmds"] = {k: (1000.0 * calls / sent if sent else float("nan"), usec)
                           for k, (calls, usec) in cmds.items()}
            out["cmds_per_msg"] = (sum(c for c, _ in cmds.values()) / sent
                                   if cmds and sent else float("nan"))
            return out
        return finish

    return await load.open_loop(await pairs_up(layout, pairs), rate, warmup, seconds, tick,
                                drain, probe)


async def probe(a: Node, b: Node, timeout: float) -> str | None:
    """One message A->B and one B->A to bare JIDs; None if both arrive, else the reason."""
    env_a, env_b = load.Env(a.port, a.pid, PASSWORD), load.Env(b.port, b.pid, PASSWORD)
    conns: list[load.Conn] = []
    try:
        ca = await load.login(a.port, env_a.ctx, "u0", PASSWORD, "probe", mech="PLAIN")
        conns.append(ca)
        cb = await load.login(b.port, env_b.ctx, "u1", PASSWORD, "probe", mech="PLAIN")
        conns.append(cb)
        await asyncio.sleep(0.5)              # let both bindings reach the directory
        problems = []
        for src, dst, label in ((ca, cb, "A-B"), (cb, ca, "B-A")):
            body = f"probe {label} {time.perf_counter_ns()}"    # nothing the server escapes
            bare = dst.jid.split("/", 1)[0]
            src.write(f"<message to='{bare}' type='chat' id='probe'><body>{body}</body>"
                      "</message>".encode())
            try:
                await dst.until(body.encode(), timeout=timeout)
            except load.XmppError:
                problems.append(f"{label} ({src.jid} -> {bare}) not delivered within "
                                f"{timeout:g} s; the receiver got {bytes(dst.buf[-300:])!r}, "
                                f"the sender {bytes(src.buf[-300:])!r}")
        return "; ".join(problems) or None
    except (load.XmppError, OSError, asyncio.TimeoutError) as exc:
        return f"probe login failed: {exc!r}"
    finally:
        load.close_all(conns)
        await asyncio.sleep(0.5)


# -------------------------------------------------------------------- main -----

@dataclass
class LayoutResult:
    name: str
    fixed: list[dict[str, Any]] = field(default_factory=list)
    sat: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


async def run_layout(layout: Layout, args: argparse.Namespace,
                     res: LayoutResult) -> None:
    for i in range(args.runs):
        for what, fn in (("fixed", lambda: fixed(layout, args.pairs, args.rate, args.warmup,
                                                 args.seconds)),
                         ("saturation", lambda: saturation(layout, args.pairs, args.window,
                                                           args.warmup, args.seconds))):
            dead = [n.name for n in layout.nodes if not n.alive()]
            if dead:
                raise RuntimeError(f"node(s) {', '.join(dead)} died:\n"
                                   + "\n".join(n.tail() for n in layout.nodes
                                               if n.name in dead))
            print(f"-- {layout.name} / {what} run {i + 1}/{args.runs} ...", flush=True)
            for attempt in range(args.busy_retries + 1):
                if args.quiet_wait > 0:
                    await asyncio.to_thread(wait_quiet, layout.pids(), args.quiet, 1.0,
                                            args.quiet_wait)
                r = await _timed(fn(), PHASE_TIMEOUT, f"{layout.name} {what}")
                if r["other_cpu"] <= args.busy or attempt == args.busy_retries:
                    break
                args.discarded += 1
                print(f"   other processes used {r['other_cpu']:.0f}% of a core: run "
                      "discarded, again", flush=True)
            (res.fixed if what == "fixed" else res.sat).append(r)
            if what == "fixed":
                print(f"   p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms at "
                      f"{r['rate']:,.0f} msg/s; nodes {r['cpu_us_nodes']:.1f} CPU µs/msg; "
                      f"lost/misrouted/ooo {r['lost']:.0f}/"
                      f"{r['misrouted']:.0f}/{r['ooo']:.0f}; generator {r['gen_cpu']:.0f}%; "
                      f"other processes {r['other_cpu']:.0f}%", flush=True)
            else:
                cpus = " ".join(f"{k[7:]} {v:.1f}" for k, v in r.items()
                                if k.startswith("cpu_us_"))
                print(f"   {r['msg_s']:,.0f} msg/s; CPU µs/msg: {cpus}; redis cmds per 1k msgs "
                      f"{r['cmds_total']:.1f}; lost/misrouted/ooo {r['lost']:.0f}/"
                      f"{r['misrouted']:.0f}/{r['ooo']:.0f}; generator {r['gen_cpu']:.0f}%; "
                      f"other processes {r['other_cpu']:.0f}%", flush=True)
            await quiesce(layout)


async def _timed(coro: Awaitable[dict[str, Any]], timeout: float,
                 what: str) -> dict[str, Any]:
    try:
        return await asyncio.wait_for(coro, timeout)
    except asyncio.TimeoutError:
        raise RuntimeError(f"{what}: no result within {timeout:.0f} s") from None


async def bench(args: argparse.Namespace, site: Path, redis: RedisServer,
                results: list[LayoutResult], started: Callable[[Node], None]) -> None:
    import redis.asyncio as aioredis
    task = asyncio.current_task()
    assert task is not None
    # SIGTERM cancels the run: every finally below stops what it started.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    cpu_a, cpu_b, _, _ = args.cpu_list
    layouts = args.layouts.split(",")

    if "standalone" in layouts:
        res = LayoutResult("standalone")
        results.append(res)
        solo = Node("solo", site, targets.free_port(), cpu_a, None, None)
        try:
            print("starting the standalone node ...", flush=True)
            solo.start()
            started(solo)
            await run_layout(Layout("standalone", solo, solo, [solo], None), args, res)
        except Exception as exc:                         # noqa: BLE001 - report, go on
            res.error = _short(exc)
            print(f"standalone: error: {exc}", file=sys.stderr, flush=True)
        finally:
            solo.stop()

    if not {"same", "cross"} & set(layouts):
        return
    a = Node("a", site, targets.free_port(), cpu_a, redis.url, "bench-a")
    b = Node("b", site, targets.free_port(), cpu_b, redis.url, "bench-b")
    stats = aioredis.Redis(host="127.0.0.1", port=redis.port, socket_timeout=10)
    try:
        print(f"starting cluster nodes A (port {a.port}) and B (port {b.port}) on "
              f"{redis.url} ...", flush=True)
        try:
            for n in (a, b):
                n.start()
                started(n)
        except Exception as exc:                         # noqa: BLE001 - report
            for name in ("same", "cross"):
                if name in layouts:
                    results.append(LayoutResult(name, error=_short(exc)))
            print(f"cluster: error: {exc}", file=sys.stderr, flush=True)
            return
        nodes_info = await stats.keys("cluster:node*")
        print(f"   both up; Redis keys cluster:node*: {sorted(k.decode() for k in nodes_info)}",
              flush=True)
        if "same" in layouts:
            res = LayoutResult("same-node")
            results.append(res)
            try:
                await run_layout(Layout("same-node", a, a, [a, b], redis, stats), args, res)
            except Exception as exc:                     # noqa: BLE001 - report, go on
                res.error = _short(exc)
                print(f"same-node: error: {exc}", file=sys.stderr, flush=True)
                traceback.print_exc()
        if "cross" in layouts:
            res = LayoutResult("cross-node")
            results.append(res)
            print("probe: one message A->B and B->A ...", flush=True)
            why = await probe(a, b, args.probe_timeout)
            if why is not None:
                res.error = f"cross-node delivery does not work: {why}"
                print(f"cross-node: {res.error}", file=sys.stderr, flush=True)
                for n in (a, b):
                    print(f"--- node {n.name} log ({n.log}):\n{n.tail()}", file=sys.stderr)
            else:
                try:
                    await run_layout(Layout("cross-node", a, b, [a, b], redis, stats), args,
                                     res)
                except Exception as exc:                 # noqa: BLE001 - report
                    res.error = _short(exc)
                    print(f"cross-node: error: {exc}", file=sys.stderr, flush=True)
                    traceback.print_exc()
    finally:
        await stats.aclose()
        for n in (a, b):
            n.stop()


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or repr(exc)
    return text.splitlines()[0][:300]


# ------------------------------------------------------------------ report -----

def _med(rs: list[dict[str, Any]], key: str) -> float:
    vals = [r[key] for r in rs if key in r]
    return statistics.median(vals) if vals else float("nan")


def _spread(rs: list[dict[str, Any]], key: str, fmt: str) -> str:
    vals = [r[key] for r in rs if key in r]
    if not vals:
        return "—"
    s = fmt.format(statistics.median(vals))
    if len(vals) > 1:
        s += f" ({fmt.format(min(vals))}–{fmt.format(max(vals))})"
    flagged = any(r.get("gen_cpu", 0.0) > GEN_LIMIT for r in rs)
    return s + (" *" if flagged else "")


def _ints(rs: list[dict[str, Any]]) -> str:
    return "/".join(f"{sum(r[k] for r in rs):.0f}" for k in ("lost", "misrouted", "ooo"))


def table(results: list[LayoutResult]) -> str:
    cols = [r.name for r in results]
    lines = ["| figure | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]

    def row(label: str, cell: Callable[[LayoutResult], str]) -> None:
        cells = [("error" if r.error and not (r.fixed or r.sat) else cell(r)) for r in results]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    row("latency p50 @ fixed rate (ms)", lambda r: _spread(r.fixed, "p50_ms", "{:.2f}"))
    row("latency p99 @ fixed rate (ms)", lambda r: _spread(r.fixed, "p99_ms", "{:.2f}"))
    row("fixed: lost/misrouted/ooo", lambda r: _ints(r.fixed) if r.fixed else "—")
    row("saturation: delivered msg/s", lambda r: _spread(r.sat, "msg_s", "{:,.0f}"))
    row("saturation: lost/misrouted/ooo", lambda r: _ints(r.sat) if r.sat else "—")
    row("CPU per message, nodes (µs)", lambda r: _spread(r.sat, "cpu_us_nodes", "{:.1f}"))
    row("CPU per message @ fixed rate, nodes (µs)",
        lambda r: _spread(r.fixed, "cpu_us_nodes", "{:.1f}"))
    for name, label in (("solo", "standalone node"), ("a", "node A"), ("b", "node B"),
                        ("redis", "redis-server")):
        if any(f"cpu_us_{name}" in s for r in results for s in r.sat):
            row(f"· {label} (µs)", lambda r, n=name: _spread(r.sat, f"cpu_us_{n}", "{:.1f}"))
    row("Redis commands per 1,000 messages", lambda r: _spread(r.sat, "cmds_total", "{:,.1f}")
        if any("cmds" in s and s["cmds"] for s in r.sat) else "—")
    row("Redis commands per message @ fixed rate", lambda r: _spread(
        r.fixed, "cmds_per_msg", "{:.2f}")
        if any(x.get("cmds_per_msg", float("nan")) == x.get("cmds_per_msg") for x in r.fixed)
        else "—")
    row("other processes' CPU, highest (%)",
        lambda r: f"{max(x['other_cpu'] for x in r.fixed + r.sat):.0f}"
        if r.fixed or r.sat else "—")
    row("generator CPU, highest (%)", lambda r: f"{max(x['gen_cpu'] for x in r.fixed + r.sat):.0f}"
        if r.fixed or r.sat else "—")
    return "\n".join(lines)


def cmd_table(results: list[LayoutResult]) -> str:
    """Per-command calls per 1,000 delivered messages (median of the runs) per layout."""
    with_cmds = [r for r in results if any(s.get("cmds") for s in r.sat)]
    if not with_cmds:
        return "(no Redis command statistics: no cluster layout ran)"
    names = sorted({c for r in with_cmds for s in r.sat for c in s.get("cmds", {})})
    cols = [r.name for r in with_cmds]
    lines = ["| Redis command | " + " | ".join(f"{c}: calls per 1,000 msgs" for c in cols)
             + " | " + " | ".join(f"{c}: µs/call" for c in cols) + " |",
             "|---|" + "---:|" * (2 * len(cols))]
    rows = []
    for name in names:
        per_msg = [statistics.median(s["cmds"].get(name, (0.0, 0.0))[0] for s in r.sat
                                     if "cmds" in s) for r in with_cmds]
        usec = []
        for r in with_cmds:
            calls_usec = [(s["cmds"][name][0] * s["delivered"] / 1000.0, s["cmds"][name][1])
                          for s in r.sat if name in s.get("cmds", {})]
            calls = sum(c for c, _ in calls_usec)
            usec.append(sum(u for _, u in calls_usec) / calls if calls else float("nan"))
        rows.append((max(per_msg), name, per_msg, usec))
    for _, name, per_msg, usec in sorted(rows, key=lambda x: -x[0]):
        lines.append(f"| {name.upper()} | " + " | ".join(f"{v:,.2f}" for v in per_msg) + " | "
                     + " | ".join("—" if v != v else f"{v:.1f}" for v in usec) + " |")
    return "\n".join(lines)


def report(results: list[LayoutResult], args: argparse.Namespace, redis_version: str) -> str:
    import redis
    cpu_a, cpu_b, cpu_r, cpu_g = args.cpu_list
    errors = [f"- **{r.name}**: {r.error}" for r in results if r.error]
    return f"""# vinespy cluster: same-node vs cross-node messaging through Redis

`{' '.join([python_cmd(), 'bench/cluster.py', *sys.argv[1:]])}` on
{datetime.date.today().isoformat()}: {machine()}; Python {platform.python_version()},
uvloop {'yes' if load.has_uvloop() else 'no'}, redis-py {redis.__version__}; vinespy at
{git_rev()};
redis-server {redis_version} (`--save '' --appendonly no`, loopback TCP).
Node A on CPU {cpu_a}, node B on CPU {cpu_b}, redis-server on CPU {cpu_r}, generator
on CPU {cpu_g}. {args.pairs} pairs; fixed rate {args.rate:,.0f} msg/s; saturation
window {args.window} per pair; {args.warmup:g} s warm-up + {args.seconds:g} s measured;
{args.runs} run(s): medians, (min–max) when more than one run.

{table(results)}

`*` = the generator used more than {GEN_LIMIT:.0f}% of its core in a run (the figure
then measures the generator). lost/misrouted/ooo are sums over the runs; anything
but 0/0/0 is a bug.
{chr(10).join(['', 'Errors:', '', *errors]) if errors else ''}

## Redis commands per 1,000 delivered messages (saturation, measured interval)

{cmd_table(results)}

## How it was measured

- **standalone**: one node without `[cluster]`, both users of each pair on it.
  **same-node**: nodes A and B clustered, both users of each pair on A.
  **cross-node**: `u0, u2, …` on A, `u1, u3, …` on B: every message crosses Redis,
  half A→B, half B→A.
- The generator is `bench/load.py`'s (raw XMPP, STARTTLS, SCRAM-SHA-1, one
  resource `r0` per user; messages to the partner's **bare** JID; bodies
  `"<sender> <seq> <perf_counter_ns>"`, checked for loss, misrouting and
  order). `fixed` = `load.scenario_fixed`'s open loop (1 ms timer); saturation =
  `load.scenario_saturation`'s closed loop; the same code, with the pairs
  logged in to the layout's nodes.
- CPU per message = the process's utime+stime (`/proc/PID/stat`) over the
  measured saturation interval / messages delivered in it (at the fixed rate:
  over the measured fixed-rate interval / messages sent in it); "nodes" = A + B
  (or the standalone node).
- Redis commands: `CONFIG RESETSTAT` when the measured interval starts,
  `INFO commandstats` when it ends; calls × 1,000 / messages delivered in the interval,
  and Redis's own µs per call (`usec / calls`). The bench's own commands
  (CONFIG, INFO) are left out; everything the nodes issue (heartbeats, session
  directory, stream reads and writes) is in.
- Site: `bench/targets.py`'s vinespy site (certificate for `bench.lit`,
  fs storage, users `u0`..`u{args.users - 1}` with SCRAM keys at 10,000
  iterations, rate limit off, logging at warning, modules iq, presence,
  message, roster, disco, ping), shared by both nodes; one config per node
  (client port and `[cluster] node` differ).
- Pinning: everything the cluster runs (both nodes and redis-server) on one
  core, the generator on the other, so same-node and cross-node spend the same
  CPU budget.
- *other processes' CPU*: what every process but the bench's own (nodes,
  redis-server, generator) used during a measured interval, from `/proc/stat`,
  in % of one core. Before each run the bench waits (up to {args.quiet_wait:g} s)
  until that is below {args.quiet:g}%, and a run during which it exceeded
  {args.busy:g}% is discarded and run again (up to {args.busy_retries} times;
  {args.discarded} run(s) discarded this time). Tests running beside the bench
  show up here; a high figure left in the table means that column's figures are
  partly someone else's.
"""


def common_args(p: argparse.ArgumentParser, args: argparse.Namespace, stem: str) -> Path:
    """What every two-node bench's main() does with its arguments: ``--cpus``
    into ``args.cpu_list`` (A, B, REDIS, GEN), SIGTERM made an interrupt (so
    the nodes are stopped), and the results file
    (``bench/results/<today>-<stem>.md`` unless ``--out``)."""
    try:
        args.cpu_list = [int(c) for c in args.cpus.split(",")]
        assert len(args.cpu_list) == 4
    except (ValueError, AssertionError):
        p.error("--cpus takes four CPU numbers: A,B,REDIS,GEN")
    interrupt_on_sigterm()
    return (Path(args.out) if args.out else
            HERE / "results" / f"{datetime.date.today().isoformat()}-{stem}.md")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def interrupt_on_sigterm() -> None:
    """SIGTERM raises KeyboardInterrupt, so that the nodes are stopped."""
    signal.signal(signal.SIGTERM, _interrupt)


def stop_all(running: list[Any], work: Path, keep: bool) -> None:
    """Stop the nodes (and servers) started, and remove ``work`` unless kept."""
    for n in running:
        n.stop()
    if keep:
        print(f"kept {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=100)
    p.add_argument("--rate", type=float, default=2000.0, help="fixed-rate msg/s in total")
    p.add_argument("--window", type=int, default=20, help="saturation: in flight per pair")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="50 pairs, 1+3 s, 1 run")
    p.add_argument("--layouts", default="standalone,same,cross",
                   help="any of standalone, same, cross (comma-separated)")
    p.add_argument("--cpus", default="0,0,0,1", help="CPUs of node A, node B, redis, generator")
    p.add_argument("--probe-timeout", type=float, default=5.0)
    add_quiet_options(p, busy_retries=2)
    p.add_argument("--keep", action="store_true", help="keep the site directory (logs)")
    p.add_argument("--out", default=None,
                   help="markdown file (default bench/results/<today>-cluster.md), - = none")
    args = p.parse_args()
    if args.quick:
        args.pairs, args.warmup, args.seconds, args.runs = min(args.pairs, 50), 1.0, 3.0, 1
    args.users = max(2 * args.pairs, 2)
    args.discarded = 0
    for name in args.layouts.split(","):
        if name not in ("standalone", "same", "cross"):
            p.error(f"unknown layout {name!r}")
    out = common_args(p, args, "cluster")

    load.setup()                                     # nofile, uvloop, CPU 1 ...
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {args.cpu_list[3]})  # ... or the one asked for
    work = Path(tempfile.mkdtemp(prefix="vinespy-cluster-"))
    redis = RedisServer(args.redis_server, args.cpu_list[2])
    results: list[LayoutResult] = []
    running: list[Node] = []
    version = "?"
    try:
        crt, key = targets.make_cert(work / "cert")
        t = targets.Vinespy(work, crt, key)
        print(f"site {t.dir}: {args.users} users ...", flush=True)
        t.prepare(args.users, PASSWORD)
        redis.start()
        version = redis.version()
        print(f"redis-server {version} pid {redis.pid} on port {redis.port}", flush=True)
        try:
            asyncio.run(bench(args, t.dir, redis, results, running.append))
        finally:
            interrupt_on_sigterm()                       # the closed loop reset it
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:                             # noqa: BLE001 - one clear line
        print(f"cluster bench: error: {exc}", file=sys.stderr)
        return 2
    finally:
        stop_all([*running, redis], work, args.keep)
    text = report(results, args, version)
    print()
    print(table(results))
    print()
    print(cmd_table(results))
    errors = [r for r in results if r.error]
    for r in errors:
        print(f"\n{r.name}: {r.error}")
    if str(out) != "-":
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"\nwritten to {out}")
    bad = any(r.error for r in results) or any(
        x["lost"] or x["misrouted"] or x["ooo"] for r in results for x in r.fixed + r.sat)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
