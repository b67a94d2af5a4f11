"""XEP-0198 stream management without I/O: the counting, the queue of
unacknowledged stanzas, the resumption token and the elements exchanged.

Counters are sequence numbers modulo 2^32 (XEP-0198 §4: ``h`` wraps to 0
after 2^32 - 1). What the server sent is kept, serialized, until the client
acknowledges it; what it keeps is re-sent on resumption, moved to another
cluster node with the session, or given to offline storage when the session
ends without its client coming back.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections import deque
from typing import Any, Iterable

NS = "urn:xmpp:sm:3"
MOD = 1 << 32
_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
_SEP = "."


class TooHigh(Exception):
    """The client acknowledged more stanzas than it was sent."""

    def __init__(self, h: int, sent: int) -> None:
        super().__init__(f"You acknowledged {h} stanzas, but I only sent you {sent} so far.")
        self.h = h
        self.sent = sent

    def condition(self) -> str:
        """The XEP's application condition for it (§4, handled-count-too-high)."""
        return f"<handled-count-too-high xmlns='{NS}' h='{self.h}' send-count='{self.sent}'/>"


class Unacked:
    """Stanzas sent since the last acknowledgement, oldest first."""

    __slots__ = ("queue", "acked", "size")

    def __init__(self, acked: int = 0, queue: Iterable[bytes] = ()) -> None:
        self.queue: deque[bytes] = deque(queue)
        self.acked = acked % MOD            # the h the client last acknowledged
        self.size = sum(len(d) for d in self.queue)     # bytes kept

    def __len__(self) -> int:
        return len(self.queue)

    @property
    def sent(self) -> int:
        """The sequence number of the last stanza sent (what ``h`` may reach)."""
        return (self.acked + len(self.queue)) % MOD

    def add(self, data: bytes) -> None:
        self.queue.append(data)
        self.size += len(data)

    def take(self) -> list[bytes]:
        """Everything kept (it is no longer kept here)."""
        out = list(self.queue)
        self.queue.clear()
        self.size = 0
        return out

    def ack(self, h: int) -> int:
        """The client handled every stanza up to ``h``: forget them; how many
        that was. An ``h`` behind the last one (by less than 2^31: a
        stale answer) acknowledges nothing new. Raises :class:`TooHigh`
        past what was sent."""
        n = (h - self.acked) % MOD
        if n >= MOD // 2:
            return 0
        if n > len(self.queue):
            raise TooHigh(h, self.sent)
        for _ in range(n):
            self.size -= len(self.queue.popleft())
        self.acked = h % MOD
        return n


def parse_h(value: str | None) -> int:
    """An ``h`` attribute: an unsigned 32-bit integer (ValueError otherwise)."""
    if value is None or not value.isdigit():
        raise ValueError(f"h must be an unsigned integer, not {value!r}")
    h = int(value)
    if h >= MOD:
        raise ValueError(f"h must be below 2^32, not {h}")
    return h


# -- the resumption token ------------------------------------------------------
# Unguessable, and naming the resource it resumes: the node a client resumes
# on finds the session in the routing table of the account the client
# authenticated as (another account's token finds nothing there).

def make_token(resource: str) -> str:
    name = base64.urlsafe_b64encode(resource.encode()).decode().rstrip("=")
    return f"{secrets.token_urlsafe(18)}{_SEP}{name}"


def token_resource(token: str) -> str | None:
    """The resource a token names; None for what no server made."""
    _, sep, name = token.partition(_SEP)
    if not sep or not name or len(token) > 2048:
        return None
    try:
        resource = base64.b64decode(name + "=" * (-len(name) % 4), altchars=b"-_",
                                    validate=True).decode()
    except (binascii.Error, ValueError):
        return None
    return resource or None


# -- elements ----------------------------------------------------------------------
def enabled(token: str | None, max_seconds: int) -> bytes:
    if token is None:
        return f"<enabled xmlns='{NS}'/>".encode()
    return f"<enabled xmlns='{NS}' id='{token}' resume='true' max='{max_seconds}'/>".encode()


def resumed(token: str, h: int) -> bytes:
    return f"<resumed xmlns='{NS}' previd='{token}' h='{h}'/>".encode()


def failed(condition: str, h: int | None = None, app: str = "") -> bytes:
    attr = f" h='{h}'" if h is not None else ""
    return (f"<failed xmlns='{NS}'{attr}><{condition} xmlns='{_STANZAS}'/>{app}"
            f"</failed>").encode()


def ack(h: int) -> bytes:
    return f"<a xmlns='{NS}' h='{h}'/>".encode()


REQUEST = f"<r xmlns='{NS}'/>".encode()


# -- a session handed to another node ----------------------------------------------
def pack(state: dict[str, Any], queue: Iterable[bytes]) -> bytes:
    """A session's state (JSON) and its unacknowledged stanzas, in one
    payload: stanzas hold no NUL byte (XML 1.0 cannot carry one)."""
    return b"\0".join([json.dumps(state, separators=(",", ":")).encode(), *queue])


def unpack(payload: bytes) -> tuple[dict[str, Any], list[bytes]]:
    head, *queue = payload.split(b"\0")
    state = json.loads(head)
    if not isinstance(state, dict):
        raise ValueError("not a session handoff")
    return state, queue
