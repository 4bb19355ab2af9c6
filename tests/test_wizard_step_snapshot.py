"""Wizard step 4 (snapshot): skipped where it makes no sense (MongoDB), Btrfs recommended for a path on the real
Btrfs loop mount, "none" (with its consequence) for a path on the machine's root file system (not Btrfs here),
checked again on Next, and "none" preselected for a database dump that is consistent by itself. Everything runs
over real sshd.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from bot.access import StaticDirectory
from bot.flows.wizard.controller import Screen, WizardController
from bot.flows.wizard.steps.base import BaseStep, Errors, Field, StepView, WizardContext
from bot.flows.wizard.steps.snapshot import SnapshotStep
from bot.flows.wizard.steps.source import SourceStep
from bot.inventory import fetch_host_key, pin_host_key, refresh_capabilities
from bot.slack.wizard_render import modal
from storage.models import Server
from storage.tenancy import Tenant

DIRECTORY = StaticDirectory(admins=frozenset({"U1"}))  # the tests' user is a Slack admin (fixture services)

TEAM = "T0001"


@pytest.fixture
async def ctx_on(make_sshd, bot_key, services):
    """``await ctx_on(backup_type)``: a context on a freshly confirmed and probed root sshd host."""

    async def make(backup_type: str) -> WizardContext:
        host = make_sshd(client_key=bot_key[0])
        server = await Tenant(TEAM).create(Server, name=host.name, host=host.host, port=host.port, username="root")
        info = await fetch_host_key(host.host, host.port)
        await pin_host_key(server, info.key_line, info.fingerprint, actor="U1")
        await refresh_capabilities(server, services.pool, services.specs)
        data = {"server_id": server.id, "backup_type": backup_type}
        return WizardContext(team_id=TEAM, user_id="U1", session_id="S1", data=data, services=services)

    return make


@pytest.fixture
def subvolume(btrfs_mount) -> Iterator[Path]:
    path = btrfs_mount.unique("wizard")
    subprocess.run(["btrfs", "subvolume", "create", path], check=True, capture_output=True)
    (path / "file").write_text("data\n")
    yield path
    subprocess.run(["btrfs", "subvolume", "delete", path], check=True, capture_output=True)


def radio(view) -> tuple[list[str], Any]:
    [field] = view.fields
    assert field.name == "method" and field.kind == "radio"
    return [o.value for o in field.options], field.initial


def render(view, errors=None, note=None) -> dict:
    return modal(Screen("s", "snapshot", "Snapshot", 4, 10, view, errors or {}, note, slow=True))


# --- when the step applies -----------------------------------------------------------------------------------


class Answer(BaseStep):
    """A stand-in for the steps around step 4: stores one answer."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name, title=name)

    async def view(self, ctx: WizardContext) -> StepView:
        return StepView(heading=self.name, fields=(Field(self.name, self.name, "text"),))

    async def submit(self, ctx: WizardContext, values: Mapping[str, Any]) -> Errors:
        ctx.data[self.name] = values[self.name]
        return {}


def test_applies_only_to_types_with_paths() -> None:
    step = SnapshotStep()
    assert [t for t in ("files", "system", "mysql", "postgresql", "mongodb", "docker") if step.applies(
        {"backup_type": t})] == ["files", "system", "mysql", "postgresql", "docker"]  # fmt: skip
    assert not step.applies({})


async def test_the_machine_skips_the_step_for_mongodb(sqlite_db) -> None:
    controller = WizardController(lambda: [Answer("backup_type"), SnapshotStep(), Answer("pool_id")], None)
    tenant = Tenant(TEAM)
    for backup_type, expected in (("mongodb", ("pool_id", 2, 2)), ("files", ("snapshot", 2, 3))):
        screen = await controller.start(tenant, "U1", "C1")
        screen = await controller.submit(tenant, "U1", screen.session_id, {"backup_type": backup_type})
        assert (screen.step, screen.number, screen.total) == expected


# --- methods for real paths ----------------------------------------------------------------------------------


async def test_btrfs_is_recommended_for_a_path_on_the_btrfs_mount(sqlite_db, ctx_on, subvolume) -> None:
    ctx = await ctx_on("files")
    assert await SourceStep().submit(ctx, {"paths": str(subvolume), "flags": ["exclude_caches"]}) == {}
    step = SnapshotStep()
    view = await step.view(ctx)
    options, initial = radio(view)
    assert options == ["btrfs", "none"] and initial == "btrfs"
    best = view.fields[0].options[0]
    assert "(recommended)" in best.label and str(subvolume) in best.description
    assert any(f"`{subvolume}` (btrfs" in n for n in view.notes) and view.buttons == ()
    render(view)
    assert await step.submit(ctx, {"method": "btrfs"}) == {}  # checked again on the server
    assert ctx.data["snapshot"] == {"method": "btrfs"}
    assert radio(await step.view(ctx))[1] == "btrfs"  # going back keeps the answer
    assert await step.submit(ctx, {"method": "none"}) == {} and ctx.data["snapshot"] == {"method": "none"}
    assert radio(await step.view(ctx))[1] == "none"


async def test_none_is_all_there_is_off_snapshot_capable_storage(sqlite_db, ctx_on, tmp_path: Path) -> None:
    ctx = await ctx_on("files")
    (tmp_path / "plain").mkdir()
    assert await SourceStep().submit(ctx, {"paths": str(tmp_path / "plain")}) == {}
    step = SnapshotStep()
    view = await step.view(ctx)
    assert radio(view) == (["none"], "none")
    text = "\n".join(view.notes)
    assert "files changing during the backup may be captured inconsistently" in text
    assert "not on Btrfs" in text and "not an LVM logical volume" in text
    render(view)
    refused = await step.submit(ctx, {"method": "btrfs"})
    assert refused["method"].startswith(f"Btrfs snapshots cannot be used here: {tmp_path / 'plain'} is on ")
    assert refused["method"].endswith(", not on Btrfs.")
    lvm = await step.submit(ctx, {"method": "lvm"})
    assert lvm["method"].startswith("LVM snapshots cannot be used here:") and "snapshot" not in ctx.data
    assert "Choose one of the snapshot methods" in (await step.submit(ctx, {"method": "vmware"}))["method"]
    assert await step.submit(ctx, {"method": "none"}) == {} and ctx.data["snapshot"] == {"method": "none"}


async def test_options_not_yet_detected_are_detected_on_request(sqlite_db, ctx_on, subvolume) -> None:
    ctx = await ctx_on("files")
    ctx.data["source"] = {"paths": [str(subvolume)], "excludes": [], "one_file_system": False,
                          "exclude_caches": True}  # fmt: skip  (as a template would bring it)
    step = SnapshotStep()
    view = await step.view(ctx)
    assert radio(view) == (["none"], "none") and [b.action for b in view.buttons] == ["detect_snapshots"]
    note = await step.act(ctx, "detect_snapshots", "")
    assert note == "Checked: Btrfs snapshots are possible for every path."
    assert radio(await step.view(ctx)) == (["btrfs", "none"], "btrfs")


async def test_a_consistent_dump_needs_no_snapshot(sqlite_db, ctx_on, postgres_db) -> None:
    ctx = await ctx_on("postgresql")
    values = {"credential": "detected", "databases": [f"db:{postgres_db.name}"], "flags": ["include_globals"]}
    assert await SourceStep().submit(ctx, values) == {}
    view = await SnapshotStep().view(ctx)
    assert radio(view)[1] == "none"
    assert any(n.startswith("*No snapshot*: Not needed: the dump is consistent without one.") for n in view.notes)
    assert any(ctx.data["_source_found"]["datadir"] in n for n in view.notes)  # the data directory was asked
