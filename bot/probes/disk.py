"""Disk facts for a path: its filesystem (type, mount point, device, free/total bytes) and a size estimate.

Mount facts come from ``findmnt -J -b -T <path>`` (util-linux): one JSON object for the filesystem holding the
path. util-linux before 2.38.1 prints every value as a JSON string ("size": "123"), later ones as numbers, and
findmnt appends the subvolume/bind root to SOURCE ("/dev/sda2[/@home]"); both are handled. A server without
findmnt (busybox systems, minimal containers), or with one too old for --json (util-linux < 2.27, e.g. CentOS 7),
falls back to ``df -P -B1 -T`` (POSIX output, no line wrapping), which gives the same facts except the fsroot.

The size estimate runs ``du -x`` once per path inside a fixed ``sh`` script (paths reach it only as "$@"), under
``timeout`` with one deadline for all paths, so a huge tree ends as "estimate incomplete after N s" with whatever
was measured instead of a failed probe. ``du -d 1 -0`` rather than ``du -s``: GNU du flushes every line it
prints, so when the deadline cuts a path short the first-level directories already finished still add up to a
lower bound; records are NUL-terminated so names with newlines cannot confuse the parser. A du without ``-0``/
``-B1`` (busybox) runs as ``du -x -d 1 -k`` and gives no partial sizes.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Sequence
from typing import Any, Literal

from bot.probes.base import Model, ProbeContext, ProbeError
from bot.transport.base import CommandTimeout

FINDMNT_COLUMNS = "TARGET,SOURCE,FSTYPE,SIZE,AVAIL"
DEFAULT_TIME_LIMIT = 60.0
TIMEOUT_MARGIN = 15.0  # the transport's own timeout is this much later than the script's deadline
_TIMED_OUT = {124, 137, 143}  # GNU timeout; busybox timeout (killed by TERM/KILL)


class MountInfo(Model):
    """The filesystem a path lives on."""

    path: str  # the path asked about
    target: str  # its mount point
    source: str  # device ("/dev/vda1", "/dev/mapper/vg-lv"), dataset ("rpool/home") or pseudo-source ("tmpfs")
    fsroot: str  # subvolume or bind root inside that filesystem ("/", "/@home"); "" when unknown (df)
    fstype: str
    size_bytes: int | None
    avail_bytes: int | None  # available to unprivileged users (what borg's cache and a local repo may use)
    via: Literal["findmnt", "df"]


def findmnt_argv(path: str) -> tuple[str, ...]:
    return ("findmnt", "-J", "-b", "-T", path, "-o", FINDMNT_COLUMNS)


def df_argv(path: str) -> tuple[str, ...]:
    return ("df", "-P", "-B1", "-T", "--", path)


def _bytes(value: Any, what: str) -> int | None:
    """A size column: a number (util-linux ≥ 2.38.1), a digit string (older), or null/empty."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ProbeError(f"findmnt printed {value!r} as {what}, not a number of bytes.")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise ProbeError(f"findmnt printed {value!r} as {what}, not a number of bytes (was -b ignored?).")


def split_source(source: str) -> tuple[str, str]:
    """``/dev/sda2[/@home]`` → (``/dev/sda2``, ``/@home``); a plain source has fsroot ``/``."""
    if source.endswith("]") and "[" in source:
        device, _, root = source[:-1].partition("[")
        return device, root or "/"
    return source, "/"


def parse_findmnt(text: str, path: str) -> MountInfo:
    """Parse ``findmnt -J -b -T <path> -o TARGET,SOURCE,FSTYPE,SIZE,AVAIL``; garbage raises ProbeError."""
    try:
        data = json.loads(text)
        entry = data["filesystems"][0]
        target, source, fstype = entry["target"], entry["source"], entry["fstype"]
        size, avail = entry.get("size"), entry.get("avail")
    except (ValueError, KeyError, IndexError, TypeError):
        raise ProbeError(
            f"findmnt printed something that is not the expected JSON for {path!r} "
            f"(starts with {text.strip()[:60]!r}); the server's util-linux may be too old for --json."
        ) from None
    if not all(isinstance(v, str) and v for v in (target, source, fstype)):
        raise ProbeError(f"findmnt gave no mount point, source or type for {path!r}.")
    device, fsroot = split_source(source)
    return MountInfo(
        path=path,
        target=target,
        source=device,
        fsroot=fsroot,
        fstype=fstype,
        size_bytes=_bytes(size, "the size"),
        avail_bytes=_bytes(avail, "the free space"),
        via="findmnt",
    )


def parse_df(text: str, path: str) -> MountInfo:
    """Parse ``df -P -B1 -T <path>``: a header, then ``source type size used avail capacity mountpoint``."""
    lines = [line for line in text.splitlines() if line.strip()]
    fields = lines[1].split(None, 6) if len(lines) >= 2 else []
    if len(fields) != 7 or not all(f.isdigit() for f in fields[2:5]):
        raise ProbeError(
            f"df printed something unexpected for {path!r} (starts with {text.strip()[:60]!r}); "
            "it should be POSIX output (df -P)."
        )
    return MountInfo(
        path=path,
        target=fields[6],
        source=fields[0],
        fsroot="",
        fstype=fields[1],
        size_bytes=int(fields[2]),
        avail_bytes=int(fields[4]),
        via="df",
    )


def require_absolute(path: str) -> str:
    """Probes take absolute paths only: a relative one would silently mean "relative to the login's home"."""
    if not isinstance(path, str) or not path.startswith("/") or "\x00" in path:
        raise ProbeError(f"{path!r} is not an absolute path; give the full path, starting with / (like /var/www).")
    return path


async def mount_info(ctx: ProbeContext, path: str) -> MountInfo:
    """The filesystem holding ``path`` (findmnt, else df); a missing path raises a ProbeError that says so."""
    require_absolute(path)
    result = await ctx.run(findmnt_argv(path), what="findmnt", check=False)
    if result.exit_status == 127 or _too_old(result.err):  # no findmnt, or one without --json (util-linux < 2.27)
        return await _via_df(ctx, path)
    if result.ok:
        return parse_findmnt(result.out, path)
    await _explain_missing(ctx, path)
    raise ProbeError(f"findmnt could not find the filesystem of {path!r}: {result.describe_failure()}.")


def _too_old(err: str) -> bool:
    return any(words in err for words in ("unrecognized option", "invalid option", "unknown column"))


async def _via_df(ctx: ProbeContext, path: str) -> MountInfo:
    result = await ctx.run(df_argv(path), what="df", check=False)
    if result.exit_status == 127:
        raise ProbeError(
            "Neither findmnt nor df is installed on this server, so its disks cannot be inspected. "
            "Install util-linux (findmnt) or coreutils (df)."
        )
    if not result.ok:
        await _explain_missing(ctx, path)
        raise ProbeError(f"df could not read the filesystem of {path!r}: {result.describe_failure()}.")
    return parse_df(result.out, path)


async def _explain_missing(ctx: ProbeContext, path: str) -> None:
    """After findmnt/df failed: raise the precise sentence when the path is missing or unreachable."""
    check = await ctx.run(("ls", "-d", "--", path), what="ls", check=False)
    if check.ok:
        return
    if "No such file" in check.err:
        raise ProbeError(f"{path!r} does not exist on this server. Check the spelling (paths are case-sensitive).")
    if "Permission denied" in check.err:
        raise ProbeError(
            f"{path!r} cannot be reached by the login user (permission denied on a directory above it); "
            "connect as root or allow passwordless sudo."
        )


async def probe(ctx: ProbeContext, path: str) -> MountInfo:
    return await mount_info(ctx, path)


# --- size estimate -------------------------------------------------------------------------------------------

# $1 = whole seconds allowed for all paths, then the paths. Markers and du records are NUL-terminated on stdout
# ("@unit N", "@start I", "@done I STATUS", "@end"; a NUL also precedes "@done", ending a busybox du's last line).
# stderr gets "@path I" before each du so its complaints can be attributed. Nothing from the paths is ever part
# of the script text. The deadline has whole-second granularity (date +%s).
DU_SCRIPT = r"""
limit=$1; shift
end=$(( $(date +%s) + limit ))
if du -x -B1 -d 0 -0 -- /dev/null >/dev/null 2>&1; then opts='-B1 -0'; unit=1; else opts='-k'; unit=1024; fi
if command -v timeout >/dev/null 2>&1; then bounded=1; else bounded=; fi
printf '@unit %s\0' "$unit"
i=0
for p do
  i=$((i + 1))
  printf '@path %s\n' "$i" >&2
  left=$(( end - $(date +%s) ))
  if [ "$left" -le 0 ]; then printf '@done %s skipped\0' "$i"; continue; fi
  printf '@start %s\0' "$i"
  if [ -n "$bounded" ]; then timeout -s TERM "$left" du -x -d 1 $opts -- "$p"; else du -x -d 1 $opts -- "$p"; fi
  printf '\0@done %s %s\0' "$i" "$?"
done
printf '@end\0'
"""

PathState = Literal["measured", "timeout", "skipped", "missing", "denied", "error"]


class PathSize(Model):
    """One path's share of a size estimate."""

    path: str
    state: PathState
    bytes: int | None  # None when nothing is known; a lower bound when ``lower_bound``
    lower_bound: bool  # cut short by the deadline, or some entries were unreadable
    unreadable: int  # entries du could not read (permission denied): not counted, not fatal
    detail: str


class SizeEstimate(Model):
    """Sizes of the paths a backup would read."""

    paths: tuple[PathSize, ...]
    total_bytes: int  # measured bytes; paths nested in another listed path are not counted twice
    complete: bool  # every path measured exactly
    unreadable: int
    time_limit: float
    summary: str


def du_argv(paths: Sequence[str], time_limit: float) -> tuple[str, ...]:
    return ("sh", "-c", DU_SCRIPT, "sh", str(max(1, round(time_limit))), *paths)


def _split_stderr(err: str) -> dict[int, list[str]]:
    """du's complaints per path index, using the "@path I" lines the script writes before each du."""
    sections: dict[int, list[str]] = {}
    current: list[str] = []
    for line in err.splitlines():
        if line.startswith("@path ") and line[6:].strip().isdigit():
            current = sections.setdefault(int(line[6:].strip()), [])
        else:
            current.append(line)
    return sections


def _records(chunk: str, unit: int) -> list[int]:
    """Sizes of du records in one output chunk.

    GNU mode (unit 1): the chunk is one NUL-terminated "SIZE<TAB>NAME" record, and anything else is garbage.
    busybox mode (unit 1024): newline-separated records; lines that are not records are the rest of a name
    that contained a newline, and are skipped.
    """
    lines = [chunk] if unit == 1 else chunk.split("\n")
    sizes = []
    for line in lines:
        size, tab, _ = line.partition("\t")
        if tab and size.isdigit():
            sizes.append(int(size) * unit)
        elif unit == 1:
            raise ProbeError(f"du printed a line that is not a size record ({line[:60]!r}).")
    return sizes


def _scan(out: str) -> tuple[dict[int, list[int]], dict[int, str]]:
    """Walk the NUL-separated stream: du sizes per path index, and each path's final status."""
    chunks = out.split("\0")
    head = chunks[0].removeprefix("@unit ")
    if head == chunks[0] or not head.isdigit() or "@end" not in chunks:
        raise ProbeError("The size estimate printed something unexpected (truncated, or not from the bot's script).")
    unit = int(head)
    sizes: dict[int, list[int]] = {}
    status: dict[int, str] = {}
    current = 0
    for chunk in chunks[1:]:
        word, _, rest = chunk.partition(" ")
        index, _, code = rest.partition(" ")
        if word == "@start" and index.isdigit():
            current = int(index)
            sizes[current] = []
        elif word == "@done" and index.isdigit():
            status[int(index)] = code
        elif chunk not in ("@end", "") and current:
            sizes[current].extend(_records(chunk, unit))
    return sizes, status


def _result(
    path: str, state: PathState, size: int | None = None, *, lower: bool = False, unreadable: int = 0, detail: str = ""
) -> PathSize:
    return PathSize(path=path, state=state, bytes=size, lower_bound=lower, unreadable=unreadable, detail=detail)


def _path_size(path: str, code: str | None, sizes: list[int], complaints: list[str], limit: float) -> PathSize:
    """One path's verdict from du's exit status, its records and its complaints (stderr lines)."""
    denied = sum("Permission denied" in line for line in complaints)
    last = complaints[-1].strip() if complaints else ""
    if code == "skipped":
        return _result(path, "skipped", detail=f"not started: the {limit:g} s limit was used up by earlier paths")
    if code is not None and code.isdigit() and int(code) in _TIMED_OUT:
        partial = sum(sizes)
        detail = f"stopped after {limit:g} s; at least {_human(partial)} in the directories measured until then"
        return _result(path, "timeout", partial if sizes else None, lower=True, unreadable=denied, detail=detail)
    if sizes and code in ("0", "1"):
        detail = f"{denied} entries could not be read (permission denied) and are not counted" if denied else ""
        return _result(path, "measured", sizes[-1], lower=denied > 0, unreadable=denied, detail=detail)
    if "No such file" in last:
        return _result(path, "missing", detail="does not exist on this server")
    if "Permission denied" in last:
        return _result(path, "denied", unreadable=max(denied, 1), detail="cannot be read by the login user")
    return _result(path, "error", unreadable=denied, detail=last or f"du ended with status {code}")


def _nested(path: str, others: Sequence[str]) -> bool:
    """Is ``path`` inside (or equal to an earlier copy of) another listed path? Then its bytes are already counted."""
    norm = posixpath.normpath(path)
    for other in others:
        o = posixpath.normpath(other)
        if o != norm and (norm.startswith(o.rstrip("/") + "/")):
            return True
    return False


def parse_du(out: str, err: str, paths: Sequence[str], time_limit: float) -> SizeEstimate:
    """Parse the output of :data:`DU_SCRIPT` run on ``paths`` (pure; see the module docstring)."""
    sizes, status = _scan(out)
    complaints = _split_stderr(err)
    results = tuple(
        _path_size(p, status.get(i), sizes.get(i, []), complaints.get(i, []), time_limit)
        for i, p in enumerate(paths, start=1)
    )
    return _estimate(results, time_limit)


def _estimate(results: tuple[PathSize, ...], time_limit: float) -> SizeEstimate:
    paths = [r.path for r in results]
    seen: set[str] = set()
    total = 0
    for r in results:
        key = posixpath.normpath(r.path)
        if r.bytes is not None and key not in seen and not _nested(r.path, paths):
            total += r.bytes
        seen.add(key)
    complete = all(r.state == "measured" and not r.lower_bound for r in results)
    unreadable = sum(r.unreadable for r in results)
    return SizeEstimate(
        paths=results,
        total_bytes=total,
        complete=complete,
        unreadable=unreadable,
        time_limit=time_limit,
        summary=_summary(results, total, complete, time_limit),
    )


def _summary(results: tuple[PathSize, ...], total: int, complete: bool, time_limit: float) -> str:
    if complete:
        return f"{_human(total)} in {len(results)} path(s)."
    parts = []
    if any(r.state in ("timeout", "skipped") for r in results):
        cut = [r.path for r in results if r.state in ("timeout", "skipped")]
        parts.append(f"estimate incomplete after {time_limit:g} s (not finished: {', '.join(cut)})")
    missing = [r.path for r in results if r.state in ("missing", "denied", "error")]
    if missing:
        parts.append(f"not measured: {', '.join(missing)}")
    unreadable = sum(r.unreadable for r in results)
    if unreadable:
        parts.append(f"{unreadable} entries could not be read (permission denied) and are not counted")
    return f"At least {_human(total)}; " + "; ".join(parts) + "."


def _human(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} bytes"


async def estimate_size(
    ctx: ProbeContext, paths: Sequence[str], *, time_limit: float = DEFAULT_TIME_LIMIT
) -> SizeEstimate:
    """Measure ``paths`` with du within ``time_limit`` seconds (as root when the context may), never failing on
    a slow tree, a missing path or unreadable entries: those are reported per path."""
    if not paths:
        return _estimate((), time_limit)
    for path in paths:
        require_absolute(path)
    argv = du_argv(paths, time_limit)
    try:
        result = await ctx.run(
            argv, what="The size estimate (du)", privileged=True, timeout=max(1, round(time_limit)) + TIMEOUT_MARGIN
        )
    except CommandTimeout:
        detail = "the server did not answer within the time limit"
        return _estimate(tuple(_result(p, "timeout", lower=True, detail=detail) for p in paths), time_limit)
    return parse_du(result.out, result.err, paths, time_limit)
