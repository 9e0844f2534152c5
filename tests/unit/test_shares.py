"""Shares of other users' folders, pure (``imapjmap.upstream.shares``): which listed mailbox
belongs to which account, which shares a listing shows, their ids."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from imapjmap.config import Config
from imapjmap.http.auth import Authenticated
from imapjmap.http.shares import ShareAccounts
from imapjmap.imap.models import ListEntry
from imapjmap.imap.pool import ImapPools
from imapjmap.jmap.errors import SetErrorType
from imapjmap.jmap.wire import is_id
from imapjmap.methods.context import Account
from imapjmap.methods.email import set as email_set
from imapjmap.services import Services
from imapjmap.store.db import Store
from imapjmap.sync import mailboxes as mbx
from imapjmap.upstream import imap_refresh
from imapjmap.upstream.imap import ImapUpstream
from imapjmap.upstream.shares import Namespaces, Share, find_shares, is_personal, share_account_id

DOVECOT = Namespaces((("", "/"),), (("shared/", "/"),), ())
CYRUS = Namespaces((("", "/"),), (("Other Users/", "/"),), (("Shared Folders/", "/"),))
COURIER = Namespaces((("INBOX.", "."),), (), ())


def entry(name: str, *attributes: str) -> ListEntry:
    return ListEntry(name, "/", frozenset(attributes))


@pytest.mark.parametrize(
    ("namespaces", "name", "personal"),
    [
        (DOVECOT, "INBOX", True),
        (DOVECOT, "Projects/2026", True),
        (DOVECOT, "shared", False),  # the namespace's own \Noselect parent
        (DOVECOT, "shared/alice", False),
        (DOVECOT, "shared/alice/Projects", False),
        (DOVECOT, "sharedthings", True),
        (CYRUS, "Other Users/alice/Projects", False),
        (CYRUS, "Shared Folders/news", False),
        (CYRUS, "Other", True),
        (COURIER, "INBOX.Sent", True),
        (Namespaces(), "shared/alice/Projects", True),  # no NAMESPACE: all is personal
    ],
)
def test_what_belongs_to_the_personal_account(
    namespaces: Namespaces, name: str, personal: bool
) -> None:
    assert is_personal(name, namespaces) is personal


def test_each_owner_is_one_share_read_only_unless_a_folder_lets_the_login_write() -> None:
    listed = [
        entry("shared", "\\Noselect"),
        entry("shared/alice", "\\Noselect"),
        entry("shared/alice/Projects"),
        entry("shared/alice/Projects/Old"),
        entry("shared/carol/Notes"),
        entry("shared/dave", "\\Noselect"),  # nothing selectable: no share
        entry("INBOX"),
    ]
    rights = {
        "shared/alice/Projects": "lr",
        "shared/alice/Projects/Old": "lrswi",
        "shared/carol/Notes": "lr",
    }
    assert find_shares(DOVECOT, listed, rights) == [
        Share("shared/alice/", "/", "other", "alice", read_only=False),
        Share("shared/carol/", "/", "other", "carol", read_only=True),
    ]
    # unknown rights (a server without ACL) are not taken for read-only
    assert not find_shares(DOVECOT, listed, {})[1].read_only


def test_the_shared_namespace_is_one_share() -> None:
    listed = [entry("Shared Folders/news"), entry("Shared Folders/news/tech")]
    (share,) = find_shares(CYRUS, listed, {n.name: "lr" for n in listed})
    assert share == Share("Shared Folders/", "/", "shared", None, read_only=True)
    assert share.name == "Shared Folders"


def test_a_shares_account_id_is_stable_valid_and_the_logins_own() -> None:
    one = share_account_id("Abob", "shared/alice/")
    assert one == share_account_id("Abob", "shared/alice/") and is_id(one)
    assert one != share_account_id("Adave", "shared/alice/")
    assert one != share_account_id("Abob", "shared/carol/")


def test_a_shares_top_level_mailboxes_are_named_without_the_prefix() -> None:
    listed = [
        mbx.Listed(entry("shared/alice/Projects"), None),
        mbx.Listed(entry("shared/alice/Projects/Old"), None),
    ]
    plan = mbx.plan(listed, [], delimiter="/", account_id="As", prefix="shared/alice/")
    by_name = {row.imap_name: row for row in plan.inserts}
    top, child = by_name["shared/alice/Projects"], by_name["shared/alice/Projects/Old"]
    assert (top.name, top.parent_id) == ("Projects", None)
    assert (child.name, child.parent_id) == ("Old", top.id)


READ_ONLY = {
    "mayReadItems": True,
    "mayAddItems": False,
    "mayRemoveItems": False,
    "maySetSeen": False,
    "maySetKeywords": False,
}
SEEN_ONLY = {**READ_ONLY, "maySetSeen": True}
ALL = dict.fromkeys(READ_ONLY, True)


@pytest.mark.parametrize(
    ("copies", "change", "refused"),
    [
        (["ro"], {"keywords": ["$flagged"]}, "keywords may not be changed here"),
        (["seen"], {"keywords": ["$seen"]}, None),
        (["seen"], {"keywords": ["$seen", "$flagged"]}, "maySetKeywords"),
        (["rw", "ro"], {"keywords": ["$seen"]}, "maySetSeen"),  # every copy is stored
        (["rw"], {"joins": ["ro"]}, "does not allow adding"),
        (["ro"], {"joins": ["rw"]}, None),  # a copy out of a read-only mailbox
        (["ro", "rw"], {"leaves": ["ro"]}, "does not allow removing"),
        (["rw"], {"leaves": ["rw"], "joins": ["unknown"]}, None),  # unknown rights allow
    ],
)
def test_writes_the_rights_refuse_mbx_03(
    copies: list[str], change: dict[str, list[str]], refused: str | None
) -> None:
    rights = {"ro": READ_ONLY, "seen": SEEN_ONLY, "rw": ALL}
    error = email_set.refusal(rights, copies, **change)
    if refused is None:
        assert error is None
    else:
        assert error is not None and error.type is SetErrorType.FORBIDDEN
        assert refused in (error.description or "")


@dataclasses.dataclass
class _Pool:
    share_prefixes: frozenset[str] | None = None


async def test_shares_are_asked_again_when_the_listing_changes_not_when_it_differs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``http.shares`` Rule 1: a server whose ``LIST "*"`` shows no foreign folder (their
    listing always differs from the shares found) is not asked on every request; a listing
    that changed since the last asking is."""
    asked: list[int] = []
    found = [Share("shared/alice/", "/", "other", "alice", read_only=True)]

    async def shares(self: Any) -> list[Share]:
        asked.append(1)
        return found

    monkeypatch.setattr(ImapUpstream, "shares", shares)
    store = await Store.open(":memory:")
    try:
        registry = ShareAccounts(Services(Config(), store, ImapPools(Config().imap)))
        pool = _Pool(frozenset())  # the login's own listing shows no share
        who = Authenticated(Account("Abob", "bob", "e1"), pool, None)  # type: ignore[arg-type]
        (one,) = await registry.discover(who)
        assert one.account.account_id == share_account_id("Abob", "shared/alice/")
        for _ in range(3):
            assert await registry.of(who) == (one,)
        assert len(asked) == 1
        pool.share_prefixes = frozenset({"shared/alice/", "shared/carol/"})  # it changed
        await registry.of(who)
        await registry.of(who)
        assert len(asked) == 2
    finally:
        await store.aclose()


async def test_a_share_found_or_lost_by_another_instance_is_asked_again_when_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``http.shares`` Rule 5: two instances on one cache, each with its own registry.  A
    request naming a share the other instance found (its row in the cache, unknown here),
    or one it lost (known here, its row gone), has the server asked again; an id the cache
    does not hold, or a request naming only the login's own account, does not."""
    asked: list[int] = []
    found = [Share("shared/alice/", "/", "other", "alice", read_only=True)]

    async def shares(self: Any) -> list[Share]:
        asked.append(1)
        return list(found)

    monkeypatch.setattr(ImapUpstream, "shares", shares)
    store = await Store.open(":memory:")
    try:
        here, there = (
            ShareAccounts(Services(Config(), store, ImapPools(Config().imap))) for _ in range(2)
        )
        who = Authenticated(Account("Abob", "bob", "e1"), _Pool(frozenset()), None)  # type: ignore[arg-type]
        share_id = share_account_id("Abob", "shared/alice/")
        found.clear()
        assert await here.of(who) == ()  # this instance asked before alice shared
        found.append(Share("shared/alice/", "/", "other", "alice", read_only=True))
        (one,) = await there.discover(who)  # the session fetched on the other instance
        assert len(asked) == 2
        assert await here.of(who, {"Abob"}) == ()
        assert await here.of(who, {"Anobody"}) == ()
        assert len(asked) == 2
        assert await here.of(who, {"Abob", share_id}) == (one,)
        assert len(asked) == 3
        assert await here.of(who, {share_id}) == (one,)  # known and cached: not again
        assert len(asked) == 3
        found.clear()
        assert await there.discover(who) == ()  # the other instance saw it taken back
        assert await here.of(who, {share_id}) == ()
        assert len(asked) == 5
    finally:
        await store.aclose()


def test_a_share_listing_names_each_mailbox_once() -> None:
    """Dovecot 2.3 may list a shared mailbox twice, once ``\\Noselect``: the mailbox is the
    selectable one, whichever comes first."""
    listed = [
        entry("shared/alice/Projects", "\\Noselect"),
        entry("shared/alice/Projects"),
        entry("shared/alice/Old", "\\Noselect"),
        entry("shared/alice/Notes"),
        entry("shared/alice/Notes", "\\Noselect"),
    ]
    assert imap_refresh._unique(listed) == [listed[1], listed[2], listed[3]]
