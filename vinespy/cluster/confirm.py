"""Cross-node stanzas kept until their receiver confirms them (no I/O here).

Redis replication is asynchronous: the primary can acknowledge an inbox
``XADD`` and die before its replica has it, and the promoted replica then
lacks the entry. So the Redis acknowledgement is not where a sender lets go
of a stanza; the receiving node's is (the end-to-end argument):

* the sender keeps each inbox entry it wrote (:class:`Outbox`) until the
  receiving node confirms its sequence number, and sends every unconfirmed
  entry again, in order, after Redis trouble, when the receiver reports a
  gap, or when one stays unconfirmed too long;
* the receiver admits each sender's entries strictly in sequence
  (:class:`Gate`): an entry it already has is a duplicate and skipped, one
  after a gap is dropped (the sender will send the missing one and those
  after it again), so per sender -> recipient order holds and nothing is
  handled twice;
* confirmations travel in the heartbeats and, while a node is busy, in its
  flushes at most every 0.1 s (``cluster:acks:{node}``, one field per
  sender incarnation), so steady state costs no Redis command per message
  and a busy sender keeps a fraction of a second of its traffic.

Each entry carries ``b``, the lowest sequence number its sender still keeps
for that receiver: everything before it was confirmed. A receiver that has
no state for the sender (it restarted, or forgot an idle sender) starts
there; one whose state is behind ``b`` skips ahead (the sender gave those
entries up: the receiving node was declared dead meanwhile and the sender
re-routed them itself).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Iterator


@dataclass
class Sent:
    """One inbox entry written and not yet confirmed."""

    seq: int
    items: list[bytes]
    stanzas: int                # how many of the items are stanzas
    sent_at: float              # monotonic time of its first write


class Outbox:
    """The unconfirmed entries of one sender, per receiving node, oldest first."""

    def __init__(self) -> None:
        self._by_node: dict[str, deque[Sent]] = {}
        self._stanzas: dict[str, int] = {}
        self.stanzas = 0            # stanzas kept, over all receivers

    def add(self, node: str, sent: Sent) -> None:
        self._by_node.setdefault(node, deque()).append(sent)
        self._stanzas[node] = self._stanzas.get(node, 0) + sent.stanzas
        self.stanzas += sent.stanzas

    def stanzas_for(self, node: str) -> int:
        return self._stanzas.get(node, 0)

    def base(self, node: str, next_seq: int) -> int:
        """The lowest sequence number kept for ``node`` (``next_seq`` if none)."""
        q = self._by_node.get(node)
        return q[0].seq if q else next_seq

    def confirm(self, node: str, seq: int) -> int:
        """``node`` has everything up to ``seq``: let it go. The stanzas released."""
        q = self._by_node.get(node)
        released = 0
        while q and q[0].seq <= seq:
            released += q.popleft().stanzas
        self._settle(node, released)
        return released

    def take(self, node: str, upto: int | None = None) -> list[Sent]:
        """Remove and return ``node``'s entries (up to ``upto``), oldest first:
        they will not be confirmed (the node is gone)."""
        q = self._by_node.get(node)
        out: list[Sent] = []
        while q and (upto is None or q[0].seq <= upto):
            out.append(q.popleft())
        self._settle(node, sum(s.stanzas for s in out))
        return out

    def _settle(self, node: str, released: int) -> None:
        self.stanzas -= released
        if node in self._stanzas:
            self._stanzas[node] -= released
        if not self._by_node.get(node, True):
            del self._by_node[node]
            del self._stanzas[node]

    def nodes(self) -> list[str]:
        return list(self._by_node)

    def entries(self, node: str) -> list[Sent]:
        return list(self._by_node.get(node, ()))

    def oldest(self, node: str) -> float | None:
        q = self._by_node.get(node)
        return q[0].sent_at if q else None

    def __iter__(self) -> Iterator[tuple[str, Sent]]:
        for node, q in self._by_node.items():
            for sent in q:
                yield node, sent

    def __len__(self) -> int:
        return sum(len(q) for q in self._by_node.values())


ADMIT, DUPLICATE, GAP = "admit", "duplicate", "gap"


@dataclass
class _From:
    next: int = 0               # the sequence number expected next (0: any, from b)
    done: int = 0               # handled up to here: what is confirmed
    gap: bool = False           # an entry after a gap was dropped since
    seen_at: float = field(default=0.0)


class Gate:
    """What one receiving node has admitted of each sender incarnation."""

    FORGET_AFTER = 3600.0       # s: an idle sender's state is dropped (b restarts it)

    def __init__(self) -> None:
        self._from: dict[str, _From] = {}
        self.duplicates = 0
        self.gaps = 0

    @staticmethod
    def key(node: str, incarnation: str) -> str:
        return f"{node}/{incarnation}"

    def admit(self, sender: str, seq: int, base: int, now: float) -> str:
        """ADMIT ``seq`` (the next in order), or say why not."""
        st = self._from.get(sender)
        if st is None:
            st = self._from[sender] = _From()
        st.seen_at = now
        expect = max(st.next, base)
        if seq < expect:
            self.duplicates += 1
            return DUPLICATE
        if seq > expect:
            self.gaps += 1
            st.gap = True
            return GAP
        st.next = seq + 1
        st.gap = False
        return ADMIT

    def seed(self, confirmations: dict[bytes, bytes], now: float) -> None:
        """Start from what a previous process of this node confirmed
        (``cluster:acks`` as it left it): what it handled is not admitted
        again when its senders, not having read those confirmations yet,
        send it again."""
        for raw, value in confirmations.items():
            seq, _ = parse_confirmation(value)
            if seq:
                sender = raw.decode(errors="replace")
                self._from[sender] = _From(next=seq + 1, done=seq, seen_at=now)

    def handled(self, sender: str, seq: int) -> None:
        """Entry ``seq`` of ``sender`` was handled: it may be confirmed."""
        st = self._from.get(sender)
        if st is not None and seq > st.done:
            st.done = seq

    def confirmations(self, now: float) -> dict[str, str]:
        """``sender/incarnation`` -> ``"seq"`` (handled up to seq) or
        ``"seq!"`` (and an entry after a gap was dropped: send again), for
        the heartbeat to write; idle senders are forgotten here."""
        for sender in [s for s, st in self._from.items()
                       if now - st.seen_at > self.FORGET_AFTER]:
            del self._from[sender]
        return {sender: f"{st.done}!" if st.gap else str(st.done)
                for sender, st in self._from.items() if st.done or st.gap}


def parse_confirmation(raw: bytes | str | None) -> tuple[int, bool]:
    """(handled up to, gap reported) of a confirmation as written by
    :meth:`Gate.confirmations`; (0, False) for none or garbage."""
    if raw is None:
        return 0, False
    text = raw.decode() if isinstance(raw, bytes) else raw
    gap = text.endswith("!")
    digits = text[:-1] if gap else text
    return (int(digits), gap) if digits.isdigit() else (0, False)
