"""vinespy federating with Prosody 0.12 and ejabberd 23.01 (Debian's), run
by tests/peerproc.py on loopback and pointed at vinespy's s2s port: users on
each side subscribe to each other, see each other's presence and chat."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import slixmpp
import trustme

from tests.conftest import wait_event
from tests.peerproc import Peer, PeerFactory
from tests.s2s.conftest import Peer as Vinespy, peer as vinespy_peer, until
from tests.support import TIMEOUT, free_port
from vinespy.jid import JID

pytestmark = [pytest.mark.integration, pytest.mark.peers]

DOMAIN = "wonderland.lit"
PEER_PASSWORD = "j-pw-123"


@pytest.fixture(params=["prosody", "ejabberd"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def start(kind: str, prosody: PeerFactory, ejabberd: PeerFactory) -> PeerFactory:
    """The factory of the ``kind`` of peer (neither starts anything by itself)."""
    return prosody if kind == "prosody" else ejabberd


@contextlib.asynccontextmanager
async def federated(start: PeerFactory, tmp_path: Path, ca: trustme.CA, *,
                    vinespy_ca: trustme.CA | None = None,
                    server: dict[str, Any] | None = None,
                    **peer_kw: Any) -> AsyncIterator[tuple[Vinespy, Peer]]:
    """vinespy (wonderland.lit) and a ``kind`` peer with user juliet, routed
    to each other. vinespy's certificate is from ``vinespy_ca`` (default:
    the suite's CA, which the peer trusts); it trusts the suite's CA."""
    port = free_port()
    other = await start(users={"juliet": PEER_PASSWORD},
                        routes={DOMAIN: ("127.0.0.1", port)}, **peer_kw)
    async with vinespy_peer(tmp_path / "vinespy", vinespy_ca or ca, DOMAIN, port,
                            {other.domain: other.s2s_port}, trust=ca, **(server or {})) as v:
        yield v, other


async def subscribed_both_ways(alice: slixmpp.ClientXMPP, juliet: slixmpp.ClientXMPP,
                               a: str, j: str) -> None:
    """alice asks juliet for a subscription; slixmpp's defaults approve it and
    ask back (auto_authorize, auto_subscribe), so both end up with "both" and
    each sees the other's available presence (RFC 6121 §3 across servers)."""
    seen_j = asyncio.ensure_future(wait_event(
        alice, "presence_available", 2 * TIMEOUT, lambda p: p["from"].bare == j))
    seen_a = asyncio.ensure_future(wait_event(
        juliet, "presence_available", 2 * TIMEOUT, lambda p: p["from"].bare == a))
    alice.send_presence(pto=j, ptype="subscribe")
    await asyncio.gather(seen_j, seen_a)


async def test_users_subscribe_see_presence_and_chat(kind: str, start: PeerFactory,
                                                     tmp_path: Path, ca: trustme.CA) -> None:
    """Certificates from a CA both trust: each side authenticates to the
    other with SASL EXTERNAL (vinespy checks the peer's client certificate)."""
    async with federated(start, tmp_path, ca) as (v, other):
        alice = await v.login(await v.user("alice"))
        juliet = await other.login("juliet")
        j = other.jid("juliet")
        a = f"alice@{DOMAIN}"
        await subscribed_both_ways(alice, juliet, a, j)
        storage = v.server.hosts[DOMAIN].storage

        async def alices() -> str | None:
            user = await storage.find_user(JID.parse(a))
            contact = user.roster.get(JID.parse(j)) if user is not None else None
            return contact.subscription if contact is not None else None
        state: list[str | None] = [None]

        async def poll() -> None:
            state[0] = await alices()
        # RFC 6121 Appendix A across servers: the stored state, not only the
        # presence slixmpp's directed presence would show anyway.
        await until("alice's roster says both for juliet", lambda: state[0] == "both",
                    poll=poll)
        got = asyncio.ensure_future(wait_event(juliet, "message", match=lambda m: m["body"]))
        alice.send_message(mto=j, mbody=f"hello {kind}", mtype="chat")
        msg = await got
        assert (msg["body"], msg["from"].bare) == (f"hello {kind}", a)
        back = asyncio.ensure_future(wait_event(alice, "message", match=lambda m: m["body"]))
        juliet.send_message(mto=msg["from"], mbody="hello vinespy", mtype="chat")
        reply = await back
        assert (reply["body"], reply["from"].bare) == ("hello vinespy", j)
        assert {(s["direction"], s["auth"]) for s in v.server.federation.status()} == {
            ("out", "EXTERNAL"), ("in", "EXTERNAL")}, v.server.federation.status()
        gone = asyncio.ensure_future(wait_event(
            alice, "presence_unavailable", TIMEOUT, lambda p: p["from"].bare == j))
        juliet.disconnect()
        await gone


async def test_dialback_when_certificates_prove_nothing(
        kind: str, start: PeerFactory, tmp_path: Path, ca: trustme.CA) -> None:
    """vinespy's certificate is from a CA the peer does not know, the peer's
    is self-signed (vinespy lists it in insecure_domains): no EXTERNAL either
    way; dialback authenticates both directions, and users chat."""
    async with federated(start, tmp_path, ca, vinespy_ca=trustme.CA(), cert="untrusted",
                         server={"insecure_domains": [f"{kind}.test"]}) as (v, other):
        alice = await v.login(await v.user("alice"))
        juliet = await other.login("juliet")
        j = other.jid("juliet")
        got = asyncio.ensure_future(wait_event(juliet, "message", match=lambda m: m["body"]))
        alice.send_message(mto=j, mbody="by dialback", mtype="chat")
        assert (await got)["body"] == "by dialback"
        back = asyncio.ensure_future(wait_event(alice, "message", match=lambda m: m["body"]))
        juliet.send_message(mto=f"alice@{DOMAIN}", mbody="dialback too", mtype="chat")
        assert (await back)["body"] == "dialback too"
        assert {(s["direction"], s["auth"]) for s in v.server.federation.status()} == {
            ("out", "dialback"), ("in", "dialback")}, v.server.federation.status()


async def test_a_peer_certificate_for_another_name_is_refused(
        start: PeerFactory, tmp_path: Path, ca: trustme.CA) -> None:
    """The peer presents a certificate (from a trusted CA) for another name:
    vinespy refuses the stream, and alice's message comes back as
    remote-server-not-found; nothing reaches juliet."""
    async with federated(start, tmp_path, ca, cert="wrong-name",
                         dialback=False) as (v, other):
        alice = await v.login(await v.user("alice"))
        alice_got: list[Any] = []
        alice.add_event_handler("message", lambda m: m["type"] != "error" and alice_got.append(m))
        juliet = await other.login("juliet")
        error = asyncio.ensure_future(wait_event(
            alice, "message_error", 2 * TIMEOUT))
        alice.send_message(mto=other.jid("juliet"), mbody="to the impostor", mtype="chat")
        err = await error
        assert err["error"]["condition"] == "remote-server-not-found"
        assert "not valid for it" in err["error"]["text"]
        # The other way, its certificate proves nothing either: no EXTERNAL
        # is offered, and the peer (dialback off) gives up: juliet's message
        # comes back to her, alice never gets it.
        refused = asyncio.ensure_future(wait_event(juliet, "message_error", 2 * TIMEOUT))
        juliet.send_message(mto=f"alice@{DOMAIN}", mbody="from the impostor", mtype="chat")
        await refused
        assert not [s for s in v.server.federation.status() if s["auth"] != "pending"]
        assert not alice_got


async def test_a_bidirectional_stream_with_prosody(prosody: PeerFactory, tmp_path: Path,
                                                   ca: trustme.CA) -> None:
    """XEP-0288: Prosody (mod_s2s_bidi) offers to send back over vinespy's
    stream; vinespy accepts, and juliet's answer comes over it: one stream
    between the two servers, carrying stanzas both ways."""
    async with federated(prosody, tmp_path, ca, bidi=True) as (v, other):
        alice = await v.login(await v.user("alice"))
        juliet = await other.login("juliet")
        got = asyncio.ensure_future(wait_event(juliet, "message", match=lambda m: m["body"]))
        alice.send_message(mto=other.jid("juliet"), mbody="one stream", mtype="chat")
        msg = await got
        back = asyncio.ensure_future(wait_event(alice, "message", match=lambda m: m["body"]))
        juliet.send_message(mto=msg["from"], mbody="both ways", mtype="chat")
        assert (await back)["body"] == "both ways"
        streams = v.server.federation.status()
        assert [(s["direction"], s["stanzas_in"] >= 1) for s in streams] == [("out", True)], \
            streams


async def test_prosody_makes_its_stream_bidirectional(prosody: PeerFactory, tmp_path: Path,
                                                      ca: trustme.CA) -> None:
    """XEP-0288 the other way: Prosody opens the stream and asks to make it
    bidirectional (vinespy offers it); alice's answer goes back over it,
    and vinespy opens no stream of its own."""
    async with federated(prosody, tmp_path, ca, bidi=True) as (v, other):
        alice = await v.login(await v.user("alice"))
        juliet = await other.login("juliet")
        got = asyncio.ensure_future(wait_event(alice, "message", match=lambda m: m["body"]))
        juliet.send_message(mto=f"alice@{DOMAIN}", mbody="from prosody", mtype="chat")
        msg = await got
        back = asyncio.ensure_future(wait_event(juliet, "message", match=lambda m: m["body"]))
        alice.send_message(mto=msg["from"], mbody="over your stream", mtype="chat")
        assert (await back)["body"] == "over your stream"
        streams = v.server.federation.status()
        assert [(s["direction"], s["stanzas_out"] >= 1) for s in streams] == [("in", True)], \
            streams
