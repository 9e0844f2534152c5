"""``imapjmap demo`` as a user runs it (``scripts/run``): a separate process with its own
Dovecot, sample mail and SMTP sink.  The demo user must be able to send out of the box: an
Identity is offered, and a message submitted to the demo's own address goes through the
sink and is delivered back into the demo INBOX (RFC 8621 §6-7)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from devservers.demo import DEMO_PASSWORD, DEMO_USER
from devservers.samplemail import OWNER

pytestmark = pytest.mark.dovecot

ROOT = Path(__file__).resolve().parents[2]
USING = [
    "urn:ietf:params:jmap:core",
    "urn:ietf:params:jmap:mail",
    "urn:ietf:params:jmap:submission",
]
START_SECONDS = 60.0  # Dovecot, 300 sample messages, the proxy
DELIVERY_SECONDS = 15.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def running_demo(log: Path, *options: str) -> AsyncIterator[str]:
    """``python -m imapjmap demo`` on a free port; its base URL once the session answers."""
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "imapjmap",
            "demo",
            "--listen",
            f"127.0.0.1:{port}",
            *options,
            stdout=out,
            stderr=out,
            env=env,
            cwd=ROOT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        yield base
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


class Client:
    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http, self.base, self.account_id = http, base, ""

    async def wait_for_session(self, log: Path) -> None:
        deadline = time.monotonic() + START_SECONDS
        while True:
            with contextlib.suppress(aiohttp.ClientConnectionError):
                async with self.http.get(f"{self.base}/.well-known/jmap") as resp:
                    if resp.status == 200:
                        session = await resp.json()
                        self.account_id = session["primaryAccounts"][USING[2]]
                        return
            assert time.monotonic() < deadline, "the demo did not start:\n" + log.read_text()
            await asyncio.sleep(0.3)

    async def call(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        [response] = await self.calls([name, args, "c"])
        assert response[0] == name, response
        result: dict[str, Any] = response[1]
        return result

    async def calls(self, *method_calls: list[Any]) -> list[list[Any]]:
        body = {
            "using": USING,
            "methodCalls": [
                [n, {"accountId": self.account_id, **a}, c] for n, a, c in method_calls
            ],
        }
        async with self.http.post(f"{self.base}/jmap/api/", json=body) as resp:
            assert resp.status == 200, await resp.text()
            responses: list[list[Any]] = (await resp.json())["methodResponses"]
            return responses


async def test_the_demo_user_can_send_out_of_the_box(tmp_path: Path) -> None:
    """Identity/get offers the sample mail's owner; a draft created and submitted in one
    request (SUB-02's onSuccessUpdateEmail files it in Sent) reaches the demo INBOX."""
    log = tmp_path / "demo.log"
    credentials = base64.b64encode(f"{DEMO_USER}:{DEMO_PASSWORD}".encode()).decode()
    headers = {"Authorization": f"Basic {credentials}"}
    async with running_demo(log) as base, aiohttp.ClientSession(headers=headers) as http:
        jmap = Client(http, base)
        await jmap.wait_for_session(log)

        identities = (await jmap.call("Identity/get", {"ids": None}))["list"]
        assert [(i["name"], i["email"], i["mayDelete"]) for i in identities] == [
            (OWNER[0], OWNER[1], False)
        ]
        boxes = {
            m["role"]: m["id"]
            for m in (await jmap.call("Mailbox/get", {"properties": ["role"]}))["list"]
        }
        subject = f"Sent from the demo {time.time_ns()}"
        responses = await jmap.calls(
            [
                "Email/set",
                {
                    "create": {
                        "draft": {
                            "mailboxIds": {boxes["drafts"]: True},
                            "keywords": {"$draft": True, "$seen": True},
                            "from": [{"name": OWNER[0], "email": OWNER[1]}],
                            "to": [{"email": OWNER[1]}],
                            "subject": subject,
                            "bodyValues": {"b": {"value": "Hello from the demo.\n"}},
                            "textBody": [{"partId": "b", "type": "text/plain"}],
                        }
                    }
                },
                "0",
            ],
            [
                "EmailSubmission/set",
                {
                    "create": {"send": {"identityId": identities[0]["id"], "emailId": "#draft"}},
                    "onSuccessUpdateEmail": {
                        "#send": {
                            f"mailboxIds/{boxes['drafts']}": None,
                            f"mailboxIds/{boxes['sent']}": True,
                            "keywords/$draft": None,
                        }
                    },
                },
                "1",
            ],
        )
        assert [r[0] for r in responses] == ["Email/set", "EmailSubmission/set", "Email/set"]
        assert "draft" in responses[0][1]["created"], responses[0][1]
        assert "send" in responses[1][1]["created"], responses[1][1]

        # the sink received it and delivered it to the demo's own address, the demo INBOX
        deadline = time.monotonic() + DELIVERY_SECONDS
        query = {"filter": {"inMailbox": boxes["inbox"], "subject": subject}}
        while not (await jmap.call("Email/query", query))["ids"]:
            assert time.monotonic() < deadline, "the sent message never reached the INBOX"
            await asyncio.sleep(0.3)
        sent = {"filter": {"inMailbox": boxes["sent"], "subject": subject}}
        assert len((await jmap.call("Email/query", sent))["ids"]) == 1


async def test_the_demo_takes_a_config_over_its_own_and_keeps_its_log(tmp_path: Path) -> None:
    """``scripts/run --config FILE --log FILE``: the file's keys win over the demo's (here
    the log format and the session's maxCallsInRequest), the demo's servers stay, and the
    log is left behind in the file once the demo stops."""
    overlay = tmp_path / "mine.toml"
    overlay.write_text('[server]\nlog_format = "json"\n\n[limits]\nmax_calls_in_request = 20\n')
    kept = tmp_path / "kept.log"
    log = tmp_path / "demo.log"
    credentials = base64.b64encode(f"{DEMO_USER}:{DEMO_PASSWORD}".encode()).decode()
    headers = {"Authorization": f"Basic {credentials}"}
    options = ("--config", str(overlay), "--log", str(kept))
    async with running_demo(log, *options) as base, aiohttp.ClientSession(headers=headers) as http:
        await Client(http, base).wait_for_session(log)
        async with http.get(f"{base}/.well-known/jmap") as resp:
            session = await resp.json()
        core = session["capabilities"]["urn:ietf:params:jmap:core"]
        assert core["maxCallsInRequest"] == 20
    lines = kept.read_text().splitlines()
    assert lines, log.read_text()
    records = [json.loads(line) for line in lines]
    assert {"time", "level", "logger", "message"} <= set(records[0])
    assert any(r["message"] == "imapjmap stopped" for r in records), lines[-5:]
