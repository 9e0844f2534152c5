"""Reading messages' octets from the upstream: a whole message for a blob, previews."""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol


class BodyReads(Protocol):
    """Message contents by (mailbox name, UID).

    A mailbox that is gone raises :class:`imapjmap.errors.ImapCommandFailed`; a lost
    connection raises :class:`imapjmap.errors.UpstreamUnavailable`.
    """

    async def message(self, mailbox: str, uid: int) -> bytes | None:
        """The message's exact octets, or None when the mailbox holds no such UID."""
        ...

    async def previews(self, mailbox: str, uids: Collection[int]) -> dict[int, str]:
        """Previews the server computes (RFC 8970) for those of ``uids`` it has; empty when
        it computes none, and the caller makes them from :meth:`message`."""
        ...
