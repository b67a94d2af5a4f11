"""What clients build on PEP (XEP-0163), on a cluster: real redis-server,
real ``vinespy start`` nodes sharing fs storage, real slixmpp clients with
their caps (XEP-0115) carrying the ``+notify`` interests.

A user's PEP nodes are one service whichever node the owner, a contact or a
stranger is connected to: what one node stores another serves, and a
notification (live, or the last item on login) reaches a resource on
another node through the router. The same stanzas as the standalone suite
(tests/integration/test_pep_uses.py), from tests/pep_support.py.
"""

from __future__ import annotations

import hashlib
from typing import Any
from xml.etree import ElementTree

import pytest
import slixmpp

from tests.cluster.conftest import Client, Clients, ClusterFactory, Node, Site
from tests.conftest import DOMAIN, TIMEOUT
from tests.pep_support import (
    AVATAR_META, BOOKMARKS, CLOSED_NODE, LEGACY_OMEMO, NICK, OMEMO_2, PEP_PLUGINS,
    PRESENCE_REQUIRED, Inbox, Omemo, announce, any_pep_event, barrier, check_omemo, collect,
    error_of, event_payload, interested, items_of, pep_event, publish, publish_options,
    result_items, shape,
)

pytestmark = [pytest.mark.integration, pytest.mark.redis]

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
CAROL = f"carol@{DOMAIN}"

AVATAR = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
AVATAR_ID = hashlib.sha1(AVATAR).hexdigest()


async def login(xmpp: Clients, node: Node, who: str, *, plugins: tuple[str, ...] = (),
                notify: tuple[str, ...] = ()) -> tuple[Client, Inbox]:
    """``who`` logged in to ``node`` with the PEP plugins and ``plugins``,
    ``NS+notify`` for each of ``notify`` in its caps, everything it receives
    collected from before it connects; returns once Redis shows it available."""
    inbox = Inbox(f"{who} on {node.name}")
    make = xmpp.make

    def pep_client(jid: str) -> slixmpp.ClientXMPP:
        c = make(jid)
        for p in PEP_PLUGINS + plugins:
            c.register_plugin(p)
        collect(c, inbox)
        return c
    setattr(xmpp, "make", pep_client)
    try:
        client = await xmpp.login(node, who, presence=False, wait_route=False)
    finally:
        delattr(xmpp, "make")
    await interested(client.xmpp, *notify)
    client.presence()
    await client.ping()
    await node.cluster.wait_route(client.jid, match=lambda e: bool(e.get("available")))
    return client, inbox


def avatar_id(msg: Any) -> str | None:
    info = event_payload(msg, AVATAR_META, AVATAR_META, "metadata").find(f"{{{AVATAR_META}}}info")
    return None if info is None else info.get("id")


@pytest.mark.parametrize("gen", [LEGACY_OMEMO, OMEMO_2], ids=lambda g: g.name)
async def test_omemo_across_nodes(cluster: ClusterFactory, xmpp: Clients, site: Site,
                                  gen: Omemo) -> None:
    """XEP-0384 on two nodes: strangers on different nodes fetch each other's
    open device list and bundles; alice's contact on the other node gets her
    device list when a device is added."""
    await site.befriend(ALICE, CAROL)
    c = await cluster(2)
    alice, _ = await login(xmpp, c[0], "alice/phone")
    bob, bob_inbox = await login(xmpp, c[1], "bob/laptop", notify=(gen.devices_node,))
    carol, carol_inbox = await login(xmpp, c[1], "carol/pc", notify=(gen.devices_node,))
    await announce(alice.xmpp, gen, 1001)
    await announce(bob.xmpp, gen, 2001, 2002)
    await check_omemo(bob.xmpp, ALICE, gen, 1001)
    await check_omemo(alice.xmpp, BOB, gen, 2001, 2002)
    await carol_inbox.get(pep_event(ALICE, gen.devices_node, "current"),
                          what="alice's device list")
    await announce(alice.xmpp, gen, 1001, 1002)
    note = await carol_inbox.get(pep_event(ALICE, gen.devices_node, "current"),
                                 what="alice's new device list")
    assert shape(event_payload(note, gen.devices_node, gen.ns, gen.devices_tag)) == shape(
        ElementTree.fromstring(gen.device_list(1001, 1002)))
    await check_omemo(carol.xmpp, ALICE, gen, 1001, 1002)
    early = await barrier(alice.xmpp, bob.xmpp, bob_inbox)     # bob: no contact of alice's
    assert not [m for m in early if any_pep_event(ALICE, gen.devices_node)(m)]


async def test_avatar_and_nick_across_nodes_live_and_on_login(
        cluster: ClusterFactory, xmpp: Clients, site: Site) -> None:
    """XEP-0084/0172 on two nodes: bob (node 1) gets alice's (node 0) avatar
    metadata live and fetches the data; carol, a stranger, is refused it;
    once alice is gone, bob's new resource on node 1 gets the last
    metadata and nick on login (XEP-0163 'Sending the Last Published Item')."""
    await site.befriend(ALICE, BOB)
    c = await cluster(2)
    alice, _ = await login(xmpp, c[0], "alice/one", plugins=("xep_0084", "xep_0172"))
    bob, bob_inbox = await login(xmpp, c[1], "bob/one", plugins=("xep_0084",))
    carol, _ = await login(xmpp, c[1], "carol/one", plugins=("xep_0084",))
    await alice.xmpp.plugin["xep_0084"].publish_avatar(AVATAR, timeout=TIMEOUT)
    await alice.xmpp.plugin["xep_0084"].publish_avatar_metadata(
        {"id": AVATAR_ID, "type": "image/png", "bytes": len(AVATAR)}, timeout=TIMEOUT)
    await alice.xmpp.plugin["xep_0172"].publish_nick("Alice", timeout=TIMEOUT)
    live = await bob_inbox.get(pep_event(ALICE, AVATAR_META, AVATAR_ID), what="the metadata")
    assert avatar_id(live) == AVATAR_ID
    got = await bob.xmpp.plugin["xep_0084"].retrieve_avatar(ALICE, AVATAR_ID, timeout=TIMEOUT)
    assert list(result_items(got)) == [AVATAR_ID]
    assert await error_of(carol.xmpp.plugin["xep_0084"].retrieve_avatar(
        ALICE, AVATAR_ID, timeout=TIMEOUT)) == PRESENCE_REQUIRED
    await alice.disconnect()

    _, later = await login(xmpp, c[1], "bob/two", plugins=("xep_0084", "xep_0172"))
    meta = await later.get(pep_event(ALICE, AVATAR_META, AVATAR_ID), what="the last metadata")
    assert avatar_id(meta) == AVATAR_ID
    nick = await later.get(pep_event(ALICE, NICK), what="the last nick")
    assert event_payload(nick, NICK, NICK, "nick").text == "Alice"


async def test_bookmarks_between_devices_on_two_nodes(
        cluster: ClusterFactory, xmpp: Clients, site: Site) -> None:
    """XEP-0402 on two nodes: a bookmark published from alice's desktop
    (node 0) reaches her phone (node 1), a retraction too; the items are
    whitelisted: bob, her contact, is refused them."""
    await site.befriend(ALICE, BOB)
    c = await cluster(2)
    desktop, _ = await login(xmpp, c[0], "alice/desktop", notify=(BOOKMARKS,))
    phone, phone_inbox = await login(xmpp, c[1], "alice/phone", notify=(BOOKMARKS,))
    bob, _ = await login(xmpp, c[1], "bob/one", notify=(BOOKMARKS,))
    room = "council@conference.underhill.org"
    conference = (f"<conference xmlns='{BOOKMARKS}' name='Council' autojoin='true'>"
                  "<nick>Puck</nick></conference>")
    options = publish_options(persist_items="true", max_items="max",
                              send_last_published_item="never", access_model="whitelist")
    await publish(desktop.xmpp, BOOKMARKS, room, conference, options)
    note = await phone_inbox.get(pep_event(ALICE, BOOKMARKS, room), what="the bookmark")
    assert shape(event_payload(note, BOOKMARKS, BOOKMARKS, "conference")) == shape(
        ElementTree.fromstring(conference))
    assert list(result_items(await items_of(phone.xmpp, ALICE, BOOKMARKS))) == [room]
    assert await error_of(items_of(bob.xmpp, ALICE, BOOKMARKS)) == CLOSED_NODE
    await desktop.xmpp.plugin["xep_0060"].retract(None, BOOKMARKS, room, notify=True,
                                                  timeout=TIMEOUT)
    await phone_inbox.get(pep_event(ALICE, BOOKMARKS, room, kind="retract"),
                          what="the retraction")
