"""The algorithms every data type shares (RFC 8620 §5.2, §5.5, §5.6), implemented once.

- :func:`compute_changes`: ``Foo/changes`` over change rows, with paging inside one seq.
- :func:`validate_filter` / :func:`matches`: FilterOperator trees.
- :func:`collation_key` / :func:`sort_records`: comparators with RFC 4790 collations.
- :func:`query_window`: ``position`` / ``anchor`` / ``limit`` of ``Foo/query``.
- :func:`query_changes`: the ``removed`` / ``added`` lists of ``Foo/queryChanges``.
"""

from __future__ import annotations

import contextlib
import unicodedata
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, TypeAlias, TypeVar

from imapjmap.jmap.args import COLLATIONS, Comparator, QueryArgs
from imapjmap.jmap.errors import MethodError, MethodErrorType, invalid_arguments
from imapjmap.jmap.limits import MAX_FILTER_DEPTH
from imapjmap.jmap.state import State
from imapjmap.jmap.wire import Json, JsonObject

__all__ = [
    "ChangeRow",
    "ChangesResult",
    "Filter",
    "FilterOperator",
    "QueryChangesResult",
    "collation_key",
    "compute_changes",
    "conditions_of",
    "matches",
    "query_changes",
    "query_window",
    "sort_records",
    "validate_filter",
]

T = TypeVar("T")

# --- /changes ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChangeRow:
    """One object's change history, as the cache keeps it.

    ``updated_seq`` is the seq of its last change (``created_seq <= updated_seq``); a
    destroyed object is a tombstone with ``destroyed_seq`` set.
    """

    id: str
    created_seq: int
    updated_seq: int
    destroyed_seq: int | None = None

    @property
    def last_seq(self) -> int:
        if self.destroyed_seq is None:
            return self.updated_seq
        return max(self.updated_seq, self.destroyed_seq)


@dataclass(frozen=True, slots=True)
class ChangesResult:
    created: list[str]
    updated: list[str]
    destroyed: list[str]
    new_state: State
    has_more: bool


def compute_changes(
    rows: Iterable[ChangeRow], since: State, current_seq: int, max_changes: int | None
) -> ChangesResult:
    """The changes after ``since`` up to ``current_seq`` (the type's current state).

    ``rows`` may be a superset (e.g. every row touched after ``since.seq``); read them and
    ``current_seq`` in one snapshot.  Paging (CORE-CHG-01) runs in rounds: a round reports
    what changed between its base ``since.seq`` and its end ``upto`` (the state current when
    the round began), in id order — ids never move, while a row's change seq moves forward
    whenever it changes again, so an order by seq could skip or repeat a row between pages.

    Classification within a round (CORE-CHG-02): created after the base and not destroyed
    by ``upto`` → ``created``; created and destroyed → omitted; destroyed by ``upto`` →
    ``destroyed``; otherwise ``updated``.  A row created after ``upto`` waits for the next
    round, so it is never reported created twice (CORE-CHG-03); a row changed after
    ``upto`` is reported again, as updated or destroyed, in the next round.

    Raises:
        MethodError: cannotCalculateChanges when ``since`` is ahead of ``current_seq``.
    """
    upto = since.upto if since.upto is not None else current_seq
    if since.seq > current_seq or upto > current_seq:
        raise MethodError(MethodErrorType.CANNOT_CALCULATE_CHANGES, "the state is in the future")
    if max_changes is not None and max_changes < 1:
        raise ValueError("max_changes must be positive")
    pending = sorted(
        (
            r
            for r in rows
            if r.last_seq > since.seq
            and r.created_seq <= upto
            and (since.after_id is None or r.id > since.after_id)
        ),
        key=lambda r: r.id,
    )
    lists: dict[str, list[str]] = {"created": [], "updated": [], "destroyed": []}
    reported = 0
    last_id: str | None = None
    for row in pending:
        kind = _kind_of_change(row, since.seq, upto)
        if kind is None:
            continue
        if reported == max_changes:
            assert last_id is not None
            end = State(since.epoch, since.seq, last_id, upto)
            return ChangesResult(
                lists["created"], lists["updated"], lists["destroyed"], end, has_more=True
            )
        lists[kind].append(row.id)
        reported += 1
        last_id = row.id
    return ChangesResult(
        lists["created"],
        lists["updated"],
        lists["destroyed"],
        State(since.epoch, upto),
        has_more=upto < current_seq,
    )


def _kind_of_change(row: ChangeRow, base: int, upto: int) -> str | None:
    created = row.created_seq > base
    if row.destroyed_seq is not None and row.destroyed_seq <= upto:
        return None if created else "destroyed"
    return "created" if created else "updated"


# --- filters ----------------------------------------------------------------------------

_OPERATORS: Final = frozenset({"AND", "OR", "NOT"})


@dataclass(frozen=True, slots=True)
class FilterOperator:
    """``{operator: "AND"|"OR"|"NOT", conditions: [...]}``; NOT = none of them match."""

    operator: str
    conditions: tuple[Filter, ...]


Filter: TypeAlias = "FilterOperator | JsonObject"
"""A validated filter tree: operators, with FilterCondition objects (raw dicts) as leaves."""


def validate_filter(
    filter: Json, validate_condition: Callable[[JsonObject], None]
) -> Filter | None:
    """Check a ``filter`` argument; ``validate_condition`` checks each FilterCondition.

    An object with an ``operator`` member is a FilterOperator, anything else a condition.
    ``conditions`` may be any list, even an empty one (RFC 8620 §5.5 sets no minimum):
    empty AND and NOT match everything, empty OR matches nothing.

    Raises:
        MethodError: unsupportedFilter for an unknown operator (CORE-QRY-04) or a filter
            nested absurdly deep; invalidArguments for a malformed operator object; and
            whatever ``validate_condition`` raises (normally unsupportedFilter).
    """
    if filter is None:
        return None
    return _validate(filter, validate_condition, 0)


def _validate(node: Json, validate_condition: Callable[[JsonObject], None], depth: int) -> Filter:
    if not isinstance(node, dict):
        raise invalid_arguments("'filter' must be made of FilterOperator/FilterCondition objects")
    if depth > MAX_FILTER_DEPTH:
        raise MethodError(MethodErrorType.UNSUPPORTED_FILTER, "the filter is nested too deeply")
    if "operator" not in node:
        validate_condition(node)
        return node
    operator, conditions = node["operator"], node.get("conditions")
    if (
        node.keys() != {"operator", "conditions"}
        or not isinstance(operator, str)
        or not isinstance(conditions, list)
    ):
        raise invalid_arguments("a FilterOperator is {operator: String, conditions: Array}")
    if operator not in _OPERATORS:
        raise MethodError(
            MethodErrorType.UNSUPPORTED_FILTER, f"unknown filter operator {str(operator)[:20]!r}"
        )
    children = tuple(_validate(c, validate_condition, depth + 1) for c in conditions)
    return FilterOperator(operator, children)


def matches(filter: Filter | None, predicate: Callable[[JsonObject], bool]) -> bool:
    """Evaluate a filter tree; ``predicate`` decides each FilterCondition."""
    if filter is None:
        return True
    if not isinstance(filter, FilterOperator):
        return predicate(filter)
    results = (matches(c, predicate) for c in filter.conditions)
    if filter.operator == "AND":
        return all(results)
    if filter.operator == "OR":
        return any(results)
    return not any(results)  # NOT


def conditions_of(filter: Filter | None) -> Iterator[JsonObject]:
    """Every FilterCondition in the tree, depth first (to plan how to run a query)."""
    if filter is None:
        return
    if isinstance(filter, FilterOperator):
        for child in filter.conditions:
            yield from conditions_of(child)
    else:
        yield filter


# --- sorting ----------------------------------------------------------------------------

_ASCII_UPPER: Final = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
DEFAULT_COLLATION: Final = "i;unicode-casemap"

SortValue: TypeAlias = str | int | float | bool | None


def _octet(text: str) -> str:
    return text  # code point order is UTF-8 octet order


def _ascii_casemap(text: str) -> str:
    return text.translate(_ASCII_UPPER)  # RFC 4790 §9.2: a-z become A-Z, nothing else


def _unicode_casemap(text: str) -> str:
    # RFC 5051 titlecases each character then applies NFKD.  Python has no per-character
    # simple titlecase, so we approximate with full case folding, then upper case (so
    # letters order against punctuation as titlecase letters do), then NFKD.  Strings that
    # differ only in case or compatibility form compare equal; "ß" equals "ss" (RFC 5051
    # keeps them apart), an accepted difference.
    return unicodedata.normalize("NFKD", text.casefold().upper())


_COLLATORS: Final[dict[str, Callable[[str], str]]] = {
    "i;octet": _octet,
    "i;ascii-casemap": _ascii_casemap,
    "i;unicode-casemap": _unicode_casemap,
}
assert set(_COLLATORS) == set(COLLATIONS)


def collation_key(collation: str | None) -> Callable[[str], str]:
    """A sort key function for ``collation`` (None: :data:`DEFAULT_COLLATION`).

    Raises:
        MethodError: unsupportedSort for a collation we do not implement (CORE-QRY-04).
    """
    key = _COLLATORS.get(collation or DEFAULT_COLLATION)
    if key is None:
        raise MethodError(
            MethodErrorType.UNSUPPORTED_SORT, f"unsupported collation {str(collation)[:60]!r}"
        )
    return key


def sort_records(
    records: Iterable[T],
    comparators: Sequence[Comparator],
    value_of: Callable[[T, Comparator], SortValue],
    tie_break: Callable[[T], Any],
) -> list[T]:
    """Sort by ``comparators`` (first one most significant), then ascending ``tie_break``.

    ``value_of`` gives a record's value for one comparator (strings are collated by the
    comparator's collation).  ``None`` sorts before every value when ascending.

    Raises:
        MethodError: unsupportedSort for an unknown collation.
    """
    result = sorted(records, key=tie_break)
    for comparator in reversed(comparators):  # stable sorts, least significant first
        collate = collation_key(comparator.collation)

        def key(record: T, c: Comparator = comparator, f: Callable[[str], str] = collate) -> Any:
            value = value_of(record, c)
            if value is None:
                return (0, "")
            return (1, f(value) if isinstance(value, str) else value)

        result.sort(key=key, reverse=not comparator.is_ascending)
    return result


# --- /query and /queryChanges -----------------------------------------------------------


def query_window(ids: Sequence[str], args: QueryArgs, *, max_limit: int | None) -> JsonObject:
    """Cut the page out of the full, sorted result list (CORE-QRY-01..03).

    Returns ``ids``, ``position``, ``total`` (only with calculateTotal) and ``limit`` (only
    when the server's ``max_limit`` replaced the client's limit or lack of one).

    Raises:
        MethodError: anchorNotFound; invalidArguments for a negative limit.
    """
    total = len(ids)
    if args.anchor is not None:
        try:
            position = max(0, ids.index(args.anchor) + args.anchor_offset)
        except ValueError:
            raise MethodError(MethodErrorType.ANCHOR_NOT_FOUND) from None
    else:
        position = args.position if args.position >= 0 else max(0, total + args.position)
    if args.limit is not None and args.limit < 0:
        raise invalid_arguments("'limit' must not be negative")
    limit = args.limit
    if max_limit is not None and (limit is None or limit > max_limit):
        limit = max_limit
    end = total if limit is None else position + limit
    window: JsonObject = {"ids": list(ids[position:end]), "position": position}
    if args.calculate_total:
        window["total"] = total
    if limit != args.limit:
        window["limit"] = limit
    return window


class QueryChangesResult(NamedTuple):
    removed: list[str]
    added: list[JsonObject]  # [{"id": ..., "index": ...}] in index order


def query_changes(
    new_ids: Sequence[str],
    changed_since: Collection[str],
    destroyed_since: Collection[str],
    *,
    up_to_id: str | None,
    max_changes: int | None,
) -> QueryChangesResult:
    """The standard ``removed``/``added`` computation of RFC 8620 §5.6.

    Every id changed or destroyed since the old query state is removed (extra removals are
    allowed), and every such id present in ``new_ids`` is added back at its index, so that
    applying removed then added to the old list gives the new one (CORE-QCH-01).  Ids that
    did not change keep their relative order, which holds when each object's membership and
    position depend on its own properties only; ``changed_since`` must include every id for
    which that is not so (e.g. whole threads for thread-keyword filters).

    ``up_to_id`` (when it is in ``new_ids`` and did not itself change) drops added items
    after it: unchanged items keep their order, so the client's list up to ``up_to_id`` is
    then exactly right; ``removed`` is never cut because an old index is unknown.

    Raises:
        MethodError: tooManyChanges when removed + added exceed ``max_changes`` (CORE-QCH-02).
    """
    touched = set(changed_since)
    touched.update(destroyed_since)
    last_index = len(new_ids) - 1
    if up_to_id is not None and up_to_id not in touched:
        with contextlib.suppress(ValueError):  # not in the new results: upToId is ignored
            last_index = new_ids.index(up_to_id)
    added: list[JsonObject] = [
        {"id": id_, "index": index}
        for index, id_ in enumerate(new_ids[: last_index + 1])
        if id_ in touched
    ]
    removed = sorted(touched)
    if max_changes is not None and len(removed) + len(added) > max_changes:
        raise MethodError(
            MethodErrorType.TOO_MANY_CHANGES,
            f"{len(removed) + len(added)} changes exceed maxChanges {max_changes}",
        )
    return QueryChangesResult(removed, added)
