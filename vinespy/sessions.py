"""Locally bound resources: the routing table of this process.

A session is anything that can take a stanza for a bound full JID: a C2S
stream here, a proxy for a stream on another cluster node later. The router
only sees this protocol.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterable, Iterator, Protocol

from .errors import StreamError
from .jid import JID
from .locks import KeyedLock
from .xml import Element

if TYPE_CHECKING:
    from .fields import SessionField


class Session(Protocol):
    """What the router needs of a bound resource."""

    jid: JID                    # full JID, once bound
    available: bool             # sent available presence (RFC 6121 §4.2)
    priority: int               # from its last available presence
    presence: Element | None    # its last broadcast presence
    fields: dict[str, Any]      # the modules' state (vinespy.fields.SessionField)
    pre_events: dict[str, str]  # tag -> pre-<kind> event its host's modules hook

    @property
    def ending(self) -> bool:
        """On its way out, still bound (:meth:`ClientSession.unbind
        <vinespy.stream.session.ClientSession.unbind>`)."""

    def send(self, stanza: Element) -> None:
        """Queue ``stanza`` for delivery; never blocks. It is serialized before
        this returns: the caller may change or reuse the element afterwards."""

    def send_serialized(self, stanza: Element, data: bytes) -> None:
        """:meth:`send` ``stanza`` whose serialization ``data`` is at hand
        (it arrived serialized from another node): written as it is when
        nothing needs the element."""

    def close(self, error: StreamError | None = None) -> None:
        """Close the stream, sending ``error`` first if given."""

    def field_changed(self, field: SessionField[Any], member: Any) -> None:
        """``field`` changed (a set field: ``member`` came or went; None: all)."""


class Sessions:
    """full JID -> session, bare JID -> {resource: session}.

    This is a standalone server's whole table; a cluster node uses
    :class:`vinespy.cluster.sessions.ClusterSessions`, which adds the
    resources bound on other nodes and keeps Redis up to date.
    """

    clustered = False
    node = ""                   # this node's id in a cluster

    def __init__(self) -> None:
        self._full: dict[JID, Session] = {}
        self._bare: dict[JID, dict[str, Session]] = {}
        self._binding: KeyedLock[JID] = KeyedLock()

    def __len__(self) -> int:
        return len(self._full)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._full.values()))

    def get(self, full: JID) -> Session | None:
        return self._full.get(full)

    def local(self, full: JID) -> Session | None:
        """The session bound to ``full`` in this process."""
        return self._full.get(full)

    def resources(self, bare: JID) -> list[Session]:
        """Every session bound for ``bare`` (available or not)."""
        r = self._bare.get(bare)
        return list(r.values()) if r else []

    def available(self, bare: JID) -> list[Session]:
        r = self._bare.get(bare)
        return [s for s in r.values() if s.available] if r else []

    def count(self, bare: JID) -> int:
        r = self._bare.get(bare)
        return len(r) if r else 0

    def missing(self, bares: Iterable[JID]) -> list[JID]:
        """Bare JIDs whose sessions must be :meth:`load`-ed before a lookup."""
        return []

    async def load(self, bares: Iterable[JID], *, fresh: bool = False) -> None:
        """Fetch what :meth:`missing` named (nothing to do when standalone)."""

    def changed(self, session: Session) -> None:
        """``session``'s availability, priority, presence or interest changed."""

    def field_changed(self, session: Session, field: SessionField[Any], member: Any) -> None:
        """A module's ``field`` of ``session`` changed (see vinespy.fields)."""

    async def published(self) -> None:
        """Return once the changes noted so far are seen by every cluster node
        (at once standalone)."""

    def exclusive(self, name: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Held by one task of the whole cluster at a time (standalone, the
        caller's own lock is enough: this holds nothing)."""
        return contextlib.nullcontext()

    def hold(self) -> contextlib.AbstractContextManager[None]:
        """While held, stanzas for other cluster nodes are queued, not sent:
        what is routed inside goes out together (nothing to hold standalone)."""
        return contextlib.nullcontext()

    @contextlib.asynccontextmanager
    async def binding(self, bare: JID) -> AsyncIterator[None]:
        """Held from a bind's checks to its :meth:`bind`: the binds of one
        account happen one after another, so each decides conflicts and the
        resource limit on the table as the previous one left it (a
        replacement awaits the old session's unbinding in between)."""
        async with self._binding.hold(bare):
            yield

    def bind(self, session: Session) -> Session | None:
        """Add ``session`` under its full JID; return the session it replaced."""
        jid = session.jid
        old = self._full.get(jid)
        self._full[jid] = session
        self._bare.setdefault(jid.bare, {})[jid.resource] = session
        return old if old is not session else None

    def adopt(self, session: Session) -> None:
        """Bind ``session``, which comes whole (fields and all) from another
        node (XEP-0198 resumption there): as :meth:`bind`, its shared set
        fields written whole too."""
        self.bind(session)

    def hand_over(self, session: Session, node: str, sid: str) -> None:
        """``session`` moved to cluster ``node``, where it is ``sid``: out of
        this table without being ended (standalone: never happens)."""
        raise RuntimeError("a standalone server has no other node")

    def forwarding(self, full: JID) -> Session | None:
        """Where stanzas still arriving here for a session handed over go."""
        return None

    def tell(self, node: str, domain: str, name: str, payload: bytes) -> None:
        """Send a module's message to ``node`` (``cluster/<name>`` there, on
        the bus of ``domain``'s host), in order with the stanzas sent there."""
        raise RuntimeError("a standalone server has no other node")

    def keep(self, name: str, items: list[bytes], ttl: float, *, reset: bool = False) -> None:
        """Keep ``items`` (appended; all replaced when ``reset``) where any
        node can take them if this one dies, for ``ttl`` s after the last
        append (standalone: nowhere; a process that dies takes them along)."""

    def unkeep(self, name: str) -> None:
        """Forget what :meth:`keep` kept under ``name``."""

    async def take_kept(self, name: str) -> list[bytes]:
        """What :meth:`keep` kept under ``name`` (on whichever node), once:
        it is forgotten."""
        return []

    def unbind(self, session: Session) -> bool:
        """Remove ``session`` if it is still the one bound to its JID."""
        jid = session.jid
        if self._full.get(jid) is not session:
            return False
        del self._full[jid]
        res = self._bare[jid.bare]
        del res[jid.resource]
        if not res:
            del self._bare[jid.bare]
        return True
