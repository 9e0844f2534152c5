"""imapjmap.http.push_token: the browser push credential, table-driven (Rules 1-5)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from imapjmap.errors import ConfigError
from imapjmap.http.push_token import PushTokens, Scope, signing_key
from imapjmap.imap.session import BearerToken
from imapjmap.logsetup import redact

KEY = b"k" * 32
NOW = 1_800_000_000.0
ALICE, BOB = "Aalice", "Abob"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def tokens(clock: Clock, key: bytes = KEY, lifetime: float = 3600.0) -> PushTokens:
    return PushTokens(key, lifetime, clock=clock)


def test_a_fresh_token_opens_its_own_stream() -> None:
    clock = Clock()
    issued = tokens(clock).issue("eventsource", ALICE, "pw")
    assert issued.startswith(f"v1.{ALICE}.{int(NOW + 3600)}.")
    # the password itself never travels: one with characters outside base64url
    # cannot show up by chance in the token's random nonce or MAC
    secret = "pass word!"
    with_secret = tokens(clock).issue("eventsource", ALICE, secret)
    assert secret not in with_secret
    assert base64.urlsafe_b64encode(secret.encode()).decode().rstrip("=") not in with_secret
    assert tokens(clock).account_of(issued) == ALICE
    assert tokens(clock).verify("eventsource", issued, "pw")
    # another instance with the same key takes it (Rule 5)
    assert PushTokens(KEY, 10.0, clock=clock).verify("eventsource", issued, "pw")


def _swap_account(token: str) -> str:
    version, _, expires, nonce, mac = token.split(".")
    return f"{version}.{BOB}.{expires}.{nonce}.{mac}"


def _later(token: str) -> str:
    version, account, expires, nonce, mac = token.split(".")
    return f"{version}.{account}.{int(expires) + 86400}.{nonce}.{mac}"


def _other_nonce(token: str) -> str:
    version, account, expires, nonce, mac = token.split(".")
    return f"{version}.{account}.{expires}.{nonce[::-1]}.{mac}"


def _forged_mac(token: str) -> str:
    head, _, mac = token.rpartition(".")
    return f"{head}.{'A' * len(mac)}"


@pytest.mark.parametrize(
    ("case", "scope", "change", "password"),
    [
        ("the other stream", "websocket", lambda t: t, "pw"),
        ("another account's id put in", "eventsource", _swap_account, "pw"),
        ("expiry pushed later", "eventsource", _later, "pw"),
        ("forged MAC", "eventsource", _forged_mac, "pw"),
        ("another nonce", "eventsource", _other_nonce, "pw"),
        ("password changed since", "eventsource", lambda t: t, "new-pw"),
        ("no login held here", "eventsource", lambda t: t, None),
        ("the same text as a bearer token", "eventsource", lambda t: t, BearerToken("pw")),
        ("truncated", "eventsource", lambda t: t[:-1], "pw"),
        ("not a token", "eventsource", lambda t: "Basic abc", "pw"),
        ("empty", "eventsource", lambda t: "", "pw"),
        ("another version", "eventsource", lambda t: "v2" + t[2:], "pw"),
        ("a negative expiry", "eventsource", lambda t: t.replace(".18", ".-18"), "pw"),
    ],
)
def test_a_token_opens_nothing_else(
    case: str, scope: Scope, change: object, password: str | None
) -> None:
    clock = Clock()
    issued = tokens(clock).issue("eventsource", ALICE, "pw")
    assert callable(change)
    assert not tokens(clock).verify(scope, change(issued), password), case


def _claim_of(scope: Scope, token: str, clock: Clock) -> str:
    claim = tokens(clock).claim(scope, token)
    assert claim is not None
    return claim


@pytest.mark.parametrize(
    ("case", "scope", "change", "password", "good"),
    [
        ("the token as issued", "eventsource", lambda t: t, "pw", True),
        ("the other stream", "websocket", lambda t: t, "pw", False),
        ("another account's id put in", "eventsource", _swap_account, "pw", False),
        ("expiry pushed later", "eventsource", _later, "pw", False),
        ("forged MAC", "eventsource", _forged_mac, "pw", False),
        ("another nonce", "eventsource", _other_nonce, "pw", False),
        ("password changed since", "eventsource", lambda t: t, "new-pw", False),
        ("the same text as a bearer token", "eventsource", lambda t: t, BearerToken("pw"), False),
    ],
)
def test_a_claim_is_good_where_the_token_is(
    case: str, scope: Scope, change: object, password: str, good: bool
) -> None:
    """Rule 6: the holder of the login checks a claim as it would the token."""
    clock = Clock()
    issued = tokens(clock).issue("eventsource", ALICE, "pw")
    assert callable(change)
    claim = _claim_of(scope, change(issued), clock)
    assert tokens(clock).verify_claim(claim, password) is good, case


def test_a_claim_opens_nothing_and_holds_no_mac() -> None:
    """What goes to the other instances is not a token: its MAC is only digested."""
    clock = Clock()
    issued = tokens(clock).issue("websocket", ALICE, "pw")
    claim = _claim_of("websocket", issued, clock)
    assert issued.rsplit(".", 1)[1] not in claim
    assert not tokens(clock).verify("websocket", "v1." + claim.split(".", 1)[1], "pw")
    for malformed in ("", "websocket", "push." + claim.split(".", 1)[1], claim + ".x", "é" * 5):
        assert not tokens(clock).verify_claim(malformed, "pw"), malformed
    nonascii = claim[:-1] + "é"
    assert not tokens(clock).verify_claim(nonascii, "pw")
    # an expired or malformed token makes no claim (nothing to ask), nor an expired claim
    assert tokens(clock).claim("websocket", "garbage") is None
    clock.now += 3600
    assert tokens(clock).claim("websocket", issued) is None
    assert not tokens(clock).verify_claim(claim, "pw")


def test_a_token_expires_and_another_key_refuses_it() -> None:
    clock = Clock()
    issued = tokens(clock, lifetime=60).issue("websocket", ALICE, "pw")
    clock.now += 59
    assert tokens(clock).verify("websocket", issued, "pw")
    clock.now += 1
    assert not tokens(clock).verify("websocket", issued, "pw")
    clock.now = NOW
    assert not tokens(clock, key=b"x" * 32).verify("websocket", issued, "pw")


def test_every_fetch_gives_another_token() -> None:
    clock = Clock()
    first = tokens(clock).issue("eventsource", ALICE, "pw")
    second = tokens(clock).issue("eventsource", ALICE, "pw")  # in the same second
    assert second != first
    assert tokens(clock).verify("eventsource", first, "pw")
    assert tokens(clock).verify("eventsource", second, "pw")


def test_a_token_in_a_logged_url_is_redacted() -> None:
    token = tokens(Clock()).issue("eventsource", ALICE, "pw")
    line = f"GET /jmap/eventsource/?types=*&push_token={token}&ping=0"
    assert token not in redact(line)
    assert "push_token=[redacted]" in redact(line)


def test_signing_key_from_a_file(tmp_path: Path) -> None:
    assert len(signing_key(None)) == 32 and signing_key(None) != signing_key(None)
    path = tmp_path / "key"
    path.write_bytes(b"  " + b"s" * 40 + b"\n")
    assert signing_key(str(path)) == b"s" * 40
    path.write_bytes(b"short\n")
    with pytest.raises(ConfigError, match="at least 32 bytes") as caught:
        signing_key(str(path))
    assert "short" not in str(caught.value)
    with pytest.raises(ConfigError, match=r"auth\.push_token_key_file: cannot read"):
        signing_key(str(tmp_path / "missing"))


@pytest.mark.parametrize(
    "content",
    [b"\n" + bytes(range(0x80, 0xA0)) + b" ", b"\x00" * 31 + b"\t", b"\x0b" + b"\xff" * 31],
)
def test_a_binary_key_is_used_whole_even_with_white_space_at_its_ends(
    tmp_path: Path, content: bytes
) -> None:
    """A key from ``head -c 32 /dev/urandom`` that starts or ends with a white-space byte
    (about one in twenty) kept all its bytes: stripping them left it too short to start."""
    path = tmp_path / "key"
    path.write_bytes(content)
    assert signing_key(str(path)) == content
