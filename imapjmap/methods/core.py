"""Core/echo (RFC 8620 §4, CORE-ECHO-01)."""

from __future__ import annotations

from imapjmap.jmap.dispatch import Call
from imapjmap.jmap.wire import JsonObject
from imapjmap.methods.context import MethodContext


async def core_echo(ctx: MethodContext, call: Call) -> JsonObject:
    """Return the arguments unchanged."""
    del ctx
    return call.args
