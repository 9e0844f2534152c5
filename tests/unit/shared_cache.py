"""What the unit tests of state shared by instances use: two stores on one cache (two
instances opening it) and a clock a test sets."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from imapjmap.store.db import Store


class Clock:
    """A clock that says ``now`` until the test moves it."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def two_stores(tmp_path: Path) -> AsyncIterator[tuple[Store, Store]]:
    """Two stores on one cache file (on PostgreSQL, one schema, with
    ``--cache-backend=postgresql``), as two instances open it."""
    path = str(tmp_path / "cache.db")
    first = await Store.open(path, readers=1)
    second = await Store.open(path, readers=1)
    try:
        yield first, second
    finally:
        await first.aclose()
        await second.aclose()
