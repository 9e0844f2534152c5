"""A small mail account in an in-memory cache, for the Email/Thread/SearchSnippet unit tests.

Rows are written straight into the store (no sync engine): :class:`World` inserts emails
and locations, moves them, and builds a :class:`MethodContext` that starts fresh (the rows
ARE the upstream, so it never refreshes) and whose upstream is :class:`FakeUpstream`, which
serves the messages and the search hits the test gave it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import Collection, Iterable, Mapping
from typing import Any, NoReturn

from imapjmap.blobs import bodies
from imapjmap.config import Config, ImapConfig, LimitsConfig
from imapjmap.imap.pool import ImapPools
from imapjmap.jmap.dispatch import Call
from imapjmap.methods.context import Account, MethodContext
from imapjmap.services import Services
from imapjmap.store import emails as em
from imapjmap.store import queries as q
from imapjmap.store.db import Store, Tx
from imapjmap.upstream.api import (
    Appended,
    LabelMailbox,
    OpenMailbox,
    Pacer,
    SearchMailbox,
    SearchTerm,
    UidHits,
)
from imapjmap.upstream.profiles import choose
from imapjmap.upstream.search import no_pause

A = "Aacct"
OTHER = "Bother"
MAILBOXES = {"Minbox": "INBOX", "Marchive": "Archive", "Msent": "Sent"}


def addr(name: str | None, email: str) -> dict[str, Any]:
    return {"name": name, "email": email}


@dataclasses.dataclass(frozen=True)
class Mail:
    id: str
    thread: str
    boxes: tuple[str, ...]
    received: int
    size: int = 100
    flags: tuple[str, ...] = ()
    frm: tuple[dict[str, Any], ...] = ()
    to: tuple[dict[str, Any], ...] = ()
    subject: str | None = None
    attachment: bool = False
    preview: str | None = "preview text"
    sent_at: str | None = None


ALICE = addr("Alice Liddell", "alice@example.org")
BOB = addr("Bob", "bob@example.net")
CAROL = addr(None, "carol@example.com")
EMILE = addr("Émile Zola", "emile@example.fr")

MAILS = (
    Mail(
        "e1",
        "T1",
        ("Minbox",),
        1000,
        100,
        ("\\Seen",),
        (ALICE,),
        (BOB,),
        "Hello world",
        sent_at="2001-09-09T03:46:40+02:00",
    ),
    Mail(
        "e2",
        "T1",
        ("Msent",),
        2000,
        200,
        ("\\Seen",),
        (BOB,),
        (ALICE,),
        "Re: Hello world",
        sent_at="2001-09-09T01:00:00Z",
    ),
    Mail(
        "e3",
        "T1",
        ("Minbox",),
        3000,
        300,
        (),
        (ALICE,),
        (BOB, CAROL),
        "Re: Hello world",
        attachment=True,
    ),
    Mail(
        "e4",
        "T2",
        ("Minbox", "Marchive"),
        1500,
        50,
        ("\\Seen", "\\Flagged"),
        (CAROL,),
        (BOB,),
        "Invoice <2024> & co",
        attachment=True,
        preview="Please pay the invoice soon",
    ),
    Mail(
        "e5",
        "T3",
        ("Marchive",),
        2500,
        400,
        ("$Forwarded",),
        (addr("Dave", "dave@x.org"),),
        (BOB,),
        "Lunch",
    ),
    Mail(
        "e6",
        "T4",
        ("Minbox",),
        3000,
        10,
        ("\\Seen",),
        (EMILE,),
        (BOB,),
        "Grüße aus Paris",
        preview=None,
    ),
)


def row_of(mail: Mail, seq: int) -> em.EmailRow:
    headers = {
        "messageId": [f"{mail.id}@example.org"],
        "inReplyTo": None,
        "references": None,
        "sender": None,
        "from": list(mail.frm) or None,
        "to": list(mail.to) or None,
        "cc": None,
        "bcc": None,
        "replyTo": None,
        "subject": mail.subject,
        "sentAt": mail.sent_at,
    }
    first = (mail.frm[0].get("name") or mail.frm[0]["email"]) if mail.frm else ""
    first_to = (mail.to[0].get("name") or mail.to[0]["email"]) if mail.to else ""
    return em.EmailRow(
        account_id=A,
        id=mail.id,
        thread_id=mail.thread,
        size=mail.size,
        received_at=mail.received,
        sent_at=mail.sent_at,
        subject=mail.subject,
        sort_subject=(mail.subject or "").replace("Re: ", "").casefold(),
        sort_from=first.casefold(),
        sort_to=first_to.casefold(),
        headers=headers,
        message_ids=[f"{mail.id}@example.org"],
        has_attachment=mail.attachment,
        preview=mail.preview,
        created_seq=seq,
        updated_seq=seq,
    )


class FakeUpstream:
    """The upstream of the unit world: it serves ``messages[(mailbox name, uid)]`` and
    keeps each message read in ``reads``; it finds ``hits[(mailbox name, term)]`` and keeps
    each (mailbox name, term) searched in ``searched``, or raises ``search_failure``.  The
    world does not write (Email/set, create and import are tested against real servers): a
    write fails the test."""

    def __init__(self) -> None:
        self.messages: dict[tuple[str, int], bytes] = {}
        self.reads: list[tuple[str, int]] = []
        self.hits: dict[tuple[str, SearchTerm], tuple[int, ...]] = {}
        self.searched: list[tuple[str, SearchTerm]] = []
        self.searched_uids: list[tuple[str, int]] = []  # (mailbox, uid) of narrowed searches
        self.search_failure: Exception | None = None
        self.profile = choose(frozenset(), {}, ImapConfig())  # a server without extensions

    # Search

    async def search(
        self,
        mailboxes: Iterable[SearchMailbox],
        terms: Collection[SearchTerm],
        *,
        scope: Collection[str] | None = None,
        pace: Pacer = no_pause,
        within: Mapping[str, Collection[int]] | None = None,
    ) -> UidHits:
        """Every term in each mailbox of ``scope`` not known to be empty (search Rule 1),
        among the UIDs of ``within`` (Rule 6), each recorded in ``searched_uids``."""
        if self.search_failure is not None:
            raise self.search_failure
        found: UidHits = {term: {} for term in terms}
        for box in mailboxes:
            if (scope is not None and box.mailbox_id not in scope) or box.messages == 0:
                continue
            if within is not None and not within.get(box.mailbox_id):
                continue
            for term in terms:
                self.searched.append((box.imap_name, term))
                hits = set(self.hits.get((box.imap_name, term), ()))
                if within is not None:
                    asked = set(within[box.mailbox_id])
                    self.searched_uids.extend((box.imap_name, uid) for uid in sorted(asked))
                    hits &= asked
                found[term][box.mailbox_id] = hits
        return found

    # BodyReads

    async def message(self, mailbox: str, uid: int) -> bytes | None:
        self.reads.append((mailbox, uid))
        return self.messages.get((mailbox, uid))

    async def previews(self, mailbox: str, uids: Collection[int]) -> dict[int, str]:
        return {}  # no server previews: they are made from the message

    def login_password(self) -> str:
        raise AssertionError("the unit world does not submit")

    def refresh_reads(self, prefer: str | None = None, avoid: str | None = None) -> NoReturn:
        raise AssertionError("the unit world never refreshes: its rows are the upstream")

    def watch(self, *, poll_interval: float, status_interval: float) -> NoReturn:
        raise AssertionError("the unit world has no push watcher")

    # MailboxWrites, MessageWrites

    creates_with_role = False
    appends_say_uid = True

    @staticmethod
    def _no_writes() -> NoReturn:
        raise AssertionError("the unit world does not write")

    async def create_mailbox(self, name: str, *, role: str | None = None) -> None:
        self._no_writes()

    async def rename_mailbox(self, old: str, new: str, *, children: Collection[str] = ()) -> None:
        self._no_writes()

    async def delete_mailbox(self, name: str) -> None:
        self._no_writes()

    async def subscribe(self, name: str, subscribed: bool = True) -> None:
        self._no_writes()

    async def message_count(self, name: str) -> int:
        self._no_writes()

    async def append(
        self,
        mailbox: str,
        raw: bytes,
        flags: Iterable[str] = (),
        internaldate: dt.datetime | None = None,
    ) -> Appended:
        self._no_writes()

    async def uid_next(self, mailbox: str) -> int:
        self._no_writes()

    async def find_appended(
        self, mailbox: str, message_id: str | None, *, floor: int = 1
    ) -> list[int]:
        self._no_writes()

    def writing(self, mailbox: str) -> contextlib.AbstractAsyncContextManager[OpenMailbox]:
        self._no_writes()

    def labelling(self, mailbox: str) -> contextlib.AbstractAsyncContextManager[LabelMailbox]:
        self._no_writes()

    async def holding_uid(self, folder: str, uid: int, holder: str) -> int | None:
        self._no_writes()


class World:
    def __init__(self, store: Store, cfg: Config) -> None:
        self.store = store
        self.cfg = cfg
        self.upstream = FakeUpstream()
        self.uids: dict[str, int] = {}
        # one per maxObjectsInGet, kept between requests as the app keeps its one: what
        # it remembers of earlier answers (Email objects) must follow the changes below
        self._services: dict[int, Services] = {}
        bodies._bodies.clear()  # the process-wide body cache must not leak between tests

    async def setup(self, mails: Iterable[Mail] = MAILS) -> None:
        def fill(tx: Tx) -> None:
            for account in (A, OTHER):
                q.ensure_account(tx, account, account)
            seq = q.next_seq(tx, A, ["Mailbox"])
            for mailbox_id, name in MAILBOXES.items():
                q.insert_mailbox(
                    tx, q.MailboxRow(A, mailbox_id, name, name, uidvalidity=7, messages=10), seq=seq
                )

        await self.store.run(fill)
        await self.add(*mails)

    def _locate(
        self, tx: Tx, mail_id: str, box: str, flags: tuple[str, ...], deleted: bool = False
    ) -> int:
        uid = self.uids[box] = self.uids.get(box, 0) + 1
        em.put_location(tx, A, em.Location(box, uid, mail_id, 1, flags, deleted))
        return uid

    async def add(self, *mails: Mail) -> int:
        def write(tx: Tx) -> int:
            seq = q.next_seq(tx, A, [em.EMAIL_TYPE, em.THREAD_TYPE])
            for mail in mails:
                em.insert_email(tx, row_of(mail, seq))
                for box in mail.boxes:
                    self._locate(tx, mail.id, box, mail.flags)
                em.recompute_email(tx, A, mail.id, seq)
                em.touch_thread(tx, A, mail.thread, seq)
            return seq

        return await self.store.run(write)

    async def set_flags(self, mail_id: str, flags: tuple[str, ...]) -> int:
        def write(tx: Tx) -> int:
            seq = q.next_seq(tx, A, [em.EMAIL_TYPE, em.THREAD_TYPE])
            for loc in em.locations_of_email(tx, A, mail_id):
                em.put_location(tx, A, dataclasses.replace(loc, flags=flags))
            em.recompute_email(tx, A, mail_id, seq)
            row = em.email(tx, A, mail_id)
            assert row is not None
            em.touch_thread(tx, A, row.thread_id, seq)
            return seq

        return await self.store.run(write)

    async def move(self, mail_id: str, boxes: tuple[str, ...]) -> int:
        """Put the email in exactly ``boxes`` (empty: expunge it everywhere)."""

        def write(tx: Tx) -> int:
            seq = q.next_seq(tx, A, [em.EMAIL_TYPE, em.THREAD_TYPE])
            locations = em.locations_of_email(tx, A, mail_id)
            flags = locations[0].flags if locations else ()
            for loc in locations:
                em.remove_location(tx, A, loc.mailbox_id, loc.uid)
            for box in boxes:
                self._locate(tx, mail_id, box, flags)
            em.recompute_email(tx, A, mail_id, seq)
            row = em.email(tx, A, mail_id, live=False)
            assert row is not None
            em.touch_thread(tx, A, row.thread_id, seq)
            return seq

        return await self.store.run(write)

    async def give_message(self, mail_id: str, raw: bytes) -> None:
        """Let the fake upstream serve ``raw`` for every copy of the email."""
        for loc in await self.locations(mail_id):
            self.upstream.messages[(MAILBOXES[loc.mailbox_id], loc.uid)] = raw

    async def locations(self, mail_id: str) -> list[em.Location]:
        return await self.store.run(lambda tx: em.locations_of_email(tx, A, mail_id))

    @staticmethod
    async def _no_sync(force: bool) -> None:
        raise AssertionError("the unit world has no upstream to sync from")

    def services(self, *, max_objects_in_get: int = 1000) -> Services:
        self.context(max_objects_in_get=max_objects_in_get)
        return self._services[max_objects_in_get]

    def context(self, *, max_objects_in_get: int = 1000) -> MethodContext:
        cfg = dataclasses.replace(
            self.cfg,
            limits=dataclasses.replace(LimitsConfig(), max_objects_in_get=max_objects_in_get),
        )
        services = self._services.get(max_objects_in_get)
        if services is None:
            services = self._services[max_objects_in_get] = Services(
                cfg, self.store, ImapPools(cfg.imap)
            )
        return MethodContext(
            services,
            Account(A, A, "epoch1"),
            self.upstream,
            self._no_sync,
            fresh=True,  # the rows above ARE the upstream: no sync
        )


def call(name: str, args: dict[str, Any], **created: str) -> Call:
    return Call(name, {"accountId": A, **args}, "c0", A, dict(created), frozenset())
