"""The admin commands' bodies, called by ``imapjmap.cli`` with a loaded configuration.

Each prints what it did (or why not) and returns the exit status: 0 done, 1 failed or
refused, 2 a usage problem.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from imapjmap.admin import accounts as acc
from imapjmap.admin import cache, fill, running
from imapjmap.config import Config, cache_password
from imapjmap.errors import ProxyError
from imapjmap.store import queries as q
from imapjmap.store.db import Store

OK, FAILED, USAGE = 0, 1, 2
STALL: float = 300.0  # seconds `sync` waits without progress before it gives up


@asynccontextmanager
async def _cache(cfg: Config) -> AsyncIterator[Store]:
    # no reader threads or processes: one short job, on the writer connection
    store = await Store.open(
        cfg.cache.url or cfg.cache.path, readers=0, password=cache_password(cfg)
    )
    try:
        yield store
    finally:
        await store.aclose()


def _missing(cfg: Config) -> bool:
    """Whether there is no cache file (said so rather than creating an empty one)."""
    if cfg.cache.url is not None or Path(cfg.cache.path).is_file():
        return False
    print(f"imapjmap: no cache at {cfg.cache.path}", file=sys.stderr)
    return True


def accounts(cfg: Config, *, as_json: bool) -> int:
    if _missing(cfg):
        return FAILED

    async def read() -> list[q.AccountSummary]:
        async with _cache(cfg) as store:
            return await acc.summaries(store)

    try:
        rows = asyncio.run(read())
    except ProxyError as exc:
        print(f"imapjmap: cache {cfg.cache.url or cfg.cache.path}: {exc}", file=sys.stderr)
        return FAILED
    if as_json:
        print(json.dumps(acc.as_json(rows, cfg), indent=2))
    else:
        sys.stdout.write(acc.table(rows, cfg))
    return OK


def _refused(cfg: Config, force: bool) -> bool:
    if force or not running.answers(cfg):
        return False
    host, port = running.address(cfg)
    print(
        f"imapjmap: a proxy answers at {host}:{port}: stop it first, or give --force.  It"
        " keeps each account's state in memory (the states its clients hold, the syncs"
        " under way), which cache rows changed under it would contradict.",
        file=sys.stderr,
    )
    return True


def prune(cfg: Config, *, unused_days: float | None, force: bool) -> int:
    if _missing(cfg) or _refused(cfg, force):
        return FAILED

    async def run() -> cache.Pruned:
        async with _cache(cfg) as store:
            return await cache.prune(
                store,
                retention_days=cfg.cache.changes_retention_days,
                unused_days=unused_days,
            )

    try:
        pruned = asyncio.run(run())
    except ProxyError as exc:
        print(f"imapjmap: cache {cfg.cache.url or cfg.cache.path}: {exc}", file=sys.stderr)
        return FAILED
    print(
        f"purged {pruned.change_rows} change-log rows older than"
        f" {cfg.cache.changes_retention_days} days"
    )
    if unused_days is not None:
        print(
            f"dropped {len(pruned.accounts)} accounts with no login for {unused_days:g} days"
            + (f": {', '.join(pruned.accounts)}" if pruned.accounts else "")
        )
    return OK


def reset(cfg: Config, *, user: str | None, force: bool) -> int:
    if _missing(cfg) or _refused(cfg, force):
        return FAILED

    async def run() -> int:
        async with _cache(cfg) as store:
            return await cache.reset(store, user)

    try:
        dropped = asyncio.run(run())
    except ProxyError as exc:
        print(f"imapjmap: cache {cfg.cache.url or cfg.cache.path}: {exc}", file=sys.stderr)
        return FAILED
    if user is not None and dropped == 0:
        print(f"imapjmap: no account for {user!r} in the cache", file=sys.stderr)
        return FAILED
    print(f"dropped {dropped} accounts" + (f" of {user!r}" if user is not None else ""))
    return OK


class _Bar:
    """tqdm's bar on stderr: messages cached / on the server, rate and time left."""

    def __init__(self, username: str) -> None:
        from tqdm import tqdm  # the one command that draws a bar loads it

        self._bar = tqdm(total=0, unit="msg", desc=username, file=sys.stderr, dynamic_ncols=True)

    def show(self, done: int, total: int) -> None:
        self._bar.total = total
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        self._bar.close()


def sync(cfg: Config, *, user: str, password_file: str | None, stall: float = STALL) -> int:
    try:
        password = _password(user, password_file)
    except (OSError, EOFError, UnicodeError) as exc:
        print(f"imapjmap: cannot read the password: {exc}", file=sys.stderr)
        return USAGE
    if not running.answers(cfg):
        host, port = running.address(cfg)
        print(
            f"imapjmap: no proxy answers at {host}:{port}: start it (imapjmap serve)"
            " first; sync asks the running proxy to fill the cache",
            file=sys.stderr,
        )
        return FAILED
    try:
        outcome = asyncio.run(fill.fill(cfg, user, password, _Bar(user), stall=stall))
    except fill.Failed as exc:
        print(f"imapjmap: sync {user}: {exc}", file=sys.stderr)
        return FAILED
    print(f"{user}: {outcome.cached} messages cached, in {outcome.seconds:.1f} s")
    return OK


def _password(user: str, path: str | None) -> str:
    """From the file (its first line), or asked without echo: never from argv."""
    if path is not None:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        return lines[0] if lines else ""
    return getpass.getpass(f"IMAP password for {user}: ")
