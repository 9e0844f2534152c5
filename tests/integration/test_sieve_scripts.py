"""SieveScript (RFC 9661) against a real Dovecot with Pigeonhole: scripts written through
JMAP are stored, compiled and run by the server; another ManageSieve client is the oracle.

Requirement ids cited by the tests (RFC 9661 section in brackets):

- SIEVE-01 [§1.2.1]: ``urn:ietf:params:jmap:sieve`` with the server's extensions, only
  where the account's server has ManageSieve (also VAC-01 in test_vacation).
- SIEVE-02 [§2.1, §2.3]: SieveScript/get gives id, name, isActive and a downloadable
  blobId holding the script's exact octets.
- SIEVE-03 [§2.2, §2.4]: /set creates a script from an uploaded blob, replaces its content
  (update of blobId), and destroys it; a name taken is ``alreadyExists``, an unknown blob
  ``blobNotFound``.
- SIEVE-04 [§2.4]: a script the server refuses is ``invalidSieve`` with the server's
  description, and nothing is stored.
- SIEVE-05 [§2.4]: ``onSuccessActivateScript`` (also a creation id) activates a script
  once every change succeeded, reported as ``updated`` isActive; the server then runs it:
  a delivered message is filed as the filter says.
- SIEVE-06 [§2.4]: the active script cannot be destroyed (``sieveIsActive``);
  ``onSuccessDeactivateScript`` deactivates it.
- SIEVE-07 [§2.5]: SieveScript/query filters by name and isActive and sorts by name.
- SIEVE-08 [§2.6]: SieveScript/validate answers null for a valid script and an
  ``invalidSieve`` SetError for an invalid one, storing nothing.
- SIEVE-09: a script written by another ManageSieve client survives every JMAP change
  (SieveScript/set on other scripts, VacationResponse on and off).
- SIEVE-10 [§2.4, RFC 5804 §2.11.1]: updating ``name`` renames the script on the server
  (RENAMESCRIPT, or a copy where the server predates it): the id stays, an active script
  stays active and keeps running, a name another script has is ``alreadyExists`` with its
  ``existingId``; a new script under the old name gets an id of its own.
- SIEVE-11 [§2.4]: an ``onSuccessActivateScript`` that names no script is ignored and the
  active script stays so; with ``onSuccessDeactivateScript`` too, the deactivation comes
  first, then the activation.
- SIEVE-12 [§2.4, RFC 5804 §1.6]: a script larger than the server takes is ``tooLarge``;
  a name with a control character is ``invalidProperties``; neither is stored.
"""

from __future__ import annotations

from typing import Any

from imapjmap.upstream.managesieve import ManageSieveScripts
from tests.integration.conftest import CORE, MAIL, Jmap
from tests.integration.sievekit import FILTER, MAX_SCRIPT_SIZE, User, jmap, sieve_world, user

__all__ = ["jmap", "sieve_world", "user"]  # the fixtures this module uses

SIEVE = "urn:ietf:params:jmap:sieve"
VACATION = "urn:ietf:params:jmap:vacationresponse"
USING = [CORE, MAIL, SIEVE]
BROKEN = b'require "fileinto";\r\nfileinto "x"\r\nkeep;\r\n'  # a missing ";"


async def upload(jmap: Jmap, content: bytes) -> str:
    resp = await jmap.http.post(
        f"/jmap/upload/{jmap.account_id}/",
        data=content,
        headers={**jmap.auth(), "Content-Type": "application/sieve"},
    )
    assert resp.status == 201, await resp.text()
    body: dict[str, Any] = await resp.json()
    return str(body["blobId"])


async def call(jmap: Jmap, name: str, args: dict[str, Any], using: list[str] = USING) -> Any:
    body = await jmap.request([[name, {"accountId": jmap.account_id, **args}, "c"]], using=using)
    return body["methodResponses"][0]


async def ok(jmap: Jmap, name: str, args: dict[str, Any]) -> dict[str, Any]:
    response_name, response, _ = await call(jmap, name, args)
    assert response_name == name, response
    result: dict[str, Any] = response
    return result


async def server_scripts(user: User) -> dict[str, tuple[bool, bytes | None]]:
    client = await user.other_client()
    try:
        return {
            name: (active, await client.get_script(name))
            for name, active in await client.list_scripts()
        }
    finally:
        await client.close()


async def test_create_get_download_update_destroy_sieve_02_03(jmap: Jmap, user: User) -> None:
    first = await upload(jmap, b"keep;\r\n")
    before = (await ok(jmap, "SieveScript/get", {}))["state"]
    created = await ok(
        jmap, "SieveScript/set", {"create": {"a": {"name": "my rules", "blobId": first}}}
    )
    assert created["oldState"] == before and created["newState"] != before
    script_id = created["created"]["a"]["id"]
    assert created["created"]["a"]["isActive"] is False
    assert await server_scripts(user) == {"my rules": (False, b"keep;\r\n")}

    got = await ok(jmap, "SieveScript/get", {"ids": [script_id, "Snope"]})
    (one,) = got["list"]
    assert one["name"] == "my rules" and one["isActive"] is False and got["notFound"] == ["Snope"]
    resp = await jmap.http.get(
        f"/jmap/download/{jmap.account_id}/{one['blobId']}/s.sieve?type=application/sieve",
        headers=jmap.auth(),
    )
    assert resp.status == 200 and await resp.read() == b"keep;\r\n"

    second = await upload(jmap, FILTER)
    updated = await ok(jmap, "SieveScript/set", {"update": {script_id: {"blobId": second}}})
    assert updated["updated"] == {script_id: None}
    assert (await server_scripts(user))["my rules"] == (False, FILTER)

    taken = await ok(
        jmap, "SieveScript/set", {"create": {"b": {"name": "my rules", "blobId": first}}}
    )
    assert taken["notCreated"]["b"]["type"] == "alreadyExists"
    assert taken["notCreated"]["b"]["existingId"] == script_id
    missing = await ok(jmap, "SieveScript/set", {"create": {"c": {"name": "x", "blobId": "Unone"}}})
    assert missing["notCreated"]["c"]["type"] == "blobNotFound"

    both = {"update": {script_id: {"blobId": first}}, "destroy": [script_id]}
    destroyed = await ok(jmap, "SieveScript/set", both)
    assert destroyed["notUpdated"][script_id]["type"] == "willDestroy"
    assert destroyed["destroyed"] == [script_id]
    assert await server_scripts(user) == {}


async def test_a_script_the_server_refuses_is_invalid_sieve_04(jmap: Jmap, user: User) -> None:
    blob = await upload(jmap, BROKEN)
    response = await ok(jmap, "SieveScript/set", {"create": {"a": {"name": "bad", "blobId": blob}}})
    error = response["notCreated"]["a"]
    assert error["type"] == "invalidSieve"
    assert "line 2: error: missing semicolon" in error["description"]  # the server's own words
    assert await server_scripts(user) == {}


async def test_activate_a_new_filter_and_the_server_runs_it_sieve_05(
    jmap: Jmap, user: User
) -> None:
    with user.imap() as imap:
        imap.create("Bills")
    blob = await upload(jmap, FILTER)
    response = await ok(
        jmap,
        "SieveScript/set",
        {"create": {"f": {"name": "bills", "blobId": blob}}, "onSuccessActivateScript": "#f"},
    )
    script_id = response["created"]["f"]["id"]
    assert response["updated"] == {script_id: {"isActive": True}}
    assert await server_scripts(user) == {"bills": (True, FILTER)}
    user.deliver("bob@example.org", "Your invoice for May")
    user.deliver("bob@example.org", "Lunch?")
    with user.imap() as imap:
        assert imap.select("Bills", readonly=True) == ("OK", [b"1"])
        assert imap.select("INBOX", readonly=True) == ("OK", [b"1"])
    # a failed change: nothing is activated
    other = await upload(jmap, b"keep;\r\n")
    failed = await ok(
        jmap,
        "SieveScript/set",
        {
            "create": {"g": {"name": "g", "blobId": other}, "bad": {"blobId": "Unone"}},
            "onSuccessActivateScript": "#g",
        },
    )
    assert failed["notCreated"]["bad"]["type"] == "blobNotFound" and failed["updated"] is None
    assert (await server_scripts(user))["bills"][0] is True


async def test_active_script_cannot_be_destroyed_until_deactivated_sieve_06(
    jmap: Jmap, user: User
) -> None:
    blob = await upload(jmap, b"keep;\r\n")
    response = await ok(
        jmap,
        "SieveScript/set",
        {"create": {"k": {"name": "k", "blobId": blob}}, "onSuccessActivateScript": "#k"},
    )
    script_id = response["created"]["k"]["id"]
    refused = await ok(jmap, "SieveScript/set", {"destroy": [script_id]})
    assert refused["notDestroyed"][script_id]["type"] == "sieveIsActive"
    off = await ok(jmap, "SieveScript/set", {"onSuccessDeactivateScript": True})
    assert off["updated"] == {script_id: {"isActive": False}}
    gone = await ok(jmap, "SieveScript/set", {"destroy": [script_id]})
    assert gone["destroyed"] == [script_id]


async def test_query_by_name_and_activity_sieve_07(jmap: Jmap) -> None:
    blob = await upload(jmap, b"keep;\r\n")
    created = await ok(
        jmap,
        "SieveScript/set",
        {
            "create": {n: {"name": n, "blobId": blob} for n in ("beta", "alpha", "gamma")},
            "onSuccessActivateScript": "#gamma",
        },
    )
    ids = {n: created["created"][n]["id"] for n in ("alpha", "beta", "gamma")}
    by_name = await ok(jmap, "SieveScript/query", {"sort": [{"property": "name"}]})
    assert by_name["ids"] == [ids["alpha"], ids["beta"], ids["gamma"]]
    active = await ok(jmap, "SieveScript/query", {"filter": {"isActive": True}})
    assert active["ids"] == [ids["gamma"]]
    named = await ok(
        jmap,
        "SieveScript/query",
        {"filter": {"name": "A"}, "sort": [{"property": "name", "isAscending": False}]},
    )
    assert named["ids"] == [ids["gamma"], ids["beta"], ids["alpha"]]
    name, error, _ = await call(jmap, "SieveScript/query", {"filter": {"colour": "red"}})
    assert (name, error["type"]) == ("error", "unsupportedFilter")


async def test_validate_stores_nothing_sieve_08(jmap: Jmap, user: User) -> None:
    good, bad = await upload(jmap, FILTER), await upload(jmap, BROKEN)
    assert (await ok(jmap, "SieveScript/validate", {"blobId": good}))["error"] is None
    error = (await ok(jmap, "SieveScript/validate", {"blobId": bad}))["error"]
    assert error["type"] == "invalidSieve" and "line 2" in error["description"]
    missing = (await ok(jmap, "SieveScript/validate", {"blobId": "Unone"}))["error"]
    assert missing["type"] == "blobNotFound"
    assert await server_scripts(user) == {}


async def test_another_clients_script_survives_every_jmap_change_sieve_09(
    jmap: Jmap, user: User
) -> None:
    client = await user.other_client()
    try:
        await client.put_script("theirs", FILTER)
    finally:
        await client.close()
    blob = await upload(jmap, b"keep;\r\n")
    created = await ok(jmap, "SieveScript/set", {"create": {"m": {"name": "mine", "blobId": blob}}})
    mine = created["created"]["m"]["id"]
    await ok(jmap, "SieveScript/set", {"update": {mine: {"blobId": await upload(jmap, FILTER)}}})
    await ok(jmap, "SieveScript/set", {"destroy": [mine]})
    vacation = [CORE, MAIL, VACATION]
    for enabled in (True, False):
        name, response, _ = await call(
            jmap,
            "VacationResponse/set",
            {"update": {"singleton": {"isEnabled": enabled}}},
            vacation,
        )
        assert name == "VacationResponse/set" and response["updated"] == {"singleton": None}
    scripts = await server_scripts(user)
    assert scripts["theirs"] == (False, FILTER)
    assert "mine" not in scripts


async def test_changes_answer_from_the_current_state_and_refuse_older_ones(
    jmap: Jmap, user: User
) -> None:
    """RFC 8620 §5.2, §5.6: SieveScript/changes and /queryChanges (which other servers
    answer and clients call) say "nothing changed" from the current state; from an older
    one, or after another ManageSieve client's change, cannotCalculateChanges."""
    got = await ok(jmap, "SieveScript/get", {"ids": None})
    state = got["state"]
    same = await ok(jmap, "SieveScript/changes", {"sinceState": state})
    assert (same["oldState"], same["newState"]) == (state, state)
    assert same["created"] == same["updated"] == same["destroyed"] == []
    assert same["hasMoreChanges"] is False
    listed = await ok(jmap, "SieveScript/query", {})
    unchanged = await ok(
        jmap,
        "SieveScript/queryChanges",
        {"sinceQueryState": listed["queryState"], "calculateTotal": True},
    )
    assert unchanged["removed"] == unchanged["added"] == []
    assert unchanged["total"] == len(listed["ids"])

    client = await user.other_client()
    try:
        await client.put_script("from-elsewhere", b"keep;\r\n")
    finally:
        await client.close()
    for method, args in (
        ("SieveScript/changes", {"sinceState": state}),
        ("SieveScript/queryChanges", {"sinceQueryState": listed["queryState"]}),
    ):
        name, error, _ = await call(jmap, method, args)
        assert (name, error["type"]) == ("error", "cannotCalculateChanges"), error


async def test_rename_keeps_the_id_and_the_active_script_running_sieve_10(
    jmap: Jmap, user: User
) -> None:
    with user.imap() as imap:
        imap.create("Bills")
    keep = await upload(jmap, b"keep;\r\n")
    created = await ok(
        jmap,
        "SieveScript/set",
        {
            "create": {
                "f": {"name": "bills", "blobId": await upload(jmap, FILTER)},
                "o": {"name": "other", "blobId": keep},
            },
            "onSuccessActivateScript": "#f",
        },
    )
    bills, other = created["created"]["f"]["id"], created["created"]["o"]["id"]
    before = (await ok(jmap, "SieveScript/get", {}))["state"]
    renamed = await ok(jmap, "SieveScript/set", {"update": {bills: {"name": "invoices"}}})
    assert renamed["updated"] == {bills: None} and renamed["newState"] != before
    assert await server_scripts(user) == {
        "invoices": (True, FILTER),
        "other": (False, b"keep;\r\n"),
    }
    (got,) = (await ok(jmap, "SieveScript/get", {"ids": [bills]}))["list"]
    assert (got["name"], got["isActive"]) == ("invoices", True)
    user.deliver("bob@example.org", "Your invoice for June")
    with user.imap() as imap:
        assert imap.select("Bills", readonly=True) == ("OK", [b"1"])

    clash = await ok(jmap, "SieveScript/set", {"update": {bills: {"name": "other"}}})
    assert clash["notUpdated"][bills]["type"] == "alreadyExists"
    assert clash["notUpdated"][bills]["existingId"] == other
    empty = await ok(jmap, "SieveScript/set", {"update": {bills: {"name": ""}}})
    assert empty["notUpdated"][bills]["type"] == "invalidProperties"

    again = await ok(jmap, "SieveScript/set", {"create": {"n": {"name": "bills", "blobId": keep}}})
    new = again["created"]["n"]["id"]
    assert new not in (bills, other)  # the old name's id is the renamed script's
    listed = {s["id"]: s["name"] for s in (await ok(jmap, "SieveScript/get", {}))["list"]}
    assert listed == {bills: "invoices", other: "other", new: "bills"}

    both = {"name": "invoices 2", "blobId": keep}  # a rename and new content in one patch
    assert (await ok(jmap, "SieveScript/set", {"update": {bills: both}}))["updated"] == {
        bills: None
    }
    assert (await server_scripts(user))["invoices 2"] == (True, b"keep;\r\n")
    gone = await ok(jmap, "SieveScript/set", {"onSuccessDeactivateScript": True})
    assert gone["updated"] == {bills: {"isActive": False}}
    assert (await ok(jmap, "SieveScript/set", {"destroy": [bills]}))["destroyed"] == [bills]
    listed = {s["id"]: s["name"] for s in (await ok(jmap, "SieveScript/get", {}))["list"]}
    assert listed == {other: "other", new: "bills"}


async def test_renaming_the_script_vacation_includes_keeps_both_running_sieve_10(
    jmap: Jmap, user: User
) -> None:
    """The user's active script, run beside the vacation by the main script, renamed: the
    main script follows it; the vacation's own scripts keep their names."""
    client = await user.other_client()
    try:
        await client.put_script("mine", FILTER)
        await client.set_active("mine")
    finally:
        await client.close()
    with user.imap() as imap:
        imap.create("Bills")
    vacation = [CORE, MAIL, VACATION]
    on = {"update": {"singleton": {"isEnabled": True, "textBody": "away"}}}
    name, response, _ = await call(jmap, "VacationResponse/set", on, vacation)
    assert name == "VacationResponse/set" and response["updated"] == {"singleton": None}
    ids = {s["name"]: s["id"] for s in (await ok(jmap, "SieveScript/get", {}))["list"]}
    await ok(jmap, "SieveScript/set", {"update": {ids["mine"]: {"name": "my filter"}}})
    user.deliver("bob@example.org", "an invoice")
    with user.imap() as imap:
        assert imap.select("Bills", readonly=True) == ("OK", [b"1"])
    for managed in ("jmap-vacation", "jmap-main"):
        refused = await ok(jmap, "SieveScript/set", {"update": {ids[managed]: {"name": "x"}}})
        assert refused["notUpdated"][ids[managed]]["type"] == "forbidden"
    off = {"update": {"singleton": {"isEnabled": False}}}
    await call(jmap, "VacationResponse/set", off, vacation)
    scripts = await server_scripts(user)
    assert scripts["my filter"] == (True, FILTER) and "mine" not in scripts


async def test_rename_on_a_server_without_renamescript_copies_sieve_10(user: User) -> None:
    """RFC 5804 §2.11.1: before protocol version 1.0 there is no RENAMESCRIPT: the script is
    copied under the new name, the copy made active if the original was, the original
    deleted.  The server here has it; its client is told it has not."""
    client = await user.other_client()
    try:
        await client.put_script("old", FILTER)
        await client.set_active("old")
        del client.capabilities["VERSION"]

        async def no_renamescript(old: str, new: str) -> None:
            raise AssertionError("RENAMESCRIPT sent to a server without it")

        client.rename_script = no_renamescript  # type: ignore[method-assign]
        await ManageSieveScripts(client).rename("old", "new")
        assert await client.list_scripts() == [("new", True)]
        assert await client.get_script("new") == FILTER
    finally:
        await client.close()


async def test_an_activation_naming_no_script_is_ignored_sieve_11(jmap: Jmap, user: User) -> None:
    blob = await upload(jmap, b"keep;\r\n")
    created = await ok(
        jmap,
        "SieveScript/set",
        {
            "create": {n: {"name": n, "blobId": blob} for n in ("one", "two")},
            "onSuccessActivateScript": "#one",
        },
    )
    one, two = created["created"]["one"]["id"], created["created"]["two"]["id"]
    for nobody in ("Snope", "#nope", "", "not an id!"):
        ignored = await ok(jmap, "SieveScript/set", {"onSuccessActivateScript": nobody})
        assert ignored["updated"] is None, nobody
        assert ignored["oldState"] == ignored["newState"]
    assert {n: a for n, (a, _) in (await server_scripts(user)).items()} == {
        "one": True,
        "two": False,
    }
    both = await ok(
        jmap,
        "SieveScript/set",
        {"onSuccessDeactivateScript": True, "onSuccessActivateScript": two},
    )
    assert both["updated"] == {one: {"isActive": False}, two: {"isActive": True}}
    nothing = await ok(
        jmap,
        "SieveScript/set",
        {"onSuccessDeactivateScript": True, "onSuccessActivateScript": "Snope"},
    )
    assert nothing["updated"] == {two: {"isActive": False}}  # the deactivation alone
    name, error, _ = await call(jmap, "SieveScript/set", {"onSuccessActivateScript": 5})
    assert (name, error["type"]) == ("error", "invalidArguments")


async def test_too_large_and_unnameable_scripts_are_refused_sieve_12(
    jmap: Jmap, user: User
) -> None:
    big = await upload(jmap, b"keep;\r\n" + b"# filler\r\n" * (MAX_SCRIPT_SIZE // 10))
    response = await ok(jmap, "SieveScript/set", {"create": {"b": {"name": "big", "blobId": big}}})
    assert response["notCreated"]["b"]["type"] == "tooLarge"
    small = await upload(jmap, b"keep;\r\n")
    for name in ("tab\there", "line\u2028break", "del\x7f"):
        response = await ok(
            jmap, "SieveScript/set", {"create": {"n": {"name": name, "blobId": small}}}
        )
        error = response["notCreated"]["n"]
        assert (error["type"], error["properties"]) == ("invalidProperties", ["name"]), name
    assert await server_scripts(user) == {}
