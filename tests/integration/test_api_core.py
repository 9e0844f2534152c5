"""RFC 8620 core over HTTP against the real Dovecot: session, auth, request-level and
method-level errors, result references, creation ids (checklist sections 0-5)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import secrets
from pathlib import Path
from typing import Any

import pytest

from imapjmap.config import Config, ImapConfig
from imapjmap.http import views
from imapjmap.jmap.dispatch import Call, MethodSpec
from imapjmap.jmap.errors import RequestErrorType
from imapjmap.jmap.wire import WEBSOCKET
from imapjmap.methods import REGISTRY
from tests.integration.conftest import CORE, MAIL, Jmap, proxy_config
from tests.integration.instances import ProxyClient, apps_of

PROBLEM = "application/problem+json"


async def problem_of(resp: Any, status: int = 400) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == PROBLEM
    body: dict[str, Any] = await resp.json()
    assert body["status"] == status
    return body


# -- session (CORE-SESS-*) ----------------------------------------------------------------


async def test_session_has_every_required_field_core_sess_02(jmap: Jmap) -> None:
    session = await jmap.session()
    for key in (
        "capabilities",
        "accounts",
        "primaryAccounts",
        "username",
        "apiUrl",
        "downloadUrl",
        "uploadUrl",
        "eventSourceUrl",
        "state",
    ):
        assert key in session, key
    assert session["username"] == jmap.username
    account = session["accounts"][jmap.account_id]
    assert account["name"] == jmap.username
    assert account["isPersonal"] is True and account["isReadOnly"] is False
    assert MAIL in account["accountCapabilities"]
    core = session["capabilities"][CORE]
    for limit in (
        "maxSizeUpload",
        "maxConcurrentUpload",
        "maxSizeRequest",
        "maxConcurrentRequests",
        "maxCallsInRequest",
        "maxObjectsInGet",
        "maxObjectsInSet",
        "collationAlgorithms",
    ):
        assert limit in core, limit
    assert session["primaryAccounts"][MAIL] == jmap.account_id
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,255}", jmap.account_id)


async def test_session_urls_are_absolute_templates_core_sess_05(jmap: Jmap) -> None:
    session = await jmap.session()
    for key in ("apiUrl", "downloadUrl", "uploadUrl", "eventSourceUrl"):
        assert session[key].startswith("http://127.0.0.1:8080/"), session[key]
    variables = {
        k: set(re.findall(r"\{(\w+)\}", session[k]))
        for k in ("downloadUrl", "uploadUrl", "eventSourceUrl")
    }
    assert variables["downloadUrl"] == {"accountId", "blobId", "type", "name"}
    assert variables["uploadUrl"] == {"accountId"}
    assert variables["eventSourceUrl"] == {"types", "closeafter", "ping"}


async def test_session_state_is_stable_and_echoed_core_sess_06(jmap: Jmap) -> None:
    first = await jmap.session()
    second = await jmap.session()
    assert first["state"] == second["state"]
    body = await jmap.request([["Core/echo", {"x": 1}, "e"]])
    assert body["sessionState"] == first["state"]


async def test_session_lists_only_implemented_capabilities_core_sess_07(jmap: Jmap) -> None:
    session = await jmap.session()
    # every capability advertised beyond core has methods in the registry (WebSocket has an
    # endpoint instead, RFC 8887)
    implemented = {CORE, WEBSOCKET} | {spec.capability for spec in REGISTRY.values()}
    assert {CORE, MAIL} <= set(session["capabilities"]) <= implemented


async def test_session_without_credentials_is_401_with_challenge(jmap: Jmap) -> None:
    resp = await jmap.http.get("/.well-known/jmap")
    await problem_of(resp, 401)
    assert resp.headers["WWW-Authenticate"].startswith("Basic")


async def test_wrong_password_is_401(jmap: Jmap) -> None:
    resp = await jmap.http.get("/.well-known/jmap", headers=jmap.auth(password="wrong"))
    await problem_of(resp, 401)
    assert "WWW-Authenticate" in resp.headers
    resp = await jmap.http.post("/jmap/api/", headers=jmap.auth(password="wrong"), data=b"{}")
    await problem_of(resp, 401)


async def test_malformed_basic_header_is_401(jmap: Jmap) -> None:
    resp = await jmap.http.get("/.well-known/jmap", headers={"Authorization": "Basic not-base64!!"})
    await problem_of(resp, 401)


async def test_upstream_down_is_503(
    imap_user: Any, tmp_path: Path, proxy_client: ProxyClient
) -> None:
    cfg = proxy_config(imap_user, tmp_path)
    cfg = Config(
        imap=ImapConfig(host="127.0.0.1", port=1, security="none", connect_timeout=2.0),
        server=cfg.server,
        cache=cfg.cache,
    )
    async with proxy_client(cfg) as http:
        client = Jmap(http, imap_user.username, imap_user.password)
        resp = await http.get("/.well-known/jmap", headers=client.auth())
        await problem_of(resp, 503)


async def test_two_users_get_separate_accounts(jmap: Jmap, dovecot: Any) -> None:
    dovecot.add_user("isolated-other", "other-password")
    other = Jmap(jmap.http, "isolated-other", "other-password")
    other_session = await other.session()
    assert other.account_id != jmap.account_id
    assert jmap.account_id not in other_session["accounts"]
    # the other user naming our account is refused (CORE-ERR: accountNotFound)
    body = await other.request([["Mailbox/get", {"accountId": jmap.account_id}, "g"]])
    assert body["methodResponses"][0][1]["type"] == "accountNotFound"


# -- request-level errors (CORE-ERR-01..04) -------------------------------------------------


async def test_not_json_wrong_content_type_core_err_02(jmap: Jmap) -> None:
    resp = await jmap.post({"using": [], "methodCalls": []}, content_type="text/plain")
    body = await problem_of(resp)
    assert body["type"] == RequestErrorType.NOT_JSON.value


@pytest.mark.parametrize("raw", [b"{", b"\xff\xfe", b'{"using": [], "using": []}', b"NaN"])
async def test_not_json_bodies_core_err_02(jmap: Jmap, raw: bytes) -> None:
    body = await problem_of(await jmap.post(None, raw=raw))
    assert body["type"] == RequestErrorType.NOT_JSON.value


@pytest.mark.parametrize(
    "request_body",
    [
        {"foo": 1},
        [],
        {"using": "x", "methodCalls": []},
        {"using": [], "methodCalls": {}},
        {"using": [], "methodCalls": [["Core/echo", {}]]},
        {"using": [], "methodCalls": [["Core/echo", [], "a"]]},
    ],
)
async def test_not_request_core_err_03(jmap: Jmap, request_body: Any) -> None:
    body = await problem_of(await jmap.post(request_body))
    assert body["type"] == RequestErrorType.NOT_REQUEST.value


async def test_unknown_capability_core_err_01(jmap: Jmap) -> None:
    resp = await jmap.post({"using": [CORE, "urn:example:nope"], "methodCalls": []})
    body = await problem_of(resp)
    assert body["type"] == RequestErrorType.UNKNOWN_CAPABILITY.value
    assert "urn:example:nope" in body["detail"]


async def test_limit_max_calls_in_request_core_err_04(jmap: Jmap) -> None:
    calls = [["Core/echo", {}, str(i)] for i in range(33)]
    body = await problem_of(await jmap.post({"using": [CORE], "methodCalls": calls}))
    assert body["type"] == RequestErrorType.LIMIT.value
    assert body["limit"] == "maxCallsInRequest"


async def test_limit_max_size_request_core_err_04(jmap: Jmap) -> None:
    huge = {"using": [CORE], "methodCalls": [["Core/echo", {"x": "y" * 10_000_001}, "0"]]}
    body = await problem_of(await jmap.post(huge))
    assert body["type"] == RequestErrorType.LIMIT.value
    assert body["limit"] == "maxSizeRequest"


def _slow_echo(monkeypatch: pytest.MonkeyPatch) -> tuple[asyncio.Event, list[int]]:
    """Failure injection: a Core/echo that waits for the returned event, so requests
    overlap for certain; the list counts the echoes started."""
    release = asyncio.Event()
    started: list[int] = []

    async def slow_echo(ctx: Any, call: Call) -> dict[str, Any]:
        started.append(1)
        await release.wait()
        return call.args

    registry = dict(views.REGISTRY)
    registry["Core/echo"] = MethodSpec(slow_echo, CORE, takes_account=False)
    monkeypatch.setattr(views, "REGISTRY", registry)
    return release, started


async def test_requests_over_the_limit_wait_for_a_slot_core_err_04(
    jmap: Jmap, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A webmail's burst: more requests than maxConcurrentRequests at once all succeed,
    the ones over the limit waiting for a slot instead of failing at once."""
    release, started = _slow_echo(monkeypatch)
    limit = (await jmap.session())["capabilities"][CORE]["maxConcurrentRequests"]
    assert limit >= 8  # what a browser opens over HTTP/1.1 (6 connections) fits
    body = {"using": [CORE], "methodCalls": [["Core/echo", {}, "0"]]}
    burst = [asyncio.create_task(jmap.post(body)) for _ in range(limit + 3)]
    async with asyncio.timeout(10):
        while len(started) < limit:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    assert len(started) == limit  # the rest wait
    release.set()
    statuses = [(await t).status for t in burst]
    assert statuses == [200] * (limit + 3)
    assert len(started) == limit + 3


async def test_limit_max_concurrent_requests_after_the_wait_core_err_04(
    imap_user: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, proxy_client: ProxyClient
) -> None:
    cfg = proxy_config(imap_user, tmp_path)
    limits = dataclasses.replace(
        cfg.limits, max_concurrent_requests=4, concurrent_request_wait_seconds=0.3
    )
    async with proxy_client(dataclasses.replace(cfg, limits=limits)) as http:
        jmap = Jmap(http, imap_user.username, imap_user.password)
        release, started = _slow_echo(monkeypatch)
        body = {"using": [CORE], "methodCalls": [["Core/echo", {}, "0"]]}
        waiting = [asyncio.create_task(jmap.post(body)) for _ in range(4)]
        async with asyncio.timeout(10):
            while len(started) < 4:
                await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        before = loop.time()
        extra = await jmap.post(body)
        assert loop.time() - before >= 0.3
        problem = await problem_of(extra)
        assert problem["type"] == RequestErrorType.LIMIT.value
        assert problem["limit"] == "maxConcurrentRequests"
        assert extra.headers["Retry-After"] == "1"
        release.set()
        statuses = sorted([(await t).status for t in waiting])
        assert statuses == [200, 200, 200, 200]


async def test_one_accounts_queue_never_delays_another_account(
    jmap: Jmap, imap_backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Account A holds every slot and fills its queue; account B's request runs at once."""
    release = asyncio.Event()
    started: list[str] = []

    async def echo_holding_a(ctx: Any, call: Call) -> dict[str, Any]:
        started.append(ctx.account.account_id)
        if ctx.account.account_id == jmap.account_id:
            await release.wait()
        return call.args

    registry = dict(views.REGISTRY)
    registry["Core/echo"] = MethodSpec(echo_holding_a, CORE, takes_account=False)
    monkeypatch.setattr(views, "REGISTRY", registry)
    other_name, other_password = f"bob-{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    imap_backend.add_user(other_name, other_password)
    bob = Jmap(jmap.http, other_name, other_password)
    await bob.session()
    # on several instances the limit holds over all of them, and A's requests queue on each
    every_slots = [app[views.REQUEST_SLOTS] for app in apps_of(jmap.http)]
    limit = every_slots[0].limit

    def waiting() -> int:
        return sum(slots.waiting(jmap.account_id) for slots in every_slots)

    body = {"using": [CORE], "methodCalls": [["Core/echo", {}, "0"]]}
    burst = [asyncio.create_task(jmap.post(body)) for _ in range(limit + 5)]
    async with asyncio.timeout(10):
        while waiting() < 5:
            await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    before = loop.time()
    resp = await bob.post(body)
    assert resp.status == 200, await resp.text()
    assert loop.time() - before < 2.0  # far below A's 5 s wait
    assert waiting() == 5  # A still queued meanwhile
    release.set()
    assert [(await t).status for t in burst] == [200] * (limit + 5)


# -- method-level errors (CORE-ERR-10 and §3.6.2) ---------------------------------------------


async def test_unknown_method_and_processing_continues_core_err_10(jmap: Jmap) -> None:
    body = await jmap.request(
        [
            ["Nope/nothing", {}, "a"],
            ["Core/echo", {"hello": True}, "b"],
        ]
    )
    first, second = body["methodResponses"]
    assert first == ["error", {"type": "unknownMethod"}, "a"] or (
        first[0] == "error" and first[1]["type"] == "unknownMethod" and first[2] == "a"
    )
    assert second == ["Core/echo", {"hello": True}, "b"]


async def test_method_of_capability_not_in_using_is_unknown_core_req_06(jmap: Jmap) -> None:
    """Without core in ``using`` a method of another capability does not exist (with core,
    see test_lenient_answers: the account's capabilities are answered)."""
    submission = "urn:ietf:params:jmap:submission"
    body = await jmap.request(
        [["Mailbox/get", {"accountId": jmap.account_id}, "a"]], using=[submission]
    )
    assert body["methodResponses"][0][1]["type"] == "unknownMethod"


async def test_empty_using_still_answers_core_req_06(jmap: Jmap) -> None:
    resp = await jmap.post({"using": [], "methodCalls": [["Core/echo", {}, "a"]]})
    assert resp.status == 200
    body = await resp.json()
    assert body["methodResponses"][0][1]["type"] == "unknownMethod"


async def test_missing_account_id_is_invalid_arguments(jmap: Jmap) -> None:
    body = await jmap.request([["Mailbox/get", {}, "a"]])
    assert body["methodResponses"][0][1]["type"] == "invalidArguments"


async def test_unknown_account_is_account_not_found(jmap: Jmap) -> None:
    body = await jmap.request([["Mailbox/get", {"accountId": "Anotmine"}, "a"]])
    assert body["methodResponses"][0][1]["type"] == "accountNotFound"


async def test_unknown_argument_is_invalid_arguments(jmap: Jmap) -> None:
    name, args = await jmap.call("Mailbox/get", {"bogus": 1})
    assert (name, args["type"]) == ("error", "invalidArguments")


async def test_request_too_large_for_get(jmap: Jmap) -> None:
    ids = [f"M{i}" for i in range(1001)]
    name, args = await jmap.call("Mailbox/get", {"ids": ids})
    assert (name, args["type"]) == ("error", "requestTooLarge")


async def test_state_mismatch_on_set_core_set_01(jmap: Jmap) -> None:
    name, args = await jmap.call(
        "Mailbox/set", {"ifInState": "not-the-state", "create": {"a": {"name": "never"}}}
    )
    assert (name, args["type"]) == ("error", "stateMismatch")
    listed = await jmap.ok("Mailbox/get", {"properties": ["name"]})
    assert "never" not in {m["name"] for m in listed["list"]}


async def test_cannot_calculate_changes_for_garbage_state_core_chg_04(jmap: Jmap) -> None:
    name, args = await jmap.call("Mailbox/changes", {"sinceState": "garbage"})
    assert (name, args["type"]) == ("error", "cannotCalculateChanges")


async def test_max_changes_zero_is_invalid_arguments(jmap: Jmap) -> None:
    state = (await jmap.ok("Mailbox/get", {"ids": []}))["state"]
    name, args = await jmap.call("Mailbox/changes", {"sinceState": state, "maxChanges": 0})
    assert (name, args["type"]) == ("error", "invalidArguments")


async def test_server_fail_never_leaks_a_traceback(
    jmap: Jmap, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(ctx: Any, call: Call) -> dict[str, Any]:
        raise RuntimeError("secret internal detail")

    registry = dict(views.REGISTRY)
    registry["Core/echo"] = MethodSpec(broken, CORE, takes_account=False)
    monkeypatch.setattr(views, "REGISTRY", registry)
    body = await jmap.request(
        [["Core/echo", {}, "a"], ["Mailbox/get", {"accountId": jmap.account_id, "ids": []}, "b"]]
    )
    error = body["methodResponses"][0]
    assert error[0] == "error" and error[1]["type"] == "serverFail"
    assert "secret" not in json.dumps(body)
    assert body["methodResponses"][1][0] == "Mailbox/get"


# -- result references (CORE-REF-*) -----------------------------------------------------------


async def test_result_reference_query_to_get_core_ref_02(jmap: Jmap) -> None:
    body = await jmap.request(
        [
            ["Mailbox/query", {"accountId": jmap.account_id}, "q"],
            [
                "Mailbox/get",
                {
                    "accountId": jmap.account_id,
                    "#ids": {"resultOf": "q", "name": "Mailbox/query", "path": "/ids"},
                },
                "g",
            ],
        ]
    )
    query, get = body["methodResponses"]
    assert [m["id"] for m in get[1]["list"]] == query[1]["ids"]


async def test_result_reference_star_flattening_core_ref_03(jmap: Jmap) -> None:
    body = await jmap.request(
        [
            ["Mailbox/get", {"accountId": jmap.account_id}, "g"],
            [
                "Core/echo",
                {"#names": {"resultOf": "g", "name": "Mailbox/get", "path": "/list/*/name"}},
                "e",
            ],
        ]
    )
    get, echo = body["methodResponses"]
    assert echo[1]["names"] == [m["name"] for m in get[1]["list"]]


@pytest.mark.parametrize(
    "ref",
    [
        {"resultOf": "missing", "name": "Mailbox/query", "path": "/ids"},
        {"resultOf": "q", "name": "Mailbox/get", "path": "/ids"},
        {"resultOf": "q", "name": "Mailbox/query", "path": "/nope"},
        {"resultOf": "q", "name": "Mailbox/query", "path": "/ids/*/x"},
        {"resultOf": "q", "name": "Mailbox/query"},
    ],
)
async def test_result_reference_failures_core_ref_04(jmap: Jmap, ref: dict[str, Any]) -> None:
    body = await jmap.request(
        [
            ["Mailbox/query", {"accountId": jmap.account_id}, "q"],
            ["Mailbox/get", {"accountId": jmap.account_id, "#ids": ref}, "g"],
        ]
    )
    assert body["methodResponses"][1][1]["type"] == "invalidResultReference"


async def test_reference_to_an_error_response_fails_core_ref_06(jmap: Jmap) -> None:
    body = await jmap.request(
        [
            ["Mailbox/query", {"accountId": "nope"}, "q"],
            [
                "Mailbox/get",
                {
                    "accountId": jmap.account_id,
                    "#ids": {"resultOf": "q", "name": "Mailbox/query", "path": "/ids"},
                },
                "g",
            ],
        ]
    )
    assert body["methodResponses"][1][1]["type"] == "invalidResultReference"


async def test_both_plain_and_referenced_argument_core_ref_05(jmap: Jmap) -> None:
    body = await jmap.request(
        [
            ["Mailbox/query", {"accountId": jmap.account_id}, "q"],
            [
                "Mailbox/get",
                {
                    "accountId": jmap.account_id,
                    "ids": [],
                    "#ids": {"resultOf": "q", "name": "Mailbox/query", "path": "/ids"},
                },
                "g",
            ],
        ]
    )
    assert body["methodResponses"][1][1]["type"] == "invalidArguments"


# -- creation ids (CORE-CID-*) ----------------------------------------------------------------


async def test_creation_ids_within_and_across_calls_core_cid_01_03(
    jmap: Jmap, imap_oracle: Any
) -> None:
    body = await jmap.request(
        [
            [
                "Mailbox/set",
                {
                    "accountId": jmap.account_id,
                    "create": {
                        "kid": {"name": "Kid", "parentId": "#top"},
                        "top": {"name": "Top"},
                    },
                },
                "s1",
            ],
            [
                "Mailbox/set",
                {
                    "accountId": jmap.account_id,
                    "create": {"grandkid": {"name": "Grandkid", "parentId": "#kid"}},
                },
                "s2",
            ],
            [
                "Mailbox/get",
                {"accountId": jmap.account_id, "ids": ["#top", "#kid", "#grandkid"]},
                "g",
            ],
        ],
        createdIds={"seed": "Mseeded"},
    )
    s1, s2, get = body["methodResponses"]
    assert set(s1[1]["created"]) == {"top", "kid"}, s1
    assert set(s2[1]["created"]) == {"grandkid"}, s2
    top, kid = s1[1]["created"]["top"]["id"], s1[1]["created"]["kid"]["id"]
    grandkid = s2[1]["created"]["grandkid"]["id"]
    assert body["createdIds"] == {"seed": "Mseeded", "top": top, "kid": kid, "grandkid": grandkid}
    assert get[0] == "Mailbox/get", get
    got = {m["id"]: m for m in get[1]["list"]}
    assert got[kid]["parentId"] == top and got[grandkid]["parentId"] == kid
    typ, data = imap_oracle.list()
    assert typ == "OK"
    names = b"\n".join(data)
    assert b'"Top/Kid/Grandkid"' in names or b"Top/Kid/Grandkid" in names


async def test_created_ids_absent_when_not_sent_core_req_04(jmap: Jmap) -> None:
    body = await jmap.request([["Core/echo", {}, "a"]])
    assert "createdIds" not in body


async def test_unknown_creation_id_reference_fails_the_record_core_cid_05(jmap: Jmap) -> None:
    result = await jmap.ok("Mailbox/set", {"create": {"x": {"name": "X", "parentId": "#nothere"}}})
    assert result["notCreated"]["x"]["type"] == "invalidProperties"
