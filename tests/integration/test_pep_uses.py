"""What modern clients build on PEP (XEP-0163) and entity caps (XEP-0115),
end to end with real slixmpp clients and their own plugins where slixmpp
has one: avatars (XEP-0084 and the vCard-based XEP-0153), bookmarks (XEP-0402
and XEP-0048 through XEP-0223), OMEMO's device lists and bundles (XEP-0384,
both the legacy ``eu.siacs.conversations.axolotl`` and the ``urn:xmpp:omemo:2``
layouts), nicknames (XEP-0172), and the last items a contact gets on login.

Interest in a node is what the client's caps say (``NODE+notify``); the
helpers of tests/pep_support.py bring a client's caps hash up to date before
its initial presence. Every "was not sent" is shown with a barrier (a chat
sent after the fact, arriving first), after a positive control proved that
the same path delivers what it should.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from typing import Any
from xml.etree import ElementTree

import pytest
import slixmpp
from slixmpp.plugins.xep_0048 import Bookmarks

from tests.conftest import DOMAIN, TIMEOUT, Running
from tests.pep_support import (
    AVATAR_DATA, AVATAR_META, BOOKMARKS, CLOSED_NODE, LEGACY_BOOKMARKS, LEGACY_OMEMO, NICK,
    OMEMO_2, PEP_PLUGINS, PRESENCE_REQUIRED, VCARD_UPDATE, Inbox, Omemo, announce,
    any_pep_event, barrier, check_omemo, collect, error_of, event_payload, interested,
    items_of, pep_event, publish, publish_options, result_items, shape,
)
from vinespy.jid import JID
from vinespy.storage import Contact

pytestmark = pytest.mark.integration

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
CAROL = f"carol@{DOMAIN}"

# An image's bytes: the server never looks inside.
AVATAR = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
AVATAR_ID = hashlib.sha1(AVATAR).hexdigest()       # XEP-0084: the item id is its SHA-1


# --- helpers -------------------------------------------------------------------------


class Person:
    """A logged-in client and everything it received, in order."""

    def __init__(self, c: slixmpp.ClientXMPP, inbox: Inbox) -> None:
        self.c = c
        self.inbox = inbox

    @property
    def jid(self) -> str:
        return str(self.c.boundjid.full)

    def plugin(self, name: str) -> Any:
        return self.c.plugin[name]

    async def disconnect(self) -> None:
        """Close the stream and wait until the server closed it too."""
        gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.c.add_event_handler("disconnected", lambda _: gone.done() or gone.set_result(None))
        self.c.disconnect()
        await asyncio.wait_for(gone, TIMEOUT)


async def login(srv: Running, local: str, resource: str = "one", *,
                plugins: tuple[str, ...] = (), notify: tuple[str, ...] = (),
                priority: int = 0) -> Person:
    """``local`` (created on first use) logged in as ``resource`` (initial
    presence of ``priority``) with
    ``plugins`` and ``NS+notify`` for each of ``notify`` in its caps, its
    inbox filled from before it connects; returns once the server handled
    its initial presence (a ping sent after it was answered)."""
    bare = f"{local}@{DOMAIN}"
    if await srv.storage.find_user(JID.parse(bare)) is None:
        await srv.user(local)
    c = srv.client(f"{bare}/{resource}", plugins=PEP_PLUGINS + plugins)
    c.auto_authorize = None          # the test answers subscription requests
    c.auto_subscribe = False
    inbox = Inbox(f"{bare}/{resource}")
    collect(c, inbox)
    started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    c.add_event_handler("session_start", lambda _: started.done() or started.set_result(None))
    c.add_event_handler("failed_auth", lambda _: started.done() or started.set_exception(
        AssertionError(f"auth failed for {bare}")))
    c.add_event_handler("disconnected", lambda _: started.done() or started.set_exception(
        AssertionError(f"{bare} disconnected")))
    c.connect("127.0.0.1", srv.port)
    await asyncio.wait_for(started, TIMEOUT)
    await interested(c, *notify)
    c.send_presence(ppriority=priority)
    await c.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)
    return Person(c, inbox)


async def befriend(srv: Running, a: str, b: str) -> None:
    """``a`` and ``b`` subscribed to each other ('both'), written straight into storage."""
    for owner, contact in ((a, b), (b, a)):
        user = await srv.storage.find_user(JID.parse(owner))
        if user is None:
            await srv.user(owner.split("@")[0])
            user = await srv.storage.find_user(JID.parse(owner))
        assert user is not None
        user.roster[JID.parse(contact)] = Contact(JID.parse(contact), subscription="both")
        user.roster_version += 1
        await srv.storage.save_user(user)


def avatar_metadata(msg: Any) -> dict[str, str]:
    info = event_payload(msg, AVATAR_META, AVATAR_META, "metadata").find(f"{{{AVATAR_META}}}info")
    assert info is not None, msg
    return dict(info.attrib)


def avatar_bytes(iq: Any) -> bytes:
    payload = result_items(iq).get(AVATAR_ID)
    assert payload is not None and payload.tag == f"{{{AVATAR_DATA}}}data", iq
    return base64.b64decode(payload.text or "")


async def publish_avatar(alice: Person) -> None:
    """XEP-0084 with slixmpp's plugin: the data, then the metadata."""
    await alice.plugin("xep_0084").publish_avatar(AVATAR, timeout=TIMEOUT)
    await alice.plugin("xep_0084").publish_avatar_metadata(
        {"id": AVATAR_ID, "type": "image/png", "bytes": len(AVATAR)}, timeout=TIMEOUT)


# --- 1. XEP-0084 User Avatar ----------------------------------------------------------


async def test_avatar_metadata_reaches_contacts_and_data_only_them(server: Running) -> None:
    """XEP-0084: a contact with metadata+notify gets the metadata notification
    (not the data: no data+notify) and fetches the data by id; a stranger with
    the same caps gets nothing and is refused the data (access model presence)."""
    await befriend(server, ALICE, BOB)
    alice = await login(server, "alice", plugins=("xep_0084",))
    bob = await login(server, "bob", plugins=("xep_0084",))
    carol = await login(server, "carol", plugins=("xep_0084",))  # bob's caps, no subscription
    await publish_avatar(alice)

    for who in (bob, alice):        # a contact, and the owner's own resource (XEP-0163 §4)
        note = await who.inbox.get(pep_event(ALICE, AVATAR_META, AVATAR_ID),
                                   what="the avatar metadata notification")
        assert str(note["to"]) == who.jid
        assert avatar_metadata(note) == {"id": AVATAR_ID, "type": "image/png",
                                         "bytes": str(len(AVATAR))}
    got = await bob.plugin("xep_0084").retrieve_avatar(ALICE, AVATAR_ID, timeout=TIMEOUT)
    assert avatar_bytes(got) == AVATAR
    # Filtered notifications (XEP-0163 'Notification Filtering'): nobody asked for the data node.
    early = await barrier(alice.c, bob.c, bob.inbox)
    assert not [m for m in early if any_pep_event(ALICE, AVATAR_DATA)(m)]

    assert await error_of(carol.plugin("xep_0084").retrieve_avatar(
        ALICE, AVATAR_ID, timeout=TIMEOUT)) == PRESENCE_REQUIRED
    assert await error_of(items_of(carol.c, ALICE, AVATAR_META)) == PRESENCE_REQUIRED
    early = await barrier(alice.c, carol.c, carol.inbox)
    assert not [m for m in early if str(m["from"]).startswith(ALICE) and m.name == "message"
                and m.xml.find("{http://jabber.org/protocol/pubsub#event}event") is not None]


# --- 2. XEP-0153 vCard-based avatars --------------------------------------------------


async def test_vcard_avatar_hash_in_presence_matches_the_photo(server: Running) -> None:
    """XEP-0153: alice stores a vCard with a PHOTO (xep_0054), her presence
    carries its SHA-1 in <x xmlns='vcard-temp:x:update'><photo/>, which bob
    gets unchanged; the vCard bob fetches holds a photo of that hash."""
    await befriend(server, ALICE, BOB)
    bob = await login(server, "bob", plugins=("xep_0054",))
    alice = await login(server, "alice", plugins=("xep_0054", "xep_0153"))
    await alice.plugin("xep_0153").set_avatar(avatar=AVATAR, mtype="image/png", timeout=TIMEOUT)

    def photo(p: Any) -> str | None:
        x = p.xml.find(f"{{{VCARD_UPDATE}}}x/{{{VCARD_UPDATE}}}photo")
        return None if x is None else (x.text or "")
    pres = await bob.inbox.get(lambda p: p.name == "presence" and p["from"].bare == ALICE
                               and bool(photo(p)), what="alice's presence with a photo hash")
    assert str(pres["from"]) == alice.jid
    assert photo(pres) == AVATAR_ID
    iq = await bob.plugin("xep_0054").get_vcard(ALICE, cached=False, timeout=TIMEOUT)
    binval = iq["vcard_temp"]["PHOTO"]["BINVAL"]
    assert iq["vcard_temp"]["PHOTO"]["TYPE"] == "image/png"
    assert hashlib.sha1(binval).hexdigest() == photo(pres)
    assert binval == AVATAR


# --- 3. XEP-0402 PEP Native Bookmarks -------------------------------------------------


def bookmark(name: str, nick: str, extensions: str = "") -> str:
    return (f"<conference xmlns='{BOOKMARKS}' name='{name}' autojoin='true'>"
            f"<nick>{nick}</nick>{extensions}</conference>")


def bookmark_options() -> Any:
    """XEP-0402: what Conversations, Gajim and Dino send with each bookmark."""
    return publish_options(persist_items="true", max_items="max",
                           send_last_published_item="never", access_model="whitelist")


COUNCIL = "council@conference.underhill.org"
ORCHARD = "orchard@conference.shakespeare.lit"
# XEP-0402: "Clients MUST preserve these (particularly preserving unknown elements)".
EXTENSIONS = ("<extensions><state xmlns='http://myclient.example/bookmark/state' "
              "minimized='true'/></extensions>")


async def test_native_bookmarks(server: Running) -> None:
    """XEP-0402: bookmarks published with publish-options (persist_items,
    max_items=max, whitelist) reach the other device of the owner, are all
    retrieved, are closed to a contact, and a retraction (notify='true')
    reaches the other device as <retract/>."""
    await befriend(server, ALICE, BOB)
    desktop = await login(server, "alice", "desktop", notify=(BOOKMARKS,))
    phone = await login(server, "alice", "phone", notify=(BOOKMARKS,))
    bob = await login(server, "bob", notify=(BOOKMARKS,))     # a contact, interested too
    await publish(desktop.c, BOOKMARKS, COUNCIL,
                  bookmark("Council of Oberon", "Puck", EXTENSIONS), bookmark_options())
    note = await phone.inbox.get(pep_event(ALICE, BOOKMARKS, COUNCIL),
                                 what="the bookmark notification")
    assert shape(event_payload(note, BOOKMARKS, BOOKMARKS, "conference")) == shape(
        ElementTree.fromstring(bookmark("Council of Oberon", "Puck", EXTENSIONS)))
    # The node exists now: the same options are met (XEP-0060 §7.1.5).
    await publish(phone.c, BOOKMARKS, ORCHARD, bookmark("Orchard", "Romeo"), bookmark_options())
    await desktop.inbox.get(pep_event(ALICE, BOOKMARKS, ORCHARD), what="the 2nd bookmark")

    got = result_items(await items_of(phone.c, ALICE, BOOKMARKS))
    assert sorted(got) == sorted([COUNCIL, ORCHARD])
    assert shape(got[ORCHARD]) == shape(ElementTree.fromstring(bookmark("Orchard", "Romeo")))

    assert await error_of(items_of(bob.c, ALICE, BOOKMARKS)) == CLOSED_NODE
    early = await barrier(desktop.c, bob.c, bob.inbox)
    assert not [m for m in early if any_pep_event(ALICE, BOOKMARKS)(m)]

    await desktop.plugin("xep_0060").retract(None, BOOKMARKS, ORCHARD, notify=True,
                                             timeout=TIMEOUT)
    await phone.inbox.get(pep_event(ALICE, BOOKMARKS, ORCHARD, kind="retract"),
                          what="the retraction")
    assert list(result_items(await items_of(phone.c, ALICE, BOOKMARKS))) == [COUNCIL]


# --- 4. XEP-0048 bookmarks through XEP-0223 -------------------------------------------


async def test_legacy_bookmarks_in_pep_survive_a_new_login(server: Running) -> None:
    """XEP-0048 / XEP-0223: slixmpp stores <storage xmlns='storage:bookmarks'/>
    as item 'current' with persist_items and whitelist; a fresh login reads it
    back whole, and a contact is refused."""
    await befriend(server, ALICE, BOB)
    alice = await login(server, "alice", plugins=("xep_0048",))
    marks = Bookmarks()
    marks.add_conference(COUNCIL, "Puck", name="Council of Oberon", autojoin=True)
    marks.add_conference(ORCHARD, "Romeo", name="Orchard", autojoin=False)
    await alice.plugin("xep_0048").set_bookmarks(marks, method="xep_0223", timeout=TIMEOUT)
    await alice.disconnect()

    again = await login(server, "alice", "two", plugins=("xep_0048",))
    iq = await again.plugin("xep_0048").get_bookmarks(method="xep_0223", timeout=TIMEOUT)
    got = result_items(iq)
    assert list(got) == ["current"]
    assert shape(got["current"]) == shape(marks.xml)

    bob = await login(server, "bob")
    assert await error_of(items_of(bob.c, ALICE, LEGACY_BOOKMARKS)) == CLOSED_NODE


# --- 5. XEP-0384 OMEMO: device lists and bundles -------------------------------------


@pytest.mark.parametrize("gen", [LEGACY_OMEMO, OMEMO_2], ids=lambda g: g.name)
async def test_omemo_devices_and_bundles_are_open(server: Running, gen: Omemo) -> None:
    """XEP-0384: two strangers each publish a device list ('current') and
    bundles with access_model open (publish-options) and fetch each other's;
    republishing with the same options succeeds; a contact with
    devices+notify gets the device list when it changes."""
    await befriend(server, ALICE, CAROL)
    alice = await login(server, "alice")
    bob = await login(server, "bob", notify=(gen.devices_node,))
    carol = await login(server, "carol", notify=(gen.devices_node,))
    await announce(alice.c, gen, 1001, 1002)
    await announce(bob.c, gen, 2001)
    await check_omemo(bob.c, ALICE, gen, 1001, 1002)
    await check_omemo(alice.c, BOB, gen, 2001)
    if gen is OMEMO_2:              # every device's bundle is kept: max_items max
        got = result_items(await items_of(bob.c, ALICE, gen.bundle_node(1001)))
        assert sorted(got) == ["1001", "1002"]

    first = await carol.inbox.get(pep_event(ALICE, gen.devices_node, "current"),
                                  what="alice's device list")
    assert shape(event_payload(first, gen.devices_node, gen.ns, gen.devices_tag)) == shape(
        ElementTree.fromstring(gen.device_list(1001, 1002)))
    await announce(alice.c, gen, 1001, 1002, 1003)              # a new device
    update = await carol.inbox.get(pep_event(ALICE, gen.devices_node, "current"),
                                   what="alice's new device list")
    assert shape(event_payload(update, gen.devices_node, gen.ns, gen.devices_tag)) == shape(
        ElementTree.fromstring(gen.device_list(1001, 1002, 1003)))
    await check_omemo(bob.c, ALICE, gen, 1001, 1002, 1003)
    # bob is no contact of alice's: open items, but no notifications
    early = await barrier(alice.c, bob.c, bob.inbox)
    assert not [m for m in early if any_pep_event(ALICE, gen.devices_node)(m)]


# --- 6. XEP-0172 User Nickname --------------------------------------------------------


async def test_nick_reaches_contacts(server: Running) -> None:
    """XEP-0172: a contact with nick+notify gets the nick alice publishes."""
    await befriend(server, ALICE, BOB)
    bob = await login(server, "bob", plugins=("xep_0172",))
    alice = await login(server, "alice", plugins=("xep_0172",))
    await alice.plugin("xep_0172").publish_nick("Ali", timeout=TIMEOUT)
    note = await bob.inbox.get(pep_event(ALICE, NICK), what="alice's nick")
    assert event_payload(note, NICK, NICK, "nick").text == "Ali"


async def test_nick_rides_in_subscription_requests(server: Running) -> None:
    """XEP-0172: a subscription request carrying <nick/> reaches its
    addressee with it (the server passes it through)."""
    alice = await login(server, "alice", plugins=("xep_0172",))
    carol = await login(server, "carol", plugins=("xep_0172",))
    carol.c.send_presence(pto=ALICE, ptype="subscribe", pnick="Caroline")
    req = await alice.inbox.get(lambda p: p.name == "presence" and p["type"] == "subscribe",
                                what="carol's subscription request")
    assert str(req["from"]) == CAROL
    assert req.xml.findtext(f"{{{NICK}}}nick") == "Caroline"


# --- 7. the last items, on login ------------------------------------------------------


async def test_last_items_reach_a_contact_logging_in(server: Running) -> None:
    """XEP-0163 ('When to Generate Notifications' item 2): a contact's
    resource that logs in with +notify in its
    caps gets the last item of each node it is interested in, even with the
    owner offline; a resource without nick+notify gets the avatar, not the nick."""
    await befriend(server, ALICE, BOB)
    alice = await login(server, "alice", plugins=("xep_0084", "xep_0172"))
    await alice.plugin("xep_0172").publish_nick("Ali", timeout=TIMEOUT)
    await publish_avatar(alice)
    await alice.plugin("xep_0172").publish_nick("Alice", timeout=TIMEOUT)    # the last one
    await alice.disconnect()

    bob = await login(server, "bob", plugins=("xep_0084", "xep_0172"))
    meta = await bob.inbox.get(pep_event(ALICE, AVATAR_META, AVATAR_ID),
                               what="the last avatar metadata")
    assert avatar_metadata(meta)["id"] == AVATAR_ID
    nick = await bob.inbox.get(pep_event(ALICE, NICK), what="the last nick")
    assert event_payload(nick, NICK, NICK, "nick").text == "Alice"

    other = await login(server, "bob", "other", plugins=("xep_0084",))
    await other.inbox.get(pep_event(ALICE, AVATAR_META, AVATAR_ID), what="the avatar metadata")
    early = await barrier(bob.c, other.c, other.inbox)
    assert not [m for m in early if any_pep_event(ALICE, NICK)(m)]


# --- 8. what clients check, and the edges they meet -------------------------------------


async def test_account_disco_shows_what_clients_check(server: Running) -> None:
    """The features clients look for on their account before using PEP
    (XEP-0163 §6.1): publish-options (Conversations, for OMEMO), and, as
    'max' is accepted for max_items, pubsub#config-node-max (XEP-0060's
    feature list; Gajim, Converse.js and Monal only send 'max' then)."""
    alice = await login(server, "alice")
    info = await alice.plugin("xep_0030").get_info(jid=ALICE, timeout=TIMEOUT)
    identities = {(i[0], i[1]) for i in info["disco_info"]["identities"]}
    features = set(info["disco_info"]["features"])
    assert ("pubsub", "pep") in identities
    assert "http://jabber.org/protocol/pubsub#publish-options" in features
    # OMEMO 2 bundles and XEP-0402 bookmarks ask for 'max': it must work...
    await publish(alice.c, OMEMO_2.bundle_node(1), "1", OMEMO_2.bundle(1),
                  OMEMO_2.bundle_options())
    # ...and then be advertised.
    assert "http://jabber.org/protocol/pubsub#config-node-max" in features


async def test_negative_priority_resources_get_no_pep_events(server: Running) -> None:
    """XEP-0163 ('Number of Notifications', 'When to Generate
    Notifications'): notifications and the last item go to the
    resources of non-negative priority only; the one at priority -1 gets
    neither (its sibling at 0, with the same caps, gets both)."""
    await befriend(server, ALICE, BOB)
    alice = await login(server, "alice", plugins=("xep_0172",))
    await alice.plugin("xep_0172").publish_nick("Ali", timeout=TIMEOUT)
    low = await login(server, "bob", "low", plugins=("xep_0172",), priority=-1)
    bob = await login(server, "bob", "normal", plugins=("xep_0172",))
    await bob.inbox.get(pep_event(ALICE, NICK), what="the last nick")
    await alice.plugin("xep_0172").publish_nick("Alice", timeout=TIMEOUT)
    await bob.inbox.get(pep_event(ALICE, NICK), what="the new nick")
    early = await barrier(alice.c, low.c, low.inbox)
    got = [event_payload(m, NICK, NICK, "nick").text for m in early if pep_event(ALICE, NICK)(m)]
    assert got == []


async def test_blocking_stops_pep_events_both_ways(server: Running) -> None:
    """XEP-0163 ('When to Generate Notifications' item 3) / XEP-0191: alice
    blocked bob: no notification reaches him (carol, also her contact, gets
    it); bob blocked alice: no last item from her reaches his new resource
    (carol's does)."""
    await befriend(server, ALICE, BOB)
    await befriend(server, ALICE, CAROL)
    await befriend(server, BOB, CAROL)
    alice = await login(server, "alice", plugins=("xep_0172", "xep_0191"))
    bob = await login(server, "bob", plugins=("xep_0172", "xep_0191"))
    carol = await login(server, "carol", plugins=("xep_0172",))
    await alice.plugin("xep_0191").block(BOB, timeout=TIMEOUT)
    await alice.plugin("xep_0172").publish_nick("Alice", timeout=TIMEOUT)
    await carol.inbox.get(pep_event(ALICE, NICK), what="alice's nick")
    early = await barrier(carol.c, bob.c, bob.inbox)
    assert not [m for m in early if any_pep_event(ALICE, NICK)(m)]

    await alice.plugin("xep_0191").unblock(BOB, timeout=TIMEOUT)
    await bob.plugin("xep_0191").block(ALICE, timeout=TIMEOUT)
    await carol.plugin("xep_0172").publish_nick("Carol", timeout=TIMEOUT)
    later = await login(server, "bob", "two", plugins=("xep_0172",))
    await later.inbox.get(pep_event(CAROL, NICK), what="carol's last nick")
    early = await barrier(carol.c, later.c, later.inbox)
    assert not [m for m in early if any_pep_event(ALICE, NICK)(m)]


async def test_a_cancelled_subscription_closes_presence_nodes(server: Running) -> None:
    """XEP-0060 §4.5 'presence': access is the subscription now, not at
    login: once alice cancels bob's subscription ('unsubscribed'), his
    request for her avatar is refused and her next metadata is not sent him."""
    await befriend(server, ALICE, BOB)
    alice = await login(server, "alice", plugins=("xep_0084",))
    bob = await login(server, "bob", plugins=("xep_0084",))
    await publish_avatar(alice)
    await bob.inbox.get(pep_event(ALICE, AVATAR_META, AVATAR_ID), what="the metadata")
    assert list(result_items(await items_of(bob.c, ALICE, AVATAR_DATA))) == [AVATAR_ID]
    gone = bob.inbox.get(lambda p: p.name == "presence" and p["type"] == "unsubscribed",
                         what="alice's 'unsubscribed'")
    alice.c.send_presence(pto=BOB, ptype="unsubscribed")
    await gone
    assert await error_of(items_of(bob.c, ALICE, AVATAR_DATA)) == PRESENCE_REQUIRED
    await alice.plugin("xep_0084").publish_avatar_metadata(
        {"id": "0" * 40, "type": "image/png", "bytes": 1}, timeout=TIMEOUT)
    await alice.inbox.get(pep_event(ALICE, AVATAR_META, "0" * 40), what="her own notification")
    early = await barrier(alice.c, bob.c, bob.inbox)
    assert not [m for m in early if pep_event(ALICE, AVATAR_META, "0" * 40)(m)]


async def test_omemo_device_list_reconfigured_after_precondition_not_met(
        server: Running) -> None:
    """XEP-0384 / XEP-0060 §7.1.5, as Conversations recovers: the device list
    was published by an old client (presence access); publishing it with
    access_model open is <conflict/> + <precondition-not-met/>; the client
    then configures the node open (§8.2, a form of that one field) and
    publishes again: a stranger reads it."""
    gen = LEGACY_OMEMO
    alice = await login(server, "alice")
    bob = await login(server, "bob")
    await publish(alice.c, gen.devices_node, "current", gen.device_list(1))
    assert await error_of(items_of(bob.c, ALICE, gen.devices_node)) == PRESENCE_REQUIRED
    refused = await error_of(publish(alice.c, gen.devices_node, "current",
                                     gen.device_list(1, 2), publish_options(access_model="open")))
    assert refused == ("cancel", "conflict", "precondition-not-met")
    form = publish_options(access_model="open")
    form.get_fields()["FORM_TYPE"]["value"] = "http://jabber.org/protocol/pubsub#node_config"
    await alice.plugin("xep_0060").set_node_config(None, gen.devices_node, form, timeout=TIMEOUT)
    await publish(alice.c, gen.devices_node, "current", gen.device_list(1, 2),
                  publish_options(access_model="open"))
    got = result_items(await items_of(bob.c, ALICE, gen.devices_node))
    assert shape(got["current"]) == shape(ElementTree.fromstring(gen.device_list(1, 2)))


async def test_bookmarks_are_not_sent_as_last_item(server: Running) -> None:
    """XEP-0402: bookmarks are published with send_last_published_item
    never; a new device with bookmarks+notify fetches them, it is not sent
    the last one at login (the nick, on_sub_and_presence, is)."""
    desktop = await login(server, "alice", "desktop", plugins=("xep_0172",))
    await publish(desktop.c, BOOKMARKS, COUNCIL, bookmark("Council", "Puck"), bookmark_options())
    await desktop.plugin("xep_0172").publish_nick("Alice", timeout=TIMEOUT)
    phone = await login(server, "alice", "phone", plugins=("xep_0172",), notify=(BOOKMARKS,))
    await phone.inbox.get(pep_event(ALICE, NICK), what="her last nick")
    early = await barrier(desktop.c, phone.c, phone.inbox)
    assert not [m for m in early if any_pep_event(ALICE, BOOKMARKS)(m)]
