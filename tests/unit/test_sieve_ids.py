"""SieveScript ids (RFC 9661 §2; imapjmap.methods.sieve.scripts Rule 1): the digest of the
name, except for a script renamed through JMAP, which keeps its own; no two scripts ever
share one.  SIEVE-10: tests/integration/test_sieve_scripts.py."""

from __future__ import annotations

import pytest

from imapjmap.jmap.wire import is_id
from imapjmap.methods.sieve.scripts import assign_ids, script_id

A, B, C = script_id("a"), script_id("b"), script_id("c")
APART = script_id("\0a")  # "a" set apart: its digest is kept by a script renamed from "a"


@pytest.mark.parametrize(
    ("names", "renamed", "ids"),
    [
        (["a", "b"], {}, {"a": A, "b": B}),
        (["b"], {"b": A}, {"b": A}),  # "a" renamed to "b" keeps its id
        (["b", "a"], {"b": A}, {"b": A, "a": APART}),  # a new "a" beside it
        (["a", "b"], {"b": A, "a": APART}, {"a": APART, "b": A}),  # remembered as such
        (["a"], {"b": A}, {"a": A}),  # the renamed script is gone: "a" is "a" again
        (["c", "b"], {"c": B, "b": C}, {"c": B, "b": C}),  # two renamed into each other
    ],
)
def test_ids(names: list[str], renamed: dict[str, str], ids: dict[str, str]) -> None:
    assigned = assign_ids(names, renamed)
    assert assigned == ids
    assert len(set(assigned.values())) == len(names)
    assert all(is_id(i) for i in assigned.values())
