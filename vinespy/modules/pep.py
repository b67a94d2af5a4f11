"""XEP-0163: Personal Eventing Protocol, a pubsub service on every account.

Each account's bare JID is a virtual XEP-0060 service (XEP-0163 §2.1): its
IQs (``to`` the bare JID, or no ``to`` from the owner: ``iq-*/bare/…`` and
``iq-*/self/…``) are served by the shared engine
(:mod:`vinespy.modules.pubsub_engine`) under :class:`PepPolicy`, in the
host's pubsub store (``host.pubsub_store``, the one the XEP-0060 services
use: Redis or SQL in a cluster, shared by every node) with the bare JID as
the service name.

* Only the owner creates, publishes, configures, deletes and purges (others:
  ``<forbidden/>``; §2.2 "one publisher per node"). A publish to a missing
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
  max_items (a number, or ``max``: the ``max_items`` limit below),
  send_last_published_item, notify_retract, notify_delete, deliver_payloads,
  publish_model, title.
* Access (XEP-0060 §4.5): presence: the owner and the JIDs the owner's
  roster has as "from" or "both" (else ``<not-authorized/>`` +
  ``<presence-subscription-required/>``); whitelist: the owner and the JIDs
  it affiliates; open: anyone. The "roster" model is not served.
* Notifications (§4.3), from the owner's bare JID as ``headline`` messages:
  to each available resource of non-negative priority of the owner and of
  the contacts with a from/both subscription (on a whitelist node, those
  affiliated) whose client asks for ``NODE+notify`` in its verified
  XEP-0115 caps (``caps`` module), to the full JID; plus the explicit
  XEP-0060 subscriptions of the node (a bare one only if none of its
  resources got it already). Nobody the owner blocked, nobody whose
  blocklist covers the owner (XEP-0191; §4.3.3 item 3). The sessions of all
  contacts are read at once (one Redis round trip in a cluster), the
  messages routed in one batch.
* The last item (§4.3.4, send_last_published_item on_sub_and_presence): when
  the caps of a local session become known (``caps-known``), its full JID
  gets the last item of each node it asks for of its own account and of
  every contact whose presence it is subscribed to (its roster "to"/"both";
  checked against the contact's roster for presence nodes), with an
  XEP-0203 delay; also to a JID when it subscribes explicitly (§6.1.7).
  Cost for a 500-contact roster: one roster read, then per contact one
  ``nodes`` read (one Redis/SQL round trip, a directory listing for fs),
  and only for contacts with nodes the client wants: one roster row and
  per node one config, (for non-owners) one affiliations and one items
  read. Up to ``CONCURRENCY`` contacts are read at once, in a task of this
  module (the caps module is not held up); the messages go in one batch.
* Limits (``[host.options.pep]``): ``max_payload`` bytes per item
  (``<not-acceptable/>`` + ``<payload-too-big/>``), ``max_items`` (the
  highest pubsub#max_items, and what ``max`` means), ``max_nodes`` per
  account (``<not-allowed/>`` + ``<max-nodes-exceeded/>``: XEP-0060's
  pubsub#errors condition; ``<not-allowed/>`` is what RFC 6120 §8.3.3.11
  names for a request the entity may not make, understood by every client).
* Disco (§6, XEP-0030): the account's disco#info shows ``pubsub/pep`` and the
  features below; disco#items on the bare JID lists the nodes the asker may
  see; disco#info and disco#items with a node describe that node.
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
from ..jid import JID, JIDError
from ..rules import pubsub as rules
from ..rules.pubsub import NS, NS_OWNER, Limits, error
from ..rules.caps import wants
from ..rules.stamps import format_datetime
from ..xml import Element, child, element, stanza
from . import Module, Option, hook, iq
from .blocking import Blocking, matches
from .pubsub_engine import Engine, Policy

DISCO_INFO = "http://jabber.org/protocol/disco#info"
DELAY = "urn:xmpp:delay"
CONCURRENCY = 16        # contacts whose nodes are read at once for a last-item pass

FEATURES = (NS,) + tuple(f"{NS}#{f}" for f in (
    "access-open", "access-presence", "access-whitelist", "auto-create", "auto-subscribe",
    "config-node", "config-node-max", "create-nodes", "delete-items", "delete-nodes",
    "filtered-notifications", "item-ids", "last-published", "modify-affiliations",
    "multi-items", "persistent-items", "publish", "publish-options", "purge-nodes",
    "retract-items", "retrieve-affiliations", "retrieve-items", "retrieve-subscriptions",
    "subscribe"))


class PepPolicy(Policy):
    """XEP-0163 on top of XEP-0060: the account is the owner of every node."""

    auto_create = True

    def __init__(self, module: Pep) -> None:
        super().__init__(module.host)
        self.module = module

    def may_create(self, service: str, requester: JID) -> None:
        if str(requester.bare) != service:
            raise StanzaError("forbidden", "only the account's owner creates its PEP nodes")

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
        msg = await self.module.last_item(service, node, jid)
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

    def __init__(self, host: Any) -> None:
        super().__init__(host)
        self.engine = Engine(host, PepPolicy(self), Limits(pep=True))
        self._tasks: set[asyncio.Task[None]] = set()

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
        resources (§4.3.2), then the explicit subscriptions, without those
        the owner blocked."""
        user = await self.host.storage.find_user(owner)
        contacts: list[JID] = []
        if user is not None:
            whitelist = config.get("pubsub#access_model") == "whitelist"
            contacts = [c.jid.bare for c in user.roster.values()
                        if not c.hidden and c.subscription in ("from", "both")
                        and (not whitelist or affs.get(str(c.jid.bare), "none")
                             in ("owner", "publisher", "member"))]
        router = self.host.router
        bares = [owner] + [b for b in contacts if b.domain in router.hosts and b != owner]
        sessions = self.host.sessions
        await sessions.load(bares)
        out: list[str] = []
        for bare in bares:
            for s in sessions.available(bare):
                if s.priority >= 0 and wants(await self._features(s), node):
                    out.append(str(s.jid))
        covered = {JID.parse(j).bare for j in out}
        for sub in subscribers:
            try:
                jid = JID.parse(sub)
            except JIDError:
                continue
            if not (jid.is_bare and jid in covered) and sub not in out:
                out.append(sub)
        blocked = await self._blocklist(owner)
        return [j for j in out if not matches(blocked, JID.parse(j))]

    async def _features(self, session: Any) -> frozenset[str] | None:
        caps = self.host.module("caps")
        return None if caps is None else await caps.client_features(session)

    async def _blocklist(self, owner: JID) -> frozenset[JID]:
        blocking = self.host.module("blocking")
        return await blocking.blocklist(owner) if isinstance(blocking, Blocking) else frozenset()

    # -- the last published item (§4.3.4) -----------------------------------------------
    async def last_item(self, service: str, node: str, to: str) -> Element | None:
        """The notification of ``node``'s last item for ``to``, with its
        XEP-0203 delay; None if it has none."""
        store = self.engine.store
        found = await store.items(service, node, max_items=1)
        if not found:
            return None
        item = found[0]
        payload = etree.fromstring(item.payload) if item.payload else None
        msg = stanza("message", frm=service, to=to, type="headline")
        msg.append(rules.published(node, item.id, payload))
        when = datetime.fromtimestamp(item.published / 1000, timezone.utc)
        child(msg, DELAY, "delay", stamp=format_datetime(when)).set("from", service)
        return msg

    @hook("caps-known")
    def caps_known(self, session: Any) -> None:
        """A local session's caps became known: its last items, in a task of
        this module (many contacts take many reads)."""
        task = asyncio.ensure_future(self._send_last(session))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_last(self, session: Any) -> None:
        try:
            if session.priority < 0:
                return      # §4.3.2: notifications go to resources of non-negative priority
            features = await self._features(session)
            if not features or not any(f.endswith("+notify") for f in features):
                return
            me = session.jid.bare
            user = await self.host.storage.find_user(me)
            owners = [me] + ([c.jid.bare for c in user.roster.values()
                              if not c.hidden and c.subscription in ("to", "both")
                              and c.jid.bare != me] if user is not None else [])
            sem = asyncio.Semaphore(CONCURRENCY)

            async def one(owner: JID) -> list[Element]:
                host = self.host.router.hosts.get(owner.domain)
                pep = host.module("pep") if host is not None else None
                if not isinstance(pep, Pep) or pep.host.pubsub_store is None:
                    return []
                async with sem:
                    return await pep.last_items_for(owner, session.jid, features)

            batches = await asyncio.gather(*(one(o) for o in owners))
            await self.send_many([m for batch in batches for m in batch])
        except asyncio.CancelledError:
            raise
        except Exception:
            self.log.exception("last items for %s failed", session.jid)

    async def last_items_for(self, owner: JID, to: JID,
                             features: frozenset[str]) -> list[Element]:
        """The last item of each of ``owner``'s nodes that ``to`` (a full JID
        with disco ``features``) asks for and may see, to be sent when it
        becomes available (§4.3.2 item 2)."""
        store = self.engine.store
        service = str(owner)
        names = [n for n in await store.nodes(service) if wants(features, n)]
        if not names:
            return []
        if owner != to.bare:
            if not await self.engine.reaches(owner, str(to)) or matches(
                    await self._blocklist(owner), to):
                return []
        presence: bool | None = None
        out = []
        for name in names:
            node = await store.get(service, name)
            if node is None or node.config.get(
                    "pubsub#send_last_published_item") != "on_sub_and_presence":
                continue
            if owner != to.bare:
                affs = await store.affiliations(service, name)
                aff = affs.get(str(to.bare), "none")
                if node.config.get("pubsub#access_model") == "presence" and presence is None:
                    presence = await self.engine.policy.presence(service, to)
                if rules.may_retrieve(aff, node.config, bool(presence)) is not None:
                    continue
            msg = await self.last_item(service, name, str(to))
            if msg is not None:
                out.append(msg)
        return out
