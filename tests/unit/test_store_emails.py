"""store/emails.py: the bulk writers and JSON encoders of a sync batch."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imapjmap.config import Config
from imapjmap.store import emails as em
from imapjmap.store.db import Store, Tx
from tests.unit.email_world import A, World

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(JSON_VALUES)
def test_encoders_write_what_json_dumps_writes(value: Any) -> None:
    assert em._JSON(value) == json.dumps(value)
    assert em._JSON_SORTED(value) == json.dumps(value, sort_keys=True)


async def test_multi_row_writes_equal_one_statement_a_row() -> None:
    # 7 columns: 142 rows a statement; 700 rows with repeated keys cross several statements
    rows = [("A", "M", uid % 300, f"e{uid}", uid, "", 0) for uid in range(700)]
    head = (
        "INSERT OR REPLACE INTO locations (account_id, mailbox_id, uid, email_id, modseq,"
        " flags, deleted)"
    )
    store = await Store.open(":memory:")

    def write(tx: Tx, bulk: bool) -> list[tuple[Any, ...]]:
        tx.execute("INSERT INTO accounts (account_id, username, epoch) VALUES ('A', 'u', 'e')")
        if bulk:
            em._write_rows(tx, head, rows)
            em._write_rows(tx, head, [])
        else:
            for row in rows:
                tx.execute(f"{head} VALUES (?, ?, ?, ?, ?, ?, ?)", row)
        found = tx.all("SELECT * FROM locations ORDER BY uid")
        tx.execute("DELETE FROM accounts")
        return found

    try:
        bulk = await store.run(lambda tx: write(tx, True))
        single = await store.run(lambda tx: write(tx, False))
    finally:
        await store.aclose()
    assert bulk == single
    assert len(bulk) == 300 and bulk[0][3] == "e600"


async def test_rows_known_at_their_updated_seq_are_not_read_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A repeated Email/get of kept objects reads two numbers a row, not the whole row."""
    store = await Store.open(":memory:")
    world = World(store, Config())
    await world.setup()
    seqs = dict(await store.read(lambda tx: tx.all("SELECT id, updated_seq FROM emails")))
    kept = {"e1": "kept e1", "e2": "kept e2", "e3": "kept at an older seq"}

    def known(email_id: str, updated_seq: int) -> str | None:
        if email_id == "e3":
            return None  # changed since it was kept
        return kept.get(email_id) if updated_seq == seqs[email_id] else None

    whole: list[tuple[Any, ...]] = []
    tx_all = Tx.all

    def recording(tx: Tx, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        if "headers" in sql:
            whole.append(tuple(params))
        return tx_all(tx, sql, params)

    monkeypatch.setattr(Tx, "all", recording)
    ids = ["e1", "e2", "e3", "e4", "nope"]
    try:
        got = await store.read(lambda tx: em.emails_unless_known(tx, A, ids, known))
    finally:
        await store.aclose()
    assert got["e1"] == "kept e1" and got["e2"] == "kept e2"
    assert isinstance(got["e3"], em.EmailRow) and isinstance(got["e4"], em.EmailRow)
    assert got["e4"].id == "e4" and set(got) == {"e1", "e2", "e3", "e4"}
    assert [sorted(p[1:]) for p in whole] == [["e3", "e4"]]  # only these rows whole


async def test_emails_and_locations_read_many_as_one_at_a_time_reads_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The chunked read that re-derives Emails after another client's changes returns what
    :func:`em.email` (tombstones included) and :func:`em.locations_of_email` return for
    each id, unknown ids absent, in two statements a chunk."""
    store = await Store.open(":memory:")
    world = World(store, Config())
    await world.setup()
    statements: list[str] = []

    def destroy_and_read(tx: Tx) -> Any:
        kind = type(tx)  # SQLite's or PostgreSQL's
        tx_all_of = kind.all_of

        def counting(self: Tx, *queries: tuple[str, Any]) -> Any:
            statements.extend(sql for sql, _ in queries)
            return tx_all_of(self, *queries)

        ids = [r[0] for r in tx.all("SELECT id FROM emails ORDER BY id")]
        em.destroy_email(tx, A, ids[0], 999)  # a tombstone is read too
        one_by_one = (
            {i: em.email(tx, A, i, live=False) for i in ids},
            {i: em.locations_of_email(tx, A, i) for i in ids},
        )
        monkeypatch.setattr(kind, "all_of", counting)
        return ids, one_by_one, em.emails_and_locations(tx, A, [*ids, "nope"])

    try:
        ids, (rows, where), (chunked_rows, chunked_where) = await store.run(destroy_and_read)
    finally:
        await store.aclose()
    assert len(ids) > 3 and rows[ids[0]] is not None and rows[ids[0]].destroyed_seq == 999
    assert chunked_rows == rows and "nope" not in chunked_rows
    assert {i: chunked_where.get(i, []) for i in ids} == where
    assert len(statements) == 2
