"""One session's XEP-0198 state: the counters, the stanzas its client did
not acknowledge, when to ask (<r/>) and when to give up, and the copy of
its queue in Redis while it waits for its client. The protocol's decisions
on it are :mod:`vinespy.modules.sm`'s; the counting is :mod:`vinespy.rules.sm`."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..errors import StreamError
from ..rules import sm
from ..stream.session import HELD_MAX, ClientSession, Held

if TYPE_CHECKING:
    from ..config import ClientConfig

REQUEST_AFTER = 1.0     # s after a stanza goes unacknowledged, the server asks (<r/>)
ACK_TIMEOUT = 30.0      # s an <r/> may go unanswered before the connection counts as lost
KEEP_MARGIN = 60.0      # s what a waiting session keeps in Redis outlives its resume time
LIVE_FACTOR = 10        # x max_unacked (and x HELD_MAX bytes) a connected session may keep


class SMState:
    """One session's stream management: counters, queue and timers."""

    __slots__ = ("session", "out", "base_in", "token", "max", "max_unacked", "requested",
                 "timer", "closing", "mirrored", "heard")

    def __init__(self, session: ClientSession, cfg: ClientConfig, token: str | None,
                 max_seconds: int, out: sm.Unacked | None = None, h_in: int = 0) -> None:
        self.session = session
        self.out = out if out is not None else sm.Unacked()
        self.base_in = session.handled - h_in     # h = handled - base_in (mod 2^32)
        self.token = token
        self.max = max_seconds
        self.max_unacked = cfg.max_unacked
        self.requested = False          # an <r/> is unanswered
        self.timer: asyncio.TimerHandle | None = None   # the next <r/>, its deadline, or expiry
        self.closing = False
        self.mirrored = False           # waiting: the queue is kept in Redis too
        self.heard = False              # an unasked <a/> came since the timer was set

    @property
    def h_in(self) -> int:
        return (self.session.handled - self.base_in) % sm.MOD

    @property
    def away(self) -> bool:
        return isinstance(self.session.transport, Held)

    def write(self, data: bytes) -> None:
        """The session's tap: keep ``data`` until acknowledged, write it.
        Connected, the client is asked (<r/>) REQUEST_AFTER s after a stanza
        goes unacknowledged, at once past half of ``max_unacked``; it ends
        only if it never answers (ACK_TIMEOUT: lost, it may resume) or keeps
        LIVE_FACTOR times more. Waiting for its client, a session that
        would keep more than ``max_unacked`` stanzas or HELD_MAX bytes ends."""
        out = self.out
        out.add(data)
        self.session.transport.write(data)
        if self.mirrored:
            self.session.server.sessions.keep(self.keep_name, [data], self.max + KEEP_MARGIN)
        if self.closing:
            return                      # ending: kept for offline storage, nobody to ask
        n = len(out.queue)
        if self.away:
            if n > self.max_unacked or out.size > HELD_MAX:
                self.overflow()
        elif n > LIVE_FACTOR * self.max_unacked or out.size > LIVE_FACTOR * HELD_MAX:
            self.overflow()
        elif not self.requested and (self.timer is None or n == self.max_unacked // 2):
            if self.timer is not None:
                self.timer.cancel()
            self.timer = asyncio.get_running_loop().call_later(
                0 if n >= self.max_unacked // 2 else REQUEST_AFTER, self.request)

    def overflow(self) -> None:
        """Too much unacknowledged: the session ends, not resumable (what it
        keeps goes to offline storage once it is unbound)."""
        if self.closing:
            return
        self.closing = True
        self.stop_timer()
        self.session.close(StreamError(
            "policy-violation", f"more than {self.max_unacked} stanzas unacknowledged "
            "(XEP-0198)"))

    def request(self) -> None:
        """Ask for an acknowledgement; no answer in ACK_TIMEOUT s: the
        connection is lost (closed: the session waits for its client)."""
        self.timer = None
        if self.away or not self.out.queue:
            return
        if self.heard and not self.requested:
            # The client acknowledges as it goes: ask only once it falls
            # silent for REQUEST_AFTER s.
            self.heard = False
            self.ask_later()
            return
        if self.requested:
            self.session.close(StreamError("connection-timeout",
                                           "no acknowledgement (XEP-0198 <r/>)"))
            return
        self.requested = True
        self.session.transport.write(sm.REQUEST)
        self.timer = asyncio.get_running_loop().call_later(ACK_TIMEOUT, self.request)

    def acked(self, h: int) -> None:
        self.out.ack(h)
        if self.requested:
            # The answer: no deadline; ask again later if anything is left.
            self.requested = False
            self.stop_timer()
            self.ask_later()
        else:
            # Unasked (a client acking as it goes): the timer for the next
            # <r/> stays; when it fires it waits again instead of asking.
            self.heard = True

    def ask_later(self) -> None:
        """An <r/> in REQUEST_AFTER s if something is still unacknowledged."""
        if self.out.queue and not self.away:
            self.timer = asyncio.get_running_loop().call_later(REQUEST_AFTER, self.request)

    @property
    def keep_name(self) -> str:
        assert self.token is not None
        return self.token

    def mirror(self, on: bool) -> None:
        """While the session waits for its client, what it keeps is in Redis
        too (cluster): if this node dies meanwhile, whoever cleans up after
        it gives the messages to offline storage."""
        sessions = self.session.server.sessions
        if on:
            sessions.keep(self.keep_name, list(self.out.queue), self.max + KEEP_MARGIN,
                          reset=True)
        elif self.mirrored:
            sessions.unkeep(self.keep_name)
        self.mirrored = on

    def stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
