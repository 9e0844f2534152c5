"""PatchObject (RFC 8620 §5.3, CORE-SET-03).

A PatchObject maps JSON Pointers *without* the leading ``/`` to new values:

- ``~1`` and ``~0`` escapes are decoded; any other ``~`` is invalid;
- a pointer must not reach into an array (a whole array may be replaced);
- every part but the last must already exist, as an object;
- no key may be a path prefix of another (``"keywords"`` with ``"keywords/$seen"``);
- ``null`` removes the member (the data type decides what "default" means beyond that).

Every violation is SetError ``invalidPatch`` with a description.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import NoReturn

from imapjmap.jmap.errors import SetError, SetErrorType
from imapjmap.jmap.refs import PointerError, unescape_token
from imapjmap.jmap.wire import Json, JsonObject

__all__ = ["apply_patch", "parse_patch"]

PatchPath = tuple[str, ...]


def parse_patch(patch: JsonObject) -> list[tuple[PatchPath, Json]]:
    """Decode and check the keys of a PatchObject, keeping the client's order.

    Data types that interpret patches themselves (``mailboxIds/<id>``, ``keywords/<kw>``)
    use this instead of :func:`apply_patch`.

    Raises:
        SetError: invalidPatch for a bad escape, an empty key, or overlapping keys.
    """
    parsed: list[tuple[PatchPath, Json]] = []
    for key, value in patch.items():
        if key == "":
            _invalid("a patch key must not be empty")
        try:
            path = tuple(unescape_token(token) for token in key.split("/"))
        except PointerError as exc:
            _invalid(f"{key[:100]!r}: {exc}")
        parsed.append((path, value))
    paths = {path for path, _ in parsed}
    for path in paths:
        for prefix in _proper_prefixes(path):
            if prefix in paths:
                _invalid(f"{_show(prefix)!r} and {_show(path)!r} overlap")
    return parsed


def apply_patch(obj: JsonObject, patch: JsonObject) -> JsonObject:
    """Return a deep copy of ``obj`` with ``patch`` applied; ``obj`` is left untouched.

    Raises:
        SetError: invalidPatch (see the module docstring).
    """
    result = copy.deepcopy(obj)
    for path, value in parse_patch(patch):
        parent = result
        for depth, token in enumerate(path[:-1]):
            child = parent.get(token)
            if isinstance(child, list):
                _invalid(f"{_show(path)!r} points into an array at {_show(path[: depth + 1])!r}")
            if not isinstance(child, dict):
                _invalid(f"{_show(path)!r}: {_show(path[: depth + 1])!r} is not an object")
            parent = child
        if value is None:
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = copy.deepcopy(value)
    return result


def _proper_prefixes(path: PatchPath) -> Iterator[PatchPath]:
    for length in range(1, len(path)):
        yield path[:length]


def _show(path: PatchPath) -> str:
    text = "/".join(t.replace("~", "~0").replace("/", "~1") for t in path)
    return text if len(text) <= 100 else text[:100] + "..."


def _invalid(description: str) -> NoReturn:
    raise SetError(SetErrorType.INVALID_PATCH, description)
