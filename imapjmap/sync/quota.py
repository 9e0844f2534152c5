"""The account's quotas kept in the cache (RFC 9425 from RFC 9208), beside the mail.

What the server said last is kept as one record per (quota root, resource), with the seqs
of its creation, its last change, its last change of anything but ``used`` and its
destruction, so that a Quota state names what the client saw and ``Quota/changes`` reports
a ``used`` that moved since (a message arrived).  The records live in the account's
small-facts table: an account has a handful of quotas at most, and their history is kept
whole (no tombstone is purged, so no state is ever too old).

The server is asked by the Quota methods (once per request that holds one) and by push
(:mod:`imapjmap.push.quota`, when mail came or went while someone listens for Quota).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Final

from imapjmap.store import queries as q
from imapjmap.store.db import Store, Tx
from imapjmap.upstream.api import QuotaReading, QuotaReads

QUOTA_TYPE: Final = "Quota"
_KEY: Final = "quota.records"
_MAIL_TYPES: Final = ("Email", "Mailbox", "Thread")


@dataclass(frozen=True, slots=True)
class Resource:
    resource_type: str  # "octets" or "count"
    unit: int  # octets per unit of the IMAP resource
    types: tuple[str, ...]  # the JMAP data types it counts (all of urn:ietf:params:jmap:mail)


RESOURCES: Final[Mapping[str, Resource]] = {
    "STORAGE": Resource("octets", 1024, _MAIL_TYPES),
    "MESSAGE": Resource("count", 1, ("Email",)),
    "MAILBOX": Resource("count", 1, ("Mailbox",)),
}


@dataclass(frozen=True, slots=True)
class QuotaRecord:
    """What the server said last of one resource of one quota root, and when it changed."""

    id: str
    root: str
    resource: str
    used: int
    limit: int
    created_seq: int
    updated_seq: int
    props_seq: int  # the last change of anything but ``used``
    destroyed_seq: int | None = None

    @property
    def last_seq(self) -> int:
        return self.updated_seq if self.destroyed_seq is None else self.destroyed_seq


def quota_id(root: str, resource: str) -> str:
    """A stable id for (root, resource): root names are free text, ids are not."""
    digest = hashlib.sha256(f"{root}\0{resource}".encode()).hexdigest()
    return "Q" + digest[:24]


# --- the records: pure ----------------------------------------------------------------------


def merge(
    records: Mapping[str, QuotaRecord], readings: Iterable[QuotaReading], seq: int
) -> dict[str, QuotaRecord] | None:
    """The records after the server said ``readings``, the changes taking ``seq``; None
    when nothing changed (then no seq is taken and the state stays)."""
    out = dict(records)
    seen: set[str] = set()
    for reading in readings:
        if reading.resource not in RESOURCES:
            continue
        id_ = quota_id(reading.root, reading.resource)
        seen.add(id_)
        old = out.get(id_)
        if old is None or old.destroyed_seq is not None:
            out[id_] = QuotaRecord(
                id_, reading.root, reading.resource, reading.used, reading.limit, seq, seq, seq
            )
        elif old.limit != reading.limit:
            out[id_] = replace(
                old, used=reading.used, limit=reading.limit, updated_seq=seq, props_seq=seq
            )
        elif old.used != reading.used:
            out[id_] = replace(old, used=reading.used, updated_seq=seq)
    for id_, old in records.items():
        if id_ not in seen and old.destroyed_seq is None:
            out[id_] = replace(old, updated_seq=seq, destroyed_seq=seq)
    return None if out == records else out


# --- the records in the cache -----------------------------------------------------------------


def load(tx: Tx, account_id: str) -> dict[str, QuotaRecord]:
    text = q.kv_get(tx, account_id, _KEY)
    if text is None:
        return {}
    return {r["id"]: QuotaRecord(**r) for r in json.loads(text)}


def save(tx: Tx, account_id: str, readings: Sequence[QuotaReading]) -> bool:
    """Keep what the server said; whether Quota's state moved."""
    records = load(tx, account_id)
    if merge(records, readings, 0) is None:  # another request stored the same already
        return False
    merged = merge(records, readings, q.next_seq(tx, account_id, [QUOTA_TYPE]))
    assert merged is not None
    q.kv_set(tx, account_id, _KEY, json.dumps([asdict(r) for r in merged.values()]))
    return True


def snapshot(tx: Tx, account_id: str) -> tuple[dict[str, QuotaRecord], int]:
    return load(tx, account_id), q.type_state(tx, account_id, QUOTA_TYPE)


async def refresh(store: Store, account_id: str, upstream: QuotaReads) -> bool:
    """Ask the server for the account's quotas and keep what changed (one round trip, and
    a write only when something did); whether Quota's state moved."""
    readings = await upstream.quotas()
    records = await store.read_small(lambda tx: load(tx, account_id), account=account_id)
    if merge(records, readings, 0) is None:
        return False
    return await store.run(lambda tx: save(tx, account_id, readings), account=account_id)
