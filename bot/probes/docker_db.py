"""Which containers are database servers, and whether their credentials come from the environment.

Pure functions over :class:`~bot.probes.docker_models.Container`. The image reference is the strongest
signal: official images (``postgres:16-alpine``, ``mariadb:11``, ``mysql``, ``mongo``) and common variants
(``bitnami/postgresql``, ``postgis/postgis``, ``timescale/timescaledb``, ``percona/percona-server``,
``mongodb/mongodb-community-server``) are matched on the *words* of the image's last path component, so
tools around a database (``mongo-express``, ``prometheuscommunity/postgres-exporter``, ``mysql/mysql-router``,
backup sidecars) are not mistaken for one. An unknown image that exposes a database's standard port
(3306, 5432, 27017) is reported too, marked as detected by port.

Credentials: only variable *names* are examined (the values never reach the bot — see the Docker probe).
A later dump can still use them without the bot seeing them, by running the client inside the container
with the variable expanded there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

from bot.probes.docker_models import Container, DatabaseContainer, Engine

DetectedBy = Literal["image", "port"]
CredentialSource = Literal["env", "file", "none"]

# Checked in this order: "percona-server-mongodb" is MongoDB, "percona-server" MySQL.
_IMAGE_WORDS: tuple[tuple[Engine, frozenset[str]], ...] = (
    ("mongodb", frozenset({"mongo", "mongodb"})),
    ("mariadb", frozenset({"mariadb"})),
    ("postgresql", frozenset({"postgres", "postgresql", "postgis", "timescaledb", "pgvector"})),
    ("mysql", frozenset({"mysql", "percona"})),
)
# Words that mark a tool *around* a database rather than the server itself.
_NOT_A_SERVER = frozenset(
    {"exporter", "express", "admin", "adminer", "backup", "backups", "dump", "operator", "router", "proxy",
     "shell", "client", "cli", "ui", "web", "monitor", "agent", "metrics", "migrate", "migrations", "tools",
     "sidecar", "pooler", "bouncer", "connector", "sync"}
)  # fmt: skip
_PORTS: dict[int, Engine] = {3306: "mysql", 33060: "mysql", 5432: "postgresql", 27017: "mongodb"}
_DB_PREFIXES = frozenset({"POSTGRES", "POSTGRESQL", "PG", "MYSQL", "MARIADB", "MONGO", "MONGODB"})
_CREDENTIAL_WORDS = frozenset({"PASSWORD", "PASS", "USER", "USERNAME", "AUTH", "PASSFILE"})
_WHOLE_NAMES = frozenset({"PGPASSWORD", "PGPASSFILE", "PGUSER"})


def image_repository(image: str) -> tuple[str, str]:
    """``(repository path without registry or library/, tag)`` of an image reference, lower-cased.

    ``docker.io/bitnami/postgresql:16`` → ``("bitnami/postgresql", "16")``;
    ``registry:5000/db/mariadb@sha256:…`` → ``("db/mariadb", "")``.
    """
    ref = image.strip().split("@", 1)[0]
    name, tag = ref, ""
    if ref.rfind(":") > ref.rfind("/"):
        name, _, tag = ref.rpartition(":")
    parts = name.lower().split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    if len(parts) > 1 and parts[0] == "library":
        parts = parts[1:]
    return "/".join(parts), tag


def _image_words(image: str) -> set[str]:
    repository, _ = image_repository(image)
    return set(re.split(r"[^a-z0-9]+", repository.rsplit("/", 1)[-1])) - {""}


def _port_numbers(ports: Iterable[str]) -> list[int]:
    numbers = []
    for port in ports:
        head = port.split("/", 1)[0]
        if head.isdigit():
            numbers.append(int(head))
    return numbers


def engine_of(container: Container) -> tuple[Engine, DetectedBy] | None:
    """``(engine, "image" | "port")`` when ``container`` looks like a database server, else None."""
    words = _image_words(container.image)
    if words & _NOT_A_SERVER:
        return None
    for engine, names in _IMAGE_WORDS:
        if words & names:
            return engine, "image"
    for number in _port_numbers(container.ports):
        if number in _PORTS:
            return _PORTS[number], "port"
    return None


def credential_env(names: Iterable[str]) -> tuple[str, ...]:
    """The database-credential variable names among ``names`` (``POSTGRES_PASSWORD``, ``MYSQL_USER``…)."""
    found = []
    for name in names:
        words = name.upper().split("_")
        if name.upper() in _WHOLE_NAMES or (words[0] in _DB_PREFIXES and _CREDENTIAL_WORDS & set(words[1:])):
            found.append(name)
    return tuple(found)


def credentials_source(names: Iterable[str]) -> CredentialSource:
    """``file`` when a ``*_PASSWORD_FILE`` variable is set, ``env`` for a password variable, else ``none``.

    ``MYSQL_RANDOM_ROOT_PASSWORD`` / ``…_ALLOW_EMPTY_PASSWORD`` are switches, not passwords.
    """
    kinds = set()
    for name in names:
        words = set(name.upper().split("_"))
        if not words & {"PASSWORD", "PGPASSWORD", "PASSFILE", "PGPASSFILE"} or words & {"RANDOM", "ALLOW", "EMPTY"}:
            continue
        kinds.add("file" if words & {"FILE", "PASSFILE", "PGPASSFILE"} else "env")
    if "file" in kinds:
        return "file"
    return "env" if "env" in kinds else "none"


def detect_database(container: Container) -> DatabaseContainer | None:
    found = engine_of(container)
    if found is None:
        return None
    engine, how = found
    creds = credential_env(container.env_names)
    return DatabaseContainer(
        engine=engine,
        container=container.name,
        container_id=container.id,
        image=container.image,
        running=container.running,
        detected_by=how,
        ports=container.ports,
        credential_env=creds,
        credentials=credentials_source(creds),
        volumes=container.volume_names,
        compose_project=container.compose_project,
    )


def detect_databases(containers: Iterable[Container]) -> tuple[DatabaseContainer, ...]:
    return tuple(db for c in containers if (db := detect_database(c)) is not None)
