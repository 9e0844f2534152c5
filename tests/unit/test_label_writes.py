"""The writes of Email/set where labels are mailboxes (Gmail mode), planned from the cache's
rows: a table of patches (EML-SET: keywords and mailboxIds updates, destroy) and the label
stores, moves and removals they become (methods.email.label_writes)."""

from __future__ import annotations

from typing import Any

import pytest

from imapjmap.methods.email import label_writes
from imapjmap.methods.email.label_writes import Plan, Restore, plan
from imapjmap.store import emails as em
from imapjmap.store.queries import MailboxRow
from imapjmap.sync.gmail import Labels

_READ = {"mayReadItems": True}


def _row(mailbox_id: str, name: str, role: str | None = None) -> MailboxRow:
    return MailboxRow("A", mailbox_id, name, name.rpartition("/")[2], role=role, my_rights=_READ)


LABELS = Labels(
    [
        _row("i", "INBOX", "inbox"),
        _row("a", "[Gmail]/All Mail", "all"),
        _row("t", "[Gmail]/Trash", "trash"),
        _row("j", "[Gmail]/Spam", "junk"),
        _row("f", "[Gmail]/Starred", "flagged"),
        _row("w", "Work"),
        _row("x", "Xmas"),
    ]
)


def _email(mailboxes: str, keywords: tuple[str, ...] = ()) -> em.EmailRow:
    return em.EmailRow(
        "A", "M1", "T1", 10, 0,
        keywords=dict.fromkeys(keywords, True), mailbox_ids=dict.fromkeys(mailboxes, True),
    )  # fmt: skip


def _at(mailbox_id: str, uid: int, *, deleted: bool = False) -> em.Location:
    return em.Location(mailbox_id, uid, "M1", None, (), deleted)


IN_ALL_MAIL = [_at("a", 7), _at("i", -7), _at("w", -7)]  # All Mail, labelled Inbox and Work
IN_TRASH = [_at("t", 3)]


def _plan(**expected: Any) -> Plan:
    out = Plan()
    for name, value in expected.items():
        getattr(out, name).update(value) if isinstance(value, dict) else setattr(out, name, value)
    return out


@pytest.mark.parametrize(
    ("mailboxes", "keywords", "locations", "wanted_mailboxes", "wanted_keywords", "expected"),
    [
        # a keyword: a flag store on the holding copy
        (
            "aiw",
            (),
            IN_ALL_MAIL,
            "aiw",
            ("$seen",),
            _plan(flags={("a", frozenset({"\\Seen"}), frozenset()): [7]}),
        ),
        (
            "aiw",
            ("$seen",),
            IN_ALL_MAIL,
            "aiw",
            (),
            _plan(flags={("a", frozenset(), frozenset({"\\Seen"})): [7]}),
        ),
        # a label added, one removed: label stores on All Mail
        ("aiw", (), IN_ALL_MAIL, "aiwx", (), _plan(labels={("+", frozenset({"Xmas"})): [7]})),
        ("aiw", (), IN_ALL_MAIL, "aw", (), _plan(labels={("-", frozenset({"\\Inbox"})): [7]})),
        (
            "aiw",
            (),
            IN_ALL_MAIL,
            "ax",
            (),
            _plan(
                labels={("+", frozenset({"Xmas"})): [7], ("-", frozenset({"\\Inbox", "Work"})): [7]}
            ),
        ),
        # All Mail cannot be left: taking it away alone changes nothing
        ("aiw", (), IN_ALL_MAIL, "iw", (), _plan()),
        # to the Trash (or Spam): a move from All Mail, whatever the labels asked
        ("aiw", (), IN_ALL_MAIL, "t", (), _plan(moves={("a", "t"): [7]})),
        # ... and the Email/set answer says it is in Spam alone, the labels asked not shown
        ("aiw", (), IN_ALL_MAIL, "awj", (), _plan(moves={("a", "j"): [7]}, shown={"M1": "j"})),
        # out of the Trash: back to the first label (the inbox first), then the others
        (
            "t",
            (),
            IN_TRASH,
            "wix",
            (),
            _plan(restores=[Restore("M1", "t", 3, "i", ("Work", "Xmas"))]),
        ),
        ("t", (), IN_TRASH, "x", (), _plan(restores=[Restore("M1", "t", 3, "x", ())])),
        ("t", (), IN_TRASH, "a", (), _plan(restores=[Restore("M1", "t", 3, "a", ())])),
        # still in the Trash: its labels are not shown, nothing to write, and the answer
        # says it is in the Trash alone (not the label asked: the client's view must match)
        ("t", (), IN_TRASH, "tw", (), _plan(shown={"M1": "t"})),
        ("t", (), IN_TRASH, "t", (), _plan()),
        # from the Trash to Spam: a move
        ("t", (), IN_TRASH, "j", (), _plan(moves={("t", "j"): [3]})),
        # no holding copy left (only a copy marked deleted): nothing
        ("a", (), [_at("a", 7, deleted=True)], "aw", (), None),
    ],
)
def test_an_update_becomes_label_stores_and_moves(
    mailboxes: str,
    keywords: tuple[str, ...],
    locations: list[em.Location],
    wanted_mailboxes: str,
    wanted_keywords: tuple[str, ...],
    expected: Plan | None,
) -> None:
    change = (dict.fromkeys(wanted_keywords, True), set(wanted_mailboxes))
    got = plan(LABELS, {"M1": _email(mailboxes, keywords)}, {"M1": locations}, {"M1": change}, [])
    if expected is None:
        assert got == Plan()
        return
    home = label_writes.holding_copy(locations, LABELS)
    assert home is not None
    expected.owners = {(home.mailbox_id, home.uid): "M1"}
    assert got == expected


@pytest.mark.parametrize(
    ("locations", "trash", "removals"),
    [
        (IN_ALL_MAIL, [7], {}),  # through the Trash: an expunge in All Mail only trashes
        (IN_TRASH, [], {"t": [3]}),  # gone for ever from the Trash
        ([_at("j", 4)], [], {"j": [4]}),
        ([_at("a", 7, deleted=True), _at("t", 3)], [], {"t": [3]}),  # a deleted copy: ours
    ],
)
def test_a_destroy_goes_through_the_trash(
    locations: list[em.Location], trash: list[int], removals: dict[str, list[int]]
) -> None:
    got = plan(LABELS, {"M1": _email("a")}, {"M1": locations}, {}, ["M1"])
    assert got.trash == trash and dict(got.removals) == removals
    assert set(got.owners.values()) == {"M1"}


def test_many_emails_with_one_change_share_one_command() -> None:
    rows = {f"M{n}": _email("aiw") for n in range(3)}
    locations = {f"M{n}": [_at("a", 10 + n)] for n in range(3)}
    changes = {i: ({}, set("aiwx")) for i in rows}
    got = plan(LABELS, rows, locations, changes, [])
    assert dict(got.labels) == {("+", frozenset({"Xmas"})): [10, 11, 12]}
