"""SearchSnippet/get (RFC 8621 §5; checklist SNP-*).

For each email: ``subject`` is the subject with the filter's ``text``/``subject`` terms
marked, or null when none occurs in it; ``preview`` is a piece of the body with the
``text``/``body`` terms marked, or null when none occurs.  Both are HTML-escaped, with
``<mark></mark>`` around each match.

Terms: each value is split into words, a double-quoted phrase staying one term; matching is
case-insensitive and on substrings, like the filter.  Terms under a ``NOT`` are not
highlighted (they are what the email does NOT contain).  The body piece is the cached
preview when a term occurs in it; otherwise the message's text body is read and the piece
is cut around the first match.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from imapjmap.jmap import responses
from imapjmap.jmap import standard as std
from imapjmap.jmap.dispatch import Call
from imapjmap.jmap.errors import MethodError, MethodErrorType, invalid_arguments
from imapjmap.jmap.limits import check_filter
from imapjmap.jmap.wire import Json, JsonObject
from imapjmap.methods import standard
from imapjmap.methods.context import MethodContext
from imapjmap.methods.email.get import fetch_all
from imapjmap.mime import body as mime_body
from imapjmap.mime import email as mime_email
from imapjmap.query import email_filter as ef
from imapjmap.store import emails as em

_ARGUMENTS: Final = frozenset({"accountId", "filter", "emailIds"})
_PIECE: Final = 256  # characters of body shown around a match
_LEAD: Final = 40  # characters kept before the first match
_PHRASE: Final = re.compile(r'"([^"]*)"|(\S+)')


def terms_of(value: str) -> list[str]:
    """Words and double-quoted phrases of a filter value."""
    out: list[str] = []
    for match in _PHRASE.finditer(value):
        term = (match.group(1) if match.group(1) is not None else match.group(2)).strip()
        if term:
            out.append(term)
    return out


@dataclass(frozen=True, slots=True)
class Terms:
    subject: tuple[str, ...] = ()
    body: tuple[str, ...] = ()


def collect_terms(filter_: std.Filter | None) -> Terms:
    """The positive text terms of a filter (Terms under NOT are skipped)."""
    subject: list[str] = []
    body: list[str] = []

    def visit(node: std.Filter | None) -> None:
        if node is None:
            return
        if isinstance(node, std.FilterOperator):
            if node.operator != "NOT":
                for child in node.conditions:
                    visit(child)
            return
        for key in ("text", "subject"):
            if isinstance(node.get(key), str):
                subject.extend(terms_of(node[key]))
        for key in ("text", "body"):
            if isinstance(node.get(key), str):
                body.extend(terms_of(node[key]))

    visit(filter_)
    return Terms(tuple(dict.fromkeys(subject)), tuple(dict.fromkeys(body)))


def pattern_of(terms: Iterable[str]) -> re.Pattern[str] | None:
    ordered = sorted(set(terms), key=lambda t: (-len(t), t))
    if not ordered:
        return None
    return re.compile("|".join(re.escape(t) for t in ordered), re.IGNORECASE)


def mark(text: str, pattern: re.Pattern[str] | None) -> str | None:
    """HTML-escaped ``text`` with every match wrapped in <mark>; None when nothing matches."""
    if pattern is None or not text:
        return None
    out: list[str] = []
    last = 0
    for match in pattern.finditer(text):
        if match.end() == match.start():
            continue
        out.append(html.escape(text[last : match.start()], quote=False))
        out.append("<mark>" + html.escape(match.group(), quote=False) + "</mark>")
        last = match.end()
    if not last:
        return None
    out.append(html.escape(text[last:], quote=False))
    return "".join(out)


def excerpt(text: str, pattern: re.Pattern[str] | None) -> str | None:
    """A piece of ``text`` around its first match, marked; None when nothing matches."""
    if pattern is None:
        return None
    collapsed = " ".join(text.split())
    first = pattern.search(collapsed)
    if first is None:
        return None
    start = max(0, first.start() - _LEAD)
    if start:
        space = collapsed.find(" ", start, first.start())
        start = space + 1 if space != -1 else start
    return mark(collapsed[start : start + _PIECE], pattern)


def body_text(raw: bytes) -> str:
    """The plain text of the message's text body (HTML converted when that is all)."""
    props = mime_email.email_properties(
        raw,
        properties=["textBody", "bodyValues"],
        body_properties=["partId", "type"],
        fetch_text=True,
        fetch_html=False,
        fetch_all=False,
        max_body_value_bytes=0,
        blob_prefix=" ",
    )
    values: dict[str, Any] = props.get("bodyValues") or {}
    pieces: list[str] = []
    for part in props.get("textBody") or []:
        value = values.get(part.get("partId") or "", {}).get("value")
        if isinstance(value, str):
            is_html = part.get("type") == "text/html"
            pieces.append(mime_body.html_to_text(value) if is_html else value)
    return "\n".join(pieces)


def _parse_args(ctx: MethodContext, call: Call) -> tuple[std.Filter | None, list[str]]:
    raw = call.args
    unknown = set(raw) - _ARGUMENTS
    if unknown:
        raise invalid_arguments(f"unknown argument {sorted(unknown)[0][:60]!r}")
    ids = raw.get("emailIds")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise invalid_arguments("'emailIds' is required and must be an array of Ids")
    limit = ctx.cfg.limits.max_objects_in_get
    if len(ids) > limit:
        raise MethodError(
            MethodErrorType.REQUEST_TOO_LARGE,
            f"{len(ids)} emailIds exceed maxObjectsInGet {limit}",
        )
    filter_raw: Json = raw.get("filter")
    if filter_raw is not None and not isinstance(filter_raw, dict):
        raise invalid_arguments("'filter' must be a FilterOperator, a FilterCondition or null")
    check_filter(filter_raw, ctx.query_limits)
    return ef.parse_filter(filter_raw), standard.resolve_ids(call, list(dict.fromkeys(ids)))


async def search_snippet_get(ctx: MethodContext, call: Call) -> JsonObject:
    filter_, ids = _parse_args(ctx, call)
    terms = collect_terms(filter_)
    await ctx.refresh()
    found = await ctx.read(lambda tx: em.emails(tx, ctx.account_id, ids))
    subject_pattern, body_pattern = pattern_of(terms.subject), pattern_of(terms.body)
    snippets: dict[str, JsonObject] = {}
    unread: list[str] = []
    for email_id in ids:
        row = found.get(email_id)
        if row is None:
            continue
        preview = mark(row.preview or "", body_pattern)
        if preview is None and body_pattern is not None:
            unread.append(email_id)
        snippets[email_id] = {
            "emailId": email_id,
            "subject": mark(row.subject or "", subject_pattern),
            "preview": preview,
        }
    for email_id, raw in (await fetch_all(ctx, unread)).items():
        if raw is not None:
            snippets[email_id]["preview"] = excerpt(body_text(raw), body_pattern)
    # RFC 8621 §5.1: notFound is null, not [], when every id was found
    not_found = [i for i in ids if i not in found]
    return responses.get_response(
        list(snippets.values()), not_found, account_id=ctx.account_id, null_when_all_found=True
    )
