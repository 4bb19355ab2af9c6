"""Application fixtures: secret keys, a migrated database on each engine, settings for the bot.

``engine_url`` is parametrised over SQLite, PostgreSQL and MariaDB (the throwaway databases come from
``tests/harness/databases.py``); tests of the data layer use it so they run on all three. Everything else
uses ``sqlite_url`` to stay fast.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from storage import db
from storage.crypto import Keyring, generate_key, install_keyring

ENGINES = ("sqlite", "postgres", "mariadb")


@pytest.fixture
def keyring() -> Iterator[Keyring]:
    """A fresh single-key keyring, installed for encrypted fields and removed afterwards."""
    ring = Keyring([generate_key()])
    install_keyring(ring)
    yield ring
    install_keyring(None)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'bot.sqlite3'}"


@pytest.fixture(params=ENGINES)
def engine_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL for an empty database on each engine in turn."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'bot.sqlite3'}"
    info = request.getfixturevalue("postgres_db" if request.param == "postgres" else "mariadb_db")
    return info.url


@pytest.fixture
async def database(engine_url: str, keyring: Keyring) -> AsyncIterator[str]:
    """A migrated database on each engine, connected for the test."""
    async with db.database(engine_url):
        yield engine_url


@pytest.fixture(scope="session")
async def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite file migrated from nothing by the real migrations, once per session: each test gets a copy of it
    (the same schema the migrations build — copying a file costs milliseconds, migrating ~1 s). The migrations
    themselves are tested from nothing on every engine in tests/test_storage.py."""
    path = tmp_path_factory.mktemp("migrated") / "template.sqlite3"
    async with db.database(f"sqlite://{path}"):
        pass
    return path


@pytest.fixture
async def sqlite_db(sqlite_url: str, keyring: Keyring, migrated_sqlite: Path) -> AsyncIterator[str]:
    """A migrated SQLite database (a copy of the session's migrated file), connected for the test."""
    target = Path(sqlite_url.removeprefix("sqlite://"))
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(migrated_sqlite, target)
    async with db.database(sqlite_url, migrate=False):
        yield sqlite_url
