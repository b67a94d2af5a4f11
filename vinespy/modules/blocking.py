"""XEP-0191: Blocking Command.

* ``get`` of ``<blocklist xmlns='urn:xmpp:blocking'/>`` to one's own account
  returns the blocked JIDs as ``<item jid=…/>`` (§3.2).
* ``set`` of ``<block/>`` (at least one ``<item/>``, else ``<bad-request/>``;
  a JID that does not parse is ``<jid-malformed/>``) or ``<unblock/>`` (no
  item: unblock everything) updates the list kept in the "blocklist" store,
  answers with an empty result and pushes the same element to every
  interested resource of the user (§3.3, §3.4). On block, each available
  resource of the user sends ``<presence type='unavailable'/>`` to the newly
  blocked JIDs (§3.3).
* A list holds at most ``max_items`` JIDs (option, default 1000: far more
  than people block by hand, and it bounds what one user makes the server
  store, rewrite on each change and keep in memory). A ``<block/>`` that
  would go past it is refused as a whole with ``<not-acceptable/>`` (type
  modify) and a text naming the limit. The XEP names no condition for this
  ("Other standard XMPP stanza errors also apply", §3.3), so it is RFC
  6120's §8.3.3.9: "does not meet criteria defined by the recipient or
  server", and the user can modify the request (unblock some first).
  ``<resource-constraint/>`` (§8.3.3.18) is type wait: it tells the client
  to retry as is, which would fail again. Unblocking is never limited.
* Inbound (§3.5, "blocked entity attempts to communicate"): a stanza from a
  blocked JID (full, bare, domain/resource or domain, as in XEP-0016) to the
  user is never delivered; a message or an IQ get/set is answered with
  ``<service-unavailable/>``, anything else (presence, results, errors) is
  dropped without an answer.
* Outbound (§3.6, "user attempts to communicate"): a message or IQ get/set
  the user sends to a JID on their own list is answered with
  ``<not-acceptable/>`` carrying ``<blocked xmlns='urn:xmpp:blocking:errors'/>``;
  presence and anything else is dropped.

Each user's list is cached in memory once read, so checking a stanza costs no
storage access: at most ``CACHE_MAX`` lists and about ``CACHE_BYTES`` of
JIDs, the oldest forgotten first (a forgotten list is read again when
needed). The list of a user is owned by the blocking module of the user's
own domain.
"""

from __future__ import annotations

import contextlib
import secrets
from typing import Any, Awaitable

from ..errors import StanzaError
from ..events import StanzaEvent
from ..jid import JID, JIDError
from ..storage import StorageError
from ..xml import Element, child, element, error_reply, jid_attr, local_name, stanza
from ..locks import KeyedLock
from . import Module, Option, hook, iq
from .roster import Roster

BLOCKING = "urn:xmpp:blocking"
BLOCKING_ERRORS = "urn:xmpp:blocking:errors"
STORE = "blocklist"
LOCK_STRIPES = 64              # change counters (generations): a fixed pool
CACHE_MAX = 100_000     # blocklists kept in memory (most are empty)
CACHE_BYTES = 64 << 20  # about the memory the cached lists may take together
ENTRY_BYTES = 300       # about what one cached JID takes besides its characters
_NONE: frozenset[JID] = frozenset()


def matches(blocked: frozenset[JID], jid: JID) -> bool:
    """Whether ``jid`` is covered by an entry of ``blocked`` (XEP-0016 order:
    full, bare, domain/resource, domain)."""
    if not blocked:
        return False
    domain = JID("", jid.domain)
    return (jid in blocked or jid.bare in blocked or domain in blocked
            or (bool(jid.resource) and JID("", jid.domain, jid.resource) in blocked))


def cost(blocked: frozenset[JID]) -> int:
    """About the bytes a cached list takes: its key and each JID, with the
    JIDs' characters (one may have 3 KB of them, RFC 7622 §3.1)."""
    return ENTRY_BYTES * (1 + len(blocked)) + sum(
        len(j.local) + len(j.domain) + len(j.resource) for j in blocked)


class Blocking(Module):
    name = "blocking"
    xep = "XEP-0191"
    features = (BLOCKING,)
    options = {"max_items": Option(int, default=1000, min=1, max=100_000)}

    def __init__(self, host: Any) -> None:
        super().__init__(host)
        self.max_items: int = self.option("max_items")
        # Every stanza to a local address consults the recipient's list, so
        # neither the locks nor the cache may grow with the addresses clients
        # make up: a lock per user only while it is held, and a cache that
        # forgets its oldest entries, bounded in lists and in bytes (lists of
        # long JIDs must not add up unseen).
        self._locks: KeyedLock[JID] = KeyedLock()
        self._cache: dict[JID, frozenset[JID]] = {}
        self._costs: dict[JID, int] = {}
        self._cached_bytes = 0
        # Bumped (per stripe) by every change: a read that a change overtook
        # is not cached. Reads take no lock, so routing a stanza while a
        # block holds the lock (its unavailable presence) cannot deadlock.
        self._gens = [0] * LOCK_STRIPES

    def _lock(self, bare: JID) -> contextlib.AbstractAsyncContextManager[None]:
        return self._locks.hold(bare)

    def _remember(self, bare: JID, blocked: frozenset[JID]) -> None:
        """Cache ``blocked`` as the newest entry; forget the oldest ones past
        either bound, but never the one just cached (it is in use)."""
        cache = self._cache
        self._forget(bare)
        cache[bare] = blocked
        self._costs[bare] = size = cost(blocked)
        self._cached_bytes += size
        while len(cache) > 1 and (len(cache) > CACHE_MAX or self._cached_bytes > CACHE_BYTES):
            self._forget(next(iter(cache)))

    def _forget(self, bare: JID) -> None:
        if self._cache.pop(bare, None) is not None:
            self._cached_bytes -= self._costs.pop(bare)

    @hook("user-changed")
    def user_changed(self, bare: JID) -> None:
        """Another cluster node changed ``bare``'s data: read the list anew."""
        self._gens[hash(bare) % LOCK_STRIPES] += 1
        self._forget(bare)

    @hook("users-changed")
    def users_changed(self) -> None:
        """Any user's data may have changed unannounced (Redis failed over and
        the news was lost): read every list anew."""
        self._gens = [g + 1 for g in self._gens]
        for bare in list(self._cache):
            self._forget(bare)

    @hook("initial-presence")
    async def warm(self, session: Any, user: Any) -> None:
        """Read the user's list at login, so that the messages they send need
        no storage access (and still go while the database is down)."""
        try:
            await self.blocklist(session.jid.bare)
        except StorageError as exc:
            self.log.warning("blocklist of %s not loaded: %s", session.jid.bare, exc)

    def cached(self, bare: JID) -> frozenset[JID] | None:
        """``bare``'s list if it is in memory (no I/O), else None."""
        return self._cache.get(bare)

    async def blocklist(self, bare: JID) -> frozenset[JID]:
        """The cached list of ``bare``, read from storage on first need."""
        cached = self._cache.get(bare)
        if cached is not None:
            return cached
        stripe = hash(bare) % LOCK_STRIPES
        gen = self._gens[stripe]
        loaded = await self._load(bare)
        cached = self._cache.get(bare)
        if cached is not None:
            return cached
        if self._gens[stripe] == gen:
            self._remember(bare, loaded)
        return loaded

    def _changed(self, bare: JID, applies: frozenset[JID]) -> None:
        """``bare``'s list changed; ``applies`` is what enforcement uses now."""
        self._gens[hash(bare) % LOCK_STRIPES] += 1
        self._remember(bare, applies)

    async def _load(self, bare: JID) -> frozenset[JID]:
        return self._parse(bare, await self.host.storage.get(bare, STORE))

    def _parse(self, bare: JID, stored: Any) -> frozenset[JID]:
        out = set()
        for text in stored or ():
            try:
                out.add(JID.parse(text))
            except JIDError:
                self.log.warning("ignoring a bad JID %r in the blocklist of %s", text, bare)
        return frozenset(out)

    # -- the command (§3.2-§3.4) ---------------------------------------------------

    @iq("get", BLOCKING, "blocklist", to=("self",))
    async def get(self, ev: StanzaEvent) -> Element:
        out = element(BLOCKING, "blocklist")
        for jid in sorted(await self.blocklist(ev.to.bare), key=str):
            child(out, BLOCKING, "item", jid=str(jid))
        return out

    @staticmethod
    def _items(payload: Element) -> list[JID]:
        """The items' JIDs, each once, in order (a dict: linear in the items)."""
        return list(dict.fromkeys(jid_attr(item)
                                  for item in payload.iter(f"{{{BLOCKING}}}item")))

    @iq("set", BLOCKING, "block", to=("self",))
    async def block(self, ev: StanzaEvent) -> None:
        jids = self._items(ev.stanza[0])
        if not jids:
            raise StanzaError("bad-request", "<block/> needs at least one <item/>")
        bare = ev.to.bare
        async with self._lock(bare):
            # Computed from the stored list inside one storage transaction
            # (Storage.modify): another node's change in the same instant is
            # kept, whatever this node's cache held.
            seen: list[frozenset[JID]] = []

            def add(stored: Any) -> list[str]:
                current = self._parse(bare, stored)
                added = [j for j in jids if j not in current]
                if len(current) + len(added) > self.max_items:
                    raise StanzaError("not-acceptable",
                                      f"a blocklist holds at most {self.max_items} JIDs; "
                                      f"{len(current)} are blocked, unblock some first")
                seen[:] = [current]
                return sorted(str(j) for j in current | frozenset(added))

            await self.host.storage.modify(bare, STORE, add)
            current = seen[0]
            new = [j for j in jids if j not in current]
            updated = current | frozenset(new)
            # §3.3: the user's available resources go unavailable for the newly
            # blocked JIDs (sent while the old list applies: the new one would
            # drop them).
            self._changed(bare, current)
            for session in self.host.sessions.available(bare):
                for jid in new:
                    await self.send(stanza("presence", frm=session.jid, to=jid,
                                           type="unavailable"))
            self._changed(bare, updated)
        self._push(bare, ev.stanza[0])
        return None

    @iq("set", BLOCKING, "unblock", to=("self",))
    async def unblock(self, ev: StanzaEvent) -> None:
        jids = self._items(ev.stanza[0])
        bare = ev.to.bare
        async with self._lock(bare):
            def remove(stored: Any) -> list[str] | None:
                kept = self._parse(bare, stored) - frozenset(jids) if jids else _NONE
                return sorted(str(j) for j in kept) or None

            stored = await self.host.storage.modify(bare, STORE, remove)
            self._changed(bare, self._parse(bare, stored))
        self._push(bare, ev.stanza[0])
        return None

    def _push(self, bare: JID, payload: Element) -> None:
        """§3.3/§3.4: the same block/unblock to every interested resource."""
        for session in self.host.sessions.resources(bare):
            if not Roster.interested.get(session):
                continue
            push = stanza("iq", frm=bare, to=session.jid, type="set",
                          id=f"push-{secrets.token_hex(8)}")
            el = child(push, BLOCKING, local_name(payload))
            for jid in self._items(payload):
                child(el, BLOCKING, "item", jid=str(jid))
            session.send(push)

    # -- enforcement (§3.5, §3.6) ----------------------------------------------------

    def _owner(self, jid: JID) -> Blocking | None:
        """The blocking module of ``jid``'s own domain, if served and loaded."""
        host = self.host.router.hosts.get(jid.domain)
        mod = host.modules.get(self.name) if host is not None else None
        return mod if isinstance(mod, Blocking) else None

    @hook("message/bare", priority=100)
    @hook("message/full", priority=100)
    @hook("presence/bare", priority=100)
    @hook("presence/full", priority=100)
    @hook("iq/bare", priority=100)
    @hook("iq/full", priority=100)
    def enforce(self, ev: StanzaEvent) -> bool | None | Awaitable[bool | None]:
        """Every stanza between users passes here: when both lists are in
        memory (the usual case) decide at once, without a coroutine; else
        load them first."""
        owner = self._owner(ev.frm) if ev.frm.local else None
        out = owner._cache.get(ev.frm.bare) if owner is not None else _NONE
        inn = self._cache.get(ev.to.bare)
        if out is not None and inn is not None:
            if not out and not inn:
                return None
            return self._decide(ev, out, inn)
        return self._enforce_loading(ev, owner)

    async def _enforce_loading(self, ev: StanzaEvent, owner: Blocking | None) -> bool | None:
        out = await owner.blocklist(ev.frm.bare) if owner is not None else _NONE
        return self._decide(ev, out, await self.blocklist(ev.to.bare))

    def _decide(self, ev: StanzaEvent, out: frozenset[JID],
                inn: frozenset[JID]) -> bool | None:
        st = ev.stanza
        kind = local_name(st)
        stype = st.get("type")
        asks = (kind == "message" and stype != "error") or (
            kind == "iq" and stype in ("get", "set"))
        # Outbound: the sender blocked the recipient.
        if matches(out, ev.to):
            if asks and ev.origin is not None:
                answer = error_reply(st, StanzaError(
                    "not-acceptable", f"you have blocked {ev.to.bare}"))
                err = answer[-1]
                err.append(element(BLOCKING_ERRORS, "blocked"))
                ev.origin.send(answer)
            return True
        # Inbound: the recipient blocked the sender.
        if matches(inn, ev.frm):
            if asks:
                self.host.router.bounce(st, StanzaError("service-unavailable"))
            return True
        return None
