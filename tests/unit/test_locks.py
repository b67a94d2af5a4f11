"""KeyedLock: one holder per key at a time, other keys not held up, and no
memory kept for a key once nobody holds or waits for it."""

from __future__ import annotations

import asyncio

from vinespy.locks import KeyedLock


async def test_one_holder_per_key_and_nothing_kept() -> None:
    locks: KeyedLock[str] = KeyedLock()
    inside: list[str] = []
    release = asyncio.Event()

    async def hold(key: str, name: str) -> None:
        async with locks.hold(key):
            inside.append(name)
            await release.wait()
            inside.remove(name)

    first = asyncio.create_task(hold("alice", "first"))
    second = asyncio.create_task(hold("alice", "second"))
    other = asyncio.create_task(hold("bob", "other"))
    for _ in range(5):
        await asyncio.sleep(0)          # let every task run up to its lock
    assert sorted(inside) == ["first", "other"]     # second waits; bob's is free
    assert len(locks) == 2
    release.set()
    await asyncio.wait_for(asyncio.gather(first, second, other), 5)
    assert inside == [] and len(locks) == 0


async def test_a_failing_holder_frees_the_key() -> None:
    locks: KeyedLock[str] = KeyedLock()
    try:
        async with locks.hold("alice"):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert len(locks) == 0
    async with asyncio.timeout(5):
        async with locks.hold("alice"):
            pass
