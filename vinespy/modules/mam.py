"""XEP-0313: Message Archive Management, user archives (``urn:xmpp:mam:2``),
with XEP-0359 stanza ids, XEP-0334 hints and XEP-0441 preferences.

The protocol rules (forms, RSM, ``<fin/>``, what is worth keeping, the
preferences) are :mod:`vinespy.rules.mam`; the archives are the host's
:class:`~vinespy.storage.archive.ArchiveStore` (``host.archive``, chosen by
:func:`~vinespy.storage.archive.archive_for`: the sql database, ``<dir>/archive``
on fs, else memory), opened at start and closed at stop. This module is the
glue, and these are its decisions:

Archiving, sender side (as Prosody's mod_mam: what a user sent is kept as
sent, whatever becomes of it)
    * ``pre-message`` at priority 10 (before carbons at 0): any
      ``<stanza-id/>`` the client put under its own bare JID is removed;
      if the message is worth keeping (:func:`~vinespy.rules.mam.should_archive`)
      and the sender's preferences allow it (with the recipient's JID), it
      is written to the sender's archive *now*, then gets ``<stanza-id
      by=sender's bare id/>``. Carbons' ``<sent/>`` copies are made from
      it, so the sender's other devices learn an id that names a stored
      entry (XEP-0313 §3.5) even if the message is then blocked, bounced
      (no such user, offline storage full) or goes to another domain. A
      failed write leaves the message without an id (logged); it goes on.
    * ``pre-message`` at priority -10 (after carbons): the sender's id
      leaves the message unless it goes to the sender's own account: the
      recipient never sees an id of the sender's archive.
    * A message to oneself (another resource, one's bare JID, no ``to``) is
      that one entry, with the one id, kept on the delivered message and the
      copies; its peer is the address it was sent to (XEP-0313 §4.1.1: a
      'with' of one's own JID finds it).

Archiving, recipient side (``message/bare``, ``message/full``, ``message/self``
at priority 50: after blocking at 100, which claims what it refuses, so a
blocked message is never in the recipient's archive; before carbons at -50,
whose ``<received/>`` copies therefore carry the id)
    * Every message delivered to a user loses any ``<stanza-id/>`` claiming
      to be by the user's bare JID (XEP-0359 §3 rule 2, "MUST delete"),
      archived or not: nobody can plant an id in the user's archive.
    * Kept when :func:`~vinespy.rules.mam.should_archive` says so (chat or
      normal with content, chat markers included; never error, groupchat,
      ``<no-store/>``, ``<no-permanent-store/>``; ``<store/>`` forces it)
      and the user's preferences allow it (:func:`~vinespy.rules.mam.decide`
      with the sender's JID; "roster" reads the user's roster record of the
      sender only when the answer depends on it). Then it is archived and
      gets ``<stanza-id by=bare id/>`` *before* it is delivered (the id a
      client sees is already in the archive).
    * Only users with an account get an archive, at no cost of a read: a
      message is archived for a recipient who has a bound resource to take
      it, or once offline storage took it (the router fires
      ``message/offline-taken``; the offline module claims messages only
      for existing accounts). Such a message gets its id before it is
      stored offline (the offline module stores the stanza as it is, so its
      later delivery carries the id). A message to a user who does not
      exist, or that the offline store refuses (full), bounces and is not
      in the recipient's archive (``message/offline`` at priority -100,
      reached only then, forgets it). The entries wait in memory keyed by
      the stanza object, which they hold so that its ``id()`` is not reused;
      at most :data:`PENDING_MAX` of them (a handler's failure could leave
      one).
    * A failing archive write does not stop the message: it is delivered
      without an id (logged). One that was stored offline already keeps its
      id (logged too: the id then names nothing). A failing read of the
      preferences or the roster: not archived (logged), delivered.

Order (§3.1: the archive's order MUST be preserved)
    Ids sort by the time they are made (:func:`~vinespy.storage.archive.new_id`),
    and each is made just before its entry is written (after the
    preferences are read), and handed out (on the message, its carbons)
    only once written. Within one node, a client that catches up "after"
    the last id it saw can therefore miss only an entry whose write was
    still running when that id was handed out (two writes for one owner at
    once), a message it then receives live; and an entry waiting for
    offline storage (its id made before the offline write, the entry
    written after), which offline delivery brings anyway. Across a cluster
    ids come from each node's clock: entries written by two nodes within
    their clocks' skew of each other may sort against the order of their
    writes; keep the nodes' clocks in sync (NTP).

Writing the archive (:class:`~vinespy.storage.archive.batch.Batcher`, one per
store, its tasks started in :meth:`Mam.start` and stopped, after a last
write and sync, in :meth:`Mam.stop`)
    * An entry is written at once when nothing is queued or being
      written and the store can do it without waiting (fs, memory:
      ``Batcher.append_now``), the hooks then no coroutine: at a steady
      rate, one message per loop iteration, that is nearly every entry.
    * Else it waits for the batch holding it (so an id is handed out
      only once written); what a loop iteration queues (a burst read from
      many streams) is one ``append_many`` of the store, one batch written
      at a time while the next fills. At most 10,000 entries wait; beyond,
      senders wait (back-pressure).
    * Durability is the store's group commit: the fs store's appends reach
      the kernel before the message is delivered (a killed server loses
      nothing it delivered) and are fsynced about once a second (an OS
      crash or power loss loses at most the last ~second of archive); sql
      commits each batch.

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
      shorter than asked: it is then not complete), cut by the store as it
      builds the page (``ArchiveQuery.max_bytes``: fs parses no record past
      it), so nothing buffers more than that for a client that reads
      slowly; the results are sent with a yield to the loop every
      :data:`YIELD_EVERY`.
    * get ``<query/>``: the form (§4.1.5); get ``<metadata/>``: the first and
      last entries (§5); get/set ``<prefs/>`` (XEP-0441).
    * Anyone else's archive: ``<forbidden/>`` (the user's archive is the
      user's alone; as private storage, XEP-0049, prefers it).

Preferences
    Kept per user in the keyval store ``mam_prefs``; none stored means the
    host's ``default`` option with empty lists. Cached (at most
    :data:`CACHE_MAX` users, the oldest forgotten first), dropped on
    ``user-changed``/``users-changed`` (the cluster's news of a change on
    another node; writes of offline storage are not announced, so a message
    to an offline user costs no read of them), a read overtaken by such news
    not cached.

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
    enforced by :meth:`ArchiveStore.trim`, amortized and off the delivery
    path: a node counts its appends per user and every ``trim_every =
    max(1, max_messages // 10)`` of them queues a trim of that archive for
    one background task (a user queued once; at most ``TRIMS_MAX``
    queued, more dropped: the next comes within ``trim_every`` appends). A
    failing trim is logged and touches no message. So, once the trims
    queued have run, an archive holds at most ``max_messages + n *
    (trim_every - 1)`` entries with ``n`` nodes appending to it (plus what
    a restart left). The counters are in memory, at most ``COUNTERS_MAX``
    users (vinespy/storage/archive/trims.py); a new or forgotten counter
    starts at a random point of its round, so beyond that many users a trim
    still comes once per ``trim_every`` appends on average.

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
from ..storage.archive import (ArchivedMessage, ArchiveQuery, ArchiveStore,
                               UnknownId, from_micros, id_micros, id_now)
from ..storage.archive.batch import Batcher
from ..storage.archive.trims import Trims
from ..xml import Element
from . import Module, Option, hook, iq
from .blocking import Blocking, matches

NS = rules.NS
PREFS = "mam_prefs"         # keyval store of a user's preferences
CACHE_MAX = 10_000          # users whose preferences are cached
PENDING_MAX = 1000          # messages stamped on their way to offline storage
YIELD_EVERY = 50            # results of a query sent between two yields to the loop
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
        self.cap: Trims | None = None                   # with max_messages
        self._prefs: dict[JID, Prefs] = {}
        self._gen = 0                                   # bumped by every invalidation
        # id() of a stanza on its way to offline storage -> it, its entry
        self._pending: dict[int, tuple[Element, ArchivedMessage]] = {}

    async def start(self) -> None:
        store = self.host.archive
        if store is not None:
            await store.open()
            self.batcher = Batcher(store)
            self.batcher.start()
            if self.max_messages:
                self.cap = Trims(store, self.max_messages, self.log)
                self.cap.start(f"mam-trims:{self.host.domain}")
        self.store = store              # archiving starts once the batcher runs
        server = self.host.server
        name = f"mam-expire:{self.host.config.domains[0]}"
        if (self.store is not None and self.option("retention_days") and server is not None
                and name not in server.duties):
            server.duty(name, self.option("expire_interval"),
                        lambda still_held: self.expire(datetime.now(timezone.utc), still_held))

    async def stop(self) -> None:
        if self.cap is not None:
            await self.cap.stop()
        if self.batcher is not None:
            await self.batcher.stop()       # writes what is queued, then syncs
        if self.store is not None:
            await self.store.close()

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
        """Whether ``owner``'s preferences archive a message with ``peer``;
        False (logged) when the preferences or the roster cannot be read:
        the message is delivered, not archived."""
        try:
            return await self._wanted(owner, peer)
        except StorageError as exc:
            self.log.warning("not archiving a message of %s: reading its archive"
                             " preferences failed: %s", owner, exc)
            return False

    async def _wanted(self, owner: JID, peer: JID) -> bool:
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
    def entry(owner: JID, sid: str, peer: JID, message: Element) -> ArchivedMessage:
        """``message`` as ``owner``'s archive keeps it under ``sid`` (without
        the owner's stanza-ids, the result's id says it, nor the peer's,
        which the peer's server removes from what it delivers anyway),
        serialized without a copy of the message."""
        bare = peer.bare
        data = rules.without_stanza_ids(message, (owner, bare), xml_bytes)
        return ArchivedMessage(sid, _stamp_of(sid), str(peer), str(bare), data)

    async def append(self, owner: JID, entry: ArchivedMessage) -> bool:
        """Archive ``entry`` for ``owner``; False (logged) if the store failed.
        A trim it makes due runs later, in the background (``cap``)."""
        return await self.append_all([(owner, entry)])

    async def append_all(self, entries: list[tuple[JID, ArchivedMessage]]) -> bool:
        """Archive the entries in one batch; False (logged) if it failed.
        The trims they make due run later, in the background (``cap``)."""
        assert self.batcher is not None
        try:
            await self.batcher.append_all(entries)
        except StorageError as exc:
            self.log.warning("archiving a message of %s failed: %s",
                             " and ".join(str(owner) for owner, _ in entries), exc)
            return False
        if self.cap is not None:
            for owner, _ in entries:
                self.cap.count(owner)
        return True

    def _file(self, owner: JID, peer: JID, message: Element) -> Awaitable[None] | None:
        """Archive ``message`` for ``owner`` under an id made now, just before
        its write (see "Order" in the module's docstring), and stamp the
        message with that id once it is written (the message carries no id
        of ``owner``: the caller stripped them). Written at once when the
        batcher can (:meth:`Batcher.append_now`): None, no coroutine (the
        usual case at a steady rate); else what to await (None: a hook
        returning it claims nothing). A failed write is logged, the
        message goes without an id."""
        assert self.batcher is not None
        sid = id_now()
        entry = self.entry(owner, sid, peer, message)
        try:
            if not self.batcher.append_now(owner, entry):
                return self._filed(owner, sid, entry, message)
        except StorageError as exc:
            self.log.warning("archiving a message of %s failed: %s", owner, exc)
            return None             # delivered without an id
        if self.cap is not None:
            self.cap.count(owner)
        rules.add_stanza_id(message, owner, sid)
        return None

    async def _filed(self, owner: JID, sid: str, entry: ArchivedMessage,
                     message: Element) -> None:
        """:meth:`_file` through the batcher."""
        if await self.append(owner, entry):
            rules.stamp_stanza_id(message, owner, sid)

    @property
    def trims(self) -> int:
        """Trims run (max_messages; tests, stats)."""
        return self.cap.trims if self.cap is not None else 0

    async def trims_done(self) -> None:
        """Wait until no trim is due or running (tests, a clean stop)."""
        if self.cap is not None:
            await self.cap.done()

    @hook("pre-message", priority=10)
    def file_sent(self, ev: StanzaEvent) -> Awaitable[Any] | None:
        """Sender side, before carbons copy it: the sender's entry, and its id
        on the message, whatever becomes of the message afterwards."""
        if ev.origin is None or self.store is None:
            return None
        me = ev.origin.jid.bare
        rules.strip_stanza_ids(ev.stanza, me)   # only the server names its ids
        if ev.to_type == "host" or not rules.should_archive(ev.stanza):
            return None
        blocking = self.host.module("blocking")
        listed = blocking.cached(me) if isinstance(blocking, Blocking) else frozenset()
        if listed is None:
            return self._file_sent(ev, me)
        if matches(listed, ev.to):
            return None             # refused by the sender's own blocklist: never sent
        wanted = self.wanted_now(me, ev.to)
        if wanted is None:
            return self._file_sent(ev, me, check_blocklist=False)
        return self._file(me, ev.to, ev.stanza) if wanted else None

    async def _file_sent(self, ev: StanzaEvent, me: JID, check_blocklist: bool = True) -> None:
        if check_blocklist:
            blocking = self.host.module("blocking")
            assert isinstance(blocking, Blocking)
            try:
                if matches(await blocking.blocklist(me), ev.to):
                    return
            except StorageError:
                pass                # the blocking module answers for it
        if await self.wanted(me, ev.to):
            filing = self._file(me, ev.to, ev.stanza)
            if filing is not None:
                await filing

    @hook("pre-message", priority=-10)
    def strip_sent(self, ev: StanzaEvent) -> None:
        """Sender side, after carbons: the sender's id leaves a message to
        anyone else (the recipient never sees an id of the sender's archive)."""
        if ev.origin is not None:
            me = ev.origin.jid.bare
            if ev.to.bare != me:
                rules.strip_stanza_ids(ev.stanza, me)

    @hook("message/self", priority=50)
    @hook("message/bare", priority=50)
    @hook("message/full", priority=50)
    def file_routed(self, ev: StanzaEvent) -> Awaitable[None] | None:
        """The recipient's side of a message to a local user, once blocking
        let it through, before it is delivered, copied or stored offline.
        Without a coroutine when the preferences are cached and the entry
        is written at once (the usual case)."""
        st = ev.stanza
        user = ev.to.bare
        if ev.origin is not None:
            sender = ev.origin.jid.bare
            if sender == user:
                return None             # to oneself: filed when sent, its id kept
            rules.strip_stanza_ids(st, sender, user)
        else:
            rules.strip_stanza_ids(st, user)
        if self.store is None or not rules.should_archive(st):
            return None
        wanted = self.wanted_now(user, ev.frm)
        if wanted is None:
            return self._file_routed_loading(ev, user)
        return self._file_routed(ev, user) if wanted else None

    async def _file_routed_loading(self, ev: StanzaEvent, user: JID) -> None:
        if await self.wanted(user, ev.frm):
            filing = self._file_routed(ev, user)
            if filing is not None:
                await filing

    def _file_routed(self, ev: StanzaEvent, user: JID) -> Awaitable[None] | None:
        st = ev.stanza
        if self.host.router.message_targets(ev.to, st.get("type")):
            return self._file(user, ev.frm, st)
        # To offline storage: archived once it is taken (offline_taken), which
        # the offline module does only for an existing account. The entry
        # holds the stanza, so no other object takes its id().
        sid = id_now()
        self._pending[id(st)] = (st, self.entry(user, sid, ev.frm, st))
        rules.stamp_stanza_id(st, user, sid)
        while len(self._pending) > PENDING_MAX:
            del self._pending[next(iter(self._pending))]
        return None

    @hook("message/offline-taken")
    async def offline_taken(self, ev: StanzaEvent) -> None:
        """Offline storage took the message: archive it."""
        pending = self._pending.pop(id(ev.stanza), None)
        if pending is not None and pending[0] is ev.stanza and not await self.append(
                ev.to.bare, pending[1]):
            self.log.warning("a message stored offline for %s has an id not archived",
                             ev.to.bare)

    @hook("message/offline", priority=-100)
    def offline_refused(self, ev: StanzaEvent) -> None:
        """Nobody stored it (no such user, store full, no offline module):
        it bounces, and is in no recipient's archive."""
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
        store, domains = self.store, tuple(self.host.config.domains)
        # Only this host config's domains: another [[host]] sharing the
        # store (one SQL database) keeps its own retention.
        while still_held() and (removed := await store.remove_before(cutoff, EXPIRE_BATCH,
                                                                     domains)):
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
                ids=q.ids or None, after=q.rsm.after, before=q.rsm.before, max=q.rsm.max,
                max_bytes=PAGE_BYTES))
        except UnknownId as exc:
            raise StanzaError("item-not-found", f"no message {exc} in the archive"
                              " (XEP-0313 §4.3.2)") from None
        session = ev.origin
        assert session is not None
        items = page.items
        for n, item in enumerate(reversed(items) if q.flip else items, 1):
            archived = xml_element(item.stanza, f"archived message {item.id} of {owner}")
            session.send(rules.result_message(ev.frm, q.queryid, item.id, item.stamp,
                                              archived, frm=owner))
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)      # a page of 250 does not hold the loop
        return rules.fin(page.complete, page.first, page.last, page.count)

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
