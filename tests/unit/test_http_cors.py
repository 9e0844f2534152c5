"""imapjmap.http.cors: the CORS answers, table-driven (Rules 1-4 of the module)."""

from __future__ import annotations

import pytest

from imapjmap.http.cors import (
    DEFAULT_ALLOWED_HEADERS,
    preflight_headers,
    requested_headers,
    response_headers,
)

WEBMAIL = "http://127.0.0.1:8081"
ALLOWED = frozenset({WEBMAIL, "https://mail.example.org"})


@pytest.mark.parametrize(
    ("asked", "allowed"),
    [
        (None, DEFAULT_ALLOWED_HEADERS),
        (
            "authorization,content-type,x-requested-with",
            "authorization, content-type, x-requested-with",
        ),
        ("X-Custom-1, X-Custom-2 ", "X-Custom-1, X-Custom-2"),
        ("bad header, x-ok, x(no)", "x-ok"),
        ("", ""),
    ],
)
def test_preflight_echoes_the_requested_headers(asked: str | None, allowed: str) -> None:
    assert requested_headers(asked) == allowed


@pytest.mark.parametrize(
    ("origin", "configured", "expected"),
    [
        # Rule 1: no list, or an origin not in it: "*", no credentials
        (WEBMAIL, frozenset(), {"Access-Control-Allow-Origin": "*"}),
        (None, frozenset(), {"Access-Control-Allow-Origin": "*"}),
        ("http://evil.example", ALLOWED, {"Access-Control-Allow-Origin": "*", "Vary": "Origin"}),
        (None, ALLOWED, {"Access-Control-Allow-Origin": "*", "Vary": "Origin"}),
        # Rule 2: a listed origin, compared as browsers serialise it
        (
            WEBMAIL,
            ALLOWED,
            {
                "Access-Control-Allow-Origin": WEBMAIL,
                "Access-Control-Allow-Credentials": "true",
                "Vary": "Origin",
            },
        ),
        (
            "https://MAIL.example.org",
            ALLOWED,
            {
                "Access-Control-Allow-Origin": "https://MAIL.example.org",
                "Access-Control-Allow-Credentials": "true",
                "Vary": "Origin",
            },
        ),
        (
            "https://mail.example.org.evil.example",
            ALLOWED,
            {"Access-Control-Allow-Origin": "*", "Vary": "Origin"},
        ),
    ],
)
def test_allowed_origin(
    origin: str | None, configured: frozenset[str], expected: dict[str, str]
) -> None:
    got = response_headers(origin, configured)
    exposed = got.pop("Access-Control-Expose-Headers")
    assert got == expected
    for name in ("Content-Disposition", "WWW-Authenticate", "Retry-After", "Location"):
        assert name in exposed.split(", ")


def test_preflight_of_a_listed_origin_is_credentialed_and_varies() -> None:
    got = preflight_headers(
        {
            "Origin": WEBMAIL,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, x-requested-with",
        },
        ALLOWED,
    )
    assert got == {
        "Access-Control-Allow-Origin": WEBMAIL,
        "Access-Control-Allow-Credentials": "true",
        "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        "Access-Control-Allow-Headers": "authorization, x-requested-with",
        "Access-Control-Max-Age": "86400",
        "Vary": "Origin, Access-Control-Request-Headers",
    }


def test_preflight_without_a_list_is_open_without_credentials() -> None:
    got = preflight_headers(
        {"Origin": WEBMAIL, "Access-Control-Request-Method": "GET"}, frozenset()
    )
    assert got["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in got
    assert got["Access-Control-Allow-Headers"] == DEFAULT_ALLOWED_HEADERS
    assert got["Vary"] == "Access-Control-Request-Headers"
