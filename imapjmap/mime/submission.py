"""The SMTP side of a message to submit (RFC 8621 §7, SUB-01): pure, bytes in.

- :func:`strip_bcc` removes every ``Bcc`` header field (with its folded lines) and leaves
  every other octet exactly as it was.
- :func:`derive_envelope` builds the envelope of a submission whose ``envelope`` is null:
  MAIL FROM is the address of the ``Sender`` header field if there is one, else of the
  ``From`` field (the first address of the last such field); when that address is not
  allowed by the submission's Identity, or there is none, the Identity's ``email`` is used.
  More than one Sender/From field, or several addresses in the one used, is rejected as
  invalid (the RFC's SHOULD), and so is a message whose Identity is a wildcard
  (``*@domain``) without an address of that domain to send from.  RCPT TO is the
  addresses of To, then Cc, then Bcc, each once (compared without case); none of them
  gets parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

from imapjmap.mime.addresses import addresses
from imapjmap.mime.headers import decode_raw, split_header_block, unfold

__all__ = [
    "EnvelopeProblem",
    "allowed_by",
    "derive_envelope",
    "header_addresses",
    "is_address",
    "strip_bcc",
]


class EnvelopeProblem(ValueError):
    """The message cannot be sent as it is; ``prop`` is the Email property at fault."""

    def __init__(self, prop: str, description: str) -> None:
        super().__init__(description)
        self.prop = prop
        self.description = description


def strip_bcc(raw: bytes) -> bytes:
    """``raw`` without its Bcc header fields; everything else byte for byte."""
    out = bytearray()
    pos, size = 0, len(raw)
    dropping = False
    while pos < size:
        newline = raw.find(b"\n", pos)
        end = size if newline < 0 else newline + 1
        line = raw[pos:end]
        if line in (b"\r\n", b"\n"):  # the end of the header: the body stays untouched
            out += raw[pos:]
            return bytes(out)
        if line[:1] not in (b" ", b"\t"):  # a new field (a folded line keeps the verdict)
            name, colon, _ = line.partition(b":")
            dropping = bool(colon) and name.rstrip(b" \t").lower() == b"bcc"
        if not dropping:
            out += line
        pos = end
    return bytes(out)


def header_addresses(raw: bytes, name: str) -> list[list[str]]:
    """The addresses of each ``name`` header field of the message, field by field."""
    fields, _ = split_header_block(raw, top=True)
    wanted = name.lower().encode("ascii")
    return [
        [str(a["email"]) for a in addresses(unfold(decode_raw(value))) if a.get("email")]
        for field, value in fields
        if field.lower() == wanted
    ]


def is_address(value: str) -> bool:
    """A plausible addr-spec: ``local@domain``, no white space, controls or brackets."""
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain or len(value) > 998:
        return False
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F or c in "<>()[],;\\" for c in domain):
        return False
    return not any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F or c in "<>" for c in local)


def allowed_by(identity_email: str, address: str) -> bool:
    """Whether an Identity's ``email`` allows ``address`` (``*@domain``: any at the domain)."""
    if identity_email.startswith("*@"):
        return address.rpartition("@")[2].casefold() == identity_email[2:].casefold()
    return address.casefold() == identity_email.casefold()


def _one_address(fields: Sequence[list[str]], prop: str) -> str | None:
    if len(fields) > 1:
        raise EnvelopeProblem(prop, f"the message has more than one {prop.capitalize()} field")
    if len(fields[-1]) > 1:
        raise EnvelopeProblem(prop, f"the {prop.capitalize()} field holds several addresses")
    return fields[-1][0] if fields[-1] else None


def derive_envelope(raw: bytes, identity_email: str) -> tuple[str, list[str]]:
    """(MAIL FROM, RCPT TO addresses) for a null envelope (see the module docstring).

    Raises:
        EnvelopeProblem: several Sender/From fields, or several addresses in the one used.
    """
    senders = header_addresses(raw, "Sender")
    source, prop = (senders, "sender") if senders else (header_addresses(raw, "From"), "from")
    mail_from = identity_email
    if source:
        found = _one_address(source, prop)
        if found is not None and allowed_by(identity_email, found):
            mail_from = found
    if mail_from.startswith("*@"):
        raise EnvelopeProblem(prop, f"the From field must hold an address {mail_from[1:]}")
    rcpts: dict[str, str] = {}
    for name in ("To", "Cc", "Bcc"):
        for field in header_addresses(raw, name):
            for address in field:
                rcpts.setdefault(address.casefold(), address)
    return mail_from, list(rcpts.values())
