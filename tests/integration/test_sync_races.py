"""The sync's cursors against a second client that changes INBOX at an exact point of a
refresh: no expunge and no flag change may be lost because a cursor was read too late.

A plain imaplib client (the oracle) moves one message out of INBOX, flags a second and
unflags a third right after the proxy sent one of these commands upstream:

* ``status``: INBOX's STATUS was read (LIST-STATUS; STATUS where the server lacks it; on
  Dovecot the LIST with the NOOP behind it, on the connection that keeps INBOX selected);
* ``changes``: what changed was read (SELECT/EXAMINE, with QRESYNC where offered, or the
  ``UID FETCH ... CHANGEDSINCE`` on the connection that already has INBOX selected);
* ``new``: the new message was fetched, just before the cursor is stored;
* ``write``: a JMAP write's STORE went out on a pooled connection with INBOX selected, so
  that connection, not the refresh's, is the one told of the change.

A server tells each session that has the mailbox selected of a change once, in whatever
reply comes next, and the proxy drops what comes with a command it did not send for it.
So the cursor stored must be one from which the next refresh reads the change again: one
more request later, JMAP and the oracle agree on every message's mailboxes and keywords.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import re
from collections.abc import Callable
from typing import Any

import pytest

from imapjmap.imap.commands import Command
from imapjmap.imap.models import Reply
from imapjmap.imap.session import ImapSession
from tests.conftest import ImapUser, advertises
from tests.integration.conftest import Jmap
from tests.integration.test_email_set import boxes, message
from tests.integration.test_write_races import agreement, imap_state, jmap_state

POINTS = {
    "status": r'^LIST "" "\*" RETURN \(.*STATUS|^STATUS "?INBOX"? \(',
    "changes": r'^(SELECT|EXAMINE) "?INBOX"?( |$)|^UID FETCH 1:\S+ \(UID FLAGS',
    "new": r"^UID FETCH \S+ \(UID FLAGS INTERNALDATE",
    "write": r"^UID STORE ",
}


class Trap:
    """Runs ``action`` once, right after the proxy sent a command matching ``pattern``
    and read its reply, while the proxy waits (the command's session stays busy)."""

    def __init__(self, pattern: str, action: Callable[[], None]) -> None:
        self.pattern = re.compile(pattern)
        self.action = action
        self.armed = False
        self.fired: str | None = None

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        original = ImapSession.execute

        async def execute(session: ImapSession, command: Command, **kwargs: Any) -> Reply:
            reply = await original(session, command, **kwargs)
            text = command.parts[0]
            if self.armed and self.pattern.search(text):
                self.armed = False
                self.fired = text
                await asyncio.to_thread(self.action)
            return reply

        monkeypatch.setattr(ImapSession, "execute", execute)


def _uid_of(client: imaplib.IMAP4, subject: str) -> str:
    typ, data = client.uid("SEARCH", "HEADER", "Subject", f'"{subject}"')
    assert typ == "OK" and data and data[0], (subject, data)
    return str(data[0].split()[0].decode())


def _changes(user: ImapUser) -> None:
    """Move ``race b`` to Archive, flag ``race a``, unflag ``race c``."""
    client = user.connect()
    try:
        assert client.select("INBOX")[0] == "OK"
        a, b, c = (_uid_of(client, f"race {x}") for x in "abc")
        if advertises(client, "MOVE"):
            assert client.uid("MOVE", b, "Archive")[0] == "OK"
        else:
            assert client.uid("COPY", b, "Archive")[0] == "OK"
            assert client.uid("STORE", b, "+FLAGS.SILENT", "(\\Deleted)")[0] == "OK"
            assert client.expunge()[0] == "OK"
        assert client.uid("STORE", a, "+FLAGS.SILENT", "(\\Flagged)")[0] == "OK"
        assert client.uid("STORE", c, "-FLAGS.SILENT", "(\\Flagged)")[0] == "OK"
    finally:
        with contextlib.suppress(Exception):
            client.logout()


@pytest.mark.parametrize("point", list(POINTS))
async def test_a_change_made_during_a_refresh_is_seen_by_the_next(
    jmap: Jmap, imap_user: ImapUser, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    """An expunge and flag changes (EML-KW-01) made by another client at an exact point of
    the proxy's sync are in JMAP one request later: the cursors never skip them."""
    client = imap_user.connect()
    try:
        for subject, flags in (("race a", None), ("race b", None), ("race c", "(\\Flagged)")):
            assert client.append("INBOX", flags, None, message(subject))[0] == "OK"
        by_name = await boxes(jmap)
        names = {
            by_name["Inbox"]: "INBOX",
            by_name["Archive"]: "Archive",
            by_name["Trash"]: "Trash",
        }
        await jmap_state(jmap, names)  # synced; on Dovecot INBOX is now kept selected
        assert client.append("INBOX", None, None, message("race new"))[0] == "OK"
    finally:
        client.logout()

    trap = Trap(POINTS[point], lambda: _changes(imap_user))
    trap.install(monkeypatch)
    trap.armed = True
    if point == "write":
        new = (await jmap.ok("Email/query", {"filter": {"subject": "race new"}}))["ids"]
        assert len(new) == 1, new
        done = await jmap.ok("Email/set", {"update": {new[0]: {"keywords/$seen": True}}})
        assert new[0] in (done["updated"] or {}), done
    else:
        await jmap.ok("Email/query", {})  # the refresh the trap fires in
    assert trap.fired, f"no command matched {trap.pattern.pattern!r}"

    seen = await jmap_state(jmap, names)  # one more refresh
    final = await asyncio.to_thread(imap_state, imap_user)
    assert agreement(final, seen) == [], trap.fired
    assert seen["race a"] == ({"INBOX"}, {"$flagged"})
    assert seen["race b"] == ({"Archive"}, set())
    assert seen["race c"] == ({"INBOX"}, set())
