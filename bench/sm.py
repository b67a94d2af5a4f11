"""XEP-0198 stream management: what it costs vinespy, in one run.

1. **messaging**: 100 pairs (``u0``..``u199``) send chat messages to each
   other's bare JIDs, SM off and SM on alternately (``--runs`` each): open
   loop at ``--rate`` msg/s, one stanza per write (``load.open_loop``), then
   the closed loop at saturation (``load.closed_loop``). With SM on every
   client enables it (``resume='true'``), acknowledges after every 10
   stanzas it receives and answers the server's ``<r/>``. Server CPU per
   delivered message, p50/p99 latency, lost/misrouted/out-of-order.
2. **memory**: ``--idle`` authenticated idle STARTTLS sessions (u200..u399)
   on a fresh node, each sent 10 chat messages (to its own full JID): no SM;
   SM with everything acknowledged (empty queue); SM with the 10 left
   unacknowledged. RSS growth per session (``VmRSS``).
3. **resumption**: a client with SM stops reading its connection (left
   open), 100 messages are sent to it, then on a new connection (STARTTLS,
   SCRAM, restart) ``<resume/>``: the time until the 100th message sent again
   arrives, on a standalone node, and in a 2-node cluster with a real
   redis-server on the same node and on the other one.

The nodes (``bench/cluster.py``'s ``Node``, with ``sm`` added to the modules)
run on CPU 0 (both nodes and redis-server in the cluster), the generator
(``bench/load.py``) on CPU 1. Writes ``bench/results/<today>-sm.md``.

    .venv/bin/python bench/sm.py            # ~7 min
    .venv/bin/python bench/sm.py --runs 1 --seconds 3 --idle 500 --resumes 10
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import platform
import re
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
from redis_transport import OtherLoad, RedisServer, git_rev, machine, python_cmd  # noqa: E402

PASSWORD = cluster.PASSWORD
DOMAIN = load.DOMAIN
NS = "urn:xmpp:sm:3"
_TAG = re.compile(rb"<(message|presence|iq|r)[\s/>]")
_TOKEN = re.compile(rb"id=['\"]([^'\"]+)['\"]")
NEVER = 1 << 60


class SmNode(cluster.Node):
    """A ``bench/cluster.py`` node with the ``sm`` module loaded."""

    def write_config(self) -> None:
        super().write_config()
        self.config.write_text(self.config.read_text().replace('modules = [',
                                                               'modules = ["sm", ', 1))


class SmConn(load.Conn):
    """A load.Conn that counts the stanzas it receives (``h``) once its
    data goes to :meth:`count`; with SM enabled it sends ``<a h/>`` after
    every ``every`` stanzas and answers ``<r/>`` (``answer``); ``then`` gets
    each chunk after that (``load.Pair.data``)."""

    def __init__(self) -> None:
        super().__init__()
        self.sm = False
        self.token = ""
        self.h = self.acked = self.acks = self.requests = 0
        self.every, self.answer = 10, True
        self.carry = b""
        self.then: Callable[[bytes], None] | None = None

    def count(self, data: bytes) -> None:
        chunk = self.carry + data if self.carry else data
        cut = chunk.rfind(b"<")
        if 0 <= cut and len(chunk) - cut < 10:      # maybe a tag cut in two: next time
            chunk, self.carry = chunk[:cut], chunk[cut:]
        else:
            self.carry = b""
        tags = _TAG.findall(chunk)
        r = tags.count(b"r")
        self.h += len(tags) - r
        self.requests += r
        if self.sm and ((r and self.answer) or self.h - self.acked >= self.every):
            self.ack()
        if self.then is not None:
            self.then(data)

    def ack(self) -> None:
        self.acked = self.h
        self.acks += 1
        self.write(b"<a xmlns='%s' h='%d'/>" % (NS.encode(), self.h % (1 << 32)))

    def close(self) -> None:
        if self.sm and not self.closed:
            self.ack()                  # a clean end: nothing left unacknowledged
        super().close()


async def sm_login(port: int, user: str, res: str | None, sm: bool) -> SmConn:
    """STARTTLS + SCRAM-SHA-1; then (``res`` given) bind, ``<enable/>`` when
    ``sm`` (counting from ``<enabled/>`` on) and ``<presence/>``."""
    _, conn = await asyncio.wait_for(asyncio.get_running_loop().create_connection(
        SmConn, load.HOST, port), load.TIMEOUT)
    try:
        await conn.starttls(port, load.client_context())
        await conn.auth_scram(user, PASSWORD)
        if res is None:
            await conn._features()                          # restarted: for <resume/>
            return conn
        await conn.bind(res)
        if sm:
            conn.write(f"<enable xmlns='{NS}' resume='true'/>".encode())
            tok, _ = await conn.until(b"<enabled", b"<failed")
            _, attrs = await conn.until(b"/>")
            m = _TOKEN.search(attrs)
            if tok != b"<enabled" or m is None:
                raise load.XmppError(f"enable failed: {attrs!r}")
            conn.sm, conn.token = True, m.group(1).decode()
            rest = bytes(conn.buf)
            del conn.buf[:]
            conn.on_data = conn.count
            if rest:
                conn.count(rest)
        conn.write(b"<presence/>")
    except BaseException:
        conn.close()
        raise
    return conn


async def login_all(node: cluster.Node, specs: list[tuple[str, str]], sm: bool,
                    parallel: int) -> list[SmConn]:
    await load.learn_salts(load.Env(node.port, node.pid, PASSWORD), sorted({u for u, _ in specs}))
    sem = asyncio.Semaphore(parallel)

    async def one(user: str, res: str) -> SmConn:
        async with sem:
            try:
                return await sm_login(node.port, user, res, sm)
            except (load.XmppError, OSError):
                return await sm_login(node.port, user, res, sm)     # one retry
    got = await asyncio.gather(*(one(u, r) for u, r in specs), return_exceptions=True)
    conns = [c for c in got if isinstance(c, SmConn)]
    if len(conns) < len(got):
        load.close_all(conns)
        raise next(e for e in got if isinstance(e, BaseException))
    return conns


async def pairs_up(node: cluster.Node, pairs: int, sm: bool) -> list[load.Pair]:
    conns = await login_all(node, [(f"u{i}", "r0") for i in range(2 * pairs)], sm, 50)
    ps = [load.Pair(i, conns[i], i ^ 1, conns[i ^ 1].jid) for i in range(2 * pairs)]
    for c in conns:
        if not sm:
            c.discard()
    await asyncio.sleep(1.0)        # presence echoes and the like
    await load.quiesce(node.pid)
    for p in ps:
        c = p.conn
        assert isinstance(c, SmConn)
        if sm:
            c.then = p.data
        else:
            c.on_data = p.data
    return ps


def cpu_probe(pid: int, ps: list[load.Pair]) -> load.Probe:
    """Server CPU per message delivered in the measured interval."""
    async def probe() -> load.Finish:
        c0, n0, t0 = load.proc_cpu(pid), sum(p.received for p in ps), time.perf_counter()
        other = OtherLoad([pid])

        async def finish(_: int) -> dict[str, Any]:
            c1, n1, t1 = load.proc_cpu(pid), sum(p.received for p in ps), time.perf_counter()
            conns = [p.conn for p in ps]
            return {"cpu_us": (c1 - c0) / max(n1 - n0, 1) * 1e6,
                    "busy": 100 * (c1 - c0) / (t1 - t0),
                    "msgs": n1 - n0, "other": other.percent(), "acks": sum(c.acks for c in conns),
                    "reqs": sum(c.requests for c in conns), "recv": sum(p.received for p in ps)}
        return finish
    return probe


async def messaging(node: cluster.Node, args: argparse.Namespace, res: dict[str, Any]) -> None:
    for i in range(args.runs):
        for kind in ("fixed", "sat"):
            for mode in ("off", "on"):
                ps = await pairs_up(node, args.pairs, mode == "on")
                if kind == "fixed":
                    r = await load.open_loop(ps, args.rate, args.warmup, args.seconds, 0.001, 5.0,
                                             cpu_probe(node.pid, ps))
                else:
                    r = await load.closed_loop(ps, 20, args.warmup, args.sat_seconds, 5.0,
                                               cpu_probe(node.pid, ps))
                r["per_1k_acks"] = 1000 * r["acks"] / max(r["recv"], 1)
                r["per_1k_reqs"] = 1000 * r["reqs"] / max(r["recv"], 1)
                res[kind][mode].append(r)
                lat = f"p50 {r['p50_ms']:.2f} p99 {r['p99_ms']:.2f} ms; " if kind == "fixed" else ""
                print(f"   run {i + 1} {kind:5} SM {mode:3}: {r['cpu_us']:.1f} µs/msg, "
                      f"{r['msgs'] / (args.seconds if kind == 'fixed' else args.sat_seconds):,.0f}"
                      f" msg/s, {lat}server {r['busy']:.0f}%, gen {r['gen_cpu']:.0f}%, "
                      f"lost/mis/ooo {r['lost']:.0f}/{r['misrouted']:.0f}/{r['ooo']:.0f}, "
                      f"acks {r['per_1k_acks']:.0f} r {r['per_1k_reqs']:.0f} per 1k",
                      flush=True)
                await load.quiesce(node.pid)


def _self_msgs(conn: SmConn, n: int) -> bytes:
    now = time.perf_counter_ns()
    return b"".join(b"<message to='%s' type='chat'><body>0 %d %d</body></message>"
                    % (conn.jid.encode(), s, now) for s in range(1, n + 1))


async def idle_memory(node: cluster.Node, variant: str, count: int) -> float:
    """RSS growth per idle session, KiB (sessions u200..u399, 10 messages each)."""
    specs = load.idle_specs(count)
    await load.learn_salts(load.Env(node.port, node.pid, PASSWORD), sorted({u for u, _ in specs}))
    await asyncio.sleep(2.0)
    await load.quiesce(node.pid)
    base = load.proc_rss_kb(node.pid)
    conns = await login_all(node, specs, variant != "none", 100)
    try:
        for c in conns:
            if not c.sm:
                c.on_data, c.every = c.count, NEVER
                del c.buf[:]
        await asyncio.sleep(1.0)
        await load.quiesce(node.pid)
        for c in conns:
            if c.sm:
                c.ack()                     # the presence received so far
            if variant == "unacked":
                c.every, c.answer = NEVER, False
            c.write(_self_msgs(c, 10))
        want = [c.h + 10 for c in conns]
        deadline = time.monotonic() + 30
        while any(c.h < w for c, w in zip(conns, want)):
            if time.monotonic() > deadline:
                raise load.XmppError("the 10 messages did not all arrive")
            await asyncio.sleep(0.1)
        if variant == "acked":
            for c in conns:
                c.ack()
        await asyncio.sleep(2.0)
        return (load.proc_rss_kb(node.pid) - base) / count
    finally:
        load.close_all(conns)


async def ping(conn: load.Conn, id_: str) -> None:
    conn.write(f"<iq type='get' id='{id_}' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>"
               .encode())
    await conn.until(f"id='{id_}'".encode(), f'id="{id_}"'.encode())


async def resumptions(home: cluster.Node, there: cluster.Node, n: int,
                      queued: int) -> list[float]:
    """ms from <resume/> (on ``there``) to the last of ``queued`` messages sent
    again, for a session of ``home`` whose client stopped reading."""
    for node in {home, there}:
        await load.learn_salts(load.Env(node.port, node.pid, PASSWORD), ["u0", "u1"])
    sender = await sm_login(home.port, "u1", "snd", False)
    times: list[float] = []
    loop = asyncio.get_running_loop()
    try:
        for i in range(n):
            old = await sm_login(home.port, "u0", f"res{i}", True)
            await asyncio.sleep(0.5)        # presence; the routing entry reaches Redis
            old.ack()
            await ping(sender, f"w{i}")
            assert old.transport is not None
            old.transport.pause_reading()   # cut: no more reading, left open
            now = time.perf_counter_ns()
            for s in range(1, queued + 1):  # one stanza per write
                sender.write(b"<message to='%s' type='chat'><body>1 %d %d</body></message>"
                             % (old.jid.encode(), s, now))
            await ping(sender, f"q{i}")     # all routed into the session
            new = await sm_login(there.port, "u0", None, False)
            pair = load.Pair(0, new, 1, sender.jid)
            done: asyncio.Future[float] = loop.create_future()

            def got(p: load.Pair, found: list[tuple[bytes, bytes, bytes]]) -> None:
                if not done.done() and any(int(s) == queued for _, s, _ in found):
                    done.set_result(time.perf_counter())

            def data(d: bytes, new: SmConn = new) -> None:
                if b"<failed" in d and not done.done():
                    done.set_exception(load.XmppError(f"resume failed: {d[:300]!r}"))
                new.count(d)
            pair.on_msgs = got
            new.sm, new.h, new.acked, new.every, new.then = True, old.h, old.h, NEVER, pair.data
            new.on_data = data
            t0 = time.perf_counter()
            new.write(f"<resume xmlns='{NS}' previd='{old.token}' h='{old.h}'/>".encode())
            try:
                times.append((await asyncio.wait_for(done, 10.0) - t0) * 1000)
                await asyncio.sleep(0.05)
                if (pair.received, pair.misrouted, pair.ooo) != (queued, 0, 0):
                    raise load.XmppError(f"resent: {pair.received} received, {pair.misrouted} "
                                         f"misrouted, {pair.ooo} out of order")
            finally:
                new.close()
                old.transport.abort()
            await asyncio.sleep(0.1)
    finally:
        sender.close()
    return times


# ------------------------------------------------------------------ report -----

def med(vals: list[float], fmt: str) -> str:
    if not vals:
        return "—"
    s = fmt.format(statistics.median(vals))
    return s + (f" ({fmt.format(min(vals))}–{fmt.format(max(vals))})" if len(vals) > 1 else "")


def tables(res: dict[str, Any], args: argparse.Namespace) -> str:
    lines = ["| figure | SM off | SM on | on / off |", "|---|---:|---:|---:|"]

    def row(label: str, kind: str, key: str, fmt: str, ratio: bool = True) -> None:
        off = [r[key] for r in res[kind]["off"]]
        on = [r[key] for r in res[kind]["on"]]
        rs = [b / a for a, b in zip(off, on) if a]
        lines.append(f"| {label} | {med(off, fmt)} | {med(on, fmt)} | "
                     f"{med(rs, '{:.3f}') if ratio and rs else ''} |")
    rate = f"@ {args.rate:,.0f} msg/s"
    row(f"server CPU per delivered message {rate} (µs)", "fixed", "cpu_us", "{:.1f}")
    row(f"server core busy {rate} (%)", "fixed", "busy", "{:.0f}", False)
    row(f"latency p50 {rate} (ms)", "fixed", "p50_ms", "{:.2f}")
    row(f"latency p99 {rate} (ms)", "fixed", "p99_ms", "{:.2f}")
    row("server CPU per delivered message, saturation (µs)", "sat", "cpu_us", "{:.1f}")
    for kind in ("fixed", "sat"):
        for r in res[kind]["off"] + res[kind]["on"]:
            r["msg_s_"] = r["msgs"] / (args.seconds if kind == "fixed" else args.sat_seconds)
    row("saturation: delivered msg/s", "sat", "msg_s_", "{:,.0f}")
    row(f"client `<a/>` sent per 1,000 messages {rate}", "fixed", "per_1k_acks", "{:.0f}", False)
    row(f"server `<r/>` received per 1,000 messages {rate}", "fixed", "per_1k_reqs", "{:.0f}",
        False)
    for kind, label in (("fixed", rate), ("sat", "saturation")):
        cells = ["/".join(f"{sum(r[k] for r in res[kind][m]):.0f}" for k in
                          ("lost", "misrouted", "ooo")) for m in ("off", "on")]
        lines.append(f"| lost/misrouted/out-of-order {label} (all runs) | {cells[0]} | "
                     f"{cells[1]} | |")
    lines.append("| other processes' CPU, highest (%) | " + " | ".join(
        f"{max([r['other'] for k in ('fixed', 'sat') for r in res[k][m]] or [0]):.0f}"
        for m in ("off", "on")) + " | |")
    lines.append("| generator CPU, highest (%) | " + " | ".join(
        f"{max([r['gen_cpu'] for k in ('fixed', 'sat') for r in res[k][m]] or [0]):.0f}"
        for m in ("off", "on")) + " | |")
    mem = res["mem"]
    lines += ["", f"| RSS per idle STARTTLS session, {args.idle:,} sessions (KiB) | value |",
              "|---|---:|",
              f"| no SM | {med(mem['none'], '{:.1f}')} |",
              "| SM enabled, everything acknowledged (empty queue) | "
              f"{med(mem['acked'], '{:.1f}')} |",
              f"| SM enabled, 10 messages unacknowledged | {med(mem['unacked'], '{:.1f}')} |"]
    for a, b, label in (("none", "acked", "SM state (acked − no SM)"),
                        ("acked", "unacked", "10 queued stanzas (unacked − acked)")):
        d = [y - x for x, y in zip(mem[a], mem[b])]
        lines.append(f"| {label}, per run pair | {med(d, '{:+.2f}')} |")
    lines += ["", f"| time to resume, {args.queued} stanzas queued (ms) | median (min–max) | n |",
              "|---|---:|---:|"]
    for name, label in (("solo", "standalone node"), ("same", "cluster, same node"),
                        ("other", "cluster, the other node (handover through Redis)")):
        ts = res["resume"].get(name, [])
        p90 = f"; p90 {load.pct(ts, 0.9):.2f}" if ts else ""
        lines.append(f"| {label} | {med(ts, '{:.2f}')}{p90} | {len(ts)} |")
    return "\n".join(lines)


def report(res: dict[str, Any], args: argparse.Namespace, redis_version: str) -> str:
    errors = "".join(f"\n- {e}" for e in res["errors"])
    return f"""# vinespy XEP-0198 stream management: CPU, memory, resumption

`{' '.join([python_cmd(), 'bench/sm.py', *sys.argv[1:]])}` on
{datetime.date.today().isoformat()}: {machine()}; Python {platform.python_version()},
uvloop {'yes' if load.has_uvloop() else 'no'}; vinespy at {git_rev()}; redis-server
{redis_version}. Nodes (and redis-server) on CPU 0, generator on CPU 1.

{tables(res, args)}
{'' if not errors else chr(10) + 'Errors:' + errors + chr(10)}
## How it was measured

- One standalone node with `sm` loaded serves both SM off and SM on (the
  clients enable it or not), {args.runs} runs each, alternating off/on; medians,
  (min–max); the on/off ratio is the median of the per-run ratios.
- Messaging: {args.pairs} pairs (`u0`..`u{2 * args.pairs - 1}`, STARTTLS,
  SCRAM-SHA-1), chat messages to the partner's bare JID, bodies
  `"<sender> <seq> <perf_counter_ns>"` checked for loss, misrouting and order.
  Fixed rate: `load.open_loop`, {args.rate:,.0f} msg/s in total from a 1 ms timer,
  one stanza per write, {args.warmup:g} s warm-up + {args.seconds:g} s measured.
  Saturation: `load.closed_loop`, 20 in flight per pair (batched writes),
  {args.warmup:g} + {args.sat_seconds:g} s. CPU per message = server utime+stime
  (`/proc/PID/stat`) over the measured interval / messages received in it.
  SM on: `<enable resume='true'/>` after bind; `<a h/>` (its own write) once 10
  stanzas arrived since the last one, and for every `<r/>`; `h` counts every
  `<message`, `<presence` and `<iq` received since `<enabled/>`.
- Memory: a fresh node per variant (variants alternating, {args.mem_runs} runs each);
  RSS before (after the salts pre-pass) and 2 s after the last step;
  {args.idle:,} sessions over `u200`..`u399`, 100 logins in flight; every session
  sends itself 10 chat messages (one write) after everyone's presence, having
  acknowledged what it had (SM); "acknowledged": then `<a h/>`; "unacknowledged":
  no `<a/>`, `<r/>` unanswered (the server's 30 s ack timeout is not reached).
- Resumption: `u0` logs in with SM, acknowledges, stops reading (the connection
  stays open, `pause_reading`); `u1` (same node as the session) sends
  {args.queued} messages to its full JID, one per write, then a ping whose answer
  says they are routed; a new connection (TLS, SCRAM, stream restart) sends
  `<resume previd h/>`: time until the {args.queued}th body arrives, every one
  checked (all {args.queued}, in order). A fresh session each time; cluster: two
  nodes with one redis-server, session on A, resumed on A or B.
"""


async def bench(args: argparse.Namespace, site: Path, redis: RedisServer, res: dict[str, Any],
                started: Callable[[cluster.Node], None]) -> None:
    solo = SmNode("solo", site, targets.free_port(), 0, None, None)
    solo.start()
    started(solo)
    print("== messaging: SM off / on", flush=True)
    await messaging(solo, args, res)
    print("== resumption, standalone", flush=True)
    res["resume"]["solo"] = await resumptions(solo, solo, args.resumes, args.queued)
    solo.stop()
    print("== memory per idle session", flush=True)
    for i in range(args.mem_runs):
        for variant in ("none", "acked", "unacked"):
            node = SmNode("mem", site, targets.free_port(), 0, None, None,
                          dirname=f"mem-{variant}-{i}")
            node.start()
            started(node)
            try:
                kib = await idle_memory(node, variant, args.idle)
            finally:
                node.stop()
            res["mem"][variant].append(kib)
            print(f"   run {i + 1} {variant:8}: {kib:.2f} KiB/session", flush=True)
    print("== resumption, cluster", flush=True)
    a, b = (SmNode(n, site, targets.free_port(), 0, redis.url, f"bench-{n}") for n in "ab")
    for n in (a, b):
        n.start()
        started(n)
    res["resume"]["same"] = await resumptions(a, a, args.resumes, args.queued)
    res["resume"]["other"] = await resumptions(a, b, args.resumes, args.queued)
    for k in ("solo", "same", "other"):
        print(f"   {k}: {med(res['resume'][k], '{:.2f}')} ms", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=100)
    p.add_argument("--rate", type=float, default=2000.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--seconds", type=float, default=10.0, help="measured, fixed rate")
    p.add_argument("--sat-seconds", type=float, default=5.0, help="measured, saturation")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--idle", type=int, default=2000)
    p.add_argument("--mem-runs", type=int, default=3)
    p.add_argument("--resumes", type=int, default=12)
    p.add_argument("--queued", type=int, default=100)
    p.add_argument("--keep", action="store_true", help="keep the site directory (logs)")
    p.add_argument("--out", default=None, help="default bench/results/<today>-sm.md; - = none")
    args = p.parse_args()
    out = Path(args.out) if args.out else (
        HERE / "results" / f"{datetime.date.today().isoformat()}-sm.md")
    cluster.interrupt_on_sigterm()
    load.setup()
    work = Path(tempfile.mkdtemp(prefix="vinespy-sm-"))
    redis = RedisServer("redis-server", 0)
    running: list[Any] = [redis]
    res: dict[str, Any] = {"fixed": {"off": [], "on": []}, "sat": {"off": [], "on": []},
                           "mem": {"none": [], "acked": [], "unacked": []}, "resume": {},
                           "errors": []}
    try:
        crt, key = targets.make_cert(work / "cert")
        t = targets.Vinespy(work, crt, key)
        t.prepare(400, PASSWORD)
        redis.start()
        try:
            asyncio.run(bench(args, t.dir, redis, res, running.append))
        except Exception as exc:                     # noqa: BLE001 - report what ran
            res["errors"].append(f"{type(exc).__name__}: {exc}")
            print(f"error: {exc!r}", file=sys.stderr)
        version = redis.version()
    except KeyboardInterrupt:
        return 130
    finally:
        cluster.stop_all(running, work, args.keep)
    print()
    print(tables(res, args))
    if str(out) != "-":
        out.write_text(report(res, args, version))
        print(f"\nwritten to {out}")
    bad = res["errors"] or any(r["lost"] or r["misrouted"] or r["ooo"] for k in ("fixed", "sat")
                               for m in ("off", "on") for r in res[k][m])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
