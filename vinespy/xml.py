"""Element builders and THE serializer for everything written to a stream.

Stanzas are lxml elements in the ``jabber:client`` namespace with that
namespace as their default (``nsmap={None: CLIENT}``). The parser hands them
over in that shape (see ``stream/parser.py``), and :func:`stanza` builds them
so. :func:`serialize` writes one without the redundant default-namespace
declaration, so the bytes are what an XMPP peer expects inside the stream.
"""

from __future__ import annotations

import copy
from typing import Callable

from lxml import etree

from . import ns
from .errors import StanzaError
from .jid import JID, JIDError

Element = etree._Element

_DEFAULT_DECL = f' xmlns="{ns.CLIENT}"'.encode()
_CLIENT_PREFIX = f"{{{ns.CLIENT}}}"


def stanza(name: str, *, to: object = None, frm: object = None, type: str | None = None,
           id: str | None = None) -> Element:
    """A new ``<message/>``, ``<presence/>`` or ``<iq/>`` in jabber:client."""
    el = etree.Element(_CLIENT_PREFIX + name, nsmap=ns.default(ns.CLIENT))
    if to is not None:
        el.set("to", str(to))
    if frm is not None:
        el.set("from", str(frm))
    if type is not None:
        el.set("type", type)
    if id is not None:
        el.set("id", id)
    return el


def child(parent: Element, namespace: str, name: str, text: str | None = None, /,
          **attrs: str) -> Element:
    """Append ``<name xmlns=namespace/>`` to ``parent`` and return it."""
    el = etree.SubElement(parent, f"{{{namespace}}}{name}", attrs or None,
                          nsmap=None if parent.nsmap.get(None) == namespace
                          else ns.default(namespace))
    if text is not None:
        el.text = text
    return el


def element(namespace: str, name: str, /, **attrs: str) -> Element:
    """A free-standing element with ``namespace`` as its default namespace."""
    return etree.Element(f"{{{namespace}}}{name}", attrs or None, nsmap=ns.default(namespace))


def local_name(el: Element) -> str:
    """``message`` for ``{jabber:client}message``."""
    tag = el.tag
    if not isinstance(tag, str):
        return ""
    return tag.rpartition("}")[2]


def namespace(el: Element) -> str:
    tag = el.tag
    if not isinstance(tag, str) or not tag.startswith("{"):
        return ""
    return tag[1:tag.index("}")]


def escape_attr(value: str) -> str:
    """``value`` safe inside a quoted attribute (either quote) or text."""
    return (value.replace("&", "&amp;").replace("<", "&lt;").replace("'", "&apos;")
            .replace('"', "&quot;"))


def serialize(el: Element) -> bytes:
    """Bytes of ``el`` for a jabber:client stream: no redundant ``xmlns``."""
    data: bytes = etree.tostring(el)
    if data.startswith(b"<ns0:"):
        # An element detached from a parsed tree without copying: give it
        # back its default namespace (slow path, never hit by our own code).
        holder = etree.Element(_CLIENT_PREFIX + "x", nsmap=ns.default(ns.CLIENT))
        holder.append(copy.deepcopy(el))
        data = etree.tostring(holder[0])
    end = data.find(b">")
    i = data.find(_DEFAULT_DECL, 0, end)
    if i != -1:
        data = data[:i] + data[i + len(_DEFAULT_DECL):]
    return data


_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                          huge_tree=False, remove_comments=True, remove_pis=True)
_OPEN = f"<x xmlns='{ns.CLIENT}'>".encode()
_CLOSE = b"</x>"
# What copy.deepcopy(el) calls, without its memo bookkeeping (as the stream
# parser does; lxml-stubs do not declare _Element.__deepcopy__).
_deepcopy: Callable[[Element, dict[int, object]], Element] = getattr(
    etree._Element, "__deepcopy__")


class NotOneStanza(ValueError):
    """Well-formed, but not exactly one stanza."""


def parse_stanza(data: bytes) -> Element:
    """The one stanza ``data`` holds, as :func:`serialize` wrote it (the
    ``jabber:client`` namespace its default); ValueError if it is not XML
    (:class:`NotOneStanza` if it is, but not one element)."""
    try:
        holder = etree.fromstring(_OPEN + data + _CLOSE, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise ValueError(f"malformed stanza: {exc}") from None
    if len(holder) != 1:
        raise NotOneStanza(f"{len(holder)} elements where one stanza belongs")
    # A copy made while it is attached keeps jabber:client as its default
    # namespace; the element itself, detached, would serialize with an ns0:
    # prefix everywhere but serialize() (offline storage, for one).
    return _deepcopy(holder[0], {})


def to_client(el: Element, stream_ns: str) -> Element:
    """A stanza read from a stream whose namespace is ``stream_ns``
    (``jabber:server``, ``jabber:component:accept``) as the server's own
    stanzas are: its elements of that namespace in ``jabber:client``, which
    is its default namespace, with no trace of the old one (prefixed or
    not); elements of other namespaces as they were. Renamed in place, then
    copied (7.6 µs for a small message on the s2s bench machine, about as
    much as parsing it: bench/results/2026-12-08-s2s.md; a re-parse took 13)."""
    old = f"{{{stream_ns}}}"
    for e in el.iter():
        tag = e.tag
        if isinstance(tag, str) and tag.startswith(old):
            e.tag = _CLIENT_PREFIX + tag[len(old):]
    holder = etree.Element(_CLIENT_PREFIX + "x", nsmap=ns.default(ns.CLIENT))
    holder.append(el)
    etree.cleanup_namespaces(holder)
    # A copy made while attached keeps jabber:client as its default
    # namespace (see parse_stanza).
    return _deepcopy(holder[0], {})


def jid_attr(el: Element, attr: str = "jid") -> JID:
    """The JID in ``el``'s ``attr``: ``<bad-request/>`` when it is missing,
    ``<jid-malformed/>`` when it is not a valid JID (RFC 7622)."""
    text = el.get(attr)
    if text is None:
        raise StanzaError("bad-request", f"<{local_name(el)}/> needs a '{attr}'")
    try:
        return JID.parse(text)
    except JIDError as exc:
        raise StanzaError("jid-malformed", f"{attr} {text!r}: {exc}") from None


def reply(el: Element, type: str = "result") -> Element:
    """An empty reply to ``el``: ``to``/``from`` swapped, same ``id``."""
    r = stanza(local_name(el), to=el.get("from"), frm=el.get("to"), type=type,
               id=el.get("id"))
    return r


def error_reply(el: Element, error: StanzaError) -> Element:
    """The error reply of RFC 6120 §8.3.1: the original's children are not echoed
    except for IQs' payload, which helps clients match the request."""
    r = reply(el, "error")
    if local_name(el) == "iq" and len(el):
        r.append(copy.deepcopy(el[0]))
    r.append(error.element())
    return r
