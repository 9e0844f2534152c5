"""The test servers themselves: Dovecot, the SMTP sink, seeding, and the shared fixtures."""

from __future__ import annotations

import email
import email.policy
import imaplib
import os
import re
import shutil
import smtplib
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from devservers.dovecot import (
    SPECIAL_USE_FOLDERS,
    DovecotError,
    DovecotServer,
    _alive,
    _child_pids,
)
from devservers.samplemail import encode_mutf7
from devservers.smtp import SmtpSink
from tests.conftest import ImapUser, SeededUser, dovecot_root

pytestmark = pytest.mark.dovecot


def _ok(result: tuple[str, list[object]]) -> list[bytes]:
    typ, data = result
    assert typ == "OK", data
    return [d for d in data if isinstance(d, bytes)]


def _capabilities(client: imaplib.IMAP4) -> set[str]:
    return set(_ok(client.capability())[0].decode().upper().split())


def _greeting(server: DovecotServer) -> str:
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        return sock.makefile("rb").readline().decode()


def _command(client: imaplib.IMAP4, *args: str) -> tuple[str, dict[str, list[bytes]]]:
    """A raw command (imaplib knows no GETQUOTAROOT, NOTIFY...): status and untagged data."""
    client.untagged_responses.clear()
    try:
        typ, _ = client._simple_command(*args)
    except client.error as error:
        return ("BAD" if "BAD" in str(error) else "NO"), {}
    untagged = {
        k: [v for v in vs if isinstance(v, bytes)] for k, vs in client.untagged_responses.items()
    }
    return typ, untagged


# ------------------------------------------------------------------------------- Dovecot


def test_login_and_capabilities(imap_oracle: imaplib.IMAP4, dovecot: DovecotServer) -> None:
    capabilities = _capabilities(imap_oracle)
    for expected in ("IMAP4REV1", "CONDSTORE", "QRESYNC", "MOVE", "UIDPLUS", "LIST-STATUS"):
        assert expected in capabilities
    assert {"NOTIFY", "QUOTA", "SPECIAL-USE", "IDLE"} <= capabilities
    assert {c.upper() for c in dovecot.capabilities} == capabilities


def test_special_use_folders_exist_and_are_subscribed(imap_oracle: imaplib.IMAP4) -> None:
    listing = _ok(imap_oracle.list())
    attributes = {}
    for line in listing:
        match = re.match(rb'\((?P<attrs>[^)]*)\) "/" "?(?P<name>[^"]+)"?$', line)
        assert match, line
        attributes[match["name"].decode()] = set(match["attrs"].decode().split())
    assert "INBOX" in attributes
    for name, attribute in SPECIAL_USE_FOLDERS:
        assert attribute in attributes[name], (name, attributes[name])
    subscribed = _ok(imap_oracle.lsub())
    for name, _ in SPECIAL_USE_FOLDERS:
        assert any(line.endswith(f' "/" {name}'.encode()) for line in subscribed), subscribed
    quota_status, quota = _command(imap_oracle, "GETQUOTAROOT", "INBOX")
    assert quota_status == "OK"
    assert quota.get("QUOTA"), quota


def test_users_added_after_start_can_log_in_at_once(dovecot: DovecotServer) -> None:
    # Dovecot checks a changed passwd-file at most once a second; one file per user avoids it.
    for number in range(5):
        username = f"late-{number}-{os.getpid()}-{time.monotonic_ns()}"
        dovecot.add_user(username, f"pw-{number}")
        client = dovecot.connect(username, f"pw-{number}")
        client.logout()
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        dovecot.connect(username, "wrong")
    with pytest.raises(ValueError):
        dovecot.add_user(username, "again")
    with pytest.raises(ValueError):
        dovecot.add_user("bad:name", "pw")


def test_user_fixture_is_fresh_and_connects(
    imap_user: ImapUser, imap_oracle: imaplib.IMAP4
) -> None:
    assert imap_user.username.startswith("test-user-fixture-is-fresh")
    assert _ok(imap_oracle.select("INBOX")) == [b"0"]
    second = imap_user.connect()
    try:
        assert _ok(second.noop())
    finally:
        second.logout()


def test_capabilities_can_be_removed() -> None:
    removed = {"QRESYNC", "CONDSTORE", "LIST-STATUS", "MOVE", "UIDPLUS", "QUOTA"}
    with dovecot_root() as root, DovecotServer.start(root, remove_capabilities=removed) as server:
        server.add_user("alice", "secret")
        assert not removed & set(server.capabilities)
        assert "IMAP4rev1" in server.capabilities
        assert not removed & set(_greeting(server).upper().split())
        client = server.connect("alice", "secret")
        try:
            advertised = _capabilities(client)
            assert not removed & advertised
            assert {"IMAP4REV1", "IDLE", "ESEARCH", "NOTIFY", "SPECIAL-USE"} <= advertised
            # QUOTA is gone for real (plugin not loaded); the others are only not advertised.
            assert _command(client, "GETQUOTAROOT", "INBOX")[0] == "BAD"
        finally:
            client.logout()


def test_startup_failure_reports_the_log() -> None:
    with pytest.raises(DovecotError) as failure, dovecot_root() as root:
        DovecotServer.start(root, extra_conf="no_such_setting = 1\n")
    assert "no_such_setting" in str(failure.value)


def test_stop_leaves_no_process_behind() -> None:
    with dovecot_root() as root:
        _check_stop(DovecotServer.start(root))


def _check_stop(server: DovecotServer) -> None:
    server.add_user("u", "p")
    server.connect("u", "p").logout()
    master = server._process
    assert master is not None
    children = _child_pids(master.pid)
    assert len(children) >= 4  # log, config, anvil, auth...
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 5
    assert master.poll() is not None
    assert not [pid for pid in children if _alive(pid)]
    server.stop()  # again: nothing to do


@pytest.mark.skipif(os.geteuid() != 0, reason="the fixtures already run Dovecot unprivileged")
def test_works_for_an_unprivileged_user(tmp_path: Path) -> None:
    """As root the fixtures run Dovecot's mail as nobody; check the all-unprivileged mode too."""
    runuser = shutil.which("runuser")
    python = sys.executable
    repo = Path(__file__).resolve().parents[2]
    probe = ["runuser", "-u", "nobody", "--", python, "-c", "import devservers.dovecot"]
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(repo), "HOME": "/tmp"}
    if runuser is None or subprocess.run(probe, env=env, capture_output=True).returncode != 0:
        python = "/usr/bin/python3"
        probe[4] = python
        if subprocess.run(probe, env=env, capture_output=True).returncode != 0:
            pytest.skip("no Python that user nobody can run with this checkout")
    script = (
        "import pathlib, tempfile\n"
        "from devservers.dovecot import DovecotServer\n"
        "root = pathlib.Path(tempfile.mkdtemp(prefix='imapjmap-nobody-'))\n"
        "with DovecotServer.start(root, remove_capabilities=['MOVE']) as server:\n"
        "    server.add_user('u', 'p')\n"
        "    client = server.connect('u', 'p')\n"
        "    client.append('INBOX', None, None, b'Subject: hi\\r\\n\\r\\nhello\\r\\n')\n"
        "    print(client.select('INBOX')[1][0].decode(), 'MOVE' in server.capabilities)\n"
        "    client.logout()\n"
    )
    result = subprocess.run(
        ["runuser", "-u", "nobody", "--", python, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/tmp",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "False"]


# ------------------------------------------------------------------------------- seeding


def test_seeded_user_counts_match(seeded_user: SeededUser, imap_oracle: imaplib.IMAP4) -> None:
    expected = Counter(m.folder for m in seeded_user.messages)
    assert dict(seeded_user.counts) == {**dict.fromkeys(seeded_user.counts, 0), **expected}
    assert {"INBOX", "Sent", "Archive", "Projects/Alpha"} <= set(expected)
    for folder, count in expected.items():
        status = _ok(imap_oracle.status(f'"{encode_mutf7(folder)}"', "(MESSAGES)"))
        assert status[0].endswith(f"(MESSAGES {count})".encode()), (folder, status)


def test_seeded_messages_keep_bytes_flags_and_dates(
    seeded_user: SeededUser, imap_oracle: imaplib.IMAP4
) -> None:
    inbox = [m for m in seeded_user.messages if m.folder == "INBOX"]
    assert _ok(imap_oracle.select("INBOX")) == [str(len(inbox)).encode()]
    typ, data = imap_oracle.uid("FETCH", "1:*", "(FLAGS INTERNALDATE BODY.PEEK[])")
    assert typ == "OK"
    fetched = [item for item in data if isinstance(item, tuple)]
    assert len(fetched) == len(inbox)
    for message, (meta, body) in zip(inbox, fetched, strict=True):  # UIDs follow the dates
        assert body == message.raw
        flags = re.search(rb"FLAGS \(([^)]*)\)", meta)
        assert flags is not None
        assert set(flags[1].decode().split()) - {"\\Recent"} == set(message.flags)
        date = imaplib.Internaldate2tuple(meta)
        assert date is not None
        assert time.mktime(date) == message.internaldate.timestamp()


def test_seeded_folders_with_non_ascii_names(
    dovecot: DovecotServer, imap_user: ImapUser, imap_oracle: imaplib.IMAP4
) -> None:
    from devservers.samplemail import generate, seed_maildir

    messages = [m for m in generate(120, seed=3) if m.folder == "Reisen/Übersicht"]
    assert messages
    counts = seed_maildir(dovecot, imap_user.username, messages)
    assert counts["Reisen/Übersicht"] == len(messages)
    names = b"\n".join(_ok(imap_oracle.list()))
    assert b"Reisen/&ANw-bersicht" in names
    assert (dovecot.maildir(imap_user.username) / "Reisen" / "&ANw-bersicht" / "cur").is_dir()
    parsed = email.message_from_bytes(messages[0].raw, policy=email.policy.default)
    assert "Buchungsbestätigung" in str(parsed["Subject"])


# ------------------------------------------------------------------------------- SMTP


def test_smtp_sink_records_messages_with_auth_and_dsn(smtp_sink: SmtpSink) -> None:
    smtp_sink.reset()
    smtp_sink.add_user("alice", "s3cret")
    raw = b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: hi\r\n\r\nhello\r\n.dot\r\n"
    with smtplib.SMTP(smtp_sink.host, smtp_sink.port, timeout=10) as client:
        client.ehlo("client.example")
        assert client.has_extn("dsn")
        assert "PLAIN" in client.esmtp_features["auth"]
        client.login("alice", "s3cret")
        refused = client.sendmail(
            "alice@example.com",
            ["bob@example.org", "carol@example.net"],
            raw,
            mail_options=["ENVID=Q123", "RET=HDRS", "AUTH=<>"],
            rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;bob@example.org"],
        )
        assert refused == {}
    [message] = smtp_sink.messages
    assert message.mail_from == "alice@example.com"
    assert message.rcpt_tos == ("bob@example.org", "carol@example.net")
    assert {"ENVID=Q123", "RET=HDRS", "AUTH=<>"} <= set(message.mail_options)
    assert message.rcpt_options[0] == ("NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;bob@example.org")
    assert message.raw == raw
    assert message.auth_user == "alice"
    assert message.parsed()["Subject"] == "hi"


def test_smtp_sink_refuses_bad_logins_and_chosen_recipients(smtp_sink: SmtpSink) -> None:
    smtp_sink.reset()
    smtp_sink.add_user("alice", "s3cret")
    with (
        smtplib.SMTP(smtp_sink.host, smtp_sink.port, timeout=10) as client,
        pytest.raises(smtplib.SMTPAuthenticationError),
    ):
        client.login("alice", "wrong")
    smtp_sink.reject_recipient("gone@example.org", "550 5.1.1 No such user")
    smtp_sink.reject_recipient("busy@example.org", 451)
    with smtplib.SMTP(smtp_sink.host, smtp_sink.port, timeout=10) as client:
        refused = client.sendmail(
            "a@example.com",
            ["gone@example.org", "busy@example.org", "ok@example.org"],
            b"Subject: x\r\n\r\ny\r\n",
        )
    assert refused == {
        "gone@example.org": (550, b"5.1.1 No such user"),
        "busy@example.org": (451, b"4.2.0 <busy@example.org>: Recipient rejected"),
    }
    assert [m.rcpt_tos for m in smtp_sink.wait_for(1)] == [("ok@example.org",)]
    smtp_sink.reset()
    smtp_sink.require_auth = True
    with (
        smtplib.SMTP(smtp_sink.host, smtp_sink.port, timeout=10) as client,
        pytest.raises(smtplib.SMTPSenderRefused),
    ):
        client.sendmail("a@example.com", ["ok@example.org"], b"Subject: x\r\n\r\ny\r\n")
    smtp_sink.reset()


def test_smtp_sink_delivers_into_dovecot(
    smtp_sink: SmtpSink, imap_user: ImapUser, imap_oracle: imaplib.IMAP4
) -> None:
    smtp_sink.reset()
    smtp_sink.deliver("Someone@Example.test", imap_user.username)
    raw = b"From: a@example.com\r\nTo: someone@example.test\r\nSubject: delivered\r\n\r\nhi\r\n"
    with smtplib.SMTP(smtp_sink.host, smtp_sink.port, timeout=10) as client:
        client.sendmail("a@example.com", ["someone@example.test", "other@example.org"], raw)
    [message] = smtp_sink.messages
    assert message.delivered_to == (imap_user.username,)
    assert _ok(imap_oracle.select("INBOX")) == [b"1"]
    typ, data = imap_oracle.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK"
    assert isinstance(data[0], tuple)
    assert b"delivered" in data[0][1]
    smtp_sink.reset()


def test_smtp_sink_context_manager() -> None:
    with SmtpSink.start(users={"u": "p"}) as sink:
        with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
            client.login("u", "p")
            client.sendmail("u@example.com", ["v@example.com"], b"Subject: s\r\n\r\nb\r\n")
        assert len(sink.wait_for(1, timeout=5)) == 1
    with pytest.raises(OSError):
        socket.create_connection((sink.host, sink.port), timeout=2).close()
