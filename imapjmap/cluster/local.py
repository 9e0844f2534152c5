"""The coordinator of an instance alone on its cache: every lock and role is its own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping

from imapjmap.cluster.api import (
    AccountHandler,
    ChangeHandler,
    RoleHandler,
    SharesHandler,
    Vouched,
    VouchHandler,
)


class Alone:
    """No other instance: the sync lock is free (one process serialises an account's
    refreshes itself), a role is granted as soon as it is wanted, nothing is published."""

    shared = False

    def __init__(self) -> None:
        self.on_change: ChangeHandler | None = None
        self.on_granted: RoleHandler | None = None
        self.on_lost: RoleHandler | None = None
        self.on_subscriptions: AccountHandler | None = None
        self.on_listened: AccountHandler | None = None
        self.on_vouch: VouchHandler | None = None
        self.on_shares: SharesHandler | None = None
        self._held: set[tuple[str, str]] = set()

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        self._held.clear()

    @contextlib.asynccontextmanager
    async def sync_lock(self, account_id: str) -> AsyncIterator[bool]:
        yield True

    async def try_fill(self, account_id: str, mailbox_id: str) -> bool:
        return True

    async def end_fill(self, account_id: str, mailbox_id: str) -> None:
        return None

    async def want(self, role: str, key: str) -> None:
        if (role, key) in self._held:
            return
        self._held.add((role, key))
        if self.on_granted is not None:
            await self.on_granted(role, key)

    async def drop(self, role: str, key: str) -> None:
        self._held.discard((role, key))

    def holds(self, role: str, key: str) -> bool:
        return (role, key) in self._held

    async def listening(self, account_id: str, *, on: bool) -> None:
        return None

    def listened_elsewhere(self, account_id: str) -> bool:
        return False

    async def vouch(self, account_id: str, claim: str, timeout: float) -> Vouched | None:
        return None  # nobody else to ask

    async def publish(self, account_id: str, epoch: str, seqs: Mapping[str, int]) -> None:
        return None

    async def subscriptions_changed(self, account_id: str) -> None:
        return None

    # one instance counts its slots itself (``http.admission``): the cluster adds nothing

    async def take_slot(self, kind: str, account_id: str, limit: int) -> int | None:
        return 0

    async def give_slot(self, kind: str, account_id: str, token: int, *, linger: float) -> None:
        return None

    async def wait_slot(self, kind: str, account_id: str, timeout: float) -> None:
        await asyncio.sleep(timeout)
