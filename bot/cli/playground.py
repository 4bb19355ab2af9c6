"""``backup-bot playground``: the whole bot against the bundled Slack emulator, used from a web page.

The bot is the one ``run`` serves (same app, listeners, wizard, queue, scheduler, reports), on the same data
directory and database, with Slack replaced by the emulator in this process; the page at the printed URL shows
the emulated workspace and every click goes to the bot as a signed Slack request. No Slack setting is needed; an
empty data directory is initialised first (as ``backup-bot init`` does). Like ``run``, it holds the database's
run lease, so it and a ``run`` on the same database never schedule at the same time.

It is a place to try the product, not a production surface: it listens on 127.0.0.1, and anywhere else only with
``--password`` (HTTP basic auth).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from rich.console import Console

from bot.cli import init
from bot.cli.logs import settings_secrets, setup_logging
from bot.cli.migrate import queue_schema
from bot.cli.util import Signals, load_for_command, supervise
from bot.config import ConfigError, Settings
from bot.playground.machine import Machine
from bot.playground.running import emulated, running_bot
from bot.playground.web import Hooks, Page
from bot.playground.workspace import keep_saved, restore, seeded_emulator
from storage import db, lease
from storage.crypto import install_keyring
from storage.models import Lease

console = Console(highlight=False, soft_wrap=True)


@dataclass(frozen=True)
class Options:
    host: str
    port: int
    password: str | None


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``backup-bot playground``."""
    parser = sub.add_parser("playground", help="try the bot in a browser, against a bundled Slack emulator")
    parser.add_argument("--port", type=int, default=os.environ.get("BACKUPBOT_PLAYGROUND_PORT", "8080"),
                        help="the page's port (default 8080, or BACKUPBOT_PLAYGROUND_PORT; 0 picks a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="the page's address (default 127.0.0.1, this machine only)")
    parser.add_argument("--password", default=os.environ.get("BACKUPBOT_PLAYGROUND_PASSWORD"),
                        help="HTTP basic auth password, required for an address other than loopback (or "
                        "BACKUPBOT_PLAYGROUND_PASSWORD, which keeps it out of the process list)")
    parser.set_defaults(handler=handle, env_file_may_be_missing=True)  # it initialises an empty data directory


def checked_options(args: argparse.Namespace) -> Options:
    """Given the parsed arguments, return the options, or a ConfigError saying what to change."""
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} is not a port: give 1-65535 (0 picks a free one).")
    if not _loopback(args.host) and not args.password:
        raise ConfigError(
            f"--host {args.host} would let other machines use the playground, which is not a production surface "
            "(anyone reaching it acts as any of its people). Keep 127.0.0.1, or add --password to require HTTP "
            "basic auth."
        )
    return Options(args.host, args.port, args.password or None)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def handle(args: argparse.Namespace) -> int:
    options = checked_options(args)
    env_path = Path(args.env_file)
    settings = load_for_command(env_path)
    if settings.secret_keys is None:
        console.print(f"No secret key in {env_path} yet: initialising the data directory first, as "
                      "`backup-bot init` does.")  # fmt: skip
        await init.handle(argparse.Namespace(env_file=args.env_file, data_dir=None))
        settings = load_for_command(env_path)
    install_keyring(settings.keyring())
    setup_logging(settings.log_level, settings_secrets(settings))  # quiet libraries, secrets masked, as `run`
    if settings.resolved_database_url.startswith("sqlite://"):
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    signals = Signals.install()
    signals.serving = True  # the first SIGTERM / Ctrl-C stops cleanly (the workspace is saved), a second at once
    return await supervise(serve(settings, options, signals.stop), signals)


async def serve(settings: Settings, options: Options, stop: asyncio.Event) -> int:
    """Run the emulator, the bot and the page until ``stop`` is set (or the run lease is lost)."""
    slack = seeded_emulator()
    await slack.start()
    saved = settings.data_dir / "playground" / "slack.json"
    restored = restore(slack, saved)
    settings = emulated(settings, slack)
    saver = asyncio.create_task(keep_saved(slack, saved))
    try:
        async with db.database(settings.resolved_database_url):
            await queue_schema(settings)
            async with lease.held(lease.RUN_LEASE, ttl=settings.run_lease_seconds, stop=stop,
                                  waiting=_waiting) as held:  # fmt: skip
                if held is None:
                    return 0
                async with running_bot(settings, slack) as bot:
                    machine = Machine(settings.data_dir, bot)
                    await machine.resume()
                    page = Page(slack, lambda: bot.driver, Hooks(machine=machine.describe, offer=machine.offer))
                    try:
                        runner = await _serve_page(page, options, restored)
                    except OSError as exc:
                        raise ConfigError(f"Cannot listen on {options.host}:{options.port} ({exc.strerror}): "
                                          "choose another --port.") from None  # fmt: skip
                    try:
                        await _until(stop, held.lost)
                    finally:
                        await runner.cleanup()
                        await machine.close()
                return 3 if held.lost.is_set() else 0
    finally:
        saver.cancel()
        await asyncio.gather(saver, return_exceptions=True)
        await slack.stop()


async def _serve_page(page: Page, options: Options, restored: bool) -> web.AppRunner:
    runner = web.AppRunner(page.app(options.password), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, options.host, options.port)
    await site.start()
    port = runner.addresses[0][1]
    shown = "127.0.0.1" if _loopback(options.host) else options.host
    console.print(f"Playground: http://{shown}:{port}/  (the real bot against a bundled Slack emulator"
                  + ("; the workspace as it was left" if restored else "") + "). Ctrl-C stops.")  # fmt: skip
    console.print("To connect a real Slack workspace instead, fill in the Slack tokens in .env and use "
                  "`backup-bot run` (README).")  # fmt: skip
    if options.password:
        console.print("Not a production surface: anyone with the password acts as any of the playground's people.")
    return runner


async def _until(*events: asyncio.Event) -> None:
    waiting = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waiting:
            task.cancel()


def _waiting(holder: Lease) -> None:
    console.print(f"Another `backup-bot run` or playground uses this database: {lease.describe(holder)}. Waiting "
                  "until it stops; Ctrl-C gives up.")  # fmt: skip
