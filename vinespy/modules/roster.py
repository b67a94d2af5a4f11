"""RFC 6121 §2: roster management, with roster versioning (RFC 6121 §2.6, XEP-0237).

The rules (which roster sets are valid, what an ``<item/>`` looks like, the
subscription state machine) are in :mod:`vinespy.rules.roster`; this module does
the I/O: it reads and writes the user's :class:`~vinespy.storage.User`,
answers the IQs and sends roster pushes.

* ``get`` to one's own account (no ``to``, or one's bare JID): the roster
  result (§2.1.4) holds every roster item; a record that only remembers a
  stranger's pending request (``Contact.hidden``) is not one (Appendix A.1
  state 3). The requesting resource becomes an *interested resource*, one
  that requested the roster and so receives roster pushes (§2.1.6); a
  versioned get counts too. The result carries ``ver`` (§2.6.3). If the
  request's ``ver`` equals the current version the answer is an empty
  result: §2.6.3 lets the server return either the complete roster or an
  empty result followed by pushes of the changes since that version, of
  which there are none. Any other ``ver`` (older, unknown, or the empty
  string of a client without a cache, §2.6.2) gets the whole roster.
* ``set`` to one's own account: :func:`~vinespy.rules.roster.parse_roster_set`
  (§2.1.5, §2.3.3), then add or update the item (name and groups replaced,
  subscription state kept, a hidden record becomes an item) or remove it
  (§2.5). Removing an item the roster does not hold is ``<item-not-found/>``
  (§2.5.3). The one changed record is stored with the next version
  (:meth:`~vinespy.storage.Storage.update_roster`: the rest of the roster
  is not rewritten), a roster push (``<iq type='set'>`` with ``ver`` and
  the one changed item, ``subscription='remove'`` for a deletion) goes to
  every interested resource of the user, and the set is answered with an
  empty result. Removal also cancels the subscriptions both ways (§2.5.2,
  :func:`cancellations`): ``unsubscribed`` if the contact had a
  subscription from the user (from/both) or a pending request,
  ``unsubscribe`` if the user had one to the contact or had asked for one
  (to/both, ask), from the user's bare JID. This module announces
  ``subscription-changed`` (the record gone: access to the user's PEP
  nodes is re-calculated), then fires ``roster-removed`` (the user's bare
  JID, the removed record) for the subscription module to send them as it
  sends the user's own, with the unavailable presence that ends a
  from/both subscription (§3.2.2); on a host without that module it routes
  the bare stanzas itself. All of it is routed before the set is answered.
* Limits, the options of ``[host.options.roster]`` (:class:`~vinespy.rules.roster.Limits`):
  ``max_items`` (1000) roster items per user: a set that would add one more
  is ``<not-allowed/>`` (type cancel) with a ``<text/>`` naming the limit
  (why that condition: :func:`~vinespy.rules.roster.admit`); the subscription
  module applies the same limit to every other way an item is made
  (outbound subscribe, pre-approval, approving a stranger) and
  ``max_pending`` (100) to strangers' unanswered requests. ``max_groups``
  (25) groups per item and ``max_length`` (1023) bytes of the name and of
  each group: ``<not-acceptable/>`` (§2.3.3, "a server-configured limit").
  An item is then at most about 29 KB (with a 3 KB JID), a roster about
  30 MB at worst; typical ones are far below.
* A ``get`` or ``set`` to another account's bare JID is ``<forbidden/>``:
  §2.3.3, "The server MUST return a <forbidden/> stanza error to the client
  if the sender of the roster set is not authorized to update the roster
  (where typically only an authenticated resource of the account itself is
  authorized)", applied to reading as well. The answer is the same whether
  the account exists or not. Anything else (to the server's address, to a
  full JID) is left to the router's defaults.

Reads-modify-writes of one user are serialized by a per-bare-JID lock
(:meth:`Roster.user_lock`), which any module that saves the User in this
process is to take too.
"""

from __future__ import annotations

import contextlib
import copy
import secrets
from typing import Any, AsyncIterator, Iterator

from ..errors import StanzaError
from ..events import StanzaEvent
from ..fields import SessionField
from ..locks import KeyedLock
from ..jid import JID
from ..rules.roster import (MAX_GROUPS, MAX_ITEMS, MAX_LENGTH, MAX_PENDING, ROSTER, Limits,
                            RosterRemove, admit, item_element, parse_roster_set,
                            removal_element, updated, visible)
from ..storage import Contact, RosterConflict
from ..xml import Element, child, element, stanza
from . import Module, Option, iq

ROSTERVER = "urn:xmpp:features:rosterver"


CONFLICT_RETRIES = 20


def retries() -> Iterator[int]:
    """Attempts at a read-compute-write of a roster that another node may
    change at the same moment (:class:`~vinespy.storage.RosterConflict`):
    a loop over them that never ``break``s ends in internal-server-error."""
    yield from range(CONFLICT_RETRIES)
    raise StanzaError("internal-server-error", "the roster kept changing; try again")


def cancellations(contact: Contact) -> tuple[str, ...]:
    """The presence types the user's server sends the contact when the user
    removes ``contact`` from the roster (RFC 6121 §2.5.2): "unsubscribed" if
    "the contact has a presence subscription to the user" (from/both; a
    pending request is denied too), "unsubscribe" if "the user has a presence
    subscription to the contact" (to/both; a pending 'ask' is withdrawn too).
    """
    out: list[str] = []
    if contact.subscription in ("from", "both") or contact.pending_in:
        out.append("unsubscribed")
    if contact.subscription in ("to", "both") or contact.ask == "subscribe":
        out.append("unsubscribe")
    return tuple(out)


class Roster(Module):
    name = "roster"
    # §2.1.6: the resource asked for the roster, so it gets pushes (wherever
    # it is connected: other nodes push to it too).
    interested = SessionField(bool, False, shared=True)
    # RFC 6121 §2.6.1: versioning support is announced as a stream feature.
    stream_features = (f"<ver xmlns='{ROSTERVER}'/>",)
    options = {
        "max_items": Option(int, default=MAX_ITEMS, min=1, max=100000),
        "max_pending": Option(int, default=MAX_PENDING, min=1, max=100000),
        "max_groups": Option(int, default=MAX_GROUPS, min=1, max=1000),
        "max_length": Option(int, default=MAX_LENGTH, min=1, max=MAX_LENGTH),
    }

    def __init__(self, host: Any) -> None:
        super().__init__(host)
        self.max_items: int = self.option("max_items")
        self.max_pending: int = self.option("max_pending")
        self.max_groups: int = self.option("max_groups")
        self.max_length: int = self.option("max_length")
        self._locks: KeyedLock[JID] = KeyedLock()

    @property
    def limits(self) -> Limits:
        """The roster limits in force (the attributes above, which tests may lower)."""
        return Limits(items=self.max_items, pending=self.max_pending,
                      groups=self.max_groups, length=self.max_length)

    @contextlib.asynccontextmanager
    async def user_lock(self, bare: JID) -> AsyncIterator[None]:
        """Hold the write lock of ``bare``'s User record (this process only)."""
        async with self._locks.hold(bare):
            yield

    # -- roster get (§2.1.3, §2.2, §2.6) ------------------------------------------

    @iq("get", ROSTER, "query", to=("self",))
    async def fetch(self, ev: StanzaEvent) -> Element | None:
        if ev.origin is not None:
            Roster.interested.set(ev.origin, True)
        user = await self.host.storage.find_user(ev.to)
        roster = user.roster if user is not None else {}
        version = str(user.roster_version if user is not None else 0)
        if ev.stanza[0].get("ver") == version:
            return None                     # §2.6.3: unchanged, nothing to push
        query = element(ROSTER, "query", ver=version)
        for contact in roster.values():
            if visible(contact):
                query.append(item_element(contact))
        return query

    # -- roster set (§2.1.5, §2.3-§2.5) -------------------------------------------

    @iq("set", ROSTER, "query", to=("self",))
    async def change(self, ev: StanzaEvent) -> None:
        bare = ev.to.bare
        limits = self.limits
        request = parse_roster_set(ev.stanza[0], bare, max_length=limits.length,
                                   max_groups=limits.groups)
        async with self.user_lock(bare):
            for _ in retries():
                removed: Contact | None = None
                found = await self.host.storage.find_contact(bare, request.jid)
                if found is None:
                    raise StanzaError("forbidden", "the account no longer exists")
                contact = found.contact
                new = None
                if isinstance(request, RosterRemove):
                    if contact is None or not visible(contact):
                        raise StanzaError("item-not-found", f"{request.jid} is not in the roster")
                    item = removal_element(request.jid)
                    removed = contact
                else:
                    new = updated(contact, request)
                    admit(found.items, found.pending, contact, new, limits)
                    item = item_element(new)
                version = found.version + 1
                try:
                    if not await self.host.storage.update_roster(
                            bare, {request.jid: new}, version, expected=found.version):
                        raise StanzaError("forbidden", "the account no longer exists")
                except RosterConflict:
                    continue            # another node changed it meanwhile: again
                break
            self.push(bare, item, version)
        if removed is not None:
            await self.cancel(bare, removed)
        return None

    async def cancel(self, bare: JID, removed: Contact) -> None:
        """§2.5.2: end the subscriptions both ways of the item ``bare`` removed.
        The subscription module does it (``roster-removed``), with what
        cancelling a subscription entails (§3.2.2: unavailable presence from
        the user's resources); without that module, the bare stanzas."""
        await self.host.bus.notify("subscription-changed", bare, removed.jid.bare, removed, None)
        if await self.host.bus.fire("roster-removed", bare, removed):
            return
        for kind in cancellations(removed):
            await self.send(stanza("presence", frm=bare, to=removed.jid.bare, type=kind))

    @iq("get", ROSTER, "query", to=("bare",))
    @iq("set", ROSTER, "query", to=("bare",))
    async def elsewhere(self, ev: StanzaEvent) -> None:
        raise StanzaError("forbidden", "only your own roster can be read or changed")

    # -- pushes (§2.1.6) ---------------------------------------------------------

    def push(self, bare: JID, item: Element, version: int) -> int:
        """Send ``<iq type='set'><query ver=…>item</query></iq>`` to every
        interested resource of ``bare``, each with a fresh id; return how many."""
        sent = 0
        for session in self.host.sessions.resources(bare):
            if not Roster.interested.get(session):
                continue
            push = stanza("iq", frm=bare, to=session.jid, type="set",
                          id=f"push-{secrets.token_hex(8)}")
            query = child(push, ROSTER, "query", ver=str(version))
            query.append(copy.deepcopy(item))
            session.send(push)
            sent += 1
        return sent
