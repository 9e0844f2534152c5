"""Fixtures shared by every test: the real servers (docs/design.md, "Tests").

- ``dovecot`` (session): a :class:`DovecotServer` on a free loopback port, installed if needed.
- ``cyrus`` (session): a :class:`CyrusServer` (Cyrus IMAP 3.6 unpacked from Debian's
  packages, RFC 8474 OBJECTID, no NOTIFY), started the first time a test needs it.
- ``dovecot_minimal`` (session): a Dovecot advertising none of CONDSTORE, QRESYNC,
  LIST-STATUS, MOVE, UIDPLUS (:data:`MINIMAL_REMOVED`), also started lazily.
- ``imap_backend`` (session): the server behind ``imap_user``.  A test that needs only "an
  IMAP server with a user" runs once per entry of :data:`BACKENDS` (ids ``[dovecot]``,
  ``[cyrus]``, ``[dovecot-minimal]``), or those its ``backends`` marker names; a test that
  uses ``dovecot`` itself (directly or through ``smtp_sink``...) or is marked ``dovecot``
  runs against Dovecot only.  See :func:`pytest_generate_tests`.
- ``imap_user``: a fresh user on ``imap_backend`` for each test (:class:`ImapUser`).
- ``imap_oracle``: a logged-in stdlib ``imaplib.IMAP4`` for ``imap_user``, the second plain
  IMAP connection that checks effects and makes outside changes.
- ``seeded_user``: ``imap_user`` with sample mail in it (:class:`SeededUser`); written
  straight into the Maildir on Dovecot, APPENDed over IMAP elsewhere.
- ``smtp_sink`` (session): a recording :class:`SmtpSink` that can deliver into ``dovecot``;
  it is shared, so a test that changes it calls ``smtp_sink.reset()`` first.
- ``postgres`` (session): a throw-away :class:`PostgresServer` cluster, started lazily.
  With ``--cache-backend=postgresql`` (or ``IMAPJMAP_TEST_CACHE=postgresql``) every cache a
  test opens by a SQLite path lives in a PostgreSQL schema of its own instead (one per
  path, a new one per ``:memory:``): the store and integration tests' second pass.
  With ``--instances=2`` as well, each integration test's proxy is two instances on that
  cache that its client alternates between (tests/integration/instances.py).

Tests that use ``dovecot`` (directly or through another fixture) get the ``dovecot`` marker;
tests run against Cyrus get the ``cyrus`` marker (``-m "not cyrus"`` leaves them out).
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

from devservers.cyrus import CyrusServer
from devservers.dovecot import DovecotServer, ensure_dovecot_installed
from devservers.postgres import PostgresServer
from devservers.samplemail import SampleMessage, encode_mutf7, generate, seed_maildir
from devservers.smtp import SmtpSink
from imapjmap.smtp import forget_extensions

#: A time limit for every test that says where a hung test waited (tests/timelimit.py).
pytest_plugins = ["tests.timelimit"]

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

#: The upstreams a backend-independent test runs against (``imap_backend``'s params), with
#: the session fixture that serves each.
BACKENDS: Mapping[str, str] = {
    "dovecot": "dovecot",
    "cyrus": "cyrus",
    "dovecot-minimal": "dovecot_minimal",
}
#: What ``dovecot-minimal`` does not advertise: a server without extensions must still work.
MINIMAL_REMOVED = ("CONDSTORE", "QRESYNC", "LIST-STATUS", "MOVE", "UIDPLUS")
#: Fixtures through which a test needs Dovecot itself (its files, doveadm, LMTP delivery).
_DOVECOT_ONLY_FIXTURES = frozenset({"dovecot", "smtp_sink"})


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


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cache-backend",
        choices=("sqlite", "postgresql"),
        default=os.environ.get("IMAPJMAP_TEST_CACHE") or "sqlite",
        help="where the tests' caches live (default sqlite; env IMAPJMAP_TEST_CACHE)",
    )
    parser.addoption(
        "--instances",
        type=int,
        choices=(1, 2),
        default=int(os.environ.get("IMAPJMAP_TEST_INSTANCES") or 1),
        help="proxy instances behind each integration test's client, which alternates"
        " between them on every request (2 needs --cache-backend=postgresql;"
        " env IMAPJMAP_TEST_INSTANCES)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--instances") > 1 and config.getoption("--cache-backend") != "postgresql":
        # two instances share one cache only on PostgreSQL
        raise pytest.UsageError("--instances=2 needs --cache-backend=postgresql")
    config.addinivalue_line("markers", "cyrus: runs against the real Cyrus test server")
    config.addinivalue_line(
        "markers", "backends(*names): run only against these of BACKENDS (a costly test)"
    )
    config.addinivalue_line(
        "markers", "sqlite_only: tests SQLite itself (its files, PRAGMAs); skipped on PostgreSQL"
    )
    config.addinivalue_line(
        "markers",
        "one_instance(why): inspects one app's internals; skipped with --instances=2",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that needs only "an IMAP server with a user" against each backend.

    That is a test whose fixtures reach ``imap_backend`` (through ``imap_user``, ``jmap``...)
    but neither ``dovecot`` nor another Dovecot-only fixture, and that is not marked
    ``dovecot``.  The servers are session-scoped and started lazily, and pytest groups the
    tests by backend, so each server runs once per session.
    """
    names = set(metafunc.fixturenames)
    if "imap_backend" not in names or names & _DOVECOT_ONLY_FIXTURES:
        return
    if any(metafunc.definition.iter_markers("dovecot")):
        return
    chosen = metafunc.definition.get_closest_marker("backends")
    backends = list(chosen.args) if chosen is not None else list(BACKENDS)
    assert set(backends) <= set(BACKENDS), backends
    metafunc.parametrize("imap_backend", backends, indirect=True, scope="session")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = getattr(item, "fixturenames", ())
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("imap_backend") if callspec is not None else None
        if backend == "cyrus" or "cyrus" in names:
            item.add_marker(pytest.mark.cyrus)
        elif "dovecot" in names or "imap_backend" in names:
            item.add_marker(pytest.mark.dovecot)


@contextlib.contextmanager
def dovecot_root(kind: str = "dovecot") -> Iterator[Path]:
    """A fresh directory for a Dovecot (or Cyrus) instance, outside pytest's temporary dirs.

    As root, Dovecot's mail and auth processes (other users) must traverse every ancestor of
    the instance's directory, and every pytest run resets ``/tmp/pytest-of-<user>`` to 0700:
    a Dovecot under it breaks as soon as another test run starts.  Cyrus's processes run as
    ``nobody`` too.
    """
    root = Path(tempfile.mkdtemp(prefix=f"imapjmap-{kind}-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def _fresh_smtp_extensions() -> Iterator[None]:
    """Each test's SMTP server is probed anew: the proxy remembers a server's EHLO keywords
    by host and port for the life of the process, and a port one test freed can be another
    test's server with other extensions."""
    forget_extensions()
    yield
    forget_extensions()


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    ensure_dovecot_installed()
    with dovecot_root() as root:
        server = DovecotServer.start(root)
        yield server
        server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with dovecot_root("postgres") as root:
        server = PostgresServer.start(root)
        yield server
        server.stop()


@pytest.fixture(autouse=True)
def _cache_backend(request: pytest.FixtureRequest) -> Iterator[None]:
    """On ``--cache-backend=postgresql``, open each SQLite cache path as a PostgreSQL
    schema of its own (the same schema for the same path within a test)."""
    if request.config.getoption("--cache-backend") != "postgresql":
        yield
        return
    if request.node.get_closest_marker("sqlite_only") is not None:
        pytest.skip("tests SQLite itself")
    one_instance = request.node.get_closest_marker("one_instance")
    if one_instance is not None and request.config.getoption("--instances") > 1:
        pytest.skip(f"one instance only: {one_instance.args[0]}")
    from imapjmap.store.db import POSTGRESQL_SCHEMES, Store

    server: PostgresServer = request.getfixturevalue("postgres")
    opened: dict[str, str] = {}
    real_open = Store.open.__func__  # type: ignore[attr-defined]

    async def open_on_postgresql(cls: type[Store], path: str, **kwargs: object) -> Store:
        if not path.startswith(POSTGRESQL_SCHEMES):
            key = path if path not in ("", ":memory:") else secrets.token_hex(4)
            if key not in opened:
                opened[key] = server.schema_url(f"t_{secrets.token_hex(6)}")
            path = opened[key]
        return await real_open(cls, path, **kwargs)  # type: ignore[no-any-return]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Store, "open", classmethod(open_on_postgresql))
        yield


@pytest.fixture(scope="session")
def dovecot_minimal() -> Iterator[DovecotServer]:
    ensure_dovecot_installed()
    with dovecot_root("dovecot-minimal") as root:
        server = DovecotServer.start(root, remove_capabilities=MINIMAL_REMOVED)
        yield server
        server.stop()


@pytest.fixture(scope="session")
def cyrus() -> Iterator[CyrusServer]:
    with dovecot_root("cyrus") as root:
        server = CyrusServer.start(root)  # downloads and unpacks Cyrus the first time
        yield server
        server.stop()


ImapServer = DovecotServer | CyrusServer


@pytest.fixture(scope="session")
def imap_backend(request: pytest.FixtureRequest) -> ImapServer:
    """The upstream behind ``imap_user``: Dovecot unless parametrised (see BACKENDS)."""
    name = getattr(request, "param", "dovecot")
    server: ImapServer = request.getfixturevalue(BACKENDS[name])
    return server


def advertises(client: imaplib.IMAP4, capability: str) -> bool:
    """Whether the server a logged-in oracle talks to advertises ``capability`` now.

    For tests whose expected effect depends on an extension, not on the server's make: e.g.
    without UIDPLUS the proxy can only mark its own copy ``\\Deleted`` (``upstream.imap``).
    """
    typ, data = client.capability()
    assert typ == "OK", data
    raw = data[0] if data and isinstance(data[0], bytes) else b""
    return capability.upper() in raw.decode().upper().split()


def _username(request: pytest.FixtureRequest) -> str:
    """Unique, and named after the test so that Dovecot's log is easy to follow."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-").lower()
    return f"{slug[:40] or 'user'}-{secrets.token_hex(4)}"


@pytest.fixture
def imap_user(imap_backend: ImapServer, request: pytest.FixtureRequest) -> ImapUser:
    username, password = _username(request), secrets.token_urlsafe(12)
    imap_backend.add_user(username, password)
    return ImapUser(username, password, imap_backend.host, imap_backend.port)


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
def seeded_user(imap_backend: ImapServer, imap_user: ImapUser) -> SeededUser:
    messages = _sample_mail(SEEDED_MESSAGES, SEED)
    if isinstance(imap_backend, DovecotServer):
        counts = seed_maildir(imap_backend, imap_user.username, messages)
    else:
        counts = _seed_over_imap(imap_user, messages)
    return SeededUser(**dataclasses.asdict(imap_user), messages=messages, counts=counts)


def _seed_over_imap(user: ImapUser, messages: tuple[SampleMessage, ...]) -> dict[str, int]:
    """Create and subscribe the folders, APPEND the messages; the counts STATUS reports."""
    client = user.connect()
    try:
        folders: list[str] = []
        for message in messages:
            parts = message.folder.split("/")
            for depth in range(1, len(parts) + 1):
                name = "/".join(parts[:depth])
                if name not in folders:
                    folders.append(name)

        def quoted(name: str) -> str:
            return '"' + encode_mutf7(name).replace("\\", "\\\\").replace('"', '\\"') + '"'

        for name in folders:
            if name.upper() != "INBOX":
                client.create(quoted(name))  # NO when it exists already (Sent, Archive...)
                client.subscribe(quoted(name))
        for message in messages:
            flags = "(" + " ".join(message.flags) + ")" if message.flags else None
            when = imaplib.Time2Internaldate(message.internaldate)
            typ, data = client.append(quoted(message.folder), flags, when, message.raw)
            assert typ == "OK", (message.folder, data)
        counts = {}
        for name in folders:
            typ, data = client.status(quoted(name), "(MESSAGES)")
            assert typ == "OK", data
            found = re.search(rb"MESSAGES (\d+)", data[-1] or b"")
            assert found is not None, data
            counts[name] = int(found.group(1))
        return counts
    finally:
        with contextlib.suppress(Exception):
            client.logout()


@pytest.fixture(scope="session")
def smtp_sink(dovecot: DovecotServer) -> Iterator[SmtpSink]:
    sink = SmtpSink.start(dovecot=dovecot)
    yield sink
    sink.stop()
