"""Per-user limits of the blocklist (XEP-0191, ``[host.options.blocking]``) and of
private XML storage (XEP-0049, ``[host.options.private]``), and private storage
under long names, end to end with real slixmpp clients."""

from __future__ import annotations

from typing import Any, Awaitable
from xml.etree.ElementTree import Element, SubElement

import pytest
from slixmpp.exceptions import IqError

from tests.conftest import DOMAIN, TIMEOUT, Running
from vinespy.jid import JID
from vinespy.modules.blocking import Blocking
from vinespy.modules.private import Private

pytestmark = pytest.mark.integration

PRIVATE = "{jabber:iq:private}query"
BLOCKING = "urn:xmpp:blocking"


def options(module: str, **values: int) -> str:
    return f"[host.options.{module}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())


async def login(srv: Running, local: str) -> Any:
    """``local`` (created here) logged in, its initial presence handled."""
    c = await srv.login(await srv.user(local), plugins=("xep_0191",))
    await c.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)
    return c


async def error_of(request: Awaitable[Any]) -> tuple[str, str]:
    """The condition and text of the stanza error the request is answered with."""
    with pytest.raises(IqError) as exc:
        await request
    return str(exc.value.iq["error"]["condition"]), str(exc.value.iq["error"]["text"])


# --- XEP-0191 blocklist --------------------------------------------------------


def block(client: Any, *jids: str) -> Awaitable[Any]:
    """One ``<block/>`` with an item per JID (slixmpp's block() sends the same)."""
    iq = client.make_iq_set()
    payload = SubElement(iq.xml, f"{{{BLOCKING}}}block")
    for jid in jids:
        SubElement(payload, f"{{{BLOCKING}}}item", {"jid": jid})
    return iq.send(timeout=TIMEOUT)


async def blocked(client: Any) -> set[str]:
    return {str(j) for j in await client.plugin["xep_0191"].get_blocked_jids(timeout=TIMEOUT)}


async def test_blocklist_limit(make_server: Any) -> None:
    """A blocklist of max_items JIDs takes no new one: the whole <block/> is
    refused with not-acceptable and nothing changes; blocking a JID again, or
    after an unblock, still works."""
    async with make_server(extra=options("blocking", max_items=3)) as srv:
        a = await login(srv, "alice")
        await block(a, "a@x.lit", "b@x.lit")
        condition, text = await error_of(block(a, "c@x.lit", "d@x.lit"))
        assert condition == "not-acceptable" and "3" in text
        assert await blocked(a) == {"a@x.lit", "b@x.lit"}
        await block(a, "c@x.lit", "a@x.lit")             # one new: fits exactly
        assert (await error_of(block(a, "d@x.lit")))[0] == "not-acceptable"
        await block(a, "b@x.lit")                         # already there
        await a.plugin["xep_0191"].unblock("a@x.lit", timeout=TIMEOUT)
        await block(a, "d@x.lit")
        assert await blocked(a) == {"b@x.lit", "c@x.lit", "d@x.lit"}
        stored = await srv.storage.get(JID.parse(a.boundjid.bare), "blocklist")
        assert sorted(stored) == ["b@x.lit", "c@x.lit", "d@x.lit"]


async def test_blocklist_default_limit(server: Running) -> None:
    """By default a blocklist holds 1000 JIDs (the 6,000 of the report are refused)."""
    assert Blocking.options["max_items"].default == 1000
    a = await login(server, "alice")
    await block(a, *(f"u{i}@x.lit" for i in range(1000)))
    assert (await error_of(block(a, "one-more@x.lit")))[0] == "not-acceptable"
    assert len(await blocked(a)) == 1000


# --- XEP-0049 private XML storage ------------------------------------------------


def private_iq(client: Any, kind: str, *children: Element) -> Any:
    iq = client.make_iq_set() if kind == "set" else client.make_iq_get()
    SubElement(iq.xml, PRIVATE).extend(children)
    return iq


def fragment(ns: str, name: str = "prefs", text: str = "") -> Element:
    el = Element(f"{{{ns}}}{name}")
    el.text = text
    return el


async def fetch(client: Any, ns: str, name: str = "prefs") -> Element:
    got = await private_iq(client, "get", fragment(ns, name)).send(timeout=TIMEOUT)
    (el,) = got.xml.find(PRIVATE)
    return el


async def test_private_fragment_limit(make_server: Any) -> None:
    """max_fragments qualified names per user: a set that would store one more
    is refused with not-acceptable and stores nothing; replacing one is fine."""
    extra = options("private", max_fragments=3)
    async with make_server(host={"private_storage": True}, extra=extra) as srv:
        a = await login(srv, "alice")
        b = await login(srv, "bob")
        for i in range(2):
            await private_iq(a, "set", fragment(f"urn:ex:{i}")).send(timeout=TIMEOUT)
        two = private_iq(a, "set", fragment("urn:ex:2", "one"), fragment("urn:ex:2", "two"))
        condition, text = await error_of(two.send(timeout=TIMEOUT))
        assert condition == "not-acceptable" and "3" in text
        assert (await fetch(a, "urn:ex:2", "one")).text is None       # nothing stored
        await private_iq(a, "set", fragment("urn:ex:2", "one")).send(timeout=TIMEOUT)
        over = private_iq(a, "set", fragment("urn:ex:3"))
        assert (await error_of(over.send(timeout=TIMEOUT)))[0] == "not-acceptable"
        await private_iq(a, "set", fragment("urn:ex:0", text="again")).send(timeout=TIMEOUT)
        assert (await fetch(a, "urn:ex:0")).text == "again"
        await private_iq(b, "set", fragment("urn:ex:3")).send(timeout=TIMEOUT)  # per user


async def test_private_default_limits() -> None:
    """By default 100 fragments of at most 64 KiB each per user."""
    assert Private.options["max_fragments"].default == 100
    assert Private.options["max_size"].default == 65536


async def test_private_fragment_size(make_server: Any) -> None:
    """A fragment larger than max_size bytes (serialized) is refused with
    not-acceptable and not stored."""
    extra = options("private", max_size=1024)
    async with make_server(host={"private_storage": True}, extra=extra) as srv:
        a = await login(srv, "alice")
        await private_iq(a, "set", fragment("urn:ex", text="x" * 900)).send(timeout=TIMEOUT)
        big = private_iq(a, "set", fragment("urn:ex", text="y" * 1100))
        condition, text = await error_of(big.send(timeout=TIMEOUT))
        assert condition == "not-acceptable" and "1024" in text
        assert (await fetch(a, "urn:ex")).text == "x" * 900


async def test_private_long_names(make_server: Any) -> None:
    """A 159-character namespace with a 67-character element name (too long for
    one file name once encoded) is stored and comes back."""
    ns = "http://example.org/protocol/" + "settings.v2/" * 10 + "x" * 11
    name = "Preferences." + "Window-Layout." * 3 + "x" * 13
    assert (len(ns), len(name)) == (159, 67)
    async with make_server(host={"private_storage": True}) as srv:
        a = await login(srv, "alice")
        await private_iq(a, "set", fragment(ns, name, "kept")).send(timeout=TIMEOUT)
        assert (await fetch(a, ns, name)).text == "kept"
