"""vinespy <-> vinespy federation: real servers, real slixmpp clients."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import trustme

from tests.conftest import wait_event
from tests.integration.test_components import SECRET, component
from tests.s2s.conftest import peer, two
from tests.support import TIMEOUT, free_port, vinespy_status


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
        # One stream, both ways (XEP-0288): wonderland.lit opened it, and
        # romeo's answer came back over it.
        assert [(s["direction"], s["auth"], s["stanzas_in"] >= 1)
                for s in w.server.federation.status()] == [("out", "EXTERNAL", True)]
        assert [(s["direction"], s["stanzas_out"] >= 1)
                for s in v.server.federation.status()] == [("in", True)]


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
        while "s2s out wonderland.lit -> verona.lit  auth EXTERNAL" not in (
                out := await vinespy_status(config)):
            assert time.monotonic() < deadline, out
        while "s2s in  verona.lit <- wonderland.lit  auth EXTERNAL" not in (
                out := await vinespy_status(v.server.config.path)):
            assert time.monotonic() < deadline, out
    assert "s2s" not in await vinespy_status(config)      # the file goes with the server


async def test_dialback_both_ways_between_strangers(tmp_path: Path, ca: trustme.CA) -> None:
    """Each server's certificate is from a CA the other does not trust, and
    each lists the other in insecure_domains: dialback both ways."""
    other = trustme.CA()
    pw, pv = free_port(), free_port()
    async with peer(tmp_path, ca, "wonderland.lit", pw, {"verona.lit": pv}, trust=ca,
                    insecure_domains=["verona.lit"]) as w, \
            peer(tmp_path, other, "verona.lit", pv, {"wonderland.lit": pw}, trust=other,
                 insecure_domains=["wonderland.lit"]) as v:
        alice = await w.login(await w.user("alice"))
        romeo = await v.login(await v.user("romeo"))
        got = asyncio.ensure_future(wait_event(romeo, "message"))
        alice.send_message(mto="romeo@verona.lit", mbody="by dialback", mtype="chat")
        assert (await got)["body"] == "by dialback"
        for server in (w, v):
            kinds = {(s["direction"], s["auth"]) for s in server.server.federation.status()}
            assert kinds == {("out", "dialback"), ("in", "dialback")}, kinds


async def test_a_component_and_users_of_another_server(tmp_path: Path, ca: trustme.CA) -> None:
    """A component's domain federates like the host's: tea.wonderland.lit
    (XEP-0114, on wonderland.lit's server) writes to romeo@verona.lit, and
    romeo's answer reaches the component (verona.lit opens a stream to
    tea.wonderland.lit, which wonderland.lit's server takes)."""
    pw, pv = free_port(), free_port()
    async with peer(tmp_path, ca, "wonderland.lit", pw, {"verona.lit": pv},
                    host={"components": {"tea": SECRET}}) as w, \
            peer(tmp_path, ca, "verona.lit", pv,
                 {"wonderland.lit": pw, "tea.wonderland.lit": pw}) as v:
        romeo = await v.login(await v.user("romeo"))
        async with component(w) as tea:
            got = asyncio.ensure_future(wait_event(romeo, "message"))
            tea.xmpp.send_message(mto="romeo@verona.lit", mfrom="kettle@tea.wonderland.lit",
                                  mbody="tea is ready", mtype="chat")
            msg = await got
            assert (str(msg["from"]), msg["body"]) == ("kettle@tea.wonderland.lit",
                                                       "tea is ready")
            back = asyncio.ensure_future(wait_event(
                tea.xmpp, "message", match=lambda m: m["body"] == "thanks"))
            romeo.send_message(mto="kettle@tea.wonderland.lit", mbody="thanks", mtype="chat")
            assert str((await back)["from"].bare) == "romeo@verona.lit"
