"""Federation peers for the s2s tests: Debian's Prosody 0.12 and ejabberd
23.01 as real processes, each on two free loopback ports (c2s and s2s) with a
generated configuration in a directory of its own (the test's tmp_path, so the
logs stay after a failure), stopped by whoever started them, and only those
processes. No system file, service, DNS server, epmd or Erlang cookie is used.

API (both fixtures are factories; every peer is stopped at teardown, and its
log's tail printed, which pytest shows when the test failed)::

    peer = await prosody(domain="prosody.test", users={"juliet": "pw"},
                         routes={"vinespy.test": ("127.0.0.1", s2s_port)},
                         cert="good", dialback=True, tls="required", ca=ca)
    peer = await ejabberd(...)                  # the same arguments
    peer.domain, peer.c2s_port, peer.s2s_port, peer.jid("juliet")
    client = await peer.login("juliet")         # slixmpp, session started
    await peer.wait_line(r"s2s.*vinespy\\.test", timeout=10)   # a re.Match
    peer.lines                                  # the log so far
    await peer.stop(); await peer.start(); await peer.restart(); await peer.kill()

* ``routes``: where the peer connects for outgoing s2s to each domain, in
  place of its DNS (``peer.routes`` may change before a ``restart()``).
  Prosody: tests/prosody_plugins/mod_s2s_test_routes.lua wraps the SRV
  resolver mod_s2s builds per connection. ejabberd: the SRV record
  ``_xmpp-server._tcp.<domain>`` is put in the Erlang resolver's cache
  (``inet_db:add_rr``) at boot, with an inetrc that has no name server, so
  any other SRV lookup fails at once (``xmpp_stream_out`` asks
  ``inet_res:getbyname``, which reads that cache first).
* ``cert``: what the peer presents, for its c2s and s2s streams:
  ``"good"`` (issued by ``ca`` for ``domain``), ``"wrong-name"`` (issued by
  ``ca`` for ``other-<domain>``), ``"untrusted"`` (self-signed for
  ``domain``: no SASL EXTERNAL with it, dialback still works).
  Either way the peer trusts ``ca`` (by default the suite's ``ca`` fixture,
  which issues vinespy's certificates too) for the certificates it is shown.
* ``dialback``: True, the peer offers and uses XEP-0220 (Prosody mod_dialback
  with ``s2s_secure_auth = false``; ejabberd mod_s2s_dialback, which also
  turns its outgoing certificate check off so it can fall back to dialback);
  False, authentication by certificate only (Prosody ``s2s_secure_auth =
  true``, no mod_dialback; ejabberd without mod_s2s_dialback).
* ``tls``: ``"required"`` (Prosody ``s2s_require_encryption``, ejabberd
  ``s2s_use_starttls: required``) or ``"optional"``.

Seen between the two peers (good certs: SASL EXTERNAL both ways; Prosody
"untrusted": its EXTERNAL refused, then dialback; "wrong-name": refused both
ways, "Certificate host name mismatch"): an ejabberd with mod_s2s_dialback
does not check the certificate of a server it connects to at all.

The binaries are Debian's (``$VINESPY_TEST_PROSODY``, ``$VINESPY_TEST_ERL``
override them); a missing one is a failure (tests/run installs ``prosody``
and ``ejabberd``). Both run as the current user, root included.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import datetime
import glob
import itertools
import os
import re
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, ClassVar

import pytest
import slixmpp
import trustme

from tests.peerconf import erl_binary, lua_str, write_prosody_accounts
from tests.support import TIMEOUT, free_port
from vinespy import tls

PROSODY = os.environ.get("VINESPY_TEST_PROSODY", "/usr/bin/prosody")
ERL = os.environ.get("VINESPY_TEST_ERL", "/usr/bin/erl")
PLUGINS = Path(__file__).resolve().parent / "prosody_plugins"
START_TIMEOUT = 30.0            # s: ejabberd alone needs a few on a loaded machine
READY = "vinespy-peer: ready"   # ejabberd's boot -eval prints it once users exist
CERTS = ("good", "wrong-name", "untrusted")
_numbers = itertools.count(1)


class Peer(abc.ABC):
    """One federation peer process this object started (and only that one)."""

    name: ClassVar[str]

    def __init__(self, dir: Path, ca: trustme.CA, *, domain: str,
                 users: dict[str, str] | None = None,
                 routes: dict[str, tuple[str, int]] | None = None, cert: str = "good",
                 dialback: bool = True, tls: str = "required", bidi: bool = False) -> None:
        if cert not in CERTS:
            raise ValueError(f"cert must be one of {CERTS}, not {cert!r}")
        if tls not in ("required", "optional"):
            raise ValueError(f"tls must be 'required' or 'optional', not {tls!r}")
        self.dir = dir
        self.ca = ca
        self.domain = domain
        self.users = dict(users or {})
        self.routes = dict(routes or {})
        self.cert, self.dialback, self.tls = cert, dialback, tls
        self.bidi = bidi                    # XEP-0288 (Prosody's mod_s2s_bidi)
        self.c2s_port, self.s2s_port = free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds = 0.0          # of the last start, until ready
        self.clients: list[slixmpp.ClientXMPP] = []
        dir.mkdir(parents=True, exist_ok=True)
        self.crt, self.key, self.cafile = self._write_certs(dir / "certs")

    def __repr__(self) -> str:
        return f"<{self.name} {self.domain} c2s {self.c2s_port} s2s {self.s2s_port}>"

    # -- certificates ---------------------------------------------------------

    def _write_certs(self, certs: Path) -> tuple[Path, Path, Path]:
        """The peer's certificate chain and key as ``cert`` says; the CA it trusts."""
        certs.mkdir(parents=True, exist_ok=True)
        cafile = certs / "ca.pem"
        self.ca.cert_pem.write_to_path(str(cafile))
        if self.cert == "untrusted":
            return (*tls.make_self_signed(self.domain, certs, overwrite=True), cafile)
        name = self.domain if self.cert == "good" else f"other-{self.domain}"
        # COMPAT: ejabberd 23.01's pkix crashes on trustme's default validity
        # (2000 to 3000: "cert_expired"), then has no certificate at all.
        now = datetime.datetime.now(datetime.timezone.utc)
        leaf = self.ca.issue_cert(name, f"*.{name}", not_before=now - datetime.timedelta(days=1),
                                  not_after=now + datetime.timedelta(days=30))
        crt, key = certs / "peer.crt", certs / "peer.key"
        crt.write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key))
        key.chmod(0o600)
        return crt, key, cafile

    # -- what a subclass provides ---------------------------------------------

    @abc.abstractmethod
    def _prepare(self) -> None:
        """Write the configuration (and accounts) for the current settings."""

    @abc.abstractmethod
    def _command(self) -> tuple[list[str], dict[str, str]]:
        """argv and environment of the server in the foreground."""

    @property
    @abc.abstractmethod
    def log_file(self) -> Path:
        """The server's own log, what :attr:`lines` reads."""

    def _booted(self) -> bool:
        """Extra readiness beyond both ports accepting connections."""
        return True

    # -- logs -----------------------------------------------------------------

    @property
    def out_file(self) -> Path:
        return self.dir / "stdout.log"

    @property
    def lines(self) -> list[str]:
        """Every line of the server's log so far (restarts append)."""
        try:
            return self.log_file.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def tail(self, n: int = 60) -> str:
        out = self.out_file.read_text(errors="replace") if self.out_file.exists() else ""
        return (f"--- {self.log_file} (last {n} lines) ---\n" + "\n".join(self.lines[-n:])
                + f"\n--- {self.out_file} ---\n" + "\n".join(out.splitlines()[-n:]))

    async def wait_line(self, pattern: str, timeout: float = TIMEOUT,
                        since: int = 0) -> re.Match[str]:
        """The first log line from line ``since`` on that ``pattern`` matches
        (``re.search``); polled, as nothing signals a new line."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines[since:]:
                if m := rx.search(line):
                    return m
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no log line matching {pattern!r} "
                                     f"within {timeout:g} s\n{self.tail()}")
            await asyncio.sleep(0.05)

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self._start)

    async def stop(self) -> None:
        """SIGTERM (a clean shutdown: streams closed), wait for the exit."""
        await asyncio.to_thread(self._stop, signal.SIGTERM)

    async def kill(self) -> None:
        """SIGKILL: the peer dies mid-conversation, its sockets just drop."""
        await asyncio.to_thread(self._stop, signal.SIGKILL)

    async def restart(self) -> None:
        """Stop and start on the same ports, data and (current) routes."""
        await self.stop()
        await self.start()

    def _start(self) -> None:
        if self.proc is not None:
            raise RuntimeError(f"{self!r} is running")
        self._prepare()
        argv, env = self._command()
        t0 = time.monotonic()
        with open(self.out_file, "ab") as out:
            self.proc = subprocess.Popen(argv, env=env, cwd=self.dir, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        try:
            deadline = t0 + START_TIMEOUT
            # Polled: neither server signals readiness to its parent.
            while not self._ready():
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.name} not ready within {START_TIMEOUT:g} s"
                                         f"\n{self.tail()}")
                time.sleep(0.05)
        except BaseException:
            self._stop(signal.SIGKILL)
            raise
        self.startup_seconds = time.monotonic() - t0

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited {self.proc.returncode}\n{self.tail()}")
        return self._booted() and all(_accepts(p) for p in (self.c2s_port, self.s2s_port))

    def _stop(self, sig: int) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # Its helpers (Erlang's erl_child_setup) are in its session: none outlives it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    # -- clients --------------------------------------------------------------

    def jid(self, user: str) -> str:
        return f"{user}@{self.domain}"

    async def login(self, user: str, password: str | None = None,
                    resource: str = "peer") -> slixmpp.ClientXMPP:
        """A slixmpp client of ``user`` on the peer's c2s port, once its session
        started and initial presence is sent; aborted at teardown. The peer's
        c2s certificate is not checked: the peer is a tool, not under test."""
        c = slixmpp.ClientXMPP(f"{self.jid(user)}/{resource}",
                               self.users[user] if password is None else password)
        c.ssl_context = ssl.create_default_context()
        c.ssl_context.check_hostname = False
        c.ssl_context.verify_mode = ssl.CERT_NONE
        c.enable_plaintext = False
        c.enable_direct_tls = False
        c.auto_reconnect = False
        self.clients.append(c)
        started = asyncio.get_running_loop().create_future()

        def fail(why: str) -> Callable[[Any], None]:
            return lambda _: started.done() or started.set_exception(AssertionError(
                f"{self.jid(user)} on {self.name}: {why}"))
        c.add_event_handler("session_start", lambda _: started.done() or started.set_result(1))
        c.add_event_handler("failed_auth", fail("authentication failed"))
        c.add_event_handler("disconnected", fail("disconnected"))
        c.connect("127.0.0.1", self.c2s_port)
        await asyncio.wait_for(started, TIMEOUT)
        c.send_presence()
        return c

    async def close(self) -> None:
        """Abort the clients, stop the server (SIGKILL if it lingers)."""
        for c in self.clients:
            c.abort()
        await self.stop()


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


class Prosody(Peer):
    """Prosody 0.12 (``prosody -F``): internal storage in its directory,
    mod_s2s_test_routes for ``routes``, log at debug level."""

    name = "prosody"

    @property
    def log_file(self) -> Path:
        return self.dir / "prosody.log"

    @property
    def config(self) -> Path:
        return self.dir / "prosody.cfg.lua"

    def _prepare(self) -> None:
        if not os.access(PROSODY, os.X_OK):
            pytest.fail(f"{PROSODY} is missing: apt-get install prosody (tests/run does)")
        d = self.dir
        write_prosody_accounts(d / "data", self.domain, self.users)
        routes = "".join(f"    [{lua_str(dom)}] = {{ {lua_str(addr)}, {port} }};\n"
                         for dom, (addr, port) in self.routes.items())
        dialback = '"dialback"; ' if self.dialback else ""
        bidi = '"s2s_bidi"; ' if self.bidi else ""
        self.config.write_text(f"""\
-- Written by tests/peerproc.py: a federation peer for vinespy's s2s tests.
run_as_root = true
daemonize = false
pidfile = {lua_str(d / "prosody.pid")}
data_path = {lua_str(d / "data")}
log = {{ {{ levels = {{ min = "debug" }}, to = "file", filename = {lua_str(self.log_file)} }} }}
network_backend = "epoll"
plugin_paths = {{ {lua_str(PLUGINS)} }}
modules_enabled = {{
    "roster"; "saslauth"; "tls"; "disco"; "ping"; {dialback}{bidi}"s2s_test_routes";
}}
modules_disabled = {{ {'' if self.bidi else '"s2s_bidi"'} }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {self.c2s_port} }}
s2s_ports = {{ {self.s2s_port} }}
c2s_direct_tls_ports = {{ }}
s2s_direct_tls_ports = {{ }}
legacy_ssl_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
c2s_require_encryption = true
s2s_require_encryption = {str(self.tls == "required").lower()}
s2s_secure_auth = {str(not self.dialback).lower()}
authentication = "internal_hashed"
storage = "internal"
certificates = {lua_str(d / "certs")}
ssl = {{ certificate = {lua_str(self.crt)}; key = {lua_str(self.key)};
        cafile = {lua_str(self.cafile)}; }}
s2s_test_routes = {{
{routes}}}

VirtualHost {lua_str(self.domain)}
""")

    def _command(self) -> tuple[list[str], dict[str, str]]:
        return [PROSODY, "--config", str(self.config), "-F"], dict(os.environ)


def _ejabberd_libs() -> str:
    """The directory holding Debian's ``ejabberd-<version>/`` (for ERL_LIBS)."""
    found = glob.glob("/usr/lib/*/ejabberd-*/ebin/ejabberd.beam")
    if not found or not os.access(ERL, os.X_OK):
        pytest.fail("no ejabberd (/usr/lib/*/ejabberd-*/ebin) or erl: apt-get install "
                    "ejabberd (tests/run does)")
    return str(Path(found[0]).parent.parent.parent)


class Ejabberd(Peer):
    """ejabberd 23.01 booted by ``erl`` directly, not ejabberdctl: no
    distribution at all (node ``nonode@nohost``), so no epmd, node name or
    cookie to collide between peers; mnesia in its directory."""

    name = "ejabberd"

    @property
    def log_file(self) -> Path:
        return self.dir / "ejabberd.log"

    @property
    def config(self) -> Path:
        return self.dir / "ejabberd.yml"

    def _booted(self) -> bool:
        return self.out_file.exists() and READY in self.out_file.read_text(errors="replace")

    def _prepare(self) -> None:
        d = self.dir
        self._libs = _ejabberd_libs()
        pem = d / "certs" / "peer.pem"
        pem.write_bytes(self.crt.read_bytes() + self.key.read_bytes())
        pem.chmod(0o600)
        # No name server, no hosts file: only what the boot puts in the cache.
        (d / "inetrc").write_text('{resolv_conf, ""}.\n{hosts_file, ""}.\n{lookup, [file]}.\n')
        if self.out_file.exists():          # READY from the last run must not count
            self.out_file.rename(d / f"stdout.{time.time_ns()}.log")
        dialback = "  mod_s2s_dialback: {}\n" if self.dialback else ""
        self.config.write_text(f"""\
# Written by tests/peerproc.py: a federation peer for vinespy's s2s tests.
hosts:
  - "{self.domain}"
loglevel: debug
log_rotate_count: 0
certfiles:
  - "{pem}"
ca_file: "{self.cafile}"
listen:
  -
    port: {self.c2s_port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls_required: true
  -
    port: {self.s2s_port}
    ip: "127.0.0.1"
    module: ejabberd_s2s_in
s2s_use_starttls: {self.tls}
s2s_access: all
s2s_dns_timeout: 2
s2s_dns_retries: 1
outgoing_s2s_families: [ipv4]
auth_method: [internal]
acl:
  local:
    user_regexp: ""
access_rules:
  c2s:
    allow: all
  local:
    allow: local
modules:
  mod_disco: {{}}
  mod_ping: {{}}
  mod_roster: {{}}
{dialback}""")

    def _boot(self) -> str:
        """The -eval: SRV records for ``routes``, ejabberd, the accounts, READY."""
        srv = [f'inet_db:add_rr("_xmpp-server._tcp.{dom}", in, srv, 86400000, '
               f'{{0, 0, {port}, "{addr}"}})' for dom, (addr, port) in self.routes.items()]
        host = erl_binary(self.domain)
        users = [f"R{i} = ejabberd_auth:try_register({erl_binary(u)}, {host}, {erl_binary(p)}), "
                 f"true = lists:member(R{i}, [ok, {{error, exists}}])"
                 for i, (u, p) in enumerate(self.users.items())]
        return ", ".join([*srv, "{ok, _} = ejabberd:start()", *users,
                          f'io:format("~s~n", ["{READY}"])']) + "."

    def _command(self) -> tuple[list[str], dict[str, str]]:
        d = self.dir
        env = {**os.environ, "ERL_LIBS": self._libs, "HOME": str(d),
               "EJABBERD_CONFIG_PATH": str(self.config), "EJABBERD_LOG_PATH": str(self.log_file),
               "ERL_CRASH_DUMP": str(d / "erl_crash.dump"), "ERL_INETRC": str(d / "inetrc"),
               "CONTRIB_MODULES_PATH": str(d / "contrib")}
        env.pop("ERL_FLAGS", None)
        env.pop("ERL_AFLAGS", None)
        env.pop("ERL_ZFLAGS", None)
        # quiet: the log goes to ejabberd.log only, not to stdout as well.
        return [ERL, "-noinput", "+S", "2:2", "-mnesia", "dir", f'"{d / "mnesia"}"',
                "-ejabberd", "quiet", "true", "-eval", self._boot()], env


PeerFactory = Callable[..., Awaitable[Peer]]


@contextlib.asynccontextmanager
async def _peers(kind: type[Peer], tmp_path: Path, ca: trustme.CA,
                 default_domain: str) -> AsyncIterator[PeerFactory]:
    started: list[Peer] = []

    async def start(domain: str = default_domain, ca: trustme.CA = ca, **kw: Any) -> Peer:
        peer = kind(tmp_path / f"{kind.name}-{next(_numbers)}", ca, domain=domain, **kw)
        started.append(peer)
        await peer.start()
        return peer
    try:
        yield start
    finally:
        for peer in started:
            print(f"{peer!r}: started in {peer.startup_seconds:.2f} s\n{peer.tail()}")
            await peer.close()


@pytest.fixture
async def prosody(tmp_path: Path, ca: trustme.CA) -> AsyncIterator[PeerFactory]:
    """``await prosody(domain=..., users=..., routes=..., cert=..., dialback=...)``:
    a running :class:`Prosody` (see the module docstring)."""
    async with _peers(Prosody, tmp_path, ca, "prosody.test") as start:
        yield start


@pytest.fixture
async def ejabberd(tmp_path: Path, ca: trustme.CA) -> AsyncIterator[PeerFactory]:
    """``await ejabberd(domain=..., users=..., routes=..., cert=..., dialback=...)``:
    a running :class:`Ejabberd` (see the module docstring)."""
    async with _peers(Ejabberd, tmp_path, ca, "ejabberd.test") as start:
        yield start
