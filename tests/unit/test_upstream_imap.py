"""The pure parts of the Upstream over IMAP (``upstream.imap``), table-driven: the command
text each operation sends, what a server's answer proves (Rule 4), and Email/set's retry."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from imapjmap.errors import ImapProtocolViolation
from imapjmap.imap.commands import Command
from imapjmap.imap.models import FetchRecord, Reply, ResponseCode, TaggedResult
from imapjmap.methods.email.set import _Change
from imapjmap.store import emails as em
from imapjmap.upstream import imap
from imapjmap.upstream.imap import _appenduid, _copyuid, _flags_as_wanted
from imapjmap.upstream.writes import Appended, Copied

PARIS = dt.timezone(dt.timedelta(hours=2))


def wire(command: Command) -> tuple[str, tuple[bytes, ...]]:
    """What goes on the wire, the literals apart (the session adds tag and ``{n}``)."""
    return str(command), command.literals


@pytest.mark.parametrize(
    "command,expected",
    [
        (imap.create_command("Work"), ("CREATE Work", ())),
        (imap.create_command("Old Stuff", "archive"), ('CREATE "Old Stuff" (USE (\\Archive))', ())),
        (imap.create_command("Caf\u00e9"), ("CREATE Caf&AOk-", ())),  # modified UTF-7
        (imap.create_command("inbox"), ("CREATE INBOX", ())),
        # a line break in a name cannot end the command line: it is encoded
        (imap.create_command("bad\r\nname"), ("CREATE bad&AA0ACg-name", ())),
        (imap.rename_command("A/b", "A/c d"), ('RENAME A/b "A/c d"', ())),
        (imap.mailbox_command("DELETE", "Trash"), ("DELETE Trash", ())),
        (imap.mailbox_command("UNSUBSCRIBE", "x y"), ('UNSUBSCRIBE "x y"', ())),
        (
            imap.append_command("INBOX", b"Subject: x\r\n\r\n"),
            ("APPEND INBOX {14}", (b"Subject: x\r\n\r\n",)),
        ),
        (
            imap.append_command(
                "Sent", b"m", ["\\Seen", "$Forwarded"], dt.datetime(2024, 1, 5, 9, 15, tzinfo=PARIS)
            ),
            ('APPEND Sent (\\Seen $Forwarded) "05-Jan-2024 09:15:00 +0200" {1}', (b"m",)),
        ),
        (imap.find_appended_command(None, 7), ("UID SEARCH UID 7:*", ())),
        (
            imap.find_appended_command("a@b.example"),
            ('UID SEARCH UID 1:* HEADER Message-ID "<a@b.example>"', ()),
        ),
        (
            imap.find_appended_command("\u00e9@b.example", 3),
            (
                "UID SEARCH CHARSET UTF-8 UID 3:* HEADER Message-ID {14}",
                ("<\u00e9@b.example>".encode(),),
            ),
        ),
        (imap.store_command([3, 1, 2], "+", ["\\Seen"]), ("UID STORE 1:3 +FLAGS (\\Seen)", ())),
        (
            imap.store_command([5], "-", {"b", "a"}, 42),
            ("UID STORE 5 (UNCHANGEDSINCE 42) -FLAGS (a b)", ()),
        ),
        (imap.transfer_command("COPY", [9, 4], "Archive"), ("UID COPY 4,9 Archive", ())),
        (imap.transfer_command("MOVE", [1], "[Gmail]/Trash"), ("UID MOVE 1 [Gmail]/Trash", ())),
        (imap.fetch_command([1, 2], "UID BODY.PEEK[]"), ("UID FETCH 1:2 (UID BODY.PEEK[])", ())),
    ],
)
def test_operation_becomes_command_text(
    command: Command, expected: tuple[str, tuple[bytes, ...]]
) -> None:
    assert wire(command) == expected


@pytest.mark.parametrize(
    "build",
    [
        lambda: imap.store_command([1], "+", ["two words"]),  # a keyword cannot be quoted
        lambda: imap.store_command([], "+", ["\\Seen"]),  # no UIDs: no sequence set
        lambda: imap.append_command("INBOX", b"m", (), dt.datetime(2024, 1, 5)),  # naive date
    ],
)
def test_operation_that_cannot_be_written_is_refused_before_sending(build: Any) -> None:
    with pytest.raises(ValueError):
        build()


@pytest.mark.parametrize(
    "codes,expected",
    [
        ((), Appended(None, None)),  # no UIDPLUS: the caller searches for the message
        ((ResponseCode("APPENDUID", "38505 3955"),), Appended(38505, 3955)),
    ],
)
def test_appenduid_says_where_the_message_went(
    codes: tuple[ResponseCode, ...], expected: Appended
) -> None:
    assert _appenduid(reply(*codes)) == expected


@pytest.mark.parametrize("args", ["", "38505", "x 1"])
def test_bad_appenduid_is_a_protocol_violation(args: str) -> None:
    with pytest.raises(ImapProtocolViolation):
        _appenduid(reply(ResponseCode("APPENDUID", args)))


def test_copied_says_the_uid_a_copy_got() -> None:
    assert Copied(frozenset({1}), {1: 10}).target_uid(1) == 10
    assert Copied(frozenset({1}), {1: 10}).target_uid(2) is None
    assert Copied(frozenset({1})).target_uid(1) is None  # no COPYUID


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


class ScriptedSession:
    """Answers each command with the next scripted reply, and keeps what was sent."""

    def __init__(self, *replies: Reply, enabled: frozenset[str] = frozenset()) -> None:
        self.replies = list(replies)
        self.enabled = enabled
        self.sent: list[str] = []

    async def execute(self, command: Command, *, what: str = "") -> Reply:
        self.sent.append(str(command))
        return self.replies.pop(0)


def fetched(*records: FetchRecord, codes: tuple[ResponseCode, ...] = ()) -> Reply:
    return Reply(tagged=TaggedResult("OK", None, "done"), codes=codes, fetches=records)


async def test_store_proves_by_the_fetches_it_draws_and_asks_for_the_rest() -> None:
    """Rule 4: UID 1 shown flagged by the STORE's own FETCH, UID 2 refused [MODIFIED],
    UID 3 shown by no FETCH (already flagged?) is asked for and found flagged, UID 4 is
    gone (absent from the FETCH afterwards)."""
    session = ScriptedSession(
        fetched(
            FetchRecord(1, uid=1, flags=("\\Flagged",)),
            codes=(ResponseCode("MODIFIED", "2"),),
        ),
        fetched(FetchRecord(3, uid=3, flags=("\\Seen", "\\Flagged"))),
        enabled=frozenset({"CONDSTORE"}),
    )
    stored = await imap.store_flags(session, [1, 2, 3, 4], "+", ["\\Flagged"], 17)  # type: ignore[arg-type]
    assert session.sent == [
        "UID STORE 1:4 (UNCHANGEDSINCE 17) +FLAGS (\\Flagged)",
        "UID FETCH 3:4 (FLAGS)",
    ]
    assert (stored.done, stored.modified, stored.missing) == ({1, 3}, {2}, {4})


async def test_store_without_condstore_sends_no_unchangedsince() -> None:
    session = ScriptedSession(fetched(FetchRecord(1, uid=1, flags=())))
    stored = await imap.store_flags(session, [1], "-", ["\\Seen"], 17)  # type: ignore[arg-type]
    assert session.sent == ["UID STORE 1 -FLAGS (\\Seen)"]
    assert stored.done == {1}
