"""User data changes, announced to the other nodes (Vines' ``update_user``).

A node keeps per-user state in memory (the blocking module's cached lists,
for one); when a user's stored data changes on one node, every other node
hears of it through ``cluster:events`` and fires ``user-changed`` with the
bare JID on the host's bus, so such caches are dropped. Roster pushes need
nothing of this: they go to the interested resources, wherever they are,
through the router.

Writes of a store no node caches (:data:`QUIET`: offline storage, written
for every message to an offline user) are not announced: each announcement
makes every node drop what it caches of the user (blocklists, archive
preferences), to be read again at the next stanza.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Mapping

from ..jid import JID
from ..storage import Contact, ScramKeys, Storage, User, Wrapped

# Keyval stores no node keeps in memory: writing them changes nothing cached.
QUIET = frozenset({"offline"})


class NotifyingStorage(Wrapped):
    """``storage`` that awaits ``changed(bare)`` after each write of a user's data."""

    def __init__(self, storage: Storage, changed: Callable[[JID], Awaitable[None]]) -> None:
        super().__init__(storage)
        self._changed = changed

    async def save_user(self, user: User) -> None:
        await self.inner.save_user(user)
        await self._changed(user.jid.bare)

    async def add_user(self, user: User) -> bool:
        added = await self.inner.add_user(user)
        if added:
            await self._changed(user.jid.bare)
        return added

    async def set_credentials(self, jid: JID, credentials: Mapping[str, ScramKeys]) -> bool:
        done = await self.inner.set_credentials(jid, credentials)
        await self._changed(jid.bare)
        return done

    async def update_roster(self, jid: JID, changes: Mapping[JID, Contact | None],
                            version: int, *, expected: int | None = None) -> bool:
        done = await self.inner.update_roster(jid, changes, version, expected=expected)
        await self._changed(jid.bare)
        return done

    async def delete_user(self, jid: JID) -> bool:
        done = await self.inner.delete_user(jid)
        await self._changed(jid.bare)
        return done

    async def put(self, jid: JID, store: str, value: Any | None) -> None:
        await self.inner.put(jid, store, value)
        if store not in QUIET:
            await self._changed(jid.bare)

    async def modify(self, jid: JID, store: str,
                     change: Callable[[Any | None], Any | None]) -> Any | None:
        new = await self.inner.modify(jid, store, change)
        if store not in QUIET:
            await self._changed(jid.bare)
        return new
