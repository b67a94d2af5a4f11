"""PostgreSQL stopped under a running server (issue 12 item 6): nothing
crashes, chat between online users goes on (the message hot path needs no
database), what needs the database fails with a clear error instead of
vanishing, and the node heals by itself when the database is back."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator, Iterator

import pytest

from tests.conftest import DOMAIN, TIMEOUT, wait_event
from tests.pgproc import PASSWORD, PostgresProcess, running_postgres

pytestmark = pytest.mark.integration


@pytest.fixture
def own_postgres() -> Iterator[PostgresProcess]:
    """A PostgreSQL of this test's own: it is stopped and started again."""
    with running_postgres() as server:
        yield server


def _error(stanza: Any) -> str:
    return str(stanza["error"]["condition"])


@contextlib.asynccontextmanager
async def _chatting(make_server: Any, pg: Any, extra: str = "") -> AsyncIterator[Any]:
    """A server on ``pg`` with alice and bob logged in (their initial presence
    handled) and carol's account; yields (server, alice, bob, carol)."""
    storage = (f'backend = "sql"\nurl = "{pg.url(pg.createdb())}"\n'
               f'password = "{PASSWORD}"\npool_size = 2\n{extra}')
    async with make_server(storage=storage) as srv:
        alice, bob, carol = [await srv.user(n) for n in ("alice", "bob", "carol")]
        a, b = await srv.login(alice), await srv.login(bob)
        for client in (a, b):
            await client.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)
        yield srv, a, b, carol


async def _chat_and_refused_login(srv: Any, a: Any, b: Any, carol: str) -> None:
    """Online to online goes (routed without the database); a login, which
    needs it, gets temporary-auth-failure."""
    a.send_message(mto=b.boundjid.bare, mbody="still here", mtype="chat")
    m = await wait_event(b, "message")
    assert m["body"] == "still here"
    c = srv.client(carol)
    c.connect("127.0.0.1", srv.port)
    failure = await wait_event(c, "failed_auth")
    assert failure.xml.find(
        "{urn:ietf:params:xml:ns:xmpp-sasl}temporary-auth-failure") is not None, failure
    c.abort()


async def test_postgresql_outage_and_recovery(make_server: Any, own_postgres: Any) -> None:
    pg = own_postgres
    async with _chatting(make_server, pg) as (srv, a, b, carol):
        await asyncio.to_thread(pg.halt)
        await _chat_and_refused_login(srv, a, b, carol)

        # To an account with no session: it cannot be stored, so it comes
        # back to its sender with an error rather than vanishing.
        errors: asyncio.Queue[Any] = asyncio.Queue()
        a.add_event_handler("message_error", errors.put_nowait)
        msg = a.make_message(mto=carol, mbody="for later", mtype="chat")
        msg["id"] = "lost-1"
        msg.send()
        err = await asyncio.wait_for(errors.get(), TIMEOUT)
        assert err["id"] == "lost-1" and _error(err) == "internal-server-error"

        # A roster request needs the database: an IQ error, the stream lives.
        with pytest.raises(Exception) as caught:
            await a.get_roster(timeout=TIMEOUT)
        assert "internal-server-error" in str(caught.value)

        await asyncio.to_thread(pg.resume)

        # Healed without a restart: the same streams, logins, offline storage.
        await a.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)
        roster = await a.get_roster(timeout=TIMEOUT)
        assert roster["type"] == "result"
        a.send_message(mto=carol, mbody="stored now", mtype="chat")
        await a.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)
        c = await srv.login(carol)
        m = await wait_event(c, "message")
        assert m["body"] == "stored now"


async def test_a_database_that_hangs_fails_logins_in_time(
        make_server: Any, own_postgres: Any) -> None:
    """PostgreSQL frozen (SIGSTOP: no reset, no refusal, just silence): a
    login gets temporary-auth-failure once `timeout` has passed instead of
    hanging, online users chat on, and all works again once it answers."""
    pg = own_postgres
    async with _chatting(make_server, pg, "timeout = 1\n") as (srv, a, b, carol):
        pg.freeze()
        try:
            await _chat_and_refused_login(srv, a, b, carol)
        finally:
            pg.thaw()
        c = await srv.login(carol)
        await c.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)
