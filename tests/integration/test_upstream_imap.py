"""The Upstream over IMAP (``upstream.imap.ImapUpstream``) against each real server: every
operation does on the server what the seam says, and reports what it proved.  A second
plain IMAP connection is the oracle.  The same operations are what a handler sees, so
these are the contract another implementation of the seam would have to meet too.
"""

from __future__ import annotations

import datetime as dt
import imaplib
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from imapjmap.config import ImapConfig
from imapjmap.errors import ImapCommandFailed
from imapjmap.imap.pool import ImapPool
from imapjmap.upstream.imap import ImapUpstream
from tests.conftest import advertises


def message(subject: str) -> bytes:
    return (
        f"From: a@example.org\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@example.org>\r\n\r\nbody of {subject}\r\n"
    ).encode()


@pytest.fixture
async def upstream(imap_user: Any) -> AsyncIterator[ImapUpstream]:
    cfg = ImapConfig(host=imap_user.host, port=imap_user.port, security="none", pool_size=2)
    pool = ImapPool(cfg, imap_user.username, imap_user.password)
    try:
        async with pool.session():
            pass  # logged in: the pool knows the server's capabilities
        yield ImapUpstream(pool)
    finally:
        await pool.aclose()


def delimiter(oracle: imaplib.IMAP4) -> str:
    typ, data = oracle.list('""', '""')
    assert typ == "OK", data
    found = re.search(rb'\) "(.)"', data[0] if isinstance(data[0], bytes) else b"")
    assert found, data
    return found.group(1).decode()


def names(oracle: imaplib.IMAP4, command: str = "LIST") -> set[str]:
    typ, data = oracle.list() if command == "LIST" else oracle.lsub()
    assert typ == "OK", data
    return {
        line.rsplit(b" ", 1)[-1].strip(b'"').decode() for line in data if isinstance(line, bytes)
    }


def uids_and_flags(oracle: imaplib.IMAP4, mailbox: str) -> dict[int, set[str]]:
    typ, _ = oracle.select(f'"{mailbox}"', readonly=True)
    assert typ == "OK"
    typ, data = oracle.uid("FETCH", "1:*", "(FLAGS)")
    assert typ == "OK", data
    out: dict[int, set[str]] = {}
    for line in data:
        if isinstance(line, bytes) and b"UID" in line:
            uid = int(re.search(rb"UID (\d+)", line).group(1))  # type: ignore[union-attr]
            flags = re.search(rb"FLAGS \(([^)]*)\)", line).group(1)  # type: ignore[union-attr]
            out[uid] = set(flags.decode().split())
    return out


def put(oracle: imaplib.IMAP4, mailbox: str, subject: str) -> int:
    typ, data = oracle.append(f'"{mailbox}"', None, None, message(subject))
    assert typ == "OK", data
    return max(uids_and_flags(oracle, mailbox))


async def test_mailbox_writes_create_rename_subscribe_and_delete(
    upstream: ImapUpstream, imap_oracle: imaplib.IMAP4
) -> None:
    """MBX-01..07's IMAP side: a mailbox and a child are created and subscribed; a rename
    moves the child along (the pooled connection that had it selected lets go first);
    the message count is asked of the server; delete and unsubscribe leave nothing."""
    sep = delimiter(imap_oracle)
    await upstream.create_mailbox("Projects")
    await upstream.create_mailbox(f"Projects{sep}2024")
    await upstream.subscribe("Projects")
    assert {"Projects", f"Projects{sep}2024"} <= names(imap_oracle)
    assert "Projects" in names(imap_oracle, "LSUB")
    put(imap_oracle, f"Projects{sep}2024", "kept")
    async with upstream.writing(f"Projects{sep}2024"):
        pass  # leaves a pooled connection with the child selected
    await upstream.rename_mailbox("Projects", "Work", children=[f"Projects{sep}2024"])
    await upstream.subscribe("Work")
    await upstream.subscribe("Projects", False)
    listed = names(imap_oracle)
    assert {"Work", f"Work{sep}2024"} <= listed and "Projects" not in listed
    assert await upstream.message_count(f"Work{sep}2024") == 1
    assert await upstream.message_count("Work") == 0
    await upstream.delete_mailbox(f"Work{sep}2024")
    assert f"Work{sep}2024" not in names(imap_oracle)
    with pytest.raises(ImapCommandFailed):
        await upstream.delete_mailbox("Nowhere")


async def test_a_role_is_given_only_where_the_server_can(
    upstream: ImapUpstream, imap_oracle: imaplib.IMAP4
) -> None:
    if not upstream.creates_with_role:
        assert not advertises(imap_oracle, "CREATE-SPECIAL-USE")
        return
    typ, data = imap_oracle.list()
    lines = [line for line in data if isinstance(line, bytes)]
    roles = ("archive", "junk", "drafts", "sent", "trash")
    free = [r for r in roles if not any(b"\\" + r.encode() in line.lower() for line in lines)]
    if not free:  # a server that gives a new user every role refuses a second one
        with pytest.raises(ImapCommandFailed):
            await upstream.create_mailbox("Old mail", role="archive")
        return
    await upstream.create_mailbox("Old mail", role=free[0])
    typ, data = imap_oracle.list('""', '"Old mail"')
    assert typ == "OK" and f"\\{free[0]}".encode() in data[0].lower(), data  # type: ignore[union-attr]


async def test_append_says_or_finds_the_new_uid(
    upstream: ImapUpstream, imap_oracle: imaplib.IMAP4
) -> None:
    """APPEND with flags and INTERNALDATE; its UID from APPENDUID where the server says,
    else found from the UIDNEXT read before it by Message-ID: the same either way."""
    floor = await upstream.uid_next("INBOX")
    when = dt.datetime(2024, 1, 5, 9, 15, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    appended = await upstream.append("INBOX", message("new one"), ["\\Seen", "$Label1"], when)
    found = await upstream.find_appended("INBOX", "new.one@example.org", floor=floor)
    on_server = uids_and_flags(imap_oracle, "INBOX")
    assert found == list(on_server) and min(found) >= floor
    assert on_server[found[0]] >= {"\\Seen", "$Label1"}
    assert upstream.appends_say_uid == advertises(imap_oracle, "UIDPLUS")
    # a server may say APPENDUID without advertising UIDPLUS: it is not relied on then
    assert appended.uid in ((found[0],) if upstream.appends_say_uid else (None, found[0]))
    assert await upstream.find_appended("INBOX", "other@example.org", floor=floor) == []


async def test_an_open_mailbox_proves_its_writes(
    upstream: ImapUpstream, imap_oracle: imaplib.IMAP4
) -> None:
    """Rule 4 on a quiet mailbox: every UID written is proven done; a UID that is not
    there is not (it is ``missing``); copy, move and remove do what the oracle sees."""
    await upstream.create_mailbox("Kept")
    a, b, c = (put(imap_oracle, "INBOX", s) for s in ("a", "b", "c"))
    async with upstream.writing("INBOX") as box:
        stored = await box.store_flags([a, b, 9999], "+", ["\\Flagged"])
        assert stored.done == {a, b} and stored.missing == {9999}
        copied = await box.copy([a], "Kept")
        moved = await box.move([b], "Kept")
        removed = await box.remove([c])
    uidplus, has_move = advertises(imap_oracle, "UIDPLUS"), advertises(imap_oracle, "MOVE")
    in_archive = uids_and_flags(imap_oracle, "Kept")
    assert len(in_archive) == 2 and all("\\Flagged" in f for f in in_archive.values())
    assert copied.done == {a}
    # COPYUID where the server gives it (some do without advertising UIDPLUS)
    assert copied.target_uid(a) in ((min(in_archive),) if uidplus else (None, min(in_archive)))
    # a MOVE proves nothing without COPYUID; COPY and removal of our UID prove it
    assert moved.done == {b} or (has_move and not uidplus and not moved.done)
    inbox = uids_and_flags(imap_oracle, "INBOX")
    assert removed.done == {c} and removed.expunged == uidplus
    if uidplus:
        assert c not in inbox and b not in inbox
    else:  # only marked: the user's client expunges (Rule 3)
        assert "\\Deleted" in inbox[c] and (has_move or "\\Deleted" in inbox[b])
    assert "\\Deleted" not in inbox[a]


async def test_bodies_are_the_exact_octets(
    upstream: ImapUpstream, imap_oracle: imaplib.IMAP4
) -> None:
    uid = put(imap_oracle, "INBOX", "exact")
    assert await upstream.message("INBOX", uid) == message("exact")
    assert await upstream.message("INBOX", uid + 100) is None
    previews = await upstream.previews("INBOX", [uid])
    assert set(previews) <= {uid}  # where the server makes previews at all (RFC 8970)
    with pytest.raises(ImapCommandFailed):
        await upstream.message("Nowhere", 1)
