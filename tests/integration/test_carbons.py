"""XEP-0280 Message Carbons (and XEP-0334 <no-copy/>) end to end, with real
slixmpp clients: alice on a phone and a laptop (and a tablet), bob.

"No copy arrived" is shown by order, never by waiting: the stanzas one
sender sends are handled in order and a copy is written before the
original is delivered, so once a later probe arrives, any copy of what
came before it would have arrived first.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from slixmpp.exceptions import IqError

from tests.conftest import DOMAIN, TIMEOUT, Running, wait_event
from vinespy.jid import JID
from vinespy.modules import builtin
from vinespy.modules.carbons import CARBONS

pytestmark = pytest.mark.integration

PLUGINS = ("xep_0280", "xep_0334")
ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"


class Client:
    """A logged-in slixmpp client and the carbons it received, in order."""

    def __init__(self, xmpp: Any) -> None:
        self.xmpp = xmpp
        self.carbons: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        for kind in ("received", "sent"):
            xmpp.add_event_handler(f"carbon_{kind}", lambda m, k=kind: self.carbons.put_nowait(
                (k, m)))

    @property
    def jid(self) -> str:
        return str(self.xmpp.boundjid.full)

    async def carbon(self) -> tuple[str, Any]:
        """The next carbon: ("sent" or "received", the forwarded message)."""
        kind, m = await asyncio.wait_for(self.carbons.get(), TIMEOUT)
        assert m["from"] == ALICE and m["to"] == self.jid, m
        return kind, m[f"carbon_{kind}"]

    def say(self, to: str, body: str | None, type: str = "chat", *extra: str) -> Any:
        """Send a message with ``body`` and the given hints ("private", "no-copy")."""
        msg = self.xmpp.make_message(mto=to, mbody=body, mtype=type)
        for name in extra:
            msg.enable("carbon_private" if name == "private" else name)
        msg.send()
        return msg

    async def expect(self, body: str) -> Any:
        return await wait_event(self.xmpp, "message", match=lambda m: m["body"] == body)

    async def ping(self) -> None:
        """Everything sent before has been handled by the server."""
        await self.xmpp.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)


async def login(srv: Running, full: str, *, priority: int = 0, carbons: bool = True) -> Client:
    bare = full.partition("/")[0]
    if await srv.storage.find_user(JID.parse(bare)) is None:
        await srv.user(bare.partition("@")[0])
    c = Client(await srv.login(full, plugins=PLUGINS))
    if priority:
        c.xmpp.send_presence(ppriority=priority)
    if carbons:
        await c.xmpp.plugin["xep_0280"].enable(timeout=TIMEOUT)
    await c.ping()
    return c


async def probe(sender: Client, to: str, *copied: Client) -> None:
    """``sender`` sends "probe" to ``to``: it is the next carbon of each of ``copied``."""
    sender.say(to, "probe")
    for c in copied:
        _, inner = await c.carbon()
        assert inner["body"] == "probe"


async def test_received_carbon_of_a_message_to_another_resource(server: Running) -> None:
    """bob -> alice/phone: the laptop gets a <received/> copy of it as sent."""
    phone = await login(server, f"{ALICE}/phone")
    laptop = await login(server, f"{ALICE}/laptop")
    bob = await login(server, f"{BOB}/desk", carbons=False)
    bob.say(f"{ALICE}/phone", "hello phone")
    await phone.expect("hello phone")
    kind, inner = await laptop.carbon()
    assert (kind, inner["body"], inner["from"], inner["to"]) == (
        "received", "hello phone", bob.jid, phone.jid)
    assert phone.carbons.empty()        # the addressed resource has the original


async def test_received_carbon_of_a_bare_message_for_the_lower_priority(server: Running) -> None:
    """bob -> alice (bare): the phone (priority 5) gets it, the laptop a copy."""
    phone = await login(server, f"{ALICE}/phone", priority=5)
    laptop = await login(server, f"{ALICE}/laptop")
    bob = await login(server, f"{BOB}/desk", carbons=False)
    bob.say(ALICE, "hello alice")
    await phone.expect("hello alice")
    kind, inner = await laptop.carbon()
    assert (kind, inner["body"], inner["to"]) == ("received", "hello alice", ALICE)


async def test_no_carbon_when_the_bare_message_reaches_both(server: Running) -> None:
    """Equal priorities: both resources get the original, so neither gets a copy."""
    phone = await login(server, f"{ALICE}/phone")
    laptop = await login(server, f"{ALICE}/laptop")
    bob = await login(server, f"{BOB}/desk", carbons=False)
    bob.say(ALICE, "to both")
    await asyncio.gather(phone.expect("to both"), laptop.expect("to both"))
    await probe(bob, f"{ALICE}/phone", laptop)


async def test_offline_message_is_copied_to_a_negative_priority_resource(
        server: Running) -> None:
    """Nobody takes a bare-JID chat (priority -1): it is stored, and the
    carbon-enabled resource still gets a copy."""
    laptop = await login(server, f"{ALICE}/laptop", priority=-1)
    bob = await login(server, f"{BOB}/desk", carbons=False)
    bob.say(ALICE, "while away")
    _, inner = await laptop.carbon()
    assert inner["body"] == "while away"
    await bob.ping()
    assert await server.storage.get(JID.parse(ALICE), "offline")


async def test_sent_carbon_of_what_another_resource_sends(server: Running) -> None:
    """alice/phone -> bob: the laptop gets a <sent/> copy, the phone none."""
    phone = await login(server, f"{ALICE}/phone")
    laptop = await login(server, f"{ALICE}/laptop")
    bob = await login(server, f"{BOB}/desk", carbons=False)
    phone.say(bob.jid, "hi bob")
    await bob.expect("hi bob")
    kind, inner = await laptop.carbon()
    assert (kind, inner["body"], inner["from"], inner["to"]) == (
        "sent", "hi bob", phone.jid, bob.jid)
    await probe(bob, f"{ALICE}/laptop", phone)     # the phone's first carbon


@pytest.mark.parametrize("hint", ["private", "no-copy"])
async def test_private_and_no_copy_are_not_copied(server: Running, hint: str) -> None:
    """<private/> (XEP-0280 §9) and <no-copy/> (XEP-0334): no copy either
    way; bob gets the message without <private/> (§9: the receiving server
    removes it)."""
    phone = await login(server, f"{ALICE}/phone")
    laptop = await login(server, f"{ALICE}/laptop")
    bob = await login(server, f"{BOB}/desk", carbons=False)
    phone.say(bob.jid, "out", "chat", hint)
    m = await bob.expect("out")
    assert m.xml.find(f"{{{CARBONS}}}private") is None
    assert (m.xml.find("{urn:xmpp:hints}no-copy") is not None) == (hint == "no-copy")
    bob.say(f"{ALICE}/phone", "in", "chat", hint)
    await phone.expect("in")
    await probe(bob, f"{ALICE}/phone", laptop)


async def test_headline_without_body_is_not_copied(server: Running) -> None:
    """(Routed before bob's probe: a copy of it would be the laptop's first.)"""
    await login(server, f"{ALICE}/phone")
    laptop = await login(server, f"{ALICE}/laptop")
    bob = await login(server, f"{BOB}/desk", carbons=False)
    msg = bob.xmpp.make_message(mto=f"{ALICE}/phone", mtype="headline")
    msg["subject"] = "news"
    msg.send()
    await probe(bob, f"{ALICE}/phone", laptop)


async def test_error_to_a_resource_is_copied(server: Running) -> None:
    """An error bob's client sends back for a message (as Prosody, §6)."""
    await login(server, f"{ALICE}/phone")
    laptop = await login(server, f"{ALICE}/laptop")
    bob = await login(server, f"{BOB}/desk", carbons=False)
    err = bob.xmpp.make_message(mto=f"{ALICE}/phone", mtype="error")
    err["error"]["condition"] = "service-unavailable"
    err.send()
    kind, inner = await laptop.carbon()
    assert (kind, inner["type"], inner["error"]["condition"]) == (
        "received", "error", "service-unavailable")


async def test_a_resource_that_disabled_carbons_gets_none(server: Running) -> None:
    await login(server, f"{ALICE}/phone")
    laptop = await login(server, f"{ALICE}/laptop")
    bob = await login(server, f"{BOB}/desk", carbons=False)
    await laptop.xmpp.plugin["xep_0280"].disable(timeout=TIMEOUT)
    await laptop.xmpp.plugin["xep_0280"].disable(timeout=TIMEOUT)   # again: no error
    bob.say(f"{ALICE}/phone", "not for the laptop")
    bob.say(f"{ALICE}/laptop", "probe")
    await laptop.expect("probe")
    assert laptop.carbons.empty()


async def test_a_message_to_oneself_reaches_each_resource_once(server: Running) -> None:
    """phone -> alice/laptop: the laptop has the original, the tablet a
    <sent/> copy, the phone nothing; nobody a <received/> copy of it."""
    phone = await login(server, f"{ALICE}/phone")
    laptop = await login(server, f"{ALICE}/laptop")
    tablet = await login(server, f"{ALICE}/tablet")
    bob = await login(server, f"{BOB}/desk", carbons=False)
    phone.say(f"{ALICE}/laptop", "note")
    await laptop.expect("note")
    kind, inner = await tablet.carbon()
    assert (kind, inner["body"]) == ("sent", "note")
    await probe(bob, f"{ALICE}/laptop", phone, tablet)
    assert laptop.carbons.empty()


async def test_enable_addressed_to_the_server_and_disco(server: Running) -> None:
    """<enable/> to the domain works as without 'to'; disco#info lists the feature."""
    await login(server, f"{ALICE}/phone", carbons=False)
    laptop = await login(server, f"{ALICE}/laptop", carbons=False)
    bob = await login(server, f"{BOB}/desk", carbons=False)
    iq = laptop.xmpp.make_iq_set(ito=DOMAIN)
    iq.enable("carbon_enable")
    await iq.send(timeout=TIMEOUT)
    await probe(bob, f"{ALICE}/phone", laptop)
    info = await laptop.xmpp.plugin["xep_0030"].get_info(jid=DOMAIN, timeout=TIMEOUT)
    assert CARBONS in info["disco_info"]["features"]


async def test_carbons_can_be_left_out(make_server: Any) -> None:
    """A host whose modules leave carbons out: <enable/> is service-unavailable."""
    async with make_server(host={"modules": [m for m in builtin() if m != "carbons"]}) as srv:
        phone = await login(srv, f"{ALICE}/phone", carbons=False)
        with pytest.raises(IqError) as exc:
            await phone.xmpp.plugin["xep_0280"].enable(timeout=TIMEOUT)
        assert exc.value.condition == "service-unavailable"
