"""One lock per key (a user's bare JID...), made when first wanted and
dropped when nobody holds or waits for it: any number of users, memory only
for those busy now. This process only; for the whole cluster, hold
``Sessions.exclusive(name)`` inside it."""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator, Generic, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)


class KeyedLock(Generic[K]):
    def __init__(self) -> None:
        self._locks: dict[K, tuple[asyncio.Lock, list[int]]] = {}   # key -> lock, users

    def __len__(self) -> int:
        """How many keys are held or waited for now."""
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def hold(self, key: K) -> AsyncIterator[None]:
        """Run the block alone among the holders of ``key``."""
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[key]
