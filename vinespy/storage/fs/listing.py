"""What the fs user store holds, found by walking its directories: the
enumeration :meth:`vinespy.storage.Storage.owners`, ``fragments`` and
``stores`` of :class:`~vinespy.storage.fs.FsStorage` (the layout is in
:mod:`vinespy.storage.fs`).

Blocking: the backend runs each function in a worker thread. Names are read
back with :func:`~vinespy.storage.fs.names.decode_name`; a hashed (long)
name is read from the file instead (``user.json``'s JID, a fragment's root
element), and a file whose name is not the one its content would get is
refused as corrupt. Dot-names (temporary files, tombstones) are skipped.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable

from lxml import etree

from ...fileio import read_if_present
from ...jid import JID, JIDError
from .. import StorageError, check_store, xml_element
from .names import decode_name, fragment_file_name
from .records import user_from_json

log = logging.getLogger(__name__)

# Top-level names of the store's directory that hold no users: the pubsub
# store's directory (:func:`vinespy.storage.pubsub.fs_dir`).
NOT_DOMAINS = frozenset({"pubsub"})


def domain_dirs(root: Path) -> list[Path]:
    """The domain directories under ``root``, sorted."""
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    return [root / n for n in names
            if not n.startswith(".") and n not in NOT_DOMAINS and (root / n).is_dir()]


def user_dirs(domain_dir: Path) -> list[Path]:
    """The user directories of one domain, sorted."""
    return [domain_dir / n for n in sorted(os.listdir(domain_dir)) if not n.startswith(".")]


def owners(dirs: list[Path], user_dir: Callable[[JID], Path]) -> list[JID]:
    """The bare JIDs whose data ``dirs`` hold (``user_dir``: JID -> its directory)."""
    return [jid for jid in (owner(d, user_dir) for d in dirs) if jid is not None]


def owner(path: Path, user_dir: Callable[[JID], Path]) -> JID | None:
    """The bare JID whose data the user directory ``path`` holds; None if it
    holds none (a directory left with only an empty ``private/``)."""
    try:
        names = os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not any(_is_data(path, n) for n in names):
        return None
    domain, local = decode_name(path.parent.name), decode_name(path.name)
    try:
        if domain is not None and local is not None:
            jid = JID.parse(f"{local}@{domain}")
        else:                       # a hashed long name: user.json records the JID
            data = read_if_present(path / "user.json")
            if data is None:
                log.warning("cannot tell whose data %s holds (a hashed name and no "
                            "user.json): not listed", path)
                return None
            jid = JID.parse(json.loads(data)["jid"])
            user_from_json(data, jid)           # the whole file is sound
    except (ValueError, TypeError, KeyError, AttributeError, JIDError) as exc:
        raise StorageError(f"corrupt {path}: {exc}") from exc
    if user_dir(jid) != path:
        raise StorageError(f"corrupt {path}: holds the data of {jid}")
    return jid.bare


def fragments(private: Path) -> list[tuple[str, str]]:
    """(namespace, name) of the fragments in a user's ``private`` directory, sorted."""
    try:
        names = os.listdir(private)
    except FileNotFoundError:
        return []
    out = []
    for file in names:
        if not file.endswith(".xml"):
            continue                # atomic_write's temporary files (".<name>.<random>.tmp");
            #                         ".<name>.xml" is a fragment of the empty namespace
        parts = [decode_name(p) for p in file[:-len(".xml")].split(".")]
        if len(parts) == 2 and parts[0] is not None and parts[1] is not None:
            namespace, name = parts[0], parts[1]
        else:                       # a hashed long name: the fragment says
            data = read_if_present(private / file)
            if data is None:
                continue            # deleted meanwhile
            qname = etree.QName(xml_element(data, f"private fragment {private / file}"))
            namespace, name = qname.namespace or "", qname.localname
        if fragment_file_name(namespace, name) != file:
            raise StorageError(f"corrupt private fragment {private / file}: "
                               f"named for another than {{{namespace}}}{name}")
        out.append((namespace, name))
    return sorted(out)


def stores(path: Path) -> list[str]:
    """The keyval stores with a value in the user directory ``path``, sorted."""
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return []
    return sorted(s for s in map(store_name, names) if s is not None)


def store_name(file: str) -> str | None:
    """The keyval store ``file`` (a name in a user directory) holds, or None."""
    if file.startswith(".") or not file.endswith(".json"):
        return None
    try:
        return check_store(file[:-len(".json")])
    except ValueError:              # user.json, or not ours
        return None


def _is_data(path: Path, name: str) -> bool:
    if name in ("user.json", "vcard.xml"):
        return True
    if name == "private":
        return any(n.endswith(".xml") for n in os.listdir(path / name))
    return store_name(name) is not None
