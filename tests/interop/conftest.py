"""Browser fixtures: Debian's headless Chromium driven by Playwright, and a
vinespy server with its ``[http]`` listener on a free loopback port.

Playwright never downloads a browser here: it launches /usr/bin/chromium
(Debian ``chromium``; tests/run installs it), so a missing Chromium is a
failure that says how to get it, never a skip. Each test gets a fresh
browser (Playwright gives every launch its own temporary profile) and one
isolated context per user. Screenshots go to ``$VINESPY_ARTIFACTS`` (the
test's tmp_path when unset).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pytest
import trustme
from playwright.async_api import Browser, BrowserContext, Page, Response, async_playwright

from tests.conftest import Running, running
from tests.support import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
WAIT = 10_000           # ms: the bound of every browser wait


class Web:
    """A running server and the base URL of its HTTP listener."""

    def __init__(self, srv: Running) -> None:
        self.srv = srv
        self.url = f"http://127.0.0.1:{srv.server.ports['http']}"


WebFactory = Callable[..., "contextlib.AbstractAsyncContextManager[Web]"]


@pytest.fixture
def web_server(tmp_path: Path, ca: trustme.CA) -> WebFactory:
    """``async with web_server(web_root=...) as web``: a server with ``[http]`` on."""
    @contextlib.asynccontextmanager
    async def start(web_root: Path | None = None) -> AsyncIterator[Web]:
        extra = f'[http]\naddress = "127.0.0.1"\nport = {free_port()}\n'
        if web_root is not None:
            extra += f"web_root = {str(web_root)!r}\n".replace("'", '"')
        async with running(tmp_path, ca, extra=extra) as srv:
            yield Web(srv)
    return start


@pytest.fixture
async def web(web_server: WebFactory) -> AsyncIterator[Web]:
    """A server serving the built-in page."""
    async with web_server() as w:
        yield w


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    """Where screenshots go: $VINESPY_ARTIFACTS, or the test's tmp_path."""
    path = Path(os.environ.get("VINESPY_ARTIFACTS") or tmp_path)
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """A headless Debian Chromium of its own for the test."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: the browser tests need Debian's chromium "
                    "(apt-get install chromium chromium-driver; tests/run does it)")
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                     headless=True, timeout=30_000)
        try:
            yield b
        finally:
            await b.close()


class Pages:
    """Opens one isolated page per user; records what their JavaScript throws."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.contexts: list[BrowserContext] = []
        self.errors: list[str] = []
        self.console: list[str] = []

    async def new(self, name: str) -> Page:
        ctx = await self.browser.new_context(viewport={"width": 1000, "height": 700})
        ctx.set_default_timeout(WAIT)
        self.contexts.append(ctx)
        page = await ctx.new_page()
        page.on("pageerror", lambda e: self.errors.append(f"{name}: {e.stack or e}"))
        page.on("console", lambda m: self.console.append(f"{name} {m.type}: {m.text}"))
        page.on("response", lambda r: self.failed(name, r))
        return page

    def failed(self, name: str, response: Response) -> None:
        if response.status >= 400:
            self.console.append(f"{name} HTTP {response.status}: "
                                f"{response.request.method} {response.url}")

    async def close(self) -> None:
        for ctx in self.contexts:
            await ctx.close()


@pytest.fixture
async def pages(browser: Browser) -> AsyncIterator[Pages]:
    """A page factory; the test fails if a page threw an uncaught error."""
    p = Pages(browser)
    try:
        yield p
    finally:
        await p.close()
    assert not p.errors, "uncaught errors in the pages:\n" + "\n".join(p.errors + p.console)


def shot(page: Page, artifacts: Path, name: str) -> Any:
    """Saves a full-page screenshot as an artifact (an awaitable)."""
    return page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)
