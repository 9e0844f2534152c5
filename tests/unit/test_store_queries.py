"""store/queries.py: accounts, the change counter, mailboxes, tombstones, isolation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from imapjmap.errors import CacheCorrupt
from imapjmap.store import emails as em
from imapjmap.store import queries as q
from imapjmap.store.db import Store, Tx
from imapjmap.store.retention import ChangeLogPurger, purge_all

A, B = "acct-a", "acct-b"
DAY = 86400.0


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    s = await Store.open(":memory:")
    await s.run(lambda tx: (q.ensure_account(tx, A, "alice"), q.ensure_account(tx, B, "bob")))
    yield s
    await s.aclose()


def box(mailbox_id: str, imap_name: str, account_id: str = A, **kw: object) -> q.MailboxRow:
    return q.MailboxRow(account_id, mailbox_id, imap_name, imap_name.rpartition("/")[2], **kw)  # type: ignore[arg-type]


def add(tx: Tx, *rows: q.MailboxRow) -> int:
    seq = q.next_seq(tx, rows[0].account_id, ["Mailbox"])
    for row in rows:
        q.insert_mailbox(tx, row, seq=seq)
    return seq


# --- accounts ------------------------------------------------------------------------------


async def test_ensure_account_is_idempotent_and_mints_an_epoch(store: Store) -> None:
    first = await store.run(lambda tx: q.account(tx, A))
    again = await store.run(lambda tx: q.ensure_account(tx, A, "someone-else"))
    assert first is not None and first == again
    assert first.username == "alice" and first.seq == 0 and first.delimiter is None
    assert len(first.epoch) >= 12
    other = await store.run(lambda tx: q.account(tx, B))
    assert other is not None and other.epoch != first.epoch
    assert await store.run(lambda tx: q.account(tx, "nobody")) is None
    assert await store.run(q.account_ids) == [A, B]


@pytest.mark.sqlite_only
async def test_a_wiped_cache_gives_new_epochs(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    epochs = []
    for _ in range(2):
        s = await Store.open(str(path))
        epochs.append((await s.run(lambda tx: q.ensure_account(tx, A, "alice"))).epoch)
        await s.aclose()
        for leftover in tmp_path.iterdir():
            leftover.unlink()
    assert epochs[0] != epochs[1]


async def test_delete_account_cascades_and_resets_the_epoch(store: Store) -> None:
    await store.run(lambda tx: add(tx, box("M1", "INBOX")))
    await store.run(lambda tx: add(tx, box("M1", "INBOX", B)))
    old = await store.run(lambda tx: q.account(tx, A))
    assert await store.run(lambda tx: q.delete_account(tx, A))
    assert not await store.run(lambda tx: q.delete_account(tx, A))

    def counts(tx: Tx) -> list[int]:
        tables = ("mailboxes", "type_states", "seq_log")
        return [
            int(tx.scalar(f"SELECT count(*) FROM {t} WHERE account_id = ?", (A,))) for t in tables
        ]

    assert await store.run(counts) == [0, 0, 0]
    assert len(await store.run(lambda tx: q.live_mailboxes(tx, B))) == 1
    new = await store.run(lambda tx: q.ensure_account(tx, A, "alice"))
    assert old is not None and new.epoch != old.epoch and new.seq == 0


async def test_delimiter_and_kv(store: Store) -> None:
    def write(tx: Tx) -> None:
        q.set_delimiter(tx, A, "/")
        q.kv_set(tx, A, "caps", "IMAP4rev1 CONDSTORE")
        q.kv_set(tx, A, "caps", "IMAP4rev1 QRESYNC")
        q.kv_set(tx, A, "gone", "x")
        q.kv_delete(tx, A, "gone")

    await store.run(write)
    acct = await store.run(lambda tx: q.account(tx, A))
    assert acct is not None and acct.delimiter == "/"
    assert await store.run(lambda tx: q.kv_get(tx, A, "caps")) == "IMAP4rev1 QRESYNC"
    assert await store.run(lambda tx: q.kv_get(tx, A, "gone")) is None


# --- the change counter --------------------------------------------------------------------


async def test_next_seq_is_taken_once_per_transaction(store: Store) -> None:
    def twice(tx: Tx) -> tuple[int, int, int]:
        return (
            q.next_seq(tx, A, ["Mailbox"], now=100.0),
            q.next_seq(tx, A, ["Email", "Thread"], now=200.0),
            q.next_seq(tx, B, []),
        )

    assert await store.run(twice) == (1, 1, 1)
    assert await store.run(lambda tx: q.type_states(tx, A)) == {
        "Mailbox": 1,
        "Email": 1,
        "Thread": 1,
    }
    assert await store.run(lambda tx: q.next_seq(tx, A, ["Email"])) == 2
    assert await store.run(lambda tx: q.type_state(tx, A, "Email")) == 2
    assert await store.run(lambda tx: q.type_state(tx, A, "Mailbox")) == 1
    assert await store.run(lambda tx: q.type_state(tx, A, "Identity")) == 0
    acct = await store.run(lambda tx: q.account(tx, A))
    assert acct is not None and acct.seq == 2
    log = await store.run(
        lambda tx: tx.all("SELECT seq, at FROM seq_log WHERE account_id = ?", (A,))
    )
    assert log[0] == (1, 100.0) and len(log) == 2


async def test_next_seq_guards(store: Store) -> None:
    with pytest.raises(TypeError):
        await store.run(lambda tx: q.next_seq(tx, A, "Mailbox"))
    with pytest.raises(LookupError):
        await store.run(lambda tx: q.next_seq(tx, "nobody", ["Mailbox"]))


# --- mailboxes -----------------------------------------------------------------------------


async def test_mailbox_round_trip(store: Store) -> None:
    rights = {"mayReadItems": True, "mayDelete": False}
    row = box(
        "M1",
        "Archive/2024",
        parent_id="M0",
        role="archive",
        sort_order=3,
        is_subscribed=True,
        total_emails=10,
        unread_emails=2,
        total_threads=8,
        unread_threads=1,
        my_rights=rights,
        source_id="guid-1",
        uidvalidity=7,
        uidnext=11,
        highestmodseq=99,
        messages=10,
    )
    seq = await store.run(lambda tx: add(tx, row))
    stored = replace(row, created_seq=seq, updated_seq=seq, props_seq=seq)
    assert await store.run(lambda tx: q.mailbox(tx, A, "M1")) == stored
    assert await store.run(lambda tx: q.mailbox_by_name(tx, A, "Archive/2024")) == stored
    assert await store.run(lambda tx: q.mailbox_by_source(tx, A, "guid-1")) == stored
    assert await store.run(lambda tx: q.live_mailboxes(tx, A)) == [stored]
    assert stored.name == "2024" and stored.is_subscribed is True and stored.my_rights == rights
    hash(stored)  # usable in sets despite the dict field


async def test_insert_needs_a_seq(store: Store) -> None:
    with pytest.raises(ValueError, match="seq"):
        await store.run(lambda tx: q.insert_mailbox(tx, box("M1", "INBOX")))
    explicit = box("M1", "INBOX", created_seq=5, updated_seq=6, props_seq=5)
    await store.run(lambda tx: q.insert_mailbox(tx, explicit))
    assert await store.run(lambda tx: q.mailbox(tx, A, "M1")) == explicit


async def test_live_imap_names_are_unique_until_tombstoned(store: Store) -> None:
    await store.run(lambda tx: add(tx, box("M1", "INBOX")))
    with pytest.raises(CacheCorrupt, match=r"(?i)unique"):
        await store.run(lambda tx: add(tx, box("M2", "INBOX")))

    def delete_and_recreate(tx: Tx) -> int:
        seq = q.next_seq(tx, A, ["Mailbox"])
        assert q.destroy_mailbox(tx, A, "M1", seq)
        assert not q.destroy_mailbox(tx, A, "M1", seq)  # already a tombstone
        q.insert_mailbox(tx, box("M2", "INBOX"), seq=seq)
        return seq

    seq = await store.run(delete_and_recreate)
    assert await store.run(lambda tx: q.mailbox(tx, A, "M1")) is None
    assert [m.id for m in await store.run(lambda tx: q.live_mailboxes(tx, A))] == ["M2"]
    with pytest.raises(CacheCorrupt):  # a destroyed id is never reused
        await store.run(lambda tx: add(tx, box("M1", "Other")))
    changes = await store.run(lambda tx: q.mailbox_changes(tx, A, 1))
    assert changes == [
        q.MailboxChange("M1", 1, seq, seq, 1),
        q.MailboxChange("M2", seq, seq, None, seq),
    ]


async def test_update_stamps_props_seq_only_for_props(store: Store) -> None:
    await store.run(lambda tx: add(tx, box("M1", "INBOX", role="inbox")))
    old = await store.run(lambda tx: q.mailbox(tx, A, "M1"))
    assert old is not None

    counts = replace(old, total_emails=5, unread_emails=1)
    assert q.mailbox_change(old, counts) == "counts"

    def update(row: q.MailboxRow, props: bool) -> Callable[[Tx], int]:
        def fn(tx: Tx) -> int:
            seq = q.next_seq(tx, A, ["Mailbox"])
            assert q.update_mailbox(tx, row, props_changed=props, seq=seq)
            return seq

        return fn

    seq2 = await store.run(update(counts, False))
    after = await store.run(lambda tx: q.mailbox(tx, A, "M1"))
    assert after == replace(counts, updated_seq=seq2)  # props_seq stays 1

    renamed = replace(after, name="Box", imap_name="Box", total_emails=6)
    assert q.mailbox_change(after, renamed) == "props"
    seq3 = await store.run(update(renamed, True))
    assert await store.run(lambda tx: q.mailbox(tx, A, "M1")) == replace(
        renamed, updated_seq=seq3, props_seq=seq3
    )
    assert await store.run(lambda tx: q.mailbox_changes(tx, A, seq2)) == [
        q.MailboxChange("M1", 1, seq3, None, seq3)
    ]
    missing = replace(renamed, id="nope")
    assert not await store.run(lambda tx: q.update_mailbox(tx, missing, props_changed=True, seq=9))


async def test_the_sync_cursor_takes_no_seq(store: Store) -> None:
    await store.run(lambda tx: add(tx, box("M1", "INBOX")))
    old = await store.run(lambda tx: q.mailbox(tx, A, "M1"))
    assert old is not None
    moved = replace(old, uidvalidity=1, uidnext=50, highestmodseq=777, messages=49)
    assert q.mailbox_change(old, moved) == "cursor"
    assert q.mailbox_change(old, old) == "none"
    ok = await store.run(
        lambda tx: q.set_mailbox_cursor(
            tx, A, "M1", uidvalidity=1, uidnext=50, highestmodseq=777, messages=49
        )
    )
    assert ok
    assert await store.run(lambda tx: q.mailbox(tx, A, "M1")) == moved
    again = replace(moved, uidnext=51, messages=50, name="ignored")
    assert await store.run(lambda tx: q.update_mailbox_cursor(tx, again))
    assert await store.run(lambda tx: q.mailbox(tx, A, "M1")) == replace(again, name="INBOX")
    assert await store.run(lambda tx: q.type_state(tx, A, "Mailbox")) == 1
    assert await store.run(lambda tx: q.mailbox_changes(tx, A, 1)) == []


@pytest.mark.sqlite_only
async def test_a_damaged_row_is_cache_corrupt(store: Store) -> None:
    await store.run(lambda tx: add(tx, box("M1", "INBOX"), box("M2", "Sent")))
    await store.run(
        lambda tx: tx.execute("UPDATE mailboxes SET my_rights = 'nope' WHERE id = 'M1'")
    )
    await store.run(lambda tx: tx.execute("UPDATE mailboxes SET sort_order = 'x' WHERE id = 'M2'"))
    with pytest.raises(CacheCorrupt, match="M1"):
        await store.run(lambda tx: q.mailbox(tx, A, "M1"))
    with pytest.raises(CacheCorrupt, match="'x'"):
        await store.run(lambda tx: q.mailbox(tx, A, "M2"))


async def test_a_row_for_an_unknown_account_is_refused(store: Store) -> None:
    with pytest.raises(CacheCorrupt, match=r"(?i)foreign key"):
        await store.run(lambda tx: q.insert_mailbox(tx, box("M1", "INBOX", "ghost"), seq=1))


# --- changes and tombstones ----------------------------------------------------------------


@pytest.mark.sqlite_only
async def test_changes_since_is_a_range_query_on_the_index(store: Store) -> None:
    await store.run(lambda tx: add(tx, box("M1", "INBOX"), box("M2", "Sent")))
    await store.run(lambda tx: add(tx, box("M3", "Trash")))
    rows = await store.run(lambda tx: q.changes_since(tx, "mailboxes", A, 0))
    assert [(r.id, r.updated_seq) for r in rows] == [("M1", 1), ("M2", 1), ("M3", 2)]
    assert await store.run(lambda tx: q.changes_since(tx, "mailboxes", A, 1)) == [
        q.ChangeRow("M3", 2, 2, None)
    ]
    assert await store.run(lambda tx: q.changes_since(tx, "mailboxes", A, 2)) == []
    limited = await store.run(lambda tx: q.changes_since(tx, "mailboxes", A, 0, limit=2))
    assert [r.id for r in limited] == ["M1", "M2"]

    plan = await store.run(
        lambda tx: tx.all(
            "EXPLAIN QUERY PLAN SELECT id FROM mailboxes"
            " WHERE account_id = ? AND updated_seq > ? ORDER BY updated_seq, id",
            (A, 0),
        )
    )
    assert "mailboxes_updated_seq" in " ".join(str(step) for step in plan)
    with pytest.raises(ValueError, match="not a change-tracked table"):
        await store.run(lambda tx: q.changes_since(tx, "accounts", A, 0))  # type: ignore[arg-type]


async def test_purge_tombstones_raises_the_floor(store: Store) -> None:
    await store.run(lambda tx: add(tx, box("M1", "a"), box("M2", "b"), box("M3", "c")))  # 1

    def destroy(mailbox_id: str) -> Callable[[Tx], int]:
        def fn(tx: Tx) -> int:
            seq = q.next_seq(tx, A, ["Mailbox"])
            assert q.destroy_mailbox(tx, A, mailbox_id, seq)
            return seq

        return fn

    assert await store.run(destroy("M1")) == 2
    assert await store.run(destroy("M2")) == 3
    assert await store.run(lambda tx: q.purge_tombstones(tx, A, 2)) == 0  # nothing < 2
    assert await store.run(lambda tx: q.type_floor(tx, A, "Mailbox")) == 0

    assert await store.run(lambda tx: q.purge_tombstones(tx, A, 3)) == 1  # M1 (seq 2)
    assert await store.run(lambda tx: q.type_floor(tx, A, "Mailbox")) == 2
    rows = await store.run(lambda tx: q.changes_since(tx, "mailboxes", A, 2))
    assert [r.id for r in rows] == ["M2"]
    live = await store.run(lambda tx: q.live_mailboxes(tx, A))
    assert [m.id for m in live] == ["M3"]  # live rows are never purged

    assert await store.run(lambda tx: q.purge_tombstones(tx, A, 100)) == 1
    assert await store.run(lambda tx: q.type_floor(tx, A, "Mailbox")) == 3
    assert await store.run(lambda tx: q.type_state(tx, A, "Mailbox")) == 3


async def test_purge_older_than_maps_days_to_seqs(store: Store) -> None:
    def destroy_at(mailbox_id: str, now: float) -> Callable[[Tx], int]:
        def fn(tx: Tx) -> int:
            seq = q.next_seq(tx, A, ["Mailbox"], now=now)
            if mailbox_id:
                assert q.destroy_mailbox(tx, A, mailbox_id, seq)
            else:
                q.insert_mailbox(tx, box("M1", "a"), seq=seq)
                q.insert_mailbox(tx, box("M2", "b"), seq=seq)
            return seq

        return fn

    await store.run(destroy_at("", 0 * DAY))  # seq 1: create both
    await store.run(destroy_at("M1", 1 * DAY))  # seq 2
    await store.run(destroy_at("M2", 20 * DAY))  # seq 3

    assert await store.run(lambda tx: q.purge_older_than(tx, A, 30, 25 * DAY)) == 0
    assert await store.run(lambda tx: q.purge_older_than(tx, A, 10, 25 * DAY)) == 1  # M1
    assert await store.run(lambda tx: q.type_floor(tx, A, "Mailbox")) == 2
    kept = await store.run(lambda tx: tx.all("SELECT seq FROM seq_log WHERE account_id = ?", (A,)))
    assert kept == [(3,)]
    assert await store.run(lambda tx: q.purge_older_than(tx, A, 10, 25 * DAY)) == 0
    assert await store.run(lambda tx: q.purge_older_than(tx, A, 1, 25 * DAY)) == 1  # M2
    assert await store.run(lambda tx: q.type_floor(tx, A, "Mailbox")) == 3
    with pytest.raises(ValueError):
        await store.run(lambda tx: q.purge_older_than(tx, A, -1, 0))


# --- isolation -----------------------------------------------------------------------------


async def test_accounts_never_see_each_others_rows(store: Store) -> None:
    """Same ids and names in two accounts; every query answers for one account only."""
    await store.run(lambda tx: add(tx, box("M1", "INBOX", source_id="g1"), box("M2", "Secret")))
    await store.run(lambda tx: add(tx, box("M1", "INBOX", B, source_id="g1")))

    def facts(tx: Tx) -> None:
        q.kv_set(tx, A, "k", "alice")
        q.kv_set(tx, B, "k", "bob")

    await store.run(facts)

    def view(account_id: str) -> Callable[[Tx], tuple[Any, ...]]:
        def fn(tx: Tx) -> tuple[Any, ...]:
            return (
                [m.id for m in q.live_mailboxes(tx, account_id)],
                q.mailbox(tx, account_id, "M2"),
                q.mailbox_by_name(tx, account_id, "Secret"),
                q.mailbox_by_source(tx, account_id, "g1").account_id,  # type: ignore[union-attr]
                [c.id for c in q.changes_since(tx, "mailboxes", account_id, 0)],
                q.type_states(tx, account_id),
                q.kv_get(tx, account_id, "k"),
            )

        return fn

    a, b = await store.run(view(A)), await store.run(view(B))
    assert a[0] == ["M1", "M2"] and b[0] == ["M1"]
    assert a[1] is not None and b[1] is None and b[2] is None
    assert a[3] == A and b[3] == B
    assert a[4] == ["M1", "M2"] and b[4] == ["M1"]
    assert a[6] == "alice" and b[6] == "bob"

    # Writes aimed at B cannot touch A's rows, even with A's ids.
    def attack(tx: Tx) -> tuple[bool, bool, bool]:
        seq = q.next_seq(tx, B, ["Mailbox"])
        return (
            q.destroy_mailbox(tx, B, "M2", seq),
            q.update_mailbox(tx, box("M2", "Stolen", B), props_changed=True, seq=seq),
            q.set_mailbox_cursor(
                tx, B, "M2", uidvalidity=1, uidnext=1, highestmodseq=1, messages=0
            ),
        )

    assert await store.run(attack) == (False, False, False)
    secret = await store.run(lambda tx: q.mailbox(tx, A, "M2"))
    assert secret is not None and secret.imap_name == "Secret" and secret.uidnext is None

    # Destroying and purging in B leaves A's rows, states and floors alone.
    def destroy_b(tx: Tx) -> None:
        seq = q.next_seq(tx, B, ["Mailbox"])
        q.destroy_mailbox(tx, B, "M1", seq)

    await store.run(destroy_b)
    assert await store.run(lambda tx: q.purge_tombstones(tx, B, 1000)) == 1
    assert await store.run(lambda tx: q.mailbox(tx, A, "M1")) is not None
    assert await store.run(lambda tx: q.type_floor(tx, A, "Mailbox")) == 0
    assert await store.run(lambda tx: q.type_state(tx, A, "Mailbox")) == 1
    acct_a = await store.run(lambda tx: q.account(tx, A))
    assert acct_a is not None and acct_a.seq == 1


# --- retention (store.retention) -------------------------------------------------------------


async def _old_tombstones(store: Store, count: int, at: float) -> list[int]:
    """``count`` mailboxes created then destroyed one by one, every seq logged at ``at``."""
    names = [f"T{i}" for i in range(count)]
    await store.run(
        lambda tx: [
            q.insert_mailbox(tx, box(n, n), seq=q.next_seq(tx, A, ["Mailbox"], now=at))
            for n in names
        ]
    )
    seqs = []
    for name in names:

        def destroy(tx: Tx, name: str = name) -> int:
            seq = q.next_seq(tx, A, ["Mailbox"], now=at)
            assert q.destroy_mailbox(tx, A, name, seq)
            return seq

        seqs.append(await store.run(destroy))
    return seqs


async def test_purge_changes_before_is_bounded_and_oldest_first(store: Store) -> None:
    seqs = await _old_tombstones(store, 5, at=1 * DAY)
    kept = await store.run(lambda tx: add(tx, box("K", "k")))  # a recent change: kept
    log_rows = "SELECT count(*) FROM seq_log WHERE account_id = ?"
    assert await store.run(lambda tx: tx.scalar(log_rows, (A,))) == 7

    def step(tx: Tx) -> int:
        return q.purge_changes_before(tx, A, before=10 * DAY, limit=2)

    assert await store.run(step) == 2  # the two oldest tombstones
    assert await store.run(lambda tx: q.type_floor(tx, A, "Mailbox")) == seqs[1]
    rows = await store.run(lambda tx: q.changes_since(tx, "mailboxes", A, seqs[1]))
    assert [r.id for r in rows] == ["T2", "T3", "T4", "K"]
    assert await store.run(step) == 2
    assert await store.run(step) == 2  # the last tombstone, then one log entry
    assert await store.run(lambda tx: q.type_floor(tx, A, "Mailbox")) == seqs[4]
    assert await store.run(step) == 2  # six old seqs were logged: four more log entries
    assert await store.run(step) == 2
    assert await store.run(step) == 1  # fewer than the limit: nothing old is left
    assert await store.run(step) == 0
    assert await store.run(
        lambda tx: tx.all("SELECT seq FROM seq_log WHERE account_id = ?", (A,))
    ) == [(kept,)]
    assert [m.id for m in await store.run(lambda tx: q.live_mailboxes(tx, A))] == ["K"]
    assert await store.run(lambda tx: q.type_floor(tx, B, "Mailbox")) == 0  # B untouched


async def test_the_purger_runs_in_the_background(store: Store) -> None:
    seqs = await _old_tombstones(store, 7, at=1 * DAY)
    purger = ChangeLogPurger(
        store, 30, interval=0.01, first_delay=0, batch=3, clock=lambda: 40 * DAY
    )
    purger.start()
    try:
        for _ in range(500):
            if purger.passes:
                break
            await asyncio.sleep(0.01)
        assert purger.passes
    finally:
        await purger.aclose()
    assert await store.run(lambda tx: q.type_floor(tx, A, "Mailbox")) == seqs[-1]
    assert await store.run(lambda tx: q.changes_since(tx, "mailboxes", A, 0)) == []
    assert await store.run(lambda tx: tx.scalar("SELECT count(*) FROM seq_log")) == 0


async def test_the_purger_keeps_what_the_retention_covers(store: Store) -> None:
    await _old_tombstones(store, 3, at=20 * DAY)
    deleted = await purge_all(store, before=40 * DAY - 30 * DAY)  # retention: 30 days at day 40
    assert deleted == 0
    assert await store.run(lambda tx: q.type_floor(tx, A, "Mailbox")) == 0


async def test_an_email_tombstone_with_hidden_copies_is_kept(store: Store) -> None:
    """An Email whose only copy is flagged \\Deleted is a tombstone for JMAP that comes back
    if the flag goes: the purge must not take it, however old."""

    def hidden_email(email_id: str, uid: int) -> Callable[[Tx], None]:
        def fn(tx: Tx) -> None:
            seq = q.next_seq(tx, A, ["Email"], now=1 * DAY)
            em.insert_email(tx, em.EmailRow(A, email_id, "T1", 10, 0, created_seq=seq))
            em.put_location(tx, A, em.Location("M1", uid, email_id, None, ("\\Deleted",), True))
            assert em.recompute_email(tx, A, email_id, seq) == "destroyed"

        return fn

    await store.run(hidden_email("Ehidden", 1))
    await store.run(hidden_email("Egone", 2))
    await store.run(lambda tx: em.remove_location(tx, A, "M1", 2))  # expunged upstream
    assert await purge_all(store, before=40 * DAY) >= 1
    assert await store.run(lambda tx: em.email(tx, A, "Egone", live=False)) is None
    assert await store.run(lambda tx: em.email(tx, A, "Ehidden", live=False)) is not None

    def undelete(tx: Tx) -> str:
        seq = q.next_seq(tx, A, ["Email"])
        em.put_location(tx, A, em.Location("M1", 1, "Ehidden", None, (), False))
        return em.recompute_email(tx, A, "Ehidden", seq)

    assert await store.run(undelete) == "revived"


async def test_emails_found_by_message_id_exactly(store: Store) -> None:
    """MDN-04 on a server that threads the mail itself: the Email a report is about is found
    by its Message-ID alone; LIKE's wildcards and case in the id match nothing else."""

    def emails(tx: Tx) -> None:
        seq = q.next_seq(tx, A, ["Email"])
        for email_id, ids in (
            ("E1", ["a_b%c@example.net"]),
            ("E2", ["aXbYc@example.net", "other@example.net"]),
            ("E3", ["A_B%C@EXAMPLE.NET"]),
        ):
            em.insert_email(
                tx, em.EmailRow(A, email_id, "T1", 10, 0, message_ids=ids, created_seq=seq)
            )
        em.insert_email(
            tx,
            em.EmailRow(
                B,
                "E4",
                "T1",
                10,
                0,
                message_ids=["a_b%c@example.net"],
                created_seq=q.next_seq(tx, B, ["Email"]),
            ),
        )

    await store.run(emails)

    async def ids(message_id: str, account_id: str = A) -> list[str]:
        return await store.read(lambda tx: em.live_ids_with_message_id(tx, account_id, message_id))

    assert await ids("a_b%c@example.net") == ["E1"]
    assert await ids("other@example.net") == ["E2"]
    assert await ids("a_b%c@example.net", B) == ["E4"]
    assert await ids("nobody@example.net") == []
    assert await ids("example.net") == []  # a part of an id is not the id
