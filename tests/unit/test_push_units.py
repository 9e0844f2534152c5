"""Push pure parts: EventSource parameters and framing, the URL policy, the resume stream."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from imapjmap.http.push import PING_MAX, PING_MIN, EventSourceParams, parse_params, sse_event
from imapjmap.jmap.errors import RequestError
from imapjmap.push.ece import encrypt, parse_keys
from imapjmap.push.hub import Hub
from imapjmap.push.stream import PushStream
from imapjmap.push.subscriptions import allowed_by_prefix, check_url, is_public
from imapjmap.store import queries as q
from imapjmap.store.db import Store
from tests.integration.pushkit import decrypt_push, new_push_keys

# --- EventSource parameters (CORE-PUSH-03) ----------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, EventSourceParams(None, False, 0)),
        ({"types": "*", "closeafter": "state", "ping": "0"}, EventSourceParams(None, True, 0)),
        ({"types": "Email,Mailbox"}, EventSourceParams(frozenset({"Email", "Mailbox"}), False, 0)),
        (
            {"types": "Email, EmailDelivery"},
            EventSourceParams(frozenset({"Email", "EmailDelivery"}), False, 0),
        ),
        ({"ping": "1"}, EventSourceParams(None, False, PING_MIN)),
        ({"ping": "300"}, EventSourceParams(None, False, 300)),
        ({"ping": "100000"}, EventSourceParams(None, False, PING_MAX)),
    ],
)
def test_eventsource_parameters_core_push_03(
    query: dict[str, str], expected: EventSourceParams
) -> None:
    assert parse_params(query) == expected


def test_ping_clamp_stays_within_what_the_rfc_allows_core_push_03() -> None:
    assert PING_MIN <= 30 and PING_MAX >= 300


@pytest.mark.parametrize(
    "query",
    [
        {"types": ""},
        {"types": "Email,"},
        {"types": "E mail"},
        {"closeafter": "yes"},
        {"ping": "-5"},
        {"ping": "1.5"},
        {"ping": "9" * 20},
    ],
)
def test_bad_eventsource_parameters_are_400(query: dict[str, str]) -> None:
    with pytest.raises(RequestError) as caught:
        parse_params(query)
    assert caught.value.status == 400


def test_sse_event_framing() -> None:
    assert sse_event("ping", {"interval": 5}) == b'event: ping\ndata: {"interval":5}\n\n'
    assert sse_event("state", {"a": 1}, "s1.e") == b'event: state\nid: s1.e\ndata: {"a":1}\n\n'


# --- URL policy (CORE-PUSH-02) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("127.0.0.1", False),
        ("::1", False),
        ("10.0.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("fe80::1", False),
        ("fd00::1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::ffff:127.0.0.1", False),
        ("100.64.0.1", False),
        ("nonsense", False),
    ],
)
def test_is_public(address: str, public: bool) -> None:
    assert is_public(address) is public


async def _why(url: str, prefixes: tuple[str, ...] = ()) -> str | None:
    refusal = await check_url(url, prefixes)
    return None if refusal is None else refusal.reason


async def test_check_url() -> None:
    assert await _why("http://127.0.0.1:9/x", ("http://127.0.0.1:",)) is None
    assert await _why("http://example.org/") == "must be an https:// URL"
    assert await _why("https://127.0.0.1/") == "host '127.0.0.1' is not a public address"
    assert await _why("https://[::1]:8443/") == "host '::1' is not a public address"
    assert "not a public address" in (await _why("https://localhost/") or "")
    assert await _why("https://user@8.8.8.8/") == "must not hold credentials or white space"
    assert await _why("https://8.8.8.8/push") is None
    refusal = await check_url("https://10.0.0.1/", ())
    assert refusal is not None and not refusal.malformed


@pytest.mark.parametrize(
    ("url", "prefix", "allowed"),
    [
        ("http://127.0.0.1:18499/push/a", "http://127.0.0.1:18499/push/", True),
        ("HTTP://127.0.0.1:18499/push/./a", "http://127.0.0.1:18499/push/", True),
        ("http://127.0.0.1:18499/push/../x", "http://127.0.0.1:18499/push/", False),
        ("http://127.0.0.1:18499/push/%2E%2e/x", "http://127.0.0.1:18499/push/", False),
        ("http://127.0.0.1:18499/push/..", "http://127.0.0.1:18499/push/", False),
        ("http://127.0.0.1:18499/../x", "http://127.0.0.1:18499/", True),  # it is /x
        ("http://127.0.0.1:9/x", "http://127.0.0.1:", True),  # ":" ends it: any port
        ("http://127.0.0.1.evil.example:9/x", "http://127.0.0.1:", False),
        ("http://127.0.0.1:9@evil.example/x", "http://127.0.0.1:", False),
        ("http://gw.internal/x", "http://gw.internal", True),
        ("http://gw.internal:80/x", "http://gw.internal/", True),  # the default port
        ("http://gw.internal:8080/x", "http://gw.internal", False),
        ("http://gw.internal.evil.example/", "http://gw.internal", False),
        ("http://gw.internal\\@evil.example/", "http://gw.internal", False),
        ("https://gw.internal/x", "http://gw.internal/", False),
        ("http://[::1]:8/x", "http://[::1]:", True),
        ("not a url", "http://gw.internal/", False),
    ],
)
def test_allowed_prefixes_match_the_normalised_url(url: str, prefix: str, allowed: bool) -> None:
    assert allowed_by_prefix(url, (prefix,)) is allowed


async def test_a_url_that_escapes_its_prefix_is_policed() -> None:
    refusal = await check_url("http://127.0.0.1:18499/push/../x", ("http://127.0.0.1:18499/push/",))
    assert refusal is not None and refusal.reason == "must be an https:// URL"


# --- the resume stream -----------------------------------------------------------------------


async def _bump(store: Store, account_id: str, *types: str) -> None:
    await store.run(lambda tx: q.next_seq(tx, account_id, list(types)))


async def test_push_stream_resumes_and_never_repeats(tmp_path: Path) -> None:
    store = await Store.open(str(tmp_path / "cache.sqlite3"))
    try:
        row = await store.run(lambda tx: q.ensure_account(tx, "A1", "alice"))
        hub = Hub(store)
        await _bump(store, "A1", "Mailbox")
        async with PushStream(hub, "A1", row.epoch, None) as first:
            current = await first.open(None, initial=True)
            assert current["Mailbox"].startswith("s1.")
            token = first.token
            await _bump(store, "A1", "Email")
            await hub.poke("A1")
            assert set(await first.next(1) or {}) == {"Email"}
            assert await first.next(0.05) is None  # nothing new: nothing sent
        assert hub.listeners("A1") == 0
        await _bump(store, "A1", "Thread")
        async with PushStream(hub, "A1", row.epoch, ["Email", "Thread"]) as resumed:
            catch_up = await resumed.open(token, initial=True)
            assert set(catch_up) == {"Email", "Thread"}
            await hub.poke("A1")  # publishes what the catch-up already covered
            assert await resumed.next(0.05) is None
        async with PushStream(hub, "A1", row.epoch, None) as stranger:
            assert set(await stranger.open("s1.other-epoch", initial=True)) >= {"Mailbox"}
            await asyncio.sleep(0)
    finally:
        await store.aclose()


async def test_a_poke_publishes_while_the_accounts_reader_is_busy(tmp_path: Path) -> None:
    """Every API request pokes the hub while an EventSource listens, and a watcher's change
    is published by a poke too: the poke's read of the states must not queue behind the
    account's other reads (one reader per account), or a change heard by the watcher
    waits for every busy client's read before it (CORE-PUSH-01)."""
    store = await Store.open(str(tmp_path / "cache.sqlite3"), readers=1, readers_per_account=1)
    holding, release = threading.Event(), threading.Event()

    def slow_read(tx: object) -> None:
        holding.set()
        release.wait(10)

    try:
        row = await store.run(lambda tx: q.ensure_account(tx, "A1", "alice"))
        hub = Hub(store)
        async with PushStream(hub, "A1", row.epoch, None) as stream:
            await stream.open(None, initial=True)
            busy = asyncio.ensure_future(store.read(slow_read, account="A1"))
            await asyncio.to_thread(holding.wait, 10)
            await _bump(store, "A1", "Email")
            await asyncio.wait_for(hub.poke("A1"), 1.0)
            assert set(await stream.next(1) or {}) == {"Email"}
            release.set()
            await busy
    finally:
        release.set()
        await store.aclose()


# --- RFC 8291 encryption -----------------------------------------------------------------------


def test_encrypted_push_decrypts_with_the_user_agent_keys() -> None:
    private_key, auth, keys = new_push_keys()
    parsed = parse_keys(keys)
    body = encrypt(b'{"@type":"StateChange"}', parsed)
    assert body[20] == 65 and int.from_bytes(body[16:20], "big") == 4096
    assert decrypt_push(body, private_key, auth) == b'{"@type":"StateChange"}'
    assert encrypt(b"x", parsed) != encrypt(b"x", parsed)  # a fresh key and salt each time


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (None, "exactly p256dh and auth"),
        ({"p256dh": "AAAA"}, "exactly p256dh and auth"),
        ({"p256dh": "!!", "auth": "AAAAAAAAAAAAAAAAAAAAAA"}, "base64"),
        ({"p256dh": "BAAA", "auth": "AAAAAAAAAAAAAAAAAAAAAA"}, "uncompressed P-256 point"),
        ({"p256dh": "B" + "A" * 86, "auth": "AAAA"}, "16 octets"),
        ({"p256dh": "B" + "A" * 86, "auth": "AAAAAAAAAAAAAAAAAAAAAA"}, "not a point"),
    ],
)
def test_bad_keys_are_refused(keys: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_keys(keys)
