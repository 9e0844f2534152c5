"""Strategies and checks for the API fuzz (tests/integration/test_fuzz_api.py).

Strategies build JMAP requests from the argument names each method takes (RFC 8620 §5,
RFC 8621, RFC 9404), mixing values that make sense for the account (its ids and states) with
junk of every JSON type.  The checks are the properties every answer must have (RFC 8620 §3.6)
and a plain-IMAP snapshot of the account, the oracle for "nothing changed upstream".
"""

from __future__ import annotations

import imaplib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Final

from hypothesis import strategies as st

from tests.integration.conftest import CORE, MAIL

SUBMISSION: Final = "urn:ietf:params:jmap:submission"
BLOB: Final = "urn:ietf:params:jmap:blob"
ALL_CAPABILITIES: Final = (CORE, MAIL, SUBMISSION, BLOB)

# RFC 8620 §3.6.2 and the per-method errors of §5, RFC 8621 and RFC 9404: the only "type"s
# an ["error", ...] response may carry.  Written out here, not imported, so that the product
# cannot widen what the test accepts.
METHOD_ERRORS: Final = frozenset(
    {
        "serverUnavailable",
        "serverFail",
        "serverPartialFail",
        "unknownMethod",
        "invalidArguments",
        "invalidResultReference",
        "forbidden",
        "accountNotFound",
        "accountNotSupportedByMethod",
        "accountReadOnly",
        "requestTooLarge",
        "stateMismatch",
        "cannotCalculateChanges",
        "tooManyChanges",
        "anchorNotFound",
        "unsupportedSort",
        "unsupportedFilter",
        "fromAccountNotFound",
        "fromAccountNotSupportedByMethod",
        "unknownDataType",
    }
)
# "serverFail" is in the RFC's list but is what the proxy answers for its own bugs: the fuzz
# fails on it (with the log) rather than accepting it.
UNEXPECTED_METHOD_ERRORS: Final = frozenset({"serverFail", "serverPartialFail"})

# SetError types: RFC 8620 §5.3 and §5.4, RFC 8621 §2.5, §4.6, §7.5.
SET_ERRORS: Final = frozenset(
    {
        "forbidden",
        "overQuota",
        "tooLarge",
        "rateLimit",
        "notFound",
        "invalidPatch",
        "willDestroy",
        "invalidProperties",
        "singleton",
        "alreadyExists",
        "mailboxHasChild",
        "mailboxHasEmail",
        "blobNotFound",
        "tooManyKeywords",
        "tooManyMailboxes",
        "invalidEmail",
        "tooManyRecipients",
        "noRecipients",
        "invalidRecipients",
        "forbiddenMailFrom",
        "forbiddenFrom",
        "forbiddenToSend",
        "cannotUnsend",
    }
)

# Methods that may change the upstream mailbox store.  Identity/set, Blob/upload and
# PushSubscription/set change only the proxy's own state.
UPSTREAM_WRITERS: Final = frozenset(
    {"Mailbox/set", "Email/set", "Email/import", "Email/copy", "EmailSubmission/set"}
)
# A writer's answer, when it did anything, names it under one of these.
_DONE_KEYS: Final = ("created", "updated", "destroyed")
# Responses a call may add after its own (RFC 8621 §7.5 onSuccess*, §4.7 Email/copy).
_IMPLICIT: Final = {"EmailSubmission/set": "Email/set", "Email/copy": "Email/set"}


# -- the account's ids and states -------------------------------------------------------------


@dataclass(frozen=True)
class Pools:
    """Real ids and states of the account under test, for values that make sense."""

    account_id: str
    mailbox_ids: tuple[str, ...]
    email_ids: tuple[str, ...]
    thread_ids: tuple[str, ...]
    blob_ids: tuple[str, ...]
    identity_ids: tuple[str, ...]
    states: tuple[str, ...]


# -- values -----------------------------------------------------------------------------------

# Strings that have broken parsers before: IMAP syntax, control characters, path tricks,
# a lone surrogate (valid JSON text, not encodable as UTF-8), long ones.
NASTY_STRINGS: Final = (
    "",
    " ",
    "#",
    "#c1",
    "#nope",
    "*",
    "%",
    "/",
    "..",
    "a/b",
    "INBOX",
    "\\Seen",
    "$seen",
    "$flagged",
    "$draft",
    "NIL",
    '"',
    "\\",
    "(",
    ")",
    "{5}\r\nabcde",
    "a\r\nb",
    "\x00",
    "\x7f",
    "é",
    "日本語",
    "😀",
    "x" * 300,
    "A" * 256,
    "2020-01-01T00:00:00Z",
    "2020-13-45T99:99:99Z",
    "9999-12-31T23:59:59Z",
    "0000-01-01T00:00:00Z",
    "1970-01-01T00:00:00+01:00",
    "urn:ietf:params:jmap:core",
)

NUMBERS: Final = st.one_of(
    st.integers(min_value=-10, max_value=300),
    st.sampled_from([-(2**53) + 1, 2**53 - 1, 2**31, 2**32, 10**15]),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
)
TEXT: Final = st.one_of(st.text(max_size=12), st.sampled_from(NASTY_STRINGS))
SCALARS: Final = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
JUNK: Final = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(TEXT, children, max_size=4)
    ),
    max_leaves=8,
)


# How often (percent) ``mostly`` picks junk: drawn once per request by ``method_calls``, so
# that some requests are clean enough to reach deep into the handlers and others are not.
JUNK_PERCENT: ContextVar[int] = ContextVar("JUNK_PERCENT", default=20)


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any] = JUNK) -> Any:
    """``good``, or ``bad`` about JUNK_PERCENT times in a hundred.  Junk is drawn from the
    high numbers, so that examples shrink towards ``good`` (Hypothesis favours low ones)."""
    return st.integers(0, 99).flatmap(lambda n: bad if n >= 100 - JUNK_PERCENT.get() else good)


def ids(pool: Sequence[str]) -> st.SearchStrategy[str]:
    """An id of ``pool`` three times in four; else a creation id reference or any string."""
    others = st.one_of(st.sampled_from(["#c1", "#c2", "Mnope", "x"]), TEXT)
    if not pool:
        return others
    return st.integers(0, 3).flatmap(lambda n: others if n == 3 else st.sampled_from(pool))


def id_list(pool: Sequence[str]) -> Any:
    return mostly(st.one_of(st.none(), st.lists(ids(pool), max_size=5)))


def id_map(pool: Sequence[str], value: st.SearchStrategy[Any]) -> Any:
    return mostly(st.dictionaries(ids(pool), value, max_size=3))


BOOL: Final = mostly(st.booleans())
_EDGES: Final = st.sampled_from([2**31, 2**32, 2**53 - 1])  # the largest I-JSON integer
UINT: Final = mostly(st.one_of(st.integers(0, 100), st.none(), _EDGES))
INT: Final = mostly(st.one_of(st.integers(-100, 100), _EDGES, _EDGES.map(lambda n: -n)))
KEYWORDS: Final = st.sampled_from(
    [
        "$seen",
        "$flagged",
        "$answered",
        "$draft",
        "custom",
        "a b",
        "\\Seen",
        "(",
        "%",
        "é",
        "",
        "$Junk",
    ]
)
DATES: Final = st.sampled_from(
    [
        "2020-01-01T00:00:00Z",
        "2030-01-01T00:00:00Z",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "2020-01-01T00:00:00.123Z",
        "2020-01-01T00:00:00+14:00",
        "2020-02-30T00:00:00Z",
        "2020-13-45T00:00:00Z",
        "2020-01-01",
        "yesterday",
        "",
    ]
)


# -- filters and sorts ------------------------------------------------------------------------


def filter_of(conditions: Mapping[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """FilterOperators nested to any shape over FilterConditions of ``conditions``."""
    condition = st.fixed_dictionaries(
        {}, optional={name: mostly(value) for name, value in conditions.items()}
    )
    operator = mostly(st.sampled_from(["AND", "OR", "NOT"]))
    return st.recursive(
        mostly(condition),
        lambda inner: st.fixed_dictionaries(
            {"operator": operator, "conditions": mostly(st.lists(inner, max_size=4))}
        ),
        max_leaves=10,
    )


def email_filter(pools: Pools) -> st.SearchStrategy[Any]:
    text = TEXT
    return filter_of(
        {
            "inMailbox": ids(pools.mailbox_ids),
            "inMailboxOtherThan": st.lists(ids(pools.mailbox_ids), max_size=3),
            "before": DATES,
            "after": DATES,
            "minSize": st.integers(0, 10**6),
            "maxSize": st.integers(0, 10**6),
            "allInThreadHaveKeyword": KEYWORDS,
            "someInThreadHaveKeyword": KEYWORDS,
            "noneInThreadHaveKeyword": KEYWORDS,
            "hasKeyword": KEYWORDS,
            "notKeyword": KEYWORDS,
            "hasAttachment": st.booleans(),
            "text": text,
            "from": text,
            "to": text,
            "cc": text,
            "bcc": text,
            "subject": text,
            "body": text,
            "header": st.lists(
                st.sampled_from(["Subject", "X-Fuzz", "", "a b"]) | text, min_size=1, max_size=2
            ),
        }
    )


def mailbox_filter(pools: Pools) -> st.SearchStrategy[Any]:
    return filter_of(
        {
            "parentId": st.none() | ids(pools.mailbox_ids),
            "name": TEXT,
            "role": st.sampled_from(["inbox", "sent", "trash", "drafts", "nope", ""]) | st.none(),
            "hasAnyRole": st.booleans(),
            "isSubscribed": st.booleans(),
        }
    )


def submission_filter(pools: Pools) -> st.SearchStrategy[Any]:
    return filter_of(
        {
            "identityIds": st.lists(ids(pools.identity_ids), max_size=3),
            "emailIds": st.lists(ids(pools.email_ids), max_size=3),
            "threadIds": st.lists(ids(pools.thread_ids), max_size=3),
            "undoStatus": st.sampled_from(["pending", "final", "canceled", "x"]),
            "before": DATES,
            "after": DATES,
        }
    )


def sort_of(properties: Sequence[str]) -> Any:
    comparator = st.fixed_dictionaries(
        {"property": mostly(st.sampled_from([*properties, "nope"]))},
        optional={
            "isAscending": BOOL,
            "collation": mostly(
                st.sampled_from(["i;ascii-casemap", "i;octet", "i;unicode-casemap", "i;nope"])
            ),
            "keyword": mostly(KEYWORDS),
        },
    )
    return mostly(st.one_of(st.none(), st.lists(mostly(comparator), max_size=3)))


EMAIL_SORT: Final = (
    "receivedAt",
    "size",
    "from",
    "to",
    "subject",
    "sentAt",
    "hasKeyword",
    "allInThreadHaveKeyword",
    "someInThreadHaveKeyword",
)
MAILBOX_SORT: Final = ("sortOrder", "name", "parentId")


# -- properties -------------------------------------------------------------------------------

EMAIL_PROPERTIES: Final = (
    "id",
    "blobId",
    "threadId",
    "mailboxIds",
    "keywords",
    "size",
    "receivedAt",
    "messageId",
    "inReplyTo",
    "references",
    "sender",
    "from",
    "to",
    "cc",
    "bcc",
    "replyTo",
    "subject",
    "sentAt",
    "hasAttachment",
    "preview",
    "bodyValues",
    "textBody",
    "htmlBody",
    "attachments",
    "bodyStructure",
    "headers",
    "header:Subject",
    "header:From:asAddresses",
    "header:Date:asDate:all",
    "header:X-Nope:asText",
    "header:Subject:asNope",
    "header:",
    "nope",
)
BODY_PROPERTIES: Final = (
    "partId",
    "blobId",
    "size",
    "headers",
    "name",
    "type",
    "charset",
    "disposition",
    "cid",
    "language",
    "location",
    "subParts",
    "header:Content-Type",
    "nope",
)
MAILBOX_PROPERTIES: Final = (
    "id",
    "name",
    "parentId",
    "role",
    "sortOrder",
    "totalEmails",
    "unreadEmails",
    "totalThreads",
    "unreadThreads",
    "myRights",
    "isSubscribed",
    "nope",
)


def properties(names: Sequence[str]) -> Any:
    return mostly(st.one_of(st.none(), st.lists(st.sampled_from(names), max_size=5)))


# -- method arguments -------------------------------------------------------------------------

Args = Callable[[Pools], Mapping[str, st.SearchStrategy[Any]]]


def _get(pool: Callable[[Pools], Sequence[str]], props: Sequence[str]) -> Args:
    return lambda p: {"ids": id_list(pool(p)), "properties": properties(props)}


def _changes(p: Pools) -> Mapping[str, Any]:
    return {"sinceState": mostly(ids(p.states)), "maxChanges": UINT}


def _query(filter_: Callable[[Pools], Any], sort: Sequence[str], **extra: Any) -> Args:
    def build(p: Pools) -> Mapping[str, Any]:
        return {
            "filter": mostly(st.none() | filter_(p)),
            "sort": sort_of(sort),
            "position": INT,
            "anchor": mostly(st.none() | ids(p.email_ids + p.mailbox_ids)),
            "anchorOffset": INT,
            "limit": UINT,
            "calculateTotal": BOOL,
            **extra,
        }

    return build


def _query_changes(filter_: Callable[[Pools], Any], sort: Sequence[str], **extra: Any) -> Args:
    def build(p: Pools) -> Mapping[str, Any]:
        return {
            "filter": mostly(st.none() | filter_(p)),
            "sort": sort_of(sort),
            "sinceQueryState": mostly(ids(p.states)),
            "maxChanges": UINT,
            "upToId": mostly(st.none() | ids(p.email_ids)),
            "calculateTotal": BOOL,
            **extra,
        }

    return build


def _body_fetch() -> Mapping[str, Any]:
    return {
        "bodyProperties": properties(BODY_PROPERTIES),
        "fetchTextBodyValues": BOOL,
        "fetchHTMLBodyValues": BOOL,
        "fetchAllBodyValues": BOOL,
        "maxBodyValueBytes": UINT,
    }


def _patch(keys: Mapping[str, st.SearchStrategy[Any]]) -> Any:
    return mostly(st.dictionaries(st.sampled_from(list(keys)) | TEXT, JUNK, max_size=3))


def _email_patch(p: Pools) -> Any:
    keyword_path = KEYWORDS.map(lambda k: "keywords/" + k)
    mailbox_path = ids(p.mailbox_ids).map(lambda m: "mailboxIds/" + m)
    value = st.one_of(st.just(True), st.none(), JUNK)
    whole = st.fixed_dictionaries(
        {},
        optional={
            "keywords": mostly(st.dictionaries(KEYWORDS, st.just(True), max_size=3)),
            "mailboxIds": mostly(st.dictionaries(ids(p.mailbox_ids), st.just(True), max_size=2)),
        },
    )
    paths = st.dictionaries(keyword_path | mailbox_path | TEXT, value, max_size=3)
    return mostly(st.one_of(whole, paths))


def _email_create(p: Pools) -> Any:
    """RFC 8621 §4.6 create: the list and header properties, body values and parts."""
    address = st.fixed_dictionaries({"email": mostly(TEXT)}, optional={"name": mostly(TEXT)})
    addresses = mostly(st.none() | st.lists(mostly(address), max_size=2))
    part_type = st.sampled_from(["text/plain", "text/html", "image/png", "message/rfc822", "x"])
    text_part = st.fixed_dictionaries(
        {"partId": mostly(st.sampled_from(["1", "2"]))},
        optional={"type": mostly(part_type), "charset": mostly(st.sampled_from(["utf-8", "x"]))},
    )
    attachment = st.fixed_dictionaries(
        {"blobId": mostly(ids(p.blob_ids))},
        optional={
            "type": mostly(part_type),
            "name": mostly(st.none() | TEXT),
            "disposition": mostly(st.sampled_from(["attachment", "inline", "x"])),
            "cid": mostly(st.none() | TEXT),
            "header:X-Part": mostly(TEXT),
        },
    )
    value = st.fixed_dictionaries(
        {"value": mostly(TEXT)},
        optional={"isTruncated": BOOL, "isEncodingProblem": BOOL},
    )
    return st.fixed_dictionaries(
        {"mailboxIds": mostly(st.dictionaries(ids(p.mailbox_ids), st.just(True), max_size=2))},
        optional={
            "keywords": mostly(st.dictionaries(KEYWORDS, st.just(True), max_size=3)),
            "subject": mostly(TEXT),
            "from": addresses,
            "to": addresses,
            "cc": addresses,
            "bcc": addresses,
            "replyTo": addresses,
            "sender": addresses,
            "messageId": mostly(st.none() | st.lists(TEXT, max_size=2)),
            "inReplyTo": mostly(st.none() | st.lists(TEXT, max_size=2)),
            "references": mostly(st.none() | st.lists(TEXT, max_size=2)),
            "sentAt": mostly(DATES),
            "receivedAt": mostly(DATES),
            "bodyValues": mostly(st.dictionaries(st.sampled_from(["1", "2", "3"]), value)),
            "textBody": mostly(st.lists(text_part, max_size=2)),
            "htmlBody": mostly(st.lists(text_part, max_size=2)),
            "attachments": mostly(st.lists(attachment, max_size=2)),
            "bodyStructure": mostly(
                st.fixed_dictionaries(
                    {
                        "type": st.just("multipart/mixed"),
                        "subParts": st.lists(text_part | attachment, max_size=2),
                    }
                )
            ),
            "header:X-Fuzz": mostly(TEXT),
            "header:X-Fuzz:asRaw": mostly(TEXT),
            "header:List-Post:asURLs": mostly(st.none() | st.lists(TEXT, max_size=2)),
            "header:Comments:asText": mostly(TEXT),
            "header:Subject": mostly(TEXT),
            "header:From:asAddresses": addresses,
            "header:Date:asDate": mostly(DATES),
            "header:X-Fuzz:all": mostly(st.lists(TEXT, max_size=2)),
        },
    )


def _mailbox_object(p: Pools) -> Any:
    return st.fixed_dictionaries(
        {},
        optional={
            "name": mostly(TEXT),
            "parentId": mostly(st.none() | ids(p.mailbox_ids)),
            "role": mostly(st.none() | st.sampled_from(["archive", "inbox", "junk", "x"])),
            "sortOrder": UINT,
            "isSubscribed": BOOL,
            "totalEmails": INT,
        },
    )


def _set(
    pool: Callable[[Pools], Sequence[str]],
    create: Callable[[Pools], Any],
    update: Callable[[Pools], Any],
    **extra: Any,
) -> Args:
    def build(p: Pools) -> Mapping[str, Any]:
        creation_ids = mostly(st.sampled_from(["c1", "c2"]), TEXT)
        return {
            "ifInState": mostly(st.none() | ids(p.states)),
            "create": mostly(st.dictionaries(creation_ids, mostly(create(p)), max_size=2)),
            "update": id_map(pool(p), update(p)),
            "destroy": id_list(pool(p)),
            **extra,
        }

    return build


def _identity_object(p: Pools) -> Any:
    address = st.fixed_dictionaries({"email": mostly(TEXT)}, optional={"name": TEXT})
    return st.fixed_dictionaries(
        {},
        optional={
            "name": mostly(TEXT),
            "email": mostly(st.sampled_from(["sales@example.org", "x@example.net", "evil@x"])),
            "replyTo": mostly(st.none() | st.lists(address, max_size=2)),
            "bcc": mostly(st.none() | st.lists(address, max_size=2)),
            "textSignature": mostly(TEXT),
            "htmlSignature": mostly(TEXT),
        },
    )


def _submission_create(p: Pools) -> Any:
    address = st.fixed_dictionaries(
        {"email": mostly(TEXT)},
        optional={"parameters": mostly(st.none() | st.dictionaries(TEXT, TEXT | st.none()))},
    )
    envelope = st.fixed_dictionaries(
        {"mailFrom": mostly(address), "rcptTo": mostly(st.lists(address, max_size=3))}
    )
    return st.fixed_dictionaries(
        {"identityId": mostly(ids(p.identity_ids)), "emailId": mostly(ids(p.email_ids))},
        optional={"envelope": mostly(st.none() | envelope)},
    )


def _import_object(p: Pools) -> Any:
    return st.fixed_dictionaries(
        {
            "blobId": mostly(ids(p.blob_ids)),
            "mailboxIds": mostly(st.dictionaries(ids(p.mailbox_ids), st.just(True), max_size=2)),
        },
        optional={
            "keywords": mostly(st.dictionaries(KEYWORDS, st.just(True), max_size=2)),
            "receivedAt": mostly(DATES),
        },
    )


def _copy_object(p: Pools) -> Any:
    """RFC 8620 §5.4: the record's id in the other account, and the properties to set."""
    return st.fixed_dictionaries(
        {
            "id": mostly(ids(p.email_ids)),
            "mailboxIds": mostly(st.dictionaries(ids(p.mailbox_ids), st.just(True), max_size=2)),
        },
        optional={
            "keywords": mostly(st.dictionaries(KEYWORDS, st.just(True), max_size=2)),
            "receivedAt": mostly(DATES),
        },
    )


def _blob_upload(p: Pools) -> Mapping[str, Any]:
    source = st.one_of(
        st.fixed_dictionaries({"data:asText": mostly(TEXT)}),
        st.fixed_dictionaries({"data:asBase64": mostly(st.sampled_from(["aGVsbG8=", "!!", ""]))}),
        st.fixed_dictionaries(
            {"blobId": mostly(ids(p.blob_ids))}, optional={"offset": UINT, "length": UINT}
        ),
        JUNK,
    )
    upload = st.fixed_dictionaries(
        {"data": mostly(st.lists(source, max_size=3))}, optional={"type": mostly(TEXT)}
    )
    creation_ids = mostly(st.sampled_from(["c1", "c2"]), TEXT)
    return {"create": mostly(st.dictionaries(creation_ids, upload, max_size=2))}


def _push_create(p: Pools) -> Any:
    return st.fixed_dictionaries(
        {
            "deviceClientId": mostly(TEXT),
            "url": mostly(
                st.sampled_from(
                    ["https://push.invalid/x", "http://127.0.0.1:1/../x", "ftp://x", "x"]
                )
            ),
        },
        optional={
            "keys": mostly(st.none() | st.fixed_dictionaries({"p256dh": TEXT, "auth": TEXT})),
            "expires": mostly(st.none() | DATES),
            "types": mostly(st.none() | st.lists(st.sampled_from(["Email", "Mailbox", "x"]))),
        },
    )


# Every advertised method -> the strategies of the arguments it takes (besides accountId).
METHODS: Final[Mapping[str, Args]] = {
    "Core/echo": lambda p: {"x": JUNK, "y": JUNK},
    "Mailbox/get": _get(lambda p: p.mailbox_ids, MAILBOX_PROPERTIES),
    "Mailbox/changes": _changes,
    "Mailbox/query": _query(mailbox_filter, MAILBOX_SORT, sortAsTree=BOOL, filterAsTree=BOOL),
    "Mailbox/queryChanges": _query_changes(mailbox_filter, MAILBOX_SORT),
    "Mailbox/set": _set(
        lambda p: p.mailbox_ids,
        _mailbox_object,
        lambda p: mostly(_mailbox_object(p)),
        onDestroyRemoveEmails=BOOL,
    ),
    "Thread/get": _get(lambda p: p.thread_ids, ("id", "emailIds", "nope")),
    "Thread/changes": _changes,
    "Email/get": lambda p: {
        **_get(lambda q: q.email_ids, EMAIL_PROPERTIES)(p),
        **_body_fetch(),
    },
    "Email/changes": _changes,
    "Email/query": _query(email_filter, EMAIL_SORT, collapseThreads=BOOL),
    "Email/queryChanges": _query_changes(email_filter, EMAIL_SORT, collapseThreads=BOOL),
    "Email/set": _set(lambda p: p.email_ids, _email_create, _email_patch),
    "SearchSnippet/get": lambda p: {
        "filter": mostly(st.none() | email_filter(p)),
        "emailIds": id_list(p.email_ids),
    },
    "Identity/get": _get(lambda p: p.identity_ids, ("name", "email", "replyTo", "mayDelete")),
    "Identity/changes": _changes,
    "Identity/set": _set(lambda p: p.identity_ids, _identity_object, _identity_object),
    "EmailSubmission/get": _get(lambda p: (), ("identityId", "emailId", "undoStatus")),
    "EmailSubmission/changes": _changes,
    "EmailSubmission/query": _query(submission_filter, ("emailId", "threadId", "sentAt")),
    "EmailSubmission/queryChanges": _query_changes(
        submission_filter, ("emailId", "threadId", "sentAt")
    ),
    "EmailSubmission/set": lambda p: {
        **_set(
            lambda q: (),
            _submission_create,
            lambda q: _patch({"undoStatus": st.just("canceled")}),
        )(p),
        "onSuccessUpdateEmail": mostly(
            st.dictionaries(st.sampled_from(["#c1", "#c2"]) | ids(p.email_ids), _email_patch(p))
        ),
        "onSuccessDestroyEmail": mostly(st.lists(st.sampled_from(["#c1", "#c2"]))),
    },
    "Email/import": lambda p: {
        "ifInState": mostly(st.none() | ids(p.states)),
        "emails": mostly(st.dictionaries(st.sampled_from(["c1", "c2"]), _import_object(p))),
    },
    "Email/parse": lambda p: {
        "blobIds": id_list(p.blob_ids),
        "properties": properties(EMAIL_PROPERTIES),
        **_body_fetch(),
    },
    "Email/copy": lambda p: {
        "fromAccountId": mostly(st.sampled_from([p.account_id, "Anope"])),
        "ifFromInState": mostly(st.none() | ids(p.states)),
        "ifInState": mostly(st.none() | ids(p.states)),
        "create": mostly(
            st.dictionaries(
                mostly(st.sampled_from(["c1", "c2"]), TEXT), _copy_object(p), max_size=2
            )
        ),
        "onSuccessDestroyOriginal": BOOL,
        "destroyFromIfInState": mostly(st.none() | ids(p.states)),
    },
    "Blob/copy": lambda p: {
        "fromAccountId": mostly(st.sampled_from([p.account_id, "Anope"])),
        "blobIds": id_list(p.blob_ids),
    },
    "Blob/upload": _blob_upload,
    "Blob/get": lambda p: {
        "ids": id_list(p.blob_ids),
        "properties": properties(
            ("data", "data:asText", "data:asBase64", "size", "digest:sha", "digest:sha-256", "x")
        ),
        "offset": UINT,
        "length": UINT,
    },
    "Blob/lookup": lambda p: {
        "typeNames": mostly(st.lists(st.sampled_from(["Email", "Mailbox", "Thread", "Nope"]))),
        "ids": id_list(p.blob_ids),
    },
    "PushSubscription/get": lambda p: {"ids": id_list(()), "properties": properties(("url",))},
    "PushSubscription/set": lambda p: {
        "create": mostly(st.dictionaries(st.sampled_from(["c1", "c2"]), _push_create(p))),
        "update": mostly(
            st.dictionaries(
                TEXT,
                st.fixed_dictionaries(
                    {}, optional={"verificationCode": TEXT, "expires": DATES, "types": JUNK}
                ),
                max_size=2,
            )
        ),
        "destroy": id_list(()),
    },
}
# Arguments without a default: present in all but one call in twenty.
REQUIRED: Final[Mapping[str, tuple[str, ...]]] = {
    **{name: ("sinceState",) for name in METHODS if name.endswith("/changes")},
    **{name: ("sinceQueryState",) for name in METHODS if name.endswith("/queryChanges")},
    "SearchSnippet/get": ("emailIds",),
    "Email/import": ("emails",),
    "Email/parse": ("blobIds",),
    "Email/copy": ("fromAccountId", "create"),
    "Blob/copy": ("fromAccountId", "blobIds"),
    "Blob/upload": ("create",),
    "Blob/get": ("ids",),
    "Blob/lookup": ("typeNames", "ids"),
}
TAKES_NO_ACCOUNT: Final = frozenset({"Core/echo", "PushSubscription/get", "PushSubscription/set"})
# Hypothesis favours the first entries of a list: the mail methods come first, Core/echo last.
ALL_METHODS: Final = tuple(
    sorted(METHODS, key=lambda n: (n == "Core/echo", not n.startswith(("Email/", "Search"))))
)
READ_METHODS: Final = tuple(name for name in ALL_METHODS if name not in UPSTREAM_WRITERS)
REF_PATHS: Final = (
    "/ids",
    "/ids/*",
    "/list/*/id",
    "/list/*/threadId",
    "/list/*/emailIds",
    "/list/0/id",
    "/created/c1/id",
    "/updated",
    "/nope",
    "",
    "*",
    "/list/*/*",
    "/~1",
)


def _paths(method: str) -> list[str]:
    """Result reference paths that exist in a successful answer of ``method``."""
    kind = method.rpartition("/")[2]
    return {
        "query": ["/ids"],
        "get": ["/list/*/id", "/list/*/threadId", "/list/*/emailIds", "/notFound"],
        "changes": ["/created", "/updated", "/destroyed"],
        "queryChanges": ["/removed", "/added/*/id"],
        "set": ["/created/c1/id", "/updated", "/destroyed"],
    }.get(kind, REF_PATHS[:3])


def arguments(
    data: st.DataObject, pools: Pools, method: str, earlier: Sequence[tuple[str, str]]
) -> dict[str, Any]:
    """Arguments for ``method``: a random subset of what it takes, each value sensible or
    junk; sometimes an unknown one or a result reference to an ``earlier`` (name, callId)."""
    takes = METHODS[method](pools) if method in METHODS else {}
    args: dict[str, Any] = data.draw(
        st.fixed_dictionaries({}, optional=dict(takes)), label=f"{method} arguments"
    )
    for name in REQUIRED.get(method, ()):
        if name not in args and data.draw(st.integers(0, 19)) < 19:
            args[name] = data.draw(takes[name], label=name)
    junk = JUNK_PERCENT.get() > 0
    if method not in TAKES_NO_ACCOUNT or data.draw(st.integers(0, 9)) == 9:
        wrong_account = junk and data.draw(st.integers(0, 19)) == 19
        args["accountId"] = data.draw(TEXT) if wrong_account else pools.account_id
    if junk and data.draw(st.integers(0, 19)) == 19:
        args[data.draw(TEXT, label="unknown argument")] = data.draw(JUNK)
    if earlier and takes and data.draw(st.integers(0, 3)) == 3:
        name, call_id = data.draw(st.sampled_from(earlier), label="referenced call")
        ref = {
            "resultOf": data.draw(mostly(st.just(call_id), TEXT)),
            "name": data.draw(mostly(st.just(name), st.sampled_from(list(METHODS)))),
            "path": data.draw(mostly(st.sampled_from(_paths(name)), st.sampled_from(REF_PATHS))),
        }
        target = data.draw(st.sampled_from(sorted(takes)), label="referencing argument")
        if data.draw(st.integers(0, 3)):
            args.pop(target, None)
        args["#" + target] = data.draw(mostly(st.just(ref)), label="reference")
    return args


def method_calls(
    data: st.DataObject, pools: Pools, names: Sequence[str], max_calls: int = 4
) -> list[list[Any]]:
    """1..max_calls well-formed invocations of methods from ``names``."""
    calls: list[list[Any]] = []
    earlier: list[tuple[str, str]] = []
    JUNK_PERCENT.set(data.draw(st.sampled_from([0, 3, 10, 25]), label="junk percent"))
    for _ in range(data.draw(st.integers(1, max_calls), label="calls")):
        method = data.draw(st.sampled_from(names), label="method")
        call_id = data.draw(mostly(st.sampled_from(["a", "b", "c"]), TEXT), label="callId")
        calls.append([method, arguments(data, pools, method, earlier), call_id])
        earlier.append((method, call_id))
    return calls


# -- the properties of every answer (RFC 8620 §3.6) -------------------------------------------


def check_problem(status: int, content_type: str, body: Any) -> None:
    """A request-level error: a problem document (RFC 7807) with the status it came with."""
    assert 400 <= status < 500, (status, body)
    assert content_type == "application/problem+json", (content_type, body)
    assert isinstance(body, dict) and isinstance(body.get("type"), str), body
    assert body.get("status") == status, body


def check_response(body: Any, calls: Sequence[Any], created_ids_sent: bool) -> None:
    """A Response object answering ``calls`` in order (CORE-REQ-03, CORE-ERR-10)."""
    assert isinstance(body, dict), body
    assert isinstance(body.get("sessionState"), str), body
    assert ("createdIds" in body) == created_ids_sent, body
    responses = body.get("methodResponses")
    assert isinstance(responses, list), body
    assert len(responses) >= len(calls), (calls, responses)
    position = 0
    for name, _args, call_id in calls:
        assert position < len(responses), (calls, responses)
        first = responses[position]
        check_invocation(first, name)
        assert first[2] == call_id, (calls, responses)
        position += 1
        implicit = _IMPLICIT.get(name)
        while (
            position < len(responses)
            and first[0] == name
            and responses[position][0] == implicit
            and responses[position][2] == call_id
        ):
            check_invocation(responses[position], implicit)
            position += 1
    assert position == len(responses), (calls, responses)


def check_invocation(response: Any, method: str) -> None:
    assert isinstance(response, list) and len(response) == 3, response
    name, args, call_id = response
    assert isinstance(name, str) and isinstance(args, dict) and isinstance(call_id, str), response
    if name == "error":
        assert args.get("type") in METHOD_ERRORS, response
        assert args["type"] not in UNEXPECTED_METHOD_ERRORS, response
        return
    assert name == method, response
    for key in ("notCreated", "notUpdated", "notDestroyed"):
        failures = args.get(key)
        if failures is None:
            continue
        assert isinstance(failures, dict), response
        for error in failures.values():
            assert isinstance(error, dict) and error.get("type") in SET_ERRORS, response


def wrote_upstream(calls: Sequence[Any], body: Any) -> bool:
    """Whether any writer call in the request reported having done something."""
    if not isinstance(body, dict):
        return False
    names = {call[0] for call in calls if isinstance(call, list) and call}
    if not names & UPSTREAM_WRITERS:
        return False
    for response in body.get("methodResponses", []):
        name, args = response[0], response[1]
        if name in UPSTREAM_WRITERS and any(args.get(key) for key in _DONE_KEYS):
            return True
    return False


# -- the oracle: the account as a plain IMAP client sees it -----------------------------------

_LIST_LINE = re.compile(rb'^\((?P<flags>[^)]*)\) (?:"(?:[^"\\]|\\.)*"|NIL) (?P<name>.*)$')


def _quoted(name: bytes) -> str:
    text = name.decode()
    if text.startswith('"'):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _names(listed: list[Any]) -> list[bytes]:
    names: list[bytes] = []
    for item in listed:
        if isinstance(item, tuple):  # the name came as a literal
            names.append(b'"' + item[1].replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"')
            continue
        if item is None:
            continue
        match = _LIST_LINE.match(item)
        assert match is not None, item
        names.append(match.group("name"))
    return names


def snapshot(client: imaplib.IMAP4) -> dict[str, Any]:
    """Mailboxes, subscriptions, and every message's UID and flags (\\Recent left out: it
    belongs to whichever session saw the message first)."""
    typ, listed = client.list()
    assert typ == "OK", listed
    typ, subscribed = client.lsub()
    assert typ == "OK", subscribed
    state: dict[str, Any] = {"subscribed": sorted(_names(subscribed))}
    for name in sorted(_names(listed)):
        typ, _ = client.select(_quoted(name), readonly=True)
        if typ != "OK":  # \Noselect
            state[name.decode()] = None
            continue
        typ, fetched = client.uid("FETCH", "1:*", "(FLAGS)")
        assert typ == "OK", fetched
        messages = set()
        for line in fetched:
            if not isinstance(line, bytes):
                continue
            found = re.search(rb"UID (\d+)", line)
            flags = re.search(rb"FLAGS \(([^)]*)\)", line)
            if found and flags:
                kept = frozenset(f for f in flags.group(1).split() if f != b"\\Recent")
                messages.add((int(found.group(1)), kept))
        state[name.decode()] = sorted(messages, key=lambda m: m[0])
    if client.state == "SELECTED":
        client.close()
    return state


def dumps(value: Any) -> bytes:
    """JSON as a client would send it (lone surrogates escaped, not encoded)."""
    return json.dumps(value).encode()
