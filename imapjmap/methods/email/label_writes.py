"""Email/set updates and destroys where labels are mailboxes (the profile's ``labels``).

Theory of operation
-------------------
There an Email's copies upstream are its *holding* copy (in All Mail, or the Trash, or
Spam) and its labels, each shown as one more mailbox (:mod:`imapjmap.sync.gmail`).  So:

* keywords: ``+FLAGS``/``-FLAGS`` on the holding copy, as for any server (``$flagged`` is
  ``\\Flagged``, which the server keeps equal to the ``\\Starred`` label);
* labels added or removed: one label store per (operation, labels) on All Mail, so
  labelling 500 Emails is one command per label change; All Mail itself cannot be left (a
  message leaves it only for the Trash or Spam): removing it from ``mailboxIds`` alone
  changes nothing;
* Trash (or Spam) added: a move from All Mail to it; Trash removed from a trashed Email: a
  move back to its first label's folder (which restores it with that label), its further
  labels by copies there, or to All Mail when it has no label;
* destroy: a message is deleted for ever only when it is expunged from the Trash (an
  expunge in All Mail moves it to the Trash), so an All Mail copy is moved to the Trash,
  then its new UID there (said by the move, else found by its Email id) is removed; a Trash
  or Spam copy is removed where it is.

:func:`plan` is pure: the cache's rows in, the writes out (:class:`Plan`).  Every Email
updated is noted in the account's grace before the writes, so the refresh that follows
does not mistake the server's lag for a destroy.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from imapjmap.methods.context import MethodContext
from imapjmap.store import emails as em
from imapjmap.store import queries as q
from imapjmap.sync.gmail import Labels, is_synced
from imapjmap.upstream.api import LabelMailbox

Work = Callable[[LabelMailbox], Awaitable[Collection[int]]]


class Step(Protocol):
    """Runs ``work`` on ``mailbox_id`` open for label writes; failures are per Email.

    ``owners`` maps the UIDs the work writes to their Emails; ``work`` returns the UIDs the
    server proved written, the others' Emails are unproven.
    """

    def __call__(
        self, mailbox_id: str, owners: Mapping[int, str], work: Work
    ) -> Awaitable[None]: ...


Change = tuple[dict[str, bool], set[str]]  # keywords, mailbox ids after the patch


@dataclass(frozen=True, slots=True)
class Restore:
    """A trashed Email taken back out: moved to ``target``, then copied to ``more``."""

    email_id: str
    source: str  # Trash or Spam mailbox id
    uid: int
    target: str  # the first label's mailbox, or All Mail
    more: tuple[str, ...]  # further label folders (upstream names)


@dataclass(slots=True)
class Plan:
    """The writes of one Email/set, grouped so that one command serves many Emails."""

    # (holding mailbox, flags added, flags removed) -> uids
    flags: dict[tuple[str, frozenset[str], frozenset[str]], list[int]] = field(
        default_factory=lambda: defaultdict(list)
    )
    # (op, labels) -> All Mail uids
    labels: dict[tuple[Literal["+", "-"], frozenset[str]], list[int]] = field(
        default_factory=lambda: defaultdict(list)
    )
    moves: dict[tuple[str, str], list[int]] = field(default_factory=lambda: defaultdict(list))
    restores: list[Restore] = field(default_factory=list)
    trash: list[int] = field(default_factory=list)  # All Mail uids to destroy via the Trash
    removals: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    owners: dict[tuple[str, int], str] = field(default_factory=dict)
    # Email id -> the Trash or Spam it ends in while other mailboxes were asked too: a
    # message there is in no other label, so Email/set says so in its ``updated`` entry
    shown: dict[str, str] = field(default_factory=dict)

    def owned(self, mailbox_id: str, uids: Sequence[int]) -> dict[int, str]:
        return {u: self.owners.get((mailbox_id, u), "") for u in uids}


def holding_copy(locations: Sequence[em.Location], labels: Labels) -> em.Location | None:
    """The holding copy of an Email: All Mail first, then Trash, then Spam."""
    real = {loc.mailbox_id: loc for loc in locations if loc.uid > 0 and not loc.deleted}
    for row in (labels.all_mail, labels.trash, labels.spam):
        if row is not None and row.id in real:
            return real[row.id]
    return None


def _plan_update(
    out: Plan, row: em.EmailRow, home: em.Location, change: Change, labels: Labels
) -> None:
    keywords, mailboxes = change
    add = frozenset(em.flags_from_keywords(set(keywords) - set(row.keywords)))
    remove = frozenset(em.flags_from_keywords(set(row.keywords) - set(keywords)))
    out.owners[(home.mailbox_id, home.uid)] = row.id
    if add or remove:
        out.flags[(home.mailbox_id, add, remove)].append(home.uid)
    trash, spam, all_mail = labels.trash, labels.spam, labels.all_mail
    special = {r.id for r in (trash, spam) if r is not None}
    wanted_special = [m for m in (trash, spam) if m is not None and m.id in mailboxes]
    if all_mail is not None and home.mailbox_id == all_mail.id:
        if wanted_special:
            out.moves[(home.mailbox_id, wanted_special[0].id)].append(home.uid)
            _only_in(out, row.id, wanted_special[0].id, mailboxes)
            return
        old = {label for m in row.mailbox_ids if (label := labels.label(m)) is not None}
        new = {label for m in mailboxes if (label := labels.label(m)) is not None}
        if new - old:
            out.labels[("+", frozenset(new - old))].append(home.uid)
        if old - new:
            out.labels[("-", frozenset(old - new))].append(home.uid)
        return
    if home.mailbox_id in mailboxes:
        # still in the Trash (or Spam): no label is shown there, so none is written
        _only_in(out, row.id, home.mailbox_id, mailboxes)
        return
    if wanted_special:
        out.moves[(home.mailbox_id, wanted_special[0].id)].append(home.uid)
        _only_in(out, row.id, wanted_special[0].id, mailboxes)
        return
    targets = sorted(
        (r for r in labels.rows if r.id in mailboxes and r.id not in special),
        key=lambda r: (r.role != "inbox", r.role == "all", r.imap_name),
    )
    if not targets:
        return
    first, more = targets[0], [r.imap_name for r in targets[1:] if r.role != "all"]
    out.restores.append(Restore(row.id, home.mailbox_id, home.uid, first.id, tuple(more)))


def _only_in(out: Plan, email_id: str, special: str, mailboxes: Collection[str]) -> None:
    """Note an Email that ends in ``special`` alone although ``mailboxes`` were asked."""
    if set(mailboxes) - {special}:
        out.shown[email_id] = special


def _plan_destroy(
    out: Plan, email_id: str, locations: Sequence[em.Location], labels: Labels
) -> None:
    for loc in locations:
        if loc.uid < 0 or loc.deleted:
            continue
        out.owners[(loc.mailbox_id, loc.uid)] = email_id
        if labels.all_mail is not None and loc.mailbox_id == labels.all_mail.id:
            out.trash.append(loc.uid)
        else:
            out.removals[loc.mailbox_id].append(loc.uid)


def plan(
    labels: Labels,
    rows: Mapping[str, em.EmailRow],
    locations: Mapping[str, Sequence[em.Location]],
    changes: Mapping[str, Change],
    doomed: Sequence[str],
) -> Plan:
    """The writes that give each Email of ``changes`` its keywords and mailboxes, and
    destroy those of ``doomed`` (module docstring).  An Email with no holding copy left
    is not written (its copies are gone: the caller's resync tells)."""
    out = Plan()
    for email_id, change in changes.items():
        home = holding_copy(locations[email_id], labels)
        if home is not None:
            _plan_update(out, rows[email_id], home, change, labels)
    for email_id in doomed:
        _plan_destroy(out, email_id, locations[email_id], labels)
    return out


class _Writer:
    def __init__(self, step: Step, names: Mapping[str, str], labels: Labels) -> None:
        self.step = step
        self.names = names
        self.labels = labels

    async def run(self, p: Plan) -> None:
        for (mailbox_id, add, remove), uids in p.flags.items():
            await self.step(mailbox_id, p.owned(mailbox_id, uids), _flags(uids, add, remove))
        all_mail = self.labels.all_mail
        for (op, names), uids in p.labels.items():
            assert all_mail is not None
            await self.step(all_mail.id, p.owned(all_mail.id, uids), _labels(uids, op, names))
        for (source, target), uids in p.moves.items():
            await self.step(source, p.owned(source, uids), _move(uids, self.names[target]))
        for r in p.restores:
            await self.step(r.source, {r.uid: r.email_id}, self._restore(r))
        if p.trash and all_mail is not None:
            await self._destroy_via_trash(p, all_mail.id)
        for mailbox_id, uids in p.removals.items():
            await self.step(mailbox_id, p.owned(mailbox_id, uids), _remove(uids))

    def _restore(self, r: Restore) -> Work:
        async def work(box: LabelMailbox) -> Collection[int]:
            done = await box.move_labelled(r.uid, self.names[r.target], r.more)
            return {r.uid} if done else set()

        return work

    async def _destroy_via_trash(self, p: Plan, all_mail: str) -> None:
        trash = self.labels.trash
        owners = p.owned(all_mail, p.trash)
        if trash is None:
            return  # no Trash listed: an expunge in All Mail is all the server offers
        moved: dict[int, int] = {}

        async def to_trash(box: LabelMailbox) -> Collection[int]:
            copied = await box.move(p.trash, trash.imap_name)
            moved.update(copied.new_uids or {})
            return copied.done

        await self.step(all_mail, owners, to_trash)
        by_new = {new: owners[old] for old, new in moved.items()}

        async def expunge(box: LabelMailbox) -> Collection[int]:
            if not by_new:  # the move did not say the new UIDs: find them by Email id
                by_new.update(await box.find(owners.values()))
            done = (await box.remove(sorted(by_new))).done
            return {old for old, email in owners.items() if email in {by_new[u] for u in done}}

        # the Emails answer for their All Mail UIDs: proven only when their Trash copy
        # is proven gone
        await self.step(trash.id, owners, expunge)


def _flags(uids: list[int], add: frozenset[str], remove: frozenset[str]) -> Work:
    async def work(box: LabelMailbox) -> Collection[int]:
        done = set(uids)
        for op, flags in (("+", add), ("-", remove)):
            if flags:
                done &= (await box.store_flags(uids, op, flags)).done
        return done

    return work


def _labels(uids: list[int], op: Literal["+", "-"], names: frozenset[str]) -> Work:
    async def work(box: LabelMailbox) -> Collection[int]:
        return await box.store_labels(uids, op, names)

    return work


def _move(uids: list[int], target: str) -> Work:
    async def work(box: LabelMailbox) -> Collection[int]:
        return (await box.move(uids, target)).done

    return work


def _remove(uids: list[int]) -> Work:
    async def work(box: LabelMailbox) -> Collection[int]:
        return (await box.remove(uids)).done

    return work


async def run(
    ctx: MethodContext,
    step: Step,
    rows: dict[str, em.EmailRow],
    locations: dict[str, list[em.Location]],
    names: dict[str, str],
    changes: dict[str, Change],
    doomed: Sequence[str],
) -> dict[str, str]:
    """Plan and run the label writes of one Email/set (module docstring); the Emails that
    end in the Trash or Spam alone although more was asked (:attr:`Plan.shown`)."""
    labels = Labels(await ctx.read(lambda tx: q.live_mailboxes(tx, ctx.account_id)))
    writes = plan(labels, rows, locations, changes, doomed)
    await ctx.services.sync_for(ctx.account_id).note_writes(changes, doomed)
    await _Writer(step, names, labels).run(writes)
    return writes.shown


async def holding_location(
    ctx: MethodContext, rows: Sequence[q.MailboxRow], mailbox: q.MailboxRow, uid: int
) -> tuple[str, int]:
    """Where the message an APPEND or a COPY put at ``uid`` in ``mailbox`` is synced: its
    (All Mail id, UID) for a label's folder; (mailbox, uid) itself for a holding folder, or
    when it cannot be found (the caller then reports the message as not found)."""
    holder = Labels(rows).all_mail
    if is_synced(mailbox) or holder is None:
        return mailbox.id, uid
    found = await ctx.upstream.holding_uid(mailbox.imap_name, uid, holder.imap_name)
    return (holder.id, found) if found is not None else (mailbox.id, uid)
