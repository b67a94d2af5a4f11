"""Two nodes changing one user's keyval store at the same moment (issue 12
item 3: blocklist edits, the offline store with its cap).

As in test_roster_concurrency.py, each "node" is a router, a host and the
module under test on its own SqlStorage, both on one database (SQLite in a
file or a real PostgreSQL); the modules' own locks are per node, so only
Storage.modify (one transaction, an advisory lock on PostgreSQL) keeps the
two nodes' changes from overwriting each other.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import AsyncIterator

import pytest

from tests.harness import DOMAIN, World
from tests.pgproc import PASSWORD
from tests.storage.conftest import SQL_KINDS, sql_storage
from vinespy.jid import JID
from vinespy.storage import Storage, User
from vinespy.storage.sql import SqlStorage

ROUNDS = 50
ALICE = JID.parse(f"alice@{DOMAIN}")


@pytest.fixture(params=SQL_KINDS)
async def stores(request: pytest.FixtureRequest,
                 tmp_path: Path) -> AsyncIterator[tuple[Storage, SqlStorage]]:
    """Two nodes' storages on one database (SQLite in a file, PostgreSQL)."""
    kind = request.param
    a_store = sql_storage(kind, request, tmp_path)
    assert isinstance(a_store, SqlStorage)
    b_store = SqlStorage(a_store.url, password=PASSWORD if kind == "postgresql" else None)
    try:
        yield a_store, b_store
    finally:
        await a_store.close()
        await b_store.close()


async def test_two_nodes_never_lose_a_block(stores: tuple[Storage, SqlStorage]) -> None:
    a_store, b_store = stores
    await a_store.save_user(User(ALICE))
    nodes = [World("iq", "roster", "blocking", storage=store)
             for store in (a_store, b_store)]
    sessions = [node.bind(ALICE, resource) for node, resource in zip(nodes, "ab")]
    for i in range(ROUNDS):
        answers = await asyncio.wait_for(asyncio.gather(*(
            node.send(s, f"<iq type='set' id='b{i}'><block xmlns='urn:xmpp:blocking'>"
                         f"<item jid='{name}{i}@example.net'/></block></iq>")
            for node, s, name in zip(nodes, sessions, "ab"))), 30)
        for got in answers:
            assert any(st.get("type") == "result" for _, st in got), got
    stored = await a_store.get(ALICE, "blocklist")
    assert len(stored) == 2 * ROUNDS, "a block was lost"


async def test_two_nodes_keep_the_offline_cap_together(stores: tuple[Storage, SqlStorage]) -> None:
    """Both nodes store messages for offline alice at once: every one is
    kept up to the cap, and not one more."""
    a_store, b_store = stores
    cap = 60
    await a_store.save_user(User(ALICE))
    nodes = [World("offline", storage=store,
                   options={"offline": {"max_messages": cap}})
             for store in (a_store, b_store)]
    senders = [node.bind(f"{name}@{DOMAIN}") for node, name in zip(nodes, ("bob", "carol"))]
    refused = 0
    for i in range(ROUNDS):
        answers = await asyncio.wait_for(asyncio.gather(*(
            node.send(s, f"<message to='{ALICE}' id='m{i}'><body>{i}</body></message>")
            for node, s in zip(nodes, senders))), 30)
        refused += sum(1 for got in answers for _, st in got if st.get("type") == "error")
    stored = await a_store.get(ALICE, "offline")
    assert len(stored) == cap, "a message was lost or the cap was passed"
    assert refused == 2 * ROUNDS - cap, "a message was neither stored nor refused"


async def test_two_nodes_create_one_account_once(stores: tuple[Storage, SqlStorage]) -> None:
    """Both nodes make the row of a user first seen (an LDAP user) at once:
    add_user stores one, and never the empty one over a roster."""
    a_store, b_store = stores
    for i in range(ROUNDS):
        jid = JID.parse(f"new{i}@{DOMAIN}")
        added = await asyncio.wait_for(asyncio.gather(
            a_store.add_user(User(jid, roster_version=1)),
            b_store.add_user(User(jid, roster_version=2))), 30)
        assert sorted(added) == [False, True], added
        user = await a_store.find_user(jid)
        assert user is not None and user.roster_version == (1 if added[0] else 2)
