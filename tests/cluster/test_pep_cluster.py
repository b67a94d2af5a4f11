"""XEP-0163 PEP on a cluster, end to end: real redis-server, two real
``vinespy start`` processes, real slixmpp clients (xep_0060, xep_0115).

An account's PEP nodes are in the shared pubsub store (Redis, or the SQL
database), so either node serves them; a publication on one node reaches the
interested resources of contacts on the other (their caps learnt there, read
through the routing entry), and a contact logging in on the other node gets
the last item. That a notification was not sent is shown with a barrier: a
chat sent after the publication was answered arrives first.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from tests.cluster.conftest import Client, Clients, ClusterFactory, Inbox, Node, Site
from tests.conftest import DOMAIN, TIMEOUT

pytestmark = [pytest.mark.integration, pytest.mark.redis]

NS = "http://jabber.org/protocol/pubsub"
NS_EVENT = f"{NS}#event"
EX = "urn:example:pep"
EX2 = "urn:example:pep:other"


async def login(xmpp: Clients, node: Node, who: str, *interests: str,
                resource: str = "r1") -> tuple[Client, Inbox]:
    """Log ``who`` in on ``node`` with ``NS+notify`` for ``interests`` in its
    caps; every message it receives (chats and pubsub events) in one Inbox."""
    jid = f"{who}@{DOMAIN}/{resource}"
    c = xmpp.make(jid)
    for plugin in ("xep_0004", "xep_0060", "xep_0115"):
        c.register_plugin(plugin)
    inbox = Inbox(f"{jid} messages")
    c.register_handler(Callback(f"all messages of {jid}",
                                MatchXPath(f"{{{c.default_ns}}}message"), inbox.put))
    started = asyncio.get_running_loop().create_future()
    c.add_event_handler("session_start", lambda _: started.done() or started.set_result(1))
    client = Client(c, node)
    xmpp.all.append(client)
    c.connect(node.address, node.port)
    await asyncio.wait_for(started, TIMEOUT)
    for ns in interests:
        await c.plugin["xep_0030"].add_feature(f"{ns}+notify")
    await c.plugin["xep_0115"].update_caps(broadcast=False)
    client.presence()
    await client.ping()
    await node.cluster.wait_route(client.jid, match=lambda e: bool(e.get("available")))
    return client, inbox


def event(node: str, text: str | None = None) -> Any:
    def match(msg: Any) -> bool:
        items = msg.xml.find(f"{{{NS_EVENT}}}event/{{{NS_EVENT}}}items")
        if items is None or items.get("node") != node:
            return False
        return text is None or msg.xml.findtext(f".//{{{EX}}}entry") == text \
            or msg.xml.findtext(f".//{{{EX2}}}entry") == text
    return match


def is_event(msg: Any) -> bool:
    return msg.xml.find(f"{{{NS_EVENT}}}event") is not None


def publish(c: Client, node: str, text: str) -> Any:
    ns = EX2 if node == EX2 else EX
    return c.xmpp.plugin["xep_0060"].publish(
        c.bare, node, payload=ET.fromstring(f"<entry xmlns='{ns}'>{text}</entry>"),
        timeout=TIMEOUT)


async def barrier(sender: Client, inbox: Inbox, to: Client) -> None:
    """The chat ``sender`` sends now is the first message ``to`` gets: no
    pubsub event routed before it is on its way."""
    sender.say(to.jid, "barrier")
    first = await inbox.get(lambda m: is_event(m) or m["body"] == "barrier")
    assert first["body"] == "barrier" and not is_event(first), first


async def test_notifications_and_last_item_across_nodes(
        cluster: ClusterFactory, xmpp: Clients, site: Site) -> None:
    """alice (node 0) publishes; bob (node 1, both, +notify) gets the last
    item at login and then her next publication, from her bare JID; carol
    (node 1, both, +notify for another node only) does not; the items read
    through either node are the same."""
    c = await cluster(2)
    a, b = c[0], c[1]
    alice_jid, bob_jid, carol_jid = (f"{w}@{DOMAIN}" for w in ("alice", "bob", "carol"))
    await site.befriend(alice_jid, bob_jid)
    await site.befriend(alice_jid, carol_jid)
    alice, _ = await login(xmpp, a, "alice")
    await publish(alice, EX, "first")
    await publish(alice, EX2, "other")

    bob, bob_in = await login(xmpp, b, "bob", EX)
    last = await bob_in.get(event(EX, "first"))
    assert str(last["from"]) == alice_jid and last["type"] == "headline"
    assert last.xml.find("{urn:xmpp:delay}delay") is not None
    carol, carol_in = await login(xmpp, b, "carol", EX2)
    await carol_in.get(event(EX2, "other"))           # her caps are known on node 1

    await publish(alice, EX, "second")
    msg = await bob_in.get(event(EX, "second"))
    assert str(msg["from"]) == alice_jid and str(msg["to"]) == bob.jid
    await barrier(alice, carol_in, carol)
    assert not carol_in.matching(event(EX))

    for who in (alice, bob):                        # node 0 and node 1
        res = await who.xmpp.plugin["xep_0060"].get_items(alice_jid, EX, timeout=TIMEOUT)
        assert [e.text for e in res.xml.iter(f"{{{EX}}}entry")] == ["second"]


async def test_the_owners_resource_on_another_node(
        cluster: ClusterFactory, xmpp: Clients) -> None:
    """alice publishes on node 0; her resource on node 1 that asks for the
    node gets the publication."""
    c = await cluster(2)
    one, _ = await login(xmpp, c[0], "alice")
    await publish(one, EX, "before")
    _, inbox = await login(xmpp, c[1], "alice", EX, resource="r2")
    await inbox.get(event(EX, "before"))
    await publish(one, EX, "after")
    await inbox.get(event(EX, "after"))
