"""A resource bound on another node, as the router sees it: a Session.

Sending to it queues the stanza for that node's inbox (the publisher
coalesces everything for one node into one Redis command per flush);
closing it asks that node to close the stream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import StreamError
from ..jid import JID, JIDError
from ..xml import Element
from . import wire

if TYPE_CHECKING:
    from .publisher import Publisher


class StreamProxy:
    __slots__ = ("jid", "node", "sid", "available", "priority", "interested", "directed",
                 "_presence_xml", "_presence", "_publisher")

    def __init__(self, jid: JID, rec: wire.Record, publisher: Publisher) -> None:
        self.jid = jid
        self.node = rec.node
        self.sid = rec.sid
        self.available = rec.available
        self.priority = rec.priority
        self.interested = rec.interested
        self.directed: set[JID] = set()
        for text in rec.directed:
            try:
                self.directed.add(JID.parse(text))
            except JIDError:
                pass        # a bad entry: nobody to tell
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

    def close(self, error: StreamError | None = None) -> None:
        self._publisher.close(self.node, self.jid, self.sid,
                              error.condition if error is not None else "")
