"""sync/records.py: the memoised conversions give what the mime functions give."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from imapjmap.imap.models import Address, BodyStructure, Envelope, FetchRecord
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
    params = draw(st.sampled_from([{}, {"charset": "utf-8"}, {"name": "a.pdf"}, {"name*": "x"}]))
    disposition = draw(st.sampled_from([None, "inline", "attachment"]))
    disposition_params = draw(st.sampled_from([{}, {"filename": "b.png"}, {"filename": " "}]))
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
    return BodyStructure("multipart", subtype, {"boundary": boundary}, parts=parts)


@settings(max_examples=300, deadline=None)
@given(st.lists(structures(), min_size=1, max_size=8))
def test_has_attachment_is_that_of_the_envelope_function(bodies: list[BodyStructure]) -> None:
    for body in bodies:  # the same shape with other sizes and boundaries meets the memo
        assert records._has_attachment(body) == env.has_attachment_from_bodystructure(body)


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
