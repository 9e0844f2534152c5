"""Blob/copy (RFC 8620 §6.3) between the accounts of one login: its own and the shares of
other users' folders (:mod:`imapjmap.upstream.shares`).

- A ``fromAccountId`` that is none of the login's accounts is ``fromAccountNotFound``.
- Between two accounts, each blob is read in the source account (a message, a part of one,
  an upload) and stored as an upload of the target account; ``copied`` maps its id to the
  new one.  An id the source account cannot read is ``blobNotFound``; one that would take
  the target's uploads over ``limits.max_upload_bytes_per_account`` is ``overQuota``.
- Copying from the account into itself copies nothing: every blob the account can read is
  already there, so ``copied`` maps each such id to itself.  Clients that copy before they
  reference a blob (as RFC 8620 §6.3 suggests when an account may differ) then work
  unchanged.
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
    source = ctx.other(from_account)
    if source is None:
        raise MethodError(MethodErrorType.FROM_ACCOUNT_NOT_FOUND)
    await source.refresh()
    copied: JsonObject = {}
    not_copied: JsonObject = {}
    for blob_id in blob_ids:
        try:
            new_id = await _copy_one(source, ctx, blob_id)
        except SetError as exc:
            not_copied[blob_id] = exc.to_json()
        else:
            copied[blob_id] = new_id
    return {
        "fromAccountId": from_account,
        "accountId": ctx.account_id,
        "copied": copied or None,
        "notCopied": not_copied or None,
    }


async def _copy_one(source: MethodContext, target: MethodContext, blob_id: str) -> str:
    """The blob's id in ``target``; raises SetError (blobNotFound, overQuota)."""
    missing = SetError(SetErrorType.BLOB_NOT_FOUND, "no such blob in the source account")
    if source is target:
        if not await blob_store.exists(source.store, source.upstream, source.account_id, blob_id):
            raise missing
        return blob_id
    blob = await blob_store.read(source.store, source.upstream, source.account_id, blob_id)
    if blob is None:
        raise missing
    try:
        row = await blob_store.save_upload(
            target.store,
            target.account_id,
            blob.data,
            blob.type,
            quota=target.cfg.limits.max_upload_bytes_per_account,
        )
    except blob_store.UploadOverQuota as exc:
        raise SetError(SetErrorType.OVER_QUOTA, str(exc)) from None
    return row.id
