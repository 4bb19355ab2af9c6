"""Step 2 — backup type: the six types, each available or not with the reason from the capabilities."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.flows.wizard.steps.base import BaseStep, Errors, Field, Option, StepView, WizardContext
from bot.inventory import cached_capabilities
from bot.probes import borg, docker_models, mongodb, mysql, postgresql
from storage.models import BackupType, Server

LABELS = {
    "files": "Files & folders",
    "mysql": "MySQL / MariaDB",
    "postgresql": "PostgreSQL",
    "mongodb": "MongoDB",
    "docker": "Docker containers & volumes",
    "system": "Full system",
}


def availability(caps: Any) -> dict[str, str | None]:
    """type → None when available, else the reason it is not (from the cached capabilities)."""
    if caps is None:
        return {t: None for t in LABELS}
    reasons: dict[str, str | None] = {"files": None, "system": None}
    borg_info = caps.get("borg", borg.BorgInfo)
    if borg_info is None or not borg_info.present:
        why = "borg is not installed on this server"
        return {t: why for t in LABELS}
    my = caps.get("mysql", mysql.MySQLInfo)
    reasons["mysql"] = None if my and my.running else (caps.outcomes["mysql"].error or "no MySQL/MariaDB server found")
    pg = caps.get("postgresql", postgresql.PgInfo)
    reasons["postgresql"] = None if pg and pg.running else (caps.outcomes["postgresql"].error or "no PostgreSQL found")
    mongo = caps.get("mongodb", mongodb.MongoInfo)
    reasons["mongodb"] = None if mongo and mongo.running else (caps.outcomes["mongodb"].error or "no MongoDB found")
    dock = caps.get("docker", docker_models.DockerFacts)
    reasons["docker"] = None if dock else (caps.outcomes["docker"].error or "Docker is not available")
    return reasons


class BackupTypeStep(BaseStep):
    def __init__(self) -> None:
        super().__init__(name="type", title="Backup type")

    async def _reasons(self, ctx: WizardContext) -> dict[str, str | None]:
        server = await Server.get_or_none(id=ctx.data.get("server_id"), team_id=ctx.team_id)
        return availability(cached_capabilities(server) if server else None)

    async def view(self, ctx: WizardContext) -> StepView:
        reasons = await self._reasons(ctx)
        options = tuple(
            Option(
                value=t,
                label=label if reasons[t] is None else f"{label} (unavailable)",
                description=(reasons[t] or "")[:75],
            )
            for t, label in LABELS.items()
        )
        return StepView(
            heading="*What do you want to back up?*",
            fields=(
                Field("backup_type", "Backup type", "radio", options=options, initial=ctx.data.get("backup_type")),
            ),
        )

    async def submit(self, ctx: WizardContext, values: Mapping[str, Any]) -> Errors:
        chosen = values.get("backup_type")
        if chosen not in LABELS:
            return {"backup_type": "Choose one of the backup types."}
        reason = (await self._reasons(ctx))[chosen]
        if reason is not None:
            return {"backup_type": f"{LABELS[chosen]} is not available on this server: {reason}"[:150]}
        if ctx.data.get("backup_type") != chosen:
            ctx.data.pop("source", None)  # a different type's source answers make no sense any more
        ctx.data["backup_type"] = BackupType(chosen).value
        return {}
