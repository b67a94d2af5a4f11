"""The incremental stream parser: events, chunking, and RFC 6120 §11 restrictions."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from vinespy import ns
from vinespy.errors import StreamError
from vinespy.stream.parser import Event, IdleRelease, StreamClosed, StreamOpened, StreamParser
from vinespy.xml import serialize

HEADER = (b"<?xml version='1.0'?>"
          b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
          b" to='example.com' from='juliet@example.com' version='1.0' xml:lang='en' id='s1'>")
CLOSE = b"</stream:stream>"

# Multibyte UTF-8 (2, 3 and 4 bytes), namespaced children, entities in
# attributes and text, CDATA, an empty element, whitespace keepalives.
STANZAS = (
    "<message to='romeo@example.net' from='juliet@example.com/balcony' type='chat'"
    " id='m&amp;1' title='&#x263A; caf\u00e9'>"
    "<body>Wherefore art thou, Romeo? \u263a \u65e5\u672c \U0001f600 &lt;3 &amp; &#233;</body>"
    "<x xmlns='jabber:x:data' type='form'><field var='a&quot;b'><value>1</value></field></x>"
    "<html xmlns='http://jabber.org/protocol/xhtml-im'>"
    "<body xmlns='http://www.w3.org/1999/xhtml'><p>hi<br/></p></body></html>"
    "</message>\n \t"
    "<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>"
    " "
    "<presence><status><![CDATA[a & b < c]]></status></presence>"
).encode()
STREAM = HEADER + STANZAS + b"\n" + CLOSE


def describe(events: list[Event]) -> list[Any]:
    """Events in a comparable form: elements as their serialized bytes."""
    return [serialize(e) if isinstance(e, etree._Element) else e for e in events]


def feed_chunks(parser: StreamParser, chunks: list[bytes]) -> list[Event]:
    events: list[Event] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events


def one_byte_at_a_time(data: bytes) -> list[bytes]:
    return [data[i:i + 1] for i in range(len(data))]


def reject(data: bytes | list[bytes], condition: str, **kwargs: int) -> StreamError:
    """Feed ``data`` to a fresh parser and expect a stream error ``condition``."""
    parser = StreamParser(**kwargs)
    chunks = [data] if isinstance(data, bytes) else data
    with pytest.raises(StreamError) as info:
        feed_chunks(parser, chunks)
    assert info.value.condition == condition, str(info.value)
    return info.value


WHOLE = describe(StreamParser().feed(STREAM))


# -- events -------------------------------------------------------------------

def test_header_attributes() -> None:
    """The stream header gives its attributes, default namespace and root name."""
    events = StreamParser().feed(HEADER)
    assert events == [StreamOpened(
        attrs={"to": "example.com", "from": "juliet@example.com", "version": "1.0",
               "xml:lang": "en", "id": "s1"},
        namespace=ns.CLIENT, stream_ns=ns.STREAM, local_name="stream")]


def test_header_without_default_namespace() -> None:
    """A header with no default namespace reports namespace "" (the caller rejects it)."""
    events = StreamParser().feed(b"<stream:stream xmlns:stream='http://etherx.jabber.org/"
                                 b"streams' to='example.com'>")
    assert events == [StreamOpened(attrs={"to": "example.com"}, namespace="",
                                   stream_ns=ns.STREAM, local_name="stream")]


def test_header_in_wrong_namespace_is_reported_not_refused() -> None:
    """A root element in another namespace is reported as is; checking it is the caller's job."""
    (opened,) = StreamParser().feed(b"<foo xmlns='jabber:client'>")
    assert opened == StreamOpened(attrs={}, namespace=ns.CLIENT, stream_ns=ns.CLIENT,
                                  local_name="foo")


def test_whole_stream_events() -> None:
    """A stream fed whole gives the header, each stanza in order, then StreamClosed."""
    assert WHOLE[0] == StreamParser().feed(HEADER)[0]
    assert [e[:4] for e in WHOLE[1:-1]] == [b"<mes", b"<iq ", b"<pre"]
    assert WHOLE[-1] == StreamClosed()


def test_several_stanzas_in_one_chunk() -> None:
    """Several stanzas arriving in one chunk are all returned, in order."""
    parser = StreamParser()
    parser.feed(HEADER)
    events = parser.feed(b"<iq id='1' type='get'/><iq id='2' type='get'/>"
                         b"<message><body>x</body></message><presence/>")
    assert describe(events) == [b'<iq id="1" type="get"/>', b'<iq id="2" type="get"/>',
                                b"<message><body>x</body></message>", b"<presence/>"]


def test_one_byte_at_a_time_same_as_whole() -> None:
    """Feeding one byte at a time (splitting UTF-8 sequences and tags) gives the same events."""
    events = feed_chunks(StreamParser(), one_byte_at_a_time(STREAM))
    assert describe(events) == WHOLE


def test_every_split_point() -> None:
    """Cutting the stream in two at every possible index gives the same events."""
    for i in range(len(STREAM) + 1):
        events = feed_chunks(StreamParser(), [STREAM[:i], STREAM[i:]])
        assert describe(events) == WHOLE, i


def test_text_and_entities_decoded() -> None:
    """Character references, predefined entities, UTF-8 and CDATA decode to the right text."""
    message, _, presence = StreamParser().feed(STREAM)[1:4]
    assert isinstance(message, etree._Element) and isinstance(presence, etree._Element)
    assert message.get("id") == "m&1"
    assert message.get("title") == "\u263a caf\u00e9"
    body = message.find(f"{{{ns.CLIENT}}}body")
    assert body is not None
    assert body.text == "Wherefore art thou, Romeo? \u263a \u65e5\u672c \U0001f600 <3 & \u00e9"
    assert presence.findtext(f"{{{ns.CLIENT}}}status") == "a & b < c"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=40))
def test_random_chunking_same_stanzas(cuts: list[int]) -> None:
    """Any chunking of a valid stream yields identical serialized stanzas."""
    bounds = [0, *sorted(set(cuts)), len(STREAM)]
    chunks = [STREAM[a:b] for a, b in zip(bounds, bounds[1:])]
    assert describe(feed_chunks(StreamParser(), chunks)) == WHOLE


def test_stanza_detached_and_serializes_cleanly() -> None:
    """A stanza is detached, keeps jabber:client as default namespace, and serializes bare."""
    parser = StreamParser()
    parser.feed(HEADER)
    (stanza,) = parser.feed(b"<message to='b@a'><body>hi</body></message> ")
    assert isinstance(stanza, etree._Element)
    assert stanza.getparent() is None
    assert stanza.tail is None
    assert stanza.tag == f"{{{ns.CLIENT}}}message"
    assert stanza.nsmap == {None: ns.CLIENT}
    assert serialize(stanza) == b'<message to="b@a"><body>hi</body></message>'


def test_stanza_using_stream_prefix_keeps_it() -> None:
    """A first-level element in the stream namespace keeps its prefix declaration."""
    parser = StreamParser()
    parser.feed(HEADER)
    (error,) = parser.feed(b"<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
                           b"</stream:error>")
    assert isinstance(error, etree._Element)
    assert error.tag == f"{{{ns.STREAM}}}error"
    assert etree.fromstring(etree.tostring(error)).tag == error.tag


def test_memory_stays_flat() -> None:
    """After 10,000 stanzas and keepalives the stream's root holds no children and no text."""
    parser = StreamParser()
    parser.feed(HEADER)
    count = 0
    for i in range(10_000):
        count += len(parser.feed(b"<message to='a@b' id='%d'><body>x</body></message>\n" % i))
        if i % 7 == 0:
            parser.feed(b" " * 400)      # enough for libxml2 to deliver it as text
    assert count == 10_000
    root = parser._root                  # white-box: the tree the parser keeps
    assert root is not None
    assert len(root) == 0
    assert root.text is None


# -- releasing an idle stream's state ------------------------------------------

def feed_releasing(parser: StreamParser, chunks: list[bytes]) -> tuple[list[Event], int]:
    """Feed ``chunks``, asking the parser to release its state after each;
    the events and how many times it did."""
    events: list[Event] = []
    released = 0
    for chunk in chunks:
        events += parser.feed(chunk)
        released += parser.release()
    return events, released


def test_release_then_feed_same_events_at_every_split() -> None:
    """Released after every chunk it can be, the parser gives the events it
    gives unreleased, wherever the stream is cut in three."""
    released = 0
    for i in range(len(STREAM) + 1):
        for j in (i + 1, i + 7, i + 40):
            events, n = feed_releasing(StreamParser(), [STREAM[:i], STREAM[i:j], STREAM[j:]])
            assert describe(events) == WHOLE, (i, j)
            released += n
    assert released >= 30                  # it did, at the cuts between stanzas


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=40))
def test_release_random_chunking_same_stanzas(cuts: list[int]) -> None:
    """Any chunking, releasing whenever possible, yields identical stanzas."""
    bounds = [0, *sorted(set(cuts)), len(STREAM)]
    chunks = [STREAM[a:b] for a, b in zip(bounds, bounds[1:])]
    events, _ = feed_releasing(StreamParser(), chunks)
    assert describe(events) == WHOLE


def test_release_frees_the_tree_and_rebuilds_it() -> None:
    """Released, the parser holds no tree; the next bytes open the stream
    again (in the same lxml parser), and a stanza split across reads after
    it parses whole."""
    parser = StreamParser()
    parser.feed(HEADER + b"<presence/>")
    lxml_parser = parser._parser            # white-box
    assert parser.release() and parser.released
    assert parser._root is None
    assert parser.feed(b"<message to='a@b'><bo") == []
    assert not parser.released
    assert not parser.release()             # a stanza is half received
    assert describe(parser.feed(b"dy>x</body></message>")) == [
        b'<message to="a@b"><body>x</body></message>']
    assert parser._parser is lxml_parser


def test_release_keeps_the_stream_namespaces() -> None:
    """Stanzas after a release keep jabber:client as default namespace, and
    a prefix the client declared on its header is still declared."""
    parser = StreamParser()
    parser.feed(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/"
                b"streams' xmlns:x='urn:x' to='example.com' version='1.0'>")
    assert parser.release()
    (msg,) = parser.feed(b"<message><x:y/></message>")
    assert isinstance(msg, etree._Element)
    assert msg.nsmap[None] == ns.CLIENT
    assert msg[0].tag == "{urn:x}y"
    assert parser.release()
    (error,) = parser.feed(b"<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
                           b"</stream:error>")
    assert isinstance(error, etree._Element) and error.tag == f"{{{ns.STREAM}}}error"
    assert parser.release()
    assert parser.feed(CLOSE) == [StreamClosed()]


@pytest.mark.parametrize("tail", [
    b"<presence a='>",                  # '>' inside a quoted attribute: the tag goes on
    b"<presence a='>'",
    b"<mess",
    b"<![CDATA[ >",                     # not a tag: never released after one
    b"<presence/>x",                    # text after the tag
])
def test_release_refused_while_libxml2_may_hold_a_partial_tag(tail: bytes) -> None:
    """Nothing is released while the last bytes do not end with a whole tag."""
    parser = StreamParser()
    parser.feed(HEADER)
    try:
        parser.feed(tail)
    except StreamError:
        return                           # refused outright: nothing to release either
    assert not parser.release()


def test_release_after_keepalives() -> None:
    """Whitespace keepalives after a stanza leave it releasable; parsing goes on."""
    parser = StreamParser()
    parser.feed(HEADER + b"<presence/>")
    parser.feed(b" ")
    parser.feed(b"\n")
    assert parser.release()
    assert parser.feed(b" ") == []
    assert parser.release()
    assert describe(parser.feed(b"<presence/>")) == [b"<presence/>"]


def test_release_refused_before_the_header_after_close_and_error() -> None:
    parser = StreamParser()
    assert not parser.release()
    parser.feed(HEADER[:20])
    assert not parser.release()
    parser.feed(HEADER[20:] + CLOSE)
    assert not parser.release()
    bad = StreamParser()
    bad.feed(HEADER)
    with pytest.raises(StreamError):
        bad.feed(b"<a></b>")
    assert not bad.release()


def test_release_keeps_errors_and_limits() -> None:
    """After a release, bad input is refused as before, and the size limit holds."""
    parser = StreamParser(max_stanza_size=1000)
    parser.feed(HEADER + b"<presence/>")
    assert parser.release()
    with pytest.raises(StreamError) as info:
        parser.feed(b"<message><body>" + b"x" * 2000)
    assert info.value.condition == "policy-violation"
    for release in (False, True):
        parser = StreamParser()
        parser.feed(HEADER + b"<presence/>")
        assert not release or parser.release()
        with pytest.raises(StreamError) as info:
            parser.feed(b"hello<presence/>")
        assert info.value.condition == "bad-format"
        with pytest.raises(StreamError):
            parser.feed(b"<presence/>")          # dead, released or not


def test_reset_after_release() -> None:
    """reset() (a new stream header) works on a released parser."""
    parser = StreamParser()
    parser.feed(HEADER + b"<presence/>")
    assert parser.release()
    parser.reset()
    events = parser.feed(HEADER + b"<presence/>")
    assert isinstance(events[0], StreamOpened)
    assert describe(events[1:]) == [b"<presence/>"]


def test_reset_between_stanzas_leaves_no_cyclic_garbage() -> None:
    """Released, or reset between stanzas (STARTTLS, SASL), the stream's
    document is closed and its parser reused: nothing is left for the cyclic
    garbage collector. Reset with an element open, a new parser is made."""
    import gc
    parser = StreamParser()
    parser.feed(HEADER + b"<presence/>")
    gc.collect()
    gc.disable()
    try:
        lxml_parser = parser._parser        # white-box
        parser.release()
        parser.feed(b"<presence/>")
        parser.reset()
        parser.feed(HEADER + b"<presence/>")
        parser.reset()
        assert parser._parser is lxml_parser
        assert gc.collect() == 0
        parser.feed(HEADER + b"<presence>")
        parser.reset()
        assert parser._parser is not lxml_parser
    finally:
        gc.enable()


def test_idle_release_releases_parsers_not_fed_for_a_period() -> None:
    """tick() releases the parsers fed before the previous tick and not since."""
    idle = IdleRelease()
    busy, quiet = StreamParser(), StreamParser()
    for p in (busy, quiet):
        idle.watch(p)
        p.feed(HEADER + b"<presence/>")
    assert idle.tick() == 0                 # both were fed in this period
    busy.feed(b"<presence/>")
    assert idle.tick() == 1
    assert quiet.released and not busy.released
    assert idle.tick() == 1                 # busy went quiet in turn
    assert busy.released
    assert idle.tick() == 0
    assert describe(quiet.feed(b"<presence/>")) == [b"<presence/>"]
    assert idle.tick() == 0 and idle.tick() == 1 and quiet.released


def test_reset_expects_new_header() -> None:
    """reset() (after STARTTLS / SASL) discards the old stream and parses a new header."""
    parser = StreamParser()
    parser.feed(HEADER + b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
    parser.reset()
    events = parser.feed(HEADER + b"<iq type='set' id='b'/>")
    assert isinstance(events[0], StreamOpened)
    assert describe(events[1:]) == [b'<iq type="set" id="b"/>']


@pytest.mark.parametrize("partial", [
    b"<message><body>half", b"<presence/><mess", b"<presence/><presence a='>", b"<presence/> <",
])
def test_reset_drops_partial_input(partial: bytes) -> None:
    """Bytes of an unfinished element before reset() do not leak into the new stream."""
    parser = StreamParser()
    parser.feed(HEADER + partial)
    parser.reset()
    events = parser.feed(HEADER + b"<presence/>")
    assert describe(events[1:]) == [b"<presence/>"]


def test_whitespace_keepalives() -> None:
    """Whitespace between stanzas (RFC 6120 §4.6.1) is ignored, whatever its chunking."""
    parser = StreamParser()
    events = parser.feed(HEADER + b" \n")
    events += parser.feed(b"\t \r\n")
    events += parser.feed(b"<presence/>  ")
    events += parser.feed(b"   ")
    events += parser.feed(b"\n<presence/>\n")
    events += parser.feed(CLOSE)
    assert describe(events[1:]) == [b"<presence/>", b"<presence/>", StreamClosed()]


def test_keepalives_do_not_count_towards_stanza_size() -> None:
    """Days of single-space keepalives with no stanza never trip max_stanza_size."""
    parser = StreamParser(max_stanza_size=1000)
    parser.feed(HEADER)
    for _ in range(20_000):
        assert parser.feed(b" ") == []
    assert describe(parser.feed(b"<presence/>")) == [b"<presence/>"]


def test_stream_closed() -> None:
    """</stream:stream> gives StreamClosed, even when fed one byte at a time."""
    parser = StreamParser()
    parser.feed(HEADER + b"<presence/>")
    events = feed_chunks(parser, one_byte_at_a_time(b" " + CLOSE))
    assert events == [StreamClosed()]


def test_nothing_parsed_after_close() -> None:
    """Bytes after </stream:stream>, in the same chunk or later, are ignored."""
    parser = StreamParser()
    events = parser.feed(HEADER + CLOSE + b"garbage<iq/>")
    assert events[1:] == [StreamClosed()]
    assert parser.feed(b"<message/>") == []
    assert parser.feed(b"\xff<<<") == []


def test_xml_declaration_utf8_allowed() -> None:
    """An XML declaration naming UTF-8 at the start of the stream is accepted."""
    decl = b"<?xml version='1.0' encoding='UTF-8'?>"
    events = feed_chunks(StreamParser(), one_byte_at_a_time(decl + HEADER[21:]))
    assert isinstance(events[0], StreamOpened)


def test_utf8_bom_allowed() -> None:
    """A UTF-8 byte order mark before the header is accepted."""
    events = StreamParser().feed(b"\xef\xbb\xbf" + HEADER)
    assert isinstance(events[0], StreamOpened)


def test_stanza_at_size_limit_accepted() -> None:
    """Stanzas of exactly max_stanza_size bytes pass, in any chunking, back to back."""
    stanza = b"<message><body>" + b"a" * (4000 - 32) + b"</body></message>"
    assert len(stanza) == 4000
    for size in (1, 100, 4096, 100_000):
        parser = StreamParser(max_stanza_size=4000)
        data = HEADER + stanza * 20
        events = feed_chunks(parser, [data[i:i + size] for i in range(0, len(data), size)])
        assert len(events) == 21


def test_nesting_at_max_depth_accepted() -> None:
    """Elements nested exactly max_depth deep (the stanza at depth 1) are accepted."""
    parser = StreamParser(max_depth=8)
    parser.feed(HEADER)
    (stanza,) = parser.feed(b"<a>" * 8 + b"</a>" * 8)
    assert isinstance(stanza, etree._Element)


# -- rejections ---------------------------------------------------------------------

def test_error_is_sticky() -> None:
    """After an error the parser is dead: every later feed() raises the same condition."""
    parser = StreamParser()
    parser.feed(HEADER)
    with pytest.raises(StreamError):
        parser.feed(b"<a></b>")
    for data in (b"<presence/>", b"", CLOSE):
        with pytest.raises(StreamError) as info:
            parser.feed(data)
        assert info.value.condition == "not-well-formed"


def test_reject_doctype() -> None:
    """A DOCTYPE before the header is restricted-xml."""
    reject(b"<?xml version='1.0'?><!DOCTYPE stream:stream>" + HEADER[21:], "restricted-xml")


def test_reject_doctype_one_byte_at_a_time() -> None:
    """A DOCTYPE split across chunks is still caught before libxml2 parses it."""
    data = b"<!DOCTYPE s [<!ENTITY x SYSTEM 'file:///etc/passwd'>]>" + HEADER[21:]
    reject(one_byte_at_a_time(data), "restricted-xml")


def test_reject_entity_declaration() -> None:
    """<!ENTITY ...> inside the stream is restricted-xml."""
    reject([HEADER, b"<!ENTITY x 'y'>"], "restricted-xml")
    reject([HEADER, b"<message><!ENTITY x 'y'></message>"], "restricted-xml")


def test_reject_doctype_inside_stream() -> None:
    """<!DOCTYPE after the header is restricted-xml too."""
    reject([HEADER, b"<!DOCTYPE x>"], "restricted-xml")


def test_reject_billion_laughs() -> None:
    """The billion laughs document is refused before any entity is declared."""
    lols = "".join(
        f"<!ENTITY lol{i} '{('&lol%d;' % (i - 1)) * 10}'>" for i in range(1, 10))
    doc = (f"<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol0 'lol'>{lols}]>"
           f"<lolz>&lol9;</lolz>").encode()
    reject(doc, "restricted-xml")
    reject(one_byte_at_a_time(doc), "restricted-xml")


@pytest.mark.parametrize("stanza", [
    b"<message><body>&foo;</body></message>",
    b"<message to='&bar;'/>",
    b"<message><body>&nbsp;</body></message>",
])
def test_reject_undeclared_entity(stanza: bytes) -> None:
    """A reference to an entity other than the five predefined ones is restricted-xml."""
    reject(HEADER + stanza, "restricted-xml")
    reject([HEADER] + one_byte_at_a_time(stanza), "restricted-xml")


@pytest.mark.parametrize("data", [
    HEADER + b"<?php echo 1; ?>",
    HEADER + b"<message><?foo bar?></message>",
    b"<?xml-stylesheet href='a'?>" + HEADER,
])
def test_reject_processing_instruction(data: bytes) -> None:
    """Processing instructions, in the stream or before the header, are restricted-xml."""
    reject(data, "restricted-xml")
    reject(one_byte_at_a_time(data), "restricted-xml")


@pytest.mark.parametrize("data", [
    HEADER + b"<!-- hello -->",
    HEADER + b"<message><body>a<!-- hello -->b</body></message>",
    b"<!-- hello -->" + HEADER,
])
def test_reject_comment(data: bytes) -> None:
    """Comments, in the stream or before the header, are restricted-xml."""
    reject(data, "restricted-xml")
    reject(one_byte_at_a_time(data), "restricted-xml")


def test_reject_oversize_while_arriving() -> None:
    """1 MB of one stanza in 4 KB chunks is refused by ~max_stanza_size + one chunk."""
    parser = StreamParser()
    parser.feed(HEADER)
    chunk = b"a" * 4096
    fed = len(b"<message><body>")
    with pytest.raises(StreamError) as info:
        parser.feed(b"<message><body>")
        for _ in range(256):
            fed += len(chunk)
            parser.feed(chunk)
    assert info.value.condition == "policy-violation"
    assert info.value.text == "stanza larger than 65536 bytes"
    assert fed <= 65536 + 4096 + 15


class _FeedSpy:
    """Wraps the lxml parser to count the bytes actually handed to libxml2."""

    def __init__(self, inner: etree.XMLPullParser) -> None:
        self.inner = inner
        self.fed = 0

    def feed(self, data: bytes) -> None:
        self.fed += len(data)
        self.inner.feed(data)


def test_reject_oversize_single_huge_chunk() -> None:
    """One 1 MB chunk is sliced: libxml2 sees at most ~max_stanza_size + one slice of it."""
    parser = StreamParser()
    parser.feed(HEADER)
    spy = _FeedSpy(parser._parser)       # white-box: count what reaches libxml2
    parser._parser = spy                 # type: ignore[assignment]
    with pytest.raises(StreamError) as info:
        parser.feed(b"<message><body>" + b"a" * 1_000_000)
    assert info.value.condition == "policy-violation"
    assert spy.fed <= 65536 + 16384


@pytest.mark.parametrize("filler", [b" ", b"a"])
def test_reject_oversize_start_tag(filler: bytes) -> None:
    """A start tag that never ends (even padded with whitespace) is refused too."""
    parser = StreamParser(max_stanza_size=10_000)
    parser.feed(HEADER)
    with pytest.raises(StreamError) as info:
        parser.feed(b"<presence/><message to='x>")
        for _ in range(100):
            parser.feed(filler * 1000)
    assert info.value.condition == "policy-violation"


def test_reject_oversize_header() -> None:
    """A stream header that never ends is refused too."""
    reject([b"<stream:stream to='"] + [b"a" * 4096] * 40, "policy-violation")


def test_reject_too_deep() -> None:
    """Elements nested deeper than max_depth are policy-violation, before the stanza ends."""
    error = reject([HEADER, b"<a>" * 33], "policy-violation")
    assert "32" in str(error)
    reject([HEADER, b"<a>" * 9], "policy-violation", max_depth=8)


@pytest.mark.parametrize("bad", [
    b"\xff", b"\xc3(", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80",
])
def test_reject_invalid_utf8(bad: bytes) -> None:
    """Bytes that are not valid UTF-8 are not-well-formed."""
    reject(HEADER + b"<message><body>" + bad + b"</body></message>", "not-well-formed")
    reject([HEADER, b"<message><body>", bad, b"</body></message>"], "not-well-formed")


def test_reject_mismatched_tags() -> None:
    """Mismatched end tags are not-well-formed."""
    reject(HEADER + b"<message><body></message></body>", "not-well-formed")
    reject(HEADER + b"<message></stream:stream>", "not-well-formed")


def test_reject_syntax_errors() -> None:
    """Other syntax errors (bare &, bad attributes, junk before the header) are not-well-formed."""
    reject(HEADER + b"<message><body>a & b;</body></message>", "not-well-formed")
    reject(HEADER + b"<message a='&'/>", "not-well-formed")
    reject(HEADER + b"<message to=b/>", "not-well-formed")
    reject(HEADER + b"<message a='1' a='2'/>", "not-well-formed")
    reject(b"hello" + HEADER, "not-well-formed")


def test_bare_ampersand_lookahead_is_bounded() -> None:
    """libxml2 waits for a ';' after a bare '&' in text: that wait is bounded by the size limit."""
    parser = StreamParser(max_stanza_size=10_000)
    parser.feed(HEADER)
    assert parser.feed(b"<message><body>a & b</body></message><presence/>") == []
    with pytest.raises(StreamError) as info:
        for _ in range(20):
            parser.feed(b"<presence/>" * 100)
    assert info.value.condition == "policy-violation"


@pytest.mark.parametrize("encoding", [b"ISO-8859-1", b"UTF-16", b"us-ascii"])
def test_reject_non_utf8_encoding_declaration(encoding: bytes) -> None:
    """An encoding declaration other than UTF-8 is unsupported-encoding."""
    data = b"<?xml version='1.0' encoding='" + encoding + b"'?>" + HEADER[21:]
    reject(data, "unsupported-encoding")
    reject(one_byte_at_a_time(data), "unsupported-encoding")


def test_reject_utf16_stream() -> None:
    """A UTF-16 encoded stream is unsupported-encoding."""
    reject(HEADER.decode().encode("utf-16"), "unsupported-encoding")


@pytest.mark.parametrize("chunks", [
    [HEADER, b"hello", b"<presence/>"],          # libxml2 delivers it at the next '<'...
    [HEADER + b"<presence/>hello<presence/>"],
    [HEADER, b"<presence/>", b"hello", b"<presence/>"],
    [HEADER, b"hello" * 100],                    # ...or once 300 bytes are waiting
    [HEADER, b"hello", CLOSE],
    [HEADER, "\u00a0".encode(), b"<presence/>"],  # not XML whitespace
])
def test_reject_text_between_stanzas(chunks: list[bytes]) -> None:
    """Non-whitespace character data at the stream level is bad-format."""
    reject(chunks, "bad-format")
