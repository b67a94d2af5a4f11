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

In a cluster on Redis, a change is answered with success only once
``[cluster] wait_replicas`` replicas have it; else the store raises
NotReplicated before anything is notified, and the framework answers
``<resource-constraint/>`` type wait (:func:`vinespy.modules.unconfirmed`).
"""

from __future__ import annotations

import copy
import secrets
from typing import Any, Iterable

from lxml import etree

from ..errors import StanzaError
from ..events import StanzaEvent
from ..jid import JID, JIDError
from ..rules import pubsub as rules
from ..rules.pubsub import NS, NS_OWNER, Limits, error
from ..storage.pubsub import PubSubStore
from ..xml import Element, child, element, stanza
from . import Module, Option, iq
from .blocking import Blocking, matches

DISCO_INFO = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"

# Action elements some handler of this module takes (in a get or a set).
_HANDLED = {
    NS: frozenset(("create", "configure", "publish", "publish-options", "retract", "subscribe",
                   "unsubscribe", "items", "subscriptions", "affiliations")),
    NS_OWNER: frozenset(("configure", "default", "delete", "purge", "affiliations",
                         "subscriptions")),
}

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
        self.limits = Limits()
        self.store: PubSubStore | None = None

    async def start(self) -> None:
        # Each option is the field of Limits of the same name.
        self.limits = Limits(**{name: self.option(name) for name in self.options})
        self.store = self.host.pubsub_store

    async def stop(self) -> None:
        if self.store is not None:
            await self.store.close()

    # -- helpers -----------------------------------------------------------------
    def _store(self) -> PubSubStore:
        if self.store is None:
            raise StanzaError("service-unavailable", "this host has no pubsub service")
        return self.store

    async def _node(self, service: str, node: str | None) -> tuple[str, dict[str, str],
                                                                   dict[str, str]]:
        """(name, config, affiliations) of an existing node, else the error."""
        if not node:
            raise error("bad-request", "nodeid-required", text="a node attribute is required")
        store = self._store()
        n = await store.get(service, node)
        if n is None:
            raise StanzaError("item-not-found", f"no node {node!r} at {service}")
        return node, dict(n.config), await store.affiliations(service, node)

    async def _notify(self, service: str, node: str, payload: Element, cause: JID,
                      subscribers: Iterable[str] | None = None) -> int:
        """One headline message per subscribed JID (``subscribers``, else the
        node's) that ``cause`` (who made the change) may reach, routed
        together; each carries its own copy of ``payload``."""
        if subscribers is None:
            subscribers = await self._store().subscriptions(service, node)
        out = []
        for jid in subscribers:
            if not await self._reaches(cause, jid):
                continue
            msg = stanza("message", frm=service, to=jid, type="headline")
            msg.append(copy.deepcopy(payload))
            out.append(msg)
        await self.send_many(out)
        return len(out)

    async def _reaches(self, cause: JID, subscriber: str) -> bool:
        """Whether ``cause`` could reach ``subscriber`` with a message: not
        across served domains that do not both allow it (the router's
        ``cross_domain``), nor when ``subscriber``'s XEP-0191 blocklist
        covers ``cause`` (§3.5: the service relays what the blocked entity
        caused)."""
        try:
            to = JID.parse(subscriber)
        except JIDError:
            return False
        router = self.host.router
        if (to.domain != cause.domain and to.domain in router.hosts
                and cause.domain in router.hosts
                and not router.cross_domain(cause.domain, to.domain)):
            return False
        host = router.hosts.get(to.domain)
        blocking = host.module("blocking") if host is not None else None
        return not (isinstance(blocking, Blocking)
                    and matches(await blocking.blocklist(to.bare), cause))

    @staticmethod
    def _action(ev: StanzaEvent, *names: str) -> Element:
        """The action element of the request: the first child named in
        ``names``. One this service handles in the other iq type (``<items/>``
        in a set) is ``<bad-request/>``; any other is
        ``<feature-not-implemented/>`` + ``<unsupported feature=…/>``."""
        ps = ev.stanza[0]
        actions = [c for c in ps if isinstance(c.tag, str)]
        for c in actions:
            if etree.QName(c).localname in names:
                return c
        if not actions:
            raise StanzaError("bad-request", "an empty <pubsub/>")
        qn = etree.QName(actions[0])
        if qn.localname in _HANDLED.get(qn.namespace or "", ()):
            raise StanzaError("bad-request",
                              f"<{qn.localname}/> does not go in an iq of type "
                              f"{ev.stanza.get('type')!r}")
        raise rules.unsupported(qn.localname)

    # -- disco (§5.1–5.5) --------------------------------------------------------
    @iq("get", DISCO_INFO, "query", to=("service",))
    async def disco_info(self, ev: StanzaEvent) -> Element:
        q = element(DISCO_INFO, "query")
        node = ev.stanza[0].get("node")
        if node:
            await self._node(ev.to.domain, node)
            q.set("node", node)
            ident = child(q, DISCO_INFO, "identity")
            ident.set("category", "pubsub")
            ident.set("type", "leaf")
            child(q, DISCO_INFO, "feature").set("var", NS)
            return q
        ident = child(q, DISCO_INFO, "identity")
        ident.set("category", "pubsub")
        ident.set("type", "service")
        ident.set("name", "Publish-Subscribe")
        for f in (DISCO_INFO, DISCO_ITEMS, *FEATURES):
            child(q, DISCO_INFO, "feature").set("var", f)
        return q

    @iq("get", DISCO_ITEMS, "query", to=("service",))
    async def disco_items(self, ev: StanzaEvent) -> Element:
        service = ev.to.domain
        q = element(DISCO_ITEMS, "query")
        node = ev.stanza[0].get("node")
        store = self._store()
        if node:
            _, config, affs = await self._node(service, node)
            q.set("node", node)
            if rules.may_retrieve(affs.get(str(ev.frm.bare), "none"), config) is None:
                for item in await store.items(service, node):
                    it = child(q, DISCO_ITEMS, "item")
                    it.set("jid", service)
                    it.set("name", item.id)
            return q
        requester = str(ev.frm.bare)
        for name in await store.nodes(service):
            if await self._discoverable(service, name, requester):
                it = child(q, DISCO_ITEMS, "item")
                it.set("jid", service)
                it.set("node", name)
        return q

    async def _discoverable(self, service: str, node: str, requester: str) -> bool:
        """§5.2: may ``requester`` (a bare JID) see ``node`` listed; the
        affiliations are read only for a node not listed to everyone."""
        store = self._store()
        n = await store.get(service, node)
        if n is None:
            return False
        if rules.may_discover("none", n.config):
            return True
        aff = (await store.affiliations(service, node)).get(requester, "none")
        return rules.may_discover(aff, n.config)

    # -- entity use cases (§5–7) ---------------------------------------------------
    @iq("set", NS, "pubsub", to=("service",))
    async def pubsub_set(self, ev: StanzaEvent) -> Element | None:
        action = self._action(ev, "create", "publish", "retract", "subscribe", "unsubscribe")
        name = etree.QName(action).localname
        if name == "create":
            return await self._create(ev, action)
        if name == "publish":
            return await self._publish(ev, action)
        if name == "retract":
            await self._retract(ev, action)
            return None
        if name == "subscribe":
            return await self._subscribe(ev, action)
        await self._unsubscribe(ev, action)
        return None

    @iq("get", NS, "pubsub", to=("service",))
    async def pubsub_get(self, ev: StanzaEvent) -> Element:
        action = self._action(ev, "items", "subscriptions", "affiliations")
        name = etree.QName(action).localname
        if name == "items":
            return await self._items(ev, action)
        if name == "subscriptions":
            return await self._own_subscriptions(ev, action)
        return await self._own_affiliations(ev, action)

    async def _create(self, ev: StanzaEvent, create: Element) -> Element | None:
        service = ev.to.domain
        store = self._store()
        if ev.frm.domain not in self.host.router.hosts:
            raise StanzaError("forbidden", "only users of this server create nodes")
        node = create.get("node")
        instant = not node
        if instant:
            node = secrets.token_hex(8)
        assert node is not None
        configure = ev.stanza[0].find(f"{{{NS}}}configure")
        form = configure.find(f"{{{rules.DATA}}}x") if configure is not None else None
        config = rules.parse_config(form, self.limits)
        if len(await store.nodes(service)) >= self.limits.max_nodes:
            raise StanzaError("not-allowed", f"at most {self.limits.max_nodes} nodes here")
        if not await store.create(service, node, str(ev.frm.bare), config):
            raise StanzaError("conflict", f"node {node!r} exists")
        if not instant:
            return None
        ps = element(NS, "pubsub")
        child(ps, NS, "create").set("node", node)
        return ps

    async def _publish(self, ev: StanzaEvent, publish: Element) -> Element:
        service = ev.to.domain
        store = self._store()
        node, config, affs = await self._node(service, publish.get("node"))
        requester = str(ev.frm.bare)
        subscribed = any(JID.parse(j).bare == ev.frm.bare
                         for j in await store.subscriptions(service, node))
        if not rules.may_publish(affs.get(requester, "none"), config, subscribed):
            raise StanzaError("forbidden", "you may not publish to this node")
        options = ev.stanza[0].find(f"{{{NS}}}publish-options")
        if options is not None:                     # §7.1.5, as preconditions
            refused = rules.preconditions(options.find(f"{{{rules.DATA}}}x"), config,
                                          self.limits)
            if refused is not None:
                raise refused
        items = publish.findall(f"{{{NS}}}item")
        if len(items) > 1:
            raise error("bad-request", "invalid-payload", text="publish one item at a time")
        # §7.1.3.6: what the node's event type asks of the request.
        persist = config.get("pubsub#persist_items", "1") == "1"
        deliver = config.get("pubsub#deliver_payloads", "1") == "1"
        if not persist and not deliver:
            if items:
                raise error("bad-request", "item-forbidden",
                            text="a transient notification node takes no <item/>")
        elif not items:
            if persist:
                raise error("bad-request", "item-required", text="an <item/> is required")
            raise error("bad-request", "payload-required", text="an item with a payload is "
                        "required")
        item = items[0] if items else element(NS, "item")
        payloads = [c for c in item if isinstance(c.tag, str)]
        if len(payloads) > 1:
            raise error("bad-request", "invalid-payload", text="an item holds one payload")
        if not payloads and deliver:
            raise error("bad-request", "payload-required", text="the item needs a payload")
        payload = payloads[0] if payloads else None
        data = etree.tostring(payload, with_tail=False) if payload is not None else b""
        if len(data) > self.limits.max_payload:
            raise error("not-acceptable", "payload-too-big",
                        text=f"at most {self.limits.max_payload} bytes per item")
        item_id = item.get("id") or secrets.token_hex(8)
        if persist:
            await store.publish(service, node, item_id, data, str(ev.frm),
                                int(config.get("pubsub#max_items", "10")))
        await self._notify(service, node, rules.published(
            node, item_id, payload if deliver else None), ev.frm)
        ps = element(NS, "pubsub")
        pub = child(ps, NS, "publish")
        pub.set("node", node)
        child(pub, NS, "item").set("id", item_id)
        return ps

    async def _retract(self, ev: StanzaEvent, retract: Element) -> None:
        service = ev.to.domain
        store = self._store()
        node, config, affs = await self._node(service, retract.get("node"))
        if config.get("pubsub#persist_items", "1") != "1":     # §7.2.3.5
            raise error("feature-not-implemented", "unsupported", feature="persistent-items",
                        text=f"node {node!r} does not persist items")
        item = retract.find(f"{{{NS}}}item")
        item_id = item.get("id") if item is not None else None
        if not item_id:
            raise error("bad-request", "item-required", text="an <item id=.../> is required")
        found = await store.items(service, node, ids=[item_id])
        aff = affs.get(str(ev.frm.bare), "none")
        own = bool(found) and JID.parse(found[0].publisher).bare == ev.frm.bare
        if not rules.may_retract(aff, own):
            raise StanzaError("forbidden", "you may not retract items of this node")
        if not found or not await store.retract(service, node, item_id):
            raise StanzaError("item-not-found", f"no item {item_id!r} in {node!r}")
        if retract.get("notify") in ("1", "true") or config.get("pubsub#notify_retract") == "1":
            await self._notify(service, node, rules.retracted(node, [item_id]), ev.frm)
        return None

    async def _subscribe(self, ev: StanzaEvent, sub: Element) -> Element:
        service = ev.to.domain
        store = self._store()
        node, config, affs = await self._node(service, sub.get("node"))
        jid = rules.subscriber(sub, ev.frm)
        refused = rules.may_subscribe(affs.get(str(ev.frm.bare), "none"), config)
        if refused is not None:
            raise refused
        subs = await store.subscriptions(service, node)
        refused = rules.too_many_subscriptions(jid, subs, self.limits)
        if refused is not None:
            raise refused
        subid = subs.get(jid) or secrets.token_hex(8)
        await store.subscribe(service, node, jid, subid)
        ps = element(NS, "pubsub")
        s = child(ps, NS, "subscription")
        for k, v in (("node", node), ("jid", jid), ("subid", subid),
                     ("subscription", "subscribed")):
            s.set(k, v)
        return ps

    async def _unsubscribe(self, ev: StanzaEvent, unsub: Element) -> None:
        service = ev.to.domain
        node, _, _ = await self._node(service, unsub.get("node"))
        jid = rules.subscriber(unsub, ev.frm)
        if not await self._store().unsubscribe(service, node, jid):
            raise error("unexpected-request", "not-subscribed", type="cancel",
                        text=f"{jid} is not subscribed to {node!r}")
        return None

    async def _items(self, ev: StanzaEvent, items: Element) -> Element:
        service = ev.to.domain
        node, config, affs = await self._node(service, items.get("node"))
        refused = rules.may_retrieve(affs.get(str(ev.frm.bare), "none"), config)
        if refused is not None:
            raise refused
        ids = [i.get("id", "") for i in items.findall(f"{{{NS}}}item") if i.get("id")]
        max_items = None
        if items.get("max_items"):
            try:
                max_items = max(1, int(items.get("max_items", "")))
            except ValueError:
                raise StanzaError("bad-request", "max_items is not a number") from None
        found = await self._store().items(service, node, max_items=max_items, ids=ids or None)
        ps = element(NS, "pubsub")
        out = child(ps, NS, "items")
        out.set("node", node)
        for it in (found if ids else list(reversed(found))):       # oldest first
            el = child(out, NS, "item")
            el.set("id", it.id)
            if it.payload:
                el.append(etree.fromstring(it.payload))
        return ps

    async def _own_subscriptions(self, ev: StanzaEvent, subs: Element) -> Element:
        service = ev.to.domain
        store = self._store()
        only = subs.get("node")
        ps = element(NS, "pubsub")
        out = child(ps, NS, "subscriptions")
        if only:
            out.set("node", only)
            await self._node(service, only)
        for jid in dict.fromkeys((str(ev.frm.bare), str(ev.frm))):
            for node, subid in sorted((await store.subscriptions_of(service, jid)).items()):
                if only and node != only:
                    continue
                s = child(out, NS, "subscription")
                for k, v in (("node", node), ("jid", jid), ("subid", subid),
                             ("subscription", "subscribed")):
                    s.set(k, v)
        return ps

    async def _own_affiliations(self, ev: StanzaEvent, request: Element) -> Element:
        service = ev.to.domain
        store = self._store()
        ps = element(NS, "pubsub")
        out = child(ps, NS, "affiliations")
        me = str(ev.frm.bare)
        only = request.get("node")
        if only:
            out.set("node", only)
            await self._node(service, only)
        for node in [only] if only else await store.nodes(service):
            aff = (await store.affiliations(service, node)).get(me)
            if aff and aff != "none":
                a = child(out, NS, "affiliation")
                a.set("node", node)
                a.set("affiliation", aff)
        return ps

    # -- owner use cases (§8) --------------------------------------------------------
    async def _owned(self, ev: StanzaEvent, action: Element) -> tuple[str, dict[str, str],
                                                                      dict[str, str]]:
        node, config, affs = await self._node(ev.to.domain, action.get("node"))
        if not rules.is_owner(affs.get(str(ev.frm.bare), "none")):
            raise StanzaError("forbidden", "only an owner of the node may do that")
        return node, config, affs

    @iq("get", NS_OWNER, "pubsub", to=("service",))
    async def owner_get(self, ev: StanzaEvent) -> Element:
        action = self._action(ev, "configure", "affiliations", "subscriptions", "default")
        name = etree.QName(action).localname
        ps = element(NS_OWNER, "pubsub")
        if name == "default":
            d = child(ps, NS_OWNER, "default")
            d.append(rules.config_form(rules.default_config(self.limits), self.limits))
            return ps
        node, config, affs = await self._owned(ev, action)
        out = child(ps, NS_OWNER, name)
        out.set("node", node)
        if name == "configure":
            out.append(rules.config_form(config, self.limits))
        elif name == "affiliations":
            for jid, aff in sorted(affs.items()):
                a = child(out, NS_OWNER, "affiliation")
                a.set("jid", jid)
                a.set("affiliation", aff)
        else:
            for jid, subid in sorted((await self._store().subscriptions(
                    ev.to.domain, node)).items()):
                s = child(out, NS_OWNER, "subscription")
                for k, v in (("jid", jid), ("subid", subid), ("subscription", "subscribed")):
                    s.set(k, v)
        return ps

    @iq("set", NS_OWNER, "pubsub", to=("service",))
    async def owner_set(self, ev: StanzaEvent) -> None:
        action = self._action(ev, "configure", "delete", "purge", "affiliations",
                              "subscriptions")
        name = etree.QName(action).localname
        service = ev.to.domain
        store = self._store()
        node, config, affs = await self._owned(ev, action)
        if name == "configure":
            form = action.find(f"{{{rules.DATA}}}x")
            if form is None:
                raise StanzaError("bad-request", "a configuration form is required")
            new = rules.parse_config(form, self.limits, config)
            await store.configure(service, node, new)
            await self._drop_unallowed(service, node, new, affs)
            # A lower max_items applies now, not at the next publish.
            keep = int(new.get("pubsub#max_items", "10"))
            for old in (await store.items(service, node))[keep:]:
                await store.retract(service, node, old.id)
        elif name == "delete":
            subs = list((await store.subscriptions(service, node)))
            await store.delete(service, node)
            if config.get("pubsub#notify_delete", "1") == "1":
                await self._notify(service, node, rules.deleted(node), ev.frm, subs)
        elif name == "purge":
            if config.get("pubsub#persist_items", "1") != "1":     # §8.5.3.3
                raise error("feature-not-implemented", "unsupported", feature="persistent-items",
                            text=f"node {node!r} does not persist items")
            await store.purge(service, node)
            if config.get("pubsub#notify_retract", "1") == "1":
                await self._notify(service, node, rules.purged(node), ev.frm)
        elif name == "affiliations":
            await self._set_affiliations(ev, action, node, config, affs)
        else:
            await self._set_subscriptions(ev, action, node)
        return None

    async def _set_affiliations(self, ev: StanzaEvent, action: Element, node: str,
                                config: dict[str, str], affs: dict[str, str]) -> None:
        """§8.9.2: all or nothing; an owner cannot remove the last owner."""
        changes: dict[str, str] = {}
        for a in action.findall(f"{{{NS_OWNER}}}affiliation"):
            try:
                jid = str(JID.parse(a.get("jid", "")).bare)
            except JIDError:
                raise StanzaError("jid-malformed", f"bad jid {a.get('jid')!r}") from None
            aff = a.get("affiliation")
            if aff is None:                 # §8.9.2.1: no 'affiliation', no change
                continue
            if aff not in rules.AFFILIATIONS:
                raise StanzaError("bad-request", f"unknown affiliation {aff!r}")
            changes[jid] = aff
        after = {**affs, **changes}
        if not any(v == "owner" for v in after.values()):
            raise StanzaError("not-acceptable", "a node keeps at least one owner")
        store = self._store()
        for jid, aff in changes.items():
            await store.set_affiliation(ev.to.domain, node, jid, None if aff == "none" else aff)
        # An outcast, a publish-only entity, a non-member of a whitelist node
        # is no longer subscribed.
        await self._drop_unallowed(ev.to.domain, node, config, after)

    async def _drop_unallowed(self, service: str, node: str, config: dict[str, str],
                              affs: dict[str, str]) -> None:
        """Remove the subscriptions of those who may not subscribe any more
        (after a change of affiliations or of the access model)."""
        store = self._store()
        for sub in list(await store.subscriptions(service, node)):
            bare = str(JID.parse(sub).bare)
            if rules.may_subscribe(affs.get(bare, "none"), config) is not None:
                await store.unsubscribe(service, node, sub)

    async def _set_subscriptions(self, ev: StanzaEvent, action: Element, node: str) -> None:
        """§8.8.2: an owner unsubscribes anyone, and subscribes only with
        consent (:func:`vinespy.rules.pubsub.owner_may_subscribe`) within the
        quotas. Every entry is read first (a malformed one changes nothing);
        the refused ones are answered as §8.8.2.4 says, the others applied."""
        service = ev.to.domain
        store = self._store()
        subs = dict(await store.subscriptions(service, node))
        owner = str(ev.frm.bare)
        refused = []
        for jid, state in rules.subscription_changes(action):
            if state == "none":
                await store.unsubscribe(service, node, jid)
                subs.pop(jid, None)
            elif not rules.owner_may_subscribe(owner, jid, subs) or (
                    rules.too_many_subscriptions(jid, subs, self.limits) is not None):
                refused.append(jid)
            elif jid not in subs:
                subs[jid] = secrets.token_hex(8)
                await store.subscribe(service, node, jid, subs[jid])
        if refused:
            raise rules.refuse_subscriptions(action, refused, subs)
