"""Client-to-server streams (RFC 6120): negotiation, then stanzas to the router.

States, in order: ``header`` (waiting for the client's stream header),
``tls`` (STARTTLS, §5), ``auth`` (SASL, §6), ``bind`` (§7), ``ready``.
Each state consumes its own elements; the parser is reset after STARTTLS
and after SASL success, when a new stream header is expected.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import math
import secrets
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from .. import ns
from ..errors import StanzaError, StreamError
from ..jid import JID, JIDError
from ..xml import Element, child, error_reply, reply, serialize
from . import sasl
from .base import XMLStream
from .parser import StreamOpened
from .session import STANZAS, ClientSession, nonza

if TYPE_CHECKING:
    from ..host import Host
    from ..server import Server

log = logging.getLogger("vinespy.c2s")

_SASL = f"{{{ns.SASL}}}"
_BIND = f"{{{ns.BIND}}}bind"


def _escape_attr(value: str) -> str:
    return (value.replace("&", "&amp;").replace("<", "&lt;").replace("'", "&apos;")
            .replace('"', "&quot;"))


class ClientStream(XMLStream):
    """One client connection: negotiation, then the elements read go to the
    :class:`~vinespy.stream.session.ClientSession` it carries (its transport)."""

    def __init__(self, server: Server, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        cfg = server.config.client
        super().__init__(reader, writer, max_stanza_size=cfg.max_stanza_size,
                         rate_limit=cfg.rate_limit, rate_burst=cfg.rate_burst,
                         send_timeout=cfg.send_timeout)
        self.server = server
        self.cfg = cfg
        self.id = secrets.token_hex(8)
        self.state = "header"
        self.host: Host | None = None
        self.user: JID | None = None           # bare JID once authenticated
        self.session: ClientSession | None = None   # what this stream carries, once bound
        self._receive: Callable[[Element], Awaitable[None]]   # its receive(), once ready
        self._peer_from: str | None = None
        self._mechanism: sasl.Mechanism | None = None
        self.mechanism: str | None = None      # the SASL mechanism that succeeded
        self._auth_failures = 0
        self._timer: asyncio.TimerHandle | None = self.loop.call_later(
            cfg.auth_timeout, self._timeout)

    def __repr__(self) -> str:
        return f"<ClientStream {self.id} {self.session.jid if self.session else self.peer}>"

    # -- header --------------------------------------------------------
    def header(self) -> bytes:
        domain = self.host.domain if self.host else self.server.config.domains[0]
        to = f" to='{_escape_attr(self._peer_from)}'" if self._peer_from else ""
        return (f"<?xml version='1.0'?><stream:stream xmlns='{ns.CLIENT}' "
                f"xmlns:stream='{ns.STREAM}' id='{self.id}' from='{domain}'{to} "
                f"version='1.0' xml:lang='en'>").encode()

    def _open(self, ev: StreamOpened) -> None:
        """RFC 6120 §4.7-4.8: check the client's header, answer with ours."""
        self._peer_from = None
        self.header_sent = False
        frm = ev.attrs.get("from")
        if frm:
            try:
                JID.parse(frm)
                self._peer_from = frm
            except JIDError:
                pass
        if ev.stream_ns != ns.STREAM or ev.local_name != "stream":
            raise StreamError("invalid-namespace", "the root must be "
                              f"{{{ns.STREAM}}}stream (RFC 6120 §4.8.1)")
        if ev.namespace != ns.CLIENT:
            raise StreamError("invalid-namespace",
                              f"the default namespace must be {ns.CLIENT} (RFC 6120 §4.8.2)")
        to = ev.attrs.get("to", "")
        try:
            domain = JID.parse(to).domain if to else ""
        except JIDError:
            domain = ""
        host = self.server.hosts.get(domain)
        if host is None or (self.host is not None and host is not self.host):
            raise StreamError("host-unknown", f"{to or 'no to'}: not served here")
        self.host = host
        version = ev.attrs.get("version", "0.9")
        try:
            major = int(version.split(".")[0])
        except ValueError:
            raise StreamError("unsupported-version", "version must be 1.0") from None
        if major != 1:
            raise StreamError("unsupported-version", "version must be 1.0 (RFC 6120 §4.7.5)")
        self.write(self.header() + self._features())
        self.header_sent = True
        if self.state == "header":
            self.state = "auth" if self.user is None else "bind"

    def _features(self) -> bytes:
        parts: list[str] = []
        if self.user is None:
            if not self.secure:
                req = "<required/>" if self.cfg.tls == "required" else ""
                parts.append(f"<starttls xmlns='{ns.TLS}'>{req}</starttls>")
            if self.secure or self.cfg.tls == "optional":
                mechs = "".join(f"<mechanism>{m}</mechanism>"
                                for m in sasl.offered(self.secure))
                parts.append(f"<mechanisms xmlns='{ns.SASL}'>{mechs}</mechanisms>")
        else:
            parts.append(f"<bind xmlns='{ns.BIND}'/>")
            # RFC 3921 session establishment, optional since RFC 6121 (old clients).
            parts.append(f"<session xmlns='{ns.SESSION}'><optional/></session>")
            if self.host is not None:
                parts.extend(self.host.stream_features(self))    # modules' (rosterver...)
        return f"<stream:features>{''.join(parts)}</stream:features>".encode()

    # -- dispatch ------------------------------------------------------
    async def handle(self, event: Any) -> bool:
        if isinstance(event, StreamOpened):
            if self.state not in ("header", "restart"):
                raise StreamError("bad-format", "a second stream header")
            if self.state == "restart":
                self.state = "header"
            self._open(event)
            return False
        if self.state in ("header", "restart"):
            raise StreamError("bad-format", "expected a stream header")
        if self.state == "ready":
            await self._receive(event)
            return False
        if not self.secure and self.cfg.tls == "required" and self.user is None:
            if event.tag == f"{{{ns.TLS}}}starttls":
                await self._starttls()
                return True
            raise StreamError("policy-violation", "STARTTLS is required first (RFC 6120 §5.3.1)")
        if self.state == "auth":
            if event.tag == f"{{{ns.TLS}}}starttls" and not self.secure:
                await self._starttls()
                return True
            return await self._auth(event)
        # state == "bind"
        if event.tag == f"{{{ns.CLIENT}}}iq" and event.get("type") == "set" \
                and len(event) == 1 and event[0].tag == _BIND:
            await self._bind(event)
            return False
        assert self.host is not None
        if event.tag not in STANZAS and await nonza(self.host, self, event):
            return False
        raise StreamError("not-authorized", "bind a resource first (RFC 6120 §7)")

    # -- STARTTLS (RFC 6120 §5) ----------------------------------------
    async def _starttls(self) -> None:
        assert self.host is not None
        ctx = self.server.tls.get(self.host.domain)
        if ctx is None:
            self.write(f"<failure xmlns='{ns.TLS}'/>".encode())
            self.close()
            return
        if self.unread_input():
            # Bytes sent in clear after <starttls/> would otherwise be read as
            # if they came through TLS (the CVE-2011-0411 class of attacks).
            self.write(f"<failure xmlns='{ns.TLS}'/>".encode())
            self.close(StreamError("policy-violation", "data followed <starttls/> before the "
                                   "TLS handshake (RFC 6120 §5.4.3.3)"))
            return
        self.write(f"<proceed xmlns='{ns.TLS}'/>".encode())
        await self.drain()
        try:
            await self.writer.start_tls(ctx, ssl_handshake_timeout=self.cfg.auth_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            log.info("TLS handshake with %s failed: %s", self.peer, exc)
            self.closing = True
            self.writer.transport.abort()
            return
        self.secure = True
        self.parser.reset()
        self.state = "header"

    # -- SASL (RFC 6120 §6) --------------------------------------------
    async def _auth(self, el: Element) -> bool:
        name = el.tag[len(_SASL):] if el.tag.startswith(_SASL) else ""
        if name == "auth":
            mech_name = el.get("mechanism", "")
            if mech_name not in sasl.offered(self.secure):
                self._sasl_failure("invalid-mechanism", None)
                return False
            wait = self.server.auth_throttle.refused_for(self._address, self.loop.time())
            if wait:
                self._sasl_failure("temporary-auth-failure", "too many failed logins from "
                                   f"your address; try again in {math.ceil(wait)} s")
                return False
            assert self.host is not None
            self._mechanism = sasl.new(mech_name, self.host.domain, self.host.storage.find_user)
            data = self._decode(el)
            if data is False:
                return False
            result = await self._mechanism.start(data if data is not True else None)
        elif name == "response" and self._mechanism is not None:
            data = self._decode(el)
            if data is False:
                return False
            result = await self._mechanism.step(data if data is not True else b"")
        elif name == "abort":
            self._sasl_failure("aborted", None)
            return False
        else:
            raise StreamError("not-authorized", "authenticate first (RFC 6120 §6)")
        if not isinstance(result, sasl.Challenge) and self._mechanism is not None:
            await self._throttle(self._mechanism.account, result)
            if self.closing:
                return True
        return self._sasl_result(result)

    @property
    def _address(self) -> str:
        return str(self.peer[0]) if isinstance(self.peer, tuple) else ""

    async def _throttle(self, account: JID | None, result: sasl.Result) -> None:
        """Before the outcome of a login on ``account`` is told: wait as long
        as its earlier failures ask; then count this one (stream/throttle.py)."""
        throttle = self.server.auth_throttle
        delay = throttle.delay(account, self.loop.time())
        if delay:
            await asyncio.sleep(delay)
        if isinstance(result, sasl.Failure) and result.condition == "not-authorized":
            throttle.failed(self._address, account, self.loop.time())
        elif isinstance(result, sasl.Success):
            throttle.succeeded(result.jid)

    def _decode(self, el: Element) -> bytes | bool:
        """The base64 payload; True when absent; False (failure sent) if bad."""
        text = (el.text or "").strip()
        if not text:
            return True
        if text == "=":
            return b""
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            self._sasl_failure("incorrect-encoding", None)
            return False

    def _sasl_result(self, result: sasl.Result) -> bool:
        if isinstance(result, sasl.Challenge):
            data = base64.b64encode(result.data).decode() if result.data else "="
            self.write(f"<challenge xmlns='{ns.SASL}'>{data}</challenge>".encode())
            return False
        if isinstance(result, sasl.Failure):
            self._sasl_failure(result.condition, result.text)
            return False
        self.mechanism = self._mechanism.name if self._mechanism else None
        self._mechanism = None
        self.user = result.jid
        if result.data:
            data = base64.b64encode(result.data).decode()
            self.write(f"<success xmlns='{ns.SASL}'>{data}</success>".encode())
        else:
            self.write(f"<success xmlns='{ns.SASL}'/>".encode())
        log.info("%s authenticated as %s", self.peer, self.user)
        self.parser.reset()
        self.state = "restart"
        return True

    def _sasl_failure(self, condition: str, text: str | None) -> None:
        self._mechanism = None
        body = f"<{condition}/>"
        if text:
            body += f"<text xml:lang='en'>{_escape_attr(text)}</text>"
        self.write(f"<failure xmlns='{ns.SASL}'>{body}</failure>".encode())
        if condition == "aborted":
            return
        self._auth_failures += 1
        if self._auth_failures >= self.cfg.max_auth_failures:
            self.close(StreamError("policy-violation", "too many failed authentication attempts"))

    # -- resource binding (RFC 6120 §7) --------------------------------
    async def _bind(self, iq: Element) -> None:
        assert self.user is not None and self.host is not None
        try:
            full = await self._bind_resource(iq[0])
        except StanzaError as exc:
            self.write(serialize(error_reply(iq, exc)))
            return
        answer = reply(iq)
        child(child(answer, ns.BIND, "bind"), ns.BIND, "jid", str(full))
        assert self.session is not None
        self.session.send(answer)

    async def _bind_resource(self, bind: Element) -> JID:
        assert self.user is not None and self.host is not None
        res_el = bind.find(f"{{{ns.BIND}}}resource")
        wanted = (res_el.text or "").strip() if res_el is not None else ""
        if wanted:
            try:
                full = self.user.with_resource(wanted)
            except JIDError as exc:
                raise StanzaError("bad-request", f"resource: {exc}") from None
        else:
            full = self.user.with_resource(f"vinespy-{secrets.token_hex(4)}")
        async with self.server.sessions.binding(self.user):
            await self._take(full)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        log.info("%s bound %s", self.peer, full)
        return full

    async def _take(self, full: JID) -> None:
        """Check and bind ``full`` (under the account's binding lock)."""
        assert self.user is not None
        if self.closing:
            raise StanzaError("not-allowed", "the stream is closing")
        sessions = self.server.sessions
        # In a cluster, the resources bound on other nodes count too (conflict,
        # max_resources_per_account): read them now, not from the cache.
        await sessions.load((self.user,), fresh=True)
        old = sessions.get(full)
        if old is not None and self.cfg.resource_conflict == "refuse":
            raise StanzaError("conflict", "that resource is already bound")
        if old is None and sessions.count(self.user) >= self.cfg.max_resources_per_account:
            raise StanzaError("resource-constraint",
                              f"at most {self.cfg.max_resources_per_account} resources per account")
        if old is not None:
            # RFC 6120 §7.7.2.2: the new session wins, the old one is told why.
            old.close(StreamError("conflict", "replaced by a new session"))
            if isinstance(old, ClientSession):
                await old.unbind()
        assert self.host is not None
        session = ClientSession(self.server, self.host, full, self.id, self)
        sessions.bind(session)
        session.bound = True
        self.carry(session)

    def carry(self, session: ClientSession) -> None:
        """From now on, what the client sends is ``session``'s (bound here,
        or later resumed on this stream)."""
        self.session = session
        self._receive = session.receive
        self.state = "ready"

    # -- the end -------------------------------------------------------
    def _timeout(self) -> None:
        self._timer = None
        if self.session is None:
            self.close(StreamError("connection-timeout", "not authenticated in time"))

    async def ended(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        session = self.session
        if session is not None and session.transport is self:
            await session.unbind()     # (not if it moved to another transport)
