"""Typed records for IMAP replies (RFC 3501 / 9051 plus extensions).

Everything here is a frozen dataclass produced by :mod:`imapjmap.imap.parse` from the raw
lines of one command.  IMAP words only: uid, uidvalidity, modseq, mailbox name, flags.
Mailbox names are always decoded from modified UTF-7 (RFC 3501 §5.1.3).  Strings that come
from the wire as 8-bit bytes are decoded as UTF-8 with ``errors="surrogateescape"`` so that
no byte is lost; callers that need the raw bytes re-encode the same way.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ResponseCode:
    """A bracketed response code such as ``[APPENDUID 38505 3955]``.

    ``name`` is upper case.  ``args`` is the raw text after the name (``"38505 3955"``), or
    ``""``; the typed helpers below interpret the common ones.
    """

    name: str
    args: str = ""

    def int_arg(self) -> int | None:
        """The argument as an integer (UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, ...)."""
        try:
            return int(self.args.split()[0])
        except (IndexError, ValueError):
            return None


@dataclass(frozen=True, slots=True)
class UidSet:
    """A set of UIDs as sorted, non-overlapping inclusive ranges (``1:5,9`` → ((1,5),(9,9)))."""

    ranges: tuple[tuple[int, int], ...] = ()

    def __iter__(self) -> Iterator[int]:
        for lo, hi in self.ranges:
            yield from range(lo, hi + 1)

    def __contains__(self, uid: object) -> bool:
        if not isinstance(uid, int):
            return False
        at = bisect.bisect_right(self.ranges, (uid, math.inf)) - 1
        return at >= 0 and self.ranges[at][0] <= uid <= self.ranges[at][1]

    def __len__(self) -> int:
        return sum(hi - lo + 1 for lo, hi in self.ranges)

    def __bool__(self) -> bool:
        return bool(self.ranges)

    @classmethod
    def of(cls, uids: Iterable[int]) -> UidSet:
        """The set of these numbers, as ranges."""
        ranges: list[tuple[int, int]] = []
        for uid in sorted(set(uids)):
            if ranges and uid == ranges[-1][1] + 1:
                ranges[-1] = (ranges[-1][0], uid)
            else:
                ranges.append((uid, uid))
        return cls(tuple(ranges))

    def below(self, uid: int) -> UidSet:
        """The UIDs lower than ``uid``."""
        kept = [(lo, min(hi, uid - 1)) for lo, hi in self.ranges if lo < uid]
        return UidSet(tuple(kept))

    def newest_first(self, size: int) -> Iterator[list[int]]:
        """The UIDs from the highest down, ``size`` at a time; one batch in memory at once,
        however many UIDs the ranges hold."""
        batch: list[int] = []
        for lo, hi in reversed(self.ranges):
            uid = hi
            while uid >= lo:
                take = min(size - len(batch), uid - lo + 1)
                batch.extend(range(uid, uid - take, -1))
                uid -= take
                if len(batch) == size:
                    yield batch
                    batch = []
        if batch:
            yield batch


@dataclass(frozen=True, slots=True)
class TaggedResult:
    """The tagged completion of a command: ``A1 OK [READ-WRITE] SELECT completed``."""

    status: str  # "OK" | "NO" | "BAD"
    code: ResponseCode | None
    text: str


@dataclass(frozen=True, slots=True)
class StatusResponse:
    """An untagged ``OK``/``NO``/``BAD``/``BYE``/``PREAUTH`` line with its optional code."""

    status: str
    code: ResponseCode | None
    text: str


@dataclass(frozen=True, slots=True)
class ListEntry:
    """One ``* LIST`` (or ``* LSUB``) line.

    ``attributes`` keep the server's spelling (``\\HasNoChildren``, Cyrus's ``\\archive``);
    use :meth:`has` to test them case-insensitively.  ``delimiter`` is None for a flat
    namespace (NIL).  ``extended`` holds LIST-EXTENDED data items (e.g. ``CHILDINFO``) as raw
    text keyed by upper-case name.
    """

    name: str
    delimiter: str | None
    attributes: frozenset[str]
    extended: dict[str, str] = field(default_factory=dict)

    def has(self, attribute: str) -> bool:
        wanted = attribute.lower()
        return any(a.lower() == wanted for a in self.attributes)


@dataclass(frozen=True, slots=True)
class MailboxStatus:
    """A ``* STATUS`` line.  Items the server did not return are None."""

    name: str
    messages: int | None = None
    recent: int | None = None
    uidnext: int | None = None
    uidvalidity: int | None = None
    unseen: int | None = None
    highestmodseq: int | None = None
    size: int | None = None
    mailboxid: str | None = None  # RFC 8474 MAILBOXID
    x_guid: str | None = None  # Dovecot's mailbox GUID


@dataclass(frozen=True, slots=True)
class Address:
    """One ENVELOPE address: ``(name adl mailbox host)``.

    RFC 3501 group syntax: a group starts with an address whose ``host`` is None and whose
    ``mailbox`` is the group name, and ends with one where both are None.
    """

    name: str | None
    adl: str | None
    mailbox: str | None
    host: str | None

    @property
    def email(self) -> str | None:
        if self.mailbox is None or self.host is None:
            return None
        return f"{self.mailbox}@{self.host}"


@dataclass(frozen=True, slots=True)
class Envelope:
    """The FETCH ENVELOPE structure.  Header strings stay as on the wire (RFC 2047 encoded)."""

    date: str | None
    subject: str | None
    from_: tuple[Address, ...]
    sender: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    bcc: tuple[Address, ...]
    in_reply_to: str | None
    message_id: str | None


@dataclass(frozen=True, slots=True)
class BodyStructure:
    """One node of FETCH BODYSTRUCTURE.

    ``type``/``subtype`` are lower case.  For ``multipart/*`` nodes ``parts`` holds the
    children and the single-part fields are None/empty.  For ``message/rfc822`` parts,
    ``envelope`` and ``parts`` (one element: the encapsulated body) are filled.
    ``params`` keys are lower case.  ``disposition`` is lower case or None;
    ``disposition_params`` keys are lower case.
    """

    type: str
    subtype: str
    params: dict[str, str] = field(default_factory=dict)
    id: str | None = None
    description: str | None = None
    encoding: str | None = None
    size: int | None = None
    lines: int | None = None
    md5: str | None = None
    disposition: str | None = None
    disposition_params: dict[str, str] = field(default_factory=dict)
    language: tuple[str, ...] = ()
    location: str | None = None
    parts: tuple[BodyStructure, ...] = ()
    envelope: Envelope | None = None

    @property
    def is_multipart(self) -> bool:
        return self.type == "multipart"


@dataclass(frozen=True, slots=True)
class FetchRecord:
    """One ``* n FETCH (...)`` response.  Items that were not in the response are None.

    ``sections`` maps the section spec as the server echoed it, upper case, without the
    partial origin (``"BODY[]"``, ``"BODY[HEADER.FIELDS (REFERENCES)]"``, ``"BINARY[1]"``) to
    its bytes (None for NIL).  ``extra`` holds items this module does not know, raw.
    """

    seq: int
    uid: int | None = None
    flags: tuple[str, ...] | None = None
    modseq: int | None = None
    internaldate: dt.datetime | None = None
    size: int | None = None
    envelope: Envelope | None = None
    bodystructure: BodyStructure | None = None
    sections: dict[str, bytes | None] = field(default_factory=dict)
    emailid: str | None = None
    threadid: str | None = None
    x_guid: str | None = None
    x_gm_msgid: int | None = None
    x_gm_thrid: int | None = None
    x_gm_labels: tuple[str, ...] | None = None
    preview: str | None = None
    savedate: dt.datetime | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Vanished:
    """``* VANISHED [(EARLIER)] uid-set`` (RFC 7162 §3.2.10)."""

    earlier: bool
    uids: UidSet


@dataclass(frozen=True, slots=True)
class SearchResult:
    """``* SEARCH 1 2 3 [(MODSEQ n)]`` or an ``* ESEARCH`` reply (RFC 4731).

    A SEARCH lists its numbers in ``ids``; an ESEARCH's ``ALL`` stays the ranges it was sent
    as (``all``), so that ``1:1000000`` takes a few bytes, not a million numbers.
    """

    ids: tuple[int, ...] = ()
    modseq: int | None = None
    count: int | None = None
    min: int | None = None
    max: int | None = None
    tag: str | None = None
    uid: bool = False
    all: UidSet = UidSet()

    def uid_set(self) -> UidSet:
        """Every number of the result (SEARCH or ESEARCH), as ranges."""
        return UidSet.of(self.ids) if self.ids else self.all


@dataclass(frozen=True, slots=True)
class Quota:
    """``* QUOTA root (STORAGE used limit MESSAGE used limit)`` (RFC 9208)."""

    root: str
    resources: dict[str, tuple[int, int]]


@dataclass(frozen=True, slots=True)
class Reply:
    """Everything one command produced, in order, plus its tagged completion.

    Convenience tuples group the untagged records by kind.  ``codes`` collects every
    response code seen in untagged status lines and in the tagged line (in order), so
    ``[HIGHESTMODSEQ]``, ``[UIDVALIDITY]``, ``[APPENDUID]``, ``[COPYUID]``, ``[MODIFIED]``
    and ``[MAILBOXID]`` are found in one place.
    """

    tagged: TaggedResult
    fetches: tuple[FetchRecord, ...] = ()
    lists: tuple[ListEntry, ...] = ()
    statuses: tuple[MailboxStatus, ...] = ()
    vanished: tuple[Vanished, ...] = ()
    searches: tuple[SearchResult, ...] = ()
    capabilities: frozenset[str] | None = None
    enabled: frozenset[str] | None = None
    flags: tuple[str, ...] | None = None  # the FLAGS line of SELECT
    exists: int | None = None
    expunged: tuple[int, ...] = ()  # message sequence numbers, in order
    myrights: dict[str, str] = field(default_factory=dict)  # mailbox name -> rights letters
    quotas: tuple[Quota, ...] = ()
    quotaroots: dict[str, tuple[str, ...]] = field(default_factory=dict)
    namespaces: tuple[tuple[tuple[str, str | None], ...], ...] | None = None
    statuses_untagged: tuple[StatusResponse, ...] = ()
    codes: tuple[ResponseCode, ...] = ()
    other: tuple[str, ...] = ()  # untagged lines of kinds not modelled, raw

    def code(self, name: str) -> ResponseCode | None:
        """The last response code of that name, or None."""
        wanted = name.upper()
        for code in reversed(self.codes):
            if code.name == wanted:
                return code
        return None
