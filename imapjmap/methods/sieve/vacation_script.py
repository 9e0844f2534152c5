"""The VacationResponse (RFC 8621 §8) as a Sieve script, and the script that keeps the
user's own filters running beside it.  Pure: text in, text out.

The vacation script (:data:`VACATION_SCRIPT`) is a ``vacation`` action (RFC 5230) that
answers each sender at most once in :data:`DAYS` days, guarded by ``currentdate`` tests
(RFC 5260 ``date`` with RFC 5231 ``relational``) for ``fromDate`` and ``toDate``.  An
``htmlBody`` is sent with ``:mime`` as multipart/alternative beside the text.  The
VacationResponse itself rides in the script's first line, a comment, so /get reads back
exactly what /set wrote.

The script names the account's own addresses with ``:addresses`` (RFC 5230 §4.5): a server
answers only mail whose To or Cc holds one of the user's addresses, and what it knows of
them by itself may be nothing a sender writes (Cyrus takes ``userid@defaultdomain``, where
``defaultdomain`` is ``internal`` unless configured).

When the user's other client has a script active, the vacation script cannot simply be
activated: that would switch their filters off.  :data:`MAIN_SCRIPT` is made active
instead; it ``include``s (RFC 6609) the vacation script and then the user's script, and
names the latter in its own first line, so turning vacation off activates the user's
script again exactly as it was.
"""

from __future__ import annotations

import datetime as dt
import email.policy
import html
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from email.message import EmailMessage
from typing import Final

VACATION_SCRIPT: Final = "jmap-vacation"
MAIN_SCRIPT: Final = "jmap-main"
DAYS: Final = 7  # RFC 5230 §4.1's default; a sender hears from us once a week at most
_MARK: Final = "# imapjmap VacationResponse "
_MAIN_MARK: Final = "# imapjmap includes "
_TAG: Final = re.compile(r"<[^>]*>")


@dataclass(frozen=True, slots=True)
class Vacation:
    """The VacationResponse's settable properties (dates as UTCDate strings)."""

    isEnabled: bool = False
    fromDate: str | None = None
    toDate: str | None = None
    subject: str | None = None
    textBody: str | None = None
    htmlBody: str | None = None

    def to_json(self) -> dict[str, object]:
        return {"id": "singleton", **asdict(self)}


def quoted(text: str) -> str:
    """A Sieve quoted string (RFC 5228 §2.4.2): ``"`` and ``\\`` escaped, one line."""
    one_line = " ".join(text.splitlines())
    return '"' + one_line.replace("\\", "\\\\").replace('"', '\\"') + '"'


def multiline(text: str) -> str:
    """A Sieve ``text:`` string (RFC 5228 §2.4.2): dot-stuffed lines, then a lone dot."""
    lines = text.splitlines() or [""]
    stuffed = ["." + line if line.startswith(".") else line for line in lines]
    return "text:\r\n" + "\r\n".join(stuffed) + "\r\n.\r\n"


def _bound(date: str) -> str:
    """A UTCDate as a bound compared with ``currentdate :zone "+0000" "iso8601"``: without
    its zone suffix, which the server writes as ``Z`` or ``+00:00`` (the string compare is
    then decided before the suffix, except at the very second, where the current time,
    being longer, is the greater)."""
    parsed = dt.datetime.fromisoformat(date.replace("Z", "+00:00")).astimezone(dt.UTC)
    return parsed.strftime("%Y-%m-%dT%H:%M:%S")


def text_of_html(body: str) -> str:
    """A plain-text stand-in for an HTML-only reply (its tags dropped)."""
    return html.unescape(_TAG.sub("", body)).strip()


def _mime_body(vacation: Vacation) -> str:
    """The ``:mime`` reason: a multipart/alternative entity of the text and the HTML."""
    message = EmailMessage(policy=email.policy.SMTP)
    text = vacation.textBody if vacation.textBody is not None else ""
    message.set_content(text or text_of_html(vacation.htmlBody or ""))
    message.add_alternative(vacation.htmlBody or "", subtype="html")
    for entity in (message, *message.iter_parts()):
        del entity["MIME-Version"]  # the server writes the reply's own header
    return message.as_string()


def vacation_script(
    vacation: Vacation, extensions: frozenset[str], addresses: Sequence[str] = ()
) -> str:
    """The Sieve script that answers as ``vacation`` says (nothing when not enabled), to mail
    sent to the server's idea of the user or to one of ``addresses``.

    Raises:
        ValueError: dates are set but the server has no ``date`` and ``relational``.
    """
    header = _MARK + json.dumps(asdict(vacation), ensure_ascii=True) + "\r\n"
    if not vacation.isEnabled:
        return header + "keep;\r\n"
    dated = vacation.fromDate is not None or vacation.toDate is not None
    if dated and not {"date", "relational"} <= extensions:
        raise ValueError("the Sieve server cannot test dates (no date and relational)")
    require = ["vacation", *(["date", "relational"] if dated else [])]
    action = f"vacation :days {DAYS}"
    if addresses:
        action += " :addresses [" + ", ".join(quoted(a) for a in addresses) + "]"
    if vacation.subject is not None:
        action += " :subject " + quoted(vacation.subject)
    if vacation.htmlBody is not None:
        action += " :mime " + multiline(_mime_body(vacation))
    else:
        action += " " + multiline(vacation.textBody or "")
    action += ";\r\n"  # on a line of its own: a text: string ends at its lone dot
    tests = []
    if vacation.fromDate is not None:
        tests.append(
            f'currentdate :zone "+0000" :value "ge" "iso8601" "{_bound(vacation.fromDate)}"'
        )
    if vacation.toDate is not None:
        tests.append(f'currentdate :zone "+0000" :value "lt" "iso8601" "{_bound(vacation.toDate)}"')
    body = action if not tests else f"if allof({', '.join(tests)}) {{\r\n{action}}}\r\n"
    requires = ", ".join(quoted(r) for r in require)
    return header + f"require [{requires}];\r\n" + body


def parse_vacation(script: bytes | None) -> Vacation:
    """The VacationResponse a :func:`vacation_script` holds; the default one for anything
    else (no script, or one that another program wrote under our name)."""
    if script is None:
        return Vacation()
    first = script.split(b"\n", 1)[0].decode("utf-8", "replace").rstrip("\r")
    if not first.startswith(_MARK):
        return Vacation()
    try:
        data = json.loads(first[len(_MARK) :])
        return Vacation(**{k: data[k] for k in Vacation.__dataclass_fields__ if k in data})
    except (ValueError, TypeError):
        return Vacation()


def main_script(user_script: str | None) -> str:
    """The active script that runs the vacation script, then the user's (when there is one)."""
    lines = [_MAIN_MARK + json.dumps(user_script), 'require ["include"];']
    lines.append(f"include :personal {quoted(VACATION_SCRIPT)};")
    if user_script is not None:
        lines.append(f"include :personal {quoted(user_script)};")
    return "\r\n".join(lines) + "\r\n"


def included_user_script(script: bytes | None) -> str | None:
    """The user's script that a :func:`main_script` runs, or None."""
    if script is None:
        return None
    first = script.split(b"\n", 1)[0].decode("utf-8", "replace").rstrip("\r")
    if not first.startswith(_MAIN_MARK):
        return None
    try:
        name = json.loads(first[len(_MAIN_MARK) :])
    except ValueError:
        return None
    return name if isinstance(name, str) else None
