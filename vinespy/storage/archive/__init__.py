"""Message archive (XEP-0313) storage: the interface and its registry.

:class:`ArchiveStore` keeps each user's archived messages, filed under the
owner's bare JID, and answers the queries of the MAM module: filters (a
peer, a time range, ids) and XEP-0059 pages in either direction. The
protocol rules (what is archived, the forms, ``<fin/>``) are not here: a
store only keeps messages and pages through them. Three implementations
keep the same contract (tests/storage/test_archive_contract.py runs one
suite against all of them), each registered by name with :func:`register`:

* ``memory``, :class:`~vinespy.storage.archive.memory.MemoryArchive`: sorted
  lists in the process, lost at exit (tests, ``backend = "memory"``).
* ``fs``, :class:`~vinespy.storage.archive.fs.FsArchive`: one append-only
  file per owner and UTC day under a directory; a query reads only the day
  files its page needs.
* ``sql``, :class:`~vinespy.storage.archive.sql.SqlArchive`: one table in the
  database of a host's ``backend = "sql"`` storage (SQLite or PostgreSQL).

The MAM module writes through a :class:`~vinespy.storage.archive.batch.Batcher`:
a loop iteration's entries in one :meth:`ArchiveStore.append_many`, and
:meth:`ArchiveStore.sync` about once a second (the fs store's group commit).

Ids are XEP-0359 stanza-ids made by :func:`new_id`: 16 hex digits of the
message's UTC time in microseconds, then 8 random ones. They sort by time
(as strings), so every backend orders, pages and filters by id alone: a
time range is a range of ids (:func:`plan`), and the fs store finds the day
file of an id from its first 16 digits. A message's ``stamp`` must be the
time its id says (:func:`check_message`).

Failures follow :mod:`vinespy.storage`: I/O failures and corrupt data raise
:class:`~vinespy.storage.StorageError`; bad arguments raise ValueError or
TypeError before anything is changed; an RSM ``after``/``before`` id that is
not in the owner's archive raises :class:`UnknownId` (the protocol layer
answers ``<item-not-found/>``).
"""

from __future__ import annotations

import abc
import random
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Collection, Iterable, Iterator, Sequence

from ...jid import JID
from .. import Registry, Storage, open_storage

if TYPE_CHECKING:
    from ...config import Config, HostConfig

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
ID_RE = re.compile(r"[0-9a-f]{24}\Z")


class UnknownId(LookupError):
    """An RSM ``after``/``before`` id that is not in the owner's archive."""


@dataclass(frozen=True)
class ArchivedMessage:
    """One archived message of one owner."""

    id: str                 # XEP-0359 stanza-id, by new_id(stamp)
    stamp: datetime         # UTC, aware; the time id says
    peer: str               # the other party's JID (full or bare) as seen
    peer_bare: str          # its bare JID
    stanza: bytes           # the serialized <message/>


@dataclass(frozen=True)
class ArchiveQuery:
    """A MAM query: filters, then a page of the result (XEP-0059 RSM).

    ``with_jid``: a bare JID matches ``peer_bare``, a full one ``peer``
    exactly. ``start``/``end``: inclusive, aware datetimes. ``after_id``/
    ``before_id``: exclusive bounds on ids (XEP-0313's extended filters),
    ``ids``: only these. ``after``/``before``: the RSM page bounds, ids that
    must be in the archive (else :class:`UnknownId`); ``before`` set pages
    backward (``""``: the last page). ``max``: items per page (>= 0).
    ``max_bytes``: the page also stops before the item that would take its
    stanzas past that many bytes (at least one item is kept), and is then
    not complete: checked as the page is built, so a backend that parses
    lazily (fs) parses no more than it returns.
    """

    with_jid: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    after_id: str | None = None
    before_id: str | None = None
    ids: tuple[str, ...] | None = None
    after: str | None = None
    before: str | None = None
    max: int = 50
    max_bytes: int | None = None


@dataclass(frozen=True)
class ArchivePage:
    """A page of a query's result.

    ``items`` are always oldest first. ``complete``: the page reaches the
    end of the result in the direction of paging (its newest items paging
    forward, its oldest paging backward). ``count``: how many messages match
    the filters (the whole result, not the page), or None where the backend
    cannot tell cheaply (fs: unless the page is the whole result; sql: unless
    the page is the whole result or ``max`` is 0; memory always counts).
    ``first``/``last``: the ids of the first and last items (None if empty).
    """

    items: tuple[ArchivedMessage, ...]
    complete: bool
    count: int | None
    first: str | None
    last: str | None


def micros(stamp: datetime) -> int:
    """Microseconds since the epoch of an aware datetime; ValueError if naive."""
    if stamp.tzinfo is None or stamp.utcoffset() is None:
        raise ValueError(f"{stamp!r} has no time zone")
    delta = stamp - EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def new_id(stamp: datetime) -> str:
    """A new stanza-id for a message archived at ``stamp``: 16 hex digits of
    its UTC time in microseconds, then 8 random ones. Ids sort by time;
    two of one microsecond differ (with odds 2**-32 of a clash, which the
    sql store's key refuses) but their order is random. The random digits
    need not be secret (an archive is its owner's alone), only unlikely to
    repeat: the random module's generator (reseeded in a forked worker),
    not a getrandom(2) system call per id."""
    return f"{micros(stamp):016x}{random.getrandbits(32):08x}"


def id_now() -> str:
    """:func:`new_id` of now, without making a datetime (twice per message)."""
    return f"{time.time_ns() // 1000:016x}{random.getrandbits(32):08x}"


def id_micros(id: str) -> int | None:
    """The time of a well-formed id in microseconds; None for any other string."""
    return int(id[:16], 16) if ID_RE.match(id) else None


def check_owner(owner: JID) -> str:
    """The owner as its bare JID text; ValueError for a JID without a localpart."""
    if not isinstance(owner, JID):
        raise TypeError(f"an archive owner is a JID, not {type(owner).__name__}")
    if not owner.local:
        raise ValueError(f"{owner} is not a user JID")
    return str(owner.bare)


def check_message(msg: ArchivedMessage) -> ArchivedMessage:
    """``msg`` if it can be stored: a well-formed id whose time is its
    stamp, str JIDs, bytes stanza; ValueError or TypeError otherwise."""
    if not isinstance(msg, ArchivedMessage):
        raise TypeError(f"expected an ArchivedMessage, not {type(msg).__name__}")
    if not isinstance(msg.id, str) or id_micros(msg.id) is None:
        raise ValueError(f"archive id {msg.id!r} is not 24 lower-case hex digits (new_id)")
    if not isinstance(msg.stamp, datetime) or id_micros(msg.id) != micros(msg.stamp):
        raise ValueError(f"archive id {msg.id} is not of its stamp {msg.stamp!r}")
    for field in ("peer", "peer_bare"):
        if not isinstance(getattr(msg, field), str):
            raise TypeError(f"{field} must be str")
    if not isinstance(msg.stanza, bytes):
        raise TypeError(f"stanza must be bytes, not {type(msg.stanza).__name__}")
    return msg


@dataclass(frozen=True)
class Plan:
    """A query reduced to what every backend does: ids in (lo, hi), both
    exclusive (None: unbounded), matching ``peer``/``peer_bare`` and
    ``ids``; ``limit`` (max + 1) of them from the low end (``forward``) or
    the high end. ``filter_lo``/``filter_hi`` are the bounds without the
    RSM ones: those of the whole result, for ``count``."""

    lo: str | None
    hi: str | None
    filter_lo: str | None
    filter_hi: str | None
    peer: str | None
    peer_bare: str | None
    ids: frozenset[str] | None
    forward: bool
    limit: int
    max_bytes: int | None = None

    def passes(self, msg: ArchivedMessage) -> bool:
        """Whether ``msg`` passes the filters other than the id range."""
        return ((self.peer is None or msg.peer == self.peer)
                and (self.peer_bare is None or msg.peer_bare == self.peer_bare)
                and (self.ids is None or msg.id in self.ids))

    @property
    def rsm(self) -> bool:
        """Whether the page has an RSM bound (so it is not the result's start or end)."""
        return (self.lo, self.hi) != (self.filter_lo, self.filter_hi)


def _max(a: str | None, b: str | None) -> str | None:
    return b if a is None else a if b is None else max(a, b)


def _min(a: str | None, b: str | None) -> str | None:
    return b if a is None else a if b is None else min(a, b)


def plan(q: ArchiveQuery) -> Plan:
    """Check ``q`` and reduce it to a :class:`Plan` (ValueError, TypeError).
    The RSM ids are not looked up here: each backend checks them."""
    if not isinstance(q, ArchiveQuery):
        raise TypeError(f"expected an ArchiveQuery, not {type(q).__name__}")
    if not isinstance(q.max, int) or isinstance(q.max, bool) or q.max < 0:
        raise ValueError(f"max must be an int >= 0, not {q.max!r}")
    if q.max_bytes is not None and (not isinstance(q.max_bytes, int)
                                    or isinstance(q.max_bytes, bool) or q.max_bytes < 1):
        raise ValueError(f"max_bytes must be None or an int >= 1, not {q.max_bytes!r}")
    for name in ("with_jid", "after_id", "before_id", "after", "before"):
        value = getattr(q, name)
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{name} must be str or None")
    lo, hi = q.after_id, q.before_id
    # start/end are inclusive; as exclusive bounds, the 16 digits of a time
    # alone: every id of that microsecond sorts after them.
    if q.start is not None:
        lo = _max(lo, f"{micros(q.start):016x}")
    if q.end is not None:
        hi = _min(hi, f"{micros(q.end) + 1:016x}")
    peer = peer_bare = None
    if q.with_jid is not None:
        jid = JID.parse(q.with_jid)
        if jid.is_bare:
            peer_bare = str(jid)
        else:
            peer, peer_bare = str(jid), str(jid.bare)
    ids = None
    if q.ids is not None:
        if not all(isinstance(i, str) for i in q.ids):
            raise TypeError("ids must be str")
        ids = frozenset(q.ids)
    page_lo = _max(lo, q.after)
    page_hi = _min(hi, q.before or None)
    return Plan(page_lo, page_hi, lo, hi, peer, peer_bare, ids,
                forward=q.before is None, limit=q.max + 1, max_bytes=q.max_bytes)


def make_page(found: Iterable[ArchivedMessage], p: Plan, count: int | None) -> ArchivePage:
    """The page from the matches in the direction of paging (at most
    ``p.limit`` are taken: one more than max tells whether it is complete;
    with ``p.max_bytes``, none past the one that would exceed it, the page
    then not complete)."""
    items: list[ArchivedMessage] = []
    it: Iterator[ArchivedMessage] = iter(found)
    size = 0
    complete = True
    for msg in it:
        size += len(msg.stanza)
        if len(items) == p.limit - 1 or (p.max_bytes is not None and items
                                         and size > p.max_bytes):
            complete = False            # one more than the page holds
            break
        items.append(msg)
    if not p.forward:
        items.reverse()
    return ArchivePage(tuple(items), complete, count,
                       items[0].id if items else None, items[-1].id if items else None)


class ArchiveStore(abc.ABC):
    """The users' message archives (see the module docstring).

    ``owner`` is the archive's bare JID (ValueError without a localpart).
    Each call is atomic as seen by the others of this store, except
    :meth:`append_many`, whose entries are each atomic.
    """

    name: ClassVar[str]           # as registered

    @abc.abstractmethod
    async def append(self, owner: JID, msg: ArchivedMessage) -> None:
        """Archive ``msg`` (:func:`check_message`) for ``owner``. An id is
        appended once (:func:`new_id` makes them unique): a second message
        of one id is refused by memory (ValueError) and sql (StorageError),
        while fs, which never reads a day file to append, keeps both."""

    async def append_many(self, entries: Sequence[tuple[JID, ArchivedMessage]]) -> None:
        """Archive each ``(owner, msg)`` of ``entries``, as :meth:`append`
        would one after the other, in fewer round trips (the MAM module's
        :class:`~vinespy.storage.archive.batch.Batcher` gives a loop
        iteration's worth of messages at once). Atomic per entry, not per
        batch: on failure some entries may have been stored and others not.
        Every entry is checked (ValueError, TypeError) before any is
        written. The default loops over :meth:`append`."""
        for owner, msg in entries:
            check_owner(owner)
            check_message(msg)
        for owner, msg in entries:
            await self.append(owner, msg)

    def append_now(self, owner: JID, msg: ArchivedMessage) -> bool:
        """:meth:`append` on the calling thread, at once, where the store can
        do it without waiting (nothing that may block for long: a page-cache
        write, no lock another holds): True once stored, False (nothing
        written) for :meth:`append` or :meth:`append_many` to do it. Raises
        as they do. The default: never (sql, any store whose writes wait)."""
        return False

    async def sync(self) -> None:
        """Make every append that completed before this call durable
        against an OS crash or power loss. A store that commits each write
        durably (memory has nothing to lose, sql commits) needs nothing:
        the default. The fs store defers its fsyncs to here (group commit,
        see :class:`~vinespy.storage.archive.fs.FsArchive`)."""

    @abc.abstractmethod
    async def query(self, owner: JID, q: ArchiveQuery) -> ArchivePage:
        """A page of ``owner``'s messages matching ``q``; UnknownId for an
        RSM ``after``/``before`` id not in the archive."""

    @abc.abstractmethod
    async def remove_before(self, cutoff: datetime, limit: int,
                            domains: Collection[str] | None = None) -> int:
        """Retention: remove the messages of every owner (of ``domains``
        only, if given: hosts with their own retention may share a store)
        stamped before ``cutoff``, oldest first, at most about ``limit`` per
        call (each backend says how exactly); how many were removed. A
        second call never removes one twice, so callers loop until it
        answers 0."""

    @abc.abstractmethod
    async def trim(self, owner: JID, keep: int) -> int:
        """Keep only ``owner``'s newest ``keep`` messages (>= 0); how many
        were removed."""

    @abc.abstractmethod
    async def delete_owner(self, owner: JID) -> None:
        """Remove ``owner``'s whole archive (account deletion)."""

    async def open(self) -> None:
        """Get ready (connect, create the schema); the default needs nothing."""

    async def close(self) -> None:
        """Release resources (the fs store first syncs); the default has none."""


def check_count(value: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{what} must be an int >= 0, not {value!r}")
    return value


_STORES: Registry[ArchiveStore] = Registry("archive storage", {
    name: f"{__name__}.{name}" for name in ("fs", "memory", "sql")})
register = _STORES.register


def open_archive(kind: str, **options: Any) -> ArchiveStore:
    """The archive store ``kind`` built from ``options``:

    * ``"memory"``: :class:`~vinespy.storage.archive.memory.MemoryArchive` (no options);
    * ``"fs"``: :class:`~vinespy.storage.archive.fs.FsArchive` (``dir``: its directory);
    * ``"sql"``: :class:`~vinespy.storage.archive.sql.SqlArchive` (``storage``:
      the host's :class:`~vinespy.storage.sql.SqlStorage`; ``owned``: close it too).

    StorageError for an unknown kind; TypeError for wrong options.
    """
    return _STORES.open(kind, options)


def fs_dir(host: HostConfig) -> Path:
    """Where a host on fs storage keeps its archives: ``archive`` in its
    storage directory (``[host.storage] dir``)."""
    return Path(host.storage.options["dir"]) / "archive"


def archive_for(config: Config, host: HostConfig,
                storage: Storage | None = None) -> ArchiveStore:
    """The archive store of ``host``, the same for the server and the
    operator's commands:

    * ``backend = "sql"``: its database, through ``storage`` (the server's,
      not closed with the store) or else a SqlStorage of its own (closed
      with the store); in a cluster every node shares it;
    * ``backend = "fs"`` with a ``dir``: ``<dir>/archive`` (a cluster's
      nodes share it only if they share the directory);
    * else (memory, null, ...): memory.

    ``config`` is taken for the same signature as the pubsub store's
    ``store_for`` (a cluster changes nothing here yet).
    """
    if host.storage.backend == "sql":
        if storage is None:
            return open_archive("sql", storage=open_storage("sql", host.storage.options),
                                owned=True)
        return open_archive("sql", storage=storage)
    if host.storage.backend == "fs" and "dir" in host.storage.options:
        return open_archive("fs", dir=fs_dir(host))
    return open_archive("memory")
