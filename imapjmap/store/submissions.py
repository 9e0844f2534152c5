"""Typed reads and writes of the Identity and EmailSubmission rows (schema v3).

Like :mod:`imapjmap.store.queries`, every function takes a :class:`Tx` and an account id and
touches only that account's rows; callers compose them inside ONE ``store.run`` and take
the transaction's seq with :func:`~imapjmap.store.queries.next_seq` for the JMAP types they
change (:data:`IDENTITY_TYPE`, :data:`SUBMISSION_TYPE`).  JSON columns (``reply_to``,
``bcc``, ``envelope``, ``delivery_status``) hold JMAP values as they are shown to clients.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from imapjmap.errors import CacheCorrupt
from imapjmap.store import queries as q
from imapjmap.store.db import Tx

IDENTITY_TYPE: Final = "Identity"
SUBMISSION_TYPE: Final = "EmailSubmission"
# The smtpReply of every recipient of a submission stored before its SMTP transaction:
# until the server's answer replaces it, nobody knows whether the mail went out.
UNSENT_REPLY: Final = "(no reply: the send was interrupted or is in progress)"


@dataclass(frozen=True, slots=True)
class IdentityRow:
    account_id: str
    id: str
    email: str
    name: str = ""
    reply_to: list[dict[str, Any]] | None = None  # EmailAddress[] as JMAP shows it
    bcc: list[dict[str, Any]] | None = None
    text_signature: str = ""
    html_signature: str = ""
    may_delete: bool = True
    from_config: bool = False
    created_seq: int = 0
    updated_seq: int = 0
    destroyed_seq: int | None = None


@dataclass(frozen=True, slots=True)
class SubmissionRow:
    account_id: str
    id: str
    identity_id: str
    email_id: str
    thread_id: str
    envelope: dict[str, Any]  # {mailFrom: Address, rcptTo: Address[]}
    send_at: int  # Unix seconds
    undo_status: str  # pending | final | canceled
    delivery_status: dict[str, Any] | None = None  # address -> DeliveryStatus
    created_seq: int = 0
    updated_seq: int = 0
    destroyed_seq: int | None = None


_IDENTITY_COLUMNS: Final = (
    "account_id, id, email, name, reply_to, bcc, text_signature, html_signature, may_delete,"
    " from_config, created_seq, updated_seq, destroyed_seq"
)
_SUBMISSION_COLUMNS: Final = (
    "account_id, id, identity_id, email_id, thread_id, envelope, send_at, undo_status,"
    " delivery_status, created_seq, updated_seq, destroyed_seq"
)


def _json(text: str | None, what: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CacheCorrupt(f"{what}: malformed JSON") from exc


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"))


def _identity_from(v: Sequence[Any]) -> IdentityRow:
    what = f"identities row {v[1]!r}"
    return IdentityRow(
        account_id=v[0],
        id=v[1],
        email=v[2],
        name=v[3],
        reply_to=_json(v[4], what),
        bcc=_json(v[5], what),
        text_signature=v[6],
        html_signature=v[7],
        may_delete=bool(v[8]),
        from_config=bool(v[9]),
        created_seq=v[10],
        updated_seq=v[11],
        destroyed_seq=v[12],
    )


def _submission_from(v: Sequence[Any]) -> SubmissionRow:
    what = f"submissions row {v[1]!r}"
    envelope = _json(v[5], what)
    if not isinstance(envelope, dict):
        raise CacheCorrupt(f"{what}: the envelope is not an object")
    return SubmissionRow(
        account_id=v[0],
        id=v[1],
        identity_id=v[2],
        email_id=v[3],
        thread_id=v[4],
        envelope=envelope,
        send_at=v[6],
        undo_status=v[7],
        delivery_status=_json(v[8], what),
        created_seq=v[9],
        updated_seq=v[10],
        destroyed_seq=v[11],
    )


# --- identities ----------------------------------------------------------------------------


def live_identities(tx: Tx, account_id: str) -> list[IdentityRow]:
    """The account's identities, configured ones first, then by creation."""
    rows = tx.all(
        f"SELECT {_IDENTITY_COLUMNS} FROM identities WHERE account_id = ?"
        " AND destroyed_seq IS NULL ORDER BY from_config DESC, created_seq, id",
        (account_id,),
    )
    return [_identity_from(row) for row in rows]


def identity(tx: Tx, account_id: str, identity_id: str) -> IdentityRow | None:
    row = tx.one(
        f"SELECT {_IDENTITY_COLUMNS} FROM identities WHERE account_id = ? AND id = ?"
        " AND destroyed_seq IS NULL",
        (account_id, identity_id),
    )
    return None if row is None else _identity_from(row)


def any_identity(tx: Tx, account_id: str, identity_id: str) -> IdentityRow | None:
    """The row with this id, a tombstone too (a configured identity may come back)."""
    row = tx.one(
        f"SELECT {_IDENTITY_COLUMNS} FROM identities WHERE account_id = ? AND id = ?",
        (account_id, identity_id),
    )
    return None if row is None else _identity_from(row)


def _identity_values(row: IdentityRow) -> tuple[Any, ...]:
    return (
        row.account_id,
        row.id,
        row.email,
        row.name,
        _dump(row.reply_to),
        _dump(row.bcc),
        row.text_signature,
        row.html_signature,
        int(row.may_delete),
        int(row.from_config),
    )


def put_identity(tx: Tx, row: IdentityRow, seq: int) -> None:
    """Insert, or overwrite (a live row, or revive a tombstone with the same id), stamping
    ``updated_seq`` with ``seq`` (and ``created_seq`` for a new or revived row)."""
    tx.execute(
        f"INSERT INTO identities ({_IDENTITY_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,NULL)"
        " ON CONFLICT (account_id, id) DO UPDATE SET email = excluded.email,"
        " name = excluded.name, reply_to = excluded.reply_to, bcc = excluded.bcc,"
        " text_signature = excluded.text_signature, html_signature = excluded.html_signature,"
        " may_delete = excluded.may_delete, from_config = excluded.from_config,"
        " created_seq = CASE WHEN identities.destroyed_seq IS NULL THEN identities.created_seq"
        " ELSE excluded.created_seq END,"
        " updated_seq = excluded.updated_seq, destroyed_seq = NULL",
        (*_identity_values(row), seq, seq),
    )


def destroy_identity(tx: Tx, account_id: str, identity_id: str, seq: int) -> bool:
    return q.tombstone(tx, "identities", account_id, identity_id, seq)


# --- submissions ---------------------------------------------------------------------------


def live_submissions(tx: Tx, account_id: str) -> list[SubmissionRow]:
    rows = tx.all(
        f"SELECT {_SUBMISSION_COLUMNS} FROM submissions WHERE account_id = ?"
        " AND destroyed_seq IS NULL ORDER BY created_seq, id",
        (account_id,),
    )
    return [_submission_from(row) for row in rows]


def submissions(tx: Tx, account_id: str, ids: Sequence[str]) -> dict[str, SubmissionRow]:
    """Live rows for ``ids`` (unknown ids are simply absent)."""
    out: dict[str, SubmissionRow] = {}
    for start in range(0, len(ids), 500):
        chunk = list(ids[start : start + 500])
        marks = ", ".join("?" for _ in chunk)
        for row in tx.all(
            f"SELECT {_SUBMISSION_COLUMNS} FROM submissions WHERE account_id = ?"
            f" AND destroyed_seq IS NULL AND id IN ({marks})",
            (account_id, *chunk),
        ):
            found = _submission_from(row)
            out[found.id] = found
    return out


def insert_submission(tx: Tx, row: SubmissionRow, seq: int) -> None:
    tx.execute(
        f"INSERT INTO submissions ({_SUBMISSION_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,NULL)",
        (
            row.account_id,
            row.id,
            row.identity_id,
            row.email_id,
            row.thread_id,
            _dump(row.envelope),
            row.send_at,
            row.undo_status,
            _dump(row.delivery_status),
            seq,
            seq,
        ),
    )


def unsent_submission(tx: Tx, account_id: str, email_id: str) -> SubmissionRow | None:
    """A live submission of ``email_id`` whose send has no outcome yet (see
    :data:`UNSENT_REPLY`): one in flight, or one whose instance died while sending."""
    for row in tx.all(
        f"SELECT {_SUBMISSION_COLUMNS} FROM submissions WHERE account_id = ?"
        " AND email_id = ? AND destroyed_seq IS NULL",
        (account_id, email_id),
    ):
        found = _submission_from(row)
        status = found.delivery_status or {}
        if status and all(s.get("smtpReply") == UNSENT_REPLY for s in status.values()):
            return found
    return None


def set_delivery_status(
    tx: Tx, account_id: str, submission_id: str, status: dict[str, Any], seq: int
) -> None:
    tx.execute(
        "UPDATE submissions SET delivery_status = ?, updated_seq = ?"
        " WHERE account_id = ? AND id = ? AND destroyed_seq IS NULL",
        (_dump(status), seq, account_id, submission_id),
    )


def destroy_submission(tx: Tx, account_id: str, submission_id: str, seq: int) -> bool:
    return q.tombstone(tx, "submissions", account_id, submission_id, seq)
