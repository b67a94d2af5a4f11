"""Fixtures shared by the storage tests."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest


@pytest.fixture
def thread_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the functions handed to ``asyncio.to_thread`` from now on."""
    calls: list[str] = []
    real = asyncio.to_thread

    async def spy(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        calls.append(fn.__name__)
        return await real(fn, *args, **kwargs)
    monkeypatch.setattr(asyncio, "to_thread", spy)
    return calls
