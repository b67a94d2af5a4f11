"""What the built-in modules cost per chat message (issue 17).

Not part of the test suite. ``bench/targets.py``'s vinespy (self-signed
certificate, 10,000 PBKDF2 iterations, ``rate_limit = 0``, log at warning,
pinned to CPU 0), one node per module set, all started at once:

* ``chat``: the chat modules of the cross-server comparison (``CHAT_MODULES``);
* ``default``: every built-in module, as ``vinespy init`` configures a host;
* ``no-mam``: every built-in module but ``mam``;
* any of them with modules added or left out: ``chat+carbons``,
  ``default-mam-carbons``.

``--pairs`` (100) pairs of clients (STARTTLS, SCRAM-SHA-1) send chat messages
with a body to each other's bare JIDs at each ``--rates`` (1,000 and 2,000
msg/s in total), one stanza per write (``load.open_loop``), node by node,
alternating run by run (``--runs`` each, the order rotated every run): server
CPU per delivered message (``/proc/PID/stat``), p50/p99 latency.

``--profile DIR`` runs each node under cProfile (written to
``DIR/<set>.prof`` when the node stops) to count the calls per message.

``--callgrind DIR`` runs each node under valgrind's callgrind, instrumented
during the measured interval only (``callgrind_control``; a dump per run
in DIR): instructions per delivered message, a count that other processes
on the machine do not change (wall-clock CPU does, on a shared machine).
Valgrind slows the server ~50x: use a low rate (``--rates 20 --pairs 10``);
each message then wakes the server on its own, as at 1,000 msg/s.

    .venv/bin/python bench/modcost.py                         # ~4 min
    .venv/bin/python bench/modcost.py --sets default --rates 1000 --runs 1 --profile /tmp/p
    .venv/bin/python bench/modcost.py --rates 20 --pairs 10 --seconds 20 --callgrind /tmp/cg
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import load  # noqa: E402
import targets  # noqa: E402

from vinespy import modules  # noqa: E402

PASSWORD = "bench-password"
SETS: dict[str, tuple[str, ...] | None] = {
    "chat": targets.CHAT_MODULES,
    "default": None,
    "no-mam": tuple(m for m in modules.builtin() if m != "mam"),
}


def module_set(name: str) -> tuple[str, ...] | None:
    """``SETS[name]``, or a set with modules added or removed: ``chat+mam``,
    ``default-mam-carbons`` (for a breakdown per module)."""
    if name in SETS:
        return SETS[name]
    base, *changes = re.split(r"(?=[+-])", name)
    out = list(modules.builtin() if SETS[base] is None else SETS[base])
    for change in changes:
        if change[0] == "+":
            out.append(change[1:])
        else:
            out.remove(change[1:])
    return tuple(out)


def node(name: str, workdir: Path, cert: Path, key: Path, profile: Path | None,
         callgrind: Path | None) -> Any:
    """A ``targets.Vinespy`` loading the module set ``name``: ``SET`` or
    ``SET@DIR``, the latter run from the checkout at DIR (before/after)."""
    kind, _, src = name.partition("@")

    class Node(targets.Vinespy):
        modules = module_set(kind)

        def env(self) -> dict[str, str]:
            env = super().env()
            if src:
                env["PYTHONPATH"] = str(Path(src).resolve())
            return env

        def command(self) -> list[str]:
            cmd = super().command()
            if profile is not None:
                cmd[1:1] = ["-m", "cProfile", "-o", str(profile / f"{Node.name}.prof")]
            if callgrind is not None:
                cmd[:0] = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                           f"--callgrind-out-file={callgrind}/{Node.name}.out"]
            return cmd
    Node.name = name.replace("/", "_")
    return Node(workdir, cert, key)


def instructions(pid: int, out: Path) -> load.Probe:
    """``load.cpu_probe`` and the instructions callgrind counted in the
    server per delivered message (``ir``), instrumented for the interval only."""
    cpu = load.cpu_probe(load.Env(0, pid, ""))

    def ctl(*opts: str) -> None:
        subprocess.run(["callgrind_control", *opts, str(pid)], check=True,
                       capture_output=True)

    async def probe() -> load.Finish:
        before = set(out.parent.glob(f"{out.name}*"))
        ctl("-z")
        ctl("-i", "on")
        finish_cpu = await cpu()

        async def finish(delivered: int) -> dict[str, Any]:
            ctl("-i", "off")
            ctl("-d")
            res = await finish_cpu(delivered)
            dumps = set(out.parent.glob(f"{out.name}*")) - before
            total = 0
            for dump in dumps:
                m = re.search(r"^totals: (\d+)", dump.read_text(errors="replace"), re.M)
                total += int(m.group(1)) if m else 0
            res["ir"] = total / delivered if delivered else float("nan")
            return res
        return finish
    return probe


async def one_run(env: load.Env, args: argparse.Namespace, rate: float,
                  cg: Path | None) -> dict[str, Any]:
    await load.quiesce(env.pid)
    ps = await load._pairs_up(env, args.pairs)
    probe = load.cpu_probe(env) if cg is None else instructions(env.pid, cg)
    return await load.open_loop(ps, rate, args.warmup, args.seconds, 0.001, 5.0, probe)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", default="chat,default,no-mam")
    p.add_argument("--rates", default="1000,2000")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--pairs", type=int, default=100)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--profile", type=Path, default=None)
    p.add_argument("--callgrind", type=Path, default=None)
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))     # the nodes stopped too
    load.setup()
    names = args.sets.split(",")
    rates = [float(r) for r in args.rates.split(",")]
    for d in (args.profile, args.callgrind):
        if d is not None:
            d.mkdir(parents=True, exist_ok=True)
    if args.callgrind is not None:
        targets.START_TIMEOUT = 300.0
    work = Path(tempfile.mkdtemp(prefix="vinespy-modcost-"))
    cert, key = targets.make_cert(work / "cert")
    nodes = {n: node(n, work, cert, key, args.profile, args.callgrind) for n in names}
    res: dict[tuple[str, float], list[dict[str, Any]]] = {}
    try:
        envs = {}
        for n, t in nodes.items():
            t.prepare(2 * args.pairs, PASSWORD)
            t.start(0)
            envs[n] = load.Env(port=t.port, pid=t.pid(), password=PASSWORD)
        for i in range(args.runs):
            for rate in rates:
                k = i % len(names)
                for n in names[k:] + names[:k]:
                    cg = (None if args.callgrind is None
                          else args.callgrind / f"{nodes[n].name}.out")
                    r = asyncio.run(one_run(envs[n], args, rate, cg))
                    res.setdefault((n, rate), []).append(r)
                    ir = f"{r['ir'] / 1e6:6.2f} M instr/msg, " if "ir" in r else ""
                    print(f"run {i + 1} {rate:5.0f}/s {n:8}: {ir}{r['cpu_us']:6.1f} µs/msg "
                          f"p50 {r['p50_ms']:.2f} p99 {r['p99_ms']:.2f} ms, lost "
                          f"{r['lost']:.0f} ooo {r['ooo']:.0f} mis {r['misrouted']:.0f}",
                          flush=True)
    finally:
        for t in nodes.values():
            t.stop()
    print("\n| set | rate | µs/msg median (range) | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|")
    for (n, rate), rs in res.items():
        cpu = [r["cpu_us"] for r in rs]
        if "ir" in rs[0]:
            irs = [r["ir"] / 1e3 for r in rs]
            print(f"{n} {rate:.0f}/s: {statistics.median(irs):.0f} k instructions/msg "
                  f"({min(irs):.0f}–{max(irs):.0f})")
        print(f"| {n} | {rate:.0f} | {statistics.median(cpu):.1f} ({min(cpu):.1f}–"
              f"{max(cpu):.1f}) | {statistics.median(r['p50_ms'] for r in rs):.2f} | "
              f"{statistics.median(r['p99_ms'] for r in rs):.2f} |")


if __name__ == "__main__":
    main()
