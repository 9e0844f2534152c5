"""``imapjmap accounts``' rendering of the cache's account summaries (pure)."""

from __future__ import annotations

import pytest

from imapjmap.admin import accounts, fill
from imapjmap.config import Config, parse_config
from imapjmap.store.queries import AccountSummary

T = 1_780_000_000.0  # 2026-05-28 20:26:40 UTC
CFG = Config()
# alice@example.net's domain is an entry's; no default upstream: plain "bob" has none
NET = parse_config({"upstreams": [{"domains": ["example.net"], "imap": {"host": "imap.n"}}]})


def _summary(selectable: int, synced: int, *, last: float | None = T) -> AccountSummary:
    return AccountSummary("a1", "alice", T - 60, last, 12, selectable + 1, selectable, synced)


@pytest.mark.parametrize(
    ("selectable", "synced", "state"),
    [(0, 0, "not started"), (3, 0, "in progress"), (3, 2, "in progress"), (3, 3, "complete")],
)
def test_sync_state(selectable: int, synced: int, state: str) -> None:
    assert accounts.sync_state(_summary(selectable, synced)) == state


def test_table_aligns_columns_and_says_unknown_for_an_unrecorded_login() -> None:
    rows = [_summary(3, 3), AccountSummary("b-longer", "bob", None, None, 1500, 2, 1, 0)]
    assert accounts.table(rows, CFG).splitlines() == [
        "ACCOUNT   USER   UPSTREAM  LAST LOGIN (UTC)  EMAILS  MAILBOXES  SYNCED  FIRST SYNC",
        "a1        alice  default   2026-05-28 20:26      12          4     3/3  complete",
        "b-longer  bob    default   unknown             1500          2     0/1  in progress",
    ]


def test_table_names_each_account_s_upstream_or_none() -> None:
    rows = [
        AccountSummary("a1", "alice@example.net", None, T, 1, 2, 1, 1),
        AccountSummary("b2", "bob", None, T, 1, 2, 1, 1),
    ]
    upstreams = [line.split()[2] for line in accounts.table(rows, NET).splitlines()]
    assert upstreams == ["UPSTREAM", "example.net", "-"]


def test_table_without_accounts() -> None:
    assert accounts.table([], CFG) == "no accounts in the cache\n"


def test_json_keeps_stable_keys_and_utc_times() -> None:
    (row,) = accounts.as_json([_summary(2, 2, last=None)], CFG)
    assert row == {
        "account_id": "a1",
        "username": "alice",
        "upstream": "default",
        "last_login": None,
        "created": "2026-05-28T20:25:40+00:00",
        "emails": 12,
        "mailboxes": 3,
        "mailboxes_listed": 2,
        "mailboxes_synced": 2,
        "first_sync_complete": True,
    }


class _NoBar:
    def show(self, done: int, total: int) -> None:
        raise AssertionError("nothing to show")

    def close(self) -> None:
        pass


async def test_sync_of_a_login_no_upstream_serves_fails_before_asking_anyone() -> None:
    with pytest.raises(fill.Failed, match="no upstream serves this login's domain"):
        await fill.fill(NET, "alice@example.org", "secret", _NoBar(), stall=1.0)
