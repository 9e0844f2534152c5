"""sync/parsing.py: a first sync's batches parsed in worker processes give exactly what the
in-process path gives (``ImapSyncReads.fetch_new`` then ``prepare``), on captured Dovecot
replies."""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from imapjmap.imap.models import FetchRecord
from imapjmap.imap.parse import fetched, parse_reply
from imapjmap.store.emails import email_values
from imapjmap.sync import parsing, records
from tests.unit.test_imap_parse import TRANSCRIPT

A = "Aacct"

# every captured FETCH whose reply parses: the list items, sections with literals (8-bit and
# binary), MODSEQ and X-GUID, VANISHED (EARLIER), non-extensible BODY, macros without UID
FETCH_CASES = sorted(
    name
    for name, case in TRANSCRIPT.items()
    if "FETCH" in case.command.upper() and case.status == "OK"
)


def reference(name: str, uids: list[int]) -> parsing.Parsed:
    """The in-process path: ``ImapSyncReads.fetch_new`` over ``ImapSession.execute``."""
    case = TRANSCRIPT[name]
    reply = parse_reply(case.untagged, case.status, case.text)
    records = fetched(reply, uids)
    return records, parsing.prepare(records, A)


def uids_of(name: str) -> list[int]:
    case = TRANSCRIPT[name]
    reply = parse_reply(case.untagged, case.status, case.text)
    return sorted({r.uid for r in reply.fetches if r.uid is not None})


@pytest.fixture(scope="module")
def pool() -> Iterator[concurrent.futures.ProcessPoolExecutor]:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as executor:
        yield executor


def test_the_cases_cover_what_a_first_sync_fetches() -> None:
    assert len(FETCH_CASES) >= 15
    records = [r for name in FETCH_CASES for r in reference(name, uids_of(name))[0]]
    assert any(r.modseq is not None for r in records)
    assert any(r.x_guid for r in records)
    assert any(r.envelope and r.bodystructure for r in records)
    assert any(any(k.startswith("BODY[HEADER.FIELDS") for k in r.sections) for r in records)
    assert any(u[0].startswith(b"VANISHED") for n in FETCH_CASES for u in TRANSCRIPT[n].untagged)


@pytest.mark.parametrize("name", FETCH_CASES)
def test_parse_batch_equals_the_in_process_path(name: str) -> None:
    uids = uids_of(name)
    expected = reference(name, uids)
    case = TRANSCRIPT[name]
    assert parsing.parse_batch(case.untagged, uids, A, True) == expected
    assert parsing.parse_batch(case.untagged, uids, A, False) == ([], expected[1])


@pytest.mark.parametrize("name", FETCH_CASES)
def test_parse_batch_in_a_worker_process_equals_the_in_process_path(
    name: str, pool: concurrent.futures.ProcessPoolExecutor
) -> None:
    uids = uids_of(name)
    case = TRANSCRIPT[name]
    got = pool.submit(parsing.parse_batch, case.untagged, uids, A, True).result(timeout=60)
    assert got == reference(name, uids)
    assert all(type(m) is parsing.NewMessage for m in got[1])


def test_a_uid_not_asked_for_or_vanished_is_not_new() -> None:
    untagged = [
        (b"1 FETCH (UID 7 FLAGS () X-GUID 0123456789abcdef0123456789abcdef RFC822.SIZE 10)",),
        (b"2 FETCH (UID 8 FLAGS () X-GUID 00 RFC822.SIZE 0)",),  # placeholder of an expunge
        (b"3 FETCH (UID 9 FLAGS () X-GUID fedcba9876543210fedcba9876543210 RFC822.SIZE 10)",),
        (b"VANISHED 8",),
    ]
    records, prepared = parsing.parse_batch(untagged, [7, 8], A, True)
    assert [r.uid for r in records] == [7]
    assert [m.uid for m in prepared] == [7]


def test_a_response_split_in_two_is_one_message() -> None:
    untagged = [(b"1 FETCH (UID 7 FLAGS (\\Seen))",), (b"1 FETCH (RFC822.SIZE 42 X-GUID abc)",)]
    records, prepared = parsing.parse_batch(untagged, [7], A, True)
    assert records == [FetchRecord(seq=1, uid=7, flags=("\\Seen",), size=42, x_guid="abc")]
    assert prepared[0].email_id == "Eabc"


def test_a_small_fill_is_parsed_in_a_thread() -> None:
    parser = parsing.Parser(parsing.POOL_MIN_MESSAGES - 1)
    assert parser.pool is None and parser.workers == 1


async def test_a_pool_that_cannot_run_falls_back_to_a_thread(
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = "uid-fetch-bulk"
    uids = uids_of(name)
    parser = parsing.Parser(0)
    dead = concurrent.futures.ProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("spawn")
    )
    dead.shutdown()
    parser.pool = dead
    with caplog.at_level(logging.WARNING, logger="imapjmap.sync.parsing"):
        got = await parser.parse(TRANSCRIPT[name].untagged, uids, A, True)
    assert got == reference(name, uids)
    assert parser.pool is None
    assert "parsing in a thread" in caplog.text


async def test_parser_with_a_pool_gives_the_in_process_result() -> None:
    name = "uid-fetch-bulk"
    uids = uids_of(name)
    parser = parsing.Parser(0)
    parser.pool = concurrent.futures.ProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("spawn")
    )
    try:
        got = await parser.parse(TRANSCRIPT[name].untagged, uids, A, False)
    finally:
        parser.pool.shutdown()
    assert got == ([], reference(name, uids)[1])
    assert got[1] and all(type(m).__name__ == "NewMessage" for m in got[1])


# A main module that leaves a mark when a worker process imports it again.
MAIN_SCRIPT = """
import sys
from pathlib import Path

if __name__ != "__main__":  # run again by a spawned worker, under another name
    Path(sys.argv[1]).write_text(__name__)
else:
    import asyncio

    from imapjmap.sync import parsing

    async def main() -> None:
        parser = parsing.Parser(parsing.POOL_MIN_MESSAGES)
        assert parser.pool is not None, "no worker pool on this machine"
        parser.warm_up()
        assert await parser.parse([], [], "A", False) == ([], [])
        assert parser.pool is not None, "the pool failed; the thread answered"

    asyncio.run(main())
"""


def test_workers_do_not_import_the_main_module(tmp_path: Path) -> None:
    """A worker needs the parser only; ``imapjmap serve``'s own script imports the whole
    proxy, which tripled the CPU time of each worker's start."""
    script, mark = tmp_path / "main.py", tmp_path / "imported"
    script.write_text(MAIN_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, str(script), str(mark)], env=env, capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert not mark.exists(), f"a worker imported the main module as {mark.read_text()}"


def test_a_new_message_carries_its_row_as_the_cache_writes_it() -> None:
    """The columns a worker sends back are those of the row ``parse_record`` builds, with
    the keywords of its FLAGS (EML-KW-01): the writer adds only thread, mailboxIds and
    sequence numbers."""
    record = FetchRecord(seq=1, uid=7, flags=("\\Seen", "\\Recent", "Junk"), size=42, x_guid="abc")
    [message] = parsing.prepare([record], A)
    row = records.parse_record(record, A).row
    assert row.keywords == {"$seen": True, "junk": True}
    assert message.columns == email_values(row)
    assert (message.uid, message.flags, message.email_id) == (7, record.flags, "Eabc")


@pytest.mark.parametrize(
    ("cores", "workers"), [(1, 0), (2, 2), (3, 3), (4, 4), (8, parsing.MAX_WORKERS)]
)
def test_a_worker_a_core_and_none_on_one_core(cores: int, workers: int) -> None:
    assert parsing.workers_for(cores) == workers
