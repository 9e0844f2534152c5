"""The rest of a first sync parsed in worker processes (sync/parsing.py) caches exactly what
parsing in a thread caches, on every upstream: the same Emails with every list property, the
same Threads, the same mailbox counts, and as many Emails as the upstream has messages."""

from __future__ import annotations

import contextlib
import imaplib
import re
import time
from pathlib import Path
from typing import Any

import pytest

from imapjmap.sync import emails as se
from imapjmap.sync import parsing
from tests.conftest import SeededUser
from tests.integration.conftest import Jmap, proxy_config
from tests.integration.instances import ProxyClient
from tests.integration.test_first_sync import wait_filled

LIST_PROPERTIES = [
    "id", "blobId", "threadId", "mailboxIds", "keywords", "size", "receivedAt", "messageId",
    "inReplyTo", "references", "sender", "from", "to", "cc", "bcc", "replyTo", "subject",
    "sentAt", "hasAttachment",
]  # fmt: skip


async def cached_view(proxy_client: ProxyClient, user: SeededUser, cache: Path) -> dict[str, Any]:
    """A first sync through a fresh proxy, filled to the end; what JMAP then shows."""
    cache.mkdir()
    async with proxy_client(proxy_config(user, cache)) as http:
        jmap = Jmap(http, user.username, user.password)
        await jmap.session()
        await jmap.ok("Mailbox/get", {"ids": None})  # the first batches; the rest fills in
        await wait_filled(http, jmap.account_id)
        boxes = (await jmap.ok("Mailbox/get", {"ids": None}))["list"]
        ids = (await jmap.ok("Email/query", {"sort": [{"property": "receivedAt"}]}))["ids"]
        got = await jmap.ok("Email/get", {"ids": ids, "properties": LIST_PROPERTIES})
        thread_ids = sorted({e["threadId"] for e in got["list"]})
        threads = (await jmap.ok("Thread/get", {"ids": thread_ids}))["list"]
    # a Thread's id comes from whichever of its Emails was cached first, and the mailboxes
    # fill concurrently: what must agree is which Emails share a Thread
    members = {t["id"]: tuple(sorted(t["emailIds"])) for t in threads}
    emails = [{**e, "threadId": members[e["threadId"]]} for e in got["list"]]
    return {
        "mailboxes": sorted(
            (b["name"], b["totalEmails"], b["unreadEmails"], b["totalThreads"]) for b in boxes
        ),
        "emails": sorted(emails, key=lambda e: e["id"]),
        "threads": sorted(members.values()),
    }


def upstream_messages(user: SeededUser) -> int:
    client: imaplib.IMAP4 = user.connect()
    try:
        typ, data = client.list()
        assert typ == "OK", data
        total = 0
        for line in data:
            assert isinstance(line, bytes)
            name = line.rsplit(b" ", 1)[-1]
            if b"\\Noselect" in line:
                continue
            typ, status = client.status(name.decode(), "(MESSAGES)")
            assert typ == "OK", status
            found = re.search(rb"MESSAGES (\d+)", status[-1] or b"")
            assert found is not None, status
            total += int(found.group(1))
        return total
    finally:
        with contextlib.suppress(Exception):
            client.logout()


async def test_first_sync_parsed_in_worker_processes_equals_parsed_in_a_thread(
    seeded_user: SeededUser,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    proxy_client: ProxyClient,
) -> None:
    """EML-01 / THR-01 / MBX-04 hold the same whichever way the batches were parsed."""
    # small batches, so that the seeded mailboxes take several, most of them in the fill
    monkeypatch.setattr(se, "BATCH", 3)
    monkeypatch.setattr(parsing, "POOL_MIN_MESSAGES", 10**9)
    in_thread = await cached_view(proxy_client, seeded_user, tmp_path / "thread")

    monkeypatch.setattr(parsing, "POOL_MIN_MESSAGES", 0)
    used: list[bool] = []
    real_parse = parsing.Parser.parse

    async def watched(self: parsing.Parser, *args: Any) -> parsing.Parsed:
        used.append(self.pool is not None)
        return await real_parse(self, *args)

    monkeypatch.setattr(parsing.Parser, "parse", watched)
    in_workers = await cached_view(proxy_client, seeded_user, tmp_path / "workers")

    assert used and all(used), "the fill did not parse in worker processes"
    assert in_workers == in_thread
    assert len(in_workers["emails"]) == upstream_messages(seeded_user)


async def test_batches_parsed_during_a_transaction_are_written_in_the_next_one(
    seeded_user: SeededUser,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    proxy_client: ProxyClient,
) -> None:
    """While the fill writes one batch, the FETCH and the parsing go on; what they finished
    meanwhile goes into the next transaction (up to WRITE_BATCHES of them), and the cache
    holds what it holds when each batch is written on its own: EML-01 / THR-01 / MBX-04."""
    monkeypatch.setattr(se, "BATCH", 3)
    monkeypatch.setattr(parsing, "POOL_MIN_MESSAGES", 10**9)  # a thread: quick to start
    monkeypatch.setattr(se, "WRITE_BATCHES", 1)
    one_by_one = await cached_view(proxy_client, seeded_user, tmp_path / "one")

    monkeypatch.setattr(se, "WRITE_BATCHES", 4)
    sizes: list[int] = []
    real_apply = se.apply

    def slow_apply(tx: Any, account_id: str, mailbox_id: str, delta: se.Delta) -> None:
        if delta.prepared is not None and not delta.reset:  # a transaction of a fill
            sizes.append(len(delta.prepared))
            time.sleep(0.2)  # the next batches are fetched and parsed meanwhile
        real_apply(tx, account_id, mailbox_id, delta)

    monkeypatch.setattr(se, "apply", slow_apply)
    together = await cached_view(proxy_client, seeded_user, tmp_path / "together")

    assert sizes, "no mailbox was big enough for a fill"
    assert max(sizes) > 3, sizes  # some transaction took more than one batch
    assert max(sizes) <= 4 * 3, sizes
    assert together == one_by_one
    assert len(together["emails"]) == upstream_messages(seeded_user)
