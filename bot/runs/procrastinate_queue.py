"""The scale-out run queue: the :class:`~bot.runs.queue.RunQueue` protocol on procrastinate (PostgreSQL only).

Why procrastinate: its job table gives what several worker processes on several machines need and one process's
compare-and-set cannot — a fetch that is atomic across connections (``FOR UPDATE SKIP LOCKED``), a per-job
``lock`` that no two running jobs share, priorities, and worker heartbeats that tell a dead process from a slow
one. Workers *pull*: :meth:`ProcrastinateQueue.claim` calls procrastinate's ``fetch_job`` and then moves the
run's row to ``running``; procrastinate's own task runner is not used, so a run executes exactly as with the
embedded queue (:class:`bot.runs.execute.Executor`), and :class:`~storage.models.Run` rows stay the record that
reports, the App Home and ``/metrics`` read.

How the run queue maps onto procrastinate:

* **one job per due run.** A queued run whose due time has come gets one job (``Run.job_id``; the job's args
  carry the run id, its ``queueing_lock`` ``run:<id>`` forbids a second waiting job for it). Runs not yet due
  (the future, a retry backing off) have no job: procrastinate's lock rule lets a *waiting* job of a lock block
  every later job of that lock whatever its ``scheduled_at``, so a job deferred early would hold the repository
  for the whole backoff. Rows that other code inserted directly (the wizard's and the App Home's "run now", the
  alert's Retry button) are adopted the same way, under a PostgreSQL advisory lock so that workers do not race.
* **per-repository lock**: the job's ``lock`` is the run's ``lock_key`` (``repo:<id>``), so procrastinate never
  hands out two jobs of one repository while one is ``doing``, across processes and machines.
* **priority**: procrastinate orders by job priority, then job id. The job priority is the run's priority ×
  10⁸ plus how early the run became due (minutes before a far epoch), so "highest priority, then oldest due"
  holds as in the embedded queue, and the lock rule's "an earlier job of the lock goes first" agrees with it.
* **retries**: a transient failure puts the run back to ``queued`` with an exponential ``next_attempt_at``, its
  job is finished, and a new job is deferred once the run is due again; permanent failures are final.
* **windows**: runs whose window ended are never adopted or taken; :meth:`skip_expired` marks them ``skipped``.
* **stalled runs**: each process registers as a procrastinate worker and sends heartbeats. Any live process
  (:meth:`recover_stalled`, called periodically by every :class:`~bot.runs.worker.Worker`) takes the
  ``doing`` jobs of workers whose heartbeat is older than ``stalled_after``, marks their runs ``interrupted``
  (never successful) and queues a retry. Only dead workers' runs are touched, unlike the embedded queue's
  start-up recovery, which may assume it is the only process.

Every step that changes a run is a compare-and-set on its row (status and job id), so a worker that was taken
for dead but was only slow cannot overwrite what the recovering worker decided.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from procrastinate import App, PsycopgConnector
from procrastinate import exceptions as pexc
from procrastinate.jobs import Job, Status
from procrastinate.manager import JobManager

from bot.backup.runner import ChainResult
from bot.config import ConfigError
from bot.runs.queue import (
    CRASH_REASON,
    RowQueue,
    RunOutcome,
    RunSpec,
    _utc,
    create_retry,
    failure_text,
    insert_rows,
    is_transient,
    lock_key_for,
    store_result,
)
from storage.models import Run, RunStatus
from storage.orm import F, Q, QuerySet, in_transaction

log = logging.getLogger(__name__)

QUEUE = "backup_runs"
TASK = "backup_bot.run"
ADOPT_LOCK = 0x62626F74  # pg advisory lock key ("bbot"): one process adopts job-less runs at a time
PRIORITY_SCALE = 10**8  # minutes: ~190 years of due times below one priority step
PRIORITY_MAX = 20  # 20 × 10⁸ + 10⁸ stays inside PostgreSQL's integer
EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
STALLED_REASON = (
    "The worker running this run stopped sending heartbeats (process killed or machine lost); another worker "
    "marked it interrupted and queued a retry — it was not reported successful."
)


class SchemaMissing(ConfigError):
    """procrastinate's tables are not in the database yet (``backup-bot migrate`` creates them)."""


def psycopg_dsn(database_url: str) -> str:
    """libpq's URI for a Tortoise ``postgres://`` URL (Tortoise's own query parameters are not libpq's)."""
    parts = urlsplit(database_url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"procrastinate needs a postgres:// database URL, not {parts.scheme or 'none'}://")
    return parts._replace(scheme="postgresql", query="", fragment="").geturl()


def job_priority(priority: int, due: datetime) -> int:
    """procrastinate priority for a run: its own priority first, then the earlier due the higher (see module)."""
    minutes = int((due.astimezone(UTC) - EPOCH).total_seconds() // 60)
    earliness = PRIORITY_SCALE - 1 - min(max(minutes, 0), PRIORITY_SCALE - 1)
    return min(max(priority, 0), PRIORITY_MAX) * PRIORITY_SCALE + earliness


def _open_window(now: datetime) -> Q:
    return Q(window_ends_at=None) | Q(window_ends_at__gt=now)


def _waiting(now: datetime) -> QuerySet[Run]:
    """Queued runs without a job that are due (rows inserted by other code may lack ``next_attempt_at``)."""
    due = Q(next_attempt_at__lte=now) | Q(next_attempt_at=None)
    return Run.filter(status=RunStatus.QUEUED, job_id=None).filter(due, _open_window(now))


def _due_of(run: Run) -> datetime:
    return run.next_attempt_at or run.scheduled_for or run.created_at


class ProcrastinateQueue(RowQueue):
    """Runs queued in procrastinate's job table on the app's PostgreSQL database; see the module docstring.

    ``open()`` connects, registers this process as a procrastinate worker and starts its heartbeat; ``close()``
    unregisters it (``unregister=False`` leaves the registration behind as a killed process would: tests)."""

    def __init__(self, database_url: str, *, stalled_after: float = 60.0, heartbeat: float = 10.0,
                 pool_size: int = 4, adopt_batch: int = 500, **policy: Any) -> None:  # fmt: skip
        super().__init__(**policy)
        self.stalled_after = stalled_after
        self.heartbeat = heartbeat
        self.adopt_batch = adopt_batch
        self.connector = PsycopgConnector(conninfo=psycopg_dsn(database_url), min_size=1, max_size=pool_size,
                                          kwargs={"application_name": "backup-bot"})  # fmt: skip
        self.app = App(connector=self.connector)
        self.worker: int | None = None  # procrastinate's id of this process
        self._beat: asyncio.Task | None = None
        self._suspects: dict[int, float] = {}  # doing job id → when first seen without its run

    @property
    def jobs(self) -> JobManager:
        return self.app.job_manager

    # ------------------------------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        await self.app.open_async()
        if not await self.schema_ready():
            await self.app.close_async()
            raise SchemaMissing("procrastinate's tables are missing: run `backup-bot migrate` once, then start again.")
        self.worker = await self.jobs.register_worker()
        self._beat = asyncio.create_task(self._heartbeat(), name="procrastinate-heartbeat")

    async def close(self, *, unregister: bool = True) -> None:
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
            self._beat = None
        if unregister and self.worker is not None:
            with contextlib.suppress(pexc.ConnectorException):
                await self.jobs.unregister_worker(self.worker)
        self.worker = None
        await self.app.close_async()

    async def schema_ready(self) -> bool:
        return await self.jobs.check_connection_async()

    async def apply_schema(self) -> bool:
        """Create procrastinate's tables when they are missing (idempotent); True when they were created."""
        if await self.schema_ready():
            return False
        try:
            await self.app.schema_manager.apply_schema_async()
        except pexc.ConnectorException:
            if not await self.schema_ready():  # not a concurrent `migrate` that made them first
                raise
            return False
        return True

    async def _heartbeat(self) -> None:
        """Every ``heartbeat`` seconds; re-registers when another process pruned us as stalled (we were slow)."""
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                await self._beat_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("procrastinate heartbeat failed; trying again", exc_info=True)

    async def _beat_once(self) -> None:
        assert self.worker is not None
        await self.jobs.update_heartbeat(self.worker)
        rows = await self.connector.execute_query_all_async(
            query="SELECT id FROM procrastinate_workers WHERE id = %(worker)s", worker=self.worker
        )
        if not rows:
            self.worker = await self.jobs.register_worker()
            log.warning("this worker was taken for dead (no heartbeat for %ss); registered again as %s",
                        self.stalled_after, self.worker)  # fmt: skip

    # -------------------------------------------------------------------------------------------- enqueue

    async def enqueue_many(self, specs: Sequence[RunSpec]) -> list[Run]:
        rows = await insert_rows(specs)
        if any(row.status == RunStatus.QUEUED for row in rows):
            await self.adopt()
        return rows

    async def adopt(self, now: datetime | None = None) -> int:
        """Give every due queued run without a job its job (see the module docstring); returns how many."""
        now = _utc(now) or datetime.now(UTC)
        if not await _waiting(now).exists():
            return 0
        unbound: list[int] = []
        adopted = 0
        async with in_transaction() as conn:
            await conn.execute_query("SELECT pg_advisory_xact_lock($1)", [ADOPT_LOCK])
            waiting = _waiting(now).order_by("-priority", "next_attempt_at", "id").limit(self.adopt_batch)
            rows = [row for row in await waiting if _due_of(row) <= now]
            if not rows:
                return 0
            job_ids = await self._defer([self._job_for(row) for row in rows])
            for row, job_id in zip(rows, job_ids, strict=True):
                if job_id is None:
                    continue
                bound = await Run.filter(id=row.id, status=RunStatus.QUEUED, job_id=None).update(
                    job_id=job_id, next_attempt_at=_due_of(row), lock_key=self._lock_of(row)
                )
                if bound:
                    adopted += 1
                else:
                    unbound.append(job_id)  # a worker took it meanwhile (then the job is doing: no-op)
        for job_id in unbound:
            with contextlib.suppress(pexc.ConnectorException):
                await self.jobs.cancel_job_by_id_async(job_id, delete_job=True)
        return adopted

    @staticmethod
    def _lock_of(row: Run) -> str | None:
        return row.lock_key or lock_key_for(row.repository_id)  # type: ignore[attr-defined]

    def _job_for(self, row: Run) -> Job:
        return Job(queue=QUEUE, task_name=TASK, priority=job_priority(row.priority, _due_of(row)),
                   lock=self._lock_of(row), queueing_lock=f"run:{row.id}", task_kwargs={"run_id": row.id})  # fmt: skip

    async def _defer(self, jobs: list[Job]) -> list[int | None]:
        """Defer in one statement; when a run already has a waiting job (an adopter died before binding it),
        one by one, reusing the waiting job."""
        try:
            return [job.id for job in await self.jobs.batch_defer_jobs_async(jobs)]
        except pexc.AlreadyEnqueued:
            return [await self._defer_one(job) for job in jobs]

    async def _defer_one(self, job: Job) -> int | None:
        try:
            return (await self.jobs.defer_job_async(job)).id
        except pexc.AlreadyEnqueued:
            waiting = await self.jobs.list_jobs_async(queueing_lock=job.queueing_lock, status=Status.TODO.value)
            return next((found.id for found in waiting), None)

    # ---------------------------------------------------------------------------------------------- claim

    async def claim(self, worker_id: str, *, now: datetime | None = None) -> Run | None:
        now = _utc(now) or datetime.now(UTC)
        await self.adopt(now)
        for _ in range(self.batch):
            job = await self._fetch()
            if job is None:
                return None
            run = await self._take(job, worker_id, now)
            if run is not None:
                log.info("worker %s claimed run %s (job %s, %s)", worker_id, run.id, job.id, job.lock)
                return run
            await self._release(job.id)  # its run was skipped, cancelled or re-bound: the job is stale
        return None

    async def _fetch(self) -> Job | None:
        if self.worker is None:
            raise RuntimeError("ProcrastinateQueue.open() was not called")
        try:
            return await self.jobs.fetch_job(queues=[QUEUE], worker_id=self.worker)
        except pexc.ConnectorException:
            await self._beat_once()  # our registration may have been pruned: register again, then retry once
            return await self.jobs.fetch_job(queues=[QUEUE], worker_id=self.worker)

    async def _take(self, job: Job, worker_id: str, now: datetime) -> Run | None:
        """Move the job's run to ``running`` (compare-and-set); None when the run is not waiting for this job."""
        run_id = job.task_kwargs.get("run_id")
        if not isinstance(run_id, int):
            return None
        taken = await (
            Run.filter(id=run_id, status=RunStatus.QUEUED)
            .filter(Q(job_id=job.id) | Q(job_id=None), _open_window(now))
            .update(status=RunStatus.RUNNING, started_at=now, finished_at=None, attempts=F("attempts") + 1,
                    job_id=job.id, worker_id=worker_id[:128])
        )  # fmt: skip
        if taken:
            return await Run.get(id=run_id)
        # A window that ended after adoption: unbind, so skip_expired() reports it.
        await Run.filter(id=run_id, status=RunStatus.QUEUED, job_id=job.id).update(job_id=None)
        return None

    async def _release(self, job_id: int | None) -> None:
        """Finish (delete) a job: its run row holds the outcome. A job already gone is fine."""
        if job_id is None:
            return
        try:
            await self.jobs.finish_job_by_id_async(job_id, status=Status.FAILED, delete_job=True)
        except pexc.ConnectorException:
            log.debug("job %s was already finished", job_id)

    # ------------------------------------------------------------------------------------------- outcomes

    async def _ours(self, run: Run) -> bool:
        """Inside a transaction: lock the run's row; True while it is still ``running`` under our job."""
        current = await Run.filter(id=run.id).select_for_update().first()
        return current is not None and current.status == RunStatus.RUNNING and current.job_id == run.job_id

    async def _superseded(self, run: Run) -> Run:
        log.warning("run %s is no longer this worker's (recovered as stalled, or finished elsewhere); its result "
                    "is not stored", run.id)  # fmt: skip
        return await Run.get(id=run.id)

    async def complete(self, run: Run, result: ChainResult | RunOutcome) -> Run:
        job_id = run.job_id
        async with in_transaction():
            if not await self._ours(run):
                return await self._superseded(run)
            status, kind, reason, hint = await store_result(run, result)
            if status == "failed":
                run = await self._failed(run, failure_text(reason, hint), kind, None)
        await self._release(job_id)
        return run

    async def fail(self, run: Run, error: str, *, kind: str | None = None, transient: bool | None = None) -> Run:
        job_id = run.job_id
        async with in_transaction():
            if not await self._ours(run):
                return await self._superseded(run)
            run = await self._failed(run, error, kind, transient)
        await self._release(job_id)
        return run

    async def _failed(self, run: Run, error: str, kind: str | None, transient: bool | None) -> Run:
        """Retry later (a new job once due) or fail for good; the caller holds the row lock."""
        now = datetime.now(UTC)
        retry = self.retry_at(run, is_transient(kind) if transient is None else transient, now)
        run.error, run.error_kind, run.finished_at = error, kind, now
        run.status = RunStatus.QUEUED if retry else RunStatus.FAILED
        run.next_attempt_at = retry or run.next_attempt_at
        if retry:
            run.job_id = None
        await Run.filter(id=run.id).update(status=run.status, error=error, error_kind=kind, finished_at=now,
                                           next_attempt_at=run.next_attempt_at, job_id=run.job_id)  # fmt: skip
        return run

    async def interrupt(self, run: Run, reason: str) -> Run | None:
        now = datetime.now(UTC)
        retry = None
        async with in_transaction():
            changed = await Run.filter(id=run.id, status=RunStatus.RUNNING, job_id=run.job_id).update(
                status=RunStatus.INTERRUPTED, finished_at=now, error=reason, error_kind="interrupted"
            )
            if not changed:
                return None
            run.status, run.finished_at, run.error, run.error_kind = RunStatus.INTERRUPTED, now, reason, "interrupted"
            if run.attempts < self.max_attempts:
                retry = await create_retry(run, now)
        await self._release(run.job_id)
        return retry

    async def skip_expired(self, *, now: datetime | None = None) -> list[Run]:
        skipped = await super().skip_expired(now=now)
        for run in skipped:
            if run.job_id is not None:  # a waiting job would otherwise hold the repository's lock
                with contextlib.suppress(pexc.ConnectorException):
                    await self.jobs.cancel_job_by_id_async(run.job_id, delete_job=True)
        return skipped

    # ------------------------------------------------------------------------------------------- recovery

    async def recover_interrupted(self) -> list[tuple[Run, Run | None]]:
        """At start-up, the same as :meth:`recover_stalled`: other workers may be running their runs right now."""
        return await self.recover_stalled()

    async def recover_stalled(self) -> list[tuple[Run, Run | None]]:
        found: list[tuple[Run, Run | None]] = []
        stalled = await self.jobs.get_stalled_jobs(queue=QUEUE, seconds_since_heartbeat=self.stalled_after)
        for job in stalled:
            pair = await self._recover(job)
            if pair is not None:
                found.append(pair)
        found.extend(await self._reconcile())
        await self.jobs.prune_stalled_workers(self.stalled_after)
        return found

    async def _recover(self, job: Job) -> tuple[Run, Run | None] | None:
        """A ``doing`` job of a dead worker: its run → interrupted + retry; a job it fetched but never started
        goes, and its run is adopted again."""
        run_id = job.task_kwargs.get("run_id")
        run = await Run.get_or_none(id=run_id) if isinstance(run_id, int) else None
        if run is not None and run.status == RunStatus.RUNNING and run.job_id == job.id:
            log.warning("run %s: its worker (procrastinate worker %s) is gone; interrupting it", run.id, job.worker_id)
            return await self._interrupt_dead(run, STALLED_REASON)
        if run is not None:
            await Run.filter(id=run.id, status=RunStatus.QUEUED, job_id=job.id).update(job_id=None)
        await self._release(job.id)
        return None

    async def _interrupt_dead(self, run: Run, reason: str) -> tuple[Run, Run | None] | None:
        retry = await self.interrupt(run, reason)
        return (run, retry) if run.status == RunStatus.INTERRUPTED else None

    async def _reconcile(self) -> list[tuple[Run, Run | None]]:
        """Runs ``running`` without a ``doing`` job (left by the embedded queue, or a lost job) are interrupted;
        ``doing`` jobs no running run holds (a worker died between its run's update and the job's) are finished
        once seen twice ``stalled_after`` apart — a claim in progress holds such a job for milliseconds only.
        The running runs are read first: a run's job is ``doing`` before the run is ``running`` and until after
        it left ``running``, so a job missing from the later read is never a run still in progress."""
        running = await Run.filter(status=RunStatus.RUNNING).order_by("id")
        doing = {job.id: job for job in await self.jobs.list_jobs_async(queue=QUEUE, status=Status.DOING.value)}
        found = []
        for run in running:
            if run.job_id not in doing:
                pair = await self._interrupt_dead(run, CRASH_REASON)
                if pair is not None:
                    found.append(pair)
        held = {run.job_id for run in running}
        now = time.monotonic()
        for job_id in [job_id for job_id in doing if job_id not in held]:
            first = self._suspects.setdefault(job_id, now)
            if now - first >= self.stalled_after:
                held_now = await Run.filter(status=RunStatus.RUNNING, job_id=job_id).exists()
                if not held_now:
                    await self._release(job_id)
                self._suspects.pop(job_id, None)
        for job_id in [job_id for job_id in self._suspects if job_id not in doing]:
            self._suspects.pop(job_id, None)
        return found
