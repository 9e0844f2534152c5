"""A randomized soak of concurrent writers on the same messages (``upstream.imap`` Rule 4).

Three JMAP clients and two plain IMAP clients (stdlib ``imaplib``, in threads) change
flags, move and delete the same 50 messages for a few seconds against each backend.  Every
write is logged with its interval (sent → answered) and whether the proxy confirmed or
refused it.  Then the oracle reads what is really in IMAP and checks:

* every confirmed keyword add or remove is on every copy of the message left (a confirmed
  write may only be undone by a later write, so each writer owns its keywords and only
  its own last write on a keyword decides it);
* a refused keyword write is not there;
* every confirmed destroy is gone (no copy left that is not marked ``\\Deleted``);
* JMAP's Email/get agrees with IMAP on every message: which exist, their mailboxes and
  all their keywords (CORE-SET-02: each update and destroy done, or not, on its own),
  the flags only the IMAP clients change included, which reach JMAP through the sync
  alone.  Where two clients moved a message into one mailbox at once, that mailbox holds
  two copies, which may differ in flags: the oracle keeps every copy, and JMAP's keywords
  are the union over them (RFC 8621 has one set of keywords per Email).

What no proxy can vouch for is left out of the checks, so that they are sound: a write
whose interval overlaps a move of the same message done as COPY + EXPUNGE (another client
on a server without MOVE, or a JMAP move, which the proxy may have to do so), because a
STORE proven on the old copy between the COPY and the EXPUNGE is lost with that copy.
Where the server makes a ``UID MOVE`` one step for other clients too (Cyrus, see
:func:`move_is_atomic`), keyword writes racing an IMAP client's MOVE are checked: they
are the race the proxy must win, by resyncing and writing at the message's new place —
unless two clients moved the message at once, which is no single atomic move any more.
Dovecot's MOVE is a copy and an expunge inside the server, with the same window as
COPY + EXPUNGE, so there a write overlapping it is left out too — unless such a move
cannot have changed the outcome: a keyword write that set the keyword as it already was
is checked all the same (:meth:`Rules._keyword`).

``IMAPJMAP_SOAK_SECONDS`` and ``IMAPJMAP_SOAK_SEED`` change the length and the seed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import imaplib
import logging
import os
import random
import re
import threading
import time
from collections import defaultdict
from typing import Any

from devservers.cyrus import CyrusServer
from imapjmap.store.emails import keywords_from_flags
from tests.conftest import ImapServer, ImapUser, advertises
from tests.integration.conftest import Jmap
from tests.integration.test_email_set import boxes, message

log = logging.getLogger(__name__)

SECONDS = float(os.environ.get("IMAPJMAP_SOAK_SECONDS", "10"))
SEED = int(os.environ.get("IMAPJMAP_SOAK_SEED", "20261206"))
MESSAGES = 50
JMAP_CLIENTS = 3
IMAP_CLIENTS = 2
MAILBOXES = ("INBOX", "Archive", "Trash")
DELETE_BUDGET = 8  # per kind of client, so that most messages live to the end
# The soak must have written enough to prove anything: on a loaded machine it runs past
# SECONDS (up to four times as long) until the JMAP clients have this many confirmed keyword
# writes, rather than fail or pass on a handful.  About half of them end up checked (the rest
# overlap a move the checker cannot judge), and the test wants more than 10 checked.
ENOUGH_JMAP_KEYWORD_WRITES = 30
# In that overtime each plain IMAP client pauses this long before each write: at full speed
# two of them made about 40 moves a second and the three JMAP clients, whose every write
# refreshes over that churn, got 16 keyword writes confirmed in 30 s (two instances on
# PostgreSQL, load average 8).
OVERTIME_IMAP_PAUSE = 0.1


@dataclasses.dataclass
class Write:
    actor: str
    kind: str  # "keyword", "move" or "delete"
    subject: str
    start: float
    end: float = 0.0
    keyword: str | None = None
    value: bool | None = None
    outcome: str = "confirmed"  # or "refused", or "error" (unknown)
    atomic: bool = True  # a move as one command (UID MOVE)
    detail: str = ""


class Log:
    def __init__(self) -> None:
        self.writes: list[Write] = []
        self.lock = threading.Lock()
        self.deletes: dict[str, int] = defaultdict(int)
        self.jmap_keyword_writes = 0

    def add(self, write: Write) -> None:
        with self.lock:
            self.writes.append(write)
            if write.actor.startswith("jmap") and write.kind == "keyword":
                self.jmap_keyword_writes += write.outcome == "confirmed"

    def running(self, deadline: float) -> bool:
        now = time.monotonic()
        if now < deadline:
            return True
        overtime = now < deadline + 3 * SECONDS
        with self.lock:
            return overtime and self.jmap_keyword_writes < ENOUGH_JMAP_KEYWORD_WRITES

    def may_delete(self, kind: str) -> bool:
        with self.lock:
            if self.deletes[kind] >= DELETE_BUDGET:
                return False
            self.deletes[kind] += 1
            return True


def subject_of(i: int) -> str:
    return f"soak {i:03d}"


# -- the JMAP clients ------------------------------------------------------------------------


async def jmap_client(
    n: int, jmap: Jmap, ids: dict[str, str], mailbox_ids: list[str], book: Log, deadline: float
) -> None:
    rng = random.Random(f"{SEED}-jmap-{n}")
    subjects = sorted(ids)
    keywords = [f"j{n}a", f"j{n}b"]
    while book.running(deadline):
        subject = rng.choice(subjects)
        email_id = ids[subject]
        roll = rng.random()
        if roll < 0.03 and book.may_delete("jmap"):
            write = Write(f"jmap{n}", "delete", subject, time.monotonic())
            args: dict[str, Any] = {"destroy": [email_id]}
        elif roll < 0.3:
            target = rng.choice(mailbox_ids)
            write = Write(f"jmap{n}", "move", subject, time.monotonic(), atomic=False)
            args = {"update": {email_id: {"mailboxIds": {target: True}}}}
        else:
            keyword, value = rng.choice(keywords), rng.random() < 0.6
            write = Write(
                f"jmap{n}", "keyword", subject, time.monotonic(), keyword=keyword, value=value
            )
            args = {"update": {email_id: {f"keywords/{keyword}": True if value else None}}}
        name, result = await jmap.call("Email/set", args)
        write.end = time.monotonic()
        if name != "Email/set":
            write.outcome, write.detail = "error", str(result)
        elif write.kind == "delete":
            if email_id not in (result["destroyed"] or []):
                write.outcome = "refused"
                write.detail = str((result["notDestroyed"] or {}).get(email_id))
        elif email_id not in (result["updated"] or {}):
            write.outcome = "refused"
            write.detail = str((result["notUpdated"] or {}).get(email_id))
        book.add(write)
        await asyncio.sleep(rng.random() * 0.005)


# -- the plain IMAP clients --------------------------------------------------------------------


def move_is_atomic(server: ImapServer) -> bool:
    """Whether the server's ``UID MOVE`` is one step for other clients' writes too.

    Cyrus keeps the source mailbox locked while it copies and expunges, so another
    client's STORE or EXPUNGE of the message waits and lands wholly before or after the
    move.  Dovecot takes no lock across its steps: it reads the message and its flags,
    commits the copy to the target and only then expunges the source.  A STORE that lands
    on the source in between is proven there (the UID exists, the untagged FETCH shows the
    flags), and a resync then still finds the message only there, with them; the copy the
    move commits afterwards has the flags from before the STORE, and once the source is
    expunged the STORE is lost.  No client can see such a move coming before it commits,
    so a keyword write overlapping it is one no proxy can vouch for, as with COPY +
    EXPUNGE.  (An expunge of the source in between is noticed: the commit of the copy
    fails and the MOVE answers ``NO [EXPUNGEISSUED]``.)
    """
    return isinstance(server, CyrusServer)


def imap_client(n: int, user: ImapUser, atomic_move: bool, book: Log, deadline: float) -> None:
    rng = random.Random(f"{SEED}-imap-{n}")
    client = user.connect()
    try:
        has_move = advertises(client, "MOVE")
        has_uidplus = advertises(client, "UIDPLUS")
        while book.running(deadline):
            if time.monotonic() > deadline:
                # overtime on a loaded machine: still racing, but slowly enough that the
                # JMAP clients' writes (each a refresh over this churn) get their turn
                time.sleep(OVERTIME_IMAP_PAUSE)
            mailbox = rng.choice(MAILBOXES)
            assert client.select(f'"{mailbox}"')[0] == "OK"
            typ, data = client.uid("SEARCH", "NOT", "DELETED")
            uids = data[0].split() if typ == "OK" and data and data[0] else []
            if not uids:
                continue
            uid = rng.choice(uids).decode()
            roll = rng.random()
            if roll < 0.5:  # its own flags: modseqs move under the proxy (UNCHANGEDSINCE)
                op = rng.choice(["+FLAGS.SILENT", "-FLAGS.SILENT"])
                client.uid("STORE", uid, op, f"(i{n}{rng.choice('ab')})")
                continue
            subject = _subject(client, uid)
            if subject is None:
                continue  # moved or expunged by someone else meanwhile
            start = time.monotonic()
            if roll < 0.95:
                target = rng.choice([m for m in MAILBOXES if m != mailbox])
                write = Write(f"imap{n}", "move", subject, start, atomic=has_move and atomic_move)
                if has_move:
                    client.uid("MOVE", uid, f'"{target}"')
                else:
                    client.uid("COPY", uid, f'"{target}"')
                    _expunge(client, uid, has_uidplus)
            elif book.may_delete("imap"):
                write = Write(f"imap{n}", "delete", subject, start, atomic=False)
                _expunge(client, uid, has_uidplus)
            else:
                continue
            write.end = time.monotonic()
            book.add(write)
    finally:
        with contextlib.suppress(Exception):
            client.logout()


def _subject(client: imaplib.IMAP4, uid: str) -> str | None:
    typ, data = client.uid("FETCH", uid, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    for item in data if typ == "OK" else []:
        if isinstance(item, tuple):
            return item[1].decode().split(":", 1)[1].strip()
    return None


def _expunge(client: imaplib.IMAP4, uid: str, has_uidplus: bool) -> None:
    client.uid("STORE", uid, "+FLAGS.SILENT", "(\\Deleted)")
    if has_uidplus:
        client.uid("EXPUNGE", uid)
    else:
        client.expunge()


# -- what is there at the end ------------------------------------------------------------------


def imap_state(user: ImapUser) -> dict[str, list[tuple[str, set[str]]]]:
    """subject → (mailbox, flags) of every copy not marked \\Deleted.

    A mailbox may hold two copies of one message (two clients moved it there at once, each
    copying it before either expunged it), with different flags: both are kept, as the
    proxy keeps both (an Email's keywords are the union over its copies).
    """
    client = user.connect()
    out: dict[str, list[tuple[str, set[str]]]] = defaultdict(list)
    try:
        for mailbox in MAILBOXES:
            assert client.select(f'"{mailbox}"', readonly=True)[0] == "OK"
            typ, data = client.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            assert typ == "OK", data
            for item in data:
                if not isinstance(item, tuple):
                    continue
                found = re.search(rb"FLAGS \(([^)]*)\)", item[0])
                assert found, item[0]
                flags = {f.lower() for f in found.group(1).decode().split()} - {"\\recent"}
                if "\\deleted" not in flags:
                    subject = item[1].decode().split(":", 1)[1].strip()
                    out[subject].append((mailbox, flags))
    finally:
        with contextlib.suppress(Exception):
            client.logout()
    return dict(out)


async def jmap_state(jmap: Jmap, names: dict[str, str]) -> dict[str, tuple[set[str], set[str]]]:
    """subject → (IMAP names of its mailboxes, keywords) as the proxy reports them."""
    ids = (await jmap.ok("Email/query", {"limit": 1000}))["ids"]
    got = await jmap.ok(
        "Email/get", {"ids": ids, "properties": ["subject", "mailboxIds", "keywords"]}
    )
    return {
        e["subject"]: ({names[m] for m in e["mailboxIds"]}, set(e["keywords"])) for e in got["list"]
    }


def overlaps(a: Write, b: Write) -> bool:
    return a.start <= b.end and b.start <= a.end


class Rules:
    """The checks of the module docstring over the log of writes and the final state."""

    def __init__(self, writes: list[Write], final: dict[str, list[tuple[str, set[str]]]]) -> None:
        self.writes = writes
        self.final = final
        self.moves: dict[str, list[Write]] = defaultdict(list)
        for w in writes:
            if w.kind in ("move", "delete"):
                self.moves[w.subject].append(w)
        for moves in self.moves.values():
            for m in moves:
                # two clients moving one message at once may both copy it before either
                # expunges it (a MOVE is a copy and an expunge inside the server): that
                # is no single atomic move any more
                if any(o.actor != m.actor and overlaps(o, m) for o in moves):
                    m.atomic = False
        self.problems: list[str] = []
        self.checked = 0

    def unsound(self, w: Write, *, strict: bool = False) -> bool:
        """Overlaps a change of the message's mailboxes that no one can vouch for (with
        ``strict``: any change of them at all)."""
        return any(
            overlaps(w, m) and (strict or not m.atomic) for m in self.moves[w.subject] if m is not w
        )

    def keywords(self) -> None:
        by_flag: dict[tuple[str, str], list[Write]] = defaultdict(list)
        for w in self.writes:
            if w.kind == "keyword" and w.keyword is not None:
                by_flag[(w.subject, w.keyword)].append(w)
        for (subject, keyword), chain in by_flag.items():
            copies = self.final.get(subject)
            if copies:  # else deleted: nothing holds the keyword any more
                self._keyword(subject, keyword, sorted(chain, key=lambda w: w.start), copies)

    def _keyword(
        self, subject: str, keyword: str, chain: list[Write], copies: list[tuple[str, set[str]]]
    ) -> None:
        """One writer's writes of one keyword, one request at a time, followed in order to
        what the keyword may be at the end.  A sound confirmed write decides it; a sound
        refused one must not have landed.  Any other write may or may not have stuck: a
        move it overlaps may have copied the message with the keyword as it was before
        (and dropped the copy the write landed on), or carried a write refused as
        unproven; so its value is added to what may be.  Where that leaves one value, it
        is checked: a write overlapping such a move that set the keyword as it already
        was cannot have been undone by it."""
        may_be = {False}  # the soak's messages start without keywords
        what = chain[-1]
        for w in chain:
            if w.outcome == "confirmed" and not self.unsound(w):
                may_be = {bool(w.value)}
            elif w.outcome == "refused" and not self.unsound(w, strict=True):
                continue
            else:
                may_be.add(bool(w.value))
            if w.outcome == "confirmed":
                what = w
        if len(may_be) != 1:
            return
        (expected,) = may_be
        self.checked += 1
        for mailbox, flags in copies:
            if (keyword in flags) != expected:
                self.problems.append(
                    f"{subject!r} in {mailbox}: {keyword} {'missing' if expected else 'present'}"
                    f" after {what.actor}'s {what.outcome} write of {what.value}"
                    f" at {what.start:.3f}-{what.end:.3f} ({what.detail})"
                )

    def destroys(self) -> None:
        for w in self.writes:
            if w.kind != "delete" or not w.actor.startswith("jmap"):
                continue
            jmap_moved = any(
                overlaps(w, m) for m in self.moves[w.subject] if m.actor.startswith("jmap")
            )
            if w.outcome == "confirmed" and not self.unsound(w) and not jmap_moved:
                self.checked += 1
                if w.subject in self.final:
                    self.problems.append(
                        f"{w.subject!r} destroyed by {w.actor} but in {self.final[w.subject]}"
                    )
            elif w.outcome == "refused" and "notFound" not in w.detail:
                if self.unsound(w, strict=True):
                    continue
                self.checked += 1
                later = [
                    m for m in self.moves[w.subject] if m.kind == "delete" and m.start > w.start
                ]
                if w.subject not in self.final and not later:
                    self.problems.append(f"{w.subject!r}: refused destroy by {w.actor} happened")


def agreement(
    final: dict[str, list[tuple[str, set[str]]]], seen: dict[str, tuple[set[str], set[str]]]
) -> list[str]:
    """Where JMAP and IMAP disagree: which messages exist, their mailboxes, their keywords
    (the union over the copies, as RFC 8621 has one set of keywords per Email)."""
    problems = [f"{s!r} in IMAP {final[s]} but not in JMAP" for s in final if s not in seen]
    problems += [f"{s!r} in JMAP {seen[s]} but not in IMAP" for s in seen if s not in final]
    for subject in final.keys() & seen.keys():
        copies = final[subject]
        union = set(keywords_from_flags(set().union(*(flags for _, flags in copies))))
        if seen[subject] != ({mailbox for mailbox, _ in copies}, union):
            problems.append(f"{subject!r}: JMAP {seen[subject]} but IMAP {copies}")
    return problems


async def test_concurrent_writers_soak(
    jmap: Jmap, imap_user: ImapUser, imap_backend: ImapServer
) -> None:
    """Issue's soak: N JMAP and M IMAP clients on the same messages; every confirmed write
    is in IMAP, no refused one is, and IMAP and JMAP agree (CORE-SET-02)."""
    client = imap_user.connect()
    try:
        for i in range(MESSAGES):
            assert client.append("INBOX", None, None, message(subject_of(i)))[0] == "OK"
    finally:
        client.logout()
    by_name = await boxes(jmap)
    names = {by_name["Inbox"]: "INBOX", by_name["Archive"]: "Archive", by_name["Trash"]: "Trash"}
    found = await jmap_state_ids(jmap)
    assert len(found) == MESSAGES
    log.info("write soak: seed %d, %.0f s", SEED, SECONDS)
    print(f"write soak: seed {SEED} (IMAPJMAP_SOAK_SEED), {SECONDS:.0f} s")
    book = Log()
    deadline = time.monotonic() + SECONDS
    clients = [
        Jmap(jmap.http, jmap.username, jmap.password, jmap.account_id) for _ in range(JMAP_CLIENTS)
    ]
    await asyncio.gather(
        *(jmap_client(n, c, found, list(names), book, deadline) for n, c in enumerate(clients)),
        *(
            asyncio.to_thread(
                imap_client, n, imap_user, move_is_atomic(imap_backend), book, deadline
            )
            for n in range(IMAP_CLIENTS)
        ),
    )
    final = imap_state(imap_user)
    seen = await jmap_state(jmap, names)
    rules = Rules(book.writes, final)
    rules.keywords()
    rules.destroys()
    problems, checked = rules.problems, rules.checked
    # Every change reaches JMAP through the sync, the flags only the plain IMAP clients set
    # included: the request that read ``seen`` refreshed the cache after the last write
    # (no push watcher here, so every request refreshes).
    stale = agreement(final, seen)
    problems += stale
    if stale:
        print("write soak: JMAP and IMAP disagree:", *stale, sep="\n  ")
    errors = [w for w in book.writes if w.outcome == "error"]
    counts: dict[tuple[str, str, str], int] = defaultdict(int)
    for w in book.writes:
        counts[(w.actor[:4], w.kind, w.outcome)] += 1
    summary = ", ".join(f"{a} {k} {o}: {n}" for (a, k, o), n in sorted(counts.items()))
    print(
        f"write soak: {len(book.writes)} writes ({summary}); {checked} checked; {len(final)} left"
    )
    assert not errors, [w.detail for w in errors[:5]]
    if problems:
        subjects = sorted(set(re.findall(r"'(soak \d+)'", "\n".join(problems[:5]))))
        story = [
            f"  {w.start:.3f}-{w.end:.3f} {w.actor} {w.kind} {w.keyword or ''}={w.value}"
            f" {w.outcome} {w.detail}"
            for subject in subjects
            for w in sorted(book.writes, key=lambda w: w.start)
            if w.subject == subject
        ]
        raise AssertionError("\n".join([*problems[:20], "what happened to them:", *story]))
    jmap_keyword_writes = counts[("jmap", "keyword", "confirmed")]
    assert jmap_keyword_writes >= ENOUGH_JMAP_KEYWORD_WRITES and checked > 10, (
        summary
    )  # the soak really wrote


async def jmap_state_ids(jmap: Jmap) -> dict[str, str]:
    ids = (await jmap.ok("Email/query", {"limit": 1000}))["ids"]
    got = await jmap.ok("Email/get", {"ids": ids, "properties": ["subject"]})
    return {e["subject"]: e["id"] for e in got["list"]}


# -- the checker itself ------------------------------------------------------------------------


def _race(*, atomic: bool, before: bool = True) -> Rules:
    """A confirmed removal of a keyword that overlaps another client's move of the message,
    after a confirmed write of ``before``, and a final copy that still has the keyword:
    what a move that copied the flags before the removal and expunged the source after
    it leaves."""
    earlier = Write("jmap0", "keyword", "s", 0.0, 0.5, keyword="j0a", value=before)
    removal = Write("jmap0", "keyword", "s", 1.0, 2.0, keyword="j0a", value=False)
    move = Write("imap0", "move", "s", 1.5, 2.5, atomic=atomic)
    rules = Rules([earlier, removal, move], {"s": [("Archive", {"j0a"})]})
    rules.keywords()
    return rules


def test_rules_check_a_keyword_write_racing_a_move_the_server_makes_atomic() -> None:
    rules = _race(atomic=True)
    assert rules.checked == 1
    assert rules.problems and "j0a present" in rules.problems[0], rules.problems


def test_rules_leave_out_a_keyword_write_racing_a_move_the_server_does_in_steps() -> None:
    rules = _race(atomic=False)
    assert (rules.checked, rules.problems) == (0, [])


def test_rules_check_a_write_racing_a_move_in_steps_that_the_move_could_not_undo() -> None:
    """The keyword was already off when the move copied the message, whichever side of the
    removal it did so: the copy must not have it."""
    rules = _race(atomic=False, before=False)
    assert rules.checked == 1
    assert rules.problems and "j0a present" in rules.problems[0], rules.problems
