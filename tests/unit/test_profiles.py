"""The server profile chosen at login (imapjmap.upstream.profiles; docs/design.md, "Servers").

The capability lines and ID answers are captured from the servers the tests run against
(Dovecot 2.3.19.1 and Cyrus 3.6.1 of Debian 12, the minimal Dovecot of tests/conftest.py) and
from Google's "IMAP Extensions" document (its example handshake with Gmail).
"""

from __future__ import annotations

import dataclasses

import pytest

from imapjmap.config import ImapConfig
from imapjmap.imap.parse import parse_capabilities, parse_id
from imapjmap.upstream.profiles import Profile, choose

DOVECOT = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES"
    " THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN"
    " NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES"
    " WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW"
    " STATUS=SIZE SAVEDATE LITERAL+ NOTIFY SPECIAL-USE QUOTA"
)
DOVECOT_ID = 'ID ("name" "Dovecot")'
# tests/conftest.py's dovecot-minimal: Dovecot without CONDSTORE QRESYNC LIST-STATUS MOVE UIDPLUS
DOVECOT_MINIMAL = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES"
    " THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN"
    " NAMESPACE LIST-EXTENDED I18NLEVEL=1 ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH BINARY"
    " SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE LITERAL+ NOTIFY SPECIAL-USE QUOTA"
)
CYRUS = (
    "IMAP4rev1 LITERAL+ ID ENABLE ACL ANNOTATE-EXPERIMENT-1 BINARY CATENATE CHILDREN CONDSTORE"
    " CREATE-SPECIAL-USE ESEARCH ESORT LIST-EXTENDED LIST-MYRIGHTS LIST-STATUS MAILBOX-REFERRALS"
    " METADATA MOVE MULTIAPPEND NAMESPACE OBJECTID PREVIEW QRESYNC QUOTA RIGHTS=kxten SAVEDATE"
    " SEARCH=FUZZY SORT SORT=DISPLAY SPECIAL-USE STATUS=SIZE THREAD=ORDEREDSUBJECT"
    " THREAD=REFERENCES UIDPLUS UNSELECT URLAUTH URLAUTH=BINARY WITHIN DIGEST=SHA1 LIST-METADATA"
    " NO_ATOMIC_RENAME SCAN SORT=MODSEQ SORT=UID THREAD=REFS X-CREATEDMODSEQ X-REPLICATION"
    " X-SIEVE-MAILBOX XLIST XMOVE LOGINDISABLED XCONVERSATIONS COMPRESS=DEFLATE X-QUOTA=STORAGE"
    " X-QUOTA=MESSAGE X-QUOTA=X-ANNOTATION-STORAGE X-QUOTA=X-NUM-FOLDERS IDLE"
    " APPENDLIMIT=4294967295"
)
CYRUS_ID = (
    'ID ("name" "Cyrus IMAPD" "version" "3.6.1-Debian-3.6.1-4+deb12u4" "vendor" "Project Cyrus"'
    ' "support-url" "https://www.cyrusimap.org" "os" "Linux" "os-version" "6.1.0"'
    ' "environment" "Built w/Cyrus SASL 2.1.28; idle = idled")'
)
GMAIL = "IMAP4rev1 UNSELECT LITERAL+ IDLE NAMESPACE QUOTA ID XLIST CHILDREN X-GM-EXT-1"
GMAIL_ID = (
    'ID ("name" "GImap" "vendor" "Google, Inc." "support-url" "http://mail.google.com/support"'
    ' "remote-host" "127.0.0.1")'
)
# the Gmail emulation of tests/gmail_emulation: Google's list plus what Gmail offers today
GMAIL_EMULATION = GMAIL + " UIDPLUS MOVE ENABLE CONDSTORE ESEARCH SPECIAL-USE"
BARE = "IMAP4rev1 LITERAL+ IDLE NAMESPACE"
# a server the proxy does not know by name, with the extensions it uses
OTHER = "IMAP4rev1 IDLE CONDSTORE QRESYNC LIST-STATUS MOVE UIDPLUS OBJECTID SPECIAL-USE"
OTHER_ID = 'ID ("name" "Example IMAP" "version" "1.0")'

COUNTS = "MESSAGES UIDNEXT UIDVALIDITY UNSEEN"
PLAIN = Profile(
    kind="generic",
    labels=False,
    message_items=(),
    flag_items=(),
    mailbox_id_item="",
    status_items=COUNTS,
    anchor=False,
    push="idle",
    push_lists=False,
    folded_logins=False,
)
GMAIL_MODE = dataclasses.replace(
    PLAIN,
    kind="gmail",
    labels=True,
    message_items=("X-GM-MSGID", "X-GM-THRID", "X-GM-LABELS"),
    flag_items=("X-GM-LABELS",),
    push="idle-all",
    folded_logins=True,
)

CASES: list[tuple[str, str, str | None, ImapConfig, Profile]] = [
    (
        "Dovecot 2.3: X-GUID ids, the anchor, NOTIFY",
        DOVECOT,
        DOVECOT_ID,
        ImapConfig(),
        dataclasses.replace(
            PLAIN,
            kind="dovecot",
            message_items=("X-GUID",),
            mailbox_id_item="X-GUID",
            status_items=COUNTS + " HIGHESTMODSEQ X-GUID",
            anchor=True,
            push="notify",
        ),
    ),
    (
        "minimal Dovecot: X-GUID still, no anchor without LIST-STATUS",
        DOVECOT_MINIMAL,
        DOVECOT_ID,
        ImapConfig(),
        dataclasses.replace(
            PLAIN,
            kind="dovecot",
            message_items=("X-GUID",),
            mailbox_id_item="X-GUID",
            status_items=COUNTS + " X-GUID",
            push="notify",
        ),
    ),
    (
        "Dovecot that does not answer ID: only what its capabilities say",
        DOVECOT,
        None,
        ImapConfig(),
        dataclasses.replace(PLAIN, status_items=COUNTS + " HIGHESTMODSEQ", push="notify"),
    ),
    (
        "Cyrus 3.6: OBJECTID, IDLE with LIST-STATUS",
        CYRUS,
        CYRUS_ID,
        ImapConfig(),
        dataclasses.replace(
            PLAIN,
            kind="cyrus",
            message_items=("EMAILID", "THREADID"),
            mailbox_id_item="MAILBOXID",
            status_items=COUNTS + " HIGHESTMODSEQ",
            push_lists=True,
        ),
    ),
    ("Gmail (Google's handshake): Gmail mode", GMAIL, GMAIL_ID, ImapConfig(), GMAIL_MODE),
    (
        "the Gmail emulation",
        GMAIL_EMULATION,
        GMAIL_ID,
        ImapConfig(),
        dataclasses.replace(GMAIL_MODE, status_items=COUNTS + " HIGHESTMODSEQ"),
    ),
    (
        "Gmail with imap.gmail = off: plain IMAP, Gmail's message ids",
        GMAIL,
        GMAIL_ID,
        ImapConfig(gmail="off"),
        dataclasses.replace(PLAIN, kind="gmail", message_items=("X-GM-MSGID", "X-GM-THRID")),
    ),
    (
        "imap.gmail = on forces Gmail mode",
        BARE,
        None,
        ImapConfig(gmail="on"),
        dataclasses.replace(GMAIL_MODE, kind="bare"),
    ),
    ("a bare server", BARE, None, ImapConfig(), dataclasses.replace(PLAIN, kind="bare")),
    (
        "a bare server without IDLE: polled",
        "IMAP4rev1",
        None,
        ImapConfig(),
        dataclasses.replace(PLAIN, kind="bare", push="poll"),
    ),
    (
        "an unknown server: what its capabilities allow",
        OTHER,
        OTHER_ID,
        ImapConfig(),
        dataclasses.replace(
            PLAIN,
            message_items=("EMAILID", "THREADID"),
            mailbox_id_item="MAILBOXID",
            status_items=COUNTS + " HIGHESTMODSEQ",
            push_lists=True,
        ),
    ),
]


@pytest.mark.parametrize(
    ("capabilities", "answer", "cfg", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_choose(capabilities: str, answer: str | None, cfg: ImapConfig, expected: Profile) -> None:
    fields = parse_id(answer) if answer is not None else {}
    assert choose(parse_capabilities(capabilities), fields, cfg) == expected


def test_the_name_is_matched_whatever_its_case_and_key_spelling() -> None:
    caps = parse_capabilities(DOVECOT)
    assert choose(caps, {"NAME": " dovecot "}, ImapConfig()).kind == "dovecot"
    assert choose(caps, {"name": "Dovecot Pro"}, ImapConfig()).kind == "generic"


def test_a_profile_is_frozen_and_hashable() -> None:
    profile = choose(parse_capabilities(DOVECOT), parse_id(DOVECOT_ID), ImapConfig())
    with pytest.raises(dataclasses.FrozenInstanceError):
        profile.anchor = False  # type: ignore[misc]
    assert hash(profile) == hash(dataclasses.replace(profile))
