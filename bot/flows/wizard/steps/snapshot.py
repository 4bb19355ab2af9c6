"""Step 4 — snapshot: freeze the source's paths for the length of the backup (Btrfs, ZFS, LVM), or not.

The paths: files → the chosen paths; system → ``/`` and the added file systems; databases → the data
directory the probe (or the saved login) reported; Docker → the mountpoints of the chosen volumes. Each is
asked :func:`bot.probes.snapshots.methods_for_path`; a method is offered when it can cover *every* path, the
recommended one (native file-system snapshots first, then LVM) is preselected, and "none" is always there with
what it means. For a database whose dump is already consistent (a transaction), "none" is preselected: a
snapshot would add nothing.

Detection runs on the server, so it happens when step 3 is accepted (cached in ``_snapshot_methods``) and
again on Next for the method chosen; the view itself never waits for the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from bot.access import Refused
from bot.flows.wizard.steps.base import BaseStep, Button, Errors, Field, Option, StepView, WizardContext
from bot.flows.wizard.steps.source_common import capabilities_of, clip, current_server, probe_context
from bot.flows.wizard.store import keep_data
from bot.probes import docker_models, snapshots
from bot.probes.base import ProbeContext, ProbeError
from bot.probes.capabilities import Capabilities
from bot.services import gate
from bot.services.answers import DATABASE_TYPES, SNAPSHOT_TYPES
from bot.transport.base import TransportError
from storage.models import Server

LABELS = {"btrfs": "Btrfs", "zfs": "ZFS", "lvm": "LVM"}
MAX_PATHS = 10
NONE_FILES = snapshots.NO_SNAPSHOT[0].upper() + snapshots.NO_SNAPSHOT[1:] + "."


def snapshot_paths(data: Mapping[str, Any], caps: Capabilities | None) -> list[str]:
    """The paths a snapshot would have to cover, for the source as stored (see the module docstring)."""
    kind, source = data.get("backup_type"), data.get("source") or {}
    if kind == "files":
        return list(source.get("paths") or [])
    if kind == "system":
        return ["/", *(source.get("extra_filesystems") or [])]
    if kind == "docker":
        facts = caps.get("docker", docker_models.DockerFacts) if caps is not None else None
        volumes = [facts.volume(name) for name in source.get("volumes") or []] if facts is not None else []
        return [v.mountpoint for v in volumes if v is not None and v.mountpoint]
    if kind in DATABASE_TYPES:
        found = data.get("_source_found") or {}
        return [found["datadir"]] if found.get("datadir") else []
    return []


async def detect(ctx: ProbeContext, paths: list[str]) -> dict[str, Any]:
    """Every method for every path (at most :data:`MAX_PATHS`), the methods covering all, the recommendation."""
    paths = paths[:MAX_PATHS]

    async def one(path: str) -> dict[str, Any]:
        try:
            found = await snapshots.methods_for_path(ctx, path)
        except (ProbeError, TransportError) as exc:
            return {"path": path, "error": str(exc), "summary": str(exc), "recommended": None, "methods": []}
        return {
            "path": path, "fstype": found.mount.fstype, "target": found.mount.target, "summary": found.summary,
            "recommended": found.recommended,
            "methods": [{"method": v.method, "available": v.available, "reason": v.reason, "target": v.target,
                         "warnings": list(v.warnings)} for v in found.methods],
        }  # fmt: skip

    per_path = list(await asyncio.gather(*(one(p) for p in paths)))
    available = [
        m for m in snapshots.PREFERENCE
        if per_path and all(any(v["method"] == m and v["available"] for v in p["methods"]) for p in per_path)
    ]  # fmt: skip
    return {"paths": paths, "per_path": per_path, "available": available,
            "recommended": available[0] if available else None}  # fmt: skip


async def refresh(ctx: WizardContext, server: Server, caps: Capabilities | None) -> dict[str, Any]:
    """Detect for the stored source and cache the result in ``_snapshot_methods``."""
    found = await detect(probe_context(ctx, server, caps), snapshot_paths(ctx.data, caps))
    ctx.data["_snapshot_methods"] = found
    return found


def _cached(data: Mapping[str, Any], paths: list[str]) -> dict[str, Any] | None:
    found = data.get("_snapshot_methods")
    return found if isinstance(found, dict) and found.get("paths") == paths[:MAX_PATHS] else None


def _transaction(data: Mapping[str, Any]) -> str | None:
    """The reason a database dump is consistent without a snapshot, or None."""
    verdict = data.get("atomicity")
    if (
        data.get("backup_type") in DATABASE_TYPES
        and isinstance(verdict, dict)
        and verdict.get("method") == "transaction"
    ):
        return str(verdict.get("reason") or "")
    return None


def consequence(data: Mapping[str, Any]) -> str:
    """What choosing no snapshot means for this source."""
    if data.get("backup_type") not in DATABASE_TYPES:
        return NONE_FILES
    reason = _transaction(data)
    if reason is not None:
        return f"Not needed: the dump is consistent without one. {reason}"
    verdict = data.get("atomicity")
    if isinstance(verdict, dict) and verdict.get("reason"):
        return f"Without a snapshot: {verdict['reason']}"
    return NONE_FILES


def _why_not(found: Mapping[str, Any], method: str) -> str:
    for path in found.get("per_path", []):
        if path.get("error"):
            return f"{path['path']}: {path['error']}"
        for verdict in path.get("methods", []):
            if verdict["method"] == method and not verdict["available"]:
                reason = str(verdict["reason"])
                return reason if path["path"] in reason else f"{path['path']}: {reason}"
    return "no path to snapshot"


class SnapshotStep(BaseStep):
    def __init__(self) -> None:
        super().__init__(name="snapshot", title="Snapshot", slow=True)

    def applies(self, data: Mapping[str, Any]) -> bool:
        return data.get("backup_type") in SNAPSHOT_TYPES

    async def view(self, ctx: WizardContext) -> StepView:
        server = await current_server(ctx)
        paths = snapshot_paths(ctx.data, capabilities_of(server))
        found = _cached(ctx.data, paths)
        none_text = consequence(ctx.data)
        options: list[Option] = []
        notes: list[str] = []
        buttons: list[Button] = []
        recommended = None
        if not paths:
            notes.append("There is no file-system path to snapshot for this source (its data is dumped or not "
                         "known yet), so the backup runs without a snapshot.")  # fmt: skip
        elif found is None:
            notes.append("The snapshot options of " + ", ".join(f"`{p}`" for p in paths[:MAX_PATHS]) + " have not "
                         "been checked on the server yet.")  # fmt: skip
            buttons.append(Button("detect_snapshots", "Check snapshot options", "primary"))
        else:
            recommended = found.get("recommended")
            for method in found.get("available", []):
                target = next((v.get("target") for p in found["per_path"] for v in p["methods"]
                               if v["method"] == method and v.get("target")), None)  # fmt: skip
                suffix = " (recommended)" if method == recommended else ""
                options.append(Option(method, f"{LABELS[method]} snapshot{suffix}", clip(f"of {target}" if target
                                                                                         else "")))  # fmt: skip
            notes.append("\n".join(self._path_line(p) for p in found.get("per_path", [])))
        if _transaction(ctx.data) is not None:
            recommended = None  # the dump is consistent by itself: a snapshot adds nothing
        options.append(Option("none", "No snapshot", clip(none_text)))
        notes.append(f"*No snapshot*: {none_text}")
        stored = (ctx.data.get("snapshot") or {}).get("method")
        offered = {o.value for o in options}
        initial = stored if stored in offered else recommended or "none"
        field = Field("method", "Snapshot during the backup", "radio", options=tuple(options), initial=initial)
        return StepView(heading="*Freeze the data while it is backed up?*", fields=(field,), notes=tuple(notes),
                        buttons=tuple(buttons))  # fmt: skip

    @staticmethod
    def _path_line(path: Mapping[str, Any]) -> str:
        if path.get("error"):
            return f":warning: `{path['path']}`: {path['error']}"
        others = "; ".join(f"{LABELS[v['method']]}: {v['reason']}" for v in path["methods"] if not v["available"])
        warnings = " ".join(w for v in path["methods"] if v["available"] for w in v.get("warnings", []))
        line = f"`{path['path']}` ({path['fstype']} at {path['target']}): {path['summary']}"
        return line + (f" {warnings}" if warnings else "") + (f" _Not possible — {others}_" if others else "")

    async def submit(self, ctx: WizardContext, values: Mapping[str, Any]) -> Errors:
        method = str(values.get("method") or "none")
        if method != "none" and method not in snapshots.PREFERENCE:
            return {"method": "Choose one of the snapshot methods shown, or no snapshot."}
        try:
            await gate.check_snapshot(await ctx.actor(), method)
        except Refused as exc:
            return {"method": exc.sentence}
        if method != "none":
            server = await current_server(ctx)
            if server is None:
                return {"method": "Choose the server first (go back to step 1)."}
            caps = capabilities_of(server)
            if not snapshot_paths(ctx.data, caps):
                return {"method": "This source has no path to snapshot; choose no snapshot."}
            try:
                found = await refresh(ctx, server, caps)  # checked again on the server, not only in the modal
            except (ProbeError, TransportError) as exc:
                return {"method": f"The snapshot options could not be checked on the server: {exc}"}
            if method not in found["available"]:
                await keep_data(ctx)
                return {"method": f"{LABELS[method]} snapshots cannot be used here: {_why_not(found, method)}"}
        ctx.data["snapshot"] = {"method": method}
        return {}

    async def act(self, ctx: WizardContext, action: str, value: str) -> str | None:
        if action != "detect_snapshots":
            return None
        server = await current_server(ctx)
        if server is None:
            return "Choose the server first (go back to step 1)."
        try:
            await gate.check_server(await ctx.actor(), server)
        except Refused as exc:
            return f":no_entry: {exc.sentence}"
        try:
            found = await refresh(ctx, server, capabilities_of(server))
        except (ProbeError, TransportError) as exc:
            return f":warning: The snapshot options could not be checked: {exc}"
        best = found.get("recommended")
        return (
            f"Checked: {LABELS[best] + ' snapshots are' if best else 'no snapshot method is'} possible for every path."
        )
