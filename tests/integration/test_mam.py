"""XEP-0313 Message Archive Management (with XEP-0359 stanza ids, XEP-0334
hints, XEP-0441 preferences, XEP-0059 paging) end to end, with real slixmpp
clients: the xep_0313/xep_0059 plugins where they reach, raw stanzas where
they do not (flip-page, the extended fields, prefs, errors).

"Not archived" is shown by a later message that is: stanzas one sender sends
are handled in order, so once a later one is in the archive, any earlier one
would be too.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import pytest
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from tests.conftest import DOMAIN, TIMEOUT, Running, wait_event
from vinespy import cli
from vinespy.duty import Duty, LocalDuty
from vinespy.jid import JID
from vinespy.modules import builtin
from vinespy.modules.mam import Mam
from vinespy.storage.archive import (ArchivedMessage, ArchiveQuery, ArchiveStore, archive_for,
                                     new_id)
from vinespy.storage.archive.fs import FsArchive

pytestmark = pytest.mark.integration

MAM = "urn:xmpp:mam:2"
SID = "{urn:xmpp:sid:0}stanza-id"
RSM = "http://jabber.org/protocol/rsm"
PLUGINS = ("xep_0313", "xep_0059", "xep_0297", "xep_0280", "xep_0334", "xep_0191")
FS = 'backend = "fs"\ndir = "data"\n'       # [host.storage] of the default server
ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
CAROL = f"carol@{DOMAIN}"


class Client:
    """A logged-in client with a queue of the chat messages it received."""

    def __init__(self, xmpp: Any) -> None:
        self.xmpp = xmpp
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.seen: dict[str, Any] = {}
        self.results: asyncio.Queue[Any] = asyncio.Queue()
        xmpp.add_event_handler("message", self._message)
        xmpp.register_handler(Callback(
            "mam results", MatchXPath(f"{{jabber:client}}message/{{{MAM}}}result"),
            lambda m: self.results.put_nowait(m)))

    def _message(self, m: Any) -> None:
        if m["body"] and m.xml.find(f"{{{MAM}}}result") is None:
            self.inbox.put_nowait(m)

    @property
    def jid(self) -> str:
        return str(self.xmpp.boundjid.full)

    def say(self, to: str, body: str, *hints: str) -> None:
        msg = self.xmpp.make_message(mto=to, mbody=body, mtype="chat")
        for hint in hints:
            msg.enable(hint)
        msg.send()

    async def got(self, body: str) -> Any:
        """The message with ``body``, received before or within TIMEOUT."""
        while body not in self.seen:
            m = await asyncio.wait_for(self.inbox.get(), TIMEOUT)
            self.seen[str(m["body"])] = m
        return self.seen[body]

    async def ping(self) -> None:
        await self.xmpp.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)

    async def query(self, fields: dict[str, Any] | None = None, *, max: int | None = None,
                    after: str | None = None, before: str | None = None, flip: bool = False,
                    to: str | None = None, queryid: str = "q") -> tuple[list[Any], Any]:
        """A raw MAM query: (the result messages, the <fin/> element)."""
        iq = self.xmpp.make_iq_set(ito=to)
        q = ET.SubElement(iq.xml, f"{{{MAM}}}query", queryid=queryid)
        if fields:
            x = ET.SubElement(q, "{jabber:x:data}x", type="submit")
            for var, value in {"FORM_TYPE": MAM, **fields}.items():
                f = ET.SubElement(x, "{jabber:x:data}field", var=var)
                for v in (value if isinstance(value, list) else [value]):
                    ET.SubElement(f, "{jabber:x:data}value").text = str(v)
        if max is not None or after is not None or before is not None:
            s = ET.SubElement(q, f"{{{RSM}}}set")
            if max is not None:
                ET.SubElement(s, f"{{{RSM}}}max").text = str(max)
            if after is not None:
                ET.SubElement(s, f"{{{RSM}}}after").text = after
            if before is not None:
                ET.SubElement(s, f"{{{RSM}}}before").text = before
        if flip:
            ET.SubElement(q, f"{{{MAM}}}flip-page")
        result = await iq.send(timeout=TIMEOUT)
        fin = result.xml.find(f"{{{MAM}}}fin")
        out = []
        while not self.results.empty():
            m = self.results.get_nowait()
            r = m.xml.find(f"{{{MAM}}}result")
            if r.get("queryid") == queryid:
                out.append(m)
        return out, fin


def body_of(m: Any) -> str:
    inner = m.xml.find(f"{{{MAM}}}result/{{urn:xmpp:forward:0}}forwarded/{{jabber:client}}message")
    return inner.findtext("{jabber:client}body")


def result_id(m: Any) -> str:
    return m.xml.find(f"{{{MAM}}}result").get("id")


def rsm(fin: Any, name: str) -> str | None:
    return fin.findtext(f"{{{RSM}}}set/{{{RSM}}}{name}")


def ids(m: Any, by: str) -> list[str]:
    return [el.get("id") for el in m.xml.findall(SID) if el.get("by") == by]


async def login(srv: Running, full: str, *, carbons: bool = False) -> Client:
    bare = full.partition("/")[0]
    if await srv.storage.find_account(JID.parse(bare)) is None:
        await srv.user(bare.partition("@")[0])
    c = Client(await srv.login(full, plugins=PLUGINS))
    if carbons:
        await c.xmpp.plugin["xep_0280"].enable(timeout=TIMEOUT)
    await c.ping()
    return c


def module(srv: Running) -> Mam:
    mod = srv.server.hosts[DOMAIN].modules["mam"]
    assert isinstance(mod, Mam)
    return mod


async def everything(c: Client, fields: dict[str, Any] | None = None, *,
                     backward: bool = False, page: int = 250) -> list[Any]:
    """Every result of ``fields`` in pages of ``page``, following the RSM
    cursor forward (or backward from the end); asserts the pages' ends."""
    out: list[Any] = []
    cursor: str | None = None if not backward else ""
    while True:
        got, fin = await c.query(fields, max=page, after=None if backward else cursor,
                                 before=cursor if backward else None,
                                 queryid=f"p{len(out)}")
        assert len(got) <= page
        if got:
            assert (rsm(fin, "first"), rsm(fin, "last")) == (result_id(got[0]), result_id(got[-1]))
        out = got + out if backward else out + got
        if fin.get("complete") == "true":
            return out
        assert got, "an incomplete page holds results"
        cursor = result_id(got[0]) if backward else result_id(got[-1])


async def test_thousand_messages_paged_both_ways_with_filters(make_server: Any) -> None:
    """1,000 messages (each its own stanza) archived on both sides; paged in
    pages of 250 forward and backward they are all there, in order, each
    once; 'with' and 'start'/'end' select what they should."""
    async with make_server(client={"rate_limit": 0}) as server:   # sent as fast as read
        await thousand(server)


async def thousand(server: Running) -> None:
    alice = await login(server, f"{ALICE}/desk")
    bob = await login(server, f"{BOB}/desk")
    carol = await login(server, f"{CAROL}/desk")
    for i in range(500):
        bob.say(ALICE, f"b{i}")
    await alice.got("b499")
    for i in range(10):
        carol.say(ALICE, f"c{i}")
    await alice.got("c9")
    middle = datetime.now(timezone.utc)
    for i in range(500, 1000):
        bob.say(ALICE, f"b{i}")
    await alice.got("b999")
    bobs = [f"b{i}" for i in range(1000)]

    forward = [body_of(m) for m in await everything(alice, {"with": BOB})]
    assert forward == bobs
    backward = [body_of(m) for m in await everything(alice, {"with": BOB}, backward=True)]
    assert backward == bobs
    assert [body_of(m) for m in await everything(alice)] == \
        bobs[:500] + [f"c{i}" for i in range(10)] + bobs[500:]
    assert [body_of(m) for m in await everything(alice, {"with": CAROL})] == \
        [f"c{i}" for i in range(10)]
    # The sender's archive has them too, under the recipient.
    assert [body_of(m) for m in await everything(bob, {"with": ALICE}, page=100)] == bobs

    stamp = middle.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert [body_of(m) for m in await everything(alice, {"with": BOB, "start": stamp})] == \
        bobs[500:]
    assert [body_of(m) for m in await everything(alice, {"end": stamp}, backward=True)] == \
        bobs[:500] + [f"c{i}" for i in range(10)]
    got, fin = await alice.query({"with": BOB}, max=10)
    assert rsm(fin, "count") in (None, "1000") and fin.get("complete") is None


async def test_flip_page_and_the_plugin(server: Running) -> None:
    """<flip-page/> sends the page newest first, <fin/> unchanged; slixmpp's
    own retrieve() (xep_0313 + xep_0059) reads the same archive."""
    alice = await login(server, f"{ALICE}/desk")
    bob = await login(server, f"{BOB}/desk")
    for i in range(5):
        bob.say(ALICE, f"m{i}")
    await alice.got("m4")
    got, fin = await alice.query(max=3, before="", flip=True)
    assert [body_of(m) for m in got] == ["m4", "m3", "m2"]
    assert (rsm(fin, "first"), rsm(fin, "last")) == (result_id(got[-1]), result_id(got[0]))
    plugin = alice.xmpp.plugin["xep_0313"]
    iq = await plugin.retrieve(jid=JID.parse(ALICE).bare, with_jid=BOB, timeout=TIMEOUT)
    assert [r["mam_result"]["forwarded"]["stanza"]["body"] for r in iq["mam"]["results"]] == \
        [f"m{i}" for i in range(5)]


async def test_stanza_ids_delivered_carbons_stable_and_forged(server: Running) -> None:
    """The delivered message, its <received/> and <sent/> carbons carry the
    archive ids (each side's own); a query returns the same ids; a stanza-id
    the sender forged is stripped; the recipient never sees the sender's id."""
    phone = await login(server, f"{ALICE}/phone", carbons=True)
    laptop = await login(server, f"{ALICE}/laptop", carbons=True)
    phone.xmpp.send_presence(ppriority=5)
    await phone.ping()
    bob = await login(server, f"{BOB}/desk", carbons=True)
    bob_tablet = await login(server, f"{BOB}/tablet", carbons=True)
    received = asyncio.create_task(wait_event(laptop.xmpp, "carbon_received"))
    sent = asyncio.create_task(wait_event(bob_tablet.xmpp, "carbon_sent"))
    msg = bob.xmpp.make_message(mto=ALICE, mbody="hello", mtype="chat")
    for by in (ALICE, BOB):
        forged = ET.SubElement(msg.xml, SID, by=by, id="forged")
        assert forged is not None
    msg.send()
    m = await phone.got("hello")
    (alice_id,) = ids(m, ALICE)
    assert alice_id != "forged" and not ids(m, BOB)
    carbon = (await received)["carbon_received"]
    assert ids(carbon, ALICE) == [alice_id] and not ids(carbon, BOB)
    sent_copy = (await sent)["carbon_sent"]
    (bob_id,) = ids(sent_copy, BOB)
    assert bob_id != "forged"
    got, _ = await phone.query({"with": BOB})
    assert [result_id(r) for r in got] == [alice_id]
    got, _ = await bob.query({"with": ALICE})
    assert [result_id(r) for r in got] == [bob_id]
    # The archived copies carry no ids of the archive, nor the forged ones.
    assert got[0].xml.find(f".//{{jabber:client}}message/{SID}") is None


async def test_message_to_another_domain_is_in_the_senders_archive(server: Running) -> None:
    """A message to another domain is filed as sent (delivery beyond the
    server is known later, if ever), its <sent/> carbon carrying the id."""
    phone = await login(server, f"{ALICE}/phone", carbons=True)
    laptop = await login(server, f"{ALICE}/laptop", carbons=True)
    sent = asyncio.create_task(wait_event(laptop.xmpp, "carbon_sent"))
    error = asyncio.create_task(wait_event(phone.xmpp, "message_error"))
    phone.say("romeo@montague.example", "across")
    assert (await error)["error"]["condition"] == "remote-server-not-found"
    (sid,) = ids((await sent)["carbon_sent"], ALICE)
    got, _ = await phone.query({"with": "romeo@montague.example"})
    assert [(result_id(r), body_of(r)) for r in got] == [(sid, "across")]


async def test_message_to_oneself_is_one_entry(server: Running) -> None:
    """alice/phone -> alice/laptop: one entry, the id on the delivered message."""
    phone = await login(server, f"{ALICE}/phone")
    laptop = await login(server, f"{ALICE}/laptop")
    phone.say(f"{ALICE}/laptop", "note to self")
    m = await laptop.got("note to self")
    (sid,) = ids(m, ALICE)
    got, _ = await laptop.query()
    assert [(result_id(r), body_of(r)) for r in got] == [(sid, "note to self")]
    got, _ = await laptop.query({"with": ALICE})
    assert [result_id(r) for r in got] == [sid]


async def test_a_new_device_gets_the_history(server: Running) -> None:
    """A client that logs in later finds the whole conversation it never saw."""
    alice = await login(server, f"{ALICE}/phone")
    bob = await login(server, f"{BOB}/desk")
    for i in range(20):           # in turn: the archive's order is the server's
        sender, to, receiver = (alice, BOB, bob) if i % 2 else (bob, ALICE, alice)
        sender.say(to, f"line {i}")
        await receiver.got(f"line {i}")
    tablet = await login(server, f"{ALICE}/tablet")
    history = await everything(tablet, {"with": BOB}, page=7)
    assert [body_of(m) for m in history] == [f"line {i}" for i in range(20)]


async def test_offline_message_carries_its_archive_id(server: Running) -> None:
    """A message stored offline arrives later with the stanza-id it has in
    the archive. One to a user that does not exist is in no archive of
    that user, with a body or without (a chat marker: offline storage
    drops it, but only for an account); the sender's archive keeps what he
    sent, under the ids his <sent/> carbons carried."""
    bob = await login(server, f"{BOB}/desk", carbons=True)
    tablet = await login(server, f"{BOB}/tablet", carbons=True)
    sent: asyncio.Queue[Any] = asyncio.Queue()
    tablet.xmpp.add_event_handler("carbon_sent", sent.put_nowait)
    await server.user("alice")
    nobody = f"nobody@{DOMAIN}"
    bob.say(ALICE, "while you were out")
    bob.say(nobody, "into the void")
    marker = bob.xmpp.make_message(mto=nobody, mtype="chat")
    ET.SubElement(marker.xml, "{urn:xmpp:chat-markers:0}displayed", id="m1")
    marker.send()
    await bob.ping()
    carbon_ids = [ids((await asyncio.wait_for(sent.get(), TIMEOUT))["carbon_sent"], BOB)
                  for _ in range(3)]
    alice = await login(server, f"{ALICE}/phone")
    m = await alice.got("while you were out")
    (sid,) = ids(m, ALICE)
    got, _ = await alice.query()
    assert [(result_id(r), body_of(r)) for r in got] == [(sid, "while you were out")]
    got, _ = await bob.query()
    assert [body_of(r) for r in got] == ["while you were out", "into the void", None]
    assert [[result_id(r)] for r in got] == carbon_ids
    store = server.server.hosts[DOMAIN].archive
    assert store is not None
    assert (await store.query(JID.parse(nobody), ArchiveQuery())).items == ()


async def test_bounced_and_blocked_messages_are_not_archived(server: Running) -> None:
    """Refused by the recipient's blocklist: not in the recipient's archive;
    in the sender's, as sent, under the id his <sent/> carbon carried (a
    client catching up from that id finds it)."""
    alice = await login(server, f"{ALICE}/phone")
    bob = await login(server, f"{BOB}/desk", carbons=True)
    tablet = await login(server, f"{BOB}/tablet", carbons=True)
    sent: asyncio.Queue[Any] = asyncio.Queue()
    tablet.xmpp.add_event_handler("carbon_sent", sent.put_nowait)
    await alice.xmpp.plugin["xep_0191"].block(BOB, timeout=TIMEOUT)
    error = asyncio.create_task(wait_event(bob.xmpp, "message_error"))
    bob.say(ALICE, "blocked")
    assert (await error)["error"]["condition"] == "service-unavailable"
    (blocked_id,) = ids((await asyncio.wait_for(sent.get(), TIMEOUT))["carbon_sent"], BOB)
    await alice.xmpp.plugin["xep_0191"].unblock(BOB, timeout=TIMEOUT)
    bob.say(ALICE, "through")
    await alice.got("through")
    (through_id,) = ids((await asyncio.wait_for(sent.get(), TIMEOUT))["carbon_sent"], BOB)
    got, _ = await alice.query()
    assert [body_of(r) for r in got] == ["through"]
    got, _ = await bob.query()
    assert [(result_id(r), body_of(r)) for r in got] == [
        (blocked_id, "blocked"), (through_id, "through")]
    # The carbon's id is a cursor: what came after it is found after it.
    got, _ = await tablet.query(after=blocked_id)
    assert [body_of(r) for r in got] == ["through"]


async def test_a_message_refused_by_the_senders_own_blocklist_is_not_archived(
        server: Running) -> None:
    """XEP-0191: a message to a JID on one's own blocklist is refused with
    <not-acceptable/> and never sent: it is in nobody's archive."""
    alice = await login(server, f"{ALICE}/phone")
    bob = await login(server, f"{BOB}/desk")
    await bob.xmpp.plugin["xep_0191"].block(ALICE, timeout=TIMEOUT)
    error = asyncio.create_task(wait_event(bob.xmpp, "message_error"))
    bob.say(ALICE, "never sent")
    assert (await error)["error"]["condition"] == "not-acceptable"
    await bob.xmpp.plugin["xep_0191"].unblock(ALICE, timeout=TIMEOUT)
    bob.say(ALICE, "sent")
    await alice.got("sent")
    for side in (alice, bob):
        got, _ = await side.query()
        assert [body_of(r) for r in got] == ["sent"]


def kind_of(m: Any) -> str:
    """The body of an archived result, else the name of its first payload."""
    inner = m.xml.find(f"{{{MAM}}}result/{{urn:xmpp:forward:0}}forwarded/{{jabber:client}}message")
    body = inner.findtext("{jabber:client}body")
    return body if body is not None else inner[0].tag.rpartition("}")[2]


async def test_hints_and_kinds(server: Running) -> None:
    """<no-store/> and <no-permanent-store/> are not archived, nor chat states
    nor receipts; chat markers are (clients sync read state from them), and
    <store/> forces a message without a body in."""
    alice = await login(server, f"{ALICE}/phone")
    bob = await login(server, f"{BOB}/desk")
    bob.say(ALICE, "secret", "no-store")
    bob.say(ALICE, "fleeting", "no-permanent-store")
    for payload in ("{http://jabber.org/protocol/chatstates}composing",
                    "{urn:xmpp:receipts}received", "{urn:xmpp:chat-markers:0}displayed",
                    "{urn:xmpp:hints}store"):
        m = bob.xmpp.make_message(mto=ALICE, mtype="chat")
        ET.SubElement(m.xml, payload, id="x1")
        m.send()
    bob.say(ALICE, "kept")
    await alice.got("kept")
    got, _ = await alice.query()
    assert [kind_of(r) for r in got] == ["displayed", "store", "kept"]
    got, _ = await bob.query()
    assert [kind_of(r) for r in got] == ["displayed", "store", "kept"]


async def test_preferences_never_and_roster(server: Running) -> None:
    """prefs default='never' stops archiving; 'roster' keeps only contacts'."""
    alice = await login(server, f"{ALICE}/phone")
    bob = await login(server, f"{BOB}/desk")
    carol = await login(server, f"{CAROL}/desk")

    async def prefs(default: str) -> Any:
        iq = alice.xmpp.make_iq_set()
        ET.SubElement(iq.xml, f"{{{MAM}}}prefs", default=default)
        return (await iq.send(timeout=TIMEOUT)).xml.find(f"{{{MAM}}}prefs")

    applied = await prefs("never")
    assert applied.get("default") == "never"
    assert applied.find(f"{{{MAM}}}always") is not None
    bob.say(ALICE, "not kept")
    await alice.got("not kept")
    got, _ = await alice.query()
    assert got == []

    await alice.xmpp.update_roster(BOB, name="Bob", timeout=TIMEOUT)
    await prefs("roster")
    iq = alice.xmpp.make_iq_get()
    ET.SubElement(iq.xml, f"{{{MAM}}}prefs")
    assert (await iq.send(timeout=TIMEOUT)).xml.find(f"{{{MAM}}}prefs").get("default") == \
        "roster"
    carol.say(ALICE, "stranger")
    bob.say(ALICE, "contact")
    await alice.got("stranger")
    await alice.got("contact")
    got, _ = await alice.query()
    assert [body_of(r) for r in got] == ["contact"]
    # Carol's own archive follows her (default) preferences.
    got, _ = await carol.query()
    assert [body_of(r) for r in got] == ["stranger"]


async def test_errors(server: Running) -> None:
    """Unknown field: feature-not-implemented (§4.1.5); a malformed one:
    bad-request; an RSM or after-id id not archived: item-not-found;
    someone else's archive: forbidden."""
    alice = await login(server, f"{ALICE}/phone")
    bob = await login(server, f"{BOB}/desk")
    bob.say(ALICE, "one")
    await alice.got("one")

    async def error(**kw: Any) -> str:
        with pytest.raises(IqError) as info:
            await alice.query(**kw)
        return str(info.value.iq["error"]["condition"])

    assert await error(fields={"colour": "red"}) == "feature-not-implemented"
    assert await error(fields={"start": "yesterday"}) == "bad-request"
    assert await error(fields={"with": "@@"}) == "bad-request"
    assert await error(after="0" * 24) == "item-not-found"
    assert await error(before="nonsense") == "item-not-found"
    assert await error(fields={"after-id": "0" * 24}) == "item-not-found"
    assert await error(fields={"ids": ["0" * 24]}) == "item-not-found"
    assert await error(to=BOB) == "forbidden"
    assert await error(to=DOMAIN) == "service-unavailable"


async def test_extended_fields_form_metadata_and_disco(server: Running) -> None:
    """after-id/before-id/ids select by id; the form lists every field; the
    metadata names the ends; the account advertises mam:2, #extended, sid:0."""
    alice = await login(server, f"{ALICE}/phone")
    bob = await login(server, f"{BOB}/desk")
    for i in range(5):
        bob.say(ALICE, f"m{i}")
    await alice.got("m4")
    got, _ = await alice.query()
    every = [result_id(r) for r in got]
    between, _ = await alice.query({"after-id": every[0], "before-id": every[3]})
    assert [body_of(r) for r in between] == ["m1", "m2"]
    chosen, _ = await alice.query({"ids": [every[4], every[2]]})
    assert [body_of(r) for r in chosen] == ["m2", "m4"]

    form = await alice.xmpp.plugin["xep_0313"].get_fields(timeout=TIMEOUT)
    assert {"FORM_TYPE", "with", "start", "end", "before-id", "after-id", "ids"} <= \
        {f["var"] for f in form["fields"]}
    meta = await alice.xmpp.plugin["xep_0313"].get_archive_metadata(timeout=TIMEOUT)
    assert meta["mam_metadata"]["start"]["id"] == every[0]
    assert meta["mam_metadata"]["end"]["id"] == every[4]
    info = await alice.xmpp.plugin["xep_0030"].get_info(jid=ALICE, timeout=TIMEOUT)
    features = set(info["disco_info"]["features"])
    assert {MAM, f"{MAM}#extended", "urn:xmpp:sid:0"} <= features
    assert "mam" in builtin()


async def test_unregister_deletes_the_archive(server: Running) -> None:
    """`vinespy unregister` removes the account and its archive."""
    alice = await login(server, f"{ALICE}/phone")
    bob = await login(server, f"{BOB}/desk")
    bob.say(ALICE, "remember me")
    await alice.got("remember me")
    store = server.server.hosts[DOMAIN].archive
    assert store is not None
    owner = JID.parse(ALICE)
    assert len((await store.query(owner, ArchiveQuery())).items) == 1
    config = server.server.config.path
    status = await asyncio.to_thread(cli.main, ["-c", str(config), "unregister", ALICE])
    assert status == 0
    assert (await store.query(owner, ArchiveQuery())).items == ()
    assert len((await store.query(JID.parse(BOB), ArchiveQuery())).items) == 1


async def test_cap_and_retention(make_server: Any) -> None:
    """max_messages keeps about the newest that many: once the background
    trims ran, at most max_messages + trim_every - 1 (one node) in each
    archive, and never fewer than max_messages; expire() removes what is
    older than retention_days."""
    extra = "[host.options.mam]\nmax_messages = 20\nretention_days = 2\n"
    async with make_server(storage=FS + extra) as srv:
        alice = await login(srv, f"{ALICE}/phone")
        bob = await login(srv, f"{BOB}/desk")
        mam = module(srv)
        assert mam.trim_every == 2
        for i in range(100):
            bob.say(ALICE, f"m{i}")
        await alice.got("m99")
        await asyncio.wait_for(mam.trims_done(), TIMEOUT)
        for c in (alice, bob):
            kept = [body_of(m) for m in await everything(c)]
            assert 20 <= len(kept) <= 20 + mam.trim_every - 1
            assert kept == [f"m{i}" for i in range(100 - len(kept), 100)]
        assert 1 <= mam.trims <= 2 * 100 // mam.trim_every + 2    # due ones coalesce
        now = datetime.now(timezone.utc)
        assert await mam.expire(now) == 0
        removed = await mam.expire(now + timedelta(days=2, seconds=1))
        assert removed >= 20
        assert await everything(alice) == []


async def test_forgotten_counters_do_not_trim_at_every_append(
        make_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """With more users than COUNTERS_MAX (here: every counter forgotten at
    once), a trim still comes about once per trim_every appends, not at
    every append, and the cap holds."""
    monkeypatch.setattr("vinespy.storage.archive.trims.COUNTERS_MAX", 0)
    extra = "[host.options.mam]\nmax_messages = 100\n"
    async with make_server(storage=FS + extra) as srv:
        alice = await login(srv, f"{ALICE}/phone")
        bob = await login(srv, f"{BOB}/desk")
        mam = module(srv)
        assert mam.trim_every == 10
        for i in range(300):
            bob.say(ALICE, f"m{i}")
        await alice.got("m299")
        await asyncio.wait_for(mam.trims_done(), TIMEOUT)
        # 600 appends, each a trim with odds 1/10: about 60, far below 600
        # (fewer: the entries are written without yielding to the loop, so
        # the trims due during a burst coalesce, one per user).
        assert 1 <= mam.trims <= 150
        kept = [body_of(m) for m in await everything(alice)]
        assert 100 <= len(kept) < 200 and kept[-1] == "m299"


async def test_a_failed_trim_keeps_the_id_of_what_was_archived(make_server: Any) -> None:
    """A trim that fails (a corrupt old day file of the archive) is logged;
    the message it followed was archived and keeps its id."""
    extra = "[host.options.mam]\nmax_messages = 20\n"
    async with make_server(storage=FS + extra) as srv:
        alice = await login(srv, f"{ALICE}/phone")
        bob = await login(srv, f"{BOB}/desk")
        store = srv.server.hosts[DOMAIN].archive
        assert isinstance(store, FsArchive)
        odir = store.owner_dir(JID.parse(ALICE))
        odir.mkdir(parents=True, exist_ok=True)
        (odir / "2000-01-01.jsonl").write_bytes(b"not a record\n")
        since = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        bob.say(ALICE, "kept")
        m = await alice.got("kept")
        (sid,) = ids(m, ALICE)
        await asyncio.wait_for(module(srv).trims_done(), TIMEOUT)
        got, _ = await alice.query({"start": since})
        assert [(result_id(r), body_of(r)) for r in got] == [(sid, "kept")]


async def test_unreadable_preferences_deliver_the_message_unarchived(server: Running) -> None:
    """The recipient's preferences cannot be read (a corrupt file): the
    message is delivered without an id of that archive (logged), not
    bounced; the sender's archive keeps it; once readable, archiving goes on."""
    alice = await login(server, f"{ALICE}/phone")
    bob = await login(server, f"{BOB}/desk")
    prefs = server.storage.user_dir(JID.parse(ALICE)) / "mam_prefs.json"
    prefs.write_bytes(b"{not json")
    bob.say(ALICE, "delivered")
    m = await alice.got("delivered")
    assert ids(m, ALICE) == []
    prefs.unlink()
    bob.say(ALICE, "archived")
    m = await alice.got("archived")
    (sid,) = ids(m, ALICE)
    got, _ = await alice.query()
    assert [(result_id(r), body_of(r)) for r in got] == [(sid, "archived")]
    got, _ = await bob.query()
    assert [body_of(r) for r in got] == ["delivered", "archived"]


# -- retention as a duty (retention_days, expire_interval) -------------------------

RETENTION = "[host.options.mam]\nretention_days = 1\nexpire_interval = 1\n"
OLD = (timedelta(days=4), timedelta(days=3), timedelta(hours=25))      # before the cutoff
RECENT = (timedelta(hours=23), timedelta(hours=1))                     # after it


async def plant(store: ArchiveStore, owner: str, peer: str, body: str,
                age: timedelta) -> str:
    """Write straight into ``store`` an entry of ``owner``'s archive, a chat
    message from ``peer``, as archived ``age`` ago; its id."""
    stamp = datetime.now(timezone.utc) - age
    sid = new_id(stamp)
    stanza = (f'<message xmlns="jabber:client" from="{peer}" to="{owner}" type="chat">'
              f'<body>{body}</body></message>').encode()
    await store.append(JID.parse(owner), ArchivedMessage(sid, stamp, peer, peer, stanza))
    return sid


async def stored(store: ArchiveStore, owner: str) -> set[str]:
    """The ids ``owner``'s archive holds now, read from ``store``."""
    page = await store.query(JID.parse(owner), ArchiveQuery(max=10_000))
    assert page.complete
    return {m.id for m in page.items}


def ran_since(duty: Duty, since: int) -> bool:
    """A run of ``duty`` that began after its counter read ``since`` has ended
    (runs are counted as they begin, one at a time)."""
    return duty.runs > since + 1 or (duty.runs > since and not duty.running)


async def until(check: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Poll ``check`` until it holds, for at most ``timeout``: a duty's runs
    raise no event a test can wait on."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:g} s")
        await asyncio.sleep(0.02)


async def test_retention_duty_removes_old_entries_and_keeps_recent(make_server: Any) -> None:
    """retention_days = 1, expire_interval = 1: entries written to the
    archive older than a day (by another store on the same directory, as
    an operator's tool would) are gone after the duty's next run; those of
    the last day, and the messages just exchanged, are still there for a
    MAM query."""
    async with make_server(storage=FS + RETENTION) as srv:
        duty = srv.server.duties[f"mam-expire:{DOMAIN}"]
        assert isinstance(duty, LocalDuty) and duty.interval == 1
        alice = await login(srv, f"{ALICE}/phone")
        bob = await login(srv, f"{BOB}/desk")
        bob.say(ALICE, "live")
        await alice.got("live")
        config = srv.server.config
        store = archive_for(config, config.hosts[0])
        await store.open()
        try:
            old = [await plant(store, ALICE, BOB, f"old {age}", age) for age in OLD]
            old.append(await plant(store, BOB, ALICE, "old of bob", OLD[0]))
            for age in RECENT:
                await plant(store, ALICE, BOB, f"recent {age}", age)
            before = await stored(store, ALICE) | await stored(store, BOB)
            assert set(old) < before and len(before) == len(old) + len(RECENT) + 2
            since = duty.runs
            await until(lambda: ran_since(duty, since), "retention run after the writes")
            after = await stored(store, ALICE) | await stored(store, BOB)
        finally:
            await store.close()
        assert after == before - set(old)
        assert [body_of(m) for m in await everything(alice)] == \
            [f"recent {age}" for age in RECENT] + ["live"]
        assert [body_of(m) for m in await everything(bob)] == ["live"]


@pytest.mark.parametrize("options", ["", "[host.options.mam]\nexpire_interval = 1\n"],
                         ids=["default", "retention_days=0"])
async def test_no_retention_no_duty(make_server: Any, options: str) -> None:
    """retention_days = 0 (the default), even with an expire_interval:
    archives are kept forever, so no duty is registered."""
    async with make_server(storage=FS + options) as srv:
        assert srv.server.hosts[DOMAIN].archive is not None
        assert f"mam-expire:{DOMAIN}" not in srv.server.duties
        assert not [n for n in srv.server.duties if n.startswith("mam-expire:")]
