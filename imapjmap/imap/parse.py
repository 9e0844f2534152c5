"""Turn the raw responses of one IMAP command into a typed :class:`Reply`.

Input convention (what :mod:`imapjmap.imap.framing` produces):

* ``untagged``: one entry per untagged response, each a tuple of chunks
  ``(line0, literal0, line1, ..., lineN)``; even chunks are line text without CRLF, odd
  chunks are literal contents, the ``{n}`` marker stays at the end of the line before.
  The leading ``"* "`` has been removed from ``line0``.
* ``status`` / ``text``: the tagged completion, e.g. ``"OK"`` and
  ``b"[READ-WRITE] Select completed."``.

Each untagged response is classified by its first word(s) without tokenising (so the free
text of ``* OK`` lines never meets the lexer), then handed to one small function per kind.
Every error is raised as :class:`ImapProtocolViolation`: the helpers raise ValueError and
friends, and :func:`parse_reply` converts them in one place, adding an excerpt.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Final

from imapjmap.errors import ImapProtocolViolation
from imapjmap.imap import parse_fetch
from imapjmap.imap.lexer import (
    Value,
    items,
    lex,
    lex_fast,
    nstring,
    number,
    render,
    string,
)
from imapjmap.imap.models import (
    FetchRecord,
    ListEntry,
    MailboxStatus,
    Quota,
    Reply,
    ResponseCode,
    SearchResult,
    StatusResponse,
    TaggedResult,
    UidSet,
    Vanished,
)
from imapjmap.imap.utf7 import decode_mailbox_name

__all__ = [
    "fetched",
    "merge_fetches",
    "parse_capabilities",
    "parse_internaldate",
    "parse_reply",
    "parse_response_code",
    "parse_tagged",
    "parse_uid_set",
]

# Exceptions that mean "this input is malformed" when raised by the helpers.  UnicodeError
# and binascii.Error are ValueErrors; RecursionError guards the recursive consumers.
_MALFORMED = (ValueError, IndexError, TypeError, KeyError, AttributeError, RecursionError)

# ESEARCH ALL is a compressed set that a caller may expand; a broken or hostile server
# could name 2**32 UIDs in a few bytes.  No real mailbox holds this many messages.
MAX_SEARCH_IDS = 10_000_000


def _excerpt(data: bytes | str, limit: int = 80) -> str:
    return repr(data[:limit]) + ("..." if len(data) > limit else "")


# -- tagged line, response codes, small values ---------------------------------------------


def parse_response_code(text: bytes | str) -> tuple[ResponseCode | None, str]:
    """Split ``[CODE args] human text`` into the code and the text.

    A ``[`` without a closing ``]`` is taken as plain text: the line is still usable and
    refusing it would turn a cosmetic server bug into a failed command.

    Returns:
        ``(ResponseCode(name upper-cased, raw args), rest of the text)``, or
        ``(None, text)`` when there is no code.  Bytes are decoded as UTF-8 with
        ``surrogateescape``; this function never raises.
    """
    line = text.decode("utf-8", "surrogateescape") if isinstance(text, bytes) else text
    line = line.lstrip(" ")
    if not line.startswith("["):
        return None, line
    end = line.find("]")
    if end < 0:
        return None, line
    name, _, args = line[1:end].partition(" ")
    if not name:
        return None, line
    return ResponseCode(name.upper(), args.strip()), line[end + 1 :].lstrip(" ")


def parse_tagged(status: str, text: bytes) -> TaggedResult:
    """Parse the tagged completion of a command.

    Raises:
        ImapProtocolViolation: ``status`` is not OK, NO or BAD.
    """
    upper = status.upper()
    if upper not in ("OK", "NO", "BAD"):
        raise ImapProtocolViolation(f"tagged status {status!r} is not OK/NO/BAD")
    code, rest = parse_response_code(text)
    return TaggedResult(upper, code, rest)


def parse_capabilities(text: bytes | str) -> frozenset[str]:
    """Upper-cased capability names from ``CAPABILITY`` data or a ``[CAPABILITY ...]`` code.

    A leading ``CAPABILITY`` word (the response name) is dropped.  Never raises.
    """
    line = text.decode("utf-8", "surrogateescape") if isinstance(text, bytes) else text
    words = line.upper().split()
    if words and words[0] == "CAPABILITY":
        words = words[1:]
    return frozenset(words)


def parse_id(text: str) -> dict[str, str]:
    """The fields of an RFC 2971 ``ID`` response (``ID ("name" "Dovecot" ...)``, as
    ``Reply.other`` holds it): names as sent, NIL values left out.  A server's answer
    only informs (which server this is), so anything malformed gives ``{}``; never raises.
    """
    try:
        values = lex((text.encode("utf-8", "surrogateescape"),))
    except ImapProtocolViolation:
        return {}
    if len(values) != 2 or not isinstance(values[0], str) or values[0].upper() != "ID":
        return {}
    fields = values[1]
    if not isinstance(fields, list) or len(fields) % 2:
        return {}
    pairs = zip(fields[::2], fields[1::2], strict=True)
    return {k: v for k, v in pairs if isinstance(k, str) and isinstance(v, str)}


_RANGE = re.compile(r"([0-9]+)(?::([0-9]+))?\Z", re.ASCII)


def parse_uid_set(text: str) -> UidSet:
    """Parse a concrete sequence set (``1:5,9,12:10``) into sorted, merged ranges.

    ``*`` is refused: servers never send it in responses (COPYUID, VANISHED, ESEARCH), and a
    set that contains it cannot be expanded without knowing the mailbox.

    Raises:
        ImapProtocolViolation: empty text, ``*``, zero, or anything but numbers, ``:`` and
            ``,``.
    """
    ranges: list[tuple[int, int]] = []
    for piece in text.split(","):
        match = _RANGE.match(piece)
        if match is None:
            raise ImapProtocolViolation(f"bad sequence set {_excerpt(text)}")
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) else low
        if low == 0 or high == 0:
            raise ImapProtocolViolation(f"zero in sequence set {_excerpt(text)}")
        ranges.append((min(low, high), max(low, high)))
    ranges.sort()
    merged = [ranges[0]]
    for low, high in ranges[1:]:
        last_low, last_high = merged[-1]
        if low <= last_high + 1:  # overlapping or adjacent: 1:3,4 is 1:4
            merged[-1] = (last_low, max(last_high, high))
        else:
            merged.append((low, high))
    return UidSet(tuple(merged))


def parse_internaldate(s: str) -> dt.datetime:
    """Parse an IMAP date-time (``"17-Jul-1996 02:44:25 -0700"``, quotes optional).

    Raises:
        ImapProtocolViolation: not an IMAP date-time.
    """
    try:
        return parse_fetch.internaldate(s[1:-1] if s[:1] == '"' else s)
    except (ValueError, KeyError) as exc:
        raise ImapProtocolViolation(f"bad date-time {_excerpt(s)}") from exc


# -- collecting one reply ------------------------------------------------------------------


@dataclass(slots=True)
class _Builder:
    """Mutable accumulator; :meth:`build` freezes it into a :class:`Reply`."""

    fetches: list[FetchRecord] = field(default_factory=list)
    lists: list[ListEntry] = field(default_factory=list)
    statuses: list[MailboxStatus] = field(default_factory=list)
    vanished: list[Vanished] = field(default_factory=list)
    searches: list[SearchResult] = field(default_factory=list)
    capabilities: frozenset[str] | None = None
    enabled: frozenset[str] | None = None
    flags: tuple[str, ...] | None = None
    exists: int | None = None
    expunged: list[int] = field(default_factory=list)
    myrights: dict[str, str] = field(default_factory=dict)
    quotas: list[Quota] = field(default_factory=list)
    quotaroots: dict[str, tuple[str, ...]] = field(default_factory=dict)
    namespaces: tuple[tuple[tuple[str, str | None], ...], ...] | None = None
    statuses_untagged: list[StatusResponse] = field(default_factory=list)
    codes: list[ResponseCode] = field(default_factory=list)
    other: list[str] = field(default_factory=list)

    def build(self, tagged: TaggedResult) -> Reply:
        codes = [*self.codes, tagged.code] if tagged.code else self.codes
        capabilities = self.capabilities
        if capabilities is None:
            # LOGIN and the greeting announce capabilities as a response code instead.
            for code in reversed(codes):
                if code.name == "CAPABILITY":
                    capabilities = parse_capabilities(code.args)
                    break
        return Reply(
            tagged=tagged,
            fetches=tuple(self.fetches),
            lists=tuple(self.lists),
            statuses=tuple(self.statuses),
            vanished=tuple(self.vanished),
            searches=tuple(self.searches),
            capabilities=capabilities,
            enabled=self.enabled,
            flags=self.flags,
            exists=self.exists,
            expunged=tuple(self.expunged),
            myrights=self.myrights,
            quotas=tuple(self.quotas),
            quotaroots=self.quotaroots,
            namespaces=self.namespaces,
            statuses_untagged=tuple(self.statuses_untagged),
            codes=tuple(codes),
            other=tuple(self.other),
        )


# "* 12 FETCH ..." / "* OK ..." / "* SEARCH": an optional number, then the response name.
_HEAD = re.compile(rb"(?:([0-9]+) )?([A-Za-z][A-Za-z0-9.=-]*)(?: |\Z)")


def parse_reply(untagged: Sequence[Sequence[bytes]], status: str, text: bytes) -> Reply:
    """Parse everything one command produced.

    Args:
        untagged: the untagged responses in arrival order (see the module docstring).
        status: ``"OK"``, ``"NO"`` or ``"BAD"`` from the tagged line.
        text: the rest of the tagged line after the status.

    Returns:
        The :class:`Reply`.  Untagged kinds this module does not model (ID, SORT, THREAD,
        METADATA, ...) are in ``Reply.other`` as text; ``n RECENT`` is dropped (gone in
        IMAP4rev2, meaningless to JMAP).  ``capabilities`` comes from an untagged
        CAPABILITY, else from a ``[CAPABILITY ...]`` code (greeting, LOGIN).  Mailbox
        names are decoded and any spelling of INBOX becomes ``"INBOX"``.

    Raises:
        ImapProtocolViolation: any response that cannot be parsed (the message names the
            response kind and quotes its start), or a bad tagged status.
    """
    builder = _Builder()
    for chunks in untagged:
        kind = b"?"
        try:
            head = _HEAD.match(chunks[0]) if chunks else None
            if head is None:
                raise ImapProtocolViolation(f"untagged response without a name: {_first(chunks)}")
            kind = head.group(2).upper()
            if head.group(1) is not None:
                _numbered(builder, int(head.group(1)), kind, chunks, head.end())
            else:
                handler = _HANDLERS.get(kind)
                if handler is None:
                    builder.other.append(_raw_text(chunks))
                else:
                    handler(builder, chunks, head.end())
        except ImapProtocolViolation:
            raise
        except _MALFORMED as exc:
            message = f"cannot parse {kind.decode('ascii', 'replace')} response ({exc})"
            raise ImapProtocolViolation(f"{message}: {_first(chunks)}") from exc
    return builder.build(parse_tagged(status, text))


def fetched(reply: Reply, uids: Collection[int]) -> list[FetchRecord]:
    """The records of ``uids`` in a ``UID FETCH`` reply, a message's items merged when the
    server split them over several FETCH responses.

    A UID the reply also reports ``VANISHED`` is left out: a message expunged while the
    server answered may come as a placeholder FETCH (Dovecot's has no X-GUID and size 0)
    followed by its VANISHED; it is gone, not fetched.
    """
    wanted = set(uids) - {uid for v in reply.vanished for uid in v.uids}
    return [r for r in merge_fetches(reply.fetches) if r.uid in wanted]


def merge_fetches(fetches: Sequence[FetchRecord]) -> list[FetchRecord]:
    """One record per message: servers may split one message's items over several FETCH
    responses (an item present in a later one wins)."""
    by_seq: dict[int, FetchRecord] = {}
    for record in fetches:
        old = by_seq.get(record.seq)
        if old is None:
            by_seq[record.seq] = record
            continue
        merged = {
            f.name: getattr(record, f.name)
            if getattr(record, f.name) not in (None, {})
            else getattr(old, f.name)
            for f in dataclasses.fields(record)
        }
        merged["sections"] = {**old.sections, **record.sections}
        by_seq[record.seq] = FetchRecord(**merged)
    return list(by_seq.values())


def _first(chunks: Sequence[bytes]) -> str:
    return _excerpt(chunks[0]) if chunks else "<empty>"


def _raw_text(chunks: Sequence[bytes]) -> str:
    """The response as it was on the wire (literals with their CRLF), decoded."""
    parts = [c + b"\r\n" if i % 2 == 0 and i < len(chunks) - 1 else c for i, c in enumerate(chunks)]
    return b"".join(parts).decode("utf-8", "surrogateescape")


def _text(chunks: Sequence[bytes], start: int) -> bytes:
    """Everything after the response name; status text and capabilities have no literals."""
    if len(chunks) == 1:
        return chunks[0][start:]
    return _raw_text(chunks).encode("utf-8", "surrogateescape")[start:]


def _fetch(num: int, chunks: Sequence[bytes], at: int) -> FetchRecord:
    values = lex_fast(chunks, at)
    if values is None:  # something lex_fast does not vouch for: the exact lexer
        values = lex(chunks, at)
    if len(values) != 1:
        raise ValueError("FETCH data is not one list")
    return parse_fetch.fetch(num, values[0])


# Dovecot's FETCH of a message expunged while it answers gives an empty X-GUID
# (``X-GUID  ENVELOPE ...``), then ``VANISHED`` and ``OK [EXPUNGEISSUED]``.
_EMPTY_X_GUID: Final = re.compile(rb"X-GUID (?=[ )])")


def _numbered(builder: _Builder, num: int, kind: bytes, chunks: Sequence[bytes], at: int) -> None:
    if kind == b"FETCH":
        try:
            record = _fetch(num, chunks, at)
        except ValueError:
            if not chunks or not _EMPTY_X_GUID.search(chunks[0]):
                raise
            fixed = _EMPTY_X_GUID.sub(b"X-GUID NIL", chunks[0], count=1)
            record = _fetch(num, (fixed, *chunks[1:]), at)
        builder.fetches.append(record)
    elif kind == b"EXISTS":
        builder.exists = num
    elif kind == b"EXPUNGE":
        builder.expunged.append(num)
    elif kind != b"RECENT":  # RECENT is gone in IMAP4rev2 and means nothing to JMAP
        builder.other.append(_raw_text(chunks))


# -- one function per untagged kind ---------------------------------------------------------


def _on_status_response(builder: _Builder, chunks: Sequence[bytes], at: int) -> None:
    status = chunks[0][:at].strip().upper().decode("ascii")
    code, rest = parse_response_code(_text(chunks, at))
    builder.statuses_untagged.append(StatusResponse(status, code, rest))
    if code is not None:
        builder.codes.append(code)


def _on_capability(builder: _Builder, chunks: Sequence[bytes], at: int) -> None:
    builder.capabilities = parse_capabilities(_text(chunks, at))


def _on_enabled(builder: _Builder, chunks: Sequence[bytes], at: int) -> None:
    enabled = parse_capabilities(_text(chunks, at))
    builder.enabled = enabled | (builder.enabled or frozenset())


def _on_flags(builder: _Builder, chunks: Sequence[bytes], at: int) -> None:
    values = lex(chunks, at)
    flags = items(values[0])
    builder.flags = tuple(string(f) for f in flags)


def _mailbox(value: Value) -> str:
    """A mailbox name as the user sees it; INBOX is case-insensitive (RFC 3501 §5.1)."""
    raw = value if type(value) is bytes else string(value)
    name = decode_mailbox_name(raw)
    return "INBOX" if name.upper() == "INBOX" else name


def _on_list(builder: _Builder, chunks: Sequence[bytes], at: int) -> None:
    values = lex(chunks, at)
    if len(values) < 3:
        raise ValueError("LIST needs attributes, delimiter and name")
    attributes = frozenset(string(a) for a in items(values[0]))
    delimiter = nstring(values[1])
    extended: dict[str, str] = {}
    if len(values) > 3:
        data = items(values[3])
        for index in range(0, len(data) - 1, 2):
            key = string(data[index]).upper()
            value = data[index + 1]
            if key == "OLDNAME":
                # RFC 5465: the name before a rename; decoded, since that is its only use.
                extended[key] = _mailbox(items(value)[0])
            else:
                extended[key] = render(value)
    builder.lists.append(ListEntry(_mailbox(values[2]), delimiter, attributes, extended))


_STATUS_NUMBERS = {
    "MESSAGES": "messages",
    "RECENT": "recent",
    "UIDNEXT": "uidnext",
    "UIDVALIDITY": "uidvalidity",
    "UNSEEN": "unseen",
    "HIGHESTMODSEQ": "highestmodseq",
    "SIZE": "size",
}


def _on_status(builder: _Builder, chunks: Sequence[bytes], at: int) -> None:
    values = lex(chunks, at)
    if len(values) != 2:
        raise ValueError("STATUS needs a name and one list")
    data = items(values[1])
    fields: dict[str, int | str | None] = {}
    for index in range(0, len(data) - 1, 2):
        key = string(data[index]).upper()
        value = data[index + 1]
        if key in _STATUS_NUMBERS:
            fields[_STATUS_NUMBERS[key]] = number(value)
        elif key == "MAILBOXID":  # RFC 8474: MAILBOXID (F2212ea87...)
            fields["mailboxid"] = string(items(value)[0])
        elif key == "X-GUID":
            fields["x_guid"] = nstring(value)
    builder.statuses.append(MailboxStatus(_mailbox(values[0]), **fields))  # type: ignore[arg-type]


def _on_search(builder: _Builder, chunks: Sequence[bytes], at: int) -> None:
    ids: list[int] = []
    modseq: int | None = None
    for value in lex(chunks, at):
        if type(value) is list:  # (MODSEQ n), RFC 7162 §3.1.5
            if len(value) == 2 and string(value[0]).upper() == "MODSEQ":
                modseq = number(value[1])
        else:
            ids.append(number(value))
    builder.searches.append(SearchResult(ids=tuple(ids), modseq=modseq))


def _on_esearch(builder: _Builder, chunks: Sequence[bytes], at: int) -> None:
    values = lex(chunks, at)
    result: dict[str, object] = {}
    index = 0
    if values and type(values[0]) is list:  # (TAG "A12")
        correlator = values[0]
        if len(correlator) == 2 and string(correlator[0]).upper() == "TAG":
            result["tag"] = string(correlator[1])
        index = 1
    marker = values[index] if index < len(values) else None
    if type(marker) is str and marker.upper() == "UID":
        result["uid"] = True
        index += 1
    for pos in range(index, len(values) - 1, 2):
        key = string(values[pos]).upper()
        value = values[pos + 1]
        if key == "ALL":
            uids = parse_uid_set(string(value))
            if len(uids) > MAX_SEARCH_IDS:
                raise ValueError(f"ESEARCH ALL names {len(uids)} messages")
            result["all"] = uids
        elif key in ("COUNT", "MIN", "MAX", "MODSEQ"):
            result[key.lower()] = number(value)
        # PARTIAL, RELEVANCY and other RFC 9394-style returns are not modelled.
    builder.searches.append(SearchResult(**result))  # type: ignore[arg-type]


def _on_vanished(builder: _Builder, chunks: Sequence[bytes], at: int) -> None:
    values = lex(chunks, at)
    earlier = False
    if values and type(values[0]) is list:
        earlier = [string(v).upper() for v in values[0]] == ["EARLIER"]
        values = values[1:]
    if len(values) != 1:
        raise ValueError("VANISHED needs one sequence set")
    builder.vanished.append(Vanished(earlier, parse_uid_set(string(values[0]))))


def _on_myrights(builder: _Builder, chunks: Sequence[bytes], at: int) -> None:
    values = lex(chunks, at)
    if len(values) != 2:
        raise ValueError("MYRIGHTS needs a name and rights")
    builder.myrights[_mailbox(values[0])] = string(values[1])


def _on_quota(builder: _Builder, chunks: Sequence[bytes], at: int) -> None:
    values = lex(chunks, at)
    if len(values) != 2:
        raise ValueError("QUOTA needs a root and one list")
    data = items(values[1])
    if len(data) % 3:
        raise ValueError("QUOTA resources come in threes")
    resources = {
        string(data[i]).upper(): (number(data[i + 1]), number(data[i + 2]))
        for i in range(0, len(data), 3)
    }
    builder.quotas.append(Quota(string(values[0]), resources))


def _on_quotaroot(builder: _Builder, chunks: Sequence[bytes], at: int) -> None:
    values = lex(chunks, at)
    if not values:
        raise ValueError("QUOTAROOT needs a mailbox name")
    builder.quotaroots[_mailbox(values[0])] = tuple(string(v) for v in values[1:])


def _on_namespace(builder: _Builder, chunks: Sequence[bytes], at: int) -> None:
    values = lex(chunks, at)
    if len(values) != 3:
        raise ValueError("NAMESPACE needs three lists (personal, other users, shared)")
    builder.namespaces = tuple(
        tuple((_namespace_prefix(items(d)[0]), nstring(items(d)[1])) for d in items(group))
        for group in values
    )


def _namespace_prefix(value: Value) -> str:
    # A prefix is a mailbox name fragment, so it is modified UTF-7, but "INBOX." must stay
    # as sent: _mailbox's INBOX folding applies to whole names only.
    raw = value if type(value) is bytes else string(value)
    return decode_mailbox_name(raw)


_Handler = Callable[[_Builder, Sequence[bytes], int], None]
_HANDLERS: dict[bytes, _Handler] = {
    b"OK": _on_status_response,
    b"NO": _on_status_response,
    b"BAD": _on_status_response,
    b"BYE": _on_status_response,
    b"PREAUTH": _on_status_response,
    b"CAPABILITY": _on_capability,
    b"ENABLED": _on_enabled,
    b"FLAGS": _on_flags,
    b"LIST": _on_list,
    b"LSUB": _on_list,
    b"STATUS": _on_status,
    b"SEARCH": _on_search,
    b"ESEARCH": _on_esearch,
    b"VANISHED": _on_vanished,
    b"MYRIGHTS": _on_myrights,
    b"QUOTA": _on_quota,
    b"QUOTAROOT": _on_quotaroot,
    b"NAMESPACE": _on_namespace,
}
