"""Typed reads and writes of the Email, location and Thread rows (schema v2).

Like :mod:`imapjmap.store.queries`, every function takes a :class:`Tx` and an account id
and touches only that account's rows.  An Email's ``keywords`` and ``mailbox_ids`` are
derived from its live locations by :func:`recompute_email` in the same transaction as the
location change, so the two never disagree.
"""

from __future__ import annotations

import json
import json.scanner
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from imapjmap.store import queries as q
from imapjmap.store.db import Tx

T = TypeVar("T")

EMAIL_TYPE: Final = "Email"
THREAD_TYPE: Final = "Thread"

# IMAP system flags ↔ JMAP keywords (RFC 8621 §4.1.1, EML-KW-01); \Recent is never shown
# and \Deleted hides the location instead of becoming a keyword.
_FLAG_TO_KEYWORD: Final = {
    "\\seen": "$seen",
    "\\flagged": "$flagged",
    "\\answered": "$answered",
    "\\draft": "$draft",
}
KEYWORD_TO_FLAG: Final = {
    "$seen": "\\Seen",
    "$flagged": "\\Flagged",
    "$answered": "\\Answered",
    "$draft": "\\Draft",
}


def keywords_from_flags(flags: Iterable[str]) -> dict[str, bool]:
    """JMAP keywords for IMAP flags: system flags mapped, others lower-cased (EML-KW-01)."""
    out: dict[str, bool] = {}
    for flag in flags:
        lower = flag.lower()
        if lower in ("\\recent", "\\deleted"):
            continue
        keyword = _FLAG_TO_KEYWORD.get(lower)
        if keyword is None:
            if lower.startswith("\\"):
                continue  # an unknown system flag has no keyword
            keyword = lower
        out[keyword] = True
    return out


def flags_from_keywords(keywords: Iterable[str]) -> list[str]:
    """IMAP flags for JMAP keywords (the reverse of :func:`keywords_from_flags`)."""
    return [KEYWORD_TO_FLAG.get(k, k) for k in keywords]


@dataclass(frozen=True, slots=True)
class EmailRow:
    account_id: str
    id: str
    thread_id: str
    size: int
    received_at: int  # Unix seconds
    sent_at: str | None = None
    subject: str | None = None
    sort_subject: str = ""
    sort_from: str = ""
    sort_to: str = ""
    headers: dict[str, Any] = field(default_factory=dict)
    message_ids: list[str] = field(default_factory=list)
    has_attachment: bool = False
    preview: str | None = None
    keywords: dict[str, bool] = field(default_factory=dict)
    mailbox_ids: dict[str, bool] = field(default_factory=dict)
    created_seq: int = 0
    updated_seq: int = 0
    destroyed_seq: int | None = None


@dataclass(frozen=True, slots=True)
class Location:
    mailbox_id: str
    uid: int
    email_id: str
    modseq: int | None
    flags: tuple[str, ...]
    deleted: bool


_EMAIL_COLUMNS: Final = (
    "account_id, id, thread_id, size, received_at, sent_at, subject, sort_subject, sort_from,"
    " sort_to, headers, message_ids, has_attachment, preview, keywords, mailbox_ids,"
    " created_seq, updated_seq, destroyed_seq"
)


# The C scanner of a default JSONDecoder, called directly: json.loads wraps it in Python
# (a whitespace regex before and after, a JSONDecoder.decode call) that costs two to four
# times the scan of these small values, and a page of Emails decodes four per Email.  Only
# for the columns written by this module (no leading white space, nothing after the value).
# (typeshed types the scanner's context as a scanner; CPython reads a decoder's settings)
_SCAN_JSON: Final = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]


def _stored_json(text: str) -> Any:
    return _SCAN_JSON(text, 0)[0]


def _email_from(values: Sequence[Any]) -> EmailRow:
    v = list(values)
    return EmailRow(
        account_id=v[0],
        id=v[1],
        thread_id=v[2],
        size=v[3],
        received_at=v[4],
        sent_at=v[5],
        subject=v[6],
        sort_subject=v[7],
        sort_from=v[8],
        sort_to=v[9],
        headers=_stored_json(v[10]),
        message_ids=_stored_json(v[11]),
        has_attachment=bool(v[12]),
        preview=v[13],
        keywords=_stored_json(v[14]),
        mailbox_ids=_stored_json(v[15]),
        created_seq=v[16],
        updated_seq=v[17],
        destroyed_seq=v[18],
    )


def _json_encoder(*, sort_keys: bool) -> Callable[[Any], str]:
    """``json.dumps`` with default arguments (and ``sort_keys``), for acyclic values: the C
    encoder made once, where ``JSONEncoder.encode`` makes one per call (most of the cost of
    a small value)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return json.JSONEncoder(sort_keys=sort_keys).encode
    encode = make(
        None,  # no circular-reference markers: the values are plain, acyclic JSON
        json.JSONEncoder().default,
        json.encoder.encode_basestring_ascii,
        None,
        ": ",
        ", ",
        sort_keys,
        False,
        True,
    )
    return lambda value: "".join(encode(value, 0))


_JSON: Final = _json_encoder(sort_keys=False)
_JSON_SORTED: Final = _json_encoder(sort_keys=True)


# An Email row as its columns (_EMAIL_COLUMNS, in order), JSON columns encoded: what a
# first sync's parsing workers send back, so that the writer does no per-row encoding.
EmailValues = tuple[Any, ...]
THREAD_COLUMN: Final = 2  # thread_id: decided by the writer (threading reads the cache)
FILLED_BY_WRITER: Final = 15  # mailbox_ids, created_seq, updated_seq, destroyed_seq follow


def email_values(row: EmailRow) -> EmailValues:
    """The row's columns as :func:`insert_email_values` takes them."""
    return (
        row.account_id,
        row.id,
        row.thread_id,
        row.size,
        row.received_at,
        row.sent_at,
        row.subject,
        row.sort_subject,
        row.sort_from,
        row.sort_to,
        _JSON_SORTED(row.headers),
        _JSON(row.message_ids),
        int(row.has_attachment),
        row.preview,
        _JSON_SORTED(row.keywords),
        _JSON_SORTED(row.mailbox_ids),
        row.created_seq,
        row.updated_seq,
        row.destroyed_seq,
    )


# SQLite's lowest default limit of parameters in one statement (SQLITE_MAX_VARIABLE_NUMBER
# before 3.32); a multi-row write fills its statements up to it
_MAX_PARAMS: Final = 999


def _write_rows(tx: Tx, head: str, rows: Sequence[Sequence[Any]], tail: str = "") -> None:
    """``head VALUES (...), (...), ... tail`` over ``rows``, as few statements as the
    parameter limit allows; the same as one statement per row, in order.

    Why not ``executemany``: the sqlite3 module lets go of the GIL around every step, once
    a row, and while the event loop is busy parsing each re-acquisition can wait for the
    interpreter's switch interval (5 ms); here that happens once a statement.
    """
    if not rows:
        return
    width = len(rows[0])
    per = max(_MAX_PARAMS // width, 1)
    one = "(" + ",".join("?" * width) + ")"
    for start in range(0, len(rows), per):
        chunk = rows[start : start + per]
        tx.execute(
            f"{head} VALUES {','.join([one] * len(chunk))}{tail}",
            [value for row in chunk for value in row],
        )


def email(tx: Tx, account_id: str, email_id: str, *, live: bool = True) -> EmailRow | None:
    sql = f"SELECT {_EMAIL_COLUMNS} FROM emails WHERE account_id = ? AND id = ?"
    if live:
        sql += " AND destroyed_seq IS NULL"
    found = tx.one(sql, (account_id, email_id))
    return _email_from(found) if found else None


def email_exists(tx: Tx, account_id: str, email_id: str) -> bool:
    """Whether a row (live or tombstone) has this id."""
    return (
        tx.one("SELECT 1 FROM emails WHERE account_id = ? AND id = ?", (account_id, email_id))
        is not None
    )


def emails(tx: Tx, account_id: str, ids: Sequence[str]) -> dict[str, EmailRow]:
    """Live rows for ``ids`` (unknown ids are simply absent)."""
    return {values[1]: _email_from(values) for values in _live_values(tx, account_id, ids)}


def _live_values(tx: Tx, account_id: str, ids: Sequence[str]) -> Iterator[tuple[Any, ...]]:
    for start in range(0, len(ids), 500):
        chunk = list(ids[start : start + 500])
        marks = ",".join("?" * len(chunk))
        rows = tx.all(
            f"SELECT {_EMAIL_COLUMNS} FROM emails WHERE account_id = ? AND id IN ({marks})"
            " AND destroyed_seq IS NULL",
            (account_id, *chunk),
        )
        for number, values in enumerate(rows, 1):
            yield values
            if number % 64 == 0:
                tx.check()  # decoding a thousand rows' JSON holds the GIL: let others in


def emails_unless_known(
    tx: Tx, account_id: str, ids: Sequence[str], known: Callable[[str, int], T | None]
) -> dict[str, EmailRow | T]:
    """:func:`emails`, except that a row for which ``known(id, updated_seq)`` gives a value
    is not decoded: that value stands for it.  Every change to a row's columns but
    ``preview`` takes a new ``updated_seq``, so a caller that built something from a row
    can tell by that number that the row is still the same (``preview`` only ever goes
    from null to the text computed for it)."""
    out: dict[str, EmailRow | T] = {}
    unknown: list[str] = []
    # the numbers first, the whole rows only of the ids not known: a repeated Email/get of
    # a thousand ids then decodes no row at all (it held a reader's GIL for milliseconds)
    for start in range(0, len(ids), 500):
        chunk = list(ids[start : start + 500])
        marks = ",".join("?" * len(chunk))
        for email_id, updated_seq in tx.all(
            f"SELECT id, updated_seq FROM emails WHERE account_id = ? AND id IN ({marks})"
            " AND destroyed_seq IS NULL",
            (account_id, *chunk),
        ):
            value = known(email_id, updated_seq)
            if value is None:
                unknown.append(email_id)
            else:
                out[email_id] = value
    out.update(emails(tx, account_id, unknown))
    return out


def live_emails(tx: Tx, account_id: str) -> list[EmailRow]:
    return [
        _email_from(v)
        for v in tx.all(
            f"SELECT {_EMAIL_COLUMNS} FROM emails WHERE account_id = ? AND destroyed_seq IS NULL",
            (account_id,),
        )
    ]


def insert_email(tx: Tx, row: EmailRow) -> None:
    """Insert a new Email, or bring a tombstoned one back to life (same id, new seqs)."""
    tx.execute(
        "DELETE FROM emails WHERE account_id = ? AND id = ? AND destroyed_seq IS NOT NULL",
        (row.account_id, row.id),
    )
    marks = ",".join("?" * 19)
    tx.execute(f"INSERT INTO emails ({_EMAIL_COLUMNS}) VALUES ({marks})", email_values(row))


def insert_new_emails(tx: Tx, rows: Iterable[EmailRow]) -> None:
    """Insert Emails whose ids have no row at all (neither live nor a tombstone)."""
    insert_email_values(tx, [email_values(r) for r in rows])


def insert_email_values(tx: Tx, rows: Sequence[EmailValues]) -> None:
    """:func:`insert_new_emails` of rows already in column form (:func:`email_values`)."""
    _write_rows(tx, f"INSERT INTO emails ({_EMAIL_COLUMNS})", rows)


def mailbox_ids_value(mailbox_ids: dict[str, bool]) -> str:
    """The ``mailbox_ids`` column of :func:`email_values` for these mailboxIds."""
    return _JSON_SORTED(mailbox_ids)


def set_email_fields(
    tx: Tx, account_id: str, email_id: str, seq: int | None, **fields: Any
) -> None:
    """Update some columns; with ``seq`` the change is visible (Email/changes)."""
    encoded = {
        k: json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v
        for k, v in fields.items()
    }
    if seq is not None:
        encoded["updated_seq"] = seq
    assignments = ", ".join(f"{k} = ?" for k in encoded)
    tx.execute(
        f"UPDATE emails SET {assignments} WHERE account_id = ? AND id = ?",
        (*encoded.values(), account_id, email_id),
    )


def destroy_email(tx: Tx, account_id: str, email_id: str, seq: int) -> bool:
    return q.tombstone(tx, "emails", account_id, email_id, seq)


# -- locations -------------------------------------------------------------------------------


def _location_from(v: Sequence[Any]) -> Location:
    return Location(v[0], v[1], v[2], v[3], tuple(v[4].split()) if v[4] else (), bool(v[5]))


def locations_of_mailbox(tx: Tx, account_id: str, mailbox_id: str) -> dict[int, Location]:
    rows = tx.all(
        "SELECT mailbox_id, uid, email_id, modseq, flags, deleted FROM locations"
        " WHERE account_id = ? AND mailbox_id = ?",
        (account_id, mailbox_id),
    )
    return {r[1]: _location_from(r) for r in rows}


def locations_at(
    tx: Tx, account_id: str, mailbox_id: str, uids: Iterable[int]
) -> dict[int, Location]:
    """The locations of a mailbox at ``uids`` (absent ones are simply missing): the part of
    :func:`locations_of_mailbox` that a few expunges or flag changes need."""
    wanted = sorted(set(uids))
    out: dict[int, Location] = {}
    per = _MAX_PARAMS - 2
    for start in range(0, len(wanted), per):
        chunk = wanted[start : start + per]
        marks = ",".join("?" * len(chunk))
        for r in tx.all(
            "SELECT mailbox_id, uid, email_id, modseq, flags, deleted FROM locations"
            f" WHERE account_id = ? AND mailbox_id = ? AND uid IN ({marks})",
            (account_id, mailbox_id, *chunk),
        ):
            out[r[1]] = _location_from(r)
    return out


def locations_of_email(tx: Tx, account_id: str, email_id: str) -> list[Location]:
    rows = tx.all(
        "SELECT mailbox_id, uid, email_id, modseq, flags, deleted FROM locations"
        " INDEXED BY locations_email WHERE account_id = ? AND email_id = ?",
        (account_id, email_id),
    )
    # sorted here: an ORDER BY made SQLite walk the primary key over the whole account
    return sorted((_location_from(r) for r in rows), key=lambda loc: (loc.mailbox_id, loc.uid))


def emails_and_locations(
    tx: Tx, account_id: str, ids: Sequence[str]
) -> tuple[dict[str, EmailRow], dict[str, list[Location]]]:
    """The rows of ``ids``, tombstones included (unknown ids absent), and the locations of
    each, sorted as :func:`locations_of_email` sorts them: two statements a chunk of 500,
    where a statement per Email is a round trip per Email on PostgreSQL."""
    rows: dict[str, EmailRow] = {}
    where: dict[str, list[Location]] = {}
    for start in range(0, len(ids), 500):
        chunk = list(ids[start : start + 500])
        marks = ",".join("?" * len(chunk))
        found, located = tx.all_of(
            (
                f"SELECT {_EMAIL_COLUMNS} FROM emails WHERE account_id = ? AND id IN ({marks})",
                (account_id, *chunk),
            ),
            (
                "SELECT mailbox_id, uid, email_id, modseq, flags, deleted FROM locations"
                f" INDEXED BY locations_email WHERE account_id = ? AND email_id IN ({marks})",
                (account_id, *chunk),
            ),
        )
        for values in found:
            rows[values[1]] = _email_from(values)
        for values in located:
            where.setdefault(values[2], []).append(_location_from(values))
    for locations in where.values():
        locations.sort(key=lambda loc: (loc.mailbox_id, loc.uid))
    return rows, where


def put_location(tx: Tx, account_id: str, loc: Location) -> None:
    put_locations(tx, account_id, (loc,))


def put_locations(tx: Tx, account_id: str, locations: Iterable[Location]) -> None:
    """:func:`put_location` of many (the last of those at one mailbox and UID wins)."""
    # one row per key: one statement may not replace a row twice in PostgreSQL
    last = {(loc.mailbox_id, loc.uid): loc for loc in locations}
    _write_rows(
        tx,
        "INSERT OR REPLACE INTO locations (account_id, mailbox_id, uid, email_id, modseq,"
        " flags, deleted)",
        [
            (
                account_id,
                loc.mailbox_id,
                loc.uid,
                loc.email_id,
                loc.modseq,
                " ".join(loc.flags),
                int(loc.deleted),
            )
            for loc in last.values()
        ],
    )


def remove_location(tx: Tx, account_id: str, mailbox_id: str, uid: int) -> None:
    tx.execute(
        "DELETE FROM locations WHERE account_id = ? AND mailbox_id = ? AND uid = ?",
        (account_id, mailbox_id, uid),
    )


def remove_mailbox_locations(tx: Tx, account_id: str, mailbox_id: str) -> list[str]:
    """Drop every location of a mailbox; returns the email ids that were there."""
    ids = [
        r[0]
        for r in tx.all(
            "SELECT DISTINCT email_id FROM locations WHERE account_id = ? AND mailbox_id = ?",
            (account_id, mailbox_id),
        )
    ]
    tx.execute(
        "DELETE FROM locations WHERE account_id = ? AND mailbox_id = ?", (account_id, mailbox_id)
    )
    return ids


def email_view(locations: Sequence[Location]) -> tuple[dict[str, bool], dict[str, bool]]:
    """(mailboxIds, keywords) of an Email from its locations; \\Deleted ones are hidden.

    Keywords are the union over the visible copies: a message flagged in any mailbox is
    flagged (writes set flags on every copy, so copies only differ after another client
    touched one of them).
    """
    mailbox_ids: dict[str, bool] = {}
    keywords: dict[str, bool] = {}
    for loc in locations:
        if loc.deleted:
            continue
        mailbox_ids[loc.mailbox_id] = True
        keywords.update(keywords_from_flags(loc.flags))
    return mailbox_ids, dict(sorted(keywords.items()))


def recompute_email(
    tx: Tx,
    account_id: str,
    email_id: str,
    seq: int,
    *,
    read: tuple[EmailRow | None, Sequence[Location]] | None = None,
) -> str:
    """Re-derive an Email from its locations after they changed; ``read``: its row (live or
    tombstone) and its locations as they are now, when the caller has read them already.

    Returns what happened: ``"destroyed"`` (no visible location left), ``"updated"``,
    ``"revived"`` (a tombstone became visible again) or ``"same"``.
    """
    if read is None:
        read = (
            email(tx, account_id, email_id, live=False),
            locations_of_email(tx, account_id, email_id),
        )
    row, locations = read
    if row is None:
        return "same"
    mailbox_ids, keywords = email_view(locations)
    if not mailbox_ids:
        if row.destroyed_seq is None:
            destroy_email(tx, account_id, email_id, seq)
            return "destroyed"
        return "same"
    if row.destroyed_seq is not None:
        tx.execute(
            "UPDATE emails SET destroyed_seq = NULL, created_seq = ?, updated_seq = ?,"
            " mailbox_ids = ?, keywords = ? WHERE account_id = ? AND id = ?",
            (
                seq,
                seq,
                json.dumps(mailbox_ids, sort_keys=True),
                json.dumps(keywords, sort_keys=True),
                account_id,
                email_id,
            ),
        )
        return "revived"
    if mailbox_ids == row.mailbox_ids and keywords == row.keywords:
        return "same"
    set_email_fields(tx, account_id, email_id, seq, mailbox_ids=mailbox_ids, keywords=keywords)
    return "updated"


# -- threads ---------------------------------------------------------------------------------


def thread_email_ids(tx: Tx, account_id: str, thread_id: str) -> list[str]:
    """The thread's live emails, oldest first (RFC 8621 §3: sorted by receivedAt)."""
    return [
        r[0]
        for r in tx.all(
            "SELECT id FROM emails WHERE account_id = ? AND thread_id = ? AND destroyed_seq IS NULL"
            " ORDER BY received_at, id",
            (account_id, thread_id),
        )
    ]


def touch_thread(tx: Tx, account_id: str, thread_id: str, seq: int) -> None:
    """Mark a thread changed: create it, update it, or tombstone it when it became empty."""
    alive = tx.scalar(
        "SELECT COUNT(*) FROM emails WHERE account_id = ? AND thread_id = ?"
        " AND destroyed_seq IS NULL",
        (account_id, thread_id),
    )
    existing = tx.one(
        "SELECT destroyed_seq FROM threads WHERE account_id = ? AND id = ?", (account_id, thread_id)
    )
    if not alive:
        if existing is not None and existing[0] is None:
            q.tombstone(tx, "threads", account_id, thread_id, seq)
        return
    if existing is None:
        tx.execute(
            "INSERT INTO threads (account_id, id, created_seq, updated_seq) VALUES (?, ?, ?, ?)",
            (account_id, thread_id, seq, seq),
        )
    elif existing[0] is not None:
        tx.execute(
            "UPDATE threads SET destroyed_seq = NULL, created_seq = ?, updated_seq = ?"
            " WHERE account_id = ? AND id = ?",
            (seq, seq, account_id, thread_id),
        )
    else:
        tx.execute(
            "UPDATE threads SET updated_seq = ? WHERE account_id = ? AND id = ?",
            (seq, account_id, thread_id),
        )


def grow_thread(tx: Tx, account_id: str, thread_id: str, seq: int) -> None:
    """A thread gained emails (none lost): create it, revive it, or mark it updated."""
    tx.execute(
        "INSERT INTO threads (account_id, id, created_seq, updated_seq) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (account_id, id) DO UPDATE SET updated_seq = excluded.updated_seq,"
        " created_seq = CASE WHEN threads.destroyed_seq IS NULL THEN threads.created_seq"
        " ELSE excluded.created_seq END, destroyed_seq = NULL",
        (account_id, thread_id, seq, seq),
    )


def grow_threads(tx: Tx, account_id: str, thread_ids: Iterable[str], seq: int) -> None:
    """:func:`grow_thread` of many."""
    _write_rows(
        tx,
        "INSERT INTO threads (account_id, id, created_seq, updated_seq)",
        # once each: one statement may not touch a row twice in PostgreSQL
        [(account_id, thread_id, seq, seq) for thread_id in dict.fromkeys(thread_ids)],
        " ON CONFLICT (account_id, id) DO UPDATE SET updated_seq = excluded.updated_seq,"
        " created_seq = CASE WHEN threads.destroyed_seq IS NULL THEN threads.created_seq"
        " ELSE excluded.created_seq END, destroyed_seq = NULL",
    )


def thread_refs(tx: Tx, account_id: str, message_ids: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Message-ID → (thread id, base subject) of those of ``message_ids`` that are known."""
    ids = list(message_ids)
    out: dict[str, tuple[str, str]] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for r in tx.all(
            f"SELECT message_id, thread_id, base_subject FROM thread_refs WHERE account_id = ?"
            f" AND message_id IN ({marks})",
            (account_id, *chunk),
        ):
            out[r[0]] = (r[1], r[2])
    return out


def live_ids_with_message_id(tx: Tx, account_id: str, message_id: str) -> list[str]:
    """The live Emails whose Message-ID header names ``message_id`` (no brackets).

    For the rare look-up of one id where :func:`thread_refs` knows nothing (the server
    threads the mail itself): a scan of the account's Emails, the stored JSON being ASCII
    (``ensure_ascii``) so that the quoted id is found as it was written.
    """
    quoted = json.dumps(message_id)
    pattern = "%" + quoted.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    rows = tx.all(
        "SELECT id, message_ids FROM emails WHERE account_id = ? AND destroyed_seq IS NULL"
        " AND message_ids LIKE ? ESCAPE '\\'",
        (account_id, pattern),
    )
    return [str(r[0]) for r in rows if message_id in _stored_json(r[1])]


def set_thread_refs(tx: Tx, account_id: str, refs: Iterable[tuple[str, str, str]]) -> None:
    """Write (Message-ID, thread id, base subject) rows, replacing those of the same ids
    (the last of one id wins)."""
    last = {m: (thread_id, base) for m, thread_id, base in refs}  # one row per key, as above
    _write_rows(
        tx,
        "INSERT OR REPLACE INTO thread_refs (account_id, message_id, thread_id, base_subject)",
        [(account_id, m, thread_id, base) for m, (thread_id, base) in last.items()],
    )


def thread_for_refs(tx: Tx, account_id: str, message_ids: Sequence[str]) -> list[tuple[str, str]]:
    """(thread id, base subject) of every known Message-ID among ``message_ids``."""
    out: list[tuple[str, str]] = []
    for start in range(0, len(message_ids), 500):
        chunk = list(message_ids[start : start + 500])
        marks = ",".join("?" * len(chunk))
        out += [
            (r[0], r[1])
            for r in tx.all(
                f"SELECT thread_id, base_subject FROM thread_refs WHERE account_id = ?"
                f" AND message_id IN ({marks})",
                (account_id, *chunk),
            )
        ]
    return out


def add_thread_refs(
    tx: Tx, account_id: str, thread_id: str, message_ids: Iterable[str], base_subject: str
) -> None:
    tx.executemany(
        "INSERT OR REPLACE INTO thread_refs (account_id, message_id, thread_id, base_subject)"
        " VALUES (?, ?, ?, ?)",
        [(account_id, m, thread_id, base_subject) for m in message_ids],
    )


def merge_threads(tx: Tx, account_id: str, keep: str, others: Iterable[str], seq: int) -> list[str]:
    """Move every email of ``others`` into ``keep``; returns the moved email ids."""
    moved: list[str] = []
    for other in others:
        ids = [
            r[0]
            for r in tx.all(
                "SELECT id FROM emails WHERE account_id = ? AND thread_id = ?", (account_id, other)
            )
        ]
        tx.execute(
            "UPDATE emails SET thread_id = ?, updated_seq = CASE WHEN destroyed_seq IS"
            " NULL THEN ? ELSE updated_seq END WHERE account_id = ? AND thread_id = ?",
            (keep, seq, account_id, other),
        )
        tx.execute(
            "UPDATE thread_refs SET thread_id = ? WHERE account_id = ? AND thread_id = ?",
            (keep, account_id, other),
        )
        touch_thread(tx, account_id, other, seq)
        moved += ids
    touch_thread(tx, account_id, keep, seq)
    return moved


# -- per-mailbox sync cursor and counts --------------------------------------------------------


def synced_cursors(
    tx: Tx, account_id: str
) -> dict[str, tuple[int | None, int | None, int | None, int | None]]:
    """mailbox id → (uidvalidity, uidnext, modseq, messages) that its email rows reflect;
    mailboxes never synced are absent."""
    rows = tx.all(
        "SELECT id, synced_uidvalidity, synced_uidnext, synced_modseq, synced_messages"
        " FROM mailboxes WHERE account_id = ? AND destroyed_seq IS NULL"
        " AND synced_uidvalidity IS NOT NULL",
        (account_id,),
    )
    return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}


def set_synced_cursor(
    tx: Tx,
    account_id: str,
    mailbox_id: str,
    uidvalidity: int | None,
    uidnext: int | None,
    modseq: int | None,
    messages: int | None,
) -> None:
    tx.execute(
        "UPDATE mailboxes SET synced_uidvalidity = ?, synced_uidnext = ?, synced_modseq = ?,"
        " synced_messages = ? WHERE account_id = ? AND id = ?",
        (uidvalidity, uidnext, modseq, messages, account_id, mailbox_id),
    )


def forget_mailbox(tx: Tx, account_id: str, mailbox_id: str) -> list[str]:
    """A mailbox is gone: drop its locations; returns the email ids that were in it."""
    return remove_mailbox_locations(tx, account_id, mailbox_id)


def dead_mailboxes_with_locations(tx: Tx, account_id: str) -> list[str]:
    """Destroyed mailboxes that still have locations."""
    return [
        r[0]
        for r in tx.all(
            "SELECT id FROM mailboxes m WHERE account_id = ? AND destroyed_seq IS NOT NULL"
            " AND EXISTS (SELECT 1 FROM locations l WHERE l.account_id = m.account_id"
            " AND l.mailbox_id = m.id)",
            (account_id,),
        )
    ]


def mailboxes_of(tx: Tx, account_id: str, email_ids: Iterable[str]) -> set[str]:
    ids = list(email_ids)
    out: set[str] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        out.update(
            r[0]
            for r in tx.all(
                f"SELECT DISTINCT mailbox_id FROM locations WHERE account_id = ?"
                f" AND email_id IN ({marks})",
                (account_id, *chunk),
            )
        )
    return out


def existing_ids(tx: Tx, account_id: str, email_ids: Sequence[str]) -> list[str]:
    """Those of ``email_ids`` that have a row (live or tombstone)."""
    out: list[str] = []
    for start in range(0, len(email_ids), 500):
        chunk = list(email_ids[start : start + 500])
        marks = ",".join("?" * len(chunk))
        out += [
            r[0]
            for r in tx.all(
                f"SELECT id FROM emails WHERE account_id = ? AND id IN ({marks})",
                (account_id, *chunk),
            )
        ]
    return out


def mailbox_counts(
    tx: Tx, account_id: str, mailbox_ids: Iterable[str]
) -> dict[str, tuple[int, int, int, int]]:
    """(totalEmails, unreadEmails, totalThreads, unreadThreads) per mailbox (RFC 8621 §2):
    visible copies only; unread = no ``$seen``; a thread is unread in a mailbox when one of
    its emails there is unread."""
    out: dict[str, tuple[int, int, int, int]] = {}
    for mailbox_id in mailbox_ids:
        row = tx.one(_MAILBOX_COUNTS, (account_id, mailbox_id))
        # int(): PostgreSQL's SUM of a COUNT is a numeric
        out[mailbox_id] = (
            (int(row[0]), int(row[1]), int(row[2]), int(row[3])) if row else (0, 0, 0, 0)
        )
    return out


# The visible Emails of the mailbox once each (an Email can have two copies in it), grouped
# by thread: two temporary b-trees, where four COUNT(DISTINCT ...) took four (1.8 against
# 1.1 s of CPU for 100,000 messages, the recount that ends a first sync).  The locations
# drive the join (CROSS JOIN fixes SQLite's order; plain JOIN on PostgreSQL): a small
# mailbox must not scan the account's Emails.
_MAILBOX_COUNTS: Final = (
    "SELECT COALESCE(SUM(n), 0), COALESCE(SUM(u), 0), COUNT(*),"
    " COALESCE(SUM(CASE WHEN u > 0 THEN 1 ELSE 0 END), 0)"
    " FROM (SELECT t, COUNT(*) AS n, SUM(u) AS u FROM ("
    "SELECT DISTINCT e.id, e.thread_id AS t,"
    " CASE WHEN instr(e.keywords, '\"$seen\"') = 0 THEN 1 ELSE 0 END AS u"
    " FROM locations l CROSS JOIN emails e ON e.account_id = l.account_id AND e.id = l.email_id"
    " WHERE l.account_id = ? AND l.mailbox_id = ? AND l.deleted = 0"
    " AND e.destroyed_seq IS NULL) AS d GROUP BY t) AS g"
)


Counts = tuple[int, int, int, int]


def thread_ids_of(tx: Tx, account_id: str, email_ids: Iterable[str]) -> dict[str, str]:
    """email id → thread id of those of ``email_ids`` that have a row (live or tombstone)."""
    ids = list(dict.fromkeys(email_ids))
    out: dict[str, str] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for r in tx.all(
            f"SELECT id, thread_id FROM emails WHERE account_id = ? AND id IN ({marks})",
            (account_id, *chunk),
        ):
            out[r[0]] = r[1]
    return out


def thread_counts(
    tx: Tx, account_id: str, thread_ids: Iterable[str]
) -> dict[str, dict[str, Counts]]:
    """thread id → mailbox id → what the thread adds to that mailbox's
    :func:`mailbox_counts` (the same rules; absent where it adds nothing).

    A mailbox's counts are the sum of these over its threads, since an Email is in one
    thread: so a change confined to some threads changes the counts by the difference of
    their parts.  Read through ``emails_thread``, proportional to the threads' sizes.
    """
    ids = list(dict.fromkeys(thread_ids))
    seen: dict[tuple[str, str], dict[str, bool]] = {}  # (thread, mailbox) → email → unread
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for thread_id, mailbox_id, email_id, unread in tx.all(
            "SELECT e.thread_id, l.mailbox_id, e.id, instr(e.keywords, '\"$seen\"') = 0"
            " FROM emails e INDEXED BY emails_thread"
            " JOIN locations l INDEXED BY locations_email"
            " ON l.account_id = e.account_id AND l.email_id = e.id"
            f" WHERE e.account_id = ? AND e.thread_id IN ({marks})"
            " AND e.destroyed_seq IS NULL AND l.deleted = 0",
            (account_id, *chunk),
        ):
            seen.setdefault((thread_id, mailbox_id), {})[email_id] = bool(unread)
    out: dict[str, dict[str, Counts]] = {}
    for (thread_id, mailbox_id), members in seen.items():
        unread = sum(members.values())
        out.setdefault(thread_id, {})[mailbox_id] = (len(members), unread, 1, int(unread > 0))
    return out
