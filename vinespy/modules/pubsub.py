"""XEP-0060: Publish-Subscribe, on the pubsub services a host declares.

``pubsub = ["games"]`` in a ``[[host]]`` serving ``wonderland.lit`` makes
``games.wonderland.lit`` a pubsub service; the router hands every stanza to
it to this module as ``<kind>/service`` events. The rules (who may do what,
node configuration, error conditions, notification payloads) are in
:mod:`vinespy.rules.pubsub`; this module reads and writes the service's
:class:`~vinespy.storage.pubsub.PubSubStore` (in Redis in a cluster, so every
node sees the same nodes at once; in the host's data directory otherwise)
and sends notifications through the router.

Use cases (XEP-0060 section):

* entity: subscribe (§6.1), unsubscribe (§6.2), retrieve own subscriptions
  (§5.6) and affiliations (§5.7), retrieve items: all, the last N, by id
  (§6.5);
* publisher: publish with or without an item id (§7.1; publish-options are
  preconditions, §7.1.5: a node configured otherwise is <conflict/> +
  <precondition-not-met/>), retract (§7.2);
* owner: create (named and instant, with a configuration form, §8.1),
  configure (§8.2), delete (§8.4, subscribers notified), purge (§8.5, one
  ``<purge/>`` notification when notify_retract),
  manage affiliations (§8.9) and subscriptions (§8.8, with consent: below);
* disco#info and disco#items on the service and on its nodes (§5.1–5.5).

Subscriptions belong to JIDs, not to connections: they survive logout. A
notification goes to the subscribed JID as a ``headline`` message; to a bare
JID it reaches every available resource (RFC 6121 §8.5.2.1.1), wherever it
is connected.

Nobody receives what they did not ask for, from someone they may not hear:

* Consent (§8.8.2, decided here): an owner's ``<subscriptions/>`` set
  removes anyone ('none') but sets 'subscribed' only for JIDs of the
  owner's own bare JID or for a subscription that exists (no change).
  Anyone else subscribes themselves (§6.1, their own JIDs only: §6.1.3.1),
  which is their consent; the XEP has no way to ask them, and an owner who
  could subscribe others could send anything to any user of the server,
  around ``cross_domain_messages`` and blocklists. Refused entries are
  answered as §8.8.2.4 says (``<not-acceptable/>`` with those entries, the
  others applied).
* A notification does not go to a subscriber whom the entity that caused
  it (publisher, retractor, purger, deleter) could not message: across
  served domains unless both allow ``cross_domain_messages``
  (``Router.cross_domain``), nor when the subscriber's XEP-0191 blocklist
  covers that entity (asked of the blocking module of her domain).
* Quotas (``[host.options.pubsub]``): ``max_subscriptions_per_node`` JIDs
  per node, ``max_subscriptions_per_jid`` of them with one bare JID (bare
  and full JIDs, made-up resources included); past either, §6.1.3.9's
  ``<too-many-subscriptions/>`` (:func:`vinespy.rules.pubsub.too_many_subscriptions`).
  The count is read before the write: requests handled at the same moment
  may pass it by a few.
* disco#items on the service lists a whitelist node only to those on its
  list (owner, publisher, publish-only, member).

The use cases themselves are the shared engine's
(:mod:`vinespy.modules.pubsub_engine`, which XEP-0163 PEP uses too, under
another :class:`~vinespy.modules.pubsub_engine.Policy`); this module is the
glue: the ``service`` events, the service's disco identity and features.

In a cluster on Redis, a change is answered with success only once
``[cluster] wait_replicas`` replicas have it; else the store raises
NotReplicated before anything is notified, and the framework answers
``<resource-constraint/>`` type wait (:func:`vinespy.modules.unconfirmed`).
"""

from __future__ import annotations

from typing import Any

from ..events import StanzaEvent
from ..rules.pubsub import NS, NS_OWNER, Limits
from ..xml import Element, child, element
from . import Module, Option, iq
from .pubsub_engine import Engine, Policy

DISCO_INFO = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"

FEATURES = tuple(f"{NS}#{f}" for f in (
    "create-nodes", "instant-nodes", "config-node", "create-and-configure", "delete-nodes",
    "publish", "publish-options", "item-ids", "persistent-items", "retract-items", "retrieve-items",
    "subscribe", "retrieve-subscriptions", "retrieve-affiliations", "modify-affiliations",
    "manage-subscriptions", "purge-nodes", "access-open", "access-whitelist")) + (NS,)


class PubSub(Module):
    name = "pubsub"
    xep = "XEP-0060"
    options = {
        "max_items": Option(int, default=100, min=1, max=100000),
        "max_nodes": Option(int, default=1000, min=1, max=10_000_000),
        "max_payload": Option(int, default=65536, min=256, max=16_777_216),
        "max_subscriptions_per_node": Option(int, default=1000, min=1, max=10_000_000),
        "max_subscriptions_per_jid": Option(int, default=10, min=1, max=10_000),
    }

    def __init__(self, host: Any) -> None:
        super().__init__(host)
        self.engine = Engine(host, Policy(host), Limits())

    async def start(self) -> None:
        # Each option is the field of Limits of the same name.
        self.engine.limits = Limits(**{name: self.option(name) for name in self.options})

    # -- disco (§5.1–5.5) --------------------------------------------------------
    @iq("get", DISCO_INFO, "query", to=("service",))
    async def disco_info(self, ev: StanzaEvent) -> Element:
        q = element(DISCO_INFO, "query")
        node = ev.stanza[0].get("node")
        if node:
            await self.engine.node(ev.to.domain, node)
            q.set("node", node)
            child(q, DISCO_INFO, "identity", category="pubsub", type="leaf")
            child(q, DISCO_INFO, "feature").set("var", NS)
            return q
        child(q, DISCO_INFO, "identity", category="pubsub", type="service",
              name="Publish-Subscribe")
        for f in (DISCO_INFO, DISCO_ITEMS, *FEATURES):
            child(q, DISCO_INFO, "feature").set("var", f)
        return q

    @iq("get", DISCO_ITEMS, "query", to=("service",))
    async def disco_items(self, ev: StanzaEvent) -> Element:
        return await self.engine.disco_items(ev, ev.to.domain, element(DISCO_ITEMS, "query"))

    # -- the use cases (§6–8), on the service the stanza is addressed to ------------
    @iq("set", NS, "pubsub", to=("service",))
    async def pubsub_set(self, ev: StanzaEvent) -> Element | None:
        return await self.engine.pubsub_set(ev, ev.to.domain)

    @iq("get", NS, "pubsub", to=("service",))
    async def pubsub_get(self, ev: StanzaEvent) -> Element:
        return await self.engine.pubsub_get(ev, ev.to.domain)

    @iq("get", NS_OWNER, "pubsub", to=("service",))
    async def owner_get(self, ev: StanzaEvent) -> Element:
        return await self.engine.owner_get(ev, ev.to.domain)

    @iq("set", NS_OWNER, "pubsub", to=("service",))
    async def owner_set(self, ev: StanzaEvent) -> None:
        await self.engine.owner_set(ev, ev.to.domain)
