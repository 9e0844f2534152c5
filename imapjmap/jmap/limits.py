"""Bounds on the work one method call may ask for: filters, sorts, upstream searches and
the properties of a /get.

A filter or a sort is cheap to send and expensive to run: every condition is evaluated on
every candidate email, every comparator is one more pass of the sort, and the strings of
``text``/``body``/``header`` go to the upstream's SEARCH.  These checks run on the raw
arguments before anything else (no cache, no IMAP) and cost at most ``limit + 1`` steps,
whatever was sent: the walk is iterative (a filter nested 100,000 deep is no recursion
problem) and stops at the first node over a limit.

What counts as a condition: each FilterOperator, each property of a FilterCondition, and
each item of a property whose value is a list (``inMailboxOtherThan``, EmailSubmission's
``emailIds``...): ``{"inMailboxOtherThan": [a, b, c]}`` is three "not in" tests.

A filter over a limit is ``unsupportedFilter``, a sort over one ``unsupportedSort`` (the
errors RFC 8620 §5.5 gives for a filter or sort the server will not run); the description
names the limit and its value.  Malformed shapes are left to the parsers that come after.

Email/query's ``text``, ``body`` and ``header`` conditions are answered by the upstream:
each distinct one is a ``UID SEARCH`` in every mailbox in scope, which on a big mailbox
without a full-text index reads every message.  :func:`check_search_terms` bounds how many
distinct ones a query may have (``unsupportedFilter``).

One more argument drives the cost of a /get: its ``properties`` (and Email's
``bodyProperties``).  Most types know a few dozen, but Email accepts any ``header:Name``
form, and each one asked for is looked up in every message and returned for every email:
:func:`check_properties` bounds them (``invalidArguments``; ``requestTooLarge`` is for ids).
"""

from __future__ import annotations

from collections.abc import Sized
from dataclasses import dataclass
from typing import Final

from imapjmap.jmap.errors import MethodError, MethodErrorType, invalid_arguments
from imapjmap.jmap.wire import Json

__all__ = [
    "DEFAULT_MAX_PROPERTIES",
    "MAX_FILTER_DEPTH",
    "QueryLimits",
    "check_filter",
    "check_properties",
    "check_search_terms",
    "check_sort",
]

MAX_FILTER_DEPTH: Final = 50
"""The ceiling of ``max_filter_depth``: the filter code past this check is recursive."""
DEFAULT_MAX_PROPERTIES: Final = 100
"""The config's default ``max_properties``."""


@dataclass(frozen=True, slots=True)
class QueryLimits:
    """The ``[limits]`` keys of the config that bound a query (defaults: config's)."""

    max_filter_conditions: int = 100
    max_filter_depth: int = 10
    max_filter_string_length: int = 1000
    max_sort_comparators: int = 10
    max_search_terms: int = 5


def _unsupported_filter(what: str, key: str, value: int) -> MethodError:
    return MethodError(MethodErrorType.UNSUPPORTED_FILTER, f"{what}: the limit ({key}) is {value}")


def check_filter(raw: Json, limits: QueryLimits) -> None:
    """Refuse a ``filter`` argument that is too big, too deep or has too long a string.

    Raises:
        MethodError: unsupportedFilter naming ``max_filter_conditions``,
            ``max_filter_depth`` or ``max_filter_string_length``.
    """
    if raw is None:
        return
    budget = limits.max_filter_conditions
    counted = 0
    stack: list[tuple[Json, int]] = [(raw, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limits.max_filter_depth:
            raise _unsupported_filter(
                f"the filter is nested more than {limits.max_filter_depth} deep",
                "max_filter_depth",
                limits.max_filter_depth,
            )
        if not isinstance(node, dict):
            counted += 1
        elif "operator" in node:
            counted += 1
            children = node.get("conditions")
            if isinstance(children, list):
                # each pending node counts at least one: refuse a huge list before pushing it
                if counted + len(stack) + len(children) > budget:
                    counted = budget + 1
                else:
                    stack.extend((child, depth + 1) for child in children)
        else:
            counted += _condition_cost(node, limits)
        if counted > budget:
            raise _unsupported_filter(
                f"the filter has more than {budget} conditions",
                "max_filter_conditions",
                budget,
            )


def _condition_cost(condition: dict[str, Json], limits: QueryLimits) -> int:
    """How many conditions one FilterCondition counts for; its strings are checked.

    A list longer than the whole budget is not read: its length alone refuses it.
    """
    cost = 0
    for value in condition.values():
        items = value if isinstance(value, list) else [value]
        cost += max(1, len(items))
        if cost > limits.max_filter_conditions:
            break
        for item in items:
            if isinstance(item, str):
                _check_string(item, limits)
    return max(1, cost)


def _check_string(value: str, limits: QueryLimits) -> None:
    if len(value) > limits.max_filter_string_length:
        raise _unsupported_filter(
            f"a filter string is {len(value)} characters long",
            "max_filter_string_length",
            limits.max_filter_string_length,
        )


def check_sort(raw: Json, limits: QueryLimits) -> None:
    """Refuse a ``sort`` argument with too many comparators.

    Raises:
        MethodError: unsupportedSort naming ``max_sort_comparators``.
    """
    if isinstance(raw, list) and len(raw) > limits.max_sort_comparators:
        raise MethodError(
            MethodErrorType.UNSUPPORTED_SORT,
            f"the sort has {len(raw)} comparators: the limit (max_sort_comparators) is "
            f"{limits.max_sort_comparators}",
        )


def check_properties(name: str, properties: Sized, maximum: int) -> None:
    """Refuse a ``properties``-like argument with more than ``maximum`` distinct entries.

    Raises:
        MethodError: invalidArguments naming ``max_properties``.
    """
    if len(properties) > maximum:
        raise invalid_arguments(
            f"'{name}' has {len(properties)} entries: the limit (max_properties) is {maximum}"
        )


def check_search_terms(count: int, limits: QueryLimits) -> None:
    """Refuse a query with more than ``max_search_terms`` distinct upstream searches.

    Raises:
        MethodError: unsupportedFilter naming ``max_search_terms``.
    """
    if count > limits.max_search_terms:
        raise _unsupported_filter(
            f"the filter has {count} different text, body or header conditions, each "
            "searched for in the IMAP server",
            "max_search_terms",
            limits.max_search_terms,
        )
