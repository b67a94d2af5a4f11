"""The fs user store's records as bytes and back: ``user.json`` and the
lines of ``roster.log`` (the layout and the journal's rules are in
:mod:`vinespy.storage.fs`), and a user as parsed from both.

No I/O: the backend reads and writes the files, this module encodes and
decodes them. A decoder raises TypeError, ValueError or KeyError (or
:class:`~vinespy.jid.JIDError`) for what its file cannot hold; the backend
turns that into StorageError naming the file.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple, TypeVar

from ...jid import JID
from .. import Contact, ScramKeys, User

T = TypeVar("T")

FORMAT = 1          # user.json "format"


# --- user.json ----------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any) -> bytes:
    return base64.b64decode(_typed(value, str), validate=True)


def _typed(value: Any, kind: type[T]) -> T:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"expected {kind.__name__}, found {type(value).__name__}")
    return value


def _optional_str(value: Any) -> str | None:
    return None if value is None else _typed(value, str)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _contact_doc(c: Contact) -> dict[str, Any]:
    return {"jid": str(c.jid), "name": c.name, "subscription": c.subscription,
            "ask": c.ask, "groups": list(c.groups), "approved": c.approved,
            "pending_in": c.pending_in, "hidden": c.hidden}


def _contact_from_doc(item: Any) -> Contact:
    item = _typed(item, dict)
    return Contact(
        jid=JID.parse(_typed(item["jid"], str)),
        name=_optional_str(item["name"]),
        subscription=_typed(item["subscription"], str),
        ask=_optional_str(item["ask"]),
        groups=[_typed(g, str) for g in _typed(item["groups"], list)],
        approved=_typed(item["approved"], bool),
        pending_in=_typed(item["pending_in"], bool),
        hidden=_typed(item.get("hidden", False), bool),   # older files lack it: False
    )


def user_to_json(user: User, journal: int = 0) -> bytes:
    """user.json: one roster item a line (the C encoder: no indent, which would
    take the pure-Python one, ten times slower on a big roster)."""
    head = {
        "format": FORMAT,
        "jid": str(user.jid.bare),
        "credentials": {
            name: {"salt": _b64(k.salt), "stored_key": _b64(k.stored_key),
                   "server_key": _b64(k.server_key), "iterations": k.iterations}
            for name, k in user.credentials.items()
        },
        "roster_version": user.roster_version,
        "journal": journal,
    }
    items = ",\n".join(_json(_contact_doc(c)) for c in user.roster.values())
    return f'{_json(head)[:-1]},\n"roster":[\n{items}\n]}}\n'.encode("utf-8")


def user_from_json(data: bytes, jid: JID) -> tuple[User, int]:
    """Decode ``user.json`` of bare ``jid``: the User and the number of the last
    journal line it includes; TypeError/ValueError/KeyError if corrupt."""
    doc = _typed(json.loads(data), dict)
    if doc.get("format") != FORMAT:
        raise ValueError(f"unknown format {doc.get('format')!r}")
    if _typed(doc["jid"], str) != str(jid):
        raise ValueError(f"the file belongs to {doc['jid']!r}, not {str(jid)!r}")
    credentials = {
        _typed(name, str): ScramKeys(salt=_unb64(k["salt"]), stored_key=_unb64(k["stored_key"]),
                                     server_key=_unb64(k["server_key"]),
                                     iterations=_typed(k["iterations"], int))
        for name, k in _typed(doc["credentials"], dict).items()
    }
    roster: dict[JID, Contact] = {}
    for item in _typed(doc["roster"], list):
        contact = _contact_from_doc(item)
        roster[contact.jid] = contact
    user = User(jid=jid, credentials=credentials, roster=roster,
                roster_version=_typed(doc["roster_version"], int))
    return user, _typed(doc.get("journal", 0), int)     # older files lack it: 0


# --- roster.log ---------------------------------------------------------------

JOURNAL = "roster.log"


class Entry(NamedTuple):
    """One line of roster.log: what one update_roster call stored."""

    seq: int
    version: int
    changes: dict[JID, Contact | None]


def entry_to_json(seq: int, version: int, changes: Mapping[JID, Contact | None]) -> bytes:
    doc = {"seq": seq, "version": version,
           "set": [_contact_doc(c) for c in changes.values() if c is not None],
           "del": [str(j) for j, c in changes.items() if c is None]}
    return _json(doc).encode("utf-8") + b"\n"


def entry_from_json(line: bytes) -> Entry:
    doc = _typed(json.loads(line), dict)
    changes: dict[JID, Contact | None] = {
        JID.parse(_typed(j, str)): None for j in _typed(doc["del"], list)}
    for item in _typed(doc["set"], list):
        contact = _contact_from_doc(item)
        changes[contact.jid] = contact
    return Entry(_typed(doc["seq"], int), _typed(doc["version"], int), changes)


def journal_entries(data: bytes) -> list[Entry]:
    """Every complete line of a journal; what follows the last newline is an
    append a crash cut short, never acknowledged: ignored."""
    return [entry_from_json(line) for line in data.split(b"\n")[:-1]]


# --- a user as parsed ---------------------------------------------------------


@dataclass
class Parsed:
    """A user as parsed from user.json, with the journal lines read so far."""

    sig: tuple[int, int, int]           # user.json's (inode, mtime_ns, size)
    user: User
    base: int                           # user.json's "journal": lines it includes
    last: int                           # the last journal line read
    journal: tuple[int, int] | None     # (inode, offset after the last line read)
    items: int                          # records not hidden
    pending: int                        # hidden records

    def apply(self, entry: Entry) -> None:
        if entry.seq > self.base:
            roster = self.user.roster
            for jid, contact in entry.changes.items():
                old = roster.pop(jid, None)
                if old is not None:
                    self.pending -= old.hidden
                    self.items -= not old.hidden
                if contact is not None:
                    roster[jid] = contact
                    self.pending += contact.hidden
                    self.items += not contact.hidden
            self.user.roster_version = entry.version
        self.last = max(self.last, entry.seq)


def copy_contact(c: Contact) -> Contact:
    return Contact(c.jid, c.name, c.subscription, c.ask, list(c.groups), c.approved,
                   c.pending_in, c.hidden)


def copy_user(user: User) -> User:
    """A copy as deep as the model (ScramKeys are frozen), much faster than deepcopy."""
    return User(user.jid, dict(user.credentials),
                {jid: copy_contact(c) for jid, c in user.roster.items()}, user.roster_version)
