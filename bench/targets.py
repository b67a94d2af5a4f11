"""The three XMPP servers the benchmark compares, started with equivalent configurations.

Each :class:`Target` runs one server (vinespy from this checkout, Prosody 0.12
and ejabberd 23.01 from Debian) out of its own work directory -- own config,
own accounts database, own pid file and log -- never the system-wide /etc and
/var/lib installs, and never the packaged system services. The configurations
are made equal where the servers allow it:

* c2s on a free loopback port, STARTTLS required, the same certificate for
  ``bench.lit`` (ECDSA P-256 or RSA-2048: ``bench/run.py --cert``); no s2s,
  no HTTP, no components;
* SCRAM-SHA-1 stored keys with 10,000 PBKDF2 iterations (PLAIN over TLS is
  offered too and verifies against the same keys);
* logging at warning;
* only what a chat needs: roster, presence and message delivery, disco, ping
  (XEP-0199); no offline storage, no rate limits or traffic shapers, at least
  100 concurrent resources per account;
* one core: the server process is pinned with ``taskset -c CPU``; ejabberd's
  Erlang VM runs a single scheduler (``+S 1:1``).

Accounts ``u0``..``u{N-1}`` are provisioned in bulk: the SCRAM keys are
computed once (10,000 iterations) and the same salt and keys are written for
every user, as ``bench/c2s.py`` does for vinespy: PBKDF2 per user would take
minutes and measures nothing about the servers.

Smoke test (root; installs the Debian packages when missing)::

    python3 bench/targets.py [vinespy prosody ejabberd] [--users 400] [--cpu 0]
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import ClassVar

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from vinespy import accounts, modules, tls  # noqa: E402
from vinespy.jid import JID  # noqa: E402
from vinespy.storage import open_storage  # noqa: E402

from tests.peerconf import (prosody_account, prosody_account_path,  # noqa: E402
                            scram_sha1_keys)

DOMAIN = "bench.lit"
ITERATIONS = 10_000           # SCRAM PBKDF2 iterations, on all three servers
MAX_RESOURCES = 100           # concurrent sessions per account (at least)
START_TIMEOUT = 60.0          # s for a server to accept a real login
STOP_TIMEOUT = 20.0           # s for a server to exit after SIGTERM
NOFILE = 65536                # fd limit for the servers, or the hard limit if lower
SYSTEM_PORTS = (5222, 5269, 5280)
# What a chat needs, on every server: roster, presence and message delivery,
# disco, ping. vinespy modules outside this set (version) are left out.
CHAT_MODULES = ("iq", "presence", "message", "roster", "disco", "ping")

STREAM_NS = "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    """True if something accepts connections on 127.0.0.1:``port``."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def listening_ports() -> set[int]:
    """Ports with a listening TCP socket on any address (from /proc/net/tcp*)."""
    ports: set[int] = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(name).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":                       # TCP_LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def proc_rss_kb(pid: int) -> int:
    """VmRSS of ``pid`` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"pid {pid}: no VmRSS")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out += [int(p) for p in (task / "children").read_text().split()]
    return out


def _descendant(pid: int, comm: str) -> int | None:
    """``pid`` or its first descendant whose /proc comm is ``comm``."""
    todo = [pid]
    while todo:
        p = todo.pop(0)
        with contextlib.suppress(OSError):
            if Path(f"/proc/{p}/comm").read_text().strip() == comm:
                return p
        todo += _children(p)
    return None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"({path}: {exc.strerror})"


def _raise_nofile() -> None:
    """preexec_fn: let the server hold 10,000+ sockets (the same limit for all)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, max(hard, NOFILE)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def make_cert(dir: Path, key_type: str = "rsa") -> tuple[Path, Path]:
    """Self-signed certificate + key for ``bench.lit`` in ``dir`` (PEM paths).

    ``key_type`` "rsa" (2048) or "ecdsa" (P-256): ``bench/run.py --cert``.
    """
    dir.mkdir(parents=True, exist_ok=True)
    crt, key = tls.cert_paths(dir, DOMAIN)
    if crt.exists() and key.exists():
        return crt, key
    return tls.make_self_signed(DOMAIN, dir, overwrite=True, key_type=key_type)


# --------------------------------------------------------------------------- raw client


class XMPPError(RuntimeError):
    """A smoke/readiness login failed."""


class RawClient:
    """A tiny blocking XMPP client: STARTTLS, PLAIN or SCRAM-SHA-1, bind, ping."""

    def __init__(self, port: int, timeout: float = 15.0) -> None:
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection(
            ("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.iterations = 0           # the i= the server announced (SCRAM only)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(b"</stream:stream>")
        self.sock.close()

    def send(self, data: str) -> None:
        self.sock.sendall(data.encode())

    def until(self, pattern: bytes) -> bytes:
        """Read until the regex ``pattern`` matches; return everything up to its end."""
        while True:
            m = re.search(pattern, self.buf, re.S)
            if m:
                out, self.buf = self.buf[:m.end()], self.buf[m.end():]
                return out
            data = self.sock.recv(65536)
            if not data:
                raise XMPPError(f"stream closed; last data: {self.buf[-300:]!r}")
            self.buf += data

    def features(self) -> bytes:
        self.send(f"<?xml version='1.0'?><stream:stream {STREAM_NS} to='{DOMAIN}' "
                  f"version='1.0'>")
        return self.until(rb"</stream:features>")

    def login(self, user: str, password: str, mechanism: str = "PLAIN",
              resource_: str = "smoke") -> str:
        """STARTTLS + SASL + bind; returns the bound full JID."""
        feats = self.features()
        if b"starttls" not in feats:
            raise XMPPError(f"no STARTTLS offered: {feats!r}")
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        self.until(rb"<proceed[^>]*>")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        assert isinstance(self.sock, socket.socket)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=DOMAIN)
        self.buf = b""
        feats = self.features()
        if f">{mechanism}<".encode() not in feats:
            raise XMPPError(f"{mechanism} not offered: {feats!r}")
        if mechanism == "PLAIN":
            blob = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
            self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
                      f"mechanism='PLAIN'>{blob}</auth>")
            reply = self.until(rb"<(success|failure)[^>]*(/>|>.*?</\1>)")
        elif mechanism == "SCRAM-SHA-1":
            reply = self._scram_sha1(user, password)
        else:
            raise ValueError(mechanism)
        if b"<success" not in reply:
            raise XMPPError(f"{mechanism} login of {user} failed: {reply!r}")
        self.features()
        self.send(f"<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                  f"<resource>{resource_}</resource></bind></iq>")
        reply = self.until(rb"<iq[^>]*bind1.*?</iq>")
        m = re.search(rb"<jid>([^<]+)</jid>", reply)
        if not m:
            raise XMPPError(f"bind failed: {reply!r}")
        # RFC 3921 session, still required by some servers' clients; harmless.
        self.send("<iq type='set' id='sess1'>"
                  "<session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
        self.until(rb"<iq[^>]*sess1[^>]*(/>|>.*?</iq>)")
        return m.group(1).decode()

    def _scram_sha1(self, user: str, password: str) -> bytes:
        nonce = base64.b64encode(secrets.token_bytes(18)).decode()
        bare = f"n={user},r={nonce}"
        self.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>"
                  f"{base64.b64encode(f'n,,{bare}'.encode()).decode()}</auth>")
        reply = self.until(rb"<(challenge|failure)[^>]*(/>|>.*?</\1>)")
        m = re.search(rb"<challenge[^>]*>([^<]*)</challenge>", reply)
        if not m:
            return reply
        first = base64.b64decode(m.group(1)).decode()
        attrs = dict(kv.split("=", 1) for kv in first.split(","))
        if not attrs["r"].startswith(nonce):
            raise XMPPError("SCRAM: server nonce does not extend ours")
        self.iterations = int(attrs["i"])
        salted = hashlib.pbkdf2_hmac("sha1", password.encode(),
                                     base64.b64decode(attrs["s"]), self.iterations)
        client_key = hmac.digest(salted, b"Client Key", "sha1")
        without_proof = f"c=biws,r={attrs['r']}"
        auth_msg = f"{bare},{first},{without_proof}".encode()
        signature = hmac.digest(hashlib.sha1(client_key).digest(), auth_msg, "sha1")
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        final = f"{without_proof},p={base64.b64encode(proof).decode()}"
        self.send("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
                  f"{base64.b64encode(final.encode()).decode()}</response>")
        reply = self.until(rb"<(success|failure|challenge)[^>]*(/>|>.*?</\1>)")
        if b"<challenge" in reply:                  # v= sent as a challenge
            self.send("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
            reply = self.until(rb"<(success|failure)[^>]*(/>|>.*?</\1>)")
        if b"<success" in reply:
            m = re.search(rb"<success[^>]*>([^<]+)</success>", reply)
            if m:
                server_sig = hmac.digest(
                    hmac.digest(salted, b"Server Key", "sha1"), auth_msg, "sha1")
                want = "v=" + base64.b64encode(server_sig).decode()
                if base64.b64decode(m.group(1)).decode() != want:
                    raise XMPPError("SCRAM: wrong server signature")
        return reply

    def ping(self) -> float:
        """XEP-0199 ping to the server; the round trip in seconds."""
        t0 = time.perf_counter()
        self.send(f"<iq type='get' id='ping1' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
        reply = self.until(rb"<iq[^>]*ping1[^>]*(/>|>.*?</iq>)")
        if not re.search(rb"type=['\"]result['\"]", reply):
            raise XMPPError(f"ping failed: {reply!r}")
        return time.perf_counter() - t0


def check_login(port: int, user: str, password: str,
                mechanism: str = "PLAIN") -> tuple[str, float, int]:
    """Log in over STARTTLS and ping the server: (full JID, ping RTT s, SCRAM i=)."""
    c = RawClient(port)
    try:
        jid = c.login(user, password, mechanism)
        return jid, c.ping(), c.iterations
    finally:
        c.close()


# --------------------------------------------------------------------------- targets


class Target(abc.ABC):
    """One XMPP server under test, run from ``workdir/<name>``."""

    name: ClassVar[str]
    package: ClassVar[str | None] = None      # Debian package, None = this checkout

    def __init__(self, workdir: Path, cert: Path, key: Path) -> None:
        self.workdir = Path(workdir).resolve()
        self.dir = self.workdir / self.name
        self.cert = Path(cert).resolve()
        self.key = Path(key).resolve()
        self.port = 0
        self.password = ""
        self.users = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None

    # -- install ---------------------------------------------------------------

    def install(self) -> None:
        """apt-get install the package when missing; make sure the system daemon is down."""
        if self.package is None:
            return
        if not _dpkg_installed(self.package):
            policy = subprocess.run(["apt-cache", "policy", self.package], text=True,
                                    capture_output=True).stdout
            if "Candidate:" not in policy or "Candidate: (none)" in policy:
                subprocess.run(["apt-get", "update"], check=True, stdout=subprocess.DEVNULL)
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            subprocess.run(["apt-get", "install", "-y", self.package], check=True, env=env,
                           stdout=subprocess.DEVNULL)
        self._stop_system_service()

    def _stop_system_service(self) -> None:
        """Stop the packaged daemon if the install (or anything) started it."""
        if not self._system_pids():
            return
        if Path("/run/systemd/system").is_dir() and shutil.which("systemctl"):
            subprocess.run(["systemctl", "disable", "--now", self.package or ""],
                           check=False, capture_output=True)
        elif Path(f"/etc/init.d/{self.package}").exists():
            subprocess.run([f"/etc/init.d/{self.package}", "stop"], check=False,
                           capture_output=True)
        deadline = time.monotonic() + STOP_TIMEOUT
        while self._system_pids() and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in self._system_pids():          # only the packaged daemon's own pids
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        busy = listening_ports() & set(SYSTEM_PORTS)
        if busy:
            print(f"warning: ports {sorted(busy)} still in use after stopping the system "
                  f"{self.package}", file=sys.stderr)

    def _system_pids(self) -> list[int]:
        """Pids of the packaged system daemon (not ours)."""
        return []

    # -- lifecycle -------------------------------------------------------------

    @abc.abstractmethod
    def prepare(self, users: int, password: str) -> None:
        """Write the config and create ``u0``..``u{users-1}`` with ``password``."""

    @abc.abstractmethod
    def command(self) -> list[str]:
        """The command line that runs the server in the foreground."""

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    @property
    def log_file(self) -> Path:
        return self.dir / "log" / f"{self.name}.log"

    def start(self, cpu: int) -> None:
        """Start pinned to ``cpu``; return once a real STARTTLS login works."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"{self.name} already running (pid {self.pid()})")
        if not self.port:
            raise RuntimeError(f"{self.name}: prepare() first")
        if port_open(self.port):
            raise RuntimeError(f"{self.name}: port {self.port} already taken")
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.dir / "log" / "stdout.log", "ab")
        try:
            self.proc = subprocess.Popen(
                ["taskset", "-c", str(cpu), *self.command()], cwd=self.dir, env=self.env(),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                preexec_fn=_raise_nofile, start_new_session=True)
        finally:
            out.close()
        self._pid = None
        try:
            self._wait_ready(START_TIMEOUT)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "port never opened"
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(self._failure(f"exited with {self.proc.returncode}"))
            if port_open(self.port):
                try:
                    check_login(self.port, "u0", self.password)
                    self.pid()
                    return
                except (OSError, XMPPError) as exc:
                    last = f"login failed: {exc}"
            time.sleep(0.25)
        raise RuntimeError(self._failure(f"not up within {timeout:.0f} s ({last})"))

    def _failure(self, what: str) -> str:
        out = self.dir / "log" / "stdout.log"
        text = f"{self.name} {what}\n--- {self.log_file} ---\n{_tail(self.log_file)}"
        if self.log_file != out:
            text += f"\n--- {out} ---\n{_tail(out)}"
        return text

    def pid(self) -> int:
        """The server process itself (the one whose RSS and CPU are measured)."""
        if self.proc is None:
            raise RuntimeError(f"{self.name} is not running")
        if self._pid is None or not _alive(self._pid):
            self._pid = self._find_pid(self.proc.pid)
        return self._pid

    def _find_pid(self, root: int) -> int:
        return root              # taskset execs the server: the Popen pid is the server

    def stop(self) -> None:
        """SIGTERM, wait until the process is gone and the port is free; idempotent."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            target = proc.pid
            with contextlib.suppress(RuntimeError):
                self.proc = proc
                target = self.pid()          # the server itself, not a wrapper shell
            self.proc = None
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        # The whole session (e.g. a wrapper shell's children) must be gone too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        self._pid = None
        deadline = time.monotonic() + STOP_TIMEOUT
        while self.port in listening_ports() and time.monotonic() < deadline:
            time.sleep(0.1)
        self._after_stop()

    def _after_stop(self) -> None:
        pass

    def _fresh_dir(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"{self.name}: stop() before prepare()")
        shutil.rmtree(self.dir, ignore_errors=True)
        for sub in ("conf", "data", "log", "pid"):
            (self.dir / sub).mkdir(parents=True)

    def _copy_cert(self, dest_dir: Path) -> tuple[Path, Path]:
        dest_dir.mkdir(parents=True, exist_ok=True)
        crt, key = dest_dir / f"{DOMAIN}.crt", dest_dir / f"{DOMAIN}.key"
        shutil.copyfile(self.cert, crt)
        shutil.copyfile(self.key, key)
        crt.chmod(0o644)
        key.chmod(0o600)
        return crt, key


def _dpkg_installed(package: str) -> bool:
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package],
                       capture_output=True, text=True)
    return r.returncode == 0 and "install ok installed" in r.stdout


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


class Vinespy(Target):
    """This checkout: ``python -m vinespy start`` with PYTHONPATH at the repository."""

    name = "vinespy"
    # The modules it loads: the chat set by default (what the other servers
    # run too, for the cross-server comparison); None = no ``modules`` line,
    # so every built-in module, as ``vinespy init`` configures a host.
    modules: ClassVar[tuple[str, ...] | None] = CHAT_MODULES

    @property
    def config(self) -> Path:
        return self.dir / "conf" / "config.toml"

    def prepare(self, users: int, password: str) -> None:
        self._fresh_dir()
        self.port, self.password, self.users = free_port(), password, users
        self._copy_cert(self.dir / "conf" / "certs")
        chosen = self.modules
        wanted = ("" if chosen is None else "modules = [" + ", ".join(
            f'"{m}"' for m in modules.available() if m in chosen) + "]\n")
        self.config.write_text(
            'log = "warning"\n'
            'certs = "conf/certs"\n'
            "[[host]]\n"
            f'domains = ["{DOMAIN}"]\n'
            f"{wanted}"
            "[host.storage]\n"
            'backend = "fs"\n'
            'dir = "data"\n'
            "[client]\n"
            'address = "127.0.0.1"\n'
            f"port = {self.port}\n"
            'tls = "required"\n'
            "rate_limit = 0\n"
            f"max_resources_per_account = {MAX_RESOURCES}\n"
            "auth_timeout = 600\n"
            "[server]\nenabled = false\n"
            "[http]\nenabled = false\n"
            "[component]\nenabled = false\n")
        asyncio.run(self._accounts(users, password))

    async def _accounts(self, users: int, password: str) -> None:
        storage = open_storage("fs", {"dir": self.dir / "data"})
        try:
            # One real create_user; its keys (and salt) copied to the others.
            first = await accounts.create_user(storage, JID.parse(f"u0@{DOMAIN}"), password,
                                               iterations=ITERATIONS)
            for i in range(1, users):
                first.jid = JID.parse(f"u{i}@{DOMAIN}")
                await storage.save_user(first)
        finally:
            await storage.close()

    def command(self) -> list[str]:
        return [sys.executable, "-m", "vinespy", "start", "-c", str(self.config)]

    def env(self) -> dict[str, str]:
        pp = os.environ.get("PYTHONPATH")
        return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{pp}" if pp else str(ROOT)}

    @property
    def log_file(self) -> Path:
        return self.dir / "log" / "stdout.log"    # foreground: the log goes to stderr


class Prosody(Target):
    """Prosody 0.12 (Debian), internal_hashed auth, internal (file) storage."""

    name = "prosody"
    package = "prosody"

    def prepare(self, users: int, password: str) -> None:
        self._fresh_dir()
        self.port, self.password, self.users = free_port(), password, users
        crt, key = self._copy_cert(self.dir / "certs")
        d = self.dir
        (d / "conf" / "prosody.cfg.lua").write_text(f"""\
-- Written by bench/targets.py: the benchmark's Prosody, equivalent to vinespy's config.
run_as_root = true                    -- like the other two servers (no user switch)
pidfile = "{d}/pid/prosody.pid"
data_path = "{d}/data"
log = {{ warn = "{self.log_file}" }}   -- warning and above
network_backend = "epoll"
daemonize = false

admins = {{ }}
modules_enabled = {{
    "roster"; "saslauth"; "tls"; "disco"; "ping";
}}
-- Autoloaded by default; not wanted: offline storage, s2s.
modules_disabled = {{ "offline"; "s2s"; "s2s_auth_certs"; "dialback"; "s2s_bidi" }}

interfaces = {{ "127.0.0.1" }}
c2s_interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {self.port} }}
c2s_direct_tls_ports = {{ }}
legacy_ssl_ports = {{ }}
s2s_ports = {{ }}
s2s_direct_tls_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
c2s_require_encryption = true
s2s_require_encryption = true
allow_registration = false

authentication = "internal_hashed"
default_iteration_count = {ITERATIONS}
storage = "internal"
ssl = {{ certificate = "{crt}"; key = "{key}"; }}
certificates = "{d}/certs"

VirtualHost "{DOMAIN}"
""")
        # mod_auth_internal_hashed's account store, written directly: the
        # same salt and keys for every user (tests/peerconf.py).
        body = prosody_account(password, ITERATIONS)
        for i in range(users):
            path = prosody_account_path(d / "data", DOMAIN, f"u{i}")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)

    def command(self) -> list[str]:
        return ["prosody", "--config", str(self.dir / "conf" / "prosody.cfg.lua"), "-F"]

    def _system_pids(self) -> list[int]:
        return [p for p in _all_pids()
                if (cmd := _cmdline(p))[:1] and "lua" in Path(cmd[0]).name
                and len(cmd) > 1 and cmd[1].endswith("/prosody") and "--config" not in cmd]


class Ejabberd(Target):
    """ejabberd 23.01 (Debian), mnesia, one Erlang scheduler."""

    name = "ejabberd"
    package = "ejabberd"

    def __init__(self, workdir: Path, cert: Path, key: Path) -> None:
        super().__init__(workdir, cert, key)
        self.node = ""

    @property
    def ctl(self) -> Path:
        return self.dir / "ejabberdctl"

    def _ctl_args(self) -> list[str]:
        d = self.dir
        return [str(self.ctl), "--node", self.node, "--config-dir", str(d / "conf"),
                "--config", str(d / "conf" / "ejabberd.yml"),
                "--ctl-config", str(d / "conf" / "ejabberdctl.cfg"),
                "--logs", str(d / "log"), "--spool", str(d / "data")]

    def prepare(self, users: int, password: str) -> None:
        self._fresh_dir()
        self.port, self.password, self.users = free_port(), password, users
        self.node = f"bench{self.port}@localhost"
        d = self.dir
        crt, key = self._copy_cert(d / "certs")
        pem = d / "certs" / f"{DOMAIN}.pem"
        pem.write_bytes(crt.read_bytes() + key.read_bytes())
        pem.chmod(0o600)
        # The packaged ejabberdctl, run as root from our directory: it switches
        # to the `ejabberd` user only when INSTALLUSER is set, and that user
        # could not read a root-owned work directory.
        script = Path("/usr/sbin/ejabberdctl").read_text()
        self.ctl.write_text(script.replace("INSTALLUSER=ejabberd", "INSTALLUSER="))
        self.ctl.chmod(0o755)
        (d / "conf" / "ejabberdctl.cfg").write_text(f"""\
# Written by bench/targets.py. One scheduler (and one dirty CPU scheduler):
# one core, like the other two servers; taskset pins it as well.
ERL_OPTIONS="+S 1:1 +SDcpu 1:1 -env ERL_CRASH_DUMP_BYTES 0"
ERL_OPTIONS="$ERL_OPTIONS -kernel inet_dist_use_interface {{127,0,0,1}}"
ERLANG_NODE={self.node}
EJABBERD_PID_PATH={d}/pid/ejabberd.pid
ERL_EPMD_ADDRESS=127.0.0.1
ERL_MAX_PORTS=65536
EJABBERD_BYPASS_WARNINGS=true
""")
        (d / "conf" / "inetrc").write_text('{lookup, ["file", "native"]}.\n'
                                           '{host, {127,0,0,1}, ["localhost"]}.\n')
        (d / "conf" / "ejabberd.yml").write_text(f"""\
# Written by bench/targets.py: the benchmark's ejabberd, equivalent to vinespy's config.
hosts:
  - {DOMAIN}
loglevel: warning
log_rotate_count: 0
hide_sensitive_log_data: true
certfiles:
  - "{pem}"
listen:
  -
    port: {self.port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls: true
    starttls_required: true
    max_stanza_size: 262144
    backlog: 128
    shaper: none
    access: c2s
acl:
  local:
    user_regexp: ""
access_rules:
  c2s:
    allow: all
  local:
    allow: local
shaper_rules:
  max_user_sessions: {MAX_RESOURCES * 100}
  c2s_shaper: none
s2s_access: none
auth_method: [internal]
auth_password_format: scram
auth_scram_hash: sha
default_db: mnesia
modules:
  mod_roster: {{}}
  mod_disco: {{}}
  mod_ping: {{}}
""")
        # Accounts: ejabberdctl register hashes with a fixed 4096 iterations
        # (ejabberd_auth:password_to_scram/2 in 23.01) and needs ~1 s per call.
        # ejabberd_auth:try_register/3 also takes a ready #scram{} record, stored
        # as is: so register all users with 10,000-iteration SHA-1 keys computed
        # here, in one rpc loop from one Erlang node, while the server runs
        # briefly (mnesia lives in the running node).
        salt = secrets.token_bytes(16)
        stored, server = scram_sha1_keys(password, salt, ITERATIONS)
        b64 = [base64.b64encode(x).decode() for x in (stored, server, salt)]
        self.start(cpu=-1)
        try:
            self._register(users, b64[0], b64[1], b64[2])
        finally:
            self.stop()

    def _register(self, users: int, stored: str, server: str, salt: str) -> None:
        scram = (f'{{scram, <<"{stored}">>, <<"{server}">>, <<"{salt}">>, sha, '
                 f"{ITERATIONS}}}")
        code = (f"N = '{self.node}', "
                f"R = [rpc:call(N, ejabberd_auth, try_register, "
                f"[list_to_binary(\"u\" ++ integer_to_list(I)), <<\"{DOMAIN}\">>, {scram}]) "
                f"|| I <- lists:seq(0, {users - 1})], "
                f"io:format(\"~p~n\", [lists:usort(R)]), halt().")
        r = subprocess.run(["erl", "-sname", f"benchreg{os.getpid()}@localhost", "-hidden",
                            "-noinput", "-eval", code], env=self.env(), cwd=self.dir,
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0 or r.stdout.strip() not in ("[ok]", "[{error,exists},ok]",
                                                         "[{error,exists}]"):
            raise RuntimeError(f"ejabberd registration failed: {r.stdout} {r.stderr}")

    def start(self, cpu: int) -> None:
        if cpu >= 0:
            super().start(cpu)
            return
        # prepare(): unpinned, and accounts do not exist yet, so wait for the
        # port and the node only.
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "log" / "stdout.log", "ab") as out:
            self.proc = subprocess.Popen(
                self.command(), cwd=self.dir, env=self.env(), stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, preexec_fn=_raise_nofile,
                start_new_session=True)
        self._pid = None
        deadline = time.monotonic() + START_TIMEOUT
        while not port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self._failure("did not open its port")
                self.stop()
                raise RuntimeError(err)
            time.sleep(0.2)

    def command(self) -> list[str]:
        return [*self._ctl_args(), "foreground"]

    def _find_pid(self, root: int) -> int:
        pid = _descendant(root, "beam.smp")
        if pid is None:
            raise RuntimeError(f"ejabberd: no beam.smp under pid {root}")
        return pid

    @property
    def log_file(self) -> Path:
        return self.dir / "log" / "ejabberd.log"

    def _after_stop(self) -> None:
        # epmd outlives the node; end it when no node is registered any more
        # (what `ejabberdctl stop` does via stop_epmd).
        names = subprocess.run(["epmd", "-names"], capture_output=True, text=True).stdout
        if "name " not in names:
            subprocess.run(["epmd", "-kill"], capture_output=True)

    def _system_pids(self) -> list[int]:
        return [p for p in _all_pids()
                if (cmd := _cmdline(p))[:1] and cmd[0].endswith("beam.smp")
                and "ejabberd@localhost" in cmd]


class VinespyDefault(Vinespy):
    """vinespy with every built-in module (carbons, mam, blocking, csi, sm,
    pep...), as an operator running ``vinespy init``'s config has it."""

    name = "vinespy-default"
    modules = None


TARGETS: dict[str, type[Target]] = {
    t.name: t for t in (Vinespy, VinespyDefault, Prosody, Ejabberd)}


# --------------------------------------------------------------------------- smoke test


def smoke(names: list[str], users: int, cpu: int, password: str = "bench-password") -> bool:
    """install, prepare, start, PLAIN + SCRAM-SHA-1 logins and a ping, RSS, stop."""
    work = Path(tempfile.mkdtemp(prefix="vinespy-targets-"))
    ok = True
    try:
        crt, key = make_cert(work / "cert")
        for name in names:
            t = TARGETS[name](work, crt, key)
            try:
                t0 = time.perf_counter()
                t.install()
                t1 = time.perf_counter()
                t.prepare(users, password)
                t2 = time.perf_counter()
                t.start(cpu)
                t3 = time.perf_counter()
                jid, rtt, _ = check_login(t.port, f"u{users - 1}", password, "PLAIN")
                jid2, rtt2, iters = check_login(t.port, "u1", password, "SCRAM-SHA-1")
                held = []
                try:                 # MAX_RESOURCES concurrent sessions of one user
                    for r in range(MAX_RESOURCES):
                        c = RawClient(t.port)
                        held.append(c)
                        c.login("u2", password, resource_=f"r{r}")
                    held[0].ping()
                    held[-1].ping()
                finally:
                    for c in held:
                        c.close()
                pid = t.pid()
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
                aff = os.sched_getaffinity(pid)
                print(f"{name}: install {t1 - t0:.1f}s, prepare({users}) {t2 - t1:.1f}s, "
                      f"start {t3 - t2:.1f}s; port {t.port}; pid {pid} ({comm}, cpus {aff}); "
                      f"PLAIN {jid} ping {rtt * 1000:.1f} ms; SCRAM-SHA-1 i={iters} {jid2} "
                      f"ping {rtt2 * 1000:.1f} ms; {len(held)} resources of u2 ok; "
                      f"RSS {proc_rss_kb(pid)} KB")
                if iters != ITERATIONS:
                    print(f"{name}: SCRAM iteration count {iters} != {ITERATIONS}")
                    ok = False
            except Exception as exc:  # noqa: BLE001 - report and go on with the next
                ok = False
                print(f"{name}: FAILED: {exc}")
            finally:
                t.stop()
                print(f"{name}: stopped; port {t.port} free: {not port_open(t.port)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ok


if __name__ == "__main__":
    p = argparse.ArgumentParser(description="Smoke-test the benchmark's server targets.")
    p.add_argument("names", nargs="*", help=f"any of {', '.join(TARGETS)} (default: all)")
    p.add_argument("--users", type=int, default=400)
    p.add_argument("--cpu", type=int, default=0)
    a = p.parse_args()
    for n in a.names:
        if n not in TARGETS:
            p.error(f"unknown target {n!r}; choose from {', '.join(TARGETS)}")
    sys.exit(0 if smoke(a.names or list(TARGETS), a.users, a.cpu) else 1)
