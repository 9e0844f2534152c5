"""The PostgreSQL cache backend: its connections, its SQL dialect, its migrations.

Theory of operation: this is the ONLY module that imports ``psycopg`` (an optional
dependency: ``pip install imapjmap[postgresql]``).  :class:`~imapjmap.store.db.Store` picks
it for a ``postgresql://`` cache and drives it exactly as it drives SQLite (the rules of
:mod:`imapjmap.store.db` hold): one worker thread per connection, one transaction per
``Store.run``/``Store.read``, :class:`PgTx` the only surface the query modules see.  psycopg's
synchronous API is what fits that design: each ``fn(tx)`` stays a plain function composing
statements in one transaction, where an asyncio-only driver would turn every one of them into
a coroutine.

Rule 1: the query modules write SQLite's SQL; :func:`translate` turns each distinct statement
        into PostgreSQL's once (placeholders, ``INSERT OR REPLACE``/``OR IGNORE`` to
        ``ON CONFLICT`` on the table's primary key, ``instr``, the JSON functions, SQLite's
        planner hints dropped, ``LIKE`` to ``ILIKE``: SQLite's LIKE ignores ASCII case).
        Anything else must be written in the SQL both understand.
Rule 2: the migrations are SQLite's too; :func:`translate_ddl` gives every integer column
        ``BIGINT`` (modseqs are 63-bit, UIDVALIDITY 32-bit unsigned), ``REAL`` double
        precision, ``BLOB`` ``BYTEA`` and every text column the ``"C"`` collation, so that
        ``ORDER BY`` sorts as SQLite's byte order does whatever the database's locale.
        The version lives in the table ``imapjmap_schema``.
Rule 3: isolation.  A write transaction holds a transaction-level advisory lock on its
        account (one not for an account holds the lock of all accounts, and so waits for
        every write), so writes of one account never interleave, as under SQLite's one
        writer, even from several proxy instances; migrating holds the lock of all accounts,
        so instances starting at once migrate one after the other.  A read is
        ``REPEATABLE READ READ ONLY``: one snapshot, like a SQLite read transaction.
Rule 4: errors map as SQLite's do (``store.db`` Rule 4): a lost or refused connection, a
        server shutting down, a lock or statement timeout, a cancel, a serialization failure
        or resource exhaustion is ``CacheUnavailable``; anything else ``CacheCorrupt``.  A
        connection found broken is opened again by the next transaction, so the proxy
        recovers from a PostgreSQL restart by itself.
Rule 5: a read's budget (``store.db`` Rule 6) is the reader connections'
        ``statement_timeout`` plus ``Tx.check`` between statements; a stop cancels the
        statement on the server.  Reader processes (``read_apart``) are not used: the
        reads' work is the server's.
Rule 6: the password never appears in a log or an error: it comes from the environment
        (libpq's ``PGPASSWORD``, ``PGPASSFILE``) or a file, and :func:`redact` strips one
        given in the URL from every name this module prints.
Rule 7: the writer keeps the planner's statistics up with what it inserts: once it has
        inserted as many rows into a table as the table held at its last ``ANALYZE``
        (at least ``_ANALYZE_MIN``), it analyzes that table after the commit.  A first
        sync fills empty tables faster than autovacuum looks at them, and the plans made
        for an empty table (nested loops over sequential scans) made each mailbox count
        of a first sync of 10,000 messages take over 5 s instead of 60 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import threading
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import errors as pgerrors
from psycopg.pq import TransactionStatus

from imapjmap.errors import CacheCorrupt, ProxyError
from imapjmap.store import schema
from imapjmap.store.db import (
    CacheUnavailable,
    Params,
    TransactionTooLong,
    Tx,
    _Job,
    split_statements,
)

log = logging.getLogger(__name__)

SCHEMES: Final = ("postgresql://", "postgres://")

# Advisory lock keys (Rule 3): the two-integer form, in a space of their own ("IJMP"); the
# second integer 0 is every account, else a hash of the account id.
_LOCK_SPACE: Final = schema.APPLICATION_ID
_ALL_ACCOUNTS: Final = 0

# SQLSTATE classes that say "try again later" (Rule 4): 08 connection exception, 40
# transaction rollback (serialization failure, deadlock), 53 insufficient resources, 57
# operator intervention (cancel, shutdown), 58 system error (I/O), 55P03 lock not available.
_TRANSIENT_CLASSES: Final = ("08", "40", "53", "57", "58")
_TRANSIENT_STATES: Final = frozenset({"55P03", "25006"})  # 25006: a write in a read, as SQLite
# Rule 7: rows a table is given before its first ANALYZE of this connection.
_ANALYZE_MIN: Final = 1000


def is_postgresql(target: str) -> bool:
    """Whether a cache target names a PostgreSQL database rather than a SQLite file."""
    return target.startswith(SCHEMES)


def redact(url: str) -> str:
    """The URL without its password, for logs and errors (Rule 6)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def lock_key(account: str) -> int:
    """The advisory lock of one account's writes (a 32-bit signed hash, never 0)."""
    value = zlib.crc32(account.encode()) & 0x7FFFFFFF
    return value or 1


# --- the dialect ------------------------------------------------------------------------


def _primary_keys(migrations: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Each table's primary key, read from the migrations (for ``INSERT OR REPLACE``)."""
    out: dict[str, tuple[str, ...]] = {}
    for script in migrations:
        for statement in split_statements(script):
            table = re.match(r"CREATE TABLE (\w+)", statement)
            if table is None:
                continue
            key = re.search(r"PRIMARY KEY \(([^)]*)\)", statement)
            if key is not None:
                out[table[1]] = tuple(c.strip() for c in key[1].split(","))
                continue
            inline = re.search(r"\n\s*(\w+)\s[^,\n]*PRIMARY KEY", statement)
            if inline is not None:
                out[table[1]] = (inline[1],)
    return out


_PRIMARY_KEYS: Final = _primary_keys(schema.MIGRATIONS)

_INSERT_OR: Final = re.compile(r"^\s*INSERT OR (REPLACE|IGNORE) INTO (\w+) \(([^)]*)\)")
_REWRITES: Final = (
    (re.compile(r"\s+INDEXED BY \w+"), ""),  # SQLite planner hints
    (re.compile(r"(?<=[\s(,])\+(?=[A-Za-z_])"), ""),
    (re.compile(r"\bCROSS JOIN\b"), "JOIN"),
    (re.compile(r"\binstr\("), "strpos("),
    (re.compile(r"\bLIKE\b"), "ILIKE"),  # SQLite's LIKE folds ASCII case
    (
        re.compile(r"\bjson_extract\(([\w.]+), \?\)"),
        r"jsonb_path_query_first(\1::jsonb, ?::jsonpath)",  # a SQLite path is a jsonpath
    ),
    (re.compile(r"\bjson_each\(\?\)"), "jsonb_array_elements_text(?::jsonb)"),
)


@functools.lru_cache(maxsize=4096)
def translate(sql: str) -> str:
    """One statement of SQLite's SQL in PostgreSQL's, with psycopg's placeholders (Rule 1)."""
    head = _INSERT_OR.match(sql)
    if head is not None:
        sql = "INSERT INTO" + sql[head.start(2) - 1 :]
        key = _PRIMARY_KEYS.get(head[2])
        if head[1] == "IGNORE":
            sql += " ON CONFLICT DO NOTHING"
        elif key is None:
            raise ProxyError(f"INSERT OR REPLACE into {head[2]}: no primary key known")
        else:
            columns = [c.strip() for c in head[3].split(",")]
            updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
            sql += f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
    for pattern, replacement in _REWRITES:
        sql = pattern.sub(replacement, sql)
    return sql.replace("%", "%%").replace("?", "%s")


_DDL_TYPES: Final = (
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b"), "BYTEA"),
    (re.compile(r"\bTEXT\b"), 'TEXT COLLATE "C"'),
    (re.compile(r"\)\s*WITHOUT ROWID\s*;?\s*$"), ")"),
)


_INSERT_INTO: Final = re.compile(r"^\s*INSERT (?:OR \w+ )?INTO (\w+)")


@functools.lru_cache(maxsize=1024)
def inserted_table(sql: str) -> str | None:
    """The table an ``INSERT`` statement (of SQLite's SQL) writes to, else None (Rule 7)."""
    found = _INSERT_INTO.match(sql)
    return None if found is None else found[1]


def translate_ddl(statement: str) -> str:
    """One migration statement of SQLite's in PostgreSQL's (Rule 2)."""
    for pattern, replacement in _DDL_TYPES:
        statement = pattern.sub(replacement, statement)
    return statement.rstrip().rstrip(";")


def _translate_error(exc: psycopg.Error, what: str) -> ProxyError:
    state = exc.sqlstate or ""
    lost = isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and not state
    if lost or state[:2] in _TRANSIENT_CLASSES or state in _TRANSIENT_STATES:
        return CacheUnavailable(f"cache {what}: {_first_line(exc)}")
    return CacheCorrupt(f"cache {what}: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _head(sql: str) -> str:
    words = sql.split()
    return " ".join(words[:4]) if words else "statement"


# --- transactions -------------------------------------------------------------------------


class PgTx(Tx):
    """:class:`~imapjmap.store.db.Tx` on a PostgreSQL connection."""

    __slots__ = ("_pg",)

    def __init__(self, conn: PgConnection, job: _Job | None) -> None:
        self._pg = conn
        self._job = job
        self._live = True
        self.taken_seqs: dict[str, int] = {}

    def _cursor(self, sql: str, params: Params) -> Any:  # a psycopg cursor, read the same way
        self.check()
        try:
            cursor = self._pg.run(translate(sql), _without_nul(params))
        except psycopg.Error as exc:
            raise self._pg.failed(exc, _head(sql), self._job) from exc
        table = inserted_table(sql)
        if table is not None:
            self._pg.inserted(table, cursor.rowcount)
        return cursor

    def all_of(self, *queries: tuple[str, Sequence[Any]]) -> list[list[tuple[Any, ...]]]:
        """The queries in one simple query: one round trip (with the BEGIN if not sent)."""
        self.check()
        sql = "; ".join(translate(q) for q, _ in queries)
        params = [p for _, ps in queries for p in _without_nul(ps)]
        try:
            cursor = self._pg.run(sql, params, together=True)
            out = []
            for number in range(len(queries)):
                if number:
                    cursor.nextset()
                out.append(cursor.fetchall())
        except psycopg.Error as exc:
            raise self._pg.failed(exc, _head(queries[0][0]), self._job) from exc
        return out

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        self.check()
        try:
            self._pg.run_begin()
            cursor = self._pg.cursor()
            cursor.executemany(translate(sql), [_without_nul(row) for row in rows])
        except psycopg.Error as exc:
            raise self._pg.failed(exc, _head(sql), self._job) from exc
        table = inserted_table(sql)
        if table is not None:
            self._pg.inserted(table, cursor.rowcount)
        return cursor.rowcount


def _without_nul(params: Any) -> Any:
    """The parameters with every NUL character of a string replaced by U+FFFD: PostgreSQL's
    text cannot hold one (SQLite's can), and a mail header decoded from ``=00`` may carry
    one; refused, it would fail the whole sync batch of its account, again and again."""
    if isinstance(params, Mapping):
        return params
    if not any(type(p) is str and "\x00" in p for p in params):
        return params
    return [p.replace("\x00", "\ufffd") if type(p) is str else p for p in params]


class PgConnection:
    """One PostgreSQL connection as a :class:`~imapjmap.store.db.BackendConnection`, opened
    again when it broke (Rule 4)."""

    def __init__(self, url: str, password: str | None, settings: Sequence[str]) -> None:
        self.name = redact(url)
        self._url = url
        self._password = password
        self._settings = tuple(settings)
        self._raw: psycopg.Connection[Any] | None = None
        self._cursor: psycopg.Cursor[Any] | None = None
        self._lock = threading.Lock()
        self._reading = False  # the transaction open is a read
        self._deferred: str | None = None  # its BEGIN, until the first statement carries it
        self._client_cursor: psycopg.ClientCursor[Any] | None = None
        self._pending = False  # a read's COMMIT was sent and its answer not read yet
        # Rule 7: table -> rows inserted since its last ANALYZE (committed, and in the
        # transaction open), and the rows it held then
        self._inserted: dict[str, int] = {}
        self._inserting: dict[str, int] = {}
        self._analyzed: dict[str, int] = {}

    def open(self) -> None:
        """Connect now (worker thread); CacheUnavailable when the server cannot be reached."""
        self._connected()

    def _connected(self) -> psycopg.Connection[Any]:
        raw = self._raw
        if raw is not None and not raw.closed and not raw.broken:
            return raw
        self._forget()
        extra: dict[str, Any] = {"autocommit": True, "application_name": "imapjmap"}
        if self._password is not None:
            extra["password"] = self._password
        try:
            raw = psycopg.connect(self._url, connect_timeout=10, **extra)
            for setting in self._settings:
                raw.execute(setting)
        except psycopg.Error as exc:
            raise CacheUnavailable(f"cache {self.name}: {_first_line(exc)}") from exc
        with self._lock:
            self._raw, self._cursor = raw, raw.cursor()
            self._client_cursor = psycopg.ClientCursor(raw)
        return raw

    def configure(self, setting: str) -> None:
        """Apply a ``SET`` now and to every connection opened again later."""
        self._settings += (setting,)
        try:
            self._connected().execute(setting)
        except psycopg.Error as exc:
            raise _translate_error(exc, "SET") from exc

    def cursor(self) -> psycopg.Cursor[Any]:
        if self._cursor is None:
            raise CacheUnavailable(f"cache {self.name}: connection closed")
        return self._cursor

    def failed(self, exc: psycopg.Error, what: str, job: _Job | None) -> ProxyError:
        """The internal error for ``exc`` (Rule 4); a statement timeout spends the budget."""
        if isinstance(exc, pgerrors.QueryCanceled) and job is not None and job.budget:
            job.stop("budget")  # our own cancel set a reason first; this keeps it
            return job.error()
        return _translate_error(exc, what)

    def inserted(self, table: str, rows: int) -> None:
        """Count rows a statement of the transaction open inserted (Rule 7)."""
        if rows > 0:
            self._inserting[table] = self._inserting.get(table, 0) + rows

    def begin(self, job: _Job | None, *, write: bool) -> Tx:
        self._drain()
        self._connected()
        self._inserting.clear()
        self._reading = not write
        tx = PgTx(self, job)
        if not write:
            sql = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
        elif job is None or not job.account:
            sql = f"BEGIN; SELECT pg_advisory_xact_lock({_LOCK_SPACE}, {_ALL_ACCOUNTS})"
        else:
            sql = (
                f"BEGIN; SELECT pg_advisory_xact_lock_shared({_LOCK_SPACE}, {_ALL_ACCOUNTS}),"
                f" pg_advisory_xact_lock({_LOCK_SPACE}, {lock_key(job.account)})"
            )
        tx.check()
        self._deferred = sql  # sent with the first statement: one round trip for both
        return tx

    def run(
        self, sql: str, params: Params, *, together: bool = False
    ) -> psycopg.Cursor[Any] | psycopg.ClientCursor[Any]:
        """Execute one statement of the transaction; the first one carries its BEGIN.

        ``together``: ``sql`` is several statements, sent in one simple query (bound on
        this side); the cursor is left on the first one's result."""
        begin = self._deferred
        if begin is None:
            if together:
                return self._begin_with("", sql, params)
            return self.cursor().execute(sql, params)
        self._deferred = None
        try:
            cursor = self._begin_with(begin, sql, params)
        except psycopg.Error:
            # a connection the server dropped while idle (a restart) says so only when used:
            # open it again once, nothing was done in the transaction yet
            if self._raw is None or not self._raw.broken:
                raise
            self._connected()
            cursor = self._begin_with(begin, sql, params)
        for _ in range(begin.count(";") + 1):
            cursor.nextset()
        return cursor

    def _begin_with(self, begin: str, sql: str, params: Params) -> psycopg.ClientCursor[Any]:
        cursor = self._client_cursor
        if cursor is None:
            raise CacheUnavailable(f"cache {self.name}: connection closed")
        # bound on this side, so that both go in one simple query
        cursor.execute(f"{begin}; {sql}" if begin else sql, params)
        return cursor

    def run_begin(self) -> None:
        """Send a BEGIN still held back (before a statement that cannot carry it)."""
        begin, self._deferred = self._deferred, None
        if begin is not None:
            self.cursor().execute(begin)

    def commit(self, tx: Tx) -> None:
        if self._deferred is not None:  # no statement: nothing was begun
            self._deferred = None
            return
        raw = self._raw
        if self._reading and raw is not None:
            # a read has nothing to lose: its COMMIT is sent, and its answer read before the
            # connection's next use, so the caller does not wait for that round trip (the
            # server ends the snapshot at once all the same)
            raw.pgconn.send_query(b"COMMIT")
            self._pending = True
            return
        try:
            self.cursor().execute("COMMIT")
        except psycopg.Error as exc:
            raise _translate_error(exc, "COMMIT") from exc
        self._analyze_grown()

    def _analyze_grown(self) -> None:
        """ANALYZE the tables that grew by as much as they held (Rule 7), after a commit.
        A failure (a lock timeout behind autovacuum's own) only postpones it."""
        for table, rows in self._inserting.items():
            self._inserted[table] = self._inserted.get(table, 0) + rows
        self._inserting.clear()
        for table, rows in list(self._inserted.items()):
            if rows < max(_ANALYZE_MIN, self._analyzed.get(table, 0)):
                continue
            try:
                cursor = self.cursor().execute(
                    f"ANALYZE {table}; SELECT reltuples::bigint FROM pg_class"
                    f" WHERE oid = '{table}'::regclass"
                )
                cursor.nextset()
                row = cursor.fetchone()
            except psycopg.Error as exc:
                log.debug("cache %s: ANALYZE %s failed: %s", self.name, table, _first_line(exc))
                return
            self._inserted[table] = 0
            self._analyzed[table] = max(int(row[0]) if row else 0, rows)

    def _drain(self) -> None:
        """Read the answer to a read's COMMIT (:meth:`commit`); a connection that fails
        there is dropped, to be opened again."""
        if not self._pending:
            return
        self._pending = False
        raw = self._raw
        if raw is None:
            return
        try:
            while (result := raw.pgconn.get_result()) is not None:
                if result.status != psycopg.pq.ExecStatus.COMMAND_OK:
                    raise psycopg.OperationalError("COMMIT of a read failed")
        except psycopg.Error:
            self._forget()

    def rollback(self) -> None:
        self._deferred = None
        self._drain()
        raw = self._raw
        if raw is None or raw.closed or raw.broken:
            return
        if raw.info.transaction_status == TransactionStatus.IDLE:
            return
        try:
            raw.execute("ROLLBACK")
        except psycopg.Error:
            log.warning("cache %s: ROLLBACK failed; the connection is opened again", self.name)
            self._forget()

    def interrupt(self) -> None:
        """Any thread: cancel the statement on the server, from a thread of its own (the
        cancel request is a connection of its own, which the event loop must not wait for)."""
        with self._lock:
            raw = self._raw
        if raw is not None and not raw.closed:
            threading.Thread(target=_cancel, args=(raw,), daemon=True).start()

    def watch(self, progress: Callable[[], int]) -> None:
        """Nothing to watch: the server times and cancels statements (Rule 5)."""

    def close(self) -> None:
        self._drain()
        self._forget()

    def _forget(self) -> None:
        with self._lock:
            raw, self._raw, self._cursor = self._raw, None, None
            self._client_cursor = None
        if raw is not None:
            with contextlib.suppress(psycopg.Error):
                raw.close()


class LoopReader:
    """One autocommit connection of psycopg's asyncio API, on the event loop, for reads of
    one statement (``Store.scalar_now``): a round trip without a hop to a worker thread
    and back (0.25 ms instead of 0.5-0.75 ms on an idle 2-core machine, and fewer waits
    for a core under load).  Opened when first used; dropped when it broke or a caller
    gave up in the middle of a statement, and opened again by the next read (Rule 4)."""

    def __init__(self, url: str, password: str | None, budget: float | None) -> None:
        self.name = redact(url)
        self._url = url
        self._password = password
        self._budget = budget
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._connecting = asyncio.Lock()

    async def _connected(self) -> psycopg.AsyncConnection[Any]:
        async with self._connecting:
            conn = self._conn
            if conn is not None and not conn.closed and not conn.broken:
                return conn
            extra: dict[str, Any] = {"autocommit": True, "application_name": "imapjmap"}
            if self._password is not None:
                extra["password"] = self._password
            try:
                conn = await psycopg.AsyncConnection.connect(self._url, connect_timeout=10, **extra)
            except psycopg.Error as exc:
                raise CacheUnavailable(f"cache {self.name}: {_first_line(exc)}") from exc
            try:
                if self._budget is not None:  # not in options: the URL's own may hold some
                    timeout = max(1, round(self._budget * 1000))
                    await conn.execute(f"SET statement_timeout = {timeout}")
            except psycopg.Error as exc:
                await conn.close()
                raise CacheUnavailable(f"cache {self.name}: {_first_line(exc)}") from exc
            self._conn = conn
            return conn

    async def scalar(self, sql: str, params: Sequence[Any]) -> Any:
        """The first column of the statement's first row, or None.

        Raises:
            TransactionTooLong: over the read budget (the connection's statement_timeout).
            CacheUnavailable, CacheCorrupt: as a transaction's statement (Rule 4).
        """
        for attempt in (1, 2):
            conn = await self._connected()
            try:
                cursor = await conn.execute(translate(sql), _without_nul(params))
                row = await cursor.fetchone()
            except psycopg.Error as exc:
                if not conn.broken:
                    if isinstance(exc, pgerrors.QueryCanceled) and self._budget is not None:
                        raise TransactionTooLong(self._budget) from exc
                    raise _translate_error(exc, _head(sql)) from exc
                await self.close()
                # a connection the server dropped while idle (a restart) says so only
                # when used: a read is asked again once, on a new one
                if attempt == 2:
                    raise _translate_error(exc, _head(sql)) from exc
                continue
            except BaseException:  # cancelled mid-statement: the connection's state is unknown
                await asyncio.shield(self.close())
                raise
            return None if row is None else row[0]
        raise AssertionError("unreachable")

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()


def _cancel(raw: psycopg.Connection[Any]) -> None:
    try:
        raw.cancel_safe(timeout=5.0)
    except (psycopg.Error, OSError) as exc:
        log.debug("cache: cancel failed: %s", exc)


# --- opening and migrating ----------------------------------------------------------------


def connect_writer(
    url: str, password: str | None, busy_timeout: float, migrations: Sequence[str]
) -> PgConnection:
    """Open the writer and migrate (Rule 2, Rule 3), on its worker thread."""
    conn = PgConnection(url, password, ())
    conn.open()
    try:
        from imapjmap.store.db import _transaction  # the same transaction as every other

        found = _transaction(conn, lambda tx: _migrate(tx, migrations))
    except BaseException:
        conn.close()
        raise
    if found < len(migrations):
        log.info("cache %s: schema migrated from v%d to v%d", conn.name, found, len(migrations))
    # a write waits this long for another instance's write of the same account, as a
    # SQLite writer waits busy_timeout for another process's
    conn.configure(f"SET lock_timeout = {max(1, round(busy_timeout * 1000))}")
    return conn


def connect_reader(url: str, password: str | None, budget: float | None) -> PgConnection:
    """Open a reader, its statements bounded by the read budget (Rule 5)."""
    settings = [] if budget is None else [f"SET statement_timeout = {max(1, round(budget * 1000))}"]
    conn = PgConnection(url, password, settings)
    conn.open()
    return conn


def _migrate(tx: Tx, migrations: Sequence[str]) -> int:
    """Bring the schema to ``len(migrations)`` under the lock of all accounts; return the
    version found.

    Raises:
        CacheCorrupt: a newer schema, or another program's tables in the schema.
    """
    target = len(migrations)
    if tx.scalar("SELECT to_regclass('imapjmap_schema')") is None:
        others = tx.scalar(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()"
        )
        if others:
            raise CacheCorrupt(
                "the cache database holds another program's tables; give imapjmap a database"
                " (or schema) of its own"
            )
        tx.execute(
            "CREATE TABLE imapjmap_schema (application_id BIGINT NOT NULL, version BIGINT NOT NULL)"
        )
        tx.execute(
            "INSERT INTO imapjmap_schema (application_id, version) VALUES (?, 0)",
            (schema.APPLICATION_ID,),
        )
    row = tx.one("SELECT application_id, version FROM imapjmap_schema")
    if row is None or int(row[0]) != schema.APPLICATION_ID:
        raise CacheCorrupt("the cache database's imapjmap_schema table is not imapjmap's")
    found = int(row[1])
    if found > target:
        raise CacheCorrupt(
            f"cache schema version {found} is newer than this imapjmap understands ({target});"
            " upgrade imapjmap or drop the cache database"
        )
    for version in range(found, target):
        for statement in split_statements(migrations[version]):
            tx.execute(translate_ddl(statement))
    tx.execute("UPDATE imapjmap_schema SET version = ?", (target,))
    return found
