"""In-memory stand-ins for tests that need no socket."""

from __future__ import annotations

import copy
from typing import Any

from vinespy.errors import StreamError
from vinespy.jid import JID
from vinespy.xml import Element


class FakeSession:
    """An in-memory bound resource that records what it is sent."""

    def __init__(self, jid: JID | str, available: bool = True, sessions: Any = None) -> None:
        self.jid = JID.parse(jid) if isinstance(jid, str) else jid
        self.available = available
        self.priority = 0
        self.presence: Element | None = None
        self.fields: dict[str, Any] = {}
        self.sessions = sessions        # told of field changes, as a stream tells its server's
        self.got: list[Element] = []

    def send(self, st: Element) -> None:
        # A copy: a real session serializes at once, so a sender may reuse
        # the element (the presence module re-addresses one per recipient).
        self.got.append(copy.deepcopy(st))

    def send_serialized(self, st: Element, data: bytes) -> None:
        self.send(st)

    def close(self, error: StreamError | None = None) -> None:
        pass

    def field_changed(self, field: Any, member: Any) -> None:
        if self.sessions is not None:
            self.sessions.field_changed(self, field, member)
