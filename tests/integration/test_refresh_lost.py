"""A refresh whose IMAP connection dies under it runs once more on another (the engine's
Rule 5): Dovecot 2.3's imap process can end in a lock-order panic on
``dovecot.list.index.log`` while another connection of the same user works, and the request
behind that refresh must be answered from a fresh connection, not with serverUnavailable.
The server ends the connection for real here (``doveadm kick``, between two commands of the
refresh); a second plain IMAP connection makes the change the answer must show."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from devservers.dovecot import DovecotServer
from imapjmap.upstream.imap_refresh import ImapRefreshReads
from tests.conftest import ImapUser
from tests.integration.conftest import Jmap, proxy_config
from tests.integration.instances import ProxyClient


def message(subject: str) -> bytes:
    return f"From: a@example.org\r\nSubject: {subject}\r\n\r\nbody\r\n".encode()


@pytest.mark.backends("dovecot")
async def test_a_request_whose_refresh_connection_is_killed_is_answered_core_get_04(
    imap_user: ImapUser,
    dovecot: DovecotServer,
    tmp_path: Path,
    proxy_client: ProxyClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    outside = imap_user.connect()
    assert outside.append("INBOX", None, None, message("while the connection died"))[0] == "OK"
    outside.logout()  # the kick below ends every connection of the user

    kicked: list[ImapRefreshReads] = []
    listing = ImapRefreshReads.list_with_status

    async def killed_first(self: ImapRefreshReads, **kwargs: Any) -> Any:
        if not kicked:
            kicked.append(self)
            await asyncio.to_thread(dovecot.doveadm, "kick", imap_user.username)
            async with asyncio.timeout(10):
                while not self.broken:
                    await asyncio.sleep(0.02)
        return await listing(self, **kwargs)

    monkeypatch.setattr(ImapRefreshReads, "list_with_status", killed_first)
    async with proxy_client(proxy_config(imap_user, tmp_path)) as http:
        jmap = Jmap(http, imap_user.username, imap_user.password)
        await jmap.session()
        # the first refresh (no mailbox kept open yet) loses its connection under it
        ids = (await jmap.ok("Email/query", {}))["ids"]
        assert len(kicked) == 1 and len(ids) == 1  # answered, and the mail is in it
        (email,) = (await jmap.ok("Email/get", {"ids": ids, "properties": ["subject"]}))["list"]
        assert email["subject"] == "while the connection died"
