"""
An outcome held in one attribute (twisted_tcp._oneshot.waited, decided,
has_come): what the writer's end-of-stream and consumer-left outcomes are.
"""

from __future__ import annotations

from typing import Any

from twisted.python.failure import Failure

from twisted_tcp._oneshot import PENDING, OneShot, decided, has_come, waited


def result_of(d: Any) -> list[object]:
    seen: list[object] = []
    d.addBoth(seen.append)
    return seen


def test_an_outcome_nobody_waited_for_is_kept_as_it_is() -> None:
    slot = decided(PENDING, None)
    assert slot is None and has_come(slot)
    slot, d = waited(slot)
    assert slot is None
    assert result_of(d) == [None]


def test_whoever_waits_first_gets_the_outcome_when_it_comes() -> None:
    slot, first = waited(PENDING)
    assert type(slot) is OneShot and not has_come(slot)
    slot, second = waited(slot)
    seen = result_of(first), result_of(second)
    assert seen == ([], [])
    slot = decided(slot, "done")
    assert slot == "done" and has_come(slot)
    assert seen == (["done"], ["done"])


def test_only_the_first_outcome_counts() -> None:
    error = Failure(ValueError("lost"))
    slot = decided(decided(PENDING, error), None)
    assert slot is error
    _, d = waited(slot)
    seen = result_of(d)
    assert len(seen) == 1 and isinstance(seen[0], Failure)
    assert seen[0].value is error.value
    slot, waiting = waited(PENDING)
    slot = decided(decided(slot, None), error)
    assert slot is None
    assert result_of(waiting) == [None]
