"""Modules at the XML level, without sockets (tests/harness.py): a stanza in
from a bound session, the stanzas every session got out."""

from __future__ import annotations

import pytest

from vinespy import __version__
from vinespy.jid import JID
from vinespy.xml import Element

from tests.harness import DOMAIN, FakeSession, World, same

ALICE, BOB, EVE = (JID.parse(f"{u}@{DOMAIN}") for u in ("alice", "bob", "eve"))


@pytest.fixture
async def world() -> World:
    """alice and bob share a 'both' subscription; eve is no contact of theirs."""
    w = World("ping", "version", "last", "roster")
    await w.account(ALICE, bob="both")
    await w.account(BOB, alice="both")
    await w.account(EVE)
    return w


async def answer(w: World, s: FakeSession, xml: str) -> Element:
    """What ``s`` alone got back for ``xml``: exactly one stanza, to ``s``."""
    out = await w.send(s, xml)
    assert [to for to, _ in out] == [s.jid], out
    return out[0][1]


async def test_ping_the_server(world: World) -> None:
    """XEP-0199 §4.2: the server answers a ping to its domain with an empty result."""
    a = world.bind(ALICE)
    got = await answer(world, a, f"<iq type='get' id='p1' to='{DOMAIN}'>"
                                 "<ping xmlns='urn:xmpp:ping'/></iq>")
    assert same(got, f"<iq type='result' id='p1' from='{DOMAIN}' to='{a.jid}'/>")


async def test_ping_to_another_account_is_not_the_servers(world: World) -> None:
    """The server pings only for itself and the sender's own account: a ping
    to bob's bare JID gets service-unavailable, bob gets nothing."""
    a, b = world.bind(ALICE), world.bind(BOB)
    got = await answer(world, a, f"<iq type='get' id='p2' to='{BOB}'>"
                                 "<ping xmlns='urn:xmpp:ping'/></iq>")
    assert same(got, f"""<iq type='error' id='p2' from='{BOB}' to='{a.jid}'>
        <ping xmlns='urn:xmpp:ping'/>
        <error type='cancel'>
          <service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>""")
    assert b.got == []


async def test_software_version(world: World) -> None:
    """XEP-0092: name and version, no <os/>."""
    a = world.bind(ALICE)
    got = await answer(world, a, f"<iq type='get' id='v1' to='{DOMAIN}'>"
                                 "<query xmlns='jabber:iq:version'/></iq>")
    assert same(got, f"""<iq type='result' id='v1' from='{DOMAIN}' to='{a.jid}'>
        <query xmlns='jabber:iq:version'><name>vinespy</name>
          <version>{__version__}</version></query></iq>""")


async def test_last_activity_of_an_online_contact(world: World) -> None:
    """XEP-0012 §3: a contact with an available resource was active 0 s ago."""
    a, _ = world.bind(ALICE), world.bind(BOB)
    got = await answer(world, a, f"<iq type='get' id='l1' to='{BOB}'>"
                                 "<query xmlns='jabber:iq:last'/></iq>")
    assert same(got, f"""<iq type='result' id='l1' from='{BOB}' to='{a.jid}'>
        <query xmlns='jabber:iq:last' seconds='0'/></iq>""")


async def test_last_activity_hidden_from_a_stranger(world: World) -> None:
    """XEP-0012 §3 and RFC 6120 §13.11: no subscription, service-unavailable."""
    e, _ = world.bind(EVE), world.bind(BOB)
    got = await answer(world, e, f"<iq type='get' id='l2' to='{BOB}'>"
                                 "<query xmlns='jabber:iq:last'/></iq>")
    assert got.get("type") == "error"
    assert got.find("*/{urn:ietf:params:xml:ns:xmpp-stanzas}service-unavailable") is not None


async def test_roster_get(world: World) -> None:
    """RFC 6121 §2.1.3: the roster comes back in a result with its version."""
    a = world.bind(ALICE)
    got = await answer(world, a, "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>")
    assert same(got, f"""<iq type='result' id='r1' to='{a.jid}'>
        <query xmlns='jabber:iq:roster' ver='0'>
          <item jid='{BOB}' subscription='both'/></query></iq>""")


async def test_chat_to_a_bare_jid_reaches_only_the_recipient(world: World) -> None:
    """A chat message to bob's bare JID reaches bob's resource, 'from' stamped
    with the sender's full JID; the sender gets nothing back."""
    a, b = world.bind(ALICE), world.bind(BOB)
    out = await world.send(a, f"<message type='chat' id='m1' to='{BOB}'><body>hi</body></message>")
    assert [to for to, _ in out] == [b.jid]
    assert same(out[0][1], f"""<message type='chat' id='m1' to='{BOB}' from='{a.jid}'>
        <body>hi</body></message>""")
