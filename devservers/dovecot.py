"""A throw-away Dovecot 2.3 instance on loopback, for tests, benchmarks and the demo.

:meth:`DovecotServer.start` writes a config under a private directory, starts ``dovecot -F`` on
free 127.0.0.1 ports (IMAP without TLS, plus LMTP for delivery tests) and waits for the greeting.
Users live in passwd-files (one per user, see :meth:`DovecotServer.add_user`), so users can be
added to a running server.  :meth:`stop` terminates the master and every process it started.

Running as root, mail processes run as ``nobody`` (Dovecot refuses uid 0 for mail) and the
directories they need are handed to that user; running as an ordinary user, every Dovecot
process runs as that user.  What the proxy relies on about Dovecot is in docs/design.md,
"Servers".
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import grp
import imaplib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devservers._host import free_port as _free_port
from devservers._host import make_searchable as _make_searchable
from devservers._host import services_not_started as _services_not_started
from devservers._host import tail as _tail

__all__ = [
    "DOVECOT_PACKAGES",
    "SPECIAL_USE_FOLDERS",
    "DovecotError",
    "DovecotServer",
    "ensure_dovecot_installed",
    "find_dovecot",
]

DOVECOT_PACKAGES = ("dovecot-imapd", "dovecot-lmtpd", "dovecot-sieve", "dovecot-managesieved")

#: Folders every user gets (auto-created and subscribed), with their RFC 6154 attribute.
SPECIAL_USE_FOLDERS: tuple[tuple[str, str], ...] = (
    ("Drafts", "\\Drafts"),
    ("Sent", "\\Sent"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
)

_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
_INSTALL_LOCK = Path(tempfile.gettempdir()) / "imapjmap-dovecot-install.lock"
_START_TIMEOUT = 15.0
_STOP_TIMEOUT = 10.0
# Unix socket paths are limited to 108 bytes; Dovecot's longest is about 30 below base_dir.
_MAX_BASE_DIR_LEN = 70
_PORT_ATTEMPTS = 5
_USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}")


class DovecotError(RuntimeError):
    """Dovecot could not be installed, started, used or stopped."""


# --------------------------------------------------------------------------------------------
# Installation


def find_dovecot() -> str | None:
    """The path of the ``dovecot`` master binary, or None when Dovecot is not installed."""
    found = shutil.which("dovecot")
    if found:
        return found
    for directory in _SBIN_DIRS:
        candidate = Path(directory) / "dovecot"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _find_tool(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for directory in ("/usr/bin", *_SBIN_DIRS):
        candidate = Path(directory) / name
        if os.access(candidate, os.X_OK):
            return str(candidate)
    raise DovecotError(f"{name} not found; is Dovecot installed?")


def _missing_packages() -> list[str]:
    """The packages of :data:`DOVECOT_PACKAGES` that dpkg does not list as installed."""
    if shutil.which("dpkg-query") is None:
        # Not a Debian system: trust what is on PATH.
        return [] if find_dovecot() else list(DOVECOT_PACKAGES)
    missing = []
    for package in DOVECOT_PACKAGES:
        result = subprocess.run(
            ["dpkg-query", "-W", "-f=${db:Status-Status}", package],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0 or result.stdout.strip() != "installed":
            missing.append(package)
    if not missing and find_dovecot() is None:
        missing = list(DOVECOT_PACKAGES)
    return missing


def _run_apt(args: list[str]) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()[-20:]
        raise DovecotError(f"{' '.join(args)} failed ({result.returncode}):\n" + "\n".join(output))


def ensure_dovecot_installed() -> None:
    """Install the Debian packages ``dovecot-imapd`` and ``dovecot-lmtpd`` when missing.

    Does nothing when they are installed.  Otherwise needs root and apt-get; runs
    ``apt-get update`` first only when apt does not know the packages yet (a fresh machine).
    The system-wide Dovecot that the packages would start is kept from starting.
    """
    missing = _missing_packages()
    if not missing:
        return
    if os.geteuid() != 0:
        raise DovecotError(
            "Dovecot is not installed and installing it needs root; run as root or install it: "
            "sudo apt-get install -y --no-install-recommends " + " ".join(missing)
        )
    apt_get = shutil.which("apt-get")
    if apt_get is None:
        raise DovecotError(
            "Dovecot is not installed and there is no apt-get to install it; install "
            + " and ".join(DOVECOT_PACKAGES)
            + " (or your system's Dovecot with IMAP and LMTP)"
        )
    with _INSTALL_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be installing right now
        missing = _missing_packages()
        if not missing:
            return
        known = all(
            subprocess.run(
                ["apt-cache", "show", package], capture_output=True, check=False
            ).returncode
            == 0
            for package in missing
        )
        with _services_not_started():
            if not known:
                _run_apt([apt_get, "update", "-q"])
            _run_apt([apt_get, "install", "-y", "-q", "--no-install-recommends", *missing])
    if _missing_packages():
        raise DovecotError("apt-get install succeeded but Dovecot is still not installed")


# --------------------------------------------------------------------------------------------
# Helpers


def _quote(value: str) -> str:
    """A Dovecot config value in double quotes."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc; empty where /proc is missing)."""
    children = []
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = entry.read_text()
        except OSError:
            continue
        # The command name (2nd field) is in parentheses and may contain spaces.
        fields = text[text.rfind(")") + 2 :].split()
        if len(fields) > 1 and fields[1] == str(pid):
            children.append(int(entry.parent.name))
    return children


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return status[status.rfind(")") + 2 :].split()[0] != "Z"


def _wait_gone(pids: Collection[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    remaining = [pid for pid in pids if _alive(pid)]
    while remaining and time.monotonic() < deadline:
        time.sleep(0.02)
        remaining = [pid for pid in remaining if _alive(pid)]
    return remaining


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _wait_for_master(process: subprocess.Popen[bytes], children: Collection[int]) -> None:
    """Wait for a master that got SIGTERM to exit.

    Its ``log`` child stays about a second after the others in case they have last words;
    once it is the only one left it is told to go as well, which makes stopping 1 s faster.
    """
    logger = [pid for pid in children if _comm(pid) == "log"]
    others = [pid for pid in children if pid not in logger]
    deadline = time.monotonic() + _STOP_TIMEOUT
    while process.poll() is None:
        if time.monotonic() > deadline:
            raise subprocess.TimeoutExpired(process.args, _STOP_TIMEOUT)
        if logger and not [pid for pid in others if _alive(pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(logger.pop(), signal.SIGTERM)
        time.sleep(0.01)


_running: weakref.WeakSet[DovecotServer] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for server in list(_running):
        with contextlib.suppress(Exception):
            server.stop()


# --------------------------------------------------------------------------------------------
# The server


@dataclass(eq=False)
class DovecotServer:
    """A running private Dovecot.  Create it with :meth:`start`."""

    host: str
    port: int
    root: Path
    lmtp_port: int = 0
    sieve_port: int = 0  # ManageSieve (RFC 5804); 0 when started without ``sieve``
    tls_port: int = 0  # the imaps listener (implicit TLS); 0 when started without ``tls``
    tls: tuple[Path, Path] | None = None  # (certificate chain PEM, private key PEM)
    config_path: Path = field(default=Path())
    log_path: Path = field(default=Path())
    passwd_path: Path = field(default=Path())  # a directory: one passwd-file per user
    base_dir: Path = field(default=Path())
    mail_uid: int = 0
    mail_gid: int = 0
    capabilities: tuple[str, ...] = ()  # post-login CAPABILITY as advertised after start
    acl: bool = False  # ACLs (RFC 4314) and other users' shared folders under ``shared/``
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _sieve: bool = field(default=False, repr=False)
    _short_base_dir: Path | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # ---------------------------------------------------------------------------- lifecycle

    @classmethod
    def start(
        cls,
        root: Path,
        *,
        remove_capabilities: Collection[str] = (),
        extra_conf: str = "",
        notify: bool = True,
        quota: bool = True,
        tls: tuple[str | Path, str | Path] | None = None,
        acl: bool = False,
        sieve: bool = False,
    ) -> DovecotServer:
        """Start a Dovecot whose config, state, logs and mail all live under ``root``.

        ``remove_capabilities`` hides IMAP capabilities (``"QRESYNC"``, ``"MOVE"`` …) from the
        greeting and the post-login CAPABILITY list; what is advertised is checked before this
        returns (see :attr:`capabilities`).  Dovecot still accepts the hidden extensions'
        commands, so this tests a client's respect for CAPABILITY, not its error handling.
        ``QUOTA`` and ``NOTIFY`` are removed by not loading their plugins (as with
        ``quota=False``, ``notify=False``): then GETQUOTAROOT answers BAD.  ``extra_conf`` is
        appended to the generated config.

        ``tls=(certificate_pem, key_pem)`` turns TLS on: an imaps listener (implicit TLS) on
        :attr:`tls_port` and STARTTLS on :attr:`port`, where plaintext logins stay allowed.
        The certificate file holds the server certificate followed by any intermediates.

        ``acl=True`` loads the ``acl`` and ``imap_acl`` plugins (ACLs kept in files beside the
        mail) and adds a shared namespace: a folder a user shares with another (``SETACL``)
        appears to that user as ``shared/OWNER/FOLDER``, listed through a dictionary of
        who shares with whom.

        ``sieve=True`` runs Pigeonhole: ManageSieve on :attr:`sieve_port` (STARTTLS when
        ``tls`` is given) and the Sieve plugin in LMTP, so delivered mail runs the user's
        active script (the Debian packages ``dovecot-sieve`` and ``dovecot-managesieved``).
        Its ``vacation`` and ``redirect`` send through ``submission_host``: name an SMTP
        server in ``extra_conf`` (``submission_host = 127.0.0.1:2525``).
        """
        dovecot = find_dovecot()
        if dovecot is None:
            raise DovecotError(
                "Dovecot is not installed; call ensure_dovecot_installed() or install "
                + " ".join(DOVECOT_PACKAGES)
            )
        root = Path(root).resolve()
        if any(c.isspace() for c in str(root)):
            raise ValueError(f"{root}: Dovecot's passwd-file path cannot contain white space")
        root.mkdir(parents=True, exist_ok=True)
        hidden = {c.upper() for c in remove_capabilities}
        # These two come from plugins: not loading the plugin removes them for real.
        quota = quota and "QUOTA" not in hidden
        notify = notify and "NOTIFY" not in hidden
        server = cls(host="127.0.0.1", port=0, root=root, acl=acl)
        server._sieve = sieve
        if tls is not None:
            server.tls = (Path(tls[0]).resolve(), Path(tls[1]).resolve())
        server._prepare()
        last_error: DovecotError | None = None
        for _ in range(_PORT_ATTEMPTS):
            server.port, server.lmtp_port = _free_port(), _free_port()
            server.tls_port = _free_port() if tls is not None else 0
            server.sieve_port = _free_port() if sieve else 0
            ports = [server.port, server.lmtp_port, server.tls_port, server.sieve_port]
            if len(set(ports) - {0}) < len([p for p in ports if p]):
                continue
            server._write_config(extra_conf=extra_conf, notify=notify, quota=quota)
            try:
                server._launch(dovecot)
                break
            except DovecotError as error:
                server._kill()
                last_error = error
                if "Address already in use" not in str(error):
                    server._discard()
                    raise
        else:
            server._discard()
            raise last_error or DovecotError("could not find free ports for Dovecot")
        _running.add(server)
        try:
            server.capabilities = server._probe_capabilities()
            if hidden & {c.upper() for c in server.capabilities}:
                server._hide_capabilities(hidden, extra_conf=extra_conf, notify=notify, quota=quota)
        except BaseException:
            server.stop()
            raise
        return server

    def _prepare(self) -> None:
        self.config_path = self.root / "dovecot.conf"
        self.log_path = self.root / "dovecot.log"
        self.passwd_path = self.root / "users"
        self.base_dir = self.root / "run"
        if len(str(self.base_dir)) > _MAX_BASE_DIR_LEN:
            self._short_base_dir = Path(tempfile.mkdtemp(prefix="dovecot-"))
            self.base_dir = self._short_base_dir / "run"
        for directory in (self.root / "state", self.root / "home"):
            directory.mkdir(exist_ok=True)
        self.passwd_path.mkdir(exist_ok=True)
        self._protect_passwd(self.passwd_path)
        if os.geteuid() == 0:
            try:
                nobody = pwd.getpwnam("nobody")
                self.mail_uid, self.mail_gid = nobody.pw_uid, nobody.pw_gid
            except KeyError:
                self.mail_uid = self.mail_gid = 65534
            _make_searchable(self.root)
            if self._short_base_dir is not None:
                _make_searchable(self._short_base_dir)
            os.chown(self.root / "home", self.mail_uid, self.mail_gid)
        else:
            self.mail_uid, self.mail_gid = os.getuid(), os.getgid()

    def _write_config(
        self, *, extra_conf: str, notify: bool, quota: bool, imap_capability: str = ""
    ) -> None:
        self.config_path.write_text(
            _render_config(
                self,
                extra_conf=extra_conf,
                notify=notify,
                quota=quota,
                imap_capability=imap_capability,
            )
        )

    def _launch(self, dovecot: str) -> None:
        self.log_path.write_text("")
        stderr_path = self.root / "dovecot.stderr"
        with stderr_path.open("wb") as stderr:
            self._process = subprocess.Popen(
                [dovecot, "-F", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        deadline = time.monotonic() + _START_TIMEOUT
        waiting_for = [self.port, self.lmtp_port] + ([self.sieve_port] if self._sieve else [])
        while waiting_for:
            if self._process.poll() is not None:
                raise DovecotError(
                    f"Dovecot exited during startup (status {self._process.returncode})"
                    + self._diagnostics()
                )
            if time.monotonic() > deadline:
                raise DovecotError("Dovecot did not answer within 15 s" + self._diagnostics())
            if " Fatal: " in _tail(self.log_path):
                raise DovecotError("Dovecot failed to start" + self._diagnostics())
            try:
                with socket.create_connection((self.host, waiting_for[0]), timeout=2) as sock:
                    greeting = sock.recv(200)
                if greeting.startswith((b"* OK", b"220", b'"IMPLEMENTATION"')):
                    waiting_for.pop(0)
                    continue
            except OSError:
                pass
            time.sleep(0.02)

    def _diagnostics(self) -> str:
        parts = []
        stderr = _tail(self.root / "dovecot.stderr")
        if stderr:
            parts.append("stderr:\n" + stderr)
        log = _tail(self.log_path)
        if log:
            parts.append(f"log ({self.log_path}):\n" + log)
        return ("\n" + "\n".join(parts)) if parts else ""

    def stop(self) -> None:
        """Stop the master and every process it started; raises if one would not go."""
        _running.discard(self)
        process, self._process = self._process, None
        try:
            if process is None:
                return
            if process.poll() is None:
                children = _child_pids(process.pid)
                process.send_signal(signal.SIGTERM)
                try:
                    _wait_for_master(process, children)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(_STOP_TIMEOUT)
                    raise DovecotError(
                        "Dovecot did not stop on SIGTERM; killed it" + self._diagnostics()
                    ) from None
                finally:
                    # Children notice the master is gone; make sure of it.
                    for pid in _wait_gone(children, _STOP_TIMEOUT):
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
            elif process.returncode not in (0, -signal.SIGTERM):
                raise DovecotError(
                    f"Dovecot had exited with status {process.returncode}" + self._diagnostics()
                )
        finally:
            if self._short_base_dir is not None:
                shutil.rmtree(self._short_base_dir, ignore_errors=True)
                self._short_base_dir = None

    def _kill(self) -> None:
        """Stop after a failed launch without raising."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            children = _child_pids(process.pid)
            process.kill()
            process.wait(_STOP_TIMEOUT)
            for pid in _wait_gone(children, 2.0):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def _discard(self) -> None:
        """Clean up after a start that failed for good."""
        self._kill()
        if self._short_base_dir is not None:
            shutil.rmtree(self._short_base_dir, ignore_errors=True)
            self._short_base_dir = None

    def __enter__(self) -> DovecotServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # ---------------------------------------------------------------------------- users

    def add_user(self, username: str, password: str, *, quota_rules: Sequence[str] = ()) -> None:
        """Add a login to the running server; it works at once, without a reload.

        Each user has a passwd-file of its own (``users/NAME``, one line).  Dovecot 2.3
        checks a passwd-file for changes at most once a second (it remembers the second of
        its last check), so a user appended to a shared file right after another login could
        be refused for up to a second; a new file is read at its first lookup.

        ``quota_rules`` (e.g. ``"*:storage=1M"``, ``"*:messages=5"``) replace the server's
        ``quota_rule`` for this user (userdb extra fields ``quota_rule``, ``quota_rule2``...).
        """
        if not _USERNAME_RE.fullmatch(username):
            raise ValueError(f"username {username!r}: use letters, digits and . _ @ + -")
        if not password or any(c in password for c in ":\n\r\0") or password != password.strip():
            raise ValueError("password: must be non-empty, without ':', newlines or edge spaces")
        home = self.home(username)
        path = self.passwd_path / username
        with self._lock:
            if path.exists():
                raise ValueError(f"user {username!r} exists already")
            home.mkdir(exist_ok=True)
            if os.geteuid() == 0:
                os.chown(home, self.mail_uid, self.mail_gid)
            temporary = path.with_name(f".{username}.new")
            extra = " ".join(
                f"userdb_quota_rule{n if n > 1 else ''}={rule}"
                for n, rule in enumerate(quota_rules, 1)
            )
            line = f"{username}:{{PLAIN}}{password}::::{home}" + (f"::{extra}" if extra else "")
            temporary.write_text(line + "\n")
            self._protect_passwd(temporary)
            temporary.replace(path)

    def remove_user(self, username: str) -> None:
        """Remove a login (its mail stays on disk); Dovecot may accept it for another second."""
        with self._lock:
            (self.passwd_path / username).unlink(missing_ok=True)

    def users(self) -> list[str]:
        return sorted(p.name for p in self.passwd_path.iterdir() if not p.name.startswith("."))

    @staticmethod
    def _protect_passwd(path: Path) -> None:
        """Readable only by the auth process: as root it runs as ``dovecot``."""
        path.chmod(0o700 if path.is_dir() else 0o600)
        if os.geteuid() == 0:
            auth_user = _existing_user("dovecot")
            os.chown(path, auth_user.pw_uid, auth_user.pw_gid)

    def home(self, username: str) -> Path:
        return self.root / "home" / username

    def maildir(self, username: str) -> Path:
        """The user's Maildir root (INBOX); folder ``a/b`` is the directory ``a/b`` in it."""
        return self.home(username) / "Maildir"

    # ---------------------------------------------------------------------------- tools

    def doveadm(self, *args: str) -> str:
        """Run ``doveadm ARGS`` against this instance and return its output.

        Example: ``server.doveadm("mailbox", "status", "-u", "alice", "messages", "INBOX")``.
        """
        command = [_find_tool("doveadm"), "-c", str(self.config_path), *args]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise DovecotError(
                f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}"
            )
        return result.stdout

    def connect(self, username: str, password: str) -> imaplib.IMAP4:
        """A logged-in stdlib IMAP connection."""
        client = imaplib.IMAP4(self.host, self.port, timeout=30)
        try:
            client.login(username, password)
        except BaseException:
            with contextlib.suppress(Exception):
                client.shutdown()
            raise
        return client

    def _post_login_capabilities(self, username: str, password: str) -> tuple[str, ...]:
        client = self.connect(username, password)
        try:
            typ, data = client.capability()
            if typ != "OK" or not data or not isinstance(data[0], bytes):
                raise DovecotError(f"CAPABILITY failed: {typ} {data!r}")
            return tuple(data[0].decode().split())
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    @contextlib.contextmanager
    def _probe_user(self) -> Iterator[tuple[str, str]]:
        username, password = f"capability-probe-{secrets.token_hex(6)}", secrets.token_hex(12)
        self.add_user(username, password)
        try:
            yield username, password
        finally:
            self.remove_user(username)
            shutil.rmtree(self.home(username), ignore_errors=True)

    def _probe_capabilities(self) -> tuple[str, ...]:
        with self._probe_user() as (username, password):
            return self._post_login_capabilities(username, password)

    def _hide_capabilities(
        self, hidden: set[str], *, extra_conf: str, notify: bool, quota: bool
    ) -> None:
        """Advertise the current post-login list minus ``hidden``.

        Dovecot 2.3 has no syntax to remove one capability: ``imap_capability`` either
        replaces the whole list or, with a leading ``+``, adds to it.  So the full list just
        observed, minus the hidden ones, becomes ``imap_capability`` (imap-login's greeting
        uses it too), and the config is reloaded.  This only changes what is advertised: the
        server still accepts the hidden extensions' commands and still sends their response
        codes (APPENDUID without UIDPLUS, for instance).
        """
        kept = [c for c in self.capabilities if c.upper() not in hidden]
        self._write_config(
            extra_conf=extra_conf, notify=notify, quota=quota, imap_capability=" ".join(kept)
        )
        self.doveadm("reload")
        deadline = time.monotonic() + _START_TIMEOUT
        with self._probe_user() as (username, password):
            while True:
                advertised = self._post_login_capabilities(username, password)
                if not hidden & {c.upper() for c in advertised}:
                    break
                if time.monotonic() > deadline:
                    raise DovecotError(
                        f"capabilities still advertised after reload: {sorted(hidden)}"
                        + self._diagnostics()
                    )
                time.sleep(0.05)
        self.capabilities = advertised

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)


# --------------------------------------------------------------------------------------------
# The config


def _render_config(
    server: DovecotServer,
    *,
    extra_conf: str,
    notify: bool,
    quota: bool,
    imap_capability: str,
) -> str:
    as_root = os.geteuid() == 0
    identity = _root_identity(server) if as_root else _unprivileged_identity()
    plugins = (("quota", quota), ("notify", notify), ("acl", server.acl))
    mail_plugins = " ".join(p for p, on in plugins if on)
    imap_plugins = " ".join(p for p, on in (("imap_quota", quota), ("imap_acl", server.acl)) if on)
    folders = "\n".join(
        f"  mailbox {name} {{\n    auto = subscribe\n    special_use = {attr}\n  }}"
        for name, attr in SPECIAL_USE_FOLDERS
    )
    passwd = f"{server.passwd_path}/%u"  # passwd-file args take no quotes
    login_chroot = "" if as_root else "  chroot =\n"
    capability_line = f"  imap_capability = {imap_capability}\n" if imap_capability else ""
    if server.tls is None:
        ssl = "ssl = no"
        imaps_listener = "port = 0"
    else:  # "<path": Dovecot reads the files as root when it loads the config
        ssl = f"ssl = yes\nssl_cert = <{server.tls[0]}\nssl_key = <{server.tls[1]}"
        imaps_listener = f"address = 127.0.0.1\n    port = {server.tls_port}"
    quota_plugin = (
        "plugin {\n"
        "  quota = count:User quota\n"
        "  quota_vsizes = yes\n"
        "  quota_rule = *:storage=10G\n"
        "}\n"
        if quota
        else ""
    )
    return f"""\
# Generated by devservers.dovecot for a throw-away test instance.
base_dir = {_quote(str(server.base_dir))}
state_dir = {_quote(str(server.root / "state"))}
instance_name = imapjmap-{secrets.token_hex(5)}
protocols = imap lmtp
listen = 127.0.0.1
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_username_format = %u
auth_failure_delay = 0
log_path = {_quote(str(server.log_path))}
first_valid_uid = 1
first_valid_gid = 1
{identity}
mail_location = maildir:~/Maildir:LAYOUT=fs
mailbox_list_index = yes
mail_fsync = never
mail_max_userip_connections = 200
default_vsz_limit = 1G
default_process_limit = 500
default_client_limit = 1000
postmaster_address = postmaster@localhost
mail_plugins = $mail_plugins {mail_plugins}

passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {passwd}
}}

namespace inbox {{
  inbox = yes
  separator = /
{folders}
}}

protocol imap {{
  mail_plugins = $mail_plugins {imap_plugins}
{capability_line}}}

{quota_plugin}
{_shared_namespace(server) if server.acl else ""}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {server.port}
  }}
  inet_listener imaps {{
    {imaps_listener}
  }}
{login_chroot}}}

service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {server.lmtp_port}
  }}
}}

# No growing delay for logins after a failed one from the same IP (tests fail logins on
# purpose; a following login would wait up to 15 s).
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
{login_chroot}}}
{"" if as_root else _UNPRIVILEGED_SERVICES}
{_sieve_config(server) if server._sieve else ""}
{extra_conf}
"""


def _shared_namespace(server: DovecotServer) -> str:
    """Other users' shared folders under ``shared/OWNER/`` (Dovecot's wiki recipe), their
    ACLs in files beside the mail, and the dictionary that lists who shares with whom."""
    shared = server.root / "home" / ".shared-mailboxes.db"  # written by the mail processes
    return f"""\
namespace shared {{
  type = shared
  separator = /
  prefix = shared/%%u/
  location = maildir:%%h/Maildir:LAYOUT=fs:INDEXPVT=~/Maildir/shared/%%u
  subscriptions = no
  list = children
}}
plugin {{
  acl = vfile::cache_secs=0
  acl_shared_dict = file:{shared}
}}
# the sharee's mail process looks the owner up (their home) in the userdb; passwd-file
# entries carry no uid, which the auth service requires of a lookup of another user
service auth {{
  unix_listener auth-userdb {{
    mode = 0777
  }}
}}
"""


def _sieve_config(server: DovecotServer) -> str:
    """Pigeonhole: ManageSieve on its own port, Sieve in LMTP.  Tests deliver as the login
    name, which is no address in the message's To:, so vacation does not insist on one."""
    login_chroot = "" if os.geteuid() == 0 else "  chroot =\n"
    return f"""\
protocols = imap lmtp sieve
protocol lmtp {{
  mail_plugins = $mail_plugins sieve
}}
plugin {{
  sieve = file:~/sieve;active=~/.dovecot.sieve
  sieve_vacation_dont_check_recipient = yes
}}
service managesieve-login {{
  inet_listener sieve {{
    address = 127.0.0.1
    port = {server.sieve_port}
  }}
{login_chroot}}}
"""


_UNPRIVILEGED_SERVICES = """\
service auth {
  chroot =
}
service auth-worker {
  user = $default_internal_user
}
"""


def _existing_user(name: str) -> pwd.struct_passwd:
    """The account ``name`` (as the Debian package creates it), else ``nobody``."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return pwd.getpwnam("nobody")


def _root_identity(server: DovecotServer) -> str:
    return (
        f"mail_uid = {server.mail_uid}\n"
        f"mail_gid = {server.mail_gid}\n"
        f"default_internal_user = {_existing_user('dovecot').pw_name}\n"
        f"default_login_user = {_existing_user('dovenull').pw_name}"
    )


def _group_exists(gid: int) -> bool:
    try:
        grp.getgrgid(gid)
    except KeyError:
        return False
    return True


def _unprivileged_identity() -> str:
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name if _group_exists(os.getgid()) else user
    return (
        f"default_internal_user = {user}\n"
        f"default_internal_group = {group}\n"
        f"default_login_user = {user}"
    )
