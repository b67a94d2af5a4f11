"""Server-to-server throughput and cost: vinespy federating with Prosody 0.12
and with another vinespy, against the same traffic kept inside one vinespy.

Not part of the test suite. Real processes on loopback:

* **vinespy** serving ``wonderland.lit`` (``python -m vinespy start -c
  CONFIG``, log at warning, the chat modules of ``bench/targets.py``, fs
  storage, ``[server] enabled`` with ``routes`` to the peer, ``dialback =
  false``: certificates only);
* **Prosody 0.12** serving ``prosody.test``, configured by
  ``tests/peerproc.py``'s :class:`~tests.peerproc.Prosody` (its test-only
  plugin routes s2s for ``wonderland.lit`` to vinespy's port; ``dialback=False``,
  so ``s2s_secure_auth = true`` and no mod_dialback), with its log lowered from
  debug to warn;
* a second **vinespy** serving ``verona.lit``, configured as the first.

One throw-away CA (trustme) issues every server's certificate and every
server trusts it, so each stream is authenticated with SASL EXTERNAL (no
dialback on either side: nothing else could authenticate it).

Layouts (``--layouts``):

* ``local``: both users of every pair on wonderland.lit (the baseline);
* ``v2v``: senders on wonderland.lit, receivers on verona.lit;
* ``v2p``: senders on wonderland.lit, receivers on prosody.test;
* ``p2v``: senders on prosody.test, receivers on wonderland.lit.

Traffic is one-way (sender -> receiver, to the receiver's bare JID), so
each direction of a stream is measured on its own: the generator, which holds
both ends, makes the sender send when its receiver got something
(:class:`Relay`). Loads, each on fresh connections, ``--pairs`` pairs (20):

* ``fixed`` at ``--rates`` (1,000 and 4,000 msg/s in total), open loop,
  ``bench/load.py``'s ``open_loop`` (1 ms timer, one stanza per write):
  p50/p99 latency (send -> receive, the generator's clock) and CPU per
  message sent in the measured interval;
* ``saturation``: closed loop, ``--window`` (20) messages in flight per
  pair, ``load.closed_loop``: delivered msg/s and CPU per delivered message.

CPU per message is a process's utime + stime (``/proc/PID/stat``, every
thread) over the measured interval divided by the messages; each server's
share of its core over the interval (``busy %``) says which one limited a
saturation run. Every message is checked (lost / misrouted / out of order,
as in ``bench/load.py``). Before the runs one message crosses in each layout
(the s2s stream is up before anything is measured).

Every server the layouts need is started once and runs for the whole
bench; the layouts interleave (run 1 of every layout and load, then run 2...),
so that a busy spell of a shared machine spreads over all of them.

Pinning (2 cores; ``--cpus V,PEER,GEN``, default ``0,1,1``): vinespy
(wonderland.lit) alone on CPU 0; the peers (Prosody and verona.lit, the one
not in use idle) and the generator share CPU 1. vinespy's figures are
therefore clean; the peer's CPU per message is its own CPU time (it does not
count the generator's), but at saturation CPU 1 carries the peer *and* the
generator, so the rate may be CPU 1's limit, not vinespy's (``busy %`` shows
it). In ``local`` CPU 1 holds
the generator only.

``--profile`` adds a py-spy sampling (``py-spy record --format raw``, 200 Hz,
pinned to the generator's CPU) of wonderland.lit's vinespy during one fixed
run of ``local``, ``v2p`` and ``p2v`` at the highest rate: the top functions
by own time, in µs per message (samples / rate / messages).

Run (the lead's venv: it needs trustme, pytest and slixmpp for
tests/peerproc.py), as root or not, with ``nice`` when tests run beside it::

    python3 bench/s2s.py --quick          # ~2.5 min: 1 run, 3 s measured
    python3 bench/s2s.py --profile        # ~9 min: 3 runs, 8 s measured, + profiles

Results: a table on stdout and the same as Markdown in
``bench/results/<today>-s2s.md`` (``--out``). Exit status 0 when every run
finished with 0 lost / misrouted / out-of-order, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime
import math
import os
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
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(HERE), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import trustme  # noqa: E402

import load  # noqa: E402
import targets  # noqa: E402
from redis_transport import OtherLoad, git_rev, machine, wait_quiet  # noqa: E402
from tests import peerproc  # noqa: E402
from vinespy import tls  # noqa: E402

PASSWORD = "bench-password"
V, W, P = "wonderland.lit", "verona.lit", "prosody.test"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
RUN_TIMEOUT = 120.0          # s for one load run, logins and drain included
GEN_LIMIT = 85.0             # % of a core: above it the generator, not the servers, is measured
LAYOUTS = {"local": (V, V), "v2v": (V, W), "v2p": (V, P), "p2v": (P, V)}


# ------------------------------------------------------------------ servers -----

class VinespyProc:
    """One ``vinespy start`` process serving ``domain``, s2s on, pinned to ``cpu``."""

    def __init__(self, site: Path, domain: str, cpu: int, ca: trustme.CA, users: int) -> None:
        self.domain = domain
        self.dir = site / domain
        self.cpu = cpu
        self.ca = ca
        self.users = users
        self.c2s_port, self.s2s_port = targets.free_port(), targets.free_port()
        self.routes: dict[str, int] = {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid                 # taskset execs python: the same pid

    @property
    def log(self) -> Path:
        return self.dir / "stdout.log"

    def prepare(self) -> None:
        from vinespy import modules
        certs = self.dir / "certs"
        certs.mkdir(parents=True, exist_ok=True)
        leaf = self.ca.issue_cert(self.domain)
        crt, key = tls.cert_paths(certs, self.domain)
        crt.write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key))
        key.chmod(0o600)
        cafile = self.dir / "ca.pem"
        self.ca.cert_pem.write_to_path(str(cafile))
        wanted = ", ".join(f'"{m}"' for m in modules.available() if m in targets.CHAT_MODULES)
        routes = ", ".join(f'"{d}" = "127.0.0.1:{p}"' for d, p in self.routes.items())
        (self.dir / "config.toml").write_text(
            'log = "warning"\n'
            f'certs = "{certs}"\n'
            "[[host]]\n"
            f'domains = ["{self.domain}"]\n'
            f"modules = [{wanted}]\n"
            "[host.storage]\n"
            'backend = "fs"\n'
            f'dir = "{self.dir / "data"}"\n'
            "[client]\n"
            'address = "127.0.0.1"\n'
            f"port = {self.c2s_port}\n"
            'tls = "required"\n'
            "rate_limit = 0\n"
            f"max_resources_per_account = {targets.MAX_RESOURCES}\n"
            "auth_timeout = 600\n"
            "[server]\n"
            "enabled = true\n"
            'address = "127.0.0.1"\n'
            f"port = {self.s2s_port}\n"
            f'ca_file = "{cafile}"\n'
            "dialback = false\n"
            f"routes = {{ {routes} }}\n"
            "[http]\nenabled = false\n"
            "[component]\nenabled = false\n")
        asyncio.run(self._accounts())

    async def _accounts(self) -> None:
        from vinespy import accounts
        from vinespy.jid import JID
        from vinespy.storage import open_storage
        storage = open_storage("fs", {"dir": self.dir / "data"})
        try:
            # One real create_user; its keys (and salt) copied to the others.
            first = await accounts.create_user(storage, JID.parse(f"u0@{self.domain}"),
                                               PASSWORD, iterations=4096)
            for i in range(1, self.users):
                first.jid = JID.parse(f"u{i}@{self.domain}")
                await storage.save_user(first)
        finally:
            await storage.close()

    def command(self) -> list[str]:
        return [sys.executable, "-m", "vinespy", "start", "-c", str(self.dir / "config.toml")]

    def start(self) -> None:
        pp = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{pp}" if pp else str(ROOT)}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                ["taskset", "-c", str(self.cpu), *self.command()], cwd=self.dir, env=env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                preexec_fn=targets._raise_nofile, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while not all(targets.port_open(p) for p in (self.c2s_port, self.s2s_port)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"vinespy {self.domain} did not start:\n"
                                   f"{targets._tail(self.log)}")
            time.sleep(0.1)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


class ProsodyProc(peerproc.Prosody):
    """tests/peerproc.py's Prosody (its config, accounts and s2s routes
    plugin), logging at warn instead of debug, pinned to ``cpu``."""

    cpu = 1                 # set before start()

    def _prepare(self) -> None:
        super()._prepare()
        text = self.config.read_text()
        debug = 'levels = { min = "debug" }'
        if debug not in text:
            raise RuntimeError("tests/peerproc.py's Prosody log line changed: update bench/s2s.py")
        self.config.write_text(text.replace(debug, 'levels = { min = "warn" }'))

    def _command(self) -> tuple[list[str], dict[str, str]]:
        argv, env = super()._command()
        return ["taskset", "-c", str(self.cpu), *argv], env

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


Server = Any          # VinespyProc | ProsodyProc: .domain, .pid, .c2s_port, .alive()


# ---------------------------------------------------------------- the load -----

class Relay(load.Pair):
    """A receiver whose "send" makes its sender send: the closed and open
    loops of bench/load.py, which make every client that receives answer,
    then drive one-way traffic (the receiver never writes a message)."""

    __slots__ = ("partner",)

    def send(self, count: int, batched: bool) -> None:
        self.partner.send(count, batched)


def _env(s: Server) -> load.Env:
    return load.Env(port=s.c2s_port, pid=s.pid, password=PASSWORD, domain=s.domain)


async def pairs_up(snd: Server, rcv: Server, pairs: int) -> list[load.Pair]:
    """Pair k: ``u{2k}`` on ``snd`` sends to ``u{2k+1}`` on ``rcv``, bare JID.
    Returned as [sender0, receiver0, sender1, ...] (senders at even places,
    which load.closed_loop starts)."""
    es, er = _env(snd), _env(rcv)
    s_users = [f"u{2 * k}" for k in range(pairs)]
    r_users = [f"u{2 * k + 1}" for k in range(pairs)]
    await load.learn_salts(es, s_users)
    await load.learn_salts(er, r_users)
    sc = await load.login_many(es.port, es.ctx, [(u, "r0") for u in s_users], PASSWORD, 20,
                               retries=2, domain=snd.domain)
    rc = await load.login_many(er.port, er.ctx, [(u, "r0") for u in r_users], PASSWORD, 20,
                               retries=2, domain=rcv.domain)
    by = {c.jid.split("/", 1)[0]: c for c in sc + rc}
    out: list[load.Pair] = []
    for k in range(pairs):
        s_conn, r_conn = by[f"u{2 * k}@{snd.domain}"], by[f"u{2 * k + 1}@{rcv.domain}"]
        sender = load.Pair(2 * k, s_conn, 2 * k + 1, r_conn.jid)
        sender.peer_bare = f"u{2 * k + 1}@{rcv.domain}"
        sender.prefix = f"<message to='{sender.peer_bare}' type='chat'><body>{2 * k} ".encode()
        receiver = Relay(2 * k + 1, r_conn, 2 * k, s_conn.jid)
        receiver.partner = sender
        out += [sender, receiver]
    await asyncio.sleep(1.0)            # presence and the like, before the handlers go on
    for s in {snd, rcv}:
        await load.quiesce(s.pid)
    for p in out:
        p.conn.on_data = p.data
    return out


def cpu_probe(servers: dict[str, Server]) -> load.Probe:
    """CPU per message (µs) and busy share of its core (%) of each server."""
    async def probe() -> load.Finish:
        other = OtherLoad([s.pid for s in servers.values()])
        c0 = {k: load.proc_cpu(s.pid) for k, s in servers.items()}
        t0 = time.perf_counter()

        async def finish(messages: int) -> dict[str, Any]:
            t1 = time.perf_counter()
            out: dict[str, Any] = {"other_cpu": other.percent(), "messages": messages}
            for k, s in servers.items():
                d = load.proc_cpu(s.pid) - c0[k]
                out[f"cpu_{k}"] = d / messages * 1e6 if messages else math.nan
                out[f"busy_{k}"] = 100.0 * d / (t1 - t0)
            return out
        return finish
    return probe


async def run_load(what: str, snd: Server, rcv: Server, servers: dict[str, Server],
                   args: argparse.Namespace, rate: float = 0.0) -> dict[str, Any]:
    ps = await pairs_up(snd, rcv, args.pairs)
    if what == "saturation":
        out = await load.closed_loop(ps, args.window, args.warmup, args.seconds, 5.0,
                                     cpu_probe(servers))
        out.pop("delivered", None)
    else:
        out = await load.open_loop(ps, rate, args.warmup, args.seconds, 0.001, 5.0,
                                   cpu_probe(servers))
        out["msg_s"] = out.pop("rate")
    return out


async def first_message(snd: Server, rcv: Server, timeout: float = 30.0) -> None:
    """One message u0 -> u1 (the s2s stream is set up before anything is
    measured); raises with what each side saw if it does not arrive."""
    a = await load.login(snd.c2s_port, load.client_context(), "u0", PASSWORD, "first",
                         domain=snd.domain)
    try:
        b = await load.login(rcv.c2s_port, load.client_context(), "u1", PASSWORD, "first",
                             domain=rcv.domain)
        try:
            await asyncio.sleep(0.3)
            body = f"first {time.perf_counter_ns()}"
            a.write(f"<message to='u1@{rcv.domain}' type='chat'><body>{body}</body>"
                    "</message>".encode())
            try:
                await b.until(body.encode(), timeout=timeout)
            except load.XmppError:
                raise RuntimeError(f"{snd.domain} -> {rcv.domain}: no message within "
                                   f"{timeout:g} s; receiver got {bytes(b.buf[-300:])!r}, "
                                   f"sender got {bytes(a.buf[-300:])!r}") from None
        finally:
            b.close()
    finally:
        a.close()
    await asyncio.sleep(0.5)


# ----------------------------------------------------------------- profiling -----

def profile_fixed(snd: Server, rcv: Server, servers: dict[str, Server], target: Server,
                  args: argparse.Namespace, rate: float, out_file: Path) -> dict[str, Any]:
    """A fixed run with py-spy sampling ``target`` over the measured interval."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    started: list[subprocess.Popen[bytes]] = []

    async def go() -> dict[str, Any]:
        inner = cpu_probe(servers)

        async def probe() -> load.Finish:
            started.append(subprocess.Popen(
                ["taskset", "-c", str(args.gen_cpu), spy, "record", "-p", str(target.pid),
                 "-r", str(args.profile_rate), "-d", str(int(args.seconds)), "-f", "raw",
                 "-o", str(out_file), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
            return await inner()
        ps = await pairs_up(snd, rcv, args.pairs)
        return await load.open_loop(ps, rate, args.warmup, args.seconds, 0.001, 5.0, probe)
    try:
        res = asyncio.run(asyncio.wait_for(go(), RUN_TIMEOUT))
    finally:
        for proc in started:
            try:
                _, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            if proc.returncode:
                raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-500:]}")
    return res


Row = tuple[str, float, float, float]
# The event loop's own frame as the leaf: uvloop's C code (polling, reading
# sockets, dispatching callbacks), or a thread woken up and waiting for its
# CPU: py-spy counts a runnable thread as active, so on a shared machine this
# also holds waiting time.
LOOP_LEAF = "Runner.run (asyncio/runners.py)"


@dataclass
class Profile:
    cpu_us: float               # vinespy's measured CPU per message in that run
    all_us: float               # every sample, as µs per message
    loop_us: float              # samples whose leaf is LOOP_LEAF
    rows: list[Row]             # function, own µs/msg, inclusive µs/msg, own % of the rest


def top_functions(raw: Path, messages: int, rate: int, cpu_us: float, n: int = 10) -> Profile:
    """The functions with the most own samples in py-spy's raw (collapsed)
    stacks, as µs per message (samples / rate / messages)."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_short(f) for f in stack.split(";")]
        own[frames[-1]] += int(count)
        for f in set(frames):
            incl[f] += int(count)
    per = 1e6 / rate / messages if messages else math.nan
    total, loop = sum(own.values()), own.pop(LOOP_LEAF, 0)
    rest = max(1, total - loop)
    rows = [(f, c * per, incl[f] * per, 100.0 * c / rest) for f, c in own.most_common(n)]
    return Profile(cpu_us, total * per, loop * per, rows)


def _short(frame: str) -> str:
    """``func (path/to/file.py:12)`` -> ``func (file.py)``: one name per function."""
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rstrip(")")
    for marker in ("/site-packages/", "/lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    else:
        file = file.replace(str(ROOT) + "/", "")
    return f"{name} ({file})"


# ---------------------------------------------------------------------- main -----

@dataclass
class Results:
    runs: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    profiles: dict[str, Profile] = field(default_factory=dict)


def loads(args: argparse.Namespace) -> list[tuple[str, float]]:
    return [(f"fixed {r:,.0f}/s", r) for r in args.rates] + [("saturation", 0.0)]


def run_layouts(names: list[str], servers: dict[str, Server], args: argparse.Namespace,
                res: Results) -> None:
    """Every load of every layout in ``names`` on the running ``servers``."""
    ok = []
    for name in names:
        sd, rd = LAYOUTS[name]
        try:
            asyncio.run(asyncio.wait_for(first_message(servers[sd], servers[rd]), RUN_TIMEOUT))
            ok.append(name)
        except Exception as exc:
            traceback.print_exc()
            res.errors.append(f"{name}: the first message did not cross: {exc}"[:600])
    names = ok
    for r in range(args.runs):
        for name in names:
            sd, rd = LAYOUTS[name]
            snd, rcv = servers[sd], servers[rd]
            for label, rate in loads(args):
                dead = [d for d, s in servers.items() if not s.alive()]
                if dead:
                    res.errors.append(f"{name} {label}: {', '.join(dead)} died")
                    return
                if args.quiet_wait:
                    wait_quiet([s.pid for s in servers.values()], limit=args.quiet,
                               timeout=args.quiet_wait)
                print(f"[{name}] run {r + 1}/{args.runs}: {label}", flush=True)
                what = "saturation" if not rate else "fixed"
                try:
                    out = asyncio.run(asyncio.wait_for(
                        run_load(what, snd, rcv, {sd: snd, rd: rcv}, args, rate), RUN_TIMEOUT))
                except Exception as exc:
                    traceback.print_exc()
                    res.errors.append(f"{name} {label} run {r + 1}: {type(exc).__name__}: "
                                      f"{exc}"[:600])
                    continue
                print("   " + ", ".join(f"{k}={v:.4g}" for k, v in out.items()
                                        if isinstance(v, (int, float))), flush=True)
                res.runs.setdefault((name, label), []).append(out)
    if args.profile:
        rate = max(args.rates)
        for name in names:
            if name not in ("local", "v2p", "p2v"):
                continue
            sd, rd = LAYOUTS[name]
            print(f"[{name}] py-spy of {V} at {rate:,.0f} msg/s", flush=True)
            raw = args.workdir / f"pyspy-{name}.txt"
            try:
                out = profile_fixed(servers[sd], servers[rd], {sd: servers[sd], rd: servers[rd]},
                                    servers[V], args, rate, raw)
                res.profiles[name] = top_functions(raw, int(out["messages"]),
                                                   args.profile_rate, out["cpu_" + V],
                                                   args.profile_top)
            except Exception as exc:
                traceback.print_exc()
                res.errors.append(f"{name} profile: {type(exc).__name__}: {exc}"[:600])


def with_servers(args: argparse.Namespace, ca: trustme.CA, res: Results) -> None:
    """Start every server the layouts need, all at once (so that the runs of
    the layouts interleave: a busy spell of the machine spreads over all of
    them), run, stop."""
    users = 2 * args.pairs
    wanted = {d for name in args.layouts for d in LAYOUTS[name]}
    v = VinespyProc(args.workdir, V, args.v_cpu, ca, users)
    servers: dict[str, Server] = {V: v}
    started: list[Any] = []
    try:
        if W in wanted:
            w = VinespyProc(args.workdir, W, args.peer_cpu, ca, users)
            v.routes[W], w.routes[V] = w.s2s_port, v.s2s_port
            w.prepare()
            w.start()
            started.append(w)
            servers[W] = w
        if P in wanted:
            pr = ProsodyProc(args.workdir / P, ca, domain=P,
                             users={f"u{i}": PASSWORD for i in range(users)},
                             routes={V: ("127.0.0.1", v.s2s_port)}, dialback=False)
            pr.cpu = args.peer_cpu
            v.routes[P] = pr.s2s_port
            asyncio.run(pr.start())
            started.append(pr)
            servers[P] = pr
        v.prepare()
        v.start()
        started.append(v)
        run_layouts(args.layouts, servers, args, res)
    except Exception as exc:
        traceback.print_exc()
        res.errors.append(f"{type(exc).__name__}: {exc}"[:600])
    finally:
        for s in started:
            if isinstance(s, VinespyProc):
                s.stop()
            else:
                asyncio.run(s.stop())
        for s in started:
            log = getattr(s, "log", None) or getattr(s, "log_file", None)
            if log is None or not Path(log).exists():
                continue
            # Warnings and errors only (all log at warning); a clean stop is not news.
            lines = [line for line in Path(log).read_text(errors="replace").splitlines()
                     if line.strip() and "Received SIGTERM" not in line]
            if lines:
                res.errors.append(f"{s.domain} logged {len(lines)} line(s), the last: "
                                  + " | ".join(lines[-3:])[:600])


# -------------------------------------------------------------------- report -----

def _med(runs: list[dict[str, Any]], key: str, fmt: str) -> str:
    vals = [r[key] for r in runs if key in r and not math.isnan(r[key])]
    if not vals:
        return "—"
    text = fmt.format(statistics.median(vals))
    if len(vals) > 1:
        text += f" ({fmt.format(min(vals))}–{fmt.format(max(vals))})"
    return text


def peer_of(layout: str) -> str | None:
    sd, rd = LAYOUTS[layout]
    return next((d for d in (sd, rd) if d != V), None)


def table(res: Results, args: argparse.Namespace) -> list[str]:
    lines = ["| layout | load | msg/s | p50 ms | p99 ms | vinespy µs/msg | peer µs/msg "
             "| both µs/msg | vinespy busy % | peer busy % | generator % | other % "
             "| lost/mis/ooo |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in args.layouts:
        peer = peer_of(name)
        for label, _ in loads(args):
            runs = res.runs.get((name, label), [])
            if not runs:
                lines.append(f"| {name} | {label} | error | | | | | | | | | | |")
                continue
            for r in runs:
                r["both"] = r["cpu_" + V] + (r["cpu_" + peer] if peer else 0.0)
            gen = max(r["gen_cpu"] for r in runs)
            lost = [sum(r[k] for r in runs) for k in ("lost", "misrouted", "ooo")]
            cells = [name, label, _med(runs, "msg_s", "{:,.0f}"),
                     _med(runs, "p50_ms", "{:.2f}"), _med(runs, "p99_ms", "{:.1f}"),
                     _med(runs, "cpu_" + V, "{:.0f}"),
                     _med(runs, "cpu_" + peer, "{:.0f}") if peer else "—",
                     _med(runs, "both", "{:.0f}"),
                     _med(runs, "busy_" + V, "{:.0f}"),
                     _med(runs, "busy_" + peer, "{:.0f}") if peer else "—",
                     f"{gen:.0f}" + (" *" if gen > GEN_LIMIT else ""),
                     f"{max(r['other_cpu'] for r in runs):.0f}",
                     "/".join(f"{x:.0f}" for x in lost)]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def report(res: Results, args: argparse.Namespace, started: float, load_avg: tuple[
        tuple[float, float, float], tuple[float, float, float]]) -> str:
    now = datetime.datetime.now(datetime.timezone.utc)
    pv = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "prosody"], capture_output=True,
                        text=True).stdout.strip() or "?"
    md = [f"# vinespy server-to-server: throughput and cost ({now:%Y-%m-%d %H:%M} UTC)", "",
          f"`{' '.join(['python3', 'bench/s2s.py', *sys.argv[1:]])}` at {git_rev()}; "
          f"{machine()}; Python {sys.version.split()[0]}; Prosody {pv}; "
          f"{time.monotonic() - started:.0f} s in all; load average "
          f"{load_avg[0][0]:.1f} before, {load_avg[1][0]:.1f} after.", "",
          f"{args.pairs} pairs, one-way chat to bare JIDs, one stanza per write; "
          f"{args.warmup:g} s warm-up, {args.seconds:g} s measured; median of {args.runs} "
          f"run(s), (min–max). CPU: vinespy ({V}) on CPU {args.v_cpu}, the peer on CPU "
          f"{args.peer_cpu}, the generator on CPU {args.gen_cpu}. *µs/msg*: the process's CPU "
          "time over the measured interval / messages (sent at a fixed rate, delivered at "
          "saturation); *both*: vinespy + peer; *busy*: CPU time / wall time of the "
          "interval; *other*: CPU used by processes other than the servers and the "
          "generator (the machine's other users), max over the runs; `*`: the generator "
          f"above {GEN_LIMIT:.0f}% of its core.", "",
          "Layouts: `local` both users on wonderland.lit (vinespy); `v2v` wonderland.lit -> "
          "verona.lit (a second vinespy); `v2p` wonderland.lit -> prosody.test; `p2v` "
          "prosody.test -> wonderland.lit. All s2s streams use SASL EXTERNAL.", ""]
    md += table(res, args)
    for name, prof in res.profiles.items():
        md += ["", f"py-spy of vinespy ({V}), `{name}`, fixed {max(args.rates):,.0f} msg/s, "
               f"{args.profile_rate} Hz: vinespy's measured CPU {prof.cpu_us:.0f} µs/msg; "
               f"samples {prof.all_us:.0f} µs/msg, of which {prof.loop_us:.0f} with the event "
               "loop's frame as the leaf (uvloop's C code, or runnable and waiting for the "
               "CPU), left out below; the rest, Python frames, by own samples (µs per "
               "message, and % of the Python-frame samples):", "",
               "| function | own µs/msg | inclusive µs/msg | own % |", "|---|---:|---:|---:|"]
        md += [f"| `{f}` | {a:.1f} | {b:.1f} | {c:.0f} |" for f, a, b, c in prof.rows]
    if res.errors:
        md += ["", "Errors and notes:", ""] + [f"- {e}" for e in res.errors]
    text = "\n".join(md) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return text


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="1 run, 1 s warm-up, 3 s measured (development)")
    p.add_argument("--runs", type=int, default=None, help="default 3 (1 with --quick)")
    p.add_argument("--layouts", default="local,v2v,v2p,p2v")
    p.add_argument("--pairs", type=int, default=20)
    p.add_argument("--rates", default="1000,4000", help="fixed rates, msg/s in total")
    p.add_argument("--window", type=int, default=20, help="messages in flight per pair")
    p.add_argument("--seconds", type=float, default=None, help="measured (8; 3 with --quick)")
    p.add_argument("--warmup", type=float, default=None, help="(2; 1 with --quick)")
    p.add_argument("--cpus", default="0,1,1", help="vinespy, peer, generator")
    p.add_argument("--profile", action="store_true", help="py-spy of vinespy at the top rate")
    p.add_argument("--profile-rate", type=int, default=200)
    p.add_argument("--profile-top", type=int, default=10)
    p.add_argument("--quiet", type=float, default=20.0,
                   help="before each run wait until other processes use less than this %% "
                   "of a core (20)")
    p.add_argument("--quiet-wait", type=float, default=0.0,
                   help="... at most this long (0: do not wait; the table shows the others' "
                   "CPU instead)")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args()
    args.runs = args.runs or (1 if args.quick else 3)
    args.seconds = args.seconds or (3.0 if args.quick else 8.0)
    args.warmup = args.warmup or (1.0 if args.quick else 2.0)
    args.rates = [float(r) for r in args.rates.split(",") if r]
    args.layouts = [n for n in args.layouts.split(",") if n]
    bad = [n for n in args.layouts if n not in LAYOUTS]
    if bad:
        p.error(f"unknown layout(s) {bad}; known: {', '.join(LAYOUTS)}")
    args.v_cpu, args.peer_cpu, args.gen_cpu = (int(c) for c in args.cpus.split(","))
    today = datetime.date.today()
    args.out = args.out or HERE / "results" / f"{today:%Y-%m-%d}-s2s.md"
    load.GEN_CPU = args.gen_cpu
    load.setup()
    started = time.monotonic()
    avg0 = os.getloadavg()
    args.workdir = Path(tempfile.mkdtemp(prefix="vinespy-s2s-bench-"))
    ca = trustme.CA()
    res = Results()
    try:
        with_servers(args, ca, res)
    finally:
        if args.keep:
            print(f"work directory kept: {args.workdir}")
        else:
            shutil.rmtree(args.workdir, ignore_errors=True)
    text = report(res, args, started, (avg0, os.getloadavg()))
    print("\n" + text + f"\nwritten to {args.out}")
    bad_runs = any(r["lost"] or r["misrouted"] or r["ooo"]
                   for runs in res.runs.values() for r in runs)
    return 1 if bad_runs or not res.runs else 0


if __name__ == "__main__":
    sys.exit(main())
