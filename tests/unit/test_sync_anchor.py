"""Which mailbox the refresh keeps selected on Dovecot (sync.engine Rule 5)."""

from __future__ import annotations

import pytest

from imapjmap.store.queries import MailboxRow
from imapjmap.sync.engine import ANCHOR_MIN, _choose_anchor


def box(
    name: str, messages: int | None, *, role: str | None = None, selectable: bool = True
) -> MailboxRow:
    return MailboxRow(
        "a", "M" + name, name, name, role=role, messages=messages,
        uidvalidity=1 if selectable else None,
    )  # fmt: skip


CASES = [
    ("no mailboxes", [], None),
    ("INBOX alone", [box("INBOX", 5, role="inbox")], "INBOX"),
    ("INBOX, even when empty and others are small",
     [box("INBOX", 0, role="inbox"), box("Archive", ANCHOR_MIN - 1)], "INBOX"),
    ("a far bigger mailbox",
     [box("INBOX", 100, role="inbox"), box("Archive", ANCHOR_MIN)], "Archive"),
    ("bigger, but not ten times INBOX",
     [box("INBOX", ANCHOR_MIN, role="inbox"), box("Archive", 9 * ANCHOR_MIN)], "INBOX"),
    ("the biggest of several far bigger ones",
     [box("INBOX", 10, role="inbox"), box("A", ANCHOR_MIN), box("B", 2 * ANCHOR_MIN)], "B"),
    ("no INBOX row: the biggest", [box("x", 3), box("y", 7)], "y"),
    ("\\Noselect mailboxes never",
     [box("INBOX", 1, role="inbox"), box("Parent", None, selectable=False)], "INBOX"),
    ("counts not known yet", [box("INBOX", None, role="inbox"), box("Sent", None)], "INBOX"),
]  # fmt: skip


@pytest.mark.parametrize(("rows", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_choose_anchor(rows: list[MailboxRow], expected: str | None) -> None:
    assert _choose_anchor(rows) == expected
