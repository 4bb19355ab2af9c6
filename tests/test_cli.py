"""The operator's CLI, run as a real process: init, migrate, rotate-key, doctor and their failure messages."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from dotenv import dotenv_values
from tortoise import Tortoise

from storage import db
from storage.crypto import Keyring, install_keyring
from storage.models import BotIdentity

BIN = Path(sys.executable).parent / "backup-bot"
ENV_VARS = (
    "SLACK_BOT_TOKEN",
    "SLACK_APP_TOKEN",
    "SLACK_SIGNING_SECRET",
    "BACKUPBOT_SECRET_KEYS",
    "DATABASE_URL",
    "BACKUPBOT_DATA_DIR",
    "SLACK_API_URL",
)


def cli(cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    return subprocess.run(
        [str(BIN), *args], cwd=cwd, env={**base, **(env or {})}, capture_output=True, text=True, timeout=timeout
    )


def assert_clean_failure(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit 2, one readable message on stderr, never a traceback."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    flat = " ".join(result.stderr.split())
    for fragment in fragments:
        assert fragment in flat, result.stderr


async def _identity_private_key(url: str, keys: str) -> str:
    install_keyring(Keyring(keys))
    try:
        async with db.database(url, migrate=False):
            return (await BotIdentity.get(name="default")).private_key.reveal()
    finally:
        install_keyring(None)


async def _raw_identity(url: str) -> str:
    async with db.database(url, migrate=False):
        rows = await Tortoise.get_connection("default").execute_query_dict("SELECT private_key FROM bot_identity")
    return rows[0]["private_key"]


def test_init_creates_everything_and_is_idempotent(tmp_path: Path) -> None:
    first = cli(tmp_path, "init")
    assert first.returncode == 0, first.stderr
    env = dotenv_values(tmp_path / ".env")
    assert stat.S_IMODE((tmp_path / ".env").stat().st_mode) == 0o600
    assert (tmp_path / "data" / "backup-bot.sqlite3").exists()
    public = next(line for line in first.stdout.splitlines() if line.startswith("ssh-ed25519 "))
    url = f"sqlite://{tmp_path / 'data' / 'backup-bot.sqlite3'}"
    private = asyncio.run(_identity_private_key(url, env["BACKUPBOT_SECRET_KEYS"]))
    assert private.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert "OPENSSH PRIVATE KEY" not in asyncio.run(_raw_identity(url))

    second = cli(tmp_path, "init")
    assert second.returncode == 0, second.stderr
    assert dotenv_values(tmp_path / ".env")["BACKUPBOT_SECRET_KEYS"] == env["BACKUPBOT_SECRET_KEYS"]
    assert public in second.stdout
    assert "(new)" not in second.stdout


def test_init_keeps_what_the_operator_wrote(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("# mine\nSLACK_BOT_TOKEN=xoxb-keep-me\n")
    assert cli(tmp_path, "init").returncode == 0
    text = (tmp_path / ".env").read_text()
    assert "# mine" in text and "SLACK_BOT_TOKEN=xoxb-keep-me" in text and "BACKUPBOT_SECRET_KEYS=" in text


def test_init_with_unwritable_data_dir_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    result = cli(tmp_path, "init", "--data-dir", str(tmp_path / "afile" / "data"))
    assert_clean_failure(result, "Cannot write to", "BACKUPBOT_DATA_DIR")
    assert not (tmp_path / ".env").exists()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_init_with_unreachable_database_writes_nothing(tmp_path: Path) -> None:
    url = f"postgres://postgres:hunter2@127.0.0.1:{_closed_port()}/nope"
    result = cli(tmp_path, "init", env={"DATABASE_URL": url})
    assert_clean_failure(result, "Cannot use the PostgreSQL database", "DATABASE_URL")
    assert "hunter2" not in result.stderr
    assert not (tmp_path / ".env").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".env")] == []


def test_missing_and_corrupt_keys_are_one_sentence(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SLACK_BOT_TOKEN=xoxb-1\nSLACK_SIGNING_SECRET=s\n")
    assert_clean_failure(cli(tmp_path, "run"), "BACKUPBOT_SECRET_KEYS is not set", "backup-bot init")
    (tmp_path / ".env").write_text("BACKUPBOT_SECRET_KEYS=corrupt\n")
    assert_clean_failure(cli(tmp_path, "migrate"), "BACKUPBOT_SECRET_KEYS", "not a valid Fernet key")


def test_run_without_slack_settings_says_what_to_set(tmp_path: Path) -> None:
    assert cli(tmp_path, "init").returncode == 0
    assert_clean_failure(cli(tmp_path, "run"), "SLACK_BOT_TOKEN is not set", "OAuth & Permissions")


def test_migrate_is_idempotent(tmp_path: Path) -> None:
    for _ in range(2):
        result = cli(tmp_path, "migrate")
        assert result.returncode == 0, result.stderr
        assert "schema is up to date" in result.stdout


def test_rotate_key_reencrypts_and_retires_old_keys(tmp_path: Path) -> None:
    assert cli(tmp_path, "init").returncode == 0
    url = f"sqlite://{tmp_path / 'data' / 'backup-bot.sqlite3'}"
    old_key = dotenv_values(tmp_path / ".env")["BACKUPBOT_SECRET_KEYS"]
    private = asyncio.run(_identity_private_key(url, old_key))
    raw_before = asyncio.run(_raw_identity(url))

    rotated = cli(tmp_path, "rotate-key")
    assert rotated.returncode == 0, rotated.stderr
    keys = dotenv_values(tmp_path / ".env")["BACKUPBOT_SECRET_KEYS"].split(",")
    assert keys[1:] == [old_key] and keys[0] != old_key
    assert asyncio.run(_raw_identity(url)) != raw_before
    assert asyncio.run(_identity_private_key(url, keys[0])) == private  # the new key alone decrypts

    retired = cli(tmp_path, "rotate-key", "--retire-old-keys")
    assert retired.returncode == 0, retired.stderr
    final = dotenv_values(tmp_path / ".env")["BACKUPBOT_SECRET_KEYS"]
    assert "," not in final and final not in (old_key, keys[0])
    assert asyncio.run(_identity_private_key(url, final)) == private


def test_rotate_key_refuses_to_edit_keys_it_does_not_own(tmp_path: Path) -> None:
    assert cli(tmp_path, "init").returncode == 0
    key = dotenv_values(tmp_path / ".env")["BACKUPBOT_SECRET_KEYS"]
    result = cli(tmp_path, "rotate-key", env={"BACKUPBOT_SECRET_KEYS": key})
    assert_clean_failure(result, "set in the process environment", "--reencrypt-only")


def test_doctor_reports_each_problem_and_exits_1(tmp_path: Path) -> None:
    assert cli(tmp_path, "init").returncode == 0
    result = cli(tmp_path, "doctor", env={"COLUMNS": "200"})
    assert result.returncode == 1
    assert "SLACK_BOT_TOKEN is not set" in result.stdout
    assert "borg 1.4" in result.stdout
    assert "schema is current" in result.stdout
    assert "decrypt the bot's SSH identity" in result.stdout
    assert "no `backup-bot run` is running on this database" in result.stdout


def test_doctor_detects_a_wrong_secret_key(tmp_path: Path) -> None:
    assert cli(tmp_path, "init").returncode == 0
    from storage.crypto import generate_key

    result = cli(tmp_path, "doctor", env={"COLUMNS": "200", "BACKUPBOT_SECRET_KEYS": generate_key()})
    assert result.returncode == 1
    assert "cannot be decrypted with any key" in " ".join(result.stdout.split())


@pytest.mark.parametrize("args", [["--help"], ["rotate-key", "--help"]])
def test_help_works(tmp_path: Path, args: list[str]) -> None:
    assert cli(tmp_path, *args).returncode == 0


async def test_approvals_rules_are_shown_changed_validated_and_obeyed(tmp_path: Path) -> None:
    """`backup-bot approvals`: the rules the wizard and the approve buttons read, set without touching the DB."""
    from bot.services.approvals import requires_approval

    assert cli(tmp_path, "init").returncode == 0
    shown = cli(tmp_path, "approvals", "--team", "T0APPR")
    assert shown.returncode == 0 and "need approval: no" in shown.stdout
    assert "approvers: workspace admins" in shown.stdout
    changed = cli(tmp_path, "approvals", "--team", "T0APPR", "--require", "--exempt", "U0LEAD",
                  "--approvers", "U0LEAD,S0OPS,admins", "--channel", "C0APPROVE")  # fmt: skip
    assert changed.returncode == 0, changed.stderr
    assert "yes, from everyone except U0LEAD" in changed.stdout and "U0LEAD, S0OPS, admins" in changed.stdout
    assert_clean_failure(cli(tmp_path, "approvals", "--team", "T0APPR", "--approvers", "bob"),
                         "'bob' is not valid in approvers", "Nothing was changed")  # fmt: skip
    assert_clean_failure(cli(tmp_path, "approvals", "--team", "T0APPR", "--channel", "#ops"), "not a Slack channel id")
    env = dotenv_values(tmp_path / ".env")
    install_keyring(Keyring(env["BACKUPBOT_SECRET_KEYS"]))
    async with db.database(f"sqlite://{tmp_path / 'data' / 'backup-bot.sqlite3'}"):
        assert await requires_approval("T0APPR", "U0INTERN") is True
        assert await requires_approval("T0APPR", "U0LEAD") is False
    cleared = cli(tmp_path, "approvals", "--team", "T0APPR", "--no-require", "--exempt", "", "--required-for", "U0NEW")
    assert "need approval: no" in cleared.stdout and "always need approval: U0NEW" in cleared.stdout
    assert "approvers: U0LEAD, S0OPS, admins" in cleared.stdout  # untouched keys stay
