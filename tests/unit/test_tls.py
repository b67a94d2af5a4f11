"""vinespy.tls: self-signed certificates, per-domain contexts, SNI for direct TLS."""

from __future__ import annotations

import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from vinespy.config import Config, ConfigError, HostConfig
from vinespy.tls import (KEY_TYPES, TICKETS, cert_paths, contexts, make_self_signed,
                         server_context, sni_context)

DOMAINS = ("wonderland.lit", "verona.lit")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A certs directory with a self-signed pair for each of DOMAINS."""
    d = tmp_path_factory.mktemp("certs")
    for domain in DOMAINS:
        make_self_signed(domain, d)
    return d


def config_for(certs: Path) -> Config:
    return Config(path=certs / "config.toml", certs=certs,
                  hosts=(HostConfig(domains=DOMAINS[:1]), HostConfig(domains=DOMAINS[1:])))


def san(der: bytes) -> list[str]:
    cert = x509.load_der_x509_certificate(der)
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return ext.value.get_values_for_type(x509.DNSName)


def handshake(server_ctx: ssl.SSLContext, sni: str | None,
              client_ctx: ssl.SSLContext | None = None,
              session: ssl.SSLSession | None = None) -> ssl.SSLObject:
    """Run a TLS handshake in memory (two MemoryBIO pairs); return the client end.

    Afterwards the server sends a byte of application data, so that a TLS 1.3
    client has read the session tickets that follow the handshake.
    """
    if client_ctx is None:
        client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client_ctx.check_hostname = False
        client_ctx.verify_mode = ssl.CERT_NONE
    client_ctx.set_alpn_protocols(["xmpp-client"])
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=sni, session=session)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        done = 0
        for end in (client, server):
            try:
                end.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if done == 2:
            server.write(b" ")
            c_in.write(s_out.read())
            assert client.read(1) == b" "
            return client
    raise AssertionError("handshake did not finish")


def test_cert_paths() -> None:
    """A domain's pair is DOMAIN.crt and DOMAIN.key in the certs directory."""
    assert cert_paths(Path("/c"), "a.lit") == (Path("/c/a.lit.crt"), Path("/c/a.lit.key"))


def test_self_signed_names_and_modes(certs: Path) -> None:
    """The certificate names the domain and its subdomains; the key is 0600."""
    crt, key = cert_paths(certs, "wonderland.lit")
    cert = x509.load_pem_x509_certificate(crt.read_bytes())
    assert san(cert.public_bytes(Encoding.DER)) == \
        ["wonderland.lit", "*.wonderland.lit"]
    cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    assert [a.value for a in cn] == ["wonderland.lit"]
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(crt.stat().st_mode) == 0o644
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")   # PKCS#8, clear
    assert sorted(p.name for p in certs.iterdir()) == sorted(
        n for d in DOMAINS for n in (f"{d}.crt", f"{d}.key"))           # no temp files left


@pytest.mark.parametrize(("key_type", "key_class", "encipherment"), [
    ("ecdsa", ec.EllipticCurvePublicKey, False),
    ("rsa", rsa.RSAPublicKey, True),
])
def test_self_signed_key_types(tmp_path: Path, key_type: str, key_class: type,
                               encipherment: bool) -> None:
    """ECDSA P-256 or RSA-2048 on request; each serves a TLS 1.2 and 1.3 handshake."""
    crt, key = make_self_signed("wonderland.lit", tmp_path, key_type=key_type)
    cert = x509.load_pem_x509_certificate(crt.read_bytes())
    public = cert.public_key()
    assert isinstance(public, key_class)
    assert (public.curve.name == "secp256r1" if isinstance(public, ec.EllipticCurvePublicKey)
            else public.key_size == 2048)
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment is encipherment
    for version, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
        client_ctx = ssl.create_default_context(cafile=crt)
        client_ctx.maximum_version = version
        client = handshake(server_context(crt, key), "wonderland.lit", client_ctx)
        assert client.version() == name
        assert client.getpeercert(binary_form=True) == cert.public_bytes(Encoding.DER)


def test_self_signed_default_is_ecdsa(certs: Path) -> None:
    """make_self_signed (so `vinespy init` and `vinespy cert`) writes ECDSA P-256 by default."""
    assert KEY_TYPES[0] == "ecdsa"
    cert = x509.load_pem_x509_certificate(cert_paths(certs, "wonderland.lit")[0].read_bytes())
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)


def test_self_signed_refuses_unknown_key_type(tmp_path: Path) -> None:
    """A key type other than ecdsa or rsa is a ValueError; nothing is written."""
    with pytest.raises(ValueError, match="dsa"):
        make_self_signed("wonderland.lit", tmp_path, key_type="dsa")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sni", [False, True])
def test_tls13_session_resumes_with_one_ticket(certs: Path, sni: bool) -> None:
    """A full TLS 1.3 handshake hands the client one ticket, and a second
    connection presenting it resumes (no certificate signature this time);
    through the SNI context of direct TLS too."""
    ctx = server_context(*cert_paths(certs, "wonderland.lit"))
    assert ctx.num_tickets == TICKETS == 1
    if sni:
        ctx = sni_context({"wonderland.lit": ctx}, "wonderland.lit")
        assert ctx.num_tickets == TICKETS
    client_ctx = ssl.create_default_context(cafile=cert_paths(certs, "wonderland.lit")[0])
    first = handshake(ctx, "wonderland.lit", client_ctx)
    assert first.version() == "TLSv1.3" and not first.session_reused
    session = first.session
    assert session is not None and session.has_ticket
    again = handshake(ctx, "wonderland.lit", client_ctx, session=session)
    assert again.session_reused
    assert again.getpeercert(binary_form=True) == first.getpeercert(binary_form=True)


def test_self_signed_loads_in_server_context(certs: Path) -> None:
    """server_context loads the pair and is TLS 1.2+ without compression."""
    ctx = server_context(*cert_paths(certs, "wonderland.lit"))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_COMPRESSION


def test_self_signed_refuses_overwrite(tmp_path: Path) -> None:
    """An existing pair is kept unless overwrite=True; the domain is prepared."""
    crt, key = make_self_signed("Wonderland.LIT", tmp_path, days=1)
    assert crt == tmp_path / "wonderland.lit.crt"
    before = key.read_bytes()
    with pytest.raises(FileExistsError) as info:
        make_self_signed("wonderland.lit", tmp_path)
    assert info.value.filename == str(crt)
    assert key.read_bytes() == before
    make_self_signed("wonderland.lit", tmp_path, overwrite=True)
    assert key.read_bytes() != before
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_contexts_one_per_domain(certs: Path) -> None:
    """contexts() builds a context for every served domain, each with its own cert."""
    ctxs = contexts(config_for(certs))
    assert set(ctxs) == set(DOMAINS)
    for domain in DOMAINS:
        assert san(handshake(ctxs[domain], None).getpeercert(binary_form=True) or b"")[0] \
            == domain


def test_contexts_missing_pair(certs: Path, tmp_path: Path) -> None:
    """A domain without a pair is a ConfigError naming the domain and the file."""
    config = Config(path=tmp_path / "c.toml", certs=tmp_path,
                    hosts=(HostConfig(domains=("tea.lit",)),))
    with pytest.raises(ConfigError, match=rf"^tea\.lit: certificate {tmp_path}/tea\.lit\.crt "):
        contexts(config)


@pytest.mark.parametrize(("sni", "expected"), [
    ("wonderland.lit", "wonderland.lit"),
    ("verona.lit", "verona.lit"),
    ("VERONA.lit", "verona.lit"),
    ("unknown.lit", "wonderland.lit"),
    (None, "wonderland.lit"),
])
def test_sni_picks_certificate(certs: Path, sni: str | None, expected: str) -> None:
    """Direct TLS serves the SNI name's certificate, else the default domain's."""
    ctxs = contexts(config_for(certs))
    client = handshake(sni_context(ctxs, "wonderland.lit"), sni)
    assert san(client.getpeercert(binary_form=True) or b"")[0] == expected
    assert client.selected_alpn_protocol() == "xmpp-client"      # XEP-0368 §4
    assert all(c.sni_callback is None for c in ctxs.values())     # inputs untouched


def test_sni_verifies_against_trusted_cert(certs: Path) -> None:
    """A client trusting the self-signed cert verifies it for its domain over SNI."""
    client_ctx = ssl.create_default_context(cafile=cert_paths(certs, "verona.lit")[0])
    client = handshake(sni_context(contexts(config_for(certs)), "wonderland.lit"),
                       "verona.lit", client_ctx)
    assert client.version() in ("TLSv1.2", "TLSv1.3")
