"""XEP-0012: Last Activity, answered by the server for itself and its accounts.

* To the server's address: "the information contained in the IQ reply
  reflects the uptime of the JID sending the reply" (§5): seconds since this
  host started serving, no character data ("SHOULD NOT contain XML
  character data").
* To an account's bare JID (§3): "the number of seconds that have passed
  since the user last logged out" and, as character data, "the status
  message of the last unavailable presence received from the user". "If the
  user has at least one available resource ... seconds ... '0'". A logout is
  recorded when the user's last resource goes away (the ``resource-unbound``
  hook), in the keyval store ``last`` as ``{"time": unix seconds, "status":
  text}``; the status is the one of the user's latest unavailable presence,
  forgotten again when the user sends available presence.
* "a server MUST NOT return last activity information to an entity that is
  not authorized to view the user's presence information (normally via
  presence subscription)": only the user and contacts with a subscription
  of "from" or "both" on the user's roster may ask.
* Anyone else gets ``<service-unavailable/>`` (no text), exactly what an
  account that does not exist gets (RFC 6121 §8.5.1: an IQ to a bare JID
  without an account is answered ``<service-unavailable/>``), and what a
  sender the user has blocked gets (XEP-0191 §3.5). §3 goes on "... and MUST
  return a "Forbidden" error", but a ``<forbidden/>`` that only existing
  accounts answer tells a stranger which accounts exist (the harvesting
  that §8 "Security Considerations" means to prevent: "A server MUST NOT
  allow an unauthorized entity to learn a user's network availability"),
  and a ``<forbidden/>`` for missing accounts too would break RFC 6121
  §8.5.1 and still tell apart the users who blocked the asker. RFC 6120
  §13.11 recommends ``<service-unavailable/>`` against directory harvesting
  for this reason; vCard and disco#info answer the same way. An authorized
  asker about an account with no logout on record (never logged out since
  it was created) also gets ``<service-unavailable/>``, with a text saying
  so.
* To a full JID the router delivers the request to that resource (§4: the
  client answers with its idle time, or not).
"""

from __future__ import annotations

import time
from typing import Any

from .. import ns
from ..errors import StanzaError
from ..events import StanzaEvent
from ..jid import JID
from ..xml import Element, element
from . import Module, hook, iq
from .disco import sees_presence

LAST = "jabber:iq:last"
STORE = "last"
_STATUS = f"{{{ns.CLIENT}}}status"


def last_query(seconds: float, status: str = "") -> Element:
    """``<query xmlns='jabber:iq:last' seconds='...'>status</query>``."""
    q = element(LAST, "query", seconds=str(max(0, int(seconds))))
    if status:
        q.text = status
    return q


class Last(Module):
    name = "last"
    xep = "XEP-0012"
    # §6 "Determining Support": the server reports jabber:iq:last; so does each account.
    features = (LAST,)
    account_features = (LAST,)

    def __init__(self, host: Any) -> None:
        super().__init__(host)
        self.started = time.monotonic()
        self._status: dict[JID, str] = {}     # bare JID -> status of its last unavailable

    async def start(self) -> None:
        self.started = time.monotonic()

    @iq("get", LAST, "query", to=("host",))
    async def uptime(self, ev: StanzaEvent) -> Element:
        return last_query(time.monotonic() - self.started)

    @iq("get", LAST, "query", to=("self", "bare"))
    async def account(self, ev: StanzaEvent) -> Element:
        user = await self.host.storage.find_user(ev.to)
        if user is None or not sees_presence(user, ev.frm):
            # The same answer for "no such account" and "not yours to see".
            raise StanzaError("service-unavailable")
        if self.host.sessions.available(user.jid):
            return last_query(0)
        record = await self.host.storage.get(user.jid, STORE)
        when = record.get("time") if isinstance(record, dict) else None
        if not isinstance(when, (int, float)) or isinstance(when, bool):
            if record is not None:
                self.log.warning("ignoring a malformed last-activity record of %s", user.jid)
            raise StanzaError("service-unavailable", "no last activity on record")
        assert isinstance(record, dict)
        status = record.get("status")
        return last_query(time.time() - when, status if isinstance(status, str) else "")

    @hook("presence/self", priority=10)
    async def note_status(self, ev: StanzaEvent) -> None:
        """Remember the status text of the user's latest unavailable presence
        (runs before the presence module, claims nothing)."""
        stype = ev.stanza.get("type")
        bare = ev.frm.bare
        if stype == "unavailable":
            status = ev.stanza.find(_STATUS)
            self._status[bare] = (status.text or "") if status is not None else ""
        elif stype is None:
            self._status.pop(bare, None)
        return None

    @hook("resource-unbound")
    async def logged_out(self, session: Any) -> None:
        """Record the logout once the user's last resource has gone."""
        bare = session.jid.bare
        if self.host.sessions.resources(bare):
            return None
        status = self._status.pop(bare, "")
        try:
            await self.host.storage.put(bare, STORE, {"time": int(time.time()), "status": status})
        except Exception:
            # The stream is ending either way; a lost record must not stop its cleanup.
            self.log.exception("could not record the last activity of %s", bare)
        return None
