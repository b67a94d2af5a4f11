"""TLS for incoming s2s streams that asks for the peer's certificate and decides later.

The receiving server of an s2s stream (RFC 6120 §13.7.1.2, XEP-0178) asks the
initiating server for its certificate, finishes the handshake whatever comes
(trusted, self-signed, expired, another CA's, another domain's, none at all),
and then chooses: SASL EXTERNAL when the certificate is trusted and names the
peer's domain, dialback (XEP-0220) otherwise. Python's ssl module cannot:
with CERT_OPTIONAL a presented but untrusted certificate aborts the handshake,
and it has no verify callback. Prosody (LuaSec's verifyext "lsec_continue")
and ejabberd (fast_tls) continue and decide later; so does this module, with
pyOpenSSL, whose verify callback records each error and says "go on".

asyncio's and uvloop's TLS layers want an :class:`ssl.SSLContext`: they call
its ``wrap_bio(incoming, outgoing, server_side=True, ...)`` and drive what it
returns like an :class:`ssl.SSLObject`. :class:`PeerCertContext` is such a
context; its objects (:class:`PeerSSLObject`) run a pyOpenSSL connection on
memory BIOs of its own: each call moves the bytes waiting in ``incoming`` into
OpenSSL, makes the call, moves what OpenSSL wrote into ``outgoing``, and
raises the ssl module's exceptions for pyOpenSSL's, as those loops expect.

    ctx = peercert.server_context(crt, key, cafile)   # system CAs + cafile
    await stream.start_tls(ctx, timeout)
    cert = peercert.peer(stream.transport)
    if cert.valid_for(peer_domain): offer SASL EXTERNAL, else dialback
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL

from ..jid import JIDError, prep_domain
from ..tls import _matches, _names, _reference

T = TypeVar("T")

# RFC 7590 / XEP-0368: a server offers "xmpp-server".
ALPN = b"xmpp-server"
# Python 3.11's default cipher string (PY_SSL_DEFAULT_CIPHER_STRING), so this
# context negotiates what vinespy.tls's stdlib contexts do.
CIPHERS = (b"@SECLEVEL=2:ECDH+AESGCM:ECDH+CHACHA20:ECDH+AES:DHE+AES:"
           b"!aNULL:!eNULL:!aDSS:!SHA1:!AESCCM")
XMPP_ADDR = x509.ObjectIdentifier("1.3.6.1.5.5.7.8.5")   # id-on-xmppAddr, RFC 6120 §13.7.1.4
SRV_NAME = x509.ObjectIdentifier("1.3.6.1.5.5.7.8.7")    # id-on-dnsSRV, RFC 4985 (SRV-ID)
# X509_V_ERR_INVALID_PURPOSE: the certificate lacks the clientAuth extended
# key usage. Not an error here: RFC 6120 asks for no key usage, an s2s peer
# presents its server certificate, and public CAs have stopped putting
# clientAuth in server certificates.
INVALID_PURPOSE = 26
RECORD = 16384          # the most plaintext one TLS record holds (RFC 8446 §5.1)
_DRAIN = 262144         # bytes taken from OpenSSL's write BIO at a time


@dataclass(frozen=True)
class PeerCert:
    """What the peer presented, and whether it verified.

    ``names`` are its DNS-IDs (DNS and IP subjectAltNames; the CN when it has
    no subjectAltName, RFC 6125 §6.4.4), ``xmpp_addrs`` its id-on-xmppAddr
    values, ``srv_names`` its SRV-IDs ("_xmpp-server.example.org").
    ``error`` says why it is not trusted (None when it is).
    """

    presented: bool
    trusted: bool
    error: str | None
    names: tuple[str, ...] = ()
    xmpp_addrs: tuple[str, ...] = ()
    srv_names: tuple[str, ...] = ()

    def valid_for(self, domain: str) -> bool:
        """Trusted, and one of its identities is ``domain`` (RFC 6120 §13.7.1.2.1,
        RFC 6125 §6: a DNS-ID, wildcards allowed; an xmppAddr or an
        _xmpp-server SRV-ID, exact)."""
        if not self.trusted:
            return False
        if any(_matches(n, domain) for n in self.names):
            return True
        ref = _reference(domain)
        return (any(_reference(a) == ref for a in self.xmpp_addrs)
                or any(s.lower().rstrip(".") == f"_xmpp-server.{ref}" for s in self.srv_names))


def peer(transport: asyncio.BaseTransport) -> PeerCert:
    """The peer certificate of a stream that did its handshake with a
    :class:`PeerCertContext` (``TypeError`` for any other transport)."""
    obj = transport.get_extra_info("ssl_object")
    if not isinstance(obj, PeerSSLObject):
        raise TypeError(f"the transport's TLS is not a peercert context's ({obj!r})")
    return obj.peer


def server_context(cert: Path, key: Path, cafile: Path | None = None) -> PeerCertContext:
    """A TLS 1.2+ server context holding ``cert`` (PEM, with intermediates)
    and ``key`` that asks the client for a certificate and verifies it
    against the system's CAs plus ``cafile`` without ever failing the
    handshake for it. Raises ``OSError`` or ``ssl.SSLError`` when a file
    does not load."""
    for path in (cert, key, *((cafile,) if cafile else ())):
        path.open("rb").close()          # a plain OSError naming the file
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    try:
        ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
        ctx.set_options(SSL.OP_NO_COMPRESSION                 # CRIME
                        | getattr(SSL, "OP_NO_RENEGOTIATION", 0)
                        | SSL.OP_CIPHER_SERVER_PREFERENCE
                        # No resumption: a resumed session skips verification,
                        # so the callback would record nothing about it.
                        | SSL.OP_NO_TICKET)
        ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        ctx.set_session_id(b"vinespy-s2s")
        ctx.set_cipher_list(CIPHERS)
        ctx.use_certificate_chain_file(str(cert))
        ctx.use_privatekey_file(str(key))
        ctx.check_privatekey()
        _load_cas(ctx, cafile)
        # VERIFY_PEER without FAIL_IF_NO_PEER_CERT: ask, accept none.
        ctx.set_verify(SSL.VERIFY_PEER, _verify)
        ctx.set_alpn_select_callback(_alpn)
    except SSL.Error as exc:
        raise _ssl_error(exc) from None
    return PeerCertContext(ctx)


def sni_context(pairs: Mapping[str, tuple[Path, Path]], default_domain: str,
                cafile: Path | None = None) -> PeerCertContext:
    """A :func:`server_context` for XEP-0368 direct TLS that serves the
    certificate of the SNI name (``pairs``: prepared domain -> (cert, key));
    an unknown name, or none, gets ``default_domain``'s."""
    by_name = {d: server_context(c, k, cafile).ossl for d, (c, k) in pairs.items()}
    base = server_context(*pairs[default_domain], cafile)

    def pick(conn: SSL.Connection) -> None:
        name = conn.get_servername()
        try:
            ctx = by_name.get(prep_domain(name.decode())) if name else None
        except (JIDError, UnicodeError):
            ctx = None
        if ctx is not None:
            conn.set_context(ctx)

    base.ossl.set_tlsext_servername_callback(pick)
    return base


def _load_cas(ctx: SSL.Context, cafile: Path | None) -> None:
    # pyOpenSSL runs on the OpenSSL inside the cryptography wheel, whose
    # default paths are not the system's: take the ones the standard ssl
    # module (the system OpenSSL, honouring SSL_CERT_FILE/SSL_CERT_DIR) uses.
    paths = ssl.get_default_verify_paths()
    if paths.cafile:
        ctx.load_verify_locations(paths.cafile)
    if paths.capath:
        ctx.load_verify_locations(None, paths.capath)
    if cafile:
        ctx.load_verify_locations(str(cafile))


class _Verification:
    """What the verify callback saw on one connection."""

    __slots__ = ("leaf_seen", "errors")

    def __init__(self) -> None:
        self.leaf_seen = False
        self.errors: list[tuple[int, int]] = []     # (depth, X509_V_ERR_*)


def _verify(conn: SSL.Connection, _cert: Any, errnum: int, depth: int, ok: int) -> bool:
    record: _Verification = conn.get_app_data()
    if depth == 0:
        record.leaf_seen = True
    if not ok and errnum != INVALID_PURPOSE:
        record.errors.append((depth, errnum))
    return True                          # go on: decide after the handshake


def _alpn(_conn: SSL.Connection, offers: list[bytes]) -> bytes:
    return ALPN if ALPN in offers else SSL.NO_OVERLAPPING_PROTOCOLS  # type: ignore[return-value]


def _verify_text(errnum: int) -> str:
    try:
        from OpenSSL._util import ffi, lib   # X509_verify_cert_error_string
        return str(ffi.string(lib.X509_verify_cert_error_string(errnum)).decode())
    except (ImportError, AttributeError):     # pragma: no cover - pyOpenSSL internals moved
        return f"X.509 verification error {errnum}"


def _ssl_error(exc: SSL.Error) -> ssl.SSLError:
    """An ``ssl.SSLError`` for a pyOpenSSL one (whose args are a list of
    (library, function, reason) tuples)."""
    parts = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
    reason = "; ".join(str(p[-1]) for p in parts if p) or str(exc) or type(exc).__name__
    err = ssl.SSLError(1, f"[SSL] {reason}")
    err.reason = reason
    return err


class PeerCertContext(ssl.SSLContext):
    """An ``ssl.SSLContext`` (for asyncio's and uvloop's type checks) whose
    :meth:`wrap_bio` makes :class:`PeerSSLObject` s on ``ossl``, a
    pyOpenSSL context. Only ``wrap_bio`` with ``server_side=True`` works:
    the ssl.SSLContext settings it inherits are not used."""

    ossl: SSL.Context

    def __new__(cls, ossl: SSL.Context) -> PeerCertContext:
        return super().__new__(cls, ssl.PROTOCOL_TLS_SERVER)

    def __init__(self, ossl: SSL.Context) -> None:
        self.ossl = ossl

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO,
                 server_side: bool = False, server_hostname: str | bytes | None = None,
                 session: ssl.SSLSession | None = None) -> PeerSSLObject:
        if not server_side:
            raise ValueError("a peercert context is for the server side only")
        return PeerSSLObject(self, incoming, outgoing)

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        raise NotImplementedError("a peercert context wraps memory BIOs only (loop.start_tls)")


class PeerSSLObject(ssl.SSLObject):
    """One server-side TLS connection, used by asyncio/uvloop as an
    ``ssl.SSLObject`` (``ssl.SSLObject.__init__`` is not called: no
    ``_ssl`` object stands behind it)."""

    def __init__(self, context: PeerCertContext, incoming: ssl.MemoryBIO,
                 outgoing: ssl.MemoryBIO) -> None:
        self._context = context
        self._incoming, self._outgoing = incoming, outgoing
        self._verification = _Verification()
        conn = SSL.Connection(context.ossl, None)
        conn.set_app_data(self._verification)
        conn.set_accept_state()
        self._conn = conn
        # Ciphertext given to OpenSSL since it last asked for more: what it
        # may still turn into plaintext without new input. uvloop reads only
        # while incoming.pending or pending() says there is something.
        self._unread = 0
        self._eof_given = False
        self._handshaken = False
        self._peer: PeerCert | None = None

    # -- moving bytes, mapping errors --------------------------------------
    def _run(self, call: Callable[..., T], *args: Any) -> T:
        data = self._incoming.read()
        if data:
            self._conn.bio_write(data)
            self._unread += len(data)
        if self._incoming.eof and not self._eof_given:
            self._conn.bio_shutdown()
            self._eof_given = True
        try:
            return call(*args)
        except SSL.WantReadError:
            self._unread = 0
            raise ssl.SSLWantReadError("The operation did not complete (read)") from None
        except SSL.WantWriteError:
            raise ssl.SSLWantWriteError("The operation did not complete (write)") from None
        except SSL.ZeroReturnError:
            raise ssl.SSLZeroReturnError("TLS/SSL connection has been closed (EOF)") from None
        except SSL.SysCallError:
            # On memory BIOs only the end of input gets here. Not
            # SSLSyscallError: both loops take that one for "try again".
            raise ssl.SSLEOFError("EOF occurred in violation of protocol") from None
        except SSL.Error as exc:
            raise _ssl_error(exc) from None
        finally:
            self._drain()

    def _drain(self) -> None:
        conn, out = self._conn, self._outgoing
        while True:
            try:
                data = conn.bio_read(_DRAIN)
            except SSL.WantReadError:
                return
            out.write(data)
            if len(data) < _DRAIN:
                return

    # -- what the loops call -----------------------------------------------
    def do_handshake(self) -> None:
        self._run(self._conn.do_handshake)
        self._handshaken = True

    def read(self, len: int = 1024, buffer: Any = None) -> Any:
        try:
            if buffer is None:
                # SSL_read returns at most one record: a bigger buffer is waste.
                return self._run(self._conn.recv, min(len, RECORD))
            return self._run(self._conn.recv_into, buffer, len)
        except ssl.SSLZeroReturnError:   # close_notify: like ssl.SSLObject, "nothing more"
            return b"" if buffer is None else 0

    def write(self, data: Any) -> int:
        return self._run(self._conn.send, data)

    def pending(self) -> int:
        return self._conn.pending() + self._unread

    def unwrap(self) -> None:
        if not self._run(self._conn.shutdown):   # close_notify sent, the peer's not in
            raise ssl.SSLWantReadError("The operation did not complete (read)")

    # -- what the application asks -----------------------------------------
    @property
    def peer(self) -> PeerCert:
        """The peer's certificate and its verification (after the handshake)."""
        if self._peer is None:
            self._peer = self._make_peer()
        return self._peer

    def _make_peer(self) -> PeerCert:
        if not self._handshaken:
            raise ValueError("handshake not done yet")
        cert = self._conn.get_peer_certificate(as_cryptography=True)
        if cert is None:
            return PeerCert(False, False, "no certificate presented")
        record = self._verification
        error = None
        if not record.leaf_seen:
            error = "the certificate was not verified"    # resumed? (never offered)
        elif record.errors:
            depth, errnum = record.errors[0]
            error = f"{_verify_text(errnum)} (depth {depth})"
        return PeerCert(True, error is None, error, *identities(cert))

    def getpeercert(self, binary_form: bool = False) -> Any:
        """Like ``ssl.SSLObject.getpeercert``: the DER with ``binary_form``;
        else the decoded dict only when the certificate verified (``{}``
        when it did not), None when there is none."""
        info = self.peer
        cert = self._conn.get_peer_certificate(as_cryptography=True)
        if cert is None:
            return None
        if binary_form:
            return cert.public_bytes(Encoding.DER)
        return decode(cert) if info.trusted else {}

    @property
    def context(self) -> PeerCertContext:     # type: ignore[override]
        return self._context

    @property
    def server_side(self) -> bool:
        return True

    @property
    def server_hostname(self) -> None:
        return None

    @property
    def session(self) -> None:                  # type: ignore[override]
        return None

    @property
    def session_reused(self) -> bool:
        return False

    def selected_alpn_protocol(self) -> str | None:
        proto = self._conn.get_alpn_proto_negotiated()
        return proto.decode("ascii") if proto else None

    def selected_npn_protocol(self) -> None:
        return None

    def cipher(self) -> tuple[str, str, int] | None:
        name = self._conn.get_cipher_name()
        if name is None:
            return None
        return name, self._conn.get_cipher_version() or "", self._conn.get_cipher_bits() or 0

    def shared_ciphers(self) -> None:
        return None

    def compression(self) -> None:
        return None                             # OP_NO_COMPRESSION

    def version(self) -> str | None:
        return self._conn.get_protocol_version_name() if self._handshaken else None

    def get_channel_binding(self, cb_type: str = "tls-unique") -> bytes | None:
        """RFC 5929 tls-unique: the first Finished message, the client's here
        (sessions are never resumed)."""
        if cb_type != "tls-unique":
            raise ValueError(f"{cb_type} channel binding type not implemented")
        return self._conn.get_peer_finished() if self._handshaken else None

    def verify_client_post_handshake(self) -> None:
        raise NotImplementedError("no post-handshake authentication")


# -- certificates -----------------------------------------------------------

def identities(cert: x509.Certificate) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(DNS-IDs, id-on-xmppAddr values, SRV-IDs) of ``cert``."""
    xmpp: list[str] = []
    srv: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        san = None
    for other in san.get_values_for_type(x509.OtherName) if san else ():
        text = _der_text(other.value)
        if text is not None and other.type_id == XMPP_ADDR:
            xmpp.append(text)
        elif text is not None and other.type_id == SRV_NAME:
            srv.append(text)
    try:
        names = _names(cert)
    except ValueError:
        names = []
    return tuple(names), tuple(xmpp), tuple(srv)


def _der_text(der: bytes) -> str | None:
    """The text of a DER UTF8String or IA5String (xmppAddr, SRVName), also
    when still wrapped in otherName's [0] EXPLICIT tag."""
    tag, body = _der_tlv(der)
    if tag == 0xA0 and body is not None:
        tag, body = _der_tlv(body)
    if body is None or tag not in (0x0C, 0x16):    # UTF8String, IA5String
        return None
    try:
        return body.decode("utf-8" if tag == 0x0C else "ascii")
    except UnicodeDecodeError:
        return None


def _der_tlv(der: bytes) -> tuple[int, bytes | None]:
    if len(der) < 2:
        return -1, None
    size, start = der[1], 2
    if size & 0x80:
        start = 2 + (size & 0x7F)
        size = int.from_bytes(der[2:start], "big")
    body = der[start:start + size]
    return der[0], body if len(body) == size else None


_MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
_SAN_KINDS = ((x509.DNSName, "DNS"), (x509.IPAddress, "IP Address"),
              (x509.UniformResourceIdentifier, "URI"), (x509.RFC822Name, "email"))


def decode(cert: x509.Certificate) -> dict[str, Any]:
    """``cert`` as ``ssl.SSLObject.getpeercert()`` spells it: subject,
    issuer, version, serialNumber, notBefore, notAfter, subjectAltName
    (otherNames as ``("othername", "<unsupported>")``, like the ssl module);
    no OCSP, caIssuers or crlDistributionPoints."""
    def name(n: x509.Name) -> tuple[tuple[tuple[str, str], ...], ...]:
        return tuple(tuple((getattr(a.oid, "_name", a.oid.dotted_string), str(a.value))
                           for a in rdn) for rdn in n.rdns)

    def when(t: Any) -> str:
        return f"{_MONTHS[t.month - 1]} {t.day:2d} {t:%H:%M:%S} {t.year} GMT"

    serial = f"{cert.serial_number:X}"
    out: dict[str, Any] = {
        "subject": name(cert.subject), "issuer": name(cert.issuer),
        "version": cert.version.value + 1,
        "serialNumber": serial.zfill(len(serial) + len(serial) % 2),   # whole bytes, as ssl
        "notBefore": when(cert.not_valid_before_utc), "notAfter": when(cert.not_valid_after_utc),
    }
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return out
    alt: list[tuple[str, str]] = []
    for general in san:
        kind = next((label for cls, label in _SAN_KINDS if isinstance(general, cls)), None)
        if kind is None:
            alt.append(("othername" if isinstance(general, x509.OtherName) else "DirName",
                        "<unsupported>"))
        else:
            alt.append((kind, str(general.value)))
    out["subjectAltName"] = tuple(alt)
    return out
