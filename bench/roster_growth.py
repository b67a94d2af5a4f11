"""Roster growth: the cost of one roster change as the roster grows, and what
it does to another user meanwhile.

Not part of the test suite. It creates a throw-away server directory (fs
storage, the default), starts ``vinespy start`` in a subprocess with
``[host.options.roster] max_items`` raised to fit, logs in two users over
raw XMPP (STARTTLS + PLAIN + bind + presence), and then:

* ``u0`` adds ITEMS roster items one at a time, each a roster set
  (``--via roster``, RFC 6121 §2.3) or an outbound ``subscribe`` to a
  made-up local JID (``--via subscribe``, §3.1.2; the contacts do not exist,
  so only u0's roster changes), waiting for each to be answered (roster set)
  or pushed (subscribe: u0 requested the roster, so it gets the push);
* ``u1`` meanwhile sends an XEP-0199 ping to the server every 10 ms and
  records each round trip; the same pings are sampled for 2 s before the
  run as a baseline.

It prints the total time, the time per change for each successive block of
changes (a constant figure means a change's cost does not depend on the
roster's size), and the ping round trips (p50 / p99 / max) before and
during the run::

    python3 bench/roster_growth.py --items 4000
    python3 bench/roster_growth.py --items 4000 --via subscribe --cpu 0
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from c2s import DOMAIN, Client, free_port, make_site, running_server  # noqa: E402

ROSTER = "jabber:iq:roster"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def summary(rtts: list[float]) -> str:
    if not rtts:
        return "no samples"
    ms = [r * 1000 for r in rtts]
    return (f"p50 {statistics.median(ms):.2f} ms, p99 {percentile(ms, 99):.2f} ms, "
            f"max {max(ms):.2f} ms ({len(ms)} pings)")


async def pinger(c: Client, stop: asyncio.Event, rtts: list[float]) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        t0 = time.perf_counter()
        c.writer.write(f"<iq type='get' id='p{n}' to='{DOMAIN}'>"
                       f"<ping xmlns='urn:xmpp:ping'/></iq>".encode())
        await c.until(f'id="p{n}"'.encode())
        await c.until(b">")
        rtts.append(time.perf_counter() - t0)
        await asyncio.sleep(0.01)


async def add(c: Client, i: int, via: str) -> None:
    jid = f"contact{i}@{DOMAIN}"
    if via == "roster":
        c.writer.write(f"<iq type='set' id='r{i}'><query xmlns='{ROSTER}'>"
                       f"<item jid='{jid}' name='Contact {i}'><group>Bench</group></item>"
                       f"</query></iq>".encode())
        await c.until(f'id="r{i}"'.encode())
    else:
        c.writer.write(f"<presence to='{jid}' type='subscribe'/>".encode())
        await c.until(f'jid="{jid}"'.encode())
    await c.until(b">")


async def grow(c: Client, items: int, via: str, block: int) -> list[float]:
    """Add ``items`` contacts; the seconds each block of ``block`` took."""
    if via == "subscribe":                  # become an interested resource
        c.writer.write(f"<iq type='get' id='g'><query xmlns='{ROSTER}'/></iq>".encode())
        await c.until(b"</iq>")
    blocks = []
    t0 = time.perf_counter()
    for i in range(items):
        await add(c, i, via)
        if (i + 1) % block == 0:
            t1 = time.perf_counter()
            blocks.append(t1 - t0)
            t0 = t1
    return blocks


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="vinespy-roster-"))
    port = free_port()
    config = await make_site(tmp, 2, port)
    with open(config, "a") as f:
        f.write(f"\n[host.options.roster]\nmax_items = {max(args.items, 1)}\n")
    async with running_server(tmp, config, port, args.cpu) as (proc, ctx):
        adder = await Client.login(port, "u0", ctx)
        other = await Client.login(port, "u1", ctx)
        stop = asyncio.Event()
        before: list[float] = []
        task = asyncio.create_task(pinger(other, stop, before))
        await asyncio.sleep(2)
        stop.set()
        await task
        stop = asyncio.Event()
        during: list[float] = []
        task = asyncio.create_task(pinger(other, stop, during))
        t0 = time.perf_counter()
        blocks = await grow(adder, args.items, args.via, args.block)
        total = time.perf_counter() - t0
        stop.set()
        await task
        load = os.getloadavg()
        print(f"{args.items} items added one at a time via {args.via}: {total:.1f} s "
              f"({total / args.items * 1000:.2f} ms per item); load average "
              f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        print("ms per item, by block of %d: %s" % (
            args.block, " ".join(f"{b / args.block * 1000:.2f}" for b in blocks)))
        print(f"u1's ping before: {summary(before)}")
        print(f"u1's ping during: {summary(during)}")
        user_dir = tmp / "data" / DOMAIN.replace(".", "%2E") / "u0"
        sizes = {p.name: p.stat().st_size for p in sorted(user_dir.iterdir())}
        print(f"u0's files: {sizes}")
        adder.writer.close()
        other.writer.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=4000, help="roster items to add")
    p.add_argument("--via", choices=("roster", "subscribe"), default="roster")
    p.add_argument("--block", type=int, default=500, help="items per reported block")
    p.add_argument("--cpu", type=int, default=None, help="pin the server to this CPU")
    asyncio.run(main(p.parse_args()))
