"""MDN/send and MDN/parse (RFC 9007): read receipts sent and read.

MDN/send, for each MDN object:

1. the Email must exist and ask for a receipt (a ``Disposition-Notification-To`` field):
   else ``notFound``; one that has ``$mdnsent`` already is ``mdnAlreadySent``, so a
   message is acknowledged once whatever the clients do;
2. the report (RFC 8098) goes to the Disposition-Notification-To addresses through the
   configured SMTP server, with the user's own login (as EmailSubmission does), from the
   Identity's address, with a null MAIL FROM (RFC 8098 §3: nothing answers an MDN);
   ``finalRecipient`` is the Identity's address unless the client gives one it may send as
   (else ``forbiddenFrom``); SMTP refusals are the SetErrors of EmailSubmission;
3. after the sends, ONE implicit Email/set sets ``$mdnsent`` on every Email acknowledged
   (IMAP first, with the write-proof rules of Email/set), together with the client's
   ``onSuccessUpdateEmail`` patches of the MDNs that were sent; its response follows.

MDN/parse reads each blob as an MDN message; a blob that is not one is ``notParsable``.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any, Final

from imapjmap.blobs import content as blob_store
from imapjmap.blobs.bodies import fetch_message
from imapjmap.jmap.dispatch import Call
from imapjmap.jmap.errors import (
    MethodError,
    MethodErrorType,
    SetError,
    SetErrorType,
    invalid_arguments,
    invalid_properties,
)
from imapjmap.jmap.wire import Json, JsonObject, is_id
from imapjmap.methods import standard
from imapjmap.methods.context import MethodContext
from imapjmap.methods.identity import default_address, live_identities, sender_policy
from imapjmap.methods.submission.handlers import run_implicit_email_set, send_mail
from imapjmap.mime import mdn
from imapjmap.store import email_queries as eq
from imapjmap.store import emails as em
from imapjmap.store.db import Tx

MDN_SENT: Final = "$mdnsent"
_SEND_ARGS: Final = frozenset({"accountId", "identityId", "send", "onSuccessUpdateEmail"})
_CLIENT_PROPERTIES: Final = frozenset(
    {
        "forEmailId",
        "subject",
        "textBody",
        "includeOriginalMessage",
        "reportingUA",
        "disposition",
        "finalRecipient",
        "extensionFields",
    }
)
_SERVER_PROPERTIES: Final = frozenset(
    {"mdnGateway", "originalRecipient", "originalMessageId", "error"}
)
_DEFAULT_UA: Final = "imapjmap"


# --- MDN/send: the arguments ---------------------------------------------------------------------


def _send_args(raw: JsonObject, max_objects: int) -> tuple[str, dict[str, Any], dict[str, Any]]:
    unknown = [name for name in raw if name not in _SEND_ARGS]
    if unknown:
        raise invalid_arguments(f"unknown argument '{unknown[0][:60]}'")
    identity_id = raw.get("identityId")
    if not isinstance(identity_id, str):
        raise invalid_arguments("'identityId' is required and must be an Id")
    send = raw.get("send")
    if not isinstance(send, dict) or not all(is_id(k) for k in send):
        raise invalid_arguments("'send' is required and must map creation ids to MDN objects")
    if len(send) > max_objects:
        raise MethodError(
            MethodErrorType.REQUEST_TOO_LARGE,
            f"{len(send)} MDNs exceed maxObjectsInSet ({max_objects})",
        )
    updates = raw.get("onSuccessUpdateEmail")
    if updates is not None and not (
        isinstance(updates, dict) and all(isinstance(v, dict) for v in updates.values())
    ):
        raise invalid_arguments("'onSuccessUpdateEmail' must map ids to PatchObjects, or null")
    return identity_id, send, dict(updates or {})


def _optional_string(obj: JsonObject, prop: str) -> str | None:
    value = obj.get(prop)
    if value is not None and not isinstance(value, str):
        raise invalid_properties(f"{prop} must be a String or null", prop)
    return value


def _one_line(value: Json) -> bool:
    """A string that can be a header field's value: no line break could add a field."""
    return isinstance(value, str) and not any(c in value for c in "\r\n\0")


def _report(obj: Json) -> tuple[str, mdn.Report]:
    """The Email id and the report an MDN object asks for (invalidProperties when it is
    not a valid MDN object, RFC 9007 §2)."""
    if not isinstance(obj, dict):
        raise invalid_properties("an MDN must be an object")
    server_set = sorted(k for k in obj if k in _SERVER_PROPERTIES and obj[k] is not None)
    if server_set:
        raise invalid_properties("server-set properties cannot be given", *server_set)
    unknown = sorted(k for k in obj if k not in _CLIENT_PROPERTIES | _SERVER_PROPERTIES)
    if unknown:
        raise invalid_properties("unknown properties", *unknown)
    email_id = obj.get("forEmailId")
    if not is_id(email_id):
        raise invalid_properties("forEmailId is required and must be an Id", "forEmailId")
    assert isinstance(email_id, str)
    raw_disposition = obj.get("disposition")
    if not isinstance(raw_disposition, dict) or set(raw_disposition) != {
        "actionMode",
        "sendingMode",
        "type",
    }:
        raise invalid_properties(
            "disposition must be {actionMode, sendingMode, type}", "disposition"
        )
    disposition = mdn.Disposition(
        raw_disposition["actionMode"], raw_disposition["sendingMode"], raw_disposition["type"]
    )
    if (
        disposition.action_mode not in mdn.ACTION_MODES
        or disposition.sending_mode not in mdn.SENDING_MODES
        or disposition.type not in mdn.TYPES
    ):
        raise invalid_properties("unknown disposition values", "disposition")
    include = obj.get("includeOriginalMessage", False)
    if not isinstance(include, bool):
        raise invalid_properties(
            "includeOriginalMessage must be a Boolean", "includeOriginalMessage"
        )
    fields = obj.get("extensionFields")
    if fields is not None and not (
        isinstance(fields, dict)
        and all(mdn.is_field_name(k) and _one_line(v) for k, v in fields.items())
        and not any(k.lower() in mdn.KNOWN_FIELDS for k in fields)
    ):
        raise invalid_properties(
            "extensionFields must map new field names to Strings", "extensionFields"
        )
    texts = {
        p: _optional_string(obj, p)
        for p in ("subject", "textBody", "reportingUA", "finalRecipient")
    }
    for prop, value in texts.items():
        if prop != "textBody" and value is not None and not _one_line(value):
            raise invalid_properties(f"{prop} must be one line", prop)
    return email_id, mdn.Report(
        disposition=disposition,
        subject=texts["subject"],
        text_body=texts["textBody"],
        reporting_ua=texts["reportingUA"],
        final_recipient=texts["finalRecipient"],
        extension_fields=dict(fields or {}),
        include_original_message=include,
    )


# --- MDN/send: one MDN -------------------------------------------------------------------------


def _with_defaults(report: mdn.Report, request: mdn.Request, final_address: str) -> mdn.Report:
    """The report as sent: the server's properties filled in (RFC 9007 §2.1)."""
    kind = report.disposition.type
    subject = request.subject or "(no subject)"
    return mdn.Report(
        disposition=report.disposition,
        subject=report.subject
        if report.subject is not None
        else f"Return receipt ({kind}): {subject}",
        text_body=(
            report.text_body
            if report.text_body is not None
            else f'The message "{subject}" sent to {final_address} has been {kind}.\r\n'
            "This is no guarantee that it was read or understood.\r\n"
        ),
        reporting_ua=report.reporting_ua or _DEFAULT_UA,
        original_recipient=request.original_recipient,
        final_recipient=report.final_recipient or f"rfc822; {final_address}",
        original_message_id=request.message_id,
        extension_fields=report.extension_fields,
        include_original_message=report.include_original_message,
    )


def _final_address(final_recipient: str) -> str:
    """The address of a Final-Recipient value (``rfc822; a@b``, or the bare address)."""
    kind, sep, address = final_recipient.partition(";")
    return address.strip() if sep and kind.strip().lower() == "rfc822" else final_recipient.strip()


def to_json(report: mdn.Report, email_id: str | None) -> JsonObject:
    """The MDN object of a report (RFC 9007 §2)."""
    d = report.disposition
    return {
        "forEmailId": email_id,
        "subject": report.subject,
        "textBody": report.text_body,
        "includeOriginalMessage": report.include_original_message,
        "reportingUA": report.reporting_ua,
        "disposition": {"actionMode": d.action_mode, "sendingMode": d.sending_mode, "type": d.type},
        "mdnGateway": report.mdn_gateway,
        "originalRecipient": report.original_recipient,
        "finalRecipient": report.final_recipient,
        "originalMessageId": report.original_message_id,
        "error": list(report.error) or None,
        "extensionFields": dict(report.extension_fields) or None,
    }


class _Sender:
    """The sends of one MDN/send call."""

    def __init__(self, ctx: MethodContext, name: str, address: str) -> None:
        self.ctx = ctx
        self.name = name
        self.address = address  # the Identity's, or the login's default for a "*@" one
        self.policy = sender_policy(ctx.cfg, ctx.account.username)
        self.sent = 0

    async def send(self, obj: Json) -> tuple[str, JsonObject]:
        """The acknowledged Email's id and what the server set (the ``sent`` entry)."""
        ctx = self.ctx
        email_id, report = _report(obj)
        row = await ctx.read(lambda tx: em.email(tx, ctx.account_id, email_id))
        raw = None
        if row is not None:
            raw = await fetch_message(ctx.store, ctx.upstream, ctx.account_id, email_id)
        if row is None or raw is None:
            raise SetError(SetErrorType.NOT_FOUND, "forEmailId names no Email", ["forEmailId"])
        if row.keywords.get(MDN_SENT):
            raise SetError(SetErrorType.MDN_ALREADY_SENT, "the Email has $mdnsent already")
        request = mdn.requested(raw)
        if not request.notify:
            raise SetError(
                SetErrorType.NOT_FOUND,
                "the Email asks for no receipt (Disposition-Notification-To)",
            )
        if report.final_recipient is not None and not self.policy.allows(
            _final_address(report.final_recipient)
        ):
            raise SetError(
                SetErrorType.FORBIDDEN_FROM,
                "you may not answer as that finalRecipient",
                ["finalRecipient"],
            )
        full = _with_defaults(report, request, self.address)
        domain = self.address.rpartition("@")[2] or "localhost"
        message = mdn.build(
            full,
            sender=(self.name, self.address),
            to=request.notify,
            original=raw if full.include_original_message else None,
            message_id=f"<{secrets.token_urlsafe(18)}@{domain}>",
        )
        await self._submit(request.notify, message)
        shown = to_json(full, email_id)
        # RFC 9007 §2.1: ``sent`` holds what the client did not set
        return email_id, {k: v for k, v in shown.items() if obj.get(k) is None and v is not None}

    async def _submit(self, rcpts: tuple[str, ...], message: bytes) -> None:
        rcpt_params: list[tuple[str, dict[str, str | None]]] = [(r, {}) for r in rcpts]
        # RFC 8098 §3: a null reverse-path
        await send_mail(self.ctx, "", {}, rcpt_params, message, earlier=self.sent, what="MDN")
        self.sent += 1


def _implicit_update(
    ctx: MethodContext, acknowledged: Mapping[str, str], updates: Mapping[str, JsonObject]
) -> JsonObject:
    """The implicit Email/set: ``$mdnsent`` on each acknowledged Email, with the client's
    patches of the MDNs sent (keyed ``#creationId``: others are skipped)."""
    patches: dict[str, JsonObject] = {email_id: {} for email_id in acknowledged.values()}
    for key, patch in updates.items():
        email_id = acknowledged.get(key[1:]) if key.startswith("#") else None
        if email_id is not None:
            patches[email_id].update(patch)
    for patch in patches.values():
        keywords = patch.get("keywords")
        if isinstance(keywords, dict):  # the client replaces them all: keep ours among them
            keywords[MDN_SENT] = True
        else:
            patch[f"keywords/{MDN_SENT}"] = True
    return {"accountId": ctx.account_id, "update": patches}


async def mdn_send(ctx: MethodContext, call: Call) -> JsonObject | list[tuple[str, JsonObject]]:
    identity_id, send, updates = _send_args(call.args, ctx.cfg.limits.max_objects_in_set)
    await ctx.refresh()
    identity = next((i for i in await live_identities(ctx) if i.id == identity_id), None)
    if identity is None:
        raise invalid_arguments("identityId names no Identity")
    address = identity.email
    if address.startswith("*@"):
        address = default_address(ctx.cfg, ctx.account.username) or address[2:]
    sender = _Sender(ctx, identity.name, address)
    sent: JsonObject = {}
    not_sent: JsonObject = {}
    acknowledged: dict[str, str] = {}
    for cid, obj in send.items():
        try:
            email_id, shown = await sender.send(obj)
        except SetError as exc:
            not_sent[cid] = exc.to_json()
            continue
        sent[cid] = shown
        acknowledged[cid] = email_id
    response: JsonObject = {
        "accountId": ctx.account_id,
        "sent": sent or None,
        "notSent": not_sent or None,
    }
    if not acknowledged:
        return response
    implicit = _implicit_update(ctx, acknowledged, updates)
    return [("MDN/send", response), await run_implicit_email_set(ctx, call, implicit)]


# --- MDN/parse ----------------------------------------------------------------------------------


def _email_with_message_id(tx: Tx, account_id: str, message_id: str | None) -> str | None:
    """The Email of this account whose Message-ID is ``message_id`` (with brackets), if any."""
    if not message_id:
        return None
    bare = message_id.strip().removeprefix("<").removesuffix(">")
    thread = em.thread_refs(tx, account_id, [bare]).get(bare)
    if thread is not None:
        for email_id in eq.thread_members(tx, account_id, [thread[0]]).get(thread[0], []):
            row = em.email(tx, account_id, email_id)
            if row is not None and bare in row.message_ids:
                return email_id
    # the server threads the mail (THREADID): the cache keeps no Message-ID index then
    return next(iter(em.live_ids_with_message_id(tx, account_id, bare)), None)


async def _email_for(ctx: MethodContext, message_id: str | None) -> str | None:
    return await ctx.read(lambda tx: _email_with_message_id(tx, ctx.account_id, message_id))


async def mdn_parse(ctx: MethodContext, call: Call) -> JsonObject:
    unknown = [name for name in call.args if name not in ("accountId", "blobIds")]
    if unknown:
        raise invalid_arguments(f"unknown argument '{unknown[0][:60]}'")
    blob_ids = call.args.get("blobIds")
    if not isinstance(blob_ids, list) or not all(isinstance(b, str) for b in blob_ids):
        raise invalid_arguments("'blobIds' is required and must be an array of Ids")
    limit = ctx.cfg.limits.max_objects_in_get
    if len(set(blob_ids)) > limit:
        raise MethodError(
            MethodErrorType.REQUEST_TOO_LARGE, f"more blobIds than maxObjectsInGet ({limit})"
        )
    await ctx.refresh()
    parsed: JsonObject = {}
    not_parsable: list[str] = []
    not_found: list[str] = []
    for blob_id in dict.fromkeys(standard.resolve_ids(call, blob_ids)):
        blob = await blob_store.read(ctx.store, ctx.upstream, ctx.account_id, blob_id)
        report = None if blob is None else mdn.parse(blob.data)
        if blob is None:
            not_found.append(blob_id)
        elif report is None:
            not_parsable.append(blob_id)
        else:
            email_id = await _email_for(ctx, report.original_message_id)
            parsed[blob_id] = to_json(report, email_id)
    return {
        "accountId": ctx.account_id,
        "parsed": parsed or None,
        "notParsable": not_parsable or None,
        "notFound": not_found or None,
    }
