"""jmap.refs: result references (RFC 8620 §3.7, CORE-REF-01..06) and JSON Pointer."""

from __future__ import annotations

from typing import Any

import pytest

from imapjmap.jmap.errors import MethodError, MethodErrorType
from imapjmap.jmap.refs import PointerError, evaluate_pointer, resolve_references
from imapjmap.jmap.request import Invocation

QUERY = Invocation("Email/query", {"accountId": "A", "ids": ["e1", "e2"], "total": 2}, "q")
GET = Invocation(
    "Email/get",
    {
        "list": [
            {"id": "e1", "threadId": "t1", "mailboxIds": {"m1": True}},
            {"id": "e2", "threadId": "t2", "mailboxIds": {"m2": True}},
        ]
    },
    "g",
)
THREADS = Invocation(
    "Thread/get",
    {"list": [{"id": "t1", "emailIds": ["e1", "e3"]}, {"id": "t2", "emailIds": []}]},
    "t",
)
ODD = Invocation("Foo/get", {"a/b": 1, "m~n": 2, "": 3, "*": 4, "x": [[1, 2], 3, [4]]}, "o")
ERROR = Invocation("error", {"type": "serverFail"}, "e")
PREVIOUS = [QUERY, GET, THREADS, ODD, ERROR]


def ref(result_of: str, name: str, path: str) -> dict[str, Any]:
    return {"resultOf": result_of, "name": name, "path": path}


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        pytest.param(ref("q", "Email/query", "/ids"), ["e1", "e2"], id="CORE-REF-02-ids"),
        pytest.param(ref("q", "Email/query", ""), QUERY.args, id="whole-document"),
        pytest.param(ref("g", "Email/get", "/list/*/threadId"), ["t1", "t2"], id="star-map"),
        pytest.param(ref("g", "Email/get", "/list/1/id"), "e2", id="index"),
        pytest.param(
            ref("t", "Thread/get", "/list/*/emailIds"), ["e1", "e3"], id="CORE-REF-03-flatten"
        ),
        pytest.param(ref("o", "Foo/get", "/x/*"), [1, 2, 3, 4], id="flatten-mixed"),
        pytest.param(ref("o", "Foo/get", "/a~1b"), 1, id="escape-~1"),
        pytest.param(ref("o", "Foo/get", "/m~0n"), 2, id="escape-~0"),
        pytest.param(ref("o", "Foo/get", "/"), 3, id="empty-member-name"),
        pytest.param(ref("o", "Foo/get", "/*"), 4, id="star-is-a-name-on-objects"),
        pytest.param(
            ref("g", "Email/get", "/list/*/mailboxIds"),
            [{"m1": True}, {"m2": True}],
            id="star-objects-not-flattened",
        ),
    ],
)
def test_resolves_core_ref_01_to_03(reference: dict[str, Any], expected: Any) -> None:
    resolved = resolve_references({"accountId": "A", "#ids": reference}, PREVIOUS)
    assert resolved == {"accountId": "A", "ids": expected}


@pytest.mark.parametrize(
    "reference",
    [
        pytest.param(ref("nope", "Email/query", "/ids"), id="no-such-call-id"),
        pytest.param(ref("q", "Email/get", "/ids"), id="wrong-name"),
        pytest.param(ref("e", "error", "/type"), id="CORE-REF-06-error-response"),
        pytest.param(ref("e", "Email/get", "/type"), id="CORE-REF-06-error-by-other-name"),
        pytest.param(ref("q", "Email/query", "/missing"), id="missing-member"),
        pytest.param(ref("q", "Email/query", "ids"), id="no-leading-slash"),
        pytest.param(ref("q", "Email/query", "/ids/2"), id="index-out-of-range"),
        pytest.param(ref("q", "Email/query", "/ids/-"), id="dash-index"),
        pytest.param(ref("q", "Email/query", "/ids/01"), id="leading-zero"),
        pytest.param(ref("q", "Email/query", "/ids/x"), id="non-numeric-index"),
        pytest.param(ref("q", "Email/query", "/total/*"), id="star-on-number"),
        pytest.param(ref("q", "Email/query", "/accountId/x"), id="into-string"),
        pytest.param(ref("o", "Foo/get", "/m~2n"), id="bad-escape"),
        pytest.param(ref("o", "Foo/get", "/m~"), id="trailing-tilde"),
        pytest.param(ref("g", "Email/get", "/list/*/nope"), id="star-then-missing"),
        pytest.param({"resultOf": "q", "name": "Email/query"}, id="malformed-missing-path"),
        pytest.param({**ref("q", "Email/query", "/ids"), "extra": 1}, id="malformed-extra-key"),
        pytest.param({"resultOf": "q", "name": "Email/query", "path": 1}, id="malformed-int"),
        pytest.param(["q", "Email/query", "/ids"], id="malformed-array"),
        pytest.param(None, id="malformed-null"),
    ],
)
def test_failures_are_invalid_result_reference_core_ref_04(reference: Any) -> None:
    with pytest.raises(MethodError) as info:
        resolve_references({"#ids": reference}, PREVIOUS)
    assert info.value.type is MethodErrorType.INVALID_RESULT_REFERENCE
    assert info.value.description and info.value.description.startswith("#ids: ")


def test_both_name_and_hash_name_is_invalid_arguments_core_ref_05() -> None:
    with pytest.raises(MethodError) as info:
        resolve_references({"ids": [], "#ids": ref("q", "Email/query", "/ids")}, PREVIOUS)
    assert info.value.type is MethodErrorType.INVALID_ARGUMENTS


def test_bare_hash_is_invalid_result_reference() -> None:
    with pytest.raises(MethodError) as info:
        resolve_references({"#": ref("q", "Email/query", "/ids")}, PREVIOUS)
    assert info.value.type is MethodErrorType.INVALID_RESULT_REFERENCE


def test_first_response_with_the_call_id_is_used_core_ref_02() -> None:
    # EmailSubmission/set followed by its implicit Email/set: both carry call id "s".
    previous = [
        Invocation("EmailSubmission/set", {"created": {"k": {"id": "S1"}}}, "s"),
        Invocation("Email/set", {"updated": {"e1": None}}, "s"),
    ]
    assert resolve_references(
        {"#x": ref("s", "EmailSubmission/set", "/created/k/id")}, previous
    ) == {"x": "S1"}
    with pytest.raises(MethodError):
        resolve_references({"#x": ref("s", "Email/set", "/updated")}, previous)


def test_several_references_and_plain_arguments_keep_their_values() -> None:
    resolved = resolve_references(
        {
            "accountId": "A",
            "#ids": ref("q", "Email/query", "/ids"),
            "#properties": ref("o", "Foo/get", "/x/1"),
        },
        PREVIOUS,
    )
    assert resolved == {"accountId": "A", "ids": ["e1", "e2"], "properties": 3}


def test_arguments_without_references_are_returned_as_is() -> None:
    args = {"accountId": "A"}
    assert resolve_references(args, PREVIOUS) is args


def test_resolved_values_are_copies() -> None:
    args = {"#ids": ref("q", "Email/query", "/ids")}
    resolved = resolve_references(args, PREVIOUS)
    resolved["ids"].append("zzz")
    assert QUERY.args["ids"] == ["e1", "e2"]
    assert "#ids" in args  # the input is untouched


@pytest.mark.parametrize("path", ["/a/", "x", "/a/b/c"])
def test_pointer_errors_are_pointer_error(path: str) -> None:
    with pytest.raises(PointerError):
        evaluate_pointer({"a": {"b": 1}}, path)
