"""SieveScript and VacationResponse against Cyrus's ManageSieve (timsieved) and lmtpd.

The requirement ids are those of test_sieve_scripts (SIEVE-*) and test_vacation (VAC-*).
Cyrus is the second server behind the same code: its ManageSieve speaks the same protocol
with other words (its own extensions, its own error texts), and its lmtpd runs the script.
Whether Cyrus sends the vacation reply is not checked here (its vacation decides from
addresses of its own configuration); Dovecot's test answers real mail.
"""

from __future__ import annotations

import dataclasses
import secrets
import smtplib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from devservers.cyrus import CyrusServer
from imapjmap.config import SieveConfig
from imapjmap.http.app import make_app
from imapjmap.managesieve.client import Endpoint, ManageSieveClient
from tests.integration.conftest import CORE, MAIL, Jmap, proxy_config
from tests.integration.sievekit import FILTER

SIEVE = "urn:ietf:params:jmap:sieve"
VACATION = "urn:ietf:params:jmap:vacationresponse"
USING = [CORE, MAIL, SIEVE, VACATION]


@dataclasses.dataclass(frozen=True)
class CyrusUser:
    username: str
    password: str
    host: str
    port: int
    server: CyrusServer

    async def other_client(self) -> ManageSieveClient:
        endpoint = Endpoint(self.host, self.server.sieve_port, "none")
        return await ManageSieveClient.connect(endpoint, self.username, self.password)

    async def scripts(self) -> dict[str, tuple[bool, bytes | None]]:
        client = await self.other_client()
        try:
            return {n: (a, await client.get_script(n)) for n, a in await client.list_scripts()}
        finally:
            await client.close()


@pytest.fixture
def cyrus_user(cyrus: CyrusServer) -> CyrusUser:
    username, password = f"sieve-{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    cyrus.add_user(username, password)
    cyrus.connect(username, password).logout()  # its mailboxes exist from the first login
    return CyrusUser(username, password, cyrus.host, cyrus.port, cyrus)


@pytest.fixture
async def cyrus_jmap(cyrus_user: CyrusUser, tmp_path: Path) -> AsyncIterator[Jmap]:
    cfg = proxy_config(cyrus_user, tmp_path)
    cfg = dataclasses.replace(cfg, sieve=SieveConfig(port=cyrus_user.server.sieve_port))
    async with TestClient(TestServer(make_app(cfg))) as http:
        client = Jmap(http, cyrus_user.username, cyrus_user.password)
        await client.session()
        yield client


async def ok(jmap: Jmap, name: str, args: dict[str, Any]) -> dict[str, Any]:
    body = await jmap.request([[name, {"accountId": jmap.account_id, **args}, "c"]], using=USING)
    response_name, response, _ = body["methodResponses"][0]
    assert response_name == name, response
    result: dict[str, Any] = response
    return result


async def upload(jmap: Jmap, content: bytes) -> str:
    resp = await jmap.http.post(
        f"/jmap/upload/{jmap.account_id}/",
        data=content,
        headers={**jmap.auth(), "Content-Type": "application/sieve"},
    )
    assert resp.status == 201, await resp.text()
    return str((await resp.json())["blobId"])


async def test_session_names_cyrus_and_its_extensions_sieve_01(cyrus_jmap: Jmap) -> None:
    session = await cyrus_jmap.session()
    sieve = session["accounts"][cyrus_jmap.account_id]["accountCapabilities"][SIEVE]
    assert "timsieved" in sieve["implementation"]
    assert {"vacation", "include", "fileinto"} <= set(sieve["sieveExtensions"])


async def test_a_filter_made_through_jmap_files_delivered_mail_sieve_05(
    cyrus_jmap: Jmap, cyrus_user: CyrusUser
) -> None:
    with cyrus_user.server.connect(cyrus_user.username, cyrus_user.password) as imap:
        assert imap.create("Bills")[0] == "OK"
    response = await ok(
        cyrus_jmap,
        "SieveScript/set",
        {
            "create": {"f": {"name": "bills", "blobId": await upload(cyrus_jmap, FILTER)}},
            "onSuccessActivateScript": "#f",
        },
    )
    assert response["updated"] == {response["created"]["f"]["id"]: {"isActive": True}}
    raw = b"From: bob@example.org\r\nSubject: an invoice\r\nMessage-ID: <c1@x>\r\n\r\nPay.\r\n"
    with smtplib.LMTP(cyrus_user.host, cyrus_user.server.lmtp_port, timeout=30) as lmtp:
        lmtp.sendmail("bob@example.org", [cyrus_user.username], raw)
    with cyrus_user.server.connect(cyrus_user.username, cyrus_user.password) as imap:
        assert imap.select("Bills", readonly=True) == ("OK", [b"1"])


async def test_cyrus_refusal_is_invalid_sieve_sieve_04(
    cyrus_jmap: Jmap, cyrus_user: CyrusUser
) -> None:
    blob = await upload(cyrus_jmap, b"bogus;\r\n")
    error = (await ok(cyrus_jmap, "SieveScript/validate", {"blobId": blob}))["error"]
    assert error["type"] == "invalidSieve" and "line 1" in error["description"]
    response = await ok(cyrus_jmap, "SieveScript/set", {"create": {"a": {"blobId": blob}}})
    assert response["notCreated"]["a"]["type"] == "invalidSieve"
    assert await cyrus_user.scripts() == {}


async def test_vacation_beside_another_clients_script_vac_07(
    cyrus_jmap: Jmap, cyrus_user: CyrusUser
) -> None:
    client = await cyrus_user.other_client()
    try:
        await client.put_script("mine", FILTER)
        await client.set_active("mine")
    finally:
        await client.close()
    on = {"isEnabled": True, "subject": "Away", "textBody": "Back soon."}
    assert (await ok(cyrus_jmap, "VacationResponse/set", {"update": {"singleton": on}}))[
        "updated"
    ] == {"singleton": None}
    got = (await ok(cyrus_jmap, "VacationResponse/get", {}))["list"][0]
    assert got["isEnabled"] is True and got["textBody"] == "Back soon."
    scripts = await cyrus_user.scripts()
    assert [name for name, (active, _) in scripts.items() if active] == ["jmap-main"]
    off = {"isEnabled": False}
    await ok(cyrus_jmap, "VacationResponse/set", {"update": {"singleton": off}})
    scripts = await cyrus_user.scripts()
    assert scripts["mine"] == (True, FILTER)
