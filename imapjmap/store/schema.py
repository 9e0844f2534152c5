"""The cache schema, as an ordered list of migrations.

Theory of operation: ``MIGRATIONS[n]`` upgrades a cache whose ``PRAGMA user_version`` is ``n``
to version ``n + 1``.  ``store.db`` applies every pending migration, and sets the new
``user_version``, in ONE transaction when the store opens; a cache whose version is higher
than ``len(MIGRATIONS)`` was written by newer code and is refused (``CacheCorrupt``).  A
migration is a script of ``;``-separated statements; ``store.db`` splits it with
``sqlite3.complete_statement``, so triggers with inner semicolons are fine.

Rule 1: never edit a migration that has shipped; append a new one.
Rule 2: no ``BEGIN``/``COMMIT``/``PRAGMA`` in a migration; the runner owns the transaction.
Rule 3: every table holds an ``account_id`` column, first in its primary key, referencing
        ``accounts`` with ``ON DELETE CASCADE``; every query filters on it.  The one
        exception is ``login_failures`` (version 5), which no account owns.
Rule 4: a *change-tracked* table (one that feeds ``Foo/changes``) has the columns
        ``id TEXT``, ``created_seq``, ``updated_seq`` (NOT NULL), ``destroyed_seq`` (NULL while
        live; a tombstone otherwise, with ``updated_seq = destroyed_seq``) and an index on
        ``(account_id, updated_seq)``.  Register it in ``queries.CHANGE_TABLES`` so that the
        generic change/tombstone/purge helpers accept it.

Version 1 tables:

``accounts``
    One row per JMAP account.  ``epoch`` is a random token minted when the row is created;
    JMAP states embed it, so a wiped cache yields new epochs and old states are refused
    instead of giving wrong deltas.  ``seq`` is THE account-wide change counter: a write
    transaction takes ``seq + 1`` once.  ``delimiter`` is the upstream hierarchy separator.
``type_states``
    Per JMAP type ("Mailbox", "Email", ...): ``seq`` is the highest seq that touched the
    type (the type's state); ``floor_seq`` is the lowest ``sinceState`` seq from which
    changes can still be computed (raised when tombstones are purged).
``seq_log``
    When each seq was taken (``at``, Unix time), so a retention in days maps to a seq.
    Pruned together with the tombstones.
``kv``
    Small per-account facts (capabilities seen, ...); values are text (callers encode).
``mailboxes``
    Change-tracked.  ``imap_name`` is the full decoded IMAP name, unique among the live rows
    of an account (a partial unique index, so a tombstone frees it).  ``name`` is the leaf.
    ``my_rights`` is a JSON object of booleans.  ``source_id`` is the upstream id used to
    recognise a mailbox after a rename (RFC 8474 MAILBOXID or Dovecot X-GUID).
    ``uidvalidity``/``uidnext``/``highestmodseq``/``messages`` are the IMAP sync cursor
    (never shown to clients).  ``props_seq`` is the seq of the last change to a property
    other than the four counts (Mailbox/changes ``updatedProperties``).

Version 2 (the Email read path):

``mailboxes.synced_*``
    The cursor the *email* rows of that mailbox reflect (uidvalidity, uidnext, modseq,
    messages); the plain columns are what the last LIST-STATUS said.  A mailbox whose two
    cursors agree needs no email sync.
``emails``
    Change-tracked; one row per JMAP Email (one message, possibly in several mailboxes).
    The list properties a mail list needs live here so that Email/query and the list part
    of Email/get never touch IMAP: ``received_at`` (Unix seconds, INTERNALDATE),
    ``headers`` (JSON: the convenience header properties already in JMAP form),
    ``sort_*`` (collation keys), ``keywords`` and ``mailbox_ids`` (JSON objects, derived
    from ``locations`` at every change).
``locations``
    Where each Email lives upstream: (mailbox, uid) with its flags and modseq.  A location
    flagged ``\\Deleted`` is kept (``deleted = 1``) but hidden from JMAP.
``threads``
    Change-tracked Thread rows.
``thread_refs``
    For servers without THREADID: every Message-ID seen (own, In-Reply-To, References) and
    the thread it belongs to, with the base subject (RFC 5256) used to refuse joins of
    unrelated conversations.

Version 3 (the write path):

``blobs``
    Uploaded blobs (RFC 8620 §6.1), scoped to the account, deleted after ``expires_at``.
``identities``
    Change-tracked Identity rows: those from the configuration (``from_config``, not
    deletable) and those the user created.  ``reply_to``/``bcc`` are JSON or NULL.
``submissions``
    Change-tracked EmailSubmission rows; ``envelope`` and ``delivery_status`` are JSON.

Version 4 (push):

``push_subscriptions``
    RFC 8620 §7.2 PushSubscriptions of an account (not change-tracked: the type has no
    state).  ``verification_code`` is the code the server sent; ``verified`` turns 1 once
    the client echoed it.  ``keys`` and ``types`` are JSON or NULL; ``expires`` and
    ``created_at`` are Unix seconds.

Version 5 (the failed-login throttle of several instances):

``login_failures``
    One row per login the upstream refused (``http.throttle`` Rule 6), keyed by what the
    throttle counts: ``kind`` "address" (an IPv4 address or an IPv6 /64) or "username"
    (folded), and ``key``; never a password nor anything derived from one.  ``at`` is when
    (Unix seconds), ``expires`` when it stops counting; expired rows are deleted by a later
    failure's write.  The one table without an account (Rule 3): a failed login belongs to
    no account, and a guessed username may name none.

Version 6 (Gmail mode's grace over several instances):

``write_grace``
    Emails of a Gmail account that an instance wrote lately (``sync.gmail`` "Grace"), so
    that every instance sharing the cache keeps a copy that vanished meanwhile.  ``ends``
    is when the grace ends (Unix seconds); rows that ended are deleted by a later write of
    the account's.
"""

from __future__ import annotations

from typing import Final

# ``PRAGMA application_id`` of every cache file ("IJMP"): a SQLite file that carries another
# id is not ours, and is refused rather than migrated.
APPLICATION_ID: Final = 0x494A4D50

_V1: Final = """
CREATE TABLE accounts (
    account_id  TEXT NOT NULL PRIMARY KEY,
    username    TEXT NOT NULL,
    epoch       TEXT NOT NULL,
    seq         INTEGER NOT NULL DEFAULT 0,
    delimiter   TEXT,
    created_at  REAL
);

CREATE TABLE type_states (
    account_id  TEXT NOT NULL REFERENCES accounts(account_id) ON DELETE CASCADE,
    type        TEXT NOT NULL,
    seq         INTEGER NOT NULL DEFAULT 0,
    floor_seq   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, type)
) WITHOUT ROWID;

CREATE TABLE seq_log (
    account_id  TEXT NOT NULL REFERENCES accounts(account_id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    at          REAL NOT NULL,
    PRIMARY KEY (account_id, seq)
) WITHOUT ROWID;

CREATE TABLE kv (
    account_id  TEXT NOT NULL REFERENCES accounts(account_id) ON DELETE CASCADE,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    PRIMARY KEY (account_id, key)
) WITHOUT ROWID;

CREATE TABLE mailboxes (
    account_id      TEXT NOT NULL REFERENCES accounts(account_id) ON DELETE CASCADE,
    id              TEXT NOT NULL,
    imap_name       TEXT NOT NULL,
    name            TEXT NOT NULL,
    parent_id       TEXT,
    role            TEXT,
    sort_order      INTEGER NOT NULL DEFAULT 0,
    is_subscribed   INTEGER NOT NULL DEFAULT 0,
    total_emails    INTEGER NOT NULL DEFAULT 0,
    unread_emails   INTEGER NOT NULL DEFAULT 0,
    total_threads   INTEGER NOT NULL DEFAULT 0,
    unread_threads  INTEGER NOT NULL DEFAULT 0,
    my_rights       TEXT NOT NULL DEFAULT '{}',
    source_id       TEXT,
    uidvalidity     INTEGER,
    uidnext         INTEGER,
    highestmodseq   INTEGER,
    messages        INTEGER,
    created_seq     INTEGER NOT NULL,
    updated_seq     INTEGER NOT NULL,
    props_seq       INTEGER NOT NULL,
    destroyed_seq   INTEGER,
    PRIMARY KEY (account_id, id)
);

CREATE UNIQUE INDEX mailboxes_live_imap_name
    ON mailboxes (account_id, imap_name) WHERE destroyed_seq IS NULL;
CREATE INDEX mailboxes_updated_seq ON mailboxes (account_id, updated_seq);
CREATE INDEX mailboxes_source_id ON mailboxes (account_id, source_id);
"""

_V2: Final = """
ALTER TABLE mailboxes ADD COLUMN synced_uidvalidity INTEGER;
ALTER TABLE mailboxes ADD COLUMN synced_uidnext INTEGER;
ALTER TABLE mailboxes ADD COLUMN synced_modseq INTEGER;
ALTER TABLE mailboxes ADD COLUMN synced_messages INTEGER;

CREATE TABLE emails (
    account_id      TEXT NOT NULL REFERENCES accounts(account_id) ON DELETE CASCADE,
    id              TEXT NOT NULL,
    thread_id       TEXT NOT NULL,
    size            INTEGER NOT NULL,
    received_at     INTEGER NOT NULL,
    sent_at         TEXT,
    subject         TEXT,
    sort_subject    TEXT NOT NULL DEFAULT '',
    sort_from       TEXT NOT NULL DEFAULT '',
    sort_to         TEXT NOT NULL DEFAULT '',
    headers         TEXT NOT NULL DEFAULT '{}',
    message_ids     TEXT NOT NULL DEFAULT '[]',
    has_attachment  INTEGER NOT NULL DEFAULT 0,
    preview         TEXT,
    keywords        TEXT NOT NULL DEFAULT '{}',
    mailbox_ids     TEXT NOT NULL DEFAULT '{}',
    created_seq     INTEGER NOT NULL,
    updated_seq     INTEGER NOT NULL,
    destroyed_seq   INTEGER,
    PRIMARY KEY (account_id, id)
);
CREATE INDEX emails_updated_seq ON emails (account_id, updated_seq);
CREATE INDEX emails_received ON emails (account_id, received_at) WHERE destroyed_seq IS NULL;
CREATE INDEX emails_thread ON emails (account_id, thread_id);

CREATE TABLE locations (
    account_id      TEXT NOT NULL REFERENCES accounts(account_id) ON DELETE CASCADE,
    mailbox_id      TEXT NOT NULL,
    uid             INTEGER NOT NULL,
    email_id        TEXT NOT NULL,
    modseq          INTEGER,
    flags           TEXT NOT NULL DEFAULT '',
    deleted         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, mailbox_id, uid)
) WITHOUT ROWID;
CREATE INDEX locations_email ON locations (account_id, email_id);

CREATE TABLE threads (
    account_id      TEXT NOT NULL REFERENCES accounts(account_id) ON DELETE CASCADE,
    id              TEXT NOT NULL,
    created_seq     INTEGER NOT NULL,
    updated_seq     INTEGER NOT NULL,
    destroyed_seq   INTEGER,
    PRIMARY KEY (account_id, id)
);
CREATE INDEX threads_updated_seq ON threads (account_id, updated_seq);

CREATE TABLE thread_refs (
    account_id      TEXT NOT NULL REFERENCES accounts(account_id) ON DELETE CASCADE,
    message_id      TEXT NOT NULL,
    thread_id       TEXT NOT NULL,
    base_subject    TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (account_id, message_id)
) WITHOUT ROWID;
CREATE INDEX thread_refs_thread ON thread_refs (account_id, thread_id);
"""

_V3: Final = """
CREATE TABLE blobs (
    account_id      TEXT NOT NULL REFERENCES accounts(account_id) ON DELETE CASCADE,
    id              TEXT NOT NULL,
    type            TEXT NOT NULL,
    size            INTEGER NOT NULL,
    data            BLOB NOT NULL,
    created_at      REAL NOT NULL,
    expires_at      REAL NOT NULL,
    PRIMARY KEY (account_id, id)
);
CREATE INDEX blobs_expiry ON blobs (expires_at);

CREATE TABLE identities (
    account_id      TEXT NOT NULL REFERENCES accounts(account_id) ON DELETE CASCADE,
    id              TEXT NOT NULL,
    name            TEXT NOT NULL DEFAULT '',
    email           TEXT NOT NULL,
    reply_to        TEXT,
    bcc             TEXT,
    text_signature  TEXT NOT NULL DEFAULT '',
    html_signature  TEXT NOT NULL DEFAULT '',
    may_delete      INTEGER NOT NULL DEFAULT 1,
    from_config     INTEGER NOT NULL DEFAULT 0,
    created_seq     INTEGER NOT NULL,
    updated_seq     INTEGER NOT NULL,
    destroyed_seq   INTEGER,
    PRIMARY KEY (account_id, id)
);
CREATE INDEX identities_updated_seq ON identities (account_id, updated_seq);

CREATE TABLE submissions (
    account_id      TEXT NOT NULL REFERENCES accounts(account_id) ON DELETE CASCADE,
    id              TEXT NOT NULL,
    identity_id     TEXT NOT NULL,
    email_id        TEXT NOT NULL,
    thread_id       TEXT NOT NULL,
    envelope        TEXT NOT NULL,
    send_at         INTEGER NOT NULL,
    undo_status     TEXT NOT NULL,
    delivery_status TEXT,
    created_seq     INTEGER NOT NULL,
    updated_seq     INTEGER NOT NULL,
    destroyed_seq   INTEGER,
    PRIMARY KEY (account_id, id)
);
CREATE INDEX submissions_updated_seq ON submissions (account_id, updated_seq);
"""

_V4: Final = """
CREATE TABLE push_subscriptions (
    account_id        TEXT NOT NULL REFERENCES accounts(account_id) ON DELETE CASCADE,
    id                TEXT NOT NULL,
    device_client_id  TEXT NOT NULL,
    url               TEXT NOT NULL,
    keys              TEXT,
    verification_code TEXT NOT NULL,
    verified          INTEGER NOT NULL DEFAULT 0,
    expires           REAL NOT NULL,
    types             TEXT,
    created_at        REAL NOT NULL,
    PRIMARY KEY (account_id, id)
);
CREATE INDEX push_subscriptions_expires ON push_subscriptions (expires);
"""

_V5: Final = """
CREATE TABLE login_failures (
    kind        TEXT NOT NULL,
    key         TEXT NOT NULL,
    at          REAL NOT NULL,
    expires     REAL NOT NULL
);
CREATE INDEX login_failures_key ON login_failures (kind, key, at);
CREATE INDEX login_failures_expires ON login_failures (expires);
"""

_V6: Final = """
CREATE TABLE write_grace (
    account_id  TEXT NOT NULL REFERENCES accounts(account_id) ON DELETE CASCADE,
    email_id    TEXT NOT NULL,
    ends        REAL NOT NULL,
    PRIMARY KEY (account_id, email_id)
);
"""

MIGRATIONS: Final[tuple[str, ...]] = (_V1, _V2, _V3, _V4, _V5, _V6)
"""``MIGRATIONS[n]`` takes a cache from ``user_version`` n to n + 1."""

SCHEMA_VERSION: Final = len(MIGRATIONS)
