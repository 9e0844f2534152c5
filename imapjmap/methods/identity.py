"""Identity/get, /changes, /set (RFC 8621 §6) and who may send from which address.

Theory of operation
-------------------
A user's identities are of two kinds, both kept in the cache's ``identities`` table:

* configured ones (``from_config``, ``mayDelete: false``): the *default identity* — the
  login when it is an address, else ``login@submission.default_domain`` — plus every
  ``[[submission.identities]]`` entry whose ``username`` is the login.  Their ids come
  from their address, so they are stable across restarts and config edits.  They are
  brought in line with the configuration (:func:`sync_configured`) at the start of every
  Identity and EmailSubmission call: a new entry appears as created, a removed one as
  destroyed, and an entry whose configured values changed is overwritten with them (edits
  the user made through Identity/set are kept until the configuration changes);
* the user's own, made with Identity/set.

The sender policy (:class:`SenderPolicy`): a user may use — as an Identity's ``email``, as
the From address of a message they send, and as its SMTP MAIL FROM — the addresses of
their configured identities (a ``*@domain`` entry allows the whole domain), or any address
when ``submission.identities_any_from`` is true.  Anything else is ``forbiddenFrom``
(``forbiddenMailFrom`` for the envelope).  The SMTP server may refuse more.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from imapjmap.config import Config
from imapjmap.jmap import responses
from imapjmap.jmap.args import SetArgs
from imapjmap.jmap.dispatch import Call
from imapjmap.jmap.errors import (
    MethodError,
    MethodErrorType,
    SetError,
    SetErrorType,
    invalid_properties,
)
from imapjmap.jmap.patch import apply_patch
from imapjmap.jmap.wire import JsonObject
from imapjmap.methods import standard
from imapjmap.methods.context import MethodContext
from imapjmap.mime.submission import allowed_by, is_address
from imapjmap.store import queries as q
from imapjmap.store import submissions as sub
from imapjmap.store.db import Tx

PROPERTIES: Final = (
    "id",
    "name",
    "email",
    "replyTo",
    "bcc",
    "textSignature",
    "htmlSignature",
    "mayDelete",
)
_CLIENT_SET: Final = ("name", "email", "replyTo", "bcc", "textSignature", "htmlSignature")
_SERVER_SET: Final = ("id", "mayDelete")
_KV_PREFIX: Final = "identity-config:"


# --- policy and configured identities ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SenderPolicy:
    """The addresses one user may send from (see the module docstring)."""

    any_from: bool
    emails: tuple[str, ...]  # configured identity addresses, "*@domain" included

    def allows(self, address: str) -> bool:
        return self.any_from or any(allowed_by(email, address) for email in self.emails)


def default_address(cfg: Config, username: str) -> str | None:
    """The default identity's address: the login if it is one, else login@default_domain."""
    if is_address(username):
        return username
    domain = cfg.submission.default_domain
    if domain and is_address(f"{username}@{domain}"):
        return f"{username}@{domain}"
    return None


def _config_id(email: str) -> str:
    digest = hashlib.sha256(b"identity\0" + email.casefold().encode()).digest()
    return "IC" + base64.b32encode(digest[:15]).decode().lower()


def configured_identities(cfg: Config, account_id: str, username: str) -> list[sub.IdentityRow]:
    """The configured identities of ``username``, default first, one per address."""
    out: dict[str, sub.IdentityRow] = {}
    default = default_address(cfg, username)
    if default is not None:
        out[default.casefold()] = sub.IdentityRow(account_id, _config_id(default), default)
    for entry in cfg.submission.identities:
        if entry.username.casefold() != username.casefold():
            continue
        out[entry.email.casefold()] = sub.IdentityRow(
            account_id,
            _config_id(entry.email),
            entry.email,
            name=entry.name,
            text_signature=entry.text_signature,
            html_signature=entry.html_signature,
        )
    return [dataclasses.replace(r, may_delete=False, from_config=True) for r in out.values()]


def sender_policy(cfg: Config, username: str) -> SenderPolicy:
    emails = tuple(r.email for r in configured_identities(cfg, "", username))
    return SenderPolicy(cfg.submission.identities_any_from, emails)


def _config_values(row: sub.IdentityRow) -> str:
    values = [row.email, row.name, row.text_signature, row.html_signature]
    return json.dumps(values, separators=(",", ":"))


def sync_configured(tx: Tx, account_id: str, wanted: Sequence[sub.IdentityRow]) -> None:
    """Bring the configured identities in the cache in line with ``wanted`` (one seq, and
    only when something changed)."""
    live = {row.id: row for row in sub.live_identities(tx, account_id)}
    seq: int | None = None

    def take() -> int:
        nonlocal seq
        if seq is None:
            seq = q.next_seq(tx, account_id, [sub.IDENTITY_TYPE])
        return seq

    for row in wanted:
        values = _config_values(row)
        applied = q.kv_get(tx, account_id, _KV_PREFIX + row.id)
        current = live.get(row.id)
        if current is None:
            sub.put_identity(tx, row, take())
        elif applied != values:  # the configuration changed: it wins over the user's edits
            merged = dataclasses.replace(
                current,
                email=row.email,
                name=row.name,
                text_signature=row.text_signature,
                html_signature=row.html_signature,
                may_delete=False,
                from_config=True,
            )
            if merged != current:
                sub.put_identity(tx, merged, take())
        if applied != values:
            q.kv_set(tx, account_id, _KV_PREFIX + row.id, values)
    keep = {row.id for row in wanted}
    for row in live.values():
        if row.from_config and row.id not in keep:
            sub.destroy_identity(tx, account_id, row.id, take())
            q.kv_delete(tx, account_id, _KV_PREFIX + row.id)


async def live_identities(ctx: MethodContext) -> list[sub.IdentityRow]:
    """The account's identities, the configured ones brought up to date first."""
    wanted = configured_identities(ctx.cfg, ctx.account_id, ctx.account.username)

    def run(tx: Tx) -> list[sub.IdentityRow]:
        sync_configured(tx, ctx.account_id, wanted)
        return sub.live_identities(tx, ctx.account_id)

    return await ctx.write(run)


# --- JSON ----------------------------------------------------------------------------------


def to_json(row: sub.IdentityRow) -> JsonObject:
    return {
        "id": row.id,
        "name": row.name,
        "email": row.email,
        "replyTo": row.reply_to,
        "bcc": row.bcc,
        "textSignature": row.text_signature,
        "htmlSignature": row.html_signature,
        "mayDelete": row.may_delete,
    }


def _email_addresses(value: Any, prop: str) -> list[dict[str, Any]] | None:
    """An ``EmailAddress[]|null`` (RFC 8621 §4.1.2.3): {name: String|null, email: String}."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise invalid_properties(f"{prop} must be an array of EmailAddress or null", prop)
    out: list[dict[str, Any]] = []
    for item in value:
        if (
            not isinstance(item, dict)
            or not set(item) <= {"name", "email"}
            or not isinstance(item.get("email"), str)
            or not is_address(item["email"])
            or not isinstance(item.get("name"), str | None)
        ):
            raise invalid_properties(
                f"{prop} must hold EmailAddress objects {{name, email}} with valid addresses",
                prop,
            )
        out.append({"name": item.get("name"), "email": item["email"]})
    return out


def _string(obj: JsonObject, prop: str) -> str:
    value = obj.get(prop, "")
    if not isinstance(value, str):
        raise invalid_properties(f"{prop} must be a String", prop)
    return value


def _row_from(base: sub.IdentityRow, obj: JsonObject) -> sub.IdentityRow:
    """The row with the client-settable properties of ``obj`` (all of them, validated)."""
    return dataclasses.replace(
        base,
        name=_string(obj, "name"),
        reply_to=_email_addresses(obj.get("replyTo"), "replyTo"),
        bcc=_email_addresses(obj.get("bcc"), "bcc"),
        text_signature=_string(obj, "textSignature"),
        html_signature=_string(obj, "htmlSignature"),
    )


# --- methods -------------------------------------------------------------------------------


async def identity_get(ctx: MethodContext, call: Call) -> JsonObject:
    args = standard.get_args(ctx, call.args, PROPERTIES)
    rows = await live_identities(ctx)
    state = await ctx.state(sub.IDENTITY_TYPE)
    by_id = {row.id: row for row in rows}
    wanted = standard.resolve_ids(call, args.ids) if args.ids is not None else list(by_id)
    properties = args.properties if args.properties is not None else list(PROPERTIES)
    found, not_found = responses.pick(wanted, by_id)
    return responses.get_response(
        [{k: v for k, v in to_json(row).items() if k in properties} for row in found],
        not_found,
        account_id=ctx.account_id,
        state=state,
    )


async def identity_changes(ctx: MethodContext, call: Call) -> JsonObject:
    await live_identities(ctx)
    response, _, _ = await standard.changes(ctx, call.args, "identities", sub.IDENTITY_TYPE)
    return response


def _check_create(obj: JsonObject) -> None:
    unknown = [k for k in obj if k not in _CLIENT_SET and k not in _SERVER_SET]
    if unknown:
        raise invalid_properties("unknown properties", *unknown)
    server = [k for k in obj if k in _SERVER_SET and obj[k] is not None]
    if server:
        raise invalid_properties("server-set properties cannot be given", *server)


async def _create(ctx: MethodContext, obj: Any, policy: SenderPolicy) -> JsonObject:
    if not isinstance(obj, dict):
        raise invalid_properties("an Identity must be an object")
    _check_create(obj)
    email = obj.get("email")
    if not isinstance(email, str) or not is_address(email):
        raise invalid_properties("email must be an address", "email")
    if not policy.allows(email):
        raise SetError(SetErrorType.FORBIDDEN_FROM, f"you may not send as {email}")
    row = _row_from(sub.IdentityRow(ctx.account_id, "IU" + secrets.token_urlsafe(12), email), obj)

    def write(tx: Tx) -> None:
        sub.put_identity(tx, row, q.next_seq(tx, ctx.account_id, [sub.IDENTITY_TYPE]))

    await ctx.write(write)
    created = to_json(row)
    return {k: v for k, v in created.items() if k not in obj or k == "id"}


async def _update(ctx: MethodContext, identity_id: str, patch: JsonObject) -> None:
    row = await ctx.read(lambda tx: sub.identity(tx, ctx.account_id, identity_id))
    if row is None:
        raise SetError(SetErrorType.NOT_FOUND)
    before = to_json(row)
    after = apply_patch(before, patch)
    changed = sorted({k for k in (*before, *after) if before.get(k) != after.get(k)})
    fixed = [k for k in changed if k not in _CLIENT_SET or k == "email"]
    if fixed:
        raise invalid_properties("these properties cannot be changed", *fixed)
    if not changed:
        return
    for prop in ("name", "textSignature", "htmlSignature"):
        after.setdefault(prop, "")  # a patch to null means the default
    new = _row_from(row, after)

    def write(tx: Tx) -> None:
        sub.put_identity(tx, new, q.next_seq(tx, ctx.account_id, [sub.IDENTITY_TYPE]))

    await ctx.write(write)


async def _destroy(ctx: MethodContext, identity_id: str) -> None:
    row = await ctx.read(lambda tx: sub.identity(tx, ctx.account_id, identity_id))
    if row is None:
        raise SetError(SetErrorType.NOT_FOUND)
    if not row.may_delete:
        raise SetError(SetErrorType.FORBIDDEN, "this identity comes from the configuration")

    def write(tx: Tx) -> None:
        seq = q.next_seq(tx, ctx.account_id, [sub.IDENTITY_TYPE])
        sub.destroy_identity(tx, ctx.account_id, identity_id, seq)

    await ctx.write(write)


async def identity_set(ctx: MethodContext, call: Call) -> JsonObject:
    args = SetArgs.parse(call.args, max_objects=ctx.cfg.limits.max_objects_in_set)
    await live_identities(ctx)
    old_state = await ctx.state(sub.IDENTITY_TYPE)
    if args.if_in_state is not None and args.if_in_state != old_state:
        raise MethodError(MethodErrorType.STATE_MISMATCH)
    policy = sender_policy(ctx.cfg, ctx.account.username)
    created: JsonObject = {}
    not_created: JsonObject = {}
    for cid, obj in (args.create or {}).items():
        try:
            created[cid] = await _create(ctx, obj, policy)
        except SetError as exc:
            not_created[cid] = exc.to_json()
        else:
            call.created_ids[cid] = created[cid]["id"]
    destroy_ids = standard.resolve_ids(call, args.destroy or [])
    updated: JsonObject = {}
    not_updated: JsonObject = {}
    for identity_id, patch in (args.update or {}).items():
        try:
            if identity_id in destroy_ids:
                raise SetError(SetErrorType.WILL_DESTROY)
            await _update(ctx, identity_id, patch)
        except SetError as exc:
            not_updated[identity_id] = exc.to_json()
        else:
            updated[identity_id] = None
    destroyed: list[str] = []
    not_destroyed: JsonObject = {}
    for identity_id in destroy_ids:
        try:
            await _destroy(ctx, identity_id)
        except SetError as exc:
            not_destroyed[identity_id] = exc.to_json()
        else:
            destroyed.append(identity_id)
    return responses.set_response(
        responses.SetResult(created, updated, destroyed, not_created, not_updated, not_destroyed),
        account_id=ctx.account_id,
        old_state=old_state,
        new_state=await ctx.state(sub.IDENTITY_TYPE),
    )
