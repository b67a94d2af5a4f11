"""What the WebSocket and BOSH framings do to the bytes the stream logic
writes (vinespy.http.frames.qualify) and the frames the WebSocket side
builds itself (vinespy.http.websocket.frame): pure functions, no sockets."""

from __future__ import annotations

import struct

import pytest
from lxml import etree

from vinespy import ns
from vinespy.errors import StreamError
from vinespy.http.frames import qualify
from vinespy.http.websocket import _LAST_TAG, frame
from vinespy.xml import parse_stanza, serialize

CLIENT = f"{{{ns.CLIENT}}}"


def standalone(data: bytes) -> etree._Element:
    """``data`` parsed with nothing around it, as a WebSocket client parses
    a message (RFC 7395 §3.3.3)."""
    return etree.fromstring(data)


@pytest.mark.parametrize("data", [
    b"<message to='a@b' type='chat'><body>hi</body></message>",
    b"<presence/>",
    b"<presence>\n<show>away</show></presence>",
    b"<iq type='result' id='1'/>",
    b"<iq\ttype='result' id='1'/>",
    b"<message xmlns:x='urn:x' to='a@b'><x:y/></message>",
])
def test_stanzas_get_jabber_client(data: bytes) -> None:
    el = standalone(qualify(data))
    assert el.tag.startswith(CLIENT)
    assert all(child.tag.startswith(CLIENT) for child in el if child.tag.startswith("{jabber"))
    assert qualify(data).count(b"xmlns='jabber:client'") == 1


def test_a_serialized_stanza_round_trips() -> None:
    """What vinespy.xml.serialize writes (no default xmlns) comes out in
    jabber:client with its children and attributes as they were."""
    el = parse_stanza(b"<message to='a@b' id='x&apos;1'><body>a &lt; b</body>"
                      b"<active xmlns='http://jabber.org/protocol/chatstates'/></message>")
    data = serialize(el)
    assert b"xmlns=" not in data.split(b">")[0]
    out = standalone(qualify(data))
    assert out.tag == f"{CLIENT}message" and out.get("id") == "x'1"
    assert out.findtext(f"{CLIENT}body") == "a < b"
    assert out[1].tag == "{http://jabber.org/protocol/chatstates}active"


@pytest.mark.parametrize("data", [
    b"<message xmlns='jabber:client' to='a@b'/>",
    b'<iq xmlns="jabber:server" type="get" id="1"/>',
])
def test_a_stated_namespace_is_left_alone(data: bytes) -> None:
    assert qualify(data) == data


@pytest.mark.parametrize("data", [
    b"<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>",
    StreamError("host-unknown", "x").to_bytes(),
    b"<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
])
def test_stream_elements_get_the_stream_prefix(data: bytes) -> None:
    out = qualify(data)
    el = standalone(out)
    assert el.tag.startswith(f"{{{ns.STREAM}}}")
    assert out.count(b"xmlns:stream=") == 1
    assert qualify(out) == out                  # once only


def test_stream_prefix_can_be_left_out() -> None:
    """BOSH declares xmlns:stream on its <body/>: nothing to add there."""
    data = b"<stream:features/>"
    assert qualify(data, stream_prefix=False) == data


@pytest.mark.parametrize("data", [
    b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='a' version='1.0'/>",
    b"<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>",
    b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
    b"<r xmlns='urn:xmpp:sm:3'/>",
    b"<messages/>",                 # a name that only starts like a stanza's
    b"<iqx/>",
])
def test_other_elements_are_untouched(data: bytes) -> None:
    assert qualify(data) == data


def decode(data: bytes) -> tuple[int, bool, bytes]:
    """(first byte, masked, payload) of one whole frame (RFC 6455 §5.2)."""
    first, second = data[0], data[1]
    n, at = second & 0x7F, 2
    if n == 126:
        (n,), at = struct.unpack("!H", data[2:4]), 4
    elif n == 127:
        (n,), at = struct.unpack("!Q", data[2:10]), 10
    payload = data[at:]
    assert len(payload) == n
    return first, bool(second & 0x80), payload


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_frame_lengths(size: int) -> None:
    """An unmasked final text frame with the shortest length encoding."""
    payload = b"x" * size
    data = frame(payload)
    first, masked, body = decode(data)
    assert first == 0x81 and not masked and body == payload
    header = len(data) - size
    assert header == (2 if size < 126 else 4 if size < 65536 else 10)


@pytest.mark.parametrize("message,ok", [
    (b"<presence/>", True),
    (b"<iq id='a>b' type='get'/>", True),
    (b'<iq id="a>b" type="get"/>\r\n ', True),
    (b"<message><body>x &gt; y</body></message>", True),
    (b"<message><![CDATA[<b>]]></message>", True),
    (b"<presence/>junk", False),
    (b"<presence/>x>", False),
    (b"<presence/>x/>", False),
    (b"<presence/><![CDATA[<x/>]]>", False),
])
def test_last_tag_ends_the_message(message: bytes, ok: bool) -> None:
    """Nothing but whitespace may follow a message's element."""
    assert bool(_LAST_TAG.match(message, message.rfind(b"<"))) is ok
