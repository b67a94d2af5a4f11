"""What NotifyingStorage (vinespy/cluster/notifying_storage.py) announces to
the other cluster nodes: every write of a user's data, except those of the
stores no node caches (offline storage, written for every message to an
offline user: announcing it made every node drop the user's cached
blocklist and archive preferences, a read each per message)."""

from __future__ import annotations

from pathlib import Path

from vinespy.cluster.notifying_storage import QUIET, NotifyingStorage
from vinespy.jid import JID
from vinespy.storage.fs import FsStorage

ALICE = JID.parse("alice@wonderland.lit")


async def test_offline_writes_are_not_announced_prefs_writes_are(tmp_path: Path) -> None:
    announced: list[JID] = []

    async def changed(bare: JID) -> None:
        announced.append(bare)

    storage = NotifyingStorage(FsStorage(tmp_path / "data"), changed)
    assert "offline" in QUIET
    await storage.put(ALICE, "offline", [{"stamp": "x", "xml": "<message/>"}])
    await storage.modify(ALICE, "offline", lambda q: [*(q or []), {"stamp": "y"}])
    assert announced == []
    assert len(await storage.get(ALICE, "offline")) == 2
    await storage.put(ALICE, "mam_prefs", {"default": "never", "always": [], "never": []})
    await storage.modify(ALICE, "blocklist", lambda _: ["bob@wonderland.lit"])
    assert announced == [ALICE, ALICE]
    await storage.close()
