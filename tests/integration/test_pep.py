"""XEP-0163 Personal Eventing Protocol end to end: real slixmpp clients
(xep_0060, xep_0163, xep_0115, xep_0030) against a real standalone server
with fs storage; the account's bare JID is the pubsub service.

Interest (``NODE+notify``) is advertised through XEP-0115 caps, which the
server verifies with a disco#info query before it trusts them (the caps
module). That a client's caps are known is shown by what it receives at
login: the last item of a node it asks for. That a notification was *not*
sent is shown with a barrier (tests/integration/test_pubsub.py): the
publisher's answer comes after the notifications were routed, and a chat
sent afterwards to the client arrives before anything routed later.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import slixmpp

from tests.conftest import DOMAIN, PASSWORD, TIMEOUT, Running
from tests.integration.test_pubsub import EX, entry, error_of, first, first_of, got, submit
from vinespy.jid import JID
from vinespy.rules.pubsub import DATA, NS, NS_EVENT, NS_OWNER
from vinespy.storage import Contact

pytestmark = pytest.mark.integration

PLUGINS = ("xep_0060", "xep_0163", "xep_0115", "xep_0030")
EX2 = "urn:example:other"
DISCO_INFO = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
PUBLISH_OPTIONS = f"{NS}#publish-options"


async def connect(srv: Running, jid: str, interests: tuple[str, ...]) -> slixmpp.ClientXMPP:
    """Bind ``jid`` with ``NODE+notify`` for each of ``interests`` in its
    disco#info and XEP-0115 caps; no presence sent yet."""
    c = srv.client(jid, PASSWORD, plugins=PLUGINS)
    started = asyncio.get_running_loop().create_future()
    c.add_event_handler("session_start", lambda _: started.done() or started.set_result(1))
    c.add_event_handler("disconnected", lambda _: started.done() or started.set_exception(
        AssertionError(f"{jid} disconnected")))
    c.connect("127.0.0.1", srv.port)
    await asyncio.wait_for(started, TIMEOUT)
    for ns in interests:
        await c.plugin["xep_0030"].add_feature(f"{ns}+notify")
    await c.plugin["xep_0115"].update_caps(broadcast=False)
    return c


async def login(srv: Running, jid: str, *interests: str,
                resource: str | None = None) -> slixmpp.ClientXMPP:
    """Log ``jid`` in (:func:`connect`), send initial presence with the
    caps, and wait until the server handled it (a ping after it)."""
    c = await connect(srv, f"{jid}/{resource}" if resource else jid, interests)
    c.send_presence()
    await c.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)
    return c


async def befriend(srv: Running, a: str, b: str, ab: str = "both", ba: str = "both") -> None:
    """``a``'s roster has ``b`` with subscription ``ab`` and ``b``'s has ``a``
    with ``ba``, written straight into storage."""
    for owner, contact, sub in ((a, b, ab), (b, a, ba)):
        user = await srv.storage.find_user(JID.parse(owner))
        assert user is not None
        user.roster[JID.parse(contact)] = Contact(JID.parse(contact), subscription=sub)
        await srv.storage.save_user(user)


def ps(c: slixmpp.ClientXMPP) -> Any:
    return c.plugin["xep_0060"]


def publish(c: slixmpp.ClientXMPP, node: str, text: str, id: str | None = None,
            options: Any = None) -> Any:
    """Publish ``<entry>text</entry>`` to ``node`` of the client's own account."""
    return ps(c).publish(c.boundjid.bare, node, id=id, payload=entry(text), options=options,
                         timeout=TIMEOUT)


def notification(msg: Any) -> tuple[str, str, str | None, str | None]:
    """(from, type, node, payload text) of a PEP notification."""
    items = msg.xml.find(f"{{{NS_EVENT}}}event/{{{NS_EVENT}}}items")
    assert items is not None, msg
    item = items.find(f"{{{NS_EVENT}}}item")
    text = item.findtext(f".//{{{EX}}}entry") if item is not None else None
    if text is None and item is not None:
        text = item.findtext(f".//{{{EX2}}}entry")
    return str(msg["from"]), str(msg["type"]), items.get("node"), text


def is_event(msg: Any) -> bool:
    return msg.xml.find(f"{{{NS_EVENT}}}event") is not None


async def barrier(sender: slixmpp.ClientXMPP, to: slixmpp.ClientXMPP) -> None:
    """Nothing but the chat ``sender`` sends now reaches ``to`` first: no
    notification routed before it is on its way to ``to``."""
    pending = first_of(to, *KINDS)
    sender.send_message(mto=to.boundjid.full, mbody="barrier", mtype="chat")
    _, msg = await first(pending)
    assert msg["body"] == "barrier" and not is_event(msg), msg


# slixmpp fires pubsub_* (not "message") for a message carrying a pubsub event.
KINDS = ("message", "pubsub_publish", "pubsub_retract")


def events(c: slixmpp.ClientXMPP) -> asyncio.Future[tuple[str, Any]]:
    return first_of(c, *KINDS, match=is_event)


async def login_seeing(srv: Running, jid: str, node: str, text: str,
                       *interests: str) -> slixmpp.ClientXMPP:
    """Log in as :func:`login` and wait for the last item ``text`` of ``node``
    it is sent at login: its caps are known to the server then."""
    c = await connect(srv, jid, interests)
    last = first_of(c, *KINDS, match=lambda m: is_event(m) and notification(m)[2] == node)
    c.send_presence()
    msg = await got(last)
    assert notification(msg)[3] == text, msg
    delay = msg.xml.find("{urn:xmpp:delay}delay")
    assert delay is not None and delay.get("from") == str(msg["from"])
    assert delay.get("stamp", "").endswith("Z")
    return c


# --- publishing and notifications ---------------------------------------------------


async def test_publish_auto_creates_the_node_with_pep_defaults(server: Running) -> None:
    """A publish to a missing node creates it (XEP-0163 §3) with access model
    presence, max_items 1, send_last_published_item on_sub_and_presence."""
    alice = await login(server, await server.user("alice"))
    await publish(alice, EX, "one", id="1")
    await publish(alice, EX, "two", id="2")
    res = await ps(alice).get_node_config(alice.boundjid.bare, EX, timeout=TIMEOUT)
    x = res.xml.find(f"{{{NS_OWNER}}}pubsub/{{{NS_OWNER}}}configure/{{{DATA}}}x")
    config = {f.get("var"): f.findtext(f"{{{DATA}}}value") for f in x.findall(f"{{{DATA}}}field")}
    assert config["pubsub#access_model"] == "presence"
    assert config["pubsub#max_items"] == "1"
    assert config["pubsub#persist_items"] == "1"
    assert config["pubsub#send_last_published_item"] == "on_sub_and_presence"
    items = await ps(alice).get_items(alice.boundjid.bare, EX, timeout=TIMEOUT)
    got_ids = [i.get("id") for i in items.xml.iterfind(f".//{{{NS}}}item")]
    assert got_ids == ["2"]                     # max_items 1: the newest only


async def test_only_the_owner_publishes(server: Running) -> None:
    """Another user publishing to (and so auto-creating on) an account: <forbidden/>."""
    alice_jid = await server.user("alice")
    bob = await login(server, await server.user("bob"))
    await befriend(server, alice_jid, "bob@" + DOMAIN)
    err = await error_of(ps(bob).publish(alice_jid, EX, payload=entry("x"), timeout=TIMEOUT))
    assert err.condition == "forbidden"


async def test_notifications_follow_presence_and_interest(server: Running) -> None:
    """bob (both, +notify) gets alice's publication as a headline from her
    bare JID to his full JID; carol (both, no +notify for the node) and dave
    (+notify, no subscription) do not, though their caps are known."""
    alice_jid = await server.user("alice")
    for who in ("bob", "carol", "dave"):
        await server.user(who)
    bob_jid, carol_jid, dave_jid = (f"{w}@{DOMAIN}" for w in ("bob", "carol", "dave"))
    await befriend(server, alice_jid, bob_jid)
    await befriend(server, alice_jid, carol_jid)
    alice = await login(server, alice_jid)
    await publish(alice, EX, "first")
    await publish(alice, EX2, "other")
    dave = await login(server, dave_jid)
    await publish(dave, EX, "dave's own")
    dave.disconnect()
    # Their caps are known once each got a last item at login.
    bob = await login_seeing(server, bob_jid, EX, "first", EX)
    carol = await login_seeing(server, carol_jid, EX2, "other", EX2)
    dave = await login_seeing(server, dave_jid, EX, "dave's own", EX)
    to_bob, to_carol, to_dave = events(bob), events(carol), events(dave)
    await publish(alice, EX, "second")
    msg = await got(to_bob)
    assert notification(msg) == (alice_jid, "headline", EX, "second")
    assert str(msg["to"]) == bob.boundjid.full
    for c in (carol, dave):
        await barrier(alice, c)
    assert not to_carol.done() and not to_dave.done()


async def test_the_owners_other_resource_is_notified(server: Running) -> None:
    """The owner's resources that ask for the node get her publications."""
    alice_jid = await server.user("alice")
    one = await login(server, alice_jid, resource="one")
    await publish(one, EX, "before")
    two = await login_seeing(server, f"{alice_jid}/two", EX, "before", EX)
    to_two = events(two)
    await publish(one, EX, "after")
    assert notification(await got(to_two))[2:] == (EX, "after")


async def test_a_contact_gets_the_last_item_at_login(server: Running) -> None:
    """A contact's new resource gets the last item of each node it asks
    for, with its XEP-0203 delay (§4.3.4)."""
    alice_jid = await server.user("alice")
    bob_jid = await server.user("bob")
    await befriend(server, alice_jid, bob_jid)
    alice = await login(server, alice_jid)
    await publish(alice, EX, "old", id="a")
    await publish(alice, EX, "latest", id="b")
    await login_seeing(server, bob_jid, EX, "latest", EX)


async def test_retract_is_notified(server: Running) -> None:
    """notify_retract is on by default: the owner's interested resource learns it."""
    alice_jid = await server.user("alice")
    one = await login(server, alice_jid, resource="one")
    await publish(one, EX, "gone soon", id="x")
    two = await login_seeing(server, f"{alice_jid}/two", EX, "gone soon", EX)
    to_two = events(two)
    await ps(one).retract(alice_jid, EX, "x", timeout=TIMEOUT)
    msg = await got(to_two)
    assert msg.xml.find(f".//{{{NS_EVENT}}}retract").get("id") == "x"


# --- access models ---------------------------------------------------------------------


async def test_presence_access_refuses_strangers(server: Running) -> None:
    """A presence node: a stranger's retrieval is <not-authorized/> +
    <presence-subscription-required/>; a contact with from/both reads it."""
    alice_jid = await server.user("alice")
    bob_jid = await server.user("bob")
    await server.user("dave")
    await befriend(server, alice_jid, bob_jid)
    alice = await login(server, alice_jid)
    await publish(alice, EX, "secret-ish")
    dave = await login(server, f"dave@{DOMAIN}")
    err = await error_of(ps(dave).get_items(alice_jid, EX, timeout=TIMEOUT))
    assert (err.condition, err.pubsub) == ("not-authorized", "presence-subscription-required")
    err = await error_of(ps(dave).subscribe(alice_jid, EX, timeout=TIMEOUT))
    assert (err.condition, err.pubsub) == ("not-authorized", "presence-subscription-required")
    bob = await login(server, bob_jid)
    res = await ps(bob).get_items(alice_jid, EX, timeout=TIMEOUT)
    assert res.xml.findtext(f".//{{{EX}}}entry") == "secret-ish"


async def test_whitelist_private_storage_is_the_owners_only(server: Running) -> None:
    """XEP-0223: publish-options persist_items + access_model whitelist
    create a node only the owner reads; a contact is <not-allowed/> +
    <closed-node/> and does not see it in disco#items."""
    alice_jid = await server.user("alice")
    bob_jid = await server.user("bob")
    await befriend(server, alice_jid, bob_jid)
    alice = await login(server, alice_jid)
    opts = submit(PUBLISH_OPTIONS, persist_items="true", access_model="whitelist")
    await publish(alice, "storage:private", "mine", options=opts)
    await publish(alice, EX, "public")
    res = await ps(alice).get_items(alice_jid, "storage:private", timeout=TIMEOUT)
    assert res.xml.findtext(f".//{{{EX}}}entry") == "mine"
    bob = await login(server, bob_jid)
    err = await error_of(ps(bob).get_items(alice_jid, "storage:private", timeout=TIMEOUT))
    assert (err.condition, err.pubsub) == ("not-allowed", "closed-node")
    items = await bob.plugin["xep_0030"].get_items(jid=alice_jid, timeout=TIMEOUT)
    nodes = {i.get("node") for i in items.xml.iterfind(f".//{{{DISCO_ITEMS}}}item")}
    assert EX in nodes and "storage:private" not in nodes
    mine = await alice.plugin["xep_0030"].get_items(jid=alice_jid, timeout=TIMEOUT)
    assert "storage:private" in {i.get("node") for i in
                                 mine.xml.iterfind(f".//{{{DISCO_ITEMS}}}item")}


async def test_publish_options_are_preconditions(server: Running) -> None:
    """publish-options that differ from an existing node's config, or name an
    unknown option: <conflict/> + <precondition-not-met/>, nothing published."""
    alice_jid = await server.user("alice")
    alice = await login(server, alice_jid)
    await publish(alice, EX, "v1", id="1")
    for opts in (submit(PUBLISH_OPTIONS, access_model="whitelist"),
                 submit(PUBLISH_OPTIONS, made_up_option="1")):
        err = await error_of(publish(alice, EX, "v2", id="2", options=opts))
        assert (err.condition, err.pubsub) == ("conflict", "precondition-not-met")
    await publish(alice, EX, "v3", id="3", options=submit(PUBLISH_OPTIONS,
                                                          access_model="presence"))
    res = await ps(alice).get_items(alice_jid, EX, timeout=TIMEOUT)
    assert [i.get("id") for i in res.xml.iterfind(f".//{{{NS}}}item")] == ["3"]


async def test_max_items_max(make_server: Any) -> None:
    """pubsub#max_items 'max' at creation is the configured max_items limit."""
    async with make_server(extra="[host.options.pep]\nmax_items = 3\n") as srv:
        alice_jid = await srv.user("alice")
        alice = await login(srv, alice_jid)
        for i in range(5):
            await publish(alice, EX, f"n{i}", id=str(i),
                          options=submit(PUBLISH_OPTIONS, max_items="max"))
        res = await ps(alice).get_items(alice_jid, EX, timeout=TIMEOUT)
        assert [i.get("id") for i in res.xml.iterfind(f".//{{{NS}}}item")] == ["2", "3", "4"]


async def test_limits(make_server: Any) -> None:
    """max_payload: <not-acceptable/> + <payload-too-big/>; max_nodes:
    <not-allowed/> + <max-nodes-exceeded/>."""
    extra = "[host.options.pep]\nmax_payload = 256\nmax_nodes = 2\n"
    async with make_server(extra=extra) as srv:
        alice = await login(srv, await srv.user("alice"))
        err = await error_of(publish(alice, EX, "x" * 300))
        assert (err.condition, err.pubsub) == ("not-acceptable", "payload-too-big")
        await publish(alice, "n1", "a")
        await publish(alice, "n2", "b")
        err = await error_of(publish(alice, "n3", "c"))
        assert (err.condition, err.pubsub) == ("not-allowed", "max-nodes-exceeded")


# --- disco -------------------------------------------------------------------------


async def test_disco_shows_the_pep_identity_and_nodes(server: Running) -> None:
    """disco#info on the own bare JID: identity pubsub/pep and the PEP
    features (XEP-0163 §6.1); with a node: a leaf."""
    alice_jid = await server.user("alice")
    alice = await login(server, alice_jid)
    info = await alice.plugin["xep_0030"].get_info(jid=alice_jid, timeout=TIMEOUT)
    idents = {(i.get("category"), i.get("type"))
              for i in info.xml.iterfind(f".//{{{DISCO_INFO}}}identity")}
    assert ("pubsub", "pep") in idents and ("account", "registered") in idents
    feats = {f.get("var") for f in info.xml.iterfind(f".//{{{DISCO_INFO}}}feature")}
    assert {f"{NS}#publish", f"{NS}#auto-create", f"{NS}#publish-options",
            f"{NS}#access-presence", f"{NS}#filtered-notifications"} <= feats
    await publish(alice, EX, "x")
    node = await alice.plugin["xep_0030"].get_info(jid=alice_jid, node=EX, timeout=TIMEOUT)
    assert node.xml.find(f".//{{{DISCO_INFO}}}identity").get("type") == "leaf"


# --- one publisher: the account (XEP-0163 §2.2) -----------------------------------------


async def test_nobody_else_publishes_whatever_the_config_says(server: Running) -> None:
    """The publish models "open"/"subscribers" are refused in a configuration
    (<not-acceptable/>) and in publish-options (<precondition-not-met/>);
    the affiliations publisher/publish-only are <feature-not-implemented/>;
    and a node stored with publish model open and bob as publisher (before
    these were refused) still takes no publish from him (<forbidden/>)."""
    alice_jid = await server.user("alice")
    bob_jid = await server.user("bob")
    await befriend(server, alice_jid, bob_jid)
    alice = await login(server, alice_jid)
    await publish(alice, EX, "mine")
    err = await error_of(ps(alice).set_node_config(
        alice_jid, EX, submit(pubsub__publish_model="open"), timeout=TIMEOUT))
    assert err.condition == "not-acceptable"
    err = await error_of(publish(alice, "urn:example:new", "x", options=submit(
        PUBLISH_OPTIONS, publish_model="open")))
    assert (err.condition, err.pubsub) == ("conflict", "precondition-not-met")
    for aff in ("publisher", "publish-only"):
        err = await error_of(ps(alice).modify_affiliations(
            alice_jid, EX, [(bob_jid, aff)], timeout=TIMEOUT))
        assert (err.condition, err.pubsub) == ("feature-not-implemented", "unsupported")
    store = server.server.hosts[DOMAIN].pubsub_store
    node = await store.get(alice_jid, EX)
    await store.configure(alice_jid, EX, {**node.config, "pubsub#publish_model": "open"})
    await store.set_affiliation(alice_jid, EX, bob_jid, "publisher")
    bob = await login(server, bob_jid)
    err = await error_of(ps(bob).publish(alice_jid, EX, payload=entry("x"), timeout=TIMEOUT))
    assert err.condition == "forbidden"
    res = await ps(alice).get_items(alice_jid, EX, timeout=TIMEOUT)
    assert res.xml.findtext(f".//{{{EX}}}entry") == "mine"


# --- access re-calculated (XEP-0163 "Cancelling subscriptions") ---------------------------


Pair = tuple[str, str, slixmpp.ClientXMPP, slixmpp.ClientXMPP]


async def subscribed_bob(srv: Running) -> Pair:
    """alice and bob share presence (both); bob, whose client does not ask
    for EX (+notify), subscribes to alice's EX explicitly and is notified."""
    alice_jid = await srv.user("alice")
    bob_jid = await srv.user("bob")
    await befriend(srv, alice_jid, bob_jid)
    alice = await login(srv, alice_jid)
    await publish(alice, EX, "before")
    bob = await login(srv, bob_jid)
    await ps(bob).subscribe(alice_jid, EX, timeout=TIMEOUT)
    to_bob = events(bob)
    await publish(alice, EX, "while subscribed")
    assert notification(await got(to_bob))[3] == "while subscribed"
    return alice_jid, bob_jid, alice, bob


async def test_cancelled_presence_subscription_ends_the_node_subscription(
        server: Running) -> None:
    """alice cancels bob's presence subscription (unsubscribed): his
    subscription to her presence node is cancelled (not listed any more)
    and her next publication does not reach him."""
    alice_jid, bob_jid, alice, bob = await subscribed_bob(server)
    gone = first_of(bob, "presence_unsubscribed")
    alice.send_presence(pto=bob_jid, ptype="unsubscribed")
    await got(gone)
    subs = await ps(alice).get_node_subscriptions(alice_jid, EX, timeout=TIMEOUT)
    assert [s.get("jid") for s in subs.xml.iterfind(f".//{{{NS_OWNER}}}subscription")] == []
    pending = first_of(bob, *KINDS)
    await publish(alice, EX, "after")
    alice.send_message(mto=bob.boundjid.full, mbody="barrier", mtype="chat")
    _, msg = await first(pending)
    assert msg["body"] == "barrier" and not is_event(msg), msg


async def test_roster_removal_ends_the_node_subscription(server: Running) -> None:
    """alice removes bob from her roster (§2.5.2): the same."""
    alice_jid, bob_jid, alice, bob = await subscribed_bob(server)
    gone = first_of(bob, "presence_unsubscribed")
    alice.del_roster_item(bob_jid)
    await got(gone)
    subs = await ps(alice).get_node_subscriptions(alice_jid, EX, timeout=TIMEOUT)
    assert [s.get("jid") for s in subs.xml.iterfind(f".//{{{NS_OWNER}}}subscription")] == []


async def test_a_subscriber_without_access_is_not_notified(server: Running) -> None:
    """Even while a stored subscription remains (the roster changed behind
    the server's back), a notification goes only to those the owner's
    roster gives access now."""
    alice_jid, bob_jid, alice, bob = await subscribed_bob(server)
    await befriend(server, alice_jid, bob_jid, ab="to", ba="from")
    pending = first_of(bob, *KINDS)
    await publish(alice, EX, "after")
    alice.send_message(mto=bob.boundjid.full, mbody="barrier", mtype="chat")
    _, msg = await first(pending)
    assert msg["body"] == "barrier" and not is_event(msg), msg


# --- the last items, again ---------------------------------------------------------------


async def test_new_caps_send_only_the_nodes_newly_asked_for(server: Running) -> None:
    """bob's client asks for EX, gets its last item; its new caps add EX2:
    it gets EX2's last item, and not EX's again."""
    alice_jid = await server.user("alice")
    bob_jid = await server.user("bob")
    await befriend(server, alice_jid, bob_jid)
    alice = await login(server, alice_jid)
    await publish(alice, EX, "ex")
    await publish(alice, EX2, "ex2")
    bob = await login_seeing(server, bob_jid, EX, "ex", EX)
    seen: list[str | None] = []
    bob.add_event_handler("pubsub_publish", lambda m: seen.append(notification(m)[2]))
    ex2 = first_of(bob, *KINDS, match=lambda m: is_event(m) and notification(m)[2] == EX2)
    await bob.plugin["xep_0030"].add_feature(f"{EX2}+notify")
    await bob.plugin["xep_0115"].update_caps()            # a presence with the new caps
    assert notification(await got(ex2))[3] == "ex2"
    await barrier(alice, bob)
    assert seen == [EX2]


async def test_last_item_without_payload_where_the_node_delivers_none(
        server: Running) -> None:
    """deliver_payloads 0: the last item sent at login has its id, no payload."""
    alice_jid = await server.user("alice")
    bob_jid = await server.user("bob")
    await befriend(server, alice_jid, bob_jid)
    alice = await login(server, alice_jid)
    await publish(alice, EX, "hidden", id="i1",
                  options=submit(PUBLISH_OPTIONS, deliver_payloads="0"))
    c = await connect(server, bob_jid, (EX,))
    last = first_of(c, *KINDS, match=lambda m: is_event(m) and notification(m)[2] == EX)
    c.send_presence()
    msg = await got(last)
    item = msg.xml.find(f"{{{NS_EVENT}}}event/{{{NS_EVENT}}}items/{{{NS_EVENT}}}item")
    assert item is not None and item.get("id") == "i1" and len(item) == 0, msg


async def test_node_disco_info_carries_meta_data_and_matches_disco_items(
        server: Running) -> None:
    """A stranger sees alice's open node in disco#items and so gets its
    disco#info, with the pubsub#meta_data form (XEP-0060 §5.4); a presence
    node stays hidden from him (as for no such account); the account
    advertises create-and-configure."""
    alice_jid = await server.user("alice")
    dave_jid = await server.user("dave")
    alice = await login(server, alice_jid)
    await publish(alice, EX, "public", options=submit(PUBLISH_OPTIONS, access_model="open"))
    await publish(alice, EX2, "contacts only")
    dave = await login(server, dave_jid)
    items = await dave.plugin["xep_0030"].get_items(jid=alice_jid, timeout=TIMEOUT)
    assert {i.get("node") for i in items.xml.iterfind(f".//{{{DISCO_ITEMS}}}item")} == {EX}
    info = await dave.plugin["xep_0030"].get_info(jid=alice_jid, node=EX, timeout=TIMEOUT)
    x = info.xml.find(f".//{{{DATA}}}x")
    assert x is not None and x.get("type") == "result"
    fields = {f.get("var"): f.findtext(f"{{{DATA}}}value") for f in x.iterfind(f"{{{DATA}}}field")}
    assert fields["FORM_TYPE"] == f"{NS}#meta_data"
    assert fields["pubsub#creator"] == alice_jid and fields["pubsub#access_model"] == "open"
    assert fields["pubsub#creation_date"].endswith("Z")
    err = await error_of(dave.plugin["xep_0030"].get_info(jid=alice_jid, node=EX2,
                                                          timeout=TIMEOUT))
    assert err.condition == "service-unavailable"
    own = await alice.plugin["xep_0030"].get_info(jid=alice_jid, timeout=TIMEOUT)
    assert f"{NS}#create-and-configure" in {
        f.get("var") for f in own.xml.iterfind(f".//{{{DISCO_INFO}}}feature")}
