"""XEP-0313: Message Archive Management, user archives (``urn:xmpp:mam:2``),
with XEP-0359 stanza ids, XEP-0334 hints and XEP-0441 preferences.

The protocol rules (forms, RSM, ``<fin/>``, what is worth keeping, the
preferences) are :mod:`vinespy.rules.mam`; the archives are the host's
:class:`~vinespy.storage.archive.ArchiveStore` (``host.archive``, chosen by
:func:`~vinespy.storage.archive.archive_for`: the sql database, ``<dir>/archive``
on fs, else memory), opened at start and closed at stop. This module is the
glue, and these are its decisions:

Archiving, recipient side (``message/bare``, ``message/full``, ``message/self``
at priority 50: after blocking at 100, which claims what it refuses, so a
blocked message is never archived nor stamped; before carbons at -50, whose
``<received/>`` copies therefore carry the id)
    * Every message delivered to a user loses any ``<stanza-id/>`` claiming
      to be by the user's bare JID (XEP-0359 §3 rule 2, "MUST delete"),
      archived or not: nobody can plant an id in the user's archive.
    * Kept when :func:`~vinespy.rules.mam.should_archive` says so (chat or
      normal with content; never error, groupchat, ``<no-store/>``,
      ``<no-permanent-store/>``; ``<store/>`` forces it) and the user's
      preferences allow it (:func:`~vinespy.rules.mam.decide` with the
      sender's JID; "roster" reads the user's roster record of the sender
      only when the answer depends on it). Then the message gets
      ``<stanza-id by=bare id/>`` (XEP-0313 §3.5) and is archived *before*
      it is delivered (the id a client sees is already in the archive).
    * A message nobody can take now goes to offline storage with its id (the
      offline module stores the stanza as it is, so its later delivery
      carries the id) but is archived only once offline storage took it:
      the router fires ``message/offline-taken``. A message to a user who
      does not exist, or that the offline store refuses (full), bounces and
      is not archived (``message/offline`` at priority -100, reached only
      then, forgets it). The entries wait in memory keyed by the stanza
      object, which they hold so that its ``id()`` is not reused; at most
      :data:`PENDING_MAX` of them (a handler's failure could leave one).
    * A failing archive write does not stop the message: it is delivered
      without an id (logged). One that was stored offline already keeps its
      id (logged too: the id then names nothing).

Archiving, sender side
    * ``pre-message`` at priority 10 (before carbons at 0): any
      ``<stanza-id/>`` the client put under its own bare JID is removed;
      if the message is worth keeping and the sender's preferences allow it
      (with the recipient's JID), it gets ``<stanza-id by=sender's bare
      id/>``. Carbons' ``<sent/>`` copies are made from it, so the sender's
      other devices learn the id (XEP-0313 §3.5).
    * The entry is written where the outcome is known: at the recipient-side
      hook above (so a message blocked either way is not archived; one
      going to offline storage, once it was taken there, as the
      recipient's: a message to nobody is in no archive), which
      removes the sender's id before the recipient gets the message: the
      recipient never sees an id of the sender's archive. For destinations
      without that hook (another domain: s2s, a service, a local host
      without this module) ``pre-message`` at priority -10 (after carbons)
      archives it and removes the id: what a user sends beyond the server is
      kept as sent, its delivery being known only later, if ever.
    * A message to oneself (another resource, one's bare JID, no ``to``) is
      one entry in the one archive, with the one id: the sender's, kept on
      the delivered message and the copies, its peer the address it was sent
      to (XEP-0313 §4.1.1: a 'with' of one's own JID finds it).

Queries (iq to one's own account only: no ``to``, or one's bare JID)
    * set ``<query/>``: :func:`~vinespy.rules.mam.parse_query` (its errors:
      ``<bad-request/>``, ``<feature-not-implemented/>`` for an unknown
      field, ...); the results go to the requesting resource as
      ``<message from=bare><result queryid id><forwarded><delay/>...``, then
      the IQ result with ``<fin/>`` (complete, RSM first/last, count when the
      store knows it cheaply). An RSM after/before, or an ``after-id``,
      ``before-id`` or ``ids`` value, naming no message of the archive:
      ``<item-not-found/>`` (§4.3.2, §4.1.3). A page holds at most 250
      results and about :data:`PAGE_BYTES` of them (RSM lets a page be
      shorter than asked: it is then not complete), so nothing buffers
      more than that for a client that reads slowly.
    * get ``<query/>``: the form (§4.1.5); get ``<metadata/>``: the first and
      last entries (§5); get/set ``<prefs/>`` (XEP-0441).
    * Anyone else's archive: ``<forbidden/>`` (the user's archive is the
      user's alone; as private storage, XEP-0049, prefers it).

Preferences
    Kept per user in the keyval store ``mam_prefs``; none stored means the
    host's ``default`` option with empty lists. Cached (at most
    :data:`CACHE_MAX` users, the oldest forgotten first), dropped on
    ``user-changed``/``users-changed`` (the cluster's news of a change on
    another node), a read overtaken by such news not cached.

Options ``[host.options.mam]``
    ``default``: always | never | roster, for users without preferences;
    ``retention_days``: entries older are removed by :meth:`Mam.expire`
    (0: kept forever), run every ``expire_interval`` seconds (default an
    hour) as a duty (vinespy/duty.py): in a cluster by one node at a time,
    the holder of the Redis lease ``cluster:duty:mam-expire:DOMAIN`` (the
    host's first domain: its domains share one archive store), which stops
    between batches once it may no longer hold it. Two runs overlapping
    anyway (a node paused past its lease) remove the same old entries:
    harmless;
    ``max_messages``: at most about that many entries per user (0: no cap),
    enforced at append time by :meth:`ArchiveStore.trim`, amortized: a
    node trims a user's archive at the first append it makes for that user
    and then every ``max(1, max_messages // 10)`` appends, so an archive
    holds at most ``max_messages + n * max_messages // 10`` entries with
    ``n`` nodes appending to it (the counters are in memory, bounded; a
    forgotten counter starts again with a trim).

Deleting an account (:func:`vinespy.accounts.delete_user` with the archive,
as ``vinespy unregister`` does) deletes its archive.

Disco: the accounts' features urn:xmpp:mam:2, #extended and urn:xmpp:sid:0.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable

from ..errors import StanzaError
from ..events import StanzaEvent
from ..jid import JID
from ..rules import mam as rules
from ..rules.mam import Prefs
from ..storage import StorageError, xml_bytes, xml_element
from ..storage.archive import (ArchivedMessage, ArchivePage, ArchiveQuery, ArchiveStore,
                               UnknownId, from_micros, id_micros, new_id)
from ..storage.archive.batch import Batcher
from ..xml import Element
from . import Module, Option, hook, iq

NS = rules.NS
PREFS = "mam_prefs"         # keyval store of a user's preferences
CACHE_MAX = 10_000          # users whose preferences are cached
COUNTERS_MAX = 10_000       # users whose appends are counted for max_messages
PENDING_MAX = 1000          # messages stamped on their way to offline storage
PAGE_BYTES = 512 * 1024     # about the most a page of results writes to a client
EXPIRE_BATCH = 1000         # entries one remove_before call removes at most


def _stamp_of(id: str) -> datetime:
    us = id_micros(id)
    assert us is not None
    return from_micros(us)


class Mam(Module):
    name = "mam"
    xep = "XEP-0313"
    account_features = rules.FEATURES
    options = {
        "default": Option(str, default="always", choices=rules.DEFAULTS),
        "retention_days": Option(int, default=0, min=0, max=100_000),
        "expire_interval": Option(int, default=3600, min=1, max=86_400 * 7),
        "max_messages": Option(int, default=0, min=0, max=100_000_000),
    }

    def __init__(self, host: Any) -> None:
        super().__init__(host)
        self.store: ArchiveStore | None = None
        self.batcher: Batcher | None = None
        self.default = Prefs(self.option("default"))
        self.max_messages: int = self.option("max_messages")
        self.trim_every = max(1, self.max_messages // 10)
        self._prefs: dict[JID, Prefs] = {}
        self._gen = 0                                   # bumped by every invalidation
        self._appends: dict[JID, int] = {}              # appends left before a trim
        # id() of a stanza on its way to offline storage -> it, its entries
        self._pending: dict[int, tuple[Element, list[tuple[Mam, JID, ArchivedMessage]]]] = {}

    async def start(self) -> None:
        store = self.host.archive
        if store is not None:
            await store.open()
            self.batcher = Batcher(store)
            self.batcher.start()
        self.store = store              # archiving starts once the batcher runs
        server = self.host.server
        name = f"mam-expire:{self.host.config.domains[0]}"
        if (self.store is not None and self.option("retention_days") and server is not None
                and name not in server.duties):
            server.duty(name, self.option("expire_interval"),
                        lambda still_held: self.expire(datetime.now(timezone.utc), still_held))

    async def stop(self) -> None:
        if self.batcher is not None:
            await self.batcher.stop()       # writes what is queued, then syncs
        if self.store is not None:
            await self.store.close()

    def _of(self, jid: JID) -> Mam | None:
        """The mam module of ``jid``'s own domain, if served here and loaded."""
        host = self.host.router.hosts.get(jid.domain)
        mod = host.modules.get(self.name) if host is not None else None
        return mod if isinstance(mod, Mam) and mod.store is not None else None

    # -- preferences (XEP-0441) ----------------------------------------------------

    async def prefs(self, bare: JID) -> Prefs:
        cached = self._prefs.get(bare)
        if cached is not None:
            return cached
        gen = self._gen
        prefs = self._parse(bare, await self.host.storage.get(bare, PREFS))
        if gen == self._gen:
            self._remember(bare, prefs)
        return prefs

    def _parse(self, bare: JID, stored: Any) -> Prefs:
        if not stored:
            return self.default
        try:
            return Prefs(stored["default"], frozenset(map(JID.parse, stored["always"])),
                         frozenset(map(JID.parse, stored["never"])))
        except (KeyError, TypeError, ValueError) as exc:
            self.log.warning("ignoring bad archive preferences of %s: %s", bare, exc)
            return self.default

    def _remember(self, bare: JID, prefs: Prefs) -> None:
        self._prefs.pop(bare, None)
        self._prefs[bare] = prefs
        while len(self._prefs) > CACHE_MAX:
            del self._prefs[next(iter(self._prefs))]

    @hook("user-changed")
    def user_changed(self, bare: JID) -> None:
        self._gen += 1
        self._prefs.pop(bare, None)

    @hook("users-changed")
    def users_changed(self) -> None:
        self._gen += 1
        self._prefs.clear()

    def wanted_now(self, owner: JID, peer: JID) -> bool | None:
        """:meth:`wanted` when the answer needs no storage (the preferences
        cached, the roster not asked): no coroutine per message; else None."""
        prefs = self._prefs.get(owner)
        if prefs is None:
            return None
        if rules.decide(prefs, peer, False):
            return True
        if prefs.default != "roster" or not rules.decide(prefs, peer, True):
            return False
        return None

    async def wanted(self, owner: JID, peer: JID) -> bool:
        """Whether ``owner``'s preferences archive a message with ``peer``."""
        prefs = await self.prefs(owner)
        if rules.decide(prefs, peer, False):
            return True
        if prefs.default != "roster" or not rules.decide(prefs, peer, True):
            return False
        if peer.bare == owner:
            return True                 # one's own JID: always one's contact
        found = await self.host.storage.find_contact(owner, peer.bare)
        return bool(found and found.contact and not found.contact.hidden)

    # -- archiving ---------------------------------------------------------------

    @staticmethod
    def entry(owner: JID, sid: str, peer: JID, message: Element,
              data: bytes | None = None) -> ArchivedMessage:
        """``message`` as ``owner``'s archive keeps it under ``sid``: without
        the owner's stanza-ids (the result's id says it), serialized without
        a copy; ``data``, those bytes if made already."""
        if data is None:
            data = rules.without_stanza_ids(message, owner, xml_bytes)
        return ArchivedMessage(sid, _stamp_of(sid), str(peer), str(peer.bare), data)

    async def append(self, owner: JID, entry: ArchivedMessage) -> bool:
        """Archive ``entry`` for ``owner``; False (logged) if the store failed."""
        return await self.append_all([(owner, entry)])

    async def append_all(self, entries: list[tuple[JID, ArchivedMessage]]) -> bool:
        """Archive the entries in one batch; False (logged) if it failed."""
        assert self.batcher is not None
        try:
            await self.batcher.append_all(entries)
            for owner, _ in entries:
                await self._cap(owner)
        except StorageError as exc:
            self.log.warning("archiving a message of %s failed: %s",
                             " and ".join(str(owner) for owner, _ in entries), exc)
            return False
        return True

    async def _cap(self, owner: JID) -> None:
        """``max_messages``, amortized (see the module's docstring)."""
        if not self.max_messages:
            return
        assert self.store is not None
        left = self._appends.pop(owner, 1) - 1
        if left <= 0:
            await self.store.trim(owner, self.max_messages)
            left = self.trim_every
        self._appends[owner] = left
        while len(self._appends) > COUNTERS_MAX:
            del self._appends[next(iter(self._appends))]

    @hook("pre-message", priority=10)
    def stamp_sent(self, ev: StanzaEvent) -> Awaitable[None] | None:
        """Sender side, before carbons copy it: the sender's id (if kept)."""
        if ev.origin is None or self.store is None:
            return None
        me = ev.origin.jid.bare
        rules.strip_stanza_ids(ev.stanza, me)   # only the server names its ids
        if ev.to_type == "host" or not rules.should_archive(ev.stanza):
            return None
        wanted = self.wanted_now(me, ev.to)
        if wanted is None:
            return self._stamp_sent(ev, me)
        if wanted:
            rules.add_stanza_id(ev.stanza, me, new_id(datetime.now(timezone.utc)))
        return None

    async def _stamp_sent(self, ev: StanzaEvent, me: JID) -> None:
        if await self.wanted(me, ev.to):     # stamp_sent stripped me's ids
            rules.add_stanza_id(ev.stanza, me, new_id(datetime.now(timezone.utc)))

    @hook("pre-message", priority=-10)
    def file_sent_away(self, ev: StanzaEvent) -> Awaitable[None] | None:
        """Sender side, after carbons: a message no recipient-side hook of
        this module will see is archived now, and loses the sender's id."""
        if ev.origin is None or self.store is None:
            return None
        me = ev.origin.jid.bare
        id = rules.stanza_id(ev.stanza, me)
        if id is None:
            return None
        if ev.to_type in ("self", "bare", "full") and self._of(ev.to) is not None:
            return None                 # the recipient side files it (file_routed)
        rules.strip_stanza_ids(ev.stanza, me)
        return self._append_sent(me, self.entry(me, id, ev.to, ev.stanza))

    async def _append_sent(self, me: JID, entry: ArchivedMessage) -> None:
        await self.append(me, entry)        # never claims: the message goes on

    @hook("message/self", priority=50)
    @hook("message/bare", priority=50)
    @hook("message/full", priority=50)
    async def file_routed(self, ev: StanzaEvent) -> None:
        """Both sides of a message between local users, once blocking let it
        through, before it is delivered, copied or stored offline."""
        st = ev.stanza
        user = ev.to.bare
        entries: list[tuple[Mam, JID, ArchivedMessage]] = []
        mod: Mam | None = None
        if ev.origin is not None:
            sender = ev.origin.jid.bare
            sent = rules.stanza_id(st, sender)      # ours: stamp_sent removed any other
            if sender == user:          # to oneself: one entry, its id kept
                if sent is not None and not await self.append(
                        user, self.entry(user, sent, ev.to, st)):
                    rules.strip_stanza_ids(st, user)
                return None
            rules.strip_stanza_ids(st, sender, user)
            mod = self._of(sender) if sent is not None else None
        else:
            rules.strip_stanza_ids(st, user)
        # Neither side's id is in st now: both entries keep the same bytes,
        # made once. The sender's module stamped it only if should_archive.
        data = None
        if mod is not None and sent is not None:
            data = xml_bytes(st)
            entries.append((mod, sender, mod.entry(sender, sent, ev.to, st, data)))
        if await self._keeps(user, ev.frm, mod is not None or rules.should_archive(st)):
            now = datetime.now(timezone.utc)
            sid = new_id(now)
            entries.append((self, user, ArchivedMessage(
                sid, now, str(ev.frm), str(ev.frm.bare), data or xml_bytes(st))))
            rules.add_stanza_id(st, user, sid)
        if not entries:
            return None
        if not self.host.router.message_targets(ev.to, st.get("type")):
            # To offline storage: archived once it is taken (offline_taken).
            # The entry holds the stanza, so no other object takes its id().
            self._pending[id(st)] = (st, entries)
            while len(self._pending) > PENDING_MAX:
                del self._pending[next(iter(self._pending))]
            return None
        await self._file(st, user, entries)
        return None

    async def _keeps(self, user: JID, peer: JID, worth: bool) -> bool:
        """Whether ``user``'s archive keeps a message ``worth`` keeping with ``peer``."""
        if self.store is None or not worth:
            return False
        wanted = self.wanted_now(user, peer)
        return await self.wanted(user, peer) if wanted is None else wanted

    async def _file(self, st: Element, user: JID,
                    entries: list[tuple[Mam, JID, ArchivedMessage]]) -> bool:
        """Append the entries, one batch per module (store); the recipient's
        id leaves ``st`` if its own failed. False if that one failed."""
        ok = True
        by_mod: dict[Mam, list[tuple[JID, ArchivedMessage]]] = {}
        for mod, owner, entry in entries:
            by_mod.setdefault(mod, []).append((owner, entry))
        for mod, group in by_mod.items():
            if not await mod.append_all(group) and any(owner == user for owner, _ in group):
                rules.strip_stanza_ids(st, user)
                ok = False
        return ok

    @hook("message/offline-taken")
    async def offline_taken(self, ev: StanzaEvent) -> None:
        """Offline storage took the message: archive it (both sides)."""
        pending = self._pending.pop(id(ev.stanza), None)
        if pending is not None and pending[0] is ev.stanza and not await self._file(
                ev.stanza, ev.to.bare, pending[1]):
            self.log.warning("a message stored offline for %s has an id not archived",
                             ev.to.bare)

    @hook("message/offline", priority=-100)
    def offline_refused(self, ev: StanzaEvent) -> None:
        """Nobody stored it (no such user, store full, no offline module):
        it bounces, and is archived nowhere."""
        self._pending.pop(id(ev.stanza), None)

    # -- retention ----------------------------------------------------------------

    async def expire(self, now: datetime,
                     still_held: Callable[[], bool] = lambda: True) -> int:
        """Remove the entries older than ``retention_days`` before ``now``
        from every archive of the host, in batches of :data:`EXPIRE_BATCH`
        (the loop yields between them, and stops once ``still_held`` says
        the duty is no longer this node's); how many were removed. 0 at
        once without retention."""
        days = self.option("retention_days")
        if not days or self.store is None:
            return 0
        cutoff = now - timedelta(days=days)
        total = 0
        store = self.store
        while still_held() and (removed := await store.remove_before(cutoff, EXPIRE_BATCH)):
            total += removed
            self.log.info("retention: %d archived messages older than %s removed", removed,
                          cutoff.isoformat(timespec="seconds"))
            await asyncio.sleep(0)
        return total

    # -- the protocol -----------------------------------------------------------------

    def _own(self, ev: StanzaEvent) -> ArchiveStore:
        """The archive an IQ may reach: its sender's own (else forbidden)."""
        if ev.origin is None or ev.frm.bare != ev.to.bare:
            raise StanzaError("forbidden", "a user archive is open to its owner alone"
                              " (XEP-0313 §3.3)")
        if self.store is None:
            raise StanzaError("service-unavailable", "no message archive on this host")
        return self.store

    @iq("get", NS, "query", to=("self", "bare"))
    async def form(self, ev: StanzaEvent) -> Element:
        self._own(ev)
        return rules.query_form()

    @iq("set", NS, "query", to=("self", "bare"))
    async def query(self, ev: StanzaEvent) -> Element:
        store = self._own(ev)
        owner = ev.to.bare
        q = rules.parse_query(ev.stanza[0])
        await self._known(store, owner, q)
        try:
            page = await store.query(owner, ArchiveQuery(
                with_jid=None if q.with_jid is None else str(q.with_jid),
                start=q.start, end=q.end, after_id=q.after_id, before_id=q.before_id,
                ids=q.ids or None, after=q.rsm.after, before=q.rsm.before, max=q.rsm.max))
        except UnknownId as exc:
            raise StanzaError("item-not-found", f"no message {exc} in the archive"
                              " (XEP-0313 §4.3.2)") from None
        items, complete = self._bounded(page, q.rsm.backward)
        session = ev.origin
        assert session is not None
        for item in (reversed(items) if q.flip else items):
            archived = xml_element(item.stanza, f"archived message {item.id} of {owner}")
            session.send(rules.result_message(ev.frm, q.queryid, item.id, item.stamp,
                                              archived, frm=owner))
        first, last = (items[0].id, items[-1].id) if items else (None, None)
        return rules.fin(complete, first, last, page.count)

    async def _known(self, store: ArchiveStore, owner: JID, q: rules.MamQuery) -> None:
        """``<item-not-found/>`` unless every id the form names is archived
        (§4.1.3: after-id, before-id; ids)."""
        for ids in (tuple(i for i in (q.after_id, q.before_id) if i is not None), q.ids):
            if not ids:
                continue
            found = await store.query(owner, ArchiveQuery(ids=ids, max=len(ids)))
            missing = set(ids) - {m.id for m in found.items}
            if missing:
                raise StanzaError("item-not-found", f"no message {sorted(missing)[0]} in the"
                                  " archive (XEP-0313 §4.1.3)")

    @staticmethod
    def _bounded(page: ArchivePage, backward: bool) -> tuple[list[ArchivedMessage], bool]:
        """The page's items within :data:`PAGE_BYTES` (at least one), cut at
        the far end from the cursor; complete only if nothing was cut."""
        order = list(reversed(page.items)) if backward else list(page.items)
        kept: list[ArchivedMessage] = []
        size = 0
        for item in order:
            if kept and size + len(item.stanza) > PAGE_BYTES:
                break
            kept.append(item)
            size += len(item.stanza)
        cut = len(kept) < len(order)
        if backward:
            kept.reverse()
        return kept, page.complete and not cut

    @iq("get", NS, "metadata", to=("self", "bare"))
    async def metadata(self, ev: StanzaEvent) -> Element:
        store = self._own(ev)
        owner = ev.to.bare
        first = await store.query(owner, ArchiveQuery(max=1))
        last = await store.query(owner, ArchiveQuery(before="", max=1))
        ends = [(p.items[0].id, p.items[0].stamp) if p.items else None for p in (first, last)]
        return rules.metadata(ends[0], ends[1])

    @iq("get", NS, "prefs", to=("self", "bare"))
    async def get_prefs(self, ev: StanzaEvent) -> Element:
        self._own(ev)
        return rules.prefs_element(await self.prefs(ev.to.bare))

    @iq("set", NS, "prefs", to=("self", "bare"))
    async def set_prefs(self, ev: StanzaEvent) -> Element:
        self._own(ev)
        owner = ev.to.bare
        prefs = rules.parse_prefs(ev.stanza[0])
        await self.host.storage.put(owner, PREFS, {
            "default": prefs.default, "always": sorted(map(str, prefs.always)),
            "never": sorted(map(str, prefs.never))})
        self._gen += 1
        self._remember(owner, prefs)
        return rules.prefs_element(prefs)
