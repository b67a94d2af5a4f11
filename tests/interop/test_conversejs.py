"""converse.js, the web client people put in front of Prosody and ejabberd,
in headless Chromium against vinespy: it logs in over WebSocket (RFC 7395)
and, in the second test, over BOSH (XEP-0124/0206), and exchanges a message
each way with a slixmpp user over TCP (issue 15, "a real third-party web
client").

converse.js comes from the npm registry, pinned, into a cache outside the
repository (~/.cache/vinespy/conversejs, or $VINESPY_CACHE/conversejs); the
vinespy server itself serves its dist/ and a small page from ``[http]
web_root``, so the client is same-origin with both endpoints.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import quote

import pytest
from playwright.async_api import Page, expect
from slixmpp import JID

from tests.conftest import PASSWORD, wait_event
from tests.interop.conftest import WAIT, Pages, Web, WebFactory, shot

# the first test also runs `npm install` when the cache lacks this converse.js
pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

CONVERSE = "12.0.0"     # 2025-08-28; its API as read in src/headless of that release

# The test page: converse's own dist, plus a plugin (whitelisted) that hands
# the test the private _converse object and records what arrives.
PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>converse.js against vinespy</title>
  <link rel="stylesheet" href="/dist/converse.min.css">
  <script src="/dist/converse.min.js"></script>
  <script src="/boot.js" defer></script>
</head>
<body></body>
</html>
"""
BOOT = """'use strict';
window.vinespy = { connected: false, received: [] };
converse.plugins.add('vinespy-test', {
  initialize() {
    const c = this._converse;
    window._c = c;
    c.api.listen.on('connected', () => { window.vinespy.connected = true; });
    c.api.listen.on('message', (data) => {
      const { from, body } = data.attrs;
      if (body) window.vinespy.received.push({ from, body });
    });
  },
});
converse.initialize(Object.assign({
  auto_login: true,
  auto_reconnect: false,
  discover_connection_methods: false,
  view_mode: 'fullscreen',
  whitelisted_plugins: ['vinespy-test'],
  assets_path: '/dist/',
  persistent_store: 'sessionStorage',
  play_sounds: false,
  show_desktop_notifications: false,
  loglevel: 'debug',
}, JSON.parse(decodeURIComponent(location.hash.slice(1)))));
"""


def npm_dist() -> Path:
    """converse.js's dist/ in the cache, installed with npm on first use."""
    cache = Path(os.environ.get("VINESPY_CACHE") or Path.home() / ".cache" / "vinespy")
    prefix = cache / "conversejs"
    package = prefix / "node_modules" / "converse.js"
    manifest = package / "package.json"
    if not (manifest.exists() and json.loads(manifest.read_text())["version"] == CONVERSE):
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm is missing: the converse.js tests fetch converse.js with it "
                        "(apt-get install nodejs npm; tests/run does it)")
        prefix.mkdir(parents=True, exist_ok=True)
        run = subprocess.run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
                              "--ignore-scripts", f"converse.js@{CONVERSE}"],
                             capture_output=True, text=True, timeout=600)
        if run.returncode != 0:
            pytest.fail(f"npm install converse.js@{CONVERSE} failed:\n{run.stderr[-2000:]}")
    dist = package / "dist"
    assert (dist / "converse.min.js").exists(), f"{dist}: no converse.min.js after npm install"
    return dist


@pytest.fixture(scope="session")
def converse_dist() -> Path:
    return npm_dist()


def link_tree(src: Path, dst: Path) -> None:
    """``src`` under ``dst`` as hard links (a copy across file systems),
    without the source maps: served as plain files, not symlinks."""
    def link(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)
    shutil.copytree(src, dst, copy_function=link, ignore=shutil.ignore_patterns("*.map"))


@pytest.fixture
async def site(web_server: WebFactory, converse_dist: Path, tmp_path: Path) -> AsyncIterator[Web]:
    """A server whose web_root holds converse's dist/ and the test page."""
    root = tmp_path / "www"
    root.mkdir()
    link_tree(converse_dist, root / "dist")
    (root / "converse.html").write_text(PAGE)
    (root / "boot.js").write_text(BOOT)
    async with web_server(web_root=root) as w:
        yield w


async def open_converse(page: Page, web: Web, jid: str, **settings: str) -> None:
    """Opens the page with ``settings`` and waits for converse to be connected."""
    settings = {"jid": jid, "password": PASSWORD, **settings}
    await page.goto(f"{web.url}/converse.html#{quote(json.dumps(settings))}")
    await page.wait_for_function("window.vinespy && window.vinespy.connected", timeout=WAIT)


async def exchange(page: Page, web: Web, alice: str, artifacts: Path, name: str) -> None:
    """alice (converse) and a slixmpp user send each other a message."""
    bob = await web.srv.login(await web.srv.user("bob"))
    received = asyncio.create_task(
        wait_event(bob, "message", match=lambda m: m["body"] == f"from converse over {name}"))
    await page.evaluate("jid => _c.api.chats.open(jid, {}, true)", bob.boundjid.bare)
    textarea = page.locator("textarea.chat-textarea")
    await textarea.fill(f"from converse over {name}")
    await textarea.press("Enter")
    msg = await received
    assert msg["from"].bare == alice and msg["type"] == "chat"

    bob.send_message(mto=JID(alice), mbody=f"from slixmpp to converse over {name}", mtype="chat")
    await expect(page.locator(".chat-msg__text", has_text=f"from slixmpp to converse over {name}")
                 ).to_be_visible(timeout=WAIT)
    received_js: list[dict[str, Any]] = await page.evaluate("window.vinespy.received")
    assert {"from": str(bob.boundjid), "body": f"from slixmpp to converse over {name}"} \
        in received_js
    await shot(page, artifacts, f"conversejs-{name}")


async def test_conversejs_over_websocket(site: Web, pages: Pages, artifacts: Path) -> None:
    """converse.js logs in over WebSocket and chats with a slixmpp user both ways."""
    alice = await site.srv.user("alice")
    page = await pages.new("converse")
    ws = site.url.replace("http://", "ws://") + "/xmpp-websocket"
    await open_converse(page, site, alice, websocket_url=ws)
    assert await page.evaluate("_c.api.connection.isType('websocket')")
    await exchange(page, site, alice, artifacts, "websocket")


async def test_conversejs_over_bosh(site: Web, pages: Pages, artifacts: Path) -> None:
    """converse.js logs in over BOSH and chats with a slixmpp user both ways."""
    alice = await site.srv.user("alice")
    page = await pages.new("converse")
    await open_converse(page, site, alice, bosh_service_url=f"{site.url}/http-bind")
    assert await page.evaluate("_c.api.connection.isType('bosh')")
    await exchange(page, site, alice, artifacts, "bosh")
