"""RFC 8621 §1.3.1: ``emailQuerySortOptions`` lists every sort Email/query supports, and each
one it lists, with each advertised collation, is answered against the real Dovecot.

The session once advertised ``receivedAt`` alone while Email/query sorted on nine
properties: a client that checks the list (jmaplib's live suite does) refused to send a
``subject`` sort the proxy answers correctly.
"""

from __future__ import annotations

from typing import Any

from imapjmap.query.email_filter import SORT_PROPERTIES
from tests.conftest import SeededUser
from tests.integration.conftest import MAIL, Jmap

KEYWORD_SORTS = {"hasKeyword", "allInThreadHaveKeyword", "someInThreadHaveKeyword"}


async def test_every_advertised_sort_is_answered(seeded_user: SeededUser, jmap: Jmap) -> None:
    session = await jmap.session()
    advertised = session["accounts"][jmap.account_id]["accountCapabilities"][MAIL][
        "emailQuerySortOptions"
    ]
    assert set(advertised) == set(SORT_PROPERTIES)
    total = sum(seeded_user.counts.values())
    for prop in advertised:
        for collation in session["capabilities"]["urn:ietf:params:jmap:core"][
            "collationAlgorithms"
        ]:
            comparator: dict[str, Any] = {"property": prop, "collation": collation}
            if prop in KEYWORD_SORTS:
                comparator["keyword"] = "$seen"
            result = await jmap.ok(
                "Email/query",
                {"sort": [{"property": "receivedAt"}, comparator], "calculateTotal": True},
            )
            assert result["total"] == total, (prop, collation)
            assert len(result["ids"]) == total, (prop, collation)
