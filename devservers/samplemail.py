"""Realistic sample mail, made up deterministically, and a fast way to put it in a mailbox.

:func:`generate` builds messages with the stdlib :mod:`email` package from a seeded
:class:`random.Random`: conversations (Message-ID, In-Reply-To, References, ``Re:``/``AW:``
subjects, quoted replies), multipart/alternative text and HTML, attachments (PDF, PNG, CSV and
iCalendar files made up here), inline images (multipart/related), forwarded messages
(message/rfc822), RFC 2047 and RFC 2231 encoded names in German, French, Japanese, Russian and
with emoji, UTF-8, ISO-8859-1 and ISO-2022-JP bodies, mailing-list and newsletter headers,
invitations, drafts and spam, dated over the two years before ``end``.  They are spread over
INBOX, Sent, Archive, Drafts, Junk, Trash, ``Projects/Alpha``, ``Projects/Beta`` and
``Reisen/Übersicht`` with realistic flags.  The same ``n`` and ``seed`` give the same bytes.

:func:`seed_maildir` writes messages straight into a :class:`DovecotServer` user's Maildir
(file mtime = INTERNALDATE, flags in the file name), creates and subscribes the folders, and
checks that Dovecot counts what was written.
"""

from __future__ import annotations

import base64
import email.charset
import email.header
import email.message
import email.parser
import email.policy
import email.utils
import html
import os
import random
import re
import struct
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email.headerregistry import Address
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devservers.dovecot import DovecotServer

__all__ = [
    "FOLDERS",
    "OWNER",
    "SampleMessage",
    "encode_mutf7",
    "generate",
    "make_ics",
    "make_pdf",
    "make_png",
    "seed_maildir",
]

#: The mailbox owner the sample mail is written to and from.
OWNER = ("Demo User", "demo@example.test")
#: Every folder :func:`generate` may use, parents before children.
FOLDERS = (
    "INBOX",
    "Sent",
    "Archive",
    "Drafts",
    "Junk",
    "Trash",
    "Projects",
    "Projects/Alpha",
    "Projects/Beta",
    "Reisen",
    "Reisen/Übersicht",
)
#: The default ``end``: fixed, so that the output does not depend on the day it runs.
DEFAULT_END = datetime(2025, 11, 1, 12, 0, tzinfo=UTC)

_POLICY = email.policy.SMTP  # CRLF line ends, RFC 2047 for non-ASCII headers
_LEGACY_POLICY = email.policy.compat32.clone(linesep="\r\n")
_SYSTEM_FLAGS = {"\\Draft": "D", "\\Flagged": "F", "\\Answered": "R", "\\Seen": "S"}
_SYSTEM_FLAGS["\\Deleted"] = "T"


@dataclass(frozen=True)
class SampleMessage:
    folder: str  # IMAP name, "/" separated, UTF-8 ("Reisen/Übersicht")
    flags: tuple[str, ...]  # system flags ("\\Seen") and keywords ("$Forwarded")
    internaldate: datetime  # timezone-aware
    raw: bytes  # the RFC 5322 message, CRLF line ends

    def header(self, name: str) -> str | None:
        """A header's decoded value (None when absent)."""
        parsed = email.parser.BytesParser(policy=email.policy.default).parsebytes(
            self.raw, headersonly=True
        )
        value = parsed[name]
        return None if value is None else str(value)

    @property
    def message_id(self) -> str | None:
        return self.header("Message-ID")

    @property
    def subject(self) -> str:
        return self.header("Subject") or ""


# --------------------------------------------------------------------------------------------
# Made-up attachments


def make_png(width: int = 64, height: int = 48, hue: int = 0) -> bytes:
    """A valid RGB PNG: a colour gradient with a disc in the middle."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = []
    cx, cy, radius = width / 2, height / 2, min(width, height) / 3
    for y in range(height):
        row = bytearray(b"\x00")  # filter type: none
        for x in range(width):
            if (x - cx) ** 2 + (y - cy) ** 2 <= radius**2:
                pixel = ((hue * 7 + 200) % 256, (hue * 3 + 80) % 256, 60)
            else:
                pixel = ((x * 255 // width + hue) % 256, y * 255 // height, (hue * 5) % 256)
            row += bytes(pixel)
        rows.append(bytes(row))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows), 9))
        + chunk(b"IEND", b"")
    )


def make_pdf(title: str, lines: Sequence[str]) -> bytes:
    """A valid one-page PDF 1.4 showing ``title`` and ``lines`` (Latin-1 text)."""

    def text(value: str) -> str:
        value = value.encode("latin-1", "replace").decode("latin-1")
        return value.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    content = [f"BT /F1 18 Tf 72 770 Td ({text(title)}) Tj ET"]
    for number, line in enumerate(lines):
        content.append(f"BT /F1 11 Tf 72 {740 - 16 * number} Td ({text(line)}) Tj ET")
    stream = "\n".join(content).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842]"
        b" /Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        f"<< /Title ({text(title)}) /Producer (imapjmap samplemail) >>".encode("latin-1"),
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info %d 0 R >>\n" % (len(objects) + 1, len(objects))
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def make_ics(
    *,
    uid: str,
    summary: str,
    start: datetime,
    minutes: int,
    organizer: Address,
    attendees: Sequence[Address],
    location: str = "",
    method: str = "REQUEST",
) -> str:
    """An RFC 5545 VCALENDAR with one VEVENT (CRLF line ends, UTC times)."""

    def when(moment: datetime) -> str:
        return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")

    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")

    def person(role: str, address: Address, extra: str = "") -> str:
        name = address.display_name.replace('"', "'")
        return f'{role};CN="{name}"{extra}:mailto:{address.addr_spec}'

    lines = [
        "BEGIN:VCALENDAR",
        "PRODID:-//imapjmap//samplemail//EN",
        "VERSION:2.0",
        "CALSCALE:GREGORIAN",
        f"METHOD:{method}",
        "BEGIN:VEVENT",
        f"UID:{uid}",
        f"DTSTAMP:{when(start - timedelta(days=3))}",
        f"DTSTART:{when(start)}",
        f"DTEND:{when(start + timedelta(minutes=minutes))}",
        f"SUMMARY:{escape(summary)}",
    ]
    if location:
        lines.append(f"LOCATION:{escape(location)}")
    lines.append(person("ORGANIZER", organizer))
    for attendee in attendees:
        lines.append(
            person("ATTENDEE", attendee, ";ROLE=REQ-PARTICIPANT;PARTSTAT=NEEDS-ACTION;RSVP=TRUE")
        )
    lines += ["STATUS:CONFIRMED", "SEQUENCE:0", "END:VEVENT", "END:VCALENDAR"]
    return "".join(_fold_ics(line) + "\r\n" for line in lines)


def _fold_ics(line: str) -> str:
    """Fold at 75 octets without splitting a UTF-8 sequence (RFC 5545 §3.1)."""
    parts: list[str] = []
    current = ""
    for char in line:
        if len((current + char).encode()) > (75 if not parts else 74):
            parts.append(current)
            current = ""
        current += char
    parts.append(current)
    return "\r\n ".join(parts)


# --------------------------------------------------------------------------------------------
# The cast and their words


@dataclass(frozen=True)
class _Person:
    name: str
    address: str
    lang: str
    greeting_name: str
    tz_hours: int  # standard-time offset from UTC

    @property
    def addr(self) -> Address:
        username, domain = self.address.split("@")
        return Address(self.name, username, domain)


_ME = _Person(OWNER[0], OWNER[1], "en", "Demo", 1)
_PEOPLE = (
    _Person("Alice Johnson", "alice@example.com", "en", "Alice", -5),
    _Person("Smith, Bob", "bob.smith@example.org", "en", "Bob", -5),
    _Person("Mia 🚀 Chen", "mia@startup.example", "en", "Mia", -8),
    _Person("Dana O'Neil", "dana.oneil@example.net", "en", "Dana", 0),
    _Person("Jürgen Müller", "juergen.mueller@firma.example", "de", "Jürgen", 1),
    _Person("Zoë Schäfer", "zoe.schaefer@firma.example", "de", "Zoë", 1),
    _Person("François Lefèvre", "francois@societe.example", "fr", "François", 1),
    _Person("Hélène Dubois", "helene.dubois@societe.example", "fr", "Hélène", 1),
    _Person("山田 太郎", "yamada@kaisha.example", "ja", "山田", 9),
    _Person("佐藤 花子", "hanako.sato@kaisha.example", "ja", "佐藤", 9),
    _Person("Ольга Петрова", "olga@example.net", "ru", "Ольга", 3),
    _Person("Carlos Núñez", "carlos@example.com", "es", "Carlos", 1),
)

_GREETINGS = {
    "en": ("Hi {},", "Hello {},", "Dear {},", "Hey {}!"),
    "de": ("Hallo {},", "Guten Tag {},", "Hi {},"),
    "fr": ("Bonjour {},", "Salut {},", "Bonsoir {},"),
    "ja": ("{}さん", "{}様"),
    "ru": ("Привет, {}!", "Здравствуйте, {}!"),
    "es": ("Hola {}:", "Buenos días, {}:"),
}
_SIGNOFFS = {
    "en": ("Best,", "Thanks,", "Cheers,", "Kind regards,"),
    "de": ("Viele Grüße", "Beste Grüße", "Danke und Gruß"),
    "fr": ("Cordialement,", "Bien à vous,", "À bientôt,"),
    "ja": ("よろしくお願いします。", "引き続きよろしくお願いいたします。"),
    "ru": ("С уважением,", "Спасибо!"),
    "es": ("Saludos,", "Un abrazo,"),
}
_SENTENCES = {
    "en": (
        "I had a look at the numbers and they seem fine to me.",
        "Could you send me the latest version before Thursday?",
        "Let's discuss this in the meeting tomorrow.",
        "I've attached my notes from the call.",
        "The deadline moved to the end of next week.",
        "Sorry for the late reply, I was travelling.",
        "That works for me — 10:30 in the small meeting room?",
        "We should also loop in the design team.",
        "I'm not sure this is the right approach, but let's try it.",
        "Thanks for the quick turnaround!",
        "The customer asked for a short summary by Friday.",
        "Can we move the call to the afternoon?",
    ),
    "de": (
        "Ich habe mir die Zahlen angesehen und sie sehen gut aus.",
        "Könntest du mir bis Donnerstag die aktuelle Fassung schicken?",
        "Lass uns das morgen in der Besprechung klären.",
        "Die Unterlagen für die Dienstreise liegen im Anhang.",
        "Der Termin wurde auf nächste Woche verschoben.",
        "Entschuldige die späte Antwort, ich war unterwegs.",
        "Für mich passt 14 Uhr im großen Besprechungsraum.",
        "Bitte denk an die Belege für die Reisekostenabrechnung.",
        "Schöne Grüße aus dem sonnigen Süden!",
        "Über die Änderungen sprechen wir am besten persönlich.",
    ),
    "fr": (
        "J'ai relu le document, tout me semble correct.",
        "Pourrais-tu m'envoyer la dernière version avant jeudi ?",
        "On en parle à la réunion de lundi.",
        "Voici le compte rendu de l'atelier de la semaine dernière.",
        "La date limite a été repoussée à vendredi prochain.",
        "Désolé pour la réponse tardive, j'étais en déplacement.",
        "Ça me va, à 11 h dans la grande salle ?",
        "Merci beaucoup pour ton aide, c'était très précieux.",
        "Il faudrait aussi prévenir l'équipe de François.",
        "Bonne fin de semaine à tous !",
    ),
    "ja": (
        "資料を拝見しました。特に問題はないと思います。",
        "木曜日までに最新版を送っていただけますか。",
        "明日の会議で詳しく話しましょう。",
        "議事録を添付いたしましたので、ご確認ください。",
        "締め切りが来週末に変更になりました。",
        "返信が遅くなり申し訳ありません。",
        "午後三時からでしたら大丈夫です。",
    ),
    "ru": (
        "Я посмотрела цифры, всё выглядит хорошо.",
        "Пришли, пожалуйста, последнюю версию до четверга.",
        "Давай обсудим это завтра на встрече.",
        "Отчёт во вложении.",
        "Срок сдвинули на следующую неделю.",
    ),
    "es": (
        "He revisado los números y me parecen correctos.",
        "¿Podrías enviarme la última versión antes del jueves?",
        "Lo hablamos mañana en la reunión.",
        "Perdona la demora, estaba de viaje.",
        "¡Muchas gracias por tu ayuda!",
    ),
}
_QUOTE_LINES = {
    "en": "On {date}, {name} wrote:",
    "de": "Am {date} schrieb {name}:",
    "fr": "Le {date}, {name} a écrit :",
    "ja": "{date} {name} さんは書きました:",
    "ru": "{date}, {name} пишет:",
    "es": "El {date}, {name} escribió:",
}
_REPLY_PREFIXES = {"en": ("Re: ",), "de": ("AW: ", "Re: "), "fr": ("RE: ", "Re: ")}
_FORWARD_PREFIXES = {"de": "WG: ", "fr": "TR: "}

# (subject, language, folder for received mail or None for INBOX/Archive)
_TOPICS = (
    ("Quarterly planning", "en", None),
    ("Lunch on Friday?", "en", None),
    ("Server migration schedule", "en", "Projects/Alpha"),
    ("Alpha release checklist", "en", "Projects/Alpha"),
    ("Beta onboarding feedback", "en", "Projects/Beta"),
    ("Design review: new login page", "en", "Projects/Beta"),
    ("Budget review for Q3", "en", None),
    ("🎉 Launch party on Thursday", "en", None),
    ("Coffee? ☕", "en", None),
    ("Übersicht der Reisekosten", "de", None),
    ("Termin für die Besprechung nächste Woche", "de", None),
    ("Grüße aus München", "de", None),
    ("Änderungen am Vertrag", "de", "Projects/Beta"),
    ("Réunion de lundi", "fr", None),
    ("Compte rendu de l'atelier", "fr", "Projects/Alpha"),
    ("Bon anniversaire ! 🎂", "fr", None),
    ("来週の会議について", "ja", None),
    ("資料の確認をお願いします", "ja", "Projects/Alpha"),
    ("Отчёт за месяц", "ru", None),
    ("Viaje a Barcelona", "es", None),
)

_MAILERS = (
    "Mozilla Thunderbird 115.6.0",
    "Microsoft Outlook 16.0",
    "Apple Mail (2.3774.300.61.1.2)",
    "Roundcube Webmail/1.6.5",
    "K-9 Mail for Android",
)


# --------------------------------------------------------------------------------------------
# The generator


@dataclass
class _Pending:
    key: int
    folder: str
    flags: set[str]
    internaldate: datetime
    message: email.message.Message
    answered_by: list[int] = field(default_factory=list)
    forwarded_by: list[int] = field(default_factory=list)


class _Generator:
    def __init__(self, seed: int, end: datetime) -> None:
        self.rng = random.Random(seed)
        self.end = end
        self.start = end - timedelta(days=730)
        self.pending: list[_Pending] = []
        self.serial = 0

    # ---------------------------------------------------------------------- small things

    def when(self, earliest: datetime | None = None) -> datetime:
        """A random moment between ``earliest`` (or two years back) and ``end``, in UTC."""
        begin = earliest or self.start
        seconds = max(1, int((self.end - begin).total_seconds()))
        # Office hours are more likely than the middle of the night.
        moment = begin + timedelta(seconds=self.rng.randrange(seconds))
        if moment.hour < 6 and self.rng.random() < 0.8:
            moment += timedelta(hours=8)
        return min(moment, self.end)

    def local(self, moment: datetime, person: _Person) -> datetime:
        hours = person.tz_hours
        if person.tz_hours in (-8, -5, 0, 1, 3) and 4 <= moment.month <= 10:
            hours += 1  # rough daylight saving time
        if person.tz_hours == 3:
            hours = 3  # no DST in Moscow
        return moment.astimezone(timezone(timedelta(hours=hours)))

    def message_id(self, domain: str) -> str:
        self.serial += 1
        token = f"{self.rng.getrandbits(64):016x}"
        return f"<{token}.{self.serial}@{domain}>"

    def sentences(self, lang: str, count: int) -> list[str]:
        pool = _SENTENCES[lang]
        return self.rng.sample(pool, min(count, len(pool)))

    def body(self, lang: str, to: _Person | None, sender: _Person, sentences: int = 0) -> str:
        greeting = self.rng.choice(_GREETINGS[lang]).format(to.greeting_name if to else "all")
        chosen = self.sentences(lang, sentences or self.rng.randint(1, 4))
        joiner = "" if lang == "ja" else " "
        paragraphs = [greeting, joiner.join(chosen)]
        if self.rng.random() < 0.4:
            paragraphs.append(joiner.join(self.sentences(lang, self.rng.randint(1, 2))))
        paragraphs.append(f"{self.rng.choice(_SIGNOFFS[lang])}\n{sender.name}")
        return "\n\n".join(paragraphs) + "\n"

    def html_of(self, text: str, title: str = "") -> str:
        blocks = []
        for paragraph in text.strip().split("\n\n"):
            lines = paragraph.split("\n")
            if all(line.startswith(">") for line in lines):
                quoted = "<br>\n".join(html.escape(line.lstrip("> ")) for line in lines)
                blocks.append(f'<blockquote type="cite">{quoted}</blockquote>')
            else:
                blocks.append("<p>" + "<br>\n".join(html.escape(line) for line in lines) + "</p>")
        head = f"<title>{html.escape(title)}</title>" if title else ""
        return (
            '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
            f'{head}</head>\n<body style="font-family: sans-serif">\n'
            + "\n".join(blocks)
            + "\n</body></html>\n"
        )

    def received(self, message: email.message.Message, moment: datetime, sender: _Person) -> None:
        domain = sender.address.split("@")[1]
        relay = f"mail{self.rng.randint(1, 9)}.{domain}"
        ip = f"192.0.2.{self.rng.randint(2, 250)}"
        queue = f"{self.rng.getrandbits(40):010X}"
        stamp = email.utils.format_datetime(moment.astimezone(timezone(timedelta(hours=1))))
        message["Return-Path"] = f"<{sender.address}>"
        message["Received"] = (
            f"from {relay} ({relay} [{ip}]) by mx.example.test (Postfix) with ESMTPS id"
            f" {queue} for <{_ME.address}>; {stamp}"
        )

    def headers(
        self,
        message: email.message.EmailMessage,
        *,
        sender: _Person,
        to: Sequence[_Person],
        subject: str,
        moment: datetime,
        cc: Sequence[_Person] = (),
        message_id: str | None = None,
        references: Sequence[str] = (),
    ) -> str:
        """Set the usual headers in the usual order; return the Message-ID."""
        message_id = message_id or self.message_id(sender.address.split("@")[1])
        message["From"] = sender.addr
        if to:
            message["To"] = [p.addr for p in to]
        if cc:
            message["Cc"] = [p.addr for p in cc]
        message["Subject"] = subject
        message["Date"] = email.utils.format_datetime(self.local(moment, sender))
        message["Message-ID"] = message_id
        if references:
            message["In-Reply-To"] = references[-1]
            message["References"] = " ".join(references[-8:])
        if sender is _ME or self.rng.random() < 0.5:
            message["User-Agent" if self.rng.random() < 0.5 else "X-Mailer"] = self.rng.choice(
                _MAILERS
            )
        return message_id

    def add(
        self,
        folder: str,
        flags: Iterable[str],
        moment: datetime,
        message: email.message.Message,
    ) -> _Pending:
        pending = _Pending(len(self.pending), folder, set(flags), moment, message)
        self.pending.append(pending)
        return pending

    def inbox_or_archive(self, moment: datetime, project: str | None = None) -> str:
        if project is not None:
            return project
        if self.rng.random() < 0.03:
            return "Trash"
        old = (self.end - moment).days > 270
        return "Archive" if old and self.rng.random() < 0.7 else "INBOX"

    def read_flags(self, moment: datetime) -> set[str]:
        recent = (self.end - moment).days < 14
        flags = set() if recent and self.rng.random() < 0.6 else {"\\Seen"}
        if self.rng.random() < 0.07:
            flags.add("\\Flagged")
        return flags

    def others(self, lang: str, count: int) -> list[_Person]:
        same = [p for p in _PEOPLE if p.lang == lang]
        rest = [p for p in _PEOPLE if p.lang != lang and p.lang == "en"]
        chosen = self.rng.sample(same, min(count, len(same)))
        while len(chosen) < count:
            extra = self.rng.choice(rest)
            if extra not in chosen:
                chosen.append(extra)
        return chosen

    # ---------------------------------------------------------------------- kinds of mail

    def thread(self) -> None:
        subject, lang, project = self.rng.choice(_TOPICS)
        people = self.others(lang, self.rng.randint(1, 3))
        moment = self.when()
        references: list[str] = []
        previous: tuple[_Pending, _Person, str, datetime] | None = None
        sender = _ME if self.rng.random() < 0.3 else people[0]
        reply_prefix = self.rng.choice(_REPLY_PREFIXES.get(lang, ("Re: ",)))
        for position in range(self.rng.randint(2, 6)):
            if position:
                moment += timedelta(minutes=self.rng.randint(7, 60 * 48))
                if moment > self.end:
                    break
            recipients = [p for p in [_ME, *people] if p is not sender]
            to, cc = recipients[:1], recipients[1:]
            text = self.body(lang, to[0], sender)
            if previous is not None:
                _, previous_sender, previous_text, previous_moment = previous
                quote_date = self.local(previous_moment, previous_sender).strftime("%Y-%m-%d %H:%M")
                header = _QUOTE_LINES[lang].format(date=quote_date, name=previous_sender.name)
                quoted = "\n".join(("> " + line).rstrip() for line in previous_text.splitlines())
                text += f"\n{header}\n{quoted}\n"
            message = email.message.EmailMessage(policy=_POLICY)
            if sender is not _ME:
                self.received(message, moment, sender)
            full_subject = subject if position == 0 else reply_prefix + subject
            message_id = self.headers(
                message,
                sender=sender,
                to=to,
                cc=cc,
                subject=full_subject,
                moment=moment,
                references=references,
            )
            self.content(message, text, full_subject, lang)
            if self.rng.random() < 0.1:
                self.attach_something(message, lang)
            if sender is _ME:
                pending = self.add("Sent", {"\\Seen"}, self.delivered(moment, 2), message)
                if previous is not None:
                    previous[0].answered_by.append(pending.key)
            else:
                folder = self.inbox_or_archive(moment, project)
                pending = self.add(folder, self.read_flags(moment), self.delivered(moment), message)
                if self.rng.random() < 0.08:
                    self.forward(pending, message, lang, moment)
            references.append(message_id)
            previous = (pending, sender, text, moment)
            # The owner answers about every other message; the others talk among themselves.
            if sender is not _ME and self.rng.random() < 0.5:
                sender = _ME
            else:
                sender = self.rng.choice([p for p in people if p is not sender] or people)

    def delivered(self, moment: datetime, at_most: int = 600) -> datetime:
        return min(self.end, moment + timedelta(seconds=self.rng.randint(1, at_most)))

    def content(
        self, message: email.message.EmailMessage, text: str, subject: str, lang: str
    ) -> None:
        if lang in ("de", "fr", "es") and self.rng.random() < 0.3:
            message.set_content(text, cte="8bit")
        else:
            message.set_content(text)
        if self.rng.random() < 0.45:
            message.add_alternative(self.html_of(text, subject), subtype="html")

    def attach_something(self, message: email.message.EmailMessage, lang: str) -> None:
        choice = self.rng.random()
        if choice < 0.4:
            names = {"de": "Protokoll_Übersicht.pdf", "fr": "Compte-rendu_réunion.pdf"}
            name = names.get(lang, "meeting-notes.pdf")
            pdf = make_pdf(name.removesuffix(".pdf"), self.sentences("en", 3))
            message.add_attachment(pdf, maintype="application", subtype="pdf", filename=name)
        elif choice < 0.75:
            png = make_png(48 + self.rng.randrange(4) * 16, 36, self.rng.randrange(256))
            name = f"IMG_{self.rng.randint(1000, 9999)}.png"
            message.add_attachment(png, maintype="image", subtype="png", filename=name)
        else:
            rows = ["date,item,amount"] + [
                f"2025-{m:02d}-{self.rng.randint(1, 28):02d},item {m},{self.rng.randint(5, 900)}.00"
                for m in range(1, self.rng.randint(4, 12))
            ]
            message.add_attachment("\r\n".join(rows) + "\r\n", subtype="csv", filename="data.csv")

    def forward(
        self,
        original: _Pending,
        message: email.message.EmailMessage,
        lang: str,
        moment: datetime,
    ) -> None:
        moment = min(self.end, moment + timedelta(hours=self.rng.randint(1, 30)))
        to = self.others("en", 1)
        subject = _FORWARD_PREFIXES.get(lang, "Fwd: ") + str(message["Subject"])
        forward = email.message.EmailMessage(policy=_POLICY)
        self.headers(forward, sender=_ME, to=to, subject=subject, moment=moment)
        forward.set_content(self.body("en", to[0], _ME, 1) + "\n(Forwarded message attached.)\n")
        forward.add_attachment(message)
        pending = self.add("Sent", {"\\Seen"}, self.delivered(moment, 2), forward)
        original.forwarded_by.append(pending.key)

    def mailing_list(self) -> None:
        lists = (
            ("alpha-dev", "Alpha developers", "lists.example.com", "Projects/Alpha"),
            ("beta-team", "Beta team", "lists.example.org", "Projects/Beta"),
        )
        name, description, host, folder = self.rng.choice(lists)
        subject, lang, _ = self.rng.choice([t for t in _TOPICS if t[1] in ("en", "de")])
        list_address = _Person(description, f"{name}@{host}", "en", description, 0)
        moment = self.when()
        references: list[str] = []
        for position in range(self.rng.randint(1, 4)):
            sender = self.rng.choice([p for p in _PEOPLE if p.lang in ("en", "de")] + [_ME])
            moment = min(self.end, moment + timedelta(minutes=self.rng.randint(5, 3000)))
            message = email.message.EmailMessage(policy=_POLICY)
            self.received(message, moment, list_address)
            full_subject = f"[{name}] " + ("Re: " if position else "") + subject
            message_id = self.headers(
                message,
                sender=sender,
                to=[list_address],
                subject=full_subject,
                moment=moment,
                references=references,
            )
            message["List-Id"] = f"{description} <{name}.{host}>"
            message["List-Post"] = f"<mailto:{name}@{host}>"
            message["List-Archive"] = f"<https://{host}/archive/{name}/>"
            message["List-Unsubscribe"] = f"<mailto:{name}-leave@{host}>"
            message["Precedence"] = "list"
            message["Sender"] = f"{name}-bounces@{host}"
            text = self.body(lang, None, sender)
            text += f"\n-- \n{name} mailing list\nhttps://{host}/{name}\n"
            message.set_content(text)
            references.append(message_id)
            flags = self.read_flags(moment)
            if sender is _ME:
                # The owner's post: the copy in Sent and the one the list sent back.
                copy = email.message.EmailMessage(policy=_POLICY)
                self.headers(
                    copy,
                    sender=_ME,
                    to=[list_address],
                    subject=full_subject,
                    moment=moment,
                    message_id=message_id,
                    references=references[:-1],
                )
                copy.set_content(text)
                self.add("Sent", {"\\Seen"}, moment, copy)
                flags = {"\\Seen"}
            self.add(folder, flags, self.delivered(moment), message)

    def newsletter(self) -> None:
        moment = self.when()
        sender = _Person("Weekly Digest", "digest@news.example.com", "en", "", 0)
        issue = (moment - self.start).days // 7 + 100
        subject = self.rng.choice(
            (
                f"Your weekly digest – issue #{issue}",
                f"🔥 This week's top stories (#{issue})",
                f"Newsletter: Neuigkeiten im {moment:%m/%Y}",
            )
        )
        message = email.message.EmailMessage(policy=_POLICY)
        self.received(message, moment, sender)
        self.headers(message, sender=sender, to=[_ME], subject=subject, moment=moment)
        token = f"{self.rng.getrandbits(48):012x}"
        message["List-Id"] = "Weekly Digest <digest.news.example.com>"
        message["List-Unsubscribe"] = (
            f"<https://news.example.com/unsubscribe?u={token}>, "
            f"<mailto:unsubscribe@news.example.com?subject=unsubscribe-{token}>"
        )
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        message["Precedence"] = "bulk"
        stories = self.rng.sample(
            [
                "Ten tips for a tidy inbox",
                "Why JMAP matters",
                "Café culture in Paris ☕",
                "Über den Wolken: the best window seats",
                "東京 travel guide",
                "Interview: building mail clients in 2025",
                "The history of the @ sign",
            ],
            3,
        )
        text = "This week:\n\n" + "\n".join(f"* {s}" for s in stories)
        text += f"\n\nUnsubscribe: https://news.example.com/unsubscribe?u={token}\n"
        items = "".join(
            f'<tr><td style="padding:8px"><a href="https://news.example.com/{i}">'
            f"{html.escape(s)}</a></td></tr>\n"
            for i, s in enumerate(stories)
        )
        rich = (
            '<!DOCTYPE html>\n<html><body style="background:#f4f4f4">\n'
            '<table width="600" align="center" style="background:#fff">\n'
            '<tr><td><img src="cid:LOGO" alt="Weekly Digest" width="120"></td></tr>\n'
            f"{items}</table>\n"
            f'<p style="font-size:small"><a href="https://news.example.com/unsubscribe?u={token}">'
            "Unsubscribe</a></p>\n</body></html>\n"
        )
        message.set_content(text)
        with_logo = self.rng.random() < 0.5
        logo_cid = self.message_id("news.example.com")
        rich = rich.replace("cid:LOGO", "cid:" + logo_cid[1:-1])
        if not with_logo:
            rich = rich.replace(
                f'<tr><td><img src="cid:{logo_cid[1:-1]}" alt="Weekly Digest" width="120">'
                "</td></tr>\n",
                "",
            )
        message.add_alternative(rich, subtype="html")
        if with_logo:
            html_part = list(message.iter_parts())[1]
            assert isinstance(html_part, email.message.EmailMessage)
            html_part.add_related(make_png(120, 40, 30), "image", "png", cid=logo_cid)
        flags = self.read_flags(moment) if self.rng.random() < 0.5 else set()
        self.add(self.inbox_or_archive(moment), flags, self.delivered(moment), message)

    def invoice(self) -> None:
        moment = self.when()
        lang = self.rng.choice(("en", "de", "fr"))
        number = self.rng.randint(10000, 99999)
        vendor = {
            "en": _Person("Example Hosting", "billing@hosting.example.com", "en", "", -5),
            "de": _Person("Stadtwerke Beispiel", "rechnung@stadtwerke.example", "de", "", 1),
            "fr": _Person("Électricité Exemple", "factures@electricite.example", "fr", "", 1),
        }[lang]
        subject, filename = {
            "en": (f"Invoice {number}", f"invoice-{number}.pdf"),
            "de": (f"Ihre Rechnung Nr. {number}", f"Rechnung_{number}_Übersicht.pdf"),
            "fr": (f"Votre facture n° {number}", f"facture-{number}-échéance.pdf"),
        }[lang]
        message = email.message.EmailMessage(policy=_POLICY)
        self.received(message, moment, vendor)
        self.headers(message, sender=vendor, to=[_ME], subject=subject, moment=moment)
        amount = f"{self.rng.randint(9, 480)}.{self.rng.randint(0, 99):02d}"
        message.set_content(self.body(lang, _ME, vendor, 2) + f"\n{subject}: {amount} EUR\n")
        pdf = make_pdf(subject, [f"Amount due: {amount} EUR", f"Customer: {_ME.name}"])
        message.add_attachment(pdf, maintype="application", subtype="pdf", filename=filename)
        self.add(self.inbox_or_archive(moment), {"\\Seen"}, self.delivered(moment), message)

    def photos(self) -> None:
        moment = self.when()
        sender = self.rng.choice(_PEOPLE)
        message = email.message.EmailMessage(policy=_POLICY)
        self.received(message, moment, sender)
        subject = {"de": "Fotos vom Wochenende", "fr": "Les photos du week-end", "ja": "週末の写真"}
        self.headers(
            message,
            sender=sender,
            to=[_ME],
            subject=subject.get(sender.lang, "Photos from the weekend 📷"),
            moment=moment,
        )
        inline = self.rng.random() < 0.5
        text = self.body(sender.lang, _ME, sender, 1)
        message.set_content(text)
        if inline:
            # HTML with the picture inline: multipart/alternative(text, related(html, png)).
            cid = self.message_id(sender.address.split("@")[1])
            page = self.html_of(text).replace(
                "</body>", f'<p><img src="cid:{cid[1:-1]}" alt="photo"></p>\n</body>'
            )
            message.add_alternative(page, subtype="html")
            html_part = list(message.iter_parts())[1]
            assert isinstance(html_part, email.message.EmailMessage)
            html_part.add_related(
                make_png(80, 60, self.rng.randrange(256)), "image", "png", cid=cid
            )
        for number in range(self.rng.randint(1 - inline, 3)):
            message.add_attachment(
                make_png(64, 48, self.rng.randrange(256)),
                maintype="image",
                subtype="png",
                filename=f"IMG_{2000 + number + self.rng.randint(0, 7000)}.png",
            )
        flags = self.read_flags(moment)
        if self.rng.random() < 0.3:
            flags.add("\\Flagged")
        self.add(self.inbox_or_archive(moment), flags, self.delivered(moment), message)

    def invitation(self) -> None:
        moment = self.when()
        organizer = self.rng.choice(_PEOPLE)
        event_start = (moment + timedelta(days=self.rng.randint(2, 20))).replace(
            minute=0, second=0, microsecond=0
        )
        summary = self.rng.choice(
            ("Sprint review", "Team-Frühstück 🥐", "Point d'équipe", "Kick-off Projekt Beta")
        )
        message = email.message.EmailMessage(policy=_POLICY)
        self.received(message, moment, organizer)
        self.headers(
            message,
            sender=organizer,
            to=[_ME],
            subject=f"Invitation: {summary} @ {event_start:%a %d %b %Y %H:%M} (UTC)",
            moment=moment,
        )
        ics = make_ics(
            uid=f"{self.rng.getrandbits(64):016x}@calendar.example.com",
            summary=summary,
            start=event_start,
            minutes=self.rng.choice((30, 45, 60)),
            organizer=organizer.addr,
            attendees=[_ME.addr, *[p.addr for p in self.others(organizer.lang, 1)]],
            location=self.rng.choice(("Room 2.14", "Besprechungsraum Süd", "https://meet.example")),
        )
        text = f"{organizer.name} has invited you to: {summary}\n{event_start:%Y-%m-%d %H:%M} UTC\n"
        message.set_content(text)
        message.add_alternative(self.html_of(text, summary), subtype="html")
        message.add_alternative(ics, subtype="calendar", params={"method": "REQUEST"})
        message.add_attachment(
            ics.encode(), maintype="application", subtype="ics", filename="invite.ics"
        )
        self.add(self.inbox_or_archive(moment), self.read_flags(moment), moment, message)

    def travel(self) -> None:
        moment = self.when()
        agency = _Person("Reisebüro Sonnenschein", "buchung@reisen.example", "de", "", 1)
        route = self.rng.choice(
            ("München → Paris", "Berlin → Wien", "Köln → Zürich", "Hamburg → København")
        )
        code = "".join(self.rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(6))
        message = email.message.EmailMessage(policy=_POLICY)
        self.received(message, moment, agency)
        self.headers(
            message,
            sender=agency,
            to=[_ME],
            subject=f"Ihre Buchungsbestätigung {code}: {route}",
            moment=moment,
        )
        departure = moment + timedelta(days=self.rng.randint(5, 60))
        text = (
            f"Guten Tag {_ME.name},\n\nvielen Dank für Ihre Buchung.\n\n"
            f"Strecke: {route}\nAbfahrt: {departure:%d.%m.%Y %H:%M} Uhr\n"
            f"Buchungsnummer: {code}\n\nIhr Reisebüro Sonnenschein\n"
        )
        message.set_content(text, cte="quoted-printable")
        message.add_attachment(
            make_pdf(f"Fahrschein {code}", [route, f"{departure:%d.%m.%Y %H:%M}"]),
            maintype="application",
            subtype="pdf",
            filename=f"Fahrschein_{code}.pdf",
        )
        if self.rng.random() < 0.5:
            ics = make_ics(
                uid=f"{code.lower()}@reisen.example",
                summary=f"Reise {route}",
                start=departure,
                minutes=300,
                organizer=agency.addr,
                attendees=[_ME.addr],
                method="PUBLISH",
            )
            message.add_attachment(
                ics.encode(), maintype="text", subtype="calendar", filename="reise.ics"
            )
        flags = {"\\Seen", "\\Flagged"} if self.rng.random() < 0.3 else {"\\Seen"}
        self.add("Reisen/Übersicht", flags, self.delivered(moment), message)

    def notification(self) -> None:
        moment = self.when()
        bot = _Person("CI", "ci@build.example.com", "en", "", 0)
        number = self.rng.randint(1000, 9999)
        passed = self.rng.random() < 0.7
        subject = f"[build] main #{number} {'passed ✅' if passed else 'failed ❌'}"
        message = email.message.EmailMessage(policy=_POLICY)
        self.received(message, moment, bot)
        self.headers(message, sender=bot, to=[_ME], subject=subject, moment=moment)
        message["Auto-Submitted"] = "auto-generated"
        message["X-Build-Status"] = "passed" if passed else "failed"
        log = "\n".join(f"step {i}: ok ({self.rng.randint(1, 90)}s)" for i in range(1, 6))
        message.set_content(f"Build #{number} on main.\n\n{log}\n")
        folder = self.inbox_or_archive(moment)
        if self.rng.random() < 0.15:
            folder = "Trash"
        self.add(
            folder, {"\\Seen"} if folder != "INBOX" else self.read_flags(moment), moment, message
        )

    def legacy(self) -> None:
        """An old mailer's message: compat32, ISO-8859-1 header words and body, QP."""
        moment = self.when()
        sender = self.rng.choice([p for p in _PEOPLE if p.lang in ("de", "fr")])
        subject = {"de": "Nachträgliche Änderungen für März", "fr": "Réservation confirmée"}[
            sender.lang
        ]
        message = email.message.Message(policy=_LEGACY_POLICY)
        self.received(message, moment, sender)
        message["From"] = email.header.Header(sender.name, "iso-8859-1").encode() + (
            f" <{sender.address}>"
        )
        message["To"] = f"{_ME.name} <{_ME.address}>"
        message["Subject"] = email.header.Header(subject, "iso-8859-1").encode()
        message["Date"] = email.utils.format_datetime(self.local(moment, sender))
        message["Message-ID"] = self.message_id(sender.address.split("@")[1])
        message["X-Mailer"] = "Microsoft Outlook 14.0"
        message["MIME-Version"] = "1.0"
        charset = email.charset.Charset("iso-8859-1")
        charset.body_encoding = email.charset.QP
        text = self.body(sender.lang, _ME, sender, 3).replace("—", "-")
        message.set_payload(text.replace("\n", "\r\n"), charset)
        self.add(self.inbox_or_archive(moment), self.read_flags(moment), moment, message)

    def japanese(self) -> None:
        """A classic Japanese message: ISO-2022-JP, 7bit."""
        moment = self.when()
        sender = self.rng.choice([p for p in _PEOPLE if p.lang == "ja"])
        message = email.message.Message(policy=_LEGACY_POLICY)
        self.received(message, moment, sender)
        name = email.header.Header(sender.name, "iso-2022-jp").encode()
        message["From"] = f"{name} <{sender.address}>"
        message["To"] = _ME.address
        message["Subject"] = email.header.Header(
            self.rng.choice(("お知らせ", "打ち合わせの件", "見積書の送付について")), "iso-2022-jp"
        ).encode()
        message["Date"] = email.utils.format_datetime(self.local(moment, sender))
        message["Message-ID"] = self.message_id(sender.address.split("@")[1])
        message["MIME-Version"] = "1.0"
        text = self.body("ja", _ME, sender, 3)
        message.set_payload(text.replace("\n", "\r\n"), "iso-2022-jp")
        self.add(self.inbox_or_archive(moment), self.read_flags(moment), moment, message)

    def draft(self) -> None:
        moment = self.when(self.end - timedelta(days=60))
        to = self.others(self.rng.choice(("en", "de", "fr")), 1)
        message = email.message.EmailMessage(policy=_POLICY)
        has_recipient = self.rng.random() < 0.8
        subject = self.rng.choice(("Re: Quarterly planning", "Idee für das Sommerfest", ""))
        self.headers(
            message, sender=_ME, to=to if has_recipient else [], subject=subject, moment=moment
        )
        message.set_content(self.body(to[0].lang, to[0], _ME, 1) + "\n[unfinished]\n")
        flags = {"\\Draft", "\\Seen"} if self.rng.random() < 0.5 else {"\\Draft"}
        self.add("Drafts", flags, moment, message)

    def spam(self) -> None:
        moment = self.when(self.end - timedelta(days=30))
        domain = f"{self.rng.choice(('win', 'promo', 'deal'))}{self.rng.randint(1, 99)}.invalid"
        sender = _Person("Prize Department", f"noreply@{domain}", "en", "", 0)
        message = email.message.EmailMessage(policy=_POLICY)
        self.received(message, moment, sender)
        self.headers(
            message,
            sender=sender,
            to=[_ME],
            subject=self.rng.choice(
                ("You have WON €1.000.000!!!", "Ihr Konto wurde gesperrt", "💊 Cheap meds")
            ),
            moment=moment,
        )
        message["X-Spam-Flag"] = "YES"
        message["X-Spam-Score"] = f"{self.rng.randint(8, 30)}.{self.rng.randint(0, 9)}"
        # HTML only, no text part: a shape clients must cope with.
        message.set_content(
            '<html><body><h1 style="color:red">CLICK NOW</h1>'
            '<a href="https://prize.invalid/">claim</a></body></html>\n',
            subtype="html",
        )
        self.add("Junk", {"$Junk"}, moment, message)

    def sent(self) -> None:
        moment = self.when()
        lang = self.rng.choice(("en", "en", "de", "fr"))
        to = self.others(lang, self.rng.randint(1, 3))
        message = email.message.EmailMessage(policy=_POLICY)
        subject = self.rng.choice(
            ("Quick question", "Notes from today", "Unterlagen für Montag", "Suivi du dossier")
        )
        self.headers(message, sender=_ME, to=to[:1], cc=to[1:], subject=subject, moment=moment)
        if self.rng.random() < 0.2:
            message["Bcc"] = self.others("en", 1)[0].addr
        message.set_content(self.body(lang, to[0], _ME))
        if self.rng.random() < 0.3:
            self.attach_something(message, lang)
        self.add("Sent", {"\\Seen"}, self.delivered(moment, 2), message)

    # ---------------------------------------------------------------------- assembly

    KINDS = (
        ("thread", 30),
        ("mailing_list", 10),
        ("newsletter", 8),
        ("invoice", 6),
        ("photos", 6),
        ("invitation", 4),
        ("travel", 4),
        ("notification", 8),
        ("legacy", 3),
        ("japanese", 2),
        ("draft", 3),
        ("spam", 3),
        ("sent", 6),
    )

    def run(self, n: int) -> list[SampleMessage]:
        names = [name for name, _ in self.KINDS]
        weights = [weight for _, weight in self.KINDS]
        # Each kind at least once when there is room, then at random.
        order = names[:] if n >= 3 * len(names) else []
        while len(self.pending) < n:
            kind = order.pop(0) if order else self.rng.choices(names, weights)[0]
            getattr(self, kind)()
        kept = self.pending[:n]
        keys = {p.key for p in kept}
        result = []
        for pending in kept:
            flags = set(pending.flags)
            if any(key in keys for key in pending.answered_by):
                flags.add("\\Answered")
            if any(key in keys for key in pending.forwarded_by):
                flags.add("$Forwarded")
            for part in pending.message.walk():
                if part.is_multipart():  # else the generator picks random boundaries
                    part.set_boundary(f"=_{self.rng.getrandbits(96):024x}")
            raw = pending.message.as_bytes(policy=pending.message.policy)
            result.append(
                SampleMessage(
                    folder=pending.folder,
                    flags=tuple(sorted(flags)),
                    internaldate=pending.internaldate.replace(microsecond=0),
                    raw=raw,
                )
            )
        result.sort(key=lambda m: m.internaldate)
        return result


def generate(n: int, seed: int = 1, *, end: datetime | None = None) -> list[SampleMessage]:
    """``n`` realistic messages, oldest first; the same arguments give the same bytes.

    Dates fall in the two years before ``end`` (default :data:`DEFAULT_END`, fixed so that the
    output does not change from day to day).
    """
    if n < 0:
        raise ValueError("n must not be negative")
    end = end or DEFAULT_END
    if end.tzinfo is None:
        raise ValueError("end must be timezone-aware")
    return _Generator(seed, end.astimezone(UTC)).run(n)


# --------------------------------------------------------------------------------------------
# Maildir seeding


def encode_mutf7(name: str) -> str:
    """RFC 3501 §5.1.3 modified UTF-7, as Dovecot names Maildir folders on disk."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            data = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(data).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def _folder_dir(maildir: Path, folder: str) -> Path:
    if folder.upper() == "INBOX":
        return maildir
    return maildir.joinpath(*(encode_mutf7(part) for part in folder.split("/")))


def _keyword_letters(
    directory: Path, keywords: Iterable[str], owner: tuple[int, int]
) -> dict[str, str]:
    """Map keywords to Maildir flag letters via ``dovecot-keywords`` (extending it)."""
    path = directory / "dovecot-keywords"
    known: dict[str, int] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            number, _, keyword = line.partition(" ")
            if number.isdigit() and keyword:
                known[keyword] = int(number)
    changed = False
    for keyword in sorted(set(keywords)):
        if keyword not in known:
            free = next(i for i in range(26) if i not in known.values())
            known[keyword] = free
            changed = True
    if changed:
        path.write_text("".join(f"{n} {k}\n" for k, n in sorted(known.items(), key=lambda i: i[1])))
        if os.geteuid() == 0:
            os.chown(path, *owner)
    return {keyword: chr(ord("a") + number) for keyword, number in known.items()}


_UNSAFE_RE = re.compile(rb"\r?\n")


def seed_maildir(
    server: DovecotServer, username: str, messages: Sequence[SampleMessage]
) -> dict[str, int]:
    """Write ``messages`` into ``username``'s Maildir; return the message count per folder.

    Folders are created (parents too) and subscribed with ``doveadm``; each message becomes a
    file in the folder's ``cur`` with its flags in the name and its INTERNALDATE as mtime,
    owned by the mail uid.  Dovecot then indexes the folders and the counts it reports are
    checked against what was written (including messages already there).
    """
    maildir = server.maildir(username)
    owner = (server.mail_uid, server.mail_gid)
    folders: list[str] = []
    for message in messages:
        parts = message.folder.split("/")
        for depth in range(1, len(parts) + 1):
            name = "/".join(parts[:depth])
            if name not in folders:
                folders.append(name)
    missing = [
        f
        for f in folders
        if f.upper() != "INBOX" and not (_folder_dir(maildir, f) / "cur").is_dir()
    ]
    if missing:
        server.doveadm("mailbox", "create", "-s", "-u", username, *missing)
    if not (maildir / "cur").is_dir():
        server.doveadm("mailbox", "status", "-u", username, "messages", "INBOX")
    before = _counts(server, username, folders)
    by_folder: dict[str, list[SampleMessage]] = {}
    for message in messages:
        by_folder.setdefault(message.folder, []).append(message)
    pid = os.getpid()
    for folder, items in by_folder.items():
        directory = _folder_dir(maildir, folder)
        keywords = {f for m in items for f in m.flags if not f.startswith("\\")}
        letters = _keyword_letters(directory, keywords, owner) if keywords else {}
        for number, message in enumerate(items):
            flag_letters = "".join(
                sorted(_SYSTEM_FLAGS.get(f) or letters[f] for f in message.flags)
            )
            stamp = message.internaldate.timestamp()
            size = len(message.raw)
            virtual_size = len(_UNSAFE_RE.sub(b"\r\n", message.raw))
            name = (
                f"{int(stamp)}.M{number:06d}P{pid}Q{id(message) % 100000}.imapjmap"
                f",S={size},W={virtual_size}:2,{flag_letters}"
            )
            path = directory / "cur" / name
            path.write_bytes(message.raw)
            os.utime(path, (stamp, stamp))
            if os.geteuid() == 0:
                os.chown(path, *owner)
    expected = Counter(before)
    expected.update(m.folder for m in messages)
    after = _counts(server, username, folders)
    if after != dict(expected):
        raise RuntimeError(f"Dovecot counts {after} after seeding, expected {dict(expected)}")
    return after


def _counts(server: DovecotServer, username: str, folders: Sequence[str]) -> dict[str, int]:
    """Message counts per folder as Dovecot sees them (this also indexes new files)."""
    output = server.doveadm("-f", "tab", "mailbox", "status", "-u", username, "messages", *folders)
    counts = dict.fromkeys(folders, 0)  # not listed: not created yet
    for line in output.splitlines()[1:]:  # the first line names the fields
        name, _, count = line.rpartition("\t")
        counts[name] = int(count)
    return counts
