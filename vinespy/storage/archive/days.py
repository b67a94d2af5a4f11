"""The fs archive's day files as bytes and back: records, day names, and
the index of a day's ids a query pages through.

No I/O: :mod:`vinespy.storage.archive.fs` reads and writes the files. A
decoder raises ValueError (or binascii.Error) for what a day file cannot
hold; the backend turns it into StorageError naming the file and line.
"""

from __future__ import annotations

import base64
import bisect
import json
import re
from typing import Any, Callable, Iterator

from . import ArchivedMessage, from_micros, id_micros

DAY_RE = re.compile(r"(\d{4}-\d{2}-\d{2})\.jsonl\Z")
NONE_LEFT = "~"             # a day name after every real one
_HEX16 = re.compile(r"[0-9a-f]{16}\Z")
# record_line starts every line with the id: 24 hex digits after _HEAD.
_HEAD = b'{"id":"'
_HEX = re.compile(rb"[0-9a-f]*")
_quote: Callable[[str], str] = getattr(json.encoder, "c_encode_basestring", None) \
    or json.encoder.py_encode_basestring


def day_of(us: int) -> str:
    """The UTC day (``YYYY-MM-DD``) of a time in microseconds since the epoch."""
    return from_micros(us).date().isoformat()


def day_file(id: str) -> str:
    """The name of the day file that would hold the id ``id``; ValueError
    unless it is 24 lower-case hex digits of a time before year 10000."""
    us = id_micros(id)
    if us is None:
        raise ValueError(f"archive id {id!r} is not 24 lower-case hex digits")
    try:
        return f"{day_of(us)}.jsonl"
    except OverflowError:
        raise ValueError(f"archive id {id!r} is past year 9999") from None


def bound_day(bound: str | None, pad: str) -> str | None:
    """The first (``pad`` "0") or last (``pad`` "f") day file an id beyond
    the exclusive ``bound`` can be in; None: no limit known."""
    if bound is None:
        return None
    head = bound[:16].ljust(16, pad)
    if not _HEX16.match(head):
        return None                 # not hex: compared as text, days not pruned
    try:
        return f"{day_of(int(head, 16))}.jsonl"
    except OverflowError:           # past year 9999
        return NONE_LEFT if pad == "0" else None


def record_line(msg: ArchivedMessage) -> bytes:
    """One record of a day file: a JSON line, the id first (the stanza as
    text when it is UTF-8, else base64); the stamp is the id's time."""
    try:
        body = ',"text":' + _quote(msg.stanza.decode("utf-8"))
    except UnicodeDecodeError:
        body = ',"b64":"' + base64.b64encode(msg.stanza).decode("ascii") + '"'
    # What json.dumps(ensure_ascii=False, separators=(",", ":")) makes of
    # the dict {id, peer, bare, text|b64}, without building the dict (the
    # id is 24 hex digits: nothing to quote).
    return (f'{{"id":"{msg.id}","peer":{_quote(msg.peer)},"bare":{_quote(msg.peer_bare)}'
            f'{body}}}\n').encode("utf-8")


def _str(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{key}: expected str, found {type(value).__name__}")
    return value


def _object(raw: bytes) -> dict[str, Any]:
    doc = json.loads(raw)
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    return doc


def parse_record(raw: bytes, expected: bytes) -> ArchivedMessage:
    """The message of a record (a line without its newline), whose id the
    index took to be ``expected``."""
    doc = _object(raw)
    id = _str(doc, "id")
    us = id_micros(id)
    if us is None or id.encode() != expected:
        raise ValueError(f"id {id!r}")
    stanza = (_str(doc, "text").encode("utf-8") if "text" in doc
              else base64.b64decode(_str(doc, "b64"), validate=True))
    return ArchivedMessage(id, from_micros(us), _str(doc, "peer"), _str(doc, "bare"), stanza)


class BadLine(ValueError):
    """A record whose id cannot be read; ``line`` is its number (from 1)."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line


class Day:
    """A day file's records sorted by id, unparsed: ``ids`` (ASCII bytes,
    which compare as the ids do), ``raws`` (each line without its newline)
    and ``lines`` (their line numbers). The ids are sliced from where
    :func:`record_line` puts them, checked for the whole file at once (a
    count and a regex at C speed), so a day of 100,000 records costs a few
    milliseconds; a record is parsed only when a page reaches it
    (:func:`parse_record`, which checks the id it finds)."""

    def __init__(self, data: bytes) -> None:
        raws = data.split(b"\n")
        raws.pop()                          # the piece after the last \n: torn or empty
        ids = [raw[7:31] for raw in raws]
        joined = b"".join(ids)
        fast = (not raws or (data.startswith(_HEAD)
                             and data.count(b"\n" + _HEAD, 0, data.rfind(b"\n")) == len(raws) - 1
                             and len(joined) == 24 * len(raws) and _HEX.fullmatch(joined)))
        if not fast:
            ids = [_slow_id(raw, n) for n, raw in enumerate(raws, 1)]
        lines = list(range(1, len(raws) + 1))
        if sorted(ids) != ids:              # appends out of order (C speed when not)
            order = sorted(range(len(ids)), key=ids.__getitem__)
            ids = [ids[i] for i in order]
            raws = [raws[i] for i in order]
            lines = [i + 1 for i in order]
        self.ids: list[bytes] = ids
        self.raws = raws
        self.lines = lines

    def __len__(self) -> int:
        return len(self.ids)

    def has(self, id: str) -> bool:
        key = id.encode()
        at = bisect.bisect_left(self.ids, key)
        return at < len(self.ids) and self.ids[at] == key

    def span(self, lo: str | None, hi: str | None, forward: bool) -> range:
        """The positions of the ids in (lo, hi), in the direction asked.
        (UTF-8 bytes sort as the text's code points: as str compares.)"""
        start = 0 if lo is None else bisect.bisect_right(self.ids, lo.encode())
        stop = len(self.ids) if hi is None else bisect.bisect_left(self.ids, hi.encode())
        return range(start, stop) if forward else range(stop - 1, start - 1, -1)

    def kept(self, keep: Any) -> Iterator[bytes]:
        """The lines (with their newlines) whose id (str) ``keep`` accepts."""
        for id, raw in zip(self.ids, self.raws):
            if keep(id.decode("ascii")):
                yield raw + b"\n"


def _slow_id(raw: bytes, line: int) -> bytes:
    """The id of a record record_line did not write (parsed)."""
    try:
        id = _str(_object(raw), "id")
    except ValueError as exc:
        raise BadLine(line, str(exc)) from exc
    if id_micros(id) is None:
        raise BadLine(line, f"id {id!r}")
    return id.encode("ascii")
