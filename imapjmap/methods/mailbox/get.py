"""Mailbox/get, /changes, /query, /queryChanges (RFC 8621 §2, checklist MBX-*).

Mailbox/set lives in :mod:`imapjmap.methods.mailbox.set`.  Every handler first refreshes
the account (one LIST-STATUS round trip when nothing changed), then answers from the cache.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from imapjmap.jmap import responses
from imapjmap.jmap import standard as std
from imapjmap.jmap.args import Comparator, QueryArgs, QueryChangesArgs
from imapjmap.jmap.dispatch import Call
from imapjmap.jmap.errors import MethodError, MethodErrorType, invalid_arguments
from imapjmap.jmap.wire import JsonObject, is_id
from imapjmap.methods import standard
from imapjmap.methods.context import MethodContext
from imapjmap.store import queries as q
from imapjmap.store.db import Tx
from imapjmap.sync.mailboxes import COUNT_PROPERTIES, MAILBOX_TYPE, tree_order

PROPERTIES: Final = (
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
)
SORT_PROPERTIES: Final = ("sortOrder", "name")
_FILTER_TYPES: Final[dict[str, Callable[[Any], bool]]] = {
    "parentId": lambda v: v is None or isinstance(v, str),
    "name": lambda v: isinstance(v, str),
    "role": lambda v: v is None or isinstance(v, str),
    "hasAnyRole": lambda v: isinstance(v, bool),
    "isSubscribed": lambda v: isinstance(v, bool),
}
_QUERY_EXTRA: Final = ("sortAsTree", "filterAsTree")


def to_json(row: q.MailboxRow) -> JsonObject:
    """Every property of a Mailbox (RFC 8621 §2)."""
    return {
        "id": row.id,
        "name": row.name,
        "parentId": row.parent_id,
        "role": row.role,
        "sortOrder": row.sort_order,
        "totalEmails": row.total_emails,
        "unreadEmails": row.unread_emails,
        "totalThreads": row.total_threads,
        "unreadThreads": row.unread_threads,
        "myRights": dict(row.my_rights),
        "isSubscribed": row.is_subscribed,
    }


async def mailbox_get(ctx: MethodContext, call: Call) -> JsonObject:
    args = standard.get_args(ctx, call.args, PROPERTIES)
    await ctx.refresh()

    # a few dozen rows, mostly (store Rule 10)
    rows, seq = await ctx.read_small(
        lambda tx: q.live_mailboxes_and_state(tx, ctx.account_id, MAILBOX_TYPE)
    )
    by_id = {row.id: row for row in rows}
    if args.ids is not None:
        wanted = standard.resolve_ids(call, args.ids)
    else:
        wanted = [row.id for row in tree_order(rows)]
    properties = args.properties if args.properties is not None else list(PROPERTIES)
    found, not_found = responses.pick(wanted, by_id)
    return responses.get_response(
        [{k: v for k, v in to_json(r).items() if k in properties} for r in found],
        not_found,
        account_id=ctx.account_id,
        state=ctx.encode_state(seq),
    )


async def mailbox_changes(ctx: MethodContext, call: Call) -> JsonObject:
    """Mailbox/changes with ``updatedProperties`` (MBX-05): the four counts when every
    update since the state changed only counts, else null."""
    response, result, since = await standard.changes(ctx, call.args, "mailboxes", MAILBOX_TYPE)
    updated = set(result.updated)
    only_counts = bool(updated) and await ctx.read(
        lambda tx: _only_counts(tx, ctx.account_id, updated, since.seq)
    )
    response["updatedProperties"] = list(COUNT_PROPERTIES) if only_counts else None
    return response


def _only_counts(tx: Tx, account_id: str, ids: set[str], since_seq: int) -> bool:
    props = {c.id: c.props_seq for c in q.mailbox_changes(tx, account_id, since_seq)}
    return all(props.get(i, since_seq + 1) <= since_seq for i in ids)


def _validate_condition(condition: JsonObject) -> None:
    for key, value in condition.items():
        check = _FILTER_TYPES.get(key)
        if check is None:
            raise MethodError(
                MethodErrorType.UNSUPPORTED_FILTER, f"unknown Mailbox filter property {key[:40]!r}"
            )
        if not check(value):
            raise invalid_arguments(f"Mailbox filter property {key!r} has the wrong type")


def _condition_matches(row: q.MailboxRow, condition: JsonObject) -> bool:
    for key, value in condition.items():
        if key == "parentId" and row.parent_id != value:
            return False
        if key == "name" and str(value).casefold() not in row.name.casefold():
            return False
        if key == "role" and row.role != value:
            return False
        if key == "hasAnyRole" and (row.role is not None) != value:
            return False
        if key == "isSubscribed" and row.is_subscribed != value:
            return False
    return True


def _flag(args_extra: JsonObject, name: str) -> bool:
    value = args_extra.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise invalid_arguments(f"{name!r} must be a boolean")
    return value


def _run_query(
    rows: Sequence[q.MailboxRow], filter_: Any, sort: Sequence[Comparator], extra: JsonObject
) -> tuple[list[str], bool]:
    """The full sorted result, and whether /queryChanges can be computed for it."""
    tree_filter, tree_sort = _flag(extra, "filterAsTree"), _flag(extra, "sortAsTree")
    parsed = std.validate_filter(filter_, _validate_condition)
    by_id = {row.id: row for row in rows}

    def matches(row: q.MailboxRow) -> bool:
        return std.matches(parsed, lambda c: _condition_matches(row, c))

    hits = {row.id for row in rows if matches(row)}
    if tree_filter:
        hits = {i for i in hits if _ancestors_in(by_id[i], by_id, hits)}

    def value_of(row: q.MailboxRow, comparator: Comparator) -> std.SortValue:
        return row.sort_order if comparator.property == "sortOrder" else row.name

    ordered = std.sort_records(
        [by_id[i] for i in hits], sort or _DEFAULT_SORT, value_of, lambda r: r.id
    )
    if tree_sort:
        ordered = _as_tree(ordered)
    return [row.id for row in ordered], not (tree_filter or tree_sort)


def _ancestors_in(row: q.MailboxRow, by_id: dict[str, q.MailboxRow], hits: set[str]) -> bool:
    seen: set[str] = set()
    parent = row.parent_id
    while parent is not None and parent not in seen:
        if parent not in hits:
            return False
        seen.add(parent)
        parent = by_id[parent].parent_id if parent in by_id else None
    return True


def _as_tree(ordered: list[q.MailboxRow]) -> list[q.MailboxRow]:
    """Parents before children, siblings kept in the sorted order (sortAsTree)."""
    rank = {row.id: i for i, row in enumerate(ordered)}
    children: dict[str | None, list[q.MailboxRow]] = {}
    for row in ordered:
        parent = row.parent_id if row.parent_id in rank else None
        children.setdefault(parent, []).append(row)
    out: list[q.MailboxRow] = []

    def walk(parent: str | None) -> None:
        for row in children.get(parent, []):
            out.append(row)
            walk(row.id)

    walk(None)
    return out


_DEFAULT_SORT: Final = (Comparator("sortOrder"), Comparator("name"))


async def _rows_and_seq(ctx: MethodContext) -> tuple[list[q.MailboxRow], int]:
    await ctx.refresh()
    return await ctx.read(
        lambda tx: (
            q.live_mailboxes(tx, ctx.account_id),
            q.type_state(tx, ctx.account_id, MAILBOX_TYPE),
        )
    )


async def mailbox_query(ctx: MethodContext, call: Call) -> JsonObject:
    args = QueryArgs.parse(
        call.args, sort_properties=SORT_PROPERTIES, extra=_QUERY_EXTRA, limits=ctx.query_limits
    )
    if args.anchor is not None and not is_id(args.anchor):
        raise MethodError(MethodErrorType.ANCHOR_NOT_FOUND)
    rows, seq = await _rows_and_seq(ctx)
    ids, can_calc = _run_query(rows, args.filter, args.sort, args.extra)
    return standard.query_response(ctx, args, ids, seq, can_calculate_changes=can_calc)


async def mailbox_query_changes(ctx: MethodContext, call: Call) -> JsonObject:
    args = QueryChangesArgs.parse(
        call.args, sort_properties=SORT_PROPERTIES, extra=_QUERY_EXTRA, limits=ctx.query_limits
    )
    rows, _ = await _rows_and_seq(ctx)
    ids, can_calc = _run_query(rows, args.filter, args.sort, args.extra)
    return await standard.query_changes(
        ctx, args, ids, "mailboxes", MAILBOX_TYPE, can_calculate=can_calc
    )
