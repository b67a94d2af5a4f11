"""XEP-0030: Service Discovery for the server and, on their behalf, its accounts.

The server (``to`` a served domain) answers disco#info with its identity and
the ``features`` of every loaded module, and disco#items with the services
served for that domain (XEP-0030 §4; its pubsub services, e.g.
``games.wonderland.lit``, which is how clients find them, XEP-0060 §5.1,
and its XEP-0114 components).

A hosted account (``to`` its bare JID; ``self`` when a user asks about their
own) is answered by the server, never forwarded to a resource (XEP-0030
§3.1), under the rules of §8 (Security Considerations) against directory
harvesting:

* disco#info: "the server MUST return a <service-unavailable/> error if ...
  the target entity does not exist (no matter if the request specifies a node
  or not)" or "the requesting entity is not authorized to receive presence
  from the target entity (i.e., via a presence subscription of type "both" or
  "from")". Otherwise the identity ``account/registered`` (§3.1: "the primary
  identity SHOULD have a category of "account" ... (most likely, a type of
  "registered")") and the ``account_features`` of every loaded module.
* disco#items: "the server MUST return an empty result set if ... the target
  entity does not exist"; the account's available resources are listed only
  to the account itself and to those allowed to see its presence.

A module serving nodes on accounts (XEP-0163 PEP) adds to these answers
through two events on the account's host (docs/routing.md): its
``account_identities`` go next to account/registered;
``account-disco-info`` (the StanzaEvent, the node) answers disco#info with
a node (a query element, or None: ``<item-not-found/>``), and
``account-disco-items`` (the StanzaEvent, the query being built) adds items
to disco#items, with or without a node.
"""

from __future__ import annotations

from .. import ns
from ..errors import StanzaError
from ..events import StanzaEvent
from ..jid import JID
from ..storage import User
from ..xml import Element, child, element
from . import Module, iq


def sees_presence(user: User, asker: JID) -> bool:
    """May ``asker`` receive ``user``'s presence: the user themselves or a contact
    with a subscription of "from" or "both" on the user's side (RFC 6121 §2.1.2.1).

    A JID the user blocked never gets this far: the blocking module (XEP-0191)
    stops its IQs first.
    """
    if asker.bare == user.jid.bare:
        return True
    contact = user.roster.get(asker.bare)
    return contact is not None and contact.subscription in ("from", "both")


class Disco(Module):
    name = "disco"
    xep = "XEP-0030"
    features = (ns.DISCO_INFO, ns.DISCO_ITEMS)
    account_features = (ns.DISCO_INFO, ns.DISCO_ITEMS)

    @iq("get", ns.DISCO_INFO, "query", to=("host",))
    async def info(self, ev: StanzaEvent) -> Element:
        node = ev.stanza[0].get("node")
        if node:
            raise StanzaError("item-not-found", f"no node {node!r} here")
        q = element(ns.DISCO_INFO, "query")
        child(q, ns.DISCO_INFO, "identity", category="server", type="im", name="vinespy")
        for feature in sorted(self.host.features()):
            child(q, ns.DISCO_INFO, "feature", var=feature)
        return q

    @iq("get", ns.DISCO_ITEMS, "query", to=("host",))
    async def items(self, ev: StanzaEvent) -> Element:
        node = ev.stanza[0].get("node")
        if node:
            raise StanzaError("item-not-found", f"no node {node!r} here")
        q = element(ns.DISCO_ITEMS, "query")
        for service in self.services():
            child(q, ns.DISCO_ITEMS, "item", jid=service)
        return q

    def services(self) -> list[str]:
        """The service domains the router hands to this host's modules (the
        pubsub services ``pubsub = ["games"]`` makes games.DOMAIN) and the
        host's XEP-0114 components (``components = { tea = "..." }``:
        tea.DOMAIN, connected or not, as Prosody lists its components), sorted."""
        router = self.host.router
        domain = self.host.domain
        return sorted([d for d, host in router.services.items() if host is self.host]
                      + [d for d in router.components if d.partition(".")[2] == domain])

    @iq("get", ns.DISCO_INFO, "query", to=("self", "bare"))
    async def account_info(self, ev: StanzaEvent) -> Element:
        user = await self.host.storage.find_user(ev.to)
        node = ev.stanza[0].get("node")
        if node and user is not None:
            # A node the asker may see (an open PEP node, listed by
            # disco#items to anyone) is described to anyone.
            found = await self.host.bus.fire("account-disco-info", ev, node)
            if found is not None:
                return found
        if user is None or not sees_presence(user, ev.frm):
            # §8: the same answer for "no such account" and "not yours to see".
            raise StanzaError("service-unavailable")
        if node:
            raise StanzaError("item-not-found", f"no node {node!r} here")
        q = element(ns.DISCO_INFO, "query")
        child(q, ns.DISCO_INFO, "identity", category="account", type="registered")
        for mod in self.host.modules.values():
            for category, kind in mod.account_identities:
                child(q, ns.DISCO_INFO, "identity", category=category, type=kind)
        for feature in sorted(self.host.features("account_features")):
            child(q, ns.DISCO_INFO, "feature", var=feature)
        return q

    @iq("get", ns.DISCO_ITEMS, "query", to=("self", "bare"))
    async def account_items(self, ev: StanzaEvent) -> Element:
        q = element(ns.DISCO_ITEMS, "query")
        node = ev.stanza[0].get("node")
        if node is not None:
            q.set("node", node)         # a node nobody serves: an empty list (§8 rule 2)
            await self.host.bus.fire("account-disco-items", ev, q)
            return q
        user = await self.host.storage.find_user(ev.to)
        if user is None:
            return q
        if sees_presence(user, ev.frm):
            for session in self.host.sessions.available(user.jid):
                child(q, ns.DISCO_ITEMS, "item", jid=str(session.jid))
        await self.host.bus.fire("account-disco-items", ev, q)
        return q
