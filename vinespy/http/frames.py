"""What WebSocket and BOSH framings do to the bytes a client stream writes.

Over TCP, stanzas inherit ``jabber:client`` and the ``stream:`` prefix from
the stream header. A WebSocket message (RFC 7395 §3.3.3) and the children of
a BOSH ``<body/>`` (XEP-0206 §5) have no such header around them, so each
top-level element the stream logic writes gets its namespace stated.
"""

from __future__ import annotations

from .. import ns

_JABBER_CLIENT = f" xmlns='{ns.CLIENT}'".encode()
_STREAM_PREFIX = f" xmlns:stream='{ns.STREAM}'".encode()
_STANZAS = frozenset((b"message", b"presence", b"iq"))


def qualify(data: bytes, *, stream_prefix: bool = True) -> bytes:
    """``data`` (one top-level element as :func:`vinespy.xml.serialize` or the
    stream logic wrote it) with ``xmlns='jabber:client'`` on a stanza and, if
    ``stream_prefix``, ``xmlns:stream`` on a ``<stream:...>`` element."""
    end = _name_end(data)
    name = data[1:end]
    if name in _STANZAS:
        if not data.startswith(b" xmlns=", end):
            return data[:end] + _JABBER_CLIENT + data[end:]
    elif stream_prefix and name.startswith(b"stream:"):
        if not data.startswith(b" xmlns:stream=", end):
            return data[:end] + _STREAM_PREFIX + data[end:]
    return data


def _name_end(data: bytes) -> int:
    """Where the first tag's name ends (its first attribute or ``>``, ``/>``)."""
    i = 1
    n = len(data)
    while i < n and data[i] not in b" \t\r\n/>":
        i += 1
    return i
