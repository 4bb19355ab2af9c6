"""Settings: lenient about what is missing, strict about what is malformed, always one clear message."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ConfigError, load_settings
from storage.crypto import generate_key

VARS = (
    "SLACK_BOT_TOKEN",
    "SLACK_APP_TOKEN",
    "SLACK_SIGNING_SECRET",
    "BACKUPBOT_SECRET_KEYS",
    "DATABASE_URL",
    "BACKUPBOT_DATA_DIR",
    "SLACK_API_URL",
    "BACKUPBOT_HTTP_PORT",
    "BACKUPBOT_LOG_LEVEL",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARS:
        monkeypatch.delenv(name, raising=False)


def test_defaults_need_nothing(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "missing.env")
    assert settings.resolved_database_url == f"sqlite://{Path('data').resolve() / 'backup-bot.sqlite3'}"
    assert not settings.socket_mode


def test_env_file_is_read(tmp_path: Path) -> None:
    key = generate_key()
    env = tmp_path / ".env"
    env.write_text(f"BACKUPBOT_SECRET_KEYS={key}\nSLACK_BOT_TOKEN=xoxb-1\nSLACK_APP_TOKEN=xapp-1\n")
    settings = load_settings(env)
    assert settings.keyring().keys == [key]
    assert settings.socket_mode
    settings.require_slack()  # Socket Mode needs no signing secret


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("SLACK_BOT_TOKEN", "xoxp-user-token", "SLACK_BOT_TOKEN must be a bot token starting with xoxb-"),
        ("SLACK_APP_TOKEN", "xoxb-wrong-kind", "SLACK_APP_TOKEN must be an app-level token starting with xapp-"),
        ("BACKUPBOT_SECRET_KEYS", "not-a-key", "key number 1 of 1 is not a valid Fernet key"),
        ("DATABASE_URL", "oracle://x/y", "DATABASE_URL uses the scheme 'oracle', which is not supported"),
        ("BACKUPBOT_HTTP_PORT", "70000", "BACKUPBOT_HTTP_PORT"),
        ("BACKUPBOT_LOG_LEVEL", "loud", "BACKUPBOT_LOG_LEVEL must be one of"),
    ],
)
def test_malformed_values_are_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "none.env")
    assert expected in str(info.value)


def test_malformed_secret_is_not_echoed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bad = "SUPERSECRETVALUE-but-not-a-fernet-key"
    monkeypatch.setenv("BACKUPBOT_SECRET_KEYS", f"{generate_key()},{bad}")
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "none.env")
    assert "key number 2 of 2" in str(info.value)
    assert bad not in str(info.value)


def test_require_lists_every_missing_variable_with_its_fix(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "none.env")
    with pytest.raises(ConfigError) as info:
        settings.require("SLACK_BOT_TOKEN", "BACKUPBOT_SECRET_KEYS")
    message = str(info.value)
    assert "SLACK_BOT_TOKEN is not set" in message and "OAuth & Permissions" in message
    assert "BACKUPBOT_SECRET_KEYS is not set" in message and "backup-bot init" in message


def test_http_mode_needs_a_signing_secret(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    with pytest.raises(ConfigError, match=r"(?s)SLACK_SIGNING_SECRET is not set.*SLACK_APP_TOKEN"):
        load_settings(tmp_path / "none.env").require_slack()
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "abc")
    load_settings(tmp_path / "none.env").require_slack()


def test_database_password_is_hidden_in_descriptions() -> None:
    from storage.db import describe

    assert describe("postgres://bot:hunter2@db:5432/x") == "postgres://bot:***@db:5432/x"
