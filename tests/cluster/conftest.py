"""Fixtures for the cluster suite: a real redis-server, real ``vinespy start``
processes sharing one site, real slixmpp clients.

* ``redis``: a throw-away ``redis-server`` (no persistence) on a free port,
  with ``restart()`` (data lost) and ``kill_clients(...)`` (CLIENT KILL).
* ``site``: what the nodes share besides Redis: certificates from the test
  CA and the storage holding the users of ``USERS`` (password ``PASSWORD``):
  ``data/`` (fs) or, for the modules in ``BOTH_STORAGES``, also a database
  of the session's real PostgreSQL (``backend = "sql"``), each test run
  once with each (``site_kind``).
* ``cluster``: ``await cluster(n=2, ...)`` starts ``n`` nodes
  (``python -m vinespy start -c NODE/config.toml``) that differ only in their
  client address and port (and ``[http]`` port, with ``http={...}``) and
  ``[cluster] node``; they share Redis,
  certificates and storage. On PostgreSQL each node listens on its own
  loopback address (127.0.0.2, .3, ...: stand-ins for machines) and has
  nothing on disk in common with the others.
* ``xmpp``: ``await xmpp.login(node, "alice/r1", priority=5)`` logs a
  slixmpp client in to one node; what it receives is collected in ``Inbox``es.

Every wait has a timeout; nothing sleeps to let something happen. State that
lives only in Redis (routes) is polled with a bounded ``eventually``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import ssl
import sys
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

import pytest
import redis.asyncio as aioredis
import slixmpp
import trustme

from tests.conftest import DOMAIN, PASSWORD, TIMEOUT, free_port
from tests.pgproc import PASSWORD as PG_PASSWORD
from tests.redisproc import RedisProcess
from tests.sentinelproc import SERVICE, SentinelSet
from vinespy import accounts
from vinespy.jid import JID
from vinespy.storage import Contact, Storage, open_storage

ROOT = Path(__file__).resolve().parents[2]
USERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy")
NODE_NAMES = tuple(f"node-{c}" for c in "abcdefgh")
DELAY = "{urn:xmpp:delay}delay"
# The suites that run once on a shared fs directory and once on PostgreSQL.
BOTH_STORAGES = ("test_cluster", "test_cluster_races", "test_cluster_rules",
                 "test_pubsub_cluster", "test_mam_cluster")
START_TIMEOUT = 20.0        # s for a node to print "listening on"
STOP_TIMEOUT = 10.0         # s for a node to exit after SIGTERM


def env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)}


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = TIMEOUT,
                     what: str = "condition", every: float = 0.02) -> Any:
    """Poll ``check`` until it returns something truthy; return it. For state
    that only lives in Redis, where there is no event to wait on."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = await check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what} "
                                 f"(last: {last!r})")
        await asyncio.sleep(every)


# --------------------------------------------------------------------------
# redis


class RedisServer(RedisProcess):
    """The suite's redis-server (tests/redisproc.py) with what cluster tests
    ask of it: clients, CLIENT KILL, the session and node keys."""

    def __init__(self, tmp: Path, **kw: Any) -> None:
        super().__init__(tmp, **kw)
        self._clients: list[aioredis.Redis] = []

    def admin(self, **kw: Any) -> aioredis.Redis:
        """A client of the test's own (str replies), not closed for you."""
        opts: dict[str, Any] = {**self.connection_kwargs(), "decode_responses": True,
                                "socket_connect_timeout": 3, "socket_timeout": 5, **kw}
        return aioredis.Redis(**opts)

    def client(self) -> aioredis.Redis:
        """A redis.asyncio client (str replies), closed at teardown."""
        c = self.admin()
        self._clients.append(c)
        return c

    @contextlib.asynccontextmanager
    async def _once(self) -> AsyncIterator[aioredis.Redis]:
        """A fresh client for one call: never a connection a kill or a restart broke."""
        c = self.admin()
        try:
            yield c
        finally:
            await c.aclose()

    async def execute(self, *args: Any) -> Any:
        async with self._once() as c:
            return await c.execute_command(*args)

    async def hgetall(self, key: str) -> dict[str, str]:
        async with self._once() as c:
            return dict(await c.hgetall(key))

    async def routes(self, bare: str) -> dict[str, dict[str, Any]]:
        """``sessions:{bare}``: resource -> its decoded JSON entry."""
        return {res: json.loads(v) for res, v in (await self.hgetall(f"sessions:{bare}")).items()}

    async def nodes(self) -> dict[str, str]:
        """``cluster:nodes``: node id -> last heartbeat (ms)."""
        return await self.hgetall("cluster:nodes")

    async def client_list(self) -> list[dict[str, str]]:
        async with self._once() as c:
            return list(await c.client_list())

    async def kill_clients(self, type: str | None = None, addrs: list[str] | None = None,
                           name: str | None = None) -> int:
        """CLIENT KILL: every client of ``type`` (normal, pubsub...), the ``addrs``
        ("ip:port"), or those whose CLIENT SETNAME contains ``name``. The
        connection that sends the command is never killed (SKIPME yes).
        Returns how many were killed."""
        killed = 0
        async with self._once() as c:
            if type is not None:
                killed += int(await c.execute_command("CLIENT", "KILL", "TYPE", type))
            targets = list(addrs or ())
            if name is not None:
                targets += [cl["addr"] for cl in await c.client_list()
                            if name in cl.get("name", "")]
            for addr in targets:
                try:
                    killed += int(await c.execute_command("CLIENT", "KILL", "ADDR", addr))
                except aioredis.ResponseError:      # already gone: "No such client"
                    pass
        return killed

    async def close_clients(self) -> None:
        for c in self._clients:
            with contextlib.suppress(Exception):
                await c.aclose()
        self._clients.clear()


@contextlib.asynccontextmanager
async def serving(r: RedisServer) -> AsyncIterator[RedisServer]:
    """``r`` started, then stopped with its clients closed."""
    try:
        await r.start()
        yield r
    finally:
        await r.close_clients()
        await r.stop()


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A real redis-server on a free port, no persistence; stopped at teardown."""
    d = tmp_path / "redis"
    d.mkdir()
    async with serving(RedisServer(d)) as r:
        yield r


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    """A primary, its replica and three Sentinels (tests/sentinelproc.py);
    a cluster on them takes ``options=sentinel_options(sentinels)``."""
    s = SentinelSet(tmp_path / "sentinel")
    try:
        s.start()
        yield s
    finally:
        s.stop()


def sentinel_options(s: SentinelSet) -> dict[str, Any]:
    """The ``[cluster]`` keys of nodes that find the primary through ``s``."""
    return {"url": "redis:///0", "sentinels": s.addresses, "service": SERVICE}


# --------------------------------------------------------------------------
# the shared site


class Site:
    """What every node shares: certificates, and the storage with the users
    (``kind`` "fs": ``data/``; "postgresql": the database at ``url``)."""

    def __init__(self, root: Path, ca: trustme.CA, kind: str = "fs", url: str = "") -> None:
        self.root = root
        self.ca = ca
        self.kind = kind
        self.url = url
        self.certs = root / "conf" / "certs"
        self.data = root / "data"
        self.users = {u: f"{u}@{DOMAIN}" for u in USERS}

    @property
    def storage_table(self) -> dict[str, Any]:
        """The nodes' ``[host.storage]`` keys."""
        if self.kind == "fs":
            return {"backend": "fs", "dir": str(self.data)}
        return {"backend": "sql", "url": self.url, "password": PG_PASSWORD, "pool_size": 3}

    def open(self) -> Storage:
        """A storage of this test's own on the nodes' data."""
        options = dict(self.storage_table)
        return open_storage(options.pop("backend"), options)

    async def befriend(self, a: str, b: str) -> None:
        """``a`` and ``b`` (JIDs) subscribed to each other (both), written
        straight into the nodes' storage."""
        storage = self.open()
        try:
            for owner, contact in ((a, b), (b, a)):
                user = await storage.find_user(JID.parse(owner))
                assert user is not None
                user.roster[JID.parse(contact)] = Contact(JID.parse(contact),
                                                          subscription="both")
                await storage.save_user(user)
        finally:
            await storage.close()

    def address(self, index: int) -> str:
        """The loopback address the ``index``-th node listens on."""
        return "127.0.0.1" if self.kind == "fs" else f"127.0.0.{2 + index}"

    async def create(self) -> None:
        self.certs.mkdir(parents=True)
        leaf = self.ca.issue_cert(DOMAIN, f"*.{DOMAIN}")
        key = self.certs / f"{DOMAIN}.key"
        leaf.private_key_pem.write_to_path(str(key))
        key.chmod(0o600)
        (self.certs / f"{DOMAIN}.crt").write_bytes(
            b"".join(b.bytes() for b in leaf.cert_chain_pems))
        if self.kind == "fs":
            self.data.mkdir()
        storage = self.open()
        try:
            for jid in self.users.values():
                await accounts.create_user(storage, JID.parse(jid), PASSWORD, iterations=4096)
        finally:
            await storage.close()

    async def stored_user(self, bare: str) -> Any:
        """The account as the storage holds it now (a fresh read)."""
        storage = self.open()
        try:
            return await storage.find_user(JID.parse(bare))
        finally:
            await storage.close()

    async def stored(self, bare: str, store: str) -> Any:
        """One of the user's stores ("offline"...) as the storage holds it now."""
        storage = self.open()
        try:
            return await storage.get(JID.parse(bare), store)
        finally:
            await storage.close()


@pytest.fixture
def site_kind() -> str:
    """fs; pytest_generate_tests parametrizes it for BOTH_STORAGES."""
    return "fs"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if ("site" in metafunc.fixturenames
            and metafunc.module.__name__.rpartition(".")[2] in BOTH_STORAGES):
        metafunc.parametrize("site_kind", ("fs", "postgresql"))


@pytest.fixture
async def site(tmp_path: Path, ca: trustme.CA, site_kind: str,
               request: pytest.FixtureRequest) -> Site:
    url = ""
    if site_kind == "postgresql":
        pg = request.getfixturevalue("postgres")
        url = pg.url(pg.createdb())
    s = Site(tmp_path / "site", ca, site_kind, url)
    await s.create()
    return s


# --------------------------------------------------------------------------
# nodes


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):         # an inline table: host={"options": {"offline": {...}}}
        return "{" + ", ".join(f"{k if re.fullmatch(r'[A-Za-z0-9_-]+', k) else json.dumps(k)}"
                               f" = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"no TOML for {v!r}")


def toml_table(name: str, values: dict[str, Any]) -> str:
    return f"[{name}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in values.items()
                                   if v is not None)


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes


def _tcp_peers(remote_port: int) -> dict[str, str]:
    """inode -> "127.0.0.1:localport" of IPv4 TCP connections to ``remote_port``."""
    out = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            f = line.split()
            local, remote, inode = f[1], f[2], f[9]
            if int(remote.split(":")[1], 16) != remote_port or f[3] != "01":   # ESTABLISHED
                continue
            ip_hex, port_hex = local.split(":")
            ip = ".".join(str(b) for b in reversed(bytes.fromhex(ip_hex)))
            out[inode] = f"{ip}:{int(port_hex, 16)}"
    return out


class Node:
    """One ``python -m vinespy start`` process this fixture started."""

    def __init__(self, cluster: Cluster, name: str, config: Path, address: str, port: int,
                 workers: int | None, http_port: int = 0, s2s_port: int = 0,
                 component_port: int = 0) -> None:
        self.cluster = cluster
        self.name = name
        self.config = config
        self.address = address
        self.port = port
        self.http_port = http_port          # its [http] listener's, if any
        self.s2s_port = s2s_port            # its [server] listener's, if any
        self.component_port = component_port    # its [component] listener's, if any
        self.workers = workers
        self.proc: asyncio.subprocess.Process | None = None
        self.stderr_lines: list[str] = []
        self.incarnation = 0
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()

    def __repr__(self) -> str:
        return f"<Node {self.name} {self.address}:{self.port} pid {self.pid}>"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    async def start(self, wait: bool = True) -> None:
        """Start the process and (``wait``) wait for "listening on" on its stderr."""
        assert not self.alive, f"{self.name} is running"
        argv = [sys.executable, "-m", "vinespy", "start", "-c", str(self.config)]
        if self.workers is not None:
            argv += ["--workers", str(self.workers)]
        self.incarnation += 1
        self.stderr_lines.append(f"--- {self.name} start #{self.incarnation}: {' '.join(argv)}")
        first = len(self.stderr_lines)
        # Its own session: with --workers the teardown can end the whole group,
        # and only that group (the node and the workers it forked).
        self.proc = await asyncio.create_subprocess_exec(
            *argv, cwd=self.cluster.site.root, env=env(), start_new_session=True,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, limit=1 << 22)
        self._reader = asyncio.create_task(self._read(self.proc))
        if wait:
            await self.wait_line("listening on", START_TIMEOUT, since=first)

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while True:
            try:
                line = await proc.stderr.readline()
            except ValueError:                  # a line over the limit: take a chunk
                line = await proc.stderr.read(1 << 16)
            async with self._changed:
                if line:
                    self.stderr_lines.append(line.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()
            if not line:
                break
        await proc.wait()
        async with self._changed:
            self.stderr_lines.append(f"--- {self.name} exited {proc.returncode}")
            self._changed.notify_all()

    async def wait_line(self, pattern: str, timeout: float = TIMEOUT, *, since: int = 0,
                        count: int = 1) -> list[str]:
        """Wait until ``count`` stderr lines (from index ``since``) match ``pattern``."""
        rx = re.compile(pattern)
        proc = self.proc

        def found() -> list[str] | None:
            hits = [ln for ln in self.stderr_lines[since:] if rx.search(ln)]
            if len(hits) >= count:
                return hits
            if proc is not None and proc.returncode is not None and (
                    self._reader is None or self._reader.done()):
                raise AssertionError(f"{self.name} exited {proc.returncode} before "
                                     f"{pattern!r}:\n" + "\n".join(self.stderr_lines[-40:]))
            return None

        async def wait() -> list[str]:
            async with self._changed:
                while (hits := found()) is None:
                    # the reader notifies on every line and at exit
                    await self._changed.wait()
                return hits
        try:
            return await asyncio.wait_for(wait(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"{self.name}: no {pattern!r} on stderr within {timeout:g} s:\n"
                                 + "\n".join(self.stderr_lines[-40:])) from None

    def signal(self, sig: int) -> None:
        assert self.alive, f"{self.name} is not running"
        os.kill(self.pid, sig)

    def sigkill(self) -> None:
        self.signal(signal.SIGKILL)

    def sigterm(self) -> None:
        self.signal(signal.SIGTERM)

    def sigstop(self) -> None:
        self.signal(signal.SIGSTOP)

    def sigcont(self) -> None:
        self.signal(signal.SIGCONT)

    async def wait_exit(self, timeout: float = STOP_TIMEOUT) -> int:
        assert self.proc is not None
        rc = await asyncio.wait_for(self.proc.wait(), timeout)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, timeout)
        return rc

    async def stop(self) -> int | None:
        """SIGCONT + SIGTERM, wait; SIGKILL the node's process group if it hangs.
        Returns the exit status (None if it was never started)."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)
                os.kill(self.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT)
            except asyncio.TimeoutError:
                self.stderr_lines.append(f"--- {self.name}: no exit after SIGTERM, SIGKILL")
                self._killpg()
                await self.proc.wait()
        self._killpg()                  # workers left behind by their parent, if any
        if self._reader is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._reader, STOP_TIMEOUT)
        return self.proc.returncode

    def _killpg(self) -> None:
        # The group is the session this fixture created for the node (its pid).
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    async def restart(self) -> None:
        """Stop (SIGTERM) if running, then start again: same config, port and node id."""
        if self.alive:
            await self.stop()
        await self.start()

    def redis_addrs(self, port: int | None = None) -> list[str]:
        """The "ip:port" of this node's connections to Redis (the cluster's, or
        the one on ``port``), as CLIENT LIST shows them (from /proc: the
        process's sockets connected to that port)."""
        peers = _tcp_peers(self.cluster.redis.port if port is None else port)
        return sorted(addr for inode, addr in peers.items() if inode in _socket_inodes(self.pid))


class Cluster:
    """The nodes of one test, sharing ``site`` and ``redis``."""

    def __init__(self, site: Site, redis: RedisServer, root: Path, *, clustered: bool,
                 heartbeat: float | None, dead_after: float | None, log: str,
                 client: dict[str, Any] | None, options: dict[str, Any] | None,
                 workers: int | None, host: dict[str, Any] | None = None,
                 http: dict[str, Any] | None = None,
                 server: dict[str, Any] | None = None,
                 component: dict[str, Any] | None = None) -> None:
        self.site = site
        self.redis = redis
        self.root = root
        self.clustered = clustered
        self.heartbeat = heartbeat
        self.dead_after = dead_after
        self.log = log
        self.client_opts = client or {}
        self.options = options or {}
        self.host_opts = host or {}
        self.http_opts = http            # None: no [http] table
        self.server_opts = server        # None: no [server] table (s2s off)
        self.component_opts = component  # None: no [component] table
        self.workers = workers
        self.nodes: list[Node] = []

    def __getitem__(self, key: int | str) -> Node:
        if isinstance(key, int):
            return self.nodes[key]
        return next(n for n in self.nodes if n.name == key)

    def config_text(self, name: str, address: str, port: int, http_port: int = 0,
                    s2s_port: int = 0, component_port: int = 0) -> str:
        """A node's config: differs from its siblings' only in the address, the
        ports and node id. Absolute paths: each node has its own directory
        (its own pid/ and log/)."""
        text = (f"log = {toml_value(self.log)}\ncerts = {toml_value(str(self.site.certs))}\n\n"
                f"[[host]]\ndomains = [{toml_value(DOMAIN)}]\n"
                + "".join(f"{k} = {toml_value(v)}\n" for k, v in self.host_opts.items()
                          if v is not None)
                + toml_table("host.storage", self.site.storage_table) + "\n"
                + toml_table("client", {"address": address, "port": port,
                                        **self.client_opts}))
        if self.http_opts is not None:
            text += "\n" + toml_table("http", {"address": address, "port": http_port,
                                               **self.http_opts})
        if self.server_opts is not None:
            text += "\n" + toml_table("server", {"enabled": True, "address": address,
                                                 "port": s2s_port, **self.server_opts})
        if self.component_opts is not None:
            text += "\n" + toml_table("component", {"address": address, "port": component_port,
                                                    **self.component_opts})
        if self.clustered:
            text += "\n" + toml_table("cluster", {
                "url": self.redis.url, "node": name, "heartbeat": self.heartbeat,
                "dead_after": self.dead_after, **self.options})
        return text

    def add(self, name: str | None = None) -> Node:
        """A new node's directory and config (not started)."""
        name = name or NODE_NAMES[len(self.nodes)]
        d = self.root / name
        k = 1
        while d.exists():               # a second node with the same id
            k += 1
            d = self.root / f"{name}.{k}"
        d.mkdir(parents=True)
        address, port = self.site.address(len(self.nodes)), free_port()
        http_port = free_port() if self.http_opts is not None else 0
        s2s_port = free_port() if self.server_opts is not None else 0
        component_port = free_port() if self.component_opts is not None else 0
        config = d / "config.toml"
        config.write_text(self.config_text(name, address, port, http_port, s2s_port,
                                           component_port))
        node = Node(self, name, config, address, port, self.workers, http_port, s2s_port,
                    component_port)
        self.nodes.append(node)
        return node

    async def add_node(self, name: str | None = None) -> Node:
        node = self.add(name)
        await node.start()
        return node

    async def stop(self) -> None:
        await asyncio.gather(*(n.stop() for n in self.nodes), return_exceptions=True)

    def dump(self) -> str:
        out = []
        for n in self.nodes:
            out.append(f"===== {n.name} (port {n.port}) stderr, last 150 lines =====")
            out.extend(n.stderr_lines[-150:])
        return "\n".join(out)

    # ---- Redis views

    async def routes(self, bare: str) -> dict[str, dict[str, Any]]:
        return await self.redis.routes(bare)

    async def wait_route(self, full: str, timeout: float = TIMEOUT,
                         match: Callable[[dict[str, Any]], bool] = lambda _: True
                         ) -> dict[str, Any]:
        """Wait until ``sessions:{bare}`` holds ``full``'s resource with an entry
        ``match`` accepts; return that entry."""
        bare, _, res = full.partition("/")

        async def check() -> dict[str, Any] | None:
            e = (await self.routes(bare)).get(res)
            return e if e is not None and match(e) else None
        entry: dict[str, Any] = await eventually(check, timeout, f"the route of {full}")
        return entry

    async def wait_no_route(self, full: str, timeout: float = TIMEOUT) -> None:
        bare, _, res = full.partition("/")

        async def check() -> bool:
            return res not in await self.routes(bare)
        await eventually(check, timeout, f"the route of {full} to be removed")


ClusterFactory = Callable[..., Awaitable[Cluster]]


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    """Remember each phase's report on the item (to dump node logs on failure)."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture
async def cluster(request: pytest.FixtureRequest, site: Site, redis: RedisServer,
                  tmp_path: Path) -> AsyncIterator[ClusterFactory]:
    """``await cluster(n=2, heartbeat=0.2, dead_after=1.0, ...)``: start ``n`` nodes.

    ``clustered=False`` leaves the ``[cluster]`` table out (standalone nodes on
    shared data); ``client={...}`` adds ``[client]`` keys, ``options={...}``
    ``[cluster]`` keys (``route_cache_ttl``...), ``host={...}`` ``[[host]]`` keys
    (``{"pubsub": ["pubsub"]}``), ``http={...}`` an ``[http]`` table on a
    port of each node's own (``node.http_port``) with those keys,
    ``component={...}`` a ``[component]`` table likewise (``node.component_port``),
    ``server={...}`` a ``[server]`` table (s2s on, ``node.s2s_port``);
    a key set to None is left out. ``workers`` adds ``--workers N`` to the command
    line. One cluster per test."""
    made: list[Cluster] = []

    async def factory(n: int = 2, *, clustered: bool = True, heartbeat: float | None = 0.2,
                      dead_after: float | None = 1.0, log: str = "debug",
                      client: dict[str, Any] | None = None,
                      options: dict[str, Any] | None = None,
                      workers: int | None = None,
                      host: dict[str, Any] | None = None,
                      http: dict[str, Any] | None = None,
                      server: dict[str, Any] | None = None,
                      component: dict[str, Any] | None = None) -> Cluster:
        assert not made, "one cluster per test"
        c = Cluster(site, redis, tmp_path / "nodes", clustered=clustered, heartbeat=heartbeat,
                    dead_after=dead_after, log=log, client=client, options=options,
                    workers=workers, host=host, http=http, server=server,
                    component=component)
        made.append(c)
        for _ in range(n):
            c.add()
        await asyncio.gather(*(node.start() for node in c.nodes))
        return c

    try:
        yield factory
    finally:
        for c in made:
            await c.stop()
            failed = any(getattr(getattr(request.node, f"rep_{w}", None), "failed", False)
                         for w in ("setup", "call"))
            if failed or os.environ.get("VINESPY_TEST_DUMP"):
                print(c.dump())


# --------------------------------------------------------------------------
# clients


class Inbox:
    """What a client received, in order; ``get`` takes the first untaken match."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.items: list[Any] = []
        self._taken: set[int] = set()
        self._waiters: list[asyncio.Future[None]] = []

    def put(self, item: Any) -> None:
        self.items.append(item)
        for w in self._waiters:
            if not w.done():
                w.set_result(None)
        self._waiters.clear()

    def matching(self, match: Callable[[Any], bool] = lambda _: True) -> list[Any]:
        """Every item received so far that ``match`` accepts (taken or not)."""
        return [x for x in self.items if match(x)]

    async def get(self, match: Callable[[Any], bool] = lambda _: True,
                  timeout: float = TIMEOUT) -> Any:
        """The first item not taken yet that ``match`` accepts, waiting for it."""
        deadline = time.monotonic() + timeout
        start = 0
        while True:
            for i in range(start, len(self.items)):
                if i not in self._taken and match(self.items[i]):
                    self._taken.add(i)
                    return self.items[i]
            start = len(self.items)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name}: nothing matching within {timeout:g} s; "
                                     f"got {[summary(x) for x in self.items[-20:]]}")
            w: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(w)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(w, left)

    async def none(self, match: Callable[[Any], bool], within: float) -> None:
        """Assert that nothing ``match`` accepts arrives within ``within`` s (not
        even already received and untaken). The only bounded wait for nothing."""
        try:
            got = await self.get(match, within)
        except AssertionError:
            return
        raise AssertionError(f"{self.name}: unexpected {summary(got)}")


def summary(st: Any) -> str:
    try:
        kind = st.name
        body = st["body"] if kind == "message" else st["status"] if kind == "presence" else ""
        return f"{kind} type={st['type']} from={st['from']} {body!r}".strip()
    except Exception:
        return repr(st)


def body(text: str) -> Callable[[Any], bool]:
    return lambda m: m["body"] == text


def presence_from(full: str, *types: str) -> Callable[[Any], bool]:
    """Presence from ``full`` (a full JID, or a bare one: any of its resources)
    of one of ``types`` ("available" also matches a show value)."""
    def match(p: Any) -> bool:
        frm = str(p["from"]) if "/" in full else p["from"].bare
        t = p["type"]
        if t in p.showtypes or t == "":
            t = "available"
        return bool(frm == full and (not types or t in types))
    return match


class Client:
    """A logged-in slixmpp client and what it received."""

    def __init__(self, xmpp: slixmpp.ClientXMPP, node: Node) -> None:
        self.xmpp = xmpp
        self.node = node
        self.messages = Inbox(f"{xmpp.boundjid} messages")
        self.errors = Inbox(f"{xmpp.boundjid} message errors")
        self.presences = Inbox(f"{xmpp.boundjid} presences")
        self.pushes = Inbox(f"{xmpp.boundjid} roster pushes")
        self.disconnected = asyncio.get_running_loop().create_future()
        xmpp.add_event_handler("message", self.messages.put)
        xmpp.add_event_handler("message_error", self.errors.put)
        xmpp.add_event_handler("presence", self.presences.put)
        xmpp.add_event_handler("roster_update",
                               lambda iq: self.pushes.put(iq) if iq["type"] == "set" else None)
        xmpp.add_event_handler("disconnected", lambda _: self.disconnected.done()
                               or self.disconnected.set_result(None))

    def __repr__(self) -> str:
        return f"<Client {self.jid} on {self.node.name}>"

    @property
    def jid(self) -> str:
        return str(self.xmpp.boundjid.full)

    @property
    def bare(self) -> str:
        return str(self.xmpp.boundjid.bare)

    def say(self, to: str, text: str, type: str = "chat") -> None:
        self.xmpp.send_message(mto=to, mbody=text, mtype=type)

    def presence(self, **kw: Any) -> None:
        """slixmpp's send_presence: ppriority=, pshow=, pstatus=, ptype=, pto=."""
        self.xmpp.send_presence(**kw)

    async def ping(self, to: str = DOMAIN) -> None:
        """A round trip: everything this client sent before has been handled by its node."""
        await self.xmpp.plugin["xep_0199"].ping(jid=to, timeout=TIMEOUT)

    async def get_roster(self) -> Any:
        return await self.xmpp.get_roster(timeout=TIMEOUT)

    def abort(self) -> None:
        self.xmpp.abort()

    async def disconnect(self) -> None:
        """Close the stream (the server sends unavailable for us); wait until closed."""
        self.xmpp.disconnect()
        await asyncio.wait_for(asyncio.shield(self.disconnected), TIMEOUT)


class Clients:
    """``await xmpp.login(node, "alice/r1", priority=5)``; all aborted at teardown."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.all: list[Client] = []

    def make(self, jid: str) -> slixmpp.ClientXMPP:
        c = slixmpp.ClientXMPP(jid, PASSWORD)
        c.ssl_context = ssl.create_default_context()
        self.site.ca.configure_trust(c.ssl_context)
        c.enable_direct_tls = False
        c.enable_starttls = True
        c.enable_plaintext = False
        c.auto_reconnect = False
        c.auto_authorize = None         # the test answers subscription requests
        c.auto_subscribe = False
        c.register_plugin("xep_0199")
        c.register_plugin("xep_0030")
        c.register_plugin("xep_0191")
        return c

    async def login(self, node: Node, who: str, *, priority: int | None = None,
                    presence: bool = True, roster: bool = False, status: str | None = None,
                    wait_route: bool = True) -> Client:
        """Log ``who`` ("alice" or "alice/r1"; domain added) in to ``node``.

        ``roster`` fetches the roster first (so the session gets pushes);
        ``presence`` sends initial presence (``priority``, ``status``). When
        the node is clustered and ``wait_route``, returns once Redis shows
        the session (available if presence was sent)."""
        local, _, resource = who.partition("/")
        jid = f"{local}@{DOMAIN}/{resource or 'res'}"
        xmpp = self.make(jid)
        loop = asyncio.get_running_loop()
        started: asyncio.Future[None] = loop.create_future()
        xmpp.add_event_handler("session_start", lambda _: started.done()
                               or started.set_result(None))
        xmpp.add_event_handler("failed_auth", lambda _: started.done() or started.set_exception(
            AssertionError(f"auth failed for {jid}")))
        xmpp.add_event_handler("disconnected", lambda _: started.done() or started.set_exception(
            AssertionError(f"{jid} disconnected before session_start on {node}")))
        client = Client(xmpp, node)
        self.all.append(client)
        xmpp.connect(node.address, node.port)
        await asyncio.wait_for(started, TIMEOUT)
        if roster:
            await client.get_roster()
        if presence:
            kw: dict[str, Any] = {}
            if priority is not None:
                kw["ppriority"] = priority
            if status is not None:
                kw["pstatus"] = status
            client.presence(**kw)
            await client.ping()
        if wait_route and node.cluster.clustered:
            want = priority or 0
            await node.cluster.wait_route(
                client.jid, match=lambda e: not presence or (
                    bool(e.get("available")) and e.get("priority", 0) == want))
        return client

    def close(self) -> None:
        for c in self.all:
            with contextlib.suppress(Exception):
                c.abort()


@pytest.fixture
async def xmpp(site: Site, cluster: ClusterFactory) -> AsyncIterator[Clients]:
    """Depends on ``cluster`` so that clients are aborted before nodes stop."""
    cs = Clients(site)
    try:
        yield cs
    finally:
        cs.close()
