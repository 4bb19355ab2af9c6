"""The wizard's Slack surface through the emulator, with steps of our own (the real steps have their own tests
and the end-to-end acceptance test): open within the trigger window, update/errors, back, slow steps with a
"working…" view then views.update, close and resume, the expired-trigger path."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from bot.config import load_settings
from bot.flows.wizard.controller import WizardController
from bot.flows.wizard.steps.base import BaseStep, Button, Errors, Field, Option, StepView, WizardContext
from bot.slack.app import build_app, serve_http
from bot.slack.emulator import DEFAULT_BOT_TOKEN, ManualClock, SlackDriver, SlackEmulator
from bot.slack.emulator.limits import check_view
from storage.crypto import generate_key
from storage.models import WizardSession

SECRET = "wizard-secret"


class Pick(BaseStep):
    def __init__(self, name: str, *, slow: bool = False, gate: asyncio.Event | None = None) -> None:
        super().__init__(name=name, title=name.title(), slow=slow)
        self.gate = gate

    async def view(self, ctx: WizardContext) -> StepView:
        if self.gate is not None:
            await self.gate.wait()
        options = tuple(Option(v, v.upper()) for v in ("a", "b"))
        field = Field(self.name, self.name, "select", options=options, initial=ctx.data.get(self.name))
        return StepView(heading=f"*{self.name}*", fields=(field,), buttons=(Button("ping", "Ping"),))

    async def submit(self, ctx: WizardContext, values: Mapping[str, Any]) -> Errors:
        if self.slow:
            await asyncio.sleep(0.2)  # stands for SSH work
        if values.get(self.name) != "a":
            return {self.name: "Only A works here."}
        ctx.data[self.name] = "a"
        return {}

    async def act(self, ctx: WizardContext, action: str, value: str) -> str | None:
        return f"pong from {self.name}; on screen: {ctx.form.get(self.name)}"


@pytest.fixture
async def slack() -> AsyncIterator[SlackEmulator]:
    async with SlackEmulator() as emulator:
        yield emulator


async def _driver(slack: SlackEmulator, tmp_path: Path, steps) -> AsyncIterator[SlackDriver]:
    settings = load_settings(tmp_path / "none.env", SLACK_BOT_TOKEN=DEFAULT_BOT_TOKEN, SLACK_SIGNING_SECRET=SECRET,
                             SLACK_API_URL=slack.api_url, BACKUPBOT_SECRET_KEYS=generate_key())  # fmt: skip
    app = build_app(settings, wizard=WizardController(steps, services=None, schema=None))
    runner = await serve_http(app, "127.0.0.1", 0)
    host, port = runner.addresses[0][:2]
    driver = SlackDriver.over_http(slack, f"http://{host}:{port}/slack/events", SECRET)
    try:
        yield driver
    finally:
        await driver.aclose()
        await runner.cleanup()


@pytest.fixture
async def driver(slack, sqlite_db, tmp_path) -> AsyncIterator[SlackDriver]:
    async for d in _driver(slack, tmp_path, lambda: [Pick("first"), Pick("second", slow=True), Pick("third")]):
        yield d


async def test_open_advance_errors_back_and_slow_steps(slack: SlackEmulator, driver: SlackDriver) -> None:
    await driver.slash_command("/backup", "new")
    view = await driver.wait_for_view(callback_id="wizard")
    assert check_view(view) == [] and "Step 1 of 3" in str(view["blocks"][0])
    session_id = view["private_metadata"]
    assert await WizardSession.filter(id=session_id).count() == 1

    await driver.set_value("v", "b", block_id="first")
    await driver.submit()
    assert driver.last_errors == {"first": "Only A works here."}
    await driver.set_value("v", "a", block_id="first")
    await driver.submit()
    view = driver.current_view()
    assert "Step 2 of 3" in str(view["blocks"][0]) and view["private_metadata"] == session_id

    await driver.set_value("v", "b", block_id="second")  # chosen, not submitted: the button sees it, nothing saves it
    await driver.click("wizard_act:ping")  # a slow step's button: "working…" first, then its result
    await slack.wait_for_call("views.update", count=2)
    assert "pong from second; on screen: b" in str(driver.current_view()["blocks"])
    assert "second" not in (await WizardSession.get(id=session_id)).data

    await driver.set_value("v", "a", block_id="second")
    await driver.submit()  # slow: acked with a working view, finished by views.update
    assert "working on it" in str(driver.current_view()["blocks"])
    for _ in range(50):
        if "Step 3 of 3" in str(driver.current_view()["blocks"]):
            break
        await asyncio.sleep(0.1)
    assert "Step 3 of 3" in str(driver.current_view()["blocks"])

    await driver.click("wizard_back")
    for _ in range(50):
        if "Step 2 of 3" in str(driver.current_view()["blocks"]):
            break
        await asyncio.sleep(0.1)
    view = driver.current_view()
    assert "Step 2 of 3" in str(view["blocks"][0])
    select = next(b for b in view["blocks"] if b.get("block_id") == "second")
    assert select["element"]["initial_option"]["value"] == "a"  # going back kept the answer


async def test_close_then_resume_reopens_the_same_step(slack: SlackEmulator, driver: SlackDriver) -> None:
    await driver.slash_command("/backup", "new")
    await driver.wait_for_view(callback_id="wizard")
    await driver.set_value("v", "a", block_id="first")
    await driver.submit()
    await driver.close()
    assert driver.current_view() is None
    await driver.slash_command("/backup", "resume")
    view = await driver.wait_for_view(callback_id="wizard")
    assert "Step 2 of 3" in str(view["blocks"][0])
    await driver.slash_command("/backup", "cancel")
    await slack.wait_for_call("chat.postEphemeral")
    assert "cancelled" in slack.ephemerals()[-1]["text"]


async def test_an_answer_slack_never_showed_is_not_applied_to_the_next_step(slack, driver: SlackDriver) -> None:
    """The bot saved a click but Slack did not get the answer in time (it shows an error and keeps the old screen):
    pressing Next again on that screen must not hand its answers to the step the session has moved on to."""
    await driver.slash_command("/backup", "new")
    session_id = (await driver.wait_for_view(callback_id="wizard"))["private_metadata"]
    await driver.set_value("v", "a", block_id="first")
    driver.ack_limit, driver.late_ok = 1e-6, True  # Slack gives up before the answer arrives
    assert (await driver.submit()).late
    driver.ack_limit, driver.late_ok = 3.0, False
    assert "Step 1 of 3" in str(driver.current_view()["blocks"])  # the old screen is still up
    row = await WizardSession.get(id=session_id)
    assert (row.state, row.version) == ("second", 1)  # ...but the click was saved
    await driver.submit()  # Next again on step 1's screen
    shown = str(driver.current_view()["blocks"])
    assert "Step 2 of 3" in shown and "out of date" in shown and "*Second*" in shown
    row = await WizardSession.get(id=session_id)
    assert (row.state, row.version) == ("second", 1) and "second" not in row.data


async def test_expired_trigger_tells_the_user_how_to_continue(slack: SlackEmulator, sqlite_db, tmp_path) -> None:
    clock = ManualClock()
    slack.clock = clock
    gate = asyncio.Event()
    async for driver in _driver(slack, tmp_path, lambda: [Pick("first", gate=gate), Pick("second")]):
        await driver.slash_command("/backup", "new")
        clock.advance(5)  # the app is slower than Slack's 3-second trigger window
        gate.set()
        await slack.wait_for_call("chat.postEphemeral")
        assert "/backup resume" in slack.ephemerals()[-1]["text"]
        assert [c.error for c in slack.calls_to("views.open")] == ["expired_trigger_id"]
        gate.set()
        await driver.slash_command("/backup", "resume")
        view = await driver.wait_for_view(callback_id="wizard")
        assert "Step 1 of 2" in str(view["blocks"][0])
