"""Real servers and sample mail for tests, benchmarks and ``imapjmap demo``.

- :class:`DovecotServer`: a throw-away Dovecot 2.3 on loopback (IMAP + LMTP).
- :class:`SmtpSink`: a recording aiosmtpd server (imported on first use: aiosmtpd is a test
  dependency).
- :func:`generate` / :func:`seed_maildir`: deterministic realistic mail, written straight
  into a Maildir.
- :func:`imapjmap.demo.run.run_demo`: all of it behind the proxy, in the foreground.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from imapjmap.demo.dovecot import (
    DovecotError,
    DovecotServer,
    ensure_dovecot_installed,
    find_dovecot,
)
from imapjmap.demo.samplemail import SampleMessage, generate, seed_maildir

if TYPE_CHECKING:
    from imapjmap.demo.smtp import ReceivedMessage, SmtpSink

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
        from imapjmap.demo import smtp

        return getattr(smtp, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
