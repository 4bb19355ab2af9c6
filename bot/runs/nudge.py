"""Tell this process's run machinery what a person just changed: a run queued, a chain's schedule changed.

* :func:`nudge` wakes the workers when a run was queued (Slack's Run now, Retry now, the wizard's run now).
  Workers poll every few seconds anyway, so a missed nudge costs only that delay; it makes a button press start
  the backup at once. A worker registers its ``wake`` while it runs.
* :func:`schedule_changed` tells the scheduler that a chain was created, approved, paused, resumed or edited, so it
  re-reads that one chain now instead of at its next full resync (minutes): a paused chain's run queued ahead of
  its slot is withdrawn, a new chain's first slot is not missed. The scheduler registers its ``refresh``.

Callers call these after their transaction committed. Other processes (scale-out workers) are not reached from
here: they poll, or their backend notifies them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

_listeners: list[Callable[[], None]] = []
Refresh = Callable[..., Awaitable[None]]  # Scheduler.refresh(chain_id, repository_id=…)
_schedulers: list[Refresh] = []


def register(wake: Callable[[], None]) -> Callable[[], None]:
    """Call ``wake`` on every nudge until the returned function is called."""
    _listeners.append(wake)

    def unregister() -> None:
        if wake in _listeners:
            _listeners.remove(wake)

    return unregister


def nudge() -> None:
    """Tell the registered workers to look at the queue now; never raises."""
    for wake in list(_listeners):
        try:
            wake()
        except Exception:  # a broken listener must not fail the button that queued the run
            log.exception("waking a run worker failed")


def on_schedule_change(refresh: Refresh) -> Callable[[], None]:
    """Await ``refresh(chain_id, repository_id=…)`` on every :func:`schedule_changed` until unregistered."""
    _schedulers.append(refresh)

    def unregister() -> None:
        if refresh in _schedulers:
            _schedulers.remove(refresh)

    return unregister


async def schedule_changed(chain_id: int | None = None, *, repository_id: int | None = None) -> None:
    """A chain (or a repository's prune schedule) changed: the scheduler re-reads it now; never raises."""
    for refresh in list(_schedulers):
        try:
            await refresh(chain_id, repository_id=repository_id)
        except Exception:  # the change is committed; the scheduler's periodic resync picks it up
            log.exception("refreshing the scheduler after a change of chain %s failed", chain_id)
