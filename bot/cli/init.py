"""``backup-bot init``: data directory, ``.env`` with a fresh secret key, schema, and the bot's SSH identity.

Safe to run again: an existing key and identity are kept (a new key would orphan every stored secret).
Order matters so that nothing is left half-done: the data directory and the ``.env`` location are checked
first, the new ``.env`` is prepared beside the real one, the database work is done with it, and only then is
it renamed into place. If the database step fails, the prepared file is removed and nothing has changed.

Writes the file named by ``--env-file`` (default .env; created when missing) with BACKUPBOT_DATA_DIR and a new
BACKUPBOT_SECRET_KEYS; uses DATABASE_URL when set, else SQLite in the data directory. Prints the bot's SSH public
key and the next step.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pydantic import SecretStr
from rich.console import Console

from bot.cli.util import command, ensure_writable_dir, load_for_command
from bot.config import Settings
from bot.envfile import render_env, write_text_atomic
from bot.identity import Identity, ensure_identity
from storage import db
from storage.crypto import generate_key, install_keyring

console = Console(highlight=False)

ENV_TEMPLATE = """\
# Backup Wizard bot settings (see README.md, "Configuration").
# Keep this file private: it holds the key that decrypts every stored secret.

# Socket Mode: set the app-level token (xapp-…). HTTP mode: leave it empty and set the signing secret.
SLACK_BOT_TOKEN=
SLACK_APP_TOKEN=
SLACK_SIGNING_SECRET=
# DATABASE_URL=postgres://user:password@host:5432/backupbot
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = command(sub, "init", __doc__, help="create the data directory, .env, database and the bot's SSH key")
    parser.add_argument("--data-dir", type=Path, metavar="DIR",
                        help="where the bot keeps its data (default: BACKUPBOT_DATA_DIR, else ./data)")  # fmt: skip
    parser.set_defaults(handler=handle, env_file_may_be_missing=True)


async def handle(args: argparse.Namespace) -> int:
    env_path = Path(args.env_file)
    overrides = {"BACKUPBOT_DATA_DIR": str(args.data_dir)} if args.data_dir else {}
    settings = load_for_command(env_path, **overrides)
    ensure_writable_dir(settings.data_dir, "BACKUPBOT_DATA_DIR")
    ensure_writable_dir(env_path.parent if str(env_path.parent) else Path("."), f"the directory of {env_path}")

    updates: dict[str, str] = {"BACKUPBOT_DATA_DIR": str(settings.data_dir)}
    key_is_new = settings.secret_keys is None
    if key_is_new:
        updates["BACKUPBOT_SECRET_KEYS"] = generate_key()
    staged = _stage_env(env_path, updates)
    try:
        identity = await _prepare_database(settings, updates.get("BACKUPBOT_SECRET_KEYS"))
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    os.replace(staged, env_path)

    _report(settings, env_path, key_is_new, identity)
    return 0


def _report(settings: Settings, env_path: Path, key_is_new: bool, identity: Identity) -> None:
    console.print(f"Data directory: {settings.data_dir.resolve()}")
    console.print(f"Settings file:  {env_path.resolve()}" + (" (new secret key written)" if key_is_new else ""))
    console.print(f"Database:       {db.describe(settings.resolved_database_url)}")
    console.print("\nThe bot's SSH public key" + (" (new):" if identity.created else ":"))
    console.print(identity.public_key, soft_wrap=True)
    console.print(
        "\nInstall it on each server and storage pool host in ~/.ssh/authorized_keys of the backup user.\n"
        f"Next: fill in the Slack tokens in {env_path}, then run `backup-bot doctor` and `backup-bot run`."
    )


def _stage_env(env_path: Path, updates: dict[str, str]) -> Path:
    """Write the future ``.env`` next to the real one; the caller renames it into place."""
    existing = env_path.read_text(encoding="utf-8") if env_path.exists() else ENV_TEMPLATE
    staged = env_path.with_name(f".{env_path.name}.init")
    write_text_atomic(staged, render_env(existing, updates))
    return staged


async def _prepare_database(settings: Settings, new_key: str | None) -> Identity:
    """Migrate and make sure the identity exists, encrypting with the new key when one was just made."""
    if new_key is not None:
        settings = settings.model_copy(update={"secret_keys": SecretStr(new_key)})
    install_keyring(settings.keyring())
    url = settings.resolved_database_url
    with console.status(f"Preparing the database at {db.describe(url)} …"):
        async with db.database(url):
            with console.status("Generating the bot's SSH identity …"):
                return await ensure_identity()
