"""PushSubscription/get and /set (RFC 8620 §7.2, CORE-PUSH-02).

Theory of operation
-------------------
PushSubscription is the one data type with no account and no state.  Here a subscription
belongs to the account of the credentials that created it: /get and /set only ever see that
account's subscriptions (HTTP Basic has no narrower notion of "these credentials").

* /get never returns ``url`` or ``keys``; asking for either is ``forbidden``.
  ``verificationCode`` is null until the client has echoed the code the server sent.
* /set create checks the URL policy (:func:`imapjmap.push.subscriptions.check_url`), clamps
  ``expires`` to at most 7 days ahead (the default when omitted), stores the subscription
  unverified, and has the PushVerification POSTed at once.  With ``keys`` every message to
  the URL, the verification included, is encrypted (RFC 8291, :mod:`imapjmap.push.ece`).
* /set update may change ``verificationCode`` (a wrong one is ``invalidProperties``; the
  right one starts delivery), ``expires`` and ``types``; ``deviceClientId``, ``url`` and
  ``keys`` are immutable.  Destroy deletes the row, URL included, and stops delivery.
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
import time
from dataclasses import replace
from typing import Final

from imapjmap.jmap import responses
from imapjmap.jmap.args import SetArgs
from imapjmap.jmap.dispatch import Call
from imapjmap.jmap.errors import (
    MethodError,
    MethodErrorType,
    SetError,
    SetErrorType,
    invalid_arguments,
    invalid_properties,
)
from imapjmap.jmap.patch import apply_patch
from imapjmap.jmap.wire import JsonObject, is_id, parse_utc_date, utc_date
from imapjmap.methods import standard
from imapjmap.methods.context import MethodContext
from imapjmap.push import ece
from imapjmap.push import subscriptions as subs
from imapjmap.store import push as store_push
from imapjmap.store.db import Tx

PROPERTIES: Final = (
    "id",
    "deviceClientId",
    "url",
    "keys",
    "verificationCode",
    "expires",
    "types",
)
_PRIVATE: Final = frozenset({"url", "keys"})  # never returned (RFC 8620 §7.2.1)
_IMMUTABLE: Final = ("id", "deviceClientId", "url", "keys")
_MAX_DEVICE_CLIENT_ID: Final = 255


def _no_account_arguments(raw: JsonObject, *names: str) -> JsonObject:
    """PushSubscription methods take no accountId (nor ifInState): those are unknown."""
    for name in ("accountId", *names):
        if name in raw:
            raise invalid_arguments(f"unknown argument '{name}'")
    return {**raw, "accountId": ""}


def _resolve(call: Call, ref: str) -> str:
    """``#creationId`` -> the id created earlier in this request; anything else as is."""
    return call.created_ids.get(ref[1:], ref) if ref.startswith("#") else ref


def _expires_json(expires: float) -> str:
    return utc_date(dt.datetime.fromtimestamp(expires, dt.UTC))


def to_json(row: store_push.PushSubscriptionRow, properties: list[str] | None) -> JsonObject:
    full: JsonObject = {
        "id": row.id,
        "deviceClientId": row.device_client_id,
        "verificationCode": row.verification_code if row.verified else None,
        "expires": _expires_json(row.expires),
        "types": list(row.types) if row.types is not None else None,
    }
    return full if properties is None else {p: full[p] for p in properties}


async def push_subscription_get(ctx: MethodContext, call: Call) -> JsonObject:
    args = standard.get_args(ctx, _no_account_arguments(call.args), PROPERTIES)
    if args.properties is not None and _PRIVATE & set(args.properties):
        raise MethodError(MethodErrorType.FORBIDDEN, "url and keys are never returned")
    account_id = ctx.account_id
    rows = await ctx.read(lambda tx: store_push.of_account(tx, account_id))
    found = {row.id: row for row in rows}
    wanted = list(found) if args.ids is None else [_resolve(call, i) for i in args.ids]
    picked, not_found = responses.pick(wanted, found)
    return responses.get_response(
        [to_json(row, args.properties) for row in picked], not_found, account_id=None
    )


async def push_subscription_set(ctx: MethodContext, call: Call) -> JsonObject:
    args = SetArgs.parse(
        _no_account_arguments(call.args, "ifInState"),
        max_objects=ctx.cfg.limits.max_objects_in_set,
    )
    created: JsonObject = {}
    not_created: JsonObject = {}
    for creation_id, obj in (args.create or {}).items():
        try:
            created[creation_id] = await _create(ctx, obj)
        except SetError as exc:
            not_created[creation_id] = exc.to_json()
            continue
        call.created_ids[creation_id] = created[creation_id]["id"]
    updated: JsonObject = {}
    not_updated: JsonObject = {}
    for ref, patch in (args.update or {}).items():
        sub_id = _resolve(call, ref)
        try:
            updated[sub_id] = await _update(ctx, sub_id, patch)
        except SetError as exc:
            not_updated[sub_id] = exc.to_json()
    destroyed: list[str] = []
    not_destroyed: JsonObject = {}
    for ref in args.destroy or ():
        sub_id = _resolve(call, ref)
        if await _destroy(ctx, sub_id):
            destroyed.append(sub_id)
        else:
            not_destroyed[sub_id] = SetError(SetErrorType.NOT_FOUND).to_json()
    # no accountId and no states: PushSubscription belongs to no account (RFC 8620 §7.2)
    return responses.SetResult(
        created, updated, destroyed, not_created, not_updated, not_destroyed
    ).to_json()


# --- create ----------------------------------------------------------------------------------


def _clamped_expires(value: object, now: float) -> float:
    latest = now + subs.MAX_EXPIRY
    if value is None:
        return latest
    parsed = parse_utc_date(value)
    if parsed is None:
        raise invalid_properties("expires must be a UTCDate or null", "expires")
    expires = parsed.timestamp()
    if expires <= now:
        raise invalid_properties("expires is in the past", "expires")
    return min(expires, latest)


def _types(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(t, str) and t for t in value):
        raise invalid_properties("types must be an array of type names or null", "types")
    return tuple(dict.fromkeys(value))


def _check_create_properties(obj: JsonObject) -> str:
    unknown = [k for k in obj if k not in PROPERTIES]
    if unknown:
        raise invalid_properties("unknown properties", *(k[:60] for k in unknown[:10]))
    if "id" in obj:
        raise invalid_properties("id is set by the server", "id")
    if obj.get("verificationCode") is not None:
        raise invalid_properties("verificationCode must be null on create", "verificationCode")
    if obj.get("keys") is not None:
        try:
            ece.parse_keys(obj["keys"])
        except ValueError as exc:
            raise invalid_properties(str(exc), "keys") from None
    device = obj.get("deviceClientId")
    if not isinstance(device, str) or not device or len(device) > _MAX_DEVICE_CLIENT_ID:
        raise invalid_properties("deviceClientId must be a non-empty String", "deviceClientId")
    return device


async def _create(ctx: MethodContext, obj: JsonObject) -> JsonObject:
    device = _check_create_properties(obj)
    url = obj.get("url")
    if not isinstance(url, str) or not url:
        raise invalid_properties("url must be an absolute https:// URL", "url")
    refusal = await subs.check_url(url, ctx.cfg.push.allowed_url_prefixes)
    if refusal is not None and refusal.malformed:
        raise invalid_properties(f"url {refusal.reason}", "url")
    if refusal is not None:
        raise SetError(SetErrorType.FORBIDDEN, f"this server will not push there: {refusal.reason}")
    now = time.time()
    row = store_push.PushSubscriptionRow(
        account_id=ctx.account_id,
        id="P" + secrets.token_urlsafe(18),
        device_client_id=device,
        url=url,
        keys=obj.get("keys"),
        verification_code=secrets.token_hex(16),
        verified=False,
        expires=_clamped_expires(obj.get("expires"), now),
        types=_types(obj.get("types")),
        created_at=now,
    )
    limit = ctx.cfg.push.max_subscriptions

    def insert(tx: Tx) -> bool:
        store_push.purge_expired(tx, before=now)
        if store_push.count(tx, row.account_id) >= limit:
            return False
        store_push.put(tx, row)
        return True

    if not await ctx.write(insert):
        raise SetError(SetErrorType.OVER_QUOTA, f"at most {limit} push subscriptions")
    ctx.services.push.subscriptions.send_verification(row)
    created: JsonObject = {"id": row.id, "expires": _expires_json(row.expires)}
    for name, default in (("keys", None), ("verificationCode", None), ("types", None)):
        if name not in obj:
            created[name] = default
    return created


# --- update and destroy ------------------------------------------------------------------------


async def _update(ctx: MethodContext, sub_id: str, patch: JsonObject) -> JsonObject | None:
    account_id = ctx.account_id
    row = (
        await ctx.read(lambda tx: store_push.get(tx, account_id, sub_id)) if is_id(sub_id) else None
    )
    if row is None:
        raise SetError(SetErrorType.NOT_FOUND)
    before: JsonObject = {**to_json(row, None), "url": row.url, "keys": row.keys}
    before["verificationCode"] = row.verification_code if row.verified else None
    after = apply_patch(before, patch)
    unknown = [k for k in after if k not in PROPERTIES]
    changed = [k for k in _IMMUTABLE if after.get(k) != before.get(k)]
    if unknown or changed:
        raise invalid_properties("immutable or unknown properties", *(unknown + changed)[:10])
    new = _updated_row(row, before, after)
    await ctx.write(lambda tx: store_push.put(tx, new))
    await ctx.services.push.subscriptions.activate(new)
    if "expires" in after and after["expires"] != _expires_json(new.expires):
        return {"expires": _expires_json(new.expires)}
    return None


def _updated_row(
    row: store_push.PushSubscriptionRow, before: JsonObject, after: JsonObject
) -> store_push.PushSubscriptionRow:
    now = time.time()
    new = row
    code = after.get("verificationCode")
    if code != before["verificationCode"]:
        if not isinstance(code, str) or not hmac.compare_digest(
            code.encode(), row.verification_code.encode()
        ):
            raise invalid_properties("wrong verificationCode", "verificationCode")
        new = replace(new, verified=True)
    if after.get("expires") != before["expires"]:
        new = replace(new, expires=_clamped_expires(after.get("expires"), now))
    if after.get("types") != before["types"]:
        new = replace(new, types=_types(after.get("types")))
    return new


async def _destroy(ctx: MethodContext, sub_id: str) -> bool:
    account_id = ctx.account_id
    if not is_id(sub_id):
        return False
    deleted = await ctx.write(lambda tx: store_push.delete(tx, account_id, sub_id))
    # only now: the other instances, told, reload what the cache holds (before the delete
    # they kept delivering it)
    await ctx.services.push.subscriptions.deactivate(account_id, sub_id)
    return deleted
