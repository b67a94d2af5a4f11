"""vinespy.s2s.peercert over real loopback sockets, on uvloop and on the
standard loop: the handshake finishes whatever client certificate comes, and
the server knows afterwards whether it verified and whom it names.

The server side does what an incoming s2s stream does after <proceed/>
(``loop.start_tls(..., server_side=True)``, here through
``StreamWriter.start_tls``); the clients are the standard ssl module's.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Coroutine

import pytest
import trustme
import uvloop
from contextlib import asynccontextmanager
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vinespy import tls
from vinespy.s2s import peercert

SERVER, PEER = "server.test", "peer.test"
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}
VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
MB = 1 << 20
PROCEED = b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """Run a test's coroutine to its end on a new loop of the parametrized kind."""
    async def bounded(coro: Coroutine[Any, Any, Any]) -> Any:
        async with asyncio.timeout(30):
            return await coro

    def go(coro: Coroutine[Any, Any, Any]) -> Any:
        with asyncio.Runner(loop_factory=LOOPS[request.param]) as runner:
            return runner.run(bounded(coro))
    return go


def write_pair(leaf: trustme.LeafCert, base: Path) -> tuple[Path, Path]:
    crt, key = base.with_suffix(".crt"), base.with_suffix(".key")
    leaf.private_key_pem.write_to_path(str(key))
    crt.write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    return crt, key


@pytest.fixture
def files(tmp_path: Path, ca: trustme.CA) -> dict[str, Path]:
    crt, key = write_pair(ca.issue_cert(SERVER), tmp_path / "server")
    ca_pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    return {"crt": crt, "key": key, "ca": ca_pem}


def client_context(ca: trustme.CA, pair: tuple[Path, Path] | None,
                   version: str = "TLSv1.3") -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    ctx.minimum_version = ctx.maximum_version = VERSIONS[version]
    ctx.set_alpn_protocols(["xmpp-server"])
    if pair:
        ctx.load_cert_chain(*pair)
    return ctx


def custom_leaf(ca: trustme.CA, base: Path, *, dns: tuple[str, ...] = (),
                xmpp: tuple[str, ...] = (), srv: tuple[str, ...] = (),
                eku: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.SERVER_AUTH,),
                ) -> tuple[Path, Path]:
    """A certificate from ``ca`` with the XMPP identities trustme cannot make."""
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    key = ec.generate_private_key(ec.SECP256R1())

    def other(oid: x509.ObjectIdentifier, tag: int, text: str) -> x509.OtherName:
        body = text.encode()
        return x509.OtherName(oid, bytes([tag, len(body)]) + body)

    san: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    san += [other(peercert.XMPP_ADDR, 0x0C, a) for a in xmpp]
    san += [other(peercert.SRV_NAME, 0x16, s) for s in srv]
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "peer")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(san), critical=True)
            .add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
            .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
    crt, key_path = base.with_suffix(".crt"), base.with_suffix(".key")
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return crt, key_path


@asynccontextmanager
async def serving(ctx: ssl.SSLContext) -> AsyncIterator[tuple[int, asyncio.Queue[Any]]]:
    """A plain TCP server that says "proceed" and starts TLS, as an incoming
    s2s stream does (RFC 6120 §5.4.2.3); the queue gets (reader, writer)
    per connection, or the exception start_tls raised."""
    accepted: asyncio.Queue[Any] = asyncio.Queue()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(PROCEED)
        try:
            await writer.start_tls(ctx, ssl_handshake_timeout=10)
        except Exception as exc:
            writer.close()
            await accepted.put(exc)
        else:
            await accepted.put((reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1], accepted


async def connect(port: int, cctx: ssl.SSLContext, name: str = SERVER,
                  ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """STARTTLS's client side: wait for <proceed/>, then the handshake (sent
    at once, the ClientHello could reach the server's plain protocol)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await reader.readexactly(len(PROCEED)) == PROCEED
    await writer.start_tls(cctx, server_hostname=name)
    return reader, writer


async def close_both(writer: asyncio.StreamWriter, cwriter: asyncio.StreamWriter,
                     reader: asyncio.StreamReader) -> None:
    """The client closes (close_notify), the server reads the end and closes too."""
    cwriter.close()
    assert await reader.read() == b""
    writer.close()
    await writer.wait_closed()
    await cwriter.wait_closed()


# -- what the server learns ----------------------------------------------------

@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_trusted_certificate_and_data_both_ways(run: Any, files: dict[str, Path],
                                                ca: trustme.CA, tmp_path: Path,
                                                version: str) -> None:
    pair = write_pair(ca.issue_cert(PEER), tmp_path / "peer")
    ctx = peercert.server_context(files["crt"], files["key"], files["ca"])
    hello = bytes(range(256)) * 20                      # 5 KB, sent with the handshake's end

    async def main() -> None:
        async with serving(ctx) as (port, accepted):
            creader, cwriter = await connect(port, client_context(ca, pair, version))
            cwriter.write(hello)
            reader, writer = await accepted.get()
            info = peercert.peer(writer.transport)
            assert info == peercert.PeerCert(True, True, None, (PEER,))
            assert info.valid_for(PEER) and info.valid_for("Peer.Test")
            assert not info.valid_for("other.test") and not info.valid_for(SERVER)
            obj = writer.get_extra_info("ssl_object")
            assert obj.version() == version
            assert obj.selected_alpn_protocol() == "xmpp-server"
            assert cwriter.get_extra_info("ssl_object").selected_alpn_protocol() == "xmpp-server"
            assert obj.cipher() == cwriter.get_extra_info("cipher")
            assert obj.compression() is None
            assert writer.get_extra_info("peercert")["subjectAltName"] == (("DNS", PEER),)
            der = ssl.PEM_cert_to_DER_cert(pair[0].read_text())
            assert obj.getpeercert(binary_form=True) == der
            if version == "TLSv1.2":      # RFC 5929: both ends see the same first Finished
                assert obj.get_channel_binding() == \
                    cwriter.get_extra_info("ssl_object").get_channel_binding()
            assert await reader.readexactly(len(hello)) == hello
            big = bytes(range(251)) * (MB // 251 + 1)
            writer.write(big)
            assert await creader.readexactly(len(big)) == big
            cwriter.write(big[::-1])
            assert await reader.readexactly(len(big)) == big[::-1]
            await close_both(writer, cwriter, reader)

    run(main())


def self_signed(ca: trustme.CA, tmp: Path) -> tuple[Path, Path]:
    return tls.make_self_signed(PEER, tmp / "self")


def other_ca(ca: trustme.CA, tmp: Path) -> tuple[Path, Path]:
    return write_pair(trustme.CA().issue_cert(PEER), tmp / "other")


def expired(ca: trustme.CA, tmp: Path) -> tuple[Path, Path]:
    return write_pair(ca.issue_cert(PEER, not_before=dt.datetime(2020, 1, 1),
                                    not_after=dt.datetime(2021, 1, 1)), tmp / "expired")


@pytest.mark.parametrize("make, error", [
    (self_signed, "self"),                  # "self-signed certificate" (OpenSSL 3)
    (other_ca, "unable to get local issuer certificate"),
    (expired, "certificate has expired"),
])
def test_untrusted_certificate_still_connects(run: Any, files: dict[str, Path],
                                              ca: trustme.CA, tmp_path: Path,
                                              make: Any, error: str) -> None:
    pair = make(ca, tmp_path)
    ctx = peercert.server_context(files["crt"], files["key"], files["ca"])

    async def main() -> None:
        async with serving(ctx) as (port, accepted):
            creader, cwriter = await connect(port, client_context(ca, pair))
            reader, writer = await accepted.get()
            info = peercert.peer(writer.transport)
            assert info.presented and not info.trusted
            assert info.error is not None and error in info.error and "depth 0" in info.error
            assert PEER in info.names and not info.valid_for(PEER)
            assert writer.get_extra_info("peercert") == {}      # as ssl does for unverified
            cwriter.write(b"<stream:stream>")
            assert await reader.readexactly(15) == b"<stream:stream>"
            writer.write(b"<stream:features/>")
            assert await creader.readexactly(18) == b"<stream:features/>"
            await close_both(writer, cwriter, reader)

    run(main())


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_no_certificate(run: Any, files: dict[str, Path], ca: trustme.CA, version: str) -> None:
    ctx = peercert.server_context(files["crt"], files["key"], files["ca"])

    async def main() -> None:
        async with serving(ctx) as (port, accepted):
            creader, cwriter = await connect(port, client_context(ca, None, version))
            reader, writer = await accepted.get()
            info = peercert.peer(writer.transport)
            assert info == peercert.PeerCert(False, False, "no certificate presented")
            assert not info.valid_for(PEER)
            assert writer.get_extra_info("peercert") is None
            await close_both(writer, cwriter, reader)

    run(main())


def test_xmpp_addr_and_srv_id_without_client_auth_usage(run: Any, files: dict[str, Path],
                                                        ca: trustme.CA, tmp_path: Path) -> None:
    """RFC 6120 §13.7.1.4 id-on-xmppAddr and RFC 4985 SRV-IDs identify the peer;
    a serverAuth-only certificate (no clientAuth usage) is still trusted."""
    pair = custom_leaf(ca, tmp_path / "xmpp", xmpp=(PEER,), srv=("_xmpp-server.srv.test",
                                                                 "_xmpp-client.c2s.test"))
    ctx = peercert.server_context(files["crt"], files["key"], files["ca"])

    async def main() -> None:
        async with serving(ctx) as (port, accepted):
            creader, cwriter = await connect(port, client_context(ca, pair))
            reader, writer = await accepted.get()
            info = peercert.peer(writer.transport)
            assert info.trusted, info.error
            assert info.names == () and info.xmpp_addrs == (PEER,)
            assert info.srv_names == ("_xmpp-server.srv.test", "_xmpp-client.c2s.test")
            assert info.valid_for(PEER) and info.valid_for("srv.test")
            assert not info.valid_for("c2s.test") and not info.valid_for("other.test")
            assert writer.get_extra_info("peercert")["subjectAltName"] == \
                (("othername", "<unsupported>"),) * 3
            await close_both(writer, cwriter, reader)

    run(main())


# -- closing, failing ----------------------------------------------------------

def test_server_closes_first(run: Any, files: dict[str, Path], ca: trustme.CA,
                             tmp_path: Path) -> None:
    """The server's close sends close_notify and waits for the peer's (unwrap)."""
    pair = write_pair(ca.issue_cert(PEER), tmp_path / "peer")
    ctx = peercert.server_context(files["crt"], files["key"], files["ca"])

    async def main() -> None:
        async with serving(ctx) as (port, accepted):
            creader, cwriter = await connect(port, client_context(ca, pair))
            reader, writer = await accepted.get()
            writer.write(b"</stream:stream>")
            writer.close()
            assert await creader.read() == b"</stream:stream>"
            cwriter.close()
            await writer.wait_closed()
            await cwriter.wait_closed()
            assert writer.transport.is_closing()

    run(main())


@pytest.mark.parametrize("side", ["client", "server"])
def test_abrupt_close(run: Any, files: dict[str, Path], ca: trustme.CA, tmp_path: Path,
                      side: str) -> None:
    pair = write_pair(ca.issue_cert(PEER), tmp_path / "peer")
    ctx = peercert.server_context(files["crt"], files["key"], files["ca"])

    async def main() -> None:
        async with serving(ctx) as (port, accepted):
            creader, cwriter = await connect(port, client_context(ca, pair))
            reader, writer = await accepted.get()
            gone, survivor = (cwriter, reader) if side == "client" else (writer, creader)
            gone.transport.abort()
            try:
                assert await survivor.read() == b""
            except (ConnectionError, ssl.SSLError):
                pass
            for w in (writer, cwriter):
                w.close()
            for w in (writer, cwriter):
                try:
                    await w.wait_closed()
                except (ConnectionError, ssl.SSLError):
                    pass

    run(main())


def test_non_tls_client_fails_cleanly(run: Any, files: dict[str, Path]) -> None:
    ctx = peercert.server_context(files["crt"], files["key"], files["ca"])

    async def main() -> None:
        async with serving(ctx) as (port, accepted):
            creader, cwriter = await asyncio.open_connection("127.0.0.1", port)
            assert await creader.readexactly(len(PROCEED)) == PROCEED
            cwriter.write(b"<stream:stream xmlns='jabber:server' to='server.test'>" * 20)
            exc = await accepted.get()
            assert isinstance(exc, ssl.SSLError), exc
            await creader.read()                         # an alert at most, then the end
            cwriter.close()
            await cwriter.wait_closed()
        await asyncio.sleep(0)                           # let finished tasks be reaped
        left = asyncio.all_tasks() - {asyncio.current_task()}
        assert not [t for t in left if not t.done()]

    run(main())


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_no_session_resumption(run: Any, files: dict[str, Path], ca: trustme.CA,
                               tmp_path: Path, version: str) -> None:
    """A resumed session skips certificate verification, so none is offered:
    every connection's certificate is verified afresh."""
    pair = write_pair(ca.issue_cert(PEER), tmp_path / "peer")
    ctx = peercert.server_context(files["crt"], files["key"], files["ca"])
    cctx = client_context(ca, pair, version)

    def dial(port: int, session: ssl.SSLSession | None) -> tuple[bool, ssl.SSLSession | None]:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            assert raw.recv(len(PROCEED), socket.MSG_WAITALL) == PROCEED
            with cctx.wrap_socket(raw, server_hostname=SERVER, session=session) as s:
                s.sendall(b"x")
                s.recv(1)                      # TLS 1.3 tickets come after the handshake
                return s.session_reused, s.session

    async def main() -> None:
        async with serving(ctx) as (port, accepted):
            session = None
            for _ in range(2):
                dialing = asyncio.create_task(asyncio.to_thread(dial, port, session))
                reader, writer = await accepted.get()
                assert peercert.peer(writer.transport).trusted
                assert await reader.readexactly(1) == b"x"
                writer.write(b"y")
                reused, session = await dialing
                assert not reused
                writer.close()

    run(main())


def test_sni_picks_the_certificate(run: Any, tmp_path: Path, ca: trustme.CA,
                                   files: dict[str, Path]) -> None:
    pairs = {d: write_pair(ca.issue_cert(d), tmp_path / d) for d in ("a.test", "b.test")}
    ctx = peercert.sni_context(pairs, "a.test", files["ca"])
    pair = write_pair(ca.issue_cert(PEER), tmp_path / "peer")

    async def main() -> None:
        async with serving(ctx) as (port, accepted):
            for name in ("b.test", "a.test"):
                cctx = client_context(ca, pair)   # checks the name: the right certificate came
                creader, cwriter = await connect(port, cctx, name)
                reader, writer = await accepted.get()
                assert peercert.peer(writer.transport).valid_for(PEER)
                await close_both(writer, cwriter, reader)

    run(main())


# -- without sockets -----------------------------------------------------------

def test_files_that_do_not_load(files: dict[str, Path], tmp_path: Path, ca: trustme.CA) -> None:
    with pytest.raises(FileNotFoundError):
        peercert.server_context(tmp_path / "none.crt", files["key"])
    other_key = write_pair(ca.issue_cert("x.test"), tmp_path / "x")[1]
    with pytest.raises(ssl.SSLError):
        peercert.server_context(files["crt"], other_key)
    with pytest.raises(ValueError, match="server side"):
        peercert.server_context(files["crt"], files["key"]).wrap_bio(
            ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=False)


def test_peer_of_another_transport_is_a_type_error() -> None:
    class Plain(asyncio.BaseTransport):
        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return default

    with pytest.raises(TypeError):
        peercert.peer(Plain())


# -- the ssl.SSLObject contract, on memory BIOs --------------------------------

def handshaken(files: dict[str, Path], ca: trustme.CA, pair: tuple[Path, Path] | None,
               ) -> tuple[ssl.SSLObject, peercert.PeerSSLObject, Callable[[], None], ssl.MemoryBIO]:
    """A stdlib client and a peercert server joined by memory BIOs, handshake
    done; returns them, a pump that moves all pending bytes both ways, and
    the server's incoming BIO."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_context(ca, pair).wrap_bio(c_in, c_out, server_hostname=SERVER)
    server = peercert.server_context(files["crt"], files["key"], files["ca"]).wrap_bio(
        s_in, s_out, server_side=True)

    def pump() -> None:
        s_in.write(c_out.read())
        c_in.write(s_out.read())

    for _ in range(10):
        done = 0
        for side in (client, server):
            try:
                side.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
        pump()
        if done == 2:
            return client, server, pump, s_in
    raise AssertionError("no handshake after 10 round trips")


def test_pending_counts_every_record_that_came(files: dict[str, Path], ca: trustme.CA) -> None:
    """uvloop reads only while ``incoming.pending or pending()``: ciphertext
    already inside OpenSSL must count, or records wait for the next packet."""
    client, server, pump, s_in = handshaken(files, ca, None)
    for i in range(3):
        client.write(bytes([65 + i]) * 10000)
    pump()
    got = b""
    while s_in.pending or server.pending():
        try:
            got += server.read(262144)
        except ssl.SSLWantReadError:
            break
    assert got == b"A" * 10000 + b"B" * 10000 + b"C" * 10000


def test_unwrap_waits_for_the_peers_close_notify_and_eof_is_not_again(
        files: dict[str, Path], ca: trustme.CA) -> None:
    client, server, pump, s_in = handshaken(files, ca, None)
    with pytest.raises(ssl.SSLWantReadError):
        server.unwrap()                  # close_notify sent, none back yet
    pump()
    assert client.read(10) == b""        # the client sees the server's
    client.unwrap()
    pump()
    assert server.unwrap() is None       # now complete

    client, server, pump, s_in = handshaken(files, ca, None)
    client.write(b"x" * 1000)
    pump()
    s_in.write_eof()                     # the link ends mid-stream, no close_notify
    got = b""
    with pytest.raises(ssl.SSLError) as caught:
        while True:
            got += server.read(65536)
    assert got == b"x" * 1000
    # not SSLSyscallError: both loops take that for "try again later"
    assert type(caught.value) is ssl.SSLEOFError
