"""The blocking module's memory stays bounded whatever addresses clients use."""

from __future__ import annotations

import pytest

from vinespy import modules
from vinespy.config import HostConfig
from vinespy.host import Host
from vinespy.jid import JID
from vinespy.modules import blocking
from vinespy.router import Router
from vinespy.sessions import Sessions
from vinespy.storage.memory import MemoryStorage

DOMAIN = "wonderland.lit"


async def test_cache_forgets_oldest(monkeypatch: pytest.MonkeyPatch) -> None:
    """Looking up 500 made-up users keeps at most CACHE_MAX lists in memory,
    and a forgotten list is read again from storage, unchanged."""
    monkeypatch.setattr(blocking, "CACHE_MAX", 100)
    router = Router(Sessions())
    host = Host(DOMAIN, HostConfig(domains=(DOMAIN,)), MemoryStorage(), router)
    router.add_host(host)
    modules.load(host, ["blocking"])
    mod = host.modules["blocking"]
    alice = JID.parse(f"alice@{DOMAIN}")
    await host.storage.put(alice, blocking.STORE, [f"mallory@{DOMAIN}"])
    assert await mod.blocklist(alice) == {JID.parse(f"mallory@{DOMAIN}")}
    for i in range(500):
        assert await mod.blocklist(JID.parse(f"nobody{i}@{DOMAIN}")) == frozenset()
    assert len(mod._cache) == 100 and alice not in mod._cache
    assert await mod.blocklist(alice) == {JID.parse(f"mallory@{DOMAIN}")}
    assert len(mod._locks) == blocking.LOCK_STRIPES
