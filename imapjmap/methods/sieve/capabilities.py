"""The Sieve capabilities of an account: offered only where its server has ManageSieve.

Whether it has is found by logging in there (``SieveAccess.sieve_server``), which the front
end does before it builds a session or runs a request; :func:`details` then reads what
that look found, without I/O.
"""

from __future__ import annotations

from typing import Final

from imapjmap.jmap.wire import SIEVE, VACATION, JsonObject
from imapjmap.upstream.api import SieveAccess, SieveServer

# RFC 9661 §1.2.1: at least 512 octets, ManageSieve's own limit (RFC 5804 §1.6)
MAX_SIZE_SCRIPT_NAME: Final = 512


def sieve_account_capability(server: SieveServer) -> JsonObject:
    """RFC 9661 §1.2.1, from the ManageSieve capabilities (what it does not say is null)."""
    return {
        "implementation": server.implementation,
        "maxSizeScriptName": MAX_SIZE_SCRIPT_NAME,
        "maxSizeScript": None,
        "maxNumberScripts": None,
        "maxNumberRedirects": server.max_redirects,
        "sieveExtensions": sorted(server.extensions),
        "notificationMethods": list(server.notify_methods) or None,
        "externalLists": None,
    }


def details(upstream: SieveAccess) -> dict[str, JsonObject]:
    """URN -> accountCapabilities object of the Sieve capabilities the account has: none
    without a ManageSieve server it can log in to; VacationResponse where the server
    implements the ``vacation`` extension (RFC 5230)."""
    server = upstream.sieve_known
    if server is None:
        return {}
    out: dict[str, JsonObject] = {SIEVE: sieve_account_capability(server)}
    if "vacation" in server.extensions:
        out[VACATION] = {}
    return out
