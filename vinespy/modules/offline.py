"""XEP-0160: messages for a user with no available resource are stored and
delivered, stamped with XEP-0203 ``<delay/>``, at their next initial presence
with a non-negative priority (RFC 6121 §8.5.2.2.1).

Only chat and normal messages that carry content a person reads (a body or
a subject) are stored; a chat-state notification for someone offline is
dropped without an error (claimed). Over ``max_messages`` the sender gets
``<service-unavailable/>``, as the RFC allows. A message to a user who does
not exist is never claimed, whatever it holds: the router answers it, and
``message/offline-taken`` (what the archive waits for) means the user exists.

A message stored for a user who is available by the time it is stored is
delivered at once. The sender's side decided "offline" from what it knew
when it routed the message; in a cluster the recipient may have become
available on another node meanwhile, and that node may already have read
his (then empty) store. So both sides follow one order, which leaves no
window (docs/cluster.md, "Offline messages"):

* initial presence: the resource's availability is published to every
  node first (:meth:`Sessions.published`), then the store is read;
* store: the message is written, then the user's routes are read afresh;
  if he now has an available resource of non-negative priority, the store
  is delivered to it.

A store written after the read of the first kind is therefore seen by the
fresh read of the second. Reading a user's store, delivering it and
emptying it, and adding to it, run one at a time for that user across the
whole cluster (:meth:`Sessions.exclusive`), so a message is delivered once.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timezone
from typing import Any, AsyncIterator

from lxml import etree

from .. import ns
from ..events import StanzaEvent
from ..locks import KeyedLock
from ..storage import xml_bytes, xml_element
from . import Module, Option, hook

STORE = "offline"
DELAY = "urn:xmpp:delay"
_CONTENT = (f"{{{ns.CLIENT}}}body", f"{{{ns.CLIENT}}}subject")


class _Full(Exception):
    """The user's store holds ``max_messages`` already: nothing is written."""


class Offline(Module):
    name = "offline"
    xep = "XEP-0160"
    features = ("msgoffline",)
    options = {"max_messages": Option(int, default=100, min=1, max=10000)}
    depends = ("presence",)

    def __init__(self, host: Any) -> None:
        super().__init__(host)
        self.max_messages = self.option("max_messages")
        self._locks: KeyedLock[Any] = KeyedLock()

    @contextlib.asynccontextmanager
    async def _exclusive(self, bare: Any) -> AsyncIterator[None]:
        """``bare``'s store, for this task alone: on this node (a lock per user,
        dropped when unused) and in the whole cluster."""
        async with self._locks.hold(bare), self.host.sessions.exclusive(f"offline:{bare}"):
            yield

    @hook("message/offline")
    async def store(self, ev: StanzaEvent) -> bool | None:
        st = ev.stanza
        storage = self.host.storage
        # The account first: a claim means "the user exists" to what follows
        # (message/offline-taken: the archive of that user, XEP-0313).
        if await storage.find_account(ev.to) is None:
            return None                      # no such user: the router says so
        if not any(st.find(tag) is not None for tag in _CONTENT):
            return True                      # nothing a person would read: drop
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        record = {"stamp": stamp, "xml": xml_bytes(st).decode()}

        def append(queue: Any) -> list[Any]:
            queue = queue or []
            if len(queue) >= self.max_messages:
                raise _Full
            return [*queue, record]

        async with self._exclusive(ev.to):
            try:
                await storage.modify(ev.to, STORE, append)
            except _Full:
                return None                  # -> service-unavailable to the sender
        await self._recheck(ev.to)
        return True

    async def _recheck(self, bare: Any) -> None:
        """Stored: is ``bare`` available after all (fresh routes)? Then deliver
        as to his bare JID (§8.5.2.1.1: the highest non-negative priority),
        never to a resource on its way out: what it is given goes back here
        (XEP-0198 stores what it holds as it unbinds)."""
        sessions = self.host.sessions
        await sessions.load([bare], fresh=True)
        targets = self.host.router.bare_targets(bare, "chat", staying=True)
        if targets:
            await self._flush(bare, targets)

    @hook("initial-presence")
    async def deliver(self, session: Any, user: Any) -> None:
        """RFC 6121 §8.5.2.2.1 / XEP-0160: flush at initial presence with a
        non-negative priority."""
        if session.priority < 0:
            return
        bare = session.jid.bare
        # Every node must see this resource available before the store is
        # read (see the module's docstring); an empty store needs no lock.
        await self.host.sessions.published()
        if await self.host.storage.get(bare, STORE):
            await self._flush(bare, [session])

    async def _flush(self, bare: Any, targets: list[Any]) -> None:
        storage = self.host.storage
        async with self._exclusive(bare):
            queue = await storage.get(bare, STORE)
            if not queue:
                return                       # delivered by whoever held it before us
            for item in queue:
                st = xml_element(item["xml"].encode(), "offline message")
                delay = etree.SubElement(st, f"{{{DELAY}}}delay", nsmap=ns.default(DELAY))
                delay.set("from", self.host.domain)
                delay.set("stamp", item["stamp"])
                for session in targets:
                    session.send(st)
            # Stored only once every message was handed to the stream: a
            # crash before this line delivers them again rather than never.
            await storage.put(bare, STORE, None)
