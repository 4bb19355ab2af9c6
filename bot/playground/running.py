"""The bot as ``backup-bot run`` builds it, wired to the in-process Slack emulator instead of Slack.

Same pieces in the same order as :mod:`bot.cli.run`: the runtime (SSH pool with the bot's identity), the wizard
controller, reports through the outbox, :func:`bot.slack.app.build_app` with every listener, the HTTP request URL
(on loopback, a free port), the scheduler and worker, and the lease that keeps one scheduler per database. Only
the Slack settings differ: a bot token the emulator knows, a signing secret made up for this process, and the
Web API URL of the emulator. The page reaches the bot through a :class:`SlackDriver` that signs every request as
Slack does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

from pydantic import SecretStr

from bot.config import Settings
from bot.flows.wizard.controller import WizardController
from bot.flows.wizard.registry import build_steps
from bot.flows.wizard.services import WizardServices
from bot.identity import ensure_identity
from bot.runs.worker import start_runs
from bot.runtime import Runtime
from bot.slack import reports
from bot.slack.app import build_app, build_client, serve_http
from bot.slack.emulator import DEFAULT_BOT_TOKEN, SlackDriver, SlackEmulator

log = logging.getLogger(__name__)


def emulated(settings: Settings, slack: SlackEmulator) -> Settings:
    """Given the operator's settings and a started emulator, return them pointed at the emulator (HTTP mode, a
    signing secret of this process only); everything else (data directory, database, queue) stays theirs."""
    return settings.model_copy(update={
        "slack_bot_token": SecretStr(DEFAULT_BOT_TOKEN),
        "slack_app_token": None,
        "slack_signing_secret": SecretStr(secrets.token_hex(16)),
        "slack_api_url": slack.api_url,
        "http_host": "127.0.0.1",
    })  # fmt: skip


@dataclass
class RunningBot:
    """What the page needs of the running bot."""

    runtime: Runtime
    services: WizardServices
    driver: SlackDriver
    events_url: str
    public_key: str


@contextlib.asynccontextmanager
async def running_bot(settings: Settings, slack: SlackEmulator) -> AsyncIterator[RunningBot]:
    """Given emulated settings (database connected), run the whole bot until the block ends."""
    identity = await ensure_identity()
    runtime = await Runtime.create(settings)
    services = WizardServices(pool=runtime.pool, alerts=runtime.alerts, bot_public_key=identity.public_key)
    controller = WizardController(build_steps, services, ttl=timedelta(hours=settings.wizard_ttl_hours))
    client = build_client(settings)
    reporting = await reports.install(runtime.alerts, client)
    app = build_app(settings, client=client, wizard=controller, outbox=reporting.outbox)
    runtime.directory = controller.services.directory
    runner = await serve_http(app, "127.0.0.1", 0, runtime)
    host, port = runner.addresses[0][:2]
    events_url = f"http://{host}:{port}/slack/events"
    assert settings.slack_signing_secret is not None
    driver = SlackDriver.over_http(slack, events_url, settings.slack_signing_secret.get_secret_value(), late_ok=True)
    janitor = asyncio.create_task(_expire_wizards(controller))
    stop_runs = await start_runs(runtime, services, hourly=[reporting.notifier.post_stale])
    try:
        yield RunningBot(runtime, services, driver, events_url, identity.public_key)
    finally:
        janitor.cancel()
        await stop_runs()
        await driver.aclose()
        await runner.cleanup()
        await reporting.aclose()
        await client.close()
        await runtime.close()


async def _expire_wizards(controller: WizardController, every: float = 3600) -> None:
    """Hourly, as ``run`` does: cancel abandoned wizards and remove what their validation created."""
    while True:
        try:
            await controller.expire()
        except Exception:
            log.exception("expiring wizard sessions failed")
        await asyncio.sleep(every)
