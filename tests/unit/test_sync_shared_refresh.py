"""AccountSync Rule 1: one refresh shared by concurrent requests, whose callers may be
cancelled (their clients went away) without stopping it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from imapjmap.errors import ImapUnavailable
from imapjmap.store.db import Store
from imapjmap.sync.engine import AccountSync


class StallingPool:
    """Its one session waits for ``go``, then fails as a lost upstream would."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.sessions = 0

    @contextlib.asynccontextmanager
    async def session(self, **kwargs: Any) -> AsyncIterator[None]:
        self.sessions += 1
        await self.go.wait()
        raise ImapUnavailable("connection lost")
        yield  # pragma: no cover - never reached


async def test_a_cancelled_caller_leaves_the_shared_refresh_to_the_others() -> None:
    store = await Store.open(":memory:")
    try:
        sync = AccountSync(store, "A1")
        pool = StallingPool()
        leaving = asyncio.create_task(sync.refresh(pool))  # type: ignore[arg-type]
        staying = asyncio.create_task(sync.refresh(pool))  # type: ignore[arg-type]
        await asyncio.sleep(0.01)
        leaving.cancel()
        await asyncio.sleep(0.01)
        pool.go.set()
        with pytest.raises(ImapUnavailable):
            await staying  # the run went on and its failure reached the caller still there
        assert leaving.cancelled() and pool.sessions == 1
    finally:
        await store.aclose()
