"""Cross-node messaging with two (or more) vinespy source trees in one run, alternating.

Not part of the test suite. Issue 13 changes how stanzas travel between
nodes (the sender keeps every cross-node stream entry until the receiver
confirms it in its heartbeat, re-sends after a failover, the receiver drops
duplicates) and asks for its steady-state cost against the code before it,
*in the same run*. This runs ``bench/cluster.py``'s cross-node layout (the
even user of every pair on node A, the odd one on B: every message crosses
Redis) for each tree in turn, run after run -- ``before, after, before,
after, ...`` -- so that whatever drifts on the machine during the run hits
every tree alike.

What changes between the trees is only the code the two **nodes** run: each
tree is a directory holding a ``vinespy`` package, and the node processes get
it first on ``PYTHONPATH``. The harness, the generator (``bench/load.py``),
the site (``bench/targets.py``: certificate, fs storage, users) and the node
config files all come from the checkout this script is in. Each tree's
``vinespy/`` is copied into the work directory when the bench starts, so a
working tree being edited while the bench runs cannot change the code half-way
through; the report names each tree by its commit (``+ uncommitted changes``
when its package differs from it) and a hash of the copied files.

Per run and tree, from scratch: a fresh ``redis-server`` (``--save ''
--appendonly no``) and two fresh nodes, the ``cluster.probe`` (one message
each way), then ``cluster.run_layout`` once: the fixed-rate phase (open loop,
``--rate`` msg/s, p50/p99 latency, CPU per message of A, B and redis-server,
Redis commands per message) and the saturation phase (closed loop,
``--window`` in flight per pair: msg/s, CPU and Redis commands per message,
each node's ``VmRSS`` and Redis's ``used_memory`` at the end of the measured
interval, load still on), then everything is stopped. Every message of the
layout is a cross-node message, so "per message" is "per cross-node message".

How the generator writes is ``bench/load.py``'s, unchanged, and counted: the
fixed-rate loop spreads each 1 ms tick's messages over the senders round
robin, so each write carries one stanza (as real clients send); the
saturation loop answers every chunk a client reads with one write of as many
stanzas as the chunk held (batched). The report gives the measured stanzas
per write of both phases.

Run::

    # one tree per label (each a directory containing the vinespy package)
    nice -n 10 python3 bench/cluster_compare.py --trees before=/path/a,after=/path/b
    # a temporary git worktree of REV (removed afterwards) against --after
    # (default: this checkout)
    nice -n 10 python3 bench/cluster_compare.py --before 2a583e7 --after /work/main
    nice -n 10 python3 bench/cluster_compare.py --before HEAD --quick   # the noise floor

At the default 2,000 msg/s the one core shared by both nodes and redis-server
is ~99% busy in the cross-node layout on a 2-core machine (column "nodes+redis
CPU @ fixed"; the report warns above 85%): the nodes then batch stanzas, so CPU
per message is held near 1 core / rate and commands per message follow the
batching. A second run with ``--rate 500`` (and another ``--out``) gives the
steady-state figures: one stream entry per message, the core ~75% busy.

Results: one table (a row per tree: medians with the min–max of the runs,
then the change of each later tree against the first), Redis commands per
message, every run in the order it ran, on stdout and as Markdown in
``bench/results/<today>-cluster-confirm.md`` (``--out``). Exit status 0 when
every run worked with 0 lost / misrouted / out-of-order, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import functools
import hashlib
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
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(HERE), str(ROOT)):
    if p not in sys.path:
        sys.path.insert(0, p)

import cluster  # noqa: E402
import load  # noqa: E402
import targets  # noqa: E402
from cluster import GEN_LIMIT, PASSWORD, Layout, LayoutResult, Node  # noqa: E402
from redis_transport import (  # noqa: E402
    RedisServer, add_quiet_options, git_rev, machine, python_cmd)


# ------------------------------------------------------------------- trees -----

@dataclass
class Run:
    """One run of one tree, as it ran."""

    order: int                       # 1, 2, ... across every tree
    index: int                       # this tree's run number, from 1
    rss_start: dict[str, int] = field(default_factory=dict)
    fixed: dict[str, Any] | None = None
    sat: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class Tree:
    label: str
    source: str                      # as given: a directory, or REV for --before
    path: Path = Path()              # the copy the nodes run (holds vinespy/)
    desc: str = "?"                  # commit (+ uncommitted changes), copy's hash
    res: LayoutResult = field(default_factory=lambda: LayoutResult("?"))
    runs: list[Run] = field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        return [f"run {r.index}: {r.error}" for r in self.runs if r.error]


def _git(cwd: Path, *cmd: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *cmd], capture_output=True, text=True,
                          timeout=60, check=True).stdout.strip()


def _describe(src: Path) -> str:
    try:
        rev = _git(src, "rev-parse", "--short", "HEAD")
        dirty = _git(src, "status", "--porcelain", "--", "vinespy")
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout"
    return f"{rev}{' + uncommitted changes in vinespy/' if dirty else ''}"


def _content_hash(pkg: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(pkg.rglob("*")):
        if f.is_file():
            h.update(str(f.relative_to(pkg)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def snapshot(tree: Tree, src: Path, dest: Path) -> None:
    """Copy ``src/vinespy`` to ``dest/vinespy``; the tree runs from there."""
    if not (src / "vinespy" / "__init__.py").is_file():
        raise RuntimeError(f"tree {tree.label}: {src} holds no vinespy package")
    shutil.copytree(src / "vinespy", dest / "vinespy",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    tree.path = dest
    tree.desc = f"{_describe(src)}; files hash {_content_hash(dest / 'vinespy')}"


def worktree_snapshot(tree: Tree, rev: str, dest: Path) -> None:
    """A temporary ``git worktree`` of ``rev``, copied, then removed."""
    sha = _git(ROOT, "rev-parse", "--verify", f"{rev}^{{commit}}")
    wt = Path(tempfile.mkdtemp(prefix="vinespy-before-")) / "tree"
    try:
        _git(ROOT, "worktree", "add", "--detach", str(wt), sha)
        snapshot(tree, wt, dest)
        tree.desc = f"{sha[:7]} (`{rev}`, temporary worktree); " + tree.desc.split("; ", 1)[1]
    finally:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            _git(ROOT, "worktree", "remove", "--force", str(wt))
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            _git(ROOT, "worktree", "prune")
        shutil.rmtree(wt.parent, ignore_errors=True)


def check_import(tree: Tree, site: Path) -> None:
    """The node's interpreter, with the node's PYTHONPATH, must import the tree's copy."""
    pp = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": f"{tree.path}{os.pathsep}{pp}" if pp else str(tree.path)}
    got = subprocess.run([sys.executable, "-c", "import vinespy; print(vinespy.__file__)"],
                         cwd=site, env=env, capture_output=True, text=True, timeout=60)
    where = Path(got.stdout.strip() or "?").resolve()
    if not where.is_relative_to(tree.path.resolve()):
        raise RuntimeError(f"tree {tree.label}: the node interpreter imports vinespy from "
                           f"{where}, not from {tree.path} ({got.stderr.strip()[-300:]})")


# ---------------------------------------------------- stanzas per write -----

# load.Pair.send does every write of both loops; count them (two additions
# per call: the generator's method is otherwise unchanged).
WRITES = {"writes": 0, "stanzas": 0}
_send = load.Pair.send


def _counting_send(self: load.Pair, count: int, batched: bool) -> None:
    WRITES["writes"] += 1 if batched else count
    WRITES["stanzas"] += count
    _send(self, count, batched)


def counted(fn: Callable[..., Any]) -> Callable[..., Any]:
    """cluster.fixed / cluster.saturation, with the stanzas per write of the phase."""
    @functools.wraps(fn)
    async def wrapper(*a: Any, **kw: Any) -> dict[str, Any]:
        WRITES.update(writes=0, stanzas=0)
        out = await fn(*a, **kw)
        out["per_write"] = WRITES["stanzas"] / WRITES["writes"] if WRITES["writes"] else 0.0
        return out
    return wrapper


# --------------------------------------------------------------------- runs -----

async def one_run(args: argparse.Namespace, site: Path, tree: Tree, run: Run,
                  started: Callable[[Node], None]) -> None:
    """Fresh redis-server and nodes A, B running ``tree``; the cross-node layout once."""
    import redis.asyncio as aioredis
    cpu_a, cpu_b, cpu_r, _ = args.cpu_list
    i = run.index - 1
    tree.runs.append(run)
    name = f"{tree.label} run {run.index}/{args.runs}"
    redis = RedisServer(args.redis_server, cpu_r)
    nodes: list[Node] = []
    stats = None
    try:
        redis.start()
        nodes = [Node(n, site, targets.free_port(), cpu, redis.url, f"bench-{n}",
                      tree=tree.path, dirname=f"{tree.label}-{i + 1}-node-{n}")
                 for n, cpu in (("a", cpu_a), ("b", cpu_b))]
        stats = aioredis.Redis(host="127.0.0.1", port=redis.port, socket_timeout=10)
        print(f"== {name}: redis-server port {redis.port}; nodes on ports "
              f"{nodes[0].port}, {nodes[1].port} ({tree.path}) ...", flush=True)
        for n in nodes:
            n.start()
            started(n)
        run.rss_start = {n.name: load.proc_rss_kb(n.pid) for n in nodes}
        why = await cluster.probe(nodes[0], nodes[1], args.probe_timeout)
        if why is not None:
            raise RuntimeError(f"cross-node delivery does not work: {why}")
        sub = argparse.Namespace(**vars(args))
        sub.runs = 1
        res = LayoutResult(name)
        try:
            await cluster.run_layout(Layout(name, nodes[0], nodes[1], nodes, redis, stats),
                                     sub, res)
        finally:
            args.discarded = sub.discarded
            run.fixed = res.fixed[0] if res.fixed else None
            run.sat = res.sat[0] if res.sat else None
            tree.res.fixed += res.fixed
            tree.res.sat += res.sat
    except Exception as exc:                             # noqa: BLE001 - report, go on
        run.error = cluster._short(exc)
        print(f"{name}: error: {exc}", file=sys.stderr, flush=True)
        traceback.print_exc()
        for n in nodes:
            print(f"--- node {n.name} log ({n.log}):\n{n.tail()}", file=sys.stderr)
    finally:
        if stats is not None:
            with contextlib.suppress(Exception):
                await stats.aclose()
        for n in nodes:
            n.stop()
        redis.stop()


async def compare(args: argparse.Namespace, site: Path, trees: list[Tree],
                  started: Callable[[Node], None]) -> None:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    order = 0
    for i in range(args.runs):
        for t in trees:
            order += 1
            await one_run(args, site, t, Run(order, i + 1), started)


# ------------------------------------------------------------------- report -----

# (key, phase, label, format, scale): one column of the main table
COLUMNS = [
    ("p50_ms", "fixed", "p50 @ fixed (ms)", "{:.2f}", 1.0),
    ("p99_ms", "fixed", "p99 @ fixed (ms)", "{:.2f}", 1.0),
    ("cpu_us_nodes", "fixed", "nodes A+B CPU µs/msg @ fixed", "{:.1f}", 1.0),
    ("cluster_cpu_pct", "fixed", "nodes+redis CPU @ fixed (% of a core)", "{:.0f}", 1.0),
    ("cpu_us_nodes", "sat", "nodes A+B CPU µs/msg @ saturation", "{:.1f}", 1.0),
    ("msg_s", "sat", "saturation msg/s", "{:,.0f}", 1.0),
    ("cmds_per_msg", "fixed", "Redis cmds/msg @ fixed", "{:.3f}", 1.0),
    ("cmds_total", "sat", "Redis cmds/msg @ saturation", "{:.3f}", 1e-3),
    ("cpu_us_redis", "fixed", "redis-server CPU µs/msg @ fixed", "{:.1f}", 1.0),
    ("cpu_us_redis", "sat", "redis-server CPU µs/msg @ saturation", "{:.1f}", 1.0),
    ("rss_kb_a", "sat", "node A RSS end of saturation (MiB)", "{:.1f}", 1 / 1024),
    ("rss_kb_b", "sat", "node B RSS end of saturation (MiB)", "{:.1f}", 1 / 1024),
]


def _vals(t: Tree, key: str, phase: str, scale: float) -> list[float]:
    rs = t.res.fixed if phase == "fixed" else t.res.sat
    return [r[key] * scale for r in rs if key in r and r[key] == r[key]]


def _cell(t: Tree, key: str, phase: str, fmt: str, scale: float) -> str:
    vals = _vals(t, key, phase, scale)
    if not vals:
        return "—"
    s = fmt.format(statistics.median(vals))
    if len(vals) > 1:
        s += f" ({fmt.format(min(vals))}–{fmt.format(max(vals))})"
    rs = t.res.fixed if phase == "fixed" else t.res.sat
    return s + (" *" if any(r.get("gen_cpu", 0.0) > GEN_LIMIT for r in rs) else "")


def _top(t: Tree, phase: str, n: int = 4) -> str:
    """The commands with most calls per message (median over the runs)."""
    rs = [r for r in (t.res.fixed if phase == "fixed" else t.res.sat) if r.get("cmds")]
    if not rs:
        return "—"
    names = {c for r in rs for c in r["cmds"]}
    per = {c: statistics.median(r["cmds"].get(c, (0.0, 0.0))[0] / 1000 for r in rs)
           for c in names}
    best = sorted(per.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{c.upper()} {v:.3f}" for c, v in best)


def _ints(t: Tree) -> str:
    rs = t.res.fixed + t.res.sat
    return "/".join(f"{sum(r[k] for r in rs):.0f}" for k in ("lost", "misrouted", "ooo")) \
        if rs else "—"


def table(trees: list[Tree]) -> str:
    """One row per tree, then each later tree's change of the medians against the first."""
    head = ["tree", *(c[2] for c in COLUMNS), "top Redis cmds/msg @ fixed",
            "top Redis cmds/msg @ saturation", "lost/misrouted/ooo", "runs"]
    lines = ["| " + " | ".join(head) + " |",
             "|---|" + "---:|" * len(COLUMNS) + "---|---|---:|---:|"]
    for t in trees:
        runs = f"{len(t.res.sat)}" + (
            f" ({len(t.errors)} failed)" if t.errors else "")
        cells = [_cell(t, key, phase, fmt, scale) for key, phase, _, fmt, scale in COLUMNS]
        lines.append("| " + " | ".join([f"**{t.label}**", *cells, _top(t, "fixed"),
                                        _top(t, "sat"), _ints(t), runs]) + " |")
    base = trees[0]
    for t in trees[1:]:
        cells = []
        for key, phase, _, _, scale in COLUMNS:
            a, b = _vals(base, key, phase, scale), _vals(t, key, phase, scale)
            if a and b and statistics.median(a):
                cells.append(f"{(statistics.median(b) / statistics.median(a) - 1) * 100:+.1f}%")
            else:
                cells.append("—")
        lines.append(f"| {t.label} vs {base.label} | " + " | ".join(cells) + " | | | | |")
    return "\n".join(lines)


def cmd_table(trees: list[Tree]) -> str:
    """Calls per cross-node message of every Redis command, per tree and phase (medians)."""
    cols = [(t, ph) for t in trees for ph in ("fixed", "sat")]
    names = sorted({c for t, ph in cols
                    for r in (t.res.fixed if ph == "fixed" else t.res.sat)
                    for c in r.get("cmds", {})})
    if not names:
        return "(no Redis command statistics: no run completed)"
    lines = ["| Redis command | " + " | ".join(
        f"{t.label} @ {'fixed' if ph == 'fixed' else 'saturation'}" for t, ph in cols) + " |",
        "|---|" + "---:|" * len(cols)]
    rows = []
    for c in names:
        vals = []
        for t, ph in cols:
            rs = [r for r in (t.res.fixed if ph == "fixed" else t.res.sat) if "cmds" in r]
            vals.append(statistics.median(r["cmds"].get(c, (0.0, 0.0))[0] / 1000 for r in rs)
                        if rs else float("nan"))
        rows.append((max(v for v in vals if v == v) if any(v == v for v in vals) else 0, c,
                     vals))
    for _, c, vals in sorted(rows, key=lambda x: -x[0]):
        cells = ["—" if v != v else f"{v:.4f}" for v in vals]
        lines.append(f"| {c.upper()} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def runs_table(trees: list[Tree]) -> str:
    """Every run in the order it ran."""
    lines = ["| # | tree | p50 ms | p99 ms | nodes µs/msg fixed | nodes µs/msg sat | msg/s | "
             "nodes+redis % of a core fixed | cmds/msg fixed | cmds/msg sat | redis µs/msg sat "
             "| RSS A, B start → end sat (MiB) | stanzas/write fixed, sat | other CPU % "
             "| generator CPU % |",
             "|---:|---|" + "---:|" * 13]

    def g(r: dict[str, Any] | None, key: str, fmt: str, scale: float = 1.0) -> str:
        return fmt.format(r[key] * scale) if r is not None and key in r else "—"
    for run, t in sorted(((r, t) for t in trees for r in t.runs), key=lambda x: x[0].order):
        f, s = run.fixed, run.sat
        cells = [f"{run.order}", f"{t.label} {run.index}"]
        if run.error and f is None and s is None:
            lines.append("| " + " | ".join(cells) + f" | failed: {run.error}" + " |" * 13)
            continue
        rs0 = run.rss_start
        both = [x for x in (f, s) if x is not None]
        cells += [g(f, "p50_ms", "{:.2f}"), g(f, "p99_ms", "{:.2f}"),
                  g(f, "cpu_us_nodes", "{:.1f}"), g(s, "cpu_us_nodes", "{:.1f}"),
                  g(s, "msg_s", "{:,.0f}"), g(f, "cluster_cpu_pct", "{:.0f}"),
                  g(f, "cmds_per_msg", "{:.3f}"),
                  g(s, "cmds_total", "{:.3f}", 1e-3), g(s, "cpu_us_redis", "{:.1f}"),
                  f"{rs0.get('a', 0) / 1024:.1f}, {rs0.get('b', 0) / 1024:.1f} → "
                  f"{g(s, 'rss_kb_a', '{:.1f}', 1 / 1024)}, "
                  f"{g(s, 'rss_kb_b', '{:.1f}', 1 / 1024)}",
                  f"{g(f, 'per_write', '{:.2f}')}, {g(s, 'per_write', '{:.2f}')}",
                  f"{max(x['other_cpu'] for x in both):.0f}",
                  f"{max(x['gen_cpu'] for x in both):.0f}"]
        lines.append("| " + " | ".join(cells) + " |" + (f" {run.error}" if run.error else ""))
    return "\n".join(lines)


def _per_write(trees: list[Tree], phase: str) -> str:
    vals = [r["per_write"] for t in trees for r in (t.res.fixed if phase == "fixed"
                                                    else t.res.sat) if "per_write" in r]
    if not vals:
        return "?"
    return f"{min(vals):.2f}" if min(vals) == max(vals) else f"{min(vals):.2f}–{max(vals):.2f}"


def busy_warning(trees: list[Tree], args: argparse.Namespace) -> str:
    """A word when the fixed rate kept the cluster's core (nearly) full."""
    if len(set(args.cpu_list[:3])) != 1:
        return ""
    busy = [(t.label, statistics.median(v)) for t in trees
            if (v := _vals(t, "cluster_cpu_pct", "fixed", 1.0))]
    hot = [f"{label} {pct:.0f}%" for label, pct in busy if pct >= 85]
    if not hot:
        return ""
    return (f"**Note:** at {args.rate:,.0f} msg/s the core shared by both nodes and "
            f"redis-server was busy ({', '.join(hot)} of it): the fixed rate is close to "
            "saturation there, so the nodes batch more the more each message costs, CPU per "
            f"message at that rate is held near 1 core / {args.rate:,.0f} msg/s "
            f"= {1e6 / args.rate:.0f} µs, and a costlier tree shows up as latency and fewer "
            "commands per message rather than as CPU. For a steady-state CPU figure, run "
            "again with a lower `--rate` (e.g. 500).")


def report(trees: list[Tree], args: argparse.Namespace, redis_version: str,
           elapsed: float) -> str:
    import redis
    cpu_a, cpu_b, cpu_r, cpu_g = args.cpu_list
    tree_lines = "\n".join(f"- **{t.label}**: `{t.source}` — {t.desc}" for t in trees)
    errors = [f"- **{t.label}** {e}" for t in trees for e in t.errors]
    redis_mem = "; ".join(
        f"{t.label} {statistics.median(v):,.0f} KiB" for t in trees
        if (v := _vals(t, "redis_mem_kb", "sat", 1.0)))
    return f"""# vinespy cluster: cross-node messaging, {' vs '.join(t.label for t in trees)}

`{' '.join([python_cmd(), 'bench/cluster_compare.py', *sys.argv[1:]])}` on
{datetime.date.today().isoformat()}, {elapsed / 60:.0f} min: {machine()}; Python
{platform.python_version()}, uvloop {'yes' if load.has_uvloop() else 'no'}, redis-py
{redis.__version__}; harness and generator at {git_rev()}; redis-server {redis_version}
(`--save '' --appendonly no`, loopback TCP, a fresh one per run).

Trees (the code the two nodes run; each `vinespy/` copied when the bench started):

{tree_lines}

Cross-node layout only (`u0, u2, …` on node A, `u1, u3, …` on node B: every message
crosses Redis, half each way). {args.pairs} pairs; fixed rate {args.rate:,.0f} msg/s;
saturation window {args.window} per pair; {args.warmup:g} s warm-up + {args.seconds:g} s
measured per phase; {args.runs} run(s) per tree, alternating
({', '.join(t.label for t in trees)}, {', '.join(t.label for t in trees)}, …), each on a fresh
redis-server and fresh nodes. Node A on CPU {cpu_a}, node B on CPU {cpu_b}, redis-server
on CPU {cpu_r}, generator on CPU {cpu_g}. Medians, (min–max) of the runs.

Writes: the generator (`bench/load.py`, unchanged) sent **{_per_write(trees, 'fixed')}**
stanzas per write at the fixed rate (one stanza per write, as real clients) and
**{_per_write(trees, 'sat')}** at saturation (the closed loop answers each chunk it reads
with one write of as many stanzas as the chunk held).

{table(trees)}

`*` = the generator used more than {GEN_LIMIT:.0f}% of its core in a run (the figure
then measures the generator). lost/misrouted/ooo are sums over both phases of every
run; anything but 0/0/0 is a bug. Redis `used_memory` at the end of saturation:
{redis_mem or '—'}.

{busy_warning(trees, args)}
{chr(10).join(['', 'Errors:', '', *errors]) if errors else ''}

## Redis commands per cross-node message (medians)

{cmd_table(trees)}

## Every run, in the order it ran

{runs_table(trees)}

## How it was measured

- `bench/cluster.py`'s pieces: `Node` (`python -m vinespy start -c node-X/config.toml`,
  the tree first on `PYTHONPATH`; checked before the first run: the node's interpreter
  imports `vinespy` from the tree's copy), `probe` (one message A→B and B→A),
  `run_layout` (fixed, then saturation; waits for a quiet machine and repeats a run
  during which other processes used more than {args.busy:g}% of a core, up to
  {args.busy_retries} times; {args.discarded} run(s) discarded this time).
- Fixed rate: `load.open_loop`, 1 ms timer, bodies carry the send time: p50/p99 from
  send to receive on the generator's clock. CPU per message = utime+stime
  (`/proc/PID/stat`) over the measured interval / messages sent in it; Redis
  commands: `CONFIG RESETSTAT` at the start of the measured interval,
  `INFO commandstats` at its end, calls / messages sent.
- Saturation: `load.closed_loop`, {args.window} in flight per pair: delivered msg/s; CPU
  and commands per message delivered in the measured interval; `VmRSS` of each node
  (`/proc/PID/status`) and Redis `used_memory` at the end of it, while the load is on
  (what the nodes hold in flight, unconfirmed entries included). The RSS of each node
  right after it started is in the per-run table.
- The bench's own commands (CONFIG, INFO, CLIENT, HELLO, PING) are left out; everything
  the nodes issue (stream reads and writes, heartbeats and whatever they carry, session
  directory) is in, so heartbeat traffic weighs more per message at the fixed rate than
  at saturation.
- The spread between two runs of the *same* tree is the bench's resolution: a
  difference between trees smaller than the runs' min–max is not a difference.
"""


# --------------------------------------------------------------------- main -----

def parse_trees(p: argparse.ArgumentParser, args: argparse.Namespace) -> list[Tree]:
    if args.before and args.trees:
        p.error("--before and --trees exclude each other")
    if args.before:
        return [Tree("before", args.before), Tree("after", args.after or str(ROOT))]
    if not args.trees:
        p.error("give --trees LABEL=DIR,LABEL=DIR or --before REV")
    out: list[Tree] = []
    for part in args.trees.split(","):
        label, sep, path = part.partition("=")
        if not sep or not label.isidentifier() or not path:
            p.error(f"--trees: {part!r} is not LABEL=DIR")
        if label in (t.label for t in out):
            p.error(f"--trees: label {label!r} twice")
        out.append(Tree(label, path))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trees", help="LABEL=DIR,LABEL=DIR,...: each DIR holds a vinespy package")
    p.add_argument("--before", metavar="REV",
                   help="tree 'before' = a temporary git worktree of REV; 'after' = --after")
    p.add_argument("--after", metavar="DIR", help="with --before (default: this checkout)")
    p.add_argument("--pairs", type=int, default=100)
    p.add_argument("--rate", type=float, default=2000.0, help="fixed-rate msg/s in total")
    p.add_argument("--window", type=int, default=20, help="saturation: in flight per pair")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per phase")
    p.add_argument("--runs", type=int, default=None, help="runs per tree (5; --quick 2)")
    p.add_argument("--quick", action="store_true", help="50 pairs, 1+3 s, 2 runs per tree")
    p.add_argument("--cpus", default="0,0,0,1", help="CPUs of node A, node B, redis, generator")
    p.add_argument("--probe-timeout", type=float, default=5.0)
    add_quiet_options(p, busy_retries=2)
    p.add_argument("--keep", action="store_true", help="keep the work directory (node logs)")
    p.add_argument("--out", default=None, help="markdown file (default bench/results/"
                   "<today>-cluster-confirm.md), - = none")
    args = p.parse_args()
    trees = parse_trees(p, args)
    if args.quick:
        args.pairs, args.warmup, args.seconds = min(args.pairs, 50), 1.0, 3.0
    if args.runs is None:
        args.runs = 2 if args.quick else 5
    args.users = max(2 * args.pairs, 2)
    args.discarded = 0
    out = cluster.common_args(p, args, "cluster-confirm")

    load.Pair.send = _counting_send                  # type: ignore[method-assign]
    cluster.fixed = counted(cluster.fixed)           # run_layout looks them up by name
    cluster.saturation = counted(cluster.saturation)
    load.setup()
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {args.cpu_list[3]})
    t_start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="vinespy-compare-"))
    running: list[Node] = []
    version = "?"
    try:
        version = RedisServer(args.redis_server).version()
        for t in trees:
            t.res = LayoutResult(t.label)
            dest = work / "trees" / t.label
            if args.before and t.label == "before":
                worktree_snapshot(t, args.before, dest)
            else:
                snapshot(t, Path(t.source).resolve(), dest)
            print(f"tree {t.label}: {t.source} -> {t.path} ({t.desc})", flush=True)
        crt, key = targets.make_cert(work / "cert")
        site = targets.Vinespy(work, crt, key)
        print(f"site {site.dir}: {args.users} users ...", flush=True)
        site.prepare(args.users, PASSWORD)
        for t in trees:
            check_import(t, site.dir)
        try:
            asyncio.run(compare(args, site.dir, trees, running.append))
        finally:
            cluster.interrupt_on_sigterm()               # the closed loop reset it
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:                             # noqa: BLE001 - one clear line
        print(f"cluster compare: error: {exc}", file=sys.stderr)
        return 2
    finally:
        cluster.stop_all(running, work, args.keep)
    elapsed = time.monotonic() - t_start
    text = report(trees, args, version, elapsed)
    print()
    print(table(trees))
    print()
    print(cmd_table(trees))
    print()
    print(runs_table(trees))
    print(f"\n{elapsed / 60:.1f} min")
    if busy_warning(trees, args):
        print(busy_warning(trees, args))
    for t in trees:
        for e in t.errors:
            print(f"{t.label} {e}")
    if str(out) != "-":
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"\nwritten to {out}")
    bad = any(t.errors for t in trees) or any(
        x["lost"] or x["misrouted"] or x["ooo"] for t in trees for x in t.res.fixed + t.res.sat)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
