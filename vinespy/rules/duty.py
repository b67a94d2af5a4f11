"""A duty's lease as seen by one node, without I/O: whether it holds the
lease now, when to renew it, when to stop trusting it, and when its job may
run (vinespy/cluster/duty.py explains why each rule keeps two nodes from
running the job at once).

Every time is this process's monotonic clock (``time.monotonic()``), never
a wall clock and never another machine's: a lease is trusted for ``ttl -
margin`` seconds from the moment the command that (re)set it was *sent*
(Redis starts its ``ttl`` no earlier), and a lease taken fresh becomes
active ``settle`` seconds after its answer *arrived* (by then whoever held
it before, on data Redis lost, has stopped trusting theirs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Tenure:
    """One node's view of one lease. ``ttl``: what Redis keeps it for;
    ``margin``: how much sooner the node stops trusting it (scheduling
    latency, clock rate differences); ``settle``: how long a fresh
    acquisition waits before the job may run."""

    ttl: float
    margin: float
    settle: float
    sent: float | None = None           # when the last successful SET/renew left; None: not held
    active_from: float = math.inf       # when the job may run under this lease

    def __post_init__(self) -> None:
        if self.ttl <= 0:
            raise ValueError(f"a lease's ttl must be positive, not {self.ttl!r}")
        if not 0 < self.margin < self.ttl - self.renew_every:
            raise ValueError(f"a lease's margin must be between 0 and two thirds of its ttl "
                             f"({self.ttl:g} s), not {self.margin!r}")
        if self.settle < 0:
            raise ValueError(f"a lease's settle time cannot be negative ({self.settle!r})")

    @property
    def renew_every(self) -> float:
        """A third of the ttl: a renewal that fails can be tried again twice
        before the lease is given up."""
        return self.ttl / 3

    @property
    def poll_every(self) -> float:
        """How often a node that does not hold the lease asks for it: a
        holder that died is replaced within ``ttl + poll_every``."""
        return self.ttl / 3

    # -- what Redis answered ---------------------------------------------------
    def acquired(self, sent: float, answered: float, handed_over: bool) -> None:
        """The lease was taken with a command sent at ``sent`` and answered at
        ``answered``. ``handed_over``: from a holder that released it after
        its job stopped (the job may run at once); else it was free, perhaps
        because Redis lost it (a restart, a failover) while another node
        still trusts it: the job waits ``settle`` from the answer."""
        self.sent = sent
        self.active_from = sent if handed_over else answered + self.settle

    def renewed(self, sent: float) -> None:
        """A renewal sent at ``sent`` found the lease still ours."""
        if self.sent is not None:
            self.sent = max(self.sent, sent)

    def lost(self) -> None:
        """Redis says the lease is not ours (expired, taken, lost), or we
        gave it up."""
        self.sent = None
        self.active_from = math.inf

    # -- what the node may do ----------------------------------------------------
    def held(self, now: float) -> bool:
        """The lease is surely still ours at ``now``: Redis cannot have let
        it expire yet (it counts ``ttl`` from no sooner than ``sent``)."""
        return self.sent is not None and now < self.sent + self.ttl - self.margin

    def lapsed(self, now: float) -> bool:
        """Held once, but not renewed in time: give it up (:meth:`lost`)."""
        return self.sent is not None and not self.held(now)

    def active(self, now: float) -> bool:
        """The job may run at ``now``."""
        return self.held(now) and now >= self.active_from

    def left(self, now: float) -> float:
        """Seconds the lease is surely ours from ``now`` (0 if not held)."""
        if self.sent is None:
            return 0.0
        return max(0.0, self.sent + self.ttl - self.margin - now)

    def next_contact(self, now: float) -> float:
        """When to talk to Redis next: renew a third of the ttl after the
        last renewal; poll for a lease not held."""
        if self.held(now):
            assert self.sent is not None
            return self.sent + self.renew_every
        return now + self.poll_every

    def wake(self, now: float, next_run: float) -> float:
        """Seconds until the node must look again: its next contact with
        Redis, the job's next run once active, or the end of the settle time."""
        at = self.next_contact(now)
        if self.held(now):
            at = min(at, max(next_run, self.active_from))
        return max(0.0, at - now)
