"""XEP-0160: messages for a user with no available resource are stored and
delivered, stamped with XEP-0203 ``<delay/>``, at their next initial presence
with a non-negative priority (RFC 6121 §8.5.2.2.1).

Only chat and normal messages that carry content a person reads (a body or
a subject) are stored; a chat-state notification for someone offline is
dropped without an error. Over ``max_messages`` the sender gets
``<service-unavailable/>``, as the RFC allows.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any

from lxml import etree

from .. import ns
from ..events import StanzaEvent
from ..storage import xml_bytes, xml_element
from . import Module, Option, hook

STORE = "offline"
DELAY = "urn:xmpp:delay"
_CONTENT = (f"{{{ns.CLIENT}}}body", f"{{{ns.CLIENT}}}subject")


class Offline(Module):
    name = "offline"
    xep = "XEP-0160"
    features = ("msgoffline",)
    options = {"max_messages": Option(int, default=100, min=1, max=10000)}
    depends = ("presence",)

    def __init__(self, host: Any) -> None:
        super().__init__(host)
        self.max_messages = self.option("max_messages")
        self._locks: dict[Any, asyncio.Lock] = {}

    def _lock(self, bare: Any) -> asyncio.Lock:
        lock = self._locks.get(bare)
        if lock is None:
            lock = self._locks[bare] = asyncio.Lock()
        return lock

    @hook("message/offline")
    async def store(self, ev: StanzaEvent) -> bool | None:
        st = ev.stanza
        if not any(st.find(tag) is not None for tag in _CONTENT):
            return True                      # nothing a person would read: drop
        storage = self.host.storage
        if await storage.find_user(ev.to) is None:
            return None                      # no such user: the router says so
        async with self._lock(ev.to):
            queue = await storage.get(ev.to, STORE) or []
            if len(queue) >= self.max_messages:
                return None                  # -> service-unavailable to the sender
            stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            queue.append({"stamp": stamp, "xml": xml_bytes(st).decode()})
            await storage.put(ev.to, STORE, queue)
        return True

    @hook("initial-presence")
    async def deliver(self, session: Any) -> None:
        """RFC 6121 §8.5.2.2.1 / XEP-0160: flush at initial presence with a
        non-negative priority."""
        if session.priority < 0:
            return
        bare = session.jid.bare
        storage = self.host.storage
        async with self._lock(bare):
            queue = await storage.get(bare, STORE)
            if not queue:
                return
            for item in queue:
                st = xml_element(item["xml"].encode(), "offline message")
                delay = etree.SubElement(st, f"{{{DELAY}}}delay", nsmap=ns.default(DELAY))
                delay.set("from", self.host.domain)
                delay.set("stamp", item["stamp"])
                session.send(st)
            # Stored only once every message was handed to the stream: a
            # crash before this line delivers them again rather than never.
            await storage.put(bare, STORE, None)
        self._locks.pop(bare, None)
