"""The federation peers themselves (tests/peerproc.py): real Prosody and
ejabberd log clients in, connect out for s2s where ``routes`` points them
(a listener of the test's own, not vinespy), present the certificate ``cert``
asks for, offer dialback only when asked to, and die and come back."""

from __future__ import annotations

import asyncio
import re
import ssl
from typing import AsyncIterator

import pytest
import trustme
from cryptography import x509
from slixmpp import Message

from tests.conftest import wait_event
from tests.peerproc import Peer, PeerFactory
from tests.support import TIMEOUT

pytestmark = [pytest.mark.integration, pytest.mark.peers]

KINDS = ["prosody", "ejabberd"]
USERS = {"juliet": "juliet-pässword", "nurse": "nurse-password"}
HEADER = re.compile(rb"<stream:stream\s[^>]*>")


@pytest.fixture
def start_peer(request: pytest.FixtureRequest, kind: str) -> PeerFactory:
    """The ``prosody`` or ``ejabberd`` factory, as ``kind`` says."""
    factory: PeerFactory = request.getfixturevalue(kind)
    return factory


class Listener:
    """A bare TCP listener standing in for vinespy.test: it records the
    stream header of every connection made to it, then hangs up."""

    def __init__(self) -> None:
        self.headers: asyncio.Queue[bytes] = asyncio.Queue()
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = b""
        try:
            while not (m := HEADER.search(data)):
                chunk = await reader.read(4096)
                if not chunk:
                    return
                data += chunk
            self.headers.put_nowait(m.group())
        finally:
            writer.close()

    async def header(self) -> dict[str, str]:
        """The attributes of the next stream header received."""
        raw = await asyncio.wait_for(self.headers.get(), TIMEOUT)
        return {k.decode(): v.decode() for k, _, v in
                re.findall(rb"""([\w:]+)=(['"])(.*?)\2""", raw)}


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    lst = Listener()
    srv = await asyncio.start_server(lst.handle, "127.0.0.1", 0)
    lst.port = srv.sockets[0].getsockname()[1]
    try:
        yield lst
    finally:
        srv.close()
        await srv.wait_closed()


@pytest.mark.parametrize("kind", KINDS)
async def test_clients_log_in_and_chat(start_peer: PeerFactory) -> None:
    """Two users of the peer log in over STARTTLS and exchange a message."""
    peer = await start_peer(users=USERS)
    juliet, nurse = await peer.login("juliet"), await peer.login("nurse")
    got = asyncio.ensure_future(wait_event(nurse, "message"))
    juliet.send_message(mto=peer.jid("nurse"), mbody="wherefore", mtype="chat")
    msg: Message = await got
    assert msg["body"] == "wherefore"
    assert msg["from"].bare == peer.jid("juliet")


@pytest.mark.parametrize("kind", KINDS)
async def test_routes_point_outgoing_s2s_at_the_tests_address(
        start_peer: PeerFactory, listener: Listener) -> None:
    """A message to someone@vinespy.test makes the peer open an s2s stream to
    the address and port in ``routes``, and each routed domain goes to its own."""
    other = Listener()
    srv = await asyncio.start_server(other.handle, "127.0.0.1", 0)
    other.port = srv.sockets[0].getsockname()[1]
    try:
        peer = await start_peer(users=USERS, routes={
            "vinespy.test": ("127.0.0.1", listener.port),
            "second.test": ("127.0.0.1", other.port)})
        juliet = await peer.login("juliet")
        juliet.send_message(mto="someone@vinespy.test", mbody="hello", mtype="chat")
        header = await listener.header()
        assert header["to"] == "vinespy.test"
        assert header["from"] == peer.domain
        assert header["xmlns"] == "jabber:server"
        juliet.send_message(mto="someone@second.test", mbody="hello", mtype="chat")
        assert (await other.header())["to"] == "second.test"
        assert listener.headers.empty()
    finally:
        srv.close()
        await srv.wait_closed()


async def s2s_probe(peer: Peer, ca: trustme.CA) -> tuple[x509.Certificate, bytes]:
    """Open an s2s stream to the peer as vinespy.test, STARTTLS with a client
    certificate of ``ca`` for vinespy.test (as conftest.write_config issues
    vinespy's), not checking the peer's: its certificate and its stream
    features after TLS."""
    reader, writer = await asyncio.open_connection("127.0.0.1", peer.s2s_port)

    async def until(pattern: bytes) -> bytes:
        data = b""
        while not re.search(pattern, data):
            chunk = await asyncio.wait_for(reader.read(4096), TIMEOUT)
            assert chunk, f"{peer!r} closed the stream: {data!r}"
            data += chunk
        return data

    def open_stream() -> None:
        writer.write(f"<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
                     f"xmlns:stream='http://etherx.jabber.org/streams' "
                     f"xmlns:db='jabber:server:dialback' to='{peer.domain}' "
                     f"from='vinespy.test' version='1.0'>".encode())
    try:
        open_stream()
        assert b"urn:ietf:params:xml:ns:xmpp-tls" in await until(rb"</stream:features>")
        writer.write(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        await until(rb"<proceed")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ca.issue_cert("vinespy.test").configure_cert(ctx)
        await writer.start_tls(ctx, server_hostname=peer.domain)
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        open_stream()
        features = await until(rb"</stream:features>")
        return x509.load_der_x509_certificate(der), features
    finally:
        writer.close()


def dns_names(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return san.value.get_values_for_type(x509.DNSName)


@pytest.mark.parametrize("kind", KINDS)
async def test_cert_kinds_and_dialback_switch(start_peer: PeerFactory, ca: trustme.CA) -> None:
    """cert="good" is the CA's for the domain, "wrong-name" the CA's for
    another name, "untrusted" self-signed for the domain; dialback=False
    takes the dialback feature away. Three peers of a kind run at once."""
    ca_name = x509.load_pem_x509_certificate(ca.cert_pem.bytes()).subject
    good, wrong, untrusted = await asyncio.gather(
        start_peer(cert="good", dialback=False, domain="good.test"),
        start_peer(cert="wrong-name", domain="wrong.test"),
        start_peer(cert="untrusted", domain="untrusted.test", tls="optional"))
    cert, features = await s2s_probe(good, ca)
    assert cert.issuer == ca_name and "good.test" in dns_names(cert)
    assert b"urn:xmpp:features:dialback" not in features
    assert b"<mechanism>EXTERNAL</mechanism>" in features
    cert, features = await s2s_probe(wrong, ca)
    assert cert.issuer == ca_name and dns_names(cert) == ["other-wrong.test",
                                                          "*.other-wrong.test"]
    assert b"urn:xmpp:features:dialback" in features
    cert, features = await s2s_probe(untrusted, ca)
    assert cert.issuer == cert.subject != ca_name and "untrusted.test" in dns_names(cert)
    assert b"urn:xmpp:features:dialback" in features
    assert len({p.s2s_port for p in (good, wrong, untrusted)}) == 3


@pytest.mark.parametrize("kind", KINDS)
async def test_kill_then_start_again(start_peer: PeerFactory, listener: Listener) -> None:
    """kill() drops the peer at once (its clients see the stream end); start()
    brings it back on the same ports with its accounts and routes."""
    peer = await start_peer(users=USERS, routes={"vinespy.test": ("127.0.0.1", listener.port)})
    juliet = await peer.login("juliet")
    gone = asyncio.ensure_future(wait_event(juliet, "disconnected"))
    await peer.kill()
    await gone
    await peer.start()
    juliet = await peer.login("juliet")
    juliet.send_message(mto="someone@vinespy.test", mbody="again", mtype="chat")
    assert (await listener.header())["to"] == "vinespy.test"
    await peer.restart()
    await peer.login("nurse")
