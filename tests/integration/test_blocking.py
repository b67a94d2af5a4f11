"""XEP-0191 Blocking Command end to end, with real slixmpp clients."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from slixmpp.exceptions import IqError

from tests.conftest import DOMAIN, TIMEOUT, Running, wait_event
from vinespy.jid import JID
from vinespy.modules.blocking import LOCK_STRIPES

pytestmark = pytest.mark.integration

PLUGINS = ("xep_0191",)
BLOCKED = "{urn:xmpp:blocking:errors}blocked"


async def login(srv: Running, jid: str, resource: str = "") -> Any:
    """Log ``jid`` in with XEP-0191 and wait until its initial presence is handled."""
    c = await srv.login(f"{jid}/{resource}" if resource else jid, plugins=PLUGINS)
    await c.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)
    return c


async def blocked(c: Any) -> set[str]:
    """The blocklist as the server reports it."""
    return {str(j) for j in await c.plugin["xep_0191"].get_blocked_jids(timeout=TIMEOUT)}


async def unblock_all(c: Any) -> None:
    """``<unblock/>`` without items (slixmpp's unblock() needs a JID)."""
    iq = c.make_iq_set()
    iq.enable("unblock")
    await iq.send(timeout=TIMEOUT)


async def expect_body(c: Any, body: str) -> Any:
    """Wait for the next message and check it is ``body`` (so none came before)."""
    m = await wait_event(c, "message")
    assert m["body"] == body
    return m


async def test_block_lists_and_pushes(server: Running) -> None:
    """Block: the blocklist shows the JID and an interested resource gets the push."""
    alice = await server.user("alice")
    await server.user("bob")
    a1 = await login(server, alice, "one")
    a2 = await login(server, alice, "two")
    await a2.get_roster(timeout=TIMEOUT)          # becomes an interested resource
    assert await blocked(a1) == set()
    push = asyncio.create_task(wait_event(a2, "blocked"))
    await a1.plugin["xep_0191"].block(f"bob@{DOMAIN}", timeout=TIMEOUT)
    iq = await push
    assert [str(i["jid"]) for i in iq["block"]] == [f"bob@{DOMAIN}"]
    assert await blocked(a1) == {f"bob@{DOMAIN}"}


async def test_block_whose_presence_reads_a_list_of_the_same_stripe(server: Running) -> None:
    """A block is answered even when routing its unavailable presence (§3.3)
    reads a list guarded by the lock stripe the block holds (it deadlocked:
    seen as a flaky IqTimeout in the cluster suite)."""
    alice = await server.user("alice")
    # A user whose list shares alice's lock stripe and was never read: routing
    # alice's unavailable presence to him reads it.
    stripe = hash(JID.parse(alice)) % LOCK_STRIPES
    other = next(f"u{i}@{DOMAIN}" for i in range(10_000)
                 if hash(JID.parse(f"u{i}@{DOMAIN}")) % LOCK_STRIPES == stripe)
    await server.user(other.split("@")[0])
    a1 = await login(server, alice, "one")
    await a1.plugin["xep_0191"].block(other, timeout=TIMEOUT)
    assert await blocked(a1) == {other}


async def test_block_needs_an_item_and_valid_jids(server: Running) -> None:
    """An empty <block/> is bad-request; an unparsable JID is jid-malformed."""
    a = await login(server, await server.user("alice"))
    iq = a.make_iq_set()
    iq.enable("block")
    with pytest.raises(IqError) as exc:
        await iq.send(timeout=TIMEOUT)
    assert exc.value.iq["error"]["condition"] == "bad-request"
    iq = a.make_iq_set()
    iq.enable("block")
    item = iq["block"].xml.makeelement("{urn:xmpp:blocking}item", {"jid": "@bad@"})
    iq["block"].xml.append(item)
    with pytest.raises(IqError) as exc:
        await iq.send(timeout=TIMEOUT)
    assert exc.value.iq["error"]["condition"] == "jid-malformed"
    assert await blocked(a) == set()


async def test_blocked_contact_message_never_arrives(server: Running) -> None:
    """A blocked contact's message is bounced with service-unavailable and never
    reaches the user; a later message from someone else does."""
    alice, bob, carol = [await server.user(n) for n in ("alice", "bob", "carol")]
    a = await login(server, alice)
    b = await login(server, bob)
    c = await login(server, carol)
    await a.plugin["xep_0191"].block(bob, timeout=TIMEOUT)
    got = asyncio.create_task(expect_body(a, "from carol"))
    err = asyncio.create_task(wait_event(b, "message_error"))
    await asyncio.sleep(0)
    b.send_message(mto=alice, mbody="from bob", mtype="chat")
    e = await err
    assert e["error"]["condition"] == "service-unavailable"
    c.send_message(mto=alice, mbody="from carol", mtype="chat")
    await got
    # Not stored offline either: alice offline, bob's message bounces again.
    a.disconnect()
    await wait_event(a, "disconnected")
    err = asyncio.create_task(wait_event(b, "message_error"))
    await asyncio.sleep(0)
    b.send_message(mto=alice, mbody="while away", mtype="chat")
    assert (await err)["error"]["condition"] == "service-unavailable"
    assert await server.storage.get(JID.parse(alice), "offline") is None


async def test_sending_to_blocked_jid_is_not_acceptable(server: Running) -> None:
    """A message to a JID one has blocked comes back not-acceptable with <blocked/>."""
    alice, bob = await server.user("alice"), await server.user("bob")
    a = await login(server, alice)
    b = await login(server, bob)
    await a.plugin["xep_0191"].block(bob, timeout=TIMEOUT)
    err = asyncio.create_task(wait_event(a, "message_error"))
    got = asyncio.create_task(expect_body(b, "after"))
    await asyncio.sleep(0)
    a.send_message(mto=bob, mbody="to a blocked contact", mtype="chat")
    e = await err
    assert e["error"]["condition"] == "not-acceptable"
    assert e.xml.find(f"{{jabber:client}}error/{BLOCKED}") is not None
    await a.plugin["xep_0191"].unblock(bob, timeout=TIMEOUT)
    a.send_message(mto=bob, mbody="after", mtype="chat")
    await got


async def test_unblock_lets_messages_flow(server: Running) -> None:
    """After unblock the contact's messages arrive again."""
    alice, bob = await server.user("alice"), await server.user("bob")
    a = await login(server, alice)
    b = await login(server, bob)
    await a.plugin["xep_0191"].block(bob, timeout=TIMEOUT)
    await a.plugin["xep_0191"].unblock(bob, timeout=TIMEOUT)
    assert await blocked(a) == set()
    got = asyncio.create_task(expect_body(a, "hello again"))
    await asyncio.sleep(0)
    b.send_message(mto=alice, mbody="hello again", mtype="chat")
    await got


async def test_unblock_all(server: Running) -> None:
    """<unblock/> without items empties the list and is pushed as such."""
    alice, bob, carol = [await server.user(n) for n in ("alice", "bob", "carol")]
    a = await login(server, alice)
    await a.get_roster(timeout=TIMEOUT)
    await a.plugin["xep_0191"].block([bob, carol], timeout=TIMEOUT)
    assert await blocked(a) == {bob, carol}
    push = asyncio.create_task(wait_event(a, "unblocked"))
    await asyncio.sleep(0)
    await unblock_all(a)
    iq = await push
    assert list(iq["unblock"]) == []
    assert await blocked(a) == set()
    c = await login(server, carol)
    got = asyncio.create_task(expect_body(a, "free"))
    await asyncio.sleep(0)
    c.send_message(mto=alice, mbody="free", mtype="chat")
    await got


async def test_blocklist_survives_restart(make_server: Any) -> None:
    """The blocklist is stored: after a restart it is listed and still enforced."""
    async with make_server() as srv:
        alice, bob = await srv.user("alice"), await srv.user("bob")
        a = await login(srv, alice)
        await a.plugin["xep_0191"].block(bob, timeout=TIMEOUT)
    async with make_server() as srv:
        a = await login(srv, alice)
        b = await login(srv, bob)
        assert await blocked(a) == {bob}
        err = asyncio.create_task(wait_event(b, "message_error"))
        await asyncio.sleep(0)
        b.send_message(mto=alice, mbody="still blocked", mtype="chat")
        assert (await err)["error"]["condition"] == "service-unavailable"


async def test_block_sends_unavailable_to_the_blocked(server: Running) -> None:
    """Blocking a contact sends them unavailable presence from each available resource."""
    alice, bob = await server.user("alice"), await server.user("bob")
    a = await login(server, alice, "desk")
    b = await login(server, bob)
    gone = asyncio.create_task(wait_event(
        b, "presence_unavailable", match=lambda p: p["from"] == f"{alice}/desk"))
    await asyncio.sleep(0)
    await a.plugin["xep_0191"].block(bob, timeout=TIMEOUT)
    await gone
