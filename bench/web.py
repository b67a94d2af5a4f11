"""XMPP over WebSocket (RFC 7395) and BOSH (XEP-0124/0206): what they cost vinespy.

Not part of the test suite. Two parts (issue 15's benchmark):

1. **messaging, WebSocket vs TCP** (goal: WebSocket CPU per message at most
   1.3x TCP's): ``--pairs`` (100) pairs of clients (``u0``..``u199``) send chat
   messages to each other's bare JIDs at ``--rate`` (2,000) msg/s in total,
   one stanza per write (``load.open_loop``; a WebSocket client frames every
   stanza as its own message), over three transports, alternating run by run
   (``--runs`` each, the order rotated every run), all to one node:

   * ``tcp-tls``: TCP with STARTTLS, the login of ``bench/load.py``;
   * ``tcp``: TCP without TLS (the node has ``tls = "optional"``);
   * ``ws``: WebSocket over plain ``ws://`` on loopback (no TLS either; a
     loopback client counts as secure, RFC 7395 has no STARTTLS).

   ``ws`` against ``tcp`` is the like-for-like comparison (neither encrypts);
   ``tcp-tls`` is what the existing benches measure. Server CPU per delivered
   message, p50/p99 latency, lost/misrouted/out-of-order, the generator's CPU.
2. **BOSH, 2,000 sessions long-polling**: on a fresh node, ``--bosh`` (2,000)
   BOSH sessions (``u200``..) log in (creation with ``wait=60 hold=1``,
   SCRAM-SHA-1, restart, bind, ``<presence/>``) and keep one request held
   from then on. RSS per session (``VmRSS`` after minus before, / sessions);
   then ``--senders`` (100) TCP clients send chat messages to the BOSH users'
   bare JIDs at ``--bosh-rate`` (500) msg/s: p50/p99 delivery latency (send
   -> the held request's response carrying it has arrived), lost and
   out-of-order counts, server CPU per message, HTTP requests per message.

The clients (``bench/webclients.py``) are raw and cheap, so that the
generator (one process, CPU 1) is not what is measured: a WebSocket client
is ``bench/load.py``'s ``Conn`` with RFC 6455 framing (masked text frames
written by hand, server frames decoded from the bytes received, pings
answered); a BOSH session is two raw HTTP/1.1 keep-alive connections
(``requests=2``: a new poll may go out while the old one is still held),
request bodies built from bytes, responses read by ``Content-Length``. The
node is ``bench/cluster.py``'s ``Node`` with an ``[http]`` table (127.0.0.1,
a free port, the defaults otherwise), rate limit off, logging at warning,
pinned to CPU 0.

The file is not called ``http.py``: run as a script, ``bench/`` comes first
on ``sys.path`` and a ``bench/http.py`` would stand in for the standard
library's ``http`` package in every bench script (aiohttp, urllib.request).

    .venv/bin/python bench/web.py                          # ~9 min
    .venv/bin/python bench/web.py --runs 1 --seconds 3 --bosh 200 --bosh-seconds 3
    .venv/bin/python bench/web.py --parts ws              # part 1 only

Writes ``bench/results/<today>-http.md`` (``--out``; ``-`` = none).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import gc
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import cluster  # noqa: E402
import load  # noqa: E402
import targets  # noqa: E402
from redis_transport import OtherLoad, git_rev, machine, python_cmd, wait_quiet  # noqa: E402
from webclients import BoshSession, BoshStats, WsConn  # noqa: E402

PASSWORD = cluster.PASSWORD
DOMAIN = load.DOMAIN
HOST = load.HOST
TRANSPORTS = ("tcp-tls", "tcp", "ws")
FIRST_BOSH_USER = 200
GEN_LIMIT = 85.0              # % of the generator's core above which a figure is flagged


class HttpNode(cluster.Node):
    """A ``bench/cluster.py`` node with an ``[http]`` listener on 127.0.0.1
    and ``tls = "optional"`` (TCP with and without STARTTLS on one node)."""

    def __init__(self, name: str, site: Path) -> None:
        super().__init__(name, site, targets.free_port(), 0, None, None, dirname=f"node-{name}")
        self.http_port = targets.free_port()

    def write_config(self) -> None:
        super().write_config()
        text = self.config.read_text()
        new = text.replace('tls = "required"', 'tls = "optional"', 1).replace(
            "[http]\nenabled = false\n",
            f'[http]\naddress = "{HOST}"\nport = {self.http_port}\n', 1)
        assert new.count("optional") == 1 and f"port = {self.http_port}" in new, text
        self.config.write_text(new)

    def start(self) -> None:
        super().start()
        deadline = time.monotonic() + cluster.START_TIMEOUT
        while not targets.port_open(self.http_port):
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"node {self.name}: no HTTP on port {self.http_port}")
            time.sleep(0.1)


async def xmpp_login(node: HttpNode, kind: str, user: str, res: str) -> load.Conn:
    """A full login over ``kind`` (one of TRANSPORTS): SCRAM-SHA-1, bind, presence."""
    loop = asyncio.get_running_loop()
    conn: load.Conn
    if kind == "ws":
        _, conn = await asyncio.wait_for(loop.create_connection(WsConn, HOST, node.http_port),
                                         load.TIMEOUT)
    else:
        conn = await load.connect(node.port)
    try:
        if isinstance(conn, WsConn):
            await conn.upgrade(node.http_port)
            await conn._features()
        elif kind == "tcp-tls":
            await conn.starttls(node.port, load.client_context())
        else:
            await conn._features()
        await conn.auth_scram(user, PASSWORD)
        await conn.bind(res)
        conn.write(b"<presence/>")
    except BaseException:
        conn.close()
        raise
    return conn


async def login_all(node: HttpNode, kind: str, specs: list[tuple[str, str]],
                    parallel: int = 50) -> list[load.Conn]:
    sem = asyncio.Semaphore(parallel)

    async def one(user: str, res: str) -> load.Conn:
        async with sem:
            try:
                return await xmpp_login(node, kind, user, res)
            except (load.XmppError, OSError, asyncio.TimeoutError):
                return await xmpp_login(node, kind, user, res)      # one retry
    got = await asyncio.gather(*(one(u, r) for u, r in specs), return_exceptions=True)
    conns = [c for c in got if isinstance(c, load.Conn)]
    if len(conns) < len(got):
        load.close_all(conns)
        raise next(e for e in got if isinstance(e, BaseException))
    return conns


def quiet(args: argparse.Namespace, pids: list[int]) -> None:
    """Wait (up to ``--quiet-wait`` s) until other processes use less than
    ``--quiet`` % of a core; say so when they still do."""
    if args.quiet_wait <= 0:
        return
    other = wait_quiet(pids, args.quiet, 1.0, args.quiet_wait)
    if other >= args.quiet:
        print(f"   (other processes still use {other:.0f}% of a core)", flush=True)


async def pairs_up(node: HttpNode, kind: str, pairs: int) -> list[load.Pair]:
    conns = await login_all(node, kind, [(f"u{i}", "r0") for i in range(2 * pairs)])
    ps = [load.Pair(i, conns[i], i ^ 1, conns[i ^ 1].jid) for i in range(2 * pairs)]
    for c in conns:
        c.discard()
    await asyncio.sleep(1.0)        # presence echoes and the like
    await load.quiesce(node.pid)
    for p in ps:
        p.conn.on_data = p.data
    return ps


@contextlib.contextmanager
def gc_paused() -> Any:
    """The generator's own cyclic GC off while it measures: a collection in
    the generator (tens of ms with 2,000 sessions) would show up as delivery
    latency. Collected before and after, untimed."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


def cpu_probe(pid: int, ps: list[load.Pair]) -> load.Probe:
    """Server CPU per message delivered in the measured interval."""
    async def probe() -> load.Finish:
        c0, n0, t0 = load.proc_cpu(pid), sum(p.received for p in ps), time.perf_counter()
        other = OtherLoad([pid])

        async def finish(sent: int) -> dict[str, Any]:
            c1, n1, t1 = load.proc_cpu(pid), sum(p.received for p in ps), time.perf_counter()
            return {"cpu_us": (c1 - c0) / max(n1 - n0, 1) * 1e6,
                    "busy": 100 * (c1 - c0) / (t1 - t0), "msgs": n1 - n0,
                    "msg_s": (n1 - n0) / (t1 - t0), "sent": sent,
                    "other": other.percent(), "load": os.getloadavg()[0]}
        return finish
    return probe


async def messaging(node: HttpNode, args: argparse.Namespace, res: dict[str, Any]) -> None:
    users = [f"u{i}" for i in range(2 * args.pairs)]
    await load.learn_salts(load.Env(node.port, node.pid, PASSWORD), users)
    for i in range(args.runs):
        k = i % len(args.transports)
        for kind in args.transports[k:] + args.transports[:k]:
            quiet(args, [node.pid])
            ps = await pairs_up(node, kind, args.pairs)
            with gc_paused():
                r = await load.open_loop(ps, args.rate, args.warmup, args.seconds, 0.001, 5.0,
                                         cpu_probe(node.pid, ps))
            res["fixed"][kind].append(r)
            print(f"   run {i + 1} {kind:7}: {r['cpu_us']:6.1f} µs/msg, {r['msg_s']:,.0f} msg/s, "
                  f"p50 {r['p50_ms']:.2f} p99 {r['p99_ms']:.2f} ms; server {r['busy']:.0f}%, "
                  f"gen {r['gen_cpu']:.0f}%, other {r['other']:.0f}%, load {r['load']:.2f}; "
                  f"lost/mis/ooo {r['lost']:.0f}/{r['misrouted']:.0f}/{r['ooo']:.0f}",
                  flush=True)
            await load.quiesce(node.pid)


# ------------------------------------------------------------------ BOSH -----

async def bosh_logins(node: HttpNode, count: int, parallel: int,
                      stats: BoshStats) -> list[BoshSession]:
    sem = asyncio.Semaphore(parallel)
    sessions = [BoshSession(node.http_port, f"u{FIRST_BOSH_USER + i}", PASSWORD, stats)
                for i in range(count)]

    async def one(s: BoshSession) -> None:
        async with sem:
            await s.login()
    got = await asyncio.gather(*(one(s) for s in sessions), return_exceptions=True)
    bad = [e for e in got if isinstance(e, BaseException)]
    if bad:
        for s in sessions:
            s.stop()
        raise RuntimeError(f"{len(bad)} of {count} BOSH logins failed, e.g. {bad[0]!r}")
    return sessions


async def bosh_send(senders: list[load.Conn], count: int, rate: float, warmup: float,
                    seconds: float, stats: BoshStats, tick: float = 0.001) -> dict[str, Any]:
    """Open loop at ``rate`` msg/s: message m goes to BOSH user m % count,
    from sender (m % count) % len(senders), one stanza per write."""
    seq = [0] * count
    prefix = [b"<message to='u%d@%s' type='chat'><body>%d " % (
        FIRST_BOSH_USER + t, DOMAIN.encode(), t % len(senders)) for t in range(count)]
    loop_t0 = time.perf_counter()
    t_measure, t_end = loop_t0 + warmup, loop_t0 + warmup + seconds
    sent = idx = 0
    sent_measured = 0
    writes = 0
    measuring = False
    while True:
        now = time.perf_counter()
        if now >= t_end:
            break
        if not measuring and now >= t_measure:
            measuring = True
            stats.measure_from = time.perf_counter_ns()
            sent_measured = sent
        due = int((now - loop_t0) * rate) - sent
        if due > 0:
            ns = time.perf_counter_ns()
            batch: dict[int, list[bytes]] = {}
            for _ in range(due):
                t = idx % count
                idx += 1
                seq[t] += 1
                batch.setdefault(t % len(senders), []).append(
                    b"%s%d %d</body></message>" % (prefix[t], seq[t], ns))
            for s, parts in batch.items():
                senders[s].write(b"".join(parts))
            writes += len(batch)
            sent += due
        await asyncio.sleep(tick)
    return {"sent": sent, "sent_measured": sent - sent_measured, "writes": writes}


async def reference(node: HttpNode, senders: list[load.Conn], args: argparse.Namespace,
                    r: dict[str, Any], run: int) -> None:
    """The same rate between TCP pairs on the same node (the BOSH sessions
    still held): what a message costs when no HTTP is involved."""
    load.close_all(senders)
    senders.clear()
    await asyncio.sleep(1.0)
    ps = await pairs_up(node, args.bosh_senders, args.senders // 2)
    with gc_paused():
        ref = await load.open_loop(ps, args.bosh_rate, args.warmup, args.bosh_seconds, 0.001,
                                   5.0, cpu_probe(node.pid, ps))
    keys = ("cpu_us", "busy", "p50_ms", "p99_ms", "gen_cpu", "other", "load", "lost",
            "misrouted", "ooo")
    r.update({f"ref_{k}": ref[k] for k in keys})
    print(f"   run {run + 1}: reference, {args.bosh_rate:,.0f} msg/s between "
          f"{args.senders // 2} {args.bosh_senders} pairs: {ref['cpu_us']:.1f} µs/msg, "
          f"p50 {ref['p50_ms']:.2f} p99 {ref['p99_ms']:.2f} ms; server {ref['busy']:.0f}%, "
          f"gen {ref['gen_cpu']:.0f}%, lost/mis/ooo {ref['lost']:.0f}/{ref['misrouted']:.0f}/"
          f"{ref['ooo']:.0f}", flush=True)


async def bosh_part(site: Path, args: argparse.Namespace, res: dict[str, Any],
                    started: Callable[[cluster.Node], None], run: int) -> None:
    node = HttpNode(f"bosh{run}", site)
    node.start()
    started(node)
    stats = BoshStats()
    sessions: list[BoshSession] = []
    senders: list[load.Conn] = []
    r: dict[str, Any] = {}
    try:
        users = [f"u{i}" for i in range(args.senders)]
        await load.learn_salts(load.Env(node.port, node.pid, PASSWORD), users + ["u200"])
        warm = BoshStats()                  # one session first: aiohttp's lazy parts
        w = (await bosh_logins(node, 1, 1, warm))[0]
        await asyncio.sleep(0.5)
        w.stop()
        await asyncio.sleep(2.0)
        await load.quiesce(node.pid)
        quiet(args, [node.pid])
        r["rss0_kb"] = load.proc_rss_kb(node.pid)
        other = OtherLoad([node.pid])
        c0, t0 = load.proc_cpu(node.pid), time.perf_counter()
        sessions = await bosh_logins(node, args.bosh, args.bosh_parallel, stats)
        t1, c1 = time.perf_counter(), load.proc_cpu(node.pid)
        r["login_s"] = args.bosh / (t1 - t0)
        r["login_cpu_ms"] = (c1 - c0) / args.bosh * 1000
        r["login_other"] = other.percent()
        await asyncio.sleep(2.0)
        await load.quiesce(node.pid)
        held = sum(1 for s in sessions if any(c.busy for c in s.conns))
        r["rss1_kb"] = load.proc_rss_kb(node.pid)
        r["rss_kb_per_session"] = (r["rss1_kb"] - r["rss0_kb"]) / args.bosh
        r["held"] = held
        print(f"   run {run + 1}: {args.bosh:,} BOSH sessions in {t1 - t0:.1f} s "
              f"({r['login_s']:.0f}/s, {r['login_cpu_ms']:.2f} ms server CPU each), "
              f"{held:,} requests held; RSS {r['rss0_kb'] / 1024:.1f} -> "
              f"{r['rss1_kb'] / 1024:.1f} MiB: {r['rss_kb_per_session']:.1f} KiB/session",
              flush=True)
        senders = await login_all(node, args.bosh_senders, [(u, "s") for u in users])
        for c in senders:
            c.discard()
        await asyncio.sleep(1.0)
        await load.quiesce(node.pid)
        quiet(args, [node.pid])
        with gc_paused():
            received0 = stats.received
            task = asyncio.ensure_future(bosh_send(senders, args.bosh, args.bosh_rate, args.warmup,
                                                   args.bosh_seconds, stats))
            await asyncio.sleep(args.warmup)
            other = OtherLoad([node.pid])
            gen = load.GenCpu()
            c0, t0 = load.proc_cpu(node.pid), time.perf_counter()
            n0, q0 = stats.received, stats.requests
            await asyncio.sleep(args.bosh_seconds)
            c1, t1 = load.proc_cpu(node.pid), time.perf_counter()
            n1, q1 = stats.received, stats.requests
            g, o = gen.percent(), other.percent()
            sent = await task
            deadline = time.monotonic() + 10.0
            while stats.received - received0 < sent["sent"] and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        ms = [v / 1e6 for v in stats.latencies]
        delivered = n1 - n0
        r.update({
            "p50_ms": load.pct(ms, 0.5), "p99_ms": load.pct(ms, 0.99),
            "max_ms": max(ms) if ms else float("nan"), "msg_s": delivered / (t1 - t0),
            "cpu_us": (c1 - c0) / max(delivered, 1) * 1e6, "busy": 100 * (c1 - c0) / (t1 - t0),
            "req_per_msg": (q1 - q0) / max(delivered, 1), "gen_cpu": g, "other": o,
            "load": os.getloadavg()[0], "lost": sent["sent"] - (stats.received - received0),
            "ooo": stats.ooo, "errors": len(stats.errors),
            "msgs_per_response": (stats.received - received0) / max(
                stats.with_messages, 1) if stats.with_messages else float("nan"),
            "sent": sent["sent"], "writes_per_msg": sent["writes"] / max(sent["sent"], 1)})
        print(f"   run {run + 1}: {r['msg_s']:,.0f} msg/s to BOSH users: p50 {r['p50_ms']:.2f} "
              f"p99 {r['p99_ms']:.2f} max {r['max_ms']:.1f} ms; {r['cpu_us']:.1f} µs/msg, "
              f"server {r['busy']:.0f}%, gen {g:.0f}%, other {o:.0f}%, load {r['load']:.2f}; "
              f"{r['req_per_msg']:.2f} requests/msg; lost {r['lost']} ooo {r['ooo']} "
              f"errors {r['errors']}", flush=True)
        if args.reference:
            await reference(node, senders, args, r, run)
        if stats.errors:
            print(f"   e.g. {stats.errors[0]}", file=sys.stderr, flush=True)
            res["errors"].append(f"BOSH run {run + 1}: {len(stats.errors)} session(s) failed, "
                                 f"e.g. {stats.errors[0][:200]}")
        res["bosh"].append(r)
    finally:
        for s in sessions:
            s.stop()
        load.close_all(senders)
        node.stop()


# ------------------------------------------------------------------ report -----

def med(vals: list[float], fmt: str) -> str:
    vals = [v for v in vals if v == v]
    if not vals:
        return "—"
    s = fmt.format(statistics.median(vals))
    return s + (f" ({fmt.format(min(vals))}–{fmt.format(max(vals))})" if len(vals) > 1 else "")


def ws_table(res: dict[str, Any], args: argparse.Namespace) -> str:
    kinds = [k for k in TRANSPORTS if res["fixed"][k]]
    if not kinds:
        return "(part 1 not run)"
    names = {"tcp-tls": "TCP + STARTTLS", "tcp": "TCP, no TLS", "ws": "WebSocket (ws://)"}
    ratios = [("ws", "tcp"), ("ws", "tcp-tls")]
    ratios = [(a, b) for a, b in ratios if a in kinds and b in kinds]
    lines = ["| figure | " + " | ".join(names[k] for k in kinds) + " | "
             + " | ".join(f"{a} / {b}" for a, b in ratios) + " |",
             "|---|" + "---:|" * (len(kinds) + len(ratios))]

    def row(label: str, key: str, fmt: str, ratio: bool = True) -> None:
        cells = [med([r[key] for r in res["fixed"][k]], fmt) for k in kinds]
        for a, b in ratios:
            rs = [y[key] / x[key] for x, y in zip(res["fixed"][b], res["fixed"][a]) if x[key]]
            cells.append(med(rs, "{:.2f}") if ratio else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    rate = f"@ {args.rate:,.0f} msg/s"
    row(f"server CPU per delivered message {rate} (µs)", "cpu_us", "{:.1f}")
    row(f"server core busy {rate} (%)", "busy", "{:.0f}", False)
    row("delivered msg/s", "msg_s", "{:,.0f}", False)
    row(f"latency p50 {rate} (ms)", "p50_ms", "{:.2f}")
    row(f"latency p99 {rate} (ms)", "p99_ms", "{:.2f}")
    lines.append("| lost/misrouted/out-of-order (all runs) | " + " | ".join(
        "/".join(f"{sum(r[x] for r in res['fixed'][k]):.0f}" for x in ("lost", "misrouted", "ooo"))
        for k in kinds) + " |" + " |" * len(ratios))
    for label, key in (("generator CPU, highest (%)", "gen_cpu"),
                       ("other processes' CPU, highest (%)", "other"),
                       ("load average (1 min), highest", "load")):
        fmt = "{:.2f}" if key == "load" else "{:.0f}"
        lines.append(f"| {label} | " + " | ".join(
            fmt.format(max(r[key] for r in res["fixed"][k])) for k in kinds) + " |"
            + " |" * len(ratios))
    return "\n".join(lines)


def bosh_table(res: dict[str, Any], args: argparse.Namespace) -> str:
    rs = res["bosh"]
    if not rs:
        return "(part 2 not run)"

    def v(key: str) -> list[float]:
        return [r[key] for r in rs if key in r]
    rate = f"@ {args.bosh_rate:,.0f} msg/s"
    rows = [
        ("BOSH sessions logged in, one request held each", f"{args.bosh:,}"),
        ("logins/s (creation, SCRAM-SHA-1, restart, bind, presence)",
         med(v("login_s"), "{:,.0f}")),
        ("server CPU per login (ms)", med(v("login_cpu_ms"), "{:.2f}")),
        ("server RSS before / after (MiB)",
         f"{med([x / 1024 for x in v('rss0_kb')], '{:.1f}')} / "
         f"{med([x / 1024 for x in v('rss1_kb')], '{:.1f}')}"),
        ("**RSS per BOSH session (KiB)**", med(v("rss_kb_per_session"), "{:.1f}")),
        (f"delivered msg/s {rate}", med(v("msg_s"), "{:,.0f}")),
        (f"delivery latency p50 {rate} (ms)", med(v("p50_ms"), "{:.2f}")),
        (f"**delivery latency p99 {rate} (ms)**", med(v("p99_ms"), "{:.2f}")),
        (f"delivery latency max {rate} (ms)", med(v("max_ms"), "{:.1f}")),
        (f"server CPU per delivered message {rate} (µs)", med(v("cpu_us"), "{:.1f}")),
        (f"server core busy {rate} (%)", med(v("busy"), "{:.0f}")),
        ("HTTP requests per delivered message", med(v("req_per_msg"), "{:.2f}")),
        ("messages per response carrying any", med(v("msgs_per_response"), "{:.2f}")),
        (f"reference, TCP pairs {rate}: server CPU per message (µs)",
         med(v("ref_cpu_us"), "{:.1f}")),
        ("BOSH / TCP server CPU per message (per-run ratios)",
         med([x["cpu_us"] / x["ref_cpu_us"] for x in rs if x.get("ref_cpu_us")], "{:.2f}")),
        (f"reference, TCP pairs {rate}: latency p50 / p99 (ms)",
         f"{med(v('ref_p50_ms'), '{:.2f}')} / {med(v('ref_p99_ms'), '{:.2f}')}"),
        ("lost / out-of-order / failed sessions (all runs)",
         f"{sum(v('lost')):.0f} / {sum(v('ooo')):.0f} / {sum(v('errors')):.0f}"),
        ("reference: lost/misrouted/out-of-order (all runs)",
         "/".join(f"{sum(v('ref_' + k)):.0f}" for k in ("lost", "misrouted", "ooo"))),
        ("generator CPU, highest (%)", f"{max(v('gen_cpu') + v('ref_gen_cpu')):.0f}"),
        ("other processes' CPU, highest (%)",
         f"{max(v('other') + v('login_other') + v('ref_other')):.0f}"),
        ("load average (1 min), highest", f"{max(v('load') + v('ref_load')):.2f}"),
    ]
    return "\n".join(["| figure | value |", "|---|---:|"]
                     + [f"| {a} | {b} |" for a, b in rows])


def report(res: dict[str, Any], args: argparse.Namespace) -> str:
    import aiohttp
    errors = "".join(f"\n- {e}" for e in res["errors"])
    flagged = [k for k in TRANSPORTS for r in res["fixed"][k] if r["gen_cpu"] > GEN_LIMIT]
    flagged += ["bosh" for r in res["bosh"] if r.get("gen_cpu", 0) > GEN_LIMIT]
    warn = (f"\n**The generator used more than {GEN_LIMIT:.0f}% of its core in some runs "
            f"({', '.join(sorted(set(flagged)))}): those figures partly measure it.**\n"
            if flagged else "")
    return f"""# vinespy over HTTP: WebSocket against TCP, BOSH long-polling

`{' '.join([python_cmd(), 'bench/web.py', *sys.argv[1:]])}` on
{datetime.date.today().isoformat()}: {machine()}; Python {platform.python_version()},
uvloop {'yes' if load.has_uvloop() else 'no'}, aiohttp {aiohttp.__version__}; vinespy at
{git_rev()}. Node on CPU 0, generator on CPU 1. Load average (1/5/15 min) when
the run began: {res['load_start']}; when it ended: {res['load_end']}.
{warn}
## 1. CPU per message: WebSocket against TCP

{ws_table(res, args)}

Medians of {args.runs} run(s) per transport, (min–max); a ratio is the median
of the per-run ratios (runs alternate, so each pair of runs saw the same
machine). **`ws / tcp` is the fair comparison**: neither encrypts (plain
`ws://` on loopback, TCP without STARTTLS); `ws / tcp-tls` sets unencrypted
WebSocket against encrypted TCP and flatters WebSocket. Issue 15's goal is
`ws / tcp` ≤ 1.3.

## 2. {args.bosh:,} BOSH sessions long-polling

{bosh_table(res, args)}

{len(res['bosh'])} run(s), each on a fresh node; medians (min–max).
{'' if not errors else chr(10) + 'Errors:' + errors + chr(10)}
## How it was measured

- One node (`bench/cluster.py`'s `Node`: the `bench/targets.py` site, fs
  storage, users with SCRAM-SHA-1 keys at 10,000 iterations, modules iq,
  presence, message, roster, disco, ping; rate limit off; logging at warning)
  with `[client] tls = "optional"` and `[http] address = "127.0.0.1"`, a free
  port, everything else default (WebSocket pings every 30 s, answered;
  `bosh_max_wait` 120 s); pinned to CPU 0, the generator to CPU 1. Server CPU
  = utime+stime of the node (`/proc/PID/stat`) over the measured interval;
  RSS = `VmRSS`.
- Part 1: {args.pairs} pairs (`u0`..`u{2 * args.pairs - 1}`, resource `r0`,
  SCRAM-SHA-1) log in over the transport of the run, then `load.open_loop`:
  {args.rate:,.0f} msg/s in total from a 1 ms timer, spread evenly over the
  senders, to the partner's bare JID; {args.warmup:g} s warm-up +
  {args.seconds:g} s measured; one stanza per write (over WebSocket: per
  frame; in a tick where one sender has two messages due, they leave in one
  write, as two frames over WebSocket). Bodies `"<sender> <seq>
  <perf_counter_ns>"` are checked for loss, misrouting (the `from` must be the
  partner's full JID) and order. CPU per message = server CPU / messages
  delivered in the measured interval. Transports alternate run by run, the
  order rotated each run; the same node serves every run (fresh connections).
- WebSocket client: the HTTP upgrade with `Sec-WebSocket-Protocol: xmpp`,
  then RFC 7395 (`<open/>`, SASL, `<open/>` again, bind): one masked text
  frame per stanza (a random 4-byte key per frame), the server's frames
  decoded from the bytes received, pings answered with pongs.
- Part 2: on a fresh node, one BOSH session is logged in and dropped (the
  HTTP code's first-use allocations), then RSS is read; {args.bosh:,} sessions
  (`u{FIRST_BOSH_USER}`..`u{FIRST_BOSH_USER + args.bosh - 1}`, one each,
  {args.bosh_parallel} logins in flight) do: session creation (`wait='60'
  hold='1'`; features in the response), SCRAM-SHA-1 (2 requests), restart
  (`xmpp:restart`), bind, `<presence/>` and at once an empty request, which
  releases the presence request; from then on every response is followed by
  the next empty request, so one request per session is held. RSS again 2 s
  after the last login, once the node is idle: (after − before) / sessions.
  Then {args.senders} TCP clients (`u0`..`u{args.senders - 1}`, {args.bosh_senders}) send chat
  messages to the BOSH users' bare JIDs at {args.bosh_rate:,.0f} msg/s in total
  (message *m* to BOSH user *m* mod {args.bosh:,}, each BOSH user always from
  the same sender; one stanza per write), {args.warmup:g} s warm-up +
  {args.bosh_seconds:g} s measured. Latency = the body's send time (taken just
  before the write) to the moment the HTTP response carrying it is read whole,
  for messages sent in the measured interval. Each BOSH session uses at most 2
  raw HTTP/1.1 keep-alive connections (`requests='2'`).
  Reference (the TCP rows): the senders log out, {args.senders // 2} pairs of
  TCP clients ({args.bosh_senders}) exchange messages at the same rate on the
  same node (the BOSH sessions still held), as in part 1: the same work
  without HTTP, so BOSH / TCP is what the HTTP transport adds.
- The generator's CPU is `getrusage` over the measured interval; above
  {GEN_LIMIT:.0f}% of its core a figure would measure the generator. Its own
  cyclic GC is off while it measures (collected before and after): a
  collection in the generator would show up as latency.
- Before each run the bench waits (up to {args.quiet_wait:g} s) until other
  processes use less than {args.quiet:g}% of a core. "Other processes' CPU" is
  what every other process on the machine used during a measured interval
  (`/proc/stat`), in % of one core; the load average is the machine's.
"""


async def bench(args: argparse.Namespace, site: Path, res: dict[str, Any],
                started: Callable[[cluster.Node], None]) -> None:
    if "ws" in args.parts:
        node = HttpNode("ws", site)
        node.start()
        started(node)
        print(f"== messaging at {args.rate:,.0f} msg/s: {', '.join(args.transports)}", flush=True)
        try:
            await messaging(node, args, res)
        finally:
            node.stop()
    if "bosh" in args.parts:
        print(f"== {args.bosh:,} BOSH sessions, then {args.bosh_rate:,.0f} msg/s to them",
              flush=True)
        for run in range(args.bosh_runs):
            await bosh_part(site, args, res, started, run)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="ws,bosh", help="ws, bosh or both (comma-separated)")
    p.add_argument("--transports", default=",".join(TRANSPORTS),
                   help="part 1: any of tcp-tls, tcp, ws")
    p.add_argument("--pairs", type=int, default=100)
    p.add_argument("--rate", type=float, default=2000.0, help="part 1: msg/s in total")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--seconds", type=float, default=10.0, help="part 1: measured s per run")
    p.add_argument("--runs", type=int, default=5, help="part 1: runs per transport")
    p.add_argument("--bosh", type=int, default=2000, help="part 2: BOSH sessions")
    p.add_argument("--bosh-parallel", type=int, default=100, help="part 2: logins in flight")
    p.add_argument("--bosh-rate", type=float, default=500.0, help="part 2: msg/s in total")
    p.add_argument("--bosh-seconds", type=float, default=20.0, help="part 2: measured s")
    p.add_argument("--bosh-runs", type=int, default=2, help="part 2: runs (fresh node each)")
    p.add_argument("--senders", type=int, default=100, help="part 2: TCP senders")
    p.add_argument("--bosh-senders", default="tcp-tls", choices=("tcp-tls", "tcp"),
                   help="part 2: the senders' transport")
    p.add_argument("--quiet", type=float, default=10.0,
                   help="before each run, wait until other processes use less than this "
                   "%% of a core (10)")
    p.add_argument("--quiet-wait", type=float, default=60.0,
                   help="... for at most this many seconds (60; 0 = do not wait)")
    p.add_argument("--no-reference", dest="reference", action="store_false",
                   help="part 2: skip the TCP pairs at the same rate")
    p.add_argument("--keep", action="store_true", help="keep the site directory (logs)")
    p.add_argument("--out", default=None, help="default bench/results/<today>-http.md; - = none")
    args = p.parse_args()
    args.parts = args.parts.split(",")
    args.transports = args.transports.split(",")
    if not set(args.parts) <= {"ws", "bosh"} or not set(args.transports) <= set(TRANSPORTS):
        p.error("--parts takes ws and/or bosh; --transports any of " + ", ".join(TRANSPORTS))
    if args.senders > FIRST_BOSH_USER or 2 * args.pairs > FIRST_BOSH_USER:
        p.error(f"at most {FIRST_BOSH_USER} senders and {FIRST_BOSH_USER // 2} pairs")
    out = Path(args.out) if args.out else (
        HERE / "results" / f"{datetime.date.today().isoformat()}-http.md")
    cluster.interrupt_on_sigterm()
    load.setup()
    work = Path(tempfile.mkdtemp(prefix="vinespy-web-"))
    running: list[Any] = []
    res: dict[str, Any] = {"fixed": {k: [] for k in TRANSPORTS}, "bosh": [], "errors": [],
                           "load_start": _loadavg()}
    try:
        crt, key = targets.make_cert(work / "cert")
        t = targets.Vinespy(work, crt, key)
        t.prepare(FIRST_BOSH_USER + args.bosh, PASSWORD)
        try:
            asyncio.run(bench(args, t.dir, res, running.append))
        except Exception as exc:                     # noqa: BLE001 - report what ran
            res["errors"].append(f"{type(exc).__name__}: {exc}")
            print(f"error: {exc!r}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    finally:
        cluster.stop_all(running, work, args.keep)
    res["load_end"] = _loadavg()
    print()
    print(ws_table(res, args))
    print()
    print(bosh_table(res, args))
    if str(out) != "-":
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report(res, args))
        print(f"\nwritten to {out}")
    bad = res["errors"] or any(r["lost"] or r["misrouted"] or r["ooo"]
                               for k in TRANSPORTS for r in res["fixed"][k]) or any(
        r["lost"] or r["ooo"] or r.get("ref_lost") or r.get("ref_misrouted") or r.get("ref_ooo")
        for r in res["bosh"])
    return 1 if bad else 0


def _loadavg() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
