"""MySQL/MariaDB on a server: running? which flavour and version, where the data lives, how to log in,
which databases, and which tables are not transactional (so ``--single-transaction`` cannot make them
consistent).

Credentials are discovered in the seed's order (``detectMySQLCredentials``): ``/etc/mysql/debian.cnf``
(root-only, read with privileges), the login user's ``~/.my.cnf``, root through the local socket
(``unix_socket`` authentication, the default for root on Debian/Ubuntu MariaDB), then what the person typed.
The first that logs in wins; every attempt is reported, so "debian.cnf does not exist" is visible.

How the client gets the password: ``mariadb``/``mysql --defaults-file=/dev/stdin`` with an option file on
stdin (``--defaults-file`` must be the first option). Not ``--defaults-extra-file``: that one is read
*before* ``~/.my.cnf``, so a login user's own ``~/.my.cnf`` would silently override the credential under
test (checked with MariaDB 10.11's ``--print-defaults``). The option file ``!include``s the global files
(``/etc/my.cnf``, ``/etc/mysql/my.cnf``; missing ones are skipped) so the server's socket path is still
found. User, host, port, socket and database go on the command line as ``--name=value`` arguments.

Output: ``--batch --skip-column-names`` prints tab-separated rows with tabs, newlines and backslashes in
values escaped (``\\t``, ``\\n``, ``\\\\``), so a database name with any character parses exactly. Every row
starts with a fixed label, and one query per section avoids UNION collation conflicts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

from pydantic import SecretStr

from bot.probes.base import Absent, Model, ProbeContext, ProbeError, missing_program
from bot.probes.dbcheck import ConnectFailure, DbCredential, FailureKind, last_line, redact

Source = Literal["debian.cnf", "my.cnf", "socket", "given"]
Flavour = Literal["mariadb", "mysql", "percona"]

DEBIAN_CNF = "/etc/mysql/debian.cnf"
MY_CNF = ".my.cnf"  # relative to the login user's home (see READ_FILE)
SYSTEM_SCHEMAS = frozenset({"information_schema", "performance_schema", "sys", "mysql"})
# Engines whose tables a `--single-transaction` dump sees consistently. BLACKHOLE stores nothing, so it
# cannot be inconsistent either.
TRANSACTIONAL_ENGINES = ("INNODB", "XTRADB", "TOKUDB", "ROCKSDB", "NDBCLUSTER", "NDB", "BLACKHOLE")
GLOBAL_OPTION_FILES = ("/etc/my.cnf", "/etc/mysql/my.cnf")
REACHED: frozenset[FailureKind] = frozenset({"auth_failed", "host_not_allowed", "access_denied", "unknown_database"})

FIND_CLIENT = (
    'for c in mariadb mysql; do if command -v "$c" >/dev/null 2>&1; then echo "$c"; exec "$c" --version; fi; '
    "done; exit 127"
)
# `cd` alone goes to $HOME, so a relative path is the login user's file; exit 3 = no such file.
READ_FILE = 'cd 2>/dev/null; [ -e "$1" ] || exit 3; exec cat -- "$1"'
ABSENT_FILE = 3

_ENGINES_SQL = ", ".join(f"'{e}'" for e in TRANSACTIONAL_ENGINES)
INFO_SQL = (
    "SELECT 'server', @@version, @@version_comment, @@datadir, CURRENT_USER();\n"
    "SELECT 'database', schema_name FROM information_schema.schemata;\n"
    "SELECT 'table', table_schema, table_name, engine FROM information_schema.tables "
    "WHERE table_type NOT IN ('VIEW', 'SYSTEM VIEW') AND engine IS NOT NULL "
    "AND table_schema NOT IN ('information_schema', 'performance_schema') "
    f"AND UPPER(engine) NOT IN ({_ENGINES_SQL});\n"
    "SELECT 'end';"
)
DATABASES_SQL = "SELECT 'database', schema_name FROM information_schema.schemata;\nSELECT 'end';"


class MySQLCredential(Model):
    """How to log in. ``None`` fields are left to the client (and the global option files).

    ``as_root``: run the client as root (socket authentication maps the OS user to the database user).
    The password is a :class:`SecretStr`: its repr, str and JSON form are ``**********``.
    """

    source: Source
    user: str | None = None
    password: SecretStr | None = None
    host: str | None = None
    port: int | None = None
    socket: str | None = None
    as_root: bool = False

    @property
    def where(self) -> str:
        if self.host and self.host != "localhost":
            return f"{self.host}:{self.port or 3306}"
        return f"the local socket {self.socket}" if self.socket else "the local socket"


class CredentialAttempt(Model):
    """One step of the discovery: was something found there, did it log in, and why not."""

    source: Source
    found: bool
    ok: bool = False
    failure: FailureKind | None = None
    note: str = ""


class NonTransactionalTable(Model):
    database: str
    table: str
    engine: str


class MySQLServer(Model):
    flavour: Flavour
    version: str
    version_comment: str
    datadir: str
    current_user: str
    databases: tuple[str, ...]
    non_transactional: tuple[NonTransactionalTable, ...]

    @property
    def non_transactional_by_database(self) -> dict[str, tuple[NonTransactionalTable, ...]]:
        grouped: dict[str, list[NonTransactionalTable]] = {}
        for table in self.non_transactional:
            grouped.setdefault(table.database, []).append(table)
        return {name: tuple(tables) for name, tables in grouped.items()}


class MySQLInfo(Model):
    client: str  # "mariadb" or "mysql"
    client_version: str
    running: bool
    server: MySQLServer | None = None
    credential: MySQLCredential | None = None
    attempts: tuple[CredentialAttempt, ...] = ()
    note: str = ""


# --- option files (pure) -------------------------------------------------------------------------------------

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "s": " ", "\\": "\\", '"': '"', "'": "'"}


def _unescape_option(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            out.append(_ESCAPES.get(value[i + 1], value[i + 1]))
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def _option_value(raw: str) -> str:
    """A value as MySQL reads it: quoted (escapes inside), or up to an unquoted ``#`` comment."""
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] in "'\"" and raw.endswith(raw[0]):
        return _unescape_option(raw[1:-1])
    return _unescape_option(raw.split("#", 1)[0].strip())


def parse_option_file(text: str, section: str = "client") -> dict[str, str]:
    """``key -> value`` of one ``[section]`` of a MySQL option file (keys lower-case, ``_`` as ``-``)."""
    values: dict[str, str] = {}
    current: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;!":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1].strip().lower()
            continue
        if current == section.lower():
            key, sep, value = line.partition("=")
            values[key.strip().lower().replace("_", "-")] = _option_value(value) if sep else ""
    return values


def credential_from_option_file(text: str, source: Source) -> MySQLCredential | None:
    """The ``[client]`` login in ``text``, or None when the file names no user, password or socket."""
    values = parse_option_file(text)
    if not any(key in values for key in ("user", "password", "socket")):
        return None
    port = values.get("port", "")
    return MySQLCredential(
        source=source,
        user=values.get("user") or None,
        password=SecretStr(values["password"]) if "password" in values else None,
        host=values.get("host") or None,
        port=int(port) if port.isdigit() else None,
        socket=values.get("socket") or None,
    )


def quote_option(value: str) -> str:
    """``value`` as a double-quoted option-file value (backslash and quote escaped)."""
    if any(ch in value for ch in "\n\r\x00"):
        raise ProbeError("The password contains a line break or NUL byte, which a MySQL option file cannot carry.")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def option_file_text(credential: MySQLCredential) -> str:
    """The option file fed on stdin: the global files (for the socket path), then the password if any."""
    lines = [f"!include {path}" for path in GLOBAL_OPTION_FILES] + ["[client]"]
    if credential.password is not None:
        lines.append("password=" + quote_option(credential.password.get_secret_value()))
    return "\n".join(lines) + "\n"


def client_argv(
    client: str, credential: MySQLCredential, sql: str, *, database: str | None = None, connect_timeout: float = 10
) -> list[str]:
    """The client's argument list; every user-supplied value is one ``--name=value`` argument."""
    argv = [
        client,
        "--defaults-file=/dev/stdin",
        "--batch",
        "--skip-column-names",
        f"--connect-timeout={max(1, round(connect_timeout))}",
    ]
    for name, value in (
        ("user", credential.user),
        ("host", credential.host),
        ("socket", credential.socket),
        ("port", credential.port),
        ("database", database),
    ):
        if value is not None:
            argv.append(f"--{name}={value}")
    return [*argv, "-e", sql]


# --- output (pure) -------------------------------------------------------------------------------------------

_BATCH_ESCAPES = {"t": "\t", "n": "\n", "\\": "\\", "0": "\x00"}


def unescape_batch(field: str) -> str:
    """Undo ``--batch`` escaping of one field (``\\t``, ``\\n``, ``\\\\``, ``\\0``)."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 1 < len(field) and field[i + 1] in _BATCH_ESCAPES:
            out.append(_BATCH_ESCAPES[field[i + 1]])
            i += 2
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _rows(text: str, what: str) -> list[list[str]]:
    rows = [[unescape_batch(f) for f in line.split("\t")] for line in text.splitlines() if line]
    if not rows or rows[-1] != ["end"]:
        raise ProbeError(
            f"The MySQL/MariaDB client printed something unexpected for {what}; the output was cut "
            "short or is not from a MySQL-compatible server."
        )
    return rows


def flavour_of(version: str, comment: str) -> Flavour:
    if "mariadb" in version.lower() or "mariadb" in comment.lower():
        return "mariadb"
    return "percona" if "percona" in comment.lower() else "mysql"


def parse_databases(text: str, *, include_system: bool = False) -> tuple[str, ...]:
    """Database names from :data:`DATABASES_SQL`'s output (system schemas left out unless asked)."""
    names = [row[1] for row in _rows(text, "the database list") if row[0] == "database" and len(row) == 2]
    return tuple(sorted(n for n in names if include_system or n not in SYSTEM_SCHEMAS))


def parse_info(text: str, *, include_system: bool = False) -> MySQLServer:
    """Parse :data:`INFO_SQL`'s output; a foreign or truncated output raises :class:`ProbeError`."""
    rows = _rows(text, "the server query")
    server = next((row for row in rows if row[0] == "server" and len(row) == 5), None)
    if server is None:
        raise ProbeError(
            "The MySQL/MariaDB server query returned no version row; the server may not be MySQL-compatible."
        )
    _, version, comment, datadir, user = server
    tables = tuple(
        NonTransactionalTable(database=row[1], table=row[2], engine=row[3])
        for row in rows
        if row[0] == "table" and len(row) == 4 and (include_system or row[1] not in SYSTEM_SCHEMAS)
    )
    return MySQLServer(
        flavour=flavour_of(version, comment),
        version=version,
        version_comment=comment,
        datadir=datadir,
        current_user=user,
        databases=parse_databases(text, include_system=include_system),
        non_transactional=tuple(sorted(tables, key=lambda t: (t.database, t.table))),
    )


_CODE = re.compile(r"(?:ERROR|error:)\s*(\d{4})\b")
_ERRNO = re.compile(r"(?:system error: |\()(\d+)")
_KINDS: dict[str, FailureKind] = {
    "1045": "auth_failed",  # ER_ACCESS_DENIED_ERROR (wrong password, unknown user)
    "1698": "auth_failed",  # ER_ACCESS_DENIED_NO_PASSWORD_ERROR (unix_socket mismatch, MariaDB unknown user)
    "1130": "host_not_allowed",  # ER_HOST_NOT_PRIVILEGED
    "1044": "access_denied",  # ER_DBACCESS_DENIED_ERROR
    "1049": "unknown_database",  # ER_BAD_DB_ERROR
    "2005": "unknown_host",  # CR_UNKNOWN_HOST
}


def classify_error(stderr: str) -> FailureKind:
    """The failure kind of a client error (``ERROR 2003 (HY000): Can't connect … (111)``)."""
    match = _CODE.search(stderr)
    if not match:
        return "other"
    code = match.group(1)
    if code in _KINDS:
        return _KINDS[code]
    errno = _ERRNO.findall(stderr[match.end() :])
    timed_out = bool(errno) and errno[-1] in {"110", "60"}  # ETIMEDOUT (Linux, BSD)
    if code in {"2002", "2003"}:
        return "timeout" if timed_out else "refused"
    return "timeout" if code == "2013" and timed_out else "other"


_SUMMARY: dict[FailureKind, str] = {
    "refused": "Nothing accepts MySQL connections at {where}",
    "unknown_host": "The host name of {where} does not resolve on the server",
    "timeout": "The MySQL server at {where} did not answer in time",
    "auth_failed": "The MySQL server at {where} rejected the login",
    "host_not_allowed": "The MySQL server at {where} does not accept this user from this address",
    "access_denied": "The user may not use the requested database",
    "unknown_database": "The requested database does not exist",
    "other": "The MySQL client failed",
}


def failure(stderr: str, credential: MySQLCredential) -> ConnectFailure:
    """A :class:`ConnectFailure` for a failed client run: a summary plus the client's own last line."""
    kind = classify_error(stderr)
    summary = _SUMMARY.get(kind, _SUMMARY["other"]).format(where=credential.where)
    secret = credential.password.get_secret_value() if credential.password else None
    return ConnectFailure(kind, redact(f"{summary} ({last_line(stderr)}).", [secret]))


# --- running commands ----------------------------------------------------------------------------------------


async def find_client(ctx: ProbeContext) -> tuple[str, str]:
    """``(program, its --version line)``, preferring ``mariadb`` (MariaDB 11 deprecates ``mysql``)."""
    result = await ctx.run(["sh", "-c", FIND_CLIENT], what="Looking for the MySQL client", check=False)
    lines = result.out.strip().splitlines()
    if result.exit_status == 127 or not lines:
        raise Absent("mysql")
    return lines[0].strip(), (lines[1].strip() if len(lines) > 1 else "")


async def run_sql(
    ctx: ProbeContext,
    client: str,
    credential: MySQLCredential,
    sql: str,
    *,
    database: str | None = None,
    timeout: float = 10.0,
) -> str:
    """Run ``sql`` with ``credential``; a failed login or query raises :class:`ConnectFailure`."""
    if credential.as_root and not ctx.privileged:
        raise ConnectFailure("auth_failed", "Socket authentication as root needs a root login or passwordless sudo.")
    result = await ctx.run(
        client_argv(client, credential, sql, database=database, connect_timeout=timeout),
        what="The MySQL client",
        stdin=option_file_text(credential).encode(),
        timeout=timeout + 15,
        privileged=credential.as_root,
        check=False,
    )
    if result.ok:
        return result.out
    if missing_program(result):
        raise Absent(client)
    raise failure(result.err, credential)


async def read_option_file(ctx: ProbeContext, path: str, source: Source) -> tuple[MySQLCredential | None, str]:
    """``(credential or None, note)`` from an option file on the server (debian.cnf with privileges)."""
    privileged = path == DEBIAN_CNF
    result = await ctx.run(
        ["sh", "-c", READ_FILE, "sh", path], what=f"Reading {path}", privileged=privileged, check=False
    )
    shown = path if path.startswith("/") else f"~/{path}"
    if result.exit_status == ABSENT_FILE:
        return None, f"{shown} does not exist."
    if not result.ok:
        need = " (it is readable by root only: connect as root or allow passwordless sudo)" if privileged else ""
        return None, f"{shown} could not be read{need}: {last_line(result.err) or 'no reason given'}."
    credential = credential_from_option_file(result.out, source)
    if credential is None:
        return None, f"{shown} has no [client] user, password or socket."
    # debian.cnf is meant for root-run tools; MariaDB >= 10.4's version names root with no password at all,
    # which only socket authentication as the system root accepts.
    credential = credential.model_copy(update={"as_root": privileged})
    return credential, f"Found a login for {credential.user or 'the default user'} in {shown}."


Candidate = tuple[Source, MySQLCredential | None, str]
OPTION_FILES: tuple[tuple[str, Source], ...] = ((DEBIAN_CNF, "debian.cnf"), (MY_CNF, "my.cnf"))


async def _candidates(ctx: ProbeContext, given: MySQLCredential | None) -> list[Candidate]:
    """Every place a login may come from, in the seed's order, with a note for the ones that have none."""
    found: list[Candidate] = []
    for path, source in OPTION_FILES:
        credential, note = await read_option_file(ctx, path, source)
        found.append((source, credential, note))
    if ctx.privileged:
        root = MySQLCredential(source="socket", user="root", as_root=True)
        found.append(("socket", root, "root through the local socket, without a password."))
    else:
        found.append(("socket", None, "Not tried: socket authentication as root needs root or passwordless sudo."))
    if given is not None:
        found.append(("given", given.model_copy(update={"source": "given"}), "The login that was entered."))
    return found


async def probe(
    ctx: ProbeContext, given: MySQLCredential | None = None, *, include_system: bool = False, timeout: float = 10.0
) -> MySQLInfo:
    """Discover a working login and describe the server; see the module docstring for the order."""
    client, client_version = await find_client(ctx)
    attempts: list[CredentialAttempt] = []
    reached = False
    for source, credential, note in await _candidates(ctx, given):
        if credential is None:
            attempts.append(CredentialAttempt(source=source, found=False, note=note))
            continue
        try:
            out = await run_sql(ctx, client, credential, INFO_SQL, timeout=timeout)
        except ConnectFailure as exc:
            reached = reached or exc.kind in REACHED
            attempts.append(CredentialAttempt(source=source, found=True, failure=exc.kind, note=exc.message))
            continue
        attempts.append(CredentialAttempt(source=source, found=True, ok=True, note=note))
        server = parse_info(out, include_system=include_system)
        return MySQLInfo(
            client=client,
            client_version=client_version,
            running=True,
            server=server,
            credential=credential,
            attempts=tuple(attempts),
        )
    running = reached or await _answers(ctx, client, timeout)
    return MySQLInfo(
        client=client,
        client_version=client_version,
        running=running,
        attempts=tuple(attempts),
        note=_no_login_note(running),
    )


async def _answers(ctx: ProbeContext, client: str, timeout: float) -> bool:
    """Is a server listening at the client's default address? (An access-denied answer counts as yes.)"""
    try:
        await run_sql(ctx, client, MySQLCredential(source="given"), DATABASES_SQL, timeout=timeout)
    except ConnectFailure as exc:
        return exc.kind in REACHED
    return True


def _no_login_note(running: bool) -> str:
    if not running:
        return (
            "No MySQL/MariaDB server answers on this server's default socket or port. Start it, or enter the "
            "host and port it listens on."
        )
    return (
        "MySQL/MariaDB is running, but no login was found that works. Enter a user and password for backups "
        "(it needs SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES and RELOAD or PROCESS)."
    )


def credential_from(db: DbCredential) -> MySQLCredential:
    """A stored credential (the seed's ``database_credentials`` row) as a client login."""
    if db.auth_method == "socket":
        return MySQLCredential(source="given", user=db.user or "root", socket=db.socket, as_root=True)
    return MySQLCredential(
        source="given", user=db.user, password=db.password, host=db.host or None, port=db.port, socket=db.socket
    )


async def check_databases(ctx: ProbeContext, db: DbCredential, *, timeout: float = 10.0) -> tuple[str, ...]:
    """For :func:`bot.probes.dbcheck.check`: log in with ``db`` and list its (non-system) databases."""
    client, _ = await find_client(ctx)
    out = await run_sql(ctx, client, credential_from(db), DATABASES_SQL, database=db.database, timeout=timeout)
    return parse_databases(out)


def tables_by_engine(tables: Iterable[NonTransactionalTable]) -> dict[str, int]:
    """How many non-transactional tables per engine (for the verdict's sentence)."""
    counts: dict[str, int] = {}
    for table in tables:
        counts[table.engine] = counts.get(table.engine, 0) + 1
    return counts
