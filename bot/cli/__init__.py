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
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from bot.cli import (
    apitoken,
    approvals,
    audit,
    chain,
    credential,
    doctor,
    escrow,
    init,
    keys,
    migrate,
    playground,
    pool,
    restore,
    retention,
    roles,
    run,
    schedule,
    server,
    worker,
)
from bot.config import ConfigError
from storage.errors import StorageError

MODULES = (init, migrate, run, playground, worker, doctor, keys, escrow, apitoken, credential, approvals, roles, audit,
           chain, pool, server, restore, retention, schedule)

console = Console(stderr=True, highlight=False)
DEFAULT_ENV_FILE = ".env"


class UsageError(Exception):
    """Bad arguments, worded for the operator."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backup-bot", description="Backup Wizard: BorgBackup chains set up and run from Slack."
    )
    parser.add_argument(
        "--env-file",
        metavar="PATH",
        help=f"settings file to read (and, for init/rotate-key, write); default {DEFAULT_ENV_FILE}. Given "
        "explicitly, it must exist (except for init, which creates it)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in MODULES:
        module.add_parser(sub)
    return parser


def _resolve_env_file(args: argparse.Namespace) -> None:
    """Default ``--env-file`` to .env (optional: settings may all come from the environment); a path the operator
    gave must exist, unless the command creates it (``set_defaults(env_file_may_be_missing=True)``: init)."""
    if args.env_file is None:
        args.env_file = DEFAULT_ENV_FILE
        return
    path = Path(args.env_file)
    if not path.exists() and not getattr(args, "env_file_may_be_missing", False):
        raise UsageError(
            f"--env-file {path}: no such file. Give the path of the settings file `backup-bot init` wrote, or run "
            f"`backup-bot --env-file {path} init` to create it there."
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _resolve_env_file(args)
        result = args.handler(args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return int(result or 0)
    except (ConfigError, StorageError, UsageError) as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
