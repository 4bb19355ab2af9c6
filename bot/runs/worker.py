"""The embedded worker: an asyncio task in the bot process that drains the run queue.

``start()`` first recovers runs a crash left ``running`` (interrupted + retried, reported), then loops: skip runs
whose window ended (reported), claim due runs up to ``concurrency`` and execute each in its own task. ``wake()``
makes it look at the queue at once (after "Run now"). ``stop()`` claims nothing more, lets running runs finish
within ``grace`` seconds, and marks the rest ``interrupted`` with a queued retry (resumed at the next start).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable

from bot.alerts import AlertBus
from bot.runs.execute import announce
from bot.runs.queue import RunQueue
from storage.models import Run

log = logging.getLogger(__name__)

Execute = Callable[[Run], Awaitable[Run]]


class Worker:
    def __init__(self, queue: RunQueue, execute: Execute, *, alerts: AlertBus | None = None, concurrency: int = 2,
                 poll: float = 5.0, grace: float = 300.0, worker_id: str | None = None) -> None:  # fmt: skip
        self.queue = queue
        self.execute = execute
        self.alerts = alerts
        self.concurrency = max(1, concurrency)
        self.poll = poll
        self.grace = grace
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.active: dict[int, tuple[Run, asyncio.Task]] = {}
        self._stopping = False
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task | None = None

    async def start(self) -> None:
        for run, retry in await self.queue.recover_interrupted():
            log.warning("run %s was left running by a crash: interrupted, retry %s", run.id, retry and retry.id)
            await announce(self.alerts, run, retry=retry)
        self._loop_task = asyncio.create_task(self._loop(), name="run-worker")

    def wake(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        while not self._stopping:
            try:
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


async def start_runs(runtime, services, *, concurrency: int = 2, grace: float = 300.0) -> Callable[[], Awaitable[None]]:
    """Start the embedded queue's worker and scheduler in this process; returns the coroutine function that stops
    both (no new claims, running backups get ``grace`` seconds, then are marked interrupted for resume)."""
    from bot.runs.execute import Executor
    from bot.runs.queue import SqlQueue
    from bot.runs.scheduler import Scheduler

    queue = SqlQueue()
    worker = Worker(queue, Executor(queue, services, alerts=runtime.alerts), alerts=runtime.alerts,
                    concurrency=concurrency, grace=grace)  # fmt: skip
    await worker.start()
    scheduler = Scheduler(queue, alerts=runtime.alerts, on_enqueued=worker.wake)
    halt = asyncio.Event()
    ticking = asyncio.create_task(scheduler.run_forever(halt), name="run-scheduler")

    async def stop() -> None:
        halt.set()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await ticking
        await worker.stop()

    return stop
