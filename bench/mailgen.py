"""Fast, deterministic mail for big benchmark mailboxes, written straight into a Maildir.

:mod:`devservers.samplemail` builds each message with the ``email`` package: realistic,
but far too slow for 100,000 messages.  This module assembles messages from byte templates
instead, drawing every choice from one seeded :class:`random.Random`:

* sizes average about 17 KB with a long tail: headers of 1.5-4 KB (Received, DKIM,
  Authentication-Results, list headers), a text part, an HTML alternative in about half of
  them, and a base64 attachment in about 20% whose size is log-normal (a few reach MBs);
* conversations: about 45% of messages reply to a recent thread, with Message-ID,
  In-Reply-To, References (the last ten ids) and a ``Re:``/``AW:``/``RE:`` subject;
* non-ASCII subjects, names and file names (German, French, Russian, Japanese, emoji) as
  RFC 2047 encoded words (UTF-8 base64, ISO-8859-1 quoted-printable) and RFC 2231;
* flags: old mail mostly ``\\Seen``, the newest partly unread, some ``\\Flagged`` and
  ``\\Answered``; INTERNALDATE (the file's mtime) spread over the three years before ``END``,
  rising with the UID.

:func:`seed_inbox` writes the files into ``Maildir/cur`` with the conventions of
``samplemail.seed_maildir`` (size in the name, flags after ``:2,``, mtime = INTERNALDATE, owned
by the mail uid) and lets Dovecot index them.
"""

from __future__ import annotations

import base64
import math
import multiprocessing
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Final

import in_checkout  # noqa: F401  (puts devservers/, not installed, on the path)

from devservers.dovecot import DovecotServer

END: Final = datetime(2025, 11, 1, 12, 0, tzinfo=UTC)
SPAN_SECONDS: Final = 3 * 365 * 86400

_DOMAINS = ("example.org", "example.net", "example.com", "mail.example.de", "corp.example")
_FIRST = (
    "Alice", "Bob", "Carol", "David", "Eve", "Frank", "Grace", "Heidi", "Ivan", "Judy",
    "Mallory", "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Victor", "Walter",
    "Jürgen", "Zoë", "François", "Søren", "Ana", "Björn", "Чайковский", "Мария", "田中",
    "さくら", "Ömer",
)  # fmt: skip
_LAST = (
    "Smith", "Jones", "Müller", "Dubois", "García", "Rossi", "Nowak", "Jensen", "Ivanova",
    "Tanaka", "Schröder", "Lefèvre", "O'Brien", "Kowalski", "Nguyen", "Öztürk",
)  # fmt: skip
_TOPICS = (
    "quarterly report", "budget {n}", "release {n}.{m}", "offsite in June", "invoice #{n}",
    "the new office", "Ticket {n}: login fails", "Re-org of team {m}", "design review",
    "Übersicht der Änderungen", "Réunion de lundi", "Besprechung am Freitag",
    "Отчёт за квартал {n}", "会議の議事録 {m}", "Party 🎉 on Friday", "Straßenfest {n}",
    "Café order for {m} people", "Your order {n} has shipped", "weekly digest #{n}",
    "[dev-list] patch v{m}: fix parser", "Urlaubsplanung {n}", "naïve question about {m}",
)  # fmt: skip
_WORDS = (
    "the", "project", "meeting", "schedule", "report", "we", "should", "consider", "proposal",
    "budget", "next", "week", "please", "find", "attached", "thanks", "regards", "update",
    "status", "team", "review", "deadline", "customer", "server", "release", "notes",
    "question", "answer", "follow-up", "agenda", "minutes", "draft", "final", "version",
    "über", "Änderung", "Grüße", "schön", "Straße", "café", "déjà", "naïve", "résumé",
    "garçon", "Größe", "Übersicht",
)  # fmt: skip
_REPLY_PREFIX = ("Re: ", "Re: ", "Re: ", "AW: ", "RE: ", "Fwd: ")
_ATTACHMENTS = (
    ("application/pdf", "report-{n}.pdf"),
    ("image/png", "screenshot-{n}.png"),
    ("image/jpeg", "IMG_{n}.jpg"),
    ("text/csv", "export-{n}.csv"),
    ("application/zip", "archive-{n}.zip"),
    ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", "Brief-{n}.docx"),
    ("application/pdf", "Übersicht-{n}.pdf"),
    ("image/jpeg", "写真-{n}.jpg"),
)
_BASE64_POOL_BYTES: Final = 3 * 1024 * 1024
_TEXT_POOL_CHARS: Final = 256 * 1024
_REFERENCES_KEPT: Final = 10
_RECENT_THREADS: Final = 3000

_SYSTEM_FLAG_LETTERS = {"\\Flagged": "F", "\\Answered": "R", "\\Seen": "S"}


@dataclass(frozen=True, slots=True)
class Message:
    raw: bytes  # CRLF line ends
    internaldate: float  # POSIX time; the file's mtime
    flags: str  # Maildir info letters, ASCII order ("FS")
    attachment: bool
    reply: bool


@dataclass(slots=True)
class _Thread:
    subject: str
    ids: list[str]


@dataclass(frozen=True, slots=True)
class SeedStats:
    messages: int
    total_bytes: int
    largest: int
    with_attachment: int
    replies: int
    seconds: float

    @property
    def mean_kb(self) -> float:
        return self.total_bytes / max(self.messages, 1) / 1024


def _encoded_word(text: str) -> str:
    """RFC 2047 for a header value (UTF-8 base64 words of at most 45 octets, folded)."""
    if text.isascii():
        return text
    words: list[str] = []
    chunk = ""
    for char in text:
        if len((chunk + char).encode()) > 45:
            words.append(chunk)
            chunk = ""
        chunk += char
    words.append(chunk)
    return "\r\n ".join("=?UTF-8?B?" + base64.b64encode(w.encode()).decode() + "?=" for w in words)


def _latin1_q(text: str) -> str:
    """An ISO-8859-1 quoted-printable encoded word, as older mailers write them."""
    out = []
    for byte in text.encode("latin-1"):
        char = chr(byte)
        if char == " ":
            out.append("_")
        elif char.isalnum() and byte < 128:
            out.append(char)
        else:
            out.append(f"={byte:02X}")
    return "=?ISO-8859-1?Q?" + "".join(out) + "?="


def _subject_header(subject: str, rng: random.Random) -> str:
    if subject.isascii():
        return subject
    try:
        subject.encode("latin-1")
    except UnicodeEncodeError:
        return _encoded_word(subject)
    return _latin1_q(subject) if rng.random() < 0.4 else _encoded_word(subject)


class Generator:
    """Yields :class:`Message` objects, oldest first; the same seed gives the same bytes.

    ``first``/``stop`` make it yield only the messages of that index range of a mailbox of
    ``count`` (dates and flags as in the whole mailbox), so that several processes can each
    write a part; a part has its own random stream (``part`` > 0), so its threads start
    afresh.  Part 0 of a mailbox is the same as the whole mailbox's start.
    """

    def __init__(
        self, count: int, seed: int = 1, *, first: int = 0, stop: int | None = None, part: int = 0
    ) -> None:
        self.count = count
        self.first = first
        self.stop = count if stop is None else stop
        self.rng = random.Random(seed if part == 0 else f"{seed}/{part}")
        rng = self.rng
        self.people = [
            (f"{rng.choice(_FIRST)} {rng.choice(_LAST)}", f"user{i}@{rng.choice(_DOMAINS)}")
            for i in range(400)
        ]
        self.owner = ("Bench User", "bench@example.test")
        self.threads: list[_Thread] = []
        blob = rng.randbytes(_BASE64_POOL_BYTES)
        encoded = base64.encodebytes(blob).replace(b"\n", b"\r\n")
        self.b64_lines = encoded  # 76 characters + CRLF per line
        words = [rng.choice(_WORDS) for _ in range(_TEXT_POOL_CHARS // 6)]
        lines: list[str] = []
        line: list[str] = []
        for word in words:
            line.append(word)
            if sum(len(w) + 1 for w in line) > 68:
                lines.append(" ".join(line))
                line = []
        self.text_pool = ("\r\n".join(lines) + "\r\n").encode()

    # -- pieces ------------------------------------------------------------------------------

    def _address(self, person: tuple[str, str]) -> str:
        name, addr = person
        if not name.isascii():
            return f"{_encoded_word(name)} <{addr}>"
        if "'" in name:
            return f'"{name}" <{addr}>'
        return f"{name} <{addr}>"

    def _text(self, size: int) -> bytes:
        start = self.rng.randrange(0, len(self.text_pool) - size - 1)
        start = self.text_pool.index(b"\r\n", start) + 2
        end = self.text_pool.find(b"\r\n", start + size)
        return self.text_pool[start : end + 2 if end >= 0 else None]

    def _base64(self, size: int) -> bytes:
        line = 78
        lines = max(1, size // line)
        pool_lines = len(self.b64_lines) // line
        first = self.rng.randrange(0, pool_lines)
        out = bytearray()
        while lines > 0:
            take = min(lines, pool_lines - first)
            out += self.b64_lines[first * line : (first + take) * line]
            lines -= take
            first = 0
        return bytes(out)

    def _subject(self, index: int) -> str:
        topic = self.rng.choice(_TOPICS)
        return topic.format(n=self.rng.randrange(100, 99999), m=index % 97)

    def _thread_for(self, index: int) -> tuple[_Thread, bool]:
        rng = self.rng
        if self.threads and rng.random() < 0.45:
            # mostly recent threads, sometimes an old one comes back
            pick = len(self.threads) - 1 - int(rng.expovariate(1 / 40))
            thread = self.threads[max(pick, 0)]
            return thread, True
        thread = _Thread(self._subject(index), [])
        self.threads.append(thread)
        if len(self.threads) > _RECENT_THREADS:
            del self.threads[: _RECENT_THREADS // 3]
        return thread, False

    def _headers(self, index: int, stamp: float, thread: _Thread, reply: bool) -> list[str]:
        rng = self.rng
        sender = rng.choice(self.people)
        domain = sender[1].rpartition("@")[2]
        msgid = f"<{index}.{rng.getrandbits(48):012x}@{domain}>"
        when = datetime.fromtimestamp(stamp - rng.randrange(5, 600), UTC)
        subject = thread.subject
        if reply:
            subject = rng.choice(_REPLY_PREFIX) + subject
        heads = [f"Return-Path: <{sender[1]}>"]
        for hop in range(rng.randrange(1, 4)):
            heads.append(
                f"Received: from mx{hop}.{domain} (mx{hop}.{domain} [192.0.2.{hop + 10}])\r\n"
                f"\tby mail.example.test (Postfix) with ESMTPS id {rng.getrandbits(40):010X}\r\n"
                f"\tfor <{self.owner[1]}>; {format_datetime(when)}"
            )
        if rng.random() < 0.7:
            sig = base64.b64encode(rng.randbytes(rng.choice((128, 256)))).decode()
            folded = "\r\n\t ".join(sig[i : i + 72] for i in range(0, len(sig), 72))
            heads.append(
                f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={domain};\r\n"
                f"\ts=sel{index % 4}; h=from:to:subject:date:message-id;\r\n"
                f"\tbh={base64.b64encode(rng.randbytes(32)).decode()};\r\n\tb={folded}"
            )
            heads.append(
                f"Authentication-Results: mail.example.test;\r\n\tdkim=pass header.d={domain};"
                f"\r\n\tspf=pass smtp.mailfrom={sender[1]}"
            )
        if rng.random() < 0.2:
            heads.append(f"List-Id: <news{index % 13}.{domain}>")
            heads.append(f"List-Unsubscribe: <https://{domain}/unsubscribe/{index}>")
        heads.append(f"From: {self._address(sender)}")
        recipients = [self.owner] + [rng.choice(self.people) for _ in range(rng.randrange(0, 3))]
        heads.append("To: " + ",\r\n ".join(self._address(p) for p in recipients))
        if rng.random() < 0.3:
            heads.append(f"Cc: {self._address(rng.choice(self.people))}")
        heads.append(f"Subject: {_subject_header(subject, rng)}")
        heads.append(f"Date: {format_datetime(when)}")
        heads.append(f"Message-ID: {msgid}")
        if reply and thread.ids:
            heads.append(f"In-Reply-To: {thread.ids[-1]}")
            heads.append("References: " + "\r\n ".join(thread.ids[-_REFERENCES_KEPT:]))
        heads.append("MIME-Version: 1.0")
        if rng.random() < 0.5:
            heads.append(f"X-Mailer: BenchMailer {index % 7}.{index % 3}")
        thread.ids.append(msgid)
        return heads

    def _body(self, index: int) -> tuple[list[str], bytes, bool]:
        """Content headers and body; the flag says whether it has an attachment."""
        rng = self.rng
        text_size = min(int(rng.lognormvariate(7.4, 0.9)), 200_000)  # median ~1.6 KB
        text = self._text(text_size)
        boundary = f"=_bench_{index}_{rng.getrandbits(32):08x}"
        plain = b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
        if rng.random() < 0.5:
            paragraphs = text.replace(b"\r\n", b"</p>\r\n<p>")
            html = b"<html><body><p>" + paragraphs + b"</p></body></html>\r\n"
            alt = f"alt{boundary}"
            inner = (
                f"--{alt}\r\n".encode()
                + plain
                + b"\r\n"
                + text
                + f"--{alt}\r\nContent-Type: text/html; charset=utf-8\r\n"
                "Content-Transfer-Encoding: 8bit\r\n\r\n".encode()
                + html
                + f"--{alt}--\r\n".encode()
            )
            main_type = f'multipart/alternative; boundary="{alt}"'
        else:
            inner = text
            main_type = "text/plain; charset=utf-8"
        if rng.random() >= 0.2:
            cte = "8bit" if main_type.startswith("text/") else "7bit"
            return [f"Content-Type: {main_type}", f"Content-Transfer-Encoding: {cte}"], inner, False
        mime_type, name_template = rng.choice(_ATTACHMENTS)
        name = name_template.format(n=index)
        size = min(int(rng.lognormvariate(10.35, 1.15)), 12_000_000)  # median ~31 KB
        disposition = (
            f'attachment; filename="{name}"'
            if name.isascii()
            else "attachment; filename*=UTF-8''"
            + "".join(
                c
                if (c.isascii() and c.isalnum()) or c in ".-_"
                else "".join(f"%{b:02X}" for b in c.encode())
                for c in name
            )
        )
        body = (
            f"--{boundary}\r\nContent-Type: {main_type}\r\n\r\n".encode()
            + inner
            + f'--{boundary}\r\nContent-Type: {mime_type}; name="{_encoded_word(name)}"\r\n'
            f"Content-Disposition: {disposition}\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n".encode()
            + self._base64(size)
            + f"--{boundary}--\r\n".encode()
        )
        return [f'Content-Type: multipart/mixed; boundary="{boundary}"'], body, True

    def _flags(self, index: int, reply: bool) -> str:
        rng = self.rng
        recent = index >= self.count - max(self.count // 50, 20)
        flags = set()
        if rng.random() < (0.5 if recent else 0.96):
            flags.add("\\Seen")
        if rng.random() < 0.03:
            flags.add("\\Flagged")
        if reply and rng.random() < 0.25:
            flags.add("\\Answered")
        return "".join(sorted(_SYSTEM_FLAG_LETTERS[f] for f in flags))

    # -- messages ----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Message]:
        end = END.timestamp()
        step = SPAN_SECONDS / max(self.count, 1)
        for index in range(self.first, self.stop):
            stamp = math.floor(end - SPAN_SECONDS + index * step + self.rng.random() * step)
            thread, reply = self._thread_for(index)
            heads = self._headers(index, stamp, thread, reply)
            content, body, attachment = self._body(index)
            raw = ("\r\n".join(heads + content) + "\r\n\r\n").encode() + body
            yield Message(raw, float(stamp), self._flags(index, reply), attachment, reply)


PART: Final = 25_000  # messages one process writes in one go when seeding in parallel


@dataclass(frozen=True, slots=True)
class _Part:
    cur: str
    count: int
    seed: int
    first: int
    stop: int
    number: int
    owner: tuple[int, int] | None  # chown the files to (uid, gid)


def _write_part(part: _Part) -> tuple[int, int, int, int]:
    """Write one part's files; (octets, largest, with attachment, replies)."""
    cur = Path(part.cur)
    pid = os.getpid()
    total = largest = attachments = replies = 0
    generator = Generator(part.count, part.seed, first=part.first, stop=part.stop, part=part.number)
    for number, message in enumerate(generator, start=part.first):
        size = len(message.raw)
        # the name starts with INTERNALDATE, which rises with the index: Dovecot gives
        # new Maildir files their UIDs in name order, so UIDs rise with the dates too
        name = f"{int(message.internaldate)}.M{number:07d}P{pid}.bench,S={size},W={size}:2,"
        fd = os.open(cur / (name + message.flags), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, message.raw)
            if part.owner is not None:
                os.fchown(fd, *part.owner)
            os.utime(fd, (message.internaldate, message.internaldate))
        finally:
            os.close(fd)
        total += size
        largest = max(largest, size)
        attachments += message.attachment
        replies += message.reply
    return total, largest, attachments, replies


def seed_inbox(
    server: DovecotServer,
    username: str,
    count: int,
    seed: int = 1,
    processes: int | None = None,
) -> SeedStats:
    """Write ``count`` generated messages into the user's INBOX and let Dovecot index them.

    Above :data:`PART` messages the files are written by ``processes`` worker processes
    (default: one per core), :data:`PART` messages at a time each; up to that it is one
    process and the same mail as before parts existed.
    """
    started = time.monotonic()
    maildir: Path = server.maildir(username)
    server.doveadm("mailbox", "status", "-u", username, "messages", "INBOX")  # creates it
    cur = maildir / "cur"
    owner = (server.mail_uid, server.mail_gid) if os.geteuid() == 0 else None
    parts = [
        _Part(str(cur), count, seed, first, min(first + PART, count), number, owner)
        for number, first in enumerate(range(0, count, PART))
    ]
    if len(parts) <= 1:
        results = [_write_part(p) for p in parts]
    else:
        workers = processes or os.cpu_count() or 1
        with multiprocessing.get_context("spawn").Pool(min(workers, len(parts))) as pool:
            results = pool.map(_write_part, parts, chunksize=1)
    total = sum(r[0] for r in results)
    largest = max((r[1] for r in results), default=0)
    attachments = sum(r[2] for r in results)
    replies = sum(r[3] for r in results)
    status = server.doveadm("-f", "tab", "mailbox", "status", "-u", username, "messages", "INBOX")
    seen = int(status.splitlines()[-1].rpartition("\t")[2])
    if seen != count:
        raise RuntimeError(f"Dovecot counts {seen} messages in INBOX, {count} were written")
    return SeedStats(count, total, largest, attachments, replies, time.monotonic() - started)
