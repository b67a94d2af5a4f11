"""XMPP over WebSocket (RFC 7395): one client stream per WebSocket.

The ``xmpp`` subprotocol is required (§3.3.1). Each text message holds one
complete element (§3.3.3): ``<open/>`` and ``<close/>`` in the framing
namespace stand for the stream header and ``</stream:stream>`` (§3.4, §3.6);
everything else is what a TCP stream would carry, and goes through the same
:class:`~vinespy.stream.client.C2S` states, SASL, bind, limits and errors.
Elements are parsed by one :class:`~vinespy.stream.parser.StreamParser` per
socket, fed a stream header of our own first, so the limits of RFC 6120
§11.1 and §13.12 hold here as over TCP. There is no STARTTLS: TLS is the
HTTP listener's (``tls_port``) or a proxy's in front.

Writes are batched as over TCP: the frames written in one turn of the event
loop leave in one ``transport.write``. Server frames are unmasked text
frames, built here (RFC 6455 §5.2) rather than by one awaited send per
message. aiohttp answers pings and, with ``websocket_ping``, sends its own
and closes a socket whose peer stops answering.
"""

from __future__ import annotations

import asyncio
import logging
import re
import struct
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from .. import ns
from ..errors import StreamError
from ..stream.base import MAX_UNSENT, Framing, RateLimiter
from ..stream.client import C2S
from ..stream.negotiation import Auth, Bind
from ..stream.parser import StreamClosed, StreamOpened, StreamParser
from ..xml import escape_attr
from .frames import qualify

if TYPE_CHECKING:
    from ..config import HttpConfig
    from ..server import Server
    from .peer import Client

log = logging.getLogger("vinespy.websocket")

_OPEN = f"{{{ns.FRAMING}}}open"
_CLOSE = f"{{{ns.FRAMING}}}close"
_CLOSE_BYTES = f"<close xmlns='{ns.FRAMING}'/>".encode()
# What the parser is fed before the first message: every message is then
# parsed as a child of this stream (jabber:client by default).
_PROLOGUE = f"<stream:stream xmlns='{ns.CLIENT}' xmlns:stream='{ns.STREAM}'>".encode()
_XML_LANG = f"{{{ns.XML}}}lang"
_WS = b" \t\r\n"
# The last tag of a message and nothing but whitespace after it. "<" occurs
# in no attribute value and no text, so the last "<" opens the last tag;
# quoted values may hold ">".
_LAST_TAG = re.compile(rb"""<(?:[^'">]|'[^']*'|"[^"]*")*>[ \t\r\n]*\Z""")
CLOSE_GRACE = 5.0


def frame(payload: bytes) -> bytes:
    """An unmasked final text frame (RFC 6455 §5.2) carrying ``payload``."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


def _protocols(request: web.BaseRequest) -> list[str]:
    return [p.strip() for value in request.headers.getall("Sec-WebSocket-Protocol", ())
            for p in value.split(",")]


async def serve_websocket(server: Server, cfg: HttpConfig, request: web.Request,
                          client: Client, tls_url: str | None = None) -> web.StreamResponse:
    """The handler of ``websocket_path``: upgrade, then carry one stream.
    ``tls_url``: where a client that must encrypt is sent (see-other-uri)."""
    if "xmpp" not in _protocols(request):
        return web.Response(status=400, text="the xmpp WebSocket subprotocol is required "
                                             "(Sec-WebSocket-Protocol: xmpp, RFC 7395 §3.3.1)\n")
    max_stanza = server.config.client.max_stanza_size
    ws = web.WebSocketResponse(protocols=("xmpp",), heartbeat=cfg.websocket_ping or None,
                               compress=False, decode_text=False,
                               # Past max_stanza_size the parser answers with a
                               # stream error; far past it aiohttp closes (1009).
                               max_msg_size=2 * max_stanza + 4096)
    if not ws.can_prepare(request).ok:
        return web.Response(status=400, text="expected a WebSocket upgrade (RFC 6455)\n")
    await ws.prepare(request)
    stream = WebSocketStream(server, ws, request, client)
    stream.tls_url = tls_url
    await server.carry(stream)
    return ws


class _Framing(Framing):
    """The WebSocket side of :class:`WebSocketStream`."""

    def __init__(self, server: Server, ws: web.WebSocketResponse, request: web.Request,
                 client: Client) -> None:
        cfg = server.config.client
        super().__init__(client.peer, client.secure)
        self.ws = ws
        self.transport = request.transport
        self._sealed = False            # our <close/> is written: nothing may follow
        self.parser = StreamParser(max_stanza_size=cfg.max_stanza_size)
        self.parser.feed(_PROLOGUE)
        self._limiter = (RateLimiter(cfg.rate_limit, cfg.rate_burst, self.loop.time())
                         if cfg.rate_limit else None)
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._closer: asyncio.Task[Any] | None = None
        self.tls_url: str | None = None   # where to send a client that must encrypt

    # -- writing -------------------------------------------------------
    def write(self, data: bytes) -> None:
        transport = self.transport
        if not data or self._sealed or transport is None or transport.is_closing():
            return
        self._out.append(frame(qualify(data)))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        if not self._out:
            return
        data = b"".join(self._out)
        self._out.clear()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(data)
        if transport.get_write_buffer_size() > MAX_UNSENT and not self.closing:
            log.warning("%s does not read what it is sent; closing", self.peer)
            self.close(StreamError("policy-violation", "too much unread data"))

    # -- closing -------------------------------------------------------
    def close(self, error: StreamError | None = None, *, wait_for_peer: bool = False) -> None:
        """Send ``error`` (if any) and ``<close/>`` (RFC 7395 §3.6); then,
        unless waiting for the client's ``<close/>``, close the WebSocket."""
        if self.closing:
            return
        self.closing = True
        if not self.header_sent:
            self.write(self.header())        # RFC 6120 §4.9.1.1, as over TCP
            self.header_sent = True
        if error is not None and error.condition == "see-other-host" and self.tls_url:
            # RFC 7395 §3.6.1: the redirect is an attribute of <close/>.
            self.error = error
            log.info("sending the WebSocket from %s to %s", self.peer, self.tls_url)
            self.write(f"<close xmlns='{ns.FRAMING}' "
                       f"see-other-uri='{escape_attr(self.tls_url)}'/>".encode())
        else:
            if error is not None:
                self.error = error
                log.info("closing WebSocket stream from %s: %s", self.peer, error)
                self.write(error.to_bytes())
            self.write(_CLOSE_BYTES)
        # RFC 7395 §3.6: nothing after <close/>. While the WebSocket stays
        # open for the client's own <close/> (wait_for_peer) stanzas still
        # routed to the session (a contact's unavailable presence) are dropped.
        self._sealed = True
        self.flush()
        if not wait_for_peer:
            self._close_socket()

    def _close_socket(self) -> None:
        if self._closer is None and not self.ws.closed:
            # Ends the read loop too: receive() then gets CLOSING.
            self._closer = asyncio.ensure_future(self.ws.close())

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class WebSocketStream(C2S, _Framing):
    """One client stream over one WebSocket."""

    kind = "websocket"
    features = (Auth, Bind)         # no STARTTLS: TLS is HTTP's

    def __init__(self, server: Server, ws: web.WebSocketResponse, request: web.Request,
                 client: Client) -> None:
        _Framing.__init__(self, server, ws, request, client)
        self.setup(server)

    def header(self) -> bytes:
        return f"<open xmlns='{ns.FRAMING}' {self.header_attrs()}/>".encode()

    async def _release(self) -> None:
        self.flush()
        self._close_socket()
        if self._closer is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._closer), CLOSE_GRACE)
            except (asyncio.TimeoutError, ConnectionError, OSError):
                self.abort()

    async def _read_loop(self) -> None:
        pause = 0.0
        while not self.closing:
            if pause:
                await asyncio.sleep(pause)
                if self.closing:
                    return
            msg = await self.ws.receive()
            if msg.type == WSMsgType.TEXT:
                data: bytes = msg.data
            elif msg.type == WSMsgType.BINARY:
                self.close(StreamError("bad-format", "XMPP goes in text messages, not binary "
                                                     "(RFC 7395 §3.2)"))
                return
            else:                       # CLOSE, CLOSING, CLOSED, ERROR
                if msg.type == WSMsgType.ERROR:
                    log.info("WebSocket from %s failed: %s", self.peer, msg.data)
                return
            if self._limiter is not None:
                pause = self._limiter.delay(len(data), self.loop.time())
            try:
                await self._message(data)
            except StreamError as exc:
                self.close(exc)
                return

    async def _message(self, data: bytes) -> None:
        """One WebSocket message: one complete element (RFC 7395 §3.3.3)."""
        if not data.strip(_WS):
            return                      # nothing (a keepalive some clients send)
        events = self.parser.feed(data)
        # Text after the element stays in libxml2 until the next "<" (the
        # next message would be blamed for it): it is looked for here.
        if (len(events) != 1 or not self.parser.idle or isinstance(events[0], StreamClosed)
                or not _LAST_TAG.match(data, data.rfind(b"<"))):
            raise StreamError("bad-format", "a WebSocket message must hold exactly one "
                                            "complete element (RFC 7395 §3.3.3)")
        el = events[0]
        assert not isinstance(el, StreamOpened)
        if el.tag == _OPEN:
            if not self.secure and self.cfg.tls == "required":
                if self.tls_url:
                    raise StreamError("see-other-host", "encryption is required")
                raise StreamError("policy-violation", "encryption is required: connect with "
                                                      "wss:// (https)")
            await self.handle(StreamOpened(
                attrs={("xml:lang" if k == _XML_LANG else str(k)): str(v)
                       for k, v in el.attrib.items()},
                namespace=ns.CLIENT, stream_ns=ns.STREAM, local_name="stream"))
        elif el.tag == _CLOSE:
            self.peer_closed = True
            self.close()
        else:
            await self.handle(el)
