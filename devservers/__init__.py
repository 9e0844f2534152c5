"""Real servers and sample mail for tests, benchmarks and ``imapjmap demo``.

Part of the source checkout, not of the installed package: these modules install Debian
packages and start servers, which nothing installed with ``pip install imapjmap`` may do.
Tests find them from the checkout's root (pytest puts it on the path), scripts run from it,
and the benchmarks put it on the path themselves (``bench/in_checkout.py``).

- :class:`DovecotServer`: a throw-away Dovecot 2.3 on loopback (IMAP + LMTP).
- :class:`SmtpSink`: a recording aiosmtpd server (imported on first use: aiosmtpd is a test
  dependency).
- :func:`generate` / :func:`seed_maildir`: deterministic realistic mail, written straight
  into a Maildir.
- :func:`devservers.demo.run_demo`: all of it behind the proxy, in the foreground.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from devservers.dovecot import (
    DovecotError,
    DovecotServer,
    ensure_dovecot_installed,
    find_dovecot,
)
from devservers.samplemail import SampleMessage, generate, seed_maildir

if TYPE_CHECKING:
    from devservers.smtp import ReceivedMessage, SmtpSink

__all__ = [
    "DovecotError",
    "DovecotServer",
    "ReceivedMessage",
    "SampleMessage",
    "SmtpSink",
    "ensure_dovecot_installed",
    "find_dovecot",
    "generate",
    "seed_maildir",
]


def __getattr__(name: str) -> Any:
    if name in ("SmtpSink", "ReceivedMessage"):
        from devservers import smtp

        return getattr(smtp, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
