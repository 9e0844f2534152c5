"""Thread/get and Thread/changes (RFC 8621 §3; checklist THR-*).

A Thread exists while it has a live Email; its ``emailIds`` are sorted by ``receivedAt``,
oldest first, ties broken by email id (stable).
"""

from __future__ import annotations

from typing import Final

from imapjmap.jmap import responses
from imapjmap.jmap.args import GetArgs
from imapjmap.jmap.dispatch import Call
from imapjmap.jmap.errors import MethodError, MethodErrorType
from imapjmap.jmap.wire import JsonObject
from imapjmap.methods import standard
from imapjmap.methods.context import MethodContext
from imapjmap.store import email_queries as eq
from imapjmap.store import queries as q
from imapjmap.store.db import Tx
from imapjmap.store.emails import THREAD_TYPE

PROPERTIES: Final = ("id", "emailIds")


def _read(
    tx: Tx, account_id: str, ids: list[str] | None, max_objects: int
) -> tuple[list[str], dict[str, list[str]], int]:
    if ids is None:
        count = eq.live_thread_count(tx, account_id)
        if count > max_objects:
            raise MethodError(
                MethodErrorType.REQUEST_TOO_LARGE,
                f"the account has {count} threads, more than maxObjectsInGet {max_objects}",
            )
        ids = eq.live_thread_ids(tx, account_id)
    wanted = list(dict.fromkeys(ids))
    return (
        wanted,
        eq.thread_members(tx, account_id, wanted),
        q.type_state(tx, account_id, THREAD_TYPE),
    )


async def thread_get(ctx: MethodContext, call: Call) -> JsonObject:
    limit = ctx.cfg.limits.max_objects_in_get
    args = GetArgs.parse(
        call.args,
        known_properties=PROPERTIES,
        max_objects=limit,
        max_properties=ctx.cfg.limits.max_properties,
    )
    ids = standard.resolve_ids(call, args.ids) if args.ids is not None else None
    properties = args.properties or list(PROPERTIES)
    await ctx.refresh()
    wanted, members, seq = await ctx.read(lambda tx: _read(tx, ctx.account_id, ids, limit))
    threads = {t: {"id": t, "emailIds": emails} for t, emails in members.items()}
    found, not_found = responses.pick(wanted, threads)
    return responses.get_response(
        [{k: v for k, v in t.items() if k in properties} for t in found],
        not_found,
        account_id=ctx.account_id,
        state=ctx.encode_state(seq),
    )


async def thread_changes(ctx: MethodContext, call: Call) -> JsonObject:
    response, _, _ = await standard.changes(ctx, call.args, "threads", THREAD_TYPE)
    return response
