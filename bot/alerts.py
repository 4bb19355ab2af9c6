"""In-process alerts: layers below Slack raise them, the runs layer reports them to channels.

Transport and probes cannot know which channel to tell; they publish an :class:`Alert` here and
whoever subscribed (the notifier, a test) decides. Subscribers may be sync or async; one failing
subscriber does not stop the others.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alert:
    team_id: str
    kind: str  # e.g. "host_key_changed"
    message: str  # a sentence for people
    details: dict[str, Any] = field(default_factory=dict)


Subscriber = Callable[[Alert], Awaitable[None] | None]


class AlertBus:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add ``subscriber``; returns a function that removes it."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    async def publish(self, alert: Alert) -> None:
        for subscriber in list(self._subscribers):
            try:
                result = subscriber(alert)
                if inspect.isawaitable(result):
                    await result
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("alert subscriber failed for %s", alert.kind)
