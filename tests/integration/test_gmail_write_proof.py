"""Gmail mode gets the same proof of its writes (``upstream.imap`` Rule 4) as other servers,
against the Gmail emulation: another client trashes the message at the exact moment
between the proxy's cache read and its flag STORE on All Mail (a hook on the STORE)."""

from __future__ import annotations

from typing import Any

import pytest

from imapjmap.upstream import imap as writes
from imapjmap.upstream.gmail import GmailMailbox
from tests.gmail_emulation import Message
from tests.integration.conftest import Jmap
from tests.integration.test_gmail import (  # noqa: F401 (fixtures)
    GmailUser,
    gm,
    gm_http,
    gmail_server,
    gmail_user,
    mailboxes,
    seeded,
)


async def test_flag_store_follows_a_message_trashed_meanwhile(
    gm: Jmap,  # noqa: F811
    gmail_user: GmailUser,  # noqa: F811
    seeded: dict[str, Message],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The STORE goes to the All Mail UID the message no longer has there: no FETCH proves
    it, so the proxy resyncs, finds the message in the Trash, and stores it there."""
    account = gmail_user.account
    welcome = seeded["welcome"]
    email_id = f"M{welcome.msgid}"
    all_mail, trash = account.folder("[Gmail]/All Mail"), account.folder("[Gmail]/Trash")
    assert all_mail is not None and trash is not None
    original = writes.store_flags
    calls: list[Any] = []

    async def racing_store(*args: Any, **kwargs: Any) -> Any:
        if not calls:
            account.move(welcome, all_mail, trash)  # another client trashes it
        calls.append(args)
        return await original(*args, **kwargs)

    monkeypatch.setattr(writes, "store_flags", racing_store)
    result = await gm.ok("Email/set", {"update": {email_id: {"keywords/$seen": True}}})
    assert result["updated"] == {email_id: None}, result
    assert welcome.place == "trash"
    assert "\\Seen" in welcome.flags
    got = await gm.ok("Email/get", {"ids": [email_id], "properties": ["keywords"]})
    assert got["list"][0]["keywords"] == {"$seen": True}


async def test_a_label_added_to_a_message_trashed_meanwhile_is_not_claimed(
    gm: Jmap,  # noqa: F811
    gmail_user: GmailUser,  # noqa: F811
    seeded: dict[str, Message],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """EML-SET / CORE-SET-02: another client trashes the message just before the label
    STORE.  The retry finds it in the Trash, where Gmail shows no other label, so nothing
    is stored; the answer says the Email is in the Trash alone (RFC 8620 §5.3: a property
    the server set otherwise than asked) instead of a bare ``null`` that claims the label."""
    account = gmail_user.account
    welcome = seeded["welcome"]
    email_id = f"M{welcome.msgid}"
    all_mail, trash = account.folder("[Gmail]/All Mail"), account.folder("[Gmail]/Trash")
    assert all_mail is not None and trash is not None
    boxes = await mailboxes(gm)
    original = GmailMailbox.store_labels
    calls: list[Any] = []

    async def racing_store(self: GmailMailbox, *args: Any, **kwargs: Any) -> Any:
        if not calls:
            account.move(welcome, all_mail, trash)  # another client trashes it
        calls.append(args)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(GmailMailbox, "store_labels", racing_store)
    patch = {f"mailboxIds/{boxes['Work']['id']}": True}
    result = await gm.ok("Email/set", {"update": {email_id: patch}})
    trash_id = boxes["Trash"]["id"]
    assert result["updated"] == {email_id: {"mailboxIds": {trash_id: True}}}, result
    assert welcome.place == "trash"
    got = await gm.ok("Email/get", {"ids": [email_id], "properties": ["mailboxIds"]})
    assert got["list"][0]["mailboxIds"] == {trash_id: True}
