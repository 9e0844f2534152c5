"""imapjmap.logsetup: the line format, the redacting filter, and the quiet loggers."""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imapjmap import logsetup
from imapjmap.logsetup import QUIET_LOGGERS, RedactingFilter, redact, setup_logging

SECRET = "s3cr3t-Pa55"  # every case below hides this; it must never reach the output
SASL = base64.b64encode(f"\0alice\0{SECRET}".encode()).decode()  # AUTHENTICATE PLAIN response

# (logger, message as logged, message as written)
CASES = [
    # IMAP commands, as text and as a wire dump
    ("imapjmap.imap.session", f"A1 LOGIN alice {SECRET}", "A1 LOGIN [redacted]"),
    ("imapjmap.imap.session", f'A1 LOGIN "alice" "{SECRET}"', "A1 LOGIN [redacted]"),
    (
        "x",
        f'Sending : b\'ABCD1 LOGIN alice "{SECRET}\\\\""\\r\\n\'',
        "Sending : b'ABCD1 LOGIN [redacted]",
    ),
    (
        "imapjmap.imap.session",
        f"A2 AUTHENTICATE PLAIN {SECRET}",
        "A2 AUTHENTICATE PLAIN [redacted]",
    ),
    ("imapjmap.imap.session", f"A3 AUTHENTICATE PLAIN {SASL}", "A3 AUTHENTICATE PLAIN [redacted]"),
    ("mail.log", f"AUTH PLAIN {SECRET}=", "AUTH PLAIN [redacted]"),
    # HTTP Authorization headers
    ("aiohttp.access", f"Authorization: Basic {SECRET}=", "Authorization: Basic [redacted]"),
    ("x", f"authorization: Bearer {SECRET}.x-y", "authorization: Bearer [redacted]"),
    ("x", f"Proxy-Authorization: Negotiate {SECRET}", "Proxy-Authorization: [redacted]"),
    (
        "x",
        f"headers {{'Authorization': 'Basic {SECRET}', 'Host': 'h'}}",
        "headers {'Authorization': 'Basic [redacted]', 'Host': 'h'}",
    ),
    # password=..., JSON, URLs
    (
        "x",
        f"connect user=bob password={SECRET} host=h",
        "connect user=bob password=[redacted] host=h",
    ),
    ("x", f'{{"password": "{SECRET} with spaces"}}', '{"password": "[redacted]"}'),
    ("x", f"smtp_passwd: '{SECRET}'", "smtp_passwd: '[redacted]'"),
    ("x", f"pass={SECRET}&next=1", "pass=[redacted]&next=1"),
    ("x", f"client_secret={SECRET}", "client_secret=[redacted]"),
    ("x", f"access_token={SECRET}", "access_token=[redacted]"),
    (
        "x",
        f"imap://bob:{SECRET}@mail.example.org/INBOX",
        "imap://bob:[redacted]@mail.example.org/INBOX",
    ),
    # things that stay as they are
    ("x", "login failed for alice", None),
    ("x", "bypass=1 LOGINDISABLED LOGIN-REFERRALS", None),
    ("x", "call c1 Mailbox/get account=a1 2.0ms -> ok", None),
]


@pytest.mark.parametrize(("logger", "line", "expected"), CASES)
def test_filter_redacts(logger: str, line: str, expected: str | None) -> None:
    record = logging.LogRecord(logger, logging.DEBUG, __file__, 1, "%s", (line,), None)
    assert RedactingFilter().filter(record) is True
    assert record.getMessage() == (expected or line)
    assert SECRET not in record.getMessage()
    assert SASL not in record.getMessage()


@pytest.mark.parametrize("line", [line for _, line, _ in CASES])
def test_redaction_is_idempotent(line: str) -> None:
    once = redact(line)
    assert redact(once) == once


@pytest.fixture
def logging_state() -> Iterator[None]:
    """Undo setup_logging: restore the root handlers and level and the quiet loggers."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quiet = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in quiet.items():
        logging.getLogger(name).setLevel(old)


LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (\w+) ([\w.]+): (.*)")


@pytest.mark.usefixtures("logging_state")
def test_setup_logging_writes_redacted_lines_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("debug")
    for logger, line, _ in CASES:
        logging.getLogger(logger).warning("%s", line)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == len(CASES)
    for out, (logger, _, expected) in zip(lines, CASES, strict=True):
        match = LINE.fullmatch(out)
        assert match, out
        assert match[1] == "WARNING"
        assert match[2] == logger
        if expected is not None:
            assert match[3] == expected
        assert SECRET not in out
        assert SASL not in out


@pytest.mark.usefixtures("logging_state")
def test_one_line_per_record_and_tracebacks_are_redacted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup_logging("info")
    log = logging.getLogger("imapjmap.test")
    log.info("first\nFAKE 2024-01-01T00:00:00.000Z ERROR forged: line")
    try:
        raise RuntimeError(f"A1 LOGIN bob {SECRET}")
    except RuntimeError:
        log.exception("upstream failed for password=%s", SECRET)
    err = capsys.readouterr().err
    assert SECRET not in err
    records = [line for line in err.splitlines() if not line.startswith("    ")]
    assert len(records) == 2
    assert records[0].endswith("first\\nFAKE 2024-01-01T00:00:00.000Z ERROR forged: line")
    assert records[1].endswith("ERROR imapjmap.test: upstream failed for password=[redacted]")
    assert "    RuntimeError: A1 LOGIN [redacted]" in err.splitlines()


@pytest.mark.usefixtures("logging_state")
def test_levels_and_quiet_loggers(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO")
    setup_logging("info")  # again: still one handler
    logging.getLogger("imapjmap.a").debug("hidden")
    logging.getLogger("imapjmap.a").info("shown")
    logging.getLogger("mail.log").info("noise")
    logging.getLogger("mail.log").warning("trouble")
    err = capsys.readouterr().err
    assert [line.split(": ", 1)[1] for line in err.splitlines()] == ["shown", "trouble"]

    setup_logging("debug")
    logging.getLogger("mail.log").debug("wire")
    assert capsys.readouterr().err.endswith("DEBUG mail.log: wire\n")

    setup_logging("error")
    logging.getLogger("mail.log").warning("trouble")
    logging.getLogger("imapjmap.a").warning("minor")
    assert capsys.readouterr().err == ""


def test_unknown_level() -> None:
    with pytest.raises(ValueError, match="log level must be one of debug, info, warning, error"):
        setup_logging("verbose")


# --- lines no rule can match skip the rules ---------------------------------------------------

_PIECES = (
    "LOGIN ", "AUTH PLAIN ", "AUTHENTICATE XOAUTH2 ", "Authorization: Basic ", "password=",
    "Pass: ", "pwd=", "client_secret=", "access_token=", "api-key: ", "imap://u:p@h/",
    "api_\u212aey=", "pa\u017f\u017fword=", "\u0130", "call q Email/query account=Aabc 1.2ms -> ok",
    "POST /jmap/api/ 200 12.3ms", " ", "=", ":", "\"", "'", "x", "\u00e9",
)  # fmt: skip


def _every_rule(text: str) -> str:
    for pattern, replacement in logsetup._RULES:
        text = pattern.sub(replacement, text)
    return text


@given(st.lists(st.sampled_from(_PIECES) | st.text(max_size=4), max_size=8).map("".join))
def test_skipping_the_rules_changes_nothing(text: str) -> None:
    assert redact(text) == _every_rule(text)


@pytest.mark.parametrize(
    "text",
    [
        "api_\u212aey=hunter2",  # the Kelvin sign is a "k" to the rules, which ignore case
        "pa\u017f\u017fword=hunter2",  # and the long s an "s"
        "ACCESS_TOKEN: hunter2",
    ],
)
def test_words_the_rules_match_in_any_case_are_not_skipped(text: str) -> None:
    assert "hunter2" not in redact(text)


def test_the_usual_lines_skip_the_rules() -> None:
    for line in ("POST /jmap/api/ 200 12.3ms", "call g Email/get account=Aabc 0.8ms -> ok"):
        assert not logsetup._may_match(line)


@pytest.mark.usefixtures("logging_state")
def test_json_lines_have_stable_keys_and_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", "json")
    log = logging.getLogger("imapjmap.test")
    log.info("first\nFAKE forged line, ünïcode")
    try:
        raise RuntimeError(f"A1 LOGIN bob {SECRET}")
    except RuntimeError:
        log.exception("upstream failed for password=%s", SECRET)
    err = capsys.readouterr().err
    assert SECRET not in err
    lines = err.splitlines()
    assert len(lines) == 2  # one object a line: the traceback's line breaks are escaped
    first, second = (json.loads(line) for line in lines)
    assert list(first) == ["time", "level", "logger", "message"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert (first["level"], first["logger"]) == ("INFO", "imapjmap.test")
    assert first["message"] == "first\nFAKE forged line, ünïcode"
    assert list(second) == ["time", "level", "logger", "message", "exception"]
    assert second["message"] == "upstream failed for password=[redacted]"
    assert "RuntimeError: A1 LOGIN [redacted]" in second["exception"]


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="log format must be one of text, json"):
        setup_logging("info", "xml")
