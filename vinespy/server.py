"""The server: listeners, hosts, one TaskGroup, clean shutdown.

``Server(config)`` builds everything that can fail (storage, TLS contexts,
modules) before a single port is opened, so a bad setup never half-starts.
``await Server.serve(shutdown_trigger)`` runs until the trigger returns;
``run(config)`` is the blocking entry point with signal handlers.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import resource
import signal
import ssl
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Coroutine

from . import __version__, modules, tls
from .config import Config, ConfigError, HostConfig
from .duty import Duty, Job, LocalDuty
from .errors import StartupError as StartupError, StreamError
from .host import Host
from .jid import JID
from .router import Router
from .sessions import Sessions
from .storage import Storage, StorageError, open_storage
from .storage import pubsub
from .process.links import LinksFile
from .storage.archive import archive_for
from .stream.base import Framing
from .stream.client import ClientStream
from .stream.component import ComponentStream, route_jid
from .stream.parser import IdleRelease
from .stream.throttle import AuthThrottle

if TYPE_CHECKING:
    from .s2s import Federation
    from .auth.ldap import LdapDirectory
    from .cluster import Cluster
    from .http.app import HttpListener

log = logging.getLogger("vinespy.server")

SHUTDOWN_GRACE = 3.0   # s to wait for clients to close their streams
# s: the parser of a TCP stream that was sent nothing for one to two of
# these lets go of what libxml2 holds for it (8.6 KiB; StreamParser.release)
# and opens it again (8 µs) when the client next sends something.
PARSER_IDLE = 1.0


class Server:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.cluster: Cluster | None = None
        self.sessions: Sessions = Sessions()
        if config.cluster is not None:
            # Only a cluster node imports redis-py.
            from . import cluster
            self.cluster = cluster.Cluster(config.cluster, self)
            self.sessions = self.cluster.sessions
        self.router = Router(self.sessions)
        self.federation: Federation | None = None       # [server] enabled: s2s
        # s2s streams and components, for `vinespy status` (process/links.py)
        self.links = LinksFile(config.path, self._links)
        self.tls: dict[str, ssl.SSLContext] = tls.contexts(config)
        self.hosts: dict[str, Host] = {}
        self.storages: list[Storage] = []
        self.directories: list[LdapDirectory] = []      # [host.auth] backend = "ldap"
        self.ports: dict[str, int] = {}
        self.streams: set[Framing] = set()      # client, server and component streams
        self.idle_parsers = IdleRelease()               # ClientStream parsers
        self._idle_timer: asyncio.TimerHandle | None = None
        cc = config.client
        self.auth_throttle = AuthThrottle(ban_failures=cc.auth_ban_failures,
                                          ban_time=cc.auth_ban_time,
                                          delay_max=cc.auth_delay_max)
        self._conn_tasks: set[asyncio.Task[Any]] = set()
        self._listeners: list[asyncio.Server] = []
        self.http: HttpListener | None = None          # [http]: WebSocket, BOSH, the page
        # Handlers of messages other nodes send to this node itself rather
        # than to a host's modules (a relayed BOSH request): name -> handler;
        # "<name>!unreached" gets such a message that found its node gone.
        self.node_messages: dict[str, Callable[[bytes], Awaitable[None]]] = {}
        # Called with a node's id once this node has cleaned up after it (it
        # died): what it kept in Redis for such a case is taken over here.
        self.node_gone: list[Callable[[str], Awaitable[None]]] = []
        # Periodic jobs one process of the deployment runs at a time (duty()).
        self.duties: dict[str, Duty] = {}
        self._duties_state = "waiting"                 # -> "running" -> "stopped"
        for hc in config.hosts:
            try:
                storage = open_storage(hc.storage.backend, hc.storage.options)
            except (StorageError, TypeError) as exc:
                raise ConfigError(f"{config.path}: storage for {hc.domains[0]}: {exc}") from None
            self.storages.append(storage)
            directory = self._directory(hc) if hc.auth.backend == "ldap" else None
            if directory is not None:
                from .auth.ldap import DirectoryStorage
                storage = DirectoryStorage(storage, directory)
            if self.cluster is not None:
                from .cluster.notifying_storage import NotifyingStorage
                storage = NotifyingStorage(storage, self._user_changed)
            for domain in hc.domains:
                host = Host(domain, hc, storage, self.router)
                host.server = self
                host.directory = directory
                try:
                    modules.load(host, hc.modules)
                except ValueError as exc:
                    raise ConfigError(f"{config.path}: modules of {domain}: {exc}") from None
                self.hosts[domain] = host
                self.router.add_host(host)
                if "mam" in host.modules:
                    host.archive = archive_for(config, hc, self.storages[-1])
                # Vines: pubsub "games" -> games.DOMAIN, served by this host's
                # modules; XEP-0163 PEP keeps its nodes in the same store
                # (services named by bare JIDs never meet service domains).
                if hc.pubsub or "pep" in host.modules:
                    host.pubsub_store = pubsub.store_for(config, hc, self.storages[-1])
                for label in hc.pubsub:
                    self.router.add_service(f"{label}.{domain}", host)
        # XEP-0114: components = { tea = "secr3t" } -> tea.DOMAIN, routed to
        # the component while it is connected (listener or not: a component
        # that cannot connect is one that is not connected).
        self.component_secrets: dict[str, str] = config.component_secrets()
        for domain in self.component_secrets:
            self.router.add_component(domain, route_jid(domain))

        if config.server.enabled:
            from . import s2s                        # dnspython: only with s2s on
            self.federation = s2s.Federation(self)
            self.router.remote = self.federation.send

    def _links(self) -> dict[str, Any]:
        components = [{"domain": s.domain, "peer": f"{s.peer[0]}:{s.peer[1]}"}
                      for s in self.streams
                      if isinstance(s, ComponentStream) and s.session is not None]
        return {"s2s": self.federation.status() if self.federation is not None else [],
                "components": sorted(components, key=lambda c: c["domain"])}

    def _directory(self, hc: HostConfig) -> LdapDirectory:
        # Only a host on LDAP imports ldap3.
        from .auth.ldap import LdapDirectory
        try:
            directory = LdapDirectory(hc.auth)
        except StorageError as exc:
            raise ConfigError(f"{self.config.path}: auth for {hc.domains[0]}: {exc}") from None
        self.directories.append(directory)
        return directory

    async def _user_changed(self, bare: JID) -> None:
        if self.cluster is not None and self.cluster.publisher is not None:
            await self.cluster.publisher.user_changed(bare)

    def duty(self, name: str, interval: float, job: Job, *, ttl: float | None = None) -> Duty:
        """A job to run every ``interval`` s on one process of the whole
        deployment at a time (vinespy/duty.py): this one when standalone,
        the holder of its Redis lease (``ttl``, default ``[cluster]
        dead_after``) in a cluster. ``name`` is the same on every node and
        unique (a host's module adds its domain). Started with the server's
        tasks (at once if they run), stopped before the cluster leaves."""
        if name in self.duties:
            raise ValueError(f"a duty named {name!r} is already registered")
        duty: Duty
        if self.cluster is not None:
            from .cluster.duty import ClusterDuty
            from .cluster.status import hide_passwords
            cluster, cfg = self.cluster, self.cluster.cfg
            duty = ClusterDuty(name, interval, job, lambda: cluster.redis,
                               ttl=cfg.dead_after if ttl is None else ttl, node=cfg.node,
                               hide=lambda text: hide_passwords(text, cfg))
        else:
            duty = LocalDuty(name, interval, job)
        self.duties[name] = duty
        if self._duties_state == "running":
            duty.start()
        elif self._duties_state == "stopped":
            log.warning("duty %s registered after shutdown: not started", name)
        return duty

    async def _stop_duties(self) -> None:
        """End every duty's run and give their leases up (while Redis is
        still connected, so other nodes take them over at once)."""
        self._duties_state = "stopped"
        results = await asyncio.gather(*(d.stop() for d in self.duties.values()),
                                       return_exceptions=True)
        for duty, res in zip(self.duties.values(), results):
            if isinstance(res, Exception):
                log.error("duty %s failed to stop", duty.name, exc_info=res)

    async def serve(self, shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
                    ready: Callable[[], None] | None = None) -> None:
        """Listen, serve until ``shutdown_trigger()`` returns, then close
        every stream with ``</stream:stream>`` and release everything."""
        try:
            for storage in self.storages:
                await storage.open()    # StorageError: one line, no listener opened
            for directory in self.directories:
                await directory.open()  # DirectoryUnavailable (a StorageError): the same
            if self.cluster is not None:
                await self.cluster.check()  # no Sentinel answers: ConfigError, the same
        except BaseException:
            for storage in self.storages:
                await storage.close()
            for directory in self.directories:
                await directory.close()
            raise
        for host in self.hosts.values():
            for mod in host.modules.values():
                await mod.start()
            host.bus.freeze()
        stop = asyncio.ensure_future(
            shutdown_trigger() if shutdown_trigger is not None else asyncio.Event().wait())
        try:
            if self.cluster is not None:
                # Registered (and the previous incarnation's leftovers
                # removed) before the first client can bind; a stop request
                # meanwhile is honoured.
                start = asyncio.ensure_future(self.cluster.start())
                await asyncio.wait((start, stop), return_when=asyncio.FIRST_COMPLETED)
                if not start.done():
                    start.cancel()
                    await asyncio.gather(start, return_exceptions=True)
                    return
                start.result()
            await self._listen()
            self._release_idle_parsers()
            log.info("vinespy %s listening on %s for %s", __version__,
                     ", ".join(f"{self._address(k)}:{p} ({k})" for k, p in self.ports.items()),
                     ", ".join(self.hosts))
            if ready is not None:
                ready()
            async with asyncio.TaskGroup() as self.tasks:
                if self.cluster is not None:
                    self.cluster.spawn(self.tasks)
                self._duties_state = "running"
                for duty in self.duties.values():
                    duty.start()
                try:
                    await stop
                finally:
                    await self._stop_duties()
                    # While the cluster's tasks still run: the streams'
                    # unavailable presence reaches the other nodes, then
                    # the node leaves the cluster and its tasks end.
                    await self._close_streams()
                    if self.cluster is not None:
                        await self.cluster.stop()
        finally:
            stop.cancel()
            if self._idle_timer is not None:
                self._idle_timer.cancel()
            await self._shutdown()

    def _release_idle_parsers(self) -> None:
        self.idle_parsers.tick()
        self._idle_timer = asyncio.get_running_loop().call_later(
            PARSER_IDLE, self._release_idle_parsers)

    def _address(self, listener: str) -> str:
        http = self.config.http
        if listener in ("http", "https") and http is not None:
            return http.address
        if listener.startswith("server"):
            return self.config.server.address
        if listener == "component":
            return self.config.component.address
        return self.config.client.address

    async def _listen(self) -> None:
        cfg = self.config.client
        specs: list[tuple[str, int, ssl.SSLContext | None]] = [("client", cfg.port, None)]
        if cfg.direct_tls_port:
            # XEP-0368: TLS from the first byte, the certificate chosen by SNI.
            specs.append(("direct_tls", cfg.direct_tls_port,
                          tls.sni_context(self.tls, next(iter(self.hosts)))))
        for name, port, ctx in specs:
            try:
                srv = await asyncio.get_running_loop().create_server(
                    self._accept, cfg.address, port, ssl=ctx,
                    ssl_handshake_timeout=cfg.auth_timeout if ctx else None,
                    reuse_address=True, reuse_port=getattr(cfg, "reuse_port", False) or None)
            except OSError as exc:
                raise StartupError(f"cannot listen on {cfg.address}:{port}: "
                                   f"{exc.strerror or exc}") from None
            self._listeners.append(srv)
            self.ports[name] = srv.sockets[0].getsockname()[1]
        await self._listen_components()
        if self.federation is not None:
            await self.federation.start()
        if self.config.http is not None:
            from .http.app import HttpListener      # aiohttp: only with an [http] table
            self.http = HttpListener(self, self.config.http)
            await self.http.start()

    async def _listen_components(self) -> None:
        """XEP-0114: the [component] listener, when a [[host]] declares
        components and ``enabled`` is not false (no component, no port)."""
        cfg = self.config.component
        if not self.component_secrets:
            return
        if not cfg.enabled:
            log.warning("components are declared but [component] enabled = false: "
                        "none can connect (%s)", ", ".join(self.component_secrets))
            return
        try:
            srv = await asyncio.get_running_loop().create_server(
                lambda: ComponentStream(self), cfg.address, cfg.port, reuse_address=True,
                reuse_port=self.config.client.reuse_port or None)
        except OSError as exc:
            raise StartupError(f"cannot listen on {cfg.address}:{cfg.port} (component): "
                               f"{exc.strerror or exc}") from None
        self._listeners.append(srv)
        self.ports["component"] = srv.sockets[0].getsockname()[1]

    def _accept(self) -> ClientStream:
        """A new client connection's protocol (it asks :meth:`carry` to run it)."""
        return ClientStream(self)

    async def carry(self, stream: Framing) -> None:
        """Run ``stream`` (a TCP connection's, a WebSocket's, a component's) in this task,
        which shutdown waits for, then cancels."""
        task = asyncio.current_task()
        assert task is not None
        self.streams.add(stream)
        self._conn_tasks.add(task)
        try:
            await stream.run()
        finally:
            self.streams.discard(stream)
            self._conn_tasks.discard(task)

    def later(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` as a task the server owns: awaited, then cancelled,
        at shutdown like a connection's (a held session's unbinding...)."""
        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("background work of the server failed")
        task = asyncio.create_task(run())
        self._conn_tasks.add(task)
        task.add_done_callback(self._conn_tasks.discard)

    async def _close_streams(self) -> None:
        for srv in self._listeners:
            srv.close()
        if self.federation is not None:
            self.federation.stop_listening()
        if self.http is not None:
            self.http.stopping = True
        # RFC 6120 §4.4: tell every client, then give them a moment to close.
        # Streams to and from other servers stay up meanwhile and close
        # after: what the users' going away sends there (RFC 6121 §4.5.2,
        # §4.6.3: unavailable presence to contacts and directed-presence
        # JIDs of other servers) still leaves on them; closed at once, it
        # was queued for a new stream that shutdown then cancelled.
        fed = self.federation.streams if self.federation is not None else set()
        await self._close(lambda s: s not in fed, notify=True)
        if self.federation is not None:
            await self.federation.settle(SHUTDOWN_GRACE)
        await self._close(lambda s: True)
        for task in self._conn_tasks:
            log.warning("connection task %s did not end; cancelling it", task.get_name())
            task.cancel()

    async def _close(self, which: Callable[[Framing], bool], *, notify: bool = False) -> None:
        """Close the streams ``which`` picks (system-shutdown) and wait for
        the tasks of all but those it leaves open, for at most twice
        SHUTDOWN_GRACE."""
        for stream in [s for s in self.streams if which(s)]:
            stream.close(StreamError("system-shutdown"), wait_for_peer=True)
        if notify:
            # Sessions kept without a connection (XEP-0198) end too.
            for host in self.hosts.values():
                await host.bus.notify("server-stopping")

        def tasks() -> set[asyncio.Task[Any]]:
            open_ = {getattr(s, "_task", None) for s in self.streams if not which(s)}
            return {t for t in self._conn_tasks if t not in open_}
        if tasks():
            await asyncio.wait(tasks(), timeout=SHUTDOWN_GRACE)
        # Peers that did not close in time: drop the connection, which ends
        # their stream's task normally (a handler it waits for finishes).
        for stream in [s for s in self.streams if which(s)]:
            stream.abort()
        if tasks():
            await asyncio.wait(tasks(), timeout=SHUTDOWN_GRACE)

    async def _shutdown(self) -> None:
        await self._close_streams()
        if self.http is not None:
            await self.http.stop()
        if self.federation is not None:
            await self.federation.stop()
        for host in self.hosts.values():
            for mod in reversed(list(host.modules.values())):
                try:
                    await mod.stop()
                except Exception:
                    log.exception("module %s failed to stop", mod.name)
            if host.pubsub_store is not None:
                await host.pubsub_store.close()
        for storage in self.storages:
            await storage.close()
        for directory in self.directories:
            await directory.close()
        for srv in self._listeners:
            await srv.wait_closed()
        self.links.remove()
        log.info("vinespy stopped")


def run(config: Config, ready: Callable[[], None] | None = None) -> int:
    """Serve in the foreground until SIGTERM or SIGINT; return the exit code.

    Raises :class:`ConfigError` (incl. :class:`StartupError`) with one line
    when the server cannot start.
    """
    async def main() -> None:
        server = Server(config)
        _raise_fd_limit()
        # Startup objects (config, modules, JID caches...) live forever: keep
        # the cyclic GC from rescanning them on every full collection.
        gc.collect()
        gc.freeze()
        # With the default thresholds (700, 10, 10), logging in 5,000 sessions
        # triggered 7 full collections of up to 186 ms (bench msg+idle, gc
        # callbacks): stop-the-world pauses that set the p99 latency. Stanza
        # garbage is freed by reference counting; collections are for the
        # rare cycles, so collect the young generation less often: 1 full
        # collection of 4.6 ms, the longest pause 8.9 ms, GC time 153 ms
        # instead of 644 ms over the same run.
        gc.set_threshold(20_000, 50, 100)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await server.serve(stop.wait, ready)

    _compat_stdlib_tls_buffer()
    try:
        if os.environ.get("VINESPY_LOOP") == "asyncio":
            raise ImportError("the standard loop was asked for")
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
    return 0


def _compat_stdlib_tls_buffer() -> None:
    """COMPAT: the standard loop's TLS layer (asyncio.sslproto, 3.11+) zero-fills
    a 256 KiB read buffer per connection: 300 KB of RSS per idle TLS session
    (bench/c2s.py). A TLS record carries at most 16 KiB of plaintext, so a
    buffer of that size loses nothing. uvloop, the default loop, allocates its
    buffer lazily and is not affected."""
    import asyncio.sslproto as sslproto
    if getattr(sslproto.SSLProtocol, "max_size", 0) > 16384:
        sslproto.SSLProtocol.max_size = 16384


def _raise_fd_limit() -> None:
    """Every client holds a file descriptor: use the hard limit, not the
    (often 1,024) soft one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d: %s", soft, exc)
            return
    log.debug("open-file limit %d", max(soft, hard))
