"""XEP-0352: Client State Indication.

A client whose user is not looking (a phone in a pocket) says
``<inactive xmlns='urn:xmpp:csi:0'/>``; back in use, ``<active/>``. The
server decides what to make of it (§3.2); here, as Prosody's mod_csi_simple:

* While a session is inactive, the presence written to it that needs no
  action (available and unavailable) is held, only the latest of each sender
  (full JID): a newer one replaces the one before, and goes to the end, so
  what is written later is the order it came in with the superseded ones
  left out. At most ``max_held`` senders (default 1,000); past that, the
  held ones are written and holding starts again.
* The session's own presence coming back to it (RFC 6121 §4.2.2) is not
  held: the client just sent it. Presence of its other resources is.
* A stanza the client must see now (Prosody's "important") goes out at
  once, after the held presence: a message with a body (or a carbon of
  one) that is not a headline, a presence that needs action (subscribe,
  subscribed, unsubscribe, unsubscribed, error). Other messages (chat
  states, receipts, headlines) and IQs go out at once and leave the held
  presence held.
* ``<active/>`` writes what is held, in order, before anything read after it
  (§5.1, in-order processing); a session that ends drops what it held.

Held presences are written through ``session.send``, the session active
meanwhile: the other ``deliver-presence`` handlers (which run after these,
at a lower priority) and the stream's own counting see each presence once,
when it is written. The state is the stream's (XEP-0352 §4.2: every stream
starts active), kept on the node holding it: a field that is not shared.
Before bind there is no session yet: ``<inactive/>`` and ``<active/>`` are
taken and ignored (the XEP defines no answer; the client may say it again).
The feature is offered in the stream features after authentication (§4.1),
not in disco#info: the XEP registers no disco feature.
"""

from __future__ import annotations

import copy
from typing import Any

from ..fields import SessionField
from ..jid import JID
from ..sessions import Session
from ..xml import Element, local_name
from . import Module, Option, hook

NS = "urn:xmpp:csi:0"
CARBONS = "urn:xmpp:carbons:2"
FORWARD = "urn:xmpp:forward:0"
HELD = (None, "unavailable")            # the presence types that may wait
# What makes a message urgent: a body, its own or that of the message a carbon
# (XEP-0280) forwards.
_BODY = "{jabber:client}body"
_BODIES = (_BODY, *(f"{{{CARBONS}}}{d}/{{{FORWARD}}}forwarded/{{jabber:client}}message/{_BODY}"
                    for d in ("sent", "received")))
# Before every other deliver handler: those see a held presence once, when written.
PRIORITY = 100
# What an inactive session's deliver-<kind>/watched handlers see (ClientSession.watch):
# an active one costs nothing.
WATCHED = ("{jabber:client}presence", "{jabber:client}message")


def holds(st: Element, jid: JID) -> bool:
    """Whether presence ``st``, to the inactive session of ``jid``, may wait."""
    return st.get("type") in HELD and st.get("from") != str(jid)


def urgent(st: Element) -> bool:
    """Whether ``st`` must reach an inactive client now, after what is held."""
    if local_name(st) == "presence":
        return st.get("type") not in HELD
    return st.get("type") != "headline" and any(st.find(p) is not None for p in _BODIES)


class Pending:
    """The presences held for one inactive session: sender -> latest."""

    __slots__ = ("presences", "cap")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.presences: dict[str, Element] = {}

    def hold(self, st: Element) -> bool:
        """Keep ``st`` in place of its sender's previous one, at the end;
        False (nothing kept) when it is a new sender and ``cap`` are held."""
        sender = st.get("from", "")
        if self.presences.pop(sender, None) is None and len(self.presences) >= self.cap:
            return False
        self.presences[sender] = st
        return True

    def drain(self) -> list[Element]:
        """What is held, in order; nothing is held afterwards."""
        out = list(self.presences.values())
        self.presences.clear()
        return out


class Csi(Module):
    name = "csi"
    xep = "XEP-0352"
    stream_features = (f"<csi xmlns='{NS}'/>",)
    options = {"max_held": Option(int, default=1_000, min=1, max=100_000)}
    pending = SessionField(Pending)     # None: active

    def __init__(self, host: Any) -> None:
        super().__init__(host)
        self.max_held: int = self.option("max_held")

    @hook(f"nonza/{NS}:inactive")
    def inactive(self, carrier: Any, el: Element) -> bool:
        if getattr(carrier, "bound", False) and Csi.pending.get(carrier) is None:
            Csi.pending.set(carrier, Pending(self.max_held))
            for tag in WATCHED:
                carrier.watch(tag, True)
        return True

    @hook(f"nonza/{NS}:active")
    def active(self, carrier: Any, el: Element) -> bool:
        if getattr(carrier, "bound", False):
            self.wake(carrier)
        return True

    # XEP-0352 §4.2: a resumed stream (XEP-0198) starts active, as every
    # stream does; a session handed to another node takes what it held with
    # it, written (to its XEP-0198 queue) before it goes.
    @hook("session-resumed")
    @hook("session-moving")
    def wake(self, session: Any) -> None:
        pending = Csi.pending.get(session)
        if pending is None:
            return
        self._flush(session, pending)
        Csi.pending.clear(session)
        for tag in WATCHED:
            session.watch(tag, False)

    @hook("deliver-presence/watched", PRIORITY)
    def presence(self, session: Session, st: Element) -> bool | None:
        pending: Pending | None = Csi.pending.get(session)
        if pending is None:
            return None
        if not holds(st, session.jid):
            if urgent(st):
                self._flush(session, pending)
            return None
        # A copy: the caller may reuse the element once send() returns.
        if pending.hold(copy.deepcopy(st)):
            return True
        self._flush(session, pending)      # full: the held ones go, then this one
        return None

    @hook("deliver-message/watched", PRIORITY)
    def message(self, session: Session, st: Element) -> None:
        pending: Pending | None = Csi.pending.get(session)
        if pending is not None and pending.presences and urgent(st):
            self._flush(session, pending)

    @hook("resource-unbound")
    def gone(self, session: Session) -> None:
        Csi.pending.clear(session)      # what it held goes with it

    @staticmethod
    def _flush(session: Session, pending: Pending) -> None:
        """Write what ``pending`` holds through the session's one write path,
        the session active meanwhile (this module's hooks let it through)."""
        if not pending.presences:
            return
        Csi.pending.clear(session)
        try:
            for st in pending.drain():
                session.send(st)
        finally:
            Csi.pending.set(session, pending)
