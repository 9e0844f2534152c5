"""Per-account limits over two ``imapjmap serve`` processes coordinated through a throw-away
PostgreSQL: ``maxConcurrentRequests`` and ``maxConcurrentUpload`` count the account's
requests on both instances together (CORE-SESS-04, CORE-ERR-04), the upload quota counts its
uploads through both, and an instance killed while holding slots gives them back.

The requests held in flight are ``EmailSubmission/set`` calls whose SMTP transaction the
test's SMTP server holds at ``DATA``: that server counts how many of the account's
requests run at once, whichever instance they are on."""

from __future__ import annotations

import asyncio
import imaplib
import io
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from devservers.smtp import SmtpSink
from imapjmap.config import LimitsConfig, SmtpConfig, SubmissionConfig
from tests.conftest import ImapUser
from tests.integration.clusterkit import Client, Instance, client_of, instances
from tests.integration.conftest import USING

LIMIT_URN = "urn:ietf:params:jmap:error:limit"


@dataclass
class HeldSmtp:
    """The SMTP server's side: how many transactions sit at DATA now, and the most at once."""

    release: threading.Event
    hold: float
    running: int = 0
    most: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def entered(self) -> None:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)

    def left(self) -> None:
        with self.lock:
            self.running -= 1


@contextmanager
def held_at_data(sink: SmtpSink, hold: float) -> Iterator[HeldSmtp]:
    """Every SMTP transaction waits ``hold`` seconds (or until ``release``) before its
    answer to DATA; the sink's own connections are served concurrently meanwhile."""
    held = HeldSmtp(threading.Event(), hold)
    controller = sink._controller
    assert controller is not None
    handler = controller.handler
    answer = handler.handle_DATA

    async def slow(server: Any, session: Any, envelope: Any) -> str:  # the sink's loop
        held.entered()
        try:
            deadline = time.monotonic() + held.hold
            while time.monotonic() < deadline and not held.release.is_set():
                await asyncio.sleep(0.01)
        finally:
            held.left()
        reply: str = await answer(server, session, envelope)
        return reply

    handler.handle_DATA = slow
    sink.reset()
    try:
        yield held
    finally:
        held.release.set()
        handler.handle_DATA = answer


def _drafts(oracle: imaplib.IMAP4, user: ImapUser, count: int) -> None:
    address = f"{user.username}@example.org"
    for n in range(count):
        raw = (
            f"From: <{address}>\r\nTo: <ann@example.com>\r\nSubject: draft {n}\r\n"
            f"Message-ID: <draft-{n}@example.org>\r\n"
            "Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\nHi.\r\n"
        ).encode()
        assert oracle.append("Drafts", r"(\Draft \Seen)", None, raw)[0] == "OK"


def _wiring(sink: SmtpSink) -> tuple[SmtpConfig, SubmissionConfig]:
    smtp = SmtpConfig(host=sink.host, port=sink.port, security="none", auth="none")
    return smtp, SubmissionConfig(default_domain="example.org")


async def _sends(client: Client, user: ImapUser) -> list[dict[str, Any]]:
    """One EmailSubmission/set argument object per draft."""
    drafts = (await client.ok("Email/query", {"filter": {"subject": "draft"}}))["ids"]
    identities = (await client.ok("Identity/get", {"ids": None}))["list"]
    address = f"{user.username}@example.org"
    identity = next(i["id"] for i in identities if i["email"] == address)
    return [
        {
            "accountId": client.account_id,
            "create": {"k": {"identityId": identity, "emailId": email_id}},
        }
        for email_id in drafts
    ]


async def _post(client: Client, it: Instance, calls: list[Any]) -> tuple[int, Any]:
    """A request to one instance: its HTTP status and its JSON body, whatever they are."""
    body = {"using": [*USING, "urn:ietf:params:jmap:submission"], "methodCalls": calls}
    headers = {**client.auth, "Content-Type": "application/json"}
    async with client.http.post(f"{it.base_url}/jmap/api/", json=body, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_requests_of_one_account_are_limited_over_both_instances_core_err_04(
    imap_user: ImapUser,
    imap_oracle: imaplib.IMAP4,
    smtp_sink: SmtpSink,
    tmp_path: Path,
    cluster_url: str,
) -> None:
    """maxConcurrentRequests = 4 for the cluster (CORE-SESS-04): seven slow requests of one
    account sent at once, alternating between the two instances; the SMTP server sees at
    most four of them at once (each instance alone would have run all of its own), the
    others wait their turn and then run: all seven are sent."""
    _drafts(imap_oracle, imap_user, 7)
    limits = LimitsConfig(max_concurrent_requests=4, concurrent_request_wait_seconds=30)
    with held_at_data(smtp_sink, hold=1.0) as smtp:
        async with (
            instances(
                imap_user, tmp_path, cluster_url, submission=_wiring(smtp_sink), limits=limits
            ) as (a, b),
            client_of(imap_user, (a, b)) as client,
        ):
            sends = await _sends(client, imap_user)
            assert len(sends) == 7
            answers = await asyncio.gather(
                *(
                    _post(client, (a, b)[n % 2], [["EmailSubmission/set", send, "s"]])
                    for n, send in enumerate(sends)
                )
            )
    for status, body in answers:
        assert status == 200, body
        [(name, result, _)] = body["methodResponses"]
        assert name == "EmailSubmission/set" and list(result["created"]) == ["k"], result
    assert smtp.most == 4
    assert len(smtp_sink.messages) == 7


async def test_a_killed_instances_request_slots_come_back_core_err_04(
    imap_user: ImapUser,
    imap_oracle: imaplib.IMAP4,
    smtp_sink: SmtpSink,
    tmp_path: Path,
    cluster_url: str,
) -> None:
    """Instance A runs the account's four allowed requests (held at the SMTP server): a
    request on B waits its 0.5 s, then gets the ``limit`` error naming
    maxConcurrentRequests (CORE-ERR-04).  A is killed (SIGKILL) with its slots: B's next
    request runs (PostgreSQL ends the dead instance's session, and its locks, as soon as
    it sees the connection closed)."""
    _drafts(imap_oracle, imap_user, 4)
    limits = LimitsConfig(max_concurrent_requests=4, concurrent_request_wait_seconds=0.5)
    with held_at_data(smtp_sink, hold=60) as smtp:
        async with (
            instances(
                imap_user, tmp_path, cluster_url, submission=_wiring(smtp_sink), limits=limits
            ) as (a, b),
            client_of(imap_user, (a, b)) as client,
        ):
            sends = await _sends(client, imap_user)
            held = [
                asyncio.create_task(_post(client, a, [["EmailSubmission/set", send, "s"]]))
                for send in sends
            ]
            deadline = time.monotonic() + 20
            while smtp.running < 4:
                assert time.monotonic() < deadline, "the requests never reached SMTP"
                await asyncio.sleep(0.02)
            get = [["Mailbox/get", {"accountId": client.account_id, "ids": []}, "m"]]
            started = time.monotonic()
            status, refused = await _post(client, b, get)
            waited = time.monotonic() - started
            a.kill()
            await a.process.wait()
            # PostgreSQL ends the dead instance's session when it reads the closed socket: a
            # moment on an idle machine, more on a loaded one (each try waits 0.5 s)
            started = time.monotonic()
            status_after, served = await _post(client, b, get)
            while status_after != 200 and time.monotonic() - started < 5:
                status_after, served = await _post(client, b, get)
            back_after = time.monotonic() - started
            for task in held:
                task.cancel()
            await asyncio.gather(*held, return_exceptions=True)
    assert status == 400, refused
    assert refused["type"] == LIMIT_URN and refused["limit"] == "maxConcurrentRequests"
    assert waited >= 0.5
    assert status_after == 200, served
    assert served["methodResponses"][0][0] == "Mailbox/get"
    assert back_after < 5.0


# --- uploads --------------------------------------------------------------------------------


class SlowBody:
    """An upload body sent in two parts, the second when ``finish`` is set."""

    def __init__(self) -> None:
        self.finish = asyncio.Event()
        self.started = 0  # bodies whose first part went out

    async def chunks(self) -> AsyncIterator[bytes]:
        self.started += 1
        yield b"first part "
        await self.finish.wait()
        yield b"second part"


async def _upload(
    client: Client, it: Instance, data: bytes | io.BytesIO | AsyncIterator[bytes]
) -> tuple[int, Any]:
    headers = {**client.auth, "Content-Type": "application/octet-stream"}
    url = f"{it.base_url}/jmap/upload/{client.account_id}/"
    async with client.http.post(url, data=data, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def _all_streaming(body: SlowBody, tasks: list[asyncio.Task[Any]], count: int) -> None:
    """Wait until ``count`` uploads of ``body`` are streaming, each past its admission.

    Only then may the other instance try its own: an upload of B that took a slot just as
    one of A's arrived would have A's refused instead (the limit is the cluster's), and B
    would then find a slot free and never be refused."""
    deadline = time.monotonic() + 30
    while body.started < count:
        assert time.monotonic() < deadline, f"{body.started} of {count} uploads started"
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # their headers read and their slots taken, on a loaded machine
    assert not any(task.done() for task in tasks), [t.result() for t in tasks if t.done()]


async def _refused_within(client: Client, it: Instance, timeout: float) -> Any:
    """The problem document of the first upload ``it`` refuses, trying until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = await _upload(client, it, b"x")
        if status == 429:
            return body
        assert status == 201, body
        assert time.monotonic() < deadline, "never refused"
        await asyncio.sleep(0.05)


@pytest.mark.dovecot
async def test_uploads_of_one_account_are_limited_over_both_instances_core_bin_01(
    imap_user: ImapUser, tmp_path: Path, cluster_url: str
) -> None:
    """maxConcurrentUpload = 4 for the cluster (CORE-SESS-04, CORE-BIN-01): while four
    uploads stream in on A, one on B is refused (429, ``limit`` maxConcurrentUpload); once
    A's are stored, B takes uploads again at once.  A killed in the middle of its uploads
    gives their slots back too."""
    limits = LimitsConfig(max_concurrent_upload=4)
    async with (
        instances(imap_user, tmp_path, cluster_url, limits=limits) as (a, b),
        client_of(imap_user, (a, b)) as client,
    ):
        slow = SlowBody()
        streaming = [asyncio.create_task(_upload(client, a, slow.chunks())) for _ in range(4)]
        await _all_streaming(slow, streaming, 4)
        refused = await _refused_within(client, b, timeout=30)
        slow.finish.set()
        for status, stored in await asyncio.gather(*streaming):
            assert status == 201 and stored["size"] == len(b"first part second part"), stored
        status, again = await _upload(client, b, b"after")
        assert status == 201, again

        doomed = SlowBody()
        dying = [asyncio.create_task(_upload(client, a, doomed.chunks())) for _ in range(4)]
        await _all_streaming(doomed, dying, 4)
        await _refused_within(client, b, timeout=30)
        a.kill()
        await a.process.wait()
        for task in dying:
            task.cancel()
        await asyncio.gather(*dying, return_exceptions=True)
        started = time.monotonic()
        status, after_kill = await _upload(client, b, b"after the kill")
        while status == 429 and time.monotonic() - started < 5:  # PostgreSQL sees it dead
            await asyncio.sleep(0.05)
            status, after_kill = await _upload(client, b, b"after the kill")
        assert status == 201, after_kill
        assert time.monotonic() - started < 5.0
    assert refused["type"] == LIMIT_URN and refused["limit"] == "maxConcurrentUpload"


@pytest.mark.dovecot
async def test_the_upload_quota_counts_both_instances_uploads(
    imap_user: ImapUser, tmp_path: Path, cluster_url: str
) -> None:
    """maxUploadBytesPerAccount is one account's, not one instance's: 26 MB through A
    leave no room for 26 MB more through B under a 50 MB quota (413 overQuota), and of
    two such uploads sent to both at once exactly one is stored (the count and the write
    are one transaction in the shared cache)."""
    limits = LimitsConfig(max_upload_bytes_per_account=50_000_000)
    size = 26_000_000
    async with (
        instances(imap_user, tmp_path, cluster_url, limits=limits) as (a, b),
        client_of(imap_user, (a, b)) as client,
    ):
        status, first = await _upload(client, a, io.BytesIO(b"a" * size))
        assert status == 201, first
        status, over = await _upload(client, b, io.BytesIO(b"b" * size))
        assert status == 413 and over["limit"] == "maxUploadBytesPerAccount", over
        assert over["title"] == "overQuota"

    (tmp_path / "again").mkdir()
    async with (
        instances(imap_user, tmp_path / "again", cluster_url, limits=limits) as (a, b),
        client_of(imap_user, (a, b)) as client,
    ):
        raced = await asyncio.gather(
            _upload(client, a, io.BytesIO(b"c" * size)), _upload(client, b, io.BytesIO(b"d" * size))
        )
    assert sorted(status for status, _ in raced) == [201, 413], raced
