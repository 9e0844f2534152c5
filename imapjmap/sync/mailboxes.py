"""Mailbox reconciliation: an IMAP LIST snapshot against the cached Mailbox rows.

Theory of operation
-------------------
One LIST (with LIST-STATUS where offered) describes every mailbox upstream.  The pure
function :func:`plan` matches it against the cached rows and says which rows to create,
update or tombstone; :func:`apply` writes that plan in ONE transaction that takes the next
account sequence number once, only if something changed.

Matching a listed mailbox to a cached row (first rule that applies):
1. the same upstream source id (RFC 8474 MAILBOXID, Dovecot's mailbox X-GUID): the same
   mailbox, whatever its name now — this is how ids survive a rename by any client;
2. without source ids: the same IMAP name and the same UIDVALIDITY;
3. without source ids: a row whose name disappeared and a new name with the same
   UIDVALIDITY and message count — a rename seen from outside;
4. otherwise a new mailbox (a mailbox deleted and re-created under the same name gets a new
   UIDVALIDITY, so it is a new Mailbox, as it should be).
Rows that matched nothing are destroyed (tombstoned).
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from imapjmap.imap.models import ListEntry, MailboxStatus
from imapjmap.jmap.wire import is_id
from imapjmap.store import queries as q
from imapjmap.store.db import Tx

MAILBOX_TYPE: Final = "Mailbox"

# IANA "IMAP Mailbox Name Attributes" that are JMAP roles (RFC 8621 §2, MBX-02), in the
# order used to pick one when a mailbox carries several.
_ROLE_ATTRIBUTES: Final = (
    "all",
    "archive",
    "drafts",
    "flagged",
    "important",
    "junk",
    "sent",
    "trash",
)
_SORT_ORDER: Final = {"inbox": 1, "drafts": 2, "sent": 3, "archive": 4, "junk": 5, "trash": 6}
COUNT_PROPERTIES: Final = ("totalEmails", "unreadEmails", "totalThreads", "unreadThreads")
RIGHTS: Final = (
    "mayReadItems",
    "mayAddItems",
    "mayRemoveItems",
    "maySetSeen",
    "maySetKeywords",
    "mayCreateChild",
    "mayRename",
    "mayDelete",
    "maySubmit",
)


@dataclass(frozen=True, slots=True)
class Listed:
    """One mailbox as the upstream describes it now."""

    entry: ListEntry
    status: MailboxStatus | None
    source_id: str | None = None
    acl_rights: str | None = None  # MYRIGHTS letters where the server has ACL
    fixed: bool = False  # a system folder the server will not rename, delete or nest under

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def selectable(self) -> bool:
        return not (self.entry.has("\\Noselect") or self.entry.has("\\NonExistent"))


@dataclass(frozen=True, slots=True)
class Update:
    row: q.MailboxRow
    props: bool  # a property other than the counts changed (updatedProperties, MBX-05)
    counts: bool  # a count changed; neither: only the sync cursor moved (not a JMAP change)

    @property
    def visible(self) -> bool:
        return self.props or self.counts


@dataclass(slots=True)
class Plan:
    inserts: list[q.MailboxRow] = field(default_factory=list)
    updates: list[Update] = field(default_factory=list)
    destroys: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.inserts or self.updates or self.destroys)


def is_inbox(name: str) -> bool:
    return name.upper() == "INBOX"


def role_of(entry: ListEntry) -> str | None:
    """The JMAP role for a LIST entry: ``inbox`` or a SPECIAL-USE attribute (any case)."""
    if is_inbox(entry.name):
        return "inbox"
    for role in _ROLE_ATTRIBUTES:
        if entry.has("\\" + role):
            return role
    return None


def rights_of(listed: Listed) -> dict[str, bool]:
    """MailboxRights (MBX-03) from MYRIGHTS letters, or from what IMAP without ACL allows;
    a ``fixed`` folder offers no rename, delete or child whatever the letters say."""
    rights = _rights(listed)
    if listed.fixed:
        rights.update(mayRename=False, mayDelete=False, mayCreateChild=False)
    return rights


def _rights(listed: Listed) -> dict[str, bool]:
    if listed.acl_rights is not None:
        r = set(listed.acl_rights)
        read = "l" in r and "r" in r
        return {
            "mayReadItems": read,
            "mayAddItems": "i" in r,
            "mayRemoveItems": "t" in r and "e" in r,
            "maySetSeen": "s" in r,
            "maySetKeywords": "w" in r,
            "mayCreateChild": "k" in r,
            "mayRename": "x" in r and not is_inbox(listed.name),
            "mayDelete": "x" in r and not is_inbox(listed.name),
            "maySubmit": "p" in r,
        }
    items = listed.selectable
    fixed = not is_inbox(listed.name)
    may_child = not listed.entry.has("\\Noinferiors")
    return {
        "mayReadItems": items,
        "mayAddItems": items,
        "mayRemoveItems": items,
        "maySetSeen": items,
        "maySetKeywords": items,
        "mayCreateChild": may_child,
        "mayRename": fixed,
        "mayDelete": fixed,
        "maySubmit": False,
    }


def new_mailbox_id(source_id: str | None) -> str:
    """Ids come from the upstream where it has one (docs/design.md, "Ids"), else minted."""
    if source_id and is_id(source_id):
        return source_id
    return "M" + secrets.token_hex(12)


def plan(
    listed: Sequence[Listed],
    rows: Sequence[q.MailboxRow],
    *,
    delimiter: str | None,
    account_id: str,
    prefix: str = "",
) -> Plan:
    """Compare the upstream snapshot with the cached rows (pure).  ``prefix``: what every
    name of a share's account starts with (``shared/alice/``), left out of its top-level
    mailboxes' names."""
    matched = _match(listed, rows)
    ids = {lst.name: (matched[lst.name].id if lst.name in matched else None) for lst in listed}
    for lst in listed:
        if ids[lst.name] is None:
            ids[lst.name] = new_mailbox_id(lst.source_id)
    roles = _unique_roles(listed)
    result = Plan()
    for lst in listed:
        wanted = _row_for(lst, ids, roles, delimiter, account_id, prefix)
        old = matched.get(lst.name)
        if old is None:
            result.inserts.append(wanted)
            continue
        # counts come from the email cache (sync.emails), never from STATUS, once a row exists
        wanted = dataclasses.replace(
            wanted,
            total_emails=old.total_emails,
            unread_emails=old.unread_emails,
            total_threads=old.total_threads,
            unread_threads=old.unread_threads,
            sort_order=old.sort_order,
            created_seq=old.created_seq,
            updated_seq=old.updated_seq,
            props_seq=old.props_seq,
        )
        props = _props(old) != _props(wanted)
        counts = _counts(old) != _counts(wanted)
        if props or counts or _cursor(old) != _cursor(wanted):
            result.updates.append(Update(wanted, props, counts))
    kept = {row.id for row in matched.values()}
    result.destroys = [row.id for row in rows if row.id not in kept]
    return result


def _match(listed: Sequence[Listed], rows: Sequence[q.MailboxRow]) -> dict[str, q.MailboxRow]:
    by_source = {row.source_id: row for row in rows if row.source_id}
    by_name = {row.imap_name: row for row in rows}
    matched: dict[str, q.MailboxRow] = {}
    used: set[str] = set()
    unmatched: list[Listed] = []
    for lst in listed:
        row = by_source.get(lst.source_id) if lst.source_id else None
        if row is None and not (lst.source_id and by_source):
            candidate = by_name.get(lst.name)
            if candidate is not None and _same_validity(candidate, lst):
                row = candidate
        if row is not None and row.id not in used:
            matched[lst.name] = row
            used.add(row.id)
        else:
            unmatched.append(lst)
    listed_names = {lst.name for lst in listed}
    orphans = [
        r for r in rows if r.id not in used and r.imap_name not in listed_names and not r.source_id
    ]
    for lst in unmatched:
        status = lst.status
        for row in orphans:
            if (
                status is not None
                and row.id not in used
                and row.uidvalidity is not None
                and row.uidvalidity == status.uidvalidity
                and row.messages == status.messages
            ):
                matched[lst.name] = row
                used.add(row.id)
                break
    return matched


def _same_validity(row: q.MailboxRow, lst: Listed) -> bool:
    validity = lst.status.uidvalidity if lst.status else None
    return row.uidvalidity is None or validity is None or row.uidvalidity == validity


def _unique_roles(listed: Sequence[Listed]) -> dict[str, str]:
    """At most one mailbox per role (MBX-02): the first in name order keeps it."""
    owner: dict[str, str] = {}
    for lst in sorted(listed, key=lambda x: (not is_inbox(x.name), x.name)):
        role = role_of(lst.entry)
        if role is not None and role not in owner:
            owner[role] = lst.name
    return {name: role for role, name in owner.items()}


def _parent_name(name: str, delimiter: str | None, names: set[str]) -> str | None:
    if not delimiter:
        return None
    head = name
    while delimiter in head:
        head = head.rsplit(delimiter, 1)[0]
        if head in names:
            return head
        if is_inbox(head) and any(is_inbox(n) for n in names):
            return next(n for n in names if is_inbox(n))
    return None


def leaf_name(name: str, delimiter: str | None, parent: str | None, prefix: str = "") -> str:
    if is_inbox(name):
        return "Inbox"
    if parent is None or not delimiter:
        return name[len(prefix) :] if prefix and name.startswith(prefix) else name
    return name[len(parent) + len(delimiter) :]


def _row_for(
    lst: Listed,
    ids: Mapping[str, str | None],
    roles: Mapping[str, str],
    delimiter: str | None,
    account_id: str,
    prefix: str,
) -> q.MailboxRow:
    parent = _parent_name(lst.name, delimiter, set(ids))
    role = roles.get(lst.name)
    status = lst.status
    mailbox_id = ids[lst.name]
    assert mailbox_id is not None
    return q.MailboxRow(
        account_id=account_id,
        id=mailbox_id,
        imap_name=lst.name,
        name=leaf_name(lst.name, delimiter, parent, prefix),
        parent_id=ids[parent] if parent is not None else None,
        role=role,
        sort_order=_SORT_ORDER.get(role or "", 10),
        is_subscribed=lst.entry.has("\\Subscribed"),
        total_emails=0,
        unread_emails=0,
        total_threads=0,
        unread_threads=0,
        my_rights=rights_of(lst),
        source_id=lst.source_id,
        uidvalidity=status.uidvalidity if status else None,
        uidnext=status.uidnext if status else None,
        highestmodseq=status.highestmodseq if status else None,
        messages=status.messages if status else None,
        created_seq=0,
        updated_seq=0,
        props_seq=0,
        destroyed_seq=None,
    )


def _props(row: q.MailboxRow) -> tuple[object, ...]:
    return (
        row.imap_name,
        row.name,
        row.parent_id,
        row.role,
        row.sort_order,
        row.is_subscribed,
        tuple(sorted(row.my_rights.items())),
    )


def _counts(row: q.MailboxRow) -> tuple[int, ...]:
    return (row.total_emails, row.unread_emails, row.total_threads, row.unread_threads)


def _cursor(row: q.MailboxRow) -> tuple[int | None, ...]:
    return (row.uidvalidity, row.uidnext, row.highestmodseq, row.messages)


def apply(tx: Tx, account_id: str, result: Plan) -> int | None:
    """Write ``result`` in the caller's transaction; the new seq, or None if no JMAP change.

    A plan that only moves sync cursors (a flag change on a read message moves
    HIGHESTMODSEQ but no count) is written without taking a sequence number.
    """
    visible = bool(result.inserts or result.destroys) or any(u.visible for u in result.updates)
    if not visible:
        for update in result.updates:
            q.update_mailbox_cursor(tx, update.row)
        return None
    seq = q.next_seq(tx, account_id, [MAILBOX_TYPE])
    # tombstones first: a new mailbox may take the name of one just destroyed
    for mailbox_id in result.destroys:
        q.destroy_mailbox(tx, account_id, mailbox_id, seq)
    for update in result.updates:
        if update.visible:
            q.update_mailbox(tx, update.row, props_changed=update.props, seq=seq)
        else:
            q.update_mailbox_cursor(tx, update.row)
    for row in result.inserts:
        q.insert_mailbox(
            tx, dataclasses.replace(row, created_seq=seq, updated_seq=seq, props_seq=seq)
        )
    return seq


def tree_order(rows: Iterable[q.MailboxRow]) -> list[q.MailboxRow]:
    """Parents before children, siblings by (sortOrder, name) — used by sortAsTree."""
    children: dict[str | None, list[q.MailboxRow]] = {}
    for row in rows:
        children.setdefault(row.parent_id, []).append(row)
    out: list[q.MailboxRow] = []

    def walk(parent: str | None) -> None:
        for row in sorted(children.get(parent, []), key=lambda r: (r.sort_order, r.name)):
            out.append(row)
            walk(row.id)

    walk(None)
    return out
