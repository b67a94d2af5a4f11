"""A cluster node's duty: the job runs on the node that holds the duty's
Redis lease, ``cluster:duty:{name}`` (vinespy/duty.py has the interface;
vinespy/rules/duty.py the timing, without I/O).

The lease
    A STRING holding the holder's token (random, one per process and duty)
    with a Redis-side expiry (``PX ttl``); ``ttl`` is the cluster's
    ``dead_after`` unless the duty asks for another. It is taken by a script
    only when absent or marked released (ACQUIRE: the same test-and-set as
    ``SET NX PX``, plus that mark), renewed every ttl/3 by a script that
    PEXPIREs it only if it still holds our token (RENEW), and given up at
    stop by a script that touches it only if it still holds our token
    (RELEASE). No GET-then-SET from the node: each step is one atomic script.

Why two nodes do not run the job at once
    * Expiry is counted by Redis, from when it runs the command; the node
      trusts its lease for ``ttl - margin`` from when it *sent* that command,
      on its own monotonic clock (never a wall clock, never another
      machine's). So a node stops trusting its lease before Redis can let
      anyone else take it, by at least ``margin`` (default ttl/5), which
      absorbs event-loop latency and clock-rate differences.
    * The job runs in a task of its own that the duty cancels the moment the
      lease is no longer surely held (a watchdog sleeps until that deadline,
      and a renewal that finds the lease taken cancels at once), and the job
      is given ``still_held()`` to stop by itself between batches. A run
      that outlives the lease is thus cut at the deadline, whatever the job
      does, and a stopped node waits for its run to end before releasing.
    * Redis can lose a lease that is still trusted: a restart without
      persistence, a failover to a replica that had not received the last
      renewal, a replica whose clock runs ahead. So a lease taken *fresh*
      (it was absent) lets the job run only ``settle`` (default: ttl) after
      its answer arrived: by then any holder trusting the lost lease has
      given it up, since its last renewal was sent before the loss. A lease
      taken from a holder that released it at stop (RELEASE leaves the mark
      ``released`` for a ttl, and only if that holder was past its own
      settle time and its run had ended) needs no wait: the handover is
      immediate.
    * Redis errors (connection lost, timeouts, a failover) are one log line
      per outage; meanwhile the lease is not renewed, so it lapses by the
      same rule, and the node asks again with backoff. Commands are bounded
      by ttl/3, so a hung Redis never holds the node's view of time hostage.

What remains possible
    * A process paused longer than ``margin`` (GC, SIGSTOP, swapping, an
      event loop blocked) while its job runs can overlap the next holder:
      nothing inside a paused process can act. The same for a statement
      already sent to a database (or a thread) when its run is cancelled: it
      finishes. And a Sentinel split brain (the old primary, cut off with a
      node, still accepting its renewals) can keep two holders until the old
      primary is demoted; ``min-replicas-to-write`` on the primary bounds it.
    * Jobs must therefore be idempotent and safe to run twice at once. The
      first one, archive expiry, is: it deletes the entries older than a
      cutoff; two overlapping runs delete (a subset of) the same set, never
      anything younger, and nothing is ever un-deleted. Wall clocks of the
      nodes differ only in which cutoff each computes: they move the cutoff
      by the skew, never expire what retention keeps by more than that.
      A fencing token (a counter raised by each acquisition, checked by the
      store) would cover the rest for a non-idempotent job; none needs one
      yet, and Redis loses the counter with the lease.

Liveness: a holder that dies is replaced within ``ttl + ttl/3`` (expiry,
then the next poll), its replacement's first run ``settle`` later; one that
stops is replaced at the next poll (ttl/3) and runs at once.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any, Callable

from ..duty import Duty, Job
from ..rules.duty import Tenure
from . import keys
from .publisher import REDIS_ERRORS, Backoff

log = logging.getLogger("vinespy.duty")

RELEASED = "released"

# KEYS: lease. ARGV: token, ttl ms. 0: held by another; 1: taken fresh (it
# was absent, or ours from before); 2: taken from a holder that released it.
ACQUIRE = """
local v = redis.call('GET', KEYS[1])
if v and v ~= ARGV[1] and v ~= '%s' then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if v == '%s' then return 2 end
return 1
""" % (RELEASED, RELEASED)

# KEYS: lease. ARGV: token, ttl ms. 1: renewed; 0: not ours (any more).
RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: lease. ARGV: token, clean ('1': the next holder may run at once),
# ttl ms. 1: released; 0: not ours (any more).
RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '1' then
  redis.call('SET', KEYS[1], '%s', 'PX', ARGV[3])
else
  redis.call('DEL', KEYS[1])
end
return 1
""" % RELEASED


class ClusterDuty(Duty):
    """``redis``: returns the client to use (the cluster makes its own at
    start); ``ttl``, ``margin``, ``settle``: seconds, as the module
    docstring explains (margin ttl/5 and settle ttl if not given);
    ``node`` and ``hide`` (takes passwords out of an error's text) for the
    log."""

    def __init__(self, name: str, interval: float, job: Job, redis: Callable[[], Any], *,
                 ttl: float, margin: float | None = None, settle: float | None = None,
                 node: str = "", hide: Callable[[str], str] = str) -> None:
        super().__init__(name, interval, job)
        self.tenure = Tenure(ttl, ttl / 5 if margin is None else margin,
                             ttl if settle is None else settle)
        self.key = keys.duty(name)
        self.token = secrets.token_hex(16)
        self.node = node                    # for the log
        self._hide = hide                   # an error's text without passwords
        self._redis = redis
        self._ttl_ms = int(ttl * 1000)
        self._retry_at = 0.0                # monotonic: after an error, not before
        self._backoff = Backoff(cap=ttl / 10)
        self.outage = False                 # Redis failed since it last answered

    def _left(self, now: float) -> float:
        if self._stopping or not self.tenure.active(now):
            return 0.0
        return self.tenure.left(now)

    def _next_contact(self, now: float) -> float:
        t = self.tenure
        at = max(t.next_contact(now), self._retry_at)
        if t.held(now) and t.active_from > now:
            at = min(at, t.active_from)     # the end of the settle time: the first run
        return at

    def _drop(self) -> None:
        self.tenure.lost()
        super()._drop()

    async def _tend(self) -> None:
        t = self.tenure
        now = time.monotonic()
        if t.lapsed(now):
            log.warning("duty %s: lease not renewed for %.1f s: given up, another node may "
                        "take it", self.name, now - (t.sent or now))
            self._drop()
        if now < self._retry_at or (t.held(now) and now < t.next_contact(now)):
            return
        held = t.held(now)
        sent = time.monotonic()
        try:
            if held:
                res = await self._eval(RENEW, self.token, self._ttl_ms)
            else:
                res = await self._eval(ACQUIRE, self.token, self._ttl_ms)
        except REDIS_ERRORS as exc:
            self._trouble(exc)
            self._retry_at = time.monotonic() + self._backoff.next()
            return
        answered = time.monotonic()
        self._trouble(None)
        self._retry_at = 0.0
        if held and res:
            t.renewed(sent)
        elif held:
            log.warning("duty %s: the lease is no longer ours (Redis lost it or it "
                        "expired): stopping", self.name)
            self._drop()
        elif res:
            t.acquired(sent, answered, handed_over=res == 2)
            log.info("duty %s: taken by this node%s%s", self.name,
                     f" ({self.node})" if self.node else "",
                     "" if res == 2 else f"; first run in {t.settle:g} s")

    async def _eval(self, script: str, *args: Any) -> int:
        res = await asyncio.wait_for(self._redis().eval(script, 1, self.key, *args),
                                     self.tenure.renew_every)
        return int(res)

    def _trouble(self, exc: BaseException | None) -> None:
        """One line when Redis fails, one when it answers again."""
        if exc is not None and not self.outage:
            self.outage = True
            log.error("duty %s: Redis unreachable (%s: %s); the lease lapses unless it "
                      "answers, retrying", self.name, type(exc).__name__,
                      self._hide(str(exc)))
        elif exc is None and self.outage:
            self.outage = False
            self._backoff.reset()
            log.warning("duty %s: Redis answers again", self.name)

    async def _release(self, stopped: bool) -> None:
        now = time.monotonic()
        if not self.tenure.held(now):
            return
        if not stopped:
            # A run that would not end: let the lease expire instead.
            self.tenure.lost()
            return
        clean = self.tenure.active(now)
        self.tenure.lost()
        try:
            await self._eval(RELEASE, self.token, "1" if clean else "0", self._ttl_ms)
        except REDIS_ERRORS as exc:
            log.debug("duty %s: could not release its lease (%s): it expires", self.name, exc)
