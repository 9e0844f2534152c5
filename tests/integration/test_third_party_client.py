"""A third-party JMAP client, jmapc (PyPI), against the proxy over real HTTP.

jmapc builds every URL as ``https://{host}/...``: RFC 8620 §8.1 requires TLS for JMAP, and
the library offers no plain-http mode.  So the proxy's aiohttp app is served here the way a
deployment behind a TLS listener serves it: on a loopback port with a certificate from a
private CA (``trustme``), with ``server.base_url`` set to that https URL.  jmapc's own
``requests`` session is told to trust that CA (``requests_session.verify``), which is the
``requests`` way to use a private CA; nothing in the proxy or in jmapc is patched.

jmapc is synchronous; it runs in a worker thread while the proxy runs on the test's loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

import jmapc
import pytest
import requests
from jmapc.methods import (
    MailboxGet,
    MailboxGetResponse,
    MailboxQuery,
    MailboxQueryResponse,
)

from imapjmap.config import ImapConfig
from imapjmap.imap.session import ImapSession
from tests.conftest import SeededUser
from tests.integration.conftest import HttpsProxy

pytestmark = pytest.mark.dovecot

SPECIAL_USE_ROLES = {"\\drafts", "\\sent", "\\trash", "\\junk", "\\archive"}


async def imap_list(user: SeededUser) -> tuple[dict[str, set[str]], dict[str, str]]:
    """What IMAP LIST says: name → attributes (lower case), and name → X-GUID."""
    cfg = ImapConfig(host=user.host, port=user.port, security="none")
    session = await ImapSession.connect(cfg, user.username, user.password)
    try:
        lists, statuses = await session.list_mailboxes()
    finally:
        await session.close()
    attributes = {e.name: {a.lower() for a in e.attributes} for e in lists}
    guids = {s.name: s.x_guid for s in statuses if s.x_guid}
    return attributes, guids


def full_names(mailboxes: list[jmapc.Mailbox]) -> dict[str, jmapc.Mailbox]:
    """IMAP-style full names ("Projects/Alpha") from JMAP name + parentId + role."""
    by_id = {m.id: m for m in mailboxes}

    def path(m: jmapc.Mailbox) -> str:
        assert m.name is not None
        # INBOX may be shown under a friendlier name; its role says which one it is
        name = "INBOX" if m.role == "inbox" else m.name
        return name if m.parent_id is None else f"{path(by_id[m.parent_id])}/{name}"

    return {path(m): m for m in mailboxes}


def expected_role(name: str, attributes: set[str]) -> str | None:
    if name.upper() == "INBOX":
        return "inbox"
    roles = [a[1:] for a in attributes if a in SPECIAL_USE_ROLES]
    assert len(roles) <= 1
    return roles[0] if roles else None


async def test_jmapc_mailboxes_match_imap_list(
    https_proxy: HttpsProxy, seeded_user: SeededUser
) -> None:
    def talk() -> tuple[Any, ...]:
        client = https_proxy.client(seeded_user.username, seeded_user.password)
        session = client.jmap_session
        got = client.request(MailboxGet(ids=None), raise_errors=True, single_response=True)
        queried = client.request(MailboxQuery(), raise_errors=True, single_response=True)
        return session, client.account_id, got, queried

    session, account_id, got, queried = await asyncio.to_thread(talk)

    assert session.username == seeded_user.username
    assert session.api_url.startswith(f"https://{https_proxy.host}/")
    assert isinstance(got, MailboxGetResponse) and isinstance(queried, MailboxQueryResponse)
    assert got.account_id == account_id and got.state
    assert got.not_found == []

    attributes, guids = await imap_list(seeded_user)
    selectable = {n for n, a in attributes.items() if "\\noselect" not in a}
    by_name = full_names(got.data)
    assert set(by_name) == set(attributes), "the same mailboxes as IMAP LIST"
    for name, mailbox in by_name.items():
        assert mailbox.role == expected_role(name, attributes[name]), name
        if name in guids:
            assert guids[name] in (mailbox.id or "").lower(), "id from the mailbox's X-GUID"
        if name in selectable:
            assert mailbox.total_emails == seeded_user.counts.get(name, 0), name
    assert len({m.id for m in got.data}) == len(got.data)

    assert sorted(queried.ids) == sorted(m.id for m in got.data)
    assert queried.position == 0 and isinstance(queried.can_calculate_changes, bool)


async def test_jmapc_query_filter_and_result_reference(
    https_proxy: HttpsProxy, seeded_user: SeededUser
) -> None:
    """A filtered, tree-sorted query whose ids feed a /get through a result reference."""

    def talk() -> tuple[Any, Any, Any]:
        client = https_proxy.client(seeded_user.username, seeded_user.password)
        results = client.request(
            [
                MailboxQuery(
                    filter=jmapc.MailboxQueryFilterCondition(role="sent"),
                    sort_as_tree=True,
                ),
                MailboxGet(ids=jmapc.Ref("/ids"), properties=["name", "role"]),
            ],
            raise_errors=True,
        )
        tree = client.request(
            MailboxQuery(sort_as_tree=True), raise_errors=True, single_response=True
        )
        everything = client.request(MailboxGet(ids=None), raise_errors=True, single_response=True)
        return results, tree, everything

    (query, get), tree, everything = await asyncio.to_thread(talk)
    assert len(query.response.ids) == 1
    (sent,) = get.response.data
    assert (sent.id, sent.name, sent.role) == (query.response.ids[0], "Sent", "sent")

    # sortAsTree: every parent comes before its children (RFC 8621 §2.3)
    parents = {m.id: m.parent_id for m in everything.data}
    seen: set[str] = set()
    for mailbox_id in tree.ids:
        assert parents[mailbox_id] is None or parents[mailbox_id] in seen
        seen.add(mailbox_id)
    assert seen == set(parents)


async def test_jmapc_wrong_password_is_an_http_401(
    https_proxy: HttpsProxy, seeded_user: SeededUser
) -> None:
    def talk() -> int:
        client = https_proxy.client(seeded_user.username, seeded_user.password + "-wrong")
        with pytest.raises(requests.HTTPError) as caught:
            client.request(MailboxGet(ids=None))
        response = caught.value.response
        assert response is not None
        assert response.headers["WWW-Authenticate"].lower().startswith("basic")
        return response.status_code

    assert await asyncio.to_thread(talk) == 401
