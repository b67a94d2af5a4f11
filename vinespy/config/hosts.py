"""``[[host]]`` tables: domains, storage, pubsub, components, modules, options."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from .rules import (_BY_TYPE, _TEXT, _Bad, _Rule, _array, _check, _distinct, _domains,
                    _existing_file, _fields, _ints, _label, _numbers, _one_of, _path, _show,
                    _table, _unknown, safe_url)


@dataclass(frozen=True)
class StorageConfig:
    backend: str = "fs"                       # registry name: fs | sql | memory | null
    options: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"dir": Path}


@dataclass(frozen=True)
class AuthConfig:
    """``[host.auth]``: who checks passwords. ``internal`` = the storage's
    SCRAM credentials; ``ldap`` = a simple bind to an LDAP directory."""

    backend: str = "internal"                  # internal | ldap
    url: str = ""                              # ldap://HOST:PORT or ldaps://HOST:PORT
    starttls: bool = False                     # ldap:// upgraded with StartTLS
    ca_file: Path | None = None                # trust for ldaps/StartTLS; None = system
    bind_dn: str = ""                          # the search account ("" = anonymous)
    bind_password: str = ""
    bind_password_file: Path | None = None
    base: str = ""                             # search base for users
    filter: str = "(uid={user})"               # {user}: the localpart, escaped
    timeout: float = 5.0                       # s per LDAP operation
    cache_ttl: float = 60.0                    # s an "exists" answer is kept


@dataclass(frozen=True)
class HostConfig:
    domains: tuple[str, ...]
    storage: StorageConfig = field(default_factory=StorageConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    private_storage: bool = False
    cross_domain_messages: bool = False
    pubsub: tuple[str, ...] = ()
    components: Mapping[str, str] = field(default_factory=dict)
    modules: tuple[str, ...] | None = None     # None = every built-in module
    # [host.options.MODULE] tables: module name -> option -> value, checked
    # against the Option declarations of the modules.
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def _pubsub(where: str, value: Any) -> tuple[str, ...]:
    if value == []:
        return ()
    items = _array(where, value, 'an array of DNS labels such as ["games"]')
    return _distinct(where, [_label(f"{where}[{i}]", v) for i, v in enumerate(items)])


def _components(where: str, value: Any) -> dict[str, str]:
    secret = _Rule("a non-empty string (the component's shared secret)",
                   lambda v: isinstance(v, str) and v != "")
    out: dict[str, str] = {}
    for key, val in _table(where, value).items():
        label = _label(f"{where} key", key)
        if label in out:
            raise _Bad(f"{where}: {_show(label)} is listed twice")
        out[label] = _check(f"{where}.{key}", val, secret)
    return out


def _modules(where: str, value: Any) -> tuple[str, ...]:
    items = _array(where, value, 'an array of module names such as ["roster", "ping"]')
    return _distinct(where, [_check(f"{where}[{i}]", v, _TEXT) for i, v in enumerate(items)])


def _module_options(where: str, value: Any) -> dict[str, dict[str, Any]]:
    """``[host.options.MODULE]``: each key must be an Option the module declares,
    of its type and within its bounds."""
    from .. import modules
    registry = {name: modules.module_class(name) for name in modules.available()}
    out: dict[str, dict[str, Any]] = {}
    for name, table in _table(where, value).items():
        if name not in registry:
            raise _Bad(f"{where}: " + _unknown("module", name, list(registry)))
        declared = registry[name].options
        opts: dict[str, Any] = {}
        for key, val in _table(f"{where}.{name}", table).items():
            if key not in declared:
                raise _Bad(f"{where}.{name}: " + _unknown("option", key, list(declared))
                           if declared else f"{where}.{name}: the module has no options")
            opt = declared[key]
            lo = opt.min if opt.min is not None else None
            hi = opt.max if opt.max is not None else None
            if opt.choices is not None:
                rule = _one_of(*opt.choices)
            elif opt.type is int and lo is not None:
                rule = _ints(int(lo), int(hi) if hi is not None else None)
            else:
                rule = _BY_TYPE.get(opt.type, _TEXT)
            opts[key] = _check(f"{where}.{name}.{key}", val, rule)
        out[name] = opts
    return out


def _backends() -> tuple[str, ...]:
    from ..storage import backends       # the registry: only when a config is checked
    return backends()


def _storage(where: str, value: Any, base: Path) -> StorageConfig:
    """``[host.storage]``: ``backend`` plus that backend's options (fs: ``dir``)."""
    options = dict(_table(where, value))
    backend = _check(f"{where}.backend", options.pop("backend", StorageConfig.backend),
                     _one_of(*_backends()))
    if backend == "fs":
        options["dir"] = _path(f"{where}.dir", options.get("dir", "data"), base)
    if backend == "sql":
        options = _sql(where, options, base)
    return StorageConfig(backend=backend, options=options)


_SQL_KEYS = ("url", "password", "password_file", "pool_size", "timeout")


def _sql(where: str, options: dict[str, Any], base: Path) -> dict[str, Any]:
    """``backend = "sql"``: ``url`` (a relative SQLite path starts at ``base``),
    ``password`` or ``password_file``, ``pool_size``, ``timeout``."""
    for key in options:
        if key not in _SQL_KEYS:
            raise _Bad(f"{where}: {_unknown('key', key, _SQL_KEYS)}")
    if "url" not in options:
        raise _Bad(f"{where}.url: required with backend = \"sql\" "
                   f"(sqlite:///data/vinespy.db or postgresql://USER@HOST:PORT/DB)")
    url = _check(f"{where}.url", options["url"], _TEXT)
    scheme, sep, rest = url.partition("://")
    if scheme == "sqlite" and sep and rest.startswith("/") and rest != "/":
        options["url"] = f"sqlite:///{_path(f'{where}.url', rest[1:], base)}"
    elif scheme != "postgresql" or not rest:
        raise _Bad(f"{where}.url: expected sqlite:///PATH or "
                   f"postgresql://USER:PASSWORD@HOST:PORT/DB, got {_show(safe_url(url))}")
    if scheme == "postgresql" and "sslmode=" in rest:
        raise _Bad(f"{where}.url: asyncpg takes ?ssl=require (or verify-ca, verify-full, "
                   f"prefer, disable), not ?sslmode=")
    if "password" in options and "password_file" in options:
        raise _Bad(f"{where}.password_file: give password or password_file, not both")
    if "password" in options:
        _check(f"{where}.password", options["password"], _TEXT)
    if "password_file" in options:
        options["password_file"] = _existing_file(f"{where}.password_file",
                                                  options["password_file"], base)
    if "timeout" in options:
        options["timeout"] = float(_check(f"{where}.timeout", options["timeout"],
                                          _numbers(0.5, 300)))
    options["pool_size"] = _check(f"{where}.pool_size", options.get("pool_size", 5),
                                  _ints(1, 1000))
    return options


def _ldap_url(where: str, value: Any) -> str:
    """``ldap://HOST[:PORT]`` or ``ldaps://HOST[:PORT]``: the bind account
    goes in ``bind_dn``/``bind_password``, never in the URL (which is logged)."""
    url = _check(where, value, _TEXT)
    expected = "ldap://HOST[:PORT] or ldaps://HOST[:PORT]"
    shown = _show(safe_url(url) if "@" in url else url)
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        raise _Bad(f"{where}: expected {expected}, got {shown}") from None
    if parts.username is not None or parts.password is not None:
        raise _Bad(f"{where}: no user or password in the URL, got {shown} "
                   f"(the search account is bind_dn and bind_password)")
    if (parts.scheme not in ("ldap", "ldaps") or not parts.hostname or not port_ok
            or parts.path not in ("", "/") or parts.query or parts.fragment):
        raise _Bad(f"{where}: expected {expected}, got {shown}")
    return url


def _auth(where: str, value: Any, base: Path) -> AuthConfig:
    """``[host.auth]``: ``backend = "internal"`` (no other key) or ``"ldap"``
    with ``url`` and ``base`` required and the rest checked."""
    table = dict(_table(where, value))
    custom: dict[str, Callable[[str, Any], Any]] = {
        "backend": lambda at, v: _check(at, v, _one_of("internal", "ldap")),
        "url": _ldap_url,
        "ca_file": lambda at, v: _existing_file(at, v, base),
        "bind_password_file": lambda at, v: _existing_file(at, v, base),
        "filter": lambda at, v: _check(at, v, _Rule(
            'an LDAP filter in parentheses holding {user}, such as "(uid={user})"',
            lambda f: isinstance(f, str) and f.startswith("(") and f.endswith(")")
            and "{user}" in f)),
        "timeout": lambda at, v: float(_check(at, v, _numbers(0.1, 300))),
        "cache_ttl": lambda at, v: float(_check(at, v, _numbers(0, 86400))),
    }
    auth = AuthConfig(**_fields(AuthConfig, table, where, custom=custom))
    if auth.backend == "internal":
        extra = sorted(k for k in table if k != "backend")
        if extra:
            raise _Bad(f'{where}.{extra[0]}: only used with backend = "ldap"')
        return auth
    for key in ("url", "base"):
        if not getattr(auth, key):
            raise _Bad(f'{where}.{key}: required with backend = "ldap"')
    if auth.starttls and auth.url.startswith("ldaps://"):
        raise _Bad(f"{where}.starttls: ldaps:// is TLS already; StartTLS is for ldap://")
    if auth.bind_password and auth.bind_password_file:
        raise _Bad(f"{where}.bind_password_file: give bind_password or "
                   f"bind_password_file, not both")
    return auth


def _hosts(value: Any, base: Path) -> tuple[HostConfig, ...]:
    """Every ``[[host]]``; a domain or subdomain address belongs to one place only."""
    if value is None:
        raise _Bad("no [[host]] table: at least one is required")
    if isinstance(value, dict):
        raise _Bad("host: expected [[host]] tables (with double brackets), got [host]")
    items = _array("host", value, "one or more [[host]] tables")
    custom: dict[str, Callable[[str, Any], Any]] = {
        "domains": _domains, "pubsub": _pubsub, "components": _components,
        "modules": _modules, "storage": lambda at, v: _storage(at, v, base),
        "options": _module_options, "auth": lambda at, v: _auth(at, v, base),
    }
    # No [host.storage] still means fs in "data", so it goes through _storage too.
    hosts = tuple(HostConfig(**_fields(HostConfig, {"storage": {}, **_table(f"host[{n}]", t)},
                                       f"host[{n}]", "host", custom))
                  for n, t in enumerate(items))
    owner: dict[str, str] = {}

    def claim(address: str, at: str) -> None:
        if address in owner:
            raise _Bad(f"{at}: {_show(address)} is already used by {owner[address]}")
        owner[address] = at

    for n, h in enumerate(hosts):
        for i, d in enumerate(h.domains):
            claim(d, f"host[{n}].domains[{i}]")
    for n, h in enumerate(hosts):
        for d in h.domains:
            for i, label in enumerate(h.pubsub):
                claim(f"{label}.{d}", f"host[{n}].pubsub[{i}]")
            for label in h.components:
                claim(f"{label}.{d}", f"host[{n}].components.{label}")
    return hosts
