"""MySQL/MariaDB: one streamed ``mariadb-dump``/``mysqldump`` per database, one archive each.

Options, and why:

- ``--single-transaction``: one consistent InnoDB snapshot without blocking writers. A database with
  non-transactional tables (MyISAM, Aria …, from the probe) is dumped with ``--lock-tables`` instead, per the
  atomicity verdict (:func:`bot.probes.atomicity.mysql_verdict`): consistent, but writes to that database wait
  for its dump. ``lock_non_transactional=False`` keeps ``--single-transaction`` and says the MyISAM tables
  are not consistent. (The verdict's *snapshot* method backs up the data directory, which is a files backup
  of a snapshot, not a dump; a dump cannot read a snapshot.)
- ``--routines --events --triggers``: stored code is part of the database; ``--hex-blob``: binary columns as
  hex (text-safe); ``--default-character-set=utf8mb4``: old clients default to 3-byte ``utf8`` and would
  mangle emoji; ``--max-allowed-packet=1G``: rows up to 1 GiB; ``--set-gtid-purged=OFF`` for Oracle's
  mysqldump, so the dump can be restored next to the source on a GTID server.
- No ``--databases``: the dump then has no ``CREATE DATABASE``/``USE``, so a restore can load it into any named
  database (:mod:`bot.backup.restore_db` creates it). The database name ends the client's argv after a
  ``--`` (a name may start with ``-``) that :data:`WITH_OPTION_FILE` adds itself (see the comment there).

Credentials never reach argv. Every client (dump and restore) is started through :data:`WITH_OPTION_FILE`, a
fixed ``sh`` script that writes a MySQL option file into a pipe on fd 5 and runs the client with
``--defaults-file=/dev/fd/5``. The password arrives as the environment variable :data:`PASSWORD_VAR` through
the job's ``secret_env`` (the transport feeds it on stdin); the script copies it into an unexported shell
variable, unsets it, and prints it with the shell's built-in ``printf``, so no process argv and not even the
client's environment holds it. ``--defaults-file`` (not ``--defaults-extra-file``) so a ``~/.my.cnf`` cannot
override the stored login; the option file ``!include``s the global files for the socket path (missing ones
are skipped), as the probe does. Why not ``MYSQL_PWD``: MySQL 8.0 deprecated it, and the option file works on
every version. Root over the socket (``as_root``) needs no password at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bot.backup.jobs import ArchiveJob
from bot.backup.sources.base import DatabaseSelection, Facts, PlanError, dump_name, job_suffix, parse_config
from bot.probes import atomicity
from bot.probes import mysql as probe
from bot.probes.base import ProbeError
from bot.probes.dbcheck import DbCredential

if TYPE_CHECKING:  # restore_db imports this module
    from bot.backup.restore_db import DumpRef, RestoreResult
    from bot.borg.repo import Repo
    from bot.transport.base import Transport

PASSWORD_VAR = "BACKUP_BOT_MYSQL_PASSWORD"  # noqa: S105 - the variable's name, not a password
OPTIONS_FD = 5  # WITH_OPTION_FILE writes the option file into this fd
DEFAULTS_FILE = f"--defaults-file=/dev/fd/{OPTIONS_FD}"
# $1 = "+" and an operand to pass after "--" (the database to dump), or just "+" (borg refuses an empty
# argument in a --content-from-command command); then the client and its arguments. fd 6
# keeps the caller's stdin (a dump to restore) for the client. The "--" lives in the script's text: borg 1.4
# under Python 3.11 drops the first literal "--" argument of a --content-from-command command (argparse).
WITH_OPTION_FILE = r"""o=${BACKUP_BOT_MYSQL_PASSWORD-}; unset BACKUP_BOT_MYSQL_PASSWORD
t=${1#?}; shift
exec 6<&0
{ printf '%s\n' '!include /etc/my.cnf' '!include /etc/mysql/my.cnf' '[client]'
  [ -z "$o" ] || printf 'password=%s\n' "$o"
} | { exec 5<&0 0<&6 6<&-
  if [ -n "$t" ]; then exec "$@" -- "$t"; fi
  exec "$@"; }
"""
COMMON_OPTIONS = ("--routines", "--events", "--triggers", "--hex-blob", "--default-character-set=utf8mb4",
                  "--max-allowed-packet=1G")  # fmt: skip


class MySQLConfig(DatabaseSelection):
    """``databases`` empty = every non-system database the probe found, minus ``exclude``."""

    lock_non_transactional: bool = True


class MySQLFacts(Facts):
    """The MySQL probe's result and the login to dump with (decrypted by the caller)."""

    info: probe.MySQLInfo
    credential: probe.MySQLCredential | DbCredential


def credential_of(credential: probe.MySQLCredential | DbCredential) -> probe.MySQLCredential:
    return credential if isinstance(credential, probe.MySQLCredential) else probe.credential_from(credential)


def dump_program(info: probe.MySQLInfo) -> str:
    """``mariadb-dump`` next to a ``mariadb`` client (MariaDB 11 may lack ``mysqldump``), else ``mysqldump``."""
    return "mariadb-dump" if info.client == "mariadb" else "mysqldump"


def is_oracle_client(info: probe.MySQLInfo) -> bool:
    return info.client == "mysql" and "mariadb" not in info.client_version.lower()


def connection_args(credential: probe.MySQLCredential) -> list[str]:
    """User, host, port, socket as single ``--name=value`` arguments (never the password)."""
    values = (("user", credential.user), ("host", credential.host), ("port", credential.port),
              ("socket", credential.socket))  # fmt: skip
    return [f"--{name}={value}" for name, value in values if value is not None]


def secret_env(credential: probe.MySQLCredential) -> dict[str, str]:
    """The option-file value of the password for :data:`WITH_OPTION_FILE` (empty when there is none)."""
    if credential.password is None:
        return {}
    try:
        return {PASSWORD_VAR: probe.quote_option(credential.password.get_secret_value())}
    except ProbeError as exc:
        raise PlanError(str(exc)) from None


def client_argv(program: str, credential: probe.MySQLCredential, *args: str, operand: str = "") -> tuple[str, ...]:
    """``program`` run through :data:`WITH_OPTION_FILE` with the login's options, ``args``, then ``-- operand``
    when one is given."""
    return ("sh", "-c", WITH_OPTION_FILE, "sh", f"+{operand}", program, DEFAULTS_FILE, *connection_args(credential),
            *args)  # fmt: skip


def consistency(info: probe.MySQLInfo, database: str, lock: bool) -> tuple[str, str]:
    """``(option, note)`` for one database per the atomicity verdict (see the module docstring)."""
    verdict = atomicity.mysql_verdict(info, None, databases=[database])
    if verdict.method == "transaction" or info.server is None:
        return "--single-transaction", "--single-transaction"
    if lock:
        return "--lock-tables", "--lock-tables: it has non-transactional tables, writes wait during its dump"
    return "--single-transaction", "--single-transaction: its non-transactional tables are NOT consistent"


def databases_to_dump(config: MySQLConfig, info: probe.MySQLInfo) -> list[str]:
    if config.databases:
        chosen = list(config.databases)
    elif info.server is not None:
        chosen = list(info.server.databases)
    else:
        raise PlanError(
            "The databases on this MySQL/MariaDB server are not known (the probe could not log in); probe the "
            "server again with a working login, or list the databases to back up."
        )
    chosen = [d for d in chosen if d not in config.exclude]
    if not chosen:
        raise PlanError("No MySQL/MariaDB database is left to back up after the exclusions.")
    return chosen


class MySQLSource:
    """One archive per database: ``mysql-<name>``, holding ``<name>.sql``."""

    type = "mysql"
    config_model = MySQLConfig

    def plan(self, config: MySQLConfig, facts: MySQLFacts) -> list[ArchiveJob]:
        credential = credential_of(facts.credential)
        secrets = secret_env(credential)
        program = dump_program(facts.info)
        extra = ("--set-gtid-purged=OFF",) if is_oracle_client(facts.info) else ()
        jobs = []
        for database in databases_to_dump(config, facts.info):
            option, note = consistency(facts.info, database, config.lock_non_transactional)
            jobs.append(ArchiveJob(
                suffix=job_suffix("mysql", database), kind="command",
                command=client_argv(program, credential, option, *COMMON_OPTIONS, *extra, operand=database),
                stdin_name=dump_name(database, "sql"), secret_env=secrets, privileged=credential.as_root,
                description=f"MySQL/MariaDB database {database} ({program} {note})",
            ))  # fmt: skip
        return jobs

    def validate(self, config: Mapping[str, Any] | MySQLConfig) -> list[str]:
        return parse_config(MySQLConfig, config)[1]

    async def restore(
        self,
        transport: Transport,
        repo: Repo,
        dump: DumpRef,
        target: str,
        credential: DbCredential | probe.MySQLCredential,
        **options: Any,
    ) -> RestoreResult:
        """Load a dump archive into database ``target``; see :func:`bot.backup.restore_db.restore_mysql`."""
        from bot.backup import restore_db  # restore_db imports this module

        return await restore_db.restore_mysql(transport, repo, dump, target, credential, **options)
