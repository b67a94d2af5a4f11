"""STARTTLS with the certificates `vinespy cert` makes (ECDSA P-256 and RSA-2048)
and TLS 1.3 session resumption, against a real server with real clients."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import ssl
from pathlib import Path
from typing import AsyncIterator

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.conftest import DOMAIN, PASSWORD, TIMEOUT, Running, serving_config, write_config
from vinespy import ns
from vinespy.tls import cert_paths, make_self_signed

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, ca: trustme.CA, key_type: str) -> AsyncIterator[Running]:
    """A default server whose certificate is a self-signed one of ``key_type``."""
    path = write_config(tmp_path, ca)
    make_self_signed(DOMAIN, tmp_path / "conf" / "certs", overwrite=True, key_type=key_type)
    async with serving_config(path, ca) as running:
        yield running


def trusting(srv: Running) -> ssl.SSLContext:
    """A client context that trusts (only) the server's self-signed certificate."""
    crt, _ = cert_paths(srv.server.config.certs, DOMAIN)
    return ssl.create_default_context(cafile=str(crt))


@pytest.mark.parametrize(("key_type", "key_class"), [
    ("ecdsa", ec.EllipticCurvePublicKey),
    ("rsa", rsa.RSAPublicKey),
])
async def test_slixmpp_logs_in_over_starttls(tmp_path: Path, ca: trustme.CA, key_type: str,
                                             key_class: type) -> None:
    """A slixmpp client verifies the certificate, logs in with SCRAM-SHA-1 over
    STARTTLS and pings, with either key type."""
    async with serving(tmp_path, ca, key_type) as srv:
        jid = await srv.user("alice")
        c = srv.client(f"{jid}/desk", mechanism="SCRAM-SHA-1")
        c.ssl_context = trusting(srv)
        started = asyncio.get_running_loop().create_future()
        c.add_event_handler("session_start", lambda _: started.done() or started.set_result(1))
        c.add_event_handler("disconnected", lambda _: started.done() or started.set_exception(
            AssertionError("disconnected before the session started")))
        c.connect("127.0.0.1", srv.port)
        await asyncio.wait_for(started, TIMEOUT)
        tls = c.transport.get_extra_info("ssl_object")
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        peer = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
        assert isinstance(peer.public_key(), key_class)
        assert await c.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT) is not None


def _until(sock: socket.socket | ssl.SSLSocket, token: bytes) -> bytes:
    buf = b""
    while token not in buf:
        data = sock.recv(65536)
        if not data:
            raise EOFError(f"closed before {token!r}: {buf[-300:]!r}")
        buf += data
    return buf


def starttls_login(port: int, ctx: ssl.SSLContext,
                   session: ssl.SSLSession | None) -> tuple[bool, ssl.SSLSession | None, str]:
    """Blocking (asyncio's start_tls cannot offer a session): STARTTLS offering
    ``session``, PLAIN as alice. (resumed?, the session to offer next, TLS version)."""
    header = (f"<stream:stream xmlns='{ns.CLIENT}' xmlns:stream='{ns.STREAM}' "
              f"to='{DOMAIN}' version='1.0'>").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(header)
        _until(sock, b"</stream:features>")
        sock.sendall(f"<starttls xmlns='{ns.TLS}'/>".encode())
        assert b"<proceed" in _until(sock, b"/>")
        with ctx.wrap_socket(sock, server_hostname=DOMAIN, session=session) as tls:
            tls.sendall(header)
            _until(tls, b"</stream:features>")  # the tickets arrive before these
            blob = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
            tls.sendall(f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>{blob}</auth>".encode())
            assert b"<success" in _until(tls, b"success")
            return tls.session_reused, tls.session, tls.version() or ""


async def test_tls13_session_resumption_over_starttls(tmp_path: Path, ca: trustme.CA) -> None:
    """A client that kept the ticket from its last connection resumes the TLS
    session (no certificate signature by the server) and logs in; a client
    offering a session the server cannot decrypt gets a full handshake."""
    # One client context for both servers (Python offers a session only on the
    # context that made it); their two self-signed certificates share a subject
    # name, which one trust store cannot tell apart: the slixmpp test verifies.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    async with serving(tmp_path, ca, "ecdsa") as srv:
        await srv.user("alice")
        resumed, session, version = await asyncio.to_thread(starttls_login, srv.port, ctx, None)
        assert version == "TLSv1.3" and not resumed
        assert session is not None and session.has_ticket
        for _ in range(2):      # each resumption hands out a fresh ticket
            resumed, session, _ = await asyncio.to_thread(starttls_login, srv.port, ctx, session)
            assert resumed
    async with serving(tmp_path / "b", ca, "ecdsa") as other:   # other ticket keys
        await other.user("alice")
        resumed, _, _ = await asyncio.to_thread(starttls_login, other.port, ctx, session)
        assert not resumed
