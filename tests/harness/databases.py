"""Throwaway databases and logins on the machine's real PostgreSQL and MariaDB.

Why real servers: the storage layer runs on PostgreSQL and MariaDB in production, and the backup sources run
``pg_dump`` / ``mysqldump`` against real servers. This machine kind runs both before every session and CI run
(TESTING.md): PostgreSQL on 127.0.0.1:5432 (trust, user postgres), MariaDB on 127.0.0.1:3306 (root, empty
password). If one is down, the start command from TESTING.md is tried once; if it is still down, the fixtures skip
with the exact reason.

Each test gets a database with a unique name (``bwtest_<pid>_<random>``) that is dropped in teardown (its open
connections are killed first). Leftovers of killed runs (dead pid in the name) are dropped at the first use.

Tortoise URLs: ``postgres://postgres@127.0.0.1:5432/NAME`` and ``mysql://root:@127.0.0.1:3306/NAME`` — Tortoise's
``expand_db_url`` turns the empty password of the latter into ``password=""`` (checked with tortoise-orm 1.1.9).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import pytest

from tests.harness.common import CommandError, pid_alive, run, unique_token

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
MY_HOST, MY_PORT, MY_USER = "127.0.0.1", 3306, "root"
PG_START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | head -n1) main start"
MY_START = "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd"
_NAME_RE = re.compile(r"^bwtest_(\d+)_[0-9a-f]+$")

Engine = Literal["postgres", "mysql"]


@dataclass(frozen=True)
class DatabaseInfo:
    """A throwaway database. ``url`` is a Tortoise ORM URL."""

    engine: Engine  # "postgres" or "mysql" (MariaDB)
    name: str
    host: str
    port: int
    user: str
    password: str | None  # None = no password (PostgreSQL trust); "" = empty password (MariaDB root)
    url: str

    def sql(self, statement: str, *, check: bool = True) -> str:
        """Run SQL in this database through psql / mariadb as the admin login; returns tab-separated rows."""
        if self.engine == "postgres":
            return _psql(statement, database=self.name, check=check).stdout
        return _mariadb(statement, database=self.name, check=check).stdout


@dataclass(frozen=True)
class DbLogin:
    """A throwaway login with a password (dropped in teardown)."""

    engine: Engine
    user: str
    password: str
    host: str
    port: int
    database: str | None  # the database it was granted all privileges on, if any
    password_checked: bool  # False when the server accepts any password for it (PostgreSQL trust on loopback)

    def url(self, database: str | None = None) -> str:
        """Tortoise ORM URL for this login (``database`` defaults to the granted one)."""
        db = database or self.database or ""
        scheme = "postgres" if self.engine == "postgres" else "mysql"
        return f"{scheme}://{self.user}:{self.password}@{self.host}:{self.port}/{db}"


# --- clients -------------------------------------------------------------------------------------------------


def _psql(
    statement: str,
    *,
    database: str = "postgres",
    user: str = PG_USER,
    password: str | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGCONNECT_TIMEOUT"] = "5"
    if password is not None:
        env["PGPASSWORD"] = password
    argv = ["psql", "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-w",
            "-h", PG_HOST, "-p", str(PG_PORT), "-U", user, "-d", database, "-c", statement]  # fmt: skip
    return run(argv, env=env, check=check, timeout=60)


def _mariadb(
    statement: str,
    *,
    database: str | None = None,
    user: str = MY_USER,
    password: str = "",
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("MYSQL_PWD", None)
    if password:
        env["MYSQL_PWD"] = password  # not argv
    client = shutil.which("mariadb") or "mysql"
    argv = [client, "--no-defaults", "--protocol=TCP", "-h", MY_HOST, "-P", str(MY_PORT), "-u", user,
            "--batch", "--skip-column-names", "--connect-timeout=5"]  # fmt: skip
    if database:
        argv.append(database)
    argv += ["-e", statement]
    return run(argv, env=env, check=check, timeout=60)


# --- servers -------------------------------------------------------------------------------------------------

_server_state: dict[Engine, str | None] = {}  # engine -> None (up) or the skip reason


def _ensure_server(engine: Engine) -> None:
    """Skip unless the server answers; tries the TESTING.md start command once per session first."""
    if engine not in _server_state:
        _server_state[engine] = _bring_up(engine)
        if _server_state[engine] is None:
            _drop_stale(engine)
    reason = _server_state[engine]
    if reason is not None:
        pytest.skip(reason)


def _bring_up(engine: Engine) -> str | None:
    tool, package = ("psql", "postgresql-client") if engine == "postgres" else ("mariadb", "mariadb-client")
    if shutil.which(tool) is None and not (engine == "mysql" and shutil.which("mysql")):
        return f"`{tool}` not installed (Debian package {package})"
    probe: Callable[[], subprocess.CompletedProcess[str]] = (
        (lambda: _psql("SELECT 1", check=False))
        if engine == "postgres"
        else (lambda: _mariadb("SELECT 1", check=False))
    )
    first = probe()
    if first.returncode == 0:
        return None
    start = PG_START if engine == "postgres" else MY_START
    started = subprocess.run(["sh", "-c", start], capture_output=True, text=True, timeout=120, check=False)
    deadline = time.monotonic() + 30
    last = first
    while time.monotonic() < deadline:
        last = probe()
        if last.returncode == 0:
            return None
        time.sleep(0.5)
    where = f"{PG_HOST}:{PG_PORT}" if engine == "postgres" else f"{MY_HOST}:{MY_PORT}"
    return (
        f"{engine} server not reachable on {where}: {first.stderr.strip() or first.stdout.strip()}; "
        f"tried `{start}` (exit {started.returncode}: {(started.stderr or started.stdout).strip()[-300:]}); "
        f"still down after 30 s: {last.stderr.strip()[-300:]}"
    )


def _drop_stale(engine: Engine) -> None:
    """Drop databases/logins named bwtest_<pid>_… whose pid is dead (a killed earlier run)."""
    try:
        if engine == "postgres":
            names = _psql("SELECT datname FROM pg_database").stdout.split()
            roles = _psql("SELECT rolname FROM pg_roles").stdout.split()
        else:
            names = _mariadb("SHOW DATABASES").stdout.split()
            roles = _mariadb("SELECT DISTINCT user FROM mysql.user").stdout.split()
    except CommandError:
        return
    for name in names:
        m = _NAME_RE.match(name)
        if m and not pid_alive(int(m.group(1))):
            with contextlib.suppress(CommandError):
                _drop_database(engine, name)
    for role in roles:
        m = _NAME_RE.match(role)
        if m and not pid_alive(int(m.group(1))):
            with contextlib.suppress(CommandError):
                _drop_login(engine, role, ())


# --- databases -----------------------------------------------------------------------------------------------


def _create_database(engine: Engine) -> DatabaseInfo:
    name = f"bwtest_{unique_token()}"
    if engine == "postgres":
        _psql(f'CREATE DATABASE "{name}"')
        return DatabaseInfo("postgres", name, PG_HOST, PG_PORT, PG_USER, None,
                            f"postgres://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}")  # fmt: skip
    _mariadb(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    return DatabaseInfo("mysql", name, MY_HOST, MY_PORT, MY_USER, "", f"mysql://{MY_USER}:@{MY_HOST}:{MY_PORT}/{name}")


def _drop_database(engine: Engine, name: str) -> None:
    if engine == "postgres":
        _psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        )
        _psql(f'DROP DATABASE IF EXISTS "{name}"')
        return
    for conn_id in _mariadb(f"SELECT id FROM information_schema.processlist WHERE db = '{name}'").stdout.split():
        _mariadb(f"KILL {int(conn_id)}", check=False)
    _mariadb(f"DROP DATABASE IF EXISTS `{name}`")


def database_exists(engine: Engine, name: str) -> bool:
    if engine == "postgres":
        return _psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'").stdout.strip() == "1"
    return _mariadb(f"SHOW DATABASES LIKE '{name}'").stdout.strip() == name


@contextlib.contextmanager
def throwaway_database(engine: Engine) -> Iterator[DatabaseInfo]:
    """Context-manager form of :func:`postgres_db` / :func:`mariadb_db` (drops the database on exit)."""
    _ensure_server(engine)
    info = _create_database(engine)
    try:
        yield info
    finally:
        _drop_database(engine, info.name)


@pytest.fixture
def postgres_db() -> Iterator[DatabaseInfo]:
    """A fresh PostgreSQL database for one test, dropped afterwards (also after a failure)."""
    with throwaway_database("postgres") as info:
        yield info


@pytest.fixture
def mariadb_db() -> Iterator[DatabaseInfo]:
    """A fresh MariaDB database for one test, dropped afterwards (also after a failure)."""
    with throwaway_database("mysql") as info:
        yield info


# --- logins --------------------------------------------------------------------------------------------------


def _create_login(engine: Engine, database: str | None, password: str | None) -> DbLogin:
    user = f"bwtest_{unique_token()}"
    password = password or secrets.token_urlsafe(16)
    quoted = password.replace("'", "''") if engine == "postgres" else password.replace("\\", "\\\\").replace("'", "''")
    if engine == "postgres":
        _psql(f"CREATE ROLE \"{user}\" LOGIN PASSWORD '{quoted}'")
        if database:
            _psql(f'GRANT ALL PRIVILEGES ON DATABASE "{database}" TO "{user}"')
            _psql(f'GRANT ALL ON SCHEMA public TO "{user}"', database=database)
        wrong = _psql("SELECT 1", user=user, password=password + "-wrong", check=False)
        return DbLogin("postgres", user, password, PG_HOST, PG_PORT, database, password_checked=wrong.returncode != 0)
    for host in ("%", "localhost"):
        _mariadb(f"CREATE USER '{user}'@'{host}' IDENTIFIED BY '{quoted}'")
        if database:
            _mariadb(f"GRANT ALL PRIVILEGES ON `{database}`.* TO '{user}'@'{host}'")
    wrong = _mariadb("SELECT 1", user=user, password=password + "-wrong", check=False)
    return DbLogin("mysql", user, password, MY_HOST, MY_PORT, database, password_checked=wrong.returncode != 0)


def _drop_login(engine: Engine, user: str, databases: tuple[str, ...]) -> None:
    if engine == "postgres":
        _psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{user}'")
        existing = set(_psql("SELECT datname FROM pg_database").stdout.split())
        for db in {"postgres", *databases} & existing:
            _psql(f'REASSIGN OWNED BY "{user}" TO "{PG_USER}"; DROP OWNED BY "{user}"', database=db)
        _psql(f'DROP ROLE IF EXISTS "{user}"')
        return
    for conn_id in _mariadb(f"SELECT id FROM information_schema.processlist WHERE user = '{user}'").stdout.split():
        _mariadb(f"KILL {int(conn_id)}", check=False)
    _mariadb(f"DROP USER IF EXISTS '{user}'@'%', '{user}'@'localhost'")


class LoginFactory:
    """``make(database=None, password=None) -> DbLogin``; every login made is dropped in teardown."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.logins: list[DbLogin] = []

    def __call__(self, database: DatabaseInfo | str | None = None, *, password: str | None = None) -> DbLogin:
        _ensure_server(self.engine)
        name = database.name if isinstance(database, DatabaseInfo) else database
        login = _create_login(self.engine, name, password)
        self.logins.append(login)
        return login

    def close(self) -> None:
        errors: list[str] = []
        while self.logins:
            login = self.logins.pop()
            try:
                _drop_login(self.engine, login.user, (login.database,) if login.database else ())
            except CommandError as exc:
                errors.append(str(exc))
        if errors:
            raise RuntimeError("dropping test logins failed: " + "\n".join(errors))


@pytest.fixture
def postgres_role() -> Iterator[LoginFactory]:
    """Factory for PostgreSQL login roles with a password: ``postgres_role(postgres_db)`` grants it that database.
    Note ``DbLogin.password_checked``: this machine's pg_hba trusts 127.0.0.1, so any password is accepted."""
    factory = LoginFactory("postgres")
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def mariadb_user() -> Iterator[LoginFactory]:
    """Factory for MariaDB users ('u'@'%' and 'u'@'localhost') with a password; ``mariadb_user(mariadb_db)``
    grants all privileges on that database."""
    factory = LoginFactory("mysql")
    try:
        yield factory
    finally:
        factory.close()
