"""Turning schedules into queued runs when they are due.

Every minute (and at start) :meth:`Scheduler.tick` looks at every *active* chain (paused, pending, draft and
rejected chains are never scheduled) and queues one run per due slot of its schedule (``bot.runs.schedule``, the
same math as the wizard's preview). A slot is due when it started in ``(since, now]`` where ``since`` is the later
of ``now - lookback`` and the chain's creation: slots missed while the bot was down are still queued (a slot whose
window has ended is then skipped and reported by the worker, not run outside its window).

Idempotent: the key is chain + kind + ``scheduled_for`` (see :meth:`SqlQueue.enqueue`), so a slot already queued or
run is never queued twice, however often ``tick`` runs.

Dependencies: a chain with ``depends_on`` runs a slot only after its dependency's run for that slot (its latest
backup run scheduled at or before the slot) succeeded (or warned). While that run is queued or running, the slot
waits (re-examined every tick); when it failed, was skipped, cancelled or interrupted for good, the slot is recorded
``skipped`` with the reason and reported. If the dependency is not active and has no run, the slot is skipped.

Checks: ``chain.schedule["check"]`` (a schedule mapping plus optional ``verify_data`` / ``scope``) queues
``check`` runs of the chain's repository the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.alerts import AlertBus
from bot.runs import schedule as sched
from bot.runs.execute import announce
from bot.runs.queue import RunQueue, RunSpec
from storage.models import BackupChain, ChainStatus, Run, RunKind, RunStatus

log = logging.getLogger(__name__)

OK = (RunStatus.SUCCEEDED, RunStatus.WARNING)
PENDING = (RunStatus.QUEUED, RunStatus.RUNNING)


def chain_schedule(chain: BackupChain, raw: Mapping[str, Any] | None = None) -> dict[str, Any]:
    raw = chain.schedule if raw is None else raw
    found = {k: raw.get(k) for k in ("days", "at", "window")}
    found["timezone"] = raw.get("timezone") or chain.timezone or "UTC"
    found["priority"] = raw.get("priority") or chain.priority or sched.DEFAULT_PRIORITY
    return found


def due_slots(schedule: Mapping[str, Any], since: datetime, now: datetime) -> list[sched.Slot]:
    found = []
    for slot in sched.iter_slots(schedule, since):
        if slot.start.astimezone(UTC) > now:
            break
        found.append(slot)
    return found


class Scheduler:
    def __init__(self, queue: RunQueue, *, alerts: AlertBus | None = None, lookback: timedelta = timedelta(hours=24),
                 every: float = 60.0, on_enqueued: Any = None) -> None:  # fmt: skip
        self.queue = queue
        self.alerts = alerts
        self.lookback = lookback
        self.every = every
        self.on_enqueued = on_enqueued  # e.g. Worker.wake

    async def tick(self, now: datetime | None = None) -> list[Run]:
        """Queue every due slot of every active chain; returns the runs created (queued or skipped)."""
        now = (now or datetime.now(UTC)).astimezone(UTC)
        chains = await BackupChain.filter(status=ChainStatus.ACTIVE).order_by("id")
        # Dependencies first, so a dependent sees its dependency's run of the same slot in the same tick.
        chains.sort(key=lambda c: c.depends_on_id is not None)  # type: ignore[attr-defined]
        created: list[Run] = []
        for chain in chains:
            try:
                created.extend(await self._chain(chain, now))
            except sched.ScheduleError as exc:
                log.warning("chain %s has an unusable schedule: %s", chain.id, exc)
            except Exception:
                log.exception("scheduling chain %s failed", chain.id)
        if created and self.on_enqueued is not None:
            self.on_enqueued()
        return created

    async def _chain(self, chain: BackupChain, now: datetime) -> list[Run]:
        created: list[Run] = []
        since = max(now - self.lookback, chain.created_at.astimezone(UTC) - timedelta(seconds=1))
        if chain.schedule.get("days"):
            schedule = chain_schedule(chain)
            for slot in due_slots(schedule, since, now):
                run = await self._slot(chain, slot, RunKind.BACKUP, {})
                if run is not None:
                    created.append(run)
        check = chain.schedule.get("check")
        if isinstance(check, Mapping) and check.get("days"):
            options = {k: check[k] for k in ("verify_data", "scope") if k in check}
            for slot in due_slots(chain_schedule(chain, check), since, now):
                run = await self._slot(chain, slot, RunKind.CHECK, options)
                if run is not None:
                    created.append(run)
        return created

    async def _slot(self, chain: BackupChain, slot: sched.Slot, kind: RunKind, options: dict) -> Run | None:
        start = slot.start.astimezone(UTC)
        if await Run.filter(chain_id=chain.id, kind=kind, scheduled_for=start).exists():
            return None
        repository_id = chain.repository_id  # type: ignore[attr-defined]
        spec = RunSpec(chain.team_id, kind=kind, chain_id=chain.id, repository_id=repository_id,
                       priority=chain.priority, scheduled_for=start, window_ends_at=slot.end,
                       options=options)  # fmt: skip
        if kind == RunKind.BACKUP and chain.depends_on_id is not None:  # type: ignore[attr-defined]
            verdict = await self._dependency(chain, start)
            if verdict is None:
                return None  # wait for the dependency's run
            if verdict is not True:
                spec = replace(spec, status=RunStatus.SKIPPED, error=verdict, error_kind="dependency")
        run = await self.queue.enqueue(spec)
        if run is not None and run.status == RunStatus.SKIPPED:
            await announce(self.alerts, run)
        return run

    async def _dependency(self, chain: BackupChain, start: datetime) -> bool | str | None:
        """True: go; None: wait; a string: skip, with this reason."""
        parent = await BackupChain.get_or_none(id=chain.depends_on_id)  # type: ignore[attr-defined]
        if parent is None:
            return True
        run = (
            await Run.filter(chain_id=parent.id, kind=RunKind.BACKUP, scheduled_for__lte=start,
                             scheduled_for__gt=start - self.lookback)
            .order_by("-scheduled_for", "-id")
            .first()
        )  # fmt: skip
        if run is None:
            if parent.status != ChainStatus.ACTIVE:
                return f"It runs after {parent.name}, which is {parent.status.value} and did not run for this slot."
            return None
        if run.status in PENDING:
            return None
        if run.status in OK:
            return True
        why = f": {run.error}" if run.error else ""
        return f"It runs after {parent.name}, whose run #{run.id} for this slot ended {run.status.value}{why}"

    async def run_forever(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                await self.tick()
            except Exception:
                log.exception("the scheduler's tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every)
