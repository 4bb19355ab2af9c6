"""PostgreSQL: ``pg_dump`` in custom format per database plus one ``pg_dumpall --globals-only``, streamed.

- ``pg_dump --format=custom``: what ``pg_restore`` needs to restore into a database of another name, to
  select objects, or to drop before re-creating; one consistent (repeatable-read) snapshot per database.
  ``--compress=0``: borg compresses and deduplicates; a zlib-compressed dump would change completely when one
  row changes, so every backup would store the whole database again.
- ``pg_dumpall --globals-only``: roles and tablespaces, which no per-database dump contains. A login that is
  not a superuser may not read ``pg_authid``, so for it the plan adds ``--no-role-passwords`` (roles without
  their password hashes) instead of failing every night.
- ``--no-password``: never prompt (a prompt would hang the backup); the connection string carries
  ``connect_timeout`` so an unreachable server fails in seconds, not at the TCP timeout.

How the dump logs in (from the probe's access order):

- *peer*: ``runuser -u postgres -- pg_dump …`` on the Unix socket (the job is privileged: borg runs as root),
  through the fixed script :data:`AS_USER`;
- *.pgpass*: libpq reads the file itself; the bot never sees the password;
- *password*: ``PGPASSWORD`` in the job's ``secret_env`` — the transport feeds it through stdin into borg's
  environment, and borg passes its environment (minus ``BORG_PASSPHRASE``) to the dump. libpq accepts a
  password only from the environment, a regular 0600 file, or the connection string (= argv): a pipe or
  ``/dev/fd`` passfile is refused ("not a plain file"), so the environment — readable only by the same user
  and root (``/proc/<pid>/environ`` is mode 0400) — is the one channel without a file on disk or argv.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bot.backup.jobs import ArchiveJob
from bot.backup.sources.base import DatabaseSelection, Facts, PlanError, dump_name, job_suffix, parse_config
from bot.probes import postgresql as probe
from bot.probes.dbcheck import DbCredential

if TYPE_CHECKING:  # restore_db imports this module
    from bot.backup.restore_db import DumpRef, RestoreResult
    from bot.borg.repo import Repo
    from bot.transport.base import Transport

CONNECT_TIMEOUT = 30
GLOBALS_SUFFIX = "globals"
# Peer access: run "$@" as the system user $1. runuser permutes its options (it would take pg_dump's
# --format for its own), so it needs "--", and that "--" lives in this script's text: borg 1.4 under
# Python 3.11 drops the first literal "--" argument of a --content-from-command command (argparse).
AS_USER = 'u=$1; shift; cd / && exec runuser -u "$u" -- "$@"'


class PostgreSQLConfig(DatabaseSelection):
    """``databases`` empty = every database the probe found (templates excluded), minus ``exclude``."""

    include_globals: bool = True


class PostgreSQLFacts(Facts):
    """The PostgreSQL probe's result and the login to dump with (decrypted by the caller)."""

    info: probe.PgInfo
    credential: probe.PgCredential | DbCredential


def credential_of(credential: probe.PgCredential | DbCredential) -> probe.PgCredential:
    return credential if isinstance(credential, probe.PgCredential) else probe.credential_from(credential)


def conninfo(database: str) -> str:
    """A libpq connection string for ``--dbname``: the quoted name plus a connect timeout."""
    return f"{probe.conninfo_dbname(database)} connect_timeout={CONNECT_TIMEOUT}"


def connection_args(credential: probe.PgCredential, default_port: int | None = None) -> list[str]:
    """Host (or socket directory), port and user as ``--name=value`` arguments; the cluster's port from the
    probe when the login names none (Debian runs further clusters on 5433 …)."""
    port = credential.port or (default_port if default_port != probe.DEFAULT_PORT else None)
    values = (("host", credential.host), ("port", port), ("username", credential.user))
    return [f"--{name}={value}" for name, value in values if value is not None]


def as_login(credential: probe.PgCredential, argv: tuple[str, ...]) -> tuple[str, ...]:
    """Peer access runs the client as the database's system user (from ``/``: root's home is not readable
    for it, and the client would complain on stderr)."""
    return ("sh", "-c", AS_USER, "sh", credential.os_user, *argv) if credential.os_user else argv


def secret_env(credential: probe.PgCredential) -> dict[str, str]:
    return {"PGPASSWORD": credential.password.get_secret_value()} if credential.password is not None else {}


def pg_dump_argv(credential: probe.PgCredential, database: str, port: int | None = None) -> tuple[str, ...]:
    argv = ("pg_dump", "--format=custom", "--compress=0", "--no-password", *connection_args(credential, port),
            f"--dbname={conninfo(database)}")  # fmt: skip
    return as_login(credential, argv)


def globals_argv(credential: probe.PgCredential, superuser: bool | None, port: int | None = None) -> tuple[str, ...]:
    no_passwords = ("--no-role-passwords",) if superuser is False else ()
    argv = ("pg_dumpall", "--globals-only", "--no-password", *no_passwords, *connection_args(credential, port))
    return as_login(credential, argv)


def databases_to_dump(config: PostgreSQLConfig, info: probe.PgInfo) -> list[str]:
    if config.databases:
        chosen = list(config.databases)
    elif info.server is not None:
        chosen = list(info.server.databases)
    else:
        raise PlanError(
            "The databases on this PostgreSQL server are not known (the probe found no way in); probe the server "
            "again with a working login, or list the databases to back up."
        )
    chosen = [d for d in chosen if d not in config.exclude]
    if not chosen and not config.include_globals:
        raise PlanError("No PostgreSQL database is left to back up after the exclusions.")
    return chosen


class PostgreSQLSource:
    """``pg-<name>`` archives holding ``<name>.pgdump``, plus ``globals`` holding ``globals.sql``."""

    type = "postgresql"
    config_model = PostgreSQLConfig

    def plan(self, config: PostgreSQLConfig, facts: PostgreSQLFacts) -> list[ArchiveJob]:
        credential = credential_of(facts.credential)
        secrets, port, privileged = secret_env(credential), facts.info.port, credential.os_user is not None
        jobs = [
            ArchiveJob(
                suffix=job_suffix("pg", database), kind="command", command=pg_dump_argv(credential, database, port),
                stdin_name=dump_name(database, "pgdump"), secret_env=secrets, privileged=privileged,
                description=f"PostgreSQL database {database} (pg_dump, custom format)",
            )
            for database in databases_to_dump(config, facts.info)
        ]  # fmt: skip
        if config.include_globals:
            superuser = facts.info.server.superuser if facts.info.server is not None else None
            jobs.append(ArchiveJob(
                suffix=GLOBALS_SUFFIX, kind="command", command=globals_argv(credential, superuser, port),
                stdin_name="globals.sql", secret_env=secrets, privileged=privileged,
                description="PostgreSQL roles and tablespaces (pg_dumpall --globals-only)",
            ))  # fmt: skip
        return jobs

    def validate(self, config: Mapping[str, Any] | PostgreSQLConfig) -> list[str]:
        return parse_config(PostgreSQLConfig, config)[1]

    async def restore(
        self,
        transport: Transport,
        repo: Repo,
        dump: DumpRef,
        target: str,
        credential: DbCredential | probe.PgCredential,
        **options: Any,
    ) -> RestoreResult:
        """Restore a ``pg-<name>`` archive into ``target``; see :func:`bot.backup.restore_db.restore_postgresql`."""
        from bot.backup import restore_db  # restore_db imports this module

        return await restore_db.restore_postgresql(transport, repo, dump, target, credential, **options)
