"""How full a storage pool is: its repositories' sizes against its quota, its free space against its threshold.

One place for the numbers that the wizard (choosing a pool), the run layer (before a backup, after it), ``/backup
pools``, the App Home and ``/metrics`` all show, so they never disagree. Sizes are borg's deduplicated sizes
(``Repository.size_bytes``, written after every backup, prune and compact); free and total space are the pool's
last measurement (``StoragePool.available_bytes`` / ``capacity_bytes``).
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.backup.plan import PlanProblem, human, pool_space
from storage.models import Repository, StoragePool


@dataclass(frozen=True)
class Usage:
    """A pool's numbers; None where nothing was measured yet."""

    used_bytes: int  # sum of the repositories' deduplicated sizes (unmeasured repositories count 0)
    repositories: int
    unmeasured: int  # repositories whose size is not known yet
    quota_bytes: int | None
    free_bytes: int | None
    total_bytes: int | None
    threshold_pct: int

    @property
    def quota_pct(self) -> float | None:
        """Given a quota, return the share of it in use (percent)."""
        return 100.0 * self.used_bytes / self.quota_bytes if self.quota_bytes else None

    @property
    def disk_pct(self) -> float | None:
        """Given a measurement, return the share of the file system in use (percent)."""
        if not self.total_bytes or self.free_bytes is None:
            return None
        return 100.0 * (self.total_bytes - self.free_bytes) / self.total_bytes

    @property
    def fill_pct(self) -> float | None:
        """The fuller of quota and disk, which is what the threshold is compared with."""
        values = [v for v in (self.quota_pct, self.disk_pct) if v is not None]
        return max(values) if values else None

    @property
    def above_threshold(self) -> bool:
        fill = self.fill_pct
        return fill is not None and fill >= self.threshold_pct


async def usage(pool: StoragePool) -> Usage:
    """Given a pool row, return its usage from the stored repository sizes and its last measurement."""
    sizes = await Repository.filter(team_id=pool.team_id, pool_id=pool.id).values_list("size_bytes", flat=True)
    known = [int(s) for s in sizes if s is not None]
    return Usage(used_bytes=sum(known), repositories=len(sizes), unmeasured=len(sizes) - len(known),
                 quota_bytes=pool.quota_bytes, free_bytes=pool.available_bytes, total_bytes=pool.capacity_bytes,
                 threshold_pct=pool.alert_threshold_pct)  # fmt: skip


def quota_refusal(pool: StoragePool, used: Usage, adding: int = 0) -> str | None:
    """Given a pool, its usage and the bytes about to be added (an estimate; 0 when unknown), return the sentence
    refusing it when the quota is (or would be) exceeded, else None."""
    if not pool.quota_bytes:
        return None
    after = used.used_bytes + max(0, adding)
    if after < pool.quota_bytes and used.used_bytes < pool.quota_bytes:
        return None
    grow = f" + about {human(adding)} for this backup" if adding > 0 else ""
    return (f"Pool {pool.name} is over its quota: {human(used.used_bytes)} used{grow} of {human(pool.quota_bytes)}. "
            "Prune old archives, move the chain to another pool, or ask an admin to raise the quota.")  # fmt: skip


def free_refusal(pool: StoragePool, used: Usage, adding: int) -> str | None:
    """Given a pool whose free space was measured and an estimate of what a backup adds, return the sentence
    refusing it when it cannot fit, else None."""
    if used.free_bytes is None or adding <= 0 or adding < used.free_bytes:
        return None
    return (f"Pool {pool.name} has {human(used.free_bytes)} free, less than the about {human(adding)} this backup "
            "needs. Free space on the pool or choose another pool.")  # fmt: skip


# --- measuring ----------------------------------------------------------------------------------------------------

CLEAR_MARGIN_PCT = 1.0  # the alert is re-armed only below threshold − this, so a pool hovering at it is told once


def describe(pool: StoragePool, used: Usage) -> str:
    """Given a pool and its usage, return one line of its numbers, the same on every surface:
    "12.0 GiB free of 50.0 GiB · quota 3.0 GiB of 10.0 GiB used (30%)"."""
    if used.free_bytes is None:
        space = "free space not measured yet"
    else:
        space = f"{human(used.free_bytes)} free" + (f" of {human(used.total_bytes)}" if used.total_bytes else "")
    if used.quota_bytes:
        share = f"quota {human(used.used_bytes)} of {human(used.quota_bytes)} used ({used.quota_pct:.0f}%)"
    elif used.repositories:
        noun = "repository" if used.repositories == 1 else "repositories"
        if used.unmeasured == used.repositories:
            return f"{space} · {used.repositories} {noun}, not measured yet"
        share = f"{human(used.used_bytes)} used by {used.repositories} {noun}"
    else:
        share = "no repositories yet"
    if used.unmeasured:
        share += f" ({used.unmeasured} not measured yet)"
    return f"{space} · {share}"


async def measure_pool(pool: StoragePool, services: object, *, timeout: float = 15.0) -> Usage:
    """Given a pool (its ``server`` loaded) and the bot's services, measure its free and total space now (df on
    the pool host through the pool's transport), store it (``available_*``, ``capacity_bytes``) and clear
    ``measure_error``; when it cannot be measured, store why in ``measure_error`` and keep the old numbers. Returns
    the pool's usage either way (a failed measurement must not hide the quota part of it)."""
    try:
        await pool_space(pool, services, timeout=timeout)
        error = None
    except PlanProblem as problem:
        error = problem.message[:1000]
    if error != pool.measure_error:
        pool.measure_error = error
        await StoragePool.filter(id=pool.id).update(measure_error=error)
    return await usage(pool)


async def threshold_crossed(pool: StoragePool, used: Usage) -> bool:
    """Given a pool and its current usage, keep ``alert_active`` in step and return True exactly when the pool has
    just crossed its threshold (the caller posts the one alert of this crossing). The flag flips with a conditional
    update, so two runs measuring the same pool at once cannot both claim the crossing; it is cleared once the fill
    is below the threshold by :data:`CLEAR_MARGIN_PCT`, so the next crossing alerts again."""
    fill = used.fill_pct
    if fill is None:
        return False
    if fill >= used.threshold_pct:
        claimed = await StoragePool.filter(id=pool.id, alert_active=False).update(alert_active=True)
        pool.alert_active = True
        return bool(claimed)
    if fill < used.threshold_pct - CLEAR_MARGIN_PCT:
        await StoragePool.filter(id=pool.id, alert_active=True).update(alert_active=False)
        pool.alert_active = False
    return False
