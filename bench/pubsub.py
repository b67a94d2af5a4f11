"""XEP-0060 fan-out: publish -> the last of 1,000 subscribers' notifications.

Not part of the test suite. One user publishes an item to a pubsub node with
``--subscribers`` (1,000) subscribers, each logged in by a raw client of
``bench/load.py`` (imported, not modified); the figure is the time from
writing the ``<publish/>`` IQ to the moment the last subscriber has received
its ``headline`` notification (one clock, the generator's), the median of
``--publishes`` (5) publications, each to the same subscribers. Layouts:

* **standalone**: one node without ``[cluster]`` (pubsub state in the
  site's ``data/pubsub/``), publisher and every subscriber on it;
* **cluster**: two nodes A and B sharing one ``redis-server`` (pubsub state
  in Redis), the publisher on A, subscribers ``u0, u2, ...`` on A and
  ``u1, u3, ...`` on B: half the notifications cross Redis.

Also per publication: the time until the publisher's IQ result, and in the
cluster the XADD calls (``CONFIG RESETSTAT`` before, ``INFO commandstats``
after: the entries written to the nodes' inbox streams and ``cluster:events``)
and the entries added to B's inbox. The nodes coalesce everything one
publication sends to another node into one stream entry, so the XADD count
should be 1, not one per remote subscriber.

How: the site of ``bench/targets.py`` (``Vinespy.prepare``: certificate for
``bench.lit``, fs storage with users ``u0``..``u{N}``, SCRAM at 10,000
iterations), nodes as in ``bench/cluster.py`` (its ``Node``, with
``pubsub = ["pubsub"]`` added to the ``[[host]]`` table: the service
``pubsub.bench.lit``, and every built-in module unless ``--chat-modules``),
``redis_transport.RedisServer``. ``u{N}`` (the publisher) creates the node
``bench``; every subscriber sends its own ``<subscribe/>`` (bare JID) before
the measurements. Subscribers log in with SCRAM-SHA-1 after the untimed salt
pre-pass, 50 at a time. Before each publication the bench waits until the
nodes are idle (``load.quiesce``). Pinning as in ``bench/cluster.py``
(``--cpus A,B,REDIS,GEN``, default ``0,0,0,1``: the nodes and Redis share
CPU 0, the generator has CPU 1).

Run it (``redis-server`` on PATH, redis-py installed)::

    nice -n 10 python3 bench/pubsub.py                   # ~1 min
    python3 bench/pubsub.py --layouts cluster --publishes 9 --out -

Results: a table on stdout and the same as Markdown in
``bench/results/<today>-pubsub.md`` (``--out``; ``-`` = none). Exit status 0
when every subscriber got every notification exactly once, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(HERE), str(ROOT)):
    if p not in sys.path:
        sys.path.insert(0, p)

import cluster  # noqa: E402
import load  # noqa: E402
import targets  # noqa: E402
from redis_transport import (  # noqa: E402
    OtherLoad, RedisServer, git_rev, machine, python_cmd, wait_quiet)

PASSWORD = cluster.PASSWORD
DOMAIN = load.DOMAIN
SERVICE = f"pubsub.{DOMAIN}"
NODE = "bench"
NS = "http://jabber.org/protocol/pubsub"
WAIT = 60.0                 # s for every notification of one publication


class PubSubNode(cluster.Node):
    """bench/cluster.py's node with a pubsub service (and, unless told
    otherwise, every built-in module instead of the chat set)."""

    all_modules = True

    def write_config(self) -> None:
        super().write_config()
        lines = []
        for line in self.config.read_text().splitlines():
            if line.startswith("modules = "):
                if self.all_modules:
                    continue            # no list: every built-in module
                line = line[:-1] + ', "pubsub"]'
            lines.append(line)
            if line.startswith("domains = "):
                lines.append('pubsub = ["pubsub"]')
        self.config.write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------ XMPP -----

async def iq(conn: load.Conn, iq_id: str, body: str, to: str = SERVICE) -> None:
    """Send an IQ set and wait for its answer; XmppError if it is an error."""
    conn.write(f"<iq type='set' id='{iq_id}' to='{to}'>{body}</iq>".encode())
    _, head = await conn.until(f"id='{iq_id}'".encode(), f'id="{iq_id}"'.encode())
    _, rest = await conn.until(b">")
    tag = head[head.rfind(b"<iq"):] + rest
    if b"'error'" in tag or b'"error"' in tag:
        _, more = await conn.until(b"</iq>")
        raise load.XmppError(f"{iq_id}: {(tag + more)[:400]!r}")


def item_payload(seq: int) -> str:
    return (f"<entry xmlns='urn:example:bench'><title>bench item {seq}</title>"
            f"<summary>{'x' * 160}</summary></entry>")


class Watch:
    """Counts, on every subscriber's connection, the notifications of one item."""

    def __init__(self, conns: list[load.Conn], token: bytes) -> None:
        self.token = token
        self.first: dict[int, float] = {}
        self.counts = [0] * len(conns)
        self.done = asyncio.Event()
        self.total = len(conns)
        keep = len(token) - 1
        for i, c in enumerate(conns):
            c.on_data = self._counter(i, keep)

    def _counter(self, i: int, keep: int) -> Any:
        tail = b""

        def on_data(data: bytes) -> None:
            nonlocal tail
            buf = tail + data
            n = buf.count(self.token)
            if n:
                if i not in self.first:
                    self.first[i] = time.perf_counter()
                    if len(self.first) == self.total:
                        self.done.set()
                self.counts[i] += n
            tail = buf[-keep:]
        return on_data


# -------------------------------------------------------------- layouts -----

@dataclass
class Publication:
    last_ms: float          # publish -> the last subscriber's notification
    acked_ms: float         # publish -> its IQ result
    notified: int           # subscribers that got it
    extra: int              # notifications beyond one per subscriber
    xadd: int | None        # XADD calls (cluster)
    inbox_b: int | None     # entries added to B's inbox (cluster)
    other_cpu: float        # other processes' CPU meanwhile, % of one core


@dataclass
class LayoutResult:
    name: str
    subscribers: int
    pubs: list[Publication] = field(default_factory=list)
    login_s: float = 0.0
    discarded: int = 0
    subscribe_s: float = 0.0
    error: str | None = None


async def run_layout(name: str, pub_node: PubSubNode, sub_nodes: list[PubSubNode],
                     args: argparse.Namespace, stats: Any | None,
                     redis_pid: int | None = None) -> LayoutResult:
    res = LayoutResult(name, args.subscribers)
    users = [f"u{i}" for i in range(args.subscribers)]
    conns: list[load.Conn] = []
    publisher: load.Conn | None = None
    try:
        env_p = load.Env(pub_node.port, pub_node.pid, PASSWORD)
        publisher = await load.login(pub_node.port, env_p.ctx, f"u{args.subscribers}",
                                     PASSWORD, "pub", mech="PLAIN")
        await iq(publisher, "create", f"<pubsub xmlns='{NS}'><create node='{NODE}'/></pubsub>")

        t0 = time.perf_counter()
        for k, node in enumerate(sub_nodes):
            mine = users[k::len(sub_nodes)]
            env = load.Env(node.port, node.pid, PASSWORD)
            await load.learn_salts(env, mine)
            conns += await load.login_many(node.port, env.ctx, [(u, "r0") for u in mine],
                                           PASSWORD, 50, retries=2)
        res.login_s = time.perf_counter() - t0
        # on A first, then B: the order of ``users[k::2]`` per node
        t0 = time.perf_counter()
        sem = asyncio.Semaphore(50)

        async def subscribe(c: load.Conn) -> None:
            async with sem:
                c.on_data = None
                del c.buf[:]
                bare = c.jid.split("/", 1)[0]
                await iq(c, "sub", f"<pubsub xmlns='{NS}'><subscribe node='{NODE}' "
                         f"jid='{bare}'/></pubsub>")
                c.discard()
        await asyncio.gather(*(subscribe(c) for c in conns))
        res.subscribe_s = time.perf_counter() - t0
        print(f"   {len(conns)} subscribers logged in ({res.login_s:.1f} s) and subscribed "
              f"({res.subscribe_s:.1f} s)", flush=True)
        await asyncio.sleep(1.0)                   # presence and routing writes settle

        pids = [n.pid for n in {pub_node, *sub_nodes}] + ([redis_pid] if redis_pid else [])
        seq = 0
        for n_pub in range(args.publishes):
            for attempt in range(args.busy_retries + 1):
                seq += 1
                await asyncio.gather(*(load.quiesce(n.pid) for n in {pub_node, *sub_nodes}))
                if args.quiet_wait > 0:
                    await asyncio.to_thread(wait_quiet, pids, args.quiet, 0.5,
                                            args.quiet_wait)
                item = f"it-{os.getpid()}-{seq}-{time.perf_counter_ns()}"
                watch = Watch(conns, item.encode())
                if stats is not None:
                    b0 = await stats.xlen(f"cluster:inbox:{sub_nodes[-1].node_id}")
                    await stats.config_resetstat()
                other = OtherLoad(pids)
                await asyncio.sleep(0.2)
                start = time.perf_counter()
                publisher.write(f"<iq type='set' id='p{seq}' to='{SERVICE}'>"
                                f"<pubsub xmlns='{NS}'><publish node='{NODE}'>"
                                f"<item id='{item}'>{item_payload(seq)}</item></publish>"
                                "</pubsub></iq>".encode())
                await publisher.until(f"id='p{seq}'".encode(), f'id="p{seq}"'.encode())
                acked = time.perf_counter()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(watch.done.wait(), WAIT)
                xadd = inbox_b = None
                if stats is not None:
                    info = await stats.info("commandstats")
                    xadd = int(info.get("cmdstat_xadd", {}).get("calls", 0))
                    inbox_b = (await stats.xlen(f"cluster:inbox:{sub_nodes[-1].node_id}")
                               - b0)
                await asyncio.sleep(0.3)               # duplicates, if any
                other_cpu = other.percent()
                last = max(watch.first.values()) if watch.first else float("nan")
                pub = Publication((last - start) * 1000, (acked - start) * 1000,
                                  len(watch.first), sum(c - 1 for c in watch.counts if c > 1),
                                  xadd, inbox_b, other_cpu)
                print(f"   publication {n_pub + 1}: last notification after {pub.last_ms:.1f} ms "
                      f"(IQ result {pub.acked_ms:.1f} ms); {pub.notified}/{len(conns)} notified"
                      + (f"; XADD {xadd}, entries in B's inbox {inbox_b}" if stats else "")
                      + f"; other processes {other_cpu:.0f}%",
                      flush=True)
                for c in conns:
                    c.discard()
                if pub.notified != len(conns) or pub.extra:
                    res.error = (f"publication {seq}: {pub.notified}/{len(conns)} notified, "
                                 f"{pub.extra} duplicates")
                if pub.other_cpu <= args.busy or attempt == args.busy_retries:
                    res.pubs.append(pub)
                    break
                res.discarded += 1
                print(f"   other processes used {pub.other_cpu:.0f}% of a core: "
                      "publication discarded, again", flush=True)
    except Exception as exc:                       # noqa: BLE001 - report, go on
        res.error = str(exc).splitlines()[0][:300] if str(exc) else repr(exc)
        print(f"{name}: error: {res.error}", file=sys.stderr, flush=True)
    finally:
        load.close_all(conns)
        if publisher is not None:
            publisher.close()
        await asyncio.sleep(0.5)
    return res


async def bench(args: argparse.Namespace, site: Path, redis: RedisServer | None,
                results: list[LayoutResult], started: list[cluster.Node]) -> None:
    import redis.asyncio as aioredis
    cpu_a, cpu_b, _, _ = args.cpu_list
    PubSubNode.all_modules = not args.chat_modules
    if "standalone" in args.layouts:
        solo = PubSubNode("solo", site, targets.free_port(), cpu_a, None, None)
        started.append(solo)
        print("standalone: starting one node ...", flush=True)
        try:
            solo.start()
            results.append(await run_layout("standalone", solo, [solo], args, None))
        except Exception as exc:                   # noqa: BLE001 - report
            results.append(LayoutResult("standalone", args.subscribers, error=str(exc)[:300]))
        finally:
            solo.stop()
    if "cluster" in args.layouts:
        assert redis is not None
        a = PubSubNode("a", site, targets.free_port(), cpu_a, redis.url, "bench-a")
        b = PubSubNode("b", site, targets.free_port(), cpu_b, redis.url, "bench-b")
        started += [a, b]
        stats = aioredis.Redis(host="127.0.0.1", port=redis.port, socket_timeout=10)
        print(f"cluster: starting nodes A and B on {redis.url} ...", flush=True)
        try:
            a.start()
            b.start()
            results.append(await run_layout("cluster", a, [a, b], args, stats, redis.pid))
        except Exception as exc:                   # noqa: BLE001 - report
            results.append(LayoutResult("cluster", args.subscribers, error=str(exc)[:300]))
        finally:
            await stats.aclose()
            a.stop()
            b.stop()


# -------------------------------------------------------------- report -----

def _ms(values: list[float]) -> str:
    if not values:
        return "—"
    med = statistics.median(values)
    return f"{med:.1f} ms ({min(values):.1f}–{max(values):.1f})"


def table(results: list[LayoutResult]) -> str:
    names = [r.name for r in results]
    rows = [("publish → last notification, median (min–max)",
             [_ms([p.last_ms for p in r.pubs]) for r in results]),
            ("publish → IQ result, median (min–max)",
             [_ms([p.acked_ms for p in r.pubs]) for r in results]),
            ("each publication, → last notification",
             [", ".join(f"{p.last_ms:.0f}" for p in r.pubs) + " ms" if r.pubs else "—"
              for r in results]),
            ("notified / subscribers (every publication)",
             [" ".join(f"{p.notified}" for p in r.pubs) + f" / {r.subscribers}"
              for r in results]),
            ("duplicate notifications", [str(sum(p.extra for p in r.pubs)) for r in results]),
            ("XADD calls per publication",
             [" ".join(str(p.xadd) for p in r.pubs) if r.pubs and r.pubs[0].xadd is not None
              else "—" for r in results]),
            ("entries added to B's inbox per publication",
             [" ".join(str(p.inbox_b) for p in r.pubs)
              if r.pubs and r.pubs[0].inbox_b is not None else "—" for r in results]),
            ("other processes' CPU during each publication",
             [" ".join(f"{p.other_cpu:.0f}%" for p in r.pubs) or "—" for r in results]),
            ("subscribers' logins / subscribe IQs",
             [f"{r.login_s:.1f} s / {r.subscribe_s:.1f} s" for r in results])]
    out = ["| figure | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    out += [f"| {label} | " + " | ".join(vals) + " |" for label, vals in rows]
    return "\n".join(out)


def report(results: list[LayoutResult], args: argparse.Namespace, redis_version: str) -> str:
    import redis
    cpu_a, cpu_b, cpu_r, cpu_g = args.cpu_list
    errors = [f"- **{r.name}**: {r.error}" for r in results if r.error]
    modules = ("iq, presence, roster, disco, ping, pubsub (`--chat-modules`)"
               if args.chat_modules else "every built-in module (no `modules` list)")
    return f"""# vinespy pubsub: publish → last of {args.subscribers:,} subscribers' notifications

`{' '.join([python_cmd(), 'bench/pubsub.py', *sys.argv[1:]])}` on
{datetime.date.today().isoformat()}: {machine()}; Python {platform.python_version()},
uvloop {'yes' if load.has_uvloop() else 'no'}, redis-py {redis.__version__}; vinespy at
{git_rev()}; redis-server {redis_version} (`--save '' --appendonly no`, loopback TCP).
Node A (or the standalone node) on CPU {cpu_a}, node B on CPU {cpu_b}, redis-server on
CPU {cpu_r}, generator on CPU {cpu_g}. {args.subscribers:,} subscribers (bare JIDs, one
session each), {args.publishes} publications of a ~250-byte payload; modules: {modules}.

{table(results)}
{chr(10).join(['', 'Errors:', '', *errors]) if errors else ''}
## How it was measured

- **standalone**: one node without `[cluster]`; publisher and subscribers on it;
  the service's state in `data/pubsub/` (fs). **cluster**: nodes A and B, one
  Redis; the publisher on A, subscribers `u0, u2, …` on A and `u1, u3, …` on
  B; the service's state in Redis.
- The publisher (`u{args.subscribers}`) creates node `{NODE}` on
  `{SERVICE}`; each subscriber logs in (`bench/load.py`: STARTTLS, SCRAM-SHA-1,
  bind, `<presence/>`) and subscribes its bare JID with its own IQ.
- Per publication: the generator notes the time, writes the `<publish/>` IQ
  (one item, new id), and each subscriber's connection notes when the item id
  first arrives; the figure is the latest of those minus the start (one
  clock, `time.perf_counter`). Then 0.3 s more to catch duplicates. Before each
  publication the bench waits until the nodes use < 5% of a core and (for at
  most {args.quiet_wait:g} s) until other processes use < {args.quiet:g}% of one.
- *other processes' CPU*: what every process but the bench's own (nodes,
  redis-server, generator) used from 0.2 s before the publication to 0.3 s
  after its last notification (`/proc/stat`), in % of one core; tests running
  beside the bench show up here. A publication during which they used more
  than {args.busy:g}% is discarded and repeated (up to {args.busy_retries} times;
  {sum(r.discarded for r in results)} discarded this time; a discarded
  publication's delivery is still checked).
- XADD calls: `CONFIG RESETSTAT` just before the publication, `INFO
  commandstats` once every subscriber has its notification (XADDs inside the
  nodes' scripts count); B's inbox entries: `XLEN cluster:inbox:bench-b` after
  minus before.
- Storage: standalone, `FsPubSub` rewrites the node's whole JSON file
  (config, subscriptions, items) and fsyncs it on every publication; in the
  cluster, `RedisPubSub` writes the one item with a script (Redis here keeps
  nothing on disk: `--save '' --appendonly no`).
- The first publication also pays for what the publishing node reads once per
  recipient and then caches (the blocking module's lists, the cluster's route
  cache); the median is over all {args.publishes}.
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--subscribers", type=int, default=1000)
    p.add_argument("--publishes", type=int, default=5)
    p.add_argument("--layouts", default="standalone,cluster",
                   help="any of standalone, cluster (comma-separated)")
    p.add_argument("--cpus", default="0,0,0,1", help="CPUs of node A, node B, redis, generator")
    p.add_argument("--chat-modules", action="store_true",
                   help="only bench/targets.py's chat modules + pubsub (default: all modules)")
    p.add_argument("--redis-server", default="redis-server")
    p.add_argument("--quiet", type=float, default=10.0,
                   help="before each publication, wait until other processes use less than "
                   "this %% of a core (10) ...")
    p.add_argument("--quiet-wait", type=float, default=20.0,
                   help="... for at most this many seconds (20; 0 = do not wait)")
    p.add_argument("--busy", type=float, default=25.0,
                   help="discard and repeat a publication during which other processes used "
                   "more than this %% of a core (25) ...")
    p.add_argument("--busy-retries", type=int, default=3, help="... at most this often (3)")
    p.add_argument("--keep", action="store_true", help="keep the site directory (logs)")
    p.add_argument("--out", default=None,
                   help="markdown file (default bench/results/<today>-pubsub.md), - = none")
    args = p.parse_args()
    args.layouts = args.layouts.split(",")
    for name in args.layouts:
        if name not in ("standalone", "cluster"):
            p.error(f"unknown layout {name!r}")
    out = cluster.common_args(p, args, "pubsub")

    load.setup()
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {args.cpu_list[3]})
    work = Path(tempfile.mkdtemp(prefix="vinespy-pubsub-"))
    redis = RedisServer(args.redis_server, args.cpu_list[2]) if "cluster" in args.layouts \
        else None
    results: list[LayoutResult] = []
    started: list[cluster.Node] = []
    version = "—"
    try:
        crt, key = targets.make_cert(work / "cert")
        t = targets.Vinespy(work, crt, key)
        print(f"site {t.dir}: {args.subscribers + 1} users ...", flush=True)
        t.prepare(args.subscribers + 1, PASSWORD)
        if redis is not None:
            redis.start()
            version = redis.version()
            print(f"redis-server {version} pid {redis.pid} on port {redis.port}", flush=True)
        asyncio.run(bench(args, t.dir, redis, results, started))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        cluster.stop_all([*started, *([redis] if redis is not None else [])], work, args.keep)
    print()
    print(table(results))
    for r in results:
        if r.error:
            print(f"\n{r.name}: {r.error}")
    if str(out) != "-":
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report(results, args, version))
        print(f"\nwritten to {out}")
    bad = any(r.error for r in results) or any(
        p.notified != r.subscribers or p.extra for r in results for p in r.pubs)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
