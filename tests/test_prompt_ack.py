"""bolt's listener runner answers at ``ack()`` (no 10 ms polling): the answer leaves while the listener still
works, errors before and after the ack end as bolt ends them, and the bot's app uses the runner."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import load_settings
from bot.slack import prompt_ack
from bot.slack.app import build_app, serve_http
from bot.slack.emulator import DEFAULT_BOT_TOKEN, SlackDriver, SlackEmulator
from storage.crypto import generate_key

SECRET = "prompt-ack-secret"


class Listeners:
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.finished: list[str] = []
        self.errors: list[str] = []


@pytest.fixture
async def slack() -> AsyncIterator[SlackEmulator]:
    async with SlackEmulator() as emulator:
        yield emulator


@pytest.fixture
async def served(slack: SlackEmulator) -> AsyncIterator[tuple[SlackDriver, Listeners]]:
    app = AsyncApp(client=AsyncWebClient(token=DEFAULT_BOT_TOKEN, base_url=slack.api_url), signing_secret=SECRET)
    seen = Listeners()

    @app.command("/later")
    async def later(ack, client, command):
        await ack(text="on it")  # the answer must leave now, while the work below waits
        await seen.release.wait()
        await client.chat_postMessage(channel=command["channel_id"], text="done later")
        seen.finished.append("later")

    @app.command("/broken")
    async def broken(ack):
        raise RuntimeError("before the ack")

    @app.command("/broken-after")
    async def broken_after(ack):
        await ack(text="acked first")
        raise RuntimeError("after the ack")

    @app.error
    async def on_error(error, body):
        seen.errors.append(str(error))

    prompt_ack.install(app)
    runner = await serve_http(app, "127.0.0.1", 0)
    host, port = runner.addresses[0][:2]
    driver = SlackDriver.over_http(slack, f"http://{host}:{port}/slack/events", SECRET)
    try:
        yield driver, seen
    finally:
        seen.release.set()
        await driver.aclose()
        await runner.cleanup()


async def test_the_answer_leaves_at_ack_and_the_listener_goes_on(slack: SlackEmulator, served) -> None:
    driver, seen = served
    response = await driver.slash_command("/later")
    assert response.status == 200 and response.body == "on it"
    assert seen.finished == []  # still waiting: the answer did not wait for the listener
    seen.release.set()
    await slack.wait_for_call("chat.postMessage")
    assert slack.messages()[-1]["text"] == "done later"


async def test_errors_before_and_after_the_ack_end_as_in_bolt(served) -> None:
    driver, seen = served
    refused = await driver.slash_command("/broken")
    assert refused.status == 500 and seen.errors == ["before the ack"]
    answered = await driver.slash_command("/broken-after")
    assert answered.status == 200 and answered.body == "acked first"
    for _ in range(100):
        if len(seen.errors) == 2:
            break
        await asyncio.sleep(0.01)
    assert seen.errors == ["before the ack", "after the ack"]


def test_only_bolts_own_runner_is_replaced_and_the_bot_uses_it(slack: SlackEmulator, tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "none.env", SLACK_BOT_TOKEN=DEFAULT_BOT_TOKEN, SLACK_SIGNING_SECRET=SECRET,
                             SLACK_API_URL=slack.api_url, BACKUPBOT_SECRET_KEYS=generate_key())  # fmt: skip
    app = build_app(settings)
    assert type(app.listener_runner) is prompt_ack.PromptAckRunner
    prompt_ack.install(app)  # idempotent
    assert type(app.listener_runner) is prompt_ack.PromptAckRunner
