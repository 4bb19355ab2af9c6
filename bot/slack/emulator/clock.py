"""Time sources for the emulator: Slack's trigger_id lifetime is checked against an injectable clock.

Tests replace ``emulator.clock`` with a :class:`ManualClock` and advance it, so "3 seconds later" needs no sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]


class ManualClock:
    """A clock that only moves when told to; callable like ``time.monotonic``."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.monotonic() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        self.now += seconds
