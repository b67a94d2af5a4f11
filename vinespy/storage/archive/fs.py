"""``fs``: the archives as append-only files, one per owner and UTC day."""

from __future__ import annotations

import asyncio
import binascii
import bisect
import ctypes
import fcntl
import os
import shutil
import threading
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Collection, Iterator, Sequence, TypeVar

from ...fileio import atomic_write, fsync_dir, make_dirs
from ...jid import JID
from .. import StorageError
from ..fs.names import encode_name
from . import (ArchivedMessage, ArchivePage, ArchiveQuery, ArchiveStore, Plan, UnknownId,
               check_count, check_message, check_owner, make_page, micros, plan,
               register)
from .days import (DAY_RE, BadLine, Day, bound_day, day_file, day_of, parse_record,
                   record_line)

T = TypeVar("T")
KNOWN_DIRS_MAX = 10_000     # owner directories remembered as existing
SYNCFS_OVER = 16            # files and directories to sync beyond which one syncfs does it
_APPEND = os.O_RDWR | os.O_APPEND
DAY_US = 86_400_000_000     # microseconds in a day
# One append_many's writes: (owner dir, day file, the lines), in the order given.
Group = tuple[str, str, bytes]


def _syncfs(dir: Path) -> bool:
    """syncfs(2) of the file system holding ``dir`` (Linux): one call makes
    every file written there durable, ~1 ms of CPU where 200 fsyncs took
    ~40 ms. False where the C library has none; OSError if it fails."""
    global _SYNCFS
    if _SYNCFS is None:
        libc = ctypes.CDLL(None, use_errno=True)
        _SYNCFS = getattr(libc, "syncfs", False)
    if not _SYNCFS:
        return False
    fd = os.open(dir, os.O_RDONLY)
    try:
        if _SYNCFS(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs: {os.strerror(err)}")
    finally:
        os.close(fd)
    return True


_SYNCFS: Any = None         # libc's syncfs once looked up; False: none


def _day_file(id: str) -> str | None:
    """The day file of ``id``, or None for a string no record can have as id."""
    try:
        return day_file(id)
    except ValueError:
        return None


@register("fs")
class FsArchive(ArchiveStore):
    """Archives as files under ``dir`` (the host's data directory +
    ``/archive``)::

        <dir>/<domain>/<local>/YYYY-MM-DD.jsonl     one owner's messages of one UTC day

    ``<domain>`` and ``<local>`` encoded as the fs storage names its
    directories (:func:`~vinespy.storage.fs.names.encode_name`). A record is
    one JSON line (:func:`record_line`); an id's first 16 digits give its day,
    so its file. Records of a day are in the order they were appended (a
    reader sorts a day by id).

    A query lists the owner's day names, keeps the days its id bounds (and
    ``ids``) allow and reads them one at a time in the direction of paging,
    stopping once the page is full: a page of 50 from a long archive reads
    one or two day files (``files_read`` counts them), never the archive.
    Known limit: there is no index by peer, so a ``with`` query reads day
    files until it found a page of that peer's messages: for a contact met
    rarely (or never) that is every day file of the bounds, up to the whole
    archive (one query of a 100,000-message archive reads it all). Bound the
    query by time (``start``/``end``) or use the sql store (its index
    ``(owner, peer_bare, id)``) where such queries are common.
    ``count`` is None unless the page is the whole result. A day file is
    read whole (one owner's messages of one day) but only its ids are
    taken (sliced from where :func:`record_line` puts them, not parsed);
    a record is parsed when the page reaches it.

    An append is one ``write`` of all the lines a batch (:meth:`append_many`)
    has for a day file, to the file opened O_APPEND under an exclusive
    flock on that file; a crash mid-write leaves a last line without its
    newline, which readers skip and the next append cuts off. Every other
    change of a day file (retention, trim) takes the same flock and then
    replaces the file atomically or unlinks it; an appender checks, once it
    holds the lock, that the path still names the file it opened (else it
    opens again), so no append lands in a replaced file. Readers take no
    lock. So several processes (nodes sharing the directory, the operator's
    commands) may write at once. OSError becomes StorageError, a corrupt
    record raises StorageError naming the file.

    Durability is a group commit: an append returns once the kernel has
    its bytes (a killed process loses nothing), and the files written (and
    the directories where a day file was created) are fsynced by
    :meth:`sync`, which the MAM module's batcher calls every second or so,
    and by :meth:`close`: an OS crash or a power loss loses at most the
    last ~second of archive, never a record already synced, and leaves at
    worst a torn last line (skipped, then cut off). An fsync per append
    cost ~400 µs of a disk's time and ~140 µs of CPU each, twice per
    message. A sync of more than :data:`SYNCFS_OVER` files is one
    ``syncfs(2)`` of the directory's file system where the C library has
    it (Linux): 200 files' fsyncs took ~40 ms of CPU, one syncfs ~1 ms
    (it also flushes what other programs wrote there).

    Where the appends run: a worker-thread call costs ~150 µs of CPU (the
    wake-ups), more than the writes. So an append of an owner whose
    directory is known to exist (a bounded set) is written on the event
    loop when that cannot wait: open, ``flock(LOCK_NB)``, the checks and
    one ``write`` to the page cache (~20 µs a file, no fsync). Anything
    that could wait goes to one worker-thread call for the rest of the
    batch: a day file whose lock another writer holds (retention, another
    node), a directory to create, a replaced file. ``inline=False`` sends
    every batch to the thread (for a directory on a network file system,
    where even an open may wait). Queries, retention, trims and syncs
    always run in a worker thread.

    ``remove_before`` walks the owners: whole day files before the cutoff's
    day are unlinked, the cutoff's day is rewritten without the older
    records. It stops after the owner with whom it reached ``limit`` (so it
    may remove up to that owner's old days more) and the next call goes on
    from the next owner, round to where it started: each call lists the
    owners' names but reads only the days of those it cleans, and 0 means a
    whole round found nothing.
    """

    def __init__(self, dir: str | os.PathLike[str], inline: bool = True) -> None:
        self.dir = Path(dir)
        self.inline = inline
        self.files_read = 0         # day files read (tests count them)
        self._resume: Path | None = None     # the owner the next retention call starts at
        # Shared by the loop and worker threads, under _lock: owner
        # directories known to exist (oldest first), and what the next
        # sync() fsyncs: day files written, directories where one was created.
        self._lock = threading.Lock()
        self._known: dict[str, None] = {}
        self._dirty: set[str] = set()
        self._dirty_dirs: set[str] = set()
        # Names remembered (the loop's alone): owner -> directory, day -> file.
        self._odirs: dict[JID, str] = {}
        self._days_by_number: dict[int, str] = {}

    def owner_dir(self, owner: JID) -> Path:
        check_owner(owner)
        return self.dir / encode_name(owner.domain) / encode_name(owner.local)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.to_thread(fn, *args)
        except OSError as exc:
            raise StorageError(f"archive I/O failed: {exc}") from exc

    # -- blocking helpers ----------------------------------------------------

    @staticmethod
    def _days(odir: Path) -> list[str]:
        """The owner's day file names, oldest first."""
        try:
            return sorted(n for n in os.listdir(odir) if DAY_RE.match(n))
        except FileNotFoundError:
            return []

    def _read(self, path: Path) -> Day:
        """A day file's records sorted by id (:class:`~.days.Day`); a last
        line without its newline (an append cut short) is skipped; empty
        for no file."""
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return Day(b"")
        self.files_read += 1
        try:
            return Day(data)
        except BadLine as exc:
            raise StorageError(f"corrupt {path}: {exc}") from exc

    @staticmethod
    def _parse(path: Path, day: Day, at: int) -> ArchivedMessage:
        try:
            return parse_record(day.raws[at], day.ids[at])
        except (ValueError, binascii.Error) as exc:
            raise StorageError(f"corrupt {path}: line {day.lines[at]}: {exc}") from exc

    @contextmanager
    def _locked(self, path: str | Path, create: bool) -> Iterator[int | None]:
        """``path`` opened for appending and flocked, the lock taken on the
        file the path names once held; None if it does not exist (and not ``create``)."""
        flags = _APPEND | (os.O_CREAT if create else 0)
        while True:
            try:
                fd = os.open(path, flags, 0o600)
            except FileNotFoundError:
                if create:
                    raise
                yield None
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if self._same(path, fd) is not None:
                    yield fd
                    return
            finally:
                os.close(fd)            # closing drops the flock

    # -- appends ---------------------------------------------------------------

    def _groups(self, entries: Sequence[tuple[JID, ArchivedMessage]]) -> list[Group]:
        """The entries checked and gathered per day file, lines in order."""
        lines: dict[str, tuple[str, list[bytes]]] = {}
        for owner, msg in entries:
            odir = self._odir(owner)
            path = f"{odir}/{self._day_file(check_message(msg).id)}"
            lines.setdefault(path, (odir, []))[1].append(record_line(msg))
        return [(odir, path, b"".join(ls)) for path, (odir, ls) in lines.items()]

    def _odir(self, owner: JID) -> str:
        """:meth:`owner_dir` as text, remembered (encoding names costs more
        than the write)."""
        odir = self._odirs.get(owner)
        if odir is None:
            odir = self._odirs[owner] = str(self.owner_dir(owner))
            while len(self._odirs) > KNOWN_DIRS_MAX:
                del self._odirs[next(iter(self._odirs))]
        return odir

    def _day_file(self, id: str) -> str:
        """:func:`day_file` of a checked id, remembered per day."""
        number = int(id[:16], 16) // DAY_US
        name = self._days_by_number.get(number)
        if name is None:
            if len(self._days_by_number) > 64:
                self._days_by_number.clear()
            name = self._days_by_number[number] = day_file(id)
        return name

    def _write_now(self, group: Group) -> bool:
        """Write ``group`` on the calling (loop) thread if nothing has to
        wait: False (nothing written) for the worker thread to do it."""
        odir, path, data = group
        if odir not in self._known:
            return False
        try:
            fd = os.open(path, _APPEND | os.O_CREAT, 0o600)
        except FileNotFoundError:       # the owner was deleted meanwhile
            with self._lock:
                self._known.pop(odir, None)
            return False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            size = self._same(path, fd)
            if size is None:
                return False
            self._write(fd, odir, path, data, size)
            return True
        finally:
            os.close(fd)

    def _write_all(self, groups: list[Group]) -> None:
        """The worker thread's part of an append_many: may wait for locks."""
        for odir, path, data in groups:
            if odir not in self._known:
                make_dirs(self.dir, Path(odir))
                with self._lock:
                    self._known[odir] = None
                    while len(self._known) > KNOWN_DIRS_MAX:
                        del self._known[next(iter(self._known))]
            with self._locked(path, create=True) as fd:
                assert fd is not None
                self._write(fd, odir, path, data, os.fstat(fd).st_size)

    def _write(self, fd: int, odir: str, path: str, data: bytes, size: int) -> None:
        """Append ``data`` to the locked day file ``fd`` of ``size`` bytes,
        cutting off a torn last line first; remember the file (and a new
        file's directory) for the next sync."""
        if size and os.pread(fd, 1, size - 1) != b"\n":
            os.ftruncate(fd, self._last_newline(fd, size))   # a torn append
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        with self._lock:
            self._dirty.add(path)
            if size == 0:
                self._dirty_dirs.add(odir)

    @staticmethod
    def _same(path: str | Path, fd: int) -> int | None:
        """The size of the file open as ``fd`` if ``path`` still names it, else None."""
        try:
            st = os.fstat(fd)
            return st.st_size if os.stat(path).st_ino == st.st_ino else None
        except FileNotFoundError:
            return None

    def _sync(self) -> None:
        with self._lock:
            files, dirs = self._dirty, self._dirty_dirs
            self._dirty, self._dirty_dirs = set(), set()
        if len(files) + len(dirs) > SYNCFS_OVER and _syncfs(self.dir):
            return
        for path in sorted(files):
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue                # unlinked by retention or a trim
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        for odir in sorted(dirs):
            try:
                fsync_dir(Path(odir))
            except FileNotFoundError:
                continue                # the owner was deleted

    @staticmethod
    def _last_newline(fd: int, size: int) -> int:
        """The length of the file up to and with its last newline (0 if none)."""
        pos = size
        while pos > 0:
            start = max(0, pos - 65536)
            chunk = os.pread(fd, pos - start, start)
            at = chunk.rfind(b"\n")
            if at >= 0:
                return start + at + 1
            pos = start
        return 0

    def _rewrite(self, path: Path, keep: Callable[[str], bool]) -> int:
        """Keep only the records of the day file whose id ``keep`` accepts
        (the file unlinked if none is), as they were; how many were removed."""
        with self._locked(path, create=False) as fd:
            if fd is None:
                return 0
            records = self._read(path)
            kept = list(records.kept(keep))
            if len(kept) == len(records):
                return 0
            if kept:
                atomic_write(path, b"".join(kept), 0o600)
            else:
                os.unlink(path)
                fsync_dir(path.parent)
            return len(records) - len(kept)

    # -- queries ---------------------------------------------------------------

    def _query(self, odir: Path, p: Plan, rsm: list[str]) -> ArchivePage:
        names = self._days(odir)
        cache: dict[str, Day] = {}

        def day(name: str) -> Day:
            if name not in cache:
                cache[name] = self._read(odir / name)
            return cache[name]

        for id in rsm:
            if (_day_file(id) or "") not in names or not day(day_file(id)).has(id):
                raise UnknownId(id)
        if p.ids is not None:
            wanted = {_day_file(i) for i in p.ids}
            names = [n for n in names if n in wanted]
        first, last = bound_day(p.lo, "0"), bound_day(p.hi, "f")
        names = [n for n in names if (first is None or n >= first)
                 and (last is None or n <= last)]
        if not p.forward:
            names.reverse()
        found = (m for n in names for m in self._walk(odir / n, day(n), p) if p.passes(m))
        page = make_page(found, p, None)
        if page.complete and not p.rsm:
            return ArchivePage(page.items, True, len(page.items), page.first, page.last)
        return page

    def _walk(self, path: Path, day: Day, p: Plan) -> Iterator[ArchivedMessage]:
        """The day's messages with ids in (p.lo, p.hi) and in p.ids, in the
        direction of paging, each parsed as it is reached."""
        wanted = None if p.ids is None else {i.encode() for i in p.ids}
        for at in day.span(p.lo, p.hi, p.forward):
            if wanted is None or day.ids[at] in wanted:
                yield self._parse(path, day, at)

    def _owners(self, domains: Collection[str] | None = None) -> list[Path]:
        """Every owner's directory (of ``domains`` if given), from where the
        last retention call stopped round to just before it."""
        found = []
        named = None if domains is None else {encode_name(d) for d in domains}
        for domain in sorted(os.listdir(self.dir)) if self.dir.is_dir() else ():
            ddir = self.dir / domain
            if (not domain.startswith(".") and ddir.is_dir()
                    and (named is None or domain in named)):
                found += [ddir / local for local in sorted(os.listdir(ddir))
                          if not local.startswith(".")]
        at = 0 if self._resume is None else bisect.bisect_left(found, self._resume)
        return found[at:] + found[:at]

    def _remove_before(self, cutoff: datetime, limit: int,
                       domains: Collection[str] | None) -> int:
        bound = f"{micros(cutoff):016x}"
        cut_day = f"{day_of(micros(cutoff))}.jsonl"
        removed = 0
        for odir in self._owners(domains):
            if removed >= limit:
                self._resume = odir         # the next call starts here
                return removed
            for name in self._days(odir):
                if name > cut_day:
                    break
                removed += self._rewrite(odir / name, lambda id: id >= bound)
        self._resume = None
        return removed

    def _trim(self, odir: Path, keep: int) -> int:
        newer = 0
        removed = 0
        for name in reversed(self._days(odir)):
            path = odir / name
            if newer >= keep:
                removed += self._rewrite(path, lambda id: False)
                continue
            records = self._read(path)
            if newer + len(records) > keep:
                # the boundary day: keep its newest (keep - newer) as read now
                oldest_kept = records.ids[len(records) - (keep - newer)].decode("ascii")
                removed += self._rewrite(path, lambda id: id >= oldest_kept)
            newer += len(records)
        return removed

    def _delete(self, odir: Path) -> None:
        if not odir.is_dir():
            return
        tomb = odir.with_name(f".{odir.name}.deleted.{os.urandom(4).hex()}")
        os.rename(odir, tomb)
        fsync_dir(odir.parent)
        shutil.rmtree(tomb)

    # -- the ArchiveStore interface ---------------------------------------------

    async def append(self, owner: JID, msg: ArchivedMessage) -> None:
        await self.append_many(((owner, msg),))

    def append_now(self, owner: JID, msg: ArchivedMessage) -> bool:
        """The entry's day file written on the loop, as :meth:`append_many`
        does when that cannot wait (see "Where the appends run"); False,
        nothing written, where it could (an owner directory not known to
        exist, a lock held by another, a replaced file) or ``inline`` is off."""
        if not self.inline:
            return False
        (group,) = self._groups(((owner, msg),))
        try:
            return self._write_now(group)
        except OSError as exc:
            raise StorageError(f"archive I/O failed: {exc}") from exc

    async def append_many(self, entries: Sequence[tuple[JID, ArchivedMessage]]) -> None:
        groups = self._groups(entries)
        try:
            rest = [g for g in groups if not (self.inline and self._write_now(g))]
        except OSError as exc:
            raise StorageError(f"archive I/O failed: {exc}") from exc
        if rest:
            await self._run(self._write_all, rest)

    async def sync(self) -> None:
        if self._dirty or self._dirty_dirs:
            await self._run(self._sync)

    async def close(self) -> None:
        await self.sync()

    async def query(self, owner: JID, q: ArchiveQuery) -> ArchivePage:
        p = plan(q)
        rsm = [id for id in (q.after, q.before or None) if id is not None]
        return await self._run(self._query, self.owner_dir(owner), p, rsm)

    async def remove_before(self, cutoff: datetime, limit: int,
                            domains: Collection[str] | None = None) -> int:
        micros(cutoff)
        return await self._run(self._remove_before, cutoff, check_count(limit, "limit"),
                               None if domains is None else frozenset(domains))

    async def trim(self, owner: JID, keep: int) -> int:
        odir = self.owner_dir(owner)
        return await self._run(self._trim, odir, check_count(keep, "keep"))

    async def delete_owner(self, owner: JID) -> None:
        odir = self.owner_dir(owner)
        with self._lock:
            self._known.pop(str(odir), None)
        await self._run(self._delete, odir)
