"""Executing one claimed run, and telling the notification layer about it.

* ``backup``: the chain's rows become engine plans (``inputs_from_chain`` + ``build_plan``, one per source), the
  plans run (``run_chain``: hooks, snapshot, create, proof, then prune + compact per retention), the merged result
  is stored with ``record`` through the queue (which retries transient failures). When the repository has a
  usable ``prune_schedule`` the backup does not prune: the scheduler queues ``prune`` runs for that instead.
* ``check``: ``borg check`` of the chain's repository from the bot's own pool access; options come from the
  run's ``stats["options"]`` (``scope``: all | repository | archives, ``verify_data``: bool).
* ``restore``: what ``Run.spec`` describes (:mod:`bot.runs.restoring`): files into a new directory or a dump into a
  new database on a chosen server, verified; the result in ``stats["restore"]`` and ``spec["result"]``.
* ``drill``: the newest archives restored into a scratch place on the drill server, verified, timed and removed
  (:mod:`bot.runs.drilling`); the result in ``stats["drill"]`` and ``spec["drill"]``.
* ``prune``: the repository's retention applied to each of its archive groups from the bot's pool access, then
  ``borg compact`` (``prune_repository``); the run's stats have the after-backup prune's shape (``jobs[].pruned``,
  ``freed_bytes``), so the same prune report describes it. Repository-level: ``chain_id`` may be None.

Storage (:mod:`bot.runs.accounting`): a backup whose repository's pool is over its quota fails before anything
touches a server (kind ``quota``, the sentence with the numbers); after a backup or prune that changed the
repository, its size (``borg info``) is stored and its pool's free space refreshed, with the run's own pool access,
Repo and borg. Accounting never changes a run's outcome.

Every final state (and every failure that will be retried) is published as an :class:`~bot.alerts.Alert`:
``run_succeeded``, ``run_failed``, ``run_skipped``, ``run_interrupted`` with the chain, the run and the result's
kind, reason and hint in ``details``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from bot.alerts import Alert, AlertBus
from bot.backup import plan as planning
from bot.backup import schedule as sched
from bot.backup.drill import DRILL_ROOT
from bot.backup.runner import ChainPlan, ChainResult, prune_repository, run_chain
from bot.borg import check as borg_check
from bot.borg.repo import Repo
from bot.borg.runner import KINDS, BorgError
from bot.monitoring import ping_chain
from bot.runs import orphans
from bot.runs.accounting import QUOTA_HINT, Accounting, quota_problem
from bot.runs.drilling import execute_drill
from bot.runs.integrity import RecordGuard
from bot.runs.queue import RunOutcome, RunQueue, is_transient
from bot.runs.restoring import execute_restore
from bot.transport.base import Transport, TransportError
from storage.models import BackupChain, ChainStatus, Repository, Run, RunKind, RunStatus

log = logging.getLogger(__name__)

PlanHook = Callable[[ChainPlan, Run], ChainPlan]

_ALERT = {
    RunStatus.SUCCEEDED: "run_succeeded",
    RunStatus.WARNING: "run_succeeded",
    RunStatus.FAILED: "run_failed",
    RunStatus.QUEUED: "run_failed",  # failed, will be retried
    RunStatus.SKIPPED: "run_skipped",
    RunStatus.INTERRUPTED: "run_interrupted",
}


async def announce(alerts: AlertBus | None, run: Run, *, retry: Run | None = None,
                   result: ChainResult | RunOutcome | None = None) -> Alert | None:  # fmt: skip
    """Publish the alert for ``run``'s current status (nothing for a status that is not reported)."""
    kind = _ALERT.get(RunStatus(run.status))
    if alerts is None or kind is None:
        return None
    chain = await BackupChain.get_or_none(id=run.chain_id) if run.chain_id else None  # type: ignore[attr-defined]
    repository = await Repository.get_or_none(id=run.repository_id) if run.repository_id else None  # type: ignore[attr-defined]
    name = chain.name if chain else (repository.name if repository else f"run {run.id}")
    error_kind = getattr(result, "kind", None) or run.error_kind
    hint = getattr(result, "hint", "") or (KINDS[error_kind][1] if error_kind in KINDS else "")
    details: dict[str, Any] = {
        "run_id": run.id, "run_kind": RunKind(run.kind).value, "status": RunStatus(run.status).value,
        "chain_id": run.chain_id, "chain_name": chain.name if chain else None,  # type: ignore[attr-defined]
        "repository_id": run.repository_id, "attempts": run.attempts,  # type: ignore[attr-defined]
        "kind": error_kind, "reason": getattr(result, "reason", "") or run.error or "", "hint": hint,
        "scheduled_for": run.scheduled_for.isoformat() if run.scheduled_for else None,
        "archive": run.archive_name, "stats": run.stats,
        "notify_channel": chain.notify_channel if chain else None,
    }  # fmt: skip
    if run.status == RunStatus.QUEUED:
        details["will_retry"] = True
        details["next_attempt_at"] = run.next_attempt_at.isoformat() if run.next_attempt_at else None
    if retry is not None:
        details["retry_run_id"] = retry.id
    what = {"run_succeeded": "succeeded", "run_failed": "failed", "run_skipped": "was skipped",
            "run_interrupted": "was interrupted"}[kind]  # fmt: skip
    message = f"{RunKind(run.kind).value.capitalize()} of {name} {what}"
    if kind != "run_succeeded" and details["reason"]:
        message += f": {details['reason']}"
    alert = Alert(team_id=run.team_id, kind=kind, message=message, details=details)
    await alerts.publish(alert)
    return alert


def merge(results: list[ChainResult]) -> ChainResult:
    """One result for a chain with several sources: all jobs, the worst status, the first failure's cause."""
    if len(results) == 1:
        return results[0]
    first = results[0]
    merged = ChainResult(status="ok", jobs=[j for r in results for j in r.jobs], started_at=first.started_at,
                         finished_at=max(r.finished_at for r in results))  # fmt: skip
    merged.notes = [n for r in results for n in r.notes]
    freed = [r.freed_bytes for r in results if r.freed_bytes is not None]
    merged.freed_bytes = sum(freed) if freed else None
    merged.maintenance_error = next((r.maintenance_error for r in results if r.maintenance_error), None)
    merged.maintenance_refused = next((r.maintenance_refused for r in results if r.maintenance_refused), None)
    failed = next((r for r in results if r.status == "failed"), None)
    if failed is not None:
        merged.status, merged.kind, merged.reason, merged.hint = "failed", failed.kind, failed.reason, failed.hint
    elif any(r.status == "warning" for r in results):
        merged.status = "warning"
    return merged


@dataclass
class Executor:
    """Runs one claimed :class:`Run` to its stored result. ``services``: ``pool`` (SSHPool) and ``borg``."""

    queue: RunQueue
    services: Any
    alerts: AlertBus | None = None
    plan_hook: PlanHook | None = None  # tests: e.g. make a job slow
    on_progress: Callable[[Run, dict[str, Any]], None] | None = None
    accounting: Accounting | None = None  # repository sizes and pool space after runs (default: on)
    drill_root: str = DRILL_ROOT  # where drills restore files on the drill server (tests: their own directory)

    def __post_init__(self) -> None:
        if self.accounting is None:
            self.accounting = Accounting(self.services, self.alerts)

    async def __call__(self, run: Run) -> Run:
        pinged = await self._ping(run, "start")
        try:
            with orphans.recording(run):  # what it starts on servers, to stop it if this process dies
                outcome = await self._work(run)
        except _Early as early:
            outcome = early.outcome
        stored = await self.queue.complete(run, outcome)
        if stored.status == RunStatus.INTERRUPTED:
            # Not ours any more: another worker took this one for dead, interrupted it and announced that; its
            # retry will ping and report. Saying it again (or pinging "fail") would report one event twice.
            return stored
        if pinged is not None:
            await ping_chain(pinged, "success" if stored.status in (RunStatus.SUCCEEDED, RunStatus.WARNING) else "fail")
        await announce(self.alerts, stored, result=outcome)
        return stored

    async def _work(self, run: Run) -> ChainResult | RunOutcome:
        if run.kind == RunKind.CHECK:
            return await self._check(run)
        if run.kind in (RunKind.BACKUP, RunKind.TEST):
            return await self._backup(run)
        if run.kind == RunKind.PRUNE:
            return await self._prune(run)
        if run.kind == RunKind.RESTORE:
            return await execute_restore(run, self.services, self.alerts)
        if run.kind == RunKind.DRILL:
            return await execute_drill(run, self.services, root=self.drill_root)
        return RunOutcome(status="failed", kind="plan",
                          reason=f"Runs of kind {run.kind} are not executed by the queue yet.")  # fmt: skip

    async def clean_up(self, run: Run) -> list[str]:
        """After a crash: stop what ``run`` (found interrupted) left running on servers (:mod:`bot.runs.orphans`)."""
        return await orphans.stop_left_running(run, self.services)

    async def _ping(self, run: Run, event: str) -> BackupChain | None:
        """Healthchecks-style ping of a backup run's chain (when it has a ping URL); never raises."""
        if run.kind != RunKind.BACKUP or not run.chain_id:  # type: ignore[attr-defined]
            return None
        chain = await BackupChain.get_or_none(id=run.chain_id)  # type: ignore[attr-defined]
        if chain is not None:
            await ping_chain(chain, event)  # type: ignore[arg-type]
        return chain

    async def _backup(self, run: Run) -> ChainResult:
        chain = await BackupChain.get_or_none(id=run.chain_id) if run.chain_id else None  # type: ignore[attr-defined]
        if chain is None:
            raise _Early(RunOutcome(status="failed", kind="plan", reason="The run's chain no longer exists."))
        if chain.status not in (ChainStatus.ACTIVE, ChainStatus.PAUSED) and (  # queued just before a retire
                run.kind == RunKind.BACKUP or chain.status == ChainStatus.RETIRED):  # fmt: skip
            reason = "The chain was retired." if chain.status == ChainStatus.RETIRED else (
                f"The chain is {chain.status.value.replace('_', ' ')}: it does not run backups.")  # fmt: skip
            raise _Early(RunOutcome(status="failed", kind="plan", reason=reason))
        refusal = await quota_problem(chain.repository_id)  # type: ignore[attr-defined]
        if refusal is not None:  # before anything touches a server: no borg create on a pool over its quota
            raise _Early(RunOutcome(status="failed", kind="quota", reason=refusal, hint=QUOTA_HINT))
        try:
            inputs = await planning.inputs_from_chain(chain)
            if not inputs:
                raise planning.PlanProblem("source", "The chain has no sources.")
            own_schedule = await prunes_on_schedule(chain.repository_id)  # type: ignore[attr-defined]
            # The record of verified archives: filled by this run, compared before any prune/compact.
            guard = RecordGuard(run.team_id, chain.repository_id, run.id, self.alerts)  # type: ignore[attr-defined]
            plans = []
            for item in inputs:
                built = await planning.build_plan(item, self.services, run_id=f"r{run.id}a{run.attempts}")
                plan = replace(built.plan, prune=built.plan.prune and not own_schedule, guard=guard)
                if self.plan_hook is not None:
                    plan = self.plan_hook(plan, run)
                plans.append(plan)
        except planning.PlanProblem as problem:
            raise _Early(RunOutcome(status="failed", kind="plan", reason=str(problem),
                                    hint="Edit the chain's settings, then run it again.")) from None  # fmt: skip
        except TransportError as error:
            hint = KINDS["unreachable"][1] if error.transient else ""
            raise _Early(RunOutcome(status="failed", kind=error.kind, reason=str(error), hint=hint)) from None

        def progress(event: dict[str, Any]) -> None:
            if self.on_progress is not None:
                self.on_progress(run, event)

        results = [await run_chain(plan, on_progress=progress if self.on_progress else None) for plan in plans]
        merged = merge(results)
        if any(job.status != "failed" for job in merged.jobs) or merged.freed_bytes:
            # The same pool access and Repo the proof and prune/compact used (their borg state, their base dir).
            await self._account(chain.repository_id, plans[0].pool, plans[0].repo_at_pool,  # type: ignore[attr-defined]
                                borg=plans[0].pool_borg)
        return merged

    async def _account(self, repository_id: int | None, transport: Any, repo: Repo, *,
                       borg: str | None = None) -> int | None:  # fmt: skip
        """Store the repository's size and refresh its pool after a run changed it; never fails the run."""
        if self.accounting is None:
            return None
        return (await self.accounting.after_run(repository_id, transport, repo, borg=borg)).size_bytes

    def _pool_side(self, repository: Repository) -> tuple[Transport, Repo, str]:
        """The bot's own access to a repository (``pool`` loaded), as a backup's plan has it: the pool's transport,
        the repository by path (its own borg state) and the pool-side borg."""
        return planning.repository_at_pool(repository, self.services)

    async def _check(self, run: Run) -> RunOutcome:
        started = datetime.now(UTC)
        repository = await Repository.filter(id=run.repository_id).select_related("pool__server").first()  # type: ignore[attr-defined]
        if repository is None:
            return RunOutcome(status="failed", kind="repo_missing", reason="The repository row no longer exists.")
        options = (run.stats or {}).get("options") or {}
        scope = options.get("scope") or "all"
        verify = bool(options.get("verify_data"))
        transport, repo, borg = self._pool_side(repository)
        try:
            report = await borg_check.run(transport, repo, scope, verify_data=verify, borg=borg)
        except BorgError as error:
            return RunOutcome(status="failed", kind=error.kind, reason=str(error), hint=error.hint, started_at=started)
        except TransportError as error:
            return RunOutcome(status="failed", kind=error.kind, reason=str(error), started_at=started,
                              hint=KINDS["unreachable"][1] if error.transient else "")  # fmt: skip
        stats = {"check": {"ok": report.ok, "problems": list(report.problems), "scope": scope, "verify_data": verify}}
        if report.ok:
            return RunOutcome(status="ok", stats=stats, started_at=started, finished_at=datetime.now(UTC),
                              log=f"borg check ({scope}{', verify-data' if verify else ''}): no problems")  # fmt: skip
        problems = "; ".join(report.problems)[:1000] or "borg check reported problems"
        return RunOutcome(status="failed", kind="integrity", reason=problems, hint=KINDS["integrity"][1],
                          stats=stats, started_at=started, finished_at=datetime.now(UTC), log=problems)  # fmt: skip

    async def _prune(self, run: Run) -> RunOutcome:
        repository = await Repository.filter(id=run.repository_id).select_related("pool__server").first()  # type: ignore[attr-defined]
        if repository is None:
            return RunOutcome(status="failed", kind="repo_missing", reason="The repository row no longer exists.")
        try:
            policy = planning.retention_policy(repository.retention)
        except planning.PlanProblem as problem:
            return RunOutcome(status="failed", kind="plan", reason=str(problem),
                              hint="Fix the repository's retention policy.")  # fmt: skip
        if not policy:
            return RunOutcome(status="failed", kind="plan", hint="Give the repository a retention policy.",
                              reason=f"{repository.name} has a prune schedule but no retention policy: nothing "
                                     "says which archives to keep, so none were pruned.")  # fmt: skip
        transport, repo, borg = self._pool_side(repository)
        guard = RecordGuard(run.team_id, repository.id, None, self.alerts)
        result = await prune_repository(transport, repo, repository.name, policy, borg=borg, guard=guard)
        stats = {**result.stats(), "repository": repository.name}
        if result.status == "refused":  # the repository differs from the record: nothing touched, an admin decides
            return RunOutcome(status="warning", kind=result.kind, reason=result.reason, hint=result.hint,
                              stats={**stats, "maintenance_refused": result.reason}, started_at=result.started_at,
                              finished_at=result.finished_at, log=result.reason)  # fmt: skip
        if result.status == "ok" or any(result.pruned.values()):  # the same access, Repo and borg as the prune
            stats["repository_bytes"] = await self._account(repository.id, transport, repo, borg=borg)
        count = stats["archives_pruned"]
        log_line = f"borg prune of {len(result.pruned)} archive group(s): {count} archive(s) pruned"
        return RunOutcome(status=result.status, kind=result.kind, reason=result.reason, hint=result.hint,
                          stats=stats, started_at=result.started_at, finished_at=result.finished_at,
                          log=log_line if result.status == "ok" else result.reason)  # fmt: skip


async def prunes_on_schedule(repository_id: int | None) -> bool:
    """Whether the repository prunes on its own schedule (a usable ``prune_schedule``), so backups must not."""
    if repository_id is None:
        return False
    raw = await Repository.filter(id=repository_id).values_list("prune_schedule", flat=True)
    try:
        return bool(raw) and sched.stored(raw[0]) is not None
    except sched.ScheduleError:
        return False  # an unusable prune schedule is never run: keep pruning after backups


class _Early(Exception):
    def __init__(self, outcome: RunOutcome) -> None:
        self.outcome = outcome


__all__ = ["Executor", "announce", "is_transient", "merge", "prunes_on_schedule"]
