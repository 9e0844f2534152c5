"""imapjmap.tasks.cancel_and_wait: a close that ends, and never hides its caller's
cancellation (Rules 1-2 of the module)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from imapjmap.tasks import cancel_and_wait


async def _forever() -> None:
    await asyncio.Event().wait()


async def _stubborn() -> None:
    """Ends only on a second cancellation: its ``finally`` waits for something that never
    comes, as a LOGOUT on a hung connection without a timeout would."""
    try:
        await asyncio.Event().wait()
    finally:
        await asyncio.Event().wait()


async def _raises_on_cancel() -> None:
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        raise RuntimeError("cleanup failed") from None


async def test_a_task_that_ends_on_its_cancellation_is_awaited() -> None:
    task = asyncio.create_task(_forever())
    await asyncio.sleep(0)
    await cancel_and_wait(task, None)
    assert task.cancelled()


async def test_a_task_that_does_not_end_is_given_up_after_the_wait_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    task = asyncio.create_task(_stubborn(), name="stubborn")
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with caplog.at_level(logging.WARNING, logger="imapjmap.tasks"):
        await cancel_and_wait(task, within=0.2)
    assert 0.2 <= loop.time() - started < 2
    assert not task.done()
    assert "stubborn did not end within 0.2 s" in caplog.text
    task.cancel()  # the second cancellation ends it
    await asyncio.wait([task])
    assert task.cancelled()


async def test_the_callers_own_cancellation_is_not_swallowed() -> None:
    """A timeout around a close fires: ``suppress(CancelledError)`` around ``await task``
    took the timeout's cancellation for the task's and waited on."""
    task = asyncio.create_task(_stubborn())
    await asyncio.sleep(0)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await cancel_and_wait(task, within=60)
    task.cancel()
    await asyncio.wait([task])


async def test_what_a_cancelled_task_raised_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    task = asyncio.create_task(_raises_on_cancel(), name="failing")
    done = asyncio.create_task(asyncio.sleep(0))
    await asyncio.sleep(0.01)
    with caplog.at_level(logging.WARNING, logger="imapjmap.tasks"):
        await cancel_and_wait(task, done)
    assert "failing ended with RuntimeError('cleanup failed')" in caplog.text
