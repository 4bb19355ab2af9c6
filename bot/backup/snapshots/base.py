"""What every snapshot driver shares: the protocol, the view given to borg, the ledger of what was created, and
the lifecycle that always removes it again.

Archive paths equal the original paths (the "slashdot hack", borg >= 1.4)
-------------------------------------------------------------------------
borg create strips everything up to and including ``/./`` from a recursion root: ``/snap/root/./etc/nginx`` is
read from that full path but archived as ``etc/nginx`` (``helpers.fs.get_strip_prefix`` and
``FilesystemObjectProcessors.create_helper`` in borg 1.4.5). So every driver lays a snapshot out as a tree that
mirrors ``/``: the snapshot of a filesystem (or subvolume, or dataset) whose root is at ``T`` in the live system is
made to appear at ``<root>/<T without the leading slash>``, and the live path ``/etc/nginx`` (inside ``T``) is then
given to borg as ``<root>/./etc/nginx``. ``<root>`` is unique per snapshot (``…/backup-bot-<run>/<n>``), because
two snapshots cannot share one tree: the second would have to be created inside the first, read-only one.

Two consequences a caller must know:
  * borg's exclude patterns match the *unstripped* path (borg create --help, "slashdot hack"), so a live pattern
    such as ``/var/www/*/cache`` has to be rewritten for the view: :meth:`SnapshotView.rewrite_pattern`.
  * borg's files cache is keyed by the absolute, unstripped path, so paths that change every run (the run id is
    part of them) make borg re-read every file each run; deduplication still stores nothing twice. A stable view
    path per chain would need a bind mount per chain; see the issue note.

Cleanup
-------
Every creating step records its undo in a :class:`Ledger` — *before* it runs when the name is this run's own (a
timeout or a dropped connection leaves it unknown whether the thing exists; undoing a thing that is not there is
recognised and harmless), after it succeeded for the run's private directory — and :func:`lifecycle` undoes the
ledger in reverse order whatever happens: an exception or a cancellation inside the ``async with``, a failure half
way through creating (a snapshot made but not mounted is still removed), or a cancellation during the cleanup
itself (it is waited for, then the cancellation goes on). What cannot be removed is reported as a
:class:`Leftover` with the exact command to remove it by hand, and the next run's ``cleanup_leftovers`` finds it
again by its ``backup-bot-<run id>`` name. A run id must therefore be unique per *attempt* (a retried run that
reused its id would be "active" and never clean its first attempt's leftovers).
"""

from __future__ import annotations

import asyncio
import json
import posixpath
import re
import shlex
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, runtime_checkable

from bot.probes.base import Absent, ProbeContext, ProbeError
from bot.probes.snapshots import Method, MethodVerdict
from bot.transport.base import CommandResult, CommandTimeout, TransportError

PREFIX = "backup-bot-"
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,39}")  # safe in LV names, ZFS snapshot names and paths
STEP_TIMEOUT = 300.0  # one create/undo command (lvcreate on a busy VG, a mount with log recovery)
UNREACHABLE = "the server could not be reached"
T = TypeVar("T")


# --- names ------------------------------------------------------------------------------------------------------


def snapshot_name(run_id: str) -> str:
    """``backup-bot-<run_id>``: the product prefix makes leftovers recognisable, the run id makes them unique."""
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise ValueError(f"run id {run_id!r} must be 1-40 letters, digits or '-', starting with a letter or digit")
    return PREFIX + run_id


def run_id_of(name: str) -> str | None:
    """The run id in a ``backup-bot-<run id>`` name, or None when the name is not one of ours."""
    rest = name.removeprefix(PREFIX)
    return rest if rest != name and RUN_ID.fullmatch(rest) else None


def slashdot(root: str, original: str) -> str:
    """``<root>/./<original without its leading slash>``: borg reads the former and archives the latter."""
    return root.rstrip("/") + "/./" + original.lstrip("/")


def inside(root: str, relative_to: str) -> str:
    """Where the live directory ``relative_to`` appears in a snapshot tree rooted at ``root``."""
    return root if relative_to == "/" else root.rstrip("/") + relative_to


def dirs_between(top: str, deepest: str) -> tuple[str, ...]:
    """Directories strictly below ``top`` down to ``deepest`` (deepest first): what ``mkdir -p deepest`` makes
    when ``top`` exists; empty when ``deepest`` is not below ``top``."""
    found = []
    top = posixpath.normpath(top)
    current = posixpath.normpath(deepest)
    while current != top and current.startswith(top.rstrip("/") + "/"):
        found.append(current)
        current = posixpath.dirname(current)
    return tuple(found)


# --- errors -----------------------------------------------------------------------------------------------------

# stderr lines that never say what went wrong (mount's dmesg hint, LVM's usage hint and warnings)
_NOISE = ("may have more information", "for more information.", "WARNING:")


def explain(result: CommandResult) -> str:
    """Which program failed, how, and its most telling stderr line (the last one that is not a mere hint)."""
    how = f"was killed by {result.signal}" if result.signal else f"exited with status {result.exit_status}"
    lines = [line.strip() for line in result.err.splitlines() if line.strip()]
    telling = [line for line in lines if not any(noise in line for noise in _NOISE)] or lines
    detail = f": {telling[-1][:300]}" if telling else ""
    return f"`{result.argv[0] if result.argv else '?'}` {how}{detail}"


@dataclass(frozen=True)
class Leftover:
    """Something a run created and could not remove: what it is, why it stayed, and how to remove it by hand."""

    what: str
    reason: str
    command: str  # a shell line for the server's administrator

    def sentence(self) -> str:
        return f"{self.what} was left behind ({self.reason}); remove it by hand with `{self.command}`"


def describe_leftovers(left: Sequence[Leftover]) -> str:
    if not left:
        return "Nothing was left behind."
    text = "; ".join(item.sentence() for item in left) + "."
    return text[0].upper() + text[1:]


class SnapshotError(Exception):
    """A snapshot could not be made or removed; ``str()`` is a sentence for people, ``left_behind`` the details.
    ``kind`` and ``hint`` are what the chain runner reports for any failure."""

    kind = "snapshot"

    def __init__(self, message: str, left_behind: Sequence[Leftover] = ()) -> None:
        super().__init__(message)
        self.left_behind = tuple(left_behind)

    @property
    def hint(self) -> str:
        if self.left_behind:
            return "The next run removes the leftovers by itself; to do it now: " + "; ".join(
                f"`{item.command}`" for item in self.left_behind
            )
        return ""


class SnapshotRefused(SnapshotError):
    """Refused before anything was created (no privileges, the path is not on this kind of storage, …)."""


class SnapshotFailed(SnapshotError):
    """Creating (or mounting) failed; whatever had been created was removed again, or is in ``left_behind``."""


class CleanupFailed(SnapshotError):
    """The backup step ended but some of the snapshot could not be removed; ``removed`` lists what was."""

    def __init__(self, message: str, left_behind: Sequence[Leftover] = (), removed: Sequence[str] = ()) -> None:
        super().__init__(message, left_behind)
        self.removed = tuple(removed)


class StepFailed(SnapshotError):
    """One creating command failed (internal: :func:`lifecycle` turns it into :class:`SnapshotFailed`)."""


# --- the view ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SnapshotView:
    """What the backup step needs: the path to give borg for each original path, and extra excludes.

    ``paths`` pairs each original path with its borg recursion root (``<root>/./<original>``); borg archives the
    latter under exactly the original path without its leading slash.
    """

    method: Method
    run_id: str
    paths: tuple[tuple[str, str], ...]
    excludes: tuple[str, ...] = ()  # borg patterns hiding the bot's own directories inside a snapshot
    created: tuple[str, ...] = ()  # what was created, for the run log
    warnings: tuple[str, ...] = ()

    def borg_path(self, original: str) -> str:
        wanted = posixpath.normpath(original)
        for path, borg in self.paths:
            if path == wanted:
                return borg
        raise KeyError(f"{original!r} is not one of the paths of this snapshot")

    def __call__(self, original: str) -> str:
        """A view is the runner's ``PathMapper``: original path → the path borg must read."""
        return self.borg_path(original)

    @property
    def borg_paths(self) -> tuple[str, ...]:
        return tuple(borg for _, borg in self.paths)

    @property
    def roots(self) -> tuple[str, ...]:
        """The distinct parts before ``/./`` (one per snapshot)."""
        return tuple(dict.fromkeys(borg.split("/./", 1)[0] for borg in self.borg_paths))

    def rewrite_pattern(self, pattern: str) -> tuple[str, ...]:
        """A live borg exclude pattern as it must be written for this view (one per snapshot root).

        borg matches patterns against the unstripped path without its leading slash, e.g.
        ``run/backup-bot-7/1/var/www/cache``; so ``fm:``/``sh:``/``pp:``/``pf:`` patterns (fm: is the default) get
        the root put in front, with the root's wildcard characters escaped, and an anchored ``re:^…`` gets it
        after the caret. Unanchored regular expressions match anywhere and are returned unchanged.
        """
        style, sep, body = pattern.partition(":")
        if not (sep and re.fullmatch(r"[a-z]{2}", style)):
            style, body = "fm", pattern
        if style == "re":
            if not body.startswith("^"):
                return (pattern,)
            return tuple(f"re:^{re.escape(r.lstrip('/'))}/{body[1:].lstrip('/')}" for r in self.roots)
        if style in ("pp", "pf"):
            return tuple(f"{style}:{r}/{body.lstrip('/')}" for r in self.roots)
        if style in ("fm", "sh"):
            return tuple(f"{style}:{_escape_glob(r)}/{body.lstrip('/')}" for r in self.roots)
        raise ValueError(f"unknown borg pattern style {style!r} in {pattern!r}")


def _escape_glob(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


@runtime_checkable
class SnapshotDriver(Protocol):
    """One snapshot method. ``snapshot`` is an async context manager that always removes what it created."""

    name: Method

    async def applies(self, ctx: ProbeContext, path: str) -> MethodVerdict:
        """Whether this method can freeze ``path`` (the probes' verdict, with the reason)."""
        ...

    def snapshot(
        self, ctx: ProbeContext, paths: Sequence[str], run_id: str
    ) -> AbstractAsyncContextManager[SnapshotView]: ...

    async def cleanup_leftovers(self, ctx: ProbeContext, active_run_ids: Collection[str]) -> list[str]:
        """Remove what crashed earlier runs left (never anything of ``active_run_ids``); returns what was removed."""
        ...


# --- the ledger -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Undo:
    """How to remove one created thing. ``gone`` are stderr fragments meaning it is already gone (counts as done);
    ``verify`` is a command that must *fail* once it is gone (for tools that may report success and keep it)."""

    what: str
    argv: tuple[str, ...]
    gone: tuple[str, ...] = ()
    verify: tuple[str, ...] = ()
    listed: bool = True  # named in SnapshotView.created (directories are not, to keep the run log short)


@dataclass
class Ledger:
    """What a run created, in order; :meth:`release` undoes it in reverse order, continuing past failures."""

    ctx: ProbeContext
    timeout: float = STEP_TIMEOUT
    items: list[Undo] = field(default_factory=list)

    def add(self, undo: Undo) -> None:
        self.items.append(undo)

    @property
    def created(self) -> tuple[str, ...]:
        return tuple(item.what for item in self.items if item.listed)

    async def release(self) -> tuple[list[str], list[Leftover]]:
        """Undo everything; returns what was removed (listed items only, not what was already gone) and what was
        left behind (everything). Once the server cannot be reached, the rest is not tried (each try would wait
        for a connection timeout) but reported, with its command."""
        removed: list[str] = []
        left: list[Leftover] = []
        unreachable: str | None = None
        while self.items:
            undo = self.items.pop()
            outcome = f"not tried, {unreachable}" if unreachable else await undo_one(self.ctx, undo, self.timeout)
            if outcome == "removed":
                removed += [undo.what] if undo.listed else []
            elif outcome != "gone":
                left.append(Leftover(undo.what, outcome, manual_command(self.ctx, undo.argv)))
                unreachable = unreachable or (outcome if outcome.startswith(UNREACHABLE) else None)
        return removed, left


def manual_command(ctx: ProbeContext, argv: Sequence[str]) -> str:
    return shlex.join((["sudo"] if ctx.sudo else []) + list(argv))


async def undo_one(ctx: ProbeContext, undo: Undo, timeout: float) -> str:
    """Run one undo: "removed", "gone" (it was not there), or the reason it is still there."""
    try:
        result = await ctx.run(undo.argv, what=undo.argv[0], privileged=True, check=False, timeout=timeout)
        if not result.ok:
            return "gone" if any(marker in result.err for marker in undo.gone) else explain(result)
        if undo.verify:
            check = await ctx.run(undo.verify, what=undo.verify[0], privileged=True, check=False, timeout=timeout)
            if check.ok:
                return f"`{undo.argv[0]}` reported success but `{shlex.join(undo.verify)}` still finds it"
    except CommandTimeout as exc:
        return str(exc)
    except TransportError as exc:
        return f"{UNREACHABLE}: {exc}"
    return "removed"


async def step(ctx: ProbeContext, argv: Sequence[str], what: str, *, timeout: float = STEP_TIMEOUT) -> CommandResult:
    """Run one creating command as root (sudo when configured); a failure raises :class:`StepFailed` naming it."""
    try:
        result = await ctx.run(argv, what=what, privileged=True, check=False, timeout=timeout)
    except TransportError as exc:
        raise StepFailed(f"{what} failed: {exc}") from None
    if not result.ok:
        raise StepFailed(f"{what} failed: {explain(result)}")
    return result


async def create(ctx: ProbeContext, ledger: Ledger, argv: Sequence[str], what: str, undo: Undo) -> CommandResult:
    """A creating command whose undo is recorded *before* it runs: a timeout or a dropped connection leaves it
    unknown whether the thing exists, and the undo's ``gone`` markers make undoing a never-made one harmless.
    Only for names that can be nobody else's (they carry this run's id)."""
    ledger.add(undo)
    return await step(ctx, argv, what)


async def mkdir_private(ctx: ProbeContext, ledger: Ledger, path: str) -> None:
    """Create the run's own directory (mode 0700: a snapshot must not open files to users who could not reach
    them through the live tree); fails if it exists, so two runs can never share one."""
    await step(ctx, ("mkdir", "-m", "0700", "--", path), f"Creating the directory {path}")
    ledger.add(Undo(f"the directory {path}", ("rmdir", "--", path), gone=("No such file",), listed=False))


async def mkdir_tree(ctx: ProbeContext, ledger: Ledger, top: str, deepest: str) -> None:
    """``mkdir -p`` of ``deepest`` below the existing ``top``; each directory gets its own ``rmdir`` undo,
    recorded first so that a ``mkdir -p`` failing half-way leaves nothing either."""
    made = dirs_between(top, deepest)
    if not made:
        return
    for directory in reversed(made):
        ledger.add(Undo(f"the directory {directory}", ("rmdir", "--", directory), gone=("No such file",), listed=False))
    await step(ctx, ("mkdir", "-p", "--", deepest), f"Creating the directory {deepest}")


# --- the lifecycle ----------------------------------------------------------------------------------------------


async def uncancellable(awaitable: Awaitable[T]) -> T:
    """Await to the end even if the caller is cancelled meanwhile; a cancellation is re-raised afterwards."""
    task = asyncio.ensure_future(awaitable)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return result


def require_privileges(ctx: ProbeContext, label: str) -> None:
    if not ctx.privileged:
        raise SnapshotRefused(
            f"{label} snapshots need root and the login user is neither root nor allowed passwordless sudo; "
            "connect as root or allow passwordless sudo. Nothing was created."
        )


def check_request(ctx: ProbeContext, label: str, paths: Sequence[str], run_id: str) -> tuple[str, ...]:
    """Refuse before anything is created: no privileges, a bad run id, relative or no paths."""
    try:
        snapshot_name(run_id)
    except ValueError as exc:
        raise SnapshotRefused(f"{exc}. Nothing was created.") from None
    require_privileges(ctx, label)
    if not paths:
        raise SnapshotRefused(f"No paths were given to snapshot with {label}.")
    for path in paths:
        if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
            raise SnapshotRefused(f"{path!r} is not an absolute path; give the full path, starting with /.")
    return tuple(dict.fromkeys(posixpath.normpath(p) for p in paths))


@asynccontextmanager
async def lifecycle(
    ctx: ProbeContext, label: str, build: Callable[[Ledger], Awaitable[SnapshotView]]
) -> AsyncIterator[SnapshotView]:
    """Create through ``build`` (which records every step in the ledger), yield the view, always release."""
    ledger = Ledger(ctx)
    try:
        view = await build(ledger)
    except BaseException as exc:
        removed, left = await uncancellable(ledger.release())
        if isinstance(exc, SnapshotRefused) and not (removed or left):
            raise
        if isinstance(exc, SnapshotError | ProbeError | Absent | TransportError):
            raise SnapshotFailed(_failure_sentence(label, exc, removed, left), left) from exc
        if left:
            exc.add_note(f"Removing the half-made {label} snapshot failed: {describe_leftovers(left)}")
        raise
    try:
        yield view
    except BaseException as exc:
        removed, left = await uncancellable(ledger.release())
        if left:
            exc.add_note(f"Removing the {label} snapshot after this error failed: {describe_leftovers(left)}")
        raise
    removed, left = await uncancellable(ledger.release())
    if left:
        raise CleanupFailed(f"Removing the {label} snapshot failed. {describe_leftovers(left)}", left, removed)


def _failure_sentence(label: str, exc: BaseException, removed: list[str], left: list[Leftover]) -> str:
    """What failed, what was undone and what was left behind, in one message."""
    what = str(exc) if isinstance(exc, StepFailed) else f"Creating the {label} snapshot failed: {exc}"
    undone = f" Removed again: {', '.join(removed)}." if removed else ""
    return f"{what.rstrip('.')}.{undone} {describe_leftovers(left)}"


# --- finding leftovers ------------------------------------------------------------------------------------------


async def list_mounts(ctx: ProbeContext, fstype: str | None = None) -> list[tuple[str, str]]:
    """``(target, source)`` of every mount (of ``fstype``), from ``findmnt -J --list``; [] without findmnt."""
    argv = ["findmnt", "-J", "--list", "-o", "TARGET,SOURCE"]
    if fstype:
        argv[2:2] = ["-t", fstype]
    result = await ctx.run(argv, what="findmnt", check=False)
    if result.exit_status == 1 and not result.out.strip():
        return []  # findmnt found nothing
    if result.exit_status == 127:
        return []
    if not result.ok:
        raise SnapshotError(f"Listing mounts failed: {explain(result)}.")
    try:
        return [(str(fs["target"]), str(fs["source"])) for fs in json.loads(result.out)["filesystems"]]
    except (ValueError, KeyError, TypeError):
        raise SnapshotError("findmnt printed something that is not its JSON mount list.") from None


async def list_entries(ctx: ProbeContext, directory: str, pattern: str) -> list[str]:
    """Directories directly in ``directory`` whose name matches the glob ``pattern`` (NUL-separated ``find``)."""
    argv = ["find", directory, "-mindepth", "1", "-maxdepth", "1", "-type", "d", "-name", pattern, "-print0"]
    result = await ctx.run(argv, what="find", privileged=True, check=False)
    if not result.ok and "No such file" in result.err:
        return []
    if not result.ok:
        raise SnapshotError(f"Looking for leftovers in {directory} failed: {explain(result)}.")
    return sorted(p for p in result.out.split("\0") if p)


def leftover_run(name: str, active: Collection[str]) -> str | None:
    """The run id of a ``backup-bot-*`` name that belongs to no active run (so it may be removed)."""
    run_id = run_id_of(name)
    return run_id if run_id is not None and run_id not in set(active) else None


async def unmount_leftovers(ctx: ProbeContext, base: str, active: Collection[str]) -> tuple[list[str], list[Leftover]]:
    """Unmount everything mounted below ``<base>/backup-bot-<inactive run>/``, deepest first."""
    ledger = Ledger(ctx)
    prefix = base.rstrip("/") + "/"
    for target, source in sorted(await list_mounts(ctx), key=lambda m: m[0]):
        first = target[len(prefix) :].split("/", 1)[0] if target.startswith(prefix) else ""
        if "/" in target[len(prefix) :] and leftover_run(first, active):
            ledger.add(Undo(f"the mount of {source} at {target}", ("umount", "--", target), gone=("not mounted",)))
    return await ledger.release()


async def remove_run_dirs(ctx: ProbeContext, base: str, active: Collection[str]) -> tuple[list[str], list[Leftover]]:
    """Remove ``<base>/backup-bot-<inactive run>`` directories: empty directories only (``-xdev``: never into a
    filesystem still mounted there), then the directory itself, which fails loudly if anything else is inside."""
    ledger = Ledger(ctx)
    for path in await list_entries(ctx, base, PREFIX + "*"):
        if leftover_run(posixpath.basename(path), active):
            ledger.add(Undo(f"the directory {path}", ("rmdir", "--", path), gone=("No such file",)))
            empty = ("find", path, "-xdev", "-mindepth", "1", "-depth", "-type", "d", "-empty", "-delete")
            ledger.add(Undo(f"the empty directories below {path}", empty, gone=("No such file",), listed=False))
    return await ledger.release()
