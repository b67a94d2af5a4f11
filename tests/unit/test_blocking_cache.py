"""The blocking module's memory stays bounded whatever addresses clients use."""

from __future__ import annotations

import pytest

from vinespy.jid import JID
from vinespy.modules import blocking

from tests.harness import DOMAIN, World


async def test_cache_forgets_oldest(monkeypatch: pytest.MonkeyPatch) -> None:
    """Looking up 500 made-up users keeps at most CACHE_MAX lists in memory,
    and a forgotten list is read again from storage, unchanged."""
    monkeypatch.setattr(blocking, "CACHE_MAX", 100)
    host = World("blocking").host
    mod = host.modules["blocking"]
    alice = JID.parse(f"alice@{DOMAIN}")
    await host.storage.put(alice, blocking.STORE, [f"mallory@{DOMAIN}"])
    assert await mod.blocklist(alice) == {JID.parse(f"mallory@{DOMAIN}")}
    for i in range(500):
        assert await mod.blocklist(JID.parse(f"nobody{i}@{DOMAIN}")) == frozenset()
    assert len(mod._cache) == 100 and alice not in mod._cache
    assert await mod.blocklist(alice) == {JID.parse(f"mallory@{DOMAIN}")}
    assert len(mod._locks) == 0             # a user's lock lives only while held


async def test_cache_bounded_in_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lists of many long JIDs are forgotten, oldest first, once the cached
    lists take more than about CACHE_BYTES; the newest list is always kept."""
    monkeypatch.setattr(blocking, "CACHE_BYTES", 200_000, raising=False)
    host = World("blocking").host
    mod = host.modules["blocking"]
    owners = [JID.parse(f"user{i}@{DOMAIN}") for i in range(20)]
    for i, owner in enumerate(owners):         # 20 lists of 50 JIDs of 1,000 characters
        await host.storage.put(owner, blocking.STORE,
                               [f"{'x' * 990}{i:03}{j:03}@{DOMAIN}" for j in range(50)])
        assert len(await mod.blocklist(owner)) == 50

    def chars() -> int:
        return sum(len(str(j)) for lst in mod._cache.values() for j in lst)
    assert 0 < chars() <= 200_000 and owners[-1] in mod._cache and owners[0] not in mod._cache
    assert len(await mod.blocklist(owners[0])) == 50      # read again from storage
    assert owners[0] in mod._cache and chars() <= 200_000
    # A single list larger than the whole budget is still kept while in use.
    monkeypatch.setattr(blocking, "CACHE_BYTES", 1000, raising=False)
    assert len(await mod.blocklist(owners[1])) == 50 and list(mod._cache) == [owners[1]]
