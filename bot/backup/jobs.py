"""What a source plans and the chain runner executes: one borg archive per :class:`ArchiveJob`.

A source never runs anything itself when planning: ``plan`` is pure and returns jobs, so a test can read
exactly what will run on the server. The runner (``bot.backup.runner``) turns each job into one
``borg create`` on the source server: ``paths`` jobs archive files (through a snapshot view when the chain
has one), ``command`` jobs stream a dump's stdout with ``--content-from-command`` so borg aborts the
archive when the dump fails. ``before``/``after`` bracket a job (e.g. stop and restart a container):
``after`` always runs, even when the job failed.

Archive names are ``{prefix}-{suffix}-{YYYYmmddTHHMMSS}`` (UTC); retention is applied per ``{prefix}-{suffix}-*``, so
each database keeps its own history.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

_SUFFIX = re.compile(r"^[a-z0-9][a-z0-9._+-]{0,79}$")


def safe_suffix(text: str) -> str:
    """A name usable in archive names from a database/volume name (lowercase, unsafe characters → ``_``)."""
    cleaned = re.sub(r"[^a-z0-9._+-]", "_", text.lower()).strip("._-+") or "x"
    return cleaned[:80]


@dataclass(frozen=True)
class ArchiveJob:
    """One archive to create. ``secret_env`` (e.g. a database password) reaches borg's environment and from
    there the dump command; the transport feeds it through stdin, never argv."""

    suffix: str  # unique within the chain's plan: "files", "db-shop", "globals", "volume-data", …
    kind: Literal["paths", "command"]
    paths: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()  # borg patterns
    one_file_system: bool = False
    exclude_caches: bool = True
    command: tuple[str, ...] = ()  # for kind="command": the dump, as an argument list
    stdin_name: str = "stdin"  # the file name the dump gets inside the archive
    secret_env: Mapping[str, str] = field(default_factory=dict, repr=False)
    before: tuple[tuple[str, ...], ...] = ()  # argument lists run before the job, in order
    after: tuple[tuple[str, ...], ...] = ()  # argument lists run after it, always
    privileged: bool = True  # needs root (reading all files, dumping as the postgres user, docker)
    description: str = ""  # for people: "PostgreSQL database shop (pg_dump -Fc)"

    def __post_init__(self) -> None:
        if not _SUFFIX.match(self.suffix):
            raise ValueError(f"job suffix {self.suffix!r} must be lowercase letters, digits and . _ + -")
        if self.kind == "paths" and not self.paths:
            raise ValueError("a paths job needs at least one path")
        if self.kind == "command" and not self.command:
            raise ValueError("a command job needs a command")


STAMP_FORMAT = "%Y%m%dT%H%M%S"  # UTC; the uppercase T cannot occur in a (lowercase) suffix
_STAMP_GLOB = "[0-9]" * 8 + "T" + "[0-9]" * 6


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(STAMP_FORMAT)


def archive_name(prefix: str, suffix: str, moment: datetime) -> str:
    return f"{prefix}-{suffix}-{stamp(moment)}"


def archive_glob(prefix: str, suffix: str) -> str:
    """Matches exactly this job's archives: ``db-shop`` never matches ``db-shop-old``'s."""
    return f"{prefix}-{suffix}-{_STAMP_GLOB}"
