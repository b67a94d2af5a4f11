"""File names of the fs stores: any text as a safe, injective file name.

:func:`encode_name` writes every byte of the UTF-8 text outside
``[a-z0-9_-]`` as ``%XX`` (upper-case hex), ``.`` included, so no name can
be ``.``, ``..``, hold a separator, differ only in case or start with a dot
(dot-names are left for temporary files and tombstones); a name longer than
200 characters once encoded becomes a readable prefix, ``~`` and the
SHA-256 of the text. The user store (:mod:`vinespy.storage.fs`) and the
pubsub store (:mod:`vinespy.storage.pubsub.fs`) name their files with it.
"""

from __future__ import annotations

import hashlib

_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789_-")
_HEX = frozenset("0123456789ABCDEF")
_MAX_NAME = 200
# A file name may hold 255 bytes, and atomic_write's temporary file adds 14
# (".<name>.XXXXXXXX.tmp"): the longest name that can be written.
_MAX_FILE_NAME = 255 - 14


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


def fragment_file_name(namespace: str, name: str) -> str:
    """``<ns>.<name>.xml`` for a private XML fragment, as long as that can be
    written; else a readable prefix of ``<ns>``, ``~~`` and the SHA-256 of both.

    "." is always escaped inside encoded names, so it separates unambiguously;
    ``~~`` appears in no plain name (an encoded name's ``~`` is followed by hex).
    The plain name is kept wherever it fits, so fragments stored under it by
    earlier versions are still found.
    """
    plain = f"{encode_name(namespace)}.{encode_name(name)}.xml"
    if len(plain) <= _MAX_FILE_NAME:
        return plain
    digest = hashlib.sha256(f"{namespace}\0{name}".encode("utf-8")).hexdigest()
    return f"{encode_name(namespace)[:100]}~~{digest}.xml"
