"""What other nodes send this node, and stanzas nobody here can take.

:class:`Inbound` handles the items the subscriber reads from this node's
inbox and from ``cluster:events`` (stanzas for local resources, routing
invalidations, user changes, close requests), and stanzas for resources that
are not (or no longer) bound: those of a dead node's inbox and those the
publisher could not hand to a node that is gone. Those go to the router's
``absent`` (offline storage, error replies) with a hop count, so that a
stanza bounced between nodes ends after MAX_HOPS.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Coroutine

from ..errors import StreamError
from ..jid import JID, JIDError
from . import wire
from .publisher import HOPS

if TYPE_CHECKING:
    from ..server import Server
    from .sessions import ClusterSessions

log = logging.getLogger("vinespy.cluster")

MAX_HOPS = 3


class Inbound:
    def __init__(self, server: Server, sessions: ClusterSessions,
                 job: Callable[[Coroutine[Any, Any, None]], None]) -> None:
        self.server = server
        self.sessions = sessions
        self._job = job
        # Stanzas to re-route, in the order they were given up: one task
        # drains them, so a user's re-routed messages keep their order (in
        # offline storage, say) however many batches came back at once.
        self._backlog: deque[list[bytes]] = deque()
        self._draining = False

    async def item(self, kind: bytes, args: list[str], data: bytes) -> None:
        """One item another node sent (the subscriber's callback)."""
        if kind == wire.STANZA:
            target = JID.parse(args[0])
            session = self.sessions.local(target) or self.sessions.forwarding(target)
            if session is not None:
                # Parsed to check it (a broken entry must not break the
                # client's stream), written as it came (no re-serializing)
                # unless a deliver-<kind> handler wants the element.
                session.send_serialized(wire.parse_stanza(data), data)
                return
            await self._absent(target, int(args[1]), data)
        elif kind == wire.MESSAGE:
            if not args[0]:             # to the node itself (Server.node_messages)
                handler = self.server.node_messages.get(args[1])
                if handler is not None:
                    await handler(data)
                return
            host = self.server.router.hosts.get(args[0])
            if host is not None:
                await host.bus.fire(f"cluster/{args[1]}", data)
        elif kind == wire.INVALIDATE:
            self.sessions.invalidate(JID.parse(args[0]))
        elif kind == wire.USER:
            bare = JID.parse(args[0])
            host = self.server.router.hosts.get(bare.domain)
            if host is not None:
                await host.bus.fire("user-changed", bare)
        elif kind == wire.CLOSE:
            session = self.sessions.local(JID.parse(args[0]))
            if session is not None and getattr(session, "id", None) == args[1]:
                condition = args[2] or "conflict"
                session.close(StreamError(condition, "replaced by a new session")
                              if condition == "conflict" else StreamError(condition))

    def undeliverable(self, items: list[bytes]) -> None:
        """Items that cannot reach the node they were for (the publisher's
        callback, and a dead node's cleanup): re-routed in this order."""
        if not items:
            return
        self._backlog.append(items)
        if not self._draining:
            self._draining = True
            self._job(self._drain())

    async def settle(self) -> None:
        """Re-route what waits now, in the caller's task (a leaving node,
        whose jobs are about to be cancelled)."""
        while self._backlog:
            await self.absent_items(self._backlog.popleft())

    async def _drain(self) -> None:
        try:
            while self._backlog:
                await self.absent_items(self._backlog.popleft())
        finally:
            self._draining = False

    async def absent_items(self, items: list[bytes]) -> None:
        """Each item on its own: one that fails costs only itself."""
        for item in items:
            try:
                kind, args, data = wire.parse_item(item)
                if kind == wire.STANZA:
                    await self._absent(JID.parse(args[0]), int(args[1]), data)
                elif kind == wire.MESSAGE and not args[0]:
                    await self._unreached(args[1], data)
            except (wire.WireError, JIDError) as exc:
                log.warning("cluster: skipping an undeliverable item: %s", exc)
            except Exception:
                log.exception("cluster: an undeliverable item failed")

    async def _unreached(self, name: str, data: bytes) -> None:
        """A message to a node that left before reading it: the handler
        ``<name>!unreached`` of Server.node_messages, if any, takes it (a
        relayed BOSH request is answered, rather than waited for in vain)."""
        handler = self.server.node_messages.get(f"{name}!unreached")
        if handler is not None:
            await handler(data)

    async def _absent(self, target: JID, hops: int, data: bytes) -> None:
        """A stanza for ``target``, which is not (or no longer) bound here."""
        el = wire.parse_stanza(data)
        token = HOPS.set(hops + 1)
        try:
            await self.server.router.absent(el, target, final=hops + 1 >= MAX_HOPS)
        finally:
            HOPS.reset(token)
