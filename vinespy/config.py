"""Configuration: ``conf/config.toml`` -> frozen dataclasses, validated at load.

Every key is checked when the file is read; an error names the file, the key
and the expected form, so that nothing ever starts half-configured.

Relative paths in the file (``certs``, an fs backend's ``dir``) are resolved
against :func:`base_dir`: the directory that holds ``conf/`` when the file
lives in a directory named ``conf`` (the layout ``vinespy init DOMAIN``
creates: ``conf/ data/ log/ pid/``), else the file's own directory.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, get_type_hints
from urllib.parse import urlsplit, urlunsplit

from . import tls
from .errors import ConfigError as ConfigError      # what load() raises
from .jid import JIDError, prep_domain

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


@dataclass(frozen=True)
class StorageConfig:
    backend: str = "fs"                       # registry name: fs | sql | memory | null
    options: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"dir": Path}


@dataclass(frozen=True)
class HostConfig:
    domains: tuple[str, ...]
    storage: StorageConfig = field(default_factory=StorageConfig)
    private_storage: bool = False
    cross_domain_messages: bool = False
    pubsub: tuple[str, ...] = ()
    components: Mapping[str, str] = field(default_factory=dict)
    modules: tuple[str, ...] | None = None     # None = every built-in module
    # [host.options.MODULE] tables: module name -> option -> value, checked
    # against the Option declarations of the modules.
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class ClientConfig:
    address: str = "0.0.0.0"
    port: int = 5222
    tls: str = "required"                      # required | optional
    direct_tls_port: int = 0                   # XEP-0368; 0 = off
    max_stanza_size: int = 65536
    max_resources_per_account: int = 5
    resource_conflict: str = "replace"         # replace | refuse
    rate_limit: int = 10240                    # bytes/s per connection, 0 = off
    rate_burst: int = 65536                    # bytes a client may send at once
    auth_timeout: float = 30.0                 # s to authenticate + bind
    max_auth_failures: int = 3
    send_timeout: float = 60.0                 # s a client may leave what it is sent unread
    auth_ban_failures: int = 10                # failed logins per address (IPv6: /64)...
    auth_ban_time: float = 600.0               # ...within this many s: refused until they age
    auth_delay_max: float = 10.0               # s, cap of the per-account delay; 0 = off
    # Bind the listeners with SO_REUSEPORT, so that several processes share
    # the ports (`vinespy start --workers N` sets it for its workers).
    reuse_port: bool = False


@dataclass(frozen=True)
class ServerConfig:                            # s2s: a later issue
    enabled: bool = False
    address: str = "0.0.0.0"
    port: int = 5269


@dataclass(frozen=True)
class HttpConfig:                              # BOSH/WebSocket: a later issue
    enabled: bool = False
    address: str = "0.0.0.0"
    port: int = 5280


@dataclass(frozen=True)
class ComponentConfig:                         # XEP-0114: a later issue
    enabled: bool = False
    address: str = "127.0.0.1"
    port: int = 5347


@dataclass(frozen=True)
class ClusterConfig:
    """``[cluster]``: the nodes of one cluster share one Redis (docs/cluster.md)."""

    url: str = "redis://127.0.0.1:6379/0"      # redis:// | rediss:// (TLS) | unix://
    password: str | None = field(default=None, repr=False)   # overrides the URL's
    db: int | None = None                      # overrides the URL's
    node: str = ""                             # filled at load: "{hostname}-{client port}"
    heartbeat: float = 1.0                     # s between a node's heartbeats
    dead_after: float = 5.0                    # s without a heartbeat: the node is dead
    route_cache_ttl: float = 10.0              # s a remote route is cached; 0 = never
    inbox_maxlen: int = 100000                 # approximate MAXLEN of a node's inbox stream
    tls_ca: Path | None = None                 # CA file for rediss:// (absolute once loaded)


@dataclass(frozen=True)
class Config:
    path: Path
    log: str = "info"                          # debug | info | warning | error
    certs: Path = Path("conf/certs")           # absolute once loaded
    hosts: tuple[HostConfig, ...] = ()
    client: ClientConfig = field(default_factory=ClientConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    component: ComponentConfig = field(default_factory=ComponentConfig)
    cluster: ClusterConfig | None = None

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(d for h in self.hosts for d in h.domains)

    def host_for(self, domain: str) -> HostConfig | None:
        for h in self.hosts:
            if domain in h.domains:
                return h
        return None

    def pubsub_services(self) -> dict[str, HostConfig]:
        """Every pubsub service domain -> the host it belongs to.

        ``pubsub = ["games"]`` in the host serving ``wonderland.lit`` and
        ``verona.lit`` is two services, ``games.wonderland.lit`` and
        ``games.verona.lit`` (as in Vines); in the order of the hosts, then
        their domains, then their labels. Loading checked that no service
        domain is a served domain, a component or another service.
        """
        return {f"{label}.{domain}": h
                for h in self.hosts for domain in h.domains for label in h.pubsub}


def base_dir(path: str | Path) -> Path:
    """The directory that relative paths in the config file at ``path`` start from.

    ``DOMAIN/conf/config.toml`` -> ``DOMAIN`` (the tree ``vinespy init`` makes);
    any other file -> its own directory. Symlinks are not followed, so the
    directory is the one the operator named.
    """
    here = Path(os.path.abspath(path)).parent
    return here.parent if here.name == "conf" else here


def load(path: str | Path, *, check_certs: bool = True) -> Config:
    """Read and validate ``path``; raise :class:`ConfigError` with one line.

    With ``check_certs``, every served domain needs ``certs/DOMAIN.crt`` and
    ``DOMAIN.key`` that load together (see :func:`vinespy.tls.contexts`).
    """
    shown = str(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{shown}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{shown}: {exc}") from None      # "... (at line 3, column 7)"
    try:
        config = _config(data, path)
    except _Bad as exc:
        raise ConfigError(f"{shown}: {exc}") from None
    if check_certs:
        try:
            tls.contexts(config)
        except ConfigError as exc:
            raise ConfigError(f"{shown}: {exc}") from None
    return config


# -- validation: one rule per constrained key, the rest follows the field types --

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
    "client.auth_ban_failures": _ints(1, 1000),
    "client.auth_ban_time": _numbers(1, 86400),
    "client.auth_delay_max": _numbers(0, 60),
    "server.port": _PORT,
    "http.port": _PORT,
    "component.port": _PORT,
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
}
_SECTIONS: dict[str, type[DataclassInstance]] = {
    "client": ClientConfig, "server": ServerConfig, "http": HttpConfig,
    "component": ComponentConfig, "cluster": ClusterConfig,
}
_TOP = ("log", "certs", "host", *_SECTIONS)
_NOT_YET = {
    "server": "s2s is",
    "http": "BOSH/WebSocket is",
    "component": "the XEP-0114 component listener is",
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


def _cluster(cluster: ClusterConfig, client: ClientConfig) -> ClusterConfig:
    """The checks across [cluster] keys; the default node id filled in."""
    if cluster.dead_after < 3 * cluster.heartbeat:
        # A node must be able to miss two heartbeats (a GC pause, a slow
        # Redis) before its peers drop its sessions.
        raise _Bad(f"cluster.dead_after: must be at least 3 times cluster.heartbeat "
                   f"({3 * cluster.heartbeat:g}), got {cluster.dead_after:g}")
    if cluster.tls_ca is not None and not cluster.url.startswith("rediss://"):
        raise _Bad("cluster.tls_ca: only used with a rediss:// url (TLS), "
                   f"but cluster.url is {_show(_url_scheme(cluster.url))}")
    if cluster.node:
        return cluster
    from .cluster.keys import default_node_id   # imports redis: only when clustered
    node = re.sub(r"[^A-Za-z0-9._-]", "-", default_node_id(client.port))[-100:]
    return replace(cluster, node=node)


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
    from . import modules
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
            if opt.type is int and lo is not None:
                rule = _ints(int(lo), int(hi) if hi is not None else None)
            else:
                rule = _BY_TYPE.get(opt.type, _TEXT)
            opts[key] = _check(f"{where}.{name}.{key}", val, rule)
        out[name] = opts
    return out


def _backends() -> tuple[str, ...]:
    from .storage import backends       # the registry: only when a config is checked
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


_SQL_KEYS = ("url", "password", "password_file", "pool_size")


def _sql(where: str, options: dict[str, Any], base: Path) -> dict[str, Any]:
    """``backend = "sql"``: ``url`` (a relative SQLite path starts at ``base``),
    ``password`` or ``password_file``, ``pool_size``."""
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
    if "password" in options and "password_file" in options:
        raise _Bad(f"{where}.password_file: give password or password_file, not both")
    if "password" in options:
        _check(f"{where}.password", options["password"], _TEXT)
    if "password_file" in options:
        options["password_file"] = _existing_file(f"{where}.password_file",
                                                  options["password_file"], base)
    options["pool_size"] = _check(f"{where}.pool_size", options.get("pool_size", 5),
                                  _ints(1, 1000))
    return options


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
        "options": _module_options,
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


def _config(data: dict[str, Any], path: str | Path) -> Config:
    base = base_dir(path)
    for key, value in data.items():
        if key not in _TOP:
            if isinstance(value, dict):
                raise _Bad(_unknown("section", key, _TOP, "[{}]"))
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                raise _Bad(_unknown("section", key, _TOP, "[[{}]]"))
            raise _Bad(_unknown("key", key, _TOP))
    custom: dict[str, dict[str, Callable[[str, Any], Any]]] = {
        "cluster": {"tls_ca": lambda at, v: _existing_file(at, v, base)},
    }
    kw: dict[str, Any] = {
        name: cls(**_fields(cls, _table(name, data[name]), name, custom=custom.get(name)))
        for name, cls in _SECTIONS.items() if name in data
    }
    for name, what in _NOT_YET.items():
        if name in kw and kw[name].enabled:
            raise _Bad(f"[{name}] {what} not implemented yet; set enabled = false")
    client = kw.get("client", ClientConfig())
    if client.direct_tls_port and client.direct_tls_port == client.port:
        raise _Bad(f"client.direct_tls_port: must differ from client.port "
                   f"(both are {client.port})")
    if "cluster" in kw:
        kw["cluster"] = _cluster(kw["cluster"], client)
    if "log" in data:
        kw["log"] = _check("log", data["log"], _RULES["log"])
    kw["certs"] = _path("certs", data.get("certs", str(Config.certs)), base)
    kw["hosts"] = _hosts(data.get("host"), base)
    return Config(path=Path(os.path.abspath(path)), **kw)
