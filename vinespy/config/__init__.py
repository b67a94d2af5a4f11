"""Configuration: ``conf/config.toml`` -> frozen dataclasses, validated at load.

Every key is checked when the file is read; an error names the file, the key
and the expected form, so that nothing ever starts half-configured.

Relative paths in the file (``certs``, an fs backend's ``dir``) are resolved
against :func:`base_dir`: the directory that holds ``conf/`` when the file
lives in a directory named ``conf`` (the layout ``vinespy init DOMAIN``
creates: ``conf/ data/ log/ pid/``), else the file's own directory.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .. import tls
from ..errors import ConfigError as ConfigError      # what load() raises
from .hosts import AuthConfig, HostConfig, StorageConfig, _hosts
from .http import HttpConfig, http_section
from .server import ServerConfig, server_section
from .rules import (_RULES, _Bad, _array, _check, _distinct, _existing_file, _fields, _path,
                    _show, _table, _unknown, _url_scheme, safe_url)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["AuthConfig", "ClientConfig", "ClusterConfig", "ComponentConfig", "Config",
           "ConfigError", "HostConfig", "HttpConfig", "ServerConfig", "StorageConfig",
           "base_dir", "load", "safe_url"]


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
    resume_timeout: float = 300.0              # s a XEP-0198 session waits for its client
    max_unacked: int = 1000                    # stanzas it keeps unacknowledged (XEP-0198)
    auth_ban_failures: int = 10                # failed logins per address (IPv6: /64)...
    auth_ban_time: float = 600.0               # ...within this many s: refused until they age
    auth_delay_max: float = 10.0               # s, cap of the per-account delay; 0 = off
    # Bind the listeners with SO_REUSEPORT, so that several processes share
    # the ports (`vinespy start --workers N` sets it for its workers).
    reuse_port: bool = False


@dataclass(frozen=True)
class ComponentConfig:
    """``[component]``: the XEP-0114 listener. It opens when a ``[[host]]``
    declares ``components``, unless ``enabled = false`` (the table is optional)."""

    enabled: bool = True
    address: str = "127.0.0.1"                 # components usually run on this machine
    port: int = 5347
    max_stanza_size: int = 262144              # bytes a component may send at once
    handshake_timeout: float = 30.0            # s from connecting to <handshake/>
    send_timeout: float = 60.0                 # s a component may leave what it is sent unread


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
    # Redis Sentinel: the nodes follow the primary the Sentinels name for
    # `service`; `url` then gives only the db, password and TLS options.
    sentinels: tuple[str, ...] = ()            # "host:port", at least one
    service: str = ""                          # the Sentinel master name
    sentinel_password: str | None = field(default=None, repr=False)
    # Pubsub writes answered only once this many replicas have them (Redis
    # WAIT), so a failover cannot lose what a client was told is stored.
    wait_replicas: int | None = None           # None: 1 with sentinels, else 0 (off)
    wait_timeout: float = 1.0                  # s WAIT waits before the request fails

    def replicas_to_wait(self) -> int:
        """``wait_replicas`` with its default (None) made a number: with
        Sentinels there is a replica to confirm writes, without them there
        may be none (WAIT would then refuse every pubsub write)."""
        if self.wait_replicas is not None:
            return self.wait_replicas
        return 1 if self.sentinels else 0


@dataclass(frozen=True)
class Config:
    path: Path
    log: str = "info"                          # debug | info | warning | error
    certs: Path = Path("conf/certs")           # absolute once loaded
    hosts: tuple[HostConfig, ...] = ()
    client: ClientConfig = field(default_factory=ClientConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    http: HttpConfig | None = None             # absent: no HTTP listener
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

    def component_secrets(self) -> dict[str, str]:
        """Every XEP-0114 component domain -> its shared secret.

        ``components = { tea = "secr3t" }`` in the host serving
        ``wonderland.lit`` and ``verona.lit`` is two components,
        ``tea.wonderland.lit`` and ``tea.verona.lit``, with that secret
        (as pubsub services); loading checked that none is a served domain
        or a service.
        """
        return {f"{label}.{domain}": secret for h in self.hosts for domain in h.domains
                for label, secret in h.components.items()}


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


_SECTIONS: dict[str, type[DataclassInstance]] = {
    "client": ClientConfig, "component": ComponentConfig, "cluster": ClusterConfig,
}
_TOP = ("log", "certs", "host", "http", "server", *_SECTIONS)


def _sentinels(where: str, value: Any) -> tuple[str, ...]:
    """``["host:port", ...]``: each Sentinel's address, once."""
    items = _array(where, value, 'an array of "host:port" such as ["10.0.0.1:26379"]')
    out = []
    for i, item in enumerate(items):
        host, colon, port = item.rpartition(":") if isinstance(item, str) else ("", "", "")
        if not (colon and host and port.isdigit() and 1 <= int(port) <= 65535):
            raise _Bad(f'{where}[{i}]: expected "host:port" such as "10.0.0.1:26379", '
                       f"got {_show(item)}")
        out.append(item)
    return _distinct(where, out)


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
    if cluster.sentinels and not cluster.service:
        raise _Bad('cluster.service: required with cluster.sentinels (the name the '
                   'Sentinels monitor the primary by, "sentinel monitor NAME ...")')
    if cluster.service and not cluster.sentinels:
        raise _Bad("cluster.service: only used with cluster.sentinels")
    if cluster.sentinel_password is not None and not cluster.sentinels:
        raise _Bad("cluster.sentinel_password: only used with cluster.sentinels")
    if cluster.node:
        return cluster
    from ..cluster.keys import default_node_id   # imports redis: only when clustered
    node = re.sub(r"[^A-Za-z0-9._-]", "-", default_node_id(client.port))[-100:]
    return replace(cluster, node=node)


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
        "cluster": {"tls_ca": lambda at, v: _existing_file(at, v, base),
                    "sentinels": _sentinels},
    }
    kw: dict[str, Any] = {
        name: cls(**_fields(cls, _table(name, data[name]), name, custom=custom.get(name)))
        for name, cls in _SECTIONS.items() if name in data
    }
    client = kw.get("client", ClientConfig())
    if client.direct_tls_port and client.direct_tls_port == client.port:
        raise _Bad(f"client.direct_tls_port: must differ from client.port "
                   f"(both are {client.port})")
    if "cluster" in kw:
        kw["cluster"] = _cluster(kw["cluster"], client)
    if "server" in data:
        kw["server"] = server_section(data["server"], base, {
            "port": client.port, "direct_tls_port": client.direct_tls_port})
    if "http" in data:
        http = http_section(data["http"], base, {"port": client.port,
                                                 "direct_tls_port": client.direct_tls_port})
        kw["http"] = http if http.enabled else None
    if "log" in data:
        kw["log"] = _check("log", data["log"], _RULES["log"])
    kw["certs"] = _path("certs", data.get("certs", str(Config.certs)), base)
    kw["hosts"] = _hosts(data.get("host"), base)
    return Config(path=Path(os.path.abspath(path)), **kw)
