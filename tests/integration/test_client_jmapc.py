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
from typing import Any

import jmapc
from jmapc.methods import EmailGet, EmailQuery, MailboxQuery

from tests.conftest import SeededUser
from tests.integration.conftest import HttpsProxy


def inbox_sorted(https: HttpsProxy, user: SeededUser, comparator: jmapc.Comparator) -> list[Any]:
    """The INBOX's Emails (messageId, receivedAt, size) in jmapc's sorted Email/query order."""
    client = https.client(user.username, user.password)
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


async def test_jmapc_sorted_email_query(https_proxy: HttpsProxy, seeded_user: SeededUser) -> None:
    """jmapc's sorted queries (its Comparator carries anchorOffset, calculateTotal and
    position) answer in the order asked (CORE-QRY-*, RFC 8621 §4.4.2)."""
    newest_first = jmapc.Comparator(property="receivedAt", is_ascending=False)
    smallest_first = jmapc.Comparator(property="size", is_ascending=True)
    assert set(newest_first.to_dict()) > {"property", "isAscending"}, "jmapc sends more keys"

    by_date = await asyncio.to_thread(inbox_sorted, https_proxy, seeded_user, newest_first)
    by_size = await asyncio.to_thread(inbox_sorted, https_proxy, seeded_user, smallest_first)

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
