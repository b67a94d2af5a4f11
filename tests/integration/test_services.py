"""Account services end to end: vCards (XEP-0054), private XML (XEP-0049), last
activity (XEP-0012) and account disco (XEP-0030), with real slixmpp clients."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable
from xml.etree.ElementTree import Element, SubElement, tostring

import pytest
from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0054.stanza import VCardTemp

from tests.conftest import DOMAIN, TIMEOUT, Running
from vinespy import ns
from vinespy.jid import JID
from vinespy.storage import Contact

pytestmark = pytest.mark.integration

PLUGINS = ("xep_0054", "xep_0049", "xep_0012")
VCARD = "{vcard-temp}vCard"
PRIVATE = "{jabber:iq:private}query"
EXTRA = "urn:example:extra"


async def login(srv: Running, local: str) -> Any:
    """Create ``local``, log it in with the service plugins and wait until the
    server has handled its initial presence (a ping answered after it)."""
    c = await srv.login(await srv.user(local), plugins=PLUGINS)
    await c.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)
    return c


async def error_of(request: Awaitable[Any]) -> str:
    """The stanza error condition the request is answered with."""
    with pytest.raises(IqError) as exc:
        await request
    return str(exc.value.iq["error"]["condition"])


async def befriend(srv: Running, owner: str, contact: str, subscription: str) -> None:
    """Write a roster item straight into storage (no roster protocol yet)."""
    user = await srv.storage.find_user(JID.parse(owner))
    assert user is not None
    jid = JID.parse(contact)
    user.roster[jid] = Contact(jid, subscription=subscription)
    await srv.storage.save_user(user)


# --- XEP-0054 vcard-temp -------------------------------------------------------


def make_card(fn: str, note: str = "", binval: str = "") -> VCardTemp:
    card = VCardTemp()
    card["FN"] = fn
    if note:
        SubElement(card.xml, f"{{{EXTRA}}}note", {"lang": "de"}).text = note
    if binval:
        photo = SubElement(card.xml, "{vcard-temp}PHOTO")
        SubElement(photo, "{vcard-temp}BINVAL").text = binval
    return card


def card_of(iq: Any) -> Element:
    card = iq.xml.find(VCARD)
    assert card is not None, iq
    return card


async def test_vcard_set_then_get_by_owner_and_other(server: Running) -> None:
    """A published vCard with a namespaced child comes back to its owner and to another user."""
    a = await login(server, "alice")
    b = await login(server, "bob")
    alice = a.boundjid.bare
    await a.plugin["xep_0054"].publish_vcard(make_card("Alice \u00c4pfel", note="hallo"),
                                             timeout=TIMEOUT)
    for client in (a, b):
        card = card_of(await client.plugin["xep_0054"].get_vcard(alice, local=False,
                                                                 timeout=TIMEOUT))
        assert card.findtext("{vcard-temp}FN") == "Alice \u00c4pfel"
        note = card.find(f"{{{EXTRA}}}note")
        assert note is not None and note.text == "hallo" and note.get("lang") == "de"


async def test_vcard_none_stored(server: Running) -> None:
    """No vCard: the owner gets an empty <vCard/>, others service-unavailable (as for no user)."""
    a = await login(server, "alice")
    b = await login(server, "bob")
    card = card_of(await a.plugin["xep_0054"].get_vcard(a.boundjid.bare, local=False,
                                                        timeout=TIMEOUT))
    assert len(card) == 0
    for target in (a.boundjid.bare, f"nobody@{DOMAIN}"):
        assert await error_of(b.plugin["xep_0054"].get_vcard(
            target, local=False, timeout=TIMEOUT)) == "service-unavailable"


async def test_vcard_set_for_someone_else_forbidden(server: Running) -> None:
    """An iq set on another user's vCard (or the server's) is forbidden and changes nothing."""
    a = await login(server, "alice")
    b = await login(server, "bob")
    await a.plugin["xep_0054"].publish_vcard(make_card("Alice"), timeout=TIMEOUT)
    for target in (a.boundjid.bare, DOMAIN):
        assert await error_of(b.plugin["xep_0054"].publish_vcard(
            make_card("Mallory"), jid=target, timeout=TIMEOUT)) == "forbidden"
    stored = await server.storage.find_vcard(JID.parse(a.boundjid.bare))
    assert stored is not None and stored.findtext("{vcard-temp}FN") == "Alice"


async def test_vcard_oversize_not_acceptable(make_server: Any) -> None:
    """A vCard over the 64 KiB limit gets not-acceptable; a smaller one is then accepted."""
    async with make_server(client={"max_stanza_size": 300000, "rate_limit": 0}) as srv:
        a = await login(srv, "alice")
        big = make_card("Alice", binval="A" * 70000)
        assert await error_of(a.plugin["xep_0054"].publish_vcard(
            big, timeout=TIMEOUT)) == "not-acceptable"
        assert await srv.storage.find_vcard(JID.parse(a.boundjid.bare)) is None
        await a.plugin["xep_0054"].publish_vcard(make_card("Alice", binval="A" * 60000),
                                                 timeout=TIMEOUT)
        stored = await srv.storage.find_vcard(JID.parse(a.boundjid.bare))
        assert stored is not None and stored.findtext("{vcard-temp}FN") == "Alice"


# --- XEP-0049 private XML storage ----------------------------------------------


def private_iq(client: Any, kind: str, *children: Element, to: str | None = None) -> Any:
    iq = client.make_iq_set(ito=to) if kind == "set" else client.make_iq_get(ito=to)
    query = SubElement(iq.xml, PRIVATE)
    query.extend(children)
    return iq


def bookmarks() -> Element:
    storage = Element("{storage:bookmarks}storage")
    conf = SubElement(storage, "{storage:bookmarks}conference",
                      {"jid": f"tea@conference.{DOMAIN}", "autojoin": "true"})
    SubElement(conf, "{storage:bookmarks}nick").text = "alice"
    return storage


async def test_private_round_trip(make_server: Any) -> None:
    """With private_storage on, a fragment comes back to its owner only; unknown ones empty."""
    async with make_server(host={"private_storage": True}) as srv:
        a = await login(srv, "alice")
        b = await login(srv, "bob")
        await private_iq(a, "set", bookmarks()).send(timeout=TIMEOUT)
        got = await private_iq(a, "get", Element("{storage:bookmarks}storage")).send(
            timeout=TIMEOUT)
        nick = got.xml.find(f"{PRIVATE}/{{storage:bookmarks}}storage/"
                            "{storage:bookmarks}conference/{storage:bookmarks}nick")
        assert nick is not None and nick.text == "alice"
        for client, asked in ((a, "{urn:example:prefs}prefs"), (b, "{storage:bookmarks}storage")):
            got = await private_iq(client, "get", Element(asked)).send(timeout=TIMEOUT)
            (element,) = got.xml.find(PRIVATE)
            assert element.tag == asked and len(element) == 0


async def test_private_for_someone_else_forbidden(make_server: Any) -> None:
    """Private XML addressed to another user or to the server is forbidden."""
    async with make_server(host={"private_storage": True}) as srv:
        a = await login(srv, "alice")
        b = await login(srv, "bob")
        await private_iq(a, "set", bookmarks()).send(timeout=TIMEOUT)
        for kind in ("get", "set"):
            for to in (a.boundjid.bare, DOMAIN):
                iq = private_iq(b, kind, bookmarks(), to=to)
                assert await error_of(iq.send(timeout=TIMEOUT)) == "forbidden"


@pytest.mark.parametrize("children, condition", [
    ([Element("{jabber:iq:roster}query")], "not-acceptable"),
    ([Element("{jabber:iq:private}query")], "not-acceptable"),
    ([Element("{http://jabber.org/protocol/muc}x")], "not-acceptable"),
    ([Element("{vcard-temp}vCard")], "not-acceptable"),
    ([], "not-acceptable"),
    ([Element("{urn:a}x"), Element("{urn:b}x")], "bad-request"),
])
async def test_private_refused_requests(make_server: Any, children: list[Element],
                                        condition: str) -> None:
    """Reserved namespaces and empty queries: not-acceptable; two namespaces: bad-request."""
    async with make_server(host={"private_storage": True}) as srv:
        a = await login(srv, "alice")
        for kind in ("get", "set"):
            iq = private_iq(a, kind, *children)
            assert await error_of(iq.send(timeout=TIMEOUT)) == condition
        assert await srv.storage.find_fragment(JID.parse(a.boundjid.bare), "vcard-temp",
                                               "vCard") is None


async def test_private_disabled(server: Running) -> None:
    """Without private_storage every private XML request gets service-unavailable."""
    a = await login(server, "alice")
    for kind in ("get", "set"):
        iq = private_iq(a, kind, bookmarks())
        assert await error_of(iq.send(timeout=TIMEOUT)) == "service-unavailable"


# --- XEP-0012 last activity ----------------------------------------------------


def last_recorded(srv: Running, monkeypatch: pytest.MonkeyPatch,
                  jid: str) -> asyncio.Future[Any]:
    """A future set once the server has stored ``jid``'s logout (spies on storage.put)."""
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    real = srv.storage.put
    owner = JID.parse(jid)

    async def put(who: JID, store: str, value: Any) -> None:
        await real(who, store, value)
        if store == "last" and who == owner and not fut.done():
            fut.set_result(value)

    monkeypatch.setattr(srv.storage, "put", put)
    return fut


async def test_last_server_uptime(server: Running) -> None:
    """jabber:iq:last to the server: its uptime in seconds, no text."""
    a = await login(server, "alice")
    iq = await a.plugin["xep_0012"].get_last_activity(DOMAIN, timeout=TIMEOUT)
    assert 0 <= iq["last_activity"]["seconds"] < TIMEOUT * 6
    assert not iq.xml.find("{jabber:iq:last}query").text


async def test_last_activity_of_a_user(server: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not to a stranger; 0 while online; after logout the seconds and the status text."""
    a = await login(server, "alice")
    b = await login(server, "bob")
    alice, bob = a.boundjid.bare, b.boundjid.bare
    last = a.plugin["xep_0012"].get_last_activity
    assert await error_of(last(bob, timeout=TIMEOUT)) == "service-unavailable"
    await befriend(server, bob, alice, "from")
    iq = await last(bob, timeout=TIMEOUT)
    assert iq["last_activity"]["seconds"] == 0
    recorded = last_recorded(server, monkeypatch, bob)
    b.send_presence(ptype="unavailable", pstatus="Heading Home")
    b.disconnect()
    assert (await asyncio.wait_for(recorded, TIMEOUT))["status"] == "Heading Home"
    iq = await last(bob, timeout=TIMEOUT)
    assert 0 <= iq["last_activity"]["seconds"] < TIMEOUT * 6
    assert iq["last_activity"]["status"] == "Heading Home"


async def test_last_activity_needs_presence_subscription(server: Running) -> None:
    """Only the user and from/both contacts may ask; others and an unknown user alike
    get service-unavailable."""
    a = await login(server, "alice")
    alice = a.boundjid.bare
    await a.plugin["xep_0012"].get_last_activity(alice, timeout=TIMEOUT)   # oneself: allowed
    for local, subscription, allowed in (("bob", "to", False), ("carol", "none", False),
                                         ("dave", "both", True), ("erin", "from", True)):
        c = await login(server, local)
        await befriend(server, alice, c.boundjid.bare, subscription)
        request = c.plugin["xep_0012"].get_last_activity(alice, timeout=TIMEOUT)
        if allowed:
            assert (await request)["last_activity"]["seconds"] == 0
        else:
            assert await error_of(request) == "service-unavailable"
    assert await error_of(a.plugin["xep_0012"].get_last_activity(
        f"nobody@{DOMAIN}", timeout=TIMEOUT)) == "service-unavailable"


async def test_last_activity_does_not_tell_whether_an_account_exists(server: Running) -> None:
    """A stranger asking about an account that exists, one that does not, and one
    that blocked him gets the very same error element (no account harvesting)."""
    a = await login(server, "alice")
    await login(server, "bob")
    carol = await server.login(await server.user("carol"), plugins=("xep_0191",))
    await carol.plugin["xep_0191"].block(a.boundjid.bare, timeout=TIMEOUT)

    async def error_xml(target: str) -> bytes:
        with pytest.raises(IqError) as exc:
            await a.plugin["xep_0012"].get_last_activity(target, timeout=TIMEOUT)
        return tostring(exc.value.iq.xml.find("{jabber:client}error"))

    answers = {who: await error_xml(f"{who}@{DOMAIN}") for who in ("bob", "nobody", "carol")}
    assert answers["bob"] == answers["nobody"] == answers["carol"], answers
    assert b"service-unavailable" in answers["bob"]


# --- XEP-0030 account discovery ------------------------------------------------


async def test_disco_info_of_an_account(server: Running) -> None:
    """An account's disco#info: account/registered (and pubsub/pep, XEP-0163
    §6.1), vcard-temp and jabber:iq:last, if visible."""
    a = await login(server, "alice")
    b = await login(server, "bob")
    alice = a.boundjid.bare
    disco = b.plugin["xep_0030"]
    assert await error_of(disco.get_info(jid=alice, timeout=TIMEOUT)) == "service-unavailable"
    assert await error_of(disco.get_info(jid=f"nobody@{DOMAIN}",
                                         timeout=TIMEOUT)) == "service-unavailable"
    await befriend(server, alice, b.boundjid.bare, "both")
    for client in (a, b):
        info = await client.plugin["xep_0030"].get_info(jid=alice, timeout=TIMEOUT)
        assert info["disco_info"]["identities"] == {("account", "registered", None, None),
                                                    ("pubsub", "pep", None, None)}
        features = set(info["disco_info"]["features"])
        assert {"vcard-temp", "jabber:iq:last", ns.DISCO_INFO} <= features
        assert ns.PING not in features and ns.VERSION not in features
    host = await a.plugin["xep_0030"].get_info(jid=DOMAIN, timeout=TIMEOUT)
    assert {("server", "im", None, "vinespy")} == host["disco_info"]["identities"]
    assert {"vcard-temp", "jabber:iq:last"} <= set(host["disco_info"]["features"])


async def test_disco_items(server: Running) -> None:
    """The server lists no items yet; an account lists its resources to itself only."""
    a = await login(server, "alice")
    b = await login(server, "bob")
    alice = a.boundjid.bare
    items = await a.plugin["xep_0030"].get_items(jid=DOMAIN, timeout=TIMEOUT)
    assert items["disco_items"]["items"] == set()
    own = await a.plugin["xep_0030"].get_items(jid=alice, timeout=TIMEOUT)
    assert {i[0] for i in own["disco_items"]["items"]} == {str(a.boundjid)}
    for target in (alice, f"nobody@{DOMAIN}"):
        other = await b.plugin["xep_0030"].get_items(jid=target, timeout=TIMEOUT)
        assert other["disco_items"]["items"] == set()


async def test_disco_lists_every_feature(server: Any) -> None:
    """The server's disco#info lists every feature of every loaded module."""
    c = await server.login(await server.user("alice"))
    info = await c.plugin["xep_0030"].get_info(jid=DOMAIN, timeout=TIMEOUT)
    listed = set(info["disco_info"]["features"])
    host = server.server.hosts[DOMAIN]
    declared = {f for mod in host.modules.values() for f in mod.features}
    assert listed == declared
    assert {"urn:xmpp:ping", "jabber:iq:version", "vcard-temp", "jabber:iq:last",
            "urn:xmpp:blocking", "msgoffline"} <= listed
