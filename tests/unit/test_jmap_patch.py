"""jmap.patch: PatchObject (RFC 8620 §5.3, CORE-SET-03)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from imapjmap.jmap.errors import SetError, SetErrorType
from imapjmap.jmap.patch import apply_patch, parse_patch

EMAIL: dict[str, Any] = {
    "id": "e1",
    "keywords": {"$seen": True},
    "mailboxIds": {"M1": True},
    "a/b": {"~x": 1},
    "list": [{"x": 1}],
    "nothing": None,
}


@pytest.mark.parametrize(
    ("patch", "expected_changes"),
    [
        pytest.param({}, {}, id="empty"),
        pytest.param({"keywords/$flagged": True}, {"keywords": {"$seen": True, "$flagged": True}},
                     id="add-nested"),
        pytest.param({"keywords/$seen": None}, {"keywords": {}}, id="null-removes"),
        pytest.param({"keywords/$nope": None}, {}, id="null-missing-is-noop"),
        pytest.param({"mailboxIds": {"M2": True}}, {"mailboxIds": {"M2": True}},
                     id="replace-whole"),
        pytest.param({"mailboxIds/M1": None, "mailboxIds/M2": True}, {"mailboxIds": {"M2": True}},
                     id="move"),
        pytest.param({"a~1b/~0x": 2}, {"a/b": {"~x": 2}}, id="escapes"),
        pytest.param({"list": [1, 2]}, {"list": [1, 2]}, id="replace-whole-array"),
        pytest.param({"new": {"deep": [1]}}, {"new": {"deep": [1]}}, id="new-top-level"),
        pytest.param({"keywords/": True}, {"keywords": {"$seen": True, "": True}},
                     id="empty-token-is-a-name"),
    ],
)  # fmt: skip
def test_apply_patch_core_set_03(patch: dict[str, Any], expected_changes: dict[str, Any]) -> None:
    before = copy.deepcopy(EMAIL)
    result = apply_patch(EMAIL, patch)
    assert before == EMAIL  # input untouched
    assert result == {**EMAIL, **expected_changes}


def test_null_on_top_level_removes_the_member() -> None:
    assert "keywords" not in apply_patch(EMAIL, {"keywords": None})


def test_result_shares_nothing_with_the_input() -> None:
    value = {"M2": True}
    result = apply_patch(EMAIL, {"mailboxIds": value})
    result["mailboxIds"]["M3"] = True
    result["keywords"]["$x"] = True
    assert value == {"M2": True}
    assert EMAIL["keywords"] == {"$seen": True}


@pytest.mark.parametrize(
    "patch",
    [
        pytest.param({"list/0/x": 2}, id="into-array"),
        pytest.param({"list/0": 2}, id="array-element"),
        pytest.param({"nope/x": 1}, id="missing-parent"),
        pytest.param({"keywords/$seen/x": 1}, id="parent-is-scalar"),
        pytest.param({"nothing/x": 1}, id="parent-is-null"),
        pytest.param({"keywords": {}, "keywords/$seen": None}, id="prefix-overlap"),
        pytest.param({"a~1b/~0x/y": 1, "a~1b": {}}, id="prefix-overlap-escaped"),
        pytest.param({"keywords/~2": True}, id="bad-escape"),
        pytest.param({"keywords/a~": True}, id="trailing-tilde"),
        pytest.param({"": 1}, id="empty-key"),
    ],
)
def test_invalid_patch_core_set_03(patch: dict[str, Any]) -> None:
    before = copy.deepcopy(EMAIL)
    with pytest.raises(SetError) as info:
        apply_patch(EMAIL, patch)
    assert info.value.type is SetErrorType.INVALID_PATCH
    assert info.value.description
    assert before == EMAIL


def test_keys_that_share_a_prefix_string_but_not_a_path_are_fine() -> None:
    assert apply_patch({"ab": 1, "a": {"b": 1}}, {"a/b": 2, "ab": 3}) == {"ab": 3, "a": {"b": 2}}


def test_parse_patch_keeps_order_and_decodes() -> None:
    assert parse_patch({"mailboxIds/M~11": True, "keywords/$seen": None}) == [
        (("mailboxIds", "M/1"), True),
        (("keywords", "$seen"), None),
    ]
