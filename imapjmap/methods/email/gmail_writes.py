"""Email/set updates and destroys in Gmail mode (:mod:`imapjmap.sync.gmail`).

Theory of operation
-------------------
In Gmail mode an Email's copies upstream are its All Mail message (or a Trash or Spam
one); its other mailboxes are labels.  So, per Google's "IMAP Extensions" document:

* keywords: ``UID STORE +FLAGS/-FLAGS`` on the real copy, as for any server (``$flagged``
  is ``\\Flagged``, which Gmail keeps equal to the ``\\Starred`` label);
* labels added or removed: ``UID STORE uids +X-GM-LABELS (...)`` / ``-X-GM-LABELS (...)`` on
  All Mail, grouped, so labelling 500 Emails is one command per label change; All Mail
  itself cannot be left (a message leaves it only for the Trash or Spam): removing it
  from ``mailboxIds`` alone changes nothing;
* Trash (or Spam) added: ``UID MOVE`` from All Mail to it; Trash removed from a trashed
  Email: ``UID MOVE`` back to its first label's folder (Gmail restores it with that
  label), further labels by ``UID COPY`` there, or to All Mail when it has no label;
* destroy: Gmail deletes a message for ever only when it is expunged from the Trash (an
  expunge in All Mail moves it to the Trash), so an All Mail copy is MOVEd to the Trash,
  then its new UID there (``COPYUID``, else found by ``X-GM-MSGID``) is marked
  ``\\Deleted`` and ``UID EXPUNGE``d; a Trash or Spam copy is expunged where it is.

Every Email updated is noted in the account's grace (:class:`imapjmap.sync.gmail.Grace`)
before the writes, so the refresh that follows does not mistake Gmail's lag for a destroy.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from imapjmap.imap import commands
from imapjmap.imap.commands import Command, sequence_set
from imapjmap.imap.parse import parse_uid_set
from imapjmap.imap.session import ImapSession
from imapjmap.methods.context import MethodContext
from imapjmap.store import emails as em
from imapjmap.store import queries as q
from imapjmap.sync.gmail import Labels
from imapjmap.upstream import imap as writes

Work = Callable[[Any], Awaitable[Collection[int]]]


class Step(Protocol):
    """Runs ``work`` on a session with the mailbox selected; failures are per Email.

    ``owners`` maps the UIDs the work writes to their Emails; ``work`` returns the UIDs the
    server proved written (docs/design.md, "Writes"), the others' Emails are unproven.
    """

    def __call__(
        self, mailbox_id: str, owners: Mapping[int, str], work: Work
    ) -> Awaitable[None]: ...


Change = tuple[dict[str, bool], set[str]]  # keywords, mailbox ids after the patch


@dataclass(frozen=True, slots=True)
class _Restore:
    email_id: str
    source: str  # Trash or Spam mailbox id
    uid: int
    target: str  # the first label's mailbox, or All Mail
    more: tuple[str, ...]  # further label folders (IMAP names) to COPY into


@dataclass(slots=True)
class _Plan:
    flags: dict[tuple[str, frozenset[str], frozenset[str]], list[int]] = field(
        default_factory=lambda: defaultdict(list)
    )
    labels: dict[tuple[str, frozenset[str]], list[int]] = field(
        default_factory=lambda: defaultdict(list)
    )  # (op, labels) -> All Mail uids
    moves: dict[tuple[str, str], list[int]] = field(default_factory=lambda: defaultdict(list))
    restores: list[_Restore] = field(default_factory=list)
    trash: list[int] = field(default_factory=list)  # All Mail uids to destroy via the Trash
    removals: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    owners: dict[tuple[str, int], str] = field(default_factory=dict)

    def owned(self, mailbox_id: str, uids: Sequence[int]) -> dict[int, str]:
        return {u: self.owners.get((mailbox_id, u), "") for u in uids}


def _home(locations: Sequence[em.Location], labels: Labels) -> em.Location | None:
    """The real copy of an Email: All Mail first, then Trash, then Spam."""
    real = {loc.mailbox_id: loc for loc in locations if loc.uid > 0 and not loc.deleted}
    for row in (labels.all_mail, labels.trash, labels.spam):
        if row is not None and row.id in real:
            return real[row.id]
    return None


def _plan_update(
    plan: _Plan, row: em.EmailRow, home: em.Location, change: Change, labels: Labels
) -> None:
    keywords, mailboxes = change
    add = frozenset(em.flags_from_keywords(set(keywords) - set(row.keywords)))
    remove = frozenset(em.flags_from_keywords(set(row.keywords) - set(keywords)))
    plan.owners[(home.mailbox_id, home.uid)] = row.id
    if add or remove:
        plan.flags[(home.mailbox_id, add, remove)].append(home.uid)
    trash, spam, all_mail = labels.trash, labels.spam, labels.all_mail
    special = {r.id for r in (trash, spam) if r is not None}
    wanted_special = [m for m in (trash, spam) if m is not None and m.id in mailboxes]
    if all_mail is not None and home.mailbox_id == all_mail.id:
        if wanted_special:
            plan.moves[(home.mailbox_id, wanted_special[0].id)].append(home.uid)
            return
        old = {labels.label(m) for m in row.mailbox_ids} - {None}
        new = {labels.label(m) for m in mailboxes} - {None}
        for op, names in (("+", new - old), ("-", old - new)):
            if names:
                plan.labels[(op, frozenset(str(n) for n in names))].append(home.uid)
        return
    if home.mailbox_id in mailboxes:
        return  # still in the Trash (or Spam): its labels are not shown, nothing to do
    if wanted_special:
        plan.moves[(home.mailbox_id, wanted_special[0].id)].append(home.uid)
        return
    targets = sorted(
        (r for r in labels.rows if r.id in mailboxes and r.id not in special),
        key=lambda r: (r.role != "inbox", r.role == "all", r.imap_name),
    )
    if not targets:
        return
    first, more = targets[0], [r.imap_name for r in targets[1:] if r.role != "all"]
    plan.restores.append(_Restore(row.id, home.mailbox_id, home.uid, first.id, tuple(more)))


def _plan_destroy(
    plan: _Plan, email_id: str, locations: Sequence[em.Location], labels: Labels
) -> None:
    for loc in locations:
        if loc.uid < 0 or loc.deleted:
            continue
        plan.owners[(loc.mailbox_id, loc.uid)] = email_id
        if labels.all_mail is not None and loc.mailbox_id == labels.all_mail.id:
            plan.trash.append(loc.uid)
        else:
            plan.removals[loc.mailbox_id].append(loc.uid)


def _label_list(names: Iterable[str]) -> str:
    """``(\\Inbox "My label")``: system labels as atoms, others as mailbox names."""
    return (
        "("
        + " ".join(n if n.startswith("\\") else commands.mailbox(n) for n in sorted(names))
        + ")"
    )


async def _store_labels(
    session: ImapSession, uids: list[int], op: str, names: frozenset[str]
) -> Collection[int]:
    """``UID STORE +X-GM-LABELS``/``-X-GM-LABELS``; the UIDs the reply shows labelled as
    wanted, else (no FETCH: nothing changed) those still in the folder."""
    text = f"UID STORE {sequence_set(uids)} {op}X-GM-LABELS {_label_list(names)}"
    reply = await session.execute(Command((text,)), what="UID STORE")
    wanted = {n.lower() for n in names}
    done = set()
    for fetch in reply.fetches:
        if fetch.uid in uids and fetch.x_gm_labels is not None:
            have = {label.lower() for label in fetch.x_gm_labels}
            if (wanted <= have) if op == "+" else not (wanted & have):
                done.add(fetch.uid)
    return done | set(await writes.present(session, [u for u in uids if u not in done]))


async def _store_flags(
    session: ImapSession, uids: list[int], add: frozenset[str], remove: frozenset[str]
) -> Collection[int]:
    done = set(uids)
    for op, flags in (("+", add), ("-", remove)):
        if flags:
            done &= (await writes.store_flags(session, uids, op, flags)).done
    return done


async def _move(session: ImapSession, uids: list[int], target: str) -> dict[int, int]:
    """``UID MOVE``; the new UIDs by old UID (COPYUID), as far as the server says."""
    reply = await session.execute(
        Command((f"UID MOVE {sequence_set(uids)} {commands.mailbox(target)}",)), what="UID MOVE"
    )
    code = reply.code("COPYUID")
    parts = code.args.split() if code is not None and code.args else []
    if len(parts) != 3:
        return {}
    return dict(zip(parse_uid_set(parts[1]), parse_uid_set(parts[2]), strict=False))


async def _move_only(session: ImapSession, uids: list[int], target: str) -> Collection[int]:
    return set(await _move(session, uids, target))


async def _find_by_msgid(session: ImapSession, email_ids: Iterable[str]) -> dict[int, str]:
    """UIDs in the selected folder of Emails whose ids are ``M`` + X-GM-MSGID, with them."""
    await session.noop()  # let the server show what just arrived
    found: dict[int, str] = {}
    for email_id in email_ids:
        if email_id[:1] == "M" and email_id[1:].isdigit():
            reply = await session.execute(
                Command((f"UID SEARCH X-GM-MSGID {email_id[1:]}",)), what="UID SEARCH"
            )
            found.update((u, email_id) for result in reply.searches for u in result.ids)
    return found


class _Writer:
    def __init__(self, step: Step, names: dict[str, str], labels: Labels) -> None:
        self.step = step
        self.names = names
        self.labels = labels

    async def run(self, plan: _Plan) -> None:
        for (mailbox_id, add, remove), uids in plan.flags.items():
            work = functools.partial(_store_flags, uids=uids, add=add, remove=remove)
            await self.step(mailbox_id, plan.owned(mailbox_id, uids), work)
        all_mail = self.labels.all_mail
        for (op, names), uids in plan.labels.items():
            assert all_mail is not None
            work = functools.partial(_store_labels, uids=uids, op=op, names=names)
            await self.step(all_mail.id, plan.owned(all_mail.id, uids), work)
        for (source, target), uids in plan.moves.items():
            work = functools.partial(_move_only, uids=uids, target=self.names[target])
            await self.step(source, plan.owned(source, uids), work)
        for restore in plan.restores:
            await self.step(
                restore.source,
                {restore.uid: restore.email_id},
                functools.partial(self._restore, r=restore),
            )
        if plan.trash and all_mail is not None:
            await self._destroy_via_trash(plan, all_mail.id)
        for mailbox_id, uids in plan.removals.items():
            await self.step(
                mailbox_id, plan.owned(mailbox_id, uids), functools.partial(_remove, uids=uids)
            )

    async def _restore(self, session: ImapSession, r: _Restore) -> Collection[int]:
        moved = await _move(session, [r.uid], self.names[r.target])
        new = moved.get(r.uid)
        if not r.more or new is None:
            return set(moved)
        # COPY into a label's folder adds the label (from the target, where it is now)
        await session.select(self.names[r.target])
        for name in r.more:
            if new not in (await writes.copy(session, [new], name)).done:
                return set()
        return {r.uid}

    async def _destroy_via_trash(self, plan: _Plan, all_mail: str) -> None:
        trash = self.labels.trash
        owners = plan.owned(all_mail, plan.trash)
        if trash is None:
            return  # no Trash listed: an expunge in All Mail is all Gmail offers
        moved: dict[int, int] = {}

        async def to_trash(session: ImapSession) -> Collection[int]:
            moved.update(await _move(session, plan.trash, trash.imap_name))
            return set(moved)

        await self.step(all_mail, owners, to_trash)
        by_new = {new: owners[old] for old, new in moved.items()}

        async def expunge(session: ImapSession) -> Collection[int]:
            if not by_new:  # no COPYUID: find the Trash copies by X-GM-MSGID
                by_new.update(await _find_by_msgid(session, owners.values()))
            done = (await writes.remove(session, sorted(by_new))).done
            return {old for old, email in owners.items() if email in {by_new[u] for u in done}}

        # the Emails answer for their All Mail UIDs: proven only when their Trash copy
        # is proven gone
        await self.step(trash.id, owners, expunge)


async def _remove(session: ImapSession, uids: list[int]) -> Collection[int]:
    return (await writes.remove(session, uids)).done


async def run(
    ctx: MethodContext,
    step: Step,
    rows: dict[str, em.EmailRow],
    locations: dict[str, list[em.Location]],
    names: dict[str, str],
    changes: dict[str, Change],
    doomed: Sequence[str],
) -> None:
    """Plan and run the Gmail writes of one Email/set (module docstring)."""
    labels = Labels(await ctx.read(lambda tx: q.live_mailboxes(tx, ctx.account_id)))
    plan = _Plan()
    for email_id, change in changes.items():
        home = _home(locations[email_id], labels)
        if home is not None:
            _plan_update(plan, rows[email_id], home, change, labels)
    for email_id in doomed:
        _plan_destroy(plan, email_id, locations[email_id], labels)
    ctx.services.sync_for(ctx.account_id).note_writes(changes, doomed)

    async def on_session(mailbox_id: str, owners: Mapping[int, str], work: Work) -> None:
        """The Gmail writes still speak IMAP: each runs on the open mailbox's session."""
        await step(mailbox_id, owners, lambda box: work(box.session))

    await _Writer(on_session, names, labels).run(plan)
