"""TLS: one server context per served domain, SNI for direct TLS, self-signed certs.

Each domain has ``certs/DOMAIN.crt`` (PEM: the server certificate first, then
any intermediates) and ``certs/DOMAIN.key`` (PEM, unencrypted). STARTTLS
(RFC 6120 §5) picks the context of the domain in the stream header; direct TLS
(XEP-0368) has no header yet, so :func:`sni_context` switches on the SNI name.
:func:`contexts` checks every pair when the config loads, so a bad certificate
stops the start with a message naming the domain and the file, instead of
failing each client's handshake later.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import ipaddress
import logging
import os
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import ConfigError
from .fileio import atomic_write
from .jid import JIDError, prep_domain

if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger(__name__)

# XEP-0368 §4: direct TLS clients offer ALPN "xmpp-client" (servers "xmpp-server").
ALPN = ("xmpp-client", "xmpp-server")

# Key types make_self_signed writes, the default first. The RSA-2048 signature
# is most of a server's TLS handshake: with ECDSA P-256 a whole bench login
# (bench/load.py scenario_login: STARTTLS, SCRAM-SHA-1, bind, presence, ping)
# takes 5.9 M user-space instructions instead of 12.0 M (callgrind), and a
# TLS 1.3 handshake alone 290 instead of 560 µs of CPU on the bench machine.
KEY_TYPES = ("ecdsa", "rsa")

# TLS 1.3 session tickets sent after each full handshake (OpenSSL's default is
# 2). Each costs the server about 30 µs (150 k instructions) to seal and send;
# an XMPP client keeps one connection, so one ticket is all it can use.
TICKETS = 1


def cert_paths(certs_dir: Path, domain: str) -> tuple[Path, Path]:
    """``(certs_dir/DOMAIN.crt, certs_dir/DOMAIN.key)`` for a prepared ``domain``."""
    return certs_dir / f"{domain}.crt", certs_dir / f"{domain}.key"


def _harden(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION                   # CRIME
    ctx.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)  # client-initiated renegotiation DoS
    ctx.set_alpn_protocols(list(ALPN))
    ctx.num_tickets = TICKETS
    return ctx


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A TLS 1.2+ server context holding ``cert`` and ``key``.

    The baseline is ``ssl.create_default_context(Purpose.CLIENT_AUTH)`` (its
    cipher list, no SSLv3, client certificates not requested); raises
    ``OSError`` or ``ssl.SSLError`` when the pair does not load.
    """
    ctx = _harden(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))
    ctx.load_cert_chain(cert, key)
    return ctx


def contexts(config: Config) -> dict[str, ssl.SSLContext]:
    """One server context per served domain, from ``config.certs``.

    Raises :class:`ConfigError` naming the domain and the file when a
    certificate or key is missing, unreadable, not PEM, encrypted, does not
    belong to the other, or the certificate does not name the domain.
    """
    return {d: _domain_context(d, *cert_paths(config.certs, d)) for d in config.domains}


def _read(domain: str, path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{domain}: {what} {path} is missing (\"vinespy cert {domain}\" "
                          f"makes a self-signed one)") from None
    except OSError as exc:
        raise ConfigError(f"{domain}: cannot read {what} {path}: {exc.strerror or exc}") from None


def _domain_context(domain: str, crt: Path, key: Path) -> ssl.SSLContext:
    crt_pem, key_pem = _read(domain, crt, "certificate"), _read(domain, key, "private key")
    try:
        cert = x509.load_pem_x509_certificates(crt_pem)[0]   # the server's own comes first
    except ValueError:
        raise ConfigError(f"{domain}: certificate {crt} holds no PEM certificate") from None
    try:
        private = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise ConfigError(f"{domain}: private key {key} is encrypted; "
                          f"vinespy needs it unencrypted (mode 0600)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{domain}: private key {key} holds no PEM private key") from None
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if cert.public_key().public_bytes(*spki) != private.public_key().public_bytes(*spki):
        raise ConfigError(f"{domain}: private key {key} does not belong to certificate {crt} "
                          f"(is the server certificate first in the file?)")
    names = _names(cert)
    if not any(_matches(n, domain) for n in names):
        raise ConfigError(f"{domain}: certificate {crt} does not name {domain} "
                          f"(it names: {', '.join(names) or 'nothing'})")
    if os.name == "posix" and key.stat().st_mode & 0o077:
        log.warning("%s: private key %s is readable by other users; chmod 600 it", domain, key)
    try:
        return server_context(crt, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{domain}: {crt} and {key} do not load together: {exc}") from None


def _names(cert: x509.Certificate) -> list[str]:
    """The identities a certificate presents (RFC 6125 §6.4: the CN only without SANs)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return [*san.get_values_for_type(x509.DNSName),
            *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]


def _reference(domain: str) -> str:
    """``domain`` as certificates spell it: an IDNA A-label, or a bare IP address."""
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(domain.strip("[]")))
    try:
        return domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return domain


def _matches(name: str, domain: str) -> bool:
    """RFC 6125 §6.4.3: exact, or a ``*.`` wildcard covering one leftmost label."""
    name, want = name.lower().rstrip("."), _reference(domain)
    if name.startswith("*."):
        return "." in want and want.split(".", 1)[1] == name[2:]
    return name == want


def sni_context(contexts: dict[str, ssl.SSLContext], default_domain: str) -> ssl.SSLContext:
    """A server context for XEP-0368 direct TLS that serves the SNI name's certificate.

    An unknown name, or none, gets ``default_domain``'s. The contexts passed in
    are not modified.
    """
    default = contexts[default_domain]

    def pick(conn: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: ssl.SSLContext) -> None:
        try:
            conn.context = contexts.get(prep_domain(name), default) if name else default
        except JIDError:
            conn.context = default

    # OpenSSL >= 1.1.1 (which Python 3.10+ requires) calls the callback for every
    # ClientHello, with or without SNI, so this context needs no certificate itself.
    ctx = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    ctx.sni_callback = pick
    return ctx


def make_self_signed(domain: str, certs_dir: Path, *, days: int = 3650,
                     overwrite: bool = False, key_type: str = KEY_TYPES[0]) -> tuple[Path, Path]:
    """Write a self-signed certificate and key for ``domain`` into ``certs_dir``.

    ``key_type`` "ecdsa" (P-256, the default: the cheaper handshake) or "rsa"
    (2048 bits, for clients that cannot do ECDSA); signed with SHA-256, CN and
    SAN ``domain`` plus ``*.domain`` (pubsub and component subdomains).
    DOMAIN.crt gets mode 0644, DOMAIN.key (PKCS#8, unencrypted) 0600; each is
    written to a temporary file and renamed. Raises ``FileExistsError`` if
    either exists and not ``overwrite``, :class:`vinespy.jid.JIDError` if
    ``domain`` is not a domain name, and ``ValueError`` for another key type.
    """
    if key_type not in KEY_TYPES:
        raise ValueError(f"key type {key_type!r} is not one of {', '.join(KEY_TYPES)}")
    domain = prep_domain(domain)
    crt, key_path = cert_paths(certs_dir, domain)
    if not overwrite:
        for p in (crt, key_path):
            if p.exists():
                raise FileExistsError(errno.EEXIST, "refusing to overwrite "
                                      "(pass overwrite=True)", str(p))
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if key_type == "ecdsa":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ref = _reference(domain)
    try:
        alt: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ref))]
    except ValueError:
        alt = [x509.DNSName(ref), x509.DNSName(f"*.{ref}")]
    # X.509 caps a CN at 64 characters; SAN is what clients check anyway.
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ref)] if len(ref) <= 64 else [])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))          # tolerate clock skew
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=len(subject) == 0)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            # keyEncipherment is RSA key transport (TLS 1.2 RSA kx): not for an EC key.
            digital_signature=True, key_encipherment=key_type == "rsa", content_commitment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False,
            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(            # clientAuth: s2s dials out with it
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    certs_dir.mkdir(parents=True, exist_ok=True)
    pem_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    atomic_write(key_path, pem_key, 0o600)
    atomic_write(crt, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return crt, key_path
