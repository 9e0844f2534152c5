"""Gmail mode's pure parts: which mode, labels ↔ mailboxes, the grace bookkeeping, Bearer."""

from __future__ import annotations

import re
from typing import Any

import pytest

from imapjmap.config import ImapConfig, config_warnings, parse_config
from imapjmap.errors import ConfigError
from imapjmap.http.auth import Unauthorized, parse_bearer
from imapjmap.imap.models import ListEntry
from imapjmap.imap.session import BearerToken
from imapjmap.store.queries import MailboxRow
from imapjmap.sync.gmail import Grace, Labels, label_of, system_folders
from imapjmap.sync.mailboxes import Listed, rights_of
from imapjmap.upstream.profiles import labels_mode

_SELECTABLE = {"mayReadItems": True}


def row(mailbox_id: str, name: str, role: str | None = None, **kw: Any) -> MailboxRow:
    return MailboxRow("A", mailbox_id, name, name.rpartition("/")[2], role=role,
                      my_rights=kw.pop("rights", _SELECTABLE), **kw)  # fmt: skip


ROWS = [
    row("i", "INBOX", "inbox"),
    row("g", "[Gmail]", rights={"mayReadItems": False}),
    row("a", "[Gmail]/All Mail", "all", messages=5),
    row("s", "[Gmail]/Sent Mail", "sent"),
    row("d", "[Gmail]/Drafts", "drafts"),
    row("t", "[Gmail]/Trash", "trash", messages=1),
    row("j", "[Gmail]/Spam", "junk", messages=0),
    row("f", "[Gmail]/Starred", "flagged"),
    row("m", "[Gmail]/Important", "important"),
    row("w", "Work"),
    row("u", "Reisen/Übersicht"),
]


@pytest.mark.parametrize(
    ("mode", "capabilities", "expected"),
    [
        ("auto", {"IMAP4REV1", "X-GM-EXT-1"}, True),
        ("auto", {"IMAP4REV1"}, False),
        ("on", {"IMAP4REV1"}, True),
        ("off", {"X-GM-EXT-1"}, False),
    ],
)
def test_mode_from_config_and_capability(mode: Any, capabilities: set[str], expected: bool) -> None:
    assert labels_mode(mode, frozenset(capabilities)) is expected


def test_labels_map_to_mailboxes() -> None:
    labels = Labels(ROWS)
    got = labels.mailbox_ids(
        ["\\Inbox", "\\Sent", "\\Draft", "\\Starred", "\\Important", "Work", "Reisen/Übersicht",
         "Nowhere", "\\Muted"]
    )  # fmt: skip
    assert got == {"i", "s", "d", "f", "m", "w", "u"}
    assert labels.mailbox_ids(["\\INBOX", "INBOX", "\\important"]) == {"i", "m"}
    assert labels.all_mail is not None and labels.all_mail.id == "a"


def test_all_mail_trash_spam_and_noselect_are_no_labels() -> None:
    by_id = {r.id: r for r in ROWS}
    assert [label_of(by_id[i]) for i in "agtj"] == [None, None, None, None]
    assert label_of(by_id["i"]) == "\\Inbox"
    assert label_of(by_id["f"]) == "\\Starred"
    assert label_of(by_id["w"]) == "Work"


def _entry(name: str, *attributes: str) -> ListEntry:
    return ListEntry(name, "/", frozenset(attributes), {})


GMAIL_LIST = [
    _entry("INBOX", "\\HasNoChildren"),
    _entry("[Google Mail]", "\\Noselect", "\\HasChildren"),
    _entry("[Google Mail]/Alle Nachrichten", "\\All"),
    _entry("[Google Mail]/Markiert", "\\Flagged"),
    _entry("[Google Mail]/Papierkorb", "\\Trash"),
    _entry("Work", "\\HasChildren"),
    _entry("Work/Old", "\\HasNoChildren"),
    _entry("Archiv", "\\Noselect", "\\HasChildren"),  # a user's own \\Noselect parent
    _entry("Archiv/2020"),
]


def test_system_folders_are_the_special_uses_and_their_noselect_parent_mbx_03() -> None:
    fixed = system_folders(GMAIL_LIST)
    assert fixed == {
        "[Google Mail]",
        "[Google Mail]/Alle Nachrichten",
        "[Google Mail]/Markiert",
        "[Google Mail]/Papierkorb",
    }
    for entry in GMAIL_LIST:
        rights = rights_of(Listed(entry, None, fixed=entry.name in fixed))
        movable = entry.name in ("Work", "Work/Old", "Archiv", "Archiv/2020")
        assert rights["mayRename"] is movable and rights["mayDelete"] is movable, entry.name
        assert rights["mayCreateChild"] is (entry.name not in fixed), entry.name


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_grace_holds_until_it_ends_then_asks_for_a_recheck() -> None:
    clock = Clock()
    grace = Grace(10.0, clock)
    grace.note(["M1", "M2"])
    assert set(grace.active()) == {"M1", "M2"}
    grace.hold("a", 7, "M1", grace.active()["M1"])
    assert grace.holding and grace.held_for("M1") == [("a", 7)]
    assert not grace.take_due("a")  # not yet
    clock.now += 10.5
    assert grace.active() == {}
    assert not grace.take_due("t")
    assert grace.take_due("a") and not grace.holding  # checked again, then forgotten


def test_grace_forgets_destroyed_emails_and_releases_copies() -> None:
    grace = Grace(10.0, Clock())
    grace.note(["M1", "M2"])
    grace.hold("a", 7, "M1", 110.0)
    grace.hold("a", 8, "M2", 110.0)
    grace.forget(["M1"])
    assert set(grace.active()) == {"M2"} and grace.held_for("M1") == []
    grace.release("a", 8)
    assert not grace.holding


def test_bearer_header() -> None:
    token = parse_bearer("Bearer ya29.a0-b_c~d+e/f==")
    assert isinstance(token, BearerToken) and token == "ya29.a0-b_c~d+e/f=="
    assert parse_bearer("Basic Ym9iOnB3") is None
    assert parse_bearer(None) is None
    with pytest.raises(Unauthorized):
        parse_bearer("Bearer ")
    with pytest.raises(Unauthorized):
        parse_bearer("Bearer a b")


def minimal(**tables: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"imap": {"host": "imap.gmail.com"}}
    for name, values in tables.items():
        data.setdefault(name, {}).update(values)
    return data


def test_config_gmail_and_bearer_profile_url() -> None:
    cfg = parse_config(
        minimal(imap={"gmail": "on"}, auth={"bearer_profile_url": "https://x.example/me"})
    )
    assert cfg.imap == ImapConfig(host="imap.gmail.com", gmail="on")
    assert cfg.auth.bearer_profile_url == "https://x.example/me"
    with pytest.raises(ConfigError, match=re.escape("imap.gmail: must be one of auto, on, off")):
        parse_config(minimal(imap={"gmail": True}))
    with pytest.raises(ConfigError, match=r"auth\.bearer_profile_url: expected an absolute"):
        parse_config(minimal(auth={"bearer_profile_url": "gmail.googleapis.com/profile"}))
    plain = parse_config(minimal(auth={"bearer_profile_url": "http://profile.example/me"}))
    assert any("bearer_profile_url is plain http" in w for w in config_warnings(plain))
    local = parse_config(minimal(auth={"bearer_profile_url": "http://127.0.0.1:9/me"}))
    assert not any("bearer_profile_url" in w for w in config_warnings(local))
