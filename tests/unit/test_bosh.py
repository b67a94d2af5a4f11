"""BOSH bodies (XEP-0124 + XEP-0206) as pure functions: parse_body and
terminate, without sockets."""

from __future__ import annotations

from xml.etree import ElementTree

import pytest

from vinespy import ns
from vinespy.http.bosh import BadRequest, parse_body, terminate
from vinespy.stream.parser import StreamParser

B = f"{{{ns.HTTPBIND}}}"
BODY = f"<body xmlns='{ns.HTTPBIND}' xmlns:xmpp='{ns.XBOSH}'"
LIMIT = 65536


def test_attributes_and_payload_of_a_body() -> None:
    data = (f"{BODY} rid='42' sid='abc' xml:lang='en' xmpp:restart='true'>"
            "<message xmlns='jabber:client' to='a@b'><body>hi &amp; bye</body></message>"
            "<presence xmlns='jabber:client'/></body>").encode()
    attrs, payload = parse_body(data, LIMIT)
    assert attrs["rid"] == "42" and attrs["sid"] == "abc"
    assert attrs[f"{{{ns.XBOSH}}}restart"] == "true"
    assert attrs["xml:lang"] == "en"
    assert [el.tag for el in payload] == [f"{{{ns.CLIENT}}}message", f"{{{ns.CLIENT}}}presence"]
    assert payload[0].findtext(f"{{{ns.CLIENT}}}body") == "hi & bye"


def test_an_empty_body_has_no_payload() -> None:
    attrs, payload = parse_body(f"{BODY} rid='1' sid='s'/>".encode(), LIMIT)
    assert attrs["rid"] == "1" and payload == []
    attrs, payload = parse_body(f"{BODY} rid='1' sid='s'>  \n</body>".encode(), LIMIT)
    assert payload == []


def test_a_prolog_is_accepted() -> None:
    attrs, _ = parse_body(f"<?xml version='1.0' encoding='utf-8'?>{BODY} rid='7'/>".encode(),
                          LIMIT)
    assert attrs["rid"] == "7"


def test_a_stanza_without_a_namespace_is_taken_as_jabber_client() -> None:
    """XEP-0206 §5: stanzas must say jabber:client; one that inherits the
    body's namespace is taken as jabber:client, children too (as Prosody
    does); other elements keep theirs."""
    _, payload = parse_body(f"{BODY} rid='1'><message to='a@b'><body>hi</body></message>"
                            f"<other/></body>".encode(), LIMIT)
    assert payload[0].tag == "{jabber:client}message"
    assert payload[0][0].tag == "{jabber:client}body"
    assert payload[1].tag == f"{B}other"


def test_one_parser_serves_body_after_body() -> None:
    """A parser reused (what the server does) parses each body as a new
    one, also after a body that was not well-formed."""
    parser = StreamParser(max_stanza_size=LIMIT)
    for i in range(3):
        attrs, payload = parse_body(f"{BODY} rid='{i}'><message xmlns='jabber:client'/>"
                                    f"</body>".encode(), LIMIT, parser)
        assert attrs["rid"] == str(i) and len(payload) == 1
    with pytest.raises(BadRequest):
        parse_body(f"{BODY} rid='9'><a></body>".encode(), LIMIT, parser)
    attrs, _ = parse_body(f"{BODY} rid='10'/>".encode(), LIMIT, parser)
    assert attrs["rid"] == "10"


@pytest.mark.parametrize("data", [
    b"",
    b"not xml at all",
    b"<body xmlns='http://jabber.org/protocol/httpbind' rid='1'>",            # not closed
    b"<body xmlns='http://jabber.org/protocol/httpbind' rid='1'><a></body>",  # not well-formed
    b"<body rid='1'/>",                                                       # no namespace
    b"<iq xmlns='http://jabber.org/protocol/httpbind' rid='1'/>",             # wrong root
    b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'/>",
    b"<!DOCTYPE body><body xmlns='http://jabber.org/protocol/httpbind' rid='1'/>",
    b"<!DOCTYPE body [<!ENTITY x 'y'>]><body xmlns='http://jabber.org/protocol/httpbind' "
    b"rid='1'>&x;</body>",
    b"<body xmlns='http://jabber.org/protocol/httpbind' rid='1'><?pi x?></body>",
], ids=["empty", "text", "unclosed", "malformed", "no-ns", "wrong-root", "stream",
        "doctype", "entity", "processing-instruction"])
def test_what_is_not_one_body_is_a_bad_request(data: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_body(data, LIMIT)


def test_a_stanza_over_the_limit_is_a_bad_request() -> None:
    big = "x" * 2000
    data = f"{BODY} rid='1'><message xmlns='jabber:client'><body>{big}</body></message></body>"
    parse_body(data.encode(), 4096)
    with pytest.raises(BadRequest):
        parse_body(data.encode(), 1024)


def test_terminate_bodies() -> None:
    plain = ElementTree.fromstring(terminate())
    assert plain.tag == f"{B}body" and plain.get("type") == "terminate"
    assert plain.get("condition") is None and list(plain) == []
    cond = ElementTree.fromstring(terminate("item-not-found"))
    assert cond.get("type") == "terminate" and cond.get("condition") == "item-not-found"
    payload = (b"<stream:error><system-shutdown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
               b"</stream:error><message xmlns='jabber:client'><body>last</body></message>")
    full = ElementTree.fromstring(terminate("remote-stream-error", payload))
    assert full.get("condition") == "remote-stream-error"
    assert [el.tag for el in full] == [f"{{{ns.STREAM}}}error", f"{{{ns.CLIENT}}}message"]
    # What terminate() writes parses back as a body.
    attrs, elements = parse_body(terminate("system-shutdown", payload), LIMIT)
    assert attrs["type"] == "terminate" and len(elements) == 2
