"""XEP-0054: vcard-temp, kept by the server for each account.

* ``get`` to one's own account (no ``to``, or one's bare JID) returns the
  stored ``<vCard xmlns='vcard-temp'/>``. With none stored the XEP allows
  both answers ("the server MUST return a stanza error (which SHOULD be
  <item-not-found/>) or an IQ-result containing an empty <vCard/> element");
  this server returns the empty element, which clients read as "nothing yet".
* ``get`` to another account's bare JID returns its vCard (the XEP's Security
  Considerations: vCards are world-readable). "If no vCard exists or the user
  does not exist, the server MUST return a stanza error, which SHOULD
  <service-unavailable/> or <item-not-found/>": this server returns
  ``<service-unavailable/>`` in both cases, so the answer never tells whether
  an account exists.
* ``set`` replaces the whole vCard of one's own account (there are no partial
  updates). "If a user attempts to perform an IQ set on another user's vCard
  (i.e., by setting a 'to' address to a JID other than the sending user's
  bare JID), the server MUST return a stanza error, which SHOULD be
  <forbidden/> or <not-allowed/>": ``<forbidden/>``, for another user's bare
  JID and for the server's own address alike. A ``get`` to the server's
  address is not answered here (the server has no vCard of its own): the
  router's ``<service-unavailable/>``.
* A vCard larger than the ``max_size`` option (bytes, serialized) is refused
  with ``<not-acceptable/>``; the XEP sets no limit.
"""

from __future__ import annotations

from typing import Any

from ..errors import StanzaError
from ..events import StanzaEvent
from ..storage import xml_bytes
from ..xml import Element, element
from . import Module, Option, iq

VCARD = "vcard-temp"


class VCard(Module):
    name = "vcard"
    xep = "XEP-0054"
    # §4 "Determining Support": the server reports vcard-temp; so does each account.
    features = (VCARD,)
    account_features = (VCARD,)
    options = {"max_size": Option(int, 65536, min=1024, max=16 * 1024 * 1024)}

    def __init__(self, host: Any) -> None:
        super().__init__(host)
        self.max_size: int = self.option("max_size")     # [host.options.vcard]

    @iq("get", VCARD, "vCard", to=("self",))
    async def own(self, ev: StanzaEvent) -> Element:
        card = await self.host.storage.find_vcard(ev.to)
        return card if card is not None else element(VCARD, "vCard")

    @iq("get", VCARD, "vCard", to=("bare",))
    async def other(self, ev: StanzaEvent) -> Element:
        card = await self.host.storage.find_vcard(ev.to)
        if card is None:
            # No vCard and no such user look the same (no account harvesting).
            raise StanzaError("service-unavailable")
        return card

    @iq("set", VCARD, "vCard", to=("self",))
    async def publish(self, ev: StanzaEvent) -> None:
        card = ev.stanza[0]
        size = len(xml_bytes(card))
        if size > self.max_size:
            raise StanzaError("not-acceptable",
                              f"the vCard is {size} bytes; at most {self.max_size} are kept")
        await self.host.storage.save_vcard(ev.to, card)
        return None

    @iq("set", VCARD, "vCard", to=("bare", "host"))
    async def publish_elsewhere(self, ev: StanzaEvent) -> None:
        raise StanzaError("forbidden", "only your own vCard can be changed")
