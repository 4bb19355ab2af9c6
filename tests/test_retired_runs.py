"""A backup queued in the instant between a retire and the scheduler's refresh is refused by the executor before
anything touches a server ("The chain was retired."); a paused chain still runs a manual backup's plan (it fails
later, on its missing sources — proof that the status check let it through)."""

from __future__ import annotations

from bot.runs.execute import Executor
from bot.runs.queue import RunSpec, SqlQueue
from storage.models import ChainStatus, Run, RunKind, RunStatus
from tests.test_run_worker import DAILY, plain_chain
from tests.test_wizard_step_pool_repo import TEAM


async def _run_backup(chain_id: int, repository_id: int) -> Run:
    queue = SqlQueue()
    await queue.enqueue(RunSpec(TEAM, kind=RunKind.BACKUP, chain_id=chain_id, repository_id=repository_id))
    claimed = await queue.claim("worker")
    return await Executor(queue, services=None)(claimed)


async def test_a_backup_of_a_retired_chain_is_refused_and_a_paused_one_is_not(sqlite_db) -> None:
    retired = await plain_chain("gone", DAILY, status=ChainStatus.RETIRED)
    stored = await _run_backup(retired.id, retired.repository_id)  # type: ignore[attr-defined]
    assert stored.status == RunStatus.FAILED and stored.error_kind == "plan"
    assert "The chain was retired." in (stored.error or "")
    paused = await plain_chain("resting", DAILY, status=ChainStatus.PAUSED)
    stored = await _run_backup(paused.id, paused.repository_id)  # type: ignore[attr-defined]
    assert stored.status == RunStatus.FAILED and "retired" not in (stored.error or "")
    assert "no sources" in (stored.error or "")
