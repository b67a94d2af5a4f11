"""RFC 6121 §4 presence as a client sees it, byte by byte (issue 10 items 4 and 8):
a user's own presence comes back to the resource that sent it, and the
server bounds what one resource makes it remember (directed presence,
status text).

Each client is a raw connection. "Nothing arrived" is shown by order, never
by waiting: one stream's stanzas are handled in order, so once a ping sent
after a stanza is answered, everything that stanza caused has been written.
"""

from __future__ import annotations

import itertools
import re
import ssl
from typing import Any

import pytest

from tests.conftest import DOMAIN, PASSWORD, Running
from tests.rawclient import Raw
from vinespy.jid import JID

pytestmark = pytest.mark.integration

_ids = itertools.count()


class Client:
    """A raw, bound session; ``sync`` returns what arrived before a ping's answer."""

    def __init__(self, raw: Raw, jid: str) -> None:
        self.raw = raw
        self.jid = jid

    def send(self, xml: str) -> None:
        self.raw.send(xml)

    def abort(self) -> None:
        """As slixmpp's: the server fixture drops us at teardown without waiting."""
        self.raw.writer.transport.abort()

    async def sync(self) -> bytes:
        """Everything received up to the answer of a ping sent now."""
        n = next(_ids)
        self.raw.send(f"<iq type='get' id='sync{n}' to='{DOMAIN}'>"
                      "<ping xmlns='urn:xmpp:ping'/></iq>")
        m = await self.raw.expect(rb"(.*?)<iq[^>]*\bid=\"sync%d\"[^>]*/?>" % n)
        return m.group(1)

    async def until(self, text: str) -> bytes:
        """Everything received up to a message whose body is ``text`` (with
        whatever else it carries: the archive's stanza-id, XEP-0359)."""
        m = await self.raw.expect(rb"(.*?)<message[^>]*>(?:(?!</message>).)*?<body>%s</body>"
                                  rb".*?</message>" % re.escape(text.encode()))
        return m.group(1)


async def login(srv: Running, local: str, resource: str = "one") -> Client:
    if await srv.storage.find_user(JID.parse(f"{local}@{DOMAIN}")) is None:
        await srv.user(local)
    ctx = ssl.create_default_context()
    srv.ca.configure_trust(ctx)
    raw = await Raw.connect(srv.port)
    jid = await raw.login(DOMAIN, ctx, local, PASSWORD, resource)
    client = Client(raw, jid)
    srv.clients.append(client)          # aborted at teardown
    return client


def presences(data: bytes, frm: str | None, type: str | None = None) -> list[bytes]:
    """The <presence/> stanzas in ``data`` from ``frm`` (None: any) of ``type``
    (None: available)."""
    out = []
    for m in re.finditer(rb"<presence\b[^>]*?(/>|>.*?</presence>)", data, re.S):
        st = m.group(0)
        head = st[:st.index(b">")]
        if frm is not None and f'from="{frm}"'.encode() not in head:
            continue
        t = re.search(rb'\btype="([^"]*)"', head)
        if (t.group(1).decode() if t else None) == type:
            out.append(st)
    return out


def error_condition(st: bytes) -> str:
    m = re.search(rb"<([a-z-]+) xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"", st)
    assert m is not None, st
    return m.group(1).decode()


# --- item 4: one's own presence comes back (RFC 6121 §4.2.2, §4.4.2, §4.5.2) ------


async def test_initial_presence_comes_back_to_the_resource_that_sent_it(server: Running) -> None:
    """§4.2.2: initial presence goes to all of the user's available resources,
    "including the resource that generated the presence notification"."""
    one = await login(server, "alice")
    one.send("<presence><priority>3</priority><status>here</status></presence>")
    got = presences(await one.sync(), one.jid)
    assert len(got) == 1, got
    assert b"<priority>3</priority>" in got[0] and b"<status>here</status>" in got[0]


async def test_updates_and_unavailable_reach_every_resource_and_the_sender(
        server: Running) -> None:
    """§4.4.2 (a later available presence) and §4.5.2 (unavailable): the
    sender gets its own presence back, once, and so does its sibling."""
    one = await login(server, "alice", "one")
    two = await login(server, "alice", "two")
    one.send("<presence/>")
    two.send("<presence/>")
    assert len(presences(await one.sync(), one.jid)) == 1
    seen_by_two = await two.sync()
    assert len(presences(seen_by_two, two.jid)) == 1
    assert len(presences(seen_by_two, one.jid)) == 1          # the sibling's initial presence

    one.send("<presence><show>away</show></presence>")
    mine = await one.sync()
    assert [b"<show>away</show>" in p for p in presences(mine, one.jid)] == [True]
    assert presences(mine, two.jid) == []                     # only what changed
    one.send(f"<message to='{two.jid}' type='chat'><body>s1</body></message>")
    assert len(presences(await two.until("s1"), one.jid)) == 1

    one.send("<presence type='unavailable'><status>bye</status></presence>")
    mine = await one.sync()
    assert len(presences(mine, one.jid, "unavailable")) == 1
    one.send(f"<message to='{two.jid}' type='chat'><body>s2</body></message>")
    assert len(presences(await two.until("s2"), one.jid, "unavailable")) == 1


# --- item 8: what one resource can make the server remember -------------------------


async def test_directed_presence_beyond_max_directed_is_refused(make_server: Any) -> None:
    """[host.options.presence] max_directed = 3: a fourth JID gets no directed
    presence, the sender gets <policy-violation/>; a JID already remembered
    can be sent presence again, and directed unavailable frees a place. The
    remembered JIDs get unavailable when the resource goes away (§4.6.3)."""
    async with make_server(extra="[host.options.presence]\nmax_directed = 3\n") as srv:
        alice = await login(srv, "alice")
        carol = await login(srv, "carol")
        alice.send("<presence/>")
        for i in range(3):
            alice.send(f"<presence to='n{i}@{DOMAIN}'/>")
        before = await alice.sync()
        assert b'type="error"' not in before
        alice.send(f"<presence to='{carol.jid}'><status>4th</status></presence>")
        refused = presences(await alice.sync(), carol.jid, "error")
        assert len(refused) == 1 and error_condition(refused[0]) == "policy-violation"
        alice.send(f"<message to='{carol.jid}' type='chat'><body>s1</body></message>")
        assert presences(await carol.until("s1"), alice.jid) == []

        alice.send(f"<presence to='n0@{DOMAIN}'><show>dnd</show></presence>")   # known: fine
        alice.send(f"<presence to='n1@{DOMAIN}' type='unavailable'/>")          # frees one
        alice.send(f"<presence to='{carol.jid}'><status>now</status></presence>")
        assert b'type="error"' not in await alice.sync()
        alice.send(f"<message to='{carol.jid}' type='chat'><body>s2</body></message>")
        assert len(presences(await carol.until("s2"), alice.jid)) == 1

        alice.send("<presence type='unavailable'/>")
        await alice.sync()
        alice.send(f"<message to='{carol.jid}' type='chat'><body>s3</body></message>")
        assert len(presences(await carol.until("s3"), alice.jid, "unavailable")) == 1


async def test_presence_with_a_status_over_max_status_is_refused(server: Running) -> None:
    """RFC 6121 §4.7.2.2 sets no length; the server keeps each available
    resource's presence (for probes, and in Redis in a cluster), so it
    bounds its status text: max_status = 1024 characters by default. Over
    it, broadcast or directed, the sender gets <policy-violation/> and
    nobody gets the presence; at the limit it goes out."""
    one = await login(server, "alice", "one")
    two = await login(server, "alice", "two")
    carol = await login(server, "carol")
    two.send("<presence/>")
    await two.sync()
    one.send(f"<presence><status>{'x' * 1025}</status></presence>")
    mine = await one.sync()
    refused = presences(mine, None, "error")
    assert len(refused) == 1 and error_condition(refused[0]) == "policy-violation"
    assert presences(mine, one.jid) == []                   # not reflected: refused
    one.send(f"<message to='{two.jid}' type='chat'><body>s1</body></message>")
    assert presences(await two.until("s1"), one.jid) == []

    one.send(f"<presence><status>{'é' * 1024}</status></presence>")
    assert len(presences(await one.sync(), one.jid)) == 1
    one.send(f"<message to='{two.jid}' type='chat'><body>s2</body></message>")
    assert len(presences(await two.until("s2"), one.jid)) == 1

    one.send(f"<presence to='{carol.jid}'><status>{'y' * 1025}</status></presence>")
    refused = presences(await one.sync(), carol.jid, "error")
    assert len(refused) == 1 and error_condition(refused[0]) == "policy-violation"
    one.send(f"<message to='{carol.jid}' type='chat'><body>s3</body></message>")
    assert presences(await carol.until("s3"), one.jid) == []
