"""Incremental parser for one XMPP stream (RFC 6120 §4), on lxml's pull parser.

One :class:`StreamParser` per connection is fed the bytes read from the socket,
cut anywhere (inside a tag, inside a UTF-8 sequence, between stanzas), and
returns the events completed so far: :class:`StreamOpened` for the stream
header, each first-level child of the stream (a stanza, or a negotiation
element such as ``<auth/>``) as a detached lxml element, and
:class:`StreamClosed` for ``</stream:stream>``.

The restricted XML profile of RFC 6120 §11.1 and the resource limits of §13.12
are enforced while bytes arrive, never after a whole stanza has been buffered:

* a DOCTYPE (hence any entity declaration), comments, processing instructions
  and references to entities other than the five predefined ones are
  ``restricted-xml``; the XML declaration is allowed at the start of a stream;
* an encoding other than UTF-8 (§11.6) is ``unsupported-encoding``;
* a first-level element (stanza) larger than ``max_stanza_size`` bytes, or
  elements nested deeper than ``max_depth``, are ``policy-violation``;
* non-whitespace character data between stanzas is ``bad-format`` (only
  whitespace keepalives may appear there, §4.6.1);
* any other syntax error, including invalid UTF-8, is ``not-well-formed``.

After a :class:`~vinespy.errors.StreamError` the parser is dead: every later
:meth:`StreamParser.feed` raises the same condition again (until :meth:`reset`).
After :class:`StreamClosed` nothing more is parsed: :meth:`feed` returns ``[]``.

Between stanzas a stream needs no parser state but its namespaces: an idle
stream's parser can :meth:`~StreamParser.release` what libxml2 holds for it
(its input buffer and the stream's tree: 8.6 KiB of the 50 KiB an idle
STARTTLS session took, bench/idle_memory.py) and open the stream again, from
a stream header of its own, when bytes arrive. :class:`IdleRelease` does
that for the parsers not fed for a while.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeAlias, cast

from lxml import etree

from .. import ns
from ..errors import StreamError

__all__ = ["Event", "IdleRelease", "StreamClosed", "StreamOpened", "StreamParser"]


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The stream header ``<stream:stream ...>`` was parsed (RFC 6120 §4.7)."""

    #: The header's attributes; ``{http://www.w3.org/XML/1998/namespace}lang``
    #: is given as ``xml:lang``, other names as lxml spells them.
    attrs: dict[str, str]
    #: The default namespace declared on the header, ``""`` if none.
    namespace: str
    #: Namespace of the root element; the caller checks it is ns.STREAM.
    stream_ns: str
    #: Local name of the root element, normally ``stream``.
    local_name: str


@dataclass(frozen=True, slots=True)
class StreamClosed:
    """The peer closed its stream with ``</stream:stream>`` (RFC 6120 §4.4)."""


Event: TypeAlias = StreamOpened | etree._Element | StreamClosed


def check_version(version: str) -> None:
    """RFC 6120 §4.7.5: a stream header's 'version' must be 1.x here;
    StreamError ``<unsupported-version/>`` otherwise."""
    try:
        major = int(version.split(".")[0])
    except ValueError:
        raise StreamError("unsupported-version", "version must be 1.0") from None
    if major != 1:
        raise StreamError("unsupported-version", "version must be 1.0 (RFC 6120 §4.7.5)")


_EventReader: TypeAlias = Callable[[], Iterator[tuple[str, etree._Element]]]

_XML_LANG = f"{{{ns.XML}}}lang"
_XML_WS = " \t\r\n"           # XML's S production; str.isspace() accepts more
_XML_WS_BYTES = b" \t\r\n"
_BOM = b"\xef\xbb\xbf"

# Bytes handed to libxml2 per call. The size limit is checked between slices,
# so a stanza is caught at most one slice past max_stanza_size however big the
# chunk read from the socket was; see StreamParser.__init__.
_MIN_SLICE = 512
_MAX_SLICE = 16384

# The XML declaration is looked for in at most this many leading bytes.
_DECL_MAX = 512
_ENCODING_RE = re.compile(rb"""\sencoding\s*=\s*["']([^"']*)["']""")
_UTF8_NAMES = frozenset((b"utf-8", b"utf8"))

# `<!` not opening a CDATA section: DOCTYPE, ENTITY, ELEMENT... or a comment.
_RESTRICTED_MARKUP = re.compile(rb"<!(?!\[)")

# A whole start, end or empty-element tag (a `>` may be in a quoted attribute
# value, a `<` may not), then whitespace: what the bytes fed must end with
# for libxml2 to hold nothing unparsed (see StreamParser.release).
_WHOLE_TAG_AT_END = re.compile(rb"""<[^!?'"<>](?:[^'"<>]|'[^']*'|"[^"]*")*>[ \t\r\n]*""")

_E = etree.ErrorTypes
_ENTITY_ERRORS = frozenset((
    _E.ERR_UNDECLARED_ENTITY, _E.WAR_UNDECLARED_ENTITY, _E.ERR_ENTITY_LOOP,
    _E.ERR_ENTITY_IS_EXTERNAL, _E.ERR_ENTITY_IS_PARAMETER, _E.ERR_UNPARSED_ENTITY,
    _E.ERR_ENTITY_PROCESSING, _E.ERR_ENTITYREF_IN_PROLOG, _E.ERR_ENTITYREF_IN_EPILOG,
    _E.ERR_ENTITYREF_IN_DTD, _E.ERR_ENTITY_BOUNDARY, _E.ERR_ENTITY_NOT_FINISHED,
    _E.ERR_ENTITY_NOT_STARTED, _E.ERR_ENTITY_PE_INTERNAL, _E.ERR_EXT_ENTITY_STANDALONE,
))
_ENCODING_ERRORS = frozenset((
    _E.ERR_UNSUPPORTED_ENCODING, _E.ERR_UNKNOWN_ENCODING, _E.ERR_ENCODING_NAME,
    _E.WAR_ENCODING_MISMATCH,
))
_RESOURCE_LIMIT = _E.ERR_RESOURCE_LIMIT

# What copy.deepcopy(el) calls, without its memo bookkeeping: 0.4 µs instead of
# 1 µs per stanza. (lxml-stubs do not declare _Element.__deepcopy__.)
_deepcopy: Callable[[etree._Element, dict[int, object]], etree._Element] = getattr(
    etree._Element, "__deepcopy__")


class StreamParser:
    """Turns the bytes of one inbound XML stream into :data:`Event` objects.

    ``max_stanza_size`` bounds the bytes received since the last completed
    stanza (or the stream header); it is checked after every slice of at most
    ``max(512, min(16384, max_stanza_size // 8))`` bytes handed to libxml2, so
    an oversized stanza is rejected at most one slice past the limit, while it
    is still arriving. ``max_depth`` bounds nesting: the stream root is at
    depth 0, stanzas at depth 1, their children at 2; deeper than
    ``max_depth`` is refused.
    """

    __slots__ = (
        "max_stanza_size", "max_depth", "_slice", "_parser", "_read", "_root",
        "_depth", "_pending", "_opened", "_closed", "_error", "_head",
        "_prolog_tail", "_prev", "_header", "_idle_release",
    )

    def __init__(self, max_stanza_size: int = 65536, max_depth: int = 32) -> None:
        if max_stanza_size < 1 or max_depth < 1:
            raise ValueError("max_stanza_size and max_depth must be positive")
        self.max_stanza_size = max_stanza_size
        self.max_depth = max_depth
        self._slice = max(_MIN_SLICE, min(_MAX_SLICE, max_stanza_size // 8))
        self._idle_release: IdleRelease | None = None
        self._new_parser()
        self._start()

    def reset(self) -> None:
        """Start over with a new underlying parser: a fresh stream header is
        expected (after STARTTLS and SASL success, RFC 6120 §5.4.3.3, §6.4.6).

        This also forgets a previous error or close.
        """
        if not self._close_document():
            self._new_parser()
        self._start()

    def _new_parser(self) -> None:
        parser = etree.XMLPullParser(
            events=("start", "end", "comment", "pi"),
            # The peer must speak UTF-8 (RFC 6120 §11.6): never let libxml2
            # switch to another decoder because of a declaration or a BOM.
            encoding="utf-8",
            # "internal" (lxml >= 5) rather than False: with False, lxml
            # swallows libxml2's "Entity 'foo' not defined" error, libxml2
            # stops producing events, and the next feed fails with an
            # unrelated "Extra content" error; "internal" reports it at once
            # (-> restricted-xml). Nothing is ever expanded: a DOCTYPE never
            # reaches libxml2 (see _check_prolog), so only the five predefined
            # entities exist, and "internal" never loads external ones. (On
            # lxml 4.x the string is just truthy, i.e. True: just as safe here.)
            resolve_entities="internal",  # type: ignore[arg-type]
            no_network=True,
            huge_tree=False,
            collect_ids=False,
        )
        self._parser = parser
        # We never ask for namespace events, so every event carries an element.
        self._read = cast(_EventReader, parser.read_events)

    def again(self) -> None:
        """Ready for a new document, reusing the underlying parser when the
        last one was closed cleanly (one BOSH ``<body/>`` after another: a
        new lxml parser per document would be garbage only the cyclic
        collector frees, and its collections were the p99 of BOSH delivery,
        bench/web.py); else as :meth:`reset`."""
        if not self._closed or self._error is not None or self._header is not None:
            self.reset()
            return
        try:
            self._parser.close()
        except etree.ParseError:
            self.reset()
            return
        self._start()

    def _start(self) -> None:
        self._root: etree._Element | None = None
        self._depth = 0          # elements currently open, the root included
        self._pending = 0        # bytes since the last stanza (or the header)
        self._opened = False
        self._closed = False
        self._error: StreamError | None = None
        self._head: bytes | None = b""   # leading bytes, until the XML decl is checked
        self._prolog_tail = b""  # carry-over for the `<!` scan before the header
        self._prev = b""         # last slice but whitespace: errors, release()
        self._header: bytes | None = None   # released: the header to build it again with

    @property
    def idle(self) -> bool:
        """No element is open inside the stream: nothing is half received."""
        return self._depth <= 1

    # -- releasing the state of an idle stream -----------------------------------

    @property
    def released(self) -> bool:
        """libxml2's state is released (:meth:`release`)."""
        return self._header is not None

    def release(self) -> bool:
        """Free what libxml2 holds for the stream (its input buffer, the
        stream's tree) if the stream is open and nothing is half received,
        by closing the document; the next :meth:`feed` opens one again with
        a stream header of its own that declares the namespaces the client's
        declared, so that the stanzas parsed are the same. True if released
        (or already).

        "Nothing half received" is stricter than :attr:`idle`: no element
        is open, and the last bytes fed end with a whole tag (plus
        whitespace), so libxml2 holds no partial tag either. Releasing and
        opening again costs about 8 µs; it saves 8.6 KiB while released
        (the push parser context, 3 KiB, stays: the stanzas' documents keep
        the lxml parser alive anyway).
        """
        if self._header is not None:
            return True
        if (not self._opened or self._closed or self._error is not None or self._depth != 1
                or not _ends_with_whole_tag(self._prev)):
            return False
        root = self._root
        assert root is not None
        header = _header_for(root)
        if not self._close_document():
            self._new_parser()          # (cannot happen after the checks above)
        self._header = header
        self._prev = b""
        return True

    def _close_document(self) -> bool:
        """Close the document of a stream between stanzas, so that the
        underlying parser can start another: True if done, or if released
        already. False (an element is open, a stream error...): the parser
        cannot be reused. (A parser dropped with its document open is a
        cycle, parser - context - document, that only the cyclic garbage
        collector frees.)"""
        if self._header is not None:
            return True
        root = self._root
        if root is None or self._depth != 1 or self._error is not None:
            return False
        try:
            self._parser.feed(b"</" + _qname(root).encode() + b">")
            self._parser.close()
        except etree.ParseError:
            return False
        for _ in self._read():          # an event would keep the document
            pass
        self._root = None
        return True

    def _revive(self) -> None:
        """Open the document again after :meth:`release`, at depth 1 in a stream."""
        header, self._header = self._header, None
        assert header is not None
        self._parser.feed(header)
        ((_, root),) = self._read()
        self._root = root

    # -- feeding ---------------------------------------------------------------

    def feed(self, data: bytes) -> list[Event]:
        """Parse ``data`` and return the events it completed, in order.

        Raises :class:`~vinespy.errors.StreamError`; events decoded earlier in
        the same call are then dropped along with the stream.
        """
        if self._error is not None:
            raise StreamError(self._error.condition, self._error.text)
        if self._closed or not data:
            return []
        idle_release = self._idle_release
        if idle_release is not None:
            idle_release.fed.add(self)
        if self._header is not None:
            if not data.strip(_XML_WS_BYTES):
                return []               # a keepalive changes nothing: stay released
            self._revive()
        out: list[Event] = []
        try:
            if len(data) <= self._slice:
                self._feed_slice(data, out)
            else:
                step = self._slice
                view = memoryview(data)
                for i in range(0, len(data), step):
                    self._feed_slice(view[i:i + step].tobytes(), out)
                    if self._closed:
                        break
        except StreamError as exc:
            self._fail(exc)
            raise
        return out

    def _fail(self, exc: StreamError) -> None:
        self._error = exc
        self._root = None

    def _feed_slice(self, data: bytes, out: list[Event]) -> None:
        if not self._opened:
            self._check_prolog(data)
        failure: etree.ParseError | None = None
        try:
            self._parser.feed(data)
        except etree.ParseError as exc:
            # Events parsed before the error are still queued: read them, the
            # stream may have been closed before garbage arrived.
            failure = exc

        completed = False
        for kind, el in self._read():
            if kind == "start":
                depth = self._depth
                if depth == 0:
                    out.append(self._stream_opened(el))
                    completed = True
                elif depth > self.max_depth:
                    raise StreamError("policy-violation",
                                      f"elements nested deeper than {self.max_depth}")
                self._depth = depth + 1
            elif kind == "end":
                depth = self._depth - 1
                self._depth = depth
                if depth == 1:
                    out.append(self._detach(el))
                    completed = True
                elif depth == 0:
                    self._check_root_text()
                    out.append(StreamClosed())
                    self._closed = True
                    self._root = None
                    return
            elif kind == "comment":
                raise StreamError("restricted-xml", "comments are not allowed")
            else:
                raise StreamError("restricted-xml", "processing instructions are not allowed")
        if failure is not None:
            raise self._map_error(failure, data)
        if data.strip(_XML_WS_BYTES):
            self._prev = data           # (whitespace: what came before tells more)

        if completed:
            self._pending = 0
        else:
            self._pending += len(data)
        if self._depth == 1:
            # No stanza open: character data libxml2 has delivered at the
            # stream level is a keepalive (or an error). Drop it, so that
            # keepalives do not pile up for a stream that lasts for days.
            root = self._root
            assert root is not None
            if _drop_stream_text(root):
                # libxml2 consumed whitespace at the stream level, so it is
                # not inside a pending tag: a slice of nothing but whitespace
                # is keepalive traffic and does not count towards a stanza.
                if not completed and not data.strip(_XML_WS_BYTES):
                    self._pending = 0
        if self._pending > self.max_stanza_size:
            raise StreamError("policy-violation",
                              f"stanza larger than {self.max_stanza_size} bytes")

    # -- elements --------------------------------------------------------------

    def _stream_opened(self, root: etree._Element) -> StreamOpened:
        docinfo = root.getroottree().docinfo
        if docinfo.internalDTD is not None or docinfo.doctype:
            # Unreachable while _check_prolog works; kept as a second line.
            raise StreamError("restricted-xml", "DOCTYPE is not allowed")
        self._root = root
        self._opened = True
        self._head = None
        self._prolog_tail = b""
        tag = root.tag
        if tag[:1] == "{":
            stream_ns, _, local = tag[1:].partition("}")
        else:
            stream_ns, local = "", tag
        attrs = {("xml:lang" if k == _XML_LANG else k): v for k, v in root.items()}
        return StreamOpened(attrs=attrs, namespace=root.nsmap.get(None) or "",
                            stream_ns=stream_ns, local_name=local)

    def _detach(self, el: etree._Element) -> etree._Element:
        """Return a copy of the completed stanza ``el`` and drop it from the tree.

        The deep copy is taken while ``el`` is still attached: lxml then
        carries over the in-scope namespaces the subtree uses, so the copy
        keeps ``jabber:client`` as its *default* namespace and drops the unused
        ``stream`` prefix. Removing ``el`` first would turn it into
        ``<ns0:message xmlns:ns0=...>``. The copy (under 1 µs for a small
        message) also gives each stanza its own document, so nothing a handler
        keeps references the stream's tree. Removing the original afterwards
        keeps the tree flat, and clearing the stream-level text before it keeps
        libxml2's text coalescing pointed at nodes it created itself.
        """
        root = self._root
        assert root is not None
        _drop_stream_text(root)
        tail = el.tail
        stanza = _deepcopy(el, {})
        if tail is not None:
            if tail.strip(_XML_WS):
                raise StreamError("bad-format", "character data between stanzas")
            stanza.tail = None
        root.remove(el)   # the tail goes with it
        return stanza

    def _check_root_text(self) -> None:
        root = self._root
        text = root.text if root is not None else None
        if text is not None and text.strip(_XML_WS):
            raise StreamError("bad-format", "character data between stanzas")

    # -- security checks on raw bytes -------------------------------------------

    def _check_prolog(self, data: bytes) -> None:
        """Checks on the bytes before the stream header (RFC 6120 §11.1, §11.6).

        A DOCTYPE can only appear before the root element, so any ``<!`` there
        (DOCTYPE or comment; CDATA cannot be in a prolog) is refused before
        libxml2 sees it: no entity declaration is ever parsed. The check runs
        on whole slices until the header is parsed; a stanza pipelined in the
        same slice as the header is scanned too, which only matters for a
        literal ``<!`` inside CDATA there.
        """
        self._check_declaration(data)
        buf = self._prolog_tail + data
        if b"<!" in buf:
            for m in _RESTRICTED_MARKUP.finditer(buf):
                if m.end() < len(buf):       # the byte after `<!` is known
                    raise StreamError("restricted-xml", "DOCTYPE and comments are not allowed")
        self._prolog_tail = buf[-2:]

    def _check_declaration(self, data: bytes) -> None:
        """Refuse an encoding declaration other than UTF-8, and UTF-16/32 input."""
        head = self._head
        if head is None:
            return
        head += data[:_DECL_MAX]
        if head[:2] in (b"\xfe\xff", b"\xff\xfe") or b"\x00" in head[:4]:
            raise StreamError("unsupported-encoding", "streams must be UTF-8")
        if len(head) < 3 and _BOM.startswith(head):
            self._head = head
            return
        body = head[3:] if head.startswith(_BOM) else head
        if not b"<?xml".startswith(body[:5]):
            self._head = None               # no declaration
            return
        if len(body) < 6:
            self._head = head               # `<?xml` not complete yet
            return
        if body[5:6] not in (b" ", b"\t", b"\r", b"\n"):
            self._head = None               # `<?xml-foo`: a PI, refused by libxml2's event
            return
        end = body.find(b"?>")
        if end == -1:
            # Undecided: keep waiting, but only for so long; libxml2 will
            # reject an overlong declaration on its own.
            self._head = head if len(head) < _DECL_MAX else None
            return
        self._head = None
        m = _ENCODING_RE.search(body, 0, end)
        if m is not None and m.group(1).lower() not in _UTF8_NAMES:
            raise StreamError("unsupported-encoding", "streams must be UTF-8")

    def _map_error(self, exc: etree.ParseError, data: bytes) -> StreamError:
        """The stream error for a libxml2 error while parsing ``data``."""
        code: int = getattr(exc, "code", 0)     # lxml-stubs lack .code/.msg
        msg = getattr(exc, "msg", None) or str(exc)
        if code in _ENTITY_ERRORS or (code == _RESOURCE_LIMIT and "entity" in msg.lower()):
            return StreamError("restricted-xml", "entity references are not allowed")
        if code in _ENCODING_ERRORS:
            return StreamError("unsupported-encoding", "streams must be UTF-8")
        if _RESTRICTED_MARKUP.search(self._prev[-16:] + data):
            # `<!DOCTYPE`, `<!ENTITY`... inside the stream: libxml2 only
            # sees an invalid element name.
            return StreamError("restricted-xml", "markup declarations are not allowed")
        if code == _RESOURCE_LIMIT:
            return StreamError("policy-violation", msg)
        return StreamError("not-well-formed", msg)


def _ends_with_whole_tag(data: bytes) -> bool:
    """``data`` (the last bytes fed) ends with a whole tag, then whitespace."""
    i = data.rfind(b"<")
    return i >= 0 and _WHOLE_TAG_AT_END.fullmatch(data, i) is not None


def _qname(el: etree._Element) -> str:
    local = etree.QName(el).localname
    return f"{el.prefix}:{local}" if el.prefix else local


def _header_for(root: etree._Element) -> bytes:
    """A start tag for ``root`` declaring the namespaces it declares."""
    decls = "".join(
        f' xmlns{":" + prefix if prefix else ""}="{_escape_uri(uri)}"'
        for prefix, uri in root.nsmap.items())
    return f"<{_qname(root)}{decls}>".encode()


def _escape_uri(uri: str) -> str:
    return uri.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")


class IdleRelease:
    """Releases the parsers that were not fed for a while (:meth:`StreamParser.release`).

    A parser given to :meth:`watch` notes in :attr:`fed` each time it is fed;
    every :meth:`tick`, those that were fed during the period before the last
    but not since are released. A parser is thus released between one and two
    periods after its last bytes, and the work of a tick is proportional to
    the streams that were busy, not to all streams.
    """

    __slots__ = ("fed", "_before")

    def __init__(self) -> None:
        self.fed: set[StreamParser] = set()
        self._before: set[StreamParser] = set()

    def watch(self, parser: StreamParser) -> None:
        """Release ``parser`` when it is idle from now on."""
        parser._idle_release = self
        self.fed.add(parser)

    def tick(self) -> int:
        """Release the parsers fed before the last tick but not since; the count."""
        fed = self.fed
        released = 0
        for parser in self._before:
            if parser not in fed and parser.release():
                released += 1
        self._before, self.fed = fed, set()
        return released


def _drop_stream_text(root: etree._Element) -> bool:
    """Drop whitespace libxml2 delivered at the stream level (keepalives,
    RFC 6120 §4.6.1); anything else there is bad-format. True if any."""
    text = root.text
    if text is None:
        return False
    if text.strip(_XML_WS):
        raise StreamError("bad-format", "character data between stanzas")
    root.text = None
    return True
