"""XEP-0198 counting and tokens (vinespy.rules.sm), without I/O."""

from __future__ import annotations

import pytest

from vinespy.rules import sm


def test_h_counts_what_was_sent_and_acknowledging_forgets_it() -> None:
    q = sm.Unacked()
    for i in range(5):
        q.add(f"<message id='{i}'/>".encode())
    assert q.sent == 5
    assert q.ack(3) == 3
    assert list(q.queue) == [b"<message id='3'/>", b"<message id='4'/>"]
    assert q.ack(3) == 0                        # the same ack again: nothing more
    assert q.ack(5) == 2 and not q.queue


def test_h_wraps_at_2_to_the_32() -> None:
    """XEP-0198 §4: after 2^32 - 1 comes 0."""
    q = sm.Unacked(acked=sm.MOD - 2)
    for i in range(4):
        q.add(b"x%d" % i)
    assert q.sent == 2
    assert q.ack(sm.MOD - 1) == 1
    assert q.ack(1) == 2                        # past the wrap
    assert list(q.queue) == [b"x3"]
    assert q.ack(2) == 1 and q.acked == 2


def test_acknowledging_more_than_was_sent_is_refused() -> None:
    q = sm.Unacked(acked=sm.MOD - 1)
    q.add(b"a")
    with pytest.raises(sm.TooHigh) as exc:
        q.ack(1)
    assert exc.value.sent == 0
    assert "handled-count-too-high" in exc.value.condition()
    assert len(q) == 1                          # nothing forgotten


@pytest.mark.parametrize("value", [None, "", "-1", "1.5", "x", str(sm.MOD)])
def test_h_must_be_an_unsigned_32_bit_integer(value: str | None) -> None:
    with pytest.raises(ValueError):
        sm.parse_h(value)


@pytest.mark.parametrize("resource", ["r", "phone", "Gajim.Ab3x", "über/ünd @ x", "😀" * 20])
def test_a_token_names_its_resource_and_is_unguessable(resource: str) -> None:
    a, b = sm.make_token(resource), sm.make_token(resource)
    assert a != b and len(a.split(".")[0]) >= 24
    assert sm.token_resource(a) == resource


@pytest.mark.parametrize("token", ["", "nodot", "abc.", "abc.!!!", "abc.wg", "x" * 3000 + ".cg"])
def test_what_no_server_made_names_no_resource(token: str) -> None:
    assert sm.token_resource(token) is None


def test_a_handover_payload_round_trips() -> None:
    state = {"token": "t", "h": 7, "fields": {"presence.directed": ["a@b"]}}
    queue = [b"<message><body>1</body></message>", b"<iq type='get' id='x'/>"]
    assert sm.unpack(sm.pack(state, queue)) == (state, queue)
    assert sm.unpack(sm.pack(state, [])) == (state, [])


def test_a_stale_h_acknowledges_nothing_new() -> None:
    """An answer older than the last one (a resumption with an old h): no
    error, nothing forgotten twice."""
    q = sm.Unacked()
    for i in range(4):
        q.add(b"x%d" % i)
    assert q.ack(3) == 3 and q.size == 2
    assert q.ack(1) == 0 and list(q.queue) == [b"x3"] and q.acked == 3
