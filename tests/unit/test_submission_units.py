"""The pure parts of submission: envelope derivation and Bcc removal (SUB-01), the SMTP
parameter rules and replies (imapjmap.smtp), XOAUTH2's client response and error challenge,
the SetErrors of SMTP refusals (SUB-03), the sender policy and configured identities,
and the identities/submissions store (schema v3).  The wire is tested against real servers
in tests/integration/test_submission.py."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imapjmap import smtp
from imapjmap.config import Config, IdentityConfig, ImapConfig, SubmissionConfig
from imapjmap.credentials import BearerToken, xoauth2_response
from imapjmap.imap import session as imap_session
from imapjmap.methods.identity import (
    configured_identities,
    default_address,
    sender_policy,
    sync_configured,
)
from imapjmap.methods.submission.handlers import smtp_set_error
from imapjmap.mime.submission import (
    EnvelopeProblem,
    allowed_by,
    derive_envelope,
    is_address,
    strip_bcc,
)
from imapjmap.store import queries as q
from imapjmap.store import submissions as sub
from imapjmap.store.db import Store

# --- Bcc removal (SUB-01) ----------------------------------------------------------------------


def test_strip_bcc_removes_every_bcc_field_with_its_folded_lines() -> None:
    raw = (
        b"From: a@x.example\r\nBCC: b@x.example\r\nTo: c@x.example\r\n"
        b"bcc : d@x.example,\r\n e@x.example\r\n\tf@x.example\r\nSubject: s\r\n"
        b"\r\nBcc: this is body text\r\n"
    )
    assert strip_bcc(raw) == (
        b"From: a@x.example\r\nTo: c@x.example\r\nSubject: s\r\n\r\nBcc: this is body text\r\n"
    )


def test_strip_bcc_keeps_bytes_exactly_lf_8bit_and_no_body() -> None:
    raw = "From: a@x.example\nSubject: Grüße\nBcc: z@x.example\nX-Y:  odd   \n\nbody \xff\n"
    data = raw.encode("latin-1")
    assert strip_bcc(data) == data.replace(b"Bcc: z@x.example\n", b"")
    assert strip_bcc(b"Bcc: x@y.example\r\nTo: z@y.example") == b"To: z@y.example"
    assert strip_bcc(b"") == b""
    assert strip_bcc(b"X-Bcc: kept\r\n\r\n") == b"X-Bcc: kept\r\n\r\n"


_NAMES = st.sampled_from(["From", "To", "Bcc", "bcc", "Subject", "X-Bcc", "Bccx"])
_VALUE = st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=12)


@given(
    st.lists(st.tuples(_NAMES, _VALUE, st.lists(_VALUE, max_size=2)), max_size=8),
    st.binary(max_size=40),
)
def test_strip_bcc_drops_exactly_the_bcc_fields(
    fields: list[tuple[str, str, list[str]]], body: bytes
) -> None:
    def render(keep: bool) -> bytes:
        out = b""
        for name, value, folds in fields:
            text = f"{name}: {value}\r\n" + "".join(f"\t{f}\r\n" for f in folds)
            if keep or name.lower() != "bcc":
                out += text.encode()
        return out + b"\r\n" + body

    assert strip_bcc(render(True)) == render(False)


# --- envelope derivation (SUB-01) --------------------------------------------------------------


def message(headers: str) -> bytes:
    return (headers + "Subject: s\r\n\r\nbody\r\n").encode()


@pytest.mark.parametrize(
    ("headers", "identity", "expected"),
    [
        ("From: A <a@x.example>\r\nTo: b@y.example\r\n", "a@x.example", "a@x.example"),
        ("From: A <A@X.example>\r\nTo: b@y.example\r\n", "a@x.example", "A@X.example"),
        ("From: a@x.example\r\nSender: s@x.example\r\nTo: b@y\r\n", "s@x.example", "s@x.example"),
        ("From: a@x.example\r\nSender: s@x.example\r\nTo: b@y\r\n", "a@x.example", "a@x.example"),
        ("From: other@x.example\r\nTo: b@y.example\r\n", "a@x.example", "a@x.example"),
        ("From: any@x.example\r\nTo: b@y.example\r\n", "*@x.example", "any@x.example"),
        ("To: b@y.example\r\n", "a@x.example", "a@x.example"),
        # several From addresses are fine when a Sender says who sends
        ("From: a@x.example, c@x.example\r\nSender: a@x.example\r\nTo: b@y\r\n", "a@x.example",
         "a@x.example"),
    ],
)  # fmt: skip
def test_derived_mail_from(headers: str, identity: str, expected: str) -> None:
    assert derive_envelope(message(headers), identity)[0] == expected


@pytest.mark.parametrize(
    ("headers", "identity", "prop"),
    [
        ("From: a@x.example\r\nFrom: a@x.example\r\nTo: b@y.example\r\n", "a@x.example", "from"),
        ("From: a@x.example, c@x.example\r\nTo: b@y.example\r\n", "a@x.example", "from"),
        ("Sender: a@x.example\r\nSender: a@x.example\r\nTo: b@y\r\n", "a@x.example", "sender"),
        ("From: a@other.example\r\nTo: b@y.example\r\n", "*@x.example", "from"),
    ],
)
def test_derivation_refuses_ambiguous_senders(headers: str, identity: str, prop: str) -> None:
    with pytest.raises(EnvelopeProblem) as info:
        derive_envelope(message(headers), identity)
    assert info.value.prop == prop


def test_derived_recipients_are_to_cc_bcc_deduplicated() -> None:
    headers = (
        "From: a@x.example\r\nBcc: z@y.example\r\nTo: B <b@y.example>, grp: c@y.example,"
        " d@y.example;\r\nCc: =?utf-8?q?Ren=C3=A9?= <r@y.example>, B@Y.EXAMPLE\r\n"
        "To: z@y.example\r\nReply-To: no@y.example\r\n"
    )
    _, rcpts = derive_envelope(message(headers), "a@x.example")
    assert rcpts == ["b@y.example", "c@y.example", "d@y.example", "z@y.example", "r@y.example"]


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("a@x.example", True),
        ("*@x.example", True),
        ("first.last+tag@sub.x.example", True),
        ("ünï@x.example", True),
        ("a", False),
        ("@x.example", False),
        ("a@", False),
        ("a b@x.example", False),
        ("<a@x.example>", False),
        ("a@x example", False),
    ],
)
def test_is_address(value: str, ok: bool) -> None:
    assert is_address(value) is ok


def test_allowed_by() -> None:
    assert allowed_by("a@x.example", "A@X.EXAMPLE")
    assert not allowed_by("a@x.example", "b@x.example")
    assert allowed_by("*@x.example", "b@X.example")
    assert not allowed_by("*@x.example", "b@y.example")


# --- SMTP parameters and replies ---------------------------------------------------------------


def test_format_reply_joins_multiline_replies_as_rfc_8621_says() -> None:
    reply = smtp.format_reply(
        550, "5.7.1 Our system has detected that this message is\n5.7.1 likely spam, sorry."
    )
    assert (
        str(reply) == "550 5.7.1 Our system has detected that this message is likely spam, sorry."
    )
    assert reply.enhanced == "5.7.1"
    assert str(smtp.format_reply(250, "OK")) == "250 OK"
    assert smtp.format_reply(250, "").enhanced is None


def test_params_only_for_offered_extensions_and_xtext_encoded() -> None:
    offered = {"DSN": [], "SIZE": ["1000"], "MT-PRIORITY": ["MIXER"]}
    assert smtp.smtp_params(
        {"envid": "a b+c=d\u00e9", "RET": "FULL", "MT-PRIORITY": "3", "NOTIFY": None}, offered
    ) == ["ENVID=a+20b+2Bc+3Dd+C3+A9", "RET=FULL", "MT-PRIORITY=3", "NOTIFY"]
    for params in ({"NOTIFY": "NEVER"}, {"REQUIRETLS": None}, {"BY": "120;R"}, {"bad name": "x"}):
        with pytest.raises(smtp.SubmitRefused) as info:
            smtp.smtp_params(params, {"SIZE": []})
        assert info.value.reason == "parameters"
    with pytest.raises(smtp.SubmitRefused):
        smtp.smtp_params({"BODY": "BINARYMIME"}, {"8BITMIME": []})


def test_visible_extensions_hide_the_transport() -> None:
    esmtp = {"size": "1000", "auth": "PLAIN LOGIN", "pipelining": "", "starttls": "", "dsn": "",
             "chunking": "", "8bitmime": "", "mt-priority": "MIXER STANAG4406"}  # fmt: skip
    assert smtp.visible_extensions(esmtp) == {
        "8BITMIME": [], "DSN": [], "MT-PRIORITY": ["MIXER", "STANAG4406"], "SIZE": ["1000"],
    }  # fmt: skip


def test_plan_adds_size_body_and_smtputf8_only_when_offered() -> None:
    raw = "Subject: Grüße\r\n\r\nx\r\n".encode()
    full = {"SIZE": ["100"], "8BITMIME": [], "SMTPUTF8": []}
    plan = smtp._plan(full, "a@x.example", {"SIZE": "1"}, [("b@y.example", {})], raw)
    assert plan.mail_options == [f"SIZE={len(raw)}", "BODY=8BITMIME", "SMTPUTF8"]
    assert plan.encoding == "ascii"
    assert smtp._plan({}, "a@x.example", {"SIZE": "1"}, [("b@y", {})], raw).mail_options == []
    wide = smtp._plan(full, "a@x.example", {}, [("rené@y.example", {})], b"x\r\n")
    assert wide.mail_options == ["SIZE=3", "SMTPUTF8"] and wide.encoding == "utf-8"
    with pytest.raises(smtp.SubmitRefused) as info:
        smtp._plan({}, "a@x.example", {}, [("rené@y.example", {}), ("b@y", {})], b"x")
    assert info.value.reason == "recipients"
    assert [r.address for r in info.value.refused] == ["rené@y.example"]
    with pytest.raises(smtp.SubmitRefused) as info:
        smtp._plan({"SIZE": ["10"]}, "a@x.example", {}, [("b@y", {})], b"x" * 11)
    assert info.value.reason == "size" and info.value.max_size == 10


# --- XOAUTH2 (imapjmap.smtp Rule 6) -------------------------------------------------------------


def test_xoauth2_response_is_googles_documented_example() -> None:
    # Google's "OAuth 2.0 Mechanism" document, its SASL XOAUTH2 example
    token = "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"
    assert xoauth2_response("someuser@example.com", token) == (
        b"dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNr"
        b"QmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="
    )


def test_one_bearer_token_type_for_imap_and_smtp() -> None:
    assert imap_session.BearerToken is BearerToken
    token = BearerToken("ya29.x")
    assert token == "ya29.x" and isinstance(token, str)


@pytest.mark.parametrize(
    ("challenge", "said"),
    [
        ('{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}',
         "status 401, scope https://mail.google.com/"),
        ('{"status":400}', "status 400"),
        ('{"schemes":"bearer"}', ""),
        ('{"status":"' + "4" * 101 + '"}', ""),
        ('{"status":"40\\n1"}', ""),
        ('["401"]', ""),
        ("not json", ""),
    ],
)  # fmt: skip
def test_oauth_error_reads_the_json_challenge(challenge: str, said: str) -> None:
    assert smtp.oauth_error(base64.b64encode(challenge.encode()).decode()) == said
    assert smtp.oauth_error("%%% not base64") == ""


def test_auth_refusals_are_forbidden_to_send_with_a_description() -> None:
    """SUB-03: a refused token, or an SMTP server that takes none, is forbiddenToSend."""
    refused = smtp.SubmitRefused(
        "auth",
        "the SMTP server refused the OAuth token: status 401",
        reply=smtp.Reply(535, "5.7.8 Username and Password not accepted"),
    )
    error = smtp_set_error(refused, 100).to_json()
    assert error["type"] == "forbiddenToSend"
    assert error["description"] == (
        "the SMTP server refused the OAuth token: status 401 "
        "(the SMTP server said: 535 5.7.8 Username and Password not accepted)"
    )
    no_xoauth2 = smtp_set_error(smtp.SubmitRefused("auth", "no AUTH XOAUTH2"), 100).to_json()
    assert no_xoauth2 == {"type": "forbiddenToSend", "description": "no AUTH XOAUTH2"}


# --- policy and configured identities ----------------------------------------------------------


def config(**submission: object) -> Config:
    return Config(imap=ImapConfig(host="h"), submission=SubmissionConfig(**submission))  # type: ignore[arg-type]


def test_default_address() -> None:
    assert default_address(config(), "alice@example.org") == "alice@example.org"
    assert default_address(config(), "alice") is None
    assert default_address(config(default_domain="example.org"), "alice") == "alice@example.org"


def test_configured_identities_and_policy() -> None:
    cfg = config(
        default_domain="example.org",
        identities=(
            IdentityConfig("alice", "alice@example.org", name="Alice"),  # overrides the default
            IdentityConfig("ALICE", "*@alice.example"),
            IdentityConfig("bob", "bob@example.org"),
        ),
    )
    rows = configured_identities(cfg, "A1", "alice")
    assert [(r.email, r.name) for r in rows] == [
        ("alice@example.org", "Alice"),
        ("*@alice.example", ""),
    ]
    assert all(r.from_config and not r.may_delete for r in rows)
    assert rows[0].id == configured_identities(config(), "A1", "alice@example.org")[0].id
    policy = sender_policy(cfg, "alice")
    assert policy.allows("alice@example.org") and policy.allows("x@ALICE.example")
    assert not policy.allows("bob@example.org")
    assert sender_policy(
        dataclasses.replace(
            cfg, submission=dataclasses.replace(cfg.submission, identities_any_from=True)
        ),
        "alice",
    ).allows("bob@example.org")


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    s = await Store.open(":memory:")
    await s.run(lambda tx: (q.ensure_account(tx, "A", "alice"), q.ensure_account(tx, "B", "b")))
    yield s
    await s.aclose()


async def test_sync_configured_follows_the_config_and_keeps_user_edits(store: Store) -> None:
    first = configured_identities(
        config(identities=(IdentityConfig("alice", "a@x.example", name="A"),
                           IdentityConfig("alice", "b@x.example"))), "A", "alice"
    )  # fmt: skip
    await store.run(lambda tx: sync_configured(tx, "A", first))
    seq = await store.run(lambda tx: q.type_state(tx, "A", sub.IDENTITY_TYPE))
    await store.run(lambda tx: sync_configured(tx, "A", first))  # nothing changed: no new seq
    assert await store.run(lambda tx: q.type_state(tx, "A", sub.IDENTITY_TYPE)) == seq
    edited = dataclasses.replace(
        first[0], name="My own name", reply_to=[{"name": None, "email": "r@x.example"}]
    )
    await store.run(lambda tx: sub.put_identity(tx, edited, q.next_seq(tx, "A", ["Identity"])))
    await store.run(lambda tx: sync_configured(tx, "A", first))
    rows = await store.run(lambda tx: sub.live_identities(tx, "A"))
    assert {r.email: r.name for r in rows} == {"a@x.example": "My own name", "b@x.example": ""}
    renamed = [dataclasses.replace(first[0], name="A (new)")]  # b@ removed, a@ renamed
    await store.run(lambda tx: sync_configured(tx, "A", renamed))
    rows = await store.run(lambda tx: sub.live_identities(tx, "A"))
    assert [(r.email, r.name, r.reply_to) for r in rows] == [
        ("a@x.example", "A (new)", [{"name": None, "email": "r@x.example"}])
    ]
    changes = await store.run(lambda tx: q.changes_since(tx, "identities", "A", seq))
    assert {c.id for c in changes if c.destroyed_seq} == {first[1].id}
    await store.run(lambda tx: sync_configured(tx, "A", first))  # b@ comes back
    assert len(await store.run(lambda tx: sub.live_identities(tx, "A"))) == 2
    assert await store.run(lambda tx: sub.live_identities(tx, "B")) == []


async def test_submission_rows_are_per_account(store: Store) -> None:
    row = sub.SubmissionRow(
        "A", "S1", "I1", "M1", "T1", {"mailFrom": {"email": "a@x", "parameters": None},
                                      "rcptTo": []}, 1700000000, "final",
        {"b@y": {"smtpReply": "250 OK", "delivered": "queued", "displayed": "unknown"}},
    )  # fmt: skip
    await store.run(lambda tx: sub.insert_submission(tx, row, q.next_seq(tx, "A", ["x"])))
    got = await store.run(lambda tx: sub.submissions(tx, "A", ["S1", "S2"]))
    assert got == {"S1": dataclasses.replace(row, created_seq=1, updated_seq=1)}
    assert await store.run(lambda tx: sub.submissions(tx, "B", ["S1"])) == {}
    assert await store.run(lambda tx: sub.destroy_submission(tx, "B", "S1", 5)) is False
    assert await store.run(lambda tx: sub.destroy_submission(tx, "A", "S1", 5)) is True
    assert await store.run(lambda tx: sub.live_submissions(tx, "A")) == []


TOO_MANY = [
    (452, "4.5.3 Too many recipients", True),
    (552, "5.5.3 Too many recipients", True),
    (452, "Too many recipients for this message", True),  # no enhanced code: the text
    (452, "4.2.2 Mailbox full", False),
    (452, "4.3.1 Insufficient system storage", False),
    (550, "5.5.3 Too many recipients", False),  # not a reply code RFC 5321 gives it
    (452, "", False),
]


@pytest.mark.parametrize(("code", "text", "expected"), TOO_MANY)
def test_too_many_recipients_reply(code: int, text: str, expected: bool) -> None:
    """RFC 5321 §4.5.3.1.10 / RFC 3463 X.5.3 → RFC 8621 tooManyRecipients (SUB-03)."""
    assert smtp._too_many(smtp.Reply(code, text)) is expected
