"""The wizard's state machine: transitions' AsyncMachine over the steps, plus done and cancelled.

``next`` and ``back`` are conditional transitions: from each step to every later (earlier) step, guarded so
that the first one that applies to the answers so far wins — skipped steps are simply never entered. After
every state change the session row is saved (with its version check), so a crash between two clicks loses
nothing. Going back keeps every answer: data is only ever replaced by a step's own successful submit.
"""

from __future__ import annotations

from collections.abc import Sequence

from transitions.extensions.asyncio import AsyncMachine

from bot.flows.wizard import store
from bot.flows.wizard.steps.base import Step
from storage.models import WizardSession

DONE, CANCELLED = "done", "cancelled"


class Wizard:
    """The machine's model: one WizardSession row and the step list."""

    def __init__(self, row: WizardSession, steps: Sequence[Step]) -> None:
        self.row = row
        self.steps = list(steps)
        self.by_name = {s.name: s for s in self.steps}
        order = [s.name for s in self.steps]
        self.machine = AsyncMachine(
            model=self, states=[*order, DONE, CANCELLED], initial=row.state, auto_transitions=False,
            after_state_change="_save", queued=False,
        )  # fmt: skip
        for i, name in enumerate(order):
            for later in order[i + 1 :]:
                self.machine.add_transition("next", name, later, conditions=[self._guard(name, later)])
            for earlier in reversed(order[:i]):
                self.machine.add_transition("back", name, earlier, conditions=[self._guard(name, earlier)])
        self.machine.add_transition("finish", order[-1], DONE)
        self.machine.add_transition("cancel", [*order], CANCELLED)

    def _guard(self, source: str, dest: str):
        """True when ``dest`` is the nearest applicable step from ``source`` in that direction."""
        order = [s.name for s in self.steps]
        a, b = order.index(source), order.index(dest)
        between = order[a + 1 : b] if b > a else order[b + 1 : a]

        def condition(*_args, **_kwargs) -> bool:
            data = self.row.data
            return self.by_name[dest].applies(data) and not any(self.by_name[n].applies(data) for n in between)

        return condition

    async def _save(self, *_args, **_kwargs) -> None:
        self.row.state = self.state
        await store.save(self.row)

    @property
    def current(self) -> Step:
        return self.by_name[self.state]

    def position(self) -> tuple[int, int]:
        """(1-based number of the current step, number of steps) counting only steps that apply."""
        applicable = [s.name for s in self.steps if s.applies(self.row.data)]
        return (applicable.index(self.state) + 1 if self.state in applicable else len(applicable), len(applicable))

    def is_first(self) -> bool:
        return self.position()[0] == 1
