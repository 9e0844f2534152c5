"""Logins against real servers: one account per mail store, the client's address passed
upstream, failed logins throttled in the proxy, Bearer only where it can work (CORE-SESS-01).

The Dovecot here runs with Dovecot's own default ``auth_username_format = %Lu`` (logins
fold case, as in most installations; the shared test server keeps ``%u``) and trusts the
loopback proxy's ``ID x-originating-ip`` (``login_trusted_networks``), as the README tells
operators to configure it.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import re
import secrets
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from devservers.dovecot import DovecotServer
from imapjmap.config import AuthConfig, Config, ServerConfig
from imapjmap.http import auth as auth_module
from imapjmap.http import views
from imapjmap.http.auth import account_id_for
from imapjmap.store import queries as q
from tests.conftest import ImapUser, dovecot_root
from tests.integration.conftest import MAIL, proxy_config
from tests.integration.instances import ProxyClient, apps_of

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def folding_dovecot() -> Iterator[DovecotServer]:
    with dovecot_root() as root:
        server = DovecotServer.start(
            root,
            extra_conf="auth_username_format = %Lu\nlogin_trusted_networks = 127.0.0.0/8\n",
        )
        yield server
        server.stop()


@pytest.fixture
def user(folding_dovecot: DovecotServer) -> ImapUser:
    name, password = f"alice-{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    folding_dovecot.add_user(name, password)
    return ImapUser(name, password, folding_dovecot.host, folding_dovecot.port)


def config(user: ImapUser, tmp_path: Path, **auth: Any) -> Config:
    cfg = proxy_config(user, tmp_path)
    return dataclasses.replace(
        cfg,
        server=dataclasses.replace(cfg.server, trusted_proxies=("127.0.0.1",)),
        auth=dataclasses.replace(AuthConfig(), **auth),
    )


@pytest.fixture
async def http(
    user: ImapUser, tmp_path: Path, proxy_client: ProxyClient
) -> AsyncIterator[TestClient[Any, Any]]:
    async with proxy_client(config(user, tmp_path)) as client:
        yield client


def basic(username: str, password: str, via: str | None = None) -> dict[str, str]:
    raw = f"{username}:{password}".encode()
    headers = {"Authorization": "Basic " + base64.b64encode(raw).decode()}
    if via is not None:
        headers["X-Forwarded-For"] = via
    return headers


async def session(http: TestClient[Any, Any], headers: dict[str, str]) -> Any:
    return await http.get("/.well-known/jmap", headers=headers)


async def account_id(http: TestClient[Any, Any], headers: dict[str, str]) -> str:
    resp = await session(http, headers)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    found: str = body["primaryAccounts"][MAIL]
    return found


def login_lines(server: DovecotServer) -> list[str]:
    return [line for line in server.log_path.read_text().splitlines() if "imap-login:" in line]


# --- one account per mail store ------------------------------------------------------------


async def test_spellings_of_one_login_share_one_account(
    http: TestClient[Any, Any], user: ImapUser, folding_dovecot: DovecotServer
) -> None:
    """``ALICE`` and ``Alice`` log in to alice's mailbox upstream: one account id, one
    cache, one pool (not a full re-sync each)."""
    first = await account_id(http, basic(user.username, user.password))
    for spelling in (user.username.upper(), user.username.capitalize()):
        assert await account_id(http, basic(spelling, user.password)) == first
    other_name, other_password = f"bob-{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    folding_dovecot.add_user(other_name, other_password)
    other = await account_id(http, basic(other_name.upper(), other_password))
    assert other != first  # two users never share an account
    services = http.server.app[views.SERVICES]
    assert sorted(await services.store.run(q.account_ids)) == sorted([first, other])
    assert any(app[views.SERVICES].pools.get(first) is not None for app in apps_of(http))
    # the account's id is the one older versions derived from the first login's name
    assert first == account_id_for(services.cfg.imap, user.username)


async def test_spellings_share_the_request_limit(
    http: TestClient[Any, Any], user: ImapUser
) -> None:
    """maxConcurrentRequests counts per account, and spellings are one account."""
    first = await account_id(http, basic(user.username, user.password))
    await account_id(http, basic(user.username.upper(), user.password))
    # every slot taken, on every instance
    every_slots = [app[views.REQUEST_SLOTS] for app in apps_of(http)]
    waits = [slots.wait for slots in every_slots]
    for slots in every_slots:
        slots.running[first] = slots.limit
        slots.wait = 0.0  # refused at once instead of after the wait
    try:
        for _ in every_slots:  # each instance in turn
            resp = await http.post(
                "/jmap/api/",
                json={"using": ["urn:ietf:params:jmap:core"], "methodCalls": []},
                headers=basic(user.username.upper(), user.password),
            )
            assert resp.status == 400
            assert (await resp.json())["limit"] == "maxConcurrentRequests"
    finally:
        for slots, wait in zip(every_slots, waits, strict=True):
            del slots.running[first]
            slots.wait = wait


@pytest.mark.parametrize(
    "suffix",
    ["\0", "\0bob", "\r\nA1 LOGOUT", "\t", "\x7f"],
    ids=["nul", "nul-tail", "crlf", "tab", "del"],
)
async def test_control_characters_are_401_before_going_upstream(
    http: TestClient[Any, Any], user: ImapUser, folding_dovecot: DovecotServer, suffix: str
) -> None:
    before = len(login_lines(folding_dovecot))
    resp = await session(http, basic(user.username + suffix, user.password))
    assert resp.status == 401
    assert resp.content_type == PROBLEM
    assert "control character" in (await resp.json())["detail"]
    assert resp.headers["WWW-Authenticate"].startswith("Basic")
    assert len(login_lines(folding_dovecot)) == before  # the server never heard of it
    assert await http.server.app[views.SERVICES].store.run(q.account_ids) == []


async def test_cyrus_keys_the_account_on_the_inbox_mailboxid(
    cyrus: Any, tmp_path: Path, proxy_client: ProxyClient
) -> None:
    name, password = f"carol-{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    cyrus.add_user(name, password)
    user = ImapUser(name, password, cyrus.host, cyrus.port)
    async with proxy_client(config(user, tmp_path)) as http:
        first = await account_id(http, basic(name, password))
        # Cyrus folds logins to lower case by default (username_tolower)
        assert await account_id(http, basic(name.upper(), password)) == first
        store = http.server.app[views.SERVICES].store
        key = await store.run(lambda tx: q.kv_get(tx, first, "upstream.store"))
        assert key is not None and key.startswith("mailboxid:")
        assert await store.run(q.account_ids) == [first]


# --- the client's address ------------------------------------------------------------------


async def test_the_client_address_reaches_dovecot(
    http: TestClient[Any, Any],
    user: ImapUser,
    folding_dovecot: DovecotServer,
    tmp_path: Path,
    proxy_client: ProxyClient,
) -> None:
    """Through a trusted proxy, Dovecot logs (and penalises) the client's address."""
    await account_id(http, basic(user.username, user.password, via="6.6.6.6, 198.51.100.7"))
    lines = [line for line in login_lines(folding_dovecot) if f"user=<{user.username}>" in line]
    assert any("rip=198.51.100.7," in line for line in lines), lines
    assert not any("6.6.6.6" in line for line in lines)
    # a proxy that trusts no reverse proxy ignores the header: the TCP peer is the client
    cfg = dataclasses.replace(config(user, tmp_path / "other"), server=ServerConfig())
    (tmp_path / "other").mkdir()
    cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, listen="127.0.0.1:0"))
    async with proxy_client(cfg) as other:
        await account_id(other, basic(user.username, user.password, via="198.51.100.8"))
    lines = [line for line in login_lines(folding_dovecot) if f"user=<{user.username}>" in line]
    assert not any("198.51.100.8" in line for line in lines), lines
    assert any("rip=127.0.0.1," in line for line in lines), lines


@pytest.fixture(scope="module")
def penalising_dovecot() -> Iterator[DovecotServer]:
    """Dovecot with its per-address penalty for failed logins on (the shared test servers
    turn it off), trusting the proxy's forwarded address."""
    penalty = "service anvil {\n  unix_listener anvil-auth-penalty {\n    mode = 0600\n  }\n}\n"
    with dovecot_root() as root:
        server = DovecotServer.start(
            root, extra_conf="login_trusted_networks = 127.0.0.0/8\n" + penalty
        )
        yield server
        server.stop()


async def test_bad_passwords_from_one_client_do_not_slow_down_others(
    penalising_dovecot: DovecotServer, tmp_path: Path, proxy_client: ProxyClient
) -> None:
    """Dovecot delays the next login from an address that failed one (by seconds); with
    the client's address passed upstream that address is the bad client's, not the
    proxy's that everyone shares."""
    users = {}
    for name in ("mallory", "bob", "carol"):
        username, password = f"{name}-{secrets.token_hex(4)}", secrets.token_urlsafe(12)
        penalising_dovecot.add_user(username, password)
        users[name] = ImapUser(username, password, penalising_dovecot.host, penalising_dovecot.port)
    async with proxy_client(config(users["bob"], tmp_path)) as http:
        bad = await session(http, basic(users["mallory"].username, "wrong", via="203.0.113.5"))
        assert bad.status == 401

        async def timed(user: ImapUser, via: str) -> float:
            started = time.monotonic()
            assert await account_id(http, basic(user.username, user.password, via=via))
            return time.monotonic() - started

        other, same = await asyncio.gather(
            timed(users["bob"], "198.51.100.2"), timed(users["carol"], "203.0.113.5")
        )
    assert same >= 2.0  # the penalty is on, for the address that failed
    assert other < 2.0, (other, same)


def proxy_failures(server: DovecotServer, username: str) -> int:
    """Failed logins of ``username`` that Dovecot saw coming from the proxy's own address."""
    return sum(
        1
        for line in server.log_path.read_text().splitlines()
        if "auth failed" in line and f"user=<{username}>" in line and "rip=127.0.0.1," in line
    )


async def test_a_password_changed_upstream_is_asked_again_not_retried_from_the_proxy(
    http: TestClient[Any, Any], user: ImapUser, folding_dovecot: DovecotServer
) -> None:
    """The proxy remembers a verified login; when the server refuses it for a new pooled
    connection, the next requests check the client's credentials again (401, from the
    client's address) instead of each failing one more login from the proxy's address."""
    via = "198.51.100.20"
    first = await account_id(http, basic(user.username, user.password, via=via))
    folding_dovecot.remove_user(user.username)
    # Dovecot reads a passwd-file again when its size or mtime (in seconds) changed, and
    # looks at most once a second
    new_password = secrets.token_urlsafe(24)
    folding_dovecot.add_user(user.username, new_password)
    await asyncio.sleep(1.1)
    pools = [app[views.SERVICES].pools.get(first) for app in apps_of(http)]
    assert any(pools)
    for pool in pools:
        for idle in pool._idle if pool is not None else ():
            idle.broken = True  # the next request needs a new connection
    calls = [["Mailbox/get", {"accountId": first, "ids": None}, "0"]]
    body = {"using": ["urn:ietf:params:jmap:core", MAIL], "methodCalls": calls}
    for _ in range(4):
        resp = await http.post(
            "/jmap/api/", json=body, headers=basic(user.username, user.password, via=via)
        )
        if resp.status == 200:  # the request that found out: an error, never data
            answer = (await resp.json())["methodResponses"][0]
            assert answer[0] == "error", answer
        else:
            assert resp.status == 401
    assert await logged(lambda: proxy_failures(folding_dovecot, user.username), 1) == 1

    # the check of the client's credentials went upstream from the client's address
    def from_client() -> int:
        return sum(
            1
            for line in folding_dovecot.log_path.read_text().splitlines()
            if "auth failed" in line and f"user=<{user.username}>" in line and f"rip={via}," in line
        )

    assert await logged(from_client, 1) >= 1
    # the new password logs in again, to the same account
    assert await account_id(http, basic(user.username, new_password, via=via)) == first


# --- failed logins -------------------------------------------------------------------------


def failures(server: DovecotServer, username: str) -> int:
    text = server.log_path.read_text()
    return len(re.findall(rf"auth failed.*user=<{re.escape(username)}>", text, re.IGNORECASE))


async def logged(count: Callable[[], int], expected: int) -> int:
    """``count()`` once Dovecot's log has caught up: its log process writes a login's line a
    little after the login was answered, so on a busy machine a read right after the 401 can
    miss the last one.  Returns as soon as ``expected`` lines are there (more would be a
    failure the caller's assert shows), else what is there after a few seconds."""
    deadline = time.monotonic() + 5.0
    seen = count()
    while seen < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        seen = count()
    return seen


async def test_a_burst_of_bad_passwords_stops_at_the_proxy(
    user: ImapUser,
    folding_dovecot: DovecotServer,
    tmp_path: Path,
    proxy_client: ProxyClient,
) -> None:
    cfg = config(user, tmp_path, failed_logins_per_address=3, failed_logins_per_username=100)
    other_name, other_password = f"dave-{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    folding_dovecot.add_user(other_name, other_password)
    async with proxy_client(cfg) as http:
        # alice logged in before the burst: her remembered login does not go upstream
        await account_id(http, basic(user.username, user.password, via="192.0.2.10"))
        attacker = "203.0.113.66"
        for n in range(3):
            resp = await session(http, basic(user.username, f"wrong{n}", via=attacker))
            assert resp.status == 401
        for n in range(5):
            resp = await session(http, basic(user.username, f"again{n}", via=attacker))
            assert resp.status == 429
            assert resp.content_type == PROBLEM
            body = await resp.json()
            assert body["type"] == "urn:ietf:params:jmap:error:limit"
            assert body["limit"] == "auth.failed_logins_per_address"
            assert 1 <= int(resp.headers["Retry-After"]) <= 300
        # only three wrong passwords ever reached Dovecot
        assert await logged(lambda: failures(folding_dovecot, user.username), 3) == 3
        # a good password from the same address is refused too, without asking the server
        resp = await session(http, basic(other_name, other_password, via=attacker))
        assert resp.status == 429
        # other users from other addresses, and alice's remembered login, are unaffected
        assert await account_id(http, basic(other_name, other_password, via="192.0.2.11"))
        assert await account_id(http, basic(user.username, user.password, via="192.0.2.10"))


async def test_guessing_one_users_password_from_many_addresses_stops_too(
    user: ImapUser,
    folding_dovecot: DovecotServer,
    tmp_path: Path,
    proxy_client: ProxyClient,
) -> None:
    cfg = config(user, tmp_path, failed_logins_per_username=2)
    async with proxy_client(cfg) as http:
        for n in range(2):
            resp = await session(http, basic(user.username, "wrong", via=f"203.0.113.{n}"))
            assert resp.status == 401
        resp = await session(http, basic(user.username.upper(), "wrong", via="203.0.113.9"))
        assert resp.status == 429
        assert (await resp.json())["limit"] == "auth.failed_logins_per_username"
        assert await logged(lambda: failures(folding_dovecot, user.username), 2) == 2
        # another user is not affected
        name, password = f"erin-{secrets.token_hex(4)}", secrets.token_urlsafe(12)
        folding_dovecot.add_user(name, password)
        assert await account_id(http, basic(name, password, via="203.0.113.9"))


# --- Bearer only where it can work ---------------------------------------------------------


@pytest.fixture
async def profile_url() -> AsyncIterator[tuple[str, list[str]]]:
    """A stand-in for the token's profile URL that records every look-up."""
    asked: list[str] = []

    async def profile(request: web.Request) -> web.Response:
        asked.append(request.headers.get("Authorization", ""))
        return web.json_response({"error": "invalid token"}, status=401)

    app = web.Application()
    app.router.add_get("/profile", profile)
    async with TestServer(app) as server:
        yield str(server.make_url("/profile")), asked


async def test_a_bearer_token_on_a_server_without_xoauth2_is_401_basic(
    user: ImapUser, tmp_path: Path, profile_url: tuple[str, list[str]], proxy_client: ProxyClient
) -> None:
    url, asked = profile_url
    cfg = config(user, tmp_path, bearer_profile_url=url)
    async with proxy_client(cfg) as http:
        # each instance learns the server's capabilities by itself (Rule 6 of http.auth):
        # one token to each, in turn
        for _ in apps_of(http):
            resp = await session(http, {"Authorization": "Bearer ya29.garbage"})
            assert resp.status == 401
            assert resp.content_type == PROBLEM
            assert resp.headers["WWW-Authenticate"] == 'Basic realm="imapjmap", charset="UTF-8"'
        assert asked == []  # the token went nowhere
        # the challenge of a request without credentials names Basic only as well
        for _ in apps_of(http):
            resp = await session(http, {})
            assert resp.status == 401
            assert "Bearer" not in resp.headers["WWW-Authenticate"]
        assert await account_id(http, basic(user.username, user.password))


OAUTH_TOKEN = "ya29.a-good-token"


@dataclasses.dataclass
class OAuthDovecot:
    server: DovecotServer
    user: ImapUser
    profile_url: str
    introspected: list[str]  # tokens Dovecot asked about


@pytest.fixture(scope="module")
def oauth_dovecot() -> Iterator[OAuthDovecot]:
    """A Dovecot that takes OAuth 2.0 tokens (SASL XOAUTH2, checked at an introspection
    URL), and a stand-in for the token's profile URL; both URLs are served here."""
    username = f"oliver-{secrets.token_hex(4)}"
    introspected: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # Dovecot's token introspection (RFC 7662)
            length = int(self.headers.get("Content-Length", "0"))
            form = urllib.parse.parse_qs(self.rfile.read(length).decode())
            token = form.get("token", [""])[0]
            introspected.append(token)
            if token == OAUTH_TOKEN:
                self._answer(200, {"active": True, "username": username})
            else:
                self._answer(200, {"active": False})

        def do_GET(self) -> None:  # the token's profile, for the proxy
            if self.headers.get("Authorization") == f"Bearer {OAUTH_TOKEN}":
                self._answer(200, {"email": username})
            else:
                self._answer(401, {"error": "invalid_token"})

    web_server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=web_server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{web_server.server_address[1]}"
    try:
        with dovecot_root() as root:
            settings = root / "oauth2.conf.ext"
            settings.write_text(
                f"introspection_mode = post\nintrospection_url = {base}/introspect\n"
                "username_attribute = username\nactive_attribute = active\n"
                "active_value = true\n"
            )
            settings.chmod(0o644)
            oauth = (
                "auth_mechanisms = plain login xoauth2 oauthbearer\n"
                "passdb {\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n"
                f"  args = {settings}\n}}\n"
            )
            server = DovecotServer.start(root, extra_conf=oauth)
            password = secrets.token_urlsafe(12)
            server.add_user(username, password)
            user = ImapUser(username, password, server.host, server.port)
            yield OAuthDovecot(server, user, f"{base}/profile", introspected)
            server.stop()
    finally:
        web_server.shutdown()
        web_server.server_close()


async def test_a_bearer_token_logs_in_where_the_server_offers_xoauth2(
    oauth_dovecot: OAuthDovecot, tmp_path: Path, proxy_client: ProxyClient
) -> None:
    """Not Gmail, but the server offers AUTH=XOAUTH2: Bearer is tried, and reaches the same
    account as a Basic login of the same user (the INBOX's X-GUID names the store)."""
    user = oauth_dovecot.user
    cfg = config(user, tmp_path, bearer_profile_url=oauth_dovecot.profile_url)
    async with proxy_client(cfg) as http:
        resp = await session(http, {"Authorization": "Bearer ya29.garbage"})
        assert resp.status == 401
        assert "Bearer" in resp.headers["WWW-Authenticate"]  # it may work here
        bearer = await account_id(http, {"Authorization": f"Bearer {OAUTH_TOKEN}"})
        assert await account_id(http, basic(user.username, user.password)) == bearer
    assert set(oauth_dovecot.introspected) == {OAUTH_TOKEN}  # the garbage was refused earlier
    assert f"user=<{user.username}>, method=XOAUTH2" in oauth_dovecot.server.log_tail(200)


async def test_a_bearer_token_for_a_non_gmail_server_never_goes_to_google(
    oauth_dovecot: OAuthDovecot,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    proxy_client: ProxyClient,
) -> None:
    """The server offers XOAUTH2 but is not Gmail, and no profile URL of its own is
    configured: a client that sends its password as a Bearer token (as a library that only
    speaks Bearer does) gets 401 saying why, not 503 after asking Google's profile URL."""
    looked_up: list[str] = []

    async def token_user(url: str, token: str, timeout: float) -> str | None:
        looked_up.append(url)
        raise OSError("unreachable")

    monkeypatch.setattr(auth_module, "token_user", token_user)
    user = oauth_dovecot.user
    async with proxy_client(config(user, tmp_path)) as http:
        resp = await session(http, {"Authorization": f"Bearer {user.password}"})
        assert resp.status == 401
        assert resp.content_type == PROBLEM
        assert resp.headers["WWW-Authenticate"] == 'Basic realm="imapjmap", charset="UTF-8"'
        assert "auth.bearer_profile_url" in (await resp.json())["detail"]
        assert looked_up == []
        assert await account_id(http, basic(user.username, user.password))
