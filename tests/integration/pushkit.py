"""Helpers for the push tests: an EventSource reader, a PushSubscription endpoint, an
external APPEND, the push service."""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from imapjmap.http import views
from imapjmap.push.service import PushService
from tests.integration.conftest import Jmap
from tests.integration.instances import apps_of


@dataclass
class Event:
    name: str
    data: Any
    id: str | None


@dataclass
class EventReader:
    """Reads ``text/event-stream`` events from a streaming aiohttp response."""

    resp: aiohttp.ClientResponse
    buffer: list[str] = field(default_factory=list)

    async def next(self, timeout: float = 10.0) -> Event:
        name, data, event_id = "message", [], None
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.resp.content.readline()
                if not raw:
                    raise EOFError("the event stream ended")
                line = raw.decode().rstrip("\n")
                if not line:
                    if data:
                        return Event(name, json.loads("\n".join(data)), event_id)
                    continue
                key, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if key == "event":
                    name = value
                elif key == "data":
                    data.append(value)
                elif key == "id":
                    event_id = value

    async def none_within(self, seconds: float) -> bool:
        try:
            await self.next(timeout=seconds)
        except TimeoutError:
            return True
        return False


@dataclass
class Receiver:
    """A push endpoint: records every POST; answers with ``status``."""

    url: str
    posts: asyncio.Queue[tuple[dict[str, str], Any]]
    status: int = 201

    async def next(self, timeout: float = 10) -> tuple[dict[str, str], Any]:
        async with asyncio.timeout(timeout):
            return await self.posts.get()

    async def none_within(self, seconds: float) -> bool:
        try:
            await self.next(seconds)
        except TimeoutError:
            return True
        return False


@contextlib.asynccontextmanager
async def push_receiver() -> AsyncIterator[Receiver]:
    """A :class:`Receiver` on loopback (``http://127.0.0.1:PORT/push``)."""
    posts: asyncio.Queue[tuple[dict[str, str], Any]] = asyncio.Queue()
    state = Receiver("", posts)

    async def push(request: web.Request) -> web.Response:
        raw = await request.read()  # aiohttp does not decode a Content-Encoding it lacks
        encrypted = request.headers.get("Content-Encoding") == "aes128gcm"
        await posts.put((dict(request.headers), raw if encrypted else json.loads(raw)))
        return web.Response(status=state.status)

    app = web.Application()
    app.router.add_post("/push", push)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    state.url = f"http://127.0.0.1:{server.port}/push"
    try:
        yield state
    finally:
        await server.close()


def push_service(jmap: Jmap) -> PushService:
    app = jmap.http.server.app
    assert app is not None
    return app[views.SERVICES].push


def push_services(jmap: Jmap) -> list[PushService]:
    """Every instance's push service (one, or as many as ``--instances`` says)."""
    return [app[views.SERVICES].push for app in apps_of(jmap.http)]


def watcher_of(jmap: Jmap, account_id: str | None = None) -> Any:
    """The account's upstream watcher, on whichever instance holds it, or None."""
    account_id = account_id or jmap.account_id
    for service in push_services(jmap):
        watcher = service.watchers.get(account_id)
        if watcher is not None:
            return watcher
    return None


def running(jmap: Jmap) -> list[str]:
    """The login's PushSubscriptions that any instance runs a delivery of (each instance
    runs one of every subscription it knows; the one with the role POSTs)."""
    return sorted(
        {
            sub_id
            for service in push_services(jmap)
            for sub_id in service.subscriptions.running(jmap.account_id)
        }
    )


def listeners(jmap: Jmap, account_id: str) -> int:
    """The account's listeners over all instances."""
    return sum(service.hub.listeners(account_id) for service in push_services(jmap))


async def open_events(
    jmap: Jmap, query: str = "types=*&closeafter=no&ping=0", **headers: str
) -> EventReader:
    resp = await jmap.http.get(f"/jmap/eventsource/?{query}", headers={**jmap.auth(), **headers})
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert resp.headers["Cache-Control"] == "no-cache"
    return EventReader(resp)


async def wait_for(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def wait_watching(jmap: Jmap) -> None:
    """Until the account's watcher has NOTIFY set up (Dovecot) and is reporting changes.

    Tests also wait for it before they write: Dovecot 2.3 can panic on an fcntl EDEADLK
    ("Resource deadlock avoided") on ``dovecot.list.index.log`` when a CREATE races with the
    watcher's first LIST, killing the session of the CREATE (seen about once in 20 runs).
    """

    # on several instances the watcher is on one of them, whichever the cluster chose
    def ready() -> bool:
        watcher = watcher_of(jmap)
        return watcher is not None and watcher.mode == "notify"

    await wait_for(ready, what="the NOTIFY watcher")
    await asyncio.sleep(0.2)  # its first refresh and poke


def message(subject: str) -> bytes:
    return (
        f"From: Outside <outside@example.org>\r\nTo: me@example.org\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}.{time.time_ns()}@example.org>\r\n"
        "Date: Mon, 2 Jun 2025 10:00:00 +0000\r\n\r\nhello\r\n"
    ).encode()


async def external_append(oracle: imaplib.IMAP4, subject: str, mailbox: str = "INBOX") -> None:
    """APPEND by another IMAP client (the proxy learns of it only through the upstream)."""
    typ, data = await asyncio.to_thread(oracle.append, mailbox, None, None, message(subject))
    assert typ == "OK", data


async def current_states(jmap: Jmap) -> dict[str, str]:
    body = await jmap.request(
        [
            ["Mailbox/get", {"accountId": jmap.account_id, "ids": []}, "m"],
            ["Email/get", {"accountId": jmap.account_id, "ids": []}, "e"],
            ["Thread/get", {"accountId": jmap.account_id, "ids": []}, "t"],
        ]
    )
    return {r[0].split("/")[0]: r[1]["state"] for r in body["methodResponses"]}


def decrypt_push(body: bytes, private_key: Any, auth: bytes) -> bytes:
    """The receiving user agent's side of RFC 8291 ``aes128gcm`` (one record), for checks."""
    import hashlib
    import hmac

    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    def hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
        prk = hmac.new(salt, ikm, hashlib.sha256).digest()
        return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()[:length]

    salt, record_size, id_len = body[:16], int.from_bytes(body[16:20], "big"), body[20]
    sender = body[21 : 21 + id_len]
    record = body[21 + id_len :]
    assert len(record) <= record_size
    ua_public = private_key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    secret = private_key.exchange(
        ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), sender)
    )
    ikm = hkdf(auth, secret, b"WebPush: info\x00" + ua_public + sender, 32)
    cek = hkdf(salt, ikm, b"Content-Encoding: aes128gcm\x00", 16)
    nonce = hkdf(salt, ikm, b"Content-Encoding: nonce\x00", 12)
    plain = AESGCM(cek).decrypt(nonce, record, None)
    assert plain.endswith(b"\x02"), "the last record ends with the 0x02 delimiter"
    return plain[:-1]


def new_push_keys() -> tuple[Any, bytes, dict[str, str]]:
    """A user agent's key pair and auth secret, and the ``keys`` object to send."""
    import base64
    import os

    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    private_key = ec.generate_private_key(ec.SECP256R1())
    public = private_key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    auth = os.urandom(16)

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    return private_key, auth, {"p256dh": b64(public), "auth": b64(auth)}
