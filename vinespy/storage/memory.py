"""``backend = "memory"``: the dict-backed reference backend.

Everything is lost on restart; meant for tests and throw-away servers. Models
are deep-copied in and out and XML is kept serialized, so a caller mutating
what it saved or got back never changes the stored state. Holds accounts with
their roster (RFC 6121), vCards (XEP-0054), private XML fragments
(XEP-0049) and keyval stores (kept as JSON text, like the fs backend) per
bare JID.
"""

from __future__ import annotations

import copy
from typing import Any, AsyncIterator, Mapping

from lxml import etree

from ..jid import JID
from . import (Contact, ContactLookup, Storage, User, apply_roster_changes,
               check_store, json_value, register, value_from_json, xml_bytes, xml_element)


def _owner(jid: JID) -> JID:
    """The bare user JID data is filed under; ValueError without a localpart."""
    if not jid.local:
        raise ValueError(f"{jid} is not a user JID")
    return jid.bare


@register("memory")
class MemoryStorage(Storage):
    """Users, vCards, private fragments and keyval stores in dictionaries."""

    def __init__(self) -> None:
        self._users: dict[JID, User] = {}
        self._vcards: dict[JID, bytes] = {}
        self._fragments: dict[JID, dict[tuple[str, str], bytes]] = {}
        self._keyval: dict[JID, dict[str, bytes]] = {}

    async def find_user(self, jid: JID) -> User | None:
        user = self._users.get(jid.bare)
        return copy.deepcopy(user) if user is not None else None

    async def save_user(self, user: User) -> None:
        owner = _owner(user.jid)
        stored = copy.deepcopy(user)
        stored.jid = owner
        self._users[owner] = stored

    async def find_contact(self, jid: JID, contact: JID) -> ContactLookup | None:
        user = self._users.get(jid.bare)
        if user is None:
            return None
        record = user.roster.get(contact)
        hidden = sum(1 for c in user.roster.values() if c.hidden)
        return ContactLookup(copy.deepcopy(record), user.roster_version,
                             len(user.roster) - hidden, hidden)

    async def update_roster(self, jid: JID, changes: Mapping[JID, Contact | None],
                            version: int, *, expected: int | None = None) -> bool:
        user = self._users.get(jid.bare)
        if user is None:
            return False
        apply_roster_changes(user, changes, version, expected)
        return True

    async def delete_user(self, jid: JID) -> bool:
        self._vcards.pop(jid.bare, None)
        self._fragments.pop(jid.bare, None)
        self._keyval.pop(jid.bare, None)
        return self._users.pop(jid.bare, None) is not None

    async def find_vcard(self, jid: JID) -> etree._Element | None:
        data = self._vcards.get(jid.bare)
        return xml_element(data, "vCard") if data is not None else None

    async def save_vcard(self, jid: JID, card: etree._Element) -> None:
        self._vcards[_owner(jid)] = xml_bytes(card)

    async def find_fragment(self, jid: JID, namespace: str, name: str) -> etree._Element | None:
        data = self._fragments.get(jid.bare, {}).get((namespace, name))
        return xml_element(data, "private fragment") if data is not None else None

    async def save_fragment(self, jid: JID, fragment: etree._Element) -> None:
        qname = etree.QName(fragment)
        owner = _owner(jid)
        self._fragments.setdefault(owner, {})[(qname.namespace or "", qname.localname)] = (
            xml_bytes(fragment))

    async def get(self, jid: JID, store: str) -> Any | None:
        data = self._keyval.get(jid.bare, {}).get(check_store(store))
        return value_from_json(data, f"keyval {store}") if data is not None else None

    async def put(self, jid: JID, store: str, value: Any | None) -> None:
        check_store(store)
        owner = _owner(jid)
        if value is None:
            stores = self._keyval.get(owner)
            if stores is not None:
                stores.pop(store, None)
                if not stores:
                    del self._keyval[owner]
            return
        self._keyval.setdefault(owner, {})[store] = json_value(value)

    # enumeration (vinespy migrate)

    async def owners(self) -> AsyncIterator[JID]:
        for jid in sorted({*self._users, *self._vcards, *self._fragments, *self._keyval},
                          key=str):
            yield jid

    async def fragments(self, jid: JID) -> list[tuple[str, str]]:
        return sorted(self._fragments.get(jid.bare, {}))

    async def stores(self, jid: JID) -> list[str]:
        return sorted(self._keyval.get(jid.bare, {}))
