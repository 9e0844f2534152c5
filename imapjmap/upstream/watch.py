"""How the proxy learns that something changed on the server while someone listens for
push (docs/design.md, "Push"): a :class:`Watch` on a connection of its own, which waits
for the next thing worth a refresh.

Which way the server is watched (NOTIFY, IDLE with LIST-STATUS compared, IDLE on the
mailbox of all mail, or polling) is the profile's push strategy, chosen by the
implementation; ``upstream.imap_watch`` says them in IMAP.  The push watcher
(:mod:`imapjmap.push.watcher`) only loops: it waits, refreshes, publishes, and opens a
new watch when one fails.
"""

from __future__ import annotations

import enum
from contextlib import AbstractAsyncContextManager
from typing import Literal, Protocol

WatchMode = Literal["notify", "idle", "poll"]


class Heard(enum.Enum):
    """What :meth:`Watch.next` waited for; each is worth one refresh."""

    CHANGED = "changed"  # the server reported a change
    DUE = "due"  # a periodic check: what a silent server or a dead watch does not report
    REARMED = "rearmed"  # the watch was set again; the refresh covers the moment between


class Watch(Protocol):
    """One account's watch, set up on entering :meth:`WatchSource.watch`: from then on a
    change is either reported by :meth:`next` or covered by a refresh that starts later."""

    @property
    def mode(self) -> WatchMode:
        """The strategy in use (diagnostics and tests)."""
        ...

    @property
    def reports(self) -> bool:
        """The server reports changes as they happen (False: :meth:`next` only polls, so
        a request may not trust the cache between two polls)."""
        ...

    @property
    def lists(self) -> int:
        """Listings compared so far to find changes the server does not report."""
        ...

    async def next(self) -> Heard:
        """Wait for the next change, or the next periodic check.

        Raises:
            ProxyError: the connection failed or was closed; the watch is over.
        """
        ...


class WatchSource(Protocol):
    """An account's server, as its push watcher watches it."""

    def watch(
        self, *, poll_interval: float, status_interval: float
    ) -> AbstractAsyncContextManager[Watch]:
        """Open a connection of its own and set a watch up on it (closed on leaving).

        ``poll_interval``: seconds between checks whatever the server says (with IDLE and
        polling).  ``status_interval``: seconds between the checks of the mailboxes the
        server does not report on (0: none), and between NOTIFY's checks.

        Raises:
            ProxyError: the server is unreachable, or refused the watch.
        """
        ...
