"""Cross-node stanzas kept until confirmed (vinespy/cluster/confirm.py): the
sender's Outbox and the receiver's Gate, without Redis, through the
failover cases they exist for."""

from __future__ import annotations

from vinespy.cluster.confirm import (ADMIT, DUPLICATE, GAP, Gate, Outbox, Sent,
                                     parse_confirmation)

A = Gate.key("node-a", "inc-1")


def sent(seq: int, stanzas: int = 1) -> Sent:
    return Sent(seq, [b"s%d" % seq] * stanzas, stanzas, float(seq))


def test_outbox_keeps_until_confirmed_in_order() -> None:
    box = Outbox()
    for q in (1, 2, 3):
        box.add("b", sent(q, stanzas=2))
    box.add("c", sent(1))
    assert box.stanzas == 7 and len(box) == 4
    assert box.base("b", 4) == 1 and box.base("x", 9) == 9
    assert box.confirm("b", 2) == 4
    assert [s.seq for s in box.entries("b")] == [3] and box.base("b", 4) == 3
    assert box.confirm("b", 1) == 0            # an old confirmation changes nothing
    assert box.confirm("b", 3) == 2 and box.nodes() == ["c"] and box.stanzas == 1


def test_outbox_take_gives_up_in_order() -> None:
    box = Outbox()
    for q in (4, 5, 6):
        box.add("b", sent(q))
    assert [s.seq for s in box.take("b", 5)] == [4, 5]
    assert box.take("b", 5) == []              # taken once only
    assert [s.seq for s in box.take("b")] == [6]
    assert box.stanzas == 0 and box.nodes() == [] and box.oldest("b") is None


def test_gate_admits_in_order_and_skips_duplicates() -> None:
    g = Gate()
    assert [g.admit(A, q, 1, 0.0) for q in (1, 2, 2, 1, 3)] == [
        ADMIT, ADMIT, DUPLICATE, DUPLICATE, ADMIT]
    assert g.duplicates == 2


def test_gate_failover_lost_entry_then_resend() -> None:
    """Entry 5 was acknowledged by the old primary and lost with it; 6 and
    7 arrive through the new one: dropped (a gap, reported), until the
    sender sends 5, 6, 7 again; then each is handled once, in order."""
    g = Gate()
    for q in (1, 2, 3, 4):
        assert g.admit(A, q, q, 0.0) == ADMIT
        g.handled(A, q)
    assert g.admit(A, 6, 5, 0.0) == GAP and g.admit(A, 7, 5, 0.0) == GAP
    assert g.confirmations(0.0) == {A: "4!"}
    assert parse_confirmation("4!") == (4, True)
    assert [g.admit(A, q, 5, 1.0) for q in (5, 6, 7)] == [ADMIT] * 3
    for q in (5, 6, 7):
        g.handled(A, q)
    assert g.confirmations(1.0) == {A: "7"}


def test_gate_new_receiver_starts_at_the_base() -> None:
    """A receiver that restarted knows nothing of the sender: it starts at
    the entry's base (everything before was confirmed), and an entry past
    the base is a gap (the ones before it were lost with the old process)."""
    g = Gate()
    assert g.admit(A, 12, 10, 0.0) == GAP
    assert g.admit(A, 10, 10, 0.0) == ADMIT


def test_gate_skips_ahead_to_a_higher_base() -> None:
    """The sender gave up entries 3..5 (it saw this node declared dead and
    re-routed them itself): its next entry's base says so, and it is admitted."""
    g = Gate()
    assert g.admit(A, 1, 1, 0.0) == ADMIT and g.admit(A, 2, 1, 0.0) == ADMIT
    assert g.admit(A, 6, 6, 0.0) == ADMIT
    assert g.admit(A, 5, 5, 0.0) == DUPLICATE


def test_gate_confirms_only_what_was_handled() -> None:
    g = Gate()
    assert g.admit(A, 1, 1, 0.0) == ADMIT
    assert g.confirmations(0.0) == {}          # admitted, its items not handled yet
    g.handled(A, 1)
    assert g.confirmations(0.0) == {A: "1"}


def test_gate_forgets_idle_senders() -> None:
    g = Gate()
    g.admit(A, 1, 1, 0.0)
    g.handled(A, 1)
    assert g.confirmations(Gate.FORGET_AFTER + 1) == {}
    assert g.admit(A, 2, 2, Gate.FORGET_AFTER + 2) == ADMIT     # b restarts it


def test_parse_confirmation_garbage_is_nothing() -> None:
    assert parse_confirmation(None) == (0, False)
    assert parse_confirmation(b"") == (0, False)
    assert parse_confirmation(b"x!") == (0, False)
    assert parse_confirmation(b"17") == (17, False)


def test_parse_switch() -> None:
    """+switch-master messages (vinespy/cluster/switches.py): only ours count."""
    from vinespy.cluster.switches import parse_switch
    assert parse_switch(b"vinespy 10.0.0.1 6379 10.0.0.2 6380", "vinespy") == "10.0.0.2:6380"
    assert parse_switch("vinespy ::1 6379 ::2 6380", "vinespy") == "[::2]:6380"
    assert parse_switch(b"other 10.0.0.1 6379 10.0.0.2 6380", "vinespy") is None
    assert parse_switch(b"vinespy garbage", "vinespy") is None


def test_gate_seeded_from_a_previous_process() -> None:
    """A node restarted: what its previous process confirmed (its acks as it
    left them) is not admitted again when a sender, not having read that
    yet, sends it again; what comes after is."""
    g = Gate()
    g.seed({A.encode(): b"7", b"node-c/inc-9": b"3!", b"junk": b"x"}, 0.0)
    assert g.admit(A, 7, 6, 0.0) == DUPLICATE
    assert g.admit(A, 8, 6, 0.0) == ADMIT
    assert g.confirmations(0.0) == {A: "7", "node-c/inc-9": "3"}


def test_outbox_counts_per_node() -> None:
    box = Outbox()
    box.add("b", sent(1, stanzas=3))
    box.add("c", sent(1, stanzas=2))
    assert (box.stanzas_for("b"), box.stanzas_for("c"), box.stanzas_for("x")) == (3, 2, 0)
    box.confirm("b", 1)
    box.take("c")
    assert box.stanzas == 0 and box.stanzas_for("b") == 0 and box.stanzas_for("c") == 0
