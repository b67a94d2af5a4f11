"""The XEP-0060 node and item logic shared by the pubsub services and PEP.

:class:`Engine` serves the use cases of XEP-0060 (§5 disco, §6 subscriber,
§7 publisher, §8 owner) on one :class:`~vinespy.storage.pubsub.PubSubStore`
for a *service* named by a string: a service domain (``games.wonderland.lit``,
:mod:`vinespy.modules.pubsub`) or an account's bare JID (XEP-0163,
:mod:`vinespy.modules.pep`). What differs between the two is a
:class:`Policy`: who may create nodes, what a publish to a missing node does
(auto-create), whether the requester shares presence with the service's
owner (the "presence" access model), the default configuration (the
:class:`~vinespy.rules.pubsub.Limits`), who gets a notification, what a new
subscriber is sent and the error at the node quota. The rules themselves
(who may do what, forms, error conditions, payloads) stay in
:mod:`vinespy.rules.pubsub`; the modules keep only the XMPP glue (which
events, which service a stanza addresses, disco).

The engine answers by returning payloads or raising StanzaError, as an
``@iq`` handler does; the module's handler calls it.
"""

from __future__ import annotations

import asyncio
import copy
import secrets
from typing import TYPE_CHECKING, Iterable

from lxml import etree

from ..errors import StanzaError
from ..events import StanzaEvent
from ..jid import JID, JIDError
from ..rules import pubsub as rules
from ..rules.pubsub import NS, NS_OWNER, Limits, error
from ..storage.pubsub import PubSubStore
from ..xml import Element, child, element, stanza
from .blocking import Blocking, matches
from .pubsub_owner import OwnerCases

if TYPE_CHECKING:
    from ..host import Host

DISCO_ITEMS = "http://jabber.org/protocol/disco#items"

# Action elements some handler takes (in a get or a set).
_HANDLED = {
    NS: frozenset(("create", "configure", "publish", "publish-options", "retract", "subscribe",
                   "unsubscribe", "items", "subscriptions", "affiliations")),
    NS_OWNER: frozenset(("configure", "default", "delete", "purge", "affiliations",
                         "subscriptions")),
}

Node = tuple[str, dict[str, str], dict[str, str]]     # name, config, affiliations


class Policy:
    """What a XEP-0060 service (``pubsub = ["games"]``) allows; PEP's
    policy (:class:`vinespy.modules.pep.PepPolicy`) overrides it."""

    auto_create = False             # a publish to a missing node creates it (§7.1.4)

    def __init__(self, host: Host) -> None:
        self.host = host

    def may_create(self, service: str, requester: JID) -> None:
        """Raise the error if ``requester`` may not create nodes in ``service``."""
        if requester.domain not in self.host.router.hosts:
            raise StanzaError("forbidden", "only users of this server create nodes")

    def too_many_nodes(self, limit: int) -> StanzaError:
        return StanzaError("not-allowed", f"at most {limit} nodes here")

    def may_publish(self, service: str, requester: JID) -> None:
        """Raise the error if ``requester`` may never publish in ``service``,
        whatever a node's publish model and affiliations say."""

    async def presence(self, service: str, requester: JID) -> bool:
        """Whether ``requester`` is subscribed to the presence of ``service``'s
        owner (the "presence" access model); a service domain has none."""
        return False

    async def recipients(self, service: str, node: str, config: dict[str, str],
                         affs: dict[str, str], subscribers: Iterable[str]) -> list[str]:
        """The JIDs a notification of ``node`` goes to: its subscribers."""
        return list(subscribers)

    async def subscribed(self, service: str, node: str, config: dict[str, str],
                         jid: str) -> None:
        """``jid`` just subscribed to ``node`` (§6.1.7: what it is sent)."""


class Engine(OwnerCases):
    """XEP-0060's use cases on ``host.pubsub_store`` under ``policy``; the
    owner's (§8) are in :class:`~vinespy.modules.pubsub_owner.OwnerCases`."""

    def __init__(self, host: Host, policy: Policy, limits: Limits) -> None:
        self.host = host
        self.policy = policy
        self.limits = limits

    @property
    def store(self) -> PubSubStore:
        store = self.host.pubsub_store
        if store is None:
            raise StanzaError("service-unavailable", "this host has no pubsub service")
        return store

    # -- helpers -----------------------------------------------------------------
    async def node(self, service: str, node: str | None) -> Node:
        """(name, config, affiliations) of an existing node, else the error."""
        if not node:
            raise error("bad-request", "nodeid-required", text="a node attribute is required")
        n = await self.store.get(service, node)
        if n is None:
            raise StanzaError("item-not-found", f"no node {node!r} at {service}")
        return node, dict(n.config), await self.store.affiliations(service, node)

    async def access(self, service: str, requester: JID, config: dict[str, str],
                     affs: dict[str, str]) -> tuple[str, bool]:
        """(affiliation, presence subscription) of ``requester``; the roster is
        read only for a presence node and an entity it does not list."""
        aff = affs.get(str(requester.bare), "none")
        presence = (config.get("pubsub#access_model") == "presence"
                    and aff not in ("owner", "publisher", "member", "outcast")
                    and await self.policy.presence(service, requester))
        return aff, presence

    async def may_retrieve(self, service: str, requester: JID, config: dict[str, str],
                           affs: dict[str, str]) -> StanzaError | None:
        aff, presence = await self.access(service, requester, config, affs)
        return rules.may_retrieve(aff, config, presence)

    async def notify(self, service: str, node: str, config: dict[str, str],
                     affs: dict[str, str], payload: Element, cause: JID,
                     subscribers: Iterable[str] | None = None) -> int:
        """One headline message from ``service`` per recipient the policy
        names (from ``subscribers``, else the node's) that ``cause`` (who
        made the change) may reach, routed together; each carries its own
        copy of ``payload``."""
        if subscribers is None:
            subscribers = await self.store.subscriptions(service, node)
        jids = await self.policy.recipients(service, node, config, affs, subscribers)
        template = stanza("message", frm=service, type="headline")
        template.append(payload)
        out = []
        for jid, ok in zip(jids, await self.reach(cause, jids)):
            if ok:
                msg = copy.deepcopy(template)       # each its own copy (cheaper than new)
                msg.set("to", jid)
                out.append(msg)
        await self.host.router.route_many(out, None)
        return len(out)

    async def reach(self, cause: JID, subscribers: list[str]) -> list[bool]:
        """:meth:`reaches` for each of ``subscribers`` (prepared JIDs, as the
        store and the policy give them): the blocklists in memory read at
        once, the others loaded together; a fan-out's hot path, so on
        strings (the bare JID is what precedes the first '/')."""
        router = self.host.router
        hosts = router.hosts
        home = cause.domain
        lists: dict[str, frozenset[JID] | None] = {}
        keys: dict[str, JID] = {}
        bares: list[str | None] = []
        for sub in subscribers:
            bare = sub.partition("/")[0]
            domain = bare.rpartition("@")[2]
            if (domain != home and domain in hosts and home in hosts
                    and not router.cross_domain(home, domain)):
                bares.append(None)
                continue
            if bare not in lists:
                try:
                    key = keys[bare] = JID.parse(bare)
                except JIDError:
                    bares.append(None)
                    continue
                host = hosts.get(domain)
                blocking = host.modules.get("blocking") if host is not None else None
                lists[bare] = (blocking.cached(key) if isinstance(blocking, Blocking)
                               else frozenset())
            bares.append(bare)
        missing = [b for b, v in lists.items() if v is None]
        if missing:
            found = await asyncio.gather(*(self._blocklist_of(keys[b]) for b in missing))
            lists.update(zip(missing, found))
        out = []
        for b in bares:
            blocked = lists[b] if b is not None else None
            out.append(b is not None and not (blocked and matches(blocked, cause)))
        return out

    async def _blocklist_of(self, bare: JID) -> frozenset[JID]:
        host = self.host.router.hosts.get(bare.domain)
        blocking = host.module("blocking") if host is not None else None
        return await blocking.blocklist(bare) if isinstance(blocking, Blocking) else frozenset()

    async def reaches(self, cause: JID, subscriber: str) -> bool:
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
    def action(ev: StanzaEvent, *names: str) -> Element:
        """The action element of the request: the first child named in
        ``names``. One handled in the other iq type (``<items/>`` in a set)
        is ``<bad-request/>``; any other is ``<feature-not-implemented/>`` +
        ``<unsupported feature=…/>``."""
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

    # -- disco (§5.2–5.5) --------------------------------------------------------
    async def disco_items(self, ev: StanzaEvent, service: str, q: Element) -> Element:
        """disco#items of ``service`` (the nodes ``ev``'s sender may see) or,
        with a node, of that node (its items, to those who may retrieve them)."""
        node = ev.stanza[0].get("node")
        store = self.store
        if node:
            _, config, affs = await self.node(service, node)
            q.set("node", node)
            if await self.may_retrieve(service, ev.frm, config, affs) is None:
                for item in await store.items(service, node):
                    it = child(q, DISCO_ITEMS, "item")
                    it.set("jid", service)
                    it.set("name", item.id)
            return q
        for name in await store.nodes(service):
            if await self.discoverable(service, name, ev.frm):
                it = child(q, DISCO_ITEMS, "item")
                it.set("jid", service)
                it.set("node", name)
        return q

    async def discoverable(self, service: str, node: str, requester: JID) -> bool:
        """§5.2: may ``requester`` see ``node`` listed; the affiliations are
        read only for a node not listed to everyone."""
        n = await self.store.get(service, node)
        if n is None:
            return False
        if rules.may_discover("none", n.config):
            return True
        affs = await self.store.affiliations(service, node)
        aff, presence = await self.access(service, requester, n.config, affs)
        return rules.may_discover(aff, n.config, presence)

    # -- entity use cases (§5–7) ---------------------------------------------------
    async def pubsub_set(self, ev: StanzaEvent, service: str) -> Element | None:
        action = self.action(ev, "create", "publish", "retract", "subscribe", "unsubscribe")
        name = etree.QName(action).localname
        if name == "create":
            return await self.create(ev, service, action)
        if name == "publish":
            return await self.publish(ev, service, action)
        if name == "retract":
            await self.retract(ev, service, action)
            return None
        if name == "subscribe":
            return await self.subscribe(ev, service, action)
        await self.unsubscribe(ev, service, action)
        return None

    async def pubsub_get(self, ev: StanzaEvent, service: str) -> Element:
        action = self.action(ev, "items", "subscriptions", "affiliations")
        name = etree.QName(action).localname
        if name == "items":
            return await self.items(ev, service, action)
        if name == "subscriptions":
            return await self.own_subscriptions(ev, service, action)
        return await self.own_affiliations(ev, service, action)

    async def create(self, ev: StanzaEvent, service: str, create: Element) -> Element | None:
        self.policy.may_create(service, ev.frm)
        node = create.get("node")
        instant = not node
        if instant:
            node = secrets.token_hex(8)
        assert node is not None
        configure = ev.stanza[0].find(f"{{{NS}}}configure")
        form = configure.find(f"{{{rules.DATA}}}x") if configure is not None else None
        await self.new_node(service, node, ev.frm, rules.parse_config(form, self.limits))
        if not instant:
            return None
        ps = element(NS, "pubsub")
        child(ps, NS, "create").set("node", node)
        return ps

    async def new_node(self, service: str, node: str, creator: JID,
                       config: dict[str, str]) -> None:
        """Create ``node`` within the node quota; <conflict/> if it exists."""
        if len(await self.store.nodes(service)) >= self.limits.max_nodes:
            raise self.policy.too_many_nodes(self.limits.max_nodes)
        if not await self.store.create(service, node, str(creator.bare), config):
            raise StanzaError("conflict", f"node {node!r} exists")

    async def _publish_target(self, ev: StanzaEvent, service: str,
                              publish: Element) -> tuple[Node, bool]:
        """The node a publish goes to and whether it is still to be created:
        auto-created (§7.1.4, XEP-0163 §3) where the policy says so, with
        the publish-options applied (XEP-0223), once the item is found
        valid; an existing node must meet the publish-options (§7.1.5)."""
        options = ev.stanza[0].find(f"{{{NS}}}publish-options")
        form = options.find(f"{{{rules.DATA}}}x") if options is not None else None
        name = publish.get("node")
        if self.policy.auto_create and name and await self.store.get(service, name) is None:
            self.policy.may_create(service, ev.frm)
            config = {**rules.default_config(self.limits),
                      **rules.publish_options(form, self.limits)}
            return (name, config, {str(ev.frm.bare): "owner"}), True
        node, config, affs = await self.node(service, name)
        if options is not None:
            refused = rules.preconditions(form, config, self.limits)
            if refused is not None:
                raise refused
        return (node, config, affs), False

    async def publish(self, ev: StanzaEvent, service: str, publish: Element) -> Element:
        store = self.store
        (node, config, affs), missing = await self._publish_target(ev, service, publish)
        requester = str(ev.frm.bare)
        subs = await store.subscriptions(service, node)     # read once: notify takes it
        subscribed = any(JID.parse(j).bare == ev.frm.bare for j in subs)
        self.policy.may_publish(service, ev.frm)
        if not rules.may_publish(affs.get(requester, "none"), config, subscribed):
            raise StanzaError("forbidden", "you may not publish to this node")
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
        if missing:
            try:
                await self.new_node(service, node, ev.frm, config)
            except StanzaError as exc:
                if exc.condition != "conflict":     # created meanwhile: publish to it
                    raise
                node, config, affs = await self.node(service, node)
        if persist:
            await store.publish(service, node, item_id, data, str(ev.frm),
                                rules.max_items(config, self.limits))
        await self.notify(service, node, config, affs, rules.published(
            node, item_id, payload if deliver else None), ev.frm, subs)
        ps = element(NS, "pubsub")
        pub = child(ps, NS, "publish")
        pub.set("node", node)
        child(pub, NS, "item").set("id", item_id)
        return ps

    async def retract(self, ev: StanzaEvent, service: str, retract: Element) -> None:
        store = self.store
        node, config, affs = await self.node(service, retract.get("node"))
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
            await self.notify(service, node, config, affs, rules.retracted(node, [item_id]),
                              ev.frm)

    async def subscribe(self, ev: StanzaEvent, service: str, sub: Element) -> Element:
        store = self.store
        node, config, affs = await self.node(service, sub.get("node"))
        jid = rules.subscriber(sub, ev.frm)
        aff, presence = await self.access(service, ev.frm, config, affs)
        refused = rules.may_subscribe(aff, config, presence)
        if refused is not None:
            raise refused
        subs = await store.subscriptions(service, node)
        refused = rules.too_many_subscriptions(jid, subs, self.limits)
        if refused is not None:
            raise refused
        subid = subs.get(jid) or secrets.token_hex(8)
        await store.subscribe(service, node, jid, subid)
        await self.policy.subscribed(service, node, config, jid)
        ps = element(NS, "pubsub")
        s = child(ps, NS, "subscription")
        for k, v in (("node", node), ("jid", jid), ("subid", subid),
                     ("subscription", "subscribed")):
            s.set(k, v)
        return ps

    async def unsubscribe(self, ev: StanzaEvent, service: str, unsub: Element) -> None:
        node, _, _ = await self.node(service, unsub.get("node"))
        jid = rules.subscriber(unsub, ev.frm)
        if not await self.store.unsubscribe(service, node, jid):
            raise error("unexpected-request", "not-subscribed", type="cancel",
                        text=f"{jid} is not subscribed to {node!r}")

    async def items(self, ev: StanzaEvent, service: str, items: Element) -> Element:
        node, config, affs = await self.node(service, items.get("node"))
        refused = await self.may_retrieve(service, ev.frm, config, affs)
        if refused is not None:
            raise refused
        ids = [i.get("id", "") for i in items.findall(f"{{{NS}}}item") if i.get("id")]
        max_items = None
        if items.get("max_items"):
            try:
                max_items = max(1, int(items.get("max_items", "")))
            except ValueError:
                raise StanzaError("bad-request", "max_items is not a number") from None
        found = await self.store.items(service, node, max_items=max_items, ids=ids or None)
        ps = element(NS, "pubsub")
        out = child(ps, NS, "items")
        out.set("node", node)
        for it in (found if ids else list(reversed(found))):       # oldest first
            el = child(out, NS, "item")
            el.set("id", it.id)
            if it.payload:
                el.append(etree.fromstring(it.payload))
        return ps

    async def own_subscriptions(self, ev: StanzaEvent, service: str,
                                subs: Element) -> Element:
        only = subs.get("node")
        ps = element(NS, "pubsub")
        out = child(ps, NS, "subscriptions")
        if only:
            out.set("node", only)
            await self.node(service, only)
        for jid in dict.fromkeys((str(ev.frm.bare), str(ev.frm))):
            for node, subid in sorted((await self.store.subscriptions_of(service, jid)).items()):
                if only and node != only:
                    continue
                s = child(out, NS, "subscription")
                for k, v in (("node", node), ("jid", jid), ("subid", subid),
                             ("subscription", "subscribed")):
                    s.set(k, v)
        return ps

    async def own_affiliations(self, ev: StanzaEvent, service: str,
                               request: Element) -> Element:
        ps = element(NS, "pubsub")
        out = child(ps, NS, "affiliations")
        me = str(ev.frm.bare)
        only = request.get("node")
        if only:
            out.set("node", only)
            await self.node(service, only)
        for node in [only] if only else await self.store.nodes(service):
            aff = (await self.store.affiliations(service, node)).get(me)
            if aff and aff != "none":
                a = child(out, NS, "affiliation")
                a.set("node", node)
                a.set("affiliation", aff)
        return ps
