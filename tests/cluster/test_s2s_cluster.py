"""Federation in a cluster: every node takes other servers' streams and
keeps its own to them (README, "Federation"). A vinespy of another domain
(verona.lit, in this test's loop) talks to the cluster's wonderland.lit."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.cluster.conftest import Clients, ClusterFactory, body, eventually
from tests.conftest import DOMAIN, TIMEOUT, wait_event
from tests.s2s.conftest import ca_file, peer
from tests.support import free_port

pytestmark = [pytest.mark.integration, pytest.mark.redis]


async def test_a_remote_user_reaches_users_on_every_node(
        cluster: ClusterFactory, xmpp: Clients, tmp_path: Path, ca: trustme.CA) -> None:
    """verona.lit's streams go to node A only (its route), yet romeo reaches
    alice on node B; alice's answer leaves from node B on B's own stream,
    whose dialback key verona.lit checks with node A (one secret in Redis)."""
    verona_port = free_port()
    # Certificates from CAs the other side does not know (each lists the
    # other in insecure_domains): dialback, whose keys are what is shared.
    c = await cluster(2, server={"ca_file": str(ca_file(tmp_path, ca)),
                                 "insecure_domains": ["verona.lit"],
                                 "routes": {"verona.lit": f"127.0.0.1:{verona_port}"}})
    a, b = c[0], c[1]
    stranger = trustme.CA()
    async with peer(tmp_path / "verona", stranger, "verona.lit", verona_port,
                    {DOMAIN: a.s2s_port}, trust=stranger, insecure_domains=[DOMAIN]) as verona:
        romeo = await verona.login(await verona.user("romeo"))
        alice = await xmpp.login(b, "alice/r1")
        romeo.send_message(mto=f"alice@{DOMAIN}", mbody="from verona", mtype="chat")
        msg = await alice.messages.get(body("from verona"))
        assert str(msg["from"]).startswith("romeo@verona.lit/")
        back = asyncio.ensure_future(wait_event(romeo, "message"))
        alice.say(str(msg["from"]), "from node B")
        assert (await back)["body"] == "from node B"
        await b.wait_line(r"s2s: out wonderland.lit<->verona.lit .* up \(dialback\)")
        await a.wait_line(r"s2s: in wonderland.lit<->verona.lit .* authenticated by dialback")


class HeldProxy:
    """A TCP listener that holds every connection (reads nothing, answers
    nothing) until :meth:`release`; then it joins each to ``target``: a peer
    server slow to answer, then answering."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.released = asyncio.Event()
        self.held = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    def release(self) -> None:
        self.released.set()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.held.set()
        await self.released.wait()
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except OSError:
                pass
            finally:
                w.close()
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def test_stanzas_waiting_on_a_dead_node_are_sent_by_another(
        cluster: ClusterFactory, xmpp: Clients, tmp_path: Path, ca: trustme.CA) -> None:
    """alice (node A) writes to romeo while verona.lit is slow to answer:
    her messages wait for the stream, and node A is SIGKILLed meanwhile. The
    node that cleans up after it takes the copies A kept in Redis and sends
    them: romeo gets them all, in order; none is lost."""
    verona_port = free_port()
    proxy = HeldProxy(verona_port)
    held_port = await proxy.start()
    try:
        c = await cluster(2, dead_after=1.0, server={
            "ca_file": str(ca_file(tmp_path, ca)), "connect_timeout": 30.0,
            "routes": {"verona.lit": f"127.0.0.1:{held_port}"}})
        a, b = c[0], c[1]
        async with peer(tmp_path / "verona", ca, "verona.lit", verona_port,
                        {DOMAIN: b.s2s_port}) as verona:
            romeo = await verona.login(await verona.user("romeo"))
            alice = await xmpp.login(a, "alice/r1")
            for i in range(5):
                alice.say("romeo@verona.lit", f"waiting {i}")
            await asyncio.wait_for(proxy.held.wait(), TIMEOUT)
            got: list[str] = []
            all_in = asyncio.get_running_loop().create_future()

            def on_message(msg: Any) -> None:
                if msg["body"].startswith("waiting"):
                    got.append(msg["body"])
                    if len(got) == 5 and not all_in.done():
                        all_in.set_result(None)
            romeo.add_event_handler("message", on_message)
            await until_kept(c)
            a.sigkill()
            await b.wait_line(r"cluster: node node-a is gone", timeout=3 * TIMEOUT)
            proxy.release()
            await asyncio.wait_for(all_in, 3 * TIMEOUT)
            assert got == [f"waiting {i}" for i in range(5)]
    finally:
        proxy.close()


async def until_kept(c: Any) -> None:
    """Until node A's copies of its five waiting stanzas are in Redis."""
    async def five() -> bool:
        return int(await c.redis.execute("LLEN", "cluster:kept:s2s-queue:node-a")) == 5
    await eventually(five, TIMEOUT, "node A's waiting stanzas kept in Redis")
