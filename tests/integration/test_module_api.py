"""The seams a feature module plugs into (issue 11), shown by one small
module and checked end to end with real streams, standalone and across two
cluster nodes in one process sharing a real redis-server.

``Example`` is the docs' example (docs/routing.md, "Writing a module"): a
per-session counter that stays on its node, a per-session flag that travels
to the other nodes, a sender-side hook, a delivery hook, a stream feature
and a nonza.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import trustme

from tests.conftest import DOMAIN, PASSWORD, Running, running
from tests.rawclient import Raw
from tests.redisproc import redis_server, url_of
from vinespy import accounts
from vinespy.events import StanzaEvent
from vinespy.fields import SessionField
from vinespy.jid import JID
from vinespy.modules import Module, builtin, hook
from vinespy.sessions import Session
from vinespy.stream.session import Held
from vinespy.xml import Element, child, element

pytestmark = pytest.mark.integration

NS = "urn:example:0"


class Example(Module):
    """Counts the messages each session sends (wherever they go; ``swallow``
    ones go nowhere) and, for sessions that asked with ``<tag/>``, marks
    every message delivered to them (from this node or another)."""

    name = "example"
    sent = SessionField(int, 0)                       # on the stream's node only
    tagging = SessionField(bool, False, shared=True)  # read by other nodes too
    keeping = SessionField(bool, False)               # kept when its connection is lost

    @hook("pre-message")
    def count(self, ev: StanzaEvent) -> bool | None:
        assert ev.origin is not None
        Example.sent.set(ev.origin, Example.sent.get(ev.origin) + 1)
        body = ev.stanza.findtext("{jabber:client}body")
        return True if body == "swallow" else None      # True: claimed, not routed

    @hook("deliver-message")
    def mark(self, session: Session, stanza: Element) -> None:
        if Example.tagging.get(session):
            child(stanza, NS, "tagged")
        # None: the stanza goes on to the client

    @hook("stream-features")
    def feature(self, session: Session, features: list[str]) -> None:
        features.append(f"<count xmlns='{NS}'/>")

    @hook(f"nonza/{NS}:count")
    def answer(self, session: Session, el: Element) -> bool:
        session.send(element(NS, "count", n=str(Example.sent.get(session))))
        return True

    @hook(f"nonza/{NS}:keep")
    def keep(self, session: Session, el: Element) -> bool:
        Example.keeping.set(session, True)
        session.send(element(NS, "keeping"))
        return True

    @hook("transport-lost")
    def hold(self, session: Session) -> bool | None:
        """Keep a session that asked (as XEP-0198 resumption will): it stays
        bound without a connection, keeping what it is sent."""
        if not Example.keeping.get(session):
            return None
        session.detach()        # type: ignore[attr-defined]
        return True

    @hook(f"nonza/{NS}:tag")
    def tag(self, session: Session, el: Element) -> bool:
        Example.tagging.set(session, True)
        session.send(element(NS, "tagging"))
        return True


HOST = {"modules": [*builtin(), "example"]}


def ctx_of(srv: Running) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    srv.ca.configure_trust(ctx)
    return ctx


async def login(srv: Running, user: str, resource: str = "r") -> Raw:
    """``user`` through STARTTLS, SASL and bind, with initial presence."""
    return (await login_features(srv, user, resource))[0]


@contextlib.asynccontextmanager
async def alice_and_bob(make_server: Any) -> AsyncIterator[tuple[Running, Raw, Raw]]:
    """A server with the example module; alice and bob logged in."""
    async with make_server(host=HOST) as srv:
        await srv.user("alice")
        await srv.user("bob")
        yield srv, await login(srv, "alice"), await login(srv, "bob")


async def login_features(srv: Running, user: str, resource: str = "r") -> tuple[Raw, bytes]:
    """:func:`login`, and the stream features offered after authentication."""
    raw = await Raw.connect(srv.port)
    await raw.secure(DOMAIN, ctx_of(srv))
    assert (await raw.plain(user, PASSWORD)).startswith(b"<success")
    raw.open_stream(DOMAIN)
    features = await raw.features()
    raw.send(f"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
             f"<resource>{resource}</resource></bind></iq>")
    await raw.expect(rb"<jid>")
    raw.send("<presence/>")
    raw.send(f"<iq type='get' id='p0' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
    await raw.expect(rb"id=\"p0\"")
    return raw, features


async def count(raw: Raw) -> int:
    raw.send(f"<count xmlns='{NS}'/>")
    m = await raw.expect(rb"<count [^>]*n=\"(\d+)\"")
    return int(m.group(1))


async def test_a_module_adds_a_feature_and_handles_its_nonza(make_server: Any) -> None:
    """Its feature is offered after authentication; its nonza is answered
    once bound; a nonza nobody handles still ends the stream with
    <unsupported-stanza-type/> (RFC 6120 §4.9.3.22)."""
    async with make_server(host=HOST) as srv:
        await srv.user("alice")
        alice, features = await login_features(srv, "alice")
        assert f"<count xmlns='{NS}'/>".encode() in features, features
        assert await count(alice) == 0
        alice.send("<r xmlns='urn:xmpp:sm:3'/>")
        assert b"<unsupported-stanza-type" in await alice.until_closed()


async def test_the_sender_side_hook_sees_every_destination(make_server: Any) -> None:
    """pre-message fires on the sender's host for a message to a local user,
    to another domain (then bounced: remote-server-not-found) and to the
    server; a claimed one is neither delivered nor bounced. The count is
    the sender's own session's: another session's stays 0."""
    async with alice_and_bob(make_server) as (srv, alice, bob):
        alice.send(f"<message to='bob@{DOMAIN}' id='m1'><body>hi</body></message>")
        await bob.expect(rb"<body>hi</body>")
        alice.send("<message to='someone@elsewhere.example' id='m2'><body>x</body></message>")
        m = await alice.expect(rb"<message[^>]*id=\"m2\"[^>]*>.*?</message>")
        assert b'type="error"' in m.group(0) and b"remote-server-not-found" in m.group(0)
        alice.send(f"<message to='{DOMAIN}' id='m3'><body>to the server</body></message>")
        alice.send(f"<message to='bob@{DOMAIN}' id='m4'><body>swallow</body></message>")
        alice.send(f"<message to='bob@{DOMAIN}' id='m5'><body>after</body></message>")
        got = await bob.expect(rb"<body>after</body>")
        assert b"swallow" not in got.string
        assert await count(alice) == 5
        assert await count(bob) == 0


async def test_the_delivery_hook_sees_local_and_stored_messages(make_server: Any) -> None:
    """deliver-message fires for every message written to a client: routed
    live, and flushed from offline storage at initial presence."""
    async with make_server(host=HOST) as srv:
        await srv.user("alice")
        await srv.user("bob")
        alice = await login(srv, "alice")
        alice.send(f"<message to='bob@{DOMAIN}' id='o1'><body>stored</body></message>")
        alice.send(f"<iq type='get' id='p1' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
        await alice.expect(rb"id=\"p1\"")        # handled in order: the message is stored
        # bob logs in, asks for tagging before his initial presence.
        bob = await Raw.connect(srv.port)
        jid = await bob.login(DOMAIN, ctx_of(srv), "bob", PASSWORD, "r")
        assert jid == f"bob@{DOMAIN}/r"
        bob.send(f"<tag xmlns='{NS}'/>")
        await bob.expect(rb"<tagging")
        bob.send("<presence/>")
        m = await bob.expect(rb"<message.*?</message>")
        assert b"<body>stored</body>" in m.group(0) and b"<tagged" in m.group(0), m.group(0)
        alice.send(f"<message to='bob@{DOMAIN}' id='l1'><body>live</body></message>")
        m = await bob.expect(rb"<message[^>]*id=\"l1\".*?</message>")
        assert b"<tagged" in m.group(0), m.group(0)
        # alice never asked: hers are not marked.
        bob.send(f"<message to='alice@{DOMAIN}' id='l2'><body>back</body></message>")
        m = await alice.expect(rb"<message[^>]*id=\"l2\".*?</message>")
        assert b"<tagged" not in m.group(0)


@contextlib.asynccontextmanager
async def two_nodes(tmp_path: Path, ca: trustme.CA) -> AsyncIterator[tuple[Running, Running]]:
    """Two clustered servers in this process, one redis-server, each with its
    own data directory (the accounts made on both)."""
    (tmp_path / "redis").mkdir()
    with redis_server(tmp_path / "redis") as client:
        url = url_of(client)
        async with contextlib.AsyncExitStack() as stack:
            nodes = []
            for name in ("a", "b"):
                root = tmp_path / name
                root.mkdir()
                srv = await stack.enter_async_context(running(
                    root, ca, host=HOST, extra=f'[cluster]\nurl = "{url}"\nnode = "{name}"\n'
                    'heartbeat = 0.2\ndead_after = 1.0\n'))
                for user in ("alice", "bob"):
                    await accounts.create_user(srv.storage, JID.parse(f"{user}@{DOMAIN}"),
                                               PASSWORD, iterations=4096)
                nodes.append(srv)
            yield nodes[0], nodes[1]


async def test_shared_fields_and_delivery_hooks_work_across_nodes(tmp_path: Path,
                                                                  ca: trustme.CA) -> None:
    """bob on node b asks for tagging; node a sees the flag on its proxy of
    bob's session (it travelled in his routing entry), and the message alice
    sends from node a, written on node b as it came, still passes node b's
    delivery hook. alice's counter lives on node a only."""
    async with two_nodes(tmp_path, ca) as (a, b):
        alice = await login(a, "alice")
        bob = await login(b, "bob")
        bob.send(f"<tag xmlns='{NS}'/>")
        await bob.expect(rb"<tagging")
        full = JID.parse(f"bob@{DOMAIN}/r")

        async def seen_on_a() -> bool:
            await a.server.sessions.load([full.bare], fresh=True)
            proxy = a.server.sessions.get(full)
            return proxy is not None and Example.tagging.get(proxy) is True
        await wait_until(seen_on_a)
        alice.send(f"<message to='bob@{DOMAIN}/r' id='x1'><body>across</body></message>")
        m = await bob.expect(rb"<message[^>]*id=\"x1\".*?</message>")
        assert b"<body>across</body>" in m.group(0) and b"<tagged" in m.group(0), m.group(0)
        assert await count(alice) == 1
        assert await count(bob) == 0


async def wait_until(check: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"{check.__name__} still false after {timeout} s")
        await asyncio.sleep(0.02)


async def test_a_module_keeps_a_session_whose_connection_is_lost(make_server: Any) -> None:
    """transport-lost: bob's connection drops, the module keeps his session;
    it stays bound, and a message to it is kept for him (neither bounced nor
    stored offline). A new login of the same resource replaces it (RFC 6120
    §7.7.2.2), unbinding it, and gets what is sent from then on."""
    async with alice_and_bob(make_server) as (srv, alice, bob):
        bob.send(f"<keep xmlns='{NS}'/>")
        await bob.expect(rb"<keeping")
        full = JID.parse(f"bob@{DOMAIN}/r")
        session = srv.server.sessions.get(full)
        bob.writer.transport.abort()

        async def held() -> bool:
            return isinstance(getattr(session, "transport", None), Held)
        await wait_until(held)
        alice.send(f"<message to='{full}' id='k1'><body>while away</body></message>")
        alice.send(f"<iq type='get' id='p1' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
        await alice.expect(rb"id=\"p1\"")
        assert b"k1" not in alice.buf                       # not bounced
        assert srv.server.sessions.get(full) is session
        assert any(b"while away" in d for d in session.transport.queue)  # type: ignore
        assert await srv.storage.get(JID.parse(f"bob@{DOMAIN}"), "offline") is None
        again = await login(srv, "bob")                      # resource r again
        assert srv.server.sessions.get(full) is not session and not session.bound  # type: ignore
        alice.send(f"<message to='{full}' id='k2'><body>back</body></message>")
        await again.expect(rb"<body>back</body>")
