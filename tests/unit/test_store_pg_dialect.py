"""The PostgreSQL dialect of the cache's SQL (``store.pg`` Rules 1, 2, 6): pure string
translations, table-driven.  The statements' effects on a real server are tested by the
store tests' PostgreSQL pass and tests/integration/test_store_postgresql.py."""

from __future__ import annotations

import pytest

from imapjmap.store import pg, schema

STATEMENTS = [
    # placeholders, and a literal % kept through psycopg's formatting
    ("SELECT a FROM t WHERE b = ? AND c = ?", "SELECT a FROM t WHERE b = %s AND c = %s"),
    ("SELECT 1 WHERE x LIKE '%y'", "SELECT 1 WHERE x ILIKE '%%y'"),
    # SQLite's LIKE ignores ASCII case; PostgreSQL's does not
    (
        "e.headers LIKE ? ESCAPE '\\'",
        "e.headers ILIKE %s ESCAPE '\\'",
    ),
    # planner hints dropped
    (
        "SELECT x FROM locations INDEXED BY locations_email WHERE a = ?",
        "SELECT x FROM locations WHERE a = %s",
    ),
    (
        "(SELECT DISTINCT +email_id AS email_id FROM l) AS l CROSS JOIN emails e ON e.id = 1",
        "(SELECT DISTINCT email_id AS email_id FROM l) AS l JOIN emails e ON e.id = 1",
    ),
    ("SET seq = seq + 1", "SET seq = seq + 1"),  # arithmetic is not a hint
    ("instr(e.keywords, '\"$seen\"') = 0", "strpos(e.keywords, '\"$seen\"') = 0"),
    (
        "json_extract(e.keywords, ?) IS NULL",
        "jsonb_path_query_first(e.keywords::jsonb, %s::jsonpath) IS NULL",
    ),
    (
        "e.id IN (SELECT value FROM json_each(?))",
        "e.id IN (SELECT value FROM jsonb_array_elements_text(%s::jsonb))",
    ),
    # INSERT OR REPLACE: an upsert on the table's primary key, every other column replaced
    (
        "INSERT OR REPLACE INTO thread_refs (account_id, message_id, thread_id, base_subject)"
        " VALUES (?, ?, ?, ?),(?, ?, ?, ?)",
        "INSERT INTO thread_refs (account_id, message_id, thread_id, base_subject)"
        " VALUES (%s, %s, %s, %s),(%s, %s, %s, %s) ON CONFLICT (account_id, message_id)"
        " DO UPDATE SET thread_id = excluded.thread_id, base_subject = excluded.base_subject",
    ),
    (
        "INSERT OR IGNORE INTO kv (account_id, key, value) VALUES (?, ?, ?)",
        "INSERT INTO kv (account_id, key, value) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
    ),
]


@pytest.mark.parametrize(("sqlite", "postgresql"), STATEMENTS)
def test_statements_translate(sqlite: str, postgresql: str) -> None:
    assert pg.translate(sqlite) == postgresql


def test_every_table_replaced_into_has_a_known_primary_key() -> None:
    """The keys come from the migrations themselves, so a new table needs no list."""
    keys = pg._PRIMARY_KEYS
    assert keys["locations"] == ("account_id", "mailbox_id", "uid")
    assert keys["thread_refs"] == ("account_id", "message_id")
    assert keys["push_subscriptions"] == ("account_id", "id")
    assert keys["accounts"] == ("account_id",)
    with pytest.raises(Exception, match="no primary key"):
        pg.translate("INSERT OR REPLACE INTO nowhere (a) VALUES (?)")


DDL = [
    (
        "CREATE TABLE t (\n    a  TEXT NOT NULL,\n    n  INTEGER,\n    PRIMARY KEY (a)\n)"
        " WITHOUT ROWID;",
        'CREATE TABLE t (\n    a  TEXT COLLATE "C" NOT NULL,\n    n  BIGINT,\n'
        "    PRIMARY KEY (a)\n)",
    ),
    (
        "ALTER TABLE m ADD COLUMN synced_modseq INTEGER",
        "ALTER TABLE m ADD COLUMN synced_modseq BIGINT",
    ),
    (
        "CREATE TABLE b (data BLOB NOT NULL, at REAL NOT NULL)",
        "CREATE TABLE b (data BYTEA NOT NULL, at DOUBLE PRECISION NOT NULL)",
    ),
    (
        "CREATE INDEX e ON emails (account_id, received_at) WHERE destroyed_seq IS NULL",
        "CREATE INDEX e ON emails (account_id, received_at) WHERE destroyed_seq IS NULL",
    ),
]


@pytest.mark.parametrize(("sqlite", "postgresql"), DDL)
def test_migrations_translate(sqlite: str, postgresql: str) -> None:
    """BIGINT: modseqs are 63-bit and UIDVALIDITY is unsigned 32-bit; "C": SQLite's order."""
    assert pg.translate_ddl(sqlite) == postgresql


def test_no_migration_keeps_a_sqlite_only_type() -> None:
    for script in schema.MIGRATIONS:
        for statement in pg.split_statements(script):
            translated = pg.translate_ddl(statement)
            for word in ("INTEGER", "WITHOUT ROWID", " BLOB", " REAL"):
                assert word not in translated, statement[:60]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:s3cret@db:5432/x", "postgresql://u:***@db:5432/x"),
        ("postgresql://u@db/x", "postgresql://u@db/x"),
        ("postgres://:pw@db/x?sslmode=require", "postgres://:***@db/x?sslmode=require"),
    ],
)
def test_a_password_in_a_url_is_never_shown(url: str, shown: str) -> None:
    assert pg.redact(url) == shown


def test_account_lock_keys_are_stable_and_never_the_all_accounts_key() -> None:
    assert pg.lock_key("alice") == pg.lock_key("alice")
    assert pg.lock_key("alice") != pg.lock_key("bob")
    assert all(0 < pg.lock_key(f"a{n}") < 2**31 for n in range(1000))
