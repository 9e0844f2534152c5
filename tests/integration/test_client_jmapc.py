"""jmapc (PyPI) sorting Email/query results through the proxy, on every upstream.

jmapc 0.4.0 serialises its Comparator with the query's ``anchorOffset``, ``calculateTotal``
and ``position`` inside it; the proxy ignores those unknown Comparator keys (RFC 8620 §5.5
defines only ``property``, ``isAscending`` and ``collation``), so the client's sorted
queries work.  The order is checked against the seeded messages' INTERNALDATE, as the
oracle wrote them.

jmapc only speaks https (RFC 8620 §8.1), so the proxy is served on a loopback port with a
certificate from a private CA (``trustme``) that jmapc's ``requests`` session trusts.
jmapc is synchronous: it runs in a worker thread while the proxy runs on the test's loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jmapc
import pytest
import trustme
from aiohttp import web
from jmapc.methods import EmailGet, EmailQuery, MailboxQuery

from imapjmap.config import ServerConfig
from imapjmap.http.app import make_app
from tests.conftest import SeededUser
from tests.integration.conftest import proxy_config


@dataclasses.dataclass(frozen=True)
class Https:
    host: str  # "127.0.0.1:port", as jmapc wants it
    ca_file: str


@pytest.fixture
async def https(seeded_user: SeededUser, tmp_path: Path) -> AsyncIterator[Https]:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(tls)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = ServerConfig(listen=f"127.0.0.1:{port}", base_url=f"https://127.0.0.1:{port}")
    cfg = dataclasses.replace(proxy_config(seeded_user, tmp_path), server=server)
    runner = web.AppRunner(make_app(cfg), access_log=None)
    await runner.setup()
    try:
        await web.SockSite(runner, sock, ssl_context=tls).start()
        yield Https(f"127.0.0.1:{port}", str(ca_file))
    finally:
        await runner.cleanup()


def inbox_sorted(https: Https, user: SeededUser, comparator: jmapc.Comparator) -> list[Any]:
    """The INBOX's Emails (messageId, receivedAt, size) in jmapc's sorted Email/query order."""
    client = jmapc.Client.create_with_password(
        host=https.host, user=user.username, password=user.password
    )
    client.requests_session.verify = https.ca_file
    client.requests_session.trust_env = False  # no proxy from the environment for loopback
    inbox = client.request(
        MailboxQuery(filter=jmapc.MailboxQueryFilterCondition(role="inbox")),
        raise_errors=True,
        single_response=True,
    )
    query, get = client.request(
        [
            EmailQuery(
                filter=jmapc.EmailQueryFilterCondition(in_mailbox=inbox.ids[0]),
                sort=[comparator],
            ),
            EmailGet(ids=jmapc.Ref("/ids"), properties=["messageId", "receivedAt", "size"]),
        ],
        raise_errors=True,
    )
    assert [e.id for e in get.response.data] == query.response.ids
    return list(get.response.data)


async def test_jmapc_sorted_email_query(https: Https, seeded_user: SeededUser) -> None:
    """jmapc's sorted queries (its Comparator carries anchorOffset, calculateTotal and
    position) answer in the order asked (CORE-QRY-*, RFC 8621 §4.4.2)."""
    newest_first = jmapc.Comparator(property="receivedAt", is_ascending=False)
    smallest_first = jmapc.Comparator(property="size", is_ascending=True)
    assert set(newest_first.to_dict()) > {"property", "isAscending"}, "jmapc sends more keys"

    by_date = await asyncio.to_thread(inbox_sorted, https, seeded_user, newest_first)
    by_size = await asyncio.to_thread(inbox_sorted, https, seeded_user, smallest_first)

    written = {
        m.message_id.strip("<>"): m.internaldate
        for m in seeded_user.messages
        if m.folder == "INBOX" and m.message_id
    }
    assert len(by_date) == seeded_user.counts["INBOX"] > 1
    assert {e.message_id[0] for e in by_date} == set(written)
    for email in by_date:  # each Email is the message the oracle wrote, at its date
        assert email.received_at == written[email.message_id[0]].replace(microsecond=0)
    dates = [e.received_at for e in by_date]
    assert dates == sorted(dates, reverse=True)
    sizes = [e.size for e in by_size]
    assert sizes == sorted(sizes) and sorted(e.id for e in by_size) == sorted(e.id for e in by_date)
