"""Federation in a cluster: every node takes other servers' streams and
keeps its own to them (README, "Federation"). A vinespy of another domain
(verona.lit, in this test's loop) talks to the cluster's wonderland.lit."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import trustme

from tests.cluster.conftest import Clients, ClusterFactory, body
from tests.conftest import DOMAIN, wait_event
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
