"""The cache: connections, worker threads, fair scheduling, transactions, migrations.

Theory of operation: this is the ONLY module that imports ``sqlite3``; a ``postgresql://``
cache runs the same way on :mod:`imapjmap.store.pg`'s connections (a
:class:`BackendConnection` each), and the rules below hold for it except where that module
says otherwise (its Rules 3-5: locking, errors, the read budget).  A :class:`Store`
owns one writer connection and, for a cache file, a few reader connections
(``cache.readers``; WAL lets them read while the writer writes).  Each connection is opened,
used and closed by its own worker thread, so the event loop never blocks on disk and no
connection is touched by two threads (the one exception, ``Connection.interrupt``, is made
for that).  Other modules see only :class:`Tx`, a thin wrapper handed to a synchronous
function that runs inside one transaction.

Rule 1: one ``Store.run`` or ``Store.read`` call is one transaction.  ``run`` is a
        ``BEGIN IMMEDIATE ... COMMIT`` on the writer; ``read`` a deferred ``BEGIN`` on a reader
        whose connection is ``query_only`` (a write there fails), and sees every write
        committed before it started.  Compose ``store.queries`` functions in one ``fn`` to make
        them atomic; an exception inside ``fn`` rolls everything back.  A ``:memory:`` cache
        cannot be shared between connections: it has no readers and reads queue for the writer.
Rule 2: ``fn`` runs in a worker thread: it must not touch the event loop, must not block on
        anything but SQLite, and must not be a coroutine function.
Rule 3: a ``Tx`` is dead once its transaction ends; using it later raises ``RuntimeError``.
Rule 4: ``sqlite3`` exceptions never leave this module.  They become ``CacheUnavailable``
        (transient: busy, locked, disk full, I/O, cannot open, interrupted) or ``CacheCorrupt``
        (anything else: a file that is not a database, a broken page, a violated constraint,
        SQL that does not match the schema), chained with ``from``.
Rule 5: fair share.  Every transaction names its account (``""``: the process's own work) and
        waits in that account's queue; connections are handed out round-robin over the
        accounts that wait (:class:`~imapjmap.store.fair.FairSlots`): the writer to one write
        at a time, the readers to at most ``readers_per_account`` reads of one account at a
        time.  One account's long series of transactions delays another's by at most one of
        its own per turn, and cannot hold every reader.  A read that has run ``_LEND_AFTER``
        seconds pauses most of the time (Rule 6), so it lends its reader's share: one of the
        spare reader connections (as many as ``readers``) serves the others meanwhile.
Rule 6: a read has a time budget (``max_transaction_seconds`` of CPU from its ``BEGIN``,
        checked by a progress handler during statements, before each statement, and by
        ``Tx.check``, which a long Python loop inside ``fn`` calls); over it, it is
        interrupted, rolled back and raises :class:`TransactionTooLong`.  ``Tx.check`` also
        pauses a read now and then (longer once it has run for a while), so that the event
        loop and the other readers get the GIL.  Those pauses, and time lost to a busy
        machine, do not count against the budget (a heavy read slowed down for the others'
        sake must not fail for it), up to ``_PACED_WALL_FACTOR`` times the budget at the wall
        clock.  Writes have no budget: a
        write records what the upstream already did (IMAP first) or one sync batch of
        bounded size; rolling it back would report a change made upstream as failed, or make
        a sync retry the same batch forever.  Opening and migrating have none either.
Rule 7: cancelling a caller whose transaction has not started takes it out of its queue.
        Cancelling a running read interrupts its statement (a read has nothing to lose); a
        running write completes or rolls back entirely and its caller just stops waiting.
        ``aclose`` fails the waiting callers, interrupts the reads at once and the writes after
        a short grace, and returns within about a second whatever runs.
Rule 8: nothing is cached in memory across transactions, so several processes may share one
        cache file (WAL mode; writers wait up to ``busy_timeout`` seconds for each other).
Rule 9: a read whose work is mostly Python (matching a big filter, sorting on computed keys)
        can be run *apart*, in one of a few reader processes (``Store.read_apart``): ``fn``
        is then a module-level function, its arguments and result are pickled.  A thread,
        however often it pauses, shares the interpreter's one GIL with the event loop and
        the other accounts' reads; a process shares only the CPU, and at a lower priority
        (``_PROCESS_NICENESS``), so the operating system serves the others first and the heavy
        read needs no pauses of its own.  The fair share, the time budget and cancellation
        are those of any read (Rules 5-7); one account uses one process at a time.  The
        processes are *spawned* (a fork would copy the worker threads' locks): a script
        that opens a store with processes must guard its main code with
        ``if __name__ == "__main__"``, as ``multiprocessing`` requires.
Rule 10: a read known to be small (a few rows found by an index: whether a kept answer
        still holds, the rows of fifty Emails) can run *here*, at once on the event loop's
        own reader connection (``Store.read_small``): handing it to a reader thread and
        back costs more than the read itself, about a third of a cheap request's CPU under
        load.  It takes no turn in the fair share (it never waits), has a budget of
        ``_SMALL_READ_SECONDS`` and no busy wait; a read over the budget, or one that finds
        the file busy, is rolled back and run again the usual way, on a reader thread.
        On PostgreSQL, whose reads would block the event loop for a network round trip,
        small reads run on one thread and connection of their own instead, outside the
        accounts' queues (with the usual read budget), so they still never wait behind an
        account's long reads; a read of one value (``Store.scalar_now``: the state a kept
        answer is checked against) goes on the event loop's own asyncio connection,
        without that thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib
import inspect
import logging
import multiprocessing
import os
import queue
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from multiprocessing.connection import Connection
from typing import Any, Final, Protocol, TypeVar

from imapjmap.errors import CacheCorrupt, ProxyError
from imapjmap.store import schema
from imapjmap.store.fair import FairSlots

log = logging.getLogger(__name__)

T = TypeVar("T")
Params = Sequence[Any] | Mapping[str, Any]

_MIN_SQLITE: Final = (3, 24, 0)  # UPSERT (3.24) and partial indexes (3.8)

# Measured on a first sync of 100,000 messages (random keys: Email ids, Message-IDs, so a
# batch of 1,000 new Emails dirties thousands of index pages): a 16 MiB page cache instead of
# 2 MiB (fewer page reads while inserting), and a checkpoint every ~40 MB of WAL instead of
# every 4 MB (each batch no longer pays one).  Temporary b-trees (the mailbox recount's
# DISTINCT and GROUP BY, a big sort) go to a temporary file past a small cache, not to
# memory: the recount that ends the first sync of a million messages grew the process by
# 180 MB in memory (peak RSS 404 MB), by 3 MB with a file, for 6 % more of its CPU.
_PERFORMANCE_PRAGMAS: Final = (
    "cache_size = -16384",
    "wal_autocheckpoint = 10000",
    "temp_store = FILE",
)
# Readers share the OS page cache; a smaller page cache each keeps the process's memory
# bounded with several of them.
_READER_PRAGMAS: Final = ("query_only = ON", "cache_size = -4096", "temp_store = FILE")

# SQLite runs some 30-40 million virtual machine instructions a second here; every call of
# the progress handler takes the GIL from the event loop, so it is called about once a
# millisecond, not more.
_PROGRESS_STEPS: Final = 50_000
# A read computing in Python (matching a filter on cache rows) holds the GIL.  The event
# loop, waking from each poll, would then wait a whole switch interval for it, every time,
# and another account's cheap request takes dozens of loop turns.  A read steps aside for a
# moment every few milliseconds (in ``Tx.check`` and in the progress handler), so that a
# waiting loop takes the GIL at once.  A read that has used _LONG_READ_CPU seconds of CPU
# already (one account's heavy request) steps aside longer, two thirds of the time: the other
# accounts' requests, and the IMAP server on the same machine, come first (measured with
# bench/fairness.py: a third of the time left them 4-8 times slower, two thirds 3 times).
# CPU time, not the wall clock: a cheap read slowed down by the others is not a long one,
# and a heavy read is told apart within a few milliseconds of work instead of 0.1 s of it
# (0.1 s at the wall clock, nearly all of it holding the GIL against the cheap reads,
# made them 4 times slower beside 1,000-email Email/gets).
_YIELD_EVERY: Final = 0.002
_YIELD_FOR: Final = 0.0001
_LONG_READ_CPU: Final = 0.02
_LONG_READ_PAUSE: Final = 0.004
# A read running this long (wall clock) lends its reader's share (Rule 5).
_LEND_AFTER: Final = 0.1
# A small read run on the event loop (Rule 10) that takes longer than this is stopped and
# run on a reader thread instead; its progress is checked every _SMALL_READ_STEPS steps.
_SMALL_READ_SECONDS: Final = 0.005
_SMALL_READ_STEPS: Final = 5_000
# While another account has used the cache in the last _OTHERS_RECENT seconds, a long read
# steps aside for most of the time instead (_CONTENDED_PAUSE per _YIELD_EVERY of work, about
# 85%): the heavy request is then the one that waits, not the many cheap ones; alone, it
# keeps the two-thirds share above.
_OTHERS_RECENT: Final = 0.25
_CONTENDED_PAUSE: Final = 0.012
# One account's long work on the event loop (building a big answer) pauses the same share of
# the time between its slices while other accounts use the proxy; a pause never exceeds this.
_MAX_LOOP_PAUSE: Final = 0.1
# Between two parts of one account's work on the IMAP server (the UID ranges of a search that
# reads every message), the same share of the time while other accounts use the proxy; a
# pause never exceeds this.
_MAX_UPSTREAM_PAUSE: Final = 1.0
# A read's budget is CPU time, but it ends at this many times the budget at the wall clock
# whatever it paused or waited: a contended read works about 1 part in 7 (above).
_PACED_WALL_FACTOR: Final = 8
# aclose: how long running writes may finish before they are interrupted, and how long to
# wait for the worker threads after that.
_CLOSE_GRACE: Final = 0.5
_CLOSE_WAIT: Final = 0.4
# Rule 9: the reader processes run at this niceness, so that the event loop's process and
# the IMAP server on the same machine take the CPU first (a weight of about 1 to 9 against
# a process at the default niceness, close to the share a contended long read leaves the
# others by pausing).
_PROCESS_NICENESS: Final = 10

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


class TransactionTooLong(ProxyError):
    """A read ran past ``cache.max_transaction_seconds`` and was rolled back.

    ``serverFail``, not ``serverUnavailable``: the same request would run just as long when
    retried (RFC 8620 §3.6.2: serverUnavailable is for what "may succeed" later).  The
    request's own size made it too costly, so the description names the limit and says so;
    it is the client's to narrow the request, and no traceback is logged.
    """

    jmap_hint = "serverFail"

    def __init__(self, seconds: float) -> None:
        super().__init__(f"cache transaction over {seconds:g} s")
        self.seconds = seconds
        self.client_description = (
            f"the request needs more than the {seconds:g} s of cache time allowed to one"
            " transaction (cache.max_transaction_seconds); narrow it"
        )

    def __reduce__(self) -> tuple[Any, ...]:  # from a reader process (Rule 9)
        return (TransactionTooLong, (self.seconds,))


def _translate(exc: sqlite3.Error, what: str) -> ProxyError:
    """Map a ``sqlite3`` exception to the internal tree (the caller chains it with ``from``)."""
    code = getattr(exc, "sqlite_errorcode", -1)
    if code >= 0 and (code & 0xFF) in _TRANSIENT:
        name = getattr(exc, "sqlite_errorname", "")
        return CacheUnavailable(f"cache {what}: {exc} ({name})")
    if isinstance(exc, sqlite3.ProgrammingError | sqlite3.InterfaceError) and code < 0:
        return ProxyError(f"cache misuse in {what}: {exc}")  # a bug in our calls, not the file
    return CacheCorrupt(f"cache {what}: {exc}")


class _Activity:
    """When each account last asked the cache for something (event loop writes, worker
    threads read): whether a long read has someone to step aside for."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}

    def mark(self, account: str) -> None:
        now = time.monotonic()
        self._seen[account] = now
        if len(self._seen) > 4096:  # forget the idle ones; a copy is atomic under the GIL
            self._seen = {a: t for a, t in list(self._seen.items()) if now - t < _OTHERS_RECENT}

    def others_active(self, account: str) -> bool:
        since = time.monotonic() - _OTHERS_RECENT
        return any(a != account and t >= since for a, t in list(self._seen.items()))


class _LoopUse:
    """The CPU seconds of each account's slices of work on the event loop (``Store.pace``)
    in the current window of ``_OTHERS_RECENT`` seconds: one account's four Email/gets of a
    thousand at once, each under the mark of a long one, took the loop from the others
    as one long one would."""

    __slots__ = ("_used",)

    def __init__(self) -> None:
        self._used: dict[str, tuple[float, float]] = {}

    def add(self, account: str, seconds: float) -> float:
        """Count ``seconds`` for ``account``; return its total in the window."""
        now = time.monotonic()
        since, used = self._used.get(account, (now, 0.0))
        if now - since > _OTHERS_RECENT:
            since, used = now, 0.0
        self._used[account] = (since, used + seconds)
        if len(self._used) > 4096:  # forget the windows that ended
            self._used = {a: w for a, w in self._used.items() if now - w[0] <= _OTHERS_RECENT}
        return used + seconds


class _Flag(Protocol):
    """A shared ``multiprocessing`` value: set by the parent, read by a reader process."""

    value: int


class _Job:
    """The stop switch of one transaction, shared by its worker thread and the event loop.

    ``reason`` is set once: ``"budget"`` (by the worker, past ``deadline``), ``"cancelled"``
    or ``"closing"`` (by the loop).  While the transaction's ``fn`` runs (``armed``) a stop
    also interrupts the statement in progress; the lock makes sure ``interrupt`` never
    reaches the connection outside ``fn``, where it could break the ROLLBACK or the next
    transaction.
    """

    __slots__ = (
        "_armed", "_conn", "_lock", "account", "activity", "budget", "cpu_started", "deadline",
        "next_pause", "paced", "reason", "remote_stop", "started", "wall_deadline", "write",
    )  # fmt: skip

    def __init__(
        self,
        budget: float | None,
        *,
        write: bool,
        account: str = "",
        activity: _Activity | None = None,
        paced: bool = True,
        remote_stop: _Flag | None = None,
    ) -> None:
        self.budget = budget
        self.write = write
        self.account = account
        self.activity = activity
        # a read in a reader process (Rule 9) does not pause: it shares no GIL, and its
        # niceness gives the others the CPU; it is stopped by its parent through a flag
        self.paced = paced
        self.remote_stop = remote_stop
        self.deadline: float | None = None
        self.wall_deadline: float | None = None
        self.started = time.monotonic()
        # arm() reads the worker thread's CPU clock; reading the event loop's here was a
        # system call per read, spent holding the GIL
        self.cpu_started = 0.0
        self.next_pause = self.started + _YIELD_EVERY
        self.reason: str | None = None
        self._armed = False
        self._conn: BackendConnection | None = None
        self._lock = threading.Lock()

    def arm(self, conn: BackendConnection) -> None:
        """``fn`` starts now (worker thread): start the clock, allow interrupts."""
        with self._lock:
            self.started = time.monotonic()
            self.cpu_started = time.thread_time()  # the worker thread's CPU clock
            self.next_pause = self.started + _YIELD_EVERY
            if self.budget is not None:
                self.deadline = self.started + self.budget
                self.wall_deadline = self.started + self.budget * _PACED_WALL_FACTOR
            self._conn = conn
            self._armed = True

    def disarm(self) -> str | None:
        """``fn`` is over (worker thread); return why it was stopped, if it was."""
        with self._lock:
            self._armed = False
            return self.reason

    def stop(self, reason: str) -> None:
        """Ask the transaction to stop (any thread); interrupt its statement if one runs."""
        with self._lock:
            if self.reason is None:
                self.reason = reason
            if self._armed and self._conn is not None:
                self._conn.interrupt()

    def should_stop(self) -> bool:
        """Worker thread, between and during statements: stop requested or budget spent?"""
        if self.reason is not None:
            return True
        if self.remote_stop is not None and self.remote_stop.value:
            with self._lock:
                if self.reason is None:
                    self.reason = "cancelled"
            return True
        if self.deadline is not None and time.monotonic() > self.deadline and self._spent():
            with self._lock:
                if self.reason is None:
                    self.reason = "budget"
            return True
        return False

    def _spent(self) -> bool:
        """Past the deadline at the wall clock: is the budget spent?  Only if the read has used
        that much CPU (its pauses, and a machine busy with other work, do not count) or has
        reached the wall limit; otherwise the deadline moves to when it could be.  The CPU
        clock is read here only, not at every check: it is a system call."""
        assert self.budget is not None and self.wall_deadline is not None
        now = time.monotonic()
        left = self.budget - (time.thread_time() - self.cpu_started)
        if left <= 0 or now >= self.wall_deadline:
            return True
        self.deadline = min(now + left, self.wall_deadline)
        return False

    def step_aside(self) -> None:
        """Worker thread, between and during statements: now and then, a read pauses so that
        the event loop and the other readers take the GIL and the CPU; longer once it has
        worked for a while (one account's heavy request)."""
        if self.write or not self.paced:
            return
        if time.monotonic() >= self.next_pause:
            time.sleep(self._pause(time.thread_time() - self.cpu_started))
            self.next_pause = time.monotonic() + _YIELD_EVERY

    def _pause(self, cpu_used: float) -> float:
        if cpu_used <= _LONG_READ_CPU:
            return _YIELD_FOR
        if self.activity is not None and self.activity.others_active(self.account):
            return _CONTENDED_PAUSE
        return _LONG_READ_PAUSE

    def error(self) -> ProxyError:
        if self.reason == "budget" and self.budget is not None:
            return TransactionTooLong(self.budget)
        return CacheUnavailable(f"cache transaction {self.reason or 'stopped'}")


class Tx:
    """One open transaction; the only database surface other modules see.

    ``taken_seqs`` maps account ids to the seq taken in this transaction; it belongs to
    ``queries.next_seq`` (which takes ``seq + 1`` at most once per transaction and account).
    """

    __slots__ = ("_conn", "_job", "_live", "taken_seqs")

    def __init__(self, conn: sqlite3.Connection, job: _Job | None = None) -> None:
        self._conn = conn
        self._job = job
        self._live = True
        self.taken_seqs: dict[str, int] = {}

    def check(self) -> None:
        """Raise if the transaction must stop: its time budget is spent, its caller gave up or
        the store is closing (Rules 6, 7).  Every statement checks this first; a long loop of
        Python work inside ``fn`` (no statement running, so nothing to interrupt) calls it
        every few hundred items.
        """
        if not self._live:
            raise RuntimeError("Tx used outside its transaction")
        job = self._job
        if job is None:
            return
        # an interrupt that arrives between two statements is forgotten by SQLite
        if job.should_stop():
            raise job.error()
        job.step_aside()

    def _cursor(self, sql: str, params: Params) -> sqlite3.Cursor:
        self.check()
        try:
            return self._conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise _translate(exc, _head(sql)) from exc

    def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; return the number of rows it changed (-1 for DDL/PRAGMA)."""
        return self._cursor(sql, params).rowcount

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        """Run one statement once per row of parameters; return the rows changed in total."""
        self.check()
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
        try:
            rows: list[tuple[Any, ...]] = self._cursor(sql, params).fetchall()
        except sqlite3.Error as exc:  # a step after the first (e.g. interrupted) fails here
            raise _translate(exc, _head(sql)) from exc
        return rows

    def scalar(self, sql: str, params: Params = ()) -> Any:
        """The first column of the first row, or None when there is no row."""
        row = self.one(sql, params)
        return None if row is None else row[0]

    def all_of(self, *queries: tuple[str, Sequence[Any]]) -> list[list[tuple[Any, ...]]]:
        """Every row of each of several queries that need nothing of each other's: on
        PostgreSQL they go to the server together, one round trip for all."""
        return [self.all(sql, params) for sql, params in queries]


def _head(sql: str) -> str:
    """The start of a statement, for error messages (never the parameters)."""
    words = sql.split()
    return " ".join(words[:4]) if words else "statement"


class BackendConnection(Protocol):
    """One connection of a cache backend, owned by one worker thread (Rule 2): SQLite's here,
    PostgreSQL's in :mod:`imapjmap.store.pg`.  Everything but :meth:`interrupt` runs on the
    owner's thread."""

    def begin(self, job: _Job | None, *, write: bool) -> Tx:
        """Start a transaction (a write, or a read-only one) and return its :class:`Tx`."""
        ...

    def commit(self, tx: Tx) -> None: ...

    def rollback(self) -> None:
        """End the transaction if one is open; log, never raise, if that fails."""
        ...

    def interrupt(self) -> None:
        """Any thread: stop the statement in progress (Rule 7)."""
        ...

    def watch(self, progress: Callable[[], int]) -> None:
        """Call ``progress`` now and then during long statements, where the backend can;
        a non-zero answer interrupts the statement."""
        ...

    def close(self) -> None: ...


class _SqliteConnection:
    """A ``sqlite3`` connection as a :class:`BackendConnection`.  The writer (and a reader that is
    not shared, ``:memory:``) begins ``IMMEDIATE``: it takes the write lock up front, so a
    transaction never fails half-way because another process wrote first."""

    __slots__ = ("_begin", "raw")

    def __init__(self, raw: sqlite3.Connection, *, writer: bool) -> None:
        self.raw = raw
        self._begin = "BEGIN IMMEDIATE" if writer else "BEGIN"

    def begin(self, job: _Job | None, *, write: bool) -> Tx:
        tx = Tx(self.raw, job)
        tx.execute(self._begin)
        return tx

    def commit(self, tx: Tx) -> None:
        tx.execute("COMMIT")

    def rollback(self) -> None:
        _rollback(self.raw)

    def interrupt(self) -> None:
        self.raw.interrupt()

    def watch(self, progress: Callable[[], int]) -> None:
        self.raw.set_progress_handler(progress, _PROGRESS_STEPS)

    def close(self) -> None:
        self.raw.close()


def _transaction(
    conn: BackendConnection,
    fn: Callable[[Tx], T],
    job: _Job | None = None,
    *,
    write: bool = True,
) -> T:
    """Run ``fn`` in one transaction on the worker thread; roll back on any error."""
    tx: Tx | None = None
    try:
        tx = conn.begin(job, write=write)
        if job is not None:
            job.arm(conn)
        try:
            result = fn(tx)
        finally:
            if job is not None:
                job.disarm()
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            raise TypeError("Store.run needs a plain function, not a coroutine function")
        tx._job = None  # a stop that came too late does not undo finished work
        conn.commit(tx)
        return result
    except BaseException as exc:
        conn.rollback()
        if job is not None and job.reason is not None and isinstance(exc, Exception):
            raise job.error() from exc
        raise
    finally:
        if tx is not None:
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


def _open(path: str, busy_timeout: float) -> sqlite3.Connection:
    if sqlite3.sqlite_version_info < _MIN_SQLITE:
        raise CacheUnavailable(f"SQLite {sqlite3.sqlite_version} is too old; 3.24 or newer needed")
    try:
        return sqlite3.connect(
            path, timeout=busy_timeout, isolation_level=None, check_same_thread=True
        )
    except sqlite3.Error as exc:
        raise _translate(exc, f"open {path!r}") from exc


def _connect_writer(
    path: str, busy_timeout: float, migrations: Sequence[str]
) -> tuple[_SqliteConnection, bool]:
    """Open, configure and migrate the writer; return it and whether WAL is on.

    Runs on the worker thread that will own the connection.
    """
    conn = _open(path, busy_timeout)
    try:
        mode = Tx(conn).scalar("PRAGMA journal_mode = WAL")
        if mode not in ("wal", "memory"):
            log.warning("cache %r: WAL unavailable, journal_mode is %s", path, mode)
        Tx(conn).execute("PRAGMA synchronous = NORMAL")
        Tx(conn).execute("PRAGMA foreign_keys = ON")
        for pragma in _PERFORMANCE_PRAGMAS:
            Tx(conn).execute(f"PRAGMA {pragma}")
        found = _transaction(
            _SqliteConnection(conn, writer=True), lambda tx: _migrate(tx, migrations)
        )
    except BaseException:
        conn.close()
        raise
    if found < len(migrations):
        log.info("cache %r: schema migrated from v%d to v%d", path, found, len(migrations))
    return _SqliteConnection(conn, writer=True), mode == "wal"


def _connect_reader(path: str, busy_timeout: float) -> _SqliteConnection:
    """Open a read-only connection (the writer has migrated the file); on its own thread."""
    conn = _open(path, busy_timeout)
    try:
        for pragma in _READER_PRAGMAS:
            Tx(conn).execute(f"PRAGMA {pragma}")
    except BaseException:
        conn.close()
        raise
    return _SqliteConnection(conn, writer=False)


class _Worker:
    """One connection and the one daemon thread that opens, uses and closes it.

    A daemon thread, so that a statement SQLite cannot interrupt (a busy wait on another
    process's lock) never keeps the process from exiting.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.conn: BackendConnection | None = None
        self.job: _Job | None = None  # the transaction running now, for the progress handler
        self._calls: queue.SimpleQueue[
            tuple[concurrent.futures.Future[Any], Callable[[], Any]] | None
        ] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def call(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Run ``fn()`` on this worker's thread, after the calls queued before it."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._calls.put((future, fn))
        return asyncio.wrap_future(future)

    def connect(self, opener: Callable[[], BackendConnection]) -> None:
        """Worker thread: adopt the connection ``opener`` makes and watch its statements."""
        conn = opener()
        conn.watch(self._progress)
        self.conn = conn

    def transaction(self, fn: Callable[[Tx], T], job: _Job) -> T:
        """Worker thread: one transaction of ``Store.run`` / ``Store.read``."""
        if self.conn is None:
            raise CacheUnavailable("cache connection is closed")
        self.job = job
        try:
            return _transaction(self.conn, fn, job, write=job.write)
        finally:
            self.job = None

    def close(self) -> None:
        """Worker thread: close the connection."""
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()

    def stop(self) -> None:
        """Let the thread end once the queued calls are done."""
        self._calls.put(None)

    def _progress(self) -> int:
        job = self.job
        if job is None:
            return 0
        if job.should_stop():
            return 1
        job.step_aside()
        return 0

    def _serve(self) -> None:
        while (item := self._calls.get()) is not None:
            future, fn = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn()
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)


class _Elsewhere(Exception):
    """A small read that could not run on the event loop (Rule 10)."""


class _Here:
    """The event loop thread's own reader connection (Rule 10), used by that thread only."""

    def __init__(self, conn: _SqliteConnection) -> None:
        self.conn = conn
        self.thread = threading.get_ident()
        self.deadline = 0.0
        conn.raw.set_progress_handler(self._progress, _SMALL_READ_STEPS)

    def _progress(self) -> int:
        return 1 if time.monotonic() > self.deadline else 0

    def read(self, fn: Callable[[Tx], T]) -> T:
        """``fn``'s result.

        Only the wall clock bounds it, checked during statements: a read's own CPU clock
        and its stop switch (``_Job``) cost a system call and a lock each, more than a
        small read.

        Raises:
            _Elsewhere: the read must run on a reader thread: it went over its budget (its
                statement was interrupted), the file was busy, or this is not the event
                loop's thread.
            Exception: whatever ``fn`` raised; CacheCorrupt.
        """
        if threading.get_ident() != self.thread:
            raise _Elsewhere
        self.deadline = time.monotonic() + _SMALL_READ_SECONDS
        try:
            return _transaction(self.conn, fn, None, write=False)
        except CacheUnavailable as exc:
            raise _Elsewhere from exc

    def close(self) -> None:
        if threading.get_ident() == self.thread:
            self.conn.close()


class _ReaderProcess:
    """One reader process (Rule 9) and the worker thread that talks to it.

    The process is started on first use and again after it died; it opens its own read-only
    connection.  A call sends ``(fn, args, budget)`` down a pipe and waits for the outcome on
    the worker thread (the GIL is free meanwhile).  ``stop`` sets a flag in shared memory
    that the process's transaction checks as often as a thread's checks its job (Rule 6).
    """

    def __init__(self, name: str, path: str, busy_timeout: float) -> None:
        self.worker = _Worker(name)
        self._path = path
        self._busy_timeout = busy_timeout
        self._mp = multiprocessing.get_context("spawn")  # no copy of the parent's threads
        self._flag = self._mp.RawValue("b", 0)
        self._process: multiprocessing.process.BaseProcess | None = None
        self._pipe: Connection | None = None

    def run(
        self, fn: Callable[..., T], args: tuple[Any, ...], budget: float | None, job: _RemoteJob
    ) -> T:
        """Worker thread: run ``fn(tx, *args)`` in the process; return or raise its outcome."""
        pipe = self._started()
        self._flag.value = 0
        if job.reason is not None:  # stopped while the process started: the flag was set
            raise CacheUnavailable(f"cache transaction {job.reason}")  # before the reset
        try:
            pipe.send((fn, args, budget))
            status, value = pipe.recv()
        except (EOFError, OSError) as exc:  # killed, or ended by aclose
            self._forget()
            raise CacheUnavailable("cache reader process ended") from exc
        except Exception as exc:  # an argument or outcome that does not pickle: a bug
            self._forget()
            raise ProxyError(f"cache reader process: {type(exc).__name__}: {exc}") from exc
        if status == "ok":
            result: T = value
            return result
        raise value

    def stop(self) -> None:
        """Any thread: the transaction running in the process stops at its next check."""
        self._flag.value = 1

    def kill(self) -> None:
        """Any thread: end the process now (a reader has nothing to lose)."""
        process = self._process
        if process is not None and process.pid is not None:
            with contextlib.suppress(OSError, ValueError):
                process.kill()

    def close(self) -> None:
        """Worker thread: ask the process to end, then make sure it has."""
        pipe, process = self._pipe, self._process
        if pipe is not None:
            with contextlib.suppress(OSError, ValueError):
                pipe.send(None)
        if process is not None:  # it has nothing to lose: killed if it takes longer
            process.join(_CLOSE_WAIT / 4)
        self._forget()

    def _started(self) -> Connection:
        if self._pipe is not None and self._process is not None and self._process.is_alive():
            return self._pipe
        self._forget()
        ours, theirs = self._mp.Pipe()
        process = self._mp.Process(
            target=_serve_apart,
            args=(self._path, self._busy_timeout, theirs, self._flag),
            name=self.worker.name,
            daemon=True,  # ends with the proxy whatever it runs
        )
        process.start()
        theirs.close()
        self._process, self._pipe = process, ours
        return ours

    def _forget(self) -> None:
        pipe, self._pipe = self._pipe, None
        process, self._process = self._process, None
        if pipe is not None:
            pipe.close()
        if process is not None:
            if process.is_alive():
                process.kill()
            process.join(_CLOSE_WAIT / 4)


def _apply(fn: Callable[..., T], args: tuple[Any, ...], tx: Tx) -> T:
    return fn(tx, *args)


def _serve_apart(path: str, busy_timeout: float, pipe: Connection, flag: _Flag) -> None:
    """A reader process's main loop (Rule 9): one transaction per message, until ``None`` or
    the parent's end of the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the proxy decides when its readers end
    with contextlib.suppress(OSError):
        os.nice(_PROCESS_NICENESS)
    running: list[_Job] = []

    def progress() -> int:
        return 1 if running and running[0].should_stop() else 0

    try:
        conn = _connect_reader(path, busy_timeout)
    except ProxyError as exc:
        with contextlib.suppress(OSError):
            pipe.send(("error", exc))
        return
    conn.watch(progress)
    try:
        while True:
            try:
                item = pipe.recv()
            except (EOFError, OSError):
                return
            except Exception as exc:  # a function or argument that does not unpickle here
                pipe.send(("error", ProxyError(f"cache reader process: {exc!r}")))
                continue
            if item is None:
                return
            fn, args, budget = item
            job = _Job(budget, write=False, paced=False, remote_stop=flag)
            running[:] = [job]
            outcome: tuple[str, Any]
            try:
                result = _transaction(conn, partial(_apply, fn, args), job, write=False)
                outcome = ("ok", result)
            except Exception as exc:
                outcome = ("error", exc)
            finally:
                running.clear()
            try:
                pipe.send(outcome)
            except (EOFError, OSError):
                return
            except Exception as exc:  # an outcome that does not pickle
                pipe.send(("error", ProxyError(f"cache reader process: {exc!r}")))
    finally:
        conn.close()


class _RemoteJob:
    """What the event loop knows of a read running in a reader process: whose it is, and
    how to stop it (as a :class:`_Job` for a read on a thread)."""

    __slots__ = ("account", "reader", "reason")
    write: Final = False

    def __init__(self, reader: _ReaderProcess, account: str) -> None:
        self.reader = reader
        self.account = account
        self.reason: str | None = None

    def stop(self, reason: str) -> None:
        """Any thread.  The reason first: :meth:`_ReaderProcess.run` reads it after it
        clears the flag, so a stop is never lost between two transactions."""
        if self.reason is None:
            self.reason = reason
        self.reader.stop()


class Store:
    """The cache: a writer and a few readers, shared fairly between accounts.

    Create with :meth:`open`.
    """

    def __init__(
        self,
        path: str,
        writer: _Worker,
        readers: Sequence[_Worker],
        *,
        readers_per_account: int,
        max_transaction_seconds: float | None,
        spare_readers: int = 0,
        apart: Sequence[_ReaderProcess] = (),
        here: _Here | None = None,
        small: _Worker | None = None,
    ) -> None:
        self.path = path
        self._here = here
        self._small = small
        self._loop_reader: Any = None  # store.pg.LoopReader, on PostgreSQL (Rule 10)
        self.budget = max_transaction_seconds
        self._writer = writer
        self._readers = tuple(readers)  # the spares last
        self._writes = FairSlots(1, 1)
        active = len(readers) - spare_readers
        self._reads = (
            FairSlots(active, min(readers_per_account, active), spare=spare_readers)
            if active > 0
            else self._writes
        )
        self._apart = tuple(apart)
        self._apart_slots = (
            FairSlots(len(self._apart), min(readers_per_account, len(self._apart)))
            if self._apart
            else None
        )
        self._running: dict[asyncio.Future[Any], _Job | _RemoteJob] = {}
        self._activity = _Activity()
        self._loop_use = _LoopUse()
        self._closed = False
        # write transactions of this process ended so far: a value read before the last
        # one ended may predate what it wrote (MethodContext.seq_of)
        self.writes_ended = 0

    @classmethod
    async def open(
        cls,
        path: str,
        *,
        busy_timeout: float = 5.0,
        migrations: Sequence[str] = schema.MIGRATIONS,
        readers: int = 4,
        readers_per_account: int = 1,
        max_transaction_seconds: float | None = None,
        processes: int = 0,
        password: str | None = None,
    ) -> Store:
        """Open (creating if needed) and migrate the cache at ``path`` (``":memory:"`` allowed).

        Args:
            path: the SQLite file, or the ``postgresql://`` URL of a PostgreSQL database
                (:mod:`imapjmap.store.pg`).
            busy_timeout: seconds a transaction waits for another process's write lock.
            migrations: the schema scripts; tests pass their own to exercise migrations.
            readers: reader connections in use at once (none for ``:memory:`` or without
                WAL); as many more are opened as spares for the time long reads pause.
            readers_per_account: how many of them one account may use at once.
            max_transaction_seconds: the time budget of one read (Rule 6); None: unlimited.
            processes: reader processes for :meth:`read_apart` (Rule 9), started when
                first used; none without readers, none on PostgreSQL.
            password: the PostgreSQL password, when not in the environment.

        Raises:
            CacheCorrupt: not a database, another program's database, or a newer schema.
            CacheUnavailable: the file cannot be opened, or is locked for too long.
        """
        writer = _Worker("imapjmap-store-writer")
        workers = [writer]
        name = path
        on_sqlite = not path.startswith(POSTGRESQL_SCHEMES)
        try:
            if not on_sqlite:
                pg = _postgresql()
                name = pg.redact(path)
                await writer.call(
                    partial(
                        writer.connect,
                        partial(pg.connect_writer, path, password, busy_timeout, tuple(migrations)),
                    )
                )
                shared, processes = readers > 0, 0
                opener: Callable[[], BackendConnection] = partial(
                    pg.connect_reader, path, password, max_transaction_seconds
                )
            else:
                wal = await writer.call(
                    lambda: _adopt_writer(writer, path, busy_timeout, tuple(migrations))
                )
                shared = wal and path not in ("", ":memory:") and readers > 0
                opener = partial(_connect_reader, path, busy_timeout)
            for number in range(2 * readers if shared else 0):  # the spares too: Rule 5
                reader = _Worker(f"imapjmap-store-reader-{number}")
                workers.append(reader)
                await reader.call(partial(reader.connect, opener))
            small = None
            if shared and not on_sqlite:  # Rule 10 on PostgreSQL: a connection of their own
                small = _Worker("imapjmap-store-small")
                await small.call(partial(small.connect, opener))
        except BaseException:
            for worker in workers:
                worker.call(worker.close)
                worker.stop()
            raise
        store = cls(
            name,
            writer,
            workers[1:],
            readers_per_account=readers_per_account,
            max_transaction_seconds=max_transaction_seconds,
            spare_readers=readers if shared else 0,
            apart=[
                _ReaderProcess(f"imapjmap-store-apart-{number}", path, busy_timeout)
                for number in range(processes if shared else 0)
            ],
            # no busy wait: the event loop must never block on another process's lock (nor
            # on a PostgreSQL server: its reads all go to the reader threads)
            here=_Here(_connect_reader(path, 0.0)) if shared and on_sqlite else None,
            small=small,
        )
        if small is not None:
            store._loop_reader = _postgresql().LoopReader(path, password, max_transaction_seconds)
        return store

    async def run(self, fn: Callable[[Tx], T], *, account: str = "") -> T:
        """Run ``fn(tx)`` on the writer inside ONE write transaction and return its result.

        ``account`` is the account the transaction is for, its queue in the fair share.

        Raises:
            CacheUnavailable: the store is closed, or SQLite is busy/full/failing.
            CacheCorrupt: see Rule 4.
            Exception: whatever ``fn`` raised (after the ROLLBACK).
        """
        try:
            return await self._submit(fn, account, write=True)
        finally:
            self.writes_ended += 1

    async def read(self, fn: Callable[[Tx], T], *, account: str = "") -> T:
        """Run ``fn(tx)`` on a reader inside ONE read-only transaction; return its result.

        Raises:
            TransactionTooLong: over the time budget (Rule 6).
            CacheUnavailable, CacheCorrupt, Exception: as :meth:`run`; a write in ``fn`` fails.
        """
        return await self._submit(fn, account, write=False)

    async def read_small(self, fn: Callable[[Tx], T], *, account: str = "") -> T:
        """:meth:`read` for a read known to be small: run at once on the event loop when
        the store can (Rule 10), else, or if it turns out not small, as :meth:`read`.

        ``fn`` may run twice (the first run rolled back): it must only read.
        """
        if self._here is not None and not self._closed:
            self._activity.mark(account)
            with contextlib.suppress(_Elsewhere):
                return self._here.read(fn)
        small = self._small
        if small is not None and not self._closed:
            # PostgreSQL: one thread of its own, outside the accounts' queues, so that a
            # small read never waits behind an account's long reads on the reader threads
            self._activity.mark(account)
            job = _Job(self.budget, write=False, account=account, activity=self._activity)
            return await small.call(lambda: small.transaction(fn, job))
        return await self.read(fn, account=account)

    async def scalar_now(self, sql: str, params: Sequence[Any], *, account: str = "") -> Any:
        """The first column of one statement's first row (None without a row), read as
        :meth:`read_small` reads; on PostgreSQL on the event loop's own asyncio
        connection (Rule 10)."""
        reader = self._loop_reader
        if reader is None or self._closed:
            return await self.read_small(lambda tx: tx.scalar(sql, params), account=account)
        self._activity.mark(account)
        return await reader.scalar(sql, params)

    async def read_apart(self, fn: Callable[..., T], *args: Any, account: str = "") -> T:
        """Run ``fn(tx, *args)`` like :meth:`read`, in a reader process (Rule 9) when the
        store has some; else on a reader thread, the same way.

        ``fn`` must be a module-level function, and ``args`` and its result picklable.  For
        the reads whose work is mostly Python: the others' requests then never wait for
        the GIL while it runs.

        Raises:
            TransactionTooLong, CacheUnavailable, CacheCorrupt, Exception: as :meth:`read`.
        """
        slots = self._apart_slots
        if slots is None:
            return await self.read(lambda tx: fn(tx, *args), account=account)
        slot = await self._acquire(slots, account)
        reader = self._apart[slot]
        job = _RemoteJob(reader, account)
        try:
            done = reader.worker.call(lambda: reader.run(fn, args, self.budget, job))
        except BaseException:
            slots.release(account, slot)
            raise
        return await self._outcome(slots, account, slot, done, job)

    async def _submit(self, fn: Callable[[Tx], T], account: str, *, write: bool) -> T:
        slots = self._writes if write else self._reads
        slot = await self._acquire(slots, account)
        worker = self._writer if slots is self._writes else self._readers[slot]
        job = _Job(
            None if write else self.budget, write=write, account=account, activity=self._activity
        )
        try:
            done = worker.call(lambda: worker.transaction(fn, job))
        except BaseException:
            slots.release(account, slot)
            raise
        return await self._outcome(slots, account, slot, done, job)

    async def _acquire(self, slots: FairSlots, account: str) -> int:
        if self._closed:
            raise CacheUnavailable("cache store is closed")
        slot = await slots.acquire(account)
        if self._closed:  # granted just before aclose: the worker takes no more calls
            slots.release(account, slot)
            raise CacheUnavailable("cache store is closed")
        self._activity.mark(account)
        return slot

    async def _outcome(
        self,
        slots: FairSlots,
        account: str,
        slot: int,
        done: asyncio.Future[T],
        job: _Job | _RemoteJob,
    ) -> T:
        """Wait for a transaction started on ``slot``; give the slot back when it ends, even
        after its caller gave up (Rule 7)."""
        self._running[done] = job
        lent = False

        def lend() -> None:  # the read runs on, and pauses most of the time now (Rule 5)
            nonlocal lent
            if not done.done():
                lent = slots.lend()

        timer = (
            asyncio.get_running_loop().call_later(_LEND_AFTER, lend)
            if slots is self._reads and isinstance(job, _Job) and not job.write
            else None
        )

        def finished(future: asyncio.Future[Any]) -> None:
            del self._running[future]
            if timer is not None:
                timer.cancel()
            if lent:
                slots.unlend()
            slots.release(account, slot)
            if not future.cancelled():
                future.exception()  # retrieved: a caller that gave up is not told twice

        done.add_done_callback(finished)
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            if not job.write:
                job.stop("cancelled")
            raise

    def running(self, account: str) -> int:
        """How many transactions of ``account`` run now (a benchmark waits for none)."""
        return sum(1 for job in self._running.values() if job.account == account)

    async def pace(self, account: str, worked: float, total: float) -> None:
        """Between two slices of ``account``'s work on the event loop: give the loop to the
        others.  ``worked``: the CPU seconds of the slice just done; ``total``: of every slice
        so far.  Once the work is long (``_LONG_READ_CPU`` in total: a big answer, not a
        cheap one; or as much in the slices of all the account's requests of the last
        ``_OTHERS_RECENT`` seconds: many big answers at once, each short) and another account
        has used the cache lately, pause as long a share of the time as a long read does
        (Rule 6), at most ``_MAX_LOOP_PAUSE``; else just one loop turn."""
        lately = self._loop_use.add(account, worked)
        long = total > _LONG_READ_CPU or lately > _LONG_READ_CPU
        if long and self._activity.others_active(account):
            pause = worked * _CONTENDED_PAUSE / _YIELD_EVERY
            await asyncio.sleep(min(pause, _MAX_LOOP_PAUSE))
        else:
            await asyncio.sleep(0)

    async def pace_upstream(self, account: str, worked: float) -> None:
        """Between two parts of ``account``'s work on the IMAP server (``worked``: the wall
        seconds the last one took there): while another account has used the cache lately,
        pause as long a share of the time as a contended long read does (Rule 6), at most
        ``_MAX_UPSTREAM_PAUSE``; else go straight on.  The server's time is not the proxy's
        to budget, but it is the other accounts' to wait for: their cheap requests need a
        server core too, and on the proxy's own machine its CPU as well."""
        if self._activity.others_active(account):
            await asyncio.sleep(min(worked * _CONTENDED_PAUSE / _YIELD_EVERY, _MAX_UPSTREAM_PAUSE))

    async def _close_loops_own(self) -> None:
        """Close the event loop's own connections (Rule 10)."""
        if self._loop_reader is not None:
            await self._loop_reader.close()
        if self._here is not None:
            self._here.close()

    async def aclose(self) -> None:
        """Fail the waiting transactions, stop the running ones, close every connection.

        Returns within about a second whatever runs (Rule 7).
        """
        if self._closed:
            return
        self._closed = True
        await self._close_loops_own()
        closed = CacheUnavailable("cache store is closed")
        self._writes.close(closed)
        self._reads.close(closed)
        if self._apart_slots is not None:
            self._apart_slots.close(closed)
        running = dict(self._running)
        for job in running.values():
            if not job.write:
                job.stop("closing")
            if isinstance(job, _RemoteJob):  # it might check its flag only seconds later
                job.reader.kill()
        if running:
            _, late = await asyncio.wait(running, timeout=_CLOSE_GRACE)
            for future in late:
                running[future].stop("closing")
        workers = (self._writer, *self._readers, *((self._small,) if self._small else ()))
        closing = [worker.call(worker.close) for worker in workers]
        closing += [reader.worker.call(reader.close) for reader in self._apart]
        for worker in (*workers, *(reader.worker for reader in self._apart)):
            worker.stop()
        _, stuck = await asyncio.wait(closing, timeout=_CLOSE_WAIT)
        for future in stuck:  # still in a statement SQLite cannot interrupt; its daemon
            future.cancel()  # thread ends with the process
        if stuck:
            log.warning("cache %r: %d connection(s) still busy at close", self.path, len(stuck))

    def __repr__(self) -> str:
        return f"<Store {self.path!r}{' closed' if self._closed else ''}>"


POSTGRESQL_SCHEMES: Final = ("postgresql://", "postgres://")
"""A cache path starting so is a PostgreSQL database (:mod:`imapjmap.store.pg`)."""


def _postgresql() -> Any:
    """:mod:`imapjmap.store.pg`, imported only for a PostgreSQL cache (psycopg is optional)."""
    try:
        return importlib.import_module("imapjmap.store.pg")
    except ImportError as exc:
        raise CacheUnavailable(
            "a postgresql:// cache needs psycopg: pip install 'imapjmap[postgresql]'"
        ) from exc


def _adopt_writer(
    worker: _Worker, path: str, busy_timeout: float, migrations: Sequence[str]
) -> bool:
    wal = False

    def opener() -> BackendConnection:
        nonlocal wal
        conn, wal = _connect_writer(path, busy_timeout, migrations)
        return conn

    worker.connect(opener)
    return wal
