"""A scripted server-to-server peer over real TCP and TLS, for the edge tests.

Not a server: it does what a test tells it, no more, and records what it
gets. :class:`RawServer` is the server of a remote domain that vinespy
connects to (header, STARTTLS with a certificate for a name the test picks,
the right one or not, dialback offered, ``<db:result/>`` and
``<db:verify/>`` answered as told); :func:`connect` is a remote server
connecting to vinespy's s2s port (STARTTLS, ``<db:result/>``, stanzas).
Every read has a timeout; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

import trustme
from lxml import etree

from tests.support import TIMEOUT
from vinespy import ns

DB = "jabber:server:dialback"
DB_RESULT = f"{{{DB}}}result"
DB_VERIFY = f"{{{DB}}}verify"
STREAM_ERROR = f"{{{ns.STREAM}}}error"


@dataclass
class Header:
    """A ``<stream:stream>`` opening tag the other side sent."""
    attrs: dict[str, str]


class Closed(Exception):
    """The other side closed its stream (``</stream:stream>`` or the socket)."""


class XMLConn:
    """One connection read as a series of XMPP stream events: a
    :class:`Header`, then whole top-level elements; :class:`Closed` at the end."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.got: list[etree._Element] = []     # every top-level element, in order
        self._ready: deque[Header | etree._Element] = deque()
        self._reset()

    def _reset(self) -> None:
        self._parser = etree.XMLPullParser(events=("start", "end"))
        self._depth = 0
        self._ended = False

    def send(self, data: str) -> None:
        self.writer.write(data.encode())

    async def next(self, timeout: float = TIMEOUT) -> Header | etree._Element:
        """The next header or element; :class:`Closed` once the stream ends."""
        async with asyncio.timeout(timeout):
            while not self._ready:
                if self._ended:
                    raise Closed("</stream:stream>")
                try:
                    data = await self.reader.read(65536)
                except (ConnectionError, ssl.SSLError) as exc:
                    raise Closed(str(exc)) from None
                if not data:
                    raise Closed("the connection was closed")
                self._feed(data)
        return self._ready.popleft()

    async def element(self, timeout: float = TIMEOUT) -> etree._Element:
        got = await self.next(timeout)
        assert isinstance(got, etree._Element), f"expected an element, got {got}"
        return got

    async def header(self, timeout: float = TIMEOUT) -> Header:
        got = await self.next(timeout)
        assert isinstance(got, Header), f"expected a stream header, got {_text(got)}"
        return got

    async def expect(self, tag: str, timeout: float = TIMEOUT) -> etree._Element:
        el = await self.element(timeout)
        assert el.tag == tag, f"expected {tag}, got {_text(el)}"
        return el

    async def until_closed(self, timeout: float = TIMEOUT) -> list[etree._Element]:
        """Every element until the stream ends."""
        out = []
        while True:
            try:
                got = await self.next(timeout)
            except Closed:
                return out
            if isinstance(got, etree._Element):
                out.append(got)

    def _feed(self, data: bytes) -> None:
        self._parser.feed(data)
        for event, el in self._parser.read_events():
            if event == "start":
                if self._depth == 0:
                    self._ready.append(Header(dict(el.attrib)))
                self._depth += 1
            else:
                self._depth -= 1
                if self._depth == 0:
                    self._ended = True
                elif self._depth == 1:
                    self.got.append(el)
                    self._ready.append(el)
                    el.getparent().remove(el)

    async def starttls(self, ctx: ssl.SSLContext, server_hostname: str | None = None) -> None:
        """Upgrade (the side is the one the connection was made on: a
        server's accepted connection is the TLS server); a new stream follows."""
        await self.writer.start_tls(ctx, server_hostname=server_hostname,
                                    ssl_handshake_timeout=TIMEOUT)
        self._reset()

    def close(self) -> None:
        if not self.writer.is_closing():
            self.send("</stream:stream>")
            self.writer.close()


def _text(el: Any) -> str:
    return etree.tostring(el).decode() if isinstance(el, etree._Element) else repr(el)


def header(frm: str, to: str, stream_id: str | None = None) -> str:
    sid = f" id='{stream_id}'" if stream_id else ""
    return (f"<?xml version='1.0'?><stream:stream xmlns='{ns.SERVER}' "
            f"xmlns:stream='{ns.STREAM}' xmlns:db='{DB}' from='{frm}' to='{to}'{sid} "
            f"version='1.0'>")


def server_context(ca: trustme.CA, name: str) -> ssl.SSLContext:
    """A TLS server context with a certificate for ``name`` from ``ca``."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(ctx)
    return ctx


def client_context(ca: trustme.CA, cert: str | None = None) -> ssl.SSLContext:
    """Trusting ``ca``; presenting a certificate for ``cert`` from it, if given."""
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    if cert is not None:
        ca.issue_cert(cert).configure_cert(ctx)
    return ctx


Answer = Literal["valid", "invalid"]


@dataclass
class Conversation:
    """What :class:`RawServer` saw on one accepted connection."""
    conn: XMLConn
    tls_error: str | None = None             # the handshake failed: why
    after_tls: list[etree._Element] = field(default_factory=list)   # read once encrypted
    results: list[etree._Element] = field(default_factory=list)     # <db:result/> asked
    verifies: list[etree._Element] = field(default_factory=list)    # <db:verify/> asked
    done: asyncio.Event = field(default_factory=asyncio.Event)      # the connection ended


class RawServer:
    """The server of ``domain`` on a free loopback port, as vinespy's peer.

    ``cert_name``: the name on its TLS certificate (``domain`` unless the
    test wants a wrong one), issued by ``ca``; ``result``/``verify``: how it
    answers vinespy's ``<db:result/>`` and ``<db:verify/>``; ``silent``: it
    accepts connections and never sends a byte. Stanzas arrive in
    :attr:`stanzas`.
    """

    def __init__(self, ca: trustme.CA, domain: str, *, cert_name: str | None = None,
                 result: Answer = "valid", verify: Answer = "valid",
                 silent: bool = False) -> None:
        self.domain = domain
        self.ctx = server_context(ca, cert_name or domain)
        self.result = result
        self.verify = verify
        self.silent = silent
        self.conversations: list[Conversation] = []
        self.connected: asyncio.Queue[Conversation] = asyncio.Queue()
        self.stanzas: asyncio.Queue[etree._Element] = asyncio.Queue()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._server is not None
        self._server.close()
        for conv in self.conversations:
            conv.conn.writer.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conv = Conversation(XMLConn(reader, writer))
        self.conversations.append(conv)
        self.connected.put_nowait(conv)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._script(conv)
        except (Closed, TimeoutError, ConnectionError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            conv.done.set()

    async def _script(self, conv: Conversation) -> None:
        conn = conv.conn
        if self.silent:
            await conn.until_closed(timeout=3600)
            return
        opened = await conn.header()
        conn.send(header(self.domain, opened.attrs.get("from", ""), secrets.token_hex(8)))
        conn.send(f"<stream:features><starttls xmlns='{ns.TLS}'><required/></starttls>"
                  f"</stream:features>")
        await conn.expect(f"{{{ns.TLS}}}starttls")
        conn.send(f"<proceed xmlns='{ns.TLS}'/>")
        try:
            await conn.starttls(self.ctx)
        except (ssl.SSLError, OSError) as exc:
            conv.tls_error = str(exc) or type(exc).__name__
            return
        stream_id = secrets.token_hex(8)
        opened = await conn.header()
        conn.send(header(self.domain, opened.attrs.get("from", ""), stream_id))
        conn.send("<stream:features><dialback xmlns='urn:xmpp:features:dialback'><errors/>"
                  "</dialback></stream:features>")
        while True:
            el = await conn.element(timeout=3600)
            conv.after_tls.append(el)
            if el.tag == DB_RESULT:
                conv.results.append(el)
                conn.send(f"<db:result from='{el.get('to')}' to='{el.get('from')}' "
                          f"type='{self.result}'/>")
            elif el.tag == DB_VERIFY:
                conv.verifies.append(el)
                conn.send(f"<db:verify from='{el.get('to')}' to='{el.get('from')}' "
                          f"id='{el.get('id')}' type='{self.verify}'/>")
            else:
                self.stanzas.put_nowait(el)


async def connect(port: int, ca: trustme.CA, frm: str, to: str,
                  client_cert: str | None = None) -> XMLConn:
    """A stream from ``frm`` to vinespy serving ``to`` on ``port``, encrypted
    (STARTTLS, vinespy's certificate checked; ours for ``client_cert`` if
    given), up to its second features."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port),
                                            TIMEOUT)
    conn = XMLConn(reader, writer)
    conn.send(header(frm, to))
    await conn.header()
    features = await conn.expect(f"{{{ns.STREAM}}}features")
    assert features.find(f"{{{ns.TLS}}}starttls") is not None, _text(features)
    conn.send(f"<starttls xmlns='{ns.TLS}'/>")
    await conn.expect(f"{{{ns.TLS}}}proceed")
    await conn.starttls(client_context(ca, client_cert), server_hostname=to)
    conn.send(header(frm, to))
    await conn.header()
    await conn.expect(f"{{{ns.STREAM}}}features")
    return conn


async def dialback(conn: XMLConn, frm: str, to: str, key: str = "0123abcd") -> str:
    """Ask for ``frm`` -> ``to`` with ``key`` (XEP-0220 §2.1.1): the answer's type."""
    conn.send(f"<db:result from='{frm}' to='{to}'>{key}</db:result>")
    answer = await conn.expect(DB_RESULT)
    return answer.get("type", "")


def stream_error(el: etree._Element) -> str:
    """The condition of a ``<stream:error/>``."""
    assert el.tag == STREAM_ERROR, _text(el)
    return next(etree.QName(c).localname for c in el
                if etree.QName(c).localname != "text")
