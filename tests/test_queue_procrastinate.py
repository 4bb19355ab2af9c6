"""The procrastinate backend beyond the shared contract, on the machine's PostgreSQL: how runs map onto jobs, that a
live worker's runs are never taken for stalled, and real worker *processes* on one database — never two runs of
one repository at once among them, and a worker killed with SIGKILL mid-run whose run another worker marks
interrupted and retries to success.

The worker processes are this module run as a script (``python -m tests.test_queue_procrastinate``): a real
:class:`~bot.runs.worker.Worker` on a real :class:`ProcrastinateQueue`, executing runs with a test-only function
that holds a per-repository marker file (created with ``O_EXCL``, so an overlap is caught as it happens, not
inferred from clocks) and writes its events and alerts as JSON lines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.runs.procrastinate_queue import QUEUE, ProcrastinateQueue, job_priority
from bot.runs.queue import RunOutcome, RunSpec
from storage import db
from storage.models import Run, RunKind, RunStatus
from tests.test_queue_contract import TEAM, apply_procrastinate_schema, past, repos

ROOT = Path(__file__).resolve().parent.parent
STALLED = 2.0  # seconds without heartbeat (sent every 0.2 s) before a worker process counts as dead (tests only)


@pytest.fixture
async def pg(postgres_db, keyring) -> AsyncIterator[str]:
    """A migrated PostgreSQL database with procrastinate's schema, connected for the test."""
    async with db.database(postgres_db.url):
        await apply_procrastinate_schema(postgres_db.url)
        yield postgres_db.url


@pytest.fixture
async def queues(pg: str) -> AsyncIterator[Any]:
    opened: list[ProcrastinateQueue] = []

    async def make(**options: Any) -> ProcrastinateQueue:
        queue = ProcrastinateQueue(pg, **{"stalled_after": 1.0, "heartbeat": 0.2, **options})
        await queue.open()
        opened.append(queue)
        return queue

    yield make
    for queue in opened:
        with contextlib.suppress(Exception):
            await queue.close()


# ------------------------------------------------------------------------------------------- in one process


async def test_each_due_run_gets_one_job_with_its_repository_lock_and_priority(queues) -> None:
    queue = await queues()
    [repo] = await repos(1)
    due = await queue.enqueue(RunSpec(TEAM, repository_id=repo.id, priority=7, scheduled_for=past(2)))
    later = await queue.enqueue(RunSpec(TEAM, repository_id=repo.id,
                                        scheduled_for=datetime.now(UTC) + timedelta(hours=1)))  # fmt: skip
    stored = await Run.get(id=due.id)
    [job] = await queue.jobs.list_jobs_async(queue=QUEUE)
    assert stored.job_id == job.id and job.task_kwargs == {"run_id": due.id} and job.status == "todo"
    assert job.lock == f"repo:{repo.id}" and job.queueing_lock == f"run:{due.id}"
    assert job.priority == job_priority(7, stored.next_attempt_at)
    assert (await Run.get(id=later.id)).job_id is None  # not due: no job, so it cannot hold the repository
    assert job_priority(7, past(10)) > job_priority(7, past(1)) > job_priority(6, past(10_000))

    # A run cancelled after its job was deferred: the job is dropped when fetched, the next run is handed out.
    await Run.filter(id=due.id).update(status=RunStatus.CANCELLED)
    direct = await Run.create(team_id=TEAM, kind=RunKind.BACKUP, repository=repo, priority=1)  # like "Run now"
    claimed = await queue.claim("w")
    assert claimed.id == direct.id and claimed.job_id is not None
    assert [j.id for j in await queue.jobs.list_jobs_async(queue=QUEUE)] == [claimed.job_id]
    await queue.complete(claimed, RunOutcome(status="ok"))
    assert list(await queue.jobs.list_jobs_async(queue=QUEUE)) == []  # the Run row is the record


async def test_a_live_workers_runs_are_never_taken_for_stalled(queues) -> None:
    """Unlike the embedded queue's start-up recovery, a worker starting (or checking) while another one runs
    leaves that one's runs alone, however long they take: its heartbeat says it is alive."""
    busy, other = await queues(stalled_after=2.0), await queues(stalled_after=2.0)
    [repo] = await repos(1)
    run = await busy.enqueue(RunSpec(TEAM, repository_id=repo.id, scheduled_for=past(1)))
    await busy.claim("busy")
    assert await other.recover_interrupted() == []
    deadline = asyncio.get_running_loop().time() + 1.25 * other.stalled_after
    while asyncio.get_running_loop().time() < deadline:  # well past the stall limit, the heartbeat keeps it alive
        assert await other.recover_stalled() == []
        await asyncio.sleep(0.2)
    assert (await Run.get(id=run.id)).status == RunStatus.RUNNING
    await busy.complete(await Run.get(id=run.id), RunOutcome(status="ok"))
    assert (await Run.get(id=run.id)).status == RunStatus.SUCCEEDED


async def test_a_worker_taken_for_dead_registers_again_and_keeps_working(queues) -> None:
    """A worker that was only slow (no heartbeat for longer than the limit) is pruned by the others; its next
    heartbeat registers it again, and its claims work."""
    slow, other = await queues(), await queues()
    [repo] = await repos(1)
    first = slow.worker
    await other.jobs.unregister_worker(first)  # what pruning a stalled worker does
    await slow._beat_once()
    assert slow.worker != first
    run = await slow.enqueue(RunSpec(TEAM, repository_id=repo.id, scheduled_for=past(1)))
    assert (await slow.claim("slow")).id == run.id


# ------------------------------------------------------------------------------------------ worker processes


async def _child(args: argparse.Namespace) -> None:
    from bot.alerts import AlertBus
    from bot.runs.execute import announce
    from bot.runs.worker import Worker

    await db.connect(args.db, migrate=False)
    queue = ProcrastinateQueue(args.db, stalled_after=args.stalled, heartbeat=0.2)
    await queue.open()
    events = Path(args.events)
    markers = Path(args.markers)

    def write(**event: Any) -> None:
        with events.open("a") as fh:
            fh.write(json.dumps({"pid": os.getpid(), "t": time.time(), **event}) + "\n")

    alerts = AlertBus()
    alerts.subscribe(lambda alert: write(event="alert", kind=alert.kind, run=alert.details["run_id"]))

    async def execute(run: Run) -> Run:
        marker = markers / f"repo-{run.repository_id}"
        try:
            fd: int | None = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            fd = None
            write(event="overlap", run=run.id, repo=run.repository_id)
        write(event="start", run=run.id, repo=run.repository_id)
        options = (run.stats or {}).get("options") or {}
        retry = "retry_of" in (run.stats or {})
        await asyncio.sleep(0.05 if retry else float(options.get("hold", args.hold)))
        write(event="end", run=run.id, repo=run.repository_id)
        if fd is not None:
            os.close(fd)
            os.unlink(marker)
        stored = await queue.complete(run, RunOutcome(status="ok"))
        await announce(alerts, stored)
        return stored

    worker = Worker(queue, execute, alerts=alerts, concurrency=args.concurrency, poll=0.1, grace=0.5,
                    recover_every=0.3)  # fmt: skip
    await worker.start()
    print("worker started", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await worker.stop()
    await queue.close()
    await db.close()


class Workers:
    """Worker processes on one database, each announced by its "worker started" line."""

    def __init__(self, url: str, tmp: Path) -> None:
        self.url, self.tmp = url, tmp
        self.events = tmp / "events.jsonl"
        self.markers = tmp / "markers"
        self.markers.mkdir()
        self.procs: list[subprocess.Popen] = []

    def start(self, n: int, *, concurrency: int = 2, hold: float = 0.2,
              stalled: float = STALLED) -> list[subprocess.Popen]:  # fmt: skip
        argv = [sys.executable, "-m", "tests.test_queue_procrastinate", "--db", self.url, "--events", str(self.events),
                "--markers", str(self.markers), "--concurrency", str(concurrency), "--hold", str(hold),
                "--stalled", str(stalled)]  # fmt: skip
        with (self.tmp / "workers.log").open("a") as log:
            started = [subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
                       for _ in range(n)]  # fmt: skip
        for proc in started:
            assert proc.stdout is not None and "worker started" in proc.stdout.readline(), self.log()
        self.procs.extend(started)
        return started

    def log(self) -> str:
        path = self.tmp / "workers.log"
        return path.read_text()[-3000:] if path.exists() else ""

    def read(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.events.read_text().splitlines()] if self.events.exists() else []

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture
def workers(pg: str, tmp_path: Path) -> Iterator[Workers]:
    found = Workers(pg, tmp_path)
    try:
        yield found
    finally:
        found.stop()


async def until(predicate, within: float = 30.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_worker_processes_never_run_two_runs_of_one_repository_at_once(pg: str, workers: Workers) -> None:
    workers.start(2, concurrency=2, hold=0.3, stalled=30)  # no process dies here: none may be taken for dead
    r = await repos(4)
    queue = ProcrastinateQueue(pg)
    await queue.open()
    try:
        runs = await queue.enqueue_many([RunSpec(TEAM, repository_id=r[i % 4].id, scheduled_for=past(30 - i))
                                         for i in range(12)])  # fmt: skip
    finally:
        await queue.close()

    async def all_done() -> bool:
        return await Run.filter(id__in=[x.id for x in runs], status=RunStatus.SUCCEEDED).count() == 12

    await until(all_done, 60, "12 runs to succeed")
    events = workers.read()
    assert [e for e in events if e["event"] == "overlap"] == [], "two runs of one repository ran at once"
    assert sorted(e["run"] for e in events if e["event"] == "end") == sorted(x.id for x in runs)  # each once
    assert len({e["pid"] for e in events if e["event"] == "start"}) >= 2  # the work was shared out
    for x in runs:
        stored = await Run.get(id=x.id)
        assert stored.attempts == 1 and str(stored.worker_id).rsplit(":", 1)[1].isdigit()
    assert {e["kind"] for e in events if e["event"] == "alert"} == {"run_succeeded"}


async def test_a_killed_worker_process_run_is_interrupted_and_its_retry_succeeds_elsewhere(
    pg: str, workers: Workers
) -> None:
    procs = workers.start(2, concurrency=1)
    r = await repos(2)
    queue = ProcrastinateQueue(pg)
    await queue.open()
    try:
        slow = await queue.enqueue(RunSpec(TEAM, repository_id=r[0].id, scheduled_for=past(1), options={"hold": 120}))
    finally:
        await queue.close()
    await until(lambda: Run.filter(id=slow.id, status=RunStatus.RUNNING).exists(), 20, "the slow run to start")
    holder = int(str((await Run.get(id=slow.id)).worker_id).rsplit(":", 1)[1])
    [victim] = [p for p in procs if p.pid == holder]
    [survivor] = [p for p in procs if p.pid != holder]
    victim.kill()  # SIGKILL: no graceful stop, no unregistering, the run stays "running"
    victim.wait(10)
    assert (await Run.get(id=slow.id)).status == RunStatus.RUNNING

    async def retry_done() -> bool:
        return any(e["event"] == "end" and e["pid"] == survivor.pid for e in workers.read())

    await until(retry_done, 30, "the survivor to run the retry")
    await until(lambda: Run.filter(id=slow.id, status=RunStatus.INTERRUPTED).exists(), 10, "the interruption")
    killed = await Run.get(id=slow.id)
    assert killed.error_kind == "interrupted" and "heartbeat" in killed.error
    [retry] = await Run.filter(chain_id=None, repository_id=r[0].id).exclude(id=slow.id)
    await until(lambda: Run.filter(id=retry.id, status=RunStatus.SUCCEEDED).exists(), 10, "the retry to succeed")
    retry = await Run.get(id=retry.id)
    assert retry.scheduled_for == killed.scheduled_for and retry.attempts == 2  # attempts count across retries
    assert retry.worker_id.endswith(f":{survivor.pid}")

    def alerts() -> list[tuple[str, int, int]]:
        return [(e["kind"], e["run"], e["pid"]) for e in workers.read() if e["event"] == "alert"]

    async def announced() -> bool:  # the alert is published just after the run's final state is stored
        return ("run_succeeded", retry.id, survivor.pid) in alerts()

    await until(announced, 10, "the retry's success to be announced")
    assert ("run_interrupted", slow.id, survivor.pid) in alerts()
    assert not any(kind == "run_succeeded" and run == slow.id for kind, run, _ in alerts())
    assert not await Run.filter(id=slow.id, status=RunStatus.SUCCEEDED).exists()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--events", required=True)
    parser.add_argument("--markers", required=True)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--hold", type=float, default=0.2)
    parser.add_argument("--stalled", type=float, default=STALLED)
    asyncio.run(_child(parser.parse_args()))
