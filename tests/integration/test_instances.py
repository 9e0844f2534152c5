"""The two-instance mode of the integration tests (tests/integration/instances.py): the
client really alternates, and both instances answer from one cache."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from imapjmap.config import PushConfig
from imapjmap.http import views
from tests.integration.conftest import Jmap, proxy_config
from tests.integration.instances import Alternating, apps_of, instances_option, serve
from tests.integration.pushkit import Receiver, push_receiver
from tests.integration.test_push_subscription import _create, _set


def test_proxy_http_is_as_many_instances_as_asked(
    request: pytest.FixtureRequest, proxy_http: TestClient[Any, Any]
) -> None:
    alternating = isinstance(proxy_http, Alternating)
    assert alternating == (instances_option(request.config) == 2)
    if alternating:
        assert isinstance(proxy_http, Alternating) and len(proxy_http.servers) == 2


async def test_each_request_goes_to_the_other_instance_and_sees_the_last_write(
    imap_user: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Any request on any instance: a mailbox created through one instance is there, at
    the state that create left, when the next request asks the other."""
    async with serve(proxy_config(imap_user, tmp_path), request, tmp_path, count=2) as http:
        assert isinstance(http, Alternating)
        jmap = Jmap(http, imap_user.username, imap_user.password)
        await jmap.session()  # instance 0
        assert http.served == [1, 0]
        created = await jmap.ok("Mailbox/set", {"create": {"m": {"name": "Alternated"}}})
        assert http.served == [1, 1]
        got = await jmap.ok("Mailbox/get", {"ids": [created["created"]["m"]["id"]]})
        assert http.served == [2, 1]
        assert [m["name"] for m in got["list"]] == ["Alternated"]
        assert got["state"] == created["newState"]
        changes = await jmap.ok("Mailbox/changes", {"sinceState": created["oldState"]})
        assert http.served == [2, 2]
        assert changes["created"] == [created["created"]["m"]["id"]]
        assert changes["newState"] == created["newState"]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with push_receiver() as state:
        yield state


async def test_a_subscription_destroyed_through_one_instance_stops_on_the_other_core_push_02(
    imap_user: Any, tmp_path: Path, request: pytest.FixtureRequest, receiver: Receiver
) -> None:
    """The destroy is announced to the other instances only once it is in the cache:
    announced before, the other instance reloaded the subscription still there and kept
    delivering it."""
    cfg = dataclasses.replace(
        proxy_config(imap_user, tmp_path),
        push=PushConfig(allowed_url_prefixes=("http://127.0.0.1:",)),
    )
    async with serve(cfg, request, tmp_path, count=2) as http:
        jmap = Jmap(http, imap_user.username, imap_user.password)
        await jmap.session()  # instance 0
        sub_id = (await _create(jmap, receiver.url))["created"]["s"]["id"]  # 1
        _, verification = await receiver.next()
        code = verification["verificationCode"]
        await _set(jmap, {"update": {sub_id: {"verificationCode": code}}})  # 0
        services = [app[views.SERVICES].push.subscriptions for app in apps_of(http)]

        async def running_on_each(expected: list[str]) -> list[list[str]]:
            # the other instance hears of a change a moment later
            for _ in range(50):
                running = [s.running(jmap.account_id) for s in services]
                if running == [expected, expected]:
                    break
                await asyncio.sleep(0.1)
            return running

        assert await running_on_each([sub_id]) == [[sub_id], [sub_id]]
        assert (await _set(jmap, {"destroy": [sub_id]}))["destroyed"] == [sub_id]  # 1
        assert await running_on_each([]) == [[], []]
