"""Restore a database dump from an archive into a named target database, on a chosen server.

The data flows in one pipe on the server, never through a temporary file or the bot:

    borg extract --stdout REPO::ARCHIVE NAME | [sed filter] | pg_restore … / mariadb …

run as one ``sh -c`` with the fixed script :data:`PIPE` and every argument in ``"$@"`` (three argv lists, each
preceded by its length). ``dash`` has no ``pipefail``, so the script collects each stage's exit status through
fd 3 and reports them on stderr as ``backup-bot-pipe: extract=N filter=N restore=N``; a restore counts only
when all three are 0 — a borg failure half-way through is not hidden by a restore client that happily loads a
truncated stream.

Safety, "never over the source by accident":

- the target must not be the database the dump came from, and must not exist yet, unless ``overwrite=True``;
- the bot creates the target itself (PostgreSQL from ``template0``, as pg_dump's documentation advises for
  restores), and drops it again when the restore fails, so a failure leaves nothing half-restored;
- PostgreSQL restores with ``--single-transaction --exit-on-error``: the first error rolls everything back.

MySQL/MariaDB dumps are made without ``--databases`` (see :mod:`bot.backup.sources.mysql`), so they carry no
``CREATE DATABASE``/``USE`` and load into whatever database the client selects (``--database=<target>``).
The one place a database name remains in such a dump: when a routine's database collation differs from the
database's, mysqldump wraps it in ``ALTER DATABASE `<source>` CHARACTER SET … ;`` lines (seen with MariaDB
10.11). Loaded into another target, those would alter the *source* database. The filter stage rewrites exactly
those lines (anchored at the line start, the quoted source name escaped for ``sed``) to the name-less form
``ALTER DATABASE CHARACTER SET …``, which applies to the selected database. A dump line cannot start with that
text inside data: mysqldump escapes line breaks in values, and rows start with ``(``.

Credentials take the same paths as the dumps: ``PGPASSWORD`` through ``secret_env``; MySQL's option file on
fd 5 (:data:`bot.backup.sources.mysql.WITH_OPTION_FILE`), which keeps the client's stdin free for the dump.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.backup.sources import mongodb as mongo_source
from bot.backup.sources import mysql as mysql_source
from bot.backup.sources import postgresql as pg_source
from bot.backup.sources.base import database_of
from bot.borg import list as borg_list
from bot.borg.repo import Repo
from bot.borg.runner import DEFAULT_LOCK_WAIT, KINDS, BorgError, outcome_of, parse_stderr
from bot.probes import mongodb as mongo_probe
from bot.probes import mysql as my_probe
from bot.probes import postgresql as pg_probe
from bot.probes.base import ProbeContext, ProbeError
from bot.probes.dbcheck import DbCredential, last_line, redact
from bot.transport.base import CommandResult, Transport

PIPE = r"""stage() {
  s=$1 l=$2; shift 2; shift "$s"
  t=$#; i=0
  for a do
    [ "$i" -lt "$l" ] || break
    set -- "$@" "$a"; i=$((i + 1))
  done
  shift "$t"
  [ "$#" -gt 0 ] || exec cat
  exec "$@"
}
n1=$1 n2=$2 n3=$3; shift 3
exec 4>&1
codes=$(
  { { ( unset PGPASSWORD BACKUP_BOT_MYSQL_PASSWORD; stage 0 "$n1" "$@" ) </dev/null 3>&- 4>&-
      echo "extract=$?" >&3; } |
    { ( unset BORG_PASSPHRASE PGPASSWORD BACKUP_BOT_MYSQL_PASSWORD; stage "$n1" "$n2" "$@" ) 3>&- 4>&-
      echo "filter=$?" >&3; } |
    { ( unset BORG_PASSPHRASE; stage $((n1 + n2)) "$n3" "$@" ) 3>&- 4>&-
      echo "restore=$?" >&3; }
  } 3>&1 >&4
)
exec 4>&-
e=1 f=1 r=1
for kv in $codes; do
  case $kv in extract=*) e=${kv#*=} ;; filter=*) f=${kv#*=} ;; restore=*) r=${kv#*=} ;; esac
done
echo "backup-bot-pipe: extract=$e filter=$f restore=$r" >&2
[ "$e" = 0 ] && [ "$f" = 0 ] && [ "$r" = 0 ]
"""
_CODES = re.compile(r"backup-bot-pipe: extract=(\d+) filter=(\d+) restore=(\d+)")
PG_MAX_NAME = 63  # NAMEDATALEN - 1 bytes
MY_MAX_NAME = 64


@dataclass(frozen=True)
class DumpRef:
    """A dump inside an archive. ``stdin_name`` None: the archive's only file (listed first).
    ``source_database`` None: decoded from the dump's file name (``shop.pgdump`` → ``shop``)."""

    archive: str
    stdin_name: str | None = None
    source_database: str | None = None


@dataclass(frozen=True)
class RestoreResult:
    engine: str
    target: str
    source_database: str
    created: bool  # the bot created the target database
    seconds: float
    tables: dict[str, int] = field(default_factory=dict)  # rows per table in the restored database, counted after

    def as_dict(self) -> dict[str, object]:
        return {"engine": self.engine, "target": self.target, "source_database": self.source_database,
                "created": self.created, "tables": dict(self.tables), "rows": sum(self.tables.values())}  # fmt: skip


class RestoreRefused(Exception):
    """The restore was not attempted: it would write over the source or an existing database, or the name is
    not usable. The message says why and how to proceed."""


@dataclass
class RestoreFailed(Exception):
    """The restore was attempted and failed; ``stage`` is ``list``, ``create``, ``extract``, ``filter``,
    ``restore`` or ``pipe``. A target the bot created has been dropped again (``cleanup`` says otherwise)."""

    stage: str
    reason: str
    hint: str = ""
    kind: str | None = None
    cleanup: str = ""
    details: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return " ".join(part for part in (self.reason, self.cleanup, self.hint) if part)


PG_HINT = (
    "Read pg_restore's message: a role the dump refers to that does not exist here (restore the globals "
    "first, or restore with no_owner=True), an extension not installed on this server, or an older PostgreSQL "
    "than the dump's are the usual causes."
)
MY_HINT = (
    "Read the client's message: a DEFINER user that does not exist here, or missing privileges to create "
    "routines, events or triggers are the usual causes."
)


# --- pieces --------------------------------------------------------------------------------------------------


async def resolve_dump(
    transport: Transport, repo: Repo, dump: DumpRef, *, borg: str, timeout: float | None
) -> tuple[str, str]:
    """``(file name inside the archive, source database)``; lists the archive when the name is not given."""
    name = dump.stdin_name
    if name is None:
        try:
            items = await borg_list.items(transport, repo, dump.archive, borg=borg, timeout=timeout)
        except BorgError as exc:
            raise RestoreFailed("list", exc.result.reason, exc.hint, exc.kind) from None
        files = [str(item["path"]) for item in items if item.get("type") == "-"]
        if len(files) != 1:
            raise RestoreRefused(
                f"The archive {dump.archive} holds {len(files)} files, not one database dump; name the dump to restore."
            )
        name = files[0]
    return name, dump.source_database or database_of(name)


def check_target(target: str, source: str, *, overwrite: bool, limit: int) -> None:
    """Refuse unusable names, and the source database itself unless ``overwrite`` (see the module docstring)."""
    if not target or any(ch in target for ch in "\x00\n\r"):
        raise RestoreRefused(f"{target!r} cannot be a database name (empty, NUL byte or line break).")
    if len(target.encode()) > limit:
        raise RestoreRefused(f"The database name {target!r} is longer than the server allows ({limit} bytes).")
    if target == source and not overwrite:
        raise RestoreRefused(
            f"{target} is the database this dump was taken from: restoring into it would overwrite it. Choose "
            "another target name, or confirm overwriting the source explicitly."
        )


def extract_argv(repo: Repo, archive: str, name: str, borg: str) -> tuple[str, ...]:
    return (borg, "--log-json", "--lock-wait", str(DEFAULT_LOCK_WAIT), "extract", "--stdout", repo.archive(archive),
            name)  # fmt: skip


async def run_pipe(
    transport: Transport, repo: Repo, stages: Sequence[Sequence[str]], secrets: Mapping[str, str], *,
    sudo: bool, timeout: float | None,
) -> CommandResult:  # fmt: skip
    """Run :data:`PIPE` with the three stages (an empty middle stage copies its input)."""
    lengths = [str(len(stage)) for stage in stages]
    argv = ("sh", "-c", PIPE, "sh", *lengths, *(arg for stage in stages for arg in stage))
    secret_env = {**repo.secret_env(), **secrets}
    # repo.command: the extract stage keeps the same borg client state as every other borg call of this repository.
    return await transport.run(repo.command(argv), env=repo.env(), secret_env=secret_env or None, timeout=timeout,
                               sudo=sudo)  # fmt: skip


def _broken_pipe(result: CommandResult, extract: int) -> bool:
    """Did borg stop because the restore client stopped reading? (128+SIGPIPE, or borg's BrokenPipeError
    traceback in --log-json, as borg 1.4 reports it.)"""
    text = result.err.lower()
    return extract == 141 or "broken pipe" in text or "brokenpipeerror" in text


def pipe_failure(result: CommandResult, producer: Sequence[str], what: str, hint: str) -> RestoreFailed | None:
    """None when every stage exited 0; otherwise the failure of the stage that caused it."""
    match = _CODES.search(result.err)
    if match is None:
        return RestoreFailed("pipe", f"The restore pipe did not finish: {result.describe_failure()}.")
    extract, filtered, restored = (int(code) for code in match.groups())
    if extract == filtered == restored == 0:
        return None
    # The cause is the most upstream stage that failed on its own; a stage killed by SIGPIPE (141) only
    # reports that the stage after it stopped reading.
    if extract != 0 and not ((filtered or restored) and _broken_pipe(result, extract)):
        own = b"\n".join(line for line in result.stderr.splitlines() if not line.startswith(b"backup-bot-pipe:"))
        borg = outcome_of(CommandResult(tuple(producer), extract, b"", own))
        _, borg_hint = KINDS.get(borg.kind or "error", KINDS["error"])
        return RestoreFailed(
            "extract", f"Reading the dump from the archive failed: {borg.reason}", borg_hint, borg.kind
        )
    _, other = parse_stderr(result.err)
    lines = [line for line in other if not line.startswith(("backup-bot-pipe:", "backup-bot-pid="))]
    detail = "; ".join(lines[-3:]) or "no message"
    if filtered != 0 and not (restored != 0 and filtered == 141):
        return RestoreFailed("filter", f"The dump filter (sed) exited with status {filtered}: {detail}.")
    return RestoreFailed("restore", f"{what} exited with status {restored}: {detail}.", hint)


def pg_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def my_ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def bre_escape(text: str) -> str:
    """``text`` as a literal in a sed basic regular expression delimited by ``/``."""
    return re.sub(r"([\\.\[\]*^$/])", r"\\\1", text)


def alter_database_filter(source: str) -> tuple[str, ...]:
    """The sed stage that re-targets mysqldump's ``ALTER DATABASE `<source>` CHARACTER SET`` lines."""
    quoted = bre_escape(my_ident(source))
    return ("sed", "-e", f"s/^ALTER DATABASE {quoted} CHARACTER SET /ALTER DATABASE CHARACTER SET /")


def _secrets_of(credential: DbCredential | pg_probe.PgCredential | my_probe.MySQLCredential) -> list[str | None]:
    return [credential.password.get_secret_value() if credential.password is not None else None]


# --- PostgreSQL ----------------------------------------------------------------------------------------------


async def _pg_sql(ctx: ProbeContext, credential: pg_probe.PgCredential, sql: str, stage: str) -> str:
    try:
        return await pg_probe.run_sql(ctx, credential, sql, timeout=30)
    except ProbeError as exc:
        raise RestoreFailed(stage, redact(str(exc), _secrets_of(credential))) from None


async def _pg_drop(ctx: ProbeContext, credential: pg_probe.PgCredential, target: str) -> str:
    try:
        await pg_probe.run_sql(ctx, credential, f"DROP DATABASE IF EXISTS {pg_ident(target)}", timeout=60)
    except ProbeError as exc:
        return f"The half-restored database {target} could not be dropped ({exc}); drop it by hand."
    return f"The database {target}, created for this restore, was dropped again."


PG_MARK = "backup-bot: incomplete restore "
# Rows per table of the connected database, exact (count(*) through query_to_xml: one statement, no function).
PG_COUNTS_SQL = (
    "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), (xpath('/row/c/text()', query_to_xml("
    "format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') "
    "AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' ORDER BY 1"
)


def pg_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def parse_counts(text: str) -> dict[str, int]:
    """psql's NUL-separated ``name<TAB>count`` records as a dict."""
    found = {}
    for record in text.split("\x00"):
        name, _, count = record.strip("\n").partition("\t")
        if name and count.strip().isdigit():
            found[name] = int(count)
    return found


async def pg_counts(ctx: ProbeContext, login: pg_probe.PgCredential, database: str) -> dict[str, int]:
    """Rows per table of ``database`` (the restore's proof besides pg_restore's own success)."""
    inside = login.model_copy(update={"database": database})
    return parse_counts(await _pg_sql(ctx, inside, PG_COUNTS_SQL, "verify"))


async def _pg_marker(ctx: ProbeContext, login: pg_probe.PgCredential, target: str) -> str:
    sql = ("SELECT 'mark', coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database "
           f"WHERE datname = {pg_literal(target)}")
    text = await _pg_sql(ctx, login, sql, "create")
    return next((value for key, _, value in (r.strip("\n").partition("\t") for r in text.split("\x00"))
                 if key == "mark"), "")  # fmt: skip


async def _pg_prepare(ctx: ProbeContext, login: pg_probe.PgCredential, target: str, token: str, exists: bool,
                      overwrite: bool) -> bool:  # fmt: skip
    """Create ``target`` marked with ``token`` (its comment); a target left marked by this same restore (a retry
    after a crash) is dropped and made again. Returns whether the target existed (and is overwritten)."""
    if exists and token and (await _pg_marker(ctx, login, target)) == PG_MARK + token:
        await _pg_sql(ctx, login, f"DROP DATABASE {pg_ident(target)}", "create")
        exists = False
    if exists and not overwrite:
        raise RestoreRefused(f"The database {target} already exists; choose a new name, or confirm overwriting it.")
    if not exists:
        await _pg_sql(ctx, login, f"CREATE DATABASE {pg_ident(target)} TEMPLATE template0", "create")
        if token:
            comment = pg_literal(PG_MARK + token)
            await _pg_sql(ctx, login, f"COMMENT ON DATABASE {pg_ident(target)} IS {comment}", "create")
    return exists


async def restore_postgresql(
    transport: Transport, repo: Repo, dump: DumpRef, target: str,
    credential: DbCredential | pg_probe.PgCredential, *, overwrite: bool = False, no_owner: bool = False,
    borg: str = "borg", sudo: bool = False, timeout: float | None = None, token: str = "",
) -> RestoreResult:  # fmt: skip
    """Restore a ``pg_dump -Fc`` archive into ``target`` (created from template0 unless it exists and
    ``overwrite``; then ``--clean --if-exists`` replaces the dumped objects). ``no_owner``: objects belong to
    the restoring login instead of the dump's roles. ``sudo`` for peer access from a non-root login."""
    started = time.monotonic()
    login = pg_source.credential_of(credential)
    name, source = await resolve_dump(transport, repo, dump, borg=borg, timeout=timeout)
    check_target(target, source, overwrite=overwrite, limit=PG_MAX_NAME)
    ctx = ProbeContext(transport, sudo=sudo, privileged=True)
    exists = target in pg_probe.parse_databases(await _pg_sql(ctx, login, pg_probe.DATABASES_SQL, "create"))
    exists = await _pg_prepare(ctx, login, target, token, exists, overwrite)
    options = ("--clean", "--if-exists") if exists else ()
    consumer = pg_source.as_login(login, (
        "pg_restore", "--no-password", "--exit-on-error", "--single-transaction", *options,
        *(("--no-owner",) if no_owner else ()), *pg_source.connection_args(login),
        f"--dbname={pg_source.conninfo(target)}",
    ))  # fmt: skip
    producer = extract_argv(repo, dump.archive, name, borg)
    result = await run_pipe(transport, repo, (producer, (), consumer), pg_source.secret_env(login), sudo=sudo,
                            timeout=timeout)  # fmt: skip
    failure = pipe_failure(result, producer, "pg_restore", PG_HINT)
    if failure is not None:
        if not exists:
            failure.cleanup = await _pg_drop(ctx, login, target)
        failure.reason = redact(failure.reason, _secrets_of(login))
        raise failure
    tables = await pg_counts(ctx, login, target)
    if token and not exists:
        await _pg_sql(ctx, login, f"COMMENT ON DATABASE {pg_ident(target)} IS NULL", "verify")
    return RestoreResult("postgresql", target, source, not exists, time.monotonic() - started, tables)


# --- MySQL / MariaDB -----------------------------------------------------------------------------------------


async def _my_sql(ctx: ProbeContext, client: str, credential: my_probe.MySQLCredential, sql: str, stage: str) -> str:
    try:
        return await my_probe.run_sql(ctx, client, credential, sql, timeout=30)
    except ProbeError as exc:
        raise RestoreFailed(stage, redact(str(exc), _secrets_of(credential))) from None


async def _my_drop(ctx: ProbeContext, client: str, credential: my_probe.MySQLCredential, target: str) -> str:
    try:
        await my_probe.run_sql(ctx, client, credential, f"DROP DATABASE IF EXISTS {my_ident(target)}", timeout=60)
    except ProbeError as exc:
        return f"The half-restored database {target} could not be dropped ({exc}); drop it by hand."
    return f"The database {target}, created for this restore, was dropped again."


MY_MARK_TABLE = "_backup_bot_restore_incomplete"
MY_TABLES_SQL = ("SELECT 'table', table_name FROM information_schema.tables WHERE table_schema = DATABASE() "
                 "AND table_type = 'BASE TABLE' ORDER BY table_name;\nSELECT 'end';")  # fmt: skip


def _my_rows(text: str) -> list[list[str]]:
    return [[my_probe.unescape_batch(f) for f in line.split("\t")] for line in text.splitlines() if line]


async def my_counts(ctx: ProbeContext, client: str, login: my_probe.MySQLCredential, database: str) -> dict[str, int]:
    """Rows per table of ``database``, exact (``COUNT(*)`` of each table in one statement)."""
    listed = await _my_query(ctx, client, login, MY_TABLES_SQL, database, "verify")
    names = [row[1] for row in _my_rows(listed) if row[0] == "table" and len(row) == 2 and row[1] != MY_MARK_TABLE]
    counts: dict[str, int] = {}
    for start in range(0, len(names), 200):
        chunk = names[start:start + 200]
        sql = " UNION ALL ".join(f"SELECT {start + i}, COUNT(*) FROM {my_ident(n)}" for i, n in enumerate(chunk))
        for row in _my_rows(await _my_query(ctx, client, login, sql, database, "verify")):
            if len(row) == 2 and row[0].isdigit() and row[1].isdigit():
                counts[names[int(row[0])]] = int(row[1])
    return counts


async def _my_query(ctx: ProbeContext, client: str, login: my_probe.MySQLCredential, sql: str, database: str,
                    stage: str) -> str:  # fmt: skip
    try:
        return await my_probe.run_sql(ctx, client, login, sql, database=database, timeout=60)
    except ProbeError as exc:
        raise RestoreFailed(stage, redact(str(exc), _secrets_of(login))) from None


async def _my_prepare(ctx: ProbeContext, client: str, login: my_probe.MySQLCredential, target: str, token: str,
                      exists: bool, overwrite: bool) -> bool:  # fmt: skip
    """Create ``target`` with a marker table holding ``token``; a target left marked by this same restore (a retry
    after a crash) is dropped and made again. Returns whether the target existed (and is overwritten)."""
    if exists and token:
        try:
            mark = await my_probe.run_sql(ctx, client, login, f"SELECT token FROM {my_ident(MY_MARK_TABLE)}",
                                          database=target, timeout=30)  # fmt: skip
        except ProbeError:
            mark = ""
        if mark.strip() == token:
            await _my_sql(ctx, client, login, f"DROP DATABASE {my_ident(target)}", "create")
            exists = False
    if exists and not overwrite:
        raise RestoreRefused(f"The database {target} already exists; choose a new name, or confirm overwriting it.")
    if not exists:
        await _my_sql(ctx, client, login, f"CREATE DATABASE {my_ident(target)}", "create")
        if token:
            sql = (f"CREATE TABLE {my_ident(MY_MARK_TABLE)} (token VARCHAR(64)); "
                   f"INSERT INTO {my_ident(MY_MARK_TABLE)} VALUES ('{token}')")  # fmt: skip
            await _my_query(ctx, client, login, sql, target, "create")
    return exists


async def restore_mysql(
    transport: Transport, repo: Repo, dump: DumpRef, target: str,
    credential: DbCredential | my_probe.MySQLCredential, *, client: str = "mariadb", overwrite: bool = False,
    borg: str = "borg", sudo: bool = False, timeout: float | None = None, token: str = "",
) -> RestoreResult:  # fmt: skip
    """Load a mysqldump archive into ``target`` with ``client`` (``mariadb`` or ``mysql``, as the MySQL probe
    found it). The target is created unless it exists and ``overwrite`` (then the dump's ``DROP TABLE IF
    EXISTS`` replaces the dumped tables; other tables stay)."""
    started = time.monotonic()
    login = mysql_source.credential_of(credential)
    name, source = await resolve_dump(transport, repo, dump, borg=borg, timeout=timeout)
    check_target(target, source, overwrite=overwrite, limit=MY_MAX_NAME)
    ctx = ProbeContext(transport, sudo=sudo, privileged=True)
    listed = await _my_sql(ctx, client, login, my_probe.DATABASES_SQL, "create")
    exists = target in my_probe.parse_databases(listed, include_system=True)
    exists = await _my_prepare(ctx, client, login, target, token, exists, overwrite)
    consumer = mysql_source.client_argv(client, login, f"--database={target}", "--max-allowed-packet=1G")
    producer = extract_argv(repo, dump.archive, name, borg)
    middle = alter_database_filter(source) if source != target else ()
    result = await run_pipe(transport, repo, (producer, middle, consumer), mysql_source.secret_env(login),
                            sudo=sudo, timeout=timeout)  # fmt: skip
    failure = pipe_failure(result, producer, client, MY_HINT)
    if failure is not None:
        if not exists:
            failure.cleanup = await _my_drop(ctx, client, login, target)
        failure.reason = redact(failure.reason, _secrets_of(login))
        raise failure
    if token and not exists:
        await _my_query(ctx, client, login, f"DROP TABLE {my_ident(MY_MARK_TABLE)}", target, "verify")
    tables = await my_counts(ctx, client, login, target)
    return RestoreResult("mysql", target, source, not exists, time.monotonic() - started, tables)


async def database_exists(transport: Transport, engine: str, credential: DbCredential | pg_probe.PgCredential |
                          my_probe.MySQLCredential, name: str, *, client: str = "mariadb", sudo: bool = False) -> bool:
    """Whether the database ``name`` exists on the server (so a restore can refuse it before writing anything)."""
    ctx = ProbeContext(transport, sudo=sudo, privileged=True)
    if engine == "postgresql":
        login = pg_source.credential_of(credential)  # type: ignore[arg-type]
        return name in pg_probe.parse_databases(await _pg_sql(ctx, login, pg_probe.DATABASES_SQL, "list"))
    my_login = mysql_source.credential_of(credential)  # type: ignore[arg-type]
    listed = await _my_sql(ctx, client, my_login, my_probe.DATABASES_SQL, "list")
    return name in my_probe.parse_databases(listed, include_system=True)


# --- PostgreSQL globals (roles) ------------------------------------------------------------------------------
# ``pg_dumpall --globals-only`` (the chain's ``globals`` archive, ``globals.sql``) holds the server's roles. Roles are
# server-wide, so restoring them is an admin's option, and it only ever *adds*: a role that exists on the target
# server is reported and left exactly as it is (none of its statements run), nothing is dropped. The script is read
# (bounded) and rebuilt from an allow-list of pg_dumpall's one-line statements about new roles; everything else
# (tablespaces, per-database settings, psql meta-commands, unknown lines) is skipped and counted. It runs in one
# transaction through psql's stdin (password hashes never on a command line); the first error rolls it all back.

GLOBALS_FILE = "globals.sql"
GLOBALS_MAX_BYTES = 16 * 1024 * 1024
_IDENT = r'(?:"(?:[^"]|"")+"|[a-z_][a-z0-9_$]*)'
_ROLE_LINE = re.compile(rf"^(?:CREATE ROLE ({_IDENT});|ALTER ROLE ({_IDENT}) (?:WITH|SET) .*;|"
                        rf"COMMENT ON ROLE ({_IDENT}) IS '.*';)$")  # fmt: skip
_GRANT_LINE = re.compile(rf"^GRANT ({_IDENT}) TO ({_IDENT})((?: WITH [A-Z]+ (?:TRUE|FALSE|OPTION),?)*)"
                         rf"(?: GRANTED BY {_IDENT})?;$")  # fmt: skip
_PLAIN = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_ .,=()-")


def one_statement(line: str) -> bool:
    """Whether ``line`` is exactly one SQL statement ending at its last character: outside ``'…'`` strings and
    ``"…"`` identifiers only plain characters (no ``;``, ``$``-quotes, backslashes, ``E''`` strings, comments or
    psql meta-commands), so an archive's script cannot smuggle a second statement behind an allowed one."""
    if not line.endswith(";"):
        return False
    quote, i, body = "", 0, line[:-1]
    while i < len(body):
        ch = body[i]
        if quote:
            if ch == quote and body[i + 1:i + 2] == quote:
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"" and (ch == '"' or i == 0 or body[i - 1] in " (,="):
            quote = ch
        elif ch not in _PLAIN or body[i:i + 2] == "--":
            return False
        i += 1
    return not quote
_SETTING_LINE = re.compile(r"^SET (?:client_encoding|standard_conforming_strings|default_transaction_read_only) = "
                           r"[a-zA-Z0-9_']+;$")  # fmt: skip


@dataclass(frozen=True)
class GlobalsResult:
    """What a globals restore did: roles created, roles that existed (left unchanged), memberships granted, and
    how many statements were skipped (tablespaces, per-database settings, anything not about a new role)."""

    created: tuple[str, ...]
    existing: tuple[str, ...]
    memberships: int
    skipped: int

    def as_dict(self) -> dict[str, object]:
        return {"roles_created": list(self.created), "roles_existing": list(self.existing),
                "memberships": self.memberships, "skipped": self.skipped}  # fmt: skip


def unquote_ident(text: str) -> str:
    return text[1:-1].replace('""', '"') if text.startswith('"') else text


def roles_script(script: str, existing: set[str]) -> tuple[list[str], GlobalsResult]:
    """Given pg_dumpall's globals script and the roles the target has, return the statements to run (settings and
    the allow-listed statements about roles that do not exist there) and what they do."""
    lines = script.splitlines()
    dumped = [unquote_ident(m.group(1)) for m in map(re.compile(rf"^CREATE ROLE ({_IDENT});$").match, lines) if m]
    new = [name for name in dict.fromkeys(dumped) if name not in existing]
    kept, memberships, skipped = [], 0, 0
    for line in lines:
        if not line.strip() or line.startswith("--"):
            continue
        if not one_statement(line):
            skipped += 1
            continue
        role = _ROLE_LINE.match(line)
        grant = _GRANT_LINE.match(line)
        if _SETTING_LINE.match(line):
            kept.append(line)
        elif role and unquote_ident(next(g for g in role.groups() if g)) in new:
            kept.append(line)
        elif grant and unquote_ident(grant.group(2)) in new and (unquote_ident(grant.group(1)) in existing
                                                                 or unquote_ident(grant.group(1)) in new):
            kept.append(f"GRANT {grant.group(1)} TO {grant.group(2)}{grant.group(3)};")  # the grantor: who restores
            memberships += 1
        else:
            skipped += 1
    found = tuple(sorted(name for name in dict.fromkeys(dumped) if name in existing))
    return kept, GlobalsResult(tuple(new), found, memberships, skipped)


async def read_globals(transport: Transport, repo: Repo, archive: str, *, borg: str = "borg",
                       timeout: float | None = None) -> str:  # fmt: skip
    """The ``globals.sql`` of ``archive`` (bounded: a globals script is small; a larger one is refused)."""
    argv = extract_argv(repo, archive, GLOBALS_FILE, borg)
    result = await transport.run(repo.command(argv), env=repo.env(), secret_env=repo.secret_env() or None,
                                 timeout=timeout)  # fmt: skip
    if not result.ok:
        borg_result = outcome_of(result)
        raise RestoreFailed("extract", f"Reading {GLOBALS_FILE} from {archive} failed: {borg_result.reason}")
    if len(result.stdout) > GLOBALS_MAX_BYTES:
        raise RestoreRefused(f"{GLOBALS_FILE} in {archive} is larger than {GLOBALS_MAX_BYTES} bytes: not a globals "
                             "script of pg_dumpall; restore roles by hand.")  # fmt: skip
    return result.stdout.decode("utf-8", "replace")


async def restore_pg_globals(
    transport: Transport, repo: Repo, archive: str, credential: DbCredential | pg_probe.PgCredential, *,
    borg: str = "borg", sudo: bool = False, timeout: float | None = None,
) -> GlobalsResult:  # fmt: skip
    """Create the roles of ``archive``'s globals script that the target server does not have (see above); existing
    roles are reported, never altered or dropped. Needs a login that may create roles (a superuser, or CREATEROLE)."""
    login = pg_source.credential_of(credential)
    ctx = ProbeContext(transport, sudo=sudo, privileged=True)
    script = await read_globals(transport, repo, archive, borg=borg, timeout=timeout)
    listed = await _pg_sql(ctx, login, "SELECT rolname FROM pg_roles", "globals")
    existing = {name.strip("\n") for name in listed.split("\x00") if name.strip("\n")}
    statements, result = roles_script(script, existing)
    if not result.created:
        return result
    argv = [*pg_probe.psql_argv(login, "")]
    at = len(argv) - 1 - argv[::-1].index("-c")  # psql's own -c (peer access wraps it in ``sh -c``)
    argv[at:at + 2] = ["--single-transaction", "-f", "-"]
    env = {"PGCONNECT_TIMEOUT": "30", "LC_ALL": "C", **pg_source.secret_env(login)}
    done = await ctx.run(argv, what="psql (roles)", stdin=("\n".join(statements) + "\n").encode(), secret_env=env,
                         timeout=timeout or 120, privileged=login.os_user is not None, check=False)  # fmt: skip
    if not done.ok:
        detail = redact(last_line(done.err) or done.describe_failure(), _secrets_of(login))
        raise RestoreFailed("globals", f"Creating the roles failed, none was created: {detail}.",
                            "Read psql's message: a login without CREATEROLE, or a role created meanwhile.")
    return result


# --- MongoDB -------------------------------------------------------------------------------------------------
# A per-database ``mongodump --archive`` (``<db>.archive`` in a ``mongo-<db>`` archive) is restored into a new
# database name with ``mongorestore --archive --nsInclude=<src>.* --nsFrom=<src>.* --nsTo=<target>.*`` in the same
# pipe as the SQL engines. mongorestore's stdin is the dump, so the password reaches it as a YAML config on fd 5
# (:data:`MONGO_WITH_CONFIG`, the pattern of MySQL's option file). The proof: mongorestore's success, then documents
# per collection counted with ``mongosh --quiet --eval`` (:data:`MONGO_COUNTS`; the database name and the login
# arrive as environment variables through ``secret_env``, never in the script). An existing target is refused:
# mongorestore only inserts, so restoring into a database that has data would mix the two.

MONGO_MAX_NAME = 63
MONGO_WITH_CONFIG = r"""p=${BACKUP_BOT_MONGO_PASSWORD-}; unset BACKUP_BOT_MONGO_PASSWORD
exec 6<&0
printf 'password: %s\n' "$p" | { exec 5<&0 0<&6 6<&-; exec "$@"; }
"""
MONGO_COUNTS = r"""
const env = process.env;
if (env.BW_MONGO_USER)
  db.getSiblingDB(env.BW_MONGO_AUTHDB || 'admin').auth(env.BW_MONGO_USER, env.BW_MONGO_PASSWORD || '');
const listed = db.getSiblingDB('admin').adminCommand({listDatabases: 1, nameOnly: true});
const names = listed.databases.map(d => d.name);
print('@exists ' + EJSON.stringify(names.includes(env.BW_TARGET)));
if (names.includes(env.BW_TARGET)) {
  const t = db.getSiblingDB(env.BW_TARGET);
  for (const c of t.getCollectionNames().sort())
    print('@count ' + EJSON.stringify({c: c, n: t.getCollection(c).countDocuments({})}));
}
print('@end');
"""


def mongo_counts_parse(text: str) -> tuple[bool, dict[str, int]]:
    """``(target exists, documents per collection)`` from :data:`MONGO_COUNTS`'s labelled lines; a cut-off run
    (no ``@end``) raises :class:`RestoreFailed`."""
    exists, counts, ended = False, {}, False
    for line in text.splitlines():
        label, _, payload = line.strip().partition(" ")
        try:
            if label == "@exists":
                exists = json.loads(payload) is True
            elif label == "@count":
                item = json.loads(payload)
                counts[str(item["c"])] = int(item["n"])
        except (ValueError, KeyError, TypeError):
            raise RestoreFailed("verify", f"mongosh printed a line that is not a count: {line[:200]!r}.") from None
        ended = ended or label == "@end"
    if not ended:
        raise RestoreFailed("verify", "mongosh's output was cut short: the documents could not be counted.")
    return exists, counts


async def mongo_counts(transport: Transport, credential: Any, database: str, *, sudo: bool = False,
                       timeout: float = 60.0) -> tuple[bool, dict[str, int]]:  # fmt: skip
    """Whether ``database`` exists, and documents per collection in it (``mongosh --quiet --eval``)."""
    login = mongo_source.credential_of(credential)
    argv = ["mongosh", "--quiet", "--norc", mongo_probe.connection_uri(login, 10.0), "--eval", MONGO_COUNTS]
    result = await transport.run(argv, secret_env={**mongo_probe.secret_env(login), "BW_TARGET": database},
                                 timeout=timeout, sudo=sudo)  # fmt: skip
    if not result.ok:
        secret = login.password.get_secret_value() if login.password else None
        raise RestoreFailed("verify", redact(f"mongosh failed: {last_line(result.err) or result.describe_failure()}",
                                             [secret]))  # fmt: skip
    return mongo_counts_parse(result.out)


def mongorestore_argv(login: Any, source: str, target: str) -> tuple[str, ...]:
    """``mongorestore --archive`` re-targeting ``source.*`` to ``target.*``; through :data:`MONGO_WITH_CONFIG`
    (``--config=/dev/fd/5``) when the login has a password."""
    auth: tuple[str, ...] = ()
    if login.user is not None:
        auth = (f"--username={login.user}", f"--authenticationDatabase={login.auth_source}")
    argv = ("mongorestore", f"--host={login.host}", f"--port={login.port}", *auth, "--archive",
            f"--nsInclude={source}.*", f"--nsFrom={source}.*", f"--nsTo={target}.*")  # fmt: skip
    if login.user is not None and login.password is not None:
        return ("sh", "-c", MONGO_WITH_CONFIG, "sh", argv[0], "--config=/dev/fd/5", *argv[1:])
    return argv


async def restore_mongodb(
    transport: Transport, repo: Repo, dump: DumpRef, target: str, credential: Any, *,
    borg: str = "borg", sudo: bool = False, timeout: float | None = None,
) -> RestoreResult:  # fmt: skip
    """Restore a per-database ``mongodump --archive`` into the new database ``target`` (see above); ``tables`` of
    the result are documents per collection counted after the restore."""
    started = time.monotonic()
    login = mongo_source.credential_of(credential)
    name, source = await resolve_dump(transport, repo, dump, borg=borg, timeout=timeout)
    if name == "mongodump.archive":
        raise RestoreRefused("This archive holds the whole instance (every database): restore it with mongorestore "
                             "by hand; the bot restores one database's archive into a new name.")  # fmt: skip
    check_target(target, source, overwrite=False, limit=MONGO_MAX_NAME)
    if any(ch in target for ch in '/\\. "$*<>:|?'):
        raise RestoreRefused(f"{target!r} cannot be a MongoDB database name (no / \\ . space \" $ * < > : | ?).")
    exists, _ = await mongo_counts(transport, login, target, sudo=sudo)
    if exists:
        raise RestoreRefused(f"The database {target} already exists; choose a new name (mongorestore would mix "
                             "the dump into its data).")  # fmt: skip
    producer = extract_argv(repo, dump.archive, name, borg)
    result = await run_pipe(transport, repo, (producer, (), mongorestore_argv(login, source, target)),
                            mongo_source.secret_env(login), sudo=sudo, timeout=timeout)  # fmt: skip
    failure = pipe_failure(result, producer, "mongorestore",
                           "Read mongorestore's message: a login without the restore role, or a server older "
                           "than the dump's are the usual causes.")  # fmt: skip
    if failure is not None:
        failure.reason = redact(failure.reason, [login.password.get_secret_value() if login.password else None])
        failure.cleanup = f"The database {target} may hold part of the dump: drop it before trying again."
        raise failure
    _, counts = await mongo_counts(transport, login, target, sudo=sudo)
    return RestoreResult("mongodb", target, source, True, time.monotonic() - started, counts)
