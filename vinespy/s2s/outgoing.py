"""Streams this server opens to other servers (RFC 6120 s2s, initiating side).

One :class:`Route` per pair of domains (one of ours, a remote one) holds
what waits to be sent and the stream that sends it. The first stanza for
a remote domain starts the stream: the domain is resolved
(:mod:`vinespy.s2s.resolve`), connected, encrypted (STARTTLS, or TLS first
for an XEP-0368 target), the peer's certificate checked for the remote
domain (RFC 6125; not for ``insecure_domains``) and this domain
authenticated: SASL EXTERNAL when the peer offers it (it accepted our
certificate), else dialback (XEP-0220). Meanwhile stanzas queue, in order;
once the stream is up they flow. If no target works within
``connect_timeout`` every queued stanza is bounced with
``<remote-server-not-found/>`` or ``<remote-server-timeout/>``.

The same stream carries this server's ``<db:verify/>`` questions to the
remote domain's authoritative server (XEP-0220 §2.1.2, piggybacking) for
the keys that domain presents on its own streams to us.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
from collections import deque
from typing import TYPE_CHECKING, Any

from .. import ns
from ..errors import StanzaError, StreamError
from ..stream.parser import StreamOpened
from ..xml import Element
from . import dialback, resolve
from .stream import ERROR, FEATURES, ServerStream, addressing, check_header, error_text

if TYPE_CHECKING:
    from . import Federation

log = logging.getLogger("vinespy.s2s")

_PROCEED = f"{{{ns.TLS}}}proceed"
_TLS_FAILURE = f"{{{ns.TLS}}}failure"
_SUCCESS = f"{{{ns.SASL}}}success"
_SASL_FAILURE = f"{{{ns.SASL}}}failure"
_SERVER = f"{{{ns.SERVER}}}"
BIDI = "urn:xmpp:bidi"                           # XEP-0288
BIDI_FEATURE = "urn:xmpp:features:bidi"


class Failed(Exception):
    """A stream could not be set up; ``condition`` is what senders are told."""

    def __init__(self, condition: str, text: str) -> None:
        super().__init__(text)
        self.condition = condition


class Route:
    """Our domain ``local`` to the remote domain ``remote``."""

    def __init__(self, fed: Federation, local: str, remote: str) -> None:
        self.fed = fed
        self.local = local
        self.remote = remote
        self.queue: deque[Element] = deque()
        self.stream: OutgoingStream | None = None
        self.ready = False
        self._task: asyncio.Task[None] | None = None
        self._open: asyncio.Event = asyncio.Event()     # db:verify may go out
        self._verifies: dict[str, asyncio.Future[tuple[str, str | None]]] = {}
        # A stream the peer opened and made bidirectional (XEP-0288), which
        # carries our stanzas while we have no stream of our own up.
        self.reverse: ServerStream | None = None

    def __repr__(self) -> str:
        return f"<Route {self.local} -> {self.remote}>"

    @property
    def idle(self) -> bool:
        """Nothing waits, nothing is being set up, no stream: forgettable."""
        return (self.stream is None and self._task is None and not self.queue
                and not self._verifies and self.reverse is None)

    # -- stanzas -------------------------------------------------------
    def send(self, stanza: Element) -> None:
        stream = self.stream
        if self.ready and stream is not None and not stream.closing:
            stream.send_stanza(stanza)
            return
        reverse = self.reverse
        if reverse is not None and not reverse.closing and not self.queue:
            # XEP-0288: the peer's own stream, which it made bidirectional.
            reverse.send_stanza(stanza)
            return
        if len(self.queue) >= self.fed.cfg.max_queue:
            self.fed.server.router.bounce(stanza, StanzaError(
                "resource-constraint", f"too many stanzas wait for {self.remote}"))
            return
        self.queue.append(stanza)
        self.fed.queued(stanza)
        self.start()

    def start(self) -> None:
        if self._task is None and (self.stream is None or self.stream.closing):
            self._task = self.fed.spawn(self._establish())

    async def _establish(self) -> None:
        """Connect, with every target in turn, until one stream is up (or
        ``connect_timeout`` is over); then send what waits, or bounce it."""
        cfg = self.fed.cfg
        failure = Failed("remote-server-not-found", "no target")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cfg.connect_timeout
        try:
            async with asyncio.timeout_at(deadline):
                try:
                    targets = await resolve.targets(self.remote, cfg.routes, cfg.connect_timeout,
                                                    cfg.nameservers)
                except resolve.NotFound as exc:
                    raise Failed("remote-server-not-found", str(exc)) from None
                for i, target in enumerate(targets):
                    # A target that accepts and then says nothing may take
                    # its share of what is left, not all of it: the next
                    # ones get theirs (RFC 2782's fallback still happens).
                    share = (deadline - loop.time()) / (len(targets) - i)
                    try:
                        async with asyncio.timeout(share):
                            await self._try(target)
                        break
                    except (Failed, TimeoutError) as exc:
                        if isinstance(exc, TimeoutError):
                            if loop.time() >= deadline:
                                raise
                            exc = Failed("remote-server-timeout",
                                         f"{target.host}:{target.port} did not answer in time")
                        failure = exc
                        log.info("s2s: %s via %s:%d: %s", self, target.host, target.port, exc)
                else:
                    raise failure
        except Failed as exc:
            failure = exc
        except TimeoutError:
            failure = Failed("remote-server-timeout",
                             f"no stream to {self.remote} within {cfg.connect_timeout:g} s")
        except Exception as exc:
            # A bug or a library's surprise must not leave the queue without
            # an answer: every stanza in it is bounced, as for any failure.
            log.exception("s2s: setting up %s failed", self)
            failure = Failed("remote-server-not-found", f"internal error: {exc}")
        else:
            self._flush()
            return
        finally:
            self._task = None
        log.warning("s2s: cannot reach %s: %s", self.remote, failure)
        self._fail(failure)

    async def _try(self, target: resolve.Target) -> None:
        loop = asyncio.get_running_loop()
        ctx = self.fed.client_context(self.local, self.remote)
        self._open.clear()
        done: asyncio.Future[None] = loop.create_future()
        try:
            _, stream = await loop.create_connection(
                lambda: OutgoingStream(self, done), target.host, target.port,
                ssl=ctx if target.direct_tls else None,
                server_hostname=self.remote if target.direct_tls else None)
        except ssl.SSLError as exc:
            raise Failed("remote-server-not-found", f"TLS: {exc}") from None
        except OSError as exc:
            raise Failed("remote-server-not-found", exc.strerror or str(exc)) from None
        self.stream = stream
        try:
            await done
        except BaseException:
            stream.close()
            if self.stream is stream:
                # Its gone() will find another stream (or none) and do
                # nothing: what said db:verify may go out on it ends here,
                # else verify() writes to no stream from now on.
                self.stream = None
                self._open.clear()
            raise

    def _flush(self) -> None:
        stream = self.stream
        assert stream is not None
        self.ready = True
        log.info("s2s: %s up (%s), %d stanzas waited", stream.describe(), stream.auth,
                 len(self.queue))
        while self.queue:
            stream.send_stanza(self.queue.popleft())
        self.fed.unqueued()

    def _fail(self, failure: Failed) -> None:
        """Nothing could be set up: every waiting stanza and question gets the error."""
        router = self.fed.server.router
        bounced = bool(self.queue)
        while self.queue:
            router.bounce(self.queue.popleft(), StanzaError(failure.condition, str(failure)))
        if bounced:
            self.fed.unqueued()
        for fut in self._verifies.values():
            if not fut.done():
                fut.set_result(("error", failure.condition))
        self._verifies.clear()

    # -- the stream's news ----------------------------------------------
    def opened(self) -> None:
        """The stream may carry db:verify now (encrypted if it is to be)."""
        self._open.set()

    def gone(self, stream: OutgoingStream) -> None:
        """``stream`` ended (closed by either side, lost, or failed)."""
        if self.stream is not stream:
            return
        self.stream = None
        self.ready = False
        self._open.clear()
        for fut in self._verifies.values():
            if not fut.done():
                fut.set_result(("error", "remote-server-timeout"))
        self._verifies.clear()
        if self.queue and self._task is None:
            self.start()         # what was queued meanwhile goes on a new stream

    def verified(self, stream_id: str, outcome: str, condition: str | None) -> None:
        fut = self._verifies.pop(stream_id, None)
        if fut is not None and not fut.done():
            fut.set_result((outcome, condition))

    # -- dialback questions ----------------------------------------------
    async def verify(self, stream_id: str, key: str) -> tuple[str, str | None]:
        """Ask the remote domain's authoritative server whether ``key`` is its
        key for our stream ``stream_id``: ("valid" | "invalid" | "error",
        the error condition)."""
        fut: asyncio.Future[tuple[str, str | None]] = asyncio.get_running_loop().create_future()
        self._verifies[stream_id] = fut
        try:
            async with asyncio.timeout(self.fed.cfg.connect_timeout):
                if not self._open.is_set():
                    self.start()
                    opened = asyncio.ensure_future(self._open.wait())
                    try:
                        await asyncio.wait((opened, fut), return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        opened.cancel()
                    if fut.done():          # the stream could not be set up
                        return fut.result()
                stream = self.stream
                assert stream is not None
                stream.write(dialback.verify(self.local, self.remote, stream_id, key))
                stream.last_active = stream.loop.time()     # in use: not idle
                return await fut
        except TimeoutError:
            return "error", "remote-server-timeout"
        finally:
            if self._verifies.get(stream_id) is fut:
                del self._verifies[stream_id]

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()


class OutgoingStream(ServerStream):
    """The initiating side's negotiation (RFC 6120 §4.3, §5, §6; XEP-0220)."""

    direction = "out"

    def __init__(self, route: Route, done: asyncio.Future[None]) -> None:
        super().__init__(route.fed)
        self.route = route
        self.local, self.remote = route.local, route.remote
        self._done = done
        # A failure after the setup gave up waiting (its timeout) is nobody's
        # to retrieve: retrieved here, so that it is not logged as lost.
        done.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.state = "header"
        self.peer_id = ""
        self._authenticated = False       # by SASL: the restarted stream is ready at once
        self.bidi = False                 # XEP-0288: the peer sends back on this stream

    def header(self) -> bytes:
        return self.header_for(self.local, self.remote, None)

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.write(self.header())
        self.header_sent = True

    def _fail(self, condition: str, text: str) -> None:
        if not self._done.done():
            self._done.set_exception(Failed(condition, text))

    async def handle(self, event: Any) -> bool:
        if isinstance(event, StreamOpened):
            check_header(event)
            self.peer_id = event.attrs.get("id", "")
            if event.attrs.get("version") is None:
                # A pre-RFC 3920 peer: no features, dialback straight away.
                self._after_features(None)
            else:
                self.state = "features"
            return False
        tag = event.tag
        if log.isEnabledFor(logging.DEBUG):
            log.debug("s2s: %s (%s) got %s", self.describe(), self.state, tag)
        if tag == ERROR:
            self._fail("remote-server-not-found", f"stream error: {error_text(event)}")
            self.close()
        elif tag == FEATURES and self.state == "features":
            return await self._features(event)
        elif tag == _PROCEED and self.state == "starttls":
            return await self._starttls()
        elif tag == _SUCCESS and self.state == "sasl":
            self._authenticated = True
            self.authenticated("EXTERNAL")
            self._restart()
            return True
        elif tag in (_TLS_FAILURE, _SASL_FAILURE):
            what = "STARTTLS" if tag == _TLS_FAILURE else "SASL EXTERNAL"
            if tag == _SASL_FAILURE and self._can_dialback:
                self._dialback()
                return False
            self._fail("remote-server-not-found", f"the peer refused {what}")
            self.close()
        elif tag == dialback.RESULT and self.state == "dialback":
            self._dialback_answer(event)
        elif tag == dialback.VERIFY:
            self.route.verified(event.get("id", ""), event.get("type", "invalid"),
                                _condition(event))
        elif tag.startswith(_SERVER) and self.bidi and self.state == "ready":
            await self.fed.server.router.route(self._reverse(event), None)
        else:
            raise StreamError("unsupported-stanza-type", f"{tag} is not expected here")
        return False

    def _reverse(self, el: Element) -> Element:
        """A stanza the peer sends back on a bidirectional stream (XEP-0288
        §2.1): from its domain (which our TLS check, or DNS for an insecure
        domain, proved) to ours, checked as on a stream it opened."""
        frm, to = addressing(el)
        if frm.domain != self.remote:
            raise StreamError("invalid-from", f"{frm.domain} is not {self.remote}")
        if to.domain != self.local:
            raise StreamError("host-unknown", f"this stream is for {self.local}")
        return self.took(el)

    async def _features(self, features: Element) -> bool:
        if features.find(f"{{{ns.TLS}}}starttls") is not None and not self.secure:
            self.write(f"<starttls xmlns='{ns.TLS}'/>".encode())
            self.state = "starttls"
            return False
        self._after_features(features)
        return False

    @property
    def _can_dialback(self) -> bool:
        # Tried even when the peer does not advertise XEP-0220's optional
        # stream feature: its header declares the dialback namespace.
        return self.fed.cfg.dialback

    def _after_features(self, features: Element | None) -> None:
        if not self.secure and self.fed.cfg.tls == "required":
            self._fail("remote-server-not-found", f"{self.remote} does not offer STARTTLS")
            self.close(StreamError("policy-violation", "TLS is required here"))
            return
        self.route.opened()
        if self._authenticated:
            self._ready()
            return
        if (features is not None and self.secure and not self.bidi and self.fed.cfg.bidi
                and features.find(f"{{{BIDI_FEATURE}}}bidi") is not None):
            # XEP-0288 §2: the peer offers to send its stanzas for us back
            # over this stream rather than open one of its own.
            self.write(f"<bidi xmlns='{BIDI}'/>".encode())
            self.bidi = True
        mechanisms = [] if features is None else [
            (m.text or "").strip() for m in features.iter(f"{{{ns.SASL}}}mechanism")]
        if self.secure and "EXTERNAL" in mechanisms:
            self.write((f"<auth xmlns='{ns.SASL}' mechanism='EXTERNAL'>"
                        f"{base64.b64encode(self.local.encode()).decode()}</auth>").encode())
            self.state = "sasl"
        elif self._can_dialback:
            self._dialback()
        else:
            self._fail("remote-server-not-found",
                       f"{self.remote} offers no authentication this server can do")
            self.close(StreamError("policy-violation", "no authentication method in common"))

    def _ready(self) -> None:
        self.state = "ready"
        if not self._done.done():
            self._done.set_result(None)

    def _dialback(self) -> None:
        key = self.fed.dialback_key(self.local, self.remote, self.peer_id)
        self.write(dialback.result(self.local, self.remote, key))
        self.state = "dialback"

    def _dialback_answer(self, el: Element) -> None:
        if el.get("from") != self.remote or el.get("to") != self.local:
            # XEP-0220 §2.1.1: the answer is for the pair the key was for.
            log.info("s2s: %s: ignoring a dialback answer for %s -> %s", self.describe(),
                     el.get("to"), el.get("from"))
            return
        outcome = el.get("type")
        if outcome == "valid":
            self.authenticated("dialback")
            self._ready()
            return
        condition = _condition(el) or "not-authorized"
        self._fail("remote-server-not-found",
                   f"{self.remote} refused our dialback key ({outcome}: {condition})")
        self.close()

    async def _starttls(self) -> bool:
        ctx = self.fed.client_context(self.local, self.remote)
        try:
            await self.start_tls(ctx, self.fed.cfg.connect_timeout, server_side=False,
                                 server_hostname=self.remote)
        except ssl.SSLCertVerificationError as exc:
            self._fail("remote-server-not-found",
                       f"the certificate of {self.remote} is not valid for it: "
                       f"{exc.verify_message}")
            return True             # the connection is dropped (start_tls)
        except (OSError, TimeoutError) as exc:
            self._fail("remote-server-not-found", f"TLS with {self.remote} failed: {exc}")
            return True
        self._restart()
        return True

    def _restart(self) -> None:
        """A new stream on the same connection (RFC 6120 §4.3.3)."""
        self.restart()
        self.state = "header"
        self.write(self.header())

    async def ended(self) -> None:
        self._fail("remote-server-not-found", f"{self.remote} closed the stream")
        self.route.gone(self)
        await super().ended()


def _condition(el: Element) -> str | None:
    """The XEP-0220 §2.4 error condition of a dialback answer, if any."""
    for error in el:
        if isinstance(error.tag, str) and error.tag.endswith("}error"):
            for child in error:
                if isinstance(child.tag, str) and child.tag.startswith(f"{{{ns.STANZAS}}}"):
                    return child.tag.split("}", 1)[1]
    return None
