"""Storage backends side by side (issue 12): fs, sqlite and postgresql.

Not part of the test suite. For each backend, one throw-away site (the
``bench/c2s.py`` site: self-signed certificate, ``rate_limit = 0``, every
built-in module) whose ``[host.storage]`` is ``fs``, ``sql`` on
``sqlite:///data/vinespy.db`` or ``sql`` on a throw-away PostgreSQL
(``tests/pgproc.py``'s :class:`PostgresProcess`: initdb in a temporary
directory, ``fsync=off``, plus ``pg_stat_statements``); users made with
:func:`vinespy.accounts.create_user` on that storage (10,000 PBKDF2
iterations, as the other benches). ``vinespy start`` runs on CPU 0 (with
postgres), the generator (``bench/load.py``'s clients: STARTTLS,
SCRAM-SHA-1, bind, presence) on CPU 1. Per backend:

  login       N sequential, then M concurrent (P in flight) full logins, each
              closed once its presence was handled (a ping answered): logins/s,
              server CPU per login (disconnect included), postgres CPU and
              SQL statements per login;
  offline     K messages to an offline user, one stanza per write, a ping
              after every block of 100 (stanzas of one stream are handled in
              order: the answer means the block is stored): stored msg/s; then
              that user's initial presence: time until all K are delivered;
  roster      a user with a 1,000-contact roster (written with save_user):
              their login, then G roster gets: result time and CPU per get;
  hot path    two online users, closed loop (W in flight, one stanza per
              write) for S seconds: msg/s, CPU per message, and database
              statements per routed message (postgresql: pg_stat_statements;
              fs and sqlite: storage syscalls of the server counted with
              ``strace -c`` in a second window).

    python3 bench/storage.py                       # ~4 min
    python3 bench/storage.py --backends fs,postgresql --seconds 3
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import load  # noqa: E402
from c2s import DOMAIN, ROOT, PASSWORD, free_port, running_server  # noqa: E402
from redis_transport import OtherLoad, wait_quiet  # noqa: E402
from storage_pg import BenchPostgres  # noqa: E402
from storage_report import derive, report  # noqa: E402

from vinespy import accounts, tls  # noqa: E402
from vinespy.jid import JID  # noqa: E402
from vinespy.storage import Contact, open_storage  # noqa: E402

BACKENDS = ("fs", "sqlite", "postgresql")
ITERATIONS = 10_000
SERVER_CPU, GEN_CPU = 0, load.GEN_CPU
BLOCK = 100                         # offline messages per ping
OFFLINE_USER, ROSTER_USER = "off", "big"
STORAGE_SYSCALLS = ("openat,read,write,pread64,pwrite64,lseek,fcntl,flock,fsync,fdatasync,"
                    "rename,unlink,stat,newfstatat,statx,access")


# ------------------------------------------------------------------ site ----

def storage_toml(backend: str, pg: BenchPostgres | None, db: str) -> str:
    if backend == "fs":
        return 'backend = "fs"\ndir = "data"\n'
    if backend == "sqlite":
        return 'backend = "sql"\nurl = "sqlite:///data/vinespy.db"\n'
    assert pg is not None
    return f'backend = "sql"\nurl = "{pg.url(db)}"\npassword = "{pg.password}"\n'


def storage_options(backend: str, root: Path, pg: BenchPostgres | None,
                    db: str) -> tuple[str, dict[str, Any]]:
    if backend == "fs":
        return "fs", {"dir": root / "data"}
    if backend == "sqlite":
        return "sql", {"url": f"sqlite:///{root / 'data' / 'vinespy.db'}"}
    assert pg is not None
    return "sql", {"url": pg.url(db), "password": pg.password}


async def make_site(root: Path, backend: str, port: int, users: int, contacts: int,
                    offline_max: int, pg: BenchPostgres | None, db: str) -> Path:
    """The c2s.py site on ``backend``; users u0.. and the offline and roster users."""
    (root / "conf" / "certs").mkdir(parents=True)
    tls.make_self_signed(DOMAIN, root / "conf" / "certs")
    config = root / "conf" / "config.toml"
    config.write_text(
        f'log = "warning"\n[[host]]\ndomains = ["{DOMAIN}"]\n'
        f'[host.storage]\n{storage_toml(backend, pg, db)}'
        f'[host.options.offline]\nmax_messages = {offline_max}\n'
        f'[host.options.roster]\nmax_items = {max(contacts, 1)}\n'
        f'[client]\naddress = "127.0.0.1"\nport = {port}\nrate_limit = 0\n'
        f'max_resources_per_account = 100\nauth_timeout = 600\n')
    name, options = storage_options(backend, root, pg, db)
    storage = open_storage(name, options)
    try:
        for local in [*(f"u{i}" for i in range(users)), OFFLINE_USER, ROSTER_USER]:
            await accounts.create_user(storage, JID.parse(f"{local}@{DOMAIN}"), PASSWORD,
                                       ITERATIONS)
        big = await storage.find_user(JID.parse(f"{ROSTER_USER}@{DOMAIN}"))
        assert big is not None
        for i in range(contacts):
            jid = JID.parse(f"contact{i}@{DOMAIN}")
            big.roster[jid] = Contact(jid, f"Contact {i}", "both", groups=["Bench"])
        big.roster_version = 1
        await storage.save_user(big)
    finally:
        await storage.close()
    return config


# --------------------------------------------------------------- measuring ----

class Meter:
    """Server (and postgres) CPU, wall time, generator and other CPU, SQL
    statements, over one interval."""

    def __init__(self, pid: int, pg: BenchPostgres | None, db: str, quiet_wait: float) -> None:
        self.pid, self.pg, self.db, self.quiet_wait = pid, pg, db, quiet_wait

    async def start(self, quiet: bool = False) -> None:
        """With ``quiet``, first wait (up to ``quiet_wait`` s) until other
        processes (tests beside the bench) use less than 10% of a core."""
        if quiet and self.quiet_wait > 0:
            ours = [self.pid, *(self.pg.pids() if self.pg else [])]
            await asyncio.to_thread(wait_quiet, ours, 10.0, 1.0, self.quiet_wait)
        self.other = OtherLoad([self.pid])
        self.gen = load.GenCpu()
        self.s0 = await self.pg.statements(self.db) if self.pg else 0
        self.p0 = self.pg.cpu() if self.pg else 0.0
        self.c0, self.t0 = load.proc_cpu(self.pid), time.perf_counter()

    def lap(self) -> float:
        return time.perf_counter() - self.t0

    async def stop(self, settle: bool = True) -> dict[str, float]:
        """Stop the wall clock now; the CPU counters after the server is idle
        again (work left from the interval: closing sessions)."""
        wall = self.lap()
        gen = self.gen.percent()
        if settle:
            await load.quiesce(self.pid, window=0.3, timeout=10)
        cpu = load.proc_cpu(self.pid) - self.c0
        pg_cpu = self.pg.cpu() - self.p0 if self.pg else 0.0
        # pg_stat_statements is updated when each statement ends: nothing lags.
        stmts = await self.pg.statements(self.db) - self.s0 if self.pg else 0
        return {"wall": wall, "cpu": cpu, "pg_cpu": pg_cpu, "stmts": stmts, "gen": gen,
                "other": self.other.percent()}


async def scram_login(env: load.Env, user: str, res: str) -> load.Conn:
    return await load.login(env.port, env.ctx, user, PASSWORD, res, ping=True)


async def logins(env: load.Env, meter: Meter, n: int, m: int, parallel: int,
                 users: int) -> dict[str, float]:
    await load.quiesce(env.pid)
    await meter.start(quiet=True)
    before = await meter.pg.by_statement(meter.db) if meter.pg else {}
    for i in range(n):
        (await scram_login(env, f"u{i % users}", f"s{i}")).close()
    seq = await meter.stop()
    after = await meter.pg.by_statement(meter.db) if meter.pg else {}
    await meter.start(quiet=True)
    specs = [(f"u{i % users}", f"c{i}") for i in range(m)]
    conns = await load.login_many(env.port, env.ctx, specs, PASSWORD, parallel, ping=True)
    wall = meter.lap()
    load.close_all(conns)
    con = await meter.stop()
    con["wall"] = wall
    per_login = {q: (c - before.get(q, 0)) / n for q, c in after.items()}
    out: dict[str, Any] = {"statements": sorted(
        ((v, q) for q, v in per_login.items() if v >= 0.05), reverse=True)}
    for tag, r, k in (("seq", seq, n), ("con", con, m)):
        out.update({f"{tag}_rate": k / r["wall"], f"{tag}_cpu": r["cpu"] / k * 1e3,
                    f"{tag}_pg": r["pg_cpu"] / k * 1e3, f"{tag}_stmts": r["stmts"] / k,
                    f"{tag}_gen": r["gen"], f"{tag}_other": r["other"]})
    return out


def counting(conn: load.Conn, token: bytes, on_count: Callable[[int], None]) -> None:
    """From now on count ``token`` in what ``conn`` receives (split tokens too)."""
    tail = [b""]

    def data(chunk: bytes) -> None:
        joined = tail[0] + chunk
        n = joined.count(token)
        tail[0] = joined[-(len(token) - 1):]
        if n:
            on_count(n)
    conn.on_data = data


async def offline(env: load.Env, meter: Meter, k: int) -> dict[str, float]:
    sender = await scram_login(env, "u0", "offline-sender")
    to = f"{OFFLINE_USER}@{DOMAIN}"
    await load.quiesce(env.pid)
    await meter.start(quiet=True)
    blocks = []
    for b in range(0, k, BLOCK):
        t0 = time.perf_counter()
        for i in range(b, min(k, b + BLOCK)):
            sender.write(f"<message to='{to}' type='chat' id='o{i}'><body>offline message "
                         f"{i} {'x' * 60}</body></message>".encode())
        sender.write(f"<iq type='get' id='q{b}' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/>"
                     "</iq>".encode())
        tok, out = await sender.until(f"id='q{b}'".encode(), f'id="q{b}"'.encode(),
                                      b"type='error'", b'type="error"', timeout=120)
        if b"error" in tok:
            raise load.XmppError(f"offline message refused: {out[-300:]!r}")
        blocks.append((min(k, b + BLOCK) - b) / (time.perf_counter() - t0))
    stored = await meter.stop()
    sender.close()
    # The offline user's login; the clock runs from its initial presence.
    await load.learn_salts(env, [OFFLINE_USER])
    conn = await load.connect(env.port)
    await conn.starttls(env.port, env.ctx)
    await conn.auth_scram(OFFLINE_USER, PASSWORD)
    await conn.bind("r")
    got = [0]
    done = asyncio.get_running_loop().create_future()

    def count(n: int) -> None:
        got[0] += n
        if got[0] >= k and not done.done():
            done.set_result(None)
    counting(conn, b"</message>", count)
    await load.quiesce(env.pid)
    await meter.start()
    conn.write(b"<presence/>")
    await asyncio.wait_for(done, 60)
    delivered = await meter.stop()
    conn.close()
    return {"store_rate": k / stored["wall"], "store_cpu": stored["cpu"] / k * 1e6,
            "store_pg": stored["pg_cpu"] / k * 1e6, "store_stmts": stored["stmts"] / k,
            "first_rate": blocks[0], "last_rate": blocks[-1],
            "deliver_ms": delivered["wall"] * 1e3, "deliver_cpu": delivered["cpu"] * 1e3,
            "deliver_pg": delivered["pg_cpu"] * 1e3, "deliver_stmts": delivered["stmts"],
            "store_gen": stored["gen"], "store_other": stored["other"]}


async def roster(env: load.Env, meter: Meter, gets: int, contacts: int) -> dict[str, float]:
    await load.learn_salts(env, [ROSTER_USER])
    await load.quiesce(env.pid)
    await meter.start()
    conn = await scram_login(env, ROSTER_USER, "r")
    login = await meter.stop()
    # CPU over all the gets (/proc counts in clock ticks: 10 ms), each get timed.
    await load.quiesce(env.pid, window=0.3)
    times = []
    await meter.start()
    for g in range(gets):
        t0 = time.perf_counter()
        conn.write(f"<iq type='get' id='r{g}'><query xmlns='jabber:iq:roster'/></iq>".encode())
        _, out = await conn.until(b"</query>", b"type='error'", b'type="error"')
        times.append((time.perf_counter() - t0) * 1e3)
        found = out.count(b"<item ")
        if found != contacts:
            raise load.XmppError(f"roster result holds {found} items, not {contacts}")
    r = await meter.stop()
    conn.close()
    return {"login_ms": login["wall"] * 1e3, "login_cpu": login["cpu"] * 1e3,
            "login_pg": login["pg_cpu"] * 1e3, "login_stmts": login["stmts"],
            "get_ms": statistics.median(times), "get_cpu": r["cpu"] / gets * 1e3,
            "get_pg": r["pg_cpu"] / gets * 1e3, "get_stmts": r["stmts"] / gets}


class Strace:
    """``strace -f -y`` on every thread of ``pid``: the syscalls that name a
    file under ``data`` (fd paths shown by ``-y``, or opened by name)."""

    def __init__(self, pid: int, data: Path) -> None:
        self.pid, self.data = pid, str(data)

    async def __aenter__(self) -> Strace:
        self.log = Path(tempfile.mkstemp(prefix="vinespy-strace-")[1])
        self.proc = await asyncio.create_subprocess_exec(
            "strace", "-f", "-y", "-qq", "-e", f"trace={STORAGE_SYSCALLS}", "-o", str(self.log),
            "-p", str(self.pid), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await asyncio.sleep(0.5)            # attached to every thread by then
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGINT)
        await self.proc.wait()
        counts: dict[str, int] = {}
        with open(self.log, errors="replace") as f:
            for line in f:
                if self.data in line or '"data/' in line:
                    call = line.split("(", 1)[0].split()[-1]
                    counts[call] = counts.get(call, 0) + 1
        self.log.unlink()
        self.counts = counts


async def hot_path(env: load.Env, meter: Meter, seconds: float, window: int,
                   data: Path | None) -> dict[str, Any]:
    a = await scram_login(env, "u0", "hot")
    b = await scram_login(env, "u1", "hot")
    got = [0]

    def responder(me: load.Conn, peer_bare: str) -> None:
        stanza = (f"<message to='{peer_bare}' type='chat'><body>{'y' * 60}</body>"
                  "</message>").encode()

        def reply(n: int) -> None:
            got[0] += n
            for _ in range(n):          # one stanza per write
                me.write(stanza)
        counting(me, b"</message>", reply)
    responder(a, f"u1@{DOMAIN}")
    responder(b, f"u0@{DOMAIN}")
    first = f"<message to='u1@{DOMAIN}' type='chat'><body>{'y' * 60}</body></message>"
    for _ in range(window):
        a.write(first.encode())
    await asyncio.sleep(1.0)                # warm-up
    await meter.start(quiet=True)
    n0 = got[0]
    await asyncio.sleep(seconds)
    n = got[0] - n0
    r = await meter.stop(settle=False)
    out: dict[str, Any] = {
        "rate": n / r["wall"], "cpu": r["cpu"] / n * 1e6, "pg": r["pg_cpu"] / n * 1e6,
        "stmts": r["stmts"], "messages": n, "gen": r["gen"], "other": r["other"]}
    if data is not None:                    # fs, sqlite: syscalls on the data files
        n0 = got[0]
        async with Strace(env.pid, data) as st:
            await asyncio.sleep(min(seconds, 2.0))
        out["syscalls"], out["traced_messages"] = st.counts, got[0] - n0
        async with Strace(env.pid, data) as st:     # the control: one login traced
            (await scram_login(env, "u2", "control")).close()
            await asyncio.sleep(0.5)
        out["control"] = sum(st.counts.values())
    a.close()
    b.close()
    return out


# ---------------------------------------------------------------- the run ----

async def run_backend(backend: str, args: argparse.Namespace,
                      pg: BenchPostgres | None) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"vinespy-storage-{backend}-"))
    port = free_port()
    db = pg.createdb() if pg else ""
    t0 = time.perf_counter()
    config = await make_site(tmp, backend, port, args.users, args.contacts,
                             max(args.offline, 100), pg, db)
    print(f"[{backend}] site with {args.users + 2} users and a {args.contacts}-contact roster "
          f"in {time.perf_counter() - t0:.1f} s", flush=True)
    async with running_server(tmp, config, port, SERVER_CPU) as (proc, ctx):
        if pg:
            pg.pin(SERVER_CPU)
            await pg.connect()
        env = load.Env(port, proc.pid, PASSWORD, ctx)
        meter = Meter(proc.pid, pg, db, args.quiet_wait)
        await load.learn_salts(env, [f"u{i}" for i in range(args.users)])
        r: dict[str, Any] = {}
        r.update(await logins(env, meter, args.sequential, args.concurrent, args.parallel,
                              args.users))
        print(f"[{backend}] logins done", flush=True)
        r.update({f"off_{k}": v for k, v in (await offline(env, meter, args.offline)).items()})
        print(f"[{backend}] offline done", flush=True)
        r.update({f"ros_{k}": v for k, v in
                  (await roster(env, meter, args.gets, args.contacts)).items()})
        print(f"[{backend}] roster done", flush=True)
        data = tmp / "data" if backend != "postgresql" and not args.no_strace else None
        r.update({f"hot_{k}": v for k, v in
                  (await hot_path(env, meter, args.seconds, args.window, data)).items()})
        print(f"[{backend}] hot path done", flush=True)
        if pg:
            await pg.disconnect()
    return r


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", default=",".join(BACKENDS))
    p.add_argument("--users", type=int, default=50, help="login users u0.. (50)")
    p.add_argument("--sequential", type=int, default=100, help="sequential logins (100)")
    p.add_argument("--concurrent", type=int, default=300, help="concurrent logins (300)")
    p.add_argument("--parallel", type=int, default=50, help="logins in flight (50)")
    p.add_argument("--offline", type=int, default=500, help="offline messages (500)")
    p.add_argument("--contacts", type=int, default=1000, help="roster size (1000)")
    p.add_argument("--gets", type=int, default=20, help="roster gets (20)")
    p.add_argument("--seconds", type=float, default=5.0, help="hot path window (5)")
    p.add_argument("--window", type=int, default=20, help="hot path messages in flight (20)")
    p.add_argument("--quiet-wait", type=float, default=10.0,
                   help="before the logins, offline and hot path, wait up to this many s "
                   "until other processes use less than 10%% of a core (10; 0 = never)")
    p.add_argument("--no-strace", action="store_true", help="no syscall count (fs, sqlite)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" /
                   f"{datetime.date.today().isoformat()}-storage.md")
    args = p.parse_args()
    backends = [b for b in args.backends.split(",") if b]
    if set(backends) - set(BACKENDS):
        p.error(f"--backends: choose from {', '.join(BACKENDS)}")
    load.setup()
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    t0 = time.perf_counter()
    pg = BenchPostgres() if "postgresql" in backends else None
    results: dict[str, dict[str, Any]] = {}
    try:
        if pg:
            pg.start_with_statements()
        for backend in backends:
            try:
                results[backend] = asyncio.run(run_backend(backend, args, pg))
                derive(backend, results[backend])
            except Exception as exc:        # one backend failing leaves the others
                results[backend] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
                print(f"[{backend}] error: {results[backend]['error']}", flush=True)
    finally:
        version = pg.version() if pg else "no PostgreSQL"
        if pg:
            pg.stop()
    text = report(results, args, version, started, time.perf_counter() - t0,
                  (SERVER_CPU, GEN_CPU))
    print(text)
    args.out.write_text(text)
    print(f"written to {args.out}")
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
