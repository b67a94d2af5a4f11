"""Two nodes changing one user's roster at the same moment (issue 12 item 3).

Each "node" is a router, a host and the roster module (its own per-process
user lock) on its own SqlStorage; both share one database, SQLite in a file
or a real PostgreSQL. Round after round, node A adds one contact and node B
another to alice's roster at once. Every change is kept and every one gets a
version of its own: update_roster with ``expected`` refuses a change computed
from a version another node has already replaced (RosterConflict), and the
roster module computes it again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.harness import DOMAIN, World
from tests.storage.conftest import SQL_KINDS, sql_storage
from vinespy.jid import JID
from tests.pgproc import PASSWORD
from vinespy.storage import Contact, RosterConflict, User
from vinespy.storage.memory import MemoryStorage
from vinespy.storage.sql import SqlStorage

ROUNDS = 100
ALICE = JID.parse(f"alice@{DOMAIN}")


@pytest.mark.parametrize("kind", SQL_KINDS)
async def test_two_nodes_never_lose_a_roster_change(
        kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    a_store = sql_storage(kind, request, tmp_path)
    assert isinstance(a_store, SqlStorage)
    # The other node: the same database, its own connections.
    b_store = SqlStorage(a_store.url, password=PASSWORD if kind == "postgresql" else None)
    try:
        await a_store.save_user(User(ALICE))
        nodes = [World("iq", "roster", storage=a_store), World("iq", "roster", storage=b_store)]
        sessions = [node.bind(ALICE, resource) for node, resource in zip(nodes, ("a", "b"))]
        for node, s in zip(nodes, sessions):        # both resources get roster pushes
            await node.send(s, "<iq type='get' id='g'><query xmlns='jabber:iq:roster'/></iq>")
        for i in range(ROUNDS):
            answers = await asyncio.wait_for(asyncio.gather(*(
                node.send(s, f"<iq type='set' id='s{i}'><query xmlns='jabber:iq:roster'>"
                             f"<item jid='{name}{i}@{DOMAIN}'/></query></iq>")
                for node, s, name in zip(nodes, sessions, ("a", "b")))), 30)
            for got in answers:
                assert any(st.get("type") == "result" and st.get("id") == f"s{i}"
                           for _, st in got), got
        user = await a_store.find_user(ALICE)
        assert user is not None
        assert len(user.roster) == 2 * ROUNDS, "a roster change was lost"
        assert user.roster_version == 2 * ROUNDS, "two changes got one version"
        # The pushes each node sent carry versions that only grow, and no
        # version was given to two changes.
        versions = [int(st[0].get("ver")) for s in sessions for st in s.got
                    if st.get("type") == "set"]
        for s in sessions:
            mine = [int(st[0].get("ver")) for st in s.got if st.get("type") == "set"]
            assert mine == sorted(mine)
        assert len(versions) == len(set(versions)) == 2 * ROUNDS
    finally:
        await a_store.close()
        await b_store.close()


@pytest.mark.parametrize("kind", ("memory", *SQL_KINDS))
async def test_a_change_from_a_stale_version_is_refused(
        kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """update_roster(..., expected=v) stores nothing and raises RosterConflict
    when the stored version is not v; with the right one it stores."""
    store = MemoryStorage() if kind == "memory" else sql_storage(kind, request, tmp_path)
    bob, carol = JID.parse(f"bob@{DOMAIN}"), JID.parse(f"carol@{DOMAIN}")
    try:
        await store.save_user(User(ALICE))
        assert await store.update_roster(ALICE, {bob: Contact(bob)}, 1, expected=0)
        with pytest.raises(RosterConflict):
            await store.update_roster(ALICE, {carol: Contact(carol)}, 1, expected=0)
        user = await store.find_user(ALICE)
        assert user is not None and user.roster_version == 1 and carol not in user.roster
        assert await store.update_roster(ALICE, {carol: Contact(carol)}, 2, expected=1)
        assert not await store.update_roster(JID.parse(f"nobody@{DOMAIN}"), {}, 1, expected=0)
    finally:
        if isinstance(store, SqlStorage):
            await store.close()


@pytest.mark.parametrize("kind", SQL_KINDS)
async def test_two_nodes_keep_the_pending_cap_together(
        kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Two strangers' subscription requests, stored hidden (no push, nothing
    a client sees), reach one user through two nodes at once, with room for
    one more: each change takes a roster version of its own, so the nodes
    cannot both admit theirs (for each of ROUNDS users)."""
    a_store = sql_storage(kind, request, tmp_path)
    assert isinstance(a_store, SqlStorage)
    b_store = SqlStorage(a_store.url, password=PASSWORD if kind == "postgresql" else None)
    try:
        nodes = [World("iq", "roster", "presence", "subscription", storage=store,
                       options={"roster": {"max_pending": 1}})
                 for store in (a_store, b_store)]
        owners = [JID.parse(f"owner{i}@{DOMAIN}") for i in range(ROUNDS // 2)]
        for i, owner in enumerate(owners):
            await nodes[0].account(owner)
            senders = []
            for node, name in zip(nodes, ("a", "b")):
                jid = JID.parse(f"{name}{i}@{DOMAIN}")
                await node.account(jid)
                senders.append(node.bind(jid))
            await asyncio.wait_for(asyncio.gather(*(
                node.send(s, f"<presence to='{owner}' type='subscribe'/>")
                for node, s in zip(nodes, senders))), 30)
        for owner in owners:
            user = await a_store.find_user(owner)
            assert user is not None
            pending = [c for c in user.roster.values() if c.pending_in]
            assert len(pending) == 1, f"{owner}: {len(pending)} requests pending, the cap is 1"
    finally:
        await a_store.close()
        await b_store.close()
