"""This node's BOSH sessions (:class:`Bosh`): creating them, handing each
request to its session, and relaying a request for another node's session
there (:class:`Relay`).

A ``sid`` is 192 random bits, then ``.`` and the id of the node holding the
session, so the node a load balancer picked knows where the session is
without asking Redis; it relays the request's body there as a node message
(``bosh-request``), that node handles it as if it had arrived there and
sends the response back (``bosh-answer``). A relay goes only to a node the
cluster has registered (cached for a while), never to a name a client made
up. A request for a session that ended a moment ago gets the body that
ended it (its ``terminate``), then ``item-not-found``.

Unauthenticated sessions cost no file descriptor, so they are capped per
client address (``MAX_UNAUTHENTICATED``) and end at ``[client] auth_timeout``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
from typing import TYPE_CHECKING, Any, Callable

from ..errors import StreamError
from ..stream.parser import StreamParser
from ..xml import Element, escape_attr
from .peer import Client
from .bosh import _SID, MAX_HOLD, MAX_RID, BadRequest, BoshStream, parse_body, terminate, _int

if TYPE_CHECKING:
    from ..config import HttpConfig
    from ..server import Server

log = logging.getLogger("vinespy.bosh")

RELAY_MARGIN = 10.0              # s a relayed request may take beyond its wait
NODE_KNOWN_FOR = 10.0            # s a node seen registered is relayed to without asking
MAX_UNAUTHENTICATED = 100        # BOSH sessions not yet authenticated, per client address
# A sid made here: 32 characters of token_urlsafe(24), then "." and a node id.
_SID_SHAPE = re.compile(r"[A-Za-z0-9_-]{32}(?:\.([A-Za-z0-9._-]{1,100}))?")


class Bosh:
    """This node's BOSH sessions, and the requests relayed to other nodes."""

    def __init__(self, server: Server, cfg: HttpConfig) -> None:
        self.server = server
        self.cfg = cfg
        self.sessions: dict[str, BoshStream] = {}
        # One parser for every request's body, reused (parse_body is synchronous).
        self._parser = StreamParser(max_stanza_size=server.config.client.max_stanza_size)
        # Sessions that ended: sid -> (the body that ended them, until when
        # their client may still ask for it).
        self.ended: dict[str, tuple[bytes, float]] = {}
        self.unauthenticated: dict[str, int] = {}     # client address -> sessions
        self.stopping = False           # no new sessions (HttpListener.stopping)
        # Where a client that must encrypt is sent (HttpListener.tls_url).
        self.tls_url: Callable[[Client, str], str | None] = lambda client, path: None
        self.node = server.config.cluster.node if server.config.cluster is not None else ""
        self.relay = Relay(self) if server.config.cluster is not None else None

    def stop(self) -> None:
        for stream in list(self.sessions.values()):
            stream.abort()

    async def request(self, data: bytes, client: Client) -> tuple[int, bytes]:
        """One HTTP request's body → (HTTP status, response body)."""
        try:
            attrs, payload = parse_body(data, self._parser.max_stanza_size, self._parser)
            sid = attrs.get("sid")
            rid = _int(attrs, "rid")
            if rid > MAX_RID:
                raise BadRequest("'rid' too large")
        except BadRequest as exc:
            log.info("bad BOSH request from %s: %s", client.peer, exc)
            found = _SID.search(data)
            stream = self.sessions.get(found.group(1).decode()) if found else None
            if stream is not None:
                stream._fail("bad-request", str(exc))
            return 400, terminate("bad-request")
        if sid is None:
            return 200, await self._create(attrs, payload, rid, client)
        stream = self.sessions.get(sid)
        if stream is not None:
            if stream.secure and not client.secure:
                # XEP-0124 §15: a secure session's request over an insecure
                # connection is refused, the session goes on.
                return 403, terminate("bad-request")
            try:
                return 200, await stream.request(rid, attrs, payload, len(data))
            except StreamError as exc:
                stream.close(exc)
                return 200, stream._terminal or terminate("remote-stream-error")
        gone = self.ended.get(sid)
        if gone is not None:
            return 200, gone[0]
        shape = _SID_SHAPE.fullmatch(sid)
        node = shape.group(1) if shape is not None else None
        if node and node != self.node and self.relay is not None \
                and await self.relay.known(node):
            return await self.relay.ask(node, data, client)
        return 200, terminate("item-not-found")

    async def _create(self, attrs: dict[str, str], payload: list[Element], rid: int,
                      client: Client) -> bytes:
        """XEP-0124 §7.1: a new session."""
        if self.stopping:
            return terminate("system-shutdown")
        if not attrs.get("to"):         # §17.2: missing, "or the attribute has no value"
            return terminate("improper-addressing")
        if attrs.get("to", "").lower() not in self.server.hosts:
            return terminate("host-unknown")
        if not client.secure and self.server.config.client.tls == "required":
            uri = self.tls_url(client, self.cfg.bosh_path)
            if uri is not None:         # §17.2: "accepts only SSL or TLS connections"
                return terminate("see-other-uri",
                                 f"<uri>{escape_attr(uri)}</uri>".encode())
        address = client.peer[0]
        if self.unauthenticated.get(address, 0) >= MAX_UNAUTHENTICATED:
            log.warning("BOSH: %s has %d sessions not yet authenticated; refusing more",
                        address, MAX_UNAUTHENTICATED)
            return terminate("policy-violation")
        try:
            wait = float(min(_int(attrs, "wait", 60), self.cfg.bosh_max_wait))
            hold = min(_int(attrs, "hold", 1), MAX_HOLD)
        except BadRequest:
            return terminate("bad-request")
        sid = secrets.token_urlsafe(24) + (f".{self.node}" if self.node else "")
        stream = BoshStream(self, sid, client, rid, wait, hold, attrs)
        self.sessions[sid] = stream
        self.server.streams.add(stream)
        self.unauthenticated[address] = self.unauthenticated.get(address, 0) + 1
        log.info("BOSH session %s from %s (wait %g, hold %d)", sid, client.peer, wait, hold)
        return await stream.start(attrs, rid)

    def authenticated(self, stream: BoshStream) -> None:
        """``stream`` authenticated (or ended before): it no longer counts
        against its address."""
        address = stream.peer[0]
        left = self.unauthenticated.get(address, 0) - 1
        if left > 0:
            self.unauthenticated[address] = left
        else:
            self.unauthenticated.pop(address, None)

    def finished(self, stream: BoshStream, terminal: bytes | None) -> None:
        """``stream`` ended; ``terminal``: the body that ended it, which no
        response carried yet, so its client gets it for a while."""
        self.sessions.pop(stream.sid, None)
        now = time.monotonic()
        for sid in [s for s, (_, until) in self.ended.items() if until <= now]:
            del self.ended[sid]
        if terminal is not None:
            self.ended[stream.sid] = (terminal, now + stream.inactivity)


class Relay:
    """A request for a session of another node goes there through the
    cluster (``bosh-request``), and its response comes back (``bosh-answer``)."""

    def __init__(self, bosh: Bosh) -> None:
        self.bosh = bosh
        self.waiting: dict[str, asyncio.Future[tuple[int, bytes]]] = {}
        self._known: dict[str, float] = {}      # registered node -> until when believed
        server = bosh.server
        server.node_messages["bosh-request"] = self.serve
        server.node_messages["bosh-answer"] = self.answered
        server.node_messages["bosh-request!unreached"] = self.unreached

    async def known(self, node: str) -> bool:
        """Whether ``node`` is a registered node of the cluster (asked of
        Redis at most every NODE_KNOWN_FOR s per node; a name no node has
        is asked each time, and never kept)."""
        now = time.monotonic()
        if self._known.get(node, 0.0) > now:
            return True
        from ..cluster.keys import NODES
        from ..cluster.publisher import REDIS_ERRORS
        redis = getattr(self.bosh.server.sessions, "redis", None)
        if redis is None:
            return False
        try:
            found = bool(await redis.hexists(NODES, node))
        except REDIS_ERRORS:
            found = True                # Redis is away: the relay finds out
        if found:
            self._known = {n: t for n, t in self._known.items() if t > now}
            self._known[node] = now + NODE_KNOWN_FOR
        return found

    async def ask(self, node: str, data: bytes, client: Client) -> tuple[int, bytes]:
        rid = secrets.token_hex(8)
        fut: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self.waiting[rid] = fut
        head = {"id": rid, "node": self.bosh.node, "peer": list(client.peer),
                "secure": client.secure, "scheme": client.scheme, "origin": client.origin,
                "host": client.host}
        self.bosh.server.sessions.tell(node, "", "bosh-request",
                                       json.dumps(head).encode() + b"\n" + data)
        started = time.monotonic()
        try:
            return await asyncio.wait_for(fut, self.bosh.cfg.bosh_max_wait + RELAY_MARGIN)
        except asyncio.TimeoutError:
            log.info("BOSH request relayed to %s: no answer in %.0f s", node,
                     time.monotonic() - started)
            return 200, terminate("item-not-found")
        finally:
            self.waiting.pop(rid, None)

    async def serve(self, payload: bytes) -> None:
        """Another node's client request for a session of ours."""
        raw, _, data = payload.partition(b"\n")
        head = json.loads(raw)
        client = Client((str(head["peer"][0]), int(head["peer"][1])), bool(head["secure"]),
                        str(head["scheme"]), str(head["origin"]), str(head.get("host", "")))
        self.bosh.server.later(self._serve(head, data, client))

    async def _serve(self, head: dict[str, Any], data: bytes, client: Client) -> None:
        status, body = await self.bosh.request(data, client)
        await self._reply(head, status, body)

    async def unreached(self, payload: bytes) -> None:
        """A request relayed to a node that left (or died) before reading it:
        its sessions are gone with it (``item-not-found``), told to the
        asking node now rather than after its timeout. Runs on the asking
        node (the node was not registered) or on the one that cleaned up
        after the dead node."""
        head = json.loads(payload.partition(b"\n")[0])
        await self._reply(head, 200, terminate("item-not-found"))

    async def _reply(self, head: dict[str, Any], status: int, body: bytes) -> None:
        answer = json.dumps({"id": head["id"], "status": status}).encode() + b"\n" + body
        if head["node"] == self.bosh.node:
            await self.answered(answer)
        else:
            self.bosh.server.sessions.tell(str(head["node"]), "", "bosh-answer", answer)

    async def answered(self, payload: bytes) -> None:
        raw, _, body = payload.partition(b"\n")
        head = json.loads(raw)
        fut = self.waiting.get(str(head["id"]))
        if fut is not None and not fut.done():
            fut.set_result((int(head["status"]), body))
