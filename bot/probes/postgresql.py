"""PostgreSQL on a server: running? which version, which clusters, where the data lives, how the bot gets in,
and which databases there are.

Clusters come from Debian's ``pg_lsclusters`` where it exists (Debian/Ubuntu run several clusters side by
side, each with its own port and data directory); elsewhere the data directory comes from SQL
(``pg_settings``, which hides it from users without ``pg_read_all_settings`` instead of failing).

Access is tried in this order, first success wins, every attempt reported:

1. *peer* as the ``postgres`` system user — ``runuser -u postgres -- psql`` on the Unix socket. ``runuser``
   rather than ``sudo -u postgres``: it is part of util-linux (present wherever PostgreSQL's Debian or RPM
   packages are), needs no sudoers entry, asks no password and has no ``requiretty``; for a non-root login
   with passwordless sudo the probe context wraps it in ``sudo -n`` like any privileged command.
2. the login user's ``~/.pgpass``: only user names, hosts and ports are read from it; the password stays in
   the file and libpq reads it itself (``pg_dump`` will do the same), so it never passes through the bot.
3. given credentials: ``PGPASSWORD`` through the transport's ``secret_env`` (stdin, never argv).

``psql -X -q -w -A -t -F <tab> -0``: no ``~/.psqlrc``, never a password prompt (a prompt would hang), one
record per NUL byte and a tab between the fixed key and its value, so database names with any character
(tabs and newlines included) parse exactly. The database to connect to goes in ``-d`` as a quoted
``dbname='…'`` conninfo, because psql treats a bare ``-d`` value containing ``=`` as a connection string.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import SecretStr

from bot.probes.base import Absent, Model, ProbeContext, ProbeError, missing_program
from bot.probes.dbcheck import ConnectFailure, DbCredential, FailureKind, last_line, redact

Method = Literal["peer", "pgpass", "given"]
DEFAULT_PORT = 5432
PGPASS = ".pgpass"  # relative to the login user's home
LOCAL_HOSTS = frozenset({"*", "localhost", "127.0.0.1", "::1"})
REACHED: frozenset[FailureKind] = frozenset({"auth_failed", "host_not_allowed", "access_denied", "unknown_database"})

LSCLUSTERS = (
    "command -v pg_lsclusters >/dev/null 2>&1 || exit 127\n"
    "echo @json; pg_lsclusters --json 2>/dev/null; echo\n"
    "echo @text; pg_lsclusters --no-header"
)
READ_FILE = 'cd 2>/dev/null; [ -e "$1" ] || exit 3; exec cat -- "$1"'
ABSENT_FILE = 3

INFO_SQL = (
    "SELECT 'version_num', current_setting('server_version_num') "
    "UNION ALL SELECT 'version', current_setting('server_version') "
    "UNION ALL SELECT 'data_directory', coalesce((SELECT setting FROM pg_settings WHERE name = 'data_directory'), '') "
    "UNION ALL SELECT 'user', current_user::text "
    "UNION ALL SELECT 'superuser', (SELECT rolsuper::text FROM pg_roles WHERE rolname = current_user) "
    "UNION ALL SELECT 'database', datname::text FROM pg_database WHERE datallowconn AND NOT datistemplate"
)
DATABASES_SQL = "SELECT 'database', datname::text FROM pg_database WHERE datallowconn AND NOT datistemplate"


class PgCluster(Model):
    version: str
    name: str
    port: int | None
    status: str  # "online", "down", "online,recovery" …
    online: bool
    owner: str
    data_directory: str
    log: str


class PgCredential(Model):
    """How psql logs in. ``host=None``: the Unix socket (its default directory, or ``socket_dir``).
    ``os_user``: run psql as this system user (peer authentication). The password is a SecretStr."""

    method: Method
    user: str | None = None
    host: str | None = None
    port: int | None = None
    database: str = "postgres"
    password: SecretStr | None = None
    os_user: str | None = None

    @property
    def where(self) -> str:
        port = self.port or DEFAULT_PORT
        if self.host and not self.host.startswith("/"):
            return f"{self.host}:{port}"
        return f"the local socket (port {port})"


class AccessAttempt(Model):
    method: Method
    found: bool
    ok: bool = False
    failure: FailureKind | None = None
    note: str = ""


class PgPassEntry(Model):
    """One ``~/.pgpass`` line without its password (the password is never kept)."""

    host: str
    port: str
    database: str
    user: str


class PgServer(Model):
    version_num: int
    version: str
    data_directory: str | None  # None when this login may not see it
    current_user: str
    superuser: bool
    databases: tuple[str, ...]

    @property
    def major(self) -> int:
        return self.version_num // 10000 if self.version_num >= 100000 else self.version_num // 100


class PgInfo(Model):
    client_version: str
    running: bool
    port: int
    clusters: tuple[PgCluster, ...] = ()
    data_directory: str | None = None
    server: PgServer | None = None
    access: PgCredential | None = None
    attempts: tuple[AccessAttempt, ...] = ()
    note: str = ""


# --- pure parsers --------------------------------------------------------------------------------------------


def _sections(text: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line in ("@json", "@text"):
            current = sections.setdefault(line[1:], [])
        elif current is not None and line.strip():
            current.append(line)
    return sections


def _text_cluster(line: str) -> PgCluster:
    fields = line.split()
    if len(fields) < 6 or not re.fullmatch(r"\d+(\.\d+)?", fields[0]):
        raise ProbeError("pg_lsclusters printed a line that is not a cluster; its output format is unknown.")
    version, name, port, status, owner, data_directory = fields[:6]
    return PgCluster(
        version=version,
        name=name,
        port=int(port) if port.isdigit() else None,
        status=status,
        online=status.startswith("online"),
        owner=owner,
        data_directory=data_directory,
        log=" ".join(fields[6:]),
    )


def _json_clusters(lines: list[str]) -> dict[tuple[str, str], dict[str, Any]]:
    try:
        items = json.loads("".join(lines)) if lines else []
    except json.JSONDecodeError:
        return {}  # an old pg_lsclusters without --json printed nothing useful: the text is enough
    if not isinstance(items, list):
        return {}
    return {(str(i.get("version")), str(i.get("cluster"))): i for i in items if isinstance(i, dict)}


def parse_lsclusters(text: str) -> tuple[PgCluster, ...]:
    """Clusters from :data:`LSCLUSTERS`'s output: the text table, with exact paths and ports from the JSON
    form where ``pg_lsclusters --json`` exists (a data directory containing spaces is ambiguous in text)."""
    sections = _sections(text)
    if "text" not in sections:
        raise ProbeError("pg_lsclusters printed something unexpected; its output format is unknown.")
    exact = _json_clusters(sections.get("json", []))
    clusters = []
    for line in sections["text"]:
        cluster = _text_cluster(line)
        found = exact.get((cluster.version, cluster.name))
        if found:
            port = str(found.get("port", ""))
            cluster = cluster.model_copy(
                update={
                    "data_directory": found.get("pgdata") or cluster.data_directory,
                    "port": int(port) if port.isdigit() else cluster.port,
                    "online": bool(found.get("running", cluster.online)),
                }
            )
        clusters.append(cluster)
    return tuple(clusters)


def _unescape_pgpass(field: str) -> str:
    return re.sub(r"\\(.)", r"\1", field)


def parse_pgpass(text: str) -> tuple[PgPassEntry, ...]:
    """Entries of a ``.pgpass`` file (``host:port:database:user:password``, ``\\:`` and ``\\\\`` escaped),
    with the password dropped right here."""
    entries = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = re.split(r"(?<!\\):", line.replace("\\\\", "\x00"))
        if len(fields) < 5:
            continue
        host, port, database, user = (_unescape_pgpass(f.replace("\x00", "\\\\")) for f in fields[:4])
        entries.append(PgPassEntry(host=host, port=port, database=database, user=user))
    return tuple(entries)


def _records(text: str) -> list[tuple[str, str]]:
    return [(key, value) for key, _, value in (r.partition("\t") for r in text.split("\x00") if r.strip("\n"))]


def parse_databases(text: str) -> tuple[str, ...]:
    return tuple(sorted(value for key, value in _records(text) if key == "database"))


def parse_server(text: str) -> PgServer:
    """Parse :data:`INFO_SQL`'s output; anything else raises :class:`ProbeError`."""
    values = dict(_records(text))
    if not values.get("version_num", "").isdigit() or "user" not in values:
        raise ProbeError(
            "psql printed something unexpected for the server query; the server may not be "
            "PostgreSQL or the output was cut short."
        )
    return PgServer(
        version_num=int(values["version_num"]),
        version=values.get("version", "").split(" ")[0],
        data_directory=values.get("data_directory") or None,
        current_user=values["user"],
        superuser=values.get("superuser") == "true",
        databases=parse_databases(text),
    )


_PATTERNS: tuple[tuple[FailureKind, re.Pattern[str]], ...] = (
    ("unknown_database", re.compile(r'database ".*" does not exist')),
    ("access_denied", re.compile(r"permission denied for database|does not have CONNECT privilege")),
    ("host_not_allowed", re.compile(r"no pg_hba\.conf entry")),
    (
        "auth_failed",
        re.compile(
            r"authentication failed|no password supplied|is not permitted to log in|"
            r'role ".*" does not exist'
        ),
    ),
    ("timeout", re.compile(r"timeout expired")),
    ("unknown_host", re.compile(r"could not translate host name")),
    ("refused", re.compile(r"Connection refused|No such file or directory")),
)


def classify_error(stderr: str) -> FailureKind:
    """The failure kind of a psql/libpq error (English messages; psql runs with ``LC_ALL=C``)."""
    return next((kind for kind, pattern in _PATTERNS if pattern.search(stderr)), "other")


_SUMMARY: dict[FailureKind, str] = {
    "refused": "Nothing accepts PostgreSQL connections at {where}",
    "unknown_host": "The host name of {where} does not resolve on the server",
    "timeout": "PostgreSQL at {where} did not answer in time",
    "auth_failed": "PostgreSQL at {where} rejected the login",
    "host_not_allowed": "PostgreSQL at {where} has no pg_hba.conf rule for this user from this address",
    "access_denied": "The user may not connect to the requested database",
    "unknown_database": "The requested database does not exist",
    "other": "psql failed",
}


def failure(stderr: str, credential: PgCredential) -> ConnectFailure:
    """A :class:`ConnectFailure` for a failed psql run, with psql's own last line."""
    kind = classify_error(stderr)
    summary = _SUMMARY.get(kind, _SUMMARY["other"]).format(where=credential.where)
    if "has group or world access" in stderr:
        summary += "; ~/.pgpass is ignored because other users can read it (chmod 600 ~/.pgpass)"
    secret = credential.password.get_secret_value() if credential.password else None
    return ConnectFailure(kind, redact(f"{summary} ({_detail(stderr)}).", [secret]))


def _detail(stderr: str) -> str:
    """libpq's error line (``psql: error: … failed: FATAL: …``) rather than a trailing hint line."""
    lines = [line.strip() for line in stderr.splitlines() if re.search(r"error|FATAL", line, re.IGNORECASE)]
    return lines[-1][:300] if lines else last_line(stderr)


def conninfo_dbname(name: str) -> str:
    """``dbname='…'`` with libpq's quoting (backslash and single quote escaped)."""
    return "dbname='" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"


def psql_argv(credential: PgCredential, sql: str) -> list[str]:
    """psql's argument list; peer access runs it as ``os_user`` from ``/`` (the login's home may be
    unreadable for that user, which makes psql complain on stderr)."""
    argv = ["psql", "-X", "-q", "-w", "-A", "-t", "-F", "\t", "-0", "-v", "ON_ERROR_STOP=1"]
    for flag, value in (("-h", credential.host), ("-p", credential.port), ("-U", credential.user)):
        if value is not None:
            argv += [flag, str(value)]
    argv += ["-d", conninfo_dbname(credential.database), "-c", sql]
    if credential.os_user:
        argv = ["runuser", "-u", credential.os_user, "--", "sh", "-c", 'cd / && exec "$@"', "sh", *argv]
    return argv


# --- running commands ----------------------------------------------------------------------------------------


async def client_version(ctx: ProbeContext) -> str:
    """``psql --version`` (raises :class:`Absent` when psql is not installed)."""
    result = await ctx.run(["psql", "--version"], what="psql --version")
    return result.out.strip()


async def list_clusters(ctx: ProbeContext) -> tuple[PgCluster, ...]:
    """Debian-family clusters; ``()`` where ``pg_lsclusters`` does not exist."""
    result = await ctx.run(["sh", "-c", LSCLUSTERS], what="pg_lsclusters", check=False)
    if result.exit_status == 127:
        return ()
    if not result.ok:
        raise ProbeError(f"pg_lsclusters failed: {result.describe_failure()}.")
    return parse_lsclusters(result.out)


async def run_sql(ctx: ProbeContext, credential: PgCredential, sql: str, *, timeout: float = 10.0) -> str:
    """Run ``sql``; a failed login or query raises :class:`ConnectFailure` (password via ``secret_env``)."""
    if credential.os_user and not ctx.privileged:
        raise ConnectFailure(
            "auth_failed", f"Peer authentication as {credential.os_user} needs root or passwordless sudo."
        )
    # secret_env is the transport's only per-command environment channel, so the harmless settings ride along.
    env = {"PGCONNECT_TIMEOUT": str(max(2, round(timeout))), "LC_ALL": "C"}
    if credential.password is not None:
        env["PGPASSWORD"] = credential.password.get_secret_value()
    result = await ctx.run(
        psql_argv(credential, sql),
        what="psql",
        secret_env=env,
        timeout=timeout + 15,
        privileged=credential.os_user is not None,
        check=False,
    )
    if result.ok:
        return result.out
    if missing_program(result):
        raise Absent("runuser" if "runuser" in result.err and "psql" not in result.err else "psql")
    raise failure(result.err, credential)


async def read_pgpass(ctx: ProbeContext) -> tuple[tuple[PgPassEntry, ...], str]:
    """``(entries, note)`` of the login user's ``~/.pgpass``."""
    result = await ctx.run(["sh", "-c", READ_FILE, "sh", PGPASS], what="Reading ~/.pgpass", check=False)
    if result.exit_status == ABSENT_FILE:
        return (), "~/.pgpass does not exist."
    if not result.ok:
        return (), f"~/.pgpass could not be read: {last_line(result.err) or 'no reason given'}."
    entries = parse_pgpass(result.out)
    return entries, f"~/.pgpass has {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}."


def pgpass_logins(entries: tuple[PgPassEntry, ...], port: int, socket_dir: str | None) -> list[PgCredential]:
    """Logins worth trying from ``.pgpass``: local hosts, this port, a named user (at most three)."""
    logins = []
    for entry in entries:
        local = entry.host in LOCAL_HOSTS or (socket_dir is not None and entry.host == socket_dir)
        if local and entry.port in ("*", str(port)) and entry.user != "*":
            host = "localhost" if entry.host == "*" else entry.host
            database = entry.database if entry.database != "*" else "postgres"
            logins.append(PgCredential(method="pgpass", user=entry.user, host=host, port=port, database=database))
    return logins[:3]


Candidate = tuple[Method, PgCredential | None, str]


async def _candidates(
    ctx: ProbeContext, given: PgCredential | None, port: int, socket_dir: str | None
) -> list[Candidate]:
    """Every way in, in order (see the module docstring), with a note for the ones that do not apply."""
    found: list[Candidate] = []
    if ctx.privileged:
        peer = PgCredential(method="peer", os_user="postgres", host=socket_dir, port=port)
        found.append(("peer", peer, "Peer authentication as the postgres system user."))
    else:
        found.append(("peer", None, "Not tried: peer authentication as postgres needs root or passwordless sudo."))
    entries, note = await read_pgpass(ctx)
    logins = pgpass_logins(entries, port, socket_dir)
    found += [("pgpass", login, f"~/.pgpass entry for {login.user}@{login.host}.") for login in logins]
    if not logins:
        found.append(("pgpass", None, note if not entries else f"{note} None is for this server's port {port}."))
    if given is not None:
        found.append(("given", given.model_copy(update={"method": "given"}), "The login that was entered."))
    return found


async def probe(
    ctx: ProbeContext,
    given: PgCredential | None = None,
    *,
    port: int | None = None,
    socket_dir: str | None = None,
    timeout: float = 10.0,
) -> PgInfo:
    """Version, clusters, data directory, a working login and the databases of the cluster on ``port``
    (default: the first online cluster's port, else 5432)."""
    version = await client_version(ctx)
    try:
        clusters, cluster_note = await list_clusters(ctx), ""
    except ProbeError as exc:  # a broken pg_lsclusters must not hide the databases
        clusters, cluster_note = (), str(exc)
    port = port or next((c.port for c in clusters if c.online and c.port), None) or DEFAULT_PORT
    cluster = next((c for c in clusters if c.port == port), None)
    attempts, access, server, reached = await _first_login(ctx, given, port, socket_dir, timeout)
    known = {"client_version": version, "port": port, "clusters": clusters, "attempts": attempts}
    cluster_dir = cluster.data_directory if cluster else None
    if server is not None:
        return PgInfo(
            **known,
            running=True,
            server=server,
            access=access,
            note=cluster_note,
            data_directory=server.data_directory or cluster_dir,
        )
    running = reached or (cluster.online if cluster else await _answers(ctx, port, socket_dir))
    note = " ".join(filter(None, (_no_login_note(running, port), cluster_note)))
    return PgInfo(**known, running=running, data_directory=cluster_dir, note=note)


async def _first_login(
    ctx: ProbeContext, given: PgCredential | None, port: int, socket_dir: str | None, timeout: float
) -> tuple[tuple[AccessAttempt, ...], PgCredential | None, PgServer | None, bool]:
    """Try each way in until one works: ``(attempts, the login, the server's facts, a server answered)``."""
    attempts: list[AccessAttempt] = []
    reached = False
    for method, credential, note in await _candidates(ctx, given, port, socket_dir):
        if credential is None:
            attempts.append(AccessAttempt(method=method, found=False, note=note))
            continue
        try:
            server = parse_server(await run_sql(ctx, credential, INFO_SQL, timeout=timeout))
        except ConnectFailure as exc:
            reached = reached or exc.kind in REACHED
            attempts.append(AccessAttempt(method=method, found=True, failure=exc.kind, note=exc.message))
            continue
        attempts.append(AccessAttempt(method=method, found=True, ok=True, note=note))
        return tuple(attempts), credential, server, True
    return tuple(attempts), None, None, reached


async def _answers(ctx: ProbeContext, port: int, socket_dir: str | None) -> bool:
    """``pg_isready``: 0 = accepting, 1 = rejecting (starting up) — both mean a server is there."""
    argv = ["pg_isready", "-q", "-p", str(port)] + (["-h", socket_dir] if socket_dir else [])
    result = await ctx.run(argv, what="pg_isready", check=False)
    return result.exit_status in (0, 1)


def _no_login_note(running: bool, port: int) -> str:
    if not running:
        return f"No PostgreSQL server answers on port {port} of this server. Start it, or give its port."
    return (
        "PostgreSQL is running, but the bot found no way in: connect as root (peer authentication as "
        "postgres), add the backup user to ~/.pgpass, or enter a user and password."
    )


def credential_from(db: DbCredential) -> PgCredential:
    """A stored credential (the seed's ``database_credentials`` row) as a psql login."""
    database = db.database or "postgres"
    if db.auth_method == "socket":
        return PgCredential(
            method="peer", os_user=db.user or "postgres", host=db.socket, port=db.port, database=database
        )
    return PgCredential(
        method="given", user=db.user, host=db.host or None, port=db.port, database=database, password=db.password
    )


async def check_databases(ctx: ProbeContext, db: DbCredential, *, timeout: float = 10.0) -> tuple[str, ...]:
    """For :func:`bot.probes.dbcheck.check`: log in with ``db`` and list the databases one can connect to."""
    return parse_databases(await run_sql(ctx, credential_from(db), DATABASES_SQL, timeout=timeout))
