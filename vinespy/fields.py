"""Per-session state that a module owns.

A module declares what it keeps on each session as class attributes, and
the core carries it without knowing what it is::

    class Roster(Module):
        # RFC 6121 §2.1.6: the resource asked for the roster, so it gets pushes.
        interested = SessionField(bool, False, shared=True)

        ...
        Roster.interested.set(session, True)
        if Roster.interested.get(session): ...

Values live in ``session.fields`` under the field's key (``roster.interested``:
the module's name and the attribute's), only while they differ from the
default. A ``shared`` field travels to the other nodes of a cluster: a
scalar (bool, int, float, str) in the session's routing entry, so a node
reading the routes sees it on the session's proxy; a set (``SessionField(set,
shared=True, member=JID.parse)``) as a Redis set of its own, written as
deltas, so that a set of thousands costs one small write per change. A
field that is not shared exists only on the node holding the stream; it may
also hold an object of the module's own (a queue): declared without a
default, it reads None until set, and the module changes the object in place.

The session is told of every change (``session.field_changed(field,
member)``, after it is made; for a set emptied by ``clear``, with member
None, before): a local stream hands it to the cluster, a proxy ignores it
(another node's session is changed by that node).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, ClassVar, Generic, TypeVar

if TYPE_CHECKING:
    from .sessions import Session

T = TypeVar("T")

_SCALARS = (bool, int, float, str)
_EMPTY: frozenset[Any] = frozenset()


class SessionField(Generic[T]):
    """One module's piece of per-session state; see the module docstring."""

    # key -> field, of every shared field declared (the cluster's schema).
    shared_fields: ClassVar[dict[str, SessionField[Any]]] = {}

    def __init__(self, type: type[T], default: T | None = None, *, shared: bool = False,
                 member: Callable[[str], Any] = str) -> None:
        if default is None and type in _SCALARS:
            raise TypeError("a scalar SessionField needs a default")
        if shared and type is not set and type not in _SCALARS:
            raise TypeError(f"a shared SessionField holds bool, int, float, str or set, "
                            f"not {type.__name__}")
        self.type = type
        self.default = default
        self.shared = shared
        self.member = member          # a set's members from their str() (in other nodes)
        self.key = ""

    def __set_name__(self, owner: type, attr: str) -> None:
        module = getattr(owner, "name", "") or owner.__name__.lower()
        self.key = f"{module}.{attr}"
        if self.shared:
            other = SessionField.shared_fields.get(self.key)
            if other is not None and other is not self:
                raise TypeError(f"two shared session fields named {self.key}")
            SessionField.shared_fields[self.key] = self

    @property
    def is_set(self) -> bool:
        return self.type is set

    # -- scalars ---------------------------------------------------------------
    def get(self, session: Session) -> Any:
        """The value (a set field: the set, read-only; empty when none)."""
        value = session.fields.get(self.key)
        if value is None:
            return _EMPTY if self.is_set else self.default
        return value

    def set(self, session: Session, value: T) -> None:
        if self.get(session) == value:
            return
        if value == self.default:
            session.fields.pop(self.key, None)
        else:
            session.fields[self.key] = value
        session.field_changed(self, None)

    # -- sets ------------------------------------------------------------------
    def add(self, session: Session, member: Any) -> None:
        values = session.fields.setdefault(self.key, set())
        if member not in values:
            values.add(member)
            session.field_changed(self, member)

    def discard(self, session: Session, member: Any) -> None:
        values = session.fields.get(self.key)
        if values is not None and member in values:
            values.discard(member)
            if not values:
                del session.fields[self.key]
            session.field_changed(self, member)

    def clear(self, session: Session) -> None:
        """Empty a set; a field holding an object of its own: back to None."""
        if session.fields.get(self.key):
            session.field_changed(self, None)   # first: a listener reads what leaves
            del session.fields[self.key]

    def __repr__(self) -> str:
        return f"<SessionField {self.key}: {self.type.__name__}{' shared' if self.shared else ''}>"


def shared_values(session: Session) -> dict[str, Any]:
    """``session``'s shared fields as JSON values (a set as the sorted list
    of its members' strings): what another node needs to carry it on."""
    out: dict[str, Any] = {}
    for key, value in session.fields.items():
        field = SessionField.shared_fields.get(key)
        if field is not None:
            out[key] = sorted(str(m) for m in value) if field.is_set else value
    return out


def restore_shared(session: Session, values: dict[str, Any]) -> None:
    """Set what :func:`shared_values` gave on ``session`` (not bound yet: no
    change is announced); keys no module here declares are skipped."""
    for key, value in values.items():
        field = SessionField.shared_fields.get(key)
        if field is None:
            continue
        session.fields[key] = {field.member(m) for m in value} if field.is_set else value
