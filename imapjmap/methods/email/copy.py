"""Email/copy (RFC 8621 §4.7) between the accounts of one login: its own and the shares
of other users' folders (:mod:`imapjmap.upstream.shares`).

JMAP /copy only ever copies BETWEEN two accounts (RFC 8620 §5.4): filing an Email in more
mailboxes of the same account is an Email/set update of ``mailboxIds``, so
``fromAccountId == accountId`` is ``invalidArguments`` (CORE-COPY-01, strict reading); an
account that is none of the login's is ``fromAccountNotFound``.

Each copy keeps what RFC 8621 §4.7 says it keeps: the message's exact content, its
keywords and ``receivedAt``, unless the create object gives others (``mailboxIds`` is
required; ``keywords`` and ``receivedAt`` may be given, nothing else).  Every account of a
login is on its IMAP server, so a copy is an IMAP ``UID COPY`` from the source copy into the
first target mailbox (the server copies content, flags and INTERNALDATE; the flags are then
set to the wanted keywords), unless another ``receivedAt`` is asked or the server refuses
the COPY: then the message is fetched and APPENDed (an INTERNALDATE cannot be changed).  It
is then copied into each other target mailbox, and found, as Email/import's are
(:class:`~imapjmap.methods.email.imports.Importer`: one refresh, ``alreadyExists`` for a
copy that became an Email the account had before).  Rights are checked before anything is
written (``forbidden``).

``onSuccessDestroyOriginal``: the Emails copied are then destroyed in the source account by
an implicit Email/set (with ``destroyFromIfInState`` as its ``ifInState``), whose response
follows the Email/copy response (RFC 8620 §5.4).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Final

from imapjmap.blobs.bodies import fetch_message
from imapjmap.errors import ImapCommandFailed
from imapjmap.jmap import responses
from imapjmap.jmap.dispatch import Call, HandlerResult
from imapjmap.jmap.errors import (
    MethodError,
    MethodErrorType,
    SetError,
    SetErrorType,
    invalid_arguments,
    invalid_properties,
)
from imapjmap.jmap.wire import JsonObject, is_id
from imapjmap.methods.context import MethodContext
from imapjmap.methods.email import imports
from imapjmap.methods.email.set import refusal, run_email_set
from imapjmap.store import emails as em
from imapjmap.store import queries as q
from imapjmap.store.db import Tx

log = logging.getLogger(__name__)

_COPY_ARGS: Final = frozenset(
    {
        "fromAccountId",
        "ifFromInState",
        "accountId",
        "ifInState",
        "create",
        "onSuccessDestroyOriginal",
        "destroyFromIfInState",
    }
)


def _check_copy_args(raw: JsonObject, max_objects: int) -> str:
    """Check every Email/copy argument's shape (RFC 8620 §5.4); returns fromAccountId."""
    unknown = [name for name in raw if name not in _COPY_ARGS]
    if unknown:
        raise invalid_arguments(f"unknown argument '{unknown[0][:60]}'")
    from_account = raw.get("fromAccountId")
    if not isinstance(from_account, str):
        raise invalid_arguments("'fromAccountId' is required and must be a String")
    for name in ("ifFromInState", "ifInState", "destroyFromIfInState"):
        if raw.get(name) is not None and not isinstance(raw[name], str):
            raise invalid_arguments(f"'{name}' must be a String or null")
    destroy = raw.get("onSuccessDestroyOriginal")
    if destroy is not None and not isinstance(destroy, bool):
        raise invalid_arguments("'onSuccessDestroyOriginal' must be a Boolean")
    create = raw.get("create")
    if not isinstance(create, dict) or not all(isinstance(v, dict) for v in create.values()):
        raise invalid_arguments("'create' is required and must map creation ids to objects")
    for key, value in create.items():
        if not is_id(key):
            raise invalid_arguments(f"'create' key {key[:40]!r} is not a valid creation id")
        if not isinstance(value.get("id"), str):
            raise invalid_arguments(f"'create/{key}' needs the 'id' of the Email to copy")
    if len(create) > max_objects:
        raise MethodError(
            MethodErrorType.REQUEST_TOO_LARGE,
            f"{len(create)} objects exceed maxObjectsInSet ({max_objects})",
        )
    return from_account


async def email_copy(ctx: MethodContext, call: Call) -> HandlerResult:
    """Email/copy from another account of the login into this one (module docstring)."""
    from_account = _check_copy_args(call.args, ctx.cfg.limits.max_objects_in_set)
    if from_account == ctx.account_id:
        raise invalid_arguments(
            "Email/copy copies between accounts; use Email/set to file an email in more mailboxes"
        )
    source = ctx.other(from_account)
    if source is None:
        raise MethodError(MethodErrorType.FROM_ACCOUNT_NOT_FOUND)
    args = call.args
    await source.refresh()
    if args.get("ifFromInState") not in (None, await source.state(em.EMAIL_TYPE)):
        raise MethodError(MethodErrorType.STATE_MISMATCH, "ifFromInState")
    await ctx.refresh()
    since = await ctx.read(lambda tx: q.type_state(tx, ctx.account_id, em.EMAIL_TYPE))
    old_state = ctx.encode_state(since)
    if args.get("ifInState") not in (None, old_state):
        raise MethodError(MethodErrorType.STATE_MISMATCH, "ifInState")
    live = {row.id: row for row in await ctx.read(lambda tx: q.live_mailboxes(tx, ctx.account_id))}
    copier = _Copier(ctx, call, live, source)
    not_created: JsonObject = {}
    landed = await imports.land_all(copier, args["create"], not_created)
    created, duplicates = await copier.created(landed, since)
    not_created.update(duplicates)
    for creation_id, obj in created.items():
        call.created_ids[creation_id] = obj["id"]
    response = responses.create_response(
        created,
        not_created,
        account_id=ctx.account_id,
        old_state=old_state,
        new_state=await ctx.state(em.EMAIL_TYPE),
    )
    response = {"fromAccountId": from_account, **response}
    if args.get("onSuccessDestroyOriginal") is not True:
        return response
    originals = [args["create"][cid]["id"] for cid in created]
    destroy: JsonObject = {"accountId": from_account, "destroy": originals}
    if args.get("destroyFromIfInState") is not None:
        destroy["ifInState"] = args["destroyFromIfInState"]
    try:
        destroyed = await run_email_set(source, call, destroy)
    except MethodError as exc:
        return [("Email/copy", response), ("error", exc.to_json())]
    return [("Email/copy", response), ("Email/set", destroyed)]


class _Copier(imports.Importer):
    """Lands each copy in the target account (``ctx``) from the ``source`` account."""

    def __init__(
        self,
        ctx: MethodContext,
        call: Call,
        live: dict[str, q.MailboxRow],
        source: MethodContext,
    ) -> None:
        super().__init__(ctx, call, live)
        self.source = source

    async def land(self, creation_id: str, raw: JsonObject) -> imports.Landed:
        unknown = sorted(set(raw) - _COPY_PROPERTIES)
        if unknown:
            raise invalid_properties("unknown properties", *unknown)
        email_id = raw["id"]
        found = await self.source.read(lambda tx: _original(tx, self.source.account_id, email_id))
        if found is None:
            raise SetError(SetErrorType.NOT_FOUND, f"no Email {email_id[:60]!r} to copy")
        row, location, source_mailbox = found
        mailboxes = imports.check_mailboxes(self.call, raw.get("mailboxIds"), self.live)
        rights = {m.id: m.my_rights for m in mailboxes}
        refused = refusal(rights, [], joins=rights)
        if refused is not None:
            raise refused
        keywords = raw.get("keywords", row.keywords)
        flags = imports.check_flags(keywords)
        kept = dt.datetime.fromtimestamp(row.received_at, dt.UTC)
        received = imports.check_received_at(raw["receivedAt"]) if "receivedAt" in raw else kept
        first = mailboxes[0]
        uid = None
        if received == kept:
            uid = await self._copy_first(source_mailbox, location, first, flags)
        if uid is None:
            uid = await self._append(email_id, first, flags, received)
        self.landed += 1
        written = ((first, uid), *await self._copy(first, uid, mailboxes[1:]))
        return imports.Landed(creation_id, first.id, uid, written)

    async def _copy_first(
        self,
        source_mailbox: str,
        location: em.Location,
        first: q.MailboxRow,
        flags: tuple[str, ...],
    ) -> int | None:
        """UID COPY of the source copy into ``first``, its flags then made ``flags``; None
        when the server refused the COPY or did not say where the copy went."""
        try:
            async with self.source.upstream.writing(source_mailbox) as box:
                copied = await box.copy([location.uid], first.imap_name)
        except ImapCommandFailed as exc:
            log.info("Email/copy: COPY refused (%s); fetching and appending instead", exc)
            return None
        if location.uid not in copied.done:
            raise SetError(SetErrorType.NOT_FOUND, "the Email is gone from the source account")
        uid = copied.target_uid(location.uid)
        if uid is None:
            return None  # no COPYUID: the copy cannot be told from others; it stays
        have = {f.lower(): f for f in location.flags if f.lower() != "\\recent"}
        want = {f.lower(): f for f in flags}
        add = [want[f] for f in want if f not in have]
        remove = [have[f] for f in have if f not in want]
        async with self.ctx.upstream.writing(first.imap_name) as box:
            if add:
                await box.store_flags([uid], "+", add)
            if remove:
                await box.store_flags([uid], "-", remove)
        return uid

    async def _append(
        self, email_id: str, first: q.MailboxRow, flags: tuple[str, ...], received: dt.datetime
    ) -> int:
        raw = await fetch_message(
            self.source.store, self.source.upstream, self.source.account_id, email_id
        )
        if raw is None:
            raise SetError(SetErrorType.NOT_FOUND, "the Email is gone from the source account")
        upstream = self.ctx.upstream
        says_uid = upstream.appends_say_uid
        floor = None if says_uid else await upstream.uid_next(first.imap_name)
        appended = await upstream.append(first.imap_name, raw, flags, received)
        uid = appended.uid if says_uid else None
        if uid is None:
            uid = await self._find(first, raw, floor or 1)
        return uid


_COPY_PROPERTIES: Final = frozenset({"id", "mailboxIds", "keywords", "receivedAt"})


def _original(
    tx: Tx, account_id: str, email_id: str
) -> tuple[em.EmailRow, em.Location, str] | None:
    """The Email to copy, one copy of it and that copy's mailbox name; None if unknown."""
    row = em.email(tx, account_id, email_id)
    if row is None:
        return None
    names = {m.id: m.imap_name for m in q.live_mailboxes(tx, account_id)}
    for location in em.locations_of_email(tx, account_id, email_id):
        if not location.deleted and location.mailbox_id in names:
            return row, location, names[location.mailbox_id]
    return None
