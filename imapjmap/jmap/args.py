"""Typed parsers for the standard method arguments (RFC 8620 §5.1-§5.6).

Raw JSON becomes a frozen dataclass within one call.  Shared rules:

- An omitted argument takes its default, ``null`` wherever the type allows it (CORE-REQ-05).
  ``null`` is also accepted for arguments that have a non-null default (``position``,
  ``calculateTotal``, ...) and means that default.
- An argument of the wrong type, a missing required one, or an unknown one is
  ``invalidArguments`` with a description naming it.
- Type-specific arguments are declared with ``extra=`` and come back, unchecked and only
  when present, in the ``extra`` dict; the data type's handler validates them.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Final, NoReturn

from imapjmap.jmap.errors import MethodError, MethodErrorType, invalid_arguments
from imapjmap.jmap.limits import (
    DEFAULT_MAX_PROPERTIES,
    QueryLimits,
    check_filter,
    check_properties,
    check_sort,
)
from imapjmap.jmap.wire import Json, JsonObject, is_id, is_int, is_unsigned_int

__all__ = [
    "COLLATIONS",
    "ChangesArgs",
    "Comparator",
    "GetArgs",
    "QueryArgs",
    "QueryChangesArgs",
    "SetArgs",
]

COLLATIONS: Final = ("i;ascii-casemap", "i;octet", "i;unicode-casemap")
"""Collation algorithms the standard sort helpers implement (session collationAlgorithms)."""

DEFAULT_QUERY_LIMITS: Final = QueryLimits()


class _Reader:
    """Reads named arguments from a raw dict and rejects the ones nobody asked for."""

    def __init__(self, raw: JsonObject, extra: Collection[str]) -> None:
        self.raw = raw
        self.extra_names = frozenset(extra)
        self.used: set[str] = set()

    def get(self, name: str) -> Json:
        self.used.add(name)
        return self.raw.get(name)

    def required_str(self, name: str) -> str:
        value = self.get(name)
        if not isinstance(value, str):
            _bad(name, "is required and must be a String")
        return value

    def optional_str(self, name: str) -> str | None:
        value = self.get(name)
        if value is not None and not isinstance(value, str):
            _bad(name, "must be a String or null")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            _bad(name, "must be a Boolean")
        return value

    def integer(self, name: str, default: int) -> int:
        value = self.get(name)
        if value is None:
            return default
        if not is_int(value):
            _bad(name, "must be an Int")
        return int(value)

    def unsigned(self, name: str, *, positive: bool = False) -> int | None:
        value = self.get(name)
        if value is None:
            return None
        if not is_unsigned_int(value) or (positive and value == 0):
            _bad(name, "must be a positive UnsignedInt" if positive else "must be an UnsignedInt")
        return int(value)

    def string_list(self, name: str) -> list[str] | None:
        """A ``String[]|null``, duplicates removed keeping the first occurrence."""
        value = self.get(name)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            _bad(name, "must be an array of Strings or null")
        return list(dict.fromkeys(value))

    def object_map(self, name: str, *, keys_are_ids: bool) -> dict[str, JsonObject] | None:
        value = self.get(name)
        if value is None:
            return None
        if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
            _bad(name, "must be an object whose values are objects, or null")
        if keys_are_ids:
            for key in value:
                if not is_id(key):
                    _bad(name, f"key {key[:40]!r} is not a valid Id")
        return dict(value)

    def finish(self) -> dict[str, Json]:
        """Check for unknown arguments; return the declared extra ones that are present."""
        for name in self.raw:
            if name not in self.used and name not in self.extra_names:
                raise invalid_arguments(f"unknown argument '{name[:60]}'")
        return {name: self.raw[name] for name in self.extra_names if name in self.raw}


def _bad(name: str, why: str) -> NoReturn:
    raise invalid_arguments(f"'{name}' {why}")


def _too_large(what: str, count: int, maximum: int) -> MethodError:
    return MethodError(
        MethodErrorType.REQUEST_TOO_LARGE, f"{count} {what} exceed the maximum of {maximum}"
    )


@dataclass(frozen=True, slots=True)
class GetArgs:
    """``Foo/get`` (RFC 8620 §5.1)."""

    account_id: str
    ids: list[str] | None
    properties: list[str] | None
    extra: dict[str, Json] = field(default_factory=dict)

    @classmethod
    def parse(
        cls,
        raw: JsonObject,
        *,
        known_properties: Collection[str],
        max_objects: int,
        extra: Collection[str] = (),
        max_properties: int = DEFAULT_MAX_PROPERTIES,
    ) -> GetArgs:
        """Parse; ids of any string value are kept (unknown ones end up in ``notFound``).

        ``known_properties`` is only used with ``in``, so a container whose ``__contains__``
        accepts patterns (``header:*``) works.  ``id`` is always returned (CORE-GET-01),
        so it is added to ``properties`` when missing.

        Raises:
            MethodError: invalidArguments (CORE-GET-03; more than ``max_properties``
                distinct properties), requestTooLarge.
        """
        reader = _Reader(raw, extra)
        account_id = reader.required_str("accountId")
        ids = reader.string_list("ids")
        if ids is not None and len(ids) > max_objects:
            raise _too_large("ids", len(ids), max_objects)
        properties = reader.string_list("properties")
        if properties is not None:
            check_properties("properties", properties, max_properties)
            unknown = [p for p in properties if p != "id" and p not in known_properties]
            if unknown:
                raise invalid_arguments(
                    "unknown properties: " + ", ".join(p[:60] for p in unknown[:10])
                )
            if "id" not in properties:
                properties.insert(0, "id")
        return cls(account_id, ids, properties, reader.finish())


@dataclass(frozen=True, slots=True)
class ChangesArgs:
    """``Foo/changes`` (RFC 8620 §5.2); ``maxChanges`` must be > 0 when given."""

    account_id: str
    since_state: str
    max_changes: int | None
    extra: dict[str, Json] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: JsonObject, *, extra: Collection[str] = ()) -> ChangesArgs:
        reader = _Reader(raw, extra)
        account_id = reader.required_str("accountId")
        since_state = reader.required_str("sinceState")
        max_changes = reader.unsigned("maxChanges", positive=True)
        return cls(account_id, since_state, max_changes, reader.finish())


@dataclass(frozen=True, slots=True)
class SetArgs:
    """``Foo/set`` (RFC 8620 §5.3).

    ``create`` keys must be Ids (creation ids); ``update`` keys and ``destroy`` items are any
    strings, since they may be ``#creationId`` references.  ``destroy`` is deduplicated.
    """

    account_id: str
    if_in_state: str | None
    create: dict[str, JsonObject] | None
    update: dict[str, JsonObject] | None
    destroy: list[str] | None
    extra: dict[str, Json] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: JsonObject, *, max_objects: int, extra: Collection[str] = ()) -> SetArgs:
        """Raises MethodError invalidArguments, or requestTooLarge (CORE-SET-06)."""
        reader = _Reader(raw, extra)
        account_id = reader.required_str("accountId")
        if_in_state = reader.optional_str("ifInState")
        create = reader.object_map("create", keys_are_ids=True)
        update = reader.object_map("update", keys_are_ids=False)
        destroy = reader.string_list("destroy")
        total = len(create or ()) + len(update or ()) + len(destroy or ())
        if total > max_objects:
            raise _too_large("objects in create, update and destroy", total, max_objects)
        return cls(account_id, if_in_state, create, update, destroy, reader.finish())


@dataclass(frozen=True, slots=True)
class Comparator:
    """One sort criterion (RFC 8620 §5.5; ``keyword`` is RFC 8621 §4.4.2)."""

    property: str
    is_ascending: bool = True
    collation: str | None = None
    keyword: str | None = None


def _parse_sort(
    reader: _Reader, sort_properties: Collection[str] | None, limits: QueryLimits
) -> list[Comparator]:
    raw = reader.get("sort")
    if raw is None:
        return []
    check_sort(raw, limits)
    if not isinstance(raw, list):
        _bad("sort", "must be an array of Comparators or null")
    return [_parse_comparator(item, sort_properties) for item in raw]


def _parse_comparator(raw: Json, sort_properties: Collection[str] | None) -> Comparator:
    if not isinstance(raw, dict):
        _bad("sort", "items must be Comparator objects")
    # Other keys are ignored: clients send more than RFC 8620 §5.5 defines (jmapc puts
    # the query's anchorOffset, calculateTotal and position in each Comparator), and a
    # key this server does not know cannot change how it sorts.
    comparator = _Reader(raw, ())
    prop = comparator.required_str("property")
    is_ascending = comparator.boolean("isAscending", True)
    collation = comparator.optional_str("collation")
    keyword = comparator.optional_str("keyword")
    if sort_properties is not None and prop not in sort_properties:
        raise MethodError(MethodErrorType.UNSUPPORTED_SORT, f"cannot sort by {prop[:60]!r}")
    if collation is not None and collation not in COLLATIONS:
        raise MethodError(
            MethodErrorType.UNSUPPORTED_SORT, f"unsupported collation {collation[:60]!r}"
        )
    return Comparator(prop, is_ascending, collation, keyword)


def _parse_filter(reader: _Reader, limits: QueryLimits) -> JsonObject | None:
    value = reader.get("filter")
    if value is not None and not isinstance(value, dict):
        _bad("filter", "must be a FilterOperator, a FilterCondition or null")
    check_filter(value, limits)
    return value


@dataclass(frozen=True, slots=True)
class QueryArgs:
    """``Foo/query`` (RFC 8620 §5.5).  ``filter`` is raw; see ``standard.validate_filter``."""

    account_id: str
    filter: JsonObject | None
    sort: list[Comparator]
    position: int = 0
    anchor: str | None = None
    anchor_offset: int = 0
    limit: int | None = None
    calculate_total: bool = False
    extra: dict[str, Json] = field(default_factory=dict)

    @classmethod
    def parse(
        cls,
        raw: JsonObject,
        *,
        sort_properties: Collection[str] | None = None,
        extra: Collection[str] = (),
        limits: QueryLimits = DEFAULT_QUERY_LIMITS,
    ) -> QueryArgs:
        """Parse; ``sort_properties`` (when given) lists what may be sorted on.

        The filter and the sort are checked against ``limits`` before anything else reads
        them (see :mod:`imapjmap.jmap.limits`).

        Raises:
            MethodError: invalidArguments (a negative ``limit`` too, CORE-QRY-03);
                unsupportedSort for an unknown sort property or collation (CORE-QRY-04) or
                too many comparators; unsupportedFilter for a filter over the limits.
        """
        reader = _Reader(raw, extra)
        return cls(
            account_id=reader.required_str("accountId"),
            filter=_parse_filter(reader, limits),
            sort=_parse_sort(reader, sort_properties, limits),
            position=reader.integer("position", 0),
            anchor=reader.optional_str("anchor"),
            anchor_offset=reader.integer("anchorOffset", 0),
            limit=reader.unsigned("limit"),
            calculate_total=reader.boolean("calculateTotal", False),
            extra=reader.finish(),
        )


@dataclass(frozen=True, slots=True)
class QueryChangesArgs:
    """``Foo/queryChanges`` (RFC 8620 §5.6)."""

    account_id: str
    filter: JsonObject | None
    sort: list[Comparator]
    since_query_state: str
    max_changes: int | None = None
    up_to_id: str | None = None
    calculate_total: bool = False
    extra: dict[str, Json] = field(default_factory=dict)

    @classmethod
    def parse(
        cls,
        raw: JsonObject,
        *,
        sort_properties: Collection[str] | None = None,
        extra: Collection[str] = (),
        limits: QueryLimits = DEFAULT_QUERY_LIMITS,
    ) -> QueryChangesArgs:
        """Parse, with the checks of :meth:`QueryArgs.parse`."""
        reader = _Reader(raw, extra)
        return cls(
            account_id=reader.required_str("accountId"),
            filter=_parse_filter(reader, limits),
            sort=_parse_sort(reader, sort_properties, limits),
            since_query_state=reader.required_str("sinceQueryState"),
            max_changes=reader.unsigned("maxChanges"),
            up_to_id=reader.optional_str("upToId"),
            calculate_total=reader.boolean("calculateTotal", False),
            extra=reader.finish(),
        )
