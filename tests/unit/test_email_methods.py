"""Email/get, Email/changes, Thread/get, Thread/changes, blob ids and the download view.

Rows are written straight into an in-memory cache (``email_world``); message octets come
from its ``FakeUpstream``.  Checklist ids: EML-GET-*, CORE-GET-*, CORE-CHG-*, THR-*,
CORE-BIN-*.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from imapjmap.blobs import bodies
from imapjmap.blobs import ids as blobs
from imapjmap.config import Config
from imapjmap.http import middleware, views
from imapjmap.http.auth import Authenticated, Authenticator, Unauthorized
from imapjmap.jmap.errors import MethodError
from imapjmap.jmap.session import DOWNLOAD_PATH
from imapjmap.jmap.wire import EncodedObject, is_id
from imapjmap.methods import REGISTRY, thread
from imapjmap.methods.context import Account
from imapjmap.methods.email import get as email_get
from imapjmap.mime.email import DEFAULT_EMAIL_PROPERTIES
from imapjmap.store import emails as em
from imapjmap.store.db import Store
from tests.unit.email_world import MAILS, OTHER, A, World, call

RAW = (
    b"From: Alice Liddell <alice@example.org>\r\n"
    b"Sender: Secretary <sec@example.org>\r\n"
    b"To: Bob <bob@example.net>\r\n"
    b"Subject: Hello world\r\n"
    b"X-Custom: first\r\n"
    b"X-Custom: second\r\n"
    b"Date: Sun, 09 Sep 2001 03:46:40 +0200\r\n"
    b"Message-ID: <e1@example.org>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n'
    b"\r\n"
    b"--outer\r\n"
    b'Content-Type: multipart/alternative; boundary="inner"\r\n'
    b"\r\n"
    b"--inner\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Hello Bob, the plain text body.\r\n"
    b"--inner\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b"<p>Hello Bob, the <b>html</b> body.</p>\r\n"
    b"--inner--\r\n"
    b"--outer\r\n"
    b"Content-Type: application/pdf\r\n"
    b'Content-Disposition: attachment; filename="report.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n" + base64.b64encode(b"%PDF-1.4 fake") + b"\r\n"
    b"--outer--\r\n"
)


PLAIN = (
    b"From: emile@example.fr\r\nSubject: Gr=?utf-8?q?=C3=BC=C3=9Fe?=\r\n\r\n"
    b"Bonjour   de\r\nParis.\r\n"
)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    """The upstream (a FakeUpstream) has the octets of e1, e3 (RAW) and e6, not of e2."""
    store = await Store.open(":memory:")
    w = World(store, Config())
    await w.setup()
    for mail_id, raw in (("e1", RAW), ("e3", RAW), ("e6", PLAIN)):
        await w.give_message(mail_id, raw)
    yield w
    await store.aclose()


def fetches(world: World) -> list[tuple[str, int]]:
    """The messages read from the upstream, as (mailbox name, UID)."""
    return world.upstream.reads


async def get(world: World, args: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return await email_get.email_get(world.context(**kw), call("Email/get", args))


# --- registry -----------------------------------------------------------------------------


def test_registry_has_the_read_methods() -> None:
    for name in (
        "Email/get",
        "Email/changes",
        "Email/query",
        "Email/queryChanges",
        "Thread/get",
        "Thread/changes",
        "SearchSnippet/get",
    ):
        assert name in REGISTRY


# --- blob ids -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("email_id", "part_id"),
    [
        ("e1", None),
        ("e1", "1"),
        ("e1", "1.2.3"),
        ("E_with_underscores_1", "2"),  # RFC 8474 EMAILIDs may hold "_" and "-"
        ("E_1", "1"),
        ("M-1_2-3", "4.5"),
        ("G", None),
        ("P", "1"),
    ],
)
def test_blob_ids_round_trip_core_bin_05(email_id: str, part_id: str | None) -> None:
    blob_id = (
        blobs.message_blob_id(email_id)
        if part_id is None
        else blobs.part_blob_id(email_id, part_id)
    )
    assert is_id(blob_id)
    assert blobs.parse_blob_id(blob_id) == blobs.BlobRef(email_id, part_id)


@pytest.mark.parametrize(
    "blob_id", ["", "G", "P", "Pe1", "Pe1_", "Pe1_1.2", "Pe1_a", "X12", "Ge1/x", "P_1"]
)
def test_foreign_blob_ids_are_not_ours(blob_id: str) -> None:
    assert blobs.parse_blob_id(blob_id) is None


@pytest.mark.parametrize("part_id", ["", "1.", ".1", "a", "1_2", "1-2"])
def test_part_blob_id_refuses_what_it_cannot_encode(part_id: str) -> None:
    with pytest.raises(ValueError):
        blobs.part_blob_id("e1", part_id)
    with pytest.raises(ValueError):
        blobs.part_blob_id("x" * 254, "1")


def test_an_email_id_that_looks_like_a_part_blob_stays_a_message() -> None:
    assert blobs.parse_blob_id(blobs.message_blob_id("e1_1")) == blobs.BlobRef("e1_1")
    assert blobs.parse_blob_id(blobs.part_blob_id("e1_1", "1")) == blobs.BlobRef("e1_1", "1")


# --- Email/get ----------------------------------------------------------------------------


async def test_default_properties_eml_get_01(world: World) -> None:
    result = await get(world, {"ids": ["e1"]})
    (email,) = result["list"]
    assert list(email) == list(DEFAULT_EMAIL_PROPERTIES)
    assert email["id"] == "e1" and email["threadId"] == "T1"
    assert email["mailboxIds"] == {"Minbox": True}
    assert email["keywords"] == {"$seen": True}
    assert email["receivedAt"] == "1970-01-01T00:16:40Z"
    assert email["bodyValues"] == {}  # EML-GET-02: no fetch* flag
    assert [p["partId"] for p in email["textBody"]] == ["1.1"]
    assert [p["type"] for p in email["htmlBody"]] == ["text/html"]
    assert [p["name"] for p in email["attachments"]] == ["report.pdf"]
    assert result["notFound"] == [] and result["accountId"] == A


async def test_list_properties_come_from_the_cache_without_fetching(world: World) -> None:
    props = [
        "threadId",
        "mailboxIds",
        "keywords",
        "size",
        "receivedAt",
        "from",
        "to",
        "subject",
        "sentAt",
        "messageId",
        "hasAttachment",
        "preview",
        "blobId",
    ]
    result = await get(world, {"ids": ["e4", "e1"], "properties": props})
    assert fetches(world) == []
    e4, e1 = result["list"]
    assert list(e4) == ["id", *props]  # CORE-GET-01: id added, nothing unrequested
    assert e4["mailboxIds"] == {"Minbox": True, "Marchive": True}
    assert e4["keywords"] == {"$flagged": True, "$seen": True}
    assert e4["subject"] == "Invoice <2024> & co" and e4["hasAttachment"] is True
    assert e1["from"] == [{"name": "Alice Liddell", "email": "alice@example.org"}]
    assert e1["sentAt"] == "2001-09-09T03:46:40+02:00"
    assert e1["blobId"] == "Ge1"


async def test_missing_previews_are_computed_once(world: World) -> None:
    result = await get(world, {"ids": ["e6", "e1"], "properties": ["preview"]})
    assert [e["preview"] for e in result["list"]] == ["Bonjour de Paris.", "preview text"]
    world.upstream.reads.clear()
    bodies._bodies.clear()
    result = await get(world, {"ids": ["e6"], "properties": ["preview"]})
    assert result["list"][0]["preview"] == "Bonjour de Paris." and fetches(world) == []


# --- the objects of earlier answers (answers.email_objects) -------------------------------

LIST_PROPERTIES = ["threadId", "mailboxIds", "keywords", "size", "receivedAt", "from", "preview"]


async def test_list_properties_are_answered_again_without_decoding_rows(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = {"ids": ["e4", "e1"], "properties": LIST_PROPERTIES}
    first = await get(world, args)
    kept = world.services().email_objects
    assert len(kept) == 2 and kept.hits == 0
    decoded: list[str] = []
    original = em._email_from
    monkeypatch.setattr(em, "_email_from", lambda v: decoded.append(v[1]) or original(v))
    again = await get(world, args)
    # the same ids at the same Email state: the whole list kept, not even the seqs read
    assert again == first and kept.answer_hits == 1 and kept.hits == 0 and decoded == []
    assert all(isinstance(e, EncodedObject) for e in again["list"])
    reordered = await get(world, {**args, "ids": ["e1", "e4"]})  # object by object
    assert reordered["list"] == first["list"][::-1] and kept.hits == 2 and decoded == []
    assert json.dumps(again) == json.dumps(first)  # what encode_in_parts splices is the same
    other = await get(world, {"ids": ["e1"], "properties": ["subject"]})  # not the same object
    assert other["list"] == [{"id": "e1", "subject": "Hello world"}] and decoded == ["e1"]


async def test_kept_objects_follow_flags_moves_and_expunges_core_get_04(world: World) -> None:
    """Every change of an Email takes a new seq; an object kept from before it is not used."""
    args = {"ids": ["e4", "e1", "e3"], "properties": LIST_PROPERTIES}
    before = await get(world, args)
    await world.set_flags("e1", ("\\Seen", "\\Flagged"))
    await world.move("e4", ("Msent",))
    await world.move("e3", ())  # expunged everywhere
    after = await get(world, args)
    assert after["state"] != before["state"]
    e4, e1 = after["list"]
    assert e1["keywords"] == {"$seen": True, "$flagged": True}
    assert e4["mailboxIds"] == {"Msent": True} and after["notFound"] == ["e3"]
    assert {k: v for k, v in e1.items() if k != "keywords"} == {
        k: v for k, v in before["list"][1].items() if k != "keywords"
    }
    assert (await get(world, args))["list"] == after["list"]  # kept anew, then used


async def test_an_object_without_its_stored_preview_is_not_kept(world: World) -> None:
    """e6's preview is computed from its message, which the upstream may fail to give; only
    once stored does its object stay."""
    kept = world.services().email_objects
    await get(world, {"ids": ["e6"], "properties": ["preview"]})
    assert len(kept) == 0
    await get(world, {"ids": ["e6"], "properties": ["preview"]})
    assert len(kept) == 1


async def test_kept_objects_are_shared_but_never_changed_in_place(world: World) -> None:
    args = {"ids": ["e1"], "properties": LIST_PROPERTIES}
    await get(world, args)
    (email,) = (await get(world, args))["list"]
    with pytest.raises(TypeError):
        email["keywords"] = {}
    mine = copy.deepcopy(email)  # what a result reference hands the next call
    mine["keywords"]["$seen"] = False
    assert type(mine) is dict and (await get(world, args))["list"][0]["keywords"] == {"$seen": True}


@pytest.mark.parametrize(
    ("ids", "found", "not_found"),
    [
        ([], [], []),  # CORE-GET-02
        (["e1", "e1"], ["e1"], []),  # duplicates once
        (["nope", "e2"], ["e2"], ["nope"]),
        (["#made"], ["e2"], []),  # a creation id of this request
        (["#unknown"], [], ["#unknown"]),
    ],
)
async def test_ids_and_not_found_core_get_02(
    world: World, ids: list[str], found: list[str], not_found: list[str]
) -> None:
    result = await email_get.email_get(
        world.context(), call("Email/get", {"ids": ids, "properties": ["size"]}, made="e2")
    )
    assert [e["id"] for e in result["list"]] == found
    assert result["notFound"] == not_found


async def test_other_accounts_emails_are_not_found(world: World) -> None:
    ctx = world.context()
    ctx.account = Account(OTHER, OTHER, "epoch2")
    result = await email_get.email_get(ctx, call("Email/get", {"ids": ["e1"]}))
    assert result["list"] == [] and result["notFound"] == ["e1"]


async def test_null_ids_gives_everything_or_request_too_large(world: World) -> None:
    result = await get(world, {"ids": None, "properties": ["size"]})
    assert sorted(e["id"] for e in result["list"]) == sorted(m.id for m in MAILS)
    with pytest.raises(MethodError) as err:
        await get(world, {"ids": None, "properties": ["size"]}, max_objects_in_get=3)
    assert err.value.type == "requestTooLarge"
    with pytest.raises(MethodError) as err:
        await get(world, {"ids": ["e1", "e2", "e3", "e4"]}, max_objects_in_get=3)
    assert err.value.type == "requestTooLarge"


@pytest.mark.parametrize(
    "args",
    [
        {"properties": ["nope"]},  # CORE-GET-03
        {"properties": ["header:From:asDate"]},  # a form not allowed for that header
        {"properties": ["header:Subject:asAddresses"]},
        {"properties": ["header:X:asNothing"]},
        {"bodyProperties": ["nope"]},
        {"bodyProperties": "partId"},
        {"fetchTextBodyValues": "yes"},
        {"maxBodyValueBytes": -1},
        {"unknownArgument": 1},
    ],
)
async def test_invalid_arguments(world: World, args: dict[str, Any]) -> None:
    with pytest.raises(MethodError) as err:
        await get(world, {"ids": ["e1"], **args})
    assert err.value.type == "invalidArguments"


async def test_header_properties_keep_the_clients_capitalisation(world: World) -> None:
    props = [
        "header:x-CUSTOM",
        "header:X-Custom:all",
        "header:Subject:asText",
        "header:FROM:asAddresses",
        "header:Missing",
        "sender",
        "replyTo",
        "headers",
    ]
    (email,) = (await get(world, {"ids": ["e1"], "properties": props}))["list"]
    assert email["header:x-CUSTOM"] == " second"  # the last instance, raw
    assert email["header:X-Custom:all"] == [" first", " second"]
    assert email["header:Subject:asText"] == "Hello world"
    assert email["header:FROM:asAddresses"] == [
        {"name": "Alice Liddell", "email": "alice@example.org"}
    ]
    assert email["header:Missing"] is None
    assert email["sender"] == [{"name": "Secretary", "email": "sec@example.org"}]
    assert email["replyTo"] is None  # from the message: ENVELOPE would have copied From
    assert {"name": "X-Custom", "value": " first"} in email["headers"]


async def test_body_values_and_body_properties(world: World) -> None:
    (email,) = (
        await get(
            world,
            {
                "ids": ["e1"],
                "properties": ["bodyValues", "textBody", "bodyStructure"],
                "bodyProperties": ["partId", "type", "blobId", "subParts"],
                "fetchHTMLBodyValues": True,
                "fetchTextBodyValues": True,
                "maxBodyValueBytes": 10,
            },
        )
    )["list"]
    assert set(email["bodyValues"]) == {"1.1", "1.2"}
    plain = email["bodyValues"]["1.1"]
    assert plain == {"value": "Hello Bob,", "isEncodingProblem": False, "isTruncated": True}
    assert email["textBody"] == [
        {"partId": "1.1", "type": "text/plain", "blobId": "Pe1_1-1", "subParts": None}
    ]
    root = email["bodyStructure"]
    assert root["partId"] is None and root["blobId"] is None
    assert [p["type"] for p in root["subParts"]] == ["multipart/alternative", "application/pdf"]


async def test_every_part_blob_id_is_a_valid_downloadable_id_core_bin_05(world: World) -> None:
    (email,) = (
        await get(world, {"ids": ["e1"], "properties": ["attachments", "textBody", "htmlBody"]})
    )["list"]
    parts = email["attachments"] + email["textBody"] + email["htmlBody"]
    for part in parts:
        assert is_id(part["blobId"])
        assert blobs.parse_blob_id(part["blobId"]) == blobs.BlobRef("e1", part["partId"])


async def test_an_email_gone_upstream_is_not_found(world: World) -> None:
    result = await get(world, {"ids": ["e1", "e2"], "properties": ["headers"]})
    assert [e["id"] for e in result["list"]] == ["e1"]
    assert result["notFound"] == ["e2"]


# --- Email/changes, Thread/get, Thread/changes --------------------------------------------


async def test_email_and_thread_changes_core_chg(world: World) -> None:
    ctx = world.context()
    email_state = (await get(world, {"ids": []}))["state"]
    thread_state = (await thread.thread_get(ctx, call("Thread/get", {"ids": []})))["state"]
    await world.set_flags("e5", ("\\Seen",))
    await world.move("e2", ())
    changes = await email_get.email_changes(ctx, call("Email/changes", {"sinceState": email_state}))
    assert (changes["created"], changes["updated"], changes["destroyed"]) == ([], ["e5"], ["e2"])
    assert changes["newState"] != email_state and changes["hasMoreChanges"] is False
    again = await email_get.email_changes(
        ctx, call("Email/changes", {"sinceState": changes["newState"]})
    )
    assert again["created"] == again["updated"] == again["destroyed"] == []  # CORE-CHG-05
    threads = await thread.thread_changes(ctx, call("Thread/changes", {"sinceState": thread_state}))
    assert sorted(threads["updated"]) == ["T1", "T3"] and threads["destroyed"] == []
    with pytest.raises(MethodError) as err:
        await thread.thread_changes(ctx, call("Thread/changes", {"sinceState": "garbage"}))
    assert err.value.type == "cannotCalculateChanges"


async def test_thread_get_oldest_first_thr(world: World) -> None:
    ctx = world.context()
    result = await thread.thread_get(ctx, call("Thread/get", {"ids": ["T1", "T2", "nope"]}))
    assert result["list"] == [
        {"id": "T1", "emailIds": ["e1", "e2", "e3"]},
        {"id": "T2", "emailIds": ["e4"]},
    ]
    assert result["notFound"] == ["nope"]
    await world.move("e1", ())
    result = await thread.thread_get(
        ctx, call("Thread/get", {"ids": ["T1"], "properties": ["emailIds"]})
    )
    assert result["list"] == [{"id": "T1", "emailIds": ["e2", "e3"]}]
    everything = await thread.thread_get(ctx, call("Thread/get", {}))
    assert [t["id"] for t in everything["list"]] == ["T1", "T2", "T3", "T4"]
    with pytest.raises(MethodError) as err:
        await thread.thread_get(world.context(max_objects_in_get=2), call("Thread/get", {}))
    assert err.value.type == "requestTooLarge"
    with pytest.raises(MethodError) as err:
        await thread.thread_get(ctx, call("Thread/get", {"properties": ["subject"]}))
    assert err.value.type == "invalidArguments"


# --- download -----------------------------------------------------------------------------


class _Auth:
    def __init__(self, world: World) -> None:
        self.world = world

    async def authenticate(self, header: str | None, client: object = None) -> Authenticated:
        if header != "Basic ok":
            raise Unauthorized("no")
        return Authenticated(
            Account(A, A, "epoch1"),
            None,  # type: ignore[arg-type]  # a download reads through the upstream
            self.world.upstream,
        )


@pytest.fixture
async def client(world: World, aiohttp_client: Any) -> TestClient[Any, Any]:
    app = web.Application(middlewares=[middleware.problem_details])
    app[views.AUTH] = cast(Authenticator, _Auth(world))
    app[views.SERVICES] = world.context().services
    app[views.CONFIG] = world.context().services.cfg
    app.router.add_get(DOWNLOAD_PATH, views.download_view)
    result: TestClient[Any, Any] = await aiohttp_client(app)
    return result


@pytest.mark.parametrize(
    ("path", "status", "body", "ctype"),
    [
        (f"/jmap/download/{A}/Ge1/mail.eml?type=message/rfc822", 200, RAW, "message/rfc822"),
        (
            f"/jmap/download/{A}/Pe1_2/r%C3%A9port.pdf?type=application/pdf",
            200,
            b"%PDF-1.4 fake",
            "application/pdf",
        ),
        (
            f"/jmap/download/{A}/Pe1_1-1/a.txt?type=text/plain;%20charset=utf-8",
            200,
            b"Hello Bob, the plain text body.",
            "text/plain; charset=utf-8",
        ),
        (f"/jmap/download/{A}/Pe1_9/x?type=a/b", 404, None, None),  # no such part
        (f"/jmap/download/{A}/Ge2/x?type=a/b", 404, None, None),  # gone upstream
        (f"/jmap/download/{A}/Xe1/x?type=a/b", 404, None, None),  # not our scheme
        (f"/jmap/download/{OTHER}/Ge1/x?type=a/b", 404, None, None),  # not this user's
    ],
)
async def test_download_core_bin_03(
    client: TestClient[Any, Any], path: str, status: int, body: bytes | None, ctype: str | None
) -> None:
    resp = await client.get(path, headers={"Authorization": "Basic ok"})
    assert resp.status == status, await resp.text()
    if status == 200:
        assert await resp.read() == body
        assert resp.headers["Content-Type"] == ctype
        assert resp.headers["Cache-Control"] == "private, immutable, max-age=31536000"
        assert resp.headers["Content-Disposition"].startswith("attachment; filename*=UTF-8''")
    else:
        assert resp.headers["Content-Type"].startswith("application/problem+json")


async def test_download_name_and_auth(client: TestClient[Any, Any]) -> None:
    resp = await client.get(
        f"/jmap/download/{A}/Pe1_2/r%C3%A9port.pdf?type=application/pdf",
        headers={"Authorization": "Basic ok"},
    )
    assert resp.headers["Content-Disposition"] == "attachment; filename*=UTF-8''r%C3%A9port.pdf"
    resp = await client.get(f"/jmap/download/{A}/Ge1/m.eml?type=message/rfc822")
    assert resp.status == 401
