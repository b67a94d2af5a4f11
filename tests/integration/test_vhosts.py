"""Several domains on one server: cross_domain_messages, and module options."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import DOMAIN, PASSWORD, wait_event
from vinespy import accounts
from vinespy.jid import JID

pytestmark = pytest.mark.integration

OTHER = "looking-glass.lit"


async def two_domain_users(srv: Any) -> tuple[Any, Any]:
    alice = await srv.login(await srv.user("alice"))
    await accounts.create_user(srv.storage, JID.parse(f"bob@{OTHER}"), PASSWORD,
                               iterations=4096)
    bob = await srv.login(f"bob@{OTHER}")
    return alice, bob


async def test_cross_domain_messages_off(make_server: Any) -> None:
    """With cross_domain_messages off (the default), a user of one virtual host
    gets <not-allowed/> when writing to a user of another."""
    async with make_server(domains=(DOMAIN, OTHER)) as srv:
        alice, bob = await two_domain_users(srv)
        seen: list[str] = []
        bob.add_event_handler("message", lambda m: seen.append(str(m["body"])))
        err = asyncio.create_task(wait_event(alice, "message_error"))
        await asyncio.sleep(0)
        alice.send_message(mto=f"bob@{OTHER}", mbody="over the border", mtype="chat")
        e = await err
        assert e["error"]["condition"] == "not-allowed"
        # The same domain still works, and nothing reached bob.
        await alice.plugin["xep_0199"].ping(jid=DOMAIN)
        assert seen == []


async def test_cross_domain_messages_on(make_server: Any) -> None:
    """With cross_domain_messages on, users of the two virtual hosts chat."""
    async with make_server(domains=(DOMAIN, OTHER), host={"cross_domain_messages": True}) as srv:
        alice, bob = await two_domain_users(srv)
        got = asyncio.create_task(wait_event(bob, "message"))
        await asyncio.sleep(0)
        alice.send_message(mto=f"bob@{OTHER}", mbody="hello there", mtype="chat")
        m = await got
        assert m["body"] == "hello there" and m["from"] == alice.boundjid


async def test_module_option_from_config(make_server: Any) -> None:
    """[host.options.offline] max_messages applies: the third offline message
    bounces with service-unavailable."""
    async with make_server(extra="[host.options.offline]\nmax_messages = 2\n") as srv:
        alice = await srv.login(await srv.user("alice"))
        bob = await srv.user("bob")
        err = asyncio.create_task(wait_event(alice, "message_error"))
        await asyncio.sleep(0)
        for i in range(3):
            alice.send_message(mto=bob, mbody=f"m{i}", mtype="chat")
        e = await err
        assert e["error"]["condition"] == "service-unavailable"
        assert len(await srv.storage.get(JID.parse(bob), "offline")) == 2
