"""Cost of a small change in a big mailbox: ``sync.emails.apply()`` of one new message and of
one flag change, with the mailbox counts kept up to date from the changed threads (this
tree) against the full recount of every change (an older revision), side by side.

Run by hand::

    python3 bench/counts.py [--messages 100000] [--rounds 9] [--old REV]

It builds one cache file (in a temporary directory) with ``--messages`` messages in one
mailbox through the same code as a first sync (``apply()`` of batches of 1000: conversations
of a few messages, most of them read), then alternates old and new ``apply()`` of the same
kind of change on that cache and prints the medians.  The old ``sync/emails.py`` and
``store/emails.py`` come from ``git show REV:path`` (default ``HEAD``: run it before
committing, or pass the revision before the change), loaded as separate modules on the same
schema.  Each time is one ``Store.run`` (the transaction, commit included).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import importlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from imapjmap.imap.models import Address, Envelope, FetchRecord
from imapjmap.store import emails as em
from imapjmap.store import queries as q
from imapjmap.store.db import Store, Tx
from imapjmap.sync import emails as se
from imapjmap.sync import records

A = "Aacct"
BOX = "Minbox"
ROOT = Path(__file__).resolve().parent.parent


def message(n: int, *, flags: tuple[str, ...] = ()) -> FetchRecord:
    """Message ``n``: every fourth starts a conversation, the others reply to its start."""
    root = n - n % 4
    parents = [root] if n % 4 else []
    refs = " ".join(f"<{p}.{p * 7919}@lists.example.org>" for p in parents)
    subject = f"Quarterly planning notes, part {root}"
    return FetchRecord(
        seq=n,
        uid=n,
        flags=flags,
        modseq=n,
        internaldate=dt.datetime(2023, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=n),
        size=17000 + n % 5000,
        envelope=Envelope(
            date="Wed, 1 Jan 2025 10:00:00 +0000",
            subject=("Re: " if parents else "") + subject,
            from_=(Address("Ann Example", None, f"ann{n % 50}", "example.org"),),
            sender=(),
            reply_to=(),
            to=(Address("Bob Example", None, "bob", "example.org"),),
            cc=(Address(None, None, f"list{n % 7}", "lists.example.org"),),
            bcc=(),
            in_reply_to=f"<{parents[-1]}.{parents[-1] * 7919}@lists.example.org>"
            if parents
            else None,
            message_id=f"<{n}.{n * 7919}@lists.example.org>",
        ),
        sections={
            records.HEADERS_SECTION: (
                (f"References: {refs}\r\n" if refs else "")
                + f"List-Id: <list{n % 7}.lists.example.org>\r\n\r\n"
            ).encode()
        },
        x_guid=f"guid{n:08d}",
    )


def load_old(rev: str) -> tuple[ModuleType, ModuleType]:
    """The old store/emails.py and sync/emails.py as modules of their own."""
    folder = Path(tempfile.mkdtemp(prefix="counts-old-"))
    for path, name in (
        ("imapjmap/store/emails.py", "old_store_emails"),
        ("imapjmap/sync/emails.py", "old_sync_emails"),
    ):
        text = subprocess.run(
            ["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout
        text = text.replace(
            "from imapjmap.store import emails as em", "import old_store_emails as em"
        )
        (folder / f"{name}.py").write_text(text)
    sys.path.insert(0, str(folder))
    return importlib.import_module("old_store_emails"), importlib.import_module("old_sync_emails")


async def build(store: Store, messages: int) -> None:
    def setup(tx: Tx) -> None:
        q.ensure_account(tx, A, "u")
        row = q.MailboxRow(A, BOX, "INBOX", "INBOX", role="inbox", uidvalidity=1)
        q.insert_mailbox(tx, row, seq=q.next_seq(tx, A, ["Mailbox"]))

    await store.run(setup)
    batches = range(messages, 0, -se.BATCH)  # newest first, like a first sync
    for index, top in enumerate(batches):
        new = [
            message(n, flags=("\\Seen",) if n % 10 else ())
            for n in range(top, max(top - se.BATCH, 0), -1)
        ]
        last = index == len(batches) - 1
        delta = se.Delta(new=new, counts=last, first=True, prepared=se.prepare(new, A))
        await store.run(functools.partial(se.apply, account_id=A, mailbox_id=BOX, delta=delta))


async def timed(store: Store, fn: Any) -> float:
    started = time.perf_counter()
    await store.run(fn)
    return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--old", default="HEAD", help="revision with the full recount")
    args = parser.parse_args()
    _old_em, old_se = load_old(args.old)
    folder = tempfile.mkdtemp(prefix="counts-cache-")
    store = await Store.open(os.path.join(folder, "cache.sqlite3"))
    try:
        started = time.perf_counter()
        await build(store, args.messages)
        print(f"cache of {args.messages} messages built in {time.perf_counter() - started:.1f}s")

        def counts(tx: Tx) -> tuple[Any, Any]:
            row = q.mailbox(tx, A, BOX)
            assert row is not None
            stored = (row.total_emails, row.unread_emails, row.total_threads, row.unread_threads)
            return stored, em.mailbox_counts(tx, A, [BOX])[BOX]

        print("counts (stored, recounted):", await store.run(counts))
        times: dict[tuple[str, str], list[float]] = {}
        uid = args.messages
        flagged = args.messages // 2 + 1  # a reply in the middle of the mailbox
        seen = False
        for _ in range(args.rounds):
            for name, module in (("old", old_se), ("new", se)):
                uid += 1
                delta = module.Delta(new=[message(uid)])
                fn = functools.partial(module.apply, account_id=A, mailbox_id=BOX, delta=delta)
                times.setdefault(("one new message", name), []).append(await timed(store, fn))
                seen = not seen
                flags = ("\\Seen",) if seen else ()
                delta = module.Delta(flags={flagged: (flags, None)})
                fn = functools.partial(module.apply, account_id=A, mailbox_id=BOX, delta=delta)
                times.setdefault(("one flag change", name), []).append(await timed(store, fn))
        stored, recounted = await store.run(counts)
        print("counts after the rounds (stored, recounted):", (stored, recounted))
        assert stored == recounted
        print(f"apply() at {args.messages} messages, median of {args.rounds} (ms):")
        for change in ("one new message", "one flag change"):
            old = statistics.median(times[(change, "old")]) * 1000
            new = statistics.median(times[(change, "new")]) * 1000
            print(f"  {change:16}  old {old:8.1f}   new {new:7.1f}   {old / new:6.0f}x")
    finally:
        await store.aclose()


if __name__ == "__main__":
    asyncio.run(main())
