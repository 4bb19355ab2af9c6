"""``backup-bot run``: serve Slack (Socket Mode when SLACK_APP_TOKEN is set, HTTP otherwise).

It also schedules runs and executes them (``BACKUPBOT_RUN_CONCURRENCY`` at once; with ``BACKUPBOT_QUEUE=
procrastinate`` that may be 0, leaving execution to ``backup-bot worker`` processes) and delivers the outbox of
reports, including those the workers wrote.

Start-up checks everything that would otherwise fail on the first click (settings, database and schema,
secret key, Slack token) and stops with one sentence if one is wrong. SIGTERM/SIGINT stop it cleanly.

One ``run`` per database does all this: it holds a lease (:mod:`storage.lease`) for as long as it runs. A second
one says who holds it and waits, serving nothing, until the first stops or its lease runs out. A ``run`` that loses
its lease (another took it while this one could not renew it) stops with exit status 3, for its supervisor to
restart it as the one that waits.
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
from bot.slack.webclient import PooledWebClient
from storage import db, lease
from storage.crypto import install_keyring
from storage.models import Lease

console = Console(highlight=False)
LEASE_LOST = 3  # exit status after losing the lease


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
            return await _serve(settings, runtime, identity.public_key)
        finally:
            await runtime.close()


async def _serve(settings: Settings, runtime: Runtime, public_key: str) -> int:
    services = WizardServices(pool=runtime.pool, alerts=runtime.alerts, bot_public_key=public_key)
    controller = WizardController(build_steps, services, ttl=timedelta(hours=settings.wizard_ttl_hours))
    client = build_client(settings)
    try:
        who = await check_bot_token(client)
        stop = stop_event()
        async with lease.held(lease.RUN_LEASE, ttl=settings.run_lease_seconds, stop=stop, waiting=_waiting) as held:
            if held is None:
                return 0  # stopped while waiting
            await _serve_holding(settings, runtime, services, controller, client, who.team, stop, held.lost)
            if held.lost.is_set():
                console.print(
                    f"Stopped: this bot lost its lease on the database ({held.reason}), so that only one "
                    "`backup-bot run` schedules runs and posts reports. Restarted, it waits for the other one."
                )
                return LEASE_LOST
            return 0
    finally:
        await client.close()


def _waiting(holder: Lease) -> None:
    console.print(
        f"Another `backup-bot run` uses this database: {lease.describe(holder)}, its lease renewed until "
        f"{holder.expires_at:%Y-%m-%d %H:%M:%S %Z}. Waiting until it stops (at once after a clean stop, else when its "
        "lease runs out); Ctrl-C gives up. To scale out, run `backup-bot worker` processes instead (README)."
    )


async def _serve_holding(
    settings: Settings,
    runtime: Runtime,
    services: WizardServices,
    controller: WizardController,
    client: PooledWebClient,
    team: str,
    stop: asyncio.Event,
    lost: asyncio.Event,
) -> None:
    """Serve Slack, schedule and execute runs, deliver reports until ``stop`` or ``lost`` is set."""
    reporting = await reports.install(runtime.alerts, client)  # reports, alerts and approvals → channels
    app = build_app(settings, client=client, wizard=controller, outbox=reporting.outbox)
    runtime.directory = controller.services.directory  # the API asks Slack about admins as the listeners do
    handler = await start_socket_mode(app, settings) if settings.socket_mode else None
    runner = await serve_http(None if handler else app, settings.http_host, settings.http_port, runtime)
    where = f"{settings.http_host}:{settings.http_port}"
    if handler:
        console.print(f"Connected to Slack workspace {team} over Socket Mode; API and /healthz on {where}.")
    else:
        console.print(f"Serving workspace {team} over HTTP on {where}/slack/events. Ctrl-C stops.")
    janitor = asyncio.create_task(_expire_wizards(controller))
    # scheduler + local worker on the configured queue backend; hourly: alerts for chains with no recent success
    stop_runs = await start_runs(runtime, services, hourly=[reporting.notifier.post_stale])
    try:
        ending = [asyncio.create_task(event.wait()) for event in (stop, lost)]
        await asyncio.wait(ending, return_when=asyncio.FIRST_COMPLETED)
        for task in ending:
            task.cancel()
    finally:
        janitor.cancel()
        await stop_runs()
        if handler:
            await handler.close_async()
        await runner.cleanup()
        await reporting.aclose()


async def _expire_wizards(controller: WizardController, every: float = 3600) -> None:
    """Hourly: cancel abandoned wizards and remove what their validation created on servers."""
    while True:
        try:
            await controller.expire()
        except Exception:
            logging.getLogger(__name__).exception("expiring wizard sessions failed")
        await asyncio.sleep(every)
