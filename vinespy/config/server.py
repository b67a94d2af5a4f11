"""``[server]``: server-to-server federation (RFC 6120 s2s, XEP-0220 dialback).

The table's keys are described in conf/config.toml and the README
("Federation"); this module checks them. ``enabled = true`` turns s2s on:
the listener on ``port`` (and ``direct_tls_port``, XEP-0368) and outgoing
streams to other domains; without it stanzas to other domains are answered
with ``<remote-server-not-found/>``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .rules import (_Bad, _array, _distinct, _domain, _existing_file, _fields, _show, _table,
                    _TEXT, _check)


@dataclass(frozen=True)
class ServerConfig:
    enabled: bool = False
    address: str = "0.0.0.0"
    port: int = 5269
    direct_tls_port: int = 0                   # XEP-0368 TLS-first listener; 0 = off
    tls: str = "required"                      # required | optional, both directions
    dialback: bool = True                      # XEP-0220 where certificates do not do
    bidi: bool = True                          # XEP-0288: one stream both ways where agreed
    # remote domain -> (host, port): skip DNS for it (a peer on a private
    # network, a test): the connector goes there with STARTTLS.
    routes: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    # The DNS servers asked for other domains' SRV and address records, as
    # (IP address, port); () = the system's (/etc/resolv.conf). For servers
    # in containers or behind split-horizon DNS, and for tests.
    nameservers: tuple[tuple[str, int], ...] = ()
    max_stanza_size: int = 262144
    idle_timeout: float = 600.0                # s a stream without stanzas stays open
    connect_timeout: float = 10.0              # s to connect and authenticate a stream
    send_timeout: float = 60.0                 # s a peer may leave what it is sent unread
    max_queue: int = 1000                      # stanzas waiting per remote domain
    ca_file: Path | None = None                # CAs trusted beside the system's
    # Peers whose certificates are not checked (self-signed): dialback only.
    insecure_domains: tuple[str, ...] = ()
    # The key of dialback keys (XEP-0185). Every node of a cluster must use the
    # same; without it each domain's is derived from its TLS private key file,
    # which the nodes share already.
    dialback_secret: str | None = field(default=None, repr=False)


def _address(where: str, value: Any) -> tuple[str, int]:
    """``"HOST:PORT"`` (IPv6 in brackets) -> (host, port)."""
    host, colon, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
    if not (colon and host and port.isdigit() and 1 <= int(port) <= 65535):
        raise _Bad(f'{where}: expected "host:port" such as "10.0.0.7:5269", got {_show(value)}')
    return host.strip("[]"), int(port)


def _nameserver(where: str, value: Any) -> tuple[str, int]:
    """``"ADDRESS"`` (port 53) or ``"ADDRESS:PORT"``, IPv6 in brackets with
    a port: a DNS server is named by its address (what would resolve a name?)."""
    host, port = (value, 53) if isinstance(value, str) and _ip(value) else (None, 0)
    if host is None:
        expected = ('expected an IP address with an optional port such as "10.0.0.53", '
                    f'"127.0.0.1:5353" or "[::1]:53", got {_show(value)}')
        try:
            host, port = _address(where, value)
        except _Bad:
            raise _Bad(f"{where}: {expected}") from None
        if not _ip(host) or (":" in host and not value.startswith("[")):
            raise _Bad(f"{where}: {expected}")
    return host, port


def _ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _nameservers(where: str, value: Any) -> tuple[tuple[str, int], ...]:
    items = _array(where, value, 'an array of DNS server addresses such as ["10.0.0.53"]')
    out = [_nameserver(f"{where}[{i}]", v) for i, v in enumerate(items)]
    for i, item in enumerate(out):
        if item in out[:i]:
            raise _Bad(f"{where}[{i}]: {_show(items[i])} is listed twice")
    return tuple(out)


def _routes(where: str, value: Any) -> dict[str, tuple[str, int]]:
    out: dict[str, tuple[str, int]] = {}
    for key, val in _table(where, value).items():
        domain = _domain(f"{where} key", key)
        if domain in out:
            raise _Bad(f"{where}: {_show(domain)} is listed twice")
        out[domain] = _address(f"{where}.{key}", val)
    return out


def _domain_list(where: str, value: Any) -> tuple[str, ...]:
    if value == []:
        return ()
    items = _array(where, value, 'an array of domain names such as ["example.org"]')
    return _distinct(where, [_domain(f"{where}[{i}]", v) for i, v in enumerate(items)])


def server_section(table: Any, base: Path, client_ports: Mapping[str, int]) -> ServerConfig:
    """``[server]`` checked; ``client_ports`` are the ports it must not share."""
    custom = {
        "routes": _routes,
        "nameservers": _nameservers,
        "insecure_domains": _domain_list,
        "ca_file": lambda at, v: _existing_file(at, v, base),
        "dialback_secret": lambda at, v: _check(at, v, _TEXT),
    }
    cfg = ServerConfig(**_fields(ServerConfig, _table("server", table), "server", custom=custom))
    ports = {cfg.port: "server.port"}
    if cfg.direct_tls_port:
        if cfg.direct_tls_port in ports:
            raise _Bad(f"server.direct_tls_port: must differ from server.port "
                       f"(both are {cfg.port})")
        ports[cfg.direct_tls_port] = "server.direct_tls_port"
    if cfg.enabled:
        for name, port in client_ports.items():
            if port and port in ports and cfg.address:
                raise _Bad(f"{ports[port]}: {port} is client.{name} already")
    return cfg
