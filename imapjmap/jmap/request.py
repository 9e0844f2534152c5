"""Parse and validate the JMAP Request envelope (RFC 8620 §3.3, §3.6.1).

Bytes in, a typed :class:`Request` out.  Every failure is a :class:`RequestError`:

- ``notJSON``: not UTF-8, not JSON, or not I-JSON (RFC 7493: duplicate member names, lone
  surrogates, NaN/Infinity, integers outside ±(2^53-1), floats that overflow a double);
- ``notRequest``: valid JSON that is not a Request object (CORE-ERR-03);
- ``unknownCapability``: a ``using`` entry the server does not support (CORE-ERR-01);
- ``limit`` with ``"limit": "maxCallsInRequest"`` (CORE-ERR-04).

Unknown top-level members are ignored.  A ``createdIds`` of ``null`` counts as absent.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Final, NoReturn

from imapjmap.jmap.errors import RequestError, RequestErrorType
from imapjmap.jmap.wire import MAX_INT, Json, JsonObject, is_id

__all__ = ["Invocation", "Request", "loads_i_json", "parse_request", "request_from_json"]

# Longest decimal integer literal that can be within ±(2^53-1): 16 digits.
_MAX_INT_DIGITS: Final = len(str(MAX_INT))


@dataclass(frozen=True, slots=True)
class Invocation:
    """One ``[name, arguments, methodCallId]`` triple (CORE-REQ-02), request or response."""

    name: str
    args: JsonObject
    call_id: str

    def to_json(self) -> list[Json]:
        return [self.name, self.args, self.call_id]


@dataclass(frozen=True, slots=True)
class Request:
    """A validated Request object.  ``created_ids`` is None when the client sent none."""

    using: frozenset[str]
    calls: list[Invocation]
    created_ids: dict[str, str] | None


def parse_request(
    body: bytes, *, supported_capabilities: Collection[str], max_calls: int
) -> Request:
    """Parse an API request body.

    Args:
        body: the raw HTTP request body.
        supported_capabilities: capability URNs this server implements.
        max_calls: the session's ``maxCallsInRequest``.

    Raises:
        RequestError: notJSON, notRequest, unknownCapability, or limit (maxCallsInRequest).
    """
    return request_from_json(
        loads_i_json(body), supported_capabilities=supported_capabilities, max_calls=max_calls
    )


def request_from_json(
    obj: Json, *, supported_capabilities: Collection[str], max_calls: int
) -> Request:
    """Validate an already decoded Request object (e.g. from a WebSocket message, whose
    extra ``@type`` and ``id`` members are ignored like any unknown member).

    Raises:
        RequestError: notRequest, unknownCapability, or limit (maxCallsInRequest).
    """
    if not isinstance(obj, dict):
        _not_request("the request must be a JSON object")
    using = _parse_using(obj)
    calls = _parse_method_calls(obj)
    created_ids = _parse_created_ids(obj)
    unknown = sorted(cap for cap in using if cap not in supported_capabilities)
    if unknown:
        raise RequestError(
            RequestErrorType.UNKNOWN_CAPABILITY,
            "unsupported capability in 'using': " + ", ".join(cap[:100] for cap in unknown[:5]),
        )
    if len(calls) > max_calls:
        raise RequestError(
            RequestErrorType.LIMIT,
            f"too many method calls: {len(calls)} > maxCallsInRequest {max_calls}",
            limit="maxCallsInRequest",
        )
    return Request(using=using, calls=calls, created_ids=created_ids)


# --- I-JSON -----------------------------------------------------------------------------


def loads_i_json(body: bytes) -> Json:
    """Decode ``body`` as I-JSON (RFC 7493), raising RequestError(notJSON) otherwise."""
    try:
        text = body.decode("utf-8")  # strict: rejects invalid and surrogate encodings
    except UnicodeDecodeError as exc:
        _not_json(f"body is not valid UTF-8 (byte {exc.start})")
    try:
        value = json.loads(
            text,
            object_pairs_hook=_object_without_duplicates,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_reject_constant,
        )
    except _NotIJson as exc:
        _not_json(str(exc))
    except RecursionError:
        _not_json("JSON is nested too deeply")
    except ValueError as exc:  # json.JSONDecodeError and friends
        _not_json(f"body is not valid JSON: {exc}")
    _check_no_lone_surrogates(value)
    return value


class _NotIJson(ValueError):
    pass


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> JsonObject:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _NotIJson(f"duplicate member name {key!r} in an object")
            seen.add(key)
    return obj


def _parse_int(literal: str) -> int:
    if len(literal.lstrip("-")) > _MAX_INT_DIGITS or abs(int(literal)) > MAX_INT:
        raise _NotIJson(f"integer {literal[:30]} is outside the I-JSON range ±(2^53-1)")
    return int(literal)


def _parse_float(literal: str) -> float:
    value = float(literal)
    if value in (float("inf"), float("-inf")):
        raise _NotIJson(f"number {literal[:30]} overflows a double")
    return value


def _reject_constant(name: str) -> NoReturn:
    raise _NotIJson(f"{name} is not a JSON value")


def _check_no_lone_surrogates(value: Json) -> None:
    """Reject strings (keys too) containing U+D800-U+DFFF, produced by lone ``\\u`` escapes."""
    stack: list[Json] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _check_string(item)
        elif isinstance(item, dict):
            for key, member in item.items():
                _check_string(key)
                stack.append(member)
        elif isinstance(item, list):
            stack.extend(item)


def _check_string(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        _not_json("string contains a lone surrogate escape")


# --- Request structure -----------------------------------------------------------------


def _parse_using(obj: JsonObject) -> frozenset[str]:
    using = obj.get("using")
    if not isinstance(using, list) or not all(isinstance(cap, str) for cap in using):
        _not_request("'using' must be an array of strings")
    return frozenset(using)


def _parse_method_calls(obj: JsonObject) -> list[Invocation]:
    raw_calls = obj.get("methodCalls")
    if not isinstance(raw_calls, list):
        _not_request("'methodCalls' must be an array")
    calls: list[Invocation] = []
    for index, raw in enumerate(raw_calls):
        if (
            not isinstance(raw, list)
            or len(raw) != 3
            or not isinstance(raw[0], str)
            or not isinstance(raw[1], dict)
            or not isinstance(raw[2], str)
        ):
            _not_request(
                f"methodCalls[{index}] must be [name: String, arguments: Object, "
                "methodCallId: String]"
            )
        calls.append(Invocation(name=raw[0], args=raw[1], call_id=raw[2]))
    return calls


def _parse_created_ids(obj: JsonObject) -> dict[str, str] | None:
    created = obj.get("createdIds")
    if created is None:
        return None
    if not isinstance(created, dict):
        _not_request("'createdIds' must be an object")
    for creation_id, real_id in created.items():
        if not is_id(creation_id) or not is_id(real_id):
            _not_request("'createdIds' must map creation ids to ids (both of type Id)")
    return dict(created)


def _not_json(detail: str) -> NoReturn:
    raise RequestError(RequestErrorType.NOT_JSON, detail)


def _not_request(detail: str) -> NoReturn:
    raise RequestError(RequestErrorType.NOT_REQUEST, detail)
