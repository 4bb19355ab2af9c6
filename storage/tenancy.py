"""Workspace scoping: every query for a workspace's rows goes through a :class:`Tenant`.

A Tenant can only be built from a non-empty Slack ``team_id``, and it refuses models that carry no
``team_id``, so "forgot the filter" is not a state the code can reach: nothing from workspace A is visible,
selectable or approvable from workspace B.

Which tenant a request belongs to is one rule, :func:`tenant_of`: the request's workspace (or Enterprise Grid org)
must be one the bot is installed in; anything else has no tenant at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from tortoise.models import Model
from tortoise.queryset import QuerySet

from storage.errors import TenantScopeError
from storage.models import TENANT_MODELS

M = TypeVar("M", bound=Model)
_TEAM_ID = re.compile(r"^[TE][A-Z0-9]{2,31}$")


class Tenant:
    """All data access for one Slack workspace."""

    __slots__ = ("team_id",)

    def __init__(self, team_id: str) -> None:
        if not isinstance(team_id, str) or not _TEAM_ID.match(team_id):
            raise TenantScopeError(f"{team_id!r} is not a Slack team id; every query must name its workspace.")
        self.team_id = team_id

    def _check(self, model: type[Model]) -> None:
        if model not in TENANT_MODELS:
            raise TenantScopeError(f"{model.__name__} is not a per-workspace table; query it directly.")

    def query(self, model: type[M]) -> QuerySet[M]:
        """``model``'s rows of this workspace only."""
        self._check(model)
        return model.filter(team_id=self.team_id)

    async def get(self, model: type[M], **filters: Any) -> M:
        """One row of this workspace; ``DoesNotExist`` for rows of other workspaces, as for missing ones."""
        return await self.query(model).get(**filters)

    async def get_or_none(self, model: type[M], **filters: Any) -> M | None:
        return await self.query(model).get_or_none(**filters)

    async def create(self, model: type[M], **values: Any) -> M:
        """Create a row stamped with this workspace; a conflicting ``team_id`` is a bug and is refused."""
        self._check(model)
        if values.setdefault("team_id", self.team_id) != self.team_id:
            raise TenantScopeError("Refusing to create a row for another workspace.")
        return await model.create(**values)

    def __repr__(self) -> str:
        return f"Tenant({self.team_id})"


# --- which installation a request belongs to ------------------------------------------------------------------


@dataclass(frozen=True)
class Installation:
    """Where the bot is installed: one workspace, or (``is_enterprise_install``) a whole Enterprise Grid org.

    In single-token mode it is the bot token's own ``auth.test``; OAuth installs (later) add more of them."""

    team_id: str | None
    enterprise_id: str | None = None
    is_enterprise_install: bool = False


@dataclass(frozen=True)
class Origin:
    """Where a request says it comes from: its workspace, its Grid org, and whether it names an org-wide install."""

    team_id: str | None
    enterprise_id: str | None = None
    is_enterprise_install: bool = False


def tenant_of(origin: Origin, installations: Iterable[Installation]) -> Tenant | None:
    """Given where a request comes from and where the bot is installed, the request's Tenant, or None when no
    installation covers it (the request is then refused and no workspace row is created).

    The one rule every surface uses, so a Grid payload cannot become a second tenant by naming its org instead of
    its workspace: an org-wide install is one tenant keyed by the org id and covers every workspace of that org;
    a workspace install is keyed by its team id and covers only that workspace — and a request that names another
    org than the installation's is not it, whatever team id it claims."""
    for installation in installations:
        if installation.is_enterprise_install:
            if installation.enterprise_id and origin.enterprise_id == installation.enterprise_id:
                return Tenant(installation.enterprise_id)
            continue
        if not installation.team_id or origin.team_id != installation.team_id:
            continue
        if origin.enterprise_id not in (None, installation.enterprise_id):
            continue  # the right team id under the wrong org: forged or mis-routed
        return Tenant(installation.team_id)
    return None
