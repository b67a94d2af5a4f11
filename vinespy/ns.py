"""XML namespaces used by the core (RFC 6120/6121) and the built-in modules."""

from typing import Any


def default(namespace: str) -> Any:
    """An lxml ``nsmap`` making ``namespace`` the default (typed Any because
    lxml-stubs does not admit the None key lxml uses for it)."""
    return {None: namespace}


CLIENT = "jabber:client"
SERVER = "jabber:server"
COMPONENT = "jabber:component:accept"               # XEP-0114
STREAM = "http://etherx.jabber.org/streams"
STREAMS = "urn:ietf:params:xml:ns:xmpp-streams"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
TLS = "urn:ietf:params:xml:ns:xmpp-tls"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND = "urn:ietf:params:xml:ns:xmpp-bind"
SESSION = "urn:ietf:params:xml:ns:xmpp-session"
XML = "http://www.w3.org/XML/1998/namespace"
FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"      # RFC 7395 (WebSocket)
HTTPBIND = "http://jabber.org/protocol/httpbind"     # XEP-0124 (BOSH)
XBOSH = "urn:xmpp:xbosh"                             # XEP-0206

DISCO_INFO = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
PING = "urn:xmpp:ping"
VERSION = "jabber:iq:version"

# Message archives (XEP-0313) and what rides with them.
MAM = "urn:xmpp:mam:2"
MAM_EXTENDED = "urn:xmpp:mam:2#extended"             # before-id/after-id/ids, flip, metadata
RSM = "http://jabber.org/protocol/rsm"               # XEP-0059
FORWARD = "urn:xmpp:forward:0"                       # XEP-0297
DELAY = "urn:xmpp:delay"                             # XEP-0203
SID = "urn:xmpp:sid:0"                               # XEP-0359
HINTS = "urn:xmpp:hints"                             # XEP-0334
DATA = "jabber:x:data"                               # XEP-0004
XDATA_VALIDATE = "http://jabber.org/protocol/xdata-validate"   # XEP-0122
