"""SEARCH in the emulation: the RFC 3501 keys the proxy sends, and Gmail's extension keys.

``X-GM-RAW`` takes Gmail's web search syntax; Google documents the key, not a grammar for
IMAP, so only a small subset is emulated: bare words and ``"quoted phrases"`` (found,
case-insensitively, as whole words in the headers or the text), and ``from:``, ``to:``,
``subject:`` and ``label:`` with a word or a quoted phrase.  Terms are ANDed.  An unknown
operator is taken as a word.  ``X-GM-MSGID``, ``X-GM-THRID`` and ``X-GM-LABELS`` match the
message's values.
"""

from __future__ import annotations

import email.header
import email.parser
import email.policy
import re
from collections.abc import Callable, Sequence

from tests.gmail_emulation.mailstore import Message
from tests.gmail_emulation.render import section
from tests.gmail_emulation.wire import Atom, ProtocolError, Token, as_text, sequence_set

Test = Callable[[int, int, Message], bool]  # (seq, uid, message) -> matches
_RAW_TERM = re.compile(r'(?:(\w+):)?(?:"([^"]*)"|(\S+))')


def _text_of(msg: Message) -> str:
    parsed = email.parser.BytesParser(policy=email.policy.default).parsebytes(msg.raw)
    parts = [_decoded(str(v)) for v in parsed.values()]
    for part in parsed.walk():
        if part.get_content_maintype() == "text":
            try:
                parts.append(str(part.get_content()))
            except (LookupError, ValueError):
                continue
    return "\n".join(parts)


def _decoded(value: str) -> str:
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (LookupError, ValueError):
        return value


def _header(msg: Message, name: str) -> str:
    return _decoded(msg.header(name) or "")


def _has_words(haystack: str, phrase: str) -> bool:
    words = re.findall(r"\w+", phrase.casefold())
    if not words:
        return True
    pattern = r"\b" + r"\W+".join(re.escape(w) for w in words) + r"\b"
    return re.search(pattern, haystack.casefold()) is not None


def gmail_raw(query: str) -> Test:
    """The emulated subset of Gmail's search syntax (module docstring)."""
    tests: list[Test] = []
    for match in _RAW_TERM.finditer(query):
        op, phrase, word = (match.group(1) or "").lower(), match.group(2), match.group(3)
        value = phrase if phrase is not None else word or ""
        tests.append(_raw_term(op, value, match.group(0)))
    return lambda s, u, m: all(t(s, u, m) for t in tests)


def _raw_term(op: str, value: str, whole: str) -> Test:
    headers = {"from": "From", "to": "To", "subject": "Subject"}
    if op in headers:
        return lambda s, u, m: _has_words(_header(m, headers[op]), value)
    if op == "label":
        return lambda s, u, m: m.has_label(value)
    text = whole if op else value  # an unknown operator is a word
    return lambda s, u, m: _has_words(_text_of(m), text)


def _contains(value: str, needle: str) -> bool:
    return needle.casefold() in value.casefold()


class _Parser:
    """Recursive descent over the SEARCH key tokens."""

    def __init__(self, tokens: Sequence[Token], largest_seq: int, largest_uid: int) -> None:
        self.tokens = list(tokens)
        self.pos = 0
        self.largest_seq = largest_seq
        self.largest_uid = largest_uid

    def take(self) -> Token:
        if self.pos >= len(self.tokens):
            raise ProtocolError("SEARCH: missing argument")
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def all(self) -> Test:
        tests: list[Test] = []
        while self.pos < len(self.tokens):
            tests.append(self.key())
        return lambda s, u, m: all(t(s, u, m) for t in tests)

    def key(self) -> Test:
        token = self.take()
        if isinstance(token, list):
            sub = _Parser(token, self.largest_seq, self.largest_uid)
            return sub.all()
        name = as_text(token).upper()
        simple = self._simple(name)
        if simple is not None:
            return simple
        if name == "NOT":
            inner = self.key()
            return lambda s, u, m: not inner(s, u, m)
        if name == "OR":
            a, b = self.key(), self.key()
            return lambda s, u, m: a(s, u, m) or b(s, u, m)
        if name == "UID":
            uids = sequence_set(as_text(self.take()), self.largest_uid)
            return lambda s, u, m: u in uids
        if isinstance(token, Atom) and re.fullmatch(r"[\d*:,]+", name):
            seqs = sequence_set(name, self.largest_seq)
            return lambda s, u, m: s in seqs
        return self._with_argument(name)

    def _simple(self, name: str) -> Test | None:
        flags = {
            "SEEN": "\\Seen",
            "FLAGGED": "\\Flagged",
            "ANSWERED": "\\Answered",
            "DRAFT": "\\Draft",
        }
        if name == "ALL":
            return lambda s, u, m: True
        if name in flags:
            flag = flags[name]
            return lambda s, u, m: flag in m.flags
        if name.startswith("UN") and name[2:] in flags:
            unset = flags[name[2:]]
            return lambda s, u, m: unset not in m.flags
        return None

    def _with_argument(self, name: str) -> Test:
        arg = as_text(self.take())
        if name == "X-GM-RAW":
            return gmail_raw(arg)
        if name == "X-GM-MSGID":
            return lambda s, u, m: m.msgid == int(arg)
        if name == "X-GM-THRID":
            return lambda s, u, m: m.thrid == int(arg)
        if name == "X-GM-LABELS":
            return lambda s, u, m: m.has_label(arg)
        if name in ("FROM", "TO", "CC", "BCC", "SUBJECT"):
            return lambda s, u, m: _contains(_header(m, name.title()), arg)
        if name == "TEXT":
            return lambda s, u, m: _contains(_text_of(m), arg)
        if name == "BODY":
            return lambda s, u, m: _contains(section(m.raw, "TEXT").decode("utf-8", "replace"), arg)
        if name == "HEADER":
            value = as_text(self.take())
            return lambda s, u, m: _contains(_header(m, arg), value)
        if name == "KEYWORD":
            return lambda s, u, m: arg.lower() in {f.lower() for f in m.flags}
        raise ProtocolError(f"SEARCH key {name} is not emulated")


def parse_search(tokens: Sequence[Token], largest_seq: int, largest_uid: int) -> Test:
    tokens = list(tokens)
    if tokens and as_text(tokens[0]).upper() == "CHARSET":
        tokens = tokens[2:]
    return _Parser(tokens, largest_seq, largest_uid).all()
