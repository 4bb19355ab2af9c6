"""Typed results of the Docker probe (see :mod:`bot.probes.docker` for how they are gathered).

Nothing here holds a secret: containers carry the *names* of their environment variables only, because
database images take passwords through the environment (``POSTGRES_PASSWORD=…``) and these results are
cached as JSON on the Server row and shown in Slack. Values are never fetched from the server at all.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from bot.probes.base import Model

COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
COMPOSE_WORKING_DIR = "com.docker.compose.project.working_dir"
COMPOSE_CONFIG_FILES = "com.docker.compose.project.config_files"

Engine = Literal["mysql", "mariadb", "postgresql", "mongodb"]
ENGINE_NAMES: dict[str, str] = {
    "mysql": "MySQL",
    "mariadb": "MariaDB",
    "postgresql": "PostgreSQL",
    "mongodb": "MongoDB",
}


class DockerVersion(Model):
    """Client and daemon versions; the server fields are empty when only the client answered."""

    client_version: str
    client_api: str
    server_version: str = ""
    server_api: str = ""
    server_os: str = ""
    server_arch: str = ""


class Mount(Model):
    """One mount of a container, as ``docker container inspect`` reports it."""

    type: str  # "volume", "bind", "tmpfs", …
    name: str = ""  # volume name; "" for binds and tmpfs
    source: str = ""  # host path (a volume's mountpoint for volumes)
    destination: str
    rw: bool = True
    driver: str = ""  # volume driver ("local", …); "" for binds


class Container(Model):
    """A container and what a backup needs to know about it.

    ``image`` is the reference the container was created from (``postgres:16-alpine``), which is what a
    person recognises; ``image_id`` the content id. ``ports`` are the exposed ports (``5432/tcp``) of the
    container and its image. ``env_names`` are names only — see the module docstring.
    """

    id: str
    name: str
    image: str
    image_id: str = ""
    state: str  # created, running, paused, restarting, removing, exited, dead
    exit_code: int | None = None
    created: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()
    ports: tuple[str, ...] = ()
    env_names: tuple[str, ...] = ()

    @property
    def running(self) -> bool:
        return self.state in ("running", "restarting")

    @property
    def compose_project(self) -> str | None:
        return self.labels.get(COMPOSE_PROJECT) or None

    @property
    def compose_service(self) -> str | None:
        return self.labels.get(COMPOSE_SERVICE) or None

    @property
    def volume_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.mounts if m.type == "volume" and m.name)

    @property
    def status(self) -> str:
        """A short sentence like ``running since 2024-05-01 10:00 UTC`` or ``exited (1) at …``."""
        if self.running and self.started_at:
            return f"{self.state} since {self.started_at:%Y-%m-%d %H:%M %Z}".rstrip()
        if self.state == "exited":
            when = f" at {self.finished_at:%Y-%m-%d %H:%M %Z}".rstrip() if self.finished_at else ""
            return f"exited ({self.exit_code}){when}"
        return self.state


SizeSource = Literal["docker system df", "du", ""]


class Volume(Model):
    """A named volume. ``size_bytes`` is None when it could not be measured (``size_note`` says why).

    ``docker system df`` reports sizes rounded to 4 significant digits (``1.235GB``), so ``size_exact``
    is False for those; ``du -b`` gives exact bytes. Both count apparent sizes (what a backup reads, holes
    included); du adds the directories' own few KiB each, docker counts regular files only.
    """

    name: str
    driver: str = "local"
    mountpoint: str = ""
    scope: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    created: datetime | None = None
    size_bytes: int | None = None
    size_source: SizeSource = ""
    size_exact: bool = False
    size_note: str = ""
    used_by: tuple[str, ...] = ()  # names of containers that mount it, running or not

    @property
    def compose_project(self) -> str | None:
        return self.labels.get(COMPOSE_PROJECT) or None


class ComposeProject(Model):
    """Containers and volumes that carry the same ``com.docker.compose.project`` label."""

    name: str
    working_dir: str = ""  # where docker compose ran (holds the compose file), when compose recorded it
    config_files: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    containers: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()


class DatabaseContainer(Model):
    """A database server running (or stopped) in a container.

    ``detected_by`` is ``"image"`` when the image name says which engine it is, ``"port"`` when only an
    exposed port does (3306 cannot tell MySQL from MariaDB; ``engine`` is then ``"mysql"``).
    ``credential_env`` lists the names of credential variables set on the container
    (``POSTGRES_PASSWORD``, ``MARIADB_ROOT_PASSWORD_FILE`` …); ``credentials`` summarises them: a
    password in the environment (``env``), in a file named by a ``*_PASSWORD_FILE`` variable (``file``),
    or neither (``none``: the database may allow passwordless local access, or generate a random one).
    """

    engine: Engine
    container: str
    container_id: str
    image: str
    running: bool
    detected_by: Literal["image", "port"]
    ports: tuple[str, ...] = ()
    credential_env: tuple[str, ...] = ()
    credentials: Literal["env", "file", "none"] = "none"
    volumes: tuple[str, ...] = ()
    compose_project: str | None = None

    @property
    def engine_name(self) -> str:
        return ENGINE_NAMES[self.engine]


class DockerFacts(Model):
    """Everything the Docker probe found on one server."""

    version: DockerVersion
    via_sudo: bool = False  # the login user may not use the socket; commands went through sudo
    containers: tuple[Container, ...] = ()
    volumes: tuple[Volume, ...] = ()
    projects: tuple[ComposeProject, ...] = ()
    databases: tuple[DatabaseContainer, ...] = ()
    notes: tuple[str, ...] = ()  # sentences about what could not be determined, e.g. volume sizes

    def container(self, name: str) -> Container | None:
        return next((c for c in self.containers if c.name == name or c.id == name), None)

    def volume(self, name: str) -> Volume | None:
        return next((v for v in self.volumes if v.name == name), None)
