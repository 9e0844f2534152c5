"""Email/query filters and sorts (RFC 8621 §4.4.1, §4.4.2): validation, planning, evaluation.

Pure: no I/O.  A filter is split three ways when it is planned:

- the conjunctive part SQL answers with indexes (:class:`~imapjmap.store.email_queries.
  EmailWhere`): mailboxes, dates, sizes, keywords, hasAttachment;
- the terms only the upstream can answer (``text``, ``body``, ``header``): IMAP
  the upstream's search (:mod:`imapjmap.upstream.search`), run before the query;
- everything, evaluated in Python on cache rows by :class:`Evaluator`, once the search
  hits and the thread keyword aggregates are known.  The address and subject conditions
  (and the header part of ``text``) are answered from the cache: a case-insensitive
  substring of the decoded ``Name <address>`` or subject.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from imapjmap.jmap import standard as std
from imapjmap.jmap.args import Comparator
from imapjmap.jmap.errors import MethodError, MethodErrorType, invalid_arguments
from imapjmap.jmap.session import EMAIL_SORT_OPTIONS
from imapjmap.jmap.wire import JsonObject, is_unsigned_int
from imapjmap.store import email_queries as eq
from imapjmap.upstream.search import SearchTerm as SearchTerm  # re-exported: the planner's terms

# the sorts the session advertises (RFC 8621 §1.3.1) are exactly the ones answered here
SORT_PROPERTIES: Final = EMAIL_SORT_OPTIONS
"""What Email/query sorts on (the session's ``emailQuerySortOptions``)."""

KEYWORD_SORTS: Final = frozenset(
    {"hasKeyword", "allInThreadHaveKeyword", "someInThreadHaveKeyword"}
)
THREAD_KEYWORD_CONDITIONS: Final = (
    "allInThreadHaveKeyword",
    "someInThreadHaveKeyword",
    "noneInThreadHaveKeyword",
)
ADDRESS_FIELDS: Final = ("from", "to", "cc", "bcc")
DEFAULT_SORT: Final = (Comparator("receivedAt", is_ascending=False),)

# RFC 8621 §4.1.1: 1-255 of %x21-%x7e except ( ) { ] % * " \
_KEYWORD_RE: Final = re.compile(r"[\x21-\x7e]{1,255}")
_KEYWORD_FORBIDDEN: Final = frozenset('(){]%*"\\')
# RFC 5322 §3.6.8 field name: printable US-ASCII except ":"
_HEADER_NAME_RE: Final = re.compile(r"[\x21-\x39\x3b-\x7e]{1,200}")
_UTC_DATE_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z")
_STRING_CONDITIONS: Final = ("text", "from", "to", "cc", "bcc", "subject", "body")


def is_keyword(value: object) -> bool:
    """Whether ``value`` is a valid keyword (RFC 8621 §4.1.1)."""
    return (
        isinstance(value, str)
        and _KEYWORD_RE.fullmatch(value) is not None
        and not _KEYWORD_FORBIDDEN.intersection(value)
    )


def parse_utc_date(value: str) -> dt.datetime | None:
    """A UTCDate (RFC 8620 §1.4) as an aware datetime, or None when malformed."""
    if not _UTC_DATE_RE.fullmatch(value):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _is_id_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _is_header(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) in (1, 2)
        and all(isinstance(v, str) for v in value)
        and _HEADER_NAME_RE.fullmatch(value[0]) is not None
    )


_CHECKS: Final[Mapping[str, Callable[[Any], bool]]] = {
    "inMailbox": lambda v: isinstance(v, str),
    "inMailboxOtherThan": _is_id_list,
    "before": lambda v: isinstance(v, str) and parse_utc_date(v) is not None,
    "after": lambda v: isinstance(v, str) and parse_utc_date(v) is not None,
    "minSize": is_unsigned_int,
    "maxSize": is_unsigned_int,
    "allInThreadHaveKeyword": is_keyword,
    "someInThreadHaveKeyword": is_keyword,
    "noneInThreadHaveKeyword": is_keyword,
    "hasKeyword": is_keyword,
    "notKeyword": is_keyword,
    "hasAttachment": lambda v: isinstance(v, bool),
    **{name: (lambda v: isinstance(v, str)) for name in _STRING_CONDITIONS},
    "header": _is_header,
}


def validate_condition(condition: JsonObject) -> None:
    """Check one FilterCondition.

    Raises:
        MethodError: unsupportedFilter for an unknown property (CORE-QRY-04);
            invalidArguments for a value of the wrong type or syntax (a bad keyword, a
            malformed UTCDate, a ``header`` that is not [name] or [name, value]).
    """
    for key, value in condition.items():
        check = _CHECKS.get(key)
        if check is None:
            raise MethodError(
                MethodErrorType.UNSUPPORTED_FILTER, f"unknown Email filter property {key[:40]!r}"
            )
        if not check(value):
            raise invalid_arguments(f"Email filter property {key!r} has an invalid value")


def parse_filter(raw: Any) -> std.Filter | None:
    """Validate a raw ``filter`` argument (see :func:`validate_condition`), with the
    trailing ``*`` of each word of a text condition dropped (:func:`without_wildcards`)."""
    return without_wildcards(std.validate_filter(raw, validate_condition))


# A run of "*" ending a word that has something else before it.  Webmails append "*" to
# every word they search for (a prefix, in full-text engines); every text condition here is
# a substring match already, so the "*" adds nothing and would only be searched literally.
# A word made only of "*" has no prefix to stand for and stays a literal search: dropping
# it would leave an empty string, which matches every message.
_TRAILING_WILDCARD: Final = re.compile(r"(?<=[^\s*])\*+(?=\s|$)")


def without_wildcards(filter_: std.Filter | None) -> std.Filter | None:
    """``filter_`` with the trailing ``*`` of each word of ``text``, ``subject``, ``from``,
    ``to``, ``cc``, ``bcc`` and ``body`` dropped (``"invoice*"`` is ``"invoice"``)."""
    return None if filter_ is None else _strip_wildcards(filter_)


def _strip_wildcards(node: std.Filter) -> std.Filter:
    if isinstance(node, std.FilterOperator):
        children = tuple(_strip_wildcards(child) for child in node.conditions)
        return std.FilterOperator(node.operator, children)
    return {
        key: _TRAILING_WILDCARD.sub("", value) if key in _STRING_CONDITIONS else value
        for key, value in node.items()
    }


def parse_sort(sort: Iterable[Comparator]) -> tuple[Comparator, ...]:
    """Check the keyword of the keyword sorts; an empty sort becomes receivedAt descending.

    Raises:
        MethodError: invalidArguments for a keyword sort without a valid ``keyword``.
    """
    out: list[Comparator] = []
    for comparator in sort:
        if comparator.property in KEYWORD_SORTS:
            if not is_keyword(comparator.keyword):
                raise invalid_arguments(f"sorting by {comparator.property} needs a keyword")
            comparator = replace(comparator, keyword=str(comparator.keyword).lower())
        out.append(comparator)
    return tuple(out) or DEFAULT_SORT


# --- planning -----------------------------------------------------------------------------


def search_term(condition_key: str, value: Any) -> SearchTerm | None:
    if condition_key == "text":
        return SearchTerm("TEXT", (value,))
    if condition_key == "body":
        return SearchTerm("BODY", (value,))
    if condition_key == "header":
        return SearchTerm("HEADER", (value[0], value[1] if len(value) > 1 else ""))
    return None


def search_terms(filter_: std.Filter | None) -> set[SearchTerm]:
    out: set[SearchTerm] = set()
    for condition in std.conditions_of(filter_):
        for key, value in condition.items():
            term = search_term(key, value)
            if term is not None:
                out.add(term)
    return out


def search_scope(filter_: std.Filter | None) -> frozenset[str] | None:
    """Mailboxes every matching email is in at least one of (None: any mailbox).

    The IMAP searches run on these only: an email outside them cannot match anyway, and
    one inside is found in whichever of them holds it (its content is the same in each).
    """
    if filter_ is None:
        return None
    if not isinstance(filter_, std.FilterOperator):
        box = filter_.get("inMailbox")
        return frozenset({box}) if isinstance(box, str) else None
    scopes = [search_scope(child) for child in filter_.conditions]
    if filter_.operator == "AND":
        known = [s for s in scopes if s is not None]
        return frozenset.intersection(*known) if known else None
    if filter_.operator == "OR" and scopes and all(s is not None for s in scopes):
        return frozenset().union(*(s for s in scopes if s is not None))
    return None


def _conjuncts(filter_: std.Filter | None) -> tuple[list[JsonObject], bool]:
    """The FilterConditions ANDed at the top of the tree, and whether that is all of it."""
    if filter_ is None:
        return [], True
    if not isinstance(filter_, std.FilterOperator):
        return [filter_], True
    if filter_.operator != "AND":
        return [], False
    out: list[JsonObject] = []
    whole = True
    for child in filter_.conditions:
        conditions, child_whole = _conjuncts(child)
        out += conditions
        whole = whole and child_whole
    return out, whole


def _ts(value: str) -> int:
    # received_at is whole seconds: "< 10.5" is "< 11", ">= 10.5" is ">= 11"
    parsed = parse_utc_date(value)
    assert parsed is not None  # validated
    return math.ceil(parsed.timestamp())


def _tighter(pick: Callable[[int, int], int], bound: int, current: int | None) -> int:
    return bound if current is None else pick(bound, current)


def _narrow(where: eq.EmailWhere, key: str, value: Any) -> eq.EmailWhere | None:
    """``where`` AND one condition property, or None when SQL cannot express it."""
    w = where
    if key == "inMailbox":
        return replace(w, in_mailboxes=(*w.in_mailboxes, value))
    if key == "inMailboxOtherThan":
        return replace(w, in_other_than=(*w.in_other_than, tuple(value)))
    if key == "before":
        return replace(w, received_before=_tighter(min, _ts(value), w.received_before))
    if key == "after":
        return replace(w, received_since=_tighter(max, _ts(value), w.received_since))
    if key == "minSize":
        return replace(w, size_at_least=_tighter(max, value, w.size_at_least))
    if key == "maxSize":
        return replace(w, size_below=_tighter(min, value, w.size_below))
    if key == "hasAttachment":
        if w.has_attachment is not None and w.has_attachment != value:
            return replace(w, never=True)
        return replace(w, has_attachment=value)
    if key == "hasKeyword":
        return replace(w, with_keywords=(*w.with_keywords, value.lower()))
    if key == "notKeyword":
        return replace(w, without_keywords=(*w.without_keywords, value.lower()))
    return None


def sql_where(filter_: std.Filter | None) -> tuple[eq.EmailWhere, bool]:
    """The part of the filter SQL answers, and whether it is the whole filter.

    An address or subject condition ANDed at the top adds a header-text narrowing
    (``headers_like``): SQL then reads only the rows that may match, and Python decides.
    """
    conditions, exact = _conjuncts(filter_)
    where = eq.EmailWhere()
    for condition in conditions:
        for key, value in condition.items():
            narrowed = _narrow(where, key, value)
            if narrowed is not None:
                where = narrowed
                continue
            exact = False
            needle = eq.headers_needle(value) if key in (*ADDRESS_FIELDS, "subject") else None
            if needle is not None:
                where = replace(where, headers_like=(*where.headers_like, needle))
    return where, exact


def required_search_terms(filter_: std.Filter | None) -> list[SearchTerm]:
    """The IMAP-only terms (``body``, ``header``) ANDed at the top: every result is a hit of
    each, so their hits bound the candidates (``text`` also matches cached headers)."""
    conditions, _ = _conjuncts(filter_)
    out: list[SearchTerm] = []
    for condition in conditions:
        for key in ("body", "header"):
            if key in condition:
                term = search_term(key, condition[key])
                if term is not None:
                    out.append(term)
    return out


def text_narrowing(filter_: std.Filter | None) -> list[tuple[SearchTerm, str]]:
    """The ``text`` conditions ANDed at the top whose matches SQL can narrow to an IMAP hit
    or a header containing the needle (:func:`~imapjmap.store.email_queries.headers_needle`),
    so that a text query loads its possible matches, not every Email of the mailbox."""
    conditions, _ = _conjuncts(filter_)
    out: list[tuple[SearchTerm, str]] = []
    for condition in conditions:
        value = condition.get("text")
        if not isinstance(value, str):
            continue
        term = search_term("text", value)
        needle = eq.headers_needle(value)
        if term is not None and needle is not None:
            out.append((term, needle))
    return out


def sql_order(sort: tuple[Comparator, ...]) -> eq.Order | None:
    """The SQL order for a sort SQL can do by itself (receivedAt or size), else None."""
    if len(sort) != 1 or sort[0].property not in ("receivedAt", "size"):
        return None
    column: eq.OrderColumn = "received_at" if sort[0].property == "receivedAt" else "size"
    return eq.Order(column, descending=not sort[0].is_ascending)


def thread_keywords_needed(
    filter_: std.Filter | None, sort: Iterable[Comparator]
) -> frozenset[str]:
    """Keywords whose per-thread aggregates the filter or sort needs."""
    out = {c.keyword for c in sort if c.property in THREAD_KEYWORD_CONDITIONS and c.keyword}
    for condition in std.conditions_of(filter_):
        out.update(str(condition[k]).lower() for k in THREAD_KEYWORD_CONDITIONS if k in condition)
    return frozenset(out)


def needs_headers(filter_: std.Filter | None) -> bool:
    """Whether evaluating the filter reads the cached header properties."""
    wanted = {"text", "subject", *ADDRESS_FIELDS}
    return any(wanted.intersection(c) for c in std.conditions_of(filter_))


# --- evaluation ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ThreadKeywords:
    """Per keyword: the threads where every / some live email has it."""

    every: dict[str, set[str]] = field(default_factory=dict)
    some: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def build(
        cls, members: Mapping[str, list[dict[str, bool]]], keywords: Iterable[str]
    ) -> ThreadKeywords:
        every: dict[str, set[str]] = {}
        some: dict[str, set[str]] = {}
        for keyword in keywords:
            every[keyword] = {t for t, kws in members.items() if all(keyword in k for k in kws)}
            some[keyword] = {t for t, kws in members.items() if any(keyword in k for k in kws)}
        return cls(every, some)


def _date_value(value: str | None) -> float | None:
    """A JMAP Date as a timestamp, so dates in different offsets sort correctly."""
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@functools.lru_cache(maxsize=1024)
def _folded(needle: str) -> str:
    return needle.casefold()


def substring_matches(haystack: str | None, needle: str) -> bool:
    # A query tests the same few needles against every candidate row: fold each once, and
    # skip rows too short to hold it (full case folding makes a character at most three).
    if haystack is None or len(needle) > 3 * len(haystack):
        return False
    return _folded(needle) in haystack.casefold()


def address_matches(addresses: Any, needle: str) -> bool:
    """Whether ``needle`` is a substring of any ``Name <address>`` (case-insensitive)."""
    if not isinstance(addresses, list):
        return False
    for address in addresses:
        if isinstance(address, dict):
            text = f"{address.get('name') or ''} <{address.get('email') or ''}>"
            if substring_matches(text, needle):
                return True
    return False


def _headers_match(headers: Mapping[str, Any], needle: str) -> bool:
    subject = headers.get("subject")
    if isinstance(subject, str) and substring_matches(subject, needle):
        return True
    return any(address_matches(headers.get(f), needle) for f in ADDRESS_FIELDS)


@dataclass(frozen=True, slots=True)
class Evaluator:
    """Decides FilterConditions on :class:`~imapjmap.store.email_queries.Candidate` rows."""

    search_hits: Mapping[SearchTerm, set[str]] = field(default_factory=dict)
    threads: ThreadKeywords = field(default_factory=ThreadKeywords)

    def matches(self, filter_: std.Filter | None, row: eq.Candidate) -> bool:
        return std.matches(filter_, lambda c: self._condition(c, row))

    def _condition(self, condition: JsonObject, row: eq.Candidate) -> bool:
        return all(self._property(k, v, row) for k, v in condition.items())

    def _hit(self, key: str, value: Any, row: eq.Candidate) -> bool:
        term = search_term(key, value)
        return term is not None and row.id in self.search_hits.get(term, ())

    def _property(self, key: str, value: Any, row: eq.Candidate) -> bool:  # noqa: C901
        if key == "inMailbox":
            return value in row.mailbox_ids
        if key == "inMailboxOtherThan":
            return any(m not in value for m in row.mailbox_ids)
        if key == "before":
            return row.received_at < _ts(value)
        if key == "after":
            return row.received_at >= _ts(value)
        if key == "minSize":
            return bool(row.size >= value)
        if key == "maxSize":
            return bool(row.size < value)
        if key == "hasAttachment":
            return row.has_attachment is value
        if key in ("hasKeyword", "notKeyword"):
            return bool((value.lower() in row.keywords) == (key == "hasKeyword"))
        if key in THREAD_KEYWORD_CONDITIONS:
            return self._thread_keyword(key, value.lower(), row.thread_id)
        if key in ADDRESS_FIELDS:
            return address_matches(row.headers.get(key), value)
        if key == "subject":
            subject = row.headers.get("subject")
            return isinstance(subject, str) and substring_matches(subject, value)
        if key == "text":
            return self._hit(key, value, row) or _headers_match(row.headers, value)
        return self._hit(key, value, row)  # body, header

    def _thread_keyword(self, key: str, keyword: str, thread_id: str) -> bool:
        if key == "allInThreadHaveKeyword":
            return thread_id in self.threads.every.get(keyword, ())
        has_some = thread_id in self.threads.some.get(keyword, ())
        return has_some if key == "someInThreadHaveKeyword" else not has_some

    def sort_value(self, row: eq.Candidate, comparator: Comparator) -> std.SortValue:
        prop, keyword = comparator.property, comparator.keyword or ""
        if prop == "receivedAt":
            return row.received_at
        if prop == "size":
            return row.size
        if prop == "sentAt":
            return _date_value(row.sent_at)
        if prop == "hasKeyword":
            return keyword in row.keywords
        if prop == "allInThreadHaveKeyword":
            return row.thread_id in self.threads.every.get(keyword, ())
        if prop == "someInThreadHaveKeyword":
            return row.thread_id in self.threads.some.get(keyword, ())
        return {"from": row.sort_from, "to": row.sort_to, "subject": row.sort_subject}[prop]
