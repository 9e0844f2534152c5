"""What real clients send, and the answers they need (README "Lenient answers for real
clients"), on every upstream: the messages are written by a plain IMAP connection (the
oracle) and read through the proxy.

- ``bodyStructure`` carries ``subParts`` on every multipart part, whatever
  ``bodyProperties`` says (RFC 8621 §4.1.4): a webmail walks the tree with the default
  ``bodyProperties``, which do not list ``subParts``.
- A method whose capability is missing from ``using`` is answered when ``using`` holds
  core and the account has the capability (a webmail sends ``Identity/get`` with
  ``[core, mail]``); without core it stays ``unknownMethod`` (CORE-REQ-06).
- A trailing ``*`` on a word of a text condition is a prefix (webmails append it).
- Unknown Comparator keys are ignored (jmapc sends ``anchorOffset`` in each).
- Blob/copy (CORE-BIN-04), Email/import of an unknown blob, SearchSnippet/get's notFound.
"""

from __future__ import annotations

import base64
import dataclasses
import imaplib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from devservers.smtp import SmtpSink
from imapjmap.config import SmtpConfig, SubmissionConfig
from tests.conftest import ImapUser
from tests.integration.conftest import CORE, MAIL, Jmap, proxy_config
from tests.integration.instances import ProxyClient
from tests.integration.test_blobs import uploaded

SUBMISSION = "urn:ietf:params:jmap:submission"

PDF = b"%PDF-1.4\n% a few octets\n"

NESTED = (
    b"From: Alice <alice@example.org>\r\nTo: Bob <bob@example.net>\r\n"
    b"Subject: Nested parts\r\nDate: Mon, 2 Mar 2026 10:00:00 +0000\r\n"
    b"Message-ID: <nested@example.org>\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
    b"--outer\r\n"
    b'Content-Type: multipart/alternative; boundary="inner"\r\n\r\n'
    b"--inner\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlain words.\r\n"
    b"--inner\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Rich words.</p>\r\n"
    b"--inner--\r\n"
    b"--outer\r\nContent-Type: application/pdf\r\n"
    b'Content-Disposition: attachment; filename="figures.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(PDF) + b"\r\n"
    b"--outer--\r\n"
)
INVOICE = (
    b"From: Billing Office <billing@example.org>\r\n"
    b"To: Accounts <accounts@example.net>\r\nCc: Carol <carol@example.com>\r\n"
    b"Bcc: Dave <dave@example.com>\r\n"
    b"Subject: Invoice 2026-03\r\nDate: Mon, 2 Mar 2026 11:00:00 +0000\r\n"
    b"Message-ID: <invoice@example.org>\r\n\r\n"
    b"The quarterly statement is due on Friday.\r\n"
)
LUNCH = (
    b"From: Erin <erin@example.com>\r\nTo: Bob <bob@example.net>\r\n"
    b"Subject: Lunch\r\nDate: Mon, 2 Mar 2026 12:00:00 +0000\r\n"
    b"Message-ID: <lunch@example.com>\r\n\r\n"
    b"Rated 5 * by everyone.\r\n"
)


def append(oracle: imaplib.IMAP4, raw: bytes, when: float) -> None:
    typ, data = oracle.append("INBOX", None, imaplib.Time2Internaldate(when), raw)
    assert typ == "OK", data


@pytest.fixture
async def mail(jmap: Jmap, imap_oracle: imaplib.IMAP4) -> dict[str, str]:
    """Subject -> Email id of NESTED, INVOICE and LUNCH (appended in that order)."""
    now = time.time()
    for age, raw in ((300, NESTED), (200, INVOICE), (100, LUNCH)):
        append(imap_oracle, raw, now - age)
    ids = (await jmap.ok("Email/query", {}))["ids"]
    got = await jmap.ok("Email/get", {"ids": ids, "properties": ["subject"]})
    return {e["subject"]: e["id"] for e in got["list"]}


# --- bodyStructure ------------------------------------------------------------------------


def shape(part: dict[str, Any]) -> Any:
    """A part's type, with its children's shapes when it has a ``subParts`` list."""
    if part.get("subParts") is not None:
        return [part["type"], [shape(child) for child in part["subParts"]]]
    return part["type"]


@pytest.mark.parametrize(
    "body_properties",
    [
        pytest.param(None, id="default"),
        pytest.param(["partId", "type"], id="partId-type"),
        pytest.param(["type", "subParts"], id="with-subParts"),
    ],
)
async def test_body_structure_always_has_sub_parts(
    jmap: Jmap, mail: dict[str, str], body_properties: list[str] | None
) -> None:
    """RFC 8621 §4.1.4: bodyStructure is "the full MIME structure", so a multipart part
    carries subParts even when bodyProperties leave it out; textBody, htmlBody and
    attachments, lists of leaf parts, stay exactly as asked."""
    args: dict[str, Any] = {
        "ids": [mail["Nested parts"]],
        "properties": ["bodyStructure", "textBody", "htmlBody", "attachments"],
    }
    if body_properties is not None:
        args["bodyProperties"] = body_properties
    email = (await jmap.ok("Email/get", args))["list"][0]
    structure = email["bodyStructure"]
    assert shape(structure) == [
        "multipart/mixed",
        [["multipart/alternative", ["text/plain", "text/html"]], "application/pdf"],
    ]
    asked = set(body_properties or ["partId", "blobId", "size", "name", "type"])
    leaves = [*structure["subParts"][0]["subParts"], structure["subParts"][1]]
    for leaf in leaves:
        # a leaf has subParts only when asked for (then null)
        assert ("subParts" in leaf) == ("subParts" in asked), leaf
        assert asked - {"subParts"} <= set(leaf)
    assert [p["type"] for p in email["textBody"]] == ["text/plain"]
    assert [p["type"] for p in email["htmlBody"]] == ["text/html"]
    assert [p["type"] for p in email["attachments"]] == ["application/pdf"]
    for part in (*email["textBody"], *email["htmlBody"], *email["attachments"]):
        assert ("subParts" in part) == ("subParts" in asked), part


async def test_parsed_body_structure_has_sub_parts_too(jmap: Jmap) -> None:
    """Email/parse shows a blob's bodyStructure the same way (RFC 8621 §4.9)."""
    blob_id = (await uploaded(jmap, NESTED, "message/rfc822"))["blobId"]
    parsed = await jmap.ok(
        "Email/parse",
        {"blobIds": [blob_id], "properties": ["bodyStructure"], "bodyProperties": ["type"]},
    )
    assert shape(parsed["parsed"][blob_id]["bodyStructure"]) == [
        "multipart/mixed",
        [["multipart/alternative", ["text/plain", "text/html"]], "application/pdf"],
    ]


# --- using ------------------------------------------------------------------------------


async def test_identity_get_without_submission_in_using(jmap: Jmap) -> None:
    """The session advertises submission for the account: Identity/get with
    using [core, mail] is answered as with submission listed (dispatch Rule 2)."""
    call = [["Identity/get", {"accountId": jmap.account_id}, "0"]]
    strict = await jmap.request(call, using=[CORE, MAIL, SUBMISSION])
    lenient = await jmap.request(call, using=[CORE, MAIL])
    assert strict["methodResponses"][0][0] == "Identity/get", strict
    assert lenient["methodResponses"] == strict["methodResponses"]


@pytest.fixture
async def sending(
    imap_user: ImapUser, tmp_path: Path, smtp_sink: SmtpSink, proxy_client: ProxyClient
) -> AsyncIterator[Jmap]:
    """The proxy with SMTP submission to the test sink; logins are users @example.org."""
    smtp_sink.reset()
    smtp_sink.add_user(imap_user.username, imap_user.password)
    smtp_sink.require_auth = True
    cfg = dataclasses.replace(
        proxy_config(imap_user, tmp_path),
        smtp=SmtpConfig(host="127.0.0.1", port=smtp_sink.port, security="none", timeout=10.0),
        submission=SubmissionConfig(default_domain="example.org"),
    )
    async with proxy_client(cfg) as http:
        client = Jmap(http, imap_user.username, imap_user.password)
        await client.session()
        yield client


async def test_a_webmail_sends_without_submission_in_using(
    sending: Jmap, smtp_sink: SmtpSink, imap_oracle: imaplib.IMAP4
) -> None:
    """What a webmail sends to send a draft, all with using [core, mail]: Identity/get,
    then EmailSubmission/set with onSuccessUpdateEmail.  The message reaches the SMTP
    server and the draft is updated (checked over IMAP)."""
    me = f"{sending.username}@example.org"
    raw = (
        f"From: Me <{me}>\r\nTo: Ann <ann@example.com>\r\nSubject: lenient send\r\n"
        "Message-ID: <lenient.send@example.org>\r\nDate: Mon, 2 Mar 2026 10:00:00 +0000\r\n"
        "\r\nHello.\r\n"
    ).encode()
    typ, data = imap_oracle.append("Drafts", r"(\Draft \Seen)", None, raw)
    assert typ == "OK", data
    account = sending.account_id
    identities = await sending.request(
        [["Identity/get", {"accountId": account}, "i"]], using=[CORE, MAIL]
    )
    identity = next(i for i in identities["methodResponses"][0][1]["list"] if i["email"] == me)
    found = await sending.ok("Email/query", {"filter": {"subject": "lenient send"}})
    [email_id] = found["ids"]
    body = await sending.request(
        [
            [
                "EmailSubmission/set",
                {
                    "accountId": account,
                    "create": {"k": {"identityId": identity["id"], "emailId": email_id}},
                    "onSuccessUpdateEmail": {"#k": {"keywords/$draft": None}},
                },
                "s",
            ]
        ],
        using=[CORE, MAIL],
    )
    names = [r[0] for r in body["methodResponses"]]
    assert names == ["EmailSubmission/set", "Email/set"], body
    assert body["methodResponses"][1][1]["updated"] == {email_id: None}
    [message] = smtp_sink.wait_for(1)
    assert message.raw == raw and list(message.rcpt_tos) == ["ann@example.com"]
    imap_oracle.select("Drafts", readonly=True)
    typ, data = imap_oracle.uid("SEARCH", "DRAFT")
    assert (typ, data) == ("OK", [b""])


@pytest.mark.parametrize(
    "using",
    [pytest.param([MAIL], id="no-core"), pytest.param([], id="empty")],
)
async def test_without_core_a_missing_capability_stays_unknown_method_core_req_06(
    jmap: Jmap, using: list[str]
) -> None:
    call = [["Identity/get", {"accountId": jmap.account_id}, "0"]]
    resp = await jmap.post({"using": using, "methodCalls": call})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["methodResponses"][0][0] == "error"
    assert body["methodResponses"][0][1]["type"] == "unknownMethod"


async def test_an_unknown_capability_is_still_a_request_error_core_err_01(jmap: Jmap) -> None:
    call = [["Identity/get", {"accountId": jmap.account_id}, "0"]]
    resp = await jmap.post({"using": [CORE, "urn:example:nonsense"], "methodCalls": call})
    assert resp.status == 400
    assert (await resp.json())["type"] == "urn:ietf:params:jmap:error:unknownCapability"


# --- trailing * in text conditions ----------------------------------------------------------


@pytest.mark.parametrize(
    ("filter_", "expected"),
    [
        pytest.param({"text": "invoi*"}, ["Invoice 2026-03"], id="text"),
        pytest.param({"text": "QUARTER*"}, ["Invoice 2026-03"], id="text-in-body"),
        pytest.param({"subject": "Invoi*"}, ["Invoice 2026-03"], id="subject"),
        pytest.param({"from": "billi*"}, ["Invoice 2026-03"], id="from"),
        pytest.param({"to": "accoun*"}, ["Invoice 2026-03"], id="to"),
        pytest.param({"cc": "caro*"}, ["Invoice 2026-03"], id="cc"),
        pytest.param({"bcc": "dav*"}, ["Invoice 2026-03"], id="bcc"),
        pytest.param({"body": "statem**"}, ["Invoice 2026-03"], id="body-two-stars"),
        pytest.param(
            {"operator": "OR", "conditions": [{"subject": "lun*"}, {"body": "statem*"}]},
            ["Invoice 2026-03", "Lunch"],
            id="inside-an-operator",
        ),
        # a "*" inside a word is not a prefix: searched as it is, it is in no message
        pytest.param({"text": "inv*oice"}, [], id="star-inside-a-word"),
    ],
)
async def test_trailing_star_is_a_prefix(
    jmap: Jmap, mail: dict[str, str], filter_: dict[str, Any], expected: list[str]
) -> None:
    found = await jmap.ok("Email/query", {"filter": filter_})
    by_id = {v: k for k, v in mail.items()}
    assert sorted(by_id[i] for i in found["ids"]) == expected


@pytest.mark.parametrize("key", ["text", "subject", "body"])
async def test_a_lone_star_is_not_everything(jmap: Jmap, mail: dict[str, str], key: str) -> None:
    """A word made only of "*" has no prefix to stand for: it is searched literally, so it
    finds only messages holding a "*" (LUNCH's body), never all of them."""
    found = await jmap.ok("Email/query", {"filter": {key: "*"}})
    assert set(found["ids"]) <= {mail["Lunch"]}
    assert mail["Invoice 2026-03"] not in found["ids"]


async def test_snippets_mark_the_prefix_and_notfound_is_null(
    jmap: Jmap, mail: dict[str, str]
) -> None:
    """SearchSnippet/get highlights the word without its "*", and says ``notFound: null``
    when every id was found (RFC 8621 §5.1)."""
    got = await jmap.ok(
        "SearchSnippet/get",
        {"filter": {"subject": "invoi*"}, "emailIds": [mail["Invoice 2026-03"]]},
    )
    assert got["notFound"] is None
    assert [s["subject"] for s in got["list"]] == ["<mark>Invoi</mark>ce 2026-03"]
    missing = await jmap.ok(
        "SearchSnippet/get",
        {"filter": {"text": "x"}, "emailIds": [mail["Lunch"], "Mnosuchemail"]},
    )
    assert missing["notFound"] == ["Mnosuchemail"]


# --- Comparator keys ------------------------------------------------------------------------


async def test_unknown_comparator_keys_are_ignored(jmap: Jmap, mail: dict[str, str]) -> None:
    """jmapc 0.4.0 puts anchorOffset, calculateTotal and position in each Comparator."""
    jmapc_sort = {
        "property": "receivedAt",
        "isAscending": False,
        "anchorOffset": 0,
        "calculateTotal": False,
        "position": 0,
    }
    found = await jmap.ok("Email/query", {"sort": [jmapc_sort]})
    assert found["ids"] == [mail["Lunch"], mail["Invoice 2026-03"], mail["Nested parts"]]
    name, error = await jmap.call("Email/query", {"sort": [{**jmapc_sort, "isAscending": "no"}]})
    assert (name, error["type"]) == ("error", "invalidArguments")


# --- Blob/copy, Email/import ----------------------------------------------------------------


async def test_blob_copy_within_the_account_core_bin_04(jmap: Jmap, mail: dict[str, str]) -> None:
    """One account per login: a copy into the same account gives the same ids back."""
    upload = (await uploaded(jmap, b"some octets"))["blobId"]
    got = await jmap.ok("Email/get", {"ids": [mail["Lunch"]], "properties": ["blobId"]})
    message = got["list"][0]["blobId"]
    copied = await jmap.ok(
        "Blob/copy",
        {"fromAccountId": jmap.account_id, "blobIds": [upload, message, "Gnosuchblob"]},
    )
    assert copied == {
        "fromAccountId": jmap.account_id,
        "accountId": jmap.account_id,
        "copied": {upload: upload, message: message},
        "notCopied": {"Gnosuchblob": copied["notCopied"]["Gnosuchblob"]},
    }
    assert copied["notCopied"]["Gnosuchblob"]["type"] == "blobNotFound"
    only = await jmap.ok("Blob/copy", {"fromAccountId": jmap.account_id, "blobIds": [upload]})
    assert only["notCopied"] is None


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param({"fromAccountId": "Aother", "blobIds": []}, "fromAccountNotFound",
                     id="other-account"),
        pytest.param({"blobIds": []}, "invalidArguments", id="no-fromAccountId"),
        pytest.param({"fromAccountId": None, "blobIds": []}, "invalidArguments",
                     id="null-fromAccountId"),
        pytest.param({"fromAccountId": "SELF"}, "invalidArguments", id="no-blobIds"),
        pytest.param({"fromAccountId": "SELF", "blobIds": [1]}, "invalidArguments",
                     id="blobIds-not-strings"),
        pytest.param({"fromAccountId": "SELF", "blobIds": [], "create": {}}, "invalidArguments",
                     id="unknown-argument"),
    ],
)  # fmt: skip
async def test_blob_copy_errors(jmap: Jmap, args: dict[str, Any], expected: str) -> None:
    if args.get("fromAccountId") == "SELF":
        args = {**args, "fromAccountId": jmap.account_id}
    name, error = await jmap.call("Blob/copy", args)
    assert (name, error["type"]) == ("error", expected)


async def test_import_of_an_unknown_blob_is_invalid_properties(jmap: Jmap) -> None:
    """RFC 8621 §4.8: a blobId not found is invalidProperties naming blobId."""
    boxes = await jmap.ok("Mailbox/get", {"properties": ["role"]})
    inbox = next(m["id"] for m in boxes["list"] if m["role"] == "inbox")
    result = await jmap.ok(
        "Email/import",
        {"emails": {"k": {"blobId": "Gnosuchblob", "mailboxIds": {inbox: True}}}},
    )
    assert result["created"] is None
    error = result["notCreated"]["k"]
    assert (error["type"], error["properties"]) == ("invalidProperties", ["blobId"])
