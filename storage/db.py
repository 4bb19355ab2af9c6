"""Connecting to the database and applying migrations.

The schema is owned by Tortoise's built-in migrations (``storage/migrations``); ``migrate()`` is idempotent
and runs at every start, so an upgrade of the bot upgrades its schema. Failures are turned into one sentence
that names DATABASE_URL and says what to check, never a driver traceback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote, urlsplit

from tortoise import Tortoise
from tortoise.backends.base.executor import EXECUTOR_CACHE
from tortoise.migrations.api import migrate as tortoise_migrate

from storage.errors import DatabaseUnavailable
from storage.redact import mask

APP_LABEL = "models"
MODELS_MODULE = "storage.models"
MIGRATIONS_MODULE = "storage.migrations"
SUPPORTED_SCHEMES = {"sqlite": "SQLite", "postgres": "PostgreSQL", "mysql": "MySQL/MariaDB"}

log = logging.getLogger(__name__)


def tortoise_config(database_url: str) -> dict[str, Any]:
    """The Tortoise config dict for ``database_url`` (also used by the `tortoise` CLI via pyproject)."""
    return {
        "connections": {"default": database_url},
        "apps": {
            APP_LABEL: {
                "models": [MODELS_MODULE],
                "default_connection": "default",
                "migrations": MIGRATIONS_MODULE,
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


def check_url(database_url: str) -> str:
    """Validate the URL's scheme early, with a message that lists what is supported."""
    scheme = urlsplit(database_url).scheme
    if scheme not in SUPPORTED_SCHEMES:
        examples = "sqlite:///var/lib/backup-bot/bot.sqlite3, postgres://user:pass@host:5432/db, mysql://user:pass@host:3306/db"
        raise DatabaseUnavailable(
            f"DATABASE_URL uses the scheme {scheme or '(none)'!r}, which is not supported. Use one of: {examples}."
        )
    return scheme


def describe(database_url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(database_url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return database_url


def _unavailable(database_url: str, exc: BaseException) -> DatabaseUnavailable:
    kind = SUPPORTED_SCHEMES.get(urlsplit(database_url).scheme, "database")
    reason = type(exc).__name__
    detail = str(exc).splitlines()[0] if str(exc) else ""
    # Driver messages may echo the DSN; mask the password (as written and URL-decoded) if it is there.
    password = urlsplit(database_url).password
    if password:
        detail = mask(detail, [password, unquote(password)])
    return DatabaseUnavailable(
        f"Cannot use the {kind} database at {describe(database_url)} ({reason}: {detail}). Check that the "
        "server is running and reachable, that the database exists and the user may use it, then fix "
        "DATABASE_URL in .env and try again."
    )


def sqlite_file(database_url: str) -> str | None:
    """The file a ``sqlite://`` URL names (relative or absolute), None for other engines and ``:memory:``."""
    parts = urlsplit(database_url)
    path = parts.netloc + parts.path
    if parts.scheme != "sqlite" or not path or path == ":memory:":
        return None
    return path


def check_sqlite_location(database_url: str) -> None:
    """Given a ``sqlite://`` URL, prove its directory exists and takes new files, or say which path and what to do.

    Why before connecting: Tortoise keeps a connection lock it never releases when SQLite cannot open the file, so
    the next query (the migrations') would wait on it forever — a silent hang instead of this sentence. The
    directory itself must be writable, not only the file: SQLite creates its journal (``-wal``, ``-shm``) next to it.
    """
    path = sqlite_file(database_url)
    if path is None:
        return
    directory = os.path.dirname(path) or "."
    fix = "or set BACKUPBOT_DATA_DIR (or DATABASE_URL) to a directory this user can write"
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise DatabaseUnavailable(f"Cannot use the SQLite database {path}: {directory} is a file, not a directory. "
                                  f"Move that file away {fix}.")  # fmt: skip
    if not os.path.isdir(directory):
        raise DatabaseUnavailable(f"Cannot use the SQLite database {path}: the directory {directory} does not exist. "
                                  f"Create it (mkdir -p {directory}) {fix}.")  # fmt: skip
    if os.path.isdir(path):
        raise DatabaseUnavailable(f"Cannot use the SQLite database {path}: it is a directory. Remove it {fix}.")
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-"):
            pass
        if os.path.exists(path):
            os.close(os.open(path, os.O_RDWR))
    except OSError as exc:
        who = f" (uid {os.geteuid()})" if hasattr(os, "geteuid") else ""
        raise DatabaseUnavailable(
            f"Cannot write the SQLite database {path}: {exc.strerror or type(exc).__name__} in {directory}"
            f"{who}. SQLite needs to create files there: fix the permissions (chmod u+w; chattr -i if it is "
            f"immutable) {fix}."
        ) from None


async def connect(database_url: str, *, migrate: bool = True) -> None:
    """Open the connection (and bring the schema up to date unless ``migrate=False``)."""
    check_url(database_url)
    check_sqlite_location(database_url)
    # Tortoise caches INSERT/DELETE SQL per connection *name*; a process that reconnects "default" to
    # another engine (tests, the doctor) would reuse the previous dialect's SQL without this.
    EXECUTOR_CACHE.clear()
    try:
        if migrate:
            await run_migrations(database_url)
        await Tortoise.init(config=tortoise_config(database_url))
        await Tortoise.get_connection("default").execute_query("SELECT 1")
        _restrict_sqlite_file(database_url)
    except DatabaseUnavailable:
        raise
    except Exception as exc:
        with contextlib.suppress(Exception):
            await Tortoise.close_connections()
        raise _unavailable(database_url, exc) from exc


def _restrict_sqlite_file(database_url: str) -> None:
    """The SQLite file holds (encrypted) secrets and the whole inventory: owner-only, like the .env file."""
    path = sqlite_file(database_url)
    if path is not None and os.path.exists(path):
        os.chmod(path, 0o600)


async def run_migrations(database_url: str) -> None:
    """Apply every pending migration; a no-op when the schema is current."""
    # migrate() initialises Tortoise without query builders (init_connections=False), which leaves the
    # models unusable; close that context so connect() can initialise a complete one.
    try:
        await tortoise_migrate(config=tortoise_config(database_url))
    finally:
        await Tortoise.close_connections()


async def close() -> None:
    await Tortoise.close_connections()


@contextlib.asynccontextmanager
async def database(database_url: str, *, migrate: bool = True) -> AsyncIterator[None]:
    """``async with database(url):`` — connected (and migrated) inside, closed after."""
    await connect(database_url, migrate=migrate)
    try:
        yield
    finally:
        await close()


# For the `tortoise makemigrations` CLI (developers only): models are diffed against this config.
TORTOISE_ORM = tortoise_config("sqlite://:memory:")


async def pending_migrations(database_url: str) -> list[str]:
    """Names of migrations not yet applied (the database is only read)."""
    from tortoise.connection import get_connection
    from tortoise.migrations.executor import MigrationExecutor

    check_sqlite_location(database_url)
    config = tortoise_config(database_url)
    try:
        await Tortoise.init(config=config, init_connections=False)
        executor = MigrationExecutor(get_connection("default"), config["apps"])
        steps = await executor.plan(None)
        return [f"{s.migration.app_label}.{s.migration.name}" for s in steps if not s.backward]
    except Exception as exc:
        raise _unavailable(database_url, exc) from exc
    finally:
        await Tortoise.close_connections()
