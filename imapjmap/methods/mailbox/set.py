"""Mailbox/set (RFC 8621 §2.5, MBX-01, MBX-07) on IMAP CREATE / RENAME / DELETE.

Order within one call: creates (a child after the parent it names as ``#creationId``,
CORE-CID-03), then updates, then destroys (children before parents).  Every IMAP write is
followed by a refresh of the account's mailboxes, so ids, names and states come from what
the server now says, never from what we hoped it did.  A connection failure after some
writes landed is ``serverPartialFail`` (RFC 8620 §3.6.2): the client must resync.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from imapjmap.errors import ImapCommandFailed, UpstreamUnavailable
from imapjmap.jmap import responses
from imapjmap.jmap.args import SetArgs
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
from imapjmap.jmap.session import MAX_SIZE_MAILBOX_NAME
from imapjmap.jmap.wire import JsonObject, is_unsigned_int
from imapjmap.methods.context import MethodContext
from imapjmap.methods.imaperrors import set_error_from_imap
from imapjmap.methods.mailbox.get import to_json
from imapjmap.store import queries as q
from imapjmap.store.db import Tx
from imapjmap.sync.mailboxes import MAILBOX_TYPE, is_inbox

T = TypeVar("T")

_CLIENT_SET: Final = ("name", "parentId", "role", "sortOrder", "isSubscribed")
_SERVER_SET: Final = (
    "id",
    "totalEmails",
    "unreadEmails",
    "totalThreads",
    "unreadThreads",
    "myRights",
)
_ROLES: Final = ("all", "archive", "drafts", "flagged", "important", "junk", "sent", "trash")


class _Writer:
    """Runs the IMAP side of one Mailbox/set call and tracks what already landed."""

    def __init__(self, ctx: MethodContext, call: Call) -> None:
        self.ctx = ctx
        self.call = call
        self.landed = 0
        self.delimiter: str | None = None

    async def guarded(self, op: Callable[[], Awaitable[T]]) -> T:
        try:
            result = await op()
        except UpstreamUnavailable as exc:
            if self.landed:
                raise MethodError(
                    MethodErrorType.SERVER_PARTIAL_FAIL,
                    "the upstream failed after some changes were made",
                ) from exc
            raise
        return result

    async def write(self, op: Callable[[], Awaitable[None]]) -> None:
        """Run one upstream write, counting it as landed once the server accepted it."""
        await self.guarded(op)
        self.landed += 1

    async def rows(self) -> dict[str, q.MailboxRow]:
        def read(tx: Tx) -> tuple[list[q.MailboxRow], str | None]:
            acct = q.account(tx, self.ctx.account_id)
            return q.live_mailboxes(tx, self.ctx.account_id), acct.delimiter if acct else None

        rows, self.delimiter = await self.ctx.read(read)
        return {row.id: row for row in rows}

    def full_name(self, parent: q.MailboxRow | None, name: str) -> str:
        if parent is None:
            return (self.ctx.share_prefix or "") + name  # a share's top is under its prefix
        if not self.delimiter:
            raise SetError(SetErrorType.FORBIDDEN, "this server has no mailbox hierarchy")
        return parent.imap_name + self.delimiter + name


def _check_name(name: Any, delimiter: str | None) -> str:
    if not isinstance(name, str) or not name.strip():
        raise invalid_properties("name must be a non-empty string", "name")
    if len(name.encode()) > MAX_SIZE_MAILBOX_NAME:
        raise invalid_properties(f"name is longer than {MAX_SIZE_MAILBOX_NAME} octets", "name")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        raise invalid_properties("name must not contain control characters", "name")
    if delimiter and delimiter in name:
        raise invalid_properties(f"name must not contain the separator {delimiter!r}", "name")
    if name != name.strip():
        raise invalid_properties("name must not start or end with white space", "name")
    return name


def _sibling_clash(
    rows: dict[str, q.MailboxRow], parent_id: str | None, name: str, exclude: str | None = None
) -> None:
    """MBX-01: no two siblings share a name (INBOX's name is reserved at the top)."""
    for row in rows.values():
        if row.id == exclude or row.parent_id != parent_id:
            continue
        inbox_clash = parent_id is None and is_inbox(name) and is_inbox(row.imap_name)
        if row.name == name or inbox_clash:
            raise SetError(
                SetErrorType.ALREADY_EXISTS,
                "a sibling mailbox already has this name",
                existingId=row.id,
            )
    if parent_id is None and is_inbox(name):
        raise SetError(SetErrorType.ALREADY_EXISTS, "INBOX is reserved")


def _parent(writer: _Writer, rows: dict[str, q.MailboxRow], value: Any) -> q.MailboxRow | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid_properties("parentId must be an Id or null", "parentId")
    try:
        parent_id = resolve_creation_id(writer.call, value)
    except UnknownCreationId as exc:
        raise exc.set_error(SetErrorType.INVALID_PROPERTIES, "parentId") from None
    parent = rows.get(parent_id)
    if parent is None:
        raise invalid_properties("parentId names no mailbox", "parentId")
    if not parent.my_rights.get("mayCreateChild", True):
        raise SetError(SetErrorType.FORBIDDEN, "the parent mailbox does not allow children")
    return parent


def _check_create(obj: JsonObject) -> None:
    unknown = [k for k in obj if k not in _CLIENT_SET and k not in _SERVER_SET]
    if unknown:
        raise invalid_properties("unknown properties", *unknown)
    server = [k for k in obj if k in _SERVER_SET]
    if server:
        raise invalid_properties("server-set properties cannot be given", *server)
    if "sortOrder" in obj and not is_unsigned_int(obj["sortOrder"]):
        raise invalid_properties("sortOrder must be an UnsignedInt", "sortOrder")
    if "isSubscribed" in obj and not isinstance(obj["isSubscribed"], bool):
        raise invalid_properties("isSubscribed must be a boolean", "isSubscribed")
    role = obj.get("role")
    if role is not None and role not in _ROLES:
        raise invalid_properties("role must be null or a known role", "role")


async def _create_one(writer: _Writer, obj: JsonObject) -> JsonObject:
    _check_create(obj)
    rows = await writer.rows()
    parent = _parent(writer, rows, obj.get("parentId"))
    if parent is None and writer.ctx.share_prefix is not None:
        # the top of a share is its owner's (mayCreateTopLevelMailbox: false)
        raise SetError(SetErrorType.FORBIDDEN, "another user's account takes no top-level mailbox")
    name = _check_name(obj.get("name"), writer.delimiter)
    _sibling_clash(rows, parent.id if parent else None, name)
    role = obj.get("role")
    upstream = writer.ctx.upstream
    if role is not None:
        if any(row.role == role for row in rows.values()):
            raise invalid_properties(f"another mailbox already has the role {role!r}", "role")
        if not upstream.creates_with_role:
            raise invalid_properties("this server cannot give a new mailbox a role", "role")
    full = writer.full_name(parent, name)
    subscribe = obj.get("isSubscribed", True)
    await writer.write(lambda: upstream.create_mailbox(full, role=role))
    if subscribe:
        await writer.write(lambda: upstream.subscribe(full))
    await writer.ctx.refresh(force=True)
    row = await writer.ctx.read(lambda tx: q.mailbox_by_name(tx, writer.ctx.account_id, full))
    if row is None:
        raise SetError(SetErrorType.FORBIDDEN, "the server did not keep the new mailbox")
    if "sortOrder" in obj and obj["sortOrder"] != row.sort_order:
        row = await _store_sort_order(writer.ctx, row, obj["sortOrder"])
    created = to_json(row)
    return {k: v for k, v in created.items() if k not in obj or k == "id"}


async def _store_sort_order(ctx: MethodContext, row: q.MailboxRow, value: int) -> q.MailboxRow:
    """sortOrder has no IMAP home: it is kept in the cache (and survives renames)."""

    def write(tx: Tx) -> q.MailboxRow:
        current = q.mailbox(tx, ctx.account_id, row.id) or row
        new = dataclasses.replace(current, sort_order=value)
        seq = q.next_seq(tx, ctx.account_id, [MAILBOX_TYPE])
        q.update_mailbox(tx, new, props_changed=True, seq=seq)
        return new

    return await ctx.write(write)


async def _creates(
    writer: _Writer, creates: dict[str, JsonObject], created: JsonObject, not_created: JsonObject
) -> None:
    pending = dict(creates)
    while pending:
        progressed = False
        for cid, obj in list(pending.items()):
            parent = obj.get("parentId") if isinstance(obj, dict) else None
            if (
                isinstance(parent, str)
                and parent.startswith("#")
                and parent[1:] in pending
                and parent[1:] != cid
            ):
                continue  # its parent is created later in this loop (CORE-CID-03)
            del pending[cid]
            progressed = True
            try:
                if not isinstance(obj, dict):
                    raise invalid_properties("a Mailbox must be an object")
                result = await _create_one(writer, obj)
            except SetError as exc:
                not_created[cid] = exc.to_json()
            except ImapCommandFailed as exc:
                not_created[cid] = set_error_from_imap(exc).to_json()
            else:
                created[cid] = result
                writer.call.created_ids[cid] = result["id"]
        if not progressed:
            for cid in pending:
                not_created[cid] = invalid_properties(
                    "parentId refers to a mailbox that could not be created", "parentId"
                ).to_json()
            return


async def _update_one(writer: _Writer, mailbox_id: str, patch: JsonObject) -> None:
    rows = await writer.rows()
    row = rows.get(mailbox_id)
    if row is None:
        raise SetError(SetErrorType.NOT_FOUND)
    before = to_json(row)
    after = apply_patch(before, patch)
    changed = [k for k in after if after.get(k) != before.get(k)] + [
        k for k in before if k not in after
    ]
    bad = [k for k in changed if k not in _CLIENT_SET]
    if bad:
        raise invalid_properties("these properties cannot be changed", *bad)
    if "role" in changed:
        raise invalid_properties("this server cannot change a mailbox's role", "role")
    if "sortOrder" in changed and not is_unsigned_int(after.get("sortOrder")):
        raise invalid_properties("sortOrder must be an UnsignedInt", "sortOrder")
    if "isSubscribed" in changed and not isinstance(after.get("isSubscribed"), bool):
        raise invalid_properties("isSubscribed must be a boolean", "isSubscribed")
    current = row.imap_name
    if "name" in changed or "parentId" in changed:
        current = await _rename(writer, rows, row, after)
    if "isSubscribed" in changed:
        subscribed = bool(after["isSubscribed"])
        await writer.write(lambda: writer.ctx.upstream.subscribe(current, subscribed))
    await writer.ctx.refresh(force=True)
    if "sortOrder" in changed:
        fresh = await writer.ctx.read(lambda tx: q.mailbox(tx, writer.ctx.account_id, row.id))
        await _store_sort_order(writer.ctx, fresh or row, after["sortOrder"])


async def _rename(
    writer: _Writer, rows: dict[str, q.MailboxRow], row: q.MailboxRow, after: JsonObject
) -> str:
    if is_inbox(row.imap_name) or not row.my_rights.get("mayRename", True):
        raise SetError(SetErrorType.FORBIDDEN, "this mailbox cannot be renamed or moved")
    name = _check_name(after.get("name"), writer.delimiter)
    parent = _parent(writer, rows, after.get("parentId"))
    ancestor = parent
    while ancestor is not None:
        if ancestor.id == row.id:
            raise invalid_properties("a mailbox cannot move below itself", "parentId")
        ancestor = rows.get(ancestor.parent_id) if ancestor.parent_id else None
    _sibling_clash(rows, parent.id if parent else None, name, exclude=row.id)
    new_full = writer.full_name(parent, name)
    old_full = row.imap_name
    upstream = writer.ctx.upstream
    children = _children(writer, rows, row)
    await writer.write(lambda: upstream.rename_mailbox(old_full, new_full, children=children))
    await _remember_rename(writer, rows, old_full, new_full)
    if row.is_subscribed:
        # RFC 3501 leaves subscriptions behind on RENAME: carry this one over
        await writer.write(lambda: upstream.subscribe(new_full))
        # a server that moved the subscription along (Gmail) refuses to drop a name that
        # no longer exists: the rename has happened all the same
        with contextlib.suppress(ImapCommandFailed):
            await writer.write(lambda: upstream.subscribe(old_full, False))
    return new_full


async def _remember_rename(
    writer: _Writer, rows: dict[str, q.MailboxRow], old_full: str, new_full: str
) -> None:
    """Give the cached rows (the mailbox and its children) their new IMAP names at once.

    A refresh recognises a renamed mailbox by its upstream id; Gmail has none, and a label's
    folder is never STATUSed, so without this the renamed label would come back as a new
    mailbox with a new id (docs/design.md, "Ids": ids never move)."""
    prefix = old_full + (writer.delimiter or "\0")
    moved = {
        other.id: new_full + other.imap_name[len(old_full) :]
        for other in rows.values()
        if other.imap_name == old_full or other.imap_name.startswith(prefix)
    }
    account_id = writer.ctx.account_id

    def write(tx: Tx) -> None:
        for mailbox_id, name in sorted(moved.items(), key=lambda item: len(item[1])):
            q.set_mailbox_imap_name(tx, account_id, mailbox_id, name)

    await writer.ctx.write(write)


def _children(writer: _Writer, rows: dict[str, q.MailboxRow], row: q.MailboxRow) -> list[str]:
    """The names of the mailboxes below ``row``, which a rename of it moves along."""
    prefix = row.imap_name + (writer.delimiter or "\0")
    return [other.imap_name for other in rows.values() if other.imap_name.startswith(prefix)]


async def _destroy_one(writer: _Writer, mailbox_id: str, remove_emails: bool) -> None:
    rows = await writer.rows()
    row = rows.get(mailbox_id)
    if row is None:
        raise SetError(SetErrorType.NOT_FOUND)
    if is_inbox(row.imap_name) or not row.my_rights.get("mayDelete", True):
        raise SetError(SetErrorType.FORBIDDEN, "this mailbox cannot be destroyed")
    if any(r.parent_id == row.id for r in rows.values()):
        raise SetError(SetErrorType.MAILBOX_HAS_CHILD)  # even with onDestroyRemoveEmails
    if (row.messages or row.total_emails) and not remove_emails:
        raise SetError(SetErrorType.MAILBOX_HAS_EMAIL)
    upstream = writer.ctx.upstream
    if not remove_emails:
        await writer.guarded(lambda: _still_empty(writer, row.imap_name))
    await writer.write(lambda: upstream.delete_mailbox(row.imap_name))
    if row.is_subscribed:
        # the mailbox is gone; a subscription left behind would only be noise
        with contextlib.suppress(ImapCommandFailed):
            await writer.write(lambda: upstream.subscribe(row.imap_name, False))
    await writer.ctx.refresh(force=True)  # a parent destroyed next must see this one gone


async def _still_empty(writer: _Writer, name: str) -> None:
    """The cache may be behind the server: a message another client put in the mailbox
    meanwhile would go down with the DELETE, which only onDestroyRemoveEmails may do
    (RFC 8621 §2.5, MBX-07).  So the server is asked right before it."""
    if await writer.ctx.upstream.message_count(name):
        raise SetError(SetErrorType.MAILBOX_HAS_EMAIL)


def _depth(rows: dict[str, q.MailboxRow], mailbox_id: str) -> int:
    depth, seen = 0, set()
    row = rows.get(mailbox_id)
    while row is not None and row.parent_id and row.id not in seen:
        seen.add(row.id)
        depth += 1
        row = rows.get(row.parent_id)
    return depth


async def mailbox_set(ctx: MethodContext, call: Call) -> JsonObject:
    args = SetArgs.parse(
        call.args, max_objects=ctx.cfg.limits.max_objects_in_set, extra=("onDestroyRemoveEmails",)
    )
    remove_emails = args.extra.get("onDestroyRemoveEmails", False)
    if remove_emails is None:
        remove_emails = False
    if not isinstance(remove_emails, bool):
        raise invalid_arguments("onDestroyRemoveEmails must be a boolean")
    await ctx.refresh()
    old_state = await ctx.state(MAILBOX_TYPE)
    if args.if_in_state is not None and args.if_in_state != old_state:
        raise MethodError(MethodErrorType.STATE_MISMATCH)
    writer = _Writer(ctx, call)
    created: JsonObject = {}
    not_created: JsonObject = {}
    await _creates(writer, args.create or {}, created, not_created)
    updated: JsonObject = {}
    not_updated: JsonObject = {}
    destroy_ids = list(dict.fromkeys(args.destroy or []))
    for mailbox_id, patch in (args.update or {}).items():
        if mailbox_id in destroy_ids:
            not_updated[mailbox_id] = SetError(SetErrorType.WILL_DESTROY).to_json()
            continue
        await _record(updated, not_updated, mailbox_id, _update_one(writer, mailbox_id, patch))
    destroyed: list[str] = []
    not_destroyed: JsonObject = {}
    rows = await writer.rows()
    for mailbox_id in sorted(destroy_ids, key=lambda i: -_depth(rows, i)):
        done: JsonObject = {}
        await _record(
            done, not_destroyed, mailbox_id, _destroy_one(writer, mailbox_id, remove_emails)
        )
        if mailbox_id in done:
            destroyed.append(mailbox_id)
    await ctx.refresh(force=True)
    return responses.set_response(
        responses.SetResult(created, updated, destroyed, not_created, not_updated, not_destroyed),
        account_id=ctx.account_id,
        old_state=old_state,
        new_state=await ctx.state(MAILBOX_TYPE),
    )


async def _record(ok: JsonObject, failed: JsonObject, key: str, action: Awaitable[None]) -> None:
    """Await one record's action; its SetError (or an IMAP NO) becomes data."""
    try:
        await action
    except SetError as exc:
        failed[key] = exc.to_json()
    except ImapCommandFailed as exc:
        failed[key] = set_error_from_imap(exc).to_json()
    else:
        ok[key] = None
