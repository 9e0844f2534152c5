"""EmailSubmission/get, /changes, /query, /queryChanges, /set (RFC 8621 §7, SUB-01..03).

Theory of operation
-------------------
A create sends at once, synchronously, on a connection of its own (:mod:`imapjmap.smtp`),
so every submission is ``undoStatus: "final"`` and ``maxDelayedSend`` is 0.  In order:

1. the Identity and the Email must exist (else ``invalidProperties``); the Email's exact
   bytes are fetched from IMAP;
2. the envelope is the client's, or derived from the message when null (SUB-01, see
   :mod:`imapjmap.mime.submission`); no recipients is ``noRecipients``, a malformed one
   ``invalidRecipients``; FUTURERELEASE parameters are refused (no delayed send);
3. the sender policy (:mod:`imapjmap.methods.identity`): MAIL FROM not allowed is
   ``forbiddenMailFrom`` (the empty reverse path is allowed), a From address not allowed
   is ``forbiddenFrom``;
4. the Bcc header fields are removed and every other octet is sent as stored (SUB-01);
5. SMTP refusals become SetErrors (SUB-03): sender → ``forbiddenMailFrom``; any recipient
   refused → ``invalidRecipients`` listing them (nothing is sent: all or nothing, as mail
   clients do); more recipients than the server takes in one message (``452 4.5.3``) →
   ``tooManyRecipients`` with ``maxRecipients``; too big → ``tooLarge`` with ``maxSize``;
   From refused → ``forbiddenFrom``; login refused, policy and temporary refusals →
   ``forbiddenToSend`` with the server's reply; a parameter the server does not offer →
   ``invalidProperties``;
6. the record is stored BEFORE the SMTP transaction, each recipient ``delivered:
   "unknown"`` with :data:`~imapjmap.store.submissions.UNSENT_REPLY`; the server's answer
   makes it ``queued`` with the RCPT reply (``delivered`` never changes later: the proxy
   receives no DSNs), a refusal or an outage before the data went out destroys it.

A record still without an answer is a send in progress, or one whose instance died (or
lost the connection) after the data may have gone out.  Another create of the same Email,
on any instance of a cluster, is then ``forbiddenToSend`` naming it rather than sending the
mail a second time; the client destroys that record to send anyway.

The SMTP login is the user's own (``smtp.auth = "user"``): the password they logged in
with, or, for a user who logged in with ``Authorization: Bearer``, their OAuth token with
``AUTH XOAUTH2`` (:mod:`imapjmap.smtp` Rule 6).  It is the pool's current credential: a
request with a token other than the verified one is verified again and renews the pool's
token (``ImapPool.renew_token``), so a submission uses the token of its own request (or a
newer one), never an expired one the client has replaced.  A refused token, or an SMTP
server without XOAUTH2, is ``forbiddenToSend`` with a description (SUB-03).

An unreachable SMTP server is the method error ``serverUnavailable`` when nothing was sent
in this call yet, else ``serverPartialFail``; so is a connection lost after the data went
out (the message may have been delivered).

Sent copies: the proxy never files a copy itself.  The client moves its draft into Sent
through ``onSuccessUpdateEmail``, so the message is filed exactly once.  After every
create, update and destroy, ONE implicit Email/set applies ``onSuccessUpdateEmail`` /
``onSuccessDestroyEmail`` for the submissions that succeeded in this call (keys are
submission ids or ``#creationId``), and its response follows this one (SUB-02).  It runs
only when there is something to do.  If it fails as a whole, its error takes its place in
the responses, after this call's successful EmailSubmission/set response (which must not
be lost: the mail was sent).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from imapjmap import smtp
from imapjmap.blobs.bodies import fetch_message
from imapjmap.config import SmtpConfig
from imapjmap.errors import ProxyError, SmtpUnavailable
from imapjmap.jmap import responses
from imapjmap.jmap import standard as std
from imapjmap.jmap.args import Comparator, QueryArgs, QueryChangesArgs, SetArgs
from imapjmap.jmap.dispatch import Call, UnknownCreationId, resolve_creation_id
from imapjmap.jmap.errors import (
    MethodError,
    MethodErrorType,
    SetError,
    SetErrorType,
    invalid_arguments,
    invalid_properties,
)
from imapjmap.jmap.patch import apply_patch
from imapjmap.jmap.wire import JsonObject, parse_utc_date, utc_date
from imapjmap.methods import standard
from imapjmap.methods.context import MethodContext
from imapjmap.methods.identity import SenderPolicy, live_identities, sender_policy
from imapjmap.mime.submission import (
    EnvelopeProblem,
    derive_envelope,
    header_addresses,
    is_address,
    strip_bcc,
)
from imapjmap.store import emails as em
from imapjmap.store import queries as q
from imapjmap.store import submissions as sub
from imapjmap.store.db import Tx

PROPERTIES: Final = (
    "id",
    "identityId",
    "emailId",
    "threadId",
    "envelope",
    "sendAt",
    "undoStatus",
    "deliveryStatus",
    "dsnBlobIds",
    "mdnBlobIds",
)
_CLIENT_SET: Final = ("identityId", "emailId", "envelope")
_SERVER_SET: Final = tuple(p for p in PROPERTIES if p not in _CLIENT_SET)
SORT_PROPERTIES: Final = ("emailId", "threadId", "sentAt", "sendAt")  # RFC: "sentAt"
_DELAYED: Final = frozenset({"HOLDFOR", "HOLDUNTIL"})  # RFC 4865 FUTURERELEASE
_ON_SUCCESS: Final = ("onSuccessUpdateEmail", "onSuccessDestroyEmail")


def _status(reply: str, delivered: str) -> JsonObject:
    return {"smtpReply": reply, "delivered": delivered, "displayed": "unknown"}


def to_json(row: sub.SubmissionRow) -> JsonObject:
    return {
        "id": row.id,
        "identityId": row.identity_id,
        "emailId": row.email_id,
        "threadId": row.thread_id,
        "envelope": row.envelope,
        "sendAt": utc_date(dt.datetime.fromtimestamp(row.send_at, dt.UTC)),
        "undoStatus": row.undo_status,
        "deliveryStatus": row.delivery_status,
        "dsnBlobIds": [],
        "mdnBlobIds": [],
    }


async def submission_extensions(cfg: SmtpConfig) -> dict[str, list[str]]:
    """``submissionExtensions`` of the session's submission capability: those of the SMTP
    server of the account's upstream."""
    return await smtp.ehlo_extensions(cfg)


# --- get, changes, query ---------------------------------------------------------------------


async def _rows(ctx: MethodContext) -> tuple[list[sub.SubmissionRow], int]:
    def read(tx: Tx) -> tuple[list[sub.SubmissionRow], int]:
        rows = sub.live_submissions(tx, ctx.account_id)
        return rows, q.type_state(tx, ctx.account_id, sub.SUBMISSION_TYPE)

    return await ctx.read(read)


async def email_submission_get(ctx: MethodContext, call: Call) -> JsonObject:
    args = standard.get_args(ctx, call.args, PROPERTIES)
    rows, seq = await _rows(ctx)
    by_id = {row.id: row for row in rows}
    wanted = standard.resolve_ids(call, args.ids) if args.ids is not None else list(by_id)
    properties = args.properties if args.properties is not None else list(PROPERTIES)
    found, not_found = responses.pick(wanted, by_id)
    return responses.get_response(
        [{k: v for k, v in to_json(row).items() if k in properties} for row in found],
        not_found,
        account_id=ctx.account_id,
        state=ctx.encode_state(seq),
    )


async def email_submission_changes(ctx: MethodContext, call: Call) -> JsonObject:
    response, _, _ = await standard.changes(ctx, call.args, "submissions", sub.SUBMISSION_TYPE)
    return response


def _id_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


_FILTER_CHECKS: Final[dict[str, Callable[[Any], bool]]] = {
    "identityIds": _id_list,
    "emailIds": _id_list,
    "threadIds": _id_list,
    "undoStatus": lambda v: isinstance(v, str),
    "before": lambda v: parse_utc_date(v) is not None,
    "after": lambda v: parse_utc_date(v) is not None,
}


def _validate_condition(condition: JsonObject) -> None:
    for key, value in condition.items():
        check = _FILTER_CHECKS.get(key)
        if check is None:
            raise MethodError(
                MethodErrorType.UNSUPPORTED_FILTER,
                f"unknown EmailSubmission filter property {key[:40]!r}",
            )
        if not check(value):
            raise invalid_arguments(f"EmailSubmission filter property {key!r} has the wrong type")


def _seconds(value: str) -> float:
    parsed = parse_utc_date(value)
    assert parsed is not None  # checked by _validate_condition
    return parsed.timestamp()


def _matches(row: sub.SubmissionRow, condition: JsonObject) -> bool:
    for key, value in condition.items():
        if key == "before":
            ok = row.send_at < _seconds(value)
        elif key == "after":
            ok = row.send_at >= _seconds(value)
        elif key == "undoStatus":
            ok = row.undo_status == value
        else:  # identityIds, emailIds, threadIds
            attribute = {"identityIds": "identity_id", "emailIds": "email_id"}.get(key, "thread_id")
            ok = getattr(row, attribute) in value
        if not ok:
            return False
    return True


def _query(
    rows: Sequence[sub.SubmissionRow], filter_: Any, sort: Sequence[Comparator]
) -> list[str]:
    parsed = std.validate_filter(filter_, _validate_condition)

    def hit(row: sub.SubmissionRow) -> bool:
        return std.matches(parsed, lambda condition: _matches(row, condition))

    hits = [row for row in rows if hit(row)]

    def value_of(row: sub.SubmissionRow, comparator: Comparator) -> std.SortValue:
        if comparator.property == "emailId":
            return row.email_id
        if comparator.property == "threadId":
            return row.thread_id
        return row.send_at

    ordered = std.sort_records(
        hits, sort or (Comparator("sentAt"),), value_of, lambda r: (r.created_seq, r.id)
    )
    return [row.id for row in ordered]


async def email_submission_query(ctx: MethodContext, call: Call) -> JsonObject:
    args = QueryArgs.parse(call.args, sort_properties=SORT_PROPERTIES, limits=ctx.query_limits)
    rows, seq = await _rows(ctx)
    ids = _query(rows, args.filter, args.sort)
    return standard.query_response(ctx, args, ids, seq, can_calculate_changes=True)


async def email_submission_query_changes(ctx: MethodContext, call: Call) -> JsonObject:
    args = QueryChangesArgs.parse(
        call.args, sort_properties=SORT_PROPERTIES, limits=ctx.query_limits
    )
    rows, _ = await _rows(ctx)
    ids = _query(rows, args.filter, args.sort)
    # every property a filter or a sort reads is immutable: the generic removal is exact
    return await standard.query_changes(
        ctx, args, ids, "submissions", sub.SUBMISSION_TYPE, can_calculate=True
    )


# --- set: create -----------------------------------------------------------------------------


def _address(value: Any, prop: str) -> tuple[str, dict[str, str | None]]:
    """A JMAP envelope Address {email, parameters: Object|null}."""
    if not isinstance(value, dict) or not set(value) <= {"email", "parameters"}:
        raise invalid_properties(f"{prop} must be an Address {{email, parameters}}", "envelope")
    email, params = value.get("email"), value.get("parameters")
    if not isinstance(email, str):
        raise invalid_properties(f"{prop}.email must be a String", "envelope")
    if params is None:
        return email, {}
    if not isinstance(params, dict) or not all(isinstance(v, str | None) for v in params.values()):
        raise invalid_properties(f"{prop}.parameters must map names to String|null", "envelope")
    delayed = _DELAYED & {k.upper() for k in params}
    if delayed:
        raise invalid_properties(
            f"delayed send ({', '.join(sorted(delayed))}) is not supported: maxDelayedSend is 0",
            "envelope",
        )
    return email, dict(params)


def _explicit_envelope(value: Any) -> tuple[str, dict[str, str | None], list[tuple[str, Any]]]:
    if not isinstance(value, dict) or set(value) != {"mailFrom", "rcptTo"}:
        raise invalid_properties("envelope must be {mailFrom, rcptTo} or null", "envelope")
    mail_from, mail_params = _address(value["mailFrom"], "mailFrom")
    if not isinstance(value["rcptTo"], list):
        raise invalid_properties("rcptTo must be an array of Address", "envelope")
    rcpts = [_address(item, "rcptTo[]") for item in value["rcptTo"]]
    return mail_from, mail_params, rcpts


def _envelope_json(mail_from: str, mail_params: dict[str, Any], rcpts: Sequence[Any]) -> JsonObject:
    return {
        "mailFrom": {"email": mail_from, "parameters": mail_params or None},
        "rcptTo": [{"email": e, "parameters": p or None} for e, p in rcpts],
    }


def _check_create(obj: JsonObject) -> None:
    unknown = [k for k in obj if k not in PROPERTIES]
    if unknown:
        raise invalid_properties("unknown properties", *unknown)
    server = [k for k in obj if k in _SERVER_SET and obj[k] is not None]
    if server:
        raise invalid_properties("server-set properties cannot be given", *server)


def _reference(call: Call, obj: JsonObject, prop: str) -> str:
    value = obj.get(prop)
    if not isinstance(value, str):
        raise invalid_properties(f"{prop} is required and must be an Id", prop)
    try:
        return resolve_creation_id(call, value)
    except UnknownCreationId as exc:
        raise exc.set_error(SetErrorType.INVALID_PROPERTIES, prop) from None


def _check_senders(raw: bytes, mail_from: str, policy: SenderPolicy) -> None:
    """Step 3 of the module docstring."""
    if mail_from and not policy.allows(mail_from):
        raise SetError(SetErrorType.FORBIDDEN_MAIL_FROM, f"you may not send as {mail_from}")
    froms = [a for field in header_addresses(raw, "From") for a in field]
    if not froms:
        raise SetError(SetErrorType.INVALID_EMAIL, "the message has no From", ["from"])
    denied = [a for a in froms if not policy.allows(a)]
    if denied:
        raise SetError(SetErrorType.FORBIDDEN_FROM, f"you may not send as {', '.join(denied)}")


def smtp_set_error(exc: smtp.SubmitRefused, size: int) -> SetError:
    """Step 5 of the module docstring."""
    said = f" (the SMTP server said: {exc.reply})" if exc.reply else ""
    reason = exc.reason
    if reason == "recipients":
        replies = "; ".join(f"{r.address}: {r.reply}" for r in exc.refused)
        return SetError(
            SetErrorType.INVALID_RECIPIENTS,
            f"the SMTP server refused {replies}",
            invalidRecipients=[r.address for r in exc.refused],
        )
    if reason == "too-many":
        # RFC 8621 §7.5: maxRecipients MUST come with it; the server told us by refusing
        # the recipient after the last one it took
        return SetError(
            SetErrorType.TOO_MANY_RECIPIENTS,
            exc.description + said,
            maxRecipients=exc.max_recipients or 0,
        )
    if reason == "sender":
        return SetError(SetErrorType.FORBIDDEN_MAIL_FROM, exc.description + said)
    if reason == "from":
        return SetError(SetErrorType.FORBIDDEN_FROM, exc.description + said)
    if reason == "size":
        return SetError(
            SetErrorType.TOO_LARGE, exc.description + said, maxSize=exc.max_size or size - 1
        )
    if reason == "parameters":
        return SetError(SetErrorType.INVALID_PROPERTIES, exc.description, ["envelope"])
    if reason == "temporary" and exc.refused:
        said = " (" + "; ".join(f"{r.address}: {r.reply}" for r in exc.refused) + ")"
    if reason == "temporary":
        return SetError(SetErrorType.FORBIDDEN_TO_SEND, "refused for now, try later" + said)
    # "auth" (the login was refused, or cannot be made: a Bearer login and a server without
    # AUTH XOAUTH2) and "policy": RFC 8621 §7.5 forbiddenToSend, "the user does not have
    # permission to send at all right now for some reason", with a user-displayable
    # description, which is what the client should show.  Not serverFail: that is a method
    # error (RFC 8620 §3.6.2), not a SetError, and would fail the whole call; nor is the
    # server failing: the same user logging in with a password could send.
    return SetError(SetErrorType.FORBIDDEN_TO_SEND, exc.description + said)


class _Creator:
    """The creates of one EmailSubmission/set call; counts what was sent."""

    def __init__(self, ctx: MethodContext, call: Call) -> None:
        self.ctx = ctx
        self.call = call
        self.sent = 0
        self.policy = sender_policy(ctx.cfg, ctx.account.username)
        self.identities: dict[str, str] = {}

    async def create(self, obj: Any) -> tuple[sub.SubmissionRow, bool]:
        """The stored row, and whether the envelope was derived (SUB-01)."""
        ctx = self.ctx
        if not isinstance(obj, dict):
            raise invalid_properties("an EmailSubmission must be an object")
        _check_create(obj)
        identity_id = _reference(self.call, obj, "identityId")
        email_id = _reference(self.call, obj, "emailId")
        identity_email = self.identities.get(identity_id)
        if identity_email is None:
            raise invalid_properties("identityId names no Identity", "identityId")
        email = await ctx.read(lambda tx: em.email(tx, ctx.account_id, email_id))
        raw = None
        if email is not None:
            raw = await fetch_message(ctx.store, ctx.upstream, ctx.account_id, email_id)
        if email is None or raw is None:
            raise invalid_properties("emailId names no Email", "emailId")
        derived = obj.get("envelope") is None
        try:
            if derived:
                mail_from, rcpt_list = derive_envelope(raw, identity_email)
                mail_params: dict[str, str | None] = {}
                rcpts: list[tuple[str, Any]] = [(r, {}) for r in rcpt_list]
            else:
                mail_from, mail_params, rcpts = _explicit_envelope(obj["envelope"])
        except EnvelopeProblem as exc:
            raise SetError(SetErrorType.INVALID_EMAIL, exc.description, [exc.prop]) from None
        if not rcpts:
            raise SetError(SetErrorType.NO_RECIPIENTS, "the envelope has no recipients")
        bad = [r for r, _ in rcpts if not is_address(r)]
        if bad:
            raise SetError(
                SetErrorType.INVALID_RECIPIENTS, "malformed addresses", invalidRecipients=bad
            )
        if mail_from and not is_address(mail_from):
            raise invalid_properties("mailFrom is not an address", "envelope")
        _check_senders(raw, mail_from, self.policy)
        message = strip_bcc(raw)
        row = await self._claim(
            sub.SubmissionRow(
                account_id=ctx.account_id,
                id="S" + secrets.token_urlsafe(12),
                identity_id=identity_id,
                email_id=email_id,
                thread_id=email.thread_id,
                envelope=_envelope_json(mail_from, mail_params, rcpts),
                send_at=int(time.time()),
                undo_status="final",
                delivery_status={r: _status(sub.UNSENT_REPLY, "unknown") for r, _ in rcpts},
            )
        )
        return await self._send_claimed(row, mail_from, mail_params, rcpts, message), derived

    async def _send_claimed(
        self,
        row: sub.SubmissionRow,
        mail_from: str,
        mail_params: dict[str, str | None],
        rcpts: Sequence[tuple[str, Any]],
        message: bytes,
    ) -> sub.SubmissionRow:
        """Send the claimed ``row``; it gets the server's replies, or goes if nothing went out."""
        ctx = self.ctx
        try:
            result = await self._send(mail_from, mail_params, rcpts, message)
        except MethodError as exc:
            if not isinstance(exc.__cause__, smtp.SmtpLostDuringData):
                await self._forget(row)
            raise  # lost after the data went out: the row stays, its outcome unknown
        except SetError:
            await self._forget(row)
            raise
        status = {r.address: _status(str(r.reply), "queued") for r in result.recipients}

        def write(tx: Tx) -> None:
            seq = q.next_seq(tx, ctx.account_id, [sub.SUBMISSION_TYPE])
            sub.set_delivery_status(tx, ctx.account_id, row.id, status, seq)

        await ctx.write(write)
        return dataclasses.replace(row, delivery_status=status)

    async def _claim(self, row: sub.SubmissionRow) -> sub.SubmissionRow:
        """Store ``row`` before the SMTP transaction, so that an instance that dies while
        sending leaves a trace: another create of the same Email, on any instance, is
        refused while a submission of it has no outcome, instead of sending it again."""
        ctx = self.ctx

        def write(tx: Tx) -> str | None:
            earlier = sub.unsent_submission(tx, ctx.account_id, row.email_id)
            if earlier is not None:
                return earlier.id
            sub.insert_submission(tx, row, q.next_seq(tx, ctx.account_id, [sub.SUBMISSION_TYPE]))
            return None

        earlier = await ctx.write(write)
        if earlier is not None:
            raise SetError(
                SetErrorType.FORBIDDEN_TO_SEND,
                f"EmailSubmission {earlier} of this Email was interrupted or is in progress:"
                " it may have been sent; destroy it to send the Email again",
            )
        return row

    async def _forget(self, row: sub.SubmissionRow) -> None:
        """Nothing was sent for ``row``: it goes, as if it had never been made."""
        ctx = self.ctx

        def write(tx: Tx) -> None:
            seq = q.next_seq(tx, ctx.account_id, [sub.SUBMISSION_TYPE])
            sub.destroy_submission(tx, ctx.account_id, row.id, seq)

        await ctx.write(write)

    async def _send(
        self,
        mail_from: str,
        mail_params: dict[str, str | None],
        rcpts: Sequence[tuple[str, Any]],
        message: bytes,
    ) -> smtp.SubmitResult:
        result = await send_mail(
            self.ctx, mail_from, mail_params, rcpts, message, earlier=self.sent, what="message"
        )
        self.sent += 1
        return result


async def send_mail(
    ctx: MethodContext,
    mail_from: str,
    mail_params: dict[str, str | None],
    rcpts: Sequence[tuple[str, Any]],
    message: bytes,
    *,
    earlier: int,
    what: str,
) -> smtp.SubmitResult:
    """Submit ``message`` to the login's own SMTP server (its upstream's), its failures as
    the RFC's errors.  ``earlier``: how many ``what``s this method call already sent, which
    makes an outage now a partial failure rather than an unavailable server."""
    try:
        return await smtp.submit(
            ctx.smtp,
            username=ctx.account.username,
            password=ctx.upstream.login_password(),  # a BearerToken: XOAUTH2
            mail_from=mail_from,
            mail_params=mail_params,
            rcpts=rcpts,
            message=message,
        )
    except smtp.SubmitRefused as exc:
        raise smtp_set_error(exc, len(message)) from None
    except smtp.SmtpLostDuringData as exc:
        raise MethodError(
            MethodErrorType.SERVER_PARTIAL_FAIL,
            f"the SMTP connection failed after the {what} was sent: it may have been delivered",
        ) from exc
    except SmtpUnavailable as exc:
        if earlier:
            raise MethodError(
                MethodErrorType.SERVER_PARTIAL_FAIL,
                f"the SMTP server failed after some {what}s were sent",
            ) from exc
        # what failed, where and why ("SMTP connect at host:port: timed out"): the
        # user can tell an outage from a misconfiguration without the server's log
        raise MethodError(MethodErrorType.SERVER_UNAVAILABLE, _outage(exc)) from exc


def _outage(exc: SmtpUnavailable) -> str:
    """The description of an SMTP outage: the error's text, printable and bounded."""
    text = str(exc) or type(exc).__name__
    if not text.isprintable():
        text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= 300 else text[:299] + "…"


# --- set: update, destroy, the implicit Email/set --------------------------------------------


async def _update(ctx: MethodContext, submission_id: str, patch: JsonObject) -> str:
    """The submission's email id; the only change a client may ask for is a cancel, which
    cannot be done: everything is sent at once (``cannotUnsend``)."""
    rows = await ctx.read(lambda tx: sub.submissions(tx, ctx.account_id, [submission_id]))
    row = rows.get(submission_id)
    if row is None:
        raise SetError(SetErrorType.NOT_FOUND)
    before = to_json(row)
    after = apply_patch(before, patch)
    changed = sorted({k for k in (*before, *after) if before.get(k) != after.get(k)})
    if changed == ["undoStatus"] and after.get("undoStatus") == "canceled":
        raise SetError(SetErrorType.CANNOT_UNSEND, "the message was sent at once")
    if changed:
        raise invalid_properties("these properties cannot be changed", *changed)
    return row.email_id


async def _destroy(ctx: MethodContext, submission_id: str) -> str:
    """Forget the record (the delivery is not affected); its email id."""

    def write(tx: Tx) -> str | None:
        row = sub.submissions(tx, ctx.account_id, [submission_id]).get(submission_id)
        if row is None:
            return None
        seq = q.next_seq(tx, ctx.account_id, [sub.SUBMISSION_TYPE])
        sub.destroy_submission(tx, ctx.account_id, submission_id, seq)
        return row.email_id

    email_id = await ctx.write(write)
    if email_id is None:
        raise SetError(SetErrorType.NOT_FOUND)
    return email_id


def _on_success_args(args: SetArgs) -> tuple[dict[str, JsonObject], list[str]]:
    update = args.extra.get("onSuccessUpdateEmail")
    destroy = args.extra.get("onSuccessDestroyEmail")
    if update is not None and not (
        isinstance(update, dict) and all(isinstance(v, dict) for v in update.values())
    ):
        raise invalid_arguments("'onSuccessUpdateEmail' must map ids to PatchObjects, or null")
    if destroy is not None and not _id_list(destroy):
        raise invalid_arguments("'onSuccessDestroyEmail' must be an array of Ids, or null")
    return dict(update or {}), list(destroy or [])


def _implicit_email_set(
    ctx: MethodContext,
    updates: dict[str, JsonObject],
    destroys: list[str],
    succeeded: dict[str, str],
) -> JsonObject | None:
    """The arguments of the implicit Email/set (SUB-02), or None when it has nothing to do.

    ``succeeded`` maps ``#creationId`` and submission ids that succeeded in this call to
    their email ids; other keys are skipped (their create/update/destroy failed)."""
    email_updates: JsonObject = {}
    for key, patch in updates.items():
        email_id = succeeded.get(key)
        if email_id is not None:
            email_updates.setdefault(email_id, {}).update(patch)
    email_destroys = list(dict.fromkeys(succeeded[k] for k in destroys if k in succeeded))
    if not email_updates and not email_destroys:
        return None
    args: JsonObject = {"accountId": ctx.account_id}
    if email_updates:
        args["update"] = email_updates
    if email_destroys:
        args["destroy"] = email_destroys
    return args


async def run_implicit_email_set(
    ctx: MethodContext, call: Call, args: JsonObject
) -> tuple[str, JsonObject]:
    from imapjmap.methods.email.set import run_email_set  # Email/set lives with Email

    implicit = Call("Email/set", args, call.call_id, call.account_id, call.created_ids, call.using)
    try:
        return "Email/set", await run_email_set(ctx, implicit, args)
    except MethodError as exc:
        return "error", exc.to_json()
    except ProxyError as exc:  # the EmailSubmission/set response must not be lost with it
        try:
            kind = MethodErrorType(exc.jmap_hint)
        except ValueError:
            kind = MethodErrorType.SERVER_FAIL
        return "error", MethodError(kind, type(exc).__name__).to_json()


async def _updates_and_destroys(
    ctx: MethodContext, call: Call, args: SetArgs, succeeded: dict[str, str]
) -> tuple[JsonObject, JsonObject, list[str], JsonObject]:
    destroy_ids = standard.resolve_ids(call, args.destroy or [])
    updated: JsonObject = {}
    not_updated: JsonObject = {}
    for key, patch in (args.update or {}).items():
        submission_id = standard.resolve_ids(call, [key])[0]
        try:
            if submission_id in destroy_ids:
                raise SetError(SetErrorType.WILL_DESTROY)
            succeeded[submission_id] = await _update(ctx, submission_id, patch)
        except SetError as exc:
            not_updated[submission_id] = exc.to_json()
        else:
            updated[submission_id] = None
    destroyed: list[str] = []
    not_destroyed: JsonObject = {}
    for submission_id in destroy_ids:
        try:
            succeeded[submission_id] = await _destroy(ctx, submission_id)
        except SetError as exc:
            not_destroyed[submission_id] = exc.to_json()
        else:
            destroyed.append(submission_id)
    return updated, not_updated, destroyed, not_destroyed


async def email_submission_set(
    ctx: MethodContext, call: Call
) -> JsonObject | list[tuple[str, JsonObject]]:
    args = SetArgs.parse(
        call.args, max_objects=ctx.cfg.limits.max_objects_in_set, extra=_ON_SUCCESS
    )
    on_update, on_destroy = _on_success_args(args)
    await ctx.refresh()
    creator = _Creator(ctx, call)
    creator.identities = {row.id: row.email for row in await live_identities(ctx)}
    old_state = await ctx.state(sub.SUBMISSION_TYPE)
    if args.if_in_state is not None and args.if_in_state != old_state:
        raise MethodError(MethodErrorType.STATE_MISMATCH)
    succeeded: dict[str, str] = {}  # "#cid" or id -> email id, for SUB-02
    created: JsonObject = {}
    not_created: JsonObject = {}
    for cid, obj in (args.create or {}).items():
        try:
            row, derived = await creator.create(obj)
        except SetError as exc:
            not_created[cid] = exc.to_json()
            continue
        shown = {k: v for k, v in to_json(row).items() if k in _SERVER_SET}
        if derived:
            shown["envelope"] = row.envelope
        created[cid] = shown
        call.created_ids[cid] = row.id
        succeeded["#" + cid] = row.email_id
    updated, not_updated, destroyed, not_destroyed = await _updates_and_destroys(
        ctx, call, args, succeeded
    )
    response = responses.set_response(
        responses.SetResult(created, updated, destroyed, not_created, not_updated, not_destroyed),
        account_id=ctx.account_id,
        old_state=old_state,
        new_state=await ctx.state(sub.SUBMISSION_TYPE),
    )
    implicit = _implicit_email_set(ctx, on_update, on_destroy, succeeded)
    if implicit is None:
        return response
    return [("EmailSubmission/set", response), await run_implicit_email_set(ctx, call, implicit)]
