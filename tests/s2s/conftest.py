"""Federation fixtures: vinespy servers with ``[server]`` on, each serving a
domain of its own, routed to each other (``[server] routes``) on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any, AsyncIterator

import trustme

from tests.conftest import Running, serving_config, write_config
from tests.support import TIMEOUT, free_port
from vinespy import accounts
from vinespy.jid import JID

PASSWORD = "secr3t-pässword"


class Peer(Running):
    """A running vinespy with s2s on, serving ``domain``."""

    domain: str

    async def user(self, local: str, password: str = PASSWORD) -> str:
        jid = JID.parse(f"{local}@{self.domain}")
        await accounts.create_user(self.server.hosts[self.domain].storage, jid, password,
                                   iterations=4096)
        return str(jid)


def s2s_table(port: int, ca_file: Path, routes: dict[str, int | str], **extra: Any) -> str:
    """A ``[server]`` table: s2s on ``port``, trusting ``ca_file``."""
    lines = ["enabled = true", f"port = {port}", f'ca_file = "{ca_file}"']
    for key, value in {"address": "127.0.0.1", "connect_timeout": 5.0, **extra}.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {str(value).lower()}")
        elif isinstance(value, (int, float)):
            lines.append(f"{key} = {value}")
        elif isinstance(value, (list, tuple)):
            lines.append(f"{key} = [{', '.join(repr(v).replace(chr(39), chr(34)) for v in value)}]")
        else:
            lines.append(f'{key} = "{value}"')
    table = ", ".join(f'"{d}" = "{p if isinstance(p, str) else f"127.0.0.1:{p}"}"'
                      for d, p in routes.items())
    lines.append(f"routes = {{ {table} }}")
    return "[server]\n" + "\n".join(lines) + "\n"


def ca_file(root: Path, ca: trustme.CA) -> Path:
    path = root / "ca.pem"
    if not path.exists():
        ca.cert_pem.write_to_path(str(path))
    return path


@contextlib.asynccontextmanager
async def peer(root: Path, ca: trustme.CA, domain: str, port: int,
               routes: dict[str, int | str], *, trust: trustme.CA | None = None,
               cert: str | None = None, host: dict[str, Any] | None = None,
               **server: Any) -> AsyncIterator[Peer]:
    """vinespy serving ``domain`` with s2s on ``port`` (chosen beforehand, so
    that the other side's routes, or DNS records, can name it), its
    certificate from ``ca`` (for the name ``cert`` instead of the domain if
    given: a wrong one), trusting the other servers' from ``trust`` (the same
    CA by default). ``host``: ``[[host]]`` keys (``components`` opens the
    component listener on a free port). ``server``: more ``[server]`` keys
    (``nameservers``...)."""
    where = root / domain
    where.mkdir(parents=True, exist_ok=True)
    trusted = ca_file(where, trust) if trust is not None else ca_file(root, ca)
    extra = s2s_table(port, trusted, routes, **server)
    if host and "components" in host:
        extra += '[component]\naddress = "127.0.0.1"\nport = 0\n'
    path = write_config(where, ca, domains=(domain,), host=host, extra=extra)
    if cert is not None:
        leaf = ca.issue_cert(cert)
        certs = where / "conf" / "certs"
        leaf.private_key_pem.write_to_path(str(certs / f"{domain}.key"))
        (certs / f"{domain}.crt").write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
    async with serving_config(path, ca) as r:
        r.__class__ = Peer
        r.domain = domain           # type: ignore[attr-defined]
        yield r                     # type: ignore[misc]


@contextlib.asynccontextmanager
async def two(root: Path, ca: trustme.CA, a: str = "wonderland.lit", b: str = "verona.lit",
              **server: Any) -> AsyncIterator[tuple[Peer, Peer]]:
    """Two vinespy servers federating with each other."""
    pa, pb = free_port(), free_port()
    async with peer(root, ca, a, pa, {b: pb}, **server) as one, \
            peer(root, ca, b, pb, {a: pa}, **server) as other:
        yield one, other


async def until(what: str, cond: Any, timeout: float = TIMEOUT, poll: Any = None) -> None:
    """Poll ``cond()`` (state no event reports) until true, for at most
    ``timeout``; ``poll``: a coroutine function to run before each check."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                if poll is not None:
                    await poll()
                if cond():
                    return
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"not within {timeout:g} s: {what}") from None
