"""The acting user of an operation: workspace, user id, and what roles that user holds right now.

An :class:`Actor` is resolved once per request from the stored role grants and a :class:`Directory` (the chat
platform's answer to "is this user a workspace admin?" and "who is in user group S…?"), then handed to every check.
Surfaces build it: Slack from the request's user with a directory backed by ``users.info`` and
``usergroups.users.list``; the CLI as the host's operator (:meth:`Actor.operator`), who holds the secret keys and
so every power already.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

from storage.models import Role, RoleGrant, Workspace
from storage.tenancy import Tenant

EVERYONE = "everyone"
USER_ID = re.compile(r"^[UW][A-Z0-9]{1,20}$")
GROUP_ID = re.compile(r"^S[A-Z0-9]{2,20}$")


class Directory(Protocol):
    """Facts about users that only the chat platform knows. Any failure to ask must answer "no"."""

    async def is_workspace_admin(self, team_id: str, user_id: str) -> bool: ...

    async def group_members(self, team_id: str, group_id: str) -> frozenset[str]: ...


class NoDirectory:
    """No chat platform to ask (CLI, API without Slack, tests): nobody is a Slack admin, groups are empty."""

    async def is_workspace_admin(self, team_id: str, user_id: str) -> bool:
        return False

    async def group_members(self, team_id: str, group_id: str) -> frozenset[str]:
        return frozenset()


@dataclass(frozen=True)
class StaticDirectory:
    """A directory given as data (Slack admins, user groups): for tests and tools that have no Slack to ask."""

    admins: frozenset[str] = frozenset()
    groups: dict[str, frozenset[str]] = field(default_factory=dict)

    async def is_workspace_admin(self, team_id: str, user_id: str) -> bool:
        return user_id in self.admins

    async def group_members(self, team_id: str, group_id: str) -> frozenset[str]:
        return self.groups.get(group_id, frozenset())


@dataclass(frozen=True)
class Actor:
    """Who acts. ``groups``: the user groups (among those any role or approval rule names) the user is in."""

    team_id: str
    user_id: str
    is_admin: bool = False
    groups: frozenset[str] = field(default_factory=frozenset)
    via: str = "slack"

    @property
    def tenant(self) -> Tenant:
        return Tenant(self.team_id)

    @property
    def subjects(self) -> frozenset[str]:
        """Every grant subject that applies to this actor: the user, their groups, and everyone."""
        return frozenset({self.user_id, *self.groups, EVERYONE})

    @classmethod
    def operator(cls, team_id: str, name: str = "cli") -> Actor:
        """The person at the bot host's shell (``backup-bot`` commands): they hold the secret keys and the
        database, so no role could limit them; they act as admin and are audited as ``name``."""
        return cls(team_id=Tenant(team_id).team_id, user_id=name[:32], is_admin=True, via="cli")


async def named_groups(team_id: str) -> set[str]:
    """User groups that any stored role or approval rule names (only these are worth asking about)."""
    subjects = await RoleGrant.filter(team_id=team_id, subject__startswith="S").values_list("subject", flat=True)
    groups = {s for s in subjects if GROUP_ID.match(s)}
    row = await Workspace.get_or_none(team_id=team_id)
    rules = (row.settings or {}).get("approvals") if row is not None else None
    if isinstance(rules, dict):
        groups |= {a for a in rules.get("approvers") or () if isinstance(a, str) and GROUP_ID.match(a)}
    return groups


async def resolve_actor(directory: Directory, team_id: str, user_id: str, *, via: str = "slack") -> Actor:
    """Given a workspace and a user, return the :class:`Actor` with the roles the user holds now: admin when the
    directory says Slack admin/owner or an admin grant names the user or one of their groups."""
    tenant = Tenant(team_id)
    if not USER_ID.match(user_id or ""):
        return Actor(team_id=tenant.team_id, user_id=str(user_id)[:32], via=via)
    groups = frozenset(
        [g for g in sorted(await named_groups(team_id)) if user_id in await directory.group_members(team_id, g)]
    )
    slack_admin = await directory.is_workspace_admin(team_id, user_id)
    granted = await tenant.query(RoleGrant).filter(role=Role.ADMIN, subject__in=[user_id, *groups]).exists()
    return Actor(team_id=tenant.team_id, user_id=user_id, is_admin=slack_admin or granted, groups=groups,
                 via=via)  # fmt: skip
