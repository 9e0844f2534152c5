"""A pooled connection that already has a mailbox selected must see what other connections
did to it meanwhile before it is used (Dovecot: until the session is told, new UIDs do not
exist for it, and UID STORE / UID EXPUNGE of them silently do nothing)."""

from __future__ import annotations

import imaplib
import re
from typing import Any

from imapjmap.config import ImapConfig
from imapjmap.imap.commands import Command
from imapjmap.imap.pool import ImapPool


async def test_reused_selected_connection_sees_new_uids(
    imap_user: Any, imap_oracle: imaplib.IMAP4
) -> None:
    cfg = ImapConfig(host=imap_user.host, port=imap_user.port, security="none", pool_size=1)
    pool = ImapPool(cfg, imap_user.username, imap_user.password)
    try:
        async with pool.session("INBOX") as session:
            await session.noop()
        typ, data = imap_oracle.append("INBOX", None, None, b"Subject: late\r\n\r\nhi\r\n")
        assert typ == "OK"
        match = re.search(rb"APPENDUID \d+ (\d+)", data[0])
        assert match
        uid = int(match.group(1))
        async with pool.session("INBOX") as session:  # the same connection, still selected
            reply = await session.execute(Command((f"UID FETCH {uid} (UID FLAGS)",)))
        assert [r.uid for r in reply.fetches] == [uid]
    finally:
        await pool.aclose()
