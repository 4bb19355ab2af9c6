"""Reading the audit log (issue 10, item 6): who may see which entries, filters, paging, the CLI and `/backup audit`.

The world: workspace T0001 with servers srv-a and srv-b, a chain on each (chain-a, chain-b), an admin (U0ADM, by
grant), an operator of srv-a (U0OPA), a member with no grant (U0MEM) who created one chain on srv-b (chain-m); and
workspace T0002 whose rows reuse T0001's object ids, so a leak would show up as a matching row.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.access import Actor, Forbidden, NoDirectory, NotFound, Refused, resolve_actor
from bot.access.audit import record
from bot.config import load_settings
from bot.services import audit
from bot.slack.app import build_app, serve_http
from bot.slack.blocks import help_blocks
from bot.slack.emulator import DEFAULT_BOT_TOKEN, SlackDriver, SlackEmulator
from bot.slack.emulator.limits import check_message_blocks
from storage.crypto import generate_key
from storage.models import (
    AuditLog,
    BackupChain,
    BackupSource,
    Repository,
    Role,
    RoleGrant,
    Run,
    Server,
    StoragePool,
)
from storage.tenancy import Tenant

A, B = Tenant("T0001"), Tenant("T0002")
ADMIN, OPERATOR, MEMBER = "U0ADM", "U0OPA", "U0MEM"
SECRET = "audit-signing-secret"
BIN = Path(sys.executable).parent / "backup-bot"


async def make_chain(tenant: Tenant, name: str, server: Server, *, created_by: str = "") -> BackupChain:
    pool = await tenant.create(StoragePool, name=f"pool-{name}", base_path="/srv/borg", tier="fast")
    repo = await tenant.create(Repository, pool=pool, name=f"repo-{name}", path=f"/srv/borg/{name}", passphrase="pw",
                               retention={"keep_daily": 7})  # fmt: skip
    chain = await tenant.create(BackupChain, name=name, repository=repo, status="active", timezone="UTC",
                                created_by=created_by)  # fmt: skip
    source = await tenant.create(BackupSource, server=server, name=f"{name}-etc", type="files",
                                 config={"paths": ["/etc"]})  # fmt: skip
    await chain.sources.add(source)
    return chain


async def actor(user_id: str, team: Tenant = A) -> Actor:
    """The actor as every surface resolves it: from the stored grants (no Slack to ask here)."""
    return await resolve_actor(NoDirectory(), team.team_id, user_id)


@pytest.fixture
async def world(sqlite_db: str) -> dict:
    return await build_world()


async def build_world() -> dict:
    srv_a = await A.create(Server, name="srv-a", host="10.0.0.1")
    srv_b = await A.create(Server, name="srv-b", host="10.0.0.2")
    chain_a = await make_chain(A, "chain-a", srv_a)
    chain_b = await make_chain(A, "chain-b", srv_b)
    chain_m = await make_chain(A, "chain-m", srv_b, created_by=MEMBER)
    run_a = await A.create(Run, chain=chain_a, repository_id=chain_a.repository_id, kind="backup")
    run_b = await A.create(Run, chain=chain_b, repository_id=chain_b.repository_id, kind="backup")
    source_a = await chain_a.sources.all().first()
    await A.create(RoleGrant, role=Role.ADMIN, subject=ADMIN, granted_by="cli")
    await A.create(RoleGrant, role=Role.OPERATOR, subject=OPERATOR, server=srv_a, granted_by=ADMIN)
    admin, operator = await actor(ADMIN), await actor(OPERATOR)
    assert admin.is_admin and not operator.is_admin

    ids: dict[str, int] = {}

    async def log(name: str, who: Actor, action: str, object_type: str, object_id: object, **extra) -> None:
        ids[name] = (await record(who, action, object_type, object_id, **extra)).id

    await log("srv-a.add", admin, "server.add", "server", srv_a.id, after={"name": "srv-a"})
    await log("srv-b.add", admin, "server.add", "server", srv_b.id, after={"name": "srv-b"})
    await log("grant", admin, "role.grant", "role", 2, after={"role": "operator", "subject": OPERATOR})
    await log("a.pause", admin, "chain.pause", "chain", chain_a.id, outcome="done", before={"status": "active"},
              after={"status": "paused"})  # fmt: skip
    await log("a.resume", operator, "chain.resume", "chain", chain_a.id, outcome="done", before={"status": "paused"},
              after={"status": "active"})  # fmt: skip
    await log("b.pause", admin, "chain.pause", "chain", chain_b.id, outcome="done")
    await log("a.prune", admin, "repository.prune_schedule", "repository", chain_a.repository_id, chain_id=chain_a.id,
              before={"prune_schedule": None}, after={"prune_schedule": {"days": ["sat"], "at": "03:00"}})
    await log("b.prune", admin, "repository.prune_schedule", "repository", chain_b.repository_id)
    await log("a.run", admin, "run.request", "run", run_a.id, kind="backup")
    await log("b.run", admin, "run.request", "run", run_b.id, kind="backup")
    await log("a.source", admin, "source.create", "source", source_a.id, server="srv-a")
    await log("m.ping", await actor(MEMBER), "chain.ping_url", "chain", chain_m.id, after={"host": "hc-ping.com"})
    # Workspace T0002: the same object ids (a query missing its team filter would return these too).
    other = Actor.operator(B.team_id)
    await make_chain(B, "chain-secret", await B.create(Server, name="srv-a", host="10.9.9.9"))
    for kind, object_id in (("server", srv_a.id), ("chain", chain_a.id), ("repository", chain_a.repository_id),
                            ("run", run_a.id)):  # fmt: skip
        await record(other, f"{kind}.secret", kind, object_id)
    await AuditLog.create(team_id=B.team_id, actor=OPERATOR, action="chain.secret", object_type="chain",
                          object_id=str(chain_a.id), details={})  # fmt: skip
    return {"ids": ids, "admin": admin, "operator": operator, "chain_a": chain_a, "srv_a": srv_a}


def names(page: audit.AuditPage, ids: dict[str, int]) -> set[str]:
    by_id = {v: k for k, v in ids.items()}
    found = {by_id.get(e.id, f"other#{e.id}") for e in page.entries}
    return found


# --------------------------------------------------------------------------------------------- the service


async def test_an_admin_sees_every_entry_of_the_workspace_and_none_of_another(world) -> None:
    page = await audit.entries(world["admin"], page_size=50)
    assert names(page, world["ids"]) == set(world["ids"])
    assert page.total == len(world["ids"]) and page.pages == 1 and page.everything
    assert [e.id for e in page.entries] == sorted((e.id for e in page.entries), reverse=True)  # newest first
    other = await audit.entries(Actor.operator(B.team_id), page_size=50)
    assert other.total == 5 and {e.action.split(".")[1] for e in other.entries} == {"secret"}


async def test_entries_carry_names_changes_and_outcomes(world) -> None:
    entries = {e.id: e for e in (await audit.entries(world["admin"], page_size=50)).entries}
    paused = entries[world["ids"]["a.pause"]]
    assert (paused.actor, paused.action, paused.object_type, paused.object_name) == (ADMIN, "chain.pause", "chain",
                                                                                   "chain-a")  # fmt: skip
    assert paused.before == {"status": "active"} and paused.after == {"status": "paused"}
    assert paused.outcome == "done" and paused.via == "slack" and paused.change == "status: active→paused"
    assert paused.target == f"chain {world['chain_a'].id} (chain-a)"
    pruned = entries[world["ids"]["a.prune"]]
    assert pruned.object_name == "repo-chain-a" and pruned.details == {"chain_id": world["chain_a"].id}
    assert pruned.change == "prune_schedule: —→{days=['sat'], at=03:00}"
    assert entries[world["ids"]["a.run"]].object_name == "of chain-a"
    assert entries[world["ids"]["a.source"]].object_name == "chain-a-etc"
    assert entries[world["ids"]["b.pause"]].change == "" and entries[world["ids"]["grant"]].object_name is None
    as_json = json.loads(json.dumps(paused.as_dict()))
    assert as_json["when"].endswith("+00:00") and as_json["before"] == {"status": "active"}


async def test_an_operator_sees_their_server_and_its_chains_only(world) -> None:
    operator, ids = world["operator"], world["ids"]
    page = await audit.entries(operator, page_size=50)
    assert names(page, ids) == {"srv-a.add", "a.pause", "a.resume", "a.prune", "a.run", "a.source"}
    assert not page.everything and page.total == 6
    on_a = await audit.entries(operator, server="srv-a")
    assert names(on_a, ids) == {"srv-a.add", "a.pause", "a.resume", "a.prune", "a.run", "a.source"}
    mine = await audit.entries(operator, user=f"<@{OPERATOR}|otto>")  # as Slack escapes a mention
    assert names(mine, ids) == {"a.resume"}
    with pytest.raises(Forbidden) as refused:
        await audit.entries(operator, server="srv-b")
    assert "srv-b" in refused.value.sentence and f"ask <@{ADMIN}> or a Slack workspace admin" in refused.value.sentence
    with pytest.raises(Forbidden) as refused:
        await audit.entries(operator, chain="chain-b")
    assert "chain-b" in refused.value.sentence and f"<@{ADMIN}>" in refused.value.sentence
    with pytest.raises(Forbidden) as refused:
        await audit.entries(operator, user=ADMIN)
    assert "Only admins" in refused.value.sentence and f"<@{ADMIN}>" in refused.value.sentence
    with pytest.raises(Forbidden):
        await audit.entries(operator, user="system")


async def test_a_member_without_grants_sees_only_the_chain_they_created(world) -> None:
    member, ids = await actor(MEMBER), world["ids"]
    assert names(await audit.entries(member), ids) == {"m.ping"}  # their own chain; nothing of srv-b itself
    for ask in ({"server": "srv-b"}, {"server": "srv-a"}, {"chain": "chain-a"}, {"user": OPERATOR}):
        with pytest.raises(Forbidden) as refused:
            await audit.entries(member, **ask)
        assert f"ask <@{ADMIN}> or a Slack workspace admin" in refused.value.sentence
    stranger = await actor("U0NEW")
    page = await audit.entries(stranger)
    assert page.entries == () and page.total == 0 and page.pages == 1


async def test_filters_by_chain_server_and_user(world) -> None:
    admin, ids = world["admin"], world["ids"]
    assert names(await audit.entries(admin, chain="chain-a"), ids) == {"a.pause", "a.resume", "a.prune", "a.run",
                                                                       "a.source"}  # fmt: skip
    assert names(await audit.entries(admin, chain="chain-b"), ids) == {"b.pause", "b.prune", "b.run"}
    assert names(await audit.entries(admin, server="srv-b"), ids) == {"srv-b.add", "b.pause", "b.prune", "b.run",
                                                                      "m.ping"}  # fmt: skip
    assert names(await audit.entries(admin, user=OPERATOR), ids) == {"a.resume"}
    assert names(await audit.entries(admin, user=OPERATOR, chain="chain-b"), ids) == set()
    for ask in ({"chain": "nope"}, {"server": "nope"}, {"chain": "chain-secret"}):
        with pytest.raises(NotFound) as missing:
            await audit.entries(admin, **ask)
        assert "nope" in missing.value.sentence or "chain-secret" in missing.value.sentence
    with pytest.raises(Refused) as bad:
        await audit.entries(admin, user="bob")
    assert not isinstance(bad.value, Forbidden) and "'bob' is not a user" in bad.value.sentence


async def test_paging_is_bounded_and_complete(world) -> None:
    admin, chain = world["admin"], world["chain_a"]
    for i in range(45):
        await record(admin, "chain.pause", "chain", chain.id, outcome=f"n{i}")
    total = 45 + len(world["ids"])
    pages = [await audit.entries(admin, page=n, page_size=20) for n in range(3)]
    assert [p.total for p in pages] == [total] * 3 and [p.pages for p in pages] == [3] * 3
    assert [len(p.entries) for p in pages] == [20, 20, total - 40]
    assert [p.has_next for p in pages] == [True, True, False]
    seen = [e.id for p in pages for e in p.entries]
    assert len(set(seen)) == total and seen == sorted(seen, reverse=True)
    assert pages[0].entries[0].outcome == "n44"  # the newest first
    beyond = await audit.entries(admin, page=3, page_size=20)
    assert beyond.entries == () and beyond.total == total
    big = await audit.entries(admin, page_size=500)
    assert big.page_size == audit.MAX_PAGE_SIZE == 50 and len(big.entries) == 50
    with pytest.raises(Refused):
        await audit.entries(admin, page=-1)


async def test_since_leaves_out_older_entries(world) -> None:
    admin, ids = world["admin"], world["ids"]
    old = datetime.now(UTC) - timedelta(days=10)
    await AuditLog.filter(id__in=[ids["a.pause"], ids["srv-b.add"]]).update(created_at=old)
    recent = await audit.entries(admin, since=datetime.now(UTC) - timedelta(days=1), page_size=50)
    assert names(recent, ids) == set(ids) - {"a.pause", "srv-b.add"}
    naive = await audit.entries(admin, since=(old - timedelta(hours=1)).replace(tzinfo=None), page_size=50)
    assert naive.total == len(ids)
    assert (await audit.entries(admin, page_size=50)).entries[-1].id in (ids["a.pause"], ids["srv-b.add"])
    operator_view = await audit.entries(world["operator"], since=datetime.now(UTC) - timedelta(days=1))
    assert names(operator_view, ids) == {"srv-a.add", "a.resume", "a.prune", "a.run", "a.source"}


@pytest.mark.storage
async def test_scope_rules_hold_on_every_engine(database: str) -> None:
    """The same reads on SQLite, PostgreSQL and MariaDB (string ids, IN lists, joins through the chain's sources)."""
    world = await build_world()
    ids = world["ids"]
    assert names(await audit.entries(world["admin"], page_size=50), ids) == set(ids)
    assert names(await audit.entries(world["operator"]), ids) == {"srv-a.add", "a.pause", "a.resume", "a.prune",
                                                                  "a.run", "a.source"}  # fmt: skip
    assert names(await audit.entries(world["admin"], server="srv-b"), ids) == {"srv-b.add", "b.pause", "b.prune",
                                                                               "b.run", "m.ping"}  # fmt: skip
    assert names(await audit.entries(await actor(MEMBER)), ids) == {"m.ping"}
    assert (await audit.entries(await actor("U0NEW"))).total == 0
    with pytest.raises(Forbidden):
        await audit.entries(world["operator"], server="srv-b")


# --------------------------------------------------------------------------------------------- the CLI


async def cli(tmp_path: Path, url: str, *args: str) -> tuple[int, str, str]:
    env_file = tmp_path / "audit.env"
    env_file.write_text(f"DATABASE_URL={url}\nBACKUPBOT_SECRET_KEYS={generate_key()}\n"
                        f"BACKUPBOT_DATA_DIR={tmp_path / 'data'}\n")  # fmt: skip
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "BACKUPBOT_", "DATABASE_URL"))}
    process = await asyncio.create_subprocess_exec(str(BIN), "--env-file", str(env_file), "audit", *args, env=base,
                                                   stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode or 0, out.decode(), err.decode()


async def test_cli_lists_filters_and_prints_json(world, sqlite_db: str, tmp_path: Path) -> None:
    ids = world["ids"]
    code, out, err = await cli(tmp_path, sqlite_db, "--team", "T0001", "--json")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert {r["id"] for r in rows} == set(ids.values())  # every entry of T0001, none of T0002
    assert "page 1 of 1 (12 entries)" in err  # the paging line stays off stdout
    paused = next(r for r in rows if r["id"] == ids["a.pause"])
    assert paused["before"] == {"status": "active"} and paused["after"] == {"status": "paused"}
    assert paused["object_name"] == "chain-a" and paused["outcome"] == "done" and paused["actor"] == ADMIN

    code, out, err = await cli(tmp_path, sqlite_db, "--team", "T0001", "--chain", "chain-a")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 6 and lines[-1] == "page 1 of 1 (5 entries)"
    pause_line = next(line for line in lines if "chain.pause" in line)
    assert f"  {ADMIN}  chain.pause  chain {world['chain_a'].id} (chain-a)  status: active→paused  [done]" in pause_line
    assert pause_line[:20].endswith("Z") and "chain-b" not in out

    code, out, err = await cli(tmp_path, sqlite_db, "--team", "T0001", "--user", OPERATOR, "--since", "24h", "--json")
    assert code == 0 and [json.loads(line)["id"] for line in out.splitlines()] == [ids["a.resume"]]
    code, out, err = await cli(tmp_path, sqlite_db, "--team", "T0001", "--since", "2999-01-01")
    assert code == 0 and out.startswith("no entries")
    code, out, err = await cli(tmp_path, sqlite_db, "--team", "T0001", "--server", "srv-b", "--page", "2", "--json")
    assert code == 0 and out == "" and "no page 2: 5 entries on 1 page" in err


async def test_cli_refuses_bad_arguments_in_one_sentence(world, sqlite_db: str, tmp_path: Path) -> None:
    for args, said in ((["--since", "last tuesday"], "is neither an ISO-8601 time"),
                       (["--chain", "nope"], "There is no backup chain named 'nope'"),
                       (["--user", "bob"], "'bob' is not a user"),
                       (["--page", "0"], "pages are counted from 1")):  # fmt: skip
        code, out, err = await cli(tmp_path, sqlite_db, "--team", "T0001", *args)
        assert code == 2 and said in " ".join(err.split()) and "Traceback" not in err + out, (args, err)


def test_since_spans_and_times() -> None:
    from bot.cli.audit import parse_since

    now = datetime(2026, 5, 3, 12, tzinfo=UTC)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("24h", now) == now - timedelta(hours=24)
    assert parse_since("2026-05-01", now) == datetime(2026, 5, 1, tzinfo=UTC)
    assert parse_since("2026-05-01T12:00+02:00", now) == datetime(2026, 5, 1, 10, tzinfo=UTC)
    with pytest.raises(ValueError):
        parse_since("7 days", now)


# --------------------------------------------------------------------------------------------- Slack


@pytest.fixture
async def driver(world, tmp_path: Path) -> AsyncIterator[SlackDriver]:
    async with SlackEmulator() as emulator:
        settings = load_settings(tmp_path / "none.env", SLACK_BOT_TOKEN=DEFAULT_BOT_TOKEN, SLACK_SIGNING_SECRET=SECRET,
                                 SLACK_API_URL=emulator.api_url, BACKUPBOT_SECRET_KEYS=generate_key())  # fmt: skip
        runner = await serve_http(build_app(settings), "127.0.0.1", 0)
        host, port = runner.addresses[0][:2]
        slack = SlackDriver.over_http(emulator, f"http://{host}:{port}/slack/events", SECRET)
        for user in (OPERATOR, MEMBER):
            emulator.add_user(user, name=user.lower())
        try:
            yield slack
        finally:
            await slack.aclose()
            await runner.cleanup()


async def say(driver: SlackDriver, text: str, user: str | None = None) -> tuple[str, list[dict]]:
    answered = await driver.slash_command("/backup", text, user=user)
    assert answered.status == 200 and answered.json["response_type"] == "ephemeral"
    blocks = answered.json["blocks"]
    assert check_message_blocks(blocks) == [] and len(blocks) <= 50
    return json.dumps(blocks, ensure_ascii=False), blocks


async def test_slack_admin_sees_everything_escaped_and_paged(driver: SlackDriver, world) -> None:
    evil = await A.create(Server, name="<!here> evil & co", host="10.0.0.66")
    await record(world["admin"], "server.add", "server", evil.id, after={"name": "<!channel>"})
    body, blocks = await say(driver, "audit")  # U0001: a Slack admin in the emulator
    assert "srv-b" in body and "chain-b" in body and "chain-a" in body and "secret" not in body
    assert "`chain.pause`" in body and "status: active→paused" in body and f"<@{ADMIN}>" in body
    assert "&lt;!here&gt; evil &amp; co" in body and "<!here>" not in body and "<!channel>" not in body
    assert "Page 1 of 1 (13 entries)." in body
    for i in range(11):
        await record(world["admin"], "chain.pause", "chain", world["chain_a"].id, outcome=f"n{i}")
    body, blocks = await say(driver, "audit")
    assert "Page 1 of 2 (24 entries)." in body and "Older entries: `/backup audit page 2`" in body
    assert len(blocks) == 1 + 15 + 1
    body, blocks = await say(driver, "audit page 2")
    assert "Page 2 of 2 (24 entries)." in body and len(blocks) == 1 + 9 + 1
    body, _ = await say(driver, "audit chain chain-a")
    assert "Older entries: `/backup audit chain chain-a page 2`" in body
    body, _ = await say(driver, "audit chain chain-a page 2")
    assert "Page 2 of 2 (16 entries)." in body and "chain-b" not in body
    body, _ = await say(driver, f"audit user <@{OPERATOR}|otto>")
    assert f"what <@{OPERATOR}> did" in body and "chain.resume" in body and "chain.pause" not in body
    body, _ = await say(driver, "audit chain nope")
    assert ":no_entry: There is no backup chain named 'nope'" in body
    body, _ = await say(driver, "audit page 9")
    assert "There is no page 9; there are 2." in body and "24 entries on 2 pages." in body
    body, _ = await say(driver, "audit sideways")
    assert "I don't understand" in body and "/backup audit chain &lt;name&gt;" in body


async def test_slack_members_see_only_their_scope_and_are_refused_the_rest(driver: SlackDriver, world) -> None:
    body, _ = await say(driver, "audit", user=OPERATOR)
    assert "only the chains and servers you may operate" in body
    assert "chain-a" in body and "srv-a" in body and "srv-b" not in body and "chain-b" not in body
    assert "Page 1 of 1 (6 entries)." in body
    body, _ = await say(driver, "audit server srv-b", user=OPERATOR)
    assert ":no_entry: You have no access to the server srv-b" in body and f"<@{ADMIN}>" in body
    body, _ = await say(driver, f"audit user <@{ADMIN}|ana>", user=OPERATOR)
    assert ":no_entry: Only admins can read what other people did" in body
    body, _ = await say(driver, "audit", user=MEMBER)
    assert "chain-m" in body and "chain-a" not in body and "Page 1 of 1 (1 entry)." in body
    body, _ = await say(driver, "audit chain chain-a", user=MEMBER)
    assert ":no_entry: You may not read the audit log of chain-a" in body


def test_help_lists_audit() -> None:
    ready = json.dumps([b.to_dict() for b in help_blocks()], ensure_ascii=False)
    assert "`/backup audit [chain <name>|server <name>|user @someone] [page N]` — who did what, when" in ready
