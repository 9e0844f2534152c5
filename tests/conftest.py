"""Fixtures shared by every test: the real servers (DESIGN.md, "Tests use real servers").

- ``dovecot`` (session): a :class:`DovecotServer` on a free loopback port, installed if needed.
- ``imap_user``: a fresh Dovecot user for each test (:class:`ImapUser`).
- ``imap_oracle``: a logged-in stdlib ``imaplib.IMAP4`` for ``imap_user``, the second plain
  IMAP connection that checks effects and makes outside changes.
- ``seeded_user``: ``imap_user`` with sample mail in it (:class:`SeededUser`).
- ``smtp_sink`` (session): a recording :class:`SmtpSink` that can deliver into ``dovecot``;
  it is shared, so a test that changes it calls ``smtp_sink.reset()`` first.

Tests that use ``dovecot`` (directly or through another fixture) get the ``dovecot`` marker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import imaplib
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from imapjmap.demo.dovecot import DovecotServer, ensure_dovecot_installed
from imapjmap.demo.samplemail import SampleMessage, generate, seed_maildir
from imapjmap.demo.smtp import SmtpSink

settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)

SEEDED_MESSAGES = 50
SEED = 1


@dataclasses.dataclass(frozen=True)
class ImapUser:
    username: str
    password: str
    host: str
    port: int

    def connect(self) -> imaplib.IMAP4:
        """A new logged-in stdlib IMAP connection (the caller logs out)."""
        client = imaplib.IMAP4(self.host, self.port, timeout=30)
        client.login(self.username, self.password)
        return client


@dataclasses.dataclass(frozen=True)
class SeededUser(ImapUser):
    messages: tuple[SampleMessage, ...]  # what was written, oldest first
    counts: Mapping[str, int]  # messages per folder, as Dovecot counted them


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "dovecot" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.dovecot)


@contextlib.contextmanager
def dovecot_root() -> Iterator[Path]:
    """A fresh directory for a Dovecot instance, outside pytest's temporary directories.

    As root, Dovecot's mail and auth processes (other users) must traverse every ancestor of
    the instance's directory, and every pytest run resets ``/tmp/pytest-of-<user>`` to 0700:
    a Dovecot under it breaks as soon as another test run starts.
    """
    root = Path(tempfile.mkdtemp(prefix="imapjmap-dovecot-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    ensure_dovecot_installed()
    with dovecot_root() as root:
        server = DovecotServer.start(root)
        yield server
        server.stop()


def _username(request: pytest.FixtureRequest) -> str:
    """Unique, and named after the test so that Dovecot's log is easy to follow."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-").lower()
    return f"{slug[:40] or 'user'}-{secrets.token_hex(4)}"


@pytest.fixture
def imap_user(dovecot: DovecotServer, request: pytest.FixtureRequest) -> ImapUser:
    username, password = _username(request), secrets.token_urlsafe(12)
    dovecot.add_user(username, password)
    return ImapUser(username, password, dovecot.host, dovecot.port)


@pytest.fixture
def imap_oracle(imap_user: ImapUser) -> Iterator[imaplib.IMAP4]:
    client = imap_user.connect()
    yield client
    with contextlib.suppress(Exception):
        client.logout()


@functools.cache
def _sample_mail(count: int, seed: int) -> tuple[SampleMessage, ...]:
    return tuple(generate(count, seed))


@pytest.fixture
def seeded_user(dovecot: DovecotServer, imap_user: ImapUser) -> SeededUser:
    messages = _sample_mail(SEEDED_MESSAGES, SEED)
    counts = seed_maildir(dovecot, imap_user.username, messages)
    return SeededUser(**dataclasses.asdict(imap_user), messages=messages, counts=counts)


@pytest.fixture(scope="session")
def smtp_sink(dovecot: DovecotServer) -> Iterator[SmtpSink]:
    sink = SmtpSink.start(dovecot=dovecot)
    yield sink
    sink.stop()
