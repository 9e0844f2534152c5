"""The SQLite cache: connection, worker thread, transactions, migrations.

Theory of operation: this is the ONLY module that imports ``sqlite3``.  A :class:`Store`
owns one connection, opened, used and closed by one dedicated worker thread (a
single-worker ``ThreadPoolExecutor``), so every access is serialised in submission order and
the event loop never blocks on disk.  Other modules see only :class:`Tx`, a thin wrapper
handed to a synchronous function that runs inside one ``BEGIN IMMEDIATE ... COMMIT``.

Rule 1: one ``Store.run`` call is one transaction.  Compose ``store.queries`` functions in one
        ``fn`` to make them atomic; an exception inside ``fn`` rolls everything back.
Rule 2: ``fn`` runs in the worker thread: it must not touch the event loop, must not block on
        anything but SQLite, and must not be a coroutine function.
Rule 3: a ``Tx`` is dead once its transaction ends; using it later raises ``RuntimeError``.
Rule 4: ``sqlite3`` exceptions never leave this module.  They become ``CacheUnavailable``
        (transient: busy, locked, disk full, I/O, cannot open) or ``CacheCorrupt`` (anything
        else: a file that is not a database, a broken page, a violated constraint, SQL that
        does not match the schema), chained with ``from``.
Rule 5: cancelling ``Store.run`` does not interrupt a transaction that already started: it
        either completes entirely or never starts; the caller just stops waiting.
Rule 6: nothing is cached in memory across transactions, so several processes may share one
        cache file (WAL mode; writers wait up to ``busy_timeout`` seconds for each other).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

from imapjmap.errors import CacheCorrupt, ProxyError
from imapjmap.store import schema

log = logging.getLogger(__name__)

T = TypeVar("T")
Params = Sequence[Any] | Mapping[str, Any]

_MIN_SQLITE: Final = (3, 24, 0)  # UPSERT (3.24) and partial indexes (3.8)

# Measured on a first sync of 100,000 messages (random keys: Email ids, Message-IDs, so a
# batch of 1,000 new Emails dirties thousands of index pages): a 16 MiB page cache instead of
# 2 MiB (fewer page reads while inserting), a checkpoint every ~40 MB of WAL instead of every
# 4 MB (each batch no longer pays one), and the temporary b-trees of the mailbox counts
# (COUNT DISTINCT) in memory.
_PERFORMANCE_PRAGMAS: Final = (
    "cache_size = -16384",
    "wal_autocheckpoint = 10000",
    "temp_store = MEMORY",
)

# Primary result codes that say "try again later", not "the cache is broken".
_TRANSIENT: Final = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_INTERRUPT,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
    }
)


class CacheUnavailable(ProxyError):
    """The cache cannot be used right now: locked too long, disk full, I/O error, closed."""

    jmap_hint = "serverUnavailable"


def _translate(exc: sqlite3.Error, what: str) -> ProxyError:
    """Map a ``sqlite3`` exception to the internal tree (the caller chains it with ``from``)."""
    code = getattr(exc, "sqlite_errorcode", -1)
    if code >= 0 and (code & 0xFF) in _TRANSIENT:
        name = getattr(exc, "sqlite_errorname", "")
        return CacheUnavailable(f"cache {what}: {exc} ({name})")
    if isinstance(exc, sqlite3.ProgrammingError | sqlite3.InterfaceError) and code < 0:
        return ProxyError(f"cache misuse in {what}: {exc}")  # a bug in our calls, not the file
    return CacheCorrupt(f"cache {what}: {exc}")


class Tx:
    """One open transaction; the only database surface other modules see.

    ``taken_seqs`` maps account ids to the seq taken in this transaction; it belongs to
    ``queries.next_seq`` (which takes ``seq + 1`` at most once per transaction and account).
    """

    __slots__ = ("_conn", "_live", "taken_seqs")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._live = True
        self.taken_seqs: dict[str, int] = {}

    def _cursor(self, sql: str, params: Params) -> sqlite3.Cursor:
        if not self._live:
            raise RuntimeError("Tx used outside its transaction")
        try:
            return self._conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise _translate(exc, _head(sql)) from exc

    def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; return the number of rows it changed (-1 for DDL/PRAGMA)."""
        return self._cursor(sql, params).rowcount

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        """Run one statement once per row of parameters; return the rows changed in total."""
        if not self._live:
            raise RuntimeError("Tx used outside its transaction")
        try:
            return self._conn.executemany(sql, rows).rowcount
        except sqlite3.Error as exc:
            raise _translate(exc, _head(sql)) from exc

    def one(self, sql: str, params: Params = ()) -> tuple[Any, ...] | None:
        """The first row of a query, or None."""
        row: tuple[Any, ...] | None = self._cursor(sql, params).fetchone()
        return row

    def all(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        """Every row of a query."""
        rows: list[tuple[Any, ...]] = self._cursor(sql, params).fetchall()
        return rows

    def scalar(self, sql: str, params: Params = ()) -> Any:
        """The first column of the first row, or None when there is no row."""
        row = self.one(sql, params)
        return None if row is None else row[0]


def _head(sql: str) -> str:
    """The start of a statement, for error messages (never the parameters)."""
    words = sql.split()
    return " ".join(words[:4]) if words else "statement"


def _transaction(conn: sqlite3.Connection, fn: Callable[[Tx], T]) -> T:
    """Run ``fn`` in BEGIN IMMEDIATE ... COMMIT on the worker thread; ROLLBACK on any error."""
    tx = Tx(conn)
    try:
        tx.execute("BEGIN IMMEDIATE")
        result = fn(tx)
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            raise TypeError("Store.run needs a plain function, not a coroutine function")
        tx.execute("COMMIT")
        return result
    except BaseException:
        _rollback(conn)
        raise
    finally:
        tx._live = False


def _rollback(conn: sqlite3.Connection) -> None:
    if not conn.in_transaction:  # BEGIN failed, or SQLite already rolled back (e.g. disk full)
        return
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        log.exception("cache ROLLBACK failed")  # the original exception is re-raised


def split_statements(script: str) -> Iterator[str]:
    """Yield the complete statements of a ``;``-separated SQL script.

    Raises:
        ValueError: the script ends inside a statement.
    """
    buf = ""
    for piece in script.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \t\r\n;"):
                yield buf.strip()
            buf = ""
    if buf.strip(" \t\r\n;"):
        raise ValueError(f"incomplete SQL statement: {buf.strip()[:60]!r}")


def _migrate(tx: Tx, migrations: Sequence[str]) -> int:
    """Bring the schema to ``len(migrations)``; return the version found on disk.

    Raises:
        CacheCorrupt: the file was written by newer code, or is another program's database.
    """
    found = int(tx.scalar("PRAGMA user_version"))
    app_id = int(tx.scalar("PRAGMA application_id"))
    target = len(migrations)
    if found > target:
        raise CacheCorrupt(
            f"cache schema version {found} is newer than this imapjmap understands ({target});"
            " upgrade imapjmap or delete the cache file"
        )
    if app_id != schema.APPLICATION_ID and (found > 0 or app_id != 0 or _has_tables(tx)):
        raise CacheCorrupt("the cache file is another program's SQLite database; refusing it")
    for version in range(found, target):
        for statement in split_statements(migrations[version]):
            tx.execute(statement)
        tx.execute(f"PRAGMA user_version = {version + 1:d}")
    if found < target:
        tx.execute(f"PRAGMA application_id = {schema.APPLICATION_ID:d}")
    return found


def _has_tables(tx: Tx) -> bool:
    return bool(tx.scalar("SELECT count(*) FROM sqlite_master"))


def _connect(path: str, busy_timeout: float, migrations: Sequence[str]) -> sqlite3.Connection:
    """Open, configure and migrate; runs on the worker thread that will own the connection."""
    if sqlite3.sqlite_version_info < _MIN_SQLITE:
        raise CacheUnavailable(f"SQLite {sqlite3.sqlite_version} is too old; 3.24 or newer needed")
    try:
        conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    except sqlite3.Error as exc:
        raise _translate(exc, f"open {path!r}") from exc
    try:
        mode = Tx(conn).scalar("PRAGMA journal_mode = WAL")
        if mode not in ("wal", "memory"):
            log.warning("cache %r: WAL unavailable, journal_mode is %s", path, mode)
        Tx(conn).execute("PRAGMA synchronous = NORMAL")
        Tx(conn).execute("PRAGMA foreign_keys = ON")
        for pragma in _PERFORMANCE_PRAGMAS:
            Tx(conn).execute(f"PRAGMA {pragma}")
        found = _transaction(conn, lambda tx: _migrate(tx, migrations))
    except BaseException:
        conn.close()
        raise
    if found < len(migrations):
        log.info("cache %r: schema migrated from v%d to v%d", path, found, len(migrations))
    return conn


class Store:
    """The cache: one SQLite connection behind one worker thread.  Create with :meth:`open`."""

    def __init__(self, executor: ThreadPoolExecutor, conn: sqlite3.Connection, path: str) -> None:
        self._executor = executor
        self._conn = conn
        self._closed = False
        self.path = path

    @classmethod
    async def open(
        cls,
        path: str,
        *,
        busy_timeout: float = 5.0,
        migrations: Sequence[str] = schema.MIGRATIONS,
    ) -> Store:
        """Open (creating if needed) and migrate the cache at ``path`` (``":memory:"`` allowed).

        Args:
            path: the SQLite file.
            busy_timeout: seconds a transaction waits for another process's write lock.
            migrations: the schema scripts; tests pass their own to exercise migrations.

        Raises:
            CacheCorrupt: not a database, another program's database, or a newer schema.
            CacheUnavailable: the file cannot be opened, or is locked for too long.
        """
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imapjmap-store")
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(
                executor, _connect, path, busy_timeout, tuple(migrations)
            )
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(executor, conn, path)

    async def run(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn(tx)`` on the worker thread inside ONE transaction and return its result.

        Raises:
            CacheUnavailable: the store is closed, or SQLite is busy/full/failing.
            CacheCorrupt: see Rule 4.
            Exception: whatever ``fn`` raised (after the ROLLBACK).
        """
        if self._closed:
            raise CacheUnavailable("cache store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, _transaction, self._conn, fn)

    async def aclose(self) -> None:
        """Finish the queued transactions, close the connection and stop the worker."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._conn.close)
        finally:
            self._executor.shutdown(wait=False)

    def __repr__(self) -> str:
        return f"<Store {self.path!r}{' closed' if self._closed else ''}>"
