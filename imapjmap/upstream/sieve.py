"""The account's Sieve scripts, as VacationResponse and SieveScript see them.

The mail server keeps the scripts (ManageSieve, RFC 5804, beside IMAP); these Protocols
are what the handlers may do with them.  A refused command raises
:class:`~imapjmap.errors.SieveCommandFailed` (a script that does not compile: its text
holds the server's errors), an unreachable server
:class:`~imapjmap.errors.ManageSieveUnavailable`.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from imapjmap.config import SieveConfig


@dataclass(frozen=True, slots=True)
class SieveServer:
    """What the account's ManageSieve server offers (its capabilities, RFC 5804 §1.7)."""

    implementation: str
    extensions: frozenset[str]  # the Sieve extensions it implements, lower case
    notify_methods: tuple[str, ...] = ()  # enotify's URI schemes (``NOTIFY``)
    max_redirects: int | None = None  # ``MAXREDIRECTS``


class SieveScripts(Protocol):
    """One open ManageSieve session of the account, for the duration of a method call."""

    @property
    def server(self) -> SieveServer: ...

    async def scripts(self) -> list[tuple[str, bool]]:
        """(name, is it the active one) of every script."""
        ...

    async def script(self, name: str) -> bytes | None:
        """The script's content; None when there is no such script."""
        ...

    async def put(self, name: str, content: bytes) -> None:
        """Create or replace a script (the server compiles it first)."""
        ...

    async def check(self, content: bytes) -> None:
        """Compile without storing; raises SieveCommandFailed with the errors."""
        ...

    async def activate(self, name: str | None) -> None:
        """Make ``name`` the active script; None: no script active."""
        ...

    async def delete(self, name: str) -> None: ...

    async def rename(self, old: str, new: str) -> None: ...


class SieveAccess(Protocol):
    """Reaching the account's scripts (``cfg``: the ``[sieve]`` configuration)."""

    async def sieve_server(self, cfg: SieveConfig) -> SieveServer | None:
        """What the account's ManageSieve server offers, or None when it has none that the
        account can log in to (the answer is remembered for a while)."""
        ...

    @property
    def sieve_known(self) -> SieveServer | None:
        """What the last :meth:`sieve_server` found (None before it ran)."""
        ...

    def sieve(self, cfg: SieveConfig) -> AbstractAsyncContextManager[SieveScripts]:
        """A logged-in session, closed when the block ends."""
        ...
