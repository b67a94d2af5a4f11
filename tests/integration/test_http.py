"""The [http] listener apart from the XMPP streams: XEP-0156 host-meta,
CORS for browsers' WebSocket, static files under web_root."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
import trustme
from lxml import etree

from tests.conftest import DOMAIN, PASSWORD, TIMEOUT
from tests.integration.test_websocket import url, ws_server
from tests.wsclient import WS

pytestmark = pytest.mark.integration

XRD = "http://docs.oasis-open.org/ns/xri/xrd-1.0"
WS_REL = "urn:xmpp:alt-connections:websocket"
BOSH_REL = "urn:xmpp:alt-connections:xbosh"


async def test_host_meta_lists_both_endpoints(tmp_path: Path, ca: trustme.CA) -> None:
    """XEP-0156 §3: XRD and JRD name the WebSocket and BOSH URLs with the
    host the request asked for, readable from any origin."""
    async with ws_server(tmp_path, ca) as srv:
        port = srv.server.ports["http"]
        async with aiohttp.ClientSession() as http:
            async with http.get(url(srv, "/.well-known/host-meta", "http"),
                                headers={"Origin": "https://elsewhere.example"}) as resp:
                assert resp.status == 200
                assert resp.content_type == "application/xrd+xml"
                assert resp.headers["Access-Control-Allow-Origin"] == "*"
                xrd = etree.fromstring(await resp.read())
            async with http.get(url(srv, "/.well-known/host-meta.json", "http")) as resp:
                assert resp.status == 200
                assert resp.content_type == "application/json"
                assert resp.headers["Access-Control-Allow-Origin"] == "*"
                jrd = json.loads(await resp.text())
            async with http.get(url(srv, "/.well-known/host-meta.json", "http"),
                                headers={"Host": f"{DOMAIN}:8443"}) as resp:
                named = {link["rel"]: link["href"] for link in (await resp.json())["links"]}
        assert xrd.tag == f"{{{XRD}}}XRD"
        links = {link.get("rel"): link.get("href") for link in xrd.iter(f"{{{XRD}}}Link")}
        assert links == {WS_REL: f"ws://127.0.0.1:{port}/xmpp-websocket",
                         BOSH_REL: f"http://127.0.0.1:{port}/http-bind"}
        assert {link["rel"]: link["href"] for link in jrd["links"]} == links
        assert named == {WS_REL: f"ws://{DOMAIN}:8443/xmpp-websocket",
                         BOSH_REL: f"http://{DOMAIN}:8443/http-bind"}


async def test_host_meta_follows_the_configured_paths(tmp_path: Path, ca: trustme.CA) -> None:
    """Custom websocket_path, no BOSH: host-meta lists only the WebSocket,
    which is served at its path."""
    async with ws_server(tmp_path, ca, websocket_path="/ws", bosh_path="") as srv:
        async with aiohttp.ClientSession() as http:
            async with http.get(url(srv, "/.well-known/host-meta.json", "http")) as resp:
                links = (await resp.json())["links"]
        port = srv.server.ports["http"]
        assert links == [{"rel": WS_REL, "href": f"ws://127.0.0.1:{port}/ws"}]
        await srv.user("alice")
        ws = await WS.connect(url(srv, "/ws"))
        assert await ws.login(DOMAIN, "alice", PASSWORD) == f"alice@{DOMAIN}/ws"
        await ws.close()


# -- CORS ------------------------------------------------------------------------
async def test_websocket_origins(tmp_path: Path, ca: trustme.CA) -> None:
    """A browser's WebSocket from another site is refused (403) unless its
    origin is in cors_origins; the server's own origin always may."""
    async with ws_server(tmp_path, ca, cors_origins=["https://chat.example.com"]) as srv:
        own = f"http://127.0.0.1:{srv.server.ports['http']}"
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await asyncio.wait_for(http.ws_connect(
                    url(srv), protocols=("xmpp",),
                    headers={"Origin": "https://evil.example"}), TIMEOUT)
            assert info.value.status == 403
        assert not srv.server.streams
        for origin in (own, "https://chat.example.com", "HTTPS://Chat.Example.COM"):
            ws = await WS.connect(url(srv), headers={"Origin": origin})
            opened = await ws.open(DOMAIN)
            assert opened.get("from") == DOMAIN
            await ws.close()


async def test_no_cors_origins_means_only_the_own_origin(tmp_path: Path, ca: trustme.CA) -> None:
    async with ws_server(tmp_path, ca) as srv:
        async with aiohttp.ClientSession() as http:
            for origin in ("https://chat.example.com", "http://127.0.0.1:1"):
                with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                    await asyncio.wait_for(http.ws_connect(
                        url(srv), protocols=("xmpp",), headers={"Origin": origin}), TIMEOUT)
                assert info.value.status == 403


async def test_any_origin_with_a_star(tmp_path: Path, ca: trustme.CA) -> None:
    async with ws_server(tmp_path, ca, cors_origins=["*"]) as srv:
        for origin in ("https://anything.example", "null"):
            ws = await WS.connect(url(srv), headers={"Origin": origin})
            assert (await ws.open(DOMAIN)).get("from") == DOMAIN
            await ws.close()


# -- static files ------------------------------------------------------------------
async def raw_get(port: int, target: str) -> tuple[int, bytes]:
    """GET ``target`` exactly as written (no client normalizes it)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), TIMEOUT)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                     "Connection: close\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(), TIMEOUT)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.fixture
def web_root(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    (root / "js").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>chat</title>")
    (root / "js" / "app.js").write_text("console.log('hi')")
    (root / "js" / "index.html").write_text("js index")
    (root / ".secret").write_text("hidden")
    (root / "js" / ".env").write_text("hidden")
    (tmp_path / "outside.txt").write_text("outside")
    return root


async def test_static_files(tmp_path: Path, ca: trustme.CA, web_root: Path) -> None:
    async with ws_server(tmp_path, ca, web_root=str(web_root)) as srv:
        port = srv.server.ports["http"]
        async with aiohttp.ClientSession() as http:
            async with http.get(url(srv, "/", "http")) as resp:
                assert resp.status == 200
                assert await resp.text() == "<!doctype html><title>chat</title>"
                assert resp.content_type == "text/html"
            async with http.get(url(srv, "/js/app.js", "http")) as resp:
                assert resp.status == 200 and await resp.text() == "console.log('hi')"
            async with http.get(url(srv, "/js/", "http")) as resp:
                assert resp.status == 200 and await resp.text() == "js index"
            async with http.get(url(srv, "/missing.html", "http")) as resp:
                assert resp.status == 404
        assert (await raw_get(port, "/index.html"))[0] == 200


@pytest.mark.parametrize("target", [
    "/../conf/config.toml", "/%2e%2e/conf/config.toml", "/js/../../outside.txt",
    "/%2E%2E/outside.txt", "/..%2foutside.txt", "/js/%2e%2e/%2e%2e/outside.txt",
    "/.secret", "/js/.env", "/%2esecret", "/..\\outside.txt", "/js/..%5c..%5coutside.txt",
    "//etc/passwd", "/%00", "/conf/config.toml",
])
async def test_nothing_outside_the_web_root(tmp_path: Path, ca: trustme.CA, web_root: Path,
                                            target: str) -> None:
    """Path traversal (raw, percent-encoded, backslashes), dotfiles and
    absolute paths get 404, never a file outside web_root."""
    async with ws_server(tmp_path, ca, web_root=str(web_root)) as srv:
        status, body = await raw_get(srv.server.ports["http"], target)
        assert status in (400, 404), (target, status, body[:200])
        assert b"outside" not in body and b"hidden" not in body and b"[client]" not in body
