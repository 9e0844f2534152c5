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
