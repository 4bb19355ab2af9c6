"""Configuration from the environment and ``.env`` (pydantic-settings).

Loading is lenient about what is *missing* (``init`` needs nothing, ``migrate`` needs no Slack token) and
strict about what is *malformed*. Each command then calls :meth:`Settings.require` for what it needs. Every
problem becomes a :class:`ConfigError` whose message names the variable and says how to fix it; the CLI
prints that message alone, never a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from storage.crypto import Keyring, parse_keys
from storage.db import check_url
from storage.errors import StorageError


class ConfigError(Exception):
    """A configuration problem, worded for the operator."""


_HINTS: dict[str, str] = {
    "SLACK_BOT_TOKEN": "Copy the Bot User OAuth Token (xoxb-…) from your Slack app's OAuth & Permissions page.",
    "SLACK_APP_TOKEN": "Create an app-level token with the connections:write scope (xapp-…) under Basic "
    "Information → App-Level Tokens, or leave it unset to run in HTTP mode.",
    "SLACK_SIGNING_SECRET": "Copy the Signing Secret from your Slack app's Basic Information page.",
    "BACKUPBOT_SECRET_KEYS": "Run `backup-bot init` to create one.",
    "DATABASE_URL": "Leave it unset for SQLite in the data directory, or use postgres://… or mysql://….",
}

ENV_FILE = ".env"


class Settings(BaseSettings):
    """Every setting, with its environment variable name."""

    model_config = SettingsConfigDict(
        env_file=ENV_FILE, env_file_encoding="utf-8", extra="ignore", case_sensitive=True, populate_by_name=True
    )

    data_dir: Path = Field(default=Path("data"), alias="BACKUPBOT_DATA_DIR")
    database_url: str | None = Field(default=None, alias="DATABASE_URL")
    secret_keys: SecretStr | None = Field(default=None, alias="BACKUPBOT_SECRET_KEYS")
    slack_bot_token: SecretStr | None = Field(default=None, alias="SLACK_BOT_TOKEN")
    slack_app_token: SecretStr | None = Field(default=None, alias="SLACK_APP_TOKEN")
    slack_signing_secret: SecretStr | None = Field(default=None, alias="SLACK_SIGNING_SECRET")
    slack_api_url: str | None = Field(default=None, alias="SLACK_API_URL")
    # Unset: 0.0.0.0 in HTTP mode (Slack must reach /slack/events), 127.0.0.1 in Socket Mode (nothing outside needs
    # to reach the API and /healthz unless the operator says so).
    http_host: str | None = Field(default=None, alias="BACKUPBOT_HTTP_HOST")
    http_port: int = Field(default=3000, ge=1, le=65535, alias="BACKUPBOT_HTTP_PORT")
    # The HTTP listener's limits (bot.slack.listener): connections at once, per client address, seconds to send a
    # request head, seconds an idle kept-alive connection stays, file descriptors kept free for the bot itself.
    http_max_connections: int = Field(default=512, ge=8, le=100_000, alias="BACKUPBOT_HTTP_MAX_CONNECTIONS")
    http_max_per_client: int = Field(default=64, ge=1, le=100_000, alias="BACKUPBOT_HTTP_MAX_PER_CLIENT")
    http_header_timeout: float = Field(default=10.0, gt=0, le=300, alias="BACKUPBOT_HTTP_HEADER_TIMEOUT")
    http_keepalive_timeout: float = Field(default=15.0, gt=0, le=3600, alias="BACKUPBOT_HTTP_KEEPALIVE_TIMEOUT")
    fd_reserve: int = Field(default=256, ge=16, le=100_000, alias="BACKUPBOT_FD_RESERVE")
    # The SSH pool's limits (bot.transport.ssh.SSHPool): connections overall, per workspace (None: three quarters of
    # the cap), per workspace and server address whatever the login names, seconds an unused one stays open, seconds
    # to wait for a slot, bytes of a command's output kept (probes: their own, smaller cap).
    ssh_max_connections: int = Field(default=128, ge=4, le=10_000, alias="BACKUPBOT_SSH_MAX_CONNECTIONS")
    ssh_workspace_share: int | None = Field(default=None, ge=1, le=10_000, alias="BACKUPBOT_SSH_WORKSPACE_SHARE")
    ssh_server_share: int = Field(default=4, ge=1, le=1_000, alias="BACKUPBOT_SSH_SERVER_SHARE")
    ssh_idle_seconds: float = Field(default=120.0, gt=0, le=86_400, alias="BACKUPBOT_SSH_IDLE_SECONDS")
    ssh_slot_wait_seconds: float = Field(default=30.0, gt=0, le=3_600, alias="BACKUPBOT_SSH_SLOT_WAIT_SECONDS")
    ssh_output_limit: int = Field(default=32 * 2**20, ge=2**20, le=2**34, alias="BACKUPBOT_SSH_OUTPUT_LIMIT")
    probe_output_limit: int = Field(default=4 * 2**20, ge=2**16, le=2**30, alias="BACKUPBOT_PROBE_OUTPUT_LIMIT")
    log_level: str = Field(default="INFO", alias="BACKUPBOT_LOG_LEVEL")
    wizard_ttl_hours: int = Field(default=48, ge=1, le=24 * 90, alias="BACKUPBOT_WIZARD_TTL_HOURS")
    # The run queue: "embedded" (in the bot process) or "procrastinate" (worker processes on several machines).
    queue_backend: str = Field(default="embedded", alias="BACKUPBOT_QUEUE")
    run_concurrency: int = Field(default=2, ge=0, le=64, alias="BACKUPBOT_RUN_CONCURRENCY")
    worker_stalled_seconds: int = Field(default=60, ge=15, le=3600, alias="BACKUPBOT_WORKER_STALLED_SECONDS")
    # How long `backup-bot run`'s lease on its duties lasts without renewal (storage.lease): a second `run` on the
    # same database waits; after a crash elsewhere it takes over once this has passed.
    run_lease_seconds: int = Field(default=60, ge=3, le=3600, alias="BACKUPBOT_RUN_LEASE_SECONDS")

    @field_validator("http_host", mode="before")
    @classmethod
    def _host(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator("secret_keys", "slack_bot_token", "slack_app_token", "slack_signing_secret", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("slack_bot_token")
    @classmethod
    def _bot_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("xoxb-"):
            raise ValueError("must be a bot token starting with xoxb-")
        return value

    @field_validator("slack_app_token")
    @classmethod
    def _app_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("xapp-"):
            raise ValueError("must be an app-level token starting with xapp-")
        return value

    @field_validator("secret_keys")
    @classmethod
    def _keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                parse_keys(value.get_secret_value())
            except StorageError as exc:
                raise ValueError(str(exc).removeprefix("BACKUPBOT_SECRET_KEYS: ")) from None
        return value

    @field_validator("database_url")
    @classmethod
    def _db_url(cls, value: str | None) -> str | None:
        if value:
            try:
                check_url(value)
            except StorageError as exc:
                raise ValueError(str(exc).removeprefix("DATABASE_URL ")) from None
        return value or None

    @field_validator("slack_api_url", mode="before")
    @classmethod
    def _api_url(cls, value: Any) -> Any:
        """An http(s) URL with a host, ending in ``/`` (slack_sdk appends the method name to it), or None."""
        if not isinstance(value, str) or not value.strip():
            return None if isinstance(value, str) else value
        text = value.strip()
        parts = urlsplit(text)
        try:
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
        except ValueError:
            parts = parts._replace(netloc="")
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            shown = "" if parts.password else f"{text!r} "
            raise ValueError(
                f"{shown}is not the http(s) URL of a Slack Web API, e.g. https://slack.com/api/ or the emulator's "
                "http://127.0.0.1:PORT/api/; leave it unset to talk to Slack itself"
            )
        return text if text.endswith("/") else text + "/"

    @field_validator("queue_backend")
    @classmethod
    def _queue(cls, value: str, info: ValidationInfo) -> str:
        value = value.strip().lower()
        if value not in ("embedded", "procrastinate"):
            raise ValueError("must be embedded (runs execute in the bot process) or procrastinate (worker processes)")
        url = info.data.get("database_url") or ""
        if value == "procrastinate" and urlsplit(url).scheme != "postgres":
            where = f"DATABASE_URL is {urlsplit(url).scheme}://…" if url else "DATABASE_URL is unset (SQLite)"
            raise ValueError(f"is procrastinate, which needs PostgreSQL, but {where}: set DATABASE_URL="
                             "postgres://user:pass@host:5432/db, or BACKUPBOT_QUEUE=embedded")  # fmt: skip
        return value

    @field_validator("run_concurrency")
    @classmethod
    def _run_concurrency(cls, value: int, info: ValidationInfo) -> int:
        if value == 0 and info.data.get("queue_backend") == "embedded":  # absent: that value was already refused
            raise ValueError("is 0, so the bot would execute no runs, and with the embedded queue nothing else "
                             "does: set it to 1 or more, or use BACKUPBOT_QUEUE=procrastinate with `backup-bot "
                             "worker` processes")  # fmt: skip
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return value.upper()

    # --- derived values -------------------------------------------------------------------------------

    @property
    def resolved_database_url(self) -> str:
        """DATABASE_URL, or a SQLite file in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite://{(self.data_dir / 'backup-bot.sqlite3').resolve()}"

    @property
    def socket_mode(self) -> bool:
        return self.slack_app_token is not None

    @property
    def listen_host(self) -> str:
        """BACKUPBOT_HTTP_HOST, else all addresses in HTTP mode (Slack posts to it) and loopback in Socket Mode."""
        if self.http_host:
            return self.http_host
        return "127.0.0.1" if self.socket_mode else "0.0.0.0"  # noqa: S104 - HTTP mode must be reachable by Slack

    def keyring(self) -> Keyring:
        self.require("BACKUPBOT_SECRET_KEYS")
        assert self.secret_keys is not None
        return Keyring(self.secret_keys.get_secret_value())

    def ssh_pool_options(self) -> dict[str, Any]:
        """Given the settings, return the SSHPool keyword arguments of its limits."""
        return {"max_connections": self.ssh_max_connections, "workspace_share": self.ssh_workspace_share,
                "server_share": self.ssh_server_share, "idle_timeout": self.ssh_idle_seconds,
                "slot_wait": self.ssh_slot_wait_seconds, "output_limit": self.ssh_output_limit,
                "probe_output_limit": self.probe_output_limit}  # fmt: skip

    def require(self, *names: str) -> None:
        """Raise one ConfigError naming every missing variable among ``names``, each with its fix."""
        fields = {f.alias: name for name, f in type(self).model_fields.items()}
        missing = [n for n in names if getattr(self, fields[n]) is None]
        if missing:
            lines = [f"{n} is not set. {_HINTS.get(n, '')}".strip() for n in missing]
            raise ConfigError("\n".join(lines) + f"\nSet it in the environment or in {ENV_FILE}.")

    def require_slack(self) -> None:
        """Bot token always; then an app token (Socket Mode) or a signing secret (HTTP mode)."""
        self.require("SLACK_BOT_TOKEN")
        if not self.socket_mode:
            try:
                self.require("SLACK_SIGNING_SECRET")
            except ConfigError as exc:
                raise ConfigError(
                    f"{exc}\nOr set SLACK_APP_TOKEN (xapp-…) to use Socket Mode, which needs no signing secret."
                ) from None


def load_settings(env_file: str | os.PathLike[str] | None = ENV_FILE, **overrides: Any) -> Settings:
    """Settings from the environment (and ``env_file``), or a ConfigError listing every malformed value."""
    try:
        return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else "configuration"
            message = str(error["msg"]).removeprefix("Value error, ")
            hint = _HINTS.get(name, "")
            joiner = ": " if message[:1].isupper() else " "  # pydantic's own messages are capitalised
            problems.append(f"{name}{joiner}{message.rstrip('.')}. {hint}".strip())
        raise ConfigError("\n".join(problems)) from None
