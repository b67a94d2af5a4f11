"""``memory``: the archives in sorted lists of this process (tests, ``backend = "memory"``)."""

from __future__ import annotations

import bisect
from datetime import datetime
from typing import Collection, Iterator, Sequence

from ...jid import JID
from . import (ArchivedMessage, ArchivePage, ArchiveQuery, ArchiveStore, Plan, UnknownId,
               check_count, check_message, check_owner, make_page, micros, plan, register)


class _Archive:
    """One owner's messages: ids sorted, and the messages by id."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.msgs: dict[str, ArchivedMessage] = {}

    def add(self, msg: ArchivedMessage) -> None:
        if msg.id in self.msgs:
            raise ValueError(f"archive id {msg.id} is taken")
        bisect.insort(self.ids, msg.id)
        self.msgs[msg.id] = msg

    def drop_first(self, n: int) -> None:
        for id in self.ids[:n]:
            del self.msgs[id]
        del self.ids[:n]

    def walk(self, lo: str | None, hi: str | None, forward: bool) -> Iterator[ArchivedMessage]:
        """The messages with ids in (lo, hi), in the direction asked."""
        start = 0 if lo is None else bisect.bisect_right(self.ids, lo)
        stop = len(self.ids) if hi is None else bisect.bisect_left(self.ids, hi)
        span = range(start, stop) if forward else range(stop - 1, start - 1, -1)
        return (self.msgs[self.ids[i]] for i in span)


@register("memory")
class MemoryArchive(ArchiveStore):
    """Every owner's archive in a sorted list (for tests); nothing survives
    the process. Each method runs without awaiting, so each is atomic.
    ``count`` is always given (a scan of the filtered range)."""

    def __init__(self) -> None:
        self._owners: dict[str, _Archive] = {}

    async def append(self, owner: JID, msg: ArchivedMessage) -> None:
        key = check_owner(owner)
        self._owners.setdefault(key, _Archive()).add(check_message(msg))

    def append_now(self, owner: JID, msg: ArchivedMessage) -> bool:
        key = check_owner(owner)
        self._owners.setdefault(key, _Archive()).add(check_message(msg))
        return True

    async def append_many(self, entries: Sequence[tuple[JID, ArchivedMessage]]) -> None:
        checked = [(check_owner(owner), check_message(msg)) for owner, msg in entries]
        for key, msg in checked:
            self._owners.setdefault(key, _Archive()).add(msg)

    async def query(self, owner: JID, q: ArchiveQuery) -> ArchivePage:
        p = plan(q)
        archive = self._owners.get(check_owner(owner), _Archive())
        for rsm in (q.after, q.before or None):
            if rsm is not None and rsm not in archive.msgs:
                raise UnknownId(rsm)
        return make_page((m for m in archive.walk(p.lo, p.hi, p.forward) if p.passes(m)),
                         p, self._count(archive, p))

    @staticmethod
    def _count(archive: _Archive, p: Plan) -> int:
        return sum(1 for m in archive.walk(p.filter_lo, p.filter_hi, True) if p.passes(m))

    async def remove_before(self, cutoff: datetime, limit: int,
                            domains: Collection[str] | None = None) -> int:
        """Removes exactly up to ``limit``, owner after owner."""
        bound = f"{micros(cutoff):016x}"
        left = check_count(limit, "limit")
        for key in list(self._owners):
            if domains is not None and key.rpartition("@")[2] not in domains:
                continue
            archive = self._owners[key]
            n = min(left, bisect.bisect_left(archive.ids, bound))
            archive.drop_first(n)
            left -= n
            if not archive.ids:
                del self._owners[key]
        return limit - left

    async def trim(self, owner: JID, keep: int) -> int:
        keep = check_count(keep, "keep")
        archive = self._owners.get(check_owner(owner))
        if archive is None:
            return 0
        n = max(0, len(archive.ids) - keep)
        archive.drop_first(n)
        return n

    async def delete_owner(self, owner: JID) -> None:
        self._owners.pop(check_owner(owner), None)
