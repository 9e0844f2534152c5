"""JSON aliases, capability URNs, and the small value helpers of RFC 8620 §1."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Final, TypeAlias

Json: TypeAlias = Any  # the JSON value space; narrowed by the parsers in jmap.args
JsonObject: TypeAlias = dict[str, Any]

CORE: Final = "urn:ietf:params:jmap:core"
MAIL: Final = "urn:ietf:params:jmap:mail"
SUBMISSION: Final = "urn:ietf:params:jmap:submission"
WEBSOCKET: Final = "urn:ietf:params:jmap:websocket"
BLOB: Final = "urn:ietf:params:jmap:blob"
QUOTA: Final = "urn:ietf:params:jmap:quota"

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


def parse_utc_date(value: object) -> dt.datetime | None:
    """Parse a UTCDate (must end in ``Z``); None when it is not one."""
    if not isinstance(value, str) or not value.endswith("Z"):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value[:-1] + "+00:00")
    except ValueError:
        return None
    return parsed if "T" in value else None
