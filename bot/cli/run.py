"""``backup-bot run``: serve Slack (Socket Mode when SLACK_APP_TOKEN is set, HTTP otherwise).

It also schedules runs and executes them (``BACKUPBOT_RUN_CONCURRENCY`` at once; with ``BACKUPBOT_QUEUE=
procrastinate`` that may be 0, leaving execution to ``backup-bot worker`` processes) and delivers the outbox of
reports, including those the workers wrote.

Start-up checks everything that would otherwise fail on the first click (settings, database and schema,
secret key, Slack token) and stops with one sentence if one is wrong. SIGTERM/SIGINT stop it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from datetime import timedelta
from pathlib import Path

from rich.console import Console

from bot.cli.migrate import queue_schema
from bot.cli.util import load_for_command, stop_event
from bot.config import Settings
from bot.flows.wizard.controller import WizardController
from bot.flows.wizard.registry import build_steps
from bot.flows.wizard.services import WizardServices
from bot.identity import ensure_identity
from bot.runs.worker import start_runs
from bot.runtime import Runtime
from bot.slack import reports
from bot.slack.app import build_app, build_client, serve_http, start_socket_mode
from bot.slack.auth import check_bot_token
from storage import db
from storage.crypto import install_keyring

console = Console(highlight=False)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("run", help="run the bot (Socket Mode with SLACK_APP_TOKEN, else HTTP)")
    parser.set_defaults(handler=handle)


async def handle(args: argparse.Namespace) -> int:
    settings = load_for_command(Path(args.env_file))
    settings.require_slack()
    install_keyring(settings.keyring())
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.resolved_database_url.startswith("sqlite://"):
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    async with db.database(settings.resolved_database_url):
        await queue_schema(settings)  # procrastinate's tables, when that backend is configured
        identity = await ensure_identity()
        runtime = await Runtime.create(settings)
        try:
            await _serve(settings, runtime, identity.public_key)
        finally:
            await runtime.close()
    return 0


async def _serve(settings: Settings, runtime: Runtime, public_key: str) -> None:
    services = WizardServices(pool=runtime.pool, alerts=runtime.alerts, bot_public_key=public_key)
    controller = WizardController(build_steps, services, ttl=timedelta(hours=settings.wizard_ttl_hours))
    client = build_client(settings)
    who = await check_bot_token(client)
    reporting = await reports.install(runtime.alerts, client)  # reports, alerts and approvals → channels
    app = build_app(settings, client=client, wizard=controller, outbox=reporting.outbox)
    stop = stop_event()
    handler = await start_socket_mode(app, settings) if settings.socket_mode else None
    runner = await serve_http(None if handler else app, settings.http_host, settings.http_port, runtime)
    where = f"{settings.http_host}:{settings.http_port}"
    if handler:
        console.print(f"Connected to Slack workspace {who.team} over Socket Mode; API and /healthz on {where}.")
    else:
        console.print(f"Serving workspace {who.team} over HTTP on {where}/slack/events. Ctrl-C stops.")
    janitor = asyncio.create_task(_expire_wizards(controller))
    # scheduler + local worker on the configured queue backend; hourly: alerts for chains with no recent success
    stop_runs = await start_runs(runtime, services, hourly=[reporting.notifier.post_stale])
    try:
        await stop.wait()
    finally:
        janitor.cancel()
        await stop_runs()
        if handler:
            await handler.close_async()
        await runner.cleanup()
        await reporting.aclose()
        await client.close()


async def _expire_wizards(controller: WizardController, every: float = 3600) -> None:
    """Hourly: cancel abandoned wizards and remove what their validation created on servers."""
    while True:
        try:
            await controller.expire()
        except Exception:
            logging.getLogger(__name__).exception("expiring wizard sessions failed")
        await asyncio.sleep(every)
