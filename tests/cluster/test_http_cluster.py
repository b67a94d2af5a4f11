"""BOSH and WebSocket sessions in a cluster: two real nodes sharing a real
redis-server, each with an ``[http]`` listener of its own.

A BOSH request that reaches a node other than the one holding its session
is relayed there through the cluster (bosh.Relay), so a load balancer in
front needs no sticky sessions: these tests create a session on one node
and send every later request to the other.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any, AsyncIterator

import aiohttp
import pytest

from tests.cluster.conftest import Cluster, ClusterFactory, Clients, Node, Site, body
from tests.conftest import DOMAIN, PASSWORD, TIMEOUT
from tests.integration.test_bosh import C, SASL, Bosh, bodies, http_client, message
from vinespy import ns

pytestmark = [pytest.mark.integration, pytest.mark.redis]

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
SM = "urn:xmpp:sm:3"
HTTP = {"bosh_max_wait": 30}


def bosh_url(node: Node) -> str:
    return f"http://{node.address}:{node.http_port}/http-bind"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with http_client() as s:
        yield s


async def two_nodes(cluster: ClusterFactory) -> Cluster:
    c = await cluster(2, http=HTTP)
    assert all(n.http_port for n in c.nodes)
    return c


async def bosh_across(c: Cluster, http: aiohttp.ClientSession, **create: Any) -> Bosh:
    """A BOSH session created on node 0 whose later requests all go to node 1."""
    bosh = Bosh(http, bosh_url(c[0]))
    resp = await bosh.create(**create)
    assert resp.type is None, resp
    assert bosh.sid.endswith(f".{c[0].name}"), bosh.sid
    bosh.url = bosh_url(c[1])
    return bosh


async def test_a_bosh_session_made_on_one_node_goes_on_through_the_other(
        cluster: ClusterFactory, xmpp: Clients, http: aiohttp.ClientSession) -> None:
    """Created on node 0, then SASL, restart, bind, messages both ways with
    bob (TCP on node 1) and a repeated rid, all sent to node 1: it works as
    on one node; the session lives on node 0 (its route says so); a held
    request relayed through node 1 is answered as soon as bob's message
    comes, well before ``wait``."""
    c = await two_nodes(cluster)
    bosh = await bosh_across(c, http, wait=30)
    assert (await bosh.plain("alice")).find(f"{SASL}success") is not None
    await bosh.restart()
    jid = await bosh.bind("web")
    assert jid == f"{ALICE}/web"
    route = await c.wait_route(jid)
    assert route["node"] == c[0].name
    bob = await xmpp.login(c[1], "bob")

    rid = bosh.rid
    ping = (f"<iq xmlns='jabber:client' type='get' id='p1' to='{DOMAIN}'>"
            "<ping xmlns='urn:xmpp:ping'/></iq>")
    first = await bosh.send(ping)
    assert first.find(f"{C}iq") is not None, first
    again = await bosh.send(ping, rid=rid)
    assert again.data == first.data

    sent = bosh.hold(message(BOB, "hello bob"))
    got = await bob.messages.get(body("hello bob"))
    assert str(got["from"]) == jid
    # That request is held now (on node 0, waiting through node 1).
    started = time.monotonic()
    bob.say(jid, "hello alice")
    answer = await asyncio.wait_for(sent, TIMEOUT)
    assert time.monotonic() - started < 5, "answered by the wait, not by the message"
    assert bodies([el for el in answer.children if el.tag == f"{C}message"]) == ["hello alice"]
    assert b"<message xmlns='jabber:client'" in answer.data

    # Half of the requests through each node: still one session, in order.
    for i in range(4):
        bosh.url = bosh_url(c[i % 2])
        bosh.hold(message(BOB, f"m{i}"))
        await bob.messages.get(body(f"m{i}"))


async def test_a_websocket_user_on_one_node_chats_with_a_tcp_user_on_the_other(
        cluster: ClusterFactory, xmpp: Clients, http: aiohttp.ClientSession) -> None:
    """RFC 7395 on node 0 (with XEP-0198 offered, unlike BOSH), bob over TCP
    on node 1: messages both ways."""
    c = await two_nodes(cluster)
    bob = await xmpp.login(c[1], "bob")
    url = f"ws://{c[0].address}:{c[0].http_port}/xmpp-websocket"
    async with http.ws_connect(url, protocols=("xmpp",), timeout=aiohttp.ClientWSTimeout(
            ws_receive=TIMEOUT, ws_close=TIMEOUT)) as ws:
        assert ws.protocol == "xmpp"

        async def receive(marker: str) -> str:
            while True:
                msg = await asyncio.wait_for(ws.receive(), TIMEOUT)
                assert msg.type == aiohttp.WSMsgType.TEXT, msg
                if marker in msg.data:
                    return str(msg.data)

        async def open_stream() -> str:
            await ws.send_str(f"<open xmlns='{ns.FRAMING}' to='{DOMAIN}' version='1.0'/>")
            await receive("<open")
            return await receive("features")

        await open_stream()
        token = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
        await ws.send_str(f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>{token}</auth>")
        assert "<success" in await receive("urn:ietf:params:xml:ns:xmpp-sasl")
        features = await open_stream()
        assert f"<sm xmlns='{SM}'/>" in features
        await ws.send_str(f"<iq xmlns='jabber:client' type='set' id='b1'><bind xmlns="
                          f"'{ns.BIND}'><resource>ws</resource></bind></iq>")
        assert f"{ALICE}/ws" in await receive("b1")
        jid = f"{ALICE}/ws"
        await c.wait_route(jid, match=lambda e: e["node"] == c[0].name)
        await ws.send_str(message(bob.jid, "hi from the browser"))
        got = await bob.messages.get(body("hi from the browser"))
        assert str(got["from"]) == jid
        bob.say(jid, "hi from the desktop")
        assert "hi from the desktop" in await receive("hi from the desktop")
        await ws.send_str(f"<close xmlns='{ns.FRAMING}'/>")
        await receive("<close")
    await c.wait_no_route(jid)


async def test_the_bosh_sessions_node_stopping(
        cluster: ClusterFactory, xmpp: Clients, site: Site,
        http: aiohttp.ClientSession) -> None:
    """The node holding a BOSH session stops: bob (node 1) sees alice go
    unavailable, and her next request (to node 1) gets terminate
    item-not-found at once, not after the relay's timeout."""
    await site.befriend(ALICE, BOB)
    c = await two_nodes(cluster)
    bob = await xmpp.login(c[1], "bob")
    bosh = await bosh_across(c, http)
    assert (await bosh.plain("alice")).find(f"{SASL}success") is not None
    await bosh.restart()
    jid = await bosh.bind("web")
    presence = await bosh.send("<presence xmlns='jabber:client'/>")
    assert presence.type is None, presence
    await bob.presences.get(lambda p: str(p["from"]) == jid and p["type"] != "unavailable")
    await c[0].stop()
    await bob.presences.get(lambda p: str(p["from"]) == jid and p["type"] == "unavailable")
    started = time.monotonic()
    resp = await bosh.send()
    assert resp.status == 200 and resp.terminated("item-not-found"), resp
    assert time.monotonic() - started < 5


async def test_the_bosh_sessions_node_crashing(
        cluster: ClusterFactory, xmpp: Clients, site: Site,
        http: aiohttp.ClientSession) -> None:
    """The node holding a BOSH session is killed: once it is declared dead
    (``dead_after``), bob sees alice go unavailable and a request relayed
    through node 1, sent before or after, gets terminate item-not-found."""
    await site.befriend(ALICE, BOB)
    c = await two_nodes(cluster)
    bob = await xmpp.login(c[1], "bob")
    bosh = await bosh_across(c, http)
    assert (await bosh.plain("alice")).find(f"{SASL}success") is not None
    await bosh.restart()
    jid = await bosh.bind("web")
    await bosh.send("<presence xmlns='jabber:client'/>")
    await bob.presences.get(lambda p: str(p["from"]) == jid and p["type"] != "unavailable")
    c[0].sigkill()
    await c[0].wait_exit()
    early = bosh.hold()                 # into the dead node's inbox
    assert c.dead_after is not None
    resp = await asyncio.wait_for(early, c.dead_after + TIMEOUT)
    assert resp.terminated("item-not-found"), resp
    await bob.presences.get(lambda p: str(p["from"]) == jid and p["type"] == "unavailable")
    resp = await bosh.send()            # after: the node is not registered
    assert resp.terminated("item-not-found"), resp


@pytest.mark.parametrize("sid", ["A" * 32 + ".no-such-node", "A" * 32 + ".x" * 60, "short.x"])
async def test_a_sid_naming_no_node_of_the_cluster_is_item_not_found(
        cluster: ClusterFactory, http: aiohttp.ClientSession, sid: str) -> None:
    """A sid whose node part names no registered node (or that no node made)
    is not relayed anywhere: item-not-found at once."""
    c = await two_nodes(cluster)
    bosh = Bosh(http, bosh_url(c[1]))
    bosh.sid = sid
    started = time.monotonic()
    resp = await bosh.send()
    assert resp.terminated("item-not-found"), resp
    assert time.monotonic() - started < TIMEOUT / 2
