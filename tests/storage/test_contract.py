"""The Storage contract, run against every backend that keeps data (memory, fs,
sql on SQLite and on PostgreSQL).

Then what only the fs backend promises (file names, atomic writes, modes,
corrupt files) and what the null backend promises (nothing is kept).
"""

from __future__ import annotations

import copy
import json
import os
import stat
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import pytest
from lxml import etree

from tests.storage.conftest import SQL_KINDS, backend
from vinespy.jid import JID
from vinespy.storage import (Contact, ScramKeys, Storage, StorageError, User, backends,
                             open_storage)
from vinespy.storage.fs import FsStorage
from vinespy.storage.fs.names import decode_name, encode_name
from vinespy.storage.fs.records import user_to_json
from vinespy.storage.memory import MemoryStorage
from vinespy.storage.null import NullStorage

ALICE = JID.parse("alice@example.com")
BOB = JID.parse("bob@example.net")

KEYS = {
    "SCRAM-SHA-1": ScramKeys(b"s" * 16, b"k" * 20, b"v" * 20, 4096),
    "SCRAM-SHA-256": ScramKeys(b"\x00\xff" * 8, b"K" * 32, b"V" * 32, 10000),
}

VCARD = b"""<vCard xmlns='vcard-temp'>
  <FN>Alice \xc3\x84pfel &amp; Co</FN>
  <N><FAMILY>\xc3\x84pfel</FAMILY><GIVEN>Alice</GIVEN></N>
  <PHOTO><TYPE>image/png</TYPE><BINVAL>iVBORw0KGgo=</BINVAL></PHOTO>
  <x:note xmlns:x='urn:example:extra' x:lang='de'>hallo</x:note>
</vCard>"""

BOOKMARKS = b"""<storage xmlns='storage:bookmarks'>
  <conference jid='room@conference.example.com' autojoin='true' name='Room'>
    <nick>alice</nick>
  </conference>
</storage>"""


def make_user(jid: JID = ALICE, version: int = 3) -> User:
    contacts = [
        Contact(BOB, name="Bob \u00c4", subscription="both", ask=None,
                groups=["Friends", "\u00dcbung"], approved=False, pending_in=False),
        Contact(JID.parse("carol@example.org"), name=None, subscription="none",
                ask="subscribe", groups=[], approved=True, pending_in=True),
        Contact(JID.parse("gateway.example.org"), name="GW", subscription="from",
                ask=None, groups=["Transports"], approved=True, pending_in=False),
    ]
    return User(jid, copy.deepcopy(KEYS), {c.jid: c for c in contacts}, version)


def same(a: etree._Element, b: etree._Element, root: bool = True) -> bool:
    """Equal XML: names, attributes, text, children (C14N refuses ``vcard-temp``)."""
    return (a.tag == b.tag and a.attrib == b.attrib and a.text == b.text
            and (root or a.tail == b.tail) and len(a) == len(b)
            and all(same(x, y, root=False) for x, y in zip(a, b)))


@pytest.fixture(params=["memory", "fs", *SQL_KINDS])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    store = backend(request.param, request, tmp_path)
    yield store
    await store.close()


# --- the contract: users -------------------------------------------------------


async def test_user_round_trip(storage: Storage) -> None:
    """A saved user comes back equal: credentials, every Contact field, roster version."""
    user = make_user()
    await storage.save_user(user)
    found = await storage.find_user(ALICE)
    assert found == user
    assert found is not None and found.roster[BOB].groups == ["Friends", "\u00dcbung"]


async def test_find_account(storage: Storage) -> None:
    """find_account: the account with its credentials and version (the
    roster may be left out); None for no account."""
    user = make_user()
    await storage.save_user(user)
    found = await storage.find_account(JID.parse(f"{ALICE}/res"))
    assert found is not None and found.jid == ALICE
    assert found.credentials == user.credentials
    assert found.roster_version == user.roster_version
    assert found.roster in ({}, user.roster)
    assert await storage.find_account(BOB) is None


async def test_hidden_contact_round_trip(storage: Storage) -> None:
    """Contact.hidden (a stranger's pending request, not a roster item) is kept both ways."""
    user = make_user()
    nurse = JID.parse("nurse@example.com")
    user.roster[nurse] = Contact(nurse, pending_in=True, hidden=True)
    await storage.save_user(user)
    found = await storage.find_user(ALICE)
    assert found is not None and found.roster[nurse].hidden is True
    assert not any(c.hidden for j, c in found.roster.items() if j != nurse)
    assert found == user


async def test_find_user_reduces_full_jid(storage: Storage) -> None:
    """find_user with a full JID finds the bare account."""
    await storage.save_user(make_user())
    found = await storage.find_user(JID.parse("alice@example.com/phone"))
    assert found is not None and found.jid == ALICE


async def test_user_copies_are_independent(storage: Storage) -> None:
    """Mutating a saved or found user does not change what is stored."""
    user = make_user()
    await storage.save_user(user)
    user.roster.clear()
    found = await storage.find_user(ALICE)
    assert found is not None and len(found.roster) == 3
    found.roster[BOB].groups.append("Mutated")
    found.roster_version = 99
    assert await storage.find_user(ALICE) == make_user()


async def test_user_replace(storage: Storage) -> None:
    """Saving again replaces the whole record."""
    await storage.save_user(make_user())
    smaller = make_user(version=4)
    del smaller.roster[BOB]
    smaller.credentials = {"SCRAM-SHA-256": KEYS["SCRAM-SHA-256"]}
    await storage.save_user(smaller)
    assert await storage.find_user(ALICE) == smaller


async def test_user_miss(storage: Storage) -> None:
    """Unknown users, domain JIDs: None."""
    await storage.save_user(make_user())
    assert await storage.find_user(JID.parse("nobody@example.com")) is None
    assert await storage.find_user(JID.parse("alice@example.net")) is None
    assert await storage.find_user(JID.parse("example.com")) is None


async def test_delete_user_removes_everything(storage: Storage) -> None:
    """delete_user removes the account, its vCard, fragments and keyval stores; then absence."""
    await storage.save_user(make_user())
    await storage.save_vcard(ALICE, etree.fromstring(VCARD))
    await storage.save_fragment(ALICE, etree.fromstring(BOOKMARKS))
    await storage.put(ALICE, "last", {"time": 1, "status": "bye"})
    other = make_user(BOB)
    await storage.save_user(other)
    await storage.put(BOB, "last", {"time": 2, "status": ""})
    assert await storage.delete_user(ALICE) is True
    assert await storage.find_user(ALICE) is None
    assert await storage.find_vcard(ALICE) is None
    assert await storage.find_fragment(ALICE, "storage:bookmarks", "storage") is None
    assert await storage.get(ALICE, "last") is None
    assert await storage.delete_user(ALICE) is False
    assert await storage.find_user(BOB) == other
    assert await storage.get(BOB, "last") == {"time": 2, "status": ""}


async def test_delete_missing_user(storage: Storage) -> None:
    """Deleting a user that never existed is False, also for a domain JID."""
    assert await storage.delete_user(ALICE) is False
    assert await storage.delete_user(JID.parse("example.com")) is False


async def test_domain_jid_cannot_own_data(storage: Storage) -> None:
    """Saving for a JID without a localpart is a programming error (ValueError)."""
    domain = JID.parse("example.com")
    with pytest.raises(ValueError):
        await storage.save_user(User(domain))
    with pytest.raises(ValueError):
        await storage.save_vcard(domain, etree.fromstring(VCARD))
    with pytest.raises(ValueError):
        await storage.save_fragment(domain, etree.fromstring(BOOKMARKS))
    for value in ({"a": 1}, None):
        with pytest.raises(ValueError):
            await storage.put(domain, "last", value)


# --- the contract: vCards and private XML ----------------------------------------


async def test_vcard_round_trip(storage: Storage) -> None:
    """A namespaced vCard (taken out of an iq, with a tail) comes back equal, without tail."""
    iq = etree.fromstring(b"<iq xmlns='jabber:client' type='set'>" + VCARD + b"tail</iq>")
    card = iq[0]
    await storage.save_vcard(JID.parse("alice@example.com/phone"), card)
    found = await storage.find_vcard(ALICE)
    assert found is not None and found.tag == "{vcard-temp}vCard"
    assert same(found, card) and not found.tail
    card[0].text = "changed after saving"
    again = await storage.find_vcard(ALICE)
    assert again is not None and again[0].text == "Alice \u00c4pfel & Co"


async def test_vcard_replace_and_miss(storage: Storage) -> None:
    """save_vcard replaces; an unknown user's vCard is None."""
    await storage.save_vcard(ALICE, etree.fromstring(VCARD))
    await storage.save_vcard(ALICE, etree.fromstring(b"<vCard xmlns='vcard-temp'/>"))
    found = await storage.find_vcard(ALICE)
    assert found is not None and len(found) == 0
    assert await storage.find_vcard(BOB) is None
    assert await storage.find_vcard(JID.parse("example.com")) is None


async def test_fragment_round_trip(storage: Storage) -> None:
    """Fragments are keyed by namespace and name; each comes back equal."""
    bookmarks = etree.fromstring(BOOKMARKS)
    same_name = etree.fromstring(b"<storage xmlns='storage:rosternotes'><note jid='b@x'>"
                                 b"hi</note></storage>")
    prefixed = etree.fromstring(b"<p:prefs xmlns:p='urn:example:prefs.v1' a='1'/>")
    for fragment in (bookmarks, same_name, prefixed):
        await storage.save_fragment(ALICE, fragment)
    for fragment in (bookmarks, same_name, prefixed):
        qname = etree.QName(fragment)
        assert qname.namespace is not None
        found = await storage.find_fragment(ALICE, qname.namespace, qname.localname)
        assert found is not None and same(found, fragment)
    assert await storage.find_fragment(ALICE, "storage:bookmarks", "other") is None
    assert await storage.find_fragment(ALICE, "storage:other", "storage") is None
    assert await storage.find_fragment(BOB, "storage:bookmarks", "storage") is None


# A 159-character namespace and a 67-character name: each part encodes to less
# than 200 characters, both together to more than 255 (the fs name limit).
LONG_NS = "http://example.org/protocol/" + "settings.v2/" * 10 + "x" * 11
LONG_NAME = "Preferences." + "Window-Layout." * 3 + "x" * 13


def long_fragment(ns: str = LONG_NS, name: str = LONG_NAME, text: str = "") -> etree._Element:
    """``<name xmlns=ns>text</name>``, parsed (lxml builds no non-ASCII namespace)."""
    fragment = etree.fromstring(f"<{name} xmlns='{ns}'/>".encode())
    fragment.text = text
    return fragment


async def test_fragment_long_names(storage: Storage) -> None:
    """Long namespaces and names (together over 255 bytes once encoded, or each
    one alone) are kept, found and replaced, each apart."""
    assert (len(LONG_NS), len(LONG_NAME)) == (159, 67)
    names = [(LONG_NS, LONG_NAME), (LONG_NS, LONG_NAME + "2"), (LONG_NS + "2", LONG_NAME),
             ("urn:" + "Z" * 60, "\u00e9" * 30), ("urn:x", "\u00e9" * 300),
             ("urn:" + "a" * 1000, "b" * 1000)]
    for i, (ns, name) in enumerate(names):
        await storage.save_fragment(ALICE, long_fragment(ns, name, str(i)))
    for i, (ns, name) in enumerate(names):
        found = await storage.find_fragment(ALICE, ns, name)
        assert found is not None and found.tag == f"{{{ns}}}{name}" and found.text == str(i)
    await storage.save_fragment(ALICE, long_fragment(text="replaced"))
    found = await storage.find_fragment(ALICE, LONG_NS, LONG_NAME)
    assert found is not None and found.text == "replaced"
    assert await storage.find_fragment(BOB, LONG_NS, LONG_NAME) is None


async def test_fragment_replace(storage: Storage) -> None:
    """Saving a fragment with the same qualified name replaces it."""
    await storage.save_fragment(ALICE, etree.fromstring(BOOKMARKS))
    await storage.save_fragment(ALICE, etree.fromstring(b"<storage xmlns='storage:bookmarks'/>"))
    found = await storage.find_fragment(ALICE, "storage:bookmarks", "storage")
    assert found is not None and len(found) == 0


# --- the contract: keyval stores --------------------------------------------------

KEYVAL_VALUES: list[Any] = [
    {"time": 1763700000, "status": "Heading \u00c4pfel & <home>", "nested": {"a": [1, 2.5]}},
    ["x", 1, True, False, None, {"k": []}],
    "just text \u6d4b\u8bd5",
    0,
    -17,
    3.25,
    True,
    False,
    {},
    [],
    "",
]


@pytest.mark.parametrize("value", KEYVAL_VALUES)
async def test_keyval_round_trip(storage: Storage, value: Any) -> None:
    """Every JSON-compatible value (falsy ones too) comes back equal, also via a full JID."""
    await storage.put(JID.parse("alice@example.com/phone"), "last", value)
    found = await storage.get(ALICE, "last")
    assert found == value and type(found) is type(value)
    assert await storage.get(JID.parse("alice@example.com/other"), "last") == value


async def test_keyval_stores_are_separate(storage: Storage) -> None:
    """Stores are keyed by bare JID and name; put replaces; a miss is None."""
    await storage.put(ALICE, "last", {"time": 1})
    await storage.put(ALICE, "prefs", ["a"])
    await storage.put(BOB, "last", {"time": 2})
    await storage.put(ALICE, "last", {"time": 3, "status": "again"})
    assert await storage.get(ALICE, "last") == {"time": 3, "status": "again"}
    assert await storage.get(ALICE, "prefs") == ["a"]
    assert await storage.get(BOB, "last") == {"time": 2}
    assert await storage.get(BOB, "prefs") is None
    assert await storage.get(JID.parse("nobody@example.com"), "last") is None
    assert await storage.get(JID.parse("example.com"), "last") is None


async def test_keyval_put_none_deletes(storage: Storage) -> None:
    """put(None) deletes that store only; deleting a missing store is harmless."""
    await storage.put(ALICE, "last", {"time": 1})
    await storage.put(ALICE, "prefs", {"x": 1})
    await storage.put(ALICE, "last", None)
    assert await storage.get(ALICE, "last") is None
    assert await storage.get(ALICE, "prefs") == {"x": 1}
    await storage.put(ALICE, "last", None)
    await storage.put(BOB, "never", None)
    assert await storage.get(BOB, "never") is None


async def test_keyval_copies_are_independent(storage: Storage) -> None:
    """Mutating a value after put, or what get returned, does not change what is stored."""
    value: dict[str, Any] = {"list": [1, 2], "inner": {"a": "b"}}
    await storage.put(ALICE, "prefs", value)
    value["list"].append(3)
    value["inner"]["a"] = "changed"
    found = await storage.get(ALICE, "prefs")
    assert found == {"list": [1, 2], "inner": {"a": "b"}}
    found["list"].clear()
    assert await storage.get(ALICE, "prefs") == {"list": [1, 2], "inner": {"a": "b"}}


async def test_set_credentials_changes_nothing_else(storage: Storage) -> None:
    """set_credentials replaces the keys only: a roster changed after the
    caller's last read stays, and so does its version."""
    user = make_user()
    await storage.save_user(user)
    carol = JID.parse("carol@example.com")
    assert await storage.update_roster(ALICE, {carol: Contact(carol)}, 9)
    keys = {"SCRAM-SHA-1": ScramKeys(b"n" * 16, b"s" * 20, b"v" * 20, 4096)}
    assert await storage.set_credentials(ALICE, keys)
    found = await storage.find_user(ALICE)
    assert found is not None and found.credentials == keys
    assert found.roster_version == 9 and carol in found.roster
    assert not await storage.set_credentials(BOB, keys)
    assert await storage.find_user(BOB) is None


async def test_add_user_only_when_absent(storage: Storage) -> None:
    """add_user stores a new account, and never replaces one that exists."""
    first = make_user()
    assert await storage.add_user(first)
    second = User(first.jid, roster_version=99)
    assert not await storage.add_user(second)
    assert await storage.find_user(first.jid) == first


async def test_keyval_modify(storage: Storage) -> None:
    """modify() hands the stored value to the change, stores and returns what
    it gives (None deletes); a change that raises stores nothing."""
    assert await storage.modify(ALICE, "queue", lambda v: [*(v or []), 1]) == [1]
    assert await storage.modify(ALICE, "queue", lambda v: [*(v or []), 2]) == [1, 2]
    assert await storage.get(ALICE, "queue") == [1, 2]

    def refuse(value: Any) -> Any:
        raise LookupError("full")

    with pytest.raises(LookupError):
        await storage.modify(ALICE, "queue", refuse)
    assert await storage.get(ALICE, "queue") == [1, 2]
    assert await storage.modify(ALICE, "queue", lambda v: None) is None
    assert await storage.get(ALICE, "queue") is None
    with pytest.raises(ValueError):
        await storage.modify(ALICE, "Bad Name", lambda v: 1)


@pytest.mark.parametrize("store", ["", "Last", "a-b", "a.b", "../x", "a/b", "x y", "\u00e9",
                                   "last\n", "user", 5])
async def test_keyval_bad_store_name(storage: Storage, store: Any) -> None:
    """Store names outside [a-z0-9_]+ (and the reserved 'user') are ValueError, nothing kept."""
    with pytest.raises(ValueError):
        await storage.put(ALICE, store, {"x": 1})
    with pytest.raises(ValueError):
        await storage.get(ALICE, store)
    with pytest.raises(ValueError):
        await storage.put(ALICE, store, None)


@pytest.mark.parametrize("value", [{1, 2}, b"bytes", float("nan"), float("inf"), object(),
                                   {"k": {"x"}}])
async def test_keyval_value_must_be_json(storage: Storage, value: Any) -> None:
    """A value JSON cannot hold is TypeError/ValueError and leaves the old value in place."""
    await storage.put(ALICE, "prefs", {"old": True})
    with pytest.raises((TypeError, ValueError)):
        await storage.put(ALICE, "prefs", value)
    assert await storage.get(ALICE, "prefs") == {"old": True}


# --- the contract: awkward JIDs ------------------------------------------------

# Constructed directly where RFC 7622 would refuse the text: the backend must
# still be safe for any JID object it is handed.
ODD_JIDS = [
    JID("a/b", "example.com"),
    JID(".", "example.com"),
    JID("../../escape", "example.com"),
    JID("%2E", "example.com"),
    JID("%", "example.com"),
    JID("A", "example.com"),
    JID("a", "example.com"),
    JID("user", ".."),
    JID("user", "../.."),
    JID("user", "example.com/.."),
    JID.parse("..@example.com"),
    JID.parse("\u00e9l\u00e8ve@example.com"),
    JID.parse("\u0436\u0443\u043a@\u043f\u0440\u0438\u043c\u0435\u0440.example"),
    JID.parse("\u6d4b\u8bd5@example.com"),
    JID.parse("a%20b@example.com"),
    JID.parse("x" * 1023 + "@example.com"),
    JID.parse("x" * 1022 + "y@example.com"),
]


def walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            yield Path(dirpath) / name


async def test_odd_jids_are_distinct_and_contained(storage: Storage, tmp_path: Path) -> None:
    """``/``, ``..``, ``%``, case, non-ASCII, 1023-byte localparts: distinct, safe records."""
    assert len(set(ODD_JIDS)) == len(ODD_JIDS)
    for i, jid in enumerate(ODD_JIDS):
        await storage.save_user(User(jid, roster_version=i))
        element = etree.Element("{vcard-temp}vCard")
        element.text = str(i)
        await storage.save_vcard(jid, element)
        await storage.put(jid, "last", {"i": i})
    for i, jid in enumerate(ODD_JIDS):
        user = await storage.find_user(jid)
        assert user is not None and user.jid == jid and user.roster_version == i
        card = await storage.find_vcard(jid)
        assert card is not None and card.text == str(i)
        assert await storage.get(jid, "last") == {"i": i}
    if isinstance(storage, FsStorage):
        root = storage.dir.resolve()
        users = [p for p in walk(storage.dir) if p.name == "user.json"]
        assert len(users) == len(ODD_JIDS)
        for path in walk(storage.dir):
            assert path.resolve().is_relative_to(root)
            assert len(path.name.encode()) <= 255
        assert sorted(p.name for p in walk(tmp_path) if p.parent == tmp_path) == ["data"]


# --- fs only: names, layout, modes -------------------------------------------------


@pytest.mark.parametrize("text", ["", "a", "..", ".", "a/b", "A", "%", "%41", "\u00e9",
                                  "a b\\c:d*e?f", "\u6d4b\u8bd5", "con", "x" * 66, "_-09"])
def test_encode_name_is_safe_and_reversible(text: str) -> None:
    """Encoded names use only [a-z0-9_-] and %XX, never a dot, and decode back."""
    name = encode_name(text)
    assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789_-%ABCDEF")
    assert "." not in name and "/" not in name
    assert decode_name(name) == text


def test_encode_name_long_is_hashed() -> None:
    """Over-long encodings are shortened with a hash: bounded, distinct, not decodable."""
    a, b = encode_name("\u00e9" * 200), encode_name("\u00e9" * 199 + "e")
    assert len(a) <= 200 and "~" in a and a != b
    assert decode_name(a) is None
    assert decode_name("%2e") is None and decode_name("%61") is None and decode_name("a.b") is None


async def test_fs_layout(tmp_path: Path) -> None:
    """user.json, vcard.xml, private/<ns>.<name>.xml, <store>.json under <dir>/<domain>/<local>/."""
    storage = FsStorage(str(tmp_path))                   # a str dir is accepted
    await storage.save_user(make_user())
    await storage.save_vcard(ALICE, etree.fromstring(VCARD))
    await storage.save_fragment(ALICE, etree.fromstring(BOOKMARKS))
    await storage.put(ALICE, "last", {"time": 5, "status": "\u00c4"})
    user_dir = tmp_path / "example%2Ecom" / "alice"
    assert sorted(p.relative_to(user_dir).as_posix() for p in walk(user_dir)) == [
        "last.json", "private", "private/storage%3Abookmarks.storage.xml", "user.json",
        "vcard.xml"]
    assert json.loads((user_dir / "last.json").read_text("utf-8")) == {
        "time": 5, "status": "\u00c4"}
    await storage.put(ALICE, "last", None)
    assert not (user_dir / "last.json").exists()
    doc = json.loads((user_dir / "user.json").read_text("utf-8"))
    assert doc["jid"] == "alice@example.com" and doc["roster_version"] == 3
    assert doc["credentials"]["SCRAM-SHA-1"]["salt"] == "c3Nzc3Nzc3Nzc3Nzc3Nzcw=="
    assert {item["jid"] for item in doc["roster"]} == {
        "bob@example.net", "carol@example.org", "gateway.example.org"}


async def test_fs_fragment_file_names(tmp_path: Path) -> None:
    """private/<ns>.<name>.xml whenever that name could be written before (241
    bytes: the temporary file's name adds 14 to it, and 255 is the limit), so a
    fragment saved by an older version is still found; past that a readable
    prefix, ``~~`` and the SHA-256 of both, well within the limit."""
    storage = FsStorage(tmp_path)
    private = tmp_path / "example%2Ecom" / "alice" / "private"
    fits = ("urn:" + "n" * 140, "e" * (241 - 146 - 1 - 4))
    old_name = f"{encode_name(fits[0])}.{encode_name(fits[1])}.xml"
    assert len(old_name) == 241
    private.mkdir(parents=True)
    (private / old_name).write_bytes(etree.tostring(long_fragment(*fits, "old")))
    found = await storage.find_fragment(ALICE, *fits)
    assert found is not None and found.text == "old"
    await storage.save_fragment(ALICE, long_fragment(*fits, "new"))
    await storage.save_fragment(ALICE, long_fragment())
    names = sorted(p.name for p in private.iterdir())
    assert len(names) == 2 and old_name in names
    (hashed,) = (n for n in names if n != old_name)
    assert "~~" in hashed and hashed.endswith(".xml") and len(hashed.encode()) <= 241
    assert hashed.startswith(encode_name(LONG_NS)[:50])
    found = await storage.find_fragment(ALICE, *fits)
    assert found is not None and found.text == "new"


async def test_fs_modes(tmp_path: Path) -> None:
    """Directories are created 0700 and files 0600, whatever the umask."""
    old = os.umask(0o022)
    try:
        storage = FsStorage(tmp_path / "data")
        await storage.save_user(make_user())
        await storage.save_vcard(ALICE, etree.fromstring(VCARD))
        await storage.save_fragment(ALICE, etree.fromstring(BOOKMARKS))
        await storage.put(ALICE, "last", {"time": 1})
    finally:
        os.umask(old)
    paths = [tmp_path / "data", *walk(tmp_path / "data")]
    assert len(paths) == 8
    for path in paths:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))


async def test_fs_delete_removes_directory(tmp_path: Path) -> None:
    """delete_user leaves no user directory and no tombstone behind."""
    storage = FsStorage(tmp_path)
    await storage.save_user(make_user())
    await storage.save_fragment(ALICE, etree.fromstring(BOOKMARKS))
    await storage.save_user(make_user(JID.parse("zed@example.com")))
    assert await storage.delete_user(ALICE)
    assert sorted(p.name for p in (tmp_path / "example%2Ecom").iterdir()) == ["zed"]


async def test_fs_delete_without_user_json(tmp_path: Path) -> None:
    """A vCard without an account is removed by delete_user, which reports no user."""
    storage = FsStorage(tmp_path)
    await storage.save_vcard(ALICE, etree.fromstring(VCARD))
    assert await storage.delete_user(ALICE) is False
    assert await storage.find_vcard(ALICE) is None


async def test_fs_runs_io_in_threads(tmp_path: Path, thread_calls: list[str]) -> None:
    """Every fs operation goes through asyncio.to_thread."""
    calls = thread_calls
    storage = FsStorage(tmp_path)
    await storage.save_user(make_user())
    await storage.find_user(ALICE)
    await storage.save_vcard(ALICE, etree.fromstring(VCARD))
    await storage.find_vcard(ALICE)
    await storage.save_fragment(ALICE, etree.fromstring(BOOKMARKS))
    await storage.find_fragment(ALICE, "storage:bookmarks", "storage")
    await storage.put(ALICE, "last", {"time": 1})
    await storage.get(ALICE, "last")
    await storage.put(ALICE, "last", None)
    await storage.delete_user(ALICE)
    assert len(calls) == 10


async def test_fs_reads_user_json_without_hidden(tmp_path: Path) -> None:
    """A user.json written before Contact.hidden existed reads back with hidden=False."""
    storage = FsStorage(tmp_path)
    await storage.save_user(make_user())
    doc = json.loads((tmp_path / USER_JSON).read_bytes())
    assert all(item.pop("hidden") is False for item in doc["roster"])
    (tmp_path / USER_JSON).write_text(json.dumps(doc), "utf-8")
    found = await storage.find_user(ALICE)
    assert found == make_user()
    assert found is not None and not any(c.hidden for c in found.roster.values())


# --- fs only: corrupt files, I/O errors, crashes ----------------------------------

USER_JSON = Path("example%2Ecom") / "alice" / "user.json"


def corrupt_json_variants() -> list[bytes]:
    good = json.loads(user_to_json(make_user()))
    variants: list[Any] = []
    for key in ("jid", "credentials", "roster", "roster_version", "format"):
        broken = copy.deepcopy(good)
        del broken[key]
        variants.append(broken)
    for path, value in [(("roster",), {}), (("roster_version",), "3"),
                        (("roster_version",), True), (("jid",), "mallory@example.com"),
                        (("format",), 2), (("credentials", "SCRAM-SHA-1", "salt"), "!!"),
                        (("credentials", "SCRAM-SHA-1", "iterations"), 1.5),
                        (("roster", 0, "jid"), "@@"), (("roster", 0, "groups"), "Friends"),
                        (("roster", 0, "approved"), "yes"), (("roster", 0, "name"), 5),
                        (("roster", 0, "hidden"), "yes"), (("roster", 0, "hidden"), None),
                        (("roster", 0), None)]:
        broken = copy.deepcopy(good)
        target = broken
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
        variants.append(broken)
    return [b"", b"{", b"\xff\xfe", b"[]", b"null", b"{\"format\": 1}"] + [
        json.dumps(v).encode() for v in variants]


@pytest.mark.parametrize("content", corrupt_json_variants())
async def test_fs_corrupt_user_json(tmp_path: Path, content: bytes) -> None:
    """A corrupt user.json raises StorageError and is left untouched."""
    storage = FsStorage(tmp_path)
    await storage.save_user(make_user())
    (tmp_path / USER_JSON).write_bytes(content)
    with pytest.raises(StorageError):
        await storage.find_user(ALICE)
    assert (tmp_path / USER_JSON).read_bytes() == content


@pytest.mark.parametrize("content", [
    b"", b"<vCard xmlns='vcard-temp'>", b"not xml", b"<a/><b/>", b"\xff\xfe<a/>",
    b"<!DOCTYPE vCard [<!ENTITY x SYSTEM 'file:///etc/passwd'>]>"
    b"<vCard xmlns='vcard-temp'>&x;</vCard>",
    b"<!DOCTYPE v [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;&a;&a;'>]><v>&b;</v>",
])
async def test_fs_corrupt_xml(tmp_path: Path, content: bytes) -> None:
    """Corrupt or DTD-bearing vcard.xml / fragment files raise StorageError, untouched."""
    storage = FsStorage(tmp_path)
    await storage.save_vcard(ALICE, etree.fromstring(VCARD))
    await storage.save_fragment(ALICE, etree.fromstring(BOOKMARKS))
    user_dir = tmp_path / "example%2Ecom" / "alice"
    for path in (user_dir / "vcard.xml", user_dir / "private" / "storage%3Abookmarks.storage.xml"):
        path.write_bytes(content)
    with pytest.raises(StorageError):
        await storage.find_vcard(ALICE)
    with pytest.raises(StorageError):
        await storage.find_fragment(ALICE, "storage:bookmarks", "storage")
    assert (user_dir / "vcard.xml").read_bytes() == content


@pytest.mark.parametrize("content", [b"", b"{", b"\xff\xfe", b"{\"a\": 1} trailing", b"NaN x"])
async def test_fs_corrupt_keyval(tmp_path: Path, content: bytes) -> None:
    """A corrupt <store>.json raises StorageError and is left untouched."""
    storage = FsStorage(tmp_path)
    await storage.put(ALICE, "last", {"time": 1})
    path = tmp_path / "example%2Ecom" / "alice" / "last.json"
    path.write_bytes(content)
    with pytest.raises(StorageError):
        await storage.get(ALICE, "last")
    assert path.read_bytes() == content


async def test_fs_keyval_crash_mid_put_keeps_old_value(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A put that fails at the rename keeps the old value and leaves no temp file."""
    storage = FsStorage(tmp_path)
    await storage.put(ALICE, "last", {"time": 1})

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(StorageError):
        await storage.put(ALICE, "last", {"time": 2})
    monkeypatch.undo()
    assert await storage.get(ALICE, "last") == {"time": 1}
    assert [p.name for p in walk(tmp_path) if p.name.startswith(".")] == []


async def test_fs_fragment_with_wrong_root(tmp_path: Path) -> None:
    """A fragment file holding another element than its name says is StorageError."""
    storage = FsStorage(tmp_path)
    await storage.save_fragment(ALICE, etree.fromstring(BOOKMARKS))
    path = tmp_path / "example%2Ecom" / "alice" / "private" / "storage%3Abookmarks.storage.xml"
    path.write_bytes(b"<storage xmlns='jabber:iq:roster'/>")
    with pytest.raises(StorageError):
        await storage.find_fragment(ALICE, "storage:bookmarks", "storage")


async def test_fs_os_errors_become_storage_errors(tmp_path: Path) -> None:
    """OSError (a directory where a file belongs, a file where a directory does) is StorageError."""
    storage = FsStorage(tmp_path)
    (tmp_path / USER_JSON).mkdir(parents=True)
    with pytest.raises(StorageError) as info:
        await storage.find_user(ALICE)
    assert isinstance(info.value.__cause__, OSError)
    with pytest.raises(StorageError):
        await storage.save_user(make_user())
    blocker = tmp_path / "file"
    blocker.write_bytes(b"x")
    with pytest.raises(StorageError):
        await FsStorage(blocker).save_user(make_user())
    with pytest.raises(StorageError):
        await FsStorage(blocker).find_user(ALICE)


@pytest.mark.parametrize("fail", ["fdopen", "fsync", "replace"])
async def test_fs_crash_mid_save_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                fail: str) -> None:
    """A save that fails after the temp file exists leaves the old file and no temp file."""
    storage = FsStorage(tmp_path)
    old = make_user()
    await storage.save_user(old)
    await storage.save_vcard(ALICE, etree.fromstring(VCARD))
    before = (tmp_path / USER_JSON).read_bytes()

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    real_fdopen = os.fdopen

    def half_writer(fd: int, mode: str) -> Any:
        f: Any = real_fdopen(fd, mode)

        def write(data: bytes) -> int:       # half the bytes reach the disk, then ENOSPC
            f.raw.write(data[:len(data) // 2])
            boom()
            return 0

        f.write = write
        return f

    monkeypatch.setattr(os, fail, half_writer if fail == "fdopen" else boom)
    new = make_user(version=42)
    with pytest.raises(StorageError):
        await storage.save_user(new)
    with pytest.raises(StorageError):
        await storage.save_vcard(ALICE, etree.fromstring(b"<vCard xmlns='vcard-temp'/>"))
    monkeypatch.undo()
    assert (tmp_path / USER_JSON).read_bytes() == before
    assert await storage.find_user(ALICE) == old
    card = await storage.find_vcard(ALICE)
    assert card is not None and len(card) == 4
    assert [p.name for p in walk(tmp_path) if p.name.startswith(".")] == []


async def test_fs_open_storage(tmp_path: Path) -> None:
    """open_storage builds fs from a str or Path ``dir``; the registry lists all backends."""
    assert {"fs", "memory", "null"} <= set(backends())
    for value in (str(tmp_path / "a"), tmp_path / "b"):
        storage = open_storage("fs", {"dir": value})
        assert isinstance(storage, FsStorage)
        await storage.save_user(make_user())
        assert await storage.find_user(ALICE) == make_user()
    assert isinstance(open_storage("memory", {}), MemoryStorage)


# --- null ------------------------------------------------------------------------


async def test_null_accepts_writes_and_finds_nothing() -> None:
    """The null backend swallows every write and misses every lookup."""
    storage = open_storage("null", {})
    assert isinstance(storage, NullStorage)
    await storage.save_user(make_user())
    await storage.save_vcard(ALICE, etree.fromstring(VCARD))
    await storage.save_fragment(ALICE, etree.fromstring(BOOKMARKS))
    assert await storage.find_user(ALICE) is None
    assert await storage.find_vcard(ALICE) is None
    assert await storage.find_fragment(ALICE, "storage:bookmarks", "storage") is None
    await storage.put(ALICE, "last", {"time": 1})
    assert await storage.get(ALICE, "last") is None
    with pytest.raises(ValueError):
        await storage.get(ALICE, "Bad-Name")
    assert await storage.delete_user(ALICE) is False
    await storage.close()
