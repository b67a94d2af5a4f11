"""What directed presence costs the server (issue 10 item 8), measured on
real node processes: the Redis bytes one more remembered JID writes, and the
memory an unavailable presence to many remembered JIDs takes.

Before the fix each new JID re-wrote the whole routing entry (every JID so
far) to Redis, so N directed presences wrote O(N²) bytes; and unavailable
made one copy of the presence per JID, all held at once.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.cluster.conftest import Client, Clients, ClusterFactory, Node, RedisServer, eventually
from tests.conftest import DOMAIN

pytestmark = [pytest.mark.integration, pytest.mark.redis]

N = 1000                     # the default presence max_directed
NO_RATE_LIMIT = {"rate_limit": 0}


def direct_to_many(alice: Client, n: int = N) -> None:
    for i in range(n):
        alice.xmpp.send_raw(f"<presence to='nobody-{i}@{DOMAIN}'/>")


async def redis_input_bytes(redis: RedisServer) -> int:
    info = await redis.execute("INFO", "stats")
    return int(info["total_net_input_bytes"])


async def test_directed_presence_writes_redis_bytes_linear_in_jids(
        cluster: ClusterFactory, xmpp: Clients, redis: RedisServer) -> None:
    """N directed presences write O(N) bytes to Redis (each JID once, in the
    session's own set), and the cleanup of a dead node still finds them."""
    c = await cluster(1, client=NO_RATE_LIMIT)
    alice = await xmpp.login(c["node-a"], "alice/r1")
    sid = (await c.routes(f"alice@{DOMAIN}"))["r1"]["sid"]
    before = await redis_input_bytes(redis)
    direct_to_many(alice)
    await alice.ping()

    async def all_stored() -> bool:
        return int(await redis.execute("SCARD", f"cluster:sets:{sid}")) == N
    await eventually(all_stored, what=f"{N} JIDs in cluster:sets:{sid}")
    written = await redis_input_bytes(redis) - before
    # About 90 bytes of SADD per JID, 60 more for the route lookup of each new
    # JID, plus heartbeats and XREADs meanwhile: about 150 KB in all. Before
    # the fix: 14.7 MB.
    assert written < 300 * N, f"{written} bytes written to Redis for {N} directed presences"
    route = (await c.routes(f"alice@{DOMAIN}"))["r1"]
    assert "directed" not in route          # the routing entry stays small


def vm(pid: int, field: str) -> int:
    """A /proc/PID/status figure in KiB (VmRSS, VmHWM...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def reset_peak(node: Node) -> None:
    """Make the node's VmHWM (peak RSS) its current RSS (Linux >= 4.0)."""
    with open(f"/proc/{node.pid}/clear_refs", "w") as f:
        f.write("5")


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
async def test_unavailable_to_many_directed_jids_holds_no_copy_each(
        cluster: ClusterFactory, xmpp: Clients) -> None:
    """alice sent directed presence to N JIDs; her unavailable presence, with
    a 50 KB payload, goes to all N without a copy each: the node's peak RSS
    grows by far less than N copies (50 MB) would take."""
    c = await cluster(1, clustered=False, client=NO_RATE_LIMIT)
    node = c["node-a"]
    alice = await xmpp.login(node, "alice/r1")
    direct_to_many(alice)
    await alice.ping()
    reset_peak(node)
    base = vm(node.pid, "VmRSS")
    alice.xmpp.send_raw("<presence type='unavailable'><pad xmlns='urn:example:pad'>"
                        + "a" * 50_000 + "</pad></presence>")
    await alice.ping()
    grown = vm(node.pid, "VmHWM") - base
    assert grown < 15_000, f"peak RSS grew by {grown} KiB for one unavailable presence"
