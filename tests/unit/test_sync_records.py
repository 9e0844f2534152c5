"""sync/records.py: the memoised conversions give what the mime functions give."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imapjmap.imap.models import Address, BodyStructure, Envelope, FetchRecord
from imapjmap.imap.parse import parse_reply
from imapjmap.mime import envelope as env
from imapjmap.sync import records

NAMES = st.sampled_from([None, "Ann", "=?UTF-8?B?w4ltaWxl?=", " Bob  ", "=?ISO-8859-1?Q?Caf=E9?="])
HOSTS = st.sampled_from(["example.org", "EXAMPLE.net", None])
ADDRESS = st.builds(Address, NAMES, st.none(), st.sampled_from(["ann", "bob", "team", None]), HOSTS)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(ADDRESS, max_size=4), max_size=6))
def test_addresses_are_those_of_the_envelope_functions(lists: list[list[Address]]) -> None:
    for addresses in lists:  # several lists: later ones meet memoised addresses
        expected = env.addresses_from_envelope(tuple(addresses)) if addresses else None
        assert records._addresses(tuple(addresses)) == expected


def test_memoised_addresses_are_copies() -> None:
    ann = Address("Ann", None, "ann", "example.org")
    first = records._addresses((ann,))
    assert first == [{"name": "Ann", "email": "ann@example.org"}]
    first[0]["name"] = "changed"
    assert records._addresses((ann,)) == [{"name": "Ann", "email": "ann@example.org"}]


def leaf(draw: st.DrawFn) -> BodyStructure:
    type_, subtype = draw(
        st.sampled_from(
            [("text", "plain"), ("text", "html"), ("image", "png"), ("application", "pdf")]
        )
    )
    params = draw(
        st.sampled_from(
            [
                {},
                {"charset": "utf-8"},
                {"name": "a.pdf"},
                {"name*": "x"},
                {"name": "=?utf-8?q??="},  # decodes to nothing: no name
                {"name*0": "a", "name*1": ".pdf"},
                {"name*": "utf-8''"},  # RFC 2231, empty
                {"names": "not a name"},
                {"charset": "utf-8", "name": " "},
            ]
        )
    )
    disposition = draw(st.sampled_from([None, "inline", "attachment"]))
    disposition_params = draw(
        st.sampled_from(
            [{}, {"filename": "b.png"}, {"filename": " "}, {"filename*": "utf-8''%C3%A9.txt"}]
        )
    )
    if draw(st.integers(0, 9)) == 0:  # an attached message: its own parts are not descended
        inner = BodyStructure("text", "plain", {}, disposition="attachment")
        return BodyStructure("message", "rfc822", params, parts=(inner,), disposition=disposition)
    return BodyStructure(
        type_,
        subtype,
        params,
        size=draw(st.integers(0, 9999)),
        lines=draw(st.integers(0, 99)),
        disposition=disposition,
        disposition_params=disposition_params if disposition else {},
    )


@st.composite
def structures(draw: st.DrawFn, depth: int = 2) -> BodyStructure:
    if depth == 0 or draw(st.booleans()):
        return leaf(draw)
    subtype = draw(st.sampled_from(["mixed", "alternative", "related"]))
    parts = tuple(draw(st.lists(structures(depth - 1), max_size=3)))
    boundary = draw(st.sampled_from(["b1", "b2", "=_x"]))
    disposition = draw(st.sampled_from([None, None, "attachment"]))
    return BodyStructure(
        "multipart", subtype, {"boundary": boundary}, parts=parts, disposition=disposition
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(structures(), min_size=1, max_size=8))
def test_has_attachment_is_that_of_the_envelope_function(bodies: list[BodyStructure]) -> None:
    for body in bodies:  # the same shape with other sizes and boundaries meets the memo
        assert records._has_attachment(body) == env.has_attachment_from_bodystructure(body)


# sentAt (EML-GET-01, asDate): the usual form is rearranged, anything else parsed in full
DATES = [
    "Wed, 1 Jan 2025 10:00:00 +0000",
    "1 Jan 2025 10:00:00 +0000",
    "Tue, 01 Jul 2003 10:52:37 +0200",
    "Sun, 28 Feb 2021 23:59:59 -0000",
    "Mon, 29 Feb 2021 10:00:00 +0000",  # no such day: null
    "Mon, 29 Feb 2024 10:00:00 +0000",
    "Thu, 31 Apr 2025 10:00:00 +0000",  # no such day: null
    "Fri, 31 Jan 2025 24:00:00 +0000",  # no such hour: null
    "Fri, 3 Jan 2025 10:60:00 +0000",
    "Fri, 3 Jan 2025 10:00:60 +0000",  # a leap second is clamped
    "Fri, 3 Jan 2025 10:00:00 +2400",
    "Fri, 3 Jan 2025 10:00:00 +0160",
    "Fri, 3 Jan 2025 10:00:00 GMT",
    "Fri, 3 Jan 2025 10:00 +0100",
    "Fri, 3 Jan 25 10:00:00 +0100",
    "fri, 3 jan 2025 10:00:00 +0100",
    "Fri, 3 Jan 2025 10:00:00 +0100 (CET)",
    "Fri,  3 Jan 2025 10:00:00 +0100",
    "Fri, 3 Jan 2025\r\n 10:00:00 +0100",
    "Fri, 3 Jan 0999 10:00:00 +0100",
    "Fri, 3 Jan 2025 10:00:00 +0100\x00",
    "Fri, 3 Jän 2025 10:00:00 +0100",
    "3 Jan 2025",
    "",
    "not a date",
]


def _envelope(date: str | None = None, message_id: str | None = None) -> Envelope:
    return Envelope(date, None, (), (), (), (), (), (), None, message_id)


def test_sent_at_is_that_of_the_envelope_function() -> None:
    for date in [*DATES, None]:
        envelope = _envelope(date)
        assert records._sent_at(envelope) == env.sent_at(envelope), date


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(["", "Mon, ", "Sat, ", "Xyz, ", "Mon,"]),
    st.sampled_from(["0", "1", "01", "9", "09", "10", "28", "29", "30", "31", "32", "00"]),
    st.sampled_from(["Jan", "Feb", "Apr", "Dec", "Foo", "feb"]),
    st.sampled_from(["2024", "2023", "1900", "2000", "0000", "99", "20245"]),
    st.sampled_from(["00", "09", "19", "23", "24", "29", "9"]),
    st.sampled_from(["00", "59", "60", "5"]),
    st.sampled_from([":00", ":59", ":60", ":61", ""]),
    st.sampled_from([" +0000", " -0000", " +2359", " -2400", " +0060", " +1", " UT", ""]),
)
def test_sent_at_of_generated_dates(
    day_name: str, day: str, month: str, year: str, hour: str, minute: str, second: str, zone: str
) -> None:
    date = f"{day_name}{day} {month} {year} {hour}:{minute}{second}{zone}"
    envelope = _envelope(date)
    assert records._sent_at(envelope) == env.sent_at(envelope), date


MESSAGE_IDS = [
    "<1@x>",
    "<a.b-c+d=e_f@mail.example.org>",
    "<1@x> <2@x>",
    "<1@x>(comment)",
    "<1 @x>",
    "< 1@x >",
    "<>",
    "1@x",
    "<1@x",
    "<<1@x>>",
    "<1@x>\r\n",
    "<\x001@x>",
    "<ü@x>",
    '<"quoted"@x>',
    "",
    "   ",
]


@pytest.mark.parametrize("value", MESSAGE_IDS)
def test_message_ids_are_those_of_the_envelope_function(value: str) -> None:
    """EML-GET-01 messageId / inReplyTo (asMessageIds), as parse_record always gave them."""
    expected = env.message_ids(value) if value else None
    assert records._message_ids(value) == expected


def test_parse_record_twice_gives_the_same_row() -> None:
    record = FetchRecord(
        seq=1,
        uid=1,
        flags=(),
        internaldate=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
        size=10,
        envelope=Envelope(
            date="Wed, 1 Jan 2025 10:00:00 +0000",
            subject="=?UTF-8?Q?Re:_Caf=C3=A9?=",
            from_=(Address("=?UTF-8?B?w4ltaWxl?=", None, "emile", "example.fr"),),
            sender=(),
            reply_to=(),
            to=(Address(None, None, "bob", "example.org"),),
            cc=(),
            bcc=(),
            in_reply_to=None,
            message_id="<1@x>",
        ),
        bodystructure=BodyStructure("text", "plain", {"charset": "utf-8"}),
        x_guid="g1",
    )
    first = records.parse_record(record, "A")
    again = records.parse_record(record, "A")
    assert first == again
    assert first.row.subject == "Re: Café"
    assert first.base_subject == "café"
    assert first.row.headers["from"] == [{"name": "Émile", "email": "emile@example.fr"}]


def _captured_envelopes_and_bodies() -> list[FetchRecord]:
    from tests.unit.test_imap_parse import TRANSCRIPT  # the captured Dovecot transcript

    found: list[FetchRecord] = []
    for case in TRANSCRIPT.values():
        if "FETCH" in case.command.upper() and case.status == "OK":
            reply = parse_reply(case.untagged, case.status, case.text)
            found += [r for r in reply.fetches if r.envelope or r.bodystructure]
    return found


def test_captured_fetches_give_what_the_general_parsers_give() -> None:
    """EML-GET-01 / EML-BODY-01 on what Dovecot really sent: sentAt, messageId, inReplyTo
    and hasAttachment of every captured FETCH equal the general functions' answers."""
    fetched = _captured_envelopes_and_bodies()
    dates = [r.envelope.date for r in fetched if r.envelope and r.envelope.date]
    assert len(dates) >= 10
    assert any(records._PLAIN_DATE.fullmatch(d) for d in dates)  # the short cut is taken
    assert any(r.bodystructure and r.bodystructure.type == "multipart" for r in fetched)
    for record in fetched:
        e, body = record.envelope, record.bodystructure
        if e is not None:
            assert records._sent_at(e) == env.sent_at(e), e.date
            for value in (e.message_id, e.in_reply_to):
                assert records._message_ids(value) == (env.message_ids(value) if value else None)
        if body is not None:
            assert records._has_attachment(body) == env.has_attachment_from_bodystructure(body)
