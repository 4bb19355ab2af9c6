"""Backup source types: a registry from the type name the wizard stores to the source that plans it.

Each type is one module (:mod:`~bot.backup.sources.files`, ``system``, ``mysql``, ``postgresql``, ``mongodb``,
``docker``) with a typed config model (what ``BackupSource.config`` holds; never a secret), typed facts (probe
results plus the decrypted credential), and a pure ``plan(config, facts) -> list[ArchiveJob]``. Database types
with a restore path (PostgreSQL, MySQL/MariaDB) also have ``restore`` (see :mod:`bot.backup.restore_db`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.backup.sources.base import PlanError, Source, SourceConfig, parse_config
from bot.backup.sources.docker import DockerConfig, DockerSource, DockerSourceFacts
from bot.backup.sources.files import FilesConfig, FilesSource
from bot.backup.sources.mongodb import MongoDBConfig, MongoDBFacts, MongoDBSource
from bot.backup.sources.mysql import MySQLConfig, MySQLFacts, MySQLSource
from bot.backup.sources.postgresql import PostgreSQLConfig, PostgreSQLFacts, PostgreSQLSource
from bot.backup.sources.system import SystemConfig, SystemFacts, SystemSource

SOURCES: dict[str, Any] = {
    source.type: source
    for source in (FilesSource(), SystemSource(), MySQLSource(), PostgreSQLSource(), MongoDBSource(), DockerSource())
}
DATABASE_TYPES = frozenset({"mysql", "postgresql"})  # the types with a restore into a named database


class UnknownSourceType(KeyError):
    def __str__(self) -> str:
        return f"Unknown source type {self.args[0]!r}; known: {', '.join(sorted(SOURCES))}."


def get(type_name: str) -> Any:
    """The source for ``type_name`` (``files``, ``system``, ``mysql``, ``postgresql``, ``mongodb``, ``docker``)."""
    try:
        return SOURCES[type_name]
    except KeyError:
        raise UnknownSourceType(type_name) from None


def validate(type_name: str, config: Mapping[str, Any]) -> list[str]:
    """Sentences about what is wrong with a stored config (empty when it is fine)."""
    if type_name not in SOURCES:
        return [str(UnknownSourceType(type_name))]
    return SOURCES[type_name].validate(config)


def load_config(type_name: str, config: Mapping[str, Any]) -> SourceConfig:
    """The typed config of a stored one; raises :class:`PlanError` with the sentences when it is invalid."""
    parsed, problems = parse_config(get(type_name).config_model, config)
    if parsed is None:
        raise PlanError(" ".join(problems))
    return parsed


__all__ = [
    "DATABASE_TYPES", "SOURCES", "DockerConfig", "DockerSource", "DockerSourceFacts", "FilesConfig",
    "FilesSource", "MongoDBConfig", "MongoDBFacts", "MongoDBSource", "MySQLConfig", "MySQLFacts", "MySQLSource",
    "PlanError", "PostgreSQLConfig", "PostgreSQLFacts", "PostgreSQLSource", "Source", "SourceConfig",
    "SystemConfig", "SystemFacts", "SystemSource", "UnknownSourceType", "get", "load_config", "validate",
]  # fmt: skip
