"""sync/engine.py Rule 6: a listing that differs only in \\Marked or \\UnMarked (RFC 3501
§7.2.2, which flip as any session opens mailboxes) is the same listing, so it stays settled."""

from __future__ import annotations

import pytest

from imapjmap.imap.models import ListEntry
from imapjmap.sync.engine import _unmarked


@pytest.mark.parametrize(
    ("attributes", "kept"),
    [
        ({"\\HasNoChildren"}, {"\\HasNoChildren"}),
        ({"\\HasNoChildren", "\\UnMarked"}, {"\\HasNoChildren"}),
        ({"\\Marked", "\\Archive", "\\Subscribed"}, {"\\Archive", "\\Subscribed"}),
        ({"\\unmarked", "\\noselect"}, {"\\noselect"}),  # Cyrus's spelling
        ({"\\UNMARKED"}, set()),
        (set(), set()),
    ],
)
def test_marks_are_dropped_from_a_listed_entry(attributes: set[str], kept: set[str]) -> None:
    entry = ListEntry("Archive", "/", frozenset(attributes), {"CHILDINFO": "x"})
    got = _unmarked(entry)
    assert got.attributes == frozenset(kept)
    assert (got.name, got.delimiter, got.extended) == ("Archive", "/", {"CHILDINFO": "x"})


def test_the_same_listing_with_and_without_marks_is_equal() -> None:
    plain = ListEntry("Sent", "/", frozenset({"\\Sent", "\\HasNoChildren"}))
    marked = ListEntry("Sent", "/", frozenset({"\\Sent", "\\HasNoChildren", "\\UnMarked"}))
    assert plain != marked
    assert _unmarked(plain) == _unmarked(marked)
