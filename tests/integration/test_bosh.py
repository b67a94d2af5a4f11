"""XMPP over BOSH (XEP-0124 + XEP-0206), spoken byte by byte with aiohttp's
client against a real server, with slixmpp TCP users on the other side.

Each BOSH request is one real HTTP POST; a held (long-polling) request is a
POST whose answer has not come yet (an asyncio task). Timeouts are tested
with the shortest settings (``wait`` 1-2 s, ``bosh_inactivity = 5``), and
every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import ssl
import time
from xml.etree import ElementTree
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import aiohttp
import pytest
import trustme
from scramp import ScramClient

from tests.conftest import DOMAIN, PASSWORD, Running, running, wait_event
from tests.rawclient import Raw
from tests.support import TIMEOUT, free_port
from vinespy import ns
from vinespy.jid import JID
from vinespy.storage import Contact

pytestmark = pytest.mark.integration

B = f"{{{ns.HTTPBIND}}}"
XBOSH = f"{{{ns.XBOSH}}}"
SASL = f"{{{ns.SASL}}}"
C = f"{{{ns.CLIENT}}}"
STREAM = f"{{{ns.STREAM}}}"
ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
SM = "urn:xmpp:sm:3"


def http_table(**keys: Any) -> str:
    """An ``[http]`` table on a free loopback port (and ``keys``)."""
    extra = "".join(f"{k} = {v}\n" for k, v in keys.items())
    return f'[http]\naddress = "127.0.0.1"\nport = {free_port()}\n{extra}'


class Response:
    """One HTTP response to a BOSH request: status, raw bytes, the parsed body."""

    def __init__(self, status: int, data: bytes) -> None:
        self.status = status
        self.data = data
        self.body = ElementTree.fromstring(data) if data.startswith(b"<") else None

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.data[:400]!r}>"

    @property
    def type(self) -> str | None:
        assert self.body is not None, self
        return self.body.get("type")

    @property
    def condition(self) -> str | None:
        assert self.body is not None, self
        return self.body.get("condition")

    @property
    def children(self) -> list[ElementTree.Element]:
        assert self.body is not None, self
        return list(self.body)

    def find(self, tag: str) -> ElementTree.Element | None:
        return next((el for el in self.children if el.tag == tag), None)

    def terminated(self, condition: str | None) -> bool:
        return self.type == "terminate" and self.condition == condition


class Bosh:
    """One BOSH session's client side: rids, sid, raw bodies, and the XMPP
    steps (SASL, restart, bind) done with them."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url
        self.rid = secrets.randbelow(2 ** 40) + 1000      # the next rid to send
        self.sid = ""
        self.jid = ""
        self.created: Response | None = None

    async def post(self, data: bytes | str, *, headers: dict[str, str] | None = None,
                   url: str | None = None, timeout: float = TIMEOUT) -> Response:
        """One POST; its response (waiting at most ``timeout``)."""
        raw = data.encode() if isinstance(data, str) else data
        async with self.http.post(url or self.url, data=raw, headers={
                "Content-Type": "text/xml; charset=utf-8", **(headers or {})},
                timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            return Response(resp.status, await resp.read())

    def body(self, payload: str = "", *, rid: int | None = None, **attrs: str) -> str:
        """A ``<body/>`` of this session; the next rid unless ``rid`` is given."""
        if rid is None:
            rid = self.rid
            self.rid += 1
        head = {"rid": str(rid), **({"sid": self.sid} if self.sid else {}), **attrs}
        text = "".join(f" {k}='{v}'" for k, v in head.items())
        return (f"<body xmlns='{ns.HTTPBIND}' xmlns:xmpp='{ns.XBOSH}'{text}>"
                f"{payload}</body>")

    async def send(self, payload: str = "", *, rid: int | None = None,
                   timeout: float = TIMEOUT, **attrs: str) -> Response:
        return await self.post(self.body(payload, rid=rid, **attrs), timeout=timeout)

    def hold(self, payload: str = "", **attrs: str) -> asyncio.Task[Response]:
        """A request sent now whose answer is awaited later (a held request)."""
        return asyncio.create_task(self.post(self.body(payload, **attrs)))

    async def create(self, to: str = DOMAIN, *, wait: int = 60, hold: int = 1,
                     **attrs: str) -> Response:
        """XEP-0124 §7.1 / XEP-0206 §4: the session-creation request."""
        resp = await self.send(to=to, wait=str(wait), hold=str(hold), ver="1.11",
                               **{"xml:lang": "en", "xmpp:version": "1.0", **attrs})
        assert resp.status == 200, resp
        if resp.type != "terminate":
            self.sid = resp.body.get("sid", "") if resp.body is not None else ""
            self.created = resp
        return resp

    async def plain(self, user: str, password: str = PASSWORD) -> Response:
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        return await self.send(f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>{token}</auth>")

    async def scram(self, user: str, password: str = PASSWORD) -> Response:
        """SCRAM-SHA-1 (RFC 5802) with scramp's client; the server's proof checked."""
        client = ScramClient(["SCRAM-SHA-1"], user, password)
        first = base64.b64encode(client.get_client_first().encode()).decode()
        resp = await self.send(f"<auth xmlns='{ns.SASL}' mechanism='SCRAM-SHA-1'>{first}</auth>")
        challenge = resp.find(f"{SASL}challenge")
        assert challenge is not None, resp
        client.set_server_first(base64.b64decode(challenge.text or "").decode())
        final = base64.b64encode(client.get_client_final().encode()).decode()
        resp = await self.send(f"<response xmlns='{ns.SASL}'>{final}</response>")
        success = resp.find(f"{SASL}success")
        assert success is not None, resp
        client.set_server_final(base64.b64decode(success.text or "").decode())
        return resp

    async def restart(self) -> Response:
        """XEP-0206 §5: the stream restart after SASL: the new features."""
        resp = await self.send(to=DOMAIN, **{"xmpp:restart": "true", "xml:lang": "en"})
        assert resp.find(f"{STREAM}features") is not None, resp
        return resp

    async def bind(self, resource: str = "web") -> str:
        resp = await self.send(f"<iq xmlns='{ns.CLIENT}' type='set' id='bind1'>"
                               f"<bind xmlns='{ns.BIND}'><resource>{resource}</resource>"
                               "</bind></iq>")
        iq = resp.find(f"{C}iq")
        assert iq is not None and iq.get("type") == "result", resp
        jid = iq.find(f"{{{ns.BIND}}}bind/{{{ns.BIND}}}jid")
        assert jid is not None and jid.text, resp
        self.jid = jid.text
        return jid.text

    async def login(self, user: str = "alice", resource: str = "web", *,
                    presence: bool = True, **create: Any) -> str:
        """Create, PLAIN, restart, bind (and initial presence): the full JID."""
        resp = await self.create(**create)
        assert resp.type is None, resp
        assert (await self.plain(user)).find(f"{SASL}success") is not None
        await self.restart()
        jid = await self.bind(resource)
        if presence:
            await self.send("<presence xmlns='jabber:client'/>")
        return jid

    async def stanzas(self, tag: str, until: float = TIMEOUT) -> list[ElementTree.Element]:
        """Poll (held requests, one after the other) until some ``tag``
        elements come; those."""
        deadline = time.monotonic() + until
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no <{tag}/> within {until:g} s"
            resp = await self.send(timeout=left)
            assert resp.type is None, resp
            found = [el for el in resp.children if el.tag == tag]
            if found:
                return found


@contextlib.asynccontextmanager
async def http_client() -> AsyncIterator[aiohttp.ClientSession]:
    # Up to 8 connections at once to one host (held requests and their successors).
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8)) as s:
        yield s


def bosh_url(srv: Running, path: str = "/http-bind") -> str:
    return f"http://127.0.0.1:{srv.server.ports['http']}{path}"


@pytest.fixture
async def http_server(tmp_path: Path, ca: trustme.CA) -> AsyncIterator[Running]:
    """The default server with ``[http]`` on (BOSH at /http-bind), alice and bob."""
    async with running(tmp_path, ca, extra=http_table(bosh_max_wait=30)) as srv:
        await srv.user("alice")
        await srv.user("bob")
        yield srv


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with http_client() as s:
        yield s


def bodies(elements: list[ElementTree.Element]) -> list[str]:
    return [el.findtext(f"{C}body") or "" for el in elements]


async def until(check: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Poll in-process state (no event tells it) for at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.01)


def session_of(srv: Running, bosh: Bosh) -> Any:
    """The server's side of ``bosh`` (its BoshStream)."""
    assert srv.server.http is not None
    return srv.server.http.bosh.sessions[bosh.sid]


async def held(srv: Running, bosh: Bosh, n: int = 1) -> None:
    """Until ``n`` requests of ``bosh`` are held by the server."""
    stream = session_of(srv, bosh)
    await until(lambda: len(stream._held) >= n, f"{n} held request(s)")


async def early(srv: Running, bosh: Bosh, rid: int) -> None:
    """Until the request ``rid`` waits at the server for the ones before it."""
    stream = session_of(srv, bosh)
    await until(lambda: rid in stream._early, f"rid {rid} to arrive early")


def bound(srv: Running, jid: str) -> bool:
    return srv.server.sessions.get(JID.parse(jid)) is not None


async def befriend(srv: Running, a: str, b: str) -> None:
    """``a`` and ``b`` subscribed to each other, written straight into storage."""
    for owner, contact in ((a, b), (b, a)):
        user = await srv.storage.find_user(JID.parse(owner))
        assert user is not None
        user.roster[JID.parse(contact)] = Contact(JID.parse(contact), subscription="both")
        user.roster_version += 1
        await srv.storage.save_user(user)


def message(to: str, text: str) -> str:
    return f"<message xmlns='jabber:client' to='{to}' type='chat'><body>{text}</body></message>"


def is_presence(frm: str, type: str = "available") -> Callable[[Any], bool]:
    def match(p: Any) -> bool:
        t = p["type"] if p["type"] in ("unavailable", "error") else "available"
        return bool(p["from"].bare == frm and t == type)
    return match


# -- session creation ---------------------------------------------------------


async def test_session_creation_response_has_the_session_parameters(
        http_server: Running, http: aiohttp.ClientSession) -> None:
    """XEP-0124 §7.1 + XEP-0206 §4-5: sid, wait (capped by bosh_max_wait),
    hold (capped to 1), requests = hold + 1, inactivity, polling, ver, from,
    authid, xmpp:version and xmpp:restartlogic; the stream features (SASL,
    no STARTTLS) are in it. sids are long, random and differ per session."""
    url = bosh_url(http_server)
    one = Bosh(http, url)
    resp = await one.create(wait=300, hold=5)
    body = resp.body
    assert body is not None and resp.type is None, resp
    assert body.tag == f"{B}body"
    assert body.get("wait") == "30"                     # bosh_max_wait
    assert body.get("hold") == "1"
    assert body.get("requests") == "2"
    assert body.get("inactivity") == "60"
    assert body.get("polling") == "2"
    assert body.get("ver") == "1.11"
    assert body.get("from") == DOMAIN
    assert body.get("authid")
    assert body.get(f"{XBOSH}version") == "1.0"
    assert body.get(f"{XBOSH}restartlogic") == "true"
    features = resp.find(f"{STREAM}features")
    assert features is not None, resp
    mechs = features.find(f"{SASL}mechanisms")
    assert mechs is not None
    assert {m.text for m in mechs} >= {"PLAIN", "SCRAM-SHA-1"}
    assert features.find(f"{{{ns.TLS}}}starttls") is None

    two = Bosh(http, url)
    resp = await two.create(wait=10, hold=0)
    assert resp.body is not None and resp.type is None, resp
    assert resp.body.get("wait") == "10"
    assert resp.body.get("hold") == "0"
    assert resp.body.get("requests") == "1"
    assert resp.body.get("authid") != body.get("authid")
    sids = {one.sid, two.sid}
    for _ in range(8):
        other = Bosh(http, url)
        await other.create()
        sids.add(other.sid)
    assert len(sids) == 10
    for sid in sids:
        assert len(sid) >= 32, sid                      # 192 random bits, base64url
    # Random all along (no shared prefix or counter): every position varies.
    for i in range(32):
        assert len({sid[i] for sid in sids}) > 1, (i, sids)


async def test_scram_login_then_chat_both_ways_with_a_tcp_user(
        http_server: Running, http: aiohttp.ClientSession) -> None:
    """SCRAM-SHA-1 (the server's proof checked), restart, bind over BOSH; a
    message to bob (TCP). The request that carried it is held, and bob's
    reply answers it at once (well before ``wait``), as a ``jabber:client``
    stanza."""
    bosh = Bosh(http, bosh_url(http_server))
    created = await bosh.create(wait=30)
    assert created.type is None, created
    await bosh.scram("alice")
    features = (await bosh.restart()).find(f"{STREAM}features")
    assert features is not None
    assert features.find(f"{{{ns.BIND}}}bind") is not None
    assert features.find(f"{SASL}mechanisms") is None
    jid = await bosh.bind("web")
    assert jid == f"{ALICE}/web"
    assert bound(http_server, jid)
    bob = await http_server.login(BOB)

    got = asyncio.ensure_future(wait_event(bob, "message"))
    sent = bosh.hold(message(BOB, "hello bob"))
    msg = await got
    assert msg["body"] == "hello bob" and msg["from"] == jid
    await held(http_server, bosh)
    assert not sent.done()

    started = time.monotonic()
    bob.send_message(mto=jid, mbody="hello alice", mtype="chat")
    answer = await asyncio.wait_for(sent, TIMEOUT)
    assert time.monotonic() - started < 5, "answered by the wait, not by the message"
    messages = [el for el in answer.children if el.tag == f"{C}message"]
    assert bodies(messages) == ["hello alice"], answer
    assert messages[0].get("from") == str(bob.boundjid)
    assert b"<message xmlns='jabber:client'" in answer.data, answer

    # The next poll is held too, and a second message answers it.
    poll = bosh.hold()
    await held(http_server, bosh)
    bob.send_message(mto=jid, mbody="still there?", mtype="chat")
    answer = await asyncio.wait_for(poll, TIMEOUT)
    assert bodies([el for el in answer.children if el.tag == f"{C}message"]) == ["still there?"]


async def test_plain_login_and_an_empty_poll_answered_after_wait(
        http_server: Running, http: aiohttp.ClientSession) -> None:
    """PLAIN works too; with nothing to send, a held request is answered
    empty after ``wait`` s (1 s here), not before and not much later."""
    bosh = Bosh(http, bosh_url(http_server))
    await bosh.login(presence=False, wait=1)
    started = time.monotonic()
    resp = await bosh.send()
    elapsed = time.monotonic() - started
    assert resp.status == 200 and resp.type is None and resp.children == [], resp
    assert 0.9 <= elapsed < 5, elapsed


async def test_wrong_password_is_a_sasl_failure_not_the_end(
        http_server: Running, http: aiohttp.ClientSession) -> None:
    bosh = Bosh(http, bosh_url(http_server))
    await bosh.create()
    resp = await bosh.plain("alice", "wrong")
    failure = resp.find(f"{SASL}failure")
    assert failure is not None and failure.find(f"{SASL}not-authorized") is not None, resp
    resp = await bosh.plain("alice")
    assert resp.find(f"{SASL}success") is not None, resp


# -- rids: repetition, window, order -------------------------------------------


async def test_a_repeated_rid_gets_the_same_response_again(
        http_server: Running, http: aiohttp.ClientSession) -> None:
    """XEP-0124 §14.3: the client re-sends a request whose response it lost:
    it gets that response again, byte for byte, and the stanza it carried is
    not handled twice."""
    bosh = Bosh(http, bosh_url(http_server))
    await bosh.login(presence=False)
    rid = bosh.rid
    ping = (f"<iq xmlns='jabber:client' type='get' id='p1' to='{DOMAIN}'>"
            "<ping xmlns='urn:xmpp:ping'/></iq>")
    first = await bosh.send(ping)
    iq = first.find(f"{C}iq")
    assert iq is not None and iq.get("type") == "result", first
    again = await bosh.send(ping, rid=rid)
    assert again.status == 200
    assert again.data == first.data
    # The session goes on.
    roster = await bosh.send("<iq xmlns='jabber:client' type='get' id='r1'>"
                             "<query xmlns='jabber:iq:roster'/></iq>")
    assert roster.find(f"{C}iq") is not None, roster


async def test_a_rid_beyond_the_window_ends_the_session_item_not_found(
        http_server: Running, http: aiohttp.ClientSession) -> None:
    """§14.3: a rid more than ``requests`` past the last one handled →
    terminate item-not-found; the session is gone (unbound)."""
    bosh = Bosh(http, bosh_url(http_server))
    jid = await bosh.login(presence=False)
    resp = await bosh.send(rid=bosh.rid + 2)             # requests = 2
    assert resp.status == 200 and resp.terminated("item-not-found"), resp
    await until(lambda: not bound(http_server, jid), "the session to unbind")
    resp = await bosh.send()
    assert resp.terminated("item-not-found"), resp


async def test_an_unknown_sid_is_item_not_found(
        http_server: Running, http: aiohttp.ClientSession) -> None:
    bosh = Bosh(http, bosh_url(http_server))
    await bosh.create()
    stranger = Bosh(http, bosh_url(http_server))
    stranger.sid = "x" + bosh.sid[1:] if bosh.sid[0] != "x" else "y" + bosh.sid[1:]
    resp = await stranger.send()
    assert resp.status == 200 and resp.terminated("item-not-found"), resp
    # The real session is untouched.
    assert (await bosh.plain("alice")).find(f"{SASL}success") is not None


async def test_requests_arriving_out_of_order_are_handled_in_rid_order(
        http_server: Running, http: aiohttp.ClientSession) -> None:
    """§14.1: rid N+1 (a message) arrives before rid N (another): it waits
    for N, and bob receives N's message first."""
    bosh = Bosh(http, bosh_url(http_server))
    await bosh.login(presence=False)
    bob = await http_server.login(BOB)
    got: list[str] = []
    two = asyncio.get_running_loop().create_future()

    def on_message(msg: Any) -> None:
        got.append(msg["body"])
        if len(got) == 2 and not two.done():
            two.set_result(None)
    bob.add_event_handler("message", on_message)
    n = bosh.rid
    bosh.rid += 2
    second = asyncio.create_task(bosh.post(bosh.body(message(BOB, "second"), rid=n + 1)))
    await early(http_server, bosh, n + 1)
    assert not second.done()
    first = asyncio.create_task(bosh.post(bosh.body(message(BOB, "first"), rid=n)))
    await asyncio.wait_for(two, TIMEOUT)
    assert got == ["first", "second"]
    # N was answered (empty) when N+1 took its place as the held request.
    resp = await asyncio.wait_for(first, TIMEOUT)
    assert resp.type is None and resp.children == [], resp
    bob.send_message(mto=bosh.jid, mbody="got both", mtype="chat")
    resp = await asyncio.wait_for(second, TIMEOUT)
    assert bodies([el for el in resp.children if el.tag == f"{C}message"]) == ["got both"]


async def test_a_gap_never_filled_still_times_out(
        tmp_path: Path, ca: trustme.CA, http: aiohttp.ClientSession) -> None:
    """A client that sends rid N+1 and never N (then goes away) does not
    keep its session forever: it ends after ``inactivity``, and the early
    request is answered with the end."""
    async with running(tmp_path, ca, extra=http_table(bosh_inactivity=5)) as srv:
        await srv.user("alice")
        bosh = Bosh(http, bosh_url(srv))
        jid = await bosh.login(presence=False)
        started = time.monotonic()
        stuck = asyncio.create_task(bosh.post(bosh.body(rid=bosh.rid + 1), timeout=5 + TIMEOUT))
        await early(srv, bosh, bosh.rid + 1)
        resp = await asyncio.wait_for(stuck, 5 + TIMEOUT)
        assert resp.type == "terminate", resp
        assert time.monotonic() - started >= 4.5
        await until(lambda: not bound(srv, jid), "the session to unbind")


# -- overactivity --------------------------------------------------------------


async def test_more_simultaneous_requests_than_requests_is_a_policy_violation(
        http_server: Running, http: aiohttp.ClientSession) -> None:
    """§11: ``requests`` is 2 (hold 1); a third request open at once (N held,
    N+2 early, then N+1) → every one of them gets terminate policy-violation."""
    bosh = Bosh(http, bosh_url(http_server))
    jid = await bosh.login(presence=False)
    n = bosh.rid
    bosh.rid += 3
    a = asyncio.create_task(bosh.post(bosh.body(rid=n)))
    await held(http_server, bosh)
    c = asyncio.create_task(bosh.post(bosh.body(rid=n + 2)))
    await early(http_server, bosh, n + 2)
    b = await bosh.post(bosh.body(rid=n + 1))
    assert b.terminated("policy-violation"), b
    for task in (a, c):
        resp = await asyncio.wait_for(task, TIMEOUT)
        assert resp.terminated("policy-violation"), resp
    await until(lambda: not bound(http_server, jid), "the session to unbind")


async def test_polling_faster_than_polling_with_empty_bodies_is_a_policy_violation(
        http_server: Running, http: aiohttp.ClientSession) -> None:
    """§12: hold = 0 (a polling session): two empty requests in a row,
    sooner than ``polling`` s apart → policy-violation."""
    bosh = Bosh(http, bosh_url(http_server))
    jid = await bosh.login(presence=False, hold=0)
    assert bosh.created is not None and bosh.created.body is not None
    assert bosh.created.body.get("hold") == "0"
    first = await bosh.send()
    assert first.type is None, first
    second = await bosh.send()
    assert second.terminated("policy-violation"), second
    await until(lambda: not bound(http_server, jid), "the session to unbind")


async def test_a_polling_client_may_poll_right_after_sending_a_stanza(
        http_server: Running, http: aiohttp.ClientSession) -> None:
    """§12: only two *empty* requests in a row, the first answered with
    nothing, count: a poll right after a request that carried a stanza is
    fine (polling clients do that), and so is one right after a poll whose
    response carried something; a third in a row is not."""
    bosh = Bosh(http, bosh_url(http_server))
    await bosh.login(presence=False, hold=0)
    bob = await http_server.login(BOB)
    bob.add_event_handler("message", lambda m: bob.send_message(
        mto=m["from"], mbody=f"re: {m['body']}", mtype="chat"))
    resp = await bosh.send(message(BOB, "hi"))
    assert resp.type is None, resp
    stream = session_of(http_server, bosh)
    await until(lambda: bool(stream._pending), "bob's reply to be queued")
    resp = await bosh.send()                # at once, after a request that was not empty
    assert resp.type is None, resp
    assert bodies([el for el in resp.children if el.tag == f"{C}message"]) == ["re: hi"]
    resp = await bosh.send()                # at once, after a response that carried something
    assert resp.type is None and resp.children == [], resp
    resp = await bosh.send()                # two empty ones in a row: too fast
    assert resp.terminated("policy-violation"), resp


async def test_a_request_sent_again_while_it_is_being_handled_gets_its_answer(
        http_server: Running, http: aiohttp.ClientSession) -> None:
    """§14.3: the client re-sends rid N (its connection broke) while the
    server is still handling N (a login slowed down by earlier failures):
    the new connection gets N's answer, the session lives on."""
    spoiler = Bosh(http, bosh_url(http_server))
    await spoiler.create()
    for _ in range(3):                      # max_auth_failures: the 3rd ends that session
        await spoiler.plain("alice", "wrong")
    bosh = Bosh(http, bosh_url(http_server))
    await bosh.create()
    rid = bosh.rid
    token = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
    auth = f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>{token}</auth>"
    first = asyncio.create_task(bosh.send(auth))
    stream = session_of(http_server, bosh)
    # Handled now (taken from the queue), and delayed by the throttle.
    await until(lambda: stream.next_rid == rid + 1 and not first.done(), "the login to start")
    again = await bosh.send(auth, rid=rid)
    assert again.find(f"{SASL}success") is not None, again
    old = await asyncio.wait_for(first, TIMEOUT)
    assert old.type is None, old                        # let go, not the end
    await bosh.restart()
    assert await bosh.bind() == f"{ALICE}/web"


# -- the end of a session ----------------------------------------------------------


async def test_no_request_for_inactivity_seconds_ends_the_session(
        tmp_path: Path, ca: trustme.CA, http: aiohttp.ClientSession) -> None:
    """§7.1: ``bosh_inactivity`` (5 s) without a request: the session ends,
    its contact sees it go unavailable, and a later request gets
    item-not-found."""
    async with running(tmp_path, ca, extra=http_table(bosh_inactivity=5)) as srv:
        await srv.user("alice")
        await srv.user("bob")
        await befriend(srv, ALICE, BOB)
        bob = await srv.login(BOB)
        bosh = Bosh(http, bosh_url(srv))
        online = asyncio.ensure_future(wait_event(bob, "presence", match=is_presence(ALICE)))
        jid = await bosh.login()
        assert bosh.created is not None and bosh.created.body is not None
        assert bosh.created.body.get("inactivity") == "5"
        await online
        started = time.monotonic()
        await wait_event(bob, "presence", 5 + TIMEOUT, match=is_presence(ALICE, "unavailable"))
        assert time.monotonic() - started >= 4, "before inactivity"
        assert not bound(srv, jid)
        resp = await bosh.send()
        assert resp.terminated("item-not-found"), resp


async def test_a_held_request_keeps_the_session_alive_past_inactivity(
        tmp_path: Path, ca: trustme.CA, http: aiohttp.ClientSession) -> None:
    """Inactivity counts only while no request is held: a client polling
    with ``wait`` 4 s against ``inactivity`` 5 s stays for two rounds and more."""
    async with running(tmp_path, ca, extra=http_table(bosh_inactivity=5)) as srv:
        await srv.user("alice")
        bosh = Bosh(http, bosh_url(srv))
        jid = await bosh.login(presence=False, wait=4)
        for _ in range(2):
            resp = await bosh.send()
            assert resp.type is None and resp.children == [], resp
        assert bound(srv, jid)


async def test_terminate_with_unavailable_presence(
        http_server: Running, http: aiohttp.ClientSession) -> None:
    """§13: a type='terminate' body's payload is handled first (bob sees the
    unavailable presence with its status), then the session ends and its
    resource is unbound; the held request is answered too."""
    await befriend(http_server, ALICE, BOB)
    bob = await http_server.login(BOB)
    bosh = Bosh(http, bosh_url(http_server))
    online = asyncio.ensure_future(wait_event(bob, "presence", match=is_presence(ALICE)))
    jid = await bosh.login()
    await online
    poll = bosh.hold()
    await held(http_server, bosh)
    gone = asyncio.ensure_future(wait_event(bob, "presence",
                                            match=is_presence(ALICE, "unavailable")))
    resp = await bosh.send("<presence xmlns='jabber:client' type='unavailable'>"
                           "<status>bye</status></presence>", type="terminate")
    assert resp.status == 200 and resp.type == "terminate", resp
    assert (await gone)["status"] == "bye"
    answered = await asyncio.wait_for(poll, TIMEOUT)
    assert answered.status == 200
    await until(lambda: not bound(http_server, jid), "the session to unbind")
    assert bosh.sid not in http_server.server.http.bosh.sessions    # type: ignore[union-attr]
    assert (await bosh.send()).terminated("item-not-found")


@pytest.mark.parametrize("bad", [
    b"this is not XML",
    b"<body xmlns='http://jabber.org/protocol/httpbind' rid='1' sid='SID'><unclosed></body>",
    b"<iq xmlns='jabber:client' rid='1' sid='SID'/>",
    b"<!DOCTYPE body [<!ENTITY x 'y'>]><body xmlns='http://jabber.org/protocol/httpbind' "
    b"rid='1' sid='SID'>&x;</body>",
], ids=["not-xml", "not-well-formed", "wrong-root", "doctype"])
async def test_a_malformed_body_ends_only_its_own_session(
        http_server: Running, http: aiohttp.ClientSession, bad: bytes) -> None:
    """Issue 15 item 7: HTTP 400 with terminate bad-request; the session
    it names ends (its held request is answered with the end); another
    BOSH session and a TCP client go on."""
    victim, other = Bosh(http, bosh_url(http_server)), Bosh(http, bosh_url(http_server))
    victim_jid = await victim.login("alice", "victim", presence=False)
    other_jid = await other.login("alice", "other", presence=False)
    bob = await http_server.login(BOB)
    poll = victim.hold()
    await held(http_server, victim)
    resp = await victim.post(bad.replace(b"SID", victim.sid.encode()))
    assert resp.status == 400, resp
    assert resp.terminated("bad-request"), resp
    if bad.startswith(b"this"):
        # No sid to be read: the session lives on.
        assert bound(http_server, victim_jid)
        poll.cancel()
    else:
        assert (await asyncio.wait_for(poll, TIMEOUT)).terminated("bad-request")
        await until(lambda: not bound(http_server, victim_jid), "the session to unbind")
    got = asyncio.ensure_future(wait_event(bob, "message"))
    other.hold(message(BOB, "still here"))
    assert (await got)["body"] == "still here"
    assert bound(http_server, other_jid)
    pong = await asyncio.wait_for(bob.plugin["xep_0199"].ping(jid=DOMAIN), TIMEOUT)
    assert pong is not None


async def test_a_too_large_body_is_413(
        http_server: Running, http: aiohttp.ClientSession) -> None:
    bosh = Bosh(http, bosh_url(http_server))
    await bosh.create()
    limit = http_server.server.config.client.max_stanza_size
    big = "x" * (2 * limit + 8192)
    resp = await bosh.post(bosh.body(message(BOB, big)))
    assert resp.status == 413, resp


async def test_get_options_and_origins(
        tmp_path: Path, ca: trustme.CA, http: aiohttp.ClientSession) -> None:
    """GET on the path: a 200 text page; a CORS preflight from an allowed
    origin: 204 with the Access-Control-* headers, and the POST that
    follows carries Access-Control-Allow-Origin; another origin: 403."""
    allowed = "https://chat.example.com"
    extra = http_table(cors_origins=f'["{allowed}"]')
    async with running(tmp_path, ca, extra=extra) as srv:
        url = bosh_url(srv)
        timeout = aiohttp.ClientTimeout(total=TIMEOUT)
        async with http.get(url, timeout=timeout) as resp:
            assert resp.status == 200
            assert resp.content_type == "text/plain"
            assert "BOSH" in await resp.text()
        async with http.options(url, timeout=timeout, headers={
                "Origin": allowed, "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type"}) as resp:
            assert resp.status == 204
            assert resp.headers["Access-Control-Allow-Origin"] == allowed
            assert "POST" in resp.headers["Access-Control-Allow-Methods"]
            assert "content-type" in resp.headers["Access-Control-Allow-Headers"].lower()
        bosh = Bosh(http, url)
        resp_ok = await bosh.post(bosh.body(to=DOMAIN, wait="5", hold="1"),
                                  headers={"Origin": allowed})
        assert resp_ok.status == 200 and resp_ok.type is None, resp_ok
        async with http.post(url, data=Bosh(http, url).body(to=DOMAIN), timeout=timeout,
                             headers={"Origin": allowed}) as resp:
            assert resp.headers["Access-Control-Allow-Origin"] == allowed
        for method in (http.options, http.post):
            async with method(url, timeout=timeout,
                              headers={"Origin": "https://evil.example.net"}) as resp:
                assert resp.status == 403
                assert "Access-Control-Allow-Origin" not in resp.headers


async def test_creation_without_to_or_for_an_unknown_host(
        http_server: Running, http: aiohttp.ClientSession) -> None:
    """XEP-0124 §17.2: no 'to' → improper-addressing; a domain not served
    here → host-unknown; no session is made."""
    bosh = Bosh(http, bosh_url(http_server))
    resp = await bosh.post(bosh.body(wait="5", hold="1", ver="1.11"))
    assert resp.status == 200 and resp.terminated("improper-addressing"), resp
    resp = await bosh.post(bosh.body(to="", wait="5", hold="1", ver="1.11"))
    assert resp.status == 200 and resp.terminated("improper-addressing"), resp
    resp = await Bosh(http, bosh_url(http_server)).create(to="elsewhere.example")
    assert resp.terminated("host-unknown"), resp
    assert not http_server.server.http.bosh.sessions        # type: ignore[union-attr]


async def test_server_shutdown_answers_held_requests_with_system_shutdown(
        tmp_path: Path, ca: trustme.CA, http: aiohttp.ClientSession) -> None:
    """The held request of a bound session gets terminate system-shutdown
    (with the stream error) when the server stops."""
    async with running(tmp_path, ca, extra=http_table()) as srv:
        await srv.user("alice")
        bosh = Bosh(http, bosh_url(srv))
        await bosh.login(presence=False)
        poll = bosh.hold()
        await held(srv, bosh)
    resp = await asyncio.wait_for(poll, TIMEOUT)
    assert resp.status == 200 and resp.terminated("system-shutdown"), resp
    error = resp.find(f"{STREAM}error")
    assert error is not None and error.find(f"{{{ns.STREAMS}}}system-shutdown") is not None


async def test_stream_management_is_not_offered_over_bosh_but_is_over_tcp(
        http_server: Running, http: aiohttp.ClientSession) -> None:
    """XEP-0198 is for connections; BOSH acknowledges requests itself: no
    <sm/> after the restart, and <enable/> fails. Over TCP it is offered."""
    bosh = Bosh(http, bosh_url(http_server))
    await bosh.create()
    await bosh.plain("alice")
    features = (await bosh.restart()).find(f"{STREAM}features")
    assert features is not None
    assert features.find(f"{{{SM}}}sm") is None
    await bosh.bind()
    resp = await bosh.send(f"<enable xmlns='{SM}' resume='true'/>")
    failed = resp.find(f"{{{SM}}}failed")
    assert failed is not None, resp
    raw = await Raw.connect(http_server.port)
    try:
        ctx = ssl.create_default_context()
        http_server.ca.configure_trust(ctx)
        await raw.secure(DOMAIN, ctx)
        assert (await raw.plain("bob", PASSWORD)).startswith(b"<success")
        raw.open_stream(DOMAIN)
        assert f"<sm xmlns='{SM}'/>".encode() in await raw.features()
    finally:
        raw.close()


async def test_a_held_request_sent_again_is_held_in_its_place(
        http_server: Running, http: aiohttp.ClientSession) -> None:
    """§14.3: the client re-sends its held request N: the old connection is
    let go (empty), the new one is held and carries what comes next."""
    bosh = Bosh(http, bosh_url(http_server))
    jid = await bosh.login(presence=False)
    bob = await http_server.login(BOB)
    rid = bosh.rid
    first = bosh.hold()
    await held(http_server, bosh)
    again = asyncio.create_task(bosh.post(bosh.body(rid=rid)))
    old = await asyncio.wait_for(first, TIMEOUT)
    assert old.type is None and old.children == [], old
    await held(http_server, bosh)
    assert not again.done()
    bob.send_message(mto=jid, mbody="for the new one", mtype="chat")
    resp = await asyncio.wait_for(again, TIMEOUT)
    assert bodies([el for el in resp.children if el.tag == f"{C}message"]) == ["for the new one"]


# -- what review found ---------------------------------------------------------------
async def test_a_session_closed_with_no_request_held_ends_at_once(
        http_server: Running, http: aiohttp.ClientSession) -> None:
    """The server closes a BOSH session no request is held for (here a TCP
    login takes its resource): it is unbound at once, as a TCP stream would
    be, and its client gets the terminate body with its next request, then
    item-not-found."""
    bosh = Bosh(http, bosh_url(http_server))
    jid = await bosh.login("alice", "r")
    raw = await Raw.connect(http_server.port)
    from tests.integration.test_module_api import ctx_of
    assert await raw.login(DOMAIN, ctx_of(http_server), "alice", PASSWORD, "r") == jid
    assert bosh.sid not in http_server.server.http.bosh.sessions    # type: ignore[union-attr]
    resp = await bosh.send()
    assert resp.terminated("remote-stream-error"), resp
    assert resp.find(f"{STREAM}error") is not None
    assert (await bosh.send()).terminated("remote-stream-error")   # still, for a while
    raw.close()


@pytest.mark.parametrize("attrs", [{"rid": "²"}, {"rid": "١٢"}, {"wait": "²"}])
async def test_non_ascii_digits_are_a_bad_request(
        http_server: Running, http: aiohttp.ClientSession, attrs: dict[str, str]) -> None:
    """Numbers are ASCII digits: anything else is bad-request, never a 500."""
    bosh = Bosh(http, bosh_url(http_server))
    head = {"rid": "1000", "to": DOMAIN, "wait": "5", "hold": "1", **attrs}
    text = "".join(f" {k}='{v}'" for k, v in head.items())
    resp = await bosh.post(f"<body xmlns='{ns.HTTPBIND}'{text}/>")
    assert resp.status in (200, 400) and resp.terminated("bad-request"), resp


async def test_a_bad_ack_is_ignored(http_server: Running, http: aiohttp.ClientSession) -> None:
    bosh = Bosh(http, bosh_url(http_server))
    await bosh.login(wait=1)
    resp = await bosh.send(ack="²")
    assert resp.status == 200 and resp.type is None, resp


async def test_terminate_may_exceed_requests(http_server: Running,
                                             http: aiohttp.ClientSession) -> None:
    """XEP-0124 §11: one request more than 'requests' is allowed when it
    terminates the session; its payload is handled."""
    bosh = Bosh(http, bosh_url(http_server))
    bob = await http_server.login(BOB)
    await befriend(http_server, ALICE, BOB)
    await bosh.login("alice")
    first = bosh.hold()
    await held(http_server, bosh)
    gap = bosh.rid                       # rid N+1 missing: N+2 waits early
    bosh.rid += 1
    second = bosh.hold()
    await early(http_server, bosh, gap + 1)
    gone = wait_event(bob, "presence_unavailable")
    resp = await bosh.send("<presence xmlns='jabber:client' type='unavailable'/>",
                           rid=gap, type="terminate")
    assert resp.type == "terminate" and resp.condition is None, resp
    await gone
    for task in (first, second):
        await asyncio.wait_for(task, TIMEOUT)


async def test_restart_without_to(http_server: Running, http: aiohttp.ClientSession) -> None:
    """XEP-0206 §5: 'to' on a restart body SHOULD be there, not MUST."""
    bosh = Bosh(http, bosh_url(http_server))
    await bosh.create()
    await bosh.plain("alice")
    resp = await bosh.send(**{"xmpp:restart": "true"})
    assert resp.find(f"{STREAM}features") is not None, resp


async def test_a_client_that_must_encrypt_is_sent_to_the_tls_port(
        tmp_path: Path, ca: trustme.CA, http: aiohttp.ClientSession) -> None:
    """tls = "required", a tls_port, a client that is not encrypted (behind a
    trusted proxy, plain HTTP): terminate see-other-uri with the https URL
    (XEP-0124 §17.2)."""
    tls_port = free_port()
    extra = http_table(tls_port=tls_port, trusted_proxies='["127.0.0.1"]')
    async with running(tmp_path, ca, extra=extra) as srv:
        bosh = Bosh(http, bosh_url(srv))
        resp = await bosh.post(bosh.body(to=DOMAIN, wait="5", hold="1"), headers={
            "X-Forwarded-For": "203.0.113.5", "Host": "chat.example.com"})
        assert resp.terminated("see-other-uri"), resp
        uri = resp.find(f"{B}uri")
        assert uri is not None and uri.text == f"https://chat.example.com:{tls_port}/http-bind"
        assert not srv.server.http.bosh.sessions        # type: ignore[union-attr]


async def test_a_secure_sessions_request_over_plain_http_is_refused(
        tmp_path: Path, ca: trustme.CA, http: aiohttp.ClientSession) -> None:
    """XEP-0124 §15: a request of a session created encrypted that comes
    over a connection that is not is refused; the session goes on."""
    async with running(tmp_path, ca, extra=http_table(trusted_proxies='["127.0.0.2"]')) as srv:
        await srv.user("alice")
        bosh = Bosh(http, bosh_url(srv))
        await bosh.login("alice", wait=1)       # from 127.0.0.1: local, encrypted
        # Through the proxy at 127.0.0.2, for a public client over plain HTTP.
        proxy = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession(connector=proxy) as via_proxy:
            async with via_proxy.post(bosh.url, data=bosh.body(rid=bosh.rid), headers={
                    "X-Forwarded-For": "203.0.113.5", "X-Forwarded-Proto": "http"}) as r:
                assert r.status == 403
        resp = await bosh.send()        # the same rid, from the local client again
        assert resp.status == 200 and resp.type is None, resp


async def test_unauthenticated_sessions_per_address_are_capped(
        http_server: Running, http: aiohttp.ClientSession) -> None:
    """BOSH sessions cost no file descriptor: at most MAX_UNAUTHENTICATED
    not yet authenticated per address; one that logs in frees its place."""
    from vinespy.http.boshnode import MAX_UNAUTHENTICATED
    sessions = [Bosh(http, bosh_url(http_server)) for _ in range(MAX_UNAUTHENTICATED)]
    for bosh in sessions:
        assert (await bosh.create()).type is None
    extra = Bosh(http, bosh_url(http_server))
    assert (await extra.create()).terminated("policy-violation")
    assert (await sessions[0].plain("alice")).find(f"{SASL}success") is not None
    assert (await extra.create()).type is None
