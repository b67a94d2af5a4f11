"""Federation found through DNS (RFC 6120 §3.2, XEP-0368), no static routes:
two real vinespy servers whose ``[server] nameservers`` is a real DNS server
on loopback UDP (tests/s2s/dnsserver.py) serving the records each test
publishes; real slixmpp clients."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import trustme

from tests.conftest import wait_event
from tests.s2s import rawpeer
from tests.s2s.conftest import Peer, peer, until
from tests.s2s.dnsserver import DNSServer, Zone
from tests.s2s.test_s2s_edges import bounced
from tests.support import free_port
from vinespy.s2s import resolve
from vinespy.s2s.incoming import IncomingStream
from vinespy.s2s.outgoing import OutgoingStream

W, V = "wonderland.lit", "verona.lit"
HOST = {"A": ["127.0.0.1"]}


def srv(priority: int, port: int, target: str) -> str:
    return f"{priority} 5 {port} {target}."


async def chat(w: Peer, v: Peer) -> None:
    """alice@wonderland.lit and romeo@verona.lit exchange a message each way."""
    alice = await w.login(await w.user("alice"))
    romeo = await v.login(await v.user("romeo"))
    got = asyncio.ensure_future(wait_event(romeo, "message"))
    alice.send_message(mto=f"romeo@{V}", mbody="hello verona", mtype="chat")
    msg = await got
    assert (msg["body"], msg["from"].bare) == ("hello verona", f"alice@{W}")
    back = asyncio.ensure_future(wait_event(alice, "message"))
    romeo.send_message(mto=msg["from"], mbody="hello wonderland", mtype="chat")
    assert (await back)["body"] == "hello wonderland"


def streams(p: Peer, kind: type) -> list[Any]:
    return [s for s in p.server.federation.streams if isinstance(s, kind)]


def local_port(stream: Any) -> int:
    return int(stream.transport.get_extra_info("sockname")[1])


@contextlib.asynccontextmanager
async def federated(root: Path, ca: trustme.CA, dns: DNSServer, pw: int, pv: int,
                    w: dict[str, Any] | None = None, v: dict[str, Any] | None = None
                    ) -> AsyncIterator[tuple[Peer, Peer]]:
    """wonderland.lit (s2s port ``pw``) and verona.lit (``pv``), both asking
    ``dns`` and nothing else: no routes. No XEP-0288: each side opens its own
    stream, so that both directions' lookups are seen."""
    async with peer(root, ca, W, pw, {}, nameservers=[dns.address], bidi=False,
                    **(w or {})) as one, \
            peer(root, ca, V, pv, {}, nameservers=[dns.address], bidi=False,
                 **(v or {})) as other:
        yield one, other


# -- SRV records ---------------------------------------------------------------

async def test_srv_record_names_the_starttls_port(tmp_path: Path, ca: trustme.CA) -> None:
    """_xmpp-server._tcp of each domain names its server's port (on a host
    name only the DNS server knows): users chat both ways, and the streams
    went where DNS said, authenticated by certificate (SASL EXTERNAL)."""
    pw, pv = free_port(), free_port()
    zone: Zone = {f"_xmpp-server._tcp.{W}": {"SRV": [srv(0, pw, f"xmpp.{W}")]},
                  f"_xmpp-server._tcp.{V}": {"SRV": [srv(0, pv, f"xmpp.{V}")]},
                  f"xmpp.{W}": HOST, f"xmpp.{V}": HOST}
    async with DNSServer(zone) as dns, federated(tmp_path, ca, dns, pw, pv) as (w, v):
        await chat(w, v)
        for domain in (V, W):
            assert dns.asked(f"_xmpp-server._tcp.{domain}") >= 1
            assert dns.asked(f"_xmpps-server._tcp.{domain}") >= 1     # XEP-0368: both asked
            assert dns.asked(f"xmpp.{domain}", "A") >= 1
        (out,) = streams(w, OutgoingStream)
        assert (out.peer[1], out.auth) == (pv, "EXTERNAL")
        (inc,) = streams(v, IncomingStream)
        assert (local_port(inc), inc.direct_tls, inc.auth) == (pv, False, "EXTERNAL")


async def test_direct_tls_both_ways(tmp_path: Path, ca: trustme.CA) -> None:
    """Only _xmpps-server._tcp records (XEP-0368), naming each server's
    direct_tls_port: each side connects there, TLS from the first byte, and
    the receiving side authenticates the other by its certificate (SASL
    EXTERNAL) as on the STARTTLS port; nothing reaches the STARTTLS ports."""
    pw, pv, dw, dv = free_port(), free_port(), free_port(), free_port()
    zone: Zone = {f"_xmpps-server._tcp.{W}": {"SRV": [srv(0, dw, f"xmpp.{W}")]},
                  f"_xmpps-server._tcp.{V}": {"SRV": [srv(0, dv, f"xmpp.{V}")]},
                  f"xmpp.{W}": HOST, f"xmpp.{V}": HOST}
    async with DNSServer(zone) as dns, federated(
            tmp_path, ca, dns, pw, pv, {"direct_tls_port": dw}, {"direct_tls_port": dv}
    ) as (w, v):
        await chat(w, v)
        for here, there, port in ((w, v, dv), (v, w, dw)):
            assert here.server.ports["server_direct_tls"] == (dw if here is w else dv)
            (out,) = streams(here, OutgoingStream)
            assert (out.peer[1], out.auth) == (port, "EXTERNAL")
            (inc,) = streams(there, IncomingStream)
            assert (local_port(inc), inc.direct_tls, inc.auth) == (port, True, "EXTERNAL")
            assert inc.transport.get_extra_info("ssl_object").selected_alpn_protocol() \
                == "xmpp-server"                                    # XEP-0368 §4


async def test_direct_tls_checks_the_certificate_for_the_domain(
        tmp_path: Path, ca: trustme.CA, caplog: pytest.LogCaptureFixture) -> None:
    """verona.lit's direct-TLS target presents a certificate (from a trusted
    CA) for the SRV target's name, not for verona.lit: that does not make it
    valid (RFC 6125: the domain must be named); the handshake fails and the
    sender gets <remote-server-not-found/>. (A vinespy cannot be that peer:
    its config refuses a certificate that does not name its domain.)"""
    ctx = rawpeer.server_context(ca, f"xmpp.{V}")
    handshakes: list[str] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await writer.start_tls(ctx)
            handshakes.append("done")
        except (OSError, ssl.SSLError) as exc:
            handshakes.append(f"failed: {exc}")
        writer.close()

    listener = await asyncio.start_server(accept, "127.0.0.1", 0)
    dv = listener.sockets[0].getsockname()[1]
    zone: Zone = {f"_xmpps-server._tcp.{V}": {"SRV": [srv(0, dv, f"xmpp.{V}")]},
                  f"xmpp.{V}": HOST}
    caplog.set_level(logging.INFO, "vinespy.s2s")
    async with listener, DNSServer(zone) as dns, \
            peer(tmp_path, ca, W, free_port(), {}, nameservers=[dns.address]) as w:
        alice = await w.login(await w.user("alice"))
        condition, _ = await bounced(alice, f"romeo@{V}", "to verona")
        assert condition == "remote-server-not-found"
        assert any(f":{dv}: TLS: " in r.getMessage() and "certificate verify failed"
                   in r.getMessage() for r in caplog.records), caplog.text
        await until("the listener saw the handshake end", lambda: handshakes)
        assert handshakes[0].startswith("failed"), handshakes


async def test_the_lowest_priority_is_used(tmp_path: Path, ca: trustme.CA) -> None:
    """RFC 2782 over both services' records: _xmpp-server._tcp at priority 5,
    _xmpps-server._tcp at 10, both working: the STARTTLS port is used."""
    pw, pv, dv = free_port(), free_port(), free_port()
    zone: Zone = {f"_xmpp-server._tcp.{W}": {"SRV": [srv(0, pw, f"xmpp.{W}")]},
                  f"_xmpp-server._tcp.{V}": {"SRV": [srv(5, pv, f"xmpp.{V}")]},
                  f"_xmpps-server._tcp.{V}": {"SRV": [srv(10, dv, f"xmpp.{V}")]},
                  f"xmpp.{W}": HOST, f"xmpp.{V}": HOST}
    async with DNSServer(zone) as dns, federated(
            tmp_path, ca, dns, pw, pv, v={"direct_tls_port": dv}) as (w, v):
        await chat(w, v)
        (inc,) = streams(v, IncomingStream)
        assert (local_port(inc), inc.direct_tls) == (pv, False)


async def test_a_refusing_target_makes_way_for_the_next(tmp_path: Path, ca: trustme.CA) -> None:
    """RFC 2782 fallback: priority 0 names a port nothing listens on, 5 the
    direct-TLS port, 10 the STARTTLS port: the stream goes to the direct-TLS
    port (the next after the refusal, not the last)."""
    pw, pv, dv, closed = free_port(), free_port(), free_port(), free_port()
    zone: Zone = {f"_xmpp-server._tcp.{W}": {"SRV": [srv(0, pw, f"xmpp.{W}")]},
                  f"_xmpp-server._tcp.{V}": {"SRV": [srv(0, closed, f"xmpp.{V}"),
                                                     srv(10, pv, f"xmpp.{V}")]},
                  f"_xmpps-server._tcp.{V}": {"SRV": [srv(5, dv, f"xmpp.{V}")]},
                  f"xmpp.{W}": HOST, f"xmpp.{V}": HOST}
    async with DNSServer(zone) as dns, federated(
            tmp_path, ca, dns, pw, pv, v={"direct_tls_port": dv}) as (w, v):
        await chat(w, v)
        (inc,) = streams(v, IncomingStream)
        assert (local_port(inc), inc.direct_tls) == (dv, True)


async def test_a_silent_target_gives_the_next_its_share_of_the_time(
        tmp_path: Path, ca: trustme.CA) -> None:
    """The first target accepts and then says nothing: it may take its share
    of connect_timeout (half, with two targets), not all of it, and the
    stream goes to the second one."""
    pw, pv = free_port(), free_port()
    held: list[asyncio.StreamWriter] = []

    async def mute(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)             # accepted, never answered
    silent = await asyncio.start_server(mute, "127.0.0.1", 0)
    quiet = silent.sockets[0].getsockname()[1]
    zone: Zone = {f"_xmpp-server._tcp.{W}": {"SRV": [srv(0, pw, f"xmpp.{W}")]},
                  f"_xmpp-server._tcp.{V}": {"SRV": [srv(0, quiet, f"xmpp.{V}"),
                                                     srv(10, pv, f"xmpp.{V}")]},
                  f"xmpp.{W}": HOST, f"xmpp.{V}": HOST}
    try:
        async with DNSServer(zone) as dns, federated(
                tmp_path, ca, dns, pw, pv, w={"connect_timeout": 4.0}) as (w, v):
            await chat(w, v)
            assert held, "the silent target was tried first"
            (out,) = streams(w, OutgoingStream)
            assert out.peer[1] == pv
    finally:
        for writer in held:
            writer.close()
        silent.close()


# -- no SRV records ------------------------------------------------------------

FALLBACK = "127.77.0.1"       # a loopback address of its own: port 5269 is free there


async def test_without_srv_the_domain_address_port_5269(tmp_path: Path, ca: trustme.CA) -> None:
    """RFC 6120 §3.2.2: verona.lit publishes no SRV record, only its own A
    record: the stream goes to that address, port 5269 (verona's server
    listens there, on a loopback address no other test uses)."""
    with socket.socket() as probe:
        # As the server binds (a previous run's closed connections may linger).
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((FALLBACK, resolve.DEFAULT_PORT))
        except OSError as exc:
            pytest.skip(f"cannot listen on {FALLBACK}:5269 here: {exc}")
    pw = free_port()
    zone: Zone = {f"_xmpp-server._tcp.{W}": {"SRV": [srv(0, pw, f"xmpp.{W}")]},
                  f"xmpp.{W}": HOST, V: {"A": [FALLBACK]}}
    async with DNSServer(zone) as dns, federated(
            tmp_path, ca, dns, pw, resolve.DEFAULT_PORT, v={"address": FALLBACK}) as (w, v):
        await chat(w, v)
        assert dns.asked(f"_xmpp-server._tcp.{V}") >= 1 and dns.asked(V, "A") >= 1
        (out,) = streams(w, OutgoingStream)
        assert out.peer[:2] == (FALLBACK, resolve.DEFAULT_PORT)
        assert out.auth == "EXTERNAL"


async def test_resolve_orders_both_services_and_falls_back_to_the_domain() -> None:
    """resolve.targets() against the DNS server: the records of both services
    merged by priority, each target's addresses (AAAA, then A) looked up with
    the configured nameservers; without SRV records, the domain's own
    addresses on port 5269."""
    zone: Zone = {f"_xmpp-server._tcp.{V}": {"SRV": [srv(20, 5269, "b.example"),
                                                     srv(0, 5269, "a.example")]},
                  f"_xmpps-server._tcp.{V}": {"SRV": [srv(10, 5270, "a.example")]},
                  "a.example": {"A": ["192.0.2.1"], "AAAA": ["2001:db8::1"]},
                  "b.example": {"A": ["192.0.2.2"]},
                  W: {"A": ["192.0.2.3"]}}
    async with DNSServer(zone) as dns:
        servers = [("127.0.0.1", dns.port)]
        assert await resolve.targets(V, {}, 5.0, servers) == [
            resolve.Target("2001:db8::1", 5269, False), resolve.Target("192.0.2.1", 5269, False),
            resolve.Target("2001:db8::1", 5270, True), resolve.Target("192.0.2.1", 5270, True),
            resolve.Target("192.0.2.2", 5269, False)]
        assert dns.asked("a.example", "A") == 1           # once for both of its records
        assert await resolve.targets(W, {}, 5.0, servers) == [
            resolve.Target("192.0.2.3", 5269, False)]


async def test_an_srv_lookup_that_fails_falls_back_to_the_domain() -> None:
    """RFC 6120 §3.2.1: an error (SERVFAIL) on the SRV lookups is as no
    record: the domain's own address, port 5269, is tried."""
    zone: Zone = {f"_xmpp-server._tcp.{V}": {"SRV": ["SERVFAIL"]},
                  f"_xmpps-server._tcp.{V}": {"SRV": ["SERVFAIL"]},
                  V: {"A": ["192.0.2.7"]}}
    async with DNSServer(zone) as dns:
        assert await resolve.targets(V, {}, 5.0, [("127.0.0.1", dns.port)]) == [
            resolve.Target("192.0.2.7", 5269, False)]
        assert dns.asked(f"_xmpp-server._tcp.{V}") >= 1


# -- no server, no answer --------------------------------------------------------

async def test_no_server_by_dns_bounces_at_once(tmp_path: Path, ca: trustme.CA) -> None:
    """A single SRV record with the target "." (RFC 6120 §3.2.1: "decidedly
    not available"; no fallback to the domain's address), and a domain DNS
    does not know (NXDOMAIN for every name): <remote-server-not-found/>
    at once, well within connect_timeout."""
    zone: Zone = {"_xmpp-server._tcp.nowhere.lit": {"SRV": ["0 0 0 ."]},
                  "nowhere.lit": {"A": ["127.0.0.1"]}}
    async with DNSServer(zone) as dns, peer(tmp_path, ca, W, free_port(), {},
                                            nameservers=[dns.address], connect_timeout=5.0) as w:
        alice = await w.login(await w.user("alice"))
        condition, took = await bounced(alice, "bob@nowhere.lit", "to nowhere")
        assert condition == "remote-server-not-found" and took < 1.0, (condition, took)
        assert dns.asked("_xmpp-server._tcp.nowhere.lit") == 1
        assert dns.asked("nowhere.lit", "A") == dns.asked("nowhere.lit", "AAAA") == 0
        condition, took = await bounced(alice, "bob@unknown.lit", "to unknown")
        assert condition == "remote-server-not-found" and took < 1.0, (condition, took)
        assert dns.asked("_xmpps-server._tcp.unknown.lit") == 1
        assert dns.asked("unknown.lit", "A") == 1


async def test_a_silent_dns_server_bounces_within_the_connect_timeout(
        tmp_path: Path, ca: trustme.CA) -> None:
    """The DNS server never answers: the sender learns so once
    connect_timeout is over (not later: nothing hangs), and the next stanza
    asks again and is answered the same way."""
    async with DNSServer({}, silent=True) as dns, \
            peer(tmp_path, ca, W, free_port(), {}, nameservers=[dns.address],
                 connect_timeout=1.0) as w:
        alice = await w.login(await w.user("alice"))
        for body in ("first", "second"):
            asked = len(dns.queries)
            condition, took = await bounced(alice, f"romeo@{V}", body)
            assert condition in ("remote-server-timeout", "remote-server-not-found"), condition
            assert 0.9 <= took < 2.0, took
            assert len(dns.queries) > asked
