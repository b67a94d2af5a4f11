"""After ``vinespy migrate`` fs -> SQLite, a server on the SQLite URL lets a
migrated user log in with their old password and hands them the offline
message stored before the move."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.conftest import DOMAIN, PASSWORD, wait_event, write_config
from vinespy import accounts, cli
from vinespy.jid import JID
from vinespy.storage.fs import FsStorage

pytestmark = pytest.mark.integration

SQL = 'backend = "sql"\nurl = "sqlite:///data/vinespy.db"\npool_size = 2\n'


async def test_migrated_user_logs_in_and_gets_offline_message(
        make_server: Any, tmp_path: Path, ca: trustme.CA) -> None:
    """fs data (accounts, an offline message) migrated to SQLite serves a login."""
    config = write_config(tmp_path, ca)             # fs in data/
    fs = FsStorage(tmp_path / "data")
    alice, bob = JID.parse(f"alice@{DOMAIN}"), JID.parse(f"bob@{DOMAIN}")
    for jid in (alice, bob):
        await accounts.create_user(fs, jid, PASSWORD)
    await fs.put(bob, "offline", [{
        "stamp": "2024-01-02T03:04:05Z",
        "xml": f"<message xmlns='jabber:client' from='{alice}/pc' to='{bob}' type='chat'>"
               f"<body>sent before the move</body></message>"}])
    status = await asyncio.to_thread(cli.main, ["-c", str(config), "migrate",
                                                "--to", "sqlite:///data/vinespy.db"])
    assert status == 0
    async with make_server(storage=SQL) as srv:
        b = await srv.login(str(bob))
        m = await wait_event(b, "message")
        assert m["body"] == "sent before the move" and m["from"].bare == str(alice)
