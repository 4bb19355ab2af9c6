"""Choosing the run queue backend from the settings: the one place that knows both.

``BACKUPBOT_QUEUE=embedded`` (default): :class:`~bot.runs.queue.SqlQueue` on the app's database, executed by the
bot process itself. ``BACKUPBOT_QUEUE=procrastinate``: :class:`~bot.runs.procrastinate_queue.ProcrastinateQueue`
on the app's PostgreSQL database, executed by ``backup-bot worker`` processes on any number of machines (and by
the bot process too unless ``BACKUPBOT_RUN_CONCURRENCY=0``). procrastinate is imported only when chosen.
"""

from __future__ import annotations

from bot.config import Settings
from bot.runs.queue import RunQueue, SqlQueue

EMBEDDED = "embedded"
PROCRASTINATE = "procrastinate"


def make_queue(settings: Settings) -> RunQueue:
    """The configured backend, not yet opened (call ``await queue.open()``, and ``close()`` after the worker)."""
    if settings.queue_backend == PROCRASTINATE:
        from bot.runs.procrastinate_queue import ProcrastinateQueue

        return ProcrastinateQueue(settings.resolved_database_url, stalled_after=settings.worker_stalled_seconds)
    return SqlQueue()


async def apply_schema(settings: Settings) -> bool:
    """Create the backend's own tables when it needs any and they are missing (``backup-bot migrate``, start-up);
    True when something was created. Idempotent."""
    if settings.queue_backend != PROCRASTINATE:
        return False
    from bot.runs.procrastinate_queue import ProcrastinateQueue

    queue = ProcrastinateQueue(settings.resolved_database_url)
    await queue.app.open_async()
    try:
        return await queue.apply_schema()
    finally:
        await queue.app.close_async()
