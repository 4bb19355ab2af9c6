"""What is particular to the embedded run queue (:class:`SqlQueue`) on SQLite, PostgreSQL and MariaDB: its start-up
recovery may assume it is the only process, and its backoff is capped. The behaviour every backend shares
(ordering, per-repository exclusivity under concurrent claims, retries, windows, crash recovery, idempotent
enqueue) is in ``tests/test_queue_contract.py``, checked against this queue and the procrastinate one."""

from __future__ import annotations

from bot.runs.queue import RunQueue, RunSpec, SqlQueue
from storage.models import Run, RunStatus
from tests.test_queue_contract import TEAM, past, repos


async def test_start_up_recovery_takes_every_running_run_periodic_recovery_none(database) -> None:
    """One bot process: at its start nothing can still be running, whichever worker id claimed it; while it runs,
    no other process can die, so the periodic check finds nothing (the procrastinate queue differs: see its tests)."""
    queue = SqlQueue()
    assert isinstance(queue, RunQueue)
    r = await repos(2)
    runs = [await queue.enqueue(RunSpec(TEAM, repository_id=x.id, scheduled_for=past(3))) for x in r]
    assert {(await queue.claim("host-a:1")).id, (await queue.claim("host-b:2")).id} == {run.id for run in runs}
    assert await queue.recover_stalled() == []
    assert await Run.filter(status=RunStatus.RUNNING).count() == 2
    recovered = await queue.recover_interrupted()
    assert sorted(run.id for run, _ in recovered) == sorted(run.id for run in runs)
    assert all(retry is not None and retry.status == RunStatus.QUEUED for _, retry in recovered)
    assert await Run.filter(status=RunStatus.INTERRUPTED).count() == 2


def test_backoff_doubles_up_to_its_cap() -> None:
    queue = SqlQueue(backoff=60, backoff_cap=300)
    assert [queue.delay(n).total_seconds() for n in (1, 2, 3, 4, 9)] == [60, 120, 240, 300, 300]
