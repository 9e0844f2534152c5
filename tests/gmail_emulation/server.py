"""The emulation's IMAP server: one asyncio connection handler per client.

Each connection keeps the view of its selected folder (the UIDs it has been told about,
in sequence order) and, before and after each command, reports what changed meanwhile:
``EXPUNGE`` (never during a FETCH, STORE or SEARCH by sequence number, RFC 3501 §7.4.1),
``EXISTS`` and ``FETCH (UID FLAGS MODSEQ)`` for messages changed since it last saw them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final

from tests.gmail_emulation import render
from tests.gmail_emulation.mailstore import Account, Folder, Message
from tests.gmail_emulation.search import parse_search
from tests.gmail_emulation.wire import (
    Atom,
    ProtocolError,
    Token,
    as_text,
    internaldate,
    label,
    literal,
    mailbox_arg,
    mailbox_name,
    parse_internaldate,
    plist,
    read_command,
    render_set,
    sequence_set,
    tokenize,
)

if TYPE_CHECKING:
    from tests.gmail_emulation import GmailEmulation

_XOAUTH2_ERROR: Final = base64.b64encode(
    json.dumps({"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"}).encode()
)
_PERMANENT: Final = b"(\\Answered \\Flagged \\Draft \\Deleted \\Seen $NotPhishing $Phishing \\*)"
_BY_SEQUENCE_NO_EXPUNGE: Final = frozenset({"FETCH", "STORE", "SEARCH", "COPY", "MOVE"})


class No(Exception):
    """A tagged NO, with an optional response code."""

    def __init__(self, text: str, code: str = "") -> None:
        super().__init__(text)
        self.code = code


class Connection:
    def __init__(
        self, server: GmailEmulation, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.account: Account | None = None
        self.folder: Folder | None = None
        self.readonly = False
        self.view: list[int] = []  # UIDs, in sequence order
        self.reported: dict[int, int] = {}  # UID -> modseq last reported
        self.condstore = False
        self.done = False

    # -- plumbing --------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        self.writer.write(data + b"\r\n")

    def untagged(self, data: bytes) -> None:
        self.send(b"* " + data)

    async def run(self) -> None:
        self.untagged(b"OK Gimap ready for requests from 127.0.0.1 (imapjmap test emulation)")
        while not self.done:
            await self.writer.drain()
            segments = await read_command(self.reader, self.writer)
            if segments is None:
                return
            await self._one(segments)
        await self.writer.drain()

    async def _one(self, segments: list[bytes]) -> None:
        try:
            tokens = tokenize(segments)
        except ProtocolError as exc:
            self.send(b"* BAD " + str(exc).encode())
            return
        if len(tokens) < 2:
            self.send(b"* BAD missing command")
            return
        tag, name, args = as_text(tokens[0]), as_text(tokens[1]).upper(), tokens[2:]
        uid = name == "UID"
        if uid:
            if not args:
                self.send(f"{tag} BAD UID needs a command".encode())
                return
            name, args = as_text(args[0]).upper(), args[1:]
        if self.account is not None:
            self.account.commands.append(_logged(uid, name, segments[0]))
        try:
            code = await self._dispatch(tag, name, args, uid)
        except No as exc:
            self._sync(uid or name not in _BY_SEQUENCE_NO_EXPUNGE)
            prefix = f"[{exc.code}] " if exc.code else ""
            self.send(f"{tag} NO {prefix}{exc}".encode())
            return
        except (ProtocolError, ValueError, IndexError, KeyError) as exc:
            self.send(f"{tag} BAD {type(exc).__name__}: {exc}".encode())
            return
        self._sync(uid or name not in _BY_SEQUENCE_NO_EXPUNGE)
        self.send(f"{tag} OK {code + ' ' if code else ''}{name} completed (Success)".encode())

    async def _dispatch(self, tag: str, name: str, args: list[Token], uid: bool) -> str:
        handler: Callable[..., object] | None = getattr(self, "cmd_" + name.replace("-", "_"), None)
        if handler is None:
            raise ProtocolError(f"{name} is not emulated")
        needs_auth = name not in ("CAPABILITY", "NOOP", "LOGOUT", "LOGIN", "AUTHENTICATE", "ID")
        if needs_auth and self.account is None:
            raise ProtocolError("log in first")
        if name in ("FETCH", "STORE", "COPY", "MOVE", "SEARCH", "EXPUNGE", "CLOSE"):
            if self.folder is None:
                raise ProtocolError("select a mailbox first")
            self._sync(uid)
            result = handler(args, uid)
        elif name in ("AUTHENTICATE", "IDLE"):
            result = await handler(tag, args)  # type: ignore[misc]
        else:
            result = handler(args)
        return result if isinstance(result, str) else ""

    def _sync(self, expunges: bool) -> None:
        """Tell this connection what changed in its selected folder (module docstring)."""
        if self.account is None or self.folder is None:
            return
        if self.folder.name not in self.account.folders:
            self.untagged(b"BYE the selected mailbox was deleted")
            self.done = True
            return
        current = dict(self.account.visible(self.folder))
        if expunges:
            for index in range(len(self.view) - 1, -1, -1):
                if self.view[index] not in current:
                    self.reported.pop(self.view.pop(index), None)
                    self.untagged(b"%d EXPUNGE" % (index + 1))
        new = [u for u in current if u not in self.reported]
        if new:
            self.view = sorted(set(self.view) | set(new))
            for u in new:
                self.reported[u] = current[u].modseq
            self.untagged(b"%d EXISTS" % len(self.view))
        for seq, u in enumerate(self.view, 1):
            msg = current.get(u)
            if msg is not None and msg.modseq > self.reported.get(u, 0):
                self.reported[u] = msg.modseq
                items = [b"UID %d" % u, b"FLAGS " + self._flags(msg)]
                if self.condstore:
                    items.append(b"MODSEQ (%d)" % msg.modseq)
                self.untagged(b"%d FETCH " % seq + plist(items))

    def _flags(self, msg: Message) -> bytes:
        flags = sorted(msg.flags)
        if self.folder is not None and self.folder.name in msg.deleted_in:
            flags.append("\\Deleted")
        return plist([f.encode() for f in flags])

    @property
    def _acct(self) -> Account:
        assert self.account is not None
        return self.account

    @property
    def _selected(self) -> Folder:
        assert self.folder is not None
        return self.folder

    def _folder(self, token: Token) -> Folder:
        folder = self._acct.folder(mailbox_arg(token))
        if folder is None:
            raise No(f"Unknown Mailbox: {mailbox_arg(token)}", "NONEXISTENT")
        return folder

    def _targets(self, text: str, uid: bool) -> list[tuple[int, int, Message]]:
        """(seq, uid, message) of the view that ``text`` names."""
        assert self.account is not None and self.folder is not None
        by_uid = {u: msgid for msgid, u in self.folder.uids.items()}
        rows = []
        for seq, u in enumerate(self.view, 1):
            msg = self.account.messages.get(by_uid.get(u, -1))
            if msg is not None:
                rows.append((seq, u, msg))
        largest = (self.view[-1] if self.view else 0) if uid else len(self.view)
        wanted = sequence_set(text, largest)
        return [row for row in rows if (row[1] if uid else row[0]) in wanted]

    # -- any state -------------------------------------------------------------------------

    def cmd_CAPABILITY(self, args: list[Token]) -> None:
        caps = self.server.capabilities if self.account else self.server.pre_auth_capabilities
        self.untagged(b"CAPABILITY " + " ".join(caps).encode())

    def cmd_NOOP(self, args: list[Token]) -> None:
        return None

    def cmd_CHECK(self, args: list[Token]) -> None:
        return None

    def cmd_LOGOUT(self, args: list[Token]) -> None:
        self.untagged(b"BYE LOGOUT Requested")
        self.done = True

    def cmd_ID(self, args: list[Token]) -> None:
        self.untagged(
            b'ID ("name" "GImap" "vendor" "imapjmap test emulation of Google\'s documented'
            b' IMAP extensions" "support-url" "https://developers.google.com/gmail/imap")'
        )

    def cmd_NAMESPACE(self, args: list[Token]) -> None:
        self.untagged(b'NAMESPACE (("" "/")) NIL NIL')

    def cmd_ENABLE(self, args: list[Token]) -> None:
        enabled = [as_text(a).upper() for a in args if as_text(a).upper() == "CONDSTORE"]
        if enabled and "CONDSTORE" in self.server.capabilities:
            self.condstore = True
            self.untagged(b"ENABLED CONDSTORE")
        else:
            self.untagged(b"ENABLED")

    # -- authentication --------------------------------------------------------------------

    def cmd_LOGIN(self, args: list[Token]) -> str:
        user, password = as_text(args[0]), as_text(args[1])
        if self.server.passwords.get(user) != password or user not in self.server.accounts:
            raise No("Invalid credentials (Failure)", "AUTHENTICATIONFAILED")
        self._logged_in(user)
        return ""

    async def cmd_AUTHENTICATE(self, tag: str, args: list[Token]) -> str:
        mechanism = as_text(args[0]).upper()
        if mechanism != "XOAUTH2":
            raise No("Unsupported mechanism", "CANNOT")
        if len(args) > 1:
            response = as_text(args[1])
        else:
            self.send(b"+ ")
            await self.writer.drain()
            response = (await self.reader.readline()).decode().strip()
        user = self._xoauth2_user(response)
        if user is None:
            # XOAUTH2 error: a challenge with a JSON body; the client answers with an empty
            # response, then the command fails (Google's XOAUTH2 protocol document)
            self.send(b"+ " + _XOAUTH2_ERROR)
            await self.writer.drain()
            await self.reader.readline()
            raise No("Invalid credentials (Failure)", "AUTHENTICATIONFAILED")
        self._logged_in(user)
        return ""

    def _xoauth2_user(self, response: str) -> str | None:
        try:
            decoded = base64.b64decode(response, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        fields = dict(part.split("=", 1) for part in decoded.split("\x01") if "=" in part)
        user, auth = fields.get("user", ""), fields.get("auth", "")
        scheme, _, token = auth.partition(" ")
        ok = scheme == "Bearer" and self.server.tokens.get(token) == user
        ok = ok and token not in self.server.imap_refuses
        self.server.xoauth2_attempts.append(user)
        return user if ok and user in self.server.accounts else None

    def _logged_in(self, user: str) -> None:
        self.account = self.server.accounts[user]
        self.untagged(b"CAPABILITY " + " ".join(self.server.capabilities).encode())

    # -- mailboxes -------------------------------------------------------------------------

    def cmd_LIST(self, args: list[Token], *, lsub: bool = False) -> None:
        pattern = as_text(args[1]) if len(args) > 1 else ""
        verb = b"LSUB " if lsub else b"LIST "
        if pattern == "":
            self.untagged(verb + b'(\\Noselect) "/" ""')
            return
        for folder in list(self._acct.folders.values()):
            if not _matches(folder.name, pattern):
                continue
            attrs = folder.attributes(self._acct.has_children(folder))
            self.untagged(
                verb + plist([a.encode() for a in attrs]) + b' "/" ' + mailbox_name(folder.name)
            )

    def cmd_LSUB(self, args: list[Token]) -> None:
        self.cmd_LIST(args, lsub=True)

    def cmd_STATUS(self, args: list[Token]) -> None:
        folder = self._folder(args[0])
        if folder.kind == "noselect":
            raise No("Mailbox is not selectable")
        items = args[1] if isinstance(args[1], list) else [args[1]]
        visible = self._acct.visible(folder)
        values = {
            "MESSAGES": len(visible),
            "UIDNEXT": folder.uidnext,
            "UIDVALIDITY": folder.uidvalidity,
            "UNSEEN": sum(1 for _, m in visible if "\\Seen" not in m.flags),
            "RECENT": 0,
            "HIGHESTMODSEQ": self._acct.modseq,
        }
        out = []
        for item in items:
            key = as_text(item).upper()
            if key not in values:
                raise ProtocolError(f"STATUS item {key} is not emulated")
            out.append(f"{key} {values[key]}".encode())
        self.untagged(b"STATUS " + mailbox_name(folder.name) + b" " + plist(out))

    def cmd_SELECT(self, args: list[Token], *, readonly: bool = False) -> str:
        self.folder = None
        folder = self._folder(args[0])
        if folder.kind == "noselect":
            raise No("Mailbox is not selectable")
        params = args[1] if len(args) > 1 and isinstance(args[1], list) else []
        if any(as_text(a).upper() == "CONDSTORE" for a in params):
            self.condstore = True
        self.folder, self.readonly = folder, readonly
        visible = self._acct.visible(folder)
        self.view = [u for u, _ in visible]
        self.reported = {u: m.modseq for u, m in visible}
        self.untagged(
            b"FLAGS (\\Answered \\Flagged \\Draft \\Deleted \\Seen $NotPhishing $Phishing)"
        )
        self.untagged(
            b"OK [PERMANENTFLAGS " + (b"()" if readonly else _PERMANENT) + b"] Flags permitted."
        )
        self.untagged(b"OK [UIDVALIDITY %d] UIDs valid." % folder.uidvalidity)
        self.untagged(b"%d EXISTS" % len(self.view))
        self.untagged(b"0 RECENT")
        self.untagged(b"OK [UIDNEXT %d] Predicted next UID." % folder.uidnext)
        if "CONDSTORE" in self.server.capabilities:
            self.untagged(b"OK [HIGHESTMODSEQ %d]" % self._acct.modseq)
        return "[READ-ONLY]" if readonly else "[READ-WRITE]"

    def cmd_EXAMINE(self, args: list[Token]) -> str:
        return self.cmd_SELECT(args, readonly=True)

    def cmd_UNSELECT(self, args: list[Token]) -> None:
        self.folder, self.view, self.reported = None, [], {}

    def cmd_CLOSE(self, args: list[Token], uid: bool) -> None:
        if not self.readonly:
            self._expunge(None, quiet=True)
        self.cmd_UNSELECT(args)

    def cmd_CREATE(self, args: list[Token]) -> None:
        name = mailbox_arg(args[0]).rstrip("/")
        if self._acct.folder(name) is not None:
            raise No("Folder name conflicts with existing folder name.", "ALREADYEXISTS")
        if name.startswith("[Gmail]/"):
            raise No("Folder name is not allowed.", "CANNOT")
        self._acct.create_label(name)
        self._acct.notify()

    def cmd_DELETE(self, args: list[Token]) -> None:
        folder = self._folder(args[0])
        if folder.kind != "label" or folder.name == "INBOX" or folder.special_use:
            raise No("Folder name is reserved.", "CANNOT")
        self._acct.delete_folder(folder.name)
        self._acct.notify()

    def cmd_RENAME(self, args: list[Token]) -> None:
        folder = self._folder(args[0])
        new = mailbox_arg(args[1])
        if folder.kind != "label" or folder.name == "INBOX" or folder.special_use:
            raise No("Folder name is reserved.", "CANNOT")
        if self._acct.folder(new) is not None:
            raise No("Folder name conflicts with existing folder name.", "ALREADYEXISTS")
        self._acct.rename_folder(folder.name, new)
        self._acct.notify()

    def cmd_SUBSCRIBE(self, args: list[Token]) -> None:
        self._folder(args[0])

    def cmd_UNSUBSCRIBE(self, args: list[Token]) -> None:
        self._folder(args[0])

    def cmd_APPEND(self, args: list[Token]) -> str:
        folder = self._folder(args[0])
        if folder.kind == "noselect":
            raise No("Mailbox is not selectable")
        flags: list[str] = []
        date = None
        rest = list(args[1:])
        if rest and isinstance(rest[0], list):
            given: list[Token] = rest.pop(0)  # type: ignore[assignment]
            flags = [as_text(f) for f in given]
        if rest and isinstance(rest[0], str) and not isinstance(rest[0], Atom):
            date = parse_internaldate(as_text(rest.pop(0)))
        if len(rest) != 1 or not isinstance(rest[0], bytes):
            raise ProtocolError("APPEND needs one message literal")
        msg = self._acct.append(folder, rest[0], flags, date)
        return f"[APPENDUID {folder.uidvalidity} {folder.uids[msg.msgid]}]"

    # -- messages --------------------------------------------------------------------------

    def cmd_FETCH(self, args: list[Token], uid: bool) -> None:
        items = args[1] if isinstance(args[1], list) else [args[1]]
        names = _expand_macros([as_text(i).upper() for i in items])
        if uid and "UID" not in names:
            names.insert(0, "UID")
        since = _modifier(args[2:], "CHANGEDSINCE")
        for seq, u, msg in self._targets(as_text(args[0]), uid):
            if since is not None and msg.modseq <= since:
                continue
            parts = [self._item(name, u, msg) for name in names]
            self.untagged(b"%d FETCH " % seq + plist(parts))
            reads = any(n.startswith("BODY[") or n in ("RFC822", "RFC822.TEXT") for n in names)
            if reads and "\\Seen" not in msg.flags and not self.readonly:
                self._acct.store_flags(msg, "+", ["\\Seen"], self._selected)

    def _item(self, name: str, u: int, msg: Message) -> bytes:
        simple: dict[str, Callable[[], bytes]] = {
            "UID": lambda: b"%d" % u,
            "FLAGS": lambda: self._flags(msg),
            "INTERNALDATE": lambda: internaldate(msg.internaldate),
            "RFC822.SIZE": lambda: b"%d" % msg.size,
            "ENVELOPE": lambda: render.envelope(msg.raw),
            "BODYSTRUCTURE": lambda: render.bodystructure(msg.raw),
            "BODY": lambda: render.bodystructure(msg.raw),
            "MODSEQ": lambda: b"(%d)" % msg.modseq,
            "X-GM-MSGID": lambda: b"%d" % msg.msgid,
            "X-GM-THRID": lambda: b"%d" % msg.thrid,
            "X-GM-LABELS": lambda: plist([label(x) for x in sorted(msg.labels)]),
            "RFC822": lambda: literal(msg.raw),
            "RFC822.HEADER": lambda: literal(render.section(msg.raw, "HEADER")),
            "RFC822.TEXT": lambda: literal(render.section(msg.raw, "TEXT")),
        }
        if name in simple:
            return name.encode() + b" " + simple[name]()
        if name.startswith(("BODY[", "BODY.PEEK[")):
            spec, _, partial = name.split("[", 1)[1].partition("]")
            data = render.section(msg.raw, spec)
            echo = f"BODY[{spec}]"
            if partial.startswith("<"):
                start, _, count = partial.strip("<>").partition(".")
                data = data[int(start) : int(start) + int(count)] if count else data[int(start) :]
                echo += f"<{start}>"
            return echo.encode() + b" " + literal(data)
        raise ProtocolError(f"FETCH item {name} is not emulated")

    def cmd_STORE(self, args: list[Token], uid: bool) -> str:
        if self.readonly:
            raise No("Mailbox is read-only")
        rest = list(args[1:])
        since = None
        if rest and isinstance(rest[0], list):
            since = _modifier([rest.pop(0)], "UNCHANGEDSINCE")
        item = as_text(rest[0]).upper()
        values = rest[1] if isinstance(rest[1], list) else rest[1:]
        op = item[0] if item[0] in "+-" else ""
        base = item.lstrip("+-")
        silent = base.endswith(".SILENT")
        base = base.removesuffix(".SILENT")
        modified: list[int] = []
        for seq, u, msg in self._targets(as_text(args[0]), uid):
            if since is not None and msg.modseq > since:
                modified.append(u if uid else seq)
                continue
            if base == "FLAGS":
                self._acct.store_flags(msg, op, [as_text(v) for v in values], self._selected)
            elif base == "X-GM-LABELS":
                self._acct.store_labels(msg, op, [_label_arg(v) for v in values])
            else:
                raise ProtocolError(f"STORE item {base} is not emulated")
            if not silent:
                shown = (
                    self._flags(msg)
                    if base == "FLAGS"
                    else plist([label(x) for x in sorted(msg.labels)])
                )
                items = ([b"UID %d" % u] if uid else []) + [base.encode() + b" " + shown]
                if self.condstore:
                    items.append(b"MODSEQ (%d)" % msg.modseq)
                self.untagged(b"%d FETCH " % seq + plist(items))
            if u in self.reported and msg.msgid in self._selected.uids:
                self.reported[u] = msg.modseq
        return f"[MODIFIED {render_set(modified)}]" if modified else ""

    def _copy(self, args: list[Token], uid: bool, move: bool) -> str:
        source = self.folder
        assert source is not None
        target = self._acct.folder(mailbox_arg(args[1]))
        if target is None:
            raise No("Unknown Mailbox", "TRYCREATE")
        if target.kind == "noselect":
            raise No("Mailbox is not selectable")
        pairs: list[tuple[int, int]] = []
        for _seq, u, msg in self._targets(as_text(args[0]), uid):
            if move:
                self._acct.move(msg, source, target)
            else:
                self._acct.copy_to(msg, target)
            new = target.uids.get(msg.msgid)
            if new is not None:
                pairs.append((u, new))
        if not pairs:
            return ""
        code = (
            f"[COPYUID {target.uidvalidity} {','.join(str(a) for a, _ in pairs)}"
            f" {','.join(str(b) for _, b in pairs)}]"
        )
        if move:
            self.untagged(f"OK {code}".encode())
            return ""
        return code

    def cmd_COPY(self, args: list[Token], uid: bool) -> str:
        return self._copy(args, uid, move=False)

    def cmd_MOVE(self, args: list[Token], uid: bool) -> str:
        if self.readonly:
            raise No("Mailbox is read-only")
        return self._copy(args, uid, move=True)

    def cmd_EXPUNGE(self, args: list[Token], uid: bool) -> None:
        if self.readonly:
            raise No("Mailbox is read-only")
        self._expunge(as_text(args[0]) if uid and args else None)

    def _expunge(self, uid_set: str | None, quiet: bool = False) -> None:
        assert self.folder is not None
        folder = self.folder
        rows = self._targets(uid_set or "1:*", uid=uid_set is not None) if self.view else []
        for _seq, _u, msg in rows:
            if folder.name in msg.deleted_in:
                self._acct.expunge(msg, folder)

    def cmd_SEARCH(self, args: list[Token], uid: bool) -> None:
        rest = list(args)
        returns: list[str] | None = None
        if rest and as_text(rest[0]).upper() == "RETURN":
            rest.pop(0)
            options = rest.pop(0)
            returns = [as_text(o).upper() for o in options] if isinstance(options, list) else []
        rows = self._targets("1:*", uid=False) if self.view else []
        test = parse_search(rest, len(self.view), self.view[-1] if self.view else 0)
        found = [(u if uid else seq) for seq, u, msg in rows if test(seq, u, msg)]
        if returns is None:
            self.untagged(b"SEARCH" + b"".join(b" %d" % n for n in found))
            return
        parts = [b'(TAG "-")'] + ([b"UID"] if uid else [])
        returns = returns or ["ALL"]
        if "COUNT" in returns:
            parts.append(b"COUNT %d" % len(found))
        if "MIN" in returns and found:
            parts.append(b"MIN %d" % min(found))
        if "MAX" in returns and found:
            parts.append(b"MAX %d" % max(found))
        if "ALL" in returns and found:
            parts.append(b"ALL " + render_set(found).encode())
        self.untagged(b"ESEARCH " + b" ".join(parts))

    async def cmd_IDLE(self, tag: str, args: list[Token]) -> None:
        self.send(b"+ idling")
        await self.writer.drain()
        reading = asyncio.ensure_future(self.reader.readline())
        try:
            while True:
                changed = self._acct.next_change()
                # what changed since the last command too, as a real server reports it at
                # once: a change made just before the IDLE arrived is not left unsaid
                self._sync(True)
                await self.writer.drain()
                waiting = asyncio.ensure_future(changed.wait())
                done, _ = await asyncio.wait(
                    {reading, waiting}, return_when=asyncio.FIRST_COMPLETED
                )
                if reading in done:
                    waiting.cancel()
                    line = reading.result()
                    if line.strip().upper() != b"DONE":
                        raise ProtocolError("expected DONE")
                    return
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading


def _matches(name: str, pattern: str) -> bool:
    if pattern in ("*", "%*"):
        return True
    if pattern == "%":
        return "/" not in name
    return name == pattern or (pattern.upper() == "INBOX" and name == "INBOX")


def _expand_macros(names: list[str]) -> list[str]:
    macros = {
        "ALL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"],
        "FAST": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"],
        "FULL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"],
    }
    if len(names) == 1 and names[0] in macros:
        return list(macros[names[0]])
    return names


def _modifier(tokens: Sequence[Token], name: str) -> int | None:
    for token in tokens:
        if isinstance(token, list):
            words = [as_text(t).upper() for t in token]
            if name in words:
                return int(words[words.index(name) + 1])
    return None


def _label_arg(token: Token) -> str:
    text = as_text(token)
    return text if text.startswith("\\") else mailbox_arg(token)


def _logged(uid: bool, name: str, first: bytes) -> str:
    """The command as the account's log keeps it: without the tag, and without the
    arguments of LOGIN and AUTHENTICATE (no secret is kept)."""
    if name in ("LOGIN", "AUTHENTICATE"):
        return name
    text = first.decode("utf-8", "replace").split(" ", 1)[1] if b" " in first else ""
    return text if text.upper().startswith(("UID " if uid else "") + name) else name
