"""The one benchmark command: vinespy against Prosody and ejabberd on this machine.

    python3 bench/run.py [--runs 3] [--targets vinespy,prosody,ejabberd] [--quick]
                         [--cert ecdsa|rsa]

For each target (``bench/targets.py``): install, prepare 400 users, start it
pinned to CPU 0, run every scenario of ``bench/load.py`` ``--runs`` times with
the generator pinned to CPU 1, stop it. Every scenario starts on a freshly
restarted server process: what one scenario leaves behind must not be charged
to the next (Prosody's CPU per message rises 2-4x after the idle scenario's
5,000 sessions have come and gone; see bench/README.md).
Each figure is the median of the runs with the spread (min-max). A figure
measured while the generator used more than 85% of its core is flagged ``*``
and not quoted as a result (no ratio).
Prints one table and writes it as Markdown to ``bench/results/<date>.md``.
A target that fails to start, or a scenario that fails, shows as an error in
its column; the rest goes on.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import load  # noqa: E402

PASSWORD = "bench-password"
USERS = 400
GEN_LIMIT = 85.0                 # % of the generator's core above which a figure is flagged
ORDER = ("vinespy", "prosody", "ejabberd")
CERTS = {"ecdsa": "ECDSA P-256, self-signed", "rsa": "RSA-2048, self-signed"}
LABELS = {"vinespy": "vinespy", "prosody": "Prosody", "ejabberd": "ejabberd"}


@dataclass(frozen=True)
class Row:
    """One table row: a figure from one scenario's result dict."""

    label: str
    scenario: str
    key: str
    fmt: str = "{:,.0f}"
    ratio: bool = True


def rows(quick: bool) -> list[Row]:
    idle = (1000, 5000) if quick else (1000, 5000, 10000)
    out = [
        Row("logins/s (SCRAM-SHA-1)", "login", "logins_s"),
        Row("login p50 (ms)", "login", "p50_ms", "{:,.1f}"),
        Row("login p99 (ms)", "login", "p99_ms", "{:,.1f}"),
        Row("server CPU per login (ms)", "login", "cpu_ms", "{:,.2f}"),
        Row("logins/s (PLAIN, server PBKDF2)", "login-plain", "logins_s"),
        Row("server CPU per PLAIN login (ms)", "login-plain", "cpu_ms", "{:,.2f}"),
    ]
    out += [Row(f"RSS per idle session @{n // 1000}k (KiB)", "idle", f"rss_kb_{n}", "{:,.1f}")
            for n in idle]
    out += [
        Row("server CPU per message @2000 msg/s (µs)", "fixed", "cpu_us", "{:,.1f}"),
        Row("latency p50 @2000 msg/s (ms)", "fixed", "p50_ms", "{:,.2f}"),
        Row("latency p99 @2000 msg/s (ms)", "fixed", "p99_ms", "{:,.2f}"),
        Row("server CPU per message @500 msg/s (µs)", "fixed500", "cpu_us", "{:,.1f}"),
        Row("server CPU per message @6000 msg/s (µs)", "fixed6000", "cpu_us", "{:,.1f}"),
        Row("saturation (msg/s)", "saturation", "msg_s"),
        Row("server CPU per message at saturation (µs)", "saturation", "cpu_us", "{:,.1f}"),
        Row("+5k idle: saturation (msg/s)", "msg+idle", "sat_msg_s"),
        Row("+5k idle: latency p99 @2000 msg/s (ms)", "msg+idle", "fix_p99_ms", "{:,.2f}"),
        Row("batched writes: saturation (msg/s)", "batched", "msg_s"),
        Row("batched writes: server CPU per message (µs)", "batched", "cpu_us", "{:,.1f}"),
    ]
    return out


INTEGRITY = (("saturation", ""), ("fixed", ""), ("fixed500", ""), ("fixed6000", ""),
             ("msg+idle", "sat_"), ("msg+idle", "fix_"),
             ("batched", ""))
GEN_ROWS = ("login", "login-plain", "idle", "fixed", "fixed500", "fixed6000", "saturation",
            "msg+idle", "batched")


def scenarios(quick: bool) -> dict[str, Callable[[load.Env], Any]]:
    """Scenario name -> coroutine function taking the environment."""
    secs = 5.0 if quick else 10.0
    n = 200 if quick else 500
    idle = (1000, 5000) if quick else (1000, 5000, 10000)
    return {
        "login": lambda env: load.scenario_login(env, n=n),
        "login-plain": lambda env: load.scenario_login(env, n=n, mech="PLAIN"),
        "idle": lambda env: load.scenario_idle(env, levels=idle),
        "fixed": lambda env: load.scenario_fixed(env, seconds=secs),
        # CPU per message against the rate: the same work costs more the
        # more often the server sleeps between messages (bench/wakeup_cost.py).
        "fixed500": lambda env: load.scenario_fixed(env, rate=500.0, seconds=secs),
        "fixed6000": lambda env: load.scenario_fixed(env, rate=6000.0, seconds=secs),
        "saturation": lambda env: load.scenario_saturation(env, seconds=secs),
        "msg+idle": lambda env: load.scenario_msg_idle(env, idle=5000, seconds=secs),
        # The old method, kept as a named extra row: a whole window of
        # stanzas in one write, a batch answered with a batch.
        "batched": lambda env: load.scenario_saturation(env, seconds=secs, batched=True),
    }


# A scenario that takes longer than this is abandoned (reported as an error).
SCENARIO_TIMEOUT = {"login": 300.0, "login-plain": 300.0, "idle": 900.0,
                    "saturation": 120.0, "fixed": 120.0, "fixed500": 120.0,
                    "fixed6000": 120.0, "msg+idle": 600.0,
                    "batched": 120.0}


@dataclass
class Outcome:
    """All runs of all scenarios for one target."""

    error: str | None = None                         # the target did not start
    runs: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def run_target(name: str, cls: Any, workdir: Path, cert: Path, key: Path,
               runs: int, quick: bool, only: tuple[str, ...] = ()) -> Outcome:
    """Install, prepare, start, measure, stop; never raises."""
    out = Outcome()
    target = None
    started = False
    try:
        target = cls(workdir / name, cert, key)
        print(f"[{name}] install", flush=True)
        target.install()
        print(f"[{name}] prepare {USERS} users", flush=True)
        target.prepare(USERS, PASSWORD)
        print(f"[{name}] start on CPU 0", flush=True)
        started = True
        target.start(0)
        env = load.Env(port=target.port, pid=target.pid(), password=PASSWORD)
    except Exception as e:
        traceback.print_exc()
        out.error = f"{type(e).__name__}: {e}"[:200]
        if target is not None and started:
            _stop(name, target)
        return out
    try:
        for r in range(runs):
            chosen = {k: f for k, f in scenarios(quick).items() if not only or k in only}
            for i, (sname, fn) in enumerate(chosen.items()):
                # Every scenario but the very first starts on a freshly
                # restarted server: the logins and the idle RSS baseline see a
                # fresh process, not one holding memory freed by, or still
                # closing sessions from, earlier scenarios; the messaging
                # figures are not taken on a heap that thousands of sessions
                # have churned (Prosody's GC then costs it far more: README).
                if r or i:
                    print(f"[{name}] restart before run {r + 1} {sname}", flush=True)
                    try:
                        target.stop()
                        target.start(0)
                        env = load.Env(port=target.port, pid=target.pid(), password=PASSWORD)
                    except Exception as e:
                        traceback.print_exc()
                        out.errors.setdefault("*", f"restart failed: {e}"[:200])
                        return out
                if sname in out.errors:
                    continue
                print(f"[{name}] run {r + 1}/{runs}: {sname}", flush=True)
                retried = load.RETRIED[0]
                try:
                    res = asyncio.run(_timed(fn(env), SCENARIO_TIMEOUT[sname]))
                except Exception as e:
                    traceback.print_exc()
                    out.errors[sname] = f"{type(e).__name__}: {e}"[:200]
                    continue
                print(f"[{name}]   " + ", ".join(f"{k}={v:.4g}" for k, v in res.items()),
                      flush=True)
                out.runs.setdefault(sname, []).append(res)
                if load.RETRIED[0] > retried:
                    out.notes.append(f"run {r + 1} {sname}: {load.RETRIED[0] - retried} "
                                     "set-up login(s) failed once and were retried")
                try:
                    os.kill(env.pid, 0)
                except OSError:
                    out.errors.setdefault("*", "server process died")
                    return out
    finally:
        _stop(name, target)
    return out


async def _timed(coro: Any, timeout: float) -> dict[str, float]:
    return dict(await asyncio.wait_for(coro, timeout))


def _stop(name: str, target: Any) -> None:
    try:
        print(f"[{name}] stop", flush=True)
        target.stop()
    except Exception:
        traceback.print_exc()


# -------------------------------------------------------------- table -----

@dataclass
class Cell:
    text: str
    value: float | None = None      # None: no quotable result (error, missing, flagged)


def cell(out: Outcome, row: Row) -> Cell:
    if out.error:
        return Cell("error")
    if row.scenario in out.errors or "*" in out.errors and row.scenario not in out.runs:
        return Cell("error")
    runs = out.runs.get(row.scenario, [])
    vals = [(r[row.key], r.get("gen_cpu", 0.0) > GEN_LIMIT) for r in runs if row.key in r]
    if not vals:
        return Cell("—")
    nums = [v for v, _ in vals]
    flagged = any(f for _, f in vals)
    med = statistics.median(nums)
    text = row.fmt.format(med)
    if len(nums) > 1:
        text += f" ({row.fmt.format(min(nums))}–{row.fmt.format(max(nums))})"
    if flagged:
        return Cell(text + " *")
    return Cell(text, med)


def integrity_cell(out: Outcome) -> Cell:
    if out.error:
        return Cell("error")
    totals = [0.0, 0.0, 0.0]
    seen = False
    for sname, prefix in INTEGRITY:
        for r in out.runs.get(sname, []):
            for i, k in enumerate(("lost", "misrouted", "ooo")):
                if prefix + k in r:
                    totals[i] += r[prefix + k]
                    seen = True
    if not seen:
        return Cell("—")
    return Cell("/".join(f"{t:.0f}" for t in totals))


def gen_cell(out: Outcome, scenario: str) -> Cell:
    if out.error:
        return Cell("error")
    vals = [r["gen_cpu"] for r in out.runs.get(scenario, []) if "gen_cpu" in r]
    if not vals:
        return Cell("error" if scenario in out.errors else "—")
    return Cell(f"{max(vals):.0f}%" + (" *" if max(vals) > GEN_LIMIT else ""))


def ratio(a: Cell, b: Cell) -> str:
    if a.value is None or b.value is None or b.value == 0:
        return "—"
    return f"{a.value / b.value:.2f}"


def build_table(results: dict[str, Outcome], quick: bool) -> tuple[list[str], list[list[str]]]:
    names = [n for n in ORDER if n in results] + [n for n in results if n not in ORDER]
    header = ["figure"] + [LABELS.get(n, n) for n in names]
    pairs = [("vinespy", o) for o in ("prosody", "ejabberd") if "vinespy" in results]
    header += [f"vinespy/{LABELS[o]}" for _, o in pairs]
    body: list[list[str]] = []
    for row in rows(quick):
        cells = {n: cell(results[n], row) for n in names}
        line = [row.label] + [cells[n].text for n in names]
        line += [ratio(cells[a], cells[b]) if b in cells else "—" for a, b in pairs]
        body.append(line)
    line = ["lost/misrouted/out-of-order (all runs)"]
    line += [integrity_cell(results[n]).text for n in names] + ["" for _ in pairs]
    body.append(line)
    for s in GEN_ROWS:
        line = [f"generator CPU, {s} (max)"] + [gen_cell(results[n], s).text for n in names]
        body.append(line + ["" for _ in pairs])
    return header, body


def text_table(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in body])


def md_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def machine_info() -> list[str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = [f"CPU: {cpu} ({os.cpu_count()} cores); server on CPU 0, generator on CPU 1",
            f"Kernel: {platform.release()}",
            f"Python: {sys.version.split()[0]}; uvloop: {'yes' if load.has_uvloop() else 'no'}"]
    for pkg in ("prosody", "ejabberd"):
        try:
            v = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True,
                               text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            v = ""
        info.append(f"{pkg}: {v or 'not installed'}")
    return info


def report(results: dict[str, Outcome], args: argparse.Namespace) -> str:
    header, body = build_table(results, args.quick)
    now = datetime.datetime.now(datetime.timezone.utc)
    notes = [f"{n}: {o.error}" for n, o in results.items() if o.error]
    notes += [f"{n} {s}: {e}" for n, o in results.items() for s, e in o.errors.items()]
    notes += [f"{n} {x}" for n, o in results.items() for x in o.notes]
    md = [f"# Benchmark {now:%Y-%m-%d %H:%M} UTC", "",
          f"`python3 bench/run.py --runs {args.runs} --targets {args.targets}"
          f"{' --quick' if args.quick else ''}"
          f"{f' --scenarios {args.scenarios}' if args.scenarios else ''}"
          f" --cert {args.cert}`", ""]
    md += [f"- {i}" for i in machine_info()]
    md += [f"- Certificate (all servers): {CERTS[args.cert]}"]
    md += ["", f"Median of {args.runs} run(s), spread (min–max) in brackets. `*` = the "
           f"generator used more than {GEN_LIMIT:.0f}% of its core: not a result. "
           "Ratios are vinespy's figure divided by the other's (above 1 is better for "
           "rates, worse for latency, CPU and RSS).", "", md_table(header, body), ""]
    if notes:
        md += ["Errors and notes:", ""] + [f"- {n}" for n in notes] + [""]
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"{now:%Y-%m-%d}{'-' + args.name if args.name else ''}.md"
    path.write_text("\n".join(md))
    text = text_table(header, body)
    if notes:
        text += "\n\nErrors and notes:\n" + "\n".join(f"  {n}" for n in notes)
    return text + f"\n\nwritten to {path}"


def checkout_target(targets: Any, name: str) -> Any:
    """``vinespy@DIR``: the bench's vinespy run from the checkout at DIR (the
    code before a change, against this checkout's, in the same run)."""
    src = Path(name.partition("@")[2]).resolve()
    if not (src / "vinespy" / "__init__.py").exists():
        raise SystemExit(f"{name}: no vinespy checkout at {src}")

    class Checkout(targets.Vinespy):
        def env(self) -> dict[str, str]:
            return {**super().env(), "PYTHONPATH": str(src)}
    Checkout.name = name.replace("/", "_")
    return Checkout


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=None, help="default 3 (1 with --quick)")
    p.add_argument("--targets", default=",".join(ORDER),
                   help="comma-separated; vinespy@DIR runs the checkout at DIR too")
    p.add_argument("--quick", action="store_true",
                   help="1 run, fewer logins, shorter runs, no 10k idle (development)")
    p.add_argument("--scenarios", default="",
                   help="comma-separated subset, e.g. fixed,saturation (default: all)")
    p.add_argument("--name", default="",
                   help="results go to bench/results/<date>-NAME.md (default <date>.md)")
    p.add_argument("--cert", choices=tuple(CERTS), default="ecdsa",
                   help="the key type of the certificate all servers serve: ecdsa (P-256, "
                   "what `vinespy init` makes; the default) or rsa (2048 bits, as in the "
                   "earlier results)")
    args = p.parse_args()
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.runs < 1:
        p.error("--runs must be at least 1")
    load.setup()
    import targets  # bench/targets.py

    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    only = tuple(n.strip() for n in args.scenarios.split(",") if n.strip())
    bad = [n for n in only if n not in scenarios(args.quick)]
    if bad:
        p.error(f"unknown scenario(s) {', '.join(bad)}; known: {', '.join(scenarios(False))}")
    for n in names:
        if n.startswith("vinespy@"):
            targets.TARGETS[n] = checkout_target(targets, n)
    unknown = [n for n in names if n not in targets.TARGETS]
    if unknown:
        p.error(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(targets.TARGETS)}")
    workdir = Path(tempfile.mkdtemp(prefix="vinespy-bench-"))
    results: dict[str, Outcome] = {}
    try:
        cert, key = targets.make_cert(workdir / "cert", args.cert)
        for name in names:
            results[name] = run_target(name, targets.TARGETS[name], workdir, cert, key,
                                       args.runs, args.quick, only)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(report(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
