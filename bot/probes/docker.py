"""Docker: is it usable here, and what would a backup of it involve — containers, volumes (with sizes),
compose projects and database servers running in containers.

Commands, in three rounds (see :mod:`bot.probes.docker_parse` for why these and not others):

1. ``docker version --format '{{json .}}'`` — tells apart *client missing* (:class:`DockerAbsent`), *daemon
   down* and *permission denied on the socket* (:class:`DockerUnavailable`, each a sentence with the fix).
   A login without access to the socket but with passwordless sudo is retried through sudo.
2. ``docker ps -aq --no-trunc`` and ``docker volume ls -q`` (ids and names), then ``docker container inspect``
   (with a template that never returns environment *values*), ``docker volume inspect`` and, for sizes,
   ``docker system df -v``.
3. ``du -s -b`` on the mountpoints of volumes docker could not size (root or sudo needed, time-bounded).

Ids and volume names are passed as separate arguments after ``--`` (volume names are user-controlled);
nothing is ever assembled into a shell string here. ``ProbeContext.env`` carries ``DOCKER_HOST`` when the
daemon is not on the default socket.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from bot.probes.base import Absent, ProbeContext, ProbeError, missing_program
from bot.probes.docker_db import detect_databases
from bot.probes.docker_models import (
    COMPOSE_CONFIG_FILES,
    COMPOSE_WORKING_DIR,
    ComposeProject,
    Container,
    DatabaseContainer,
    DockerFacts,
    DockerVersion,
    Mount,
    Volume,
)
from bot.probes.docker_parse import (
    CONTAINER_TEMPLATE,
    parse_containers,
    parse_df_volume_sizes,
    parse_du,
    parse_ids,
    parse_names,
    parse_version,
    parse_volumes,
)
from bot.transport.base import CommandResult, CommandTimeout

__all__ = [
    "ABSENT_MEANS",
    "PROBE_TIMEOUT",
    "ComposeProject",
    "Container",
    "DatabaseContainer",
    "DockerAbsent",
    "DockerFacts",
    "DockerUnavailable",
    "DockerVersion",
    "Mount",
    "Volume",
    "assemble",
    "compose_projects",
    "connect",
    "daemon_problem",
    "probe",
]

ARGV_VERSION = ("docker", "version", "--format", "{{json .}}")
ARGV_IDS = ("docker", "ps", "--all", "--quiet", "--no-trunc")
ARGV_VOLUME_NAMES = ("docker", "volume", "ls", "--quiet")
ARGV_INSPECT_CONTAINERS = ("docker", "container", "inspect", "--format", CONTAINER_TEMPLATE, "--")
ARGV_INSPECT_VOLUMES = ("docker", "volume", "inspect", "--")
ARGV_DF = ("docker", "system", "df", "--verbose", "--format", "{{json .}}")
ARGV_DU = ("du", "-s", "-b", "--")

CHUNK = 100  # ids/names per inspect call: keeps command lines far below ARG_MAX on any server
LIST_TIMEOUT = 60.0
SIZE_TIMEOUT = 60.0  # each of `docker system df` and `du`: both walk every file of every volume
PROBE_TIMEOUT = 200.0  # what the capabilities table should allow this probe
ABSENT_MEANS = (
    "not installed (no `docker` command for this login), so there are no containers to back up. If this "
    "server does run containers, install the Docker CLI — Debian/Ubuntu: `apt install docker.io`; others: "
    "Docker's `docker-ce-cli` package — or make sure `docker` is on the PATH of non-interactive SSH logins"
)

SizeMode = Literal["docker", "du", "none"]
Reason = Literal["daemon-down", "permission-denied"]
T = TypeVar("T")

_ADDRESS = re.compile(r"\b(?:unix|tcp|ssh|npipe|fd)://[^\s;,\"']+")
_PERMISSION = (
    "permission denied while trying to connect to the docker",  # "… Docker daemon socket at" / "… docker API at"
    "connect: permission denied",
)  # not any "permission denied": an unreadable ~/.docker/config.json only causes a warning
_DAEMON_DOWN = (
    "cannot connect to the docker daemon",  # docker ≤ 28
    "failed to connect to the docker api",  # docker ≥ 29
    "is the docker daemon running",
    "error during connect",
)


class DockerAbsent(Absent):
    """No ``docker`` command here. ``str()`` is the program name, as for every :class:`Absent`."""

    hint = ABSENT_MEANS


class DockerUnavailable(ProbeError):
    """Docker is installed but the daemon cannot be used; ``reason`` says which of the two cases."""

    def __init__(self, message: str, reason: Reason) -> None:
        super().__init__(message)
        self.reason = reason


def _address(text: str) -> str:
    match = _ADDRESS.search(text)
    return match.group(0).rstrip(".:") if match else "the default socket (/var/run/docker.sock)"


def daemon_problem(stderr: str) -> DockerUnavailable | None:
    """Recognise docker's "cannot connect" and "permission denied" errors (every client wording we know)."""
    text = stderr.lower()
    where = _address(stderr)
    if any(phrase in text for phrase in _PERMISSION):
        return DockerUnavailable(
            f"This login may not use the Docker daemon at {where}: permission denied on its socket. Add the "
            "user to the `docker` group (`usermod -aG docker USER`, then reconnect), allow it passwordless "
            "sudo, or connect as root — note that membership of the docker group is equivalent to root.",
            "permission-denied",
        )
    if any(phrase in text for phrase in _DAEMON_DOWN):
        return DockerUnavailable(
            f"Docker is installed but its daemon is not reachable at {where}. Start it with `systemctl start "
            "docker` (and `systemctl enable docker` so it survives a reboot); if it listens elsewhere, set "
            "DOCKER_HOST for this server.",
            "daemon-down",
        )
    return None


def _failure(result: CommandResult, what: str) -> Exception:
    """The exception for a failed docker command: daemon problem, missing program, or a plain failure."""
    problem = daemon_problem(result.err)
    if problem is not None:
        return problem
    if missing_program(result):
        return DockerAbsent(result.argv[0] if result.argv else "docker")
    return ProbeError(f"`{what}` failed: {result.describe_failure()}.")


@dataclass(frozen=True)
class _Docker:
    """Runs docker commands the way :func:`connect` found to work (directly or through sudo)."""

    ctx: ProbeContext
    sudo: bool = False

    async def run(self, argv: Sequence[str], *, what: str, timeout: float = LIST_TIMEOUT) -> CommandResult:
        return await self.ctx.run(argv, what=what, privileged=self.sudo, check=False, timeout=timeout)

    async def checked(self, argv: Sequence[str], *, what: str, timeout: float = LIST_TIMEOUT) -> str:
        result = await self.run(argv, what=what, timeout=timeout)
        if not result.ok:
            raise _failure(result, what)
        return result.out

    async def inspect(self, prefix: Sequence[str], items: Sequence[str], *, what: str) -> list[str]:
        """Outputs of ``prefix + chunk`` per chunk; objects removed since they were listed are skipped."""
        outputs = []
        for start in range(0, len(items), CHUNK):
            result = await self.run([*prefix, *items[start : start + CHUNK]], what=what)
            gone = [line for line in result.err.splitlines() if "no such" in line.lower()]
            if not result.ok and (not gone or len(gone) != len(result.err.strip().splitlines())):
                raise _failure(result, what)
            outputs.append(result.out)
        return outputs


async def connect(ctx: ProbeContext) -> tuple[DockerVersion, bool]:
    """``(versions, via_sudo)``; raises :class:`DockerAbsent` or :class:`DockerUnavailable` with the fix."""
    result = await ctx.run(ARGV_VERSION, what="docker version", check=False, timeout=LIST_TIMEOUT)
    via_sudo = False
    problem = None if result.ok else _failure(result, "docker version")
    if isinstance(problem, DockerUnavailable) and problem.reason == "permission-denied" and ctx.sudo:
        result = await ctx.run(ARGV_VERSION, what="docker version", privileged=True, check=False)
        via_sudo = True
        problem = None if result.ok else _failure(result, "sudo docker version")
    if problem is not None:
        raise problem
    # An empty server version with exit status 0 is podman's daemonless emulation: usable as it is.
    return parse_version(result.out), via_sudo


def _flatten(outputs: Iterable[str], parse: Callable[[str], tuple[T, ...]]) -> tuple[T, ...]:
    return tuple(item for out in outputs for item in parse(out))


async def _containers(docker: _Docker) -> tuple[Container, ...]:
    ids = parse_ids(await docker.checked(ARGV_IDS, what="docker ps"))
    outputs = await docker.inspect(ARGV_INSPECT_CONTAINERS, ids, what="docker container inspect")
    return tuple(sorted(_flatten(outputs, parse_containers), key=lambda c: c.name))


async def _volumes(docker: _Docker) -> tuple[Volume, ...]:
    names = parse_names(await docker.checked(ARGV_VOLUME_NAMES, what="docker volume ls"))
    outputs = await docker.inspect(ARGV_INSPECT_VOLUMES, names, what="docker volume inspect")
    return tuple(sorted(_flatten(outputs, parse_volumes), key=lambda v: v.name))


async def _df_sizes(docker: _Docker) -> dict[str, int | None] | str:
    """Volume sizes from the daemon, or a sentence saying why there are none (the caller falls back to du)."""
    try:
        out = await docker.checked(ARGV_DF, what="docker system df", timeout=SIZE_TIMEOUT)
        return parse_df_volume_sizes(out)
    except CommandTimeout:
        return f"`docker system df` did not finish within {SIZE_TIMEOUT:g} s"
    except ProbeError as exc:
        return str(exc).rstrip(".")


def _with_df(volumes: Sequence[Volume], sizes: dict[str, int | None]) -> tuple[Volume, ...]:
    return tuple(
        v.model_copy(update={"size_bytes": sizes[v.name], "size_source": "docker system df", "size_exact": False})
        if sizes.get(v.name) is not None
        else v
        for v in volumes
    )


def _unknown(volumes: Sequence[Volume], why: str) -> tuple[Volume, ...]:
    return tuple(
        v.model_copy(update={"size_note": why}) if v.size_bytes is None and v.mountpoint else v for v in volumes
    )


async def _with_du(ctx: ProbeContext, volumes: Sequence[Volume]) -> tuple[tuple[Volume, ...], str]:
    """Measure volumes still without a size with ``du``; returns them and a note about any left unknown."""
    volumes = tuple(
        v.model_copy(update={"size_note": "its driver reports no size and it has no local mountpoint"})
        if v.size_bytes is None and not v.mountpoint
        else v
        for v in volumes
    )
    todo = [v for v in volumes if v.size_bytes is None and v.mountpoint]
    if not todo:
        return volumes, ""
    if not ctx.privileged:
        why = "reading a volume's files under Docker's data directory needs root or passwordless sudo"
        return _unknown(volumes, why), f"The size of {len(todo)} volume(s) is unknown: {why}."
    argv = [*ARGV_DU, *(v.mountpoint for v in todo)]
    try:
        result = await ctx.run(argv, what="du", privileged=True, check=False, timeout=SIZE_TIMEOUT)
    except CommandTimeout:
        why = f"`du` did not finish within {SIZE_TIMEOUT:g} s"
        return _unknown(volumes, why), f"{why}, so volume sizes are unknown."
    measured = parse_du(result.out)
    done = tuple(
        v.model_copy(update={"size_bytes": measured[v.mountpoint], "size_source": "du", "size_exact": True})
        if v.size_bytes is None and v.mountpoint in measured
        else v
        for v in volumes
    )
    missing = [v.name for v in done if v.size_bytes is None and v.mountpoint]
    if not missing:
        return done, ""
    why = "`du` could not read it: " + (result.err.strip().splitlines() or ["no output"])[0][:200]
    return _unknown(done, why), f"`du` could not measure {', '.join(missing)}."


def _with_users(volumes: Sequence[Volume], containers: Sequence[Container]) -> tuple[Volume, ...]:
    return tuple(
        v.model_copy(update={"used_by": tuple(c.name for c in containers if v.name in c.volume_names)}) for v in volumes
    )


def compose_projects(containers: Sequence[Container], volumes: Sequence[Volume]) -> tuple[ComposeProject, ...]:
    """Group containers and volumes by their compose project label (volumes also via their containers)."""
    names = {c.compose_project for c in containers} | {v.compose_project for v in volumes}
    projects = []
    for name in sorted(n for n in names if n):
        members = [c for c in containers if c.compose_project == name]
        labels = next((c.labels for c in members if COMPOSE_WORKING_DIR in c.labels), {})
        volume_names = {v.name for v in volumes if v.compose_project == name}
        volume_names |= {n for c in members for n in c.volume_names}
        projects.append(
            ComposeProject(
                name=name,
                working_dir=labels.get(COMPOSE_WORKING_DIR, ""),
                config_files=tuple(f for f in labels.get(COMPOSE_CONFIG_FILES, "").split(",") if f),
                services=tuple(sorted({c.compose_service for c in members if c.compose_service})),
                containers=tuple(c.name for c in members),
                volumes=tuple(sorted(volume_names)),
            )
        )
    return tuple(projects)


def assemble(
    version: DockerVersion,
    containers: Sequence[Container],
    volumes: Sequence[Volume],
    *,
    via_sudo: bool = False,
    notes: Sequence[str] = (),
) -> DockerFacts:
    """The final result from parsed parts (pure): volume users, compose projects, databases."""
    volumes = _with_users(volumes, containers)
    return DockerFacts(
        version=version,
        via_sudo=via_sudo,
        containers=tuple(containers),
        volumes=volumes,
        projects=compose_projects(containers, volumes),
        databases=detect_databases(containers),
        notes=tuple(n for n in notes if n),
    )


async def probe(ctx: ProbeContext, *, sizes: SizeMode = "docker") -> DockerFacts:
    """Everything about Docker on this server; see the module docstring.

    ``sizes``: ``"docker"`` asks the daemon and measures with du what it could not size; ``"du"`` measures
    every volume with du (exact bytes); ``"none"`` skips sizes (fast, no walk over volume files).
    """
    version, via_sudo = await connect(ctx)
    docker = _Docker(ctx, sudo=via_sudo)
    df_task = _df_sizes(docker) if sizes == "docker" else asyncio.sleep(0, result="")
    containers, volumes, df = await asyncio.gather(_containers(docker), _volumes(docker), df_task)
    notes: list[str] = []
    if isinstance(df, dict):
        volumes = _with_df(volumes, df)
    elif df:
        notes.append(f"Docker could not report volume sizes ({df}); they were measured with du instead.")
    if sizes != "none":
        volumes, note = await _with_du(ctx, volumes)
        notes.append(note)
    return assemble(version, containers, volumes, via_sudo=via_sudo, notes=notes)
