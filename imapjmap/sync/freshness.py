"""Freshness: whether a request must ask the upstream, as a state machine.

Theory of operation
-------------------
An account's cache is *fresh* when nothing can have changed upstream since a refresh that
saw everything: only a push watcher can say so (it reports every change), so without one
every request asks.  Asking means a refresh whose ``LIST`` goes out after the request came
(a caller never trusts a LIST that may predate its request), but such a refresh is shared:

* :attr:`Ask.NO`: the cache is fresh; no round trip at all.
* :attr:`Ask.JOIN`: the run in flight will do.  Its LIST is still to come, or it went out
  while a watcher was connected and has reported nothing since the run began (so the
  upstream then was what it is now).
* :attr:`Ask.NEXT`: a run that starts after now: the one in flight (if any) may have
  listed before the request came, so the request waits it out and shares the next.

The machine is told what happens (the ``Event`` members) and keeps the one state those
facts leave; :data:`TRANSITIONS` is the whole of it, and :data:`ANSWERS` what a request
does in each state.  Rules the table encodes:

Rule 1: an event (reported by the watcher, or one it may have missed) or a write of our
        own makes the cache stale at once, and a refresh that was running when it
        happened unclean: it ends stale, never fresh, so nothing is lost in between.
Rule 2: a refresh ends fresh only with a watcher connected since before it listed, no
        event since it began, and nothing left over (``complete``: no first sync still
        filling in, no copy held for a recent write).  A failed refresh ends stale.
Rule 3: a watcher attached before a run's LIST makes that run count as watched, quiet
        from then on (the LIST comes after anything reported before); one attached after
        it does not (a change nobody reported may lie between the LIST and the watch).
Rule 4: losing the watcher makes every request ask again, at once.
Rule 5: one run at a time: a run starts only from a state without one, lists (perhaps
        twice, when its connection was lost and it runs once more) and ends.

Nothing here awaits or counts; :class:`imapjmap.sync.engine.AccountSync` runs the
refreshes and reports them, the push watcher reports the rest.
"""

from __future__ import annotations

import enum
from typing import Final


class State(enum.Enum):
    # no watcher: every request asks
    STALE = "stale"  # no run in flight
    REFRESHING = "refreshing"  # a run before its LIST
    LISTED = "listed"  # a run past its LIST
    # a watcher connected
    WATCHED_STALE = "watched, stale"  # no run; not proved fresh since the last event
    WATCHED_REFRESHING = "watched, refreshing"  # before its LIST, quiet since it began
    WATCHED_REFRESHING_UNCLEAN = "watched, refreshing, unclean"  # an event since it began
    WATCHED_LISTED = "watched, listed"  # past its LIST, quiet since it began
    WATCHED_LISTED_UNCLEAN = "watched, listed, unclean"  # past its LIST, an event since
    FRESH = "fresh"  # no run; quiet since a clean, complete refresh


class Event(enum.Enum):
    WATCHER_ATTACHED = "watcher attached"
    WATCHER_LOST = "watcher lost"
    UPSTREAM_EVENT = "upstream event"  # reported, or possibly missed, by the watcher
    OWN_WRITE = "own write"  # a write of ours landed upstream
    REFRESH_STARTED = "refresh started"
    LISTED = "listed"  # the run's LIST goes out now
    REFRESH_ENDED = "refresh ended"  # complete: nothing left over
    REFRESH_INCOMPLETE = "refresh incomplete"  # failed, or a fill or a held copy is left


class Ask(enum.Enum):
    NO = "no"
    JOIN = "join"
    NEXT = "next"


class FreshnessError(RuntimeError):
    """An event the state does not allow (a run started over another, a LIST without one)."""


_S, _E = State, Event
_RUNNING: Final = {
    _S.REFRESHING,
    _S.LISTED,
    _S.WATCHED_REFRESHING,
    _S.WATCHED_REFRESHING_UNCLEAN,
    _S.WATCHED_LISTED,
    _S.WATCHED_LISTED_UNCLEAN,
}
_UNWATCHED: Final = {_S.STALE, _S.REFRESHING, _S.LISTED}
_WATCHED: Final = set(State) - _UNWATCHED

# what a watcher's arrival and departure make of each state (Rules 3 and 4)
_ATTACHED: Final = {
    _S.STALE: _S.WATCHED_STALE,
    _S.REFRESHING: _S.WATCHED_REFRESHING,
    _S.LISTED: _S.WATCHED_LISTED_UNCLEAN,
}
_LOST: Final = {
    _S.WATCHED_STALE: _S.STALE,
    _S.FRESH: _S.STALE,
    _S.WATCHED_REFRESHING: _S.REFRESHING,
    _S.WATCHED_REFRESHING_UNCLEAN: _S.REFRESHING,
    _S.WATCHED_LISTED: _S.LISTED,
    _S.WATCHED_LISTED_UNCLEAN: _S.LISTED,
}
# an event or a write of ours (Rule 1); without a watcher every request asks anyway
_CHANGED: Final = {
    **{state: state for state in _UNWATCHED},
    _S.WATCHED_STALE: _S.WATCHED_STALE,
    _S.FRESH: _S.WATCHED_STALE,
    _S.WATCHED_REFRESHING: _S.WATCHED_REFRESHING_UNCLEAN,
    _S.WATCHED_REFRESHING_UNCLEAN: _S.WATCHED_REFRESHING_UNCLEAN,
    _S.WATCHED_LISTED: _S.WATCHED_LISTED_UNCLEAN,
    _S.WATCHED_LISTED_UNCLEAN: _S.WATCHED_LISTED_UNCLEAN,
}
_STARTED: Final = {
    _S.STALE: _S.REFRESHING,
    _S.WATCHED_STALE: _S.WATCHED_REFRESHING,
    _S.FRESH: _S.WATCHED_REFRESHING,
}
_LISTED: Final = {
    _S.REFRESHING: _S.LISTED,
    _S.LISTED: _S.LISTED,  # listed again on another connection (Rule 5)
    _S.WATCHED_REFRESHING: _S.WATCHED_LISTED,
    _S.WATCHED_REFRESHING_UNCLEAN: _S.WATCHED_LISTED_UNCLEAN,
    _S.WATCHED_LISTED: _S.WATCHED_LISTED,
    _S.WATCHED_LISTED_UNCLEAN: _S.WATCHED_LISTED_UNCLEAN,
}
# a run that ends without a LIST failed before it (Rule 2)
_INCOMPLETE: Final = {
    state: (_S.WATCHED_STALE if state in _WATCHED else _S.STALE) for state in _RUNNING
}
_ENDED: Final = {**_INCOMPLETE, _S.WATCHED_LISTED: _S.FRESH}

TRANSITIONS: Final[dict[State, dict[Event, State]]] = {
    state: {
        event: table[state]
        for event, table in (
            (_E.WATCHER_ATTACHED, {**{w: w for w in _WATCHED}, **_ATTACHED}),
            (_E.WATCHER_LOST, {**{u: u for u in _UNWATCHED}, **_LOST}),
            (_E.UPSTREAM_EVENT, _CHANGED),
            (_E.OWN_WRITE, _CHANGED),
            (_E.REFRESH_STARTED, _STARTED),
            (_E.LISTED, _LISTED),
            (_E.REFRESH_ENDED, _ENDED),
            (_E.REFRESH_INCOMPLETE, _INCOMPLETE),
        )
        if state in table
    }
    for state in State
}

ANSWERS: Final[dict[State, Ask]] = {
    _S.STALE: Ask.NEXT,
    _S.REFRESHING: Ask.JOIN,
    _S.LISTED: Ask.NEXT,
    _S.WATCHED_STALE: Ask.NEXT,
    _S.WATCHED_REFRESHING: Ask.JOIN,
    _S.WATCHED_REFRESHING_UNCLEAN: Ask.JOIN,  # its LIST is still to come
    _S.WATCHED_LISTED: Ask.JOIN,
    _S.WATCHED_LISTED_UNCLEAN: Ask.NEXT,
    _S.FRESH: Ask.NO,
}


class Freshness:
    """One account's freshness; its state changes only through the methods below."""

    def __init__(self) -> None:
        self._state = State.STALE

    @property
    def state(self) -> State:
        return self._state

    @property
    def watched(self) -> bool:
        return self._state in _WATCHED

    def request(self) -> Ask:
        """What a request that comes now must do to see the upstream as it is now."""
        return ANSWERS[self._state]

    def handle(self, event: Event) -> State:
        try:
            self._state = TRANSITIONS[self._state][event]
        except KeyError:
            raise FreshnessError(f"{event.value} in state {self._state.value}") from None
        return self._state

    # the watcher's side
    def watcher_attached(self) -> None:
        """A watcher reports every change from now on."""
        self.handle(Event.WATCHER_ATTACHED)

    def watcher_lost(self) -> None:
        self.handle(Event.WATCHER_LOST)

    def note_event(self) -> None:
        """Something changed upstream, or may have where the watch could not see it."""
        self.handle(Event.UPSTREAM_EVENT)

    # the request's side
    def own_write(self) -> None:
        """A write of ours landed upstream: the next request must list after it."""
        self.handle(Event.OWN_WRITE)

    # the refresh's side
    def refresh_started(self) -> None:
        self.handle(Event.REFRESH_STARTED)

    def listed(self) -> None:
        """Called right before the run's LIST is sent: a request from now on comes later."""
        self.handle(Event.LISTED)

    def refresh_ended(self, *, complete: bool) -> None:
        self.handle(Event.REFRESH_ENDED if complete else Event.REFRESH_INCOMPLETE)
