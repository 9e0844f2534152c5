"""Result references (RFC 8620 §3.7) and the JSON Pointer they use (RFC 6901).

An argument named ``#foo`` holds a ResultReference ``{resultOf, name, path}``; before the
method runs it is replaced by ``foo`` = the value found at ``path`` in the arguments of the
FIRST earlier response whose call id is ``resultOf``, provided that response's name equals
``name`` (CORE-REF-02; an ``error`` response therefore never matches, CORE-REF-06).

Pointer evaluation follows RFC 6901 (``~1`` is ``/``, ``~0`` is ``~``; array indexes are
decimal without leading zeros; ``-`` never resolves) plus the JMAP ``*`` token: on an array it
applies the rest of the pointer to every item and flattens array results one level
(CORE-REF-03).  On an object, ``*`` is an ordinary member name, as RFC 6901 says.

Any failure raises MethodError ``invalidResultReference`` (CORE-REF-04), except ``foo`` and
``#foo`` both present, which is ``invalidArguments`` (CORE-REF-05).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Final, NoReturn, Protocol

from imapjmap.jmap.errors import MethodError, MethodErrorType, invalid_arguments
from imapjmap.jmap.wire import Json, JsonObject

__all__ = [
    "PointerError",
    "ResponseLike",
    "evaluate_pointer",
    "resolve_references",
    "split_pointer",
    "unescape_token",
]

_REFERENCE_KEYS: Final = frozenset({"resultOf", "name", "path"})


class ResponseLike(Protocol):
    """An earlier method response: :class:`imapjmap.jmap.request.Invocation` fits."""

    @property
    def name(self) -> str: ...

    @property
    def args(self) -> JsonObject: ...

    @property
    def call_id(self) -> str: ...


class PointerError(ValueError):
    """A JSON Pointer is malformed or does not resolve; the message says why."""


def resolve_references(args: JsonObject, previous: Sequence[ResponseLike]) -> JsonObject:
    """Return ``args`` with every ``#name`` argument replaced by its value.

    ``args`` itself is never modified: a new dict is returned when there was something to
    resolve, and ``args`` unchanged otherwise.

    Args:
        args: the method's arguments as the client sent them.
        previous: the responses produced so far in this request, in order.

    Raises:
        MethodError: invalidArguments when ``name`` and ``#name`` are both present;
            invalidResultReference for a malformed reference or one that does not resolve.
    """
    if not any(key.startswith("#") for key in args):
        return args
    resolved: JsonObject = {}
    for key, value in args.items():
        if not key.startswith("#"):
            resolved[key] = value
            continue
        target = key[1:]
        if target in args:
            raise invalid_arguments(f"both '{target}' and '{key}' are given")
        if not target:
            _fail(key, "an argument name is missing after '#'")
        resolved[target] = _resolve_one(key, value, previous)
    return resolved


def _resolve_one(key: str, reference: Json, previous: Sequence[ResponseLike]) -> Json:
    if (
        not isinstance(reference, dict)
        or reference.keys() != _REFERENCE_KEYS
        or not all(isinstance(reference[k], str) for k in _REFERENCE_KEYS)
    ):
        _fail(key, "a ResultReference must be {resultOf: String, name: String, path: String}")
    result_of, name, path = reference["resultOf"], reference["name"], reference["path"]
    response = next((r for r in previous if r.call_id == result_of), None)
    if response is None:
        _fail(key, f"no earlier response has call id {result_of!r}")
    if response.name != name or name == "error":
        _fail(key, f"response {result_of!r} is {response.name!r}, not {name!r}")
    try:
        value = evaluate_pointer(response.args, path)
    except PointerError as exc:
        _fail(key, f"path {path!r} in response {result_of!r}: {exc}")
    # The referenced value also goes back to the client in its own response: never share it.
    return copy.deepcopy(value)


def _fail(key: str, why: str) -> NoReturn:
    raise MethodError(MethodErrorType.INVALID_RESULT_REFERENCE, f"{key}: {why}")


# --- JSON Pointer -----------------------------------------------------------------------


def unescape_token(token: str) -> str:
    """Decode one RFC 6901 reference token (``~1`` → ``/``, ``~0`` → ``~``).

    Raises:
        PointerError: a ``~`` not followed by ``0`` or ``1``.
    """
    if "~" not in token:
        return token
    parts = token.split("~")
    out = [parts[0]]
    for part in parts[1:]:
        if not part or part[0] not in "01":
            raise PointerError(f"bad escape '~' in token {token!r} (only ~0 and ~1)")
        out.append(("~" if part[0] == "0" else "/") + part[1:])
    return "".join(out)


def split_pointer(path: str) -> list[str]:
    """Split a JSON Pointer (``""`` or starting with ``/``) into unescaped tokens.

    Raises:
        PointerError: the pointer does not start with ``/`` or has a bad escape.
    """
    if path == "":
        return []
    if not path.startswith("/"):
        raise PointerError("a JSON Pointer must be empty or start with '/'")
    return [unescape_token(token) for token in path[1:].split("/")]


def evaluate_pointer(document: Json, path: str) -> Json:
    """Evaluate a JSON Pointer with the JMAP ``*`` extension (RFC 8620 §3.7).

    Raises:
        PointerError: malformed pointer, missing member, bad index, or a scalar in the way.
    """
    return _walk(document, split_pointer(path), 0)


def _walk(value: Json, tokens: list[str], start: int) -> Json:
    for pos in range(start, len(tokens)):
        token = tokens[pos]
        if isinstance(value, list):
            if token == "*":
                return _map_array(value, tokens, pos + 1)
            value = value[_array_index(token, len(value))]
        elif isinstance(value, dict):
            if token not in value:
                raise PointerError(f"no member {token!r}")
            value = value[token]
        else:
            raise PointerError(f"cannot apply {token!r} to a {_kind(value)}")
    return value


def _map_array(items: list[Json], tokens: list[str], start: int) -> list[Json]:
    out: list[Json] = []
    for item in items:
        mapped = _walk(item, tokens, start)
        if isinstance(mapped, list):
            out.extend(mapped)  # flatten one level (CORE-REF-03)
        else:
            out.append(mapped)
    return out


def _array_index(token: str, length: int) -> int:
    if not token.isdecimal() or not token.isascii() or (len(token) > 1 and token[0] == "0"):
        raise PointerError(f"{token!r} is not an array index")
    index = int(token)
    if index >= length:
        raise PointerError(f"index {index} is out of range (array length {length})")
    return index


def _kind(value: Json) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    return "number"
