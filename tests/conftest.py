"""Shared fixtures: a real server on loopback, real slixmpp clients.

The ``server`` factory writes a real ``conf/config.toml`` (certificates from
a throw-away trustme CA, fs storage in tmp_path), loads it with the real
loader and runs ``Server.serve`` in the test's loop on free ports. Clients
are real ``slixmpp.ClientXMPP`` instances that trust that CA.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pytest
import slixmpp
import trustme

from tests.ldapproc import slapd  # noqa: F401  (a fixture: a real slapd per test)
from tests.peerproc import ejabberd, prosody  # noqa: F401  (fixtures: federation peers)
from tests.pgproc import postgres  # noqa: F401  (a fixture: one PostgreSQL per session)
from tests.support import TIMEOUT, free_port, wait_ready  # noqa: F401  (used by the suites)
from vinespy import accounts, config as vconfig
from vinespy.jid import JID
from vinespy.server import Server

DOMAIN = "wonderland.lit"
PASSWORD = "secr3t-pässword"


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


def write_config(root: Path, ca: trustme.CA, domains: tuple[str, ...] = (DOMAIN,),
                 client: dict[str, Any] | None = None, extra: str = "",
                 host: dict[str, Any] | None = None,
                 storage: str = 'backend = "fs"\ndir = "data"\n') -> Path:
    """A real conf/ tree under ``root``: config.toml, certs/, and data/.

    ``host`` adds keys to the ``[[host]]`` table (``{"private_storage": True}``);
    ``storage`` is the body of its ``[host.storage]`` table.
    """
    certs = root / "conf" / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    for d in domains:
        leaf = ca.issue_cert(d, f"*.{d}")
        leaf.private_key_pem.write_to_path(str(certs / f"{d}.key"))
        (certs / f"{d}.key").chmod(0o600)
        (certs / f"{d}.crt").write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
    opts = {"address": "127.0.0.1", "port": 0, **(client or {})}
    lines = "\n".join(f"{k} = {v!r}" if not isinstance(v, bool) else f"{k} = {str(v).lower()}"
                      for k, v in opts.items()).replace("'", '"')
    doms = ", ".join(f'"{d}"' for d in domains)
    host_lines = "".join(f"{k} = {_toml(v)}\n" for k, v in (host or {}).items())
    path = root / "conf" / "config.toml"
    path.write_text(f'log = "debug"\ncerts = "conf/certs"\n\n[[host]]\ndomains = [{doms}]\n'
                    f'{host_lines}[host.storage]\n{storage}\n'
                    f'[client]\n{lines}\n{extra}')
    return path


def _toml(v: Any) -> str:
    """A TOML value: JSON's where they agree; a dict is an inline table."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(x)}" for k, x in v.items()) + " }"
    return json.dumps(v)


class Running:
    """A server running in the test's loop, with its ports and storage."""

    def __init__(self, server: Server, ca: trustme.CA) -> None:
        self.server = server
        self.ca = ca
        self.port = server.ports["client"]
        self.clients: list[slixmpp.ClientXMPP] = []

    @property
    def storage(self) -> Any:
        return self.server.hosts[DOMAIN].storage

    async def user(self, local: str, password: str = PASSWORD) -> str:
        await accounts.create_user(self.storage, JID.parse(f"{local}@{DOMAIN}"), password,
                                   iterations=4096)
        return f"{local}@{DOMAIN}"

    def client(self, jid: str, password: str = PASSWORD, *, mechanism: str | None = None,
               direct_tls: bool = False, plugins: tuple[str, ...] = ()) -> slixmpp.ClientXMPP:
        """A slixmpp client trusting the test CA, with XEP-0199/0092/0030 and ``plugins``."""
        c = slixmpp.ClientXMPP(jid, password, sasl_mech=mechanism)
        c.ssl_context = ssl.create_default_context()
        self.ca.configure_trust(c.ssl_context)
        c.enable_direct_tls = direct_tls
        c.enable_starttls = not direct_tls
        c.enable_plaintext = False
        c.register_plugin("xep_0199")
        c.register_plugin("xep_0092")
        c.register_plugin("xep_0030")
        for plugin in plugins:
            c.register_plugin(plugin)
        c.auto_reconnect = False
        self.clients.append(c)
        return c

    async def login(self, jid: str, password: str = PASSWORD, **kw: Any) -> slixmpp.ClientXMPP:
        """Connect, authenticate, bind, send initial presence; wait for it."""
        c = self.client(jid, password, **kw)
        started = asyncio.get_running_loop().create_future()
        c.add_event_handler("session_start", lambda _: started.done() or started.set_result(1))
        c.add_event_handler("failed_auth",
                            lambda _: started.done() or started.set_exception(
                                AssertionError(f"auth failed for {jid}")))
        c.add_event_handler("disconnected",
                            lambda _: started.done() or started.set_exception(
                                AssertionError(f"{jid} disconnected")))
        port = self.server.ports["direct_tls" if kw.get("direct_tls") else "client"]
        c.connect("127.0.0.1", port)
        await asyncio.wait_for(started, TIMEOUT)
        c.send_presence()
        return c


async def wait_event(client: slixmpp.ClientXMPP, name: str, timeout: float = TIMEOUT,
                     match: Callable[[Any], bool] = lambda _: True) -> Any:
    """Wait for the next ``name`` event of ``client`` that ``match`` accepts."""
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def handler(data: Any) -> None:
        if not fut.done() and match(data):
            fut.set_result(data)
    client.add_event_handler(name, handler)
    try:
        return await asyncio.wait_for(fut, timeout)
    finally:
        client.del_event_handler(name, handler)


@contextlib.asynccontextmanager
async def running(tmp_path: Path, ca: trustme.CA, **kw: Any) -> AsyncIterator[Running]:
    async with serving_config(write_config(tmp_path, ca, **kw), ca) as r:
        yield r


@contextlib.asynccontextmanager
async def serving_config(path: Path, ca: trustme.CA) -> AsyncIterator[Running]:
    """A server started from the config file at ``path``, stopped at the end."""
    srv = Server(vconfig.load(path))
    stop = asyncio.Event()
    ready = asyncio.Event()
    task = asyncio.create_task(srv.serve(stop.wait, ready.set))
    await asyncio.wait_for(ready.wait(), TIMEOUT)
    r = Running(srv, ca)
    try:
        yield r
    finally:
        for c in r.clients:
            c.abort()
        stop.set()
        await asyncio.wait_for(task, TIMEOUT)


ServerFactory = Callable[..., "contextlib.AbstractAsyncContextManager[Running]"]


@pytest.fixture
async def server(tmp_path: Path, ca: trustme.CA) -> AsyncIterator[Running]:
    """A default server: STARTTLS required, fs storage, free port."""
    async with running(tmp_path, ca) as r:
        yield r


@pytest.fixture
def make_server(tmp_path: Path, ca: trustme.CA) -> Callable[..., Any]:
    """``async with make_server(client={...}) as srv`` for custom settings."""
    def factory(**kw: Any) -> Any:
        return running(tmp_path, ca, **kw)
    return factory
