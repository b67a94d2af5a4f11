"""The vcard, private, last and account-disco modules without sockets: a real
router and host on memory storage, fake sessions that record what they get."""

from __future__ import annotations

import time
from typing import Any

import pytest
from lxml import etree

from vinespy import ns
from vinespy.jid import JID
from vinespy.modules.last import Last
from vinespy.modules.private import reserved
from vinespy.modules.vcard import VCard
from vinespy.storage import StorageError, xml_bytes
from vinespy.xml import Element, child, element, stanza

from tests.harness import DOMAIN, World

ALICE = JID.parse(f"alice@{DOMAIN}")
BOB = JID.parse(f"bob@{DOMAIN}")
LOADED = ["presence", "disco", "vcard", "private", "last"]


def world(private_storage: bool = True) -> World:
    """One host with the service modules loaded (alice and bob: ``account``)."""
    return World(*LOADED, private_storage=private_storage)


def condition(answer: Element) -> str | None:
    """The stanza error condition of ``answer``, None for a result."""
    if answer.get("type") == "result":
        return None
    err = answer.find(f"{{{ns.CLIENT}}}error")
    assert err is not None, etree.tostring(answer)
    return etree.QName(err[0]).localname


def el(tag: str, **attrs: str) -> Element:
    return etree.Element(tag, attrs or None)


def private_query(*children: Element) -> Element:
    q = el("{jabber:iq:private}query")
    q.extend(children)
    return q


# --- XEP-0049 ----------------------------------------------------------------------


@pytest.mark.parametrize("namespace, refused", [
    ("jabber:iq:private", True), ("jabber:x:data", True), ("jabber:iq:roster", True),
    ("http://jabber.org/protocol/muc", True), ("vcard-temp", True), ("", True),
    ("storage:bookmarks", False), ("storage:rosternotes", False), ("urn:xmpp:foo", False),
    ("https://jabber.org/x", False), ("vcard-temp:x:update", False),
])
def test_reserved_namespaces(namespace: str, refused: bool) -> None:
    """XEP-0049 §2.3: 'jabber:', 'http://jabber.org/' and 'vcard-temp' are reserved."""
    assert reserved(namespace) is refused


async def test_private_several_elements_of_one_namespace() -> None:
    """A set may hold several elements of one namespace; a get returns each or its empty form."""
    w = world()
    await w.account(ALICE)
    a = w.bind(ALICE)
    one, two = el("{urn:ex}one", n="1"), el("{urn:ex}two", n="2")
    assert condition(await w.ask(a, "set", private_query(one, two))) is None
    answer = await w.ask(a, "get", private_query(el("{urn:ex}two"), el("{urn:ex}three")))
    assert condition(answer) is None
    got = answer.find("{jabber:iq:private}query")
    assert got is not None
    assert [(x.tag, x.get("n")) for x in got] == [("{urn:ex}two", "2"), ("{urn:ex}three", None)]


@pytest.mark.parametrize("children, expected", [
    (["{urn:ex}a", "{urn:ex}a"], "bad-request"),
    (["{urn:ex}a", "{urn:other}b"], "bad-request"),
    (["plain"], "not-acceptable"),
    (["{jabber:iq:private}query"], "not-acceptable"),
    ([], "not-acceptable"),
])
async def test_private_refusals(children: list[str], expected: str) -> None:
    """Duplicates, mixed namespaces: bad-request; no namespace, reserved, empty: not-acceptable."""
    w = world()
    await w.account(ALICE)
    a = w.bind(ALICE)
    for kind in ("get", "set"):
        answer = await w.ask(a, kind, private_query(*(el(c) for c in children)))
        assert condition(answer) == expected
    assert await w.storage.find_fragment(ALICE, "urn:ex", "a") is None


async def test_private_own_bare_jid_is_self_and_disabled_host_refuses() -> None:
    """'to' one's own bare JID is one's own storage; with private_storage off: unavailable."""
    w = world()
    await w.account(ALICE)
    a = w.bind(ALICE)
    assert condition(await w.ask(a, "set", private_query(el("{urn:ex}a")), to=ALICE)) is None
    assert await w.storage.find_fragment(ALICE, "urn:ex", "a") is not None
    off = world(private_storage=False)
    await off.account(ALICE)
    a = off.bind(ALICE)
    for to in (None, ALICE, BOB, JID.parse(DOMAIN)):
        answer = await off.ask(a, "get", private_query(el("{urn:ex}a")), to=to)
        assert condition(answer) == "service-unavailable"


# --- XEP-0054 ----------------------------------------------------------------------


async def test_vcard_size_limit_is_inclusive() -> None:
    """A vCard of exactly max_size bytes is kept; one byte more is not-acceptable."""
    w = world()
    await w.account(ALICE)
    a = w.bind(ALICE)
    card = element("vcard-temp", "vCard")
    child(card, "vcard-temp", "FN", "x" * 100)
    mod = w.host.modules["vcard"]
    assert isinstance(mod, VCard) and mod.max_size == 65536
    mod.max_size = len(xml_bytes(card))
    assert condition(await w.ask(a, "set", card)) is None
    bigger = element("vcard-temp", "vCard")
    child(bigger, "vcard-temp", "FN", "x" * 101)
    assert condition(await w.ask(a, "set", bigger)) == "not-acceptable"
    stored = await w.storage.find_vcard(ALICE)
    assert stored is not None and stored.findtext("{vcard-temp}FN") == "x" * 100


async def test_vcard_get_to_server_is_unavailable() -> None:
    """The server has no vCard of its own: a get to the domain is service-unavailable."""
    w = world()
    await w.account(ALICE)
    a = w.bind(ALICE)
    answer = await w.ask(a, "get", el("{vcard-temp}vCard"), to=JID.parse(DOMAIN))
    assert condition(answer) == "service-unavailable"


# --- XEP-0012 ----------------------------------------------------------------------


def seconds_and_text(answer: Element) -> tuple[int, str]:
    q = answer.find("{jabber:iq:last}query")
    assert q is not None, etree.tostring(answer)
    return int(q.get("seconds", "-1")), q.text or ""


async def test_last_recorded_only_when_the_last_resource_goes() -> None:
    """Two resources: the first leaving records nothing, the second records its goodbye."""
    w = world()
    await w.account(ALICE)
    phone, laptop = w.bind(ALICE, "phone"), w.bind(ALICE, "laptop")
    await w.presence(phone)
    await w.presence(laptop)
    await w.presence(phone, "unavailable", "on the road")
    await w.unbind(phone)
    assert await w.storage.get(ALICE, "last") is None
    await w.presence(laptop, "unavailable", "Heading Home")
    await w.unbind(laptop)
    record = await w.storage.get(ALICE, "last")
    assert record["status"] == "Heading Home" and abs(record["time"] - time.time()) < 5


async def test_last_status_forgotten_after_available_presence() -> None:
    """An unavailable status followed by available presence and a dropped link: no text."""
    w = world()
    await w.account(ALICE)
    phone = w.bind(ALICE, "phone")
    await w.presence(phone, "unavailable", "brb")
    await w.presence(phone)
    await w.unbind(phone)                        # the link died: no unavailable presence
    assert (await w.storage.get(ALICE, "last"))["status"] == ""


async def test_last_seconds_from_the_record() -> None:
    """Seconds are counted from the stored logout time; no record or a broken one: unavailable."""
    w = world()
    await w.account(ALICE)
    await w.account(BOB, alice="both")
    a = w.bind(ALICE)
    query = el("{jabber:iq:last}query")
    assert condition(await w.ask(a, "get", query, to=BOB)) == "service-unavailable"
    await w.storage.put(BOB, "last", {"time": int(time.time()) - 100, "status": "zzz"})
    seconds, text = seconds_and_text(await w.ask(a, "get", query, to=BOB))
    assert 100 <= seconds < 105 and text == "zzz"
    await w.storage.put(BOB, "last", {"time": int(time.time()) + 50, "status": 5})
    assert seconds_and_text(await w.ask(a, "get", query, to=BOB)) == (0, "")
    for broken in (["x"], {"time": "yesterday"}, {"time": True}):
        await w.storage.put(BOB, "last", broken)
        assert condition(await w.ask(a, "get", query, to=BOB)) == "service-unavailable"


async def test_last_bound_but_unavailable_resource_is_not_online() -> None:
    """A resource that never sent presence does not make the user online (seconds from record)."""
    w = world()
    await w.account(ALICE)
    await w.account(BOB, alice="from")
    a = w.bind(ALICE)
    w.bind(BOB, available=False)
    await w.storage.put(BOB, "last", {"time": int(time.time()) - 30, "status": ""})
    seconds, _ = seconds_and_text(await w.ask(a, "get", el("{jabber:iq:last}query"), to=BOB))
    assert seconds >= 30


async def test_last_storage_failure_does_not_break_unbind(monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """A storage error while recording a logout is logged; the unbind completes."""
    w = world()
    await w.account(ALICE)
    s = w.bind(ALICE)

    async def broken(*args: Any) -> None:
        raise StorageError("disk full")

    monkeypatch.setattr(w.storage, "put", broken)
    await w.unbind(s)
    assert "could not record the last activity" in caplog.text
    assert isinstance(w.host.modules["last"], Last)


# --- XEP-0030 accounts -------------------------------------------------------------


async def test_account_disco_nodes() -> None:
    """A node on an account: item-not-found if visible, else service-unavailable; items empty."""
    w = world()
    await w.account(ALICE, bob="from")
    await w.account(BOB)
    a, b = w.bind(ALICE), w.bind(BOB)
    info = el(f"{{{ns.DISCO_INFO}}}query", node="urn:x")
    assert condition(await w.ask(b, "get", info, to=ALICE)) == "item-not-found"
    assert condition(await w.ask(a, "get", info, to=BOB)) == "service-unavailable"
    answer = await w.ask(a, "get", el(f"{{{ns.DISCO_ITEMS}}}query", node="urn:x"))
    q = answer.find(f"{{{ns.DISCO_ITEMS}}}query")
    assert q is not None and q.get("node") == "urn:x" and len(q) == 0


async def test_account_features_come_from_loaded_modules() -> None:
    """Without the vcard and last modules an account advertises neither."""
    w = world()
    await w.account(ALICE)
    a = w.bind(ALICE)
    full = await w.ask(a, "get", el(f"{{{ns.DISCO_INFO}}}query"))
    assert {f.get("var") for f in full.iter(f"{{{ns.DISCO_INFO}}}feature")} == {
        ns.DISCO_INFO, ns.DISCO_ITEMS, "vcard-temp", "jabber:iq:last"}
    disco_only = World("disco", storage=w.storage)
    s = disco_only.bind(ALICE)
    iq = stanza("iq", frm=s.jid, type="get", id="d")
    iq.append(el(f"{{{ns.DISCO_INFO}}}query"))
    await disco_only.router.route(iq, s)
    assert {f.get("var") for f in s.got[-1].iter(f"{{{ns.DISCO_INFO}}}feature")} == {
        ns.DISCO_INFO, ns.DISCO_ITEMS}
