"""The three error tiers of RFC 8620 §3.6, each with exactly one serialiser.

- :class:`RequestError` — the whole HTTP request failed; rendered as an RFC 7807 problem
  document by the HTTP layer only.
- :class:`MethodError` — one method call failed; rendered as ``["error", {...}, callId]`` by
  the dispatcher only.  Later calls still run (CORE-ERR-10).
- :class:`SetError` — one record of a /set, /copy or import failed; it is data, returned in
  ``notCreated`` / ``notUpdated`` / ``notDestroyed``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

from imapjmap.jmap.wire import ERROR_URN_PREFIX


class RequestErrorType(enum.StrEnum):
    UNKNOWN_CAPABILITY = ERROR_URN_PREFIX + "unknownCapability"
    NOT_JSON = ERROR_URN_PREFIX + "notJSON"
    NOT_REQUEST = ERROR_URN_PREFIX + "notRequest"
    LIMIT = ERROR_URN_PREFIX + "limit"
    BLANK = "about:blank"


class RequestError(Exception):
    """A request-level failure with its HTTP status (400 unless said otherwise) and any
    HTTP headers that go with it (``Retry-After``)."""

    def __init__(
        self,
        type_: RequestErrorType,
        detail: str,
        status: int = 400,
        limit: str | None = None,
        title: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.type = type_
        self.detail = detail
        self.status = status
        self.limit = limit
        self.title = title
        self.headers = headers

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type.value,
            "status": self.status,
            "detail": self.detail,
        }
        if self.title:
            body["title"] = self.title
        if self.limit is not None:
            body["limit"] = self.limit
        return body


class MethodErrorType(enum.StrEnum):
    SERVER_UNAVAILABLE = "serverUnavailable"
    SERVER_FAIL = "serverFail"
    SERVER_PARTIAL_FAIL = "serverPartialFail"
    UNKNOWN_METHOD = "unknownMethod"
    INVALID_ARGUMENTS = "invalidArguments"
    INVALID_RESULT_REFERENCE = "invalidResultReference"
    FORBIDDEN = "forbidden"
    ACCOUNT_NOT_FOUND = "accountNotFound"
    ACCOUNT_NOT_SUPPORTED_BY_METHOD = "accountNotSupportedByMethod"
    ACCOUNT_READ_ONLY = "accountReadOnly"
    REQUEST_TOO_LARGE = "requestTooLarge"
    STATE_MISMATCH = "stateMismatch"
    CANNOT_CALCULATE_CHANGES = "cannotCalculateChanges"
    TOO_MANY_CHANGES = "tooManyChanges"
    ANCHOR_NOT_FOUND = "anchorNotFound"
    UNSUPPORTED_SORT = "unsupportedSort"
    UNSUPPORTED_FILTER = "unsupportedFilter"
    FROM_ACCOUNT_NOT_FOUND = "fromAccountNotFound"
    FROM_ACCOUNT_NOT_SUPPORTED_BY_METHOD = "fromAccountNotSupportedByMethod"
    UNKNOWN_DATA_TYPE = "unknownDataType"


class MethodError(Exception):
    """A method-level error; ``extra`` adds type-specific fields to the error object."""

    def __init__(
        self, type_: MethodErrorType, description: str | None = None, **extra: Any
    ) -> None:
        super().__init__(type_.value, description)
        self.type = type_
        self.description = description
        self.extra = extra

    def __reduce__(self) -> tuple[Any, ...]:
        # pickled whole (a query run in a reader process raises it there): the type back
        # as the enum, and the extra fields too
        return (_method_error, (self.type.value, self.description, self.extra))

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type.value}
        if self.description:
            body["description"] = self.description
        body.update(self.extra)
        return body


def _method_error(type_: str, description: str | None, extra: dict[str, Any]) -> MethodError:
    return MethodError(MethodErrorType(type_), description, **extra)


def invalid_arguments(description: str) -> MethodError:
    return MethodError(MethodErrorType.INVALID_ARGUMENTS, description)


class SetErrorType(enum.StrEnum):
    FORBIDDEN = "forbidden"
    OVER_QUOTA = "overQuota"
    TOO_LARGE = "tooLarge"
    RATE_LIMIT = "rateLimit"
    NOT_FOUND = "notFound"
    INVALID_PATCH = "invalidPatch"
    WILL_DESTROY = "willDestroy"
    INVALID_PROPERTIES = "invalidProperties"
    SINGLETON = "singleton"
    ALREADY_EXISTS = "alreadyExists"
    MAILBOX_HAS_CHILD = "mailboxHasChild"
    MAILBOX_HAS_EMAIL = "mailboxHasEmail"
    BLOB_NOT_FOUND = "blobNotFound"
    TOO_MANY_KEYWORDS = "tooManyKeywords"
    TOO_MANY_MAILBOXES = "tooManyMailboxes"
    INVALID_EMAIL = "invalidEmail"
    TOO_MANY_RECIPIENTS = "tooManyRecipients"
    NO_RECIPIENTS = "noRecipients"
    INVALID_RECIPIENTS = "invalidRecipients"
    FORBIDDEN_MAIL_FROM = "forbiddenMailFrom"
    FORBIDDEN_FROM = "forbiddenFrom"
    FORBIDDEN_TO_SEND = "forbiddenToSend"
    CANNOT_UNSEND = "cannotUnsend"
    INVALID_SIEVE = "invalidSieve"  # RFC 9661 §2.4
    SIEVE_IS_ACTIVE = "sieveIsActive"
    MDN_ALREADY_SENT = "mdnAlreadySent"  # RFC 9007 §2.1


class SetError(Exception):
    """A per-record failure.  Raised inside a record's handler, caught by the /set loop."""

    def __init__(
        self,
        type_: SetErrorType,
        description: str | None = None,
        properties: Sequence[str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(type_.value, description)
        self.type = type_
        self.description = description
        self.properties = list(properties) if properties is not None else None
        self.extra = extra

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type.value}
        if self.description:
            body["description"] = self.description
        if self.properties is not None:
            body["properties"] = self.properties
        body.update(self.extra)
        return body


def invalid_properties(description: str, *properties: str) -> SetError:
    return SetError(SetErrorType.INVALID_PROPERTIES, description, list(properties))
