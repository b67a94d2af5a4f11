"""The ``[http]`` listener on aiohttp: WebSocket, BOSH, XEP-0156 host-meta,
and static files (the built-in page, or ``web_root``).

Who the client is: the socket's peer, unless that peer is one of
``trusted_proxies``, whose ``X-Forwarded-For`` names it (the rightmost hop
that is not itself a trusted proxy). A session counts as encrypted when it
came over TLS (``tls_port``), through a trusted proxy that says
``X-Forwarded-Proto: https``, from a loopback client, or always with
``consider_secure``.

Browsers: a request carrying an ``Origin`` is served when that origin is this
server's own (the page it served) or listed in ``cors_origins`` (``"*"``: any);
others get 403. host-meta is readable from any origin (XEP-0156 §3.2.3).
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .. import tls
from ..errors import StartupError
from ..xml import escape_attr
from .boshnode import Bosh
from .peer import Client
from .websocket import serve_websocket

if TYPE_CHECKING:
    from ..config import HttpConfig
    from ..server import Server

log = logging.getLogger("vinespy.http")

STATIC = Path(__file__).parent / "static"       # the built-in page
SHUTDOWN_GRACE = 5.0
_XRD = "http://docs.oasis-open.org/ns/xri/xrd-1.0"
_WS_REL = "urn:xmpp:alt-connections:websocket"
_BOSH_REL = "urn:xmpp:alt-connections:xbosh"
# The built-in page talks to this server only.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; "
                               "img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class HttpListener:
    """One node's HTTP listener(s): plain and TLS, one aiohttp application."""

    def __init__(self, server: Server, cfg: HttpConfig) -> None:
        self.server = server
        self.cfg = cfg
        self.bosh = Bosh(server, cfg)
        self.bosh.tls_url = self.tls_url
        self.stopping = False
        self._runner: web.AppRunner | None = None
        self._proxies = cfg.trusted_proxies
        self._root = cfg.web_root.resolve() if cfg.web_root is not None else STATIC.resolve()
        max_body = 2 * server.config.client.max_stanza_size + 4096
        app = web.Application(client_max_size=max_body, handler_args={"max_field_size": 16384})
        if cfg.websocket_path:
            app.router.add_get(cfg.websocket_path, self._websocket)
        if cfg.bosh_path:
            app.router.add_route("*", cfg.bosh_path, self._bosh)
        app.router.add_get("/.well-known/host-meta", self._host_meta)
        app.router.add_get("/.well-known/host-meta.json", self._host_meta_json)
        app.router.add_get("/{path:.*}", self._static)
        self.app = app

    # -- lifecycle -------------------------------------------------------
    async def start(self) -> None:
        """Listen on ``port`` and ``tls_port``; the ports bound go to
        ``server.ports`` as ``http`` and ``https``."""
        cfg = self.cfg
        # shutdown_timeout belongs to the runner (on a site it is deprecated
        # since aiohttp 3.9 and warns).
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                                     shutdown_timeout=SHUTDOWN_GRACE)
        await self._runner.setup()
        reuse = self.server.config.client.reuse_port or None
        specs: list[tuple[str, int, Any]] = []
        if cfg.port:
            specs.append(("http", cfg.port, None))
        if cfg.tls_port:
            specs.append(("https", cfg.tls_port,
                          tls.sni_context(self.server.tls, next(iter(self.server.hosts)))))
        for name, port, ctx in specs:
            site = web.TCPSite(self._runner, cfg.address, port, ssl_context=ctx,
                               reuse_address=True, reuse_port=reuse)
            try:
                await site.start()
            except OSError as exc:
                await self._runner.cleanup()
                raise StartupError(f"cannot listen on {cfg.address}:{port} (http): "
                                   f"{exc.strerror or exc}") from None
            sockets = getattr(site._server, "sockets", None) or ()
            self.server.ports[name] = sockets[0].getsockname()[1] if sockets else port

    @property
    def stopping(self) -> bool:
        """Shutting down: no new WebSocket or BOSH session (BOSH requests of
        existing ones still get their answer, their terminate body)."""
        return self.bosh.stopping

    @stopping.setter
    def stopping(self, value: bool) -> None:
        self.bosh.stopping = value

    async def stop(self) -> None:
        """After the streams were closed: end BOSH sessions, stop listening,
        drop what is left."""
        self.stopping = True
        self.bosh.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- who is asking ----------------------------------------------------
    def client(self, request: web.BaseRequest) -> Client:
        transport = request.transport
        peername = transport.get_extra_info("peername") if transport is not None else None
        ip, port = (str(peername[0]), int(peername[1])) if peername else ("", 0)
        https = transport is not None and transport.get_extra_info("sslcontext") is not None
        local = _is_loopback(ip)
        if self._trusted(ip):
            # The client is the rightmost hop no trusted proxy added; with
            # none usable it is unknown (never the proxy itself: behind a
            # proxy on loopback everyone would count as local, and share one
            # login-throttle bucket).
            hops = [h.strip() for v in request.headers.getall("X-Forwarded-For", ())
                    for h in v.split(",") if h.strip()]
            ip, port, local = "", 0, False
            for hop in reversed(hops):
                addr = _hop_address(hop)
                if addr is None:
                    break
                ip = addr
                if not self._trusted(addr):
                    local = _is_loopback(addr)
                    break
            # The nearest proxy's word: the last value it set or appended.
            protos = [p.strip().lower() for v in request.headers.getall("X-Forwarded-Proto", ())
                      for p in v.split(",") if p.strip()]
            if protos and protos[-1] in ("https", "http"):
                https = protos[-1] == "https"
        secure = https or self.cfg.consider_secure or local
        scheme = "https" if https else "http"
        host = request.host.lower()
        return Client((ip, port), secure, scheme, f"{scheme}://{host}", host)

    def tls_url(self, client: Client, path: str, websocket: bool = False) -> str | None:
        """Where a client that is not encrypted should go instead (RFC 7395
        §3.6.1 see-other-uri, XEP-0124 §17.2): this host on ``tls_port``;
        None without one."""
        if not self.cfg.tls_port:
            return None
        name = client.host
        if name.startswith("[") and "]" in name:
            name = name[:name.index("]") + 1]           # [v6]:port
        elif name.count(":") == 1:
            name = name.partition(":")[0]               # name:port
        port = "" if self.cfg.tls_port == 443 else f":{self.cfg.tls_port}"
        return f"{'wss' if websocket else 'https'}://{name}{port}{path}"

    def _trusted(self, ip: str) -> bool:
        if not self._proxies or not ip:
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self._proxies)

    def _cors(self, request: web.BaseRequest, client: Client) -> dict[str, str] | None:
        """CORS headers for a browser's request; None: its origin is refused."""
        origin = request.headers.get("Origin")
        if origin is None:
            return {}                       # not a browser's cross-site request
        low = origin.lower()
        if low == client.origin:
            return {}
        if "*" in self.cfg.cors_origins or low in self.cfg.cors_origins:
            return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        return None

    # -- handlers ----------------------------------------------------------
    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if self.stopping:
            return _text(503, "the server is stopping")
        client = self.client(request)
        if self._cors(request, client) is None:
            return _text(403, f"origin {request.headers.get('Origin')} is not allowed "
                              "(http.cors_origins)")
        return await serve_websocket(self.server, self.cfg, request, client,
                                     self.tls_url(client, request.path, websocket=True))

    async def _bosh(self, request: web.Request) -> web.StreamResponse:
        client = self.client(request)
        cors = self._cors(request, client)
        if cors is None:
            return _text(403, f"origin {request.headers.get('Origin')} is not allowed "
                              "(http.cors_origins)")
        if request.method == "OPTIONS":         # a CORS preflight
            return web.Response(status=204, headers={
                **cors, "Access-Control-Allow-Methods": "POST, OPTIONS",
                "Access-Control-Allow-Headers": "Content-Type",
                "Access-Control-Max-Age": "86400"})
        if request.method == "GET":
            return _text(200, "BOSH (XEP-0124/0206) is served here: POST a <body/> to this URL.",
                         cors)
        if request.method != "POST":
            return _text(405, "POST a BOSH <body/>", {**cors, "Allow": "GET, POST, OPTIONS"})
        body = await request.read()
        status, out = await self.bosh.request(body, client)
        return web.Response(status=status, body=out, headers={
            **cors, "Content-Type": "text/xml; charset=utf-8", "Cache-Control": "no-store"})

    def _links(self, request: web.BaseRequest) -> list[tuple[str, str]]:
        client = self.client(request)
        host = request.host
        links = []
        # A client that could not log in over plain HTTP is shown tls_port.
        plain_refused = not client.secure and self.server.config.client.tls == "required"
        if self.cfg.websocket_path:
            path = self.cfg.websocket_path
            url = self.tls_url(client, path, websocket=True) if plain_refused else None
            ws = "wss" if client.scheme == "https" else "ws"
            links.append((_WS_REL, url or f"{ws}://{host}{path}"))
        if self.cfg.bosh_path:
            path = self.cfg.bosh_path
            url = self.tls_url(client, path) if plain_refused else None
            links.append((_BOSH_REL, url or f"{client.scheme}://{host}{path}"))
        return links

    async def _host_meta(self, request: web.Request) -> web.StreamResponse:
        """XEP-0156 §3: the connection methods, as XRD."""
        links = "".join(f"\n  <Link rel='{rel}' href='{escape_attr(href)}'/>"
                        for rel, href in self._links(request))
        body = f"<?xml version='1.0' encoding='utf-8'?>\n<XRD xmlns='{_XRD}'>{links}\n</XRD>\n"
        return web.Response(text=body, content_type="application/xrd+xml",
                            headers={"Access-Control-Allow-Origin": "*"})

    async def _host_meta_json(self, request: web.Request) -> web.StreamResponse:
        """XEP-0156 §3: the same, as JRD."""
        body = json.dumps({"links": [{"rel": rel, "href": href}
                                     for rel, href in self._links(request)]}, indent=2)
        return web.Response(text=body, content_type="application/json",
                            headers={"Access-Control-Allow-Origin": "*"})

    async def _static(self, request: web.Request) -> web.StreamResponse:
        """A file under the web root; ``/`` and directories: their index.html.
        Nothing outside the root, no hidden files."""
        rel = request.match_info["path"]
        parts = [p for p in rel.split("/") if p]
        if any(p.startswith(".") or "\\" in p or "\0" in p for p in parts):
            return _text(404, "not found")
        path = self._root.joinpath(*parts)
        try:
            if path.is_dir():
                path = path / "index.html"
            resolved = path.resolve()
            if not resolved.is_relative_to(self._root) or not resolved.is_file():
                return _text(404, "not found")
        except (OSError, ValueError):
            return _text(404, "not found")
        headers = dict(_PAGE_HEADERS) if self.cfg.web_root is None else {}
        headers["Cache-Control"] = "no-cache"
        return web.FileResponse(resolved, headers=headers)


def _text(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=text + "\n", headers=headers)


def _hop_address(hop: str) -> str | None:
    """The IP address of an X-Forwarded-For hop (``1.2.3.4``, ``1.2.3.4:port``,
    ``2001:db8::1``, ``[2001:db8::1]:port``); None for anything else
    (``unknown``, an obfuscated name)."""
    text = hop
    if text.startswith("["):
        text = text[1:text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096)
def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False
