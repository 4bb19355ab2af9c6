"""``backup-bot``: the operator's command line.

Each subcommand lives in its own module and exposes ``add_parser(subparsers)``; ``main`` turns every known
error into one plain sentence on stderr and exit status 2 (1 is for "ran, and found problems", as in
``doctor``; 3 for a ``run`` that lost its lease to another), so an operator never has to read a traceback to know
what to fix.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

from rich.console import Console

from bot.cli import (
    apitoken,
    approvals,
    audit,
    doctor,
    init,
    keys,
    migrate,
    playground,
    pool,
    retention,
    roles,
    run,
    schedule,
    server,
    worker,
)
from bot.config import ConfigError
from storage.errors import StorageError

MODULES = (init, migrate, run, playground, worker, doctor, keys, apitoken, approvals, roles, audit, pool, server,
           retention, schedule)

console = Console(stderr=True, highlight=False)


class UsageError(Exception):
    """Bad arguments, worded for the operator."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backup-bot", description="Backup Wizard: BorgBackup chains set up and run from Slack."
    )
    parser.add_argument(
        "--env-file", default=".env", help="settings file to read (and, for init/rotate-key, write); default .env"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in MODULES:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.handler(args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return int(result or 0)
    except (ConfigError, StorageError, UsageError) as exc:
        console.print(f"[bold red]error:[/] {exc}", markup=True, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
