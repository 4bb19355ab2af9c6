"""Connectivity test for a database credential: connect from the server, list databases, explain a failure.

Why from the server: backups run there (``mysqldump``/``pg_dump``/``mongodump`` over the bot's SSH session),
so "can the bot's host reach the database" would answer the wrong question. The test runs the engine's own
client through the transport, with the password on stdin or in the environment, never on a command line.

This module also owns the failure vocabulary the engine probes use (:data:`FailureKind`,
:class:`ConnectFailure`): each engine module classifies its client's error text into one of these kinds,
and :func:`check` turns a kind into a sentence and a fix a person can act on. The engine modules import
from here, so :func:`check` imports them lazily (inside the function) to keep the import graph acyclic.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import SecretStr

from bot.probes.base import Absent, Model, ProbeContext, ProbeError
from bot.transport.base import CommandTimeout, TransportError
from storage.redact import mask

Engine = Literal["mysql", "postgresql", "mongodb"]
FailureKind = Literal[
    "refused",  # nothing listens on that address/port, or the socket file does not exist
    "unknown_host",  # the host name does not resolve on the server
    "timeout",  # no answer within the connect timeout (firewall dropping packets, hung server)
    "auth_failed",  # wrong password, unknown user, peer/unix_socket mismatch
    "host_not_allowed",  # the server refuses this user from this client address (pg_hba.conf, MySQL host)
    "access_denied",  # logged in, but not allowed to use the requested database
    "unknown_database",  # the requested database does not exist
    "client_missing",  # mysql/mariadb, psql or mongosh is not installed on the server
    "server_unreachable",  # the bot could not run the test on the server at all (SSH)
    "other",  # anything else: the client's own words are in the message
]
ENGINE_NAMES: dict[Engine, str] = {"mysql": "MySQL/MariaDB", "postgresql": "PostgreSQL", "mongodb": "MongoDB"}
CLIENTS: dict[Engine, str] = {
    "mysql": "mariadb-client or mysql-client",
    "postgresql": "postgresql-client",
    "mongodb": "mongodb-mongosh, from MongoDB's own repository",
}


class ConnectFailure(ProbeError):
    """A database client could not connect or list databases; ``kind`` says why in one word.

    ``message`` never contains a password: engine modules build it from the client's error text after
    :func:`redact`, and clients do not echo passwords anyway.
    """

    def __init__(self, kind: FailureKind, message: str) -> None:
        super().__init__(message)
        self.kind: FailureKind = kind
        self.message = message


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every non-empty secret replaced by ``***`` (defence in depth for error messages).

    Whole values only for short secrets (a one-letter password leaves "port" readable), everywhere for long ones:
    the rule is :mod:`storage.redact`'s, the same as for the bot's own logs and database errors.
    """
    return mask(text, secrets)


def last_line(text: str, limit: int = 300) -> str:
    """The last non-empty line of a client's stderr, trimmed: clients put the actual error there."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:limit] if lines else ""


class DbCredential(Model):
    """A database login as the wizard stores it (the seed's ``database_credentials`` row, decrypted).

    ``auth_method="socket"``: MySQL/MariaDB root through the local socket (unix_socket authentication) or
    PostgreSQL peer authentication as the ``postgres`` system user — no password. ``database``: connect to
    this one (so a missing privilege on it shows up as ``access_denied``). ``auth_source``: MongoDB only.
    """

    engine: Engine
    host: str = "localhost"
    port: int | None = None
    user: str | None = None
    password: SecretStr | None = None
    auth_method: Literal["password", "socket"] = "password"
    socket: str | None = None
    database: str | None = None
    auth_source: str | None = None


class CheckResult(Model):
    """Outcome of :func:`check`: either the databases, or a failure kind with a message and a fix."""

    engine: Engine
    ok: bool
    databases: tuple[str, ...] = ()
    failure: FailureKind | None = None
    message: str = ""
    fix: str = ""


def fix_for(kind: FailureKind, engine: Engine, host: str, port: int | None) -> str:
    """One sentence telling the person what to change for a failure of ``kind``."""
    name = ENGINE_NAMES[engine]
    where = f"{host}:{port}" if port else host
    fixes: dict[FailureKind, str] = {
        "refused": f"Check that {name} is running and listens on {where} (its bind/listen address and port); "
        "for a local server, 127.0.0.1 or the socket usually works.",
        "unknown_host": f"The server cannot resolve {host!r}: check the spelling, or use an IP address or "
        "localhost if the database runs on the same server.",
        "timeout": f"Nothing answered from {where} in time: check firewalls between the server and the "
        "database, and that the address is right.",
        "auth_failed": "Check the user name and password (re-enter the password), and that this user may log "
        "in with a password from this server.",
        "host_not_allowed": _host_not_allowed_fix(engine),
        "access_denied": f"Grant this user access to the database in {name} (backups need read access to every "
        "database they dump), or choose a database it may use.",
        "unknown_database": "Check the database name: it does not exist on this server.",
        "client_missing": f"Install the {name} client on the server (Debian/Ubuntu package: {CLIENTS[engine]}); "
        "backups need it too.",
        "server_unreachable": "Fix the SSH connection to the server first (see the server's status).",
        "other": f"Read the {name} client's message above; if it is unclear, try the same login with the client "
        "on the server by hand.",
    }
    return fixes[kind]


def _host_not_allowed_fix(engine: Engine) -> str:
    if engine == "postgresql":
        return (
            "Add a line for this user and address to pg_hba.conf (e.g. `host all backup 127.0.0.1/32 "
            "scram-sha-256`) and reload PostgreSQL."
        )
    return (
        "Create the user for the address the server connects from (e.g. 'backup'@'localhost' or "
        "'backup'@'127.0.0.1'), or connect through localhost."
    )


async def check(ctx: ProbeContext, credential: DbCredential, *, timeout: float = 10.0) -> CheckResult:
    """Connect with ``credential`` from the server, list its databases, and classify any failure."""
    from bot.probes import mongodb, mysql, postgresql  # the engines import this module; see the docstring

    listers = {
        "mysql": mysql.check_databases,
        "postgresql": postgresql.check_databases,
        "mongodb": mongodb.check_databases,
    }
    engine = credential.engine
    try:
        databases = await listers[engine](ctx, credential, timeout=timeout)
    except ConnectFailure as exc:
        return _failed(credential, exc.kind, exc.message)
    except Absent as exc:
        return _failed(credential, "client_missing", f"`{exc}` is not installed on the server.")
    except CommandTimeout:
        return _failed(credential, "timeout", f"The {ENGINE_NAMES[engine]} client did not finish in time.")
    except TransportError as exc:
        return _failed(credential, "server_unreachable", str(exc))
    return CheckResult(engine=engine, ok=True, databases=databases)


def _failed(credential: DbCredential, kind: FailureKind, message: str) -> CheckResult:
    secret = credential.password.get_secret_value() if credential.password else None
    return CheckResult(
        engine=credential.engine,
        ok=False,
        failure=kind,
        message=redact(message, [secret]),
        fix=fix_for(kind, credential.engine, credential.host, credential.port),
    )
