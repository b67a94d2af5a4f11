"""Single-node load: idle RSS per authenticated session, and routed msg/s.

Not part of the test suite. It creates a throw-away server directory with N
users (fs storage, SCRAM keys at 10,000 iterations), starts ``vinespy start``
in a subprocess (rate limit off, logging at warning), and drives it with raw
asyncio XMPP clients (STARTTLS + SASL PLAIN + bind + presence):

  idle:       RSS of the server per authenticated idle TLS session
  messaging:  PAIRS pairs of clients playing ping-pong with WINDOW messages in
              flight per pair (closed loop): messages delivered per second,
              server CPU-seconds per message, and the generator's own CPU.

    python3 bench/c2s.py --idle 1000 --pairs 100 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import base64
import os
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import AsyncIterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vinespy import accounts, tls  # noqa: E402
from vinespy.jid import JID  # noqa: E402
from vinespy.storage import open_storage  # noqa: E402

DOMAIN = "bench.lit"
PASSWORD = "bench-password"
CLIENT_NS = "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def make_site(root: Path, users: int, port: int) -> Path:
    (root / "conf" / "certs").mkdir(parents=True)
    tls.make_self_signed(DOMAIN, root / "conf" / "certs")
    (root / "conf" / "config.toml").write_text(
        f'log = "warning"\n[[host]]\ndomains = ["{DOMAIN}"]\n'
        f'[host.storage]\nbackend = "fs"\ndir = "data"\n'
        f'[client]\naddress = "127.0.0.1"\nport = {port}\nrate_limit = 0\n'
        f'max_resources_per_account = 5\nauth_timeout = 600\n')
    storage = open_storage("fs", {"dir": root / "data"})
    # One user's keys, copied: 10,000 PBKDF2 iterations per user would take
    # minutes for 10k users and measure nothing about the server.
    first = await accounts.create_user(storage, JID.parse(f"u0@{DOMAIN}"), PASSWORD)
    for i in range(1, users):
        first.jid = JID.parse(f"u{i}@{DOMAIN}")
        await storage.save_user(first)
    await storage.close()
    return root / "conf" / "config.toml"


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.buf = b""
        self.jid = ""

    async def until(self, token: bytes) -> bytes:
        while token not in self.buf:
            data = await self.reader.read(65536)
            if not data:
                raise EOFError(self.buf[-200:])
            self.buf += data
        i = self.buf.index(token) + len(token)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def header(self) -> None:
        self.writer.write(f"<stream:stream {CLIENT_NS} to='{DOMAIN}' version='1.0'>".encode())

    @classmethod
    async def login(cls, port: int, user: str, ctx: ssl.SSLContext) -> Client:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        c = cls(r, w)
        c.header()
        await c.until(b"</stream:features>")
        w.write(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        await c.until(b"<proceed")
        await w.start_tls(ctx, server_hostname=DOMAIN)
        c.buf = b""
        c.header()
        await c.until(b"</stream:features>")
        blob = base64.b64encode(f"\0{user}\0{PASSWORD}".encode()).decode()
        w.write(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{blob}"
                "</auth>".encode())
        await c.until(b"<success")
        c.header()
        await c.until(b"</stream:features>")
        w.write(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                b"<resource>r</resource></bind></iq>")
        c.jid = (await c.until(b"</jid>")).rsplit(b"<jid>", 1)[1][:-6].decode()
        w.write(b"<presence/>")
        return c


async def login_many(port: int, users: range, ctx: ssl.SSLContext,
                     parallel: int = 50) -> list[Client]:
    sem = asyncio.Semaphore(parallel)

    async def one(i: int) -> Client:
        async with sem:
            return await Client.login(port, f"u{i}", ctx)
    return list(await asyncio.gather(*(one(i) for i in users)))


async def pingpong(a: Client, b: Client, window: int, stop: asyncio.Event,
                   counts: list[int]) -> None:
    msg_to_b = (f"<message to='{b.jid}' type='chat'><body>{'x' * 60}</body></message>").encode()
    msg_to_a = (f"<message to='{a.jid}' type='chat'><body>{'x' * 60}</body></message>").encode()

    async def side(me: Client, peer: Client, reply: bytes) -> None:
        tail = b""
        stamp = f'from="{peer.jid}"'.encode()
        while not stop.is_set():
            data = await me.reader.read(65536)
            if not data:
                return
            chunk = tail + data
            n = chunk.count(b"</message>")
            # Every delivered stanza must come from the partner, stamped by
            # the server: anything else is misrouted.
            bad = chunk.count(b"<message ") - chunk.count(stamp)
            if bad > 0:
                counts[1] += bad
            tail = chunk[-9:]          # a split end tag is counted once
            if n:
                counts[0] += n
                me.writer.write(reply * n)
    a.writer.write(msg_to_b * window)
    await asyncio.gather(side(a, b, msg_to_b), side(b, a, msg_to_a))


@contextlib.asynccontextmanager
async def running_server(tmp: Path, config: Path, port: int, cpu: int | None
                         ) -> AsyncIterator[tuple[subprocess.Popen[bytes], ssl.SSLContext]]:
    """``vinespy start`` on ``config`` (pinned to ``cpu`` if given), once its
    client port accepts, with a TLS context that trusts anything (bench
    only); stopped (SIGTERM, then SIGKILL after 10 s) and ``tmp`` removed
    after."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "vinespy", "start", "-c", str(config)]
    if cpu is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(cpu), *cmd]
    proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdin=subprocess.DEVNULL)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            await asyncio.sleep(0.05)
    try:
        yield proc, ctx
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="vinespy-bench-"))
    port = free_port()
    total_users = max(args.idle + 10, 2 * args.pairs)
    config = await make_site(tmp, total_users, port)
    async with running_server(tmp, config, port, args.cpu) as (proc, ctx):
        pid = proc.pid
        print(f"vinespy pid {pid}; python {sys.version.split()[0]}; "
              f"uvloop {'yes' if _has_uvloop() else 'no'}")
        if args.idle:
            warm = await login_many(port, range(0, 10), ctx)
            await asyncio.sleep(1)
            base = proc_rss_kb(pid)
            t0, c0 = time.perf_counter(), proc_cpu(pid)
            clients = await login_many(port, range(10, 10 + args.idle), ctx)
            t1, c1 = time.perf_counter(), proc_cpu(pid)
            await asyncio.sleep(2)
            rss = proc_rss_kb(pid)
            print(f"idle: {args.idle} sessions: server RSS {base} KB -> {rss} KB, "
                  f"{(rss - base) / args.idle:.1f} KB per authenticated TLS session")
            print(f"login: {args.idle / (t1 - t0):.0f} logins/s, "
                  f"{(c1 - c0) / args.idle * 1000:.2f} ms server CPU per login "
                  f"(STARTTLS + PLAIN@10000 + bind + presence)")
            for c in clients + warm:
                c.writer.close()
        if args.pairs:
            clients = await login_many(port, range(0, 2 * args.pairs), ctx)
            stop = asyncio.Event()
            counts = [0, 0]
            tasks = [asyncio.create_task(pingpong(clients[2 * i], clients[2 * i + 1],
                                                  args.window, stop, counts))
                     for i in range(args.pairs)]
            await asyncio.sleep(2)          # warm up
            n0, t0, c0 = counts[0], time.perf_counter(), proc_cpu(pid)
            g0 = resource.getrusage(resource.RUSAGE_SELF)
            await asyncio.sleep(args.seconds)
            n1, t1, c1 = counts[0], time.perf_counter(), proc_cpu(pid)
            g1 = resource.getrusage(resource.RUSAGE_SELF)
            stop.set()
            rate = (n1 - n0) / (t1 - t0)
            gen = (g1.ru_utime + g1.ru_stime - g0.ru_utime - g0.ru_stime) / (t1 - t0)
            print(f"messaging: {args.pairs} pairs, window {args.window}: "
                  f"{rate:,.0f} msg/s delivered; server {(c1 - c0) / (n1 - n0) * 1e6:.1f} "
                  f"us CPU per message ({(c1 - c0) / (t1 - t0) * 100:.0f}% of a core); "
                  f"generator {gen * 100:.0f}% of a core; misrouted {counts[1]}")
            for t in tasks:
                t.cancel()
            for c in clients:
                c.writer.close()


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--idle", type=int, default=1000, help="idle sessions (0 = skip)")
    p.add_argument("--pairs", type=int, default=100, help="chatting pairs (0 = skip)")
    p.add_argument("--window", type=int, default=20, help="messages in flight per pair")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--cpu", type=int, default=None, help="pin the server to this CPU")
    resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
    asyncio.run(main(p.parse_args()))
