"""What both directions of a server-to-server stream share (RFC 6120).

A stream between two servers carries stanzas of ``jabber:server``; inside
the server every stanza is a ``jabber:client`` element (the namespace the
router, the modules and the cluster's wire format know). :func:`inbound`
turns the one into the other on the way in; on the way out
:func:`vinespy.xml.serialize` writes stanzas without a default namespace
declaration, so they take the stream's.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any, ClassVar

from lxml import etree

from .. import ns
from ..errors import StreamError
from ..jid import JID, JIDError
from ..stream.base import XMLStream
from ..stream.parser import StreamOpened, check_version
from ..xml import Element, escape_attr, serialize, to_client
from . import dialback

if TYPE_CHECKING:
    from . import Federation

STANZA_NAMES = frozenset(("message", "presence", "iq"))
FEATURES = f"{{{ns.STREAM}}}features"
ERROR = f"{{{ns.STREAM}}}error"


def inbound(el: Element) -> Element:
    """A stanza read from a server stream as the server's own element."""
    return to_client(el, ns.SERVER)


def error_text(el: Element) -> str:
    """A ``<stream:error/>`` the peer sent, in words."""
    condition = next((local for child in el
                      if isinstance(child.tag, str)
                      and (local := etree.QName(child).localname) != "text"), "undefined")
    text = el.findtext(f"{{{ns.STREAMS}}}text")
    return f"{condition}: {text}" if text else condition


def check_header(ev: StreamOpened) -> None:
    """RFC 6120 §4.8: a server stream's namespaces, and version 1.0 or none
    (a pre-RFC server that speaks dialback only)."""
    if ev.stream_ns != ns.STREAM or ev.local_name != "stream":
        raise StreamError("invalid-namespace", f"the root must be {{{ns.STREAM}}}stream")
    if ev.namespace != ns.SERVER:
        raise StreamError("invalid-namespace",
                          f"the default namespace must be {ns.SERVER} (RFC 6120 §4.8.2)")
    version = ev.attrs.get("version")
    if version is not None:
        check_version(version)


def addressing(el: Element) -> tuple[JID, JID]:
    """RFC 6120 §8.1.1.2: a stanza between servers is a message, presence
    or iq with a 'from' and a 'to' that are JIDs; (from, to)."""
    name = el.tag[len(ns.SERVER) + 2:]
    if name not in STANZA_NAMES:
        raise StreamError("unsupported-stanza-type", f"<{name}/> is not a stanza")
    try:
        return JID.parse(el.get("from", "")), JID.parse(el.get("to", ""))
    except JIDError as exc:
        raise StreamError("improper-addressing",
                          f"'from' and 'to' must be JIDs: {exc}") from None


class ServerStream(XMLStream):
    """A stream to or from another server, of either direction."""

    direction: ClassVar[str]            # "in" | "out"
    # Idle streams are closed by the side that sends the stanzas (ours to
    # it): it stops writing to a stream once it closes it, so nothing is in
    # flight. The receiving side waits longer (IncomingStream): closing first,
    # it would drop a stanza its peer wrote just before learning of the
    # close (what arrives after our closing tag is not read).
    idle_factor: ClassVar[float] = 1.0

    def __init__(self, fed: Federation) -> None:
        cfg = fed.cfg
        super().__init__(max_stanza_size=cfg.max_stanza_size, send_timeout=cfg.send_timeout)
        self.fed = fed
        self.id = secrets.token_hex(12)
        self.local = ""                  # our domain on the header
        self.remote = ""                 # the peer's domain (as it says, until authenticated)
        self.auth = ""                   # how it was authenticated: "EXTERNAL", "dialback"
        self.last_active = self.loop.time()
        self.stanzas_in = 0
        self.stanzas_out = 0

    def header_for(self, frm: str, to: str, stream_id: str | None) -> bytes:
        """RFC 6120 §4.7 with the dialback namespace (XEP-0220 §2.1)."""
        sid = f" id='{escape_attr(stream_id)}'" if stream_id else ""
        to_attr = f" to='{escape_attr(to)}'" if to else ""
        return (f"<?xml version='1.0'?><stream:stream xmlns='{ns.SERVER}' "
                f"xmlns:stream='{ns.STREAM}' xmlns:db='{dialback.NS}' "
                f"from='{escape_attr(frm)}'{to_attr}{sid} version='1.0'>").encode()

    def connection_made(self, transport: Any) -> None:
        XMLStream.connection_made(self, transport)
        self.fed.track(self)
        self.run_task(self.fed.server.carry(self))

    def send_stanza(self, stanza: Element) -> None:
        self.write(serialize(stanza))
        self.stanzas_out += 1
        self.last_active = self.loop.time()

    def took(self, el: Element) -> Element:
        """A stanza the peer sent, checked: counted, as the server's own."""
        self.stanzas_in += 1
        self.last_active = self.loop.time()
        return inbound(el)

    def authenticated(self, how: str) -> None:
        self.auth = how
        self.fed.server.links.changed()

    def describe(self) -> str:
        return f"{self.direction} {self.local}<->{self.remote or '?'} ({self.peer})"

    async def ended(self) -> None:
        self.fed.untrack(self)
