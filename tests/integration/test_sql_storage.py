"""A server on ``backend = "sql"`` (SQLite): accounts, a roster item and an
offline message go through the database and survive a restart."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from tests.conftest import DOMAIN, TIMEOUT, wait_event
from vinespy.jid import JID
from vinespy.storage.sql import SqlStorage

pytestmark = pytest.mark.integration

SQL = 'backend = "sql"\nurl = "sqlite:///data/vinespy.db"\npool_size = 2\n'


async def test_roster_and_offline_message_on_sqlite(make_server: Any, tmp_path: Any) -> None:
    """Two slixmpp clients log in; alice sets a roster item and sends bob (offline
    by then) a message; after a restart bob gets it at login, alice her roster."""
    async with make_server(storage=SQL) as srv:
        assert isinstance(srv.server.storages[0], SqlStorage)
        alice, bob = await srv.user("alice"), await srv.user("bob")
        a = await srv.login(alice)
        b = await srv.login(bob)
        await a.update_roster(bob, name="Bob", groups=["Friends"], timeout=TIMEOUT)
        b.disconnect()
        await wait_event(b, "disconnected")
        a.send_message(mto=bob, mbody="stored in sqlite", mtype="chat")
        # Stanzas of one stream are handled in order: the ping's answer
        # means the message is stored.
        await a.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)
    with sqlite3.connect(tmp_path / "data" / "vinespy.db") as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (2,)
        assert conn.execute("SELECT contact, name FROM roster").fetchall() == [(bob, "Bob")]
    async with make_server(storage=SQL) as srv:
        # Offline messages follow the initial presence, which login() sends last.
        b = await srv.login(bob)
        m = await wait_event(b, "message")
        assert m["body"] == "stored in sqlite" and m["from"].bare == alice
        a = await srv.login(alice)
        roster = await a.get_roster(timeout=TIMEOUT)
        items = {str(jid): item for jid, item in roster["roster"]["items"].items()}
        assert list(items) == [bob]
        assert items[bob]["name"] == "Bob" and list(items[bob]["groups"]) == ["Friends"]
        await b.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)
        assert await srv.storage.get(JID.parse(bob), "offline") is None
