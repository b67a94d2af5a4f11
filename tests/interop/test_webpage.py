"""The built-in web chat page (vinespy/http/static) in a real headless
Chromium: two browser users log in, add each other, chat, and talk with a
slixmpp user over TCP; over WebSocket, over BOSH, and after the WebSocket
drops (issue 15 item 6)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Locator, Page, WebSocketRoute, expect
from slixmpp import JID

from vinespy.jid import JID as VJID

from tests.conftest import PASSWORD, TIMEOUT, wait_event
from tests.interop.conftest import WAIT, Pages, Web, shot

pytestmark = pytest.mark.integration


class Chat:
    """One user on the page, driven as a person would: fields, buttons, Enter."""

    def __init__(self, page: Page, jid: str) -> None:
        self.page = page
        self.jid = jid

    def by(self, testid: str) -> Locator:
        return self.page.get_by_test_id(testid)

    async def login(self, url: str, transport: str = "", password: str = PASSWORD) -> None:
        """Opens the page and logs in; with the right password, waits until it is online."""
        await self.page.goto(url + (f"/?transport={transport}" if transport else "/"))
        await self.by("login-jid").fill(self.jid)
        await self.by("login-password").fill(password)
        await self.by("login-password").press("Enter")
        if password == PASSWORD:
            await self.online()

    async def online(self) -> None:
        await expect(self.by("connection-state")).to_have_attribute(
            "data-state", "online", timeout=WAIT)

    def contact(self, jid: str) -> Locator:
        return self.page.locator(f"[data-testid=roster-item][data-jid='{jid}']")

    async def add(self, jid: str) -> None:
        await self.by("add-contact-jid").fill(jid)
        await self.by("add-contact-submit").click()
        await expect(self.contact(jid)).to_be_visible(timeout=WAIT)

    async def accept(self, jid: str) -> None:
        """Accepts the subscription request of ``jid`` once it shows up."""
        request = self.page.locator(f"[data-testid=subscription-request][data-jid='{jid}']")
        await request.get_by_test_id("subscription-accept").click(timeout=WAIT)
        await expect(request).to_have_count(0, timeout=WAIT)

    async def open(self, jid: str) -> None:
        await self.contact(jid).get_by_test_id("roster-open").click(timeout=WAIT)
        await expect(self.by("chat-title")).to_contain_text(jid, timeout=WAIT)

    async def say(self, text: str) -> None:
        await self.by("chat-input").fill(text)
        await self.by("chat-input").press("Enter")
        await expect(self.message("out", text)).to_be_visible(timeout=WAIT)

    def message(self, direction: str, text: str) -> Locator:
        return self.by("message-list").locator(
            f"[data-testid=message][data-direction={direction}]", has_text=text)

    async def sees(self, text: str) -> None:
        await expect(self.message("in", text)).to_be_visible(timeout=WAIT)

    async def presence(self, jid: str, state: str) -> None:
        await expect(self.contact(jid)).to_have_attribute("data-presence", state, timeout=WAIT)


async def tagged_host_meta(page: Page, web: Web) -> str:
    """Serves ``page`` the server's host-meta.json with its WebSocket URL
    tagged (?via=host-meta), so the URL the page opens shows where it came
    from; returns that URL."""
    meta = await (await page.request.get(f"{web.url}/.well-known/host-meta.json")).json()
    ws = next(link for link in meta["links"]
              if link["rel"] == "urn:xmpp:alt-connections:websocket")
    assert ws["href"] == web.url.replace("http:", "ws:") + "/xmpp-websocket"
    ws["href"] += "?via=host-meta"
    await page.route("**/.well-known/host-meta.json",
                     lambda route: route.fulfill(json=meta))
    return str(ws["href"])


async def befriend(a: Chat, b: Chat) -> None:
    """``a`` adds ``b``; ``b`` accepts and asks back; ``a`` accepts: both see each other online."""
    await a.add(b.jid)
    await b.accept(a.jid)
    await a.accept(b.jid)
    await a.presence(b.jid, "online")
    await b.presence(a.jid, "online")
    await expect(a.contact(b.jid)).to_have_attribute("data-subscription", "both", timeout=WAIT)


async def chat_both_ways(a: Chat, b: Chat, tag: str) -> None:
    await a.open(b.jid)
    await a.say(f"Hello {tag} from {a.jid}")
    await expect(b.contact(a.jid).locator(".badge")).to_have_text("1", timeout=WAIT)
    await b.open(a.jid)
    await b.sees(f"Hello {tag} from {a.jid}")
    await b.say(f"Hi back {tag} from {b.jid}")
    await a.sees(f"Hi back {tag} from {b.jid}")


async def with_tcp_user(web: Web, a: Chat) -> Any:
    """A slixmpp user over TCP, added by ``a`` (it approves on its own and asks
    back), exchanges a message with ``a`` both ways; returns the client."""
    carol = await web.srv.user("carol")
    c = await web.srv.login(carol)
    await c.get_roster(timeout=TIMEOUT)
    await a.add(carol)
    await a.accept(carol)                   # slixmpp subscribes back on its own
    await a.presence(carol, "online")
    received = asyncio.create_task(
        wait_event(c, "message", match=lambda m: m["body"] == "to carol over tcp"))
    await a.open(carol)
    await a.say("to carol over tcp")
    msg = await received
    assert msg["from"].bare == a.jid and msg["type"] == "chat"
    c.send_message(mto=JID(a.jid), mbody="carol answers", mtype="chat")
    await a.sees("carol answers")
    return c


async def test_two_browser_users_and_a_tcp_user(web: Web, pages: Pages, artifacts: Path) -> None:
    """Over WebSocket: two page users befriend and chat; a slixmpp user talks
    with one of them; removing a contact and logging out reach the others."""
    alice = Chat(await pages.new("alice"), await web.srv.user("alice"))
    bob = Chat(await pages.new("bob"), await web.srv.user("bob"))
    await alice.page.goto(web.url)
    await shot(alice.page, artifacts, "webpage-login")
    discovered = await tagged_host_meta(alice.page, web)
    async with alice.page.expect_websocket() as opened:
        await alice.login(web.url)
    assert (await opened.value).url == discovered     # XEP-0156, not the default path
    await bob.login(web.url)
    await expect(alice.by("connection-state")).to_have_attribute("data-transport", "websocket")
    await befriend(alice, bob)
    await chat_both_ways(alice, bob, "ws")
    await bob.by("my-show").select_option("away")
    await alice.presence(bob.jid, "away")
    carol = await with_tcp_user(web, alice)
    await alice.open(bob.jid)
    await shot(alice.page, artifacts, "webpage-alice")
    await shot(bob.page, artifacts, "webpage-bob")

    await alice.contact(bob.jid).get_by_test_id("roster-remove").click()
    # the conversation stays listed, as someone not in the roster
    await expect(alice.contact(bob.jid)).to_have_attribute("data-in-roster", "false",
                                                           timeout=WAIT)
    await expect(alice.contact(bob.jid).get_by_test_id("roster-remove")).to_have_count(0)
    await expect(bob.contact(alice.jid)).to_have_attribute("data-subscription", "none",
                                                           timeout=WAIT)
    await bob.presence(alice.jid, "offline")

    gone = asyncio.create_task(
        wait_event(carol, "presence_unavailable", match=lambda p: p["from"].bare == alice.jid))
    await alice.by("logout").click()
    await expect(alice.by("login-form")).to_be_visible(timeout=WAIT)
    await expect(alice.by("connection-state")).to_have_attribute("data-state", "disconnected")
    await gone


async def test_bosh_forced_and_websocket_fallback(web: Web, pages: Pages,
                                                  artifacts: Path) -> None:
    """Over BOSH: one user asks for it (?transport=bosh), the other's WebSocket
    is refused so the page falls back; they chat, and with a slixmpp user."""
    alice = Chat(await pages.new("alice"), await web.srv.user("alice"))
    bob = Chat(await pages.new("bob"), await web.srv.user("bob"))

    async def refuse(ws: WebSocketRoute) -> None:
        await ws.close(code=1011, reason="blocked by the test")
    await bob.page.route_web_socket("**/xmpp-websocket", refuse)
    await alice.login(web.url, transport="bosh")
    await bob.login(web.url)
    for user in (alice, bob):
        await expect(user.by("connection-state")).to_have_attribute("data-transport", "bosh")
    await befriend(alice, bob)
    await chat_both_ways(alice, bob, "bosh")
    await with_tcp_user(web, alice)
    await shot(alice.page, artifacts, "webpage-bosh")
    await alice.by("logout").click()
    await expect(bob.contact(alice.jid)).to_have_attribute("data-presence", "offline",
                                                           timeout=WAIT)


async def test_reconnects_after_the_websocket_drops(web: Web, pages: Pages) -> None:
    """The page notices a dropped WebSocket, says so, logs in again on its own
    and keeps the conversation it had."""
    sockets: list[tuple[WebSocketRoute, WebSocketRoute]] = []

    def relay(ws: WebSocketRoute) -> None:
        sockets.append((ws, ws.connect_to_server()))
    alice = Chat(await pages.new("alice"), await web.srv.user("alice"))
    await alice.page.route_web_socket("**/xmpp-websocket", relay)
    dave = await web.srv.login(await web.srv.user("dave"))
    await alice.login(web.url)
    dave.send_message(mto=JID(alice.jid), mbody="before the drop", mtype="chat")
    await alice.open(dave.boundjid.bare)
    await alice.sees("before the drop")

    first = await alice.by("own-jid").text_content()
    page_side, server_side = sockets[0]
    await server_side.close(code=1001, reason="the test drops the connection")
    await page_side.close(code=1001, reason="the test drops the connection")
    await expect(alice.by("connection-state")).to_have_attribute("data-state", "disconnected",
                                                                 timeout=WAIT)
    await alice.online()
    assert len(sockets) == 2
    await expect(alice.message("in", "before the drop")).to_be_visible()
    # The page says "online" once bound, before its roster and presence: dave
    # writes once the server has the new resource available (nothing tells
    # the test: polled, bounded). The old one may still be bound: the relay
    # dropped it without a close the server sees, so it is unbound at the
    # first unanswered ping; a message to the bare JID goes to both.
    sessions, bare = web.srv.server.sessions, VJID.parse(alice.jid)
    deadline = asyncio.get_running_loop().time() + WAIT / 1000
    while not any(str(s.jid) != first for s in sessions.available(bare)):
        assert asyncio.get_running_loop().time() < deadline, "the page is not available again"
        await asyncio.sleep(0.02)
    dave.send_message(mto=JID(alice.jid), mbody="after the drop", mtype="chat")
    await alice.sees("after the drop")


async def test_wrong_password(web: Web, pages: Pages) -> None:
    """A refused login says so on the form and is not retried."""
    alice = Chat(await pages.new("alice"), await web.srv.user("alice"))
    await alice.login(web.url, password="not the password")
    await expect(alice.by("login-error")).to_have_text("Wrong Jabber ID or password.",
                                                       timeout=WAIT)
    await expect(alice.by("connection-state")).to_have_attribute("data-state", "disconnected")
    await expect(alice.by("login-form")).to_be_visible()


# RFC 5802 §5 and RFC 7677 §3: user "user", password "pencil"
SCRAM_VECTORS = [
    ("SCRAM-SHA-1", "fyko+d2lbbFgONRv9qkxdawL",
     "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
     "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
     "v=rmF9pqV8S7suAoZWja4dJRkFsKQ="),
    ("SCRAM-SHA-256", "rOprNGfwEbeRWgbNEkqO",
     "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
     "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
     "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
     "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
]


@pytest.mark.parametrize("mechanism,nonce,server_first,client_final,server_final",
                         SCRAM_VECTORS, ids=[v[0] for v in SCRAM_VECTORS])
async def test_scram_test_vectors(web: Web, pages: Pages, mechanism: str, nonce: str,
                                  server_first: str, client_final: str,
                                  server_final: str) -> None:
    """The page's WebCrypto SCRAM gives the RFCs' messages, and checks the server's."""
    page = await pages.new("scram")
    await page.goto(web.url)
    got = await page.evaluate("""async ([mech, nonce, first, final]) => {
        const c = await scram(mech, 'user', 'pencil', nonce);
        const out = { first: c.first, final: await c.final(first) };
        c.verify(final);
        try { c.verify('v=AAAA'); out.forged = 'accepted'; } catch (e) { out.forged = e.condition; }
        return out;
    }""", [mechanism, nonce, server_first, server_final])
    assert got == {"first": f"n,,n=user,r={nonce}", "final": client_final,
                   "forged": "server-not-verified"}


# A scripted server for Session.login() inside the page: the mechanisms the
# test offers, SCRAM-SHA-1 with the server-final in <success/> or (with
# ``challengeFinal``) in a last <challenge/>, then bind. Answers come in a
# later task, as from a socket; it computes the server-final with the
# page's own scram() from the nonce the page drew.
FAKE_SERVER = """async ([mechanisms, challengeFinal]) => {
    const sent = [];
    const features = (inner) => `<stream:features xmlns:stream='http://etherx.jabber.org/streams'
        xmlns='jabber:client'>${inner}</stream:features>`;
    const sasl = (name, text = '') =>
        `<${name} xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>${text}</${name}>`;
    let serverFinal = null;
    const t = {
        name: 'fake', closed: false,
        later(xml) { setTimeout(() => t.onStanza(parseXml(xml))); },
        async start(domain) {
            sent.push(`start ${domain}`);
            t.later(features(`<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>${
                mechanisms.map((m) => `<mechanism>${m}</mechanism>`).join('')}</mechanisms>`));
        },
        restart() {
            sent.push('restart');
            t.later(features("<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"));
        },
        async send(e) {
            sent.push(serialize(e));
            const name = e.localName;
            if (name === 'auth' && e.getAttribute('mechanism') === 'PLAIN') {
                t.later(sasl('success'));
            } else if (name === 'auth') {
                const nonce = atob(e.textContent).split(',r=')[1];
                const first = `r=${nonce}srv,s=QSXCR+Q6sek8bf92,i=4096`;
                const c = await scram('SCRAM-SHA-1', 'user', 'pencil', nonce);
                await c.final(first);
                serverFinal = btoa(`v=${c.expected}`);
                t.later(sasl('challenge', btoa(first)));
            } else if (name === 'response' && e.textContent) {
                t.later(sasl(challengeFinal ? 'challenge' : 'success', serverFinal));
            } else if (name === 'response') {
                t.later(sasl('success'));
            } else if (name === 'iq') {
                t.later(`<iq xmlns='jabber:client' type='result' id='${e.getAttribute('id')}'
                    ><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>user@x.test/r</jid
                    ></bind></iq>`);
            }
        },
        finish() {}, close() {},
    };
    const s = new Session(t, 'user@x.test', 'pencil',
                          { presence() {}, message() {}, rosterItem() {}, closed() {} });
    const jid = await s.login();
    return { jid, sent };
}"""
SASL = 'xmlns="urn:ietf:params:xml:ns:xmpp-sasl"'
BIND = re.compile(r'<iq xmlns="jabber:client" type="set" id="[^"]+">'
                  r'<bind xmlns="urn:ietf:params:xml:ns:xmpp-bind">'
                  r"<resource>web-[a-z0-9]+</resource></bind></iq>")


async def test_plain_only_when_no_scram(web: Web, pages: Pages) -> None:
    """Offered PLAIN alone, the page sends RFC 4616's message, then binds with
    an IQ in jabber:client (RFC 7395 §3.3.3)."""
    page = await pages.new("plain")
    await page.goto(web.url)
    got = await page.evaluate(FAKE_SERVER, [["PLAIN"], False])
    assert got["jid"] == "user@x.test/r"
    start, auth, restart, bind = got["sent"]
    assert (start, restart) == ("start x.test", "restart")
    assert auth == f'<auth {SASL} mechanism="PLAIN">AHVzZXIAcGVuY2ls</auth>'   # \0user\0pencil
    assert BIND.fullmatch(bind), bind


@pytest.mark.parametrize("challenge_final", [False, True], ids=["in-success", "in-challenge"])
async def test_scram_preferred_to_plain(web: Web, pages: Pages, challenge_final: bool) -> None:
    """Offered PLAIN and SCRAM-SHA-1, the page uses SCRAM; it takes the
    server-final in <success/> or in a last <challenge/> answered empty
    (RFC 6120 §6.3.10)."""
    page = await pages.new("scram")
    await page.goto(web.url)
    got = await page.evaluate(FAKE_SERVER, [["PLAIN", "SCRAM-SHA-1"], challenge_final])
    assert got["jid"] == "user@x.test/r"
    sent = got["sent"]
    assert sent[1].startswith(f'<auth {SASL} mechanism="SCRAM-SHA-1">')
    assert sent[2].startswith(f"<response {SASL}>Yz1iaXdzLHI9")    # "c=biws,r="
    if challenge_final:
        assert sent[3] == f"<response {SASL}/>"
        sent = sent[:3] + sent[4:]
    assert sent[3] == "restart" and BIND.fullmatch(sent[4]), sent
