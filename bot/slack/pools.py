"""``/backup pools``: (being built) list, add, change and remove the workspace's pools.

Parsing and rendering only; :mod:`bot.services.pools` decides and audits.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from slack_bolt.async_app import AsyncApp

from bot.access import Actor
from bot.slack.listing import Answer

ANSWERS: dict[str, Callable[[Actor, str], Awaitable[Answer]]] = {}


def register(app: AsyncApp) -> None:
    """Register the buttons and modals of ``/backup pools`` (none yet)."""
