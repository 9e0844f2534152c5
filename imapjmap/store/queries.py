"""Typed reads and writes on the cache: accounts, the change counter, mailboxes, tombstones.

Theory of operation (after jmap-perl's ``dirty()``/``commit()``): every function here is a
plain synchronous function over a :class:`~imapjmap.store.db.Tx`, so callers compose several
of them inside ONE ``store.run(lambda tx: ...)`` to make one transaction.  JMAP states come
from one account-wide counter, never from IMAP modseqs.

Rule 1: every function takes ``account_id`` and filters on it; no query can read another
        account's rows (a guessed id from another account is simply not found).
Rule 2: a transaction that changes rows calls :func:`next_seq` with the JMAP types it touches;
        the first call takes ``accounts.seq + 1``, later calls in the same transaction return
        the same number and may add types.  Rows store it as ``created_seq`` /
        ``updated_seq`` / ``props_seq`` / ``destroyed_seq``.
Rule 3: ``Foo/changes`` is :func:`changes_since`: rows (tombstones included) whose
        ``updated_seq > since``.  A ``since`` below :func:`type_floor` cannot be answered
        (``cannotCalculateChanges``): tombstones it would need were purged.
Rule 4: IMAP sync cursors (uidvalidity, uidnext, highestmodseq, messages) are inputs only;
        :func:`set_mailbox_cursor` writes them without taking a seq.
Rule 5: table names in SQL come only from :data:`CHANGE_TABLES`, never from callers' strings.
"""

from __future__ import annotations

import json
import operator
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Final, Generic, Literal, TypeVar

from imapjmap.errors import CacheCorrupt
from imapjmap.store.db import Tx

ChangeTable = Literal["mailboxes", "emails", "threads", "identities", "submissions"]
"""The change-tracked tables (see ``schema`` Rule 4); later schema versions extend it."""

CHANGE_TABLES: Final[Mapping[ChangeTable, tuple[str, ...]]] = {
    "mailboxes": ("Mailbox",),
    "emails": ("Email",),
    "threads": ("Thread",),
    "identities": ("Identity",),
    "submissions": ("EmailSubmission",),
}
"""Each change-tracked table and the JMAP types whose ``/changes`` it feeds."""

MailboxChangeKind = Literal["none", "cursor", "counts", "props"]

R = TypeVar("R")


# --- rows --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccountRow:
    account_id: str
    username: str
    epoch: str  # random per account row; JMAP states embed it
    seq: int  # the account-wide change counter
    delimiter: str | None  # upstream IMAP hierarchy separator, None until known


@dataclass(frozen=True, slots=True)
class MailboxRow:
    """One ``mailboxes`` row; attribute names are the column names."""

    account_id: str
    id: str
    imap_name: str  # full decoded IMAP name
    name: str  # leaf name, as shown to JMAP clients
    parent_id: str | None = None
    role: str | None = None
    sort_order: int = 0
    is_subscribed: bool = False
    total_emails: int = 0
    unread_emails: int = 0
    total_threads: int = 0
    unread_threads: int = 0
    my_rights: dict[str, bool] = field(default_factory=dict, hash=False)
    source_id: str | None = None  # RFC 8474 MAILBOXID or Dovecot X-GUID
    uidvalidity: int | None = None
    uidnext: int | None = None
    highestmodseq: int | None = None
    messages: int | None = None
    created_seq: int = 0
    updated_seq: int = 0
    props_seq: int = 0  # last change to a property other than the four counts
    destroyed_seq: int | None = None  # not None: a tombstone


@dataclass(frozen=True, slots=True)
class ChangeRow:
    """The change bookkeeping of one row of a change-tracked table."""

    id: str
    created_seq: int
    updated_seq: int
    destroyed_seq: int | None


@dataclass(frozen=True, slots=True)
class MailboxChange:
    id: str
    created_seq: int
    updated_seq: int
    destroyed_seq: int | None
    props_seq: int


# --- decoding and encoding ---------------------------------------------------------------


_STORAGE: Final[Mapping[str, tuple[type, bool]]] = {
    # field annotation -> (the Python type SQLite hands back, may it be NULL)
    "int": (int, False),
    "int | None": (int, True),
    "float | None": (float, True),
    "str": (str, False),
    "str | None": (str, True),
    "bool": (int, False),  # 0 or 1
    "dict[str, bool]": (str, False),  # a JSON object of booleans
}


class _Codec(Generic[R]):
    """Row dataclass <-> SQL values, for a dataclass whose attributes are its table's columns.

    Decoding checks each value's type, so a damaged row is ``CacheCorrupt`` here rather than a
    ``TypeError`` far away.  Annotations are read as strings (postponed annotations).
    """

    def __init__(self, cls: type[R], table: str) -> None:
        kinds = [(f.name, str(f.type)) for f in fields(cls)]  # type: ignore[arg-type]
        self._cls = cls
        self.table = table
        self.columns = tuple(name for name, _ in kinds)
        self._checks = tuple(_STORAGE[kind] for _, kind in kinds)
        self._bools = tuple(i for i, (_, kind) in enumerate(kinds) if kind == "bool")
        self._jsons = tuple(i for i, (_, kind) in enumerate(kinds) if kind.startswith("dict"))
        self._get = operator.attrgetter(*self.columns)
        self.select = f"SELECT {', '.join(self.columns)} FROM {table}"
        self.insert = (
            f"INSERT INTO {table} ({', '.join(self.columns)})"
            f" VALUES ({', '.join('?' for _ in self.columns)})"
        )

    def index(self, column: str) -> int:
        return self.columns.index(column)

    def decode(self, values: Sequence[Any]) -> R:
        """Raises: CacheCorrupt: a value has the wrong type, or a JSON column is malformed."""
        for (kind, nullable), value in zip(self._checks, values, strict=True):
            if type(value) is not kind and (value is not None or not nullable):
                raise CacheCorrupt(f"{self.table} row {values[:2]!r}: bad value {value!r}")
        out = list(values)
        try:
            for i in self._bools:
                out[i] = (False, True)[out[i]]
            for i in self._jsons:
                out[i] = _json_flags(out[i])
        except (IndexError, ValueError) as exc:
            raise CacheCorrupt(f"{self.table} row {values[:2]!r}: {exc}") from exc
        return self._cls(*out)

    def encode(self, row: R) -> list[Any]:
        out = list(self._get(row))
        for i in self._bools:
            out[i] = int(out[i])
        for i in self._jsons:
            out[i] = json.dumps(out[i], sort_keys=True, separators=(",", ":"))
        return out


def _json_flags(text: str) -> dict[str, bool]:
    value = json.loads(text)
    if isinstance(value, dict) and all(type(v) is bool for v in value.values()):
        return value
    raise ValueError(f"not a JSON object of booleans: {text[:40]!r}")


_MAILBOXES: Final = _Codec(MailboxRow, "mailboxes")
_MAILBOX_COLUMNS: Final = _MAILBOXES.columns
_SELECT_MAILBOX: Final = _MAILBOXES.select
_mailbox_from: Final = _MAILBOXES.decode
_SEQ_COLUMNS: Final = tuple(
    _MAILBOXES.index(c) for c in ("created_seq", "updated_seq", "props_seq")
)
_DESTROYED: Final = _MAILBOXES.index("destroyed_seq")


# --- accounts ----------------------------------------------------------------------------

_ACCOUNT_COLUMNS: Final = "account_id, username, epoch, seq, delimiter"


def ensure_account(
    tx: Tx, account_id: str, username: str, *, now: float | None = None
) -> AccountRow:
    """Return the account's row, creating it (with a fresh random epoch) when missing."""
    tx.execute(
        "INSERT INTO accounts (account_id, username, epoch, seq, created_at)"
        " VALUES (?, ?, ?, 0, ?) ON CONFLICT (account_id) DO NOTHING",
        (account_id, username, secrets.token_urlsafe(9), time.time() if now is None else now),
    )
    row = account(tx, account_id)
    assert row is not None
    return row


_STORE_KEY: Final = "upstream.store"


def account_for_store(
    tx: Tx, store: str | None, username: str, *, legacy_id: str, fresh_id: str
) -> AccountRow:
    """The account of the upstream mail store ``store`` (see ``http.auth``), creating it.

    A store seen before keeps its account, however its login was spelled.  A new store takes
    ``legacy_id`` (the id derived from the login name, which caches of older versions use),
    unless another store holds that id already (a login name that now reaches another
    store): then ``fresh_id``.  With ``store`` None the login name is all there is to go on:
    ``legacy_id``.
    """
    if store is None:
        return ensure_account(tx, legacy_id, username)
    found = tx.one("SELECT account_id FROM kv WHERE key = ? AND value = ?", (_STORE_KEY, store))
    if found is not None:
        row = account(tx, str(found[0]))
        assert row is not None  # kv rows go with their account (ON DELETE CASCADE)
        return row
    holder = kv_get(tx, legacy_id, _STORE_KEY)
    chosen = legacy_id if holder is None else fresh_id
    row = ensure_account(tx, chosen, username)
    kv_set(tx, chosen, _STORE_KEY, store)
    return row


def account(tx: Tx, account_id: str) -> AccountRow | None:
    row = tx.one(f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE account_id = ?", (account_id,))
    return None if row is None else AccountRow(*row)


def probe_write(tx: Tx) -> None:
    """Fail unless the cache can be written (a start-up check).

    A read-only cache file opens, and in WAL mode even begins a write transaction; only a
    write statement tells.  This one changes nothing.
    """
    tx.execute("DELETE FROM seq_log WHERE 1 = 0")


def probe_read(tx: Tx) -> None:
    """Fail unless the cache can be read (a readiness check): one row of its own schema."""
    tx.one("SELECT 1 FROM seq_log LIMIT 1")


def account_ids(tx: Tx) -> list[str]:
    """Every cached account id (for maintenance jobs such as the tombstone purge)."""
    return [row[0] for row in tx.all("SELECT account_id FROM accounts ORDER BY account_id")]


_LAST_LOGIN_KEY: Final = "admin.last_login"


def note_login(tx: Tx, account_id: str, *, at: float) -> None:
    """Record a login the upstream server verified (what ``imapjmap accounts`` shows, and
    what ``imapjmap cache prune --unused-days`` goes by)."""
    kv_set(tx, account_id, _LAST_LOGIN_KEY, repr(at))


@dataclass(frozen=True, slots=True)
class AccountSummary:
    """What an operator sees of one cached account (``imapjmap accounts``)."""

    account_id: str
    username: str
    created_at: float | None
    last_login: float | None  # None: no verified login recorded (older caches)
    emails: int  # live rows
    mailboxes: int  # live rows, \Noselect ones included
    selectable: int  # the mailboxes that hold messages: what a sync lists
    synced: int  # those whose email rows reflect the server's current UIDVALIDITY


def account_summary(tx: Tx, account_id: str) -> AccountSummary | None:
    row = tx.one("SELECT username, created_at FROM accounts WHERE account_id = ?", (account_id,))
    if row is None:
        return None
    last = kv_get(tx, account_id, _LAST_LOGIN_KEY)
    emails = tx.scalar(
        "SELECT count(*) FROM emails WHERE account_id = ? AND destroyed_seq IS NULL",
        (account_id,),
    )
    mailboxes, selectable, synced = tx.one(
        "SELECT count(*), count(uidvalidity),"
        " coalesce(sum(CASE WHEN synced_uidvalidity = uidvalidity THEN 1 ELSE 0 END), 0)"
        " FROM mailboxes WHERE account_id = ? AND destroyed_seq IS NULL",
        (account_id,),
    ) or (0, 0, 0)
    return AccountSummary(
        account_id,
        str(row[0]),
        None if row[1] is None else float(row[1]),
        None if last is None else float(last),
        int(emails),
        int(mailboxes),
        int(selectable),
        int(synced),
    )


def accounts_unused_since(tx: Tx, before: float) -> list[str]:
    """Accounts whose last verified login (or, with none recorded, their creation) is
    older than ``before``."""
    rows = tx.all(
        "SELECT a.account_id FROM accounts a LEFT JOIN kv ON kv.account_id = a.account_id"
        " AND kv.key = ? WHERE coalesce(CAST(kv.value AS DOUBLE PRECISION), a.created_at, 0) < ?"
        " ORDER BY a.account_id",
        (_LAST_LOGIN_KEY, before),
    )
    return [str(r[0]) for r in rows]


def accounts_named(tx: Tx, name: str) -> list[str]:
    """The account whose id is ``name``, or those first logged in as ``name``."""
    rows = tx.all(
        "SELECT account_id FROM accounts WHERE account_id = ? OR username = ? ORDER BY account_id",
        (name, name),
    )
    return [str(r[0]) for r in rows]


def delete_all_accounts(tx: Tx) -> int:
    """Drop every account and what it owns (a cache reset); returns how many there were."""
    return tx.execute("DELETE FROM accounts")


def set_delimiter(tx: Tx, account_id: str, delimiter: str | None) -> None:
    tx.execute("UPDATE accounts SET delimiter = ? WHERE account_id = ?", (delimiter, account_id))


def delete_account(tx: Tx, account_id: str) -> bool:
    """Drop the account and every row it owns; a later :func:`ensure_account` mints a new
    epoch, so states issued before are refused.  Returns whether the account existed."""
    return tx.execute("DELETE FROM accounts WHERE account_id = ?", (account_id,)) == 1


# --- the change counter and type states --------------------------------------------------


def next_seq(tx: Tx, account_id: str, types: Iterable[str], *, now: float | None = None) -> int:
    """Take this transaction's seq for the account and record it as the state of ``types``.

    Args:
        types: JMAP type names ("Mailbox", "Email", ...) that this transaction changes.
        now: Unix time logged for the seq (retention); defaults to the current time.

    Raises:
        LookupError: the account has no row (call :func:`ensure_account` first).
        TypeError: ``types`` is a single ``str``.
    """
    if isinstance(types, str):
        raise TypeError("types must be an iterable of type names, not one str")
    seq = tx.taken_seqs.get(account_id)
    if seq is None:
        if tx.execute("UPDATE accounts SET seq = seq + 1 WHERE account_id = ?", (account_id,)) != 1:
            raise LookupError(f"account {account_id!r} is not in the cache")
        seq = int(tx.scalar("SELECT seq FROM accounts WHERE account_id = ?", (account_id,)))
        tx.execute(
            "INSERT INTO seq_log (account_id, seq, at) VALUES (?, ?, ?)",
            (account_id, seq, time.time() if now is None else now),
        )
        tx.taken_seqs[account_id] = seq
    tx.executemany(
        "INSERT INTO type_states (account_id, type, seq) VALUES (?, ?, ?)"
        " ON CONFLICT (account_id, type) DO UPDATE SET seq = CASE"
        " WHEN excluded.seq > type_states.seq THEN excluded.seq ELSE type_states.seq END",
        [(account_id, data_type, seq) for data_type in types],
    )
    return seq


def type_state(tx: Tx, account_id: str, data_type: str) -> int:
    """The highest seq that touched ``data_type`` (0 if none ever did)."""
    seq = tx.scalar(*type_state_query(account_id, data_type))
    return 0 if seq is None else int(seq)


def type_state_query(account_id: str, data_type: str) -> tuple[str, tuple[str, str]]:
    """The statement of :func:`type_state`, for ``Store.scalar_now``."""
    return "SELECT seq FROM type_states WHERE account_id = ? AND type = ?", (account_id, data_type)


def type_states(tx: Tx, account_id: str) -> dict[str, int]:
    rows = tx.all("SELECT type, seq FROM type_states WHERE account_id = ?", (account_id,))
    return {data_type: int(seq) for data_type, seq in rows}


def type_floor(tx: Tx, account_id: str, data_type: str) -> int:
    """The lowest ``since`` seq from which ``data_type`` changes can still be computed."""
    seq = tx.scalar(
        "SELECT floor_seq FROM type_states WHERE account_id = ? AND type = ?",
        (account_id, data_type),
    )
    return 0 if seq is None else int(seq)


def _raise_floor(tx: Tx, account_id: str, data_type: str, floor_seq: int) -> None:
    tx.execute(
        "INSERT INTO type_states (account_id, type, seq, floor_seq) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (account_id, type)"
        " DO UPDATE SET floor_seq = CASE WHEN excluded.floor_seq > type_states.floor_seq"
        " THEN excluded.floor_seq ELSE type_states.floor_seq END",
        (account_id, data_type, floor_seq, floor_seq),
    )


# --- small per-account facts ---------------------------------------------------------------


def kv_get(tx: Tx, account_id: str, key: str) -> str | None:
    value = tx.scalar("SELECT value FROM kv WHERE account_id = ? AND key = ?", (account_id, key))
    return None if value is None else str(value)


def kv_set(tx: Tx, account_id: str, key: str, value: str) -> None:
    tx.execute(
        "INSERT INTO kv (account_id, key, value) VALUES (?, ?, ?)"
        " ON CONFLICT (account_id, key) DO UPDATE SET value = excluded.value",
        (account_id, key, value),
    )


def kv_delete(tx: Tx, account_id: str, key: str) -> None:
    tx.execute("DELETE FROM kv WHERE account_id = ? AND key = ?", (account_id, key))


# --- mailboxes -----------------------------------------------------------------------------

_BOOKKEEPING: Final = frozenset(
    {"account_id", "id", "created_seq", "updated_seq", "props_seq", "destroyed_seq"}
)
_COUNTS: Final = ("total_emails", "unread_emails", "total_threads", "unread_threads")
_CURSOR: Final = ("uidvalidity", "uidnext", "highestmodseq", "messages")
_MUTABLE: Final = tuple(c for c in _MAILBOX_COLUMNS if c not in _BOOKKEEPING)
_MUTABLE_AT: Final = tuple(_MAILBOXES.index(c) for c in _MUTABLE)
_PROPS: Final = tuple(c for c in _MUTABLE if c not in _COUNTS and c not in _CURSOR)

_CHANGE_GROUPS: Final[tuple[tuple[tuple[str, ...], MailboxChangeKind], ...]] = (
    (_PROPS, "props"),
    (_COUNTS, "counts"),
    (_CURSOR, "cursor"),
)

_UPDATE_MAILBOX: Final = (
    f"UPDATE mailboxes SET {', '.join(f'{c} = ?' for c in _MUTABLE)}, updated_seq = ?,"
    " props_seq = CASE WHEN ? THEN ? ELSE props_seq END"
    " WHERE account_id = ? AND id = ? AND destroyed_seq IS NULL"
)


def live_mailboxes(tx: Tx, account_id: str) -> list[MailboxRow]:
    """Every mailbox of the account that is not a tombstone, by IMAP name."""
    rows = tx.all(
        f"{_SELECT_MAILBOX} WHERE account_id = ? AND destroyed_seq IS NULL ORDER BY imap_name",
        (account_id,),
    )
    return [_mailbox_from(row) for row in rows]


def live_mailboxes_and_state(
    tx: Tx, account_id: str, data_type: str
) -> tuple[list[MailboxRow], int]:
    """:func:`live_mailboxes` and :func:`type_state`, in one round trip to a server."""
    rows, state = tx.all_of(
        (
            f"{_SELECT_MAILBOX} WHERE account_id = ? AND destroyed_seq IS NULL ORDER BY imap_name",
            (account_id,),
        ),
        ("SELECT seq FROM type_states WHERE account_id = ? AND type = ?", (account_id, data_type)),
    )
    return [_mailbox_from(row) for row in rows], int(state[0][0]) if state else 0


def _one_mailbox(tx: Tx, where: str, params: Sequence[Any]) -> MailboxRow | None:
    row = tx.one(f"{_SELECT_MAILBOX} WHERE {where} AND destroyed_seq IS NULL", params)
    return None if row is None else _mailbox_from(row)


def mailbox(tx: Tx, account_id: str, mailbox_id: str) -> MailboxRow | None:
    """The live mailbox with this id in this account, or None (also for a tombstone)."""
    return _one_mailbox(tx, "account_id = ? AND id = ?", (account_id, mailbox_id))


def mailbox_by_name(tx: Tx, account_id: str, imap_name: str) -> MailboxRow | None:
    return _one_mailbox(tx, "account_id = ? AND imap_name = ?", (account_id, imap_name))


def mailbox_by_source(tx: Tx, account_id: str, source_id: str) -> MailboxRow | None:
    """The live mailbox carrying this upstream id (MAILBOXID / X-GUID), e.g. after a rename."""
    return _one_mailbox(tx, "account_id = ? AND source_id = ?", (account_id, source_id))


def insert_mailbox(tx: Tx, row: MailboxRow, *, seq: int | None = None) -> None:
    """Insert a new live mailbox.

    Args:
        seq: when given, stamps ``created_seq``/``updated_seq``/``props_seq`` with it
            (the usual call); otherwise the row's own values are kept and must be set.

    Raises:
        ValueError: no seq given and the row's ``created_seq`` is not positive.
        CacheCorrupt: the id exists (live or tombstone), the IMAP name is taken by a live
            mailbox, or the account has no row.
    """
    values = _MAILBOXES.encode(row)
    if seq is not None:
        for i in _SEQ_COLUMNS:
            values[i] = seq
        values[_DESTROYED] = None
    elif row.created_seq <= 0:
        raise ValueError("insert_mailbox needs seq= or a row whose created_seq is set")
    tx.execute(_MAILBOXES.insert, values)


def update_mailbox(tx: Tx, row: MailboxRow, *, props_changed: bool, seq: int) -> bool:
    """Overwrite a live mailbox's mutable columns and stamp ``updated_seq`` with ``seq``.

    ``props_changed`` also stamps ``props_seq`` (pass False when only the four counts moved;
    see :func:`mailbox_change`).  Returns False when no live row has that id.
    """
    values = _MAILBOXES.encode(row)
    params = [values[i] for i in _MUTABLE_AT]
    params += [seq, props_changed, seq, row.account_id, row.id]
    return tx.execute(_UPDATE_MAILBOX, params) == 1


def set_mailbox_imap_name(tx: Tx, account_id: str, mailbox_id: str, imap_name: str) -> bool:
    """Move a live mailbox to a new IMAP name WITHOUT taking a seq: after our own RENAME,
    so that the next refresh matches the renamed mailbox by name where the upstream has no
    mailbox ids (Gmail), and reports the change of name or parent itself.  False when no
    live row has that id or another live row holds the name."""
    if mailbox_by_name(tx, account_id, imap_name) is not None:
        return False
    return (
        tx.execute(
            "UPDATE mailboxes SET imap_name = ?"
            " WHERE account_id = ? AND id = ? AND destroyed_seq IS NULL",
            (imap_name, account_id, mailbox_id),
        )
        == 1
    )


def set_mailbox_cursor(
    tx: Tx,
    account_id: str,
    mailbox_id: str,
    *,
    uidvalidity: int | None,
    uidnext: int | None,
    highestmodseq: int | None,
    messages: int | None,
) -> bool:
    """Store the IMAP sync cursor of a live mailbox WITHOUT taking a seq (Rule 4)."""
    return (
        tx.execute(
            "UPDATE mailboxes SET uidvalidity = ?, uidnext = ?, highestmodseq = ?, messages = ?"
            " WHERE account_id = ? AND id = ? AND destroyed_seq IS NULL",
            (uidvalidity, uidnext, highestmodseq, messages, account_id, mailbox_id),
        )
        == 1
    )


def update_mailbox_cursor(tx: Tx, row: MailboxRow) -> bool:
    """:func:`set_mailbox_cursor` with the cursor fields of ``row`` (no seq taken)."""
    return set_mailbox_cursor(
        tx,
        row.account_id,
        row.id,
        uidvalidity=row.uidvalidity,
        uidnext=row.uidnext,
        highestmodseq=row.highestmodseq,
        messages=row.messages,
    )


def mailbox_change(old: MailboxRow, new: MailboxRow) -> MailboxChangeKind:
    """Classify what differs between two versions of a mailbox row.

    Returns ``"props"`` if any JMAP-visible property other than the counts differs (the IMAP
    name and source id count as such: reporting a spurious update is harmless), else
    ``"counts"`` if a count differs, else ``"cursor"`` if only the sync cursor differs, else
    ``"none"``.  ``"props"``/``"counts"`` → :func:`update_mailbox` with
    ``props_changed=(kind == "props")``; ``"cursor"`` → :func:`set_mailbox_cursor`.
    """
    for group, kind in _CHANGE_GROUPS:
        if any(getattr(old, c) != getattr(new, c) for c in group):
            return kind
    return "none"


def destroy_mailbox(tx: Tx, account_id: str, mailbox_id: str, seq: int) -> bool:
    """Tombstone a live mailbox (frees its IMAP name); False if there is none."""
    return tombstone(tx, "mailboxes", account_id, mailbox_id, seq)


def mailbox_changes(
    tx: Tx, account_id: str, since_seq: int, *, limit: int | None = None
) -> list[MailboxChange]:
    """Like :func:`changes_since` for mailboxes, plus ``props_seq`` for updatedProperties."""
    rows = _changes(tx, "mailboxes", account_id, since_seq, ", props_seq", limit)
    return [MailboxChange(*row) for row in rows]


# --- generic change bookkeeping ------------------------------------------------------------


def _table(table: str) -> str:
    if table not in CHANGE_TABLES:
        raise ValueError(f"{table!r} is not a change-tracked table")
    return table


def _changes(
    tx: Tx, table: str, account_id: str, since_seq: int, extra: str, limit: int | None
) -> list[tuple[Any, ...]]:
    sql = (
        f"SELECT id, created_seq, updated_seq, destroyed_seq{extra} FROM {_table(table)}"
        " WHERE account_id = ? AND updated_seq > ? ORDER BY updated_seq, id"
    )
    if limit is None:
        return tx.all(sql, (account_id, since_seq))
    return tx.all(sql + " LIMIT ?", (account_id, since_seq, limit))


def changes_since(
    tx: Tx, table: ChangeTable, account_id: str, since_seq: int, *, limit: int | None = None
) -> list[ChangeRow]:
    """Rows (tombstones included) changed after ``since_seq``, by ``updated_seq`` then id.

    A row with ``created_seq > since_seq`` is new to the client; with ``destroyed_seq`` set it
    is gone (both: the client never saw it).  ``limit`` caps the rows returned; a caller
    paging for ``maxChanges`` must cut at a seq boundary.  Check :func:`type_floor` first.
    """
    return [ChangeRow(*row) for row in _changes(tx, table, account_id, since_seq, "", limit)]


def tombstone(tx: Tx, table: ChangeTable, account_id: str, row_id: str, seq: int) -> bool:
    """Mark a live row destroyed at ``seq`` (also its ``updated_seq``); False if none."""
    return (
        tx.execute(
            f"UPDATE {_table(table)} SET destroyed_seq = ?, updated_seq = ?"
            " WHERE account_id = ? AND id = ? AND destroyed_seq IS NULL",
            (seq, seq, account_id, row_id),
        )
        == 1
    )


# Tombstones that are kept whatever their age: an Email whose only copies are flagged
# \Deleted is destroyed for JMAP, but its locations remain, and it comes back to life
# (the same row) if another client removes the flag.
_STILL_NEEDED: Final[Mapping[str, str]] = {
    "emails": " AND NOT EXISTS (SELECT 1 FROM locations l"
    " WHERE l.account_id = emails.account_id AND l.email_id = emails.id)",
}


def purge_tombstones(
    tx: Tx, account_id: str, older_than_seq: int, *, limit: int | None = None
) -> int:
    """Delete the tombstones destroyed before ``older_than_seq``, in every change table.

    The floor of each affected type rises to the highest ``destroyed_seq`` deleted: a client
    whose state is at least that seq misses nothing.  ``limit`` caps the rows deleted (the
    oldest go first, so the floor never skips a tombstone that is kept).  Returns the number
    of rows deleted.
    """
    purged = 0
    for table, data_types in CHANGE_TABLES.items():
        room = None if limit is None else limit - purged
        if room is not None and room <= 0:
            break
        # Tombstones have updated_seq = destroyed_seq, so the updated_seq index serves.
        sql = (
            f"SELECT id, destroyed_seq FROM {table} WHERE account_id = ? AND updated_seq < ?"
            f" AND destroyed_seq IS NOT NULL{_STILL_NEEDED.get(table, '')} ORDER BY updated_seq"
        )
        params: tuple[Any, ...] = (account_id, older_than_seq)
        if room is not None:
            sql, params = sql + " LIMIT ?", (*params, room)
        rows = tx.all(sql, params)
        if not rows:
            continue
        tx.executemany(
            f"DELETE FROM {table} WHERE account_id = ? AND id = ?",
            [(account_id, row_id) for row_id, _ in rows],
        )
        top = max(int(destroyed) for _, destroyed in rows)
        for data_type in data_types:
            _raise_floor(tx, account_id, data_type, top)
        purged += len(rows)
    return purged


def purge_changes_before(tx: Tx, account_id: str, *, before: float, limit: int) -> int:
    """One bounded step of the change-log retention: delete at most ``limit`` rows.

    Tombstones destroyed by a seq taken before ``before`` (Unix time) go first, oldest
    first (raising the floors, see :func:`purge_tombstones`); once none is left, the
    ``seq_log`` entries up to that seq.  Returns the rows deleted: fewer than ``limit``
    means nothing older than ``before`` is left.
    """
    last_old = tx.scalar(
        "SELECT max(seq) FROM seq_log WHERE account_id = ? AND at < ?", (account_id, before)
    )
    if last_old is None:
        return 0
    purged = purge_tombstones(tx, account_id, int(last_old) + 1, limit=limit)
    if purged < limit:
        purged += tx.execute(
            "DELETE FROM seq_log WHERE account_id = ? AND seq IN (SELECT seq FROM seq_log"
            " WHERE account_id = ? AND seq <= ? ORDER BY seq LIMIT ?)",
            (account_id, account_id, int(last_old), limit - purged),
        )
    return purged


def purge_older_than(tx: Tx, account_id: str, days: float, now: float) -> int:
    """Purge the tombstones destroyed more than ``days`` before ``now`` (Unix time).

    Maps the retention to a seq through ``seq_log`` (the last seq taken before the cutoff),
    purges up to it and forgets the log entries it no longer needs.  Returns rows deleted.
    """
    if days < 0:
        raise ValueError("days must not be negative")
    last_old = tx.scalar(
        "SELECT max(seq) FROM seq_log WHERE account_id = ? AND at < ?",
        (account_id, now - days * 86400.0),
    )
    if last_old is None:
        return 0
    purged = purge_tombstones(tx, account_id, int(last_old) + 1)
    tx.execute("DELETE FROM seq_log WHERE account_id = ? AND seq <= ?", (account_id, last_old))
    return purged
