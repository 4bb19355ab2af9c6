"""The log set-up of the long-running commands (``run``, ``worker``): one line per event, no secret, no chatter.

* Third-party libraries (asyncssh, aiohttp, slack_sdk/slack_bolt, Tortoise, the database drivers, procrastinate)
  log at WARNING when the bot logs at INFO: their INFO lines ("Opening SSH connection…", "Tortoise-ORM shutdown")
  were most of a wizard's log and said nothing an operator acts on. At DEBUG everything is shown.
* Below DEBUG their tracebacks are left out (the exception's one-line message stays): slack_sdk, for one, logs a
  full traceback at every retry of a connection. The bot's own ``log.exception`` keeps its traceback.
* Every record, traceback included, goes through :mod:`storage.redact` with the secrets the process knows from its
  settings (Slack tokens, signing secret, secret keys, the database password), so none of them reaches a log even
  if a library prints it; and through :func:`storage.redact.scrub_values`, which blanks every value of a
  secret-carrying key (a modal's typed ``value`` s, ``password``, ``passphrase``, ``token`` …) in whatever encoding
  a payload is logged — slack_sdk logs each Socket Mode message and each Web API response at DEBUG, with what people
  typed into the wizard (one-time SSH passwords, database passwords, passphrases).
* Warnings and errors are rate-limited (:class:`RateLimit`): the same message from the same logger at most
  :data:`BURST` times a minute, then one line saying how many were left out — a flood of failures (every accept of
  an exhausted listener, every retry of a dead connection) cannot fill the disk.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TextIO
from urllib.parse import unquote, urlsplit

from bot.config import Settings
from storage.redact import masker, scrub_values

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
OURS = ("bot", "storage", "__main__")
THIRD_PARTY = (
    "asyncssh",
    "aiohttp",
    "slack_sdk",
    "slack_bolt",
    "tortoise",
    "aiosqlite",
    "asyncpg",
    "asyncmy",
    "psycopg",
    "procrastinate",
    "asyncio",
    "transitions",
)


def settings_secrets(settings: Settings) -> list[str]:
    """Given the settings, every secret value they hold (each key of BACKUPBOT_SECRET_KEYS on its own)."""
    values = [settings.slack_bot_token, settings.slack_app_token, settings.slack_signing_secret]
    secrets = [value.get_secret_value() for value in values if value is not None]
    if settings.secret_keys is not None:
        keys = settings.secret_keys.get_secret_value()
        secrets += [keys, *(key.strip() for key in keys.split(","))]
    password = urlsplit(settings.database_url or "").password
    if password:
        secrets += [password, unquote(password)]
    return secrets


class MaskingFormatter(logging.Formatter):
    """The standard formatter, then every known secret masked; third-party tracebacks only at DEBUG."""

    def __init__(self, secrets: Iterable[str], *, third_party_tracebacks: bool) -> None:
        super().__init__(FORMAT)
        self._pattern = masker(secrets)
        self._tracebacks = third_party_tracebacks

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info and not self._tracebacks and not _ours(record.name):
            record = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None, "stack_info": None})
        text = scrub_values(super().format(record))
        return self._pattern.sub("***", text) if self._pattern is not None else text


BURST = 10  # lines of one kind per WINDOW
WINDOW = 60.0


class RateLimit(logging.Filter):
    """Warnings and errors: at most :data:`BURST` records of one kind (logger, level, message template) per
    :data:`WINDOW` seconds; the first one after a window with drops says how many were dropped."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: dict[tuple[str, int, str], list[float | int]] = {}  # kind → [window start, count, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        kind = (record.name, record.levelno, str(record.msg)[:200])
        now = time.monotonic()
        entry = self._seen.get(kind)
        if entry is None or now - entry[0] >= WINDOW:
            dropped = int(entry[2]) if entry is not None else 0
            if len(self._seen) > 10_000:
                self._seen.clear()
            self._seen[kind] = [now, 1, 0]
            if dropped:
                record.msg, record.args = f"{record.getMessage()} ({dropped} more like this left out)", None
            return True
        if entry[1] < BURST:
            entry[1] += 1
            return True
        entry[2] += 1
        return False


def _ours(name: str) -> bool:
    return any(name == top or name.startswith(top + ".") for top in OURS)


def _quiet_third_party(record: logging.LogRecord) -> bool:
    """A handler filter: third-party records below WARNING are dropped, even from a library logger whose level was
    set explicitly (slack_bolt copies the root logger's level onto its own loggers when an app is built)."""
    return record.levelno >= logging.WARNING or _ours(record.name)


def setup_logging(level: str, secrets: Iterable[str] = (), stream: TextIO | None = None) -> None:
    """Given the bot's log level and its secrets, configure the root logger (``stream``, default stderr) as this
    module describes."""
    debug = logging.getLevelName(level) == logging.DEBUG
    handler = logging.StreamHandler(stream)
    handler.setFormatter(MaskingFormatter(secrets, third_party_tracebacks=debug))
    handler.addFilter(RateLimit())
    if not debug:
        handler.addFilter(_quiet_third_party)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(logging.NOTSET if debug else max(logging.WARNING, root.level))
