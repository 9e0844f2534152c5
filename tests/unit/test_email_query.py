"""Email/query and Email/queryChanges over an in-memory cache (checklist EML-QRY-*,
CORE-QRY-*, CORE-QCH-*), with the upstream's search answered by the world's fake upstream
(hits by mailbox and term).

Every filter/sort case also runs through the other execution path (SQL walk vs Python
evaluation) and must give the same list.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from imapjmap.answers import query_results
from imapjmap.config import Config
from imapjmap.errors import ImapCommandFailed, ImapCommandTooLong
from imapjmap.jmap.errors import MethodError, MethodErrorType
from imapjmap.jmap.standard import FilterOperator
from imapjmap.methods.email import query as email_query
from imapjmap.query.email_filter import (
    SearchTerm,
    address_matches,
    parse_filter,
    substring_matches,
)
from imapjmap.store import email_queries as eq
from imapjmap.store.db import Store, TransactionTooLong
from tests.unit.email_world import ALICE, A, Mail, World, call

ALL = ["e3", "e6", "e5", "e2", "e4", "e1"]  # receivedAt descending, then id


@pytest.fixture(params=[eq.SMALL_MAILBOX, 0], ids=["location-scan", "index-scan"])
async def world(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[World]:
    monkeypatch.setattr(eq, "SMALL_MAILBOX", request.param)
    store = await Store.open(":memory:")
    w = World(store, Config())
    await w.setup()
    yield w
    await store.aclose()


async def query(world: World, args: dict[str, Any]) -> dict[str, Any]:
    return await email_query.email_query(world.context(), call("Email/query", args))


async def ids_both_ways(world: World, args: dict[str, Any]) -> list[str]:
    """The full result by Email/query, checked against the other execution path."""
    result = await query(world, args)
    p = email_query.plan(args.get("filter"), _comparators(args), args)
    other = dataclasses.replace(p, order=None if p.order is not None else p.order)
    uid_hits = await email_query._search(world.context(), p)

    def run(tx: Any) -> list[str]:
        return email_query.Runner(tx, A, other, uid_hits).all_ids()

    assert await world.store.run(run) == result["ids"]
    return list(result["ids"])


def _comparators(args: dict[str, Any]) -> list[Any]:
    from imapjmap.jmap.args import QueryArgs

    return QueryArgs.parse({"accountId": A, "sort": args.get("sort")}).sort


FILTERS: list[tuple[Any, list[str]]] = [
    (None, ALL),
    ({"inMailbox": "Minbox"}, ["e3", "e6", "e4", "e1"]),
    ({"inMailbox": "Marchive"}, ["e5", "e4"]),
    ({"inMailbox": "nope"}, []),
    ({"inMailboxOtherThan": ["Minbox"]}, ["e5", "e2", "e4"]),
    ({"inMailboxOtherThan": []}, ALL),
    ({"before": "1970-01-01T00:33:20Z"}, ["e4", "e1"]),  # strictly before 2000
    ({"after": "1970-01-01T00:33:20Z"}, ["e3", "e6", "e5", "e2"]),  # 2000 and later
    ({"after": "1970-01-01T00:33:19.5Z"}, ["e3", "e6", "e5", "e2"]),
    ({"minSize": 100, "maxSize": 300}, ["e2", "e1"]),
    ({"hasKeyword": "$seen"}, ["e6", "e2", "e4", "e1"]),
    ({"hasKeyword": "$SEEN"}, ["e6", "e2", "e4", "e1"]),
    ({"hasKeyword": "$forwarded"}, ["e5"]),
    ({"notKeyword": "$seen"}, ["e3", "e5"]),
    ({"hasAttachment": True}, ["e3", "e4"]),
    ({"hasAttachment": False}, ["e6", "e5", "e2", "e1"]),
    ({"allInThreadHaveKeyword": "$seen"}, ["e6", "e4"]),
    ({"someInThreadHaveKeyword": "$seen"}, ["e3", "e6", "e2", "e4", "e1"]),
    ({"noneInThreadHaveKeyword": "$seen"}, ["e5"]),
    ({"from": "alice"}, ["e3", "e1"]),
    ({"from": "ALICE@EXAMPLE.ORG"}, ["e3", "e1"]),
    ({"from": "Liddell <alice"}, ["e3", "e1"]),
    ({"to": "carol"}, ["e3"]),
    ({"cc": "bob"}, []),
    ({"bcc": "bob"}, []),
    ({"subject": "hello"}, ["e3", "e2", "e1"]),
    ({"subject": "GRÜSSE"}, ["e6"]),
    ({"subject": "<2024> &"}, ["e4"]),
    ({"subject": "o_l"}, []),  # LIKE wildcards in the header narrowing are escaped
    ({"from": "%"}, []),
    ({"from": "émile"}, ["e6"]),  # non-ASCII: no SQL narrowing, Unicode case folding
    ({"subject": "hello", "from": "alice", "inMailbox": "Minbox"}, ["e3", "e1"]),
    ({"text": "invoice"}, ["e4"]),  # from the cached subject
    ({"text": "dave@x"}, ["e5"]),  # from the cached addresses
    (
        {"operator": "OR", "conditions": [{"inMailbox": "Msent"}, {"hasAttachment": True}]},
        ["e3", "e2", "e4"],
    ),
    ({"operator": "NOT", "conditions": [{"inMailbox": "Minbox"}]}, ["e5", "e2"]),
    (
        {
            "operator": "AND",
            "conditions": [
                {"inMailbox": "Minbox"},
                {"operator": "NOT", "conditions": [{"hasKeyword": "$seen"}]},
            ],
        },
        ["e3"],
    ),
    (
        {"operator": "AND", "conditions": [{"inMailbox": "Minbox"}, {"inMailbox": "Marchive"}]},
        ["e4"],
    ),
    ({"operator": "AND", "conditions": []}, ALL),
    ({"operator": "OR", "conditions": []}, []),
    ({"operator": "NOT", "conditions": []}, ALL),
    ({"inMailbox": "Minbox", "hasAttachment": True}, ["e3", "e4"]),
    ({"operator": "AND", "conditions": [{"hasAttachment": True}, {"hasAttachment": False}]}, []),
    ({"inMailbox": "Minbox", "from": "alice", "after": "1970-01-01T00:20:00Z"}, ["e3"]),
]


@pytest.mark.parametrize(("filter_", "expected"), FILTERS)
async def test_filters_eml_qry(world: World, filter_: Any, expected: list[str]) -> None:
    assert await ids_both_ways(world, {"filter": filter_}) == expected


SORTS: list[tuple[list[dict[str, Any]], list[str]]] = [
    ([], ALL),
    ([{"property": "receivedAt", "isAscending": False}], ALL),
    ([{"property": "receivedAt"}], ["e1", "e4", "e2", "e5", "e3", "e6"]),
    ([{"property": "size"}], ["e6", "e4", "e1", "e2", "e3", "e5"]),
    ([{"property": "size", "isAscending": False}], ["e5", "e3", "e2", "e1", "e4", "e6"]),
    ([{"property": "from"}], ["e1", "e3", "e2", "e4", "e5", "e6"]),
    ([{"property": "from", "collation": "i;octet"}], ["e1", "e3", "e2", "e4", "e5", "e6"]),
    ([{"property": "to"}], ["e2", "e1", "e3", "e4", "e5", "e6"]),
    ([{"property": "subject"}], ["e6", "e1", "e2", "e3", "e4", "e5"]),
    ([{"property": "sentAt"}], ["e3", "e4", "e5", "e6", "e2", "e1"]),  # null first, then UTC
    (
        [
            {"property": "hasKeyword", "keyword": "$flagged", "isAscending": False},
            {"property": "receivedAt", "isAscending": False},
        ],
        ["e4", "e3", "e6", "e5", "e2", "e1"],
    ),
    (
        [{"property": "someInThreadHaveKeyword", "keyword": "$Forwarded", "isAscending": False}],
        ["e5", "e1", "e2", "e3", "e4", "e6"],
    ),
    (
        [{"property": "allInThreadHaveKeyword", "keyword": "$seen"}, {"property": "size"}],
        ["e1", "e2", "e3", "e5", "e6", "e4"],
    ),
]


@pytest.mark.parametrize(("sort", "expected"), SORTS)
async def test_sorts_eml_qry(world: World, sort: list[dict[str, Any]], expected: list[str]) -> None:
    assert await ids_both_ways(world, {"sort": sort}) == expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({}, ["e3", "e6", "e5", "e4"]),
        ({"filter": {"inMailbox": "Minbox"}}, ["e3", "e6", "e4"]),
        ({"sort": [{"property": "receivedAt"}]}, ["e1", "e4", "e5", "e6"]),
        ({"sort": [{"property": "size"}]}, ["e6", "e4", "e1", "e5"]),
        ({"filter": {"notKeyword": "$seen"}}, ["e3", "e5"]),
    ],
)
async def test_collapse_threads(world: World, args: dict[str, Any], expected: list[str]) -> None:
    assert await ids_both_ways(world, {**args, "collapseThreads": True}) == expected


@pytest.mark.parametrize(
    ("args", "ids", "position", "total"),
    [
        ({"limit": 2, "calculateTotal": True}, ["e3", "e6"], 0, 4),
        ({"position": 3, "limit": 2}, ["e1"], 3, None),
        ({"position": -1}, ["e1"], 3, None),  # CORE-QRY-01
        ({"position": -10, "limit": 1}, ["e3"], 0, None),
        ({"position": 10, "calculateTotal": True}, [], 10, 4),
        ({"anchor": "e6", "anchorOffset": 1, "limit": 2}, ["e4", "e1"], 2, None),  # CORE-QRY-02
        ({"anchor": "e6", "anchorOffset": -5, "limit": 1}, ["e3"], 0, None),
        ({"anchor": "e6", "position": 3}, ["e6", "e4", "e1"], 1, None),  # position ignored
        ({"limit": 0, "calculateTotal": True}, [], 0, 4),
        ({"collapseThreads": True, "limit": 1, "calculateTotal": True}, ["e3"], 0, 3),
        ({"collapseThreads": True, "position": 1, "limit": 5}, ["e6", "e4"], 1, None),
    ],
)
async def test_window_core_qry(
    world: World, args: dict[str, Any], ids: list[str], position: int, total: int | None
) -> None:
    result = await query(world, {"filter": {"inMailbox": "Minbox"}, **args})
    assert result["ids"] == ids and result["position"] == position
    assert result.get("total") == total
    assert result["canCalculateChanges"] is True and "limit" not in result
    assert result["accountId"] == A and result["queryState"].startswith("s")


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ({"filter": {"unknown": 1}}, "unsupportedFilter"),  # CORE-QRY-04
        ({"filter": {"operator": "XOR", "conditions": []}}, "unsupportedFilter"),
        ({"filter": {"hasKeyword": "bad(kw"}}, "invalidArguments"),
        ({"filter": {"hasKeyword": ""}}, "invalidArguments"),
        ({"filter": {"before": "yesterday"}}, "invalidArguments"),
        ({"filter": {"before": "2024-01-01T00:00:00+01:00"}}, "invalidArguments"),
        ({"filter": {"minSize": -1}}, "invalidArguments"),
        ({"filter": {"inMailboxOtherThan": "Minbox"}}, "invalidArguments"),
        ({"filter": {"header": []}}, "invalidArguments"),
        ({"filter": {"header": ["Bad Name", "x"]}}, "invalidArguments"),
        ({"filter": {"header": ["a", "b", "c"]}}, "invalidArguments"),
        ({"filter": {"hasAttachment": "yes"}}, "invalidArguments"),
        ({"filter": [1]}, "invalidArguments"),
        ({"sort": [{"property": "nope"}]}, "unsupportedSort"),
        ({"sort": [{"property": "subject", "collation": "i;bogus"}]}, "unsupportedSort"),
        ({"sort": [{"property": "hasKeyword"}]}, "invalidArguments"),
        ({"sort": [{"property": "hasKeyword", "keyword": "a b"}]}, "invalidArguments"),
        ({"collapseThreads": "yes"}, "invalidArguments"),
        ({"limit": -1}, "invalidArguments"),  # CORE-QRY-03
        ({"anchor": "nope"}, "anchorNotFound"),
        ({"unknownArgument": True}, "invalidArguments"),
    ],
)
async def test_query_errors(world: World, args: dict[str, Any], error: str) -> None:
    with pytest.raises(MethodError) as err:
        await query(world, args)
    assert err.value.type == error


# --- the upstream's search ---------------------------------------------------------------

BODY_PAY = SearchTerm("BODY", ("pay",))


async def test_body_text_and_header_go_to_imap(world: World) -> None:
    # uids: INBOX e1=1 e3=2 e4=3 e6=4; Archive e4=1 e5=2; Sent e2=1
    world.upstream.hits = {
        ("INBOX", BODY_PAY): (3, 99),  # 99: not in the cache, ignored
        ("Archive", BODY_PAY): (1,),
        ("Archive", SearchTerm("TEXT", ("meeting",))): (2,),
        ("Sent", SearchTerm("HEADER", ("X-Custom", ""))): (1,),
        ("INBOX", SearchTerm("HEADER", ("List-Id", "dev"))): (1, 2),
    }
    assert await ids_both_ways(world, {"filter": {"body": "pay"}}) == ["e4"]
    assert await ids_both_ways(world, {"filter": {"text": "meeting"}}) == ["e5"]
    assert await ids_both_ways(world, {"filter": {"header": ["X-Custom"]}}) == ["e2"]
    assert await ids_both_ways(world, {"filter": {"header": ["List-Id", "dev"]}}) == ["e3", "e1"]
    assert await ids_both_ways(
        world, {"filter": {"operator": "NOT", "conditions": [{"body": "pay"}]}}
    ) == ["e3", "e6", "e5", "e2", "e1"]


async def test_a_text_query_loads_only_its_hits_and_header_matches(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EML-QRY: a ``text`` condition matches an IMAP hit or a cached header; SQL narrows the
    candidates to those, so a text query over a million messages does not load every Email
    with its headers (it grew the proxy by 340 MB at 100,000)."""
    world.upstream.hits = {("Archive", SearchTerm("TEXT", ("invoice",))): (2,)}  # e5, by its body
    loaded: list[str] = []
    real = eq.candidates

    def candidates(*args: Any, **kwargs: Any) -> list[eq.Candidate]:
        rows = real(*args, **kwargs)
        loaded.extend(r.id for r in rows)
        return rows

    monkeypatch.setattr(eq, "candidates", candidates)
    # e4 by its cached subject, e5 by the IMAP hit
    assert await ids_both_ways(world, {"filter": {"text": "invoice"}}) == ["e5", "e4"]
    assert set(loaded) == {"e4", "e5"}
    loaded.clear()
    # a needle SQL cannot narrow (non-ASCII) still finds what it finds, from every row
    assert await query(world, {"filter": {"text": "Überweisung"}}) is not None
    assert len(set(loaded)) == len(ALL)


async def test_search_runs_only_where_results_can_be(world: World) -> None:
    world.upstream.hits = {("Archive", BODY_PAY): (1,)}
    result = await query(world, {"filter": {"inMailbox": "Marchive", "body": "pay"}})
    assert result["ids"] == ["e4"]
    assert {box for box, _ in world.upstream.searched} == {"Archive"}
    world.upstream.searched.clear()
    await query(
        world,
        {
            "filter": {
                "operator": "OR",
                "conditions": [
                    {"inMailbox": "Msent", "body": "x"},
                    {"inMailbox": "Marchive", "text": "y"},
                ],
            }
        },
    )
    assert {box for box, _ in world.upstream.searched} == {"Sent", "Archive"}
    world.upstream.searched.clear()
    await query(world, {"filter": {"inMailbox": "Minbox"}})
    assert world.upstream.searched == []  # nothing for the upstream to answer


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (ImapCommandFailed("UID SEARCH", "BADCHARSET"), "serverFail"),
        (ImapCommandTooLong("UID SEARCH: BAD Too long argument"), "unsupportedFilter"),
    ],
)
async def test_a_refused_search_is_the_queries_error(
    world: World, failure: Exception, error: str
) -> None:
    """A search the upstream refused as too long is unsupportedFilter (EML-QRY); any other
    refusal is raised as itself, for the dispatcher to answer serverFail."""
    world.upstream.search_failure = failure
    if error == "serverFail":
        with pytest.raises(ImapCommandFailed):  # answered serverFail by the dispatcher
            await query(world, {"filter": {"text": "x"}})
    else:
        with pytest.raises(MethodError) as raised:
            await query(world, {"filter": {"text": "x"}})
        assert raised.value.type == error and "too long" in str(raised.value.description)


# --- Email/queryChanges -------------------------------------------------------------------

Mutation = Callable[[World], Awaitable[Any]]


async def _new_top(w: World) -> None:
    await w.add(Mail("n1", "T9", ("Minbox",), 5000, 10, (), (ALICE,), (), "New"))


async def _new_in_t1(w: World) -> None:
    await w.add(Mail("n2", "T1", ("Minbox",), 4000, 10, (), (ALICE,), (), "Re: Hello world"))


async def _new_old(w: World) -> None:
    await w.add(Mail("n3", "T2", ("Minbox",), 1200, 10, ("\\Seen",), (ALICE,), (), "Old"))


async def _several(w: World) -> None:
    await w.move("e3", ())
    await w.move("e5", ("Minbox",))
    await w.set_flags("e1", ())
    await _new_top(w)


MUTATIONS: dict[str, Mutation] = {
    "new at the top": _new_top,
    "new in a thread": _new_in_t1,
    "new below": _new_old,
    "expunge the thread head": lambda w: w.move("e3", ()),
    "expunge the oldest": lambda w: w.move("e1", ()),
    "move in": lambda w: w.move("e5", ("Minbox",)),
    "move out": lambda w: w.move("e4", ("Marchive",)),
    "flags only": lambda w: w.set_flags("e1", ()),
    "seen makes a thread all-seen": lambda w: w.set_flags("e3", ("\\Seen",)),
    "several": _several,
    "nothing": lambda w: w.set_flags("e5", ("$Forwarded",)),
}

QUERIES: dict[str, dict[str, Any]] = {
    "inMailbox": {"filter": {"inMailbox": "Minbox"}},
    "inMailbox collapsed": {"filter": {"inMailbox": "Minbox"}, "collapseThreads": True},
    "all ascending": {"sort": [{"property": "receivedAt"}]},
    "all collapsed": {"collapseThreads": True},
    "by size": {"filter": {"inMailbox": "Minbox"}, "sort": [{"property": "size"}]},
    "thread keyword": {"filter": {"allInThreadHaveKeyword": "$seen"}},
    "unread in inbox by from": {
        "filter": {"inMailbox": "Minbox", "notKeyword": "$seen"},
        "sort": [{"property": "from"}],
    },
}


def apply(old: list[str], removed: list[str], added: list[dict[str, Any]]) -> list[str]:
    out = [i for i in old if i not in set(removed)]
    for item in sorted(added, key=lambda a: a["index"]):
        out.insert(item["index"], item["id"])
    return out


@pytest.mark.parametrize("mutation", list(MUTATIONS))
@pytest.mark.parametrize("query_name", list(QUERIES))
async def test_query_changes_core_qch_01(world: World, query_name: str, mutation: str) -> None:
    args = QUERIES[query_name]
    before = await query(world, args)
    await MUTATIONS[mutation](world)
    after = await query(world, {**args, "calculateTotal": True})
    changes = await email_query.email_query_changes(
        world.context(),
        call(
            "Email/queryChanges",
            {**args, "sinceQueryState": before["queryState"], "calculateTotal": True},
        ),
    )
    assert apply(before["ids"], changes["removed"], changes["added"]) == after["ids"]
    assert changes["oldQueryState"] == before["queryState"]
    assert changes["newQueryState"] == after["queryState"]
    assert changes["total"] == after["total"]


@pytest.mark.parametrize("collapse", [False, True])
async def test_query_changes_up_to_id(world: World, collapse: bool) -> None:
    args = {"filter": {"inMailbox": "Minbox"}, "collapseThreads": collapse}
    before = await query(world, args)
    up_to = before["ids"][1]
    cached = before["ids"][:2]
    await _new_top(world)
    await world.move("e1", ())
    after = await query(world, args)
    changes = await email_query.email_query_changes(
        world.context(),
        call(
            "Email/queryChanges", {**args, "sinceQueryState": before["queryState"], "upToId": up_to}
        ),
    )
    assert all(a["index"] <= after["ids"].index(up_to) for a in changes["added"])
    assert (
        apply(cached, changes["removed"], changes["added"])
        == after["ids"][: after["ids"].index(up_to) + 1]
    )


async def test_query_changes_errors(world: World) -> None:
    args = {"filter": {"inMailbox": "Minbox"}}
    before = await query(world, args)
    await _new_top(world)
    await _new_in_t1(world)
    ctx = world.context()
    with pytest.raises(MethodError) as err:
        await email_query.email_query_changes(
            ctx,
            call(
                "Email/queryChanges",
                {**args, "sinceQueryState": before["queryState"], "maxChanges": 1},
            ),
        )
    assert err.value.type == "tooManyChanges"
    for state in ("garbage", "s9999.epoch1"):
        with pytest.raises(MethodError) as err:
            await email_query.email_query_changes(
                ctx, call("Email/queryChanges", {**args, "sinceQueryState": state})
            )
        assert err.value.type == "cannotCalculateChanges"
    with pytest.raises(MethodError) as err:
        await email_query.email_query_changes(
            ctx,
            call(
                "Email/queryChanges",
                {"filter": {"nope": 1}, "sinceQueryState": before["queryState"]},
            ),
        )
    assert err.value.type == "unsupportedFilter"


async def test_query_changes_at_the_top_reads_a_short_prefix(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    await world.add(*[Mail(f"old{i:02d}", f"To{i}", ("Minbox",), 100 + i) for i in range(40)])
    args = {"filter": {"inMailbox": "Minbox"}, "collapseThreads": True}
    before = await query(world, args)
    await _new_top(world)
    monkeypatch.setattr(email_query, "_FIRST_BATCH", 2)
    read: list[int] = []
    real = eq.ordered

    def spy(*a: Any, **kw: Any) -> list[eq.Hit]:
        hits = real(*a, **kw)
        read.append(len(hits))
        return hits

    monkeypatch.setattr(eq, "ordered", spy)
    changes = await email_query.email_query_changes(
        world.context(),
        call("Email/queryChanges", {**args, "sinceQueryState": before["queryState"]}),
    )
    assert changes["added"] == [{"id": "n1", "index": 0}]
    assert sum(read) < 10  # not the 44 emails of the mailbox


async def test_a_long_python_match_stops_at_the_time_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Matching in Python runs no SQL statement to interrupt: it checks the budget itself."""
    store = await Store.open(":memory:", max_transaction_seconds=0.3)
    w = World(store, Config())
    await w.setup()
    matched = 0
    original = email_query.ef.Evaluator.matches

    def slow_match(self: Any, filter_: Any, row: Any) -> bool:
        nonlocal matched
        matched += 1
        spin = time.thread_time()
        while time.thread_time() - spin < 0.2:  # CPU work: the budget counts CPU
            pass
        return bool(original(self, filter_, row))

    monkeypatch.setattr(email_query, "_CHECK_EVERY", 1)
    monkeypatch.setattr(email_query.ef.Evaluator, "matches", slow_match)
    try:
        with pytest.raises(TransactionTooLong):
            await query(w, {"filter": {"subject": "a"}})
        assert 0 < matched < len(ALL)  # stopped part way, not after matching everything
    finally:
        await store.aclose()


@pytest.mark.parametrize(
    ("haystack", "needle", "found"),
    [
        ("Quarterly Report", "report", True),
        ("Quarterly Report", "REPORT", True),
        ("Straße", "STRASSE", True),  # full case folding: ß is ss (RFC 8621 §4.4.1 EMAIL-Q-*)
        ("STRASSE", "straße", True),
        ("ß", "ss", True),  # a needle longer than the raw haystack can still match
        ("ŉ", "ʼn", True),
        ("Report", "x" * 1000, False),  # too long for the haystack: refused without folding
        ("", "a", False),
        (None, "a", False),
        ("abc", "", True),
    ],
)
def test_substring_matches_folds_case_fully(haystack: str | None, needle: str, found: bool) -> None:
    assert substring_matches(haystack, needle) is found


def test_address_matches_name_or_address() -> None:
    addresses = [{"name": "Jürgen Groß", "email": "j@example.test"}]
    assert address_matches(addresses, "GROSS")
    assert address_matches(addresses, "<j@example")
    assert not address_matches(addresses, "x" * 1000)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("invoice*", "invoice"),
        ("invoice", "invoice"),
        ("invoice**", "invoice"),
        ("foo* bar*", "foo bar"),
        ("  foo*  ", "  foo  "),
        ("in*voice", "in*voice"),  # not at the end of a word: kept
        ("*", "*"),  # no prefix to stand for: kept, never an empty search
        ("**", "**"),
        ("* foo*", "* foo"),
        ("grüße*", "grüße"),
    ],
)
def test_trailing_star_of_each_word_is_dropped(value: str, expected: str) -> None:
    for key in ("text", "subject", "from", "to", "cc", "bcc", "body"):
        assert parse_filter({key: value}) == {key: expected}


def test_trailing_star_inside_operators_only_in_text_conditions() -> None:
    raw = {
        "operator": "NOT",
        "conditions": [
            {"subject": "a*", "header": ["X-Star", "b*"], "hasKeyword": "$seen"},
            {"operator": "OR", "conditions": [{"body": "c*"}]},
        ],
    }
    assert parse_filter(raw) == FilterOperator(
        "NOT",
        (
            {"subject": "a", "header": ["X-Star", "b*"], "hasKeyword": "$seen"},
            FilterOperator("OR", ({"body": "c"},)),
        ),
    )


# --- results kept between requests (answers.query_results) ----------------------------------


@pytest.mark.parametrize("mutation", list(MUTATIONS))
@pytest.mark.parametrize("query_name", list(QUERIES))
async def test_a_kept_result_never_outlives_a_change_core_qry(
    world: World, query_name: str, mutation: str
) -> None:
    """The same query at the same Email state is answered from the result kept; after any
    change the answer is what a process that kept nothing computes."""
    args = {**QUERIES[query_name], "calculateTotal": True, "limit": 3}
    kept = world.services().query_results
    first = await query(world, args)
    assert await query(world, args) == first and kept.hits == 1
    await MUTATIONS[mutation](world)
    after = await query(world, args)
    assert after["queryState"] != first["queryState"] and kept.hits == 1
    world._services.clear()  # a fresh process: nothing kept
    assert after == await query(world, args)


async def test_a_query_searched_upstream_is_not_kept(world: World) -> None:
    """What the upstream's search finds is its own to say, at any Email state."""
    args = {"filter": {"inMailbox": "Minbox", "body": "pay"}}
    world.upstream.hits = {("INBOX", BODY_PAY): (3,)}  # e4
    assert (await query(world, args))["ids"] == ["e4"]
    world.upstream.hits = {("INBOX", BODY_PAY): (1,)}  # e1
    assert (await query(world, args))["ids"] == ["e1"]
    assert world.services().query_results.hits == 0


async def test_a_result_of_too_many_ids_is_not_kept(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A query without a limit over a big mailbox would keep all its ids: it is not kept."""
    monkeypatch.setattr(query_results, "MAX_IDS", 5)  # the World has six Emails
    kept = world.services().query_results
    await query(world, {"limit": 5})
    assert len(kept) == 1
    await query(world, {})  # all six
    assert len(kept) == 1


PYTHON_WAY = [
    (filter_, expected)
    for filter_, expected in FILTERS
    if email_query.plan(filter_, [], {}).order is None
]


@pytest.fixture
async def file_world(tmp_path: Any) -> AsyncIterator[World]:
    """The world on a cache file with one reader process (store/db.py Rule 9)."""
    store = await Store.open(str(tmp_path / "cache.sqlite3"), processes=1)
    w = World(store, Config())
    await w.setup()
    yield w
    await store.aclose()


@pytest.mark.sqlite_only  # no reader processes on PostgreSQL
async def test_a_query_evaluated_in_python_runs_in_a_reader_process_eml_qry(
    file_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filter or sort that SQL cannot answer is matched in a reader process, not in the
    proxy's: its CPU must not hold the GIL that every other account's request needs.  The
    answers are the same as in-process (the filter table above)."""
    assert len(PYTHON_WAY) > 10

    def not_here(*_: Any) -> list[str]:
        raise AssertionError("evaluated in the proxy's process")

    monkeypatch.setattr(email_query.Runner, "evaluated", not_here)  # in this process only
    for filter_, expected in PYTHON_WAY:
        assert (await query(file_world, {"filter": filter_}))["ids"] == expected, filter_
    by_subject = [{"property": "subject"}, {"property": "receivedAt", "isAscending": False}]
    got = await query(file_world, {"sort": by_subject, "calculateTotal": True, "limit": 3})
    assert got["total"] == len(ALL) and len(got["ids"]) == 3


async def test_the_sql_walk_stays_on_a_reader_thread(
    file_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cheap way (an index walk) does not pay for a trip to another process."""

    async def nowhere(*_: Any, **__: Any) -> Any:
        raise AssertionError("sent to a reader process")

    monkeypatch.setattr(file_world.store, "read_apart", nowhere)
    got = await query(file_world, {"filter": {"inMailbox": "Minbox"}})
    assert got["ids"] == ["e3", "e6", "e4", "e1"]


@pytest.mark.sqlite_only  # no reader processes on PostgreSQL
@pytest.mark.parametrize("mutation", ["new in a thread", "several", "move out"])
async def test_query_changes_evaluated_in_python_run_in_a_reader_process_core_qch_01(
    file_world: World, monkeypatch: pytest.MonkeyPatch, mutation: str
) -> None:
    args = QUERIES["unread in inbox by from"]  # sorted by from: the Python way
    assert email_query.plan(args["filter"], _comparators(args), args).order is None
    before = await query(file_world, args)
    await MUTATIONS[mutation](file_world)
    after = await query(file_world, {**args, "calculateTotal": True})

    def not_here(*_: Any) -> list[str]:
        raise AssertionError("evaluated in the proxy's process")

    monkeypatch.setattr(email_query.Runner, "evaluated", not_here)
    since = {**args, "sinceQueryState": before["queryState"], "calculateTotal": True}
    changes = await email_query.email_query_changes(
        file_world.context(), call("Email/queryChanges", since)
    )
    assert apply(before["ids"], changes["removed"], changes["added"]) == after["ids"]
    assert changes["total"] == after["total"]


async def test_a_method_error_raised_in_a_reader_process_reaches_the_caller_whole(
    file_world: World,
) -> None:
    args = QUERIES["unread in inbox by from"]
    before = await query(file_world, args)
    await _several(file_world)
    since = {**args, "sinceQueryState": before["queryState"], "maxChanges": 1}
    with pytest.raises(MethodError) as err:
        await email_query.email_query_changes(
            file_world.context(), call("Email/queryChanges", since)
        )
    assert err.value.type is MethodErrorType.TOO_MANY_CHANGES
    assert "exceed maxChanges 1" in err.value.to_json()["description"]


# --- the search walk (query Rule 4) -------------------------------------------------------

TEXT_MEETING = SearchTerm("TEXT", ("meeting",))


@pytest.mark.parametrize(
    ("size", "scanned", "found", "missing", "expected"),
    [
        (500, 500, 0, 50, 2000),  # nothing yet: four times as many
        (500, 500, 25, 25, 750),  # half the page in 500: the rest and half again
        (500, 500, 500, 50, 500),  # dense: never below the first batch
        (2000, 2500, 1, 49, 8000),  # sparse: at most four times the one before
        (8000, 16000, 1, 50, 10000),  # and at most the largest batch
    ],
)
def test_the_next_batch_follows_the_density_found(
    size: int, scanned: int, found: int, missing: int, expected: int
) -> None:
    assert email_query.next_batch(size, scanned, found, missing) == expected


WALKABLE = {"filter": {"text": "meeting"}, "limit": 10}


@pytest.mark.parametrize(
    ("args", "labels", "walks"),
    [
        (WALKABLE, False, True),
        ({**WALKABLE, "sort": [{"property": "size", "isAscending": True}]}, False, True),
        ({**WALKABLE, "collapseThreads": True, "position": 20}, False, True),
        (WALKABLE, True, False),  # labels: the search reads an index whole
        ({**WALKABLE, "calculateTotal": True}, False, False),  # a total needs every hit
        ({"filter": {"text": "meeting"}}, False, False),  # no limit: every result
        ({**WALKABLE, "position": -1}, False, False),  # counted from the end
        ({**WALKABLE, "anchor": "e1"}, False, False),
        ({**WALKABLE, "filter": {"inMailbox": "Minbox"}}, False, False),  # no upstream term
        ({**WALKABLE, "sort": [{"property": "subject"}]}, False, False),  # not an SQL order
        (
            {**WALKABLE, "filter": {"text": "meeting", "allInThreadHaveKeyword": "$seen"}},
            False,
            False,
        ),
    ],
)
def test_which_queries_walk_eml_qry(args: dict[str, Any], labels: bool, walks: bool) -> None:
    from imapjmap.jmap.args import QueryArgs

    parsed = QueryArgs.parse(
        {"accountId": A, **args},
        sort_properties=email_query.ef.SORT_PROPERTIES,
        extra=("collapseThreads",),
    )
    p = email_query.plan(parsed.filter, parsed.sort, parsed.extra)
    assert (email_query.walk_order(p, parsed, labels) is not None) is walks


WALKED = [
    {"filter": {"text": "meeting"}},
    {"filter": {"body": "pay"}},
    {"filter": {"operator": "NOT", "conditions": [{"body": "pay"}]}},
    {"filter": {"inMailbox": "Minbox", "text": "meeting"}},
    {"filter": {"text": "invoice"}},  # by a cached subject too
    {"filter": {"operator": "OR", "conditions": [{"body": "pay"}, {"text": "meeting"}]}},
    {"filter": {"body": "pay"}, "sort": [{"property": "size", "isAscending": True}]},
    {"filter": {"text": "meeting"}, "collapseThreads": True},
]


@pytest.mark.parametrize("base", WALKED, ids=[str(a) for a in WALKED])
async def test_a_search_walk_answers_what_the_whole_search_answers_eml_qry(
    world: World, monkeypatch: pytest.MonkeyPatch, base: dict[str, Any]
) -> None:
    """Query Rule 4: batches of one, two, then four candidates, each searched upstream
    among its own UIDs only; every window is the same slice of the whole result."""
    monkeypatch.setattr(email_query, "_WALK_FIRST", 1)
    monkeypatch.setattr(email_query, "_WALK_MOST", 4)
    world.upstream.hits = {
        ("INBOX", BODY_PAY): (1, 3),  # e1, e4
        ("Archive", BODY_PAY): (1,),  # e4 again
        ("Archive", TEXT_MEETING): (2,),  # e5
        ("INBOX", TEXT_MEETING): (2, 4),  # e3, e6
        ("Sent", TEXT_MEETING): (1,),  # e2
    }
    whole = await ids_both_ways(world, base)
    for position, limit in [(0, 1), (0, 2), (1, 2), (0, 6), (3, 10), (7, 1)]:
        world.upstream.searched_uids.clear()
        got = await query(world, {**base, "position": position, "limit": limit})
        assert got["ids"] == whole[position : position + limit], (position, limit)
        assert world.upstream.searched_uids, "the walk searched among its batches' UIDs"


async def test_a_search_walk_stops_when_the_page_is_full(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The newest email is a hit: a page of one searches the first batch's UIDs only, not
    the mailbox; the last page searches every candidate, once."""
    monkeypatch.setattr(email_query, "_WALK_FIRST", 1)
    monkeypatch.setattr(email_query, "_WALK_MOST", 1)
    world.upstream.hits = {("INBOX", TEXT_MEETING): (2, 1)}  # e3 (the newest), e1 (oldest)
    got = await query(world, {"filter": {"text": "meeting"}, "limit": 1})
    assert got["ids"] == ["e3"]
    assert world.upstream.searched_uids == [("INBOX", 2)]
    world.upstream.searched_uids.clear()
    got = await query(world, {"filter": {"text": "meeting"}, "limit": 2})
    assert got["ids"] == ["e3", "e1"]
    searched = world.upstream.searched_uids
    assert len(searched) == len(set(searched)) == 7  # e4 is in two mailboxes


async def test_a_change_during_the_walk_leaves_the_answer_to_the_whole_search(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Query Rule 4: the Email state moved between two batches: the walk's ids are thrown
    away, and the answer and its queryState are the whole search's, after the change."""
    monkeypatch.setattr(email_query, "_WALK_FIRST", 1)
    monkeypatch.setattr(email_query, "_WALK_MOST", 1)
    world.upstream.hits = {("INBOX", TEXT_MEETING): (1,)}  # e1, the oldest
    real = email_query._search
    moved: list[bool] = []

    async def search(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("within") is not None and not moved:
            moved.append(True)
            await world.move("e3", ())  # another client expunges the newest
        return await real(*args, **kwargs)

    monkeypatch.setattr(email_query, "_search", search)
    before = await query(world, {"limit": 1})
    got = await query(world, {"filter": {"text": "meeting"}, "limit": 1})
    assert moved and got["ids"] == ["e1"]
    assert got["queryState"] != before["queryState"]
    assert got["queryState"] == (await query(world, {"limit": 1}))["queryState"]


@pytest.mark.parametrize(
    "window",
    [
        {"calculateTotal": True},
        {"calculateTotal": True, "position": 1, "limit": 2},
        {"anchor": "e5", "anchorOffset": -1, "limit": 2},
        {"position": -2},
        {"collapseThreads": True, "calculateTotal": True},
    ],
)
async def test_a_whole_search_is_evaluated_in_batches_eml_qry(
    world: World, monkeypatch: pytest.MonkeyPatch, window: dict[str, Any]
) -> None:
    """Query Rule 5: a query whose search covered every message (a total, an anchor, a
    negative position) is evaluated one candidate a transaction; the answer, total included,
    is the one transaction's."""
    world.upstream.hits = {
        ("INBOX", TEXT_MEETING): (2, 4),  # e3, e6
        ("Archive", TEXT_MEETING): (2,),  # e5
        ("Sent", TEXT_MEETING): (1,),  # e2
    }
    args = {"filter": {"text": "meeting"}, **window}
    one = await query(world, args)  # batches of 10,000: one
    monkeypatch.setattr(email_query, "_WALK_MOST", 1)
    batches: list[int] = []
    real = email_query._read_batch

    def read_batch(*args: Any, **kwargs: Any) -> Any:
        batches.append(kwargs["size"])
        return real(*args, **kwargs)

    monkeypatch.setattr(email_query, "_read_batch", read_batch)
    assert await query(world, args) == one
    assert len(batches) == len(ALL) + 1  # one each, and the empty one after the last
    if "calculateTotal" in window:
        assert one["total"] == (3 if window.get("collapseThreads") else 4)


async def test_a_change_during_the_batches_leaves_the_answer_to_one_transaction(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Query Rule 5: the Email state the batches read is not the one the hits were mapped
    at (a refresh wrote between them): the batches' ids are thrown away and one
    transaction answers."""
    monkeypatch.setattr(email_query, "_WALK_MOST", 1)
    world.upstream.hits = {("INBOX", TEXT_MEETING): (1, 2)}  # e1, e3
    real_hits_at, real_run = email_query._hits_at, email_query.run_query
    ran: list[bool] = []

    def hits_at(*args: Any, **kwargs: Any) -> Any:
        seq, hits = real_hits_at(*args, **kwargs)
        return seq - 1, hits  # mapped before the last change

    def run_query(*args: Any, **kwargs: Any) -> Any:
        ran.append(True)
        return real_run(*args, **kwargs)

    monkeypatch.setattr(email_query, "_hits_at", hits_at)
    monkeypatch.setattr(email_query, "run_query", run_query)
    got = await query(world, {"filter": {"text": "meeting"}, "calculateTotal": True})
    assert ran and got["ids"] == ["e3", "e1"] and got["total"] == 2
    assert got["queryState"] == (await query(world, {"limit": 1}))["queryState"]
