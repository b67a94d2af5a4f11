"""A resource bound on another node, as the router sees it: a Session.

Sending to it queues the stanza for that node's inbox (the publisher
coalesces everything for one node into one Redis command per flush);
closing it asks that node to close the stream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import StreamError
from ..fields import SessionField
from ..jid import JID
from ..xml import Element
from . import wire

if TYPE_CHECKING:
    from .publisher import Publisher


class StreamProxy:
    __slots__ = ("jid", "node", "sid", "available", "priority", "fields",
                 "_presence_xml", "_presence", "_publisher")

    pre_events: dict[str, str] = {}     # never a sender: it sends from its own node
    ending = False                      # its own node knows (a resource it unbinds)

    def __init__(self, jid: JID, rec: wire.Record, publisher: Publisher) -> None:
        self.jid = jid
        self.node = rec.node
        self.sid = rec.sid
        self.available = rec.available
        self.priority = rec.priority
        self.fields: dict[str, Any] = dict(rec.fields)    # the modules' shared fields
        for text in rec.sets:
            key, _, member = text.partition(" ")
            field = SessionField.shared_fields.get(key)
            if field is None or not field.is_set:
                continue    # a field no module here declares
            try:
                self.fields.setdefault(key, set()).add(field.member(member))
            except ValueError:
                pass        # a bad entry (JIDError is a ValueError): nothing to do with it
        self._presence_xml = rec.presence
        self._presence: Element | None = None
        self._publisher = publisher

    def __repr__(self) -> str:
        return f"<StreamProxy {self.jid} at {self.node}>"

    @property
    def presence(self) -> Element | None:
        """Its last broadcast presence, parsed on first use (probes need it)."""
        if self._presence is None and self._presence_xml is not None:
            try:
                self._presence = wire.parse_stanza(self._presence_xml)
            except wire.WireError:
                self._presence_xml = None
        return self._presence

    @presence.setter
    def presence(self, value: Element | None) -> None:
        self._presence = value
        self._presence_xml = None

    def send(self, stanza: Element) -> None:
        self._publisher.stanza(self.node, self.jid, stanza)

    def send_serialized(self, stanza: Element, data: bytes) -> None:
        self.send(stanza)

    def field_changed(self, field: SessionField[Any], member: Any) -> None:
        """Another node's session is changed by that node, not from here."""

    def close(self, error: StreamError | None = None) -> None:
        self._publisher.close(self.node, self.jid, self.sid,
                              error.condition if error is not None else "")
