"""Capture what an IMAP server sends for the framer's tests (tests/unit/test_imap_framing.py).

    python3 tests/data/imap/capture_stream.py HOST PORT USER PASSWORD OUT.txt [--notify]

Plain sockets only, so every byte is recorded as the server sent it.  The format is the one
described in README.md here (a ``C: name tag command`` line before each command's output);
IDLE's ``DONE`` gets no line of its own, its completion follows the ``+`` and the events.
The user's INBOX should be empty.  A second connection makes the changes that IDLE (and
NOTIFY with ``--notify``) report.
"""

from __future__ import annotations

import socket
import sys
import time

BIG_LINES = 800  # about 42 KB: a literal that spans several network reads


def big_message() -> bytes:
    """The message whose BODY[] the tests check byte for byte (test_imap_framing.py)."""
    head = (
        b"From: Big Sender <big@example.org>\r\n"
        b"To: reader@example.org\r\n"
        b"Subject: a big message\r\n"
        b"Message-ID: <big@example.org>\r\n"
        b"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
        b"\r\n"
    )
    body = b"".join(
        b"line %05d {5}\r\n* 1 FETCH (FLAGS ()) A001 OK {3}+ \r\n" % n for n in range(BIG_LINES)
    )
    return head + body


SMALL = [
    (
        b"From: =?utf-8?q?J=C3=BCrgen?= <j@example.org>\r\nTo: a@example.org\r\n"
        b'Subject: quotes " and \\ backslash\r\nMessage-ID: <s1@example.org>\r\n'
        b"References: <big@example.org>\r\n\r\nhello {3}\r\n"
    ),
    b"From: x@example.org\r\nSubject: \xc3\xa9t\xc3\xa9 raw 8-bit\r\n\r\n\xc3\xa9\r\n",
    b"Subject: empty body\r\n\r\n",
]


class Recorder:
    def __init__(self, host: str, port: int, out: list[bytes]) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.out = out
        self.buf = b""
        self.tagno = 0

    def recv_until(self, needle: bytes, *, at_line_start: bool = False) -> None:
        """Record up to and including ``needle`` (``at_line_start``: the needle starts a
        line, the first one included)."""
        before = b"\r\n" if at_line_start else b""
        while needle not in before + self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            self.buf += data
        end = (before + self.buf).index(needle) + len(needle) - len(before)
        self.out.append(self.buf[:end])
        self.buf = self.buf[end:]

    def tag(self) -> bytes:
        self.tagno += 1
        return b"A%03d" % self.tagno

    def command(self, name: str, text: bytes, literals: tuple[bytes, ...] = ()) -> None:
        """Send ``text`` (``{}`` marks where each literal goes, as a synchronising literal)."""
        tag = self.tag()
        shown = text.replace(b"{}", b"{...}")
        self.out.append(b"C: %s %s %s\r\n" % (name.encode(), tag, shown))
        pieces = text.split(b"{}")
        self.sock.sendall(tag + b" " + pieces[0])
        for literal, after in zip(literals, pieces[1:], strict=True):
            self.sock.sendall(b"{%d}\r\n" % len(literal))
            self.recv_until(b"\r\n")  # "+ ..." (and nothing else: no untagged in between)
            self.sock.sendall(literal + after)
        self.sock.sendall(b"\r\n")
        self.wait_tagged(tag)

    def wait_tagged(self, tag: bytes) -> None:
        # good enough for these commands: no literal ends in CRLF + tag
        self.recv_until(b"\r\n" + tag + b" ", at_line_start=True)
        self.recv_until(b"\r\n")

    def idle(self, name: str, while_idle: object) -> None:
        tag = self.tag()
        self.out.append(b"C: %s %s IDLE\r\n" % (name.encode(), tag))
        self.sock.sendall(tag + b" IDLE\r\n")
        self.recv_until(b"\r\n")  # "+ idling"
        assert callable(while_idle)
        while_idle()
        self.recv_until(b"EXISTS\r\n")
        self.sock.sendall(b"DONE\r\n")
        self.wait_tagged(tag)


def main() -> None:
    host, port_text, user, password, path = sys.argv[1:6]
    notify = "--notify" in sys.argv[6:]
    port = int(port_text)
    out: list[bytes] = [b"C: greeting\r\n"]
    a = Recorder(host, port, out)
    a.recv_until(b"\r\n")
    a.command("capability-prelogin", b"CAPABILITY")
    a.command("login", b"LOGIN {} {}", (user.encode(), password.encode()))
    a.command("enable", b"ENABLE QRESYNC")
    a.command("create", b'CREATE "Sub"')
    a.command("append-big", b"APPEND INBOX {}", (big_message(),))
    for n, message in enumerate(SMALL):
        a.command(f"append-{n}", b"APPEND INBOX (\\Seen) {}", (message,))
    a.command(
        "list-status",
        b'LIST "" "*" RETURN (SUBSCRIBED CHILDREN STATUS (MESSAGES UIDNEXT UIDVALIDITY '
        b"HIGHESTMODSEQ UNSEEN))",
    )
    a.command("select", b"SELECT INBOX (CONDSTORE)")
    a.command(
        "uid-fetch-bulk",
        b"UID FETCH 1:* (UID FLAGS MODSEQ INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE "
        b"BODY.PEEK[HEADER.FIELDS (REFERENCES IN-REPLY-TO)])",
    )
    a.command("uid-fetch-big", b"UID FETCH 1 (BODY.PEEK[])")
    a.command("uid-fetch-small", b"UID FETCH 2:4 (BODY.PEEK[] BODY.PEEK[TEXT])")
    a.command("esearch", b"UID SEARCH RETURN (ALL COUNT MIN MAX) ALL")
    a.command("uid-store", b"UID STORE 2:3 +FLAGS (\\Deleted $Label)")
    a.command("uid-expunge", b"UID EXPUNGE 3")
    a.command("uid-fetch-changedsince", b"UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)")
    c_out: list[bytes] = []
    c = Recorder(host, port, c_out)
    c.recv_until(b"\r\n")
    c.command("c-login", b"LOGIN {} {}", (user.encode(), password.encode()))
    a.idle("idle", lambda: c.command("c-append", b"APPEND INBOX {}", (SMALL[2],)))
    if notify:
        a.command(
            "notify",
            b"NOTIFY SET (selected (MessageNew (UID FLAGS) MessageExpunge FlagChange)) "
            b"(personal (MessageNew MessageExpunge MailboxName SubscriptionChange))",
        )
        c.command("c-append-sub", b'APPEND "Sub" {}', (SMALL[0],))
        c.command("c-select", b"SELECT INBOX")
        c.command("c-store", b"UID STORE 1 +FLAGS (\\Flagged)")
        time.sleep(0.5)
        a.command("notify-noop", b"NOOP")
        a.command("notify-none", b"NOTIFY NONE")
    a.command("select-qresync-missing", b'SELECT "Missing" (QRESYNC (1 1))')
    a.command("frob", b"FROB")
    a.command("logout", b"LOGOUT")
    with open(path, "wb") as f:
        f.write(b"".join(out))


if __name__ == "__main__":
    main()
