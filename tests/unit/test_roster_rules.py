"""vinespy.rules.roster against RFC 6121: Appendix A row by row, pre-approval (§3.4),
roster-set checks (§2.1.5, §2.3.3, §2.5) and the <item/> builder.

The expected rows below are transcribed from the RFC's tables, not derived
from the module's own tables, so a wrong entry there fails here.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest
from lxml import etree

from vinespy.errors import StanzaError
from vinespy.jid import JID
from vinespy.modules.roster import cancellations
from vinespy.rules.roster import (
    INBOUND, OUTBOUND, ROSTER, Limits, RosterRemove, RosterUpdate, State, admit, inbound,
    item_element, outbound, parse_roster_set, removal_element, state_of, updated, visible,
)
from vinespy.storage import Contact
from vinespy.xml import Element, element

E_ACUTE = "\u00e9"      # two bytes in UTF-8
ALICE = JID.parse("alice@wonderland.lit")
NURSE = JID.parse("nurse@example.com")

# The state spellings of Appendix A.1 -> the Contact fields that reflect them.
STATES: dict[str, tuple[str, str | None, bool]] = {
    "None": ("none", None, False),
    "None + Pending Out": ("none", "subscribe", False),
    "None + Pending In": ("none", None, True),
    "None + Pending Out+In": ("none", "subscribe", True),
    "To": ("to", None, False),
    "To + Pending In": ("to", None, True),
    "From": ("from", None, False),
    "From + Pending Out": ("from", "subscribe", False),
    "Both": ("both", None, False),
}
SAME = "no state change"
PRE = "pre-approval"


class Expect(NamedTuple):
    table: str      # e.g. "A.3.1"
    type: str       # presence type
    state: str      # EXISTING STATE, as the RFC writes it
    forward: bool   # ROUTE?/DELIVER?: MUST -> True, S.N./M.N. -> False
    new: str        # NEW STATE, or SAME
    auto: str | None = None


def _rows(table: str, type: str, text: str) -> list[Expect]:
    """Parse 'EXISTING | ROUTE | NEW [| AUTO]' lines copied from an RFC table."""
    rows = []
    for line in text.strip().splitlines():
        cells = [c.strip() for c in line.split("|")]
        auto = cells[3] if len(cells) > 3 and cells[3] else None
        assert cells[1] in ("MUST", "S.N.", "M.N."), line
        rows.append(Expect(table, type, cells[0], cells[1] == "MUST", cells[2], auto))
    assert [r.state for r in rows] == list(STATES), table
    return rows


# "pre-approval [1]" rows of A.2.3 keep the state and set 'approved' (§3.4.2
# rule 3); "no state change [1]" rows of A.2.4 can cancel a pre-approval,
# which the rows here do not hold (both are checked further down).
EXPECTED = (
    _rows("A.2.1", "subscribe", """
        None                  | MUST | None + Pending Out
        None + Pending Out    | MUST | no state change
        None + Pending In     | MUST | None + Pending Out+In
        None + Pending Out+In | MUST | no state change
        To                    | MUST | no state change
        To + Pending In       | MUST | no state change
        From                  | MUST | From + Pending Out
        From + Pending Out    | MUST | no state change
        Both                  | MUST | no state change
    """)
    + _rows("A.2.2", "unsubscribe", """
        None                  | MUST | no state change
        None + Pending Out    | MUST | None
        None + Pending In     | MUST | no state change
        None + Pending Out+In | MUST | None + Pending In
        To                    | MUST | None
        To + Pending In       | MUST | None + Pending In
        From                  | MUST | no state change
        From + Pending Out    | MUST | From
        Both                  | MUST | From
    """)
    + _rows("A.2.3", "subscribed", """
        None                  | M.N. | pre-approval
        None + Pending Out    | M.N. | pre-approval
        None + Pending In     | MUST | From
        None + Pending Out+In | MUST | From + Pending Out
        To                    | M.N. | pre-approval
        To + Pending In       | MUST | Both
        From                  | M.N. | no state change
        From + Pending Out    | M.N. | no state change
        Both                  | M.N. | no state change
    """)
    + _rows("A.2.4", "unsubscribed", """
        None                  | S.N. | no state change
        None + Pending Out    | S.N. | no state change
        None + Pending In     | MUST | None
        None + Pending Out+In | MUST | None + Pending Out
        To                    | S.N. | no state change
        To + Pending In       | MUST | To
        From                  | MUST | None
        From + Pending Out    | MUST | None + Pending Out
        Both                  | MUST | To
    """)
    + _rows("A.3.1", "subscribe", """
        None                  | MUST | None + Pending In
        None + Pending Out    | MUST | None + Pending Out+In
        None + Pending In     | S.N. | no state change
        None + Pending Out+In | S.N. | no state change
        To                    | MUST | To + Pending In
        To + Pending In       | S.N. | no state change
        From                  | S.N. | no state change      | subscribed
        From + Pending Out    | S.N. | no state change      | subscribed
        Both                  | S.N. | no state change      | subscribed
    """)
    + _rows("A.3.2", "unsubscribe", """
        None                  | S.N. | no state change
        None + Pending Out    | S.N. | no state change
        None + Pending In     | MUST | None                 | unsubscribed
        None + Pending Out+In | MUST | None + Pending Out   | unsubscribed
        To                    | S.N. | no state change
        To + Pending In       | MUST | To                   | unsubscribed
        From                  | MUST | None                 | unsubscribed
        From + Pending Out    | MUST | None + Pending Out   | unsubscribed
        Both                  | MUST | To                   | unsubscribed
    """)
    + _rows("A.3.3", "subscribed", """
        None                  | S.N. | no state change
        None + Pending Out    | MUST | To
        None + Pending In     | S.N. | no state change
        None + Pending Out+In | MUST | To + Pending In
        To                    | S.N. | no state change
        To + Pending In       | S.N. | no state change
        From                  | S.N. | no state change
        From + Pending Out    | MUST | Both
        Both                  | S.N. | no state change
    """)
    + _rows("A.3.4", "unsubscribed", """
        None                  | S.N. | no state change
        None + Pending Out    | MUST | None
        None + Pending In     | S.N. | no state change
        None + Pending Out+In | MUST | None + Pending In
        To                    | MUST | None
        To + Pending In       | MUST | None + Pending In
        From                  | S.N. | no state change
        From + Pending Out    | MUST | From
        Both                  | MUST | From
    """)
)


def _row_id(e: Expect) -> str:
    return f"{e.table} {e.state.replace(' ', '')} {e.type}"


def contact_in(state: str, approved: bool = False) -> Contact:
    """A roster item for NURSE in ``state``, with a handle and a group the user gave it."""
    sub, ask, pending_in = STATES[state]
    return Contact(NURSE, name="Nurse", subscription=sub, ask=ask, groups=["Servants"],
                   approved=approved, pending_in=pending_in)


def fields_of(c: Contact | None) -> tuple[str, str | None, bool]:
    return ("none", None, False) if c is None else (c.subscription, c.ask, c.pending_in)


# --------------------------------------------------------------------------
# Appendix A, one test per table row (72)
# --------------------------------------------------------------------------

def test_every_table_row_is_covered() -> None:
    """The expectations and the module's tables both hold 9 states x 4 types per direction."""
    assert len(EXPECTED) == 72
    assert len(OUTBOUND) == len(INBOUND) == 36
    out = {(State(e.state), e.type) for e in EXPECTED if e.table.startswith("A.2")}
    inb = {(State(e.state), e.type) for e in EXPECTED if e.table.startswith("A.3")}
    assert out == set(OUTBOUND) and inb == set(INBOUND)


@pytest.mark.parametrize("e", EXPECTED, ids=_row_id)
def test_appendix_a_row(e: Expect) -> None:
    """One Appendix A row: new state, route/deliver, auto-reply, and the item's other data kept."""
    before = contact_in(e.state)
    fn = outbound if e.table.startswith("A.2") else inbound
    out = fn(before, NURSE, e.type)
    want = e.state if e.new in (SAME, PRE) else e.new
    assert out.contact is not None and out.contact is not before
    assert fields_of(out.contact) == STATES[want]
    assert state_of(out.contact) is State(want)
    assert out.forward is e.forward
    assert out.auto == e.auto
    assert out.changed is (e.new != SAME)
    assert out.push is out.changed                       # a named item is a visible item
    assert (out.contact.name, out.contact.groups) == ("Nurse", ["Servants"])
    assert out.contact.approved is (e.new == PRE)
    assert fields_of(before) == STATES[e.state]          # the input is not modified


# --------------------------------------------------------------------------
# "None" includes "not in the roster at all" (Appendix A.1 Implementation Note)
# --------------------------------------------------------------------------

def test_outbound_subscribe_to_stranger_creates_item() -> None:
    """A.2.1 None row: a subscribe to an unknown JID creates a None + Pending Out item (§3.1.2)."""
    out = outbound(None, NURSE.with_resource("pda"), "subscribe")
    assert out.contact == Contact(NURSE, subscription="none", ask="subscribe")
    assert out.changed and out.push and out.forward and out.auto is None
    assert visible(out.contact)


def test_inbound_subscribe_from_stranger_is_recorded_not_a_roster_item() -> None:
    """A.3.1 None row, unknown JID: delivered and noted, no roster item, no push (A.1 state 3)."""
    out = inbound(None, NURSE, "subscribe")
    assert out.contact == Contact(NURSE, pending_in=True, hidden=True)
    assert out.changed and out.forward and not out.push
    assert not visible(out.contact)
    with pytest.raises(ValueError):
        item_element(out.contact)


def test_repeated_subscribe_from_stranger_is_not_delivered_again() -> None:
    """A.3.1 None + Pending In row for a hidden record: S.N. deliver, nothing changes."""
    pending = Contact(NURSE, pending_in=True, hidden=True)
    out = inbound(pending, NURSE, "subscribe")
    assert out.contact == pending and not out.changed and not out.forward and not out.push


@pytest.mark.parametrize("direction,type",
                         [("outbound", "unsubscribed"), ("inbound", "unsubscribe")],
                         ids=["A.2.4 denial", "A.3.2 withdrawal"])
def test_answered_stranger_request_leaves_nothing(direction: str, type: str) -> None:
    """None + Pending In -> None for a hidden record: the record goes away, no roster push."""
    fn = outbound if direction == "outbound" else inbound
    out = fn(Contact(NURSE, pending_in=True, hidden=True), NURSE, type)
    assert out.contact is None and out.changed and out.forward and not out.push


def test_approving_stranger_creates_item() -> None:
    """A.2.3 None + Pending In row for a hidden record: "From" makes it a roster item (pushed)."""
    out = outbound(Contact(NURSE, pending_in=True, hidden=True), NURSE, "subscribed")
    assert out.contact == Contact(NURSE, subscription="from")         # hidden cleared
    assert out.changed and out.forward and out.push and visible(out.contact)


def test_subscribing_back_to_stranger_creates_item() -> None:
    """A.2.1 None + Pending In row for a hidden record: Pending Out+In is a roster item (ask)."""
    out = outbound(Contact(NURSE, pending_in=True, hidden=True), NURSE, "subscribe")
    assert fields_of(out.contact) == ("none", "subscribe", True)
    assert out.push and visible(out.contact)
    assert out.contact is not None and not out.contact.hidden


@pytest.mark.parametrize("direction,type", [
    ("outbound", "unsubscribe"),
    ("inbound", "subscribed"), ("inbound", "unsubscribed"),
])
def test_hidden_record_stays_hidden(direction: str, type: str) -> None:
    """A "no state change" row for a stranger's pending request keeps it hidden, unpushed."""
    fn = outbound if direction == "outbound" else inbound
    out = fn(Contact(NURSE, pending_in=True, hidden=True), NURSE, type)
    assert out.contact == Contact(NURSE, pending_in=True, hidden=True)
    assert not out.changed and not out.push and not visible(out.contact)


def test_user_item_with_pending_request_is_visible() -> None:
    """An item the user made (not hidden) stays visible in "None + Pending In", even bare."""
    out = inbound(Contact(NURSE), NURSE, "subscribe")
    assert out.contact == Contact(NURSE, pending_in=True)
    assert out.changed and out.forward and out.push and visible(out.contact)


@pytest.mark.parametrize("direction,type", [
    ("outbound", "unsubscribe"), ("outbound", "unsubscribed"),
    ("inbound", "subscribed"), ("inbound", "unsubscribe"), ("inbound", "unsubscribed"),
])
def test_no_state_change_for_stranger_creates_nothing(direction: str, type: str) -> None:
    """Rows "None | ... | no state change" for an unknown JID store nothing and push nothing."""
    fn = outbound if direction == "outbound" else inbound
    out = fn(None, NURSE, type)
    assert out.contact is None and not out.changed and not out.push
    assert out.forward is (direction == "outbound" and type == "unsubscribe")   # A.2.2 MUST


def test_roster_set_makes_hidden_record_an_item() -> None:
    """updated(): a roster set for a stranger with a pending request creates the item,
    keeps the request (None + Pending In) and clears hidden."""
    hidden = Contact(NURSE, pending_in=True, hidden=True)
    item = updated(hidden, RosterUpdate(NURSE, "Nurse", ("Servants",)))
    assert item == Contact(NURSE, name="Nurse", groups=["Servants"], pending_in=True)
    assert visible(item) and state_of(item) is State.NONE_IN
    assert hidden.hidden and hidden.name is None                  # the input is not modified


def test_roster_set_update_keeps_subscription_state() -> None:
    """updated(): name and groups are replaced, subscription/ask/approved kept."""
    before = Contact(NURSE, name="Old", subscription="to", ask=None, groups=["A", "B"],
                     approved=True)
    item = updated(before, RosterUpdate(NURSE, None, ("C",)))
    assert item == Contact(NURSE, name=None, subscription="to", groups=["C"], approved=True)
    assert updated(None, RosterUpdate(NURSE, "N")) == Contact(NURSE, name="N")


def test_user_item_in_none_state_survives_withdrawn_request() -> None:
    """A named item of the user's, None + Pending In -> None, stays a roster item."""
    out = inbound(contact_in("None + Pending In"), NURSE, "unsubscribe")
    assert out.contact is not None and out.contact.name == "Nurse" and visible(out.contact)


def test_unknown_type_is_refused() -> None:
    """Only the four subscription types are state-machine input."""
    with pytest.raises(ValueError):
        outbound(None, NURSE, "probe")
    with pytest.raises(ValueError):
        inbound(None, NURSE, "unavailable")


def test_impossible_stored_flags_are_normalised() -> None:
    """ask on a "to" item or pending_in on a "from" item is no Appendix A state: dropped."""
    assert state_of(Contact(NURSE, subscription="to", ask="subscribe")) is State.TO
    assert state_of(Contact(NURSE, subscription="both", pending_in=True)) is State.BOTH
    with pytest.raises(ValueError):
        state_of(Contact(NURSE, subscription="remove"))


# --------------------------------------------------------------------------
# Pre-approval (RFC 6121 §3.4, A.2.3 [1], A.2.4 [1], A.3.1 [1])
# --------------------------------------------------------------------------

@pytest.mark.parametrize("state", ["None", "None + Pending Out", "To"])
def test_preapproval_is_noted_not_routed(state: str) -> None:
    """§3.4.2 rule 3: 'approved' set, item pushed, the subscribed MUST NOT be routed."""
    out = outbound(contact_in(state), NURSE, "subscribed")
    assert out.contact is not None and out.contact.approved
    assert fields_of(out.contact) == STATES[state]
    assert out.changed and out.push and not out.forward and out.auto is None


def test_preapproval_of_stranger_creates_item() -> None:
    """§3.4.2 rule 4: a None item with approved='true' is created and pushed, nothing routed."""
    out = outbound(None, NURSE, "subscribed")
    assert out.contact == Contact(NURSE, approved=True)
    assert out.changed and out.push and not out.forward and visible(out.contact)
    assert item_element(out.contact).get("approved") == "true"


def test_repeated_preapproval_changes_nothing() -> None:
    """A second pre-approval finds 'approved' already set: nothing to save or push."""
    out = outbound(contact_in("None", approved=True), NURSE, "subscribed")
    assert out.contact is not None and out.contact.approved
    assert not out.changed and not out.push and not out.forward


@pytest.mark.parametrize("state", ["From", "From + Pending Out", "Both"])
def test_preapproval_ignored_when_contact_already_subscribed(state: str) -> None:
    """§3.4.2 rule 1: "Both", "From", "From + Pending Out": silently ignored."""
    out = outbound(contact_in(state), NURSE, "subscribed")
    assert out.contact is not None and not out.contact.approved
    assert not out.changed and not out.forward


@pytest.mark.parametrize("state,want", [
    ("None", "From"),                            # A.3.1 [1]: "From" rather than "None + Pending In"
    ("None + Pending Out", "From + Pending Out"),  # A.3.1 then A.2.3 (None + Pending Out+In row)
    ("To", "Both"),                              # A.3.1 then A.2.3 (To + Pending In row)
])
def test_preapproved_subscribe_is_answered_by_server(state: str, want: str) -> None:
    """§3.4.2: MUST NOT deliver the subscribe; auto-reply subscribed; state as if approved."""
    out = inbound(contact_in(state, approved=True), NURSE, "subscribe")
    assert out.contact is not None and fields_of(out.contact) == STATES[want]
    assert not out.forward and out.auto == "subscribed"
    assert out.changed and out.push
    assert not out.contact.approved                 # used up: no record is kept


@pytest.mark.parametrize("state", ["None", "None + Pending Out", "To"])
def test_unsubscribed_cancels_preapproval(state: str) -> None:
    """A.2.4 [1], §3.2.2 rule 2: remove the pre-approval (push) and MUST NOT route."""
    out = outbound(contact_in(state, approved=True), NURSE, "unsubscribed")
    assert out.contact is not None and not out.contact.approved
    assert fields_of(out.contact) == STATES[state]
    assert out.changed and out.push and not out.forward


def test_cancelled_preapproval_of_bare_item_keeps_item() -> None:
    """A pre-approval-only item stays in the roster once cancelled (the user may remove it)."""
    out = outbound(Contact(NURSE, approved=True), NURSE, "unsubscribed")
    assert out.contact == Contact(NURSE) and out.push and visible(out.contact)


def test_preapproval_survives_unrelated_transition() -> None:
    """A To item with a pre-approval that loses its "to" (A.3.4) keeps the pre-approval."""
    out = inbound(contact_in("To", approved=True), NURSE, "unsubscribed")
    assert out.contact is not None and out.contact.approved and state_of(out.contact) is State.NONE


# --------------------------------------------------------------------------
# Roster sets (RFC 6121 §2.1.5, §2.3.3, §2.5)
# --------------------------------------------------------------------------

def query(*items: str) -> Element:
    """A parsed <query xmlns='jabber:iq:roster'> holding ``items`` (XML text)."""
    return etree.fromstring(f"<query xmlns='{ROSTER}'>{''.join(items)}</query>")


def test_roster_set_update() -> None:
    """§2.3.1: jid, name and groups of the one item, in order."""
    got = parse_roster_set(query(
        "<item jid='Nurse@Example.com' name='Nurse'><group>Servants</group>"
        "<group>Friends</group></item>"), ALICE.with_resource("balcony"))
    assert got == RosterUpdate(NURSE, "Nurse", ("Servants", "Friends"))


def test_roster_set_minimal_item() -> None:
    """§2.1.2.4/§2.1.2.6: name and groups are optional; none means no handle, no group."""
    assert parse_roster_set(query("<item jid='nurse@example.com'/>"), ALICE) == RosterUpdate(NURSE)


def test_roster_set_empty_name_is_no_name() -> None:
    """§2.4.1 Implementation Note: an empty 'name' is the same as no 'name'."""
    got = parse_roster_set(query("<item jid='nurse@example.com' name=''/>"), ALICE)
    assert got == RosterUpdate(NURSE, None)


def test_roster_set_remove() -> None:
    """§2.5.1: subscription='remove' deletes; name and groups do not matter."""
    got = parse_roster_set(query(
        "<item jid='nurse@example.com' subscription='remove' name=''><group/></item>"), ALICE)
    assert got == RosterRemove(NURSE)


@pytest.mark.parametrize("state, sent", [
    ("None", ()),
    ("None + Pending Out", ("unsubscribe",)),
    ("None + Pending In", ("unsubscribed",)),
    ("None + Pending Out+In", ("unsubscribed", "unsubscribe")),
    ("To", ("unsubscribe",)),
    ("To + Pending In", ("unsubscribed", "unsubscribe")),
    ("From", ("unsubscribed",)),
    ("From + Pending Out", ("unsubscribed", "unsubscribe")),
    ("Both", ("unsubscribed", "unsubscribe")),
])
def test_removal_cancels_subscriptions_both_ways(state: str, sent: tuple[str, ...]) -> None:
    """§2.5.2 (vinespy.modules.roster.cancellations): unsubscribed where the contact
    has (or asked for) the user's presence, unsubscribe where the user has (or
    asked for) the contact's."""
    subscription, ask, pending_in = STATES[state]
    assert cancellations(Contact(NURSE, subscription=subscription, ask=ask,
                                 pending_in=pending_in)) == sent


@pytest.mark.parametrize("value", ["both", "none", "to", "from", "bogus"])
def test_roster_set_ignores_other_subscription_values(value: str) -> None:
    """§2.1.5 rule 2: the server MUST ignore any 'subscription' other than "remove"."""
    got = parse_roster_set(query(f"<item jid='nurse@example.com' subscription='{value}'/>"), ALICE)
    assert got == RosterUpdate(NURSE)


def test_roster_set_ignores_ask_and_approved() -> None:
    """§2.1.2.1-2: 'ask' and 'approved' from a client carry no meaning for the server."""
    got = parse_roster_set(query(
        "<item jid='nurse@example.com' ask='subscribe' approved='true'/>"), ALICE)
    assert got == RosterUpdate(NURSE)


def test_roster_set_ignores_foreign_children() -> None:
    """Extension elements beside the item and inside it are not items or groups."""
    got = parse_roster_set(query(
        "<x xmlns='urn:example'/><item jid='nurse@example.com'>"
        "<group xmlns='urn:example'>Other</group><group>Servants</group></item>"), ALICE)
    assert got == RosterUpdate(NURSE, None, ("Servants",))


def test_roster_set_own_jid_can_be_removed() -> None:
    """The not-allowed check is for adding oneself; deleting such an item stays possible."""
    got = parse_roster_set(query("<item jid='alice@wonderland.lit' subscription='remove'/>"),
                           ALICE.with_resource("r"))
    assert got == RosterRemove(ALICE)


def test_roster_set_length_limit_is_configurable() -> None:
    """§2.3.3: the limit on name and group is server-configured."""
    q = query("<item jid='nurse@example.com' name='abcdef'><group>xyz</group></item>")
    assert parse_roster_set(q, ALICE, max_length=6) == RosterUpdate(NURSE, "abcdef", ("xyz",))
    with pytest.raises(StanzaError) as err:
        parse_roster_set(q, ALICE, max_length=5)
    assert err.value.condition == "not-acceptable"


@pytest.mark.parametrize("xml,condition", [
    pytest.param(
        "<item jid='nurse@example.com'/><item jid='mother@example.com'/>", "bad-request",
        id="2.3.3 more than one item"),
    pytest.param("", "bad-request", id="2.1.5 no item"),
    pytest.param(
        "<item jid='nurse@example.com'><group>Servants</group><group>Servants</group></item>",
        "bad-request", id="2.3.3 duplicate groups"),
    pytest.param(
        "<item jid='nurse@example.com'><group>\u00dcbung</group><group>U\u0308bung</group></item>",
        "bad-request", id="2.3.3 duplicate groups after OpaqueString"),
    pytest.param(
        f"<item jid='nurse@example.com' name='{'n' * 1024}'/>", "not-acceptable",
        id="2.3.3 oversized handle"),
    pytest.param(
        f"<item jid='nurse@example.com' name='{E_ACUTE * 512}'/>", "not-acceptable",
        id="2.3.3 oversized handle counted in bytes"),
    pytest.param(
        "<item jid='nurse@example.com'><group></group></item>", "not-acceptable",
        id="2.3.3 empty group"),
    pytest.param(
        f"<item jid='nurse@example.com'><group>{'g' * 1024}</group></item>", "not-acceptable",
        id="2.3.3 oversized group"),
    pytest.param("<item name='Nurse'/>", "bad-request", id="2.1.2.3 no jid"),
    pytest.param("<item jid='nurse@@example.com'/>", "jid-malformed", id="invalid jid"),
    pytest.param("<item jid=''/>", "jid-malformed", id="empty jid"),
    pytest.param(
        "<item jid='Alice@wonderland.lit'/>", "not-allowed",
        id="2.3.3 interop note own bare JID"),
])
def test_roster_set_errors(xml: str, condition: str) -> None:
    """Each §2.3.3 violation yields its stanza error condition."""
    with pytest.raises(StanzaError) as err:
        parse_roster_set(query(xml), ALICE.with_resource("balcony"))
    assert err.value.condition == condition


def test_roster_set_wrong_element() -> None:
    """Only a <query/> in jabber:iq:roster is a roster set."""
    with pytest.raises(StanzaError) as err:
        parse_roster_set(element("jabber:iq:private", "query"), ALICE)
    assert err.value.condition == "bad-request"


def test_limits_at_exactly_1023_bytes_pass() -> None:
    """The default limit is 1023 bytes: a name and a group of that size are accepted."""
    name, group = "n" * 1023, "g" * 1023
    got = parse_roster_set(query(
        f"<item jid='nurse@example.com' name='{name}'><group>{group}</group></item>"), ALICE)
    assert got == RosterUpdate(NURSE, name, (group,))


def groups(n: int) -> str:
    body = "".join(f"<group>g{i}</group>" for i in range(n))
    return f"<item jid='nurse@example.com'>{body}</item>"


def test_group_count_limit() -> None:
    """§2.3.3: the number of groups is a server-configured limit too (default 25):
    one more is not-acceptable, and the limit is configurable."""
    assert len(parse_roster_set(query(groups(25)), ALICE).groups) == 25
    for q, kw in ((groups(26), {}), (groups(3), {"max_groups": 2})):
        with pytest.raises(StanzaError) as err:
            parse_roster_set(query(q), ALICE, **kw)
        assert err.value.condition == "not-acceptable" and "groups" in (err.value.text or "")


# --------------------------------------------------------------------------
# Limits on the records a roster holds
# --------------------------------------------------------------------------

LIMITS = Limits(items=2, pending=1)
ITEM_A, ITEM_B = Contact(JID.parse("a@x.example")), Contact(JID.parse("b@x.example"))
STRANGER = Contact(JID.parse("s@x.example"), pending_in=True, hidden=True)
FULL = {ITEM_A.jid: ITEM_A, ITEM_B.jid: ITEM_B, STRANGER.jid: STRANGER}


def refusal(roster: dict[JID, Contact], before: Contact | None, after: Contact | None
            ) -> str | None:
    hidden = sum(1 for c in roster.values() if c.hidden)
    try:
        admit(len(roster) - hidden, hidden, before, after, LIMITS)
    except StanzaError as exc:
        return exc.condition
    return None


def test_new_item_in_full_roster_is_not_allowed() -> None:
    """Every way of making a roster item counts against max items: a roster set,
    an outbound subscribe or pre-approval, approving a stranger; hidden records
    are not items."""
    new = JID.parse("new@x.example")
    assert refusal(FULL, None, updated(None, RosterUpdate(new))) == "not-allowed"
    assert refusal(FULL, None, outbound(None, new, "subscribe").contact) == "not-allowed"
    assert refusal(FULL, None, outbound(None, new, "subscribed").contact) == "not-allowed"
    assert refusal(FULL, STRANGER,
                   outbound(STRANGER, STRANGER.jid, "subscribed").contact) == "not-allowed"
    assert refusal({ITEM_A.jid: ITEM_A, STRANGER.jid: STRANGER}, None,
                   outbound(None, new, "subscribe").contact) is None


def test_changes_to_held_records_pass_at_the_limit() -> None:
    """Updating, removing or re-subscribing what the roster holds adds nothing."""
    assert refusal(FULL, ITEM_A, outbound(ITEM_A, ITEM_A.jid, "subscribe").contact) is None
    assert refusal(FULL, ITEM_A, updated(ITEM_A, RosterUpdate(ITEM_A.jid, "A"))) is None
    assert refusal(FULL, ITEM_A, None) is None
    assert refusal(FULL, ITEM_A, inbound(ITEM_A, ITEM_A.jid, "subscribe").contact) is None
    assert refusal(FULL, STRANGER, outbound(STRANGER, STRANGER.jid, "unsubscribed").contact) \
        is None


def test_strangers_requests_are_capped() -> None:
    """A new request from a stranger (a hidden record) counts against max pending,
    not against max items; the error says to wait (type wait)."""
    other = JID.parse("other@x.example")
    hidden = inbound(None, other, "subscribe").contact
    assert hidden is not None and hidden.hidden
    assert refusal(FULL, None, hidden) == "resource-constraint"
    assert refusal({ITEM_A.jid: ITEM_A, ITEM_B.jid: ITEM_B}, None, hidden) is None
    with pytest.raises(StanzaError) as err:
        admit(2, 1, None, hidden, LIMITS)
    assert err.value.type == "wait"


# --------------------------------------------------------------------------
# <item/> for results and pushes (§2.1.4, §2.1.6, §2.1.2.1-2, §2.5.2)
# --------------------------------------------------------------------------

def test_item_element_attributes() -> None:
    """jid, name, subscription, ask, approved and groups, in jabber:iq:roster."""
    el = item_element(Contact(NURSE, name="Nurse", subscription="from", ask="subscribe",
                              groups=["Servants", "Friends"]))
    assert el.tag == f"{{{ROSTER}}}item"
    assert dict(el.attrib) == {"jid": "nurse@example.com", "name": "Nurse",
                               "subscription": "from", "ask": "subscribe"}
    assert [g.text for g in el] == ["Servants", "Friends"]
    assert all(g.tag == f"{{{ROSTER}}}group" for g in el)


def test_item_element_minimal() -> None:
    """No handle, no group: only jid and subscription (always written)."""
    el = item_element(Contact(NURSE))
    assert dict(el.attrib) == {"jid": "nurse@example.com", "subscription": "none"}
    assert len(el) == 0


def test_item_element_never_shows_pending_in() -> None:
    """Pending In has no attribute (§2.1.2): To + Pending In is shown as plain "to"."""
    el = item_element(contact_in("To + Pending In"))
    assert el.get("subscription") == "to" and el.get("ask") is None


def test_item_element_serializes_inside_query() -> None:
    """In a <query/> of the same namespace the item carries no redundant xmlns."""
    q = element(ROSTER, "query")
    q.append(item_element(Contact(NURSE, name="Nurse", groups=["Servants"])))
    assert etree.tostring(q) == (
        b'<query xmlns="jabber:iq:roster"><item jid="nurse@example.com" name="Nurse" '
        b'subscription="none"><group>Servants</group></item></query>')


@pytest.mark.parametrize("contact", [
    Contact(NURSE, name="Nurse", subscription="both", groups=["Servants", "\u00dcbung"]),
    Contact(NURSE, subscription="none", ask="subscribe"),
    Contact(NURSE, name="N", subscription="to", approved=True, groups=["a", "b", "c"]),
], ids=["both+groups", "pending out", "approved"])
def test_item_element_round_trip(contact: Contact) -> None:
    """parse_roster_set(item_element(c)) gives back c's jid, name and groups."""
    q = element(ROSTER, "query")
    q.append(item_element(contact))
    parsed = parse_roster_set(etree.fromstring(etree.tostring(q)), ALICE)
    assert parsed == RosterUpdate(contact.jid, contact.name, tuple(contact.groups))


def test_removal_element() -> None:
    """§2.5.2: the push of a deletion carries subscription='remove'."""
    el = removal_element(NURSE)
    assert el.tag == f"{{{ROSTER}}}item"
    assert dict(el.attrib) == {"jid": "nurse@example.com", "subscription": "remove"}
    q = element(ROSTER, "query")
    q.append(el)
    assert parse_roster_set(q, ALICE) == RosterRemove(NURSE)


@pytest.mark.parametrize("contact,shown", [
    (None, False),
    (Contact(NURSE, pending_in=True, hidden=True), False),
    (Contact(NURSE, pending_in=True), True),
    (Contact(NURSE), True),
    (Contact(NURSE, pending_in=True, name="Nurse"), True),
    (Contact(NURSE, pending_in=True, groups=["Servants"]), True),
    (Contact(NURSE, pending_in=True, ask="subscribe"), True),
    (Contact(NURSE, pending_in=True, subscription="to"), True),
    (Contact(NURSE, approved=True), True),
], ids=["absent", "hidden pending-in", "user's pending-in", "bare item", "named", "grouped",
        "pending out+in", "to+in", "approved"])
def test_visible(contact: Contact | None, shown: bool) -> None:
    """Only a record marked hidden (a stranger's pending request) is not a roster item."""
    assert visible(contact) is shown
