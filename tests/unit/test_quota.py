"""The pure cores of Quota (RFC 9425): the GETQUOTAROOT reply read into readings, and the
cached records merged with a new reading.  Ids QUOTA-* are defined in
``tests/integration/test_quota.py``."""

from __future__ import annotations

import pytest

from imapjmap.imap.models import Quota, Reply, TaggedResult
from imapjmap.methods.quota import MAIL, to_json
from imapjmap.sync.quota import QuotaRecord, merge, quota_id
from imapjmap.upstream.imap_quota import readings
from imapjmap.upstream.quota import QuotaReading

OK = TaggedResult("OK", None, "done")


@pytest.mark.parametrize(
    ("roots", "quotas", "expected"),
    [
        pytest.param({}, (), [], id="no root"),
        pytest.param(
            {"INBOX": ()}, (Quota("x", {"STORAGE": (1, 2)}),), [], id="root of another box"
        ),
        pytest.param(
            {"INBOX": ("User quota",)},
            (Quota("User quota", {"STORAGE": (7, 1024), "MESSAGE": (1, 5)}),),
            [
                QuotaReading("User quota", "STORAGE", 7, 1024),
                QuotaReading("User quota", "MESSAGE", 1, 5),
            ],
            id="dovecot",
        ),
        pytest.param({"inbox": ("INBOX",)}, (Quota("INBOX", {}),), [], id="cyrus without limits"),
        pytest.param(
            {"INBOX": ("a", "b")},
            (Quota("b", {"STORAGE": (1, 9)}), Quota("b", {"STORAGE": (2, 9)})),
            [QuotaReading("b", "STORAGE", 1, 9)],
            id="a root reported twice: the first",
        ),
    ],
)
def test_readings(
    roots: dict[str, tuple[str, ...]], quotas: tuple[Quota, ...], expected: list[QuotaReading]
) -> None:
    assert readings(Reply(OK, quotas=quotas, quotaroots=roots)) == expected


SID = quota_id("r", "STORAGE")
MID = quota_id("r", "MESSAGE")
STORAGE = QuotaRecord(SID, "r", "STORAGE", 10, 100, 1, 1, 1)


@pytest.mark.parametrize(
    ("records", "now", "expected"),
    [
        pytest.param({}, [], None, id="nothing, still nothing"),
        pytest.param({SID: STORAGE}, [QuotaReading("r", "STORAGE", 10, 100)], None, id="unchanged"),
        pytest.param(
            {SID: STORAGE},
            [QuotaReading("r", "STORAGE", 11, 100)],
            {SID: QuotaRecord(SID, "r", "STORAGE", 11, 100, 1, 5, 1)},
            id="used moved",
        ),
        pytest.param(
            {SID: STORAGE},
            [QuotaReading("r", "STORAGE", 10, 200)],
            {SID: QuotaRecord(SID, "r", "STORAGE", 10, 200, 1, 5, 5)},
            id="limit moved",
        ),
        pytest.param(
            {SID: STORAGE},
            [QuotaReading("r", "MESSAGE", 1, 5), QuotaReading("r", "X-NUM-FOLDERS", 1, 5)],
            {
                SID: QuotaRecord(SID, "r", "STORAGE", 10, 100, 1, 5, 1, 5),
                MID: QuotaRecord(MID, "r", "MESSAGE", 1, 5, 5, 5, 5),
            },
            id="one gone, one new, an unknown resource left out",
        ),
        pytest.param(
            {SID: QuotaRecord(SID, "r", "STORAGE", 10, 100, 1, 3, 1, 3)},
            [QuotaReading("r", "STORAGE", 10, 100)],
            {SID: QuotaRecord(SID, "r", "STORAGE", 10, 100, 5, 5, 5)},
            id="back after being gone",
        ),
    ],
)
def test_merge(
    records: dict[str, QuotaRecord],
    now: list[QuotaReading],
    expected: dict[str, QuotaRecord] | None,
) -> None:
    assert merge(records, now, 5) == expected


def test_to_json_units_and_types() -> None:
    """QUOTA-02, QUOTA-03."""
    quota = to_json(STORAGE, frozenset({MAIL}))
    assert quota is not None
    assert (quota["resourceType"], quota["used"], quota["hardLimit"]) == ("octets", 10240, 102400)
    assert quota["types"] == ["Email", "Mailbox", "Thread"]
    assert to_json(STORAGE, frozenset()) is None
    gone = QuotaRecord(SID, "r", "STORAGE", 10, 100, 1, 3, 1, 3)
    assert to_json(gone, frozenset({MAIL})) is None
