"""Presence subscriptions between local users (RFC 6121 §3, Appendix A).

The state machine is :mod:`vinespy.rules.roster` (pure tables); this module does
the I/O around it, for presence of type ``subscribe``, ``subscribed``,
``unsubscribe`` or ``unsubscribed`` addressed to a local bare or full JID:

* Sent by a local session (outbound, Appendix A.2): the sender's roster
  record for the contact goes through :func:`~vinespy.rules.roster.outbound`
  under the roster module's user lock, is saved and, if the roster item
  changed, pushed to the sender's interested resources (§2.1.6). If the
  table says to route it, the stanza is stamped with the contact's bare JID
  as 'to' and the sender's bare JID as 'from' (§3.1.2, §3.2.2, §3.3.2,
  §3.4.2: the user's server "MUST stamp the outbound ... with the bare
  JID") and routed on, as the server, to the contact's side.
* Emitted by the server (inbound, Appendix A.3; ``origin`` None: the
  routed stanza above, or the roster module's cancellation on removal,
  §2.5.2): the contact's record for the sender goes through
  :func:`~vinespy.rules.roster.inbound` (lock, save, push); the stanza is
  delivered to the contact's available resources if the table says so,
  else dropped; an automatic answer (``auto``, e.g. ``subscribed`` for a
  pre-approved contact, §3.4.2) is sent back as the contact's bare JID.

Both claim the stanza, so the router's default does not deliver it again.
A local user's stanza to a contact of another server (federation on) is
taken at ``pre-presence`` and handled as the outbound case; the contact's
server applies Appendix A.3 and answers over s2s, where the answer arrives
as the inbound case.

Every change is checked against the roster module's limits
(:func:`~vinespy.rules.roster.admit`) before anything is stored: an outbound
stanza that would make a new roster item in a full roster (a subscribe or
pre-approval to a new JID, approving a stranger's request) is answered to
the sending resource with a presence error from the contact,
``<not-allowed/>``, and neither stored nor routed; an inbound request from
a stranger while ``max_pending`` such requests wait is not kept, and each
available resource of the requester gets ``<resource-constraint/>`` from
the user (the requester's own roster keeps its 'ask': asking again later,
once the user has answered some requests, gets through).

A subscription request that arrives while the contact has no available
resource is not lost: the record with ``pending_in`` (hidden for a
stranger, Appendix A.1 state 3) remembers it, and it is delivered again as
``<presence type='subscribe' from=requester-bare/>`` to every resource
that sends initial presence while the request is pending (§3.1.3: "the
contact's server MUST ... deliver the request when the contact next has an
available resource", and every time until it is answered, §3.1.3 rule 4).

Presence follows the subscription state: when a user approves a request
(routed ``subscribed``, or the automatic one of a pre-approval) the last
presence of each of the user's available resources goes to the contact
(§3.1.5); when a user cancels or denies one (routed ``unsubscribed``,
§3.2.2, which has the unavailable go first) or receives an ``unsubscribe``
that is delivered (§3.3.3), the other side gets unavailable from each of
them.

Every stored change of a record's subscription state is announced after
it is stored (``subscription-changed``: owner, contact, before, after):
PEP re-calculates access to the owner's nodes (XEP-0163 "Cancelling
subscriptions").

Removing a roster item (§2.5.2) cancels the subscriptions both ways: on the
roster module's ``roster-removed`` this module routes ``unsubscribed``
and/or ``unsubscribe`` from the user's bare JID as above, the unavailable
included where the contact had a from/both subscription; the contact's
side then applies Appendix A.3 as to any routed stanza.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

from ..errors import StanzaError
from ..events import StanzaEvent
from ..jid import JID
from ..rules.roster import (SUBSCRIPTION_TYPES, Outcome, admit, inbound, item_element,
                            outbound, removal_element, visible)
from ..storage import Contact, RosterConflict
from ..xml import Element, error_reply, stanza
from . import Module, hook
from .roster import Roster, cancellations, retries

Table = Callable[[Contact | None, JID, str], Outcome]


class Subscription(Module):
    name = "subscription"
    depends = ("roster", "presence")
    # RFC 6121 §3.4.1: a server that supports pre-approval MUST advertise it.
    stream_features = ("<sub xmlns='urn:xmpp:features:pre-approval'/>",)

    @hook("presence/bare")
    @hook("presence/full")
    async def subscription(self, ev: StanzaEvent) -> bool | None:
        stype = ev.stanza.get("type")
        if stype not in SUBSCRIPTION_TYPES:
            return None
        assert stype is not None
        if ev.origin is not None:
            await self._outbound(ev, stype)
        else:
            await self._inbound(ev, stype)
        return True

    @hook("pre-presence")
    async def to_other_server(self, ev: StanzaEvent) -> bool | None:
        """A local user's subscription stanza to a contact of another server:
        the router hands it to the federation without any ``presence/bare``
        event here, so Appendix A.2 is applied now, on the sender's side,
        and it leaves stamped with the bare JIDs, as for a local contact."""
        stype = ev.stanza.get("type")
        if (ev.to_type != "remote" or ev.origin is None or stype not in SUBSCRIPTION_TYPES
                or self.host.router.remote is None):
            return None
        await self._outbound(ev, stype)
        return True

    async def _outbound(self, ev: StanzaEvent, stype: str) -> None:
        assert ev.origin is not None
        user = ev.origin.jid.bare
        contact = ev.to.bare
        if contact == user:
            return                      # no subscription to oneself: dropped
        try:
            outcome = await self._apply(user, contact, stype, outbound)
        except StanzaError as exc:      # a limit: nothing stored, nothing routed
            ev.origin.send(error_reply(ev.stanza, exc))
            return
        if outcome is None or not outcome.forward:
            return
        await self._route(user, contact, copy.deepcopy(ev.stanza), stype)

    @hook("roster-removed")
    async def removed(self, user: JID, contact: Contact) -> bool:
        """§2.5.2: the user removed ``contact``'s item, so the server sends the
        contact unsubscribed and/or unsubscribe (:func:`cancellations`) as for
        the user's own, except that the record is gone (no table, no push)
        and unavailable goes only where a from/both subscription ends."""
        shared = contact.subscription in ("from", "both")
        for stype in cancellations(contact):
            await self._route(user, contact.jid.bare, stanza("presence", type=stype), stype,
                              withdraw=shared)
        return True

    async def _route(self, user: JID, contact: JID, st: Element, stype: str, *,
                     withdraw: bool = True) -> None:
        """Route ``st``, of ``stype``, on from ``user``'s bare JID to ``contact``'s
        (§3.1.2, §3.2.2, §3.3.2, §3.4.2: "MUST stamp ... with the bare JID"),
        with the presence the change of subscription calls for."""
        st.set("to", str(contact))
        st.set("from", str(user))
        if stype == "unsubscribed" and withdraw:
            # §3.2.2: "While the user is still subscribed to the contact's
            # presence (i.e., before the contact's server routes or delivers
            # the presence stanza of type "unsubscribed" to the user)".
            await self._presence_of(user, contact, gone=True)
        await self.send(st)
        if stype == "subscribed":
            await self._presence_of(user, contact)          # §3.1.5

    async def _inbound(self, ev: StanzaEvent, stype: str) -> None:
        user = ev.to.bare
        sender = ev.frm.bare
        if sender == user or not sender.local:
            return
        try:
            outcome = await self._apply(user, sender, stype, inbound)
        except StanzaError as exc:      # a limit: the request is refused, not kept
            await self._refuse(ev, exc, sender)
            return
        if outcome is None:
            return
        if outcome.forward:
            st = copy.deepcopy(ev.stanza)
            st.set("to", str(user))
            st.set("from", str(sender))
            for session in self.host.sessions.available(user):
                session.send(st)
        if outcome.auto is not None:
            await self.send(stanza("presence", frm=user, to=sender, type=outcome.auto))
            if outcome.auto == "subscribed":
                await self._presence_of(user, sender)       # §3.4.2 -> §3.1.5
        if outcome.forward and stype == "unsubscribe":
            await self._presence_of(user, sender, gone=True)    # §3.3.3

    async def _refuse(self, ev: StanzaEvent, exc: StanzaError, sender: JID) -> None:
        """The error for a routed stanza ``sender`` sent, to each of ``sender``'s
        available resources: the stanza was stamped with the bare JID, and the
        router delivers no error to a bare JID (docs/routing.md)."""
        for session in self.host.sessions.available(sender):
            error = error_reply(ev.stanza, exc)
            error.set("to", str(session.jid))
            await self.send(error)

    async def _presence_of(self, user: JID, to: JID, *, gone: bool = False) -> None:
        """The last presence (or, ``gone``, unavailable) of each of ``user``'s
        available resources, to ``to``."""
        for session in self.host.sessions.available(user):
            if gone:
                st = stanza("presence", type="unavailable")
            elif session.presence is not None:
                st = copy.deepcopy(session.presence)
            else:
                continue
            st.set("from", str(session.jid))
            st.set("to", str(to))
            await self.send(st)

    async def _apply(self, owner: JID, jid: JID, stype: str, table: Table) -> Outcome | None:
        """Run ``table`` on ``owner``'s record for ``jid``: store and push the
        result. None if ``owner`` has no account. StanzaError, with nothing
        stored, if the result would exceed the roster limits
        (:func:`~vinespy.rules.roster.admit`)."""
        roster = self.host.modules["roster"]
        assert isinstance(roster, Roster), "subscription depends on roster"
        async with roster.user_lock(owner):
            for _ in retries():
                found = await self.host.storage.find_contact(owner, jid)
                if found is None:
                    return None
                before = found.contact
                outcome = table(before, jid, stype)
                if not outcome.changed:
                    return outcome
                admit(found.items, found.pending, before, outcome.contact, roster.limits)
                # Every change takes a version of its own, also one no client
                # is told of (a stranger's hidden request): the version is
                # what update_roster checks, so two nodes changing one
                # contact at once cannot both pass with the same one.
                version = found.version + 1
                try:
                    if not await self.host.storage.update_roster(
                            owner, {jid: outcome.contact}, version, expected=found.version):
                        return None
                except RosterConflict:
                    continue            # another node changed it meanwhile: again
                break
            if outcome.push:
                item = (item_element(outcome.contact) if visible(outcome.contact)
                        and outcome.contact is not None else removal_element(jid))
                roster.push(owner, item, version)
        if before is None or outcome.contact is None or (
                before.subscription != outcome.contact.subscription):
            await self.host.bus.notify("subscription-changed", owner, jid, before,
                                       outcome.contact)
        return outcome

    @hook("initial-presence")
    def pending(self, session: Any, user: Any) -> None:
        """§3.1.3: requests that arrived while the user was offline."""
        if user is None:
            return
        for contact in user.roster.values():
            if contact.pending_in:
                session.send(stanza("presence", frm=contact.jid.bare, to=session.jid.bare,
                                    type="subscribe"))
