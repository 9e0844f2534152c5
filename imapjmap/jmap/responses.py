"""The standard responses (RFC 8620 §5.1-§5.6), shaped in one place for every data type.

Pure: a handler works out what it found or did; these functions give the response its keys,
so every type answers the same way.

Rule 1: /get (§5.1): every id asked for is answered once, where it was first asked
        (CORE-GET-02): its object in ``list`` when it exists, else the id in ``notFound``.
        ``notFound`` is ``[]`` when every id was found; SearchSnippet/get is the one
        exception, whose ``notFound`` is null then (RFC 8621 §5.1).
Rule 2: /set (§5.3): ``created``, ``updated``, ``destroyed``, ``notCreated``, ``notUpdated``
        and ``notDestroyed`` are always there, each null when empty ("or null if none").
        The create-only calls (Email/import, Blob/upload) answer ``created`` and
        ``notCreated`` the same way.
Rule 3: ``accountId`` and the states head every response, except where the type has none:
        PushSubscription takes no account and has no state (RFC 8620 §7.2), Blob/get,
        Blob/lookup and Blob/upload have no state (RFC 9404).
Rule 4: /changes (§5.2) answers its three lists even when empty; /query (§5.5) and
        /queryChanges (§5.6) carry ``total`` only when it was asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from imapjmap.jmap.wire import Json, JsonObject

T = TypeVar("T")


def _head(account_id: str | None, **states: str | None) -> JsonObject:
    head: JsonObject = {}
    if account_id is not None:
        head["accountId"] = account_id
    for key, state in states.items():
        if state is not None:
            head[key] = state
    return head


# --- /get ------------------------------------------------------------------------------------


def pick(wanted: Iterable[str], known: Mapping[str, T]) -> tuple[list[T], list[str]]:
    """The objects of the ``wanted`` ids that are ``known`` and the ids that are not, each id
    once, in the order first asked (Rule 1)."""
    found: list[T] = []
    not_found: list[str] = []
    for id_ in dict.fromkeys(wanted):
        if id_ in known:
            found.append(known[id_])
        else:
            not_found.append(id_)
    return found, not_found


def get_response(
    found: Sequence[Json],
    not_found: Sequence[str],
    *,
    account_id: str | None,
    state: str | None = None,
    null_when_all_found: bool = False,
) -> JsonObject:
    """A /get response (Rules 1 and 3)."""
    response = _head(account_id, state=state)
    response["list"] = list(found)
    response["notFound"] = None if null_when_all_found and not not_found else list(not_found)
    return response


# --- /set ------------------------------------------------------------------------------------


@dataclass(slots=True)
class SetResult:
    """What one /set did, record by record (CORE-SET-02: partial success is normal).

    ``created`` maps a creation id to the server-set properties of the new object,
    ``updated`` an id to null or the server-set properties that changed; the ``not_*`` maps
    hold each failed record's SetError as JSON.
    """

    created: Mapping[str, Json] = field(default_factory=dict)
    updated: Mapping[str, Json] = field(default_factory=dict)
    destroyed: Sequence[str] = field(default_factory=list)
    not_created: Mapping[str, Json] = field(default_factory=dict)
    not_updated: Mapping[str, Json] = field(default_factory=dict)
    not_destroyed: Mapping[str, Json] = field(default_factory=dict)

    def to_json(self) -> JsonObject:
        """The six result keys, each null when empty (Rule 2)."""
        return {
            "created": dict(self.created) or None,
            "updated": dict(self.updated) or None,
            "destroyed": list(self.destroyed) or None,
            "notCreated": dict(self.not_created) or None,
            "notUpdated": dict(self.not_updated) or None,
            "notDestroyed": dict(self.not_destroyed) or None,
        }


def set_response(
    result: SetResult, *, account_id: str, old_state: str, new_state: str
) -> JsonObject:
    """A /set response (Rules 2 and 3)."""
    response = _head(account_id, oldState=old_state, newState=new_state)
    response.update(result.to_json())
    return response


def create_response(
    created: Mapping[str, Json],
    not_created: Mapping[str, Json],
    *,
    account_id: str,
    old_state: str | None = None,
    new_state: str | None = None,
) -> JsonObject:
    """The response of a call that only creates (Email/import, Blob/upload; Rule 2)."""
    response = _head(account_id, oldState=old_state, newState=new_state)
    response["created"] = dict(created) or None
    response["notCreated"] = dict(not_created) or None
    return response


# --- /changes, /query, /queryChanges --------------------------------------------------------


def changes_response(
    *,
    account_id: str,
    old_state: str,
    new_state: str,
    has_more: bool,
    created: Sequence[str],
    updated: Sequence[str],
    destroyed: Sequence[str],
) -> JsonObject:
    """A /changes response (Rule 4)."""
    response = _head(account_id, oldState=old_state, newState=new_state)
    response["hasMoreChanges"] = has_more
    response["created"] = list(created)
    response["updated"] = list(updated)
    response["destroyed"] = list(destroyed)
    return response


def query_response(
    window: JsonObject, *, account_id: str, query_state: str, can_calculate_changes: bool
) -> JsonObject:
    """A /query response around the page ``window`` (``ids``, ``position``, and ``total``
    and ``limit`` when they apply: :func:`imapjmap.jmap.standard.query_window`)."""
    response = _head(account_id, queryState=query_state)
    response["canCalculateChanges"] = can_calculate_changes
    response.update(window)
    return response


def query_changes_response(
    *,
    account_id: str,
    old_query_state: str,
    new_query_state: str,
    removed: Sequence[str],
    added: Sequence[JsonObject],
    total: int | None,
) -> JsonObject:
    """A /queryChanges response; ``total`` is given only when it was asked for (Rule 4)."""
    response = _head(account_id, oldQueryState=old_query_state, newQueryState=new_query_state)
    response["removed"] = list(removed)
    response["added"] = list(added)
    if total is not None:
        response["total"] = total
    return response
