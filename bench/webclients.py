"""Raw, cheap web clients for ``bench/web.py``: XMPP over WebSocket (RFC 7395)
and BOSH (XEP-0124/0206) sessions, on asyncio protocols, no HTTP library.

* :class:`WsConn` is ``bench/load.py``'s ``Conn`` with RFC 6455 framing: the
  HTTP upgrade (``Sec-WebSocket-Protocol: xmpp``), one masked text frame per
  stanza written (a random key per frame, XORed as one big integer), the
  server's frames decoded from the bytes received, pings answered. Its login
  steps are ``Conn``'s, with ``<open/>`` for the stream header.
* :class:`HttpConn` is one HTTP/1.1 keep-alive connection carrying one
  request at a time, the response read by ``Content-Length``.
* :class:`BoshSession` logs in over up to two of them (``requests='2'``):
  creation (``wait='60' hold='1'``), SCRAM-SHA-1, ``xmpp:restart``, bind,
  ``<presence/>``, then keeps one empty request held, and checks the chat
  bodies (``"<sender> <seq> <perf_counter_ns>"``) of every response for
  order and latency (:class:`BoshStats`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
import struct
import time

import load

DOMAIN = load.DOMAIN
HOST = load.HOST
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
HTTPBIND = "http://jabber.org/protocol/httpbind"
XBOSH = "urn:xmpp:xbosh"
FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
WS_PATH = "/xmpp-websocket"
BOSH_PATH = "/http-bind"
_OPEN = f"<open xmlns='{FRAMING}' to='{DOMAIN}' version='1.0'/>".encode()
_CLOSE = f"<close xmlns='{FRAMING}'/>".encode()
_SID = re.compile(rb"""sid=['"]([^'"]+)['"]""")
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_TERMINATE = re.compile(rb"""type=['"]terminate['"]""")


# ------------------------------------------------------------- WebSocket -----

def ws_frame(payload: bytes) -> bytes:
    """A final, masked text frame (RFC 6455 §5.2, §5.3) carrying ``payload``."""
    n = len(payload)
    if n < 126:
        head = bytes((0x81, 0x80 | n))
    elif n < 65536:
        head = struct.pack("!BBH", 0x81, 0xFE, n)
    else:
        head = struct.pack("!BBQ", 0x81, 0xFF, n)
    key = secrets.token_bytes(4)
    # XOR with the key repeated, as one big-integer operation (C speed).
    masked = (int.from_bytes(payload, "little")
              ^ int.from_bytes((key * ((n >> 2) + 1))[:n], "little")).to_bytes(n, "little")
    return head + key + masked


def _control(opcode: int, payload: bytes = b"") -> bytes:
    return bytes((0x80 | opcode, 0x80 | len(payload))) + b"\0\0\0\0" + payload


class WsConn(load.Conn):
    """``load.Conn`` over RFC 7395: the upgrade, then one text frame per
    stanza written; received frames are decoded and their payloads go where
    a TCP connection's bytes would (the login steps, then ``Pair.data``)."""

    def __init__(self) -> None:
        super().__init__()
        self.raw = bytearray()
        self.upgraded: asyncio.Future[None] | None = None

    async def upgrade(self, port: int) -> None:
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        self.upgraded = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(
            f"GET {WS_PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: xmpp\r\n\r\n".encode())
        await asyncio.wait_for(self.upgraded, load.TIMEOUT)

    def data_received(self, data: bytes) -> None:
        raw = self.raw
        raw += data
        if self.upgraded is not None and not self.upgraded.done():
            end = raw.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(raw[:end])
            del raw[:end + 4]
            if not head.startswith(b"HTTP/1.1 101") or b"xmpp" not in head.lower():
                self.upgraded.set_exception(load.XmppError(f"no WebSocket upgrade: {head!r}"))
                return
            self.upgraded.set_result(None)
        payloads = []
        i, n = 0, len(raw)
        while n - i >= 2:
            b0, b1 = raw[i], raw[i + 1] & 0x7F
            start = i + 2
            if b1 == 126:
                if n - i < 4:
                    break
                b1, start = (raw[i + 2] << 8) | raw[i + 3], i + 4
            elif b1 == 127:
                if n - i < 10:
                    break
                b1, start = int.from_bytes(raw[i + 2:i + 10], "big"), i + 10
            end = start + b1
            if end > n:
                break
            opcode = b0 & 0x0F
            if opcode in (0, 1, 2):
                payloads.append(bytes(raw[start:end]))
            elif opcode == 9 and self.transport is not None:        # ping -> pong
                self.transport.write(_control(0xA, bytes(raw[start:end])))
            elif opcode == 8 and self.transport is not None:        # close
                self.transport.close()
            i = end
        del raw[:i]
        if payloads:
            super().data_received(b"".join(payloads))

    def write(self, data: bytes) -> None:
        """One frame per stanza (``load.Pair.make`` may join several)."""
        assert self.transport is not None
        if data.count(b"<message") > 1:
            parts = [p + b"</message>" for p in data.split(b"</message>") if p]
            self.transport.write(b"".join(ws_frame(p) for p in parts))
        else:
            self.transport.write(ws_frame(data))

    async def _features(self) -> bytes:
        self.write(_OPEN)
        tok, out = await self.until(load._FEATURES, b"<close", b"<stream:error")
        if tok != load._FEATURES:
            raise load.XmppError(f"stream error: {out[-300:]!r}")
        return out

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            try:
                self.transport.write(ws_frame(_CLOSE) + _control(8, b"\x03\xe8"))
            except Exception:
                pass
            self.transport.close()
        self.closed = True
        self.close_reason = "closed by the generator"


class HttpConn(asyncio.Protocol):
    """One raw HTTP/1.1 keep-alive connection, one request at a time."""

    def __init__(self, head: bytes) -> None:
        self.head = head                # request line and headers up to Content-Length
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False
        self._end = -1                  # where the response being read ends
        self._body = 0                  # where its body starts
        self._status = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"HTTP connection closed ({exc!r})"))

    @property
    def busy(self) -> bool:
        return self.waiter is not None

    def request(self, body: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None and self.waiter is None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(b"%s%d\r\n\r\n%s" % (self.head, len(body), body))
        return self.waiter

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if self._end < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end])
            m = _CONTENT_LENGTH.search(head)
            self._status = int(head[9:12])
            self._body = end + 4
            self._end = self._body + (int(m.group(1)) if m else 0)
        if len(buf) < self._end:
            return
        body = bytes(buf[self._body:self._end])
        del buf[:self._end]
        self._end = -1
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((self._status, body))


class BoshSession:
    """One BOSH session: login, then one empty request held at all times."""

    def __init__(self, port: int, user: str, password: str, stats: BoshStats) -> None:
        self.port = port
        self.user = user
        self.password = password
        self.stats = stats
        self.head = (f"POST {BOSH_PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
                     "Content-Type: text/xml; charset=utf-8\r\nContent-Length: ").encode()
        self.conns: list[HttpConn] = []
        self.rid = secrets.randbelow(1 << 40) + 1
        self.sid = b""
        self.last_seq = 0
        self.error = ""
        self.task: asyncio.Task[None] | None = None

    async def _conn(self) -> HttpConn:
        self.conns = [c for c in self.conns if not c.closed]
        for c in self.conns:
            if not c.busy:
                return c
        if len(self.conns) >= 2:
            raise load.XmppError("more than 2 requests at once (requests='2')")
        _, c = await asyncio.get_running_loop().create_connection(
            lambda: HttpConn(self.head), HOST, self.port)
        self.conns.append(c)
        return c

    async def post(self, inner: bytes = b"", attrs: bytes = b"", timeout: float = 90.0) -> bytes:
        rid = self.rid
        self.rid += 1
        body = b"<body xmlns='%s' rid='%d' sid='%s'%s>%s</body>" % (
            HTTPBIND.encode(), rid, self.sid, attrs, inner)
        return await self._send(body, timeout)

    async def _send(self, body: bytes, timeout: float) -> bytes:
        c = await self._conn()
        fut = c.request(body)
        timer = asyncio.get_running_loop().call_later(timeout, _expire, fut)
        try:
            status, out = await fut
        finally:
            timer.cancel()
        self.stats.requests += 1
        if status != 200:
            raise load.XmppError(f"HTTP {status}: {out[:300]!r}")
        if _TERMINATE.search(out):
            raise load.XmppError(f"session terminated: {out[:600]!r}")
        return out

    async def login(self) -> None:
        rid = self.rid
        self.rid += 1
        out = await self._send(
            f"<body xmlns='{HTTPBIND}' xmlns:xmpp='{XBOSH}' content='text/xml; charset=utf-8' "
            f"hold='1' rid='{rid}' to='{DOMAIN}' ver='1.6' wait='60' xml:lang='en' "
            "xmpp:version='1.0'/>".encode(), load.TIMEOUT)
        m = _SID.search(out)
        if m is None or load._FEATURES not in out:
            raise load.XmppError(f"no session: {out[:300]!r}")
        self.sid = m.group(1)
        nonce = base64.b64encode(secrets.token_bytes(18))
        bare = b"n=" + self.user.encode() + b",r=" + nonce
        out = await self.post(f"<auth xmlns='{SASL}' mechanism='SCRAM-SHA-1'>".encode()
                              + base64.b64encode(b"n,," + bare) + b"</auth>")
        m = load._CHALLENGE_RE.search(out)
        if m is None:
            raise load.XmppError(f"no SCRAM challenge: {out[:300]!r}")
        server_first = base64.b64decode(m.group(1))
        attrs = load._parse_attrs(server_first)
        client_key, stored_key = load.scram_keys(self.password, base64.b64decode(attrs["s"]),
                                                 int(attrs["i"]))
        without_proof = b"c=biws,r=" + attrs["r"]
        message = bare + b"," + server_first + b"," + without_proof
        signature = hmac.new(stored_key, message, hashlib.sha1).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        out = await self.post(f"<response xmlns='{SASL}'>".encode() + base64.b64encode(
            without_proof + b",p=" + base64.b64encode(proof)) + b"</response>")
        if b"<success" not in out:
            raise load.XmppError(f"SASL failed: {out[:300]!r}")
        out = await self.post(attrs=f" xmlns:xmpp='{XBOSH}' xmpp:restart='true' to='{DOMAIN}' "
                                    "xml:lang='en'".encode())
        if load._FEATURES not in out:
            raise load.XmppError(f"no features after the restart: {out[:300]!r}")
        out = await self.post(b"<iq xmlns='jabber:client' type='set' id='bind1'><bind xmlns="
                              b"'urn:ietf:params:xml:ns:xmpp-bind'><resource>b</resource>"
                              b"</bind></iq>")
        if b"</jid>" not in out:
            raise load.XmppError(f"bind failed: {out[:300]!r}")
        # <presence/> is held (hold=1) until the next request comes: the poll.
        presence = asyncio.ensure_future(self.post(b"<presence xmlns='jabber:client'/>"))
        await asyncio.sleep(0)
        self.task = asyncio.ensure_future(self._poll(presence))

    async def _poll(self, first: asyncio.Future[bytes]) -> None:
        try:
            self.got(await first)
            while True:
                self.got(await self.post())
        except asyncio.CancelledError:
            raise
        except Exception as exc:                    # noqa: BLE001 - counted, reported
            self.error = str(exc) or repr(exc)
            self.stats.errors.append(f"{self.user}: {self.error}")

    def got(self, body: bytes) -> None:
        self.stats.responses += 1
        if b"</message>" not in body:
            return
        now = time.perf_counter_ns()
        found = load._BODY_RE.findall(body)
        st = self.stats
        for _, seq_b, ts in found:
            seq = int(seq_b)
            if seq <= self.last_seq:
                st.ooo += 1
            else:
                self.last_seq = seq
            if int(ts) >= st.measure_from:
                st.latencies.append(now - int(ts))
        st.received += len(found)
        st.with_messages += 1

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        for c in self.conns:
            if c.transport is not None:
                c.transport.abort()


def _expire(fut: asyncio.Future[tuple[int, bytes]]) -> None:
    if not fut.done():
        fut.set_exception(load.XmppError("no HTTP response in time"))


class BoshStats:
    """What every BOSH session of a run adds to."""

    def __init__(self) -> None:
        self.requests = 0               # HTTP requests answered
        self.responses = 0              # of which carried to got()
        self.with_messages = 0          # responses carrying at least one message
        self.received = 0
        self.ooo = 0
        self.latencies: list[int] = []
        self.measure_from = 1 << 62     # perf_counter_ns of the first measured message
        self.errors: list[str] = []
