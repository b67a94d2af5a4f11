"""XEP-0313 archiving under load and across a crash: the MAM module writes
through a batcher (vinespy/storage/archive/batch.py) to the fs store, which
syncs once a second (group commit). What that must keep: every message of a
burst from many senders archived once, in send order per conversation, with
the id its recipient saw; and every message delivered before a SIGKILL of
the server still in both archives (the kernel has the bytes).
"""

from __future__ import annotations

import asyncio
import re
import signal
import ssl
import sys
from pathlib import Path
from typing import Any

import pytest
import slixmpp

from tests.conftest import DOMAIN, TIMEOUT, free_port, wait_event
from tests.integration.test_mam import (ALICE, body_of, everything, ids, login, module,
                                        result_id)
from tests.integration.test_operator import env, vinespy
from vinespy.jid import JID
from vinespy.storage.archive import ArchiveQuery
from vinespy.storage.archive.fs import FsArchive

pytestmark = pytest.mark.integration

SENDERS = 8
EACH = 60


async def test_a_burst_from_many_senders_is_archived_in_order(make_server: Any) -> None:
    """Eight senders each send 60 messages to alice without waiting: each
    entry is written once, in a batch or at once (Batcher.append_now, when
    nothing is queued), batches holding several entries when they form, and
    both archives hold every message once, in send order per conversation,
    ids ascending, each under the id alice received it with."""
    async with make_server(client={"rate_limit": 0}) as server:
        alice = await login(server, f"{ALICE}/desk")
        senders = [await login(server, f"s{i}@{DOMAIN}/desk") for i in range(SENDERS)]
        batcher = module(server).batcher
        assert batcher is not None
        before = (batcher.batches, batcher.batched, batcher.written_now)
        for k in range(EACH):
            for i, s in enumerate(senders):
                s.say(ALICE, f"s{i}-{k}")
        for i in range(SENDERS):
            await alice.got(f"s{i}-{EACH - 1}")
        batches, batched, now = (batcher.batches - before[0], batcher.batched - before[1],
                                 batcher.written_now - before[2])
        assert batched + now == SENDERS * EACH * 2
        assert batches <= batched

        for i, s in enumerate(senders):
            sent = [f"s{i}-{k}" for k in range(EACH)]
            kept = await everything(alice, {"with": f"s{i}@{DOMAIN}"}, page=50)
            assert [body_of(m) for m in kept] == sent
            got_ids = [result_id(m) for m in kept]
            assert got_ids == sorted(got_ids) and len(set(got_ids)) == EACH
            assert got_ids == [ids(await alice.got(b), ALICE)[0] for b in sent]
            theirs = await everything(s, {"with": ALICE}, page=50)
            assert [body_of(m) for m in theirs] == sent
            their_ids = [result_id(m) for m in theirs]
            assert their_ids == sorted(their_ids) and len(set(their_ids)) == EACH


async def test_messages_delivered_before_a_sigkill_are_archived(tmp_path: Path) -> None:
    """A `vinespy start` server (fs storage) killed with SIGKILL right after
    the last of 40 messages reached its recipient: both archives on disk
    hold all 40, under the ids the recipient saw (no fsync was needed: the
    kernel had the bytes; the fsyncs only guard against an OS crash)."""
    rc, out, err = await vinespy("init", DOMAIN, cwd=tmp_path)
    assert rc == 0, err
    passwords = dict(re.findall(r"(\w+)@wonderland\.lit\s+password: (\S+)", out))
    site = tmp_path / DOMAIN
    port = free_port()
    config = site / "conf" / "config.toml"
    config.write_text(config.read_text().replace(
        'address = "0.0.0.0"\nport = 5222', f'address = "127.0.0.1"\nport = {port}'))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vinespy", "start", cwd=site, env=env(),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    clients: list[slixmpp.ClientXMPP] = []
    try:
        assert proc.stderr is not None
        while b"listening on" not in (line := await asyncio.wait_for(
                proc.stderr.readline(), TIMEOUT)):
            assert line, "the server exited before listening"
        ctx = ssl.create_default_context(cafile=str(site / "conf" / "certs" / f"{DOMAIN}.crt"))
        for user in ("alice", "arthur"):
            c = slixmpp.ClientXMPP(f"{user}@{DOMAIN}/desk", passwords[user])
            c.ssl_context = ctx
            c.enable_direct_tls = False
            c.auto_reconnect = False
            started = asyncio.create_task(wait_event(c, "session_start"))
            await asyncio.sleep(0)
            c.connect("127.0.0.1", port)
            await started
            c.send_presence()
            clients.append(c)
        alice, arthur = clients
        received: dict[str, str] = {}
        last = asyncio.get_running_loop().create_future()

        def got(m: Any) -> None:
            received[str(m["body"])] = m.xml.find("{urn:xmpp:sid:0}stanza-id").get("id")
            if m["body"] == "m39" and not last.done():
                last.set_result(None)
        arthur.add_event_handler("message", got)
        for i in range(40):
            alice.send_message(mto=f"arthur@{DOMAIN}", mbody=f"m{i}", mtype="chat")
        await asyncio.wait_for(last, TIMEOUT)
        proc.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), TIMEOUT) == -signal.SIGKILL
    finally:
        for c in clients:
            c.abort()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    assert len(received) == 40
    store = FsArchive(site / "data" / "archive")
    theirs = await store.query(JID.parse(f"arthur@{DOMAIN}"), ArchiveQuery(max=100))
    assert [(m.id, m.peer_bare) for m in theirs.items] == \
        [(received[f"m{i}"], f"alice@{DOMAIN}") for i in range(40)]
    assert all(f">m{i}</body>".encode() in m.stanza for i, m in enumerate(theirs.items))
    mine = await store.query(JID.parse(f"alice@{DOMAIN}"), ArchiveQuery(max=100))
    assert len(mine.items) == 40 and all(
        f">m{i}</body>".encode() in m.stanza and m.peer_bare == f"arthur@{DOMAIN}"
        for i, m in enumerate(mine.items))
