"""The Email objects of recent Email/get answers, kept to answer the same again.

A mail client asks for the same list properties of the same page of Emails on every
refresh of its list, and many clients of one account ask for the same page.  Building
each such object decodes the cache row's JSON columns, and encoding the answer encodes it
again: most of an open-inbox request's CPU.  An Email/get whose properties all come from
the cache row keeps each object it built here, encoded once
(:class:`~imapjmap.jmap.wire.EncodedObject`), under (account, epoch, properties, email id)
with the ``updated_seq`` of the row it came from.

Rule 1: an entry stands for a row only while the row's ``updated_seq`` is the one it was
        built from: every change of a row's columns takes a new seq (a flag set by another
        IMAP client, a move, a thread merge, an expunge and a new APPEND of the same
        message alike), but for ``preview``, which only ever goes from null to its text.
        The seq is read in the same cache transaction as the rows that are not kept, so an
        answer is one snapshot; nothing here is trusted across processes sharing the cache
        file without that check (store Rule 8).
Rule 2: an object whose preview was not stored yet is not kept (its text may still be
        computed and stored).
Rule 3: bounded: the least recently used entries go first beyond ``max_entries``.
Rule 4: the cache transaction may run on a worker thread and look entries up there; the
        event loop adds them.  A lock makes each lookup and addition one step.
Rule 5: the whole list of an answer (the kept objects of the ids asked, in their order)
        is kept too, with the account's Email state it was read at, and stands for the
        rows while that state holds: any change of an Email row (but ``preview``, Rule 2)
        and any Email created or destroyed moves the Email state.  The same page asked
        again then reads one row, the state, instead of every row's ``updated_seq``.  Only
        a list whose every object is kept is kept (Rule 2); at most ``max_answers``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Final

from cachetools import LRUCache

from imapjmap.jmap.wire import EncodedObject

MAX_ENTRIES: Final = 2000
"""About 5 KB each with the usual list properties and a full preview (the object and its
JSON), 10 MB in all: the first pages of 50 of 40 accounts."""

_Key = tuple[str, str, tuple[str, ...], str]  # account, epoch, properties, email id
_AnswerKey = tuple[str, str, tuple[str, ...], tuple[str, ...]]  # ... and the ids asked
MAX_ANSWERS: Final = 500


class EmailObjects:
    """Email/get's built objects, valid while their row's ``updated_seq`` holds (Rule 1)."""

    def __init__(self, max_entries: int = MAX_ENTRIES, max_answers: int = MAX_ANSWERS) -> None:
        self._entries: LRUCache[_Key, tuple[int, EncodedObject]] = LRUCache(max_entries)
        self._answers: LRUCache[_AnswerKey, tuple[int, list[EncodedObject]]] = LRUCache(max_answers)
        self._lock = threading.Lock()
        self.hits = 0  # for tests and diagnostics
        self.misses = 0
        self.answer_hits = 0

    def lookup(
        self, account_id: str, epoch: str, properties: Sequence[str]
    ) -> Callable[[str, int], EncodedObject | None]:
        """A function of (email id, the row's updated_seq) giving the kept object for it, or
        None when there is none for that seq; any thread may call it."""
        props = tuple(properties)

        def known(email_id: str, updated_seq: int) -> EncodedObject | None:
            with self._lock:
                entry = self._entries.get((account_id, epoch, props, email_id))
                if entry is not None and entry[0] == updated_seq:
                    self.hits += 1
                    return entry[1]
                self.misses += 1
                return None

        return known

    def keep(
        self,
        account_id: str,
        epoch: str,
        properties: Sequence[str],
        email_id: str,
        updated_seq: int,
        obj: EncodedObject,
    ) -> None:
        with self._lock:
            self._entries[(account_id, epoch, tuple(properties), email_id)] = (updated_seq, obj)

    def answer(
        self,
        account_id: str,
        epoch: str,
        properties: Sequence[str],
        ids: Sequence[str],
        email_state: int,
    ) -> list[EncodedObject] | None:
        """The objects answered for ``ids`` at ``email_state``, if kept (Rule 5)."""
        with self._lock:
            entry = self._answers.get((account_id, epoch, tuple(properties), tuple(ids)))
            if entry is None or entry[0] != email_state:
                return None
            self.answer_hits += 1
            return entry[1]

    def keep_answer(
        self,
        account_id: str,
        epoch: str,
        properties: Sequence[str],
        ids: Sequence[str],
        email_state: int,
        objects: list[EncodedObject],
    ) -> None:
        with self._lock:
            key = (account_id, epoch, tuple(properties), tuple(ids))
            self._answers[key] = (email_state, objects)

    def __len__(self) -> int:
        return len(self._entries)
