"""Quota/get, /changes, /query, /queryChanges (RFC 9425) from the mail server's quotas.

The server is asked once per JMAP request that holds a Quota call (IMAP: one
``GETQUOTAROOT INBOX``), never on requests without one; what it said last is kept in the
cache (:mod:`imapjmap.sync.quota`), where push also refreshes it when mail comes or goes.

Mapping (RFC 9208 → RFC 9425): ``STORAGE`` (KiB) → ``octets`` (×1024), ``MESSAGE`` →
``count`` of Emails, ``MAILBOX`` → ``count`` of Mailboxes; other resources are not
shown.  The scope is always ``account``: IMAP reports the quotas of the logged-in user.
IMAP has no warning or soft limits, so ``warnLimit`` and ``softLimit`` are null.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Final

from imapjmap.jmap import responses
from imapjmap.jmap import standard as std
from imapjmap.jmap import state as jstate
from imapjmap.jmap.args import ChangesArgs, Comparator, QueryArgs, QueryChangesArgs
from imapjmap.jmap.dispatch import Call
from imapjmap.jmap.errors import MethodError, MethodErrorType, invalid_arguments
from imapjmap.jmap.wire import MAIL, JsonObject
from imapjmap.methods import standard
from imapjmap.methods.context import MethodContext
from imapjmap.sync import quota as quotas
from imapjmap.sync.quota import RESOURCES, QuotaRecord

PROPERTIES: Final = (
    "id",
    "resourceType",
    "used",
    "hardLimit",
    "scope",
    "name",
    "types",
    "warnLimit",
    "softLimit",
    "description",
)
SORT_PROPERTIES: Final = ("name", "used")


def to_json(record: QuotaRecord, using: frozenset[str]) -> JsonObject | None:
    """The Quota object, or None when the client cannot see any type it counts (RFC 9425
    §3.1: types of capabilities not in ``using`` are left out, and a Quota left with no
    type is not returned)."""
    resource = RESOURCES[record.resource]
    types = list(resource.types) if MAIL in using else []
    if not types or record.destroyed_seq is not None:
        return None
    return {
        "id": record.id,
        "resourceType": resource.resource_type,
        "used": record.used * resource.unit,
        "hardLimit": record.limit * resource.unit,
        "scope": "account",
        "name": f"{record.root or 'account'} ({record.resource.lower()})",
        "types": types,
        "warnLimit": None,
        "softLimit": None,
        "description": f"the mail server's quota {record.root!r}, resource {record.resource}",
    }


# requests whose quotas were read from the server already: every Quota call of one request
# sees one answer, and the request pays one round trip for them all
_FRESH: Final[weakref.WeakSet[MethodContext]] = weakref.WeakSet()


async def _fresh(ctx: MethodContext) -> tuple[dict[str, QuotaRecord], int]:
    """The records and the Quota state, after asking the server (once per request)."""
    if ctx not in _FRESH:
        await quotas.refresh(ctx.store, ctx.account_id, ctx.upstream)
        _FRESH.add(ctx)
    return await ctx.read(lambda tx: quotas.snapshot(tx, ctx.account_id))


def _visible(records: Mapping[str, QuotaRecord], using: frozenset[str]) -> dict[str, JsonObject]:
    shown = {id_: to_json(r, using) for id_, r in records.items()}
    return {id_: quota for id_, quota in shown.items() if quota is not None}


# --- the methods --------------------------------------------------------------------------------


async def quota_get(ctx: MethodContext, call: Call) -> JsonObject:
    args = standard.get_args(ctx, call.args, PROPERTIES)
    records, seq = await _fresh(ctx)
    quotas = _visible(records, call.using)
    wanted = standard.resolve_ids(call, args.ids) if args.ids is not None else list(quotas)
    properties = set(args.properties or PROPERTIES) | {"id"}
    found, not_found = responses.pick(wanted, quotas)
    return responses.get_response(
        [{k: v for k, v in quota.items() if k in properties} for quota in found],
        not_found,
        account_id=ctx.account_id,
        state=ctx.encode_state(seq),
    )


def _change_rows(records: Mapping[str, QuotaRecord]) -> list[std.ChangeRow]:
    return [
        std.ChangeRow(r.id, r.created_seq, r.updated_seq, r.destroyed_seq) for r in records.values()
    ]


async def quota_changes(ctx: MethodContext, call: Call) -> JsonObject:
    """Quota/changes with ``updatedProperties`` (QUOTA-04): ``["used"]`` when every update
    since the state changed only ``used``, else null."""
    args = ChangesArgs.parse(call.args)
    since = jstate.decode_or_raise(args.since_state, ctx.account.epoch)
    records, seq = await _fresh(ctx)
    standard.check_since(since, standard.ChangeSnapshot(_change_rows(records), seq, 0))
    result = std.compute_changes(_change_rows(records), since, seq, args.max_changes)
    response = standard.changes_answer(ctx.account_id, args.since_state, result)
    only_used = bool(result.updated) and all(
        records[i].props_seq <= since.seq for i in result.updated
    )
    response["updatedProperties"] = ["used"] if only_used else None
    return response


def _validate_condition(condition: JsonObject) -> None:
    for key, value in condition.items():
        if key not in ("name", "scope", "resourceType", "type"):
            raise MethodError(
                MethodErrorType.UNSUPPORTED_FILTER, f"unknown Quota filter property {key[:40]!r}"
            )
        if not isinstance(value, str):
            raise invalid_arguments(f"Quota filter property {key!r} must be a String")


def _matches(quota: JsonObject, condition: JsonObject) -> bool:
    for key, value in condition.items():
        if key == "name":
            ok = value.casefold() in quota["name"].casefold()
        elif key == "type":
            ok = value in quota["types"]
        else:  # scope, resourceType: the exact value
            ok = quota[key] == value
        if not ok:
            return False
    return True


def _query(
    quotas: Mapping[str, JsonObject], filter_: JsonObject | None, sort: list[Comparator]
) -> list[str]:
    parsed = std.validate_filter(filter_, _validate_condition)

    def hit(quota: JsonObject) -> bool:
        return std.matches(parsed, lambda condition: _matches(quota, condition))

    hits = [quota for quota in quotas.values() if hit(quota)]

    def value_of(quota: JsonObject, comparator: Comparator) -> std.SortValue:
        value: str | int = quota[comparator.property]
        return value

    ordered = std.sort_records(hits, sort, value_of, lambda quota: quota["id"])
    return [quota["id"] for quota in ordered]


async def quota_query(ctx: MethodContext, call: Call) -> JsonObject:
    args = QueryArgs.parse(call.args, sort_properties=SORT_PROPERTIES, limits=ctx.query_limits)
    records, seq = await _fresh(ctx)
    ids = _query(_visible(records, call.using), args.filter, args.sort)
    return standard.query_response(ctx, args, ids, seq, can_calculate_changes=True)


async def quota_query_changes(ctx: MethodContext, call: Call) -> JsonObject:
    """Every filter and sort reads the Quota's own properties, so the standard removal of
    whatever changed, re-added where it is now, is exact (RFC 8620 §5.6)."""
    args = QueryChangesArgs.parse(
        call.args, sort_properties=SORT_PROPERTIES, limits=ctx.query_limits
    )
    since = jstate.decode_or_raise(args.since_query_state, ctx.account.epoch)
    records, seq = await _fresh(ctx)
    standard.check_since(since, standard.ChangeSnapshot(_change_rows(records), seq, 0))
    new_ids = _query(_visible(records, call.using), args.filter, args.sort)
    changed = {r.id for r in records.values() if r.last_seq > since.seq}
    destroyed = {i for i in changed if records[i].destroyed_seq is not None}
    result = std.query_changes(
        new_ids,
        changed - destroyed,
        destroyed,
        up_to_id=args.up_to_id,
        max_changes=args.max_changes,
    )
    return responses.query_changes_response(
        account_id=ctx.account_id,
        old_query_state=args.since_query_state,
        new_query_state=ctx.encode_state(seq),
        removed=result.removed,
        added=result.added,
        total=len(new_ids) if args.calculate_total else None,
    )
