"""Bounded waits on observed state, instead of wall-clock asserts (which flake on a busy machine).

The bounds are generous: they only stop a hung test; how fast something is belongs to bench/.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

HANG = 120.0  # seconds after which a call that should return is considered hung


def finishes(fn: Callable[[], T], within: float = HANG, what: str = "the call") -> T:
    """Run ``fn`` in a thread and return its result (or raise its error); fail if it hangs."""
    out: list[T] = []
    err: list[BaseException] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:
            err.append(exc)

    thread = threading.Thread(target=run, name="bounded-call", daemon=True)
    thread.start()
    thread.join(within)
    assert not thread.is_alive(), f"{what} did not return within {within:g}s"
    if err:
        raise err[0]
    return out[0]


def wait_until(check: Callable[[], object], within: float = HANG, what: str = "the condition",
               interval: float = 0.05) -> None:
    """Poll ``check`` until it is truthy; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"{what} not seen within {within:g}s"
        time.sleep(interval)
