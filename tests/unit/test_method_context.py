"""What a request's :class:`MethodContext` asks of the sync: one refresh per request however
many calls it holds, none when it starts fresh, one every time a call forces it (after a
write, the cache must show what the server now says).  docs/design.md, "Freshness"."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from imapjmap.config import Config
from imapjmap.methods.context import Account, MethodContext
from imapjmap.store.db import Store
from tests.unit.email_world import A, World


@pytest.fixture
async def world() -> AsyncIterator[World]:
    store = await Store.open(":memory:")
    yield World(store, Config())
    await store.aclose()


@pytest.mark.parametrize(
    ("fresh", "calls", "synced"),
    [
        (False, [False, False, False], [False]),  # the first call's refresh serves them all
        (False, [False, True, False], [False, True]),  # a forced one runs again
        (False, [True, True], [True, True]),
        (True, [False, False], []),  # started fresh: nothing to do
        (True, [False, True, False], [True]),  # ... unless forced
    ],
)
async def test_a_request_refreshes_once_unless_forced(
    world: World, fresh: bool, calls: list[bool], synced: list[bool]
) -> None:
    seen: list[bool] = []

    async def sync(force: bool) -> None:
        seen.append(force)

    ctx = MethodContext(
        world.services(),
        Account(A, A, "epoch1"),
        world.upstream,
        sync,
        fresh=fresh,
    )
    for force in calls:
        await ctx.refresh(force=force)
    assert seen == synced


async def test_a_failed_refresh_is_tried_again_by_the_next_call(world: World) -> None:
    """A refresh that raised (the upstream unreachable) leaves the request not fresh."""
    seen: list[bool] = []

    async def sync(force: bool) -> None:
        seen.append(force)
        if len(seen) == 1:
            raise ConnectionError("down")

    ctx = MethodContext(
        world.services(),
        Account(A, A, "epoch1"),
        world.upstream,
        sync,
    )
    with pytest.raises(ConnectionError):
        await ctx.refresh()
    await ctx.refresh()
    await ctx.refresh()
    assert seen == [False, False]
