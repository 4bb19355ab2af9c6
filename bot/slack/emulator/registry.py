"""The emulated workspace directory: teams, users, channels and the tokens an app holds.

Slack's answers depend on who is asking (a bot token belongs to one team and one bot user) and on membership
(``not_in_channel``, ``user_not_in_channel``), so the emulator keeps this small model and every method reads it.
Everything is team-scoped like Slack, which lets tenancy tests run two workspaces against one emulator.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError

DEFAULT_SCOPES = (
    "commands,chat:write,im:write,users:read,channels:read,groups:read,files:write,app_mentions:read,usergroups:read"
)


@dataclass
class Team:
    """A workspace."""

    id: str
    domain: str
    name: str = ""

    def ref(self) -> dict[str, Any]:
        """The ``team`` object of interaction payloads."""
        return {"id": self.id, "domain": self.domain}


@dataclass
class User:
    """A person (or the app's bot user) in one team."""

    id: str
    team_id: str
    name: str
    real_name: str = ""
    tz: str = "Europe/Berlin"
    tz_offset: int | None = None
    is_admin: bool = False
    is_bot: bool = False

    def ref(self) -> dict[str, Any]:
        """The ``user`` object of interaction payloads."""
        return {"id": self.id, "username": self.name, "name": self.name, "team_id": self.team_id}

    def offset(self) -> int:
        """``tz_offset`` in seconds, computed from ``tz`` for the current date unless given."""
        if self.tz_offset is not None:
            return self.tz_offset
        delta = dt.datetime.now(zoneinfo.ZoneInfo(self.tz)).utcoffset()
        return int(delta.total_seconds()) if delta else 0

    def to_json(self) -> dict[str, Any]:
        """The ``user`` object of ``users.info``."""
        real = self.real_name or self.name
        return {
            "id": self.id,
            "team_id": self.team_id,
            "name": self.name,
            "deleted": False,
            "real_name": real,
            "tz": self.tz,
            "tz_label": self.tz,
            "tz_offset": self.offset(),
            "is_admin": self.is_admin,
            "is_owner": False,
            "is_bot": self.is_bot,
            "is_app_user": False,
            "profile": {"real_name": real, "display_name": self.name, "team": self.team_id},
        }


@dataclass
class Channel:
    """A conversation: public/private channel or a DM (``is_im``)."""

    id: str
    team_id: str
    name: str
    members: list[str] = field(default_factory=list)
    is_private: bool = False
    is_im: bool = False

    def to_json(self, viewer: str | None = None) -> dict[str, Any]:
        """The ``channel`` object of ``conversations.info``."""
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "is_channel": not self.is_im and not self.is_private,
            "is_group": self.is_private,
            "is_im": self.is_im,
            "is_private": self.is_private or self.is_im,
            "is_archived": False,
            "is_member": viewer in self.members,
            "context_team_id": self.team_id,
        }
        if self.is_im:
            out["user"] = next((m for m in self.members if m != viewer), None)
        return out


@dataclass
class UserGroup:
    """A user group (``S…``) of one team, as ``usergroups.users.list`` answers for it."""

    id: str
    team_id: str
    handle: str
    users: list[str] = field(default_factory=list)


@dataclass
class BotToken:
    """A bot token (``xoxb-``) and the installation it stands for."""

    token: str
    team_id: str
    bot_user_id: str
    bot_id: str
    app_id: str
    scopes: str = DEFAULT_SCOPES


@dataclass
class AppToken:
    """An app-level token (``xapp-``), only good for ``apps.connections.open``."""

    token: str
    app_id: str


class Registry:
    """Lookup tables for the emulated workspaces."""

    def __init__(self) -> None:
        self.teams: dict[str, Team] = {}
        self.users: dict[str, User] = {}
        self.channels: dict[str, Channel] = {}
        self.usergroups: dict[str, UserGroup] = {}
        self.bot_tokens: dict[str, BotToken] = {}
        self.app_tokens: dict[str, AppToken] = {}
        self.verification_tokens: dict[str, str] = {}
        self._dm_seq = 0

    def team(self, team_id: str) -> Team:
        """The team, or ``team_not_found``."""
        if team_id not in self.teams:
            raise ApiError("team_not_found")
        return self.teams[team_id]

    def user(self, team_id: str, user_id: str | None) -> User:
        """A user visible from ``team_id``, or ``user_not_found`` as Slack answers."""
        found = self.users.get(user_id or "")
        if found is None or found.team_id != team_id:
            raise ApiError("user_not_found")
        return found

    def channel(self, team_id: str, ref: str | None) -> Channel:
        """A channel by id or ``#name`` within ``team_id``, or ``channel_not_found``."""
        ref = (ref or "").strip()
        found = self.channels.get(ref)
        if found is None and ref:
            name = ref.removeprefix("#")
            found = next((c for c in self.channels.values() if c.name == name and c.team_id == team_id), None)
        if found is None or found.team_id != team_id:
            raise ApiError("channel_not_found")
        return found

    def usergroup(self, team_id: str, group_id: str | None) -> UserGroup:
        """A user group of ``team_id``, or ``no_such_subteam`` as Slack answers."""
        found = self.usergroups.get(group_id or "")
        if found is None or found.team_id != team_id:
            raise ApiError("no_such_subteam")
        return found

    def open_dm(self, team_id: str, bot_user_id: str, user_id: str) -> tuple[Channel, bool]:
        """The DM between the bot and ``user_id``, created on first use; also says if it already existed."""
        self.user(team_id, user_id)
        for chan in self.channels.values():
            if chan.is_im and chan.team_id == team_id and set(chan.members) == {bot_user_id, user_id}:
                return chan, True
        self._dm_seq += 1
        chan = Channel(f"D{self._dm_seq:08d}", team_id, user_id, [user_id, bot_user_id], is_im=True)
        self.channels[chan.id] = chan
        return chan, False

    def bot_for_team(self, team_id: str) -> BotToken:
        """The (first) bot installation in ``team_id``; the driver uses it to fill payloads."""
        for bot in self.bot_tokens.values():
            if bot.team_id == team_id:
                return bot
        raise LookupError(f"no bot token registered for team {team_id}")
