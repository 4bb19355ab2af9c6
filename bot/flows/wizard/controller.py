"""The wizard's use cases, free of Slack: start, show, submit, back, act, cancel, resume.

Each call loads the session row (owner-checked), rebuilds the machine at the saved state, does one thing,
saves, and returns a :class:`Screen` — what to show next. The Slack layer renders screens and nothing else.

At most one database read per call: the clicks that move a session (submit, back, a step's button) start from the
copy the controller's :class:`~bot.flows.wizard.store.SessionStore` kept of its last save, and the save's version
check catches a copy gone stale. A fast step's submit can hand its save to the caller (``save_later``): Slack needs the
next screen within 3 seconds, and the write does not have to hold that answer up; the caller saves right after
answering (:attr:`Screen.commit`), before anything else can reach the session, and the version check still applies.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bot.flows.wizard import store
from bot.flows.wizard.machine import CANCELLED, DONE, Flow, Wizard
from bot.flows.wizard.steps.base import Errors, Option, Step, StepView, WizardContext
from bot.services.answers import checked
from storage.tenancy import Tenant

GOTO = "_goto"  # set by a step's action to jump back to an earlier step (e.g. validation's "Fix: …")


@dataclass
class Screen:
    session_id: str
    step: str  # step name, or "done" / "cancelled"
    title: str
    number: int
    total: int
    view: StepView
    errors: Errors = field(default_factory=dict)
    note: str | None = None  # result of a button (e.g. a connection test)
    first: bool = False
    slow: bool = False  # the step's submit takes a while: show "working…" first
    deferred: bool = False  # submit(defer_slow=True) on a slow step: nothing was run; ``title`` is the step's
    commit: Callable[[], Awaitable[None]] | None = field(default=None, repr=False, compare=False)
    """submit(save_later=True): the answer is not saved yet; await this right after showing the screen (it raises
    :class:`~bot.flows.wizard.store.StaleSession` when someone else saved the session in between)."""


class WizardController:
    def __init__(
        self, steps: Callable[[], Sequence[Step]], services: Any, *, ttl: timedelta = store.DEFAULT_TTL,
        schema: store.Schema | None = checked,
    ) -> None:
        """``schema`` checks the answers before every save (the wizard's :class:`~bot.services.answers.SessionData`;
        None for a machine of other steps)."""
        self._steps = steps
        self._flow: Flow | None = None
        self.services = services
        self.store = store.SessionStore(ttl, schema=schema)  # an untouched session expires after ``ttl``

    def context_for(self, row) -> WizardContext:
        """A step context for ``row``'s owner (used outside a click, e.g. once an approver approved)."""
        return self._context(row)

    def _context(self, row, user_tz: str = "UTC") -> WizardContext:
        return WizardContext(team_id=row.team_id, user_id=row.user_id, session_id=str(row.id), data=row.data,
                             services=self.services, user_tz=row.data.get("_user_tz", user_tz))  # fmt: skip

    async def _screen(self, wizard: Wizard, *, errors: Errors | None = None, note: str | None = None) -> Screen:
        row = wizard.row
        if wizard.state in (DONE, CANCELLED):
            nothing = "Cancelled. Nothing was changed." if row.data.get("edit") else "Cancelled. Nothing was created."
            heading = row.data.get("_result", "Done.") if wizard.state == DONE else nothing
            return Screen(str(row.id), wizard.state, "Backup wizard", 0, 0, StepView(heading=heading))
        step = wizard.current
        number, total = wizard.position()
        view = await step.view(self._context(row))
        return Screen(str(row.id), step.name, step.title, number, total, view, errors or {}, note,
                      first=wizard.is_first(), slow=step.slow)  # fmt: skip

    @property
    def flow(self) -> Flow:
        """The shared machine, built on first use (the step list is fixed for a controller's lifetime)."""
        if self._flow is None:
            self._flow = Flow(self._steps(), self.store)
        return self._flow

    @contextlib.asynccontextmanager
    async def _attached(self, row) -> AsyncIterator[Wizard]:
        wizard = self.flow.attach(row)
        try:
            yield wizard
        finally:
            self.flow.release(wizard)

    @contextlib.asynccontextmanager
    async def _session(self, tenant: Tenant, user_id: str, session_id: str, *,
                       remembered: bool = False) -> AsyncIterator[Wizard]:  # fmt: skip
        """The session attached to the machine. ``remembered``: a call that saves may start from the store's copy
        (:class:`~bot.flows.wizard.store.SessionStore`); a call that fails makes the store forget the session, since
        a step may have written part of it before failing."""
        row = await self.store.load(tenant, session_id, user_id, remembered=remembered)
        try:
            async with self._attached(row) as wizard:
                yield wizard
        except BaseException:
            self.store.forget(row.id)
            raise

    async def start(self, tenant: Tenant, user_id: str, channel_id: str | None, *, user_tz: str = "UTC",
                    prefill: Mapping[str, Any] | None = None, at: str | None = None) -> Screen:  # fmt: skip
        """A new session with ``prefill``'s answers, at the first step that applies, or at ``at`` (an edit opens at
        its review step: every answer is there already)."""
        data = {**(prefill or {}), "_user_tz": user_tz}
        first = next(s.name for s in self.flow.steps if s.applies(data))
        if at is not None and at in self.flow.by_name and self.flow.by_name[at].applies(data):
            first = at
        row = await self.store.create(tenant, user_id, channel_id, first, data)
        async with self._attached(row) as wizard:
            return await self._screen(wizard)

    async def title_of(self, tenant: Tenant, user_id: str, session_id: str) -> str:
        async with self._session(tenant, user_id, session_id) as wizard:
            return wizard.current.title

    async def is_slow(self, tenant: Tenant, user_id: str, session_id: str) -> bool:
        async with self._session(tenant, user_id, session_id) as wizard:
            return wizard.state not in (DONE, CANCELLED) and wizard.current.slow

    async def show(self, tenant: Tenant, user_id: str, session_id: str) -> Screen:
        async with self._session(tenant, user_id, session_id) as wizard:
            return await self._screen(wizard)

    async def submit(self, tenant: Tenant, user_id: str, session_id: str, values: Mapping[str, Any], *,
                     defer_slow: bool = False, save_later: bool = False,
                     shown: str | None = None) -> Screen:  # fmt: skip
        """Validate and advance. With ``defer_slow``, a slow step is not run: a ``deferred`` screen (with the step's
        title) tells the caller to show "working…" first and call again without it. With ``save_later``, a fast step
        that stays in the wizard leaves its save to the caller (:attr:`Screen.commit`); finishing always saves here.

        ``shown`` is the step the submitted screen showed. When the session is elsewhere, the answers belong to
        another step and are not used: the current step is shown instead. That happens when Slack never got the
        answer to a click that was saved (the bot stopped, or took longer than Slack's 3 seconds) and the person
        presses Next again on the old screen.
        """
        async with self._session(tenant, user_id, session_id, remembered=True) as wizard:
            if shown is not None and shown != wizard.state:
                return await self._screen(wizard, note=f"That screen was out of date, so its answers were not used: "
                                                       f"the wizard had already moved on to *{wizard.current.title}*. "
                                                       "Every saved answer is kept.")  # fmt: skip
            current = wizard.current
            if defer_slow and current.slow:
                number, total = wizard.position()
                return Screen(str(wizard.row.id), current.name, current.title, number, total, StepView(heading=""),
                              slow=True, deferred=True)  # fmt: skip
            errors = await current.submit(self._context(wizard.row), values)
            if errors:  # a refused submit may still have learnt something (a fingerprint): saved all the same
                screen = await self._screen(wizard, errors=errors)
                if save_later:
                    screen.commit = functools.partial(self.store.save, wizard.row)
                else:
                    await self.store.save(wizard.row)
                return screen
            if wizard.state == wizard.steps[-1].name:
                await wizard.finish()
            else:
                wizard.autosave = not save_later
                await wizard.next()
            screen = await self._screen(wizard)
            if wizard.unsaved:
                screen.commit = functools.partial(self.store.save, wizard.row)
            return screen

    async def back(self, tenant: Tenant, user_id: str, session_id: str) -> Screen:
        async with self._session(tenant, user_id, session_id, remembered=True) as wizard:
            if not wizard.is_first():
                await wizard.back()
            return await self._screen(wizard)

    async def act(self, tenant: Tenant, user_id: str, session_id: str, action: str, value: str, *,
                  on_slow: Callable[[str], Awaitable[None]] | None = None,
                  form: Mapping[str, Any] | None = None) -> Screen:  # fmt: skip
        """Run a step's button. ``on_slow(title)`` is awaited first when the step is a slow one (to show
        "working…"), with the session already loaded: one read for the whole click. ``form``: the screen's inputs
        as they are at the click (a button may use what was typed but not submitted, e.g. a login to test)."""
        async with self._session(tenant, user_id, session_id, remembered=True) as wizard:
            if on_slow is not None and wizard.current.slow:
                await on_slow(wizard.current.title)
            ctx = self._context(wizard.row)
            ctx.form = form or {}
            note = await wizard.current.act(ctx, action, value)
            target = wizard.row.data.pop(GOTO, None)
            if target and self._can_jump(wizard, target):
                wizard.set_state(target)
                wizard.row.state = target
                note = f"Back at *{wizard.current.title}*: fix it and press Next; every other answer is kept."
            await self.store.save(wizard.row)  # an action may have stored something (e.g. a tested credential)
            return await self._screen(wizard, note=note)

    @staticmethod
    def _can_jump(wizard: Wizard, target: str) -> bool:
        """Only back, and only to a step that applies (a "fix this" button of the validation step)."""
        order = [s.name for s in wizard.steps]
        return (target in wizard.by_name and wizard.state in order and wizard.by_name[target].applies(wizard.row.data)
                and order.index(target) < order.index(wizard.state))  # fmt: skip

    async def options(self, tenant: Tenant, user_id: str, session_id: str, field_name: str, query: str) -> list[Option]:
        async with self._session(tenant, user_id, session_id) as wizard:
            finder = getattr(wizard.current, "options", None)
            return list(await finder(self._context(wizard.row), field_name, query)) if finder else []

    async def cancel(self, tenant: Tenant, user_id: str, session_id: str) -> Screen:
        async with self._session(tenant, user_id, session_id) as wizard:
            left = await self._clean_up(wizard)
            await wizard.cancel()
            screen = await self._screen(wizard)
        if left:
            screen.note = "Could not remove: " + "; ".join(left)
        return screen

    async def _clean_up(self, wizard: Wizard) -> list[str]:
        """Let steps undo what they created on servers (``on_cancel``); returns what is left behind."""
        left: list[str] = []
        for step in wizard.steps:
            hook = getattr(step, "on_cancel", None)
            if hook is not None:
                left += await hook(self._context(wizard.row))
        return left

    async def expire(self, now: datetime | None = None) -> int:
        """Cancel abandoned sessions (run periodically), undoing what their steps created; returns how many."""
        count = 0
        for row in await store.expired_open(now):
            async with self._attached(row) as wizard:
                await self._clean_up(wizard)
                await wizard.cancel()
            count += 1
        return count

    async def resume(self, tenant: Tenant, user_id: str) -> Screen | None:
        row = await store.latest_open(tenant, user_id)
        if row is None:
            return None
        async with self._attached(row) as wizard:
            return await self._screen(wizard)
