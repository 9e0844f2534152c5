"""A big mailbox's ``UID SEARCH`` split in UID ranges (``upstream.imap_search`` Rule 3)
finds what one search finds, against each real server, also when messages arrive and go
between two ranges.

The plain ``UID SEARCH`` of a second IMAP connection is the oracle.  The ranges are made
narrow (a few UIDs) so that a small mailbox is split as a big one would be; the race is
driven from the pause between two ranges, where the proxy lets other work run.
"""

from __future__ import annotations

import imaplib
import re
from typing import Any

import pytest

from imapjmap.config import ImapConfig
from imapjmap.imap.commands import Command
from imapjmap.imap.pool import ImapPool
from imapjmap.store.db import Store
from imapjmap.upstream import imap_search
from imapjmap.upstream.imap_search import search_uids
from imapjmap.upstream.search import SearchMailbox, SearchTerm

WORD = "quokka"
TERM = SearchTerm("BODY", (WORD,))


def _append(oracle: imaplib.IMAP4, n: int, *, match: bool) -> int:
    body = f"message {n} {'about a ' + WORD if match else 'about nothing'}"
    raw = f"Subject: m{n}\r\nFrom: a@example.org\r\n\r\n{body}\r\n".encode()
    typ, data = oracle.append("INBOX", None, None, raw)
    assert typ == "OK", data
    found = re.search(rb"APPENDUID \d+ (\d+)", data[0] or b"")
    if found:
        return int(found.group(1))
    oracle.select("INBOX")
    typ, data = oracle.uid("SEARCH", "ALL")
    return max(int(u) for u in data[0].split())


def _oracle_hits(oracle: imaplib.IMAP4) -> set[int]:
    oracle.select("INBOX")
    typ, data = oracle.uid("SEARCH", f"BODY {WORD}")
    assert typ == "OK", data
    return {int(u) for u in data[0].split()}


def _expunge(oracle: imaplib.IMAP4, uid: int) -> None:
    oracle.select("INBOX")
    oracle.uid("STORE", str(uid), "+FLAGS.SILENT", "(\\Deleted)")
    oracle.expunge()  # this test user's own mailbox: nothing else is marked deleted


def record_uid_sets(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The UID sets the proxy's ``UID SEARCH`` commands name from now on, in order."""
    searched: list[str] = []
    original = imap_search.search_command

    def search_command(term: SearchTerm, uids: str | None = None) -> Command:
        if uids is not None:
            searched.append(uids)
        return original(term, uids)

    monkeypatch.setattr(imap_search, "search_command", search_command)
    return searched


@pytest.fixture
def narrow_ranges(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Ranges 4 UIDs wide from the first; returns the UID sets searched, in order."""
    monkeypatch.setattr(imap_search, "_FIRST_CHUNK", 4)
    monkeypatch.setattr(imap_search, "next_width", lambda width, seconds: 4)
    return record_uid_sets(monkeypatch)


async def test_a_search_split_in_uid_ranges_finds_what_one_search_finds(
    imap_user: Any, imap_oracle: imaplib.IMAP4, narrow_ranges: list[str]
) -> None:
    """EML-QRY (``body`` condition): every UID in exactly one range, gaps left by expunged
    messages included, the last range open; the hits are the oracle's."""
    uids = [_append(imap_oracle, n, match=n % 3 == 0) for n in range(30)]
    for uid in uids[5:9]:  # a gap wider than a range
        _expunge(imap_oracle, uid)
    cfg = ImapConfig(host=imap_user.host, port=imap_user.port, security="none", pool_size=1)
    pool = ImapPool(cfg, imap_user.username, imap_user.password)
    paused: list[float] = []

    async def pace(seconds: float) -> None:
        paused.append(seconds)

    try:
        hits = await search_uids(pool, [SearchMailbox("m", "INBOX", None)], [TERM], pace=pace)
    finally:
        await pool.aclose()
    expected = _oracle_hits(imap_oracle)
    assert expected and hits == {TERM: {"m": expected}}
    assert narrow_ranges == [f"{n}:{n + 3}" for n in range(1, 29, 4)] + ["29:*"]
    assert len(paused) == len(narrow_ranges) - 1  # between two ranges, not after the last


async def test_messages_arriving_and_leaving_between_two_ranges(
    imap_user: Any, imap_oracle: imaplib.IMAP4, narrow_ranges: list[str]
) -> None:
    """Between the first and second range another client appends a matching message and
    expunges a matching one not searched yet: the new one is found (in the open last
    range), the gone one is not, and no hit is lost or counted twice."""
    uids = [_append(imap_oracle, n, match=True) for n in range(12)]
    cfg = ImapConfig(host=imap_user.host, port=imap_user.port, security="none", pool_size=1)
    pool = ImapPool(cfg, imap_user.username, imap_user.password)
    arrived: list[int] = []

    async def pace(seconds: float) -> None:
        if not arrived:
            arrived.append(_append(imap_oracle, 99, match=True))
            _expunge(imap_oracle, uids[9])

    try:
        hits = await search_uids(pool, [SearchMailbox("m", "INBOX", None)], [TERM], pace=pace)
    finally:
        await pool.aclose()
    assert arrived and arrived[0] > uids[-1]
    expected = _oracle_hits(imap_oracle)
    assert arrived[0] in expected and uids[9] not in expected
    assert hits == {TERM: {"m": expected}}
    assert narrow_ranges[0] == "1:4" and narrow_ranges[-1].endswith(":*")


async def test_a_small_mailbox_is_searched_in_one_command(
    imap_user: Any, imap_oracle: imaplib.IMAP4, narrow_ranges: list[str]
) -> None:
    uids = [_append(imap_oracle, n, match=n == 1) for n in range(3)]
    cfg = ImapConfig(host=imap_user.host, port=imap_user.port, security="none", pool_size=1)
    pool = ImapPool(cfg, imap_user.username, imap_user.password)
    try:
        hits = await search_uids(pool, [SearchMailbox("m", "INBOX", None)], [TERM])
    finally:
        await pool.aclose()
    assert hits == {TERM: {"m": {uids[1]}}}
    assert narrow_ranges == []


async def test_an_email_query_splits_its_search_and_paces_it_for_the_account(
    jmap: Any,
    imap_oracle: imaplib.IMAP4,
    narrow_ranges: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through the API (EML-QRY ``body`` filter): the query's search is split, every pause
    between two ranges is the store's share for this account, and the Emails found are the
    ones the oracle's single search finds."""
    for n in range(10):
        _append(imap_oracle, n, match=n % 2 == 0)
    paced: list[str] = []
    original = Store.pace_upstream

    async def pace_upstream(self: Store, account: str, worked: float) -> None:
        paced.append(account)
        await original(self, account, worked)

    monkeypatch.setattr(Store, "pace_upstream", pace_upstream)
    got = await jmap.ok("Email/query", {"filter": {"body": WORD}})
    found = await jmap.ok("Email/get", {"ids": got["ids"], "properties": ["subject"]})
    expected = _oracle_hits(imap_oracle)
    assert len(expected) == 5
    assert sorted(e["subject"] for e in found["list"]) == [f"m{n}" for n in range(0, 10, 2)]
    assert narrow_ranges == ["1:4", "5:8", "9:*"]
    assert paced == [jmap.account_id] * 2
