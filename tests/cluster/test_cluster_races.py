"""Races between nodes that a single server cannot have (issue 10 items 3, 15).

A message to a user who is becoming available on another node at that very
moment: the sender's node may still see him unavailable and store the
message offline just after his node read (and emptied) his offline store.
The message must still reach him at once, and only once.

Binds of one account on two nodes at the same moment: each node checks
the account's resources in Redis before it binds, so without one order
across the cluster both see the other's resource missing.
"""

from __future__ import annotations

import asyncio
import re
import ssl

import pytest

from tests.cluster.conftest import Clients, ClusterFactory, Node, Site, body, eventually
from tests.conftest import DOMAIN, PASSWORD, TIMEOUT
from tests.rawclient import Raw
from vinespy import ns

pytestmark = [pytest.mark.integration, pytest.mark.redis]

BOB = f"bob@{DOMAIN}"
ALICE = f"alice@{DOMAIN}"
ATTEMPTS = 40


async def test_message_at_initial_presence_is_never_left_offline(cluster: ClusterFactory,
                                                                 xmpp: Clients) -> None:
    """alice on A sends bob (on B) a message in the same instant bob sends
    initial presence, ATTEMPTS times (bob goes unavailable in between). Each
    message reaches bob while he is online (live, or from offline storage
    right away), exactly once; nothing is left in his offline store. Before
    the fix about one attempt in eight left the message stored offline until
    his next login."""
    c = await cluster(2)
    a, b = c["node-a"], c["node-b"]
    alice = await xmpp.login(a, "alice/r1")
    bob = await xmpp.login(b, "bob/r1", presence=False)
    for i in range(ATTEMPTS):
        alice.say(BOB, f"race-{i}")
        bob.presence()                                  # initial presence, same instant
        try:
            await bob.messages.get(body(f"race-{i}"), TIMEOUT)
        except AssertionError:
            stored = await c.site.stored(BOB, "offline")
            raise AssertionError(f"attempt {i}: race-{i} not delivered; offline store: "
                                 f"{stored!r}") from None
        bob.presence(ptype="unavailable")
        await c.wait_route(bob.jid, match=lambda e: not e.get("available"))
    # Anything sent twice would come before this (one sender, one inbox, in order).
    bob.presence()
    alice.say(bob.jid, "end")
    await bob.messages.get(body("end"))
    for i in range(ATTEMPTS):
        assert len(bob.messages.matching(body(f"race-{i}"))) == 1, f"race-{i} twice"
    assert await c.site.stored(BOB, "offline") is None
    assert alice.errors.items == []


async def _authenticated(node: Node, ctx: ssl.SSLContext) -> Raw:
    """alice through STARTTLS and SASL, her post-auth stream open, not bound."""
    raw = await Raw.connect(node.port, host=node.address)
    await raw.secure(DOMAIN, ctx)
    assert (await raw.plain("alice", PASSWORD)).startswith(b"<success")
    raw.open_stream(DOMAIN)
    await raw.features()
    return raw


async def _bound(raw: Raw) -> bool:
    m = await raw.expect(rb"<iq[^>]*id=\"b\".*?(/>|</iq>)")
    return re.search(rb'type="result"', m.group(0)) is not None


async def test_binds_on_two_nodes_respect_the_resource_limit(cluster: ClusterFactory,
                                                             site: Site) -> None:
    """Six new resources of alice bound in the same instant, three on each
    node, with max_resources_per_account = 2: exactly two are bound, both in
    Redis's routing table, the other four get <resource-constraint/>. Before
    binds were ordered across the cluster, three or four were bound."""
    c = await cluster(2, client={"max_resources_per_account": 2})
    ctx = ssl.create_default_context()
    site.ca.configure_trust(ctx)
    for attempt in range(3):
        raws = [await _authenticated(c[i % 2], ctx) for i in range(6)]
        for i, raw in enumerate(raws):
            raw.send(f"<iq type='set' id='b'><bind xmlns='{ns.BIND}'><resource>"
                     f"r{attempt}-{i}</resource></bind></iq>")
        results = await asyncio.gather(*(_bound(raw) for raw in raws))
        assert results.count(True) == 2, f"attempt {attempt}: {results}"
        routes = await c.routes(ALICE)
        assert sorted(routes) == sorted(f"r{attempt}-{i}" for i, ok in enumerate(results)
                                        if ok), routes
        for raw in raws:
            raw.close()

        async def gone() -> bool:
            return not await c.routes(ALICE)
        await eventually(gone, TIMEOUT, "alice's routes to be removed")


async def test_one_resource_bound_on_two_nodes_at_once_leaves_one_session(
        cluster: ClusterFactory, site: Site) -> None:
    """alice binds resource 'phone' on both nodes in the same instant: both
    binds succeed (the later replaces the earlier, RFC 6120 §7.7.2.2), the
    replaced stream is closed with <conflict/>, and Redis routes 'phone' to
    the survivor's node."""
    c = await cluster(2)
    ctx = ssl.create_default_context()
    site.ca.configure_trust(ctx)
    for attempt in range(3):
        a, b = await _authenticated(c[0], ctx), await _authenticated(c[1], ctx)
        for raw in (a, b):
            raw.send(f"<iq type='set' id='b'><bind xmlns='{ns.BIND}'><resource>phone"
                     "</resource></bind></iq>")
        assert await asyncio.gather(_bound(a), _bound(b)) == [True, True]
        # Both answered: both entries were written, the later one is what Redis
        # keeps, and the other node's stream ends.
        node = (await c.wait_route(f"{ALICE}/phone"))["node"]
        survivor, loser = (a, b) if node == c[0].name else (b, a)
        assert b"<conflict" in await loser.until_closed(), f"attempt {attempt}"
        survivor.send(f"<iq type='get' id='p' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
        pong = await survivor.expect(rb"<iq[^>]*id=\"p\"[^>]*>")
        assert b'type="result"' in pong.group(0), pong.group(0)
        assert (await c.routes(ALICE))["phone"]["node"] == node
        for raw in (a, b):
            raw.close()
        await c.wait_no_route(f"{ALICE}/phone")
