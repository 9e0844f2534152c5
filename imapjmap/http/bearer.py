"""The user of an OAuth 2.0 bearer token, for an XOAUTH2 login upstream.

SASL XOAUTH2 names the user next to the token, but an HTTP ``Authorization: Bearer``
header carries the token alone.  One GET of ``auth.bearer_profile_url`` with the token
tells whose it is: Gmail API ``users.getProfile`` by default, whose ``emailAddress`` is the
Gmail login (the ``https://mail.google.com/`` scope that IMAP needs allows that call).
The token goes to that URL, to the IMAP server and (EmailSubmission) to the SMTP server,
nowhere else, and is never logged.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

_USER_FIELDS = ("emailAddress", "email")


async def token_user(url: str, token: str, timeout: float) -> str | None:
    """The token's user, or None when the profile URL refuses the token.

    Raises:
        OSError: the URL cannot be reached, or answered neither a profile nor a refusal.
    """
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
            http.get(url, headers=headers, allow_redirects=False) as resp,
        ):
            if resp.status in (400, 401, 403):
                return None
            if resp.status != 200:
                raise OSError(f"the profile URL answered HTTP {resp.status}")
            body: Any = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise OSError(f"profile lookup failed: {type(exc).__name__}") from exc
    if isinstance(body, dict):
        for key in _USER_FIELDS:
            user = body.get(key)
            if isinstance(user, str) and user:
                return user
    log.warning("the profile URL answered no %s", " or ".join(_USER_FIELDS))
    return None
