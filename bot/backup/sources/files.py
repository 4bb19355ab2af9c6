"""Files: chosen absolute paths, borg exclude patterns, optionally one file system, caches left out by default.

Caches are excluded two ways when ``exclude_caches`` is on (the default):

- ``--exclude-caches``: directories holding a ``CACHEDIR.TAG`` (the cache-directory standard that browsers,
  build tools, ccache, borg's own cache … write);
- :data:`DEFAULT_CACHE_EXCLUDES`: well-known cache locations that carry no tag — XDG caches (``~/.cache``:
  pip, browsers, thumbnails), desktop trash, Python byte-code caches. All are rebuilt automatically, and
  backing them up costs space and churn for nothing.

Patterns are borg patterns (``borg help patterns``): ``sh:`` (``**/`` = any depth, ``*`` stops at ``/``),
``fm:`` (the default for ``--exclude``), ``re:``, ``pp:`` (path prefix), ``pf:`` (full path). A pattern
ending in ``/`` keeps the directory but drops its content.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from typing import Any

from pydantic import field_validator

from bot.backup.jobs import ArchiveJob
from bot.backup.sources.base import SourceConfig, parse_config

DEFAULT_CACHE_EXCLUDES = (
    "sh:**/.cache",  # XDG cache dirs: pip, browsers, thumbnails, fontconfig …
    "sh:**/.local/share/Trash",  # desktop trash
    "sh:**/.thumbnails",  # pre-XDG thumbnail cache
    "sh:**/__pycache__",  # Python byte code, rebuilt on import
)
PATTERN_STYLES = ("fm", "sh", "re", "pp", "pf")
_STYLE = re.compile(r"^([a-z]{2}):")


def check_pattern(pattern: str) -> str:
    """A borg exclude pattern: known style prefix, a compilable ``re:``, no line breaks (borg reads patterns
    one per line from files, and a line break on argv would be a confusing pattern)."""
    if not pattern.strip() or any(ch in pattern for ch in "\x00\n\r"):
        raise ValueError(f"the exclude pattern {pattern!r} is empty or contains a line break")
    match = _STYLE.match(pattern)
    if match and match.group(1) not in PATTERN_STYLES:
        raise ValueError(
            f"the exclude pattern {pattern!r} starts with the unknown style {match.group(1)!r}: use one of "
            + ", ".join(f"{s}:" for s in PATTERN_STYLES)
        )
    if match and match.group(1) == "re":
        try:
            re.compile(pattern[3:])
        except re.error as exc:
            raise ValueError(f"the exclude pattern {pattern!r} is not a valid regular expression: {exc}") from None
    return pattern


def normal_path(path: str) -> str:
    """An absolute path in its plain form (``/srv/data/`` → ``/srv/data``); relative paths and ``..`` are
    refused, because on the server they would depend on the SSH session's working directory."""
    if not path.startswith("/"):
        raise ValueError(f"{path!r} is not an absolute path (it must start with /)")
    if any(ch in path for ch in "\x00\n\r"):
        raise ValueError(f"{path!r} contains a NUL byte or a line break")
    if ".." in path.split("/"):
        raise ValueError(f"{path!r} contains '..': write the path it leads to instead")
    normal = posixpath.normpath(path)
    return "/" + normal.lstrip("/") if normal.startswith("//") else normal


def check_not_nested(paths: tuple[str, ...]) -> tuple[str, ...]:
    """Refuse duplicates and paths inside another chosen path (borg would store those files twice)."""
    seen: list[str] = []
    for path in paths:
        for other in seen:
            if path == other:
                raise ValueError(f"{path} is listed twice")
            inner, outer = (path, other) if len(path) > len(other) else (other, path)
            if outer == "/" or inner.startswith(outer + "/"):
                raise ValueError(f"{inner} is inside {outer}, which is already backed up")
        seen.append(path)
    return paths


class FilesConfig(SourceConfig):
    """What the wizard stores for a files source."""

    paths: tuple[str, ...]
    excludes: tuple[str, ...] = ()
    one_file_system: bool = False
    exclude_caches: bool = True

    @field_validator("paths")
    @classmethod
    def _paths(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("choose at least one path to back up")
        return check_not_nested(tuple(normal_path(p) for p in value))

    @field_validator("excludes")
    @classmethod
    def _excludes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check_pattern(p) for p in value)


def cache_excludes(enabled: bool) -> tuple[str, ...]:
    return DEFAULT_CACHE_EXCLUDES if enabled else ()


class FilesSource:
    """Paths on the source server, archived as they are (or through the chain's snapshot view)."""

    type = "files"
    config_model = FilesConfig

    def plan(self, config: FilesConfig, facts: None = None) -> list[ArchiveJob]:
        del facts  # a files plan depends on the config alone
        shown = ", ".join(config.paths[:3]) + (f" and {len(config.paths) - 3} more" if len(config.paths) > 3 else "")
        return [
            ArchiveJob(
                suffix="files",
                kind="paths",
                paths=config.paths,
                excludes=(*cache_excludes(config.exclude_caches), *config.excludes),
                one_file_system=config.one_file_system,
                exclude_caches=config.exclude_caches,
                description=f"Files: {shown}",
            )
        ]

    def validate(self, config: Mapping[str, Any] | FilesConfig) -> list[str]:
        return parse_config(FilesConfig, config)[1]
