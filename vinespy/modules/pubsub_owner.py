"""XEP-0060 §8, the owner's use cases, as part of the shared pubsub engine
(:class:`vinespy.modules.pubsub_engine.Engine` inherits them): node
configuration (§8.2, §8.3), deletion (§8.4), purge (§8.5), subscriptions
(§8.8, with the subscribed entity's consent) and affiliations (§8.9)."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Iterable

from lxml import etree

from ..errors import StanzaError
from ..events import StanzaEvent
from ..jid import JID, JIDError
from ..rules import pubsub as rules
from ..rules.pubsub import NS_OWNER, error
from ..xml import Element, child, element

if TYPE_CHECKING:
    from ..storage.pubsub import PubSubStore
    from .pubsub_engine import Node


class OwnerCases:
    """§8 on top of the engine's helpers (``self`` is the Engine)."""

    if TYPE_CHECKING:       # what the Engine provides
        limits: rules.Limits

        @property
        def store(self) -> PubSubStore: ...

        @staticmethod
        def action(ev: StanzaEvent, *names: str) -> Element: ...

        async def node(self, service: str, node: str | None) -> Node: ...

        async def access(self, service: str, requester: JID, config: dict[str, str],
                         affs: dict[str, str]) -> tuple[str, bool]: ...

        async def notify(self, service: str, node: str, config: dict[str, str],
                         affs: dict[str, str], payload: Element, cause: JID,
                         subscribers: Iterable[str] | None = None) -> int: ...

    async def owned(self, ev: StanzaEvent, service: str, action: Element) -> Node:
        node, config, affs = await self.node(service, action.get("node"))
        if not rules.is_owner(affs.get(str(ev.frm.bare), "none")):
            raise StanzaError("forbidden", "only an owner of the node may do that")
        return node, config, affs

    async def owner_get(self, ev: StanzaEvent, service: str) -> Element:
        action = self.action(ev, "configure", "affiliations", "subscriptions", "default")
        name = etree.QName(action).localname
        ps = element(NS_OWNER, "pubsub")
        if name == "default":
            d = child(ps, NS_OWNER, "default")
            d.append(rules.config_form(rules.default_config(self.limits), self.limits))
            return ps
        node, config, affs = await self.owned(ev, service, action)
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
            for jid, subid in sorted((await self.store.subscriptions(service, node)).items()):
                s = child(out, NS_OWNER, "subscription")
                for k, v in (("jid", jid), ("subid", subid), ("subscription", "subscribed")):
                    s.set(k, v)
        return ps

    async def owner_set(self, ev: StanzaEvent, service: str) -> None:
        action = self.action(ev, "configure", "delete", "purge", "affiliations",
                             "subscriptions")
        name = etree.QName(action).localname
        store = self.store
        node, config, affs = await self.owned(ev, service, action)
        if name == "configure":
            form = action.find(f"{{{rules.DATA}}}x")
            if form is None:
                raise StanzaError("bad-request", "a configuration form is required")
            new = rules.parse_config(form, self.limits, config)
            await store.configure(service, node, new)
            await self.drop_unallowed(service, node, new, affs)
            # A lower max_items applies now, not at the next publish.
            keep = rules.max_items(new, self.limits)
            for old in (await store.items(service, node))[keep:]:
                await store.retract(service, node, old.id)
        elif name == "delete":
            subs = list((await store.subscriptions(service, node)))
            await store.delete(service, node)
            if config.get("pubsub#notify_delete", "1") == "1":
                await self.notify(service, node, config, affs, rules.deleted(node), ev.frm,
                                  subs)
        elif name == "purge":
            if config.get("pubsub#persist_items", "1") != "1":     # §8.5.3.3
                raise error("feature-not-implemented", "unsupported", feature="persistent-items",
                            text=f"node {node!r} does not persist items")
            await store.purge(service, node)
            if config.get("pubsub#notify_retract", "1") == "1":
                await self.notify(service, node, config, affs, rules.purged(node), ev.frm)
        elif name == "affiliations":
            await self.set_affiliations(service, action, node, config, affs)
        else:
            await self.set_subscriptions(ev, service, action, node)

    async def set_affiliations(self, service: str, action: Element, node: str,
                               config: dict[str, str], affs: dict[str, str]) -> None:
        """§8.9.2: all or nothing; an owner cannot remove the last owner."""
        changes: dict[str, str] = {}
        for a in action.findall(f"{{{NS_OWNER}}}affiliation"):
            try:
                jid = str(JID.parse(a.get("jid", "")).bare)
            except JIDError:
                raise StanzaError("jid-malformed", f"bad jid {a.get('jid')!r}") from None
            aff = rules.affiliation(a.get("affiliation"), self.limits)
            if aff is None:                 # §8.9.2.1: no 'affiliation', no change
                continue
            changes[jid] = aff
        after = {**affs, **changes}
        if not any(v == "owner" for v in after.values()):
            raise StanzaError("not-acceptable", "a node keeps at least one owner")
        for jid, aff in changes.items():
            await self.store.set_affiliation(service, node, jid,
                                             None if aff == "none" else aff)
        # An outcast, a publish-only entity, a non-member of a whitelist node
        # is no longer subscribed.
        await self.drop_unallowed(service, node, config, after)

    async def drop_unallowed(self, service: str, node: str, config: dict[str, str],
                             affs: dict[str, str]) -> None:
        """Remove the subscriptions of those who may not subscribe any more
        (after a change of affiliations or of the access model)."""
        store = self.store
        for sub in list(await store.subscriptions(service, node)):
            jid = JID.parse(sub)
            aff, presence = await self.access(service, jid, config, affs)
            if rules.may_subscribe(aff, config, presence) is not None:
                await store.unsubscribe(service, node, sub)

    async def set_subscriptions(self, ev: StanzaEvent, service: str, action: Element,
                                node: str) -> None:
        """§8.8.2: an owner unsubscribes anyone, and subscribes only with
        consent (:func:`vinespy.rules.pubsub.owner_may_subscribe`) within the
        quotas. Every entry is read first (a malformed one changes nothing);
        the refused ones are answered as §8.8.2.4 says, the others applied."""
        store = self.store
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
