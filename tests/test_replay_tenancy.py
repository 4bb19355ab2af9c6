"""Replays and tenants (issue 13, item 7), through the emulator with signed requests, as an attacker or Slack would.

A captured signed request replayed within Slack's window has no second effect, in the same process or another one
on the same database; an event Slack resends (``x-slack-retry-num``) is acknowledged without a second effect; a
person's repeated commands and clicks all work; a workspace the bot is not installed in is refused and gets no row;
Grid payloads go through the one tenant rule.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from aiohttp import web

from bot.config import load_settings
from bot.flows.wizard.controller import WizardController
from bot.flows.wizard.registry import build_steps
from bot.slack.app import build_app, serve_http, start_socket_mode
from bot.slack.emulator import (
    DEFAULT_APP_TOKEN,
    DEFAULT_BOT_TOKEN,
    SlackDriver,
    SlackEmulator,
    payloads,
    signed_headers,
)
from bot.slack.emulator.transport import AppResponse, HttpTransport, encode
from storage import replay
from storage.crypto import generate_key
from storage.models import SeenRequest, Workspace
from storage.tenancy import Installation, Origin, tenant_of

SECRET = "replay-signing-secret"


@dataclass
class Sent:
    body: bytes
    content_type: str
    headers: dict[str, str]


class CapturingTransport(HttpTransport):
    """Slack's HTTP delivery that also keeps what it sent, as a man in the middle would."""

    def __init__(self, url: str, signing_secret: str) -> None:
        super().__init__(url, signing_secret)
        self.sent: list[Sent] = []

    async def post_raw(self, body: bytes, content_type: str, headers: dict[str, str]) -> AppResponse:
        self.sent.append(Sent(body, content_type, dict(headers)))
        return await super().post_raw(body, content_type, headers)


async def _serve(emulator: SlackEmulator, tmp_path: Path, **extra: str) -> tuple[web.AppRunner, str]:
    settings = load_settings(tmp_path / "none.env", SLACK_BOT_TOKEN=DEFAULT_BOT_TOKEN, SLACK_SIGNING_SECRET=SECRET,
                             SLACK_API_URL=emulator.api_url, BACKUPBOT_SECRET_KEYS=generate_key(), **extra)  # fmt: skip
    app = build_app(settings, wizard=WizardController(build_steps, services=None))
    runner = await serve_http(app, "127.0.0.1", 0)
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}/slack/events"


@pytest.fixture
async def bot(sqlite_db: str, tmp_path: Path) -> AsyncIterator[tuple[SlackEmulator, SlackDriver, CapturingTransport]]:
    async with SlackEmulator() as emulator:
        runner, url = await _serve(emulator, tmp_path)
        transport = CapturingTransport(url, SECRET)
        driver = SlackDriver(emulator, transport)
        try:
            yield emulator, driver, transport
        finally:
            await driver.aclose()
            await runner.cleanup()


async def test_a_replayed_backup_new_opens_one_wizard(bot) -> None:
    emulator, driver, transport = bot
    first = await driver.slash_command("/backup", "new")
    assert first.status == 200
    await emulator.wait_for_call("views.open")
    captured = transport.sent[-1]
    replays = await asyncio.gather(*(transport.post_raw(captured.body, captured.content_type, captured.headers)
                                     for _ in range(3)))  # fmt: skip
    assert [r.status for r in replays] == [200, 200, 200]  # acknowledged, so Slack would not resend
    await asyncio.sleep(0.5)
    assert len(emulator.calls_to("views.open")) == 1


async def test_a_replay_to_another_bot_process_on_the_same_database_has_no_effect(bot, tmp_path: Path) -> None:
    emulator, driver, transport = bot
    await driver.slash_command("/backup", "new")
    await emulator.wait_for_call("views.open")
    captured = transport.sent[-1]
    runner, url = await _serve(emulator, tmp_path)  # a second bot process: its own app, the same database
    try:
        other = HttpTransport(url, SECRET)
        answer = await other.post_raw(captured.body, captured.content_type, captured.headers)
        await other.close()
    finally:
        await runner.cleanup()
    assert answer.status == 200
    await asyncio.sleep(0.3)
    assert len(emulator.calls_to("views.open")) == 1


async def test_repeated_commands_and_clicks_each_take_effect(bot) -> None:
    emulator, driver, _ = bot
    for _ in range(3):
        assert "`/backup help`" in str((await driver.slash_command("/backup", "help")).json["blocks"])
    await driver.slash_command("/backup", "new")
    await driver.slash_command("/backup", "new")
    await emulator.wait_for_call("views.open", count=2)  # a second real wizard, not a replay
    for count in (1, 2):
        await driver.open_home()
        await emulator.wait_for_call("views.publish", count=count)


async def test_a_resent_event_is_acknowledged_once_and_handled_once(bot) -> None:
    emulator, driver, transport = bot
    await driver.open_home()
    await emulator.wait_for_call("views.publish")
    event = transport.sent[-1]
    # Slack's retry: the same event (same event_id), signed anew with a later timestamp, with retry headers.
    later = int(event.headers["X-Slack-Request-Timestamp"]) + 2
    headers = {**signed_headers(SECRET, event.body, timestamp=later), "X-Slack-Retry-Num": "1",
               "X-Slack-Retry-Reason": "http_timeout"}  # fmt: skip
    assert headers["X-Slack-Signature"] != event.headers["X-Slack-Signature"]  # a new signature: not a copy of it
    answer = await transport.post_raw(event.body, event.content_type, headers)
    assert answer.status == 200
    await asyncio.sleep(0.5)
    assert len(emulator.calls_to("views.publish")) == 1


async def test_a_workspace_not_installed_is_refused_and_gets_no_row(bot) -> None:
    emulator, driver, _transport = bot
    emulator.add_team("T0002", "other")
    emulator.add_bot_token("xoxb-other-team", "T0002", bot_user_id="U0BOT2", bot_id="B0002")
    emulator.add_user("U0201", "T0002", name="zed")
    emulator.add_channel("C0201", "general", "T0002")
    answer = await driver.slash_command("/backup", "new", user="U0201", channel="C0201")
    assert answer.status == 200 and "not installed in this workspace" in answer.json["text"]
    opened = await driver.open_home(user="U0201")
    assert opened.status == 403
    await asyncio.sleep(0.3)
    assert emulator.calls_to("views.open") == [] and emulator.calls_to("views.publish") == []
    assert await Workspace.filter(team_id="T0002").count() == 0
    assert await SeenRequest.all().count() == 0  # refused before anything was recorded
    # The installed workspace still works.
    await driver.slash_command("/backup", "new")
    await emulator.wait_for_call("views.open")
    assert await Workspace.filter(team_id="T0001").count() == 1


async def test_the_installed_team_under_a_foreign_grid_org_is_refused(bot) -> None:
    _emulator, driver, transport = bot
    await driver.slash_command("/backup", "help")
    payload: dict[str, Any] = dict(parse_qsl(transport.sent[-1].body.decode()))
    payload.update(enterprise_id="E0FOREIGN", enterprise_name="other", trigger_id="1.2.forged")
    body, content_type = encode("slash_commands", payload)
    answer = await transport.post_raw(body, content_type, signed_headers(SECRET, body))
    assert "not installed" in answer.json.get("text", "")
    assert await Workspace.filter(team_id="E0FOREIGN").count() == 0


async def test_socket_mode_resent_event_is_handled_once(sqlite_db: str, tmp_path: Path) -> None:
    async with SlackEmulator() as emulator:
        settings = load_settings(tmp_path / "none.env", SLACK_BOT_TOKEN=DEFAULT_BOT_TOKEN,
                                 SLACK_APP_TOKEN=DEFAULT_APP_TOKEN, SLACK_API_URL=emulator.api_url,
                                 BACKUPBOT_SECRET_KEYS=generate_key())  # fmt: skip
        handler = await start_socket_mode(build_app(settings), settings)
        try:
            await emulator.socket.wait_connected()
            driver = SlackDriver.over_socket_mode(emulator)
            await driver.open_home()
            await emulator.wait_for_call("views.publish")
            bot_token = emulator.world.registry.bot_for_team("T0001")
            again = payloads.event_callback(bot=bot_token, event={"type": "app_home_opened", "user": "U0001",
                                                                   "channel": "D0", "tab": "home"},
                                            event_id="Ev-same")  # fmt: skip
            await driver.deliver("events_api", again)
            await driver.deliver("events_api", again)  # Slack's redelivery of the same event
            await emulator.wait_for_call("views.publish", count=2)
            await asyncio.sleep(0.5)
            assert len(emulator.calls_to("views.publish")) == 2  # the first open, and Ev-same once
        finally:
            await handler.close_async()


async def test_seen_requests_expire_after_the_window(sqlite_db: str) -> None:
    now = datetime.now(UTC)
    key = replay.request_key("sig", "v0=abc")
    assert await replay.first_sighting([key], now=now - timedelta(minutes=11))
    assert not await replay.first_sighting([key], now=now)
    assert await replay.forget_older(now=now) == 1
    assert await replay.first_sighting([key], now=now)  # a copy this late is refused by its timestamp anyway


GRID = "E0ORG"


@pytest.mark.parametrize(
    ("origin", "installs", "tenant"),
    [
        (Origin("T0001"), [Installation("T0001")], "T0001"),
        (Origin("T0002"), [Installation("T0001")], None),  # not installed there
        (Origin(None, GRID), [Installation("T0001")], None),
        (Origin("T0001", GRID), [Installation("T0001", GRID)], "T0001"),  # a workspace install inside a Grid org
        (Origin("T0001"), [Installation("T0001", GRID)], "T0001"),  # payloads that omit the org (team ids are global)
        (Origin("T0001", "E0OTHER"), [Installation("T0001", GRID)], None),  # the right team under another org
        (Origin("T0001", "E0OTHER"), [Installation("T0001")], None),
        (Origin("T0007", GRID, True), [Installation(None, GRID, True)], GRID),  # org-wide: one tenant, the org
        (Origin("T0008", GRID), [Installation(None, GRID, True)], GRID),  # every workspace of that org
        (Origin("T0008", "E0OTHER"), [Installation(None, GRID, True)], None),
        (Origin("T0008"), [Installation(None, GRID, True)], None),  # no org named: not provably inside it
        (Origin("T0001"), [], None),  # Slack could not be asked: nothing is installed
    ],
)
def test_one_tenant_rule(origin: Origin, installs: list[Installation], tenant: str | None) -> None:
    found = tenant_of(origin, installs)
    assert (found.team_id if found else None) == tenant
