"""The emulated Gmail account: messages that exist once, labels, and folder views.

Model (what Google documents for IMAP, see the package docstring):

* A message exists once, with one X-GM-MSGID, one X-GM-THRID, global flags and a set of
  labels (X-GM-LABELS).  System labels are backslash atoms (``\\Inbox``, ``\\Sent``,
  ``\\Draft``, ``\\Important``, ``\\Starred``); user labels are their names.
* It is in one *place*: the mail (``[Gmail]/All Mail``), the trash or the spam.
* Every IMAP folder is a view with its own UIDs: ``INBOX`` shows the mail labelled
  ``\\Inbox``, a user label's folder the mail with that label, ``[Gmail]/All Mail`` all the
  mail, ``[Gmail]/Trash`` and ``[Gmail]/Spam`` the messages placed there.  A message that
  enters a view gets the view's next UID; it keeps it while it stays.
* ``\\Flagged`` and the ``\\Starred`` label are one thing: setting either sets both.
* ``\\Deleted`` is per view, and what EXPUNGE does depends on the view: in a label's
  folder it removes the label, in All Mail it moves the message to the trash, in the
  trash or spam it deletes the message forever.

Two knobs exist only for tests and are NOT documented Gmail behaviour: :attr:`Account.lag`
hides a message that a write changed from every view for a while (a stand-in for the
eventual consistency of Gmail's views), and :meth:`Account.hide`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.parser
import email.policy
import email.utils
import itertools
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

Place = Literal["mail", "trash", "spam"]
Kind = Literal["label", "all", "trash", "spam", "noselect"]

# special-use attribute -> (folder name, kind, system label) as Google's LIST example shows
SPECIAL_FOLDERS: tuple[tuple[str, str, Kind, str | None], ...] = (
    ("[Gmail]/All Mail", "\\All", "all", None),
    ("[Gmail]/Drafts", "\\Drafts", "label", "\\Draft"),
    ("[Gmail]/Important", "\\Important", "label", "\\Important"),
    ("[Gmail]/Sent Mail", "\\Sent", "label", "\\Sent"),
    ("[Gmail]/Spam", "\\Junk", "spam", None),
    ("[Gmail]/Starred", "\\Flagged", "label", "\\Starred"),
    ("[Gmail]/Trash", "\\Trash", "trash", None),
)
SYSTEM_LABELS = ("\\Inbox", "\\Draft", "\\Important", "\\Sent", "\\Starred")
_FIRST_MSGID = 1_600_000_000_000_000_000  # X-GM-MSGID values are 64-bit numbers


@dataclass
class Folder:
    name: str  # decoded name ("INBOX", "[Gmail]/All Mail", "Work/Ünïcode")
    kind: Kind
    label: str | None  # the X-GM-LABELS value this folder shows (kind "label")
    special_use: str | None
    uidvalidity: int
    uidnext: int = 1
    uids: dict[int, int] = field(default_factory=dict)  # msgid -> UID in this view

    def attributes(self, has_children: bool) -> list[str]:
        out = ["\\HasChildren" if has_children else "\\HasNoChildren"]
        if self.kind == "noselect":
            out.insert(0, "\\Noselect")
        if self.special_use:
            out.append(self.special_use)
        return out


@dataclass
class Message:
    msgid: int
    thrid: int
    raw: bytes
    internaldate: dt.datetime
    flags: set[str]  # global flags, never \\Deleted
    labels: set[str]
    place: Place
    modseq: int
    deleted_in: set[str] = field(default_factory=set)  # folder names where \\Deleted is set

    @property
    def size(self) -> int:
        return len(self.raw)

    def header(self, name: str) -> str | None:
        parsed = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(
            self.raw, headersonly=True
        )
        value = parsed.get(name)
        return None if value is None else str(value)

    def has_label(self, label: str) -> bool:
        wanted = label.casefold() if label.startswith("\\") else label
        return any((x.casefold() if x.startswith("\\") else x) == wanted for x in self.labels)


def _same_label(a: str, b: str) -> bool:
    if a.startswith("\\") or b.startswith("\\"):
        return a.casefold() == b.casefold()
    return a == b


class Account:
    """One user's mail.  Every method runs synchronously between two awaits of the server,
    so each IMAP command sees and leaves a consistent state."""

    def __init__(
        self, user: str, labels: Iterable[str] = (), names: dict[str, str] | None = None
    ) -> None:
        """``names``: localised folder names, e.g. ``{"[Gmail]/All Mail": "[Google
        Mail]/Alle Nachrichten"}`` (the parent ``[Gmail]`` follows the first one)."""
        self.user = user
        self.modseq = 1
        self.messages: dict[int, Message] = {}
        self.folders: dict[str, Folder] = {}
        self._validity = itertools.count(101)
        self._msgids = itertools.count(_FIRST_MSGID, 7919)
        self._changed = asyncio.Event()
        self.lag = 0.0  # seconds a written message stays out of every view (test knob)
        self._hidden: dict[int, float] = {}
        self.commands: list[str] = []  # every command name run on this account, in order
        names = names or {}
        parent = next(iter(names.values()), "[Gmail]/").rpartition("/")[0]
        self.add_folder("INBOX", "label", "\\Inbox", None)
        self.add_folder(parent, "noselect", None, None)
        for name, special, kind, label in SPECIAL_FOLDERS:
            self.add_folder(names.get(name, name), kind, label, special)
        for label in labels:
            self.create_label(label)

    # -- folders -------------------------------------------------------------------------

    def add_folder(self, name: str, kind: Kind, label: str | None, special: str | None) -> Folder:
        folder = Folder(name, kind, label, special, next(self._validity))
        self.folders[name] = folder
        for msg in self.messages.values():
            self._place(msg, folder)
        return folder

    def create_label(self, name: str) -> Folder:
        """A user label and its folder (parents are created as labels too, as Gmail does)."""
        parts = name.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if self.folder(parent) is None:
                self.add_folder(parent, "label", parent, None)
        found = self.folder(name)
        return found if found is not None else self.add_folder(name, "label", name, None)

    def folder(self, name: str) -> Folder | None:
        if name.upper() == "INBOX":
            return self.folders.get("INBOX")
        return self.folders.get(name)

    def folder_for_label(self, label: str) -> Folder | None:
        if label.upper() == "INBOX":
            label = "\\Inbox"
        for folder in self.folders.values():
            if folder.kind == "label" and folder.label and _same_label(folder.label, label):
                return folder
        return None

    def delete_folder(self, name: str) -> None:
        folder = self.folders.pop(name)
        if folder.label is not None and folder.kind == "label":
            for msg in self.messages.values():
                msg.labels = {x for x in msg.labels if not _same_label(x, folder.label)}
                self._touch(msg)

    def rename_folder(self, old: str, new: str) -> None:
        folder = self.folders.pop(old)
        for msg in self.messages.values():
            if folder.label and msg.has_label(folder.label):
                msg.labels = {new if _same_label(x, folder.label) else x for x in msg.labels}
                self._touch(msg)
        folder.name = folder.label = new
        self.folders[new] = folder

    def has_children(self, folder: Folder) -> bool:
        prefix = folder.name + "/"
        return any(name.startswith(prefix) for name in self.folders)

    # -- membership ----------------------------------------------------------------------

    def belongs(self, msg: Message, folder: Folder) -> bool:
        if folder.kind == "all":
            return msg.place == "mail"
        if folder.kind in ("trash", "spam"):
            return msg.place == folder.kind
        if folder.kind == "label" and folder.label is not None:
            return msg.place == "mail" and msg.has_label(folder.label)
        return False

    def _place(self, msg: Message, folder: Folder) -> None:
        inside = msg.msgid in folder.uids
        if self.belongs(msg, folder) and not inside:
            folder.uids[msg.msgid] = folder.uidnext
            folder.uidnext += 1
        elif inside and not self.belongs(msg, folder):
            del folder.uids[msg.msgid]
            msg.deleted_in.discard(folder.name)

    def visible(self, folder: Folder) -> list[tuple[int, Message]]:
        """(UID, message) of the folder's view now, by UID."""
        now = time.monotonic()
        return sorted(
            (uid, self.messages[msgid])
            for msgid, uid in folder.uids.items()
            if self._hidden.get(msgid, 0.0) <= now
        )

    def hide(self, msgid: int, seconds: float) -> None:
        """Keep a message out of every view for ``seconds`` (test knob, not Gmail); it comes
        back with a new modseq, as a change that only now became visible."""
        self._hidden[msgid] = time.monotonic() + seconds
        asyncio.get_running_loop().call_later(seconds + 0.01, self._reveal, msgid)

    def _reveal(self, msgid: int) -> None:
        msg = self.messages.get(msgid)
        if msg is not None:
            self._touch(msg)

    # -- changes ---------------------------------------------------------------------------

    def notify(self) -> None:
        """Wake every IDLE of this account."""
        self._changed.set()
        self._changed = asyncio.Event()

    def next_change(self) -> asyncio.Event:
        """The event the next change sets: taken before looking at the folder, so that a
        change made between the look and the wait is not missed."""
        return self._changed

    def _touch(self, msg: Message, *, written: bool = False) -> None:
        self.modseq += 1
        msg.modseq = self.modseq
        for folder in self.folders.values():
            self._place(msg, folder)
        if written and self.lag:
            self.hide(msg.msgid, self.lag)
        self.notify()

    def thread_of(self, raw: bytes, msgid: int) -> int:
        """X-GM-THRID: the thread of a message this one refers to, else a new one."""
        parsed = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(
            raw, headersonly=True
        )
        refs = " ".join(str(parsed.get(h, "")) for h in ("In-Reply-To", "References"))
        wanted = {r.strip("<>") for r in refs.split() if r}
        for other in self.messages.values():
            mid = (other.header("Message-ID") or "").strip().strip("<>")
            if mid and mid in wanted:
                return other.thrid
        return msgid

    def append(
        self,
        folder: Folder,
        raw: bytes,
        flags: Iterable[str] = (),
        internaldate: dt.datetime | None = None,
    ) -> Message:
        msgid = next(self._msgids)
        place: Place = (
            "trash" if folder.kind == "trash" else "spam" if folder.kind == "spam" else "mail"
        )
        labels = {folder.label} if folder.kind == "label" and folder.label else set()
        msg = Message(
            msgid=msgid,
            thrid=self.thread_of(raw, msgid),
            raw=raw,
            internaldate=internaldate or dt.datetime.now(dt.UTC).replace(microsecond=0),
            flags={f for f in flags if f.lower() != "\\deleted"},
            labels=labels,
            place=place,
            modseq=0,
        )
        self.messages[msgid] = msg
        self._starred_from_flags(msg)
        self._touch(msg)
        return msg

    def store_flags(self, msg: Message, op: str, flags: Iterable[str], folder: Folder) -> None:
        flags = list(flags)
        deleted = any(f.lower() == "\\deleted" for f in flags)
        rest = {f for f in flags if f.lower() != "\\deleted"}
        if op == "":
            msg.flags = set(rest)
            (msg.deleted_in.add if deleted else msg.deleted_in.discard)(folder.name)
        elif op == "+":
            msg.flags |= rest
            if deleted:
                msg.deleted_in.add(folder.name)
        else:
            msg.flags = {f for f in msg.flags if f.lower() not in {r.lower() for r in rest}}
            if deleted:
                msg.deleted_in.discard(folder.name)
        self._starred_from_flags(msg)
        self._touch(msg, written=True)

    def store_labels(self, msg: Message, op: str, labels: Iterable[str]) -> None:
        """``+X-GM-LABELS`` / ``-X-GM-LABELS`` / ``X-GM-LABELS`` (replace)."""
        wanted = [self._normal_label(x) for x in labels]
        if op == "":
            msg.labels = set()
        for label in wanted:
            if op == "-":
                msg.labels = {x for x in msg.labels if not _same_label(x, label)}
            elif not msg.has_label(label):
                msg.labels.add(label)
                if not label.startswith("\\") and self.folder_for_label(label) is None:
                    self.create_label(label)  # Gmail creates a label on first use
        self._flags_from_starred(msg)
        self._touch(msg, written=True)

    def _normal_label(self, label: str) -> str:
        if label.upper() == "INBOX":
            return "\\Inbox"
        for system in SYSTEM_LABELS:
            if label.casefold() == system.casefold():
                return system
        return label

    def _starred_from_flags(self, msg: Message) -> None:
        flagged = any(f.lower() == "\\flagged" for f in msg.flags)
        msg.labels = {x for x in msg.labels if not _same_label(x, "\\Starred")}
        if flagged:
            msg.labels.add("\\Starred")

    def _flags_from_starred(self, msg: Message) -> None:
        msg.flags = {f for f in msg.flags if f.lower() != "\\flagged"}
        if msg.has_label("\\Starred"):
            msg.flags.add("\\Flagged")

    def copy_to(self, msg: Message, target: Folder) -> None:
        """COPY into a folder: add its label; into the trash or spam: move there."""
        if target.kind == "trash":
            msg.place = "trash"
        elif target.kind == "spam":
            msg.place = "spam"
        elif target.kind == "all":
            msg.place = "mail"
        elif target.kind == "label" and target.label:
            msg.place = "mail"
            if not msg.has_label(target.label):
                msg.labels.add(target.label)
            self._flags_from_starred(msg)
        self._touch(msg, written=True)

    def move(self, msg: Message, source: Folder, target: Folder) -> None:
        """MOVE: COPY, then leave the source view (a label's folder loses its label)."""
        self.copy_to(msg, target)
        if source.kind == "label" and source.label and source is not target:
            msg.labels = {x for x in msg.labels if not _same_label(x, source.label)}
            self._flags_from_starred(msg)
            self._touch(msg, written=True)

    def expunge(self, msg: Message, folder: Folder) -> None:
        """EXPUNGE of a ``\\Deleted`` message from ``folder`` (see the module docstring)."""
        msg.deleted_in.discard(folder.name)
        if folder.kind in ("trash", "spam"):
            del self.messages[msg.msgid]
            for view in self.folders.values():
                view.uids.pop(msg.msgid, None)
            self.modseq += 1
            self.notify()
        elif folder.kind == "all":
            msg.place = "trash"
            self._touch(msg)
        elif folder.label is not None:
            msg.labels = {x for x in msg.labels if not _same_label(x, folder.label)}
            self._flags_from_starred(msg)
            self._touch(msg)

    # -- reading ---------------------------------------------------------------------------

    def by_msgid(self, msgid: int) -> Message:
        return self.messages[msgid]

    def find(self, subject: str) -> Message:
        """The one message with this Subject (tests)."""
        found = [m for m in self.messages.values() if (m.header("Subject") or "") == subject]
        if len(found) != 1:
            raise LookupError(f"{len(found)} messages with subject {subject!r}")
        return found[0]

    def labels_of(self, subject: str) -> set[str]:
        return set(self.find(subject).labels)

    def iter_messages(self) -> Iterator[Message]:
        return iter(list(self.messages.values()))


def make_message(
    subject: str,
    *,
    sender: str = "Alice Example <alice@example.org>",
    to: str = "Bob Example <bob@example.org>",
    body: str = "Hello there.\r\n",
    message_id: str | None = None,
    in_reply_to: str | None = None,
    date: dt.datetime | None = None,
) -> bytes:
    """A small RFC 5322 message with CRLF line ends."""
    date = date or dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
    mid = message_id or email.utils.make_msgid(domain="example.org")
    lines = [
        f"From: {sender}",
        f"To: {to}",
        f"Subject: {subject}",
        f"Date: {email.utils.format_datetime(date)}",
        f"Message-ID: {mid}",
    ]
    if in_reply_to:
        lines += [f"In-Reply-To: {in_reply_to}", f"References: {in_reply_to}"]
    lines += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8", ""]
    return ("\r\n".join(lines) + "\r\n" + body).encode()
