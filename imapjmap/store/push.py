"""Typed reads and writes of PushSubscriptions (schema v4 ``push_subscriptions``; RFC 8620 §7.2).

Rule 1: like every store module, each function that serves a client filters on
        ``account_id``: a subscription is only ever seen through the account that made it.
        :func:`active` (all accounts) is for the delivery side at start-up only.
Rule 2: times are Unix seconds passed in by the caller (``now``), so tests control the clock.
Rule 3: a destroyed subscription is deleted, URL and keys included (RFC 8620 §7.2: "securely
        erase the URL and encryption keys ... as soon as possible").
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from imapjmap.store.db import Tx


@dataclass(frozen=True, slots=True)
class PushSubscriptionRow:
    account_id: str
    id: str
    device_client_id: str
    url: str
    keys: dict[str, str] | None
    verification_code: str  # the code the server sent (secret until the client echoes it)
    verified: bool
    expires: float
    types: tuple[str, ...] | None  # None: every type
    created_at: float


_COLUMNS = (
    "account_id, id, device_client_id, url, keys, verification_code, verified, expires,"
    " types, created_at"
)


def _row(found: Sequence[Any]) -> PushSubscriptionRow:
    types = json.loads(found[8]) if found[8] is not None else None
    return PushSubscriptionRow(
        account_id=found[0],
        id=found[1],
        device_client_id=found[2],
        url=found[3],
        keys=json.loads(found[4]) if found[4] is not None else None,
        verification_code=found[5],
        verified=bool(found[6]),
        expires=float(found[7]),
        types=tuple(types) if types is not None else None,
        created_at=float(found[9]),
    )


def _types_json(types: tuple[str, ...] | None) -> str | None:
    return json.dumps(list(types)) if types is not None else None


def put(tx: Tx, row: PushSubscriptionRow) -> None:
    """Insert a new subscription, or overwrite every column of an existing one."""
    tx.execute(
        f"INSERT OR REPLACE INTO push_subscriptions ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (
            row.account_id,
            row.id,
            row.device_client_id,
            row.url,
            json.dumps(row.keys) if row.keys is not None else None,
            row.verification_code,
            int(row.verified),
            row.expires,
            _types_json(row.types),
            row.created_at,
        ),
    )


def get(tx: Tx, account_id: str, subscription_id: str) -> PushSubscriptionRow | None:
    found = tx.one(
        f"SELECT {_COLUMNS} FROM push_subscriptions WHERE account_id = ? AND id = ?",
        (account_id, subscription_id),
    )
    return None if found is None else _row(found)


def of_account(tx: Tx, account_id: str) -> list[PushSubscriptionRow]:
    """Every subscription of the account, oldest first (expired ones included)."""
    rows = tx.all(
        f"SELECT {_COLUMNS} FROM push_subscriptions WHERE account_id = ? ORDER BY created_at, id",
        (account_id,),
    )
    return [_row(r) for r in rows]


def count(tx: Tx, account_id: str) -> int:
    return int(
        tx.scalar("SELECT count(*) FROM push_subscriptions WHERE account_id = ?", (account_id,))
    )


def delete(tx: Tx, account_id: str, subscription_id: str) -> bool:
    """Destroy a subscription; False when the account has none with that id."""
    changed = tx.execute(
        "DELETE FROM push_subscriptions WHERE account_id = ? AND id = ?",
        (account_id, subscription_id),
    )
    return changed == 1


def active(tx: Tx, *, now: float) -> list[PushSubscriptionRow]:
    """Every verified, unexpired subscription of every account (delivery start-up only)."""
    rows = tx.all(
        f"SELECT {_COLUMNS} FROM push_subscriptions WHERE verified = 1 AND expires > ?"
        " ORDER BY account_id, created_at",
        (now,),
    )
    return [_row(r) for r in rows]


def purge_expired(tx: Tx, *, before: float) -> int:
    """Delete subscriptions that expired before ``before``; returns how many."""
    return tx.execute("DELETE FROM push_subscriptions WHERE expires < ?", (before,))
