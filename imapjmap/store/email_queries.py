"""Read-side SQL for Email/query, Thread/get, SearchSnippet/get and queryChanges (schema v2).

Theory of operation: a query is a conjunction of simple predicates (:class:`EmailWhere`)
that SQL answers with indexes, plus whatever the method layer evaluates in Python on the
rows this module hands back.  Two ways to walk the matching emails in order:

- *index scan*: the ``emails_received`` index in ``received_at`` order, each row checked
  for membership of the wanted mailbox with an ``EXISTS`` probe of ``locations_email``.
  Cheap when the mailbox holds a good share of the account: a page of 50 costs about 50
  times (account size / mailbox size) probes.
- *location scan*: the mailbox's rows of ``locations`` (primary key range) joined to
  ``emails`` and sorted.  Cheap when the mailbox is small, whatever the account size.

:func:`ordered` picks between them with a bounded count of the mailbox's locations.

Rule 1: every function takes ``account_id`` and filters on it (``queries`` Rule 1).
Rule 2: only live rows (``destroyed_seq IS NULL``) and only visible locations
        (``deleted = 0``) are ever returned, except by the functions that say otherwise.
Rule 3: the final tie-break of every order is the email id, ascending, so SQL and Python
        (``jmap.standard.sort_records`` with the id as tie-break) agree on one order.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Final, Literal

from imapjmap.store.db import Tx

OrderColumn = Literal["received_at", "size"]

SMALL_MAILBOX: Final = 2000
"""Mailboxes with at most this many locations are walked by location scan (see above)."""

_CHUNK: Final = 500  # bound parameter lists well under SQLite's variable limit


@dataclass(frozen=True, slots=True)
class EmailWhere:
    """A conjunction of predicates on live emails; the empty one matches every email.

    ``in_mailboxes``: in each of these.  ``in_other_than``: for each tuple, in at least one
    mailbox outside it.  Bounds are half-open as in RFC 8621 §4.4.1: ``received_before``
    and ``size_below`` exclusive, ``received_since`` and ``size_at_least`` inclusive.
    ``never`` is set when the conditions contradict each other (nothing matches).
    ``headers_like`` only narrows: each needle must occur in the cached header JSON, a
    necessary condition the caller still checks exactly.
    """

    in_mailboxes: tuple[str, ...] = ()
    in_other_than: tuple[tuple[str, ...], ...] = ()
    received_before: int | None = None
    received_since: int | None = None
    size_at_least: int | None = None
    size_below: int | None = None
    has_attachment: bool | None = None
    with_keywords: tuple[str, ...] = ()
    without_keywords: tuple[str, ...] = ()
    ids: tuple[str, ...] | None = None  # restrict to these ids
    headers_like: tuple[str, ...] = ()  # see :func:`headers_needle`
    # each (ids, needle): one of the ids, or the needle in the cached header JSON (a text
    # condition: an IMAP hit or a header match), also only narrowing
    ids_or_headers_like: tuple[tuple[tuple[str, ...], str], ...] = ()
    never: bool = False


@dataclass(frozen=True, slots=True)
class Order:
    column: OrderColumn = "received_at"
    descending: bool = True


@dataclass(frozen=True, slots=True)
class Hit:
    """One matching email in sort order: its sort key, id and thread."""

    key: int
    id: str
    thread_id: str


@dataclass(frozen=True)
class Candidate:
    """The list properties Email/query filters and sorts on.

    The JSON columns are decoded on first use only: most filters read one of them or none.
    ``headers`` is ``{}`` unless the rows were read ``with_headers``.
    """

    id: str
    thread_id: str
    size: int
    received_at: int
    sent_at: str | None
    sort_subject: str
    sort_from: str
    sort_to: str
    has_attachment: bool
    keywords_json: str = "{}"
    mailbox_ids_json: str = "{}"
    headers_json: str = "{}"

    @cached_property
    def keywords(self) -> dict[str, bool]:
        value: dict[str, bool] = json.loads(self.keywords_json)
        return value

    @cached_property
    def mailbox_ids(self) -> dict[str, bool]:
        value: dict[str, bool] = json.loads(self.mailbox_ids_json)
        return value

    @cached_property
    def headers(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.headers_json)
        return value


# --- WHERE --------------------------------------------------------------------------------


def headers_needle(value: str) -> str | None:
    """The needle for :attr:`EmailWhere.headers_like` that a case-insensitive substring search
    for ``value`` in a cached address or subject implies, or None when there is none.

    The header JSON is ASCII (non-ASCII is written ``\\uXXXX``) and SQLite's LIKE folds
    ASCII case only, so only ASCII values qualify, and not those with characters JSON
    escapes (``"``, ``\\``, controls).  Values with ``<`` or ``>`` or surrounding spaces may
    match across a name and its address (``"Name <addr>"``) and are refused too.  What this
    narrowing cannot see: an ASCII value found only through the Unicode case folding of a
    non-ASCII letter (``ss`` for ``ß``).
    """
    if (
        not value
        or not value.isascii()
        or not value.isprintable()
        or any(c in value for c in '"\\<>')
        or value != value.strip()
    ):
        return None
    return value


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _keyword_path(keyword: str) -> str:
    # keywords never hold '"' or '\' (RFC 8621 §4.1.1), so a quoted JSON path label is safe
    return '$."' + keyword + '"'


def _where(where: EmailWhere, account_id: str) -> tuple[str, list[Any]]:
    """The WHERE clause on ``emails e`` (no mailbox membership) and its parameters."""
    clauses = ["e.account_id = ?", "e.destroyed_seq IS NULL"]
    params: list[Any] = [account_id]
    if where.never:
        clauses.append("1 = 0")
    for column, op, value in (
        ("received_at", "<", where.received_before),
        ("received_at", ">=", where.received_since),
        ("size", ">=", where.size_at_least),
        ("size", "<", where.size_below),
    ):
        if value is not None:
            clauses.append(f"e.{column} {op} ?")
            params.append(value)
    if where.has_attachment is not None:
        clauses.append("e.has_attachment = ?")
        params.append(int(where.has_attachment))
    for keyword in where.with_keywords:
        clauses.append("json_extract(e.keywords, ?) IS NOT NULL")
        params.append(_keyword_path(keyword))
    for keyword in where.without_keywords:
        clauses.append("json_extract(e.keywords, ?) IS NULL")
        params.append(_keyword_path(keyword))
    for others in where.in_other_than:
        marks = ",".join("?" * len(others))
        outside = f" AND o.mailbox_id NOT IN ({marks})" if others else ""  # no "IN ()" in PG
        clauses.append(
            "EXISTS (SELECT 1 FROM locations o WHERE o.account_id = e.account_id"
            f" AND o.email_id = e.id AND o.deleted = 0{outside})"
        )
        params.extend(others)
    for needle in where.headers_like:
        clauses.append("e.headers LIKE ? ESCAPE '\\'")
        params.append("%" + _like_escape(needle) + "%")
    if where.ids is not None:
        marks = ",".join("?" * len(where.ids)) or "NULL"
        clauses.append(f"e.id IN ({marks})")
        params.extend(where.ids)
    for ids, needle in where.ids_or_headers_like:
        # one JSON parameter however many hits (a million-message mailbox has thousands)
        clauses.append("(e.id IN (SELECT value FROM json_each(?)) OR e.headers LIKE ? ESCAPE '\\')")
        params.extend((json.dumps(ids), "%" + _like_escape(needle) + "%"))
    return " AND ".join(clauses), params


def _in_mailbox_clauses(mailbox_ids: Iterable[str]) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for mailbox_id in mailbox_ids:
        clauses.append(
            "EXISTS (SELECT 1 FROM locations m WHERE m.account_id = e.account_id"
            " AND m.email_id = e.id AND m.mailbox_id = ? AND m.deleted = 0)"
        )
        params.append(mailbox_id)
    return clauses, params


def _location_count(tx: Tx, account_id: str, mailbox_id: str, cap: int) -> int:
    """How many locations the mailbox has, counting no further than ``cap + 1``."""
    return int(
        tx.scalar(
            "SELECT COUNT(*) FROM (SELECT 1 FROM locations WHERE account_id = ?"
            " AND mailbox_id = ? LIMIT ?) AS capped",
            (account_id, mailbox_id, cap + 1),
        )
    )


def _from_clause(
    tx: Tx, account_id: str, where: EmailWhere, *, walk_all: bool
) -> tuple[str, list[Any], str, list[Any]]:
    """(FROM ..., its params, extra WHERE, its params): index scan or location scan.

    A location scan is chosen for a small mailbox, or whenever every match is wanted anyway
    (``walk_all``: counts, full lists), where it beats probing every email of the account.
    """
    boxes = list(dict.fromkeys(where.in_mailboxes))
    if boxes and where.ids is None:
        sizes = {b: _location_count(tx, account_id, b, SMALL_MAILBOX) for b in boxes}
        small = min(boxes, key=sizes.__getitem__)
        if walk_all or sizes[small] <= SMALL_MAILBOX:
            # "+email_id" keeps SQLite on the primary key range of that one mailbox, and
            # CROSS JOIN makes it walk that range first
            rest, params = _in_mailbox_clauses(b for b in boxes if b != small)
            source = (
                "(SELECT DISTINCT +email_id AS email_id FROM locations WHERE account_id = ?"
                " AND mailbox_id = ? AND deleted = 0) AS l"
                " CROSS JOIN emails e ON e.account_id = ? AND e.id = l.email_id"
            )
            extra = "".join(" AND " + c for c in rest)
            return source, [account_id, small, account_id], extra, params
    clauses, params = _in_mailbox_clauses(boxes)
    return "emails e", [], "".join(" AND " + c for c in clauses), params


def _select(
    tx: Tx,
    account_id: str,
    where: EmailWhere,
    columns: str,
    tail: str = "",
    tail_params: Sequence[Any] = (),
    *,
    walk_all: bool = True,
) -> list[tuple[Any, ...]]:
    source, source_params, extra, extra_params = _from_clause(
        tx, account_id, where, walk_all=walk_all
    )
    condition, params = _where(where, account_id)
    sql = f"SELECT {columns} FROM {source} WHERE {condition}{extra}{tail}"
    return tx.all(sql, [*source_params, *params, *extra_params, *tail_params])


# --- ordered walks, counts, candidate rows ------------------------------------------------


def ordered(
    tx: Tx,
    account_id: str,
    where: EmailWhere,
    order: Order,
    *,
    limit: int | None = None,
    after: Hit | None = None,
) -> list[Hit]:
    """Matching emails in ``order`` then id ascending (Rule 3), from just after ``after``.

    Args:
        limit: at most this many (None: all the rest).
        after: continue a walk after this hit (keyset paging: no OFFSET scans).
    """
    column = f"e.{order.column}"
    direction = "DESC" if order.descending else "ASC"
    tail = ""
    params: list[Any] = []
    if after is not None:
        beyond = "<" if order.descending else ">"
        tail += f" AND ({column} {beyond} ? OR ({column} = ? AND e.id > ?))"
        params += [after.key, after.key, after.id]
    tail += f" ORDER BY {column} {direction}, e.id ASC"
    if limit is not None:
        tail += " LIMIT ?"
        params.append(limit)
    columns = f"{column}, e.id, e.thread_id"
    rows = _select(tx, account_id, where, columns, tail, params, walk_all=limit is None)
    return [Hit(int(r[0]), r[1], r[2]) for r in rows]


def count(tx: Tx, account_id: str, where: EmailWhere, *, threads: bool = False) -> int:
    """How many emails (or, with ``threads``, distinct threads) match."""
    if (
        not threads
        and where == EmailWhere(in_mailboxes=where.in_mailboxes[:1])
        and where.in_mailboxes
    ):
        # a visible location always belongs to a live email (``emails.recompute_email``)
        return int(
            tx.scalar(
                "SELECT COUNT(DISTINCT email_id) FROM locations WHERE account_id = ?"
                " AND mailbox_id = ? AND deleted = 0",
                (account_id, where.in_mailboxes[0]),
            )
        )
    what = "COUNT(DISTINCT e.thread_id)" if threads else "COUNT(*)"
    return int(_select(tx, account_id, where, what)[0][0])


_CANDIDATE_COLUMNS: Final = (
    "e.id, e.thread_id, e.size, e.received_at, e.sent_at, e.sort_subject, e.sort_from,"
    " e.sort_to, e.has_attachment, e.keywords, e.mailbox_ids"
)


def candidates(
    tx: Tx, account_id: str, where: EmailWhere, *, with_headers: bool = False
) -> list[Candidate]:
    """Every matching email with the properties the Python side filters and sorts on."""
    if where.ids is not None and len(where.ids) > _CHUNK:
        out: list[Candidate] = []
        for chunk in _chunks(where.ids):
            out += candidates(
                tx, account_id, replace(where, ids=tuple(chunk)), with_headers=with_headers
            )
        return out
    columns = _CANDIDATE_COLUMNS + (", e.headers" if with_headers else ", '{}'")
    return [
        Candidate(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], bool(r[8]), r[9], r[10], r[11])
        for r in _select(tx, account_id, where, columns)
    ]


# --- threads ------------------------------------------------------------------------------


def _chunks(values: Sequence[str]) -> Iterable[list[str]]:
    for start in range(0, len(values), _CHUNK):
        yield list(values[start : start + _CHUNK])


def thread_members(tx: Tx, account_id: str, thread_ids: Sequence[str]) -> dict[str, list[str]]:
    """Live email ids of each thread, oldest first (RFC 8621 §3); empty threads absent."""
    out: dict[str, list[str]] = {}
    for chunk in _chunks(list(dict.fromkeys(thread_ids))):
        marks = ",".join("?" * len(chunk))
        for thread_id, email_id in tx.all(
            f"SELECT thread_id, id FROM emails WHERE account_id = ? AND thread_id IN ({marks})"
            " AND destroyed_seq IS NULL ORDER BY thread_id, received_at, id",
            (account_id, *chunk),
        ):
            out.setdefault(thread_id, []).append(email_id)
    return out


def thread_keywords(
    tx: Tx, account_id: str, thread_ids: Sequence[str]
) -> dict[str, list[dict[str, bool]]]:
    """The keywords of every live email of each thread (thread-keyword filters and sorts)."""
    out: dict[str, list[dict[str, bool]]] = {}
    for chunk in _chunks(list(dict.fromkeys(thread_ids))):
        marks = ",".join("?" * len(chunk))
        for thread_id, keywords in tx.all(
            f"SELECT thread_id, keywords FROM emails WHERE account_id = ?"
            f" AND thread_id IN ({marks}) AND destroyed_seq IS NULL",
            (account_id, *chunk),
        ):
            out.setdefault(thread_id, []).append(json.loads(keywords))
    return out


def live_thread_count(tx: Tx, account_id: str) -> int:
    return int(
        tx.scalar(
            "SELECT COUNT(*) FROM threads WHERE account_id = ? AND destroyed_seq IS NULL",
            (account_id,),
        )
    )


def live_thread_ids(tx: Tx, account_id: str) -> list[str]:
    return [
        r[0]
        for r in tx.all(
            "SELECT id FROM threads WHERE account_id = ? AND destroyed_seq IS NULL ORDER BY id",
            (account_id,),
        )
    ]


def live_email_count(tx: Tx, account_id: str) -> int:
    return int(
        tx.scalar(
            "SELECT COUNT(*) FROM emails WHERE account_id = ? AND destroyed_seq IS NULL",
            (account_id,),
        )
    )


def threads_of(tx: Tx, account_id: str, email_ids: Sequence[str]) -> set[str]:
    """The thread of each email, tombstones included (queryChanges thread expansion)."""
    out: set[str] = set()
    for chunk in _chunks(list(email_ids)):
        marks = ",".join("?" * len(chunk))
        out.update(
            r[0]
            for r in tx.all(
                f"SELECT DISTINCT thread_id FROM emails WHERE account_id = ? AND id IN ({marks})",
                (account_id, *chunk),
            )
        )
    return out


def emails_of_threads(tx: Tx, account_id: str, thread_ids: Sequence[str]) -> set[str]:
    """The live email ids of the threads."""
    out: set[str] = set()
    for chunk in _chunks(list(thread_ids)):
        marks = ",".join("?" * len(chunk))
        out.update(
            r[0]
            for r in tx.all(
                f"SELECT id FROM emails WHERE account_id = ? AND thread_id IN ({marks})"
                " AND destroyed_seq IS NULL",
                (account_id, *chunk),
            )
        )
    return out


# --- locations ----------------------------------------------------------------------------


def email_ids_at(tx: Tx, account_id: str, mailbox_id: str, uids: Iterable[int]) -> set[str]:
    """The emails at these UIDs of a mailbox (visible locations only; unknown UIDs skipped)."""
    out: set[str] = set()
    ordered_uids = sorted(set(uids))
    for start in range(0, len(ordered_uids), _CHUNK):
        chunk = ordered_uids[start : start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        out.update(
            r[0]
            for r in tx.all(
                "SELECT email_id FROM locations WHERE account_id = ? AND mailbox_id = ?"
                f" AND deleted = 0 AND uid IN ({marks})",
                (account_id, mailbox_id, *chunk),
            )
        )
    return out


def locations_of(
    tx: Tx, account_id: str, email_ids: Sequence[str], mailbox_ids: Collection[str] | None
) -> dict[str, set[int]]:
    """mailbox id -> the UIDs of these emails there (visible locations; only the mailboxes
    of ``mailbox_ids``, every one when None)."""
    out: dict[str, set[int]] = {}
    for chunk in _chunks(email_ids):
        marks = ",".join("?" * len(chunk))
        for mailbox_id, uid in tx.all(
            "SELECT mailbox_id, uid FROM locations WHERE account_id = ?"
            f" AND deleted = 0 AND email_id IN ({marks})",
            (account_id, *chunk),
        ):
            if mailbox_ids is None or mailbox_id in mailbox_ids:
                out.setdefault(mailbox_id, set()).add(int(uid))
    return out


def first_location(tx: Tx, account_id: str, email_id: str) -> tuple[str, int] | None:
    """(mailbox id, uid) of one visible location of an email, or None."""
    row = tx.one(
        "SELECT mailbox_id, uid FROM locations WHERE account_id = ? AND email_id = ?"
        " AND deleted = 0 ORDER BY mailbox_id, uid LIMIT 1",
        (account_id, email_id),
    )
    return (row[0], int(row[1])) if row else None
