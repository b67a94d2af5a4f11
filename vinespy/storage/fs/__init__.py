"""``backend = "fs"``: the embedded default, one directory per user.

Layout under ``dir``::

    <domain>/<local>/user.json              credentials (base64), roster, roster version
    <domain>/<local>/roster.log             roster changes since user.json was written
    <domain>/<local>/vcard.xml              vcard-temp (XEP-0054)
    <domain>/<local>/private/<ns>.<name>.xml  private XML storage (XEP-0049); when
                                            that name is too long, <ns prefix>~~<SHA-256>.xml
    <domain>/<local>/<store>.json           a keyval store's value (``[a-z0-9_]+``;
                                            ``user`` is reserved for user.json)

File names (:mod:`~vinespy.storage.fs.names`): every byte of the UTF-8 name
outside ``[a-z0-9_-]`` is written ``%XX`` (upper-case hex), ``.`` included,
so no name can be ``.``, ``..``, hold a separator, differ only in case or
start with a dot; dot-names are left for temporary files and tombstones.
Names longer than 200 characters once encoded (RFC 7622 allows 1023-byte
parts; file systems allow 255) become a readable prefix, ``~`` and the
SHA-256 of the name: no longer reversible, but ``user.json`` records the JID
and a mismatch is refused.

Writes are atomic: a temporary file in the same directory is written,
flushed, fsync'ed and renamed over the old one (``os.replace``), then the
directory is fsync'ed; a crash at any point leaves the old file or the new
one. Directories are created 0700, files 0600. All blocking I/O (and the
encoding and decoding of user.json, :mod:`~vinespy.storage.fs.records`) runs
in a worker thread.

Roster changes (:meth:`FsStorage.update_roster`) are not written by
rewriting user.json, whose size grows with the roster: each is one line
appended to ``roster.log`` and fsync'ed (``{"seq", "version", "set",
"del"}``: the records it replaces or deletes, the new roster version). Lines
are numbered; user.json records (``"journal"``) the last number it already
includes, and reading a user applies, in order, the lines numbered after it.
When the journal grows past the size of user.json (or 64 KiB), the call that
appended folds it in: user.json is rewritten with the whole roster and the
journal removed, so each change costs amortized O(1) bytes written and one
fsync whatever the roster's size. :meth:`~FsStorage.save_user` folds it in
the same way. A crash leaves either an unfinished last line, which is
ignored (and cut off by the next append), or, between the rewrite and the
removal, lines user.json already includes, which their numbers skip.

Reading a user parses user.json and the journal once: the result is kept in
memory (up to 50,000 roster records over all users, least recently used
dropped first) with user.json's inode, mtime and size, and the point the
journal was read to. The next read stats both files and, if user.json is
the same, reads only the lines the journal gained (written by this process
or another node sharing the directory); anything else is parsed anew. So
:meth:`~FsStorage.find_contact` and :meth:`~FsStorage.update_roster`, the
calls of a roster change, cost the same for 10 items as for 10,000.

An unreadable or corrupt file raises StorageError and is left as it is;
every OSError becomes StorageError.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
from pathlib import Path
import threading
from collections import OrderedDict
from typing import Any, AsyncIterator, Callable, Mapping, TypeVar

from lxml import etree

from ...fileio import atomic_write, fsync_dir, make_dirs, read_if_present
from ...jid import JID, JIDError
from .. import (Contact, ContactLookup, Storage, StorageError, User, check_store, json_value,
                register, value_from_json, xml_bytes, xml_element)
from . import listing
from .names import encode_name, fragment_file_name
from .records import (JOURNAL, Parsed, copy_contact, copy_user, entry_from_json, entry_to_json,
                      journal_entries, user_from_json, user_to_json)

log = logging.getLogger(__name__)

T = TypeVar("T")

# The journal is folded into user.json once it is larger than this and than user.json.
_JOURNAL_MIN = 64 * 1024

# Roster records kept parsed in memory, over all users; least recently used go first.
_CACHE_RECORDS = 50_000
# User directories :meth:`FsStorage.owners` examines per worker-thread call.
_LIST_BATCH = 256


def _journal_tail(path: Path) -> tuple[int | None, int, int]:
    """(number of the last complete line or None, the offset where that line
    ends, the file's size), reading only the end of the file."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return None, 0, 0
    with f:
        size = os.fstat(f.fileno()).st_size
        buf, pos = b"", size
        while pos > 0:
            step = min(pos, 65536)
            pos -= step
            f.seek(pos)
            buf = f.read(step) + buf
            end = buf.rfind(b"\n")
            start = buf.rfind(b"\n", 0, max(end, 0)) + 1
            if end >= 0 and (start > 0 or pos == 0):
                return entry_from_json(buf[start:end]).seq, pos + end + 1, size
        return None, 0, size


# --- the backend -------------------------------------------------------------


@register("fs")
class FsStorage(Storage):
    """Accounts, rosters, vCards, private XML and keyval stores as files under ``dir``."""

    def __init__(self, dir: str | Path) -> None:
        self.dir = Path(dir)
        # Users as last parsed, most recently used last (see _parsed).
        self._cache: OrderedDict[Path, Parsed] = OrderedDict()
        self._lock = threading.Lock()

    # paths

    def user_dir(self, jid: JID) -> Path:
        """``<dir>/<domain>/<local>`` for ``jid``'s bare JID; ValueError without a localpart."""
        if not jid.local or not jid.domain:
            raise ValueError(f"{jid} is not a user JID")
        return self.dir / encode_name(jid.domain) / encode_name(jid.local)

    def _fragment_path(self, jid: JID, namespace: str, name: str) -> Path:
        return self.user_dir(jid) / "private" / fragment_file_name(namespace, name)

    def _store_path(self, jid: JID, store: str) -> Path:
        return self.user_dir(jid) / f"{check_store(store)}.json"

    # blocking helpers, run in a worker thread

    def _mkdirs(self, path: Path) -> None:
        make_dirs(self.dir, path)

    def _write(self, path: Path, data: bytes) -> None:
        """Replace ``path`` with ``data`` atomically and durably (file mode 0600)."""
        self._mkdirs(path.parent)
        atomic_write(path, data, 0o600)

    def _remove(self, path: Path) -> None:
        """Delete ``path`` durably if it exists."""
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        fsync_dir(path.parent)

    def _get(self, path: Path) -> Any | None:
        data = read_if_present(path)
        return value_from_json(data, f"keyval {path}") if data is not None else None

    def _find_user(self, jid: JID) -> User | None:
        return self._parsed(self.user_dir(jid), jid.bare, lambda p: copy_user(p.user))

    def _find_contact(self, jid: JID, contact: JID) -> ContactLookup | None:
        def lookup(p: Parsed) -> ContactLookup:
            record = p.user.roster.get(contact)
            return ContactLookup(copy_contact(record) if record is not None else None,
                                 p.user.roster_version, p.items, p.pending)
        return self._parsed(self.user_dir(jid), jid.bare, lookup)

    def _load_user(self, user_dir: Path, jid: JID) -> tuple[User, int] | None:
        """The user with its journal applied, and the number of the journal's
        last line (0 if none); None without user.json."""
        return self._parsed(user_dir, jid, lambda p: (copy_user(p.user), p.last))

    def _parsed(self, user_dir: Path, jid: JID, use: Callable[[Parsed], T]) -> T | None:
        """``use(parsed user)`` under the cache lock, the user brought up to date:
        from the cache if user.json is the file it was parsed from (inode,
        mtime, size), reading only what the journal gained since; else parsed
        anew. None without user.json."""
        try:
            st = os.stat(user_dir / "user.json")
        except FileNotFoundError:
            self._forget(user_dir)
            return None
        sig = (st.st_ino, st.st_mtime_ns, st.st_size)
        try:
            with self._lock:
                p = self._cache.get(user_dir)
                if p is not None and p.sig == sig and p.user.jid == jid and \
                        self._catch_up(p, user_dir / JOURNAL):
                    self._cache.move_to_end(user_dir)
                    return use(p)
            p = self._parse(user_dir, jid)
            if p is None:
                return None
            with self._lock:
                self._keep(user_dir, p)
                return use(p)
        except (ValueError, TypeError, KeyError, AttributeError, JIDError) as exc:
            self._forget(user_dir)
            raise StorageError(f"corrupt {user_dir}: {exc}") from exc

    def _parse(self, user_dir: Path, jid: JID) -> Parsed | None:
        try:
            f = open(user_dir / "user.json", "rb")
        except FileNotFoundError:
            return None
        with f:
            st = os.fstat(f.fileno())
            data = f.read()
        try:
            user, base = user_from_json(data, jid)
        except (ValueError, TypeError, KeyError, AttributeError, JIDError) as exc:
            raise StorageError(f"corrupt {user_dir / 'user.json'}: {exc}") from exc
        hidden = sum(1 for c in user.roster.values() if c.hidden)
        p = Parsed((st.st_ino, st.st_mtime_ns, st.st_size), user, base, base, None,
                   len(user.roster) - hidden, hidden)
        if not self._catch_up(p, user_dir / JOURNAL):
            raise StorageError(f"{user_dir / JOURNAL} changed while read")
        return p

    @staticmethod
    def _catch_up(p: Parsed, journal: Path) -> bool:
        """Apply the journal lines ``p`` has not read; False if the journal is not
        the one ``p`` read (replaced or cut): ``p`` is then stale."""
        try:
            f = open(journal, "rb")
        except FileNotFoundError:
            return p.journal is None
        with f:
            st = os.fstat(f.fileno())
            ino, start = p.journal if p.journal is not None else (st.st_ino, 0)
            if st.st_ino != ino or st.st_size < start:
                return False
            f.seek(start)
            data = f.read() if st.st_size > start else b""
        end = data.rfind(b"\n") + 1
        for entry in journal_entries(data[:end]):
            p.apply(entry)
        p.journal = (ino, start + end)
        return True

    def _keep(self, user_dir: Path, p: Parsed) -> None:
        """Cache ``p``; the least recently used go past _CACHE_RECORDS records."""
        self._cache[user_dir] = p
        self._cache.move_to_end(user_dir)
        total = sum(len(q.user.roster) for q in self._cache.values())
        while total > _CACHE_RECORDS and len(self._cache) > 1:
            total -= len(self._cache.popitem(last=False)[1].user.roster)

    def _forget(self, user_dir: Path) -> None:
        with self._lock:
            self._cache.pop(user_dir, None)

    def _save_user(self, user_dir: Path, user: User) -> None:
        """Write user.json whole; the journal is then included, and removed."""
        self._forget(user_dir)
        journal = user_dir / JOURNAL
        last = self._journal_last(journal)
        self._write(user_dir / "user.json", user_to_json(user, journal=last or 0))
        if last is not None or journal.exists():
            self._drop_journal(journal)

    def _journal_last(self, journal: Path) -> int | None:
        try:
            return _journal_tail(journal)[0]
        except (ValueError, TypeError, KeyError, AttributeError, JIDError) as exc:
            raise StorageError(f"corrupt {journal}: {exc}") from exc

    def _update_roster(self, user_dir: Path, jid: JID, changes: Mapping[JID, Contact | None],
                       version: int) -> bool:
        """Append one line to the journal (fold it in when it has grown)."""
        try:
            size = os.stat(user_dir / "user.json").st_size
        except FileNotFoundError:
            return False
        journal = user_dir / JOURNAL
        try:
            last, end, length = _journal_tail(journal)
            if last is None:                # no journal yet: number on from user.json
                last = self._parsed(user_dir, jid, lambda p: p.last) or 0
        except (ValueError, TypeError, KeyError, AttributeError, JIDError) as exc:
            raise StorageError(f"corrupt {journal}: {exc}") from exc
        line = entry_to_json(last + 1, version, changes)
        fd = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            if end < length:
                os.ftruncate(fd, end)       # an append a crash cut short
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if length == 0:
            fsync_dir(user_dir)             # the journal was (re)created
        if end + len(line) > max(_JOURNAL_MIN, size):
            try:
                self._compact(user_dir, jid)
            except (OSError, StorageError):     # the change itself is stored
                log.warning("could not fold %s into user.json", journal, exc_info=True)
        return True

    def _compact(self, user_dir: Path, jid: JID) -> None:
        found = self._load_user(user_dir, jid)
        self._forget(user_dir)
        if found is not None:
            user, last = found
            self._write(user_dir / "user.json", user_to_json(user, journal=last))
            self._drop_journal(user_dir / JOURNAL)

    def _drop_journal(self, journal: Path) -> None:
        """Remove a journal user.json now includes; if that fails its lines are
        skipped by number, and the next fold or save removes it."""
        try:
            self._remove(journal)
        except OSError:
            log.warning("could not remove %s; its lines are skipped", journal, exc_info=True)

    def _delete_user(self, jid: JID) -> bool:
        user_dir = self.user_dir(jid)
        self._forget(user_dir)
        try:
            os.stat(user_dir / "user.json")
            existed = True
        except FileNotFoundError:
            existed = False
        # Rename first, so the user disappears at once even if removal stops half-way.
        tomb = user_dir.with_name(f".deleted-{secrets.token_hex(8)}")
        try:
            os.rename(user_dir, tomb)
        except FileNotFoundError:
            return existed
        fsync_dir(user_dir.parent)
        try:
            shutil.rmtree(tomb)
        except OSError:
            log.warning("could not remove %s; remove it by hand", tomb, exc_info=True)
        return existed

    def _find_xml(self, path: Path, what: str,
                  qname: tuple[str, str] | None) -> etree._Element | None:
        data = read_if_present(path)
        if data is None:
            return None
        element = xml_element(data, f"{what} {path}")
        if qname is not None:
            found = etree.QName(element)
            if (found.namespace or "", found.localname) != qname:
                raise StorageError(f"corrupt {what} {path}: holds {found.text}")
        return element

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.to_thread(fn, *args)
        except OSError as exc:
            raise StorageError(f"storage I/O failed: {exc}") from exc

    # the Storage interface

    async def find_user(self, jid: JID) -> User | None:
        if not jid.local:
            return None
        return await self._run(self._find_user, jid)

    async def save_user(self, user: User) -> None:
        await self._run(self._save_user, self.user_dir(user.jid), user)

    async def find_contact(self, jid: JID, contact: JID) -> ContactLookup | None:
        if not jid.local:
            return None
        return await self._run(self._find_contact, jid, contact)

    async def update_roster(self, jid: JID, changes: Mapping[JID, Contact | None],
                            version: int, *, expected: int | None = None) -> bool:
        # ``expected`` is not checked: one process serializes its own changes
        # (the roster module's lock); a directory shared by several nodes has
        # the limit docs/cluster.md describes.
        if not jid.local:
            return False
        return await self._run(self._update_roster, self.user_dir(jid), jid.bare,
                               dict(changes), version)

    async def delete_user(self, jid: JID) -> bool:
        if not jid.local:
            return False
        return await self._run(self._delete_user, jid)

    async def find_vcard(self, jid: JID) -> etree._Element | None:
        if not jid.local:
            return None
        return await self._run(self._find_xml, self.user_dir(jid) / "vcard.xml", "vCard", None)

    async def save_vcard(self, jid: JID, card: etree._Element) -> None:
        await self._run(self._write, self.user_dir(jid) / "vcard.xml", xml_bytes(card))

    async def find_fragment(self, jid: JID, namespace: str, name: str) -> etree._Element | None:
        if not jid.local:
            return None
        return await self._run(self._find_xml, self._fragment_path(jid, namespace, name),
                               "private fragment", (namespace, name))

    async def save_fragment(self, jid: JID, fragment: etree._Element) -> None:
        qname = etree.QName(fragment)
        path = self._fragment_path(jid, qname.namespace or "", qname.localname)
        await self._run(self._write, path, xml_bytes(fragment))

    async def get(self, jid: JID, store: str) -> Any | None:
        check_store(store)
        if not jid.local:
            return None
        return await self._run(self._get, self._store_path(jid, store))

    async def put(self, jid: JID, store: str, value: Any | None) -> None:
        path = self._store_path(jid, store)
        if value is None:
            await self._run(self._remove, path)
        else:
            await self._run(self._write, path, json_value(value))

    # enumeration (vinespy migrate)

    async def owners(self) -> AsyncIterator[JID]:
        """A walk of ``dir``, one batch of user directories per worker-thread call."""
        for domain_dir in await self._run(listing.domain_dirs, self.dir):
            user_dirs = await self._run(listing.user_dirs, domain_dir)
            for i in range(0, len(user_dirs), _LIST_BATCH):
                batch = user_dirs[i:i + _LIST_BATCH]
                for jid in await self._run(listing.owners, batch, self.user_dir):
                    yield jid

    async def fragments(self, jid: JID) -> list[tuple[str, str]]:
        if not jid.local:
            return []
        return await self._run(listing.fragments, self.user_dir(jid) / "private")

    async def stores(self, jid: JID) -> list[str]:
        if not jid.local:
            return []
        return await self._run(listing.stores, self.user_dir(jid))
