"""Small host helpers shared by the throw-away server launchers (Dovecot, Cyrus)."""

from __future__ import annotations

import contextlib
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

_POLICY_RC_D = Path("/usr/sbin/policy-rc.d")


@contextlib.contextmanager
def services_not_started() -> Iterator[None]:
    """Keep maintainer scripts from starting system-wide services (policy-rc.d: exit 101)."""
    previous: bytes | None = None
    previous_mode = 0o755
    if _POLICY_RC_D.exists():
        previous = _POLICY_RC_D.read_bytes()
        previous_mode = stat.S_IMODE(_POLICY_RC_D.stat().st_mode)
    _POLICY_RC_D.write_text("#!/bin/sh\n# written by imapjmap while installing\nexit 101\n")
    _POLICY_RC_D.chmod(0o755)
    try:
        yield
    finally:
        if previous is None:
            _POLICY_RC_D.unlink(missing_ok=True)
        else:
            _POLICY_RC_D.write_bytes(previous)
            _POLICY_RC_D.chmod(previous_mode)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def make_searchable(path: Path) -> None:
    """As root, let other users (the mail uid) traverse ``path`` and its ancestors.

    Adds only the search bit (o+x) to directories owned by root that lack it, such as the
    0700 directories pytest and mkdtemp create; nothing becomes listable or readable.
    """
    for directory in (path, *path.parents):
        st = directory.stat()
        if not st.st_mode & stat.S_IXOTH and st.st_uid == 0:
            directory.chmod(stat.S_IMODE(st.st_mode) | stat.S_IXOTH)
