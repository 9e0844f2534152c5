"""A search of message contents that wants one page reads the newest messages first
(``methods.email.query`` Rule 4), against each real server.

The plain ``UID SEARCH`` of a second IMAP connection is the oracle of what matches; the
proxy's whole search (asked for a total, which the walk never answers) is the oracle of the
order.  The walk's batches are made small (a few messages) so that a mailbox of forty is
walked as a big one would be, and the UIDs the proxy searched upstream are recorded.
"""

from __future__ import annotations

import imaplib
import time
from typing import Any

import pytest

from imapjmap.methods.email import query as email_query
from tests.integration.conftest import Jmap
from tests.integration.test_search_ranges import record_uid_sets

WORD = "quokka"
COUNT = 40


def _message(n: int) -> bytes:
    subject = f"about a {WORD}" if n == 33 else f"message {n}"  # a header match, not the body
    body = f"number {n} mentions a {WORD}" if n % 5 == 0 else f"number {n} is plain"
    return (
        f"From: a{n}@example.org\r\nTo: b@example.org\r\nSubject: {subject}\r\n"
        f"Message-ID: <walk{n}@example.org>\r\n\r\n{body}\r\n"
    ).encode()


@pytest.fixture
def searched(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Walk batches of four, then eight; returns the UID sets the proxy searched."""
    monkeypatch.setattr(email_query, "_WALK_FIRST", 4)
    monkeypatch.setattr(email_query, "_WALK_MOST", 8)
    return record_uid_sets(monkeypatch)


def _uids(sets: list[str]) -> set[int]:
    out: set[int] = set()
    for uid_set in sets:
        for part in uid_set.split(","):
            low, _, high = part.partition(":")
            out.update(range(int(low), int(high or low) + 1))
    return out


async def test_a_text_search_of_one_page_reads_the_newest_messages_eml_qry(
    jmap: Jmap, imap_oracle: imaplib.IMAP4, searched: list[str]
) -> None:
    """EML-QRY (``text``, CORE-QRY window): each page of the walk is that slice of the whole
    search; the first page of three reads only the newest messages upstream."""
    now = time.time()
    for n in range(COUNT):  # UIDs 1..40, received in that order
        when = imaplib.Time2Internaldate(now - 1000 + n)
        typ, data = imap_oracle.append("INBOX", None, when, _message(n))
        assert typ == "OK", data
    imap_oracle.select("INBOX", readonly=True)
    typ, data = imap_oracle.uid("SEARCH", "TEXT", WORD)
    assert typ == "OK", data
    oracle = {int(u) for u in data[0].split()}
    assert len(oracle) == COUNT // 5 + 1
    query: dict[str, Any] = {"filter": {"text": WORD}}
    whole = await jmap.ok("Email/query", {**query, "calculateTotal": True})
    assert whole["total"] == len(oracle)
    searched.clear()  # the whole search asked in ranges from UID 1 up
    first = await jmap.ok("Email/query", {**query, "limit": 3})
    assert first["ids"] == whole["ids"][:3]
    assert first["queryState"] == whole["queryState"]
    # hits at 40, 35 and 34 (the subject): the batches of 4 and 16 newest, not UID 1 to 24
    assert _uids(searched) and min(_uids(searched)) > COUNT // 2, searched
    for position, limit in [(0, 1), (2, 4), (5, 20), (8, 5), (20, 5)]:
        got = await jmap.ok("Email/query", {**query, "position": position, "limit": limit})
        assert got["ids"] == whole["ids"][position : position + limit], (position, limit)
    inbox = (await jmap.ok("Mailbox/query", {"filter": {"role": "inbox"}}))["ids"][0]
    both = {"text": WORD, "inMailbox": inbox}
    got = await jmap.ok("Email/query", {"filter": both, "position": 1, "limit": 2})
    assert got["ids"] == whole["ids"][1:3]
