"""The freshness state machine (imapjmap.sync.freshness), as a table: every (state, event)
pair, the state it leads to (or the error), and what a request does there; then random
walks against a model written with flags instead of states (docs/design.md, "Freshness").
"""

from __future__ import annotations

import random

import pytest

from imapjmap.sync.freshness import (
    ANSWERS,
    TRANSITIONS,
    Ask,
    Event,
    Freshness,
    FreshnessError,
    State,
)

ST, RF, LS = State.STALE, State.REFRESHING, State.LISTED
WST, WRF, WRU = State.WATCHED_STALE, State.WATCHED_REFRESHING, State.WATCHED_REFRESHING_UNCLEAN
WLS, WLU, FR = State.WATCHED_LISTED, State.WATCHED_LISTED_UNCLEAN, State.FRESH
X = None  # the event is refused in that state

COLUMNS = (
    Event.WATCHER_ATTACHED,
    Event.WATCHER_LOST,
    Event.UPSTREAM_EVENT,
    Event.OWN_WRITE,
    Event.REFRESH_STARTED,
    Event.LISTED,
    Event.REFRESH_ENDED,
    Event.REFRESH_INCOMPLETE,
)
# state: (next state for each column above), what a request does in that state
TABLE: dict[State, tuple[tuple[State | None, ...], Ask]] = {
    #      attached lost event write started listed ended incomplete
    ST: ((WST, ST, ST, ST, RF, X, X, X), Ask.NEXT),
    RF: ((WRF, RF, RF, RF, X, LS, ST, ST), Ask.JOIN),
    LS: ((WLU, LS, LS, LS, X, LS, ST, ST), Ask.NEXT),
    WST: ((WST, ST, WST, WST, WRF, X, X, X), Ask.NEXT),
    WRF: ((WRF, RF, WRU, WRU, X, WLS, WST, WST), Ask.JOIN),
    WRU: ((WRU, RF, WRU, WRU, X, WLU, WST, WST), Ask.JOIN),
    WLS: ((WLS, LS, WLU, WLU, X, WLS, FR, WST), Ask.JOIN),
    WLU: ((WLU, LS, WLU, WLU, X, WLU, WST, WST), Ask.NEXT),
    FR: ((FR, ST, WST, WST, WRF, X, X, X), Ask.NO),
}
# how to reach each state from a new machine
PATHS: dict[State, tuple[Event, ...]] = {
    ST: (),
    RF: (Event.REFRESH_STARTED,),
    LS: (Event.REFRESH_STARTED, Event.LISTED),
    WST: (Event.WATCHER_ATTACHED,),
    WRF: (Event.WATCHER_ATTACHED, Event.REFRESH_STARTED),
    WRU: (Event.WATCHER_ATTACHED, Event.REFRESH_STARTED, Event.UPSTREAM_EVENT),
    WLS: (Event.WATCHER_ATTACHED, Event.REFRESH_STARTED, Event.LISTED),
    WLU: (Event.WATCHER_ATTACHED, Event.REFRESH_STARTED, Event.LISTED, Event.OWN_WRITE),
    FR: (Event.WATCHER_ATTACHED, Event.REFRESH_STARTED, Event.LISTED, Event.REFRESH_ENDED),
}
CELLS = [
    (state, event, row[i], answer)
    for state, (row, answer) in TABLE.items()
    for i, event in enumerate(COLUMNS)
]


def machine_in(state: State) -> Freshness:
    machine = Freshness()
    for event in PATHS[state]:
        machine.handle(event)
    assert machine.state is state
    return machine


def test_the_table_covers_every_state_and_event() -> None:
    assert set(TABLE) == set(State) == set(PATHS) == set(ANSWERS)
    assert set(COLUMNS) == set(Event)


@pytest.mark.parametrize(("state", "event", "after", "answer"), CELLS)
def test_transition(state: State, event: Event, after: State | None, answer: Ask) -> None:
    machine = machine_in(state)
    assert machine.request() is answer
    if after is None:
        with pytest.raises(FreshnessError):
            machine.handle(event)
        assert machine.state is state  # a refused event changes nothing
        assert event not in TRANSITIONS[state]
        return
    assert machine.handle(event) is after
    assert machine.request() is TABLE[after][1]
    assert machine.watched is (after not in (ST, RF, LS))


def test_the_methods_are_the_events() -> None:
    machine = Freshness()
    machine.watcher_attached()
    machine.refresh_started()
    machine.listed()
    machine.refresh_ended(complete=True)
    assert machine.state is FR and machine.request() is Ask.NO
    machine.note_event()
    assert machine.state is WST and machine.request() is Ask.NEXT
    machine.refresh_started()
    machine.listed()
    machine.refresh_ended(complete=False)  # a fill still running, say
    assert machine.state is WST
    machine.refresh_started()
    machine.own_write()
    machine.listed()
    machine.refresh_ended(complete=True)
    assert machine.state is WST  # the write came during the run: not proved fresh
    machine.watcher_lost()
    assert machine.state is ST and not machine.watched


# --- random walks against a model of flags ----------------------------------------------------


class Model:
    """What the rules say, kept as flags: a request needs no round trip only after a clean
    complete run that listed with the watcher attached, and nothing since; it may join a
    run whose LIST is to come, or one that listed while watched and nothing since it began
    (or since the watcher attached, when that was before the LIST).
    """

    def __init__(self) -> None:
        self.watched = False
        self.running = False
        self.listed = False
        self.watched_at_list = False  # the watcher was attached when the run listed
        self.quiet = False  # no event, write or loss since the run began
        self.fresh = False

    def step(self, event: Event, complete: bool = True) -> bool:
        """Apply ``event``; False when the rules refuse it."""
        if event is Event.WATCHER_ATTACHED:
            if not self.watched:
                self.watched = True
                if self.running and not self.listed:
                    self.quiet = True  # its LIST comes after anything reported before
        elif event is Event.WATCHER_LOST:
            self.watched = self.fresh = self.watched_at_list = False
        elif event in (Event.UPSTREAM_EVENT, Event.OWN_WRITE):
            self.fresh = self.quiet = False
        elif event is Event.REFRESH_STARTED:
            if self.running:
                return False
            self.running, self.listed, self.quiet, self.fresh = True, False, True, False
        elif event is Event.LISTED:
            if not self.running:
                return False
            if not self.listed:
                self.listed, self.watched_at_list = True, self.watched
        else:
            if not self.running:
                return False
            complete = event is Event.REFRESH_ENDED
            self.fresh = (
                complete and self.listed and self.watched_at_list and self.quiet and self.watched
            )
            self.running = self.listed = False
        return True

    def answer(self) -> Ask:
        if self.fresh:
            return Ask.NO
        if self.running and not self.listed:
            return Ask.JOIN
        if self.running and self.watched and self.watched_at_list and self.quiet:
            return Ask.JOIN
        return Ask.NEXT


@pytest.mark.parametrize("seed", range(20))
def test_random_walks_agree_with_the_model(seed: int) -> None:
    rng = random.Random(seed)
    machine, model = Freshness(), Model()
    for _ in range(300):
        event = rng.choice(list(Event))
        allowed = model.step(event)
        if allowed:
            machine.handle(event)
        else:
            with pytest.raises(FreshnessError):
                machine.handle(event)
        assert machine.watched is model.watched
        assert machine.request() is model.answer(), (event, machine.state)
