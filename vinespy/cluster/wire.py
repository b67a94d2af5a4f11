"""What nodes write to each other through Redis, encoded and decoded without I/O.

A node's inbox (a Redis Stream, ``cluster:inbox:{node}``) and the shared
``cluster:events`` stream hold *entries*; each entry is one flush of one
sender: ``n`` (sender node), ``e`` (its incarnation), ``q`` (a sequence
number per sender and stream, so a batch re-sent after a lost reply is
recognised and skipped), in an inbox ``b`` (the lowest sequence number the
sender still keeps for that receiver, unconfirmed: :mod:`.confirm`) and
the items in order under the keys ``0``, ``1``...

An item is bytes whose first byte says what it is:

``s`` target NUL hops NUL stanza
    deliver the stanza (stream form, ``jabber:client`` default namespace) to
    the bound full JID ``target`` of the receiving node.
``c`` full NUL sid NUL condition
    close that session (a newer one bound the same full JID elsewhere) with
    that stream error (RFC 6120 §4.9.3; empty: ``conflict``).
``i`` bare
    the routing entries of ``bare`` changed: forget what is cached of them.
``u`` bare
    the stored data of the user ``bare`` changed (roster, blocklist...).
``m`` domain NUL name NUL payload
    a module's message to its peer on the receiving node: fired there as
    ``cluster/<name>`` on the bus of the host serving ``domain`` (XEP-0198
    hands a session over to the node its client resumed on this way).

A session record (the value of ``sessions:{bare}`` for a resource) is JSON:
``{"node", "sid", "available", "priority", "presence", "fields"}``, where
``fields`` holds the modules' shared scalar session fields by key
(:mod:`vinespy.fields`; absent when none differs from its default). Shared
set fields are not in it (every node reads records to route, and each new
member would rewrite the whole record): their members are a set of their
own (``cluster:sets:{sid}``, each ``"<field key> <member>"``), which the
cleanup of a dead node reads into :attr:`Record.sets`. Records written by
older versions carry ``"interested"`` (now the field ``roster.interested``)
and may carry a ``"directed"`` list (``presence.directed``); both are read
as those fields.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable

from .. import xml
from ..errors import STREAM_CONDITIONS
from ..xml import Element

STANZA, CLOSE, INVALIDATE, USER, MESSAGE = b"s", b"c", b"i", b"u", b"m"
HEADER_KEYS = (b"n", b"e", b"q", b"b")


class WireError(ValueError):
    """An inbox entry or a session record that is not what vinespy writes."""


@dataclass(frozen=True)
class Header:
    node: str
    incarnation: str
    seq: int
    base: int           # ``b``; an entry without one: its own seq


def stanza_item(target: str, hops: int, data: bytes) -> bytes:
    return b"".join((STANZA, target.encode(), b"\0", str(hops).encode(), b"\0", data))


def close_item(full: str, sid: str, condition: str) -> bytes:
    return b"".join((CLOSE, full.encode(), b"\0", sid.encode(), b"\0", condition.encode()))


def message_item(domain: str, name: str, payload: bytes) -> bytes:
    return b"".join((MESSAGE, domain.encode(), b"\0", name.encode(), b"\0", payload))


def invalidate_item(bare: str) -> bytes:
    return INVALIDATE + bare.encode()


def user_item(bare: str) -> bytes:
    return USER + bare.encode()


def entry(node: str, incarnation: str, seq: int, items: Iterable[bytes],
          base: int | None = None) -> dict[str, bytes]:
    fields: dict[str, bytes] = {"n": node.encode(), "e": incarnation.encode(),
                                "q": str(seq).encode()}
    if base is not None:
        fields["b"] = str(base).encode()
    for i, item in enumerate(items):
        fields[str(i)] = item
    return fields


def parse_entry(fields: dict[bytes, bytes]) -> tuple[Header, list[bytes]]:
    """The header and the items of an entry, in order; WireError if malformed."""
    try:
        seq = int(fields[b"q"])
        header = Header(fields[b"n"].decode(), fields[b"e"].decode(), seq,
                        int(fields.get(b"b", seq)))
        if not 0 <= header.base <= seq:
            raise ValueError(f"b {header.base} is not between 0 and q {seq}")
        items = sorted((int(k), v) for k, v in fields.items() if k not in HEADER_KEYS)
    except (KeyError, ValueError, UnicodeDecodeError, TypeError) as exc:
        raise WireError(f"not a vinespy entry: {exc!r}") from None
    return header, [v for _, v in items]


def parse_item(item: bytes) -> tuple[bytes, list[str], bytes]:
    """(kind, text fields, payload bytes) of an item; WireError if malformed."""
    kind, body = item[:1], item[1:]
    try:
        if kind == STANZA:
            target, hops, data = body.split(b"\0", 2)
            int(hops)
            return kind, [target.decode(), hops.decode()], data
        if kind == CLOSE:
            full, sid, cond = body.split(b"\0", 2)
            condition = cond.decode()
            if condition and condition not in STREAM_CONDITIONS:
                raise WireError(f"unknown stream error condition {condition!r} "
                                "(RFC 6120 §4.9.3)")
            return kind, [full.decode(), sid.decode(), condition], b""
        if kind == MESSAGE:
            domain, name, data = body.split(b"\0", 2)
            return kind, [domain.decode(), name.decode()], data
        if kind in (INVALIDATE, USER):
            return kind, [body.decode()], b""
    except ValueError as exc:
        raise WireError(f"malformed {kind!r} item: {exc}") from None
    raise WireError(f"unknown item kind {kind!r}")


def parse_stanza(data: bytes) -> Element:
    """The stanza of an ``s`` item, in the ``jabber:client`` namespace."""
    try:
        return xml.parse_stanza(data)
    except xml.NotOneStanza:
        raise WireError("an s item holds exactly one stanza") from None
    except ValueError as exc:
        raise WireError(str(exc)) from None


@dataclass
class Record:
    node: str
    sid: str
    available: bool = False
    priority: int = 0
    presence: bytes | None = None       # stream-form XML of the last broadcast presence
    fields: dict[str, Any] = field(default_factory=dict)   # shared scalar session fields
    sets: tuple[str, ...] = ()          # "<field key> <member>" of its shared set fields


def record(node: str, sid: str, available: bool, priority: int, presence: bytes | None,
           fields: dict[str, Any] | None = None) -> str:
    d: dict[str, object] = {"node": node, "sid": sid, "available": available,
                            "priority": priority,
                            "presence": presence.decode() if presence is not None else None}
    if fields:
        d["fields"] = fields
    return json.dumps(d, separators=(",", ":"))


def parse_record(raw: bytes | str, members: Iterable[bytes] = ()) -> Record:
    """The record ``raw``, with ``members`` (those of the session's set of
    shared set field members, when read) as its :attr:`Record.sets`."""
    try:
        d = json.loads(raw)
        presence = d.get("presence")
        fields = d.get("fields") or {}
        if not isinstance(fields, dict) or not all(
                isinstance(v, (bool, int, float, str)) for v in fields.values()):
            raise TypeError("'fields' is not an object of scalars")
        if d.get("interested"):                     # written before fields existed
            fields.setdefault("roster.interested", True)
        old = d.get("directed") or []
        if not isinstance(old, list) or not all(isinstance(j, str) for j in old):
            raise TypeError("'directed' is not a list of strings")
        sets = {f"presence.directed {j}" for j in old}
        sets.update(m.decode(errors="replace") for m in members)
        return Record(str(d["node"]), str(d["sid"]), bool(d.get("available")),
                      int(d.get("priority") or 0),
                      presence.encode() if isinstance(presence, str) else None,
                      fields, tuple(sorted(sets)))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise WireError(f"not a session record: {exc!r}") from None
