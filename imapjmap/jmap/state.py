"""Opaque JMAP state tokens built from the account-wide change counter.

Theory of operation (docs/design.md, "States"): every cache transaction that changes something
takes the next value of one per-account counter ``seq``; each row remembers the seq that
created, last updated and destroyed it.  A type's state is the highest seq that touched the
type.  ``epoch`` names one life of the counter (a rebuilt cache starts a new epoch), so a
token from an earlier life is recognised as unusable instead of being misread.

Rule 1: ``State(epoch, seq)`` means "every change with seq <= ``seq`` has been seen".
Rule 2: ``State(epoch, seq, after_id, upto)`` is an intermediate state produced by
        /changes paging: the client is part-way through the changes between ``seq`` and
        ``upto``, which are paged in id order (ids never move, unlike change seqs); it has
        seen those of the ids <= ``after_id`` (ids compare as Python strings).
Rule 3: tokens are canonical: ``encode(decode(t)) == t`` for every accepted ``t``, so two
        tokens name the same state exactly when the strings are equal (``ifInState``).

Token format (opaque to clients; documented for logs): ``s<seq base36>.<epoch>`` or
``p<seq base36>.<upto base36>.<epoch>.<after_id>``.  The letter in front keeps a token from
looking like a number; every character is URL-safe.  Query states use the same encoding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from imapjmap.jmap.errors import MethodError, MethodErrorType
from imapjmap.jmap.wire import is_id

__all__ = ["State", "decode", "decode_or_raise", "encode"]

_EPOCH_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NUMBER: Final = r"0|[1-9a-z][0-9a-z]{0,12}"
_TOKEN_RE: Final = re.compile(
    rf"s(?P<seq>{_NUMBER})\.(?P<epoch>[A-Za-z0-9_-]{{1,64}})"
    rf"|p(?P<pseq>{_NUMBER})\.(?P<upto>{_NUMBER})\.(?P<pepoch>[A-Za-z0-9_-]{{1,64}})"
    r"\.(?P<after>[A-Za-z0-9_-]{1,255})"
)
_DIGITS: Final = "0123456789abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True, slots=True)
class State:
    """A position in the account's change history (see the module rules)."""

    epoch: str
    seq: int
    after_id: str | None = None
    upto: int | None = None  # with after_id: the end of the round being paged

    def __post_init__(self) -> None:
        if (self.after_id is None) != (self.upto is None):
            raise ValueError("after_id and upto go together")
        if self.upto is not None and not self.seq <= self.upto <= 2**53 - 1:
            raise ValueError(f"upto out of range: {self.upto}")
        if not _EPOCH_RE.fullmatch(self.epoch):
            raise ValueError(f"epoch must be 1-64 of [A-Za-z0-9_-], got {self.epoch!r}")
        if not 0 <= self.seq <= 2**53 - 1:
            raise ValueError(f"seq out of range: {self.seq}")
        if self.after_id is not None and not is_id(self.after_id):
            raise ValueError(f"after_id is not an Id: {self.after_id!r}")


def encode(state: State) -> str:
    """The client-visible token for ``state``."""
    if state.after_id is None or state.upto is None:
        return f"s{_base36(state.seq)}.{state.epoch}"
    return f"p{_base36(state.seq)}.{_base36(state.upto)}.{state.epoch}.{state.after_id}"


def decode(token: str, epoch: str) -> State | None:
    """Parse a client-supplied token; None if it is garbage or from another epoch."""
    match = _TOKEN_RE.fullmatch(token)
    if match is None or (match["epoch"] or match["pepoch"]) != epoch:
        return None
    if match["seq"] is not None:
        seq = int(match["seq"], 36)
        return State(epoch, seq) if seq <= 2**53 - 1 else None
    seq, upto = int(match["pseq"], 36), int(match["upto"], 36)
    if not seq <= upto <= 2**53 - 1:
        return None
    return State(epoch, seq, match["after"], upto)


def decode_or_raise(token: str, epoch: str) -> State:
    """:func:`decode` for ``sinceState``/``sinceQueryState``.

    Raises:
        MethodError: cannotCalculateChanges (CORE-CHG-04) for garbage or another epoch.
    """
    state = decode(token, epoch)
    if state is None:
        raise MethodError(
            MethodErrorType.CANNOT_CALCULATE_CHANGES, "the state is unknown or too old"
        )
    return state


def _base36(value: int) -> str:
    if value == 0:
        return "0"
    digits: list[str] = []
    while value:
        value, rest = divmod(value, 36)
        digits.append(_DIGITS[rest])
    return "".join(reversed(digits))
