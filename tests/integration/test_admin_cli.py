"""The operator's commands against real Dovecot and a proxy serving on a real port:
``imapjmap accounts``, ``imapjmap sync USER``, ``imapjmap cache prune|reset``.

The proxy runs in the test's event loop (as ``imapjmap serve`` would, from the config file
the commands read); ``sync`` runs as a child process, as an operator runs it, the others in
a thread.  A plain ``imaplib`` connection is the oracle for what the server holds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from devservers.postgres import PostgresServer
from imapjmap import cli
from imapjmap.config import Config, to_toml
from imapjmap.http.app import make_app
from imapjmap.http.tls import ServerTls
from imapjmap.store.db import Store
from tests.conftest import ImapUser, SeededUser
from tests.integration.conftest import proxy_config

CHECKOUT = Path(__file__).resolve().parents[2]
DAY = 86400.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def cache_url(request: pytest.FixtureRequest) -> str | None:
    """With ``--cache-backend=postgresql``, a schema of the test PostgreSQL for the config's
    ``cache.url``: the proxy, the commands and the ``sync`` child all open that cache, as an
    operator's would (the fixtures' redirection of cache paths reaches no child process)."""
    if request.config.getoption("--cache-backend") != "postgresql":
        return None
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.schema_url(f"t_{secrets.token_hex(6)}")


def _config(user: ImapUser, tmp_path: Path, url: str | None = None) -> tuple[Config, str]:
    """The proxy's config on a port of its own (its cache at ``url`` if given), and the file
    the commands are given."""
    cfg = proxy_config(user, tmp_path)
    cfg = dataclasses.replace(
        cfg,
        server=dataclasses.replace(cfg.server, listen=f"127.0.0.1:{_free_port()}"),
        cache=dataclasses.replace(cfg.cache, url=url),
    )
    path = tmp_path / "config.toml"
    path.write_text(to_toml(cfg))
    return cfg, str(path)


@asynccontextmanager
async def serving(cfg: Config, tls: ssl.SSLContext | None = None) -> AsyncIterator[None]:
    runner = web.AppRunner(make_app(cfg), access_log=None)
    await runner.setup()
    try:
        port = int(cfg.server.listen.rsplit(":", 1)[1])
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=tls).start()
        yield
    finally:
        await runner.cleanup()


async def _sql(cfg: Config, sql: str, *params: object) -> object:
    """One statement on the cache (SQLite's file or PostgreSQL's schema): a query's first
    value, or the rows another statement changed."""
    store = await Store.open(cfg.cache.url or cfg.cache.path, readers=0)
    try:
        if sql.startswith("SELECT"):
            return await store.run(lambda tx: tx.scalar(sql, params))
        return await store.run(lambda tx: tx.execute(sql, params))
    finally:
        await store.aclose()


async def command(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = await asyncio.to_thread(cli.main, list(argv))
    out, err = capsys.readouterr()
    return status, out, err


async def sync_process(config: str, username: str, password_file: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "imapjmap",
        "sync",
        username,
        "--config",
        config,
        "--password-file",
        str(password_file),
        cwd=CHECKOUT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _password_file(tmp_path: Path, password: str) -> Path:
    path = tmp_path / "password"
    path.write_text(password + "\n")
    return path


def _accounts_json(out: str) -> list[dict[str, object]]:
    rows = json.loads(out)
    assert isinstance(rows, list)
    return rows


async def test_sync_fills_a_seeded_account_to_100_percent_and_accounts_shows_it(
    seeded_user: SeededUser,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    cache_url: str | None,
) -> None:
    """MBX-04: the cache's totalEmails reach the server's message count."""
    cfg, config = _config(seeded_user, tmp_path, cache_url)
    on_server = sum(seeded_user.counts.values())
    oracle = seeded_user.connect()
    try:  # the oracle's own count, so the figures below are the server's, not ours
        _, data = oracle.status("INBOX", "(MESSAGES)")
        assert data[0] is not None
    finally:
        oracle.logout()
    password = _password_file(tmp_path, seeded_user.password)
    async with serving(cfg):
        started = time.time()
        status, out, err = await sync_process(config, seeded_user.username, password)
        assert status == 0, err
        assert f"{on_server}/{on_server}" in err and "100%" in err  # the bar's last state
        assert f"{seeded_user.username}: {on_server} messages cached" in out
        assert seeded_user.password not in out + err

        # read-only while the proxy runs
        status, out, _ = await command(capsys, "accounts", "--config", config, "--json")
        assert status == 0
        (row,) = _accounts_json(out)
        assert row["username"] == seeded_user.username
        assert row["emails"] == len(seeded_user.messages)
        assert int(str(row["mailboxes_listed"])) >= len(seeded_user.counts)
        assert row["mailboxes_synced"] == row["mailboxes_listed"]
        assert row["first_sync_complete"] is True
        assert isinstance(row["last_login"], str)
        last = time.mktime(time.strptime(str(row["last_login"])[:19], "%Y-%m-%dT%H:%M:%S"))
        assert abs(last - time.timezone - started) < 60  # UTC, recorded at the login

        status, out, _ = await command(capsys, "accounts", "--config", config)
        assert status == 0
        heading, line = out.splitlines()
        assert heading.split()[:2] == ["ACCOUNT", "USER"]
        assert line.split()[1] == seeded_user.username
        assert line.split()[-1] == "complete"
        assert str(row["account_id"]) == line.split()[0]


async def test_sync_completes_when_the_server_holds_messages_flagged_deleted(
    seeded_user: SeededUser, tmp_path: Path
) -> None:
    """EML-KW-01: a message flagged \\Deleted and not expunged is never an Email, so the
    server's count the command compares with leaves it out, and the fill reaches 100 %."""
    cfg, config = _config(seeded_user, tmp_path)
    oracle = seeded_user.connect()
    try:
        oracle.select("INBOX")
        typ, _ = oracle.store("1:2", "+FLAGS", "(\\Deleted)")
        assert typ == "OK"
        _, data = oracle.search(None, "DELETED")
        assert len(data[0].split()) == 2
    finally:
        oracle.logout()
    expected = sum(seeded_user.counts.values()) - 2
    password = _password_file(tmp_path, seeded_user.password)
    async with serving(cfg):
        status, out, err = await sync_process(config, seeded_user.username, password)
    assert status == 0, err
    assert f"{expected}/{expected}" in err and "100%" in err
    assert f"{seeded_user.username}: {expected} messages cached" in out


def _certificate(ca: trustme.CA, tmp_path: Path, name: str) -> tuple[str, str]:
    issued = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert.write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
    key.write_bytes(issued.private_key_pem.bytes())
    return str(cert), str(key)


async def test_sync_speaks_tls_to_a_proxy_with_built_in_tls_and_checks_its_certificate(
    imap_user: ImapUser, tmp_path: Path
) -> None:
    """With server.tls_certificate the proxy serves https; sync sends the password only to
    the listener that shows that certificate."""
    cert, key = _certificate(trustme.CA(), tmp_path, "ours")
    cfg, _ = _config(imap_user, tmp_path)
    server = dataclasses.replace(cfg.server, tls_certificate=cert, tls_key=key)
    cfg = dataclasses.replace(cfg, server=server)
    config = tmp_path / "tls.toml"
    config.write_text(to_toml(cfg))
    password = _password_file(tmp_path, imap_user.password)
    async with serving(cfg, ServerTls(cert, key).context):
        status, out, err = await sync_process(str(config), imap_user.username, password)
    assert status == 0, err
    assert f"{imap_user.username}: 0 messages cached" in out
    # another certificate on that port: not ours, so no password goes there
    other_cert, other_key = _certificate(trustme.CA(), tmp_path, "other")
    async with serving(cfg, ServerTls(other_cert, other_key).context):
        status, _, err = await sync_process(str(config), imap_user.username, password)
    assert status == 1
    assert "does not show server.tls_certificate" in err and "not sent" in err


async def test_sync_says_when_no_proxy_answers(imap_user: ImapUser, tmp_path: Path) -> None:
    _, config = _config(imap_user, tmp_path)  # never served
    password = _password_file(tmp_path, imap_user.password)
    status, _, err = await sync_process(config, imap_user.username, password)
    assert status == 1
    assert "no proxy answers at 127.0.0.1:" in err
    assert "Traceback" not in err


async def test_sync_reports_refused_credentials(imap_user: ImapUser, tmp_path: Path) -> None:
    cfg, config = _config(imap_user, tmp_path)
    password = _password_file(tmp_path, imap_user.password + "-wrong")
    async with serving(cfg):
        status, _, err = await sync_process(config, imap_user.username, password)
    assert status == 1
    assert "refused these credentials" in err
    assert "-wrong" not in err and "Traceback" not in err


async def test_accounts_without_a_cache_says_so(
    imap_user: ImapUser, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, config = _config(imap_user, tmp_path)
    status, _, err = await command(capsys, "accounts", "--config", config)
    assert status == 1
    assert f"no cache at {cfg.cache.path}" in err
    assert not Path(cfg.cache.path).exists()  # not created by looking


async def _logged_in(cfg: Config, config: str, user: ImapUser, tmp_path: Path) -> None:
    """One login through the proxy (the sync command's), leaving an account row."""
    password = _password_file(tmp_path, user.password)
    status, _, err = await sync_process(config, user.username, password)
    assert status == 0, err


async def test_cache_writes_are_refused_while_the_proxy_answers(
    imap_user: ImapUser,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    cache_url: str | None,
) -> None:
    cfg, config = _config(imap_user, tmp_path, cache_url)
    async with serving(cfg):
        await _logged_in(cfg, config, imap_user, tmp_path)
        for argv in (("cache", "reset"), ("cache", "prune", "--unused-days", "0")):
            status, out, err = await command(capsys, *argv, "--config", config)
            assert status == 1, argv
            assert "a proxy answers at 127.0.0.1:" in err and "--force" in err
            assert out == ""
        status, out, _ = await command(capsys, "accounts", "--config", config, "--json")
        assert len(_accounts_json(out)) == 1  # nothing was dropped
        # --force does it anyway (the operator's call)
        status, out, _ = await command(
            capsys, "cache", "reset", imap_user.username, "--config", config, "--force"
        )
        assert status == 0 and "dropped 1 accounts" in out


async def test_cache_reset_drops_one_account_or_all(
    imap_user: ImapUser,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    cache_url: str | None,
) -> None:
    cfg, config = _config(imap_user, tmp_path, cache_url)
    async with serving(cfg):
        await _logged_in(cfg, config, imap_user, tmp_path)
    status, _, err = await command(capsys, "cache", "reset", "nobody", "--config", config)
    assert status == 1 and "no account for 'nobody'" in err
    status, out, _ = await command(capsys, "cache", "reset", imap_user.username, "--config", config)
    assert status == 0 and f"dropped 1 accounts of {imap_user.username!r}" in out
    status, out, _ = await command(capsys, "accounts", "--config", config)
    assert status == 0 and out == "no accounts in the cache\n"
    assert await _sql(cfg, "SELECT count(*) FROM mailboxes") == 0  # they went with it
    status, out, _ = await command(capsys, "cache", "reset", "--config", config)
    assert status == 0 and "dropped 0 accounts" in out


async def test_cache_prune_purges_old_changes_and_unused_accounts(
    imap_user: ImapUser,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    cache_url: str | None,
) -> None:
    cfg, config = _config(imap_user, tmp_path, cache_url)
    async with serving(cfg):
        await _logged_in(cfg, config, imap_user, tmp_path)
    retention = cfg.cache.changes_retention_days
    logged = await _sql(cfg, "SELECT count(*) FROM seq_log")
    assert isinstance(logged, int) and logged > 0
    # the change log as it would be after a month and more
    await _sql(cfg, "UPDATE seq_log SET at = at - ?", (retention + 1) * DAY)
    status, out, _ = await command(capsys, "cache", "prune", "--config", config)
    assert status == 0
    assert f"purged {logged} change-log rows older than {retention} days" in out
    status, out, _ = await command(
        capsys, "cache", "prune", "--unused-days", "1", "--config", config
    )
    assert status == 0
    assert "purged 0 change-log rows" in out
    assert "dropped 0 accounts with no login for 1 days" in out
    last_login = repr(time.time() - 2 * DAY)  # two days back
    await _sql(cfg, "UPDATE kv SET value = ? WHERE key = 'admin.last_login'", last_login)
    status, out, _ = await command(
        capsys, "cache", "prune", "--unused-days", "1", "--config", config
    )
    assert status == 0 and "dropped 1 accounts with no login for 1 days" in out
    status, out, _ = await command(capsys, "accounts", "--config", config, "--json")
    assert _accounts_json(out) == []


async def test_cache_prune_takes_a_number_of_days(
    imap_user: ImapUser, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, config = _config(imap_user, tmp_path)
    status, _, err = await command(
        capsys, "cache", "prune", "--unused-days", "soon", "--config", config
    )
    assert status == 2 and "not a number of days: 'soon'" in err
