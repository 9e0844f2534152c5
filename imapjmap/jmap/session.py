"""The Session resource (RFC 8620 §2): capabilities, accounts, URL templates.

Pure: built from the config and the authenticated account, never from I/O.  Only what is
implemented is advertised (CORE-SESS-07); each capability with account data has a primary
account (CORE-SESS-08); URLs are absolute, carry exactly the RFC's template variables and
nothing else (CORE-SESS-05); ``state`` is a digest of everything else, so it changes exactly
when the session does (CORE-SESS-06).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from imapjmap.config import Config
from imapjmap.jmap import wire

API_PATH: Final = "/jmap/api/"
SESSION_PATH: Final = "/jmap/session"
DOWNLOAD_PATH: Final = "/jmap/download/{accountId}/{blobId}/{name}"
UPLOAD_PATH: Final = "/jmap/upload/{accountId}/"
EVENTSOURCE_PATH: Final = "/jmap/eventsource/"
WEBSOCKET_PATH: Final = "/jmap/ws/"

# Mailbox names: IMAP servers accept long names, but the encoded path must stay well under
# common 1 KB command-line limits once parents are prefixed.
MAX_SIZE_MAILBOX_NAME: Final = 255
COLLATIONS: Final = ("i;ascii-casemap", "i;octet", "i;unicode-casemap")
# RFC 8621 §1.3.1: every Comparator property Email/query supports (query.email_filter
# takes its SORT_PROPERTIES from here).
EMAIL_SORT_OPTIONS: Final = (
    "receivedAt",
    "sentAt",
    "size",
    "from",
    "to",
    "subject",
    "hasKeyword",
    "allInThreadHaveKeyword",
    "someInThreadHaveKeyword",
)
# RFC 9404 Blob account capability: data sources per Blob/upload creation (at least 64),
# the types Blob/lookup knows, the digests Blob/get computes.
BLOB_MAX_DATA_SOURCES: Final = 64
BLOB_TYPE_NAMES: Final = ("Mailbox", "Thread", "Email")
BLOB_DIGESTS: Final = ("sha", "sha-256")


@dataclass(frozen=True, slots=True)
class SessionAccount:
    account_id: str
    username: str  # the login's; a share's account: its name (the owner)
    capabilities: frozenset[str]  # account-level capability URNs
    is_personal: bool = True  # False: another user's folders shared with the login
    is_read_only: bool = False
    # accountCapabilities objects that come from the account's servers (Sieve's), by URN
    details: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def core_capability(cfg: Config) -> dict[str, Any]:
    limits = cfg.limits
    return {
        "maxSizeUpload": limits.max_size_upload,
        "maxConcurrentUpload": limits.max_concurrent_upload,
        "maxSizeRequest": limits.max_size_request,
        "maxConcurrentRequests": limits.max_concurrent_requests,
        "maxCallsInRequest": limits.max_calls_in_request,
        "maxObjectsInGet": limits.max_objects_in_get,
        "maxObjectsInSet": limits.max_objects_in_set,
        "collationAlgorithms": list(COLLATIONS),
    }


def mail_account_capability(cfg: Config, *, top_level: bool = True) -> dict[str, Any]:
    """``top_level``: a mailbox may be created at the top (not in a share's account, whose
    top is the owner's: RFC 4314's ``k`` right on it is never granted to others here)."""
    return {
        "maxMailboxesPerEmail": None,
        "maxMailboxDepth": None,
        "maxSizeMailboxName": MAX_SIZE_MAILBOX_NAME,
        "maxSizeAttachmentsPerEmail": cfg.limits.max_size_upload,
        "emailQuerySortOptions": list(EMAIL_SORT_OPTIONS),
        "mayCreateTopLevelMailbox": top_level,
    }


def blob_account_capability(cfg: Config) -> dict[str, Any]:
    return {
        "maxSizeBlobSet": cfg.limits.max_size_upload,
        "maxDataSources": BLOB_MAX_DATA_SOURCES,
        "supportedTypeNames": list(BLOB_TYPE_NAMES),
        "supportedDigestAlgorithms": list(BLOB_DIGESTS),
    }


def submission_account_capability(extensions: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """RFC 8621 §1.3.2: every submission is sent at once (no delayed send); the EHLO
    keywords are the ones the SMTP server really offers (learnt by probing it)."""
    return {
        "maxDelayedSend": 0,
        "submissionExtensions": {k: list(v) for k, v in sorted(extensions.items())},
    }


def websocket_capability(cfg: Config) -> dict[str, Any]:
    """RFC 8887 §3: the WebSocket URL (``wss://`` for an https base URL) and push support."""
    base = cfg.server.base_url.rstrip("/")
    scheme, sep, rest = base.partition("://")
    url = ("wss" if scheme == "https" else "ws") + sep + rest + WEBSOCKET_PATH
    return {"url": url, "supportsPush": True}


def _account_capabilities(
    cfg: Config, account: SessionAccount, submission_extensions: Mapping[str, Sequence[str]]
) -> dict[str, Any]:
    caps = account.capabilities
    out: dict[str, Any] = {}
    if wire.MAIL in caps:
        out[wire.MAIL] = mail_account_capability(cfg, top_level=account.is_personal)
    if wire.BLOB in caps:
        out[wire.BLOB] = blob_account_capability(cfg)
    if wire.SUBMISSION in caps:
        out[wire.SUBMISSION] = submission_account_capability(submission_extensions)
    out.update((urn, dict(value)) for urn, value in account.details.items() if urn in caps)
    for urn in caps:  # the others have nothing to say of the account (RFC 9425 Quota)
        out.setdefault(urn, {})
    return out


def build_session(
    cfg: Config,
    account: SessionAccount,
    *,
    submission_extensions: Mapping[str, Sequence[str]] | None = None,
    shares: Sequence[SessionAccount] = (),
) -> dict[str, Any]:
    """The Session object for ``account`` (the account its credentials open).

    ``submission_extensions``: the SMTP server's EHLO keywords (``submissionExtensions``).
    ``shares``: the accounts of other users' folders shared with the login (never primary).
    """
    base = cfg.server.base_url.rstrip("/")
    capabilities: dict[str, Any] = {wire.CORE: core_capability(cfg)}
    for urn in sorted(account.capabilities):
        capabilities[urn] = {}
    capabilities[wire.WEBSOCKET] = websocket_capability(cfg)
    session: dict[str, Any] = {
        "capabilities": capabilities,
        "accounts": {
            one.account_id: {
                "name": one.username,
                "isPersonal": one.is_personal,
                "isReadOnly": one.is_read_only,
                "accountCapabilities": _account_capabilities(cfg, one, submission_extensions or {}),
            }
            for one in (account, *shares)
        },
        "primaryAccounts": {urn: account.account_id for urn in sorted(account.capabilities)},
        "username": account.username,
        "apiUrl": base + API_PATH,
        "downloadUrl": base + DOWNLOAD_PATH + "?type={type}",
        "uploadUrl": base + UPLOAD_PATH,
        "eventSourceUrl": (
            base + EVENTSOURCE_PATH + "?types={types}&closeafter={closeafter}&ping={ping}"
        ),
    }
    session["state"] = session_state(session)
    return session


def session_state(session: Mapping[str, Any]) -> str:
    """A digest of every other session property (CORE-SESS-06)."""
    body = {k: v for k, v in session.items() if k != "state"}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return "s" + digest[:24]
