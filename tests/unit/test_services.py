"""The long-lived services are built in one place and closed in reverse (imapjmap.services)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from imapjmap import services as services_module
from imapjmap.config import CacheConfig, Config
from imapjmap.imap.pool import ImapPools
from imapjmap.push.service import PushService
from imapjmap.services import Services, start_services
from imapjmap.store.db import Store
from imapjmap.store.retention import ChangeLogPurger
from imapjmap.sync.engine import AccountSync


def _config(tmp_path: Path) -> Config:
    return dataclasses.replace(Config(), cache=CacheConfig(path=str(tmp_path / "c.sqlite3")))


def _record_closing(monkeypatch: pytest.MonkeyPatch, closed: list[str]) -> None:
    for name, cls in [
        ("purger", ChangeLogPurger),
        ("push", PushService),
        ("sync", AccountSync),
        ("pools", ImapPools),
        ("store", Store),
    ]:
        original = cls.aclose

        async def aclose(self: Any, _name: str = name, _original: Any = original) -> None:
            closed.append(_name)
            await _original(self)

        monkeypatch.setattr(cls, "aclose", aclose)


async def test_services_close_in_the_reverse_order_of_their_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[str] = []
    _record_closing(monkeypatch, closed)
    services = await start_services(_config(tmp_path))
    services.sync_for("A1")
    services.sync_for("A2")
    await services.aclose()
    assert closed == ["purger", "push", "sync", "sync", "pools", "store"]


async def test_a_cache_opened_by_the_caller_is_used_and_closed_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _config(tmp_path)
    store = await services_module.open_store(cfg)
    closed: list[str] = []
    _record_closing(monkeypatch, closed)
    services = await start_services(cfg, store)
    assert services.store is store
    await services.aclose()
    assert closed[-1] == "store"


async def test_an_accounts_sync_is_made_once(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    services = Services(cfg, await services_module.open_store(cfg), ImapPools(cfg.imap))
    try:
        sync = services.sync_for("A1")
        assert services.sync_for("A1") is sync
        assert services.sync_for("A2") is not sync
    finally:
        await services.aclose()


async def test_a_hung_upstream_does_not_keep_the_cache_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing what talks to the upstream is bounded by CLOSE_TIMEOUT; the cache still
    closes after it."""
    closed: list[str] = []
    _record_closing(monkeypatch, closed)

    async def hang(self: Any) -> None:
        closed.append("pools")
        await asyncio.sleep(60)

    monkeypatch.setattr(ImapPools, "aclose", hang)
    monkeypatch.setattr(services_module, "CLOSE_TIMEOUT", 0.05)
    services = await start_services(_config(tmp_path))
    await services.aclose()
    assert closed == ["purger", "push", "pools", "store"]
