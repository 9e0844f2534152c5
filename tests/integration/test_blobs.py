"""Binary data (RFC 8620 §6, checklist CORE-BIN-*) and the Blob methods (RFC 9404, §9)
through the proxy in front of the real Dovecot; messages written with the oracle."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import imaplib
import logging
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from imapjmap.config import LimitsConfig
from imapjmap.http import views
from imapjmap.http.app import make_app
from imapjmap.http.connections import Guard, GuardedRunner
from imapjmap.store import blobs as stored
from imapjmap.store.db import Tx
from tests.integration.conftest import CORE, MAIL, Jmap, proxy_config
from tests.integration.instances import ProxyClient

BLOB = "urn:ietf:params:jmap:blob"
USING_BLOB = [CORE, MAIL, BLOB]
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABAQMAAAAl21bKAAAAA1BMVEX/AAAZ4gk3AAAAAXRSTlN/gFy0ywAAAApJ"
    "REFUeJxjYgAAAAYAAzY3fKgAAAAASUVORK5CYII="
)
MESSAGE = (
    b"From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: With a picture\r\n"
    b"Date: Mon, 2 Mar 2026 10:00:00 +0000\r\nMessage-ID: <pic@example.org>\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
    b"--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee the picture.\r\n"
    b"--XX\r\nContent-Type: image/png; name=dot.png\r\nContent-Disposition: attachment;"
    b" filename=dot.png\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + base64.encodebytes(PNG).replace(b"\n", b"\r\n")
    + b"--XX--\r\n"
)


async def upload(
    jmap: Jmap, data: bytes, content_type: str | None = "text/plain", account_id: str | None = None
) -> Any:
    headers = jmap.auth()
    skip: list[str] = []
    if content_type is None:
        skip.append("Content-Type")
    else:
        headers["Content-Type"] = content_type
    return await jmap.http.post(
        f"/jmap/upload/{account_id or jmap.account_id}/",
        data=data,
        headers=headers,
        skip_auto_headers=skip,
    )


async def uploaded(jmap: Jmap, data: bytes, content_type: str | None = "text/plain") -> Any:
    resp = await upload(jmap, data, content_type)
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def download(
    jmap: Jmap, blob_id: str, type_: str = "application/octet-stream", name: str = "file.bin"
) -> Any:
    return await jmap.http.get(
        f"/jmap/download/{jmap.account_id}/{blob_id}/{name}",
        params={"type": type_},
        headers=jmap.auth(),
    )


async def blob_call(
    jmap: Jmap, name: str, args: dict[str, Any], using: list[str] | None = None
) -> tuple[str, dict[str, Any]]:
    body = await jmap.request(
        [[name, {"accountId": jmap.account_id, **args}, "b"]], using=using or USING_BLOB
    )
    response_name, response_args, _ = body["methodResponses"][0]
    return response_name, response_args


async def blob_ok(jmap: Jmap, name: str, args: dict[str, Any]) -> dict[str, Any]:
    response_name, response_args = await blob_call(jmap, name, args)
    assert response_name == name, response_args
    return response_args


async def problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    body: dict[str, Any] = await resp.json()
    assert body["status"] == status
    return body


def store_of(jmap: Jmap) -> Any:
    return jmap.http.app[views.SERVICES].store


@pytest.fixture
async def limited(imap_user: Any, tmp_path: Path, proxy_client: ProxyClient) -> AsyncIterator[Jmap]:
    """The proxy with maxSizeUpload = 1000 and maxConcurrentUpload = 1."""
    cfg = proxy_config(imap_user, tmp_path)
    cfg = dataclasses.replace(
        cfg, limits=LimitsConfig(max_size_upload=1000, max_concurrent_upload=1)
    )
    async with proxy_client(cfg) as http:
        client = Jmap(http, imap_user.username, imap_user.password)
        await client.session()
        yield client


@pytest.fixture
async def quota(imap_user: Any, tmp_path: Path, proxy_client: ProxyClient) -> AsyncIterator[Jmap]:
    """The proxy with maxSizeUpload = 1000 and 2500 octets of uploads per account."""
    cfg = proxy_config(imap_user, tmp_path)
    cfg = dataclasses.replace(
        cfg, limits=LimitsConfig(max_size_upload=1000, max_upload_bytes_per_account=2500)
    )
    async with proxy_client(cfg) as http:
        client = Jmap(http, imap_user.username, imap_user.password)
        await client.session()
        yield client


# -- upload (CORE-BIN-01, CORE-BIN-02) -------------------------------------------------------


async def test_upload_answers_201_with_type_as_sent_core_bin_01(jmap: Jmap) -> None:
    resp = await upload(jmap, b"hello world", "Text/Plain ;  charset=UTF-8")
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert set(body) == {"accountId", "blobId", "type", "size"}
    assert body["accountId"] == jmap.account_id
    assert body["type"] == "text/plain; charset=UTF-8"  # normalised, not sniffed
    assert body["size"] == 11
    assert re.fullmatch(r"U[a-z2-7]{52}", body["blobId"])


async def test_upload_type_is_never_sniffed_core_bin_01(jmap: Jmap) -> None:
    assert (await uploaded(jmap, PNG, "text/plain"))["type"] == "text/plain"
    assert (await uploaded(jmap, PNG, None))["type"] == "application/octet-stream"


async def test_same_content_same_blob_id_core_bin_02(jmap: Jmap) -> None:
    first = await uploaded(jmap, b"same bytes", "text/plain")
    second = await uploaded(jmap, b"same bytes", "application/x-other")
    third = await uploaded(jmap, b"other bytes")
    assert first["blobId"] == second["blobId"] != third["blobId"]
    assert second["type"] == "application/x-other"


async def test_download_of_an_upload_core_bin_03(jmap: Jmap) -> None:
    blob_id = (await uploaded(jmap, PNG, "image/png"))["blobId"]
    resp = await download(jmap, blob_id, "image/png", "dot.png")
    assert resp.status == 200
    assert await resp.read() == PNG
    assert resp.headers["Content-Type"] == "image/png"
    assert "dot.png" in resp.headers["Content-Disposition"]


async def test_upload_needs_credentials(jmap: Jmap) -> None:
    resp = await jmap.http.post(f"/jmap/upload/{jmap.account_id}/", data=b"x")
    await problem(resp, 401)
    assert "WWW-Authenticate" in resp.headers


async def test_upload_to_another_account_is_404(jmap: Jmap) -> None:
    await problem(await upload(jmap, b"x", account_id="Aotheraccount"), 404)


async def test_upload_over_max_size_is_413_problem(limited: Jmap) -> None:
    ok = await upload(limited, b"x" * 1000)
    assert ok.status == 201
    body = await problem(await upload(limited, b"x" * 1001), 413)
    assert body["type"] == "urn:ietf:params:jmap:error:limit"
    assert body["limit"] == "maxSizeUpload"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: cut off while reading
        for _ in range(5):
            yield b"y" * 300

    resp = await limited.http.post(
        f"/jmap/upload/{limited.account_id}/", data=chunks(), headers=limited.auth()
    )
    assert (await problem(resp, 413))["limit"] == "maxSizeUpload"


async def test_upload_over_max_concurrent_is_429_problem(limited: Jmap) -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"first half "
        started.set()
        await release.wait()
        yield b"second half"

    first = asyncio.create_task(
        limited.http.post(
            f"/jmap/upload/{limited.account_id}/", data=slow(), headers=limited.auth()
        )
    )
    await started.wait()
    await asyncio.sleep(0.2)  # the server is now inside the first upload
    body = await problem(await upload(limited, b"second"), 429)
    assert body["limit"] == "maxConcurrentUpload"
    release.set()
    resp = await first
    assert resp.status == 201
    assert (await resp.json())["size"] == len(b"first half second half")
    assert (await upload(limited, b"third")).status == 201  # the slot is free again


async def test_uploads_of_one_account_are_capped_core_bin_01(quota: Jmap) -> None:
    first = await uploaded(quota, b"a" * 1000)
    await uploaded(quota, b"b" * 1000)
    body = await problem(await upload(quota, b"c" * 1000), 413)
    assert body["type"] == "urn:ietf:params:jmap:error:limit"
    assert body["limit"] == "maxUploadBytesPerAccount"
    assert body["title"] == "overQuota"
    assert "3000 octets, over its quota of 2500" in body["detail"]
    await uploaded(quota, b"x" * 500)  # what still fits is taken
    await uploaded(quota, b"a" * 1000)  # content it holds already costs nothing

    got = await blob_ok(quota, "Blob/upload", {"create": {"big": {"data": [{"data:asText": "d"}]}}})
    assert got["created"] is None
    error = got["notCreated"]["big"]
    assert error["type"] == "overQuota"
    assert "quota of 2500 (maxUploadBytesPerAccount)" in error["description"]

    account = quota.account_id

    def expire(tx: Tx) -> bool:
        return stored.set_expiry(tx, account, first["blobId"], time.time() - 1)

    assert await store_of(quota).run(expire)
    await uploaded(quota, b"c" * 1000)  # an expired upload no longer counts


async def test_other_account_cannot_see_an_upload_core_bin_02(jmap: Jmap, dovecot: Any) -> None:
    dovecot.add_user("blob-neighbour", "neighbour-pw")
    other = Jmap(jmap.http, "blob-neighbour", "neighbour-pw")
    await other.session()
    theirs = (await uploaded(other, b"private to the neighbour"))["blobId"]
    assert (await download(jmap, theirs)).status == 404
    got = await blob_ok(jmap, "Blob/get", {"ids": [theirs]})
    assert got["notFound"] == [theirs] and got["list"] == []
    # downloading through their account id with our credentials: not ours either
    resp = await jmap.http.get(
        f"/jmap/download/{other.account_id}/{theirs}/x",
        params={"type": "text/plain"},
        headers=jmap.auth(),
    )
    assert resp.status == 404


async def test_expired_upload_is_gone_and_purged(jmap: Jmap) -> None:
    blob_id = (await uploaded(jmap, b"short-lived"))["blobId"]
    store = store_of(jmap)
    account = jmap.account_id

    def expire(tx: Tx) -> bool:
        return stored.set_expiry(tx, account, blob_id, time.time() - 1)

    assert await store.run(expire)
    assert (await download(jmap, blob_id)).status == 404
    assert (await blob_ok(jmap, "Blob/get", {"ids": [blob_id]}))["notFound"] == [blob_id]
    assert await store.run(lambda tx: stored.count(tx, account)) == 1  # not purged yet
    await uploaded(jmap, b"a later upload purges it")
    assert await store.run(lambda tx: stored.count(tx, account)) == 1
    assert (await download(jmap, blob_id)).status == 404


async def test_use_keeps_an_upload_another_day(jmap: Jmap) -> None:
    blob_id = (await uploaded(jmap, b"used"))["blobId"]
    store = store_of(jmap)
    account = jmap.account_id
    soon = time.time() + 60

    def expire_soon(tx: Tx) -> bool:
        return stored.set_expiry(tx, account, blob_id, soon)

    await store.run(expire_soon)
    assert (await download(jmap, blob_id)).status == 200
    row = await store.run(lambda tx: stored.blob(tx, account, blob_id, now=time.time()))
    assert row is not None and row.expires_at > time.time() + 23 * 3600


# -- session ---------------------------------------------------------------------------------


async def test_session_advertises_the_blob_capability(jmap: Jmap) -> None:
    session = await jmap.session()
    assert session["capabilities"][BLOB] == {}
    account = session["accounts"][jmap.account_id]["accountCapabilities"][BLOB]
    assert account["maxDataSources"] >= 64
    assert account["maxSizeBlobSet"] == session["capabilities"][CORE]["maxSizeUpload"]
    assert set(account["supportedTypeNames"]) == {"Mailbox", "Thread", "Email"}
    assert set(account["supportedDigestAlgorithms"]) == {"sha", "sha-256"}
    assert session["primaryAccounts"][BLOB] == jmap.account_id


# -- Blob/upload -----------------------------------------------------------------------------


async def test_blob_upload_concatenates_sources(jmap: Jmap) -> None:
    base = (await uploaded(jmap, b"0123456789"))["blobId"]
    body = await jmap.request(
        [
            [
                "Blob/upload",
                {
                    "accountId": jmap.account_id,
                    "create": {
                        "a": {
                            "data": [
                                {"data:asText": "héllo "},
                                {"data:asBase64": base64.b64encode(b"\x00\xff").decode()},
                                {"blobId": base, "offset": 2, "length": 3},
                                {"blobId": base, "offset": 8},
                            ],
                            "type": "application/x-test",
                        },
                        "b": {"data": [{"blobId": "#a"}, {"data:asText": "!"}]},
                    },
                },
                "u",
            ],
            [
                "Blob/get",
                {
                    "accountId": jmap.account_id,
                    "ids": ["#a", "#b"],
                    "properties": ["data:asBase64", "size"],
                },
                "g",
            ],
        ],
        using=USING_BLOB,
    )
    (_, up, _), (_, got, _) = body["methodResponses"]
    expected = "héllo ".encode() + b"\x00\xff" + b"234" + b"89"
    created = up["created"]
    assert created["a"]["size"] == len(expected) and created["a"]["type"] == "application/x-test"
    assert created["b"]["type"] == "application/octet-stream"
    assert up["notCreated"] is None
    by_id = {b["id"]: b for b in got["list"]}
    assert base64.b64decode(by_id[created["a"]["id"]]["data:asBase64"]) == expected
    assert base64.b64decode(by_id[created["b"]["id"]]["data:asBase64"]) == expected + b"!"
    resp = await download(jmap, created["a"]["id"])
    assert await resp.read() == expected


async def test_blob_upload_errors(jmap: Jmap) -> None:
    base = (await uploaded(jmap, b"short"))["blobId"]
    got = await blob_ok(
        jmap,
        "Blob/upload",
        {
            "create": {
                "missing": {"data": [{"blobId": "Unosuchblob"}]},
                "badb64": {"data": [{"data:asBase64": "***"}]},
                "two": {"data": [{"data:asText": "a", "data:asBase64": "YQ=="}]},
                "range": {"data": [{"blobId": base, "offset": 3, "length": 10}]},
                "many": {"data": [{"data:asText": "x"}] * 65},
                "extra": {"data": [], "colour": "red"},
                "fine": {"data": []},
            }
        },
    )
    errors = got["notCreated"]
    assert errors["missing"] == {"type": "blobNotFound", "notFound": ["Unosuchblob"]}
    for key in ("badb64", "two", "range", "extra"):
        assert errors[key]["type"] == "invalidProperties", key
    assert errors["many"]["type"] == "tooLarge"
    assert got["created"]["fine"]["size"] == 0


# -- Blob/get --------------------------------------------------------------------------------


async def test_blob_get_every_property(jmap: Jmap) -> None:
    data = "Grüße, world".encode()
    blob_id = (await uploaded(jmap, data))["blobId"]
    props = ["data:asText", "data:asBase64", "digest:sha", "digest:sha-256", "size"]
    got = await blob_ok(jmap, "Blob/get", {"ids": [blob_id, "Unope"], "properties": props})
    assert got["notFound"] == ["Unope"]
    (item,) = got["list"]
    assert item == {
        "id": blob_id,
        "data:asText": "Grüße, world",
        "data:asBase64": base64.b64encode(data).decode(),
        "digest:sha": base64.b64encode(hashlib.sha1(data).digest()).decode(),
        "digest:sha-256": base64.b64encode(hashlib.sha256(data).digest()).decode(),
        "size": len(data),
        "isEncodingProblem": False,
        "isTruncated": False,
    }
    default = (await blob_ok(jmap, "Blob/get", {"ids": [blob_id]}))["list"][0]
    assert set(default) == {"id", "data:asText", "size", "isEncodingProblem", "isTruncated"}


async def test_blob_get_range_and_encoding_problem(jmap: Jmap) -> None:
    blob_id = (await uploaded(jmap, b"abcdef\xff\xfe"))["blobId"]
    ranged = (
        await blob_ok(
            jmap,
            "Blob/get",
            {
                "ids": [blob_id],
                "properties": ["data", "digest:sha-256", "size"],
                "offset": 1,
                "length": 3,
            },
        )
    )["list"][0]
    assert ranged["data:asText"] == "bcd" and ranged["size"] == 8
    assert ranged["digest:sha-256"] == base64.b64encode(hashlib.sha256(b"bcd").digest()).decode()
    assert ranged["isTruncated"] is False
    past = (
        await blob_ok(
            jmap, "Blob/get", {"ids": [blob_id], "properties": ["data"], "offset": 4, "length": 100}
        )
    )["list"][0]
    assert base64.b64decode(past["data:asBase64"]) == b"ef\xff\xfe"  # not UTF-8: base64
    assert past["isTruncated"] is True and past["isEncodingProblem"] is True
    text = (await blob_ok(jmap, "Blob/get", {"ids": [blob_id], "properties": ["data:asText"]}))[
        "list"
    ][0]
    assert text["data:asText"] is None and text["isEncodingProblem"] is True


async def test_blob_get_argument_errors(jmap: Jmap) -> None:
    for args in (
        {"ids": ["x"], "properties": ["digest:md5"]},
        {"ids": None},
        {"ids": ["x"], "offset": -1},
        {"ids": ["x"], "colour": 1},
    ):
        name, body = await blob_call(jmap, "Blob/get", args)
        assert (name, body["type"]) == ("error", "invalidArguments"), args
    name, body = await blob_call(jmap, "Blob/get", {"ids": [f"U{i}" for i in range(1001)]})
    assert body["type"] == "requestTooLarge"
    # without the blob capability (and core) in "using" the method does not exist
    name, body = await blob_call(jmap, "Blob/get", {"ids": []}, using=[MAIL])
    assert body["type"] == "unknownMethod"


async def test_blob_get_reads_message_and_part_blobs_core_bin_05(
    jmap: Jmap, imap_oracle: imaplib.IMAP4
) -> None:
    assert imap_oracle.append("INBOX", None, None, MESSAGE)[0] == "OK"
    (ids,) = [(await jmap.ok("Email/query", {}))["ids"]]
    email = await jmap.ok("Email/get", {"ids": ids, "properties": ["blobId", "attachments"]})
    message = email["list"][0]
    part = message["attachments"][0]["blobId"]
    got = await blob_ok(
        jmap,
        "Blob/get",
        {"ids": [message["blobId"], part], "properties": ["data:asBase64", "size"]},
    )
    by_id = {b["id"]: b for b in got["list"]}
    assert base64.b64decode(by_id[message["blobId"]]["data:asBase64"]) == MESSAGE
    assert base64.b64decode(by_id[part]["data:asBase64"]) == PNG


# -- Blob/lookup -----------------------------------------------------------------------------


async def test_blob_lookup_maps_messages_to_email_mailboxes_thread(
    jmap: Jmap, imap_oracle: imaplib.IMAP4
) -> None:
    assert imap_oracle.append("INBOX", None, None, MESSAGE)[0] == "OK"
    imap_oracle.select("INBOX")
    assert imap_oracle.uid("COPY", "1", "Archive")[0] == "OK"
    (email_id,) = (await jmap.ok("Email/query", {}))["ids"]
    email = (
        await jmap.ok(
            "Email/get",
            {"ids": [email_id], "properties": ["blobId", "threadId", "mailboxIds", "attachments"]},
        )
    )["list"][0]
    upload_id = (await uploaded(jmap, b"referenced by nothing"))["blobId"]
    part = email["attachments"][0]["blobId"]
    got = await blob_ok(
        jmap,
        "Blob/lookup",
        {
            "typeNames": ["Email", "Mailbox", "Thread"],
            "ids": [email["blobId"], part, upload_id, "Gnosuchemail"],
        },
    )
    assert got["notFound"] == ["Gnosuchemail"]
    by_id = {b["id"]: b["matchedIds"] for b in got["list"]}
    expected = {
        "Email": [email_id],
        "Mailbox": sorted(email["mailboxIds"]),
        "Thread": [email["threadId"]],
    }
    assert len(email["mailboxIds"]) == 2
    assert by_id[email["blobId"]] == expected
    assert by_id[part] == expected
    assert by_id[upload_id] == {"Email": [], "Mailbox": [], "Thread": []}


async def test_blob_lookup_unknown_data_type(jmap: Jmap) -> None:
    name, body = await blob_call(jmap, "Blob/lookup", {"typeNames": ["Calendar"], "ids": []})
    assert (name, body["type"]) == ("error", "unknownDataType")
    # Email is a mail type: unknown when the mail capability is not in "using"
    name, body = await blob_call(
        jmap, "Blob/lookup", {"typeNames": ["Email"], "ids": []}, using=[CORE, BLOB]
    )
    assert (name, body["type"]) == ("error", "unknownDataType")


# -- a client that stops sending (imapjmap.http.connections) ---------------------------------


async def test_a_stalled_upload_is_408_and_no_server_error(
    imap_user: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An upload whose body stops short of its Content-Length: 408 once body_timeout has
    passed (it was held until the client left, then logged as a 500 with a traceback)."""
    caplog.set_level(logging.INFO)
    app = make_app(proxy_config(imap_user, tmp_path))
    guard = Guard(header_timeout=5.0, body_timeout=0.3, max_per_address=10)
    runner = GuardedRunner(app, guard, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    basic = base64.b64encode(f"{imap_user.username}:{imap_user.password}".encode()).decode()
    auth = {"Authorization": f"Basic {basic}"}
    try:
        session_url = f"http://127.0.0.1:{port}/.well-known/jmap"
        async with aiohttp.ClientSession() as http, http.get(session_url, headers=auth) as r:
            account_id = next(iter((await r.json())["accounts"]))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"POST /jmap/upload/{account_id}/ HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: {auth['Authorization']}\r\nContent-Type: text/plain\r\n"
            "Content-Length: 1000\r\n\r\n".encode()
            + b"x" * 100
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 408 "), head
        writer.close()
        store = app[views.SERVICES].store
        assert await store.run(lambda tx: stored.count(tx, account_id)) == 0
    finally:
        await runner.cleanup()
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]
    assert any(
        r.getMessage().startswith("POST /jmap/upload/") and " 408 " in r.getMessage()
        for r in caplog.records
        if r.name == "imapjmap.access"
    )
