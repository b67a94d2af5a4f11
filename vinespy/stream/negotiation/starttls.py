"""STARTTLS (RFC 6120 §5): offered until the stream is encrypted; the
upgrade itself is the transport's (:meth:`XMLStream.start_tls`)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ... import ns
from ...errors import StreamError
from ...xml import Element

if TYPE_CHECKING:
    from ..client import C2S

log = logging.getLogger("vinespy.c2s")

_STARTTLS = f"{{{ns.TLS}}}starttls"
_FAILURE = f"<failure xmlns='{ns.TLS}'/>".encode()
_PROCEED = f"<proceed xmlns='{ns.TLS}'/>".encode()


def _required(stream: C2S) -> bool:
    """TLS before anything else: configured so, or a host whose passwords are
    in LDAP (its only mechanism, PLAIN, is offered over TLS alone, so a
    stream without TLS could never log in: RFC 6120 §5.3.1 says mark it)."""
    return stream.cfg.tls == "required" or (
        stream.host is not None and stream.host.directory is not None)


class StartTLS:
    def offer(self, stream: C2S) -> str:
        if stream.secure or stream.user is not None:
            return ""
        req = "<required/>" if _required(stream) else ""
        return f"<starttls xmlns='{ns.TLS}'>{req}</starttls>"

    async def handle(self, stream: C2S, el: Element) -> bool | None:
        if stream.secure or stream.user is not None:
            return None
        if el.tag != _STARTTLS:
            if _required(stream):
                raise StreamError("policy-violation",
                                  "STARTTLS is required first (RFC 6120 §5.3.1)")
            return None
        assert stream.host is not None
        ctx = stream.server.tls.get(stream.host.domain)
        if ctx is None:
            stream.write(_FAILURE)
            stream.close()
        elif stream.unread_input():
            # Bytes sent in clear after <starttls/> would otherwise be read as
            # if they came through TLS (the CVE-2011-0411 class of attacks).
            stream.write(_FAILURE)
            stream.close(StreamError("policy-violation", "data followed <starttls/> before the "
                                     "TLS handshake (RFC 6120 §5.4.3.3)"))
        else:
            stream.write(_PROCEED)
            try:
                await stream.start_tls(ctx, stream.cfg.auth_timeout)
            except (OSError, asyncio.TimeoutError) as exc:
                log.info("TLS handshake with %s failed: %s", stream.peer, exc)
        return True
