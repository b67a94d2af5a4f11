"""XEP-0114 components in a cluster: a component connected to one node is
reached from every node, through the routing table like a resource."""

from __future__ import annotations

import asyncio

import pytest
from slixmpp.exceptions import IqError

from tests.cluster.conftest import Clients, ClusterFactory, body
from tests.conftest import DOMAIN, TIMEOUT
from tests.integration.test_components import SECRET, Component
from vinespy.stream.component import ROUTE_RESOURCE

pytestmark = [pytest.mark.integration, pytest.mark.redis]

TEA = f"tea.{DOMAIN}"
ROUTE = f"{TEA}/{ROUTE_RESOURCE}"


async def _setup(cluster: ClusterFactory, **kw: object) -> object:
    return await cluster(2, host={"components": {"tea": SECRET}}, component={}, **kw)


async def test_component_on_a_serves_users_on_b(cluster: ClusterFactory, xmpp: Clients) -> None:
    """A component on node A answers an IQ from a user on node B, its messages
    reach a user on B, and a second connection for it on B is a <conflict/>."""
    c = await _setup(cluster)
    a, b = c[0], c[1]
    tea = await Component(a.component_port, address=a.address).connect()
    try:
        await c.wait_route(ROUTE, match=lambda e: e["node"] == a.name)
        alice = await xmpp.login(b, "alice")
        alice.xmpp.register_plugin("xep_0092")
        got = await alice.xmpp.plugin["xep_0092"].get_version(TEA, timeout=TIMEOUT)
        assert got["software_version"]["name"] == "teapot"
        tea.xmpp.send_message(mto=alice.bare, mfrom=f"kettle@{TEA}", mbody="boiling")
        msg = await alice.messages.get(body("boiling"))
        assert str(msg["from"]) == f"kettle@{TEA}"
        assert await Component(b.component_port, address=b.address).refused() == "conflict"
    finally:
        tea.close()


async def test_component_leaving_a_bounces_on_b(cluster: ClusterFactory,
                                                xmpp: Clients) -> None:
    """Once the component left node A, a user on node B gets <service-unavailable/>
    for IQs and messages to it; it may then connect to B instead."""
    c = await _setup(cluster)
    a, b = c[0], c[1]
    tea = await Component(a.component_port, address=a.address).connect()
    await c.wait_route(ROUTE)
    alice = await xmpp.login(b, "alice")
    alice.xmpp.register_plugin("xep_0092")
    await alice.xmpp.plugin["xep_0092"].get_version(TEA, timeout=TIMEOUT)
    tea.xmpp.disconnect()
    await asyncio.wait_for(tea.gone, TIMEOUT)
    with pytest.raises(IqError) as err:
        await alice.xmpp.plugin["xep_0092"].get_version(TEA, timeout=TIMEOUT)
    assert err.value.iq["error"]["condition"] == "service-unavailable"
    alice.say(f"kettle@{TEA}", "anyone?")
    bounced = await alice.errors.get()
    assert bounced["error"]["condition"] == "service-unavailable"
    await c.wait_no_route(ROUTE)
    again = await Component(b.component_port, address=b.address).connect()
    try:
        got = await alice.xmpp.plugin["xep_0092"].get_version(TEA, timeout=TIMEOUT)
        assert got["software_version"]["name"] == "teapot"
    finally:
        again.close()


async def test_node_death_bounces_what_was_in_flight(cluster: ClusterFactory,
                                                     xmpp: Clients) -> None:
    """Node A, holding the component, is killed: what a user on node B sent it
    meanwhile (an IQ, a message) is answered <service-unavailable/> once A is
    declared dead, not lost, and the component can connect to B."""
    c = await _setup(cluster)
    a, b = c[0], c[1]
    tea = await Component(a.component_port, address=a.address).connect()
    await c.wait_route(ROUTE)
    alice = await xmpp.login(b, "alice")
    alice.xmpp.register_plugin("xep_0092")
    await alice.xmpp.plugin["xep_0092"].get_version(TEA, timeout=TIMEOUT)
    a.sigkill()
    await a.wait_exit()
    tea.close()
    alice.say(f"kettle@{TEA}", "still there?")       # in flight to A's inbox too
    with pytest.raises(IqError) as err:
        await alice.xmpp.plugin["xep_0092"].get_version(TEA, timeout=TIMEOUT)
    assert err.value.iq["error"]["condition"] == "service-unavailable"
    bounced = await alice.errors.get()
    assert (bounced["error"]["condition"], str(bounced["from"])) == \
        ("service-unavailable", f"kettle@{TEA}")
    await c.wait_no_route(ROUTE)
    again = await Component(b.component_port, address=b.address).connect()
    try:
        got = await alice.xmpp.plugin["xep_0092"].get_version(TEA, timeout=TIMEOUT)
        assert got["software_version"]["name"] == "teapot"
    finally:
        again.close()
