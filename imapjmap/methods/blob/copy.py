"""Blob/copy (RFC 8620 §6.3) for a user with one account.

Each login is exactly one account (see :mod:`imapjmap.methods.email.copy`), so:

- any ``fromAccountId`` but the caller's own is ``fromAccountNotFound``;
- copying from the account into itself copies nothing: every blob the account can read
  is already there, so ``copied`` maps each such id to itself, and an id it cannot read is
  ``notCopied`` with ``blobNotFound``.  Clients that copy before they reference a blob
  (as RFC 8620 §6.3 suggests when an account may differ) then work unchanged.
"""

from __future__ import annotations

from typing import Final

from imapjmap.blobs import content as blob_store
from imapjmap.jmap.dispatch import Call
from imapjmap.jmap.errors import (
    MethodError,
    MethodErrorType,
    SetError,
    SetErrorType,
    invalid_arguments,
)
from imapjmap.jmap.wire import JsonObject
from imapjmap.methods.context import MethodContext

_ARGS: Final = frozenset({"fromAccountId", "accountId", "blobIds"})


def _check_args(raw: JsonObject, max_objects: int) -> tuple[str, list[str]]:
    """(fromAccountId, blobIds without repeats), or invalidArguments / requestTooLarge."""
    unknown = [name for name in raw if name not in _ARGS]
    if unknown:
        raise invalid_arguments(f"unknown argument '{unknown[0][:60]}'")
    from_account = raw.get("fromAccountId")
    if not isinstance(from_account, str):
        raise invalid_arguments("'fromAccountId' is required and must be a String")
    blob_ids = raw.get("blobIds")
    if not isinstance(blob_ids, list) or not all(isinstance(b, str) for b in blob_ids):
        raise invalid_arguments("'blobIds' is required and must be an array of Strings")
    if len(blob_ids) > max_objects:
        raise MethodError(
            MethodErrorType.REQUEST_TOO_LARGE,
            f"{len(blob_ids)} blobIds exceed maxObjectsInSet ({max_objects})",
        )
    return from_account, list(dict.fromkeys(blob_ids))


async def blob_copy(ctx: MethodContext, call: Call) -> JsonObject:
    """Blob/copy: the same ids back for blobs of the account itself (module docstring)."""
    from_account, blob_ids = _check_args(call.args, ctx.cfg.limits.max_objects_in_set)
    if from_account != ctx.account_id:
        raise MethodError(MethodErrorType.FROM_ACCOUNT_NOT_FOUND)
    await ctx.refresh()
    copied: JsonObject = {}
    not_copied: JsonObject = {}
    for blob_id in blob_ids:
        if await blob_store.exists(ctx.store, ctx.upstream, ctx.account_id, blob_id):
            copied[blob_id] = blob_id
        else:
            not_copied[blob_id] = SetError(
                SetErrorType.BLOB_NOT_FOUND, "no such blob in this account"
            ).to_json()
    return {
        "fromAccountId": from_account,
        "accountId": ctx.account_id,
        "copied": copied or None,
        "notCopied": not_copied or None,
    }
