"""The cache writer's CPU per message during a first sync, without IMAP or parsing workers.

Builds ``--size`` synthetic messages (a third of them replies, so threading reads and writes
thread_refs as on real mail), prepares them as a parsing worker would, then writes them the
way ``EmailSync.fill`` does: newest first, ``BATCH * WRITE_BATCHES`` a transaction, the
middle batches uncounted and the last one counting and moving the cursor.  Prints the
process CPU of the writing (the transactions and their COMMITs: nothing else runs) per 1,000
messages, for each tenth of the fill, and in all.

    python bench/writer_cost.py --size 100000 [--profile out.pstats] [--cache-dir DIR]

``--messages FILE`` keeps the prepared messages for the next run of the same size.
With ``--cache-dir`` the cache is a file there (as in production: WAL, page cache); else a
temporary directory.  ``--postgresql URL`` writes to a PostgreSQL database instead.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime as dt
import functools
import pickle
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imapjmap.imap.models import Address, Envelope, FetchRecord
from imapjmap.store import queries as q
from imapjmap.store.db import Store, Tx
from imapjmap.sync import emails as se
from imapjmap.sync import records
from imapjmap.sync.parsing import prepare

A = "Abench"
BOX = "Minbox"


def synthetic(n: int, rng: random.Random) -> FetchRecord:
    parents = [rng.randrange(1, n)] if n > 1 and rng.random() < 0.33 else []
    subject = f"Topic {parents[0] if parents else n}"
    refs = " ".join(f"<{p}.{p * 7919 % 100003}@example.org>" for p in parents)
    return FetchRecord(
        seq=n,
        uid=n,
        flags=("\\Seen",) if rng.random() < 0.7 else (),
        modseq=n,
        internaldate=dt.datetime(2020, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=n),
        size=2000 + n % 5000,
        envelope=Envelope(
            date="Wed, 1 Jan 2025 10:00:00 +0000",
            subject=("Re: " if parents else "") + subject,
            from_=(Address("Ann Example", None, f"ann{n % 300}", "example.org"),),
            sender=(),
            reply_to=(),
            to=(Address(None, None, "bob", "example.org"),),
            cc=(),
            bcc=(),
            in_reply_to=f"<{parents[-1]}.{parents[-1] * 7919 % 100003}@example.org>"
            if parents
            else None,
            message_id=f"<{n}.{n * 7919 % 100003}@example.org>",
        ),
        sections={records.HEADERS_SECTION: f"References: {refs}\r\n\r\n".encode()}
        if parents
        else {},
        x_guid=f"{rng.getrandbits(128):032x}",
    )


def _io() -> dict[str, int]:
    """This process's read and write system calls and their bytes so far (the cache's page
    reads and WAL writes: the same from run to run, where CPU time varies on a shared
    machine)."""
    try:
        lines = Path("/proc/self/io").read_text().splitlines()
    except OSError:
        return {}
    return {k: int(v) for k, v in (line.split(": ") for line in lines)}


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=20000)
    ap.add_argument("--profile", help="write the writer's cProfile stats to this file")
    ap.add_argument("--cache-dir", help="keep the cache file in this directory")
    ap.add_argument("--postgresql", help="a PostgreSQL URL to write to instead")
    ap.add_argument("--messages", help="keep the prepared messages in this file, for the next run")
    args = ap.parse_args()
    rng = random.Random(12)
    t0 = time.monotonic()
    saved = Path(args.messages) if args.messages else None
    if saved is not None and saved.exists():
        messages = pickle.loads(saved.read_bytes())
    else:
        messages = prepare([synthetic(n, rng) for n in range(1, args.size + 1)], A)
        if saved is not None:
            saved.write_bytes(pickle.dumps(messages))
    messages.reverse()  # newest first, as a fill writes them
    print(f"prepared {len(messages):,} messages in {time.monotonic() - t0:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        where = args.postgresql or str(Path(args.cache_dir or tmp) / "cache.sqlite3")
        store = await Store.open(where)
        profile = cProfile.Profile(time.thread_time) if args.profile else None

        def setup(tx: Tx) -> None:
            q.ensure_account(tx, A, "u")
            mailbox = q.MailboxRow(A, BOX, "INBOX", "INBOX", role="inbox", uidvalidity=1)
            q.insert_mailbox(tx, mailbox, seq=q.next_seq(tx, A, ["Mailbox"]))

        def write(tx: Tx, delta: se.Delta) -> None:
            if profile is not None:
                profile.enable()
            try:
                se.apply(tx, A, BOX, delta)
            finally:
                if profile is not None:
                    profile.disable()

        try:
            await store.run(setup)
            per = se.BATCH * se.WRITE_BATCHES
            uncounted: set[str] = set()
            cursor = se.Cursor(1, args.size + 1, args.size, args.size)
            tenth = max(args.size // 10, per)
            io0 = _io()
            cpu0 = mark = time.process_time()
            wall0 = time.monotonic()
            for start in range(0, len(messages), per):
                chunk = messages[start : start + per]
                last = start + per >= len(messages)
                delta = se.plan_batch([], chunk, last=last, cursor=cursor, uncounted=uncounted)
                await store.run(functools.partial(write, delta=delta), account=A)
                done = start + len(chunk)
                if done % tenth == 0 or last:
                    now = time.process_time()
                    print(f"  {done:>9,}: {(now - mark) / (tenth / 1000):6.2f} s CPU / 1,000")
                    mark = now
            cpu = time.process_time() - cpu0
            print(
                f"writer CPU {cpu:.2f} s for {args.size:,} messages:"
                f" {cpu / args.size * 1e6:.0f} us a message"
                f" (wall {time.monotonic() - wall0:.1f} s)"
            )
            io = {k: v - io0.get(k, 0) for k, v in _io().items()}
            print(
                "page I/O of the writing: {:,} reads ({:.0f} MB), {:,} writes ({:.0f} MB)".format(
                    io.get("syscr", 0), io.get("rchar", 0) / 1e6,
                    io.get("syscw", 0), io.get("wchar", 0) / 1e6,
                )
            )  # fmt: skip
            counts = await store.read(
                lambda tx: tx.one(
                    "SELECT total_emails, unread_emails, total_threads, unread_threads"
                    " FROM mailboxes WHERE account_id = ? AND id = ?",
                    (A, BOX),
                )
            )
            print(f"counts {tuple(counts) if counts else None}")
        finally:
            await store.aclose()
        if profile is not None:
            profile.dump_stats(args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
