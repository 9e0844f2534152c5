"""The standard /changes, /query and /queryChanges glue, written once for every type.

The algorithms are pure (``jmap.standard``), and so are the responses' shapes
(``jmap.responses``); this module reads the rows they need from the store in ONE
transaction, so the rows and the current state are one snapshot.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from imapjmap.jmap import responses
from imapjmap.jmap import standard as std
from imapjmap.jmap import state as jstate
from imapjmap.jmap.args import ChangesArgs, GetArgs, QueryArgs, QueryChangesArgs
from imapjmap.jmap.dispatch import Call
from imapjmap.jmap.errors import MethodError, MethodErrorType
from imapjmap.jmap.wire import Json, JsonObject
from imapjmap.methods.context import MethodContext
from imapjmap.store import queries as q
from imapjmap.store.db import Tx


def get_args(ctx: MethodContext, raw: Json, known_properties: Collection[str]) -> GetArgs:
    """A /get call's arguments, bounded by the configured limits (RFC 8620 §5.1)."""
    return GetArgs.parse(
        raw,
        known_properties=known_properties,
        max_objects=ctx.cfg.limits.max_objects_in_get,
        max_properties=ctx.cfg.limits.max_properties,
    )


@dataclass(frozen=True, slots=True)
class ChangeSnapshot:
    rows: list[std.ChangeRow]
    current: int
    floor: int


def resolve_ids(call: Call, ids: Sequence[str]) -> list[str]:
    """``#creationId`` entries of a /get ``ids`` replaced by the ids created earlier in this
    request (RFC 8620 §5.3); an unknown one stays as is and so lands in ``notFound``."""
    return [call.created_ids.get(i[1:], i) if i.startswith("#") else i for i in ids]


def _cannot(why: str) -> MethodError:
    return MethodError(MethodErrorType.CANNOT_CALCULATE_CHANGES, why)


def check_since(since: jstate.State, snapshot: ChangeSnapshot) -> None:
    """Check the cache can still answer from the client's state (CORE-CHG-04)."""
    if since.seq < snapshot.floor:
        raise _cannot("the state is older than the kept change history")
    if since.seq > snapshot.current:
        raise _cannot("the state is unknown")


def read_changes(
    tx: Tx, account_id: str, table: q.ChangeTable, data_type: str, since: jstate.State
) -> ChangeSnapshot:
    """Every row changed after the state's seq (a paging state's round starts there too),
    with the type's current state, read in one snapshot."""
    return ChangeSnapshot(
        rows=[
            std.ChangeRow(r.id, r.created_seq, r.updated_seq, r.destroyed_seq)
            for r in q.changes_since(tx, table, account_id, since.seq)
        ],
        current=q.type_state(tx, account_id, data_type),
        floor=q.type_floor(tx, account_id, data_type),
    )


async def changes(
    ctx: MethodContext, raw: JsonObject, table: q.ChangeTable, data_type: str
) -> tuple[JsonObject, std.ChangesResult, jstate.State]:
    """A /changes response, plus the pieces a type adds to (Mailbox's updatedProperties)."""
    args = ChangesArgs.parse(raw)
    await ctx.refresh()
    since = jstate.decode_or_raise(args.since_state, ctx.account.epoch)
    snapshot = await ctx.read(lambda tx: read_changes(tx, ctx.account_id, table, data_type, since))
    check_since(since, snapshot)
    result = std.compute_changes(snapshot.rows, since, snapshot.current, args.max_changes)
    return changes_answer(ctx.account_id, args.since_state, result), result, since


def changes_answer(account_id: str, since_state: str, result: std.ChangesResult) -> JsonObject:
    """The /changes response that tells ``result``, computed from ``since_state``."""
    return responses.changes_response(
        account_id=account_id,
        old_state=since_state,
        new_state=jstate.encode(result.new_state),
        has_more=result.has_more,
        created=result.created,
        updated=result.updated,
        destroyed=result.destroyed,
    )


def query_response(
    ctx: MethodContext,
    args: QueryArgs,
    ids: Sequence[str],
    query_seq: int,
    *,
    can_calculate_changes: bool,
) -> JsonObject:
    """A /query response for the full sorted result ``ids``."""
    return responses.query_response(
        std.query_window(ids, args, max_limit=None),
        account_id=ctx.account_id,
        query_state=ctx.encode_state(query_seq),
        can_calculate_changes=can_calculate_changes,
    )


async def query_changes(
    ctx: MethodContext,
    args: QueryChangesArgs,
    new_ids: Sequence[str],
    table: q.ChangeTable,
    data_type: str,
    *,
    can_calculate: bool,
) -> JsonObject:
    """A /queryChanges response: everything changed since the old query state is removed,
    then re-added where it is in the new result (RFC 8620 §5.6; extra removals allowed)."""
    since = jstate.decode_or_raise(args.since_query_state, ctx.account.epoch)
    snapshot = await ctx.read(lambda tx: read_changes(tx, ctx.account_id, table, data_type, since))
    check_since(since, snapshot)
    if not can_calculate:
        raise _cannot("this query's result order depends on other records")
    changed: set[str] = set()
    destroyed: set[str] = set()
    for row in snapshot.rows:
        if row.last_seq > since.seq:
            (destroyed if row.destroyed_seq is not None else changed).add(row.id)
    result = std.query_changes(
        new_ids, changed, destroyed, up_to_id=args.up_to_id, max_changes=args.max_changes
    )
    return responses.query_changes_response(
        account_id=ctx.account_id,
        old_query_state=args.since_query_state,
        new_query_state=ctx.encode_state(snapshot.current),
        removed=result.removed,
        added=result.added,
        total=len(new_ids) if args.calculate_total else None,
    )
