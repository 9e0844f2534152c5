"""A refresh's reads over IMAP (``upstream.imap_refresh``, the ``RefreshSource`` of
``ImapUpstream``) against each real server: the listing with STATUS, a single STATUS and
the rights, the mailbox a connection keeps open between leases, and the kept mailbox's
STATUS brought up to date in the listing's round trip (docs/design.md, "Freshness" Rule 5
of the engine).  A second plain IMAP connection is the oracle and makes the outside change.
"""

from __future__ import annotations

import imaplib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from imapjmap.config import ImapConfig
from imapjmap.imap.pool import ImapPool
from imapjmap.upstream.imap import ImapUpstream
from imapjmap.upstream.refresh_reads import MailboxStatus, RefreshReads
from tests.conftest import advertises


def message(subject: str) -> bytes:
    return f"From: a@example.org\r\nSubject: {subject}\r\n\r\nbody\r\n".encode()


@pytest.fixture
async def upstream(imap_user: Any) -> AsyncIterator[ImapUpstream]:
    cfg = ImapConfig(host=imap_user.host, port=imap_user.port, security="none", pool_size=2)
    pool = ImapPool(cfg, imap_user.username, imap_user.password)
    try:
        yield ImapUpstream(pool)
    finally:
        await pool.aclose()


async def inbox_status(reads: RefreshReads, *, sync_selected: bool = False) -> MailboxStatus:
    """INBOX's STATUS from the listing, or asked alone where the server has no LIST-STATUS."""
    entries, statuses = await reads.list_with_status(sync_selected=sync_selected)
    assert "INBOX" in {entry.name for entry in entries}
    listed = next((status for status in statuses if status.name == "INBOX"), None)
    status = listed or await reads.status("INBOX")
    assert status is not None
    return status


async def test_a_lease_lists_with_status_and_keeps_a_mailbox_open_for_the_next(
    upstream: ImapUpstream, imap_oracle: imaplib.IMAP4
) -> None:
    for subject in ("one", "two"):
        assert imap_oracle.append("INBOX", None, None, message(subject))[0] == "OK"
    async with upstream.refresh_reads() as reads:
        assert reads.kept_open is None
        assert (await inbox_status(reads)).messages == 2
        assert await reads.status("No such mailbox") is None  # refused: gone
        rights = await reads.rights("INBOX")
        if advertises(imap_oracle, "ACL"):
            assert rights is not None and {"l", "r"} <= set(rights)
        else:
            assert rights is None
        await reads.keep_open("INBOX")
        assert reads.kept_open == "INBOX"
    async with upstream.refresh_reads(prefer="INBOX") as again:
        assert again == reads  # the same connection, still keeping INBOX open
        assert again.kept_open == "INBOX" and not again.broken
        await again.keep_open(None)
        assert again.kept_open is None
    async with upstream.refresh_reads(prefer="INBOX") as third:
        assert third.kept_open is None


async def test_the_kept_mailbox_s_status_is_current_in_the_listing_s_round_trip(
    upstream: ImapUpstream, imap_oracle: imaplib.IMAP4
) -> None:
    """With ``sync_selected`` the listing counts a message another client added to the
    mailbox kept open (Dovecot answers its STATUS from the session's view, which only a
    command that syncs the session brings up to date)."""
    async with upstream.refresh_reads() as reads:
        await reads.keep_open("INBOX")
        assert (await inbox_status(reads, sync_selected=True)).messages == 0
        assert imap_oracle.append("INBOX", None, None, message("outside"))[0] == "OK"
        assert (await inbox_status(reads, sync_selected=True)).messages == 1
        assert reads.kept_open == "INBOX"


async def test_the_sync_reads_of_a_lease_are_on_its_connection(
    upstream: ImapUpstream, imap_oracle: imaplib.IMAP4
) -> None:
    assert imap_oracle.append("INBOX", None, None, message("read me"))[0] == "OK"
    async with upstream.refresh_reads() as reads:
        sync_reads = reads.sync_reads("REFERENCES")
        opened = await sync_reads.open("INBOX")
        assert opened.exists == 1
        assert reads.kept_open == "INBOX"  # the email sync's SELECT is the lease's state
        (record,) = await sync_reads.fetch_new(list(await sync_reads.uids()))
        assert record.envelope is not None and record.envelope.subject == "read me"
