"""``[http]``: the HTTP listener of WebSocket (RFC 7395), BOSH (XEP-0124/0206),
XEP-0156 discovery and the web page (:mod:`vinespy.http`).

The table present is the listener on (``enabled = false`` turns it off
again); absent, nothing listens for HTTP.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .rules import _Bad, _fields, _path, _show, _table

__all__ = ["HttpConfig", "http_section"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class HttpConfig:
    enabled: bool = True
    address: str = "0.0.0.0"
    port: int = 5280                           # plain HTTP; 0 = off
    tls_port: int = 0                          # HTTPS with the hosts' certificates; 0 = off
    bosh_path: str = "/http-bind"              # "" = no BOSH
    websocket_path: str = "/xmpp-websocket"    # "" = no WebSocket
    web_root: Path | None = None               # static files; None: the built-in page
    # Plain-HTTP sessions count as encrypted: TLS ends at a proxy in front
    # (Prosody's consider_bosh_secure). Loopback clients always count so.
    consider_secure: bool = False
    # Peers whose X-Forwarded-For / X-Forwarded-Proto are believed.
    trusted_proxies: tuple[IPNetwork, ...] = ()
    # Origins of pages on other sites allowed to use BOSH and WebSocket
    # ("*": any); a page of this server's own origin always is.
    cors_origins: tuple[str, ...] = ()
    websocket_ping: float = 30.0               # s between WebSocket pings; 0 = none
    bosh_max_wait: float = 120.0               # s a BOSH request may be held at most
    bosh_inactivity: float = 60.0              # s a BOSH session lives with no request


_URL_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")
_ORIGIN = re.compile(r"https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?")


def _list(where: str, value: Any, expected: str) -> list[Any]:
    if not isinstance(value, list):
        raise _Bad(f"{where}: expected {expected}, got {_show(value)}")
    return value


def _url_path(where: str, value: Any) -> str:
    if value == "":
        return ""
    if not (isinstance(value, str) and _URL_PATH.fullmatch(value)) or value == "/" \
            or value.startswith("/.well-known/") or value.endswith("/"):
        raise _Bad(f'{where}: expected a URL path such as "/http-bind" (not "/", not under '
                   f'/.well-known/, no trailing /), or "" for off, got {_show(value)}')
    return value


def _networks(where: str, value: Any) -> tuple[IPNetwork, ...]:
    out = []
    for i, item in enumerate(_list(where, value, 'an array of addresses or networks '
                                   'such as ["127.0.0.1", "10.0.0.0/8"]')):
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except (TypeError, ValueError):
            raise _Bad(f'{where}[{i}]: expected an IP address or network such as "10.0.0.0/8", '
                       f"got {_show(item)}") from None
    return tuple(out)


def _origins(where: str, value: Any) -> tuple[str, ...]:
    out = []
    for i, item in enumerate(_list(where, value, 'an array of origins such as '
                                   '["https://chat.example.com"]')):
        if not (isinstance(item, str) and (item == "*" or _ORIGIN.fullmatch(item))):
            raise _Bad(f'{where}[{i}]: expected "*" or an origin such as '
                       f'"https://chat.example.com" (scheme, host, optional port; no path), '
                       f"got {_show(item)}")
        out.append(item.lower())
    return tuple(out)


def _web_root(where: str, value: Any, base: Path) -> Path:
    path = _path(where, value, base)
    if not path.is_dir():
        raise _Bad(f"{where}: {_show(str(path))} is not a directory")
    return path


def http_section(value: Any, base: Path, client_ports: dict[str, int]) -> HttpConfig:
    """The ``[http]`` table, checked (``client_ports``: ``[client]``'s ports,
    which these must differ from)."""
    custom: dict[str, Callable[[str, Any], Any]] = {
        "bosh_path": _url_path, "websocket_path": _url_path,
        "trusted_proxies": _networks, "cors_origins": _origins,
        "web_root": lambda at, v: _web_root(at, v, base),
    }
    cfg = HttpConfig(**_fields(HttpConfig, _table("http", value), "http", custom=custom))
    if cfg.port and cfg.port == cfg.tls_port:
        raise _Bad(f"http.tls_port: must differ from http.port (both are {cfg.port})")
    for key in ("port", "tls_port"):
        for other, port in client_ports.items():
            if getattr(cfg, key) and getattr(cfg, key) == port:
                raise _Bad(f"http.{key}: must differ from client.{other} (both are {port})")
    if cfg.bosh_path and cfg.bosh_path == cfg.websocket_path:
        raise _Bad(f"http.websocket_path: must differ from http.bosh_path "
                   f"(both are {_show(cfg.bosh_path)})")
    return cfg
