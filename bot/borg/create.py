"""``borg create``: paths (files, full system, snapshot views) or a streamed command's output (dumps).

``--json`` gives the archive's name, id and stats; ``--content-from-command`` makes borg run the dump
itself and abort the archive when the dump exits non-zero, so a failed dump never leaves an archive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.borg.repo import Repo
from bot.borg.runner import BorgResult, EventHandler, run_borg
from bot.transport.base import Transport

CACHE_EXCLUDES = ("--exclude-caches",)  # CACHEDIR.TAG directories (browsers, build tools, …)
_LEVELS = {"zstd": (1, 22), "zlib": (0, 9), "lzma": (0, 9)}
COMPRESSION_HELP = (
    "Use lz4 (fast, the default), zstd,N (1–22; 3 is a good balance), zlib,N, lzma,N, none, or auto,<one of those>."
)


def compression(spec: str) -> str:
    """Validate a borg compression spec such as ``lz4``, ``zstd,3``, ``auto,zstd,10``; returns it normalised."""
    text = (spec or "").strip().lower().replace(" ", "")
    parts = text.split(",")
    if parts[0] == "auto" and len(parts) > 1:
        return "auto," + compression(",".join(parts[1:]))
    if parts == ["lz4"] or parts == ["none"]:
        return parts[0]
    if parts[0] in _LEVELS:
        low, high = _LEVELS[parts[0]]
        if len(parts) == 1:
            return parts[0]
        if len(parts) == 2 and parts[1].isdigit() and low <= int(parts[1]) <= high:
            return f"{parts[0]},{int(parts[1])}"
    raise ValueError(f"{spec!r} is not a borg compression. {COMPRESSION_HELP}")


@dataclass(frozen=True)
class CreateOptions:
    compression: str = "lz4"
    excludes: tuple[str, ...] = ()  # borg patterns, e.g. "sh:/home/*/.cache"
    one_file_system: bool = False
    exclude_caches: bool = True
    timestamp: str | None = None  # ISO-8601, for tests and imports
    progress: bool = False
    numeric_ids: bool = False


@dataclass(frozen=True)
class ArchiveStats:
    name: str
    id: str
    original_size: int
    compressed_size: int
    deduplicated_size: int
    nfiles: int
    duration: float
    start: str
    end: str


def _common(options: CreateOptions) -> list[str]:
    args = ["create", "--json", "--compression", compression(options.compression)]
    if options.one_file_system:
        args.append("--one-file-system")
    if options.exclude_caches:
        args.extend(CACHE_EXCLUDES)
    if options.numeric_ids:
        args.append("--numeric-ids")
    if options.progress:
        args.append("--progress")
    if options.timestamp:
        args.extend(["--timestamp", options.timestamp])
    for pattern in options.excludes:
        args.extend(["--exclude", pattern])
    return args


def paths_argv(repo: Repo, archive: str, paths: Sequence[str], options: CreateOptions) -> tuple[str, ...]:
    if not paths:
        raise ValueError("borg create needs at least one path")
    return (*_common(options), repo.archive(archive), *paths)


def command_argv(
    repo: Repo, archive: str, stdin_name: str, command: Sequence[str], options: CreateOptions
) -> tuple[str, ...]:
    """Archive the stdout of ``command`` as the single file ``stdin_name``."""
    if not command:
        raise ValueError("--content-from-command needs a command")
    return (*_common(options), "--stdin-name", stdin_name, "--content-from-command", repo.archive(archive), "--",
            *command)  # fmt: skip


def parse_stats(result: BorgResult) -> ArchiveStats:
    data = result.json()["archive"]
    stats = data["stats"]
    return ArchiveStats(
        name=data["name"], id=data["id"], original_size=stats["original_size"],
        compressed_size=stats["compressed_size"], deduplicated_size=stats["deduplicated_size"],
        nfiles=stats["nfiles"], duration=float(data["duration"]), start=data["start"], end=data["end"],
    )  # fmt: skip


async def run(
    transport: Transport, repo: Repo, args: tuple[str, ...], *, on_event: EventHandler | None = None, **kwargs
) -> tuple[BorgResult, ArchiveStats | None]:
    """Run a create built by :func:`paths_argv` or :func:`command_argv`; stats when borg wrote its JSON."""
    result = await run_borg(transport, args, repo, on_event=on_event, **kwargs)
    stats = parse_stats(result) if result.outcome != "error" and result.stdout.strip() else None
    return result, stats
