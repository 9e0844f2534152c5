"""Run jmaplib's live integration suite against the proxy (``scripts/jmaplib-live`` runs this).

jmaplib (PyPI, AGPL-3.0-only) ships a live suite in its source distribution,
``tests/integration``, configured by ``JMAP_TEST_URL``, ``JMAP_TEST_USER``/``_PASS`` and
``JMAP_TEST_USER2``/``_PASS2``.  This script:

1. downloads the pinned sdist into a cache directory outside the repository (checking its
   SHA-256) and unpacks it into a temporary directory: nothing of it is ever copied into
   this repository;
2. builds jmaplib's wheel from that sdist once, into the same cache directory under the
   sdist's pinned SHA-256 (building it sets up its build backend from scratch, the longest
   step of a run), and installs it (with its ``ws`` extra) and the test runners its live
   suite imports (from the sdist's ``[dependency-groups] dev``) into this Python (the
   checkout's ``.venv`` when run by ``scripts/jmaplib-live``), when they are missing;
3. starts a throw-away Dovecot with two users, an SMTP sink that delivers what it accepts
   for either user into that user's INBOX over Dovecot's LMTP, and the proxy
   (``imapjmap serve --config <generated toml>``) on a free loopback port; with
   ``JMAPLIB_LIVE_INSTANCES=2``, two proxies on one throw-away PostgreSQL cache instead,
   behind the nginx recipe (``deploy/nginx/imapjmap.conf``, both in its ``upstream``
   block: round robin, so the suite's consecutive requests alternate instances) over
   https with a private CA the suite is told of (``JMAP_TEST_CA``);
4. runs ``python -m pytest tests/integration -m integration -p no:cacheprovider`` in the
   unpacked sdist (its own rootdir and pytest config; ``-m integration`` because that config
   deselects the marker by default), with the ``JMAP_TEST_*`` variables set;
5. stops every server, whatever happened.

Exit status: pytest's when it failed; 5 when it executed no test (none collected, or none
passed: every one skipped); 1 when something around it failed; else 0.  Arguments go to
pytest (``scripts/jmaplib-live -k Delivery``).  The last line printed is a one-line summary
starting with ``jmaplib-live:``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata as metadata
import os
import secrets
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from devservers.dovecot import DovecotError, DovecotServer, ensure_dovecot_installed
from devservers.nginx import NginxError, recipe_front
from devservers.postgres import PostgresError, PostgresServer
from devservers.samplemail import generate, seed_maildir
from devservers.smtp import SmtpSink
from imapjmap.config import (
    AuthConfig,
    CacheConfig,
    Config,
    ImapConfig,
    ServerConfig,
    SmtpConfig,
    to_toml,
)

try:
    from packaging.requirements import Requirement
except ImportError:  # pip always has a copy
    from pip._vendor.packaging.requirements import Requirement  # type: ignore[assignment]

JMAPLIB_VERSION = "3.0.1"
JMAPLIB_SDIST = f"jmaplib-{JMAPLIB_VERSION}.tar.gz"
# The SHA-256 PyPI lists for that file: a different file is refused.
JMAPLIB_SHA256 = "a37df98a38a3098202ff9c8e6e0c106da29809b3b82be0a8ee4bbe2b4d49740f"
JMAPLIB_EXTRAS = "ws"  # httpx-ws: the suite's WebSocket tests (RFC 8887)
# What the live suite imports from the sdist's dev group; the rest of that group are linters,
# type checkers and tools of its offline unit suite (coverage, trio, hypothesis).
SUITE_TOOLS = frozenset({"pytest", "pytest-asyncio", "anyio"})

# Tests of this jmaplib version's live suite that are wrong, not the proxy: deselected, each
# with its reason (printed with the run).  Check them again whenever JMAPLIB_VERSION changes.
SUITE_MISTAKES: dict[str, str] = {
    "tests/integration/test_live_push.py::TestEventSource::test_a_ping_never_moves_the_cursor": (
        "it reads last_event_id before connecting and compares it after the first ping, so any "
        "state event before that ping fails it (RFC 8620 section 7.3: the server SHOULD give "
        "state events an id; the proxy sends the current state on connect and again after its "
        "first sync), although the ping itself carries no id (section 7.3: a ping 'MUST NOT set "
        "a new event id'); the check belongs between the last event before the ping and the ping"
    ),
}

# A defect of the suite's WebSocket client (httpx-ws 0.9's synchronous sessions), mended in
# the suite's process by this plugin, which says why; check it again whenever httpx-ws changes.
CLIENT_FIX = "jmaplib_live_client"

DOMAIN = "example.com"
USERS = ("alice", "bob")
SAMPLE_MESSAGES = 40  # a realistic mailbox for the first user (never in Drafts, see _seed)
SUITE_TIMEOUT = float(os.environ.get("JMAPLIB_LIVE_TIMEOUT", "1800"))
INSTANCES_ENV = "JMAPLIB_LIVE_INSTANCES"  # 1 (default), or 2: behind nginx, round robin
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
NO_TESTS = 5  # pytest's "no tests collected"


def say(text: str) -> None:
    print(f"jmaplib-live: {text}", file=sys.stderr, flush=True)


class LiveError(RuntimeError):
    """Something around the suite failed (download, install, a server)."""


# --------------------------------------------------------------------------------------------
# jmaplib's sdist


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "imapjmap"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_sdist() -> Path:
    """The pinned sdist in the cache directory, downloaded by pip when it is not there."""
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / JMAPLIB_SDIST
    if path.is_file() and _sha256(path) == JMAPLIB_SHA256:
        return path
    path.unlink(missing_ok=True)
    say(f"downloading the jmaplib {JMAPLIB_VERSION} sdist into {directory}")
    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        _pip(
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--dest",
            scratch,
            f"jmaplib=={JMAPLIB_VERSION}",
        )
        downloaded = Path(scratch) / JMAPLIB_SDIST
        if not downloaded.is_file():
            raise LiveError(f"pip download did not produce {JMAPLIB_SDIST}")
        found = _sha256(downloaded)
        if found != JMAPLIB_SHA256:
            raise LiveError(f"{JMAPLIB_SDIST}: SHA-256 {found}, expected {JMAPLIB_SHA256}")
        downloaded.replace(path)
    return path


def unpack(sdist: Path, into: Path) -> Path:
    with tarfile.open(sdist) as archive:
        if hasattr(tarfile, "data_filter"):
            archive.extractall(into, filter="data")
        else:  # Python 3.11 before 3.11.4: check the names by hand
            for member in archive.getmembers():
                target = (into / member.name).resolve()
                if not target.is_relative_to(into.resolve()) or member.issym() or member.islnk():
                    raise LiveError(f"{sdist.name}: unsafe member {member.name!r}")
            archive.extractall(into)
    root = into / f"jmaplib-{JMAPLIB_VERSION}"
    if not (root / "tests" / "integration").is_dir():
        raise LiveError(f"{sdist.name} has no tests/integration")
    return root


# --------------------------------------------------------------------------------------------
# Installing what the suite needs


def _pip(*args: str) -> None:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    command = [sys.executable, "-m", "pip", *args]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
        raise LiveError(f"{' '.join(command)} failed ({result.returncode}):\n{tail}")


def _satisfied(line: str) -> bool:
    requirement = Requirement(line)
    if requirement.marker is not None and not requirement.marker.evaluate():
        return True
    try:
        version = metadata.version(requirement.name)
    except metadata.PackageNotFoundError:
        return False
    return requirement.specifier.contains(version, prereleases=True)


def suite_requirements(root: Path) -> list[str]:
    """jmaplib's own dependencies and extras, and the dev-group entries the suite uses."""
    project = tomllib.loads((root / "pyproject.toml").read_text())
    wanted = list(project["project"].get("dependencies", []))
    for extra in JMAPLIB_EXTRAS.split(","):
        wanted += project["project"].get("optional-dependencies", {}).get(extra, [])
    dev = project.get("dependency-groups", {}).get("dev", [])
    wanted += [
        line
        for line in dev
        if isinstance(line, str) and Requirement(line).name.lower() in SUITE_TOOLS
    ]
    return wanted


def built_wheel(sdist: Path) -> Path:
    """jmaplib's wheel, built from the pinned sdist the first time and kept in the cache
    directory under the sdist's SHA-256, so later runs (and fresh environments) install it
    without building anything."""
    directory = cache_dir() / "wheels" / JMAPLIB_SHA256
    for wheel in sorted(directory.glob(f"jmaplib-{JMAPLIB_VERSION}-*.whl")):
        return wheel
    directory.mkdir(parents=True, exist_ok=True)
    say(f"building the jmaplib {JMAPLIB_VERSION} wheel once, kept in {directory}")
    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        _pip("wheel", "--no-deps", "--wheel-dir", scratch, str(sdist.resolve()))
        built = sorted(Path(scratch).glob(f"jmaplib-{JMAPLIB_VERSION}-*.whl"))
        if not built:
            raise LiveError(f"pip wheel did not build jmaplib {JMAPLIB_VERSION}")
        return built[0].replace(directory / built[0].name)  # whole or not at all


def ensure_installed(sdist: Path, root: Path) -> None:
    wanted = suite_requirements(root)
    try:
        jmaplib_ok = metadata.version("jmaplib") == JMAPLIB_VERSION
    except metadata.PackageNotFoundError:
        jmaplib_ok = False
    missing = [line for line in wanted if not _satisfied(line)]
    if jmaplib_ok and not missing:
        return
    say(f"installing jmaplib {JMAPLIB_VERSION} [{JMAPLIB_EXTRAS}] and {', '.join(missing) or '-'}")
    wheel = built_wheel(sdist)
    _pip("install", "--quiet", f"jmaplib[{JMAPLIB_EXTRAS}] @ {wheel.resolve().as_uri()}", *missing)


# --------------------------------------------------------------------------------------------
# The servers


@dataclass(frozen=True)
class Account:
    login: str  # the Dovecot login, and the address (the proxy's default identity)
    password: str


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _seed(dovecot: DovecotServer, login: str) -> None:
    """Sample mail in the INBOX and other folders, none in Drafts.

    The suite creates its own drafts and walks the Drafts mailbox in a bounded number of
    pages (TestAnchorPagination: ten pages of two, oldest first): drafts seeded here would
    come before the ones it makes and push them out of its reach.
    """
    messages = [m for m in generate(SAMPLE_MESSAGES, seed=7) if m.folder != "Drafts"]
    seed_maildir(dovecot, login, messages)


@contextlib.contextmanager
def proxy_process(
    config: Config, workdir: Path, name: str = "proxy", public_url: str | None = None
) -> Iterator[str]:
    """``imapjmap serve`` with ``config`` (its listen port chosen here, its ``base_url``
    ``public_url`` when it is behind a balancer); yields the URL it listens on."""
    log_path = workdir / f"{name}.log"
    for _ in range(5):
        port = _free_port()
        listen = f"127.0.0.1:{port}"
        base_url = f"http://{listen}"
        config_path = workdir / f"{name}.toml"
        cfg = Config(
            imap=config.imap,
            server=ServerConfig(listen=listen, base_url=public_url or base_url, log_level="info"),
            smtp=config.smtp,
            cache=config.cache,
            auth=config.auth,
        )
        config_path.write_text("# Written by scripts/jmaplib-live.\n" + to_toml(cfg))
        log_file = log_path.open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "imapjmap", "serve", "--config", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        log_file.close()
        try:
            if _wait_listening(process, port):
                try:
                    yield base_url
                finally:
                    _stop(process)
                return
        except BaseException:
            _stop(process)
            raise
        _stop(process)
        if "address already in use" not in _tail(log_path).lower():
            break
    raise LiveError(f"the proxy did not start; its log ({log_path}):\n{_tail(log_path)}")


def _wait_listening(process: subprocess.Popen[bytes], port: int) -> bool:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/.well-known/jmap", timeout=2):
                return True
        except urllib.error.HTTPError:  # 401 without credentials: it is serving
            return True
        except OSError:
            time.sleep(0.1)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass(frozen=True)
class Served:
    session_url: str
    accounts: list[Account]
    ca_file: str | None = None  # the private CA of an https front
    logs: tuple[Path, ...] = ()  # the proxies'


def instance_count() -> int:
    value = os.environ.get(INSTANCES_ENV, "1").strip() or "1"
    if value not in ("1", "2"):
        raise LiveError(f"{INSTANCES_ENV}={value!r}: 1 or 2")
    return int(value)


def start_proxies(
    stack: contextlib.ExitStack, config: Config, workdir: Path, count: int
) -> tuple[str, str | None, tuple[Path, ...]]:
    """One proxy, or ``count`` on one PostgreSQL cache behind the nginx recipe; returns
    (base URL, CA file or None, the proxies' logs); ``stack`` stops them."""
    if count == 1:
        return stack.enter_context(proxy_process(config, workdir)), None, (workdir / "proxy.log",)
    (workdir / "postgres").mkdir()
    postgres = PostgresServer.start(workdir / "postgres")
    stack.callback(postgres.stop)
    key_file = workdir / "push-token.key"
    key_file.write_bytes(secrets.token_bytes(32))
    shared = Config(
        imap=config.imap,
        smtp=config.smtp,
        cache=CacheConfig(url=postgres.create_database("imapjmap")),
        auth=AuthConfig(push_token_key_file=str(key_file)),
    )
    https_port = _free_port()
    public = f"https://127.0.0.1:{https_port}"
    names = [f"proxy-{'ab'[n]}" for n in range(count)]
    urls = [stack.enter_context(proxy_process(shared, workdir, name, public)) for name in names]
    ports = [int(url.rsplit(":", 1)[1]) for url in urls]
    front = stack.enter_context(recipe_front(workdir / "front", ports, https_port))
    say(f"{count} proxies ({', '.join(urls)}) on PostgreSQL behind nginx {front.url}")
    return front.url, front.ca_file, tuple(workdir / f"{name}.log" for name in names)


@contextlib.contextmanager
def servers(workdir: Path, count: int = 1) -> Iterator[Served]:
    """Dovecot with the two users, the SMTP sink and the proxy (or ``count`` proxies
    behind nginx); yields the session URL and the users."""
    with contextlib.ExitStack() as stack:
        ensure_dovecot_installed()
        dovecot = DovecotServer.start(workdir / "dovecot")
        stack.callback(dovecot.stop)
        accounts = [Account(f"{name}@{DOMAIN}", secrets.token_urlsafe(12)) for name in USERS]
        for account in accounts:
            dovecot.add_user(account.login, account.password)
            # the INBOX and the special-use folders exist from the first access on
            dovecot.doveadm("mailbox", "status", "-u", account.login, "messages", "INBOX")
        _seed(dovecot, accounts[0].login)
        sink = SmtpSink.start(
            users={a.login: a.password for a in accounts},
            require_auth=True,
            dovecot=dovecot,
            deliver_to={a.login: a.login for a in accounts},
        )
        stack.callback(sink.stop)
        config = Config(
            imap=ImapConfig(host=dovecot.host, port=dovecot.port, security="none"),
            smtp=SmtpConfig(host=sink.host, port=sink.port, security="none", auth="user"),
            cache=CacheConfig(path=str(workdir / "cache.sqlite3")),
        )
        base_url, ca_file, logs = start_proxies(stack, config, workdir, count)
        say(
            f"Dovecot {dovecot.host}:{dovecot.port} (LMTP {dovecot.lmtp_port}), "
            f"SMTP sink {sink.host}:{sink.port}, proxy {base_url}"
        )
        try:
            yield Served(f"{base_url}/.well-known/jmap", accounts, ca_file, logs)
        finally:
            problems = [
                f"{log.stem}: {line}" if len(logs) > 1 else line
                for log in logs
                for line in _tail(log, 10_000).splitlines()
                if " WARNING " in line or " ERROR " in line or " CRITICAL " in line
            ]
            if problems:
                say("the proxy's warnings and errors:\n" + "\n".join(problems[-40:]))


# --------------------------------------------------------------------------------------------
# The suite


@dataclass(frozen=True)
class Outcome:
    status: int
    tests: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0

    @property
    def passed(self) -> int:
        return self.tests - self.failed - self.errors - self.skipped


def _counts(report: Path) -> tuple[int, int, int, int]:
    """(tests, failures, errors, skipped) summed over the JUnit XML report's test suites."""
    try:
        root = ET.parse(report).getroot()
    except (OSError, ET.ParseError):
        return (0, 0, 0, 0)
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    totals = [0, 0, 0, 0]
    for suite in suites:
        for index, key in enumerate(("tests", "failures", "errors", "skipped")):
            totals[index] += int(suite.get(key, "0"))
    return (totals[0], totals[1], totals[2], totals[3])


def run_suite(root: Path, served: Served, pytest_args: Sequence[str], workdir: Path) -> Outcome:
    alice, bob = served.accounts
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JMAP_TEST_", "PYTEST_"))}
    env.update(
        JMAP_TEST_URL=served.session_url,
        JMAP_TEST_USER=alice.login,
        JMAP_TEST_PASS=alice.password,
        JMAP_TEST_USER2=bob.login,
        JMAP_TEST_PASS2=bob.password,
        PYTHONDONTWRITEBYTECODE="1",
    )
    if served.ca_file is not None:
        env["JMAP_TEST_CA"] = served.ca_file
    # httpx honours *_PROXY variables: the loopback proxy must be reached directly.
    no_proxy = ",".join(filter(None, [env.get("NO_PROXY", ""), "127.0.0.1", "localhost"]))
    env["NO_PROXY"] = env["no_proxy"] = no_proxy
    # the client's own WebSocket teardown, made safe (scripts/jmaplib_live_client.py)
    scripts = str(Path(__file__).resolve().parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [scripts, env.get("PYTHONPATH", "")]))
    report = workdir / "junit.xml"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "tests/integration",
        "-m",
        "integration",  # the sdist's config deselects it by default
        "-p",
        "no:cacheprovider",
        "-v",
        f"--junitxml={report}",
        "-p",
        CLIENT_FIX,
        *(f"--deselect={test}" for test in SUITE_MISTAKES),
        *pytest_args,
    ]
    for test, reason in SUITE_MISTAKES.items():
        say(f"deselected {test}: {reason}")
    # .ci/run finds the suite's pytest summary after this line ("jmaplib-live: running ").
    say(f"running jmaplib {JMAPLIB_VERSION}'s live suite: {' '.join(command[1:])}")
    process = subprocess.Popen(command, cwd=root, env=env, start_new_session=True)
    try:
        status = process.wait(SUITE_TIMEOUT)
    except subprocess.TimeoutExpired:
        say(f"the suite ran longer than {SUITE_TIMEOUT:.0f} s: stopped")
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return Outcome(
            status=1,
            **dict(zip(("tests", "failed", "errors", "skipped"), _counts(report), strict=True)),
        )
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait()
        raise
    tests, failed, errors, skipped = _counts(report)
    return Outcome(status, tests, failed, errors, skipped)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str]) -> int:
    signal.signal(signal.SIGTERM, _terminate)  # stop the servers on SIGTERM too
    try:
        with tempfile.TemporaryDirectory(prefix="imapjmap-live-") as scratch:
            workdir = Path(scratch)
            sdist = fetch_sdist()
            root = unpack(sdist, workdir / "sdist")
            ensure_installed(sdist, root)
            count = instance_count()
            with servers(workdir / "servers", count) as served:
                outcome = run_suite(root, served, argv, workdir)
                if count > 1:
                    served_by = [
                        log.read_text(errors="replace").count("POST /jmap/api/")
                        for log in served.logs
                    ]
                    say(f"API requests per proxy: {served_by}")
                    if min(served_by) == 0:
                        raise LiveError("a proxy behind nginx answered no API request")
    except (LiveError, DovecotError, PostgresError, NginxError) as error:
        say(f"error: {error}")
        return 1
    summary = (
        f"{outcome.passed} passed, {outcome.failed} failed, {outcome.errors} errors, "
        f"{outcome.skipped} skipped (pytest exit {outcome.status})"
    )
    if outcome.status == 0 and outcome.passed == 0:
        say(f"jmaplib {JMAPLIB_VERSION} live suite executed no test: {summary}")
        return NO_TESTS
    verdict = "passed" if outcome.status == 0 else "FAILED"
    say(f"jmaplib {JMAPLIB_VERSION} live suite {verdict}: {summary}")
    return outcome.status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
