"""Mailbox (RFC 8621 §2, checklist MBX-*) through the proxy, every effect checked with a
second plain IMAP connection (the oracle), and external changes made through it."""

from __future__ import annotations

import email.utils
import imaplib
import re
import secrets
import time
from typing import Any

import pytest

from imapjmap.http import views
from imapjmap.store import retention
from imapjmap.store.db import Tx
from tests.integration.conftest import Jmap

PLAIN = (
    b"From: a@example.org\r\nTo: b@example.org\r\nSubject: hi\r\n"
    b"Message-ID: <m1@example.org>\r\n\r\nbody\r\n"
)


def imap_names(oracle: imaplib.IMAP4) -> dict[str, str]:
    """Oracle view: decoded-ish mailbox name → attributes."""
    typ, data = oracle.list('""', "*")
    assert typ == "OK"
    out = {}
    for line in data:
        assert isinstance(line, bytes)
        match = re.match(rb'\((?P<attrs>[^)]*)\) (?:"[^"]*"|NIL) (?P<name>.*)$', line)
        assert match, line
        name = match["name"].decode()
        out[name.strip('"')] = match["attrs"].decode()
    return out


def subscribed(oracle: imaplib.IMAP4) -> set[str]:
    typ, data = oracle.lsub('""', "*")
    assert typ == "OK"
    return {line.decode().rsplit(" ", 1)[1].strip('"') for line in data if line}


async def by_name(jmap: Jmap) -> dict[str, dict[str, Any]]:
    result = await jmap.ok("Mailbox/get", {})
    return {m["name"]: m for m in result["list"]}


def append(oracle: imaplib.IMAP4, mailbox: str, flags: str = "", raw: bytes | None = None) -> None:
    # a new Message-ID each time: byte-identical messages may be ONE Email (Cyrus gives them
    # one EMAILID, RFC 8474 allows it), and these tests count different messages
    raw = raw or PLAIN.replace(b"<m1@", f"<m{secrets.token_hex(8)}@".encode())
    typ, _ = oracle.append(mailbox, flags or None, None, raw)
    assert typ == "OK"


# -- Mailbox/get ---------------------------------------------------------------------------


async def test_get_roles_from_special_use_and_inbox_mbx_02(jmap: Jmap) -> None:
    boxes = await by_name(jmap)
    roles = {m["role"] for m in boxes.values() if m["role"]}
    assert {"inbox", "drafts", "sent", "trash", "junk", "archive"} <= roles
    assert (
        boxes["Inbox"]["role"] == "inbox"
        if "Inbox" in boxes
        else any(m["role"] == "inbox" for m in boxes.values())
    )
    # at most one mailbox per role (MBX-02)
    assert len(roles) == len([m for m in boxes.values() if m["role"]])


async def test_get_every_property_and_valid_ids_core_get_01(jmap: Jmap) -> None:
    result = await jmap.ok("Mailbox/get", {})
    assert result["notFound"] == []
    for mailbox in result["list"]:
        assert set(mailbox) == {
            "id",
            "name",
            "parentId",
            "role",
            "sortOrder",
            "totalEmails",
            "unreadEmails",
            "totalThreads",
            "unreadThreads",
            "myRights",
            "isSubscribed",
        }
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,255}", mailbox["id"])
        assert set(mailbox["myRights"]) == {
            "mayReadItems",
            "mayAddItems",
            "mayRemoveItems",
            "maySetSeen",
            "maySetKeywords",
            "mayCreateChild",
            "mayRename",
            "mayDelete",
            "maySubmit",
        }


async def test_get_properties_filter_always_includes_id_core_get_01(jmap: Jmap) -> None:
    result = await jmap.ok("Mailbox/get", {"properties": ["name"]})
    assert all(set(m) == {"id", "name"} for m in result["list"])


async def test_get_unknown_property_is_invalid_arguments_core_get_03(jmap: Jmap) -> None:
    name, args = await jmap.call("Mailbox/get", {"properties": ["nope"]})
    assert (name, args["type"]) == ("error", "invalidArguments")


async def test_get_not_found_and_empty_ids_core_get_02(jmap: Jmap) -> None:
    boxes = await by_name(jmap)
    some = next(iter(boxes.values()))["id"]
    result = await jmap.ok("Mailbox/get", {"ids": [some, "Mnothere", some]})
    assert [m["id"] for m in result["list"]] == [some]
    assert result["notFound"] == ["Mnothere"]
    assert (await jmap.ok("Mailbox/get", {"ids": []}))["list"] == []


async def test_get_counts_follow_imap_mbx_04(jmap: Jmap, imap_oracle: imaplib.IMAP4) -> None:
    append(imap_oracle, "INBOX")
    append(imap_oracle, "INBOX", "(\\Seen)")
    inbox = next(m for m in (await by_name(jmap)).values() if m["role"] == "inbox")
    assert inbox["totalEmails"] == 2
    assert inbox["unreadEmails"] == 1


async def test_get_hierarchy_and_non_ascii_names(jmap: Jmap, imap_oracle: imaplib.IMAP4) -> None:
    # "Reisen/Übersicht" in modified UTF-7 (RFC 3501 §5.1.3)
    assert imap_oracle.create('"Reisen"')[0] == "OK"
    assert imap_oracle.create('"Reisen/&ANw-bersicht"')[0] == "OK"
    boxes = await by_name(jmap)
    assert boxes["Übersicht"]["parentId"] == boxes["Reisen"]["id"]
    assert boxes["Reisen"]["parentId"] is None


# -- Mailbox/set -----------------------------------------------------------------------------


async def test_create_is_visible_over_imap_and_encoded(
    jmap: Jmap, imap_oracle: imaplib.IMAP4
) -> None:
    result = await jmap.ok("Mailbox/set", {"create": {"n": {"name": "Käse & Brot"}}})
    created = result["created"]["n"]
    assert created["id"] and created["totalEmails"] == 0
    assert "myRights" in created
    assert "K&AOQ-se &- Brot" in imap_names(imap_oracle)  # "&" itself is "&-"
    assert result["oldState"] != result["newState"]


async def test_create_child_and_sibling_clash_mbx_01(
    jmap: Jmap, imap_oracle: imaplib.IMAP4
) -> None:
    result = await jmap.ok(
        "Mailbox/set",
        {"create": {"p": {"name": "Parent"}, "c": {"name": "Child", "parentId": "#p"}}},
    )
    parent = result["created"]["p"]["id"]
    assert "Parent/Child" in imap_names(imap_oracle)
    clash = await jmap.ok(
        "Mailbox/set",
        {"create": {"again": {"name": "Child", "parentId": parent}, "top": {"name": "Parent"}}},
    )
    assert clash["notCreated"]["again"]["type"] == "alreadyExists"
    assert clash["notCreated"]["top"]["type"] == "alreadyExists"


@pytest.mark.parametrize(
    "bad",
    [
        {"name": ""},
        {"name": "a/b"},
        {"name": 5},
        {"name": "ok", "totalEmails": 3},
        {"name": "ok", "bogus": 1},
        {"name": "ok", "parentId": "Mnothere"},
        {"name": "ok", "sortOrder": -1},
        {"name": "ok", "isSubscribed": "yes"},
    ],
)
async def test_create_invalid_properties_core_set_04(jmap: Jmap, bad: dict[str, Any]) -> None:
    result = await jmap.ok("Mailbox/set", {"create": {"x": bad}})
    assert result["notCreated"]["x"]["type"] == "invalidProperties", result


async def test_create_top_level_inbox_name_clashes(jmap: Jmap) -> None:
    result = await jmap.ok("Mailbox/set", {"create": {"x": {"name": "inbox"}}})
    assert result["notCreated"]["x"]["type"] == "alreadyExists"


async def test_rename_keeps_id_and_moves_children(jmap: Jmap, imap_oracle: imaplib.IMAP4) -> None:
    made = await jmap.ok(
        "Mailbox/set", {"create": {"a": {"name": "Alpha"}, "b": {"name": "Beta", "parentId": "#a"}}}
    )
    alpha, beta = made["created"]["a"]["id"], made["created"]["b"]["id"]
    result = await jmap.ok("Mailbox/set", {"update": {alpha: {"name": "Gamma"}}})
    assert result["updated"] == {alpha: None}
    names = imap_names(imap_oracle)
    assert "Gamma" in names and "Gamma/Beta" in names and "Alpha" not in names
    boxes = await by_name(jmap)
    assert boxes["Gamma"]["id"] == alpha and boxes["Beta"]["id"] == beta
    assert boxes["Beta"]["parentId"] == alpha
    assert "Gamma" in subscribed(imap_oracle)


async def test_reparent_and_cycle(jmap: Jmap, imap_oracle: imaplib.IMAP4) -> None:
    made = await jmap.ok("Mailbox/set", {"create": {"a": {"name": "One"}, "b": {"name": "Two"}}})
    one, two = made["created"]["a"]["id"], made["created"]["b"]["id"]
    moved = await jmap.ok("Mailbox/set", {"update": {two: {"parentId": one}}})
    assert two in moved["updated"]
    assert "One/Two" in imap_names(imap_oracle)
    cycle = await jmap.ok("Mailbox/set", {"update": {one: {"parentId": two}}})
    assert cycle["notUpdated"][one]["type"] == "invalidProperties"
    back = await jmap.ok("Mailbox/set", {"update": {two: {"parentId": None}}})
    assert two in back["updated"] and "Two" in imap_names(imap_oracle)


async def test_update_server_set_property_is_invalid(jmap: Jmap) -> None:
    made = await jmap.ok("Mailbox/set", {"create": {"a": {"name": "Three"}}})
    box = made["created"]["a"]["id"]
    result = await jmap.ok("Mailbox/set", {"update": {box: {"totalEmails": 7}}})
    assert result["notUpdated"][box]["type"] == "invalidProperties"
    result = await jmap.ok("Mailbox/set", {"update": {"Mnothere": {"name": "x"}}})
    assert result["notUpdated"]["Mnothere"]["type"] == "notFound"


async def test_subscription_follows_is_subscribed(jmap: Jmap, imap_oracle: imaplib.IMAP4) -> None:
    made = await jmap.ok("Mailbox/set", {"create": {"a": {"name": "Subs", "isSubscribed": False}}})
    box = made["created"]["a"]["id"]
    assert "Subs" not in subscribed(imap_oracle)
    await jmap.ok("Mailbox/set", {"update": {box: {"isSubscribed": True}}})
    assert "Subs" in subscribed(imap_oracle)
    assert (await by_name(jmap))["Subs"]["isSubscribed"] is True
    await jmap.ok("Mailbox/set", {"update": {box: {"isSubscribed": False}}})
    assert "Subs" not in subscribed(imap_oracle)


async def test_sort_order_is_kept(jmap: Jmap) -> None:
    made = await jmap.ok("Mailbox/set", {"create": {"a": {"name": "Sorted", "sortOrder": 42}}})
    box = made["created"]["a"]["id"]
    assert (await by_name(jmap))["Sorted"]["sortOrder"] == 42
    await jmap.ok("Mailbox/set", {"update": {box: {"sortOrder": 7}}})
    assert (await by_name(jmap))["Sorted"]["sortOrder"] == 7


async def test_destroy_rules_mbx_07(jmap: Jmap, imap_oracle: imaplib.IMAP4) -> None:
    made = await jmap.ok(
        "Mailbox/set",
        {
            "create": {
                "p": {"name": "Old"},
                "c": {"name": "Kid", "parentId": "#p"},
                "f": {"name": "Full"},
            }
        },
    )
    parent, child, full = (made["created"][k]["id"] for k in ("p", "c", "f"))
    append(imap_oracle, "Full")
    result = await jmap.ok("Mailbox/set", {"destroy": [parent, full]})
    assert result["notDestroyed"][parent]["type"] == "mailboxHasChild"
    assert result["notDestroyed"][full]["type"] == "mailboxHasEmail"
    assert "Full" in imap_names(imap_oracle)
    # mailboxHasChild wins even with onDestroyRemoveEmails (strict reading)
    result = await jmap.ok("Mailbox/set", {"destroy": [parent], "onDestroyRemoveEmails": True})
    assert result["notDestroyed"][parent]["type"] == "mailboxHasChild"
    # a child and its parent destroyed in one call
    result = await jmap.ok("Mailbox/set", {"destroy": [parent, child]})
    assert sorted(result["destroyed"]) == sorted([parent, child])
    result = await jmap.ok("Mailbox/set", {"destroy": [full], "onDestroyRemoveEmails": True})
    assert result["destroyed"] == [full]
    names = imap_names(imap_oracle)
    assert not {"Old", "Old/Kid", "Full"} & set(names)


async def test_destroy_inbox_is_forbidden_and_unknown_not_found(jmap: Jmap) -> None:
    inbox = next(m for m in (await by_name(jmap)).values() if m["role"] == "inbox")["id"]
    result = await jmap.ok("Mailbox/set", {"destroy": [inbox, "Mnothere"]})
    assert result["notDestroyed"][inbox]["type"] == "forbidden"
    assert result["notDestroyed"]["Mnothere"]["type"] == "notFound"


async def test_update_of_destroyed_is_will_destroy_core_set_05(jmap: Jmap) -> None:
    made = await jmap.ok("Mailbox/set", {"create": {"a": {"name": "Doomed"}}})
    box = made["created"]["a"]["id"]
    result = await jmap.ok("Mailbox/set", {"update": {box: {"name": "x"}}, "destroy": [box]})
    assert result["notUpdated"][box]["type"] == "willDestroy"
    assert result["destroyed"] == [box]


# -- Mailbox/changes (external changes through the oracle) ------------------------------------


async def test_changes_see_external_create_rename_delete(
    jmap: Jmap, imap_oracle: imaplib.IMAP4
) -> None:
    state = (await jmap.ok("Mailbox/get", {"ids": []}))["state"]
    assert imap_oracle.create("Outside")[0] == "OK"
    changes = await jmap.ok("Mailbox/changes", {"sinceState": state})
    assert len(changes["created"]) == 1 and not changes["updated"] and not changes["destroyed"]
    outside = changes["created"][0]
    state = changes["newState"]

    assert imap_oracle.rename("Outside", "Renamed")[0] == "OK"
    changes = await jmap.ok("Mailbox/changes", {"sinceState": state})
    assert changes["updated"] == [outside] and not changes["created"]
    assert changes["updatedProperties"] is None
    assert (await by_name(jmap))["Renamed"]["id"] == outside
    state = changes["newState"]

    assert imap_oracle.delete("Renamed")[0] == "OK"
    changes = await jmap.ok("Mailbox/changes", {"sinceState": state})
    assert changes["destroyed"] == [outside]


async def test_changes_counts_only_updated_properties_mbx_05(
    jmap: Jmap, imap_oracle: imaplib.IMAP4
) -> None:
    state = (await jmap.ok("Mailbox/get", {"ids": []}))["state"]
    append(imap_oracle, "INBOX")
    changes = await jmap.ok("Mailbox/changes", {"sinceState": state})
    assert len(changes["updated"]) == 1
    assert sorted(changes["updatedProperties"]) == sorted(
        ["totalEmails", "unreadEmails", "totalThreads", "unreadThreads"]
    )


async def test_changes_nothing_new_core_chg_05(jmap: Jmap) -> None:
    state = (await jmap.ok("Mailbox/get", {"ids": []}))["state"]
    changes = await jmap.ok("Mailbox/changes", {"sinceState": state})
    assert changes["newState"] == state and changes["oldState"] == state
    assert changes["created"] == changes["updated"] == changes["destroyed"] == []
    assert changes["hasMoreChanges"] is False


async def test_changes_paging_with_max_changes_core_chg_01(
    jmap: Jmap, imap_oracle: imaplib.IMAP4
) -> None:
    state = (await jmap.ok("Mailbox/get", {"ids": []}))["state"]
    for i in range(5):
        assert imap_oracle.create(f"Page{i}")[0] == "OK"
    seen: list[str] = []
    while True:
        changes = await jmap.ok("Mailbox/changes", {"sinceState": state, "maxChanges": 2})
        batch = changes["created"] + changes["updated"] + changes["destroyed"]
        assert len(batch) <= 2
        seen += changes["created"]
        state = changes["newState"]
        if not changes["hasMoreChanges"]:
            break
    assert len(seen) == 5 and len(set(seen)) == 5


async def test_uidvalidity_reset_is_a_new_mailbox(jmap: Jmap, imap_oracle: imaplib.IMAP4) -> None:
    assert imap_oracle.create("Phoenix")[0] == "OK"
    old = (await by_name(jmap))["Phoenix"]["id"]
    state = (await jmap.ok("Mailbox/get", {"ids": []}))["state"]
    assert imap_oracle.delete("Phoenix")[0] == "OK"
    assert imap_oracle.create("Phoenix")[0] == "OK"
    changes = await jmap.ok("Mailbox/changes", {"sinceState": state})
    assert changes["destroyed"] == [old]
    assert len(changes["created"]) == 1 and changes["created"][0] != old


# -- Mailbox/query and /queryChanges ---------------------------------------------------------


async def test_query_filters_mbx_06(jmap: Jmap) -> None:
    made = await jmap.ok(
        "Mailbox/set",
        {
            "create": {
                "a": {"name": "Qa"},
                "b": {"name": "Qb", "parentId": "#a", "isSubscribed": False},
            }
        },
    )
    qa, qb = made["created"]["a"]["id"], made["created"]["b"]["id"]

    async def ids(flt: Any, **extra: Any) -> list[str]:
        return (await jmap.ok("Mailbox/query", {"filter": flt, **extra}))["ids"]

    assert await ids({"parentId": qa}) == [qb]
    assert qa in await ids({"parentId": None})
    assert set(await ids({"name": "q"})) >= {qa, qb}
    assert len(await ids({"role": "inbox"})) == 1
    with_role = await ids({"hasAnyRole": True})
    assert qa not in with_role and len(with_role) >= 6
    assert qb in await ids({"isSubscribed": False})
    assert qb not in await ids({"isSubscribed": True})
    assert await ids({"operator": "AND", "conditions": [{"name": "Q"}, {"parentId": qa}]}) == [qb]
    assert qa not in await ids({"operator": "NOT", "conditions": [{"name": "Qa"}]})
    everything = await ids(None)
    assert len(everything) == len((await jmap.ok("Mailbox/get", {}))["list"])


async def test_query_sorts_and_tree_modes(jmap: Jmap) -> None:
    made = await jmap.ok(
        "Mailbox/set",
        {
            "create": {
                "z": {"name": "Zulu", "sortOrder": 1},
                "y": {"name": "Yankee", "parentId": "#z"},
                "a": {"name": "Able", "sortOrder": 2},
            }
        },
    )
    zulu, yankee, able = (made["created"][k]["id"] for k in ("z", "y", "a"))
    by_name_sort = (await jmap.ok("Mailbox/query", {"sort": [{"property": "name"}]}))["ids"]
    assert by_name_sort.index(able) < by_name_sort.index(yankee) < by_name_sort.index(zulu)
    desc = (await jmap.ok("Mailbox/query", {"sort": [{"property": "name", "isAscending": False}]}))[
        "ids"
    ]
    assert desc == list(reversed(by_name_sort))
    tree = await jmap.ok("Mailbox/query", {"sort": [{"property": "name"}], "sortAsTree": True})
    assert tree["ids"].index(zulu) + 1 == tree["ids"].index(yankee)
    assert tree["canCalculateChanges"] is False
    filtered = await jmap.ok("Mailbox/query", {"filter": {"name": "Yankee"}, "filterAsTree": True})
    assert filtered["ids"] == []  # its parent Zulu does not match
    name, args = await jmap.call("Mailbox/query", {"sort": [{"property": "totalEmails"}]})
    assert (name, args["type"]) == ("error", "unsupportedSort")
    name, args = await jmap.call("Mailbox/query", {"filter": {"colour": "red"}})
    assert (name, args["type"]) == ("error", "unsupportedFilter")


async def test_query_paging_core_qry_01_02(jmap: Jmap) -> None:
    full = await jmap.ok("Mailbox/query", {"calculateTotal": True})
    ids, total = full["ids"], full["total"]
    assert total == len(ids) >= 6
    page = await jmap.ok("Mailbox/query", {"position": 2, "limit": 2})
    assert page["ids"] == ids[2:4] and page["position"] == 2
    tail = await jmap.ok("Mailbox/query", {"position": -2})
    assert tail["ids"] == ids[-2:] and tail["position"] == total - 2
    anchored = await jmap.ok("Mailbox/query", {"anchor": ids[3], "anchorOffset": -1, "limit": 2})
    assert anchored["ids"] == ids[2:4] and anchored["position"] == 2
    beyond = await jmap.ok("Mailbox/query", {"position": 1000})
    assert beyond["ids"] == []
    name, args = await jmap.call("Mailbox/query", {"anchor": "Mnothere"})
    assert (name, args["type"]) == ("error", "anchorNotFound")
    name, args = await jmap.call("Mailbox/query", {"limit": -1})
    assert (name, args["type"]) == ("error", "invalidArguments")


async def test_query_changes_core_qch_01(jmap: Jmap, imap_oracle: imaplib.IMAP4) -> None:
    query = {"sort": [{"property": "name"}]}
    before = await jmap.ok("Mailbox/query", query)
    assert before["canCalculateChanges"] is True
    assert imap_oracle.create("Middle")[0] == "OK"
    gone = before["ids"][0]
    gone_name = next(m for m in (await jmap.ok("Mailbox/get", {"ids": [gone]}))["list"])
    del gone_name
    after = await jmap.ok("Mailbox/query", query)
    changes = await jmap.ok(
        "Mailbox/queryChanges", {**query, "sinceQueryState": before["queryState"]}
    )
    assert changes["newQueryState"] == after["queryState"]
    rebuilt = [i for i in before["ids"] if i not in changes["removed"]]
    for item in sorted(changes["added"], key=lambda a: a["index"]):
        rebuilt.insert(item["index"], item["id"])
    assert rebuilt == after["ids"]
    name, args = await jmap.call("Mailbox/queryChanges", {"sinceQueryState": "garbage"})
    assert (name, args["type"]) == ("error", "cannotCalculateChanges")


async def test_dates_module_unused() -> None:
    assert email.utils.format_datetime is not None


async def test_changes_from_before_the_purged_history_core_chg_04(jmap: Jmap) -> None:
    """After the retention purge, a state older than a purged tombstone is refused."""
    before = (await jmap.ok("Mailbox/get", {"ids": []}))["state"]
    made = await jmap.ok("Mailbox/set", {"create": {"a": {"name": "Short-lived"}}})
    gone = made["created"]["a"]["id"]
    after = (await jmap.ok("Mailbox/set", {"destroy": [gone]}))["newState"]
    store = jmap.http.app[views.SERVICES].store
    account = jmap.account_id
    month = 31 * retention.DAY

    def age(tx: Tx) -> int:  # as if every change so far happened a month ago
        return tx.execute("UPDATE seq_log SET at = at - ? WHERE account_id = ?", (month, account))

    assert await store.run(age)
    assert await retention.purge_all(store, before=time.time() - 30 * retention.DAY) >= 1
    name, error = await jmap.call("Mailbox/changes", {"sinceState": before})
    assert (name, error["type"]) == ("error", "cannotCalculateChanges")
    changes = await jmap.ok("Mailbox/changes", {"sinceState": after})
    assert not changes["created"] and not changes["updated"] and not changes["destroyed"]
