"""Resource binding under concurrency (issue 10, item 3): binds of one
account that race each other, replacing a session or against the resource
limit, leave no ghost session and never exceed max_resources_per_account."""

from __future__ import annotations

import asyncio
import re
import ssl
from typing import Any

import pytest

from tests.conftest import DOMAIN, PASSWORD, Running
from tests.rawclient import Raw
from vinespy import ns
from vinespy.jid import JID

pytestmark = pytest.mark.integration

ROUNDS = 5


def tls_ctx(srv: Running) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    srv.ca.configure_trust(ctx)
    return ctx


async def authenticated(srv: Running) -> Raw:
    """Alice through STARTTLS and SASL, with her post-auth stream open."""
    raw = await Raw.connect(srv.port)
    raw.local_port = raw.writer.get_extra_info("sockname")[1]  # type: ignore[attr-defined]
    await raw.secure(DOMAIN, tls_ctx(srv))
    assert (await raw.plain("alice", PASSWORD)).startswith(b"<success")
    raw.open_stream(DOMAIN)
    await raw.features()
    return raw


def bind(raw: Raw, resource: str) -> None:
    raw.send(f"<iq type='set' id='b'><bind xmlns='{ns.BIND}'><resource>{resource}"
             "</resource></bind></iq>")


async def bound(raw: Raw) -> bool:
    """The bind's answer: True for a result, False for an error."""
    m = await raw.expect(rb"<iq[^>]*id=\"b\".*?(/>|</iq>)")
    return re.search(rb'type="result"', m.group(0)) is not None


async def closed_with_conflict(raw: Raw) -> bool:
    out = await raw.until_closed()
    return b"<conflict" in out


async def test_racing_replacements_leave_one_session(server: Running) -> None:
    """Two new logins replace one resource at the same moment: one of them
    holds it, the other is closed with <conflict/> like the first; the
    routing table holds exactly the survivor, and every other stream ends."""
    await server.user("alice")
    full = JID.parse(f"alice@{DOMAIN}/phone")
    for _ in range(ROUNDS):
        first = await authenticated(server)
        bind(first, "phone")
        assert await bound(first)
        b, c = await authenticated(server), await authenticated(server)
        bind(b, "phone")
        bind(c, "phone")
        assert await bound(b) and await bound(c)
        assert await closed_with_conflict(first)
        session = server.server.sessions.get(full)
        survivor, loser = (b, c) if session is _session_of(server, b) else (c, b)
        assert session is _session_of(server, survivor), "the routing table lost both"
        assert await closed_with_conflict(loser), "a replaced session stayed connected"
        assert [s.session.jid for s in server.server.streams
                if s.session is not None and s.session.bound] == [full]
        survivor.close()
        await _until_unbound(server, full)


async def test_racing_binds_respect_the_resource_limit(make_server: Any) -> None:
    """A replacement and new resources bound at the same moment never take an
    account past max_resources_per_account."""
    async with make_server(client={"max_resources_per_account": 2}) as srv:
        await srv.user("alice")
        first = await authenticated(srv)
        bind(first, "a")
        assert await bound(first)
        raws = [await authenticated(srv) for _ in range(3)]
        for raw, res in zip(raws, ("a", "x", "y")):
            bind(raw, res)
        results = [await bound(raw) for raw in raws]
        assert results[0], "replacing a bound resource is always allowed"
        assert results.count(True) == 2, results
        assert srv.server.sessions.count(JID.parse(f"alice@{DOMAIN}")) == 2
        for raw in raws:
            raw.close()


def _session_of(srv: Running, raw: Raw) -> Any:
    """The session the server's stream for ``raw``'s connection (by its
    local port) carries."""
    port = raw.local_port  # type: ignore[attr-defined]
    for s in srv.server.streams:
        if s.peer[1] == port:
            return s.session
    return None


async def _until_unbound(srv: Running, full: JID) -> None:
    """Wait for the server to finish the streams of ``full``."""
    tasks = set(srv.server._conn_tasks)
    if tasks:
        await asyncio.wait(tasks, timeout=10)
    assert srv.server.sessions.get(full) is None
