"""VacationResponse (RFC 8621 §8) against a real Dovecot with Pigeonhole: the server
answers the mail, the proxy only writes the Sieve script over ManageSieve.

Requirement ids cited by the tests (RFC section in brackets):

- VAC-01 [RFC 8621 §8, RFC 8620 §2]: ``urn:ietf:params:jmap:vacationresponse`` is
  advertised for an account whose server offers it, and only then.
- VAC-02 [§8]: the VacationResponse is a singleton with id ``singleton``, present in every
  account that has the capability; /get of another id is notFound.
- VAC-03 [§8.2]: /set may only update the singleton: create and destroy are ``singleton``
  errors; properties are type-checked (invalidProperties); ``ifInState`` is honoured.
- VAC-04 [§8]: when ``isEnabled`` is true, mail arriving between ``fromDate`` and
  ``toDate`` is answered with ``subject`` and ``textBody``/``htmlBody`` — by the server,
  at most once per sender within the vacation period (RFC 5230 ``:days``).
- VAC-05 [§8]: no reply before ``fromDate`` (nor after ``toDate``).
- VAC-06 [RFC 5230 §5.8 ``:mime``]: an ``htmlBody`` reply is multipart/alternative with
  the HTML beside a text part.
- VAC-07: a Sieve script that another client made active keeps filtering while vacation is
  on (RFC 6609 include), and is the active script again, unchanged, when it is turned off.
- VAC-08 [§8.1]: ``isEnabled`` reads back false once another client activated a script
  of its own (the server no longer runs the vacation).
- VAC-09 [§8.1, RFC 8620 §5.1]: /get honours ``properties`` (``id`` always) and
  ``ids: []``; an unknown property is invalidArguments.
- VAC-10 [§8]: VacationResponse has only /get and /set: /changes, /query are
  unknownMethod.
- VAC-11 [§8]: ``isEnabled`` is a Boolean (null refused) and the dates are UTCDates (an
  offset other than ``Z`` refused), both invalidProperties naming the property.
- CORE-SESS-08: the capability is ``{}`` in the session's capabilities too.
"""

from __future__ import annotations

import dataclasses
import secrets
import smtplib
import time
from pathlib import Path
from typing import Any

from imapjmap.config import IdentityConfig, SieveConfig, SubmissionConfig
from tests.integration.conftest import CORE, MAIL, Jmap, proxy_config
from tests.integration.instances import ProxyClient
from tests.integration.sievekit import FILTER, SieveWorld, User, jmap, sieve_world, user

__all__ = ["jmap", "sieve_world", "user"]  # the fixtures this module uses

VACATION = "urn:ietf:params:jmap:vacationresponse"
SIEVE = "urn:ietf:params:jmap:sieve"
USING = [CORE, MAIL, VACATION]


async def vacation_get(jmap: Jmap) -> dict[str, Any]:
    body = await jmap.request(
        [["VacationResponse/get", {"accountId": jmap.account_id}, "g"]], using=USING
    )
    name, args, _ = body["methodResponses"][0]
    assert name == "VacationResponse/get", args
    return args


async def vacation_set(jmap: Jmap, **args: Any) -> dict[str, Any]:
    body = await jmap.request(
        [["VacationResponse/set", {"accountId": jmap.account_id, **args}, "s"]], using=USING
    )
    name, response, _ = body["methodResponses"][0]
    assert name == "VacationResponse/set", response
    return response


async def enable(jmap: Jmap, **props: Any) -> None:
    response = await vacation_set(
        jmap, update={"singleton": {"isEnabled": True, "subject": "Away", **props}}
    )
    assert response["updated"] == {"singleton": None}, response


def replies_to(world: SieveWorld, sender: str, wait: float = 0.0) -> list[Any]:
    """The vacation replies the server sent to ``sender`` (after ``wait`` seconds)."""
    time.sleep(wait)
    return [m for m in world.outbox.messages if sender in m.rcpt_tos]


def wait_for_reply(world: SieveWorld, sender: str) -> Any:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = replies_to(world, sender)
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no vacation reply to {sender}")


# --- the session -------------------------------------------------------------------------


async def test_capability_advertised_where_the_server_has_managesieve_vac_01(
    jmap: Jmap,
) -> None:
    session = await jmap.session()
    account = session["accounts"][jmap.account_id]
    assert VACATION in session["capabilities"] and SIEVE in session["capabilities"]
    assert account["accountCapabilities"][VACATION] == {}
    assert session["capabilities"][VACATION] == {}  # CORE-SESS-08
    sieve = account["accountCapabilities"][SIEVE]
    assert {"vacation", "include", "fileinto"} <= set(sieve["sieveExtensions"])
    assert sieve["maxSizeScriptName"] >= 512
    assert session["primaryAccounts"][VACATION] == jmap.account_id


async def test_capability_not_advertised_without_managesieve_vac_01(
    user: User, tmp_path: Path, proxy_client: ProxyClient
) -> None:
    closed = SieveConfig(port=user.world.outbox.port)  # an SMTP server: no ManageSieve there
    for sieve in (closed, SieveConfig(enabled=False)):
        cfg = dataclasses.replace(proxy_config(user, tmp_path), sieve=sieve)
        async with proxy_client(cfg) as http:
            client = Jmap(http, user.username, user.password)
            session = await client.session()
            assert VACATION not in session["capabilities"]
            assert VACATION not in session["accounts"][client.account_id]["accountCapabilities"]
            body = await client.request(
                [["VacationResponse/get", {"accountId": client.account_id}, "g"]], using=USING
            )
            assert body["methodResponses"][0][1]["type"] == "accountNotSupportedByMethod"


# --- get and set ---------------------------------------------------------------------------


async def test_get_the_singleton_vac_02(jmap: Jmap) -> None:
    response = await vacation_get(jmap)
    assert response["list"] == [
        {
            "id": "singleton",
            "isEnabled": False,
            "fromDate": None,
            "toDate": None,
            "subject": None,
            "textBody": None,
            "htmlBody": None,
        }
    ]
    body = await jmap.request(
        [["VacationResponse/get", {"accountId": jmap.account_id, "ids": ["x", "singleton"]}, "g"]],
        using=USING,
    )
    args = body["methodResponses"][0][1]
    assert args["notFound"] == ["x"] and [o["id"] for o in args["list"]] == ["singleton"]


async def test_only_the_singleton_can_be_updated_vac_03(jmap: Jmap) -> None:
    state = (await vacation_get(jmap))["state"]
    response = await vacation_set(
        jmap,
        create={"c": {"isEnabled": True}},
        destroy=["singleton"],
        update={
            "other": {"isEnabled": True},
            "singleton": {"isEnabled": "yes"},
        },
    )
    assert response["notCreated"]["c"]["type"] == "singleton"
    assert response["notDestroyed"]["singleton"]["type"] == "singleton"
    assert response["notUpdated"]["other"]["type"] == "notFound"
    assert response["notUpdated"]["singleton"]["type"] == "invalidProperties"
    assert response["notUpdated"]["singleton"]["properties"] == ["isEnabled"]
    assert response["oldState"] == response["newState"] == state
    for bad in ({"fromDate": "tomorrow"}, {"subject": 5}, {"id": "x"}, {"colour": "red"}):
        response = await vacation_set(jmap, update={"singleton": bad})
        assert response["notUpdated"]["singleton"]["type"] == "invalidProperties", bad
    args = {"accountId": jmap.account_id, "ifInState": "nope", "update": {"singleton": {}}}
    body = await jmap.request([["VacationResponse/set", args, "s"]], using=USING)
    assert body["methodResponses"][0][:2] == ["error", {"type": "stateMismatch"}]


async def test_set_reads_back_and_moves_the_state_vac_03(jmap: Jmap) -> None:
    before = (await vacation_get(jmap))["state"]
    response = await vacation_set(
        jmap,
        ifInState=before,
        update={
            "singleton": {
                "isEnabled": True,
                "subject": 'Out "of" office',
                "textBody": "Back on Monday.\n.\nBye",
                "fromDate": "2020-01-01T00:00:00Z",
                "toDate": "2099-12-31T00:00:00Z",
            }
        },
    )
    assert response["oldState"] == before and response["newState"] != before
    got = (await vacation_get(jmap))["list"][0]
    assert got["isEnabled"] is True and got["subject"] == 'Out "of" office'
    assert got["textBody"] == "Back on Monday.\n.\nBye"
    assert got["fromDate"] == "2020-01-01T00:00:00Z"


# --- it answers mail -----------------------------------------------------------------------


async def test_the_server_replies_once_per_sender_vac_04(jmap: Jmap, user: User) -> None:
    await enable(jmap, textBody="I am away until Monday.")
    sender = f"bob-{secrets.token_hex(4)}@example.org"
    user.deliver(sender, "hello")
    reply = wait_for_reply(user.world, sender)
    parsed = reply.parsed()
    assert parsed["Subject"] == "Away"
    assert parsed["Auto-Submitted"].startswith("auto-replied")
    assert "I am away until Monday." in parsed.get_content()
    user.deliver(sender, "hello again")
    assert len(replies_to(user.world, sender, wait=1.0)) == 1  # not twice within :days
    other = f"carol-{secrets.token_hex(4)}@example.org"
    user.deliver(other, "hi")
    wait_for_reply(user.world, other)  # every sender hears once


async def test_no_reply_before_from_date_nor_when_disabled_vac_05(jmap: Jmap, user: User) -> None:
    await enable(jmap, textBody="later", fromDate="2098-01-01T00:00:00Z")
    sender = f"dave-{secrets.token_hex(4)}@example.org"
    user.deliver(sender, "early")
    await enable(jmap, textBody="over", fromDate=None, toDate="2000-01-01T00:00:00Z")
    user.deliver(sender, "late")
    response = await vacation_set(jmap, update={"singleton": {"isEnabled": False, "toDate": None}})
    assert response["updated"] == {"singleton": None}
    user.deliver(sender, "disabled")
    assert replies_to(user.world, sender, wait=1.0) == []
    client = await user.other_client()
    try:
        assert [active for _, active in await client.list_scripts()] == [False]
    finally:
        await client.close()


async def test_html_reply_is_multipart_alternative_vac_06(jmap: Jmap, user: User) -> None:
    await enable(jmap, textBody="Away.", htmlBody="<p>Away <b>now</b>.</p>")
    sender = f"erin-{secrets.token_hex(4)}@example.org"
    user.deliver(sender, "hello")
    parsed = wait_for_reply(user.world, sender).parsed()
    assert parsed.get_content_type() == "multipart/alternative"
    parts = {part.get_content_type(): part.get_content() for part in parsed.iter_parts()}
    assert "<b>now</b>" in parts["text/html"] and "Away." in parts["text/plain"]


# --- another client's script -----------------------------------------------------------------


async def test_another_clients_script_keeps_working_and_comes_back_vac_07(
    jmap: Jmap, user: User
) -> None:
    client = await user.other_client()
    try:
        await client.put_script("mine", FILTER)
        await client.set_active("mine")
    finally:
        await client.close()
    with user.imap() as imap:
        imap.create("Bills")
    await enable(jmap, textBody="away")
    sender = f"frank-{secrets.token_hex(4)}@example.org"
    user.deliver(sender, "your invoice")
    wait_for_reply(user.world, sender)  # the vacation runs ...
    with user.imap() as imap:  # ... and so does the user's filter
        typ, data = imap.select("Bills", readonly=True)
        assert typ == "OK" and data == [b"1"]
    response = await vacation_set(jmap, update={"singleton": {"isEnabled": False}})
    assert response["updated"] == {"singleton": None}
    client = await user.other_client()
    try:
        active = [name for name, is_active in await client.list_scripts() if is_active]
        assert active == ["mine"]
        assert await client.get_script("mine") == FILTER
    finally:
        await client.close()


async def test_vacation_reads_disabled_once_another_script_is_activated_vac_08(
    jmap: Jmap, user: User
) -> None:
    await enable(jmap, textBody="away")
    assert (await vacation_get(jmap))["list"][0]["isEnabled"] is True
    client = await user.other_client()
    try:
        await client.put_script("theirs", b"keep;\r\n")
        await client.set_active("theirs")
    finally:
        await client.close()
    got = (await vacation_get(jmap))["list"][0]
    assert got["isEnabled"] is False and got["subject"] == "Away"


async def test_a_request_without_a_session_fetch_finds_the_server_vac_01(
    jmap: Jmap, user: User, tmp_path: Path, proxy_client: ProxyClient
) -> None:
    """A client that kept its session from before a restart calls the API at once: the
    request that uses the capability looks for the ManageSieve server itself."""
    (tmp_path / "fresh").mkdir()
    cfg = proxy_config(user, tmp_path / "fresh")
    cfg = dataclasses.replace(cfg, sieve=SieveConfig(port=user.world.dovecot.sieve_port))
    async with proxy_client(cfg) as http:
        fresh = Jmap(http, user.username, user.password, account_id=jmap.account_id)
        response = await vacation_get(fresh)
        assert response["list"][0]["id"] == "singleton"


async def test_get_properties_and_the_methods_there_are_vac_09_vac_10(jmap: Jmap) -> None:
    async def call(name: str, **args: Any) -> list[Any]:
        body = await jmap.request(
            [[name, {"accountId": jmap.account_id, **args}, "c"]], using=USING
        )
        response: list[Any] = body["methodResponses"][0]
        return response

    _, got, _ = await call("VacationResponse/get", properties=["subject"])
    assert got["list"] == [{"id": "singleton", "subject": None}]
    _, got, _ = await call("VacationResponse/get", ids=[])
    assert got["list"] == [] and got["notFound"] == []
    name, error, _ = await call("VacationResponse/get", properties=["colour"])
    assert (name, error["type"]) == ("error", "invalidArguments")
    for method in ("VacationResponse/changes", "VacationResponse/query"):
        name, error, _ = await call(method, sinceState="x")
        assert (name, error["type"]) == ("error", "unknownMethod"), method


async def test_types_of_the_properties_vac_11(jmap: Jmap) -> None:
    state = (await vacation_get(jmap))["state"]
    for bad, prop in (
        ({"isEnabled": None}, "isEnabled"),
        ({"fromDate": "2030-01-01T00:00:00+01:00"}, "fromDate"),
        ({"toDate": "2030-01-01"}, "toDate"),
        ({"htmlBody": ["x"]}, "htmlBody"),
    ):
        response = await vacation_set(jmap, update={"singleton": bad})
        error = response["notUpdated"]["singleton"]
        assert error["type"] == "invalidProperties" and error["properties"] == [prop], bad
    assert (await vacation_get(jmap))["state"] == state


async def test_mail_to_an_identity_is_answered_from_it_vac_04(
    user: User, tmp_path: Path, proxy_client: ProxyClient
) -> None:
    """RFC 5230 §4.5: the server answers mail to the user's addresses; the script names the
    account's identities (``:addresses``), so mail to an alias the server does not know of
    is answered, from that alias; mail to somebody else is not."""
    alias = f"alias-{secrets.token_hex(4)}@example.net"
    identities = (IdentityConfig(username=user.username, email=alias),)
    cfg = dataclasses.replace(
        proxy_config(user, tmp_path),
        sieve=SieveConfig(port=user.world.dovecot.sieve_port),
        submission=SubmissionConfig(identities=identities),
    )
    async with proxy_client(cfg) as http:
        client = Jmap(http, user.username, user.password)
        await client.session()
        await enable(client, textBody="away")
    senders = {to: f"h-{secrets.token_hex(4)}@example.org" for to in (alias, "else@example.net")}
    for to, sender in senders.items():
        raw = f"From: {sender}\r\nTo: {to}\r\nSubject: hi\r\n\r\nHello.\r\n".encode()
        with smtplib.LMTP(user.host, user.world.dovecot.lmtp_port, timeout=30) as lmtp:
            lmtp.sendmail(sender, [user.username], raw)
    reply = wait_for_reply(user.world, senders[alias]).parsed()
    assert reply["From"].addresses[0].addr_spec == alias
    assert replies_to(user.world, senders["else@example.net"], wait=0.5) == []
