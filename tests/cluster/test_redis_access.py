"""How nodes reach Redis, end to end: a password (the ``password`` key or in
the URL), a wrong one, TLS (``rediss://`` with ``tls_ca``), garbage in a
node's inbox, and how many round trips a big presence broadcast costs.

The conftest's ``redis`` fixture is overridden here by a subclass that can
start ``redis-server`` with ``--requirepass`` and/or TLS only (``--port 0
--tls-port P``, certificates from the suite's trustme CA); tests choose with
``@pytest.mark.parametrize("redis", [{...}], indirect=True)``. The
``cluster``, ``site`` and ``xmpp`` fixtures are the conftest's, unchanged:
the nodes' ``[cluster] url`` is ``redis.url`` and the other keys
(``password``, ``tls_ca``) go through ``options``.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import redis.asyncio as aioredis
import trustme

from tests.cluster.conftest import (
    Client, Clients, ClusterFactory, RedisServer, body, eventually,
    presence_from, serving,
)
from tests.conftest import DOMAIN, TIMEOUT
from vinespy.cluster import keys
from vinespy.cluster import wire
from vinespy.jid import JID
from vinespy.storage import Contact

pytestmark = [pytest.mark.integration, pytest.mark.redis]

SECRET = "s3cret-Redis-pw"


# --------------------------------------------------------------------------
# a redis-server with a password and/or TLS


class AccessRedis(RedisServer):
    """The conftest's RedisServer, started with ``--requirepass`` and/or TLS
    only. ``url`` (what the nodes are given) carries neither the password
    nor anything TLS needs besides the scheme; the fixture's own clients
    (``execute``, ``routes``...) authenticate and trust the CA."""

    def __init__(self, tmp: Path, ca: trustme.CA, *, password: str | None = None,
                 tls: bool = False) -> None:
        super().__init__(tmp, password=password)
        self.tls = tls
        self.ca_file = tmp / "redis-ca.pem"
        self.url = f"{'rediss' if tls else 'redis'}://127.0.0.1:{self.port}/0"
        self.direct_url = self.url
        if tls:
            leaf = ca.issue_cert("127.0.0.1", "localhost")
            leaf.private_key_pem.write_to_path(str(tmp / "redis.key"))
            (tmp / "redis.crt").write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
            ca.cert_pem.write_to_path(str(self.ca_file))

    def listen_args(self) -> list[str]:
        if not self.tls:
            return super().listen_args()
        return ["--port", "0", "--tls-port", str(self.port),
                "--tls-cert-file", str(self.dir / "redis.crt"),
                "--tls-key-file", str(self.dir / "redis.key"),
                "--tls-ca-cert-file", str(self.ca_file), "--tls-auth-clients", "no"]

    def connection_kwargs(self) -> dict[str, Any]:
        tls = {"ssl": True, "ssl_ca_certs": str(self.ca_file)} if self.tls else {}
        return {**super().connection_kwargs(), **tls}

    async def info(self, section: str) -> dict[str, Any]:
        async with self._once() as c:
            return dict(await c.info(section))


@pytest.fixture
async def redis(request: pytest.FixtureRequest, tmp_path: Path,
                ca: trustme.CA) -> AsyncIterator[AccessRedis]:
    """Overrides the conftest's: ``request.param`` (indirect parametrization)
    is ``{"password": ..., "tls": bool}``; plain Redis without it."""
    d = tmp_path / "redis"
    d.mkdir()
    async with serving(AccessRedis(d, ca, **getattr(request, "param", {}))) as r:
        yield r


async def raw_ping(port: int) -> bytes:
    """What Redis answers a plain-text PING on ``port`` with no AUTH (one
    line), b"" if it closes the connection instead."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), TIMEOUT)
    try:
        writer.write(b"PING\r\n")
        await writer.drain()
        try:
            return await asyncio.wait_for(reader.readline(), TIMEOUT)
        except ConnectionError:
            return b""
    finally:
        writer.close()


def with_redis(**param: Any) -> Any:
    name = "-".join(param)
    return pytest.mark.parametrize("redis", [param], indirect=True, ids=[name])


async def chat_both_ways(a: Client, b: Client, tag: str, n: int = 5) -> None:
    """``a`` and ``b`` (on different nodes) exchange ``n`` messages each way,
    to full and bare JIDs; all arrive in order from the sender's full JID."""
    for sender, receiver in ((a, b), (b, a)):
        sent = [f"{tag} {sender.bare} {i}" for i in range(n)]
        for i, text in enumerate(sent):
            sender.say(receiver.jid if i % 2 else receiver.bare, text)
        got = [await receiver.messages.get(lambda m: str(m["body"]).startswith(tag))
               for _ in sent]
        assert [str(m["body"]) for m in got] == sent
        assert {str(m["from"]) for m in got} == {sender.jid}
    await a.ping(b.jid)             # an IQ round trip across the nodes
    await b.ping(a.jid)


def lines(node: Any, pattern: str) -> list[str]:
    rx = re.compile(pattern)
    return [ln for ln in node.stderr_lines if rx.search(ln)]


# --------------------------------------------------------------------------
# a. requirepass


@with_redis(password=SECRET)
async def test_password_key(redis: AccessRedis, cluster: ClusterFactory, xmpp: Clients) -> None:
    """Redis with requirepass, nodes with ``password = "..."`` and a URL without
    one: both register, and users on different nodes chat both ways."""
    assert (await raw_ping(redis.port)).startswith(b"-NOAUTH")     # it does want one
    c = await cluster(2, options={"password": SECRET})
    assert set(await redis.nodes()) == {"node-a", "node-b"}
    alice = await xmpp.login(c["node-a"], "alice/r1")
    bob = await xmpp.login(c["node-b"], "bob/r1")
    await chat_both_ways(alice, bob, "pw-key")
    for n in c.nodes:
        assert lines(n, rf"cluster: node {n.name} registered at redis://127\.0\.0\.1:"), n
        assert not lines(n, SECRET), f"{n.name} logged the password"


@with_redis(password=SECRET)
async def test_password_in_url(redis: AccessRedis, cluster: ClusterFactory,
                               xmpp: Clients) -> None:
    """The same with the password in the URL (``redis://:PW@host:port/0``):
    chat across nodes works and no log line shows the password."""
    redis.url = f"redis://:{SECRET}@127.0.0.1:{redis.port}/0"
    c = await cluster(2)
    alice = await xmpp.login(c["node-a"], "alice/r1")
    bob = await xmpp.login(c["node-b"], "bob/r1")
    await chat_both_ways(alice, bob, "pw-url")
    for n in c.nodes:
        assert lines(n, r"registered at redis://:\*\*\*@127\.0\.0\.1:"), n.stderr_lines[-20:]
        assert not lines(n, SECRET), f"{n.name} logged the password"


@pytest.mark.parametrize("how", ["key", "url", "none"])
@with_redis(password=SECRET)
async def test_wrong_password_one_line_local_users_retry(redis: AccessRedis,
                                                         cluster: ClusterFactory,
                                                         xmpp: Clients, how: str) -> None:
    """A node whose password Redis refuses (wrong as the key, wrong in the URL,
    or none at all) still starts: one clear error line on stderr naming the
    Redis URL (not the password), its own users chat, and it keeps retrying
    (Redis counts the refusals, no further line): once Redis accepts that
    password the node registers, resyncs its sessions and chats across nodes."""
    wrong = "not-the-password"
    options: dict[str, Any] = {}
    if how == "key":
        options["password"] = wrong
    elif how == "url":
        redis.url = f"redis://:{wrong}@127.0.0.1:{redis.port}/0"
    c = await cluster(1, options=options)           # waits for "listening on"
    a = c["node-a"]
    (line,) = await a.wait_line(r"cluster: lost Redis at ")
    assert "ERROR" in line and "serving local users" in line, line
    assert f"127.0.0.1:{redis.port}" in line and wrong not in line, line
    assert re.search(r"\(Authentication\w*Error: ", line), line
    # It retries: Redis has refused it several times, it said so once.
    error = "NOAUTH" if how == "none" else "WRONGPASS"

    async def refused() -> int:
        n = int((await redis.info("errorstats")).get(f"errorstat_{error}", {}).get("count", 0))
        return n if n >= 4 else 0
    await eventually(refused, what=f"Redis to refuse node-a 4 times ({error})")
    assert len(lines(a, "lost Redis")) == 1, lines(a, "lost Redis")
    assert await redis.nodes() == {}

    alice = await xmpp.login(a, "alice/r1", wait_route=False)
    carol = await xmpp.login(a, "carol/r1", wait_route=False)
    t0 = time.monotonic()
    alice.say(carol.jid, "local while Redis refuses us")
    assert str((await carol.messages.get(body("local while Redis refuses us")))["from"]) \
        == alice.jid
    print(f"[{how}] a local message while Redis refuses node-a took "
          f"{(time.monotonic() - t0) * 1000:.0f} ms (dead_after = 1 s)")

    # Make Redis accept what the node sends: it registers by itself.
    now = "" if how == "none" else wrong
    await redis.execute("CONFIG", "SET", "requirepass", now)
    redis.password = now or None
    since = len(a.stderr_lines)
    await a.wait_line(r"cluster: node node-a registered", since=since)
    await a.wait_line(r"cluster: Redis at .* is reachable again", since=since)
    await c.wait_route(alice.jid, match=lambda e: bool(e.get("available")))
    await c.wait_route(carol.jid, match=lambda e: bool(e.get("available")))
    b = await c.add_node()                  # the same options: now the right password
    bob = await xmpp.login(b, "bob/r1")
    await chat_both_ways(alice, bob, "after-fix")
    assert len(lines(a, "lost Redis")) == 1
    assert not any(wrong in ln for n in c.nodes for ln in n.stderr_lines)


# --------------------------------------------------------------------------
# b. TLS


@pytest.mark.parametrize("redis", [{"tls": True}, {"tls": True, "password": SECRET}],
                         indirect=True, ids=["tls", "tls-requirepass"])
async def test_tls(redis: AccessRedis, cluster: ClusterFactory, xmpp: Clients) -> None:
    """Redis serving TLS only (``--port 0 --tls-port P``), its certificate from
    the test CA; nodes with ``url = "rediss://..."`` and ``tls_ca`` (and the
    password when Redis wants one): plain text gets no PONG there, both nodes
    register over TLS (the pool and the stream reader connected) and users on
    different nodes chat both ways."""
    assert not (await raw_ping(redis.port)).startswith(b"+PONG")    # no plain text there
    options = {"tls_ca": str(redis.ca_file), "password": redis.password}
    c = await cluster(2, options=options)
    alice = await xmpp.login(c["node-a"], "alice/r1")
    bob = await xmpp.login(c["node-b"], "bob/r1")
    await chat_both_ways(alice, bob, "tls")
    for n in c.nodes:
        assert lines(n, rf"cluster: node {n.name} registered at rediss://127\.0\.0\.1:"), n
        addrs = n.redis_addrs()
        assert len(addrs) >= 2, addrs          # the pool and the reader, at least
    assert set(await redis.nodes()) == {"node-a", "node-b"}


@with_redis(tls=True)
async def test_tls_without_the_ca(redis: AccessRedis, cluster: ClusterFactory,
                                  xmpp: Clients) -> None:
    """A rediss:// node that does not trust Redis's certificate (no tls_ca: the
    system's CAs) says so in one line and serves its own users."""
    c = await cluster(1)
    a = c["node-a"]
    (line,) = await a.wait_line(r"cluster: lost Redis at rediss://")
    assert "CERTIFICATE_VERIFY_FAILED" in line, line
    alice = await xmpp.login(a, "alice/r1", wait_route=False)
    carol = await xmpp.login(a, "carol/r1", wait_route=False)
    carol.say(alice.jid, "no tls trust")
    await alice.messages.get(body("no tls trust"))
    assert len(lines(a, "lost Redis")) == 1
    assert await redis.nodes() == {}


# --------------------------------------------------------------------------
# c. garbage in an inbox


async def test_malformed_inbox_entries_are_logged_and_skipped(
        redis: AccessRedis, cluster: ClusterFactory, xmpp: Clients) -> None:
    """Entries that are not what vinespy writes, XADDed straight to node-b's
    inbox: one without a header, one with an unknown item kind and a stanza
    item whose XML is broken (for a resource not bound there), one whose
    stanza item holds two stanzas. node-b logs each and skips it; its reader
    goes on: chat across the nodes continues, in order, nothing lost."""
    c = await cluster(2)
    a, b = c["node-a"], c["node-b"]
    alice = await xmpp.login(a, "alice/r1")
    bob = await xmpp.login(b, "bob/r1")
    await chat_both_ways(alice, bob, "before")
    since = len(b.stderr_lines)
    inbox = keys.inbox("node-b")
    await redis.execute("XADD", inbox, "*", "x", "garbage")
    await redis.execute("XADD", inbox, "*", "n", "intruder", "e", "i1", "q", "not-a-seq",
                        "0", "iany@x.lit")
    gone = f"bob@{DOMAIN}/nowhere"
    bad = wire.entry("intruder", "i1", 1, [
        b"zzz",
        wire.stanza_item(gone, 0, b"<message type='chat'><body>broken</message>"),
        wire.stanza_item(gone, 0, b"<message/><message/>"),
        wire.invalidate_item("not a jid@@"),
    ])
    await redis.execute("XADD", inbox, "*", *[x for kv in bad.items() for x in kv])
    await b.wait_line(r"skipping a malformed cluster entry", since=since, count=2)
    await b.wait_line(r"skipping a cluster item from intruder: unknown item kind b'z'",
                      since=since)
    await b.wait_line(r"skipping a cluster item from intruder: malformed stanza", since=since)
    await b.wait_line(r"skipping a cluster item from intruder: an s item holds exactly one",
                      since=since)
    await b.wait_line(r"skipping a cluster item from intruder: localpart", since=since)
    assert not lines(b, "Traceback"), "\n".join(b.stderr_lines[since:])
    assert b.alive
    await chat_both_ways(alice, bob, "after")
    assert not bob.disconnected.done() and not alice.disconnected.done()


async def test_broken_stanza_item_for_a_bound_resource(redis: AccessRedis,
                                                       cluster: ClusterFactory,
                                                       xmpp: Clients) -> None:
    """A stanza item with broken XML for a resource that IS bound on the node
    must be logged and skipped like any other bad item, not written to that
    client's stream (which breaks it); the client keeps chatting."""
    c = await cluster(2)
    a, b = c["node-a"], c["node-b"]
    alice = await xmpp.login(a, "alice/r1")
    bob = await xmpp.login(b, "bob/r1")
    since = len(b.stderr_lines)
    bad = wire.entry("intruder", "i1", 1, [
        wire.stanza_item(bob.jid, 0, b"<message type='chat'><body>broken</message>"),
    ])
    await redis.execute("XADD", keys.inbox("node-b"), "*", *[x for kv in bad.items() for x in kv])
    logged = asyncio.ensure_future(
        b.wait_line(r"skipping a cluster item from intruder", since=since))
    done, _ = await asyncio.wait({logged, bob.disconnected}, timeout=TIMEOUT,
                                 return_when=asyncio.FIRST_COMPLETED)
    if not logged.done():
        logged.cancel()
        await asyncio.gather(logged, return_exceptions=True)
    assert not bob.disconnected.done(), (
        "bob's stream broke: " + "; ".join(ln for ln in b.stderr_lines[since:]
                                           if "closing stream" in ln))
    assert logged in done and not logged.exception()
    await chat_both_ways(alice, bob, "after-broken")
    assert not bob.disconnected.done()


# --------------------------------------------------------------------------
# d. round trips of a big presence broadcast


_SIMPLE = frozenset(b"+-:_,#(")         # RESP2/RESP3 types of one line
_BLOB = frozenset(b"$!=")               # a length, then that many bytes
_AGGREGATE = {ord("*"): 1, ord("~"): 1, ord(">"): 1, ord("%"): 2, ord("|"): 2}


def _skip_reply(buf: bytes, i: int) -> int:
    """The end of the RESP2/RESP3 value starting at ``buf[i]``, or -1 if incomplete."""
    if i >= len(buf):
        return -1
    j = buf.find(b"\r\n", i)
    if j < 0:
        return -1
    t = buf[i]
    if t in _SIMPLE:
        return j + 2
    n = int(buf[i + 1:j])
    if t in _BLOB:
        if n < 0:
            return j + 2
        end = j + 2 + n + 2
        return end if end <= len(buf) else -1
    if t in _AGGREGATE:
        k = j + 2
        for _ in range(max(n, 0) * _AGGREGATE[t]):
            k = _skip_reply(buf, k)
            if k < 0:
                return -1
        return k
    raise ValueError(f"unexpected RESP type {chr(t)!r}")


def _replies(buf: bytes) -> tuple[int, int]:
    """(how many complete replies, bytes they take) at the start of ``buf``.
    RESP3 attributes (``|``) and pushes (``>``) answer no command: not counted."""
    i = count = 0
    while (k := _skip_reply(buf, i)) >= 0:
        if buf[i] not in b"|>":
            count += 1
        i = k
    return count, i


def _next_command(buf: bytes, i: int) -> tuple[str, int] | None:
    """(name, end) of the RESP command array starting at ``buf[i]``, None if incomplete."""
    j = buf.find(b"\r\n", i)
    if j < 0:
        return None
    if buf[i:i + 1] != b"*":
        raise ValueError(f"not a RESP command: {buf[i:i + 40]!r}")
    n = int(buf[i + 1:j])
    k = j + 2
    name = ""
    for a in range(n):
        e = buf.find(b"\r\n", k)
        if e < 0:
            return None
        size = int(buf[k + 1:e])
        end = e + 2 + size + 2
        if end > len(buf):
            return None
        if a == 0:
            name = buf[e + 2:e + 2 + size].decode().upper()
        k = end
    return name, k


class RoundTripProxy:
    """A real TCP proxy between one node and Redis that parses RESP both ways.

    For each connection it knows how many commands are still unanswered. A
    *round trip* begins when the node sends a command while every earlier
    reply has already been passed back to it; the commands that follow it
    before the replies catch up (a pipeline) belong to the same round trip.
    While ``recording``, each round trip is kept as its list of command names.
    """

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = 0
        self.recording = False
        self.trips: list[list[str]] = []
        self.errors: list[BaseException] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in self._writers:
            w.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def hgetall_trips(self) -> list[int]:
        """How many HGETALLs each recorded round trip that carried any held."""
        return [n for n in (t.count("HGETALL") for t in self.trips) if n]

    async def _conn(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        sreader, swriter = await asyncio.open_connection("127.0.0.1", self.target)
        self._writers += [cwriter, swriter]
        state: dict[str, Any] = {"pending": 0, "trip": None}

        async def up() -> None:
            buf = b""
            while data := await creader.read(1 << 16):
                buf += data
                i = 0
                while (cmd := _next_command(buf, i)) is not None:
                    name, i = cmd
                    if state["pending"] == 0:
                        state["trip"] = []
                        if self.recording:
                            self.trips.append(state["trip"])
                    state["pending"] += 1
                    state["trip"].append(name)
                buf = buf[i:]
                swriter.write(data)
                await swriter.drain()
            swriter.close()

        async def down() -> None:
            buf = b""
            while data := await sreader.read(1 << 16):
                buf += data
                n, used = _replies(buf)
                state["pending"] -= n
                buf = buf[used:]
                cwriter.write(data)
                await cwriter.drain()
            cwriter.close()

        for coro in (up(), down()):
            t = asyncio.create_task(self._guard(coro, cwriter, swriter))
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def _guard(self, coro: Any, *writers: asyncio.StreamWriter) -> None:
        try:
            await coro
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception as exc:        # a parse error: the measure would be wrong
            self.errors.append(exc)
            for w in writers:           # fail now rather than leave the node hanging
                w.close()


CONTACTS = 500


async def test_presence_to_a_500_contact_roster_costs_few_round_trips(
        redis: AccessRedis, cluster: ClusterFactory, xmpp: Clients, site: Any,
        capsys: pytest.CaptureFixture[str]) -> None:
    """alice has 500 contacts (subscription both or from; bob, online on
    node-b, is one of them, the others are offline) and sends her initial
    presence on node-a, which must look up where all 500 are connected
    (an HGETALL of ``sessions:{bare}`` each) to broadcast and probe.

    What is measured: node-a talks to Redis through a RESP-parsing proxy
    (:class:`RoundTripProxy`) that counts round trips per connection: a
    round trip starts with a command sent while no earlier reply is still
    owed, and takes every command sent before its replies came back (a
    pipeline). Between CONFIG RESETSTAT and the answer to a ping alice sends
    right after her presence (her stream handles stanzas in order), we
    count the round trips that carry HGETALLs and how many HGETALLs each
    held, and Redis's own ``cmdstat_hgetall`` calls. Asserted: at least 500
    HGETALLs were made, in at most 5 round trips (one pipeline, not 500
    sequential reads), and the broadcast reached bob and the probe answer
    reached alice."""
    alice_jid, bob_jid = JID.parse(f"alice@{DOMAIN}"), JID.parse(f"bob@{DOMAIN}")
    storage = site.open()
    try:
        alice = await storage.find_user(alice_jid)
        for i in range(CONTACTS - 1):
            j = JID.parse(f"contact{i:03d}@{DOMAIN}")
            alice.roster[j] = Contact(j, subscription="both" if i % 2 else "from")
        alice.roster[bob_jid] = Contact(bob_jid, subscription="both")
        await storage.save_user(alice)
        bob = await storage.find_user(bob_jid)
        bob.roster[alice_jid] = Contact(alice_jid, subscription="both")
        await storage.save_user(bob)
    finally:
        await storage.close()

    proxy = RoundTripProxy(redis.port)
    await proxy.start()
    try:
        redis.url = f"redis://127.0.0.1:{proxy.port}/0"     # node-a's config only
        c = await cluster(1)
        redis.url = redis.direct_url
        await c.add_node()
        a, b = c["node-a"], c["node-b"]
        bob_c = await xmpp.login(b, "bob/r1")
        alice_c = await xmpp.login(a, "alice/r1", presence=False)

        await redis.execute("CONFIG", "RESETSTAT")
        proxy.recording = True
        t0 = time.monotonic()
        alice_c.presence()
        await alice_c.ping()
        elapsed = time.monotonic() - t0
        proxy.recording = False
        stats = await redis.info("commandstats")

        await bob_c.presences.get(presence_from(alice_c.jid, "available"))
        await alice_c.presences.get(presence_from(bob_c.jid, "available"))
        assert not proxy.errors, proxy.errors
        trips = proxy.hgetall_trips()
        calls = int(stats.get("cmdstat_hgetall", {}).get("calls", 0))
        with capsys.disabled():
            print(f"\n[round trips] initial presence to {CONTACTS} contacts: {sum(trips)} "
                  f"HGETALLs from node-a in {len(trips)} round trips {trips}; "
                  f"Redis counted {calls} HGETALL calls (both nodes); "
                  f"{len(proxy.trips)} round trips of any kind from node-a; "
                  f"presence + ping answered in {elapsed * 1000:.0f} ms")
        assert sum(trips) >= CONTACTS, trips
        assert calls >= sum(trips)
        assert len(trips) <= 5, trips               # pipelined, not one read per contact
    finally:
        await proxy.close()


async def test_round_trip_proxy_counts_what_it_should(redis: AccessRedis) -> None:
    """The measuring proxy itself: 50 sequential HGETALLs are 50 round trips,
    a pipeline of 500 is one, a blocking XREAD and a MULTI are one each."""
    proxy = RoundTripProxy(redis.port)
    await proxy.start()
    c = aioredis.Redis(host="127.0.0.1", port=proxy.port, socket_timeout=5)
    try:
        await c.ping()
        proxy.recording = True
        for i in range(50):
            await c.hgetall(f"sessions:u{i}@{DOMAIN}")
        pipe = c.pipeline(transaction=False)
        for i in range(500):
            pipe.hgetall(f"sessions:u{i}@{DOMAIN}")
        await pipe.execute()
        await c.xread({"s": "0-0"}, block=50)
        async with c.pipeline(transaction=True) as tx:
            await tx.hset("h", "a", "b").hgetall("h").execute()
        proxy.recording = False
        assert proxy.hgetall_trips() == [1] * 50 + [500, 1]
        assert len(proxy.trips) == 53
        assert proxy.trips[-1] == ["MULTI", "HSET", "HGETALL", "EXEC"]
        assert not proxy.errors
    finally:
        await c.aclose()
        await proxy.close()
