"""The run worker: an asyncio task that drains the run queue, in the bot process or in ``backup-bot worker``.

``start()`` first recovers runs a crash left ``running`` (interrupted + retried, reported), then loops: every
``recover_every`` seconds it asks the queue for runs of workers that died since (the scale-out backend finds them
by their missing heartbeats; the embedded queue has none), skips runs whose window ended (reported), claims due
runs up to ``concurrency`` and executes each in its own task. ``wake()`` makes it look at the queue at once
(:func:`bot.runs.nudge.nudge` calls it after "Run now"). ``stop()`` claims nothing more, lets running runs finish
within ``grace`` seconds, and marks the rest ``interrupted`` with a queued retry (resumed at the next start, or
at once by another worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Sequence

from bot.alerts import AlertBus
from bot.runs import nudge
from bot.runs.execute import announce
from bot.runs.queue import RunQueue
from storage.models import Run

log = logging.getLogger(__name__)

Execute = Callable[[Run], Awaitable[Run]]
Hourly = Callable[[], Awaitable[object]]
Stop = Callable[[], Awaitable[None]]


class Worker:
    def __init__(self, queue: RunQueue, execute: Execute, *, alerts: AlertBus | None = None, concurrency: int = 2,
                 poll: float = 5.0, grace: float = 300.0, worker_id: str | None = None,
                 recover_every: float = 30.0) -> None:  # fmt: skip
        self.queue = queue
        self.execute = execute
        self.alerts = alerts
        self.concurrency = max(1, concurrency)
        self.poll = poll
        self.grace = grace
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.recover_every = recover_every
        self.active: dict[int, tuple[Run, asyncio.Task]] = {}
        self._stopping = False
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task | None = None
        self._recovered_at = 0.0
        self._unnudge: Callable[[], None] | None = None

    async def start(self) -> None:
        await self._report_recovered(await self.queue.recover_interrupted())
        self._recovered_at = asyncio.get_running_loop().time()
        self._unnudge = nudge.register(self.wake)
        self._loop_task = asyncio.create_task(self._loop(), name="run-worker")

    def wake(self) -> None:
        self._wake.set()

    async def _report_recovered(self, pairs: list[tuple[Run, Run | None]]) -> None:
        """Runs a dead worker left ``running``: stop what they left running on servers (when the executor can:
        ``clean_up``) before this worker claims their retries, and report them."""
        clean_up = getattr(self.execute, "clean_up", None)
        for run, retry in pairs:
            log.warning("run %s was left running by a dead worker: interrupted, retry %s", run.id, retry and retry.id)
            if clean_up is not None:
                try:
                    await clean_up(run)
                except Exception:
                    log.exception("stopping what run %s left running failed", run.id)
            await announce(self.alerts, run, retry=retry)

    async def _recover_if_due(self) -> None:
        """Another worker process may have died since: look for its runs every ``recover_every`` seconds."""
        now = asyncio.get_running_loop().time()
        if now - self._recovered_at >= self.recover_every:
            self._recovered_at = now
            await self._report_recovered(await self.queue.recover_stalled())

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                await self._recover_if_due()
                for run in await self.queue.skip_expired():
                    await announce(self.alerts, run)
                while not self._stopping and len(self.active) < self.concurrency:
                    run = await self.queue.claim(self.worker_id)
                    if run is None:
                        break
                    task = asyncio.create_task(self._execute(run), name=f"run-{run.id}")
                    self.active[run.id] = (run, task)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the run worker's loop failed; trying again")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll)

    async def _execute(self, run: Run) -> None:
        try:
            await self.execute(run)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("run %s failed unexpectedly", run.id)
            with contextlib.suppress(Exception):
                stored = await self.queue.fail(run, f"Unexpected error: {type(exc).__name__}: {exc}", kind="error")
                await announce(self.alerts, stored)
        finally:
            self.active.pop(run.id, None)
            self._wake.set()  # a slot is free (and the repository too)

    async def stop(self, grace: float | None = None) -> None:
        """No new claims; running runs get ``grace`` seconds, then are marked interrupted for resume."""
        self._stopping = True
        self._wake.set()
        if self._unnudge is not None:
            self._unnudge()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        grace = self.grace if grace is None else grace
        tasks = [task for _, task in self.active.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        for run, task in list(self.active.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            retry = await self.queue.interrupt(run, f"The bot stopped and the run did not finish within {grace:g} s; "
                                                    "it is resumed by a retry.")  # fmt: skip
            stored = await Run.get(id=run.id)
            await announce(self.alerts, stored, retry=retry)
        self.active.clear()


async def start_workers(runtime, services, queue: RunQueue, *, concurrency: int, grace: float = 300.0,
                        poll: float = 5.0) -> Worker:  # fmt: skip
    """A started :class:`Worker` executing runs with the chain engine (``services``: the SSH pool, borg)."""
    from bot.runs.execute import Executor

    worker = Worker(queue, Executor(queue, services, alerts=runtime.alerts), alerts=runtime.alerts,
                    concurrency=concurrency, grace=grace, poll=poll)  # fmt: skip
    await worker.start()
    return worker


async def start_runs(runtime, services, *, concurrency: int | None = None, grace: float = 300.0,
                     queue: RunQueue | None = None, hourly: Sequence[Hourly] = ()) -> Stop:  # fmt: skip
    """Start the scheduler and (unless ``concurrency`` — default ``BACKUPBOT_RUN_CONCURRENCY`` — is 0) a worker in
    this process, on the configured queue backend; returns the coroutine function that stops both (no new claims,
    running backups get ``grace`` seconds, then are marked interrupted for resume). ``hourly``: maintenance the
    scheduler runs at start and every hour (the stale-chain alerts); every pool's free space is refreshed there
    too (:meth:`bot.runs.accounting.Accounting.refresh_all`)."""
    from bot.runs.accounting import Accounting
    from bot.runs.backends import make_queue
    from bot.runs.scheduler import Scheduler

    queue = queue or make_queue(runtime.settings)
    await queue.open()
    concurrency = runtime.settings.run_concurrency if concurrency is None else concurrency
    worker = None
    if concurrency > 0:
        worker = await start_workers(runtime, services, queue, concurrency=concurrency, grace=grace)
    hourly = (*hourly, Accounting(services, runtime.alerts).refresh_all)
    scheduler = Scheduler(queue, alerts=runtime.alerts, on_enqueued=worker.wake if worker else None, hourly=hourly)
    halt = asyncio.Event()
    ticking = asyncio.create_task(scheduler.run_forever(halt), name="run-scheduler")

    async def stop() -> None:
        halt.set()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await ticking
        if worker is not None:
            await worker.stop()
        await queue.close()

    return stop
