"""The emulator's whole state in one object, shared by the Web API handlers, the server and the driver.

Keeping it separate from the aiohttp server means handlers are plain functions over data (easy to read and to
call from the driver when applying a ``response_action``), and the playground can reuse the state as is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .clock import Clock
from .errors import ApiError
from .ids import IdFactory
from .messages import MessageStore
from .records import Changes
from .registry import AppToken, BotToken, Registry
from .triggers import TriggerStore
from .views import Owner, ViewStore


@dataclass
class ResponseTarget:
    """Where a ``response_url`` posts to: the conversation and user of the original interaction."""

    team_id: str
    channel_id: str
    user_id: str
    message_ts: str | None = None
    uses: int = 0


class World:
    """Registry, views, messages, triggers and the addresses the emulator serves."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.ids = IdFactory()
        self.registry = Registry()
        self.triggers = TriggerStore()
        self.views = ViewStore(self.ids)
        self.messages = MessageStore()
        self.changes = Changes()
        self.base_url = ""
        self.socket_tickets: dict[str, str] = {}
        self.response_targets: dict[str, ResponseTarget] = {}
        self.responses: list[dict[str, Any]] = []

    def issue_trigger_id(self, user_id: str, team_id: str) -> str:
        """A fresh trigger_id for an interaction by ``user_id``."""
        trigger_id = self.ids.trigger_id(team_id)
        self.triggers.issue(trigger_id, team_id, user_id, self.clock())
        return trigger_id

    def issue_response_url(self, target: ResponseTarget) -> str:
        """A ``response_url`` served by the emulator for this interaction."""
        token = self.ids.token()
        self.response_targets[token] = target
        return f"{self.base_url}/response/{token}"


@dataclass
class Ctx:
    """One Web API call being handled: the caller's token and the parsed parameters."""

    world: World
    params: dict[str, Any]
    bot: BotToken | None = None
    app: AppToken | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def installation(self) -> BotToken:
        """The bot installation making the call (every method but apps.connections.open)."""
        assert self.bot is not None
        return self.bot

    @property
    def team_id(self) -> str:
        """The calling installation's team."""
        return self.installation.team_id

    def owner(self, user_id: str) -> Owner:
        """View ownership for ``user_id`` under the calling installation."""
        bot = self.installation
        return Owner(team_id=bot.team_id, user_id=user_id, app_id=bot.app_id, bot_id=bot.bot_id)

    def text(self, name: str, *, required: bool = False, error: str = "invalid_arguments") -> str | None:
        """A string parameter; missing required ones are refused with ``error``."""
        value = self.params.get(name)
        if value in (None, ""):
            if required:
                raise ApiError(
                    error,
                    messages=[f"[ERROR] missing required field: {name}"] if error == "invalid_arguments" else None,
                )
            return None
        return str(value)

    def flag(self, name: str) -> bool:
        """A boolean parameter as Slack reads it from forms (``true``/``1``) or JSON."""
        value = self.params.get(name)
        return value is True or str(value).lower() in ("true", "1")

    def json(self, name: str, error: str) -> Any:
        """A parameter that is JSON: already decoded in JSON bodies, a JSON string in forms."""
        value = self.params.get(name)
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ApiError(error) from exc
        return value
