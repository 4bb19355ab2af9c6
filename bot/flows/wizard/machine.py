"""The wizard's state machine: transitions' AsyncMachine over the steps, plus done and cancelled.

``next`` and ``back`` are conditional transitions: from each step to every later (earlier) step, guarded so
that the first one that applies to the answers so far wins — skipped steps are simply never entered. After
every state change the session row is saved (with its version check), so a crash between two clicks loses
nothing (a caller that answers Slack first and saves right after turns ``autosave`` off for that one call).
Going back keeps every answer: data is only ever replaced by a step's own successful submit.
"""

from __future__ import annotations

from collections.abc import Sequence

from transitions.extensions.asyncio import AsyncMachine

from bot.flows.wizard import store
from bot.flows.wizard.steps.base import Step
from storage.models import WizardSession

DONE, CANCELLED = "done", "cancelled"


class Flow:
    """One AsyncMachine for a list of steps, shared by every session: building the ~90 guarded transitions costs
    more than a whole click otherwise, so sessions are attached as models for one call and released after it.
    Adding a model to a machine costs a tenth of a click too, so released models wait (up to ``IDLE``) to carry
    the next call's session instead of leaving the machine."""

    IDLE = 32

    def __init__(self, steps: Sequence[Step], sessions: store.SessionStore) -> None:
        self.steps = list(steps)
        self.sessions = sessions  # where a state change is saved
        self._idle: list[Wizard] = []
        self.by_name = {s.name: s for s in self.steps}
        self.order = [s.name for s in self.steps]
        self.machine = AsyncMachine(
            model=None, states=[*self.order, DONE, CANCELLED], initial=self.order[0], auto_transitions=False,
            after_state_change="_save", queued=False, send_event=True,
        )  # fmt: skip
        for i, name in enumerate(self.order):
            for later in self.order[i + 1 :]:
                self.machine.add_transition("next", name, later, conditions=[self._guard(name, later)])
            for earlier in reversed(self.order[:i]):
                self.machine.add_transition("back", name, earlier, conditions=[self._guard(name, earlier)])
        self.machine.add_transition("finish", self.order[-1], DONE)
        self.machine.add_transition("cancel", [*self.order], CANCELLED)

    def _guard(self, source: str, dest: str):
        """True when ``dest`` is the nearest applicable step from ``source`` in that direction."""
        a, b = self.order.index(source), self.order.index(dest)
        between = self.order[a + 1 : b] if b > a else self.order[b + 1 : a]

        def condition(event) -> bool:
            data = event.model.row.data
            return self.by_name[dest].applies(data) and not any(self.by_name[n].applies(data) for n in between)

        return condition

    def attach(self, row: WizardSession) -> Wizard:
        if self._idle:
            wizard = self._idle.pop()
            wizard.bind(row)
            wizard.set_state(row.state)
        else:
            wizard = Wizard(self)
            wizard.bind(row)
            self.machine.add_model(wizard, initial=row.state)
        return wizard

    def release(self, wizard: Wizard) -> None:
        wizard.row = None  # type: ignore[assignment]
        if len(self._idle) < self.IDLE:
            self._idle.append(wizard)
        else:
            self.machine.remove_model(wizard)

    @property
    def attached(self) -> int:
        """Models carrying a session now (0 between calls: every call releases what it attached)."""
        return len(self.machine.models) - len(self._idle)


class Wizard:
    """The machine's model for one call: a WizardSession row seen through a shared :class:`Flow`."""

    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self.steps = flow.steps
        self.by_name = flow.by_name

    def bind(self, row: WizardSession) -> None:
        """Carry ``row`` for one call."""
        self.row = row
        self.autosave = True  # False: a state change is only noted (``unsaved``); the caller saves the row
        self.unsaved = False

    async def _save(self, *_args, **_kwargs) -> None:
        self.row.state = self.state
        if self.autosave:
            await self.flow.sessions.save(self.row)
        else:
            self.unsaved = True

    def set_state(self, name: str) -> None:
        self.flow.machine.set_state(name, model=self)

    @property
    def current(self) -> Step:
        return self.by_name[self.state]

    def position(self) -> tuple[int, int]:
        """(1-based number of the current step, number of steps) counting only steps that apply."""
        applicable = [s.name for s in self.steps if s.applies(self.row.data)]
        return (applicable.index(self.state) + 1 if self.state in applicable else len(applicable), len(applicable))

    def is_first(self) -> bool:
        return self.position()[0] == 1
