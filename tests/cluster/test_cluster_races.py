"""Races between nodes that a single server cannot have (issue 10 item 15).

A message to a user who is becoming available on another node at that very
moment: the sender's node may still see him unavailable and store the
message offline just after his node read (and emptied) his offline store.
The message must still reach him at once, and only once.
"""

from __future__ import annotations

import pytest

from tests.cluster.conftest import Clients, ClusterFactory, body
from tests.conftest import DOMAIN, TIMEOUT

pytestmark = [pytest.mark.integration, pytest.mark.redis]

BOB = f"bob@{DOMAIN}"
ATTEMPTS = 40


async def test_message_at_initial_presence_is_never_left_offline(cluster: ClusterFactory,
                                                                 xmpp: Clients) -> None:
    """alice on A sends bob (on B) a message in the same instant bob sends
    initial presence, ATTEMPTS times (bob goes unavailable in between). Each
    message reaches bob while he is online (live, or from offline storage
    right away), exactly once; nothing is left in his offline store. Before
    the fix about one attempt in eight left the message stored offline until
    his next login."""
    c = await cluster(2)
    a, b = c["node-a"], c["node-b"]
    alice = await xmpp.login(a, "alice/r1")
    bob = await xmpp.login(b, "bob/r1", presence=False)
    for i in range(ATTEMPTS):
        alice.say(BOB, f"race-{i}")
        bob.presence()                                  # initial presence, same instant
        try:
            await bob.messages.get(body(f"race-{i}"), TIMEOUT)
        except AssertionError:
            stored = await c.site.stored(BOB, "offline")
            raise AssertionError(f"attempt {i}: race-{i} not delivered; offline store: "
                                 f"{stored!r}") from None
        bob.presence(ptype="unavailable")
        await c.wait_route(bob.jid, match=lambda e: not e.get("available"))
    # Anything sent twice would come before this (one sender, one inbox, in order).
    bob.presence()
    alice.say(bob.jid, "end")
    await bob.messages.get(body("end"))
    for i in range(ATTEMPTS):
        assert len(bob.messages.matching(body(f"race-{i}"))) == 1, f"race-{i} twice"
    assert await c.site.stored(BOB, "offline") is None
    assert alice.errors.items == []
