"""``backup-bot worker``: execute queued runs without serving Slack — the scale-out half of the bot.

Needs ``BACKUPBOT_QUEUE=procrastinate`` (PostgreSQL): start any number of workers, on any machines that reach the
database and the servers, next to one ``backup-bot run`` (which serves Slack and schedules). Each worker claims
runs from the shared queue — never two of one repository at once across all of them — and executes them with
the bot's own SSH key from the database. A worker that dies (SIGKILL, machine lost) stops sending heartbeats;
the others then mark its runs interrupted and retry them.

Reports: a worker publishes the same alerts as the bot process and renders them through the same
:func:`bot.slack.reports.install` wiring into the outbox table, but does not post them itself — the bot process
is the outbox's only drain, so reports keep their order and none is posted twice (:mod:`bot.runs.outbox`). A
worker therefore needs no Slack token.

A worker never migrates the database (several starting at once would race): it refuses to start until
``backup-bot migrate`` has brought the schema up to date. SIGTERM/SIGINT stop it gracefully: no new claims,
running runs get ``--grace`` seconds, the rest are marked interrupted and retried by another worker.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from rich.console import Console

from bot.cli.logs import settings_secrets, setup_logging
from bot.cli.util import Signals, command, load_for_command, supervise
from bot.config import ConfigError, Settings
from bot.runs.outbox import Outbox, TransientDeliveryError
from bot.runtime import Runtime
from storage import db
from storage.crypto import install_keyring

console = Console(highlight=False)
MAX_CONCURRENCY = 64


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = command(sub, "worker", __doc__,
                     help="execute queued runs (BACKUPBOT_QUEUE=procrastinate); no Slack listener")  # fmt: skip
    parser.add_argument("--concurrency", default="2", metavar="N",
                        help=f"runs this process executes at once, 1–{MAX_CONCURRENCY} (default 2)")  # fmt: skip
    parser.add_argument("--grace", default="300", metavar="SECONDS",
                        help="on SIGTERM, how long running runs may take to finish before they are interrupted "
                             "and retried elsewhere (default 300)")  # fmt: skip
    parser.set_defaults(handler=handle)


def _number(option: str, text: str, low: int, high: int) -> int:
    from bot.cli import UsageError

    value = text.strip()
    if not value.isdigit() or not low <= int(value) <= high:
        raise UsageError(f"{option} {text!r} is not a whole number from {low} to {high}.")
    return int(value)


async def handle(args: argparse.Namespace) -> int:
    settings = load_for_command(Path(args.env_file))
    concurrency = _number("--concurrency", args.concurrency, 1, MAX_CONCURRENCY)
    grace = _number("--grace", args.grace, 0, 24 * 3600)
    if settings.queue_backend != "procrastinate":
        raise ConfigError("`backup-bot worker` needs BACKUPBOT_QUEUE=procrastinate (on PostgreSQL); with the embedded "
                          "queue `backup-bot run` executes the runs itself, so no worker is needed.")  # fmt: skip
    install_keyring(settings.keyring())
    setup_logging(settings.log_level, settings_secrets(settings))
    signals = Signals.install()
    return await supervise(_start(settings, concurrency, grace, signals), signals)


async def _start(settings: Settings, concurrency: int, grace: int, signals: Signals) -> int:
    """Check the schema, connect, and serve until a signal (the first one stops cleanly once serving)."""
    url = settings.resolved_database_url
    pending = await db.pending_migrations(url)
    if pending:
        raise ConfigError(f"The database schema is behind this version of the bot ({len(pending)} migration(s) "
                          "pending): run `backup-bot migrate` once, then start the workers again.")  # fmt: skip
    async with db.database(url, migrate=False):
        runtime = await _runtime(settings)
        try:
            await serve(runtime, concurrency=concurrency, grace=grace, stop=signals.stop, signals=signals)
        finally:
            await runtime.close()
    return 0


async def _runtime(settings: Any) -> Runtime:
    from storage.models import BotIdentity

    if not await BotIdentity.exists(name="default"):
        raise ConfigError("The database has no bot SSH key yet: run `backup-bot init` (or start `backup-bot run` "
                          "once) with the same DATABASE_URL, then start the worker again.")  # fmt: skip
    return await Runtime.create(settings)


class RecordingOutbox(Outbox):
    """Writes messages as outbox rows and never delivers them: the bot process is the outbox's one drain."""

    def __init__(self) -> None:
        super().__init__(_not_here)

    def start(self) -> None:
        return None


async def _not_here(method: str, params: dict[str, Any]) -> dict[str, Any]:
    raise TransientDeliveryError("worker processes do not post; `backup-bot run` delivers the outbox")


async def serve(
    runtime: Runtime, *, concurrency: int, grace: float, stop: asyncio.Event, signals: Signals | None = None
) -> None:
    """Run a worker on the configured queue until ``stop`` is set; then stop it gracefully (``signals``: told when
    the worker serves, so that from then on the first signal stops cleanly)."""
    from bot.flows.wizard.services import WizardServices
    from bot.runs.backends import make_queue
    from bot.runs.worker import start_workers
    from bot.slack import reports

    queue = make_queue(runtime.settings)
    await queue.open()
    reporting = await reports.install(runtime.alerts, None, outbox=RecordingOutbox())  # type: ignore[arg-type]
    services = WizardServices(pool=runtime.pool, alerts=runtime.alerts)
    worker = None
    try:
        worker = await start_workers(runtime, services, queue, concurrency=concurrency, grace=grace)
        console.print(f"Worker {worker.worker_id} executes up to {concurrency} run(s) at once from the "
                      f"procrastinate queue on {db.describe(runtime.settings.resolved_database_url)}. "
                      "SIGTERM stops it.")  # fmt: skip
        if signals is not None:
            signals.serving = True
        await stop.wait()
    finally:
        if worker is not None:
            await worker.stop()
        await queue.close()
        await reporting.aclose()
