"""Quota (RFC 9425) from IMAP QUOTA (RFC 9208), against Dovecot's quota plugin (a per-user
``quota_rule``) and Cyrus quotas (SETQUOTA as the administrator).  The oracle is a second
plain IMAP connection: it appends the mail whose arrival must move ``used``.

Requirement ids (RFC 9425; the numbers are this module's):

- QUOTA-01 The session and the account advertise ``urn:ietf:params:jmap:quota`` (``{}``)
  exactly where the server reports quotas; elsewhere Quota calls are
  ``accountNotSupportedByMethod``.
- QUOTA-02 Quota/get returns each quota resource: STORAGE as ``octets`` (KiB × 1024) and
  MESSAGE as ``count``, scope ``account``, ``hardLimit`` the server's limit, ``types``;
  unknown ids in ``notFound``; ``id`` always returned.
- QUOTA-03 Types whose capability is not in ``using`` are left out, and a quota left with
  no type is not returned (§3.1).
- QUOTA-04 Quota/changes reports a quota whose ``used`` moved (mail arrived) as updated,
  with ``updatedProperties: ["used"]``; a limit change gives ``updatedProperties: null``;
  the state does not change while nothing changed.
- QUOTA-05 Quota/query filters on ``name``, ``scope``, ``resourceType``, ``type`` and sorts
  by ``name`` and ``used``; other filters are ``unsupportedFilter``, other sorts
  ``unsupportedSort``.
- QUOTA-06 Quota/queryChanges removes and re-adds what changed since the query state.
- QUOTA-11 The standard arguments of /changes and /query (RFC 8620 §5.2, §5.5) hold:
  ``maxChanges`` pages with ``hasMoreChanges``, ``position``/``limit`` window the ids,
  ``calculateTotal`` counts them all.
- QUOTA-07 Bad input gets the RFC's errors: an unknown state (garbage, from the future,
  of another cache) is ``cannotCalculateChanges``, a bad filter value ``invalidArguments``.
- QUOTA-08 Quota/get with ``properties`` returns those and ``id`` only; without, every
  property of §2 (id, resourceType, used, hardLimit, scope, name, types, warnLimit,
  softLimit, description); ``ids: []`` returns none.
- QUOTA-09 Quota is read-only (§4): Quota/set is ``unknownMethod``.
- QUOTA-10 Quota's state in push (RFC 8620 §7.1): once the client has read the quotas,
  mail another client adds moves ``used``, and the account's EventSource carries Quota's
  new state without a further Quota call.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from devservers.cyrus import CyrusServer
from devservers.dovecot import DovecotServer
from imapjmap.jmap import state as jstate
from tests.conftest import ImapUser, dovecot_root
from tests.integration.conftest import CORE, MAIL, Jmap, proxy_config
from tests.integration.instances import ProxyClient
from tests.integration.pushkit import open_events, wait_watching

QUOTA = "urn:ietf:params:jmap:quota"
USING = [CORE, MAIL, QUOTA]
MESSAGE = b"From: a@example.org\r\nSubject: quota\r\n\r\n" + b"x" * 3000 + b"\r\n"


@contextlib.asynccontextmanager
async def _client(proxy_client: ProxyClient, user: ImapUser, tmp_path: Path) -> AsyncIterator[Jmap]:
    async with proxy_client(proxy_config(user, tmp_path)) as http:
        client = Jmap(http, user.username, user.password)
        await client.session()
        yield client


def _user(server: DovecotServer | CyrusServer, **quota_rules: Any) -> ImapUser:
    username, password = f"quota-{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    if isinstance(server, DovecotServer):
        server.add_user(username, password, quota_rules=list(quota_rules.values()))
    else:
        server.add_user(username, password)
    return ImapUser(username, password, server.host, server.port)


def _append(user: ImapUser, raw: bytes = MESSAGE) -> None:
    client = user.connect()
    try:
        typ, data = client.append("INBOX", None, None, raw)
        assert typ == "OK", data
    finally:
        client.logout()


async def _calls(jmap: Jmap, *calls: tuple[str, dict[str, Any]], using: list[str] = USING) -> Any:
    body = await jmap.request(
        [
            [name, {"accountId": jmap.account_id, **args}, f"c{i}"]
            for i, (name, args) in enumerate(calls)
        ],
        using=using,
    )
    return body["methodResponses"]


async def _one(jmap: Jmap, name: str, args: dict[str, Any], using: list[str] = USING) -> Any:
    [[response, result, _]] = await _calls(jmap, (name, args), using=using)
    return response, result


def _moved(token: str, *, seq: int | None = None, epoch: str | None = None) -> str:
    """A state like ``token`` (``s<seq base 36>.<epoch>``) with its seq or its cache's
    epoch changed: one the server never gave."""
    head, _, old_epoch = token.partition(".")
    assert head.startswith("s") and old_epoch, token
    new_seq = int(head[1:], 36) if seq is None else seq
    return jstate.encode(jstate.State(old_epoch if epoch is None else epoch, new_seq))


def _by_type(quotas: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {q["resourceType"]: q for q in quotas}


@pytest.fixture
async def dovecot_quota(
    dovecot: DovecotServer, tmp_path: Path, proxy_client: ProxyClient
) -> AsyncIterator[tuple[ImapUser, Jmap]]:
    user = _user(dovecot, storage="*:storage=1M", messages="*:messages=5")
    async with _client(proxy_client, user, tmp_path) as client:
        yield user, client


async def test_dovecot_quotas_and_their_changes(dovecot_quota: tuple[ImapUser, Jmap]) -> None:
    """QUOTA-01, QUOTA-02, QUOTA-04, QUOTA-08: Dovecot's ``User quota`` root, STORAGE and
    MESSAGE."""
    user, jmap = dovecot_quota
    session = await jmap.session()
    assert session["capabilities"][QUOTA] == {}
    assert session["accounts"][jmap.account_id]["accountCapabilities"][QUOTA] == {}
    assert session["primaryAccounts"][QUOTA] == jmap.account_id

    name, got = await _one(jmap, "Quota/get", {"ids": None})
    assert name == "Quota/get", got
    quotas = _by_type(got["list"])
    assert set(quotas) == {"octets", "count"}
    octets, count = quotas["octets"], quotas["count"]
    assert octets["hardLimit"] == 1024 * 1024 and octets["used"] == 0
    assert count["hardLimit"] == 5 and count["used"] == 0
    for quota in (octets, count):
        assert quota["scope"] == "account"
        assert "Email" in quota["types"]
        assert "User quota" in quota["name"]
        assert quota["warnLimit"] is None and quota["softLimit"] is None
    first_state = got["state"]

    _, again = await _one(
        jmap, "Quota/get", {"ids": [count["id"], "Qnope"], "properties": ["used"]}
    )
    assert again["state"] == first_state  # nothing changed: same state (QUOTA-04)
    assert again["list"] == [{"id": count["id"], "used": 0}]
    assert again["notFound"] == ["Qnope"]
    every = {"id", "resourceType", "used", "hardLimit", "scope", "name", "types"}
    every |= {"warnLimit", "softLimit", "description"}
    assert all(set(quota) == every for quota in got["list"])  # QUOTA-08
    _, no_ids = await _one(jmap, "Quota/get", {"ids": []})
    assert no_ids["list"] == [] and no_ids["notFound"] == []

    _append(user)
    name, changes = await _one(jmap, "Quota/changes", {"sinceState": first_state})
    assert name == "Quota/changes", changes
    assert sorted(changes["updated"]) == sorted([octets["id"], count["id"]])
    assert changes["created"] == [] and changes["destroyed"] == []
    assert changes["updatedProperties"] == ["used"]
    assert changes["newState"] != first_state and not changes["hasMoreChanges"]

    _, now = await _one(jmap, "Quota/get", {"ids": None})
    assert now["state"] == changes["newState"]
    quotas = _by_type(now["list"])
    assert quotas["count"]["used"] == 1
    # Dovecot counts in KiB: the 3 KB message is some whole KiB, reported in octets
    assert quotas["octets"]["used"] >= 3 * 1024 and quotas["octets"]["used"] % 1024 == 0

    _, none = await _one(jmap, "Quota/changes", {"sinceState": now["state"]})
    assert none["updated"] == [] and none["newState"] == now["state"]


async def test_types_need_their_capability(dovecot_quota: tuple[ImapUser, Jmap]) -> None:
    """QUOTA-03: without mail in ``using`` every quota is left with no type: none shown."""
    _, jmap = dovecot_quota
    _, with_mail = await _one(jmap, "Quota/get", {"ids": None})
    ids = [q["id"] for q in with_mail["list"]]
    name, got = await _one(jmap, "Quota/get", {"ids": None}, using=[CORE, QUOTA])
    assert name == "Quota/get", got
    assert got["list"] == []
    _, asked = await _one(jmap, "Quota/get", {"ids": ids}, using=[CORE, QUOTA])
    assert asked["notFound"] == ids
    _, query = await _one(jmap, "Quota/query", {}, using=[CORE, QUOTA])
    assert query["ids"] == []


async def test_query_and_query_changes(dovecot_quota: tuple[ImapUser, Jmap]) -> None:
    """QUOTA-05, QUOTA-06, QUOTA-07, QUOTA-09."""
    user, jmap = dovecot_quota
    _, got = await _one(jmap, "Quota/get", {"ids": None})
    quotas = _by_type(got["list"])
    octets, count = quotas["octets"]["id"], quotas["count"]["id"]

    async def query(**args: Any) -> list[str]:
        name, result = await _one(jmap, "Quota/query", args)
        assert name == "Quota/query", result
        ids: list[str] = result["ids"]
        return ids

    assert await query(filter={"resourceType": "count"}) == [count]
    assert await query(filter={"type": "Email", "scope": "account"}) in (
        [octets, count],
        [count, octets],
    )
    assert await query(filter={"scope": "domain"}) == []
    assert await query(filter={"name": "user QUOTA (storage"}) == [octets]
    assert await query(filter={"operator": "NOT", "conditions": [{"resourceType": "count"}]}) == [
        octets
    ]
    _append(user)
    # used: 1 message against several KiB
    assert await query(sort=[{"property": "used", "isAscending": True}]) == [count, octets]
    assert await query(sort=[{"property": "used", "isAscending": False}]) == [octets, count]
    # "User quota (message)" before "User quota (storage)"
    assert await query(sort=[{"property": "name"}]) == [count, octets]
    assert await query(sort=[{"property": "name", "isAscending": False}]) == [octets, count]

    name, result = await _one(jmap, "Quota/query", {"sort": [{"property": "used"}]})
    query_state = result["queryState"]
    assert result["canCalculateChanges"] is True
    _append(user)
    name, changes = await _one(
        jmap,
        "Quota/queryChanges",
        {"sinceQueryState": query_state, "sort": [{"property": "used"}], "calculateTotal": True},
    )
    assert name == "Quota/queryChanges", changes
    assert sorted(changes["removed"]) == sorted([octets, count])
    assert changes["added"] == [{"id": count, "index": 0}, {"id": octets, "index": 1}]
    assert changes["total"] == 2

    # QUOTA-11
    name, page = await _one(
        jmap, "Quota/query", {"sort": [{"property": "used"}], "position": 1, "limit": 1}
    )
    assert name == "Quota/query", page
    assert page["ids"] == [octets] and page["position"] == 1
    _, counted = await _one(jmap, "Quota/query", {"limit": 1, "calculateTotal": True})
    assert len(counted["ids"]) == 1 and counted["total"] == 2
    _, first = await _one(jmap, "Quota/changes", {"sinceState": got["state"], "maxChanges": 1})
    assert len(first["updated"]) == 1 and first["hasMoreChanges"] is True
    _, rest = await _one(jmap, "Quota/changes", {"sinceState": first["newState"]})
    assert rest["hasMoreChanges"] is False
    assert sorted(first["updated"] + rest["updated"]) == sorted([octets, count])

    errors: list[tuple[str, dict[str, Any], str]] = [
        ("Quota/query", {"filter": {"hardLimit": 5}}, "unsupportedFilter"),
        ("Quota/query", {"filter": {"name": 5}}, "invalidArguments"),
        ("Quota/query", {"sort": [{"property": "hardLimit"}]}, "unsupportedSort"),
        ("Quota/changes", {"sinceState": "garbage"}, "cannotCalculateChanges"),
        ("Quota/changes", {"sinceState": got["state"], "maxChanges": 0}, "invalidArguments"),
        ("Quota/queryChanges", {"sinceQueryState": "garbage"}, "cannotCalculateChanges"),
        (
            "Quota/changes",
            {"sinceState": _moved(got["state"], seq=10**6)},
            "cannotCalculateChanges",
        ),
        (
            "Quota/changes",
            {"sinceState": _moved(got["state"], epoch="x")},
            "cannotCalculateChanges",
        ),
        ("Quota/get", {"properties": ["nope"]}, "invalidArguments"),
        ("Quota/set", {"update": {octets: {"used": 0}}}, "unknownMethod"),
    ]
    for method, args, error in errors:
        name, result = await _one(jmap, method, args)
        assert (name, result.get("type")) == ("error", error), (method, args, result)


async def test_quota_state_is_pushed_when_mail_arrives(
    dovecot_quota: tuple[ImapUser, Jmap],
) -> None:
    """QUOTA-10: another client's APPEND reaches an EventSource listening for Quota only
    as Quota's new state, the one Quota/get then gives, without a Quota call between."""
    user, jmap = dovecot_quota
    _, got = await _one(jmap, "Quota/get", {"ids": None})
    events = await open_events(jmap, "types=Quota&closeafter=no&ping=0")
    try:
        first = await events.next()
        assert first.data["changed"][jmap.account_id] == {"Quota": got["state"]}
        await wait_watching(jmap)
        await asyncio.to_thread(_append, user)
        event = await events.next(timeout=10)
        pushed = event.data["changed"][jmap.account_id]
        assert set(pushed) == {"Quota"} and pushed["Quota"] != got["state"]
        _, changes = await _one(jmap, "Quota/changes", {"sinceState": got["state"]})
        assert changes["newState"] == pushed["Quota"]
        assert sorted(changes["updated"]) == sorted(q["id"] for q in got["list"])
    finally:
        events.resp.close()


async def test_cyrus_quotas(cyrus: CyrusServer, tmp_path: Path, proxy_client: ProxyClient) -> None:
    """QUOTA-02, QUOTA-04 on Cyrus: no quota root at first; one set by the administrator
    appears as created, mail arriving moves ``used``, a new limit is a property change."""
    user = _user(cyrus)
    async with _client(proxy_client, user, tmp_path) as jmap:
        session = await jmap.session()
        assert session["capabilities"][QUOTA] == {}
        _, empty = await _one(jmap, "Quota/get", {"ids": None})
        assert empty["list"] == []

        cyrus.set_quota(user.username, STORAGE=1024, MESSAGE=5)
        _, changes = await _one(jmap, "Quota/changes", {"sinceState": empty["state"]})
        assert len(changes["created"]) == 2 and changes["updated"] == []
        _, got = await _one(jmap, "Quota/get", {"ids": None})
        quotas = _by_type(got["list"])
        assert quotas["octets"]["hardLimit"] == 1024 * 1024
        assert quotas["count"] == quotas["count"] | {"hardLimit": 5, "used": 0}

        _append(user)
        _, changes = await _one(jmap, "Quota/changes", {"sinceState": got["state"]})
        assert quotas["count"]["id"] in changes["updated"]
        assert changes["updatedProperties"] == ["used"]
        _, after = await _one(jmap, "Quota/get", {"ids": [quotas["count"]["id"]]})
        assert after["list"][0]["used"] == 1

        cyrus.set_quota(user.username, STORAGE=2048, MESSAGE=5)
        _, changes = await _one(jmap, "Quota/changes", {"sinceState": after["state"]})
        assert changes["updated"] == [quotas["octets"]["id"]]
        assert changes["updatedProperties"] is None  # the limit moved, not only ``used``


async def test_no_quota_capability_without_server_quotas(
    tmp_path: Path, proxy_client: ProxyClient
) -> None:
    """QUOTA-01: a server without QUOTA: no capability, and Quota calls are refused."""
    with dovecot_root() as root, DovecotServer.start(root, remove_capabilities={"QUOTA"}) as server:
        user = _user(server)
        async with _client(proxy_client, user, tmp_path) as jmap:
            session = await jmap.session()
            assert QUOTA not in session["capabilities"]
            assert QUOTA not in session["accounts"][jmap.account_id]["accountCapabilities"]
            assert QUOTA not in session["primaryAccounts"]
            name, result = await _one(jmap, "Quota/get", {"ids": None})
            assert (name, result["type"]) == ("error", "accountNotSupportedByMethod")
