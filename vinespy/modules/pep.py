"""XEP-0163: Personal Eventing Protocol, a pubsub service on every account.

Each account's bare JID is a virtual XEP-0060 service (XEP-0163 §2.1): its
IQs (``to`` the bare JID, or no ``to`` from the owner: ``iq-*/bare/…`` and
``iq-*/self/…``) are served by the shared engine
(:mod:`vinespy.modules.pubsub_engine`) under :class:`PepPolicy`, in the
host's pubsub store (``host.pubsub_store``, the one the XEP-0060 services
use: Redis or SQL in a cluster, shared by every node) with the bare JID as
the service name.

* Only the owner creates, publishes, configures, deletes and purges (others:
  ``<forbidden/>``; §2.2 "one publisher per node", the owner-publisher
  being the account's bare JID): the publish models "open" and
  "subscribers" are not offered (``<not-acceptable/>`` in a configuration,
  ``<precondition-not-met/>`` in publish-options), the affiliations
  "publisher" and "publish-only" are ``<feature-not-implemented/>``, and a
  publish by anyone else is refused whatever a node stored before says
  (``PepPolicy.may_publish``). A publish to a missing
  node creates it (§3 "auto-create") with the PEP defaults (§5: access model
  "presence", ``pubsub#max_items`` 1 as Prosody, items persisted,
  ``pubsub#send_last_published_item`` on_sub_and_presence, notify_retract on)
  overridden by the publish-options (XEP-0223: ``persist_items`` +
  ``access_model`` whitelist for private data).
* publish-options on an existing node are preconditions (XEP-0060 §7.1.5,
  XEP-0223 §3): a node configured otherwise is ``<conflict/>`` +
  ``<precondition-not-met/>``. Decided here: the node is never reconfigured
  behind the owner's back (Prosody can, with an option); an unknown or
  invalid option is precondition-not-met too, never silently ignored.
  Supported: persist_items, access_model (presence, open, whitelist),
  max_items (a number, or ``max``: kept as ``max``, the ``max_items``
  limit below whatever it is when items are trimmed),
  send_last_published_item, notify_retract, notify_delete, deliver_payloads,
  publish_model (publishers), title.
* Access (XEP-0060 §4.5): presence: the owner and the JIDs the owner's
  roster has as "from" or "both" (else ``<not-authorized/>`` +
  ``<presence-subscription-required/>``); whitelist: the owner and the JIDs
  it affiliates; open: anyone. The "roster" model is not served.
* Access re-calculated (XEP-0163 "Cancelling subscriptions"): when the
  owner's roster record of a contact loses "from"/"both" (the
  ``subscription-changed`` event: a cancelled, refused or removed
  subscription), the contact's subscriptions to the owner's nodes it may no
  longer subscribe to are removed; and every notification checks the
  explicit subscribers against the roster it reads anyway, so one whose
  access went by another way (storage edited) is not notified either.
* Notifications (§4.3), from the owner's bare JID as ``headline`` messages:
  to each available resource of non-negative priority of the owner and of
  the contacts with a from/both subscription (on a whitelist node, those
  affiliated) whose client asks for ``NODE+notify`` in its verified
  XEP-0115 caps (``caps`` module), to the full JID; plus the explicit
  XEP-0060 subscriptions of the node (a bare one only if none of its
  resources got it already). Nobody the owner blocked, nobody whose
  blocklist covers the owner (XEP-0191; §4.3.3 item 3). The sessions of all
  contacts are read at once (one Redis round trip in a cluster), their caps
  from memory (only those missing read from Redis, together), the
  recipients' blocklists from memory (the missing ones loaded together),
  the messages routed in one batch.
* The last item (§4.3.4, send_last_published_item on_sub_and_presence): when
  the caps of a local session become known (``caps-known``), its full JID
  gets the last item of each node it asks for of its own account and of
  every contact whose presence it is subscribed to (its roster "to"/"both";
  checked against the contact's roster for presence nodes), with an
  XEP-0203 delay, without its payload on a node with deliver_payloads 0;
  also to a JID when it subscribes explicitly (§6.1.7). One pass per
  session at a time (new caps cancel and replace a running one), sending
  only the nodes the previous finished pass did not ask for (a client
  adding one ``+notify`` gets that node's item, not all again); at most
  ``PASSES`` run at once, in tasks of this module (the caps module is not
  held up). Cost for a 500-contact roster: one roster read, one
  ``last_items`` store read for all contacts (Redis: two round trips; SQL:
  one query; fs: one file per contact and node asked for), then only for
  contacts with something to send: their blocklist (memory, usually) and,
  for presence nodes, one roster row, up to ``CONCURRENCY`` at once; the
  messages go in one batch.
* Limits (``[host.options.pep]``): ``max_payload`` bytes per item
  (``<not-acceptable/>`` + ``<payload-too-big/>``), ``max_items`` (the
  highest pubsub#max_items, and what ``max`` means), ``max_nodes`` per
  account (``<not-allowed/>`` + ``<max-nodes-exceeded/>``: XEP-0060's
  pubsub#errors condition; ``<not-allowed/>`` is what RFC 6120 §8.3.3.11
  names for a request the entity may not make, understood by every client).
* Disco (§6, XEP-0030): the account's disco#info shows ``pubsub/pep`` and the
  features below; disco#items on the bare JID lists the nodes the asker may
  see; disco#info and disco#items with a node describe that node to
  whoever may see it listed (an open node: anyone), disco#info with the
  ``pubsub#meta_data`` form (XEP-0060 §5.4).
* ``vinespy unregister`` deletes the account's nodes with it.

Not served: the "roster" access model, XEP-0033 "replyto" on notifications
(§4.3.1 SHOULD), notifications to contacts on other servers (s2s), a
contact's new presence subscription sending the last items at once (they
come at its next caps-known), multi-item publish.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any, Iterable

from lxml import etree

from ..errors import StanzaError
from ..events import StanzaEvent
from ..fields import SessionField
from ..jid import JID, JIDError
from ..rules import pubsub as rules
from ..rules.pubsub import NS, NS_OWNER, Limits, error
from ..rules.stamps import format_datetime
from ..storage import Contact
from ..storage.pubsub import Item
from ..xml import Element, child, element, stanza
from . import Module, Option, hook, iq
from .blocking import Blocking, matches
from .pubsub_engine import Engine, Policy

DISCO_INFO = "http://jabber.org/protocol/disco#info"
DELAY = "urn:xmpp:delay"
CONCURRENCY = 16        # contacts checked at once in a last-item pass
PASSES = 4              # last-item passes running at once (the others wait)
NOTIFY = "+notify"

FEATURES = (NS,) + tuple(f"{NS}#{f}" for f in (
    "access-open", "access-presence", "access-whitelist", "auto-create", "auto-subscribe",
    "config-node", "config-node-max", "create-and-configure", "create-nodes", "delete-items",
    "delete-nodes", "filtered-notifications", "item-ids", "last-published",
    "modify-affiliations", "multi-items", "persistent-items", "publish", "publish-options",
    "purge-nodes", "retract-items", "retrieve-affiliations", "retrieve-items",
    "retrieve-subscriptions", "subscribe"))


class PepPolicy(Policy):
    """XEP-0163 on top of XEP-0060: the account is the owner of every node."""

    auto_create = True

    def __init__(self, module: Pep) -> None:
        super().__init__(module.host)
        self.module = module

    def may_create(self, service: str, requester: JID) -> None:
        if str(requester.bare) != service:
            raise StanzaError("forbidden", "only the account's owner creates its PEP nodes")

    def may_publish(self, service: str, requester: JID) -> None:
        """XEP-0163 §2.2: the account is the one publisher of its nodes (also
        of a node stored with another publish model or a publisher
        affiliation before they were refused)."""
        if str(requester.bare) != service:
            raise StanzaError("forbidden", "only the account's owner publishes to its PEP nodes")

    def too_many_nodes(self, limit: int) -> StanzaError:
        return error("not-allowed", "max-nodes-exceeded",
                     text=f"at most {limit} PEP nodes per account here")

    async def presence(self, service: str, requester: JID) -> bool:
        if str(requester.bare) == service:
            return True
        found = await self.host.storage.find_contact(JID.parse(service), requester.bare)
        c = found.contact if found is not None else None
        return c is not None and not c.hidden and c.subscription in ("from", "both")

    async def recipients(self, service: str, node: str, config: dict[str, str],
                         affs: dict[str, str], subscribers: Iterable[str]) -> list[str]:
        return await self.module.recipients(JID.parse(service), node, config, affs,
                                            subscribers)

    async def subscribed(self, service: str, node: str, config: dict[str, str],
                         jid: str) -> None:
        if config.get("pubsub#send_last_published_item", "never") == "never":
            return
        msg = await self.module.last_item(service, node, config, jid)
        if msg is not None:
            await self.module.send(msg)


class Pep(Module):
    name = "pep"
    xep = "XEP-0163"
    depends = ("disco",)
    account_features = FEATURES
    account_identities = (("pubsub", "pep"),)
    options = {
        "max_items": Option(int, default=256, min=1, max=100000),
        "max_nodes": Option(int, default=128, min=1, max=100000),
        "max_payload": Option(int, default=65536, min=256, max=16_777_216),
    }

    # The session's running last-item pass; the nodes (names) it asked
    # for when its last pass ended: the next pass sends only the others.
    last_pass = SessionField(asyncio.Task)
    notified = SessionField(frozenset)

    def __init__(self, host: Any) -> None:
        super().__init__(host)
        self.engine = Engine(host, PepPolicy(self), Limits(pep=True))
        # At most one per local session (caps_known replaces it).
        self._tasks: set[asyncio.Task[None]] = set()
        self._passes = asyncio.Semaphore(PASSES)

    async def start(self) -> None:
        self.engine.limits = Limits(pep=True, **{n: self.option(n) for n in self.options})

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    @staticmethod
    def service(ev: StanzaEvent) -> str:
        return str(ev.to.bare)

    # -- XEP-0060 use cases on the account ---------------------------------------------
    @iq("set", NS, "pubsub", to=("self", "bare"))
    async def pubsub_set(self, ev: StanzaEvent) -> Element | None:
        return await self.engine.pubsub_set(ev, self.service(ev))

    @iq("get", NS, "pubsub", to=("self", "bare"))
    async def pubsub_get(self, ev: StanzaEvent) -> Element:
        return await self.engine.pubsub_get(ev, self.service(ev))

    @iq("get", NS_OWNER, "pubsub", to=("self", "bare"))
    async def owner_get(self, ev: StanzaEvent) -> Element:
        return await self.engine.owner_get(ev, self.service(ev))

    @iq("set", NS_OWNER, "pubsub", to=("self", "bare"))
    async def owner_set(self, ev: StanzaEvent) -> None:
        await self.engine.owner_set(ev, self.service(ev))

    # -- disco (XEP-0163 §6; the disco module asks) -------------------------------------
    @hook("account-disco-info")
    async def node_info(self, ev: StanzaEvent, node: str) -> Element | None:
        """disco#info of one of the account's nodes (XEP-0060 §5.3), to those
        who may see it listed; None: no such node for the asker."""
        service = self.service(ev)
        if self.host.pubsub_store is None or not await self.engine.discoverable(
                service, node, ev.frm):
            return None
        q = element(DISCO_INFO, "query", node=node)
        child(q, DISCO_INFO, "identity", category="pubsub", type="leaf")
        child(q, DISCO_INFO, "feature", var=NS)
        n = await self.engine.store.get(service, node)
        if n is not None:           # §5.4 SHOULD: the meta-data form
            when = datetime.fromtimestamp(n.created / 1000, timezone.utc)
            q.append(rules.meta_data(n.config, n.owner, format_datetime(when)))
        return q

    @hook("account-disco-items")
    async def node_items(self, ev: StanzaEvent, q: Element) -> None:
        """The nodes (no 'node') or a node's items the asker may see, added to ``q``."""
        if self.host.pubsub_store is None:
            return None
        try:
            await self.engine.disco_items(ev, self.service(ev), q)
        except StanzaError:
            pass                            # no such node: the list stays as it is
        return None

    # -- notifications (§4.3) ---------------------------------------------------------
    async def recipients(self, owner: JID, node: str, config: dict[str, str],
                         affs: dict[str, str], subscribers: Iterable[str]) -> list[str]:
        """The full JIDs of the owner's and its contacts' interested
        resources (§4.3.2), then the explicit subscriptions of those who
        still may subscribe (the roster read here decides: a contact whose
        presence subscription was cancelled gets nothing, §"Cancelling
        subscriptions"), without those the owner blocked."""
        user = await self.host.storage.find_user(owner)
        roster = user.roster if user is not None else {}

        aff_of = {}                         # few: parsed once, not str() per contact
        for j, a in affs.items():
            try:
                aff_of[JID.parse(j)] = a
            except JIDError:
                continue

        def allowed(bare: JID, presence: bool | None = None) -> bool:
            if bare == owner:
                return True
            if presence is None:
                c = roster.get(bare)
                presence = c is not None and not c.hidden and c.subscription in ("from", "both")
            return rules.may_subscribe(aff_of.get(bare, "none"), config, presence) is None

        hosts = self.host.router.hosts
        bares = [owner] + [b for b, c in roster.items()
                           if not c.hidden and c.subscription in ("from", "both")
                           and b.domain in hosts and b != owner and allowed(b, True)]
        sessions = self.host.sessions
        await sessions.load(bares)
        candidates = [s for bare in bares for s in sessions.available(bare) if s.priority >= 0]
        features = await self._features_of(candidates)
        notify = node + NOTIFY              # wants(), once for all
        chosen = [s.jid for s, f in zip(candidates, features) if f is not None and notify in f]
        out = [str(j) for j in chosen]
        covered = {j.bare for j in chosen}
        for sub in subscribers:
            try:
                jid = JID.parse(sub)
            except JIDError:
                continue
            if (allowed(jid.bare) and not (jid.is_bare and jid in covered)
                    and sub not in out):
                out.append(sub)
        blocked = await self._blocklist(owner)
        return [j for j in out if not matches(blocked, JID.parse(j))] if blocked else out

    async def _features_of(self, sessions: list[Any]) -> list[frozenset[str] | None]:
        """The verified caps features of each session: from memory, and only
        those not in memory read (together) from the cluster's cache."""
        caps = self.host.module("caps")
        if caps is None:
            return [None] * len(sessions)
        out = [caps.client_features_cached(s) for s in sessions]
        missing = [i for i, f in enumerate(out) if f is None]
        if missing:
            found = await asyncio.gather(*(caps.client_features(sessions[i])
                                           for i in missing))
            for i, f in zip(missing, found):
                out[i] = f
        return out

    async def _features(self, session: Any) -> frozenset[str] | None:
        return (await self._features_of([session]))[0]

    async def _blocklist(self, owner: JID) -> frozenset[JID]:
        blocking = self.host.module("blocking")
        return await blocking.blocklist(owner) if isinstance(blocking, Blocking) else frozenset()

    # -- access re-calculated (XEP-0163 "Cancelling subscriptions") -------------------
    @hook("subscription-changed")
    async def subscription_changed(self, owner: JID, jid: JID, before: Contact | None,
                                   after: Contact | None) -> None:
        """``owner``'s roster record for ``jid`` changed: if ``jid`` lost the
        presence subscription ("from"/"both"), its subscriptions to the
        owner's nodes it may no longer subscribe to are cancelled."""
        def shares(c: Contact | None) -> bool:
            return c is not None and not c.hidden and c.subscription in ("from", "both")

        if not shares(before) or shares(after) or self.host.pubsub_store is None:
            return
        store = self.engine.store
        service = str(owner)
        for name in await store.nodes(service):
            subs = [s for s in await store.subscriptions(service, name)
                    if JID.parse(s).bare == jid]
            if not subs:
                continue
            node = await store.get(service, name)
            if node is None:
                continue
            aff = (await store.affiliations(service, name)).get(str(jid), "none")
            if rules.may_subscribe(aff, node.config, False) is not None:
                for sub in subs:
                    await store.unsubscribe(service, name, sub)
                self.log.info("%s lost access to %s's PEP node %s: unsubscribed", jid,
                              owner, name)

    # -- the last published item (§4.3.4) -----------------------------------------------
    @staticmethod
    def last_message(service: str, node: str, config: dict[str, str], item: Item,
                     to: str) -> Element:
        """The notification of ``item`` (``node``'s last) for ``to``, with
        its XEP-0203 delay; without the payload if the node delivers none."""
        deliver = config.get("pubsub#deliver_payloads", "1") == "1"
        payload = etree.fromstring(item.payload) if item.payload and deliver else None
        msg = stanza("message", frm=service, to=to, type="headline")
        msg.append(rules.published(node, item.id, payload))
        when = datetime.fromtimestamp(item.published / 1000, timezone.utc)
        child(msg, DELAY, "delay", stamp=format_datetime(when)).set("from", service)
        return msg

    async def last_item(self, service: str, node: str, config: dict[str, str],
                        to: str) -> Element | None:
        """The notification of ``node``'s last item for ``to``; None if it has none."""
        found = await self.engine.store.items(service, node, max_items=1)
        return self.last_message(service, node, config, found[0], to) if found else None

    @hook("caps-known")
    def caps_known(self, session: Any) -> None:
        """A local session's caps became known: its last items, in a task of
        this module (many contacts take many reads): one per session at a
        time (a newer one replaces it), at most ``PASSES`` running at once."""
        old = Pep.last_pass.get(session)
        if old is not None:
            old.cancel()
        task = asyncio.get_running_loop().create_task(self._send_last(session))
        Pep.last_pass.set(session, task)
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if Pep.last_pass.get(session) is t:
                Pep.last_pass.clear(session)
        task.add_done_callback(done)

    @hook("resource-unbound")
    def unbound(self, session: Any) -> None:
        task = Pep.last_pass.get(session)
        if task is not None:
            task.cancel()

    async def _send_last(self, session: Any) -> None:
        """The last items of the nodes ``session`` newly asks for: those its
        previous pass (if it ended) did not cover."""
        try:
            if session.priority < 0:
                return      # §4.3.2: notifications go to resources of non-negative priority
            features = await self._features(session) or frozenset()
            notify = frozenset(f[:-len(NOTIFY)] for f in features if f.endswith(NOTIFY))
            new = notify - (Pep.notified.get(session) or frozenset())
            if new:
                async with self._passes:
                    msgs = await self._last_items(session.jid, new)
                    await self.send_many(msgs)
            Pep.notified.set(session, notify)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.log.exception("last items for %s failed", session.jid)

    async def _last_items(self, to: JID, nodes: frozenset[str]) -> list[Element]:
        """The last items of ``nodes`` of ``to``'s account and of every
        contact whose presence it is subscribed to (its roster "to"/"both"),
        served by this server; read per host in one store call."""
        me = to.bare
        user = await self.host.storage.find_user(me)
        owners = [me] + ([b for b, c in user.roster.items()
                          if not c.hidden and c.subscription in ("to", "both") and b != me]
                         if user is not None else [])
        by_pep: dict[Pep, list[JID]] = {}
        for owner in owners:
            host = self.host.router.hosts.get(owner.domain)
            pep = host.module("pep") if host is not None else None
            if isinstance(pep, Pep) and pep.host.pubsub_store is not None:
                by_pep.setdefault(pep, []).append(owner)
        out: list[Element] = []
        for pep, theirs in by_pep.items():
            out += await pep.last_items_for(theirs, to, nodes)
        return out

    async def last_items_for(self, owners: list[JID], to: JID,
                             nodes: frozenset[str]) -> list[Element]:
        """The last item of each of ``nodes`` of each of ``owners`` that
        ``to`` (a full JID) may see, to be sent when it becomes available
        (§4.3.2 item 2): one store read for all; then, for the owners with
        something to send, whether they may reach ``to`` and (presence
        nodes) the owner's roster record of ``to``, read together."""
        found = [f for f in await self.engine.store.last_items(
                     [str(o) for o in owners], nodes, str(to.bare))
                 if f.item is not None and f.config.get(
                     "pubsub#send_last_published_item") == "on_sub_and_presence"]
        services = list(dict.fromkeys(f.service for f in found if f.service != str(to.bare)))
        sem = asyncio.Semaphore(CONCURRENCY)

        async def check(service: str) -> tuple[bool, bool]:
            """(may reach ``to``, ``to`` has the owner's presence)."""
            async with sem:
                owner = JID.parse(service)
                if not await self.engine.reaches(owner, str(to)) or matches(
                        await self._blocklist(owner), to):
                    return False, False
                presence = any(f.service == service and f.config.get(
                    "pubsub#access_model") == "presence" for f in found)
                return True, presence and await self.engine.policy.presence(service, to)

        checked = dict(zip(services, await asyncio.gather(*(check(s) for s in services))))
        out = []
        for f in found:
            if f.service != str(to.bare):
                reach, presence = checked[f.service]
                if not reach or rules.may_retrieve(f.affiliation, f.config,
                                                   presence) is not None:
                    continue
            assert f.item is not None
            out.append(self.last_message(f.service, f.node, f.config, f.item, str(to)))
        return out
