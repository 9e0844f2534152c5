"""Run the method calls of one Request, strictly in order (RFC 8620 §3.3, §3.6.2).

Rules, per call (CORE-REQ-03, CORE-ERR-10):

1. Result references are resolved first (``invalidResultReference``, CORE-REF-*).
2. An unknown method is ``unknownMethod``.  So is one whose capability is not in ``using``
   (CORE-REQ-06), with one leniency: when ``using`` holds core, a method that takes an
   account is answered if that account supports its capability.  Webmails in use send
   ``Identity/get`` and ``EmailSubmission/set`` with ``using: [core, mail]`` only, and
   refusing them leaves the user unable to send; the first such call per account and
   capability is logged at debug level.  Without core (or with an empty ``using``), or
   when the leniency does not apply in full, the answer stays ``unknownMethod``.
3. For methods that take an account: ``accountId`` missing or not a string is
   ``invalidArguments``; an account the user cannot use is ``accountNotFound``; an account
   without the method's capability is ``accountNotSupportedByMethod``.
4. The handler runs.  Whatever it raises becomes ONE ``["error", {...}, callId]`` response
   and the next call still runs: MethodError as is; ProxyError as its ``jmap_hint`` with a
   generic description (the exception text may hold upstream text and stays in the log), or
   its ``client_description`` when it has one (the request's own cost, e.g. a time budget);
   anything else is logged with its traceback and answered ``serverFail``.
   ``asyncio.CancelledError`` (a BaseException) is never caught.

This module is the only writer of ``error`` invocations.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeAlias, TypeVar

from imapjmap.errors import ProxyError
from imapjmap.jmap.errors import (
    MethodError,
    MethodErrorType,
    SetError,
    SetErrorType,
    invalid_arguments,
)
from imapjmap.jmap.refs import resolve_references
from imapjmap.jmap.request import Invocation, Request
from imapjmap.jmap.wire import CORE, JsonObject

__all__ = [
    "Call",
    "HandlerResult",
    "MethodSpec",
    "UnknownCreationId",
    "resolve_creation_id",
    "run",
]

log = logging.getLogger(__name__)

# (account id, capability) pairs already logged under Rule 2's leniency, oldest first: a
# client that leaves a capability out does so on every request, and one line says enough.
_LENIENT_LOGGED: OrderedDict[tuple[str, str], None] = OrderedDict()
_LENIENT_LOGGED_MAX = 4096

C = TypeVar("C")

HandlerResult: TypeAlias = JsonObject | list[tuple[str, JsonObject]]
"""A dict gives ``[name, dict, callId]``; a list gives one response per (name, args) pair."""


@dataclass(slots=True)
class Call:
    """What a handler receives besides its context."""

    name: str
    args: JsonObject  # result references already resolved
    call_id: str
    account_id: str | None  # validated when the method takes an account, else None
    created_ids: dict[str, str]  # ONE map per request (CORE-CID-02): add creationId -> id
    using: frozenset[str]


@dataclass(frozen=True, slots=True)
class MethodSpec(Generic[C]):
    """One registry entry: the handler and the capability that must be in ``using``."""

    handler: Callable[[C, Call], Awaitable[HandlerResult]]
    capability: str
    takes_account: bool = True  # False for Core/echo and PushSubscription/*


class UnknownCreationId(LookupError):
    """A ``#creationId`` that no earlier create in this request produced (CORE-CID-05)."""

    def __init__(self, creation_id: str) -> None:
        super().__init__(f"unknown creation id #{creation_id}")
        self.creation_id = creation_id

    def set_error(
        self, type_: SetErrorType = SetErrorType.INVALID_PROPERTIES, *properties: str
    ) -> SetError:
        """The SetError a /set record answers with (``properties`` only if given)."""
        return SetError(type_, str(self), list(properties) if properties else None)


def resolve_creation_id(call: Call, value: str) -> str:
    """Map ``#creationId`` to the id created earlier in this request; other values as is.

    Raises:
        UnknownCreationId: ``value`` starts with ``#`` and names no known creation id.
    """
    if not value.startswith("#"):
        return value
    try:
        return call.created_ids[value[1:]]
    except KeyError:
        raise UnknownCreationId(value[1:]) from None


async def run(
    request: Request,
    context: C,
    registry: Mapping[str, MethodSpec[C]],
    accounts: Mapping[str, frozenset[str]],
    session_state: str,
    observe: Callable[[str, str, float], None] | None = None,
    context_for: Callable[[str], C] | None = None,
) -> JsonObject:
    """Process every call of ``request`` in order and build the Response object.

    Args:
        request: the parsed request.
        context: passed unchanged to every handler.
        registry: method name -> spec.
        accounts: every account id the user may use -> the capabilities it supports.
        session_state: the Session ``state``, echoed as ``sessionState``.
        observe: told each call's method (``unknown`` for a name the registry lacks: a
            client's text never becomes a metric label), outcome and seconds.
        context_for: the context of a call's account, where the user has several (one of
            ``accounts``, already checked); without it every call gets ``context``.

    Returns:
        ``{"methodResponses": [...], "sessionState": ..., "createdIds"?: {...}}`` where
        ``createdIds`` is present only when the request had it (CORE-REQ-04, CORE-CID-04).
    """
    created_ids = dict(request.created_ids or {})
    responses: list[Invocation] = []
    for invocation in request.calls:
        started = time.perf_counter()
        produced, outcome, account_id = await _run_one(
            invocation,
            context,
            registry,
            accounts,
            request.using,
            created_ids,
            responses,
            context_for,
        )
        responses.extend(produced)
        seconds = time.perf_counter() - started
        log.info(
            "call %s %s account=%s %.1fms -> %s",
            _loggable(invocation.call_id),
            _loggable(invocation.name),
            account_id or "-",
            seconds * 1000,
            outcome,
        )
        if observe is not None:
            known = invocation.name if invocation.name in registry else "unknown"
            observe(known, outcome, seconds)
    body: JsonObject = {
        "methodResponses": [r.to_json() for r in responses],
        "sessionState": session_state,
    }
    if request.created_ids is not None:
        body["createdIds"] = created_ids
    return body


async def _run_one(
    invocation: Invocation,
    context: C,
    registry: Mapping[str, MethodSpec[C]],
    accounts: Mapping[str, frozenset[str]],
    using: frozenset[str],
    created_ids: dict[str, str],
    previous: Sequence[Invocation],
    context_for: Callable[[str], C] | None = None,
) -> tuple[list[Invocation], str, str | None]:
    """Run one call; return its responses, a one-word outcome for the log, the account."""
    account_id: str | None = None
    try:
        args = resolve_references(invocation.args, previous)
        spec = _method_spec(invocation.name, registry)
        if spec.capability not in using:
            account_id = _lenient_account_id(invocation.name, args, spec, accounts, using)
        elif spec.takes_account:
            account_id = _account_id(args, spec.capability, accounts)
        call = Call(invocation.name, args, invocation.call_id, account_id, created_ids, using)
        if context_for is not None and account_id is not None:
            context = context_for(account_id)
        result = await spec.handler(context, call)
        return _as_responses(invocation, result), "ok", account_id
    except MethodError as exc:
        error = exc.to_json()
    except ProxyError as exc:
        error = _proxy_error(invocation, exc)
    except Exception:
        log.exception("call %s %s failed", _loggable(invocation.call_id), invocation.name)
        error = {"type": MethodErrorType.SERVER_FAIL.value, "description": "internal error"}
    return [Invocation("error", error, invocation.call_id)], error["type"], account_id


def _method_spec(name: str, registry: Mapping[str, MethodSpec[C]]) -> MethodSpec[C]:
    spec = registry.get(name)
    if spec is None:
        raise MethodError(MethodErrorType.UNKNOWN_METHOD, "no such method")
    return spec


def _lenient_account_id(
    name: str,
    args: JsonObject,
    spec: MethodSpec[C],
    accounts: Mapping[str, frozenset[str]],
    using: frozenset[str],
) -> str:
    """The account of a call whose capability is not in ``using`` (Rule 2's leniency).

    Raises:
        MethodError: unknownMethod unless ``using`` holds core and the call names an account
            of the user that supports the method's capability.
    """
    account_id = args.get("accountId")
    if (
        CORE not in using
        or not spec.takes_account
        or not isinstance(account_id, str)
        or spec.capability not in accounts.get(account_id, frozenset())
    ):
        raise MethodError(
            MethodErrorType.UNKNOWN_METHOD, f"capability {spec.capability} is not in 'using'"
        )
    key = (account_id, spec.capability)
    if key not in _LENIENT_LOGGED:
        _LENIENT_LOGGED[key] = None
        if len(_LENIENT_LOGGED) > _LENIENT_LOGGED_MAX:
            _LENIENT_LOGGED.popitem(last=False)
        log.debug(
            "account %s called %s without %s in 'using'; answered anyway",
            account_id,
            _loggable(name),
            spec.capability,
        )
    return account_id


def _account_id(args: JsonObject, capability: str, accounts: Mapping[str, frozenset[str]]) -> str:
    account_id = args.get("accountId")
    if not isinstance(account_id, str):
        raise invalid_arguments("'accountId' is required and must be a string")
    capabilities = accounts.get(account_id)
    if capabilities is None:
        raise MethodError(MethodErrorType.ACCOUNT_NOT_FOUND)
    if capability not in capabilities:
        raise MethodError(
            MethodErrorType.ACCOUNT_NOT_SUPPORTED_BY_METHOD,
            f"the account does not support {capability}",
        )
    return account_id


def _as_responses(invocation: Invocation, result: HandlerResult) -> list[Invocation]:
    if isinstance(result, dict):
        return [Invocation(invocation.name, result, invocation.call_id)]
    if isinstance(result, list) and all(
        isinstance(item, tuple)
        and len(item) == 2
        and isinstance(item[0], str)
        and isinstance(item[1], dict)
        for item in result
    ):
        return [Invocation(name, args, invocation.call_id) for name, args in result]
    raise TypeError(f"handler for {invocation.name} returned {type(result).__name__}")


def _proxy_error(invocation: Invocation, exc: ProxyError) -> JsonObject:
    try:
        type_ = MethodErrorType(exc.jmap_hint)
    except ValueError:
        type_ = MethodErrorType.SERVER_FAIL
    name = type(exc).__name__
    if exc.client_description is not None:
        log.warning("call %s %s: %s: %s", _loggable(invocation.call_id), invocation.name, name, exc)
        return MethodError(type_, exc.client_description).to_json()
    if type_ is MethodErrorType.SERVER_FAIL:
        log.error(
            "call %s %s: %s", _loggable(invocation.call_id), invocation.name, name, exc_info=exc
        )
    else:
        log.warning("call %s %s: %s: %s", _loggable(invocation.call_id), invocation.name, name, exc)
    return MethodError(type_, name).to_json()


def _loggable(text: str, limit: int = 80) -> str:
    """Client-chosen strings in one log line: no control characters, bounded length."""
    if not text.isprintable():
        text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[:limit] + "..."
