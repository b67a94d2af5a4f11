"""A byte-level XMPP client for tests that must send what no library would."""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import ssl

from vinespy import ns

TIMEOUT = 10.0


class Raw:
    """One TCP (optionally TLS) connection; ``expect`` reads until a regex matches."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buf = b""

    @classmethod
    async def connect(cls, port: int, ssl_ctx: ssl.SSLContext | None = None,
                      server_hostname: str | None = None, *, rcvbuf: int = 0,
                      source: str | None = None, host: str = "127.0.0.1") -> Raw:
        """Connect to ``host``:``port``; ``rcvbuf`` shrinks this side's socket
        receive buffer (a peer that reads slowly), ``source`` picks the local
        address (127.0.0.2... are loopback too: another client address)."""
        sock = socket.socket()
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source:
            sock.bind((source, 0))
        sock.setblocking(False)
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(
            sock, (host, port)), TIMEOUT)
        r, w = await asyncio.wait_for(asyncio.open_connection(
            sock=sock, ssl=ssl_ctx, server_hostname=server_hostname), TIMEOUT)
        return cls(r, w)

    def send(self, data: bytes | str) -> None:
        self.writer.write(data.encode() if isinstance(data, str) else data)

    async def expect(self, pattern: bytes, timeout: float = TIMEOUT) -> re.Match[bytes]:
        """Read until ``pattern`` matches; consume the buffer up to the match."""
        rx = re.compile(pattern, re.S)

        async def loop() -> re.Match[bytes]:
            while True:
                m = rx.search(self.buf)
                if m:
                    self.buf = self.buf[m.end():]
                    return m
                data = await self.reader.read(65536)
                if not data:
                    raise EOFError(f"closed before {pattern!r}; got {self.buf[-300:]!r}")
                self.buf += data
        return await asyncio.wait_for(loop(), timeout)

    async def until_closed(self, timeout: float = TIMEOUT) -> bytes:
        """Everything the server sends until it closes the connection."""
        async def loop() -> bytes:
            while True:
                try:
                    data = await self.reader.read(65536)
                except (ConnectionError, ssl.SSLError):
                    data = b""
                if not data:
                    return self.buf
                self.buf += data
        return await asyncio.wait_for(loop(), timeout)

    def open_stream(self, domain: str) -> None:
        self.send(f"<?xml version='1.0'?><stream:stream xmlns='{ns.CLIENT}' "
                  f"xmlns:stream='{ns.STREAM}' to='{domain}' version='1.0'>")

    async def features(self) -> bytes:
        return (await self.expect(rb"<stream:features>.*?</stream:features>")).group(0)

    async def starttls(self, ctx: ssl.SSLContext, domain: str) -> None:
        self.send(f"<starttls xmlns='{ns.TLS}'/>")
        await self.expect(rb"<proceed")
        await self.writer.start_tls(ctx, server_hostname=domain)
        self.buf = b""

    async def secure(self, domain: str, ctx: ssl.SSLContext) -> bytes:
        """Open a stream, STARTTLS, open the new one: its features."""
        self.open_stream(domain)
        await self.features()
        await self.starttls(ctx, domain)
        self.open_stream(domain)
        return await self.features()

    async def plain(self, user: str, password: str) -> bytes:
        blob = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        self.send(f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>{blob}</auth>")
        return (await self.expect(rb"<(success|failure)[^>]*?(/>|>.*?</\1>)")).group(0)

    async def login(self, domain: str, ctx: ssl.SSLContext, user: str, password: str,
                    resource: str = "raw") -> str:
        """STARTTLS + PLAIN + bind; return the bound full JID."""
        await self.secure(domain, ctx)
        result = await self.plain(user, password)
        assert result.startswith(b"<success"), result
        self.open_stream(domain)
        await self.features()
        self.send(f"<iq type='set' id='b1'><bind xmlns='{ns.BIND}'>"
                  f"<resource>{resource}</resource></bind></iq>")
        m = await self.expect(rb"<jid>([^<]+)</jid>")
        return m.group(1).decode()

    def close(self) -> None:
        self.writer.close()
