"""Building and reading MDN messages (RFC 8098), the pure core of MDN/send and MDN/parse.
Ids MDN-* are defined in ``tests/integration/test_mdn.py``."""

from __future__ import annotations

import pytest

from imapjmap.mime import mdn

ORIGINAL = (
    b"From: Bob <bob@example.net>\r\nTo: me@example.org\r\nSubject: Caf\xc3\xa9\r\n"
    b"Message-ID: <m1@example.net>\r\nOriginal-Recipient: rfc822; me@example.org\r\n"
    b"Disposition-Notification-To: Bob <bob@example.net>, bob@example.net,\r\n eve@example.net\r\n"
    b"\r\nBody \xff\xfe 8-bit\r\n"
)
REPORT = mdn.Report(
    mdn.Disposition("automatic-action", "mdn-sent-automatically", "deleted"),
    subject="Deleted: Café",
    text_body="Gone.\r\n",
    reporting_ua="host; imapjmap",
    original_recipient="rfc822; me@example.org",
    final_recipient="rfc822; me@example.org",
    original_message_id="<m1@example.net>",
    extension_fields={"X-Why": "cleanup"},
    include_original_message=True,
)


def test_the_request_of_an_original() -> None:
    """MDN-02: every Disposition-Notification-To address once, folded fields unfolded."""
    asked = mdn.requested(ORIGINAL)
    assert asked == mdn.Request(
        ("bob@example.net", "eve@example.net"), "<m1@example.net>", "rfc822; me@example.org", "Café"
    )
    assert mdn.requested(b"Subject: x\r\n\r\n").notify == ()
    odd = b"Disposition-Notification-To: nobody, <j\xc3\xb6rg@example.net>\r\n\r\n"
    assert mdn.requested(odd).notify == ()  # no address an SMTP server takes as it is


def test_built_report_reads_back_and_keeps_the_original_octets() -> None:
    """MDN-02, MDN-04, MDN-06."""
    raw = mdn.build(
        REPORT,
        sender=("Me", "me@example.org"),
        to=["bob@example.net"],
        original=ORIGINAL,
        message_id="<r1@example.org>",
        now=0,
    )
    assert b"Disposition: automatic-action/MDN-sent-automatically; deleted\r\n" in raw
    assert ORIGINAL.rstrip(b"\r\n") in raw  # the third part is the original, byte for byte
    assert b"Auto-Submitted: auto-replied" in raw
    assert mdn.parse(raw) == REPORT
    without = mdn.build(
        REPORT,
        sender=("Me", "me@example.org"),
        to=["bob@example.net"],
        original=None,
        message_id="<r1@example.org>",
        now=0,
    )
    parsed = mdn.parse(without)
    assert parsed is not None and parsed.include_original_message is False


def _report(content_type: str, fields: str) -> bytes:
    return (
        f"Subject: r\r\nMIME-Version: 1.0\r\nContent-Type: {content_type}; boundary=b\r\n\r\n"
        f"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        f"--b\r\nContent-Type: message/disposition-notification\r\n\r\n{fields}\r\n--b--\r\n"
    ).encode()


GOOD = (
    "Final-Recipient: rfc822; a@example.org\r\n"
    "Disposition: Manual-Action/MDN-Sent-Manually; Displayed\r\nError: one\r\nError: two"
)


@pytest.mark.parametrize(
    ("raw", "disposition"),
    [
        pytest.param(
            _report("multipart/report; report-type=disposition-notification", GOOD),
            "displayed",
            id="good, any case",
        ),
        pytest.param(
            _report("multipart/report; report-type=delivery-status", GOOD), None, id="a DSN"
        ),
        pytest.param(_report("multipart/mixed", GOOD), None, id="not a report"),
        pytest.param(
            _report("multipart/report; report-type=disposition-notification", "Final-Recipient: x"),
            None,
            id="no disposition",
        ),
        pytest.param(
            _report(
                "multipart/report; report-type=disposition-notification",
                "Disposition: manual-action/MDN-sent-manually; read",
            ),
            None,
            id="unknown type",
        ),
        pytest.param(b"Subject: plain\r\n\r\ntext\r\n", None, id="plain message"),
        pytest.param(b"", None, id="empty"),
    ],
)
def test_parse(raw: bytes, disposition: str | None) -> None:
    """MDN-04: what is not an MDN is not parsed."""
    report = mdn.parse(raw)
    if disposition is None:
        assert report is None
        return
    assert report is not None
    assert report.disposition == mdn.Disposition("manual-action", "mdn-sent-manually", disposition)
    assert report.error == ("one", "two")
    assert report.text_body == "hello"
    assert report.final_recipient == "rfc822; a@example.org"
