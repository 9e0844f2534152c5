"""imapjmap.jmap.limits: the bounds on one query's filter and sort (RFC 8620 §5.5
unsupportedFilter / unsupportedSort), and that every query method checks them first."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from imapjmap.config import Config, LimitsConfig
from imapjmap.jmap.args import GetArgs, QueryArgs
from imapjmap.jmap.errors import MethodError
from imapjmap.jmap.limits import QueryLimits, check_filter, check_sort
from imapjmap.methods import REGISTRY
from imapjmap.methods.context import MethodContext
from imapjmap.methods.email import query as email_query
from imapjmap.store.db import Store
from tests.unit.email_world import World, call

LIMITS = QueryLimits(
    max_filter_conditions=6, max_filter_depth=3, max_filter_string_length=5, max_sort_comparators=2
)


def any_of(*conditions: Any) -> dict[str, Any]:
    return {"operator": "OR", "conditions": list(conditions)}


def nested(depth: int, leaf: Any) -> Any:
    """``depth`` levels of operators (built without recursion, so any depth works)."""
    node = leaf
    for _ in range(depth):
        node = {"operator": "NOT", "conditions": [node]}
    return node


WITHIN = [
    None,
    {},
    {"subject": "12345"},  # the longest string allowed
    any_of(*[{"subject": "a"}] * 5),  # 1 operator + 5 conditions = 6
    {"inMailboxOtherThan": ["a", "b", "c", "d", "e", "f"]},  # 6 items count 6
    {"header": ["Subj", "hello"], "from": "x"},  # 2 + 1
    nested(2, {"text": "x"}),  # depth 3: two operators and the condition
    {"operator": "AND", "conditions": "not a list"},  # shapes are for the parser after
    any_of(1, "x", [2]),  # idem
]


@pytest.mark.parametrize("filter_", WITHIN)
def test_filters_within_the_limits_pass(filter_: Any) -> None:
    check_filter(filter_, LIMITS)


OVER = [
    (any_of(*[{"subject": "a"}] * 6), "max_filter_conditions) is 6"),
    ({"inMailboxOtherThan": list("abcdefg")}, "max_filter_conditions) is 6"),
    ({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7}, "max_filter_conditions) is 6"),
    (any_of(any_of({"a": 1}, {"b": 1}), any_of({"c": 1}, {"d": 1})), "max_filter_conditions"),
    (nested(3, {"text": "x"}), "max_filter_depth) is 3"),
    ({"subject": "123456"}, "max_filter_string_length) is 5"),
    ({"header": ["Subject", "123456"]}, "max_filter_string_length) is 5"),
    (any_of({"body": "x"}, {"text": "x" * 10**6}), "a filter string is 1000000 characters"),
]


@pytest.mark.parametrize(("filter_", "names"), OVER)
def test_filters_over_a_limit_are_unsupported_filter(filter_: Any, names: str) -> None:
    with pytest.raises(MethodError) as err:
        check_filter(filter_, LIMITS)
    assert err.value.type == "unsupportedFilter"
    assert names in str(err.value.description)


def test_a_100000_deep_filter_is_refused_without_recursion() -> None:
    deep = nested(100_000, {"subject": "x"})
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)  # the check must not need a stack as deep as the filter
    try:
        with pytest.raises(MethodError) as err:
            check_filter(deep, QueryLimits())
    finally:
        sys.setrecursionlimit(limit)
    assert err.value.type == "unsupportedFilter"
    assert "max_filter_depth) is 10" in str(err.value.description)


class CountingList(list[Any]):
    """A list that counts how many of its items were read."""

    reads = 0

    def __iter__(self) -> Any:
        for item in super().__iter__():
            CountingList.reads += 1
            yield item


def test_a_huge_list_is_refused_by_its_length_without_reading_it() -> None:
    CountingList.reads = 0
    with pytest.raises(MethodError):
        huge = CountingList([{"subject": "x"}] * 100_000)
        check_filter({"operator": "OR", "conditions": huge}, LIMITS)
    with pytest.raises(MethodError):
        check_filter({"inMailboxOtherThan": CountingList(["M"] * 100_000)}, LIMITS)
    assert CountingList.reads == 0


@pytest.mark.parametrize(("count", "refused"), [(0, False), (2, False), (3, True)])
def test_sort_comparators_are_bounded(count: int, refused: bool) -> None:
    sort = [{"property": "size"}] * count
    if not refused:
        check_sort(sort, LIMITS)
        return
    with pytest.raises(MethodError) as err:
        check_sort(sort, LIMITS)
    assert err.value.type == "unsupportedSort"
    assert err.value.description == (
        "the sort has 3 comparators: the limit (max_sort_comparators) is 2"
    )


def test_query_args_check_the_limits_before_parsing_the_sort() -> None:
    # the 10,001st comparator is malformed: the count alone refuses the sort
    sort: list[Any] = [{"property": "size"}] * 10_000 + [42]
    with pytest.raises(MethodError) as err:
        QueryArgs.parse({"accountId": "A", "sort": sort})
    assert err.value.type == "unsupportedSort"
    with pytest.raises(MethodError) as err:
        QueryArgs.parse({"accountId": "A", "filter": any_of(*[{"x": 1}] * 101)})
    assert err.value.type == "unsupportedFilter"
    assert "max_filter_conditions) is 100" in str(err.value.description)


# --- every query method, before any work --------------------------------------------------

QUERY_METHODS = [
    *sorted(name for name in REGISTRY if name.endswith(("/query", "/queryChanges"))),
    "SearchSnippet/get",
]

HEAVY = [  # the costly requests, as sent to a proxy without these limits
    ({"filter": any_of(*[{"subject": f"s{i}"} for i in range(5_000)])}, "max_filter_conditions"),
    ({"filter": any_of(*[{"subject": f"{i}"} for i in range(100_000)])}, "max_filter_conditions"),
    (
        {"filter": {"operator": "AND", "conditions": [{"inMailbox": "M"}] * 2_000}},
        "max_filter_conditions",
    ),
    ({"filter": {"inMailboxOtherThan": ["M"] * 2_000}}, "max_filter_conditions"),
    ({"filter": nested(100_000, {})}, "max_filter_depth"),
    ({"filter": {"text": "x" * 1_000_000}}, "max_filter_string_length"),
    ({"sort": [{"property": "subject"}] * 10_000}, "max_sort_comparators"),
]


@pytest.fixture
async def world(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    store = await Store.open(":memory:")
    w = World(store, Config())
    await w.setup()

    async def no_work(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the limits are checked before the cache or the upstream")

    monkeypatch.setattr(MethodContext, "refresh", no_work)
    monkeypatch.setattr(MethodContext, "read", no_work)
    monkeypatch.setattr(Store, "run", no_work)
    yield w
    monkeypatch.undo()
    await store.aclose()


@pytest.mark.parametrize(
    ("method", "args", "limit"),
    [
        (method, args, limit)
        for method in QUERY_METHODS
        for args, limit in HEAVY
        if not (method == "SearchSnippet/get" and "sort" in args)  # it takes no sort
    ],
)
async def test_every_query_method_refuses_heavy_arguments_first_core_qry_04(
    method: str, args: dict[str, Any], limit: str, world: World
) -> None:
    extra: dict[str, Any] = {}
    if method.endswith("/queryChanges"):
        extra["sinceQueryState"] = "s1"
    if method == "SearchSnippet/get":
        extra["emailIds"] = ["e1"]
    with pytest.raises(MethodError) as err:
        await REGISTRY[method].handler(world.context(), call(method, {**args, **extra}))
    assert err.value.type == ("unsupportedSort" if "sort" in args else "unsupportedFilter")
    assert limit in str(err.value.description)


# --- /get properties ------------------------------------------------------------------------


def test_get_args_bound_the_distinct_properties() -> None:
    raw = {"accountId": "A", "properties": [f"p{i % 3}" for i in range(500)]}
    args = GetArgs.parse(raw, known_properties={"p0", "p1", "p2"}, max_objects=10)
    assert args.properties == ["id", "p0", "p1", "p2"]  # duplicates count once
    many = {"accountId": "A", "properties": [f"p{i}" for i in range(101)]}
    with pytest.raises(MethodError) as err:
        GetArgs.parse(many, known_properties=_Anything(), max_objects=10)
    assert err.value.type == "invalidArguments"
    assert err.value.description == (
        "'properties' has 101 entries: the limit (max_properties) is 100"
    )


class _Anything(frozenset[str]):
    def __contains__(self, item: object) -> bool:
        return True


HEADERS = [f"header:X-Custom-{i}:asText" for i in range(10_000)]


@pytest.mark.parametrize(
    ("method", "args", "argument"),
    [
        ("Email/get", {"ids": ["e1"], "properties": HEADERS}, "properties"),
        ("Email/get", {"ids": ["e1"], "bodyProperties": HEADERS}, "bodyProperties"),
        ("Email/parse", {"blobIds": ["b1"], "properties": HEADERS}, "properties"),
        ("Email/parse", {"blobIds": ["b1"], "bodyProperties": HEADERS}, "bodyProperties"),
    ],
)
async def test_email_header_properties_are_bounded_before_any_work(
    method: str, args: dict[str, Any], argument: str, world: World
) -> None:
    with pytest.raises(MethodError) as err:
        await REGISTRY[method].handler(world.context(), call(method, args))
    assert err.value.type == "invalidArguments"
    assert err.value.description == (
        f"'{argument}' has 10000 entries: the limit (max_properties) is 100"
    )


# --- upstream searches ------------------------------------------------------------------------

FIVE_SEARCHES = [{"text": "a"}, {"body": "b"}, {"header": ["List-Id"]}, {"text": "c"}]
FIVE_SEARCHES += [{"header": ["List-Id", "x"]}, {"text": "a"}]  # the same text counts once


def test_five_distinct_upstream_searches_are_planned() -> None:
    p = email_query.plan(any_of(*FIVE_SEARCHES), [], {})
    assert len(p.terms) == 5


@pytest.mark.parametrize("method", ["Email/query", "Email/queryChanges"])
async def test_a_sixth_upstream_search_is_refused_before_any_work(
    method: str, world: World
) -> None:
    args: dict[str, Any] = {"filter": any_of(*FIVE_SEARCHES, {"body": "sixth"})}
    if method == "Email/queryChanges":
        args["sinceQueryState"] = "s1"
    with pytest.raises(MethodError) as err:
        await REGISTRY[method].handler(world.context(), call(method, args))
    assert err.value.type == "unsupportedFilter"
    assert err.value.description == (
        "the filter has 6 different text, body or header conditions, each searched for in "
        "the IMAP server: the limit (max_search_terms) is 5"
    )


def test_the_defaults_are_the_configs() -> None:
    config = LimitsConfig()
    for field in dataclasses.fields(QueryLimits):
        assert getattr(QueryLimits(), field.name) == getattr(config, field.name), field.name
