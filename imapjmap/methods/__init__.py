"""The method registry: one explicit table from JMAP method name to handler."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from imapjmap.jmap.dispatch import MethodSpec
from imapjmap.jmap.wire import BLOB, CORE, MAIL, MDN, QUOTA, SIEVE, SUBMISSION, VACATION, WEBSOCKET
from imapjmap.methods import core, identity, mdn, push_subscription, quota, thread
from imapjmap.methods.blob import copy as blob_copy
from imapjmap.methods.blob import methods as blob_methods
from imapjmap.methods.context import MethodContext
from imapjmap.methods.email import copy as email_copy
from imapjmap.methods.email import get as email_get
from imapjmap.methods.email import imports as email_import
from imapjmap.methods.email import parse as email_parse
from imapjmap.methods.email import query as email_query
from imapjmap.methods.email import set as email_set
from imapjmap.methods.email import snippet
from imapjmap.methods.mailbox import get as mailbox
from imapjmap.methods.mailbox import set as mailbox_set
from imapjmap.methods.sieve import capabilities as sieve_capabilities
from imapjmap.methods.sieve import scripts as sieve_scripts
from imapjmap.methods.sieve import vacation
from imapjmap.methods.submission import handlers as submission
from imapjmap.upstream.api import Upstream

REGISTRY: Final[Mapping[str, MethodSpec[MethodContext]]] = {
    "Core/echo": MethodSpec(core.core_echo, CORE, takes_account=False),
    "Mailbox/get": MethodSpec(mailbox.mailbox_get, MAIL),
    "Mailbox/changes": MethodSpec(mailbox.mailbox_changes, MAIL),
    "Mailbox/query": MethodSpec(mailbox.mailbox_query, MAIL),
    "Mailbox/queryChanges": MethodSpec(mailbox.mailbox_query_changes, MAIL),
    "Mailbox/set": MethodSpec(mailbox_set.mailbox_set, MAIL),
    "Thread/get": MethodSpec(thread.thread_get, MAIL),
    "Thread/changes": MethodSpec(thread.thread_changes, MAIL),
    "Email/get": MethodSpec(email_get.email_get, MAIL),
    "Email/changes": MethodSpec(email_get.email_changes, MAIL),
    "Email/query": MethodSpec(email_query.email_query, MAIL),
    "Email/queryChanges": MethodSpec(email_query.email_query_changes, MAIL),
    "Email/set": MethodSpec(email_set.email_set, MAIL),
    "SearchSnippet/get": MethodSpec(snippet.search_snippet_get, MAIL),
    "Identity/get": MethodSpec(identity.identity_get, SUBMISSION),
    "Identity/changes": MethodSpec(identity.identity_changes, SUBMISSION),
    "Identity/set": MethodSpec(identity.identity_set, SUBMISSION),
    "EmailSubmission/get": MethodSpec(submission.email_submission_get, SUBMISSION),
    "EmailSubmission/changes": MethodSpec(submission.email_submission_changes, SUBMISSION),
    "EmailSubmission/query": MethodSpec(submission.email_submission_query, SUBMISSION),
    "EmailSubmission/queryChanges": MethodSpec(
        submission.email_submission_query_changes, SUBMISSION
    ),
    "EmailSubmission/set": MethodSpec(submission.email_submission_set, SUBMISSION),
    "Email/import": MethodSpec(email_import.email_import, MAIL),
    "Email/parse": MethodSpec(email_parse.email_parse, MAIL),
    "Email/copy": MethodSpec(email_copy.email_copy, MAIL),
    "Blob/copy": MethodSpec(blob_copy.blob_copy, CORE),
    "Blob/upload": MethodSpec(blob_methods.blob_upload, BLOB),
    "Blob/get": MethodSpec(blob_methods.blob_get, BLOB),
    "Blob/lookup": MethodSpec(blob_methods.blob_lookup, BLOB),
    "Quota/get": MethodSpec(quota.quota_get, QUOTA),
    "Quota/changes": MethodSpec(quota.quota_changes, QUOTA),
    "Quota/query": MethodSpec(quota.quota_query, QUOTA),
    "Quota/queryChanges": MethodSpec(quota.quota_query_changes, QUOTA),
    "MDN/send": MethodSpec(mdn.mdn_send, MDN),
    "MDN/parse": MethodSpec(mdn.mdn_parse, MDN),
    "PushSubscription/get": MethodSpec(
        push_subscription.push_subscription_get, CORE, takes_account=False
    ),
    "PushSubscription/set": MethodSpec(
        push_subscription.push_subscription_set, CORE, takes_account=False
    ),
    "VacationResponse/get": MethodSpec(vacation.vacation_response_get, VACATION),
    "VacationResponse/set": MethodSpec(vacation.vacation_response_set, VACATION),
    "SieveScript/get": MethodSpec(sieve_scripts.sieve_script_get, SIEVE),
    "SieveScript/set": MethodSpec(sieve_scripts.sieve_script_set, SIEVE),
    "SieveScript/query": MethodSpec(sieve_scripts.sieve_script_query, SIEVE),
    "SieveScript/changes": MethodSpec(sieve_scripts.sieve_script_changes, SIEVE),
    "SieveScript/queryChanges": MethodSpec(sieve_scripts.sieve_script_query_changes, SIEVE),
    "SieveScript/validate": MethodSpec(sieve_scripts.sieve_script_validate, SIEVE),
}

# Capabilities whose methods are all implemented; only these are advertised (WebSocket has
# no methods: its endpoint is the /jmap/ws/ route).
CAPABILITIES: Final = frozenset(
    {CORE, MAIL, BLOB, SUBMISSION, WEBSOCKET, QUOTA, MDN, VACATION, SIEVE}
)
ACCOUNT_CAPABILITIES: Final = frozenset({MAIL, BLOB, SUBMISSION, MDN})
# Account capabilities that depend on what the account's mail server offers.
_OPTIONAL: Final = frozenset({QUOTA, VACATION, SIEVE})


def account_capabilities(upstream: Upstream) -> frozenset[str]:
    """The account capabilities of an account on ``upstream``: Quota only where the server
    reports quotas (QUOTA-01); Sieve and VacationResponse where it has ManageSieve (VAC-01)."""
    quota = {QUOTA} if upstream.offers_quota else frozenset()
    return ACCOUNT_CAPABILITIES | quota | frozenset(sieve_capabilities.details(upstream))


def usable_capabilities(upstream: Upstream) -> frozenset[str]:
    """What calls on an account on ``upstream`` may use; the others are answered
    ``accountNotSupportedByMethod``."""
    return (CAPABILITIES - _OPTIONAL) | account_capabilities(upstream)


# an account of another user's folders shared with the login: mail only (nothing is sent
# as that user, and blobs are uploaded to the login's own account)
SHARE_ACCOUNT_CAPABILITIES: Final = frozenset({MAIL})
