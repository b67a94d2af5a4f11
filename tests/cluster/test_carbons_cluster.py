"""XEP-0280 Message Carbons across two cluster nodes: alice/phone and bob on
node 0, alice/laptop on node 1. The copies made where a message is routed
reach the laptop through its proxy, which knows from the routing entry
that carbons are on."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from tests.cluster.conftest import Client, Clients, ClusterFactory, Inbox, body
from tests.cluster.test_cluster import retried
from tests.conftest import DOMAIN, TIMEOUT
from vinespy.modules.carbons import CARBONS

pytestmark = [pytest.mark.integration, pytest.mark.redis]

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"


def with_carbons(c: Client) -> Client:
    """Collect ``c``'s carbons in ``c.carbons``: ("sent"/"received", forwarded message)."""
    c.xmpp.register_plugin("xep_0280")
    inbox = Inbox(f"{c.jid} carbons")
    for kind in ("sent", "received"):
        c.xmpp.add_event_handler(f"carbon_{kind}", lambda m, k=kind: inbox.put(
            (k, m[f"carbon_{k}"], str(m["from"]))))
    c.carbons = inbox           # type: ignore[attr-defined]
    return c


def carbon(kind: str, text: str) -> Callable[[Any], bool]:
    return lambda item: item[0] == kind and item[1]["body"] == text and item[2] == ALICE


async def copied(sender: Client, to: str, receiver: Client, kind: str, tag: str,
                 timeout: float = 20.0, every: float = 1.0) -> Any:
    """Send ``tag-N`` from ``sender`` to ``to`` until ``receiver`` gets a
    ``kind`` carbon of one (the routing node may use its cached view of
    alice's resources for a moment after ``receiver`` enabled carbons); the
    first such carbon."""
    return await retried(
        sender, to, tag, receiver.carbons,     # type: ignore[attr-defined]
        lambda item: item[0] == kind and str(item[1]["body"]).startswith(f"{tag}-"),
        timeout, every, f"{tag}: no {kind} carbon for {receiver}")


async def test_carbons_reach_a_resource_on_another_node(cluster: ClusterFactory,
                                                        xmpp: Clients) -> None:
    c = await cluster(2)
    phone = with_carbons(await xmpp.login(c[0], "alice/phone", priority=5))
    laptop = with_carbons(await xmpp.login(c[1], "alice/laptop"))
    bob = await xmpp.login(c[0], "bob/desk")
    await laptop.xmpp.plugin["xep_0280"].enable(timeout=TIMEOUT)
    entry = await c.wait_route(f"{ALICE}/laptop",
                               match=lambda e: e.get("fields", {}).get("carbons.enabled"))
    assert entry["fields"]["carbons.enabled"] is True and entry["node"] == c[1].name
    assert "carbons.enabled" not in (await c.routes(ALICE))["phone"].get("fields", {})

    # Received, to the phone's full JID, then to alice's bare JID (the phone
    # has the higher priority): each is copied to the laptop on node 1.
    kind, first, frm = await copied(bob, f"{ALICE}/phone", laptop, "received", "full")
    assert (kind, str(first["from"]), str(first["to"]), frm) == (
        "received", bob.jid, phone.jid, ALICE)
    await phone.messages.get(body(str(first["body"])))
    bob.say(ALICE, "to bare")
    await laptop.carbons.get(carbon("received", "to bare"))    # type: ignore[attr-defined]
    await phone.messages.get(body("to bare"))

    # Sent: what the phone (node 0) sends to bob.
    phone.say(bob.jid, "from phone")
    _, sent, _ = await laptop.carbons.get(carbon("sent", "from phone"))  # type: ignore
    assert (str(sent["from"]), str(sent["to"])) == (phone.jid, bob.jid)
    await bob.messages.get(body("from phone"))

    # The laptop sends (node 1): the phone has carbons off, so no copy; the
    # laptop itself never gets one of its own messages. bob's probe then is
    # the laptop's next carbon.
    laptop.say(bob.jid, "from laptop")
    await bob.messages.get(body("from laptop"))
    bob.say(f"{ALICE}/phone", "probe")
    await laptop.carbons.get(carbon("received", "probe"))       # type: ignore[attr-defined]
    assert [k for k, m, _ in laptop.carbons.items  # type: ignore[attr-defined]
            if m["body"] == "from laptop"] == []

    # The phone turns carbons on; what the laptop sends now is copied to it,
    # from node 1 to node 0. <private/> is not.
    await phone.xmpp.plugin["xep_0280"].enable(timeout=TIMEOUT)
    await c.wait_route(f"{ALICE}/phone",
                       match=lambda e: e.get("fields", {}).get("carbons.enabled"))
    got = await copied(laptop, bob.jid, phone, "sent", "laptop")
    assert str(got[1]["from"]) == laptop.jid
    msg = laptop.xmpp.make_message(mto=bob.jid, mbody="secret", mtype="chat")
    msg.enable("carbon_private")
    msg.send()
    m = await bob.messages.get(body("secret"))
    assert m.xml.find(f"{{{CARBONS}}}private") is None
    laptop.say(bob.jid, "after secret")
    await phone.carbons.get(carbon("sent", "after secret"))      # type: ignore[attr-defined]
    assert not phone.carbons.matching(carbon("sent", "secret"))  # type: ignore[attr-defined]
