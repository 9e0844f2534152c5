"""Ending background tasks: bounded, and without swallowing the closer's own cancellation.

Rule 1: ``task.cancel()`` followed by ``with suppress(CancelledError): await task`` also
        swallows a cancellation aimed at the coroutine that awaits (an ``asyncio.timeout``
        around a close, a shutdown), so that timeout never fires; and a task that does not
        end once cancelled (an await in a ``finally`` that never returns) hangs its closer
        for good.  :func:`cancel_and_wait` waits at most ``within`` seconds, lets its
        caller's cancellation through, and logs each task that did not end in time.
        A closer that must finish its work even when it is itself being cancelled (a
        WebSocket handler whose client went away) does that work in a ``finally``.
Rule 2: what a cancelled task raised other than its cancellation is logged, not raised in
        the closer: a close goes on to close the rest.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)

#: How long a cancelled task may take to end (its ``finally`` blocks: a LOGOUT has 2 s).
CANCEL_WAIT = 5.0


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None, within: float = CANCEL_WAIT) -> None:
    """Cancel ``tasks`` (``None`` entries are skipped) and wait until they ended, at most
    ``within`` seconds (Rule 1); raises only the caller's own cancellation."""
    chosen = [task for task in tasks if task is not None]
    for task in chosen:
        task.cancel()
    if not chosen:
        return
    _, pending = await asyncio.wait(chosen, timeout=within)
    for task in chosen:
        if task in pending:
            log.warning(
                "task %s did not end within %.1f s of its cancellation", task.get_name(), within
            )
        elif not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("task %s ended with %r as it was cancelled", task.get_name(), exc)
