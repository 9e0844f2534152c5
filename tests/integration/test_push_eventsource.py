"""EventSource (RFC 8620 §7.3, CORE-PUSH-01, CORE-PUSH-03) against the real Dovecot: the
changes come from another IMAP client, so they reach the proxy only through its watcher."""

from __future__ import annotations

import asyncio
import imaplib

import pytest

from imapjmap.push.hub import PUSH_TYPES
from tests.integration.conftest import Jmap
from tests.integration.pushkit import (
    EventReader,
    current_states,
    external_append,
    listeners,
    open_events,
    wait_for,
    wait_watching,
    watcher_of,
)

pytestmark = pytest.mark.dovecot


async def _changes_until(events: EventReader, account_id: str, wanted: set[str]) -> dict[str, str]:
    """Read ``state`` events until every type in ``wanted`` was pushed; the latest states."""
    seen: dict[str, str] = {}
    while not wanted <= seen.keys():
        event = await events.next(timeout=10)
        assert event.name == "state", event
        assert event.id, "every state event carries an id"
        assert event.data["@type"] == "StateChange"
        assert list(event.data["changed"]) == [account_id]
        seen.update(event.data["changed"][account_id])
    return seen


async def test_first_event_has_every_current_state_core_push_03(jmap: Jmap) -> None:
    states = await current_states(jmap)
    events = await open_events(jmap)
    first = await events.next()
    assert first.name == "state" and first.id
    changed = first.data["changed"][jmap.account_id]
    # Quota (RFC 9425) has a state once the quotas were read: no Quota call yet here
    assert set(changed) == set(PUSH_TYPES) - {"Quota"}
    for data_type, state in states.items():
        assert changed[data_type] == state, data_type
    events.resp.close()


async def test_external_append_reaches_the_listener_core_push_01(
    jmap: Jmap, imap_oracle: imaplib.IMAP4
) -> None:
    await current_states(jmap)
    events = await open_events(jmap)
    await events.next()
    await wait_watching(jmap)
    started = asyncio.get_running_loop().time()
    await external_append(imap_oracle, "pushed to the listener")
    pushed = await _changes_until(events, jmap.account_id, {"Email", "Mailbox", "EmailDelivery"})
    assert asyncio.get_running_loop().time() - started < 5
    # the pushed states are the ones /get returns (CORE-PUSH-01)
    states = await current_states(jmap)
    assert pushed["Email"] == states["Email"]
    assert pushed["Mailbox"] == states["Mailbox"]
    ids = await jmap.ok("Email/query", {})
    assert len(ids["ids"]) == 1
    events.resp.close()


async def test_types_filter_pushes_only_those_types_core_push_03(
    jmap: Jmap, imap_oracle: imaplib.IMAP4
) -> None:
    await current_states(jmap)
    events = await open_events(jmap, "types=Mailbox&closeafter=no&ping=0")
    first = await events.next()
    assert set(first.data["changed"][jmap.account_id]) == {"Mailbox"}
    await wait_watching(jmap)
    await external_append(imap_oracle, "only mailbox counts")
    event = await events.next()
    assert set(event.data["changed"][jmap.account_id]) == {"Mailbox"}
    events.resp.close()


async def test_closeafter_state_ends_after_one_state_event_core_push_03(jmap: Jmap) -> None:
    events = await open_events(jmap, "types=*&closeafter=state&ping=0")
    first = await events.next()
    assert first.name == "state"
    with pytest.raises(EOFError):
        await events.next(timeout=5)


async def test_ping_is_clamped_and_sets_no_id_core_push_03(jmap: Jmap) -> None:
    await current_states(jmap)  # synced: the watcher's first refresh finds nothing new
    events = await open_events(jmap, "types=Mailbox&closeafter=no&ping=1")
    await events.next()
    started = asyncio.get_running_loop().time()
    ping = await events.next(timeout=8)  # 1 is clamped up to the 5-second minimum
    assert asyncio.get_running_loop().time() - started > 4
    assert ping.name == "ping"
    assert ping.data == {"interval": 5}
    assert ping.id is None
    events.resp.close()


async def test_last_event_id_resumes_with_the_missed_changes_core_push_03(
    jmap: Jmap, imap_oracle: imaplib.IMAP4
) -> None:
    await current_states(jmap)
    events = await open_events(jmap)
    first = await events.next()
    assert first.id is not None
    events.resp.close()
    await wait_for(lambda: watcher_of(jmap) is None, what="the watcher to stop")
    # a change while nobody listens; a request makes the proxy see it
    await external_append(imap_oracle, "missed while away")
    states = await current_states(jmap)
    resumed = await open_events(jmap, **{"Last-Event-ID": first.id})
    catch_up = await resumed.next(timeout=5)
    changed = catch_up.data["changed"][jmap.account_id]
    assert changed["Email"] == states["Email"]
    assert changed["Mailbox"] == states["Mailbox"]
    assert "Identity" not in changed  # unchanged types are not repeated
    assert catch_up.id is not None and catch_up.id != first.id
    resumed.resp.close()
    # resuming from the latest id: nothing to catch up on, so nothing is sent
    current = await open_events(jmap, **{"Last-Event-ID": catch_up.id})
    assert await current.none_within(1.5)
    current.resp.close()


async def test_eventsource_needs_credentials(jmap: Jmap) -> None:
    resp = await jmap.http.get("/jmap/eventsource/?types=*&closeafter=no&ping=0")
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Basic")


@pytest.mark.parametrize(
    "query",
    [
        "types=*&closeafter=maybe&ping=0",
        "types=*&closeafter=no&ping=-1",
        "types=a,,b&ping=0",
        "types=*&closeafter=no&ping=ten",
    ],
)
async def test_invalid_parameters_are_a_400_problem(jmap: Jmap, query: str) -> None:
    resp = await jmap.http.get(f"/jmap/eventsource/?{query}", headers=jmap.auth())
    assert resp.status == 400
    assert resp.content_type == "application/problem+json"


async def test_watcher_stops_when_the_last_listener_leaves(jmap: Jmap) -> None:
    """One watcher while anyone listens, on any instance (with two, the streams open on
    different ones and the watcher is on either); none once the last listener left."""
    one = await open_events(jmap)
    two = await open_events(jmap)
    await one.next()
    await two.next()
    await wait_for(lambda: watcher_of(jmap) is not None, what="the watcher")
    assert listeners(jmap, jmap.account_id) == 2
    one.resp.close()
    await wait_for(lambda: listeners(jmap, jmap.account_id) == 1, what="one listener")
    await wait_for(lambda: watcher_of(jmap) is not None, what="the watcher to stay")
    two.resp.close()
    await wait_for(lambda: watcher_of(jmap) is None, what="the watcher to stop")
    assert listeners(jmap, jmap.account_id) == 0
