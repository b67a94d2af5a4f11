"""XEP-0280 §6 eligibility, <private/> removal and the carbon's shape, without sockets."""

from __future__ import annotations

from typing import Any

import pytest
from lxml import etree

from vinespy.jid import JID
from vinespy.modules.carbons import CARBONS, Carbons, carbon, copied_to, eligible, strip_private
from vinespy.xml import Element, serialize


def msg(inner: str = "", type: str | None = "chat") -> Element:
    t = f" type='{type}'" if type is not None else ""
    return etree.fromstring(f"<message xmlns='jabber:client' from='bob@w.lit/d' "
                            f"to='alice@w.lit/p'{t}>{inner}</message>")


BODY = "<body>hi</body>"


@pytest.mark.parametrize("type,inner,inbound,expected", [
    ("chat", BODY, True, True),
    ("chat", "", False, True),                       # chat: even without a body
    ("normal", BODY, True, True),
    (None, BODY, False, True),                       # no type is normal
    ("normal", "", True, False),
    ("normal", "<active xmlns='http://jabber.org/protocol/chatstates'/>", False, True),
    ("normal", "<received xmlns='urn:xmpp:receipts' id='1'/>", True, True),
    ("normal", "<displayed xmlns='urn:xmpp:chat-markers:0' id='1'/>", True, True),
    ("normal", "<x xmlns='jabber:x:oob'/>", True, False),
    ("error", "<error type='cancel'/>", True, True),  # a bounce coming back
    ("error", "<error type='cancel'/>", False, False),
    ("groupchat", BODY, True, False),
    ("headline", "", True, False),
    ("headline", BODY, True, False),                 # not in §6's rules
    ("bogus", BODY, True, False),
    ("chat", BODY + f"<private xmlns='{CARBONS}'/>", False, False),
    ("chat", BODY + "<no-copy xmlns='urn:xmpp:hints'/>", True, False),
    ("chat", BODY + "<no-store xmlns='urn:xmpp:hints'/>", True, True),
    ("chat", f"<sent xmlns='{CARBONS}'/>", True, False),
    ("chat", f"<received xmlns='{CARBONS}'/>", False, False),
    ("chat", BODY + "<x xmlns='http://jabber.org/protocol/muc#user'/>", True, False),
    ("normal", BODY + "<x xmlns='http://jabber.org/protocol/muc#user'><invite/></x>",
     True, False),
])
def test_eligible(type: str | None, inner: str, inbound: bool, expected: bool) -> None:
    assert eligible(msg(inner, type), inbound) is expected


def test_strip_private_removes_only_it() -> None:
    m = msg(BODY + f"<private xmlns='{CARBONS}'/><thread>t</thread>")
    strip_private(m)
    assert [etree.QName(el).localname for el in m] == ["body", "thread"]


def test_carbon_forwards_a_copy_with_the_original_type() -> None:
    original = msg(BODY + "<thread>t</thread>")
    out = carbon("received", JID.parse("alice@w.lit"), JID.parse("alice@w.lit/l"), original)
    original.set("to", "changed@w.lit")                   # the copy is its own
    assert serialize(out) == (
        b'<message to="alice@w.lit/l" from="alice@w.lit" type="chat">'
        b'<received xmlns="urn:xmpp:carbons:2"><forwarded xmlns="urn:xmpp:forward:0">'
        b'<message xmlns="jabber:client" from="bob@w.lit/d" to="alice@w.lit/p" type="chat">'
        b'<body>hi</body><thread>t</thread></message></forwarded></received></message>')
    assert carbon("sent", JID.parse("a@w.lit"), JID.parse("a@w.lit/x"),
                  msg(BODY, None)).get("type") is None


class FakeSession:
    def __init__(self, jid: str, available: bool = True, enabled: bool = True) -> None:
        self.jid = JID.parse(jid)
        self.available = available
        self.fields: dict[str, Any] = {"carbons.enabled": True} if enabled else {}


def test_copied_to_picks_available_enabled_others() -> None:
    a, b = FakeSession("u@w.lit/a"), FakeSession("u@w.lit/b")
    c, d = FakeSession("u@w.lit/c", available=False), FakeSession("u@w.lit/d", enabled=False)
    assert Carbons.enabled.key == "carbons.enabled"
    assert copied_to([a, b, c, d], [JID.parse("u@w.lit/a")]) == [b]   # type: ignore[list-item]
