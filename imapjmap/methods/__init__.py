"""The method registry: one explicit table from JMAP method name to handler (C7)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from imapjmap.jmap.dispatch import MethodSpec
from imapjmap.jmap.wire import CORE, MAIL
from imapjmap.methods import core, mailbox, mailbox_set
from imapjmap.methods.context import MethodContext

REGISTRY: Final[Mapping[str, MethodSpec[MethodContext]]] = {
    "Core/echo": MethodSpec(core.core_echo, CORE, takes_account=False),
    "Mailbox/get": MethodSpec(mailbox.mailbox_get, MAIL),
    "Mailbox/changes": MethodSpec(mailbox.mailbox_changes, MAIL),
    "Mailbox/query": MethodSpec(mailbox.mailbox_query, MAIL),
    "Mailbox/queryChanges": MethodSpec(mailbox.mailbox_query_changes, MAIL),
    "Mailbox/set": MethodSpec(mailbox_set.mailbox_set, MAIL),
}

# Capabilities whose methods are all implemented; only these are advertised.
CAPABILITIES: Final = frozenset({CORE, MAIL})
ACCOUNT_CAPABILITIES: Final = frozenset({MAIL})
