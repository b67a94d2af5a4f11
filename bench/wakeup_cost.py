"""What the same small piece of work costs when it runs after the CPU slept.

    python3 bench/wakeup_cost.py [--cpu 0] [--repeat 400]

A server at a fixed 2,000 msg/s wakes up for every message or two; at
saturation it never sleeps. This measures how much that alone changes the
CPU time of identical work, outside any server: each workload runs
``--repeat`` times back to back, then with a sleep of 0.2, 1 and 5 ms before
each run, pinned to one CPU; the thread's CPU time (``thread_time_ns``) of
each run is recorded and the median printed. Workloads: lxml parsing and
serializing a chat message the way the stream parser does, pure-Python
dict/list/str work of a similar size, and SHA-1 (C, small and hot).

It explains why server CPU per message at 2,000 msg/s is several times the
figure at saturation for every server in bench/results (issue 17).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable

from lxml import etree

MESSAGE = b"<message to='u1@bench.lit' type='chat'><body>17 42 123456789</body></message>"
HEADER = (b"<stream:stream xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams'>")


def lxml_work() -> None:
    parser = etree.XMLPullParser(events=("start", "end"))
    parser.feed(HEADER)
    for _ in range(3):
        parser.feed(MESSAGE)
        for kind, el in parser.read_events():
            if kind == "end" and el.tag.endswith("message"):
                etree.tostring(el)


def python_work() -> None:
    routes: dict[str, list[int]] = {}
    for i in range(60):
        key = f"u{i % 7}@bench.lit/r{i % 3}"
        routes.setdefault(key.partition("/")[0], []).append(i)
    sorted(routes.items(), key=lambda kv: len(kv[1]))


def sha_work() -> None:
    import hashlib
    h = hashlib.sha1()
    for _ in range(20):
        h.update(MESSAGE)
    h.hexdigest()


WORKLOADS: dict[str, Callable[[], None]] = {
    "lxml parse + serialize (3 messages)": lxml_work,
    "pure Python (60 dict/str ops)": python_work,
    "SHA-1 (20 updates)": sha_work,
}


def measure(work: Callable[[], None], gap: float, repeat: int) -> float:
    out = []
    for _ in range(repeat):
        if gap:
            time.sleep(gap)
        t0 = time.thread_time_ns()
        work()
        out.append(time.thread_time_ns() - t0)
    return statistics.median(out) / 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu", type=int, default=0)
    p.add_argument("--repeat", type=int, default=400)
    args = p.parse_args()
    os.sched_setaffinity(0, {args.cpu})
    gaps = (0.0, 0.0002, 0.001, 0.005)
    print(f"median CPU µs per run, pinned to CPU {args.cpu}, {args.repeat} runs each")
    print(f"{'workload':40}" + "".join(f"{'no sleep' if not g else f'{g * 1000:g} ms sleep':>14}"
                                       for g in gaps))
    for name, work in WORKLOADS.items():
        for _ in range(50):
            work()                       # warm
        row = [measure(work, g, args.repeat) for g in gaps]
        print(f"{name:40}" + "".join(f"{v:14.1f}" for v in row)
              + f"   x{row[2] / row[0]:.1f} at 1 ms")


if __name__ == "__main__":
    main()
