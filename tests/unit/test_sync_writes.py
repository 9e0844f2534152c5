"""The pure parts of ``sync.writes`` Rule 4 and of Email/set's retry: what a server's
answer proves, table-driven."""

from __future__ import annotations

import pytest

from imapjmap.imap.models import Reply, ResponseCode, TaggedResult
from imapjmap.methods.email.set import _Change
from imapjmap.store import emails as em
from imapjmap.sync.writes import _copyuid, _flags_as_wanted


@pytest.mark.parametrize(
    "flags,op,wanted,expected",
    [
        (("\\Seen", "Work"), "+", {"work"}, True),  # keywords compare without case
        (("\\Seen",), "+", {"\\seen", "\\flagged"}, False),
        ((), "+", {"\\seen"}, False),
        (("\\Seen",), "-", {"\\flagged"}, True),
        (("\\Seen", "\\Flagged"), "-", {"\\flagged"}, False),
        ((), "-", {"\\deleted"}, True),
    ],
)
def test_flags_as_wanted(flags: tuple[str, ...], op: str, wanted: set[str], expected: bool) -> None:
    assert _flags_as_wanted(flags, op, frozenset(wanted)) is expected


def reply(*codes: ResponseCode) -> Reply:
    return Reply(tagged=TaggedResult("OK", None, "done"), codes=codes)


@pytest.mark.parametrize(
    "codes,uids,expected",
    [
        ((), [1, 2], None),  # no COPYUID: nothing proven by the reply itself
        ((ResponseCode("COPYUID", "7 1:3 10:12"),), [1, 2, 3], {1: 10, 2: 11, 3: 12}),
        # Cyrus skips a UID another client moved away: only the others are proven
        ((ResponseCode("COPYUID", "7 2 4"),), [1, 2], {2: 4}),
        # a UID of someone else's command in the same reply is not ours
        ((ResponseCode("COPYUID", "7 5 9"), ResponseCode("COPYUID", "7 1 3")), [1], {1: 3}),
        ((ResponseCode("COPYUID", "7 1:2 3"),), [1, 2], None),  # sets of different sizes
        ((ResponseCode("COPYUID", "garbage"),), [1], None),
        ((ResponseCode("APPENDUID", "7 1"),), [1], None),
    ],
)
def test_copyuid_proves_the_uids_it_names(
    codes: tuple[ResponseCode, ...], uids: list[int], expected: dict[int, int] | None
) -> None:
    assert _copyuid(reply(*codes), uids) == expected


def row(keywords: set[str], mailboxes: set[str]) -> em.EmailRow:
    return em.EmailRow(
        account_id="A",
        id="E1",
        thread_id="T1",
        size=1,
        received_at=0,
        keywords=dict.fromkeys(keywords, True),
        mailbox_ids=dict.fromkeys(mailboxes, True),
    )


def test_change_is_kept_as_a_difference_so_a_retry_keeps_other_clients_work() -> None:
    """A patch that replaces keywords and mailboxIds wholesale is, on retry, applied as
    what it added and removed relative to what the client saw: a keyword or mailbox
    another client added meanwhile stays."""
    seen = row({"$seen", "old"}, {"Minbox"})
    change = _Change.between(seen, {"$seen": True, "new": True}, {"Marchive"})
    assert change == _Change(
        frozenset({"new"}), frozenset({"old"}), frozenset({"Marchive"}), frozenset({"Minbox"})
    )
    now = row({"$seen", "old", "$flagged"}, {"Mtrash"})  # moved and flagged by someone else
    assert change.keywords_on(now) == {"$seen": True, "$flagged": True, "new": True}
    assert change.mailboxes_on(now.mailbox_ids) == {"Mtrash", "Marchive"}
