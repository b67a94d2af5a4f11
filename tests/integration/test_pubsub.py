"""XEP-0060 Publish-Subscribe end to end: real slixmpp clients (xep_0060,
xep_0030) against a real standalone server with fs storage, serving the
service ``pubsub.wonderland.lit`` (``pubsub = ["pubsub"]`` in its [[host]]).

Every wait is bounded (TIMEOUT) and waits on an event, never on a sleep. That
something was *not* sent is shown with a barrier: stanzas from the server to
one client arrive in the order the server routed them, and a notification is
routed before the request that caused it is answered; so when a later,
expected stanza is the first to arrive, the unexpected one was never sent.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, NamedTuple
from xml.etree import ElementTree

import pytest
import slixmpp
from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0004 import Form

from tests.conftest import DOMAIN, TIMEOUT, Running
from vinespy.rules.pubsub import DATA, NODE_CONFIG, NS, NS_ERRORS, NS_EVENT, NS_OWNER

pytestmark = pytest.mark.integration

SVC = f"pubsub.{DOMAIN}"
HOST = {"pubsub": ["pubsub"]}
PLUGINS = ("xep_0060", "xep_0030")

EX = "urn:example"


# --- helpers -------------------------------------------------------------------


async def login(srv: Running, jid: str) -> slixmpp.ClientXMPP:
    """Log ``jid`` in (a new resource) and wait until the server has handled
    its initial presence: a ping sent after it is answered."""
    c = await srv.login(jid, plugins=PLUGINS)
    await c.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)
    return c


async def new_user(srv: Running, local: str) -> slixmpp.ClientXMPP:
    return await login(srv, await srv.user(local))


def ps(c: slixmpp.ClientXMPP) -> Any:
    return c.plugin["xep_0060"]


def first_of(c: slixmpp.ClientXMPP, *events: str,
             match: Callable[[Any], bool] = lambda _: True) -> asyncio.Future[tuple[str, Any]]:
    """A future of the first of ``events`` ``c`` fires (that ``match``
    accepts), as (event, stanza); its handlers are registered before this
    returns, so nothing sent afterwards can be missed."""
    fut: asyncio.Future[tuple[str, Any]] = asyncio.get_running_loop().create_future()
    handlers = []
    for name in events:
        def handler(data: Any, name: str = name) -> None:
            if not fut.done() and match(data):
                fut.set_result((name, data))
        c.add_event_handler(name, handler)
        handlers.append((name, handler))

    def remove(_: Any) -> None:
        for name, handler in handlers:
            c.del_event_handler(name, handler)
    fut.add_done_callback(remove)
    return fut


def expect(c: slixmpp.ClientXMPP, event: str) -> asyncio.Future[tuple[str, Any]]:
    return first_of(c, event)


async def got(fut: Awaitable[tuple[str, Any]]) -> Any:
    """The stanza of an expected event, within TIMEOUT."""
    _, stanza = await asyncio.wait_for(fut, TIMEOUT)
    return stanza


async def first(fut: Awaitable[tuple[str, Any]]) -> tuple[str, Any]:
    return await asyncio.wait_for(fut, TIMEOUT)


def entry(text: str) -> ElementTree.Element:
    el = ElementTree.Element(f"{{{EX}}}entry")
    el.text = text
    return el


def event_items(msg: Any) -> ElementTree.Element:
    """The <items/> of a notification, checked to come from the service as a headline."""
    assert msg["from"] == SVC and msg["type"] == "headline"
    items = msg.xml.find(f"{{{NS_EVENT}}}event/{{{NS_EVENT}}}items")
    assert items is not None
    return items


def notified_item(msg: Any) -> tuple[str, str | None, str | None, int]:
    """(node, item id, payload text, number of payload elements) of a
    publish notification carrying one item."""
    items = event_items(msg)
    (item,) = items.findall(f"{{{NS_EVENT}}}item")
    payload = item.find(f"{{{EX}}}entry")
    return (items.get("node", ""), item.get("id"),
            payload.text if payload is not None else None, len(item))


def result_items(res: Any) -> dict[str, str | None]:
    """item id -> payload text of an items retrieval result, in its order."""
    out: dict[str, str | None] = {}
    for item in res.xml.findall(f"{{{NS}}}pubsub/{{{NS}}}items/{{{NS}}}item"):
        payload = item.find(f"{{{EX}}}entry")
        out[item.get("id")] = payload.text if payload is not None else None
    return out


def submit(form_type: str = NODE_CONFIG, **options: str) -> Form:
    """A node_config submission: ``max_items="3"`` is ``pubsub#max_items``."""
    form = Form()
    form["type"] = "submit"
    form.add_field(var="FORM_TYPE", ftype="hidden", value=form_type)
    for var, value in options.items():
        form.add_field(var=f"pubsub#{var}", value=value)
    return form


async def node_config(c: slixmpp.ClientXMPP, node: str) -> tuple[str | None, dict[str, str]]:
    """(form type, var -> value) of the node's configuration form (§8.2.1)."""
    res = await ps(c).get_node_config(SVC, node, timeout=TIMEOUT)
    x = res.xml.find(f"{{{NS_OWNER}}}pubsub/{{{NS_OWNER}}}configure/{{{DATA}}}x")
    assert x is not None
    return x.get("type"), {f.get("var"): f.findtext(f"{{{DATA}}}value") or ""
                           for f in x.findall(f"{{{DATA}}}field")}


class Err(NamedTuple):
    type: str
    condition: str              # RFC 6120 defined condition
    pubsub: str | None          # the pubsub#errors child, if any
    feature: str | None         # its 'feature' attribute, if any


async def error_of(request: Awaitable[Any]) -> Err:
    """The error a request is answered with (it must be answered with one)."""
    with pytest.raises(IqError) as exc:
        await request
    err = exc.value.iq["error"]
    apps = [el for el in err.xml if el.tag.startswith(f"{{{NS_ERRORS}}}")]
    assert len(apps) <= 1
    app = apps[0] if apps else None
    return Err(err["type"], err["condition"],
               app.tag.split("}", 1)[1] if app is not None else None,
               app.get("feature") if app is not None else None)


def raw(c: slixmpp.ClientXMPP, type: str, xml: str) -> Awaitable[Any]:
    """Send ``<iq type=… to=SVC>xml</iq>`` as written; the answer."""
    iq = c.Iq(sto=SVC, stype=type)
    iq.append(ElementTree.fromstring(xml))
    return iq.send(timeout=TIMEOUT)  # type: ignore[no-any-return]


def owner_affiliations(res: Any) -> dict[str, str]:
    return {a.get("jid"): a.get("affiliation") for a in res.xml.iterfind(
        f"{{{NS_OWNER}}}pubsub/{{{NS_OWNER}}}affiliations/{{{NS_OWNER}}}affiliation")}


def owner_subscriptions(res: Any) -> set[str]:
    return {s.get("jid") for s in res.xml.iterfind(
        f"{{{NS_OWNER}}}pubsub/{{{NS_OWNER}}}subscriptions/{{{NS_OWNER}}}subscription")}


def own_subscriptions(res: Any) -> list[tuple[str, str, str, str]]:
    return [(s.get("node"), s.get("jid"), s.get("subscription"), s.get("subid"))
            for s in res.xml.iterfind(
                f"{{{NS}}}pubsub/{{{NS}}}subscriptions/{{{NS}}}subscription")]


def own_affiliations(res: Any) -> dict[str, str]:
    return {a.get("node"): a.get("affiliation") for a in res.xml.iterfind(
        f"{{{NS}}}pubsub/{{{NS}}}affiliations/{{{NS}}}affiliation")}


async def barrier(sender: slixmpp.ClientXMPP, to: slixmpp.ClientXMPP,
                  pending: asyncio.Future[tuple[str, Any]]) -> None:
    """``pending`` (a :func:`first_of` of ``to`` that includes "message")
    resolves to the chat ``sender`` sends now, not to any notification sent
    before it."""
    sender.send_message(mto=to.boundjid.full, mbody="barrier", mtype="chat")
    name, stanza = await first(pending)
    assert (name, stanza["body"]) == ("message", "barrier"), stanza


# --- 1. the whole flow -----------------------------------------------------------


class Flow(NamedTuple):
    """The people of the whole-flow scenario: alice owns "news", bob is
    subscribed with two resources (bare JID), carol with her full JID."""
    alice: slixmpp.ClientXMPP
    bob_jid: str
    bob1: slixmpp.ClientXMPP
    bob2: slixmpp.ClientXMPP
    carol: slixmpp.ClientXMPP

    @property
    def bobs(self) -> tuple[slixmpp.ClientXMPP, ...]:
        return (self.bob1, self.bob2)

    @property
    def subscribers(self) -> tuple[slixmpp.ClientXMPP, ...]:
        return (self.bob1, self.bob2, self.carol)


async def log_in_flow(srv: Running) -> Flow:
    alice = await new_user(srv, "alice")
    bob_jid = await srv.user("bob")
    bob1, bob2 = await login(srv, bob_jid), await login(srv, bob_jid)
    assert bob1.boundjid.full != bob2.boundjid.full
    return Flow(alice, bob_jid, bob1, bob2, await new_user(srv, "carol"))


async def create_and_configure(f: Flow) -> None:
    """§8.1.1 create (the owner is alice); §8.2.1 the form with its defaults;
    §8.2.4 a submitted configuration, in the form from then on."""
    await ps(f.alice).create_node(SVC, "news", timeout=TIMEOUT)
    res = await ps(f.alice).get_node_affiliations(SVC, "news", timeout=TIMEOUT)
    assert owner_affiliations(res) == {f"alice@{DOMAIN}": "owner"}

    ftype, values = await node_config(f.alice, "news")
    assert ftype == "form"
    assert values["FORM_TYPE"] == NODE_CONFIG
    assert (values["pubsub#max_items"], values["pubsub#notify_retract"],
            values["pubsub#deliver_payloads"], values["pubsub#access_model"]) == (
        "10", "1", "1", "open")
    await ps(f.alice).set_node_config(SVC, "news", submit(
        max_items="3", notify_retract="true", deliver_payloads="1", access_model="open"),
        timeout=TIMEOUT)
    _, values = await node_config(f.alice, "news")
    assert (values["pubsub#max_items"], values["pubsub#notify_retract"],
            values["pubsub#deliver_payloads"], values["pubsub#access_model"]) == (
        "3", "1", "1", "open")


async def subscribe_bare_and_full(f: Flow) -> None:
    """§6.1: bob subscribes his bare JID, carol her full JID."""
    res = await ps(f.bob1).subscribe(SVC, "news", timeout=TIMEOUT)
    sub = res["pubsub"]["subscription"]
    assert (sub["node"], sub["jid"], sub["subscription"]) == ("news", f.bob_jid, "subscribed")
    assert sub["subid"]
    res = await ps(f.carol).subscribe(SVC, "news", bare=False, timeout=TIMEOUT)
    assert res["pubsub"]["subscription"]["jid"] == f.carol.boundjid.full
    res = await ps(f.alice).get_node_subscriptions(SVC, "news", timeout=TIMEOUT)
    assert owner_subscriptions(res) == {f.bob_jid, f.carol.boundjid.full}


async def publish_four(f: Flow) -> str:
    """§7.1: "i1", then one without an id (§7.1.2: the service makes one and
    returns it), then "i3" and "i4"; every subscribed resource gets each with
    its payload. Returns the generated id."""
    waits = [expect(c, "pubsub_publish") for c in f.subscribers]
    res = await ps(f.alice).publish(SVC, "news", id="i1", payload=entry("one"),
                                    timeout=TIMEOUT)
    assert res["pubsub"]["publish"]["node"] == "news"
    assert res["pubsub"]["publish"]["item"]["id"] == "i1"
    for w in waits:
        assert notified_item(await got(w)) == ("news", "i1", "one", 1)

    waits = [expect(c, "pubsub_publish") for c in f.subscribers]
    res = await ps(f.alice).publish(SVC, "news", payload=entry("two"), timeout=TIMEOUT)
    generated: str = res["pubsub"]["publish"]["item"]["id"]
    assert generated and generated != "i1"
    for w in waits:
        assert notified_item(await got(w)) == ("news", generated, "two", 1)

    for i, text in (("i3", "three"), ("i4", "four")):
        waits = [expect(c, "pubsub_publish") for c in f.subscribers]
        await ps(f.alice).publish(SVC, "news", id=i, payload=entry(text), timeout=TIMEOUT)
        for w in waits:
            assert notified_item(await got(w))[1] == i
    return generated


async def retrieve_items(f: Flow, generated: str) -> None:
    """§6.5.2 all items (max_items=3 kept the 3 most recent, oldest first);
    §6.5.7 the N most recent; §6.5.8 by id (an evicted or unknown id is not there)."""
    res = await ps(f.bob1).get_items(SVC, "news", timeout=TIMEOUT)
    assert list(result_items(res).items()) == [
        (generated, "two"), ("i3", "three"), ("i4", "four")]
    res = await ps(f.carol).get_items(SVC, "news", max_items=2, timeout=TIMEOUT)
    assert result_items(res) == {"i3": "three", "i4": "four"}
    res = await ps(f.bob2).get_items(SVC, "news", item_ids=["i4", generated, "i1"],
                                     timeout=TIMEOUT)
    assert list(result_items(res).items()) == [("i4", "four"), (generated, "two")]
    res = await ps(f.bob2).get_item(SVC, "news", "i3", timeout=TIMEOUT)
    assert result_items(res) == {"i3": "three"}


async def publish_without_payloads(f: Flow) -> None:
    """deliver_payloads false: the notification carries the id only, the
    item keeps its payload."""
    await ps(f.alice).set_node_config(SVC, "news", submit(deliver_payloads="0"),
                                      timeout=TIMEOUT)
    waits = [expect(c, "pubsub_publish") for c in f.subscribers]
    await ps(f.alice).publish(SVC, "news", id="i5", payload=entry("five"), timeout=TIMEOUT)
    for w in waits:
        assert notified_item(await got(w)) == ("news", "i5", None, 0)
    res = await ps(f.bob1).get_item(SVC, "news", "i5", timeout=TIMEOUT)
    assert result_items(res) == {"i5": "five"}


async def retract_notified(f: Flow) -> None:
    """§7.2: retract, notified (notify_retract is true)."""
    waits = [expect(c, "pubsub_retract") for c in f.subscribers]
    await ps(f.alice).retract(SVC, "news", "i3", timeout=TIMEOUT)
    for w in waits:
        items = event_items(await got(w))
        assert items.get("node") == "news"
        assert [r.get("id") for r in items.findall(f"{{{NS_EVENT}}}retract")] == ["i3"]
    res = await ps(f.bob1).get_items(SVC, "news", timeout=TIMEOUT)
    assert list(result_items(res)) == ["i4", "i5"]


async def retract_silently(f: Flow) -> None:
    """notify_retract false: no retract notification (the next publish
    notification is the first thing each subscriber gets)."""
    await ps(f.alice).set_node_config(SVC, "news", submit(notify_retract="false",
                                                          deliver_payloads="1"),
                                      timeout=TIMEOUT)
    waits = [first_of(c, "pubsub_retract", "pubsub_publish") for c in f.subscribers]
    await ps(f.alice).retract(SVC, "news", "i4", timeout=TIMEOUT)
    await ps(f.alice).publish(SVC, "news", id="i6", payload=entry("six"), timeout=TIMEOUT)
    for w in waits:
        name, msg = await first(w)
        assert name == "pubsub_publish" and notified_item(msg) == ("news", "i6", "six", 1)
    res = await ps(f.bob1).get_items(SVC, "news", timeout=TIMEOUT)
    assert list(result_items(res)) == ["i5", "i6"]


async def carol_unsubscribes(f: Flow) -> asyncio.Future[tuple[str, Any]]:
    """§6.2: carol unsubscribes her full JID; bob still gets "i7". Returns the
    first thing carol gets from now on (see :func:`delete_node`)."""
    await ps(f.carol).unsubscribe(SVC, "news", bare=False, timeout=TIMEOUT)
    res = await ps(f.carol).get_subscriptions(SVC, timeout=TIMEOUT)
    assert own_subscriptions(res) == []
    carol_next = first_of(f.carol, "pubsub_publish", "pubsub_purge", "pubsub_delete", "message")
    waits = [expect(c, "pubsub_publish") for c in f.bobs]
    await ps(f.alice).publish(SVC, "news", id="i7", payload=entry("seven"), timeout=TIMEOUT)
    for w in waits:
        assert notified_item(await got(w))[1] == "i7"
    return carol_next


async def purge(f: Flow) -> None:
    """§8.5.2: purge; with notify_retract, one <purge/> notification each."""
    await ps(f.alice).set_node_config(SVC, "news", submit(notify_retract="1"), timeout=TIMEOUT)
    waits = [expect(c, "pubsub_purge") for c in f.bobs]
    await ps(f.alice).purge(SVC, "news", timeout=TIMEOUT)
    for w in waits:
        msg = await got(w)
        assert msg["from"] == SVC
        event = msg.xml.find(f"{{{NS_EVENT}}}event")
        assert [(e.tag, e.get("node")) for e in event] == [(f"{{{NS_EVENT}}}purge", "news")]
    res = await ps(f.bob1).get_items(SVC, "news", timeout=TIMEOUT)
    assert result_items(res) == {}


async def delete_node(f: Flow, carol_next: asyncio.Future[tuple[str, Any]]) -> None:
    """§8.4: delete; bob's resources are told, carol (unsubscribed) got none
    of the publish, purge and delete since; the node is gone."""
    waits = [expect(c, "pubsub_delete") for c in f.bobs]
    await ps(f.alice).delete_node(SVC, "news", timeout=TIMEOUT)
    for w in waits:
        msg = await got(w)
        assert msg["from"] == SVC
        delete = msg.xml.find(f"{{{NS_EVENT}}}event/{{{NS_EVENT}}}delete")
        assert delete is not None and delete.get("node") == "news"
    await barrier(f.alice, f.carol, carol_next)

    e = await error_of(ps(f.bob1).get_items(SVC, "news", timeout=TIMEOUT))
    assert e.condition == "item-not-found"
    res = await f.alice.plugin["xep_0030"].get_items(jid=SVC, timeout=TIMEOUT)
    assert res["disco_items"]["items"] == set()


async def test_full_flow(make_server: Any) -> None:
    """Create a named node (§8.1.1); get its configuration form and submit
    max_items, notify_retract, deliver_payloads, access_model (§8.2); bob
    subscribes his bare JID (§6.1) and both of his available resources get
    every notification, carol her full JID; publish with an id and without
    (the generated id is returned, §7.1.2) with the payload in the
    notification (§7.1.2.1), without it when deliver_payloads is false;
    max_items keeps the most recent; retract (§7.2) notifies while
    notify_retract is true, not after; retrieve all items (§6.5.2), the N most
    recent (§6.5.7), some by id (§6.5.8); unsubscribe (§6.2) ends the
    notifications; purge (§8.5) sends one <purge/> notification; delete
    (§8.4) notifies the subscribers. Each step needs the state the one
    before left."""
    async with make_server(host=HOST) as srv:
        f = await log_in_flow(srv)
        await create_and_configure(f)
        await subscribe_bare_and_full(f)
        generated = await publish_four(f)
        await retrieve_items(f, generated)
        await publish_without_payloads(f)
        await retract_notified(f)
        await retract_silently(f)
        carol_next = await carol_unsubscribes(f)
        await purge(f)
        await delete_node(f, carol_next)


# --- 2. instant nodes ------------------------------------------------------------


async def test_instant_node(make_server: Any) -> None:
    """§8.1.2: a create without a node name makes an instant node whose
    generated name is returned; it is a real node (listed, owned, usable)."""
    async with make_server(host=HOST) as srv:
        alice = await new_user(srv, "alice")
        res = await ps(alice).create_node(SVC, None, timeout=TIMEOUT)
        create = res.xml.find(f"{{{NS}}}pubsub/{{{NS}}}create")
        assert create is not None
        name = create.get("node")
        assert name
        res = await alice.plugin["xep_0030"].get_items(jid=SVC, timeout=TIMEOUT)
        assert {node for _, node, _ in res["disco_items"]["items"]} == {name}
        res = await ps(alice).get_affiliations(SVC, timeout=TIMEOUT)
        assert own_affiliations(res) == {name: "owner"}
        await ps(alice).publish(SVC, name, id="x", payload=entry("instant"), timeout=TIMEOUT)
        res = await ps(alice).get_items(SVC, name, timeout=TIMEOUT)
        assert result_items(res) == {"x": "instant"}
        # A second instant node gets another name.
        res = await ps(alice).create_node(SVC, None, timeout=TIMEOUT)
        other = res.xml.find(f"{{{NS}}}pubsub/{{{NS}}}create").get("node")
        assert other and other != name


async def test_lower_max_items_trims_at_once_and_leaf_node_type(make_server: Any) -> None:
    """§8.2: a configuration applies when it is set: lowering pubsub#max_items
    drops the oldest items at once. slixmpp's create_node(ntype="leaf") sends
    pubsub#node_type, which is accepted; a collection (XEP-0248) is not served."""
    async with make_server(host=HOST) as srv:
        alice = await new_user(srv, "alice")
        await ps(alice).create_node(SVC, "news", ntype="leaf", timeout=TIMEOUT)
        for i in range(5):
            await ps(alice).publish(SVC, "news", id=f"i{i}", payload=entry(f"e{i}"),
                                    timeout=TIMEOUT)
        await ps(alice).set_node_config(SVC, "news", submit(max_items="2"), timeout=TIMEOUT)
        res = await ps(alice).get_items(SVC, "news", timeout=TIMEOUT)
        assert result_items(res) == {"i3": "e3", "i4": "e4"}
        with pytest.raises(IqError) as err:
            await ps(alice).set_node_config(SVC, "news", submit(node_type="collection"),
                                            timeout=TIMEOUT)
        assert err.value.iq["error"]["condition"] == "not-acceptable"


# --- 3. errors -------------------------------------------------------------------


MAX_PAYLOAD = 256      # the lowest [host.options.pubsub] max_payload allowed


class People(NamedTuple):
    alice: slixmpp.ClientXMPP       # owns "news"
    bob: slixmpp.ClientXMPP
    carol: slixmpp.ClientXMPP


async def publish_refused(p: People) -> None:
    """Publish (§7.1.3) to a missing node, without permission, oversize, with two payloads,
    no item or an empty item: refused and not stored."""
    alice, bob, carol = p
    e = await error_of(ps(alice).publish(SVC, "nowhere", payload=entry("x"),
                                         timeout=TIMEOUT))
    assert (e.type, e.condition, e.pubsub) == ("cancel", "item-not-found", None)
    # publish_model "publishers" (the default): bob has no affiliation.
    _, values = await node_config(alice, "news")
    assert values["pubsub#publish_model"] == "publishers"
    e = await error_of(ps(bob).publish(SVC, "news", payload=entry("x"), timeout=TIMEOUT))
    assert (e.type, e.condition, e.pubsub) == ("auth", "forbidden", None)
    # Subscribing does not make him a publisher.
    await ps(bob).subscribe(SVC, "news", timeout=TIMEOUT)
    e = await error_of(ps(bob).publish(SVC, "news", payload=entry("x"), timeout=TIMEOUT))
    assert e.condition == "forbidden"
    # Oversize: a payload just over max_payload bytes; one just under passes.
    e = await error_of(ps(alice).publish(SVC, "news", payload=entry("x" * MAX_PAYLOAD),
                                         timeout=TIMEOUT))
    assert (e.type, e.condition, e.pubsub) == ("modify", "not-acceptable", "payload-too-big")
    await ps(alice).publish(SVC, "news", id="small", payload=entry("x" * 100),
                            timeout=TIMEOUT)
    e = await error_of(raw(alice, "set", f"""
        <pubsub xmlns='{NS}'><publish node='news'><item id='two'>
          <entry xmlns='{EX}'>a</entry><entry xmlns='{EX}'>b</entry>
        </item></publish></pubsub>"""))
    assert (e.type, e.condition, e.pubsub) == ("modify", "bad-request", "invalid-payload")
    e = await error_of(raw(alice, "set", f"<pubsub xmlns='{NS}'><publish node='news'/>"
                                         "</pubsub>"))
    assert (e.type, e.condition, e.pubsub) == ("modify", "bad-request", "item-required")
    e = await error_of(raw(alice, "set", f"<pubsub xmlns='{NS}'><publish node='news'>"
                                         "<item id='empty'/></publish></pubsub>"))
    assert (e.condition, e.pubsub) == ("bad-request", "payload-required")
    # Text around the payload element is no part of the payload.
    await raw(alice, "set", f"<pubsub xmlns='{NS}'><publish node='news'><item id='tail'>"
                            f" <entry xmlns='{EX}'>t</entry> trailing </item></publish>"
                            "</pubsub>")
    # None of the refused publications was stored.
    res = await ps(alice).get_items(SVC, "news", timeout=TIMEOUT)
    assert list(result_items(res).items()) == [
        ("i1", "one"), ("small", "x" * 100), ("tail", "t")]


async def transient_node_refusals(p: People) -> None:
    """A transient notification-only node: no item to publish, purge or retract."""
    alice, bob, carol = p
    # A transient notification-only node takes a publish without an item
    # (§7.1.3.6) but has nothing to purge (§8.5.3).
    await ps(alice).create_node(SVC, "pings", config=submit(
        persist_items="0", deliver_payloads="0"), timeout=TIMEOUT)
    res = await raw(alice, "set", f"<pubsub xmlns='{NS}'><publish node='pings'/></pubsub>")
    assert res.xml.find(f"{{{NS}}}pubsub/{{{NS}}}publish/{{{NS}}}item").get("id")
    e = await error_of(ps(alice).purge(SVC, "pings", timeout=TIMEOUT))
    assert (e.type, e.condition, e.pubsub, e.feature) == (
        "cancel", "feature-not-implemented", "unsupported", "persistent-items")
    e = await error_of(ps(alice).retract(SVC, "pings", "any", timeout=TIMEOUT))
    assert (e.condition, e.pubsub, e.feature) == (
        "feature-not-implemented", "unsupported", "persistent-items")
    # ... and refuses an item (§7.1.3.6).
    e = await error_of(ps(alice).publish(SVC, "pings", id="p", timeout=TIMEOUT))
    assert (e.type, e.condition, e.pubsub) == ("modify", "bad-request", "item-forbidden")


async def publish_options_preconditions(p: People) -> None:
    """publish-options the node does not meet: conflict + precondition-not-met (§7.1.5)."""
    alice, bob, carol = p
    # publish-options are preconditions (§7.1.5): a node configured
    # otherwise refuses the publication, a matching one takes it.
    wanted = submit(f"{NS}#publish-options", access_model="whitelist")
    e = await error_of(ps(alice).publish(SVC, "news", id="pre", payload=entry("p"),
                                         options=wanted, timeout=TIMEOUT))
    assert (e.type, e.condition, e.pubsub) == ("cancel", "conflict", "precondition-not-met")
    e = await error_of(ps(alice).publish(
        SVC, "news", id="pre", payload=entry("p"),
        options=submit(f"{NS}#publish-options", unknown_option="1"), timeout=TIMEOUT))
    assert (e.condition, e.pubsub) == ("conflict", "precondition-not-met")
    await ps(alice).publish(SVC, "news", id="pre", payload=entry("p"), options=submit(
        f"{NS}#publish-options", access_model="open", max_items="10"), timeout=TIMEOUT)
    await ps(alice).retract(SVC, "news", "pre", timeout=TIMEOUT)


async def owner_actions_refused(p: People) -> None:
    """Owner actions by a non-owner: forbidden, nothing changes."""
    alice, bob, carol = p
    for request in (ps(bob).get_node_config(SVC, "news", timeout=TIMEOUT),
                    ps(bob).set_node_config(SVC, "news", submit(max_items="5"),
                                            timeout=TIMEOUT),
                    ps(bob).delete_node(SVC, "news", timeout=TIMEOUT),
                    ps(bob).purge(SVC, "news", timeout=TIMEOUT),
                    ps(bob).get_node_affiliations(SVC, "news", timeout=TIMEOUT),
                    ps(bob).modify_affiliations(SVC, "news", [(bob.boundjid.bare, "owner")],
                                                timeout=TIMEOUT)):
        e = await error_of(request)
        assert (e.type, e.condition, e.pubsub) == ("auth", "forbidden", None)
    res = await ps(alice).get_items(SVC, "news", timeout=TIMEOUT)
    assert list(result_items(res)) == ["i1", "small", "tail"]  # not purged
    res = await ps(alice).get_node_affiliations(SVC, "news", timeout=TIMEOUT)
    assert owner_affiliations(res) == {f"alice@{DOMAIN}": "owner"}


async def create_and_configure_refused(p: People) -> None:
    """Create an existing node (§8.1.3); invalid configuration values (§8.2.5, also at
    create)."""
    alice, bob, carol = p
    e = await error_of(ps(bob).create_node(SVC, "news", timeout=TIMEOUT))
    assert (e.type, e.condition, e.pubsub) == ("cancel", "conflict", None)

    # -- configuration: invalid values are refused and change nothing.
    for form in (submit(max_items="0"), submit(max_items="many"),
                 submit(access_model="roster"), submit(deliver_payloads="maybe"),
                 submit(no_such_option="1")):
        e = await error_of(ps(alice).set_node_config(SVC, "news", form, timeout=TIMEOUT))
        assert (e.type, e.condition) == ("modify", "not-acceptable")
    _, values = await node_config(alice, "news")
    assert (values["pubsub#max_items"], values["pubsub#access_model"]) == ("10", "open")
    e = await error_of(ps(alice).create_node(SVC, "bad", config=submit(max_items="-1"),
                                             timeout=TIMEOUT))
    assert e.condition == "not-acceptable"
    e = await error_of(ps(alice).get_items(SVC, "bad", timeout=TIMEOUT))
    assert e.condition == "item-not-found"                    # not created


async def subscribe_refused(p: People) -> None:
    """Subscribe (§6.1.3) as an outcast, to a whitelist node, for someone else, without node
    or JID."""
    alice, bob, carol = p
    await ps(alice).modify_affiliations(SVC, "news", [(f"carol@{DOMAIN}", "outcast")],
                                        timeout=TIMEOUT)
    e = await error_of(ps(carol).subscribe(SVC, "news", timeout=TIMEOUT))
    assert (e.type, e.condition, e.pubsub) == ("auth", "forbidden", None)
    e = await error_of(ps(carol).get_items(SVC, "news", timeout=TIMEOUT))
    assert e.condition == "forbidden"

    await ps(alice).create_node(SVC, "club", config=submit(access_model="whitelist"),
                                timeout=TIMEOUT)
    await ps(alice).publish(SVC, "club", id="secret", payload=entry("s"), timeout=TIMEOUT)
    e = await error_of(ps(bob).subscribe(SVC, "club", timeout=TIMEOUT))
    assert (e.type, e.condition, e.pubsub) == ("cancel", "not-allowed", "closed-node")
    e = await error_of(ps(bob).get_items(SVC, "club", timeout=TIMEOUT))
    assert (e.type, e.condition, e.pubsub) == ("cancel", "not-allowed", "closed-node")
    e = await error_of(ps(bob).get_item(SVC, "club", "secret", timeout=TIMEOUT))
    assert (e.condition, e.pubsub) == ("not-allowed", "closed-node")

    e = await error_of(ps(bob).subscribe(SVC, "news", subscribee=f"alice@{DOMAIN}",
                                         timeout=TIMEOUT))
    assert (e.type, e.condition, e.pubsub) == ("modify", "bad-request", "invalid-jid")
    e = await error_of(raw(bob, "set", f"<pubsub xmlns='{NS}'>"
                                       f"<subscribe jid='{bob.boundjid.bare}'/></pubsub>"))
    assert (e.condition, e.pubsub) == ("bad-request", "nodeid-required")
    e = await error_of(raw(bob, "set", f"<pubsub xmlns='{NS}'>"
                                       "<subscribe node='news'/></pubsub>"))
    assert (e.condition, e.pubsub) == ("bad-request", "jid-required")


async def unsubscribe_refused(p: People) -> None:
    """Unsubscribe (§6.2.3) when not subscribed, or someone else."""
    alice, bob, carol = p
    e = await error_of(ps(alice).unsubscribe(SVC, "news", timeout=TIMEOUT))
    assert (e.type, e.condition, e.pubsub) == ("cancel", "unexpected-request", "not-subscribed")
    e = await error_of(ps(alice).unsubscribe(SVC, "news", subscribee=bob.boundjid.bare,
                                             timeout=TIMEOUT))
    assert (e.type, e.condition) == ("auth", "forbidden")
    res = await ps(alice).get_node_subscriptions(SVC, "news", timeout=TIMEOUT)
    assert owner_subscriptions(res) == {f"bob@{DOMAIN}"}        # still subscribed


async def retract_refused(p: People) -> None:
    """Retract (§7.2.3): a missing item, no id, by a non-publisher."""
    alice, bob, carol = p
    e = await error_of(ps(alice).retract(SVC, "news", "nope", timeout=TIMEOUT))
    assert (e.type, e.condition, e.pubsub) == ("cancel", "item-not-found", None)
    e = await error_of(raw(alice, "set", f"<pubsub xmlns='{NS}'><retract node='news'/>"
                                         "</pubsub>"))
    assert (e.condition, e.pubsub) == ("bad-request", "item-required")
    e = await error_of(ps(bob).retract(SVC, "news", "i1", timeout=TIMEOUT))
    assert e.condition == "forbidden"


async def unimplemented_refused(p: People) -> None:
    """Actions the service does not implement (§6.3.4, §6.4), and a wrong iq type."""
    alice, bob, carol = p
    e = await error_of(raw(bob, "get", f"<pubsub xmlns='{NS}'><options node='news' "
                                       f"jid='{bob.boundjid.bare}'/></pubsub>"))
    assert (e.type, e.condition, e.pubsub, e.feature) == (
        "cancel", "feature-not-implemented", "unsupported", "subscription-options")
    e = await error_of(raw(bob, "get", f"<pubsub xmlns='{NS}'><default/></pubsub>"))
    assert (e.condition, e.pubsub, e.feature) == (
        "feature-not-implemented", "unsupported", "retrieve-default")
    e = await error_of(raw(alice, "get", f"<pubsub xmlns='{NS}'><publish node='news'>"
                                         f"<item><entry xmlns='{EX}'/></item></publish>"
                                         "</pubsub>"))
    assert (e.condition, e.pubsub) == ("bad-request", None)


async def test_errors(make_server: Any) -> None:
    """Each failure is answered with the RFC 6120 condition and the error
    type of the XEP's example, plus the pubsub#errors child where XEP-0060
    defines one. Publish (§7.1.3): to a missing node, without permission
    (publish_model publishers), an oversize payload ([host.options.pubsub]
    max_payload), two payloads, no item, an item without payload; none is
    stored; a transient notification node takes no item and has none to
    purge or retract; publish-options the node does not meet (conflict +
    precondition-not-met, §7.1.5). Owner actions by a non-owner: configure
    (§8.2), delete (§8.4), purge (§8.5), affiliations (§8.9); nothing
    changes. Create an existing node (§8.1.3). An invalid configuration
    value (§8.2.5, also at create): not-acceptable, nothing changes.
    Subscribe (§6.1.3): as an outcast, to a whitelist node as a non-member
    (and retrieve its items, §6.5.9), with someone else's JID, without a
    node, without a JID. Unsubscribe (§6.2.3):
    when not subscribed, someone else's JID. Retract (§7.2.3): a missing
    item, without an id, by a non-publisher. Actions the service does not
    implement (subscription options §6.3.4, default options §6.4), and an
    action in the wrong iq type. The steps share the node "news" and its
    items, so each is checked on what the one before left."""
    extra = f"[host.options.pubsub]\nmax_payload = {MAX_PAYLOAD}\n"
    async with make_server(host=HOST, extra=extra) as srv:
        p = People(*[await new_user(srv, u) for u in ("alice", "bob", "carol")])
        await ps(p.alice).create_node(SVC, "news", timeout=TIMEOUT)
        await ps(p.alice).publish(SVC, "news", id="i1", payload=entry("one"), timeout=TIMEOUT)

        await publish_refused(p)
        await transient_node_refusals(p)
        await publish_options_preconditions(p)
        await owner_actions_refused(p)
        await create_and_configure_refused(p)
        await subscribe_refused(p)
        await unsubscribe_refused(p)
        await retract_refused(p)
        await unimplemented_refused(p)


# --- 4. affiliations -------------------------------------------------------------


async def test_affiliations(make_server: Any) -> None:
    """§8.9: the owner makes bob a publisher (he can then publish, §7.1, and
    retract any item, §7.2), carol a member of a whitelist node (she can then
    subscribe and retrieve, §6.1.3.4), then an outcast (her subscription is
    removed and she is refused, §4.1); making a node whitelist-only ends the
    subscriptions of non-members; the last owner cannot be removed
    (§8.9.2: not-acceptable, and nothing of the request is applied) until
    there is another; each user lists their
    own affiliations (§5.7)."""
    async with make_server(host=HOST) as srv:
        alice = await new_user(srv, "alice")
        bob = await new_user(srv, "bob")
        carol = await new_user(srv, "carol")
        a, b, c = (f"{u}@{DOMAIN}" for u in ("alice", "bob", "carol"))
        await ps(alice).create_node(SVC, "board", timeout=TIMEOUT)
        await ps(alice).create_node(SVC, "club", config=submit(access_model="whitelist"),
                                    timeout=TIMEOUT)

        # publisher
        e = await error_of(ps(bob).publish(SVC, "board", payload=entry("x"), timeout=TIMEOUT))
        assert e.condition == "forbidden"
        await ps(alice).modify_affiliations(SVC, "board", [(b, "publisher")], timeout=TIMEOUT)
        res = await ps(alice).get_node_affiliations(SVC, "board", timeout=TIMEOUT)
        assert owner_affiliations(res) == {a: "owner", b: "publisher"}
        res = await ps(bob).publish(SVC, "board", id="by-bob", payload=entry("bob's"),
                                    timeout=TIMEOUT)
        assert res["pubsub"]["publish"]["item"]["id"] == "by-bob"
        await ps(alice).publish(SVC, "board", id="by-alice", payload=entry("alice's"),
                                timeout=TIMEOUT)
        res = await ps(alice).get_items(SVC, "board", timeout=TIMEOUT)
        assert result_items(res) == {"by-bob": "bob's", "by-alice": "alice's"}
        await ps(bob).retract(SVC, "board", "by-alice", timeout=TIMEOUT)
        # ... but a publisher is not an owner.
        e = await error_of(ps(bob).purge(SVC, "board", timeout=TIMEOUT))
        assert e.condition == "forbidden"

        # member of a whitelist node
        e = await error_of(ps(carol).subscribe(SVC, "club", timeout=TIMEOUT))
        assert (e.condition, e.pubsub) == ("not-allowed", "closed-node")
        await ps(alice).modify_affiliations(SVC, "club", [(c, "member")], timeout=TIMEOUT)
        await ps(carol).subscribe(SVC, "club", timeout=TIMEOUT)
        wait = expect(carol, "pubsub_publish")
        await ps(alice).publish(SVC, "club", id="m1", payload=entry("members only"),
                                timeout=TIMEOUT)
        assert notified_item(await got(wait)) == ("club", "m1", "members only", 1)
        res = await ps(carol).get_items(SVC, "club", timeout=TIMEOUT)
        assert result_items(res) == {"m1": "members only"}
        # a member may not publish (publish_model "publishers").
        e = await error_of(ps(carol).publish(SVC, "club", payload=entry("x"), timeout=TIMEOUT))
        assert e.condition == "forbidden"

        # outcast: subscription removed, no more notifications, refused.
        await ps(alice).modify_affiliations(SVC, "club", [(c, "outcast")], timeout=TIMEOUT)
        res = await ps(alice).get_node_subscriptions(SVC, "club", timeout=TIMEOUT)
        assert owner_subscriptions(res) == set()
        res = await ps(carol).get_subscriptions(SVC, timeout=TIMEOUT)
        assert own_subscriptions(res) == []
        carol_next = first_of(carol, "pubsub_publish", "message")
        await ps(alice).publish(SVC, "club", id="m2", payload=entry("not for carol"),
                                timeout=TIMEOUT)
        await barrier(alice, carol, carol_next)
        for request in (ps(carol).subscribe(SVC, "club", timeout=TIMEOUT),
                        ps(carol).get_items(SVC, "club", timeout=TIMEOUT)):
            e = await error_of(request)
            assert (e.type, e.condition) == ("auth", "forbidden")

        # Closing a node to a whitelist ends the subscriptions of those who
        # are not on it (bob, a publisher, is).
        await ps(bob).subscribe(SVC, "board", timeout=TIMEOUT)
        await ps(carol).subscribe(SVC, "board", timeout=TIMEOUT)
        await ps(alice).set_node_config(SVC, "board", submit(access_model="whitelist"),
                                        timeout=TIMEOUT)
        res = await ps(alice).get_node_subscriptions(SVC, "board", timeout=TIMEOUT)
        assert owner_subscriptions(res) == {b}

        # the last owner
        e = await error_of(ps(alice).modify_affiliations(SVC, "board", [(a, "none")],
                                                         timeout=TIMEOUT))
        assert (e.type, e.condition) == ("modify", "not-acceptable")
        e = await error_of(ps(alice).modify_affiliations(
            SVC, "board", [(b, "member"), (a, "publisher")], timeout=TIMEOUT))
        assert e.condition == "not-acceptable"
        res = await ps(alice).get_node_affiliations(SVC, "board", timeout=TIMEOUT)
        assert owner_affiliations(res) == {a: "owner", b: "publisher"}    # all or nothing
        # With a second owner, alice may step down.
        await ps(alice).modify_affiliations(SVC, "board", [(b, "owner")], timeout=TIMEOUT)
        await ps(alice).modify_affiliations(SVC, "board", [(a, "none")], timeout=TIMEOUT)
        res = await ps(bob).get_node_affiliations(SVC, "board", timeout=TIMEOUT)
        assert owner_affiliations(res) == {b: "owner"}
        e = await error_of(ps(alice).get_node_config(SVC, "board", timeout=TIMEOUT))
        assert e.condition == "forbidden"

        # §5.7: each one's own affiliations (also for one node).
        res = await ps(alice).get_affiliations(SVC, timeout=TIMEOUT)
        assert own_affiliations(res) == {"club": "owner"}
        res = await ps(bob).get_affiliations(SVC, timeout=TIMEOUT)
        assert own_affiliations(res) == {"board": "owner"}
        res = await ps(carol).get_affiliations(SVC, timeout=TIMEOUT)
        assert own_affiliations(res) == {"club": "outcast"}
        res = await ps(carol).get_affiliations(SVC, "club", timeout=TIMEOUT)
        assert own_affiliations(res) == {"club": "outcast"}
        res = await ps(carol).get_affiliations(SVC, "board", timeout=TIMEOUT)
        assert own_affiliations(res) == {}


# --- 5. subscriptions survive logout --------------------------------------------


async def test_subscription_survives_logout(make_server: Any) -> None:
    """§6.1: a subscription belongs to the JID, not to the session: bob
    subscribes his bare JID, logs out and in again, gets the next
    notification, and §5.6 lists the subscription with its subid."""
    async with make_server(host=HOST) as srv:
        alice = await new_user(srv, "alice")
        bob_jid = await srv.user("bob")
        bob = await login(srv, bob_jid)
        await ps(alice).create_node(SVC, "news", timeout=TIMEOUT)
        await ps(alice).create_node(SVC, "other", timeout=TIMEOUT)
        res = await ps(bob).subscribe(SVC, "news", timeout=TIMEOUT)
        subid = res["pubsub"]["subscription"]["subid"]

        gone = first_of(bob, "disconnected")
        bob.disconnect()
        await first(gone)
        await ps(alice).publish(SVC, "news", id="while-away", payload=entry("missed"),
                                timeout=TIMEOUT)

        bob = await login(srv, bob_jid)
        wait = expect(bob, "pubsub_publish")
        await ps(alice).publish(SVC, "news", id="back", payload=entry("welcome back"),
                                timeout=TIMEOUT)
        assert notified_item(await got(wait)) == ("news", "back", "welcome back", 1)
        res = await ps(bob).get_subscriptions(SVC, timeout=TIMEOUT)
        assert own_subscriptions(res) == [("news", bob_jid, "subscribed", subid)]
        res = await ps(bob).get_subscriptions(SVC, "other", timeout=TIMEOUT)
        assert own_subscriptions(res) == []
        # The item published while he was away is there to retrieve.
        res = await ps(bob).get_items(SVC, "news", timeout=TIMEOUT)
        assert result_items(res) == {"while-away": "missed", "back": "welcome back"}


# --- 6. service discovery -------------------------------------------------------


async def test_disco(make_server: Any) -> None:
    """§5.1 disco#info on the service: identity pubsub/service and the
    features; §5.3 on a node: identity pubsub/leaf (a missing node is
    item-not-found); §5.2 disco#items on the service: the nodes; §5.5 on a
    node: its item ids (names)."""
    async with make_server(host=HOST) as srv:
        alice = await new_user(srv, "alice")
        disco = alice.plugin["xep_0030"]
        res = await disco.get_info(jid=SVC, cached=False, timeout=TIMEOUT)
        info = res["disco_info"]
        assert ("pubsub", "service") in {(i[0], i[1]) for i in info["identities"]}
        assert {NS, f"{NS}#create-nodes", f"{NS}#instant-nodes", f"{NS}#publish",
                f"{NS}#subscribe", f"{NS}#retrieve-items", f"{NS}#retract-items",
                f"{NS}#delete-nodes", f"{NS}#purge-nodes", f"{NS}#config-node",
                f"{NS}#modify-affiliations", f"{NS}#retrieve-subscriptions",
                f"{NS}#retrieve-affiliations", f"{NS}#access-whitelist",
                f"{NS}#persistent-items", f"{NS}#publish-options",
                "http://jabber.org/protocol/disco#info",
                "http://jabber.org/protocol/disco#items"} <= set(info["features"])
        # Only what is implemented: not subscription options, which it refuses.
        assert f"{NS}#subscription-options" not in set(info["features"])

        res = await disco.get_items(jid=SVC, timeout=TIMEOUT)
        assert res["disco_items"]["items"] == set()
        for node in ("news", "blog"):
            await ps(alice).create_node(SVC, node, timeout=TIMEOUT)
        for i in ("a1", "a2"):
            await ps(alice).publish(SVC, "news", id=i, payload=entry(i), timeout=TIMEOUT)

        res = await disco.get_info(jid=SVC, node="news", cached=False, timeout=TIMEOUT)
        info = res["disco_info"]
        assert info["node"] == "news"
        assert {(i[0], i[1]) for i in info["identities"]} == {("pubsub", "leaf")}
        assert NS in set(info["features"])
        e = await error_of(disco.get_info(jid=SVC, node="nope", cached=False, timeout=TIMEOUT))
        assert e.condition == "item-not-found"

        res = await disco.get_items(jid=SVC, timeout=TIMEOUT)
        assert res["disco_items"]["items"] == {(SVC, "blog", None), (SVC, "news", None)}
        res = await disco.get_items(jid=SVC, node="news", timeout=TIMEOUT)
        assert res["disco_items"]["node"] == "news"
        assert {(j, name) for j, _, name in res["disco_items"]["items"]} == {
            (SVC, "a1"), (SVC, "a2")}
        res = await disco.get_items(jid=SVC, node="blog", timeout=TIMEOUT)
        assert res["disco_items"]["items"] == set()


# --- 7. persistence across a restart --------------------------------------------


async def test_nodes_survive_restart(make_server: Any) -> None:
    """§4.1 persistent items (and §8.2 configuration, §8.9 affiliations,
    §6.1 subscriptions) survive a restart of the server on the same data
    directory (fs storage)."""
    async with make_server(host=HOST) as srv:
        alice = await new_user(srv, "alice")
        bob = await new_user(srv, "bob")
        a, b = alice.boundjid.bare, bob.boundjid.bare
        await ps(alice).create_node(SVC, "log", config=submit(max_items="5"), timeout=TIMEOUT)
        await ps(alice).modify_affiliations(SVC, "log", [(b, "publisher")], timeout=TIMEOUT)
        res = await ps(bob).subscribe(SVC, "log", timeout=TIMEOUT)
        subid = res["pubsub"]["subscription"]["subid"]
        for i in range(1, 4):
            await ps(alice).publish(SVC, "log", id=f"i{i}", payload=entry(f"entry {i}"),
                                    timeout=TIMEOUT)
        await ps(alice).retract(SVC, "log", "i2", timeout=TIMEOUT)

    async with make_server(host=HOST) as srv:
        alice, bob = await login(srv, a), await login(srv, b)
        res = await ps(bob).get_items(SVC, "log", timeout=TIMEOUT)
        assert list(result_items(res).items()) == [("i1", "entry 1"), ("i3", "entry 3")]
        _, values = await node_config(alice, "log")
        assert values["pubsub#max_items"] == "5"
        res = await ps(alice).get_node_affiliations(SVC, "log", timeout=TIMEOUT)
        assert owner_affiliations(res) == {a: "owner", b: "publisher"}
        res = await ps(bob).get_subscriptions(SVC, timeout=TIMEOUT)
        assert own_subscriptions(res) == [("log", b, "subscribed", subid)]
        wait = expect(bob, "pubsub_publish")
        await ps(alice).publish(SVC, "log", id="i4", payload=entry("after"), timeout=TIMEOUT)
        assert notified_item(await got(wait)) == ("log", "i4", "after", 1)
        res = await alice.plugin["xep_0030"].get_items(jid=SVC, timeout=TIMEOUT)
        assert res["disco_items"]["items"] == {(SVC, "log", None)}
