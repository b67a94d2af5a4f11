"""Message archive (XEP-0313) and PEP (XEP-0163): what they cost vinespy (issue 16).

Not part of the test suite. Three parts:

1. **cpu, archiving on vs off** (goal: at most 25% more server CPU per
   message with MAM): two nodes on one fs site (``bench/targets.py``'s
   vinespy site: self-signed certificate, 10,000 PBKDF2 iterations,
   ``rate_limit = 0``, log at warning, pinned to CPU 0), both with every
   built-in module, one without ``mam``. ``--pairs`` (100) pairs of clients
   (STARTTLS, SCRAM-SHA-1) send chat messages with a body to each other's
   bare JIDs at ``--rate`` (2,000) msg/s in total, one stanza per write
   (``load.open_loop``), node by node, alternating run by run (``--runs``
   each, the order rotated every run). With MAM every message is archived
   twice (sender's and recipient's archive, fs day files) and carries a
   ``<stanza-id/>``. Server CPU per delivered message, p50/p99 latency.
2. **query, a page of 50 from 100,000** (per backend: fs, sqlite,
   postgresql): ``--archive`` (100,000) messages between ``u0`` and nine
   peers, spread evenly over ``--days`` (100) days, written into u0's
   archive with the store's own ``append`` before the server starts (the
   same store class the server then reads). u0 logs in and sends
   ``--queries`` (300) queries one after the other, each waiting for its
   ``<fin/>``, three kinds in turn: the last page (RSM ``<before/>``), the
   page after a random archived id (RSM ``<after/>``), and ``with`` one peer
   between a random day and the week after it. Latency from the write of
   the query to the arrival of its iq result (all 50 ``<result/>`` messages
   come before it): p50/p99 per kind; server CPU per query.
3. **PEP fan-out to 500 contacts** (``--parts pep``): two clustered nodes
   (every built-in module) and a redis-server of their own, all on CPU 0.
   ``u0`` (on node a) has ``--contacts`` (500) contacts, subscription both
   each way, half of them logged in on node a and half on node b; each
   contact's client announces XEP-0115 caps with ``NODE+notify`` (the
   first contact answers the server's disco#info query; every other one
   has the same ``ver``, known from the memory or Redis cache). u0
   publishes ``--publishes`` (50) items to ``NODE`` at ``--pep-rate`` (10)
   per second, one stanza per write: server CPU (both nodes and Redis) per
   publish, Redis commands per publish (``INFO commandstats``, the bench's
   own left out), and the delay from the publish's write until each
   contact has the notification (p50/p99 over all notifications; p99 of
   the last contact per publish).

    .venv/bin/python bench/mam.py                          # ~6 min
    .venv/bin/python bench/mam.py --parts query --backends fs --queries 60

Writes ``bench/results/<today>-mam.md`` (``--out``; ``-`` = none).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import random
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
from c2s import running_server  # noqa: E402
from lxml import etree  # noqa: E402
from redis_transport import RedisServer, git_rev, machine, python_cmd  # noqa: E402
from storage import make_site, storage_options  # noqa: E402
from storage_pg import BenchPostgres  # noqa: E402
from web import cpu_probe, gc_paused, pairs_up, quiet  # noqa: E402

from vinespy import modules, ns  # noqa: E402
from vinespy.jid import JID  # noqa: E402
from vinespy.rules import caps as caps_rules  # noqa: E402
from vinespy.storage import Contact, open_storage  # noqa: E402
from vinespy.storage.archive import ArchivedMessage, new_id, open_archive  # noqa: E402

PASSWORD = cluster.PASSWORD
DOMAIN = load.DOMAIN
BACKENDS = ("fs", "sqlite", "postgresql")
KINDS = ("last", "after", "with")
SERVER_CPU = 0


# ------------------------------------------------------------- part 1: cpu ----

class MamNode(cluster.Node):
    """A ``bench/cluster.py`` node with every built-in module, ``mam`` or not."""

    def __init__(self, name: str, site: Path, mam: bool, cluster_url: str | None = None) -> None:
        super().__init__(name, site, targets.free_port(), SERVER_CPU, cluster_url,
                         f"bench-{name}" if cluster_url else None, dirname=f"node-{name}")
        self.mam = mam

    def write_config(self) -> None:
        super().write_config()
        text = self.config.read_text()
        wanted = [m for m in modules.builtin() if self.mam or m != "mam"]
        head, sep, rest = text.partition("modules = [")
        assert sep, text
        rest = rest.partition("]\n")[2]
        self.config.write_text(head + "modules = [" + ", ".join(f'"{m}"' for m in wanted)
                               + "]\n" + rest)


async def cpu_part(site: Path, args: argparse.Namespace, res: dict[str, Any],
                   started: Callable[[cluster.Node], None]) -> None:
    nodes = {"mam": MamNode("mam", site, True), "no-mam": MamNode("nomam", site, False)}
    for node in nodes.values():
        node.start()
        started(node)
    users = [f"u{i}" for i in range(2 * args.pairs)]
    for node in nodes.values():
        await load.learn_salts(load.Env(node.port, node.pid, PASSWORD), users)
    order = list(nodes)
    try:
        for i in range(args.runs):
            k = i % len(order)
            for kind in order[k:] + order[:k]:
                node = nodes[kind]
                quiet(args, [n.pid for n in nodes.values()])
                ps = await pairs_up(node, "tcp-tls", args.pairs)       # type: ignore[arg-type]
                with gc_paused():
                    r = await load.open_loop(ps, args.rate, args.warmup, args.seconds, 0.001,
                                             5.0, cpu_probe(node.pid, ps))
                res["cpu"][kind].append(r)
                print(f"   run {i + 1} {kind:6}: {r['cpu_us']:6.1f} µs/msg, "
                      f"{r['msg_s']:,.0f} msg/s, p50 {r['p50_ms']:.2f} p99 {r['p99_ms']:.2f} ms; "
                      f"server {r['busy']:.0f}%, gen {r['gen_cpu']:.0f}%, other "
                      f"{r['other']:.0f}%; lost/mis/ooo {r['lost']:.0f}/{r['misrouted']:.0f}/"
                      f"{r['ooo']:.0f}", flush=True)
                await load.quiesce(node.pid)
    finally:
        for node in nodes.values():
            node.stop()


def cpu_table(res: dict[str, Any], args: argparse.Namespace) -> str:
    rows = ["| | µs/msg (median, range) | msg/s | p50 ms | p99 ms | lost |",
            "|---|---:|---:|---:|---:|---:|"]
    med: dict[str, float] = {}
    for kind, rs in res["cpu"].items():
        if not rs:
            continue
        cpu = [r["cpu_us"] for r in rs]
        med[kind] = statistics.median(cpu)
        rows.append(f"| {kind} | {med[kind]:.1f} ({min(cpu):.1f}–{max(cpu):.1f}) | "
                    f"{statistics.median(r['msg_s'] for r in rs):,.0f} | "
                    f"{statistics.median(r['p50_ms'] for r in rs):.2f} | "
                    f"{statistics.median(r['p99_ms'] for r in rs):.2f} | "
                    f"{sum(r['lost'] for r in rs):.0f} |")
    if "mam" in med and "no-mam" in med:
        rows.append(f"\nMAM on / off: **{med['mam'] / med['no-mam']:.2f}×** server CPU per "
                    f"message ({args.runs} runs each of {args.seconds:.0f} s at "
                    f"{args.rate:,.0f} msg/s, {args.pairs} pairs).")
    return "\n".join(rows)


# ----------------------------------------------------------- part 2: query ----

async def fill(backend: str, root: Path, pg: BenchPostgres | None, db: str, count: int,
               days: int) -> list[str]:
    """``count`` messages in u0's archive, alternately to and from u1..u9,
    evenly over the last ``days`` days: their ids in order."""
    kind, options = storage_options(backend, root, pg, db)
    if kind == "fs":
        store = open_archive("fs", dir=Path(options["dir"]) / "archive")
    else:
        store = open_archive("sql", storage=open_storage("sql", options), owned=True)
    await store.open()
    owner = JID.parse(f"u0@{DOMAIN}")
    now = datetime.datetime.now(datetime.timezone.utc)
    first = now - datetime.timedelta(days=days)
    step = (now - first) / count
    ids: list[str] = []

    def one(i: int) -> ArchivedMessage:
        stamp = first + step * i
        peer = JID.parse(f"u{1 + i % 9}@{DOMAIN}")
        frm, to = (owner, peer) if i % 2 else (peer, owner)
        body = f"message {i} of the archive, a sentence of ordinary length"
        xml = (f"<message xmlns='jabber:client' from='{frm}/r' to='{to}' type='chat' "
               f"id='m{i}'><body>{body}</body></message>").encode()
        mid = new_id(stamp)
        ids.append(mid)
        return ArchivedMessage(mid, stamp, str(peer), str(peer), xml)
    try:
        for start in range(0, count, 1000):
            await store.append_many([(owner, one(i))
                                     for i in range(start, min(start + 1000, count))])
        await store.sync()
    finally:
        await store.close()
    return sorted(ids)


def query_xml(n: int, kind: str, ids: list[str], days: int, rng: random.Random) -> bytes:
    now = datetime.datetime.now(datetime.timezone.utc)
    form = rsm = ""
    if kind == "last":
        rsm = "<max>50</max><before/>"
    elif kind == "after":
        rsm = f"<max>50</max><after>{rng.choice(ids[:-60])}</after>"
    else:
        start = now - datetime.timedelta(days=rng.uniform(7, days))
        end = start + datetime.timedelta(days=7)
        fields = {"FORM_TYPE": "urn:xmpp:mam:2", "with": f"u{rng.randint(1, 9)}@{DOMAIN}",
                  "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "end": end.strftime("%Y-%m-%dT%H:%M:%SZ")}
        hidden = {"FORM_TYPE": " type='hidden'"}
        form = ("<x xmlns='jabber:x:data' type='submit'>" + "".join(
            f"<field var='{k}'{hidden.get(k, '')}><value>{v}</value></field>"
            for k, v in fields.items()) + "</x>")
        rsm = "<max>50</max>"
    return (f"<iq type='set' id='q{n}'><query xmlns='urn:xmpp:mam:2' queryid='m{n}'>{form}"
            f"<set xmlns='http://jabber.org/protocol/rsm'>{rsm}</set></query></iq>").encode()


async def queries(port: int, pid: int, ctx: Any, args: argparse.Namespace,
                  ids: list[str]) -> dict[str, Any]:
    env = load.Env(port, pid, PASSWORD, ctx)
    await load.learn_salts(env, ["u0"])
    conn = await load.login(port, ctx, "u0", PASSWORD, "q")
    rng = random.Random(16)
    lat: dict[str, list[float]] = {k: [] for k in KINDS}
    results: dict[str, list[int]] = {k: [] for k in KINDS}
    try:
        await conn.ping()
        for n in range(10):                         # warm-up: caches, lazy imports
            conn.write(query_xml(n, KINDS[n % 3], ids, args.days, rng))
            await conn.until(f"id='q{n}'".encode(), f'id="q{n}"'.encode(), timeout=30)
        await load.quiesce(pid)
        c0 = load.proc_cpu(pid)
        for n in range(10, 10 + args.queries):
            kind = KINDS[n % 3]
            data = query_xml(n, kind, ids, args.days, rng)
            t0 = time.perf_counter()
            conn.write(data)
            _, got = await conn.until(f"id='q{n}'".encode(), f'id="q{n}"'.encode(), timeout=30)
            lat[kind].append((time.perf_counter() - t0) * 1000)
            results[kind].append(got.count(b"<result "))
            if b"type='error'" in got[-400:] or b'type="error"' in got[-400:]:
                raise RuntimeError(f"query {kind} failed: {got[-400:]!r}")
        cpu = load.proc_cpu(pid) - c0
    finally:
        conn.close()
    out: dict[str, Any] = {"cpu_ms": cpu / args.queries * 1000}
    for kind in KINDS:
        out[kind] = {"p50": load.pct(lat[kind], 0.5), "p99": load.pct(lat[kind], 0.99),
                     "results": statistics.mean(results[kind]) if results[kind] else 0}
    return out


async def query_backend(backend: str, args: argparse.Namespace,
                        pg: BenchPostgres | None) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"vinespy-mam-{backend}-"))
    port = targets.free_port()
    db = pg.createdb() if pg else ""
    config = await make_site(tmp, backend, port, 10, 0, 100, pg, db)
    t0 = time.perf_counter()
    ids = await fill(backend, tmp, pg, db, args.archive, args.days)
    print(f"[{backend}] {len(ids):,} archived messages written in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    async with running_server(tmp, config, port, SERVER_CPU) as (proc, ctx):
        if pg:
            pg.pin(SERVER_CPU)
        r = await queries(port, proc.pid, ctx, args, ids)
    print(f"[{backend}] " + "; ".join(
        f"{k}: p50 {r[k]['p50']:.1f} p99 {r[k]['p99']:.1f} ms ({r[k]['results']:.0f} results)"
        for k in KINDS) + f"; server {r['cpu_ms']:.2f} ms CPU per query", flush=True)
    return r


def query_table(res: dict[str, Any], args: argparse.Namespace) -> str:
    rows = ["| backend | " + " | ".join(f"{k} p50 / p99 ms" for k in KINDS)
            + " | server CPU per query |", "|---|" + "---:|" * (len(KINDS) + 1)]
    for backend, r in res["query"].items():
        if "error" in r:
            rows.append(f"| {backend} | error: {r['error']} |")
            continue
        rows.append(f"| {backend} | " + " | ".join(
            f"{r[k]['p50']:.1f} / {r[k]['p99']:.1f} ({r[k]['results']:.0f})" for k in KINDS)
            + f" | {r['cpu_ms']:.2f} ms |")
    return "\n".join(rows)


# ------------------------------------------------------------- part 3: pep ----

PEP_NODE = "urn:xmpp:bench:pep:0"
CAPS_NODE = "https://vinespy.example/bench"
ITEM_RE = re.compile(rb"<item id=[\'\"](\d+)-(\d+)[\'\"]")
IQ_RE = re.compile(rb"<iq [^>]*>")


def caps_query() -> tuple[bytes, str]:
    """The contacts' disco#info answer (serialized) and its XEP-0115 ver."""
    q = etree.Element(f"{{{ns.DISCO_INFO}}}query", nsmap={None: ns.DISCO_INFO})
    etree.SubElement(q, f"{{{ns.DISCO_INFO}}}identity", category="client", type="pc",
                     name="bench")
    for f in (ns.DISCO_INFO, PEP_NODE + "+notify"):
        etree.SubElement(q, f"{{{ns.DISCO_INFO}}}feature", var=f)
    ver = caps_rules.ver_of(q)
    q.set("node", f"{CAPS_NODE}#{ver}")
    return etree.tostring(q), ver


async def make_rosters(site: Path, contacts: int) -> None:
    storage = open_storage("fs", {"dir": site / "data"})
    owner_jid = JID.parse(f"u0@{DOMAIN}")
    try:
        owner = await storage.find_user(owner_jid)
        assert owner is not None
        for i in range(1, contacts + 1):
            jid = JID.parse(f"u{i}@{DOMAIN}")
            owner.roster[jid] = Contact(jid, f"u{i}", "both")
            user = await storage.find_user(jid)
            assert user is not None
            user.roster[owner_jid] = Contact(owner_jid, "u0", "both")
            await storage.save_user(user)
        await storage.save_user(owner)
    finally:
        await storage.close()


class Watcher:
    """A contact's received bytes: notification delays; answers a disco#info query."""

    def __init__(self, conn: load.Conn, answer: bytes, got: dict[int, list[int]]) -> None:
        self.conn, self.answer, self.got, self.tail = conn, answer, got, b""
        conn.on_data = self.data

    def data(self, data: bytes) -> None:
        now = time.perf_counter_ns()
        seen = len(self.tail)           # matches ending in it were taken last time
        buf = self.tail + data
        for m in ITEM_RE.finditer(buf):
            if m.end() > seen:
                self.got.setdefault(int(m.group(1)), []).append(now - int(m.group(2)))
        for m in IQ_RE.finditer(buf):
            head = m.group(0)
            if (m.end() > seen and b"get" in head
                    and b"disco#info" in buf[m.end():m.end() + 200]):
                iq_id = re.search(rb"id=[\'\"]([^\'\"]+)", head)
                frm = re.search(rb"from=[\'\"]([^\'\"]+)", head)
                if iq_id and frm:
                    self.conn.write(b"<iq type='result' id='%s' to='%s'>%s</iq>"
                                    % (iq_id.group(1), frm.group(1), self.answer))
        self.tail = buf[-300:]


async def pep_part(site: Path, args: argparse.Namespace, res: dict[str, Any],
                   started: Callable[[Any], None]) -> None:
    await make_rosters(site, args.contacts)
    redis = RedisServer(cpu=SERVER_CPU)
    redis.start()
    started(redis)
    nodes = [MamNode(n, site, True, redis.url) for n in ("a", "b")]
    for node in nodes:
        node.start()
        started(node)
    import redis.asyncio as aioredis
    stats = aioredis.Redis.from_url(redis.url)
    answer, ver = caps_query()
    presence = (f"<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' "
                f"node='{CAPS_NODE}' ver='{ver}'/></presence>").encode()
    got: dict[int, list[int]] = {}
    conns: list[load.Conn] = []
    try:
        by_node: dict[int, list[str]] = {0: ["u0"], 1: []}
        for i in range(1, args.contacts + 1):
            by_node[i % 2].append(f"u{i}")
        for k, users in by_node.items():
            env = load.Env(nodes[k].port, nodes[k].pid, PASSWORD)
            await load.learn_salts(env, users)
            first = await load.login_many(env.port, env.ctx, [(u, "pep") for u in users[:1]],
                                          PASSWORD, 1, retries=2)
            conns += first
            rest = await load.login_many(env.port, env.ctx, [(u, "pep") for u in users[1:]],
                                         PASSWORD, 50, retries=2)
            conns += rest
        owner = conns[0]
        for c in conns[1:]:
            Watcher(c, answer, got)
            c.write(presence)
        owner.discard()
        await asyncio.sleep(2.0)                 # caps verified, last items (none yet) sent
        await asyncio.gather(*(load.quiesce(n.pid) for n in nodes))

        async def publish(n: int) -> None:
            owner.write(f"<iq type='set' id='p{n}'><pubsub xmlns='http://jabber.org/protocol/"
                        f"pubsub'><publish node='{PEP_NODE}'><item id='{n}-"
                        f"{time.perf_counter_ns()}'><entry xmlns='{PEP_NODE}'>{n}</entry>"
                        f"</item></publish></pubsub></iq>".encode())

        async def all_in(first: int, last: int, timeout: float) -> int:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                missing = sum(args.contacts - len(got.get(n, ())) for n in range(first, last))
                if not missing:
                    return 0
                await asyncio.sleep(0.05)
            return missing

        for n in range(5):                         # warm-up
            await publish(n)
            await asyncio.sleep(1 / args.pep_rate)
        warm_missing = await all_in(0, 5, 30.0)
        if warm_missing:
            raise RuntimeError(f"warm-up: {warm_missing} notifications missing (of "
                               f"{5 * args.contacts})")
        await asyncio.gather(*(load.quiesce(n.pid) for n in nodes))
        quiet(args, [n.pid for n in nodes] + [redis.pid])
        await stats.config_resetstat()
        c0 = cluster.cpu_of(nodes, redis)
        t0 = time.perf_counter()
        first, last = 5, 5 + args.publishes
        for n in range(first, last):
            due = t0 + (n - first) / args.pep_rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            await publish(n)
        missing = await all_in(first, last, 60.0)
        c1 = cluster.cpu_of(nodes, redis)
        cmds = await cluster.commandstats(stats)
        delays = [d / 1e6 for n in range(first, last) for d in got.get(n, ())]
        lasts = [max(got[n]) / 1e6 for n in range(first, last) if got.get(n)]
        cpu = {k: (c1[k] - c0[k]) / args.publishes * 1000 for k in c1}
        calls = sum(c for c, _ in cmds.values())
        res["pep"] = {
            "contacts": args.contacts, "publishes": args.publishes, "missing": missing,
            "cpu_ms": cpu, "cpu_total_ms": sum(cpu.values()),
            "redis_per_publish": calls / args.publishes,
            "top": sorted(((c / args.publishes, name) for name, (c, _) in cmds.items()),
                          reverse=True)[:6],
            "p50": load.pct(delays, 0.5), "p99": load.pct(delays, 0.99),
            "last_p99": load.pct(lasts, 0.99)}
        r = res["pep"]
        each = ", ".join(f"{k} {v:.1f}" for k, v in cpu.items())
        print(f"   {args.publishes} publishes to {args.contacts} contacts: "
              f"{r['cpu_total_ms']:.1f} ms CPU per publish ({each}); "
              f"{r['redis_per_publish']:.1f} Redis commands per publish; delay p50 {r['p50']:.1f} "
              f"p99 {r['p99']:.1f} ms, last contact p99 {r['last_p99']:.1f} ms; missing {missing}",
              flush=True)
    finally:
        load.close_all(conns)
        await stats.aclose()


def pep_table(res: dict[str, Any]) -> str:
    r = res["pep"]
    cpu = ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_ms"].items())
    top = ", ".join(f"{name} {n:.1f}" for n, name in r["top"])
    return "\n".join([
        "| figure | value |", "|---|---:|",
        f"| server CPU per publish (both nodes + Redis) | {r['cpu_total_ms']:.2f} ms ({cpu}) |",
        f"| server CPU per notification | {r['cpu_total_ms'] * 1000 / r['contacts']:.0f} µs |",
        f"| Redis commands per publish | {r['redis_per_publish']:.1f} ({top}) |",
        f"| notification delay p50 / p99 | {r['p50']:.1f} / {r['p99']:.1f} ms |",
        f"| last contact of a publish, p99 | {r['last_p99']:.1f} ms |",
        f"| notifications missing | {r['missing']} of {r['contacts'] * r['publishes']} |"])


# ------------------------------------------------------------------- main ----

def report(res: dict[str, Any], args: argparse.Namespace, started: str) -> str:
    parts = [f"# MAM and PEP costs — {started}\n",
             f"Machine: {machine()}; {python_cmd()}; vinespy {git_rev()}. "
             f"Command: `{' '.join(sys.argv)}`.\n"]
    if res["cpu"]["mam"] or res["cpu"]["no-mam"]:
        parts += ["## 1. CPU per message, MAM archiving on vs off\n", cpu_table(res, args), ""]
    if res["query"]:
        parts += [f"## 2. MAM query latency, pages of 50 from {args.archive:,} messages over "
                  f"{args.days} days\n", query_table(res, args),
                  "\n(number of results per page in brackets)", ""]
    if "pep" in res:
        r = res["pep"]
        parts += [f"## 3. PEP fan-out: {r['publishes']} publishes to {r['contacts']} contacts "
                  "(half on each of two nodes)\n", pep_table(res), ""]
    if res["errors"]:
        parts += ["Errors: " + "; ".join(res["errors"])]
    return "\n".join(parts) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="cpu,query", help="cpu, query, pep (comma-separated)")
    p.add_argument("--pairs", type=int, default=100)
    p.add_argument("--rate", type=float, default=2000.0, help="cpu: msg/s in total")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--seconds", type=float, default=10.0, help="cpu: measured s per run")
    p.add_argument("--runs", type=int, default=4, help="cpu: runs per node")
    p.add_argument("--backends", default=",".join(BACKENDS), help="query: fs, sqlite, postgresql")
    p.add_argument("--archive", type=int, default=100_000, help="query: archived messages")
    p.add_argument("--days", type=int, default=100, help="query: days they span")
    p.add_argument("--queries", type=int, default=300, help="query: measured queries")
    p.add_argument("--contacts", type=int, default=500, help="pep: contacts of u0")
    p.add_argument("--publishes", type=int, default=50, help="pep: measured publishes")
    p.add_argument("--pep-rate", type=float, default=10.0, help="pep: publishes per s")
    p.add_argument("--quiet", type=float, default=10.0)
    p.add_argument("--quiet-wait", type=float, default=60.0)
    p.add_argument("--keep", action="store_true")
    p.add_argument("--out", default=None, help="default bench/results/<today>-mam.md; - = none")
    args = p.parse_args()
    parts = args.parts.split(",")
    backends = args.backends.split(",")
    if not set(parts) <= {"cpu", "query", "pep"} or not set(backends) <= set(BACKENDS):
        p.error("--parts: cpu, query, pep; --backends: " + ", ".join(BACKENDS))
    out = Path(args.out) if args.out else (
        HERE / "results" / f"{datetime.date.today().isoformat()}-mam.md")
    cluster.interrupt_on_sigterm()
    load.setup()
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    work = Path(tempfile.mkdtemp(prefix="vinespy-mam-"))
    running: list[Any] = []
    res: dict[str, Any] = {"cpu": {"mam": [], "no-mam": []}, "query": {}, "errors": []}
    try:
        if "cpu" in parts:
            crt, key = targets.make_cert(work / "cert")
            t = targets.Vinespy(work, crt, key)
            t.prepare(2 * args.pairs, PASSWORD)
            try:
                asyncio.run(cpu_part(t.dir, args, res, running.append))
            except Exception as exc:                     # noqa: BLE001 - report what ran
                res["errors"].append(f"cpu: {type(exc).__name__}: {exc}")
                print(f"error: {exc!r}", file=sys.stderr)
        if "pep" in parts:
            crt, key = targets.make_cert(work / "pep-cert")
            t = targets.Vinespy(work / "pep", crt, key)
            t.prepare(args.contacts + 1, PASSWORD)
            try:
                asyncio.run(pep_part(t.dir, args, res, running.append))
            except Exception as exc:                     # noqa: BLE001 - report what ran
                res["errors"].append(f"pep: {type(exc).__name__}: {exc}")
                print(f"error: {exc!r}", file=sys.stderr)
        if "query" in parts:
            pg = BenchPostgres() if "postgresql" in backends else None
            try:
                if pg:
                    pg.start_with_statements()
                for backend in backends:
                    try:
                        res["query"][backend] = asyncio.run(query_backend(backend, args, pg))
                    except Exception as exc:             # noqa: BLE001 - the others go on
                        res["query"][backend] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
                        print(f"[{backend}] error: {exc!r}", flush=True)
            finally:
                if pg:
                    pg.stop()
    except KeyboardInterrupt:
        return 130
    finally:
        cluster.stop_all(running, work, args.keep)
    text = report(res, args, started)
    print(text)
    if args.out != "-":
        out.write_text(text)
        print(f"written to {out}")
    return 1 if res["errors"] or any("error" in r for r in res["query"].values()) else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
