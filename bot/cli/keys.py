"""``backup-bot rotate-key``: re-encrypt every stored secret under a new key.

Order is chosen so that no crash can lose a secret: the new key is first *added* to the settings file (in
front of the old ones, which still decrypt), then every secret is rewritten under it in one transaction, and
only after that succeeds are the old keys retired (with ``--retire-old-keys``). When the keys come from the
process environment rather than the file, this command cannot change them; it then re-encrypts under the
first configured key (``--reencrypt-only``) and says how to proceed.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pydantic import SecretStr
from rich.console import Console

from bot.cli.util import command, load_for_command
from bot.config import ConfigError, Settings
from bot.envfile import update_env
from storage import db
from storage.crypto import generate_key, install_keyring
from storage.rotate import rotate_all

console = Console(highlight=False)
VAR = "BACKUPBOT_SECRET_KEYS"


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = command(sub, "rotate-key", __doc__, help="re-encrypt all stored secrets under a new key")
    parser.add_argument(
        "--retire-old-keys",
        action="store_true",
        help="after a successful rotation, keep only the new key in the settings file",
    )
    parser.add_argument(
        "--reencrypt-only",
        action="store_true",
        help="do not create a key: re-encrypt under the first key already configured",
    )
    parser.set_defaults(handler=handle)


async def handle(args: argparse.Namespace) -> int:
    env_path = Path(args.env_file)
    settings = load_for_command(env_path)
    old_keys = settings.keyring().keys
    if args.reencrypt_only:
        keys = old_keys
    else:
        if VAR in os.environ:
            raise ConfigError(
                f"{VAR} is set in the process environment, so rotate-key cannot change it. Put a new key first "
                f"in {VAR} (keep the old ones after it, comma-separated) and run "
                "`backup-bot rotate-key --reencrypt-only`; afterwards the old keys can be removed."
            )
        keys = [generate_key(), *old_keys]
        update_env(env_path, {VAR: ",".join(keys)})
        console.print(f"Added a new key in front of {len(old_keys)} existing one(s) in {env_path}.")

    report = await _reencrypt(settings, keys)
    console.print(f"Re-encrypted {report.secrets} secret(s) in {report.rows} row(s) under the first key.")

    if args.retire_old_keys and len(keys) > 1:
        if VAR in os.environ:
            console.print(f"{VAR} comes from the environment: remove the old keys there yourself.")
        else:
            update_env(env_path, {VAR: keys[0]})
            console.print(f"Retired {len(keys) - 1} old key(s); {env_path} now holds only the new key.")
    elif len(keys) > 1:
        console.print(
            "The old key(s) are still listed, so older backups of the settings file keep working; "
            "run again with --retire-old-keys to drop them."
        )
    return 0


async def _reencrypt(settings: Settings, keys: list[str]):
    settings = settings.model_copy(update={"secret_keys": SecretStr(",".join(keys))})
    keyring = settings.keyring()
    install_keyring(keyring)
    async with db.database(settings.resolved_database_url):
        with console.status("Re-encrypting secrets …"):
            return await rotate_all(keyring)
