"""JSON aliases, capability URNs, and the small value helpers of RFC 8620 §1."""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
import re
import time
from collections.abc import Iterator
from typing import Any, Final, NoReturn, TypeAlias

Json: TypeAlias = Any  # the JSON value space; narrowed by the parsers in jmap.args
JsonObject: TypeAlias = dict[str, Any]

CORE: Final = "urn:ietf:params:jmap:core"
MAIL: Final = "urn:ietf:params:jmap:mail"
SUBMISSION: Final = "urn:ietf:params:jmap:submission"
WEBSOCKET: Final = "urn:ietf:params:jmap:websocket"
BLOB: Final = "urn:ietf:params:jmap:blob"
QUOTA: Final = "urn:ietf:params:jmap:quota"
VACATION: Final = "urn:ietf:params:jmap:vacationresponse"
SIEVE: Final = "urn:ietf:params:jmap:sieve"
MDN: Final = "urn:ietf:params:jmap:mdn"

ERROR_URN_PREFIX: Final = "urn:ietf:params:jmap:error:"

_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,255}")

MAX_INT: Final = 2**53 - 1


def is_id(value: object) -> bool:
    """True when ``value`` is a valid JMAP Id (RFC 8620 §1.2, CORE-TYPE-01)."""
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


def is_unsigned_int(value: object) -> bool:
    """True for a JSON integer in [0, 2^53-1] (booleans are not integers here)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_INT


def is_int(value: object) -> bool:
    """True for a JSON integer in [-2^53+1, 2^53-1]."""
    return isinstance(value, int) and not isinstance(value, bool) and -MAX_INT <= value <= MAX_INT


def utc_date(value: dt.datetime) -> str:
    """Format as a UTCDate: RFC 3339, ``Z``, no fractional seconds (CORE-TYPE-03)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_date_of_timestamp(seconds: float) -> str:
    """:func:`utc_date` of a POSIX timestamp (whole seconds, rounded down).

    Every Email's ``receivedAt`` goes through here: ``time.strftime`` costs a quarter of
    building, converting and formatting a ``datetime``.  The C library does not pad a year
    below 1000 to four digits, which RFC 3339 requires.
    """
    t = time.gmtime(math.floor(seconds))
    if t.tm_year >= 1000:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", t)
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
        f"T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}Z"
    )


def parse_utc_date(value: object) -> dt.datetime | None:
    """Parse a UTCDate (must end in ``Z``); None when it is not one."""
    if not isinstance(value, str) or not value.endswith("Z"):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value[:-1] + "+00:00")
    except ValueError:
        return None
    return parsed if "T" in value else None


class EncodedObject(dict[str, Any]):
    """A JSON object that carries its own encoding, made once and shared by many answers
    (an Email's list properties, the same until the Email changes): :func:`encode_in_parts`
    copies :attr:`json` instead of encoding the object again.

    Shared, so it cannot be changed in place (nor are the values in it to be); a copy
    (``copy.copy``, ``copy.deepcopy``, as result references make) is a plain ``dict``.
    """

    __slots__ = ("json",)

    def __init__(self, value: JsonObject) -> None:
        super().__init__(value)
        self.json: bytes = json.dumps(value).encode()

    def _frozen(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("an EncodedObject is shared: change a copy of it")

    __setitem__ = __delitem__ = __ior__ = _frozen
    clear = pop = popitem = setdefault = update = _frozen

    def __copy__(self) -> JsonObject:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> JsonObject:
        return {key: copy.deepcopy(item, memo) for key, item in self.items()}

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (dict(self),))


def encode_in_parts(value: Json, *, items: int = 100, depth: int = 4) -> Iterator[bytes]:
    """``json.dumps(value).encode()``, byte for byte, in parts that each cost one bounded
    ``json.dumps`` call: a list longer than ``items`` is encoded ``items`` elements at a
    time, and objects and lists are opened ``depth`` levels down to find such lists (the
    ``list`` of an Email/get of thousands sits at methodResponses / invocation / arguments).
    An :class:`EncodedObject` at any of those places, or in such a list, is not encoded
    again: its :attr:`~EncodedObject.json` is copied.

    An answer of a thousand Emails takes tens of milliseconds to encode in one call, all of
    it holding the GIL; between the parts, the caller can let other requests run.
    """
    if isinstance(value, EncodedObject):
        yield value.json
    elif isinstance(value, list) and (
        len(value) > items or any(isinstance(item, EncodedObject) for item in value)
    ):
        yield b"["
        yield from _list_items_in_parts(value, items)
        yield b"]"
    elif isinstance(value, list) and depth > 0 and value:
        yield b"["
        for n, item in enumerate(value):
            if n:
                yield b", "
            yield from encode_in_parts(item, items=items, depth=depth - 1)
        yield b"]"
    elif isinstance(value, dict) and depth > 0 and value and all(isinstance(k, str) for k in value):
        yield b"{"
        for n, (key, item) in enumerate(value.items()):
            yield (b", " if n else b"") + json.dumps(key).encode() + b": "
            yield from encode_in_parts(item, items=items, depth=depth - 1)
        yield b"}"
    else:
        yield json.dumps(value).encode()


def _list_items_in_parts(value: list[Json], items: int) -> Iterator[bytes]:
    """The items of a JSON array, comma-separated, without the brackets: up to ``items``
    plain items per ``json.dumps``, and each run of :class:`EncodedObject` as one part."""
    separator = b""
    start = 0  # the first plain item not encoded yet
    end = 0
    while end < len(value):
        if isinstance(value[end], EncodedObject):
            run = end
            while end < len(value) and isinstance(value[end], EncodedObject):
                end += 1
            if run > start:
                yield separator + json.dumps(value[start:run]).encode()[1:-1]
                separator = b", "
            yield separator + b", ".join(item.json for item in value[run:end])
            separator = b", "
            start = end
        else:
            end += 1
            if end - start == items:
                yield separator + json.dumps(value[start:end]).encode()[1:-1]
                separator = b", "
                start = end
    if end > start:
        yield separator + json.dumps(value[start:end]).encode()[1:-1]
