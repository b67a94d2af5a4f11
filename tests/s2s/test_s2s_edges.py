"""Federation at its edges: spoofed senders, wrong certificates, servers
that are not there, die or fall silent, idle streams, and RFC 6121 presence
between two servers. Real vinespy servers, real slixmpp clients, and a
scripted peer over real TCP and TLS (tests/s2s/rawpeer.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import slixmpp
import trustme

from tests.conftest import wait_event
from tests.s2s import rawpeer
from tests.s2s.conftest import Peer, peer, two, until
from tests.support import TIMEOUT, free_port
from vinespy import ns
from vinespy.jid import JID


def error_of(msg: Any) -> str:
    return str(msg["error"]["condition"])


def send(client: slixmpp.ClientXMPP, to: str, body: str) -> str:
    """Send a chat message; its id (errors do not echo the body, RFC 6120 §8.3.1)."""
    msg = client.make_message(mto=to, mbody=body, mtype="chat")
    msg["id"] = body.replace(" ", "-")
    msg.send()
    return str(msg["id"])


async def bounced(client: slixmpp.ClientXMPP, to: str, body: str) -> tuple[str, float]:
    """Send a chat message; wait for its error: the condition and how long it took."""
    loop = asyncio.get_running_loop()
    mid = body.replace(" ", "-")
    got = asyncio.ensure_future(wait_event(client, "message_error",
                                           match=lambda m: m["id"] == mid))
    start = loop.time()
    send(client, to, body)
    msg = await got
    return error_of(msg), loop.time() - start


# -- spoofing --------------------------------------------------------------

async def test_a_peer_cannot_send_for_a_domain_it_did_not_authenticate(
        tmp_path: Path, ca: trustme.CA) -> None:
    """RFC 6120 §13.5 / §8.1.2.2: after authenticating evil.lit by dialback
    (vinespy asks evil.lit's authoritative server, the raw server, over its
    own stream), the peer may send from evil.lit only; from other.lit the
    stream ends with <invalid-from/> and the stanza goes nowhere."""
    async with rawpeer.RawServer(ca, "evil.lit") as authority, \
            peer(tmp_path, ca, "wonderland.lit", free_port(), {"evil.lit": authority.port}) as w:
        alice = await w.login(await w.user("alice"))
        bob = await w.login(await w.user("bob"))
        conn = await rawpeer.connect(w.server.ports["server"], ca, "evil.lit", "wonderland.lit")
        try:
            assert await rawpeer.dialback(conn, "evil.lit", "wonderland.lit") == "valid"
            (asked,) = [v for c in authority.conversations for v in c.verifies]
            assert (asked.get("from"), asked.get("to")) == ("wonderland.lit", "evil.lit")
            assert asked.text == "0123abcd"

            got = asyncio.ensure_future(wait_event(alice, "message"))
            conn.send("<message from='mallory@evil.lit' to='alice@wonderland.lit' type='chat'>"
                      "<body>from evil</body></message>")
            msg = await got
            assert (msg["from"], msg["body"]) == ("mallory@evil.lit", "from evil")

            seen: list[str] = []
            alice.add_event_handler("message", lambda m: seen.append(str(m["body"])))
            conn.send("<message from='someone@other.lit' to='alice@wonderland.lit' "
                      "type='chat'><body>spoofed</body></message>")
            rest = await conn.until_closed()
            assert [rawpeer.stream_error(e) for e in rest] == ["invalid-from"]
        finally:
            conn.writer.close()
        # Anything routed would reach alice before what bob sends now.
        marker = asyncio.ensure_future(wait_event(alice, "message",
                                                  match=lambda m: m["body"] == "marker"))
        bob.send_message(mto="alice@wonderland.lit", mbody="marker", mtype="chat")
        await marker
        assert seen == ["marker"]


async def test_a_key_the_authority_disowns_ends_the_stream(
        tmp_path: Path, ca: trustme.CA) -> None:
    """XEP-0220 §2.3.2: the authoritative server says the key is not its
    own: <db:result type='invalid'/>, and stanzas from that domain are refused."""
    async with rawpeer.RawServer(ca, "evil.lit", verify="invalid") as authority, \
            peer(tmp_path, ca, "wonderland.lit", free_port(), {"evil.lit": authority.port}) as w:
        conn = await rawpeer.connect(w.server.ports["server"], ca, "evil.lit", "wonderland.lit")
        try:
            assert await rawpeer.dialback(conn, "evil.lit", "wonderland.lit") == "invalid"
            rest = await conn.until_closed()
            assert [rawpeer.stream_error(e) for e in rest] == ["not-authorized"]
        finally:
            conn.writer.close()


# -- certificates ------------------------------------------------------------

async def test_a_certificate_for_another_name_is_refused(tmp_path: Path, ca: trustme.CA) -> None:
    """RFC 6125: peer.lit's server presents a certificate for wrong.lit
    (from a trusted CA): vinespy drops the connection during the handshake,
    sends it nothing more, and the sender learns <remote-server-not-found/>."""
    async with rawpeer.RawServer(ca, "peer.lit", cert_name="wrong.lit") as raw, \
            peer(tmp_path, ca, "wonderland.lit", free_port(), {"peer.lit": raw.port}) as w:
        alice = await w.login(await w.user("alice"))
        condition, _ = await bounced(alice, "bob@peer.lit", "to peer")
        assert condition == "remote-server-not-found"
        (conv,) = raw.conversations
        await asyncio.wait_for(conv.done.wait(), TIMEOUT)
        assert conv.tls_error is not None
        assert conv.after_tls == []
        assert raw.stanzas.empty()


async def test_an_untrusted_certificate_is_refused(tmp_path: Path, ca: trustme.CA) -> None:
    """A self-signed peer (a CA nobody configured) is not accepted either."""
    async with rawpeer.RawServer(trustme.CA(), "peer.lit") as raw, \
            peer(tmp_path, ca, "wonderland.lit", free_port(), {"peer.lit": raw.port}) as w:
        alice = await w.login(await w.user("alice"))
        condition, _ = await bounced(alice, "bob@peer.lit", "to peer")
        assert condition == "remote-server-not-found"
        (conv,) = raw.conversations
        await asyncio.wait_for(conv.done.wait(), TIMEOUT)
        assert conv.tls_error is not None and conv.after_tls == []


async def test_insecure_domains_are_accepted_with_dialback(
        tmp_path: Path, ca: trustme.CA) -> None:
    """The same peer, listed in ``insecure_domains``: its certificate is not
    checked; vinespy authenticates itself by dialback, and the message flows."""
    async with rawpeer.RawServer(trustme.CA(), "peer.lit", cert_name="wrong.lit") as raw, \
            peer(tmp_path, ca, "wonderland.lit", free_port(), {"peer.lit": raw.port},
                 insecure_domains=["peer.lit"]) as w:
        alice = await w.login(await w.user("alice"))
        alice.send_message(mto="bob@peer.lit", mbody="to peer", mtype="chat")
        stanza = await asyncio.wait_for(raw.stanzas.get(), TIMEOUT)
        assert stanza.tag == f"{{{ns.SERVER}}}message"
        assert stanza.get("to") == "bob@peer.lit"
        assert stanza.get("from", "").startswith("alice@wonderland.lit/")
        assert stanza.findtext(f"{{{ns.SERVER}}}body") == "to peer"
        (conv,) = raw.conversations
        (result,) = conv.results
        assert (result.get("from"), result.get("to")) == ("wonderland.lit", "peer.lit")
        assert conv.after_tls.index(result) < conv.after_tls.index(stanza)
        (out,) = [s for s in w.server.federation.status() if s["direction"] == "out"]
        assert (out["remote"], out["auth"]) == ("peer.lit", "dialback")


async def test_a_peer_that_refuses_our_key_bounces(tmp_path: Path, ca: trustme.CA) -> None:
    """The peer answers our <db:result/> invalid: no stanza goes to it, and
    each waiting one is answered <remote-server-not-found/>."""
    async with rawpeer.RawServer(ca, "peer.lit", result="invalid") as raw, \
            peer(tmp_path, ca, "wonderland.lit", free_port(), {"peer.lit": raw.port}) as w:
        alice = await w.login(await w.user("alice"))
        condition, _ = await bounced(alice, "bob@peer.lit", "to peer")
        assert condition == "remote-server-not-found"
        (conv,) = raw.conversations
        await asyncio.wait_for(conv.done.wait(), TIMEOUT)
        assert [el.tag for el in conv.after_tls] == [rawpeer.DB_RESULT]
        assert raw.stanzas.empty()


# -- servers that are not there --------------------------------------------

async def test_no_server_bounces_within_the_connect_timeout(
        tmp_path: Path, ca: trustme.CA) -> None:
    """A closed port, and a domain DNS does not know: <remote-server-not-found/>
    well within connect_timeout; a server that accepts TCP and then says
    nothing: <remote-server-timeout/> once connect_timeout is over."""
    closed = free_port()
    async with rawpeer.RawServer(ca, "silent.lit", silent=True) as silent, \
            peer(tmp_path, ca, "wonderland.lit", free_port(),
                 {"closed.lit": closed, "silent.lit": silent.port}, connect_timeout=1.0) as w:
        alice = await w.login(await w.user("alice"))
        for to in ("bob@closed.lit", "bob@nowhere.invalid"):
            condition, took = await bounced(alice, to, f"to {to}")
            assert (condition, to) == ("remote-server-not-found", to)
            assert took < 1.0, (to, took)
        condition, took = await bounced(alice, "bob@silent.lit", "to silent")
        assert condition == "remote-server-timeout"
        assert 1.0 <= took < 1.0 + TIMEOUT / 2, took
        (conv,) = silent.conversations
        assert conv.conn.got == []
        # The next stanza tries again (and fails again): nothing is stuck.
        condition, _ = await bounced(alice, "bob@closed.lit", "again")
        assert condition == "remote-server-not-found"


async def test_every_queued_stanza_is_bounced(tmp_path: Path, ca: trustme.CA) -> None:
    """Stanzas that queued while the stream was being set up are each
    answered, in order, when it fails."""
    async with rawpeer.RawServer(ca, "silent.lit", silent=True) as silent, \
            peer(tmp_path, ca, "wonderland.lit", free_port(), {"silent.lit": silent.port},
                 connect_timeout=1.0) as w:
        alice = await w.login(await w.user("alice"))
        errors: list[tuple[str, str]] = []
        alice.add_event_handler("message_error",
                                lambda m: errors.append((str(m["id"]), error_of(m))))
        bodies = [f"m{i}" for i in range(5)]
        for body in bodies:
            send(alice, "bob@silent.lit", body)
        await until("5 errors", lambda: len(errors) == 5)
        assert errors == [(b, "remote-server-timeout") for b in bodies]
        assert silent.stanzas.empty()


# -- a peer that dies mid-conversation ---------------------------------------

async def test_a_peer_that_dies_bounces_then_recovers(tmp_path: Path, ca: trustme.CA) -> None:
    """verona.lit stops while the servers talk: what alice sends meanwhile
    comes back as <remote-server-not-found/>, not silently lost; once it is
    back on the same port, a new stream carries her messages again."""
    pw, pv = free_port(), free_port()
    async with peer(tmp_path, ca, "wonderland.lit", pw, {"verona.lit": pv}) as w:
        alice = await w.login(await w.user("alice"))
        async with peer(tmp_path, ca, "verona.lit", pv, {"wonderland.lit": pw}) as v:
            romeo = await v.login(await v.user("romeo"))
            await chat(alice, romeo, "romeo@verona.lit", "before")
            first = {id(s) for s in w.server.federation.streams}
        await until("the streams closed", lambda: not w.server.federation.streams)
        errors: list[str] = []
        alice.add_event_handler("message_error",
                                lambda m: errors.append(f"{m['id']} {error_of(m)}"))
        for i in range(3):
            send(alice, "romeo@verona.lit", f"lost {i}")
        await until("3 errors", lambda: len(errors) == 3)
        assert errors == [f"lost-{i} remote-server-not-found" for i in range(3)]
        async with peer(tmp_path, ca, "verona.lit", pv, {"wonderland.lit": pw}) as v:
            romeo = await v.login("romeo@verona.lit")
            await chat(alice, romeo, "romeo@verona.lit", "after")
            assert not first & {id(s) for s in w.server.federation.streams}
        assert len(errors) == 3


async def test_a_peer_that_drops_the_connection_gets_the_next_stanzas_on_a_new_one(
        tmp_path: Path, ca: trustme.CA) -> None:
    """The peer's connection dies without a closing tag (a crash): vinespy
    connects again for the next stanza, which arrives."""
    async with rawpeer.RawServer(ca, "peer.lit") as raw, \
            peer(tmp_path, ca, "wonderland.lit", free_port(), {"peer.lit": raw.port}) as w:
        alice = await w.login(await w.user("alice"))
        alice.send_message(mto="bob@peer.lit", mbody="one", mtype="chat")
        first = await asyncio.wait_for(raw.stanzas.get(), TIMEOUT)
        assert first.findtext(f"{{{ns.SERVER}}}body") == "one"
        raw.conversations[0].conn.writer.transport.abort()
        await until("the stream gone", lambda: not w.server.federation.streams)
        alice.send_message(mto="bob@peer.lit", mbody="two", mtype="chat")
        second = await asyncio.wait_for(raw.stanzas.get(), TIMEOUT)
        assert second.findtext(f"{{{ns.SERVER}}}body") == "two"
        assert len(raw.conversations) == 2


# -- idle streams ----------------------------------------------------------------

async def test_idle_streams_close_and_the_next_message_opens_a_new_one(
        tmp_path: Path, ca: trustme.CA) -> None:
    """Streams without stanzas for ``idle_timeout`` close, each by its
    sending side (the receiving one sees the peer's closing tag: it never
    closes under a stanza in flight); the next message opens a new one."""
    async with two(tmp_path, ca, idle_timeout=1.0) as (w, v):
        alice = await w.login(await w.user("alice"))
        romeo = await v.login(await v.user("romeo"))
        loop = asyncio.get_running_loop()
        await chat(alice, romeo, "romeo@verona.lit", "first")
        streams = set(w.server.federation.streams) | set(v.server.federation.streams)
        assert {s.direction for s in streams} == {"in", "out"}
        quiet = loop.time()
        await until("the idle streams closed",
                    lambda: not w.server.federation.streams and not v.server.federation.streams)
        assert loop.time() - quiet >= 0.9
        assert all(s.peer_closed for s in streams if s.direction == "in"), [
            (s.describe(), s.peer_closed) for s in streams]
        await chat(alice, romeo, "romeo@verona.lit", "second")
        assert w.server.federation.streams
        assert not streams & w.server.federation.streams


async def test_the_receiving_side_waits_longer_before_closing_an_idle_stream(
        tmp_path: Path, ca: trustme.CA) -> None:
    """A peer's stream that carried nothing for ``idle_timeout`` is left to
    the peer to close until twice that: what it wrote just before it closed
    would be lost if this side closed first."""
    async with rawpeer.RawServer(ca, "evil.lit") as authority, \
            peer(tmp_path, ca, "wonderland.lit", free_port(), {"evil.lit": authority.port},
                 idle_timeout=1.0) as w:
        alice = await w.login(await w.user("alice"))
        conn = await rawpeer.connect(w.server.ports["server"], ca, "evil.lit", "wonderland.lit")
        try:
            assert await rawpeer.dialback(conn, "evil.lit", "wonderland.lit") == "valid"
            got = asyncio.ensure_future(wait_event(alice, "message"))
            loop = asyncio.get_running_loop()
            sent = loop.time()          # before vinespy reads it: its last activity
            conn.send("<message from='mallory@evil.lit' to='alice@wonderland.lit' type='chat'>"
                      "<body>hi</body></message>")
            await got
            # vinespy's own (outgoing, to the authority) closes after 1 s.
            (conv,) = authority.conversations
            await asyncio.wait_for(conv.done.wait(), TIMEOUT)
            assert loop.time() - sent < 2.0
            assert await conn.until_closed() == []
            assert loop.time() - sent >= 2.0
        finally:
            conn.writer.close()


# -- RFC 6121 across servers ----------------------------------------------------

async def test_subscription_and_presence_across_servers(tmp_path: Path, ca: trustme.CA) -> None:
    """RFC 6121 §3.1 over s2s: alice subscribes to romeo, romeo's client
    approves (and subscribes back: slixmpp's auto_subscribe), each sees the
    other's presence; romeo leaving → alice gets unavailable. A message to a
    user verona.lit does not have → <service-unavailable/> back over s2s."""
    async with two(tmp_path, ca) as (w, v):
        alice = await w.login(await w.user("alice"))
        romeo = await v.login(await v.user("romeo"))
        alice_sees = asyncio.ensure_future(wait_event(
            alice, "presence_available", match=lambda p: p["from"].bare == "romeo@verona.lit"))
        romeo_sees = asyncio.ensure_future(wait_event(
            romeo, "presence_available",
            match=lambda p: p["from"].bare == "alice@wonderland.lit"))
        subscriptions: list[str] = []
        alice.send_presence(pto="romeo@verona.lit", ptype="subscribe")
        await asyncio.gather(alice_sees, romeo_sees)
        await until("both stored rosters say both", lambda: subscriptions == ["both", "both"],
                    poll=lambda: stored(w, v, subscriptions))

        gone = asyncio.ensure_future(wait_event(
            alice, "presence_unavailable",
            match=lambda p: p["from"].bare == "romeo@verona.lit"))
        romeo.disconnect()
        await gone

        condition, _ = await bounced(alice, "nobody@verona.lit", "anyone?")
        assert condition == "service-unavailable"


async def test_directed_presence_to_another_server_is_withdrawn(
        tmp_path: Path, ca: trustme.CA) -> None:
    """RFC 6121 §4.6.3 across servers: a resource that sent directed presence
    to a JID of another server and goes away sends it unavailable."""
    async with rawpeer.RawServer(ca, "peer.lit") as raw, \
            peer(tmp_path, ca, "wonderland.lit", free_port(), {"peer.lit": raw.port}) as w:
        alice = await w.login(await w.user("alice"))
        alice.send_presence(pto="bob@peer.lit", pstatus="here")
        got = await asyncio.wait_for(raw.stanzas.get(), TIMEOUT)
        assert (got.get("to"), got.get("type")) == ("bob@peer.lit", None)
        full = got.get("from")
        alice.disconnect()
        gone = await asyncio.wait_for(raw.stanzas.get(), TIMEOUT)
        assert (gone.get("from"), gone.get("to"), gone.get("type")) == (
            full, "bob@peer.lit", "unavailable")


async def stored(w: Peer, v: Peer, out: list[str]) -> None:
    """The subscription states the servers store: alice's of romeo, romeo's of alice."""
    out.clear()
    for srv, user, contact in ((w, "alice@wonderland.lit", "romeo@verona.lit"),
                               (v, "romeo@verona.lit", "alice@wonderland.lit")):
        found = await srv.server.hosts[srv.domain].storage.find_contact(
            JID.parse(user), JID.parse(contact))
        out.append(found.contact.subscription if found and found.contact else "none")


async def chat(a: slixmpp.ClientXMPP, b: slixmpp.ClientXMPP, to: str, body: str) -> None:
    got = asyncio.ensure_future(wait_event(b, "message", match=lambda m: m["body"] == body))
    a.send_message(mto=to, mbody=body, mtype="chat")
    await got


async def test_a_failed_setup_does_not_stop_later_dialback_checks(
        tmp_path: Path, ca: trustme.CA) -> None:
    """Our stream to peer.lit got as far as its features (so db:verify could
    go out on it) and then failed: the peer refused our key. When peer.lit
    later connects to us and asks for dialback, vinespy must ask its
    authoritative server over a new stream, not answer from the dead one
    (XEP-0220 §2.1.2)."""
    async with rawpeer.RawServer(ca, "peer.lit", result="invalid") as raw, \
            peer(tmp_path, ca, "wonderland.lit", free_port(), {"peer.lit": raw.port}) as w:
        alice = await w.login(await w.user("alice"))
        condition, _ = await bounced(alice, "bob@peer.lit", "to peer")
        assert condition == "remote-server-not-found"
        raw.result = "valid"
        conn = await rawpeer.connect(w.server.ports["server"], ca, "peer.lit", "wonderland.lit")
        try:
            assert await rawpeer.dialback(conn, "peer.lit", "wonderland.lit") == "valid"
        finally:
            conn.writer.close()


@pytest.mark.parametrize("idle", [False, True])
async def test_a_server_that_stops_tells_other_servers_its_users_left(
        tmp_path: Path, ca: trustme.CA, idle: bool) -> None:
    """RFC 6121 §4.5.2 at shutdown: the server closes its users' streams, and
    the unavailable presence each resource owes (here to a JID of another
    server it sent directed presence to, §4.6.3) still reaches that server,
    which has no other way to learn that alice is gone; also when the stream
    to it had closed, idle, and a new one must be set up for it."""
    async with rawpeer.RawServer(ca, "peer.lit") as raw:
        async with peer(tmp_path, ca, "wonderland.lit", free_port(),
                        {"peer.lit": raw.port}, idle_timeout=1.0 if idle else 600.0) as w:
            alice = await w.login(await w.user("alice"))
            alice.send_presence(pto="bob@peer.lit", pstatus="here")
            got = await asyncio.wait_for(raw.stanzas.get(), TIMEOUT)
            full = got.get("from")
            if idle:
                await asyncio.wait_for(raw.conversations[0].done.wait(), TIMEOUT)
            w.clients.clear()       # the server's shutdown ends alice's stream, not the test
        for conv in raw.conversations:      # all it was sent is read
            await asyncio.wait_for(conv.done.wait(), TIMEOUT)
        presences = []
        while not raw.stanzas.empty():
            el = raw.stanzas.get_nowait()
            if el.tag == f"{{{ns.SERVER}}}presence":
                presences.append((el.get("from"), el.get("to"), el.get("type")))
        assert presences == [(full, "bob@peer.lit", "unavailable")]
