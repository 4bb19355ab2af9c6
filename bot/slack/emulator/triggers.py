"""trigger_id bookkeeping: Slack lets an app exchange one within 3 seconds, once.

Most modal bugs in Slack apps are a slow or repeated ``views.open``; emulating the rule strictly (against an
injectable clock) makes those bugs fail in tests instead of in front of users.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ApiError

TRIGGER_LIFETIME = 3.0


@dataclass
class Trigger:
    """An issued trigger_id: for whom, when, and whether it was exchanged already."""

    trigger_id: str
    team_id: str
    user_id: str
    issued_at: float
    used: bool = False


class TriggerStore:
    """Issued trigger_ids, checked with Slack's error codes."""

    def __init__(self, lifetime: float = TRIGGER_LIFETIME) -> None:
        self.lifetime = lifetime
        self._triggers: dict[str, Trigger] = {}

    def issue(self, trigger_id: str, team_id: str, user_id: str, now: float) -> Trigger:
        """Remember a freshly issued trigger."""
        trigger = Trigger(trigger_id, team_id, user_id, now)
        self._triggers[trigger_id] = trigger
        return trigger

    def exchange(self, trigger_id: str | None, team_id: str, now: float) -> Trigger:
        """Use a trigger: ``invalid_trigger_id`` (unknown / other team), ``exchanged_trigger_id`` (reused),
        ``expired_trigger_id`` (older than 3 s)."""
        trigger = self._triggers.get(trigger_id or "")
        if trigger is None or trigger.team_id != team_id:
            raise ApiError("invalid_trigger_id")
        if trigger.used:
            raise ApiError("exchanged_trigger_id")
        if now - trigger.issued_at > self.lifetime:
            raise ApiError("expired_trigger_id")
        trigger.used = True
        return trigger
