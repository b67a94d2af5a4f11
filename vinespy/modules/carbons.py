"""XEP-0280: Message Carbons, with XEP-0334's ``<no-copy/>`` hint.

* ``<enable/>`` / ``<disable/>`` (iq set, to the server or with no ``to``)
  switch copies on or off for the sending resource (§4, §5); repeating one
  is not an error (§10.1). The flag is a shared session field, so every
  cluster node sees it on its proxy of the resource.
* Which messages are copied (§6, a server's choice; :func:`eligible`): chat;
  normal with a body or an IM payload (chat state, receipt, marker); errors
  coming in (bounces of what the user sent, as Prosody does). Never
  groupchat, headline, a message marked as MUC traffic by a ``muc#user``
  ``<x/>`` (private messages from occupants, mediated invitations), a
  carbon, nor anything marked ``<private/>`` (§9) or ``<no-copy/>`` (XEP-0334).
* Received (§7): a message routed to a local user is copied, wrapped in
  ``<received/>``, to each of the user's available carbon-enabled resources
  the router does not deliver it to (:meth:`Router.message_targets`: the
  addressed resource; for a bare JID or an absent resource those of RFC
  6121 §8.5.2), also when it goes to offline storage. An error the router
  drops is not copied. ``<private/>`` is removed before delivery (§9).
* Sent (§8): a message a local resource sends is copied, wrapped in
  ``<sent/>``, to the user's other available carbon-enabled resources,
  whatever its destination. A message to one's own account is copied only
  to the resources that do not get it (no ``<received/>`` copies of it): each
  resource sees it once.

Copies are written straight to the sessions (local streams and proxies of
other nodes' alike), never routed: no copy is itself copied.
"""

from __future__ import annotations

import copy
from typing import Awaitable, Iterable

from .. import ns
from ..errors import StanzaError
from ..events import StanzaEvent
from ..fields import SessionField
from ..jid import JID
from ..sessions import Session
from ..xml import Element, child, stanza
from . import Module, hook, iq

CARBONS = "urn:xmpp:carbons:2"
FORWARD = "urn:xmpp:forward:0"
HINTS = "urn:xmpp:hints"
MUC_USER = "http://jabber.org/protocol/muc#user"
# Payloads of instant messaging that may come without a body (§6 "the general
# intent": the other devices follow the conversation's state too).
IM_PAYLOADS = frozenset({"http://jabber.org/protocol/chatstates", "urn:xmpp:receipts",
                         "urn:xmpp:chat-markers:0"})
PRIVATE = f"{{{CARBONS}}}private"
BODY = f"{{{ns.CLIENT}}}body"
# Children that keep a message from being copied: §9 private, XEP-0334
# no-copy, a carbon itself (a copy of a copy would repeat it), MUC traffic (§6).
NEVER = frozenset({PRIVATE, f"{{{HINTS}}}no-copy", f"{{{CARBONS}}}sent",
                   f"{{{CARBONS}}}received", f"{{{MUC_USER}}}x"})


def _namespace(tag: str) -> str:
    return tag[1:].partition("}")[0] if tag[:1] == "{" else ""


def eligible(message: Element, inbound: bool) -> bool:
    """Whether ``message`` is copied to the user's other resources (§6):
    ``inbound`` for one routed to the user, else one the user sends."""
    stype = message.get("type", "normal")
    if stype not in ("chat", "normal", "error") or (stype == "error" and not inbound):
        return False
    tags = [el.tag for el in message if isinstance(el.tag, str)]
    if any(tag in NEVER for tag in tags):
        return False
    return stype != "normal" or any(
        tag == BODY or _namespace(tag) in IM_PAYLOADS for tag in tags)


def strip_private(message: Element) -> None:
    """Remove ``<private/>`` from a message about to reach its recipient (§9:
    "SHOULD remove the <private/> element before delivering")."""
    for el in message.findall(PRIVATE):
        message.remove(el)


def carbon(direction: str, user: JID, to: JID, message: Element) -> Element:
    """``message`` forwarded (XEP-0297) to ``to`` in a ``<direction/>``
    ("sent" or "received") from the user's bare JID, same type (§7, §8)."""
    out = stanza("message", frm=user, to=to, type=message.get("type"))
    forwarded = child(child(out, CARBONS, direction), FORWARD, "forwarded")
    forwarded.append(copy.deepcopy(message))
    return out


def copied_to(resources: Iterable[Session], skip: Iterable[JID]) -> list[Session]:
    """The available carbon-enabled ones of ``resources`` not in ``skip``."""
    left = set(skip)
    return [s for s in resources
            if s.available and Carbons.enabled.get(s) and s.jid not in left]


class Carbons(Module):
    name = "carbons"
    xep = "XEP-0280"
    features = (CARBONS,)

    # §4: this resource asked for copies (read by every node: copies of what
    # is routed on one node go to resources on all).
    enabled = SessionField(bool, False, shared=True)

    @iq("set", CARBONS, "enable", to=("self", "host"))
    async def enable(self, ev: StanzaEvent) -> None:
        await self._switch(ev, True)

    @iq("set", CARBONS, "disable", to=("self", "host"))
    async def disable(self, ev: StanzaEvent) -> None:
        await self._switch(ev, False)

    async def _switch(self, ev: StanzaEvent, on: bool) -> None:
        session = ev.origin
        if session is None or session.jid.domain != self.host.domain:
            raise StanzaError("not-allowed", "carbons are switched by a client of this "
                              "server for itself (XEP-0280 §4.1)")
        Carbons.enabled.set(session, on)
        # The answer does not overtake the routing entry other nodes read.
        await self.host.sessions.published()

    # -- received (§7) -------------------------------------------------------------

    # Both hooks run for every message between users: each first rules out,
    # cheaply, what is most often so (nobody to copy to) before it parses
    # anything or makes a JID (both took ~100k instructions a message,
    # mostly for nobody: bench/modcost.py, chat+carbons against chat).

    @hook("message/self", priority=-50)
    @hook("message/bare", priority=-50)
    @hook("message/full", priority=-50)
    def received(self, ev: StanzaEvent) -> None:
        """After the handlers that claim or bounce (blocking); never claims."""
        st = ev.stanza
        for el in st:
            if el.tag == PRIVATE:
                strip_private(st)       # not copied, and delivered without it (§9)
                return None
        user = ev.to.bare
        # Who has copies on first (mostly nobody): whether the message is
        # eligible, and the router's choice of targets, are worked out only then.
        wanting = copied_to(self.host.sessions.resources(user), ())
        if (not wanting
                or (ev.origin is not None and ev.origin.jid.bare == user)  # sent copies do it
                or not eligible(st, inbound=True)):
            return None
        targets = self.host.router.message_targets(ev.to, st.get("type"))
        if not targets and st.get("type") == "error":
            return None                 # dropped by the router: nothing to copy
        self._send("received", user, st, copied_to(wanting, (s.jid for s in targets)))
        return None

    # -- sent (§8) -------------------------------------------------------------------

    @hook("pre-message")
    def sent(self, ev: StanzaEvent) -> Awaitable[None] | None:
        """The sender's host, before routing: copies of what a resource sends."""
        if ev.origin is None:
            return None
        user = ev.frm.bare
        sessions = self.host.sessions
        if sessions.missing([user]):            # pre-message comes before the router's load
            return self._sent_loading(ev, user)
        self._copy_sent(ev, user)
        return None

    async def _sent_loading(self, ev: StanzaEvent, user: JID) -> None:
        await self.host.sessions.load([user])
        self._copy_sent(ev, user)

    def _copy_sent(self, ev: StanzaEvent, user: JID) -> None:
        resources = self.host.sessions.resources(user)
        # Only the sender itself (mostly): no copy, nothing else to look at.
        if (len(resources) < 2 and (not resources or resources[0].jid == ev.frm)) or not (
                eligible(ev.stanza, inbound=False)):
            return
        skip = [ev.frm]
        if ev.to.local and ev.to.bare == user:
            # To oneself: those the router delivers to have it already.
            skip += (s.jid for s in self.host.router.message_targets(
                ev.to, ev.stanza.get("type")))
        self._send("sent", user, ev.stanza, copied_to(resources, skip))

    def _send(self, direction: str, user: JID, message: Element,
              sessions: list[Session]) -> None:
        for session in sessions:
            session.send(carbon(direction, user, session.jid, message))
