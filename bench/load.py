"""Load generator: raw XMPP clients over TCP on asyncio, for any C2S server.

Every client is an :class:`asyncio.Protocol` (no stream reader, no XML
parser): TCP connect, stream header, STARTTLS (no certificate check, SNI
``bench.lit``), SASL SCRAM-SHA-1 written with hashlib/hmac (or PLAIN), resource
bind, initial ``<presence/>``. Replies are recognised by searching the received
bytes for a few tokens (``</stream:features>``, ``<proceed``, ``<challenge``,
``<success``, ``<failure``, ``</jid>``, an iq id in either quote style), so
the servers' feature order and byte layout do not matter.

SCRAM's SaltedPassword is cached per (password, salt, iterations); the login
scenario first learns every user's salt and iteration count in an untimed
pre-pass (client-first, read server-first, ``<abort/>``) so the generator's
PBKDF2 never lands inside a timed interval.

Each scenario is an ``async`` function that returns a flat ``dict`` of figures
(floats) including ``gen_cpu``: the generator's own CPU, in percent of one
core, over the measured interval (``resource.getrusage``). ``bench/run.py``
drives them; the process pins itself to CPU 1 (:func:`setup`).

Message bodies are ``"<sender-id> <seq> <perf_counter_ns>"`` and are matched
with one regular expression per received chunk.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import re
import resource
import secrets
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable

DOMAIN = "bench.lit"
HOST = "127.0.0.1"
TIMEOUT = 30.0          # seconds: any single wait for the server
GEN_CPU = 1             # the generator's core; the server gets CPU 0


def stream_header(domain: str) -> bytes:
    """The client stream header to ``domain``."""
    return (f"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/"
            f"streams' to='{domain}' version='1.0'>").encode()


_STREAM = stream_header(DOMAIN)
_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
_FEATURES = b"</stream:features>"
_BODY_RE = re.compile(rb"<body>(\d+) (\d+) (\d+)</body>")
_CHALLENGE_RE = re.compile(rb"<challenge[^>]*>([^<]*)</challenge>")
_JID_RE = re.compile(rb"<jid>([^<]+)</jid>")
_MSG_END = b"</message>"


class XmppError(Exception):
    """The server refused a step, closed the stream, or did not answer in time."""


def setup() -> None:
    """Pin the generator to CPU 1, raise its open-file limit, use uvloop when present."""
    try:
        os.sched_setaffinity(0, {GEN_CPU})
    except (AttributeError, OSError):
        pass
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 20000 if hard == resource.RLIM_INFINITY else min(20000, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    try:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass


def has_uvloop() -> bool:
    """True when uvloop is importable (the generator then uses it)."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def client_context() -> ssl.SSLContext:
    """A client TLS context that accepts any certificate."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


# --------------------------------------------------------------- /proc -----

def proc_rss_kb(pid: int) -> int:
    """Resident set size of ``pid`` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def proc_cpu(pid: int) -> float:
    """utime + stime of ``pid`` (all threads) in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def quiesce(pid: int, limit: float = 0.05, window: float = 0.5,
                  timeout: float = 30.0) -> float:
    """Wait until the server uses less than ``limit`` of a core over ``window`` seconds.

    Servers finish closing the previous scenario's sessions in the background;
    that work must not be charged to the next measurement. Returns the seconds
    waited (gives up after ``timeout``).
    """
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        c0 = proc_cpu(pid)
        await asyncio.sleep(window)
        if proc_cpu(pid) - c0 < limit * window:
            break
    return time.perf_counter() - t0


class GenCpu:
    """The generator's own CPU over an interval, in percent of one core."""

    def __init__(self) -> None:
        self.start()

    def start(self) -> None:
        r = resource.getrusage(resource.RUSAGE_SELF)
        self.c0, self.t0 = r.ru_utime + r.ru_stime, time.perf_counter()

    def percent(self) -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        dt = time.perf_counter() - self.t0
        return 100.0 * (r.ru_utime + r.ru_stime - self.c0) / dt if dt > 0 else 0.0


# ---------------------------------------------------------------- SCRAM ----

_salted: dict[tuple[str, bytes, int], tuple[bytes, bytes]] = {}
_user_salts: dict[tuple[int, int, str], tuple[bytes, int]] = {}  # (port, pid, user) -> salt, i


def scram_keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    """(ClientKey, StoredKey) for SCRAM-SHA-1, cached per (password, salt, iterations)."""
    key = (password, salt, iterations)
    keys = _salted.get(key)
    if keys is None:
        salted = hashlib.pbkdf2_hmac("sha1", password.encode(), salt, iterations)
        client_key = hmac.new(salted, b"Client Key", hashlib.sha1).digest()
        keys = _salted[key] = (client_key, hashlib.sha1(client_key).digest())
    return keys


def _parse_attrs(msg: bytes) -> dict[str, bytes]:
    return {part[:1].decode(): part[2:] for part in msg.split(b",") if len(part) > 1}


# --------------------------------------------------------------- client ----

class Conn(asyncio.Protocol):
    """One XMPP client connection; :meth:`until` waits for tokens in the byte stream.

    After login, :attr:`on_data` may take over every received chunk (the
    messaging loop); idle sessions discard what they receive.
    """

    def __init__(self, domain: str = DOMAIN) -> None:
        # The domain served, for the stream header and SNI (bench/s2s.py
        # logs in to servers of several domains).
        self.domain = domain
        self.header = _STREAM if domain == DOMAIN else stream_header(domain)
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.tokens: tuple[bytes, ...] = ()
        self.waiter: asyncio.Future[tuple[bytes, bytes]] | None = None
        self.on_data: Callable[[bytes], None] | None = None
        self.closed = False
        self.close_reason = ""
        self.jid = ""

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.on_data is not None:
            self.on_data(data)
            return
        self.buf += data
        if self.waiter is not None:
            self._check()
        elif len(self.buf) > 1 << 20:
            del self.buf[:]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.close_reason = repr(exc) if exc else "closed by the server"
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(XmppError(
                f"connection closed by server ({exc!r}): {bytes(self.buf[-300:])!r}"))

    def _check(self) -> None:
        best = -1
        tok = b""
        for t in self.tokens:
            i = self.buf.find(t)
            if i >= 0 and (best < 0 or i < best):
                best, tok = i, t
        if best >= 0 and self.waiter is not None and not self.waiter.done():
            end = best + len(tok)
            out = bytes(self.buf[:end])
            del self.buf[:end]
            self.waiter.set_result((tok, out))

    async def until(self, *tokens: bytes, timeout: float = TIMEOUT) -> tuple[bytes, bytes]:
        """Wait for the first of ``tokens``; return it and the bytes up to its end."""
        if self.closed:
            raise XmppError("connection closed")
        self.tokens = tokens
        loop = asyncio.get_running_loop()
        waiter = self.waiter = loop.create_future()
        self._check()
        if waiter.done():
            self.waiter = None
            return waiter.result()
        # A timer instead of asyncio.wait_for: no extra task per step.
        timer = loop.call_later(timeout, self._timeout, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()
            self.waiter = None

    def _timeout(self, waiter: asyncio.Future[tuple[bytes, bytes]]) -> None:
        if not waiter.done():
            waiter.set_exception(XmppError(
                f"timeout waiting for {self.tokens!r}: {bytes(self.buf[-300:])!r}"))

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def close(self) -> None:
        """Send the stream end and close (no wait for the server's)."""
        if self.transport is not None and not self.closed:
            try:
                self.transport.write(b"</stream:stream>")
            except Exception:
                pass
            self.transport.close()
        self.closed = True
        self.close_reason = "closed by the generator"

    def discard(self) -> None:
        """From now on drop whatever arrives (idle sessions)."""
        self.on_data = _drop
        del self.buf[:]

    # ---- steps
    async def _features(self) -> bytes:
        self.write(self.header)
        tok, out = await self.until(_FEATURES, b"</stream:stream>", b"<stream:error")
        if tok != _FEATURES:
            raise XmppError(f"stream error: {out[-300:]!r}")
        return out

    async def starttls(self, port: int, ctx: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()
        await self._features()
        self.write(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        tok, out = await self.until(b"<proceed", b"<failure")
        if tok != b"<proceed":
            raise XmppError("STARTTLS refused")
        del self.buf[:]
        assert self.transport is not None
        tr = await asyncio.wait_for(
            loop.start_tls(self.transport, self, ctx, server_hostname=self.domain), TIMEOUT)
        if tr is None:
            raise XmppError("TLS handshake failed")
        self.transport = tr
        await self._features()

    async def _sasl_end(self) -> bytes:
        tok, out = await self.until(b"<success", b"<failure", b"</challenge>")
        if tok != b"<success":
            raise XmppError(f"SASL failed: {out[-300:]!r}")
        return out

    async def auth_plain(self, user: str, password: str) -> None:
        blob = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        self.write(f"<auth xmlns='{_SASL}' mechanism='PLAIN'>{blob}</auth>".encode())
        await self._sasl_end()

    async def scram_first(self, user: str) -> tuple[bytes, bytes, bytes, int]:
        """Send client-first; return (client-first-bare, server-first, salt, iterations)."""
        nonce = base64.b64encode(secrets.token_bytes(18))
        bare = b"n=" + user.encode() + b",r=" + nonce
        self.write(f"<auth xmlns='{_SASL}' mechanism='SCRAM-SHA-1'>".encode()
                   + base64.b64encode(b"n,," + bare) + b"</auth>")
        tok, out = await self.until(b"</challenge>", b"<failure", b"<success")
        m = _CHALLENGE_RE.search(out)
        if tok != b"</challenge>" or m is None:
            raise XmppError(f"no SCRAM challenge: {out[-300:]!r}")
        server_first = base64.b64decode(m.group(1))
        attrs = _parse_attrs(server_first)
        if not attrs.get("r", b"").startswith(nonce):
            raise XmppError("SCRAM nonce mismatch")
        return bare, server_first, base64.b64decode(attrs["s"]), int(attrs["i"])

    async def auth_scram(self, user: str, password: str) -> None:
        bare, server_first, salt, iterations = await self.scram_first(user)
        client_key, stored_key = scram_keys(password, salt, iterations)
        without_proof = b"c=biws,r=" + _parse_attrs(server_first)["r"]
        auth_message = bare + b"," + server_first + b"," + without_proof
        signature = hmac.new(stored_key, auth_message, hashlib.sha1).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        final = without_proof + b",p=" + base64.b64encode(proof)
        self.write(f"<response xmlns='{_SASL}'>".encode() + base64.b64encode(final)
                   + b"</response>")
        await self._sasl_end()

    async def bind(self, resource_: str) -> None:
        await self._features()
        self.write(f"<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                   f"<resource>{resource_}</resource></bind></iq>".encode())
        tok, out = await self.until(b"</jid>", b"type='error'", b'type="error"')
        m = _JID_RE.search(out)
        if m is None:
            raise XmppError(f"bind failed: {out[-300:]!r}")
        self.jid = m.group(1).decode()

    async def ping(self) -> None:
        self.write(f"<iq type='get' id='ping1' to='{self.domain}'><ping xmlns='urn:xmpp:ping'/>"
                   "</iq>".encode())
        await self.until(b"id='ping1'", b'id="ping1"')


def _drop(data: bytes) -> None:
    pass


async def connect(port: int, domain: str = DOMAIN) -> Conn:
    loop = asyncio.get_running_loop()
    _, conn = await asyncio.wait_for(
        loop.create_connection(lambda: Conn(domain), HOST, port), TIMEOUT)
    return conn


async def login(port: int, ctx: ssl.SSLContext, user: str, password: str, resource_: str,
                mech: str = "SCRAM-SHA-1", ping: bool = False, domain: str = DOMAIN) -> Conn:
    """A full client login; on failure the connection is closed and the error raised."""
    conn = await connect(port, domain)
    try:
        await conn.starttls(port, ctx)
        if mech == "PLAIN":
            await conn.auth_plain(user, password)
        else:
            await conn.auth_scram(user, password)
        await conn.bind(resource_)
        conn.write(b"<presence/>")
        if ping:
            await conn.ping()
    except BaseException:
        conn.close()
        raise
    return conn


async def learn_salts(env: Env, users: Iterable[str], parallel: int = 50) -> None:
    """Untimed pre-pass: each user's salt and iterations, and its SaltedPassword."""
    sem = asyncio.Semaphore(parallel)

    async def one(user: str) -> None:
        key = (env.port, env.pid, user)
        if key in _user_salts:
            return
        async with sem:
            conn = await connect(env.port, env.domain)
            try:
                await conn.starttls(env.port, env.ctx)
                _, _, salt, iterations = await conn.scram_first(user)
                conn.write(f"<abort xmlns='{_SASL}'/>".encode())
            finally:
                conn.close()
        _user_salts[key] = (salt, iterations)
        scram_keys(env.password, salt, iterations)
    await asyncio.gather(*(one(u) for u in users))


async def login_many(port: int, ctx: ssl.SSLContext, specs: list[tuple[str, str]],
                     password: str, parallel: int, mech: str = "SCRAM-SHA-1",
                     ping: bool = False, latencies: list[float] | None = None,
                     retries: int = 0, domain: str = DOMAIN) -> list[Conn]:
    """Log in every (user, resource) with ``parallel`` in flight; all or an exception.

    Set-up logins (idle sessions, chatting pairs) may retry a failed login
    ``retries`` times; the count is kept in :data:`RETRIED`. Timed logins never retry.
    """
    sem = asyncio.Semaphore(parallel)
    out: list[Conn] = []
    retried = RETRIED

    async def one(user: str, res: str) -> None:
        async with sem:
            t0 = time.perf_counter()
            for attempt in range(retries + 1):
                try:
                    conn = await login(port, ctx, user, password, res, mech, ping, domain)
                    break
                except (XmppError, OSError):
                    if attempt == retries:
                        raise
                    retried[0] += 1
            if latencies is not None:
                latencies.append((time.perf_counter() - t0) * 1000.0)
            conn.discard()
            out.append(conn)
    tasks = [asyncio.create_task(one(u, r)) for u, r in specs]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        close_all(out)
        raise
    return out


RETRIED = [0]      # set-up logins that failed once and were retried


def close_all(conns: Iterable[Conn]) -> None:
    for c in conns:
        c.close()


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of ``values``, nearest rank."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))]


# ------------------------------------------------------------ scenarios ----

@dataclass
class Env:
    """What a scenario needs to know about the server under test."""

    port: int
    pid: int
    password: str
    ctx: ssl.SSLContext = field(default_factory=client_context)
    domain: str = DOMAIN


async def scenario_login(env: Env, n: int = 500, parallel: int = 50,
                         mech: str = "SCRAM-SHA-1", users: int = 400) -> dict[str, float]:
    """N full logins (STARTTLS + SASL + bind + presence + ping): rate, latency, server CPU."""
    specs = [(f"u{i % users}", f"l{i}") for i in range(n)]
    if mech != "PLAIN":
        await learn_salts(env, sorted({u for u, _ in specs}))
    await quiesce(env.pid)
    lat: list[float] = []
    gen = GenCpu()
    c0, t0 = proc_cpu(env.pid), time.perf_counter()
    conns = await login_many(env.port, env.ctx, specs, env.password, parallel, mech,
                             ping=True, latencies=lat)
    t1, c1 = time.perf_counter(), proc_cpu(env.pid)
    g = gen.percent()
    close_all(conns)
    await asyncio.sleep(1.0)
    return {"logins_s": n / (t1 - t0), "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99),
            "cpu_ms": (c1 - c0) / n * 1000.0, "gen_cpu": g}


def idle_specs(count: int, start: int = 0, first_user: int = 200,
               users: int = 200) -> list[tuple[str, str]]:
    """Idle sessions k = start..count-1 spread over u200..u399, resource i{k}."""
    return [(f"u{first_user + k % users}", f"i{k}") for k in range(start, count)]


async def scenario_idle(env: Env, levels: tuple[int, ...] = (1000, 5000, 10000),
                        parallel: int = 100, settle: float = 2.0) -> dict[str, float]:
    """Server RSS per authenticated idle TLS session at each level (KiB/session)."""
    await learn_salts(env, [u for u, _ in idle_specs(200)])
    await asyncio.sleep(settle)
    await quiesce(env.pid)
    base = proc_rss_kb(env.pid)
    conns: list[Conn] = []
    out: dict[str, float] = {}
    gen = GenCpu()
    try:
        done = 0
        for level in levels:
            conns += await login_many(env.port, env.ctx, idle_specs(level, done),
                                      env.password, parallel, retries=2)
            done = level
            await asyncio.sleep(settle)
            out[f"rss_kb_{level}"] = (proc_rss_kb(env.pid) - base) / level
        out["gen_cpu"] = gen.percent()
    finally:
        close_all(conns)
    await asyncio.sleep(settle)
    await quiesce(env.pid)
    return out


class Pair:
    """Receive-side state of one client in the messaging scenarios."""

    __slots__ = ("me", "conn", "peer_bare", "peer_id", "stamps", "prefix", "seq",
                 "last_seen", "received", "misrouted", "ooo", "tail", "on_msgs")

    def __init__(self, me: int, conn: Conn, peer: int, peer_jid: str) -> None:
        self.me, self.conn, self.peer_id = me, conn, peer
        self.peer_bare = f"u{peer}@{DOMAIN}"
        self.stamps = (f"from='{peer_jid}'".encode(), f'from="{peer_jid}"'.encode())
        self.prefix = (f"<message to='{self.peer_bare}' type='chat'><body>{me} ").encode()
        self.seq = 0
        self.last_seen = 0
        self.received = 0
        self.misrouted = 0
        self.ooo = 0
        self.tail = b""
        self.on_msgs: Callable[[Pair, list[tuple[bytes, bytes, bytes]]], None] | None = None

    def make(self, count: int) -> bytes:
        """``count`` messages to the partner's bare JID, with sequence numbers and a time."""
        now = time.perf_counter_ns()
        parts = []
        for _ in range(count):
            self.seq += 1
            parts.append(b"%s%d %d</body></message>" % (self.prefix, self.seq, now))
        return b"".join(parts)

    def send(self, count: int, batched: bool) -> None:
        """Send ``count`` messages: one stanza per write (so one TLS record
        each), as real clients do; or, ``batched``, all in one write."""
        if batched:
            self.conn.write(self.make(count))
            return
        now = time.perf_counter_ns()
        write, prefix = self.conn.write, self.prefix
        for _ in range(count):
            self.seq += 1
            write(b"%s%d %d</body></message>" % (prefix, self.seq, now))

    def data(self, data: bytes) -> None:
        chunk = self.tail + data if self.tail else data
        end = chunk.rfind(_MSG_END)
        if end < 0:
            self.tail = chunk[-65536:]
            return
        end += len(_MSG_END)
        self.tail = chunk[end:]
        chunk = chunk[:end]
        found = _BODY_RE.findall(chunk)
        n = chunk.count(b"<message")
        stamped = chunk.count(self.stamps[0]) + chunk.count(self.stamps[1])
        if stamped < n:
            self.misrouted += n - stamped
        peer = b"%d" % self.peer_id
        last = self.last_seen
        for sender, seq_b, _ in found:
            if sender != peer:
                self.misrouted += 1
                continue
            seq = int(seq_b)
            if seq <= last:
                self.ooo += 1
            else:
                last = seq
        self.last_seen = last
        self.received += len(found)
        if self.on_msgs is not None and found:
            self.on_msgs(self, found)


async def _pairs_up(env: Env, pairs: int, parallel: int = 50) -> list[Pair]:
    users = [f"u{i}" for i in range(2 * pairs)]
    await learn_salts(env, users)
    conns = await login_many(env.port, env.ctx, [(u, "r0") for u in users], env.password,
                             parallel, retries=2)
    by_user = {c.jid.split("@", 1)[0]: c for c in conns}
    out: list[Pair] = []
    for i in range(2 * pairs):
        peer = i ^ 1
        out.append(Pair(i, by_user[f"u{i}"], peer, by_user[f"u{peer}"].jid))
    await asyncio.sleep(1.0)     # presence echoes and the like, before the handlers go on
    await quiesce(env.pid)
    for p in out:
        p.conn.on_data = p.data
    return out


async def _drain(ps: list[Pair], sent: Callable[[], int], timeout: float) -> None:
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        if sum(p.received for p in ps) >= sent():
            return
        await asyncio.sleep(0.05)


def _check_open(ps: list[Pair]) -> None:
    bad = [p for p in ps if p.conn.closed]
    if bad:
        raise XmppError(f"{len(bad)} chatting connection(s) lost, e.g. {bad[0].conn.jid}: "
                        f"{bad[0].conn.close_reason}; last bytes {bad[0].tail[-200:]!r}")


def _integrity(ps: list[Pair], sent: int) -> dict[str, float]:
    return {"lost": float(sent - sum(p.received for p in ps)),
            "misrouted": float(sum(p.misrouted for p in ps)),
            "ooo": float(sum(p.ooo for p in ps))}


# What a scenario measures besides messages: ``probe()`` is awaited when the
# measured interval starts and returns ``finish(messages)``, awaited when it
# ends, whose dict joins the results (bench/cluster.py adds per-node CPU and
# Redis command counts this way).
Finish = Callable[[int], Awaitable[dict[str, Any]]]
Probe = Callable[[], Awaitable[Finish]]


async def _nothing(_: int) -> dict[str, Any]:
    return {}


async def _no_probe() -> Finish:
    return _nothing


async def closed_loop(ps: list[Pair], window: int, warmup: float, seconds: float,
                      drain: float, probe: Probe = _no_probe,
                      batched: bool = False) -> dict[str, Any]:
    """Closed-loop ping-pong over ``ps``, ``window`` messages in flight per pair
    (one stanza per write unless ``batched``): delivered msg/s; the pairs are
    closed at the end."""
    sending = [True]
    total_sent = [0]

    def reply(p: Pair, found: list[tuple[bytes, bytes, bytes]]) -> None:
        if sending[0]:
            total_sent[0] += len(found)
            p.send(len(found), batched)

    try:
        for p in ps:
            p.on_msgs = reply
        for p in ps[::2]:
            total_sent[0] += window
            p.send(window, batched)
        await asyncio.sleep(warmup)
        _check_open(ps)
        finish = await probe()
        n0 = sum(p.received for p in ps)
        gen = GenCpu()
        t0 = time.perf_counter()
        await asyncio.sleep(seconds)
        n1 = sum(p.received for p in ps)
        t1 = time.perf_counter()
        g = gen.percent()
        delivered = n1 - n0
        extra = await finish(delivered)
        sending[0] = False
        await _drain(ps, lambda: total_sent[0], drain)
        _check_open(ps)
        out: dict[str, Any] = {"msg_s": delivered / (t1 - t0), "gen_cpu": g,
                               "delivered": delivered}
        out.update(extra)
        out.update(_integrity(ps, total_sent[0]))
        return out
    finally:
        close_all(p.conn for p in ps)
        await asyncio.sleep(1.0)


async def open_loop(ps: list[Pair], rate: float, warmup: float, seconds: float,
                    tick: float, drain: float, probe: Probe = _no_probe,
                    batched: bool = False) -> dict[str, Any]:
    """Open loop at ``rate`` msg/s in total, evenly over the senders of ``ps``:
    receive latency; the pairs are closed at the end."""
    lat: list[int] = []
    measuring = [False]

    def record(p: Pair, found: list[tuple[bytes, bytes, bytes]]) -> None:
        if measuring[0]:
            now = time.perf_counter_ns()
            lat.extend(now - int(ts) for _, _, ts in found)

    sent = 0
    try:
        for p in ps:
            p.on_msgs = record
        t_start = time.perf_counter()
        t_measure, t_end = t_start + warmup, t_start + warmup + seconds
        idx = 0
        sent_at_measure = 0
        gen: GenCpu | None = None
        finish: Finish = _nothing
        n_senders = len(ps)
        while True:
            now = time.perf_counter()
            if now >= t_end:
                break
            if gen is None and now >= t_measure:
                measuring[0] = True
                gen = GenCpu()
                finish = await probe()
                sent_at_measure = sent
            due = int((now - t_start) * rate) - sent
            if due > 0:
                batch: dict[int, int] = {}
                for _ in range(due):
                    k = idx % n_senders
                    batch[k] = batch.get(k, 0) + 1
                    idx += 1
                for k, c in batch.items():
                    ps[k].send(c, batched)
                sent += due
            await asyncio.sleep(tick)
        g = gen.percent() if gen is not None else 0.0
        extra = await finish(sent - sent_at_measure)
        await _drain(ps, lambda: sent, drain)
        measuring[0] = False
        _check_open(ps)
        ms = [v / 1e6 for v in lat]
        out: dict[str, Any] = {"p50_ms": pct(ms, 0.5), "p99_ms": pct(ms, 0.99),
                               "rate": sent / (t_end - t_start), "gen_cpu": g}
        out.update(extra)
        out.update(_integrity(ps, sent))
        return out
    finally:
        close_all(p.conn for p in ps)
        await asyncio.sleep(1.0)


def cpu_probe(env: Env) -> Probe:
    """A probe adding the server's CPU per delivered message (``cpu_us``)."""
    async def probe() -> Finish:
        c0 = proc_cpu(env.pid)

        async def finish(delivered: int) -> dict[str, Any]:
            c1 = proc_cpu(env.pid)
            return {"cpu_us": (c1 - c0) / delivered * 1e6 if delivered else float("nan")}
        return finish
    return probe


async def scenario_saturation(env: Env, pairs: int = 100, window: int = 20,
                              warmup: float = 2.0, seconds: float = 10.0,
                              drain: float = 5.0, batched: bool = False) -> dict[str, float]:
    """Closed-loop ping-pong, ``window`` messages in flight per pair, one
    stanza per write unless ``batched``: delivered msg/s and the server's CPU
    per message."""
    out = await closed_loop(await _pairs_up(env, pairs), window, warmup, seconds, drain,
                            cpu_probe(env), batched)
    del out["delivered"]
    return out


async def scenario_fixed(env: Env, pairs: int = 100, rate: float = 2000.0,
                         warmup: float = 2.0, seconds: float = 10.0, tick: float = 0.001,
                         drain: float = 5.0) -> dict[str, float]:
    """Open loop at ``rate`` msg/s in total, evenly over senders, one stanza
    per write: receive latency and the server's CPU per message."""
    return await open_loop(await _pairs_up(env, pairs), rate, warmup, seconds, tick, drain,
                           cpu_probe(env))


async def scenario_msg_idle(env: Env, idle: int = 5000, parallel: int = 100,
                            seconds: float = 10.0) -> dict[str, float]:
    """Saturation and fixed-rate runs with ``idle`` authenticated idle sessions connected."""
    await learn_salts(env, [u for u, _ in idle_specs(200)])
    conns = await login_many(env.port, env.ctx, idle_specs(idle), env.password, parallel,
                             retries=2)
    try:
        await asyncio.sleep(2.0)
        await quiesce(env.pid)
        sat = await scenario_saturation(env, seconds=seconds)
        fix = await scenario_fixed(env, seconds=seconds)
    finally:
        close_all(conns)
    await asyncio.sleep(2.0)
    out = {f"sat_{k}": v for k, v in sat.items()}
    out.update({f"fix_{k}": v for k, v in fix.items()})
    out["gen_cpu"] = max(sat["gen_cpu"], fix["gen_cpu"])
    return out
