"""Two ``imapjmap serve`` processes on one cache, coordinated through a throw-away
PostgreSQL (``cluster.url``): any request on any instance, push across instances.

The test client alternates instances on every request, as a round-robin load balancer
would; a plain IMAP connection is the oracle of every effect."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import imaplib
import json
import re
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from devservers._host import free_port
from devservers.dovecot import DovecotServer
from devservers.samplemail import generate, seed_maildir
from devservers.smtp import SmtpSink
from imapjmap.config import (
    CacheConfig,
    ClusterConfig,
    Config,
    ImapConfig,
    PushConfig,
    ServerConfig,
    SmtpConfig,
    SubmissionConfig,
    to_toml,
)
from imapjmap.jmap import state as jstate
from tests.conftest import ImapUser, SeededUser
from tests.integration.clusterkit import (
    TAKEOVER,
    Client,
    Instance,
    behind_nginx,
    client_of,
    instances,
    start_instance,
)
from tests.integration.conftest import CORE
from tests.integration.pushkit import EventReader, external_append


def _imap_flags(oracle: imaplib.IMAP4, mailbox: str = "INBOX") -> dict[str, set[str]]:
    """Message-ID → flags of every message in ``mailbox``, as the server says."""
    oracle.select(mailbox)
    typ, data = oracle.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    assert typ == "OK", data
    found: dict[str, set[str]] = {}
    for item in data:
        if not isinstance(item, tuple):
            continue
        head, body = item
        flags = re.search(rb"FLAGS \(([^)]*)\)", head)
        message_id = re.search(rb"<([^>]+)>", body)
        assert flags is not None and message_id is not None
        key = message_id.group(1).decode()
        assert key not in found, f"message {key} is in {mailbox} twice"
        found[key] = set(flags.group(1).decode().split()) - {"\\Recent"}  # per session
    return found


async def _changes_until(
    events: EventReader, account_id: str, want: str, before: str | None, timeout: float
) -> float:
    """Seconds until a StateChange moved type ``want`` away from state ``before``."""
    started = time.monotonic()
    while True:
        left = timeout - (time.monotonic() - started)
        assert left > 0, f"no {want} change within {timeout} s"
        try:
            event = await events.next(timeout=left)
        except TimeoutError:
            pytest.fail(f"no {want} change within {timeout} s")
        state = event.data.get("changed", {}).get(account_id, {}).get(want)
        if state is not None and state != before:
            return time.monotonic() - started


async def _settled(events: EventReader, quiet: float = 0.3) -> None:
    """Every StateChange already on its way read: the next one is news (a change queued
    before an action would otherwise pass for its push)."""
    while not await events.none_within(quiet):
        pass


async def test_any_request_on_any_instance_sees_the_others_writes(
    seeded_user: SeededUser, imap_oracle: imaplib.IMAP4, tmp_path: Path, cluster_url: str
) -> None:
    """Alternating instances on every request: one state for one content (CORE-STATE-01),
    never a stale answer after a write through the other instance."""
    await _alternating(seeded_user, imap_oracle, tmp_path, cluster_url, on_postgresql=False)


@pytest.mark.backends("dovecot", "cyrus")
async def test_any_request_on_any_instance_on_a_postgresql_cache(
    seeded_user: SeededUser, imap_oracle: imaplib.IMAP4, tmp_path: Path, cluster_url: str
) -> None:
    """The same on a PostgreSQL cache, which is the coordinator too (no cluster.url), on
    Dovecot and on Cyrus."""
    await _alternating(seeded_user, imap_oracle, tmp_path, cluster_url, on_postgresql=True)


async def _alternating(
    seeded_user: SeededUser,
    imap_oracle: imaplib.IMAP4,
    tmp_path: Path,
    cluster_url: str,
    *,
    on_postgresql: bool,
) -> None:
    async with (
        instances(seeded_user, tmp_path, cluster_url, cache_on_postgresql=on_postgresql) as cluster,
        client_of(seeded_user, cluster) as client,
    ):
        inbox = next(
            m["id"]
            for m in (await client.ok("Mailbox/get", {"ids": None}))["list"]
            if m["role"] == "inbox"
        )
        query = {"filter": {"inMailbox": inbox}, "sort": [{"property": "receivedAt"}]}
        first = await client.ok("Email/query", query)
        again = await client.ok("Email/query", query)
        assert first["ids"] == again["ids"] and first["queryState"] == again["queryState"]
        ids = first["ids"][:6]
        before = (await client.ok("Email/get", {"ids": [], "properties": ["id"]}))["state"]
        for turn, email_id in enumerate(ids):  # each write on the next instance
            keyword = f"cluster_turn_{turn % 2}"
            patch = {f"keywords/{keyword}": True}
            done = await client.ok("Email/set", {"update": {email_id: patch}})
            assert email_id in done["updated"], done
            got = await client.ok("Email/get", {"ids": [email_id], "properties": ["keywords"]})
            assert got["list"][0]["keywords"].get(keyword)
        changes = await client.ok("Email/changes", {"sinceState": before})
        assert set(ids) <= set(changes["updated"])
        states = {
            (await client.ok("Email/get", {"ids": []}))["state"] for _ in range(4)
        }  # both instances, twice each, nothing changed meanwhile: one state
        assert len(states) == 1
        created = await client.ok(
            "Mailbox/set", {"create": {"n": {"name": "Made on one instance"}}}
        )
        new_id = created["created"]["n"]["id"]
        listed = await client.ok("Mailbox/get", {"ids": [new_id]})
        assert listed["list"][0]["name"] == "Made on one instance"
        assert {"A", "B"} <= set(client.served_by)
        assert len(client.session_states) == 1  # no instance makes clients refetch it
    typ, data = imap_oracle.list('""', '"Made on one instance"')
    assert typ == "OK" and data[0] is not None
    flags = _imap_flags(imap_oracle)
    assert sum("cluster_turn_0" in f for f in flags.values()) == 3
    assert sum("cluster_turn_1" in f for f in flags.values()) == 3


@pytest.mark.dovecot
async def test_push_crosses_instances_and_the_watcher_moves_when_killed(
    seeded_user: SeededUser, imap_oracle: imaplib.IMAP4, tmp_path: Path, cluster_url: str
) -> None:
    """An EventSource on one instance sees within 1 s a change written through the other
    and one made by another IMAP client (CORE-PUSH-01); SIGKILL of the instance running
    the account's one watcher moves the watcher, and pushes resume."""
    await _push_crosses(seeded_user, imap_oracle, tmp_path, cluster_url, on_postgresql=False)


@pytest.mark.backends("dovecot", "cyrus")
async def test_push_crosses_instances_on_a_postgresql_cache_core_push_01(
    seeded_user: SeededUser, imap_oracle: imaplib.IMAP4, tmp_path: Path, cluster_url: str
) -> None:
    """The same on a PostgreSQL cache, on Dovecot and on Cyrus (whose watcher has IDLE
    only, no NOTIFY)."""
    await _push_crosses(seeded_user, imap_oracle, tmp_path, cluster_url, on_postgresql=True)


async def _push_crosses(
    seeded_user: SeededUser,
    imap_oracle: imaplib.IMAP4,
    tmp_path: Path,
    cluster_url: str,
    *,
    on_postgresql: bool,
) -> None:
    async with (
        instances(seeded_user, tmp_path, cluster_url, cache_on_postgresql=on_postgresql) as (
            a,
            b,
        ),
        client_of(seeded_user, (a, b)) as client,
    ):
        account = client.account_id
        on_a = await client.events(a)
        initial = (await on_a.next()).data["changed"][account]
        assert await a.wait_log("push: watching account", 5)
        on_b = await client.events(b)
        await on_b.next()
        await asyncio.sleep(3 * TAKEOVER)
        assert "push: watching account" not in b.log()  # one watcher in the cluster

        # a write through B reaches the EventSource on A
        some = (await client.ok("Email/query", {"limit": 1}, on=b))["ids"][0]
        await client.ok("Email/set", {"update": {some: {"keywords/$flagged": True}}}, on=b)
        took = await _changes_until(on_a, account, "Email", initial["Email"], 1.0)
        assert took < 1.0

        # another IMAP client's change, heard by A's watcher, reaches B's EventSource
        await _settled(on_b)  # B's own write pushed there too
        state = (await client.ok("Email/get", {"ids": []}, on=b))["state"]
        await external_append(imap_oracle, "seen by the watcher on A")
        assert await _changes_until(on_b, account, "Email", state, 1.0) < 1.0

        # the watcher's instance dies: B takes the watch over, pushes resume
        a.kill()
        await a.process.wait()
        assert await b.wait_log("push: watching account", 10)
        await _settled(on_b)
        state = (await client.ok("Email/get", {"ids": []}, on=b))["state"]
        await external_append(imap_oracle, "seen by the watcher on B")
        assert await _changes_until(on_b, account, "Email", state, 5.0) < 5.0
        on_a.resp.close()
        on_b.resp.close()


@pytest.mark.dovecot
async def test_instance_killed_during_email_set_loses_and_doubles_nothing(
    seeded_user: SeededUser, imap_oracle: imaplib.IMAP4, tmp_path: Path, cluster_url: str
) -> None:
    """SIGKILL of the instance running an Email/set; the client sends it again to the
    other instance (as it would after a failed request): every flag is set once, over IMAP
    and in the cache, and no message is lost or doubled."""
    before = _imap_flags(imap_oracle)
    async with (
        instances(seeded_user, tmp_path, cluster_url) as (a, b),
        client_of(seeded_user, (a, b)) as client,
    ):
        inbox = next(
            m["id"]
            for m in (await client.ok("Mailbox/get", {"ids": None}, on=b))["list"]
            if m["role"] == "inbox"
        )
        query = {"filter": {"inMailbox": inbox}, "limit": 40}
        ids = (await client.ok("Email/query", query, on=b))["ids"]
        got = await client.ok("Email/get", {"ids": ids, "properties": ["messageId"]}, on=b)
        chosen = {item["messageId"][0] for item in got["list"]}
        patch = {"keywords/$flagged": True, "keywords/$answered": True}
        update = {"update": {email_id: patch for email_id in ids}}
        doomed = asyncio.create_task(client.ok("Email/set", update, on=a))
        await asyncio.sleep(0.05)  # the request is in flight on A
        a.kill()
        await a.process.wait()
        with contextlib.suppress(aiohttp.ClientError, AssertionError):
            await doomed
        done = await client.ok("Email/set", update, on=b)
        assert set(done["updated"]) == set(ids)
        got = await client.ok("Email/get", {"ids": ids, "properties": ["keywords"]}, on=b)
        total = await client.ok("Email/query", {**query, "calculateTotal": True}, on=b)
    assert all({"$flagged", "$answered"} <= set(item["keywords"]) for item in got["list"])
    assert total["total"] == len(before)
    after = _imap_flags(imap_oracle)
    assert after.keys() == before.keys()  # nothing lost, nothing doubled
    for message_id, flags in after.items():
        if message_id in chosen:
            assert flags == before[message_id] | {"\\Flagged", "\\Answered"}
        else:
            assert flags == before[message_id]


@contextlib.asynccontextmanager
async def push_endpoint() -> AsyncIterator[tuple[str, asyncio.Queue[Any]]]:
    """A PushSubscription URL on loopback and the bodies POSTed to it."""
    posts: asyncio.Queue[Any] = asyncio.Queue()

    async def push(request: web.Request) -> web.Response:
        await posts.put(json.loads(await request.read()))
        return web.Response(status=201)

    app = web.Application()
    app.router.add_post("/push", push)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}/push", posts
    finally:
        await server.close()


async def _one_post(posts: asyncio.Queue[Any], quiet: float = 1.5) -> Any:
    """The next POST, and proof that no second one (another instance's) follows."""
    async with asyncio.timeout(10):
        body = await posts.get()
    await asyncio.sleep(quiet)
    assert posts.empty(), f"delivered more than once: {body} then {posts.get_nowait()}"
    return body


async def _changes_posted(posts: asyncio.Queue[Any], quiet: float = 1.5) -> list[str]:
    """The Mailbox states POSTed until ``quiet`` seconds pass without one, each once.

    One Mailbox/set create may be two changes upstream (CREATE, then SUBSCRIBE), and a
    watcher that lists between them makes two states, each pushed once: a duplicate is the
    same state posted again, or an older one after a newer (a second deliverer)."""
    async with asyncio.timeout(10):
        bodies = [await posts.get()]
    while True:
        try:
            async with asyncio.timeout(quiet):
                bodies.append(await posts.get())
        except TimeoutError:
            break
    assert all(b["@type"] == "StateChange" for b in bodies), bodies
    states = [next(iter(b["changed"].values()))["Mailbox"] for b in bodies]
    decoded = [jstate.decode(s, s.rpartition(".")[2]) for s in states]
    seqs = [d.seq for d in decoded if d is not None]
    assert seqs == sorted(set(seqs)) and len(seqs) == len(states), f"delivered again: {bodies}"
    return states


@pytest.mark.dovecot
async def test_push_subscription_is_delivered_once_by_the_cluster_core_push_02(
    imap_user: ImapUser, tmp_path: Path, cluster_url: str
) -> None:
    """A PushSubscription made on one instance and verified on the other: each change is
    POSTed once, whichever instance made it, and still once after the instance that
    delivered it is killed."""
    push = PushConfig(allowed_url_prefixes=("http://127.0.0.1:",))
    async with (
        push_endpoint() as (url, posts),
        instances(imap_user, tmp_path, cluster_url, push=push) as (a, b),
        client_of(imap_user, (a, b)) as client,
    ):

        async def subscriptions(args: dict[str, Any], on: Instance) -> Any:
            [(name, result, _)] = await client.request(
                [["PushSubscription/set", args, "p"]], on, using=[CORE]
            )
            assert name == "PushSubscription/set", result
            return result

        for it in (a, b):  # the first sync is done, and nothing moves until the test says
            await client.ok("Mailbox/get", {"ids": []}, on=it)
        create = {"s": {"deviceClientId": "d", "url": url, "types": ["Mailbox"]}}
        made = await subscriptions({"create": create}, on=a)
        sub_id = made["created"]["s"]["id"]
        verification = await _one_post(posts)
        assert verification["@type"] == "PushVerification"
        code = verification["verificationCode"]
        done = await subscriptions({"update": {sub_id: {"verificationCode": code}}}, on=b)
        assert sub_id in done["updated"]
        await asyncio.sleep(3 * TAKEOVER)  # A hears of it and reads it again
        for turn, on in enumerate((a, b, a)):
            await client.ok("Mailbox/set", {"create": {"m": {"name": f"Push {turn}"}}}, on=on)
            states = await _changes_posted(posts)
            state = (await client.ok("Mailbox/get", {"ids": []}, on=on))["state"]
            assert states[-1] == state
        [holder] = [it for it in (a, b) if "cluster: took deliver" in it.log()]
        survivor = b if holder is a else a
        holder.kill()
        await holder.process.wait()
        assert await survivor.wait_log("cluster: took deliver", 5)
        await client.ok("Mailbox/set", {"create": {"m": {"name": "After"}}}, on=survivor)
        states = await _changes_posted(posts)
        state = (await client.ok("Mailbox/get", {"ids": []}, on=survivor))["state"]
        assert states[-1] == state


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


@pytest.mark.dovecot
async def test_workers_serve_one_address_and_stop_with_the_first(
    seeded_user: SeededUser, tmp_path: Path, cluster_url: str
) -> None:
    """server.workers = 2: two processes on one port (SO_REUSEPORT), both answering, and
    SIGTERM of the first stops both."""
    port = free_port()
    cfg = Config(
        imap=ImapConfig(host=seeded_user.host, port=seeded_user.port, security="none"),
        server=ServerConfig(listen=f"127.0.0.1:{port}", log_level="info", workers=2),
        cache=CacheConfig(path=str(tmp_path / "cache.sqlite3")),
        cluster=ClusterConfig(url=cluster_url),
    )
    first = await start_instance("A", cfg, tmp_path, f"http://127.0.0.1:{port}")
    try:
        assert await first.wait_log("imapjmap listening on", 20, count=2), first.log()
        [worker] = _children(first.process.pid)
        async with client_of(seeded_user, [first]) as client:
            answered = await asyncio.gather(
                *(client.ok("Email/query", {"limit": 5}) for _ in range(20))
            )
        assert all(len(a["ids"]) == 5 for a in answered)
        assert len({a["queryState"] for a in answered}) == 1
        first.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            await first.process.wait()
        assert first.process.returncode == 0, first.log()
        assert (
            not Path(f"/proc/{worker}").exists()
            or "zombie" in Path(f"/proc/{worker}/status").read_text()
        )
    finally:
        if first.process.returncode is None:
            first.process.kill()
            await first.process.wait()


@pytest.mark.dovecot
async def test_an_unreachable_coordinator_stops_the_start_with_one_line(
    imap_user: ImapUser, tmp_path: Path
) -> None:
    """No PostgreSQL at cluster.url: ``serve`` says so in one line and exits 1, before it
    listens (it would sync accounts another instance may be syncing)."""
    port = free_port()
    cfg = Config(
        imap=ImapConfig(host=imap_user.host, port=imap_user.port, security="none"),
        server=ServerConfig(listen=f"127.0.0.1:{port}"),
        cache=CacheConfig(path=str(tmp_path / "cache.sqlite3")),
        cluster=ClusterConfig(url=f"postgresql://postgres@127.0.0.1:{free_port()}/none"),
    )
    config_path = tmp_path / "bad.toml"
    config_path.write_text(to_toml(cfg))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "imapjmap", "serve", "--config", str(config_path),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(30):
        out, _ = await process.communicate()
    text = out.decode()
    assert process.returncode == 1, text
    assert "cluster: cannot connect" in text and "Connection refused" in text
    assert "Traceback" not in text


@pytest.mark.dovecot
async def test_instance_killed_during_a_first_sync_leaves_nothing_lost_or_doubled(
    dovecot: DovecotServer, imap_user: ImapUser, tmp_path: Path, cluster_url: str
) -> None:
    """A first sync fills a big INBOX in the background under its instance's fill lock;
    SIGKILL of that instance frees the lock and the other instance finishes the sync: every
    message once, as the IMAP server counts them."""
    messages = [dataclasses.replace(m, folder="INBOX") for m in generate(2500, seed=7)]
    seed_maildir(dovecot, imap_user.username, messages)
    async with (
        instances(imap_user, tmp_path, cluster_url) as (a, b),
        client_of(imap_user, (a, b)) as client,
    ):
        inbox = next(
            m["id"]
            for m in (await client.ok("Mailbox/get", {"ids": None}, on=a))["list"]
            if m["role"] == "inbox"
        )
        a.kill()  # its first batch is in the cache, the rest was filling in
        await a.process.wait()
        query = {"filter": {"inMailbox": inbox}, "calculateTotal": True, "limit": 5000}
        deadline = time.monotonic() + 120
        while True:
            found = await client.ok("Email/query", query, on=b)
            if found["total"] >= len(messages) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    assert found["total"] == len(messages)
    assert len(set(found["ids"])) == len(messages)


def _copies(oracle: imaplib.IMAP4, mailbox: str, message_id: str) -> int:
    oracle.select(mailbox, readonly=True)
    typ, data = oracle.uid("SEARCH", "HEADER", "Message-ID", message_id)
    assert typ == "OK", data
    return len(data[0].split())


async def test_instance_killed_while_sending_never_sends_twice_sub_01(
    imap_user: ImapUser,
    imap_oracle: imaplib.IMAP4,
    smtp_sink: SmtpSink,
    tmp_path: Path,
    cluster_url: str,
) -> None:
    """SIGKILL of the instance running an EmailSubmission/set while the SMTP server holds
    its answer to DATA (the message is received, the instance never learns it): the client
    sends the same create again to the other instance, which does not send it a second
    time; EmailSubmission/get there shows the submission with its outcome unknown; the
    draft is neither lost nor filed twice (SUB-01, SUB-02)."""
    smtp_sink.reset()
    arrived, release = threading.Event(), threading.Event()
    record = smtp_sink.record

    def record_and_hold(message: Any) -> int:  # runs in the sink's thread
        number = record(message)
        arrived.set()
        release.wait(timeout=30)  # the 250 reply waits until the sender is dead
        return number

    smtp_sink.record = record_and_hold  # type: ignore[method-assign]
    address = f"{imap_user.username}@example.org"
    raw = (
        f"From: <{address}>\r\nTo: <ann@example.com>\r\nSubject: once\r\n"
        "Message-ID: <once@example.org>\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\nHi.\r\n"
    ).encode()
    assert imap_oracle.append("Drafts", r"(\Draft \Seen)", None, raw)[0] == "OK"
    smtp = SmtpConfig(host=smtp_sink.host, port=smtp_sink.port, security="none", auth="none")
    wiring = (smtp, SubmissionConfig(default_domain="example.org"))
    try:
        async with (
            instances(imap_user, tmp_path, cluster_url, submission=wiring) as (a, b),
            client_of(imap_user, (a, b)) as client,
        ):
            boxes = {
                m["name"]: m["id"]
                for m in (await client.ok("Mailbox/get", {"ids": None}, on=b))["list"]
            }
            [email_id] = (await client.ok("Email/query", {"filter": {"subject": "once"}}))["ids"]
            identities = (await client.ok("Identity/get", {"ids": None}))["list"]
            identity = next(i["id"] for i in identities if i["email"] == address)
            send = {
                "create": {"k": {"identityId": identity, "emailId": email_id}},
                "onSuccessUpdateEmail": {
                    "#k": {
                        f"mailboxIds/{boxes['Drafts']}": None,
                        f"mailboxIds/{boxes['Sent']}": True,
                    }
                },
            }
            doomed = asyncio.create_task(
                client.request(
                    [["EmailSubmission/set", {"accountId": client.account_id, **send}, "s"]], on=a
                )
            )
            assert await asyncio.to_thread(arrived.wait, 20), "the message never reached SMTP"
            a.kill()
            await a.process.wait()
            release.set()
            with contextlib.suppress(aiohttp.ClientError, AssertionError):
                await doomed
            [(_, again, _), *_] = await client.request(
                [["EmailSubmission/set", {"accountId": client.account_id, **send}, "s"]], on=b
            )
            got = await client.ok("EmailSubmission/get", {"ids": None}, on=b)
            assert len(smtp_sink.messages) == 1  # received once: never sent twice
            # the user who decides to send it anyway destroys the unknown submission first
            [unknown] = got["list"]
            gone = await client.ok("EmailSubmission/set", {"destroy": [unknown["id"]]}, on=b)
            assert gone["destroyed"] == [unknown["id"]]
            [(_, resent, _), *_] = await client.request(
                [["EmailSubmission/set", {"accountId": client.account_id, **send}, "s"]], on=b
            )
            assert list(resent["created"]) == ["k"]
        assert len(smtp_sink.messages) == 2
        assert list(again["notCreated"]) == ["k"]
        assert again["notCreated"]["k"]["type"] == "forbiddenToSend"
        [shown] = got["list"]
        assert shown["emailId"] == email_id and shown["undoStatus"] == "final"
        assert shown["deliveryStatus"]["ann@example.com"]["delivered"] == "unknown"
        assert (
            _copies(imap_oracle, "Drafts", "once@example.org")
            + _copies(imap_oracle, "Sent", "once@example.org")
            == 1
        )
    finally:
        release.set()
        smtp_sink.record = record  # type: ignore[method-assign]


@pytest.mark.dovecot
async def test_two_instances_behind_the_nginx_recipe_round_robin_core_push_01(
    seeded_user: SeededUser, tmp_path: Path, cluster_url: str
) -> None:
    """``deploy/nginx/imapjmap.conf`` with both instances in its ``upstream`` block (round
    robin): a client's requests through nginx alternate instances and each sees the
    writes of the one before; an EventSource through nginx sees, within 1 s, a change
    written directly through either instance, so also through the one it is not on."""
    async with behind_nginx(seeded_user, tmp_path, cluster_url) as ((a, b), front):
        nginx_instance = dataclasses.replace(a, name="nginx", base_url=front.url)
        connector = aiohttp.TCPConnector(ssl=front.tls())
        async with aiohttp.ClientSession(connector=connector) as http:
            client = Client(http, seeded_user, [nginx_instance])
            await client.session()
            api = r"POST /jmap/api/ 200"
            before = [len(re.findall(api, it.log())) for it in (a, b)]
            ids = (await client.ok("Email/query", {"limit": 6}))["ids"]
            for n, email_id in enumerate(ids):
                patch = {"keywords/$flagged": True}
                await client.ok("Email/set", {"update": {email_id: patch}})
                got = await client.ok("Email/get", {"ids": ids[: n + 1]})
                assert all("$flagged" in e["keywords"] for e in got["list"]), n
            await asyncio.sleep(0.2)  # the instances' access lines are written
            served = [
                len(re.findall(api, it.log())) - n for it, n in zip((a, b), before, strict=True)
            ]
            # 13 requests, round robin: 6 on one, 7 on the other
            assert sum(served) == 13 and min(served) >= 5, served

            events = await client.events(nginx_instance)
            try:
                await events.next(timeout=5)  # the first StateChange: where we start
                for writer, email_id in ((a, ids[0]), (b, ids[1])):
                    await _settled(events)
                    state = (await client.ok("Email/get", {"ids": []}, on=writer))["state"]
                    patch = {"keywords/$flagged": None}
                    await client.ok("Email/set", {"update": {email_id: patch}}, on=writer)
                    seconds = await _changes_until(
                        events, client.account_id, "Email", state, timeout=3
                    )
                    assert seconds < 1.0, f"{writer.name}: {seconds:.2f} s"
            finally:
                events.resp.close()
