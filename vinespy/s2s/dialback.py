"""Server dialback (XEP-0220) and its keys (XEP-0185): no I/O here.

A receiving server asks the originating domain's authoritative server
whether a key is one it made; the key binds the two domains and the
receiving server's stream id, so it cannot be replayed on another stream:

    key = HEX( HMAC-SHA256( SHA256(secret), receiving + " " + originating + " " + id ) )

Every node of a cluster must make the same keys (the verification request
may reach any of them), so the secret is ``[server] dialback_secret`` or,
without it, derived from the domain's TLS private key, which every node of
the domain holds already.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from .. import ns
from ..xml import escape_attr

NS = "jabber:server:dialback"
FEATURE = "urn:xmpp:features:dialback"          # XEP-0220 §2.4.2 stream feature
RESULT = f"{{{NS}}}result"
VERIFY = f"{{{NS}}}verify"

# XEP-0220 §2.4: the error conditions a dialback error carries.
ERRORS = ("remote-server-not-found", "remote-server-timeout", "item-not-found",
          "policy-violation", "not-authorized", "internal-server-error")


def secret(configured: str | None, key_file: Path, domain: str) -> bytes:
    """The secret dialback keys of ``domain`` are made with: ``configured``
    (the config's, or the cluster's), else one derived from ``key_file``."""
    if configured is not None:
        return hashlib.sha256(configured.encode()).digest()
    # A one-way function of the key file: nothing of the private key can be
    # learnt from a dialback key.
    return hashlib.sha256(b"vinespy dialback\0" + domain.encode() + b"\0"
                          + key_file.read_bytes()).digest()


def key(secret: bytes, receiving: str, originating: str, stream_id: str) -> str:
    """XEP-0185 §3's key (``secret`` is already SHA-256 of the shared secret)."""
    text = f"{receiving} {originating} {stream_id}".encode()
    return hmac.new(secret, text, hashlib.sha256).hexdigest()


def same(a: str, b: str) -> bool:
    """Constant-time comparison of two keys."""
    return hmac.compare_digest(a.encode(), b.encode())


def result(frm: str, to: str, key: str) -> bytes:
    """``<db:result/>`` with our key (the originating side, §2.1.1)."""
    return (f"<db:result from='{escape_attr(frm)}' to='{escape_attr(to)}'>"
            f"{key}</db:result>").encode()


def verify(frm: str, to: str, stream_id: str, key: str) -> bytes:
    """``<db:verify/>`` asking the authoritative server about ``key`` (§2.1.2)."""
    return (f"<db:verify from='{escape_attr(frm)}' to='{escape_attr(to)}' "
            f"id='{escape_attr(stream_id)}'>{key}</db:verify>").encode()


def answer(name: str, frm: str, to: str, outcome: str, stream_id: str | None = None,
           error: str | None = None) -> bytes:
    """``<db:result/>`` or ``<db:verify/>`` (``name``) answered ``valid``,
    ``invalid`` or ``error`` (with an XEP-0220 §2.4 ``error`` condition)."""
    sid = f" id='{escape_attr(stream_id)}'" if stream_id is not None else ""
    head = (f"<db:{name} from='{escape_attr(frm)}' to='{escape_attr(to)}'{sid} "
            f"type='{outcome}'")
    if outcome != "error":
        return (head + "/>").encode()
    condition = error if error in ERRORS else "internal-server-error"
    kind = "wait" if condition in ("remote-server-timeout", "internal-server-error") else "cancel"
    return (head + f"><error type='{kind}'><{condition} xmlns='{ns.STANZAS}'/></error>"
            f"</db:{name}>").encode()
