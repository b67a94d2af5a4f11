"""Checking configuration values: the rules, and the helpers that apply them.

Every check raises :class:`_Bad` with ``where`` (the key, such as
``host[0].storage.url``) and what was expected; :func:`vinespy.config.load`
adds the file name. The names keep their underscore: they are the config
package's own, shared by its section parsers (``hosts.py``, ``__init__``).
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, get_type_hints
from urllib.parse import urlsplit, urlunsplit

from ..jid import JIDError, prep_domain

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


class _Bad(Exception):
    """One validation failure, without the file name (load() adds it)."""


@dataclass(frozen=True)
class _Rule:
    """A value's constraint; ``expected`` completes "expected ..., got X"."""

    expected: str
    ok: Callable[[Any], bool]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)     # TOML true is not 1


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _ints(lo: int, hi: int | None = None, expected: str = "") -> _Rule:
    text = expected or (f"an integer from {lo} to {hi}" if hi is not None
                        else f"an integer of at least {lo}")
    return _Rule(text, lambda v: _is_int(v) and lo <= v and (hi is None or v <= hi))


def _numbers(lo: float, hi: float) -> _Rule:
    return _Rule(f"a number from {lo:g} to {hi:g}", lambda v: _is_number(v) and lo <= v <= hi)


def _one_of(*choices: str) -> _Rule:
    return _Rule("one of " + ", ".join(f'"{c}"' for c in choices),
                 lambda v: isinstance(v, str) and v in choices)


_TEXT = _Rule("a non-empty string", lambda v: isinstance(v, str) and v != "")
# A node id is part of Redis key names and of log lines: keep it plain.
_NODE_ID = re.compile(r"[A-Za-z0-9._-]{1,100}")
_PORT = _ints(1, 65535)
_BY_TYPE: dict[Any, _Rule] = {
    bool: _Rule("true or false", lambda v: isinstance(v, bool)),
    int: _Rule("an integer", _is_int),
    float: _Rule("a number", _is_number),
    str: _TEXT,
}
# Keyed "section.key" (hosts: "host.key"); fields absent here only need their type.
_RULES: dict[str, _Rule] = {
    "log": _one_of("debug", "info", "warning", "error"),
    "client.port": _ints(0, 65535, "an integer from 1 to 65535 (or 0 for any free port)"),
    "client.tls": _one_of("required", "optional"),
    "client.direct_tls_port": _ints(0, 65535, "an integer from 1 to 65535 (or 0 for off)"),
    # RFC 6120 §13.12: a server must accept stanzas of at least 10000 bytes.
    "client.max_stanza_size": _ints(10000, 16777216),
    "client.max_resources_per_account": _ints(1),
    "client.resource_conflict": _one_of("replace", "refuse"),
    "client.rate_limit": _ints(0),
    "client.rate_burst": _ints(1024),
    "client.auth_timeout": _numbers(1, 3600),
    "client.max_auth_failures": _ints(1, 10),
    "client.send_timeout": _numbers(1, 3600),
    "client.resume_timeout": _numbers(0, 86400),
    "client.max_unacked": _ints(10, 100000),
    "client.auth_ban_failures": _ints(1, 1000),
    "client.auth_ban_time": _numbers(1, 86400),
    "client.auth_delay_max": _numbers(0, 60),
    "http.port": _ints(0, 65535, "an integer from 1 to 65535 (or 0 for off)"),
    "http.tls_port": _ints(0, 65535, "an integer from 1 to 65535 (or 0 for off)"),
    "http.websocket_ping": _numbers(0, 3600),
    "http.bosh_max_wait": _numbers(1, 3600),
    "http.bosh_inactivity": _numbers(5, 86400),
    "server.port": _ints(0, 65535, "an integer from 1 to 65535 (or 0 for any free port)"),
    "server.direct_tls_port": _ints(0, 65535, "an integer from 1 to 65535 (or 0 for off)"),
    "server.tls": _one_of("required", "optional"),
    "server.max_stanza_size": _ints(10000, 16777216),
    "server.idle_timeout": _numbers(1, 86400),
    "server.connect_timeout": _numbers(0.1, 300),
    "server.send_timeout": _numbers(1, 3600),
    "server.max_queue": _ints(1, 1000000),
    "component.port": _ints(0, 65535, "an integer from 1 to 65535 (or 0 for any free port)"),
    # RFC 6120 §13.12: at least 10000 bytes, as for clients.
    "component.max_stanza_size": _ints(10000, 16777216),
    "component.handshake_timeout": _numbers(1, 3600),
    "component.send_timeout": _numbers(1, 3600),
    "cluster.url": _Rule("a URL starting with redis://, rediss:// or unix://",
                         lambda v: isinstance(v, str)
                         and v.startswith(("redis://", "rediss://", "unix://"))),
    "cluster.password": _TEXT,
    "cluster.db": _ints(0),
    "cluster.node": _Rule("1 to 100 characters among A-Z a-z 0-9 . _ -",
                          lambda v: isinstance(v, str) and _NODE_ID.fullmatch(v) is not None),
    "cluster.heartbeat": _numbers(0.05, 10),
    "cluster.dead_after": _numbers(0.2, 300),
    "cluster.route_cache_ttl": _numbers(0, 3600),
    "cluster.inbox_maxlen": _ints(1000),
    "cluster.service": _Rule("a Sentinel master name (letters, digits, . _ -)",
                             lambda v: isinstance(v, str)
                             and re.fullmatch(r"[A-Za-z0-9._-]{1,100}", v) is not None),
    "cluster.sentinel_password": _TEXT,
    "cluster.wait_replicas": _ints(0, 100),
    # Above 0: WAIT with a timeout of 0 would block for ever.
    "cluster.wait_timeout": _numbers(0.001, 60),
}
# RFC 1035 §2.3.1: letters, digits and inner hyphens, at most 63 (IDNA A-label form).
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def _show(value: Any) -> str:
    """``value`` as the operator wrote it, for "got ..."."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "an array" if value else "an empty array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"                      # TOML dates and times


def _check(where: str, value: Any, rule: _Rule) -> Any:
    if not rule.ok(value):
        raise _Bad(f"{where}: expected {rule.expected}, got {_show(value)}")
    return value


def _table(where: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Bad(f"{where}: expected a table, got {_show(value)}")
    return value


def _array(where: str, value: Any, expected: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise _Bad(f"{where}: expected {expected}, got {_show(value)}")
    return value


def _unknown(what: str, name: str, known: tuple[str, ...] | list[str], fmt: str = '"{}"') -> str:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {fmt.format(close[0])}?)" if close else ""
    return f"unknown {what} {fmt.format(name)}{hint}"


def _fields(cls: type[DataclassInstance], table: Mapping[str, Any], where: str,
            rules: str = "",
            custom: Mapping[str, Callable[[str, Any], Any]] | None = None) -> dict[str, Any]:
    """Constructor keywords for dataclass ``cls`` from ``table``, each one checked.

    Keys are the field names; a key's rule is ``_RULES[rules.key]`` if there is
    one, else its field type's; ``custom`` parses the keys that are not scalars.
    """
    custom = custom or {}
    hints = get_type_hints(cls)
    known = [f.name for f in fields(cls)]
    for key in table:
        if key not in known:
            raise _Bad(f"[{where}] " + _unknown("key", key, known))
    for f in fields(cls):
        if f.name not in table and f.default is MISSING and f.default_factory is MISSING:
            raise _Bad(f'[{where}] missing key "{f.name}"')
    out: dict[str, Any] = {}
    for key, value in table.items():
        at = f"{where}.{key}"
        if key in custom:
            out[key] = custom[key](at, value)
        else:
            hint = hints[key]
            out[key] = _check(at, value, _RULES.get(f"{rules or where}.{key}") or _BY_TYPE[hint])
            if hint is float:
                out[key] = float(value)
    return out


def _path(where: str, value: Any, base: Path) -> Path:
    """A configured path, absolute: relative ones start at ``base``."""
    return Path(os.path.normpath(base / Path(_check(where, value, _TEXT)).expanduser()))


def _existing_file(where: str, value: Any, base: Path) -> Path:
    """A configured path (see :func:`_path`) that must name an existing file."""
    path = _path(where, value, base)
    if not path.is_file():
        raise _Bad(f"{where}: {_show(str(path))} is not a file")
    return path


def _url_scheme(url: str) -> str:
    """``url``'s scheme and "://", never its password."""
    return url.partition("://")[0] + "://"


def safe_url(url: str) -> str:
    """``url`` fit to print: a password becomes ``***`` and the query string
    (where redis-py also reads ``password=``) is dropped."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            user, _, where = netloc.rpartition("@")
            name, colon, _ = user.partition(":")
            netloc = f"{name}{':***' if colon else ''}@{where}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    except ValueError:
        return url.partition("://")[0] + "://..."


def _domain(where: str, value: Any) -> str:
    _check(where, value, _Rule("a domain name", lambda v: isinstance(v, str)))
    try:
        return prep_domain(value)
    except JIDError as exc:
        raise _Bad(f"{where}: {_show(value)} is not a domain name: {exc}") from None


def _label(where: str, value: Any) -> str:
    """One DNS label (``games`` in ``games.wonderland.lit``), prepared like a domain."""
    bad = _Bad(f'{where}: expected a single DNS label such as "games", got {_show(value)}')
    if not isinstance(value, str):
        raise bad
    try:
        label = prep_domain(value)
        ascii_label = label.encode("idna").decode("ascii")
    except (JIDError, UnicodeError):
        raise bad from None
    if "." in label or not _LDH_LABEL.fullmatch(ascii_label):
        raise bad
    return label


def _distinct(where: str, items: list[str]) -> tuple[str, ...]:
    for i, item in enumerate(items):
        if item in items[:i]:
            raise _Bad(f"{where}[{i}]: {_show(item)} is listed twice")
    return tuple(items)


def _domains(where: str, value: Any) -> tuple[str, ...]:
    items = _array(where, value, "a non-empty array of domain names")
    return _distinct(where, [_domain(f"{where}[{i}]", v) for i, v in enumerate(items)])
