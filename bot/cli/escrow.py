"""``backup-bot escrow export|import|check``: the recovery bundle, for when the bot's host is lost.

Every repository's passphrase and key export, every push key and the bot's SSH identity live only in the bot's
database, encrypted with the keys in its settings file. The bundle carries them (with servers, pools, repositories,
chains, sources, templates, roles, workspace settings, this install's settings keys — so that a backup of the bot's
own database can be read too — and, unless ``--without-logins``, stored database logins), sealed under a recovery
passphrase you choose (scrypt, AES-256-GCM), to keep offline:

* ``export --out FILE [--force] [--without-logins] [--passphrase-stdin]`` — writes FILE owner-only (0600), never
  over an existing file without ``--force``, and never any plaintext to disk;
* ``import FILE [--paused] [--passphrase-stdin]`` — on a fresh install (after ``backup-bot init`` with a new data
  directory and database), writes the whole inventory in one transaction under this install's keys and prints what
  came back; the chains resume once the bot runs (``--paused`` imports them paused, for a rehearsal while the old
  bot still runs). An install that already has servers, pools or chains is refused;
* ``check FILE [--passphrase-stdin]`` — opens the bundle and lists what it holds, writing nothing (to check the
  offline copy and its passphrase now and then).

The passphrase is asked without echo (twice for export), or read as one line of standard input with
``--passphrase-stdin``; it is never a command-line argument. It needs at least 15 characters. A wrong passphrase, a
damaged file or a refused target is one sentence and exit status 2, with nothing written.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from pydantic import SecretStr
from rich.console import Console

from bot.access import Refused
from bot.cli.util import command, load_for_command
from bot.services import escrow
from storage import db
from storage.crypto import install_keyring

console = Console(highlight=False)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``backup-bot escrow`` and its actions."""
    parser = command(sub, "escrow", __doc__, help="write or import the encrypted recovery bundle (passphrases, key "
                     "exports, SSH identity, inventory)")  # fmt: skip
    actions = parser.add_subparsers(dest="escrow_command", required=True, metavar="ACTION")
    export = actions.add_parser("export", help="seal the whole inventory into a file under a recovery passphrase")
    export.add_argument("--out", required=True, type=Path, metavar="FILE", help="the bundle to write (mode 0600)")
    export.add_argument("--force", action="store_true", help="replace FILE if it exists")
    export.add_argument("--without-logins", action="store_true", help="leave stored database logins out (their "
                        "passwords are then typed again after an import)")  # fmt: skip
    importing = actions.add_parser("import", help="bring a bundle's inventory back into a fresh install")
    importing.add_argument("file", type=Path, metavar="FILE", help="the bundle")
    importing.add_argument("--paused", action="store_true", help="import active chains paused (a rehearsal while "
                           "the old bot still runs: two bots would run every chain twice)")  # fmt: skip
    check = actions.add_parser("check", help="open a bundle and list what it holds; nothing is written")
    check.add_argument("file", type=Path, metavar="FILE", help="the bundle")
    for action in (export, importing, check):
        action.add_argument("--passphrase-stdin", action="store_true", help="read the recovery passphrase as one "
                            "line of standard input instead of asking for it without echo")  # fmt: skip
        action.add_argument("--passphrase", help=argparse.SUPPRESS)  # refused with a sentence, never echoed
    parser.set_defaults(handler=handle)


def read_passphrase(from_stdin: bool, *, confirm: bool) -> SecretStr:
    """The recovery passphrase: one line of standard input, or typed without echo (twice when ``confirm``)."""
    from bot.cli import UsageError

    if from_stdin:
        line = sys.stdin.readline(escrow.MAX_PASSPHRASE + 2)
        return SecretStr(line.rstrip("\r\n"))
    if not sys.stdin.isatty():
        raise UsageError("No terminal to ask for the recovery passphrase without echo: give --passphrase-stdin and "
                         "send it on standard input (for example from a file with `< file`).")  # fmt: skip
    first = getpass.getpass("Recovery passphrase (not shown): ")
    if confirm:
        if len(first.strip()) < escrow.MIN_PASSPHRASE:
            raise UsageError(escrow.PASSPHRASE_RULE)
        if getpass.getpass("The same passphrase again: ") != first:
            raise UsageError("The two passphrases differ; nothing was written. Run the command again.")
    return SecretStr(first)


def _print(found: escrow.Contents, verb: str) -> None:
    made = found.made_at.strftime("%Y-%m-%d %H:%M UTC")
    console.print(f"{verb} the inventory as of {made}" + ("" if found.with_logins else " (without stored database "
                  "logins)") + ":", markup=False)  # fmt: skip
    for part in found.workspaces:
        console.print(f"  workspace {part.team_id}: {len(part.servers)} server(s) {_list(part.servers)}, "
                      f"{len(part.pools)} pool(s) {_list(part.pools)}, {len(part.repositories)} repositories "
                      f"{_list(part.repositories)} with their passphrases and key exports, {len(part.chains)} "
                      f"chain(s) {_list(part.chains)}, {part.logins} stored login(s), {part.templates} template(s), "
                      f"{part.roles} role grant(s)", markup=False, soft_wrap=True)  # fmt: skip
    if not found.workspaces:
        console.print("  no workspace (no server, pool or chain yet)", markup=False)
    if found.identity:
        console.print(f"  the bot's SSH identity: {found.identity}", markup=False, soft_wrap=True)


def _list(names: list[str], limit: int = 8) -> str:
    if not names:
        return ""
    shown = ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
    return f"({shown})"


async def _export(args: argparse.Namespace, keys: list[str]) -> int:
    actor = escrow.host_operator()
    escrow.check_target(args.out, force=args.force)  # before the passphrase is typed
    passphrase = read_passphrase(args.passphrase_stdin, confirm=True)
    found = await escrow.export_bundle(actor, args.out, passphrase, secret_keys=keys,
                                       with_logins=not args.without_logins, force=args.force)  # fmt: skip
    _print(found, f"Wrote {args.out} (mode 0600) with")
    console.print("Keep it offline, away from this host, and the passphrase apart from it: with both, anyone can "
                  "read every backup. Check a copy now and then with `backup-bot escrow check FILE`; export again "
                  "after adding repositories.", markup=False)  # fmt: skip
    return 0


async def _import(args: argparse.Namespace) -> int:
    actor = escrow.host_operator()
    await escrow.check_fresh(actor)  # before the passphrase is typed
    data = escrow.read_bundle(args.file)
    found = await escrow.import_bundle(actor, data, read_passphrase(args.passphrase_stdin, confirm=False),
                                       pause_chains=args.paused, source=str(args.file))  # fmt: skip
    _print(found, "Brought back")
    if found.paused:
        console.print(f"{found.paused} chain(s) were imported paused; resume them from Slack or the App Home.")
    console.print("Secrets are now encrypted under this install's keys. Next: `backup-bot doctor`, then `backup-bot "
                  "run`; the chains run on their schedules from here. Stop the old bot if it still runs anywhere.",
                  markup=False)  # fmt: skip
    return 0


async def _check(args: argparse.Namespace) -> int:
    actor = escrow.host_operator()
    data = escrow.read_bundle(args.file)
    inventory = escrow.open_bundle(actor, data, read_passphrase(args.passphrase_stdin, confirm=False))
    _print(escrow.contents(inventory), f"{args.file} opens and holds")
    return 0


async def handle(args: argparse.Namespace) -> int:
    """``backup-bot escrow …``: refusals become one sentence (exit 2), nothing written."""
    from bot.cli import UsageError

    if getattr(args, "passphrase", None) is not None:
        raise UsageError("A passphrase is never given on the command line (every user of this host can read command "
                         "lines, and shells keep them): leave --passphrase out and type it at the prompt, or use "
                         "--passphrase-stdin.")  # fmt: skip
    settings = load_for_command(Path(args.env_file))
    try:
        if args.escrow_command == "check":
            return await _check(args)
        keyring = settings.keyring()
        install_keyring(keyring)
        async with db.database(settings.resolved_database_url):
            if args.escrow_command == "export":
                return await _export(args, keyring.keys)
            return await _import(args)
    except Refused as exc:
        said = exc.sentence if "nothing" in exc.sentence.lower() else f"{exc.sentence} Nothing was written."
        raise UsageError(said) from None
