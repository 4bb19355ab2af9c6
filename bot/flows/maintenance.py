"""A chain's maintenance settings: its ``borg check`` schedule and its repository's prune schedule.

Checks live in ``chain.schedule["check"]`` (days + time, the chain's time zone, ``verify_data``), prunes in
``Repository.prune_schedule`` (None: prune + compact after every successful backup, which is the default). New
chains get a weekly repository + archives check (:data:`DEFAULT_CHECK`): an unverified backup is a hope, not a
backup, and a weekly metadata check is cheap next to a restore that fails. Every change is audited and told to the
scheduler at once. Nothing here knows Slack.
"""

from __future__ import annotations

from typing import Any

from bot.runs import nudge
from bot.runs import schedule as sched
from storage.models import AuditLog, BackupChain, Repository
from storage.tenancy import Tenant

DEFAULT_CHECK: dict[str, Any] = {"days": ["sun"], "at": "05:00", "verify_data": False}


class MaintenanceError(ValueError):
    """Settings that cannot be used; the message says what to give instead."""


def timing(days: str, at: str, timezone: str) -> dict[str, Any]:
    """``"sun"``, ``"mon,thu"``, ``"daily"`` + ``"HH:MM"`` → a validated schedule mapping (without the zone)."""
    words = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"] if days.lower() in ("daily", "every-day") else [
        d for d in days.lower().replace(" ", "").split(",") if d
    ]  # fmt: skip
    mapping = {"days": words, "at": at, "timezone": timezone}
    errors = sched.validate_schedule(mapping)
    if errors:
        raise MaintenanceError(" ".join(errors.values()))
    return {"days": [d for d in sched.DAYS if d in {sched._day(w) for w in words}], "at": at}


def check_summary(chain: BackupChain) -> str:
    check = chain.schedule.get("check") if isinstance(chain.schedule, dict) else None
    if not isinstance(check, dict) or not check.get("days"):
        return "no scheduled integrity check"
    what = "repository + archives" + (" + all data (verify-data)" if check.get("verify_data") else "")
    return f"{sched.summary({'timezone': chain.timezone, **check})} ({what})"


def prune_summary(repository: Repository, timezone: str) -> str:
    if not repository.prune_schedule:
        return "after each successful backup"
    return sched.summary({"timezone": timezone, **repository.prune_schedule})


async def _audit(tenant: Tenant, user: str, action: str, kind: str, ident: int, details: dict[str, Any]) -> None:
    await AuditLog.create(team_id=tenant.team_id, actor=user, action=action, object_type=kind,
                          object_id=str(ident), details=details)  # fmt: skip


async def set_check(tenant: Tenant, chain: BackupChain, user: str, check: dict[str, Any] | None) -> None:
    """Replace (or with None, remove) the chain's check schedule."""
    schedule = {k: v for k, v in (chain.schedule or {}).items() if k != "check"}
    if check is not None:
        schedule["check"] = check
    await tenant.query(BackupChain).filter(id=chain.id).update(schedule=schedule)
    chain.schedule = schedule
    await _audit(tenant, user, "chain.check_schedule", "chain", chain.id, {"check": check})
    await nudge.schedule_changed(chain.id)


async def set_prune(tenant: Tenant, repository: Repository, user: str, prune: dict[str, Any] | None,
                    timezone: str) -> None:  # fmt: skip
    """Prune on a schedule (in ``timezone``) or, with None, after each backup again."""
    value = None if prune is None else {**prune, "timezone": timezone}
    await tenant.query(Repository).filter(id=repository.id).update(prune_schedule=value)
    repository.prune_schedule = value
    await _audit(tenant, user, "repository.prune_schedule", "repository", repository.id, {"prune_schedule": value})
    await nudge.schedule_changed(repository_id=repository.id)
