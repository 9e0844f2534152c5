"""The ``asAddresses`` and ``asGroupedAddresses`` forms (RFC 8621 §4.1.2.3-§4.1.2.4).

An RFC 5322 §3.4 ``address-list`` parser that never fails: "Parsing SHOULD be best effort in
the face of invalid structure to accommodate invalid messages and semi-complete drafts", and
an ``email`` need not be a valid addr-spec.

Rules (the input is already unfolded):

1. ``display-name <addr-spec>``: the name is the phrase before ``<``; quoted strings lose
   their DQUOTEs and quoted-pairs are decoded; white space between words becomes one space,
   then the name is trimmed, RFC 2047 decoded and NFC normalised.  An empty name is null.
2. A bare ``addr-spec`` has no display name; a comment following it is used instead
   (§4.1.2.3 SHOULD), also after an ``<addr-spec>`` that has no display name.
3. ``name: mailbox, ...;`` is a group.  Consecutive mailboxes outside groups share one
   group whose name is null.  A missing ``;`` closes the group at the end.
4. Inside ``<...>`` comments and white space are removed and an obsolete source route
   (``<@a.example,@b.example:user@c.example>``) is dropped (RFC 5322 §4.4).
5. Encoded words inside a quoted display name are decoded too.  RFC 2047 §5 forbids them
   there and RFC 8621 says misplaced ones MUST NOT be decoded, but they are common in real
   mail, the IMAP ENVELOPE (which has lost the quotes) decodes them anyway, and Email/get
   must give the same ``from`` whichever of the two it was computed from.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Final

from imapjmap.jmap.wire import Json
from imapjmap.mime.codec import decode_encoded_words

__all__ = ["addresses", "display_name", "grouped_addresses"]

_SPECIALS: Final = frozenset(',;:@.<>[]()"')
_WSP: Final = frozenset(" \t\r\n")


@dataclass(slots=True)
class _Token:
    kind: str  # word | quoted | special | literal | comment | angle
    text: str  # decoded content: unquoted for "quoted", the address for "angle"
    raw: str  # as written
    space: bool  # white space or a comment came before it


def _quoted(value: str, start: int) -> tuple[int, str]:
    """Scan a quoted string opening at ``start``; returns (end, content)."""
    out: list[str] = []
    index = start + 1
    while index < len(value):
        char = value[index]
        if char == "\\" and index + 1 < len(value):
            out.append(value[index + 1])
            index += 2
            continue
        if char == '"':
            return index + 1, "".join(out)
        out.append(char)
        index += 1
    return index, "".join(out)


def _comment(value: str, start: int) -> tuple[int, str]:
    """Scan a (possibly nested) comment opening at ``start``; returns (end, content)."""
    out: list[str] = []
    depth = 0
    index = start
    while index < len(value):
        char = value[index]
        if char == "\\" and index + 1 < len(value):
            out.append(value[index + 1])
            index += 2
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0:
            return index + 1, "".join(out)
        if not (char == "(" and depth == 1):
            out.append(char)
        index += 1
    return index, "".join(out)


def _angle(value: str, start: int) -> tuple[int, str]:
    """Scan ``<addr-spec>`` opening at ``start``; returns (end, address without CFWS)."""
    out: list[str] = []
    index = start + 1
    while index < len(value):
        char = value[index]
        if char == ">":
            index += 1
            break
        if char == '"':
            end, _ = _quoted(value, index)
            out.append(value[index:end])
            index = end
        elif char == "(":
            index, _ = _comment(value, index)
        else:
            if char not in _WSP:
                out.append(char)
            index += 1
    address = "".join(out)
    if address.startswith("@") and ":" in address:
        address = address.split(":", 1)[1]  # obsolete route
    return index, address


def _tokens(value: str) -> list[_Token]:
    tokens: list[_Token] = []
    index = 0
    space = False
    while index < len(value):
        char = value[index]
        start = index
        if char in _WSP:
            space = True
            index += 1
            continue
        if char == '"':
            index, text = _quoted(value, index)
            kind = "quoted"
        elif char == "(":
            index, text = _comment(value, index)
            kind = "comment"
        elif char == "<":
            index, text = _angle(value, index)
            kind = "angle"
        elif char == "[":
            close = value.find("]", index)
            index = len(value) if close < 0 else close + 1
            text, kind = value[start:index], "literal"
        elif char in _SPECIALS:
            index += 1
            text, kind = char, "special"
        else:
            while index < len(value) and value[index] not in _SPECIALS and value[index] not in _WSP:
                index += 1
            text, kind = value[start:index], "word"
        tokens.append(_Token(kind, text, value[start:index], space))
        space = kind == "comment"
    return tokens


def display_name(text: str) -> str | None:
    """Finish a display name: RFC 2047 decode, NFC, trim; null when empty."""
    name = unicodedata.normalize("NFC", decode_encoded_words(text)).strip()
    return name or None


def _phrase(tokens: list[_Token]) -> str | None:
    pieces: list[str] = []
    for token in tokens:
        if token.kind in ("comment", "angle"):
            continue
        if pieces and token.space:
            pieces.append(" ")
        pieces.append(token.text)
    return display_name("".join(pieces))


def _mailbox(tokens: list[_Token]) -> dict[str, Json] | None:
    angle = next((i for i, t in enumerate(tokens) if t.kind == "angle"), None)
    if angle is not None:
        name = _phrase(tokens[:angle])
        email = tokens[angle].text
        trailing = tokens[angle + 1 :]
    else:
        words = [t for t in tokens if t.kind != "comment"]
        glue = "" if any(t.raw == "@" for t in words) else " "
        email = "".join((glue if i and t.space else "") + t.raw for i, t in enumerate(words))
        name = None
        first = next((i for i, t in enumerate(tokens) if t.kind != "comment"), len(tokens))
        trailing = tokens[first + 1 :]
    if name is None:
        comment = next((t.text for t in trailing if t.kind == "comment"), None)
        name = display_name(comment) if comment is not None else None
    if not email and name is None:
        return None
    return {"name": name, "email": email}


def grouped_addresses(value: str) -> list[dict[str, Json]]:
    """The ``asGroupedAddresses`` form of an unfolded address-list."""
    groups: list[dict[str, Json]] = []
    current: list[_Token] = []
    in_group = False

    def flush() -> None:
        mailbox = _mailbox(current)
        current.clear()
        if mailbox is None:
            return
        if not in_group and (not groups or groups[-1]["name"] is not None or groups[-1]["_closed"]):
            groups.append({"name": None, "addresses": [], "_closed": False})
        groups[-1]["addresses"].append(mailbox)

    for token in _tokens(value):
        if token.kind != "special" or token.text not in ",:;":
            current.append(token)
        elif token.text == ",":
            flush()
        elif token.text == ":":
            if in_group or any(t.kind == "angle" for t in current):
                continue
            if groups:
                groups[-1]["_closed"] = True
            groups.append({"name": _phrase(current), "addresses": [], "_closed": False})
            current.clear()
            in_group = True
        else:  # ";"
            flush()
            if in_group:
                groups[-1]["_closed"] = True
                in_group = False
    flush()
    for group in groups:
        del group["_closed"]
    return groups


def addresses(value: str) -> list[dict[str, Json]]:
    """The ``asAddresses`` form of an unfolded address-list: every mailbox, groups dropped."""
    return [a for g in grouped_addresses(value) for a in g["addresses"]]
