"""XEP-0313 across two cluster nodes sharing their storage (a data
directory, then PostgreSQL): alice on node 0 and bob on node 1 converse;
each then asks the other node for the history and finds all of it, under
the ids the delivered messages carried. Retention (``retention_days``) runs
as a cluster duty: on one node at a time, exactly once, handed over when
its holder stops."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import AsyncIterator

import pytest

from tests.cluster.conftest import Client as ClusterClient
from tests.cluster.conftest import Cluster, Clients, ClusterFactory, RedisServer, Site
from tests.conftest import DOMAIN, TIMEOUT, free_port
from tests.integration.test_mam import (OLD, RECENT, Client, body_of, everything, ids, plant,
                                        ran_since, result_id, stored, until)
from vinespy import config as vconfig
from vinespy.cluster import keys
from vinespy.cluster.duty import ClusterDuty
from vinespy.server import Server
from vinespy.storage.archive import archive_for

pytestmark = [pytest.mark.integration, pytest.mark.redis]

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"


async def history(c: Client, with_jid: str) -> list[tuple[str, str]]:
    """(id, body) of every archived message with ``with_jid``, page by page."""
    out: list[tuple[str, str]] = []
    after: str | None = None
    while True:
        got, fin = await c.query({"with": with_jid}, max=7, after=after, queryid=f"h{len(out)}")
        out += [(result_id(m), body_of(m)) for m in got]
        if fin.get("complete") == "true":
            return out
        after = result_id(got[-1])


async def test_each_side_reads_the_whole_conversation_on_the_other_node(
        cluster: ClusterFactory, xmpp: Clients) -> None:
    c = await cluster(2)
    alice = Client((await xmpp.login(c[0], "alice/phone")).xmpp)
    bob = Client((await xmpp.login(c[1], "bob/desk")).xmpp)
    seen: dict[str, list[str]] = {ALICE: [], BOB: []}
    lines = [f"line {i}" for i in range(20)]
    for i, text in enumerate(lines):             # in turn: one order on both sides
        sender, to, receiver = (alice, BOB, bob) if i % 2 else (bob, ALICE, alice)
        sender.say(to, text)
        m = await receiver.got(text)
        (sid,) = ids(m, to)
        assert not ids(m, BOB if to == ALICE else ALICE)    # never the sender's id
        seen[to].append(sid)
    # Each user, logged in anew on the other node, reads the whole history.
    alice2 = Client((await xmpp.login(c[1], "alice/tablet")).xmpp)
    bob2 = Client((await xmpp.login(c[0], "bob/laptop")).xmpp)
    mine = await history(alice2, BOB)
    assert [text for _, text in mine] == lines
    # What alice received carries the id her archive has it under.
    assert [sid for sid, text in mine if lines.index(text) % 2 == 0] == seen[ALICE]
    theirs = await history(bob2, ALICE)
    assert [text for _, text in theirs] == lines
    assert [sid for sid, text in theirs if lines.index(text) % 2] == seen[BOB]


# --------------------------------------------------------------------------
# retention


EXPIRE = f"mam-expire:{DOMAIN}"
DEAD_AFTER = 3.0        # s: the lease's ttl; a loaded machine's pauses stay well within it


class InProcessNode:
    """A node of ``cluster`` served in the test's loop (its Server at hand:
    its duties), configured as the fixture's subprocess nodes are; what
    Clients.login needs of a node."""

    def __init__(self, cluster: Cluster, name: str, index: int) -> None:
        self.cluster = cluster
        self.name = name
        self.address, self.port = cluster.site.address(index), free_port()
        d = cluster.root / name
        d.mkdir(parents=True)
        self.config = d / "config.toml"
        self.config.write_text(cluster.config_text(name, self.address, self.port))
        self.server = Server(vconfig.load(self.config))
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<InProcessNode {self.name}>"

    @property
    def duty(self) -> ClusterDuty:
        duty = self.server.duties[EXPIRE]
        assert isinstance(duty, ClusterDuty)
        return duty

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        ready = asyncio.Event()
        self._task = asyncio.create_task(self.server.serve(self._stop.wait, ready.set))
        waiter = asyncio.ensure_future(ready.wait())
        await asyncio.wait({self._task, waiter}, timeout=TIMEOUT,
                           return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        assert ready.is_set(), f"{self.name} did not start"

    async def stop(self) -> None:
        if self._task is not None:
            self._stop.set()
            await asyncio.wait_for(self._task, TIMEOUT)


@contextlib.asynccontextmanager
async def retention_cluster(site: Site, redis: RedisServer, root: Path,
                            xmpp: Clients) -> AsyncIterator[list[InProcessNode]]:
    """Two in-process nodes (not started) with retention_days = 1 and
    expire_interval = 1; at the end the clients are aborted, then the
    nodes stopped."""
    c = Cluster(site, redis, root, clustered=True, heartbeat=0.2, dead_after=DEAD_AFTER,
                log="debug", client=None, options=None, workers=None,
                host={"options": {"mam": {"retention_days": 1, "expire_interval": 1}}})
    nodes = [InProcessNode(c, name, i) for i, name in enumerate(("node-a", "node-b"))]
    try:
        yield nodes
    finally:
        xmpp.close()
        await asyncio.gather(*(n.stop() for n in nodes), return_exceptions=True)


async def mam_client(xmpp: Clients, node: InProcessNode, who: str) -> Client:
    logged: ClusterClient = await xmpp.login(node, who)   # type: ignore[arg-type]
    return Client(logged.xmpp)


async def test_retention_removes_old_entries_exactly_once(
        site: Site, redis: RedisServer, tmp_path: Path, xmpp: Clients) -> None:
    """Old entries (days ago) written straight into the shared archive
    before the nodes start, recent ones beside them, and messages alice and
    bob exchange across the nodes: one node's duty runs and removes exactly
    the old ones (the other node's never runs while both live); a MAM query
    finds the rest. The holder stops: the other node takes the duty over
    and removes the old entries written since."""
    async with retention_cluster(site, redis, tmp_path / "nodes", xmpp) as nodes:
        config = nodes[0].server.config
        store = archive_for(config, config.hosts[0])    # as the server opens it
        await store.open()
        try:
            old = {await plant(store, ALICE, BOB, f"old {age}", age) for age in OLD}
            old |= {await plant(store, BOB, ALICE, f"old {age}", age) for age in OLD[:2]}
            for age in RECENT:
                await plant(store, ALICE, BOB, f"recent {age}", age)
            before = await stored(store, ALICE) | await stored(store, BOB)
            assert old < before

            await asyncio.gather(*(n.start() for n in nodes))
            assert {n.duty.interval for n in nodes} == {1}
            alice = await mam_client(xmpp, nodes[0], "alice/phone")
            bob = await mam_client(xmpp, nodes[1], "bob/desk")
            for i in range(4):
                sender, to, receiver = (alice, BOB, bob) if i % 2 else (bob, ALICE, alice)
                sender.say(to, f"live {i}")
                await receiver.got(f"live {i}")
            live = [f"live {i}" for i in range(4)]
            await until(lambda: any(ran_since(n.duty, 0) for n in nodes), "retention run")

            holder, other = sorted(nodes, key=lambda n: -n.duty.runs)
            assert all(n.alive for n in nodes)
            assert holder.duty.runs > 0 and other.duty.runs == 0, nodes
            assert holder.duty.holding and not other.duty.holding
            assert await redis.execute("GET", keys.duty(EXPIRE)) == holder.duty.token
            now = await stored(store, ALICE) | await stored(store, BOB)
            assert before - now == old, "removed: exactly the old entries"
            assert len(now - before) == 2 * len(live)       # each side's copy
            recent = [f"recent {age}" for age in RECENT]
            assert [body_of(m) for m in await everything(alice)] == recent + live
            assert [body_of(m) for m in await everything(bob)] == live
            assert other.duty.runs == 0

            # The holder stops: the other node takes the duty over at its
            # next poll (a released lease: no settle time) and runs it.
            await holder.stop()
            assert not holder.duty.holding
            more = {await plant(store, ALICE, BOB, f"older {age}", age) for age in OLD}
            more.add(await plant(store, BOB, ALICE, "older of bob", OLD[0]))
            since = other.duty.runs
            await until(lambda: ran_since(other.duty, since),
                        f"retention run on {other.name} after the writes")
            assert other.duty.runs > 0 and other.duty.holding
            assert await redis.execute("GET", keys.duty(EXPIRE)) == other.duty.token
            after = await stored(store, ALICE) | await stored(store, BOB)
            assert after == now, "removed: exactly the old entries written since"
        finally:
            await store.close()
        survivor = await mam_client(xmpp, other, "alice/tablet")
        assert [body_of(m) for m in await everything(survivor)] == recent + live
