"""The wizard engine (machine, store, controller) with small steps of our own, on a real database.

Steps here are test doubles of *our* step contract; the real steps are tested in tests/test_wizard_step_*.py
and end to end through Slack in tests/test_wizard_slack.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.flows.wizard import store
from bot.flows.wizard.controller import WizardController
from bot.flows.wizard.steps.base import BaseStep, Errors, Field, StepView, WizardContext
from storage.models import WizardSession
from storage.tenancy import Tenant


class Ask(BaseStep):
    """A step asking one text value; ``only_if`` makes it conditional on an earlier answer."""

    def __init__(self, name: str, only_if: tuple[str, str] | None = None) -> None:
        super().__init__(name=name, title=name.title())
        self.only_if = only_if

    def applies(self, data: Mapping[str, Any]) -> bool:
        return self.only_if is None or data.get(self.only_if[0]) == self.only_if[1]

    async def view(self, ctx: WizardContext) -> StepView:
        return StepView(
            heading=self.name, fields=(Field(self.name, self.name, "text", initial=ctx.data.get(self.name)),)
        )

    async def submit(self, ctx: WizardContext, values: Mapping[str, Any]) -> Errors:
        value = values.get(self.name)
        if not value:
            return {self.name: f"{self.name} is required."}
        ctx.data[self.name] = value
        return {}


def steps():
    return [Ask("kind"), Ask("snapshot", only_if=("kind", "files")), Ask("pool"), Ask("review")]


@pytest.fixture
def controller() -> WizardController:
    return WizardController(steps, services=None, schema=None)


TENANT = Tenant("T0001")


async def test_steps_advance_skip_and_save_after_every_transition(sqlite_db, controller) -> None:
    screen = await controller.start(TENANT, "U1", "C1")
    assert (screen.step, screen.number, screen.total, screen.first) == ("kind", 1, 3, True)  # snapshot: not yet known
    screen = await controller.submit(TENANT, "U1", screen.session_id, {"kind": "mongodb"})
    assert (screen.step, screen.number, screen.total) == ("pool", 2, 3)  # snapshot skipped for this kind
    row = await WizardSession.get(id=screen.session_id)
    assert (row.state, row.data["kind"]) == ("pool", "mongodb")
    back = await controller.back(TENANT, "U1", screen.session_id)
    assert back.step == "kind" and back.view.fields[0].initial == "mongodb"  # going back keeps the answer
    screen = await controller.submit(TENANT, "U1", screen.session_id, {"kind": "files"})
    assert screen.step == "snapshot"


async def test_inline_errors_keep_the_step(sqlite_db, controller) -> None:
    screen = await controller.start(TENANT, "U1", "C1")
    again = await controller.submit(TENANT, "U1", screen.session_id, {"kind": ""})
    assert again.step == "kind" and again.errors == {"kind": "kind is required."}


async def test_a_restarted_bot_continues_where_the_user_was(sqlite_db) -> None:
    first = WizardController(steps, services=None, schema=None)
    screen = await first.start(TENANT, "U1", "C1")
    await first.submit(TENANT, "U1", screen.session_id, {"kind": "files"})
    restarted = WizardController(steps, services=None, schema=None)  # nothing shared but the database
    now = await restarted.show(TENANT, "U1", screen.session_id)
    assert now.step == "snapshot"
    done = None
    for name in ("snapshot", "pool", "review"):
        done = await restarted.submit(TENANT, "U1", screen.session_id, {name: "x"})
    assert done.step == "done"
    with pytest.raises(store.SessionGone):
        await restarted.show(TENANT, "U1", screen.session_id)


async def test_sessions_belong_to_their_user_and_workspace(sqlite_db, controller) -> None:
    screen = await controller.start(TENANT, "U1", "C1")
    other = await controller.start(TENANT, "U1", "C1")  # several sessions per user at once are fine
    assert other.session_id != screen.session_id
    for tenant, user in ((TENANT, "U2"), (Tenant("T0002"), "U1")):
        with pytest.raises(store.SessionGone):
            await controller.show(tenant, user, screen.session_id)
    with pytest.raises(store.SessionGone):
        await controller.show(TENANT, "U1", "not-a-uuid")


async def test_a_stale_writer_loses(sqlite_db, controller) -> None:
    screen = await controller.start(TENANT, "U1", "C1")
    row_a = await store.load(TENANT, screen.session_id, "U1")
    row_b = await store.load(TENANT, screen.session_id, "U1")
    row_a.data["kind"] = "a"
    await store.save(row_a)
    row_b.data["kind"] = "b"
    with pytest.raises(store.StaleSession):
        await store.save(row_b)
    assert (await WizardSession.get(id=screen.session_id)).data["kind"] == "a"


async def test_resume_cancel_and_expiry(sqlite_db, controller) -> None:
    screen = await controller.start(TENANT, "U1", "C1")
    await controller.submit(TENANT, "U1", screen.session_id, {"kind": "files"})
    resumed = await controller.resume(TENANT, "U1")
    assert resumed.session_id == screen.session_id and resumed.step == "snapshot"
    assert await controller.resume(TENANT, "U9") is None
    cancelled = await controller.cancel(TENANT, "U1", screen.session_id)
    assert cancelled.step == "cancelled" and await controller.resume(TENANT, "U1") is None
    old = await controller.start(TENANT, "U1", "C1")
    await WizardSession.filter(id=old.session_id).update(expires_at=datetime.now(UTC) - timedelta(minutes=1))
    with pytest.raises(store.SessionGone, match="expired"):
        await controller.show(TENANT, "U1", old.session_id)
    assert await controller.expire() == 1
    assert (await WizardSession.get(id=old.session_id)).state == "cancelled"


class Jumper(Ask):
    async def act(self, ctx: WizardContext, action: str, value: str) -> str | None:
        ctx.data["_goto"] = value
        return "jumping"


async def test_a_step_button_can_jump_back_to_an_earlier_step(sqlite_db) -> None:
    controller = WizardController(
        lambda: [Ask("kind"), Ask("snapshot", only_if=("kind", "files")), Jumper("pool")], None, schema=None
    )
    screen = await controller.start(TENANT, "U1", "C1")
    await controller.submit(TENANT, "U1", screen.session_id, {"kind": "db"})
    assert (await controller.act(TENANT, "U1", screen.session_id, "go_to", "snapshot")).step == "pool"  # skipped
    assert (await controller.act(TENANT, "U1", screen.session_id, "go_to", "nowhere")).step == "pool"
    jumped = await controller.act(TENANT, "U1", screen.session_id, "go_to", "kind")
    assert jumped.step == "kind" and "Back at" in jumped.note
    assert (await WizardSession.get(id=screen.session_id)).state == "kind"


async def test_sessions_are_released_from_the_shared_machine(sqlite_db, controller) -> None:
    """One machine serves every session; each call attaches its session and must release it (no leak)."""
    screen = await controller.start(TENANT, "U1", "C1")
    await controller.submit(TENANT, "U1", screen.session_id, {"kind": "files"})
    await controller.submit(TENANT, "U1", screen.session_id, {"snapshot": ""})  # refused: still released
    await controller.back(TENANT, "U1", screen.session_id)
    with pytest.raises(store.SessionGone):
        await controller.show(TENANT, "U2", screen.session_id)
    assert controller.flow.attached == 0 and len(controller.flow.machine.models) <= controller.flow.IDLE


async def test_the_real_wizards_answers_are_checked_against_their_declared_shape(sqlite_db) -> None:
    """With the wizard's schema (bot.services.answers.SessionData, the controller's default), a step that stores
    an undeclared key or a value of the wrong type fails its save: nothing of it is written."""
    from bot.services.answers import InvalidSession, SessionData

    good = WizardController(lambda: [Ask("server_id"), Ask("pool_id")], None)
    screen = await good.start(TENANT, "U1", "C1")
    with pytest.raises(InvalidSession, match="server_id: Input should be a valid integer"):
        await good.submit(TENANT, "U1", screen.session_id, {"server_id": "not a number"})
    assert (await WizardSession.get(id=screen.session_id)).data == {"_user_tz": "UTC"}
    typo = WizardController(lambda: [Ask("sever_id"), Ask("pool_id")], None)
    screen = await typo.start(TENANT, "U1", "C1")
    with pytest.raises(InvalidSession, match="undeclared session keys: sever_id"):
        await typo.submit(TENANT, "U1", screen.session_id, {"sever_id": "3"})
    ok = await good.submit(TENANT, "U1", (await good.start(TENANT, "U1", "C1")).session_id, {"server_id": "7"})
    assert ok.step == "pool_id" and SessionData.of((await WizardSession.get(id=ok.session_id)).data).server_id == 7
