"""What happened, for assertions: every Web API call with its answer, and faults queued for the next calls.

Recording happens in the server for every request (faulted ones included), so a test can check both that the
app retried after a 429 and what it finally sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

# Slack's error strings for the HTTP statuses faults can inject.
FAULT_ERRORS = {
    429: "ratelimited",
    500: "internal_error",
    502: "internal_error",
    503: "service_unavailable",
    504: "request_timeout",
}


@dataclass(frozen=True)
class Call:
    """One Web API request as the emulator saw and answered it."""

    method: str
    params: dict[str, Any]
    response: dict[str, Any]
    status: int
    timestamp: float
    token: str | None = None

    @property
    def ok(self) -> bool:
        """Whether Slack would have answered ``ok: true``."""
        return self.status == 200 and bool(self.response.get("ok"))

    @property
    def error(self) -> str | None:
        """The ``error`` code of a refused call."""
        return self.response.get("error")


@dataclass
class Fault:
    """An HTTP failure to answer instead of running ``method`` (``*`` = any), ``times`` times."""

    method: str
    status: int = 429
    retry_after: int | None = 1
    times: int = 1
    error: str | None = None

    def body(self) -> dict[str, Any]:
        """The JSON body sent with the failure status."""
        return {"ok": False, "error": self.error or FAULT_ERRORS.get(self.status, "fatal_error")}

    def headers(self) -> dict[str, str]:
        """``Retry-After`` accompanies a 429, as on Slack."""
        if self.status == 429 and self.retry_after is not None:
            return {"Retry-After": str(self.retry_after)}
        return {}


@dataclass
class FaultPlan:
    """Queued faults, consumed in order of injection."""

    faults: list[Fault] = field(default_factory=list)

    def add(self, fault: Fault) -> Fault:
        """Queue a fault."""
        self.faults.append(fault)
        return fault

    def take(self, method: str) -> Fault | None:
        """The fault to apply to this call, if any (decrementing its count)."""
        for fault in self.faults:
            if fault.method in (method, "*") and fault.times > 0:
                fault.times -= 1
                if fault.times == 0:
                    self.faults.remove(fault)
                return fault
        return None


class Changes:
    """Wakes up waiters whenever the emulator's state changes (calls recorded, views changed).

    Waiters also re-check every ``POLL`` seconds, so predicates over state the emulator does not own (what an
    app's listener recorded) work too.
    """

    POLL = 0.02

    def __init__(self) -> None:
        self._waiters: set[asyncio.Future[None]] = set()
        self.version = 0  # counts pokes: a watcher (the playground's page stream) knows whether it has seen them

    def poke(self) -> None:
        """Signal a change."""
        self.version += 1
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def wait_for(self, predicate: Callable[[], T | None], within: float) -> T:
        """Return ``predicate()`` once truthy; ``TimeoutError`` after ``within`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not (result := predicate()):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"condition not met within {within}s")
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.add(waiter)
            try:
                await asyncio.wait_for(waiter, min(remaining, self.POLL))
            except TimeoutError:
                self._waiters.discard(waiter)
        return result

    async def after(self, version: int, within: float) -> int:
        """Given the version a watcher last saw, return the current one once it differs (or after ``within`` s)."""
        try:
            return await self.wait_for(lambda: self.version if self.version != version else None, within)
        except TimeoutError:
            return self.version
