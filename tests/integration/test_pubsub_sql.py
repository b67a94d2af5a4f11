"""XEP-0060 on a server whose host storage is ``backend = "sql"`` (SQLite):
the pubsub service keeps its nodes in the host's database (issue 12: every
piece of data in the one storage), and they survive a restart. Real slixmpp
clients; the helpers are test_pubsub.py's."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DOMAIN, TIMEOUT
from tests.integration.test_pubsub import (HOST, SVC, entry, expect, got, login, new_user,
                                           node_config, notified_item, owner_subscriptions,
                                           ps, result_items, submit)
from vinespy.storage.pubsub.sql import SqlPubSub

pytestmark = pytest.mark.integration

SQL = 'backend = "sql"\nurl = "sqlite:///data/vinespy.db"\npool_size = 2\n'


async def test_node_and_items_survive_a_restart_on_sqlite(make_server: Any,
                                                          tmp_path: Path) -> None:
    """alice creates "news" with max_items 2, bob subscribes, alice publishes
    three items (the first evicted): all of it in the SQLite file, none in a
    pubsub directory. After a restart the config, the subscription and the two
    newest items are there, and a new publication reaches bob and trims."""
    async with make_server(host=HOST, storage=SQL) as srv:
        store = srv.server.hosts[DOMAIN].pubsub_store
        assert isinstance(store, SqlPubSub) and store.storage is srv.server.storages[0]
        alice = await new_user(srv, "alice")
        bob_jid = await srv.user("bob")
        bob = await login(srv, bob_jid)
        await ps(alice).create_node(SVC, "news", timeout=TIMEOUT)
        await ps(alice).set_node_config(SVC, "news", submit(max_items="2"), timeout=TIMEOUT)
        await ps(bob).subscribe(SVC, "news", timeout=TIMEOUT)
        for i, text in (("i1", "one"), ("i2", "two"), ("i3", "three")):
            await ps(alice).publish(SVC, "news", id=i, payload=entry(text), timeout=TIMEOUT)
    with sqlite3.connect(tmp_path / "data" / "vinespy.db") as conn:
        assert conn.execute("SELECT service, name, owner FROM pubsub_nodes").fetchall() == [
            (SVC, "news", f"alice@{DOMAIN}")]
        assert sorted(conn.execute("SELECT item_id FROM pubsub_items")) == [("i2",), ("i3",)]
    assert not (tmp_path / "data" / "pubsub").exists()

    async with make_server(host=HOST, storage=SQL) as srv:
        alice = await login(srv, f"alice@{DOMAIN}")
        bob = await login(srv, bob_jid)
        _, values = await node_config(alice, "news")
        assert values["pubsub#max_items"] == "2"
        res = await ps(alice).get_node_subscriptions(SVC, "news", timeout=TIMEOUT)
        assert owner_subscriptions(res) == {bob_jid}
        res = await ps(bob).get_items(SVC, "news", timeout=TIMEOUT)
        assert set(result_items(res).items()) == {("i2", "two"), ("i3", "three")}
        notified = expect(bob, "pubsub_publish")
        await ps(alice).publish(SVC, "news", id="i4", payload=entry("four"), timeout=TIMEOUT)
        assert notified_item(await got(notified)) == ("news", "i4", "four", 1)
        res = await ps(bob).get_items(SVC, "news", timeout=TIMEOUT)
        assert set(result_items(res)) == {"i3", "i4"}
