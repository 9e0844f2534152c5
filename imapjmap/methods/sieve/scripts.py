"""SieveScript/get, /set, /query and /validate (RFC 9661) over the account's ManageSieve.

Rule 1: a script is named on the server, and its id is a digest of that name, so ids need
        no table and stay valid for as long as the name does.  A script renamed through
        JMAP (``RENAMESCRIPT``, RFC 5804 §2.11.1) keeps its id: the account's cache maps its
        new name to it (:func:`assign_ids`), until the script is gone.  A script renamed by
        another client is another script.  The vacation's two scripts keep their names
        (``forbidden``): VacationResponse finds them by name.
Rule 2: the content is a blob: /get stores each script's octets as an upload of the
        account (``application/sieve``, content-addressed) and gives its blobId; /set and
        /validate read the blob a client uploaded.
Rule 3: the server compiles every script it stores: a PUTSCRIPT or CHECKSCRIPT refused with
        NO is ``invalidSieve`` with the server's text (its errors and line numbers), which
        is meant for the user; a script larger than the server takes is ``tooLarge``
        (``QUOTA/MAXSIZE``), another quota refusal ``overQuota`` (RFC 9661 §2.4).
Rule 4: the state is a digest of every script's name, activity and content, so it moves
        exactly when /get's answer would.  RFC 9661 defines no /changes, but other JMAP
        servers answer SieveScript/changes and /queryChanges and clients written against
        them call them: a digest cannot say what changed since an older one, so they answer
        "nothing" from the current state and ``cannotCalculateChanges`` from any other
        (RFC 8620 §5.2, §5.6), and the client fetches the few scripts again.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from imapjmap.blobs import content as blob_store
from imapjmap.errors import SieveCommandFailed
from imapjmap.jmap import responses
from imapjmap.jmap import standard as std
from imapjmap.jmap.args import ChangesArgs, Comparator, QueryArgs, QueryChangesArgs, SetArgs
from imapjmap.jmap.dispatch import Call
from imapjmap.jmap.errors import (
    MethodError,
    MethodErrorType,
    SetError,
    SetErrorType,
    invalid_arguments,
    invalid_properties,
)
from imapjmap.jmap.wire import JsonObject, is_id
from imapjmap.methods import standard
from imapjmap.methods.context import MethodContext
from imapjmap.methods.sieve import vacation_script as vs
from imapjmap.methods.sieve.capabilities import MAX_SIZE_SCRIPT_NAME
from imapjmap.store import queries as q
from imapjmap.store.db import Tx
from imapjmap.upstream.api import SieveScripts

PROPERTIES: Final = ("id", "name", "isActive", "blobId")
SORT_PROPERTIES: Final = ("name", "isActive")
SIEVE_TYPE: Final = "application/sieve"
_SETTABLE: Final = frozenset({"name", "blobId"})
_RENAMED_KEY: Final = "sieve-renamed"  # cache kv: {name: id} where id is not its digest
_MANAGED: Final = frozenset({vs.VACATION_SCRIPT, vs.MAIN_SCRIPT})
# what RFC 5804 §1.6 keeps out of a script name: C0, DEL, C1, LINE and PARAGRAPH SEPARATOR
_UNNAMEABLE: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    active: bool
    content: bytes
    id: str


def script_id(name: str) -> str:
    """Rule 1: ``S`` and the digest of the name (a valid Id, CORE-TYPE-01)."""
    digest = base64.b32encode(hashlib.sha256(name.encode("utf-8")).digest()).decode("ascii")
    return "S" + digest[:26].lower()


def assign_ids(names: Sequence[str], renamed: Mapping[str, str]) -> dict[str, str]:
    """Each script's id (Rule 1): the one a renamed script kept, else the digest of its
    name, unless a renamed script kept that very id (it was its old name): then the digest
    of the name set apart, so that no two scripts share an id."""
    kept = {renamed[name] for name in names if name in renamed}
    out = {}
    for name in names:
        if name in renamed:
            out[name] = renamed[name]
        elif (digest := script_id(name)) not in kept:
            out[name] = digest
        else:
            out[name] = script_id("\0" + name)
    return out


def _parse_renamed(raw: str | None) -> dict[str, str]:
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


async def renamed_ids(ctx: MethodContext) -> dict[str, str]:
    raw = await ctx.read_small(lambda tx: q.kv_get(tx, ctx.account_id, _RENAMED_KEY))
    return _parse_renamed(raw)


async def read_scripts(
    sieve: SieveScripts, renamed: Mapping[str, str] | None = None
) -> list[Script]:
    listed = await sieve.scripts()
    ids = assign_ids([name for name, _ in listed], renamed or {})
    out = []
    for name, active in listed:
        content = await sieve.script(name)
        if content is not None:  # deleted by another client between the two commands
            out.append(Script(name, active, content, ids[name]))
    return out


def state_of(scripts: Sequence[Script]) -> str:
    """Rule 4."""
    parts = [(s.name, s.active, hashlib.sha256(s.content).hexdigest()) for s in scripts]
    return "q" + hashlib.sha256(json.dumps(sorted(parts)).encode()).hexdigest()[:24]


async def _blob_id(ctx: MethodContext, content: bytes) -> str:
    row = await blob_store.save_upload(
        ctx.store,
        ctx.account_id,
        content,
        SIEVE_TYPE,
        quota=ctx.cfg.limits.max_upload_bytes_per_account,
    )
    return row.id


async def _to_json(ctx: MethodContext, script: Script, properties: set[str]) -> JsonObject:
    out: JsonObject = {"id": script.id}
    if "name" in properties:
        out["name"] = script.name
    if "isActive" in properties:
        out["isActive"] = script.active
    if "blobId" in properties:
        out["blobId"] = await _blob_id(ctx, script.content)
    return out


# --- get -----------------------------------------------------------------------------------


async def sieve_script_get(ctx: MethodContext, call: Call) -> JsonObject:
    args = standard.get_args(ctx, call.args, PROPERTIES)
    renamed = await renamed_ids(ctx)
    async with ctx.upstream.sieve(ctx.sieve) as sieve:
        scripts = await read_scripts(sieve, renamed)
    by_id = {s.id: s for s in scripts}
    wanted = standard.resolve_ids(call, args.ids) if args.ids is not None else list(by_id)
    properties = set(args.properties if args.properties is not None else PROPERTIES)
    found, not_found = responses.pick(wanted, by_id)
    return responses.get_response(
        [await _to_json(ctx, s, properties) for s in found],
        not_found,
        account_id=ctx.account_id,
        state=state_of(scripts),
    )


# --- query ---------------------------------------------------------------------------------


def _check_condition(condition: JsonObject) -> None:
    for key, value in condition.items():
        if key == "name" and isinstance(value, str):
            continue
        if key == "isActive" and isinstance(value, bool):
            continue
        raise MethodError(
            MethodErrorType.UNSUPPORTED_FILTER, f"unsupported filter condition {key[:40]!r}"
        )


def _matches(script: Script, condition: JsonObject) -> bool:
    name = condition.get("name")
    if name is not None and name.casefold() not in script.name.casefold():
        return False
    return "isActive" not in condition or condition["isActive"] == script.active


def _sort_value(script: Script, comparator: Comparator) -> str | bool:
    return script.name if comparator.property == "name" else script.active


async def sieve_script_query(ctx: MethodContext, call: Call) -> JsonObject:
    args = QueryArgs.parse(call.args, sort_properties=SORT_PROPERTIES, limits=ctx.query_limits)
    tree = std.validate_filter(args.filter, _check_condition)
    renamed = await renamed_ids(ctx)
    async with ctx.upstream.sieve(ctx.sieve) as sieve:
        scripts = await read_scripts(sieve, renamed)
    kept = [s for s in scripts if std.matches(tree, functools.partial(_matches, s))]
    ordered = std.sort_records(kept, args.sort, _sort_value, lambda s: s.name)
    return responses.query_response(
        std.query_window([s.id for s in ordered], args, max_limit=None),
        account_id=ctx.account_id,
        query_state=state_of(scripts),
        can_calculate_changes=False,
    )


async def _current_state(ctx: MethodContext) -> str:
    async with ctx.upstream.sieve(ctx.sieve) as sieve:
        return state_of(await read_scripts(sieve))  # the state holds no ids


def _no_changes_since(state: str, since: str) -> None:
    if since != state:
        raise MethodError(
            MethodErrorType.CANNOT_CALCULATE_CHANGES,
            "the scripts changed since that state: fetch them again",
        )


async def sieve_script_changes(ctx: MethodContext, call: Call) -> JsonObject:
    """Rule 4: empty from the current state, else cannotCalculateChanges."""
    args = ChangesArgs.parse(call.args)
    state = await _current_state(ctx)
    _no_changes_since(state, args.since_state)
    return responses.changes_response(
        account_id=ctx.account_id,
        old_state=args.since_state,
        new_state=state,
        has_more=False,
        created=(),
        updated=(),
        destroyed=(),
    )


async def sieve_script_query_changes(ctx: MethodContext, call: Call) -> JsonObject:
    """Rule 4: the same for a query's results."""
    args = QueryChangesArgs.parse(
        call.args, sort_properties=SORT_PROPERTIES, limits=ctx.query_limits
    )
    tree = std.validate_filter(args.filter, _check_condition)
    async with ctx.upstream.sieve(ctx.sieve) as sieve:
        scripts = await read_scripts(sieve)
    state = state_of(scripts)
    _no_changes_since(state, args.since_query_state)
    total = None
    if args.calculate_total:
        total = sum(1 for s in scripts if std.matches(tree, functools.partial(_matches, s)))
    return responses.query_changes_response(
        account_id=ctx.account_id,
        old_query_state=args.since_query_state,
        new_query_state=state,
        removed=(),
        added=(),
        total=total,
    )


# --- validate ------------------------------------------------------------------------------


def _refused(exc: SieveCommandFailed) -> SetError:
    """Rule 3."""
    if exc.code == "QUOTA/MAXSIZE":  # the script is larger than the server takes
        return SetError(SetErrorType.TOO_LARGE, exc.text or "the script is too large")
    if (exc.code or "").startswith("QUOTA"):
        return SetError(SetErrorType.OVER_QUOTA, exc.text or "over the Sieve quota")
    return SetError(SetErrorType.INVALID_SIEVE, exc.text or "the server refused the script")


async def _content(ctx: MethodContext, blob_id: object) -> bytes:
    if not isinstance(blob_id, str) or not is_id(blob_id):
        raise invalid_properties("blobId must be an Id", "blobId")
    blob = await blob_store.read(ctx.store, ctx.upstream, ctx.account_id, blob_id)
    if blob is None:
        raise SetError(SetErrorType.BLOB_NOT_FOUND, notFound=[blob_id])
    return blob.data


async def sieve_script_validate(ctx: MethodContext, call: Call) -> JsonObject:
    ctx.check_account(call.args.get("accountId", ""))
    unknown = sorted(set(call.args) - {"accountId", "blobId"})
    if unknown or not isinstance(call.args.get("blobId"), str):
        raise invalid_arguments("SieveScript/validate takes accountId and blobId")
    error: JsonObject | None = None
    try:
        content = await _content(ctx, call.args["blobId"])
        async with ctx.upstream.sieve(ctx.sieve) as sieve:
            await sieve.check(content)
    except SieveCommandFailed as exc:
        error = _refused(exc).to_json()
    except SetError as exc:
        error = exc.to_json()
    return {"accountId": ctx.account_id, "error": error}


# --- set -----------------------------------------------------------------------------------


class _Set:
    """One SieveScript/set on one ManageSieve session."""

    def __init__(
        self, ctx: MethodContext, call: Call, sieve: SieveScripts, renamed: dict[str, str]
    ) -> None:
        self.ctx = ctx
        self.call = call
        self.sieve = sieve
        self.scripts: dict[str, Script] = {}  # id -> script, as the server has them now
        self.renamed = renamed  # Rule 1's map

    async def load(self) -> list[Script]:
        scripts = await read_scripts(self.sieve, self.renamed)
        self.scripts = {s.id: s for s in scripts}
        # every id that is not its name's digest, kept (and only for the scripts there are)
        self.renamed = {s.name: s.id for s in scripts if s.id != script_id(s.name)}
        return scripts

    def _named(self, name: str) -> Script | None:
        return next((s for s in self.scripts.values() if s.name == name), None)

    def _check_name(self, name: object) -> str:
        if not isinstance(name, str) or not name or len(name.encode()) > MAX_SIZE_SCRIPT_NAME:
            raise invalid_properties("name must be a non-empty String", "name")
        if _UNNAMEABLE.search(name):
            raise invalid_properties("name holds a control character (RFC 5804 §1.6)", "name")
        taken = self._named(name)
        if taken is not None:
            raise SetError(
                SetErrorType.ALREADY_EXISTS,
                f"a script is named {name!r} already",
                existingId=taken.id,
            )
        return name

    def _check(self, obj: object, *, creating: bool) -> JsonObject:
        if not isinstance(obj, dict):
            raise invalid_properties("a SieveScript must be an object")
        unknown = sorted(k for k in obj if k not in PROPERTIES)
        if unknown:
            raise invalid_properties("unknown properties", *unknown)
        fixed = sorted(k for k in obj if k in ("id", "isActive") and (creating or k == "id"))
        if fixed:
            raise invalid_properties("server-set properties cannot be given", *fixed)
        return obj

    async def create(self, obj: object) -> JsonObject:
        props = self._check(obj, creating=True)
        name = props.get("name")
        name = self._check_name("jmap-" + secrets.token_hex(6) if name is None else name)
        content = await _content(self.ctx, props.get("blobId"))
        await self._put(name, content)
        new_id = script_id(name)
        if new_id in self.scripts:  # a renamed script keeps it: this one gets its own for good
            new_id = script_id("\0" + name)
            self.renamed[name] = new_id
        script = Script(name, False, content, new_id)
        self.scripts[script.id] = script
        created: JsonObject = {"id": script.id, "isActive": False}
        if "name" not in props or props["name"] is None:
            created["name"] = name
        return created

    async def update(self, script_id_: str, patch: object) -> None:
        props = self._check(patch, creating=False)
        script = self.scripts.get(script_id_)
        if script is None:
            raise SetError(SetErrorType.NOT_FOUND)
        if "isActive" in props and props["isActive"] != script.active:
            raise invalid_properties("isActive is set by onSuccessActivateScript", "isActive")
        if "name" in props and props["name"] != script.name:
            script = await self._rename(script, props["name"])
        if "blobId" in props:
            content = await _content(self.ctx, props["blobId"])
            await self._put(script.name, content)
            self.scripts[script_id_] = Script(script.name, script.active, content, script.id)

    async def _rename(self, script: Script, name: object) -> Script:
        """Rule 1: the script keeps its id and, if it was active, stays active."""
        new = self._check_name(name)
        if script.name in _MANAGED or new in _MANAGED:
            raise SetError(
                SetErrorType.FORBIDDEN, "the VacationResponse's scripts keep their names"
            )
        try:
            await self.sieve.rename(script.name, new)
        except SieveCommandFailed as exc:
            raise SetError(SetErrorType.FORBIDDEN, f"the server refused it: {exc.text}") from exc
        self.renamed.pop(script.name, None)
        if script_id(new) != script.id:
            self.renamed[new] = script.id
        await self._follow_in_main(script.name, new)
        renamed = Script(new, script.active, script.content, script.id)
        self.scripts[script.id] = renamed
        return renamed

    async def _follow_in_main(self, old: str, new: str) -> None:
        """The vacation's main script includes the user's script by name: it follows."""
        main = self._named(vs.MAIN_SCRIPT)
        if main is not None and vs.included_user_script(main.content) == old:
            content = vs.main_script(new).encode()
            await self._put(vs.MAIN_SCRIPT, content)
            self.scripts[main.id] = Script(main.name, main.active, content, main.id)

    async def destroy(self, script_id_: str) -> None:
        script = self.scripts.get(script_id_)
        if script is None:
            raise SetError(SetErrorType.NOT_FOUND)
        if script.active:
            raise SetError(SetErrorType.SIEVE_IS_ACTIVE, "deactivate the script first")
        try:
            await self.sieve.delete(script.name)
        except SieveCommandFailed as exc:
            raise SetError(SetErrorType.NOT_FOUND, exc.text) from exc
        del self.scripts[script_id_]
        self.renamed.pop(script.name, None)

    async def _put(self, name: str, content: bytes) -> None:
        try:
            await self.sieve.put(name, content)
        except SieveCommandFailed as exc:
            raise _refused(exc) from exc


async def _activation(run: _Set, args: SetArgs, failed: bool) -> dict[str, JsonObject]:
    """onSuccessDeactivateScript, then onSuccessActivateScript (RFC 9661 §2.4: in this
    order when both are given), when every change succeeded; an id that names no script
    is ignored.  The scripts whose ``isActive`` changed, for ``updated``."""
    activate = args.extra.get("onSuccessActivateScript")
    deactivate = args.extra.get("onSuccessDeactivateScript")
    if failed:
        return {}
    target = None
    if activate is not None:
        target = run.scripts.get(standard.resolve_ids(run.call, [activate])[0])
    if target is None and not deactivate:
        return {}
    before = {s.id: s.active for s in run.scripts.values()}
    # one SETACTIVE: activating a script deactivates the one active before it
    await run.sieve.activate(target.name if target is not None else None)
    after = {s.id: s.active for s in await run.load()}
    return {i: {"isActive": a} for i, a in after.items() if before.get(i) not in (None, a)}


def _check_extra(args: SetArgs) -> None:
    activate = args.extra.get("onSuccessActivateScript")
    deactivate = args.extra.get("onSuccessDeactivateScript")
    if activate is not None and not isinstance(activate, str):
        raise invalid_arguments("onSuccessActivateScript must be an Id or null")
    if deactivate is not None and not isinstance(deactivate, bool):
        raise invalid_arguments("onSuccessDeactivateScript must be a Boolean or null")


async def _records(run: _Set, args: SetArgs) -> responses.SetResult:
    """Every create, then every update, then every destroy, each on its own (CORE-SET-02)."""
    created: JsonObject = {}
    updated: JsonObject = {}
    destroyed: list[str] = []
    not_created: JsonObject = {}
    not_updated: JsonObject = {}
    not_destroyed: JsonObject = {}
    for cid, obj in (args.create or {}).items():
        try:
            created[cid] = await run.create(obj)
        except SetError as exc:
            not_created[cid] = exc.to_json()
        else:
            run.call.created_ids[cid] = created[cid]["id"]
    destroy_ids = standard.resolve_ids(run.call, args.destroy or [])
    for object_id, patch in (args.update or {}).items():
        try:
            if object_id in destroy_ids:
                raise SetError(SetErrorType.WILL_DESTROY)
            await run.update(object_id, patch)
        except SetError as exc:
            not_updated[object_id] = exc.to_json()
        else:
            updated[object_id] = None
    for object_id in destroy_ids:
        try:
            await run.destroy(object_id)
        except SetError as exc:
            not_destroyed[object_id] = exc.to_json()
        else:
            destroyed.append(object_id)
    return responses.SetResult(created, updated, destroyed, not_created, not_updated, not_destroyed)


def _save_renamed(account_id: str, renamed: Mapping[str, str], tx: Tx) -> None:
    if renamed:
        q.kv_set(tx, account_id, _RENAMED_KEY, json.dumps(dict(sorted(renamed.items()))))
    else:
        q.kv_delete(tx, account_id, _RENAMED_KEY)


async def sieve_script_set(ctx: MethodContext, call: Call) -> JsonObject:
    args = SetArgs.parse(
        call.args,
        max_objects=ctx.cfg.limits.max_objects_in_set,
        extra=("onSuccessActivateScript", "onSuccessDeactivateScript"),
    )
    _check_extra(args)
    renamed = await renamed_ids(ctx)
    async with ctx.upstream.sieve(ctx.sieve) as sieve:
        run = _Set(ctx, call, sieve, dict(renamed))
        old_state = state_of(await run.load())
        if args.if_in_state is not None and args.if_in_state != old_state:
            raise MethodError(MethodErrorType.STATE_MISMATCH)
        result = await _records(run, args)
        failed = bool(result.not_created or result.not_updated or result.not_destroyed)
        updated = dict(result.updated)
        for object_id, change in (await _activation(run, args, failed)).items():
            updated[object_id] = {**(updated.get(object_id) or {}), **change}
        result.updated = updated
        new_state = state_of(await run.load())
    if run.renamed != renamed:
        await ctx.write(functools.partial(_save_renamed, ctx.account_id, run.renamed))
    return responses.set_response(
        result, account_id=ctx.account_id, old_state=old_state, new_state=new_state
    )
