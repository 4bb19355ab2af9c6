"""Wizard steps 5 (storage pool) and 6 (repository), driven directly with a WizardContext, on a migrated SQLite
database and two real sshd hosts (a source and a pool sharing the bot's client key). No Slack: every view is
still rendered with the modal renderer so Slack's limits are checked.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from bot.access import StaticDirectory
from bot.borg import init as borg_init
from bot.borg.repo import Repo
from bot.flows.wizard.controller import Screen
from bot.flows.wizard.services import WizardServices
from bot.flows.wizard.steps.base import StepView, WizardContext
from bot.flows.wizard.steps.pool import PoolStep, projection
from bot.flows.wizard.steps.repository import RepositoryStep
from bot.slack.wizard_render import modal
from bot.transport import SSHPool
from storage.models import PoolKind, Repository, Server, ServerStatus, StoragePool
from tests.harness.ssh import target_of

DIRECTORY = StaticDirectory(admins=frozenset({"U1"}))  # the tests' user is a Slack admin

TEAM = "T0001"
MiB = 1024 * 1024


@dataclass
class World:
    src: Any  # SshHost
    pool_host: Any
    services: WizardServices
    server: Server
    pool_server: Server
    pool: StoragePool
    www: Path

    def ctx(self, **data: Any) -> WizardContext:
        base = {"server_id": self.server.id, "backup_type": "files", "source": {"paths": [str(self.www)]}}
        return WizardContext(team_id=TEAM, user_id="U1", session_id=str(uuid.uuid4()), data={**base, **data},
                             services=self.services)  # fmt: skip

    def pool_transport(self):
        return self.services.pool.transport(target_of(self.pool_host))


async def server_row(host: Any, name: str) -> Server:
    return await Server.create(team_id=TEAM, name=name, host=host.host, port=host.port, username=host.user,
                               host_key=host.host_public_key, host_key_fingerprint=host.host_key_fingerprint,
                               status=ServerStatus.OK)  # fmt: skip


async def build_world(make_sshd: Any, tag: str) -> World:
    src = make_sshd(f"wsrc{tag}")
    pool_host = make_sshd(f"wpool{tag}", client_key=src.client_key_path)
    services = WizardServices(pool=SSHPool([asyncssh.read_private_key(src.client_key_path)]), directory=DIRECTORY)
    server = await server_row(src, "web1")
    pool_server = await server_row(pool_host, "vault")
    pool = await StoragePool.create(team_id=TEAM, name="vault-main", server=pool_server,
                                    base_path=str(pool_host.workdir / "repos"))  # fmt: skip
    www = src.workdir / "www"
    (www / "img").mkdir(parents=True)
    (www / "index.html").write_text("<h1>hello</h1>\n")
    (www / "img" / "logo.svg").write_text("<svg/>\n")
    return World(src, pool_host, services, server, pool_server, pool, www)


@pytest.fixture
async def world(sqlite_db: str, make_sshd: Any) -> AsyncIterator[World]:
    w = await build_world(make_sshd, "p")
    yield w
    await w.services.pool.close()


def render(view: StepView, step: str = "step") -> dict[str, Any]:
    """The modal through slack_sdk's models (raises when a Slack limit is broken)."""
    return modal(Screen(session_id=str(uuid.uuid4()), step=step, title=step.title(), number=5, total=10, view=view))


def option_labels(view: StepView, field: str) -> dict[str, str]:
    found = next(f for f in view.fields if f.name == field)
    return {o.value: o.label for o in found.options}


async def test_pool_free_space_shown_tight_warned_and_too_small_refused(world: World) -> None:
    step = PoolStep()
    ctx = world.ctx(size_estimate=10 * MiB)
    view = await step.view(ctx)
    render(view, "pool")
    pool = await StoragePool.get(id=world.pool.id)
    assert pool.available_bytes and pool.available_bytes > 10 * MiB and pool.available_checked_at is not None
    assert pool.capacity_bytes and pool.capacity_bytes >= pool.available_bytes
    labels = option_labels(view, "pool_id")
    assert "free" in labels[str(pool.id)] and "vault-main" in labels[str(pool.id)]
    assert "measured now" in view.notes[0] and "projected" in view.notes[0]
    assert next(f for f in view.fields if f.name == "pool_id").initial == str(pool.id)  # the only usable pool

    # Projection: files, default retention (18 archives), 2 % churn: 10 MiB × (1 + 0.02 × 17).
    plan = projection(ctx.data)
    assert plan and plan.first_bytes == 10 * MiB and plan.projected_bytes == round(10 * MiB * 1.34)

    assert await step.submit(ctx, {"pool_id": str(pool.id)}) == {}
    assert ctx.data["pool_id"] == pool.id

    # Clearly too small: the first archive alone does not fit.
    huge = world.ctx(size_estimate={"total_bytes": pool.available_bytes * 3, "complete": True})
    errors = await step.submit(huge, {"pool_id": str(pool.id)})
    assert "too small" in errors["pool_id"] and "pool_id" not in huge.data
    assert ":no_entry:" in (await step.view(huge)).notes[0]

    # Tight: the first archive fits, the projection with head room does not.
    tight = world.ctx(size_estimate=int(pool.available_bytes * 0.9))
    view = await step.view(tight)
    assert "tight" in view.notes[0]
    assert await step.submit(tight, {"pool_id": str(pool.id)}) == {}  # a warning, not a refusal


async def test_pool_needs_a_confirmed_host_key_and_a_local_pool_needs_a_local_source(world: World) -> None:
    step = PoolStep()
    unconfirmed = await Server.create(team_id=TEAM, name="new-box", host="192.0.2.10", status=ServerStatus.UNCONFIRMED)
    bad = await StoragePool.create(team_id=TEAM, name="unpinned", server=unconfirmed, base_path="/srv/borg")
    local = await StoragePool.create(team_id=TEAM, name="on-bot", kind=PoolKind.LOCAL, base_path="/var/lib/bb")
    other_team = await StoragePool.create(team_id="T0002", name="theirs", server=world.pool_server, base_path="/x")
    ctx = world.ctx()
    view = await step.view(ctx)
    render(view, "pool")
    labels = option_labels(view, "pool_id")
    assert labels[str(bad.id)] == "unpinned (unavailable)" and str(other_team.id) not in labels
    errors = await step.submit(ctx, {"pool_id": str(bad.id)})
    assert "host key of new-box has not been confirmed" in errors["pool_id"]
    assert "does not exist" in (await step.submit(ctx, {"pool_id": str(other_team.id)}))["pool_id"]

    # The source web1 is on loopback (the bot's own host in this test machine), so the local pool is usable …
    assert await step.submit(ctx, {"pool_id": str(local.id)}) == {}
    # … but not for a source on another machine.
    remote = await Server.create(team_id=TEAM, name="db7", host="db7.example.com", host_key="ssh-ed25519 AAAA",
                                 status=ServerStatus.OK)  # fmt: skip
    errors = await step.submit(world.ctx(server_id=remote.id), {"pool_id": str(local.id)})
    assert "bot's own host" in errors["pool_id"] and "db7" in errors["pool_id"]


async def test_repository_name_convention_uniqueness_and_compression(world: World) -> None:
    step = RepositoryStep()
    ctx = world.ctx(pool_id=world.pool.id)
    view = await step.view(ctx)
    render(view, "repository")
    fields = {f.name: f for f in view.fields}
    assert fields["name"].initial == "web1-files-www"  # {server}-{type}-{name}
    assert fields["encryption"].initial == "repokey-blake2" and fields["compression"].initial == "lz4"
    assert {o.value for o in fields["encryption"].options} == set(borg_init.ENCRYPTIONS)

    good = {"mode": "new", "name": "web1-files-www", "encryption": "repokey-blake2", "compression": "lz4"}
    errors = await step.submit(ctx, {**good, "compression": "zstd,99"})
    assert set(errors) == {"compression"} and "compression" not in ctx.data.get("repository", {})
    errors = await step.submit(ctx, {**good, "name": "Web 1/www"})
    assert set(errors) == {"name"}

    await Repository.create(team_id=TEAM, pool=world.pool, name="taken", path="/x/taken", passphrase="p")
    errors = await step.submit(ctx, {**good, "name": "taken"})
    assert "already manages a repository named taken" in errors["name"]

    (world.pool_host.workdir / "repos" / "on-disk").mkdir(parents=True)
    errors = await step.submit(ctx, {**good, "name": "on-disk"})
    assert "already exists on vault-main" in errors["name"]

    assert await step.submit(ctx, {**good, "compression": " ZSTD, 3"}) == {}
    assert ctx.data["repository"] == {"mode": "new", "name": "web1-files-www", "encryption": "repokey-blake2",
                                      "compression": "zstd,3"}  # fmt: skip
    assert next(f for f in (await step.view(ctx)).fields if f.name == "compression").initial == "zstd,3"


async def test_existing_repository_needs_the_passphrase_that_opens_it(world: World) -> None:
    step = RepositoryStep()
    path = f"{world.pool.base_path}/legacy"
    await borg_init.run(world.pool_transport(), Repo(url=path, passphrase="correct horse"), "repokey")
    ctx = world.ctx(pool_id=world.pool.id)
    values = {"mode": "existing", "name": "legacy", "encryption": "repokey-blake2", "compression": "lz4"}
    assert "passphrase" in await step.submit(ctx, values)  # none given
    errors = await step.submit(ctx, {**values, "passphrase": "wrong horse"})
    assert errors == {"passphrase": "That passphrase does not open the repository."}
    errors = await step.submit(ctx, {**values, "name": "missing", "passphrase": "x"})
    assert "no borg repository" in errors["name"]

    assert await step.submit(ctx, {**values, "passphrase": "correct horse"}) == {}
    answer = ctx.data["repository"]
    assert answer["mode"] == "existing" and answer["encryption"] == "repokey"  # the repository's real mode
    assert "correct horse" not in json.dumps(ctx.data)  # sealed, never plain text
    from storage.crypto import Secret

    assert Secret(answer["passphrase_token"]).reveal() == "correct horse"
    # Coming back and pressing Next without retyping keeps the sealed passphrase.
    assert await step.submit(ctx, values) == {}
    assert ctx.data["repository"]["passphrase_token"] == answer["passphrase_token"]
