"""VacationResponse/get and /set (RFC 8621 §8) over the account's Sieve scripts.

Rule 1: the server answers mail, not the proxy: the VacationResponse is the vacation
        script (:mod:`.vacation_script`), written with ManageSieve and made to run.
Rule 2: another client's script is never overwritten or switched off.  With one active,
        the managed main script that includes both is activated (RFC 6609 ``include``);
        turning vacation off activates the user's script again.  A server without
        ``include`` cannot run both: enabling vacation there is refused (``forbidden``)
        while another script is active.
Rule 3: ``isEnabled`` says whether the server runs the vacation script now: when another
        client activated a script of its own since, vacation is off, and /get says so.
Rule 4: the state is a digest of what /get shows, so it changes exactly when that does.
Rule 5: the script answers mail sent to any of the account's identities (``:addresses``):
        the server's own idea of the user's address may be one nobody writes to.  The
        addresses are those of when the VacationResponse was last set.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Final

from imapjmap.errors import SieveCommandFailed
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
from imapjmap.jmap.wire import JsonObject, parse_utc_date
from imapjmap.methods import standard
from imapjmap.methods.context import MethodContext
from imapjmap.methods.identity import live_identities
from imapjmap.methods.sieve import vacation_script as vs
from imapjmap.upstream.api import SieveScripts

SINGLETON: Final = "singleton"
PROPERTIES: Final = ("id", "isEnabled", "fromDate", "toDate", "subject", "textBody", "htmlBody")
_STRINGS: Final = ("subject", "textBody", "htmlBody")
_DATES: Final = ("fromDate", "toDate")


def _active(scripts: list[tuple[str, bool]]) -> str | None:
    return next((name for name, active in scripts if active), None)


async def read_vacation(sieve: SieveScripts) -> vs.Vacation:
    """The VacationResponse as the server runs it now (Rule 3)."""
    scripts = await sieve.scripts()
    names = {name for name, _ in scripts}
    stored = await sieve.script(vs.VACATION_SCRIPT) if vs.VACATION_SCRIPT in names else None
    vacation = vs.parse_vacation(stored)
    running = _active(scripts) in (vs.VACATION_SCRIPT, vs.MAIN_SCRIPT)
    return vacation if running else dataclasses.replace(vacation, isEnabled=False)


def _state(vacation: vs.Vacation) -> str:
    body = json.dumps(vacation.to_json(), sort_keys=True).encode()
    return "v" + hashlib.sha256(body).hexdigest()[:24]


async def vacation_response_get(ctx: MethodContext, call: Call) -> JsonObject:
    args = standard.get_args(ctx, call.args, PROPERTIES)
    async with ctx.upstream.sieve(ctx.sieve) as sieve:
        vacation = await read_vacation(sieve)
    wanted = args.ids if args.ids is not None else [SINGLETON]
    properties = set(args.properties if args.properties is not None else PROPERTIES) | {"id"}
    found = [{k: v for k, v in vacation.to_json().items() if k in properties}]
    return responses.get_response(
        found if SINGLETON in wanted else [],
        [i for i in dict.fromkeys(wanted) if i != SINGLETON],
        account_id=ctx.account_id,
        state=_state(vacation),
    )


def _validated(obj: JsonObject) -> vs.Vacation:
    """The VacationResponse a patched object describes (RFC 8621 §8's types)."""
    unknown = sorted(k for k in obj if k not in PROPERTIES)
    if unknown:
        raise invalid_properties("unknown properties", *unknown)
    if obj.get("id") != SINGLETON:
        raise invalid_properties("id cannot be changed", "id")
    if not isinstance(obj.get("isEnabled"), bool):
        raise invalid_properties("isEnabled must be a Boolean", "isEnabled")
    for prop in _STRINGS:
        if not isinstance(obj.get(prop), str | None):
            raise invalid_properties(f"{prop} must be a String or null", prop)
    for prop in _DATES:
        if obj.get(prop) is not None and parse_utc_date(obj[prop]) is None:
            raise invalid_properties(f"{prop} must be a UTCDate or null", prop)
    fields: dict[str, Any] = {k: obj.get(k) for k in PROPERTIES if k != "id"}
    return vs.Vacation(**fields)


async def _arrange(sieve: SieveScripts, enabled: bool) -> None:
    """Make the server run the vacation script, or stop running it (Rule 2)."""
    active = _active(await sieve.scripts())
    user = active
    if active == vs.MAIN_SCRIPT:
        user = vs.included_user_script(await sieve.script(vs.MAIN_SCRIPT))
    elif active == vs.VACATION_SCRIPT:
        user = None
    if not enabled:
        if active in (vs.VACATION_SCRIPT, vs.MAIN_SCRIPT):
            await sieve.activate(user)  # the user's own script as it was, or none
        return
    if user is None:
        await sieve.activate(vs.VACATION_SCRIPT)
        return
    if "include" not in sieve.server.extensions:
        raise SetError(
            SetErrorType.FORBIDDEN,
            f"the Sieve script {user!r} is active and this server cannot run a second one"
            " beside it (no Sieve include): deactivate it first",
        )
    await sieve.put(vs.MAIN_SCRIPT, vs.main_script(user).encode())
    if active != vs.MAIN_SCRIPT:
        await sieve.activate(vs.MAIN_SCRIPT)


async def own_addresses(ctx: MethodContext) -> list[str]:
    """The addresses of the account's identities (Rule 5); a ``*@domain`` one names none."""
    found: dict[str, str] = {}
    for row in await live_identities(ctx):
        if not row.email.startswith("*@"):
            found.setdefault(row.email.casefold(), row.email)
    return list(found.values())


async def _update(
    sieve: SieveScripts, current: vs.Vacation, patch: JsonObject, addresses: list[str]
) -> None:
    new = _validated(apply_patch(current.to_json(), patch))
    try:
        script = vs.vacation_script(new, sieve.server.extensions, addresses)
    except ValueError as exc:
        raise invalid_properties(
            str(exc), *(p for p in ("fromDate", "toDate") if p in patch)
        ) from None
    try:
        await sieve.put(vs.VACATION_SCRIPT, script.encode())
        await _arrange(sieve, new.isEnabled)
    except SieveCommandFailed as exc:
        kind = SetErrorType.OVER_QUOTA if (exc.code or "").startswith("QUOTA") else None
        raise SetError(
            kind or SetErrorType.FORBIDDEN, f"the Sieve server refused it: {exc.text}"
        ) from exc


async def vacation_response_set(ctx: MethodContext, call: Call) -> JsonObject:
    args = SetArgs.parse(call.args, max_objects=ctx.cfg.limits.max_objects_in_set)
    addresses = await own_addresses(ctx) if args.update else []
    async with ctx.upstream.sieve(ctx.sieve) as sieve:
        current = await read_vacation(sieve)
        old_state = _state(current)
        if args.if_in_state is not None and args.if_in_state != old_state:
            raise MethodError(MethodErrorType.STATE_MISMATCH)
        singleton = SetError(SetErrorType.SINGLETON, "the VacationResponse is a singleton")
        not_created = {cid: singleton.to_json() for cid in args.create or {}}
        not_destroyed = {object_id: singleton.to_json() for object_id in args.destroy or []}
        updated: JsonObject = {}
        not_updated: JsonObject = {}
        for object_id, patch in (args.update or {}).items():
            try:
                if object_id != SINGLETON:
                    raise SetError(SetErrorType.NOT_FOUND)
                await _update(sieve, current, patch, addresses)
            except SetError as exc:
                not_updated[object_id] = exc.to_json()
            else:
                updated[object_id] = None
        new_state = _state(await read_vacation(sieve)) if updated else old_state
    result = responses.SetResult({}, updated, [], not_created, not_updated, not_destroyed)
    return responses.set_response(
        result, account_id=ctx.account_id, old_state=old_state, new_state=new_state
    )
