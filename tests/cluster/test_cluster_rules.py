"""RFC 6120/6121 rules that span nodes: resource conflicts, IQs to a dead
node's resource, and user data (a blocklist) changed on another node."""

from __future__ import annotations

import asyncio

import pytest
from slixmpp.exceptions import IqError

from tests.cluster.conftest import (
    Clients, ClusterFactory, RedisServer, body, eventually, presence_from,
)
from tests.conftest import DOMAIN, TIMEOUT
from vinespy.cluster import wire

pytestmark = [pytest.mark.integration, pytest.mark.redis]

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"


async def test_resource_conflict_across_nodes(cluster: ClusterFactory, xmpp: Clients) -> None:
    """alice/r1 binds on B while alice/r1 is on A: the older stream (on A) is
    closed (RFC 6120 §7.7.2.2, the new session wins) and alice/r1 is B's."""
    c = await cluster(2)
    a, b = c["node-a"], c["node-b"]
    old = await xmpp.login(a, "alice/r1")
    bob = await xmpp.login(a, "bob/r1")
    new = await xmpp.login(b, "alice/r1", wait_route=False)
    await asyncio.wait_for(asyncio.shield(old.disconnected), TIMEOUT)
    await c.wait_route(new.jid, match=lambda e: e.get("node") == "node-b")
    bob.say(new.jid, "to the new one")
    await new.messages.get(body("to the new one"))


async def test_iq_to_resource_of_dead_node_gets_an_error(cluster: ClusterFactory,
                                                         xmpp: Clients) -> None:
    """An IQ get for bob/r1 sent right after bob's node was SIGKILLed (before
    anyone knows it is dead) is not left unanswered: once the node is
    cleaned up, the IQ is re-routed and alice gets <service-unavailable/>
    (RFC 6121 §8.5.3.2.2), never a timeout."""
    c = await cluster(2)
    alice = await xmpp.login(c["node-a"], "alice/r1")
    bob = await xmpp.login(c["node-b"], "bob/r1")
    c["node-b"].sigkill()
    await c["node-b"].wait_exit()
    with pytest.raises(IqError) as err:
        await alice.xmpp.plugin["xep_0199"].ping(jid=bob.jid, timeout=TIMEOUT)
    assert err.value.iq["error"]["condition"] == "service-unavailable"


async def test_block_on_one_node_applies_on_the_other(cluster: ClusterFactory,
                                                      xmpp: Clients) -> None:
    """bob on B reaches alice on A (B now caches alice's empty blocklist);
    alice blocks bob on A: B hears that alice's data changed, reads her list
    again, and bob's next message is refused with <service-unavailable/>
    (XEP-0191 §3.5) instead of reaching her. Unblocked, it reaches her."""
    c = await cluster(2)
    alice = await xmpp.login(c["node-a"], "alice/r1")
    bob = await xmpp.login(c["node-b"], "bob/r1")
    bob.say(ALICE, "hello")
    await alice.messages.get(body("hello"))
    await alice.xmpp.plugin["xep_0191"].block(BOB, timeout=TIMEOUT)
    bob.say(ALICE, "blocked?")
    err = await bob.errors.get(lambda m: m["error"]["condition"] == "service-unavailable")
    assert str(err["from"]) == ALICE
    await alice.xmpp.plugin["xep_0191"].unblock(BOB, timeout=TIMEOUT)
    bob.say(ALICE, "after")
    await alice.messages.get(body("after"))
    assert alice.messages.matching(body("blocked?")) == []


async def test_directed_presence_of_a_dead_node_user_is_withdrawn(
        cluster: ClusterFactory, xmpp: Clients, redis: RedisServer) -> None:
    """RFC 6121 §4.6.3/§4.5.2: alice on B sends directed presence to carol on A
    (no subscription between them). B is SIGKILLed: the node that cleans up
    after B tells carol that alice left (the JIDs of directed presence are in
    a Redis set of alice's session, which the cleanup reads and removes),
    exactly once."""
    c = await cluster(2)
    a, b = c["node-a"], c["node-b"]
    carol = await xmpp.login(a, "carol/r1")
    alice = await xmpp.login(b, "alice/r1")
    alice.presence(pto=carol.jid)
    await carol.presences.get(presence_from(alice.jid, "available"))
    directed = f"cluster:sets:{(await c.routes(ALICE))['r1']['sid']}"

    async def remembered() -> bool:
        return f"presence.directed {carol.jid}" in await redis.execute("SMEMBERS", directed)
    await eventually(remembered, what=f"{carol.jid} in {directed}")
    b.sigkill()
    await b.wait_exit()
    await carol.presences.get(presence_from(alice.jid, "unavailable"))
    await c.wait_no_route(alice.jid)
    carol.say(carol.jid, "sync")
    await carol.messages.get(body("sync"))
    assert len(carol.presences.matching(presence_from(alice.jid, "unavailable"))) == 1
    assert int(await redis.execute("EXISTS", directed)) == 0


async def test_a_bad_inbox_item_costs_only_itself(cluster: ClusterFactory, xmpp: Clients,
                                                  redis: RedisServer) -> None:
    """One inbox entry carries a close request with a stream-error condition
    RFC 6120 §4.9.3 does not define, then a message for alice: the bad item
    is logged and skipped, alice keeps her stream and gets the message."""
    c = await cluster(1)
    a = c["node-a"]
    alice = await xmpp.login(a, "alice/r1")
    sid = (await c.routes(ALICE))["r1"]["sid"]
    msg = (f'<message from="{BOB}/x" to="{alice.jid}" type="chat"><body>after</body>'
           '</message>').encode()
    fields = wire.entry("node-z", "inc-z", 1, [
        wire.close_item(alice.jid, sid, "no-such-condition"),
        wire.stanza_item(alice.jid, 0, msg),
    ])
    await redis.execute("XADD", "cluster:inbox:node-a", "*",
                        *[x for kv in fields.items() for x in kv])
    await alice.messages.get(body("after"))
    await alice.ping()
    assert not alice.disconnected.done()
    await a.wait_line("no-such-condition")
