"""Workspace scoping: every query for a workspace's rows goes through a :class:`Tenant`.

A Tenant can only be built from a non-empty Slack ``team_id``, and it refuses models that carry no
``team_id``, so "forgot the filter" is not a state the code can reach: nothing from workspace A is visible,
selectable or approvable from workspace B.
"""

from __future__ import annotations

import re
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
