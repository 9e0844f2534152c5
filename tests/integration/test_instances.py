"""The two-instance mode of the integration tests (tests/integration/instances.py): the
client really alternates, and both instances answer from one cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.integration.conftest import Jmap, proxy_config
from tests.integration.instances import Alternating, instances_option, serve


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
