"""The push hub among several instances (push.hub Rule 4): what another instance publishes
reaches this hub's listeners once, and never takes a state back."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, cast

from imapjmap.jmap import state as jstate
from imapjmap.push.hub import Hub
from imapjmap.store.db import Store


class _SlowHub(Hub):
    """A hub whose cache reads return ``seqs`` once ``release`` is set."""

    def __init__(self, seqs: dict[str, int]) -> None:
        super().__init__(cast(Store, None))
        self.seqs = seqs
        self.release = asyncio.Event()
        self.release.set()

    async def _read(self, account_id: str) -> dict[str, int]:
        await self.release.wait()
        self._epochs[account_id] = "E"
        return dict(self.seqs)


def _drain(queue: asyncio.Queue[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


def _states(seqs: Mapping[str, int]) -> dict[str, str]:
    return {t: jstate.encode(jstate.State("E", s)) for t, s in seqs.items()}


async def test_heard_changes_reach_listeners_once_and_never_go_back() -> None:
    hub = _SlowHub({"Mailbox": 3, "Email": 5})
    listener = await hub.subscribe("acc", None)
    await hub.heard("acc", "E", {"Mailbox": 4})
    await hub.heard("acc", "E", {"Mailbox": 4, "Email": 5})  # heard twice, or late
    await hub.heard("acc", "E", {"Mailbox": 2})  # older than what was published
    assert _drain(listener.queue) == [_states({"Mailbox": 4})]
    hub.seqs = {"Mailbox": 4, "Email": 6}
    await hub.poke("acc")  # this instance's own change after the heard one
    assert _drain(listener.queue) == [_states({"Email": 6})]


async def test_another_epoch_is_read_from_the_cache() -> None:
    hub = _SlowHub({"Mailbox": 3})
    listener = await hub.subscribe("acc", None)
    hub.seqs = {"Mailbox": 4}
    await hub.heard("acc", "a cache made anew", {"Mailbox": 1})
    assert _drain(listener.queue) == [_states({"Mailbox": 4})]
