"""Docker: named volumes archived from their mountpoints, and dumps of database containers via ``docker exec``.

Volumes. One archive per volume (``volume-<name>``) of its mountpoint on the host (``docker volume inspect``,
from the probe). Containers that use the volume and were running when probed are handled per the person's
policy: ``none`` (archive while running), ``pause`` (``docker pause``: frozen, memory kept, seconds of
downtime) or ``stop`` (``docker stop --time N``: the application flushes and exits; a consistent copy). The
job's ``before`` pauses/stops them; its ``after`` — which the runner always runs, also when the job failed —
resumes each one through :data:`RESUME`, which looks at the container's *current* state: it unpauses a paused
one, starts an exited one and leaves anything else alone, so it is correct whether ``before`` completed, failed
half-way, or never ran. Containers are resumed in the reverse order they were stopped.

Database containers (recognised by the probe, :mod:`bot.probes.docker_db`). The dump runs *inside* the
container with its own client (``docker exec <c> sh -c IN_CONTAINER …``), so no client is needed on the host
and the port need not be published. Credentials: the probe knows only the *names* of the container's
variables (``POSTGRES_PASSWORD``, ``MARIADB_ROOT_PASSWORD_FILE`` …); the plan passes the names, and the fixed
script :data:`IN_CONTAINER` reads the values inside the container (``*_FILE`` variables name a file holding
the value). The values never pass through the bot or the host's argv.

The often-suggested ``docker exec c sh -c 'mysqldump -p"$MYSQL_ROOT_PASSWORD" …'`` is *not* safe, although the
host's ``docker`` argv only shows the literal ``$MYSQL_ROOT_PASSWORD``: the shell in the container expands it
into mysqldump's argv, and container processes are ordinary processes of the host — their argv is readable
in the host's ``/proc/<pid>/cmdline`` and ``ps`` by every host user (tests/test_sources_docker.py shows it).
So :data:`IN_CONTAINER` hands the password over the same way as on a host: PostgreSQL through ``PGPASSWORD``
(environment, readable only by the same user and root), MySQL/MariaDB through an option file on the client's
stdin (``--defaults-file=/dev/stdin``), MongoDB through ``--config=/dev/stdin``; quotes and backslashes are
escaped with ``sed`` reading the value from a pipe. (The value is in the container's environment anyway: that
is how the image received it, and ``docker inspect`` shows it to anyone allowed to use docker.)

The script's value arguments (variable names, default user, database) carry a ``+`` prefix that it strips:
an empty value must not be an empty argument, which borg refuses in a ``--content-from-command`` command.

"All databases" of a container (``databases`` empty) is one job: ``pg_dumpall`` (plain SQL, roles included),
``--all-databases``, or the whole ``mongod`` — the database list inside a container is not probed, and a plan
is pure. Restoring those goes through the engine's own client (``psql``/``mysql``/``mongorestore``) by hand.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from bot.backup.jobs import ArchiveJob
from bot.backup.sources.base import Facts, PlanError, SourceConfig, clean_name, dump_name, job_suffix, parse_config
from bot.backup.sources.postgresql import conninfo
from bot.probes.docker_models import DatabaseContainer, DockerFacts, Engine

Policy = Literal["none", "pause", "stop"]
ScriptEngine = Literal["postgresql", "mysql", "mongodb"]
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

RESUME = (
    "p=$1 c=$2; shift 2\n"
    's=$("$@" inspect --format "{{.State.Status}}" -- "$c") || exit 1\n'
    'case "$p:$s" in\n'
    '  pause:paused) exec "$@" unpause -- "$c" ;;\n'
    '  stop:exited|stop:created) exec "$@" start -- "$c" ;;\n'
    "esac\n"
)
IN_CONTAINER = r"""e=$1 uvar=${2#?} pvar=${3#?} u=${4#?} t=${5#?}; shift 5
for v in "$uvar" "$pvar"; do
  case $v in *[!A-Za-z0-9_]*|[0-9]*) echo "backup-bot: invalid variable name" >&2; exit 2 ;; esac
done
value() { eval "x=\${$1-}"; case $1 in *_FILE) [ -z "$x" ] || x=$(cat -- "$x") || exit 2 ;; esac; }
p=
if [ -n "$uvar" ]; then value "$uvar"; [ -z "$x" ] || u=$x; fi
if [ -n "$pvar" ]; then value "$pvar"; p=$x; fi
x=
q() { printf '%s' "$1" | sed 's/[\\"]/\\&/g'; }
case $e in
postgresql)
  [ -z "$u" ] || export PGUSER="$u"
  [ -z "$p" ] || export PGPASSWORD="$p"
  exec "$@" ;;
mysql)
  if command -v mariadb-dump >/dev/null 2>&1; then d=mariadb-dump; else d=mysqldump; fi
  if [ -n "$t" ]; then set -- "$@" -- "$t"; fi
  { printf '%s\n' '!include /etc/my.cnf' '!include /etc/mysql/my.cnf' '[client]'
    [ -z "$u" ] || printf 'user="%s"\n' "$(q "$u")"
    [ -z "$p" ] || printf 'password="%s"\n' "$(q "$p")"
  } | exec "$d" --defaults-file=/dev/stdin "$@" ;;
mongodb)
  if [ -n "$u" ]; then set -- "$@" "--username=$u" --authenticationDatabase=admin; fi
  if [ -z "$p" ]; then exec "$@"; fi
  printf 'password: "%s"\n' "$(q "$p")" | exec "$@" --config=/dev/stdin ;;
*)
  echo "backup-bot: unknown engine $e" >&2
  exit 2 ;;
esac
"""
# Credential variables per engine, most privileged first; names the probe found on the container decide.
USER_VARS: dict[ScriptEngine, tuple[str, ...]] = {
    "postgresql": ("POSTGRES_USER", "POSTGRES_USER_FILE", "POSTGRESQL_USERNAME", "PGUSER"),
    "mysql": (),  # root: the images' root password variables below
    "mongodb": ("MONGO_INITDB_ROOT_USERNAME", "MONGO_INITDB_ROOT_USERNAME_FILE"),
}
PASSWORD_VARS: dict[ScriptEngine, tuple[str, ...]] = {
    "postgresql": ("POSTGRES_PASSWORD", "POSTGRES_PASSWORD_FILE", "POSTGRESQL_POSTGRES_PASSWORD",
                   "POSTGRESQL_PASSWORD", "PGPASSWORD"),
    "mysql": ("MARIADB_ROOT_PASSWORD", "MARIADB_ROOT_PASSWORD_FILE", "MYSQL_ROOT_PASSWORD",
              "MYSQL_ROOT_PASSWORD_FILE"),
    "mongodb": ("MONGO_INITDB_ROOT_PASSWORD", "MONGO_INITDB_ROOT_PASSWORD_FILE"),
}  # fmt: skip
DEFAULT_USER: dict[ScriptEngine, str] = {"postgresql": "postgres", "mysql": "root", "mongodb": ""}


def _env_name(value: str | None) -> str | None:
    if value is not None and not _ENV_NAME.match(value):
        raise ValueError(f"{value!r} is not an environment variable name")
    return value


class DockerDatabase(SourceConfig):
    """A database container to dump. ``user_env``/``password_env``: names of the container's variables
    (default: the image's usual ones that the probe found). ``engine``: only for a container the probe did
    not recognise."""

    container: str
    databases: tuple[str, ...] = ()
    user_env: str | None = None
    password_env: str | None = None
    engine: Engine | None = None

    @field_validator("user_env", "password_env")
    @classmethod
    def _variables(cls, value: str | None) -> str | None:
        return _env_name(value)

    @field_validator("container")
    @classmethod
    def _container(cls, value: str) -> str:
        return clean_name(value, "container")

    @field_validator("databases")
    @classmethod
    def _databases(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(clean_name(v, "database") for v in value))


class DockerConfig(SourceConfig):
    """Volumes to archive, a policy per container (default ``none``), database containers to dump."""

    volumes: tuple[str, ...] = ()
    policies: dict[str, Policy] = Field(default_factory=dict)
    databases: tuple[DockerDatabase, ...] = ()
    stop_timeout: int = Field(default=60, ge=1, le=3600)

    @field_validator("volumes")
    @classmethod
    def _volumes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(clean_name(v, "volume") for v in value))

    @model_validator(mode="after")
    def _something(self) -> DockerConfig:
        if not self.volumes and not self.databases:
            raise ValueError("choose at least one volume or database container")
        return self


class DockerSourceFacts(Facts):
    """The Docker probe's result; ``host`` is DOCKER_HOST when the daemon is not on the default socket."""

    docker: DockerFacts
    host: str | None = None


def docker_argv(facts: DockerSourceFacts) -> tuple[str, ...]:
    return ("docker", "-H", facts.host) if facts.host else ("docker",)


def held_containers(config: DockerConfig, facts: DockerSourceFacts, volume: str) -> list[tuple[str, Policy]]:
    """Containers using ``volume`` that were running when probed and whose policy is pause or stop."""
    found = facts.docker.volume(volume)
    held: list[tuple[str, Policy]] = []
    for name in found.used_by if found else ():
        policy, container = config.policies.get(name, "none"), facts.docker.container(name)
        if policy != "none" and container is not None and container.running:
            held.append((name, policy))
    return held


def bracket(
    config: DockerConfig, facts: DockerSourceFacts, held: list[tuple[str, Policy]]
) -> tuple[tuple[tuple[str, ...], ...], tuple[tuple[str, ...], ...]]:
    """``(before, after)``: pause/stop in order, resume in reverse order (see the module docstring)."""
    docker = docker_argv(facts)
    before = tuple(
        (*docker, "pause", "--", name) if policy == "pause"
        else (*docker, "stop", f"--time={config.stop_timeout}", "--", name)
        for name, policy in held
    )  # fmt: skip
    after = tuple(("sh", "-c", RESUME, "sh", policy, name, *docker) for name, policy in reversed(held))
    return before, after


def volume_job(config: DockerConfig, facts: DockerSourceFacts, name: str) -> ArchiveJob:
    volume = facts.docker.volume(name)
    if volume is None or not volume.mountpoint:
        raise PlanError(f"The Docker volume {name} does not exist on this server (any more); probe the server again.")
    if volume.driver != "local":
        raise PlanError(f"The Docker volume {name} uses the {volume.driver!r} driver; only local volumes have a "
                        "directory on this server to back up.")  # fmt: skip
    held = held_containers(config, facts, name)
    before, after = bracket(config, facts, held)
    shown = ", ".join(f"{c} {'paused' if p == 'pause' else 'stopped'}" for c, p in held) or "containers keep running"
    return ArchiveJob(
        suffix=job_suffix("volume", name), kind="paths", paths=(volume.mountpoint,), before=before, after=after,
        description=f"Docker volume {name} ({shown})",
    )  # fmt: skip


def script_engine(engine: Engine) -> ScriptEngine:
    return "mysql" if engine == "mariadb" else engine


def pick(candidates: tuple[str, ...], present: tuple[str, ...]) -> str:
    return next((name for name in candidates if name in present), "")


def database_container(spec: DockerDatabase, facts: DockerSourceFacts) -> tuple[ScriptEngine, DatabaseContainer | None]:
    found = next((d for d in facts.docker.databases if spec.container in (d.container, d.container_id)), None)
    engine = spec.engine or (found.engine if found else None)
    if engine is None:
        raise PlanError(
            f"The container {spec.container} is not recognised as a database server; choose its engine "
            "(PostgreSQL, MySQL, MariaDB or MongoDB) explicitly."
        )
    return script_engine(engine), found


def dump_commands(engine: ScriptEngine, databases: tuple[str, ...]) -> list[tuple[str | None, tuple[str, ...], str]]:
    """``(database or None for all, dump argv inside the container, file extension)`` per job. A MySQL
    database is not in the argv: :data:`IN_CONTAINER` appends it after a ``--`` of its own (see
    :data:`bot.backup.sources.mysql.WITH_OPTION_FILE` for why no literal ``--`` argument)."""
    if engine == "postgresql":
        if not databases:
            return [(None, ("pg_dumpall", "--no-password"), "sql")]
        return [(d, ("pg_dump", "--format=custom", "--compress=0", "--no-password", f"--dbname={conninfo(d)}"),
                 "pgdump") for d in databases]  # fmt: skip
    if engine == "mysql":
        options = ("--single-transaction", "--routines", "--events", "--triggers", "--hex-blob",
                   "--default-character-set=utf8mb4", "--max-allowed-packet=1G")  # fmt: skip
        if not databases:
            return [(None, (*options, "--all-databases"), "sql")]
        return [(d, options, "sql") for d in databases]
    if not databases:
        return [(None, ("mongodump", "--archive"), "archive")]
    return [(d, ("mongodump", f"--db={d}", "--archive"), "archive") for d in databases]


def credential_variables(engine: ScriptEngine, spec: DockerDatabase, present: tuple[str, ...]) -> tuple[str, str]:
    """``(user variable, password variable)``: the configured names, else the image's usual ones found on the
    container. MySQL/MariaDB images without a root password variable (random or empty root password) fall
    back to their application login (``MYSQL_USER``/``MYSQL_PASSWORD``)."""
    uvar = spec.user_env or pick(USER_VARS[engine], present)
    pvar = spec.password_env or pick(PASSWORD_VARS[engine], present)
    if engine == "mysql" and not spec.password_env and not pvar:
        for prefix in ("MARIADB", "MYSQL"):
            if f"{prefix}_PASSWORD" in present and f"{prefix}_USER" in present:
                return spec.user_env or f"{prefix}_USER", f"{prefix}_PASSWORD"
    return uvar, pvar


def database_jobs(spec: DockerDatabase, facts: DockerSourceFacts) -> list[ArchiveJob]:
    engine, found = database_container(spec, facts)
    uvar, pvar = credential_variables(engine, spec, found.credential_env if found else ())
    prefix = (*docker_argv(facts), "exec", spec.container, "sh", "-c", IN_CONTAINER, "sh", engine, f"+{uvar}",
              f"+{pvar}", f"+{DEFAULT_USER[engine]}")  # fmt: skip
    jobs = []
    for database, dump, extension in dump_commands(engine, spec.databases):
        what = database if database is not None else "all"
        operand = database if engine == "mysql" and database is not None else ""
        jobs.append(ArchiveJob(
            suffix=job_suffix("container", f"{spec.container}-{what}"), kind="command",
            command=(*prefix, f"+{operand}", *dump),
            stdin_name=dump_name(what, extension),
            description=f"{engine} in container {spec.container}: {'all databases' if database is None else database}"
                        f" ({dump[0] if engine != 'mysql' else 'mysqldump'} via docker exec)",
        ))  # fmt: skip
    return jobs


class DockerSource:
    """``volume-<name>`` archives and ``container-<container>-<database>`` dump archives."""

    type = "docker"
    config_model = DockerConfig

    def plan(self, config: DockerConfig, facts: DockerSourceFacts) -> list[ArchiveJob]:
        jobs = [volume_job(config, facts, name) for name in config.volumes]
        for spec in config.databases:
            jobs.extend(database_jobs(spec, facts))
        return jobs

    def validate(self, config: Mapping[str, Any] | DockerConfig) -> list[str]:
        return parse_config(DockerConfig, config)[1]
