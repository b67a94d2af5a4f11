"""XEP-0313 across two cluster nodes sharing their storage (a data
directory, then PostgreSQL): alice on node 0 and bob on node 1 converse;
each then asks the other node for the history and finds all of it, under
the ids the delivered messages carried."""

from __future__ import annotations

import pytest

from tests.cluster.conftest import Clients, ClusterFactory
from tests.conftest import DOMAIN
from tests.integration.test_mam import Client, body_of, ids, result_id

pytestmark = [pytest.mark.integration, pytest.mark.redis]

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"


async def history(c: Client, with_jid: str) -> list[tuple[str, str]]:
    """(id, body) of every archived message with ``with_jid``, page by page."""
    out: list[tuple[str, str]] = []
    after: str | None = None
    while True:
        got, fin = await c.query({"with": with_jid}, max=7, after=after, queryid=f"h{len(out)}")
        out += [(result_id(m), body_of(m)) for m in got]
        if fin.get("complete") == "true":
            return out
        after = result_id(got[-1])


async def test_each_side_reads_the_whole_conversation_on_the_other_node(
        cluster: ClusterFactory, xmpp: Clients) -> None:
    c = await cluster(2)
    alice = Client((await xmpp.login(c[0], "alice/phone")).xmpp)
    bob = Client((await xmpp.login(c[1], "bob/desk")).xmpp)
    seen: dict[str, list[str]] = {ALICE: [], BOB: []}
    lines = [f"line {i}" for i in range(20)]
    for i, text in enumerate(lines):             # in turn: one order on both sides
        sender, to, receiver = (alice, BOB, bob) if i % 2 else (bob, ALICE, alice)
        sender.say(to, text)
        m = await receiver.got(text)
        (sid,) = ids(m, to)
        assert not ids(m, BOB if to == ALICE else ALICE)    # never the sender's id
        seen[to].append(sid)
    # Each user, logged in anew on the other node, reads the whole history.
    alice2 = Client((await xmpp.login(c[1], "alice/tablet")).xmpp)
    bob2 = Client((await xmpp.login(c[0], "bob/laptop")).xmpp)
    mine = await history(alice2, BOB)
    assert [text for _, text in mine] == lines
    # What alice received carries the id her archive has it under.
    assert [sid for sid, text in mine if lines.index(text) % 2 == 0] == seen[ALICE]
    theirs = await history(bob2, ALICE)
    assert [text for _, text in theirs] == lines
    assert [sid for sid, text in theirs if lines.index(text) % 2] == seen[BOB]
