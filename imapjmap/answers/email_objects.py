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
Rule 4: the cache transaction runs on a worker thread and looks entries up there; the
        event loop adds them.  A lock makes each lookup and addition one step.
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


class EmailObjects:
    """Email/get's built objects, valid while their row's ``updated_seq`` holds (Rule 1)."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._entries: LRUCache[_Key, tuple[int, EncodedObject]] = LRUCache(max_entries)
        self._lock = threading.Lock()
        self.hits = 0  # for tests and diagnostics
        self.misses = 0

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

    def __len__(self) -> int:
        return len(self._entries)
