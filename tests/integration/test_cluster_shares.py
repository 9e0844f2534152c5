"""The shares of other users' folders on push streams of any instance (CORE-PUSH-01).

Two ``imapjmap serve`` processes on one cache in front of Dovecot with ACLs: the login's
session is fetched on A, which asks the server for its shares; a browser's EventSource
opens on B with the session's push token (B never served the login, so it cannot ask the
server: A, vouching for the token, names the shares).  The share's changes reach that
stream like the login's own, from the share's watcher wherever the cluster put it, and a
normal stream on A carries them too.
"""

from __future__ import annotations

import contextlib
import imaplib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from devservers.dovecot import DovecotServer
from tests.conftest import ImapUser
from tests.integration.clusterkit import instances
from tests.integration.pushkit import EventReader
from tests.integration.test_cluster_push_token import (
    _basic,
    _changed,
    _eventsource_url,
    _session,
    _token,
)
from tests.integration.test_shares import Owner, _message, _q, _shares, _user, dovecot_acl

pytestmark = pytest.mark.dovecot

__all__ = ["dovecot_acl"]  # the fixture


@pytest.fixture
def alice(dovecot_acl: DovecotServer) -> Iterator[Owner]:
    user = _user(dovecot_acl, "alice")
    owner = Owner(user, user.connect())
    owner.folder("Projects", "plan A")
    yield owner
    with contextlib.suppress(imaplib.IMAP4.error, OSError):
        owner.imap.logout()


async def test_a_share_is_pushed_on_a_token_stream_of_an_instance_that_never_served_the_login(
    dovecot_acl: DovecotServer, alice: Owner, tmp_path: Path, cluster_url: str
) -> None:
    """B's stream (push token, no login there) names the share's states in its first event
    and carries the share's Email change when alice adds a message to the shared folder;
    so does a normal stream on A.  B opens no IMAP connection for bob."""
    bob: ImapUser = _user(dovecot_acl, "bob")
    alice.share("Projects", bob.username, "lr")
    async with (
        instances(bob, tmp_path, cluster_url) as (a, b),
        aiohttp.ClientSession() as http,
    ):
        session: dict[str, Any] = await _session(http, bob, a)
        own = session["primaryAccounts"]["urn:ietf:params:jmap:mail"]
        share = _shares(session)[alice.user.username]["id"]
        token = _token(session["eventSourceUrl"])
        on_b = await http.get(_eventsource_url(b, token))
        assert on_b.status == 200, await on_b.text()
        normal = f"{a.base_url}/jmap/eventsource/?types=*&closeafter=no&ping=0"
        on_a = await http.get(normal, headers=_basic(bob))
        assert on_a.status == 200, await on_a.text()
        try:
            streams = [EventReader(on_b), EventReader(on_a)]
            for events in streams:
                first = (await events.next()).data["changed"]
                assert set(first) == {own, share}, first
            assert await a.wait_log("push: watching account", 5)

            alice.imap.append(_q("Projects"), None, None, _message("plan Z"))
            for events in streams:
                assert await _changed(events, share, "Email", 15.0) < 15.0
            assert "logged in" not in b.log()  # no IMAP login of bob on B
        finally:
            on_b.close()
            on_a.close()
