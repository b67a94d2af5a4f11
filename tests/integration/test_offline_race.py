"""A message stored offline just as its recipient becomes available (issue 10
item 15), made deterministic on one server: the store is held at its first
await until the recipient's initial presence has been handled.

The offline module delivers stored messages at initial presence; a message
whose store completes after that read would wait for the next login. The
storing side must notice that the user is now available and deliver at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import DOMAIN, TIMEOUT, Running, wait_event
from vinespy.jid import JID

pytestmark = pytest.mark.integration

BOB = f"bob@{DOMAIN}"


async def test_message_stored_after_the_initial_presence_read_is_delivered(
        server: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    """alice's message to bob (bound, not yet available) goes to offline
    storage; that store is held before it writes while bob sends initial
    presence (which finds nothing stored); then it completes. bob gets the
    message at once, once, and nothing stays stored."""
    alice = await server.login(await server.user("alice"))
    await server.user("bob")
    bob = server.client(BOB + "/r1")
    started = asyncio.create_task(wait_event(bob, "session_start"))
    await asyncio.sleep(0)
    bob.connect("127.0.0.1", server.port)
    await started                                    # bound; no presence sent yet

    storage = server.storage
    real_find_user = storage.find_user
    entered, release = asyncio.Event(), asyncio.Event()
    armed = True

    async def held_find_user(jid: JID) -> Any:
        nonlocal armed
        if armed and jid == JID.parse(BOB):
            armed = False                            # only the offline store's lookup
            entered.set()
            await release.wait()
        return await real_find_user(jid)
    monkeypatch.setattr(storage, "find_user", held_find_user)

    got: list[str] = []
    bob.add_event_handler("message", lambda m: got.append(str(m["body"])))
    alice.send_message(mto=BOB, mbody="just now", mtype="chat")
    await asyncio.wait_for(entered.wait(), TIMEOUT)  # routed to offline storage, held
    bob.send_presence()
    await bob.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)   # initial presence handled
    assert got == []
    arrived = asyncio.create_task(wait_event(bob, "message",
                                             match=lambda m: m["body"] == "just now"))
    await asyncio.sleep(0)
    release.set()
    await arrived
    # alice's stream handled the message (store and all) before this ping.
    await alice.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)
    await bob.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)
    assert got == ["just now"]
    assert await storage.get(JID.parse(BOB), "offline") is None
