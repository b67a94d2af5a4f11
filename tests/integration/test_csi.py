"""XEP-0352 Client State Indication end to end: a real server, raw clients
(byte-exact order and counts) and a slixmpp client using its xep_0352 plugin.

"Nothing arrived" is shown by order, never by waiting: one stream's stanzas
are handled in order, so once a contact's ping is answered, the presence it
sent before has been delivered or held; what alice then receives (a ping's
answer, a message) was written after it.
"""

from __future__ import annotations

import re
import ssl
from typing import Any

import pytest

from tests.conftest import DOMAIN, PASSWORD, TIMEOUT, Running
from tests.integration.test_presence import Client, login, presences
from tests.rawclient import Raw
from vinespy.modules import builtin

pytestmark = pytest.mark.integration

INACTIVE = "<inactive xmlns='urn:xmpp:csi:0'/>"
ACTIVE = "<active xmlns='urn:xmpp:csi:0'/>"
FEATURE = rb"<csi xmlns=['\"]urn:xmpp:csi:0['\"]/>"
CHAT_STATE = "<composing xmlns='http://jabber.org/protocol/chatstates'/>"


def bare(c: Client) -> str:
    return c.jid.split("/")[0]


async def online(srv: Running, local: str, resource: str = "one") -> Client:
    """``local`` logged in with initial presence, its echo read."""
    c = await login(srv, local, resource)
    c.send("<presence/>")
    await c.sync()
    return c


async def befriend(alice: Client, contact: Client) -> None:
    """alice asks for ``contact``'s presence and he approves (RFC 6121 §3.1):
    his presence reaches her from then on, starting with his current one."""
    alice.send(f"<presence to='{bare(contact)}' type='subscribe'/>")
    await contact.raw.expect(rb'<presence[^>]*type="subscribe"')
    contact.send(f"<presence to='{bare(alice)}' type='subscribed'/>")
    await alice.raw.expect(rb'<presence[^>]*from="%s"' % contact.jid.encode())
    await contact.sync()
    await alice.sync()


def status(st: bytes) -> str:
    m = re.search(rb"<status>([^<]*)</status>", st)
    return m.group(1).decode() if m else ""


async def test_presence_is_held_while_inactive_and_the_latest_flushed_when_active(
        server: Running) -> None:
    """50 updates from 3 contacts while alice is inactive: none reaches her
    (her own presence and a chat state do, at once); after <active/> she gets
    exactly one per contact, its latest (dave's: unavailable), before the
    answer to a ping sent after <active/> (XEP-0352 §5.1)."""
    alice = await online(server, "alice")
    contacts = [await online(server, name) for name in ("bob", "carol", "dave")]
    for c in contacts:
        await befriend(alice, c)
    alice.send(INACTIVE)
    await alice.sync()
    counts = {"bob": 17, "carol": 17, "dave": 16}
    for c in contacts:
        name = bare(c).split("@")[0]
        for i in range(counts[name] - 1):
            c.send(f"<presence><status>{name}-{i}</status></presence>")
        last = "type='unavailable'" if name == "dave" else ""
        c.send(f"<presence {last}><show>away</show><status>{name}-last</status></presence>")
        await c.sync()
    alice.send("<presence><show>xa</show></presence>")          # her own: comes back now
    got = await alice.sync()
    assert len(presences(got, alice.jid)) == 1
    bob, carol, dave = contacts
    bob.send(f"<message to='{alice.jid}' type='chat'>{CHAT_STATE}</message>")
    got += (await alice.raw.expect(rb"(.*?)<message[^>]*>.*?</message>")).group(1)
    for c in contacts:
        assert b'from="%s"' % c.jid.encode() not in got, got

    alice.send(ACTIVE)
    flushed = await alice.sync()
    assert len(re.findall(rb"<presence\b", flushed)) == 3, flushed
    for c, kind in ((bob, None), (carol, None), (dave, "unavailable")):
        (st,) = presences(flushed, c.jid, kind)
        assert status(st) == f"{bare(c).split('@')[0]}-last", st
    bob.send("<presence><status>live</status></presence>")   # active: at once
    await bob.sync()
    assert status(presences(await alice.sync(), bob.jid)[0]) == "live"


async def test_what_needs_action_or_reading_goes_out_after_what_is_held(
        server: Running) -> None:
    """While alice is inactive, a subscription request and a message with a
    body reach her at once, each after the presence held before it (as
    Prosody's mod_csi_simple): she reads them in the order they came."""
    alice = await online(server, "alice")
    bob = await online(server, "bob")
    erin = await online(server, "erin")
    await befriend(alice, bob)
    alice.send(INACTIVE)
    await alice.sync()
    bob.send("<presence><status>first</status></presence>")
    await bob.sync()
    erin.send(f"<presence to='{bare(alice)}' type='subscribe'/>")
    m = await alice.raw.expect(rb'(.*?)<presence[^>]*type="subscribe"[^>]*/?>')
    assert [status(p) for p in presences(m.group(1), bob.jid)] == ["first"]
    bob.send("<presence><status>second</status></presence>")
    bob.send(f"<message to='{alice.jid}' type='chat'><body>read me</body></message>")
    before = await alice.until("read me")
    assert [status(p) for p in presences(before, bob.jid)] == ["second"]
    alice.send(ACTIVE)
    assert presences(await alice.sync(), None) == []          # nothing was left held


def ctx_of(srv: Running) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    srv.ca.configure_trust(ctx)
    return ctx


async def features_after_auth(srv: Running, user: str) -> tuple[Raw, bytes, bytes]:
    """``user`` authenticated: the connection, and the stream features
    offered before and after authentication."""
    await srv.user(user)
    raw = await Raw.connect(srv.port)
    before = await raw.secure(DOMAIN, ctx_of(srv))
    assert (await raw.plain(user, PASSWORD)).startswith(b"<success")
    raw.open_stream(DOMAIN)
    return raw, before, await raw.features()


async def test_the_feature_is_offered_after_authentication(server: Running) -> None:
    """§4.1; before bind, the carrier is no session: <inactive/> is taken
    (no stream error) and ignored."""
    raw, before, after = await features_after_auth(server, "alice")
    assert not re.search(FEATURE, before) and re.search(FEATURE, after), after
    raw.send(INACTIVE)
    raw.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    await raw.expect(rb"<jid>")
    raw.close()


async def test_without_the_module_csi_is_an_unknown_nonza(make_server: Any) -> None:
    """A host whose modules leave csi out offers no feature, and <inactive/>
    ends the stream as any unknown nonza does (RFC 6120 §4.9.3.22)."""
    mods = [m for m in builtin() if m != "csi"]
    async with make_server(host={"modules": mods}) as srv:
        raw, _, after = await features_after_auth(srv, "alice")
        assert not re.search(FEATURE, after), after
        raw.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
        await raw.expect(rb"<jid>")
        raw.send(INACTIVE)
        assert b"<unsupported-stanza-type" in await raw.until_closed()


async def test_slixmpp_finds_the_feature_and_its_states_work(server: Running) -> None:
    """slixmpp's xep_0352 plugin sees the feature; the presence of alice's
    other resource waits while her phone is inactive, the latest arrives on
    <active/>."""
    await server.user("alice")
    phone = await server.login(f"alice@{DOMAIN}/phone", plugins=("xep_0352",))
    csi = phone.plugin["xep_0352"]
    assert csi.enabled
    laptop = await online(server, "alice", "laptop")
    seen: list[str] = []
    phone.add_event_handler("presence", lambda p: p["from"].resource == "laptop"
                            and seen.append(p["status"]))
    csi.send_inactive()
    await phone.plugin["xep_0199"].send_ping(DOMAIN, timeout=TIMEOUT)
    for text in ("one", "two", "three"):
        laptop.send(f"<presence><status>{text}</status></presence>")
    await laptop.sync()
    await phone.plugin["xep_0199"].send_ping(DOMAIN, timeout=TIMEOUT)
    assert seen == []
    csi.send_active()
    await phone.plugin["xep_0199"].send_ping(DOMAIN, timeout=TIMEOUT)
    assert seen == ["three"]
