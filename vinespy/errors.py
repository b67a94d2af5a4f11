"""Stanza errors (RFC 6120 §8.3) and stream errors (RFC 6120 §4.9) as exceptions.

Handlers raise these; the stream layer and the router turn them into XML.
:class:`ConfigError` is the operator's: what stops a start (the config file,
a certificate), one line.
"""

from __future__ import annotations

import copy

from lxml import etree

from . import ns

# RFC 6120 §8.3.3: the error type that goes with each defined condition.
STANZA_CONDITIONS: dict[str, str] = {
    "bad-request": "modify",
    "conflict": "cancel",
    "feature-not-implemented": "cancel",
    "forbidden": "auth",
    "gone": "cancel",
    "internal-server-error": "cancel",
    "item-not-found": "cancel",
    "jid-malformed": "modify",
    "not-acceptable": "modify",
    "not-allowed": "cancel",
    "not-authorized": "auth",
    "policy-violation": "modify",
    "recipient-unavailable": "wait",
    "redirect": "modify",
    "registration-required": "auth",
    "remote-server-not-found": "cancel",
    "remote-server-timeout": "wait",
    "resource-constraint": "wait",
    "service-unavailable": "cancel",
    "subscription-required": "auth",
    "undefined-condition": "cancel",
    "unexpected-request": "wait",
}

# RFC 6120 §4.9.3.
STREAM_CONDITIONS = frozenset((
    "bad-format", "bad-namespace-prefix", "conflict", "connection-timeout",
    "host-gone", "host-unknown", "improper-addressing", "internal-server-error",
    "invalid-from", "invalid-namespace", "invalid-xml", "not-authorized",
    "not-well-formed", "policy-violation", "remote-connection-failed", "reset",
    "resource-constraint", "restricted-xml", "see-other-host", "system-shutdown",
    "undefined-condition", "unsupported-encoding", "unsupported-feature",
    "unsupported-stanza-type", "unsupported-version",
))


class ConfigError(Exception):
    """The configuration is unusable; ``str()`` is one line for the operator.

    Here rather than in :mod:`vinespy.config` so that what the config checks
    with (:func:`vinespy.tls.contexts`) can raise it without importing config.
    """


class StartupError(ConfigError):
    """The server could not start (e.g. a port is taken); one line."""


class StanzaError(Exception):
    """A stanza-level error: the framework answers the offending stanza with it."""

    def __init__(self, condition: str, text: str | None = None,
                 type: str | None = None, app: etree._Element | None = None) -> None:
        if condition not in STANZA_CONDITIONS:
            raise ValueError(f"unknown stanza error condition {condition!r}")
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text
        self.type = type or STANZA_CONDITIONS[condition]
        self.app = app          # an application-specific condition (RFC 6120 §8.3.2)

    def element(self) -> etree._Element:
        """The ``<error/>`` child (RFC 6120 §8.3.2), in jabber:client."""
        err = etree.Element(f"{{{ns.CLIENT}}}error", nsmap=ns.default(ns.CLIENT))
        err.set("type", self.type)
        etree.SubElement(err, f"{{{ns.STANZAS}}}{self.condition}", nsmap=ns.default(ns.STANZAS))
        if self.text:
            t = etree.SubElement(err, f"{{{ns.STANZAS}}}text", nsmap=ns.default(ns.STANZAS))
            t.set(f"{{{ns.XML}}}lang", "en")
            t.text = self.text
        if self.app is not None:
            err.append(copy.deepcopy(self.app))
        return err


class StreamError(Exception):
    """A stream-level error: the stream sends it and closes (RFC 6120 §4.9)."""

    def __init__(self, condition: str, text: str | None = None, app: str = "") -> None:
        if condition not in STREAM_CONDITIONS:
            raise ValueError(f"unknown stream error condition {condition!r}")
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text
        self.app = app          # an application-specific condition, as XML (RFC 6120 §4.9.4)

    def to_bytes(self) -> bytes:
        """``<stream:error>`` serialized with the ``stream`` prefix of the open stream."""
        body = f"<{self.condition} xmlns='{ns.STREAMS}'/>"
        if self.text:
            body += (f"<text xmlns='{ns.STREAMS}' xml:lang='en'>"
                     f"{_escape(self.text)}</text>")
        return f"<stream:error>{body}{self.app}</stream:error>".encode()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
