"""PushSubscription (RFC 8620 §7.2, CORE-PUSH-02): a local aiohttp receiver on loopback gets the
PushVerification and StateChange POSTs (loopback is allowed here by a ``push`` URL prefix)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from imapjmap.config import PushConfig
from imapjmap.http import views
from tests.integration.conftest import CORE, MAIL, Jmap, proxy_config
from tests.integration.instances import ProxyClient, apps_of
from tests.integration.pushkit import (
    Receiver,
    decrypt_push,
    listeners,
    new_push_keys,
    push_receiver,
    push_services,
    running,
    wait_for,
    wait_watching,
    watcher_of,
)

pytestmark = pytest.mark.dovecot


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with push_receiver() as state:
        yield state


@pytest.fixture
async def jmap(imap_user: Any, tmp_path: Path, proxy_client: ProxyClient) -> AsyncIterator[Jmap]:
    cfg = dataclasses.replace(
        proxy_config(imap_user, tmp_path),
        push=PushConfig(allowed_url_prefixes=("http://127.0.0.1:",)),
    )
    async with proxy_client(cfg) as http:
        client = Jmap(http, imap_user.username, imap_user.password)
        await client.session()
        for app in apps_of(http):  # whichever instance delivers
            app[views.SERVICES].push.subscriptions.retry_base = 0.05
        yield client


async def _set(jmap: Jmap, args: dict[str, Any]) -> dict[str, Any]:
    body = await jmap.request([["PushSubscription/set", args, "p"]], using=[CORE, MAIL])
    name, result, _ = body["methodResponses"][0]
    assert name == "PushSubscription/set", result
    assert "accountId" not in result and "newState" not in result
    return dict(result)


async def _get(jmap: Jmap, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    body = await jmap.request([["PushSubscription/get", args, "g"]], using=[CORE])
    name, result, _ = body["methodResponses"][0]
    return name, result


async def _create(jmap: Jmap, url: str, **extra: Any) -> dict[str, Any]:
    result = await _set(jmap, {"create": {"s": {"deviceClientId": "dev-1", "url": url, **extra}}})
    return dict(result)


def _parse(date: str) -> dt.datetime:
    return dt.datetime.fromisoformat(date.replace("Z", "+00:00"))


async def test_verification_then_state_changes_only_after_it_core_push_02(
    jmap: Jmap, receiver: Receiver
) -> None:
    result = await _create(jmap, receiver.url, types=["Mailbox"])
    sub_id = result["created"]["s"]["id"]
    headers, body = await receiver.next()
    assert body["@type"] == "PushVerification"
    assert body["pushSubscriptionId"] == sub_id
    code = body["verificationCode"]
    assert len(code) >= 32
    assert headers["Content-Type"].startswith("application/json") and int(headers["TTL"]) > 0
    # unverified: a change is not pushed
    await jmap.ok("Mailbox/set", {"create": {"a": {"name": "Before"}}})
    assert await receiver.none_within(1.0)
    wrong = await _set(jmap, {"update": {sub_id: {"verificationCode": "0" * 32}}})
    assert wrong["notUpdated"][sub_id]["type"] == "invalidProperties"
    right = await _set(jmap, {"update": {sub_id: {"verificationCode": code}}})
    assert sub_id in right["updated"]
    await wait_watching(jmap)
    await jmap.ok("Mailbox/set", {"create": {"b": {"name": "After"}}})
    headers, change = await receiver.next()
    assert change["@type"] == "StateChange"
    mailbox_state = (await jmap.ok("Mailbox/get", {"ids": []}))["state"]
    assert change["changed"] == {jmap.account_id: {"Mailbox": mailbox_state}}
    _, got = await _get(jmap, {"ids": [sub_id]})
    assert got["list"][0]["verificationCode"] == code


async def test_get_never_returns_url_or_keys_core_push_02(jmap: Jmap, receiver: Receiver) -> None:
    sub_id = (await _create(jmap, receiver.url))["created"]["s"]["id"]
    name, got = await _get(jmap, {"ids": None})
    assert name == "PushSubscription/get"
    assert "state" not in got and "accountId" not in got
    [item] = got["list"]
    assert item["id"] == sub_id and item["deviceClientId"] == "dev-1"
    assert "url" not in item and "keys" not in item
    assert item["verificationCode"] is None and item["types"] is None
    for forbidden in (["url"], ["id", "keys"]):
        name, error = await _get(jmap, {"ids": None, "properties": forbidden})
        assert name == "error" and error["type"] == "forbidden"
    name, error = await _get(jmap, {"accountId": jmap.account_id})
    assert name == "error" and error["type"] == "invalidArguments"


async def test_subscriptions_are_per_account(jmap: Jmap, receiver: Receiver, dovecot: Any) -> None:
    await _create(jmap, receiver.url)
    dovecot.add_user("other-push-user", "secret-pw-1")
    other = Jmap(jmap.http, "other-push-user", "secret-pw-1")
    await other.session()
    _, got = await _get(other, {"ids": None})
    assert got["list"] == []


async def test_default_policy_refuses_private_and_plain_urls_core_push_02(
    imap_user: Any, tmp_path: Path, proxy_client: ProxyClient
) -> None:
    async with proxy_client(proxy_config(imap_user, tmp_path)) as http:
        jmap = Jmap(http, imap_user.username, imap_user.password)
        await jmap.session()
        for url in ("https://127.0.0.1/push", "https://localhost:8443/x", "https://10.1.2.3/"):
            refused = await _create(jmap, url)
            assert refused["notCreated"]["s"]["type"] == "forbidden", url
        for url in ("http://push.example.org/x", "ftp://example.org/", "not a url"):
            refused = await _create(jmap, url)
            assert refused["notCreated"]["s"]["type"] == "invalidProperties", url
            assert refused["notCreated"]["s"]["properties"] == ["url"]


async def test_expiry_is_clamped_to_seven_days_core_push_02(jmap: Jmap, receiver: Receiver) -> None:
    now = dt.datetime.now(dt.UTC)
    far = (now + dt.timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    created = (await _create(jmap, receiver.url, expires=far))["created"]["s"]
    expires = _parse(created["expires"])
    assert abs((expires - now) - dt.timedelta(days=7)) < dt.timedelta(minutes=1)
    default = (await _create(jmap, receiver.url))["created"]["s"]
    assert abs((_parse(default["expires"]) - now) - dt.timedelta(days=7)) < dt.timedelta(minutes=1)
    soon = (now + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    updated = await _set(jmap, {"update": {created["id"]: {"expires": soon}}})
    assert updated["updated"][created["id"]] is None  # accepted as asked
    past = await _create(jmap, receiver.url, expires="2001-01-01T00:00:00Z")
    assert past["notCreated"]["s"]["properties"] == ["expires"]


async def test_keys_and_immutable_properties_are_refused(jmap: Jmap, receiver: Receiver) -> None:
    keyed = await _create(jmap, receiver.url, keys={"p256dh": "x", "auth": "y"})
    assert keyed["notCreated"]["s"]["properties"] == ["keys"]
    sub_id = (await _create(jmap, receiver.url))["created"]["s"]["id"]
    changed = await _set(jmap, {"update": {sub_id: {"url": receiver.url + "2"}}})
    assert changed["notUpdated"][sub_id]["type"] == "invalidProperties"
    missing = await _set(jmap, {"update": {"Pnope": {"types": None}}})
    assert missing["notUpdated"]["Pnope"]["type"] == "notFound"


async def test_destroy_stops_delivery_and_forgets_it(jmap: Jmap, receiver: Receiver) -> None:
    """On several instances the one that served a request acts on it before answering, the
    others once they hear of it (a moment later): every one stops, and nothing is sent."""
    sub_id = (await _create(jmap, receiver.url))["created"]["s"]["id"]
    _, verification = await receiver.next()
    code = verification["verificationCode"]
    await _set(jmap, {"update": {sub_id: {"verificationCode": code}}})
    each = [service.subscriptions.running(jmap.account_id) for service in push_services(jmap)]
    assert [sub_id] in each
    destroyed = await _set(jmap, {"destroy": [sub_id, "Pnope"]})
    assert destroyed["destroyed"] == [sub_id]
    assert destroyed["notDestroyed"]["Pnope"]["type"] == "notFound"
    each = [service.subscriptions.running(jmap.account_id) for service in push_services(jmap)]
    assert [] in each
    await wait_for(
        lambda: not running(jmap) and not listeners(jmap, jmap.account_id),
        what="every instance to stop delivering it",
    )
    await wait_for(lambda: watcher_of(jmap) is None, what="the watcher to stop")
    _, got = await _get(jmap, {"ids": [sub_id]})
    assert got["notFound"] == [sub_id]
    await jmap.ok("Mailbox/set", {"create": {"a": {"name": "Nobody hears"}}})
    assert await receiver.none_within(1.0)


async def test_failed_posts_are_retried_and_a_gone_endpoint_destroys_it(
    jmap: Jmap, receiver: Receiver
) -> None:
    receiver.status = 503
    sub_id = (await _create(jmap, receiver.url))["created"]["s"]["id"]
    tries = [await receiver.next() for _ in range(5)]  # 5 tries, then it gives up
    assert {body["verificationCode"] for _, body in tries} == {tries[0][1]["verificationCode"]}
    assert await receiver.none_within(1.0)
    receiver.status = 200
    code = tries[0][1]["verificationCode"]
    await _set(jmap, {"update": {sub_id: {"verificationCode": code}}})
    receiver.status = 410
    await wait_watching(jmap)
    await jmap.ok("Mailbox/set", {"create": {"a": {"name": "Gone"}}})
    await receiver.next()
    await wait_for(lambda: not running(jmap), what="stop")
    _, got = await _get(jmap, {"ids": [sub_id]})
    assert got["notFound"] == [sub_id]


async def test_subscriptions_survive_a_restart(
    imap_user: Any, tmp_path: Path, receiver: Receiver, proxy_client: ProxyClient
) -> None:
    cfg = dataclasses.replace(
        proxy_config(imap_user, tmp_path),
        push=PushConfig(allowed_url_prefixes=("http://127.0.0.1:",)),
    )
    async with proxy_client(cfg) as http:
        jmap = Jmap(http, imap_user.username, imap_user.password)
        await jmap.session()
        sub_id = (await _create(jmap, receiver.url))["created"]["s"]["id"]
        _, verification = await receiver.next()
        await _set(
            jmap, {"update": {sub_id: {"verificationCode": verification["verificationCode"]}}}
        )
    async with proxy_client(cfg) as http:
        jmap = Jmap(http, imap_user.username, imap_user.password)
        await jmap.session()  # the login lets the restored subscription watch the upstream
        await wait_for(lambda: running(jmap) == [sub_id], what="the restored subscription")
        await wait_watching(jmap)
        await jmap.ok("Mailbox/set", {"create": {"a": {"name": "After restart"}}})
        _, change = await receiver.next()
        assert change["@type"] == "StateChange"


async def test_keys_encrypt_every_message_rfc_8291_core_push_02(
    jmap: Jmap, receiver: Receiver
) -> None:
    private_key, auth, keys = new_push_keys()
    created = await _create(jmap, receiver.url, keys=keys, types=["Mailbox"])
    sub_id = created["created"]["s"]["id"]
    assert "keys" not in created["created"]["s"]  # as sent: not echoed
    headers, body = await receiver.next()
    assert headers["Content-Encoding"] == "aes128gcm"
    verification = json.loads(decrypt_push(body, private_key, auth))
    assert verification["pushSubscriptionId"] == sub_id
    code = verification["verificationCode"]
    await _set(jmap, {"update": {sub_id: {"verificationCode": code}}})
    await wait_watching(jmap)
    await jmap.ok("Mailbox/set", {"create": {"a": {"name": "Secret"}}})
    _, body = await receiver.next()
    change = json.loads(decrypt_push(body, private_key, auth))
    assert list(change["changed"][jmap.account_id]) == ["Mailbox"]
    _, got = await _get(jmap, {"ids": [sub_id]})
    assert "keys" not in got["list"][0]
