"""ManageSieve of an ``[[upstreams]]`` entry ([upstreams.sieve], README "Several upstream
servers"): a login of the entry gets VacationResponse from the entry's ManageSieve server,
while the default upstream's [sieve] (turned off here) still decides for everyone else.

The Dovecot with Pigeonhole of :mod:`tests.integration.sievekit` serves both upstreams; a
second ManageSieve client of the user is the oracle.  VAC-01 [RFC 8621 §8]: the capability
is advertised for an account whose server offers it, and only then.
"""

from __future__ import annotations

import dataclasses
import secrets
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from imapjmap.config import ImapConfig, SieveConfig, UpstreamConfig
from imapjmap.http.app import make_app
from tests.integration.conftest import CORE, MAIL, Jmap, proxy_config
from tests.integration.sievekit import SieveWorld, User, sieve_world

__all__ = ["sieve_world"]  # the fixture this module uses

VACATION = "urn:ietf:params:jmap:vacationresponse"
USING = [CORE, MAIL, VACATION]


def _user(world: SieveWorld, username: str) -> User:
    password = secrets.token_urlsafe(12)
    world.dovecot.add_user(username, password)
    return User(username, password, world.dovecot.host, world.dovecot.port, world)


async def test_an_upstream_entry_s_login_gets_vacation_from_its_sieve_table_vac_01(
    sieve_world: SieveWorld, tmp_path: Path
) -> None:
    entry_user = _user(sieve_world, f"vac-{secrets.token_hex(4)}@sieve.example")
    default_user = _user(sieve_world, f"vac-{secrets.token_hex(4)}")
    dovecot = sieve_world.dovecot
    entry = UpstreamConfig(
        ("sieve.example",),
        ImapConfig(host=dovecot.host, port=dovecot.port, security="none", pool_size=2),
        "sieve",
        sieve=SieveConfig(port=dovecot.sieve_port),
    )
    cfg = dataclasses.replace(
        proxy_config(default_user, tmp_path),
        sieve=SieveConfig(enabled=False),  # the default upstream's: no ManageSieve
        upstreams=(entry,),
    )
    async with TestClient(TestServer(make_app(cfg))) as http:
        default = Jmap(http, default_user.username, default_user.password)
        session = await default.session()
        assert VACATION not in session["accounts"][default.account_id]["accountCapabilities"]

        jmap = Jmap(http, entry_user.username, entry_user.password)
        session = await jmap.session()
        assert session["accounts"][jmap.account_id]["accountCapabilities"][VACATION] == {}
        update = {"singleton": {"isEnabled": True, "subject": "Away"}}
        body = await jmap.request(
            [["VacationResponse/set", {"accountId": jmap.account_id, "update": update}, "s"]],
            using=USING,
        )
        name, response, _ = body["methodResponses"][0]
        assert name == "VacationResponse/set" and response["updated"] == {"singleton": None}

    oracle = await entry_user.other_client()
    try:
        scripts = await oracle.list_scripts()
        active = [name for name, is_active in scripts if is_active]
        assert len(active) == 1, scripts
        script = await oracle.get_script(active[0])
        assert script is not None and b"vacation" in script and b"Away" in script
    finally:
        await oracle.close()
