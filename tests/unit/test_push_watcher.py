"""The push watcher's loop (imapjmap.push.watcher), the same for every push strategy: it
attaches to the account's freshness once the watch is set, refreshes once for what came
before and once for each thing the watch hears, and on a failure reports itself lost
before the watch's connection closes, then opens a new watch (docs/design.md, "Push").

The watches are scripted fakes of :class:`imapjmap.upstream.watch.Watch`; the strategies
themselves (NOTIFY, IDLE, polling) are tested against real servers
(tests/integration/test_push_*.py, test_upstreams.py, test_gmail.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from imapjmap.errors import ImapUnavailable
from imapjmap.push.watcher import Watcher
from imapjmap.sync.engine import AccountSync
from imapjmap.sync.freshness import Freshness, State
from imapjmap.upstream.watch import Heard, WatchMode

END = object()  # in a script: the watch's connection fails


class ScriptedWatch:
    def __init__(self, mode: WatchMode, script: list[object], log: list[str]) -> None:
        self.mode = mode
        self.reports = mode != "poll"
        self.lists = 0
        self._script = script
        self._log = log

    async def next(self) -> Heard:
        while not self._script:
            await asyncio.sleep(0.01)
        item = self._script.pop(0)
        if item is END:
            raise ImapUnavailable("connection lost")
        self.lists += 1
        assert isinstance(item, Heard)
        return item


class ScriptedUpstream:
    """Each watch() opens the next scripted watch; ``log`` says what happened in order."""

    def __init__(self, mode: WatchMode, *scripts: list[object]) -> None:
        self.log: list[str] = []
        self._mode = mode
        self._scripts = list(scripts)

    @contextlib.asynccontextmanager
    async def watch(self, *, poll_interval: float, status_interval: float) -> AsyncIterator[Any]:
        if not self._scripts:
            await asyncio.Event().wait()  # no more connections: wait to be stopped
        self.log.append("watch set")
        try:
            yield ScriptedWatch(self._mode, self._scripts.pop(0), self.log)
        finally:
            self.log.append("connection closed")

    def refresh_reads(self, prefer: str | None = None, avoid: str | None = None) -> Any:
        raise AssertionError("the fake sync does not read")


class LoggedFreshness(Freshness):
    """The real machine, which says in ``log`` what the watcher told it."""

    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    def watcher_attached(self) -> None:
        self.log.append("watcher_attached")
        super().watcher_attached()

    def watcher_lost(self) -> None:
        self.log.append("watcher_lost")
        super().watcher_lost()

    def note_event(self) -> None:
        self.log.append("note_event")
        super().note_event()


class FakeSync:
    """An AccountSync's face to the watcher: its freshness and its refresh."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.freshness = LoggedFreshness(log)

    async def refresh(self, source: object, *, force: bool = False) -> None:
        self.log.append("refresh")


async def _watching(upstream: ScriptedUpstream, until: Any) -> tuple[Watcher, list[str]]:
    sync = FakeSync(upstream.log)
    pokes: list[int] = []

    async def poke() -> None:
        upstream.log.append("poke")
        pokes.append(1)

    watcher = Watcher("A1", upstream, cast(AccountSync, sync), poke, poll_interval=60)
    watcher.start()
    try:
        async with asyncio.timeout(5):
            while not until(watcher):
                await asyncio.sleep(0.01)
    finally:
        await watcher.stop()
    return watcher, upstream.log


@pytest.mark.parametrize("mode", ["notify", "idle"])
async def test_each_thing_heard_is_one_refresh_and_one_poke(mode: WatchMode) -> None:
    script: list[object] = [Heard.CHANGED, Heard.DUE, Heard.REARMED]
    upstream = ScriptedUpstream(mode, script)
    watcher, log = await _watching(upstream, lambda w: w.rearms == 1 and log_has(upstream, 4))
    assert (watcher.events, watcher.checks, watcher.rearms, watcher.lists) == (1, 1, 1, 3)
    assert log[:4] == ["watch set", "watcher_attached", "refresh", "poke"]
    assert log[4:13] == ["note_event", "refresh", "poke"] * 3
    # stopped: lost first (requests ask again at once), then the connection closes
    assert log[13:] == ["watcher_lost", "connection closed"]
    assert watcher.mode == "stopped"


def log_has(upstream: ScriptedUpstream, pokes: int) -> bool:
    return upstream.log.count("poke") >= pokes


async def test_a_polling_watch_never_attaches_and_does_not_refresh_first() -> None:
    upstream = ScriptedUpstream("poll", [Heard.DUE])
    watcher, log = await _watching(upstream, lambda w: log_has(upstream, 1))
    assert log == ["watch set", "note_event", "refresh", "poke", "connection closed"]
    assert watcher.checks == 1 and watcher.events == 0


async def test_a_failed_watch_is_lost_before_its_connection_closes_then_a_new_one_is_set() -> None:
    """Rule 2; the backoff before the second watch is 1 s."""
    upstream = ScriptedUpstream("notify", [Heard.CHANGED, END], [Heard.CHANGED])
    watcher, log = await _watching(upstream, lambda w: w.events == 2 and log_has(upstream, 4))
    first = ["watch set", "watcher_attached", "refresh", "poke", "note_event", "refresh", "poke"]
    assert log[:9] == [*first, "watcher_lost", "connection closed"]
    assert log[9:16] == first
    assert watcher.lists == 2  # counted over both watches


async def test_the_freshness_is_watched_only_while_a_watch_is_set() -> None:
    upstream = ScriptedUpstream("idle", [END])
    sync = FakeSync(upstream.log)

    async def poke() -> None:
        pass

    watcher = Watcher("A1", upstream, cast(AccountSync, sync), poke, poll_interval=60)
    watcher.start()
    async with asyncio.timeout(5):
        while "connection closed" not in upstream.log:
            await asyncio.sleep(0.01)
    assert watcher.mode == "reconnecting"
    assert sync.freshness.state is State.STALE
    await watcher.stop()
