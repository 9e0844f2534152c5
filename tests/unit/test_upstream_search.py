"""The upstream search's pure parts, as tables: how a term becomes a ``UID SEARCH`` (the
standard keys and Gmail's ``X-GM-RAW``), how wide the next UID range of a split search is,
and which mailboxes a search runs in (EML-QRY: ``text``, ``body``, ``header`` conditions)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from typing import Any

import pytest

from imapjmap.errors import ImapCommandFailed, ImapCommandTooLong
from imapjmap.imap.models import Reply, SearchResult, TaggedResult
from imapjmap.imap.session import SelectInfo
from imapjmap.upstream import gmail, imap_search
from imapjmap.upstream.imap_search import next_width, search_command, search_uids
from imapjmap.upstream.search import SearchMailbox, SearchTerm


@pytest.mark.parametrize(
    ("term", "wire"),
    [
        (SearchTerm("TEXT", ("hello",)), 'UID SEARCH TEXT "hello"'),
        (SearchTerm("BODY", ('say "hi"',)), 'UID SEARCH BODY "say \\"hi\\""'),
        (SearchTerm("HEADER", ("X-Custom", "")), 'UID SEARCH HEADER "X-Custom" ""'),
        (SearchTerm("BODY", ("grüße",)), "UID SEARCH CHARSET UTF-8 BODY {7}"),
        (SearchTerm("HEADER", ("Subject", "€")), 'UID SEARCH CHARSET UTF-8 HEADER "Subject" {3}'),
    ],
)
def test_search_command(term: SearchTerm, wire: str) -> None:
    assert str(search_command(term)) == wire


@pytest.mark.parametrize(
    ("term", "wire"),
    [
        (SearchTerm("TEXT", ("hello",)), 'UID SEARCH UID 1:256 TEXT "hello"'),
        (SearchTerm("BODY", ("grüße",)), "UID SEARCH CHARSET UTF-8 UID 1:256 BODY {7}"),
    ],
)
def test_a_search_in_a_uid_range_names_the_range_after_the_charset(
    term: SearchTerm, wire: str
) -> None:
    assert str(search_command(term, "1:256")) == wire


@pytest.mark.parametrize(
    ("width", "seconds", "expected"),
    [
        (256, imap_search._CHUNK_SECONDS, 256),  # on target: the same again
        (256, imap_search._CHUNK_SECONDS * 2, 128),  # twice too long: half as wide
        (256, imap_search._CHUNK_SECONDS / 2, 512),
        (256, 0.0, 256 * imap_search._MAX_GROWTH),  # no measurable time: grow, boundedly
        (256, imap_search._CHUNK_SECONDS / 100, 256 * imap_search._MAX_GROWTH),
        (256, 100.0, imap_search._MIN_CHUNK),  # a very slow server: never below the minimum
    ],
)
def test_the_next_uid_range_is_sized_from_the_time_the_last_took(
    width: int, seconds: float, expected: int
) -> None:
    assert next_width(width, seconds) == expected


@pytest.mark.parametrize(
    ("term", "wire"),
    [
        (SearchTerm("TEXT", ('say "hi" now',)), 'UID SEARCH X-GM-RAW "\\"say  hi  now\\""'),
        (SearchTerm("TEXT", ("a\\b",)), 'UID SEARCH X-GM-RAW "\\"a b\\""'),
        (SearchTerm("TEXT", ("Grüße",)), "UID SEARCH CHARSET UTF-8 X-GM-RAW {9}"),
        (SearchTerm("BODY", ("x",)), 'UID SEARCH BODY "x"'),
        (SearchTerm("BODY", ("é",)), "UID SEARCH CHARSET UTF-8 BODY {2}"),
        (SearchTerm("HEADER", ("List-Id", "dev")), 'UID SEARCH HEADER "List-Id" "dev"'),
    ],
)
def test_gmail_sends_text_as_one_raw_phrase_and_the_rest_as_standard_keys(
    term: SearchTerm, wire: str
) -> None:
    assert str(gmail.search_command(term)) == wire


GMAIL_BOXES = [
    SearchMailbox("i", "INBOX", 1, None, "inbox"),
    SearchMailbox("g", "[Gmail]", None, None, None, readable=False),
    SearchMailbox("a", "[Gmail]/All Mail", 1, 5, "all"),
    SearchMailbox("t", "[Gmail]/Trash", 1, 1, "trash"),
    SearchMailbox("j", "[Gmail]/Spam", 1, 0, "junk"),
    SearchMailbox("w", "Work", 1, None, None),
]


@pytest.mark.parametrize(
    ("scope", "searched"),
    [
        (None, ["a", "t"]),  # Spam is empty
        ({"w"}, ["a"]),  # a label: its messages are in All Mail
        ({"i"}, ["a"]),
        ({"t"}, ["t"]),
        ({"t", "w"}, ["a", "t"]),
        ({"j"}, []),
        ({"g"}, []),  # no label: it holds no messages
        (set(), []),
    ],
)
def test_gmail_searches_the_folders_that_hold_the_labels_messages(
    scope: Collection[str] | None, searched: list[str]
) -> None:
    assert [b.mailbox_id for b in gmail.search_boxes(GMAIL_BOXES, scope)] == searched


# --- the search over a pool, against a scripted one (failure injection, concurrency) ------


@dataclass
class _Profile:
    labels: bool = False


class _Session:
    def __init__(self, pool: _Pool, name: str) -> None:
        self.pool = pool
        ok = Reply(TaggedResult("OK", None, ""))
        validity = pool.uidvalidity.get(name, 7)
        self.selected = SelectInfo(name, True, validity, None, None, None, ok)

    async def execute(self, command: Any, *, what: str = "") -> Reply:
        self.pool.running += 1
        self.pool.most = max(self.pool.most, self.pool.running)
        try:
            await asyncio.sleep(self.pool.delay)
            if self.pool.failure is not None:
                raise self.pool.failure
            text = str(command)
            self.pool.commands.append((self.selected.name, text))
            uids = self.pool.answers.get((self.selected.name, text), ())
            return Reply(TaggedResult("OK", None, ""), searches=(SearchResult(ids=uids),))
        finally:
            self.pool.running -= 1


class _Pool:
    """Answers ``UID SEARCH`` from ``answers[(mailbox, command text)]``; counts the
    searches running at once."""

    def __init__(self, *, labels: bool = False) -> None:
        self.profile = _Profile(labels)
        self.searches = asyncio.Semaphore(1)
        self.answers: dict[tuple[str, str], tuple[int, ...]] = {}
        self.uidvalidity: dict[str, int] = {}
        self.commands: list[tuple[str, str]] = []
        self.failure: Exception | None = None
        self.delay = 0.0
        self.running = self.most = 0

    @contextlib.asynccontextmanager
    async def session(self, mailbox: str, *, readonly: bool = False) -> AsyncIterator[_Session]:
        assert readonly
        yield _Session(self, mailbox)


BOXES = [
    SearchMailbox("Minbox", "INBOX", 7, 3),
    SearchMailbox("Marchive", "Archive", 7, None),  # count unknown: searched
    SearchMailbox("Mempty", "Empty", 7, 0),
]
BODY = SearchTerm("BODY", ("pay",))


@pytest.mark.parametrize(
    ("scope", "searched"),
    [
        (None, {"INBOX", "Archive"}),  # never an empty mailbox (search Rule 1)
        ({"Marchive"}, {"Archive"}),
        ({"Mempty"}, set()),
        (set(), set()),
    ],
)
async def test_a_search_runs_only_where_results_can_be(
    scope: Collection[str] | None, searched: set[str]
) -> None:
    pool = _Pool()
    pool.answers = {
        ("INBOX", 'UID SEARCH BODY "pay"'): (1, 3),
        ("Archive", 'UID SEARCH BODY "pay"'): (2,),
    }
    hits = await imap_search.search(pool, BOXES, [BODY], scope=scope)  # type: ignore[arg-type]
    assert {box for box, _ in pool.commands} == searched
    found = {"INBOX": ("Minbox", {1, 3}), "Archive": ("Marchive", {2})}
    assert hits == {BODY: dict(found[name] for name in searched)}
    assert await imap_search.search(pool, BOXES, [], scope=scope) == {}  # type: ignore[arg-type]


async def test_where_labels_are_mailboxes_all_mail_is_searched_in_its_dialect() -> None:
    pool = _Pool(labels=True)
    pool.uidvalidity = {"[Gmail]/All Mail": 1}
    pool.answers = {("[Gmail]/All Mail", 'UID SEARCH X-GM-RAW "\\"pay\\""'): (5,)}
    term = SearchTerm("TEXT", ("pay",))
    hits = await imap_search.search(pool, GMAIL_BOXES, [term], scope={"w"})  # type: ignore[arg-type]
    assert hits == {term: {"a": {5}}}
    assert pool.commands == [("[Gmail]/All Mail", 'UID SEARCH X-GM-RAW "\\"pay\\""')]


async def test_a_mailbox_with_another_uidvalidity_gives_no_hits() -> None:
    """search Rule 2: its UIDs could not be mapped to the cache's Emails."""
    pool = _Pool()
    pool.uidvalidity = {"INBOX": 8}
    pool.answers = {("INBOX", 'UID SEARCH BODY "pay"'): (1,)}
    hits = await search_uids(pool, [SearchMailbox("Minbox", "INBOX", 7)], [BODY])  # type: ignore[arg-type]
    assert hits == {BODY: {}} and pool.commands == []
    hits = await search_uids(pool, [SearchMailbox("Minbox", "INBOX", 8)], [BODY])  # type: ignore[arg-type]
    assert hits == {BODY: {"Minbox": {1}}}


async def test_one_accounts_searches_run_upstream_one_at_a_time() -> None:
    """imap.searches_per_account (1): two requests of one account searching three mailboxes
    each never have two SEARCHes running at once; another account's search runs beside."""
    heavy, other = _Pool(), _Pool()
    heavy.delay = other.delay = 0.01
    boxes = [SearchMailbox(f"M{n}", f"box{n}", 7) for n in range(3)]
    term = SearchTerm("TEXT", ("x",))
    await asyncio.gather(
        search_uids(heavy, boxes, [term]),  # type: ignore[arg-type]
        search_uids(heavy, boxes, [term]),  # type: ignore[arg-type]
        search_uids(other, boxes[:1], [term]),  # type: ignore[arg-type]
    )
    assert len(heavy.commands) == 6 and heavy.most == 1
    assert len(other.commands) == 1
    assert not other.searches.locked()  # it did not wait for the other account's turn


@pytest.mark.parametrize(
    "failure",
    [ImapCommandFailed("UID SEARCH", "BADCHARSET"), ImapCommandTooLong("UID SEARCH: BAD Too long")],
)
async def test_a_failed_search_is_one_error_not_a_group(failure: Exception) -> None:
    """search Rule 5: the dispatcher knows these errors, not an ExceptionGroup of them."""
    pool = _Pool()
    pool.failure = failure
    boxes = [SearchMailbox("Minbox", "INBOX", 7), SearchMailbox("Msent", "Sent", 7)]
    with pytest.raises(type(failure)):
        await search_uids(pool, boxes, [SearchTerm("TEXT", ("x",))])  # type: ignore[arg-type]


async def test_a_mailbox_that_cannot_be_opened_gives_no_hits() -> None:
    """search Rule 2: deleted meanwhile."""
    pool = _Pool()

    @contextlib.asynccontextmanager
    async def session(mailbox: str, *, readonly: bool = False) -> AsyncIterator[_Session]:
        raise ImapCommandFailed("EXAMINE", "NONEXISTENT")
        yield _Session(pool, mailbox)  # pragma: no cover

    pool.session = session  # type: ignore[method-assign]
    hits = await search_uids(pool, [SearchMailbox("Minbox", "INBOX", 7)], [BODY])  # type: ignore[arg-type]
    assert hits == {BODY: {}}
