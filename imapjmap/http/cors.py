"""CORS (the Fetch standard's CORS protocol) for webmails served from another origin.

Pure: headers in, headers out; :mod:`imapjmap.http.middleware` applies them.

Rules
1. Without ``server.cors_origins`` every origin may call the API without credentials
   (``Access-Control-Allow-Origin: *``): JMAP clients send ``Authorization`` explicitly, so
   an open origin gives a page nothing it could not do with the user's password anyway.
2. An origin listed in ``server.cors_origins`` gets credentialed CORS: its own origin
   echoed, ``Access-Control-Allow-Credentials: true``.  Other origins keep Rule 1.  Once a
   list is configured the answer depends on ``Origin``, so every response says
   ``Vary: Origin`` (a shared cache must not hand one origin's answer to another).
3. A preflight allows the methods the API uses and exactly the request headers the browser
   asks for (``Access-Control-Request-Headers``), each checked to be an HTTP token; under
   credentials the ``*`` wildcard means a literal header named ``*``, so the list is echoed.
4. Responses expose the headers scripts need to read (:data:`EXPOSED`); the CORS-safelisted
   ones (Content-Type, Content-Length, Cache-Control...) are readable anyway.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Final

ALLOWED_METHODS: Final = "GET, POST, OPTIONS"
DEFAULT_ALLOWED_HEADERS: Final = "Authorization, Content-Type, Accept, Last-Event-ID"
EXPOSED: Final = "Content-Disposition, WWW-Authenticate, Retry-After, Location, Allow"
MAX_AGE: Final = "86400"  # seconds a browser may cache a preflight's answer
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def normalise_origin(origin: str) -> str:
    """An origin as browsers serialise it in ``Origin``: lower-case, no trailing ``/``."""
    return origin.strip().rstrip("/").lower()


def _allow_origin(origin: str | None, allowed: Collection[str]) -> dict[str, str]:
    if origin is not None and allowed and normalise_origin(origin) in allowed:
        return {
            "Access-Control-Allow-Origin": origin.strip(),
            "Access-Control-Allow-Credentials": "true",
        }
    return {"Access-Control-Allow-Origin": "*"}


def _vary(allowed: Collection[str], *names: str) -> dict[str, str]:
    names = (("Origin",) if allowed else ()) + names
    return {"Vary": ", ".join(names)} if names else {}


def requested_headers(value: str | None) -> str:
    """The preflight's ``Access-Control-Allow-Headers`` (Rule 3)."""
    if value is None:
        return DEFAULT_ALLOWED_HEADERS
    names = [name.strip() for name in value.split(",")]
    return ", ".join(name for name in names if _TOKEN.fullmatch(name))


def preflight_headers(headers: Mapping[str, str], allowed: Collection[str]) -> dict[str, str]:
    """The answer to ``OPTIONS`` (Rules 1-3); ``allowed`` holds normalised origins."""
    out = _allow_origin(headers.get("Origin"), allowed)
    out["Access-Control-Allow-Methods"] = ALLOWED_METHODS
    asked = requested_headers(headers.get("Access-Control-Request-Headers"))
    if asked:
        out["Access-Control-Allow-Headers"] = asked
    out["Access-Control-Max-Age"] = MAX_AGE
    out.update(_vary(allowed, "Access-Control-Request-Headers"))
    return out


def response_headers(origin: str | None, allowed: Collection[str]) -> dict[str, str]:
    """What every other response carries (Rules 1, 2, 4)."""
    out = _allow_origin(origin, allowed)
    out["Access-Control-Expose-Headers"] = EXPOSED
    out.update(_vary(allowed))
    return out
