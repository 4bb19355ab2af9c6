"""A chain's maintenance settings: its ``borg check`` schedule and its repository's prune schedule.

Checks live in ``chain.schedule["check"]`` (days + time, the chain's time zone, ``verify_data``), prunes in
``Repository.prune_schedule`` (None: prune + compact after every successful backup, which is the default). New
chains get a weekly repository + archives check (:data:`DEFAULT_CHECK`): an unverified backup is a hope, not a
backup, and a weekly metadata check is cheap next to a restore that fails. The schedule math and summaries live
here; changing them is an operation of the service layer (:mod:`bot.services.chains`).
"""

from __future__ import annotations

from typing import Any

from bot.backup import schedule as sched
from storage.models import BackupChain, Repository

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
