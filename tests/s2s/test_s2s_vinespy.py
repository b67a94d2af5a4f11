"""vinespy <-> vinespy federation: real servers, real slixmpp clients."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import trustme

from tests.conftest import wait_event
from tests.support import TIMEOUT, vinespy_status
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


async def test_vinespy_status_lists_the_streams(tmp_path: Path, ca: trustme.CA) -> None:
    """`vinespy status` prints each s2s stream with its direction, domains and
    authentication (from the file the server keeps beside its pid file)."""
    async with two(tmp_path, ca) as (w, v):
        alice = await w.login(await w.user("alice"))
        romeo = await v.login(await v.user("romeo"))
        got = asyncio.ensure_future(wait_event(romeo, "message"))
        alice.send_message(mto="romeo@verona.lit", mbody="hi", mtype="chat")
        await got
        config = w.server.config.path

        deadline = time.monotonic() + TIMEOUT
        while "s2s in  wonderland.lit <- verona.lit  auth dialback" not in (
                out := await vinespy_status(config)):
            assert time.monotonic() < deadline, out
        assert "s2s out wonderland.lit -> verona.lit  auth dialback" in out, out
    assert "s2s" not in await vinespy_status(config)      # the file goes with the server
