"""The account's storage quotas, as the mail server counts them (RFC 9208 QUOTA)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class QuotaReading:
    """One resource of one quota root, as the server reported it.

    ``resource`` is the RFC 9208 name in upper case (``STORAGE``, ``MESSAGE``,
    ``MAILBOX``...); ``used`` and ``limit`` are in the resource's own unit (KiB for
    STORAGE).
    """

    root: str
    resource: str
    used: int
    limit: int


class QuotaReads(Protocol):
    """What the server says of the quotas that hold the account's mail."""

    @property
    def offers_quota(self) -> bool:
        """Whether the server reports quotas at all (IMAP: the QUOTA capability)."""
        ...

    async def quotas(self) -> list[QuotaReading]:
        """Every resource of every quota root that holds the inbox, in the server's order;
        empty when the server offers no quotas or none applies to the account.

        A lost connection raises :class:`imapjmap.errors.UpstreamUnavailable`.
        """
        ...
