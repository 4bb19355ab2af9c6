"""``/backup delete``: (being built).

Parsing and rendering only; the service layer decides and audits.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from slack_bolt.async_app import AsyncApp

from bot.access import Actor
from bot.slack.listing import Answer

ANSWERS: dict[str, Callable[[Actor, str], Awaitable[Answer]]] = {}


def register(app: AsyncApp, services: object = None) -> None:
    """Register the buttons and modals of ``/backup delete`` (none yet)."""
