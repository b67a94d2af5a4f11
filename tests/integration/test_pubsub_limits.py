"""XEP-0060 under the host's rules and limits (issue 10, items 2, 6 and 10):
who an owner may subscribe (§8.8.2), notifications under
``cross_domain_messages`` and XEP-0191 blocklists, disco#items of the server
and of a service (XEP-0030, §5.2), and the subscription quotas of
``[host.options.pubsub]`` (§6.1.3.9).

Real slixmpp clients against a real standalone server serving
``games.DOMAIN`` for each of its domains. Every wait is bounded and waits on
an event. That a notification was *not* sent is shown with a barrier (see
tests/integration/test_pubsub.py): a notification is routed before the
request that caused it is answered, so when a stanza sent later is the first
to arrive, the notification never was.
"""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree

import pytest
import slixmpp
from slixmpp.exceptions import IqError

from tests.conftest import DOMAIN, PASSWORD, TIMEOUT, Running
from tests.integration.test_pubsub import (PLUGINS, barrier, entry, error_of, expect,
                                           first, first_of, got, owner_subscriptions, ps,
                                           submit)
from vinespy import accounts
from vinespy.jid import JID
from vinespy.rules.pubsub import NS, NS_EVENT, NS_OWNER

pytestmark = pytest.mark.integration

OTHER = "example.com"
GAMES = f"games.{DOMAIN}"
OTHER_GAMES = f"games.{OTHER}"
HOST = {"pubsub": ["games"]}


async def login(srv: Running, jid: str) -> slixmpp.ClientXMPP:
    """Log ``jid`` in with pubsub and wait until its initial presence is handled."""
    c = await srv.login(jid, plugins=(*PLUGINS, "xep_0191"))
    await c.plugin["xep_0199"].ping(jid=JID.parse(jid).domain, timeout=TIMEOUT)
    return c


async def user(srv: Running, local: str, domain: str = DOMAIN) -> slixmpp.ClientXMPP:
    """A new account of ``domain`` (one of the server's), logged in."""
    jid = f"{local}@{domain}"
    await accounts.create_user(srv.storage, JID.parse(jid), PASSWORD, iterations=4096)
    return await login(srv, jid)


def notified_id(msg: Any, service: str = GAMES) -> str | None:
    """The item id of a publish notification from ``service``."""
    assert msg["from"] == service and msg["type"] == "headline"
    item = msg.xml.find(f"{{{NS_EVENT}}}event/{{{NS_EVENT}}}items/{{{NS_EVENT}}}item")
    return item.get("id") if item is not None else None


def two_domains(**host: Any) -> dict[str, Any]:
    return {"domains": (DOMAIN, OTHER), "host": {**HOST, **host}}


def raw(c: slixmpp.ClientXMPP, service: str, type: str, xml: str) -> Any:
    """Send ``<iq type=… to=service>xml</iq>`` as written; the answer."""
    iq = c.Iq(sto=service, stype=type)
    iq.append(ElementTree.fromstring(xml))
    return iq.send(timeout=TIMEOUT)


def subscribe_as(c: slixmpp.ClientXMPP, service: str, node: str, jid: str) -> Any:
    return raw(c, service, "set", f"<pubsub xmlns='{NS}'><subscribe node='{node}' "
                                  f"jid='{jid}'/></pubsub>")


async def refused(request: Any) -> tuple[str, Any]:
    """(the condition, the whole error iq) a request is answered with."""
    with pytest.raises(IqError) as exc:
        await request
    return exc.value.iq["error"]["condition"], exc.value.iq


# --- item 2: owner-made subscriptions, notifications across domains and blocks ---


async def test_owner_cannot_subscribe_a_user_of_another_domain(make_server: Any) -> None:
    """The reported bypass of cross_domain_messages = false: mallory of
    example.com creates a node and subscribes alice of wonderland.lit with
    the owner <subscriptions/> set (§8.8.2). Refused with <not-acceptable/>
    (§8.8.2.4), alice is not subscribed, and mallory's publish never reaches
    her."""
    async with make_server(**two_domains()) as srv:
        alice = await user(srv, "alice")
        bob = await user(srv, "bob")
        mallory = await user(srv, "mallory", OTHER)
        a = alice.boundjid.bare
        for service in (OTHER_GAMES, GAMES):
            node = f"spam-{service}"
            await ps(mallory).create_node(service, node, timeout=TIMEOUT)
            e = await error_of(ps(mallory).modify_subscriptions(
                service, node, [(a, "subscribed")], timeout=TIMEOUT))
            assert (e.type, e.condition) == ("modify", "not-acceptable")
            res = await ps(mallory).get_node_subscriptions(service, node, timeout=TIMEOUT)
            assert owner_subscriptions(res) == set()
            pending = first_of(alice, "pubsub_publish", "message")
            await ps(mallory).publish(service, node, payload=entry("buy now"), timeout=TIMEOUT)
            await barrier(bob, alice, pending)


async def test_owner_subscribes_only_with_consent(make_server: Any) -> None:
    """§8.8.2 decided in the module docstring: an owner sets 'subscribed'
    only for JIDs of his own bare JID or for a subscription that exists (no
    change, same subid); 'none' removes anyone. The others are refused with
    <not-acceptable/> (§8.8.2.4): the error carries only the refused
    entries, each with its existing state ('none'), and the accepted entries
    of the same request are applied."""
    async with make_server(host=HOST) as srv:
        alice = await user(srv, "alice")
        bob = await user(srv, "bob")
        carol = await user(srv, "carol")
        a, b, c = (x.boundjid.bare for x in (alice, bob, carol))
        await ps(alice).create_node(GAMES, "news", timeout=TIMEOUT)

        e = await error_of(ps(alice).modify_subscriptions(GAMES, "news", [(b, "subscribed")],
                                                          timeout=TIMEOUT))
        assert (e.type, e.condition) == ("modify", "not-acceptable")

        # carol subscribed herself: the owner may confirm it (same subid) ...
        res = await ps(carol).subscribe(GAMES, "news", timeout=TIMEOUT)
        subid = res["pubsub"]["subscription"]["subid"]
        await ps(alice).modify_subscriptions(GAMES, "news", [(c, "subscribed")], timeout=TIMEOUT)
        res = await ps(carol).get_subscriptions(GAMES, timeout=TIMEOUT)
        assert [s["subid"] for s in res["pubsub"]["subscriptions"]] == [subid]

        # ... and a mixed request applies what it may, returns what it may not.
        changes = [(a, "subscribed"), (b, "subscribed"), (alice.boundjid.full, "subscribed"),
                   (c, "none")]
        condition, iq = await refused(ps(alice).modify_subscriptions(GAMES, "news", changes,
                                                                     timeout=TIMEOUT))
        assert condition == "not-acceptable"
        back = [(s.get("jid"), s.get("subscription")) for s in iq.xml.iterfind(
            f"{{{NS_OWNER}}}pubsub/{{{NS_OWNER}}}subscriptions/{{{NS_OWNER}}}subscription")]
        assert back == [(b, "none")]
        res = await ps(alice).get_node_subscriptions(GAMES, "news", timeout=TIMEOUT)
        assert owner_subscriptions(res) == {a, alice.boundjid.full}

        # Nothing reaches bob; alice's own subscription works.
        pending = first_of(bob, "pubsub_publish", "message")
        wait = expect(alice, "pubsub_publish")
        await ps(alice).publish(GAMES, "news", id="n1", payload=entry("hi"), timeout=TIMEOUT)
        assert notified_id(await got(wait)) == "n1"
        await barrier(carol, bob, pending)


@pytest.mark.parametrize("cross", [False, True])
async def test_notifications_follow_cross_domain_messages(make_server: Any,
                                                          cross: bool) -> None:
    """A notification caused by mallory of example.com (an open publish
    model lets him publish) reaches alice of wonderland.lit only when both
    hosts allow cross-domain messages; bob's, of her domain, always."""
    async with make_server(**two_domains(cross_domain_messages=cross)) as srv:
        alice = await user(srv, "alice")
        bob = await user(srv, "bob")
        mallory = await user(srv, "mallory", OTHER)
        await ps(bob).create_node(GAMES, "board", config=submit(publish_model="open"),
                                  timeout=TIMEOUT)
        await ps(alice).subscribe(GAMES, "board", timeout=TIMEOUT)
        pending = first_of(alice, "pubsub_publish")
        await ps(mallory).publish(GAMES, "board", id="m", payload=entry("m"), timeout=TIMEOUT)
        await ps(bob).publish(GAMES, "board", id="b", payload=entry("b"), timeout=TIMEOUT)
        _, msg = await first(pending)
        assert notified_id(msg) == ("m" if cross else "b")


async def test_blocklist_covers_notifications_caused_by_the_blocked(
        make_server: Any) -> None:
    """XEP-0191 §3.5 carried over to the service: alice blocked mallory, so
    neither his publish nor his retract reaches her (they come from the
    service, but he caused them); bob's do; after unblocking, his do."""
    async with make_server(host=HOST) as srv:
        alice = await user(srv, "alice")
        bob = await user(srv, "bob")
        mallory = await user(srv, "mallory")
        await ps(bob).create_node(GAMES, "board", config=submit(publish_model="open"),
                                  timeout=TIMEOUT)
        await ps(bob).modify_affiliations(GAMES, "board", [(mallory.boundjid.bare,
                                                            "publisher")], timeout=TIMEOUT)
        await ps(alice).subscribe(GAMES, "board", timeout=TIMEOUT)
        await alice.plugin["xep_0191"].block(mallory.boundjid.bare, timeout=TIMEOUT)

        pending = first_of(alice, "pubsub_publish", "pubsub_retract")
        await ps(mallory).publish(GAMES, "board", id="m", payload=entry("m"), timeout=TIMEOUT)
        await ps(mallory).retract(GAMES, "board", "m", notify=True, timeout=TIMEOUT)
        await ps(bob).publish(GAMES, "board", id="b", payload=entry("b"), timeout=TIMEOUT)
        name, msg = await first(pending)
        assert (name, notified_id(msg)) == ("pubsub_publish", "b")

        await alice.plugin["xep_0191"].unblock(mallory.boundjid.bare, timeout=TIMEOUT)
        wait = expect(alice, "pubsub_publish")
        await ps(mallory).publish(GAMES, "board", id="m2", payload=entry("m2"), timeout=TIMEOUT)
        assert notified_id(await got(wait)) == "m2"


# --- item 6: disco -----------------------------------------------------------------


async def test_server_disco_items_lists_its_pubsub_services(make_server: Any) -> None:
    """XEP-0030 §4: the server's items are the pubsub services it serves for
    that domain, so clients find games.DOMAIN (XEP-0060 §5.1)."""
    async with make_server(**two_domains()) as srv:
        alice = await user(srv, "alice")
        mallory = await user(srv, "mallory", OTHER)
        for c, domain, service in ((alice, DOMAIN, GAMES), (mallory, OTHER, OTHER_GAMES)):
            res = await c.plugin["xep_0030"].get_items(jid=domain, timeout=TIMEOUT)
            assert res["disco_items"]["items"] == {(service, None, None)}


async def test_whitelist_nodes_are_listed_to_affiliated_entities_only(
        make_server: Any) -> None:
    """§5.2: disco#items on the service lists a whitelist node only to those
    on its list (owner, publisher, publish-only, member); open nodes to all."""
    async with make_server(host=HOST) as srv:
        alice = await user(srv, "alice")
        bob = await user(srv, "bob")
        carol = await user(srv, "carol")
        await ps(alice).create_node(GAMES, "news", timeout=TIMEOUT)
        await ps(alice).create_node(GAMES, "club", config=submit(access_model="whitelist"),
                                    timeout=TIMEOUT)

        async def listed(c: slixmpp.ClientXMPP) -> set[str]:
            res = await c.plugin["xep_0030"].get_items(jid=GAMES, timeout=TIMEOUT)
            return {node for _, node, _ in res["disco_items"]["items"]}

        assert await listed(alice) == {"news", "club"}
        assert await listed(bob) == {"news"}
        await ps(alice).modify_affiliations(GAMES, "club", [(bob.boundjid.bare, "member"),
                                                            (carol.boundjid.bare, "outcast")],
                                            timeout=TIMEOUT)
        assert await listed(bob) == {"news", "club"}
        assert await listed(carol) == {"news"}


# --- item 10: subscription quotas -------------------------------------------------


async def test_subscriptions_of_one_jid_to_a_node_are_limited(make_server: Any) -> None:
    """[host.options.pubsub] max_subscriptions_per_jid: bob subscribes JIDs
    of his own bare JID (made-up resources included) up to the limit, then
    <not-allowed/> + <too-many-subscriptions/> (§6.1.3.9); subscribing
    one of them again is no new subscription; after an unsubscribe there is
    room again; carol's and other nodes' counts are their own. Someone
    else's JID is <bad-request/> + <invalid-jid/> (§6.1.3.1), full or bare."""
    extra = "[host.options.pubsub]\nmax_subscriptions_per_jid = 3\n"
    async with make_server(host=HOST, extra=extra) as srv:
        alice = await user(srv, "alice")
        bob = await user(srv, "bob")
        carol = await user(srv, "carol")
        b = bob.boundjid.bare
        await ps(alice).create_node(GAMES, "news", timeout=TIMEOUT)
        await ps(alice).create_node(GAMES, "other", timeout=TIMEOUT)
        for jid in (b, f"{b}/r1", f"{b}/r2"):
            await subscribe_as(bob, GAMES, "news", jid)
        e = await error_of(subscribe_as(bob, GAMES, "news", f"{b}/r3"))
        assert (e.type, e.condition, e.pubsub) == (
            "cancel", "not-allowed", "too-many-subscriptions")
        await subscribe_as(bob, GAMES, "news", f"{b}/r1")
        await subscribe_as(bob, GAMES, "other", f"{b}/r3")
        await ps(carol).subscribe(GAMES, "news", timeout=TIMEOUT)
        await ps(bob).unsubscribe(GAMES, "news", subscribee=f"{b}/r2", timeout=TIMEOUT)
        await subscribe_as(bob, GAMES, "news", f"{b}/r3")
        res = await ps(alice).get_node_subscriptions(GAMES, "news", timeout=TIMEOUT)
        assert owner_subscriptions(res) == {b, f"{b}/r1", f"{b}/r3", carol.boundjid.bare}

        for jid in (carol.boundjid.bare, f"{carol.boundjid.bare}/x"):
            e = await error_of(subscribe_as(bob, GAMES, "news", jid))
            assert (e.condition, e.pubsub) == ("bad-request", "invalid-jid")


async def test_subscriptions_to_a_node_are_limited(make_server: Any) -> None:
    """[host.options.pubsub] max_subscriptions_per_node: past it, a subscribe
    is <not-allowed/> + <too-many-subscriptions/> (§6.1.3.9) and an
    owner's own subscription is refused (§8.8.2.4); another node has room."""
    extra = "[host.options.pubsub]\nmax_subscriptions_per_node = 2\n"
    async with make_server(host=HOST, extra=extra) as srv:
        alice = await user(srv, "alice")
        bob = await user(srv, "bob")
        carol = await user(srv, "carol")
        dave = await user(srv, "dave")
        await ps(alice).create_node(GAMES, "news", timeout=TIMEOUT)
        await ps(alice).create_node(GAMES, "other", timeout=TIMEOUT)
        await ps(bob).subscribe(GAMES, "news", timeout=TIMEOUT)
        await ps(carol).subscribe(GAMES, "news", timeout=TIMEOUT)
        e = await error_of(ps(dave).subscribe(GAMES, "news", timeout=TIMEOUT))
        assert (e.type, e.condition, e.pubsub) == (
            "cancel", "not-allowed", "too-many-subscriptions")
        e = await error_of(ps(alice).modify_subscriptions(
            GAMES, "news", [(alice.boundjid.bare, "subscribed")], timeout=TIMEOUT))
        assert e.condition == "not-acceptable"
        await ps(dave).subscribe(GAMES, "other", timeout=TIMEOUT)
        await ps(bob).unsubscribe(GAMES, "news", timeout=TIMEOUT)
        await ps(dave).subscribe(GAMES, "news", timeout=TIMEOUT)
        res = await ps(alice).get_node_subscriptions(GAMES, "news", timeout=TIMEOUT)
        assert owner_subscriptions(res) == {carol.boundjid.bare, dave.boundjid.bare}
