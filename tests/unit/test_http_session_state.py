"""The ``sessionState`` of API responses (CORE-SESS-06): the Session resource's ``state``,
remembered per login (``views.SessionStates``) but never past a change of what the Session
describes (the SMTP server's extensions, ``submissionExtensions``)."""

from __future__ import annotations

from typing import Any

import pytest

from imapjmap.config import Config, SieveConfig
from imapjmap.http import views
from imapjmap.http.auth import Authenticated
from imapjmap.jmap import session as jsession
from imapjmap.methods.context import Account
from imapjmap.methods.submission import handlers as submission
from imapjmap.upstream.api import SieveServer


class Upstream:
    """What the Session reads of the account's server: whether it reports quotas, and what
    its ManageSieve server offers (None: it has none)."""

    def __init__(self, offers_quota: bool = False, sieve: SieveServer | None = None) -> None:
        self.offers_quota = offers_quota
        self.sieve_known = sieve

    async def sieve_server(self, cfg: SieveConfig) -> SieveServer | None:
        return self.sieve_known


def login(account_id: str, username: str, upstream: Upstream | None = None) -> Authenticated:
    return Authenticated(Account(account_id, username, "epoch1"), None, upstream or Upstream())  # type: ignore[arg-type]


async def test_the_state_is_the_sessions_and_follows_the_smtp_extensions_core_sess_06(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    offered: dict[str, list[str]] = {}
    built: list[str] = []
    original = jsession.build_session

    async def extensions(cfg: Config) -> dict[str, list[str]]:
        return {k: list(v) for k, v in offered.items()}

    def counted(*args: Any, **kwargs: Any) -> dict[str, Any]:
        built.append(args[1].account_id)
        return original(*args, **kwargs)

    monkeypatch.setattr(submission, "submission_extensions", extensions)
    monkeypatch.setattr(views, "build_session", counted)
    cfg, states = Config(), views.SessionStates()
    alice, bob = login("Aalice", "alice"), login("Abob", "bob")

    first = await states.of(cfg, alice)
    assert first == (await views._session_for(cfg, alice))["state"]
    built.clear()
    assert await states.of(cfg, alice) == first and built == []  # remembered
    assert await states.of(cfg, bob) != first and built == ["Abob"]  # another session
    offered["SIZE"] = ["1000"]
    changed = await states.of(cfg, alice)
    assert changed != first and changed == (await views._session_for(cfg, alice))["state"]
    # the server starts reporting quotas: the session gains a capability (QUOTA-01)
    with_quota = login("Aalice", "alice", Upstream(offers_quota=True))
    assert await states.of(cfg, with_quota) not in (first, changed)
    assert (
        "urn:ietf:params:jmap:quota" in (await views._session_for(cfg, with_quota))["capabilities"]
    )
    # the server has ManageSieve with vacation: two more capabilities (VAC-01)
    sieve = SieveServer("Example Sieve", frozenset({"vacation", "fileinto"}))
    with_sieve = login("Aalice", "alice", Upstream(sieve=sieve))
    assert await states.of(cfg, with_sieve) not in (first, changed)
    session = await views._session_for(cfg, with_sieve)
    assert session["state"] == await states.of(cfg, with_sieve)
    account = session["accounts"]["Aalice"]["accountCapabilities"]
    assert account["urn:ietf:params:jmap:vacationresponse"] == {}
    assert account["urn:ietf:params:jmap:sieve"]["sieveExtensions"] == ["fileinto", "vacation"]
