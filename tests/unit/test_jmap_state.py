"""jmap.state: opaque state tokens (docs/design.md, "States"; CORE-CHG-04, CORE-TYPE-01)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imapjmap.jmap.errors import MethodError, MethodErrorType
from imapjmap.jmap.state import State, decode, decode_or_raise, encode

EPOCHS = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
IDS = st.from_regex(r"[A-Za-z0-9_-]{1,255}", fullmatch=True)
SEQS = st.integers(min_value=0, max_value=2**53 - 1)
STATES = st.builds(State, EPOCHS, SEQS) | st.builds(
    lambda epoch, a, b, after: State(epoch, min(a, b), after, max(a, b)),
    EPOCHS,
    SEQS,
    SEQS,
    IDS,
)
URL_SAFE = re.compile(r"[A-Za-z0-9._~-]+")


@given(STATES)
def test_round_trip(state: State) -> None:
    token = encode(state)
    assert decode(token, state.epoch) == state
    assert URL_SAFE.fullmatch(token)
    with pytest.raises(ValueError):
        float(token)  # never looks like a bare number


@given(STATES, EPOCHS)
def test_other_epoch_is_none(state: State, other: str) -> None:
    if other != state.epoch:
        assert decode(encode(state), other) is None


@given(st.text(max_size=40))
def test_accepted_tokens_are_canonical(token: str) -> None:
    state = decode(token, "E1")
    if state is not None:
        assert encode(state) == token


@pytest.mark.parametrize(
    ("state", "token"),
    [
        (State("E1", 0), "s0.E1"),
        (State("E1", 35), "sz.E1"),
        (State("E1", 36), "s10.E1"),
        (State("E1", 36, "M_a-1", 40), "p10.14.E1.M_a-1"),
    ],
)
def test_examples(state: State, token: str) -> None:
    assert encode(state) == token
    assert decode(token, "E1") == state


@pytest.mark.parametrize(
    "token",
    [
        "",
        "0",
        "12",
        "s.E1",
        "s01.E1",  # not canonical
        "sZ.E1",  # upper case digit
        "s1.E1.",
        "s1.E1.a.b",
        "s1.E1.bad id",
        "s1.e1",  # epochs are case sensitive
        "s1E1",
        "x1.E1",
        "s" + "z" * 12 + ".E1",  # beyond 2^53
        "s1.E1." + "a" * 256,
        "s1.E1\n",
        "p2.1.E1.a",  # a round cannot end before it starts
        "p1.2.E1",  # a paging state names where it is
    ],
)
def test_garbage_is_none(token: str) -> None:
    assert decode(token, "E1") is None


def test_decode_or_raise_core_chg_04() -> None:
    assert decode_or_raise("s5.E1", "E1") == State("E1", 5)
    with pytest.raises(MethodError) as info:
        decode_or_raise("s5.E0", "E1")
    assert info.value.type is MethodErrorType.CANNOT_CALCULATE_CHANGES


@pytest.mark.parametrize(
    ("epoch", "seq", "after_id"),
    [("", 1, None), ("a.b", 1, None), ("E", -1, None), ("E", 2**53, None), ("E", 1, "a b")],
)
def test_invalid_states_are_rejected(epoch: str, seq: int, after_id: str | None) -> None:
    with pytest.raises(ValueError):
        State(epoch, seq, after_id)
