"""XEP-0160 offline messages and RFC 6121 §8.5 priorities, end to end."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import DOMAIN, TIMEOUT, wait_event
from vinespy.jid import JID

pytestmark = pytest.mark.integration

DELAY = "{urn:xmpp:delay}delay"


async def test_offline_message_survives_restart(make_server: Any) -> None:
    """A chat message to an offline user is stored, survives a server restart,
    and arrives at their next login with a <delay/> stamp."""
    async with make_server() as srv:
        a = await srv.login(await srv.user("alice"))
        bob = await srv.user("bob")
        a.send_message(mto=bob, mbody="while you were out", mtype="chat")
        # Stanzas from one stream are handled in order: once the ping is
        # answered, the message has been stored.
        await a.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)
    async with make_server() as srv:
        b = srv.client(bob)
        got = asyncio.create_task(wait_event(b, "message"))
        started = asyncio.create_task(wait_event(b, "session_start"))
        await asyncio.sleep(0)
        b.connect("127.0.0.1", srv.port)
        await started
        b.send_presence()
        m = await got
        assert m["body"] == "while you were out"
        assert m["from"].bare == f"alice@{DOMAIN}"
        delay = m.xml.find(DELAY)
        assert delay is not None and delay.get("from") == DOMAIN and delay.get("stamp")
        # Delivered once: the store is emptied while bob's initial presence is
        # handled, so once a later stanza of his is answered it is empty.
        await b.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)
        assert await srv.storage.get(JID.parse(bob), "offline") is None


async def test_offline_cap_bounces(server: Any) -> None:
    """Over the per-user cap the sender gets <service-unavailable/>."""
    a = await server.login(await server.user("alice"))
    bob = await server.user("bob")
    err = asyncio.create_task(wait_event(a, "message_error", timeout=30))
    await asyncio.sleep(0)
    for i in range(101):
        a.send_message(mto=bob, mbody=f"m{i}", mtype="chat")
    e = await err
    assert e["error"]["condition"] == "service-unavailable"


async def test_negative_priority_gets_no_bare_messages(server: Any) -> None:
    """RFC 6121 §8.5.2.1.1: bare-JID chat goes to the highest non-negative
    priority; a negative-priority resource gets none."""
    a = await server.login(await server.user("alice"))
    bob = await server.user("bob")
    high = await server.login(bob + "/high")
    low = await server.login(bob + "/low")
    high.send_presence(ppriority=10)
    low.send_presence(ppriority=-1)
    # Presence is handled in order on each stream: a ping after it means the
    # new priorities are in force.
    await high.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)
    await low.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)
    seen: list[str] = []
    low.add_event_handler("message", lambda m: seen.append(str(m["body"])))
    got = asyncio.create_task(wait_event(high, "message", match=lambda m: m["body"] == "x"))
    await asyncio.sleep(0)
    a.send_message(mto=bob, mbody="x", mtype="chat")
    await got
    # And a full-JID message still reaches the negative one (in order after x).
    full = asyncio.create_task(wait_event(low, "message", match=lambda m: m["body"] == "y"))
    await asyncio.sleep(0)
    a.send_message(mto=bob + "/low", mbody="y", mtype="chat")
    await full
    assert seen == ["y"]
