"""Email/get answers the list properties it answered before from the objects it kept
(``answers.email_objects``), Email/query the same query at the same state from the result
it kept (``answers.query_results``), and another IMAP client's changes still show at once
(CORE-GET-04, EML-KW-01): a flag set, a move, an expunge and an APPEND by a plain
``imaplib`` client on the real servers, each seen by the very next request."""

from __future__ import annotations

import imaplib
import time
from typing import Any

import pytest

from imapjmap.answers.email_objects import EmailObjects
from imapjmap.http import views
from imapjmap.store import queries as q
from tests.integration.conftest import Jmap
from tests.integration.instances import apps_of
from tests.integration.test_email_read import REPLY, REPORT, append, by_subject, roles

PROPERTIES = ["threadId", "mailboxIds", "keywords", "size", "receivedAt", "from", "preview"]


def kept(jmap: Jmap) -> tuple[int, int, int]:
    """The kept objects' hits, whole answers' hits and kept query results' hits, summed
    over every instance behind the client: each keeps its own in memory."""
    services = [app[views.SERVICES] for app in apps_of(jmap.http)]
    objects: list[EmailObjects] = [s.email_objects for s in services]
    return (
        sum(o.hits for o in objects),
        sum(o.answer_hits for o in objects),
        sum(s.query_results.hits for s in services),
    )


async def page(jmap: Jmap, inbox: str) -> dict[str, Any]:
    """A client opening its inbox: the query and the get of its page in one request."""
    body = await jmap.request(
        [
            [
                "Email/query",
                {
                    "accountId": jmap.account_id,
                    "filter": {"inMailbox": inbox},
                    "sort": [{"property": "receivedAt", "isAscending": False}],
                },
                "q",
            ],
            [
                "Email/get",
                {
                    "accountId": jmap.account_id,
                    "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"},
                    "properties": PROPERTIES,
                },
                "g",
            ],
        ]
    )
    got: dict[str, Any] = body["methodResponses"][1][1]
    return got


def uid_of(oracle: imaplib.IMAP4, message_id: str) -> bytes:
    typ, data = oracle.uid("SEARCH", "HEADER", "Message-ID", message_id)
    assert typ == "OK" and data[0], data
    uid: bytes = data[0].split()[0]
    return uid


async def keep_everywhere(jmap: Jmap, inbox: str, first: dict[str, Any]) -> None:
    """Open the page again until every instance behind the client has answered it from
    what it kept (an object is kept once its preview is stored, after the first page)."""
    services = [app[views.SERVICES] for app in apps_of(jmap.http)]
    for _ in range(4 * len(services)):  # alternating: each instance gets its turns
        if all(s.email_objects.answer_hits and s.query_results.hits for s in services):
            return
        assert await page(jmap, inbox) == first
    assert all(s.email_objects.answer_hits and s.query_results.hits for s in services)


async def test_kept_objects_show_another_clients_changes_at_once_core_get_04(
    jmap: Jmap, imap_oracle: imaplib.IMAP4
) -> None:
    now = time.time()
    append(imap_oracle, "INBOX", REPORT, now - 300)
    append(imap_oracle, "INBOX", REPLY, now - 200, "(\\Seen)")
    boxes = await roles(jmap)
    inbox, archive = boxes["inbox"], boxes["archive"]
    first = await page(jmap, inbox)
    subjects = await by_subject(jmap, [e["id"] for e in first["list"]])
    report, reply = subjects["Quarterly report"]["id"], subjects["Re: Quarterly report"]["id"]
    assert [e["id"] for e in first["list"]] == [reply, report]
    await keep_everywhere(jmap, inbox, first)
    hits, answers, _ = kept(jmap)
    # the same page at the same Email state: the whole list, no row read (Rule 5)
    assert await page(jmap, inbox) == first
    assert kept(jmap)[:2] == (hits, answers + 1)
    assert await jmap.ok("Email/get", {"ids": [report, reply], "properties": PROPERTIES}) == {
        **first,
        "list": first["list"][::-1],
    }
    assert kept(jmap)[:2] == (hits + 2, answers + 1)  # another page: object by object

    imap_oracle.select("INBOX")
    report_uid = uid_of(imap_oracle, "<report@example.org>")
    typ, data = imap_oracle.uid("STORE", report_uid, "+FLAGS", "(\\Flagged)")
    assert typ == "OK", data
    got = await page(jmap, inbox)
    assert [e["id"] for e in got["list"]] == [reply, report] and got["state"] != first["state"]
    assert got["list"][1]["keywords"] == {"$flagged": True}
    assert got["list"][0] == first["list"][0]
    assert kept(jmap)[:2] == (hits + 3, answers + 1)

    typ, data = imap_oracle.uid("MOVE", uid_of(imap_oracle, "<reply@example.org>"), "Archive")
    assert typ == "OK", data
    got = await jmap.ok("Email/get", {"ids": [reply, report], "properties": PROPERTIES})
    assert got["list"][0]["mailboxIds"] == {archive: True}
    assert got["list"][1]["keywords"] == {"$flagged": True}

    typ, data = imap_oracle.uid("STORE", report_uid, "+FLAGS", "(\\Deleted)")
    assert typ == "OK", data
    typ, data = imap_oracle.expunge()
    assert typ == "OK", data
    got = await jmap.ok("Email/get", {"ids": [reply, report], "properties": PROPERTIES})
    assert [e["id"] for e in got["list"]] == [reply] and got["notFound"] == [report]


async def test_a_kept_query_result_shows_another_clients_append_at_once_core_qry(
    jmap: Jmap, imap_oracle: imaplib.IMAP4
) -> None:
    """The same Email/query again is answered from the result kept (query_results) until
    the Email state moves: a message APPENDed by another client is on the next page."""
    now = time.time()
    append(imap_oracle, "INBOX", REPORT, now - 300)
    inbox = (await roles(jmap))["inbox"]
    first = await page(jmap, inbox)
    await keep_everywhere(jmap, inbox, first)
    hits = kept(jmap)[2]
    assert await page(jmap, inbox) == first and kept(jmap)[2] == hits + 1
    append(imap_oracle, "INBOX", REPLY, now - 200)
    got = await page(jmap, inbox)
    assert len(got["list"]) == 2 and got["list"][1] == first["list"][0]
    assert kept(jmap)[2] == hits + 1


async def test_every_instance_drops_its_kept_answers_on_another_clients_change_core_get_04(
    jmap: Jmap, imap_oracle: imaplib.IMAP4
) -> None:
    """Each instance keeps answers in its own memory.  Once every instance behind the
    client has answered the inbox page from what it kept, a flag set and an APPEND by
    another IMAP client show on the next request to each of them."""
    now = time.time()
    append(imap_oracle, "INBOX", REPORT, now - 300)
    inbox = (await roles(jmap))["inbox"]
    services = [app[views.SERVICES] for app in apps_of(jmap.http)]
    first = await page(jmap, inbox)
    await keep_everywhere(jmap, inbox, first)

    imap_oracle.select("INBOX")
    typ, data = imap_oracle.uid(
        "STORE", uid_of(imap_oracle, "<report@example.org>"), "+FLAGS", "(\\Flagged)"
    )
    assert typ == "OK", data
    for _ in services:
        got = await page(jmap, inbox)
        assert got["state"] != first["state"]
        assert [e["keywords"] for e in got["list"]] == [{"$flagged": True}]

    append(imap_oracle, "INBOX", REPLY, now - 200)
    for _ in services:
        got = await page(jmap, inbox)
        assert [e["keywords"] for e in got["list"]] == [{}, {"$flagged": True}]


def count_state_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The data types whose state the cache is asked for."""
    asked: list[str] = []
    original = q.type_state_query

    def counted(account_id: str, data_type: str) -> tuple[str, tuple[str, str]]:
        asked.append(data_type)
        return original(account_id, data_type)

    monkeypatch.setattr(q, "type_state_query", counted)
    return asked


async def test_a_kept_page_reads_the_email_state_once_a_request(
    jmap: Jmap, imap_oracle: imaplib.IMAP4, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening the inbox again at the same state: Email/query and Email/get answer from
    what they kept, and the Email state they check it against is read once for both (on
    a PostgreSQL cache each read is a round trip to the server)."""
    append(imap_oracle, "INBOX", REPORT, time.time() - 300)
    inbox = (await roles(jmap))["inbox"]
    first = await page(jmap, inbox)
    await keep_everywhere(jmap, inbox, first)
    asked = count_state_reads(monkeypatch)
    assert await page(jmap, inbox) == first
    assert asked == ["Email"]


async def test_a_write_between_query_and_get_is_seen_by_the_get_core_get_04(
    jmap: Jmap, imap_oracle: imaplib.IMAP4
) -> None:
    """The Email state read once a request is read again after a write: an Email/set
    between the Email/query and the Email/get of one request shows in the get."""
    append(imap_oracle, "INBOX", REPORT, time.time() - 300)
    inbox = (await roles(jmap))["inbox"]
    first = await page(jmap, inbox)
    await page(jmap, inbox)
    email_id = first["list"][0]["id"]
    query = {"accountId": jmap.account_id, "filter": {"inMailbox": inbox}}
    get = {
        "accountId": jmap.account_id,
        "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"},
        "properties": PROPERTIES,
    }
    update = {"accountId": jmap.account_id, "update": {email_id: {"keywords/$flagged": True}}}
    body = await jmap.request(
        [["Email/query", query, "q"], ["Email/set", update, "s"], ["Email/get", get, "g"]]
    )
    (_, _, _), (_, set_response, _), (_, got, _) = body["methodResponses"]
    assert got["list"][0]["keywords"] == {"$flagged": True}
    assert got["state"] == set_response["newState"] != first["state"]
