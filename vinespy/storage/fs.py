"""``backend = "fs"``: the embedded default, one directory per user.

Layout under ``dir``::

    <domain>/<local>/user.json              credentials (base64), roster, roster version
    <domain>/<local>/vcard.xml              vcard-temp (XEP-0054)
    <domain>/<local>/private/<ns>.<name>.xml  private XML storage (XEP-0049)
    <domain>/<local>/<store>.json           a keyval store's value (``[a-z0-9_]+``;
                                            ``user`` is reserved for user.json)

File names: every byte of the UTF-8 name outside ``[a-z0-9_-]`` is written
``%XX`` (upper-case hex), ``.`` included, so no name can be ``.``, ``..``,
hold a separator, differ only in case or start with a dot; dot-names are
left for temporary files and tombstones. Names longer than 200 characters
once encoded (RFC 7622 allows 1023-byte parts; file systems allow 255) become
a readable prefix, ``~`` and the SHA-256 of the name: no longer reversible,
but ``user.json`` records the JID and a mismatch is refused.

Writes are atomic: a temporary file in the same directory is written,
flushed, fsync'ed and renamed over the old one (``os.replace``), then the
directory is fsync'ed; a crash at any point leaves the old file or the new
one. Directories are created 0700, files 0600. All blocking I/O runs in a
worker thread. An unreadable or corrupt file raises StorageError and is left
as it is; every OSError becomes StorageError.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, Callable, TypeVar

from lxml import etree

from ..fileio import atomic_write, fsync_dir
from ..jid import JID, JIDError
from . import (Contact, ScramKeys, Storage, StorageError, User, check_store, json_value,
               register, value_from_json, xml_bytes, xml_element)

log = logging.getLogger(__name__)

T = TypeVar("T")

_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789_-")
_HEX = frozenset("0123456789ABCDEF")
_MAX_NAME = 200
FORMAT = 1          # user.json "format"


def encode_name(text: str) -> str:
    """A file name for ``text``: ``%XX`` for every byte outside ``[a-z0-9_-]``.

    Injective; reversible with :func:`decode_name` unless the result is
    longer than 200 characters, in which case it is hashed (contains ``~``).
    """
    raw = text.encode("utf-8")
    name = "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in raw)
    if len(name) > _MAX_NAME:
        name = f"{name[:120]}~{hashlib.sha256(raw).hexdigest()}"
    return name


def decode_name(name: str) -> str | None:
    """The text :func:`encode_name` made ``name`` from; None if hashed or not an encoding."""
    out = bytearray()
    i = 0
    while i < len(name):
        c = name[i]
        if c == "%" and len(name) >= i + 3 and set(name[i + 1:i + 3]) <= _HEX:
            byte = int(name[i + 1:i + 3], 16)
            if byte in _SAFE:
                return None             # never escaped: not our encoding
            out.append(byte)
            i += 3
        elif ord(c) < 128 and ord(c) in _SAFE:
            out.append(ord(c))
            i += 1
        else:
            return None
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _read(path: Path) -> bytes | None:
    """The file's bytes, or None if it (or a directory above it) is missing."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


# --- user.json ---------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any) -> bytes:
    return base64.b64decode(_typed(value, str), validate=True)


def _typed(value: Any, kind: type[T]) -> T:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"expected {kind.__name__}, found {type(value).__name__}")
    return value


def _optional_str(value: Any) -> str | None:
    return None if value is None else _typed(value, str)


def _user_to_json(user: User) -> bytes:
    doc = {
        "format": FORMAT,
        "jid": str(user.jid.bare),
        "credentials": {
            name: {"salt": _b64(k.salt), "stored_key": _b64(k.stored_key),
                   "server_key": _b64(k.server_key), "iterations": k.iterations}
            for name, k in user.credentials.items()
        },
        "roster": [
            {"jid": str(c.jid), "name": c.name, "subscription": c.subscription,
             "ask": c.ask, "groups": list(c.groups), "approved": c.approved,
             "pending_in": c.pending_in, "hidden": c.hidden}
            for c in user.roster.values()
        ],
        "roster_version": user.roster_version,
    }
    return json.dumps(doc, ensure_ascii=False, indent=1).encode("utf-8") + b"\n"


def _user_from_json(data: bytes, jid: JID) -> User:
    """Decode ``user.json`` of bare ``jid``; TypeError/ValueError/KeyError if corrupt."""
    doc = _typed(json.loads(data), dict)
    if doc.get("format") != FORMAT:
        raise ValueError(f"unknown format {doc.get('format')!r}")
    if _typed(doc["jid"], str) != str(jid):
        raise ValueError(f"the file belongs to {doc['jid']!r}, not {str(jid)!r}")
    credentials = {
        _typed(name, str): ScramKeys(salt=_unb64(k["salt"]), stored_key=_unb64(k["stored_key"]),
                                     server_key=_unb64(k["server_key"]),
                                     iterations=_typed(k["iterations"], int))
        for name, k in _typed(doc["credentials"], dict).items()
    }
    roster: dict[JID, Contact] = {}
    for item in _typed(doc["roster"], list):
        item = _typed(item, dict)
        contact = Contact(
            jid=JID.parse(_typed(item["jid"], str)),
            name=_optional_str(item["name"]),
            subscription=_typed(item["subscription"], str),
            ask=_optional_str(item["ask"]),
            groups=[_typed(g, str) for g in _typed(item["groups"], list)],
            approved=_typed(item["approved"], bool),
            pending_in=_typed(item["pending_in"], bool),
            hidden=_typed(item.get("hidden", False), bool),   # older files lack it: False
        )
        roster[contact.jid] = contact
    return User(jid=jid, credentials=credentials, roster=roster,
                roster_version=_typed(doc["roster_version"], int))


# --- the backend -------------------------------------------------------------


@register("fs")
class FsStorage(Storage):
    """Accounts, rosters, vCards, private XML and keyval stores as files under ``dir``."""

    def __init__(self, dir: str | Path) -> None:
        self.dir = Path(dir)

    # paths

    def user_dir(self, jid: JID) -> Path:
        """``<dir>/<domain>/<local>`` for ``jid``'s bare JID; ValueError without a localpart."""
        if not jid.local or not jid.domain:
            raise ValueError(f"{jid} is not a user JID")
        return self.dir / encode_name(jid.domain) / encode_name(jid.local)

    def _fragment_path(self, jid: JID, namespace: str, name: str) -> Path:
        # "." is always escaped inside encoded names, so it separates unambiguously.
        return self.user_dir(jid) / "private" / f"{encode_name(namespace)}.{encode_name(name)}.xml"

    def _store_path(self, jid: JID, store: str) -> Path:
        return self.user_dir(jid) / f"{check_store(store)}.json"

    # blocking helpers, run in a worker thread

    def _mkdirs(self, path: Path) -> None:
        """Create ``path`` and the missing directories between it and ``dir``, mode 0700."""
        if path.is_dir():
            return
        if not self.dir.is_dir():
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
        current = self.dir
        for part in path.relative_to(self.dir).parts:
            parent, current = current, current / part
            try:
                os.mkdir(current, 0o700)
            except FileExistsError:
                continue
            fsync_dir(parent)

    def _write(self, path: Path, data: bytes) -> None:
        """Replace ``path`` with ``data`` atomically and durably (file mode 0600)."""
        self._mkdirs(path.parent)
        atomic_write(path, data, 0o600)

    def _remove(self, path: Path) -> None:
        """Delete ``path`` durably if it exists."""
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        fsync_dir(path.parent)

    def _get(self, path: Path) -> Any | None:
        data = _read(path)
        return value_from_json(data, f"keyval {path}") if data is not None else None

    def _find_user(self, jid: JID) -> User | None:
        path = self.user_dir(jid) / "user.json"
        data = _read(path)
        if data is None:
            return None
        try:
            return _user_from_json(data, jid.bare)
        except (ValueError, TypeError, KeyError, AttributeError, JIDError) as exc:
            raise StorageError(f"corrupt {path}: {exc}") from exc

    def _delete_user(self, jid: JID) -> bool:
        user_dir = self.user_dir(jid)
        try:
            os.stat(user_dir / "user.json")
            existed = True
        except FileNotFoundError:
            existed = False
        # Rename first, so the user disappears at once even if removal stops half-way.
        tomb = user_dir.with_name(f".deleted-{secrets.token_hex(8)}")
        try:
            os.rename(user_dir, tomb)
        except FileNotFoundError:
            return existed
        fsync_dir(user_dir.parent)
        try:
            shutil.rmtree(tomb)
        except OSError:
            log.warning("could not remove %s; remove it by hand", tomb, exc_info=True)
        return existed

    def _find_xml(self, path: Path, what: str,
                  qname: tuple[str, str] | None) -> etree._Element | None:
        data = _read(path)
        if data is None:
            return None
        element = xml_element(data, f"{what} {path}")
        if qname is not None:
            found = etree.QName(element)
            if (found.namespace or "", found.localname) != qname:
                raise StorageError(f"corrupt {what} {path}: holds {found.text}")
        return element

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.to_thread(fn, *args)
        except OSError as exc:
            raise StorageError(f"storage I/O failed: {exc}") from exc

    # the Storage interface

    async def find_user(self, jid: JID) -> User | None:
        if not jid.local:
            return None
        return await self._run(self._find_user, jid)

    async def save_user(self, user: User) -> None:
        path = self.user_dir(user.jid) / "user.json"
        await self._run(self._write, path, _user_to_json(user))

    async def delete_user(self, jid: JID) -> bool:
        if not jid.local:
            return False
        return await self._run(self._delete_user, jid)

    async def find_vcard(self, jid: JID) -> etree._Element | None:
        if not jid.local:
            return None
        return await self._run(self._find_xml, self.user_dir(jid) / "vcard.xml", "vCard", None)

    async def save_vcard(self, jid: JID, card: etree._Element) -> None:
        await self._run(self._write, self.user_dir(jid) / "vcard.xml", xml_bytes(card))

    async def find_fragment(self, jid: JID, namespace: str, name: str) -> etree._Element | None:
        if not jid.local:
            return None
        return await self._run(self._find_xml, self._fragment_path(jid, namespace, name),
                               "private fragment", (namespace, name))

    async def save_fragment(self, jid: JID, fragment: etree._Element) -> None:
        qname = etree.QName(fragment)
        path = self._fragment_path(jid, qname.namespace or "", qname.localname)
        await self._run(self._write, path, xml_bytes(fragment))

    async def get(self, jid: JID, store: str) -> Any | None:
        check_store(store)
        if not jid.local:
            return None
        return await self._run(self._get, self._store_path(jid, store))

    async def put(self, jid: JID, store: str, value: Any | None) -> None:
        path = self._store_path(jid, store)
        if value is None:
            await self._run(self._remove, path)
        else:
            await self._run(self._write, path, json_value(value))
