"""Email/set (RFC 8621 §4.6): keywords and mailboxIds updates, destroy; create is in
:mod:`imapjmap.methods.email.create`.

Theory of operation
-------------------
Each update is turned into IMAP operations on the Email's copies (its ``locations``):

* keywords: only the keywords the patch changes, relative to what the client could see,
  are added or removed (``UID STORE +FLAGS``/``-FLAGS``), never a whole flag list, so a
  flag another client set meanwhile is never clobbered.  With CONDSTORE the STORE carries
  ``UNCHANGEDSINCE`` the copy's modseq; copies reported ``[MODIFIED]`` were changed by
  someone else since our last sync: the cache is refreshed and the same +/- is applied
  again, which touches nothing but the patched keywords;
* mailboxIds: one removed and one added mailbox is a ``UID MOVE``; otherwise the message is
  copied into each added mailbox and our own UIDs are removed from each removed one
  (``UID EXPUNGE``, see docs/design.md, "Writes", Rule 3);
* destroy removes our UIDs from every mailbox the Email is in.

Updates with the same change in the same mailbox are grouped into one command, so "mark
500 emails read" is one STORE per mailbox.  After the writes the account is refreshed, so
``newState`` and every id come from what the server now says.

An Email is reported updated or destroyed only when the server proved every write on it
(docs/design.md, "Writes", Rule 4).  The plan comes from the cache, and another client may have
moved or expunged the message since: its UID then takes nothing.  Such Emails are retried
once after a resync, with the update kept as a difference (keywords and mailboxes added
and removed, :class:`_Change`) applied to the copies the Email has now; an Email gone
entirely is ``notFound``, one still unproven is reported not written.  A copy is never
removed from a mailbox it leaves unless its copies into the mailboxes it joins were
proven, so a refused COPY cannot lose the message.

Where labels are mailboxes (the profile's ``labels``: Gmail mode) the same checks run, then
:mod:`imapjmap.methods.email.label_writes` turns the changes into label stores and moves
through the Trash.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Final, TypeVar

from imapjmap.errors import ImapCommandFailed, UpstreamUnavailable
from imapjmap.jmap import responses
from imapjmap.jmap.args import SetArgs
from imapjmap.jmap.dispatch import Call, UnknownCreationId, resolve_creation_id
from imapjmap.jmap.errors import (
    MethodError,
    MethodErrorType,
    SetError,
    SetErrorType,
    invalid_properties,
)
from imapjmap.jmap.patch import parse_patch
from imapjmap.jmap.wire import JsonObject
from imapjmap.methods.context import MethodContext
from imapjmap.methods.email import label_writes
from imapjmap.methods.email.label_writes import Work as LabelWork
from imapjmap.methods.imaperrors import set_error_from_imap
from imapjmap.store import emails as em
from imapjmap.store import queries as q
from imapjmap.store.db import Tx
from imapjmap.upstream.api import OpenMailbox

# RFC 8621 §4.1.1: 1-255 of %x21-%x7e except ( ) { ] % * " \
_KEYWORD: Final = re.compile(r"[\x21-\x7e]{1,255}")
_KEYWORD_BAD: Final = set('(){]%*"\\')


def valid_keyword(keyword: str) -> bool:
    return bool(_KEYWORD.fullmatch(keyword)) and not (set(keyword) & _KEYWORD_BAD)


@dataclass(frozen=True, slots=True)
class _Change:
    """One update as changes to what the client saw: keywords and mailboxes to add and to
    remove.  A retry on a resynced Email applies the same changes to what is there now, so
    whatever other clients did meanwhile to other keywords and mailboxes stays."""

    keywords_in: frozenset[str]
    keywords_out: frozenset[str]
    mailboxes_in: frozenset[str]
    mailboxes_out: frozenset[str]

    @classmethod
    def between(
        cls,
        row: em.EmailRow,
        keywords: dict[str, bool],
        mailboxes: set[str],
        named: Iterable[str] = (),
    ) -> _Change:
        """The change from ``row`` to ``keywords`` and ``mailboxes``.  The keywords the
        patch ``named`` are written even when the cache shows them so already: the cache
        may be behind the server, and a write is only reported done when it is proven."""
        old_keywords, old_mailboxes = set(row.keywords), set(row.mailbox_ids)
        named = set(named)
        return cls(
            frozenset((set(keywords) - old_keywords) | (named & set(keywords))),
            frozenset((old_keywords - set(keywords)) | (named - set(keywords))),
            frozenset(mailboxes - old_mailboxes),
            frozenset(old_mailboxes - mailboxes),
        )

    def keywords_on(self, row: em.EmailRow) -> dict[str, bool]:
        kept = {k: True for k in row.keywords if k not in self.keywords_out}
        return {**kept, **dict.fromkeys(self.keywords_in, True)}

    def mailboxes_on(self, current: Iterable[str]) -> set[str]:
        return (set(current) - self.mailboxes_out) | self.mailboxes_in


@dataclass(slots=True)
class _Plan:
    """The IMAP work of one Email/set call, grouped by mailbox."""

    # (mailbox_id, added flags, removed flags) → uids
    stores: dict[tuple[str, frozenset[str], frozenset[str]], list[int]] = field(
        default_factory=lambda: defaultdict(list)
    )
    # (from mailbox, to mailbox) → uids
    moves: dict[tuple[str, str], list[int]] = field(default_factory=lambda: defaultdict(list))
    # (from mailbox, to mailbox) → uids to copy
    copies: dict[tuple[str, str], list[int]] = field(default_factory=lambda: defaultdict(list))
    # mailbox → uids to remove (after the copies)
    removals: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    modseqs: dict[tuple[str, int], int | None] = field(default_factory=dict)
    owners: dict[tuple[str, int], str] = field(default_factory=dict)  # (mailbox, uid) → email

    def owned(self, mailbox_id: str, uids: Iterable[int]) -> dict[int, str]:
        return {u: self.owners[(mailbox_id, u)] for u in uids}


def _resolve_mailbox(call: Call, value: str, live: set[str]) -> str:
    try:
        mailbox_id = resolve_creation_id(call, value)
    except UnknownCreationId as exc:
        raise exc.set_error(SetErrorType.INVALID_PROPERTIES, "mailboxIds") from None
    if mailbox_id not in live:
        raise invalid_properties(f"no mailbox {value!r}", "mailboxIds")
    return mailbox_id


def _patched(
    call: Call, row: em.EmailRow, patch: JsonObject, live: set[str]
) -> tuple[dict[str, bool], set[str], set[str]]:
    """The keywords and mailbox ids after ``patch`` (RFC 8620 §5.3 on the two properties
    that may change, CORE-SET-03), and the keywords it names; anything else is
    invalidProperties."""
    keywords = dict(row.keywords)
    mailboxes = set(row.mailbox_ids)
    named: set[str] = set()
    for path, value in parse_patch(patch):
        if path[0] == "keywords" and len(path) <= 2:
            _patch_keywords(keywords, path, value)
            named |= set(keywords) if len(path) == 1 else {path[1].lower()}
        elif path[0] == "mailboxIds" and len(path) <= 2:
            _patch_mailboxes(call, mailboxes, path, value, live)
        else:
            raise invalid_properties(f"{path[0]} cannot be changed", path[0])
    bad = [k for k in keywords if not valid_keyword(k)]
    if bad:
        raise invalid_properties(f"invalid keyword {bad[0][:40]!r}", "keywords")
    if not mailboxes:
        raise invalid_properties("an Email must stay in at least one mailbox", "mailboxIds")
    return keywords, mailboxes, named


def _all_true(value: object) -> bool:
    return isinstance(value, dict) and all(v is True for v in value.values())


def _patch_keywords(keywords: dict[str, bool], path: tuple[str, ...], value: object) -> None:
    if len(path) == 1:
        if not _all_true(value):
            raise invalid_properties("keywords must map keywords to true", "keywords")
        assert isinstance(value, dict)
        keywords.clear()
        keywords.update({str(k).lower(): True for k in value})
    elif value is True:
        keywords[path[1].lower()] = True
    elif value is None:
        keywords.pop(path[1].lower(), None)
    else:
        raise invalid_properties("a keyword patch value is true or null", "keywords")


def _patch_mailboxes(
    call: Call, mailboxes: set[str], path: tuple[str, ...], value: object, live: set[str]
) -> None:
    if len(path) == 1:
        if not _all_true(value):
            raise invalid_properties("mailboxIds must map ids to true", "mailboxIds")
        assert isinstance(value, dict)
        mailboxes.clear()
        mailboxes.update(_resolve_mailbox(call, str(k), live) for k in value)
        return
    target = _resolve_mailbox(call, path[1], live)
    if value is True:
        mailboxes.add(target)
    elif value is None:
        mailboxes.discard(target)
    else:
        raise invalid_properties("a mailboxIds patch value is true or null", "mailboxIds")


def _plan_update(plan: _Plan, email_id: str, locations: list[em.Location], change: _Change) -> None:
    """Plan ``change`` on the Email's copies as they are in the cache now.

    Raises:
        SetError: ``notFound`` when no copy is left to write to; ``invalidProperties``
            when the change would leave the Email in no mailbox.
    """
    visible = [loc for loc in locations if not loc.deleted]
    if not visible:
        raise SetError(SetErrorType.NOT_FOUND)
    current = {loc.mailbox_id for loc in visible}
    wanted = change.mailboxes_on(current)
    if not wanted:
        raise invalid_properties("an Email must stay in at least one mailbox", "mailboxIds")
    add = frozenset(em.flags_from_keywords(change.keywords_in))
    remove = frozenset(em.flags_from_keywords(change.keywords_out))
    for loc in visible:
        plan.modseqs[(loc.mailbox_id, loc.uid)] = loc.modseq
        plan.owners[(loc.mailbox_id, loc.uid)] = email_id
        if add or remove:
            plan.stores[(loc.mailbox_id, add, remove)].append(loc.uid)
    gone, new = current - wanted, wanted - current
    by_mailbox = {loc.mailbox_id: loc for loc in visible}
    if len(gone) == 1 and len(new) == 1:
        source = by_mailbox[next(iter(gone))]
        plan.moves[(source.mailbox_id, next(iter(new)))].append(source.uid)
        return
    source = by_mailbox[next(iter(sorted(current - gone or current)))]
    for target in sorted(new):
        plan.copies[(source.mailbox_id, target)].append(source.uid)
    for mailbox_id in gone:
        plan.removals[mailbox_id].append(by_mailbox[mailbox_id].uid)


def _plan_destroy(plan: _Plan, email_id: str, locations: list[em.Location]) -> None:
    for loc in locations:
        if not loc.deleted:
            plan.removals[loc.mailbox_id].append(loc.uid)
            plan.owners[(loc.mailbox_id, loc.uid)] = email_id


Work = Callable[[OpenMailbox], Awaitable[Collection[int]]]
Box = TypeVar("Box", bound=OpenMailbox)


class _Runner:
    """Runs a plan against IMAP and keeps, per Email, what the server proved.

    An Email whose every UID the server proved written is done; one with a UID the server
    did not prove (moved or expunged by another client meanwhile, docs/design.md, "Writes", Rule 4)
    is ``unproven``, for the caller to resync and retry; one refused with a NO is
    ``failed``.  ``landed`` says whether anything was written (serverPartialFail).
    """

    def __init__(self, ctx: MethodContext, names: dict[str, str], landed: bool = False) -> None:
        self.ctx = ctx
        self.names = names
        self.landed = landed
        self.failed: dict[str, SetError] = {}  # email id → error
        self.unproven: set[str] = set()
        self.removed: set[str] = set()  # Emails with a copy that our removal proved gone
        self.shown: dict[str, str] = {}  # label_writes.Plan.shown
        self.stored: dict[str, set[tuple[str, int]]] = defaultdict(set)  # email → its STOREs

    async def step(self, mailbox_id: str, owners: Mapping[int, str], work: Work) -> None:
        await self.step_in(self.ctx.upstream.writing, mailbox_id, owners, work)

    async def step_in(
        self,
        opening: Callable[[str], AbstractAsyncContextManager[Box]],
        mailbox_id: str,
        owners: Mapping[int, str],
        work: Callable[[Box], Awaitable[Collection[int]]],
    ) -> None:
        """Run ``work`` on the mailbox as ``opening`` opens it; ``owners``: the Emails of
        the UIDs it writes, each failed, unproven or done by what the server said."""
        try:
            async with opening(self.names[mailbox_id]) as box:
                done = await work(box)
            self.landed = True
        except ImapCommandFailed as exc:
            for email_id in owners.values():
                self.failed.setdefault(email_id, set_error_from_imap(exc))
            return
        except UpstreamUnavailable as exc:
            if self.landed:
                raise MethodError(
                    MethodErrorType.SERVER_PARTIAL_FAIL,
                    "the mail server failed after some changes were made",
                ) from exc
            raise
        missing = [uid for uid in owners if uid not in done]
        if missing:
            self.unproven.update(owners[uid] for uid in missing)
            # the cursors may not show why (an expunge they missed): have the resync
            # ask the server for these UIDs themselves
            self.ctx.services.sync_for(self.ctx.account_id).suspect(mailbox_id, missing)

    def settled(self, email_id: str) -> bool:
        return email_id in self.failed or email_id in self.unproven

    async def run(self, plan: _Plan) -> None:
        for (mailbox_id, add, remove), uids in plan.stores.items():
            work = functools.partial(
                self._store, plan=plan, mailbox_id=mailbox_id, add=add, remove=remove, uids=uids
            )
            await self.step(mailbox_id, plan.owned(mailbox_id, uids), work)
        for (source, target), uids in plan.moves.items():
            work = functools.partial(self._move, uids=uids, target=self.names[target])
            await self.step(source, plan.owned(source, uids), work)
        for (source, target), uids in plan.copies.items():
            work = functools.partial(self._copy, uids=uids, target=self.names[target])
            await self.step(source, plan.owned(source, uids), work)
        for mailbox_id, uids in plan.removals.items():
            # never remove a copy of an Email whose other writes (its copies to the
            # mailboxes it moves to) were refused or unproven: that could lose it
            owners = {u: e for u, e in plan.owned(mailbox_id, uids).items() if not self.settled(e)}
            if owners:
                work = functools.partial(self._remove, uids=sorted(owners), owners=owners)
                await self.step(mailbox_id, owners, work)

    async def _store(
        self,
        box: OpenMailbox,
        plan: _Plan,
        mailbox_id: str,
        add: frozenset[str],
        remove: frozenset[str],
        uids: list[int],
    ) -> Collection[int]:
        for uid in uids:
            self.stored[plan.owners[(mailbox_id, uid)]].add((mailbox_id, uid))
        done = set(uids)
        for op, flags in (("+", add), ("-", remove)):
            if not flags:
                continue
            since = max((plan.modseqs.get((mailbox_id, u)) or 0) for u in uids) or None
            stored = await box.store_flags(uids, op, flags, since)
            proven = set(stored.done)
            if stored.modified:
                # changed by another client since our sync: our +/- touches only the
                # patched keywords, so applying it again cannot clobber their change
                again = await box.store_flags(sorted(stored.modified), op, flags)
                proven |= again.done
            done &= proven
        return done

    @staticmethod
    async def _move(box: OpenMailbox, uids: list[int], target: str) -> Collection[int]:
        return (await box.move(uids, target)).done

    @staticmethod
    async def _copy(box: OpenMailbox, uids: list[int], target: str) -> Collection[int]:
        return (await box.copy(uids, target)).done

    async def _remove(
        self, box: OpenMailbox, uids: list[int], owners: dict[int, str]
    ) -> Collection[int]:
        done = (await box.remove(uids)).done
        self.removed.update(owners[u] for u in done)
        return done


async def run_email_set(ctx: MethodContext, call: Call, raw: JsonObject) -> JsonObject:
    """Email/set with ``raw`` as its arguments (also the implicit call of SUB-02)."""
    args = SetArgs.parse(raw, max_objects=ctx.cfg.limits.max_objects_in_set)
    await ctx.refresh()
    old_state = await ctx.state(em.EMAIL_TYPE)
    if args.if_in_state is not None and args.if_in_state != old_state:
        raise MethodError(MethodErrorType.STATE_MISMATCH)
    created, not_created = await _creates(ctx, call, args.create or {})
    destroy_ids = list(dict.fromkeys(args.destroy or []))
    updated, not_updated, destroyed, not_destroyed = await _updates_and_destroys(
        ctx, call, args.update or {}, destroy_ids
    )
    if created:  # updates and destroys resync the account themselves
        await ctx.refresh(force=True)
    return responses.set_response(
        responses.SetResult(created, updated, destroyed, not_created, not_updated, not_destroyed),
        account_id=ctx.account_id,
        old_state=old_state,
        new_state=await ctx.state(em.EMAIL_TYPE),
    )


async def email_set(ctx: MethodContext, call: Call) -> JsonObject:
    return await run_email_set(ctx, call, call.args)


async def _creates(
    ctx: MethodContext, call: Call, creates: dict[str, JsonObject]
) -> tuple[JsonObject, JsonObject]:
    created: JsonObject = {}
    not_created: JsonObject = {}
    if not creates:
        return created, not_created
    from imapjmap.methods.email.create import create_email  # the create half, optional

    for cid, obj in creates.items():
        try:
            if not isinstance(obj, dict):
                raise invalid_properties("an Email must be an object")
            result = await create_email(ctx, call, obj)
        except SetError as exc:
            not_created[cid] = exc.to_json()
        except ImapCommandFailed as exc:
            not_created[cid] = set_error_from_imap(exc).to_json()
        else:
            created[cid] = result
            call.created_ids[cid] = result["id"]
    return created, not_created


def _read(
    tx: Tx, account_id: str, ids: list[str]
) -> tuple[dict[str, em.EmailRow], dict[str, list[em.Location]], dict[str, str], dict[str, Rights]]:
    rows = em.emails(tx, account_id, ids)
    locations = {i: em.locations_of_email(tx, account_id, i) for i in rows}
    live = q.live_mailboxes(tx, account_id)
    return rows, locations, {m.id: m.imap_name for m in live}, {m.id: m.my_rights for m in live}


Rights = Mapping[str, bool]


def refusal(
    rights: Mapping[str, Rights],
    copies: Iterable[str],
    *,
    keywords: Iterable[str] = (),
    joins: Iterable[str] = (),
    leaves: Iterable[str] = (),
) -> SetError | None:
    """``forbidden`` when the login's rights (MBX-03 ``myRights``, from the server's
    MYRIGHTS) do not allow a write, checked before anything is sent: ``keywords`` to set or
    clear on every copy (in ``copies``' mailboxes), mailboxes the Email ``joins`` and
    ``leaves`` (a destroy leaves them all).  Rights the cache does not know allow."""

    def may(mailbox_id: str, right: str) -> bool:
        return rights.get(mailbox_id, {}).get(right, True)

    copies = list(copies)
    keywords = set(keywords)
    needed = [("maySetSeen", "$seen")] if "$seen" in keywords else []
    if keywords - {"$seen"}:
        needed.append(("maySetKeywords", "keywords"))
    for right, what in needed:
        if not all(may(m, right) for m in copies):
            return SetError(SetErrorType.FORBIDDEN, f"{what} may not be changed here ({right})")
    if not all(may(m, "mayAddItems") for m in joins):
        return SetError(SetErrorType.FORBIDDEN, "a mailbox it would join does not allow adding")
    if not all(may(m, "mayRemoveItems") for m in leaves):
        return SetError(SetErrorType.FORBIDDEN, "a mailbox it is in does not allow removing")
    return None


async def _updates_and_destroys(
    ctx: MethodContext, call: Call, updates: dict[str, JsonObject], destroy_ids: list[str]
) -> tuple[JsonObject, JsonObject, list[str], JsonObject]:
    ids = list(dict.fromkeys([*updates, *destroy_ids]))
    rows, locations, names, rights = await ctx.read(lambda tx: _read(tx, ctx.account_id, ids))
    changes: dict[str, _Change] = {}
    not_updated: JsonObject = {}
    for email_id, patch in updates.items():
        try:
            if email_id in destroy_ids:
                raise SetError(SetErrorType.WILL_DESTROY)
            row = rows.get(email_id)
            if row is None:
                raise SetError(SetErrorType.NOT_FOUND)
            if not isinstance(patch, dict):
                raise SetError(SetErrorType.INVALID_PATCH, "a PatchObject must be an object")
            keywords, mailboxes, named = _patched(call, row, patch, set(names))
            change = _Change.between(row, keywords, mailboxes, named)
            copies = _copies(locations.get(email_id, []))
            refused = refusal(
                rights,
                copies,
                keywords=change.keywords_in | change.keywords_out,
                joins=change.mailboxes_in,
                leaves=change.mailboxes_out & set(copies),
            )
            if refused is not None:
                raise refused
            changes[email_id] = change
        except SetError as exc:
            not_updated[email_id] = exc.to_json()
    not_destroyed: JsonObject = {
        i: SetError(SetErrorType.NOT_FOUND).to_json() for i in destroy_ids if i not in rows
    }
    for email_id in destroy_ids:
        copies = _copies(locations.get(email_id, []))
        refused = refusal(rights, copies, leaves=copies) if email_id in rows else None
        if refused is not None:
            not_destroyed[email_id] = refused.to_json()
    doomed = [i for i in destroy_ids if i in rows and i not in not_destroyed]
    errors, shown = await _write_proven(ctx, rows, locations, names, changes, doomed)
    # RFC 8620 §5.3: an Email the server left in other mailboxes than the patch asked for
    # (labels mode: the Trash or Spam alone) says which; the client's view then matches
    updated: JsonObject = {
        i: {"mailboxIds": {shown[i]: True}} if i in shown else None
        for i in changes
        if i not in errors
    }
    not_updated.update({i: errors[i].to_json() for i in changes if i in errors})
    destroyed = [i for i in doomed if i not in errors]
    not_destroyed.update({i: errors[i].to_json() for i in doomed if i in errors})
    return updated, not_updated, destroyed, not_destroyed


def _copies(locations: Iterable[em.Location]) -> list[str]:
    return [loc.mailbox_id for loc in locations if not loc.deleted]


_NOT_WRITTEN: Final = (
    "the message changed on the mail server while it was being written (moved or deleted"
    " by another client) and the retry did not take; nothing is reported done that the"
    " server did not confirm"
)


async def _write_proven(
    ctx: MethodContext,
    rows: dict[str, em.EmailRow],
    locations: dict[str, list[em.Location]],
    names: dict[str, str],
    changes: dict[str, _Change],
    doomed: list[str],
) -> tuple[dict[str, SetError], dict[str, str]]:
    """Write the updates and destroys; the error of each Email not written (CORE-SET-02),
    and the Emails left in the Trash or Spam alone (labels mode, ``Plan.shown``).

    An Email the server did not prove written (docs/design.md, "Writes", Rule 4: another
    client moved or expunged it after our last sync) is retried once after a resync, at the
    copies it has now; gone entirely it is ``notFound``, still unproven it is reported not written.

    Then the account is resynced and every Email reported written is checked once more
    against what the server now says (:func:`_recheck`).
    """
    first = await _write_once(ctx, rows, locations, names, changes, doomed)
    errors = dict(first.failed)
    retry = [i for i in [*changes, *doomed] if i in first.unproven and i not in errors]
    landed = first.landed
    stored = first.stored
    shown = dict(first.shown)
    if retry:
        await ctx.refresh(force=True)
        rows, locations, names, _ = await ctx.read(lambda tx: _read(tx, ctx.account_id, retry))
        again = await _write_once(
            ctx,
            rows,
            locations,
            names,
            {i: changes[i] for i in retry if i in changes and i in rows},
            [i for i in retry if i in doomed and i in rows],
            landed=landed,
        )
        errors.update(_retry_errors(retry, rows, doomed, first, again))
        for email_id in retry:  # the retry planned from where they are now
            shown.pop(email_id, None)
        shown.update(again.shown)
        landed = again.landed
        for email_id, written in again.stored.items():
            stored[email_id] |= written
    if landed:
        await ctx.refresh(force=True)
        errors.update(await _recheck(ctx, changes, doomed, errors, stored))
    return errors, shown


def _retry_errors(
    retry: list[str],
    rows: dict[str, em.EmailRow],
    doomed: list[str],
    first: _Runner,
    again: _Runner,
) -> dict[str, SetError]:
    errors: dict[str, SetError] = {}
    for email_id in retry:
        if email_id not in rows:
            if not (email_id in doomed and email_id in first.removed):
                errors[email_id] = SetError(SetErrorType.NOT_FOUND)
        elif email_id in again.failed:
            errors[email_id] = again.failed[email_id]
        elif email_id in again.unproven:
            errors[email_id] = SetError(SetErrorType.FORBIDDEN, _NOT_WRITTEN)
    return errors


async def _recheck(
    ctx: MethodContext,
    changes: dict[str, _Change],
    doomed: list[str],
    errors: dict[str, SetError],
    stored: dict[str, set[tuple[str, int]]],
) -> dict[str, SetError]:
    """Check the written Emails against the resynced cache; retry once what a move lost.

    A server proves a STORE on the copy it had, but another client's MOVE may have copied
    the message just before our STORE and expunged the original just after (Dovecot moves
    so): the STORE landed on a copy that is gone, and the copy that is left lacks it.  So an
    Email whose keywords do not show the change although one of the copies we stored on is
    gone gets the keywords stored again where it is now; and a destroyed Email that still
    has a copy (made by such a move before our expunge) is removed again.  An Email whose
    stored-on copies are all still there and lack the change was changed again by someone
    else after us: that later change stands.
    """
    done_updates = [i for i in changes if i not in errors]
    done_destroys = [i for i in doomed if i not in errors]
    if not done_updates and not done_destroys:
        return {}
    ids = [*done_updates, *done_destroys]
    rows, locations, names, _ = await ctx.read(lambda tx: _read(tx, ctx.account_id, ids))
    again: dict[str, _Change] = {}
    for email_id in done_updates:
        row = rows.get(email_id)
        if row is None:
            continue  # deleted by someone else after our write
        change = changes[email_id]
        if _lost_by_a_move(change, row, locations[email_id], stored.get(email_id, set())):
            again[email_id] = dataclasses.replace(
                change, mailboxes_in=frozenset(), mailboxes_out=frozenset()
            )
    doomed_again = [i for i in done_destroys if i in rows]
    if not again and not doomed_again:
        return {}
    late = await _write_once(ctx, rows, locations, names, again, doomed_again, landed=True)
    await ctx.refresh(force=True)
    return {
        email_id: late.failed.get(email_id) or SetError(SetErrorType.FORBIDDEN, _NOT_WRITTEN)
        for email_id in [*again, *doomed_again]
        if email_id in late.failed or email_id in late.unproven
    }


def _lost_by_a_move(
    change: _Change,
    row: em.EmailRow,
    locations: list[em.Location],
    stored: set[tuple[str, int]],
) -> bool:
    """Whether the keywords of ``change`` need storing again after the resync (:func:`_recheck`).

    Either a copy we stored on is gone and the Email lacks the change, or a copy we did not
    store on lacks it: another client's move copied the message just before our STORE and,
    at the resync, had not expunged the original yet, so the Email's keywords (the union of
    its copies) still showed ours, on a copy about to go.
    """
    live = [loc for loc in locations if not loc.deleted]
    have = set(row.keywords)
    if not (change.keywords_in <= have and not change.keywords_out & have):
        now = {(loc.mailbox_id, loc.uid) for loc in live}
        if stored - now:
            return True
    for loc in live:
        if (loc.mailbox_id, loc.uid) in stored:
            continue  # ours: a later change by someone else on it stands
        keywords = set(em.keywords_from_flags(loc.flags))
        if not change.keywords_in <= keywords or change.keywords_out & keywords:
            return True
    return False


async def _write_once(
    ctx: MethodContext,
    rows: dict[str, em.EmailRow],
    locations: dict[str, list[em.Location]],
    names: dict[str, str],
    changes: dict[str, _Change],
    doomed: list[str],
    *,
    landed: bool = False,
) -> _Runner:
    runner = _Runner(ctx, names, landed)
    if ctx.upstream.profile.labels:
        absolute = {
            i: (c.keywords_on(rows[i]), c.mailboxes_on(rows[i].mailbox_ids))
            for i, c in changes.items()
        }

        async def labelled(mailbox_id: str, owners: Mapping[int, str], work: LabelWork) -> None:
            await runner.step_in(ctx.upstream.labelling, mailbox_id, owners, work)

        runner.shown = await label_writes.run(
            ctx, labelled, rows, locations, names, absolute, doomed
        )
        return runner
    plan = _Plan()
    for email_id, change in changes.items():
        try:
            _plan_update(plan, email_id, locations[email_id], change)
        except SetError as exc:
            runner.failed[email_id] = exc
    for email_id in doomed:
        _plan_destroy(plan, email_id, locations[email_id])
    await runner.run(plan)
    return runner
