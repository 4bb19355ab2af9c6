"""``/backup archives <chain>``: a real repository on a real sshd pool with thirteen archives pushed through the
source's append-only key, listed newest first ten a page — name, time, original and deduplicated size as borg
reports them — through the Slack emulator (the command, ``page N``, Next / Previous), and the refusals."""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.access import Actor, Forbidden
from bot.borg import info as borg_info
from bot.borg.repo import Repo
from bot.cli import chain as chain_cli
from bot.services import archives as service
from bot.slack import archives as slack_archives
from bot.slack.emulator import SlackDriver, SlackEmulator
from storage.models import AuditLog, Repository, Role, RoleGrant
from tests.test_integrity import make_chain, push, push_side
from tests.test_pools import told
from tests.test_retire import ADMIN, MEMBER, NAME, OPS, ops, slack_env
from tests.test_wizard_step_pool_repo import TEAM, World, build_world

COUNT = 13


@pytest.fixture
async def world(sqlite_db: str, make_sshd: Any) -> AsyncIterator[World]:
    w = await build_world(make_sshd, "arc")
    yield w
    await w.services.pool.close()


@pytest.fixture
async def slack(tmp_path: Path, world: World) -> AsyncIterator[tuple[SlackEmulator, SlackDriver]]:
    async for env in slack_env(tmp_path, world):
        yield env


async def history(world: World) -> tuple[Repository, list[tuple[str, int]]]:
    """Thirteen archives a day apart (growing contents), pushed as the chain's source pushes; returns them newest
    first as (name, original size)."""
    chain = await make_chain(world)
    await RoleGrant.create(team_id=TEAM, role=Role.OPERATOR, subject=OPS, server=world.server, granted_by=ADMIN)
    source, repo, borg = await push_side(world, chain)
    noon = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    made = []
    for day in range(COUNT, 0, -1):
        content = f"day {day} " * (day * 50)
        made.append((await push(source, repo, borg, noon - timedelta(days=day), content), len(content)))
    return await Repository.get(id=chain.repository_id), made[::-1]


async def answered(emulator: SlackEmulator, driver: SlackDriver, text: str, user: str) -> str:
    """``/backup archives …`` reads borg on the pool, so the command is acked at once (empty) and answered through
    its response URL, as an ephemeral message: return that answer."""
    before = len(emulator.world.messages.ephemerals)
    ack = await driver.slash_command("/backup", text, user=user)
    assert ack.status == 200 and not (ack.json or {}).get("blocks"), ack.json

    def arrived() -> bool:
        return any(e.user == user for e in emulator.world.messages.ephemerals[before:])

    await emulator.world.changes.wait_for(arrived, 30)
    [answer] = [e for e in emulator.world.messages.ephemerals[before:] if e.user == user]
    return json.dumps(answer.message, ensure_ascii=False)


def rows_of(answer: str) -> list[str]:
    """The archive names an answer lists, in its order."""
    blocks = json.loads(answer)["blocks"]
    return [b["text"]["text"].split("`")[1] for b in blocks if b["type"] == "section" and "`" in b["text"]["text"]]


async def test_archives_paged_newest_first_with_borg_sizes(
    world: World, slack: tuple[SlackEmulator, SlackDriver], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    emulator, driver = slack
    repository, made = await history(world)
    names = [name for name, _ in made]

    # Page 1: the ten newest, with borg's own numbers.
    first = await answered(emulator, driver, f"archives {NAME}", OPS)
    assert rows_of(first) == names[:10], first
    assert f"{COUNT} archives, newest first · page 1 of 2" in first
    assert slack_archives.NEXT in first and slack_archives.PREVIOUS not in first
    page = await service.page_of(ops(), NAME, services=world.services)
    at_pool = Repo(url=repository.path, passphrase=repository.passphrase.reveal())
    truth = await borg_info.archive(world.pool_transport(), at_pool, names[0])
    assert page.rows[0].original_size == truth["stats"]["original_size"] == made[0][1]
    assert page.rows[0].deduplicated_size == truth["stats"]["deduplicated_size"] > 0
    assert all(row.original_size == size for row, (_, size) in zip(page.rows, made, strict=False))
    assert [r.time for r in page.rows] == sorted((r.time for r in page.rows), reverse=True)

    # Next: the last three (numbered 11–13), with Previous only.
    await driver.click(slack_archives.NEXT, user=OPS)
    await told(emulator, OPS, "page 2 of 2")
    second = json.dumps(emulator.world.messages.ephemerals[-1].message, ensure_ascii=False)
    assert rows_of(second) == names[10:] and "11. `" in second
    assert slack_archives.PREVIOUS in second and slack_archives.NEXT not in second
    await driver.click(slack_archives.PREVIOUS, user=OPS)
    await told(emulator, OPS, "page 1 of 2")

    # `page N` jumps; past the end shows the last page. Deep pages read the statistics archive by archive.
    monkeypatch.setattr(service, "MAX_LAST", 5)
    jumped = await answered(emulator, driver, f"archives {NAME} page 99", ADMIN)
    assert rows_of(jumped) == names[10:] and "page 2 of 2" in jumped
    deep = await service.page_of(ops(), NAME, services=world.services, page=2)
    assert [(r.name, r.original_size) for r in deep.rows] == made[10:]
    assert all(r.deduplicated_size for r in deep.rows)

    # Refused: someone who may not operate the chain (audited), and a chain that does not exist.
    refused = await answered(emulator, driver, f"archives {NAME}", MEMBER)
    assert "not allowed to see the archives of web1-www" in refused and "`" not in refused.split("archives of")[0]
    assert [a.details["outcome"] for a in await AuditLog.filter(actor=MEMBER, action="chain.archives")] == ["denied"]
    with pytest.raises(Forbidden):
        await service.page_of(service_member(), NAME, services=world.services)
    assert "no backup chain named" in await answered(emulator, driver, "archives nope", OPS)
    assert "Name the chain" in await answered(emulator, driver, "archives", OPS)

    # The same from the bot's host: `backup-bot chain archives` (its parser and action, with the test's SSH pool).
    args = cli_args("archives", "--team", TEAM, NAME, "--page", "2", "--json")
    capsys.readouterr()
    assert await chain_cli._act(Actor.operator(TEAM), args, world.services) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["page"] == 2 and [a["name"] for a in printed["archives"]] == names[10:]
    assert [a["original_size"] for a in printed["archives"]] == [size for _, size in made[10:]]


def cli_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    chain_cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["chain", *argv])


def service_member() -> Any:
    return Actor(team_id=TEAM, user_id=MEMBER)


def test_parse_and_info_bounds() -> None:
    assert slack_archives.parse("web1 files page 3") == ("web1 files", 3)
    assert slack_archives.parse("  web1  ") == ("web1", 1)
    assert slack_archives.parse("web1 page x") == ("web1 page x", 1)
    sizes = service.parse_info(json.dumps({"archives": [
        {"name": "a", "stats": {"original_size": 10, "deduplicated_size": 3}},
        {"name": "b", "stats": {"original_size": -1, "deduplicated_size": True}}, "junk"]}))  # fmt: skip
    assert sizes == {"a": (10, 3), "b": (None, None)}
    with pytest.raises(borg_info.InfoError):
        service.parse_info(b"not json")
    with pytest.raises(borg_info.InfoError):
        service.parse_info(b" " * (service.MAX_JSON + 1))
