"""``backup-bot doctor``: check everything the bot needs and say, in plain words, what is wrong.

Each check is independent and reports ``ok``/``problem`` with the fix; one failing check never hides the
others (except that nothing can be checked without readable settings). Exit status 0 when all pass, 1 when
any fails. The database is only read: doctor reports pending migrations but does not apply them.

Checks what `backup-bot run` would use, from the settings (--env-file, default .env, and the environment): the
data directory, the secret keys, the database and its stored secrets, the run queue, whether a bot process holds
the lease, the Slack bot token and connection mode, borg and the ssh client. It has no options of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table
from slack_sdk.errors import SlackApiError, SlackClientError

from bot.cli.util import command, ensure_writable_dir, load_for_command
from bot.config import ConfigError, Settings
from bot.slack.app import build_client
from bot.slack.auth import check_bot_token
from storage import db, lease
from storage.crypto import install_keyring
from storage.errors import StorageError
from storage.models import BotIdentity, Lease

console = Console(highlight=False)


@dataclass(frozen=True)
class Finding:
    check: str
    ok: bool
    detail: str


class Problem(Exception):
    """A failed check; the message is the detail shown to the operator."""


Check = Callable[[Settings], Awaitable[str]]


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = command(sub, "doctor", __doc__, help="check settings, database, Slack, borg and ssh")
    parser.set_defaults(handler=handle)


async def handle(args: argparse.Namespace) -> int:
    settings = load_for_command(Path(args.env_file))
    findings = await run_checks(settings)
    table = Table(show_header=True, header_style="bold")
    for column in ("check", "result", "detail"):
        table.add_column(column, overflow="fold")
    for f in findings:
        table.add_row(f.check, "[green]ok[/]" if f.ok else "[red]problem[/]", f.detail)
    console.print(table)
    failed = [f for f in findings if not f.ok]
    console.print(f"{len(failed)} problem(s) found." if failed else "Everything looks right.")
    return 1 if failed else 0


async def run_checks(settings: Settings) -> list[Finding]:
    checks: list[tuple[str, Check]] = [
        ("data directory", _data_dir),
        ("secret keys", _secret_keys),
        ("database", _database),
        ("stored secrets", _stored_secrets),
        ("run queue", _run_queue),
        ("bot process", _run_lease),
        ("Slack bot token", _slack_token),
        ("Slack connection mode", _slack_mode),
        ("borg", _borg),
        ("ssh client", _ssh),
    ]
    findings = []
    for name, check in checks:
        try:
            findings.append(Finding(name, True, await check(settings)))
        except (Problem, ConfigError, StorageError) as exc:
            findings.append(Finding(name, False, str(exc)))
    return findings


async def _data_dir(settings: Settings) -> str:
    ensure_writable_dir(settings.data_dir, "BACKUPBOT_DATA_DIR")
    return f"{settings.data_dir.resolve()} is writable"


async def _secret_keys(settings: Settings) -> str:
    keyring = settings.keyring()
    return f"{len(keyring.keys)} key(s) configured; the first one encrypts"


async def _database(settings: Settings) -> str:
    url = settings.resolved_database_url
    await db.connect(url, migrate=False)
    await db.close()
    pending = await db.pending_migrations(url)
    if pending:
        raise Problem(
            f"{db.describe(url)} is reachable but {len(pending)} migration(s) are pending: run "
            "`backup-bot migrate` (the bot also applies them when it starts)."
        )
    return f"{db.describe(url)} is reachable and its schema is current"


async def _stored_secrets(settings: Settings) -> str:
    install_keyring(settings.keyring())
    try:
        async with db.database(settings.resolved_database_url, migrate=False):
            row = await BotIdentity.get_or_none(name="default")
            if row is None:
                raise Problem("The bot has no SSH identity yet: run `backup-bot init`.")
            row.private_key.reveal()
    except StorageError as exc:
        raise Problem(str(exc)) from None
    except Problem:
        raise
    except Exception:
        raise Problem(
            "The bot's SSH identity cannot be read: run `backup-bot migrate`, then `backup-bot init`."
        ) from None
    return "the secret keys decrypt the bot's SSH identity"


async def _run_queue(settings: Settings) -> str:
    """Embedded: nothing to check. procrastinate: its tables exist and how many workers sent a heartbeat lately."""
    from bot.runs.backends import PROCRASTINATE

    if settings.queue_backend != PROCRASTINATE:
        return f"embedded: `backup-bot run` executes up to {settings.run_concurrency} run(s) at once"
    from bot.runs.procrastinate_queue import ProcrastinateQueue

    queue = ProcrastinateQueue(settings.resolved_database_url)
    try:
        await queue.app.open_async()
    except Exception as exc:
        raise Problem(f"procrastinate cannot connect to {db.describe(settings.resolved_database_url)}: "
                      f"{type(exc).__name__}.") from None  # fmt: skip
    try:
        if not await queue.schema_ready():
            raise Problem("procrastinate's tables are missing: run `backup-bot migrate`.")
        rows = await queue.connector.execute_query_all_async(
            query="SELECT count(*) AS n FROM procrastinate_workers "
            "WHERE last_heartbeat > NOW() - make_interval(secs => %(secs)s)",
            secs=settings.worker_stalled_seconds,
        )
    finally:
        await queue.app.close_async()
    live = rows[0]["n"] if rows else 0
    local = f"; `backup-bot run` executes up to {settings.run_concurrency} itself" if settings.run_concurrency else ""
    if not live and not settings.run_concurrency:
        raise Problem("procrastinate: no `backup-bot worker` is alive and BACKUPBOT_RUN_CONCURRENCY=0, so nothing "
                      "executes runs: start a worker.")  # fmt: skip
    return f"procrastinate: schema present, {live} worker process(es) alive{local}"


async def _run_lease(settings: Settings) -> str:
    """Which `backup-bot run` holds this database's lease (informational: none is fine before the first start)."""
    try:
        async with db.database(settings.resolved_database_url, migrate=False):
            row = await Lease.get_or_none(name=lease.RUN_LEASE)
    except StorageError:
        raise  # the database itself: reported as it is
    except Exception:
        raise Problem("The lease table cannot be read: run `backup-bot migrate`.") from None
    if row is None:
        return "no `backup-bot run` is running on this database"
    until = f"{row.expires_at:%Y-%m-%d %H:%M:%S %Z}"
    if row.expires_at < datetime.now(UTC):
        return (
            f"the last `backup-bot run` ({lease.describe(row)}) stopped renewing its lease at {until}: it crashed "
            "or lost its database; the next one takes over"
        )
    return f"`backup-bot run` on {lease.describe(row)} holds the lease (renewed until {until})"


async def _slack_token(settings: Settings) -> str:
    settings.require("SLACK_BOT_TOKEN")
    client = build_client(settings)
    try:
        who = await check_bot_token(client)
    finally:
        await client.close()
    return f"accepted for workspace {who.team or who.team_id} (bot user {who.user_id})"


async def _slack_mode(settings: Settings) -> str:
    if not settings.socket_mode:
        settings.require("SLACK_SIGNING_SECRET")
        return f"HTTP mode: Slack must reach http(s)://<this host>:{settings.http_port}/slack/events"
    assert settings.slack_app_token is not None
    client = build_client(settings) if settings.slack_bot_token else None
    if client is None:
        return "Socket Mode (app token set); its check needs SLACK_BOT_TOKEN too"
    try:
        await client.apps_connections_open(app_token=settings.slack_app_token.get_secret_value())
    except SlackApiError as exc:
        raise Problem(
            f"SLACK_APP_TOKEN was refused ({exc.response.get('error')}). Create an app-level token "
            "with the connections:write scope and enable Socket Mode in the app settings."
        ) from None
    except (SlackClientError, OSError) as exc:
        raise Problem(f"Cannot reach Slack to open a Socket Mode connection ({type(exc).__name__}).") from None
    finally:
        await client.close()
    return "Socket Mode: the app token can open a connection"


async def _command_version(binary: str, *args: str) -> str:
    beside_python = Path(sys.executable).parent / binary  # the venv's own borg, even when not activated
    path = str(beside_python) if beside_python.exists() else shutil.which(binary)
    if path is None:
        raise Problem(f"`{binary}` is not on the PATH.")
    process = await asyncio.create_subprocess_exec(
        path, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise Problem(f"`{binary} {' '.join(args)}` failed with exit status {process.returncode}.")
    return out.decode(errors="replace").strip().splitlines()[0]


async def _borg(settings: Settings) -> str:
    try:
        version = await _command_version("borg", "--version")
    except Problem as exc:
        raise Problem(f"{exc} Install the bot with `pip install -e .` (it brings borgbackup 1.4).") from None
    number = version.split()[-1]
    if not number.startswith("1.4"):
        raise Problem(f"{version} is installed; the bot supports borg 1.4.x.")
    return version


async def _ssh(settings: Settings) -> str:
    try:
        return await _command_version("ssh", "-V")
    except Problem as exc:
        raise Problem(f"{exc} Install OpenSSH's client (Debian: `apt-get install openssh-client`).") from None
