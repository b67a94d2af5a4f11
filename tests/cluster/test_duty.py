"""Cluster duties (vinespy/cluster/duty.py) on a real redis-server: one
node at a time runs the job, and never two at once, through a clean stop,
a holder cut off from Redis (a TCP relay that stops passing anything: its
renewals hang), a lease Redis loses while its holder trusts it, a Redis
restart, a Sentinel failover, and between two real in-process servers (and
on a standalone one).

Each "node" is a ClusterDuty with a Redis client of its own, made as a
node makes it (vinespy.cluster.connection.connect). Every run records its
node, start and end (monotonic, one process: comparable); the assertion
that matters is that no run starts before the previous one ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest
import trustme

from tests.cluster.conftest import RedisServer, eventually
from tests.conftest import running, write_config
from tests.sentinelproc import SERVICE, SentinelSet
from tests.support import TIMEOUT
from vinespy.cluster import keys
from vinespy.cluster.connection import connect
from vinespy.cluster.duty import RELEASED, ClusterDuty
from vinespy import config as vconfig
from vinespy.config import ClusterConfig
from vinespy.duty import LocalDuty
from vinespy.server import Server

pytestmark = [pytest.mark.integration, pytest.mark.redis, pytest.mark.timeout(120)]

TTL = 1.5           # s: margin 0.3, settle 1.5 unless a test says
INTERVAL = 0.1
NAME = "expire"
NEVER = 60.0        # a settle time longer than any wait: only a handover lets the job run

Work = Callable[[Callable[[], bool]], Awaitable[None]]


@dataclass
class Span:
    node: str
    start: float
    end: float | None = None


class Runs:
    """Every run of every node, in the order they started."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self._event = asyncio.Event()

    def job(self, node: str, work: Work) -> Callable[[Callable[[], bool]], Awaitable[None]]:
        async def job(still_held: Callable[[], bool]) -> None:
            span = Span(node, time.monotonic())
            self.spans.append(span)
            self._changed()
            try:
                await work(still_held)
            finally:
                span.end = time.monotonic()
                self._changed()
        return job

    def _changed(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, check: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
        deadline = time.monotonic() + timeout
        while not (found := check()):
            event = self._event
            try:
                await asyncio.wait_for(event.wait(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise AssertionError(f"no {what} within {timeout:g} s: {self.spans}") from None
        return found

    async def first(self, match: Callable[[Span], bool], what: str,
                    timeout: float = TIMEOUT) -> Span:
        span: Span = await self.wait(lambda: next((s for s in self.spans if match(s)), None),
                                     what, timeout)
        return span

    def assert_apart(self) -> None:
        """No run began before the one before it ended."""
        for before, after in zip(self.spans, self.spans[1:]):
            assert before.end is not None and before.end <= after.start, \
                f"{before} overlaps {after}: {self.spans}"


async def short(still_held: Callable[[], bool]) -> None:
    await asyncio.sleep(0.03)           # a run that takes a while


async def endless(still_held: Callable[[], bool]) -> None:
    await asyncio.Event().wait()        # deaf to still_held(): only the duty can end it


async def batches(still_held: Callable[[], bool]) -> None:
    for _ in range(10):
        if not still_held():            # a well-behaved job: stops between batches
            return
        await asyncio.sleep(0.02)


class Node:
    """A duty as a node runs it, with its own Redis client."""

    def __init__(self, name: str, url: str, runs: Runs, work: Work,
                 cfg: ClusterConfig | None = None, **kw: Any) -> None:
        self.name = name
        self.client = connect(cfg or ClusterConfig(url=url))
        kw.setdefault("ttl", TTL)
        self.duty = ClusterDuty(NAME, INTERVAL, runs.job(name, work), lambda: self.client,
                                node=name, **kw)

    def __repr__(self) -> str:
        return self.name

    async def close(self) -> None:
        await self.duty.stop()
        with contextlib.suppress(Exception):
            await self.client.aclose()


class Relay:
    """A TCP relay between one node and Redis. ``cut()``: nothing passes
    any more and nothing is closed, new connections hang too (a network
    partition); ``heal()``: the stalled connections are dropped and new ones
    relay again."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.cut_off = False
        self.port = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        if self.cut_off:
            self._spawn(self._pipe(reader, None))
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self._writers.add(up_writer)
        self._spawn(self._pipe(reader, up_writer))
        self._spawn(self._pipe(up_reader, writer))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter | None) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await src.read(65536):
                if dst is not None and not self.cut_off:
                    dst.write(data)
                    await dst.drain()
        if dst is not None:
            dst.close()

    def cut(self) -> None:
        self.cut_off = True

    def heal(self) -> None:
        self.cut_off = False
        self._drop()

    def _drop(self) -> None:
        for w in self._writers:
            w.close()
        self._writers.clear()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._drop()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@pytest.fixture
async def nodes(redis: RedisServer) -> AsyncIterator[Callable[..., Node]]:
    """``make(name, work, url=None, **duty options)``: a node (not started);
    every node is stopped at teardown."""
    made: list[Node] = []

    def make(name: str, work: Work, url: str | None = None, **kw: Any) -> Node:
        node = Node(name, url or redis.url, runs, work, **kw)
        made.append(node)
        return node

    runs = Runs()
    make.runs = runs        # type: ignore[attr-defined]
    try:
        yield make
    finally:
        await asyncio.gather(*(n.close() for n in made))


async def _now(value: Any) -> Any:
    return value


def holder(nodes: list[Node], span: Span) -> Node:
    return next(n for n in nodes if n.name == span.node)


async def test_one_node_runs_the_duty_every_interval(nodes: Any) -> None:
    runs: Runs = nodes.runs
    group = [nodes(name, short) for name in ("a", "b", "c")]
    for n in group:
        n.duty.start()
    await runs.wait(lambda: sum(s.end is not None for s in runs.spans) >= 8, "8 runs")
    assert len({s.node for s in runs.spans}) == 1, runs.spans
    runs.assert_apart()
    assert [n.duty.holding for n in group].count(True) == 1


async def test_a_stopped_holder_hands_over_at_once(nodes: Any, redis: RedisServer) -> None:
    runs: Runs = nodes.runs
    a = nodes("a", short, settle=0)
    a.duty.start()
    await runs.first(lambda s: s.node == "a", "run on a")
    # b and c would wait a minute after taking a lease found free: they run
    # within the test's timeout only if a's release lets them run at once.
    others = [nodes(name, short, settle=NEVER) for name in ("b", "c")]
    for n in others:
        n.duty.start()
    assert await redis.execute("GET", keys.duty(NAME)) == a.duty.token
    await a.duty.stop()
    assert not a.duty.holding
    after = await runs.first(lambda s: s.node != "a", "run on another node")
    await runs.wait(lambda: sum(s.node == after.node and s.end is not None
                                for s in runs.spans) >= 3, "3 runs on the new holder")
    assert {s.node for s in runs.spans} == {"a", after.node}
    runs.assert_apart()


async def test_stop_releases_only_its_own_lease(nodes: Any, redis: RedisServer) -> None:
    runs: Runs = nodes.runs
    a, b = nodes("a", short, settle=0), nodes("b", short, settle=0)
    a.duty.start()
    await runs.first(lambda s: s.node == "a", "run on a")
    b.duty.start()
    await b.duty.stop()                 # not the holder: leaves the lease alone
    assert await redis.execute("GET", keys.duty(NAME)) == a.duty.token
    await a.duty.stop()
    assert await redis.execute("GET", keys.duty(NAME)) == RELEASED
    assert 0 < await redis.execute("PTTL", keys.duty(NAME)) <= TTL * 1000
    runs.assert_apart()


@pytest.mark.parametrize("work", [endless, batches], ids=["deaf-job", "batch-job"])
async def test_a_holder_cut_off_from_redis_stops_before_another_takes_over(
        nodes: Any, redis: RedisServer, work: Work) -> None:
    """No settle time: only the margin keeps the runs apart here."""
    runs: Runs = nodes.runs
    relays = [Relay(redis.port) for _ in range(3)]
    try:
        for r in relays:
            await r.start()
        group = [nodes(name, work, url=r.url, settle=0) for name, r in zip("abc", relays)]
        for n in group:
            n.duty.start()
        first = await runs.first(lambda s: True, "a first run")
        cut = holder(group, first)
        relay = relays[group.index(cut)]
        relay.cut()
        second = await runs.first(lambda s: s.node != cut.name, "a run on another node")
        assert first.end is not None and first.end <= second.start, runs.spans
        assert not cut.duty.holding
        relay.heal()
        # No event says so: polled, bounded.
        await eventually(lambda: _now(not cut.duty.outage), what=f"{cut} reaching Redis again")
        # Back, it asks for the lease at the next poll and finds it taken.
        assert not cut.duty.holding
        if work is batches:
            await runs.wait(lambda: sum(s.node == second.node for s in runs.spans) >= 2,
                            "another run on the new holder")
    finally:
        for r in relays:
            await r.close()
    runs.assert_apart()


async def test_a_lease_redis_lost_runs_elsewhere_only_once_its_holder_gave_up(
        nodes: Any, redis: RedisServer) -> None:
    """The lease vanishes (as in a failover to a replica that had not got
    it) while its holder, cut off, still trusts it: the node that takes it
    fresh runs the job only after its settle time, by when the holder has
    given it up. (Without the settle time, b would run at its next poll,
    up to 0.5 s after the loss, while a trusts its lease for 0.9 s or more.)"""
    runs: Runs = nodes.runs
    relay = Relay(redis.port)
    await relay.start()
    try:
        a = nodes("a", endless, url=relay.url, settle=0, margin=0.1)
        a.duty.start()
        first = await runs.first(lambda s: s.node == "a", "a run on a")
        b = nodes("b", endless, margin=0.1)
        b.duty.start()
        relay.cut()
        assert await redis.execute("DEL", keys.duty(NAME)) == 1
        second = await runs.first(lambda s: s.node == "b", "a run on b")
        assert first.end is not None and first.end <= second.start, runs.spans
    finally:
        await relay.close()
    runs.assert_apart()


async def test_the_duty_resumes_after_redis_restarts(nodes: Any, redis: RedisServer) -> None:
    """The restart loses the lease while its holder trusts it: whoever takes
    it fresh waits out the settle time, so the runs stay apart."""
    runs: Runs = nodes.runs
    group = [nodes(name, endless) for name in ("a", "b")]
    for n in group:
        n.duty.start()
    first = await runs.first(lambda s: True, "a first run")
    await redis.restart()
    second = await runs.first(lambda s: s is not first, "a run after the restart")
    assert first.end is not None and first.end <= second.start, runs.spans
    assert await redis.execute("GET", keys.duty(NAME)) == holder(group, second).duty.token
    runs.assert_apart()


async def test_the_duty_follows_a_sentinel_failover(
        nodes: Any, sentinels: SentinelSet) -> None:
    """The nodes find the primary through the Sentinels; the primary is
    killed: once the replica is promoted the duty runs again, never
    overlapping the runs from before."""
    runs: Runs = nodes.runs
    cfg = ClusterConfig(url="redis:///0", sentinels=tuple(sentinels.addresses), service=SERVICE)
    group = [nodes(name, short, cfg=cfg) for name in ("a", "b")]
    for n in group:
        n.duty.start()
    await runs.wait(lambda: sum(s.end is not None for s in runs.spans) >= 2, "2 runs")
    await asyncio.to_thread(sentinels.kill_primary)
    await asyncio.to_thread(sentinels.wait_promoted)
    promoted = time.monotonic()         # seconds after the kill: every lease lapsed by now
    after = await runs.first(lambda s: s.start > promoted, "a run after the failover",
                             timeout=3 * TIMEOUT)
    lease = await asyncio.to_thread(sentinels.execute, sentinels.replica, "GET",
                                    keys.duty(NAME))
    assert lease == holder(group, after).duty.token, lease
    runs.assert_apart()


# --------------------------------------------------------------------------
# real servers


class ServerNode:
    """A clustered vinespy Server serving in the test's loop (as
    tests/conftest.py ``running`` does), stopped on demand."""

    def __init__(self, root: Path, ca: trustme.CA, redis: RedisServer, node: str) -> None:
        root.mkdir()
        extra = (f'\n[cluster]\nurl = "{redis.url}"\nnode = "{node}"\n'
                 f'heartbeat = 0.2\ndead_after = 1.0\n')
        self.server = Server(vconfig.load(write_config(root, ca, extra=extra)))
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        ready = asyncio.Event()
        self._task = asyncio.create_task(self.server.serve(self._stop.wait, ready.set))
        waiter = asyncio.ensure_future(ready.wait())
        await asyncio.wait({self._task, waiter}, timeout=TIMEOUT,
                           return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        assert ready.is_set(), f"{self.server.config.path}: the server did not start"

    async def stop(self) -> None:
        if self._task is not None:
            self._stop.set()
            await asyncio.wait_for(self._task, TIMEOUT)
            self._task = None


async def test_servers_run_a_registered_duty_on_one_node_and_hand_it_over(
        tmp_path: Path, ca: trustme.CA, redis: RedisServer) -> None:
    """Two in-process cluster nodes register the same duty with
    ``server.duty`` (before serving, as a module's start() would): one runs
    it, the lease's ttl being the cluster's dead_after; when that server
    shuts down it releases the lease (stopping its duties before the
    cluster closes its Redis client), and the other takes over."""
    runs = Runs()
    servers = {name: ServerNode(tmp_path / name, ca, redis, name)
               for name in ("node-a", "node-b")}
    try:
        for name, srv in servers.items():
            duty = srv.server.duty(NAME, INTERVAL, runs.job(name, short))
            assert isinstance(duty, ClusterDuty) and duty.tenure.ttl == 1.0
            with pytest.raises(ValueError):
                srv.server.duty(NAME, INTERVAL, runs.job(name, short))
        for srv in servers.values():
            await srv.start()
        first = await runs.first(lambda s: s.end is not None, "a run")
        await runs.wait(lambda: sum(s.end is not None for s in runs.spans) >= 4, "4 runs")
        assert {s.node for s in runs.spans} == {first.node}
        other = next(n for n in servers if n != first.node)
        await servers[first.node].stop()
        assert await redis.execute("GET", keys.duty(NAME)) in (
            RELEASED, servers[other].server.duties[NAME].token)
        await runs.first(lambda s: s.node == other, f"a run on {other}")
    finally:
        for srv in servers.values():
            await srv.stop()
    runs.assert_apart()


async def test_a_standalone_server_runs_a_duty_registered_while_serving(
        tmp_path: Path, ca: trustme.CA) -> None:
    """No [cluster]: the same call gives a duty the one process holds,
    started at once when registered while serving, stopped with the server."""
    runs = Runs()
    async with running(tmp_path, ca) as r:
        duty = r.server.duty(NAME, INTERVAL, runs.job("alone", short))
        assert isinstance(duty, LocalDuty)
        await runs.wait(lambda: sum(s.end is not None for s in runs.spans) >= 3, "3 runs")
    assert not duty.holding and not duty.running
    runs.assert_apart()
