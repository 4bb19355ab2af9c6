"""Restore core for files: extract chosen paths of an archive into a new directory on a server, then prove it.

Safety first: a restore never writes over live data by accident. The target must be an absolute directory
other than ``/``, empty or new (``allow_non_empty`` to add into an existing one: only after an admin confirmed it);
archive paths are recreated *below* it (``/etc/nginx`` → ``<target>/etc/nginx``). Database dumps are restored by
:mod:`bot.backup.restore_db`.

A restore in progress is *marked*: before borg writes anything the directory gets :data:`MARKER`, a file naming the
restore, removed only once the result was verified. A bot that dies half-way leaves a target that says "this is
partial" to anyone who looks, and a retry of the same restore (same ``token``) may resume into it — nothing else may.

Verification (:class:`Verified`): the regular files below the target (count and bytes, each hard link counted as
its path) against the archive's listing of the same selection (``borg list --json-lines``), and the SHA-256 of a
sample of files against borg's own ``{sha256}`` of the archived content.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.borg import extract
from bot.borg import list as borg_list
from bot.borg.list import ArchiveEntry
from bot.borg.repo import Repo
from bot.borg.runner import run_borg
from bot.transport.base import Transport

MARKER = ".backup-bot-restore-incomplete"
SAMPLE = 5  # files whose content is checked by checksum
_NEAREST = 'p=$1; while [ ! -e "$p" ]; do p=$(dirname -- "$p"); done; printf "%s" "$p"'
_SIZES = 'find "$1" -type f ! -path "$1/$2" -printf "%s\\n"; printf "links=%s\\n" "$(find "$1" -type l | wc -l)"'
_SUMS = 'for f do sha256sum < "$f" || echo "missing"; done'
_HEX = re.compile(r"[0-9a-f]{64}")


class RestoreRefused(Exception):
    """The restore would be unsafe or cannot start; the message says why and what to choose instead."""


class RestoreFailed(Exception):
    """The restore ran and its result is wrong (counts, bytes or checksums differ); the message says what."""


@dataclass(frozen=True)
class Expected:
    """What the archive's listing says the selection holds."""

    files: int
    bytes: int
    links: int
    sample: tuple[str, ...]  # archive paths of regular files to checksum


@dataclass
class Verified:
    """What was found below the target, against the listing; ``ok`` when everything matches."""

    files: int
    bytes: int
    links: int
    expected: Expected
    checksums: dict[str, bool] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        e = self.expected
        return (self.files, self.bytes, self.links) == (e.files, e.bytes, e.links) and all(self.checksums.values())

    def problems(self) -> list[str]:
        e, found = self.expected, []
        if self.files != e.files:
            found.append(f"{self.files} files restored, the archive lists {e.files}")
        if self.bytes != e.bytes:
            found.append(f"{self.bytes} bytes restored, the archive lists {e.bytes}")
        if self.links != e.links:
            found.append(f"{self.links} symbolic links restored, the archive lists {e.links}")
        bad = [path for path, good in self.checksums.items() if not good]
        if bad:
            found.append(f"checksum differs for {len(bad)} of {len(self.checksums)} sampled files ({bad[0][:200]})")
        return found

    def as_dict(self) -> dict[str, Any]:
        e = self.expected
        return {"files": self.files, "bytes": self.bytes, "links": self.links, "expected_files": e.files,
                "expected_bytes": e.bytes, "expected_links": e.links, "sampled": len(self.checksums),
                "checksums_ok": sum(self.checksums.values()), "ok": self.ok}  # fmt: skip


@dataclass(frozen=True)
class RestoreResult:
    archive: str
    target_dir: str
    files: int
    verified: Verified | None = None


async def archives(pool: Transport, repo: Repo, *, prefix: str | None = None, borg: str = "borg") -> list[ArchiveEntry]:
    """The repository's archives (newest last), optionally only those of one chain prefix."""
    return await borg_list.archives(pool, repo, glob=f"{prefix}-*" if prefix else None, borg=borg)


# --- the selection ------------------------------------------------------------------------------------------------


def relative(paths: Iterable[str]) -> list[str]:
    """Archive paths as borg stores them (no leading slash), normalised; ``/`` (everything) becomes no path."""
    out = []
    for path in paths:
        clean = posixpath.normpath("/" + str(path).lstrip("/")).lstrip("/")
        if clean and clean not in out:
            out.append(clean)
    return out


def selected(path: str, chosen: Sequence[str]) -> bool:
    """Is an archive ``path`` inside the selection (borg's path-prefix rule: the path itself or below it)?"""
    return not chosen or any(path == c or path.startswith(c + "/") for c in chosen)


def expected_of(items: Sequence[Mapping[str, Any]], chosen: Sequence[str], *, sample: int = SAMPLE) -> Expected:
    """Given the archive's listing and the chosen paths, return the files, bytes and symbolic links borg will write.

    A hard link is listed by borg 1.4 with mode ``h…`` and size 0 (its content is its ``source``'s): on disk it is
    a path of that size, so it counts with the source's size."""
    sizes = {str(i["path"]): int(i.get("size") or 0) for i in items if i.get("type") == "-"}
    files = total = links = 0
    candidates: list[tuple[int, str]] = []
    for item in items:
        path = str(item.get("path", ""))
        if not selected(path, chosen):
            continue
        if item.get("type") == "l":
            links += 1
        elif item.get("type") == "-":
            hard = str(item.get("mode", "")).startswith("h")
            size = sizes.get(str(item.get("source") or ""), 0) if hard else int(item.get("size") or 0)
            files, total = files + 1, total + size
            if not hard and size > 0:
                candidates.append((size, path))
    # A spread of the sample: the largest file and files from across the listing (order of the archive).
    picks = sorted(candidates, reverse=True)[:1] + candidates[:: max(1, len(candidates) // max(sample - 1, 1))]
    ordered = list(dict.fromkeys(path for _, path in picks))[:sample]
    return Expected(files=files, bytes=total, links=links, sample=tuple(ordered))


def pattern(path: str) -> str:
    """An archive path as an exact borg path-prefix pattern (also for names starting with ``-`` or ``re:``)."""
    return "pp:" + path


async def listing(transport: Transport, repo: Repo, archive: str, *, borg: str = "borg",
                  timeout: float | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Every item of ``archive`` (path, type, mode, size, source) from ``borg list --json-lines``."""
    return await borg_list.items(transport, repo, archive, borg=borg, timeout=timeout)


async def archived_sums(transport: Transport, repo: Repo, archive: str, paths: Sequence[str], *,
                        borg: str = "borg") -> dict[str, str]:  # fmt: skip
    """borg's SHA-256 of the archived content of ``paths`` (regular files)."""
    if not paths:
        return {}
    args = ["list", "--json-lines", "--format", "{sha256}", repo.archive(archive), "--", *map(pattern, paths)]
    result = await run_borg(transport, args, repo, borg=borg)
    wanted = set(paths)
    return {str(i["path"]): str(i.get("sha256") or "") for i in result.json_lines() if i.get("path") in wanted}


# --- the target ---------------------------------------------------------------------------------------------------


def target_problem(target_dir: str) -> str | None:
    """Why ``target_dir`` can never be a restore target (None when its form is fine)."""
    text = str(target_dir or "")
    if not text.startswith("/"):
        return "The restore directory must be an absolute path such as /var/restore/2026-03-01."
    if ".." in text.split("/") or "\x00" in text or "\n" in text:
        return "The restore directory may not contain '..', NUL bytes or line breaks."
    if posixpath.normpath(text) == "/":
        return "Restore into a new directory such as /var/restore/2026-03-01, never into / itself."
    return None


async def target_state(transport: Transport, target_dir: str, *, sudo: bool = False) -> tuple[str, str]:
    """``(state, marker text)``: ``new`` (missing or empty), ``marked`` (only a partial restore's files with its
    marker) or ``full`` (other content), and the marker's content when there is one."""
    script = ('[ -e "$1" ] || { echo new; exit 0; }; [ -d "$1" ] || { echo full; exit 0; }; '
              '[ -z "$(ls -A -- "$1")" ] && { echo new; exit 0; }; '
              '[ -f "$1/$2" ] && { echo marked; cat -- "$1/$2"; exit 0; }; echo full')  # fmt: skip
    probe = await transport.run(["sh", "-c", script, "sh", target_dir, MARKER], sudo=sudo, timeout=60)
    state, _, marker = probe.out.partition("\n")
    return (state.strip() or "full"), marker.strip()


async def check_target(transport: Transport, target_dir: str, *, allow_non_empty: bool = False, token: str = "",
                       sudo: bool = False) -> str:  # fmt: skip
    """Refuse ``/``, relative paths and non-empty directories (unless ``allow_non_empty``, or the directory holds
    only the partial restore of this same ``token``); return the state found (see :func:`target_state`)."""
    problem = target_problem(target_dir)
    if problem:
        raise RestoreRefused(problem)
    state, marker = await target_state(transport, target_dir, sudo=sudo)
    if state == "marked" and token and marker.split()[:1] == [token]:
        return state  # our own partial restore: a retry resumes into it
    if state != "new" and not allow_non_empty:
        partial = " (it holds an incomplete restore: remove it first)" if state == "marked" else ""
        raise RestoreRefused(f"{target_dir} already exists and is not empty{partial}; choose a new directory.")
    return state


async def free_bytes(transport: Transport, path: str) -> int | None:
    """Free bytes of the file system ``path`` would be created on (its nearest existing ancestor); None unknown."""
    nearest = await transport.run(["sh", "-c", _NEAREST, "sh", path], timeout=30)
    if not nearest.ok:
        return None
    result = await transport.run(["df", "-Pk", "--", nearest.out.strip() or "/"], timeout=30)
    rows = result.out.strip().splitlines() if result.ok else []
    fields = rows[-1].split() if len(rows) >= 2 else []
    return int(fields[3]) * 1024 if len(fields) >= 4 and fields[3].isdigit() else None


async def borg_problem(transport: Transport, borg: str, server: str) -> str | None:
    """Why ``server`` cannot run a restore with ``borg`` (None when ``borg --version`` answers)."""
    result = await transport.run([borg, "--version"], timeout=60)
    if result.ok and result.out.lower().startswith("borg"):
        return None
    return (f"{server} has no working borg ({result.describe_failure(120)}): install BorgBackup 1.4 there, or "
            "restore to another server.")  # fmt: skip


async def space_problem(transport: Transport, target: str, needed: int, server: str) -> str | None:
    """Why ``needed`` bytes do not fit below ``target`` on ``server`` (None when they do, or free space is unknown)."""
    free = await free_bytes(transport, target)
    if free is None or free >= needed * 1.05 + 64 * 1024 * 1024:
        return None
    return (f"{server} has {human(free)} free for {target}, and the restore needs {human(needed)}: free space "
            "there, or choose another directory or server.")  # fmt: skip


def human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


# --- doing it -----------------------------------------------------------------------------------------------------


async def mark(transport: Transport, target_dir: str, token: str, what: str, *, sudo: bool = False) -> None:
    """Create the target and its :data:`MARKER` (``token`` first, then what is being restored) before any extract."""
    text = f"{token}\nIncomplete restore by backup-bot: {what}. Until this file is gone, the directory is partial.\n"
    script = 'mkdir -p -- "$1" && cat > "$1/$2"'
    result = await transport.run(["sh", "-c", script, "sh", target_dir, MARKER], stdin=text.encode(), sudo=sudo,
                                 timeout=60)  # fmt: skip
    if not result.ok:
        raise RestoreRefused(f"{target_dir} cannot be created: {result.describe_failure(200)}.")


async def unmark(transport: Transport, target_dir: str, *, sudo: bool = False) -> None:
    await transport.run(["rm", "-f", "--", f"{target_dir.rstrip('/')}/{MARKER}"], sudo=sudo, timeout=60)


async def verify(transport: Transport, repo: Repo, archive: str, target_dir: str, expected: Expected, *,
                 archive_side: tuple[Transport, Repo, str] | None = None, sudo: bool = False,
                 borg: str = "borg") -> Verified:  # fmt: skip
    """Count what is below ``target_dir`` and checksum the sample against borg's own hashes of the archive."""
    sizes = await transport.run(["sh", "-c", _SIZES, "sh", target_dir.rstrip("/"), MARKER], sudo=sudo)
    lines = sizes.out.splitlines()
    links = int(lines[-1].split("=", 1)[1]) if lines and lines[-1].startswith("links=") else -1
    numbers = [int(n) for n in lines[:-1] if n.strip().isdigit()]
    verified = Verified(files=len(numbers), bytes=sum(numbers), links=links, expected=expected)
    if expected.sample:
        side = archive_side or (transport, repo, borg)
        archived = await archived_sums(side[0], side[1], archive, expected.sample, borg=side[2])
        local = [f"{target_dir.rstrip('/')}/{path}" for path in expected.sample]
        sums = await transport.run(["sh", "-c", _SUMS, "sh", *local], sudo=sudo, timeout=3600)
        found = [(_HEX.search(line) or [""])[0] for line in sums.out.splitlines()]
        for path, got in zip(expected.sample, found + [""] * len(expected.sample), strict=False):
            verified.checksums[path] = bool(got) and got == archived.get(path)
    return verified


async def restore_paths(
    transport: Transport, repo: Repo, archive: str, target_dir: str, paths: Sequence[str] = (), *,
    allow_non_empty: bool = False, sudo: bool = False, borg: str = "borg", token: str = "",
    items: Sequence[Mapping[str, Any]] | None = None, archive_side: tuple[Transport, Repo, str] | None = None,
) -> RestoreResult:  # fmt: skip
    """Extract ``paths`` (all when empty) of ``archive`` below ``target_dir`` on the server of ``transport``, then
    verify the result against the archive's listing (``items``, listed now when not given; ``archive_side``: the
    transport, Repo and borg that list it, default the restoring side). Raises :class:`RestoreRefused` before
    anything is written, :class:`RestoreFailed` when the result differs; the marker stays on a failed target."""
    token = token or "r" + hashlib.sha256(f"{archive}{target_dir}".encode()).hexdigest()[:12]
    await check_target(transport, target_dir, allow_non_empty=allow_non_empty, token=token, sudo=sudo)
    chosen = relative(paths)
    side = archive_side or (transport, repo, borg)
    listed = items if items is not None else await listing(side[0], side[1], archive, borg=side[2])
    expected = expected_of(listed, chosen)
    missing = [p for p in chosen if not any(selected(str(i.get("path", "")), [p]) for i in listed)]
    if missing:
        raise RestoreRefused(f"{missing[0][:200]} is not in the archive {archive}; choose paths from its listing.")
    await mark(transport, target_dir, token, f"{archive} {' '.join(chosen) or '(everything)'}", sudo=sudo)
    await extract.run(transport, repo, archive, target_dir, [pattern(p) for p in chosen], borg=borg, sudo=sudo)
    verified = await verify(transport, repo, archive, target_dir, expected, archive_side=side, sudo=sudo, borg=borg)
    if not verified.ok:
        raise RestoreFailed(f"The restore into {target_dir} does not match the archive: "
                            + "; ".join(verified.problems()) + f". The directory is marked incomplete ({MARKER}).")
    await unmark(transport, target_dir, sudo=sudo)
    return RestoreResult(archive=archive, target_dir=target_dir, files=verified.files, verified=verified)
