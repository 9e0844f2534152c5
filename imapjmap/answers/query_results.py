"""The results of recent Email/query calls, kept to answer the same query again.

Many clients of one account, or one client refreshing its list, send the same query
(``inMailbox`` newest first, a page of 50) again and again while nothing changes.  An
Email/query whose filter the cache answers alone (no IMAP search) keeps the ids and total
it found under (account, epoch, the query's arguments) with the Email state it read them
at.

Rule 1: an entry answers only a query run at the very Email state it was computed at,
        read in the same cache transaction (``methods.email.query`` Rule 2: whatever changes the
        result list changes an Email, so takes a new Email state).
Rule 2: bounded: the least recently used entries go first beyond ``max_entries``, and a
        result of more than ``MAX_IDS`` ids (a query without a limit over a big mailbox,
        or with an anchor) is not kept at all.
Rule 3: looked up on a cache worker thread, added on the event loop: a lock makes each
        one step.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Final

from cachetools import LRUCache

from imapjmap.jmap.wire import JsonObject

MAX_ENTRIES: Final = 500
MAX_IDS: Final = 500  # ids in one kept result: 500 such results hold about 20 MB

# the arguments that decide a result window; accountId is in the key on its own
_ARGUMENTS: Final = (
    "filter",
    "sort",
    "collapseThreads",
    "position",
    "anchor",
    "anchorOffset",
    "limit",
    "calculateTotal",
)

Key = tuple[str, str, str]  # account, epoch, the arguments as canonical JSON
Result = tuple[tuple[str, ...], int | None]  # the ids the window needs, the total if counted


def key_of(account_id: str, epoch: str, args: JsonObject) -> Key:
    """The key of a query with these (valid) arguments."""
    wanted = {name: args.get(name) for name in _ARGUMENTS}
    return account_id, epoch, json.dumps(wanted, sort_keys=True)


class QueryResults:
    """Email/query results by their arguments, valid at one Email state (Rule 1)."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._entries: LRUCache[Key, tuple[int, Result]] = LRUCache(max_entries)
        self._lock = threading.Lock()
        self.hits = 0  # for tests and diagnostics

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key, seq: int) -> Result | None:
        """The result kept for ``key`` at Email state ``seq``, if any; any thread."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] != seq:
                return None
            self.hits += 1
            return entry[1]

    def keep(self, key: Key, seq: int, ids: Sequence[str], total: int | None) -> None:
        if len(ids) > MAX_IDS:
            return
        with self._lock:
            self._entries[key] = (seq, (tuple(ids), total))
