"""jmap.request: the Request envelope (RFC 8620 §3.3, §3.6.1; CORE-REQ-*, CORE-ERR-01..04)."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imapjmap.jmap.errors import RequestError, RequestErrorType
from imapjmap.jmap.request import Invocation, Request, parse_request, request_from_json
from imapjmap.jmap.wire import CORE, MAIL

SUPPORTED = frozenset({CORE, MAIL})


def parse(body: bytes | str | object, max_calls: int = 16) -> Request:
    if isinstance(body, str):
        body = body.encode()
    elif not isinstance(body, bytes):
        body = json.dumps(body).encode()
    return parse_request(body, supported_capabilities=SUPPORTED, max_calls=max_calls)


def error_of(body: bytes | str | object, max_calls: int = 16) -> RequestError:
    with pytest.raises(RequestError) as info:
        parse(body, max_calls)
    assert info.value.status == 400
    return info.value


def test_valid_request_core_req_01_02() -> None:
    request = parse(
        {
            "using": [CORE, MAIL, CORE],
            "methodCalls": [["Core/echo", {"x": 1}, "c0"], ["Mailbox/get", {}, "single.get"]],
            "unknownTopLevel": {"ignored": True},
        }
    )
    assert request.using == frozenset({CORE, MAIL})
    assert request.calls == [
        Invocation("Core/echo", {"x": 1}, "c0"),
        Invocation("Mailbox/get", {}, "single.get"),
    ]
    assert request.created_ids is None
    assert request.calls[0].to_json() == ["Core/echo", {"x": 1}, "c0"]


@pytest.mark.parametrize(
    ("created_ids", "expected"),
    [
        (None, None),  # null counts as absent
        ({}, {}),
        ({"k1": "M123"}, {"k1": "M123"}),
    ],
)
def test_created_ids_core_cid_04(
    created_ids: dict[str, str] | None, expected: dict[str, str] | None
) -> None:
    body: dict[str, object] = {"using": [], "methodCalls": [], "createdIds": created_ids}
    assert parse(body).created_ids == expected


def test_empty_using_is_a_request_core_req_06() -> None:
    assert parse({"using": [], "methodCalls": [["Core/echo", {}, "0"]]}).using == frozenset()


NOT_JSON = [
    pytest.param(b"\xff\xfe{}", id="not-utf8"),
    pytest.param(b'{"a": "\xed\xa0\x80"}', id="utf8-encoded-surrogate"),
    pytest.param(b"\xef\xbb\xbf{}", id="bom"),
    pytest.param(b"", id="empty"),
    pytest.param(b"{using: []}", id="not-json"),
    pytest.param(b'{"using": [], "methodCalls": []} x', id="trailing-garbage"),
    pytest.param(b'{"using": [], "using": []}', id="duplicate-key"),
    pytest.param(b'{"a": {"b": 1, "b": 2}}', id="nested-duplicate-key"),
    pytest.param(b'{"a": "\\ud800"}', id="lone-high-surrogate"),
    pytest.param(b'{"\\udc00": 1}', id="lone-surrogate-in-key"),
    pytest.param(b'[["\\udfff"]]', id="lone-surrogate-in-array"),
    pytest.param(b'{"a": NaN}', id="nan"),
    pytest.param(b'{"a": -Infinity}', id="infinity"),
    pytest.param(b'{"a": 9007199254740992}', id="int-above-2^53-1"),
    pytest.param(b'{"a": -9007199254740992}', id="int-below-minus-2^53+1"),
    pytest.param(b'{"a": 1' + b"0" * 5000 + b"}", id="huge-int"),
    pytest.param(b'{"a": 1e400}', id="float-overflow"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deep-nesting"),
]


@pytest.mark.parametrize("body", NOT_JSON)
def test_not_json_core_err_02_core_type_04(body: bytes) -> None:
    assert error_of(body).type is RequestErrorType.NOT_JSON


def test_i_json_edges_are_accepted_core_type_04() -> None:
    body = b'{"using": [], "methodCalls": [["A/b", {"n": 9007199254740991, "m": -9007199254740991,'
    body += b' "f": 1.5e300, "s": "\\ud83d\\ude00"}, "0"]]}'
    args = parse(body).calls[0].args
    assert args == {"n": 2**53 - 1, "m": -(2**53) + 1, "f": 1.5e300, "s": "\U0001f600"}


NOT_REQUEST = [
    pytest.param([], id="array"),
    pytest.param('"using"', id="string"),
    pytest.param({"foo": 1}, id="no-members"),
    pytest.param({"methodCalls": []}, id="no-using"),
    pytest.param({"using": []}, id="no-methodCalls"),
    pytest.param({"using": CORE, "methodCalls": []}, id="using-string"),
    pytest.param({"using": [CORE, 1], "methodCalls": []}, id="using-non-string"),
    pytest.param({"using": [], "methodCalls": {}}, id="methodCalls-object"),
    pytest.param({"using": [], "methodCalls": [["Core/echo", {}]]}, id="pair"),
    pytest.param({"using": [], "methodCalls": [["Core/echo", {}, "0", 1]]}, id="quad"),
    pytest.param({"using": [], "methodCalls": [[1, {}, "0"]]}, id="name-int"),
    pytest.param({"using": [], "methodCalls": [["A/b", [], "0"]]}, id="args-array"),
    pytest.param({"using": [], "methodCalls": [["A/b", None, "0"]]}, id="args-null"),
    pytest.param({"using": [], "methodCalls": [["A/b", {}, 0]]}, id="call-id-int"),
    pytest.param({"using": [], "methodCalls": ["A/b"]}, id="call-not-array"),
    pytest.param({"using": [], "methodCalls": [], "createdIds": []}, id="createdIds-array"),
    pytest.param({"using": [], "methodCalls": [], "createdIds": {"k": 1}}, id="createdIds-int"),
    pytest.param({"using": [], "methodCalls": [], "createdIds": {"k": "a b"}}, id="bad-id"),
    pytest.param({"using": [], "methodCalls": [], "createdIds": {"": "x"}}, id="bad-cid"),
]


@pytest.mark.parametrize("body", NOT_REQUEST)
def test_not_request_core_err_03(body: object) -> None:
    assert error_of(body).type is RequestErrorType.NOT_REQUEST


def test_unknown_capability_core_err_01_names_it() -> None:
    error = error_of({"using": [CORE, "urn:example:nope"], "methodCalls": []})
    assert error.type is RequestErrorType.UNKNOWN_CAPABILITY
    assert "urn:example:nope" in error.detail
    assert error.to_json()["type"] == "urn:ietf:params:jmap:error:unknownCapability"


@pytest.mark.parametrize(("calls", "fails"), [(3, False), (4, True)])
def test_max_calls_in_request_core_err_04(calls: int, fails: bool) -> None:
    body = {"using": [], "methodCalls": [["Core/echo", {}, str(i)] for i in range(calls)]}
    if not fails:
        assert len(parse(body, max_calls=3).calls) == calls
        return
    error = error_of(body, max_calls=3)
    assert error.type is RequestErrorType.LIMIT
    assert error.limit == "maxCallsInRequest"
    assert error.to_json()["limit"] == "maxCallsInRequest"


@given(st.binary(max_size=200))
def test_arbitrary_bytes_give_a_request_or_a_request_error(body: bytes) -> None:
    with contextlib.suppress(RequestError):
        parse(body)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=12,
)


@given(JSON_VALUES)
def test_arbitrary_json_gives_a_request_or_a_request_error(value: object) -> None:
    with contextlib.suppress(RequestError):
        parse(json.dumps(value))


def test_request_from_json_for_websocket_messages() -> None:
    message = {"@type": "Request", "id": "r1", "using": [CORE], "methodCalls": []}
    request = request_from_json(message, supported_capabilities=SUPPORTED, max_calls=1)
    assert request == Request(frozenset({CORE}), [], None)
    with pytest.raises(RequestError) as info:
        request_from_json([], supported_capabilities=SUPPORTED, max_calls=1)
    assert info.value.type is RequestErrorType.NOT_REQUEST
