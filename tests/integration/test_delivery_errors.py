"""A failing store on the delivery path costs the sender one error reply,
never his stream (issue 10, item 14)."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import DOMAIN, TIMEOUT, Running, wait_event
from vinespy.jid import JID

pytestmark = pytest.mark.integration


async def test_offline_store_failure_bounces_and_keeps_the_stream(server: Running) -> None:
    """Bob is offline and his offline store cannot be read or written (a
    directory where the file belongs: an I/O error, as a full or broken disk
    gives): Alice's message comes back as <internal-server-error/>, and her
    stream stays up."""
    alice = await server.login(await server.user("alice"))
    bob = await server.user("bob")
    broken = server.storage.user_dir(JID.parse(bob)) / "offline.json"
    broken.mkdir(parents=True)
    error = asyncio.create_task(wait_event(alice, "message_error"))
    gone = asyncio.create_task(wait_event(alice, "disconnected"))
    await asyncio.sleep(0)
    alice.send_message(mto=bob, mbody="are you there?", mtype="chat")
    done, _ = await asyncio.wait({error, gone}, timeout=TIMEOUT,
                                 return_when=asyncio.FIRST_COMPLETED)
    assert error in done, "no error came back (or the sender was disconnected)"
    assert error.result()["error"]["condition"] == "internal-server-error"
    assert not gone.done()
    rtt = await alice.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)
    assert rtt is not None
    gone.cancel()
