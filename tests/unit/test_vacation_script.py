"""The VacationResponse as Sieve text (RFC 5228 strings, RFC 5230 vacation, RFC 5260 dates,
RFC 6609 include): pure, so every case is a table row.  VAC-ids: tests/integration/
test_vacation.py."""

from __future__ import annotations

import email.parser
import email.policy

import pytest

from imapjmap.methods.sieve import vacation_script as vs

ALL = frozenset({"vacation", "date", "relational", "include"})


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("Away", '"Away"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("two\r\nlines", '"two lines"'),  # a subject is one line
        ("été", '"été"'),
    ],
)
def test_quoted_strings(text: str, quoted: str) -> None:
    assert vs.quoted(text) == quoted


@pytest.mark.parametrize(
    ("text", "multiline"),
    [
        ("Away", "text:\r\nAway\r\n.\r\n"),
        (".hidden\n.", "text:\r\n..hidden\r\n..\r\n.\r\n"),  # dot-stuffed (RFC 5228 §2.4.2)
        ("", "text:\r\n\r\n.\r\n"),
        ("a\nb\r\nc", "text:\r\na\r\nb\r\nc\r\n.\r\n"),
    ],
)
def test_multiline_strings(text: str, multiline: str) -> None:
    assert vs.multiline(text) == multiline


def test_a_disabled_vacation_does_nothing_but_keeps_its_settings() -> None:
    vacation = vs.Vacation(isEnabled=False, subject="Away", textBody="x")
    script = vs.vacation_script(vacation, ALL)
    assert "vacation :" not in script and script.endswith("keep;\r\n")
    assert vs.parse_vacation(script.encode()) == vacation


def test_an_enabled_vacation_without_dates() -> None:
    script = vs.vacation_script(vs.Vacation(isEnabled=True, textBody="Gone."), ALL)
    body = script.split("\r\n", 1)[1]
    assert body == 'require ["vacation"];\r\nvacation :days 7 text:\r\nGone.\r\n.\r\n;\r\n'


@pytest.mark.parametrize(
    ("addresses", "argument"),
    [
        ((), ""),
        (("bob@example.org",), ' :addresses ["bob@example.org"]'),
        (("a@x.org", 'b"q"@x.org'), ' :addresses ["a@x.org", "b\\"q\\"@x.org"]'),
    ],
)
def test_the_users_addresses_go_in_addresses(addresses: tuple[str, ...], argument: str) -> None:
    """RFC 5230 §4.5: the server answers mail to one of these (and to its own idea of the
    user's address)."""
    script = vs.vacation_script(vs.Vacation(isEnabled=True, textBody="x"), ALL, addresses)
    assert f"vacation :days 7{argument} text:\r\n" in script
    assert vs.parse_vacation(script.encode()) == vs.Vacation(isEnabled=True, textBody="x")


def test_dates_become_utc_currentdate_bounds() -> None:
    vacation = vs.Vacation(
        isEnabled=True, fromDate="2030-01-02T03:04:05Z", toDate="2030-02-01T00:00:00Z"
    )
    script = vs.vacation_script(vacation, ALL)
    assert 'require ["vacation", "date", "relational"];' in script
    assert '"ge" "iso8601" "2030-01-02T03:04:05"' in script
    assert '"lt" "iso8601" "2030-02-01T00:00:00"' in script
    assert ':zone "+0000"' in script


def test_dates_need_the_date_and_relational_extensions() -> None:
    with pytest.raises(ValueError, match="cannot test dates"):
        vs.vacation_script(
            vs.Vacation(isEnabled=True, toDate="2030-01-01T00:00:00Z"), frozenset({"vacation"})
        )
    # no dates: a server with vacation alone is enough
    vs.vacation_script(vs.Vacation(isEnabled=True), frozenset({"vacation"}))


def test_html_goes_as_mime_multipart_alternative() -> None:
    vacation = vs.Vacation(isEnabled=True, htmlBody="<p>Gone &amp; <b>away</b></p>")
    script = vs.vacation_script(vacation, ALL)
    assert " :mime text:\r\n" in script
    entity = script.split(":mime text:\r\n", 1)[1].rsplit("\r\n.\r\n", 1)[0]
    parsed = email.parser.Parser(policy=email.policy.default).parsestr(entity)
    assert parsed.get_content_type() == "multipart/alternative"
    parts = {p.get_content_type(): p.get_content() for p in parsed.iter_parts()}
    assert parts["text/plain"].strip() == "Gone & away"  # derived from the HTML
    assert "<b>away</b>" in parts["text/html"]
    assert "MIME-Version" not in entity  # the server writes the reply's own


@pytest.mark.parametrize(
    "content",
    [None, b"", b"keep;\r\n", b"# imapjmap VacationResponse {not json\r\n", b"# other\r\n"],
)
def test_anything_else_reads_as_the_default_vacation(content: bytes | None) -> None:
    assert vs.parse_vacation(content) == vs.Vacation()


@pytest.mark.parametrize("user", [None, "my rules", 'odd "name"'])
def test_the_main_script_names_the_user_script_it_includes(user: str | None) -> None:
    script = vs.main_script(user)
    assert f"include :personal {vs.quoted(vs.VACATION_SCRIPT)};" in script
    assert (user is not None) == (script.count("include :personal") == 2)
    assert vs.included_user_script(script.encode()) == user


def test_the_vacation_is_included_before_the_user_script() -> None:
    """The vacation runs first: a ``stop`` in the user's script must not silence it."""
    script = vs.main_script("mine")
    assert script.index(f'include :personal "{vs.VACATION_SCRIPT}"') < script.index(
        'include :personal "mine"'
    )
