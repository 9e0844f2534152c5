"""The standard response builders (imapjmap.jmap.responses), as tables."""

from __future__ import annotations

import json
from typing import Any

import pytest

from imapjmap.jmap.responses import (
    SetResult,
    changes_response,
    create_response,
    get_response,
    pick,
    query_changes_response,
    query_response,
    set_response,
)

KNOWN = {"a": {"id": "a"}, "b": {"id": "b"}}

PICK_CASES = [
    # wanted, found ids, notFound
    ([], [], []),
    (["a", "b"], ["a", "b"], []),
    (["b", "a"], ["b", "a"], []),
    (["x", "a"], ["a"], ["x"]),
    # CORE-GET-02: a duplicated id is answered once, where it was first asked
    (["a", "a", "x", "b", "x", "a"], ["a", "b"], ["x"]),
    (["x", "y", "x"], [], ["x", "y"]),
]


@pytest.mark.parametrize(("wanted", "found", "not_found"), PICK_CASES)
def test_pick_answers_every_id_once_core_get_02(
    wanted: list[str], found: list[str], not_found: list[str]
) -> None:
    objects, missing = pick(wanted, KNOWN)
    assert [o["id"] for o in objects] == found
    assert missing == not_found


GET_CASES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    (
        {"account_id": "A", "state": "s1"},
        {"accountId": "A", "state": "s1", "list": [{"id": "a"}], "notFound": []},
    ),
    # Blob/get and Blob/lookup: no state (RFC 9404)
    ({"account_id": "A"}, {"accountId": "A", "list": [{"id": "a"}], "notFound": []}),
    # PushSubscription/get: neither account nor state (RFC 8620 §7.2)
    ({"account_id": None}, {"list": [{"id": "a"}], "notFound": []}),
    # SearchSnippet/get: notFound null when every id was found (RFC 8621 §5.1)
    (
        {"account_id": "A", "null_when_all_found": True},
        {"accountId": "A", "list": [{"id": "a"}], "notFound": None},
    ),
]


@pytest.mark.parametrize(("keywords", "expected"), GET_CASES)
def test_get_response_keys(keywords: dict[str, Any], expected: dict[str, Any]) -> None:
    response = get_response([{"id": "a"}], [], **keywords)
    assert response == expected
    assert list(response) == list(expected)


def test_get_response_not_found_listed_even_where_null_when_all_found() -> None:
    response = get_response([], ["x"], account_id="A", null_when_all_found=True)
    assert response == {"accountId": "A", "list": [], "notFound": ["x"]}


SET_KEYS = ["created", "updated", "destroyed", "notCreated", "notUpdated", "notDestroyed"]
NOT_FOUND = {"type": "notFound"}

SET_CASES: list[tuple[SetResult, dict[str, Any]]] = [
    # nothing asked: every key there, each null (RFC 8620 §5.3 "or null if none")
    (SetResult(), dict.fromkeys(SET_KEYS)),
    (
        SetResult(created={"k1": {"id": "M1"}}, not_destroyed={"M9": NOT_FOUND}),
        {
            **dict.fromkeys(SET_KEYS),
            "created": {"k1": {"id": "M1"}},
            "notDestroyed": {"M9": NOT_FOUND},
        },
    ),
    # an update without server-set changes is null, and still counts as updated
    (
        SetResult(updated={"M1": None}, destroyed=["M2"], not_updated={"M3": NOT_FOUND}),
        {
            **dict.fromkeys(SET_KEYS),
            "updated": {"M1": None},
            "destroyed": ["M2"],
            "notUpdated": {"M3": NOT_FOUND},
        },
    ),
    (
        SetResult(not_created={"k1": {"type": "invalidProperties", "properties": ["name"]}}),
        {
            **dict.fromkeys(SET_KEYS),
            "notCreated": {"k1": {"type": "invalidProperties", "properties": ["name"]}},
        },
    ),
]


@pytest.mark.parametrize(("result", "expected"), SET_CASES)
def test_set_result_has_six_keys_null_when_empty_core_set_02(
    result: SetResult, expected: dict[str, Any]
) -> None:
    assert result.to_json() == expected
    response = set_response(result, account_id="A", old_state="s1", new_state="s2")
    assert response == {"accountId": "A", "oldState": "s1", "newState": "s2", **expected}
    json.dumps(response)  # plain JSON, whatever collections the handler used


def test_set_result_copies_what_the_handler_keeps_filling() -> None:
    created: dict[str, Any] = {}
    result = SetResult(created=created)
    response = result.to_json()
    created["k1"] = {"id": "x"}
    assert response["created"] is None


CREATE_CASES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    # Email/import (RFC 8621 §4.8)
    (
        {"account_id": "A", "old_state": "s1", "new_state": "s2"},
        {"accountId": "A", "oldState": "s1", "newState": "s2"},
    ),
    # Blob/upload (RFC 9404 §4.1): no states
    ({"account_id": "A"}, {"accountId": "A"}),
]


@pytest.mark.parametrize(("keywords", "head"), CREATE_CASES)
def test_create_response(keywords: dict[str, Any], head: dict[str, Any]) -> None:
    assert create_response({}, {}, **keywords) == {**head, "created": None, "notCreated": None}
    answer = create_response({"k": {"id": "E1"}}, {"j": NOT_FOUND}, **keywords)
    assert answer == {**head, "created": {"k": {"id": "E1"}}, "notCreated": {"j": NOT_FOUND}}


def test_changes_response_keeps_empty_lists_core_chg_05() -> None:
    response = changes_response(
        account_id="A",
        old_state="s1",
        new_state="s1",
        has_more=False,
        created=[],
        updated=[],
        destroyed=[],
    )
    assert response == {
        "accountId": "A",
        "oldState": "s1",
        "newState": "s1",
        "hasMoreChanges": False,
        "created": [],
        "updated": [],
        "destroyed": [],
    }


QUERY_WINDOWS: list[dict[str, Any]] = [
    {"ids": ["a", "b"], "position": 0},
    {"ids": ["b"], "position": 1, "total": 2},
    {"ids": [], "position": 0, "total": 0, "limit": 256},
]


@pytest.mark.parametrize("window", QUERY_WINDOWS)
def test_query_response_wraps_the_window(window: dict[str, Any]) -> None:
    response = query_response(window, account_id="A", query_state="q1", can_calculate_changes=True)
    assert response == {"accountId": "A", "queryState": "q1", "canCalculateChanges": True, **window}


@pytest.mark.parametrize(("total", "has_total"), [(None, False), (0, True), (7, True)])
def test_query_changes_response_total_only_when_asked(total: int | None, has_total: bool) -> None:
    response = query_changes_response(
        account_id="A",
        old_query_state="q1",
        new_query_state="q2",
        removed=["a"],
        added=[{"id": "a", "index": 0}],
        total=total,
    )
    expected: dict[str, Any] = {
        "accountId": "A",
        "oldQueryState": "q1",
        "newQueryState": "q2",
        "removed": ["a"],
        "added": [{"id": "a", "index": 0}],
    }
    if has_total:
        expected["total"] = total
    assert response == expected
