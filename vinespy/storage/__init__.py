"""Storage: the async interface every backend implements, and its registry.

Backends are chosen by name in each ``[[host]]``'s ``[host.storage]`` table
(``backend = "fs"``) and built from its options. A miss returns None; an I/O
failure raises :class:`StorageError` wrapping the cause: no backend leaks
``OSError`` or a driver's exceptions upward. Models are plain dataclasses;
turning them into bytes is the backend's job.

Besides the typed records (accounts, vCards, private XML) every backend keeps
per-user key-value stores (Prosody's keyval stores): :meth:`Storage.get` and
:meth:`Storage.put` file one JSON-compatible value per bare JID and store
name, so a module needs no new Storage method for its own small records.
"""

from __future__ import annotations

import abc
import copy
import importlib
import json
import re
from dataclasses import dataclass, field
from typing import (Any, AsyncIterator, Callable, ClassVar, Generic, Mapping, Protocol,
                    TypeVar)

from lxml import etree

from ..jid import JID


class StorageError(Exception):
    """The backend failed (I/O, corrupt record); ``__cause__`` holds why."""


class NotReplicated(StorageError):
    """A write the Redis primary made, but fewer than ``wanted`` replicas
    confirmed it within the timeout (``WAIT`` answered ``acked``).

    Redis replicates asynchronously: if the primary died now, the replica
    promoted in its place could lack the write. It is not undone (the
    primary has it, and so will its replicas once they catch up), but it
    must not be answered as done: whoever asked is told to send it again.
    """

    def __init__(self, message: str, wanted: int, acked: int) -> None:
        super().__init__(message)
        self.wanted = wanted
        self.acked = acked


class RosterConflict(Exception):
    """:meth:`Storage.update_roster` with ``expected``: the roster changed
    since it was read (another node wrote it). Nothing was stored: read it
    again and redo the change."""


@dataclass(frozen=True)
class ScramKeys:
    """What RFC 5802 §3 lets a server keep instead of a password."""

    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int


@dataclass
class Contact:
    """One roster item (RFC 6121 §2.1.2)."""

    jid: JID
    name: str | None = None
    subscription: str = "none"        # none | to | from | both
    ask: str | None = None            # None | "subscribe" (pending out)
    groups: list[str] = field(default_factory=list)
    approved: bool = False            # pre-approved (RFC 6121 §3.4)
    pending_in: bool = False          # a subscribe from them awaits an answer
    # Not a roster item: the record only remembers a stranger's pending
    # subscription request (RFC 6121 Appendix A.1 state 3, "MUST NOT create
    # a roster item"); never shown in a roster result or push.
    hidden: bool = False


@dataclass
class User:
    """An account: bare JID, SCRAM credentials per mechanism, roster."""

    jid: JID
    credentials: dict[str, ScramKeys] = field(default_factory=dict)  # "SCRAM-SHA-1" -> keys
    roster: dict[JID, Contact] = field(default_factory=dict)
    roster_version: int = 0


@dataclass(frozen=True)
class ContactLookup:
    """One record of a user's roster, with what a change to it must know."""

    contact: Contact | None     # the record asked for (a copy); None if there is none
    version: int                # the roster version
    items: int                  # records that are roster items (not ``hidden``)
    pending: int                # ``hidden`` records: strangers' unanswered requests


class Storage(abc.ABC):
    """One backend instance serves one ``[[host]]`` table (all its domains)."""

    name: ClassVar[str]

    @abc.abstractmethod
    async def find_user(self, jid: JID) -> User | None:
        """The user with bare JID ``jid`` (a full JID is reduced), or None."""

    @abc.abstractmethod
    async def save_user(self, user: User) -> None:
        """Create or replace ``user`` (credentials and roster) atomically."""

    async def find_contact(self, jid: JID, contact: JID) -> ContactLookup | None:
        """The record of user ``jid`` for ``contact`` and its roster's version
        and counts; None if the user does not exist.

        With :meth:`update_roster`, what a roster change needs: a backend can
        answer it without handing out the whole roster. This default reads
        the whole User.
        """
        user = await self.find_user(jid)
        if user is None:
            return None
        hidden = sum(1 for c in user.roster.values() if c.hidden)
        return ContactLookup(user.roster.get(contact), user.roster_version,
                             len(user.roster) - hidden, hidden)

    async def update_roster(self, jid: JID, changes: Mapping[JID, Contact | None],
                            version: int, *, expected: int | None = None) -> bool:
        """Store a change to the roster of the user ``jid``, atomically: each
        Contact of ``changes`` replaces the record of its JID (None deletes
        it), and the roster version becomes ``version``; credentials and the
        other records stay as stored. False, storing nothing, if the user
        does not exist. With ``expected`` (the version the change was computed
        from), :class:`RosterConflict`, storing nothing, if the stored version
        is another: a backend several nodes share (sql) checks it in the same
        transaction, so concurrent changes of one roster are never lost nor
        given one version twice. (fs checks it only against what this
        process wrote: the documented limit of a shared fs directory.)

        What every roster change of the server goes through, so a backend can
        make its cost independent of the roster's size (fs appends to a
        journal). This default reads and saves the whole User.
        """
        user = await self.find_user(jid)
        if user is None:
            return False
        apply_roster_changes(user, changes, version, expected)
        await self.save_user(user)
        return True

    @abc.abstractmethod
    async def delete_user(self, jid: JID) -> bool:
        """Remove the user and everything stored for it; False if absent."""

    @abc.abstractmethod
    async def find_vcard(self, jid: JID) -> etree._Element | None:
        """The user's ``<vCard xmlns='vcard-temp'/>`` or None (XEP-0054)."""

    @abc.abstractmethod
    async def save_vcard(self, jid: JID, card: etree._Element) -> None:
        """Store ``card`` for the bare ``jid``."""

    @abc.abstractmethod
    async def find_fragment(self, jid: JID, namespace: str, name: str) -> etree._Element | None:
        """The private XML fragment ``{namespace}name`` of ``jid`` (XEP-0049)."""

    @abc.abstractmethod
    async def save_fragment(self, jid: JID, fragment: etree._Element) -> None:
        """Store ``fragment`` under its own qualified name for ``jid``."""

    @abc.abstractmethod
    async def get(self, jid: JID, store: str) -> Any | None:
        """The value kept for the bare ``jid`` under ``store``, or None.

        ``store`` is checked with :func:`check_store` (ValueError). The value
        comes back as JSON decodes it (tuples are lists, keys are strings).
        """

    @abc.abstractmethod
    async def put(self, jid: JID, store: str, value: Any | None) -> None:
        """Keep ``value`` (JSON-compatible) for the bare ``jid`` under ``store``,
        replacing what was there atomically; None deletes it.

        ValueError for a bad ``store`` name or a JID without a localpart;
        TypeError or ValueError for a value JSON cannot hold (see
        :func:`json_value`). ``delete_user`` removes every store of the user.
        """

    async def find_account(self, jid: JID) -> User | None:
        """The account with its credentials, for a login or an existence
        check: the roster may be left out (empty). The default is
        :meth:`find_user`; a backend where the roster costs a query of its
        own (sql) leaves it out."""
        return await self.find_user(jid)

    async def set_credentials(self, jid: JID, credentials: Mapping[str, ScramKeys]) -> bool:
        """Replace the account's SCRAM keys, nothing else (a password change
        while the server runs must not write back a roster read before it);
        False if there is no such account. Atomic on sql; the default reads
        and saves the user."""
        user = await self.find_user(jid)
        if user is None:
            return False
        user.credentials = dict(credentials)
        await self.save_user(user)
        return True

    async def add_user(self, user: User) -> bool:
        """Store ``user`` only if no account of its JID exists; whether it was
        stored. Atomic across nodes where the backend can be (sql): two
        creations of one account never overwrite each other, nor a roster
        written meanwhile. The default looks, then saves."""
        if await self.find_user(user.jid) is not None:
            return False
        await self.save_user(user)
        return True

    async def modify(self, jid: JID, store: str,
                     change: Callable[[Any | None], Any | None]) -> Any | None:
        """Read-modify-write of ``jid``'s ``store``: ``change(current)`` gives
        the new value (None deletes), which is stored and returned; an
        exception from ``change`` stores nothing and propagates.

        A backend shared by several nodes makes it one transaction, so two
        nodes changing one store at once never lose either change (sql). The
        default reads and writes in turn: atomic within one process when no
        other writer of the store awaits between (memory; fs on one node).
        """
        new = change(await self.get(jid, store))
        await self.put(jid, store, new)
        return new

    # --- enumeration: what a copy of everything (vinespy migrate) reads ---
    # Not abstract: a wrapper or a test double that is never copied from
    # needs none of them.

    def owners(self) -> AsyncIterator[JID]:
        """Every bare JID with anything stored (an account, a vCard, private
        XML or a keyval store), each once, in no set order; streamed, so a
        big deployment is never held in memory. Data stored under a JID
        that has no account is there too."""
        raise StorageError(f"{type(self).__name__} cannot list what it holds")

    async def fragments(self, jid: JID) -> list[tuple[str, str]]:
        """The (namespace, name) of every private XML fragment of ``jid``, sorted."""
        raise StorageError(f"{type(self).__name__} cannot list what it holds")

    async def stores(self, jid: JID) -> list[str]:
        """The names of ``jid``'s keyval stores that hold a value, sorted."""
        raise StorageError(f"{type(self).__name__} cannot list what it holds")

    async def open(self) -> None:
        """Check, before the server serves, that the storage can be used
        (a database reachable, its schema this version's); StorageError, one
        line, if not. The default has nothing to check."""

    async def close(self) -> None:
        """Release resources; the default has none."""


class Wrapped(Storage):
    """A storage that hands every call to ``inner``; subclasses override
    what they add (:class:`vinespy.cluster.notifying_storage.NotifyingStorage`
    announces changes, :class:`vinespy.auth.ldap.DirectoryStorage` takes its
    users from LDAP). Forwarding each method, rather than inheriting the
    defaults, keeps ``inner``'s own atomic ``modify`` and ``add_user``."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)     # a backend's own extras (SqlStorage.url...)

    async def find_user(self, jid: JID) -> User | None:
        return await self.inner.find_user(jid)

    async def save_user(self, user: User) -> None:
        await self.inner.save_user(user)

    async def find_account(self, jid: JID) -> User | None:
        return await self.inner.find_account(jid)

    async def add_user(self, user: User) -> bool:
        return await self.inner.add_user(user)

    async def set_credentials(self, jid: JID, credentials: Mapping[str, ScramKeys]) -> bool:
        return await self.inner.set_credentials(jid, credentials)

    async def find_contact(self, jid: JID, contact: JID) -> ContactLookup | None:
        return await self.inner.find_contact(jid, contact)

    async def update_roster(self, jid: JID, changes: Mapping[JID, Contact | None],
                            version: int, *, expected: int | None = None) -> bool:
        return await self.inner.update_roster(jid, changes, version, expected=expected)

    async def delete_user(self, jid: JID) -> bool:
        return await self.inner.delete_user(jid)

    async def find_vcard(self, jid: JID) -> etree._Element | None:
        return await self.inner.find_vcard(jid)

    async def save_vcard(self, jid: JID, card: etree._Element) -> None:
        await self.inner.save_vcard(jid, card)

    async def find_fragment(self, jid: JID, namespace: str, name: str) -> etree._Element | None:
        return await self.inner.find_fragment(jid, namespace, name)

    async def save_fragment(self, jid: JID, fragment: etree._Element) -> None:
        await self.inner.save_fragment(jid, fragment)

    async def get(self, jid: JID, store: str) -> Any | None:
        return await self.inner.get(jid, store)

    async def put(self, jid: JID, store: str, value: Any | None) -> None:
        await self.inner.put(jid, store, value)

    async def modify(self, jid: JID, store: str,
                     change: Callable[[Any | None], Any | None]) -> Any | None:
        return await self.inner.modify(jid, store, change)

    def owners(self) -> AsyncIterator[JID]:
        return self.inner.owners()

    async def fragments(self, jid: JID) -> list[tuple[str, str]]:
        return await self.inner.fragments(jid)

    async def stores(self, jid: JID) -> list[str]:
        return await self.inner.stores(jid)

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()


def apply_roster_changes(user: User, changes: Mapping[JID, Contact | None],
                         version: int, expected: int | None = None) -> None:
    """Apply :meth:`Storage.update_roster`'s ``changes`` and ``version`` to
    ``user``; RosterConflict, changing nothing, if ``expected`` is given and
    is not the user's roster version."""
    if expected is not None and user.roster_version != expected:
        raise RosterConflict(f"{user.jid}: roster version {user.roster_version}, "
                             f"not {expected}")
    for jid, contact in changes.items():
        if contact is None:
            user.roster.pop(jid, None)
        else:
            user.roster[jid] = copy.deepcopy(contact)
    user.roster_version = version


def xml_bytes(element: etree._Element) -> bytes:
    """``element`` alone (without its tail) as UTF-8 XML, for a backend to keep."""
    return etree.tostring(element, encoding="utf-8", with_tail=False)


def xml_element(data: bytes, what: str) -> etree._Element:
    """Parse stored XML with a hardened parser; StorageError if it is corrupt.

    No network, no DTD, no entity expansion: a document with a DOCTYPE was
    not written by a backend and is refused.
    """
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                             huge_tree=False, remove_blank_text=False)
    try:
        root = etree.fromstring(data, parser)
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise StorageError(f"corrupt {what}: {exc}") from exc
    if root.getroottree().docinfo.internalDTD is not None:   # any <!DOCTYPE>
        raise StorageError(f"corrupt {what}: unexpected DOCTYPE")
    return root


_STORE = re.compile(r"[a-z0-9_]+")
# Names a backend keeps its typed records under (fs: <user dir>/user.json).
RESERVED_STORES = frozenset({"user"})


def check_store(store: str) -> str:
    """``store`` if it is a valid keyval store name: ``[a-z0-9_]+``, not reserved."""
    if not isinstance(store, str) or not _STORE.fullmatch(store):
        raise ValueError(f"bad keyval store name {store!r}: expected [a-z0-9_]+")
    if store in RESERVED_STORES:
        raise ValueError(f"keyval store name {store!r} is reserved")
    return store


def json_value(value: Any) -> bytes:
    """``value`` as UTF-8 JSON, the form every backend keeps a keyval value in.

    TypeError for what JSON cannot hold (sets, bytes, objects), ValueError for
    NaN and infinities and for circular structures.
    """
    return json.dumps(value, ensure_ascii=False, allow_nan=False,
                      separators=(",", ":")).encode("utf-8")


def value_from_json(data: bytes, what: str) -> Any:
    """Decode a kept keyval value; StorageError if it is corrupt."""
    try:
        return json.loads(data)
    except ValueError as exc:          # JSONDecodeError and UnicodeDecodeError
        raise StorageError(f"corrupt {what}: {exc}") from exc


class _Backend(Protocol):
    name: ClassVar[str]


B = TypeVar("B", bound=_Backend)


class Registry(Generic[B]):
    """The backends of one interface by name (Prosody's storage drivers).

    ``@registry.register("fs")`` on a class makes it available by that name
    (and sets its ``name``); :meth:`open` builds one from its options. The
    built-in backends are imported the first time one is asked for, each
    alone, so a backend's driver (redis-py) is imported only by those that
    use it. User storage (:func:`open_storage`) and pubsub storage
    (:func:`vinespy.storage.pubsub.open_pubsub`) each have one.
    """

    def __init__(self, what: str, builtin: Mapping[str, str]) -> None:
        self.what = what                        # "storage backend": for errors
        self._builtin = dict(builtin)           # name -> module that registers it
        self._classes: dict[str, type[B]] = {}

    def register(self, name: str) -> Callable[[type[B]], type[B]]:
        """Class decorator: make a backend available as ``name``."""
        def deco(cls: type[B]) -> type[B]:
            cls.name = name
            self._classes[name] = cls
            return cls
        return deco

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._classes.keys() | self._builtin.keys()))

    def open(self, name: str, options: Mapping[str, Any]) -> B:
        """Build the backend registered as ``name`` with ``options`` as keywords;
        StorageError for an unknown name, TypeError for wrong options."""
        if name not in self._classes and name in self._builtin:
            importlib.import_module(self._builtin[name])
        try:
            cls = self._classes[name]
        except KeyError:
            raise StorageError(f"unknown {self.what} {name!r}; "
                               f"known: {', '.join(self.names())}") from None
        return cls(**dict(options))


_BACKENDS: Registry[Storage] = Registry("storage backend", {
    name: f"{__name__}.{name}" for name in ("fs", "memory", "null", "sql")})
register = _BACKENDS.register


def backends() -> tuple[str, ...]:
    return _BACKENDS.names()


def open_storage(backend: str, options: Mapping[str, Any]) -> Storage:
    """Build the backend registered as ``backend`` with ``options`` as keywords."""
    return _BACKENDS.open(backend, options)
