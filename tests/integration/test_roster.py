"""RFC 6121 §2 roster management and roster versioning (§2.6, XEP-0237), end to end
with real slixmpp clients (and a raw client for the stream features)."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, Awaitable, Callable
from xml.etree import ElementTree

import pytest
from slixmpp.exceptions import IqError

from tests.conftest import DOMAIN, PASSWORD, TIMEOUT, Running
from tests.rawclient import Raw
from vinespy import ns
from vinespy.jid import JID
from vinespy.storage import Contact

pytestmark = pytest.mark.integration

ROSTER = "jabber:iq:roster"
QUERY = f"{{{ROSTER}}}query"
BOB = f"bob@{DOMAIN}"
CAROL = f"carol@{DOMAIN}"


def expect(client: Any, name: str, match: Callable[[Any], bool] = lambda _: True
           ) -> Awaitable[Any]:
    """The next ``name`` event of ``client`` that ``match`` accepts; the handler is
    registered now, so an event fired before the first await is not missed."""
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def handler(data: Any) -> None:
        if not fut.done() and match(data):
            fut.set_result(data)
    client.add_event_handler(name, handler)

    async def wait() -> Any:
        try:
            return await asyncio.wait_for(fut, TIMEOUT)
        finally:
            client.del_event_handler(name, handler)
    return wait()


def is_push(jid: str) -> Callable[[Any], bool]:
    """Matches a roster push (iq set) carrying the item for ``jid``."""
    return lambda iq: iq["type"] == "set" and jid in items_of(iq)


def items_of(iq: Any) -> dict[str, dict[str, Any]]:
    return {str(j): dict(v) for j, v in iq["roster"]["items"].items()}


async def get_roster(client: Any) -> dict[str, dict[str, Any]]:
    """The whole roster: a get without 'ver' (slixmpp's get_roster sends the version
    of its cache, which the pushes keep current, and then gets an empty result)."""
    return items_of(await raw_iq(client, "get", f"<query xmlns='{ROSTER}'/>"))


async def raw_iq(client: Any, type: str, query: str, to: str | None = None) -> Any:
    """Send ``<iq type=…>query</iq>`` (query as XML text); the result, or IqError."""
    iq = client.make_iq_set(ito=to) if type == "set" else client.make_iq_get(ito=to)
    iq.xml.append(ElementTree.fromstring(query))
    return await iq.send(timeout=TIMEOUT)


async def error_of(request: Awaitable[Any]) -> str:
    """The stanza error condition the request is answered with."""
    with pytest.raises(IqError) as exc:
        await request
    return str(exc.value.iq["error"]["condition"])


async def stored(srv: Running, owner: str) -> Any:
    user = await srv.storage.find_user(JID.parse(owner))
    assert user is not None
    return user


async def put_contact(srv: Running, owner: str, contact: Contact) -> None:
    """Write a record straight into storage (subscriptions have no protocol here yet)."""
    user = await stored(srv, owner)
    user.roster[contact.jid] = contact
    user.roster_version += 1
    await srv.storage.save_user(user)


async def alice(srv: Running, resource: str = "one") -> Any:
    """alice (created on first use) logged in as ``resource``."""
    if await srv.storage.find_user(JID.parse(f"alice@{DOMAIN}")) is None:
        await srv.user("alice")
    return await srv.login(f"alice@{DOMAIN}/{resource}")


# --- roster get and set ----------------------------------------------------------


async def test_empty_roster(server: Running) -> None:
    """A new account's roster is empty and at version "0"."""
    a = await alice(server)
    iq = await a.get_roster(timeout=TIMEOUT)
    assert items_of(iq) == {}
    assert iq["roster"]["ver"] == "0"


async def test_add_item_with_name_and_groups(server: Running) -> None:
    """A roster set adds the item; the next get returns it with name, groups, subscription none."""
    a = await alice(server)
    await a.get_roster(timeout=TIMEOUT)
    await a.update_roster(BOB, name="Bob \u00c4", groups=["Friends", "Work"], timeout=TIMEOUT)
    items = await get_roster(a)
    assert items[BOB]["name"] == "Bob \u00c4"
    assert sorted(items[BOB]["groups"]) == ["Friends", "Work"]
    assert items[BOB]["subscription"] == "none" and not items[BOB]["ask"]
    user = await stored(server, f"alice@{DOMAIN}")
    assert user.roster[JID.parse(BOB)] == Contact(JID.parse(BOB), name="Bob \u00c4",
                                                  groups=["Friends", "Work"])


async def test_push_reaches_interested_resources_only(server: Running) -> None:
    """The push of a change goes to every resource that requested the roster, the
    changing one included, and not to one that never did (RFC 6121 §2.1.6)."""
    one = await alice(server, "one")
    two = await alice(server, "two")
    three = await alice(server, "three")
    await one.get_roster(timeout=TIMEOUT)
    await two.get_roster(timeout=TIMEOUT)
    seen_by_three: list[Any] = []
    three.add_event_handler("roster_update", seen_by_three.append)
    pushes = [expect(c, "roster_update", is_push(BOB)) for c in (one, two)]
    await one.update_roster(BOB, name="Bob", groups=["Friends"], timeout=TIMEOUT)
    got = await asyncio.gather(*pushes)
    version = str((await stored(server, f"alice@{DOMAIN}")).roster_version)
    for push in got:
        assert items_of(push)[BOB]["name"] == "Bob"
        assert push["roster"]["ver"] == version
        assert push["from"].bare in ("", f"alice@{DOMAIN}")
    assert got[0]["id"] != got[1]["id"]
    # Stanzas to one stream arrive in order: had three been sent the push, it
    # would have arrived before the answer to this later ping.
    await three.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)
    assert seen_by_three == []


async def test_update_keeps_subscription_state(server: Running) -> None:
    """Renaming and regrouping an item keeps its subscription (the client's
    'subscription' attribute is ignored, RFC 6121 §2.1.5)."""
    await server.user("bob")
    # Both sides, as they would be: alice's login probes bob, and a bob
    # without alice in his roster would answer "unsubscribed" (RFC 6121 §4.3.2).
    await put_contact(server, BOB, Contact(JID.parse(f"alice@{DOMAIN}"), subscription="both"))
    a = await alice(server)
    await put_contact(server, f"alice@{DOMAIN}",
                      Contact(JID.parse(BOB), name="B", subscription="both", groups=["Old"]))
    await a.update_roster(BOB, name="Bobby", groups=["New"], subscription="none",
                          timeout=TIMEOUT)
    items = await get_roster(a)
    assert items[BOB]["subscription"] == "both"
    assert items[BOB]["name"] == "Bobby" and items[BOB]["groups"] == ["New"]
    contact = (await stored(server, f"alice@{DOMAIN}")).roster[JID.parse(BOB)]
    assert (contact.subscription, contact.groups) == ("both", ["New"])


@pytest.mark.parametrize("item,condition", [
    (f"<item jid='{BOB}'><group>A</group><group>A</group></item>", "bad-request"),
    (f"<item jid='{BOB}'><group/></item>", "not-acceptable"),
    (f"<item jid='{BOB}'/><item jid='{CAROL}'/>", "bad-request"),
    (f"<item jid='alice@{DOMAIN}'/>", "not-allowed"),
], ids=["duplicate group", "empty group", "two items", "own jid"])
async def test_invalid_roster_set(server: Running, item: str, condition: str) -> None:
    """Invalid roster sets get the RFC 6121 §2.3.3 error and change nothing."""
    a = await alice(server)
    answer = raw_iq(a, "set", f"<query xmlns='{ROSTER}'>{item}</query>")
    assert await error_of(answer) == condition
    user = await stored(server, f"alice@{DOMAIN}")
    assert user.roster == {} and user.roster_version == 0


async def test_remove_pushes_subscription_remove(server: Running) -> None:
    """Removing an item deletes it and pushes it with subscription='remove' (§2.5.2)."""
    one = await alice(server, "one")
    two = await alice(server, "two")
    await one.get_roster(timeout=TIMEOUT)
    await two.get_roster(timeout=TIMEOUT)
    added = expect(two, "roster_update", is_push(BOB))
    await one.update_roster(BOB, name="Bob", timeout=TIMEOUT)
    await added
    removed = expect(two, "roster_update", is_push(BOB))
    await one.del_roster_item(BOB)
    push = await removed
    assert items_of(push)[BOB]["subscription"] == "remove"
    assert BOB not in await get_roster(two)
    assert JID.parse(BOB) not in (await stored(server, f"alice@{DOMAIN}")).roster


async def test_remove_cancels_subscriptions(server: Running) -> None:
    """Removing a "both" item sends the contact unsubscribe and unsubscribed from the
    user's bare JID (RFC 6121 §2.5.2)."""
    a = await alice(server)
    b = await server.login(await server.user("bob"))
    await b.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)     # bob is available
    await put_contact(server, f"alice@{DOMAIN}", Contact(JID.parse(BOB), subscription="both"))
    # bob's side applies RFC 6121 Appendix A.3: delivered only if he had alice too.
    await put_contact(server, BOB, Contact(JID.parse(f"alice@{DOMAIN}"), subscription="both"))
    unsubscribe = expect(b, "presence_unsubscribe")
    unsubscribed = expect(b, "presence_unsubscribed")
    # A raw set: slixmpp's del_roster_item would send the presences itself.
    await raw_iq(a, "set", f"<query xmlns='{ROSTER}'><item jid='{BOB}' subscription='remove'/>"
                           "</query>")
    for presence in await asyncio.gather(unsubscribe, unsubscribed):
        assert str(presence["from"]) == f"alice@{DOMAIN}"


async def test_remove_cancels_subscriptions_without_subscription_module(
        make_server: Any) -> None:
    """A host without the subscription module still sends the contact unsubscribe
    and unsubscribed on removal (§2.5.2), as plain stanzas no module claims."""
    async with make_server(host={"modules": ["roster", "presence", "ping"]}) as srv:
        a = await alice(srv)
        b = await srv.login(await srv.user("bob"))
        await b.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)     # bob is available
        await put_contact(srv, f"alice@{DOMAIN}", Contact(JID.parse(BOB), subscription="both"))
        unsubscribe = expect(b, "presence_unsubscribe")
        unsubscribed = expect(b, "presence_unsubscribed")
        await raw_iq(a, "set", f"<query xmlns='{ROSTER}'><item jid='{BOB}' "
                               "subscription='remove'/></query>")
        for presence in await asyncio.gather(unsubscribe, unsubscribed):
            assert str(presence["from"]) == f"alice@{DOMAIN}"


async def test_remove_missing_item_not_found(server: Running) -> None:
    """Removing an item the roster does not hold is item-not-found (RFC 6121 §2.5.3)."""
    a = await alice(server)
    await a.get_roster(timeout=TIMEOUT)
    assert await error_of(a.del_roster_item(CAROL)) == "item-not-found"
    assert (await stored(server, f"alice@{DOMAIN}")).roster_version == 0


async def test_strangers_pending_request_is_not_an_item(server: Running) -> None:
    """A hidden record (a stranger's pending request) is not in the roster; removing it
    is item-not-found; a roster set for it makes it an item that keeps the request."""
    a = await alice(server)
    # login() returns once the session is bound, with the initial presence only
    # sent: were it handled after the record below is written, the server would
    # deliver carol's pending request (RFC 6121 §3.1.3) and slixmpp, which
    # authorizes every request by default, would answer "subscribed", making
    # carol a visible item. The answer to a later ping comes after the presence
    # has been handled (one stream's stanzas are handled in order).
    await a.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)
    await put_contact(server, f"alice@{DOMAIN}",
                      Contact(JID.parse(CAROL), pending_in=True, hidden=True))
    assert await get_roster(a) == {}
    remove = f"<query xmlns='{ROSTER}'><item jid='{CAROL}' subscription='remove'/></query>"
    assert await error_of(raw_iq(a, "set", remove)) == "item-not-found"
    await a.update_roster(CAROL, name="Carol", timeout=TIMEOUT)
    assert (await get_roster(a))[CAROL]["name"] == "Carol"
    contact = (await stored(server, f"alice@{DOMAIN}")).roster[JID.parse(CAROL)]
    assert contact.pending_in and not contact.hidden


async def test_roster_limit(server: Running) -> None:
    """A roster at max_items takes no new item (not-allowed); existing ones still change."""
    server.server.hosts[DOMAIN].modules["roster"].max_items = 2
    a = await alice(server)
    await a.update_roster(BOB, timeout=TIMEOUT)
    await a.update_roster(CAROL, timeout=TIMEOUT)
    assert await error_of(a.update_roster(f"dave@{DOMAIN}", timeout=TIMEOUT)) == "not-allowed"
    await a.update_roster(BOB, name="Bob", timeout=TIMEOUT)
    assert sorted(await get_roster(a)) == [BOB, CAROL]


async def test_concurrent_sets_are_not_lost(server: Running) -> None:
    """Roster sets from two resources at once all end up stored (per-user write lock)."""
    one = await alice(server, "one")
    two = await alice(server, "two")
    jids = [f"friend{i}@{DOMAIN}" for i in range(20)]
    await asyncio.gather(*((one if i % 2 else two).update_roster(j, timeout=TIMEOUT)
                           for i, j in enumerate(jids)))
    user = await stored(server, f"alice@{DOMAIN}")
    assert sorted(str(j) for j in user.roster) == sorted(jids)
    assert user.roster_version == 20


# --- roster versioning (RFC 6121 §2.6, XEP-0237) -----------------------------------


async def test_versioned_get(server: Running) -> None:
    """A get with the current ver is an empty result; with an older ver the whole roster."""
    a = await alice(server)
    await a.update_roster(BOB, name="Bob", timeout=TIMEOUT)
    await a.update_roster(CAROL, name="Carol", timeout=TIMEOUT)
    current = str((await stored(server, f"alice@{DOMAIN}")).roster_version)
    result = await raw_iq(a, "get", f"<query xmlns='{ROSTER}' ver='{current}'/>")
    assert result["type"] == "result" and result.xml.find(QUERY) is None
    result = await raw_iq(a, "get", f"<query xmlns='{ROSTER}' ver='1'/>")
    query = result.xml.find(QUERY)
    assert query is not None and query.get("ver") == current
    assert sorted(i.get("jid") for i in query) == [BOB, CAROL]
    result = await raw_iq(a, "get", f"<query xmlns='{ROSTER}' ver=''/>")
    assert len(result.xml.find(QUERY)) == 2


async def test_versioned_get_makes_resource_interested(server: Running) -> None:
    """A resource whose versioned get was answered empty still receives pushes."""
    one = await alice(server, "one")
    two = await alice(server, "two")
    current = str((await stored(server, f"alice@{DOMAIN}")).roster_version)
    result = await raw_iq(two, "get", f"<query xmlns='{ROSTER}' ver='{current}'/>")
    assert result.xml.find(QUERY) is None
    push = expect(two, "roster_update", is_push(BOB))
    await one.update_roster(BOB, timeout=TIMEOUT)
    assert BOB in items_of(await push)


async def test_rosterver_stream_feature(server: Running) -> None:
    """<ver xmlns='urn:xmpp:features:rosterver'/> is offered after authentication only."""
    await server.user("alice")
    raw = await Raw.connect(server.port)
    raw.open_stream(DOMAIN)
    assert b"rosterver" not in await raw.features()
    ctx = ssl.create_default_context()
    server.ca.configure_trust(ctx)
    await raw.starttls(ctx, DOMAIN)
    raw.open_stream(DOMAIN)
    assert b"rosterver" not in await raw.features()
    assert (await raw.plain("alice", PASSWORD)).startswith(b"<success")
    raw.open_stream(DOMAIN)
    features = await raw.features()
    assert b"<ver xmlns='urn:xmpp:features:rosterver'/>" in features
    # RFC 6121 §3.4.1: pre-approval is supported, so it is advertised.
    assert b"<sub xmlns='urn:xmpp:features:pre-approval'/>" in features
    assert f"<bind xmlns='{ns.BIND}'/>".encode() in features
    raw.close()
    a = await alice(server)
    assert "rosterver" in a.features


# --- someone else's roster, persistence ----------------------------------------------


async def test_other_users_roster_forbidden(server: Running) -> None:
    """Getting or setting another account's roster (or a missing one's) is forbidden."""
    a = await alice(server)
    await server.user("bob")
    for target in (BOB, f"nobody@{DOMAIN}"):
        for type in ("get", "set"):
            query = f"<query xmlns='{ROSTER}'><item jid='{CAROL}'/></query>" if type == "set" \
                else f"<query xmlns='{ROSTER}'/>"
            assert await error_of(raw_iq(a, type, query, to=target)) == "forbidden"
    assert (await stored(server, BOB)).roster == {}


async def test_roster_survives_restart(make_server: Any) -> None:
    """Items, their name, groups and the roster version survive a server restart."""
    async with make_server() as srv:
        a = await alice(srv)
        await a.update_roster(BOB, name="Bob", groups=["Friends"], timeout=TIMEOUT)
        version = (await a.get_roster(timeout=TIMEOUT))["roster"]["ver"]
    async with make_server() as srv:
        a = await alice(srv)
        iq = await a.get_roster(timeout=TIMEOUT)
        assert iq["roster"]["ver"] == version
        assert items_of(iq)[BOB]["name"] == "Bob"
        assert items_of(iq)[BOB]["groups"] == ["Friends"]
