"""Storage accounting: repository sizes after runs, pools' free space after runs and hourly, the threshold alert.

* After every backup, prune and compact that changed a repository, :meth:`Accounting.after_run` asks borg for the
  repository's totals (``borg info --json`` + ``borg list``, through the same pool transport and :class:`Repo` the
  run's prune/compact used) and writes ``Repository.size_bytes`` (borg's ``unique_csize``: deduplicated and
  compressed, what the repository occupies) and ``size_checked_at``. Then the pool's free and total space are
  measured (df on the pool host, :func:`bot.backup.capacity.measure_pool`) and its threshold looked at. A failure
  to measure never changes the run's outcome: it is logged, the old size kept, a pool's reason stored in
  ``measure_error``.
* Hourly (:meth:`Accounting.refresh_all`, one of the scheduler's ``hourly`` callables): every pool's free space,
  :data:`PARALLEL` pools at a time, each bounded by :data:`POOL_TIMEOUT`, so an unreachable pool costs at most that
  and never stalls the scheduler (the scheduler runs its hourly jobs in their own task anyway).
* Threshold: when a pool's fill (the fuller of quota and disk) reaches ``alert_threshold_pct``, one
  :data:`POOL_ALERT` :class:`~bot.alerts.Alert` is published per crossing (``alert_active`` remembers it); the
  Slack layer posts it to the admins' channel, else the channels of the chains using the pool.
* Before a backup: :func:`quota_problem` is the sentence (with the numbers) refusing a run on a pool over quota.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.alerts import Alert, AlertBus
from bot.backup import capacity
from bot.backup.plan import human
from bot.borg import info as borg_info
from bot.borg.repo import Repo
from bot.borg.runner import BorgError
from bot.transport.base import Transport, TransportError
from storage.models import Repository, StoragePool

log = logging.getLogger(__name__)

POOL_ALERT = "pool_threshold"  # an Alert kind: a pool crossed its alert threshold (bot.slack.reports posts it)
PARALLEL = 2  # pools measured at once by the hourly refresh
POOL_TIMEOUT = 30.0  # seconds one pool's measurement may take, whatever hangs
INFO_TIMEOUT = 600.0  # borg info may sync the pool-side cache of a large repository first
LOCK_WAIT = 30
QUOTA_HINT = ("Make room in the pool's quota: lower the chain's retention and prune (`/backup prune`), move the "
              "chain to another pool, or ask an admin to raise the pool's quota (`/backup pools`); then run it "
              "again.")  # fmt: skip


@dataclass(frozen=True)
class Measured:
    """What one accounting pass found (None where it could not measure)."""

    size_bytes: int | None
    archives: int | None
    usage: capacity.Usage | None
    alerted: bool


async def quota_problem(repository_id: int | None) -> str | None:
    """Given a repository id, return the refusal sentence when its pool is over quota (numbers included), else
    None: checked before a backup touches borg."""
    if repository_id is None:
        return None
    repository = await Repository.filter(id=repository_id).select_related("pool").first()
    if repository is None or not repository.pool.quota_bytes:
        return None
    pool = repository.pool
    return capacity.quota_refusal(pool, await capacity.usage(pool))


def alert_for(pool: StoragePool, used: capacity.Usage) -> Alert:
    """Given a pool that just crossed its threshold, return the alert saying so with its numbers and what to do."""
    fill = used.fill_pct or 0.0
    which = "quota" if used.quota_pct is not None and used.quota_pct >= (used.disk_pct or 0.0) else "disk"
    message = (f"Storage pool {pool.name} is {fill:.0f}% full ({which}), at or above its alert threshold of "
               f"{used.threshold_pct}%: {capacity.describe(pool, used)}. Prune old archives (lower a retention), "
               "move a chain to another pool, or raise the quota or the disk before backups fail.")  # fmt: skip
    details: dict[str, Any] = {
        "pool_id": pool.id, "pool_name": pool.name, "fill_pct": round(fill, 1), "threshold_pct": used.threshold_pct,
        "by": which, "used_bytes": used.used_bytes, "quota_bytes": used.quota_bytes, "free_bytes": used.free_bytes,
        "total_bytes": used.total_bytes,
    }  # fmt: skip
    return Alert(team_id=pool.team_id, kind=POOL_ALERT, message=message, details=details)


@dataclass
class Accounting:
    """Measures repositories and pools for the run layer; ``services``: the SSH pool (``pool``) and ``borg``."""

    services: Any
    alerts: AlertBus | None = None
    pool_timeout: float = POOL_TIMEOUT
    info_timeout: float = INFO_TIMEOUT

    async def after_run(self, repository_id: int | None, transport: Transport, repo: Repo, *,
                        borg: str | None = None) -> Measured:  # fmt: skip
        """Given the repository a run changed and the bot's access to it (the run's own transport, Repo and borg),
        store its size, refresh its pool and look at the threshold. Never raises (a run's outcome does not depend
        on accounting)."""
        size = archives = None
        try:
            if repository_id is None:
                return Measured(None, None, None, False)
            totals = await self.measure_repository(repository_id, transport, repo, borg=borg)
            size, archives = (totals.unique_csize, totals.archives) if totals else (None, None)
            row = await Repository.filter(id=repository_id).select_related("pool__server").first()
            if row is None:
                return Measured(size, archives, None, False)
            used, alerted = await self.refresh_pool(row.pool)
            return Measured(size, archives, used, alerted)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("storage accounting after a run of repository %s failed", repository_id)
            return Measured(size, archives, None, False)

    async def measure_repository(self, repository_id: int, transport: Transport, repo: Repo, *,
                                 borg: str | None = None) -> borg_info.RepoInfo | None:  # fmt: skip
        """Given a repository and the bot's access to it, ask borg for its totals and store its size; on failure log
        why and keep the old size (None is returned)."""
        borg = borg or getattr(self.services, "borg", "borg")
        try:
            totals = await borg_info.measure(transport, repo, borg=borg, lock_wait=LOCK_WAIT,
                                             timeout=self.info_timeout)  # fmt: skip
        except (BorgError, TransportError, borg_info.InfoError, TimeoutError) as error:
            log.warning("the size of repository %s could not be measured (kept the old one): %s", repository_id, error)
            return None
        await Repository.filter(id=repository_id).update(size_bytes=totals.unique_csize,
                                                         size_checked_at=datetime.now(UTC))  # fmt: skip
        log.info("repository %s: %s in %s archive(s)", repository_id, human(totals.unique_csize), totals.archives)
        return totals

    async def refresh_pool(self, pool: StoragePool) -> tuple[capacity.Usage, bool]:
        """Given a pool (``server`` loaded), measure its free space within ``pool_timeout`` and post the threshold
        alert when it just crossed; returns its usage and whether it alerted."""
        try:
            async with asyncio.timeout(self.pool_timeout):
                used = await capacity.measure_pool(pool, self.services, timeout=min(15.0, self.pool_timeout))
        except TimeoutError:
            reason = f"{pool.name} did not answer within {self.pool_timeout:g} s."
            await StoragePool.filter(id=pool.id).update(measure_error=reason)
            pool.measure_error = reason
            used = await capacity.usage(pool)
        return used, await self.check_threshold(pool, used)

    async def check_threshold(self, pool: StoragePool, used: capacity.Usage) -> bool:
        """Given a pool and its usage, publish the one alert of a new crossing; True when it did."""
        if not await capacity.threshold_crossed(pool, used):
            return False
        log.warning("storage pool %s (%s) crossed its %s%% threshold", pool.id, pool.team_id, used.threshold_pct)
        if self.alerts is not None:
            await self.alerts.publish(alert_for(pool, used))
        return True

    async def refresh_all(self) -> int:
        """Refresh every pool's free space, :data:`PARALLEL` at a time (the scheduler's hourly job); returns how many
        pools were measured without error."""
        pools = await StoragePool.all().select_related("server").order_by("id")
        gate = asyncio.Semaphore(PARALLEL)

        async def one(pool: StoragePool) -> bool:
            async with gate:
                try:
                    await self.refresh_pool(pool)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("refreshing storage pool %s failed", pool.id)
                    return False
                return pool.measure_error is None

        return sum(await asyncio.gather(*(one(pool) for pool in pools)))


__all__ = ["POOL_ALERT", "QUOTA_HINT", "Accounting", "Measured", "alert_for", "quota_problem"]
