"""Several ``imapjmap serve`` processes on one cache, for the tests of several instances.

:func:`instances` starts them (a SQLite cache coordinated through a PostgreSQL database,
or a PostgreSQL cache that coordinates too), all with one push token key and one public
``base_url``, as a deployment behind one load balancer has; :class:`Client` is a JMAP
client that sends each request to the next instance, as a round-robin balancer would.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import re
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from devservers._host import free_port
from devservers.nginx import Front, recipe_front
from imapjmap.config import (
    AuthConfig,
    CacheConfig,
    ClusterConfig,
    Config,
    ImapConfig,
    LimitsConfig,
    PushConfig,
    ServerConfig,
    SmtpConfig,
    SubmissionConfig,
    to_toml,
)
from tests.conftest import ImapUser
from tests.integration.conftest import USING
from tests.integration.pushkit import EventReader

# an instance up within seconds when the machine is idle took over 20 s at a load of 24 (its
# imports, the migration's check, its first PostgreSQL connections): a deadline, not a wait
START_TIMEOUT = 60.0
TAKEOVER = 0.5


@dataclass
class Instance:
    name: str
    process: asyncio.subprocess.Process
    base_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_log(self, pattern: str, timeout: float, count: int = 1) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(re.findall(pattern, self.log())) >= count:
                return True
            await asyncio.sleep(0.05)
        return False

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)


async def spawn_serve(cfg: Config, config_path: Path, log_path: Path) -> asyncio.subprocess.Process:
    """``imapjmap serve`` with ``cfg`` written to ``config_path``, its output in ``log_path``
    (not yet listening when this returns)."""
    config_path.write_text(to_toml(cfg))
    with log_path.open("wb") as log_file:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "imapjmap",
            "serve",
            "--config",
            str(config_path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
        )


async def start_instance(name: str, cfg: Config, tmp_path: Path, url: str) -> Instance:
    log_path = tmp_path / f"{name}.log"
    process = await spawn_serve(cfg, tmp_path / f"{name}.toml", log_path)
    it = Instance(name, process, url, log_path)
    deadline = time.monotonic() + START_TIMEOUT
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline and process.returncode is None:
            with contextlib.suppress(aiohttp.ClientConnectionError):
                async with http.get(f"{it.base_url}/.well-known/jmap"):
                    return it
            await asyncio.sleep(0.1)
    if process.returncode is None:
        process.kill()
        await process.wait()
    pytest.fail(f"instance {name} did not start:\n{it.log()}")


@contextlib.asynccontextmanager
async def instances(
    user: ImapUser,
    tmp_path: Path,
    cluster_url: str,
    count: int = 2,
    push: PushConfig | None = None,
    cache_on_postgresql: bool = False,
    submission: tuple[SmtpConfig, SubmissionConfig] | None = None,
    base_url: str | None = None,
    limits: LimitsConfig | None = None,
) -> AsyncIterator[list[Instance]]:
    """``count`` instances on one cache, started one after the other (the first creates
    the cache): a SQLite file coordinated through ``cluster_url``, or (with
    ``cache_on_postgresql``) the database ``cluster_url`` as cache and coordinator both."""
    cache = (
        CacheConfig(url=cluster_url)
        if cache_on_postgresql
        else CacheConfig(path=str(tmp_path / "cache.sqlite3"))
    )
    cluster = ClusterConfig(
        url=None if cache_on_postgresql else cluster_url, takeover_interval=TAKEOVER
    )
    started: list[Instance] = []
    # what clients are told; unless given, none listens there
    balancer = base_url or f"http://127.0.0.1:{free_port()}"
    # one key for all: a push URL signed by one instance opens on the other
    key_file = tmp_path / "push-token.key"
    key_file.write_bytes(secrets.token_bytes(32))  # binary, as `head -c 32 /dev/urandom` writes
    auth = AuthConfig(push_token_key_file=str(key_file))
    try:
        for number in range(count):
            port = free_port()
            cfg = Config(
                imap=ImapConfig(host=user.host, port=user.port, security="none"),
                server=ServerConfig(
                    listen=f"127.0.0.1:{port}", base_url=balancer, log_level="info"
                ),
                cache=cache,
                cluster=cluster,
                auth=auth,
                push=push or PushConfig(),
            )
            if submission is not None:
                cfg = dataclasses.replace(cfg, smtp=submission[0], submission=submission[1])
            if limits is not None:
                cfg = dataclasses.replace(cfg, limits=limits)
            url = f"http://127.0.0.1:{port}"
            started.append(await start_instance("AB"[number], cfg, tmp_path, url))
        yield started
    finally:
        for it in started:
            if it.process.returncode is None:
                it.process.kill()
                await it.process.wait()


@dataclass
class Client:
    """A JMAP client behind a round-robin balancer: each request goes to the next instance."""

    http: aiohttp.ClientSession
    user: ImapUser
    instances: Sequence[Instance]
    account_id: str = ""
    turn: int = 0
    served_by: list[str] = field(default_factory=list)
    session_states: set[str] = field(default_factory=set)

    @property
    def auth(self) -> dict[str, str]:
        raw = f"{self.user.username}:{self.user.password}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}

    def next_instance(self) -> Instance:
        live = [it for it in self.instances if it.process.returncode is None]
        it = live[self.turn % len(live)]
        self.turn += 1
        return it

    async def session(self) -> None:
        it = self.next_instance()
        async with self.http.get(f"{it.base_url}/.well-known/jmap", headers=self.auth) as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
        self.account_id = body["primaryAccounts"]["urn:ietf:params:jmap:mail"]

    async def request(
        self, calls: list[list[Any]], on: Instance | None = None, using: list[str] = USING
    ) -> list[Any]:
        it = on or self.next_instance()
        self.served_by.append(it.name)
        sent = json.dumps({"using": using, "methodCalls": calls})
        headers = {**self.auth, "Content-Type": "application/json"}
        async with self.http.post(f"{it.base_url}/jmap/api/", data=sent, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
        self.session_states.add(body["sessionState"])
        responses: list[Any] = body["methodResponses"]
        return responses

    async def ok(self, name: str, args: dict[str, Any], on: Instance | None = None) -> Any:
        [(got, result, _)] = await self.request(
            [[name, {"accountId": self.account_id, **args}, "c"]], on
        )
        assert got == name, result
        return result

    async def events(self, it: Instance) -> EventReader:
        resp = await self.http.get(
            f"{it.base_url}/jmap/eventsource/?types=*&closeafter=no&ping=0", headers=self.auth
        )
        assert resp.status == 200, await resp.text()
        return EventReader(resp)


@contextlib.asynccontextmanager
async def client_of(user: ImapUser, cluster: Sequence[Instance]) -> AsyncIterator[Client]:
    async with aiohttp.ClientSession() as http:
        client = Client(http, user, cluster)
        await client.session()
        yield client


def port_of(it: Instance) -> int:
    return int(it.base_url.rsplit(":", 1)[1])


@contextlib.asynccontextmanager
async def behind_nginx(
    user: ImapUser, tmp_path: Path, cluster_url: str, **options: Any
) -> AsyncIterator[tuple[list[Instance], Front]]:
    """Two instances (``options`` as :func:`instances` takes them) behind the nginx recipe,
    both in its ``upstream`` block (round robin); their ``base_url`` is nginx's."""
    https_port = free_port()
    base_url = f"https://127.0.0.1:{https_port}"
    async with instances(user, tmp_path, cluster_url, base_url=base_url, **options) as started:
        ports = [port_of(it) for it in started]
        with recipe_front(tmp_path / "front", ports, https_port) as front:
            yield started, front
