"""``/backup drill <chain> weekly|monthly|off [on <server>]``: (being built) scheduled restore tests.

Parsing and rendering only; the service layer decides and audits.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bot.access import Actor
from bot.slack.listing import Answer

ANSWERS: dict[str, Callable[[Actor, str], Awaitable[Answer]]] = {}
