"""Logging to stderr, one record per line, with credentials redacted.

:func:`setup_logging` installs one handler on the root logger, in one of two formats:

- ``text``: each record starts a new line:
  ``2024-05-01T12:00:00.123Z INFO imapjmap.http.app: message`` (UTC).  Line breaks inside
  a message are escaped as ``\\n`` so that text from clients or servers cannot forge a
  record; a traceback follows its record on lines indented by four spaces.
- ``json``: one JSON object a line, for log collectors, with the stable keys ``time`` (as
  above), ``level``, ``logger``, ``message``, and ``exception`` / ``stack`` (the traceback
  text) only when the record has one.  JSON escapes every line break, traceback included.

The handler's :class:`RedactingFilter` rewrites the message, traceback and stack of every
record before it is formatted (:func:`redact` is the pure function behind it):

1. IMAP ``LOGIN user password`` keeps ``LOGIN``; ``AUTHENTICATE MECH response`` and SMTP
   ``AUTH MECH response`` keep the mechanism.  Everything after them on that line goes.
2. ``Authorization:`` / ``Proxy-Authorization:`` values keep only the Basic/Bearer scheme.
3. ``password=...``, ``"passwd": "..."``, ``secret: ...``, ``access_token=...``,
   ``push_token=...`` and the like
   keep the key; a password in a URL (``imap://user:pw@host``) goes too.

aiosmtpd's ``mail.log`` (used by the demo) logs every byte at DEBUG; it is held at WARNING
unless the level is ``debug``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable
from typing import Final

LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
QUIET_LOGGERS: Final = ("mail.log",)
REDACTED: Final = "[redacted]"
_HANDLER_NAME: Final = "imapjmap"

_Rule = tuple[re.Pattern[str], Callable[[re.Match[str]], str]]


def _keep(group: str) -> Callable[[re.Match[str]], str]:
    """A replacement that keeps ``group`` and redacts the rest of the match."""
    return lambda m: f"{m[group]} {REDACTED}"


def _quoted(m: re.Match[str]) -> str:
    quote = m["value"][0] if m["value"][0] in "\"'" else ""
    return f"{m['key']}{quote}{REDACTED}{quote}"


_RULES: Final[tuple[_Rule, ...]] = (
    # IMAP/SMTP commands; "AUTH=LOGIN" in a capability list is not a command.
    (re.compile(r"(?<![\w=-])(?P<cmd>(?:AUTHENTICATE|AUTH)[ \t]+[\w-]+)[ \t]+[^\r\n]+"),
     _keep("cmd")),
    (re.compile(r"(?<![\w=-])(?P<cmd>LOGIN)[ \t]+[^\r\n]+"), _keep("cmd")),
    # Authorization headers, as text ("Authorization: Basic ...") or in a dict repr.
    (re.compile(r"(?i)(?P<head>\b(?:proxy-)?authorization['\"]?[ \t]*[:=][ \t]*['\"]?)"
                r"(?:(?P<scheme>basic|bearer)[ \t]+[\w.~+/=\[\]-]+|[^\r\n'\"]+)"),
     lambda m: f"{m['head']}{m['scheme'] + ' ' if m['scheme'] else ''}{REDACTED}"),
    # key=value, key: value, "key": "value" for secret-looking keys.
    (re.compile(r"(?i)(?P<key>\b(?:[\w-]*(?:password|passwd|passphrase|secret)[\w-]*|pass|pwd"
                r"|(?:api|access|auth|refresh|bearer|session|push)[_-]?(?:token|key))"
                r"['\"]?[ \t]*[=:][ \t]*)"
                r"(?P<value>\[redacted\]|\"[^\"\r\n]*\"?|'[^'\r\n]*'?|[^\s,;&)}\]]+)"),
     _quoted),
    # user:password@ in URLs.
    (re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^/\s:@]*):[^/\s@]*@"),
     lambda m: f"{m['head']}:{REDACTED}@"),
)  # fmt: skip


# Every match of a rule holds one of these words (as the rules compare, ignoring case): a
# line without any of them, as the access log's and each method call's are, is left as it
# is without the five substitutions, which cost a busy proxy a tenth of its CPU.
_RULE_WORDS: Final = ("auth", "login", "pass", "pwd", "secret", "token", "key", "://")
_ANY_RULE_WORD: Final = re.compile("(?i)" + "|".join(map(re.escape, _RULE_WORDS)))


def _may_match(text: str) -> bool:
    if text.isascii():  # the common case; only ASCII letters match ASCII ones then
        lowered = text.lower()
        return any(word in lowered for word in _RULE_WORDS)
    return _ANY_RULE_WORD.search(text) is not None  # e.g. the Kelvin sign matches "k"


def redact(text: str) -> str:
    """``text`` with every credential the rules above recognise replaced by ``[redacted]``."""
    if not _may_match(text):
        return text
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Redact a record in place (message, traceback, stack); never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken %-format: leave it for the handler to report
            return True
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class OneLineFormatter(logging.Formatter):
    """``<UTC time> <LEVEL> <logger>: <message>``; message line breaks are escaped."""

    converter = staticmethod(time.gmtime)

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s",
            datefmt="%Y-%m-%dT%H:%M:%S",
        )

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage().replace("\r", "\\r").replace("\n", "\\n")
        record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        extra = [text for text in (record.exc_text, record.stack_info) if text]
        tail = "\n".join(extra).rstrip("\n").splitlines()
        return "\n    ".join([line, *tail])


class JsonFormatter(OneLineFormatter):
    """One JSON object a line: ``time``, ``level``, ``logger``, ``message`` (+ ``exception``,
    ``stack``)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": f"{self.formatTime(record, self.datefmt)}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False)


FORMATTERS: Final[dict[str, type[logging.Formatter]]] = {
    "text": OneLineFormatter,
    "json": JsonFormatter,
}


def setup_logging(level: str, log_format: str = "text", log_file: str | None = None) -> None:
    """Send every record at ``level`` or above to stderr, redacted; safe to call again.

    Args:
        level: ``debug``, ``info``, ``warning`` or ``error`` (any case).
        log_format: ``text`` or ``json``.
        log_file: also append them to this file (the demo's ``--log``).

    Raises:
        ValueError: an unknown level or format.
    """
    formatter = FORMATTERS.get(log_format)
    if formatter is None:
        raise ValueError(f"log format must be one of {', '.join(FORMATTERS)}, not {log_format!r}")
    try:
        threshold = LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}") from None
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    for handler in handlers:
        handler.set_name(_HANDLER_NAME)
        handler.setFormatter(formatter())
        handler.addFilter(RedactingFilter())
        root.addHandler(handler)
    root.setLevel(threshold)
    quiet = logging.NOTSET if threshold <= logging.DEBUG else max(threshold, logging.WARNING)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(quiet)
