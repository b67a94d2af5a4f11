"""What cluster nodes write to each other (vinespy/cluster/wire.py), and the
Publisher and Subscriber that write and read it through a real redis-server.

The first half needs no I/O: items, entries, stanzas and session records
are encoded and decoded, and every malformed input raises WireError. The
second half starts one throw-away ``redis-server`` for the module (no
persistence, flushed before each test) and drives a real Publisher and a
real Subscriber over it; every wait is bounded and waits on what the
subscriber handed over, never on a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import Any, AsyncIterator, Iterator

import pytest
from lxml import etree

from tests.redisproc import redis_server, url_of
from vinespy import ns
from vinespy.cluster import keys
from vinespy.cluster.connection import connect
from vinespy.cluster import wire
from vinespy.cluster.publisher import HOPS, Publisher
from vinespy.cluster.subscriber import Subscriber
from vinespy.config import ClusterConfig
from vinespy.jid import JID
from vinespy.xml import child, serialize, stanza

TIMEOUT = 10.0

MSG = b"<message to=\"bob@wonderland.lit/r1\" type=\"chat\"><body>hi</body></message>"


# ---------------------------------------------------------------------------
# items


@pytest.mark.parametrize("item, kind, args, data", [
    (wire.stanza_item("bob@wonderland.lit/r1", 0, MSG),
     wire.STANZA, ["bob@wonderland.lit/r1", "0"], MSG),
    (wire.stanza_item("zoë@wonderland.lit/ré", 2, b"<presence/>"),
     wire.STANZA, ["zoë@wonderland.lit/ré", "2"], b"<presence/>"),
    (wire.close_item("bob@wonderland.lit/r1", "sid-42", "conflict"),
     wire.CLOSE, ["bob@wonderland.lit/r1", "sid-42", "conflict"], b""),
    (wire.close_item("bob@wonderland.lit/r1", "sid-42", ""),
     wire.CLOSE, ["bob@wonderland.lit/r1", "sid-42", ""], b""),
    (wire.invalidate_item("bob@wonderland.lit"), wire.INVALIDATE, ["bob@wonderland.lit"], b""),
    (wire.user_item("zoë@wonderland.lit"), wire.USER, ["zoë@wonderland.lit"], b""),
], ids=["stanza", "stanza-unicode-hops", "close", "close-no-condition", "invalidate", "user"])
def test_item_round_trip(item: bytes, kind: bytes, args: list[str], data: bytes) -> None:
    """Every kind of item decodes to what it was made from."""
    assert isinstance(item, bytes) and item[:1] == kind
    assert wire.parse_item(item) == (kind, args, data)


def test_stanza_item_keeps_nuls_in_its_payload() -> None:
    """Only the first two NULs separate fields: the stanza bytes are kept whole."""
    item = wire.stanza_item("a@wonderland.lit/r", 1, b"x\0y\0z")
    assert wire.parse_item(item) == (wire.STANZA, ["a@wonderland.lit/r", "1"], b"x\0y\0z")


@pytest.mark.parametrize("item", [
    b"",                                        # no kind at all
    b"zzz",                                     # unknown kind
    b"Sbob@wonderland.lit/r1\x000\x00<m/>",     # kinds are lower case
    b"sbob@wonderland.lit/r1",                  # stanza item without NULs
    b"sbob@wonderland.lit/r1\x000",             # stanza item with one NUL
    b"sbob@wonderland.lit/r1\x00x\x00<m/>",     # hops not an integer
    b"sbob@wonderland.lit/r1\x00\x00<m/>",      # hops empty
    b"s\xff\xfe\x000\x00<m/>",                  # target not UTF-8
    b"cbob@wonderland.lit/r1",                  # close item without NULs
    b"cbob@wonderland.lit/r1\x00sid",           # close item with one NUL
    b"c\xff\x00sid\x00conflict",                # close item, JID not UTF-8
    b"cbob@wonderland.lit/r1\x00sid\x00no-such-condition",   # not RFC 6120 §4.9.3
    b"i\xff",                                   # invalidate, not UTF-8
    b"u\xc3",                                   # user, truncated UTF-8
], ids=["empty", "unknown-kind", "upper-case-kind", "stanza-no-nul", "stanza-one-nul",
        "hops-not-int", "hops-empty", "stanza-bad-utf8", "close-no-nul", "close-one-nul",
        "close-bad-utf8", "close-unknown-condition", "invalidate-bad-utf8", "user-bad-utf8"])
def test_malformed_item_raises_wire_error(item: bytes) -> None:
    with pytest.raises(wire.WireError):
        wire.parse_item(item)


# ---------------------------------------------------------------------------
# entries


def as_redis(fields: dict[str, bytes]) -> dict[bytes, bytes]:
    """The fields as Redis gives them back (bytes keys), in a random order."""
    pairs = [(k.encode(), v) for k, v in fields.items()]
    random.Random(7).shuffle(pairs)
    return dict(pairs)


@pytest.mark.parametrize("n", [0, 1, 12, 25, 1000])
def test_entry_round_trip_keeps_item_order(n: int) -> None:
    """entry() -> parse_entry(): the header and the items, in order, whatever
    the order of the fields (numeric, not lexical: "10" comes after "9")."""
    items = [wire.stanza_item(f"u{i}@wonderland.lit/r", i % 3, b"<message><body>%d</body>"
                              b"</message>" % i) for i in range(n)]
    fields = wire.entry("node-a", "inc-1", 17, items)
    assert set(fields) == {"n", "e", "q"} | {str(i) for i in range(n)}
    header, got = wire.parse_entry(as_redis(fields))
    assert header == wire.Header("node-a", "inc-1", 17, 17)
    assert got == items


def test_entry_items_of_every_kind_in_order() -> None:
    items = [wire.invalidate_item("a@wonderland.lit"), wire.stanza_item("b@wonderland.lit/r", 0,
             MSG), wire.close_item("c@wonderland.lit/r", "s", "conflict"),
             wire.user_item("d@wonderland.lit")] * 4
    header, got = wire.parse_entry(as_redis(wire.entry("node-é", "i", 1, items)))
    assert header.node == "node-é" and header.seq == 1
    assert [wire.parse_item(i)[0] for i in got] == [b"i", b"s", b"c", b"u"] * 4


GOOD = {b"n": b"node-a", b"e": b"inc", b"q": b"3", b"0": b"ia@wonderland.lit"}


@pytest.mark.parametrize("change", [
    {b"n": None}, {b"e": None}, {b"q": None},
    {b"q": b"three"}, {b"q": b""}, {b"q": b"1.5"},
    {b"n": b"\xff"}, {b"e": b"\xc3"},
    {b"x": b"garbage"}, {b"": b"ia@wonderland.lit"},
], ids=["no-n", "no-e", "no-q", "seq-not-int", "seq-empty", "seq-float", "node-not-utf8",
        "incarnation-not-utf8", "non-numeric-item-key", "empty-item-key"])
def test_malformed_entry_raises_wire_error(change: dict[bytes, bytes | None]) -> None:
    fields = dict(GOOD)
    for k, v in change.items():
        if v is None:
            del fields[k]
        else:
            fields[k] = v
    with pytest.raises(wire.WireError):
        wire.parse_entry(fields)


def test_garbage_only_entry_raises_wire_error() -> None:
    with pytest.raises(wire.WireError):
        wire.parse_entry({b"x": b"garbage"})
    with pytest.raises(wire.WireError):
        wire.parse_entry({})


# ---------------------------------------------------------------------------
# stanzas


def test_parse_stanza_gives_a_detached_jabber_client_element() -> None:
    data = (b"<message to=\"bob@wonderland.lit/r1\" type=\"chat\"><body>hi &amp; bye</body>"
            b"<x xmlns=\"jabber:x:data\" type=\"form\"><field var=\"a\"/></x>"
            b"<active xmlns=\"http://jabber.org/protocol/chatstates\"/></message>")
    el = wire.parse_stanza(data)
    assert el.tag == f"{{{ns.CLIENT}}}message"
    assert el.getparent() is None
    assert el.get("to") == "bob@wonderland.lit/r1" and el.get("type") == "chat"
    assert [c.tag for c in el] == [f"{{{ns.CLIENT}}}body", "{jabber:x:data}x",
                                   "{http://jabber.org/protocol/chatstates}active"]
    assert el[0].text == "hi & bye"
    assert el[1][0].tag == "{jabber:x:data}field"           # grandchildren keep theirs too
    # What the node writes to a client is what the sender serialized.
    assert serialize(el) == data


def test_parse_stanza_of_what_a_node_serializes() -> None:
    st = stanza("presence", frm="alice@wonderland.lit/r1", to="bob@wonderland.lit")
    data = serialize(st)
    back = wire.parse_stanza(data)
    assert back.tag == st.tag and dict(back.attrib) == dict(st.attrib)
    assert serialize(back) == data


@pytest.mark.parametrize("data", [
    b"<message><body>unclosed</message>",
    b"<message",
    b"<message/><message/>",
    b"<message/><presence/>",
    b"",
    b"just text",
    b"<message><body>&xxe;</body></message>",
    b"<!DOCTYPE m [<!ENTITY a 'b'>]><message/>",
    b"<message/></x><x><message/>",
], ids=["mismatched-tags", "truncated", "two-stanzas", "two-kinds", "empty", "text-only",
        "undefined-entity", "doctype", "holder-escape"])
def test_parse_stanza_rejects(data: bytes) -> None:
    with pytest.raises(wire.WireError):
        wire.parse_stanza(data)


# ---------------------------------------------------------------------------
# session records


def test_record_round_trip() -> None:
    presence = b"<presence><priority>5</priority><status>h\xc3\xa9</status></presence>"
    fields = {"roster.interested": True, "csi.state": "inactive", "sm.h": 7}
    raw = wire.record("node-a", "sid-1", True, 5, presence, fields)
    assert wire.parse_record(raw) == wire.Record("node-a", "sid-1", True, 5, presence, fields)
    assert wire.parse_record(raw.encode()) == wire.parse_record(raw)
    raw = wire.record("node-b", "sid-2", False, -3, None)
    assert wire.parse_record(raw) == wire.Record("node-b", "sid-2", False, -3, None)
    assert "fields" not in raw and "directed" not in raw   # sets: cluster:sets:{sid}


def test_record_sets_from_their_set_and_fields_from_older_records() -> None:
    """The cleanup reads a session's set-field members with its record; a
    record an older version wrote may carry "interested" and a "directed"
    list, read as the fields roster.interested and presence.directed."""
    raw = wire.record("n", "s", True, 0, None)
    rec = wire.parse_record(raw, [b"presence.directed carol@w.lit/r1",
                                  b"presence.directed bob@w.lit"])
    assert rec.sets == ("presence.directed bob@w.lit", "presence.directed carol@w.lit/r1")
    old = (b'{"node": "n", "sid": "s", "interested": true, '
           b'"directed": ["carol@w.lit/r1", "dave@w.lit"]}')
    rec = wire.parse_record(old, [b"presence.directed bob@w.lit", b"presence.directed dave@w.lit"])
    assert rec.sets == ("presence.directed bob@w.lit", "presence.directed carol@w.lit/r1",
                        "presence.directed dave@w.lit")
    assert rec.fields == {"roster.interested": True}
    assert wire.parse_record(raw, [b"\xff"]).sets == ("\ufffd",)   # a bad member, not a bad record
    with pytest.raises(wire.WireError):
        wire.parse_record(b'{"node": "n", "sid": "s", "directed": "bob@w.lit"}')
    with pytest.raises(wire.WireError):
        wire.parse_record(b'{"node": "n", "sid": "s", "fields": {"x.y": [1]}}')


def test_parse_record_defaults() -> None:
    rec = wire.parse_record(b'{"node": "node-a", "sid": "s"}')
    assert rec == wire.Record("node-a", "s", False, 0, None)
    rec = wire.parse_record(b'{"node": "n", "sid": "s", "priority": null, "presence": 5}')
    assert rec.priority == 0 and rec.presence is None


@pytest.mark.parametrize("raw", [
    b"not json", b"{", b"", b"\xff\xfe", b"null", b"[]", b'"text"', b"42",
    b"{}", b'{"node": "a"}', b'{"sid": "s"}', b'{"node": "a", "sid": "s", "priority": "x"}',
    b'{"node": "a", "sid": "s", "priority": [1]}',
], ids=["not-json", "truncated", "empty", "not-utf8", "null", "array", "string", "number",
        "empty-object", "no-sid", "no-node", "priority-text", "priority-list"])
def test_parse_record_rejects(raw: bytes) -> None:
    with pytest.raises(wire.WireError):
        wire.parse_record(raw)


# ---------------------------------------------------------------------------
# a real redis-server for the Publisher and Subscriber tests


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One redis-server for this module (no persistence); stopped at the end."""
    with redis_server(tmp_path_factory.mktemp("wire-redis")) as client:
        yield url_of(client)


@pytest.fixture
async def rc(redis_url: str) -> AsyncIterator[Any]:
    """A plain client of that server, the database flushed first."""
    c = connect(ClusterConfig(url=redis_url, node="test"))
    await c.flushall()
    try:
        yield c
    finally:
        await c.aclose()


class Reader:
    """A real Subscriber of ``node`` running in a task; what it hands over
    is queued. Stanza items are parsed as the Cluster does for a stanza it
    cannot write through (so a bad one raises WireError in the handler)."""

    def __init__(self, url: str, node: str = "node-b", incarnation: str = "inc-b") -> None:
        cfg = ClusterConfig(url=url, node=node)
        self.client = connect(cfg, single=True, socket_timeout=6.0)
        self.got: asyncio.Queue[tuple[bytes, list[str], bytes]] = asyncio.Queue()
        self.troubles: list[tuple[str, BaseException | None]] = []
        self.sub = Subscriber(self.client, node, incarnation, self._handle,
                              lambda part, exc: self.troubles.append((part, exc)))
        self.sub.last_events = b"0-0"       # as a registered node: from its start, not "$"
        self.task: asyncio.Task[None] | None = None

    async def _handle(self, kind: bytes, args: list[str], data: bytes) -> None:
        if kind == wire.STANZA:
            wire.parse_stanza(data)
        self.got.put_nowait((kind, args, data))

    async def start(self) -> None:
        async def ready() -> None:
            return None
        self.task = asyncio.create_task(self.sub.run(ready))

    async def next(self) -> tuple[bytes, list[str], bytes]:
        return await asyncio.wait_for(self.got.get(), TIMEOUT)

    async def take(self, n: int) -> list[tuple[bytes, list[str], bytes]]:
        return [await self.next() for _ in range(n)]

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.client.aclose()


@pytest.fixture
async def reader(rc: Any, redis_url: str) -> AsyncIterator[Reader]:
    r = Reader(redis_url)
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


INBOX_B = keys.inbox("node-b")


def good(seq: int, *bares: str, node: str = "node-a", inc: str = "inc-a") -> dict[str, bytes]:
    return wire.entry(node, inc, seq, [wire.invalidate_item(b) for b in bares])


def inv(bare: str) -> tuple[bytes, list[str], bytes]:
    return (wire.INVALIDATE, [bare], b"")


async def test_subscriber_skips_malformed_entries_and_items(
        rc: Any, reader: Reader, caplog: pytest.LogCaptureFixture) -> None:
    """Garbage in the inbox is logged and skipped; the reader goes on, and a
    bad item costs only itself (the entry's other items are handled)."""
    caplog.set_level(logging.WARNING, logger="vinespy.cluster")
    await rc.xadd(INBOX_B, {"x": "garbage"})
    await rc.xadd(INBOX_B, {"n": "node-a", "e": "inc-a", "q": "not-a-number", "0": "ia@x.lit"})
    await rc.xadd(INBOX_B, wire.entry("node-a", "inc-a", 1, [
        wire.invalidate_item("first@wonderland.lit"),
        b"zzz",
        wire.stanza_item("bob@wonderland.lit/r1", 0, b"<message><body>unclosed</message>"),
        wire.stanza_item("bob@wonderland.lit/r1", 0, b"<message/><message/>"),
        b"sno-nuls-at-all",
        wire.stanza_item("bob@wonderland.lit/r1", 0, MSG),
    ]))
    last = await rc.xadd(INBOX_B, good(2, "last@wonderland.lit"))
    assert await reader.take(3) == [
        inv("first@wonderland.lit"),
        (wire.STANZA, ["bob@wonderland.lit/r1", "0"], MSG),
        inv("last@wonderland.lit"),
    ]
    assert reader.sub.last_inbox == last
    assert reader.got.empty()
    text = caplog.text
    assert text.count("skipping a malformed cluster entry") == 2, text
    assert "unknown item kind b'z'" in text
    assert "malformed stanza" in text
    assert "exactly one stanza" in text
    assert "malformed b's' item" in text
    # Every entry was counted, none stopped the task.
    assert reader.sub.entries == 4
    assert reader.task is not None and not reader.task.done()


async def test_subscriber_handles_each_item_on_its_own(
        rc: Any, redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Whatever handling one item raises (here a ValueError, as a stream
    error of unknown condition once did) is logged and costs only that item:
    the items after it in the same entry are handled, in order."""
    caplog.set_level(logging.WARNING, logger="vinespy.cluster")
    got: asyncio.Queue[str] = asyncio.Queue()

    async def handle(kind: bytes, args: list[str], data: bytes) -> None:
        if args[0].startswith("boom"):
            raise ValueError(f"cannot handle {args[0]}")
        got.put_nowait(args[0])
    client = connect(ClusterConfig(url=redis_url, node="node-b"), single=True,
                     socket_timeout=6.0)
    sub = Subscriber(client, "node-b", "inc-b", handle, lambda part, exc: None)
    sub.last_events = b"0-0"

    async def ready() -> None:
        return None
    task = asyncio.create_task(sub.run(ready))
    try:
        await rc.xadd(INBOX_B, good(1, "first@wonderland.lit", "boom@wonderland.lit",
                                    "second@wonderland.lit", "boom-again@wonderland.lit",
                                    "third@wonderland.lit"))
        taken = [await asyncio.wait_for(got.get(), TIMEOUT) for _ in range(3)]
        assert taken == ["first@wonderland.lit", "second@wonderland.lit", "third@wonderland.lit"]
        assert caplog.text.count("cannot handle boom") == 2, caplog.text
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.aclose()


async def test_subscriber_skips_a_resent_entry(rc: Any, reader: Reader) -> None:
    """An entry whose seq was already seen from the same sender incarnation
    (a batch re-sent after a lost reply) is skipped; a new incarnation of the
    sender starts its own sequence; the node's own broadcasts are ignored."""
    await rc.xadd(INBOX_B, good(1, "one@wonderland.lit"))
    await rc.xadd(INBOX_B, good(1, "one-again@wonderland.lit"))          # re-sent
    await rc.xadd(INBOX_B, good(2, "two@wonderland.lit"))
    await rc.xadd(INBOX_B, good(2, "two-again@wonderland.lit"))          # re-sent
    await rc.xadd(INBOX_B, good(1, "older@wonderland.lit"))              # older still
    await rc.xadd(INBOX_B, good(1, "restarted@wonderland.lit", inc="inc-a2"))
    await rc.xadd(INBOX_B, good(1, "other-node@wonderland.lit", node="node-c"))
    # The events stream: the same sequence numbers, a separate count.
    await rc.xadd(keys.EVENTS, good(1, "ev-one@wonderland.lit"))
    await rc.xadd(keys.EVENTS, good(5, "own@wonderland.lit", node="node-b", inc="inc-b"))
    await rc.xadd(keys.EVENTS, good(1, "ev-again@wonderland.lit"))
    await rc.xadd(INBOX_B, good(3, "three@wonderland.lit"))
    await rc.xadd(keys.EVENTS, good(2, "ev-two@wonderland.lit"))
    got = await reader.take(7)
    inbox = [g[1][0] for g in got if not g[1][0].startswith("ev-")]
    events = [g[1][0] for g in got if g[1][0].startswith("ev-")]
    assert inbox == ["one@wonderland.lit", "two@wonderland.lit", "restarted@wonderland.lit",
                     "other-node@wonderland.lit", "three@wonderland.lit"]
    assert events == ["ev-one@wonderland.lit", "ev-two@wonderland.lit"]
    assert reader.got.empty()


async def test_subscriber_resumes_where_it_stopped_after_a_kill(rc: Any, reader: Reader) -> None:
    """CLIENT KILL of the reader's connection: it reconnects and reads on from
    its last entry id, so nothing is lost and nothing handled twice."""
    await rc.xadd(INBOX_B, good(1, "before@wonderland.lit"))
    assert await reader.next() == inv("before@wonderland.lit")

    async def blocked_reader() -> list[str]:
        return [c["addr"] for c in await rc.client_list() if c.get("cmd") == "xread"]
    deadline = time.monotonic() + TIMEOUT
    while not (addrs := await blocked_reader()):
        assert time.monotonic() < deadline, "the subscriber never blocked in XREAD"
        await asyncio.sleep(0.01)       # polling Redis state: there is no event for it
    for addr in addrs:
        await rc.execute_command("CLIENT", "KILL", "ADDR", addr)
    for i in range(2, 6):
        await rc.xadd(INBOX_B, good(i, f"after-{i}@wonderland.lit"))
    assert await reader.take(4) == [inv(f"after-{i}@wonderland.lit") for i in range(2, 6)]
    assert reader.got.empty()


async def test_publisher_to_subscriber_one_entry_per_flush(rc: Any, redis_url: str,
                                                           reader: Reader) -> None:
    """What a Publisher queues for a registered node before it runs becomes
    one stream entry (one flush), read back in order with each stanza's hops."""
    await rc.hset(keys.NODES, "node-b", 1)
    undeliverable: list[list[bytes]] = []
    pub_client = connect(ClusterConfig(url=redis_url, node="node-a"))
    pub = Publisher(pub_client, "node-a", "inc-a", 1000, undeliverable.append,
                    lambda part, exc: None)
    bob = JID.parse("bob@wonderland.lit/r1")
    sent = []
    for i in range(15):
        st = stanza("message", frm="alice@wonderland.lit/r1", to=bob, type="chat")
        child(st, ns.CLIENT, "body", f"m{i}")
        token = HOPS.set(i % 3)
        try:
            assert pub.stanza("node-b", bob, st)
        finally:
            HOPS.reset(token)
        sent.append((wire.STANZA, [str(bob), str(i % 3)], serialize(st)))
    pub.close("node-b", bob, "sid-1", "conflict")
    task = asyncio.create_task(pub.run())
    try:
        assert await pub.flush(TIMEOUT)
        got = await reader.take(16)
        assert got[:15] == sent
        assert got[15] == (wire.CLOSE, [str(bob), "sid-1", "conflict"], b"")
        assert await rc.xlen(INBOX_B) == 1
        assert pub.flushes == 1 and pub.stanzas_sent == 15
        assert undeliverable == []
        # A second batch: a new entry, the next sequence number; the first is
        # still unconfirmed (no heartbeat here), so the base stays 1.
        assert pub.stanza("node-b", bob, stanza("message", to=bob))
        assert await pub.flush(TIMEOUT)
        assert (await reader.next())[0] == wire.STANZA
        (_, fields), = await rc.xrevrange(INBOX_B, count=1)
        assert wire.parse_entry(fields)[0] == wire.Header("node-a", "inc-a", 2, 1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pub_client.aclose()


async def test_publisher_gives_back_stanzas_for_an_unregistered_node(rc: Any,
                                                                     redis_url: str) -> None:
    """A node that is not in cluster:nodes gets nothing written to its inbox:
    the items come back to the sender (to be handled as for absent users)."""
    back: asyncio.Future[list[bytes]] = asyncio.get_running_loop().create_future()
    pub_client = connect(ClusterConfig(url=redis_url, node="node-a"))
    pub = Publisher(pub_client, "node-a", "inc-a", 1000,
                    lambda items: back.done() or back.set_result(items), lambda p, e: None)
    bob = JID.parse("bob@wonderland.lit/r1")
    st = stanza("message", frm="alice@wonderland.lit/r1", to=bob, type="chat")
    pub.stanza("node-z", bob, st)
    task = asyncio.create_task(pub.run())
    try:
        items = await asyncio.wait_for(back, TIMEOUT)
        assert items == [wire.stanza_item(str(bob), 0, serialize(st))]
        assert await rc.exists(keys.inbox("node-z")) == 0
        assert pub.stanzas_sent == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        with contextlib.suppress(Exception):
            await pub_client.aclose()


def test_parsed_stanza_keeps_its_default_namespace() -> None:
    """A stanza from another node, stored as it is (offline storage
    serializes with plain lxml): jabber:client stays the default namespace,
    no ns0: prefixes."""
    el = wire.parse_stanza(b"<message to='b@x' type='chat'><body>hi</body></message>")
    assert el.getparent() is None
    assert etree.tostring(el) == (b'<message xmlns="jabber:client" to="b@x" type="chat">'
                                  b'<body>hi</body></message>')
