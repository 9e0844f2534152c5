"""upstream/imap_sync.py: the command text of the email sync's reads, as a table (the
reads themselves run on every real server in tests/integration/test_email_sync.py)."""

from __future__ import annotations

import pytest

from imapjmap.imap.commands import Command
from imapjmap.imap.models import UidSet
from imapjmap.upstream import imap_sync as s

HEADERS = "REFERENCES LIST-ID"
BASE = (
    "UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE "
    "BODY.PEEK[HEADER.FIELDS (REFERENCES LIST-ID)]"
)


@pytest.mark.parametrize(
    ("condstore", "message_items", "expected"),
    [
        (False, (), f"({BASE})"),
        (True, ("EMAILID", "THREADID"), f"({BASE} MODSEQ EMAILID THREADID)"),
        (True, ("X-GUID",), f"({BASE} MODSEQ X-GUID)"),
        (
            True,
            ("X-GM-MSGID", "X-GM-THRID", "X-GM-LABELS"),
            f"({BASE} MODSEQ X-GM-MSGID X-GM-THRID X-GM-LABELS)",
        ),
    ],
    ids=["bare", "object ids", "guid", "labels"],
)
def test_list_items(condstore: bool, message_items: tuple[str, ...], expected: str) -> None:
    items = s.list_items(HEADERS, condstore=condstore, message_items=message_items)
    assert items == expected
    assert "BODYSTRUCTURE" not in s.id_items(items)
    assert s.id_items(items).replace("ENVELOPE", "ENVELOPE BODYSTRUCTURE") == items


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (
            s.changes_command(120),
            "UID FETCH 1:* (UID FLAGS MODSEQ) (CHANGEDSINCE 120 VANISHED)",
        ),
        (
            s.flags_command(10, 100, condstore=True),
            "UID FETCH 1:10 (UID FLAGS MODSEQ) (CHANGEDSINCE 100)",
        ),
        (s.flags_command(10, None, condstore=True), "UID FETCH 1:10 (UID FLAGS MODSEQ)"),
        # without CONDSTORE there is no modseq to ask since
        (s.flags_command(10, 100, condstore=False), "UID FETCH 1:10 (UID FLAGS)"),
        (
            s.flags_command(7, 3, condstore=True, extra=("X-GM-LABELS",)),
            "UID FETCH 1:7 (UID FLAGS MODSEQ X-GM-LABELS) (CHANGEDSINCE 3)",
        ),
        (s.search_command("ALL", esearch=True), "UID SEARCH RETURN (ALL) ALL"),
        (s.search_command("UID 5:*", esearch=False), "UID SEARCH UID 5:*"),
        (s.fetch_command([3, 1, 2, 9], "(UID FLAGS)"), "UID FETCH 1:3,9 (UID FLAGS)"),
    ],
)
def test_read_becomes_command_text(command: Command, expected: str) -> None:
    assert (str(command), command.literals) == (expected, ())


@pytest.mark.parametrize(
    ("low", "high", "criteria"),
    [(1, None, "ALL"), (0, None, "ALL"), (11, None, "UID 11:*"), (1, 10, "UID 1:10")],
)
def test_range_criteria(low: int, high: int | None, criteria: str) -> None:
    assert s.range_criteria(low, high) == criteria


@pytest.mark.parametrize(
    ("found", "low", "expected"),
    [
        (UidSet(((11, 15),)), 11, UidSet(((11, 15),))),
        (UidSet(((9, 9),)), 11, UidSet()),  # every UID below: "11:*" named the highest, 9
        (UidSet(((3, 4), (8, 14))), 11, UidSet(((11, 14),))),
        (UidSet(), 11, UidSet()),
    ],
    ids=["all above", "only the highest below", "straddling", "empty"],
)
def test_from_low(found: UidSet, low: int, expected: UidSet) -> None:
    assert s.from_low(found, low) == expected
