"""What every source type shares: the ``Source`` protocol, config models, plan errors, and naming helpers.

A source turns what the wizard stored (a typed config, :class:`SourceConfig`) and what the probes found on the
server (typed facts, one model per type) into :class:`~bot.backup.jobs.ArchiveJob` values. Planning is pure:
no I/O, no clock, so a test reads exactly what will run on the source server, and the chain runner
(``bot.backup.runner``, someone else's) executes it.

Configs never hold secrets. Credentials arrive separately (decrypted by the caller) as the probes' own models —
:class:`~bot.probes.dbcheck.DbCredential`, :class:`~bot.probes.mysql.MySQLCredential`,
:class:`~bot.probes.postgresql.PgCredential` — and a plan hands a password to the dump only through the job's
``secret_env`` (fed to the server on stdin, never argv).

Dump file names inside an archive (``--stdin-name``) carry the database name percent-encoded, so a restore
can tell which database an archive came from even when the archive suffix had to be shortened.
"""

from __future__ import annotations

import builtins
import hashlib
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable
from urllib.parse import quote, unquote

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from bot.backup.jobs import ArchiveJob, safe_suffix

if TYPE_CHECKING:  # restore_db imports the source modules, which import this one
    from bot.backup.restore_db import DumpRef, RestoreResult
    from bot.borg.repo import Repo
    from bot.transport.base import Transport

MAX_SUFFIX = 80  # ArchiveJob's limit
_HASH_LEN = 8


class SourceConfig(BaseModel):
    """Base of every stored source config: immutable, unknown keys refused (a typo must not pass silently)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class DatabaseSelection(SourceConfig):
    """Which databases a database source dumps: ``databases`` empty = all the probe found, minus ``exclude``."""

    databases: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @field_validator("databases", "exclude")
    @classmethod
    def _names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(clean_name(v, "database") for v in value))


class Facts(BaseModel):
    """Base of the facts a plan needs (probe results, credentials). Credentials use ``SecretStr`` fields, so the
    repr of a facts value never shows a password."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class PlanError(ValueError):
    """The config cannot be planned with these facts (e.g. a chosen volume no longer exists). The message is a
    sentence for a person and never contains a secret."""


C = TypeVar("C", bound=SourceConfig)
F_contra = TypeVar("F_contra", contravariant=True)


@runtime_checkable
class Source(Protocol[C, F_contra]):
    """A backup source type. ``plan`` is pure; ``validate`` answers in sentences (empty list = fine).
    ``config_model`` is the pydantic model of the stored config (a property here so the protocol stays
    invariant in it)."""

    type: str

    @property
    def config_model(self) -> builtins.type[C]: ...

    def plan(self, config: C, facts: F_contra) -> list[ArchiveJob]: ...

    def validate(self, config: Mapping[str, Any] | C) -> list[str]: ...


Cred_contra = TypeVar("Cred_contra", contravariant=True)


@runtime_checkable
class DatabaseSource(Source[C, F_contra], Protocol[C, F_contra, Cred_contra]):
    """A source whose dumps restore into a named database (PostgreSQL, MySQL/MariaDB). ``restore`` refuses the
    source database and existing ones unless ``overwrite=True``; see :mod:`bot.backup.restore_db`."""

    async def restore(
        self, transport: Transport, repo: Repo, dump: DumpRef, target: str, credential: Cred_contra, **options: Any
    ) -> RestoreResult: ...


def parse_config(model: type[C], config: Mapping[str, Any] | C) -> tuple[C | None, list[str]]:
    """``(config, [])`` or ``(None, sentences)``: pydantic's errors rewritten as sentences naming the field."""
    if isinstance(config, model):
        return config, []
    try:
        return model.model_validate(config), []
    except ValidationError as exc:
        return None, [error_sentence(e) for e in exc.errors(include_url=False, include_input=False)]


def error_sentence(error: Mapping[str, Any]) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()) if part != "__root__")
    message = str(error.get("msg", "is not valid")).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


# --- names -------------------------------------------------------------------------------------------------------


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_LEN]


def job_suffix(prefix: str, name: str) -> str:
    """``{prefix}-{name}`` as an archive suffix. When the name is not already a clean lowercase suffix (``Shop``,
    ``my db``, a very long name) a short hash of the exact name is appended, so two databases whose cleaned
    names collide (``Shop`` and ``shop``) still get separate archive histories, and the suffix of a name never
    depends on which other names exist (retention stays stable when a database is added)."""
    cleaned = safe_suffix(name)
    suffix = f"{prefix}-{cleaned}"
    if cleaned == name and len(suffix) <= MAX_SUFFIX:
        return suffix
    room = MAX_SUFFIX - len(prefix) - _HASH_LEN - 2
    return f"{prefix}-{cleaned[:room].rstrip('._+-') or 'x'}-{_digest(name)}"


def dump_name(database: str, extension: str) -> str:
    """The file name of a dump inside its archive: the exact database name percent-encoded (reversible, no
    ``/``), never starting with ``-`` (borg would read it as an option)."""
    encoded = quote(database, safe="")
    if encoded.startswith("-"):
        encoded = "%2D" + encoded[1:]
    return f"{encoded}.{extension}"


def database_of(stdin_name: str) -> str:
    """The database name encoded by :func:`dump_name` (``shop.pgdump`` → ``shop``)."""
    stem = stdin_name.rsplit("/", 1)[-1]
    return unquote(stem.rsplit(".", 1)[0] if "." in stem else stem)


_BAD_TEXT = re.compile(r"[\x00\n\r]")


def clean_name(value: str, what: str) -> str:
    """A database/volume/container name: non-empty, no NUL or line break (they cannot cross the transport)."""
    if not value or _BAD_TEXT.search(value):
        raise ValueError(f"{what} {value!r} must be non-empty and may not contain NUL bytes or line breaks")
    return value
