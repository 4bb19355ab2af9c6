"""Wake this process's run workers when a person queued a run (Slack's Run now, Retry now, the wizard's run now).

Workers poll the queue every few seconds anyway, so a missed nudge costs only that delay; the nudge makes a button
press start the backup at once. Code that queues runs calls :func:`nudge` after its transaction committed; a
worker registers its ``wake`` while it runs. Other processes (scale-out workers) are not reached from here: they
poll, or their backend notifies them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

_listeners: list[Callable[[], None]] = []


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
