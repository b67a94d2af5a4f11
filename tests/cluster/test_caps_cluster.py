"""XEP-0115 caps across two cluster nodes sharing a real redis-server: a
'ver' verified on one node is not asked for again on the other (the
``caps:{hash}:{ver}`` key), and a node reads the features of a session
bound on the other from its routing entry's presence.

The two nodes run in this process (as in tests/integration/test_module_api.py)
so that their caps modules can be asked directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import trustme

from tests.conftest import DOMAIN, PASSWORD, TIMEOUT, Running, running
from tests.integration.test_caps import HOST, NOTIFY, caps_client, modules
from tests.redisproc import redis_server, url_of
from vinespy import accounts
from vinespy.jid import JID

pytestmark = [pytest.mark.integration, pytest.mark.redis]


@contextlib.asynccontextmanager
async def two_nodes(tmp_path: Path, ca: trustme.CA
                    ) -> AsyncIterator[tuple[Running, Running, Any]]:
    """Two clustered servers in this process and their redis-server (a
    client of it, str replies)."""
    (tmp_path / "redis").mkdir()
    with redis_server(tmp_path / "redis") as client:
        url = url_of(client)
        async with contextlib.AsyncExitStack() as stack:
            nodes = []
            for name in ("a", "b"):
                root = tmp_path / name
                root.mkdir()
                srv = await stack.enter_async_context(running(
                    root, ca, host=HOST, extra=f'[cluster]\nurl = "{url}"\nnode = "{name}"\n'
                    'heartbeat = 0.2\ndead_after = 1.0\n'))
                for user in ("alice", "bob"):
                    await accounts.create_user(srv.storage, JID.parse(f"{user}@{DOMAIN}"),
                                               PASSWORD, iterations=4096)
                nodes.append(srv)
            yield nodes[0], nodes[1], client


async def proxy_with_presence(node: Running, full: str) -> Any:
    """``full``'s session as ``node`` sees it (a proxy), once its routing
    entry carries its available presence (only Redis holds it: polled)."""
    jid = JID.parse(full)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while True:
        await node.server.sessions.load([jid.bare], fresh=True)
        proxy = node.server.sessions.get(jid)
        if proxy is not None and proxy.presence is not None:
            return proxy
        if loop.time() > deadline:
            raise AssertionError(f"no presence of {full} in its routing entry")
        await asyncio.sleep(0.02)


async def test_caps_verified_on_one_node_are_not_asked_for_on_the_other(
        tmp_path: Path, ca: trustme.CA) -> None:
    async with two_nodes(tmp_path, ca) as (a, b, redis):
        caps_a, watch_a = modules(a)
        caps_b, watch_b = modules(b)
        alice, bob = f"alice@{DOMAIN}/phone", f"bob@{DOMAIN}/desk"

        c_alice, alice_queries = await caps_client(a, alice)
        features = await watch_a.wait(alice)
        assert features is not None and NOTIFY in features and len(alice_queries) == 1
        ver = await c_alice.plugin["xep_0115"].get_verstring()
        stored = redis.get(f"caps:sha-1:{ver}")
        assert stored is not None and set(json.loads(stored)) == features
        assert 0 < redis.ttl(f"caps:sha-1:{ver}")      # shared_ttl: it expires

        # bob's client on node b has the same caps: node b finds them in Redis.
        _, bob_queries = await caps_client(b, bob)
        assert await watch_b.wait(bob) == features
        assert bob_queries == [] and len(alice_queries) == 1

        # Node b reads the features of alice's session (bound on node a) from
        # her presence in the routing entry: from memory, else one Redis read.
        proxy = await proxy_with_presence(b, alice)
        assert proxy.node == "a"
        assert caps_b.client_features_cached(proxy) == features
        caps_b.node.known.clear()
        assert caps_b.client_features_cached(proxy) is None
        assert await caps_b.client_features(proxy) == features
        assert caps_b.client_features_cached(proxy) == features
        # and node a, of bob's on node b
        assert await caps_a.client_features(await proxy_with_presence(a, bob)) == features
