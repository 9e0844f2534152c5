"""Email/copy (RFC 8621 §4.7): argument checks, and never a copy.

Each user of this proxy has exactly one account (their IMAP login), and JMAP /copy only
ever copies BETWEEN two accounts (RFC 8620 §5.4): filing an Email in more mailboxes of the
same account is an Email/set update of ``mailboxIds``.  A second account would need a
second set of IMAP credentials in the same request, which HTTP Basic cannot carry.  So once
the arguments are checked, ``fromAccountId == accountId`` is ``invalidArguments``
(CORE-COPY-01, strict reading) and any other ``fromAccountId`` is ``fromAccountNotFound``.
"""

from __future__ import annotations

from typing import Final

from imapjmap.jmap.dispatch import Call
from imapjmap.jmap.errors import MethodError, MethodErrorType, invalid_arguments
from imapjmap.jmap.wire import JsonObject, is_id
from imapjmap.methods.context import MethodContext

_COPY_ARGS: Final = frozenset(
    {
        "fromAccountId",
        "ifFromInState",
        "accountId",
        "ifInState",
        "create",
        "onSuccessDestroyOriginal",
        "destroyFromIfInState",
    }
)


def _check_copy_args(raw: JsonObject, max_objects: int) -> str:
    """Check every Email/copy argument's shape (RFC 8620 §5.4); returns fromAccountId."""
    unknown = [name for name in raw if name not in _COPY_ARGS]
    if unknown:
        raise invalid_arguments(f"unknown argument '{unknown[0][:60]}'")
    from_account = raw.get("fromAccountId")
    if not isinstance(from_account, str):
        raise invalid_arguments("'fromAccountId' is required and must be a String")
    for name in ("ifFromInState", "ifInState", "destroyFromIfInState"):
        if raw.get(name) is not None and not isinstance(raw[name], str):
            raise invalid_arguments(f"'{name}' must be a String or null")
    destroy = raw.get("onSuccessDestroyOriginal")
    if destroy is not None and not isinstance(destroy, bool):
        raise invalid_arguments("'onSuccessDestroyOriginal' must be a Boolean")
    create = raw.get("create")
    if not isinstance(create, dict) or not all(isinstance(v, dict) for v in create.values()):
        raise invalid_arguments("'create' is required and must map creation ids to objects")
    for key, value in create.items():
        if not is_id(key):
            raise invalid_arguments(f"'create' key {key[:40]!r} is not a valid creation id")
        if not isinstance(value.get("id"), str):
            raise invalid_arguments(f"'create/{key}' needs the 'id' of the Email to copy")
    if len(create) > max_objects:
        raise MethodError(
            MethodErrorType.REQUEST_TOO_LARGE,
            f"{len(create)} objects exceed maxObjectsInSet ({max_objects})",
        )
    return from_account


async def email_copy(ctx: MethodContext, call: Call) -> JsonObject:
    """Email/copy: argument checks only, since no second account exists (module docstring)."""
    from_account = _check_copy_args(call.args, ctx.cfg.limits.max_objects_in_set)
    if from_account == ctx.account_id:
        raise invalid_arguments(
            "Email/copy copies between accounts; use Email/set to file an email in more mailboxes"
        )
    raise MethodError(MethodErrorType.FROM_ACCOUNT_NOT_FOUND)
