"""jmap.standard: /changes, filters, sorting, /query windows, /queryChanges (RFC 8620 §5)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imapjmap.jmap.args import Comparator, QueryArgs
from imapjmap.jmap.errors import MethodError, MethodErrorType
from imapjmap.jmap.standard import (
    ChangeRow,
    FilterOperator,
    collation_key,
    compute_changes,
    conditions_of,
    matches,
    query_changes,
    query_window,
    sort_records,
    validate_filter,
)
from imapjmap.jmap.state import State

E = "E1"

# --- /changes: examples -----------------------------------------------------------------


def rows(*specs: tuple[str, int, int, int | None]) -> list[ChangeRow]:
    return [ChangeRow(*spec) for spec in specs]


HISTORY = rows(
    ("a", 1, 1, None),  # untouched since 1
    ("b", 1, 3, None),  # updated at 3
    ("c", 3, 4, None),  # created at 3, updated at 4
    ("d", 1, 1, 4),  # destroyed at 4
    ("e", 3, 3, 4),  # created and destroyed after 2
)


@pytest.mark.parametrize(
    ("since", "created", "updated", "destroyed"),
    [
        pytest.param(State(E, 0), ["a", "b", "c"], [], [], id="from-zero-all-created"),
        pytest.param(State(E, 2), ["c"], ["b"], ["d"], id="CORE-CHG-02-coalescing"),
        pytest.param(State(E, 3), [], ["c"], ["d", "e"], id="updated-then-destroyed"),
        pytest.param(State(E, 4), [], [], [], id="CORE-CHG-05-current"),
    ],
)
def test_compute_changes_core_chg_02(
    since: State, created: list[str], updated: list[str], destroyed: list[str]
) -> None:
    result = compute_changes(HISTORY, since, 4, None)
    assert (result.created, result.updated, result.destroyed) == (created, updated, destroyed)
    assert result.new_state == State(E, 4)
    assert not result.has_more


def test_current_state_gives_same_state_core_chg_05() -> None:
    assert compute_changes(HISTORY, State(E, 4), 4, 1).new_state == State(E, 4)


def test_paging_inside_one_seq_core_chg_01() -> None:
    big = rows(*[(name, 7, 7, None) for name in "qwerty"])  # one sync transaction
    state, pages = State(E, 6), []
    for _ in range(10):
        result = compute_changes(big, state, 7, 2)
        pages.append((result.created, result.new_state, result.has_more))
        state = result.new_state
        if not result.has_more:
            break
    assert pages == [
        (["e", "q"], State(E, 6, "q", 7), True),
        (["r", "t"], State(E, 6, "t", 7), True),
        (["w", "y"], State(E, 7), False),
    ]


def test_pages_of_one_round_keep_its_base_and_end() -> None:
    result = compute_changes(rows(("a", 5, 5, None), ("b", 6, 6, None)), State(E, 4), 6, 1)
    assert (result.created, result.new_state, result.has_more) == (["a"], State(E, 4, "a", 6), True)


def test_row_changed_again_while_paging_is_still_created_core_chg_03() -> None:
    """Three rows created in one sync, one of them updated while the client pages: it is
    reported created once, in its round, whatever its change seq became."""
    first = compute_changes(
        rows(("a", 1, 1, None), ("b", 1, 1, None), ("c", 1, 1, None)), State(E, 0), 1, 1
    )
    assert first.created == ["a"]
    later = rows(("a", 1, 1, None), ("b", 1, 2, None), ("c", 1, 1, None))
    second = compute_changes(later, first.new_state, 2, 1)
    third = compute_changes(later, second.new_state, 2, 1)
    assert (second.created, third.created) == (["b"], ["c"])
    fourth = compute_changes(later, third.new_state, 2, 1)
    assert (fourth.created, fourth.updated, fourth.has_more) == ([], ["b"], False)


def test_omitted_rows_do_not_count_against_max_changes() -> None:
    history = rows(("a", 5, 5, 5), ("b", 5, 5, 5), ("c", 6, 6, None))
    result = compute_changes(history, State(E, 4), 6, 1)
    assert (result.created, result.destroyed, result.has_more) == (["c"], [], False)


def test_rows_already_covered_are_ignored() -> None:
    history = rows(("a", 5, 5, None), ("b", 5, 5, None), ("c", 5, 5, None))
    result = compute_changes(history, State(E, 4, "a", 5), 5, None)
    assert result.created == ["b", "c"]


def test_future_state_cannot_calculate_changes_core_chg_04() -> None:
    with pytest.raises(MethodError) as info:
        compute_changes(HISTORY, State(E, 9), 4, None)
    assert info.value.type is MethodErrorType.CANNOT_CALCULATE_CHANGES


# --- /changes: model ---------------------------------------------------------------------


@dataclass
class Store:
    """A tiny cache: one counter, one row per id, ids never reused."""

    seq: int = 0
    table: dict[str, list[Any]] = field(default_factory=dict)  # id -> [created, updated, destroyed]

    def apply(self, ops: list[tuple[str, str]]) -> None:
        seq, changed = self.seq + 1, False
        for op, id_ in ops:
            row = self.table.get(id_)
            if op == "create" and row is None:
                self.table[id_] = [seq, seq, None]
            elif op in ("update", "destroy") and row is not None and row[2] is None:
                row[1 if op == "update" else 2] = seq
            else:
                continue
            changed = True
        if changed:
            self.seq = seq

    def alive(self) -> set[str]:
        return {id_ for id_, row in self.table.items() if row[2] is None}

    def rows(self) -> list[ChangeRow]:
        return [ChangeRow(id_, *row) for id_, row in self.table.items()]


OPS = st.lists(
    st.tuples(st.sampled_from(["create", "update", "destroy"]), st.sampled_from("abcdefgh")),
    min_size=1,
    max_size=6,
)


@settings(deadline=None, max_examples=300)
@given(
    before=st.lists(OPS, max_size=6),
    during=st.lists(OPS, max_size=6),
    max_changes=st.none() | st.integers(min_value=1, max_value=4),
    data=st.data(),
)
def test_paging_reaches_the_truth_core_chg_01_03(
    before: list[list[tuple[str, str]]],
    during: list[list[tuple[str, str]]],
    max_changes: int | None,
    data: st.DataObject,
) -> None:
    """A client pages from an old state while the store keeps changing: it never sees an id
    created twice or created after it knew it (CORE-CHG-03), never sees more than maxChanges
    ids (CORE-CHG-01), and ends up with exactly the live set."""
    store = Store()
    for ops in before:
        store.apply(ops)
    state, known = State(E, store.seq), store.alive()
    ever_known = set(known)
    for _ in range(200):
        result = compute_changes(store.rows(), state, store.seq, max_changes)
        created, updated, destroyed = map(set, (result.created, result.updated, result.destroyed))
        count = len(result.created) + len(result.updated) + len(result.destroyed)
        assert max_changes is None or count <= max_changes
        assert count == len(created | updated | destroyed)  # each id once
        assert not created & ever_known
        assert updated <= known and destroyed <= known
        known = (known | created) - destroyed
        ever_known |= created
        state = result.new_state
        if during and (not result.has_more or data.draw(st.booleans())):
            store.apply(during.pop(0))
        elif not result.has_more:
            break
    assert known == store.alive()
    assert state == State(E, store.seq)


# --- filters ----------------------------------------------------------------------------


def check_condition(condition: dict[str, Any]) -> None:
    if not condition.keys() <= {"is", "text"}:
        raise MethodError(MethodErrorType.UNSUPPORTED_FILTER, "unknown condition")


def test_validate_filter() -> None:
    assert validate_filter(None, check_condition) is None
    assert validate_filter({"is": 1}, check_condition) == {"is": 1}
    raw = {"operator": "OR", "conditions": [{"is": 1}, {"operator": "NOT", "conditions": []}]}
    assert validate_filter(raw, check_condition) == FilterOperator(
        "OR", ({"is": 1}, FilterOperator("NOT", ()))
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param({"bogus": 1}, MethodErrorType.UNSUPPORTED_FILTER, id="unknown-condition"),
        pytest.param({"operator": "XOR", "conditions": []}, MethodErrorType.UNSUPPORTED_FILTER,
                     id="CORE-QRY-04-unknown-operator"),
        pytest.param({"operator": "and", "conditions": []}, MethodErrorType.UNSUPPORTED_FILTER,
                     id="lower-case-operator"),
        pytest.param({"operator": "AND"}, MethodErrorType.INVALID_ARGUMENTS, id="no-conditions"),
        pytest.param({"operator": "AND", "conditions": {}}, MethodErrorType.INVALID_ARGUMENTS,
                     id="conditions-object"),
        pytest.param({"operator": "AND", "conditions": [], "is": 1},
                     MethodErrorType.INVALID_ARGUMENTS, id="operator-extra-key"),
        pytest.param({"operator": "AND", "conditions": [1]}, MethodErrorType.INVALID_ARGUMENTS,
                     id="condition-int"),
        pytest.param({"operator": "AND", "conditions": [{"bogus": 1}]},
                     MethodErrorType.UNSUPPORTED_FILTER, id="nested-unknown-condition"),
        pytest.param([], MethodErrorType.INVALID_ARGUMENTS, id="array"),
        # found by the API fuzz: an operator that is not a String was a TypeError (serverFail)
        pytest.param({"operator": {}, "conditions": []}, MethodErrorType.INVALID_ARGUMENTS,
                     id="operator-object"),
        pytest.param({"operator": ["AND"], "conditions": []}, MethodErrorType.INVALID_ARGUMENTS,
                     id="operator-array"),
        pytest.param({"operator": None, "conditions": []}, MethodErrorType.INVALID_ARGUMENTS,
                     id="operator-null"),
    ],
)  # fmt: skip
def test_validate_filter_errors(raw: Any, expected: MethodErrorType) -> None:
    with pytest.raises(MethodError) as info:
        validate_filter(raw, check_condition)
    assert info.value.type is expected


def test_absurd_nesting_is_unsupported_filter() -> None:
    raw: dict[str, Any] = {"is": 1}
    for _ in range(200):
        raw = {"operator": "NOT", "conditions": [raw]}
    with pytest.raises(MethodError) as info:
        validate_filter(raw, check_condition)
    assert info.value.type is MethodErrorType.UNSUPPORTED_FILTER


def is_true(condition: dict[str, Any]) -> bool:
    return bool(condition["is"])


T, F = {"is": 1}, {"is": 0}


@pytest.mark.parametrize(
    ("tree", "expected"),
    [
        (None, True),
        (T, True),
        (F, False),
        (FilterOperator("AND", (T, T)), True),
        (FilterOperator("AND", (T, F)), False),
        (FilterOperator("AND", ()), True),
        (FilterOperator("OR", (F, T)), True),
        (FilterOperator("OR", ()), False),
        (FilterOperator("NOT", (F, F)), True),  # NOT = none of the conditions match
        (FilterOperator("NOT", (F, T)), False),
        (FilterOperator("NOT", (FilterOperator("OR", (F,)),)), True),
    ],
)
def test_matches(tree: Any, expected: bool) -> None:
    assert matches(tree, is_true) is expected


def test_conditions_of() -> None:
    tree = validate_filter(
        {"operator": "AND", "conditions": [T, {"operator": "NOT", "conditions": [F]}]},
        check_condition,
    )
    assert list(conditions_of(tree)) == [T, F]


# --- sorting ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("collation", "a", "b", "relation"),
    [
        ("i;octet", "B", "a", "<"),
        ("i;octet", "a", "A", ">"),
        ("i;ascii-casemap", "abc", "ABC", "=="),
        ("i;ascii-casemap", "a", "_", "<"),  # letters compare as upper case
        ("i;ascii-casemap", "é", "É", "!="),  # only ASCII is case-mapped
        ("i;unicode-casemap", "é", "É", "=="),
        ("i;unicode-casemap", "e\u0301", "\u00e9", "=="),  # NFKD
        ("i;unicode-casemap", "\ufb01le", "FILE", "=="),  # compatibility ligature
        ("i;unicode-casemap", "Zebra", "apple", ">"),
        (None, "Éa", "éb", "<"),  # default is i;unicode-casemap
    ],
)
def test_collations(collation: str | None, a: str, b: str, relation: str) -> None:
    key = collation_key(collation)
    ka, kb = key(a), key(b)
    assert {"<": ka < kb, ">": ka > kb, "==": ka == kb, "!=": ka != kb}[relation]


def test_unknown_collation_is_unsupported_sort_core_qry_04() -> None:
    with pytest.raises(MethodError) as info:
        collation_key("i;ascii-numeric")
    assert info.value.type is MethodErrorType.UNSUPPORTED_SORT


RECORDS: list[dict[str, Any]] = [
    {"id": "m3", "name": "beta", "size": 2},
    {"id": "m1", "name": "Alpha", "size": 2},
    {"id": "m2", "name": "alpha", "size": 1},
    {"id": "m4", "name": None, "size": 1},
]


def value_of(record: dict[str, Any], comparator: Comparator) -> Any:
    return record[comparator.property]


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ([], ["m1", "m2", "m3", "m4"]),  # tie-break only
        ([Comparator("name")], ["m4", "m1", "m2", "m3"]),  # null first, casemap equal → id
        ([Comparator("name", collation="i;octet")], ["m4", "m1", "m2", "m3"]),
        ([Comparator("name", False)], ["m3", "m1", "m2", "m4"]),  # ties stay id-ascending
        ([Comparator("size", False), Comparator("name")], ["m1", "m3", "m4", "m2"]),
        ([Comparator("size"), Comparator("name", False)], ["m2", "m4", "m3", "m1"]),
    ],
)
def test_sort_records(sort: list[Comparator], expected: list[str]) -> None:
    ordered = sort_records(RECORDS, sort, value_of, tie_break=lambda r: r["id"])
    assert [r["id"] for r in ordered] == expected


# --- /query window ----------------------------------------------------------------------

IDS = ["a", "b", "c", "d", "e"]


def window(max_limit: int | None = None, **kwargs: Any) -> dict[str, Any]:
    return query_window(IDS, QueryArgs("A", None, [], **kwargs), max_limit=max_limit)


@pytest.mark.parametrize(
    ("kwargs", "max_limit", "expected"),
    [
        pytest.param({}, None, {"ids": IDS, "position": 0}, id="defaults"),
        pytest.param({"position": 2, "limit": 2}, None, {"ids": ["c", "d"], "position": 2},
                     id="page"),
        pytest.param({"position": -2}, None, {"ids": ["d", "e"], "position": 3},
                     id="CORE-QRY-01-negative"),
        pytest.param({"position": -10}, None, {"ids": IDS, "position": 0},
                     id="CORE-QRY-01-clamped"),
        pytest.param({"position": 7}, None, {"ids": [], "position": 7}, id="past-the-end"),
        pytest.param({"anchor": "c", "position": 4}, None, {"ids": ["c", "d", "e"],
                     "position": 2}, id="CORE-QRY-02-anchor-ignores-position"),
        pytest.param({"anchor": "c", "anchor_offset": -1, "limit": 2}, None,
                     {"ids": ["b", "c"], "position": 1}, id="anchor-offset"),
        pytest.param({"anchor": "b", "anchor_offset": -5}, None, {"ids": IDS, "position": 0},
                     id="CORE-QRY-02-clamped"),
        pytest.param({"anchor": "e", "anchor_offset": 3}, None, {"ids": [], "position": 7},
                     id="anchor-past-the-end"),
        pytest.param({"calculate_total": True, "limit": 0}, None,
                     {"ids": [], "position": 0, "total": 5}, id="total"),
        pytest.param({}, 2, {"ids": ["a", "b"], "position": 0, "limit": 2},
                     id="CORE-QRY-03-server-limit"),
        pytest.param({"limit": 3}, 2, {"ids": ["a", "b"], "position": 0, "limit": 2},
                     id="CORE-QRY-03-clamped"),
        pytest.param({"limit": 2}, 2, {"ids": ["a", "b"], "position": 0}, id="limit-equal-max"),
        pytest.param({"limit": 1}, 2, {"ids": ["a"], "position": 0}, id="limit-below-max"),
    ],
)  # fmt: skip
def test_query_window(
    kwargs: dict[str, Any], max_limit: int | None, expected: dict[str, Any]
) -> None:
    assert window(max_limit, **kwargs) == expected


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"anchor": "zz"}, MethodErrorType.ANCHOR_NOT_FOUND),
        ({"limit": -1}, MethodErrorType.INVALID_ARGUMENTS),
    ],
)
def test_query_window_errors(kwargs: dict[str, Any], expected: MethodErrorType) -> None:
    with pytest.raises(MethodError) as info:
        window(**kwargs)
    assert info.value.type is expected


# --- /queryChanges ----------------------------------------------------------------------


def apply_changes(old: list[str], removed: list[str], added: list[dict[str, Any]]) -> list[str]:
    gone = set(removed)
    result = [id_ for id_ in old if id_ not in gone]
    for item in sorted(added, key=lambda a: a["index"]):
        result.insert(item["index"], item["id"])
    return result


@st.composite
def query_scenarios(draw: st.DrawFn) -> tuple[list[str], list[str], set[str], set[str]]:
    """Old and new results of one query over objects whose sort value (None: not matching)
    may change; ``changed`` and ``destroyed`` together cover every real change, plus extras."""
    universe = [f"x{i}" for i in range(draw(st.integers(0, 12)))]
    values = st.none() | st.integers(0, 3)
    old_values = {i: draw(values) for i in universe}
    new_values = {i: draw(values) for i in universe}

    def results(vals: dict[str, int | None]) -> list[str]:
        return sorted((i for i in universe if vals[i] is not None), key=lambda i: (vals[i], i))

    real = {i for i in universe if old_values[i] != new_values[i]}
    extra = draw(st.sets(st.sampled_from(universe))) if universe else set()
    touched = sorted(real | extra)
    as_destroyed = draw(st.lists(st.booleans(), min_size=len(touched), max_size=len(touched)))
    destroyed = {i for i, d in zip(touched, as_destroyed, strict=True) if d}
    return results(old_values), results(new_values), set(touched) - destroyed, destroyed


@settings(max_examples=300)
@given(query_scenarios())
def test_removed_then_added_gives_the_new_list_core_qch_01(
    scenario: tuple[list[str], list[str], set[str], set[str]],
) -> None:
    old, new, changed, destroyed = scenario
    removed, added = query_changes(new, changed, destroyed, up_to_id=None, max_changes=None)
    assert apply_changes(old, removed, added) == new
    assert [a["index"] for a in added] == sorted(a["index"] for a in added)


@settings(max_examples=300)
@given(query_scenarios(), st.data())
def test_up_to_id_gives_the_new_list_up_to_it_core_qch_01(
    scenario: tuple[list[str], list[str], set[str], set[str]], data: st.DataObject
) -> None:
    old, new, changed, destroyed = scenario
    if not old:
        return
    last = data.draw(st.integers(0, len(old) - 1))
    up_to_id = old[last]
    removed, added = query_changes(new, changed, destroyed, up_to_id=up_to_id, max_changes=None)
    if up_to_id in new and up_to_id not in changed | destroyed:
        cut = new.index(up_to_id) + 1
        assert apply_changes(old[: last + 1], removed, added) == new[:cut]
        assert all(a["index"] < cut for a in added)
    else:  # upToId ignored
        assert apply_changes(old, removed, added) == new


def test_query_changes_example() -> None:
    # old: a b c d; c changed and now sorts first, d destroyed, e created.
    result = query_changes(["c", "a", "b", "e"], {"c", "e"}, {"d"}, up_to_id=None, max_changes=None)
    assert result.removed == ["c", "d", "e"]
    assert result.added == [{"id": "c", "index": 0}, {"id": "e", "index": 3}]
    assert apply_changes(["a", "b", "c", "d"], *result) == ["c", "a", "b", "e"]


def test_up_to_id_cuts_added() -> None:
    result = query_changes(["a", "b", "c", "n"], {"n", "a"}, (), up_to_id="b", max_changes=None)
    assert result.added == [{"id": "a", "index": 0}]


@pytest.mark.parametrize(("max_changes", "fails"), [(4, False), (3, True)])
def test_too_many_changes_core_qch_02(max_changes: int, fails: bool) -> None:
    args = (["a", "b"], {"a", "b"}, set[str]())
    if not fails:
        query_changes(*args, up_to_id=None, max_changes=max_changes)
        return
    with pytest.raises(MethodError) as info:
        query_changes(*args, up_to_id=None, max_changes=max_changes)
    assert info.value.type is MethodErrorType.TOO_MANY_CHANGES
