"""Logins: the failed-login throttle, the client address through trusted proxies, the
username check, and which account a login reaches (pure parts; the real servers are in
tests/integration/test_logins.py)."""

from __future__ import annotations

import base64
import hmac
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from imapjmap.config import (
    GMAIL_PROFILE_URL,
    AuthConfig,
    Config,
    GmailMode,
    ImapConfig,
    parse_config,
)
from imapjmap.credentials import ClientAddress
from imapjmap.http.auth import (
    Authenticated,
    Authenticator,
    Unauthorized,
    parse_basic,
    scoped_store_key,
    store_key,
)
from imapjmap.http.forwarded import client_address, parse_networks
from imapjmap.http.throttle import FailureWindow, LoginThrottle, Refusal
from imapjmap.imap.pool import ImapPools
from imapjmap.imap.session import BearerToken
from imapjmap.methods.context import Account
from imapjmap.store import queries as q
from imapjmap.store.db import Store, Tx
from imapjmap.upstream.imap import ImapUpstream


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the failure window --------------------------------------------------------------------

# (events, expected retry_after at the end); "f" = a failure, a number = seconds passing
WINDOW_CASES = [
    ([], 0.0),
    (["f", "f"], 0.0),  # under the limit of 3
    (["f", "f", "f"], 60.0),  # at the limit: wait for the oldest to leave the window
    (["f", 10, "f", 10, "f"], 40.0),
    (["f", 10, "f", 10, "f", 40], 0.0),  # the oldest has left the window
    (["f", 10, "f", 10, "f", 39], 1.0),
    (["f", "f", "f", 60, "f"], 0.0),  # old failures no longer count
    (["f", "f", "f", "f", "f", 30], 30.0),  # only the last `limit` failures are kept
]


@pytest.mark.parametrize(("events", "wait"), WINDOW_CASES)
def test_failure_window(events: list[str | int], wait: float) -> None:
    clock = Clock()
    window = FailureWindow(3, 60.0, clock=clock)
    for event in events:
        if event == "f":
            window.failed("k")
        else:
            assert isinstance(event, int)
            clock.now += event
    assert window.retry_after("k") == pytest.approx(wait)
    assert window.retry_after("other") == 0.0


def test_failure_window_is_bounded() -> None:
    clock = Clock()
    window = FailureWindow(2, 60.0, maxsize=100, clock=clock)
    for n in range(10_000):
        window.failed(f"user{n}")
        window.failed(f"user{n}")
    assert len(window._failures) <= 100
    assert window.retry_after("user9999") == 60.0
    clock.now += 61
    assert window.retry_after("user9999") == 0.0
    assert len(window._failures) <= 100


def throttle(clock: Clock) -> LoginThrottle:
    return LoginThrottle(FailureWindow(4, 300.0, clock=clock), FailureWindow(2, 100.0, clock=clock))


# (failures as (address, username), the login to check, the expected refusal)
THROTTLE_CASES = [
    ([], ("10.0.0.1", "alice"), None),
    ([("10.0.0.1", "alice")], ("10.0.0.1", "alice"), None),
    ([("10.0.0.1", "alice")] * 2, ("10.0.0.1", "alice"), Refusal("username", 100)),
    # a username counts whatever its case, from any address
    (
        [("10.0.0.1", "Alice"), ("10.0.0.2", "ALICE")],
        ("10.0.0.3", "alice"),
        Refusal("username", 100),
    ),
    # other users from other addresses are not affected
    ([("10.0.0.1", "alice")] * 2, ("10.0.0.2", "bob"), None),
    # one address guessing many users is stopped by the address count
    ([("10.0.0.1", f"u{n}") for n in range(4)], ("10.0.0.1", "bob"), Refusal("address", 300)),
    ([("10.0.0.1", f"u{n}") for n in range(4)], ("10.0.0.2", "bob"), None),
    # a Bearer token that the profile URL refused counts for its address only
    ([("10.0.0.1", None)] * 4, ("10.0.0.1", None), Refusal("address", 300)),
    ([("10.0.0.1", None)] * 4, ("10.0.0.9", "alice"), None),
    # no address known (a Unix socket): only the username counts
    ([(None, "alice")] * 2, (None, "alice"), Refusal("username", 100)),
    ([(None, "alice")] * 2, (None, "bob"), None),
    # IPv6: one /64 is one client, whichever of its addresses it uses
    (
        [(f"2001:db8:1:2::{n}", f"u{n}") for n in range(4)],
        ("2001:db8:1:2::99", "bob"),
        Refusal("address", 300),
    ),
    ([(f"2001:db8:1:2::{n}", f"u{n}") for n in range(4)], ("2001:db8:1:3::1", "bob"), None),
]


@pytest.mark.parametrize(("failures", "login", "expected"), THROTTLE_CASES)
def test_login_throttle(
    failures: list[tuple[str | None, str | None]],
    login: tuple[str | None, str | None],
    expected: Refusal | None,
) -> None:
    t = throttle(Clock())
    for address, username in failures:
        t.failed(address, username)
    assert t.check(*login) == expected


def test_success_clears_the_username_but_not_the_address() -> None:
    clock = Clock()
    t = throttle(clock)
    for _ in range(3):
        t.failed("10.0.0.1", "alice")
        clock.now += 1
    assert t.check("10.0.0.2", "alice") == Refusal("username", 98)
    t.succeeded("ALICE")
    assert t.check("10.0.0.2", "alice") is None
    t.failed("10.0.0.1", "bob")
    assert t.check("10.0.0.1", "carol") == Refusal("address", 297)


def test_retry_after_is_whole_seconds_and_at_least_one() -> None:
    clock = Clock()
    t = throttle(clock)
    t.failed("10.0.0.1", "alice")
    t.failed("10.0.0.1", "alice")
    clock.now += 99.9
    assert t.check(None, "alice") == Refusal("username", 1)
    clock.now += 0.1
    assert t.check(None, "alice") is None


# --- the client's address ------------------------------------------------------------------

TRUSTED = parse_networks(["127.0.0.1", "10.0.0.0/8", "::1"])

# (peer, X-Forwarded-For lines, trusted, the client)
FORWARDED_CASES = [
    ("192.0.2.5", [], TRUSTED, ClientAddress("192.0.2.5", 5555)),
    # an untrusted peer's header is ignored: it could say anything
    ("192.0.2.5", ["198.51.100.1"], TRUSTED, ClientAddress("192.0.2.5", 5555)),
    ("127.0.0.1", ["198.51.100.1"], (), ClientAddress("127.0.0.1", 5555)),
    # through one trusted proxy
    ("127.0.0.1", ["198.51.100.1"], TRUSTED, ClientAddress("198.51.100.1", None)),
    # the client's own entries before the last untrusted one are not believed
    ("127.0.0.1", ["6.6.6.6, 198.51.100.1"], TRUSTED, ClientAddress("198.51.100.1", None)),
    ("127.0.0.1", ["6.6.6.6", "198.51.100.1"], TRUSTED, ClientAddress("198.51.100.1", None)),
    # a chain of trusted proxies
    ("127.0.0.1", ["198.51.100.1, 10.1.2.3"], TRUSTED, ClientAddress("198.51.100.1", None)),
    # everything trusted: the first entry is as far as one can see
    ("127.0.0.1", ["10.9.9.9, 10.1.2.3"], TRUSTED, ClientAddress("10.9.9.9", None)),
    # garbage stops the walk at the proxy that passed it on
    ("127.0.0.1", ["198.51.100.1, unknown"], TRUSTED, ClientAddress("127.0.0.1", 5555)),
    ("127.0.0.1", ["198.51.100.1, garbage, 10.1.2.3"], TRUSTED, ClientAddress("10.1.2.3", None)),
    ("127.0.0.1", [""], TRUSTED, ClientAddress("127.0.0.1", 5555)),
    # IPv6, brackets, and IPv4-mapped peers (a dual-stack listener)
    ("::1", ["[2001:db8::7]"], TRUSTED, ClientAddress("2001:db8::7", None)),
    ("::ffff:127.0.0.1", ["198.51.100.1"], TRUSTED, ClientAddress("198.51.100.1", None)),
    ("::ffff:192.0.2.5", [], TRUSTED, ClientAddress("192.0.2.5", 5555)),
    # not an IP peer (a Unix socket): no address
    (None, ["198.51.100.1"], TRUSTED, None),
    ("", [], TRUSTED, None),
]


@pytest.mark.parametrize(("peer", "header", "trusted", "expected"), FORWARDED_CASES)
def test_client_address(
    peer: str | None, header: list[str], trusted: tuple[object, ...], expected: object
) -> None:
    assert client_address(peer, 5555, header, trusted) == expected  # type: ignore[arg-type]


def test_client_address_validates() -> None:
    with pytest.raises(ValueError):
        ClientAddress("1.2.3.4\r\nA LOGOUT")
    with pytest.raises(ValueError):
        ClientAddress("1.2.3.4", 70000)
    with pytest.raises(ValueError):
        parse_networks(["proxy.example"])


# --- the username --------------------------------------------------------------------------


def basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "username", ["alice\0", "alice\0bob", "\talice", "al\nice", "alice\r", "alice\x7f", "\x1b"]
)
def test_control_characters_in_usernames_are_refused(username: str) -> None:
    with pytest.raises(Unauthorized, match="control character"):
        parse_basic(basic(f"{username}:secret"))


@pytest.mark.parametrize("username", ["alice", "ALICE", "al ice", "älice@exämple.org", "a\x80"])
def test_other_usernames_pass(username: str) -> None:
    assert parse_basic(basic(f"{username}:pw\0with:colon")) == (username, "pw\0with:colon")


# --- the account's store -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("identity", "username", "folded", "expected"),
    [
        ("x-guid:0123", "ALICE", False, "x-guid:0123"),
        ("mailboxid:F1", "alice", True, "mailboxid:F1"),
        (None, "Alice@Gmail.com", True, "login:alice@gmail.com"),
        (None, "Alice", False, None),  # the login as typed: case may matter there
    ],
)
def test_store_key(identity: str | None, username: str, folded: bool, expected: str | None) -> None:
    assert store_key(identity, username, folded=folded) == expected


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    s = await Store.open(":memory:")
    yield s
    await s.aclose()


async def test_spellings_of_one_store_share_the_first_spellings_account(store: Store) -> None:
    def login(key: str | None, username: str) -> str:
        def run(tx: Tx) -> str:
            row = q.account_for_store(
                tx, key, username, legacy_id="L-" + username, fresh_id="F-" + str(key)
            )
            return row.account_id

        return run

    # an older version's cache: the account of "alice", derived from the login name
    await store.run(lambda tx: q.ensure_account(tx, "L-alice", "alice"))
    assert await store.run(login("x-guid:a", "alice")) == "L-alice"  # keeps its id
    assert await store.run(login("x-guid:a", "ALICE")) == "L-alice"
    assert await store.run(login("x-guid:a", "Alice")) == "L-alice"
    # a new store reached by a new login name takes that name's id
    assert await store.run(login("x-guid:b", "bob")) == "L-bob"
    # "alice" now reaches another store (the user was recreated): a fresh account
    assert await store.run(login("x-guid:c", "alice")) == "F-x-guid:c"
    assert await store.run(login("x-guid:a", "ALICE")) == "L-alice"
    # no store identity (a server that names none): the login name as typed
    assert await store.run(login(None, "carol")) == "L-carol"
    assert await store.run(login(None, "CAROL")) == "L-CAROL"
    rows = await store.run(q.account_ids)
    assert sorted(rows) == ["F-x-guid:c", "L-CAROL", "L-alice", "L-bob", "L-carol"]
    first = await store.run(lambda tx: q.account(tx, "L-alice"))
    assert first is not None and first.username == "alice"


# --- Bearer only where it can work ---------------------------------------------------------

NO_XOAUTH2 = frozenset({"IMAP4REV1", "ID", "AUTH=PLAIN"})
XOAUTH2 = NO_XOAUTH2 | {"AUTH=XOAUTH2"}
GMAIL = XOAUTH2 | {"X-GM-EXT-1"}


OWN_PROFILE_URL = "https://sso.example.org/userinfo"


@pytest.mark.parametrize(
    ("mode", "capabilities", "profile_url", "possible"),
    [
        ("on", None, GMAIL_PROFILE_URL, True),  # Gmail mode configured: no need to ask
        ("on", NO_XOAUTH2, GMAIL_PROFILE_URL, True),
        ("auto", None, GMAIL_PROFILE_URL, None),  # must ask the server first
        ("auto", NO_XOAUTH2, GMAIL_PROFILE_URL, False),
        ("auto", GMAIL, GMAIL_PROFILE_URL, True),
        # a non-Gmail server with XOAUTH2: only with a profile URL of its own, never
        # sending its tokens to Google's
        ("auto", XOAUTH2, GMAIL_PROFILE_URL, False),
        ("auto", XOAUTH2, OWN_PROFILE_URL, True),
        ("off", XOAUTH2, GMAIL_PROFILE_URL, False),
        ("off", XOAUTH2, OWN_PROFILE_URL, True),
        ("off", NO_XOAUTH2, OWN_PROFILE_URL, False),
        ("auto", NO_XOAUTH2 | {"AUTH=OAUTHBEARER"}, OWN_PROFILE_URL, False),  # not spoken
    ],
)
def test_bearer_is_tried_only_where_it_can_work(
    mode: GmailMode, capabilities: frozenset[str] | None, profile_url: str, possible: bool | None
) -> None:
    cfg = Config(imap=ImapConfig(gmail=mode), auth=AuthConfig(bearer_profile_url=profile_url))
    auth = Authenticator(cfg, cast(Store, None), ImapPools(cfg.imap))
    assert auth._bearer_possible(capabilities) is possible
    if capabilities is not None:
        auth._probed = (time.monotonic(), capabilities)
        challenge = auth.challenge()
        assert challenge.startswith('Basic realm="imapjmap"')
        assert ("Bearer" in challenge) is (possible is not False)


# --- push tokens follow the login's credentials ---------------------------------------------


async def _logged_in(auth: Authenticator, pools: ImapPools, password: str) -> Authenticated:
    """A login as the upstream would have verified it (no connection is opened)."""
    pool = await pools.ensure("Aalice", "alice", password)
    account = Account("Aalice", "alice", "e1")
    auth._accounts["Aalice"] = account
    return Authenticated(account, pool, ImapUpstream(pool))


async def test_a_push_token_dies_with_a_changed_password() -> None:
    cfg = Config(imap=ImapConfig())
    pools = ImapPools(cfg.imap)
    auth = Authenticator(cfg, cast(Store, None), pools)
    who = await _logged_in(auth, pools, "old")
    token = auth.issue_push_token(who, "eventsource")
    assert auth.authenticate_push(token, "eventsource").account.account_id == "Aalice"
    with pytest.raises(Unauthorized):
        auth.authenticate_push(token, "websocket")
    await _logged_in(auth, pools, "new")  # the user logged in with a new password
    with pytest.raises(Unauthorized, match="fetch the session again"):
        auth.authenticate_push(token, "eventsource")
    await pools.aclose()


async def test_a_push_token_outlives_the_renewal_of_an_oauth_token() -> None:
    cfg = Config(imap=ImapConfig(gmail="on"))
    pools = ImapPools(cfg.imap)
    auth = Authenticator(cfg, cast(Store, None), pools)
    who = await _logged_in(auth, pools, BearerToken("ya29.first"))
    token = auth.issue_push_token(who, "eventsource")
    renewed = await _logged_in(auth, pools, BearerToken("ya29.second"))
    assert renewed.pool is who.pool  # the pool took the new token
    assert auth.authenticate_push(token, "eventsource").pool is who.pool
    who.pool.refused = True  # the server refused the account's token since
    with pytest.raises(Unauthorized):
        auth.authenticate_push(token, "eventsource")
    await pools.aclose()


def test_a_store_key_is_scoped_by_its_server_unless_it_is_the_default_s() -> None:
    """Two servers may name their stores alike (a folded login): an account found by one
    upstream's key must never be another upstream's (README "Several upstream servers")."""
    cfg = parse_config(
        {
            "imap": {"host": "imap.a.example"},
            "upstreams": [
                {"domains": ["b.example"], "imap": {"host": "imap.b.example"}},
                {"domains": ["c.example"], "imap": {"host": "imap.a.example"}},
                {"domains": ["d.example"], "imap": {"host": "imap.b.example", "port": 143}},
            ],
        }
    )
    default, b, c, d = cfg.all_upstreams()
    key = "login:alice@example.org"
    assert scoped_store_key(key, cfg, default) == key  # as older versions wrote it
    assert scoped_store_key(key, cfg, c) == key  # the same server: the same store
    scoped = {scoped_store_key(key, cfg, b), scoped_store_key(key, cfg, d)}
    assert len(scoped) == 2 and key not in scoped
    assert scoped_store_key(None, cfg, b) is None  # the login name, in the account id
    alone = parse_config({"upstreams": [{"domains": ["b.example"], "imap": {"host": "h"}}]})
    assert scoped_store_key(key, alone, alone.upstreams[0]) != key


@pytest.mark.parametrize("default", [True, False])
async def test_a_bearer_token_never_goes_to_an_upstreams_entry(default: bool) -> None:
    """Bearer's checks (Rule 6) are about the default upstream's server: a token whose
    user's domain is an entry's is refused before it goes anywhere (Rule 9)."""
    data: dict[str, Any] = {
        "upstreams": [{"domains": ["b.example"], "imap": {"host": "imap.b.example"}}]
    }
    if default:
        data["imap"] = {"host": "imap.gmail.com", "gmail": "on"}
    cfg = parse_config(data)
    auth = Authenticator(cfg, cast(Store, None), ImapPools(cfg.imap))
    token = "ya29.token"
    key = hmac.new(auth._key, f"token\0{token}".encode(), "sha256").digest()
    auth._token_users[key] = "bob@b.example"  # as the profile URL would have said
    with pytest.raises(Unauthorized, match="default upstream only") as refused:
        await auth.authenticate(f"Bearer {token}")
    # without a default upstream no Bearer can work: the challenge offers Basic alone
    assert ("Bearer" in refused.value.challenge) is default
