"""Writes reported done only when the IMAP server proved them (``upstream.imap`` Rule 4),
with races driven deterministically: another plain IMAP client moves or expunges the
message at the exact moment between the proxy's cache read and its STORE, MOVE, COPY or
UID EXPUNGE (a hook around the ``upstream.imap`` primitive).  The proxy's cache is then
stale, as it is while an EventSource's watcher has not yet reported the move.

Every test runs against each backend (Dovecot, Cyrus, Dovecot without extensions); the
oracle checks what is really in IMAP.  CORE-SET-02: each update and destroy is reported
done or not on its own, and never done when it did not happen.
"""

from __future__ import annotations

import imaplib
from collections.abc import Callable
from typing import Any

import pytest

from imapjmap.http import views
from imapjmap.store import emails as em
from imapjmap.upstream import imap as writes
from tests.conftest import advertises
from tests.integration.conftest import Jmap
from tests.integration.test_email_set import (
    append,
    boxes,
    email_by_subject,
    flags_of,
    get,
)


def uid_of(oracle: imaplib.IMAP4, mailbox: str, subject: str) -> int:
    oracle.select(f'"{mailbox}"')
    typ, data = oracle.uid("SEARCH", "HEADER", "Subject", f'"{subject}"')
    assert typ == "OK" and data[0], (mailbox, subject, data)
    return int(data[0].split()[-1])


def outside_move(oracle: imaplib.IMAP4, source: str, subject: str, target: str) -> None:
    """Another client moves the message: MOVE where offered, else COPY + EXPUNGE."""
    uid = str(uid_of(oracle, source, subject))
    if advertises(oracle, "MOVE"):
        typ, data = oracle.uid("MOVE", uid, f'"{target}"')
        assert typ == "OK", data
        return
    assert oracle.uid("COPY", uid, f'"{target}"')[0] == "OK"
    outside_expunge(oracle, source, subject)


def outside_expunge(oracle: imaplib.IMAP4, mailbox: str, subject: str) -> None:
    uid = str(uid_of(oracle, mailbox, subject))
    assert oracle.uid("STORE", uid, "+FLAGS.SILENT", "(\\Deleted)")[0] == "OK"
    assert oracle.expunge()[0] == "OK"


def before_first(monkeypatch: pytest.MonkeyPatch, name: str, race: Callable[[], None]) -> list[Any]:
    """Run ``race`` once, right before the first call of ``writes.<name>``; the calls'
    results are collected in the returned list."""
    original = getattr(writes, name)
    results: list[Any] = []

    async def hooked(*args: Any, **kwargs: Any) -> Any:
        if not results:
            results.append("raced")
            race()
        result = await original(*args, **kwargs)
        results.append(result)
        return result

    monkeypatch.setattr(writes, name, hooked)
    return results


def around_first(
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    before: Callable[[], None],
    after: Callable[[], None],
) -> None:
    """Run ``before`` and ``after`` around the first call of ``writes.<name>``."""
    original = getattr(writes, name)
    calls: list[Any] = []

    async def hooked(*args: Any, **kwargs: Any) -> Any:
        first = not calls
        calls.append(args)
        if first:
            before()
        result = await original(*args, **kwargs)
        if first:
            after()
        return result

    monkeypatch.setattr(writes, name, hooked)


def copies(oracle: imaplib.IMAP4, subject: str, mailboxes: list[str]) -> dict[str, set[str]]:
    """mailbox → flags of ``subject`` there, for every mailbox holding a copy of it that
    is not marked \\Deleted (a \\Deleted copy is one the proxy hides and leaves for the
    user's client to expunge on a server without UIDPLUS)."""
    found = {}
    for mailbox in mailboxes:
        flags = flags_of(oracle, mailbox).get(subject)
        if flags is not None and "\\Deleted" not in flags:
            found[mailbox] = flags
    return found


MAILBOXES = ["INBOX", "Archive", "Trash"]


async def test_keyword_update_follows_message_moved_meanwhile(
    jmap: Jmap, imap_oracle: imaplib.IMAP4, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The STORE hits the UID the message had before another client moved it: the server
    answers OK without a FETCH for it, so the proxy resyncs and stores at the new place."""
    append(imap_oracle, "INBOX", "kw moved")
    email_id = await email_by_subject(jmap, "kw moved")
    ids = await boxes(jmap)
    before_first(
        monkeypatch,
        "store_flags",
        lambda: outside_move(imap_oracle, "INBOX", "kw moved", "Archive"),
    )
    result = await jmap.ok("Email/set", {"update": {email_id: {"keywords/$flagged": True}}})
    assert result["updated"] == {email_id: None}, result
    assert copies(imap_oracle, "kw moved", MAILBOXES) == {"Archive": {"\\Flagged"}}
    email = await get(jmap, email_id)
    assert email == {
        "id": email_id,
        "mailboxIds": {ids["Archive"]: True},
        "keywords": {"$flagged": True},
    }


async def test_keyword_update_of_message_expunged_meanwhile_is_not_found(
    jmap: Jmap, imap_oracle: imaplib.IMAP4, monkeypatch: pytest.MonkeyPatch
) -> None:
    append(imap_oracle, "INBOX", "kw gone")
    email_id = await email_by_subject(jmap, "kw gone")
    before_first(
        monkeypatch, "store_flags", lambda: outside_expunge(imap_oracle, "INBOX", "kw gone")
    )
    result = await jmap.ok("Email/set", {"update": {email_id: {"keywords/$seen": True}}})
    assert result["updated"] is None, result
    assert result["notUpdated"][email_id]["type"] == "notFound"
    assert copies(imap_oracle, "kw gone", MAILBOXES) == {}
    assert (await jmap.ok("Email/get", {"ids": [email_id]}))["notFound"] == [email_id]


async def test_keyword_removal_follows_message_moved_meanwhile(
    jmap: Jmap, imap_oracle: imaplib.IMAP4, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A -FLAGS is proven too: the keyword is gone from the copy at its new place, and a
    flag the patch did not name stays."""
    append(imap_oracle, "INBOX", "unflag moved", "(\\Flagged \\Seen)")
    email_id = await email_by_subject(jmap, "unflag moved")
    before_first(
        monkeypatch,
        "store_flags",
        lambda: outside_move(imap_oracle, "INBOX", "unflag moved", "Trash"),
    )
    result = await jmap.ok("Email/set", {"update": {email_id: {"keywords/$flagged": None}}})
    assert result["updated"] == {email_id: None}, result
    assert copies(imap_oracle, "unflag moved", MAILBOXES) == {"Trash": {"\\Seen"}}
    assert (await get(jmap, email_id))["keywords"] == {"$seen": True}


async def test_destroy_of_message_moved_meanwhile_removes_it_at_its_new_place(
    jmap: Jmap, imap_oracle: imaplib.IMAP4, monkeypatch: pytest.MonkeyPatch
) -> None:
    append(imap_oracle, "INBOX", "destroy moved")
    email_id = await email_by_subject(jmap, "destroy moved")
    before_first(
        monkeypatch,
        "remove",
        lambda: outside_move(imap_oracle, "INBOX", "destroy moved", "Archive"),
    )
    result = await jmap.ok("Email/set", {"destroy": [email_id]})
    assert result["destroyed"] == [email_id], result
    assert copies(imap_oracle, "destroy moved", MAILBOXES) == {}
    assert (await jmap.ok("Email/get", {"ids": [email_id]}))["notFound"] == [email_id]


async def test_destroy_of_message_expunged_meanwhile_is_not_found(
    jmap: Jmap, imap_oracle: imaplib.IMAP4, monkeypatch: pytest.MonkeyPatch
) -> None:
    append(imap_oracle, "INBOX", "destroy gone")
    email_id = await email_by_subject(jmap, "destroy gone")
    before_first(
        monkeypatch, "remove", lambda: outside_expunge(imap_oracle, "INBOX", "destroy gone")
    )
    result = await jmap.ok("Email/set", {"destroy": [email_id]})
    assert result["destroyed"] is None, result
    assert result["notDestroyed"][email_id]["type"] == "notFound"
    assert copies(imap_oracle, "destroy gone", MAILBOXES) == {}


async def test_move_of_message_moved_meanwhile_applies_the_patch_where_it_is(
    jmap: Jmap, imap_oracle: imaplib.IMAP4, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client moves Inbox → Archive while another client moved it Inbox → Trash: the
    patch (Inbox out, Archive in) is applied to where the message is now (RFC 8620 §5.3
    patches apply to the server's current value), so it ends in Trash and Archive."""
    append(imap_oracle, "INBOX", "both moved")
    email_id = await email_by_subject(jmap, "both moved")
    ids = await boxes(jmap)
    name = "move" if advertises(imap_oracle, "MOVE") else "copy"
    before_first(
        monkeypatch, name, lambda: outside_move(imap_oracle, "INBOX", "both moved", "Trash")
    )
    patch = {f"mailboxIds/{ids['Inbox']}": None, f"mailboxIds/{ids['Archive']}": True}
    result = await jmap.ok("Email/set", {"update": {email_id: patch}})
    assert result["updated"] == {email_id: None}, result
    assert set(copies(imap_oracle, "both moved", MAILBOXES)) == {"Trash", "Archive"}
    assert (await get(jmap, email_id))["mailboxIds"] == {ids["Trash"]: True, ids["Archive"]: True}


async def test_refused_copy_never_removes_the_source(
    jmap: Jmap, imap_oracle: imaplib.IMAP4, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CORE-SET-02: an Email leaving two mailboxes for a third is copied there, then
    removed from both.  When the COPY is refused (the target was deleted by another client
    meanwhile), the removals must not run: the update fails and the message stays where
    it was, instead of being lost."""
    assert imap_oracle.create("Projects")[0] == "OK"
    append(imap_oracle, "INBOX", "keep me")
    email_id = await email_by_subject(jmap, "keep me")
    ids = await boxes(jmap)
    await jmap.ok("Email/set", {"update": {email_id: {f"mailboxIds/{ids['Archive']}": True}}})
    assert set(copies(imap_oracle, "keep me", MAILBOXES)) == {"INBOX", "Archive"}

    def delete_target() -> None:
        imap_oracle.select("INBOX")  # nothing may be selected in the mailbox it deletes
        assert imap_oracle.delete("Projects")[0] == "OK"

    before_first(monkeypatch, "copy", delete_target)
    result = await jmap.ok(
        "Email/set", {"update": {email_id: {"mailboxIds": {ids["Projects"]: True}}}}
    )
    assert result["updated"] is None, result
    assert email_id in result["notUpdated"]
    assert set(copies(imap_oracle, "keep me", MAILBOXES)) == {"INBOX", "Archive"}
    assert (await get(jmap, email_id))["mailboxIds"] == {ids["Inbox"]: True, ids["Archive"]: True}


async def test_keyword_stored_on_a_copy_a_move_then_expunged_is_stored_again(
    jmap: Jmap, imap_oracle: imaplib.IMAP4, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another client's move copies the message just before the proxy's STORE and expunges
    the original just after (Dovecot's MOVE is a copy and an expunge, and a client without
    MOVE does the same): the server proves the STORE on the original, but the copy that is
    left lacks the keyword.  The resync after the write sees the stored-on copy gone and
    the keyword missing, and stores it where the message is now."""
    append(imap_oracle, "INBOX", "kw split")
    email_id = await email_by_subject(jmap, "kw split")
    ids = await boxes(jmap)

    def copy_out() -> None:
        uid = str(uid_of(imap_oracle, "INBOX", "kw split"))
        assert imap_oracle.uid("COPY", uid, "Archive")[0] == "OK"

    around_first(
        monkeypatch,
        "store_flags",
        copy_out,
        lambda: outside_expunge(imap_oracle, "INBOX", "kw split"),
    )
    result = await jmap.ok("Email/set", {"update": {email_id: {"keywords/$flagged": True}}})
    assert result["updated"] == {email_id: None}, result
    assert copies(imap_oracle, "kw split", MAILBOXES) == {"Archive": {"\\Flagged"}}
    email = await get(jmap, email_id)
    assert email["mailboxIds"] == {ids["Archive"]: True}
    assert email["keywords"] == {"$flagged": True}


async def test_keyword_stored_on_the_original_of_a_move_not_yet_expunged_reaches_the_copy(
    jmap: Jmap, imap_oracle: imaplib.IMAP4, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As above, but the other client's expunge of the original comes only after the
    proxy's check (a slow move, or one on a busy server): at the resync both copies are
    there and the Email's keywords, the union of its copies, show ours.  The copy the
    proxy did not store on lacks the keyword, so it is stored there too, before
    ``updated`` is answered; once the original goes, the message keeps the keyword."""
    append(imap_oracle, "INBOX", "kw slow split")
    email_id = await email_by_subject(jmap, "kw slow split")
    ids = await boxes(jmap)

    def copy_out() -> None:
        uid = str(uid_of(imap_oracle, "INBOX", "kw slow split"))
        assert imap_oracle.uid("COPY", uid, "Archive")[0] == "OK"

    around_first(monkeypatch, "store_flags", copy_out, lambda: None)
    result = await jmap.ok("Email/set", {"update": {email_id: {"keywords/$flagged": True}}})
    assert result["updated"] == {email_id: None}, result
    outside_expunge(imap_oracle, "INBOX", "kw slow split")  # the move ends
    assert copies(imap_oracle, "kw slow split", MAILBOXES) == {"Archive": {"\\Flagged"}}
    email = await get(jmap, email_id)
    assert email["mailboxIds"] == {ids["Archive"]: True}
    assert email["keywords"] == {"$flagged": True}


async def test_destroy_of_a_message_copied_out_meanwhile_removes_the_copy(
    jmap: Jmap, imap_oracle: imaplib.IMAP4, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A move by another client copies the message out just before the proxy's removal
    (and its expunge of the original then finds nothing left to do): the proxy proved its
    own expunge, but the Email lives on in the other mailbox.  The resync after the write
    finds it there and removes it there too."""
    append(imap_oracle, "INBOX", "destroy split")
    email_id = await email_by_subject(jmap, "destroy split")

    def copy_out() -> None:
        uid = str(uid_of(imap_oracle, "INBOX", "destroy split"))
        assert imap_oracle.uid("COPY", uid, "Archive")[0] == "OK"

    around_first(monkeypatch, "remove", copy_out, lambda: None)
    result = await jmap.ok("Email/set", {"destroy": [email_id]})
    assert result["destroyed"] == [email_id], result
    assert copies(imap_oracle, "destroy split", MAILBOXES) == {}
    assert (await jmap.ok("Email/get", {"ids": [email_id]}))["notFound"] == [email_id]


async def test_a_copy_the_cache_kept_after_a_missed_expunge_is_dropped_and_the_write_lands(
    jmap: Jmap, imap_oracle: imaplib.IMAP4
) -> None:
    """Failure injection: the cache holds a copy the server expunged but the sync cursors
    never showed (a stale location at a UID that does not exist).  The STORE there proves
    nothing; the resync before the retry asks the server for that UID itself, drops the
    copy, and the retry writes the real one: updated, not refused for ever."""
    append(imap_oracle, "INBOX", "ghost")
    email_id = await email_by_subject(jmap, "ghost")
    services = jmap.http.server.app[views.SERVICES]

    def haunt(tx: Any) -> None:
        (real,) = em.locations_of_email(tx, jmap.account_id, email_id)
        ghost = em.Location(real.mailbox_id, real.uid + 1000, email_id, real.modseq, (), False)
        em.put_location(tx, jmap.account_id, ghost)

    await services.store.run(haunt)
    result = await jmap.ok("Email/set", {"update": {email_id: {"keywords/$flagged": True}}})
    assert result["updated"] == {email_id: None}, result
    assert copies(imap_oracle, "ghost", MAILBOXES) == {"INBOX": {"\\Flagged"}}

    def uids(tx: Any) -> list[int]:
        return [loc.uid for loc in em.locations_of_email(tx, jmap.account_id, email_id)]

    assert len(await services.store.run(uids)) == 1


async def test_mailbox_destroy_without_remove_emails_keeps_a_message_put_in_meanwhile(
    jmap: Jmap, imap_oracle: imaplib.IMAP4, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MBX-07: without onDestroyRemoveEmails a mailbox with messages is mailboxHasEmail.  The
    cache said empty, but another client put a message in right before the DELETE (a hook
    on the upstream's count of its messages, asked right before): the server is asked, the
    mailbox stays, the message with it."""
    made = await jmap.ok("Mailbox/set", {"create": {"m": {"name": "Shortlived"}}})
    box = made["created"]["m"]["id"]
    original = writes.ImapUpstream.message_count

    async def racing_count(self: writes.ImapUpstream, name: str) -> int:
        append(imap_oracle, "Shortlived", "late arrival")
        return await original(self, name)

    monkeypatch.setattr(writes.ImapUpstream, "message_count", racing_count)
    result = await jmap.ok("Mailbox/set", {"destroy": [box]})
    assert result["destroyed"] is None, result
    assert result["notDestroyed"][box]["type"] == "mailboxHasEmail"
    assert "late arrival" in flags_of(imap_oracle, "Shortlived")
