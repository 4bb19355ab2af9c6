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
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

from rich.console import Console

from bot.cli.logs import settings_secrets, setup_logging
from bot.cli.migrate import queue_schema
from bot.cli.util import Signals, ensure_writable_dir, load_for_command, supervise
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
from bot.slack.listener import limits_of, raise_fd_limit
from bot.slack.webclient import PooledWebClient
from storage import db, lease
from storage.crypto import install_keyring
from storage.models import Lease

console = Console(highlight=False)
LEASE_LOST = 3  # exit status after losing the lease


_DESCRIPTION = """\
Serve Slack, schedule and execute backup runs, deliver reports. Everything is read from the settings
(--env-file, default .env, and the environment): Socket Mode when SLACK_APP_TOKEN is set, else HTTP mode
(Slack posts to BACKUPBOT_HTTP_HOST:BACKUPBOT_HTTP_PORT/slack/events, checked with SLACK_SIGNING_SECRET);
the HTTP API, /healthz and /metrics listen there in both modes (BACKUPBOT_HTTP_HOST defaults to 0.0.0.0 in HTTP
mode and to 127.0.0.1 in Socket Mode), with caps on connections (BACKUPBOT_HTTP_MAX_CONNECTIONS, _MAX_PER_CLIENT)
and deadlines (BACKUPBOT_HTTP_HEADER_TIMEOUT, _KEEPALIVE_TIMEOUT). The database (DATABASE_URL, default SQLite in
BACKUPBOT_DATA_DIR) is migrated at start. BACKUPBOT_LOG_LEVEL=DEBUG shows the libraries' own logs.

Start-up stops with one sentence when a setting, the database or a Slack token is wrong. SIGTERM or Ctrl-C
stops the bot: at once while it is starting, cleanly once it serves (a second signal stops it at once).
Exit status: 0 stopped, 2 a problem named on stderr, 3 lost its lease to another `backup-bot run`.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "run",
        help="run the bot (Socket Mode with SLACK_APP_TOKEN, else HTTP)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=handle)


async def handle(args: argparse.Namespace) -> int:
    settings = load_for_command(Path(args.env_file))
    settings.require_slack()
    install_keyring(settings.keyring())
    setup_logging(settings.log_level, settings_secrets(settings))
    raise_fd_limit()  # the soft limit up to the hard one (LimitNOFILE in the unit): headroom for SSH, database, files
    signals = Signals.install()
    return await supervise(_start(settings, signals), signals)


async def _start(settings: Settings, signals: Signals) -> int:
    """Connect the database (creating the default data directory), then serve until a signal or a lost lease."""
    if db.sqlite_file(settings.resolved_database_url) is not None and settings.database_url is None:
        ensure_writable_dir(settings.data_dir, "BACKUPBOT_DATA_DIR")
    async with db.database(settings.resolved_database_url):
        await queue_schema(settings)  # procrastinate's tables, when that backend is configured
        identity = await ensure_identity()
        runtime = await Runtime.create(settings)
        try:
            return await _serve(settings, runtime, identity.public_key, signals)
        finally:
            await runtime.close()


async def _serve(settings: Settings, runtime: Runtime, public_key: str, signals: Signals) -> int:
    services = WizardServices(pool=runtime.pool, alerts=runtime.alerts, bot_public_key=public_key)
    controller = WizardController(build_steps, services, ttl=timedelta(hours=settings.wizard_ttl_hours))
    client = build_client(settings)
    try:
        who = await check_bot_token(client)
        stop = signals.stop
        async with lease.held(lease.RUN_LEASE, ttl=settings.run_lease_seconds, stop=stop, waiting=_waiting) as held:
            if held is None:
                return 0  # stopped while waiting
            await _serve_holding(settings, runtime, services, controller, client, who.team, signals, held.lost)
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
    signals: Signals,
    lost: asyncio.Event,
) -> None:
    """Serve Slack, schedule and execute runs, deliver reports until a signal's ``stop`` or ``lost`` is set.

    The HTTP listener starts first, so a port in use is refused before anything connects to Slack."""
    reporting = await reports.install(runtime.alerts, client)  # reports, alerts and approvals → channels
    try:
        app = build_app(settings, client=client, wizard=controller, outbox=reporting.outbox)
        runtime.directory = controller.services.directory  # the API asks Slack about admins as the listeners do
        runner = await serve_http(None if settings.socket_mode else app, settings.listen_host, settings.http_port,
                                  runtime, limits=limits_of(settings))  # fmt: skip
        try:
            handler = await start_socket_mode(app, settings) if settings.socket_mode else None
            try:
                await _serve_started(settings, runtime, services, controller, team, signals, lost,
                                     reporting.notifier.post_stale, socket_mode=handler is not None)  # fmt: skip
            finally:
                if handler:
                    await handler.close_async()
        finally:
            await runner.cleanup()
    finally:
        await reporting.aclose()


async def _serve_started(
    settings: Settings,
    runtime: Runtime,
    services: WizardServices,
    controller: WizardController,
    team: str,
    signals: Signals,
    lost: asyncio.Event,
    post_stale: Callable[[], Awaitable[object]],
    *,
    socket_mode: bool,
) -> None:
    """Connected: say so, start the scheduler, the local worker and the wizard janitor; wait for the end."""
    where = f"{settings.listen_host}:{settings.http_port}"
    if socket_mode:
        console.print(f"Connected to Slack workspace {team} over Socket Mode; API and /healthz on {where}.")
    else:
        console.print(f"Serving workspace {team} over HTTP on {where}/slack/events. Ctrl-C stops.")
    janitor = asyncio.create_task(_expire_wizards(controller))
    # scheduler + local worker on the configured queue backend; hourly: alerts for chains with no recent success
    stop_runs = await start_runs(runtime, services, hourly=[post_stale])
    signals.serving = True  # from now on the first signal stops cleanly
    try:
        ending = [asyncio.create_task(event.wait()) for event in (signals.stop, lost)]
        await asyncio.wait(ending, return_when=asyncio.FIRST_COMPLETED)
        for task in ending:
            task.cancel()
    finally:
        janitor.cancel()
        await stop_runs()


async def _expire_wizards(controller: WizardController, every: float = 3600) -> None:
    """Hourly: cancel abandoned wizards and remove what their validation created on servers."""
    while True:
        try:
            await controller.expire()
        except Exception:
            logging.getLogger(__name__).exception("expiring wizard sessions failed")
        await asyncio.sleep(every)
