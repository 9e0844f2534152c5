"""The nginx recipe in ``deploy/nginx/imapjmap.conf``, run as written in front of the proxy.

Debian's nginx serves the recipe with only its addresses and certificate paths replaced
(a free loopback port instead of 443, a certificate from a private CA): then a third-party
client (jmapc) works through it, an EventSource event and a WebSocket push arrive through it,
an upload the size of a real attachment passes, plain http only redirects, and the access log
keeps no push token.  A recipe that drops the Upgrade header or keeps nginx's 1 MB body limit
fails here.  (The event stream would pass even a buffering nginx: the proxy sends it with
``X-Accel-Buffering: no``.)
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import imaplib
import io
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jmapc
import pytest
import trustme
from aiohttp import web
from jmapc.methods import EmailQuery, EmailQueryResponse, MailboxGet, MailboxGetResponse

from imapjmap.config import ServerConfig
from imapjmap.http.app import make_app
from tests.conftest import SeededUser
from tests.integration.conftest import MAIL, USING, proxy_config
from tests.integration.pushkit import EventReader, message

pytestmark = pytest.mark.dovecot

RECIPE = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "imapjmap.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def site_config(
    proxy_port: int, https_port: int, http_port: int, cert: Path, key: Path, log: Path
) -> str:
    """The recipe with its deployment-specific values replaced, and nothing else."""
    text = RECIPE.read_text()
    replacements = {
        "server 127.0.0.1:8080;": f"server 127.0.0.1:{proxy_port};",
        "listen 443 ssl;": f"listen 127.0.0.1:{https_port} ssl;",
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "/etc/letsencrypt/live/jmap.example.com/fullchain.pem": str(cert),
        "/etc/letsencrypt/live/jmap.example.com/privkey.pem": str(key),
        "/var/log/nginx/imapjmap.access.log": str(log),
    }
    for old, new in replacements.items():
        assert text.count(old) == 1, f"the recipe no longer holds {old!r}"
        text = text.replace(old, new)
    # IPv6 listeners are not needed (and may not exist) on a test machine
    return "\n".join(line for line in text.splitlines() if "listen [::]" not in line)


def main_config(prefix: Path, site: Path) -> str:
    """What Debian's /etc/nginx/nginx.conf provides around a site, in a private prefix."""
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read the temp files
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""{user}worker_processes 1;
daemon off;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{ worker_connections 256; }}
http {{
    access_log {prefix / "access.log"};
{temp}
    include {site};
}}
"""


@dataclasses.dataclass(frozen=True)
class Front:
    host: str  # "127.0.0.1:port" of nginx's https listener
    http_port: int  # its plain-http listener
    ca_file: str
    tls: ssl.SSLContext  # trusts the private CA
    error_log: Path
    access_log: Path

    def jmapc(self, user: SeededUser) -> jmapc.Client:
        client = jmapc.Client.create_with_password(
            host=self.host, user=user.username, password=user.password
        )
        client.requests_session.verify = self.ca_file
        client.requests_session.trust_env = False
        return client


@contextlib.contextmanager
def nginx(prefix: Path, site_text: str, https_port: int) -> Iterator[Path]:
    if not os.path.exists(NGINX):
        pytest.fail("nginx is not installed (scripts/test installs Debian's nginx)")
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / kind).mkdir(parents=True, exist_ok=True)
    site = prefix / "imapjmap.conf"
    site.write_text(site_text)
    conf = prefix / "nginx.conf"
    conf.write_text(main_config(prefix, site))
    check = subprocess.run(
        [NGINX, "-t", "-p", str(prefix), "-c", str(conf)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    process = subprocess.Popen(
        [NGINX, "-p", str(prefix), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", https_port), timeout=1),
            ):
                break
            assert process.poll() is None, (prefix / "error.log").read_text()
            assert time.monotonic() < deadline, "nginx did not start listening"
            time.sleep(0.05)
        yield prefix / "error.log"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
async def front(seeded_user: SeededUser, tmp_path: Path) -> AsyncIterator[Front]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(cert_file), append=True)
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))

    proxy_port, https_port, http_port = _free_port(), _free_port(), _free_port()
    server = ServerConfig(
        listen=f"127.0.0.1:{proxy_port}",
        base_url=f"https://127.0.0.1:{https_port}",
        trusted_proxies=("127.0.0.1",),
    )
    cfg = dataclasses.replace(proxy_config(seeded_user, tmp_path), server=server)
    runner = web.AppRunner(make_app(cfg), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", proxy_port).start()
        access_log = tmp_path / "nginx" / "imapjmap.access.log"
        site = site_config(proxy_port, https_port, http_port, cert_file, key_file, access_log)
        with nginx(tmp_path / "nginx", site, https_port) as error_log:
            tls = ssl.create_default_context(cafile=str(ca_file))
            yield Front(
                f"127.0.0.1:{https_port}", http_port, str(ca_file), tls, error_log, access_log
            )
    finally:
        await runner.cleanup()


def _auth(user: SeededUser) -> dict[str, str]:
    raw = f"{user.username}:{user.password}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


async def _session(http: aiohttp.ClientSession, front: Front) -> dict[str, Any]:
    async with http.get(f"https://{front.host}/.well-known/jmap", ssl=front.tls) as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


async def _append(user: SeededUser, subject: str) -> None:
    """APPEND by another IMAP client: the proxy learns of it only from the upstream."""

    def append() -> None:
        client: imaplib.IMAP4 = user.connect()
        try:
            typ, data = client.append("INBOX", None, None, message(subject))
            assert typ == "OK", data
        finally:
            client.logout()

    await asyncio.to_thread(append)


async def test_a_third_party_client_works_through_the_recipe(
    front: Front, seeded_user: SeededUser
) -> None:
    def talk() -> tuple[Any, Any, Any]:
        client = front.jmapc(seeded_user)
        mailboxes = client.request(MailboxGet(ids=None), raise_errors=True, single_response=True)
        emails = client.request(EmailQuery(limit=5), raise_errors=True, single_response=True)
        return client.jmap_session, mailboxes, emails

    session, mailboxes, emails = await asyncio.to_thread(talk)
    # the session names the public address, so every URL a client follows goes through nginx
    assert session.api_url == f"https://{front.host}/jmap/api/"
    assert isinstance(mailboxes, MailboxGetResponse) and mailboxes.data
    assert isinstance(emails, EmailQueryResponse) and isinstance(emails.ids, list)
    assert len(emails.ids) == 5


async def test_an_event_source_event_passes_the_recipe_at_once(
    front: Front, seeded_user: SeededUser
) -> None:
    """PUSH-ES: a state change made upstream reaches a client listening through nginx."""
    async with aiohttp.ClientSession(headers=_auth(seeded_user)) as http:
        session = await _session(http, front)
        url = session["eventSourceUrl"].format(types="*", closeafter="no", ping="0")
        assert url.startswith(f"https://{front.host}/")
        async with http.get(url, ssl=front.tls, timeout=aiohttp.ClientTimeout(total=60)) as resp:
            assert resp.status == 200, await resp.text()
            events = EventReader(resp)
            first = await events.next(timeout=10)  # the current state, sent on connect
            account = session["primaryAccounts"][MAIL]
            before = first.data["changed"][account]["Email"]
            await _append(seeded_user, "through nginx")
            # each event is written by the proxy as soon as the watcher sees the APPEND;
            # a buffering front would hold it back until its buffer filled
            while True:
                event = await events.next(timeout=10)
                if event.data["changed"].get(account, {}).get("Email", before) != before:
                    break


async def test_a_websocket_answers_and_pushes_through_the_recipe(
    front: Front, seeded_user: SeededUser
) -> None:
    """WS-01..: the Upgrade passes nginx; requests are answered and a push arrives."""
    async with aiohttp.ClientSession(headers=_auth(seeded_user)) as http:
        session = await _session(http, front)
        ws_url = session["capabilities"]["urn:ietf:params:jmap:websocket"]["url"]
        assert ws_url.startswith(f"wss://{front.host}/jmap/ws/")
        account = session["primaryAccounts"][MAIL]
        async with http.ws_connect(ws_url, protocols=("jmap",), ssl=front.tls) as ws:

            async def receive() -> dict[str, Any]:
                got = await ws.receive(timeout=10)
                assert got.type == aiohttp.WSMsgType.TEXT, got
                body: dict[str, Any] = json.loads(got.data)
                return body

            await ws.send_json(
                {
                    "@type": "Request",
                    "id": "r1",
                    "using": USING,
                    "methodCalls": [["Email/get", {"accountId": account, "ids": []}, "c1"]],
                }
            )
            answer = await receive()
            assert answer["@type"] == "Response" and answer["requestId"] == "r1"
            before = answer["methodResponses"][0][1]["state"]
            await ws.send_json({"@type": "WebSocketPushEnable", "dataTypes": None})
            await _append(seeded_user, "through nginx over a websocket")
            while True:
                pushed = await receive()
                if pushed.get("@type") != "StateChange":
                    continue
                if pushed["changed"].get(account, {}).get("Email", before) != before:
                    break
    # the browser push token in the URL is a credential: the recipe's log leaves it out
    logged = front.access_log.read_text()
    assert "/jmap/ws/" in logged and "push_token" not in logged


async def test_an_attachment_sized_upload_passes_the_recipe(
    front: Front, seeded_user: SeededUser
) -> None:
    """BLOB upload of 5 MB: more than nginx's default 1 MB body limit."""
    blob = os.urandom(5_000_000)
    async with aiohttp.ClientSession(headers=_auth(seeded_user)) as http:
        session = await _session(http, front)
        account = session["primaryAccounts"][MAIL]
        url = session["uploadUrl"].format(accountId=account)
        async with http.post(
            url,
            data=io.BytesIO(blob),
            headers={"Content-Type": "application/octet-stream"},
            ssl=front.tls,
        ) as resp:
            assert resp.status == 201, await resp.text()
            uploaded = await resp.json()
        assert uploaded["size"] == len(blob)
        download = session["downloadUrl"].format(
            accountId=account, blobId=uploaded["blobId"], name="x.bin", type="application/x"
        )
        async with http.get(download, ssl=front.tls) as resp:
            assert resp.status == 200
            assert await resp.read() == blob


async def test_plain_http_is_only_a_redirect(front: Front, seeded_user: SeededUser) -> None:
    """Credentials never travel unencrypted: the recipe's port 80 answers with a redirect
    to https and never reaches the proxy."""
    async with aiohttp.ClientSession(headers=_auth(seeded_user)) as http:
        url = f"http://127.0.0.1:{front.http_port}/jmap/api/"
        async with http.post(url, json={}, allow_redirects=False) as resp:
            assert resp.status == 301
            assert resp.headers["Location"] == "https://127.0.0.1/jmap/api/"
    assert "emerg" not in front.error_log.read_text()


async def test_metrics_stay_off_the_public_site(front: Front, seeded_user: SeededUser) -> None:
    async with aiohttp.ClientSession() as http:
        url = f"https://{front.host}/metrics"
        async with http.get(url, ssl=front.tls) as resp:
            assert resp.status == 403
