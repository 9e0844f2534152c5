"""jmap.dispatch: running calls in order, errors as invocations (RFC 8620 §3.3, §3.6.2)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import pytest

from imapjmap.errors import CacheCorrupt, ImapCommandFailed, ImapUnavailable, ProxyError
from imapjmap.jmap.dispatch import (
    Call,
    HandlerResult,
    MethodSpec,
    UnknownCreationId,
    resolve_creation_id,
    run,
)
from imapjmap.jmap.errors import MethodError, MethodErrorType, SetErrorType
from imapjmap.jmap.request import Invocation, Request
from imapjmap.jmap.wire import CORE, MAIL, SUBMISSION, JsonObject
from imapjmap.store.db import TransactionTooLong


@dataclass
class Ctx:
    seen: list[Call] = field(default_factory=list)


async def echo(ctx: Ctx, call: Call) -> HandlerResult:
    ctx.seen.append(call)
    return call.args


async def query(ctx: Ctx, call: Call) -> HandlerResult:
    ctx.seen.append(call)
    return {"accountId": call.account_id, "ids": ["e1", "e2"]}


async def get(ctx: Ctx, call: Call) -> HandlerResult:
    ctx.seen.append(call)
    return {"accountId": call.account_id, "list": [{"id": i} for i in call.args.get("ids", [])]}


async def create(ctx: Ctx, call: Call) -> HandlerResult:
    ctx.seen.append(call)
    for creation_id in call.args["create"]:
        call.created_ids[creation_id] = "X" + creation_id
    return {"created": {k: {"id": "X" + k} for k in call.args["create"]}}


async def submit(ctx: Ctx, call: Call) -> HandlerResult:
    return [("EmailSubmission/set", {"created": {}}), ("Email/set", {"updated": {}})]


async def raise_method_error(ctx: Ctx, call: Call) -> HandlerResult:
    raise MethodError(MethodErrorType.STATE_MISMATCH, "nope")


async def raise_no(ctx: Ctx, call: Call) -> HandlerResult:
    raise ImapCommandFailed("SELECT", "NONEXISTENT", "secret upstream text")


async def raise_unavailable(ctx: Ctx, call: Call) -> HandlerResult:
    raise ImapUnavailable("imap.example: connection refused")


async def raise_corrupt(ctx: Ctx, call: Call) -> HandlerResult:
    raise CacheCorrupt("row 7 is broken")


class WeirdHint(ProxyError):
    jmap_hint = "notAnErrorType"


async def raise_weird(ctx: Ctx, call: Call) -> HandlerResult:
    raise WeirdHint("odd")


async def raise_too_long(ctx: Ctx, call: Call) -> HandlerResult:
    raise TransactionTooLong(2.5)


async def raise_bug(ctx: Ctx, call: Call) -> HandlerResult:
    raise KeyError("Traceback secret")


async def return_garbage(ctx: Ctx, call: Call) -> HandlerResult:
    return "not a dict"  # type: ignore[return-value]


async def cancelled(ctx: Ctx, call: Call) -> HandlerResult:
    raise asyncio.CancelledError


REGISTRY: dict[str, MethodSpec[Ctx]] = {
    "Core/echo": MethodSpec(echo, CORE, takes_account=False),
    "Email/query": MethodSpec(query, MAIL),
    "Email/get": MethodSpec(get, MAIL),
    "Mailbox/set": MethodSpec(create, MAIL),
    "EmailSubmission/set": MethodSpec(submit, SUBMISSION),
    "Test/stateMismatch": MethodSpec(raise_method_error, MAIL),
    "Test/no": MethodSpec(raise_no, MAIL),
    "Test/unavailable": MethodSpec(raise_unavailable, MAIL),
    "Test/corrupt": MethodSpec(raise_corrupt, MAIL),
    "Test/weird": MethodSpec(raise_weird, MAIL),
    "Test/bug": MethodSpec(raise_bug, MAIL),
    "Test/tooLong": MethodSpec(raise_too_long, MAIL),
    "Test/garbage": MethodSpec(return_garbage, MAIL),
    "Test/cancelled": MethodSpec(cancelled, MAIL),
}
ACCOUNTS = {"A": frozenset({CORE, MAIL, SUBMISSION}), "B": frozenset({CORE})}
USING = frozenset({CORE, MAIL, SUBMISSION})


async def call(
    *calls: tuple[str, JsonObject, str],
    using: frozenset[str] = USING,
    created_ids: dict[str, str] | None = None,
    ctx: Ctx | None = None,
) -> JsonObject:
    request = Request(using, [Invocation(*c) for c in calls], created_ids)
    return await run(request, ctx or Ctx(), REGISTRY, ACCOUNTS, "sess1")


def errors(response: JsonObject) -> list[str | None]:
    return [r[1]["type"] if r[0] == "error" else None for r in response["methodResponses"]]


async def test_echo_round_trip_core_echo_01() -> None:
    response = await call(("Core/echo", {"hello": [1, {"a": None}]}, "c1"))
    assert response == {
        "methodResponses": [["Core/echo", {"hello": [1, {"a": None}]}, "c1"]],
        "sessionState": "sess1",
    }


async def test_calls_run_in_order_and_continue_after_errors_core_req_03_core_err_10() -> None:
    ctx = Ctx()
    response = await call(
        ("Email/query", {"accountId": "A"}, "0"),
        ("Nope/nope", {"accountId": "A"}, "1"),
        ("Test/stateMismatch", {"accountId": "A"}, "2"),
        ("Core/echo", {}, "3"),
        ctx=ctx,
    )
    assert [r[2] for r in response["methodResponses"]] == ["0", "1", "2", "3"]
    assert errors(response) == [None, "unknownMethod", "stateMismatch", None]
    assert response["methodResponses"][2][1] == {"type": "stateMismatch", "description": "nope"}
    assert [c.name for c in ctx.seen] == ["Email/query", "Core/echo"]


@pytest.mark.parametrize(
    ("using", "args", "expected"),
    [
        # core in using, the account supports the capability: answered (dispatch Rule 2)
        pytest.param({CORE}, {"accountId": "A"}, None, id="core-only"),
        pytest.param({CORE, SUBMISSION}, {"accountId": "A"}, None, id="core-and-another"),
        # anything short of that stays unknownMethod (CORE-REQ-06)
        pytest.param({SUBMISSION}, {"accountId": "A"}, "unknownMethod", id="no-core"),
        pytest.param(set(), {"accountId": "A"}, "unknownMethod", id="empty-using"),
        pytest.param({CORE}, {"accountId": "B"}, "unknownMethod", id="account-lacks-it"),
        pytest.param({CORE}, {"accountId": "Z"}, "unknownMethod", id="unknown-account"),
        pytest.param({CORE}, {}, "unknownMethod", id="no-account"),
        pytest.param({CORE}, {"accountId": 7}, "unknownMethod", id="account-not-a-string"),
    ],
)
async def test_capability_not_in_using_core_req_06(
    using: set[str], args: JsonObject, expected: str | None
) -> None:
    ctx = Ctx()
    response = await call(("Email/query", args, "0"), using=frozenset(using), ctx=ctx)
    assert errors(response) == [expected]
    assert len(ctx.seen) == (expected is None)
    if expected is not None:
        assert "is not in 'using'" in response["methodResponses"][0][1]["description"]


async def test_capability_not_in_using_is_logged_once_per_account(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="imapjmap.jmap.dispatch")
    accounts = {"lenient1": ACCOUNTS["A"], "lenient2": ACCOUNTS["A"]}
    for account in ("lenient1", "lenient1", "lenient2", "lenient1"):
        request = Request(
            frozenset({CORE}),
            [Invocation("Email/query", {"accountId": account}, "0")],
            None,
        )
        response = await run(request, Ctx(), REGISTRY, accounts, "sess1")
        assert errors(response) == [None]
    lines = [r for r in caplog.records if "answered anyway" in r.getMessage()]
    assert [r.levelno for r in lines] == [logging.DEBUG, logging.DEBUG]
    assert [r.getMessage().split()[1] for r in lines] == ["lenient1", "lenient2"]


async def test_empty_using_gives_unknown_method_for_every_call_core_req_06() -> None:
    response = await call(("Core/echo", {}, "0"), ("Email/get", {}, "1"), using=frozenset())
    assert errors(response) == ["unknownMethod", "unknownMethod"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param({}, "invalidArguments", id="missing"),
        pytest.param({"accountId": None}, "invalidArguments", id="null"),
        pytest.param({"accountId": 1}, "invalidArguments", id="int"),
        pytest.param({"accountId": "Z"}, "accountNotFound", id="unknown"),
        pytest.param({"accountId": "B"}, "accountNotSupportedByMethod", id="no-capability"),
        pytest.param({"accountId": "A"}, None, id="ok"),
    ],
)
async def test_account_checks(args: JsonObject, expected: str | None) -> None:
    assert errors(await call(("Email/get", args, "0"))) == [expected]


async def test_call_carries_validated_account_and_using() -> None:
    ctx = Ctx()
    await call(("Email/get", {"accountId": "A"}, "0"), ("Core/echo", {}, "1"), ctx=ctx)
    assert [(c.account_id, c.call_id, c.using) for c in ctx.seen] == [
        ("A", "0", USING),
        (None, "1", USING),
    ]


async def test_result_references_between_calls_core_ref_01() -> None:
    response = await call(
        ("Email/query", {"accountId": "A"}, "q"),
        (
            "Email/get",
            {"accountId": "A", "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"}},
            "g",
        ),
    )
    assert response["methodResponses"][1] == [
        "Email/get",
        {"accountId": "A", "list": [{"id": "e1"}, {"id": "e2"}]},
        "g",
    ]


async def test_bad_reference_and_reference_to_error_core_ref_04_core_ref_06() -> None:
    response = await call(
        ("Test/stateMismatch", {"accountId": "A"}, "x"),
        ("Email/get", {"accountId": "A", "#ids": {"resultOf": "x", "name": "Test/stateMismatch",
                                                  "path": "/ids"}}, "g"),
        ("Email/get", {"accountId": "A", "#ids": {"resultOf": "x", "name": "error",
                                                  "path": "/type"}}, "h"),
        ("Email/get", {"accountId": "A", "ids": [], "#ids": {}}, "i"),
    )  # fmt: skip
    assert errors(response) == [
        "stateMismatch",
        "invalidResultReference",
        "invalidResultReference",
        "invalidArguments",
    ]


async def test_reference_resolution_comes_before_the_method_lookup() -> None:
    response = await call(("Nope/nope", {"#ids": {"resultOf": "zz", "name": "A", "path": ""}}, "0"))
    assert errors(response) == ["invalidResultReference"]


async def test_several_responses_share_the_call_id_core_req_03() -> None:
    response = await call(("EmailSubmission/set", {"accountId": "A"}, "s"))
    assert response["methodResponses"] == [
        ["EmailSubmission/set", {"created": {}}, "s"],
        ["Email/set", {"updated": {}}, "s"],
    ]


async def test_created_ids_one_map_per_request_core_cid_02_core_req_04() -> None:
    ctx = Ctx()
    response = await call(
        ("Mailbox/set", {"accountId": "A", "create": {"k1": {}}}, "0"),
        ("Mailbox/set", {"accountId": "A", "create": {"k2": {}, "old": {}}}, "1"),
        created_ids={"old": "M0", "seed": "M9"},
        ctx=ctx,
    )
    assert ctx.seen[0].created_ids is ctx.seen[1].created_ids
    assert response["createdIds"] == {"old": "Xold", "seed": "M9", "k1": "Xk1", "k2": "Xk2"}


async def test_created_ids_absent_unless_requested_core_req_04() -> None:
    ctx = Ctx()
    response = await call(("Mailbox/set", {"accountId": "A", "create": {"k1": {}}}, "0"), ctx=ctx)
    assert "createdIds" not in response
    assert ctx.seen[0].created_ids == {"k1": "Xk1"}


async def test_created_ids_seed_is_not_mutated() -> None:
    seed = {"a": "M1"}
    response = await call(
        ("Mailbox/set", {"accountId": "A", "create": {"b": {}}}, "0"), created_ids=seed
    )
    assert seed == {"a": "M1"}
    assert response["createdIds"] == {"a": "M1", "b": "Xb"}


@pytest.mark.parametrize(
    ("method", "expected_type", "leaked"),
    [
        pytest.param("Test/no", "serverFail", "secret upstream text", id="imap-no"),
        pytest.param("Test/unavailable", "serverUnavailable", "connection refused", id="down"),
        pytest.param("Test/corrupt", "serverFail", "row 7", id="cache-corrupt"),
        pytest.param("Test/weird", "serverFail", "odd", id="unknown-hint"),
        pytest.param("Test/bug", "serverFail", "Traceback", id="bug"),
        pytest.param("Test/garbage", "serverFail", "not a dict", id="bad-handler-result"),
    ],
)
async def test_exceptions_become_error_responses_without_leaking_text(
    method: str, expected_type: str, leaked: str
) -> None:
    response = await call((method, {"accountId": "A"}, "0"), ("Core/echo", {"after": 1}, "1"))
    [error, after] = response["methodResponses"]
    assert error[0] == "error" and error[2] == "0"
    assert error[1]["type"] == expected_type
    assert leaked not in repr(error)
    assert after == ["Core/echo", {"after": 1}, "1"]


async def test_proxy_error_description_names_the_class() -> None:
    response = await call(("Test/unavailable", {"accountId": "A"}, "0"))
    assert response["methodResponses"][0][1] == {
        "type": "serverUnavailable",
        "description": "ImapUnavailable",
    }


async def test_an_error_of_the_requests_own_cost_names_its_limit_without_a_traceback_core_err_10(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="imapjmap.jmap.dispatch"):
        response = await call(("Test/tooLong", {"accountId": "A"}, "0"), ("Core/echo", {}, "1"))
    error, after = response["methodResponses"]
    assert error[0] == "error" and error[1]["type"] == "serverFail"
    assert "cache.max_transaction_seconds" in error[1]["description"]
    assert "2.5 s" in error[1]["description"]
    assert after[0] == "Core/echo"
    assert caplog.records and not any(r.exc_info for r in caplog.records)


async def test_unexpected_exception_is_logged_with_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="imapjmap.jmap.dispatch"):
        await call(("Test/bug", {"accountId": "A"}, "0"))
    assert any(r.exc_info and r.exc_info[0] is KeyError for r in caplog.records)


async def test_cancellation_is_never_swallowed() -> None:
    with pytest.raises(asyncio.CancelledError):
        await call(("Test/cancelled", {"accountId": "A"}, "0"), ("Core/echo", {}, "1"))


async def test_one_log_line_per_call_with_control_characters_escaped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="imapjmap.jmap.dispatch"):
        await call(("Core/echo", {}, "evil\nline"), ("Email/get", {"accountId": "A"}, "g"))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("call ")]
    assert len(lines) == 2
    assert "\n" not in lines[0] and "evil\\nline" in lines[0] and lines[0].endswith("-> ok")
    assert "Email/get account=A" in lines[1]


def make_call(created_ids: dict[str, str]) -> Call:
    return Call("Email/set", {}, "0", "A", created_ids, USING)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("M1", "M1"), ("#k1", "Mk1"), ("#k2", "Mk2-latest")],
)
def test_resolve_creation_id_core_cid_01(value: str, expected: str) -> None:
    assert resolve_creation_id(make_call({"k1": "Mk1", "k2": "Mk2-latest"}), value) == expected


def test_unknown_creation_id_core_cid_05() -> None:
    with pytest.raises(UnknownCreationId) as info:
        resolve_creation_id(make_call({}), "#nope")
    assert info.value.creation_id == "nope"
    as_json: dict[str, Any] = info.value.set_error(
        SetErrorType.INVALID_PROPERTIES, "parentId"
    ).to_json()
    assert as_json == {
        "type": "invalidProperties",
        "description": "unknown creation id #nope",
        "properties": ["parentId"],
    }
    assert info.value.set_error(SetErrorType.NOT_FOUND).to_json()["type"] == "notFound"
    assert "properties" not in info.value.set_error(SetErrorType.NOT_FOUND).to_json()
