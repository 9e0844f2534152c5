"""A throw-away Cyrus IMAP 3.6 instance on loopback, for tests and benchmarks.

Debian's ``cyrus-imapd`` declares ``Conflicts: imap-server``, which ``dovecot-imapd`` provides,
so apt will not install both.  :func:`ensure_cyrus_available` therefore never installs the
Cyrus packages: it ``apt-get download``\\ s them and unpacks them with ``dpkg-deb -x`` into a
private prefix in the user's cache directory (no maintainer scripts run, nothing lands in
``/usr``), then apt-installs only the shared libraries those binaries link and that are
missing (found with ``ldd``), plus ``sasl2-bin`` for ``saslpasswd2``.  The binaries run with
``LD_LIBRARY_PATH`` pointing at the prefix's own ``libcyrus*``.

:meth:`CyrusServer.start` writes ``imapd.conf`` and ``cyrus.conf`` (absolute paths only) under
a private directory and runs ``master`` in the foreground on a free 127.0.0.1 port:

* users live in a private sasldb (``sasl_pwcheck_method: auxprop``), written with
  ``saslpasswd2``; a user's INBOX and the special-use folders are created at the first login
  (``autocreate_*``, ``xlist-*``) — Cyrus reports those attributes in lower case
  (``\\archive``), as real installations do;
* ``conversations: yes`` gives THREADID (RFC 8474) and XCONVERSATIONS;
* ``idled`` runs as a DAEMON so that IMAP IDLE reports changes at once (without it, Cyrus
  polls every ``imapidlepoll`` seconds);
* ``timsieved`` serves ManageSieve and ``lmtpd`` runs the active Sieve script at delivery;
  what Sieve sends (vacation replies, redirects) goes to the SMTP server given to
  :meth:`CyrusServer.start`, if any.  Cyrus's vacation answers only mail to the user's
  address, which it takes to be ``userid@internal`` (``defaultdomain``), or to one of the
  script's ``:addresses``;
* Cyrus logs only through syslog(3), to ``/dev/log``.  Run as root, the master runs in a
  private mount namespace (``unshare``) whose ``/dev/log`` is a socket of the instance's
  own, read by a thread: :meth:`CyrusServer.log` returns what every Cyrus process said
  (lmtpd's Sieve actions, refused logins, database errors), and a failed start shows it.
  Elsewhere (an ordinary user, no ``unshare``) the log is empty; the master's own stderr
  is kept in ``master.stderr`` either way.

Running as root, every Cyrus process runs as ``nobody`` (``cyrus_user``) and the instance's
directory is handed to that user; as an ordinary user, everything runs as that user.  What
the proxy relies on about Cyrus is in docs/design.md, "Servers".

Known Cyrus 3.6.1 defect (seen with this very package): ``STATUS box (MAILBOXID MESSAGES)``
— MAILBOXID together with any item that opens the mailbox's index (MESSAGES, UIDNEXT, UNSEEN,
HIGHESTMODSEQ, SIZE), also inside ``LIST ... RETURN (STATUS ...)`` — answers garbage bytes
instead of the id; MAILBOXID alone (or with UIDVALIDITY) is right.  The proxy asks for
MAILBOXID on its own (``imapjmap.imap.session``).
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import fcntl
import functools
import imaplib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devservers._host import free_port as _free_port
from devservers._host import make_searchable as _make_searchable
from devservers._host import services_not_started as _services_not_started
from devservers._host import tail as _tail

__all__ = [
    "CYRUS_LIBRARY_PACKAGES",
    "CYRUS_PACKAGES",
    "SPECIAL_USE_FOLDERS",
    "CyrusError",
    "CyrusServer",
    "cyrus_prefix",
    "ensure_cyrus_available",
]

#: Downloaded and unpacked, never installed (they conflict with Dovecot in apt).
CYRUS_PACKAGES = ("cyrus-common", "cyrus-imapd")
#: Installed with apt when missing: what the binaries we run link (``ldd``), and saslpasswd2.
#: A soname → package table, so that a missing library names the package to install.
CYRUS_LIBRARIES: dict[str, str] = {
    "libical.so.3": "libical3",
    "libicalss.so.3": "libical3",
    "libicalvcal.so.3": "libical3",
    "libpcreposix.so.3": "libpcre3",
    "libpcre.so.3": "libpcre3",
    "libxapian.so.30": "libxapian30",
    "libjansson.so.4": "libjansson4",
    "libsasl2.so.2": "libsasl2-2",
    "libwrap.so.0": "libwrap0",
    "libicuuc.so.72": "libicu72",
    "libicui18n.so.72": "libicu72",
    "libicudata.so.72": "libicu72",
    "libxml2.so.2": "libxml2",
    "libpq.so.5": "libpq5",
    "libsqlite3.so.0": "libsqlite3-0",
    "libldap-2.5.so.0": "libldap-2.5-0",
    "liblber-2.5.so.0": "libldap-2.5-0",
}
CYRUS_LIBRARY_PACKAGES = ("libical3", "libpcre3", "libxapian30", "sasl2-bin")
#: The binaries an instance runs (``ldd`` is checked on these and on libcyrus*).
_BINARIES = ("master", "imapd", "idled", "ctl_cyrusdb")

#: Folders every user gets at the first login, with their RFC 6154 attribute.
SPECIAL_USE_FOLDERS: tuple[tuple[str, str], ...] = (
    ("Drafts", "\\Drafts"),
    ("Sent", "\\Sent"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
)

_REALM = "imapjmap-cyrus"  # servername, and the realm of every sasldb entry
_LOCK_NAME = ".imapjmap-cyrus.lock"
_START_TIMEOUT = 20.0
_STOP_TIMEOUT = 10.0
_PORT_ATTEMPTS = 5
_MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with the NUL
_ADMIN = "cyrus-admin"  # the instance's administrator (``admins``), for SETQUOTA
_USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+-]{0,99}")
_SYSLOG_LINES = 20_000  # kept in memory, the oldest dropped first
#: Run by ``unshare --mount`` before the master: the namespace's /dev/log becomes the
#: instance's socket ($1).  Where the host has no /dev/log there is nothing to bind onto,
#: so /dev is overlaid with a directory holding an empty ``log`` (an overlay's own socket
#: inode would refuse connections, hence the bind on top); /dev's submounts (shm, pts) are
#: bound back.  Any failure leaves Cyrus logging nowhere, as without this.
_SYSLOG_NAMESPACE_SCRIPT = r"""
sock=$1 dir=$2
shift 2
{
  if [ ! -e /dev/log ] && [ ! -L /dev/log ]; then
    mkdir -p "$dir/upper" "$dir/work" "$dir/keep" && : > "$dir/upper/log" &&
    mount --rbind /dev "$dir/keep" &&
    mount -t overlay overlay -o "lowerdir=/dev,upperdir=$dir/upper,workdir=$dir/work" /dev &&
    for sub in shm pts mqueue; do
      if [ -d "$dir/keep/$sub" ]; then mount --rbind "$dir/keep/$sub" "/dev/$sub" || true; fi
    done
  fi
  mount --bind "$sock" /dev/log
} >"$dir/namespace.log" 2>&1
exec "$@"
"""


class CyrusError(RuntimeError):
    """Cyrus could not be made available, started, used or stopped."""


# --------------------------------------------------------------------------------------------
# Making the binaries available


def cyrus_prefix() -> Path:
    """Where the Cyrus packages are unpacked: outside any checkout, shared by every run.

    ``$IMAPJMAP_CYRUS_PREFIX`` if set; as root ``/var/cache/imapjmap/cyrus`` (the Cyrus
    processes run as ``nobody``, who cannot reach into root's 0700 home); else
    ``${XDG_CACHE_HOME:-~/.cache}/imapjmap/cyrus``.
    """
    explicit = os.environ.get("IMAPJMAP_CYRUS_PREFIX")
    if explicit:
        return Path(explicit).resolve()
    if os.geteuid() == 0:
        return Path("/var/cache/imapjmap/cyrus")
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).resolve() / "imapjmap" / "cyrus"


def _bin_dir(prefix: Path) -> Path:
    return prefix / "usr" / "lib" / "cyrus" / "bin"


def _lib_dirs(prefix: Path) -> list[Path]:
    return sorted(p.parent for p in (prefix / "usr" / "lib").glob("*/libcyrus_min.so.0"))


def _library_path(prefix: Path) -> str:
    dirs = [str(d) for d in _lib_dirs(prefix)]
    inherited = os.environ.get("LD_LIBRARY_PATH")
    return ":".join([*dirs, inherited] if inherited else dirs)


def _run(
    args: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    what: str = "",
) -> str:
    result = subprocess.run(
        list(args), env=env, cwd=cwd, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()[-20:]
        raise CyrusError(
            f"{what or ' '.join(args)} failed ({result.returncode}):\n" + "\n".join(output)
        )
    return result.stdout


def _missing_sonames(prefix: Path) -> set[str]:
    """Shared libraries that the binaries we run (and libcyrus*) cannot find."""
    env = {**os.environ, "LD_LIBRARY_PATH": _library_path(prefix)}
    targets = [_bin_dir(prefix) / name for name in _BINARIES]
    for directory in _lib_dirs(prefix):
        targets += sorted(directory.glob("libcyrus*.so.0"))
    missing: set[str] = set()
    for target in targets:
        output = _run(["ldd", str(target)], env=env, what=f"ldd {target}")
        for line in output.splitlines():
            name, _, where = line.strip().partition(" => ")
            if where.strip() == "not found":
                missing.add(name.strip())
    return missing


def _missing_packages(packages: Sequence[str]) -> list[str]:
    missing = []
    for package in packages:
        result = subprocess.run(
            ["dpkg-query", "-W", "-f=${db:Status-Status}", package],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0 or result.stdout.strip() != "installed":
            missing.append(package)
    return missing


def _apt_env() -> dict[str, str]:
    return {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


def _apt_install(packages: Sequence[str]) -> None:
    if os.geteuid() != 0:
        raise CyrusError(
            "Cyrus needs these packages and installing them needs root; run as root or: "
            "sudo apt-get install -y --no-install-recommends " + " ".join(packages)
        )
    env = _apt_env()
    known = (
        subprocess.run(
            ["apt-cache", "show", *packages], capture_output=True, check=False
        ).returncode
        == 0
    )
    with _services_not_started():
        if not known:
            _run(["apt-get", "update", "-q"], env=env)
        _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages], env=env)


def _download_and_unpack(prefix: Path) -> None:
    """``apt-get download`` the Cyrus packages and ``dpkg-deb -x`` them into ``prefix``."""
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise CyrusError(
                f"Cyrus is unpacked from Debian's packages, and {tool} is missing: "
                "a Debian-like system is needed (or set IMAPJMAP_CYRUS_PREFIX to a prefix "
                "holding usr/lib/cyrus/bin)"
            )
    with tempfile.TemporaryDirectory(prefix="imapjmap-cyrus-debs-") as tmp:
        downloads = Path(tmp)
        args = ["apt-get", "download", "-q"]
        if os.geteuid() == 0:
            # apt's _apt sandbox user cannot write into a root-owned temporary directory
            args += ["-o", "APT::Sandbox::User=root"]
        try:
            _run([*args, *CYRUS_PACKAGES], cwd=downloads)
        except CyrusError:
            if os.geteuid() != 0:
                raise
            # a fresh machine whose package lists are empty
            _run(["apt-get", "update", "-q"], env=_apt_env())
            _run([*args, *CYRUS_PACKAGES], cwd=downloads)
        staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=prefix.parent))
        staging.chmod(0o755)  # mkdtemp's 0700 would lock out the processes' user
        try:
            for deb in sorted(downloads.glob("*.deb")):
                _run(["dpkg-deb", "-x", str(deb), str(staging)])
            if not (_bin_dir(staging) / "master").exists():
                raise CyrusError(f"no usr/lib/cyrus/bin/master in {list(CYRUS_PACKAGES)}")
            if prefix.exists():
                shutil.rmtree(prefix)
            staging.rename(prefix)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def ensure_cyrus_available(prefix: Path | None = None) -> Path:
    """Make Cyrus runnable from ``prefix`` (default :func:`cyrus_prefix`) and return it.

    Downloads and unpacks the packages when the prefix has no ``master`` yet (~2 MB, a few
    seconds), then apt-installs the missing shared libraries and ``sasl2-bin`` (needs root
    when something is missing).  Safe to call from several processes at once.
    """
    prefix = (prefix or cyrus_prefix()).resolve()
    prefix.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    if os.geteuid() == 0:
        _make_searchable(prefix.parent)
    with (prefix.parent / _LOCK_NAME).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not all((_bin_dir(prefix) / name).exists() for name in _BINARIES):
            _download_and_unpack(prefix)
        if shutil.which("ldd") is None:
            raise CyrusError("ldd is missing: cannot check Cyrus's shared libraries")
        wanted: list[str] = []
        if shutil.which("dpkg-query") is not None:
            wanted = _missing_packages(CYRUS_LIBRARY_PACKAGES)
        missing = _missing_sonames(prefix)
        unknown = sorted(s for s in missing if s not in CYRUS_LIBRARIES)
        if unknown:
            raise CyrusError(f"Cyrus needs shared libraries of unknown packages: {unknown}")
        wanted += [CYRUS_LIBRARIES[s] for s in missing if CYRUS_LIBRARIES[s] not in wanted]
        if wanted:
            _apt_install(sorted(set(wanted)))
            still = _missing_sonames(prefix)
            if still:
                raise CyrusError(f"shared libraries still missing after apt-get: {sorted(still)}")
        if _saslpasswd2() is None:
            raise CyrusError("saslpasswd2 not found; install sasl2-bin")
    return prefix


def _saslpasswd2() -> str | None:
    found = shutil.which("saslpasswd2")
    if found:
        return found
    candidate = Path("/usr/sbin/saslpasswd2")
    return str(candidate) if os.access(candidate, os.X_OK) else None


# --------------------------------------------------------------------------------------------
# Helpers


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in (*dirnames, *filenames):
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


class _SyslogCatcher:
    """A datagram socket that takes syslog(3) messages (RFC 3164 framing) and keeps them."""

    def __init__(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self.path = path
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(path))
        path.chmod(0o666)  # the Cyrus processes run as another user
        self._socket.settimeout(0.2)
        self._lines: collections.deque[str] = collections.deque(maxlen=_SYSLOG_LINES)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._read, name="cyrus-syslog", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stopping.is_set():
            try:
                datagram = self._socket.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            # "<priority>Mmm dd hh:mm:ss ident[pid]: text": the priority is left out
            text = datagram.decode("utf-8", "replace").rstrip("\n\0")
            if text.startswith("<") and ">" in text[:6]:
                text = text[text.index(">") + 1 :]
            with self._lock:
                self._lines.append(text)

    def lines(self) -> list[str]:
        with self._lock:
            return list(self._lines)

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(2)
        self._socket.close()
        self.path.unlink(missing_ok=True)


@functools.cache
def _can_catch_syslog() -> bool:
    """Whether a private mount namespace can be made here: root, util-linux's ``unshare``,
    and a kernel or container that allows it (a container without CAP_SYS_ADMIN does not)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "true"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


_running: weakref.WeakSet[CyrusServer] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for server in list(_running):
        with contextlib.suppress(Exception):
            server.stop()


# --------------------------------------------------------------------------------------------
# The server


@dataclass(eq=False)
class CyrusServer:
    """A running private Cyrus.  Create it with :meth:`start`."""

    host: str
    port: int
    root: Path
    prefix: Path
    config_path: Path = field(default=Path())  # imapd.conf
    services_path: Path = field(default=Path())  # cyrus.conf
    sasldb_path: Path = field(default=Path())
    uid: int = 0  # the processes' user (cyrus_user)
    gid: int = 0
    capabilities: tuple[str, ...] = ()  # post-login CAPABILITY as advertised after start
    sieve_port: int = 0  # ManageSieve (timsieved)
    lmtp_port: int = 0  # LMTP delivery (lmtpd), which runs the user's active Sieve script
    smtp: tuple[str, int] | None = None  # the SMTP server Sieve's replies go to
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _users: set[str] = field(default_factory=set, repr=False)
    _admin_password: str = field(default="", repr=False)
    _syslog: _SyslogCatcher | None = field(default=None, repr=False)
    _syslog_kept: list[str] = field(default_factory=list, repr=False)  # once stopped

    # ---------------------------------------------------------------------------- lifecycle

    @classmethod
    def start(
        cls, root: Path, *, prefix: Path | None = None, smtp: tuple[str, int] | None = None
    ) -> CyrusServer:
        """Start a Cyrus whose config, databases and mail all live under ``root``.

        Calls :func:`ensure_cyrus_available` first (a no-op once everything is there).
        ManageSieve (timsieved) listens on :attr:`sieve_port` and LMTP (lmtpd) on
        :attr:`lmtp_port`; ``smtp`` (host, port) is the server the vacation replies and
        redirects of Sieve are sent to, without AUTH (``smtp_backend: host``).  Without it
        Cyrus would run ``sendmail -bs``, its default, and speak SMTP to that program.
        """
        prefix = ensure_cyrus_available(prefix)
        root = Path(root).resolve()
        if any(c.isspace() or c in '"\\' for c in str(root)):
            raise ValueError(f"{root}: Cyrus config paths cannot contain white space or quotes")
        if len(str(root / "conf" / "socket" / "idle.4194304")) > _MAX_SOCKET_PATH:
            raise ValueError(f"{root}: too long for the IDLE sockets Cyrus makes in it")
        root.mkdir(parents=True, exist_ok=True)
        server = cls(host="127.0.0.1", port=0, root=root, prefix=prefix, smtp=smtp)
        server._prepare()
        if _can_catch_syslog():
            server._syslog = _SyslogCatcher(root / "syslog.sock")
        last_error: CyrusError | None = None
        for _ in range(_PORT_ATTEMPTS):
            server.port, server.sieve_port, server.lmtp_port = (
                _free_port(),
                _free_port(),
                _free_port(),
            )
            server._write_config()
            try:
                server._launch()
                break
            except CyrusError as error:
                server._kill()
                last_error = error
        else:
            server._close_syslog()
            raise last_error or CyrusError("could not start Cyrus")
        _running.add(server)
        try:
            server.capabilities = server._probe_capabilities()
        except BaseException:
            server.stop()
            raise
        return server

    def _prepare(self) -> None:
        self.config_path = self.root / "imapd.conf"
        self.services_path = self.root / "cyrus.conf"
        self.sasldb_path = self.root / "sasldb2"
        # conf/socket: idled's socket and each IDLE-ing imapd's own (idle.PID) live there,
        # whatever ``idlesocket`` says, so the default place is used for both
        for name in ("conf", "conf/socket", "spool", "run", "sieve"):
            (self.root / name).mkdir(exist_ok=True)
        if os.geteuid() == 0:
            try:
                nobody = pwd.getpwnam("nobody")
                self.uid, self.gid = nobody.pw_uid, nobody.pw_gid
            except KeyError:
                self.uid = self.gid = 65534
            _make_searchable(self.root)
        else:
            self.uid, self.gid = os.getuid(), os.getgid()

    @property
    def user_name(self) -> str:
        try:
            return pwd.getpwuid(self.uid).pw_name
        except KeyError:
            return str(self.uid)

    def _write_config(self) -> None:
        self.config_path.write_text(_render_imapd_conf(self))
        self.services_path.write_text(_render_cyrus_conf(self))
        if os.geteuid() == 0:
            _chown_tree(self.root, self.uid, self.gid)

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "LD_LIBRARY_PATH": _library_path(self.prefix),
            "CYRUS_USER": self.user_name,
            "CYRUS_SYSLOG_PREFIX": "imapjmap-test",
        }

    def _command(self) -> list[str]:
        master = [
            str(_bin_dir(self.prefix) / "master"),
            "-C",
            str(self.config_path),
            "-M",
            str(self.services_path),
            "-p",
            str(self.root / "run" / "master.pid"),
        ]
        if self._syslog is None:
            return master
        namespace_dir = self.root / "syslog-namespace"
        namespace_dir.mkdir(exist_ok=True)
        # unshare and sh exec the master: it keeps the pid and process group Popen made
        return [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            _SYSLOG_NAMESPACE_SCRIPT,
            "cyrus-syslog",
            str(self._syslog.path),
            str(namespace_dir),
            *master,
        ]

    def log(self) -> list[str]:
        """What the Cyrus processes sent to syslog so far, oldest first (``Mmm dd hh:mm:ss
        ident[pid]: text``), also once stopped; empty when the log cannot be caught (not
        root)."""
        return self._syslog.lines() if self._syslog is not None else list(self._syslog_kept)

    def _close_syslog(self) -> None:
        catcher, self._syslog = self._syslog, None
        if catcher is not None:
            catcher.close()
            self._syslog_kept = catcher.lines()

    def _launch(self) -> None:
        stderr_path = self.root / "master.stderr"
        with stderr_path.open("wb") as stderr:
            # master stays in the foreground (no -d), in its own process group
            self._process = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                env=self._env(),
                start_new_session=True,
            )
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            if self._process.poll() is not None:
                raise CyrusError(
                    f"Cyrus master exited during startup (status {self._process.returncode})"
                    + self._diagnostics()
                )
            if time.monotonic() > deadline:
                raise CyrusError("Cyrus did not answer within 20 s" + self._diagnostics())
            try:
                with socket.create_connection((self.host, self.port), timeout=2) as sock:
                    greeting = sock.recv(300)
                if greeting.startswith(b"* OK") and b"Cyrus" in greeting:
                    return
            except OSError:
                pass
            time.sleep(0.02)

    def _diagnostics(self) -> str:
        stderr = _tail(self.root / "master.stderr")
        text = f"\nmaster stderr:\n{stderr}" if stderr else ""
        logged = self.log()[-40:]
        if logged:
            text += "\nsyslog:\n" + "\n".join(logged)
        return text or " (Cyrus logs only to syslog, which was not caught)"

    def stop(self) -> None:
        """Stop the master and every process it started; raises if one would not go."""
        _running.discard(self)
        process, self._process = self._process, None
        if process is None:
            self._close_syslog()
            return
        try:
            self._stop(process)
        finally:
            self._close_syslog()

    def _stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(_STOP_TIMEOUT)
                raise CyrusError("Cyrus did not stop on SIGTERM; killed it") from None
            finally:
                self._kill_group(process.pid)
        elif process.returncode not in (0, -signal.SIGTERM, 75):
            self._kill_group(process.pid)
            raise CyrusError(
                f"Cyrus had exited with status {process.returncode}" + self._diagnostics()
            )

    @staticmethod
    def _kill_group(pgid: int) -> None:
        """Children (imapd, idled) that outlived the master: they are in its group."""
        deadline = time.monotonic() + _STOP_TIMEOUT
        sig = signal.SIGTERM
        while True:
            if time.monotonic() > deadline:
                sig = signal.SIGKILL
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                return
            time.sleep(0.05)

    def _kill(self) -> None:
        """Stop after a failed launch without raising."""
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.kill()
                process.wait(_STOP_TIMEOUT)
            self._kill_group(process.pid)

    def __enter__(self) -> CyrusServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # ---------------------------------------------------------------------------- users

    def add_user(self, username: str, password: str) -> None:
        """Add a login to the running server (sasldb); its mailboxes appear at first login."""
        if not _USERNAME_RE.fullmatch(username):
            raise ValueError(f"username {username!r}: use letters, digits and _ + -")
        if not password or any(c in password for c in "\n\r\0") or password != password.strip():
            raise ValueError("password: must be non-empty, without newlines or edge spaces")
        saslpasswd2 = _saslpasswd2()
        if saslpasswd2 is None:
            raise CyrusError("saslpasswd2 not found; install sasl2-bin")
        with self._lock:
            if username in self._users:
                raise ValueError(f"user {username!r} exists already")
            result = subprocess.run(
                [saslpasswd2, "-p", "-c", "-f", str(self.sasldb_path), "-u", _REALM, username],
                input=password.encode(),
                capture_output=True,
                check=False,
            )
            if result.returncode != 0:
                raise CyrusError(f"saslpasswd2 failed: {result.stderr.decode(errors='replace')}")
            if os.geteuid() == 0:
                os.chown(self.sasldb_path, self.uid, self.gid)
            self._users.add(username)

    def users(self) -> list[str]:
        return sorted(self._users - {_ADMIN})

    def set_quota(self, username: str, **limits: int) -> None:
        """Give ``username`` a quota root with these RFC 9208 limits (``STORAGE`` in KiB,
        ``MESSAGE``...), as the instance's administrator; the user must have logged in once
        (its INBOX is made at the first login)."""
        if not self._admin_password:
            password = "admin-" + os.urandom(8).hex()
            self.add_user(_ADMIN, password)
            self._admin_password = password
        client = self.connect(_ADMIN, self._admin_password)
        try:
            resources = " ".join(f"{name} {limit}" for name, limit in limits.items())
            typ, data = client._simple_command("SETQUOTA", f'"user/{username}"', f"({resources})")
            if typ != "OK":
                raise CyrusError(f"SETQUOTA for {username!r} failed: {typ} {data!r}")
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    def tool(self, name: str, *args: str) -> str:
        """Run one of Cyrus's command-line tools (``mbpath``, ``reconstruct`` …) on this
        instance, as its processes' user; returns the standard output."""
        command = [str(_bin_dir(self.prefix) / name), "-C", str(self.config_path), *args]
        result = subprocess.run(
            command,
            env=self._env(),
            capture_output=True,
            text=True,
            check=False,
            user=self.uid if os.geteuid() == 0 else None,
            group=self.gid if os.geteuid() == 0 else None,
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip().splitlines()[-20:]
            raise CyrusError(f"{name} failed ({result.returncode}):\n" + "\n".join(output))
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

    def _probe_capabilities(self) -> tuple[str, ...]:
        username = "capability-probe"
        password = "probe-" + os.urandom(6).hex()
        self.add_user(username, password)
        client = self.connect(username, password)
        try:
            typ, data = client.capability()
            if typ != "OK" or not data or not isinstance(data[0], bytes):
                raise CyrusError(f"CAPABILITY failed: {typ} {data!r}")
            return tuple(data[0].decode().split())
        finally:
            with contextlib.suppress(Exception):
                client.logout()


# --------------------------------------------------------------------------------------------
# The config


def _render_imapd_conf(server: CyrusServer) -> str:
    root = server.root
    folders = " | ".join(name for name, _ in SPECIAL_USE_FOLDERS)
    xlist = "\n".join(
        f"xlist-{attr.lstrip(chr(92)).lower()}: {name}" for name, attr in SPECIAL_USE_FOLDERS
    )
    return f"""\
# Generated by devservers.cyrus for a throw-away test instance.
servername: {_REALM}
configdirectory: {root / "conf"}
defaultpartition: default
partition-default: {root / "spool"}
proc_path: {root / "run" / "proc"}
mboxname_lockpath: {root / "run" / "lock"}
sievedir: {root / "sieve"}
cyrus_user: {server.user_name}
# The defaults since Cyrus 3.0, spelled out: folders beside INBOX, "/" as the separator.
altnamespace: yes
unixhierarchysep: yes
allowplaintext: yes
sasl_pwcheck_method: auxprop
sasl_auxprop_plugin: sasldb
sasl_sasldb_path: {server.sasldb_path}
sasl_mech_list: PLAIN LOGIN
# No pause after a failed login (tests fail logins on purpose; the default is 3 s).
failedloginpause: 0
# INBOX and the special-use folders are created (and subscribed) at the first login.
autocreate_quota: 0
admins: {_ADMIN}
autocreate_inbox_folders: {folders}
autocreate_subscribe_folders: {folders}
{xlist}
# THREADID (RFC 8474) needs the conversations database.
conversations: yes
conversations_db: twoskip
{_render_smtp(server.smtp)}
"""


def _render_smtp(smtp: tuple[str, int] | None) -> str:
    """Where Sieve sends (vacation, redirect): Cyrus's own SMTP client to ``smtp``."""
    if smtp is None:
        return ""
    host, port = smtp
    return f"smtp_backend: host\nsmtp_host: {host}:{port}/noauth"


def _render_cyrus_conf(server: CyrusServer) -> str:
    bin_dir = _bin_dir(server.prefix)
    conf = server.config_path
    return f"""\
# Generated by devservers.cyrus for a throw-away test instance.
START {{
  recover cmd="{bin_dir / "ctl_cyrusdb"} -C {conf} -r"
}}
SERVICES {{
  imap cmd="{bin_dir / "imapd"} -C {conf}" listen="127.0.0.1:{server.port}" prefork=0 maxchild=500
  sieve cmd="{bin_dir / "timsieved"} -C {conf}" listen="127.0.0.1:{server.sieve_port}" prefork=0
  lmtp cmd="{bin_dir / "lmtpd"} -C {conf} -a" listen="127.0.0.1:{server.lmtp_port}" prefork=0
}}
EVENTS {{
}}
DAEMON {{
  idled cmd="{bin_dir / "idled"} -C {conf}"
}}
"""


def main() -> int:
    """``python -m devservers.cyrus``: make Cyrus available (scripts/lib.sh calls this)."""
    try:
        prefix = ensure_cyrus_available()
    except CyrusError as error:
        print(f"devservers.cyrus: {error}", file=sys.stderr, flush=True)
        return 1
    print(f"Cyrus is available in {prefix}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
