"""Parsing a first sync's FETCH batches in worker processes.

A first sync is CPU-bound in the proxy: per message, lexing and parsing the FETCH response
and building the Email row cost about twice what writing it to the cache does.  In one
process all three share the interpreter, so the cores a machine has beyond the first sit
idle.  The rest of a big first sync (``MailboxSync.fill``) therefore receives each batch's
untagged responses unparsed and hands them to a pool of worker processes, which return the
prepared rows; the event loop only reads the socket and the writer only writes.

The pool is started (``spawn``: no copy of the proxy's threads and sockets) the first time
a fill is big enough to repay its start-up, and kept for later fills.  Where the machine
has one core, or the pool cannot run, the same function runs in a thread instead: the
result is the same, only slower.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing
import os
import sys
import threading
import types
from collections.abc import Callable, Sequence
from typing import Final, NamedTuple, TypeVar

from imapjmap.imap.models import FetchRecord
from imapjmap.imap.parse import fetched, parse_reply
from imapjmap.store import emails as em
from imapjmap.sync import records
from imapjmap.upstream.sync_reads import Raw

log = logging.getLogger(__name__)

MAX_WORKERS: Final = 4
# a fill of fewer messages is parsed in a thread: starting the processes costs about as
# much as parsing a few thousand messages
POOL_MIN_MESSAGES: Final = 5000

_T = TypeVar("_T")


class NewMessage(NamedTuple):
    """A new message of a FETCH, with the pure part of its Email row already built.

    A plain tuple underneath, its row already in column form (JSON encoded): it crosses
    from a worker process as one, and the writer copies the columns into the INSERT without
    encoding anything.  Sending back an ``EmailRow`` instead (as tuples, rebuilt into the
    dataclass) cost about 40 us a message in the proxy's own process, against about 5-10 us;
    at 20,000 messages that was a third of the proxy's share of the CPU.
    """

    uid: int
    flags: tuple[str, ...]
    modseq: int | None
    email_id: str
    own_message_id: str | None
    refs: tuple[str, ...]  # In-Reply-To then References, no duplicates
    base_subject: str
    upstream_thread: str | None  # THREADID / X-GM-THRID when the server has them
    # em.email_values of the row: the writer sets its thread id and the columns from
    # em.FILLED_BY_WRITER on (mailboxIds, sequence numbers)
    columns: em.EmailValues


Parsed = tuple[list[FetchRecord], list[NewMessage]]


def prepare(records_: Sequence[FetchRecord], account_id: str) -> list[NewMessage]:
    """Parse new messages' FETCH records (pure Python, no cache access): done before the
    transaction where the caller can, so the write lock is held for the writes only."""
    out: list[NewMessage] = []
    for record in records_:
        if record.uid is None:
            continue
        p = records.parse_record(record, account_id)
        out.append(
            NewMessage(
                record.uid,
                tuple(record.flags or ()),
                record.modseq,
                p.email_id,
                p.own_message_id,
                p.refs,
                p.base_subject,
                p.upstream_thread,
                em.email_values(p.row),
            )
        )
    return out


def parse_batch(raw: Raw, uids: Sequence[int], account_id: str, keep_records: bool) -> Parsed:
    """The new messages among ``uids`` in a FETCH reply's untagged responses, prepared.

    What ``ImapSyncReads.fetch_new`` (``upstream.imap_sync``) and :func:`prepare` do together, as
    one picklable call.
    The records themselves are returned only with ``keep_records`` (a hook wants them):
    sending them back from a worker costs about as much as parsing them.

    Raises:
        ImapProtocolViolation: a response that cannot be parsed.
    """
    records = fetched(parse_reply(raw, "OK", b""), uids)
    return (records if keep_records else []), prepare(records, account_id)


def workers_for(cores: int) -> int:
    """How many parsing workers a machine with ``cores`` cores gets.

    One a core, at most :data:`MAX_WORKERS`, and none on one core (a thread does as well
    there).  The proxy's own share of a message (reading the socket, writing the cache) is
    about a third of a worker's, so keeping a core for it left a third of that core idle:
    on two cores a fill took the time of one worker's CPU.  The workers keep the proxy's
    priority: at nice +5 a busy machine's scheduler gives each a third of the share of a
    process beside it (a fill of 20,000 messages took 10 % longer under a load of 9).
    """
    return 0 if cores < 2 else min(cores, MAX_WORKERS)


def _workers() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return workers_for(cores or 1)


def new_pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    """A pool of ``workers`` parsing processes, started by ``spawn``: no copy of the
    proxy's threads and sockets."""
    context = multiprocessing.get_context("spawn")
    return concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)


def _submit(
    pool: concurrent.futures.ProcessPoolExecutor, fn: Callable[..., _T], *args: object
) -> concurrent.futures.Future[_T]:
    """``pool.submit``, keeping a worker it starts from importing the proxy's main module.

    A ``spawn`` child first runs the parent's ``__main__`` again under another name: for
    ``imapjmap serve`` the command's script, which imports the whole proxy (about 0.95 s
    of CPU at each worker's start, against 0.28 s for what the workers need, this module).
    The pool starts workers only inside ``submit``, so a blank ``__main__`` for that call
    is all a child sees.
    """
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        return pool.submit(fn, *args)
    finally:
        sys.modules["__main__"] = main


class Parser:
    """Runs :func:`parse_batch` in the shared worker pool, or in a thread without one."""

    _pool: concurrent.futures.ProcessPoolExecutor | None = None
    _lock = threading.Lock()

    def __init__(self, messages: int) -> None:
        self.pool = self._shared() if messages >= POOL_MIN_MESSAGES else None
        self.workers = _workers() if self.pool is not None else 1

    def warm_up(self) -> None:
        """Start the workers now (they import the parser), while other work goes on."""
        if self.pool is not None:
            for _ in range(self.workers):
                _submit(self.pool, parse_batch, (), (), "", False)

    @classmethod
    def _shared(cls) -> concurrent.futures.ProcessPoolExecutor | None:
        workers = _workers()
        if workers < 1:
            return None
        with cls._lock:
            if cls._pool is None:
                cls._pool = new_pool(workers)
            return cls._pool

    @classmethod
    def _drop(cls, pool: concurrent.futures.ProcessPoolExecutor) -> None:
        with cls._lock:
            if cls._pool is pool:
                cls._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    async def parse(
        self, raw: Raw, uids: Sequence[int], account_id: str, keep_records: bool
    ) -> Parsed:
        pool = self.pool
        if pool is not None:
            try:
                return await asyncio.wrap_future(
                    _submit(pool, parse_batch, raw, uids, account_id, keep_records)
                )
            except (concurrent.futures.BrokenExecutor, OSError, RuntimeError) as exc:
                # a worker killed or the pool shut down: the thread is as good, only slower
                log.warning("parsing worker pool unusable (%s); parsing in a thread", exc)
                self.pool = None
                self._drop(pool)
        return await asyncio.to_thread(parse_batch, raw, uids, account_id, keep_records)
