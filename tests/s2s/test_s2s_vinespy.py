"""vinespy <-> vinespy federation: real servers, real slixmpp clients."""

from __future__ import annotations

import asyncio
from pathlib import Path

import trustme

from tests.conftest import wait_event
from tests.support import TIMEOUT
from tests.s2s.conftest import two


async def test_users_of_two_servers_chat_both_ways(tmp_path: Path, ca: trustme.CA) -> None:
    async with two(tmp_path, ca) as (w, v):
        alice = await w.login(await w.user("alice"))
        romeo = await v.login(await v.user("romeo"))
        got = asyncio.ensure_future(wait_event(romeo, "message"))
        alice.send_message(mto="romeo@verona.lit", mbody="hello verona", mtype="chat")
        msg = await got
        assert msg["body"] == "hello verona"
        assert msg["from"].bare == "alice@wonderland.lit"
        back = asyncio.ensure_future(wait_event(alice, "message"))
        romeo.send_message(mto=msg["from"], mbody="hello wonderland", mtype="chat")
        assert (await back)["body"] == "hello wonderland"
        kinds = {(s["direction"], s["auth"]) for s in w.server.federation.status()}
        assert kinds == {("out", "dialback"), ("in", "dialback")}, kinds
