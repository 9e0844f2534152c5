"""Email/query and Email/queryChanges (RFC 8621 §4.4, §4.5; checklist EML-QRY-*, CORE-QRY-*).

Theory of operation: a query is planned once (:class:`Plan`), then run in ONE cache
transaction, so ids, total and queryState are one snapshot.  Two ways to run it:

- *SQL walk*: when SQL answers the whole filter and the sort is receivedAt or size alone
  (the mail-list case, e.g. ``{inMailbox}`` by ``receivedAt`` descending), rows come in
  order from an index and only as many as the page needs are read (keyset batches);
  ``collapseThreads`` skips threads already seen during the walk.
- *Python*: otherwise SQL narrows the candidates with the conjunctive part of the filter,
  and the rest (IMAP search hits, thread keywords, addresses, any sort) is evaluated on
  the candidate rows.

A third, for a query with ``text``, ``body`` or ``header`` conditions (what the upstream
must search the message contents for: 48 s for 100,000 messages on Dovecot without a
full-text index) that wants a page without a total, sorted by receivedAt or size: the
*search walk* (:func:`walk`).  The candidates SQL narrows to are taken in the query's order
in growing batches, each batch's UIDs searched upstream, and the walk stops when the page
is full: a mail client's search of a big mailbox reads the newest messages, not all.

Rule 1: the order is the requested sort, then the email id ascending (a total order, so
        pages never overlap and all ways give the same list).
Rule 2: queryState is the Email state: whatever changes the result list changes an Email.
Rule 3: /queryChanges treats every email changed or destroyed since the old state as
        removed, and re-adds those present in the new list.  When membership or position
        depends on other emails of the thread (collapseThreads, thread keyword filters or
        sorts), the whole thread of every changed email counts as changed.
Rule 4: the search walk answers what the whole search would: the same filter on the same
        candidates, with the hits of every location each candidate has in the searched
        mailboxes.  It is one snapshot: if the Email state moves during the walk, the
        whole search answers instead.
Rule 5: a query with such conditions whose search did cover every message (a total, an
        anchor, a negative position or no limit asked) is also evaluated in batches, each
        its own transaction, when its sort is one SQL gives: at a million messages the
        candidates of a common word no longer fit one transaction's time budget (the
        query was ``serverFail`` after its 250 s search).  A change meanwhile leaves it
        to the one transaction.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Final

from imapjmap.answers import query_results
from imapjmap.errors import ImapCommandTooLong
from imapjmap.jmap import responses
from imapjmap.jmap import standard as std
from imapjmap.jmap import state as jstate
from imapjmap.jmap.args import DEFAULT_QUERY_LIMITS, Comparator, QueryArgs, QueryChangesArgs
from imapjmap.jmap.dispatch import Call
from imapjmap.jmap.errors import MethodError, MethodErrorType, invalid_arguments
from imapjmap.jmap.limits import QueryLimits, check_search_terms
from imapjmap.jmap.wire import Json, JsonObject
from imapjmap.methods import standard
from imapjmap.methods.context import MethodContext
from imapjmap.methods.email import search as email_search
from imapjmap.query import email_filter as ef
from imapjmap.store import email_queries as eq
from imapjmap.store import queries as q
from imapjmap.store.db import Tx
from imapjmap.store.emails import EMAIL_TYPE
from imapjmap.upstream.api import SearchMailbox, SearchTerm, UidHits

_EXTRA: Final = ("collapseThreads",)
EmailHits = dict[SearchTerm, set[str]]  # term -> the Emails it matched
_FIRST_BATCH: Final = 256
# candidates matched between two Tx.check() (the time budget, and a moment for the event loop)
_CHECK_EVERY: Final = 8
# the search walk's batches of candidates: the first is this many (or four pages), each
# next one sized from the hits found so far, at most _WALK_GROWTH times the one before
# and _WALK_MOST (a batch's rows are read with their headers)
_WALK_FIRST: Final = 500
_WALK_GROWTH: Final = 4
_WALK_MOST: Final = 10_000


@dataclass(frozen=True, slots=True)
class Plan:
    """A validated query and how to run it."""

    filter: std.Filter | None
    sort: tuple[Comparator, ...]
    collapse: bool
    where: eq.EmailWhere  # what SQL answers
    order: eq.Order | None  # set when SQL alone can walk the result (the fast path)
    terms: frozenset[ef.SearchTerm]
    scope: frozenset[str] | None
    thread_keywords: frozenset[str]
    needs_headers: bool

    @property
    def thread_dependent(self) -> bool:
        """Whether an email's place in the result depends on its thread (Rule 3)."""
        return self.collapse or bool(self.thread_keywords)


def plan(
    raw_filter: Json,
    sort: Sequence[Comparator],
    extra: JsonObject,
    limits: QueryLimits = DEFAULT_QUERY_LIMITS,
) -> Plan:
    """Validate and plan.  Raises MethodError (unsupportedFilter, also for more upstream
    searches than ``limits`` allow; invalidArguments ...)."""
    collapse = extra.get("collapseThreads")
    if collapse is None:
        collapse = False
    if not isinstance(collapse, bool):
        raise invalid_arguments("'collapseThreads' must be a Boolean")
    filter_ = ef.parse_filter(raw_filter)
    comparators = ef.parse_sort(sort)
    terms = frozenset(ef.search_terms(filter_))
    check_search_terms(len(terms), limits)
    where, exact = ef.sql_where(filter_)
    order = ef.sql_order(comparators) if exact else None
    return Plan(
        filter=filter_,
        sort=comparators,
        collapse=collapse,
        where=where,
        order=order,
        terms=terms,
        scope=ef.search_scope(filter_),
        thread_keywords=ef.thread_keywords_needed(filter_, comparators),
        needs_headers=ef.needs_headers(filter_),
    )


# --- running a plan -----------------------------------------------------------------------


async def _search(
    ctx: MethodContext,
    p: Plan,
    *,
    within: Mapping[str, Collection[int]] | None = None,
    mailboxes: Sequence[SearchMailbox] | None = None,
) -> UidHits:
    """The IMAP part of the query, before the transaction (it awaits the upstream);
    ``within``: only among these UIDs (the search walk's batch).

    Raises:
        MethodError: unsupportedFilter when the upstream refused a search as too long.
    """
    try:
        return await email_search.search(ctx, p.terms, p.scope, within=within, mailboxes=mailboxes)
    except ImapCommandTooLong:
        raise MethodError(
            MethodErrorType.UNSUPPORTED_FILTER,
            "the IMAP server refused the search as too long: shorten the text, body or "
            "header conditions",
        ) from None


@dataclass(slots=True)
class Runner:
    """Runs one plan inside one transaction."""

    tx: Tx
    account_id: str
    plan: Plan
    uid_hits: UidHits
    _evaluated: list[str] | None = None

    def walk(self, need: int | None = None) -> Iterator[str]:
        """The result ids in order, lazily (SQL walk) or from the evaluated list.

        ``need``: how many ids the caller expects to take, to size the first SQL batch.
        """
        if self.plan.order is None:
            yield from self.evaluated()
            return
        seen: set[str] = set()
        after: eq.Hit | None = None
        size = _FIRST_BATCH if need is None else need * (2 if self.plan.collapse else 1) + 1
        while True:
            batch = eq.ordered(
                self.tx, self.account_id, self.plan.where, self.plan.order, limit=size, after=after
            )
            for hit in batch:
                if self.plan.collapse:
                    if hit.thread_id in seen:
                        continue
                    seen.add(hit.thread_id)
                yield hit.id
            if len(batch) < size:
                return
            after, size = batch[-1], max(size * 4, _FIRST_BATCH)

    def all_ids(self) -> list[str]:
        if self.plan.order is None:
            return self.evaluated()
        hits = eq.ordered(self.tx, self.account_id, self.plan.where, self.plan.order)
        return _collapse(hits) if self.plan.collapse else [h.id for h in hits]

    def total(self) -> int:
        if self.plan.order is None:
            return len(self.evaluated())
        return eq.count(self.tx, self.account_id, self.plan.where, threads=self.plan.collapse)

    def evaluated(self) -> list[str]:
        """The Python way: candidates from SQL, then filter, sort and collapse."""
        if self._evaluated is not None:
            return self._evaluated
        p = self.plan
        hits = email_search.email_hits(self.tx, self.account_id, self.uid_hits)
        where = _bounded_by_hits(p.where, p.filter, hits)
        rows = eq.candidates(self.tx, self.account_id, where, with_headers=p.needs_headers)
        evaluator = ef.Evaluator(hits, self._thread_keywords({r.thread_id for r in rows}))
        kept: list[eq.Candidate] = []
        for number, row in enumerate(rows):
            if number % _CHECK_EVERY == 0:
                self.tx.check()  # a big filter's minutes of matching stop at the time budget
            if evaluator.matches(p.filter, row):
                kept.append(row)
        calls = 0

        def sort_value(row: eq.Candidate, comparator: Comparator) -> std.SortValue:
            nonlocal calls
            calls += 1
            if calls % _CHECK_EVERY == 0:
                self.tx.check()  # ten comparators over a big mailbox: the budget again
            return evaluator.sort_value(row, comparator)

        ordered = std.sort_records(kept, p.sort, sort_value, lambda r: r.id)
        if not p.collapse:
            self._evaluated = [r.id for r in ordered]
        else:
            seen: set[str] = set()
            self._evaluated = []
            for row in ordered:
                if row.thread_id not in seen:
                    seen.add(row.thread_id)
                    self._evaluated.append(row.id)
        return self._evaluated

    def _thread_keywords(self, thread_ids: set[str]) -> ef.ThreadKeywords:
        if not self.plan.thread_keywords:
            return ef.ThreadKeywords()
        members = eq.thread_keywords(self.tx, self.account_id, sorted(thread_ids))
        return ef.ThreadKeywords.build(members, self.plan.thread_keywords)


def _collapse(hits: Sequence[eq.Hit]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for hit in hits:
        if hit.thread_id not in seen:
            seen.add(hit.thread_id)
            out.append(hit.id)
    return out


def _take(ids: Iterator[str], count: int) -> list[str]:
    out: list[str] = []
    for id_ in ids:
        if len(out) >= count:
            break
        out.append(id_)
    return out


# --- the search walk ----------------------------------------------------------------------


def walk_order(p: Plan, args: QueryArgs, labels: bool) -> eq.Order | None:
    """The order of a search walk for this query, or None when the whole search must run:
    no upstream term; a total, an anchor, a negative position or no limit asked (they need
    every result); a sort SQL does not give; thread keywords (they need whole threads);
    or an upstream whose labels are mailboxes (its search reads an index, at the same
    cost for a whole folder)."""
    if not p.terms or labels or p.thread_keywords:
        return None
    if args.calculate_total or args.anchor is not None:
        return None
    if args.position < 0 or args.limit is None:
        return None
    return ef.sql_order(p.sort)


def next_batch(size: int, scanned: int, found: int, missing: int) -> int:
    """The walk's next batch: enough candidates for the ``missing`` results at the density
    seen so far (``found`` of ``scanned``) and half as many again, bounded (module
    constants)."""
    wanted = size * _WALK_GROWTH if found == 0 else -(-missing * scanned * 3 // (found * 2))
    return min(_WALK_MOST, size * _WALK_GROWTH, max(_WALK_FIRST, wanted))


@dataclass(frozen=True, slots=True)
class _Batch:
    seq: int
    hits: list[eq.Hit]
    located: dict[str, set[int]]


def _read_batch(
    tx: Tx,
    account_id: str,
    p: Plan,
    order: eq.Order,
    size: int,
    after: eq.Hit | None,
    searched: frozenset[str] | None,
) -> _Batch:
    hits = eq.ordered(tx, account_id, p.where, order, limit=size, after=after)
    located = (
        {} if searched is None else eq.locations_of(tx, account_id, [h.id for h in hits], searched)
    )
    return _Batch(q.type_state(tx, account_id, EMAIL_TYPE), hits, located)


def _hits_at(tx: Tx, account_id: str, uid_hits: UidHits) -> tuple[int, EmailHits]:
    """The Email seq, and the search's UIDs as Emails."""
    hits = email_search.email_hits(tx, account_id, uid_hits)
    return q.type_state(tx, account_id, EMAIL_TYPE), hits


def _matching(
    tx: Tx,
    account_id: str,
    p: Plan,
    batch: Sequence[eq.Hit],
    uid_hits: UidHits | None = None,
    hits: EmailHits | None = None,
) -> tuple[int, set[str]]:
    """The Email seq, and which of ``batch`` match the whole filter (Rule 4), from the hits
    of the batch's own search (``uid_hits``) or of the whole one (``hits``)."""
    ids = {h.id for h in batch}
    if hits is None:
        hits = email_search.email_hits(tx, account_id, uid_hits or {})
    # the batch's own: the whole search's 45,000 hits of a word at a million messages, in
    # every statement of every batch, made its evaluation cost as much as the search
    hits = {term: found & ids for term, found in hits.items()}
    where = _bounded_by_hits(replace(p.where, ids=tuple(h.id for h in batch)), p.filter, hits)
    rows = eq.candidates(tx, account_id, where, with_headers=p.needs_headers)
    evaluator = ef.Evaluator(hits)
    matching: set[str] = set()
    for number, row in enumerate(rows):
        if number % _CHECK_EVERY == 0:
            tx.check()
        if evaluator.matches(p.filter, row):
            matching.add(row.id)
    return q.type_state(tx, account_id, EMAIL_TYPE), matching


async def walk(
    ctx: MethodContext,
    p: Plan,
    order: eq.Order,
    need: int | None,
    *,
    whole: tuple[int, EmailHits] | None = None,
) -> tuple[list[str], int] | None:
    """The first ``need`` result ids in ``order`` (None: all of them) and the Email seq
    they are of, found batch by batch; None when the cache changed during the walk (Rule
    4).  ``whole``: the Email seq and hits of a search of every message already made (Rule
    5): the batches are only evaluated; else each is searched upstream among its UIDs."""
    account_id = ctx.account_id
    mailboxes: list[SearchMailbox] = []
    searched: frozenset[str] | None = None
    if whole is None:
        rows = await ctx.read(lambda tx: q.live_mailboxes(tx, account_id))
        mailboxes = email_search.search_mailboxes(rows)
        searched = frozenset(
            box.mailbox_id
            for box in mailboxes
            if (p.scope is None or box.mailbox_id in p.scope) and box.messages != 0
        )
    ids: list[str] = []
    threads: set[str] = set()
    seq = None if whole is None else whole[0]
    after: eq.Hit | None = None
    size = _WALK_MOST if need is None else min(_WALK_MOST, max(_WALK_FIRST, need * 4))
    scanned = found = 0
    while need is None or len(ids) < need:
        read = partial(
            _read_batch,
            account_id=account_id,
            p=p,
            order=order,
            size=size,
            after=after,
            searched=searched,
        )
        batch = await ctx.read(read)
        if seq is not None and batch.seq != seq:
            return None
        seq = batch.seq
        if whole is None:
            uid_hits = await _search(ctx, p, within=batch.located, mailboxes=mailboxes)
            match = partial(
                _matching, account_id=account_id, p=p, batch=batch.hits, uid_hits=uid_hits
            )
        else:
            match = partial(_matching, account_id=account_id, p=p, batch=batch.hits, hits=whole[1])
        now, matching = await ctx.read(match)
        if now != seq:
            return None
        for hit in batch.hits:
            if hit.id not in matching or (p.collapse and hit.thread_id in threads):
                continue
            threads.add(hit.thread_id)
            ids.append(hit.id)
        if len(batch.hits) < size:
            break
        after = batch.hits[-1]
        if need is not None:
            scanned, found = scanned + len(batch.hits), found + len(matching)
            size = next_batch(size, scanned, found, need - len(ids))
    if seq is None:
        return None
    return (ids if need is None else ids[:need]), seq


async def walk_whole(
    ctx: MethodContext, p: Plan, uid_hits: UidHits
) -> tuple[list[str], int] | None:
    """Every result of a query whose upstream search covered every message, evaluated in
    batches (Rule 5), and the Email seq; None when that cannot be (a sort SQL does not
    give, thread keywords) or the cache changed meanwhile."""
    order = ef.sql_order(p.sort)
    if order is None or p.thread_keywords:
        return None
    whole = await ctx.read(partial(_hits_at, account_id=ctx.account_id, uid_hits=uid_hits))
    return await walk(ctx, p, order, None, whole=whole)


# --- Email/query --------------------------------------------------------------------------


def _page(runner: Runner, args: QueryArgs) -> tuple[list[str], int | None]:
    """The ids the window needs (a prefix, or all) and the total when it was counted."""
    if args.anchor is not None or args.position < 0 or args.limit is None:
        ids = runner.all_ids()
        return ids, len(ids)
    ids = _take(runner.walk(args.position + args.limit), args.position + args.limit)
    return ids, None


def run_query(
    tx: Tx, account_id: str, p: Plan, uid_hits: UidHits, args: QueryArgs
) -> tuple[list[str], int | None, int]:
    """One run of a plan: the ids the window needs, the total when asked, the Email state.

    Module-level, with picklable arguments: a query evaluated in Python runs in a reader
    process (``Store.read_apart``), where its CPU does not hold the GIL against the other
    accounts' requests.
    """
    seq = q.type_state(tx, account_id, EMAIL_TYPE)
    runner = Runner(tx, account_id, p, uid_hits)
    ids, total = _page(runner, args)
    if args.calculate_total and total is None:
        total = runner.total()
    return ids, total, seq


async def email_query(ctx: MethodContext, call: Call) -> JsonObject:
    args = QueryArgs.parse(
        call.args, sort_properties=ef.SORT_PROPERTIES, extra=_EXTRA, limits=ctx.query_limits
    )
    p = plan(args.filter, args.sort, args.extra, ctx.query_limits)
    await ctx.refresh()
    order = walk_order(p, args, ctx.upstream.profile.labels)
    if order is not None and args.limit is not None:
        walked = await walk(ctx, p, order, args.position + args.limit)
        if walked is not None:
            first, at = walked
            return standard.query_response(ctx, args, first, at, can_calculate_changes=True)
    uid_hits = await _search(ctx, p)
    if p.terms:
        batched = await walk_whole(ctx, p, uid_hits)
        if batched is not None:
            all_ids, at = batched
            response = standard.query_response(ctx, args, all_ids, at, can_calculate_changes=True)
            if args.calculate_total:
                response["total"] = len(all_ids)
            return response
    # a result found at the same Email state answers again (query_results Rule 1); not
    # one that IMAP searches took part in, as the upstream's search may find otherwise
    kept = ctx.services.query_results if not p.terms else None
    key = query_results.key_of(ctx.account_id, ctx.account.epoch, call.args)
    apart = p.order is None  # the Python way: its work goes to a reader process

    def kept_answer(seq: int) -> tuple[Sequence[str], int | None, int, bool] | None:
        found = kept.get(key, seq) if kept is not None else None
        return None if found is None else (*found, seq, True)

    def run(tx: Tx) -> tuple[Sequence[str], int | None, int, bool]:
        seq = q.type_state(tx, ctx.account_id, EMAIL_TYPE)
        return kept_answer(seq) or (*run_query(tx, ctx.account_id, p, uid_hits, args), False)

    # whether the kept result holds is one indexed row, read once a request (store Rule 10)
    got = kept_answer(await ctx.seq_of(EMAIL_TYPE)) if kept is not None else None
    if got is None and not apart:
        got = await ctx.read(run)
    if got is None:
        got = (
            *await ctx.store.read_apart(
                run_query, ctx.account_id, p, uid_hits, args, account=ctx.account_id
            ),
            False,
        )
    ids, total, seq, again = got
    if kept is not None and not again:
        kept.keep(key, seq, ids, total)
    response = standard.query_response(ctx, args, ids, seq, can_calculate_changes=True)
    if args.calculate_total:
        response["total"] = total
    return response


# --- Email/queryChanges -------------------------------------------------------------------


def _touched(tx: Tx, account_id: str, p: Plan, since: jstate.State) -> tuple[set[str], int]:
    """Ids changed or destroyed since ``since`` (whole threads when needed) and the seq."""
    if since.after_id is None:  # query states never are intermediate: read only what is new
        snapshot = standard.ChangeSnapshot(
            [
                std.ChangeRow(r.id, r.created_seq, r.updated_seq, r.destroyed_seq)
                for r in q.changes_since(tx, "emails", account_id, since.seq)
            ],
            q.type_state(tx, account_id, EMAIL_TYPE),
            q.type_floor(tx, account_id, EMAIL_TYPE),
        )
    else:
        snapshot = standard.read_changes(tx, account_id, "emails", EMAIL_TYPE, since)
    standard.check_since(since, snapshot)
    # an intermediate state (an Email state from /changes paging) may have seen only part
    # of its own seq: count all of that seq as changed (extra removals are allowed)
    touched = {
        row.id
        for row in snapshot.rows
        if row.last_seq > since.seq or (since.after_id is not None and row.last_seq == since.seq)
    }
    if p.thread_dependent and touched:
        threads = eq.threads_of(tx, account_id, sorted(touched))
        touched |= eq.emails_of_threads(tx, account_id, sorted(threads))
    return touched, snapshot.current


def _located(runner: Runner, touched: set[str], up_to_id: str | None) -> list[str]:
    """A prefix of the new result holding every touched id it contains (or all of it).

    The SQL walk stops as soon as the touched ids present in the result are all placed,
    or at ``upToId``: changes at the top of a big mailbox cost a short walk.
    """
    p = runner.plan
    if p.order is None:
        return runner.evaluated()
    wanted = set(touched)
    if p.collapse and wanted:
        in_result = _collapse(_ordered_ids(runner, wanted))
    else:
        in_result = [h.id for h in _ordered_ids(runner, wanted)]
    pending = set(in_result)
    prefix: list[str] = []
    if not pending:
        return prefix
    # std.query_changes cuts at upToId only when upToId itself did not change
    stop_at = up_to_id if up_to_id not in touched else None
    for id_ in runner.walk():
        prefix.append(id_)
        pending.discard(id_)
        if not pending or id_ == stop_at:
            break
    return prefix


def _ordered_ids(runner: Runner, ids: set[str]) -> list[eq.Hit]:
    assert runner.plan.order is not None
    out: list[eq.Hit] = []
    ordered_ids = sorted(ids)
    for start in range(0, len(ordered_ids), 500):
        where = replace(runner.plan.where, ids=tuple(ordered_ids[start : start + 500]))
        out += eq.ordered(runner.tx, runner.account_id, where, runner.plan.order)
    key = runner.plan.order
    out.sort(key=lambda h: ((-h.key if key.descending else h.key), h.id))
    return out


def run_query_changes(
    tx: Tx,
    account_id: str,
    p: Plan,
    uid_hits: UidHits,
    since: jstate.State,
    args: QueryChangesArgs,
) -> tuple[std.QueryChangesResult, int, int | None]:
    """The changes since ``since``, the Email state and the total when asked (module-level
    and picklable like :func:`run_query`)."""
    touched, current = _touched(tx, account_id, p, since)
    runner = Runner(tx, account_id, p, uid_hits)
    new_ids = _located(runner, touched, args.up_to_id)
    result = std.query_changes(
        new_ids, touched, (), up_to_id=args.up_to_id, max_changes=args.max_changes
    )
    total = runner.total() if args.calculate_total else None
    return result, current, total


async def email_query_changes(ctx: MethodContext, call: Call) -> JsonObject:
    args = QueryChangesArgs.parse(
        call.args, sort_properties=ef.SORT_PROPERTIES, extra=_EXTRA, limits=ctx.query_limits
    )
    p = plan(args.filter, args.sort, args.extra, ctx.query_limits)
    since = jstate.decode_or_raise(args.since_query_state, ctx.account.epoch)
    await ctx.refresh()
    uid_hits = await _search(ctx, p)
    if p.order is None:  # the Python way, as for Email/query
        result, current, total = await ctx.store.read_apart(
            run_query_changes, ctx.account_id, p, uid_hits, since, args, account=ctx.account_id
        )
    else:
        result, current, total = await ctx.read(
            lambda tx: run_query_changes(tx, ctx.account_id, p, uid_hits, since, args)
        )
    return responses.query_changes_response(
        account_id=ctx.account_id,
        old_query_state=args.since_query_state,
        new_query_state=ctx.encode_state(current),
        removed=result.removed,
        added=result.added,
        total=total,
    )


def _bounded_by_hits(
    where: eq.EmailWhere, filter_: std.Filter | None, hits: dict[ef.SearchTerm, set[str]]
) -> eq.EmailWhere:
    """The SQL part narrowed by the search hits: a ``body`` or ``header`` term ANDed at the
    top bounds the ids; a ``text`` one the ids or a header match."""
    for term in ef.required_search_terms(filter_):
        bound = hits.get(term, set())
        if where.ids is not None:
            bound = bound & set(where.ids)  # a new set: ``hits`` serves every batch (Rule 5)
        where = replace(where, ids=tuple(sorted(bound)))
    for term, needle in ef.text_narrowing(filter_):
        narrowed = (tuple(sorted(hits.get(term, set()))), needle)
        where = replace(where, ids_or_headers_like=(*where.ids_or_headers_like, narrowed))
    return where
