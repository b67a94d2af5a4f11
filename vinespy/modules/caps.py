"""XEP-0115: Entity Capabilities, on the server's side: what each client
supports, learnt from the ``<c/>`` of its presence, for XEP-0163 §4.3
(PEP sends a client the notifications of a node only if it lists
``node+notify``).

Interface (what PEP and others use; ``caps = host.module("caps")``):

* ``await caps.client_features(session) -> frozenset[str] | None``: the verified
  features of the client behind ``session`` (a local stream or another
  node's, through its proxy), from the ``<c/>`` of its current presence;
  None when unknown (no caps, legacy caps, not verified yet, or it lied).
  From this node's memory, else from the cluster's shared cache (one Redis
  read, remembered on a hit; a miss is remembered for ``miss_ttl`` s).
* ``caps.client_features_cached(session)``: the same without I/O (memory only),
  for hot paths.
* ``caps-known`` (bus event on the user's host, with the session; every
  handler runs, :meth:`EventBus.notify`): a local session's features became
  known, at its presence with caps already cached or when its answer was
  verified; fired once per new ``<c/>`` (not at every presence repeating
  it), after the presence module processed an initial presence.
* :func:`wants` ``(features, node)``: ``node + "+notify" in features``.

How (XEP-0115 "Discovering Capabilities", the "Caching" note, "Security
Considerations"):

* A local session's available presence without 'to' (``pre-presence`` on
  the node holding its stream) with hashed caps (:mod:`vinespy.rules.caps`;
  legacy caps without 'hash' are unknown) whose (hash, ver) is not known is
  answered by an iq get disco#info for ``node#ver`` sent from the server to
  the client (:meth:`IQ.request`), at most one per (hash, ver) at a time on
  a node: other sessions with the same caps wait for that answer. An
  answer that is an error, times out (``timeout``), is too big
  (``max_features``, ``max_identities``, ``max_fields``) or does not hash to
  'ver' (§5.4: the client lies or miscounts) is not kept, and that session's
  caps stay unknown (it is not asked again for the same caps); another
  session with the same caps is then asked in turn.
* A verified answer is kept under (hash, ver) (content-addressed: it never
  goes stale: the "Caching" note): in this process, an LRU of ``cache_size`` entries per
  node (shared by its hosts); in a cluster also in Redis,
  ``caps:{hash}:{ver}`` (a JSON list of the features), so that the other
  nodes ask no client again. It expires after ``shared_ttl`` s (0: never),
  so that an attacker minting verified caps with random features cannot
  fill Redis for good; an expired entry costs one query again. Standalone,
  memory only: a restart asks each client once more, which is what XEP-0115
  clients expect of any peer.
* At most ``max_new`` (3) caps this node does not know in memory are
  taken up per session within ``new_window`` (60) s (looked up in Redis,
  asked for): a client that mints a new 'ver' with every presence (each
  one verified, with random features, could otherwise fill Redis and keep
  the server querying) has the caps beyond left unknown: no query, no
  ``caps-known``, no PEP notifications by caps for that presence. Caps
  known in memory never count. A real client changes its caps when a
  plugin is switched on or off: far below the limit.
* The session's caps are noted on the local session at its presence (a
  field of this node's); another node reads them from the session's
  presence in its routing entry (``session.presence``), so nothing new
  travels between nodes.

The server does not advertise ``http://jabber.org/protocol/caps`` in its
disco#info: by XEP-0115's "Caps Optimization" note a server that does
promises to strip repeated ``<c/>`` and to add it to the first presence
each contact receives, and clients may then send ``<c/>`` only once. This
server forwards presence as sent (and includes no ``<c/>`` of its own), so
advertising it would make such clients' contacts lose their caps.
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Coroutine

from .. import ns
from ..events import StanzaEvent
from ..fields import SessionField
from ..rules import caps as rules
from ..rules.caps import Caps as CapsInfo, wants
from ..sessions import Session
from ..storage import User
from ..xml import child, stanza
from . import Module, Option, hook
from .iqdispatch import RequestError

if TYPE_CHECKING:
    from ..router import Router

__all__ = ["Caps", "wants"]

Key = tuple[str, str]
# Noted for a session whose last available presence carried no usable <c/>.
_NONE = CapsInfo("", "", "")
_QUERY = f"{{{ns.DISCO_INFO}}}query"


def redis_key(key: Key) -> str:
    """The Redis key of the features of caps (hash, ver)."""
    return f"caps:{key[0]}:{key[1]}"


class NodeCaps:
    """What one node (server process) knows, shared by its hosts: verified
    features per (hash, ver), recent misses of the shared cache, and the
    queries under way."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.known: OrderedDict[Key, frozenset[str]] = OrderedDict()
        self.missed: OrderedDict[Key, float] = OrderedDict()
        self.flights: dict[Key, asyncio.Future[bool]] = {}

    def get(self, key: Key) -> frozenset[str] | None:
        found = self.known.get(key)
        if found is not None:
            self.known.move_to_end(key)
        return found

    def put(self, key: Key, features: frozenset[str]) -> None:
        self.known[key] = features
        self.known.move_to_end(key)
        self.missed.pop(key, None)
        while len(self.known) > self.size:
            self.known.popitem(last=False)

    def recently_missed(self, key: Key, ttl: float) -> bool:
        at = self.missed.get(key)
        return at is not None and time.monotonic() - at < ttl

    def miss(self, key: Key) -> None:
        self.missed[key] = time.monotonic()
        self.missed.move_to_end(key)
        while len(self.missed) > self.size:
            self.missed.popitem(last=False)


# One per server (its router): the hosts of a node share it, two servers in
# one process (the tests' clusters) do not.
_NODES: weakref.WeakKeyDictionary[Router, NodeCaps] = weakref.WeakKeyDictionary()


class Caps(Module):
    name = "caps"
    xep = "XEP-0115"
    options = {
        "timeout": Option(int, default=30, min=1, max=600),
        "max_features": Option(int, default=1000, min=1, max=100_000),
        "max_identities": Option(int, default=100, min=1, max=10_000),
        "max_fields": Option(int, default=200, min=0, max=10_000),
        "cache_size": Option(int, default=10_000, min=10, max=10_000_000),
        "shared_ttl": Option(int, default=30 * 86400, min=0, max=10 * 365 * 86400),
        "miss_ttl": Option(int, default=5, min=0, max=3600),
        "max_new": Option(int, default=3, min=1, max=1000),
        "new_window": Option(int, default=60, min=1, max=86400),
    }

    # The caps of the session's last available presence (this node only;
    # _NONE: it had none usable).
    noted = SessionField(CapsInfo)
    # Caps this session's answer did not verify for: not asked again.
    failed = SessionField(CapsInfo)
    # The task learning this session's features, if any.
    task = SessionField(asyncio.Task)
    # When this session's caps unknown to this node were last taken up
    # (monotonic s, at most max_new of them within new_window s).
    news = SessionField(list)

    def __init__(self, host: Any) -> None:
        super().__init__(host)
        self.timeout: int = self.option("timeout")
        self.max_features: int = self.option("max_features")
        self.max_identities: int = self.option("max_identities")
        self.max_fields: int = self.option("max_fields")
        self.shared_ttl: int = self.option("shared_ttl")
        self.miss_ttl: int = self.option("miss_ttl")
        self.max_new: int = self.option("max_new")
        self.new_window: int = self.option("new_window")
        router = host.router
        node = _NODES.get(router)
        if node is None:
            node = _NODES[router] = NodeCaps(self.option("cache_size"))
        self.node = node
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the interface -------------------------------------------------------------

    def caps_of(self, session: Session) -> CapsInfo | None:
        """The caps of ``session``'s current presence."""
        noted = Caps.noted.get(session)
        if noted is not None:
            return None if noted is _NONE else noted
        presence = session.presence
        return rules.parse(presence) if presence is not None else None

    def client_features_cached(self, session: Session) -> frozenset[str] | None:
        """The verified features of ``session``'s client, from memory only."""
        caps = self.caps_of(session)
        return None if caps is None else self.node.get(caps.key)

    # Not the disco features of the server (``Module.features``, which this
    # module has none of: Host.features skips a method) but a client's.
    async def client_features(self, session: Session) -> frozenset[str] | None:
        """The verified features of ``session``'s client; None: unknown."""
        caps = self.caps_of(session)
        if caps is None:
            return None
        found = self.node.get(caps.key)
        if found is None:
            found = await self._shared_get(caps.key)
        return found

    # -- presence ------------------------------------------------------------------

    @hook("pre-presence")
    def presence(self, ev: StanzaEvent) -> None:
        """A local session's broadcast presence: note its caps; learn them
        now, or (initial presence) once the presence module made it available."""
        session = ev.origin
        if session is None or ev.to_type != "self":
            return None
        stype = ev.stanza.get("type")
        if stype == "unavailable":
            self._forget(session)
        elif stype is None:
            caps = rules.parse(ev.stanza) or _NONE
            if caps == Caps.noted.get(session):
                return None             # the same caps again: known or under way
            self._forget(session)
            Caps.noted.set(session, caps)
            if caps is not _NONE and session.available:
                self._start(session, caps)
        return None

    @hook("initial-presence")
    def initial(self, session: Session, user: User | None) -> None:
        caps = Caps.noted.get(session)
        if caps is not None and caps is not _NONE and Caps.task.get(session) is None:
            self._start(session, caps)
        return None

    @hook("resource-unbound")
    def unbound(self, session: Session) -> None:
        self._forget(session)

    @hook("server-stopping")
    def stopping(self) -> None:
        """Before the cluster's Redis is closed: nothing more to learn."""
        for task in list(self._tasks):
            task.cancel()

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _forget(self, session: Session) -> None:
        task = Caps.task.get(session)
        if task is not None:
            task.cancel()
        for field in (Caps.task, Caps.noted, Caps.failed):
            field.clear(session)    # not news: a new presence does not reset the count

    def _start(self, session: Session, caps: CapsInfo) -> None:
        if Caps.failed.get(session) == caps:
            return
        known = self.node.get(caps.key)
        if known is None and not self._may_take_new(session):
            self.log.info("%s sent more than %d new caps within %d s: %s left unknown",
                          session.jid, self.max_new, self.new_window, caps.ver)
            return
        self._spawn(session, self._learn(session, caps, known))

    def _may_take_new(self, session: Session) -> bool:
        """Whether ``session`` may have caps this node does not know looked
        up (and maybe asked for, verified and stored in Redis) now: at most
        ``max_new`` within ``new_window`` s, so that a client minting caps
        cannot make the server query it without end nor fill the shared
        cache; beyond, its caps stay unknown (no PEP notifications)."""
        now = time.monotonic()
        news = [t for t in Caps.news.get(session) or () if now - t < self.new_window]
        if len(news) >= self.max_new:
            Caps.news.set(session, news)
            return False
        news.append(now)
        Caps.news.set(session, news)
        return True

    def _spawn(self, session: Session, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        session.fields[Caps.task.key] = task

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if session.fields.get(Caps.task.key) is t:
                del session.fields[Caps.task.key]
            if not t.cancelled() and t.exception() is not None:
                self.log.error("learning the caps of %s failed", session.jid,
                               exc_info=t.exception())
        task.add_done_callback(done)

    async def _learn(self, session: Session, caps: CapsInfo,
                     known: frozenset[str] | None) -> None:
        """Find or verify ``session``'s features, then say so (caps-known)."""
        key = caps.key
        while known is None:
            known = self.node.get(key) or await self._shared_get(key)
            if known is not None:
                break
            flight = self.node.flights.get(key)
            if flight is None:
                if not await self._ask(session, caps):
                    Caps.failed.set(session, caps)
                    return
            else:
                # Another session asks already; if its answer fails, ask this one.
                await asyncio.shield(flight)
            known = self.node.get(key)
        if Caps.noted.get(session) == caps:
            await self.host.bus.notify("caps-known", session)

    async def _ask(self, session: Session, caps: CapsInfo) -> bool:
        """Query ``session``'s client for ``caps`` and keep a verified answer;
        whether it was. The node's one query for these caps meanwhile."""
        flight: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.node.flights[caps.key] = flight
        ok = False
        try:
            ok = await self._query(session, caps)
            return ok
        finally:
            if self.node.flights.get(caps.key) is flight:
                del self.node.flights[caps.key]
            flight.set_result(ok)

    async def _query(self, session: Session, caps: CapsInfo) -> bool:
        iq = stanza("iq", to=session.jid, type="get")
        child(iq, ns.DISCO_INFO, "query", node=caps.disco_node)
        try:
            answer = await self.host.module("iq").request(iq, self.timeout)
        except RequestError as exc:
            self.log.info("%s did not tell its caps %s: %s", session.jid, caps.ver, exc)
            return False
        except TimeoutError:
            self.log.info("%s did not tell its caps %s within %d s", session.jid, caps.ver,
                          self.timeout)
            return False
        query = answer.find(_QUERY)
        if query is None:
            self.log.info("%s answered its caps query without <query/>", session.jid)
            return False
        identities, features, fields = rules.counts(query)
        if (identities > self.max_identities or features > self.max_features
                or fields > self.max_fields):
            self.log.info("%s lists too much for its caps (%d identities, %d features, "
                          "%d form fields): not kept", session.jid, identities, features, fields)
            return False
        verified = rules.verify(caps, query)
        if verified is None:
            self.log.warning("%s answered for caps %s %s with what does not hash to it "
                             "(XEP-0115 §5.4): not trusted", session.jid, caps.hash, caps.ver)
            return False
        self.node.put(caps.key, verified)
        await self._shared_put(caps.key, verified)
        return True

    # -- the cluster's shared cache ----------------------------------------------------

    def _redis(self) -> Any:
        server = self.host.server
        cluster = server.cluster if server is not None else None
        return cluster.redis if cluster is not None else None

    async def _shared_get(self, key: Key) -> frozenset[str] | None:
        redis = self._redis()
        if redis is None or self.node.recently_missed(key, self.miss_ttl):
            return None
        from redis.exceptions import RedisError
        try:
            data = await redis.get(redis_key(key))
        except (RedisError, OSError) as exc:
            self.log.warning("caps cache: reading %s: %s", redis_key(key), exc)
            return None
        if data is None:
            self.node.miss(key)
            return None
        try:
            found = frozenset(str(f) for f in json.loads(data))
        except (ValueError, TypeError):
            self.log.warning("caps cache: %s is not a JSON list", redis_key(key))
            return None
        self.node.put(key, found)
        return found

    async def _shared_put(self, key: Key, features: frozenset[str]) -> None:
        redis = self._redis()
        if redis is None:
            return
        from redis.exceptions import RedisError
        try:
            await redis.set(redis_key(key), json.dumps(sorted(features)),
                            ex=self.shared_ttl or None)
        except (RedisError, OSError) as exc:
            self.log.warning("caps cache: writing %s: %s", redis_key(key), exc)
