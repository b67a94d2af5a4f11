"""Federation: streams to and from other XMPP servers (``[server]``).

:class:`Federation` is what the server owns when ``[server] enabled``: the
listener(s) for other servers' streams (:mod:`.incoming`), one
:class:`~vinespy.s2s.outgoing.Route` per pair of domains for ours
(:mod:`.outgoing`), the dialback keys (:mod:`.dialback`), and the sweep that
closes idle streams. The router hands it every stanza for a domain this
server does not serve (:meth:`send`); stanzas from other servers reach the
router from the incoming streams, checked.

In a cluster every node keeps its own outgoing streams (README,
"Federation"): a stanza leaves from the node its sender is on, with no Redis
round trip on the way, and any node takes other servers' incoming streams.
The dialback secret is the same on every node, so a peer's question about a
key one node made may reach any of them.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any, Coroutine

from .. import tls
from ..errors import StanzaError, StartupError
from ..jid import JID, JIDError
from ..xml import Element, parse_stanza, serialize
from . import dialback, peercert
from .incoming import IncomingStream
from .outgoing import Route
from .stream import ServerStream

if TYPE_CHECKING:
    from ..server import Server

log = logging.getLogger("vinespy.s2s")

MAX_CHECKS = 256        # dialback checks running at once, all incoming streams together


class Federation:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.cfg = server.config.server
        self.routes: dict[tuple[str, str], Route] = {}
        self.streams: set[ServerStream] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._secrets: dict[str, bytes] = {}
        self._shared: bytes | None = None             # a cluster's, from Redis
        self._kept_count = 0                          # copies kept in Redis (queued())
        self._checks = 0                              # dialback checks running
        self._contexts: dict[tuple[str, bool], ssl.SSLContext] = {}
        self._server_contexts: dict[str, ssl.SSLContext] = {}
        self._listeners: list[asyncio.Server] = []
        self._sweeper: asyncio.TimerHandle | None = None
        self.default_domain = server.config.domains[0]

    # -- which domains are ours ----------------------------------------
    def serves(self, domain: str) -> bool:
        """A domain this server answers for: a host, or a service or
        component domain of one."""
        router = self.server.router
        return (domain in router.hosts or domain in router.services
                or domain in router.components)

    def host_of(self, domain: str) -> str:
        """The served host a domain of ours belongs to (its certificate and
        key): itself, or the parent of a service or component domain."""
        if domain in self.server.hosts:
            return domain
        parent = domain.split(".", 1)[1] if "." in domain else domain
        return parent if parent in self.server.hosts else self.default_domain

    # -- keys and certificates ------------------------------------------
    def dialback_key(self, originating: str, receiving: str, stream_id: str) -> str:
        host = self.host_of(originating)
        secret = self._shared or self._secrets.get(host)
        if secret is None:
            _, key_file = tls.cert_paths(self.server.config.certs, host)
            secret = self._secrets[host] = dialback.secret(self.cfg.dialback_secret,
                                                           key_file, host)
        return dialback.key(secret, receiving, originating, stream_id)

    def server_context(self, local: str) -> ssl.SSLContext:
        """The TLS server context of our incoming streams for ``local``: it
        asks for the peer's certificate and completes the handshake
        whatever it is, so that the stream can tell afterwards whether it
        proves the peer's domain (SASL EXTERNAL, XEP-0344) or not (dialback)."""
        host = self.host_of(local)
        ctx = self._server_contexts.get(host)
        if ctx is None:
            ctx = self._server_contexts[host] = peercert.server_context(
                *tls.cert_paths(self.server.config.certs, host), cafile=self.cfg.ca_file)
        return ctx

    def client_context(self, local: str, remote: str) -> ssl.SSLContext:
        """The TLS client context of our streams from ``local``: our
        certificate (for the peer's SASL EXTERNAL) and, unless ``remote`` is
        one of ``insecure_domains``, the peer's checked for its domain
        against the system's CAs and ``ca_file`` (RFC 6125 DNS-IDs)."""
        insecure = remote in self.cfg.insecure_domains
        host = self.host_of(local)
        ctx = self._contexts.get((host, insecure))
        if ctx is None:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
            if self.cfg.ca_file is not None:
                ctx.load_verify_locations(cafile=str(self.cfg.ca_file))
            if insecure:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.set_alpn_protocols(["xmpp-server"])          # XEP-0368 §4
            ctx.load_cert_chain(*tls.cert_paths(self.server.config.certs, host))
            self._contexts[(host, insecure)] = ctx
        return ctx

    # -- stanzas out -----------------------------------------------------
    def send(self, stanza: Element, to: JID) -> None:
        """Send ``stanza`` (its 'from' one of our domains) to the server of
        ``to``'s domain, now or once its stream is up."""
        try:
            local = JID.parse(stanza.get("from", "")).domain
        except JIDError:
            return
        if not self.serves(local):
            # Never relay between two other servers (RFC 6120 §13.13).
            self.server.router.bounce(stanza, StanzaError("not-allowed"))
            return
        self.route(local, to.domain).send(stanza)

    # -- what waits, where another node can take it -----------------------
    @property
    def _kept(self) -> str:
        return f"s2s-queue:{self.server.sessions.node}"

    def _kept_ttl(self) -> float:
        assert self.server.cluster is not None
        return self.cfg.connect_timeout + 3 * self.server.cluster.cfg.dead_after + 10

    def queued(self, stanza: Element) -> None:
        """A stanza waits for its stream: in a cluster a copy is kept in
        Redis, so that if this node dies meanwhile the node that cleans up
        after it sends it (:meth:`_node_gone`) instead of it being lost."""
        if self.server.cluster is not None:
            self.server.sessions.keep(self._kept, [serialize(stanza)], self._kept_ttl())
            self._kept_count += 1

    def unqueued(self) -> None:
        """Stanzas left their queue (sent or bounced). The copies are dropped
        when nothing waits any more; while other routes still wait, they are
        rewritten only once the list holds twice what still waits (so that
        streams coming up one after another cost linear work, not
        quadratic). Until then a node's death may send a few stanzas twice:
        at least once, never lost."""
        if self.server.cluster is None:
            return
        waiting = sum(len(route.queue) for route in self.routes.values())
        if not waiting:
            if self._kept_count:
                self.server.sessions.unkeep(self._kept)
            self._kept_count = 0
        elif self._kept_count > 2 * waiting + 16:
            left = [serialize(st) for route in self.routes.values() for st in route.queue]
            self.server.sessions.keep(self._kept, left, self._kept_ttl(), reset=True)
            self._kept_count = len(left)

    def may_check(self) -> bool:
        """Whether one more dialback check (a connection made on a peer's
        say-so) may start now: at most MAX_CHECKS at once, all peers together."""
        if self._checks >= MAX_CHECKS:
            log.warning("s2s: %d dialback checks running: refusing more", self._checks)
            return False
        self._checks += 1
        return True

    def checked(self) -> None:
        self._checks -= 1

    async def _node_gone(self, node: str) -> None:
        """Another node died with stanzas waiting for their s2s streams:
        they are routed here, in order (their senders' errors, if any, go
        nowhere: those sessions went with the node)."""
        items = await self.server.sessions.take_kept(f"s2s-queue:{node}")
        if items:
            log.info("s2s: sending %d stanzas node %s left waiting", len(items), node)
        for data in items:
            try:
                stanza = parse_stanza(data)
            except ValueError:
                continue
            await self.server.router.route(stanza, None)

    def route(self, local: str, remote: str) -> Route:
        route = self.routes.get((local, remote))
        if route is None:
            route = self.routes[(local, remote)] = Route(self, local, remote)
        return route

    async def ask_authoritative(self, local: str, remote: str, stream_id: str,
                                key: str) -> tuple[str, str | None]:
        """XEP-0220 §2.1.2 for a key ``remote`` presented on our stream
        ``stream_id``: asked over our own stream to it."""
        return await self.route(local, remote).verify(stream_id, key)

    # -- the streams -----------------------------------------------------
    def track(self, stream: ServerStream) -> None:
        self.streams.add(stream)
        self.server.links.changed()

    def untrack(self, stream: ServerStream) -> None:
        self.streams.discard(stream)
        self.server.links.changed()

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A task of the federation's own, cancelled at :meth:`stop`."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def status(self) -> list[dict[str, Any]]:
        """Every stream, for ``vinespy status``."""
        return [{"direction": s.direction, "local": s.local, "remote": s.remote,
                 "auth": s.auth or "pending", "peer": f"{s.peer[0]}:{s.peer[1]}"
                 if isinstance(s.peer, tuple) else str(s.peer),
                 "stanzas_in": s.stanzas_in, "stanzas_out": s.stanzas_out}
                for s in sorted(self.streams, key=lambda s: (s.remote, s.direction))]

    # -- life --------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        cluster = self.server.cluster
        if cluster is not None:
            # Restarted before the others saw this node die: what its last
            # process left waiting is this one's to send (before anything of
            # this process's waits under the same name).
            await self._node_gone(cluster.node)
        if cfg.dialback_secret is None and cluster is not None:
            # The nodes' private keys may differ (a certificate per machine):
            # the secret they all make keys with is the one Redis holds.
            from ..cluster.keys import DIALBACK_SECRET
            await cluster.redis.set(DIALBACK_SECRET, secrets.token_hex(32), nx=True)
            self._shared = dialback.secret(
                (await cluster.redis.get(DIALBACK_SECRET)).decode(), Path(), "")
        specs: list[tuple[str, int, ssl.SSLContext | None]] = [("server", cfg.port, None)]
        if cfg.direct_tls_port:
            certs = self.server.config.certs
            specs.append(("server_direct_tls", cfg.direct_tls_port, peercert.sni_context(
                {d: tls.cert_paths(certs, d) for d in self.server.hosts}, self.default_domain,
                cafile=cfg.ca_file)))
        for name, port, ctx in specs:
            try:
                srv = await loop.create_server(
                    lambda direct=ctx is not None: IncomingStream(self, direct),
                    cfg.address, port, ssl=ctx,
                    ssl_handshake_timeout=cfg.connect_timeout if ctx else None,
                    reuse_address=True,
                    reuse_port=self.server.config.client.reuse_port or None)
            except OSError as exc:
                raise StartupError(f"cannot listen on {cfg.address}:{port}: "
                                   f"{exc.strerror or exc}") from None
            self._listeners.append(srv)
            self.server.ports[name] = srv.sockets[0].getsockname()[1]
        self._sweeper = loop.call_later(self._sweep_every, self._sweep)
        if cluster is not None:
            self.server.node_gone.append(self._node_gone)

    @property
    def _sweep_every(self) -> float:
        return min(30.0, self.cfg.idle_timeout / 4)

    def _sweep(self) -> None:
        """Close the streams that carried no stanza for ``idle_timeout`` s."""
        now = asyncio.get_running_loop().time()
        for stream in list(self.streams):
            idle = self.cfg.idle_timeout * stream.idle_factor
            if now - stream.last_active > idle and not stream.closing:
                log.info("s2s: closing %s: idle for %g s", stream.describe(),
                         now - stream.last_active)
                stream.close()
        for key, route in list(self.routes.items()):
            if route.idle:
                del self.routes[key]        # nothing of it left: a peer's say-so is not kept
        self._sweeper = asyncio.get_running_loop().call_later(self._sweep_every, self._sweep)

    async def settle(self, timeout: float) -> None:
        """Wait, at most ``timeout`` s, for the streams being set up (shutdown:
        what the users' going away sends waits for them, before they close)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    def stop_listening(self) -> None:
        for srv in self._listeners:
            srv.close()

    async def stop(self) -> None:
        """After the streams were closed (the server's shutdown): end the
        tasks, answer what still waits, release the listeners."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for route in self.routes.values():
            while route.queue:
                self.server.router.bounce(route.queue.popleft(), StanzaError(
                    "remote-server-timeout", "the server is stopping"))
        for srv in self._listeners:
            await srv.wait_closed()
