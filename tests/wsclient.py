"""A raw XMPP-over-WebSocket client (RFC 7395) for tests, on aiohttp's client:
every message it reads is parsed on its own, as a browser's client would."""

from __future__ import annotations

import asyncio
import base64
import ssl
from typing import Any

import aiohttp
import scramp
from lxml import etree

from vinespy import ns

TIMEOUT = 10.0
FRAMING = ns.FRAMING
SM = "urn:xmpp:sm:3"


def tag(local: str, namespace: str = ns.CLIENT) -> str:
    return f"{{{namespace}}}{local}"


class Closed(Exception):
    """The WebSocket closed before what was expected arrived."""


class Ping(Exception):
    """The server pinged (with ``autoping=False``)."""


class WS:
    """One WebSocket; :meth:`next` reads and parses one message."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.http = http
        self.ws = ws
        self.texts: list[str] = []          # every text message received, in order

    @classmethod
    async def connect(cls, url: str, *, ssl_ctx: ssl.SSLContext | None = None,
                      headers: dict[str, str] | None = None,
                      server_hostname: str | None = None, autoping: bool = True) -> WS:
        """``autoping=False``: the server's pings are :meth:`next`'s to see
        (as :class:`Ping`), and nobody answers them unless the test does."""
        http = aiohttp.ClientSession()
        kw: dict[str, Any] = {"protocols": ("xmpp",), "headers": headers or {},
                              "autoping": autoping}
        if ssl_ctx is not None:
            kw["ssl"] = ssl_ctx
            kw["server_hostname"] = server_hostname
        try:
            ws = await asyncio.wait_for(http.ws_connect(url, **kw), TIMEOUT)
        except BaseException:
            await http.close()
            raise
        assert ws.protocol == "xmpp"
        return cls(http, ws)

    async def send(self, text: str) -> None:
        await self.ws.send_str(text)

    async def recv_text(self, timeout: float = TIMEOUT) -> str:
        msg = await asyncio.wait_for(self.ws.receive(), timeout)
        if msg.type == aiohttp.WSMsgType.PING:
            raise Ping(msg.data)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise Closed(f"{msg.type.name} ({self.ws.close_code}) after {self.texts[-3:]}")
        self.texts.append(msg.data)
        return str(msg.data)

    async def next(self, timeout: float = TIMEOUT) -> etree._Element:
        """The next message, parsed standalone (so its namespaces must be
        declared in it: RFC 7395 §3.3.3)."""
        return etree.fromstring((await self.recv_text(timeout)).encode())

    async def expect(self, want: str, timeout: float = TIMEOUT) -> etree._Element:
        """Skip messages until one whose (Clark) tag is ``want``."""
        async def loop() -> etree._Element:
            while True:
                el = await self.next()
                if el.tag == want:
                    return el
        return await asyncio.wait_for(loop(), timeout)

    async def until_closed(self, timeout: float = TIMEOUT) -> list[etree._Element]:
        """Every message until the WebSocket closes (the close code is in
        :attr:`close_code`)."""
        async def loop() -> list[etree._Element]:
            out = []
            while True:
                msg = await self.ws.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    return out
                self.texts.append(msg.data)
                out.append(etree.fromstring(msg.data.encode()))
        return await asyncio.wait_for(loop(), timeout)

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.ws.close(), TIMEOUT)
        finally:
            await self.http.close()

    # -- the XMPP steps --------------------------------------------------
    async def open(self, domain: str, **attrs: str) -> etree._Element:
        """``<open/>``: the server's ``<open/>``; then its features."""
        extra = "".join(f" {k}='{v}'" for k, v in attrs.items())
        await self.send(f"<open xmlns='{FRAMING}' to='{domain}' version='1.0'{extra}/>")
        opened = await self.next()
        assert opened.tag == tag("open", FRAMING), etree.tostring(opened)
        return opened

    async def features(self) -> etree._Element:
        el = await self.next()
        assert el.tag == tag("features", ns.STREAM), etree.tostring(el)
        return el

    async def plain(self, user: str, password: str) -> etree._Element:
        blob = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        await self.send(f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>{blob}</auth>")
        return await self.next()

    async def scram(self, user: str, password: str,
                    mechanism: str = "SCRAM-SHA-1") -> etree._Element:
        """SCRAM (RFC 5802) through scramp's client; the server's signature
        is checked."""
        c = scramp.ScramClient([mechanism], user, password)
        first = base64.b64encode(c.get_client_first().encode()).decode()
        await self.send(f"<auth xmlns='{ns.SASL}' mechanism='{mechanism}'>{first}</auth>")
        challenge = await self.next()
        assert challenge.tag == tag("challenge", ns.SASL), etree.tostring(challenge)
        c.set_server_first(base64.b64decode(challenge.text or "").decode())
        final = base64.b64encode(c.get_client_final().encode()).decode()
        await self.send(f"<response xmlns='{ns.SASL}'>{final}</response>")
        result = await self.next()
        if result.tag == tag("success", ns.SASL):
            c.set_server_final(base64.b64decode(result.text or "").decode())
        return result

    async def bind(self, resource: str) -> str:
        await self.send(f"<iq xmlns='{ns.CLIENT}' type='set' id='bind'>"
                        f"<bind xmlns='{ns.BIND}'><resource>{resource}</resource></bind></iq>")
        iq = await self.expect(tag("iq"))
        assert iq.get("type") == "result", etree.tostring(iq)
        return str(iq.findtext(f"{{{ns.BIND}}}bind/{{{ns.BIND}}}jid"))

    async def authenticated(self, domain: str, user: str, password: str, *,
                            mechanism: str = "PLAIN") -> etree._Element:
        """Opened, authenticated, opened again: the features after SASL."""
        await self.open(domain)
        await self.features()
        if mechanism == "PLAIN":
            result = await self.plain(user, password)
        else:
            result = await self.scram(user, password, mechanism)
        assert result.tag == tag("success", ns.SASL), etree.tostring(result)
        await self.open(domain)
        return await self.features()

    async def login(self, domain: str, user: str, password: str, resource: str = "ws", *,
                    mechanism: str = "PLAIN") -> str:
        """Authenticated and bound: the full JID."""
        await self.authenticated(domain, user, password, mechanism=mechanism)
        return await self.bind(resource)
