"""User data changes, announced to the other nodes (Vines' ``update_user``).

A node keeps per-user state in memory (the blocking module's cached lists,
for one); when a user's stored data changes on one node, every other node
hears of it through ``cluster:events`` and fires ``user-changed`` with the
bare JID on the host's bus, so such caches are dropped. Roster pushes need
nothing of this: they go to the interested resources, wherever they are,
through the router.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Mapping

from lxml import etree

from ..jid import JID
from ..storage import Contact, ContactLookup, Storage, User


class NotifyingStorage(Storage):
    """``storage`` that awaits ``changed(bare)`` after each write of a user's data."""

    def __init__(self, storage: Storage, changed: Callable[[JID], Awaitable[None]]) -> None:
        self.inner = storage
        self._changed = changed

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def find_user(self, jid: JID) -> User | None:
        return await self.inner.find_user(jid)

    async def save_user(self, user: User) -> None:
        await self.inner.save_user(user)
        await self._changed(user.jid.bare)

    async def find_contact(self, jid: JID, contact: JID) -> ContactLookup | None:
        return await self.inner.find_contact(jid, contact)

    async def update_roster(self, jid: JID, changes: Mapping[JID, Contact | None],
                            version: int, *, expected: int | None = None) -> bool:
        done = await self.inner.update_roster(jid, changes, version, expected=expected)
        await self._changed(jid.bare)
        return done

    async def delete_user(self, jid: JID) -> bool:
        done = await self.inner.delete_user(jid)
        await self._changed(jid.bare)
        return done

    async def find_vcard(self, jid: JID) -> etree._Element | None:
        return await self.inner.find_vcard(jid)

    async def save_vcard(self, jid: JID, card: etree._Element) -> None:
        await self.inner.save_vcard(jid, card)

    async def find_fragment(self, jid: JID, namespace: str, name: str) -> etree._Element | None:
        return await self.inner.find_fragment(jid, namespace, name)

    async def save_fragment(self, jid: JID, fragment: etree._Element) -> None:
        await self.inner.save_fragment(jid, fragment)

    async def get(self, jid: JID, store: str) -> Any | None:
        return await self.inner.get(jid, store)

    async def put(self, jid: JID, store: str, value: Any | None) -> None:
        await self.inner.put(jid, store, value)
        await self._changed(jid.bare)

    async def modify(self, jid: JID, store: str,
                     change: Callable[[Any | None], Any | None]) -> Any | None:
        new = await self.inner.modify(jid, store, change)
        await self._changed(jid.bare)
        return new

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()
