"""store/emails.py: the bulk writers and JSON encoders of a sync batch."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from imapjmap.store import emails as em
from imapjmap.store.db import Store, Tx

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
