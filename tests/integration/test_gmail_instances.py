"""Gmail mode with two instances on one cache, against the Gmail EMULATION
(:mod:`tests.gmail_emulation`): the grace after a write (:class:`imapjmap.sync.gmail.Grace`)
holds on the instance that did not write as well.

The emulation's ``lag`` knob keeps a message a write changed out of every view for a while,
standing in for Gmail's eventual consistency; another client's new message meanwhile makes
the other instance's refresh sync All Mail, where the written message is missing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.gmail_emulation import Message, make_message
from tests.integration.conftest import Jmap
from tests.integration.instances import Alternating, serve
from tests.integration.test_gmail import (  # noqa: F401 (fixtures)
    GmailUser,
    gmail_config,
    gmail_server,
    gmail_user,
    mailboxes,
    seeded,
)

LAG = 2.0  # seconds the written message stays out of every view


async def test_a_label_write_on_one_instance_is_no_destroy_on_the_other_core_chg_02(
    gmail_user: GmailUser,  # noqa: F811
    seeded: dict[str, Message],  # noqa: F811
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """A label added through instance 1; while Gmail does not show the message yet, a
    request on instance 0 syncs All Mail: the Email keeps its id and is never reported
    destroyed (nor created again), on either instance (CORE-CHG-02)."""
    cfg = gmail_config(gmail_user, tmp_path)
    account = gmail_user.account
    async with serve(cfg, request, tmp_path, count=2) as http:
        assert isinstance(http, Alternating)
        gm = Jmap(http, gmail_user.username, gmail_user.password)
        await gm.session()  # instance 0
        boxes = await mailboxes(gm)  # 1
        state = (await gm.ok("Email/get", {"ids": []}))["state"]  # 0
        welcome = f"M{seeded['welcome'].msgid}"
        account.lag = LAG
        await gm.ok(  # 1
            "Email/set", {"update": {welcome: {f"mailboxIds/{boxes['Work']['id']}": True}}}
        )
        account.lag = 0.0
        assert http.served == [2, 2]
        inbox = account.folder("INBOX")
        assert inbox is not None
        account.append(inbox, make_message("Arrived meanwhile"))  # All Mail's UIDNEXT moves
        got = await gm.ok("Email/get", {"ids": [welcome], "properties": ["mailboxIds"]})  # 0
        assert got["list"], "the other instance destroyed the Email while Gmail caught up"
        changes = await gm.ok("Email/changes", {"sinceState": state})  # 1
        assert welcome not in changes["destroyed"]
        assert http.served == [3, 3]
        await asyncio.sleep(LAG + 0.3)
        for _ in range(2):  # once on each instance
            got = await gm.ok("Email/get", {"ids": [welcome], "properties": ["mailboxIds"]})
            assert got["list"] and boxes["Work"]["id"] in got["list"][0]["mailboxIds"]
            changes = await gm.ok("Email/changes", {"sinceState": state})
            assert welcome in changes["updated"]
            assert welcome not in changes["destroyed"] and welcome not in changes["created"]


async def test_a_trip_to_the_trash_on_one_instance_is_no_destroy_on_the_other_core_chg_02(
    gmail_user: GmailUser,  # noqa: F811
    seeded: dict[str, Message],  # noqa: F811
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """Moved to the Trash through instance 1; while Gmail shows it in no folder, a request
    on instance 0 syncs All Mail: the Email keeps its id, on either instance (CORE-CHG-02).

    Not asserted: which mailboxes it shows once the Trash shows it.  The emulation's lag
    hides the Trash copy under a UID below the UIDNEXT the Trash already announced, which
    no sync fetches again (one instance as well)."""
    cfg = gmail_config(gmail_user, tmp_path)
    account = gmail_user.account
    async with serve(cfg, request, tmp_path, count=2) as http:
        gm = Jmap(http, gmail_user.username, gmail_user.password)
        await gm.session()  # instance 0
        boxes = await mailboxes(gm)  # 1
        state = (await gm.ok("Email/get", {"ids": []}))["state"]  # 0
        welcome = f"M{seeded['welcome'].msgid}"
        account.lag = LAG
        await gm.ok(
            "Email/set", {"update": {welcome: {"mailboxIds": {boxes["Trash"]["id"]: True}}}}
        )
        account.lag = 0.0
        inbox = account.folder("INBOX")
        assert inbox is not None
        account.append(inbox, make_message("Arrived meanwhile"))
        got = await gm.ok("Email/get", {"ids": [welcome], "properties": ["mailboxIds"]})  # 0
        assert got["list"], "the other instance destroyed the Email while Gmail caught up"
        assert welcome not in (await gm.ok("Email/changes", {"sinceState": state}))["destroyed"]
        await asyncio.sleep(LAG + 0.3)
        for _ in range(2):  # once on each instance
            got = await gm.ok("Email/get", {"ids": [welcome], "properties": ["mailboxIds"]})
            assert got["list"]
            changes = await gm.ok("Email/changes", {"sinceState": state})
            assert welcome not in changes["destroyed"] and welcome not in changes["created"]
