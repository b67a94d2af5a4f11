"""Streams other servers open to this one (RFC 6120 s2s, receiving side).

After the header, STARTTLS (required unless ``[server] tls = "optional"``),
then each domain pair the peer wants to send for is authenticated with
dialback (XEP-0220): the peer's ``<db:result/>`` key is checked with its
domain's authoritative server over this server's own outgoing stream, in a
task of its own, so that the stream goes on meanwhile (the peer may well
send a ``<db:verify/>`` about this server's key on it while it waits).
Requests about this server's own keys (``<db:verify/>``) are answered at
once, from the shared dialback secret, whichever cluster node gets them.

A stanza is routed only if its ``from`` domain and ``to`` domain are a pair
authenticated on this stream (RFC 6120 §8.1.2.2 / §13.5), else the stream
ends with ``<invalid-from/>`` (or ``<host-unknown/>`` for a domain not
served here): a peer can never speak for a domain it did not prove.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
from typing import TYPE_CHECKING, Any

from .. import ns
from ..errors import StreamError
from ..jid import JIDError, prep_domain
from ..stream.parser import StreamOpened
from ..xml import Element
from . import dialback, peercert
from .outgoing import BIDI, BIDI_FEATURE
from .stream import ERROR, ServerStream, addressing, check_header, error_text

if TYPE_CHECKING:
    from . import Federation

log = logging.getLogger("vinespy.s2s")

_STARTTLS = f"{{{ns.TLS}}}starttls"
_AUTH = f"{{{ns.SASL}}}auth"
_BIDI = f"{{{BIDI}}}bidi"
MAX_CHECKS = 8          # dialback checks one incoming stream may have running at once


def _domain(value: str | None) -> str | None:
    """A domain as a JID domainpart, prepared; None if it is not one."""
    if not value:
        return None
    try:
        return prep_domain(value)
    except JIDError:
        return None


class IncomingStream(ServerStream):
    """A peer's stream to this server."""

    direction = "in"
    idle_factor = 2.0                   # the sender closes an idle stream first

    def __init__(self, fed: Federation, direct_tls: bool = False) -> None:
        super().__init__(fed)
        self.direct_tls = direct_tls
        self.pairs: set[tuple[str, str]] = set()      # (remote, local) authenticated
        self._checks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._opened = False
        self.bidi = False               # XEP-0288: our stanzas for the peer may go here

    def header(self) -> bytes:
        return self.header_for(self.local or self.fed.default_domain, self.remote, self.id)

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        # A stream that authenticates nothing (as a client's that does not
        # log in) is not kept: twice the time a stream of ours may take to
        # come up (a peer's questions about our keys take far less).
        self._auth_timer: asyncio.TimerHandle | None = self.loop.call_later(
            2 * self.fed.cfg.connect_timeout, self._auth_timeout)

    def _auth_timeout(self) -> None:
        self._auth_timer = None
        if not self.pairs and not self.closing:
            self.close(StreamError("connection-timeout", "nothing authenticated in time"))

    # -- elements ------------------------------------------------------
    async def handle(self, event: Any) -> bool:
        if isinstance(event, StreamOpened):
            self._open(event)
            return False
        if not self._opened:
            raise StreamError("bad-format", "expected a stream header")
        tag = event.tag
        if tag.startswith(f"{{{ns.SERVER}}}"):
            await self.fed.server.router.route(self._stanza(event), None)
            return False
        log.debug("s2s: %s got %s", self.describe(), tag)
        self.last_active = self.loop.time()
        if tag == dialback.RESULT:
            self._result(event)
        elif tag == dialback.VERIFY:
            self._verify(event)
        elif tag == _STARTTLS:
            await self._starttls()
            return True
        elif tag == _AUTH:
            return self._auth(event)
        elif tag == _BIDI and self.fed.cfg.bidi and not self.pairs and not self.bidi:
            self.bidi = True            # XEP-0288 §2.2: asked before authentication
        elif tag == ERROR:
            log.info("s2s: %s sent a stream error: %s", self.describe(), error_text(event))
            self.close()
        else:
            raise StreamError("unsupported-stanza-type", f"{tag} is not expected here")
        return False

    def _open(self, ev: StreamOpened) -> None:
        """RFC 6120 §4.7-4.8: check the header, answer with ours and the features."""
        self.header_sent = False
        check_header(ev)
        # A stream without 'to' (a pre-RFC peer) is taken for the first host.
        local = _domain(ev.attrs.get("to")) or self.fed.default_domain
        if not self.fed.serves(local):
            raise StreamError("host-unknown", f"{ev.attrs.get('to')}: not served here")
        if self.local and local != self.local:
            raise StreamError("host-unknown", "the restarted stream names another domain")
        self.local = local
        self.remote = _domain(ev.attrs.get("from")) or self.remote
        self.id = secrets.token_hex(12)     # a new one per header (RFC 6120 §4.7.3)
        self._opened = True
        self.write(self.header())
        self.header_sent = True
        if ev.attrs.get("version") is not None:
            self.write(self._features())

    def _features(self) -> bytes:
        """STARTTLS until it is done; then SASL EXTERNAL if the peer's
        certificate proves the domain its header names (RFC 6120 §6.3.4,
        XEP-0178), and dialback (XEP-0220 §2.4.2, with error support)."""
        parts = []
        if not self.secure:
            required = "<required/>" if self.fed.cfg.tls == "required" else ""
            parts.append(f"<starttls xmlns='{ns.TLS}'>{required}</starttls>")
        elif self.remote and (self.remote, self.local) not in self.pairs \
                and self._cert_proves(self.remote):
            parts.append(f"<mechanisms xmlns='{ns.SASL}'><mechanism>EXTERNAL</mechanism>"
                         "</mechanisms>")
        if self.fed.cfg.dialback and (self.secure or self.fed.cfg.tls == "optional"):
            parts.append(f"<dialback xmlns='{dialback.FEATURE}'><errors/></dialback>")
        if self.fed.cfg.bidi and not self.pairs and (self.secure or self.fed.cfg.tls == "optional"):
            # XEP-0288 §2: we may answer over the peer's stream.
            parts.append(f"<bidi xmlns='{BIDI_FEATURE}'/>")
        return f"<stream:features>{''.join(parts)}</stream:features>".encode()

    def _cert_proves(self, domain: str) -> bool:
        """Whether the peer's TLS certificate is valid (trusted chain, RFC
        6125 name) for ``domain``."""
        if not self.secure or self.fed.serves(domain):
            return False
        try:
            return peercert.peer(self.transport).valid_for(domain)
        except TypeError:               # not our TLS context (cannot happen)
            return False

    def _auth(self, el: Element) -> bool:
        """SASL EXTERNAL (RFC 6120 §6, XEP-0178 §3): the certificate proves
        the header's 'from' domain (or the authorization identity, which
        must be that domain). On success the stream restarts."""
        failure = f"<failure xmlns='{ns.SASL}'><not-authorized/></failure>".encode()
        if el.get("mechanism") != "EXTERNAL" or not self.remote:
            self.write(f"<failure xmlns='{ns.SASL}'><invalid-mechanism/></failure>".encode())
            return False
        text = (el.text or "").strip()
        try:
            authzid = base64.b64decode(text, validate=True).decode() if text not in ("", "=") \
                else self.remote
        except (ValueError, UnicodeDecodeError):
            self.write(f"<failure xmlns='{ns.SASL}'><incorrect-encoding/></failure>".encode())
            return False
        if _domain(authzid) != self.remote:
            # RFC 6120 §6.4.6: an identity it may not act as.
            self.write(f"<failure xmlns='{ns.SASL}'><invalid-authzid/></failure>".encode())
            self.close()                # XEP-0178 §3 step 11
            return True
        if not self._cert_proves(self.remote):
            log.warning("s2s: %s: SASL EXTERNAL refused for %s", self.describe(), authzid)
            self.write(failure)
            self.close()
            return True
        self._proved(self.remote, self.local, "EXTERNAL")
        self.write(f"<success xmlns='{ns.SASL}'/>".encode())
        self.restart()
        self._opened = False
        return True

    async def _starttls(self) -> None:
        if self.secure:
            raise StreamError("policy-violation", "TLS is already on")
        self.write(f"<proceed xmlns='{ns.TLS}'/>".encode())
        for task in self._checks.values():
            task.cancel()               # a key given in the clear counts for nothing
        await self.start_tls(self.fed.server_context(self.local), self.fed.cfg.connect_timeout)
        # RFC 6120 §5.4.3.3: nothing learnt before the handshake is kept.
        self._opened = False
        self.pairs.clear()
        self.remote = ""

    # -- dialback ------------------------------------------------------
    def _result(self, el: Element) -> None:
        """The peer's key for a domain pair (XEP-0220 §2.1.1): checked with
        its authoritative server in a task of its own, answered when known."""
        if not self.secure and self.fed.cfg.tls == "required":
            raise StreamError("policy-violation", "STARTTLS first (RFC 6120 §5.3.1)")
        remote, local = _domain(el.get("from")), _domain(el.get("to"))
        key = (el.text or "").strip()
        if remote is None or local is None or not key:
            raise StreamError("improper-addressing", "db:result needs from, to and a key")
        if not self.fed.cfg.dialback:
            self.write(dialback.answer("result", local, remote, "error",
                                       error="policy-violation"))
            return
        if not self.fed.serves(local):
            self.write(dialback.answer("result", local, remote, "error", error="item-not-found"))
            return
        if self.fed.serves(remote) or (remote, local) in self._checks:
            # Our own name, or a second key for a pair being checked.
            raise StreamError("invalid-from", f"{remote} cannot be authenticated here")
        if (remote, local) in self.pairs or self._cert_proves(remote):
            # XEP-0344 §2.4: a certificate that proves the domain makes the
            # question to its authoritative server needless.
            self.write(dialback.answer("result", local, remote, "valid"))
            if (remote, local) not in self.pairs:
                self._proved(remote, local, "dialback+tls")
            return
        if len(self._checks) >= MAX_CHECKS or not self.fed.may_check():
            # XEP-0220 §2.2.1 (and RFC 4732): each check is a connection this
            # server makes on the peer's say-so; a peer (or all of them) gets
            # only so many at once.
            self.write(dialback.answer("result", local, remote, "error",
                                       error="remote-server-not-found"))
            return
        self._checks[(remote, local)] = self.loop.create_task(
            self._check(remote, local, key), context=self._ctx)

    async def _check(self, remote: str, local: str, key: str) -> None:
        try:
            outcome, condition = await self.fed.ask_authoritative(local, remote, self.id, key)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("s2s: checking the dialback key of %s failed", remote)
            outcome, condition = "error", "internal-server-error"
        finally:
            self._checks.pop((remote, local), None)
            self.fed.checked()
        if outcome == "error":
            # XEP-0220 §2.4: whatever went wrong asking the authoritative
            # server is reported as one condition (the peer learns nothing of
            # what a connection on its say-so met).
            log.info("s2s: %s: no answer about %s's key (%s)", self.describe(), remote, condition)
            condition = "remote-server-not-found"
        if self.closing:
            return
        self.write(dialback.answer("result", local, remote, outcome, error=condition))
        if outcome == "valid":
            self._proved(remote, local, "dialback")
        elif outcome == "invalid":
            log.warning("s2s: %s: the dialback key for %s is invalid", self.describe(), remote)
            self.close(StreamError("not-authorized", f"the dialback key for {remote} is invalid"))

    def _proved(self, remote: str, local: str, how: str) -> None:
        """The peer proved ``remote`` for ``local``: its stanzas may flow;
        on a bidirectional stream (XEP-0288) ours for it may go back here."""
        self.pairs.add((remote, local))
        self.remote = remote
        self.authenticated(how)
        log.info("s2s: %s authenticated by %s%s", self.describe(), how,
                 ", bidirectional" if self.bidi else "")
        if self.bidi:
            self.fed.route(local, remote).reverse = self

    def _verify(self, el: Element) -> None:
        """A receiving server asks whether a key is ours (XEP-0220 §2.1.2)."""
        receiving, originating = _domain(el.get("from")), _domain(el.get("to"))
        stream_id, key = el.get("id"), (el.text or "").strip()
        if receiving is None or originating is None or not stream_id or not key:
            raise StreamError("improper-addressing", "db:verify needs from, to, id and a key")
        if not self.fed.serves(originating):
            self.write(dialback.answer("verify", originating, receiving, "error", stream_id,
                                       error="item-not-found"))
            return
        expected = self.fed.dialback_key(originating, receiving, stream_id)
        outcome = "valid" if dialback.same(expected, key) else "invalid"
        self.write(dialback.answer("verify", originating, receiving, outcome, stream_id))

    # -- stanzas -------------------------------------------------------
    def _stanza(self, el: Element) -> Element:
        """RFC 6120 §8.1.1.2 and §13.5: 'from' and 'to' present, and their
        domains a pair authenticated on this stream."""
        frm, to = addressing(el)
        if not self.pairs:
            raise StreamError("not-authorized", "authenticate first (RFC 6120 §4.9.3.12)")
        if (frm.domain, to.domain) not in self.pairs:
            if not self.fed.serves(to.domain):
                raise StreamError("host-unknown", f"{to.domain} is not served here")
            raise StreamError("invalid-from",
                              f"{frm.domain} is not authenticated for {to.domain} on this stream")
        return self.took(el)

    async def ended(self) -> None:
        if self._auth_timer is not None:
            self._auth_timer.cancel()
        for remote, local in self.pairs:
            route = self.fed.routes.get((local, remote))
            if route is not None and route.reverse is self:
                route.reverse = None
        for task in list(self._checks.values()):
            task.cancel()
        await super().ended()
