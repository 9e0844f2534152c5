"""``imapjmap demo``: Dovecot with sample mail and an SMTP sink, behind the proxy.

Everything runs on loopback from a temporary directory (or ``workdir``) and is stopped when
the proxy stops (Ctrl-C).  Needs Dovecot (installed here when missing and running as root).
"""

from __future__ import annotations

import contextlib
import importlib
import ipaddress
import secrets
import signal
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from devservers.dovecot import DovecotError, DovecotServer, ensure_dovecot_installed
from devservers.samplemail import OWNER, generate, seed_maildir
from imapjmap.config import (
    CacheConfig,
    Config,
    IdentityConfig,
    ImapConfig,
    ServerConfig,
    SmtpConfig,
    SubmissionConfig,
    parse_config,
    to_toml,
)
from imapjmap.errors import ConfigError
from imapjmap.logsetup import setup_logging

__all__ = ["DEMO_USER", "run_demo"]

DEMO_USER = "demo"
DEMO_PASSWORD = "demo-password"  # only when the proxy listens on loopback
SAMPLE_MESSAGES = 300


def _say(text: str) -> None:
    print(text, flush=True)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _base_url(listen: str) -> str:
    host, _, port = listen.rpartition(":")
    bare = host.strip("[]")
    if bare in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


def demo_submission() -> SubmissionConfig:
    """The demo user sends as the owner of the sample mail: the login "demo" is no address,
    so without this identity it would have none, and every submission would be refused."""
    name, address = OWNER
    return SubmissionConfig(identities=(IdentityConfig(DEMO_USER, address, name),))


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def run_demo(
    *,
    listen: str = "127.0.0.1:8080",
    workdir: Path | None = None,
    config: Path | None = None,
    log_file: str | None = None,
) -> int:
    """Start Dovecot (user ``demo``, ~300 messages) and an SMTP sink; serve the proxy.

    ``config``: a TOML file whose keys are laid over the demo's own configuration (say
    ``[server] log_format = "json"``, or limits to try); the demo's servers stay.
    ``log_file``: the proxy's log goes there too, and stays after the demo stops.

    Blocks until SIGINT or SIGTERM, then stops everything; returns the exit status.
    """
    overlay: dict[str, Any] = {}
    if config is not None:
        try:
            overlay = tomllib.loads(config.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            print(f"imapjmap demo: config error: {config}: {exc}", file=sys.stderr)
            return 2
    previous = signal.signal(signal.SIGTERM, _terminate)  # clean up if stopped while starting
    try:
        with contextlib.ExitStack() as stack:
            return _run(stack, listen, workdir, overlay, log_file)
    except KeyboardInterrupt:
        return 0
    except DovecotError as error:
        print(f"imapjmap demo: {error}", file=sys.stderr)
        return 1
    except ConfigError as error:
        print(f"imapjmap demo: config error: {config}: {error}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)


def merged(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """``overlay`` laid over ``base``: tables merged key by key, any other value replaced."""
    result = dict(base)
    for key, value in overlay.items():
        below = result.get(key)
        if isinstance(value, Mapping) and isinstance(below, Mapping):
            result[key] = merged(below, value)
        else:
            result[key] = value
    return result


def _run(
    stack: contextlib.ExitStack,
    listen: str,
    workdir: Path | None,
    overlay: Mapping[str, Any],
    log_file: str | None,
) -> int:
    host = ServerConfig(listen=listen).host
    if workdir is None:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="imapjmap-demo-")))
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    password = DEMO_PASSWORD if _is_loopback(host) else secrets.token_urlsafe(12)

    ensure_dovecot_installed()
    started = time.monotonic()
    dovecot = DovecotServer.start(workdir / "dovecot")
    stack.callback(dovecot.stop)
    if DEMO_USER in dovecot.users():
        dovecot.remove_user(DEMO_USER)  # a workdir from an earlier run: keep its mail
    dovecot.add_user(DEMO_USER, password)
    counts = dovecot.doveadm("mailbox", "status", "-u", DEMO_USER, "messages", "INBOX")
    if counts.strip().endswith("messages=0"):
        seed_maildir(dovecot, DEMO_USER, generate(SAMPLE_MESSAGES))

    smtp_config = SmtpConfig(host="127.0.0.1", port=587, security="none")
    sink_note = "no SMTP sink (aiosmtpd is not installed): sending mail will fail"
    try:
        from devservers.smtp import SmtpSink
    except ImportError:
        pass
    else:
        address = OWNER[1]
        sink = SmtpSink.start(
            users={DEMO_USER: password},
            dovecot=dovecot,
            deliver_to={address: DEMO_USER, DEMO_USER: DEMO_USER, "demo@localhost": DEMO_USER},
        )
        stack.callback(sink.stop)
        smtp_config = SmtpConfig(host=sink.host, port=sink.port, security="none", auth="user")
        sink_note = f"SMTP sink on {sink.host}:{sink.port}; mail to {address} lands in the INBOX"

    base_url = _base_url(listen)
    config = Config(
        imap=ImapConfig(host=dovecot.host, port=dovecot.port, security="none"),
        server=ServerConfig(listen=listen, base_url=base_url),
        smtp=smtp_config,
        submission=demo_submission(),
        cache=CacheConfig(path=str(workdir / "cache.sqlite3")),
    )
    if overlay:
        config = parse_config(merged(tomllib.loads(to_toml(config)), overlay))
        base_url = config.server.base_url
    setup_logging(config.server.log_level, config.server.log_format, log_file)
    config_path = workdir / "config.toml"
    config_path.write_text("# Written by `imapjmap demo`.\n" + to_toml(config))

    def announce() -> None:  # once the proxy listens: a busy port fails before this
        _say(
            f"""
imapjmap demo (ready in {time.monotonic() - started:.1f} s)

  JMAP session URL:  {base_url}/.well-known/jmap
  login:             {DEMO_USER} / {password}   (HTTP Basic)
  sends as:          {OWNER[0]} <{OWNER[1]}>
  upstream IMAP:     Dovecot at {dovecot.host}:{dovecot.port}, same login, no TLS
  {sink_note}
  config:            {config_path}
  files and logs:    {workdir}

Press Ctrl-C to stop.
"""
        )

    # aiohttp and the rest of the proxy: only now (as the CLI does).
    serve: Callable[..., int] = importlib.import_module("imapjmap.http.app").serve
    return serve(config, announce=announce)
