"""XEP-0114 components against a real server: slixmpp's ComponentXMPP, and
raw bytes for what no library sends."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator, Callable

import pytest
import slixmpp
from slixmpp.exceptions import IqError

from tests.conftest import DOMAIN, TIMEOUT, Running, wait_event
from tests.rawclient import Raw
from tests.support import vinespy_status
from vinespy import ns
from vinespy.stream.component import handshake_digest, route_jid

SECRET = "t3a-s3cret"
TEA = f"tea.{DOMAIN}"
COMPONENTS = {"tea": SECRET, "coffee": "other"}
LISTENER = '[component]\naddress = "127.0.0.1"\nport = 0\n'


@pytest.fixture
async def srv(make_server: Callable[..., Any]) -> AsyncIterator[Running]:
    async with make_server(host={"components": COMPONENTS}, extra=LISTENER) as r:
        yield r


class Component:
    """A slixmpp ComponentXMPP and what happened to it."""

    def __init__(self, port: int, name: str = "tea", secret: str = SECRET,
                 address: str = "127.0.0.1") -> None:
        self.xmpp = slixmpp.ComponentXMPP(f"{name}.{DOMAIN}", secret, address, port)
        self.xmpp.register_plugin("xep_0030")
        self.xmpp.register_plugin("xep_0092", {"software_name": "teapot", "version": "4.18"})
        loop = asyncio.get_running_loop()
        self.started: asyncio.Future[None] = loop.create_future()
        self.error: asyncio.Future[str] = loop.create_future()
        self.gone: asyncio.Future[None] = loop.create_future()
        self.xmpp.add_event_handler(
            "session_start", lambda _: self.started.done() or self.started.set_result(None))
        self.xmpp.add_event_handler(
            "stream_error",
            lambda e: self.error.done() or self.error.set_result(e["condition"]))
        self.xmpp.add_event_handler(
            "disconnected", lambda _: self.gone.done() or self.gone.set_result(None))

    async def connect(self) -> Component:
        self.xmpp.connect()
        done, _ = await asyncio.wait((self.started, self.gone), timeout=TIMEOUT,
                                     return_when=asyncio.FIRST_COMPLETED)
        assert self.started in done, "the component was not accepted"
        return self

    async def refused(self) -> str:
        """Connect and return the stream error the server closes with."""
        self.xmpp.connect()
        condition = await asyncio.wait_for(self.error, TIMEOUT)
        await asyncio.wait_for(self.gone, TIMEOUT)
        assert not self.started.done()
        return condition

    def close(self) -> None:
        self.xmpp.abort()


@contextlib.asynccontextmanager
async def component(srv: Running, **kw: Any) -> AsyncIterator[Component]:
    c = Component(srv.server.ports["component"], **kw)
    try:
        yield await c.connect()
    finally:
        c.close()


async def version(client: slixmpp.ClientXMPP, to: str) -> Any:
    return await client.plugin["xep_0092"].get_version(to, timeout=TIMEOUT)


async def test_handshake_accepted(srv: Running) -> None:
    """The right secret is accepted; the component is bound under its route."""
    assert srv.server.ports["component"] > 0
    async with component(srv):
        assert srv.server.sessions.local(route_jid(TEA)) is not None


def port(srv: Running) -> int:
    return srv.server.ports["component"]


async def test_components_are_listed_in_disco_items(srv: Running) -> None:
    """The host's disco#items lists its components, connected or not (XEP-0030)."""
    alice = await srv.login(await srv.user("alice"))
    items = await alice.plugin["xep_0030"].get_items(jid=DOMAIN, timeout=TIMEOUT)
    jids = {str(i[0]) for i in items["disco_items"]["items"]}
    assert {TEA, f"coffee.{DOMAIN}"} <= jids


async def test_wrong_secret_is_not_authorized(srv: Running) -> None:
    """A wrong handshake ends the stream with <not-authorized/>; nothing is bound."""
    assert await Component(port(srv), secret="guess").refused() == "not-authorized"
    assert srv.server.sessions.local(route_jid(TEA)) is None


async def test_unknown_component_is_host_unknown(srv: Running) -> None:
    """A domain no [[host]] declares as a component: <host-unknown/>."""
    assert await Component(port(srv), name="milk").refused() == "host-unknown"


async def test_second_connection_is_refused_with_conflict(srv: Running) -> None:
    """Prosody's rule: the newcomer gets <conflict/>, the one connected stays."""
    alice = await srv.login(await srv.user("alice"))
    async with component(srv):
        assert await Component(port(srv)).refused() == "conflict"
        assert (await version(alice, TEA))["software_version"]["name"] == "teapot"


async def test_user_iq_is_answered_by_the_component(srv: Running) -> None:
    """An IQ to the component's domain reaches it; its answer reaches the user."""
    alice = await srv.login(await srv.user("alice"))
    async with component(srv):
        got = await version(alice, TEA)
        assert got["from"] == TEA
        assert (got["software_version"]["name"], got["software_version"]["version"]) == \
            ("teapot", "4.18")
        # And any JID of its domain.
        async with component(srv, name="coffee", secret="other"):
            got = await version(alice, f"bar@coffee.{DOMAIN}/counter")
            assert got["from"] == f"bar@coffee.{DOMAIN}/counter"


async def test_component_messages_a_user(srv: Running) -> None:
    """A component's message from a JID of its domain reaches the user."""
    alice = await srv.login(await srv.user("alice"))
    async with component(srv) as tea:
        tea.xmpp.send_message(mto=alice.boundjid.bare, mfrom=f"kettle@{TEA}", mbody="boiling")
        msg = await wait_event(alice, "message")
        assert (str(msg["from"]), msg["body"]) == (f"kettle@{TEA}", "boiling")


async def test_from_another_domain_is_invalid_from(srv: Running) -> None:
    """A 'from' outside the component's domain: <invalid-from/>, not routed."""
    alice = await srv.login(await srv.user("alice"))
    async with component(srv) as tea:
        tea.xmpp.send_message(mto=alice.boundjid.bare, mfrom=f"mallory@{DOMAIN}",
                              mbody="spoofed")
        assert await asyncio.wait_for(tea.error, TIMEOUT) == "invalid-from"
        await asyncio.wait_for(tea.gone, TIMEOUT)
    # A round trip: had it been routed, it would be here before the answer.
    await alice.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)
    got: list[Any] = []
    alice.add_event_handler("message", got.append)
    await alice.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)
    assert got == []


async def test_disconnected_component_is_service_unavailable(srv: Running) -> None:
    """Once the component is gone, IQs and messages to it bounce."""
    alice = await srv.login(await srv.user("alice"))
    tea = await Component(port(srv)).connect()
    await version(alice, TEA)
    tea.xmpp.disconnect()
    await asyncio.wait_for(tea.gone, TIMEOUT)
    with pytest.raises(IqError) as err:
        await version(alice, TEA)
    assert err.value.iq["error"]["condition"] == "service-unavailable"
    alice.send_message(mto=f"kettle@{TEA}", mbody="anyone?")
    bounced = await wait_event(alice, "message_error")
    assert bounced["error"]["condition"] == "service-unavailable"
    assert str(bounced["from"]) == f"kettle@{TEA}"


async def test_never_connected_component_is_service_unavailable(srv: Running) -> None:
    """A declared component that is not connected: <service-unavailable/>,
    not <remote-server-not-found/>."""
    alice = await srv.login(await srv.user("alice"))
    with pytest.raises(IqError) as err:
        await version(alice, TEA)
    assert err.value.iq["error"]["condition"] == "service-unavailable"


# -- raw bytes ----------------------------------------------------------------

def _open(raw: Raw, to: str, namespace: str = ns.COMPONENT) -> None:
    raw.send(f"<stream:stream xmlns='{namespace}' xmlns:stream='{ns.STREAM}' to='{to}'>")


async def _handshake(raw: Raw, secret: str = SECRET) -> None:
    m = await raw.expect(rb"<stream:stream [^>]*id='([^']+)'[^>]*>")
    raw.send(f"<handshake>{handshake_digest(m.group(1).decode(), secret)}</handshake>")
    await raw.expect(rb"<handshake/>")


async def test_error_from_the_server_goes_back_to_the_component(srv: Running) -> None:
    """An IQ from the component the server cannot answer gets its error back
    on the component's stream. (Raw: slixmpp reads errors in
    jabber:component:accept only with fix_error_ns, which changes its
    jabber:client stanzas too, those of the users in this process.)"""
    raw = await Raw.connect(srv.server.ports["component"])
    _open(raw, TEA)
    await _handshake(raw)
    raw.send(f"<iq type='get' id='q2' from='kettle@{TEA}' to='nobody@{DOMAIN}'>"
             f"<query xmlns='urn:example:nothing'/></iq>")
    m = await raw.expect(rb"<iq [^>]*>.*?</iq>")
    head = m.group(0).split(b">")[0]
    assert b'type="error"' in head and f'to="kettle@{TEA}"'.encode() in head
    assert b"<error type=\"cancel\"><service-unavailable " in m.group(0)


async def test_wrong_namespace_is_invalid_namespace(srv: Running) -> None:
    """A component stream must be in jabber:component:accept (XEP-0114 §3)."""
    raw = await Raw.connect(srv.server.ports["component"])
    _open(raw, TEA, ns.CLIENT)
    assert b"<invalid-namespace " in await raw.until_closed()


async def test_jabber_client_stanzas_are_taken(srv: Running) -> None:
    """A stanza in jabber:client on a component stream (slixmpp's use_jc_ns)
    is taken as one in jabber:component:accept."""
    alice = await srv.login(await srv.user("alice"))
    raw = await Raw.connect(srv.server.ports["component"])
    _open(raw, TEA)
    await _handshake(raw)
    raw.send(f"<message xmlns='jabber:client' from='{TEA}' to='{alice.boundjid.bare}'>"
             f"<body>as a client</body></message>")
    msg = await wait_event(alice, "message")
    assert msg["body"] == "as a client"


async def test_stanza_without_to_is_improper_addressing(srv: Running) -> None:
    """A stanza without 'to' ends the stream with <improper-addressing/>, as
    between servers (RFC 6120 §4.9.3.7: no stanza error says it)."""
    raw = await Raw.connect(srv.server.ports["component"])
    _open(raw, TEA)
    await _handshake(raw)
    raw.send(f"<iq type='get' id='q1' from='{TEA}'><query xmlns='jabber:iq:version'/></iq>")
    assert b"<improper-addressing " in await raw.until_closed()


async def test_stanzas_to_the_component_are_in_its_namespace(srv: Running) -> None:
    """What reaches the component is unprefixed: jabber:component:accept there."""
    alice = await srv.login(await srv.user("alice"))
    raw = await Raw.connect(srv.server.ports["component"])
    _open(raw, TEA)
    await _handshake(raw)
    alice.send_message(mto=f"kettle@{TEA}", mbody="tea please")
    m = await raw.expect(rb"<message [^>]*>.*?</message>")
    assert b"xmlns" not in m.group(0).split(b">")[0]
    assert b"<body>tea please</body>" in m.group(0)


async def test_no_handshake_in_time(make_server: Callable[..., Any]) -> None:
    """A connection that does not complete its handshake is closed."""
    async with make_server(host={"components": COMPONENTS},
                           extra=LISTENER + "handshake_timeout = 1\n") as srv:
        raw = await Raw.connect(srv.server.ports["component"])
        _open(raw, TEA)
        assert b"<connection-timeout " in await raw.until_closed()


async def test_listener_off_without_components_or_when_disabled(
        make_server: Callable[..., Any]) -> None:
    """No component declared: no port; enabled = false: no port, and the
    declared components are simply not connected."""
    async with make_server(extra=LISTENER) as srv:
        assert "component" not in srv.server.ports
    async with make_server(host={"components": COMPONENTS},
                           extra=LISTENER + "enabled = false\n") as srv:
        assert "component" not in srv.server.ports
        alice = await srv.login(await srv.user("alice"))
        with pytest.raises(IqError) as err:
            await version(alice, TEA)
        assert err.value.iq["error"]["condition"] == "service-unavailable"


async def test_vinespy_status_lists_connected_components(srv: Running) -> None:
    """`vinespy status` names each connected component and where it is from."""
    config = srv.server.config.path
    async with component(srv):
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while f"component {TEA}  peer 127.0.0.1:" not in (out := await vinespy_status(config)):
            assert asyncio.get_running_loop().time() < deadline, out
        deadline = asyncio.get_running_loop().time() + TIMEOUT
    while "component" in (out := await vinespy_status(config)):
        assert asyncio.get_running_loop().time() < deadline, out
