"""XEP-0114's pure parts: the handshake check and the namespace change."""

from __future__ import annotations

import hashlib


from vinespy import ns
from vinespy.stream.component import handshake_digest, handshake_ok, route_jid
from vinespy.xml import to_client
from vinespy.stream.parser import StreamParser
from vinespy.xml import serialize


def parsed(stanza: str) -> object:
    """``stanza`` as a component stream's parser hands it over."""
    p = StreamParser()
    events = p.feed(f"<stream:stream xmlns='{ns.COMPONENT}' xmlns:stream='{ns.STREAM}' "
                    f"to='tea.wonderland.lit'>{stanza}".encode())
    return events[1]


def test_handshake_digest_is_hex_sha1_of_id_then_secret() -> None:
    """XEP-0114 §3: SHA-1 of the stream id followed by the secret, lower-case hex."""
    assert handshake_digest("3BF96D32", "sécret") == \
        hashlib.sha1("3BF96D32sécret".encode()).hexdigest()


def test_handshake_ok() -> None:
    """Upper-case hex and surrounding whitespace pass; anything else fails, never raises."""
    good = handshake_digest("abc", "s")
    assert handshake_ok(good, "abc", "s")
    assert handshake_ok(f"\n {good.upper()} ", "abc", "s")
    assert not handshake_ok(handshake_digest("abc", "t"), "abc", "s")
    assert not handshake_ok(None, "abc", "s")
    assert not handshake_ok("é" * 40, "abc", "s")      # non-ASCII: False, not TypeError


def test_to_client_changes_the_stream_namespace_only() -> None:
    """Elements of jabber:component:accept become jabber:client; others stay."""
    el = to_client(parsed("<message to='a@wonderland.lit' from='tea.wonderland.lit'>"
                          "<body>hi</body><x xmlns='urn:y'><body/></x>"
                          "<error type='cancel'><gone xmlns="
                          "'urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"),
                   ns.COMPONENT)
    assert el.tag == f"{{{ns.CLIENT}}}message"
    assert [c.tag for c in el] == [f"{{{ns.CLIENT}}}body", "{urn:y}x", f"{{{ns.CLIENT}}}error"]
    assert el[1][0].tag == "{urn:y}body"
    assert serialize(el) == (b'<message to="a@wonderland.lit" from="tea.wonderland.lit">'
                             b'<body>hi</body><x xmlns="urn:y"><body/></x><error type="cancel">'
                             b'<gone xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error>'
                             b'</message>')


def test_to_client_takes_a_prefixed_stanza_too() -> None:
    """The namespace under a prefix is the same namespace: renamed all the same."""
    el = to_client(parsed(f"<c:message xmlns:c='{ns.COMPONENT}' to='a@b'><c:body>x</c:body>"
                          "</c:message>"), ns.COMPONENT)
    assert serialize(el) == b'<message to="a@b"><body>x</body></message>'


def test_route_jid() -> None:
    """A component's route is a full JID of its domain (bare: the domain)."""
    r = route_jid("tea.wonderland.lit")
    assert (r.local, r.domain, str(r.bare)) == ("", "tea.wonderland.lit", "tea.wonderland.lit")
    assert r.resource
