"""jmap.args: standard method arguments (RFC 8620 §5.1-§5.6; CORE-REQ-05, CORE-GET-*, ...)."""

from __future__ import annotations

from typing import Any

import pytest

from imapjmap.jmap.args import (
    ChangesArgs,
    Comparator,
    GetArgs,
    QueryArgs,
    QueryChangesArgs,
    SetArgs,
)
from imapjmap.jmap.errors import MethodError, MethodErrorType

PROPS = ("id", "name", "role")


def error_type(parse: Any, raw: dict[str, Any], **kwargs: Any) -> MethodErrorType:
    with pytest.raises(MethodError) as info:
        parse(raw, **kwargs)
    assert info.value.description
    return info.value.type


# --- /get -------------------------------------------------------------------------------


def get(raw: dict[str, Any], **kwargs: Any) -> GetArgs:
    kwargs.setdefault("known_properties", PROPS)
    kwargs.setdefault("max_objects", 3)
    return GetArgs.parse(raw, **kwargs)


@pytest.mark.parametrize(
    ("raw", "ids", "properties"),
    [
        pytest.param({"accountId": "A"}, None, None, id="CORE-REQ-05-omitted-is-null"),
        pytest.param({"accountId": "A", "ids": None, "properties": None}, None, None, id="null"),
        pytest.param({"accountId": "A", "ids": []}, [], None, id="CORE-GET-02-empty"),
        pytest.param(
            {"accountId": "A", "ids": ["a", "b", "a", "a", "c"]}, ["a", "b", "c"], None,
            id="CORE-GET-02-duplicates-once",
        ),
        pytest.param(
            {"accountId": "A", "ids": ["not an id!", "#k"]}, ["not an id!", "#k"], None,
            id="invalid-ids-go-to-notFound-later",
        ),
        pytest.param({"accountId": "A", "properties": ["name"]}, None, ["id", "name"],
                     id="CORE-GET-01-id-always"),
        pytest.param({"accountId": "A", "properties": ["role", "id", "role"]}, None,
                     ["role", "id"], id="id-kept-in-place"),
        pytest.param({"accountId": "A", "properties": []}, None, ["id"], id="empty-properties"),
    ],
)  # fmt: skip
def test_get_args(raw: dict[str, Any], ids: list[str] | None, properties: list[str] | None) -> None:
    args = get(raw)
    assert (args.account_id, args.ids, args.properties, args.extra) == ("A", ids, properties, {})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param({}, MethodErrorType.INVALID_ARGUMENTS, id="no-accountId"),
        pytest.param({"accountId": 5}, MethodErrorType.INVALID_ARGUMENTS, id="accountId-int"),
        pytest.param({"accountId": "A", "ids": "a"}, MethodErrorType.INVALID_ARGUMENTS,
                     id="ids-str"),
        pytest.param({"accountId": "A", "ids": [1]}, MethodErrorType.INVALID_ARGUMENTS,
                     id="ids-int"),
        pytest.param({"accountId": "A", "properties": ["nope"]}, MethodErrorType.INVALID_ARGUMENTS,
                     id="CORE-GET-03-unknown-property"),
        pytest.param({"accountId": "A", "properties": "name"}, MethodErrorType.INVALID_ARGUMENTS,
                     id="properties-str"),
        pytest.param({"accountId": "A", "bogus": 1}, MethodErrorType.INVALID_ARGUMENTS,
                     id="unknown-argument"),
        pytest.param({"accountId": "A", "ids": ["a", "b", "c", "d"]},
                     MethodErrorType.REQUEST_TOO_LARGE, id="maxObjectsInGet"),
    ],
)  # fmt: skip
def test_get_args_errors(raw: dict[str, Any], expected: MethodErrorType) -> None:
    assert error_type(get, raw) is expected


def test_get_args_extra_and_pattern_properties() -> None:
    class HeaderProps:
        def __contains__(self, name: object) -> bool:
            return isinstance(name, str) and (name in PROPS or name.startswith("header:"))

    args = GetArgs.parse(
        {"accountId": "A", "properties": ["header:X-Foo:all"], "fetchAllBodyValues": True},
        known_properties=HeaderProps(),  # type: ignore[arg-type]
        max_objects=10,
        extra=("fetchAllBodyValues", "maxBodyValueBytes"),
    )
    assert args.properties == ["id", "header:X-Foo:all"]
    assert args.extra == {"fetchAllBodyValues": True}


def test_get_args_unknown_argument_is_named() -> None:
    with pytest.raises(MethodError) as info:
        get({"accountId": "A", "fetchHTMLBodyValues": True})
    assert "fetchHTMLBodyValues" in (info.value.description or "")


# --- /changes ---------------------------------------------------------------------------


def test_changes_args() -> None:
    assert ChangesArgs.parse({"accountId": "A", "sinceState": "s1"}) == ChangesArgs(
        "A", "s1", None, {}
    )
    args = ChangesArgs.parse({"accountId": "A", "sinceState": "s", "maxChanges": 5})
    assert args.max_changes == 5


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param({"accountId": "A"}, id="no-sinceState"),
        pytest.param({"accountId": "A", "sinceState": None}, id="null-sinceState"),
        pytest.param({"accountId": "A", "sinceState": 3}, id="int-sinceState"),
        pytest.param({"accountId": "A", "sinceState": "s", "maxChanges": 0}, id="maxChanges-0"),
        pytest.param({"accountId": "A", "sinceState": "s", "maxChanges": -1}, id="negative"),
        pytest.param({"accountId": "A", "sinceState": "s", "maxChanges": 1.5}, id="float"),
        pytest.param({"accountId": "A", "sinceState": "s", "maxChanges": True}, id="bool"),
    ],
)
def test_changes_args_errors(raw: dict[str, Any]) -> None:
    assert error_type(ChangesArgs.parse, raw) is MethodErrorType.INVALID_ARGUMENTS


# --- /set -------------------------------------------------------------------------------


def test_set_args() -> None:
    args = SetArgs.parse(
        {
            "accountId": "A",
            "ifInState": "s1",
            "create": {"k1": {"name": "x"}},
            "update": {"M1": {"name": "y"}, "#k1": {"role": None}},
            "destroy": ["M2", "#k9", "M2"],
            "onDestroyRemoveEmails": True,
        },
        max_objects=10,
        extra=("onDestroyRemoveEmails",),
    )
    assert args.if_in_state == "s1"
    assert args.create == {"k1": {"name": "x"}}
    assert args.update == {"M1": {"name": "y"}, "#k1": {"role": None}}
    assert args.destroy == ["M2", "#k9"]
    assert args.extra == {"onDestroyRemoveEmails": True}
    empty = SetArgs.parse({"accountId": "A"}, max_objects=0)
    assert [empty.if_in_state, empty.create, empty.update, empty.destroy] == [None] * 4


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param({"ifInState": 1}, MethodErrorType.INVALID_ARGUMENTS, id="ifInState-int"),
        pytest.param({"create": []}, MethodErrorType.INVALID_ARGUMENTS, id="create-array"),
        pytest.param({"create": {"k": 1}}, MethodErrorType.INVALID_ARGUMENTS, id="create-value"),
        pytest.param({"create": {"bad id": {}}}, MethodErrorType.INVALID_ARGUMENTS, id="cid"),
        pytest.param({"update": {"M1": None}}, MethodErrorType.INVALID_ARGUMENTS, id="patch-null"),
        pytest.param({"destroy": "M1"}, MethodErrorType.INVALID_ARGUMENTS, id="destroy-str"),
        pytest.param({"destroy": [None]}, MethodErrorType.INVALID_ARGUMENTS, id="destroy-null"),
        pytest.param({"onDestroyRemoveEmails": True}, MethodErrorType.INVALID_ARGUMENTS,
                     id="undeclared-extra"),
        pytest.param({"create": {"a": {}, "b": {}}, "update": {"c": {}}, "destroy": ["d"]},
                     MethodErrorType.REQUEST_TOO_LARGE, id="CORE-SET-06-maxObjectsInSet"),
    ],
)  # fmt: skip
def test_set_args_errors(raw: dict[str, Any], expected: MethodErrorType) -> None:
    assert error_type(SetArgs.parse, {"accountId": "A", **raw}, max_objects=3) is expected


# --- /query and /queryChanges -----------------------------------------------------------


def test_query_args_defaults_core_req_05() -> None:
    assert QueryArgs.parse({"accountId": "A"}) == QueryArgs("A", None, [])
    nulls = {"filter": None, "sort": None, "position": None, "anchor": None,
             "anchorOffset": None, "limit": None, "calculateTotal": None}  # fmt: skip
    assert QueryArgs.parse({"accountId": "A", **nulls}) == QueryArgs("A", None, [])


def test_query_args_full() -> None:
    args = QueryArgs.parse(
        {
            "accountId": "A",
            "filter": {"operator": "NOT", "conditions": []},
            "sort": [
                {"property": "receivedAt", "isAscending": False},
                {"property": "hasKeyword", "keyword": "$flagged", "collation": "i;octet"},
            ],
            "position": -5,
            "anchor": "e1",
            "anchorOffset": -2,
            "limit": 0,
            "calculateTotal": True,
            "collapseThreads": True,
        },
        sort_properties={"receivedAt", "hasKeyword"},
        extra=("collapseThreads",),
    )
    assert args == QueryArgs(
        account_id="A",
        filter={"operator": "NOT", "conditions": []},
        sort=[
            Comparator("receivedAt", is_ascending=False),
            Comparator("hasKeyword", True, "i;octet", "$flagged"),
        ],
        position=-5,
        anchor="e1",
        anchor_offset=-2,
        limit=0,
        calculate_total=True,
        extra={"collapseThreads": True},
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param({"filter": []}, MethodErrorType.INVALID_ARGUMENTS, id="filter-array"),
        pytest.param({"sort": {}}, MethodErrorType.INVALID_ARGUMENTS, id="sort-object"),
        pytest.param({"sort": ["name"]}, MethodErrorType.INVALID_ARGUMENTS, id="sort-strings"),
        pytest.param({"sort": [{}]}, MethodErrorType.INVALID_ARGUMENTS, id="no-property"),
        pytest.param({"sort": [{"property": "name", "isAscending": "yes"}]},
                     MethodErrorType.INVALID_ARGUMENTS, id="isAscending-str"),
        pytest.param({"sort": [{"property": "name", "collation": 1}]},
                     MethodErrorType.INVALID_ARGUMENTS, id="collation-int"),
        pytest.param({"sort": [{"property": "name", "keyword": False}]},
                     MethodErrorType.INVALID_ARGUMENTS, id="keyword-bool"),
        pytest.param({"sort": [{"property": "name", "isAscending": 0, "position": 0}]},
                     MethodErrorType.INVALID_ARGUMENTS, id="isAscending-int-beside-unknown"),
        pytest.param({"sort": [{"property": "size"}]}, MethodErrorType.UNSUPPORTED_SORT,
                     id="CORE-QRY-04-unknown-sort-property"),
        pytest.param({"sort": [{"property": "name", "collation": "i;klingon"}]},
                     MethodErrorType.UNSUPPORTED_SORT, id="CORE-QRY-04-unknown-collation"),
        pytest.param({"position": 1.0}, MethodErrorType.INVALID_ARGUMENTS, id="position-float"),
        pytest.param({"position": 2**53}, MethodErrorType.INVALID_ARGUMENTS, id="position-big"),
        pytest.param({"anchor": 3}, MethodErrorType.INVALID_ARGUMENTS, id="anchor-int"),
        pytest.param({"anchorOffset": "1"}, MethodErrorType.INVALID_ARGUMENTS, id="offset-str"),
        pytest.param({"limit": -1}, MethodErrorType.INVALID_ARGUMENTS, id="CORE-QRY-03-negative"),
        pytest.param({"calculateTotal": 1}, MethodErrorType.INVALID_ARGUMENTS, id="total-int"),
        pytest.param({"collapseThreads": True}, MethodErrorType.INVALID_ARGUMENTS,
                     id="undeclared-extra"),
    ],
)  # fmt: skip
def test_query_args_errors(raw: dict[str, Any], expected: MethodErrorType) -> None:
    parse = QueryArgs.parse
    assert error_type(parse, {"accountId": "A", **raw}, sort_properties={"name"}) is expected


def test_comparator_unknown_keys_are_ignored() -> None:
    """jmapc 0.4.0 puts the query's anchorOffset, calculateTotal and position in each
    Comparator (RFC 8620 §5.5 defines property, isAscending and collation): ignored."""
    comparator = {
        "property": "name",
        "isAscending": False,
        "anchorOffset": 0,
        "calculateTotal": False,
        "position": 0,
        "bogus": {"nested": [1]},
    }
    args = QueryArgs.parse({"accountId": "A", "sort": [comparator]}, sort_properties={"name"})
    assert args.sort == [Comparator("name", is_ascending=False)]


def test_query_changes_args() -> None:
    args = QueryChangesArgs.parse(
        {"accountId": "A", "sinceQueryState": "q1", "maxChanges": 0, "upToId": "e9",
         "calculateTotal": True, "sort": [{"property": "name"}]},
    )  # fmt: skip
    assert args == QueryChangesArgs(
        "A", None, [Comparator("name")], "q1", max_changes=0, up_to_id="e9", calculate_total=True
    )


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param({}, id="no-sinceQueryState"),
        pytest.param({"sinceQueryState": "q", "maxChanges": -1}, id="negative-maxChanges"),
        pytest.param({"sinceQueryState": "q", "upToId": 1}, id="upToId-int"),
        pytest.param({"sinceQueryState": "q", "position": 0}, id="query-only-argument"),
    ],
)
def test_query_changes_args_errors(raw: dict[str, Any]) -> None:
    parse = QueryChangesArgs.parse
    assert error_type(parse, {"accountId": "A", **raw}) is MethodErrorType.INVALID_ARGUMENTS
