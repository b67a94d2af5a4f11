"""Login throttling across connections (issue 10, item 11): an address that
keeps guessing is refused even with the right password; an account under
attack is slowed down, never locked out for its real user."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import pytest

from tests.conftest import DOMAIN, PASSWORD, Running
from tests.rawclient import Raw
from vinespy.jid import JID

pytestmark = pytest.mark.integration


def tls_ctx(srv: Running) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    srv.ca.configure_trust(ctx)
    return ctx


async def attempt(srv: Running, source: str, password: str, user: str = "alice") -> bytes:
    """One PLAIN login from ``source`` (a loopback address) on a new connection."""
    raw = await Raw.connect(srv.port, source=source)
    await raw.secure(DOMAIN, tls_ctx(srv))
    try:
        return await raw.plain(user, password)
    finally:
        raw.close()


async def test_guessing_address_is_refused_across_connections(make_server: Any) -> None:
    """Four wrong passwords from one address over two connections: the right
    one from that address is refused with <temporary-auth-failure/>, while
    the real user elsewhere logs in."""
    async with make_server(client={"auth_ban_failures": 4, "auth_delay_max": 0}) as srv:
        await srv.user("alice")
        for _ in range(2):
            raw = await Raw.connect(srv.port, source="127.0.0.2")
            await raw.secure(DOMAIN, tls_ctx(srv))
            for _ in range(2):
                assert b"<not-authorized/>" in await raw.plain("alice", "wrong")
            raw.close()
        refused = await attempt(srv, "127.0.0.2", PASSWORD)
        assert b"<temporary-auth-failure/>" in refused, refused
        assert b"try again in" in refused
        assert (await attempt(srv, "127.0.0.3", PASSWORD)).startswith(b"<success")
        # Another account from the guessing address is refused too.
        await srv.user("bob")
        assert b"<temporary-auth-failure/>" in await attempt(srv, "127.0.0.2", PASSWORD, "bob")


async def test_attacked_account_is_slowed_not_locked_out(make_server: Any) -> None:
    """After wrong passwords for alice from many addresses, every answer for
    her account waits (here 2 s, the cap), but her right password from yet
    another address is still accepted."""
    async with make_server(client={"auth_ban_failures": 100, "auth_delay_max": 2}) as srv:
        await srv.user("alice")
        for i in range(5):
            assert b"<not-authorized/>" in await attempt(srv, f"127.0.1.{i + 1}", "wrong")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert (await attempt(srv, "127.0.2.1", PASSWORD)).startswith(b"<success")
        assert loop.time() - t0 >= 1.9, "the answer for an attacked account was not delayed"
        # A login forgives the account: its next answer will not wait.
        alice = JID.parse(f"alice@{DOMAIN}")
        assert srv.server.auth_throttle.delay(alice, loop.time()) == 0
