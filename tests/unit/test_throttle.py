"""Login throttling rules (vinespy/stream/throttle.py), without sockets."""

from __future__ import annotations

from vinespy.stream.throttle import FREE, AuthThrottle, address_key


def throttle(**kw: float) -> AuthThrottle:
    args = {"ban_failures": 3, "ban_time": 100.0, "delay_max": 8.0, **kw}
    return AuthThrottle(ban_failures=int(args["ban_failures"]), ban_time=args["ban_time"],
                        delay_max=args["delay_max"], max_keys=int(kw.get("max_keys", 1000)))


def test_address_is_refused_after_ban_failures_until_they_age() -> None:
    t = throttle()
    for now in (0.0, 1.0, 2.0):
        assert t.refused_for("192.0.2.1", now) == 0
        t.failed("192.0.2.1", "alice", now)
    assert t.refused_for("192.0.2.1", 3.0) == 97.0
    assert t.refused_for("192.0.2.2", 3.0) == 0            # another address is not
    assert t.refused_for("192.0.2.1", 100.0) == 0           # the oldest aged out...
    t.failed("192.0.2.1", "alice", 100.0)
    assert t.refused_for("192.0.2.1", 100.0) == 1.0         # ...one more guess, no more


def test_ipv6_counts_per_64() -> None:
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::2")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("::ffff:192.0.2.1") == "192.0.2.1"
    t = throttle()
    for i in range(3):
        t.failed(f"2001:db8::{i + 1}", None, 0.0)
    assert t.refused_for("2001:db8::ffff", 1.0) > 0


def test_account_delay_grows_to_its_cap_and_never_refuses() -> None:
    t = throttle(ban_failures=1000)
    delays = []
    for i in range(FREE + 6):
        delays.append(t.delay("alice", float(i)))
        t.failed(f"198.51.100.{i}", "alice", float(i))
    assert delays == [0, 0, 0, 1, 2, 4, 8, 8, 8]
    assert t.delay("bob", 10.0) == 0
    assert t.delay("alice", 8.0 + 101.0) == 0               # quiet for ban_time: forgiven


def test_success_forgets_the_account_not_the_address() -> None:
    t = throttle()
    for i in range(3):
        t.failed("192.0.2.1", "alice", float(i))
    t.succeeded("alice")
    assert t.delay("alice", 3.0) == 0
    assert t.refused_for("192.0.2.1", 3.0) > 0


def test_delay_off_and_tables_bounded() -> None:
    t = throttle(delay_max=0, max_keys=10)
    for i in range(100):
        t.failed(f"10.0.0.{i}", f"user{i}", 0.0)
    assert len(t._addresses) == 10 and len(t._accounts) == 10
    assert t.delay("user99", 0.0) == 0
