"""A duty's lease timing without I/O (vinespy/rules/duty.py), and the
standalone duty (vinespy/duty.py: LocalDuty), which needs no Redis: the
job runs every interval, never twice at once, a failing run does not end
it, and stop cancels the run and waits for it."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Callable

import pytest

from vinespy.duty import LocalDuty
from vinespy.rules.duty import Tenure

TIMEOUT = 10.0


def tenure(ttl: float = 9.0, margin: float = 1.0, settle: float = 9.0) -> Tenure:
    return Tenure(ttl, margin, settle)


# -- Tenure ------------------------------------------------------------------------


def test_a_lease_not_taken_is_not_held_and_is_polled_for() -> None:
    t = tenure()
    assert not t.held(100.0) and not t.active(100.0) and not t.lapsed(100.0)
    assert t.left(100.0) == 0.0
    assert t.next_contact(100.0) == 103.0       # ttl/3


def test_trust_ends_margin_before_redis_can_expire_it_counted_from_the_send() -> None:
    t = tenure()
    t.acquired(sent=100.0, answered=100.5, handed_over=True)
    # Redis counts 9 s from when it ran the command, no sooner than 100.0.
    assert t.held(107.999) and t.left(107.0) == pytest.approx(1.0)
    assert not t.held(108.0) and t.lapsed(108.0)
    assert t.left(108.5) == 0.0


def test_renewal_is_due_a_third_of_the_ttl_after_the_last_one_sent() -> None:
    t = tenure()
    t.acquired(sent=100.0, answered=100.1, handed_over=True)
    assert t.next_contact(101.0) == 103.0
    t.renewed(sent=103.0)
    assert t.next_contact(103.2) == 106.0
    assert t.held(110.9) and not t.held(111.0)


def test_a_late_answer_to_an_older_renewal_never_moves_trust_back() -> None:
    t = tenure()
    t.acquired(sent=100.0, answered=100.0, handed_over=True)
    t.renewed(sent=106.0)
    t.renewed(sent=103.0)
    assert t.sent == 106.0


def test_failed_renewals_lapse_before_the_ttl() -> None:
    t = tenure()
    t.acquired(sent=100.0, answered=100.0, handed_over=True)
    # Two renewals could be tried (at 103 and 106) before trust ends at 108.
    assert t.held(106.0) and t.active(106.0)
    assert not t.active(108.0) and t.lapsed(108.0)
    t.lost()
    assert not t.lapsed(108.0) and t.next_contact(108.0) == 111.0


def test_a_fresh_lease_runs_only_after_settling_from_its_answer() -> None:
    t = tenure(settle=9.0)
    t.acquired(sent=100.0, answered=101.0, handed_over=False)
    assert t.held(101.0) and not t.active(101.0)
    t.renewed(103.0), t.renewed(106.0), t.renewed(109.0)
    assert not t.active(109.9)
    assert t.active(110.0)          # answered + settle, not sent + settle


def test_a_handed_over_lease_runs_at_once() -> None:
    t = tenure()
    t.acquired(sent=100.0, answered=100.2, handed_over=True)
    assert t.active(100.2)


def test_losing_the_lease_ends_activity_and_the_settle_time() -> None:
    t = tenure()
    t.acquired(sent=100.0, answered=100.0, handed_over=True)
    t.lost()
    assert not t.held(100.1) and not t.active(100.1) and t.active_from == math.inf
    t.acquired(sent=101.0, answered=101.0, handed_over=False)
    assert not t.active(101.5)


def test_wake_is_the_next_renewal_run_or_settle_end() -> None:
    t = tenure(settle=2.0)
    assert t.wake(100.0, next_run=0.0) == pytest.approx(3.0)      # poll; no run while not held
    t.acquired(sent=100.0, answered=100.0, handed_over=False)
    assert t.wake(100.0, next_run=0.0) == pytest.approx(2.0)      # the first run after settling
    assert t.wake(102.5, next_run=150.0) == pytest.approx(0.5)    # the renewal at 103
    assert t.wake(102.5, next_run=102.7) == pytest.approx(0.2)    # the run before it


@pytest.mark.parametrize("ttl,margin,settle", [(0, 0.1, 0), (3, 0, 3), (3, 2, 3), (3, 1, -1)])
def test_bad_timings_are_refused(ttl: float, margin: float, settle: float) -> None:
    with pytest.raises(ValueError):
        Tenure(ttl, margin, settle)


# -- LocalDuty -----------------------------------------------------------------------


class Runs:
    """What a job saw: (start, end) per run, and an event per run started."""

    def __init__(self) -> None:
        self.spans: list[tuple[float, float]] = []
        self.started = asyncio.Condition()
        self.count = 0

    async def wait_for(self, n: int) -> None:
        async with self.started:
            await asyncio.wait_for(self.started.wait_for(lambda: self.count >= n), TIMEOUT)

    async def begun(self) -> float:
        async with self.started:
            self.count += 1
            self.started.notify_all()
        return time.monotonic()


async def test_a_standalone_duty_runs_every_interval_one_run_at_a_time() -> None:
    runs = Runs()

    async def job(still_held: Callable[[], bool]) -> None:
        assert still_held()
        start = await runs.begun()
        await asyncio.sleep(0.03)       # a run that takes a while: runs may not overlap
        runs.spans.append((start, time.monotonic()))

    duty = LocalDuty("test", 0.02, job)
    assert duty.holding
    duty.start()
    try:
        await runs.wait_for(4)
    finally:
        await duty.stop()
    assert len(runs.spans) >= 3
    for (_, end), (start, _) in zip(runs.spans, runs.spans[1:]):
        assert end <= start
    assert not duty.holding and not duty.running


async def test_a_failing_run_does_not_end_the_duty() -> None:
    runs = Runs()

    async def job(still_held: Callable[[], bool]) -> None:
        await runs.begun()
        raise RuntimeError("boom")

    duty = LocalDuty("test", 0.01, job)
    duty.start()
    try:
        await runs.wait_for(3)
    finally:
        await duty.stop()


async def test_stop_cancels_the_run_and_waits_for_it() -> None:
    runs = Runs()
    ended = asyncio.Event()
    seen: list[bool] = []

    async def job(still_held: Callable[[], bool]) -> None:
        await runs.begun()
        try:
            await asyncio.Event().wait()
        finally:
            seen.append(still_held())
            ended.set()

    duty = LocalDuty("test", 60, job)
    duty.start()
    await runs.wait_for(1)
    assert duty.running
    await asyncio.wait_for(duty.stop(), TIMEOUT)
    assert ended.is_set() and seen == [False] and not duty.running
    assert duty.runs == 1


def test_a_duty_needs_a_positive_interval() -> None:
    async def job(still_held: Callable[[], bool]) -> None:
        pass
    with pytest.raises(ValueError):
        LocalDuty("test", 0, job)
