"""One mapping from an IMAP tagged NO to the SetError a /set record reports (RFC 8620 §5.3)."""

from __future__ import annotations

from typing import Final

from imapjmap.errors import ImapCommandFailed
from imapjmap.jmap.errors import SetError, SetErrorType

# RFC 5530 response codes → RFC 8620/8621 SetError types.
_BY_CODE: Final = {
    "OVERQUOTA": SetErrorType.OVER_QUOTA,
    "NONEXISTENT": SetErrorType.NOT_FOUND,
    "ALREADYEXISTS": SetErrorType.ALREADY_EXISTS,
    "NOPERM": SetErrorType.FORBIDDEN,
    "LIMIT": SetErrorType.TOO_LARGE,
    "TOOBIG": SetErrorType.TOO_LARGE,
}


def set_error_from_imap(exc: ImapCommandFailed) -> SetError:
    """The SetError for a NO; the server's free text is logged, not echoed (§11 rule 1)."""
    kind = _BY_CODE.get(exc.code or "", SetErrorType.FORBIDDEN)
    description = f"the IMAP server refused {exc.what}"
    if exc.code:
        description += f" [{exc.code}]"
    return SetError(kind, description)
