"""Storing a chain run's result on its Run row (status, timings, archive, stats, error, log excerpt)."""

from __future__ import annotations

from dataclasses import asdict

from bot.backup.runner import ChainResult
from storage.models import Run, RunStatus

_STATUS = {"ok": RunStatus.SUCCEEDED, "warning": RunStatus.WARNING, "failed": RunStatus.FAILED}
EXCERPT_LIMIT = 4000


def summary(result: ChainResult) -> dict:
    """Totals over the jobs plus each job's outcome: what reports and the App Home show."""
    jobs = [
        {
            "job": o.suffix, "archive": o.archive, "status": o.status, "kind": o.kind, "reason": o.reason,
            "stats": asdict(o.stats) if o.stats else None, "pruned": o.pruned,
        }
        for o in result.jobs
    ]  # fmt: skip
    stats = [o.stats for o in result.jobs if o.stats]
    return {
        "jobs": jobs,
        "original_size": sum(s.original_size for s in stats),
        "compressed_size": sum(s.compressed_size for s in stats),
        "deduplicated_size": sum(s.deduplicated_size for s in stats),
        "nfiles": sum(s.nfiles for s in stats),
        "duration": result.duration,
        "freed_bytes": result.freed_bytes,
        "maintenance_error": result.maintenance_error,
        "maintenance_refused": result.maintenance_refused,
    }


async def record(run: Run, result: ChainResult) -> Run:
    run.status = _STATUS[result.status]
    run.started_at, run.finished_at = result.started_at, result.finished_at
    archives = [o.archive for o in result.jobs if o.status != "failed"]
    run.archive_name = ", ".join(archives)[:255] or None
    run.stats = summary(result)
    run.error = None if result.status != "failed" else f"{result.reason} {result.hint}".strip()
    run.error_kind = result.kind
    lines = [f"{o.suffix}: {o.status} {o.reason}".strip() for o in result.jobs]
    run.log_excerpt = "\n".join(lines)[-EXCERPT_LIMIT:] or None
    await run.save()
    return run
