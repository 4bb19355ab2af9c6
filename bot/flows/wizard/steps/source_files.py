"""Source form for files and for the full system.

Files: absolute paths one per line, exclude patterns one per line, two switches. Each path goes through
:func:`bot.validation.absolute_path`, the whole config through the files source's own validation (nested and
duplicate paths, pattern syntax), and then ``du`` on the server (time-bounded): a path that does not exist or
cannot be read is refused inline; a tree too big to measure in time only makes the estimate a lower bound.

System: ``/`` with the standard exclusions; one file system by default. The other real file systems mounted
below ``/`` are listed from the server on the first Next (one ``findmnt``), and offered to be added.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from bot.access import Refused
from bot.backup import sources
from bot.backup.sources.system import SKIPPED_DIRS, SystemFacts, other_filesystems
from bot.flows.wizard.steps.base import Errors, Field, Option, WizardContext
from bot.flows.wizard.steps.source_common import (
    Part,
    clip,
    errors_from,
    human_bytes,
    lines_of,
    probe_context,
)
from bot.flows.wizard.store import keep_data
from bot.probes import disk
from bot.probes.base import ProbeContext, ProbeError
from bot.probes.capabilities import Capabilities
from bot.services import gate
from bot.transport.base import TransportError
from bot.validation import InvalidInput, absolute_path
from storage.models import Server

ESTIMATE_LIMIT = 20.0  # seconds du may measure before the estimate becomes a lower bound
DEFAULT_PATHS = ("/etc", "/home")
FLAG_LABELS = {
    "exclude_caches": ("Leave out caches", "CACHEDIR.TAG dirs, ~/.cache, trash, __pycache__"),
    "one_file_system": ("Stay on each path's file system", "do not descend into other mounts"),
}
FILES_FIELDS = {"paths": "paths", "excludes": "excludes", "one_file_system": "flags", "exclude_caches": "flags"}
SYSTEM_FIELDS = {"extra_filesystems": "extra_filesystems", "excludes": "excludes", "one_file_system": "flags",
                 "exclude_caches": "flags"}  # fmt: skip


def previous(ctx: WizardContext, kind: str) -> dict[str, Any] | None:
    """The stored source when it belongs to ``kind`` and still validates (else None: start from detection)."""
    stored = ctx.data.get("source")
    if ctx.data.get("backup_type") != kind or not isinstance(stored, dict) or sources.validate(kind, stored):
        return None
    return stored


def _flags(kind: str, stored: Mapping[str, Any] | None) -> Field:
    names = ("exclude_caches", "one_file_system")
    defaults = {"exclude_caches": True, "one_file_system": kind == "system"}
    chosen = [n for n in names if (stored or defaults).get(n, defaults[n])]
    options = tuple(Option(n, FLAG_LABELS[n][0], FLAG_LABELS[n][1]) for n in names)
    if kind == "system":
        options = (Option("one_file_system", "Only the root file system (and those added below)",
                          "other mounts below / are skipped"), options[0])  # fmt: skip
    return Field("flags", "Options", "checkboxes", options=options, initial=chosen, optional=True)


def _flags_value(values: Mapping[str, Any], kind: str) -> list[str]:
    """The switches that are on; no value at all (not even an empty list) means the defaults."""
    if values.get("flags") is None:
        return ["exclude_caches", "one_file_system"] if kind == "system" else ["exclude_caches"]
    return lines_of(values.get("flags"))


def _size_note(ctx: WizardContext, paths: list[str]) -> str | None:
    size = ctx.data.get("size_estimate")
    if not isinstance(size, dict) or size.get("paths") != paths:
        return None
    return f":straight_ruler: Size: {size.get('summary', '')}"


# --- files ---------------------------------------------------------------------------------------------------


async def files_view(ctx: WizardContext, server: Server, caps: Capabilities | None) -> Part:
    stored = previous(ctx, "files")
    paths = list(stored["paths"]) if stored else list(DEFAULT_PATHS)
    notes = [n for n in (_size_note(ctx, paths),) if n]
    notes.append("The size of the paths is measured on the server when you press Next (at most "
                 f"{ESTIMATE_LIMIT:g} s; a bigger tree gives a lower bound).")  # fmt: skip
    fields = (
        Field("paths", "Paths to back up (one per line)", "multiline", initial="\n".join(paths),
              placeholder="/var/www\n/srv/data"),
        Field("excludes", "Leave out (borg patterns, one per line)", "multiline", optional=True,
              initial="\n".join(stored["excludes"]) if stored else None, placeholder="sh:**/*.tmp\n/var/www/cache",
              hint="sh: shell style (** any depth), fm: (default), re:, pp: path prefix, pf: full path."),
        _flags("files", stored),
    )  # fmt: skip
    return Part(fields=fields, notes=tuple(notes))


async def files_submit(
    ctx: WizardContext, server: Server, caps: Capabilities | None, values: Mapping[str, Any]
) -> Errors:
    lines = lines_of(values.get("paths"))
    if not lines:
        return {"paths": "List at least one absolute path to back up, one per line (like /var/www)."}
    paths: list[str] = []
    for line in lines:
        try:
            paths.append(absolute_path(line))
        except InvalidInput as exc:
            return {"paths": f"{line}: {exc}"}
    flags = _flags_value(values, "files")
    config = {"paths": paths, "excludes": lines_of(values.get("excludes")),
              "one_file_system": "one_file_system" in flags, "exclude_caches": "exclude_caches" in flags}  # fmt: skip
    problems = sources.validate("files", config)
    if problems:
        return errors_from(problems, FILES_FIELDS, "paths")
    parsed = sources.load_config("files", config)
    try:  # no du outside the actor's grant
        await gate.check_source(await ctx.actor(), server, "files", {"paths": list(parsed.paths)})
    except Refused as exc:
        return {"paths": exc.sentence}
    try:
        estimate = await disk.estimate_size(probe_context(ctx, server, caps), parsed.paths, time_limit=ESTIMATE_LIMIT)
    except (ProbeError, TransportError) as exc:
        return {"paths": f"The paths could not be checked on the server: {exc}"}
    bad = [p for p in estimate.paths if p.state in ("missing", "denied", "error")]
    if bad:
        return {"paths": "; ".join(f"{p.path} {p.detail}" for p in bad) + "."}
    ctx.data["source"] = parsed.model_dump(mode="json")
    ctx.data["size_estimate"] = {"total_bytes": estimate.total_bytes, "complete": estimate.complete,
                                "summary": estimate.summary, "paths": list(parsed.paths)}  # fmt: skip
    return {}


# --- system --------------------------------------------------------------------------------------------------


def _mount_label(mount: Mapping[str, Any]) -> str:
    size = f", {human_bytes(mount.get('size_bytes'))}" if mount.get("size_bytes") else ""
    return clip(f"{mount['target']} ({mount['fstype']} on {mount['source']}{size})")


async def system_view(ctx: WizardContext, server: Server, caps: Capabilities | None) -> Part:
    stored = previous(ctx, "system")
    mounts = ctx.data.get("_source_mounts")
    notes = [
        "Backs up `/` as one archive. Always left out: " + ", ".join(SKIPPED_DIRS) + " (their directories are "
        "kept, not their content), lost+found, swap files and borg's own cache."
    ]
    root = caps.get("disk", disk.MountInfo) if caps is not None else None
    if root is not None and root.size_bytes and root.avail_bytes is not None:
        used = root.size_bytes - root.avail_bytes
        notes.append(f":straight_ruler: `/` is {root.fstype} on {root.source}: about {human_bytes(used)} used of "
                     f"{human_bytes(root.size_bytes)}.")  # fmt: skip
    fields: list[Field] = [_flags("system", stored)]
    if isinstance(mounts, list) and mounts:
        chosen = list(stored["extra_filesystems"]) if stored else []
        fields.append(Field(
            "extra_filesystems", "Other file systems to add", "multiselect", optional=True, initial=chosen,
            options=tuple(Option(m["target"], _mount_label(m)) for m in mounts[:100]),
            hint="With 'only the root file system' on, these mounts are skipped unless added here.",
        ))  # fmt: skip
    elif isinstance(mounts, list):
        notes.append("No other real file systems are mounted below `/`.")
    else:
        notes.append("Other file systems mounted below `/` are listed when you press Next.")
    fields.append(Field("excludes", "Also leave out (borg patterns, one per line)", "multiline", optional=True,
                        initial="\n".join(stored["excludes"]) if stored else None))  # fmt: skip
    return Part(fields=tuple(fields), notes=tuple(notes))


async def list_other_filesystems(ctx: ProbeContext) -> list[dict[str, Any]]:
    """The real file systems mounted below ``/`` that ``--one-file-system`` leaves out (from findmnt)."""
    argv = ("findmnt", "-J", "--list", "-b", "-o", "TARGET,SOURCE,FSTYPE,SIZE,AVAIL")
    result = await ctx.run(argv, what="Listing the mounted file systems (findmnt)")
    try:
        entries = json.loads(result.out)["filesystems"]
        mounts = []
        for entry in entries:
            device, fsroot = disk.split_source(str(entry["source"]))
            mounts.append(disk.MountInfo(
                path=str(entry["target"]), target=str(entry["target"]), source=device, fsroot=fsroot,
                fstype=str(entry["fstype"]), size_bytes=_number(entry.get("size")),
                avail_bytes=_number(entry.get("avail")), via="findmnt",
            ))  # fmt: skip
    except (ValueError, KeyError, TypeError):
        raise ProbeError("findmnt printed something that is not its JSON list of mounts.") from None
    return [
        {"target": m.target, "source": m.source, "fstype": m.fstype, "size_bytes": m.size_bytes,
         "avail_bytes": m.avail_bytes}
        for m in other_filesystems(SystemFacts(mounts=tuple(mounts)))
    ]  # fmt: skip


def _number(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return int(value) if isinstance(value, str) and value.isdigit() else None


async def system_submit(
    ctx: WizardContext, server: Server, caps: Capabilities | None, values: Mapping[str, Any]
) -> Errors:
    flags = _flags_value(values, "system")
    extra = lines_of(values.get("extra_filesystems"))
    config = {"one_file_system": "one_file_system" in flags, "exclude_caches": "exclude_caches" in flags,
              "extra_filesystems": extra, "excludes": lines_of(values.get("excludes"))}  # fmt: skip
    problems = sources.validate("system", config)
    if problems:
        return errors_from(problems, SYSTEM_FIELDS, "flags")
    mounts = ctx.data.get("_source_mounts")
    first_look = not isinstance(mounts, list)
    if first_look:
        try:
            mounts = await list_other_filesystems(probe_context(ctx, server, caps))
        except (ProbeError, TransportError) as exc:
            return {"flags": f"The file systems of the server could not be listed: {exc}"}
        ctx.data["_source_mounts"] = mounts
    known = {m["target"]: m for m in mounts}
    unknown = [p for p in extra if p not in known]
    if unknown:
        return {"extra_filesystems": f"{', '.join(unknown)} is not a file system mounted below / on this server."}
    if first_look and mounts and config["one_file_system"]:
        await keep_data(ctx)
        shown = ", ".join(_mount_label(m) for m in mounts[:10])
        message = (f"Other file systems are mounted below /: {shown}. They are not backed up unless you add them: "
                   "choose the ones to include (or none) and press Next.")  # fmt: skip
        return {"extra_filesystems": message}
    parsed = sources.load_config("system", config)
    ctx.data["source"] = parsed.model_dump(mode="json")
    root = caps.get("disk", disk.MountInfo) if caps is not None else None
    used = [(m.get("size_bytes") or 0) - (m.get("avail_bytes") or 0) for m in (known[p] for p in extra)]
    if root is not None and root.size_bytes and root.avail_bytes is not None:
        used.append(root.size_bytes - root.avail_bytes)
    total = sum(u for u in used if u > 0)
    ctx.data["size_estimate"] = {"total_bytes": total, "complete": False, "paths": ["/", *parsed.extra_filesystems],
                                "summary": f"about {human_bytes(total)} used on the file systems backed up "
                                           "(before exclusions)."}  # fmt: skip
    return {}
