"""Roster rules: the subscription state machine of RFC 6121 Appendix A and roster-set checks.

Pure logic: no I/O, no asyncio. The presence and roster modules load the
user's :class:`~vinespy.storage.Contact`, ask this module what a
subscription-related presence stanza does to it, and act on the answer.

State machine
    :func:`outbound` (the user sends ``subscribe``/``subscribed``/
    ``unsubscribe``/``unsubscribed`` to a contact) and :func:`inbound` (the
    user's server receives one from the contact) encode the tables of RFC 6121
    Appendix A.2.1-A.2.4 and A.3.1-A.3.4 as data (:data:`OUTBOUND`,
    :data:`INBOUND`), one entry per table row, over the nine states of
    Appendix A.1. Subscription pre-approval (RFC 6121 §3.4) is supported: an
    outbound ``subscribed`` where no request is pending sets ``approved``, and
    an inbound ``subscribe`` while ``approved`` is answered by the server.

    "None" includes the contact not being in the roster at all (Appendix A.1,
    Implementation Note). An inbound request from a stranger does not create
    a roster item (Appendix A.1 state 3; §3.1.3 Security Warning), yet it has
    to be recorded: it is returned as a Contact with ``pending_in=True`` and
    ``hidden=True``, which :func:`visible` reports as not a roster item. Such
    a record is never shown in a roster result or push; it becomes a roster
    item (``hidden`` cleared) when the user subscribes or approves, or names
    the contact in a roster set (:func:`updated`), and it disappears
    (``Outcome.contact is None``) when the request is withdrawn or denied.

Roster sets
    :func:`parse_roster_set` checks a ``<query xmlns='jabber:iq:roster'/>`` of
    an IQ set against RFC 6121 §2.1.5, §2.1.2 and §2.3.3 and raises
    :class:`~vinespy.errors.StanzaError`; :func:`updated` applies an add or
    update to the stored record; :func:`item_element` and
    :func:`removal_element` build the ``<item/>`` of roster results and
    pushes (§2.1.4, §2.1.6, §2.5.2).

Limits
    :class:`Limits` holds the server-configured bounds (``[host.options.roster]``):
    items per roster, strangers' pending requests per user, groups per item
    and bytes of a name or group. :func:`parse_roster_set` checks the size of
    one item; :func:`admit` checks, for any change to a stored record (roster
    set, outbound or inbound subscription stanza), that it does not make the
    roster hold more records than allowed.
"""

from __future__ import annotations

import dataclasses
import enum
import unicodedata
from dataclasses import dataclass
from typing import Literal, NamedTuple

from lxml import etree
from precis_i18n import get_profile

from ..errors import StanzaError
from ..jid import JID
from ..storage import Contact
from ..xml import Element, element, jid_attr

ROSTER = "jabber:iq:roster"
_ITEM = f"{{{ROSTER}}}item"
_GROUP = f"{{{ROSTER}}}group"
_QUERY = f"{{{ROSTER}}}query"

#: The presence types that take part in subscriptions (RFC 6121 §3).
SUBSCRIPTION_TYPES = ("subscribe", "subscribed", "unsubscribe", "unsubscribed")

#: Default server-configured limit (UTF-8 bytes) on a roster item's name and
#: on each group name (RFC 6121 §2.3.3 leaves the value to the server): the
#: size RFC 7622 §3.3.1 allows a localpart, so a name made from a JID fits.
MAX_LENGTH = 1023
#: Default limit on the ``<group/>`` elements of one item (§2.3.3 again: a
#: server-configured limit); with MAX_LENGTH it bounds an item to about 26 KB.
MAX_GROUPS = 25
#: Default limit on a user's roster items (visible records).
MAX_ITEMS = 1000
#: Default limit on the strangers' requests a user keeps unanswered (hidden
#: records, Appendix A.1 state 3).
MAX_PENDING = 100

_OPAQUE = get_profile("OpaqueString")


# --------------------------------------------------------------------------
# The nine states (RFC 6121 Appendix A.1)
# --------------------------------------------------------------------------

class State(enum.Enum):
    """A subscription state from the user's point of view, named as in Appendix A.1."""

    NONE = "None"
    NONE_OUT = "None + Pending Out"
    NONE_IN = "None + Pending In"
    NONE_OUT_IN = "None + Pending Out+In"
    TO = "To"
    TO_IN = "To + Pending In"
    FROM = "From"
    FROM_OUT = "From + Pending Out"
    BOTH = "Both"

    @property
    def subscription(self) -> str:
        """The roster ``subscription`` value: none | to | from | both."""
        return _FIELDS[self][0]

    @property
    def pending_out(self) -> bool:
        """The user asked for the contact's presence (ask='subscribe')."""
        return _FIELDS[self][1]

    @property
    def pending_in(self) -> bool:
        """The contact asked for the user's presence and has no answer yet."""
        return _FIELDS[self][2]


# state -> (subscription, pending out, pending in), per the nine definitions
# of Appendix A.1 ("this is reflected in the user's roster by ...").
_FIELDS: dict[State, tuple[str, bool, bool]] = {
    State.NONE: ("none", False, False),
    State.NONE_OUT: ("none", True, False),
    State.NONE_IN: ("none", False, True),
    State.NONE_OUT_IN: ("none", True, True),
    State.TO: ("to", False, False),
    State.TO_IN: ("to", False, True),
    State.FROM: ("from", False, False),
    State.FROM_OUT: ("from", True, False),
    State.BOTH: ("both", False, False),
}
_BY_FIELDS = {fields: state for state, fields in _FIELDS.items()}


def state_of(contact: Contact | None) -> State:
    """The Appendix A state of ``contact``; None (no item) is "None".

    A flag that the subscription makes meaningless (ask='subscribe' while
    already subscribed to the contact, a pending inbound request from a
    contact that already has a subscription) is dropped: no Appendix A state
    has it, and no transition of these tables can produce it.
    """
    if contact is None:
        return State.NONE
    sub = contact.subscription
    if sub not in ("none", "to", "from", "both"):
        raise ValueError(f"stored subscription {sub!r} is not none|to|from|both")
    out = contact.ask == "subscribe" and sub in ("none", "from")
    pin = contact.pending_in and sub in ("none", "to")
    return _BY_FIELDS[(sub, out, pin)]


# --------------------------------------------------------------------------
# The tables (RFC 6121 Appendix A.2 and A.3)
# --------------------------------------------------------------------------

class Row(NamedTuple):
    """One row of an Appendix A table.

    ``new`` is the NEW STATE column (None = "no state change"); ``forward``
    is the ROUTE?/DELIVER? column (MUST -> True; "S.N." SHOULD NOT and
    "M.N." MUST NOT -> False); ``auto`` is the stanza type the server sends
    back to the contact on the user's behalf (the tables' footnotes);
    ``preapproval`` marks the rows whose footnote refers to §3.4.
    """

    new: State | None
    forward: bool
    auto: str | None = None
    preapproval: Literal["set", "cancel"] | None = None


S = State
_KEEP = None     # "no state change"
_PRE: Literal["set"] = "set"            # footnote: sets the pre-approval (§3.4.2)
_UNPRE: Literal["cancel"] = "cancel"    # footnote: cancels it (§3.2.2 rule 2)


def _table(type: str, rows: dict[State, Row]) -> dict[tuple[State, str], Row]:
    """One Appendix A table: a row for each of the nine states."""
    assert list(rows) == list(State), type
    return {(state, type): row for state, row in rows.items()}


# Comments: EXISTING STATE | ROUTE?/DELIVER? | NEW STATE, as the RFC's row has them.

#: Outbound: the user's server processes a stanza the user sends (Appendix A.2).
OUTBOUND: dict[tuple[State, str], Row] = {
    # A.2.1 Subscribe (Table 2): MUST route in every state; [1] a change to
    # "pending out" includes setting ask='subscribe'.
    **_table("subscribe", {
        S.NONE: Row(S.NONE_OUT, True),          # None | MUST [1] | None + Pending Out
        S.NONE_OUT: Row(_KEEP, True),           # None + Pending Out | MUST | no state change
        # None + Pending In | MUST [1] | None + Pending Out+In
        S.NONE_IN: Row(S.NONE_OUT_IN, True),
        S.NONE_OUT_IN: Row(_KEEP, True),        # None + Pending Out+In | MUST | no state change
        S.TO: Row(_KEEP, True),                 # To | MUST | no state change
        S.TO_IN: Row(_KEEP, True),              # To + Pending In | MUST | no state change
        S.FROM: Row(S.FROM_OUT, True),          # From | MUST [1] | From + Pending Out
        S.FROM_OUT: Row(_KEEP, True),           # From + Pending Out | MUST | no state change
        S.BOTH: Row(_KEEP, True),               # Both | MUST | no state change
    }),
    # A.2.2 Unsubscribe (Table 3): MUST route in every state.
    **_table("unsubscribe", {
        S.NONE: Row(_KEEP, True),               # None | MUST | no state change
        S.NONE_OUT: Row(S.NONE, True),          # None + Pending Out | MUST | None
        S.NONE_IN: Row(_KEEP, True),            # None + Pending In | MUST | no state change
        S.NONE_OUT_IN: Row(S.NONE_IN, True),    # None + Pending Out+In | MUST | None + Pending In
        S.TO: Row(S.NONE, True),                # To | MUST | None
        S.TO_IN: Row(S.NONE_IN, True),          # To + Pending In | MUST | None + Pending In
        S.FROM: Row(_KEEP, True),               # From | MUST | no state change
        S.FROM_OUT: Row(S.FROM, True),          # From + Pending Out | MUST | From
        S.BOTH: Row(S.FROM, True),              # Both | MUST | From
    }),
    # A.2.3 Subscribed (Table 4): "M.N." = MUST NOT route; [1] pre-approval,
    # "Detailed information ... is provided under Section 3.4".
    **_table("subscribed", {
        S.NONE: Row(_KEEP, False, None, _PRE),  # None | M.N. | pre-approval [1]
        S.NONE_OUT: Row(_KEEP, False, None, _PRE),  # None + Pending Out | M.N. | pre-approval [1]
        S.NONE_IN: Row(S.FROM, True),           # None + Pending In | MUST | From
        S.NONE_OUT_IN: Row(S.FROM_OUT, True),   # None + Pending Out+In | MUST | From + Pending Out
        S.TO: Row(_KEEP, False, None, _PRE),    # To | M.N. | pre-approval [1]
        S.TO_IN: Row(S.BOTH, True),             # To + Pending In | MUST | Both
        S.FROM: Row(_KEEP, False),              # From | M.N. | no state change
        S.FROM_OUT: Row(_KEEP, False),          # From + Pending Out | M.N. | no state change
        S.BOTH: Row(_KEEP, False),              # Both | M.N. | no state change
    }),
    # A.2.4 Unsubscribed (Table 5): "S.N." = SHOULD NOT route; [1] "can
    # result in cancellation of a subscription pre-approval" (§3.2.2 rule 2:
    # "MUST remove the pre-approval and MUST NOT route").
    **_table("unsubscribed", {
        S.NONE: Row(_KEEP, False, None, _UNPRE),  # None | S.N. | no state change [1]
        # None + Pending Out | S.N. | no state change [1]
        S.NONE_OUT: Row(_KEEP, False, None, _UNPRE),
        S.NONE_IN: Row(S.NONE, True),           # None + Pending In | MUST | None
        S.NONE_OUT_IN: Row(S.NONE_OUT, True),   # None + Pending Out+In | MUST | None + Pending Out
        S.TO: Row(_KEEP, False, None, _UNPRE),  # To | S.N. | no state change [1]
        S.TO_IN: Row(S.TO, True),               # To + Pending In | MUST | To
        S.FROM: Row(S.NONE, True),              # From | MUST | None
        S.FROM_OUT: Row(S.NONE_OUT, True),      # From + Pending Out | MUST | None + Pending Out
        S.BOTH: Row(S.TO, True),                # Both | MUST | To
    }),
}

#: Inbound: the user's server receives a stanza from the contact (Appendix A.3).
INBOUND: dict[tuple[State, str], Row] = {
    # A.3.1 Subscribe (Table 6): "S.N." = SHOULD NOT deliver; [1] pre-approval
    # (see inbound()); [2] "Server SHOULD auto-reply with 'subscribed'".
    **_table("subscribe", {
        S.NONE: Row(S.NONE_IN, True),           # None | MUST [1] | None + Pending In
        S.NONE_OUT: Row(S.NONE_OUT_IN, True),   # None + Pending Out | MUST | None + Pending Out+In
        S.NONE_IN: Row(_KEEP, False),           # None + Pending In | S.N. | no state change
        S.NONE_OUT_IN: Row(_KEEP, False),       # None + Pending Out+In | S.N. | no state change
        S.TO: Row(S.TO_IN, True),               # To | MUST | To + Pending In
        S.TO_IN: Row(_KEEP, False),             # To + Pending In | S.N. | no state change
        S.FROM: Row(_KEEP, False, "subscribed"),  # From | S.N. [2] | no state change
        # From + Pending Out | S.N. [2] | no state change
        S.FROM_OUT: Row(_KEEP, False, "subscribed"),
        S.BOTH: Row(_KEEP, False, "subscribed"),  # Both | S.N. [2] | no state change
    }),
    # A.3.2 Unsubscribe (Table 7): [1] "Server SHOULD auto-reply with
    # 'unsubscribed'".
    **_table("unsubscribe", {
        S.NONE: Row(_KEEP, False),              # None | S.N. | no state change
        S.NONE_OUT: Row(_KEEP, False),          # None + Pending Out | S.N. | no state change
        S.NONE_IN: Row(S.NONE, True, "unsubscribed"),  # None + Pending In | MUST [1] | None
        # None + Pending Out+In | MUST [1] | None + Pending Out
        S.NONE_OUT_IN: Row(S.NONE_OUT, True, "unsubscribed"),
        S.TO: Row(_KEEP, False),                # To | S.N. | no state change
        S.TO_IN: Row(S.TO, True, "unsubscribed"),  # To + Pending In | MUST [1] | To
        S.FROM: Row(S.NONE, True, "unsubscribed"),  # From | MUST [1] | None
        # From + Pending Out | MUST [1] | None + Pending Out
        S.FROM_OUT: Row(S.NONE_OUT, True, "unsubscribed"),
        S.BOTH: Row(S.TO, True, "unsubscribed"),  # Both | MUST [1] | To
    }),
    # A.3.3 Subscribed (Table 8).
    **_table("subscribed", {
        S.NONE: Row(_KEEP, False),              # None | S.N. | no state change
        S.NONE_OUT: Row(S.TO, True),            # None + Pending Out | MUST | To
        S.NONE_IN: Row(_KEEP, False),           # None + Pending In | S.N. | no state change
        S.NONE_OUT_IN: Row(S.TO_IN, True),      # None + Pending Out+In | MUST | To + Pending In
        S.TO: Row(_KEEP, False),                # To | S.N. | no state change
        S.TO_IN: Row(_KEEP, False),             # To + Pending In | S.N. | no state change
        S.FROM: Row(_KEEP, False),              # From | S.N. | no state change
        S.FROM_OUT: Row(S.BOTH, True),          # From + Pending Out | MUST | Both
        S.BOTH: Row(_KEEP, False),              # Both | S.N. | no state change
    }),
    # A.3.4 Unsubscribed (Table 9).
    **_table("unsubscribed", {
        S.NONE: Row(_KEEP, False),              # None | S.N. | no state change
        S.NONE_OUT: Row(S.NONE, True),          # None + Pending Out | MUST | None
        S.NONE_IN: Row(_KEEP, False),           # None + Pending In | S.N. | no state change
        S.NONE_OUT_IN: Row(S.NONE_IN, True),    # None + Pending Out+In | MUST | None + Pending In
        S.TO: Row(S.NONE, True),                # To | MUST | None
        S.TO_IN: Row(S.NONE_IN, True),          # To + Pending In | MUST | None + Pending In
        S.FROM: Row(_KEEP, False),              # From | S.N. | no state change
        S.FROM_OUT: Row(S.FROM, True),          # From + Pending Out | MUST | From
        S.BOTH: Row(S.FROM, True),              # Both | MUST | From
    }),
}
del S


@dataclass(frozen=True)
class Outcome:
    """What a subscription stanza does, for the caller to carry out.

    ``contact`` is the record to store from now on, always a new object;
    None means there is none (delete any stored record). ``changed`` says the
    stored record differs from before (save it). ``push`` says the user's
    interested resources need a roster push (RFC 6121 §2.1.6): with
    ``item_element(contact)`` when ``visible(contact)``, else with
    ``removal_element(jid)``; it is False when only a hidden pending-in
    record changed. ``forward``: outbound, route the stanza to the contact;
    inbound, deliver it to the user. ``auto``: a presence type the server
    sends from the user's bare JID to the contact's bare JID on the user's
    behalf.
    """

    contact: Contact | None
    changed: bool
    forward: bool
    auto: str | None = None
    push: bool = False


def outbound(contact: Contact | None, jid: JID, type: str) -> Outcome:
    """The user sends presence of ``type`` to ``jid`` (RFC 6121 A.2, §3.1.2-§3.4).

    ``contact`` is the user's stored record for ``jid`` (None if there is
    none). Pre-approval is supported (§3.4): "subscribed" where no request is
    pending sets ``approved`` (rows marked "pre-approval [1]" in A.2.3) and
    "unsubscribed" in those states removes it (A.2.4 [1], §3.2.2 rule 2).
    """
    return _apply(OUTBOUND, contact, jid, type, preapproved=False)


def inbound(contact: Contact | None, jid: JID, type: str) -> Outcome:
    """The user's server receives presence of ``type`` from ``jid`` (RFC 6121 A.3).

    A "subscribe" that would be delivered as a new request while the user has
    pre-approved the contact (``approved``) is not delivered; the server
    answers "subscribed" and the state moves as if the user had approved
    (A.3.1 [1]: "change the state to 'From' rather than 'None + Pending
    In'"; §3.4.2: "MUST NOT deliver ... MUST automatically respond"). The
    pre-approval is consumed: the server keeps no record of it afterwards
    (§3.4.2, first Implementation Note, leaves this to the implementation).
    """
    return _apply(INBOUND, contact, jid, type,
                  preapproved=contact is not None and contact.approved)


def _apply(table: dict[tuple[State, str], Row], contact: Contact | None, jid: JID,
           type: str, *, preapproved: bool) -> Outcome:
    if type not in SUBSCRIPTION_TYPES:
        raise ValueError(f"{type!r} is not a subscription presence type")
    state = state_of(contact)
    row = table[(state, type)]
    new = row.new or state
    forward, auto = row.forward, row.auto
    if preapproved and type == "subscribe" and row.new is not None and row.forward:
        # Deliver the request and approve it at once: A.3.1 row then A.2.3 row.
        approval = OUTBOUND[(new, "subscribed")]
        assert approval.new is not None
        new, forward, auto = approval.new, False, "subscribed"

    approved = contact is not None and contact.approved
    if row.preapproval == "set":
        approved = True                      # §3.4.2 rules 3 and 4
    elif row.preapproval == "cancel":
        approved = False                     # §3.2.2 rule 2
    if new.subscription in ("from", "both"):
        approved = False                     # granted: nothing left to pre-approve

    # Only an inbound request from a stranger creates a hidden record (A.1
    # state 3); the user acting on it (subscribing, approving, denying,
    # pre-approving) makes it a roster item or removes it.
    hidden = contact.hidden if contact is not None else table is INBOUND
    if table is OUTBOUND and (row.new is not None or row.preapproval == "set"):
        hidden = False
    if new.subscription != "none" or new.pending_out or approved:
        hidden = False                       # every such state is a roster item

    was_item = visible(contact)
    after: Contact | None
    if not was_item and new is State.NONE and not approved:
        after = None                         # no roster item, no pending request
    else:
        base = contact if contact is not None else Contact(jid.bare)
        after = dataclasses.replace(
            base, subscription=new.subscription,
            ask="subscribe" if new.pending_out else None,
            pending_in=new.pending_in, approved=approved, groups=list(base.groups),
            hidden=hidden)
    changed = _record(after) != _record(contact)
    push = changed and (was_item or visible(after))
    return Outcome(after, changed, forward, auto, push)


def _record(c: Contact | None) -> tuple[object, ...] | None:
    if c is None:
        return None
    return (c.subscription, c.ask, c.pending_in, c.approved, c.hidden)


def visible(contact: Contact | None) -> bool:
    """Whether ``contact`` is a roster item the user may see (results, pushes).

    A ``hidden`` record only remembers a stranger's pending inbound request:
    it is not a roster item (RFC 6121 Appendix A.1 state 3: the server "MUST
    NOT create a roster item for the contact").
    """
    return contact is not None and not contact.hidden


# --------------------------------------------------------------------------
# Limits
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Limits:
    """Server-configured bounds on one user's roster (the defaults above)."""

    items: int = MAX_ITEMS          # roster items (visible records)
    pending: int = MAX_PENDING      # strangers' unanswered requests (hidden records)
    groups: int = MAX_GROUPS        # <group/> elements of one item
    length: int = MAX_LENGTH        # UTF-8 bytes of a name, and of each group


def admit(items: int, pending: int, before: Contact | None, after: Contact | None,
          limits: Limits) -> None:
    """Raise StanzaError if storing ``after`` in place of ``before`` (both for
    the same JID; None = no record) in a roster that holds ``items`` roster
    items and ``pending`` hidden records exceeds ``limits``.

    Only a change that adds a record can: one that makes a roster item
    (``visible(after)`` where ``before`` was none or hidden: a roster set, an
    outbound subscribe or pre-approval, approving a stranger's request), or
    one that records a new request from a stranger (a hidden record where
    there was none). Anything else (updating an item, a request from a
    contact already in the roster) passes even at the limit.

    * ``limits.items`` roster items held -> ``<not-allowed/>``. RFC 6121
      names no condition for a full roster (§2.3.3 lists forbidden,
      bad-request and not-acceptable, none about the number of items), so
      the choice is among RFC 6120's: ``<resource-constraint/>`` (§8.3.3.18,
      type wait) would tell the client to retry, which fails again until the
      user removes items; ``<policy-violation/>`` (§8.3.3.15) fits in words
      but older clients cannot parse it (slixmpp 1.17 raises on it);
      ``<not-allowed/>`` (§8.3.3.11, type cancel) is understood everywhere
      and says that retrying as is will not help.
    * ``limits.pending`` strangers' requests waiting -> ``<resource-constraint/>``
      to the requester (type wait): RFC 6121 §3.1.3 obliges the contact's
      server to keep a request only until it is answered, and lets it refuse
      what it cannot keep; the requester may well succeed later, once the
      user has answered some, so "wait" is the honest type.
    """
    if visible(after) and not visible(before):
        if items >= limits.items:
            raise StanzaError("not-allowed", f"a roster holds at most {limits.items} items")
    elif before is None and after is not None and after.hidden:
        if pending >= limits.pending:
            raise StanzaError("resource-constraint",
                              f"at most {limits.pending} subscription requests wait for an "
                              f"answer; try again later")


# --------------------------------------------------------------------------
# Roster sets (RFC 6121 §2.1.5, §2.3.3, §2.5)
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class RosterUpdate:
    """Add or replace the item for ``jid`` (RFC 6121 §2.3, §2.4: atomic)."""

    jid: JID
    name: str | None = None              # "" and absent are the same (§2.4.1)
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class RosterRemove:
    """Delete the item for ``jid`` (subscription='remove', RFC 6121 §2.5)."""

    jid: JID


RosterSet = RosterUpdate | RosterRemove


def parse_roster_set(query: Element, owner: JID, *, max_length: int = MAX_LENGTH,
                     max_groups: int = MAX_GROUPS) -> RosterSet:
    """The request in the ``<query xmlns='jabber:iq:roster'/>`` of a roster set.

    Raises StanzaError, per RFC 6121 §2.3.3 unless noted:

    * not exactly one ``<item/>`` -> bad-request (§2.1.5 rule 1, §2.3.3 1.)
    * duplicate groups, compared as PRECIS OpaqueString -> bad-request (§2.3.3 2.)
    * 'name' longer than ``max_length`` UTF-8 bytes -> not-acceptable
    * an empty ``<group/>`` -> not-acceptable
    * a group longer than ``max_length`` bytes -> not-acceptable
    * more than ``max_groups`` groups -> not-acceptable (a server-configured
      limit on the item, like the two above)
    * no 'jid' -> bad-request (§2.1.2.3: REQUIRED); an invalid one ->
      jid-malformed (RFC 6120 §8.3.3.8)
    * 'jid' is the owner's bare JID -> not-allowed (§2.3.3 Interoperability
      Note: "Some servers return a <not-allowed/>"); removing it is allowed

    A 'subscription' other than "remove" is ignored (§2.1.5 rule 2), and so
    are 'ask' and 'approved', which a client MUST NOT send (§2.1.2.1-2).
    Whether the sender may change this roster (<forbidden/>) and whether an
    item to remove exists (<item-not-found/>, §2.5.3) are the caller's.
    """
    if query.tag != _QUERY:
        raise StanzaError("bad-request", "expected <query xmlns='jabber:iq:roster'/>")
    items = [el for el in query if el.tag == _ITEM]
    if len(items) != 1:
        raise StanzaError("bad-request", "a roster set carries exactly one <item/>")
    item = items[0]
    jid = jid_attr(item)
    if item.get("subscription") == "remove":
        return RosterRemove(jid)
    if jid == owner.bare:
        raise StanzaError("not-allowed", "your own JID cannot be a roster item")

    name = item.get("name") or None
    if name is not None and len(name.encode()) > max_length:
        raise StanzaError("not-acceptable", f"'name' is longer than {max_length} bytes")
    groups: list[str] = []
    seen: set[str] = set()
    for el in item:
        if el.tag != _GROUP:
            continue
        group = el.text or ""
        if not group:
            raise StanzaError("not-acceptable", "empty <group/>")
        if len(group.encode()) > max_length:
            raise StanzaError("not-acceptable", f"<group/> is longer than {max_length} bytes")
        key = _group_key(group)
        if key in seen:
            raise StanzaError("bad-request", f"duplicate <group/> {group!r}")
        if len(groups) == max_groups:
            raise StanzaError("not-acceptable", f"an item has at most {max_groups} groups")
        seen.add(key)
        groups.append(group)
    return RosterUpdate(jid, name, tuple(groups))


def updated(contact: Contact | None, update: RosterUpdate) -> Contact:
    """The record after a roster set that adds or updates ``update.jid``.

    Name and groups are replaced as a whole: an update is a roster set like
    an add (§2.4) and carries the whole item, so a group the set leaves out
    is removed from the item and an absent name clears it; the subscription
    state (subscription, ask, approved, pending in) is kept, since a client
    cannot change it with a roster set (§2.1.5 rule 2). A hidden record of a
    stranger's pending request becomes a roster item (``hidden`` cleared):
    its pending request stays, now shown as an item of state "None + Pending
    In". ``contact`` is not modified.
    """
    base = contact if contact is not None else Contact(update.jid)
    return dataclasses.replace(base, jid=update.jid, name=update.name,
                               groups=list(update.groups), hidden=False)


def _group_key(group: str) -> str:
    """Group comparison: the XMPP resourcepart rules (OpaqueString), as §2.3.3 suggests."""
    try:
        return str(_OPAQUE.enforce(group))
    except UnicodeError:
        return unicodedata.normalize("NFC", group)


def item_element(contact: Contact) -> Element:
    """``<item xmlns='jabber:iq:roster' jid= name= subscription= ask= approved=>`` + groups.

    For roster results (§2.1.4) and pushes (§2.1.6); 'subscription' is always
    written, 'ask' for Pending Out (§2.1.2.2), 'approved' for a pre-approval
    (§2.1.2.1). A hidden pending-in record (see :func:`visible`) is refused
    with ValueError: it is not a roster item and must never reach a client.
    """
    if not visible(contact):
        raise ValueError(f"{contact.jid} is not a roster item (pending inbound request only)")
    state = state_of(contact)
    el = element(ROSTER, "item", jid=str(contact.jid))
    if contact.name:
        el.set("name", contact.name)
    el.set("subscription", state.subscription)
    if state.pending_out:
        el.set("ask", "subscribe")
    if contact.approved:
        el.set("approved", "true")
    for group in contact.groups:
        etree.SubElement(el, _GROUP).text = group
    return el


def removal_element(jid: JID) -> Element:
    """``<item jid=… subscription='remove'/>`` for the push of a deletion (§2.5.2)."""
    return element(ROSTER, "item", jid=str(jid), subscription="remove")
