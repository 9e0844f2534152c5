"""Gmail bridge mode (X-GM-EXT-1): Gmail's labels are the JMAP mailboxes.

Theory of operation
-------------------
Gmail keeps every message once and shows it in one IMAP folder per label (Google's "IMAP
Extensions" document).  Syncing every folder would fetch each message once per label, so
in Gmail mode (``imap.gmail``; the profile's ``labels``, :mod:`imapjmap.upstream.profiles`):

* LIST still names every label and each becomes a Mailbox (its id minted once and kept by
  name: Gmail has no mailbox ids), but only ``[Gmail]/All Mail`` (found by its ``\\All``
  attribute, whatever its localised name), the Trash (``\\Trash``) and Spam (``\\Junk``)
  are STATUSed, SELECTed and synced;
* the All Mail FETCHes carry ``X-GM-LABELS``; each label becomes a *label location* of the
  Email in that label's mailbox (:mod:`imapjmap.store.labels`, ``uid < 0``), written in the
  same transaction as its batch (an :class:`~imapjmap.sync.emails.ApplyHook`).  An Email's
  ``mailboxIds`` are therefore All Mail (or the Trash, or Spam) plus its labels.
  ``\\Inbox`` is INBOX; ``\\Sent``, ``\\Draft``, ``\\Important`` and ``\\Starred`` are the
  folders with those special uses (when Gmail lists them); other labels are the folder of
  that name;
* ``\\Starred`` is also the ``$flagged`` keyword (Gmail keeps it equal to ``\\Flagged``; the
  label locations of a starred message carry ``\\Flagged``);
* Email ids are ``M`` + X-GM-MSGID and Thread ids ``T`` + X-GM-THRID (:mod:`.records`), so
  a message is ONE Email however many labels it has, and keeps its id in the Trash.

Grace (eventual consistency): right after our own writes, Gmail's folders may briefly not
show a message (a view not yet updated, a message on its way to the Trash).  For
:data:`GRACE_SECONDS` after we wrote an Email, a copy that vanished from a synced folder
while the Email has no other copy is *held*: its location stays, and the folder is synced
again once the grace ends, even if nothing moved.  A held copy is let go at once when the
message shows up in another synced folder.  So our own writes never show as a destroy
followed by a create.  Where other instances share the cache, a write's grace is also
written to it (:mod:`imapjmap.store.write_grace`) before the write goes upstream, and a
refresh that finds a copy gone reads it there: the copy is held by whichever instance's
refresh comes first.

Rules
1. Label locations come only from the All Mail copy: a message in the Trash or Spam is in
   no label, as in Gmail's own views.
2. This module only reads upstream (LIST, FETCH); the searches and the label writes are
   in :mod:`imapjmap.upstream.gmail`, planned by :mod:`imapjmap.methods.email.label_writes`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final

from imapjmap.imap.models import ListEntry
from imapjmap.store import emails as em
from imapjmap.store import labels as stored
from imapjmap.store import queries as q
from imapjmap.store import write_grace as shared_grace
from imapjmap.store.db import Tx
from imapjmap.sync import records
from imapjmap.sync.emails import Delta
from imapjmap.upstream.gmail import HOLDING_ROLES

GRACE_SECONDS: Final = 30.0
SYNCED_ROLES: Final = frozenset(HOLDING_ROLES)
STARRED: Final = "\\Starred"
_SYNCED_ATTRIBUTES: Final = ("\\All", "\\Trash", "\\Junk")
_SPECIAL_USES: Final = ("All", "Archive", "Drafts", "Flagged", "Important", "Junk", "Sent", "Trash")
# JMAP role of a special-use folder -> the X-GM-LABELS value of its messages
_SYSTEM_LABELS: Final = {
    "inbox": "\\Inbox",
    "sent": "\\Sent",
    "drafts": "\\Draft",
    "important": "\\Important",
    "flagged": STARRED,
}


# -- which folders, which labels -------------------------------------------------------------


def is_synced_entry(entry: ListEntry) -> bool:
    """All Mail, Trash or Spam, by special use (never by their localised names)."""
    return any(entry.has(attribute) for attribute in _SYNCED_ATTRIBUTES)


def system_folders(entries: Iterable[ListEntry]) -> set[str]:
    """The folders Gmail will not rename, delete or create below: those with a special use
    (All Mail, Sent, Trash...) and their \\Noselect parent (``[Gmail]``, localised)."""
    special = {e.name for e in entries if any(e.has("\\" + r) for r in _SPECIAL_USES)}
    parents = {
        e.name
        for e in entries
        if e.has("\\Noselect")
        and e.delimiter
        and any(name.startswith(e.name + e.delimiter) for name in special)
    }
    return special | parents


def is_synced(row: q.MailboxRow) -> bool:
    return row.role in SYNCED_ROLES


def label_of(row: q.MailboxRow) -> str | None:
    """The X-GM-LABELS value of the messages shown in this mailbox; None for All Mail,
    Trash, Spam and folders that cannot hold messages (``[Gmail]``)."""
    if row.role in SYNCED_ROLES:
        return None
    if row.role in _SYSTEM_LABELS:
        return _SYSTEM_LABELS[row.role]
    if not row.my_rights.get("mayReadItems", False):
        return None
    return row.imap_name


def _key(label: str) -> str:
    if label.upper() == "INBOX":
        return "\\inbox"
    return label.casefold() if label.startswith("\\") else label


class Labels:
    """Labels ↔ mailbox ids for one account's mailboxes."""

    def __init__(self, rows: Iterable[q.MailboxRow]) -> None:
        self.rows = list(rows)
        self._exact: dict[str, str] = {}
        self._folded: dict[str, str] = {}
        for row in self.rows:
            label = label_of(row)
            if label is not None:
                self._exact[_key(label)] = row.id
                self._folded.setdefault(label.casefold(), row.id)
        self.all_mail = next((r for r in self.rows if r.role == "all"), None)
        self.trash = next((r for r in self.rows if r.role == "trash"), None)
        self.spam = next((r for r in self.rows if r.role == "junk"), None)

    def mailbox_ids(self, labels: Iterable[str]) -> set[str]:
        """The mailboxes of a message's X-GM-LABELS (labels without a folder are skipped)."""
        out: set[str] = set()
        for label in labels:
            found = self._exact.get(_key(label)) or self._folded.get(label.casefold())
            if found is not None:
                out.add(found)
        return out

    def label(self, mailbox_id: str) -> str | None:
        row = next((r for r in self.rows if r.id == mailbox_id), None)
        return None if row is None else label_of(row)


# -- grace -----------------------------------------------------------------------------------


class Grace:
    """Emails we wrote lately, and the copies held for them (module docstring).

    Shared by the event loop and the store's worker thread (the sync hook), hence the lock.
    """

    def __init__(
        self,
        seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.seconds = GRACE_SECONDS if seconds is None else seconds
        self._clock = clock
        self.wall = wall  # the Unix time of the graces other instances see
        self._lock = threading.Lock()
        self._written: dict[str, float] = {}  # email id -> end of its grace
        self._held: dict[tuple[str, int], tuple[str, float]] = {}  # location -> (email, until)

    def note(self, email_ids: Iterable[str]) -> None:
        until = self._clock() + self.seconds
        with self._lock:
            for email_id in email_ids:
                self._written[email_id] = until

    def forget(self, email_ids: Iterable[str]) -> None:
        """No grace for Emails we destroy: their copies must go at once."""
        doomed = set(email_ids)
        with self._lock:
            for email_id in doomed:
                self._written.pop(email_id, None)
            self._held = {w: h for w, h in self._held.items() if h[0] not in doomed}

    def active(self, shared: Mapping[str, float] | None = None) -> dict[str, float]:
        """Emails still in their grace, with its end; with the graces other instances
        wrote to the cache (``shared``, Email id -> end in Unix seconds) as well."""
        now = self._clock()
        with self._lock:
            self._written = {e: t for e, t in self._written.items() if t > now}
            out = dict(self._written)
        if shared:
            wall = self.wall()
            for email_id, ends in shared.items():
                until = now + (ends - wall)
                if until > now and until > out.get(email_id, now):
                    out[email_id] = until
        return out

    def hold(self, mailbox_id: str, uid: int, email_id: str, until: float) -> None:
        with self._lock:
            self._held[(mailbox_id, uid)] = (email_id, until)

    def held_for(self, email_id: str) -> list[tuple[str, int]]:
        with self._lock:
            return [where for where, (e, _) in self._held.items() if e == email_id]

    def release(self, mailbox_id: str, uid: int) -> None:
        with self._lock:
            self._held.pop((mailbox_id, uid), None)

    def take_due(self, mailbox_id: str) -> bool:
        """Whether a held copy in this mailbox must be checked again now (it is forgotten:
        the sync that follows holds it again only while its Email is still in grace)."""
        now = self._clock()
        with self._lock:
            due = [w for w, (_, until) in self._held.items() if w[0] == mailbox_id and until <= now]
            for where in due:
                del self._held[where]
        return bool(due)

    @property
    def holding(self) -> bool:
        with self._lock:
            return bool(self._held)


# -- the sync hook -----------------------------------------------------------------------------


class LabelHook:
    """The :class:`~imapjmap.sync.emails.ApplyHook` of one synced Gmail folder."""

    def __init__(self, grace: Grace, *, shared: bool = False) -> None:
        self.grace = grace
        self.shared = shared  # other instances write to the cache: their graces are there
        self.recount: set[str] = set()  # every mailbox changed so far (the fill's last batch)

    def __call__(
        self, tx: Tx, account_id: str, mailbox_id: str, delta: Delta
    ) -> tuple[set[str], set[str]]:
        labels = Labels(q.live_mailboxes(tx, account_id))
        touched: set[str] = set()
        self._hold(tx, account_id, mailbox_id, delta)
        self._release(tx, account_id, mailbox_id, delta, labels, touched)
        if labels.all_mail is not None and mailbox_id == labels.all_mail.id:
            self._labels(tx, account_id, mailbox_id, delta, labels, touched)
        return touched, set(self.recount)

    def _hold(self, tx: Tx, account_id: str, mailbox_id: str, delta: Delta) -> None:
        """Keep vanished copies of Emails in grace that have no other copy."""
        if not delta.gone:
            return
        elsewhere = shared_grace.active(tx, account_id, self.grace.wall()) if self.shared else {}
        active = self.grace.active(elsewhere)
        if not active:
            return
        known = em.locations_of_mailbox(tx, account_id, mailbox_id)
        for uid in sorted(delta.gone):
            loc = known.get(uid)
            if loc is None or loc.email_id not in active:
                continue
            others = em.locations_of_email(tx, account_id, loc.email_id)
            if any(o.uid > 0 and not o.deleted and o.mailbox_id != mailbox_id for o in others):
                continue
            delta.gone.discard(uid)
            self.grace.hold(mailbox_id, uid, loc.email_id, active[loc.email_id])

    def _release(
        self,
        tx: Tx,
        account_id: str,
        mailbox_id: str,
        delta: Delta,
        labels: Labels,
        touched: set[str],
    ) -> None:
        """A held copy goes as soon as its message shows up in this folder."""
        arrived = [records.email_id_for(r) for r in delta.new]
        arrived += [email_id for email_id, _flags, _modseq in delta.remap.values()]
        for email_id in arrived:
            for held_in, uid in self.grace.held_for(email_id):
                if held_in == mailbox_id:
                    continue
                em.remove_location(tx, account_id, held_in, uid)
                self.grace.release(held_in, uid)
                touched.add(email_id)
                self.recount.add(held_in)
                if labels.all_mail is not None and held_in == labels.all_mail.id:
                    _emails, boxes = stored.drop_labels(tx, account_id, uid)
                    self.recount |= boxes

    def _labels(
        self,
        tx: Tx,
        account_id: str,
        mailbox_id: str,
        delta: Delta,
        labels: Labels,
        touched: set[str],
    ) -> None:
        """Label locations of the All Mail batch (Rule 1)."""
        if delta.reset:
            self._dropped(stored.drop_all_labels(tx, account_id), touched)
        for uid in delta.gone:
            self._dropped(stored.drop_labels(tx, account_id, uid), touched)
        for record in delta.new:
            if record.uid is not None and record.x_gm_labels is not None:
                email_id = records.email_id_for(record)
                flags = tuple(record.flags or ())
                self._set(tx, account_id, record.uid, email_id, record.x_gm_labels, flags, labels)
                touched.add(email_id)
        for uid, value in delta.labels.items():
            remapped = delta.remap.get(uid)
            found = remapped[0] if remapped else stored.email_at(tx, account_id, mailbox_id, uid)
            if found is None:
                continue
            flags = delta.flags[uid][0] if uid in delta.flags else (remapped[1] if remapped else ())
            if self._set(tx, account_id, uid, found, value, flags, labels):
                touched.add(found)

    def _dropped(self, result: tuple[set[str], set[str]], touched: set[str]) -> None:
        touched |= result[0]
        self.recount |= result[1]

    def _set(
        self,
        tx: Tx,
        account_id: str,
        uid: int,
        email_id: str,
        value: Sequence[str],
        flags: Sequence[str],
        labels: Labels,
    ) -> bool:
        """Write one message's label locations; whether any changed."""
        starred = any(_key(label) == _key(STARRED) for label in value)
        deleted = any(f.lower() == "\\deleted" for f in flags)
        mailbox_ids = labels.mailbox_ids(value)
        marks = ("\\Flagged",) if starred else ()
        changed = stored.set_labels(tx, account_id, uid, email_id, mailbox_ids, marks, deleted)
        self.recount |= changed
        return bool(changed)
