"""The router's destination table (docs/routing.md), without sockets."""

from __future__ import annotations

from typing import Any

import pytest
from lxml import etree

from vinespy.jid import JID
from vinespy.router import Router
from vinespy.xml import Element, stanza

from tests.harness import DOMAIN, FakeSession, World


@pytest.fixture
def router() -> Router:
    return World().router         # no modules: the router's own defaults


def bind(router: Router, jid: str, available: bool = True) -> FakeSession:
    s = FakeSession(jid, available)
    router.sessions.bind(s)
    return s


def condition(st: Element) -> str:
    err = st.find("{jabber:client}error")
    assert err is not None, etree.tostring(st)
    return etree.QName(err[0]).localname


def msg(to: str, frm: str, type: str | None = "chat") -> Element:
    m = stanza("message", to=to, frm=frm, type=type, id="m1")
    etree.SubElement(m, "{jabber:client}body").text = "hi"
    return m


async def test_full_jid_delivered(router: Router) -> None:
    """A stanza to a bound full JID reaches exactly that resource."""
    a = bind(router, f"alice@{DOMAIN}/a")
    b1, b2 = bind(router, f"bob@{DOMAIN}/1"), bind(router, f"bob@{DOMAIN}/2")
    await router.route(msg(f"bob@{DOMAIN}/2", str(a.jid)), a)
    assert not b1.got and len(b2.got) == 1


async def test_bare_jid_reaches_available_resources_only(router: Router) -> None:
    """Bare-JID chat goes to every available resource, not to unavailable ones."""
    a = bind(router, f"alice@{DOMAIN}/a")
    b1, b2 = bind(router, f"bob@{DOMAIN}/1"), bind(router, f"bob@{DOMAIN}/2", available=False)
    await router.route(msg(f"bob@{DOMAIN}", str(a.jid)), a)
    assert len(b1.got) == 1 and not b2.got


async def test_absent_resource_chat_falls_back_to_bare(router: Router) -> None:
    """RFC 6121 §8.5.3.2.1: chat to an unbound full JID is handled as bare."""
    a = bind(router, f"alice@{DOMAIN}/a")
    b = bind(router, f"bob@{DOMAIN}/1")
    await router.route(msg(f"bob@{DOMAIN}/gone", str(a.jid)), a)
    assert len(b.got) == 1


@pytest.mark.parametrize("kind,type,expect", [
    ("message", "chat", "service-unavailable"),
    ("message", "normal", "service-unavailable"),
    ("message", "headline", None),
    ("message", "error", None),
    ("iq", "get", "service-unavailable"),
    ("iq", "result", None),
    ("presence", None, None),
])
async def test_offline_user(router: Router, kind: str, type: str | None,
                            expect: str | None) -> None:
    """The defaults for a user with no available resource (RFC 6121 §8.5.2.2)."""
    a = bind(router, f"alice@{DOMAIN}/a")
    st = stanza(kind, to=f"bob@{DOMAIN}", frm=str(a.jid), type=type, id="x")
    if kind == "iq":
        etree.SubElement(st, "{urn:example}q")
    await router.route(st, a)
    if expect is None:
        assert not a.got
    else:
        (err,) = a.got
        assert err.get("type") == "error" and condition(err) == expect


async def test_error_is_never_answered_with_an_error(router: Router) -> None:
    """RFC 6120 §8.3.1: an error to nowhere is dropped, not bounced."""
    a = bind(router, f"alice@{DOMAIN}/a")
    await router.route(msg("nobody@example.org", str(a.jid), type="error"), a)
    assert not a.got


async def test_malformed_and_remote_to(router: Router) -> None:
    """A bad 'to' gets jid-malformed; another domain remote-server-not-found."""
    a = bind(router, f"alice@{DOMAIN}/a")
    await router.route(msg("@@bad", str(a.jid)), a)
    await router.route(msg("bob@example.org", str(a.jid)), a)
    assert [condition(e) for e in a.got] == ["jid-malformed", "remote-server-not-found"]
    assert a.got[0].get("from") is None and a.got[1].get("from") == "bob@example.org"


async def test_unhandled_iq_to_host(router: Router) -> None:
    """RFC 6120 §8.4: an iq get/set nobody handles gets service-unavailable."""
    a = bind(router, f"alice@{DOMAIN}/a")
    iq = stanza("iq", to=DOMAIN, frm=str(a.jid), type="get", id="q")
    etree.SubElement(iq, "{urn:example}q")
    await router.route(iq, a)
    (err,) = a.got
    assert condition(err) == "service-unavailable" and err.get("id") == "q"


async def test_module_claims_and_failing_module(router: Router) -> None:
    """A hook that claims a stanza stops the default; one that raises gets the
    sender an internal-server-error, not a dead stream."""
    host = router.hosts[DOMAIN]
    seen: list[Any] = []

    def claim(ev: Any) -> bool:
        seen.append(ev)
        return True
    host.bus.on("message/bare", claim)

    def boom(ev: Any) -> None:
        raise RuntimeError("bug")
    host.bus.on("message/host", boom)
    a = bind(router, f"alice@{DOMAIN}/a")
    b = bind(router, f"bob@{DOMAIN}/1")
    await router.route(msg(f"bob@{DOMAIN}", str(a.jid)), a)
    assert not b.got and seen[0].to_type == "bare" and seen[0].origin is a
    await router.route(msg(DOMAIN, str(a.jid)), a)
    (err,) = a.got
    assert condition(err) == "internal-server-error"


async def test_iq_to_own_bare_jid_is_self(router: Router) -> None:
    """An iq to the sender's own bare JID (or without 'to') is a 'self' event."""
    host = router.hosts[DOMAIN]
    types: list[str] = []
    host.bus.on("iq/self", lambda ev: types.append(ev.to_type) or True)
    a = bind(router, f"alice@{DOMAIN}/a")
    for to in (None, f"alice@{DOMAIN}"):
        iq = stanza("iq", to=to, frm=str(a.jid), type="get", id="r")
        etree.SubElement(iq, "{jabber:iq:roster}query")
        await router.route(iq, a)
    assert types == ["self", "self"]


@pytest.mark.parametrize("type,expect", [
    ("chat", {"hi"}), ("normal", {"hi"}), ("headline", {"hi", "mid"}),
])
async def test_bare_message_priorities(router: Router, type: str, expect: set[str]) -> None:
    """RFC 6121 §8.5.2.1.1: chat/normal to the highest non-negative priority
    (ties: all), headline to every non-negative resource, never to negative ones."""
    a = bind(router, f"alice@{DOMAIN}/a")
    res = {}
    for name, prio in (("hi", 5), ("hi2", 5), ("mid", 1), ("neg", -1)):
        res[name] = bind(router, f"bob@{DOMAIN}/{name}")
        res[name].priority = prio
    await router.route(msg(f"bob@{DOMAIN}", str(a.jid), type=type), a)
    got = {n for n, s in res.items() if s.got}
    assert got == (expect | {"hi2"} if "hi" in expect else expect)


async def test_only_negative_priority_is_offline(router: Router) -> None:
    """§8.5.2.1.1: if every available resource has a negative priority the
    message is handled as offline (here: service-unavailable, or a module's)."""
    a = bind(router, f"alice@{DOMAIN}/a")
    b = bind(router, f"bob@{DOMAIN}/1")
    b.priority = -5
    await router.route(msg(f"bob@{DOMAIN}", str(a.jid)), a)
    assert not b.got and condition(a.got[0]) == "service-unavailable"
    stored: list[Any] = []
    router.hosts[DOMAIN].bus.on("message/offline", lambda ev: stored.append(ev) or True)
    await router.route(msg(f"bob@{DOMAIN}", str(a.jid)), a)
    assert len(stored) == 1 and stored[0].to == JID.parse(f"bob@{DOMAIN}")
    assert len(a.got) == 1


async def test_service_domain(router: Router) -> None:
    """A registered service domain (pubsub) reaches its host's modules as
    <kind>/service; unclaimed, an IQ get is service-unavailable and a message
    is dropped; an unregistered subdomain is remote-server-not-found."""
    svc = f"games.{DOMAIN}"
    host = router.hosts[DOMAIN]
    router.add_service(svc, host)
    a = bind(router, f"alice@{DOMAIN}/a")
    iq = stanza("iq", to=svc, frm=str(a.jid), type="get", id="i1")
    etree.SubElement(iq, "{http://jabber.org/protocol/disco#info}query")
    await router.route(iq, a)
    assert condition(a.got[-1]) == "service-unavailable"
    await router.route(msg(svc, str(a.jid)), a)
    assert len(a.got) == 1
    seen: list[Any] = []
    host.bus.on("message/service", lambda ev: seen.append((ev.to_type, str(ev.to))) or True)
    await router.route(msg(f"{svc}/x", str(a.jid)), a)
    assert seen == [("service", f"{svc}/x")]
    await router.route(msg(f"scores.{DOMAIN}", str(a.jid)), a)
    assert condition(a.got[-1]) == "remote-server-not-found"
